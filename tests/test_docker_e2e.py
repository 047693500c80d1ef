"""`docker compose up` on a real Docker engine: the image builds, a network made by
`mcepl topology compose` runs to the end with CURVE, and every per-node number equals a loopback
`mcepl launch` of the same config and seed; bad input ends every container promptly.

Needs root and a Docker engine: `docker info` must answer, or `dockerd` must be installed (it is
then started in the background and left running, as a system service would be). The image is
built by docker/build-image.sh: from the stand-in base `mcepl-base:bookworm` (made once by
docker/stand-in-base.sh with debootstrap, and kept: Docker Hub is not needed) or from
`$MCEPL_DOCKER_BASE`, with this machine's pip CA bundle and local torch wheel as build extras
(docker/host-extras.sh) in a temporary build context. Image layers stay cached between runs;
the test's own image tag is removed at the end.

Every compose project is named `mcepl-e2e-<pid>-<random>`, so copies of this test running at
once never share a container, volume or network. Each project is torn down (`down -v`) in the
fixture's teardown, even when the test fails, and the teardown asserts that no container, volume
or network of it is left; projects left by a killed earlier run (dead pid) are removed first.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcepl.config import dump_toml
from mcepl.protocol.accounting import parse_peer_bytes
from mcepl.topology import generate, save_topology, with_transport

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
BASE_IMAGE = os.environ.get("MCEPL_DOCKER_BASE", "mcepl-base:bookworm")
PROJECT_PREFIX = "mcepl-e2e-"
NUM_NODES = 4
ROUNDS = 10
UP_TIMEOUT_S = 600
#: Per-record fields that measure time, not the computation.
TIMINGS = {"comm_s", "compute_s", "decode_s", "encode_s", "eval_s", "t_end"}
#: Fields that depend on when messages arrive, not on what is computed or sent: data bytes that
#: arrived during the round (a neighbour's early message for the next round included), status
#: messages sent while a phase waited over 1 s, and the metrics message whose size follows them.
#: peer_bytes holds arrivals too: its sent and framing columns are compared, not received.
ARRIVAL_DEPENDENT = {"bytes_arrived_data", "bytes_sent_status", "bytes_sent_metrics",
                     "peer_bytes"}


def _run(cmd: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _mcepl() -> list[str]:
    """The installed console script, as a user runs it."""
    exe = Path(sys.executable).parent / "mcepl"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("mcepl")
    if found is None:
        pytest.fail("the `mcepl` console script is not installed next to this Python")
    return [found]


def _engine_reason() -> str | None:
    """None when a Docker engine answers (starting dockerd if needed), else why not."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root (starts dockerd, builds images, runs containers)"
    if shutil.which("docker") is None:
        return "no docker CLI (apt-get install docker.io)"
    if _run(["docker", "info"], timeout=60).returncode == 0:
        return None
    if shutil.which("dockerd") is None:
        return "no Docker engine answers and dockerd is not installed (apt-get install docker.io)"
    log = Path("/tmp/mcepl-dockerd.log")
    with open(log, "ab") as out:
        subprocess.Popen(["dockerd"], stdout=out, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if _run(["docker", "info"], timeout=60).returncode == 0:
            return None
        time.sleep(1)
    tail = log.read_text(errors="replace").splitlines()[-5:]
    return f"dockerd did not start within 90 s: {' | '.join(tail)}"


def _compose_cmd() -> list[str] | None:
    if _run(["docker", "compose", "version"]).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose") and _run(["docker-compose", "version"]).returncode == 0:
        return ["docker-compose"]
    return None


@pytest.fixture(scope="session")
def compose_cmd(request: pytest.FixtureRequest) -> list[str]:
    from conftest import wait_docker_prep  # the background build conftest.py started

    prep = wait_docker_prep(request.config)
    if prep is not None:
        print(f"\n{prep}")
    reason = _engine_reason()
    if reason is not None:
        pytest.skip(reason)
    cmd = _compose_cmd()
    if cmd is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed "
                    "(apt-get install docker-compose)")
    _remove_stale_projects(cmd)
    return cmd


