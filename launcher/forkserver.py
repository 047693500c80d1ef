"""Start node processes by forking them from one process that has imported torch once.

A node process spends ~1.2-1.5 s of CPU importing torch and mcepl before it does anything, and
holds ~142 MiB of private memory that the import wrote (of ~236 MiB resident). With 100 nodes on
2 cores that is minutes of start-up and ~14 GiB. `mcepl launch` therefore starts a *fork server*
(`python -m mcepl.launcher.forkserver`): it imports torch and mcepl, starts no thread and runs no
torch operation, then forks one child per node on request. A forked node shares the imported
pages with the server (copy-on-write) and starts in milliseconds; it is still one OS process per
node, running exactly the code of `mcepl node` (`mcepl.node.main.main`) with the same arguments.

How a node is started (Linux only; everywhere else, and for GPU devices, nodes are spawned as
before, `python -m mcepl.node.main`):

- The launcher makes itself a *child subreaper* (PR_SET_CHILD_SUBREAPER) and talks to the server
  over a Unix socket pair: one request per node (arguments, environment) with the node's log file
  and listening socket passed as file descriptors (SCM_RIGHTS).
- The server forks twice: the intermediate child forks the node and exits at once, so the node
  is re-parented to the launcher. The launcher is then the node's parent, exactly as with spawn:
  it waits for it and reads its exit status or killing signal (``waitpid``), it signals it, and
  the node's parent-death handling (`--parent`, PR_SET_PDEATHSIG, node/lifecycle.py) watches the
  launcher.
- The node starts a new session, writes stdout and stderr to its log file, takes the launcher's
  environment (OMP_NUM_THREADS, MCEPL_LOCAL_NODES), and ends with ``os._exit`` so nothing of the
  server runs in it.
- The server has no threads when it forks (OpenBLAS's pool is kept to one thread, i.e. none
  started) and freezes its objects for the garbage collector (``gc.freeze``) so that collections
  in the nodes do not copy the shared pages. It exits when the launcher closes the socket or
  dies.

``MCEPL_NODE_START=spawn`` turns it off (each node its own interpreter, as before).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence

START_ENV = "MCEPL_NODE_START"
PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
NODE_NAME = "mcepl-node"
"""A forked node's process name (``ps -e``, ``top``, ``pgrep``, /proc/PID/comm): "mcepl-node 3".
Its command line stays the server's (`... mcepl.launcher.forkserver FD PID RUN_DIR`)."""
MAX_MSG = 1 << 20


