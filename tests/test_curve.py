"""ZeroMQ CURVE: keys, the topology's public keys, an encrypted network that gives the plaintext
numbers, attackers with unknown keys refused and counted without disturbing the run, a key bound
to its node id, and one-line errors for bad key files."""

from __future__ import annotations

import ast
import json
import os
import re
import stat
import threading
import time
from pathlib import Path

import pytest
import zmq

from mcepl.config import dump_toml, load_config
from mcepl.launcher.cli import main as mcepl_main
from mcepl.launcher.launch import launch
from mcepl.node.factory import build_algorithm, default_run_id, node_shard
from mcepl.node.inprocess import run_inprocess
from mcepl.node.transport import CurveConfig, NodeSockets
from mcepl.protocol import encode_payload
from mcepl.topology import Topology, TopologyError, generate, load_topology, save_topology
from mcepl.topology.keys import (
    KeyFileError,
    generate_keys,
    key_paths,
    load_secret_key,
    new_keypair,
)

COMPARED = ("test_acc", "train_loss", "density", "bytes_sent", "bytes_received", "msgs_sent",
            "msgs_received")
REFUSED_LINE = re.compile(r"CURVE: connections and messages refused by the transport: (.*)$",
                          re.M)


def ipc_topology(tmp_path: Path, n: int = 3) -> Topology:
    return generate("complete", n, retention=[0.5, 0.3, 0.2][:n], transport="ipc",
                    ipc_dir=tmp_path)


def records(run_dir: Path) -> dict[tuple[int, int], dict]:
    recs = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {(r["round"], r["node"]): r for r in recs}


def assert_same_numbers(net: dict, reference: list[dict]) -> None:
    ref = {(r["round"], r["node"]): r for r in reference}
    assert set(net) == set(ref)
    for k, r in ref.items():
        for field in COMPARED:
            if field in r:
                assert net[k][field] == r[field], (k, field)


def refused(log_text: str) -> dict[str, int]:
    m = REFUSED_LINE.search(log_text)
    assert m, "the node did not log its CURVE refusals"
    return {} if m.group(1).strip() == "none" else ast.literal_eval(m.group(1))


# ---- keys and the topology -----------------------------------------------------------------
def test_topology_keys_command(tmp_path: Path, capsys) -> None:
    save_topology(generate("ring", 3), tmp_path / "t.json")
    rc = mcepl_main(["topology", "keys", str(tmp_path / "t.json"), "-o", str(tmp_path / "k"),
                     "--update-topology"])
    assert rc == 0, capsys.readouterr().err
    topo = load_topology(tmp_path / "t.json")
    assert topo.secure and len({n.public_key for n in topo.nodes}) == 3
    for n in topo.nodes:
        pub, sec = key_paths(tmp_path / "k", n.id)
        assert stat.S_IMODE(sec.stat().st_mode) == 0o600
        keys = load_secret_key(sec)
        assert keys.public == n.public_key and n.public_key in pub.read_text()
        assert keys.secret not in pub.read_text()
        # the files are ZeroMQ certificates
        assert zmq.auth.load_certificate(str(sec)) == (keys.public.encode(), keys.secret.encode())
    assert mcepl_main(["topology", "check", str(tmp_path / "t.json")]) == 0
    assert "CURVE public keys on every node" in capsys.readouterr().out
    # default: the keyed topology goes next to the keys; per-node directories
    rc = mcepl_main(["topology", "keys", str(tmp_path / "t.json"), "-o", str(tmp_path / "k2"),
                     "--per-node-dirs"])
    assert rc == 0
    assert load_topology(tmp_path / "k2" / "topology.json").secure
    sec = key_paths(tmp_path / "k2", 2, per_node_dirs=True)[1]
    assert sec == tmp_path / "k2" / "node-2" / "node-2.key_secret" and sec.exists()
    assert stat.S_IMODE(sec.parent.stat().st_mode) == 0o700


@pytest.mark.parametrize("key, why", [
    ("x" * 39, "40 characters of Z85"),
    ("x" * 39 + "~", "40 characters of Z85"),
    ("x" * 39 + '"', "40 characters of Z85"),
    (17, "40 characters of Z85"),
])
def test_topology_rejects_bad_public_keys(key, why) -> None:
    doc = generate("ring", 3).to_json_dict()
    for i, nd in enumerate(doc["nodes"]):
        nd["public_key"] = new_keypair().public if i != 1 else key
    with pytest.raises(TopologyError, match=rf"node 1 .*{why}"):
        Topology.from_json_dict(doc, "t.json")


