"""The checked-in docker-compose.yml: regenerated from its deploy/ files, it is the same file;
20 node services and a collector with the right commands and addresses, CURVE keys made by a keys
service at `up` (no secret key in the repository); docker-compose accepts it.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from mcepl.config import config_from_dict, dump_toml, load_config
from mcepl.launcher.cli import main as mcepl_main
from mcepl.node.transport import CurveConfig
from mcepl.topology import generate, load_topology, save_topology
from mcepl.topology.compose import compose_dict, render_compose, to_yaml
from mcepl.topology.keys import check_collector_key, load_secret_key

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"
DEPLOY = REPO / "deploy"
NODE_CMD = ["node", "--topology", "/run/mcepl-public/topology.json",
            "--config", "/run/mcepl/config.toml"]
AFTER_KEYS = {"keys": {"condition": "service_completed_successfully"}}


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


def test_checked_in_config_is_the_main_jobs_defaults() -> None:
    """deploy/config.toml is the default config (what `mcepl launch` runs) with only
    data.download off: `docker compose up` is the main job, in containers. It went stale once
    (an old default init), so compose gave other numbers than the launch it is compared with."""
    assert load_config(DEPLOY / "config.toml") == config_from_dict({"data": {"download": False}})


def test_checked_in_compose_matches_its_topology() -> None:
    topo = load_topology(DEPLOY / "topology.json")
    cfg = load_config(DEPLOY / "config.toml")
    assert topo.num_nodes == 20 and topo.is_connected()
    assert cfg.data.root is None and cfg.data.labels_file is None  # nothing host-specific
    assert cfg.data.download is False  # containers use the mounted data set, never fetch one
    for n in topo.nodes:  # advertised = service name, bound on every interface of the container
        assert n.address == f"tcp://node-{n.id}:5555"
        assert n.bind == "tcp://0.0.0.0:5555"
        assert n.public_key is None  # keys are made at `docker compose up`, never checked in
    assert not any("secret" in f.read_text().lower() for f in DEPLOY.iterdir())

    doc = compose_dict(topo, threads=cfg.run.threads_per_node)
    services = doc["services"]
    assert sorted(services) == sorted(["keys", "collector", *(f"node-{i}" for i in range(20))])
    keys = services["keys"]
    assert keys["command"][:3] == ["topology", "keys", "/run/mcepl/topology.json"]
    assert keys["network_mode"] == "none" and "networks" not in keys
    assert keys["volumes"] == ["./deploy:/run/mcepl:ro", "mcepl-public:/keys/public",
                               "mcepl-key-collector:/keys/collector",
                               *(f"mcepl-key-{i}:/keys/node-{i}" for i in range(20))]
    assert set(doc["volumes"]) == {"mcepl-public", "mcepl-key-collector",
                                   *(f"mcepl-key-{i}" for i in range(20))}
    # the collector's key belongs to the user the collector runs as
    owner = keys["command"][keys["command"].index("--collector-owner") + 1]
    assert owner == "${MCEPL_UID:-1000}:${MCEPL_GID:-1000}"
    col = services["collector"]
    assert col["command"][0] == "collect" and "--out" in col["command"]
    assert col["command"][col["command"].index("--bind") + 1] == "tcp://0.0.0.0:5600"
    assert col["command"][col["command"].index("--topology") + 1] == \
        "/run/mcepl-public/topology.json"  # the run id covers the public keys
    assert "./results:/results" in col["volumes"] and "./deploy:/run/mcepl:ro" in col["volumes"]
    assert col["depends_on"] == AFTER_KEYS
    assert col["user"] == owner
    # metrics are authenticated: the collector holds its own key, and no node's
    assert col["command"][col["command"].index("--key") + 1] == \
        "/run/mcepl-key/collector.key_secret"
    assert [v for v in col["volumes"] if "mcepl-key" in v] == \
        ["mcepl-key-collector:/run/mcepl-key:ro"]
    for n in topo.nodes:
        svc = services[f"node-{n.id}"]
        assert svc["command"] == [*NODE_CMD, "--id", str(n.id),
                                  "--collector", "tcp://collector:5600",
                                  "--key", f"/run/mcepl-key/node-{n.id}.key_secret"]
        assert svc["depends_on"] == {"collector": {"condition": "service_started"}, **AFTER_KEYS}
        assert svc["environment"]["MCEPL_DATA"] == "/data"
        # "auto" threads: each node's share of the host's cores, 20 nodes sharing them
        assert svc["environment"]["MCEPL_LOCAL_NODES"] == "20"
        assert "OMP_NUM_THREADS" not in svc["environment"]
        hint = svc["environment"]["MCEPL_DATA_HINT"]  # names the host directory and the variable
        assert "${MCEPL_DATA:-/usr/share/datasets/fashion-mnist}" in hint
        assert "set MCEPL_DATA to" in hint
        # its own key volume only, read-only
        assert svc["volumes"] == ["${MCEPL_DATA:-/usr/share/datasets/fashion-mnist}:/data:ro",
                                  "./deploy:/run/mcepl:ro", "mcepl-public:/run/mcepl-public:ro",
                                  f"mcepl-key-{n.id}:/run/mcepl-key:ro"]
        assert svc["networks"] == col["networks"] == ["mcepl"]
    # ... and that document is exactly the checked-in file (below its comment header).
    text = COMPOSE.read_text()
    assert text == render_compose(topo, cfg)
    assert text.endswith(to_yaml(doc))
    yaml = pytest.importorskip("yaml", reason="PyYAML not installed: cannot parse it back")
    assert yaml.safe_load(text) == doc


def test_keys_service_command_gives_every_node_its_key(tmp_path: Path) -> None:
    """Run the keys service's command with /keys mapped to a directory here, then follow each
    node's mounts: its key volume holds its secret key (0600, in a 0700 directory) and the
    public topology carries the matching public keys, so every node's `--key` check passes."""
    topo = load_topology(DEPLOY / "topology.json")
    services = compose_dict(topo)["services"]
    keys_dir = tmp_path / "keys"

    def host(path: str) -> Path:  # the keys service's view: /run/mcepl and /keys/...
        if path.startswith("/run/mcepl/"):
            return DEPLOY / path[len("/run/mcepl/"):]
        assert path == "/keys" or path.startswith("/keys/"), path
        return keys_dir / path[len("/keys/"):] if path != "/keys" else keys_dir

    cmd = list(services["keys"]["command"])
    for flag in ("-o", "--topology-out"):
        cmd[cmd.index(flag) + 1] = str(host(cmd[cmd.index(flag) + 1]))
    cmd[2] = str(host(cmd[2]))
    for flag in ("--owner", "--collector-owner"):  # chown needs root; own the files ourselves
        cmd[cmd.index(flag) + 1] = f"{os.getuid()}:{os.getgid()}"
    assert mcepl_main(cmd) == 0
    volumes = dict(v.split(":")[:2] for v in services["keys"]["volumes"])  # name -> path
    public = load_topology(host(volumes["mcepl-public"]) / "topology.json")
    assert public.secure and [n.address for n in public.nodes] == [n.address for n in topo.nodes]
    for i in range(topo.num_nodes):
        node = services[f"node-{i}"]
        mounted = {v.split(":")[1]: v.split(":")[0] for v in node["volumes"]}
        key_arg = node["command"][node["command"].index("--key") + 1]
        inside = str(Path(key_arg).parent)
        key = host(volumes[mounted[inside]]) / Path(key_arg).name  # via the named volume
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
        curve = CurveConfig.for_node(public, i, str(key))
        assert curve is not None and set(curve.peers) == set(public.neighbors(i))
        assert curve.collector == public.collector_key
    # the collector's own key, through its own volume, is the topology's collector key
    col = services["collector"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in col["volumes"]}
    key_arg = col["command"][col["command"].index("--key") + 1]
    key = host(volumes[mounted[str(Path(key_arg).parent)]]) / Path(key_arg).name
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    check_collector_key(public, load_secret_key(key), str(key))  # raises on a mismatch


