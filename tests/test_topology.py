"""Topology files: generators, validation messages, file I/O, mixing matrices and the CLI hooks."""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from mcepl.topology import (
    MAX_ER_ATTEMPTS,
    PAPER_RETENTION,
    NodeSpec,
    Topology,
    TopologyError,
    generate,
    load_topology,
    mixing_weights,
    read_adjacency,
    read_labels_file,
    save_topology,
    with_transport,
)
from mcepl.topology.cli import add_topology_parser

REF = Path("/work/shared/reference")
PAPER_ADJ = REF / "paper-graph-20-nodes.adj"
PAPER_DEGREES = [11, 9, 12, 7, 10, 13, 14, 12, 8, 10, 2, 12, 14, 10, 10, 9, 7, 14, 12, 12]
needs_ref = pytest.mark.skipif(not PAPER_ADJ.exists(), reason="reference data not available")


# ---- generators ---------------------------------------------------------------------------------
def test_paper_retention_constant():
    assert len(PAPER_RETENTION) == 20
    assert list(PAPER_RETENTION[:5]) == [0.4, 0.4, 0.3, 0.2, 0.1]
    assert all(0 < r <= 1 for r in PAPER_RETENTION)


def test_er_connected_and_seeded():
    a = generate("er", 20, p=0.5, seed=3)
    b = generate("er", 20, p=0.5, seed=3)
    c = generate("er", 20, p=0.5, seed=4)
    assert a.is_connected() and nx.is_connected(a.to_networkx())
    assert a.edges == b.edges and a.edges != c.edges
    assert a.meta["kind"] == "er" and a.meta["p"] == 0.5 and a.meta["seed"] == 3
    assert a.edges == sorted(a.edges) and all(x < y for x, y in a.edges)


def test_er_resamples_until_connected_and_records_attempts():
    t = generate("er", 20, p=0.15, seed=0)
    assert t.is_connected()
    assert t.meta["attempts"] > 1
    assert t.meta["graph_seed"] == t.meta["seed"] + t.meta["attempts"] - 1
    # the kept draw is exactly networkx's G(n, p) for graph_seed
    g = nx.gnp_random_graph(20, 0.15, seed=t.meta["graph_seed"])
    assert sorted((min(e), max(e)) for e in g.edges()) == t.edges


def test_er_gives_up_with_clear_error():
    with pytest.raises(TopologyError, match=f"{MAX_ER_ATTEMPTS} draws"):
        generate("er", 30, p=0.01, seed=0)
    with pytest.raises(TopologyError, match="p=0"):
        generate("er", 5, p=0.0)
    with pytest.raises(TopologyError, match="probability"):
        generate("er", 5, p=1.5)


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_ring_complete_star_degrees(n):
    ring, comp, star = (generate(k, n) for k in ("ring", "complete", "star"))
    assert ring.degrees() == [min(2, n - 1)] * n
    assert comp.degrees() == [n - 1] * n
    assert star.degree(0) == n - 1 and all(star.degree(i) == 1 for i in range(1, n))
    assert star.neighbors(0) == list(range(1, n))
    assert ring.num_edges == (n if n > 2 else n - 1)


def test_ring_neighbors_sorted():
    t = generate("ring", 5)
    assert t.neighbors(0) == [1, 4] and t.neighbors(4) == [0, 3]
    assert t.ids == [0, 1, 2, 3, 4] and t.node(2).id == 2
    with pytest.raises(KeyError):
        t.node(5)


@needs_ref
def test_adjacency_paper_graph():
    t = generate("adjacency", None, adjacency=PAPER_ADJ)
    assert t.num_nodes == 20 and t.num_edges == 104
    assert t.degrees() == PAPER_DEGREES
    assert t.retentions == list(PAPER_RETENTION)
    assert generate("adjacency", 20, adjacency=PAPER_ADJ).edges == t.edges
    with pytest.raises(TopologyError, match="20 nodes but 10"):
        generate("adjacency", 10, adjacency=PAPER_ADJ)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("0 1\n1 0 1\n", r"row 1 has 3 entries, expected 2"),
        ("0 2\n2 0\n", r"entry \(0, 1\) is '2'"),
        ("1 1\n1 0\n", r"diagonal entry \(0, 0\)"),
        ("0 1 0\n0 0 1\n0 1 0\n", r"not symmetric: entry \(0, 1\)"),
        ("0 1 0\n1 0 0\n0 0 0\n", r"not connected"),
        ("# only a comment\n", r"empty"),
    ],
)
def test_adjacency_file_errors(tmp_path, text, match):
    f = tmp_path / "g.adj"
    f.write_text(text)
    with pytest.raises(TopologyError, match=match) as ei:
        read_adjacency(f)
    assert str(f) in str(ei.value) and "\n" not in str(ei.value)


