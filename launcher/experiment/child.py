"""`python -m mcepl.launcher.experiment.child PARENT_PID ARGS...`: `mcepl ARGS...` (a run of an
experiment) that is interrupted, as by Ctrl-C, when the experiment process PARENT_PID dies,
even by SIGKILL (Linux), so a run never goes on writing into a directory the next invocation
of the experiment redoes. `mcepl launch` stops its nodes when interrupted."""

from __future__ import annotations

import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    parent = int(argv[0])
    # SIGINT means "stop" even when the experiment was started in the background, where the
    # shell makes its children ignore SIGINT (and Python then keeps ignoring it)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGINT)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the experiment already died before the line above
        return 130
    from mcepl.launcher.cli import main as mcepl

    return mcepl(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
