"""The event hub between the producers of a run's events and the page's clients.

Producers (the collector's observer, the launcher, a metrics.jsonl tailer) call the ``add_*`` /
``set_*`` methods from their own thread. Each call takes a lock for a few list operations and
returns: it never waits for a client, whatever the clients do.

Clients do not get a queue each. A client holds only a cursor per run (how many records it has
had, which state version): every ``interval_s`` its stream takes everything new since its cursor,
at most ``max_batch`` records, as ONE update. So an update goes out a few times a second at most
whatever the node count, a slow client simply gets bigger, rarer updates (and a stuck one holds
one unsent update, never a growing backlog), and a page opened late gets the whole run from the
start, in order. What the hub keeps is the run's history itself (the page's view of each record,
see ``records.slim``), about 200 bytes per node and round.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from mcepl.launcher.dashboard.records import slim
from mcepl.launcher.dashboard.runinfo import RunInfo

DEFAULT_INTERVAL_S = 0.25  # at most 4 updates per second per client
DEFAULT_MAX_BATCH = 5000  # records in one update; a longer backlog goes out over several

# node states shown on the page
STARTING, TRAINING, WAITING, DONE, FAILED, STOPPED = (
    "starting", "training", "waiting", "done", "failed", "stopped")


@dataclass
class _RunLog:
    info: RunInfo
    records: list[dict[str, Any]] = field(default_factory=list)
    states: dict[int, dict[str, Any]] = field(default_factory=dict)
    state_version: int = 0
    malformed: int = 0
    malformed_note: str = ""
    status: str = "running"
    status_version: int = 0
    seen: set[tuple[int, int]] = field(default_factory=set)


@dataclass(eq=False)
class Subscription:
    """One client's position in each run: records sent, state and status versions sent."""
    cursors: list[int]
    state_versions: list[int]
    status_versions: list[int]
    updates: int = 0