def test_adjacency_kind_argument_errors(tmp_path):
    with pytest.raises(TopologyError, match="needs an adjacency"):
        generate("adjacency", None)
    with pytest.raises(TopologyError, match="only applies"):
        generate("ring", 4, adjacency=tmp_path / "x.adj")
    with pytest.raises(TopologyError, match="cannot read"):
        generate("adjacency", None, adjacency=tmp_path / "missing.adj")
    with pytest.raises(TopologyError, match="unknown topology kind"):
        generate("torus", 4)


def test_retention_modes():
    assert generate("ring", 4, retention=0.3).retentions == [0.3] * 4
    assert generate("ring", 3, retention=[0.1, 0.5, 1.0]).retentions == [0.1, 0.5, 1.0]
    t20 = generate("ring", 20)
    assert t20.retentions == list(PAPER_RETENTION) and t20.meta["retention"] == "paper"
    t25 = generate("ring", 25)
    assert t25.retentions == [PAPER_RETENTION[i % 20] for i in range(25)]
    assert t25.meta["retention"] == "paper-cycled"
    a = generate("ring", 50, retention_choices=[0.1, 0.3, 0.5], seed=7)
    b = generate("ring", 50, retention_choices=[0.1, 0.3, 0.5], seed=7)
    assert a.retentions == b.retentions and set(a.retentions) == {0.1, 0.3, 0.5}
    assert a.meta["retention"] == "choices" and a.meta["retention_choices"] == [0.1, 0.3, 0.5]


def test_retention_errors():
    with pytest.raises(TopologyError, match="3 values for 4 nodes"):
        generate("ring", 4, retention=[0.1, 0.2, 0.3])
    with pytest.raises(TopologyError, match="not both"):
        generate("ring", 4, retention=0.3, retention_choices=[0.1])
    with pytest.raises(TopologyError, match=r"node 0: retention 0.0 is not in \(0, 1\]"):
        generate("ring", 4, retention=0.0)
    with pytest.raises(TopologyError, match=r"node 2: retention 1.5"):
        generate("ring", 4, retention=[0.5, 0.5, 1.5, 0.5])


def test_addresses_tcp_ipc_and_labels(tmp_path):
    t = generate("complete", 3, host="10.0.0.1", base_port=6000, labels=[[0, 1], [2], [3, 4]])
    assert [n.address for n in t.nodes] == [f"tcp://10.0.0.1:{6000 + i}" for i in range(3)]
    assert t.node(2).labels == [3, 4]
    ipc = generate("ring", 3, transport="ipc", ipc_dir=tmp_path)
    assert ipc.node(1).address == f"ipc://{tmp_path}/node-1.sock"
    with pytest.raises(TopologyError, match="2 label lists for 3 nodes"):
        generate("ring", 3, labels=[[0], [1]])
    with pytest.raises(TopologyError, match="65535"):
        generate("ring", 3, base_port=65534)


def test_with_transport_round_trip(tmp_path):
    t = generate("ring", 4, host="10.1.2.3", base_port=7000)
    t = Topology(nodes=[NodeSpec(n.id, n.address, n.retention, bind=f"tcp://0.0.0.0:{7000 + n.id}")
                        for n in t.nodes], edges=t.edges, meta=t.meta).validate()
    ipc = with_transport(t, "ipc", ipc_dir=tmp_path)
    assert all(n.address.startswith("ipc://") and n.bind is None for n in ipc.nodes)
    assert ipc.edges == t.edges and ipc.retentions == t.retentions
    assert ipc.meta["transport"] == "ipc"
    same = with_transport(t, "tcp")
    assert [n.address for n in same.nodes] == [n.address for n in t.nodes]
    moved = with_transport(t, "tcp", host="example.org", base_port=9000)
    assert moved.node(3).address == "tcp://example.org:9003"
    assert moved.node(3).bind == "tcp://0.0.0.0:9003"
    back = with_transport(ipc, "tcp")
    assert back.node(1).address == "tcp://127.0.0.1:5551"


