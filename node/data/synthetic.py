"""Synthetic data sets in the official file formats, for benchmarks and machines without them.

CIFAR-10 cannot be downloaded everywhere (not on the development machine). These files have the
official layout (``cifar-10-batches-py/data_batch_1..5`` and ``test_batch``, pickled dicts with
``b'data'`` uint8 N x 3072 and ``b'labels'``), so the normal loader reads them, cache and all.
Each class is a fixed random template plus noise: a network can learn them, which makes
accuracies meaningful (e.g. when comparing a GPU run with a CPU run), not just timings.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from .datasets import CIFAR10_BATCH_DIR, CIFAR10_TEST_BATCH, CIFAR10_TRAIN_BATCHES

__all__ = ["write_synthetic_cifar10"]


def write_synthetic_cifar10(root: str | os.PathLike[str], n_train: int = 50_000,
                            n_test: int = 10_000, seed: int = 0, noise: float = 60.0) -> Path:
    """Write CIFAR-10-format batches under ``root/cifar-10-batches-py``; returns that directory.

    ``n_train`` images are spread over the five training batches, ``n_test`` go to the test
    batch; labels cycle 0..9. The same arguments always write byte-identical files.
    """
    if n_train < 5 or n_test < 1:
        raise ValueError("need at least 5 training images (one per batch) and 1 test image")
    rng = np.random.default_rng(seed)
    templates = rng.uniform(0.0, 255.0, size=(10, 3072)).astype(np.float32)
    out = Path(root) / CIFAR10_BATCH_DIR
    out.mkdir(parents=True, exist_ok=True)
    sizes = [n_train // 5 + (1 if i < n_train % 5 else 0) for i in range(5)]
    for name, n in [*zip(CIFAR10_TRAIN_BATCHES, sizes, strict=True),
                    (CIFAR10_TEST_BATCH, n_test)]:
        labels = (np.arange(n) % 10).astype(np.int64)
        x = np.empty((n, 3072), dtype=np.uint8)
        for start in range(0, n, 2000):  # bounded temporaries
            stop = min(n, start + 2000)
            noisy = templates[labels[start:stop]] + rng.normal(0.0, noise, (stop - start, 3072))
            x[start:stop] = np.clip(noisy, 0, 255).round().astype(np.uint8)
        batch = {b"batch_label": name.encode(), b"labels": labels.tolist(), b"data": x}
        tmp = out / f".{name}.tmp"
        tmp.write_bytes(pickle.dumps(batch, protocol=4))
        os.replace(tmp, out / name)
    return out
