"""The checked-in docker-compose.yml: regenerated from its deploy/ files, it is the same file;
20 node services and a collector with the right commands and addresses; docker-compose accepts it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mcepl.cli import main as mcepl_main
from mcepl.config import dump_toml, load_config
from mcepl.topology import generate, load_topology, save_topology
from mcepl.topology.compose import compose_dict, render_compose, to_yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"
DEPLOY = REPO / "deploy"
NODE_CMD = ["node", "--topology", "/run/mcepl/topology.json", "--config", "/run/mcepl/config.toml"]


def _regenerate(tmp_path: Path) -> Path:
    out = tmp_path / "docker-compose.yml"
    rc = mcepl_main(["topology", "compose", str(DEPLOY / "topology.json"),
                     "--config", str(DEPLOY / "config.toml"), "-o", str(out)])
    assert rc == 0
    return out


def test_checked_in_compose_is_what_the_command_generates(tmp_path: Path) -> None:
    out = _regenerate(tmp_path)
    assert COMPOSE.read_text() == out.read_text(), \
        "docker-compose.yml is stale: regenerate it with `mcepl topology compose`"
    assert (tmp_path / "deploy" / "topology.json").read_text() == \
        (DEPLOY / "topology.json").read_text()
    # Compared as configs, not text: a new config key with a default must not make this stale.
    assert load_config(tmp_path / "deploy" / "config.toml") == load_config(DEPLOY / "config.toml")


def test_checked_in_compose_matches_its_topology() -> None:
    topo = load_topology(DEPLOY / "topology.json")
    cfg = load_config(DEPLOY / "config.toml")
    assert topo.num_nodes == 20 and topo.is_connected()
    assert cfg.data.root is None and cfg.data.labels_file is None  # nothing host-specific
    for n in topo.nodes:  # advertised = service name, bound on every interface of the container
        assert n.address == f"tcp://node-{n.id}:5555"
        assert n.bind == "tcp://0.0.0.0:5555"

    doc = compose_dict(topo)
    services = doc["services"]
    assert sorted(services) == sorted(["collector", *(f"node-{i}" for i in range(20))])
    col = services["collector"]
    assert col["command"][0] == "collect" and "--out" in col["command"]
    assert col["command"][col["command"].index("--bind") + 1] == "tcp://0.0.0.0:5600"
    assert "./results:/results" in col["volumes"] and "./deploy:/run/mcepl:ro" in col["volumes"]
    for n in topo.nodes:
        svc = services[f"node-{n.id}"]
        assert svc["command"] == [*NODE_CMD, "--id", str(n.id),
                                  "--collector", "tcp://collector:5600"]
        assert svc["depends_on"] == ["collector"]
        assert svc["environment"]["MCEPL_DATA"] == "/data"
        assert svc["volumes"] == ["${MCEPL_DATA:-/usr/share/datasets/fashion-mnist}:/data:ro",
                                  "./deploy:/run/mcepl:ro"]
        assert svc["networks"] == col["networks"] == ["mcepl"]
    # ... and that document is exactly the checked-in file (below its comment header).
    text = COMPOSE.read_text()
    assert text == render_compose(topo, cfg)
    assert text.endswith(to_yaml(doc))
    yaml = pytest.importorskip("yaml", reason="PyYAML not installed: cannot parse it back")
    assert yaml.safe_load(text) == doc


def test_compose_from_any_topology(tmp_path: Path, tiny_cfg) -> None:
    """Host addresses and data.root / labels_file become container ones, labels embedded."""
    labels = tmp_path / "labels.txt"
    labels.write_text("0 1\n2 3\n4 5\n")
    cfg = tiny_cfg(data={"labels_file": str(labels)})
    (tmp_path / "cfg.toml").write_text(dump_toml(cfg))
    save_topology(generate("ring", 3, host="10.0.0.7", base_port=7000), tmp_path / "t.json")
    out = tmp_path / "x" / "compose.yml"
    rc = mcepl_main(["topology", "compose", str(tmp_path / "t.json"), "--config",
                     str(tmp_path / "cfg.toml"), "-o", str(out), "--run-dir",
                     str(tmp_path / "files"), "--image", "me/mcepl:1", "--build", ""])
    assert rc == 0
    ctopo = load_topology(tmp_path / "files" / "topology.json")
    assert [n.address for n in ctopo.nodes] == [f"tcp://node-{i}:5555" for i in range(3)]
    assert [n.labels for n in ctopo.nodes] == [[0, 1], [2, 3], [4, 5]]
    ccfg = load_config(tmp_path / "files" / "config.toml")
    assert ccfg.data.root is None and ccfg.data.labels_file is None
    assert ccfg.algorithm == cfg.algorithm and ccfg.run == cfg.run
    text = out.read_text()
    assert '"../files:/run/mcepl:ro"' in text and "build:" not in text
    assert f'"${{MCEPL_DATA:-{cfg.data.root}}}:/data:ro"' in text
    assert text.count('image: "me/mcepl:1"') == 4


def test_docker_compose_accepts_the_checked_in_file() -> None:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose); "
                    "the file's structure is still checked by the other tests")
    proc = subprocess.run([exe, "-f", str(COMPOSE), "config", "-q"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([exe, "-f", str(COMPOSE), "config", "--services"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.split()) == sorted(["collector", *(f"node-{i}" for i in range(20))])