def test_labels_file(tmp_path):
    f = tmp_path / "labels.txt"
    f.write_text("0 8 9\n# comment\n3 0 9\n\n6 7 2\n")
    assert read_labels_file(f) == [[0, 8, 9], [3, 0, 9], [6, 7, 2]]
    with pytest.raises(TopologyError, match="3 label lines for 4 nodes"):
        read_labels_file(f, 4)
    f.write_text("0 x\n")
    with pytest.raises(TopologyError, match=":1: labels must be integers"):
        read_labels_file(f)


# ---- validation ---------------------------------------------------------------------------------
def _doc() -> dict:
    return {
        "version": 1,
        "nodes": [
            {"id": 0, "address": "tcp://127.0.0.1:5550", "retention": 0.4, "labels": [1, 2]},
            {"id": 1, "address": "tcp://127.0.0.1:5551", "retention": 0.2, "labels": [3]},
            {"id": 2, "address": "ipc:///tmp/x/node-2.sock", "retention": 1,
             "bind": "tcp://0.0.0.0:5555", "labels": [4, 5]},
        ],
        "edges": [[0, 1], [2, 1]],
        "meta": {"kind": "test"},
    }


def test_valid_document_parses_and_normalises():
    t = Topology.from_json_dict(_doc(), source="t.json")
    assert t.edges == [(0, 1), (1, 2)]
    assert t.node(2).retention == 1.0 and t.node(2).bind_address == "tcp://0.0.0.0:5555"
    assert t.node(1).bind_address == "tcp://127.0.0.1:5551"
    d = _doc()
    d["nodes"].reverse()  # any order in the file; kept sorted by id
    assert Topology.from_json_dict(d).ids == [0, 1, 2]
    del d["meta"]  # meta is optional
    assert Topology.from_json_dict(d).meta == {}
    for addr in ("tcp://[::1]:5550", "tcp://node-3.local:1", "tcp://*:65535"):
        d = _doc()
        d["nodes"][0]["address"] = addr
        Topology.from_json_dict(d)


def _set(path, value):
    def edit(d):
        obj = d
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = value
    return edit


def _delete(path):
    def edit(d):
        obj = d
        for k in path[:-1]:
            obj = obj[k]
        del obj[path[-1]]
    return edit


