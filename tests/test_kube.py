"""`mcepl topology kube`: manifests valid against the Kubernetes schemas (offline, with
kubernetes-validate), one Job per node with a stable DNS name through a headless Service that the
topology's addresses use, CURVE keys as one Secret per node mounted into that node only (and
matching the topology's public keys), the data set read-only from a hostPath or a claim, memory
requests from the measured peak of a node process. No cluster is involved.
"""

from __future__ import annotations

import base64
import json
import stat
import sys
from pathlib import Path

import kubernetes_validate as kv  # test extras: offline Kubernetes schema validation
import pytest
import yaml

from mcepl.config import dump_toml, load_config
from mcepl.node.transport import CurveConfig
from mcepl.topology import generate, load_topology, save_topology
from mcepl.topology.keys import check_collector_key, load_secret_key

REPO = Path(__file__).resolve().parent.parent
#: The oldest and newest Kubernetes versions whose schemas kubernetes-validate ships.
VERSIONS = sorted({kv.utils.all_versions()[0], kv.utils.latest_version()})


def _mcepl_main(argv: list[str]) -> int:
    """The `mcepl` command, in this process."""
    import importlib.metadata as md

    (ep,) = [e for e in md.entry_points(group="console_scripts") if e.name == "mcepl"]
    return ep.load()(argv)


def _write(tmp_path: Path, tiny_cfg, *args: str, nodes: int = 4) -> tuple[Path, list[dict]]:
    cfg = tiny_cfg()
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "cfg.toml").write_text(dump_toml(cfg))
    save_topology(generate("ring", nodes, host="10.1.2.3", base_port=7000), tmp_path / "t.json")
    out = tmp_path / "kube"
    rc = _mcepl_main(["topology", "kube", str(tmp_path / "t.json"), "--config",
                      str(tmp_path / "cfg.toml"), "-o", str(out), *args])
    assert rc == 0
    docs = [d for f in sorted(out.glob("*.yaml"))
            for d in yaml.safe_load_all(f.read_text()) if d]
    return out, docs


