"""Runs that share a machine, and a launcher that is stopped or killed: real `mcepl launch`
processes, bounded in time, every node process accounted for by pid.

- three launches started at once with the default (tcp) topology all succeed, on disjoint ports;
- the default `--transport ipc` works with nothing prepared and leaves no socket directory;
- of two launches given the same --out at once exactly one runs, the other gets one line;
  two claims of the default directory in the same second get two directories;
- an address a topology file fixes that is in use is one line before any node starts;
- SIGTERM and SIGHUP to the launcher stop every node and keep what was collected (summary.json,
  status "interrupted"); a SIGKILLed launcher's nodes stop by themselves within seconds;
- a node killed with SIGKILL is reported as "node 2 died (signal 9, SIGKILL)" with its log.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from mcepl.config import dump_toml
from mcepl.launcher.rundir import RunDir, RunDirError, default_run_dir
from mcepl.topology import generate, load_topology, save_topology

MCEPL = [sys.executable, "-m", "mcepl.launcher.cli"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def write_cfg(tmp_path: Path, tiny_cfg, **run) -> Path:
    path = tmp_path / "cfg.toml"
    path.write_text(dump_toml(tiny_cfg(run={"rounds": 1, "eval_every": 1, **run})))
    return path


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([*MCEPL, *args], cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def children(pid: int) -> list[int]:
    """Pids whose parent is `pid` (from /proc), the launcher's fork server left out."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            if ("forkserver" in (d / "cmdline").read_text()
                    and not (d / "comm").read_text().startswith("mcepl-node")):
                continue
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            out.append(int(d.name))
    return out


def running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a zombie no longer runs anything)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def wait_until(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s: {what}")
        time.sleep(0.05)


def records(run_dir: Path) -> list[dict]:
    try:
        text = (run_dir / "metrics.jsonl").read_text()
    except OSError:
        return []
    return [json.loads(ln) for ln in text.splitlines() if ln.strip()]


def node_pids(launcher: subprocess.Popen, n: int) -> list[int]:
    wait_until(lambda: len(children(launcher.pid)) >= n or launcher.poll() is not None, 120,
               "node processes")
    pids = children(launcher.pid)
    assert len(pids) == n, pids
    return pids


# ---- runs that share a machine ------------------------------------------------------------------
@pytest.mark.slow
def test_three_default_launches_at_once(tmp_path: Path, tiny_cfg) -> None:
    cfg = write_cfg(tmp_path, tiny_cfg)
    procs = [start(["launch", "--config", str(cfg), "--nodes", "2", "--quiet", "--out",
                    str(tmp_path / f"run{k}")], tmp_path) for k in range(3)]
    outs = [p.communicate(timeout=400) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1] for o in outs]
    ports = []
    for k in range(3):
        topo = load_topology(tmp_path / f"run{k}" / "topology.json")
        ports += [int(n.address.rsplit(":", 1)[1]) for n in topo.nodes]
        assert topo.secure  # secure by default
        assert json.loads((tmp_path / f"run{k}" / "summary.json").read_text())["status"] == "ok"
    assert len(set(ports)) == 6, ports


@pytest.mark.slow
def test_default_ipc_transport_works_and_cleans_up(tmp_path: Path, tiny_cfg) -> None:
    cfg = write_cfg(tmp_path, tiny_cfg)
    p = start(["launch", "--config", str(cfg), "--nodes", "2", "--transport", "ipc", "--quiet",
               "--out", str(tmp_path / "run")], tmp_path)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    topo = load_topology(tmp_path / "run" / "topology.json")
    paths = [Path(n.address[len("ipc://"):]) for n in topo.nodes]
    assert all(len(str(q).encode()) <= 107 for q in paths)
    assert len({q.parent for q in paths}) == 1
    assert not paths[0].parent.exists(), "the private socket directory was left behind"


def test_two_launches_into_one_directory_one_proceeds(tmp_path: Path, tiny_cfg) -> None:
    cfg = write_cfg(tmp_path, tiny_cfg)
    out = tmp_path / "same"
    procs = [start(["launch", "--inprocess", "--config", str(cfg), "--nodes", "2", "--quiet",
                    "--out", str(out)], tmp_path) for _ in range(2)]
    results = [(p.wait(300), p.stderr.read().strip()) for p in procs]  # type: ignore[union-attr]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], results
    err = next(e for c, e in results if c == 2)
    assert err.count("\n") == 0 and "already holds a run" in err and str(out) in err
    assert len(records(out)) == 2 * 2  # the one run, whole


def test_default_directory_claims_in_the_same_second_differ(tmp_path: Path) -> None:
    now = datetime(2030, 1, 2, 3, 4, 5)
    base = tmp_path / default_run_dir("mcepl", now)
    got: list[Path] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        barrier.wait()
        got.append(RunDir.claim(base, unique=True).path)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(got) == 8 and len(set(got)) == 8
    assert base in got and base.with_name(base.name + "-2") in got
    with pytest.raises(RunDirError, match="already holds a run"):
        RunDir.claim(base)  # an explicit --out is never renamed


