"""The networked driver of one node: the round core (`node/rounds.py`) over ZeroMQ.

It only sequences: the handshake, pumping the sockets, buffering messages that arrive early,
deduplication, timeouts, the metrics file and checkpoints, and a neighbour's rejoin. What a
round does (the algorithm, encoding through `PeerLinks`, the bill, the record) is `RoundCore`,
which the in-process driver runs too. Bad messages (undecodable, wrong sender, stale, duplicate,
too far ahead, or refused by the algorithm's `check`) are dropped and counted; they never stop
the node.

Identity: a connection to our ROUTER speaks for neighbour j only after a valid hello from j on
it (run id and config hash; with CURVE, also j's key); the transport then binds it
(`NodeSockets.bind_connection`). Everything else from a connection that is not bound is
dropped (`unbound`), so a stranger cannot cut a neighbour off. A hello with another config hash
is refused with a reason the neighbour prints; it ends this node only when CURVE proves it came
from that neighbour (in plaintext anyone may send one: the handshake's timeout then names it).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcepl import jsonio
from mcepl.config import Config
from mcepl.node.algorithms import Algorithm
from mcepl.node.checkpoint import (
    checkpoint_path,
    payload_from_dict,
    payload_to_dict,
    save_checkpoint,
)
from mcepl.node.links import COLLECTOR, Delivered, PeerLinks
from mcepl.node.record import RecordError, RoundRecord
from mcepl.node.rounds import Evaluator, RoundCore
from mcepl.node.snapshots import MaskSnapshots
from mcepl.node.transport import NodeSockets, milestone
from mcepl.protocol import (
    ControlMessage,
    DataMessage,
    ProtocolError,
    decode_message,
    encode_control,
    encode_metrics,
    message_size,
)
from mcepl.topology import Topology

log = logging.getLogger("mcepl.node")

MAX_ROUNDS_AHEAD = 2  # a peer may run at most this many rounds ahead; further is dropped
MAX_HELLO_BYTES = 4096  # an unbound connection's message is only decoded below this size
# a phase that has waited this long for its peers tells the collector whom it waits for (the
# dashboard's "waiting for neighbour X"), and again every STATUS_EVERY_S or when that changes
STATUS_AFTER_S = 1.0
STATUS_EVERY_S = 2.0


class NodeError(RuntimeError):
    """A failure that ends this node's run, with a message naming what and who."""


