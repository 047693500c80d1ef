"""The user's own data set: ``[data] dataset = "package.module:loader"``.

``loader(root)`` returns ``(x_train, y_train, x_test, y_test, num_classes)``: numpy arrays or
torch tensors, x shaped N x C x H x W (any sample shape with at least one dimension works: the
model factory is given it), y holding integer labels in ``0..num_classes-1``. ``root`` is
``data.root``, else ``$MCEPL_DATA`` (what containers mount at /data), else None.

What comes back is checked and put in the form of the built-in data sets (`Dataset`), so
partitioning, shards and evaluation treat it exactly like them:

- **uint8 inputs** are taken as 0..255 pixels and normalised like the built-ins, per batch:
  ``x / 127.5 - 1`` (the paper's ``Normalize(0.5, 0.5)``);
- **floating-point inputs** (float16/32/64) are used as given, as float32: the loader has
  normalised them the way it wants (they must be finite);
- any other dtype (int, bool) is an error: whether 0..255 or 0..1 is meant cannot be guessed.

Labels become int64. Every problem is a `UserCodeError`, one line naming the loader.

The **digest** (`arrays_digest`) is a SHA-256 over num_classes and every array's dtype, shape
and bytes after that conversion: the same data give the same digest on any machine, and any
change to the data gives another. The launcher computes it once, before starting the nodes, and
hands it to every node (``mcepl node --data-digest``), which refuses data that differ (a loader
that is not deterministic, or files changed while the run started).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mcepl.registry import DATASETS
from mcepl.userload import UserCodeError, describe_exception

from .datasets import ENV_VAR, Dataset

__all__ = ["arrays_digest", "load_user_dataset", "loader_root", "to_dataset"]

ARRAY_NAMES = ("x_train", "y_train", "x_test", "y_test")


def loader_root(root: str | os.PathLike[str] | None) -> str | None:
    """What the loader is given: data.root, else $MCEPL_DATA, else None."""
    if root is not None:
        return os.path.expanduser(str(root))
    env = os.environ.get(ENV_VAR)
    return env if env else None


def _as_array(spec: str, name: str, value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise UserCodeError(f"data set loader {spec!r}: {name} is a {type(value).__name__}; "
                        f"expected a numpy array or a torch tensor")


def _inputs(spec: str, name: str, x: np.ndarray) -> np.ndarray:
    if x.ndim < 2:
        raise UserCodeError(f"data set loader {spec!r}: {name} has shape {x.shape}; expected N "
                            f"samples of shape C x H x W (N x C x H x W)")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype.kind == "f":
        out = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(out).all():
            raise UserCodeError(f"data set loader {spec!r}: {name} holds NaN or infinite values")
        return out
    raise UserCodeError(f"data set loader {spec!r}: {name} has dtype {x.dtype}; inputs must be "
                        f"uint8 (0..255 pixels, normalised like the built-ins) or floating "
                        f"point (used as given)")


def _labels(spec: str, name: str, y: np.ndarray, num_classes: int) -> np.ndarray:
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise UserCodeError(f"data set loader {spec!r}: {name} must be a 1-D array of integer "
                            f"labels, got {y.dtype} of shape {y.shape}")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise UserCodeError(f"data set loader {spec!r}: {name} holds labels "
                            f"{int(y.min())}..{int(y.max())}, outside 0..{num_classes - 1} "
                            f"(num_classes = {num_classes})")
    return np.ascontiguousarray(y, dtype=np.int64)


def to_dataset(spec: str, result: Any) -> Dataset:
    """Check what a loader returned and convert it to a `Dataset` (with its digest)."""
    if not isinstance(result, (tuple, list)) or len(result) != 5:
        got = (f"a {type(result).__name__} of {len(result)}" if isinstance(result, (tuple, list))
               else f"a {type(result).__name__}")
        raise UserCodeError(f"data set loader {spec!r} returned {got}; expected a tuple "
                            f"(x_train, y_train, x_test, y_test, num_classes)")
    *arrays, num_classes = result
    if isinstance(num_classes, (np.integer, torch.Tensor)) and np.ndim(num_classes) == 0:
        num_classes = int(num_classes)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserCodeError(f"data set loader {spec!r}: num_classes must be a positive int, got "
                            f"{num_classes!r}")
    a = {n: _as_array(spec, n, v) for n, v in zip(ARRAY_NAMES, arrays, strict=True)}
    x_train, x_test = _inputs(spec, "x_train", a["x_train"]), _inputs(spec, "x_test", a["x_test"])
    y_train = _labels(spec, "y_train", a["y_train"], num_classes)
    y_test = _labels(spec, "y_test", a["y_test"], num_classes)
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if len(x) != len(y):
            raise UserCodeError(f"data set loader {spec!r}: x_{split} has {len(x)} samples but "
                                f"y_{split} has {len(y)} labels")
    if len(x_train) == 0:
        raise UserCodeError(f"data set loader {spec!r}: x_train is empty")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise UserCodeError(f"data set loader {spec!r}: x_train samples have shape "
                            f"{x_train.shape[1:]} but x_test samples {x_test.shape[1:]}")
    if x_train.dtype != x_test.dtype:
        raise UserCodeError(f"data set loader {spec!r}: x_train is {x_train.dtype} but x_test is "
                            f"{x_test.dtype}; give both as uint8 or both as floating point")
    arrays_out = {"train_x": x_train, "train_y": y_train, "test_x": x_test, "test_y": y_test}
    return Dataset(name=spec, num_classes=num_classes,
                   input_shape=tuple(int(v) for v in x_train.shape[1:]),  # type: ignore[arg-type]
                   digest=arrays_digest(arrays_out, num_classes), **arrays_out)


def arrays_digest(arrays: dict[str, np.ndarray], num_classes: int) -> str:
    """SHA-256 (hex) of num_classes and each array's name, dtype, shape and bytes."""
    h = hashlib.sha256(f"mcepl-user-data-v1 classes={num_classes}\n".encode())
    for name in ("train_x", "train_y", "test_x", "test_y"):
        arr = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{arr.dtype.str}:{arr.shape}\n".encode())
        h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def load_user_dataset(spec: str, root: str | os.PathLike[str] | None = None,
                      python_path: Sequence[str] = (),
                      expected_digest: str | None = None) -> Dataset:
    """Import and call the loader, check and convert its arrays; with `expected_digest`, refuse
    arrays whose digest differs (UserCodeError naming both)."""
    loader = DATASETS.lookup(spec, python_path)
    where = loader_root(root)
    try:
        result = loader(where)
    except Exception as exc:  # noqa: BLE001 - the user's code: one line, exit 2
        raise UserCodeError(f"data set loader {spec!r} raised {describe_exception(exc)} when "
                            f"called as loader({where!r})") from None
    ds = to_dataset(spec, result)
    check_digest(ds, expected_digest)
    return ds


def check_digest(ds: Dataset, expected: str | None) -> None:
    if expected is not None and ds.digest is not None and \
            not ds.digest.startswith(expected.lower()):
        raise UserCodeError(f"data set {ds.name!r}: the loader returned other data here (digest "
                            f"{ds.digest[:16]}) than the launcher saw ({expected[:16]}): is the "
                            f"loader deterministic, and did its files change while the run "
                            f"started?")
