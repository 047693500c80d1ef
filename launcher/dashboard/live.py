"""Wiring a dashboard to a run: the collector's observer for a live run, tails for run
directories, and the one line the commands print."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Any

from mcepl.launcher.dashboard.hub import DONE, FAILED, EventHub
from mcepl.launcher.dashboard.runinfo import RunInfo, from_run_dir
from mcepl.launcher.dashboard.server import DashboardServer
from mcepl.launcher.dashboard.sources import MetricsTail

log = logging.getLogger("mcepl.dashboard")
LOOPBACK = "127.0.0.1"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_note(server: DashboardServer) -> str:
    """The line printed when the dashboard starts; says so when it is reachable from elsewhere."""
    line = f"dashboard: {server.url}"
    if not is_loopback(server.host):
        line += (f"  (listening on {server.host}:{server.port}: reachable from other machines, "
                 "no authentication; the page is read-only)")
    return line


class LiveDashboard:
    """A dashboard fed by a run in progress. ``observer`` is what the collector (and the
    launcher, for a node process that died) call; it never waits for a page."""

    def __init__(self, info: RunInfo, host: str = LOOPBACK, port: int | None = None) -> None:
        self.hub = EventHub([info])
        self.server = DashboardServer(self.hub, host, port)  # DashboardError: port in use

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> LiveDashboard:
        self.server.start()
        return self

    def observer(self, event: str, node: int, body: dict[str, Any]) -> None:
        try:
            if event == "record":
                self.hub.add_record(0, body)
            elif event == "bye":
                ok = body.get("status") == "ok"
                self.hub.set_state(0, node, DONE if ok else FAILED,
                                   "" if ok else str(body.get("reason") or body.get("status")))
            elif event == "failed":
                self.hub.set_state(0, node, FAILED, str(body.get("reason", "")))
            elif event == "status":
                peers = [p for p in body.get("waiting_for", []) if isinstance(p, int)]
                self.hub.waiting(0, node, int(body.get("round", -1)), int(body.get("phase", 0)),
                                 peers, float(body.get("waited_s", 0.0)))
        except Exception:  # the dashboard must never break a run
            log.exception("dashboard: could not take a %s event from node %d", event, node)

    def finish(self, status: str) -> None:
        self.hub.finish(0, status)

    def stop(self) -> None:
        self.server.stop()


class ReplayDashboard:
    """A dashboard of run directories (finished, or still being written elsewhere)."""

    def __init__(self, run_dirs: list[Path], host: str = LOOPBACK, port: int | None = None,
                 speed: float = 0.0) -> None:
        infos = [from_run_dir(Path(d)) for d in run_dirs]  # NotARunError first
        self.hub = EventHub(infos)
        self.server = DashboardServer(self.hub, host, port)
        self.tails = [MetricsTail(self.hub, i, Path(d), speed) for i, d in enumerate(run_dirs)]

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> ReplayDashboard:
        self.server.start()
        for t in self.tails:
            t.start()
        return self

    def stop(self) -> None:
        for t in self.tails:
            t.stop()
        self.server.stop(drain_s=0)
