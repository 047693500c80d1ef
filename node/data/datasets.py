"""Image data sets read with numpy only (no torchvision), strictly validated.

Two data sets are known:

* ``fashion-mnist``: the four official IDX files (gzip'd or not). It is the offline stand-in for
  CIFAR-10 on machines without internet (Debian package ``dataset-fashion-mnist`` installs them
  under ``/usr/share/datasets/fashion-mnist``).
* ``cifar10``: the official "python version" pickled batches (``cifar-10-batches-py``), either
  extracted or inside ``cifar-10-python.tar.gz``. The pickles are read with a restricted
  unpickler that can only rebuild numpy arrays, so a malicious file cannot run code.

Every reader checks what it reads (magic numbers, dimensions, exact byte counts, label ranges)
and raises :class:`DatasetFormatError` naming the file rather than returning a wrong array.

Places searched, in order, for each data set (``<sub>`` is ``fashion-mnist`` or ``cifar10``):
the ``root`` argument and ``root/<sub>``; ``$MCEPL_DATA`` and ``$MCEPL_DATA/<sub>``;
``~/.cache/mcepl/<sub>``; ``/usr/share/datasets/<sub>``. If none has the files and
``download`` is true, they are fetched from the official location into ``~/.cache/mcepl/<sub>``
and checked against the official MD5 sums.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mcepl.registry import DATASETS
from mcepl.userload import is_import_path

__all__ = [
    "CIFAR10_MD5",
    "DOWNLOAD_TIMEOUT_S",
    "Dataset",
    "DatasetError",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "FASHION_MNIST_MD5",
    "KNOWN_DATASETS",
    "LocatedDataset",
    "candidate_dirs",
    "load_cifar10",
    "load_dataset",
    "load_fashion_mnist",
    "locate_cifar10",
    "locate_dataset",
    "locate_fashion_mnist",
    "read_cifar_batch",
    "read_idx",
    "to_tensor",
]

ENV_VAR = "MCEPL_DATA"
SYSTEM_DIR = Path("/usr/share/datasets")
DOWNLOAD_TIMEOUT_S = 10.0
"""Socket timeout of each download; short, so that machines without internet fail quickly."""

FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
"""Official MD5 sums of the gzip'd files (fashion-mnist README). Only downloads are checked:
the Debian package re-normalizes the gzip headers, so its files have other sums although the
compressed data are identical."""

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_TAR = "cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_BATCH_DIR = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"

_HOW_TO_GET = {
    "fashion-mnist": (
        "install the Debian package (apt-get install dataset-fashion-mnist), or put "
        + ", ".join(f"{f}.gz" for f in FASHION_MNIST_FILES.values())
        + f" in a directory and pass it as root= or set ${ENV_VAR}, or allow download= from "
        + FASHION_MNIST_URL
    ),
    "cifar10": (
        f"download {CIFAR10_URL} (md5 {CIFAR10_MD5}) and pass its directory (the .tar.gz or "
        f"the extracted {CIFAR10_BATCH_DIR}/) as root= or set ${ENV_VAR}, or allow download="
    ),
}


class DatasetError(Exception):
    """Base class of the data set errors."""


class DatasetNotFoundError(DatasetError):
    """No searched place has the data set and it could not be downloaded."""


class DatasetFormatError(DatasetError):
    """A data file is corrupt, truncated or not in the expected format."""


@dataclass(frozen=True)
class Dataset:
    """A whole data set in memory: inputs (N, C, H, W), raw uint8 images for the built-ins
    (a user's loader may give float32, used as given), and int64 labels. `digest`: the user
    data set's `userdata.arrays_digest` (None for the built-ins)."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    digest: str | None = None


@dataclass(frozen=True)
class LocatedDataset:
    """A data set's source files, found (and checked to exist) but not yet decoded."""

    name: str
    files: tuple[Path, ...]
    decode: Callable[[], Dataset]


def to_tensor(x: np.ndarray) -> torch.Tensor:
    """uint8 images -> float32 tensor in [-1, 1] (x/127.5 - 1).

    Same mapping as the paper's ``ToTensor()`` + ``Normalize(0.5, 0.5)``: (x/255 - 0.5)/0.5.
    """
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8:
        raise TypeError(f"to_tensor expects a uint8 numpy array, got {type(x).__name__} "
                        f"{getattr(x, 'dtype', '')}")
    return torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32).div_(127.5).sub_(1.0)


