"""Addresses a local launch can never share with another run: reserved before any node starts.

The launcher binds and listens on every node's address itself and hands each listening socket
to its node process (the fd is inherited; the node adopts it with ZeroMQ's ZMQ_USE_FD), so an
address is never free between being chosen and being used, and two launches can never get the
same one:

- tcp, chosen by the launcher (``auto``: no ``--topology``, or ``--transport tcp``): every node
  binds port 0 on its host and the kernel hands out a free port;
- ipc, chosen by the launcher (``auto``): sockets in a fresh private directory (mode 0700, from
  ``tempfile.mkdtemp``, short enough for the 107-byte unix socket path limit), removed at the end;
- addresses given in a topology file are reserved as they are: one already in use is a one-line
  error before anything starts (an ipc socket file nobody listens on is stale and replaced).

The collector binds ``tcp://127.0.0.1:*`` itself (ZeroMQ picks a free port atomically).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import socket
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mcepl.topology import NodeSpec, Topology

# a unix socket path holds at most 107 bytes (108 with the NUL, Linux sun_path)
IPC_MAX_PATH = 107
IPC_PREFIX = "mcepl-"
_BACKLOG = 128


class PortError(RuntimeError):
    """An address cannot be reserved (one line naming the node and the address)."""


def _split_tcp(addr: str) -> tuple[str, int]:
    host, _, port = addr[len("tcp://"):].rpartition(":")
    return host, int(port)


def _host_for_bind(host: str) -> str:
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return "" if host == "*" else host


def _tcp_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0: the kernel picks a free one."""
    infos = socket.getaddrinfo(_host_for_bind(host) or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    family, stype, proto, _, addr = infos[0]
    s = socket.socket(family, stype, proto)
    try:
        # what libzmq itself sets: a port held by TIME_WAIT connections of an earlier run is
        # free to bind again (two listeners on one port are still refused)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(addr)
        s.listen(_BACKLOG)
    except BaseException:
        s.close()
        raise
    return s


def _stale(path: str) -> bool:
    """True if `path` is a unix socket file nobody listens on (left by a killed run)."""
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return False
    except OSError:
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        probe.close()
    return False


def _ipc_listener(path: str) -> socket.socket:
    if _stale(path):
        os.unlink(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(path)
        s.listen(_BACKLOG)
    except BaseException:
        s.close()
        raise
    return s


def private_ipc_dir() -> Path:
    """A fresh directory (0700) for one run's unix sockets, with a path short enough that
    ``node-<i>.sock`` fits the socket limit for any node count ($TMPDIR, else /tmp)."""
    for base in (tempfile.gettempdir(), "/tmp"):
        if len(os.path.join(base, IPC_PREFIX + "x" * 8, "node-999999.sock")) <= IPC_MAX_PATH:
            try:
                return Path(tempfile.mkdtemp(prefix=IPC_PREFIX, dir=base))
            except OSError:
                continue
    raise PortError(f"no directory for unix sockets: {tempfile.gettempdir()} is too long for "
                    f"the {IPC_MAX_PATH}-byte socket path limit and /tmp is not writable; set "
                    "TMPDIR to a short directory")


@dataclass
class Reservation:
    """The topology with its final addresses and, per node, the listening socket its process
    adopts. `release()` closes what is still open and removes the files it made."""

    topology: Topology
    listeners: dict[int, socket.socket] = field(default_factory=dict)
    ipc_dir: Path | None = None
    sock_files: list[str] = field(default_factory=list)

    def fd(self, node_id: int) -> int | None:
        s = self.listeners.get(node_id)
        return s.fileno() if s is not None else None

    def handed_over(self, node_id: int) -> None:
        """The node process holds its own copy of the socket now: close ours."""
        s = self.listeners.pop(node_id, None)
        if s is not None:
            s.close()

    def release(self) -> None:
        for s in self.listeners.values():
            s.close()
        self.listeners.clear()
        for path in self.sock_files:  # ZeroMQ does not unlink a socket it was handed
            try:
                os.unlink(path)
            except OSError:
                pass
        self.sock_files.clear()
        if self.ipc_dir is not None:
            shutil.rmtree(self.ipc_dir, ignore_errors=True)
            self.ipc_dir = None

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def reserve(topo: Topology, auto: bool) -> Reservation:
    """Bind and listen on every node's address (see the module docstring); PortError when one
    is in use or cannot be bound. `auto`: the launcher chooses the ports (tcp) or the
    directory (ipc) itself."""
    res = Reservation(topo)
    nodes = []
    try:
        if auto and any(n.address.startswith("ipc://") for n in topo.nodes):
            res.ipc_dir = private_ipc_dir()
        for n in topo.nodes:
            nodes.append(_reserve_node(res, n, auto))
        res.topology = dataclasses.replace(topo, nodes=nodes).validate("<reserved addresses>")
    except BaseException:
        res.release()
        raise
    return res


def _reserve_node(res: Reservation, n: NodeSpec, auto: bool) -> NodeSpec:
    where = f"node {n.id}"
    if n.address.startswith("ipc://"):
        path = (str(res.ipc_dir / f"node-{n.id}.sock") if res.ipc_dir is not None
                else n.bind_address[len("ipc://"):])
        if len(path.encode()) > IPC_MAX_PATH:
            raise PortError(f"{where}: ipc path {path} is longer than the {IPC_MAX_PATH}-byte "
                            "unix socket limit")
        try:
            res.listeners[n.id] = _ipc_listener(path)
        except OSError as exc:
            why = ("in use by another process (another run?)" if exc.errno == errno.EADDRINUSE
                   else exc.strerror or str(exc))
            raise PortError(f"{where}: cannot bind ipc://{path}: {why}") from None
        res.sock_files.append(path)
        if res.ipc_dir is None:
            return n
        return dataclasses.replace(n, address=f"ipc://{path}", bind=None)
    host, port = _split_tcp(n.bind_address)
    try:
        s = _tcp_listener(host, 0 if auto else port)
    except (OSError, UnicodeError) as exc:
        errno_ = getattr(exc, "errno", None)
        why = (f"port {port} is in use (another run? `--transport tcp` lets the launcher pick "
               "free ports)" if errno_ == errno.EADDRINUSE else getattr(exc, "strerror", None)
               or str(exc))
        raise PortError(f"{where}: cannot bind {n.bind_address}: {why}") from None
    res.listeners[n.id] = s
    if not auto:
        return n
    got = s.getsockname()[1]
    adv_host, _ = _split_tcp(n.address)
    bind = f"tcp://{host}:{got}" if n.bind is not None else None
    return dataclasses.replace(n, address=f"tcp://{adv_host}:{got}", bind=bind)