BROKEN = [
    # (edit, regex the one-line message must match)
    (_set(["extra"], 1), r"top level: unknown key 'extra'"),
    (_set(["nodes", 1, "retension"], 0.3), r"node 1 \(nodes\[1\]\): unknown key 'retension' "
                                           r"\(did you mean 'retention'\?\)"),
    (_delete(["edges"]), r"top level: missing required key 'edges'"),
    (_delete(["version"]), r"missing required key 'version'"),
    (_delete(["nodes", 1, "address"]), r"node 1 \(nodes\[1\]\): missing required key 'address'"),
    (_delete(["nodes", 0, "retention"]), r"node 0 .*missing required key 'retention'"),
    (_set(["version"], 2), r"unsupported version 2"),
    (_set(["nodes"], {}), r"key 'nodes' must be an array"),
    (_set(["nodes"], []), r"at least 1 node"),
    (_set(["edges"], "0-1"), r"key 'edges' must be an array"),
    (_set(["meta"], []), r"key 'meta' must be an object"),
    (_set(["nodes", 1], "node"), r"nodes\[1\]: expected an object"),
    (_set(["nodes", 1, "id"], "1"), r"nodes\[1\]: key 'id' must be an integer"),
    (_set(["nodes", 1, "id"], True), r"nodes\[1\]: key 'id' must be an integer"),
    (_set(["nodes", 1, "address"], 5551), r"node 1 .*key 'address' must be a string"),
    (_set(["nodes", 1, "retention"], "0.2"), r"node 1 .*key 'retention' must be a number"),
    (_set(["nodes", 1, "labels"], "1,2"), r"node 1 .*key 'labels' must be an array"),
    (_set(["nodes", 1, "bind"], 5), r"node 1 .*key 'bind' must be a string"),
    (_set(["nodes", 1, "id"], 0), r"node 0 \(nodes\[1\]\): duplicate node id, also used by "
                                  r"nodes\[0\]"),
    (_set(["nodes", 2, "id"], 5), r"ids must be exactly 0\.\.2 .*missing \{2\}, unexpected \{5\}"),
    (_set(["nodes", 1, "address"], "tcp://127.0.0.1:5550"),
     r"node 1: address 'tcp://127.0.0.1:5550' already used by node 0"),
    (_set(["nodes", 1, "address"], "127.0.0.1:5551"), r"node 1: address .* must be tcp://"),
    (_set(["nodes", 1, "address"], "tcp://127.0.0.1"), r"node 1: address .* tcp://host:port"),
    (_set(["nodes", 1, "address"], "tcp://h:0"), r"node 1: address .* port 0, outside"),
    (_set(["nodes", 1, "address"], "tcp://h:70000"), r"node 1: address .* port 70000"),
    (_set(["nodes", 1, "address"], "ipc://"), r"node 1: address 'ipc://' is not of the form"),
    (_set(["nodes", 1, "address"], "ipc://" + "x" * 200), r"node 1: address .* longer than"),
    (_set(["nodes", 2, "bind"], "udp://0.0.0.0:1"), r"node 2: bind .* must be tcp://"),
    (_set(["nodes", 1, "retention"], 0), r"node 1: retention 0.0 is not in \(0, 1\]"),
    (_set(["nodes", 1, "retention"], 1.01), r"node 1: retention 1.01 is not in \(0, 1\]"),
    (_set(["nodes", 1, "retention"], -0.5), r"node 1: retention -0.5"),
    (_set(["nodes", 0, "labels"], [1, 1]), r"node 0: labels must be distinct, 1 appears"),
    (_set(["nodes", 0, "labels"], [1, -2]), r"node 0: labels must be non-negative ints, got -2"),
    (_set(["nodes", 0, "labels"], [1, 2.0]), r"node 0: labels must be non-negative ints, got 2.0"),
    (_set(["nodes", 0, "labels"], []), r"node 0: labels is empty"),
    (_set(["edges", 1], [1, 1]), r"edges\[1\] \[1, 1\]: self loop on node 1"),
    (_set(["edges", 1], [1, 3]), r"edges\[1\] \[1, 3\]: unknown node 3"),
    (_set(["edges", 1], [1, -1]), r"edges\[1\] \[1, -1\]: unknown node -1"),
    (_set(["edges", 1], [1, 0]), r"edges\[1\] \[1, 0\]: duplicate of edges\[0\] \[0, 1\]"),
    (_set(["edges", 1], [0, 1]), r"edges\[1\] \[0, 1\]: duplicate of edges\[0\]"),
    (_set(["edges", 1], [1]), r"edges\[1\]: expected a pair of node ids"),
    (_set(["edges", 1], [1, "2"]), r"edges\[1\]: expected a pair of node ids"),
    (_set(["edges"], [[0, 1]]), r"graph is not connected: 2 components \{0, 1\} \{2\}; "
                                r"node 2 cannot reach node 0"),
]


@pytest.mark.parametrize(("edit", "match"), BROKEN)
def test_validation_errors_name_the_culprit(edit, match):
    d = copy.deepcopy(_doc())
    edit(d)
    with pytest.raises(TopologyError) as ei:
        Topology.from_json_dict(d, source="bad.json")
    msg = str(ei.value)
    assert msg.startswith("bad.json: ")
    assert "\n" not in msg
    assert isinstance(ei.value, ValueError)
    assert re.search(match, msg), msg


def test_top_level_not_object():
    with pytest.raises(TopologyError, match="top level must be a JSON object, got array"):
        Topology.from_json_dict([], source="x")


