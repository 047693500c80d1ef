"""Write a small synthetic data set as train.npz / test.npz for the npz_data example.

    python examples/npz_data/make_npz.py /tmp/npz-demo      # then
    mcepl launch --config examples/npz_data/config.toml --data-dir /tmp/npz-demo

Ten classes of 3 x 32 x 32 float images, each a fixed random pattern plus noise (learnable, not
trivial). The same arguments always write the same arrays.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def make(out: Path, train_per_class: int = 200, test_per_class: int = 50, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    templates = rng.uniform(0.0, 1.0, size=(10, 3, 32, 32)).astype(np.float32)
    out.mkdir(parents=True, exist_ok=True)
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        y = np.arange(10 * per_class) % 10
        x = templates[y] + rng.normal(0.0, 0.35, size=(len(y), 3, 32, 32)).astype(np.float32)
        np.savez(out / f"{split}.npz", x=x.astype(np.float32), y=y.astype(np.int64))
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="directory to write train.npz and test.npz into")
    p.add_argument("--train-per-class", type=int, default=200)
    p.add_argument("--test-per-class", type=int, default=50)
    a = p.parse_args()
    print(make(a.out, a.train_per_class, a.test_per_class))
