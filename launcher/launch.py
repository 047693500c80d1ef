"""`mcepl launch`: start one node process per topology entry on this machine and gather metrics.

Claims the run directory (run.json, config.toml, topology.json, metrics.jsonl, summary.json,
plots, logs/), reserves every node's address before any node starts (launcher/ports.py), makes
fresh CURVE keys for the run unless told `secure=False`, shows progress, stops every child on
Ctrl-C, SIGTERM or SIGHUP (what was collected is summarised and kept, status "interrupted") or
as soon as one fails, and exits non-zero with that node's error. Nodes are given the launcher's
pid and stop by themselves when it is gone (node/lifecycle.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mcepl.config import Config
from mcepl.launcher import forkserver, memory
from mcepl.launcher.collector import Collector, CollectorKeys, Observer
from mcepl.launcher.forkserver import ForkServer, ForkServerError
from mcepl.launcher.ports import PortError, Reservation, reserve
from mcepl.launcher.progress import Progress
from mcepl.launcher.report import format_summary, write_report
from mcepl.launcher.rundir import RunDir, RunDirError
from mcepl.node.data import DatasetError, Shard
from mcepl.node.factory import build_shared_model, default_run_id, load_data, shard_of
from mcepl.node.lifecycle import Stopped, ignore_signals, stop_on_signals
from mcepl.node.threads import LOCAL_NODES_ENV, resolve_threads
from mcepl.topology import Topology, TopologyError
from mcepl.topology.keys import COLLECTOR, generate_keys, key_paths, load_secret_key
from mcepl.userload import UserCodeError

if TYPE_CHECKING:
    from torch import nn


class LaunchError(RuntimeError):
    """A node (or the launcher itself) failed; the message says which and why."""


class LaunchInterrupted(LaunchError):
    """The launch was stopped by Ctrl-C, SIGTERM or SIGHUP; what was collected is kept."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


@dataclass
class LaunchResult:
    run_dir: Path
    summary: dict
    wall_s: float


def node_command(i: int, run_dir: Path, collector: str, run_id: str,
                 key: Path | None = None, listen_fd: int | None = None,
                 mask_snapshots: str = "eval", data_digest: str | None = None) -> list[str]:
    rd = RunDir(Path(run_dir))
    masks = ([] if mask_snapshots == "off"
             else ["--masks-dir", str(rd.masks), "--mask-snapshots", mask_snapshots])
    return [sys.executable, "-m", "mcepl.node.main", "--topology", str(rd.topology),
            "--config", str(rd.config), "--id", str(i), "--collector", collector,
            "--run-id", run_id, "--checkpoint-dir", str(rd.checkpoints), *masks,
            "--parent", str(os.getpid()),
            *(["--key", str(key)] if key is not None else ["--insecure"]),
            *(["--listen-fd", str(listen_fd)] if listen_fd is not None else []),
            *(["--data-digest", data_digest] if data_digest is not None else [])]


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if "error:" in ln]
    return (errors or lines or [""])[-1]


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_description(i: int, code: int) -> str:
    """"node 2 died (signal 9, SIGKILL)" or "node 2 failed (exit 1)"."""
    if code < 0:
        return f"node {i} died (signal {-code}, {_signal_name(-code)})"
    return f"node {i} failed (exit {code})"


