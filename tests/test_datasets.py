"""Data set readers, on tiny files written in the official formats (no real data needed)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from mcepl.node.data import (
    DatasetFormatError,
    DatasetNotFoundError,
    load_dataset,
    read_cifar_batch,
    read_idx,
    to_tensor,
)
from mcepl.node.data import datasets as dsmod

FMNIST_STEMS = dsmod.FASHION_MNIST_FILES


# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def isolated_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test sees the real HOME cache, $MCEPL_DATA or /usr/share/datasets, or the network."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("MCEPL_DATA", raising=False)
    monkeypatch.setattr(dsmod, "SYSTEM_DIR", tmp_path / "system")

    def no_network(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(dsmod.urllib.request, "urlopen", no_network)
    return home


def idx_bytes(arr: np.ndarray, type_code: int = 0x08) -> bytes:
    header = struct.pack(">HBB", 0, type_code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(">u1" if type_code == 0x08 else ">i4").tobytes()


def write_fmnist(d: Path, seed: int = 0, n_train: int = 12, n_test: int = 6, gz: bool = True,
                 first_label: int | None = None) -> dict[str, np.ndarray]:
    """Write the four IDX files; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_y": rng.integers(0, 10, n_train).astype(np.uint8),
        "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_y": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    if first_label is not None:
        arrays["train_y"][0] = first_label
    d.mkdir(parents=True, exist_ok=True)
    for key, stem in FMNIST_STEMS.items():
        raw = idx_bytes(arrays[key])
        if gz:
            (d / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (d / stem).write_bytes(raw)
    return arrays


class Py2Pickler(pickle._Pickler):  # type: ignore[misc]
    """Writes str/bytes as Python 2 byte strings, like the official CIFAR-10 batches."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def _save_py2_str(self, obj: str | bytes) -> None:
        b = obj.encode("latin1") if isinstance(obj, str) else obj
        n = len(b)
        op = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 \
            else pickle.BINSTRING + struct.pack("<i", n)
        self.write(op + b)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str


def py2_pickle(obj: object) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    # numpy 1.x (what wrote the official files) lives at numpy.core
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def cifar_batch(rng: np.random.Generator, n: int, label: str = "batch") -> dict[str, object]:
    return {
        "batch_label": label,
        "labels": [int(v) for v in rng.integers(0, 10, n)],
        "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        "filenames": [f"img_{i}.png" for i in range(n)],
    }


def write_cifar(d: Path, seed: int = 0, n: int = 3) -> dict[str, dict[str, object]]:
    """Write the six batches (Python 2 pickle layout) into d; returns the batch dicts."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in (*dsmod.CIFAR10_TRAIN_BATCHES, dsmod.CIFAR10_TEST_BATCH):
        batches[name] = cifar_batch(rng, n, name)
        (d / name).write_bytes(py2_pickle(batches[name]))
    return batches


def write_cifar_tar(tar_path: Path, seed: int = 0, extra: dict[str, bytes] | None = None
                    ) -> dict[str, dict[str, object]]:
    staging = tar_path.parent / f"staging-{seed}"
    batches = write_cifar(staging / dsmod.CIFAR10_BATCH_DIR, seed)
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(staging / dsmod.CIFAR10_BATCH_DIR, arcname=dsmod.CIFAR10_BATCH_DIR)
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return batches


def expected_cifar(batches: dict[str, dict[str, object]]) -> tuple[np.ndarray, np.ndarray]:
    train = [batches[n] for n in dsmod.CIFAR10_TRAIN_BATCHES]
    x = np.concatenate([b["data"] for b in train])  # type: ignore[misc]
    y = np.concatenate([b["labels"] for b in train])  # type: ignore[misc]
    return x, y


# --------------------------------------------------------------------------- Fashion-MNIST


@pytest.mark.parametrize("gz", [True, False])
def test_fmnist_round_trip(tmp_path: Path, gz: bool) -> None:
    arrays = write_fmnist(tmp_path / "d", gz=gz)
    ds = load_dataset("fashion-mnist", root=tmp_path / "d", download=False)
    assert ds.name == "fashion-mnist" and ds.num_classes == 10 and ds.input_shape == (1, 28, 28)
    assert ds.train_x.dtype == np.uint8 and ds.train_x.shape == (12, 1, 28, 28)
    assert ds.test_x.shape == (6, 1, 28, 28)
    assert ds.train_y.dtype == np.int64 and ds.test_y.dtype == np.int64
    np.testing.assert_array_equal(ds.train_x[:, 0], arrays["train_x"])
    np.testing.assert_array_equal(ds.test_x[:, 0], arrays["test_x"])
    np.testing.assert_array_equal(ds.train_y, arrays["train_y"])
    np.testing.assert_array_equal(ds.test_y, arrays["test_y"])


def test_to_tensor_scales_to_minus_one_one() -> None:
    x = np.array([[0, 255], [127, 128]], dtype=np.uint8)
    t = to_tensor(x)
    assert t.dtype == torch.float32 and t.shape == (2, 2)
    assert t[0, 0].item() == -1.0 and t[0, 1].item() == 1.0
    # same values as torchvision's ToTensor() + Normalize(0.5, 0.5)
    torch.testing.assert_close(t, (torch.from_numpy(x).float() / 255 - 0.5) / 0.5)
    with pytest.raises(TypeError):
        to_tensor(x.astype(np.float32))


def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      isolated_places: Path) -> None:
    """explicit dir > $MCEPL_DATA(/fashion-mnist) > ~/.cache/mcepl > system dir."""
    write_fmnist(tmp_path / "system" / "fashion-mnist", first_label=1)
    assert load_dataset("fashion-mnist", download=False).train_y[0] == 1
    write_fmnist(isolated_places / ".cache" / "mcepl" / "fashion-mnist", first_label=2)
    assert load_dataset("fashion-mnist", download=False).train_y[0] == 2
    write_fmnist(tmp_path / "env" / "fashion-mnist", first_label=3)
    monkeypatch.setenv("MCEPL_DATA", str(tmp_path / "env"))
    assert load_dataset("fashion-mnist", download=False).train_y[0] == 3
    write_fmnist(tmp_path / "env", first_label=4)  # $MCEPL_DATA itself beats its subdir
    assert load_dataset("fashion-mnist", download=False).train_y[0] == 4
    write_fmnist(tmp_path / "explicit", first_label=5)
    assert load_dataset("fashion-mnist", root=tmp_path / "explicit",
                        download=False).train_y[0] == 5
    # an explicit dir without the files falls through to the next place (one that does not
    # exist at all is an error: test_missing_explicit_root_is_an_error)
    (tmp_path / "empty").mkdir()
    assert load_dataset("fashion-mnist", root=tmp_path / "empty",
                        download=False).train_y[0] == 4


