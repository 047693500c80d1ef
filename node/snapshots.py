"""Mask snapshots: a node's binary masks written to local files on its evaluation rounds.

They are what the pictures of the learned sub-networks (the paper's Fig. 8/9: the first conv
layer's masks of chosen nodes) and the overlap between neighbours' masks over the rounds are made
from (`mcepl report`, `mcepl experiment`). Each node writes its own files where it runs; nothing
extra crosses the wire, so the communication bill is unchanged. Both drivers write them from the
round core, so they are identical in both.

Layout: ``DIR/node-<i>/round-<k>.npz`` (k zero-padded to 5 digits), one file per evaluation round
(round 0, every ``eval_every``, the last). Each file is a compressed numpy archive of plain
arrays, read with ``allow_pickle=False``: ``names`` (the layers, in model order) and for each
layer ``bits:<name>`` (``numpy.packbits`` of the flattened mask, row-major) and
``shape:<name>``. Written to a temporary file and renamed, so a crash never leaves a torn one.
Small CNN: ~6 kB per node and snapshot; AlexNet on 1x28x28: ~135 kB.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from mcepl.node.evaluation import is_eval_round

_ROUND_FILE = re.compile(r"round-(\d+)\.npz")
_NODE_DIR = re.compile(r"node-(\d+)")


def snapshot_path(directory: str | Path, node_id: int, rnd: int) -> Path:
    return Path(directory) / f"node-{node_id}" / f"round-{rnd:05d}.npz"


def save_masks(path: str | Path, masks: Mapping[str, torch.Tensor | np.ndarray]) -> Path:
    """Write `masks` (non-zero = kept) bit-packed to `path`, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"names": np.array(list(masks), dtype=str)}
    for name, m in masks.items():
        a = m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)
        a = a != 0
        arrays[f"bits:{name}"] = np.packbits(a.reshape(-1))
        arrays[f"shape:{name}"] = np.array(a.shape, dtype=np.int64)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_masks(path: str | Path) -> dict[str, np.ndarray]:
    """The masks of one snapshot file as bool arrays, in layer order. ValueError on a file that
    is not a snapshot."""
    try:
        with np.load(path, allow_pickle=False) as z:
            names = [str(n) for n in z["names"]]
            out = {}
            for n in names:
                shape = tuple(int(v) for v in z[f"shape:{n}"])
                count = int(np.prod(shape))
                bits = np.unpackbits(z[f"bits:{n}"], count=count)
                out[n] = bits.astype(bool).reshape(shape)
            return out
    except (OSError, KeyError, ValueError, EOFError) as exc:
        raise ValueError(f"{path}: not a mask snapshot ({exc})") from None


def list_snapshots(directory: str | Path) -> dict[int, dict[int, Path]]:
    """node -> round -> file, of the snapshots under `directory` ({} when there are none)."""
    out: dict[int, dict[int, Path]] = {}
    root = Path(directory)
    if not root.is_dir():
        return out
    for node_dir in sorted(root.iterdir()):
        m = _NODE_DIR.fullmatch(node_dir.name)
        if not m or not node_dir.is_dir():
            continue
        rounds = {int(f.group(1)): p for p in node_dir.iterdir()
                  if (f := _ROUND_FILE.fullmatch(p.name))}
        if rounds:
            out[int(m.group(1))] = dict(sorted(rounds.items()))
    return out


WHEN = ("eval", "final")
"""When a node writes its masks: on every evaluation round, or only after the last round."""


class MaskSnapshots:
    """Writes one node's masks on its evaluation rounds, or only after the last one (`when`);
    the round core calls `save` when `due`."""

    def __init__(self, directory: str | Path, node_id: int, every: int, rounds: int,
                 when: str = "eval") -> None:
        if when not in WHEN:
            raise ValueError(f"mask snapshots {when!r}: choose one of {', '.join(WHEN)}")
        self.directory, self.node_id = Path(directory), node_id
        self.every, self.rounds, self.when = every, rounds, when

    def due(self, rnd: int) -> bool:
        if self.when == "final":
            return rnd == self.rounds
        return is_eval_round(rnd, self.every, self.rounds)

    def save(self, rnd: int, masks: Mapping[str, torch.Tensor] | None) -> Path | None:
        """Write round `rnd`'s masks (nothing for a method without masks)."""
        if masks is None:
            return None
        return save_masks(snapshot_path(self.directory, self.node_id, rnd), masks)