def test_topology_keys_all_or_none_and_distinct() -> None:
    doc = generate("ring", 3).to_json_dict()
    doc["nodes"][0]["public_key"] = new_keypair().public
    with pytest.raises(TopologyError, match=r"t.json: node 1: missing public_key"):
        Topology.from_json_dict(doc, "t.json")
    same = new_keypair().public
    for nd in doc["nodes"]:
        nd["public_key"] = same
    with pytest.raises(TopologyError, match=r"node 1: public_key already used by node 0"):
        Topology.from_json_dict(doc, "t.json")


# ---- key file errors: one line naming the file, exit 2 ---------------------------------------
def test_node_key_file_errors(tmp_path: Path, tiny_cfg, capsys) -> None:
    (tmp_path / "cfg.toml").write_text(dump_toml(tiny_cfg()))
    plain = ipc_topology(tmp_path)
    save_topology(plain, tmp_path / "plain.json")
    save_topology(generate_keys(plain, tmp_path / "keys"), tmp_path / "secure.json")
    garbage = tmp_path / "garbage.key_secret"
    garbage.write_bytes(b"\x00\xff not a certificate")
    broken = tmp_path / "broken.key_secret"
    broken.write_text('curve\n    secret-key = "too short"\n')

    def node(topo: str, *key: str) -> tuple[int, str]:
        rc = mcepl_main(["node", "--topology", str(tmp_path / topo), "--config",
                         str(tmp_path / "cfg.toml"), "--id", "0", *key])
        err = capsys.readouterr().err.strip()
        return rc, err

    pub0, sec0 = key_paths(tmp_path / "keys", 0)
    sec1 = key_paths(tmp_path / "keys", 1)[1]
    cases = [
        (tmp_path / "missing.key_secret", "No such file"),
        (tmp_path, "cannot read"),  # a directory
        (garbage, "cannot read"),
        (broken, "secret-key is not 40 characters of Z85"),
        (pub0, "not a secret key file"),
        (sec1, "is not node 0's in the topology"),
    ]
    for path, why in cases:
        rc, err = node("secure.json", "--key", str(path))
        assert rc == 2, (path, err)
        assert len(err.splitlines()) == 1 and f"key file {path}" in err and why in err, err
    rc, err = node("secure.json")
    assert rc == 2 and "pass its secret key file with --key" in err and len(err.splitlines()) == 1
    rc, err = node("plain.json", "--key", str(sec0))
    assert rc == 2 and f"key file {sec0}" in err and "no public keys" in err


# ---- the binding of key to node id -------------------------------------------------------------
def test_a_connection_speaks_only_for_the_node_its_key_belongs_to(tmp_path: Path) -> None:
    """Node 0 accepts keys k1 and k2. A client holding k2 that says hello as node 1 is refused
    (auth_mismatch) and stays unbound, whatever its routing id; the same client saying hello as
    node 2 is bound to node 2, and its data claiming node 1 is then dropped (wrong_sender); k1's
    hello as node 1 binds node 1."""
    from mcepl.config import config_from_dict
    from mcepl.node.runtime import NodeRuntime
    from mcepl.protocol import decode_message, encode_control

    topo = generate("complete", 3, retention=[0.5, 0.3, 0.2], transport="ipc", ipc_dir=tmp_path)
    me, k1, k2 = new_keypair(), new_keypair(), new_keypair()
    cfg = config_from_dict({"run": {"rounds": 1}, "algorithm": {"name": "ind-mask"}})
    socks = NodeSockets(0, topo.node(0).address, {}, linger_ms=0,
                        curve=CurveConfig(me.public, me.secret, {1: k1.public, 2: k2.public}))
    rt = NodeRuntime(cfg, topo, 0, "run-x", None, socks)  # type: ignore[arg-type]
    ctx = zmq.Context()
    try:
        def client(keys, rid: bytes) -> zmq.Socket:
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.curve_serverkey, s.curve_publickey = me.public.encode(), keys.public.encode()
            s.curve_secretkey = keys.secret.encode()
            s.routing_id = rid
            s.connect(topo.node(0).address)
            return s

        def hello(sender: int) -> list[bytes]:
            return encode_control("hello", {"config_hash": rt.config_hash}, run_id="run-x",
                                  sender=sender)

        def pump_until(cond, what: str) -> None:
            deadline = time.monotonic() + 10
            while not cond():
                assert time.monotonic() < deadline, what
                rt._pump(50)

        impostor = client(k2, b"1")  # node 2's key, node 1's routing id and claim
        impostor.send_multipart(hello(1))
        pump_until(lambda: socks.rejected_counts().get("auth_mismatch", 0) == 1, "refusal")
        assert socks.bindings() == {} and rt.greeted == set()
        impostor.send_multipart(hello(2))  # honest about itself: bound to node 2
        pump_until(lambda: 2 in rt.greeted, "node 2's hello")
        assert socks.peer_of(b"1") == 2 and socks.bindings() == {2: 1}
        assert impostor.poll(5000)
        assert decode_message(impostor.recv_multipart(), run_id="run-x").body["accept"] is True
        impostor.send_multipart(hello(1))  # now a bound connection lying about its sender
        pump_until(lambda: rt.dropped.get("wrong_sender", 0) == 1, "wrong_sender")
        honest = client(k1, b"1-abc")
        honest.send_multipart(hello(1))
        pump_until(lambda: 1 in rt.greeted, "node 1's hello")
        assert socks.peer_of(b"1-abc") == 1 and socks.bindings() == {1: 1, 2: 1}
        assert socks.rejected_counts() == {"auth_mismatch": 1}
    finally:
        ctx.destroy(linger=0)
        socks.close()


