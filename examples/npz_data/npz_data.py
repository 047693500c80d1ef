"""Your own data set as two .npz files, for mcepl: ``[data] dataset = "npz_data:load"``.

``load(root)`` reads ``root/train.npz`` and ``root/test.npz`` (arrays ``x``: N x C x H x W,
``y``: integer labels) and returns ``(x_train, y_train, x_test, y_test, num_classes)``. ``root``
is ``data.root`` (or ``--data-dir``), else ``$MCEPL_DATA``.

uint8 inputs would be normalised by mcepl like the built-in image sets (x / 127.5 - 1); these are
float, so mcepl uses them as given: the loader standardises them with the training set's mean
and standard deviation per channel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def load(root: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    d = Path(root) if root else Path(".")
    with np.load(d / "train.npz") as train, np.load(d / "test.npz") as test:
        x_train, y_train = train["x"].astype(np.float32), train["y"].astype(np.int64)
        x_test, y_test = test["x"].astype(np.float32), test["y"].astype(np.int64)
    mean = x_train.mean(axis=(0, 2, 3), keepdims=True)
    std = x_train.std(axis=(0, 2, 3), keepdims=True) + 1e-6
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    return (x_train - mean) / std, y_train, (x_test - mean) / std, y_test, num_classes
