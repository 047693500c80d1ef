"""From a preset and the command's options to the runs an experiment is made of.

An experiment is a grid of *cells* (setting x row). Each cell has search runs (one per grid
learning rate, seed 0, `search_rounds`, a validation split of every node's training shard) and
final runs (the chosen rate, seeds 0..S-1, `rounds`, the whole training shard). With a
one-value grid there is nothing to search. Every run is an ordinary run directory under
``OUT/runs/<setting>/<row>/``: ``search-lr<lr>`` or ``final-lr<lr>-seed<s>``.

Everything here is checked before anything runs: unknown names, bad grid values, missing
reference files and configs the config schema refuses are `ExperimentError` (exit 2).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mcepl.config import Config, ConfigError, config_from_dict
from mcepl.node.data import read_label_assignment
from mcepl.registry import ALGORITHMS, DATASETS, MODELS
from mcepl.topology import PAPER_RETENTION, Topology, TopologyError, generate

from .presets import ER_SEED, PRESETS, Preset, Row, lr_grid, setting_key

DEFAULT_REFERENCE_DIR = Path("/work/shared/reference")
REFERENCE_ENV = "MCEPL_REFERENCE_DIR"
GRAPH_FILE = "paper-graph-20-nodes.adj"
DEFAULT_SEEDS = 3
DEFAULT_VAL_FRACTION = 0.2
SEARCH_SEED = 0


class ExperimentError(ValueError):
    """Bad input to `mcepl experiment`: one line naming what is wrong (and the valid choices)."""


@dataclass(frozen=True)
class Options:
    """What `mcepl experiment` was asked (None: the preset's default)."""

    preset: str
    out: Path
    reference_dir: Path | None = None
    c: tuple[int, ...] | None = None
    methods: tuple[str, ...] | None = None
    lr_grid: tuple[str, ...] = ()  # "1,0.1" for every method, or "METHOD=1,0.1"
    seeds: int = DEFAULT_SEEDS
    dataset: str | None = None
    model: str | None = None
    data_dir: str | None = None
    rounds: int | None = None
    search_rounds: int | None = None
    eval_every: int | None = None
    val_fraction: float = DEFAULT_VAL_FRACTION
    device: str | None = None
    jobs: int = 1
    networked: bool = False


@dataclass(frozen=True)
class Setting:
    """One column of the preset's table: label skew c on one graph."""

    key: str
    c: int
    graph: str
    labels: list[list[int]]
    edges_topology: Topology  # the graph with retention 1 (rows set their own retention)


@dataclass
class RunSpec:
    """One run of the experiment: its directory, config and topology."""

    setting: str
    row: str
    kind: str  # "search" or "final"
    lr: float
    seed: int
    path: Path
    config: Config
    topology: Topology
    snapshots: str  # mask snapshots: "off", "eval", "final"

    @property
    def name(self) -> str:
        what = f"search lr={lr_text(self.lr)}" if self.kind == "search" \
            else f"final lr={lr_text(self.lr)} seed {self.seed}"
        return f"{self.setting} | {self.row} | {what}"

    @property
    def node_rounds(self) -> int:
        return self.topology.num_nodes * self.config.run.rounds


@dataclass
class Cell:
    """One (setting, row) of the table: its grid, search runs, and how to make its finals."""

    setting: Setting
    row: Row
    grid: tuple[float, ...]
    searches: list[RunSpec] = field(default_factory=list)
    plan: Plan | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.setting.key, self.row.label

    def finals(self, lr: float) -> list[RunSpec]:
        assert self.plan is not None
        return [self.plan.spec(self, "final", lr, s) for s in range(self.plan.opts.seeds)]


@dataclass
class Plan:
    opts: Options
    preset: Preset
    settings: list[Setting]
    rows: list[Row]
    cells: list[Cell]
    rounds: int
    search_rounds: int
    eval_every: int
    base: dict[str, Any]  # the config sections every run shares

    @property
    def search_eval_every(self) -> int:
        """Search runs evaluate (validation and test) at rounds 0, 1/4, 1/2, 3/4 and the end
        only: the choice needs the final validation accuracy (and the best, for ties), and
        evaluating every node's whole test set costs about as much as training."""
        return max(self.eval_every, self.search_rounds // 4)

    @property
    def total_runs(self) -> int:
        return sum((len(c.grid) if len(c.grid) > 1 else 0) + self.opts.seeds for c in self.cells)

    def spec(self, cell: Cell, kind: str, lr: float, seed: int) -> RunSpec:
        row, setting = cell.row, cell.setting
        d = {k: dict(v) for k, v in self.base.items()}
        d["algorithm"] = {"name": row.method, "lr": lr, **dict(row.params)}
        d["run"]["seed"] = seed
        d["run"]["rounds"] = self.search_rounds if kind == "search" else self.rounds
        if kind == "search":
            d["data"]["val_fraction"] = self.opts.val_fraction
            d["run"]["eval_every"] = self.search_eval_every
        where = f"{self.preset.name} {setting.key} {row.label}"
        try:
            cfg = config_from_dict(d, source=f"<experiment {where}>")
        except ConfigError as exc:
            raise ExperimentError(str(exc)) from None
        name = f"search-lr{lr_text(lr)}" if kind == "search" \
            else f"final-lr{lr_text(lr)}-seed{seed}"
        path = self.opts.out / "runs" / slug(setting.key) / slug(row.label) / name
        snapshots = "off" if kind == "search" or row.method not in MASKED else row.snapshots
        return RunSpec(setting.key, row.label, kind, lr, seed, path, cfg,
                       row_topology(self.preset, setting, row), snapshots)


MASKED = ("mcepl", "ind-mask", "ind-weipru", "avr-weipru", "par-weipru", "dispfl",
          "lottery-dsgd")
"""Methods whose models are masks (their final runs keep mask snapshots)."""


def lr_text(lr: float) -> str:
    return f"{lr:g}"


def slug(text: str) -> str:
    """A directory name for a setting or row label: "c=4, er:0.3" -> "c4-er0.3"."""
    s = re.sub(r"[=:]", "", text.lower())
    s = re.sub(r"[^a-z0-9.]+", "-", s)
    return s.strip("-") or "x"


# ---------------------------------------------------------------- options -> plan
def build_plan(opts: Options) -> Plan:
    """The experiment's cells and search runs, every config validated; ExperimentError on bad
    input."""
    preset = PRESETS.get(opts.preset)
    if preset is None:
        raise ExperimentError(f"unknown preset {opts.preset!r}; valid presets: "
                              f"{', '.join(PRESETS)}")
    if opts.seeds < 1:
        raise ExperimentError(f"--seeds must be >= 1, got {opts.seeds}")
    if opts.jobs < 1:
        raise ExperimentError(f"--jobs must be >= 1, got {opts.jobs}")
    for flag, v in (("--rounds", opts.rounds), ("--search-rounds", opts.search_rounds),
                    ("--eval-every", opts.eval_every)):
        if v is not None and v < 1:
            raise ExperimentError(f"{flag} must be >= 1, got {v}")
    if not 0.0 < opts.val_fraction < 1.0:
        raise ExperimentError(f"--val-fraction must be in (0, 1), got {opts.val_fraction:g}")
    if opts.dataset is not None and opts.dataset not in DATASETS:
        raise ExperimentError(f"unknown data set {opts.dataset!r}; valid: {', '.join(DATASETS)}")
    if opts.model is not None and opts.model not in MODELS:
        raise ExperimentError(f"unknown model {opts.model!r}; valid: {', '.join(MODELS)}")
    rows = select_rows(preset, opts.methods)
    grids = parse_lr_grids(opts.lr_grid, rows)
    c_values = select_c(preset, opts.c)
    ref = reference_dir(opts.reference_dir) if preset.needs_reference else None
    settings = [make_setting(preset, c, g, ref) for c in c_values for g in preset.graphs]
    rounds = opts.rounds or preset.rounds
    base = {
        "data": {"train_fraction": preset.train_fraction, "partition": "labels",
                 **({"dataset": opts.dataset} if opts.dataset else {}),
                 **({"root": opts.data_dir, "download": False} if opts.data_dir else {})},
        "model": {**({"name": opts.model} if opts.model else {}),  # default: the project's
                  **({"weight_init": preset.weight_init} if preset.weight_init else {})},
        "run": {"eval_every": opts.eval_every or preset.eval_every, "checkpoint": False,
                **({"device": opts.device} if opts.device else {})},
    }
    plan = Plan(opts, preset, settings, rows, [], rounds, opts.search_rounds or rounds,
                base["run"]["eval_every"], base)
    for s in settings:
        for row in rows:
            cell = Cell(s, row, grids.get(row.label, grids.get(row.method, lr_grid(row.method))),
                        plan=plan)
            if len(cell.grid) > 1:
                cell.searches = [plan.spec(cell, "search", lr, SEARCH_SEED) for lr in cell.grid]
            plan.cells.append(cell)
    for cell in plan.cells:  # every final config is valid too (the lr is the only unknown)
        plan.spec(cell, "final", cell.grid[0], 0)
    return plan


def select_rows(preset: Preset, methods: Sequence[str] | None) -> list[Row]:
    """The preset's rows, or those named (by row label or method name) in `methods`."""
    if not methods:
        return list(preset.rows)
    valid = list(dict.fromkeys([r.method for r in preset.rows] + [r.label for r in preset.rows]))
    unknown = [m for m in methods if m not in valid]
    if unknown:
        raise ExperimentError(f"unknown method {unknown[0]!r} for preset {preset.name}; valid: "
                              f"{', '.join(valid)}")
    return [r for r in preset.rows if r.method in methods or r.label in methods]


def select_c(preset: Preset, c: Sequence[int] | None) -> tuple[int, ...]:
    if not c:
        return preset.c_values
    if not preset.c_flag:
        raise ExperimentError(f"--c does not apply to preset {preset.name} (its labels are "
                              f"fixed: c = {preset.c_values[0]})")
    bad = [v for v in c if v not in (3, 4, 5)]
    if bad:
        raise ExperimentError(f"unknown c {bad[0]}; valid: 3, 4, 5 (the paper's label files)")
    return tuple(dict.fromkeys(c))


def parse_lr_grids(specs: Sequence[str], rows: Sequence[Row]) -> dict[str, tuple[float, ...]]:
    """`--lr-grid` values: "1,0.1" (every method) or "METHOD=1,0.1" (one method or row label);
    later ones win. Returns method-or-label -> grid ("*" entries expanded to every row)."""
    names = list(dict.fromkeys([r.method for r in rows] + [r.label for r in rows]))
    out: dict[str, tuple[float, ...]] = {}
    for spec in specs:
        who, sep, values = spec.rpartition("=")
        if sep and who not in names:
            raise ExperimentError(f"--lr-grid {spec!r}: unknown method {who!r}; valid: "
                                  f"{', '.join(names)}")
        grid = []
        for text in values.split(","):
            try:
                lr = float(text)
            except ValueError:
                lr = math.nan
            if not (math.isfinite(lr) and lr > 0):
                raise ExperimentError(f"--lr-grid: {text.strip()!r} is not a learning rate; "
                                      "valid: positive numbers, e.g. 10,1,0.1,0.01,0.001")
            grid.append(lr)
        grid = list(dict.fromkeys(grid))
        if sep:
            for r in rows:  # a method's grid replaces what an earlier "every method" gave it
                if who == r.method:
                    out.pop(r.label, None)
            out[who] = tuple(grid)
        else:
            for r in rows:
                out[r.label] = tuple(grid)
    return out


def reference_dir(given: Path | None) -> Path:
    """The directory with the paper's graph and label files: --reference-dir, else
    $MCEPL_REFERENCE_DIR, else DEFAULT_REFERENCE_DIR; ExperimentError when it lacks them."""
    where = given or (Path(os.environ[REFERENCE_ENV]) if os.environ.get(REFERENCE_ENV)
                      else DEFAULT_REFERENCE_DIR)
    need = [GRAPH_FILE, *(f"paper-labels-c{c}.txt" for c in (3, 4, 5))]
    missing = [f for f in need if not (where / f).is_file()]
    if missing:
        how = "--reference-dir" if given else f"--reference-dir (or ${REFERENCE_ENV})"
        raise ExperimentError(f"the paper's reference files are not in {where} (missing "
                              f"{', '.join(missing)}): pass {how} with the directory holding "
                              f"{GRAPH_FILE} and paper-labels-c3/4/5.txt")
    return where


def make_setting(preset: Preset, c: int, graph: str, ref: Path | None) -> Setting:
    """The graph (retention 1 everywhere) and label assignment of one column."""
    try:
        if graph == "paper":
            assert ref is not None
            topo = generate("adjacency", None, adjacency=ref / GRAPH_FILE, seed=ER_SEED)
        else:
            n = topo_nodes(preset, ref)
            if graph.startswith("er:"):
                topo = generate("er", n, p=float(graph[3:]), seed=ER_SEED)
            else:
                topo = generate(graph, n, seed=ER_SEED)
        if preset.labels is not None:
            labels = [list(v) for v in preset.labels]
        else:
            assert ref is not None
            labels = read_label_assignment(ref / f"paper-labels-c{c}.txt",
                                           num_nodes=topo.num_nodes)
    except (TopologyError, ValueError) as exc:
        raise ExperimentError(f"{preset.name}: {exc}") from None
    topo = replace(topo, nodes=[replace(n, retention=1.0) for n in topo.nodes])
    return Setting(setting_key(c, graph, preset), c, graph, labels, topo)


def topo_nodes(preset: Preset, ref: Path | None) -> int:
    """Node count of the generated graphs: the paper graph's (20), or the preset's labels."""
    if preset.labels is not None:
        return len(preset.labels)
    assert ref is not None
    from mcepl.topology.generators import read_adjacency

    return read_adjacency(ref / GRAPH_FILE)[0]


def retention_of(preset: Preset, row: Row, n: int) -> list[float]:
    spec = row.retention if row.retention is not None else preset.retention
    if spec == "paper":
        return [PAPER_RETENTION[i % len(PAPER_RETENTION)] for i in range(n)]
    if isinstance(spec, tuple):
        if len(spec) != n:
            raise ExperimentError(f"{preset.name} {row.label}: {len(spec)} retentions for "
                                  f"{n} nodes")
        return [float(v) for v in spec]
    return [float(spec)] * n  # type: ignore[arg-type]


def row_topology(preset: Preset, setting: Setting, row: Row) -> Topology:
    """The setting's graph with the row's retentions and the setting's labels (a star at node 0
    when the row's algorithm needs one, e.g. fedavg)."""
    base = setting.edges_topology
    n = base.num_nodes
    rets = retention_of(preset, row, n)
    kind = getattr(ALGORITHMS[row.method], "required_topology", None)
    if kind:
        return generate(kind, n, seed=ER_SEED, retention=rets, labels=setting.labels)
    nodes = [replace(nd, retention=r, labels=list(lab))
             for nd, r, lab in zip(base.nodes, rets, setting.labels, strict=True)]
    return replace(base, nodes=nodes).validate(f"<{preset.name} {setting.key}>")


def fingerprint(plan: Plan) -> dict[str, Any]:
    """What makes two invocations the same experiment (seeds, grids, methods and jobs may
    change between them: each run's directory name says its lr and seed)."""
    o = plan.opts
    return {"preset": plan.preset.name, "dataset": plan.base["data"].get("dataset"),
            "model": plan.base["model"].get("name"), "rounds": plan.rounds,
            "search_rounds": plan.search_rounds, "eval_every": plan.eval_every,
            "val_fraction": o.val_fraction, "data_dir": o.data_dir,
            "device": o.device}