# ---- whole networks ----------------------------------------------------------------------------
@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_secure_network_equals_plaintext_inprocess(tmp_path: Path, tiny_cfg,
                                                   transport: str) -> None:
    cfg = tiny_cfg({"run": {"rounds": 2, "eval_every": 1}})
    topo = ipc_topology(tmp_path) if transport == "ipc" else generate(
        "complete", 3, retention=[0.5, 0.3, 0.2])
    res = launch(cfg, topo, tmp_path / "run", quiet=True, auto_ports=transport == "tcp")
    assert res.summary["status"] == "ok"
    assert_same_numbers(records(tmp_path / "run"), run_inprocess(cfg, topo).records)
    keyed = load_topology(tmp_path / "run" / "topology.json")
    for n in keyed.nodes:
        sec = key_paths(tmp_path / "run" / "keys", n.id)[1]
        assert stat.S_IMODE(sec.stat().st_mode) == 0o600
        assert load_secret_key(sec).public == n.public_key
        log = (tmp_path / "run" / "logs" / f"node-{n.id}.log").read_text()
        assert refused(log) == {}
    # the collector has its own key and let in the nodes' keys only
    col = load_secret_key(key_paths(tmp_path / "run" / "keys", "collector")[1])
    assert col.public == keyed.collector_key
    assert json.loads((tmp_path / "run" / "collector.json").read_text())["rejected"] == {}


def test_attackers_are_refused_counted_and_change_nothing(tmp_path: Path, tiny_cfg) -> None:
    """THE SHOW: processes with unknown keys (one claiming a neighbour's routing id) and one
    without CURVE send valid-looking masks to node 0 during a secure run: none gets a pipe,
    node 0 counts and logs the refusals, and the run's numbers are exactly the plaintext ones."""
    cfg = tiny_cfg({"run": {"rounds": 3, "eval_every": 1}})
    topo = ipc_topology(tmp_path)
    run_dir = tmp_path / "run"
    out: dict = {}

    def target() -> None:
        try:
            out["result"] = launch(cfg, topo, run_dir, quiet=True, secure=True)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not (run_dir / "keys" / "node-2.key_secret").exists() or \
            not (run_dir / "topology.json").exists():
        assert time.monotonic() < deadline and thread.is_alive(), out
        time.sleep(0.05)
    time.sleep(0.2)  # topology.json is written right after the keys
    keyed = load_topology(run_dir / "topology.json")
    run_id = default_run_id(load_config(run_dir / "config.toml"), keyed)
    # exactly what node 1 sends node 0 in rounds 0.. (valid run id, shapes, sender)
    algo1 = build_algorithm(cfg, topo, 1, node_shard(cfg, topo, 1))
    masks = algo1.outgoing(0, 0)[0]
    frames = [encode_payload(masks, run_id=run_id, round=r, phase=0, sender=1)
              for r in range(cfg.run.rounds + 1)]

    ctx = zmq.Context()
    attackers = []
    strangers = [new_keypair(), new_keypair()]
    target_addr = keyed.node(0).address
    for keys, rid in zip(strangers, (b"7", b"1"), strict=True):  # unknown key; claims node 1
        s = ctx.socket(zmq.DEALER)
        s.curve_serverkey = keyed.node(0).public_key.encode()
        s.curve_publickey, s.curve_secretkey = keys.public.encode(), keys.secret.encode()
        s.routing_id = rid
        attackers.append(s)
    plain = ctx.socket(zmq.DEALER)  # no CURVE at all, claims node 1
    plain.routing_id = b"1"
    attackers.append(plain)
    for s in attackers:
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 100_000)
        s.connect(target_addr)
    k = 0
    try:
        while thread.is_alive():
            for s in attackers:
                try:
                    s.send_multipart(frames[k % len(frames)], zmq.NOBLOCK)
                except zmq.Again:
                    pass
            k += 1
            thread.join(0.1)
    finally:
        ctx.destroy(linger=0)
    assert "error" not in out, out.get("error")
    assert out["result"].summary["status"] == "ok"
    assert k > 5  # the attackers kept trying for the whole run

    net = records(run_dir)
    assert_same_numbers(net, run_inprocess(cfg, topo).records)
    assert all(r["dropped"] == 0 for r in net.values())  # nothing reached the round loop
    log = (run_dir / "logs" / "node-0.log").read_text()
    counts = refused(log)
    assert counts.get("unknown_key", 0) >= 2, counts
    assert counts.get("handshake_failed", 0) >= 1, counts
    for keys in strangers:
        assert f"refused a connection with unknown CURVE key {keys.public}" in log
    assert "failed the CURVE handshake" in log
    for i in (1, 2):  # nobody attacked the others
        assert refused((run_dir / "logs" / f"node-{i}.log").read_text()) == {}