def _stop(procs: list[subprocess.Popen | forkserver.ForkedProcess], grace_s: float = 5.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _fork_server(cfg: Config, quiet: bool, run_dir: Path) -> ForkServer | None:
    """The fork server that starts this run's nodes (launcher/forkserver.py), or None to spawn
    them (GPU devices, not Linux, MCEPL_NODE_START=spawn, or the server failed to start)."""
    try:
        if not forkserver.wanted(cfg.run.device):
            return None
    except ValueError as exc:
        raise LaunchError(str(exc)) from None
    try:
        return ForkServer(label=str(run_dir))
    except ForkServerError as exc:
        forkserver.release()
        if not quiet:
            print(f"warning: {exc}; starting each node as its own interpreter instead",
                  file=sys.stderr)
        return None


def preflight(cfg: Config, topo: Topology) -> str | None:
    return _preflight(cfg, topo)[0]


def _preflight(cfg: Config, topo: Topology) -> tuple[str | None, Shard, nn.Module]:
    """Load the data set, cut node 0's shard and build the shared model once, before starting
    N nodes: a missing data file is one clear error instead of N failing processes racing to
    download it, and the user's own model or data set (import paths) is imported and checked
    here, raising `UserCodeError` (exit 2) before any node process exists.

    Returns the user data set's digest (None for a built-in one), which every node is given
    (``--data-digest``) and checks its own loader's arrays against; `_preflight` also node 0's
    shard and the shared network (the memory estimate's figures)."""
    try:
        ds = load_data(cfg)
        shard = shard_of(ds, cfg, topo, 0)
        model = build_shared_model(cfg, shard)
    except UserCodeError:
        raise
    except (DatasetError, ValueError, OSError) as exc:
        raise LaunchError(" ".join(str(exc).split())) from None
    return ds.digest, shard, model.module


def check_memory(cfg: Config, topo: Topology, shard: Shard, module: nn.Module | None = None,
                 *, force: bool = False, quiet: bool = False) -> None:
    """Refuse (LaunchError, one line) when the nodes' estimated memory exceeds what is free,
    unless `force`; see launcher/memory.py."""
    try:
        forked = forkserver.wanted(cfg.run.device)
    except ValueError as exc:
        raise LaunchError(str(exc)) from None
    est = memory.estimate(cfg, topo, shard, forked=forked, module=module)
    try:
        refusal = memory.check(est)
    except ValueError as exc:  # a bad MCEPL_MEMORY_AVAILABLE
        raise LaunchError(str(exc)) from None
    if refusal is not None and not force:
        raise LaunchError(refusal)
    if refusal is not None and not quiet:
        print(f"warning: {refusal.replace('; --force starts them anyway', '')}; starting "
              "them (--force)", file=sys.stderr)


def launch(cfg: Config, topo: Topology, run_dir: Path | RunDir, *, quiet: bool = False,
           run_id: str | None = None, secure: bool = True, auto_ports: bool = False,
           observer: Observer | None = None, mask_snapshots: str = "eval",
           force: bool = False) -> LaunchResult:
    """Run the whole network locally; returns the summary, raises LaunchError on a node failure
    (LaunchInterrupted on Ctrl-C, SIGTERM or SIGHUP, after writing the summary), and
    UserCodeError before any node starts (the run directory given back) when the user's model or
    data set named in the config does not import or fit.

    ``secure`` (the default): a fresh CURVE key pair per node and one for the collector in
    ``run_dir/keys`` (secret files 0600), public keys in the run's topology.json, each node given
    its secret key (``--key``); False runs plaintext (``--insecure``). ``auto_ports``: the
    launcher picks free ports (tcp) or a private socket directory (ipc) itself; otherwise the
    topology's addresses are reserved as they are. ``run_dir`` may be a RunDir already claimed.
    ``observer`` (e.g. the dashboard) gets what the collector gets, and ("failed", i,
    {"reason"}) when node i's process ends with an error. ``mask_snapshots``: when mask
    methods' nodes write their masks into ``run_dir/masks`` ("eval", "final" or "off"). Before
    anything starts the nodes' memory is estimated (launcher/memory.py): more than is free is
    refused unless ``force``."""
    if topo.secure and not secure:
        raise LaunchError("--insecure, but the topology has CURVE public keys: remove them, or "
                          "launch securely (fresh keys are made for the run)")
    try:
        rd = RunDir.create(run_dir, cfg, logs=True)
    except RunDirError as exc:
        raise LaunchError(str(exc)) from None
    try:
        reservation = reserve(topo, auto_ports)
    except PortError as exc:
        rd.abandon()  # nothing ran: the same --out can be used again
        raise LaunchError(str(exc)) from None
    with reservation:
        return _launch(cfg, reservation.topology, rd, reservation, quiet=quiet, run_id=run_id,
                       secure=secure, observer=observer, mask_snapshots=mask_snapshots,
                       force=force)


def _prepare(cfg: Config, topo: Topology, rd: RunDir, run_id: str | None, secure: bool,
             observer: Observer | None, force: bool = False,
             quiet: bool = True) -> tuple[Topology, str, Collector, str | None]:
    """Keys, topology.json, the data and model check and the collector: everything before the
    first node starts (and the user data set's digest). On a failure here the run directory is
    given back (`RunDir.abandon`)."""
    try:
        try:
            if secure:
                topo = generate_keys(topo, rd.keys)
            rd.write_topology(topo)
        except (TopologyError, RunDirError) as exc:
            raise LaunchError(str(exc)) from None
        run_id = run_id or default_run_id(cfg, topo)
        data_digest, shard, module = _preflight(cfg, topo)
        check_memory(cfg, topo, shard, module, force=force, quiet=quiet)
        keys = (CollectorKeys.for_topology(topo, load_secret_key(key_paths(rd.keys,
                                                                           COLLECTOR)[1]))
                if secure else None)
        try:
            collector = Collector(rd.path, run_id, topo.num_nodes, observer=observer, keys=keys)
        except RuntimeError as exc:
            raise LaunchError(str(exc)) from None
    except BaseException:
        rd.abandon()
        raise
    return topo, run_id, collector, data_digest


def _launch(cfg: Config, topo: Topology, rd: RunDir, reservation: Reservation, *, quiet: bool,
            run_id: str | None, secure: bool, observer: Observer | None,
            mask_snapshots: str = "eval", force: bool = False) -> LaunchResult:
    run_dir = rd.path
    topo, run_id, collector, data_digest = _prepare(cfg, topo, rd, run_id, secure, observer,
                                                    force, quiet)
    threads = resolve_threads(cfg.run.threads_per_node, topo.num_nodes)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads),
           LOCAL_NODES_ENV: str(topo.num_nodes)}
    procs: list[subprocess.Popen | forkserver.ForkedProcess] = []
    logs = []
    t0 = time.perf_counter()
    progress = Progress(cfg.run.rounds, topo.num_nodes, enabled=not quiet)
    failure: str | None = None
    interrupted: int | None = None
    restore = stop_on_signals()
    server: ForkServer | None = None
    try:
        server = _fork_server(cfg, quiet, run_dir)
        for n in topo.nodes:
            log = open(rd.node_log(n.id), "w")  # noqa: SIM115
            logs.append(log)
            key = key_paths(rd.keys, n.id)[1] if secure else None
            fd = reservation.fd(n.id)
            if server is not None:
                argv = node_command(n.id, run_dir, collector.address, run_id, key,
                                    mask_snapshots=mask_snapshots, data_digest=data_digest)[3:]
                procs.append(server.start(argv, env, log.fileno(), fd,
                                          f"{forkserver.NODE_NAME} {n.id}"))
            else:
                procs.append(subprocess.Popen(node_command(n.id, run_dir, collector.address,
                                                           run_id, key, fd, mask_snapshots,
                                                           data_digest),
                                              stdout=log, stderr=subprocess.STDOUT, env=env,
                                              start_new_session=True,
                                              pass_fds=(fd,) if fd is not None else ()))
            reservation.handed_over(n.id)
        if server is not None:
            server.close()
            server = None
        with progress:
            while True:
                collector.poll(200)
                progress.update(collector.state)
                failed = collector.state.failures()
                codes = [p.poll() for p in procs]
                bad = [i for i, c in enumerate(codes) if c not in (None, 0)]
                if failed or bad:
                    i = min(failed) if failed else bad[0]
                    code = codes[i]
                    if code is not None and code < 0:  # killed: its log has no error line
                        failure = f"{exit_description(i, code)}  [log: {rd.node_log(i)}]"
                    else:
                        why = failed.get(i) or _last_line(rd.node_log(i))
                        failure = (f"node {i} failed" + (f" (exit {code})" if code else "")
                                   + f": {why}  [log: {rd.node_log(i)}]")
                    if observer is not None:
                        observer("failed", i, {"reason": failure})
                    break
                if all(c == 0 for c in codes):
                    deadline = time.monotonic() + 5.0
                    while not collector.state.all_done() and time.monotonic() < deadline:
                        collector.poll(200)
                    progress.update(collector.state)
                    break
    except Stopped as exc:
        interrupted = exc.signum
        failure = f"interrupted ({exc.name}); metrics received so far are in metrics.jsonl"
    except KeyboardInterrupt:
        interrupted = signal.SIGINT
        failure = "interrupted (Ctrl-C); metrics received so far are in metrics.jsonl"
    except ForkServerError as exc:
        failure = f"could not start node {len(procs)}: {exc}"
    finally:
        restore()
        unignore = ignore_signals()  # a second Ctrl-C or SIGTERM must not cut this short
        try:
            if server is not None:
                server.close()
            _stop(procs)
            if any(isinstance(p, forkserver.ForkedProcess) for p in procs):
                forkserver.release()
            collector.poll(100)
            collector.close()
            for log in logs:
                log.close()
        finally:
            unignore()
    wall = time.perf_counter() - t0
    if not rd.metrics.exists():  # removed under the run: nothing more can be written there
        raise LaunchError(f"the run directory {run_dir} (or its metrics.jsonl) was removed "
                          f"during the run; nothing more was written"
                          + (f" (first problem: {failure})" if failure else ""))
    extra = {"algorithm": cfg.algorithm.name, "wall_s": wall, "run_id": run_id,
             "model": cfg.model.name, "dataset": cfg.data.dataset, "status": failure or "ok",
             "secure": secure}
    summary = write_report(run_dir, extra) if rd.metrics.stat().st_size else {}
    if interrupted is not None:
        if not summary:  # nothing arrived yet: still say what happened
            (run_dir / "summary.json").write_text(json.dumps(extra, indent=2, sort_keys=True))
        raise LaunchInterrupted(failure or "interrupted", interrupted)
    if failure:
        raise LaunchError(failure)
    if not quiet:
        print(format_summary(summary))
        print(f"run directory: {run_dir}")
    return LaunchResult(run_dir, summary, wall)