def test_missing_explicit_root_is_an_error(tmp_path: Path, isolated_places: Path) -> None:
    """Issue 11: --data-dir /nonexistent silently used the system copy of the data."""
    write_fmnist(tmp_path / "system" / "fashion-mnist", first_label=1)
    with pytest.raises(DatasetNotFoundError, match=r"nonexistent.* does not exist"):
        load_dataset("fashion-mnist", root=tmp_path / "nonexistent", download=False)


def test_not_found_lists_every_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     isolated_places: Path) -> None:
    monkeypatch.setenv("MCEPL_DATA", str(tmp_path / "env"))
    (tmp_path / "mine").mkdir()
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("fashion-mnist", root=tmp_path / "mine", download=False)
    msg = str(err.value)
    for place in (tmp_path / "mine", tmp_path / "env", tmp_path / "env" / "fashion-mnist",
                  isolated_places / ".cache" / "mcepl" / "fashion-mnist",
                  tmp_path / "system" / "fashion-mnist"):
        assert str(place) in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "MCEPL_DATA" in msg
    assert "download=False" in msg


def test_failed_download_gives_clear_error(isolated_places: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="network disabled in tests"):
        load_dataset("fashion-mnist")
    assert not list((isolated_places / ".cache" / "mcepl" / "fashion-mnist").glob("*"))