class EventHub:
    """Thread-safe store of the runs' events; see the module docstring."""

    def __init__(self, runs: list[RunInfo], interval_s: float = DEFAULT_INTERVAL_S,
                 max_batch: int = DEFAULT_MAX_BATCH) -> None:
        if not runs:
            raise ValueError("an event hub needs at least one run")
        self.interval_s, self.max_batch = interval_s, max_batch
        self._lock = threading.Lock()
        self._runs = [_RunLog(info) for info in runs]
        for log in self._runs:
            log.states = {n["id"]: {"state": STARTING, "detail": "", "round": -1}
                          for n in log.info.nodes}
        self._closed = False
        self.streams: list[Subscription] = []  # the clients connected now (for tests, status)

    # ------------------------------------------------------------------ producers (any thread)
    def add_record(self, run: int, rec: dict[str, Any]) -> bool:
        """Append one metrics record (a plain dict as in metrics.jsonl); False when it is not
        one, or repeats a (round, node) already added (a resumed node redoing a round)."""
        view = slim(rec)
        if view is None:
            return False
        key = (view["round"], view["node"])
        with self._lock:
            log = self._runs[run]
            if key in log.seen:
                return False
            log.seen.add(key)
            log.records.append(view)
            st = log.states.get(view["node"])
            if st is None:  # a node the topology does not list: keep its record, no state
                return True
            st["round"] = max(st["round"], view["round"])
            if st["state"] not in (DONE, FAILED, STOPPED):
                new = DONE if st["round"] >= log.info.rounds else TRAINING
                if (new, "") != (st["state"], st["detail"]):
                    st["state"], st["detail"] = new, ""
                    log.state_version += 1
        return True

    def set_state(self, run: int, node: int, state: str, detail: str = "") -> None:
        """A node's state: WAITING (detail: for whom), DONE, FAILED (detail: the error),
        STOPPED. A node already FAILED stays so."""
        with self._lock:
            log = self._runs[run]
            st = log.states.setdefault(node, {"state": STARTING, "detail": "", "round": -1})
            if st["state"] == FAILED and state != FAILED:
                return
            if state == WAITING and st["state"] in (DONE, STOPPED):
                return
            if (st["state"], st["detail"]) != (state, detail):
                st["state"], st["detail"] = state, detail
                log.state_version += 1

    def waiting(self, run: int, node: int, round: int, phase: int, peers: list[int],
                waited_s: float) -> None:
        """A node's report that it has waited `waited_s` in round/phase for `peers`."""
        with self._lock:
            st = self._runs[run].states.get(node)
            stale = st is not None and st["round"] >= round  # its record for it came first
        if not stale:
            who = ", ".join(map(str, peers)) or "?"
            self.set_state(run, node, WAITING,
                           f"for neighbour {who} (round {round}, {waited_s:.0f} s)")

    def add_malformed(self, run: int, count: int = 1, note: str = "") -> None:
        """Lines of metrics.jsonl that could not be read (skipped, counted on the page)."""
        with self._lock:
            log = self._runs[run]
            log.malformed += count
            log.malformed_note = note or log.malformed_note
            log.status_version += 1

    def set_status(self, run: int, status: str) -> None:
        """The run's status line ("running", "finished: ok", "failed: ...")."""
        with self._lock:
            log = self._runs[run]
            if log.status != status:
                log.status = status
                log.status_version += 1

    def finish(self, run: int, status: str) -> None:
        """The run ended: every node not done or failed becomes STOPPED, with the status."""
        with self._lock:
            log = self._runs[run]
            for st in log.states.values():
                if st["state"] not in (DONE, FAILED):
                    st["state"], st["detail"] = STOPPED, f"stopped after round {st['round']}"
                    log.state_version += 1
        self.set_status(run, status)

    def close(self) -> None:
        """No more events: every stream sends what it has not sent yet, then ends."""
        with self._lock:
            self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------ consumers
    def meta(self) -> dict[str, Any]:
        return {"runs": [log.info.to_json() for log in self._runs],
                "interval_s": self.interval_s}

    def subscribe(self) -> Subscription:
        n = len(self._runs)
        return Subscription([0] * n, [-1] * n, [-1] * n)

    def poll(self, sub: Subscription, limit: int | None = None) -> dict[str, Any] | None:
        """Everything new for this client since its last poll (records capped at ``limit``,
        default ``max_batch``), advancing its cursors; None when nothing is new."""
        limit = self.max_batch if limit is None else limit
        out: dict[str, Any] = {}
        with self._lock:
            for i, log in enumerate(self._runs):
                part: dict[str, Any] = {}
                start = sub.cursors[i]
                if start < len(log.records):
                    end = min(len(log.records), start + limit)
                    part["records"] = log.records[start:end]
                    part["first"] = start
                    sub.cursors[i] = end
                if sub.state_versions[i] != log.state_version:
                    part["states"] = {str(k): dict(v) for k, v in sorted(log.states.items())}
                    sub.state_versions[i] = log.state_version
                if sub.status_versions[i] != log.status_version:
                    part.update(status=log.status, malformed=log.malformed,
                                malformed_note=log.malformed_note)
                    sub.status_versions[i] = log.status_version
                if part:
                    out[str(i)] = part
        if not out:
            return None
        sub.updates += 1
        return {"runs": out}

    def drained(self, sub: Subscription) -> bool:
        with self._lock:
            return all(c >= len(log.records) for c, log in zip(sub.cursors, self._runs,
                                                                strict=True))

    def snapshot(self) -> dict[str, Any]:
        """The whole state as one JSON-able dict (``/api/snapshot``)."""
        data = self.poll(self.subscribe(), limit=1 << 62) or {"runs": {}}
        return {**self.meta(), **data}

    async def stream(self, sub: Subscription | None = None,
                     heartbeat_s: float = 15.0) -> AsyncIterator[str]:
        """Server-sent events for one client: ``meta`` once, then an ``update`` at most every
        ``interval_s`` while something is new, and ``end`` after ``close`` once drained."""
        sub = sub or self.subscribe()
        with self._lock:
            self.streams.append(sub)
        try:
            async for chunk in self._stream(sub, heartbeat_s):
                yield chunk
        finally:
            with self._lock:
                self.streams.remove(sub)

    async def _stream(self, sub: Subscription, heartbeat_s: float) -> AsyncIterator[str]:
        yield sse("meta", self.meta())
        last = time.monotonic()
        while True:
            closed = self._closed  # read before polling: nothing added after it is missed
            update = self.poll(sub)
            if update is not None:
                yield sse("update", update)
                last = time.monotonic()
            elif closed and self.drained(sub):
                yield sse("end", {})
                return
            elif time.monotonic() - last > heartbeat_s:
                yield ": keep-alive\n\n"
                last = time.monotonic()
            await asyncio.sleep(self.interval_s)


def sse(event: str, data: Any) -> str:
    """One server-sent event (the data is one line of JSON)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