@pytest.fixture(scope="session")
def mcepl_image(compose_cmd: list[str]) -> Iterator[str]:
    """The project image, built with the repository's Dockerfile; its tag is removed at the end
    (the layers stay cached for the next run)."""
    tag = f"mcepl-e2e:{os.getpid()}-{secrets.token_hex(3)}"
    # the stand-in base (made once), this machine's extras, a temporary context: as a user here
    proc = _run(["bash", str(REPO / "docker" / "build-image.sh"), tag], timeout=1800,
                env={**os.environ, "MCEPL_DOCKER_BASE": BASE_IMAGE})
    assert proc.returncode == 0, \
        f"image build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    try:
        yield tag
    finally:
        _run(["docker", "rmi", "--no-prune", tag], timeout=120)


# ---- compose projects: unique names, always torn down ----------------------------------------

def _project_resources(project: str) -> dict[str, list[str]]:
    label = f"label=com.docker.compose.project={project}"
    out = {}
    for kind, cmd in (("containers", ["docker", "ps", "-aq", "--filter", label]),
                      ("volumes", ["docker", "volume", "ls", "-q", "--filter", label]),
                      ("networks", ["docker", "network", "ls", "-q", "--filter", label])):
        out[kind] = _run(cmd).stdout.split()
    return out


def _remove_project(compose: list[str], project: str, files: list[Path] | None = None) -> None:
    if files:
        args = [a for f in files for a in ("-f", str(f))]
        _run([*compose, "-p", project, *args, "down", "-v", "--remove-orphans", "-t", "5"],
             timeout=300)
    # Whatever `down` could not see (no compose file, or a half-created project): by label.
    res = _project_resources(project)
    if res["containers"]:
        _run(["docker", "rm", "-f", "-v", *res["containers"]], timeout=300)
    if res["volumes"]:
        _run(["docker", "volume", "rm", "-f", *res["volumes"]], timeout=120)
    if res["networks"]:
        _run(["docker", "network", "rm", *res["networks"]], timeout=120)


def _remove_stale_projects(compose: list[str]) -> None:
    """Projects of earlier runs of this test whose process is gone (killed before teardown)."""
    names = set()
    for cmd in (["docker", "ps", "-a", "--format", '{{.Label "com.docker.compose.project"}}'],
                ["docker", "volume", "ls", "--format", '{{.Label "com.docker.compose.project"}}'],
                ["docker", "network", "ls", "--format",
                 '{{.Label "com.docker.compose.project"}}']):
        names.update(_run(cmd).stdout.split())
    for name in names:
        m = re.fullmatch(re.escape(PROJECT_PREFIX) + r"(\d+)-[0-9a-f]+", name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            _remove_project(compose, name)


class Project:
    def __init__(self, compose: list[str], file: Path):
        self.compose = compose
        self.file = file
        self.name = f"{PROJECT_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"

    def up(self, env: dict[str, str], timeout: float = UP_TIMEOUT_S
           ) -> tuple[subprocess.CompletedProcess, float]:
        t0 = time.monotonic()
        try:
            proc = _run([*self.compose, "-p", self.name, "-f", str(self.file), "up",
                         "--no-color"], timeout=timeout, cwd=self.file.parent,
                        env={**os.environ, **env})
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"`compose up` did not end within {timeout:.0f} s\n{self.logs()}\n"
                        f"{(e.stdout or b'')[-3000:]!r}")
        return proc, time.monotonic() - t0

    def containers(self) -> dict[str, dict]:
        """service name -> `docker inspect` of its container."""
        ids = _run(["docker", "ps", "-aq", "--filter",
                    f"label=com.docker.compose.project={self.name}"]).stdout.split()
        if not ids:
            return {}
        info = json.loads(_run(["docker", "inspect", *ids]).stdout)
        return {c["Config"]["Labels"]["com.docker.compose.service"]: c for c in info}

    def log(self, service: str) -> str:
        c = self.containers()[service]
        proc = _run(["docker", "logs", c["Id"]])
        return proc.stdout + proc.stderr

    def logs(self) -> str:
        return "\n".join(f"--- {s}: {c['State']['Status']} exit {c['State']['ExitCode']}\n"
                         + "\n".join(self.log(s).splitlines()[-8:])
                         for s, c in sorted(self.containers().items()))


