"""The per-machine decode cache (node/data/cache.py) and uint8 shards (node/data/shard.py)."""

from __future__ import annotations

import logging
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_tiny_fashion_mnist

from mcepl.node.data import (
    Images,
    Shard,
    load_all_shards,
    load_dataset,
    load_shard,
    normalize,
    open_dataset,
    take_rows,
    to_tensor,
)
from mcepl.node.data import cache as C
from mcepl.node.data.synthetic import write_synthetic_cifar10

ARRAYS = ("train_x", "train_y", "test_x", "test_y")


@pytest.fixture
def fm(tmp_path: Path) -> Path:
    return write_tiny_fashion_mnist(tmp_path / "fm")


def _same_data(a, b) -> None:
    assert (a.name, a.num_classes, a.input_shape) == (b.name, b.num_classes, b.input_shape)
    for k in ARRAYS:
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
        assert getattr(a, k).dtype == getattr(b, k).dtype


def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = C.locate_dataset

    def locate(*args, **kwargs):
        found = real(*args, **kwargs)

        def decode():
            calls.append(os.getpid())
            return found.decode()

        return type(found)(found.name, found.files, decode)

    monkeypatch.setattr(C, "locate_dataset", locate)
    return calls


def test_built_once_then_mapped(fm: Path, tmp_path: Path, monkeypatch) -> None:
    calls = _count_decodes(monkeypatch)
    cache = tmp_path / "cache"
    first = open_dataset("fashion-mnist", root=fm, download=False, cache_dir=cache)
    second = open_dataset("fashion-mnist", root=fm, download=False, cache_dir=cache)
    assert len(calls) == 1  # decoded once; the second open only maps the files
    assert isinstance(second.train_x, np.memmap) and not second.train_x.flags.writeable
    _same_data(first, load_dataset("fashion-mnist", root=fm, download=False))
    _same_data(second, first)
    (entry,) = [p for p in cache.iterdir() if p.is_dir()]
    assert entry.name.startswith("fashion-mnist-")
    assert sorted(p.name for p in entry.iterdir()) == sorted(
        ["manifest.json", *(f"{k}.npy" for k in ARRAYS)])