def test_launch_refuses_keys_it_cannot_use(tmp_path: Path, tiny_cfg) -> None:
    from mcepl.launcher.launch import LaunchError

    keyed = generate_keys(ipc_topology(tmp_path), tmp_path / "keys")
    with pytest.raises(LaunchError, match="--insecure, but the topology has CURVE public keys"):
        launch(tiny_cfg(), keyed, tmp_path / "run", quiet=True, secure=False)


def test_key_error_is_one_line() -> None:
    with pytest.raises(KeyFileError) as info:
        load_secret_key("/nonexistent/dir/node-0.key_secret")
    assert str(info.value).count("\n") == 0
    assert os.fspath("/nonexistent/dir/node-0.key_secret") in str(info.value)


def test_collector_accepts_only_the_nodes_keys_each_for_itself(tmp_path: Path) -> None:
    """Metrics are authenticated: a stranger's key and a plaintext client never get a record
    in, and node 1's key cannot write node 0's records."""
    from mcepl.launcher.collector import Collector, CollectorKeys
    from mcepl.protocol import encode_metrics

    col_keys, k0, k1, stranger = new_keypair(), new_keypair(), new_keypair(), new_keypair()
    keys = CollectorKeys(col_keys.public, col_keys.secret, {0: k0.public, 1: k1.public})
    col = Collector(tmp_path, "run-x", 2, bind=f"ipc://{tmp_path}/col.sock", keys=keys)
    ctx = zmq.Context()
    try:
        def pusher(pair) -> zmq.Socket:
            s = ctx.socket(zmq.PUSH)
            s.setsockopt(zmq.LINGER, 0)
            if pair is not None:
                s.curve_serverkey = col_keys.public.encode()
                s.curve_publickey, s.curve_secretkey = pair.public.encode(), pair.secret.encode()
            s.connect(f"ipc://{tmp_path}/col.sock")
            return s

        def record(node: int, rnd: int) -> list[bytes]:
            return encode_metrics({"round": rnd, "node": node, "bytes_sent": 1}, run_id="run-x",
                                  sender=node)

        clients = [pusher(stranger), pusher(None), pusher(k1), pusher(k1)]  # kept open
        for s in clients[:3]:
            s.send_multipart(record(0, 0), zmq.NOBLOCK)
        clients[3].send_multipart(record(1, 0))
        deadline = time.monotonic() + 10
        while not (col.state.nodes[1].rounds_seen and col.rejected.get("auth_mismatch")
                   and col.rejected.get("unknown_key")):
            assert time.monotonic() < deadline, (col.rejected, col.state)
            col.poll(100)
        col.poll(300)
    finally:
        ctx.destroy(linger=0)
        col.close()
    assert col.state.nodes[0].rounds_seen == set() and col.state.nodes[1].rounds_seen == {0}
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["node"] for ln in lines] == [1]
    saved = json.loads((tmp_path / "collector.json").read_text())["rejected"]
    assert saved["unknown_key"] >= 1 and saved["auth_mismatch"] == 1
