"""A node's checkpoint: everything needed to rejoin a run after a crash, written atomically.

Written after every round (write to a temporary file, fsync, rename), so a crash at any moment
leaves either the previous or the new checkpoint, never a torn one. Loaded with
`weights_only=True`: only tensors and plain containers, nothing executable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from mcepl.protocol.payload import Payload

FORMAT = 1


def checkpoint_path(directory: str | Path, node_id: int) -> Path:
    return Path(directory) / f"node-{node_id}.ckpt"


def payload_to_dict(p: Payload) -> dict[str, Any]:
    return {"kind": p.kind, "tensors": dict(p.tensors)}


def payload_from_dict(d: dict[str, Any]) -> Payload:
    return Payload(d["kind"], dict(d["tensors"]))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomically replace `path` with `state` (a dict of tensors, numbers, strings, containers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path, *, run_id: str, config_hash: str, node_id: int) -> dict[str, Any]:
    """Read a checkpoint, refusing one of another run, config or node with a clear error."""
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint to resume from at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise ValueError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not an mcepl checkpoint (format {FORMAT})")
    for key, want in (("run_id", run_id), ("config_hash", config_hash), ("node", node_id)):
        if state.get(key) != want:
            raise ValueError(f"{path}: checkpoint is for {key} {state.get(key)!r}, "
                             f"this node has {want!r}")
    return state
