"""The run directory, in one place: where it goes by default, claiming it so that no two runs
ever share one, and the files every driver writes into it before the first round (run.json,
config.toml, topology.json, logs/).

Used by `mcepl launch` (networked and `--inprocess`) and `mcepl collect`, so the three agree on
the layout (see the README's Quickstart for the whole tree).

Claiming is atomic: `run.json` is created with O_CREAT | O_EXCL, so of two launches given the
same directory at the same moment exactly one proceeds; the other gets one line naming the run
that holds it. A directory that already exists but holds no run (e.g. `mkdir -p results` before
`docker compose up`) may be claimed. The default directory, runs/<time>-<algorithm>, gets a
suffix (-2, -3, ...) when another run claimed that name first (two launches in the same second).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mcepl.config import Config, dump_toml
from mcepl.topology import Topology, TopologyError, save_topology

METRICS = "metrics.jsonl"
CLAIM = "run.json"
MAX_SUFFIX = 1000  # runs/<time>-<algo>-2 .. -1000 before giving up


class RunDirError(ValueError):
    """The run directory cannot be used (one line naming it)."""


def default_run_dir(algorithm: str, now: datetime | None = None) -> Path:
    """runs/<time>-<algorithm> under the current directory (`claim(..., unique=True)` adds a
    suffix when it is taken)."""
    return Path("runs") / f"{(now or datetime.now()):%Y%m%d-%H%M%S}-{algorithm}"


def _holder(p: Path) -> str:
    try:
        d = json.loads((p / CLAIM).read_text())
        return f" (started {d.get('started', '?')} by pid {d.get('pid', '?')} on " \
               f"{d.get('host', '?')})"
    except (OSError, ValueError, AttributeError):
        return ""


def _oserror(p: Path, exc: OSError) -> RunDirError:
    if isinstance(exc, NotADirectoryError) or exc.errno == errno.ENOTDIR:
        return RunDirError(f"{p}: cannot use as run directory: part of the path is a file, "
                           "not a directory; choose another --out")
    if isinstance(exc, FileExistsError) or exc.errno == errno.EEXIST:
        bad = Path(exc.filename) if exc.filename else p
        return RunDirError(f"{p}: cannot use as run directory: {bad} exists and is not a "
                           "directory; choose another --out")
    return RunDirError(f"{p}: cannot use as run directory: {exc.strerror or exc}; choose "
                       "another --out")


def check_unused(path: str | Path) -> Path:
    """`path` as a Path, or RunDirError when it already holds a run or cannot be a directory
    (a quick check before the work starts; `claim` is the atomic one)."""
    p = Path(path)
    if (p / CLAIM).exists():
        raise RunDirError(f"{p} already holds a run{_holder(p)}; choose another --out")
    if (p / METRICS).exists():
        raise RunDirError(f"{p} already holds a run ({METRICS}); choose another --out")
    if p.exists() and not p.is_dir():
        raise RunDirError(f"{p}: cannot use as run directory: it exists and is not a directory; "
                          "choose another --out")
    return p


def _try_claim(p: Path) -> bool | None:
    """Make `p` and create its claim file; False when another run holds it, else whether the
    directory was made here (True) or existed, empty of runs (None)."""
    made = not p.exists()
    try:
        p.mkdir(parents=True, exist_ok=True)
        if (p / METRICS).exists():  # a run from before claim files
            return False
        fd = os.open(p / CLAIM, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError as exc:
        if exc.filename is not None and Path(exc.filename).name == CLAIM:
            return False
        raise _oserror(p, exc) from None
    except OSError as exc:
        raise _oserror(p, exc) from None
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.now().isoformat(timespec="seconds"), "argv": sys.argv}
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(info, indent=1) + "\n")
    return True if made else None


def claim(path: str | Path, *, unique: bool = False) -> tuple[Path, bool]:
    """Create (or adopt an empty existing) run directory and claim it atomically; returns the
    path claimed and whether it was created here. RunDirError when it holds a run, or cannot be
    made. `unique`: try `path`, then `path-2`, `path-3`, ... (the default directory)."""
    p = Path(path)
    for k in range(1, MAX_SUFFIX + 1 if unique else 2):
        cand = p if k == 1 else p.with_name(f"{p.name}-{k}")
        got = _try_claim(cand)
        if got is not False:
            return cand, bool(got)
    why = _holder(p) if (p / CLAIM).exists() else f" ({METRICS})"
    raise RunDirError(f"{p} already holds a run{why}; choose another --out")


@dataclass(frozen=True)
class RunDir:
    """A claimed run directory being written; `create` claims and fills it. `created`: the
    directory did not exist before the claim (`abandon` may remove it)."""

    path: Path
    created: bool = False

    @classmethod
    def claim(cls, path: str | Path, *, unique: bool = False) -> RunDir:
        p, created = claim(path, unique=unique)
        return cls(p, created)

    def abandon(self) -> None:
        """Give the directory back after a failure before any round ran (nothing collected):
        remove what the claim and the set-up wrote, and the directory itself if this run made
        it, so the same --out can be used again once the problem is fixed. A directory holding
        records is left alone."""
        if self.metrics.exists() and self.metrics.stat().st_size:
            return
        for f in (self.metrics, self.config, self.topology, self.claim_file,
                  self.path / "collector.json"):
            try:
                f.unlink()
            except OSError:
                pass
        for d in (self.keys, self.checkpoints, self.logs):
            shutil.rmtree(d, ignore_errors=True)
        if self.created:
            try:
                self.path.rmdir()
            except OSError:
                pass

    @classmethod
    def create(cls, path: str | Path | RunDir, cfg: Config, topo: Topology | None = None, *,
               logs: bool = False) -> RunDir:
        """Claim the directory (unless `path` is a RunDir already claimed), write config.toml
        (all defaults filled in) and, when given, topology.json; `logs` also makes logs/ for
        the node logs. RunDirError (one line) when it is used or cannot be written."""
        rd = path if isinstance(path, RunDir) else cls.claim(path)
        try:
            if logs:
                rd.logs.mkdir(exist_ok=True)
            rd.config.write_text(dump_toml(cfg))
        except OSError as exc:
            raise _oserror(rd.path, exc) from None
        if topo is not None:
            rd.write_topology(topo)
        return rd

    def write_topology(self, topo: Topology) -> None:
        """topology.json, the exact topology the nodes run (keys included, when secure)."""
        try:
            save_topology(topo, self.topology)
        except TopologyError as exc:
            raise RunDirError(str(exc)) from None

    @property
    def claim_file(self) -> Path:
        return self.path / CLAIM

    @property
    def config(self) -> Path:
        return self.path / "config.toml"

    @property
    def topology(self) -> Path:
        return self.path / "topology.json"

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def keys(self) -> Path:
        return self.path / "keys"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def node_log(self, node_id: int) -> Path:
        return self.logs / f"node-{node_id}.log"
