"""How a node process ends when it is told to, or when whoever started it is gone.

- SIGTERM and SIGHUP (`docker stop`, systemd, `kill`, a closed terminal) raise `Stopped` in the
  main thread, as Ctrl-C raises KeyboardInterrupt (of which `Stopped` is a kind): the node says
  goodbye to the collector ("interrupted (SIGTERM)") and closes its sockets promptly.
- A node started by `mcepl launch` is given the launcher's pid (`--parent PID`): on Linux the
  kernel sends it SIGTERM when the launcher dies (prctl PR_SET_PDEATHSIG, set through ctypes),
  and on every system the round loop also checks, while it waits for messages, that its parent
  is still that process. A launcher killed with SIGKILL thus never leaves nodes behind.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable

PR_SET_PDEATHSIG = 1
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """The process was asked to stop by a signal (SIGTERM, SIGHUP)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def stop_on_signals(signals: Iterable[int] = STOP_SIGNALS) -> Callable[[], None]:
    """Make `signals` raise `Stopped` in the main thread; returns a function restoring the old
    handlers. A no-op outside the main thread (Python only delivers signals there)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old: dict[int, object] = {}

    def handler(signum: int, _frame: object) -> None:
        raise Stopped(signum)

    for s in signals:
        old[s] = signal.signal(s, handler)

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, h)  # type: ignore[arg-type]

    return restore


def ignore_signals(signals: Iterable[int] = (*STOP_SIGNALS, signal.SIGINT)
                   ) -> Callable[[], None]:
    """Ignore `signals` while cleaning up after one (a second Ctrl-C or SIGTERM must not cut the
    clean-up short); returns a function restoring the handlers. Main thread only, else a no-op."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = {s: signal.signal(s, signal.SIG_IGN) for s in signals}

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, h)  # type: ignore[arg-type]

    return restore


def _set_pdeathsig(signum: int) -> bool:
    """Ask Linux to send `signum` to this process when its parent dies; False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def watch_parent(parent_pid: int) -> Callable[[], str | None]:
    """Stop with the process `parent_pid` (our launcher): PR_SET_PDEATHSIG where there is one,
    and a check to call while waiting (returns why to stop, or None). When the parent is
    already gone (it died before we got here), the check says so at once."""
    _set_pdeathsig(signal.SIGTERM)

    def check() -> str | None:
        if os.getppid() != parent_pid:
            return f"its launcher (pid {parent_pid}) is gone; stopping"
        return None

    return check