def _prctl(option: int, value: int | bytes) -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        arg = ctypes.c_char_p(value) if isinstance(value, bytes) else ctypes.c_ulong(value)
        return libc.prctl(option, arg, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def wanted(device: str) -> bool:
    """Fork nodes for this run? Linux, a CPU device, and not turned off by MCEPL_NODE_START."""
    how = os.environ.get(START_ENV, "fork").strip().lower()
    if how not in ("fork", "spawn"):
        raise ValueError(f"{START_ENV}={how!r}: must be 'fork' or 'spawn'")
    return how == "fork" and sys.platform.startswith("linux") and device == "cpu"


def release() -> None:
    """Stop being a child subreaper (after a launch whose nodes are all reaped)."""
    _prctl(PR_SET_CHILD_SUBREAPER, 0)


class ForkedProcess:
    """A node forked by the server and re-parented to us: the parts of Popen the launcher uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: its status is lost
                self.returncode = -signal.SIGKILL
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            time.sleep(0.02)
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServerError(RuntimeError):
    pass


class ForkServer:
    """The launcher's side: start the server, ask it for nodes, close it. `label` (the run
    directory) goes on the server's command line, which its nodes share."""

    def __init__(self, label: str = "", timeout_s: float = 120.0) -> None:
        if not _prctl(PR_SET_CHILD_SUBREAPER, 1):
            raise ForkServerError("cannot become a child subreaper (prctl)")
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {**os.environ, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS",
                                                                     "1")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mcepl.launcher.forkserver", str(theirs.fileno()),
             str(os.getpid()), label], pass_fds=(theirs.fileno(),), env=env, start_new_session=True,
            stdin=subprocess.DEVNULL)
        theirs.close()
        self._sock.settimeout(timeout_s)
        try:
            ready = self._sock.recv(64)
        except (TimeoutError, OSError) as exc:
            self.close()
            raise ForkServerError(f"the fork server did not start: {exc}") from None
        if ready != b"ready":
            self.close()
            raise ForkServerError(f"the fork server did not start (exit {self.proc.poll()})")

    def start(self, argv: Sequence[str], env: dict[str, str], log_fd: int,
              listen_fd: int | None, name: str = NODE_NAME) -> ForkedProcess:
        """Fork a node running `mcepl node ARGV` (``--listen-fd`` is set here from
        `listen_fd`), called `name`; its stdout and stderr go to `log_fd`."""
        msg = json.dumps({"argv": list(argv), "env": env, "name": name,
                          "listen": listen_fd is not None}).encode()
        fds = [log_fd] + ([listen_fd] if listen_fd is not None else [])
        try:
            socket.send_fds(self._sock, [msg], fds)
            reply = self._sock.recv(64)
        except OSError as exc:
            raise ForkServerError(f"the fork server failed: {exc}") from None
        if len(reply) != 8:
            raise ForkServerError(f"the fork server failed (exit {self.proc.poll()})")
        pid = struct.unpack("<q", reply)[0]
        if pid <= 0:
            raise ForkServerError(f"the fork server could not fork: errno {-pid}")
        return ForkedProcess(pid)

    def close(self) -> None:
        """Stop the server (the nodes it started go on; they are our children now)."""
        try:
            self._sock.close()
        finally:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---- the server process ----------------------------------------------------------------------

def _child(req: dict, fds: list[int], launcher: int) -> None:
    """In the node (the grandchild): become a normal `mcepl node` process, never return."""
    code = 1
    try:
        deadline = time.monotonic() + 10.0
        while os.getppid() != launcher and time.monotonic() < deadline:
            time.sleep(0.001)  # the intermediate child is exiting: wait to be re-parented
        os.setsid()
        _prctl(PR_SET_NAME, req["name"].encode()[:15])
        log = fds[0]
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        sys.stdout.reconfigure(line_buffering=True, write_through=True)  # type: ignore[union-attr]
        os.environ.clear()
        os.environ.update(req["env"])
        argv = list(req["argv"])
        if req["listen"]:
            argv += ["--listen-fd", str(fds[1])]
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        sys.argv = ["mcepl-node", *argv]
        from mcepl.node.main import main

        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - the node must never fall back into the server
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _serve(sock: socket.socket, launcher: int) -> None:
    import gc

    import torch  # noqa: F401 - what the server is for

    import mcepl.node.main  # noqa: F401
    import mcepl.node.plugins  # noqa: F401

    gc.collect()
    gc.freeze()
    sock.send(b"ready")
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(sock, MAX_MSG, 2)
        except OSError:
            return
        if not msg:
            return  # the launcher closed its end
        req = json.loads(msg)
        r, w = os.pipe()
        try:
            mid = os.fork()
        except OSError as exc:
            sock.send(struct.pack("<q", -(exc.errno or 1)))
            for fd in fds:
                os.close(fd)
            continue
        if mid == 0:  # the intermediate child
            try:
                os.close(r)
                sock.close()
                pid = os.fork()
                if pid == 0:
                    os.close(w)
                    _child(req, fds, launcher)
                os.write(w, struct.pack("<q", pid))
            finally:
                os._exit(0)
        os.close(w)
        data = os.read(r, 8)
        os.close(r)
        os.waitpid(mid, 0)
        for fd in fds:
            os.close(fd)
        sock.send(data if len(data) == 8 else struct.pack("<q", -1))


def main() -> None:
    fd, launcher = int(sys.argv[1]), int(sys.argv[2])
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != launcher:
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher handles Ctrl-C
    _serve(socket.socket(fileno=fd), launcher)


if __name__ == "__main__":
    main()