@pytest.mark.parametrize("kind", ["file", "under-a-file", "proc", "read-only"])
def test_unusable_out_is_one_line(tmp_path: Path, tiny_cfg, kind: str, capsys) -> None:
    from mcepl.launcher.cli import main

    cfg = write_cfg(tmp_path, tiny_cfg)
    (tmp_path / "afile").write_text("x")
    out = {"file": tmp_path / "afile", "under-a-file": tmp_path / "afile" / "run",
           "proc": Path("/proc/mcepl-run"), "read-only": tmp_path / "ro" / "run"}[kind]
    if kind == "read-only":
        if os.geteuid() != 0:
            pytest.skip("mounting a read-only file system needs root")
        (tmp_path / "ro").mkdir()
        mnt = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs",
                              str(tmp_path / "ro")], capture_output=True, text=True)
        if mnt.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {mnt.stderr.strip()}")
    try:
        code = main(["launch", "--inprocess", "--config", str(cfg), "--nodes", "2", "--out",
                     str(out)])
    finally:
        if kind == "read-only":
            subprocess.run(["umount", str(tmp_path / "ro")], check=False)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "Traceback" not in err, err
    assert str(out) in err and "choose another --out" in err, err


def test_fixed_address_in_use_is_one_line(tmp_path: Path, tiny_cfg) -> None:
    cfg = write_cfg(tmp_path, tiny_cfg)
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        topo = generate("ring", 2, base_port=port)  # node 0 on the held port
        save_topology(topo, tmp_path / "t.json")
        p = start(["launch", "--config", str(cfg), "--topology", str(tmp_path / "t.json"),
                   "--quiet", "--out", str(tmp_path / "run")], tmp_path)
        out, err = p.communicate(timeout=120)
    finally:
        holder.close()
    assert p.returncode == 1, err
    err = err.strip()
    assert err.count("\n") == 0 and f"node 0: cannot bind tcp://127.0.0.1:{port}" in err, err
    assert "in use" in err
    assert not (tmp_path / "run").exists()  # nothing ran: the directory was given back


# ---- signals ------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_everything_and_keep_the_results(tmp_path: Path, tiny_cfg,
                                                                 sig: int) -> None:
    cfg = write_cfg(tmp_path, tiny_cfg, rounds=500, eval_every=100)
    run = tmp_path / "run"
    launcher = start(["launch", "--config", str(cfg), "--nodes", "3", "--quiet", "--out",
                      str(run)], tmp_path)
    try:
        nodes = node_pids(launcher, 3)
        wait_until(lambda: len(records(run)) >= 6, 180, "two rounds of records")
        t0 = time.monotonic()
        launcher.send_signal(sig)
        _, err = launcher.communicate(timeout=60)
        stopped_in = time.monotonic() - t0
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 128 + sig, err
    assert f"interrupted ({signal.Signals(sig).name})" in err
    wait_until(lambda: not any(running(p) for p in nodes), 10, "node processes to end")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"].startswith(f"interrupted ({signal.Signals(sig).name})")
    assert summary["nodes"] == 3 and summary["rounds"] >= 1
    assert len(records(run)) >= 6
    assert stopped_in < 30


@pytest.mark.slow
def test_nodes_of_a_sigkilled_launcher_stop_by_themselves(tmp_path: Path, tiny_cfg) -> None:
    cfg = write_cfg(tmp_path, tiny_cfg, rounds=500, eval_every=100)
    run = tmp_path / "run"
    launcher = start(["launch", "--config", str(cfg), "--nodes", "3", "--quiet", "--out",
                      str(run)], tmp_path)
    try:
        nodes = node_pids(launcher, 3)
        wait_until(lambda: len(records(run)) >= 3, 180, "a round of records")
        launcher.kill()
        launcher.wait(30)
        t0 = time.monotonic()
        try:
            wait_until(lambda: not any(running(p) for p in nodes), 10,
                       "the nodes of a killed launcher to stop")
        finally:
            for p in nodes:  # never leave them behind, even when the test fails
                if running(p):
                    os.kill(p, signal.SIGKILL)
        gone_in = time.monotonic() - t0
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert gone_in < 10
    for i in range(3):
        log = (run / "logs" / f"node-{i}.log").read_text()
        assert "interrupted (SIGTERM)" in log or "launcher" in log, log[-500:]


@pytest.mark.slow
def test_a_killed_node_is_named_with_its_signal_and_log(tmp_path: Path, tiny_cfg) -> None:
    cfg = write_cfg(tmp_path, tiny_cfg, rounds=500, eval_every=100)
    run = tmp_path / "run"
    launcher = start(["launch", "--config", str(cfg), "--nodes", "3", "--quiet", "--out",
                      str(run)], tmp_path)
    try:
        nodes = node_pids(launcher, 3)
        wait_until(lambda: len(records(run)) >= 3, 180, "a round of records")
        victim = next(p for p in nodes  # spawned: its arguments; forked: its name
                      if "--id\x002\x00" in Path(f"/proc/{p}/cmdline").read_text()
                      or Path(f"/proc/{p}/comm").read_text().strip() == "mcepl-node 2")
        os.kill(victim, signal.SIGKILL)
        _, err = launcher.communicate(timeout=60)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 1
    line = err.strip()
    assert line.count("\n") == 0, line
    assert f"node 2 died (signal 9, SIGKILL)  [log: {run / 'logs' / 'node-2.log'}]" in line
    assert not any(running(p) for p in nodes)


def test_reserved_ipc_directory_is_private_and_removed(tmp_path: Path) -> None:
    import stat as statmod

    from mcepl.launcher.ports import reserve

    topo = generate("ring", 4, transport="ipc")  # placeholders in the shared default dir
    with reserve(topo, auto=True) as res:
        d = res.ipc_dir
        assert d is not None and statmod.S_IMODE(d.stat().st_mode) == 0o700
        paths = [n.address[len("ipc://"):] for n in res.topology.nodes]
        assert all(Path(q).parent == d and Path(q).is_socket() for q in paths)
        assert all(res.fd(i) is not None for i in range(4))
    assert not d.exists()