def test_validate_on_constructed_topology():
    nodes = [NodeSpec(i, f"tcp://h:{5000 + i}", 0.5) for i in range(3)]
    with pytest.raises(TopologyError, match="duplicate edge"):
        Topology(nodes, [(0, 1), (1, 0), (1, 2)]).validate("mem")
    with pytest.raises(TopologyError, match="at least 1 node"):
        Topology([], []).validate("mem")
    with pytest.raises(TopologyError, match="not connected"):
        Topology(nodes, [(0, 1)]).validate("mem")
    assert Topology(nodes, [(1, 0), (2, 1)]).validate().edges == [(0, 1), (1, 2)]


# ---- files --------------------------------------------------------------------------------------
def test_json_round_trip(tmp_path):
    t = generate("er", 12, p=0.4, seed=1, labels=[[i % 10] for i in range(12)],
                 retention_choices=[0.2, 0.7])
    f = tmp_path / "topo.json"
    save_topology(t, f)
    u = load_topology(f)
    assert u == t
    assert u.to_json_dict() == t.to_json_dict()
    doc = json.loads(f.read_text())
    assert doc["version"] == 1 and doc["edges"][0] == list(t.edges[0])
    assert set(doc["nodes"][0]) == {"id", "address", "retention", "labels"}
    assert Topology.from_json_dict(t.to_json_dict()) == t
    single = generate("complete", 1)
    save_topology(single, f)
    assert load_topology(f) == single and json.loads(f.read_text())["edges"] == []


def test_load_errors(tmp_path):
    f = tmp_path / "t.json"
    with pytest.raises(TopologyError, match="cannot read topology file"):
        load_topology(f)
    f.write_text('{\n  "version": 1,\n  "nodes": [,\n}')
    with pytest.raises(TopologyError, match=rf"{f}:3:\d+: invalid JSON"):
        load_topology(f)
    f.write_text('{"version": 1, "version": 1, "nodes": [], "edges": []}')
    with pytest.raises(TopologyError, match="duplicate key 'version'"):
        load_topology(f)
    f.write_text(json.dumps({**_doc(), "edges": [[0, 1]]}))
    with pytest.raises(TopologyError, match=rf"^{f}: graph is not connected"):
        load_topology(f)


def test_atomic_save(tmp_path, monkeypatch):
    f = tmp_path / "topo.json"
    good = generate("ring", 4)
    save_topology(good, f)
    before = f.read_text()

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(TopologyError, match="No space left"):
        save_topology(generate("ring", 5), f)
    monkeypatch.undo()
    assert f.read_text() == before  # old file intact
    assert [p.name for p in tmp_path.iterdir()] == ["topo.json"]  # no temp file left behind
    bad = Topology(good.nodes, [(0, 1)], good.meta)
    with pytest.raises(TopologyError, match="not connected"):
        save_topology(bad, f)  # refuses to write an invalid topology
    assert f.read_text() == before


# ---- mixing matrices ----------------------------------------------------------------------------
@pytest.mark.parametrize("topo", [generate("er", 15, p=0.3, seed=2), generate("star", 6),
                                  generate("ring", 7), generate("complete", 1)])
def test_metropolis_doubly_stochastic(topo):
    w = mixing_weights(topo)
    n = topo.num_nodes
    assert w.shape == (n, n)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    np.testing.assert_allclose(w.sum(axis=0), 1.0)
    np.testing.assert_allclose(w, w.T)
    assert (w >= 0).all()
    for i in range(n):  # only neighbours and self carry weight
        support = set(np.flatnonzero(w[i])) - {i}
        assert support == set(topo.neighbors(i))


def test_metropolis_values_and_uniform():
    star = generate("star", 4)  # hub degree 3, leaves degree 1
    w = mixing_weights(star, "metropolis")
    assert w[0, 1] == pytest.approx(0.25) and w[1, 1] == pytest.approx(0.75)
    assert w[0, 0] == pytest.approx(0.25)
    u = mixing_weights(star, "uniform")
    np.testing.assert_allclose(u.sum(axis=1), 1.0)
    assert u[0, 1] == pytest.approx(0.25) and u[1, 0] == pytest.approx(0.5)  # not symmetric
    with pytest.raises(ValueError, match="unknown mixing scheme"):
        mixing_weights(star, "max-degree")


