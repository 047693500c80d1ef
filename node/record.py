"""`RoundRecord`: what one node reports about one round, in both drivers.

Its JSON form (`to_json`) is exactly one line of a run's `metrics.jsonl` and the body of a
`metrics` message to the collector. The algorithm's own numbers (`Algorithm.stats()`: train
loss, density, ...) are flat keys beside the fixed fields, so a record stays one flat object.

Reading (`from_json`, used by the collector on what arrives from the network and by the report on
what is on disk) is deliberate about what it does not know:

- `round` and `node` are required non-negative integers; a known field of the wrong type, a
  nested value, or a record of a newer `schema_version` than this code is a `RecordError` (the
  collector drops and counts such a record, the report skips the line: never a crash);
- a missing counter reads as 0 and a missing optional field as absent (records written before
  schema 1 lacked `schema_version`, and in-process records lacked `comm_s`, `control_bytes`,
  `dropped`, ...);
- any other key with a number or null is an algorithm statistic and is kept;
- JSON has no NaN: a NaN is written as null, and null reads back as NaN for the float fields.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

# 1: the first typed record; 2: adds `dropped_by` (a string: an older reader refuses the record
# with "newer schema" instead of a puzzling key error) and `bytes_sent_status`
SCHEMA_VERSION = 2


class RecordError(ValueError):
    """A metrics record that cannot be read (one line naming the key)."""


@dataclass
class RoundRecord:
    """One node's numbers for one round (see the README's metrics table for each field)."""

    round: int
    node: int
    # training payload ("data" messages)
    bytes_sent: int = 0
    bytes_received: int = 0
    msgs_sent: int = 0
    msgs_received: int = 0
    bytes_arrived_data: int = 0
    # handshake ("control" hellos and their "ack"s)
    bytes_sent_control: int = 0
    bytes_received_control: int = 0
    control_bytes: int = 0
    # masks handed to the transport and their codec
    mask_entries: int = 0
    mask_bytes: int = 0
    bits_per_entry: float | None = None
    peer_bytes: str | None = None
    # time (seconds)
    encode_s: float = 0.0
    decode_s: float = 0.0
    compute_s: float = 0.0
    comm_s: float = 0.0
    # robustness
    dropped: int = 0
    dropped_by: str | None = None  # the same by reason: "REASON:COUNT ..." (networked only)
    rejected: int | None = None
    # evaluation rounds only
    test_acc: float | None = None
    eval_s: float | None = None
    t_end: float = 0.0
    bytes_sent_metrics: int | None = None
    bytes_sent_status: int = 0  # "waiting for ..." status messages to the collector, this round
    stats: dict[str, float | None] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        """The flat JSON object of metrics.jsonl: fields that are None are left out, NaN -> null,
        the algorithm's stats beside the fields."""
        out: dict[str, Any] = {}
        for f in _FIELDS:
            if f.name == "stats":
                continue
            v = getattr(self, f.name)
            if v is not None:
                out[f.name] = _nan_to_none(v)
        for k, v in self.stats.items():
            if k in _FIELD_NAMES:
                raise RecordError(f"algorithm statistic {k!r} clashes with a record field")
            out[k] = _nan_to_none(v)
        return out

    @classmethod
    def from_json(cls, d: Any) -> RoundRecord:
        """Validate a record read from disk or the network (see the module docstring)."""
        if not isinstance(d, dict):
            raise RecordError(f"a record is a JSON object, got {type(d).__name__}")
        version = d.get("schema_version", 1)  # records before schema 1 had no version
        if not _is_int(version) or version < 1:
            raise RecordError(f"schema_version: expected a positive integer, got {version!r}")
        if version > SCHEMA_VERSION:
            raise RecordError(f"schema_version {version} is newer than this mcepl's "
                              f"{SCHEMA_VERSION}: upgrade the collector/report side")
        kwargs: dict[str, Any] = {}
        stats: dict[str, float | None] = {}
        for key, val in d.items():
            if not isinstance(key, str):
                raise RecordError(f"key {key!r} is not a string")
            kind = _KINDS.get(key)
            if kind is None:
                if val is not None and (not isinstance(val, (int, float)) or isinstance(val, bool)):
                    raise RecordError(f"{key}: unknown key with a non-numeric value {val!r:.40}")
                stats[key] = _in_range(key, val) if _is_int(val) else val
            else:
                kwargs[key] = _check(key, kind, val)
        kwargs.setdefault("schema_version", version)
        for key in ("round", "node"):
            if key not in kwargs or kwargs[key] is None:
                raise RecordError(f"{key}: missing")
            if kwargs[key] < 0:
                raise RecordError(f"{key}: must be >= 0, got {kwargs[key]}")
        return cls(**kwargs, stats=stats)


def _nan_to_none(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


INT_MAX = 2**63 - 1  # JSON has no bound on integers; a record's fit 64 bits (found by fuzzing)


def _in_range(key: str, val: int) -> int:
    if not -INT_MAX - 1 <= val <= INT_MAX:
        raise RecordError(f"{key}: integer out of the 64-bit range ({val.bit_length()} bits)")
    return val


def _check(key: str, kind: str, val: Any) -> Any:
    if _is_int(val):
        _in_range(key, val)
    if kind == "int":
        if not _is_int(val):
            raise RecordError(f"{key}: expected an integer, got {val!r:.40}")
        return val
    if kind == "int?":
        if val is not None and not _is_int(val):
            raise RecordError(f"{key}: expected an integer or null, got {val!r:.40}")
        return val
    if kind == "str?":
        if val is not None and not isinstance(val, str):
            raise RecordError(f"{key}: expected a string, got {val!r:.40}")
        return val
    # float fields: ints are accepted (JSON writes 1.0 as 1 in some tools); null is NaN
    if val is None:
        return None if kind == "float?" and key == "eval_s" else math.nan
    if _is_int(val) or isinstance(val, float):
        return float(val)
    raise RecordError(f"{key}: expected a number, got {val!r:.40}")


_FIELDS = dataclasses.fields(RoundRecord)
_FIELD_NAMES = frozenset(f.name for f in _FIELDS)
_KINDS: dict[str, str] = {
    f.name: {"int": "int", "int | None": "int?", "float": "float", "float | None": "float?",
             "str | None": "str?"}[str(f.type)]
    for f in _FIELDS if f.name != "stats"
}