@pytest.fixture
def project(compose_cmd: list[str]) -> Iterator:
    """Factory of compose projects; every one is torn down afterwards, failing test or not."""
    made: list[Project] = []

    def make(file: Path) -> Project:
        p = Project(compose_cmd, file)
        made.append(p)
        return p

    try:
        yield make
    finally:
        left = {}
        for p in made:
            _remove_project(compose_cmd, p.name, [p.file])
            res = {k: v for k, v in _project_resources(p.name).items() if v}
            if res:
                left[p.name] = res
        assert not left, f"compose resources left behind: {left}"


# ---- the runs -----------------------------------------------------------------------------------

def _free_base_port(n: int) -> int:
    for base in range(23000 + os.getpid() % 2000 * 10, 60000, 10):
        socks = []
        try:
            for k in range(n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + k))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports")


def _write_inputs(d: Path, cfg) -> tuple[Path, Path]:
    d.mkdir(parents=True, exist_ok=True)
    topo = generate("er", NUM_NODES, p=0.7, seed=1, retention=[0.5, 0.3, 0.2, 0.4])
    topo = with_transport(topo, "tcp", host="127.0.0.1", base_port=_free_base_port(NUM_NODES))
    save_topology(topo, d / "topology.json")
    (d / "config.toml").write_text(dump_toml(cfg))
    return d / "topology.json", d / "config.toml"


def _compose_files(d: Path, topo: Path, cfg: Path, image: str) -> Path:
    out = d / "docker-compose.yml"
    proc = _run([*_mcepl(), "topology", "compose", str(topo), "--config", str(cfg), "-o",
                 str(out), "--image", image, "--build", ""])
    assert proc.returncode == 0, proc.stderr
    (d / "results").mkdir()
    return out


def _records(run_dir: Path) -> dict[tuple[int, int], dict]:
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    out = {(r["round"], r["node"]): r for r in recs}
    assert len(out) == len(recs), "duplicate (round, node) records"
    return out


@pytest.fixture
def host_data(tiny_data_dir: Path, tmp_path: Path) -> Path:
    """The tiny data set where the image's user (uid 1000) can read it, as a data set installed
    on a host is (pytest's own temporary directories are private to root)."""
    d = tmp_path / "data"
    shutil.copytree(tiny_data_dir, d)
    d.chmod(0o755)
    for f in d.iterdir():
        f.chmod(0o644)
    return d


def _user_env(data: Path) -> dict[str, str]:
    return {"MCEPL_DATA": str(data), "MCEPL_UID": str(os.getuid()),
            "MCEPL_GID": str(os.getgid())}


def test_compose_up_equals_launch(project, mcepl_image: str, tmp_path: Path, tiny_cfg,
                                  host_data: Path) -> None:
    cfg = tiny_cfg(run={"rounds": ROUNDS, "eval_every": 1, "connect_timeout_s": 120.0,
                        "round_timeout_s": 120.0})
    topo, cfg_file = _write_inputs(tmp_path / "in", cfg)

    # Reference: the same files on loopback, node processes on this machine, CURVE on too.
    ref_dir = tmp_path / "loopback"
    proc = _run([*_mcepl(), "launch", "--topology", str(topo), "--config", str(cfg_file),
                 "--out", str(ref_dir), "--quiet", "--secure"], timeout=600)
    assert proc.returncode == 0, proc.stderr
    reference = _records(ref_dir)

    compose_file = _compose_files(tmp_path / "compose", topo, cfg_file, mcepl_image)
    assert "--key" in compose_file.read_text()  # CURVE on, as by default
    p = project(compose_file)
    up, wall = p.up(_user_env(host_data))
    print(f"compose up ({NUM_NODES} nodes, {ROUNDS} rounds, CURVE): {wall:.1f} s")
    states = {s: (c["State"]["Status"], c["State"]["ExitCode"])
              for s, c in p.containers().items()}
    assert up.returncode == 0, f"{up.stderr[-3000:]}\n{p.logs()}"
    assert states == {"keys": ("exited", 0), "collector": ("exited", 0),
                      **{f"node-{i}": ("exited", 0) for i in range(NUM_NODES)}}, p.logs()
    # every node really ran encrypted: it was given its key and the topology has public keys
    assert all("--key" in c["Args"] for s, c in p.containers().items() if s.startswith("node-"))

    run_dir = compose_file.parent / "results"
    for name in ("metrics.jsonl", "summary.json", "config.toml", "topology.json", "report.md",
                 "accuracy.png", "accuracy_vs_bytes.png", "collector.json"):
        assert (run_dir / name).stat().st_size > 0, name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["nodes"] == NUM_NODES
    assert summary["rounds"] == ROUNDS
    assert all(n.get("public_key") for n in
               json.loads((run_dir / "topology.json").read_text())["nodes"])
    records = _records(run_dir)
    assert set(records) == set(reference) == {(k, i) for k in range(ROUNDS + 1)
                                              for i in range(NUM_NODES)}
    assert all(r["bytes_sent"] > 0 for r in records.values())
    for key, ref in sorted(reference.items()):
        got = records[key]
        assert set(got) == set(ref), key
        for field in sorted(set(ref) - TIMINGS - ARRIVAL_DEPENDENT):
            assert got[field] == ref[field], (key, field, got[field], ref[field])
        sent = {k: (v[0], v[2]) for k, v in parse_peer_bytes(got["peer_bytes"]).items()}
        assert sent == {k: (v[0], v[2]) for k, v in parse_peer_bytes(ref["peer_bytes"]).items()}


