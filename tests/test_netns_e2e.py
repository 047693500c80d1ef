"""One node per "machine": each node and the collector in its own network namespace.

Every node gets its own namespace with its own IP address (10.231.<x>.0/24), a veth pair whose
other end sits on a bridge in a separate "switch" namespace, and is started alone with
`mcepl node` (through `ip netns exec`), one after the other, as on separate hosts; the collector
(`mcepl collect`) lives in another namespace. Everything runs secure, as a user would: keys made
once with `mcepl topology keys`, each node given only its own secret key, the collector its own.
The run directory must be complete and the per-node numbers equal those of a loopback
`launch()` of the same config, graph and run id.

Nothing touches the host's own network namespace: the addresses, the bridge and the veths exist
only inside the namespaces created here, and deleting those namespaces (always, in the fixture's
teardown, even when the test fails) removes all of them. Needs root and iproute2 (`ip netns`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcepl.config import dump_toml
from mcepl.launcher.cli import main as mcepl_main
from mcepl.launcher.launch import launch
from mcepl.topology import Topology, generate, load_topology, save_topology, with_transport
from mcepl.topology.keys import key_paths

pytestmark = pytest.mark.slow

NUM_NODES = 3
NODE_PORT = 5555
COLLECTOR_PORT = 5600
RUN_ID = "run-netns-e2e"
COMPARED = ("test_acc", "train_loss", "density", "bytes_sent", "bytes_received", "msgs_sent",
            "msgs_received")
RUN_TIMEOUT_S = 300.0


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


@dataclasses.dataclass
class NetnsLab:
    """Namespaces hosts[0..NUM_NODES-1] (nodes) and hosts[NUM_NODES] (collector) on one bridge."""

    prefix: str
    subnet: str  # "10.231.<x>"
    hosts: list[str]
    switch: str
    created: list[str] = dataclasses.field(default_factory=list)

    def addr(self, k: int) -> str:
        """IP of host namespace k (nodes 0..N-1: .11, .12, ...; the collector: .2)."""
        return f"{self.subnet}.2" if k == NUM_NODES else f"{self.subnet}.{11 + k}"

    def add_ns(self, name: str) -> None:
        _ip("netns", "add", name)
        self.created.append(name)

    def setup(self) -> None:
        self.add_ns(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for k, ns in enumerate(self.hosts):
            self.add_ns(ns)
            _ip("-n", self.switch, "link", "add", f"v{k}", "type", "veth",
                "peer", "name", "eth0", "netns", ns)
            _ip("-n", self.switch, "link", "set", f"v{k}", "master", "br0")
            _ip("-n", self.switch, "link", "set", f"v{k}", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{self.addr(k)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def teardown(self) -> list[str]:
        """Kill what still runs in our namespaces, delete them; return the ones left over."""
        for ns in reversed(self.created):
            pids = _ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ValueError, ProcessLookupError):
                    pass
            _ip("netns", "del", ns, check=False)
        listed = _ip("netns", "list", check=False).stdout
        return [ns for ns in self.created if any(line.split()[:1] == [ns]
                                                 for line in listed.splitlines())]


@pytest.fixture
def lab() -> Iterator[NetnsLab]:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces, veth pairs and a bridge")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2's `ip` command (apt-get install iproute2)")
    pid = os.getpid()
    prefix = f"mcepl-t{pid}"
    probe = _ip("netns", "add", f"{prefix}-probe", check=False)
    if probe.returncode != 0:
        pytest.skip(f"`ip netns add` is not allowed here: {probe.stderr.strip()}")
    _ip("netns", "del", f"{prefix}-probe", check=False)
    lab = NetnsLab(prefix=prefix, subnet=f"10.231.{pid % 250 + 1}",
                   hosts=[f"{prefix}-n{i}" for i in range(NUM_NODES)] + [f"{prefix}-col"],
                   switch=f"{prefix}-sw")
    try:
        lab.setup()
        yield lab
    finally:
        left = lab.teardown()
        assert not left, f"network namespaces left behind: {left}"


def read_records(run_dir: Path) -> dict[tuple[int, int], dict]:
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    out = {(r["round"], r["node"]): r for r in recs}
    assert len(out) == len(recs), "duplicate (round, node) records"
    return out


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _wait_for(pred, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


def test_one_node_per_namespace_equals_loopback(lab: NetnsLab, tmp_path: Path, tiny_cfg) -> None:
    cfg = tiny_cfg(run={"rounds": 3, "eval_every": 1, "connect_timeout_s": 60.0,
                        "round_timeout_s": 60.0})
    base = generate("er", NUM_NODES, p=0.7, seed=1, retention=[0.5, 0.3, 0.2])

    # Reference: the same config, graph and run id on loopback (only the addresses differ).
    loop = with_transport(base, "tcp", host="127.0.0.1")
    launch(cfg, loop, tmp_path / "loopback", quiet=True, run_id=RUN_ID, auto_ports=True)
    reference = read_records(tmp_path / "loopback")

    # Every node advertises its own namespace's IP. Node 0 binds that address, node 1 binds
    # 0.0.0.0 through "bind" in the topology, node 2 through `mcepl node --bind`.
    nodes = []
    for n in base.nodes:
        bind = f"tcp://0.0.0.0:{NODE_PORT}" if n.id == 1 else None
        nodes.append(dataclasses.replace(n, address=f"tcp://{lab.addr(n.id)}:{NODE_PORT}",
                                         bind=bind))
    topo = Topology(nodes=nodes, edges=list(base.edges), meta=base.meta).validate("<netns>")
    files = tmp_path / "files"
    files.mkdir()
    save_topology(topo, files / "topology.json")
    (files / "config.toml").write_text(dump_toml(cfg))
    keys = tmp_path / "keys"
    assert mcepl_main(["topology", "keys", str(files / "topology.json"), "-o", str(keys),
                       "--update-topology"]) == 0
    assert load_topology(files / "topology.json").secure
    run_dir, logs = tmp_path / "netns-run", tmp_path / "logs"
    logs.mkdir()
    collector_addr = f"tcp://{lab.addr(NUM_NODES)}:{COLLECTOR_PORT}"
    common = ["--topology", str(files / "topology.json"), "--config", str(files / "config.toml"),
              "--run-id", RUN_ID]
    # the namespaces share this machine's cores: say how many nodes do ("auto" threads), as
    # `mcepl launch` does for the loopback run
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           "MCEPL_LOCAL_NODES": str(NUM_NODES)}
    mcepl = [sys.executable, "-m", "mcepl.launcher.cli"]

    # The IPs live only inside the namespaces: the host namespace has none of them.
    assert f"{lab.subnet}." not in _ip("-o", "-4", "addr", "show").stdout

    procs: dict[str, subprocess.Popen] = {}
    handles = []

    def start(name: str, ns: str, argv: list[str]) -> None:
        log = open(logs / f"{name}.log", "w")  # noqa: SIM115 - closed in the finally below
        handles.append(log)
        procs[name] = subprocess.Popen(["ip", "netns", "exec", ns, *mcepl, *argv],
                                       stdout=log, stderr=subprocess.STDOUT, env=env)

    def report() -> str:
        return "\n".join(f"--- {name} (exit {p.poll()}):\n{_tail(logs / f'{name}.log')}"
                         for name, p in procs.items())

    try:
        start("collector", lab.hosts[NUM_NODES],
              ["collect", *common, "--bind", collector_addr, "--out", str(run_dir),
               "--timeout", str(RUN_TIMEOUT_S), "--key", str(key_paths(keys, "collector")[1])])
        _wait_for(lambda: "listening on" in (logs / "collector.log").read_text()
                  or procs["collector"].poll() is not None, 60, "the collector to listen")
        assert procs["collector"].poll() is None, report()
        # One by one, last node first, as an operator would on separate machines.
        for i in reversed(range(NUM_NODES)):
            extra = ["--bind", f"tcp://0.0.0.0:{NODE_PORT}"] if i == 2 else []
            start(f"node-{i}", lab.hosts[i],
                  ["node", *common, "--id", str(i), "--collector", collector_addr,
                   "--key", str(key_paths(keys, i)[1]), *extra])
            time.sleep(1.0)
        try:
            procs["collector"].wait(timeout=RUN_TIMEOUT_S + 30)
            for i in range(NUM_NODES):
                procs[f"node-{i}"].wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the network did not finish in time\n{report()}")
        codes = {name: p.returncode for name, p in procs.items()}
        assert all(c == 0 for c in codes.values()), f"{codes}\n{report()}"
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        for h in handles:
            h.close()

    # The run directory is complete ...
    for name in ("metrics.jsonl", "summary.json", "config.toml", "topology.json",
                 "accuracy.png", "accuracy_vs_bytes.png"):
        assert (run_dir / name).stat().st_size > 0, name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["run_id"] == RUN_ID
    assert summary["nodes"] == NUM_NODES and summary["rounds"] == 3
    records = read_records(run_dir)
    expected = {(k, i) for k in range(4) for i in range(NUM_NODES)}
    assert set(records) == set(reference) == expected
    # ... masks really crossed the bridge ...
    assert all(r["bytes_sent"] > 0 and r["bytes_received"] > 0 for r in records.values())
    # ... and every node's numbers equal the loopback run's.
    for k, ref in sorted(reference.items()):
        for field in COMPARED:
            if field in ref:
                assert records[k][field] == ref[field], (k, field, records[k][field], ref[field])
