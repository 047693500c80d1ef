"""Decode a data set once per machine into a shared cache of ``.npy`` files.

Decoding Fashion-MNIST (gzip'd IDX) or CIFAR-10 (pickles) takes seconds and, done by every node
process, held the whole data set in each of them. Instead the first process to need a data set
decodes it into ``<cache>/<dataset>-<key>/`` (one ``.npy`` per array plus ``manifest.json``);
every process after that opens those files memory-mapped and copies out only its own rows, so
the data set's pages sit once in the page cache, shared by all nodes of the machine.

- **Key**: the SHA-256 of the source files' contents (``<key>`` is its first 16 hex digits).
  Changed files give another key, hence a fresh entry; an older entry of the same data set is
  removed once the new one is written (the newest few are kept, see ``KEEP_ENTRIES``).
- **Atomic**: every file is written to a temporary name and renamed into place, the manifest
  last, and building happens under an exclusive ``flock`` (readers take a shared one), so
  concurrent nodes neither read a half-written file nor decode the same data set twice.
- **Checked**: the manifest holds each array file's size and SHA-256; a missing, truncated or
  corrupt file is found when the entry is opened and the entry is rebuilt, with one line saying
  so.
- **User data sets** (``package.module:loader``): no source files to hash, so the key is the
  digest of the arrays the loader returns (``userdata.arrays_digest``), computed by the process
  that calls it (``mcepl launch``'s preflight, which hands it to its nodes: they map the entry
  ``user-<name>-<key>`` without calling the loader). Changed data, another digest, another
  entry; see :func:`open_user_dataset`.
- **Where**: ``$MCEPL_CACHE_DIR`` if set (``off`` disables the cache), else
  ``$XDG_CACHE_HOME/mcepl/decoded``, else ``~/.cache/mcepl/decoded``.
- **Read-only file systems**: when the cache cannot be written (a read-only container image, no
  home directory), a valid existing entry is still used; otherwise the process decodes in memory
  as before, saying so in one line.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import math
import mmap
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from mcepl.userload import is_import_path

from .datasets import Dataset, locate_dataset
from .userdata import load_user_dataset

__all__ = ["CACHE_ENV", "KEEP_ENTRIES", "default_cache_dir", "open_dataset", "take_rows"]

log = logging.getLogger("mcepl.data")

CACHE_ENV = "MCEPL_CACHE_DIR"
FORMAT = 1
ARRAYS = ("train_x", "train_y", "test_x", "test_y")
KEEP_ENTRIES = 3
"""Entries kept per data set (the newest by manifest time); older ones are deleted."""
_CHUNK = 1 << 22
_DISABLED = ("off", "none", "0", "false", "no")


def default_cache_dir() -> Path | None:
    """Where decoded data sets live (None: caching disabled by ``MCEPL_CACHE_DIR=off``)."""
    env = os.environ.get(CACHE_ENV)
    if env is not None and env.strip():
        if env.strip().lower() in _DISABLED:
            return None
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "mcepl" / "decoded"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def source_key(files: tuple[Path, ...]) -> str:
    """SHA-256 over the names and contents of the source files."""
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.name}\0{_sha256_file(p)}\n".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- locking


class _Lock:
    """An flock on ``<entry>.lock``; a no-op where the lock file cannot be created."""

    def __init__(self, path: Path) -> None:
        self.fd: int | None = None
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            try:
                self.fd = os.open(path, os.O_RDONLY)
            except OSError:
                self.fd = None

    @contextmanager
    def held(self, exclusive: bool) -> Iterator[None]:
        if self.fd is None:
            yield
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        except OSError:  # e.g. a file system without locks: carry on unlocked
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# --------------------------------------------------------------------------- reading


class _Corrupt(Exception):
    """An entry exists but cannot be trusted (the message says which file and why)."""


def _open_entry(entry: Path, name: str, key: str) -> Dataset | None:
    """The entry's arrays, memory-mapped, after checking every file; None if there is none."""
    manifest_path = entry / "manifest.json"
    if not manifest_path.exists():
        if entry.exists() and any(entry.iterdir()):
            raise _Corrupt(f"{manifest_path} is missing")
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        arrays = manifest["arrays"]
        if manifest["format"] != FORMAT or manifest["key"] != key or manifest["dataset"] != name:
            raise _Corrupt(f"{manifest_path} belongs to another format, key or data set")
        meta = {k: arrays[k] for k in ARRAYS}
        num_classes = int(manifest["num_classes"])
        input_shape = tuple(int(v) for v in manifest["input_shape"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _Corrupt(f"{manifest_path} is unreadable ({exc})") from None
    out: dict[str, np.ndarray] = {}
    for k, m in meta.items():
        path = entry / f"{k}.npy"
        try:
            size = path.stat().st_size
        except OSError:
            raise _Corrupt(f"{path} is missing") from None
        if size != m["bytes"]:
            raise _Corrupt(f"{path} has {size} bytes, the manifest says {m['bytes']} "
                           f"({'truncated' if size < m['bytes'] else 'trailing data'})")
        if _sha256_file(path) != m["sha256"]:
            raise _Corrupt(f"{path}: checksum mismatch")
        try:
            out[k] = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise _Corrupt(f"{path} is not a readable .npy file ({exc})") from None
    if len(out["train_x"]) != len(out["train_y"]) or len(out["test_x"]) != len(out["test_y"]):
        raise _Corrupt(f"{entry}: images and labels differ in length")
    return Dataset(name=name, num_classes=num_classes, input_shape=input_shape,  # type: ignore[arg-type]
                   **out)


# --------------------------------------------------------------------------- writing


def _write_atomic(path: Path, write) -> None:  # noqa: ANN001 - a callable taking a binary file
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_entry(entry: Path, ds: Dataset, key: str, sources: tuple[Path, ...]) -> None:
    entry.mkdir(parents=True, exist_ok=True)
    (entry / "manifest.json").unlink(missing_ok=True)  # the entry is invalid until rewritten
    arrays = {}
    for k in ARRAYS:
        arr = np.ascontiguousarray(getattr(ds, k))
        path = entry / f"{k}.npy"
        _write_atomic(path, lambda f, a=arr: np.save(f, a, allow_pickle=False))
        arrays[k] = {"bytes": path.stat().st_size, "sha256": _sha256_file(path),
                     "shape": list(arr.shape), "dtype": str(arr.dtype)}
    manifest = {"format": FORMAT, "dataset": ds.name, "key": key, "arrays": arrays,
                "num_classes": ds.num_classes, "input_shape": list(ds.input_shape),
                "sources": [str(p) for p in sources]}
    _write_atomic(entry / "manifest.json",
                  lambda f: f.write(json.dumps(manifest, indent=1).encode()))


def _prune(cache: Path, name: str, keep: Path) -> None:
    """Delete all but the newest KEEP_ENTRIES entries of this data set (never `keep`)."""
    entries = []
    for d in cache.glob(f"{name}-*"):
        m = d / "manifest.json"
        if d.is_dir() and d != keep:
            entries.append((m.stat().st_mtime if m.exists() else 0.0, d))
    entries.sort(reverse=True)
    for _, d in entries[KEEP_ENTRIES - 1:]:
        lock = _Lock(d.with_name(d.name + ".lock"))
        try:
            with lock.held(exclusive=True):
                shutil.rmtree(d, ignore_errors=True)
        finally:
            lock.close()
        d.with_name(d.name + ".lock").unlink(missing_ok=True)


# --------------------------------------------------------------------------- entry point


def open_dataset(name: str, root: str | os.PathLike[str] | None = None, download: bool = True,
                 cache_dir: str | os.PathLike[str] | None | bool = True,
                 python_path: Sequence[str] = (),
                 expected_digest: str | None = None) -> Dataset:
    """The data set with its arrays memory-mapped from this machine's decode cache.

    ``cache_dir``: True for :func:`default_cache_dir`, a path, or None/False to decode in
    memory (as :func:`load_dataset`). Falls back to decoding in memory, with one line on the
    ``mcepl.data`` logger, when the cache can be neither used nor written.

    A user data set (``name`` = ``package.module:loader``) goes through :func:`open_user_dataset`
    (`python_path`, `expected_digest`).
    """
    cache = default_cache_dir() if cache_dir is True else (Path(cache_dir) if cache_dir else None)
    if is_import_path(name):
        return open_user_dataset(name, root, python_path, expected_digest, cache)
    located = locate_dataset(name, root, download)
    if cache is None:
        return located.decode()
    key = source_key(located.files)
    return _through_cache(cache, name, name, key, located.decode, located.files)


def _entry_label(spec: str) -> str:
    """A user data set's entry name prefix: the import path with ':' and the like as '_'."""
    return "user-" + re.sub(r"[^A-Za-z0-9_.-]", "_", spec)


def open_user_dataset(spec: str, root: str | os.PathLike[str] | None = None,
                      python_path: Sequence[str] = (), expected_digest: str | None = None,
                      cache: Path | None = None) -> Dataset:
    """A user data set through the cache, keyed by the digest of the loader's arrays.

    The key cannot be known without calling the loader, so: with the full `expected_digest`
    (what ``mcepl launch`` computed and hands to its nodes) an entry of that digest is
    memory-mapped and the loader is not called at all; otherwise the loader is called (its
    arrays checked against `expected_digest` if given), their digest computed, and the entry of
    that digest used or written. Changed data give another digest, hence another entry."""
    label = _entry_label(spec)
    if cache is not None and expected_digest and len(expected_digest) == 64:
        key = expected_digest.lower()
        entry = cache / f"{label}-{key[:16]}"
        lock = _Lock(entry.with_name(entry.name + ".lock"))
        try:
            with lock.held(exclusive=False):
                try:
                    ds = _open_entry(entry, spec, key)
                except _Corrupt:
                    ds = None  # rebuilt below from the loader
        finally:
            lock.close()
        if ds is not None:
            return dataclasses.replace(ds, digest=key)
    loaded = load_user_dataset(spec, root, python_path, expected_digest)
    if cache is None:
        return loaded
    key = loaded.digest
    assert key is not None
    ds = _through_cache(cache, label, spec, key, lambda: loaded, ())
    return dataclasses.replace(ds, digest=key)


def _through_cache(cache: Path, label: str, name: str, key: str,
                   build: Callable[[], Dataset], sources: tuple[Path, ...]) -> Dataset:
    """The entry ``<cache>/<label>-<key16>`` memory-mapped, built with `build()` under the
    exclusive lock when it is missing or corrupt; `build()`'s arrays in memory when the cache
    cannot be written."""
    entry = cache / f"{label}-{key[:16]}"
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # maybe read-only but already populated: try to read below
    lock = _Lock(entry.with_name(entry.name + ".lock"))
    try:
        problem = None
        with lock.held(exclusive=False):
            try:
                ds = _open_entry(entry, name, key)
            except _Corrupt as exc:
                ds, problem = None, str(exc)
        if ds is not None:
            return ds
        with lock.held(exclusive=True):
            try:  # another process may have built it while we waited for the lock
                ds = _open_entry(entry, name, key)
            except _Corrupt as exc:
                ds, problem = None, str(exc)
            if ds is not None:
                return ds
            decoded = build()
            try:
                _write_entry(entry, decoded, key, sources)
            except OSError as exc:
                why = exc.strerror or str(exc)
                log.warning("data cache %s is not writable (%s): %s decoded in memory by "
                            "this process (set %s to a writable directory to share it)",
                            cache, why, name, CACHE_ENV)
                return decoded
            if problem:
                log.warning("data cache %s: %s; rebuilt it", entry, problem)
            ds = _open_entry(entry, name, key)
            assert ds is not None
        try:
            _prune(cache, label, entry)
        except OSError:
            pass
        return ds
    finally:
        lock.close()


def take_rows(arr: np.ndarray, idx: np.ndarray, window_bytes: int = 4 << 20) -> np.ndarray:
    """``arr[idx]`` as a new in-memory array.

    For an array memory-mapped from a file (the cache), the rows are read from the file in
    windows of at most ``window_bytes`` instead of through the mapping: the result is the same,
    but the process never has the whole data set's pages mapped in (which would count in its
    resident memory although the page cache shares them).
    """
    idx = np.asarray(idx, dtype=np.int64)
    base = getattr(arr, "base", None)
    if not (isinstance(arr, np.memmap) and isinstance(base, mmap.mmap) and arr.filename
            and arr.flags.c_contiguous and arr.ndim >= 1):
        return np.ascontiguousarray(arr[idx])
    n = len(arr)
    if idx.size and (int(idx.min()) < -n or int(idx.max()) >= n):
        raise IndexError(f"row index out of range for {n} rows")
    idx = np.where(idx < 0, idx + n, idx)
    row_shape = arr.shape[1:]
    row_bytes = arr.dtype.itemsize * math.prod(row_shape)
    out = np.empty((len(idx), *row_shape), dtype=arr.dtype)
    if len(idx) == 0 or row_bytes == 0:
        return out
    order = np.argsort(idx, kind="stable")
    rows = idx[order]
    per_window = max(1, window_bytes // row_bytes)
    buf = np.empty((per_window, *row_shape), dtype=arr.dtype)
    try:
        f = open(arr.filename, "rb", buffering=0)  # noqa: SIM115 - closed below
    except OSError:  # the entry was replaced since it was mapped: the mapping still reads it
        return np.ascontiguousarray(arr[idx])
    with f:
        pos = 0
        while pos < len(rows):
            first = int(rows[pos])
            end = int(np.searchsorted(rows, first + per_window, side="left"))
            count = int(rows[end - 1]) - first + 1
            view = memoryview(buf[:count]).cast("B")
            f.seek(arr.offset + first * row_bytes)
            got = 0
            while got < len(view):
                k = f.readinto(view[got:])
                if not k:
                    raise OSError(f"{arr.filename}: unexpected end of file")
                got += k
            out[order[pos:end]] = buf[rows[pos:end] - first]
            pos = end
    return out