class NodeRuntime:
    """Drives one node's round core over its sockets for the configured number of rounds.

    `evaluator`: the node's test set (None: no `test_acc` in the records). `should_stop`,
    asked while the node waits for messages, returns a reason to stop (e.g. the launcher that
    started it is gone) or None. `masks_dir`: where the node writes its mask snapshots on
    evaluation rounds, or after the last round with `mask_snapshots = "final"` (None: none;
    see node/snapshots.py)."""

    def __init__(self, cfg: Config, topo: Topology, node_id: int, run_id: str,
                 algo: Algorithm, sockets: NodeSockets,
                 checkpoint_dir: str | Path | None = None, *,
                 evaluator: Evaluator | None = None,
                 should_stop: Callable[[], str | None] | None = None,
                 masks_dir: str | Path | None = None, mask_snapshots: str = "eval") -> None:
        self.cfg, self.topo, self.id, self.run_id = cfg, topo, node_id, run_id
        self.checkpoint = checkpoint_path(checkpoint_dir, node_id) if checkpoint_dir else None
        # every record also goes to a local file next to the checkpoint: after a crash, records
        # the collector never got (still queued in the dead process) are pushed again
        self.metrics_log = (self.checkpoint.with_name(f"node-{node_id}.metrics.jsonl")
                            if self.checkpoint else None)
        if self.checkpoint is not None:
            self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        self.sock = sockets
        self.neighbors = set(topo.neighbors(node_id))
        self.links = PeerLinks(node_id, self.neighbors, run_id, cfg.run.codec)
        snapshots = (MaskSnapshots(masks_dir, node_id, cfg.run.eval_every, cfg.run.rounds,
                                   mask_snapshots) if masks_dir is not None else None)
        self.core = RoundCore(node_id, algo, self.links, evaluator, snapshots)
        self.config_hash = cfg.hash()
        self.buffer: dict[tuple[int, int], dict[int, Delivered]] = {}
        self.dropped: Counter[str] = Counter()
        self.rejoins: Counter[int] = Counter()
        self.acked: set[int] = set()
        self.greeted: set[int] = set()
        self.refused: dict[int, str] = {}  # neighbour -> why its last hello was refused
        self.should_stop = should_stop
        self.pos = (0, 0)  # (round, phase) being collected
        self.start_round = 0
        self.resumed = False
        self.status_bytes = 0  # status messages pushed to the collector (cumulative)

    @property
    def algo(self) -> Algorithm:
        return self.core.algo

    # ------------------------------------------------------------------ handshake
    def handshake(self) -> None:
        """Say hello to every neighbour and wait for all acks and all of their hellos. A node
        resuming after a crash does the same: each neighbour sees its hello on a new connection,
        resends what it sent lately and says hello again, which binds its link to us."""
        for j in sorted(self.neighbors):
            self._send(j, self._hello(), "control")
        deadline = time.monotonic() + self.cfg.run.connect_timeout_s
        while self.acked != self.neighbors or self.greeted != self.neighbors:
            left = deadline - time.monotonic()
            if left <= 0:
                missing = sorted((self.neighbors - self.acked) | (self.neighbors - self.greeted))
                addrs = ", ".join(f"{j} ({self.topo.node(j).address})" for j in missing)
                why = "; ".join(f"refused a hello claiming to be node {j}: {self.refused[j]}"
                                for j in missing if j in self.refused)
                raise NodeError(f"node {self.id}: no handshake from neighbour(s) {addrs} within "
                                f"{self.cfg.run.connect_timeout_s:g} s" + (f" ({why})" if why
                                                                           else ""))
            self._pump(int(min(left, 0.5) * 1000))

    def _hello(self) -> list[bytes]:
        return encode_control("hello", {"config_hash": self.config_hash}, run_id=self.run_id,
                              sender=self.id)

    def _send(self, peer: int, frames: list[bytes], kind: str) -> None:
        self.sock.send(peer, frames)
        self.links.count_sent(peer, kind, frames)

    # ------------------------------------------------------------------ receiving
    def _pump(self, timeout_ms: int) -> None:
        if self.should_stop is not None:
            why = self.should_stop()
            if why:
                raise NodeError(f"node {self.id}: {why}")
        for where, who, frames in self.sock.poll(timeout_ms):
            if where == "dealer":
                self._on_dealer(int(who), frames)  # type: ignore[arg-type]
            else:
                self._on_router(who, frames)  # type: ignore[arg-type]

    def _on_dealer(self, peer: int, frames: list[bytes]) -> None:
        self.links.count_received(peer, "ack", message_size(frames))
        try:
            msg = decode_message(frames, run_id=self.run_id)
        except ProtocolError as exc:
            self._drop(f"malformed_{exc.reason}", peer, exc)
            return
        if not isinstance(msg, ControlMessage) or msg.type != "hello_ack" or msg.sender != peer:
            self._drop("unexpected", peer, "not a hello_ack from that peer")
            return
        if not msg.body.get("accept"):
            raise NodeError(f"node {self.id}: neighbour {peer} refused the handshake: "
                            f"{msg.body.get('reason', '')}")
        self.acked.add(peer)

    def _on_router(self, conn: bytes, frames: list[bytes]) -> None:
        peer = self.sock.peer_of(conn)
        if peer is None:
            self._on_unbound(conn, frames)
            return
        try:
            msg = self.links.decode(peer, frames)
        except ProtocolError as exc:
            self._drop(f"malformed_{exc.reason}", peer, exc)
            return
        if msg.sender != peer:
            self._drop("wrong_sender", peer, f"header says sender {msg.sender}")
            return
        if isinstance(msg, ControlMessage):
            self._on_control(conn, peer, msg)
        else:
            self._on_data(peer, msg, message_size(frames))

    def _on_unbound(self, conn: bytes, frames: list[bytes]) -> None:
        """A message on a connection that speaks for nobody yet: only a valid hello from a
        neighbour (with CURVE: from the holder of that neighbour's key) binds it."""
        size = message_size(frames)
        if size > MAX_HELLO_BYTES:
            self._drop_unbound(conn, f"{size} bytes before any hello")
            return
        try:
            msg = decode_message(frames, run_id=self.run_id)
        except ProtocolError as exc:
            self._drop_unbound(conn, exc)
            return
        if not isinstance(msg, ControlMessage) or msg.type != "hello":
            self._drop_unbound(conn, f"a {getattr(msg, 'type', 'data')} message before any hello")
            return
        peer = msg.sender
        if peer not in self.neighbors:
            self.dropped["unknown_sender"] += 1
            n = self.dropped["unknown_sender"]
            if milestone(n):
                log.warning("node %d: dropped a hello from node %d, not a neighbour, on connection "
                            "%r (%d time(s))", self.id, peer, conn[:24], n)
            return
        if self.sock.secure and self.sock.user_of(conn) != str(peer):
            self.sock.count_mismatch(conn, self.sock.user_of(conn))
            return
        self.links.count_received(peer, "control", size)
        self._on_control(conn, peer, msg)

    def _drop_unbound(self, conn: bytes, detail: object) -> None:
        self.dropped["unbound"] += 1
        n = self.dropped["unbound"]
        if milestone(n):
            log.warning("node %d: dropped a message from connection %r, which has not said a "
                        "valid hello (%s) (%d time(s))", self.id, conn[:24], detail, n)

    def _on_control(self, conn: bytes, peer: int, msg: ControlMessage) -> None:
        if msg.type != "hello":
            self._drop("unexpected", peer, f"control message {msg.type!r}")
            return
        theirs = msg.body.get("config_hash")
        ok = theirs == self.config_hash
        reason = "" if ok else (f"config hash mismatch: node {self.id} has {self.config_hash}, "
                                f"node {peer} has {theirs}")
        ack = encode_control("hello_ack", {"accept": ok, "reason": reason}, run_id=self.run_id,
                             sender=self.id)
        self.sock.reply(conn, ack)
        self.links.count_sent(peer, "ack", ack)
        if not ok:
            if self.sock.secure:  # CURVE proved it is the neighbour: its config differs
                raise NodeError(f"node {self.id}: refused neighbour {peer}: {reason}")
            self.refused[peer] = reason  # in plaintext anyone could have sent it
            self._drop("config_mismatch", peer, reason)
            return
        new = self.sock.peer_of(conn) is None
        self.sock.bind_connection(conn, peer)
        if peer in self.greeted and new:
            self._rejoined(peer)
        self.greeted.add(peer)

    def _rejoined(self, peer: int) -> None:
        """A neighbour we know said hello on a new connection: it restarted from a checkpoint.
        We say hello again on our link to it (its new process must bind that connection to us),
        our sending side of the link starts afresh (its receiving side is new) and we send it
        again what we sent in the last two rounds (it dedups). Our receiving side keeps its
        references: a restarted neighbour's first mask on the link is a key frame anyway, and a
        hello that did not come from a restart (anyone can send one in plaintext) must not break
        the link. A hello on a connection already bound is only acknowledged, so two nodes
        never answer each other's hellos for ever."""
        self.rejoins[peer] += 1
        log.warning("node %d: neighbour %d rejoined; resending rounds %s", self.id, peer,
                    sorted({k[0] for k in self.links.sent_log}))
        self._send(peer, self._hello(), "control")
        self.links.reset_sending(peer)
        for frames in self.links.resend(peer):
            self.sock.send(peer, frames)

    def _on_data(self, peer: int, msg: DataMessage, size: int) -> None:
        key = (msg.round, msg.phase)
        if key < self.pos:
            self._drop("stale", peer, f"round {msg.round} phase {msg.phase} < {self.pos}")
            return
        if msg.round > self.pos[0] + MAX_ROUNDS_AHEAD:
            self._drop("too_far_ahead", peer, f"round {msg.round} while at {self.pos[0]}")
            return
        if msg.phase >= self.core.phases(msg.round):
            self._drop("bad_phase", peer, f"round {msg.round} has no phase {msg.phase}")
            return
        slot = self.buffer.setdefault(key, {})
        if peer in slot:
            self._drop("duplicate", peer, f"second message for round {msg.round}")
            return
        try:
            self.core.admit(msg.round, msg.phase, peer, msg.payload)
        except ValueError as exc:
            self._drop("invalid_payload", peer, exc)
            return
        slot[peer] = Delivered(msg.payload, size)

    def _drop(self, why: str, peer: int, detail: object) -> None:
        self.dropped[why] += 1
        log.warning("node %d: dropped message from %d (%s): %s", self.id, peer, why, detail)

    # ------------------------------------------------------------------ rounds
    def exchange(self, rnd: int, phase: int) -> None:
        """Send this phase's messages, collect exactly one from each expected peer, merge."""
        self.pos = (rnd, phase)
        for j, frames in self.core.send_phase(rnd, phase):
            self.sock.send(j, frames)
        want = self.core.expected(rnd, phase)
        t_sent = time.perf_counter()
        start = time.monotonic()
        deadline = start + self.cfg.run.round_timeout_s
        told: tuple[float, list[int]] | None = None  # the last status: when, whom
        while True:
            have = self.buffer.get((rnd, phase), {})
            if want <= set(have):
                break
            now = time.monotonic()
            missing = sorted(want - set(have))
            if now - start >= STATUS_AFTER_S and (
                    told is None or told[1] != missing or now - told[0] >= STATUS_EVERY_S):
                self._tell_waiting(rnd, phase, missing, now - start)
                told = (now, missing)
            left = deadline - time.monotonic()
            if left <= 0:
                silent = sorted(want - set(have))
                addrs = ", ".join(f"{j} ({self.topo.node(j).address})" for j in silent)
                raise NodeError(f"node {self.id}: round {rnd} phase {phase}: no message from "
                                f"neighbour(s) {addrs} within {self.cfg.run.round_timeout_s:g} s")
            self._pump(int(min(left, 0.5) * 1000) + 1)
        got = self.buffer.pop((rnd, phase), {})
        extra = set(got) - want
        if extra:
            self.dropped["unexpected"] += len(extra)
        self.core.receive_phase(rnd, phase, {j: got[j] for j in sorted(want)},
                                waited_s=time.perf_counter() - t_sent)

    def restore(self, state: dict[str, Any]) -> int:
        """Load a checkpoint (after a crash) into this node: the algorithm, the dropped counts
        and what the last finished round sent; push again the records the collector may have
        missed. Returns the round to continue with; then call `run(resume=True)`."""
        self.core.algo.load_state_dict(state["algo"])
        # the model's buffers (a user model's BatchNorm statistics move during training)
        self.core.algo.ctx.model.load_buffers(state.get("model_buffers", {}))
        self.dropped.update(state.get("dropped", {}))
        done = int(state["round"])
        for rnd, phase, j, p in state["sent"]:
            self.links.sent_log.setdefault((rnd, phase), {})[j] = payload_from_dict(p)
        log.warning("node %d: resuming after round %d from %s", self.id, done, self.checkpoint)
        if self.metrics_log is not None and self.metrics_log.exists():
            for line in self.metrics_log.read_text().splitlines():
                try:
                    rec = RoundRecord.from_json(jsonio.loads(line))
                except (json.JSONDecodeError, jsonio.JSONLimitError, RecordError):
                    continue  # a line torn by the crash; that round is redone anyway
                if rec.round <= done:
                    self._push(encode_metrics(rec.to_json(), run_id=self.run_id,
                                              sender=self.id))
        self.pos = (done + 1, 0)
        self.start_round, self.resumed = done + 1, True
        return done + 1

    def run(self) -> None:
        """Handshake, then rounds `start_round`..R; metrics go to the collector each round.

        The first round's record also carries the handshake's bytes (kinds "control": the
        hellos, on our DEALERs; "ack": the acknowledgements, on our ROUTER)."""
        self.handshake()
        if self.resumed:
            for j, frames in self.links.resend_all():
                self.sock.send(j, frames)
        status_before = self.status_bytes
        for rnd in range(self.start_round, self.cfg.run.rounds + 1):
            self.core.begin_round(rnd)
            for phase in range(self.core.phases(rnd)):
                self.exchange(rnd, phase)
            self.pos = (rnd + 1, 0)
            # drop anything left for finished rounds (it can only be stale now)
            for key in [k for k in self.buffer if k < self.pos]:
                self.dropped["stale"] += len(self.buffer.pop(key))
            record = self.core.end_round(rnd, dropped=sum(self.dropped.values()),
                                         rejected=self._rejected())
            record.dropped_by = " ".join(f"{why}:{n}" for why, n in sorted(self.dropped.items())
                                         if n) or None
            record.bytes_sent_status = self.status_bytes - status_before
            status_before = self.status_bytes
            self._publish(record)
            self._save_checkpoint(rnd)

    def _rejected(self) -> int | None:
        """Connections/messages CURVE refused (None on a plaintext transport)."""
        return sum(self.sock.rejected_counts().values()) if self.sock.secure else None

    def _publish(self, record: RoundRecord) -> None:
        """To the local metrics file and the collector; the record states the size of the
        metrics message carrying it."""
        body = record.to_json()
        frames = encode_metrics(body, run_id=self.run_id, sender=self.id)
        record.bytes_sent_metrics = body["bytes_sent_metrics"]
        if self.metrics_log is not None:
            with open(self.metrics_log, "a") as f:
                f.write(json.dumps(body) + "\n")
        self._push(frames)

    def _push(self, frames: list[bytes]) -> bool:
        if self.sock.push_metrics(frames):
            self.links.count_sent(COLLECTOR, "metrics", frames)
            return True
        return False

    def _tell_waiting(self, rnd: int, phase: int, peers: list[int], waited_s: float) -> None:
        """A status message to the collector: still waiting, for these peers (counted as kind
        "metrics" in the bill and in the record's `bytes_sent_status`). Never changes what the
        round computes."""
        frames = encode_control("status", {"round": rnd, "phase": phase, "waiting_for": peers,
                                           "waited_s": round(float(waited_s), 3)},
                                run_id=self.run_id, sender=self.id)
        if self._push(frames):
            self.status_bytes += message_size(frames)

    def _save_checkpoint(self, rnd: int) -> None:
        """State after round `rnd`, with what was sent in it (for neighbours that missed it)."""
        if self.checkpoint is None:
            return
        sent = [(r, ph, j, payload_to_dict(p))
                for (r, ph), out in sorted(self.links.sent_log.items())
                if r == rnd for j, p in sorted(out.items())]
        save_checkpoint(self.checkpoint, {
            "run_id": self.run_id, "config_hash": self.config_hash, "node": self.id,
            "round": rnd, "algo": self.core.algo.state_dict(), "sent": sent,
            "model_buffers": self.core.algo.ctx.model.buffers_state(),
            "dropped": dict(self.dropped)})

    def dropped_counts(self) -> dict[str, int]:
        return dict(self.dropped)