# ---- CLI ----------------------------------------------------------------------------------------
def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mcepl")
    add_topology_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_generate_and_check(tmp_path, capsys):
    out = tmp_path / "t.json"
    assert _run(["topology", "generate", "--kind", "er", "--nodes", "10", "--p", "0.4",
                 "--seed", "5", "--retention", "0.3", "-o", str(out)]) == 0
    t = load_topology(out)
    assert t.retentions == [0.3] * 10 and t.meta["seed"] == 5 and t.meta["p"] == 0.4
    assert _run(["topology", "check", str(out)]) == 0
    summary = capsys.readouterr().out
    assert "10 nodes" in summary and "connected" in summary and "degree min/mean/max" in summary
    assert "retention 0.3 x10" in summary

    assert _run(["topology", "generate", "--kind", "ring", "--nodes", "3", "--retention",
                 "0.1,0.2,0.3", "--host", "10.0.0.9", "--base-port", "6000",
                 "-o", str(out)]) == 0
    t = load_topology(out)
    assert t.retentions == [0.1, 0.2, 0.3] and t.node(2).address == "tcp://10.0.0.9:6002"

    assert _run(["topology", "generate", "--kind", "star", "--nodes", "4", "--retention-choices",
                 "0.1,0.5", "--transport", "ipc", "-o", str(out)]) == 0
    t = load_topology(out)
    assert t.node(0).address.startswith("ipc://") and set(t.retentions) <= {0.1, 0.5}


@needs_ref
def test_cli_adjacency_with_labels(tmp_path):
    out = tmp_path / "paper.json"
    labels = REF / "paper-labels-c4.txt"
    assert _run(["topology", "generate", "--kind", "adjacency", "--adjacency", str(PAPER_ADJ),
                 "--labels-file", str(labels), "-o", str(out)]) == 0
    t = load_topology(out)
    assert t.num_edges == 104 and t.degrees() == PAPER_DEGREES
    assert all(len(n.labels or []) == 4 for n in t.nodes)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--kind", "ring"], "needs --nodes"),
        (["--kind", "ring", "--nodes", "4", "--p", "0.3"], "--p only applies to --kind er"),
        (["--kind", "adjacency"], "needs --adjacency"),
        (["--kind", "ring", "--nodes", "4", "--adjacency", "x.adj"], "only applies"),
        (["--kind", "ring", "--nodes", "4", "--retention", "0.3", "--retention-choices", "0.1"],
         "not both"),
        (["--kind", "ring", "--nodes", "4", "--retention", "abc"], "--retention: expected"),
        (["--kind", "ring", "--nodes", "4", "--retention", "0.1,0.2"], "2 values for 4 nodes"),
        (["--kind", "ring", "--nodes", "4", "--retention", "2"], "retention 2.0 is not in"),
        (["--kind", "ring", "--nodes", "4", "--transport", "ipc", "--host", "h"],
         "only apply to --transport tcp"),
        (["--kind", "ring", "--nodes", "0"], "at least 1"),
        (["--kind", "er", "--nodes", "30", "--p", "0.01"], "draws"),
        (["--kind", "ring", "--nodes", "4", "--labels-file", "/nonexistent/l.txt"],
         "cannot read labels file"),
    ],
)
def test_cli_generate_bad_combos(tmp_path, capsys, argv, match):
    out = tmp_path / "t.json"
    assert _run(["topology", "generate", *argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and match in err
    assert "Traceback" not in err
    assert not out.exists()


def test_cli_check_broken_file(tmp_path, capsys):
    f = tmp_path / "broken.json"
    d = _doc()
    d["nodes"][1]["retention"] = 3
    f.write_text(json.dumps(d))
    assert _run(["topology", "check", str(f)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert str(f) in captured.err and "node 1: retention 3.0" in captured.err
    f.write_text("{not json")
    assert _run(["topology", "check", str(f)]) == 2
    assert f"{f}:1:2: invalid JSON" in capsys.readouterr().err


def test_cli_topology_without_subcommand(capsys):
    assert _run(["topology"]) == 2
    assert "generate" in capsys.readouterr().err