def _by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _pod(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


def test_manifests_are_valid_kubernetes(tmp_path: Path, tiny_cfg) -> None:
    _, docs = _write(tmp_path, tiny_cfg, "--namespace", "fl-lab")
    _, docs_pvc = _write(tmp_path / "b", tiny_cfg, "--data", "pvc:fmnist", "--results",
                         "hostpath:/srv/mcepl", "--keys", "none")
    # configmap, 2 services, pvc, 5 jobs, 5 secrets (4 nodes and the collector)
    assert len(docs) == 1 + 2 + 1 + 1 + 4 + 5
    for d in docs + docs_pvc:
        for version in VERSIONS:
            kv.validate(d, version, strict=True)  # raises on any schema violation
    assert all(d["metadata"]["namespace"] == "fl-lab" for d in docs)


def test_schema_validation_catches_a_broken_manifest(tmp_path: Path, tiny_cfg) -> None:
    """The check above can fail: a misspelt field is refused."""
    _, docs = _write(tmp_path, tiny_cfg)
    job = _by_kind(docs, "Job")["mcepl-node-0"]
    _pod(job)["containers"][0]["volumeMount"] = _pod(job)["containers"][0].pop("volumeMounts")
    with pytest.raises(kv.ValidationError):
        kv.validate(job, VERSIONS[-1], strict=True)


def test_nodes_resolve_each_other_and_get_only_their_own_key(tmp_path: Path, tiny_cfg) -> None:
    out, docs = _write(tmp_path, tiny_cfg)
    assert stat.S_IMODE((out / "keys.yaml").stat().st_mode) == 0o600
    assert "secret-key" not in (out / "mcepl.yaml").read_text()
    cm = _by_kind(docs, "ConfigMap")["mcepl-files"]
    (tmp_path / "ct").mkdir()
    (tmp_path / "ct" / "topology.json").write_text(cm["data"]["topology.json"])
    (tmp_path / "ct" / "config.toml").write_text(cm["data"]["config.toml"])
    topo = load_topology(tmp_path / "ct" / "topology.json")
    ccfg = load_config(tmp_path / "ct" / "config.toml")
    assert ccfg.data.root is None and ccfg.data.download is False
    headless = _by_kind(docs, "Service")["mcepl"]
    assert headless["spec"]["clusterIP"] == "None"
    secrets = _by_kind(docs, "Secret")
    jobs = _by_kind(docs, "Job")
    assert set(jobs) == {"mcepl-collector", *(f"mcepl-node-{i}" for i in range(4))}
    for n in topo.nodes:
        pod = _pod(jobs[f"mcepl-node-{n.id}"])
        # the address in the topology is the Pod's DNS name through the headless Service
        assert n.address == f"tcp://{pod['hostname']}.{pod['subdomain']}:5555"
        assert pod["subdomain"] == headless["metadata"]["name"]
        labels = jobs[f"mcepl-node-{n.id}"]["spec"]["template"]["metadata"]["labels"]
        assert all(labels[k] == v for k, v in headless["spec"]["selector"].items())
        (c,) = pod["containers"]
        assert c["args"][:2] == ["node", "--topology"] and "--key" in c["args"]
        assert c["args"][c["args"].index("--collector") + 1] == "tcp://mcepl-collector:5600"
        # its own Secret only, read-only; the data set read-only
        vols = {v["name"]: v for v in pod["volumes"]}
        assert [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v] == \
            [f"mcepl-key-{n.id}"]
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        assert mounts["key"]["readOnly"] and mounts["data"]["readOnly"]
        assert vols["data"]["hostPath"]["path"] == str(tiny_cfg().data.root)
        # the key in the Secret is the one the topology lists: the node's --key check passes
        (text,) = secrets[f"mcepl-key-{n.id}"]["data"].values()
        key_file = tmp_path / f"node-{n.id}.key_secret"
        key_file.write_bytes(base64.b64decode(text))
        assert load_secret_key(key_file).public == n.public_key
        curve = CurveConfig.for_node(topo, n.id, str(key_file))
        assert curve is not None and set(curve.peers) == set(topo.neighbors(n.id))
        env = {e["name"]: e["value"] for e in c["env"]}
        assert env["MCEPL_DATA"] == "/data" and "hostPath" in env["MCEPL_DATA_HINT"]
    # the collector holds its own key (metrics are authenticated), and no node's
    col = _pod(jobs["mcepl-collector"])
    assert [v["secret"]["secretName"] for v in col["volumes"] if "secret" in v] == \
        ["mcepl-key-collector"]
    args = col["containers"][0]["args"]
    assert args[args.index("--key") + 1] == "/run/mcepl-key/collector.key_secret"
    (text,) = secrets["mcepl-key-collector"]["data"].values()
    key_file = tmp_path / "collector.key_secret"
    key_file.write_bytes(base64.b64decode(text))
    check_collector_key(topo, load_secret_key(key_file), str(key_file))  # raises on mismatch
    assert _by_kind(docs, "PersistentVolumeClaim")["mcepl-results"]


def test_memory_requests_come_from_the_measured_peak(tmp_path: Path, tiny_cfg) -> None:
    from mcepl.topology.kube import MEMORY_MARGIN, NODE_PEAK_RSS_MIB, memory_mib

    _, docs = _write(tmp_path, tiny_cfg)
    res = _pod(_by_kind(docs, "Job")["mcepl-node-0"])["containers"][0]["resources"]
    req, lim = memory_mib("small-cnn")
    assert res["requests"]["memory"] == f"{req}Mi" and res["limits"]["memory"] == f"{lim}Mi"
    assert NODE_PEAK_RSS_MIB["small-cnn"] * MEMORY_MARGIN <= req < \
        NODE_PEAK_RSS_MIB["small-cnn"] * MEMORY_MARGIN + 64
    assert res["requests"]["cpu"] == "1"  # run.threads_per_node


def test_pvc_data_and_no_keys(tmp_path: Path, tiny_cfg) -> None:
    out, docs = _write(tmp_path, tiny_cfg, "--data", "pvc:fmnist", "--keys", "none")
    assert not (out / "keys.yaml").exists() and not _by_kind(docs, "Secret")
    pod = _pod(_by_kind(docs, "Job")["mcepl-node-1"])
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["data"]["persistentVolumeClaim"] == {"claimName": "fmnist", "readOnly": True}
    assert "--key" not in pod["containers"][0]["args"]
    assert pod["containers"][0]["args"][-1] == "--insecure"  # plaintext, said explicitly
    col = _pod(_by_kind(docs, "Job")["mcepl-collector"])["containers"][0]["args"]
    assert col[-1] == "--insecure"
    topo = json.loads(_by_kind(docs, "ConfigMap")["mcepl-files"]["data"]["topology.json"])
    assert not any("public_key" in n for n in topo["nodes"])


@pytest.mark.parametrize("args, message", [
    (["--data", "nfs:/x"], "--data: expected hostpath:DIR or pvc:CLAIM"),
    (["--data", "hostpath:relative/dir"], "--data: hostpath needs an absolute directory"),
    (["--results", "pvc:Bad_Name"], "--results: 'Bad_Name' is not a valid claim name"),
    (["--name", "Mcepl"], "--name: 'Mcepl' must be a DNS label"),
])
def test_bad_options_are_one_line(tmp_path: Path, tiny_cfg, capsys, args, message) -> None:
    (tmp_path / "cfg.toml").write_text(dump_toml(tiny_cfg()))
    save_topology(generate("ring", 3), tmp_path / "t.json")
    rc = _mcepl_main(["topology", "kube", str(tmp_path / "t.json"), "--config",
                      str(tmp_path / "cfg.toml"), "-o", str(tmp_path / "k"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "k").exists()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))


def _write_user(tmp_path: Path, *args: str) -> tuple[int, Path, list[dict]]:
    """Manifests for a config naming the user's own model (module `mcepl_kube_user`)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "cfg.toml").write_text('[model]\nname = "mcepl_kube_user.nets:net"\n'
                                       '[run]\npython_path = ["code"]\n')
    save_topology(generate("ring", 3), tmp_path / "t.json")
    out = tmp_path / "kube"
    rc = _mcepl_main(["topology", "kube", str(tmp_path / "t.json"), "--config",
                      str(tmp_path / "cfg.toml"), "-o", str(out), "--keys", "none", *args])
    docs = [d for f in sorted(out.glob("*.yaml"))
            for d in yaml.safe_load_all(f.read_text()) if d] if rc == 0 else []
    return rc, out, docs


def test_user_code_from_a_local_directory_is_a_configmap_volume(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--code DIR: the directory's files (subdirectories kept; caches, hidden files left out)
    in a ConfigMap mounted read-only at /code in every node Pod, not the collector's; the
    containers' run.python_path is ["/code"]; nothing imported; valid manifests."""
    code = tmp_path / "code"
    pkg = code / "mcepl_kube_user"
    (pkg / "__pycache__").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text("raise SystemExit('imported!')\n")
    (pkg / "weights.bin").write_bytes(bytes(range(256)))
    (pkg / "__pycache__" / "nets.cpython-311.pyc").write_bytes(b"\0")
    (code / ".hidden").write_text("x")
    rc, _, docs = _write_user(tmp_path, "--code", str(code))
    assert rc == 0 and "mcepl_kube_user" not in sys.modules
    cm = _by_kind(docs, "ConfigMap")["mcepl-code"]
    jobs = _by_kind(docs, "Job")
    items = _pod(jobs["mcepl-node-0"])["volumes"][-1]["configMap"]["items"]
    paths = {i["path"]: i["key"] for i in items}
    assert set(paths) == {"mcepl_kube_user/__init__.py", "mcepl_kube_user/nets.py",
                          "mcepl_kube_user/weights.bin"}
    assert cm["data"][paths["mcepl_kube_user/nets.py"]] == "raise SystemExit('imported!')\n"
    assert base64.b64decode(cm["binaryData"][paths["mcepl_kube_user/weights.bin"]]) == \
        bytes(range(256))
    for job_name, job in jobs.items():
        pod = _pod(job)
        mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
        if job_name == "mcepl-collector":
            assert "/code" not in mounts
        else:
            assert mounts["/code"]["readOnly"] is True and mounts["/code"]["name"] == "code"
            assert {"name": "code", "configMap": {"name": "mcepl-code", "items": items}} in \
                pod["volumes"]
    files = _by_kind(docs, "ConfigMap")["mcepl-files"]["data"]
    assert 'python_path = ["/code"]' in files["config.toml"]
    for d in docs:
        for version in VERSIONS:
            kv.validate(d, version, strict=True)


def test_user_code_from_a_volume_and_errors(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, docs = _write_user(tmp_path / "a", "--code", "hostpath:/srv/mcepl-code")
    assert rc == 0 and "mcepl-code" not in _by_kind(docs, "ConfigMap")
    vols = _pod(_by_kind(docs, "Job")["mcepl-node-1"])["volumes"]
    assert {"name": "code", "hostPath": {"path": "/srv/mcepl-code",
                                         "type": "DirectoryOrCreate"}} in vols
    rc, _, docs = _write_user(tmp_path / "b", "--code", "pvc:my-code")
    assert rc == 0
    vols = _pod(_by_kind(docs, "Job")["mcepl-node-2"])["volumes"]
    assert {"name": "code", "persistentVolumeClaim": {"claimName": "my-code",
                                                      "readOnly": True}} in vols
    for d in docs:
        kv.validate(d, VERSIONS[-1], strict=True)
    capsys.readouterr()
    # without --code: a note; the image must hold the module
    rc, _, docs = _write_user(tmp_path / "c")
    assert rc == 0 and "note: model.name 'mcepl_kube_user.nets:net' is your own code" in \
        capsys.readouterr().err
    assert 'python_path = []' in _by_kind(docs, "ConfigMap")["mcepl-files"]["data"]["config.toml"]
    # errors: one line, exit 2
    (tmp_path / "empty").mkdir()
    for args, message in [(["--code", str(tmp_path / "empty")],
                           "needs module 'mcepl_kube_user'"),
                          (["--code", "pvc:Bad_Name"], "not a valid claim name"),
                          (["--code", "hostpath:relative/dir"], "absolute directory")]:
        rc, _, _ = _write_user(tmp_path / "d", *args)
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.count("\n") == 0 and message in err, err
    big = tmp_path / "big" / "mcepl_kube_user"
    big.mkdir(parents=True)
    (big / "__init__.py").write_bytes(b"#" * (1 << 20))
    rc, _, _ = _write_user(tmp_path / "e", "--code", str(tmp_path / "big"))
    err = capsys.readouterr().err
    assert rc == 2 and "more than a ConfigMap holds" in err and "hostpath:DIR" in err
