"""The metrics collector: a PULL socket that writes each node's per-round records to metrics.jsonl.

Used inside `mcepl launch` and alone as `mcepl collect` (`collect_run`: nodes on separate
machines). Records are read through `RoundRecord.from_json`: a record that does not read (wrong
types, newer schema) is dropped and counted, never written and never fatal. Every line
is flushed as it arrives, so a crash or Ctrl-C never loses what was already received. On close it
writes `collector.json`: the bytes it received from each node (records and bye), for the bill.

With keys (`CollectorKeys`) the PULL socket is a CURVE server holding the collector's secret
key; its ZAP handler accepts exactly the nodes' public keys and names each connection by the
node id its key belongs to, and a message whose sender is not that node is dropped and counted
(`auth_mismatch`): nobody else can read the records or write into the run.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from mcepl.config import Config
from mcepl.launcher.report import format_summary, write_report
from mcepl.launcher.rundir import RunDir
from mcepl.node.lifecycle import stop_on_signals
from mcepl.node.record import RecordError, RoundRecord
from mcepl.node.transport import (
    PeerAuthenticator,
    make_curve_server,
    milestone,
    start_authenticator,
    user_id,
)
from mcepl.protocol import ControlMessage, ProtocolError, decode_message, message_size
from mcepl.topology import Topology
from mcepl.topology.keys import KeyPair

log = logging.getLogger("mcepl.collector")

# called as observer(event, node, body) for each accepted event: "record" (the record as written
# to metrics.jsonl), "status" (a node waiting: {"round", "phase", "waiting_for", "waited_s"})
# and "bye" ({"status", "reason"}); it must return at once (the dashboard's
# hub only appends under a lock), and an exception in it is logged, never fatal to the run
Observer = Callable[[str, int, dict[str, Any]], None]


@dataclass
class NodeStatus:
    round: int = -1
    test_acc: float | None = None
    bytes_sent: int = 0
    done: bool = False
    rounds_seen: set[int] = field(default_factory=set)
    status: str = ""
    reason: str = ""
    bytes_metrics: int = 0  # bytes of metrics messages received from the node (records)
    msgs_metrics: int = 0
    bytes_bye: int = 0  # bytes of its bye message
    bytes_status: int = 0  # bytes of its status messages ("waiting for neighbour X")
    msgs_status: int = 0


@dataclass(frozen=True)
class CollectorKeys:
    """The collector's CURVE key pair and the nodes' public keys (the only clients it lets in)."""

    public: str
    secret: str
    nodes: dict[int, str]

    @classmethod
    def for_topology(cls, topo: Topology, keys: KeyPair) -> CollectorKeys:
        return cls(keys.public, keys.secret,
                   {n.id: n.public_key for n in topo.nodes})  # type: ignore[misc]


@dataclass
class CollectorState:
    nodes: dict[int, NodeStatus] = field(default_factory=dict)
    dropped: int = 0
    duplicates: int = 0  # records of a round already received (a resumed node redoing it)
    bad_records: Counter[str] = field(default_factory=Counter)  # unreadable records, per node

    def min_round(self) -> int:
        return min((s.round for s in self.nodes.values()), default=-1)

    def mean_latest_acc(self) -> float | None:
        accs = [s.test_acc for s in self.nodes.values() if s.test_acc is not None]
        return sum(accs) / len(accs) if accs else None

    def total_bytes(self) -> int:
        return sum(s.bytes_sent for s in self.nodes.values())

    def all_done(self) -> bool:
        return all(s.done for s in self.nodes.values())

    def failures(self) -> dict[int, str]:
        return {i: s.reason for i, s in self.nodes.items() if s.done and s.status != "ok"}


class Collector:
    """Binds a PULL socket and appends validated metrics records to `<run_dir>/metrics.jsonl`."""

    def __init__(self, run_dir: Path, run_id: str, num_nodes: int,
                 bind: str = "tcp://127.0.0.1:*", observer: Observer | None = None,
                 keys: CollectorKeys | None = None) -> None:
        self.run_id = run_id
        self.observer = observer
        self.zctx = zmq.Context()
        self.keys = keys
        self.rejected: Counter[str] = Counter()  # CURVE refusals, by reason (see transport)
        self._lock = threading.Lock()
        self.auth: PeerAuthenticator | None = None
        if keys is not None:
            self.auth = start_authenticator(self.zctx, "collector", keys.nodes, self.rejected,
                                            self._lock, log)
        self.sock = self.zctx.socket(zmq.PULL)
        self.sock.setsockopt(zmq.LINGER, 0)
        if keys is not None:
            make_curve_server(self.sock, keys.public, keys.secret)
        try:
            self.sock.bind(bind)
        except zmq.ZMQError as exc:
            self._stop_auth()
            self.zctx.destroy(linger=0)
            raise RuntimeError(f"collector: cannot bind {bind}: {exc}") from None
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.state = CollectorState({i: NodeStatus() for i in range(num_nodes)})
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / "metrics.jsonl"
        self.out = open(self.path, "a", buffering=1)  # noqa: SIM115 - kept open for the run

    def poll(self, timeout_ms: int) -> int:
        """Handle everything that arrives within `timeout_ms`; returns the number of records."""
        n = 0
        if not self.sock.poll(timeout_ms):
            return 0
        secure = self.keys is not None
        while True:
            try:
                got = self.sock.recv_multipart(zmq.NOBLOCK, copy=not secure)
            except zmq.Again:
                return n
            if secure:
                user = user_id(got[0])  # type: ignore[arg-type]
                frames = [f.bytes for f in got]  # type: ignore[union-attr]
                n += self._handle(frames, user)
            else:
                n += self._handle(got)  # type: ignore[arg-type]

    def _handle(self, frames: list[bytes], user: str | None = None) -> int:
        try:
            msg = decode_message(frames, run_id=self.run_id)
        except ProtocolError as exc:
            self.state.dropped += 1
            if milestone(self.state.dropped):
                log.warning("collector: dropped a message: %s (%d dropped)", exc,
                            self.state.dropped)
            return 0
        if self.keys is not None and str(msg.sender) != user:
            with self._lock:
                self.rejected["auth_mismatch"] += 1
                k = self.rejected["auth_mismatch"]
            if milestone(k):
                log.warning("collector: dropped a message claiming node %d from the connection "
                            "authenticated as node %s (%d time(s))", msg.sender, user, k)
            return 0
        st = self.state.nodes.get(msg.sender)
        if not isinstance(msg, ControlMessage) or st is None:
            self.state.dropped += 1
            return 0
        size = message_size(frames)
        if msg.type == "bye":
            st.bytes_bye += size
            st.done, st.status = True, str(msg.body.get("status", ""))
            st.reason = str(msg.body.get("reason", ""))
            self._notify("bye", msg.sender, {"status": st.status, "reason": st.reason})
            return 0
        if msg.type == "status":
            st.bytes_status += size
            st.msgs_status += 1
            if not st.done:
                self._notify("status", msg.sender, dict(msg.body))
            return 0
        if msg.type != "metrics":
            self.state.dropped += 1
            return 0
        try:
            rec = RoundRecord.from_json(msg.body["record"])
            if rec.node != msg.sender:
                raise RecordError(f"node: {rec.node} in a message from node {msg.sender}")
        except RecordError as exc:
            self.state.dropped += 1
            self.state.bad_records[str(msg.sender)] += 1
            if self.state.bad_records[str(msg.sender)] == 1:  # once per node: no log flood
                log.warning("collector: dropped a metrics record from node %d: %s", msg.sender,
                            exc)
            return 0
        st.bytes_metrics += size
        st.msgs_metrics += 1
        if rec.round in st.rounds_seen:  # a node that resumed redid a round: keep the first
            self.state.duplicates += 1
            return 0
        st.rounds_seen.add(rec.round)
        st.round = max(st.round, rec.round)
        st.bytes_sent += rec.bytes_sent
        if rec.test_acc is not None and rec.test_acc == rec.test_acc:  # evaluated, not NaN
            st.test_acc = rec.test_acc
        line = rec.to_json()
        self.out.write(json.dumps(line, sort_keys=True) + "\n")
        self._notify("record", msg.sender, line)
        return 1

    def _notify(self, event: str, node: int, body: dict[str, Any]) -> None:
        if self.observer is None:
            return
        try:
            self.observer(event, node, body)
        except Exception:  # a watcher must never stop the collection
            log.exception("collector: observer failed on %s from node %d", event, node)

    def close(self) -> None:
        self.out.close()
        # what the collector itself received per node (kind "metrics"), for the summary
        received = {str(i): {"metrics": st.bytes_metrics, "metrics_msgs": st.msgs_metrics,
                             "bye": st.bytes_bye, "status": st.bytes_status,
                             "status_msgs": st.msgs_status}
                    for i, st in sorted(self.state.nodes.items())}
        doc: dict[str, Any] = {"received": received, "dropped": self.state.dropped}
        if self.keys is not None:
            with self._lock:
                doc["rejected"] = dict(self.rejected)
        tmp = self.path.with_name("collector.json.tmp")
        try:
            tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
            tmp.replace(self.path.with_name("collector.json"))
        except OSError as exc:  # the run directory removed or unwritable: say so, still close
            log.warning("collector: could not write %s: %s", self.path.with_name(
                "collector.json"), exc.strerror or exc)
        finally:
            self.sock.close()
            self._stop_auth()
            self.zctx.term()

    def _stop_auth(self) -> None:
        if self.auth is not None:
            self.auth.stop()
            self.auth = None


@dataclass
class CollectResult:
    summary: dict[str, Any]
    failures: dict[int, str]
    complete: bool  # every node said bye

    @property
    def ok(self) -> bool:
        return self.complete and not self.failures


def collect_run(cfg: Config, topo: Topology, run_dir: Path, *, run_id: str,
                bind: str = "tcp://0.0.0.0:5600", timeout_s: float = 0,
                observer: Observer | None = None,
                keys: CollectorKeys | None = None) -> CollectResult:
    """`mcepl collect`: write the run directory, bind, gather every node's records until all
    said bye (or `timeout_s` passed, or Ctrl-C, SIGTERM, SIGHUP), then write the report.
    RunDirError for a used directory, RuntimeError when the address cannot be bound."""
    rd = RunDir.create(run_dir, cfg, topo)
    col = Collector(rd.path, run_id, topo.num_nodes, bind=bind, observer=observer, keys=keys)
    secure = "CURVE, nodes' keys only" if keys is not None else "plaintext, unauthenticated"
    print(f"collector for {run_id} listening on {col.address} ({secure}); waiting for "
          f"{topo.num_nodes} nodes", flush=True)
    t0 = time.perf_counter()
    deadline = time.monotonic() + timeout_s if timeout_s else None
    restore = stop_on_signals()
    try:
        while not col.state.all_done():
            col.poll(500)
            if deadline and time.monotonic() > deadline:
                print("error: timed out waiting for nodes", file=sys.stderr)
                break
    except KeyboardInterrupt as exc:
        print(f"interrupted{f' ({exc})' if str(exc) else ''}; metrics so far are in "
              "metrics.jsonl", file=sys.stderr)
    finally:
        restore()
        col.close()
    failures = col.state.failures()
    complete = col.state.all_done()
    summary = write_report(rd.path, {"algorithm": cfg.algorithm.name, "model": cfg.model.name,
                                     "dataset": cfg.data.dataset, "run_id": run_id,
                                     "wall_s": time.perf_counter() - t0,
                                     "status": "ok" if not failures and complete
                                     else "incomplete"})
    print(format_summary(summary))
    for i, why in sorted(failures.items()):
        print(f"node {i} failed: {why}", file=sys.stderr)
    return CollectResult(summary, failures, complete)
