"""Compare MCE-PL, ind-mask and the paper's baselines: a thin call of `mcepl experiment`.

`mcepl experiment` does the comparison properly (the paper's graph and labels, Table I's
uniform r with the dense methods against Table II's retention vector with the pruning methods,
a learning-rate search per method on a validation split, seeds, the paper's numbers beside ours
and a verdict on each of its orderings). This script only gives it quicker defaults: the preset
`table2` (or the one named first), c = 4, the small CNN, one seed, `--out runs/compare-<preset>`.
Every `mcepl experiment` flag passes through and overrides them:

    python benchmarks/compare_baselines.py                       # table2, c = 4, small CNN
    python benchmarks/compare_baselines.py table1 --c 3 --rounds 300 --jobs 2
    python benchmarks/compare_baselines.py --plan                # list the runs only
"""

from __future__ import annotations

import sys

from mcepl.launcher.cli import main as mcepl


def command(argv: list[str]) -> list[str]:
    """`mcepl experiment` arguments: the preset (default table2), our defaults unless given."""
    argv = list(argv)
    preset = argv.pop(0) if argv and not argv[0].startswith("-") else "table2"
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    defaults = [("--model", "small-cnn"), ("--seeds", "1"), ("--out", f"runs/compare-{preset}")]
    if preset in ("table1", "table2"):
        defaults.insert(0, ("--c", "4"))
    extra = [x for flag, value in defaults if flag not in given for x in (flag, value)]
    return ["experiment", preset, *extra, *argv]


if __name__ == "__main__":
    sys.exit(mcepl(command(sys.argv[1:])))