def test_compose_without_keys_is_plaintext(tmp_path: Path) -> None:
    out = tmp_path / "c.yml"
    rc = mcepl_main(["topology", "compose", str(DEPLOY / "topology.json"), "--config",
                     str(DEPLOY / "config.toml"), "-o", str(out), "--keys", "none"])
    assert rc == 0
    doc = compose_dict(load_topology(tmp_path / "deploy" / "topology.json"), keys="none")
    assert "keys" not in doc["services"] and "volumes" not in doc
    node = doc["services"]["node-3"]
    assert node["command"][:3] == ["node", "--topology", "/run/mcepl/topology.json"]
    assert "--key" not in node["command"] and node["depends_on"] == ["collector"]
    assert "--key" not in out.read_text()
    # plaintext is an explicit choice: every node and the collector say --insecure
    assert node["command"][-1] == "--insecure"
    assert doc["services"]["collector"]["command"][-1] == "--insecure"


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
    assert text.count('image: "me/mcepl:1"') == 5  # keys, collector, 3 nodes


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
    assert sorted(proc.stdout.split()) == sorted(["keys", "collector",
                                                  *(f"node-{i}" for i in range(20))])
    proc = subprocess.run([exe, "-f", str(COMPOSE), "config", "--volumes"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.split()) == sorted(["mcepl-public", "mcepl-key-collector",
                                                  *(f"mcepl-key-{i}" for i in range(20))])


def test_compose_mounts_the_user_code_read_only(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """--code DIR: the user's module directory at /code (read-only) in every node, not in the
    collector or the keys service; run.python_path = ["/code"] in the container config (not
    part of its hash); the modules are found on disk, never imported."""
    import sys

    base = tmp_path / "bundle"
    (base / "code").mkdir(parents=True)
    (base / "code" / "mcepl_compose_user.py").write_text("raise SystemExit('imported!')\n")
    (tmp_path / "cfg.toml").write_text('[model]\nname = "mcepl_compose_user:net"\n'
                                       '[run]\npython_path = ["bundle/code"]\n')
    save_topology(generate("ring", 3), tmp_path / "t.json")
    out = base / "docker-compose.yml"
    args = ["topology", "compose", str(tmp_path / "t.json"), "--config", str(tmp_path / "cfg.toml"),
            "-o", str(out), "--build", ""]
    assert mcepl_main([*args, "--code", str(base / "code")]) == 0
    assert "mcepl_compose_user" not in sys.modules
    import yaml

    doc = yaml.safe_load(out.read_text())
    for name, svc in doc["services"].items():
        mounts = [v for v in svc["volumes"] if v.endswith(":/code:ro")]
        assert mounts == (["./code:/code:ro"] if name.startswith("node-") else []), name
    ccfg = load_config(base / "deploy" / "config.toml")
    assert ccfg.run.python_path == ["/code"] and ccfg.model.name == "mcepl_compose_user:net"
    assert "mounted read-only at /code" in out.read_text()
    # a directory outside the bundle is mounted by its absolute path
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "mcepl_compose_user").mkdir()  # a package directory counts too
    (outside / "mcepl_compose_user" / "__init__.py").write_text("")
    assert mcepl_main([*args, "--code", str(outside)]) == 0
    assert f'"{outside}:/code:ro"' in out.read_text()
    capsys.readouterr()
    # errors: one line, exit 2
    (tmp_path / "empty").mkdir()
    assert mcepl_main([*args, "--code", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "model.name 'mcepl_compose_user:net' needs module " \
        "'mcepl_compose_user'" in err and "no mcepl_compose_user.py" in err
    assert mcepl_main([*args, "--code", str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err
    # without --code: the image must hold the code; host paths are not carried over
    assert mcepl_main(args) == 0
    assert "note: model.name 'mcepl_compose_user:net' is your own code; without --code" in \
        capsys.readouterr().err
    plain = load_config(base / "deploy" / "config.toml")
    assert plain.run.python_path == []
    assert plain.hash() == ccfg.hash()  # where the code lies is not part of the config hash
    assert ":/code:ro" not in out.read_text()
    exe = shutil.which("docker-compose")
    if exe is not None:  # the engine-less validator accepts the file with the mount
        assert mcepl_main([*args, "--code", str(base / "code")]) == 0
        proc = subprocess.run([exe, "-f", str(out), "config", "-q"], cwd=base,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
