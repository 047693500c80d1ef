"""Shared fixtures: a tiny, learnable Fashion-MNIST look-alike and a config maker for it.

Fixtures (names are stable; other test modules rely on them):

``tiny_data_dir`` (session scope) -> ``pathlib.Path``
    A directory holding the four official Fashion-MNIST IDX files, gzip'd, under their official
    names (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
    ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``; magic 2051 for images of
    N x 28 x 28 uint8, 2049 for labels). :data:`TRAIN_PER_CLASS` training and
    :data:`TEST_PER_CLASS` test images per class, 10 classes, generated deterministically with
    numpy: each class is a fixed random template plus noise, so the classes are learnable.
    Images are interleaved by class (label ``i % 10``). Pass it as ``data.root`` (with
    ``data.download = false``); ``load_dataset("fashion-mnist", root=tiny_data_dir,
    download=False)`` finds it first.

``tiny_cfg`` -> ``Callable[..., Config]``
    ``tiny_cfg(**sections)`` builds a validated :class:`mcepl.config.Config` through
    ``config_from_dict``, starting from :func:`tiny_cfg_dict` (data.root = ``tiny_data_dir``,
    data.download = false, model small-cnn, algorithm mcepl with ``batch_size = 16``,
    run.rounds 3, run.eval_every 1, run.seed 0) and merging nested-dict overrides, e.g.
    ``tiny_cfg(algorithm={"name": "ind-mask", "lr": 0.5}, run={"rounds": 2, "seed": 3})``.
    A positional dict ``tiny_cfg({"run": {"rounds": 2}})`` works too. When the overrides pick
    another algorithm, ``batch_size = 16`` is kept only if that algorithm's ``Params`` has a
    ``batch_size`` field. A value of ``None`` in the overrides removes the key (default applies).
"""

from __future__ import annotations

import copy
import dataclasses
import gzip
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mcepl.node.plugins  # noqa: F401 - fills the registries the config validates against
from mcepl.config import Config, config_from_dict
from mcepl.node.data.cache import CACHE_ENV

REPO = Path(__file__).resolve().parent.parent
DOCKER_E2E = "test_docker_e2e.py"
#: the background image build started at collection (see pytest_collection_modifyitems)
DOCKER_PREP: pytest.StashKey[tuple[subprocess.Popen, Path]] = pytest.StashKey()

NUM_CLASSES = 10
TRAIN_PER_CLASS = 60
TEST_PER_CLASS = 20
TINY_BATCH_SIZE = 16
IMAGE_FILES = {"train": "train-images-idx3-ubyte.gz", "test": "t10k-images-idx3-ubyte.gz"}
LABEL_FILES = {"train": "train-labels-idx1-ubyte.gz", "test": "t10k-labels-idx1-ubyte.gz"}


def _idx_images(x: np.ndarray) -> bytes:
    assert x.dtype == np.uint8 and x.ndim == 3
    return struct.pack(">IIII", 2051, *x.shape) + x.tobytes()


def _idx_labels(y: np.ndarray) -> bytes:
    assert y.dtype == np.uint8 and y.ndim == 1
    return struct.pack(">II", 2049, len(y)) + y.tobytes()


def make_tiny_arrays(seed: int = 1234) -> dict[str, np.ndarray]:
    """The tiny data set as arrays: train/test images (N, 28, 28) uint8 and labels uint8."""
    rng = np.random.default_rng(seed)
    # Class templates: smooth-ish random patterns in [0, 255], far apart from each other.
    templates = rng.uniform(0.0, 255.0, size=(NUM_CLASSES, 28, 28))
    out: dict[str, np.ndarray] = {}
    for split, per_class in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        n = per_class * NUM_CLASSES
        y = (np.arange(n) % NUM_CLASSES).astype(np.uint8)
        noise = rng.normal(0.0, 40.0, size=(n, 28, 28))
        x = np.clip(templates[y] + noise, 0, 255).round().astype(np.uint8)
        out[f"{split}_x"], out[f"{split}_y"] = x, y
    return out


def write_tiny_fashion_mnist(d: Path, seed: int = 1234) -> Path:
    """Write the four gzip'd IDX files into `d` (created if needed); return `d`."""
    d.mkdir(parents=True, exist_ok=True)
    arrays = make_tiny_arrays(seed)
    for split in ("train", "test"):
        # mtime=0: byte-identical files on every run
        (d / IMAGE_FILES[split]).write_bytes(
            gzip.compress(_idx_images(arrays[f"{split}_x"]), mtime=0))
        (d / LABEL_FILES[split]).write_bytes(
            gzip.compress(_idx_labels(arrays[f"{split}_y"]), mtime=0))
    return d