# --------------------------------------------------------------------------- search places


def candidate_dirs(subdir: str, root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Directories searched for a data set, in priority order (duplicates removed). An
    explicit `root` that does not exist is an error (DatasetNotFoundError): a typo must not
    silently pick up another copy of the data."""
    dirs: list[Path] = []
    if root is not None:
        r = Path(root).expanduser()
        if not r.exists():
            raise DatasetNotFoundError(f"data directory {r} does not exist (data.root or "
                                       "--data-dir); leave it out to search the usual places")
        dirs += [r, r / subdir]
    env = os.environ.get(ENV_VAR)
    if env:
        e = Path(env).expanduser()
        dirs += [e, e / subdir]
    dirs += [_cache_dir(subdir), SYSTEM_DIR / subdir]
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def _cache_dir(subdir: str) -> Path:
    return Path.home() / ".cache" / "mcepl" / subdir


def _not_found(name: str, looked: Iterable[Path], download_note: str) -> DatasetNotFoundError:
    places = "\n".join(f"  - {p}" for p in looked)
    return DatasetNotFoundError(
        f"data set {name!r} not found. Looked in:\n{places}\n{download_note}\n"
        f"To get it: {_HOW_TO_GET[name]}."
    )


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(url: str, dest: Path, md5: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Fetch url into dest atomically; the file only appears if its MD5 sum is right."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out, 1 << 20)
        got = _md5(tmp)
        if got != md5:
            raise DatasetFormatError(f"download of {url}: MD5 {got} != expected {md5}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- IDX (MNIST format)

_IDX_DTYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _read_bytes(path: Path) -> bytes:
    """File contents, gunzipped when the name ends in .gz; gzip errors become format errors."""
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetFormatError(f"{path}: not a valid gzip file ({exc})") from exc


def read_idx(path: str | os.PathLike[str], expect_ndim: int | None = None) -> np.ndarray:
    """Parse one IDX file (optionally .gz) and check its magic, dimensions and exact length."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DatasetFormatError(f"{path}: {len(data)} bytes, too short for an IDX header")
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or type_code not in _IDX_DTYPES:
        raise DatasetFormatError(f"{path}: bad IDX magic number 0x{data[:4].hex()}")
    if expect_ndim is not None and ndim != expect_ndim:
        raise DatasetFormatError(f"{path}: IDX file has {ndim} dimensions, expected {expect_ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetFormatError(f"{path}: truncated IDX header ({len(data)} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_DTYPES[type_code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DatasetFormatError(
            f"{path}: {len(data)} bytes but header {tuple(dims)} needs exactly {expected} "
            f"({'truncated' if len(data) < expected else 'trailing data'})"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _check_labels(path: Path | str, y: np.ndarray, num_classes: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DatasetFormatError(f"{path}: labels must be a 1-D integer array, got "
                                 f"{y.dtype} of shape {y.shape}")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DatasetFormatError(f"{path}: labels must lie in 0..{num_classes - 1}, found "
                                 f"{int(y.min())}..{int(y.max())}")
    return y.astype(np.int64)


def _find_idx_set(d: Path) -> dict[str, Path] | None:
    """The four Fashion-MNIST files in d (gz preferred over uncompressed), or None."""
    found: dict[str, Path] = {}
    for key, stem in FASHION_MNIST_FILES.items():
        for name in (stem + ".gz", stem):
            if (d / name).is_file():
                found[key] = d / name
                break
        else:
            return None
    return found


def _load_idx_set(files: dict[str, Path]) -> Dataset:
    arrays: dict[str, np.ndarray] = {}
    for key in ("train", "test"):
        xp, yp = files[f"{key}_x"], files[f"{key}_y"]
        x = read_idx(xp, expect_ndim=3)
        y = read_idx(yp, expect_ndim=1)
        if x.dtype != np.uint8 or x.shape[1:] != (28, 28):
            raise DatasetFormatError(f"{xp}: expected uint8 images of 28x28, got {x.dtype} "
                                     f"{x.shape[1:]}")
        if len(x) != len(y):
            raise DatasetFormatError(f"{xp} has {len(x)} images but {yp} has {len(y)} labels")
        arrays[f"{key}_x"] = x.reshape(len(x), 1, 28, 28)
        arrays[f"{key}_y"] = _check_labels(yp, y, 10)
    return Dataset(name="fashion-mnist", num_classes=10, input_shape=(1, 28, 28), **arrays)


def locate_fashion_mnist(root: str | os.PathLike[str] | None = None,
                         download: bool = True) -> LocatedDataset:
    """The four Fashion-MNIST IDX files of the first searched place that has them all
    (downloading them into the cache directory if none has and ``download`` allows)."""
    looked = candidate_dirs("fashion-mnist", root)
    for d in looked:
        files = _find_idx_set(d)
        if files is not None:
            return _located_idx_set(files)
    cache = _cache_dir("fashion-mnist")
    if not download:
        raise _not_found("fashion-mnist", looked, "Download disabled (download=False).")
    try:
        for stem in FASHION_MNIST_FILES.values():
            name = stem + ".gz"
            if not (cache / name).is_file():
                _download(FASHION_MNIST_URL + name, cache / name, FASHION_MNIST_MD5[name])
    except (OSError, http.client.HTTPException, DatasetFormatError) as exc:
        raise _not_found("fashion-mnist", looked,
                         f"Download from {FASHION_MNIST_URL} into {cache} failed: {exc}") from exc
    files = _find_idx_set(cache)
    assert files is not None
    return _located_idx_set(files)


def _located_idx_set(files: dict[str, Path]) -> LocatedDataset:
    return LocatedDataset("fashion-mnist", tuple(files[k] for k in FASHION_MNIST_FILES),
                          lambda: _load_idx_set(files))


def load_fashion_mnist(root: str | os.PathLike[str] | None = None,
                       download: bool = True) -> Dataset:
    """Fashion-MNIST from the first searched place that has all four IDX files."""
    return locate_fashion_mnist(root, download).decode()


# --------------------------------------------------------------------------- CIFAR-10 pickles


def _numpy_attr(module: str, name: str) -> Callable[..., Any] | None:
    try:
        if module.endswith("multiarray"):
            from numpy._core import multiarray as mod  # numpy >= 2
        else:
            from numpy._core import numeric as mod
    except ImportError:  # pragma: no cover - numpy 1.x
        if module.endswith("multiarray"):
            from numpy.core import multiarray as mod  # type: ignore[no-redef]
        else:
            from numpy.core import numeric as mod  # type: ignore[no-redef]
    return getattr(mod, name, None)


_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[[], Any]] = {
    # What a pickled numpy array needs: the official (Python 2, numpy 1.x) batches use the first
    # three; the others appear when numpy 2 / Python 3 pickle an array with protocol 2..5.
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_attr("multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_attr("multiarray", "_reconstruct"),
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("numpy.core.numeric", "_frombuffer"): lambda: _numpy_attr("numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): lambda: _numpy_attr("numeric", "_frombuffer"),
    ("_codecs", "encode"): lambda: _latin1_encode,
}


def _latin1_encode(obj: str, encoding: str = "latin1") -> bytes:
    """How Python 3 protocol-2 pickles store bytes; only latin1 is accepted."""
    if not isinstance(obj, str) or encoding.lower().replace("-", "") not in ("latin1", "latin"):
        raise pickle.UnpicklingError(f"refused _codecs.encode({type(obj).__name__}, {encoding!r})")
    return obj.encode("latin1")


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can only build numpy arrays: any other global (os.system...) is refused."""

    def find_class(self, module: str, name: str) -> Any:
        factory = _ALLOWED_GLOBALS.get((module, name))
        obj = factory() if factory is not None else None
        if obj is None:
            raise pickle.UnpicklingError(f"refused to load global {module}.{name}")
        return obj


def _unpickle(data: bytes, source: str) -> Any:
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DatasetFormatError(f"{source}: unsafe or corrupt pickle ({exc})") from exc
    except Exception as exc:  # any failure to rebuild the objects means a bad file
        raise DatasetFormatError(f"{source}: corrupt pickle ({type(exc).__name__}: {exc})") \
            from exc


def read_cifar_batch(data: bytes, source: str = "<bytes>") -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch pickle -> (uint8 images N x 3 x 32 x 32, int64 labels).

    The official layout: a dict with b'data' (uint8, N x 3072, the R, G then B 32x32 planes of
    each image, row-major) and b'labels' (N ints in 0..9).
    """
    obj = _unpickle(data, source)
    if not isinstance(obj, dict):
        raise DatasetFormatError(f"{source}: expected a dict, got {type(obj).__name__}")
    batch = {k.encode() if isinstance(k, str) else k: v for k, v in obj.items()}
    missing = [k.decode() for k in (b"data", b"labels") if k not in batch]
    if missing:
        raise DatasetFormatError(f"{source}: missing key(s) {missing} "
                                 f"(has {sorted(map(repr, batch))})")
    x = batch[b"data"]
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        desc = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise DatasetFormatError(f"{source}: 'data' must be a uint8 array N x 3072, got {desc}")
    labels = batch[b"labels"]
    if isinstance(labels, list):
        if not all(type(v) is int and -(2**63) <= v < 2**63 for v in labels):
            raise DatasetFormatError(f"{source}: 'labels' must be a list of (int64) ints")
        labels = np.array(labels, dtype=np.int64)
    elif not isinstance(labels, np.ndarray):
        raise DatasetFormatError(f"{source}: 'labels' must be a list, got "
                                 f"{type(labels).__name__}")
    y = _check_labels(source, labels, 10)
    if len(y) != len(x):
        raise DatasetFormatError(f"{source}: {len(x)} images but {len(y)} labels")
    return np.ascontiguousarray(x).reshape(len(x), 3, 32, 32), y


def _batch_names() -> tuple[str, ...]:
    return (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH)


def _find_cifar(d: Path) -> Path | None:
    """The batch dir (d/cifar-10-batches-py, or d itself) or the tar.gz found in d, or None."""
    for cand in (d / CIFAR10_BATCH_DIR, d):
        if all((cand / n).is_file() for n in _batch_names()):
            return cand
    tar = d / CIFAR10_TAR
    return tar if tar.is_file() else None


def _assemble_cifar(read: Callable[[str], tuple[bytes, str]]) -> Dataset:
    parts = [read_cifar_batch(*read(n)) for n in CIFAR10_TRAIN_BATCHES]
    test_x, test_y = read_cifar_batch(*read(CIFAR10_TEST_BATCH))
    return Dataset(
        name="cifar10",
        train_x=np.concatenate([p[0] for p in parts]),
        train_y=np.concatenate([p[1] for p in parts]),
        test_x=test_x,
        test_y=test_y,
        num_classes=10,
        input_shape=(3, 32, 32),
    )


def _load_cifar_dir(d: Path) -> Dataset:
    return _assemble_cifar(lambda n: ((d / n).read_bytes(), str(d / n)))


def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DatasetFormatError(f"{path}: not a readable tar archive ({exc})") from exc


def _tar_members(path: Path, tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    """The batch files of the archive (regular files cifar-10-batches-py/<name>); nothing else
    is ever read, so odd members (links, absolute paths, '..') are simply ignored."""
    want = {f"{CIFAR10_BATCH_DIR}/{n}": n for n in _batch_names()}
    try:
        members = {want[m.name]: m for m in tar.getmembers() if m.isfile() and m.name in want}
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DatasetFormatError(f"{path}: corrupt tar archive ({exc})") from exc
    missing = [n for n in _batch_names() if n not in members]
    if missing:
        raise DatasetFormatError(f"{path}: archive lacks {CIFAR10_BATCH_DIR}/{missing}")
    return members


def _read_member(path: Path, tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    try:
        f = tar.extractfile(member)
        assert f is not None
        return f.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DatasetFormatError(f"{path}: cannot read {member.name} ({exc})") from exc


def _load_cifar_tar(path: Path) -> Dataset:
    """Read the batches straight out of the archive (nothing written to disk)."""
    with _open_tar(path) as tar:
        members = _tar_members(path, tar)
        return _assemble_cifar(
            lambda n: (_read_member(path, tar, members[n]), f"{path}:{members[n].name}"))


def _extract_cifar_tar(path: Path, dest: Path) -> Path:
    """Write the six batch files of the archive to dest/cifar-10-batches-py (atomically)."""
    out = dest / CIFAR10_BATCH_DIR
    tmp = Path(tempfile.mkdtemp(dir=dest, prefix=CIFAR10_BATCH_DIR + "."))
    try:
        with _open_tar(path) as tar:
            for name, member in _tar_members(path, tar).items():
                (tmp / name).write_bytes(_read_member(path, tar, member))
        if out.exists():  # an incomplete earlier extraction in our own cache
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def locate_cifar10(root: str | os.PathLike[str] | None = None,
                   download: bool = True) -> LocatedDataset:
    """The CIFAR-10 batches (or the official tar.gz) of the first searched place holding them.

    A tar.gz found in a searched place is read in memory; a downloaded one is verified, kept in
    ``~/.cache/mcepl/cifar10`` and extracted there so later loads read the batches directly.
    """
    looked = candidate_dirs("cifar10", root)
    for d in looked:
        found = _find_cifar(d)
        if found is not None:
            return _located_cifar(found)
    cache = _cache_dir("cifar10")
    if not download:
        raise _not_found("cifar10", looked, "Download disabled (download=False).")
    try:
        _download(CIFAR10_URL, cache / CIFAR10_TAR, CIFAR10_MD5)
        batches = _extract_cifar_tar(cache / CIFAR10_TAR, cache)
    except (OSError, http.client.HTTPException, DatasetFormatError) as exc:
        raise _not_found("cifar10", looked,
                         f"Download from {CIFAR10_URL} into {cache} failed: {exc}") from exc
    return _located_cifar(batches)


def _located_cifar(found: Path) -> LocatedDataset:
    if found.is_file():
        return LocatedDataset("cifar10", (found,), lambda: _load_cifar_tar(found))
    return LocatedDataset("cifar10", tuple(found / n for n in _batch_names()),
                          lambda: _load_cifar_dir(found))


def load_cifar10(root: str | os.PathLike[str] | None = None, download: bool = True) -> Dataset:
    """CIFAR-10 from the first searched place holding the batches or the official tar.gz."""
    return locate_cifar10(root, download).decode()


# --------------------------------------------------------------------------- entry point

KNOWN_DATASETS = DATASETS  # the registry the config validates data.dataset against
# the number of classes, known before loading: `topology check` and the launcher check labels
load_fashion_mnist.num_classes = 10  # type: ignore[attr-defined]
load_cifar10.num_classes = 10  # type: ignore[attr-defined]
DATASETS.add("fashion-mnist", load_fashion_mnist)
DATASETS.add("cifar10", load_cifar10)
_LOCATORS: dict[str, Callable[..., LocatedDataset]] = {
    "fashion-mnist": locate_fashion_mnist,
    "cifar10": locate_cifar10,
}


def locate_dataset(name: str, root: str | os.PathLike[str] | None = None,
                   download: bool = True) -> LocatedDataset:
    """Find (or download) a data set's files by name without decoding them."""
    try:
        locator = _LOCATORS[name]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; known: {sorted(KNOWN_DATASETS)}") from None
    return locator(root=root, download=download)


def dataset_classes(name: str) -> int | None:
    """How many classes data set `name` has, when its loader declares it (`num_classes`)."""
    n = getattr(DATASETS.get(name), "num_classes", None)
    return n if isinstance(n, int) else None


def load_dataset(name: str, root: str | os.PathLike[str] | None = None,
                 download: bool = True, python_path: Sequence[str] = (),
                 expected_digest: str | None = None) -> Dataset:
    """Load a data set into memory: a built-in by name ("fashion-mnist", "cifar10") as uint8
    arrays, or the user's ``package.module:loader`` (`userdata.load_user_dataset`: imported
    with `python_path`, checked, refused if its digest is not `expected_digest`).

    This decodes the files every time; nodes use :func:`mcepl.node.data.cache.open_dataset`,
    which decodes once per machine into a shared cache.
    """
    if is_import_path(name):
        from .userdata import load_user_dataset

        return load_user_dataset(name, root, python_path, expected_digest)
    return locate_dataset(name, root, download).decode()