def test_missing_data_set_ends_every_container_with_one_line(
        project, mcepl_image: str, tmp_path: Path, tiny_cfg) -> None:
    """MCEPL_DATA names an empty directory: each node says so in one line and exits, the
    collector reports them and exits, long before any network timeout (set to 600 s here)."""
    cfg = tiny_cfg(run={"rounds": ROUNDS, "connect_timeout_s": 600.0, "round_timeout_s": 600.0})
    topo, cfg_file = _write_inputs(tmp_path / "in", cfg)
    compose_file = _compose_files(tmp_path / "compose", topo, cfg_file, mcepl_image)
    empty = tmp_path / "no-data-here"
    empty.mkdir()
    p = project(compose_file)
    _, wall = p.up(_user_env(empty), timeout=300)
    assert wall < 240, f"took {wall:.0f} s: something waited for a timeout\n{p.logs()}"
    states = p.containers()
    for i in range(NUM_NODES):
        st = states[f"node-{i}"]["State"]
        lines = p.log(f"node-{i}").splitlines()
        assert st["Status"] == "exited" and st["ExitCode"] == 1, p.logs()
        assert lines == [f"node {i}: error: data set 'fashion-mnist' not found in /data, the "
                         f"mount of the host directory {empty}: set MCEPL_DATA to the host "
                         "directory that holds the data set files and run `docker compose up` "
                         "again"], lines
    col = states["collector"]["State"]
    assert col["Status"] == "exited" and col["ExitCode"] == 1, p.logs()
    col_log = p.log("collector")
    for i in range(NUM_NODES):
        assert f"node {i} failed: data set 'fashion-mnist' not found in /data" in col_log


def test_results_holding_a_run_are_refused_and_every_node_ends(
        project, mcepl_image: str, tmp_path: Path, tiny_cfg, host_data: Path) -> None:
    """The collector refuses ./results (one line) and exits; the nodes, finding no collector
    within run.connect_timeout_s (10 s here), each end with one line instead of training."""
    cfg = tiny_cfg(run={"rounds": ROUNDS, "connect_timeout_s": 10.0})
    topo, cfg_file = _write_inputs(tmp_path / "in", cfg)
    compose_file = _compose_files(tmp_path / "compose", topo, cfg_file, mcepl_image)
    previous = compose_file.parent / "results" / "metrics.jsonl"
    previous.write_text('{"round": 0, "node": 0, "test_acc": 0.5}\n')
    p = project(compose_file)
    _, wall = p.up(_user_env(host_data), timeout=300)
    assert wall < 200, f"took {wall:.0f} s\n{p.logs()}"
    states = p.containers()
    col_log = p.log("collector")
    assert col_log.splitlines() == [
        "error: /results already holds a run (metrics.jsonl); choose another --out"], col_log
    assert states["collector"]["State"]["ExitCode"] == 2
    for i in range(NUM_NODES):
        assert states[f"node-{i}"]["State"]["ExitCode"] == 1, p.logs()
        assert p.log(f"node-{i}").splitlines() == [
            f"node {i}: error: collector tcp://collector:5600 not reachable within 10 s "
            "(run.connect_timeout_s): is `mcepl collect` running there? It refuses to start when "
            "its --out directory already holds a run"], p.logs()
    assert previous.read_text() == '{"round": 0, "node": 0, "test_acc": 0.5}\n'  # untouched
