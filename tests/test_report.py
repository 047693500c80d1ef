"""`mcepl report`: per-run tables, plots and report.md; comparison of several runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mcepl.launcher.cli import main
from mcepl.launcher.inprocess import run_inprocess_to_dir
from mcepl.launcher.report import bytes_per_node, summarize, write_report
from mcepl.topology import generate

RUN_FILES = ("summary.json", "report.md", "bytes_per_node.csv", "bytes_per_node.md",
             "accuracy_per_round.csv", "accuracy.png", "accuracy_vs_bytes.png")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory, tiny_data_dir: Path) -> list[Path]:
    from conftest import tiny_cfg_dict

    from mcepl.config import config_from_dict

    root = tmp_path_factory.mktemp("runs")
    topo = generate("ring", 3, retention=[0.1, 0.3, 0.2], base_port=25000)
    out = []
    for codec in ("raw", "entropy"):
        d = tiny_cfg_dict(tiny_data_dir)
        d["run"].update({"rounds": 2, "codec": codec})
        run_inprocess_to_dir(config_from_dict(d), topo, root / codec, quiet=True)
        out.append(root / codec)
    return out


def test_run_directory_gets_tables_plots_and_markdown(two_runs: list[Path]) -> None:
    raw, ent = two_runs
    for d in two_runs:
        for name in RUN_FILES:
            assert (d / name).stat().st_size > 0, (d, name)
    s = json.loads((ent / "summary.json").read_text())
    assert s["codec"] == "entropy" and s["driver"] == "inprocess"
    assert s["bits_per_entry"] < 0.9
    assert set(s["bytes_per_node"]) == {"0", "1", "2"}
    assert s["bytes_by_kind"]["data"]["sent"] == s["bytes_sent_total"]
    assert sum(v["data"] for v in s["bytes_per_link"].values()) == s["bytes_sent_total"]
    assert set(s["bytes_per_link"]) == {"0->1", "0->2", "1->0", "1->2", "2->0", "2->1"}
    rows = list(csv.DictReader(open(ent / "bytes_per_node.csv")))
    assert [r["node"] for r in rows] == ["0", "1", "2"]
    assert sum(int(r["data_sent"]) for r in rows) == s["bytes_sent_total"]
    acc = list(csv.DictReader(open(ent / "accuracy_per_round.csv")))
    assert [int(r["round"]) for r in acc] == [0, 1, 2]
    assert int(acc[-1]["cumulative_bytes_sent"]) == s["bytes_sent_total"]
    md = (ent / "report.md").read_text()
    assert "bits per entry" in md and "| **all** |" in md and "accuracy_vs_bytes.png" in md
    raw_s = json.loads((raw / "summary.json").read_text())
    assert raw_s["bytes_sent_total"] > s["bytes_sent_total"]


def test_report_command_compares_runs(two_runs: list[Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    assert main(["report", *map(str, two_runs), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "bits per entry" in text and "report.md" in text
    for name in ("accuracy.png", "accuracy_vs_bytes.png", "comparison.csv", "report.md"):
        assert (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(out / "comparison.csv")))
    assert [r["codec"] for r in rows] == ["raw", "entropy"]
    assert "mcepl/entropy" in (out / "report.md").read_text()
    # re-reporting keeps what only the launcher knew
    s = json.loads((two_runs[0] / "summary.json").read_text())
    assert s["driver"] == "inprocess" and s["status"] == "ok"


def test_old_records_without_the_new_fields(tmp_path: Path) -> None:
    recs = [{"round": k, "node": i, "bytes_sent": 10 * k, "bytes_received": 10 * k,
             **({"test_acc": 0.5} if k == 1 else {})} for k in range(2) for i in range(2)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    s = write_report(tmp_path)
    assert s["bits_per_entry"] is None and s["bytes_per_link"] == {}
    assert bytes_per_node(recs)[0]["data_sent"] == 10
    assert summarize(recs)["bytes_by_kind"]["control"]["sent"] == 0
    for name in RUN_FILES:
        assert (tmp_path / name).exists(), name