@pytest.fixture(scope="session", autouse=True)
def _private_data_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Tests decode data sets into their own cache (``MCEPL_CACHE_DIR``, inherited by node
    processes), never into the user's ~/.cache."""
    path = tmp_path_factory.mktemp("mcepl-cache")
    old = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(path)
    yield path
    if old is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = old


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory with a tiny, learnable Fashion-MNIST-format data set (see module docstring)."""
    return write_tiny_fashion_mnist(tmp_path_factory.mktemp("tiny-fashion-mnist"))


def tiny_cfg_dict(data_root: Path | str) -> dict[str, Any]:
    """The base config dict of `tiny_cfg` (before overrides)."""
    return {
        "data": {"dataset": "fashion-mnist", "root": str(data_root), "download": False},
        "model": {"name": "small-cnn"},
        "algorithm": {"name": "mcepl", "batch_size": TINY_BATCH_SIZE},
        "run": {"rounds": 3, "eval_every": 1, "seed": 0},
    }


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, val in over.items():
        if isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], val)
        elif val is None:
            out.pop(key, None)
        else:
            out[key] = copy.deepcopy(val)
    return out


def _has_field(algo_name: str, key: str) -> bool:
    from mcepl.node.algorithms import ALGORITHMS

    cls = ALGORITHMS.get(algo_name)
    if cls is None or not dataclasses.is_dataclass(cls.Params):
        return False
    return key in {f.name for f in dataclasses.fields(cls.Params)}


@pytest.fixture
def tiny_cfg(tiny_data_dir: Path) -> Callable[..., Config]:
    """A function building a Config on the tiny data set; nested-dict overrides merge in."""

    def make(overrides: dict[str, Any] | None = None, **sections: dict[str, Any]) -> Config:
        d = tiny_cfg_dict(tiny_data_dir)
        algo_over = {**(overrides or {}).get("algorithm", {}), **sections.get("algorithm", {})}
        name = algo_over.get("name", "mcepl")
        if name != "mcepl" and not _has_field(name, "batch_size"):
            d["algorithm"].pop("batch_size")
        d["algorithm"]["name"] = name
        d = _merge(d, overrides or {})
        d = _merge(d, sections)
        return config_from_dict(d, source="<tiny_cfg>")

    return make


# --------------------------------------------------------------------------- the Docker engine


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The real-engine tests (tests/test_docker_e2e.py) run last; when other tests come before
    them, the engine is started and the image's layers built in the background meanwhile
    (docker/warm-cache.sh: minutes of network and disk the first time), so one `pytest` does it
    all. MCEPL_DOCKER_PREP=0 turns the background build off (the test then builds itself)."""
    docker = [i for i in items if i.path.name == DOCKER_E2E]
    if not docker:
        return
    items[:] = [i for i in items if i.path.name != DOCKER_E2E] + docker
    if (len(items) == len(docker) or os.environ.get("MCEPL_DOCKER_PREP", "1") == "0"
            or not hasattr(os, "geteuid") or os.geteuid() != 0
            or shutil.which("docker") is None or shutil.which("bash") is None):
        return
    log = Path(tempfile.mkstemp(prefix="mcepl-docker-prep-", suffix=".log")[1])
    with open(log, "wb") as out:
        proc = subprocess.Popen(["bash", str(REPO / "docker" / "warm-cache.sh")], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    config.stash[DOCKER_PREP] = (proc, log)


def wait_docker_prep(config: pytest.Config, timeout: float = 1800) -> str | None:
    """Wait for the background preparation, if one was started; its outcome in one line."""
    started = config.stash.get(DOCKER_PREP, None)
    if started is None:
        return None
    proc, log = started
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(proc)
        return f"docker preparation still running after {timeout:.0f} s; stopped it"
    lines = log.read_text(errors="replace").splitlines()
    return lines[-1] if rc == 0 and lines else f"docker preparation failed (exit {rc}): " + \
        " | ".join(lines[-5:])


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            pass


def pytest_unconfigure(config: pytest.Config) -> None:
    """A session that ends before the engine tests (-x, Ctrl-C) stops the background build."""
    started = config.stash.get(DOCKER_PREP, None)
    if started is not None:
        _stop(started[0])
