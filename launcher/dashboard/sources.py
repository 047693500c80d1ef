"""Feeding a hub from a run directory: replay what metrics.jsonl holds, then follow it.

A run still being written (a `mcepl collect` on another host, a launch in progress) is followed
by polling the file: only complete lines are read, so a line half written is read once finished;
a complete line that is not a record is skipped and counted (shown on the page), never fatal.
When summary.json appears the run has ended and its status is shown.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

from mcepl.launcher.dashboard.hub import FAILED, EventHub
from mcepl.launcher.dashboard.runinfo import run_status
from mcepl.node.record import RecordError, RoundRecord

POLL_S = 0.5
_FAILED_NODE = re.compile(r"^node (\d+) failed")


class MetricsTail:
    """One run directory's metrics.jsonl into run ``run`` of ``hub``.

    ``speed``: 0 puts the records already written in at once; N > 0 replays them at N rounds per
    second (the page then shows the run unfold). Either way they go in ordered by (round, node),
    and lines appended later follow in the order they arrive."""

    def __init__(self, hub: EventHub, run: int, run_dir: Path, speed: float = 0.0) -> None:
        self.hub, self.run, self.run_dir, self.speed = hub, run, Path(run_dir), speed
        self.path = self.run_dir / "metrics.jsonl"
        self.offset = 0
        self.partial = b""
        self.lineno = 0
        self.finished = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read_new(self) -> list[dict[str, Any]]:
        """The complete lines appended since the last call, as records (bad ones counted)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return []
        self.offset += len(chunk)
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()  # after the last newline: incomplete (or empty)
        out, bad, first_bad = [], 0, ""
        for raw in lines:
            self.lineno += 1
            if not raw.strip():
                continue
            try:  # what `mcepl report` reads too: a RoundRecord
                out.append(RoundRecord.from_json(json.loads(raw)).to_json())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                why = f"not JSON ({getattr(exc, 'msg', exc)})"
            except RecordError as exc:
                why = f"not a record ({exc})"
            else:
                continue
            bad += 1
            first_bad = first_bad or f"{self.path.name} line {self.lineno}: {why}"
        if bad:
            self.hub.add_malformed(self.run, bad, first_bad)
        return out

    def load(self) -> int:
        """Everything written so far, in (round, node) order, paced by ``speed``."""
        recs = sorted(self.read_new(), key=lambda r: (r["round"], r["node"]))
        if self.speed <= 0:
            for r in recs:
                self.hub.add_record(self.run, r)
        else:
            i = 0
            while i < len(recs) and not self._stop.is_set():
                rnd = recs[i]["round"]
                while i < len(recs) and recs[i]["round"] == rnd:
                    self.hub.add_record(self.run, recs[i])
                    i += 1
                self._stop.wait(1.0 / self.speed)
        self.check_finished()
        return len(recs)

    def check_finished(self) -> bool:
        """summary.json present: the run ended; show its status."""
        if self.finished:
            return True
        status = run_status(self.run_dir)
        if status is None:
            return False
        self.finished = True
        m = _FAILED_NODE.match(status)
        if m:
            self.hub.set_state(self.run, int(m.group(1)), FAILED, status)
        self.hub.finish(self.run, "finished: ok" if status == "ok" else f"ended: {status}")
        return True

    def follow_once(self) -> int:
        recs = self.read_new()
        for r in recs:
            self.hub.add_record(self.run, r)
        if not recs:
            self.check_finished()
        return len(recs)

    def start(self) -> MetricsTail:
        def loop() -> None:
            self.load()
            while not self._stop.wait(POLL_S):
                self.follow_once()

        self._thread = threading.Thread(target=loop, name=f"mcepl-tail-{self.run}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def wait_loaded(tails: list[MetricsTail], timeout_s: float = 10.0) -> None:
    """For tests: until every tail has read what the file held when it started."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(t.offset == 0 and t.path.stat().st_size
                                              for t in tails):
        time.sleep(0.02)