def test_changed_source_gives_a_new_entry(fm: Path, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    a = open_dataset("fashion-mnist", root=fm, download=False, cache_dir=cache)
    write_tiny_fashion_mnist(fm, seed=99)  # other images, same names
    calls = _count_decodes(monkeypatch)
    b = open_dataset("fashion-mnist", root=fm, download=False, cache_dir=cache)
    assert len(calls) == 1
    assert not np.array_equal(a.train_x, b.train_x)
    _same_data(b, load_dataset("fashion-mnist", root=fm, download=False))
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 2
    for seed in range(100, 100 + C.KEEP_ENTRIES + 1):  # older entries are pruned
        write_tiny_fashion_mnist(fm, seed=seed)
        open_dataset("fashion-mnist", root=fm, download=False, cache_dir=cache)
    assert len([p for p in cache.iterdir() if p.is_dir()]) == C.KEEP_ENTRIES


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "manifest"])
def test_corrupt_entry_is_detected_and_rebuilt(fm: Path, tmp_path: Path, damage: str,
                                               caplog) -> None:
    cache = tmp_path / "cache"
    open_dataset("fashion-mnist", root=fm, download=False, cache_dir=cache)
    good = load_dataset("fashion-mnist", root=fm, download=False)  # (the damage below is done
    (entry,) = [p for p in cache.iterdir() if p.is_dir()]
    target = entry / "train_x.npy"  # in place, so a mapping of the entry would see it too)
    if damage == "flip":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x40
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:-100])
    elif damage == "delete":
        target.unlink()
    else:
        (entry / "manifest.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="mcepl.data"):
        again = open_dataset("fashion-mnist", root=fm, download=False, cache_dir=cache)
    _same_data(again, good)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "rebuilt" in lines[0] and str(entry) in lines[0]
    expect = {"flip": "checksum", "truncate": "truncated", "delete": "missing",
              "manifest": "unreadable"}[damage]
    assert expect in lines[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mcepl.data"):
        open_dataset("fashion-mnist", root=fm, download=False, cache_dir=cache)
    assert not caplog.records  # healthy again


def test_unwritable_cache_falls_back_to_memory(fm: Path, tmp_path: Path, caplog,
                                               monkeypatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger="mcepl.data"):
        ds = open_dataset("fashion-mnist", root=fm, download=False, cache_dir=blocker / "cache")
    assert not isinstance(ds.train_x, np.memmap)
    _same_data(ds, load_dataset("fashion-mnist", root=fm, download=False))
    (line,) = [r.getMessage() for r in caplog.records]
    assert "not writable" in line and "in memory" in line and C.CACHE_ENV in line
    # a read-only file system (EROFS) that already holds a valid entry is still used
    cache = tmp_path / "ro"
    open_dataset("fashion-mnist", root=fm, download=False, cache_dir=cache)

    def refuse(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(C, "_write_entry", refuse)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mcepl.data"):
        ds = open_dataset("fashion-mnist", root=fm, download=False, cache_dir=cache)
    assert isinstance(ds.train_x, np.memmap) and not caplog.records
    with caplog.at_level(logging.WARNING, logger="mcepl.data"):
        ds = open_dataset("fashion-mnist", root=fm, download=False, cache_dir=tmp_path / "new")
    assert not isinstance(ds.train_x, np.memmap)
    assert "Read-only file system" in caplog.records[0].getMessage()


def test_cache_location_defaults(monkeypatch, tmp_path: Path, fm: Path) -> None:
    monkeypatch.delenv(C.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert C.default_cache_dir() == tmp_path / "xdg" / "mcepl" / "decoded"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert C.default_cache_dir() == tmp_path / "home" / ".cache" / "mcepl" / "decoded"
    monkeypatch.setenv(C.CACHE_ENV, str(tmp_path / "mine"))
    assert C.default_cache_dir() == tmp_path / "mine"
    open_dataset("fashion-mnist", root=fm, download=False)  # the default is used
    assert any((tmp_path / "mine").glob("fashion-mnist-*/manifest.json"))
    monkeypatch.setenv(C.CACHE_ENV, "off")
    assert C.default_cache_dir() is None
    assert not isinstance(open_dataset("fashion-mnist", root=fm, download=False).train_x,
                          np.memmap)


def _open_in_child(args: tuple[str, str, str]) -> tuple[int, str]:
    root, cache, marker = args
    real = C.locate_dataset

    def locate(*a, **k):
        found = real(*a, **k)

        def decode():
            with open(marker, "a") as f:
                f.write(f"{os.getpid()}\n")
            return found.decode()

        return type(found)(found.name, found.files, decode)

    C.locate_dataset = locate
    ds = open_dataset("cifar10", root=root, download=False, cache_dir=cache)
    return len(ds.train_x), str(np.asarray(ds.train_x[:3]).sum())


def test_concurrent_processes_decode_once(tmp_path: Path) -> None:
    """Six processes opening the same data set at once: one decodes, all read the same."""
    root = tmp_path / "cifar"
    write_synthetic_cifar10(root, n_train=500, n_test=100)
    marker = tmp_path / "decoded-by"
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(6) as pool:
        results = pool.map(_open_in_child, [(str(root), str(tmp_path / "c"), str(marker))] * 6)
    assert len(set(results)) == 1 and results[0][0] == 500
    assert len(marker.read_text().split()) == 1


@pytest.mark.parametrize("window", [1, 3 * 28 * 28, 1 << 20])
def test_take_rows_equals_fancy_indexing(tmp_path: Path, window: int) -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (97, 1, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "a.npy", arr)
    mm = np.load(tmp_path / "a.npy", mmap_mode="r")
    for idx in (np.array([], dtype=np.int64), np.arange(97), rng.permutation(97)[:40],
                np.array([5, 5, 96, 0, -1, 50, 51, 52]), np.sort(rng.choice(97, 30))):
        got = take_rows(mm, idx, window_bytes=window)
        np.testing.assert_array_equal(got, arr[idx])
        assert not isinstance(got, np.memmap) and got.flags.c_contiguous
        np.testing.assert_array_equal(take_rows(arr, idx), arr[idx])  # plain arrays too
    np.testing.assert_array_equal(take_rows(mm[10:], np.array([0, 3])), arr[[10, 13]])  # a view
    with pytest.raises(IndexError):
        take_rows(mm, np.array([97]))


def test_shards_are_uint8_and_normalise_to_the_same_bits(tiny_data_dir: Path) -> None:
    kw = dict(num_nodes=4, seed=0, root=tiny_data_dir, download=False)
    ds = load_dataset("fashion-mnist", root=tiny_data_dir, download=False)
    every = load_all_shards("fashion-mnist", **kw)
    for i, shard in enumerate(every):
        one = load_shard("fashion-mnist", i, **kw)
        assert one.train_x.stored.dtype == torch.uint8
        assert torch.equal(one.train_x.stored, shard.train_x.stored)
        # bytes held: one byte per pixel of the node's own images
        pixels = (len(one.train_x) + len(one.test_x)) * 28 * 28
        assert one.nbytes == pixels + 8 * (len(one.train_y) + len(one.test_y))
        # normalising a batch gives to_tensor's bits (what the float shards held before)
        rows = np.flatnonzero(np.isin(ds.test_y, one.labels))
        assert torch.equal(one.test_x[:], to_tensor(ds.test_x[rows]))
        idx = torch.tensor([3, 0, 5])
        assert torch.equal(one.train_x[idx], to_tensor(one.train_x.stored[idx].numpy()))


def test_images_and_shard_api() -> None:
    u8 = torch.randint(0, 256, (6, 1, 4, 4), dtype=torch.uint8)
    im = Images(u8)
    assert len(im) == 6 and im.shape == u8.shape and im.dtype == torch.float32
    assert torch.equal(im[2:4], normalize(u8[2:4])) and im[1].shape == (1, 4, 4)
    assert im.float().min() >= -1 and im.nbytes == u8.numel()
    f32 = torch.randn(3, 1, 4, 4)  # already float (tests, user code): passed through
    assert Images(f32)[:] is not None and torch.equal(Images(f32)[:], f32)
    with pytest.raises(TypeError):
        Images(torch.zeros(2, dtype=torch.int64))
    shard = Shard(train_x=u8, train_y=torch.zeros(6, dtype=torch.int64), test_x=u8[:2],
                  test_y=torch.zeros(2, dtype=torch.int64), labels=[0], num_classes=10,
                  input_shape=(1, 4, 4))
    assert isinstance(shard.train_x, Images) and isinstance(shard.test_x, Images)
    moved = shard.to("cpu")
    assert torch.equal(moved.train_x.stored, u8) and moved.labels == [0]