def serve(monkeypatch: pytest.MonkeyPatch, files: dict[str, bytes]) -> list[str]:
    """Fake urlopen serving files by URL basename; returns the URLs requested."""
    asked: list[str] = []

    def fake_urlopen(url: str, timeout: float | None = None) -> io.BytesIO:
        assert timeout is not None and timeout <= 30
        asked.append(url)
        return io.BytesIO(files[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(dsmod.urllib.request, "urlopen", fake_urlopen)
    return asked


def test_download_checks_md5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             isolated_places: Path) -> None:
    arrays = write_fmnist(tmp_path / "src")
    files = {p.name: p.read_bytes() for p in (tmp_path / "src").iterdir()}
    asked = serve(monkeypatch, files)
    cache = isolated_places / ".cache" / "mcepl" / "fashion-mnist"
    # the official sums do not match our tiny files: nothing may be kept
    with pytest.raises(DatasetNotFoundError, match="MD5"):
        load_dataset("fashion-mnist")
    assert not list(cache.glob("*"))
    monkeypatch.setattr(dsmod, "FASHION_MNIST_MD5",
                        {n: hashlib.md5(b).hexdigest() for n, b in files.items()})
    ds = load_dataset("fashion-mnist")
    assert all(u.startswith(dsmod.FASHION_MNIST_URL) for u in asked)
    assert sorted(p.name for p in cache.iterdir()) == sorted(files)
    np.testing.assert_array_equal(ds.test_y, arrays["test_y"])


def test_idx_errors(tmp_path: Path) -> None:
    good = idx_bytes(np.zeros((2, 28, 28), np.uint8))
    cases = {
        "truncated": (good[:-1], "truncated"),
        "trailing": (good + b"\0", "trailing"),
        "magic": (b"\x01" + good[1:], "magic"),
        "type": (good[:2] + b"\x07" + good[3:], "magic"),
        "header": (good[:6], "header"),
        "empty": (b"", "too short"),
    }
    for name, (data, what) in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(DatasetFormatError, match=what) as err:
            read_idx(p)
        assert str(p) in str(err.value)
    gz = tmp_path / "cut.gz"
    gz.write_bytes(gzip.compress(good)[:-10])
    with pytest.raises(DatasetFormatError, match="gzip"):
        read_idx(gz)
    p = tmp_path / "ndim"
    p.write_bytes(good)
    with pytest.raises(DatasetFormatError, match="dimensions"):
        read_idx(p, expect_ndim=1)
    np.testing.assert_array_equal(read_idx(p), np.zeros((2, 28, 28), np.uint8))


def test_fmnist_bad_labels_and_shapes(tmp_path: Path) -> None:
    d = tmp_path / "d"
    write_fmnist(d)
    lab = d / f"{FMNIST_STEMS['train_y']}.gz"
    lab.write_bytes(gzip.compress(idx_bytes(np.array([10] * 12, np.uint8))))
    with pytest.raises(DatasetFormatError, match=r"0\.\.9") as err:
        load_dataset("fashion-mnist", root=d, download=False)
    assert str(lab) in str(err.value)
    lab.write_bytes(gzip.compress(idx_bytes(np.zeros(11, np.uint8))))
    with pytest.raises(DatasetFormatError, match="11 labels"):
        load_dataset("fashion-mnist", root=d, download=False)
    lab.write_bytes(gzip.compress(idx_bytes(np.zeros(12, np.uint8))))
    (d / f"{FMNIST_STEMS['test_x']}.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros((6, 32, 32), np.uint8))))
    with pytest.raises(DatasetFormatError, match="28x28"):
        load_dataset("fashion-mnist", root=d, download=False)


def test_unknown_dataset() -> None:
    with pytest.raises(ValueError, match="cifar10.*fashion-mnist"):
        load_dataset("mnist")


# --------------------------------------------------------------------------- CIFAR-10


def test_cifar_dir_round_trip(tmp_path: Path) -> None:
    batches = write_cifar(tmp_path / "c" / dsmod.CIFAR10_BATCH_DIR)
    ds = load_dataset("cifar10", root=tmp_path / "c", download=False)
    assert ds.name == "cifar10" and ds.input_shape == (3, 32, 32) and ds.num_classes == 10
    x, y = expected_cifar(batches)
    assert ds.train_x.shape == (15, 3, 32, 32) and ds.train_x.dtype == np.uint8
    assert ds.train_y.dtype == np.int64 and ds.test_y.dtype == np.int64
    np.testing.assert_array_equal(ds.train_y, y)
    # row-major R, G then B planes: pixel (c, r, k) of image i is data[i, c*1024 + r*32 + k]
    assert ds.train_x[4, 2, 5, 7] == x[4, 2 * 1024 + 5 * 32 + 7]
    np.testing.assert_array_equal(ds.train_x.reshape(15, -1), x)
    test = batches[dsmod.CIFAR10_TEST_BATCH]
    np.testing.assert_array_equal(ds.test_x.reshape(3, -1), test["data"])
    np.testing.assert_array_equal(ds.test_y, test["labels"])
    # the batch directory itself may be given too
    ds2 = load_dataset("cifar10", root=tmp_path / "c" / dsmod.CIFAR10_BATCH_DIR, download=False)
    np.testing.assert_array_equal(ds2.train_x, ds.train_x)


@pytest.mark.parametrize("protocol", [2, 3, 5])
def test_cifar_python3_pickles_accepted(protocol: int) -> None:
    batch = cifar_batch(np.random.default_rng(1), 4)
    data = pickle.dumps({k.encode(): v for k, v in batch.items()}, protocol=protocol)
    x, y = read_cifar_batch(data)
    assert x.shape == (4, 3, 32, 32)
    np.testing.assert_array_equal(x.reshape(4, -1), batch["data"])
    np.testing.assert_array_equal(y, batch["labels"])


def test_cifar_tar_read_without_writing(tmp_path: Path, isolated_places: Path) -> None:
    tar = tmp_path / "dl" / dsmod.CIFAR10_TAR
    tar.parent.mkdir()
    batches = write_cifar_tar(tar, extra={"../evil.txt": b"x", "/tmp/abs-evil.txt": b"x"})
    ds = load_dataset("cifar10", root=tar.parent, download=False)
    x, y = expected_cifar(batches)
    np.testing.assert_array_equal(ds.train_x.reshape(15, -1), x)
    np.testing.assert_array_equal(ds.train_y, y)
    assert not (tmp_path / "evil.txt").exists()
    assert not list(isolated_places.rglob("*"))


def test_cifar_download_extracts_into_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            isolated_places: Path) -> None:
    tar = tmp_path / "src" / dsmod.CIFAR10_TAR
    tar.parent.mkdir()
    batches = write_cifar_tar(tar, seed=3)
    blob = tar.read_bytes()
    asked = serve(monkeypatch, {dsmod.CIFAR10_TAR: blob})
    with pytest.raises(DatasetNotFoundError, match="MD5"):
        load_dataset("cifar10")
    monkeypatch.setattr(dsmod, "CIFAR10_MD5", hashlib.md5(blob).hexdigest())
    ds = load_dataset("cifar10")
    assert asked == [dsmod.CIFAR10_URL] * 2
    cache = isolated_places / ".cache" / "mcepl" / "cifar10"
    assert (cache / dsmod.CIFAR10_TAR).is_file()
    assert (cache / dsmod.CIFAR10_BATCH_DIR / "data_batch_5").is_file()
    np.testing.assert_array_equal(ds.train_y, expected_cifar(batches)[1])
    serve(monkeypatch, {})  # the next load reads the extracted cache, no network
    ds2 = load_dataset("cifar10")
    np.testing.assert_array_equal(ds2.train_x, ds.train_x)


def test_cifar_not_found(tmp_path: Path, isolated_places: Path) -> None:
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", root=tmp_path / "nothing", download=False)
    msg = str(err.value)
    for place in (tmp_path / "nothing", isolated_places / ".cache" / "mcepl" / "cifar10",
                  tmp_path / "system" / "cifar10"):
        assert str(place) in msg
    assert dsmod.CIFAR10_URL in msg


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


class _EvalEvil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return eval, ("1+1",)


def test_malicious_pickle_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for payload in (_Evil(marker), _EvalEvil()):
        for protocol in (2, 5):
            data = pickle.dumps({b"data": payload, b"labels": []}, protocol=protocol)
            with pytest.raises(DatasetFormatError, match="refused"):
                read_cifar_batch(data, "evil_batch")
    assert not marker.exists()
    # also through the loader, as a batch file on disk
    d = tmp_path / "c"
    write_cifar(d)
    (d / "data_batch_3").write_bytes(pickle.dumps({b"data": _Evil(marker)}, protocol=2))
    with pytest.raises(DatasetFormatError, match="data_batch_3"):
        load_dataset("cifar10", root=d, download=False)
    assert not marker.exists()


def test_cifar_format_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)

    def bad(**change: object) -> bytes:
        batch = cifar_batch(rng, 4)
        batch.update(change)
        return py2_pickle({k: v for k, v in batch.items() if v is not None})

    cases = [
        (bad(labels=None), "missing"),
        (bad(data=None), "missing"),
        (bad(data=np.zeros((4, 3071), np.uint8)), "N x 3072"),
        (bad(data=np.zeros((4, 3072), np.int32)), "N x 3072"),
        (bad(data=b"\0" * 3072 * 4), "N x 3072"),
        (bad(labels=[0, 1, 2]), "3 labels"),
        (bad(labels=[0, 1, 2, 10]), r"0\.\.9"),
        (bad(labels=[0, 1, 2, -1]), r"0\.\.9"),
        (bad(labels=[0, 1, 2, "x"]), "ints"),
        (bad(labels=[0, 1, 2, 2**70]), "ints"),
        (py2_pickle([1, 2]), "dict"),
        (py2_pickle({"data": 1})[:-5], "corrupt"),
        (b"", "corrupt"),
    ]
    for data, what in cases:
        with pytest.raises(DatasetFormatError, match=what):
            read_cifar_batch(data, "somefile")
    d = tmp_path / "c"
    write_cifar(d)
    (d / "test_batch").write_bytes(bad(labels=[0, 1, 2]))
    with pytest.raises(DatasetFormatError, match="test_batch"):
        load_dataset("cifar10", root=d, download=False)
    broken = tmp_path / "t" / dsmod.CIFAR10_TAR
    broken.parent.mkdir()
    broken.write_bytes(b"not a tar at all")
    with pytest.raises(DatasetFormatError, match="tar"):
        load_dataset("cifar10", root=broken.parent, download=False)


# --------------------------------------------------------------------------- real data

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
@pytest.mark.skipif(not (DEBIAN_FMNIST / "train-images-idx3-ubyte.gz").is_file(),
                    reason="real Fashion-MNIST not installed (apt-get install "
                           "dataset-fashion-mnist)")
def test_real_fashion_mnist() -> None:
    ds = load_dataset("fashion-mnist", root=DEBIAN_FMNIST, download=False)
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.train_x.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(ds.train_y), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(ds.test_y), [1000] * 10)
    assert ds.train_y[:5].tolist() == [9, 0, 0, 3, 0]  # ankle boot, T-shirt, T-shirt, dress, ...
    assert ds.train_x.min() == 0 and ds.train_x.max() == 255
