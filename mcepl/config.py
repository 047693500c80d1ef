"""The experiment config (TOML): data, model, algorithm and run sections, strictly validated.

Unknown keys and wrongly typed values are errors that name the file, section and key. The
algorithm section's keys are checked against the chosen algorithm's own `Params` dataclass, so
each algorithm declares its hyper-parameters (and the paper's defaults) in one place; the
validated `Params` instance is what `Config.algorithm.params` holds.

This module is the bottom of the stack: it imports nothing from `node`, `launcher`, `topology`
or `protocol`. Names (algorithm, model, data set, partition, weight init, mask codec) are checked
against the registries of `mcepl.registry`, which the modules owning those objects fill when
they are imported (see ARCHITECTURE.md). ``model.name`` and ``data.dataset`` may instead be an
import path ``package.module:attr`` naming the user's own factory or loader: its form is checked
here, but it is only imported by what builds the model or loads the data (`mcepl.userload`), so
a collector or a compose generator never needs the user's code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcepl import registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(ValueError):
    """A config problem, in one line that names the file and key."""


INT_MAX = 2**63 - 1  # every integer must fit a signed 64-bit value (numpy, msgpack, torch)
LOCAL_NODES_ENV = "MCEPL_LOCAL_NODES"  # node processes sharing this machine ("auto" threads)
THREADS_PER_CORE = 4  # run.threads_per_node may be at most this many times the cores


def max_threads() -> int:
    """The most torch threads a node may ask for on this machine."""
    return max(1, os.cpu_count() or 1) * THREADS_PER_CORE


@dataclass
class DataConfig:
    dataset: str = "fashion-mnist"
    root: str | None = None
    download: bool = True
    partition: str = "labels"
    labels_per_node: int = 4
    labels_file: str | None = None
    alpha: float = 0.5
    train_fraction: float = 1.0
    # set aside this fraction of each node's training shard (per label) as a validation split,
    # for choosing hyper-parameters off the test set (`mcepl experiment`); 0 = none
    val_fraction: float = 0.0


@dataclass
class ModelConfig:
    name: str = "small-cnn"  # or "package.module:factory", factory(input_shape, num_classes)
    weight_init: str = "kaiming-normal-scaled"  # models.DEFAULT_WEIGHT_INIT (no torch import here)
    logit_elu: bool = False
    # fnmatch patterns over parameter names; None: every conv and linear weight
    masked: list[str] | None = None

    def validate(self) -> None:
        if self.masked is not None:
            if not self.masked:
                raise ValueError("masked: an empty list masks nothing; leave the key out for the "
                                 "default (every conv and linear weight)")
            bad = [p for p in self.masked if not isinstance(p, str) or not p.strip()]
            if bad:
                raise ValueError(f"masked: patterns must be non-empty strings, got {bad[0]!r}")


@dataclass
class RunConfig:
    rounds: int = 300
    seed: int = 0
    eval_every: int = 25
    device: str = "cpu"
    threads_per_node: int | str = "auto"  # "auto": the usable cores / nodes on this machine
    eval_batch_size: int | str = "auto"  # "auto": sized to the model on a CPU, 2048 on a GPU
    round_timeout_s: float = 120.0
    connect_timeout_s: float = 60.0
    checkpoint: bool = True  # each node writes its state after every round (for --resume)
    codec: str = "raw"  # mask codec on the wire: raw (1 bit/entry), entropy, delta
    # directories searched first for the user's modules (model.name / data.dataset import
    # paths); relative entries are relative to the config file. Not part of the config hash.
    python_path: list[str] = field(default_factory=list)

    def validate(self) -> None:
        bad = [p for p in self.python_path if not isinstance(p, str) or not p.strip()]
        if bad:
            raise ValueError(f"python_path: entries must be non-empty strings (directories), "
                             f"got {bad[0]!r}")


@dataclass
class AlgorithmConfig:
    name: str = "mcepl"
    # the algorithm's own `Params` dataclass instance, validated (None only in a bare
    # `Config()` built without `config_from_dict`: then every parameter is the default)
    params: Any = None

    def params_dict(self) -> dict[str, Any]:
        """The parameters as a plain dict (TOML, JSON, the config hash)."""
        return {} if self.params is None else dataclasses.asdict(self.params)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        """Fully resolved, TOML/JSON-friendly form (algorithm defaults filled in)."""
        algo = {"name": self.algorithm.name, **self.algorithm.params_dict()}
        return {
            "data": dataclasses.asdict(self.data),
            "model": dataclasses.asdict(self.model),
            "algorithm": algo,
            "run": dataclasses.asdict(self.run),
        }

    def hash(self) -> str:
        """Stable digest peers compare in the handshake: same config, same hash, anywhere.

        ``run.python_path`` is left out: it says where the user's code lies on one machine (a
        container mounts it elsewhere than the host), not what runs; the names it resolves
        (``model.name``, ``data.dataset``) are hashed. ``model.masked`` is left out while it
        is the default, so configs written before it existed keep their hash."""
        d = self.to_dict()
        d["run"].pop("python_path", None)
        if d["model"].get("masked") is None:
            d["model"].pop("masked", None)
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def with_overrides(self, **sections: dict[str, Any]) -> Config:
        """A copy with some keys changed, re-validated (CLI flags use this)."""
        d = self.to_dict()
        for section, values in sections.items():
            new_name = values.get("name") if section == "algorithm" else None
            if new_name is not None and new_name != d["algorithm"]["name"]:
                d["algorithm"] = {"name": values["name"]}  # other defaults belong to the new one
            d[section].update({k: v for k, v in values.items() if v is not None})
        return config_from_dict(d, source="<overrides>")


def _allowed_types(tp: Any) -> tuple[type, ...]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        out: tuple[type, ...] = ()
        for arg in typing.get_args(tp):
            out += _allowed_types(arg)
        return out
    if origin is not None:
        return (origin,)
    if tp is float:
        return (float, int)
    return (tp,)


def build_dataclass(cls: type, values: dict[str, Any], where: str) -> Any:
    """Instantiate dataclass `cls` from `values`, naming `where` + key in every error."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a table, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, val in values.items():
        if key not in names:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(names))})")
        allowed = _allowed_types(hints[key])
        if val is None and type(None) in allowed:
            kwargs[key] = None
            continue
        if isinstance(val, bool) and bool not in allowed:
            raise ConfigError(f"{where}.{key}: expected {_type_names(allowed)}, got a boolean")
        if not isinstance(val, allowed):
            raise ConfigError(f"{where}.{key}: expected {_type_names(allowed)}, "
                              f"got {type(val).__name__} {val!r}")
        if isinstance(val, int) and not isinstance(val, bool) and not -INT_MAX - 1 <= val \
                <= INT_MAX:
            raise ConfigError(f"{where}.{key}: an integer of {val.bit_length()} bits does not "
                              "fit in 64 bits")
        if float in allowed and isinstance(val, int):
            val = float(val)  # TOML writes 1 for 1.0; keep the declared type
        if isinstance(val, float) and not math.isfinite(val):
            raise ConfigError(f"{where}.{key}: must be a finite number, got {val}")
        kwargs[key] = val
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except ValueError as exc:
            raise ConfigError(f"{where}.{exc}") from None
    return obj


def _type_names(allowed: tuple[type, ...]) -> str:
    return " or ".join(sorted({"null" if t is type(None) else t.__name__ for t in allowed}))


def _check_name(where: str, value: str, reg: registry.Registry) -> None:
    """A registered name, or (models, data sets) a well-formed import path."""
    try:
        reg.check_name(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _check_choice(where: str, value: str, choices: typing.Iterable[str]) -> None:
    choices = list(choices)
    if value not in choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(choices)}")


def config_from_dict(d: dict[str, Any], source: str = "<config>") -> Config:
    """Validate a parsed TOML document into a Config.

    The registries must have been filled (the node layer imported); an empty one raises
    `mcepl.registry.RegistryError`, a programming error rather than a config error."""
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: expected a TOML document")
    known = {"data", "model", "algorithm", "run"}
    for key in d:
        if key not in known:
            raise ConfigError(f"{source}: unknown section [{key}] "
                              f"(known: {', '.join(sorted(known))})")
    data = build_dataclass(DataConfig, d.get("data", {}), f"{source}: data")
    model = build_dataclass(ModelConfig, d.get("model", {}), f"{source}: model")
    run = build_dataclass(RunConfig, d.get("run", {}), f"{source}: run")
    algo_d = dict(d.get("algorithm", {}))
    if not isinstance(algo_d, dict):
        raise ConfigError(f"{source}: [algorithm] must be a table")
    name = algo_d.pop("name", "mcepl")
    if not isinstance(name, str):
        raise ConfigError(f"{source}: algorithm.name: expected str")
    _check_choice(f"{source}: algorithm.name", name, registry.ALGORITHMS.require())
    params = build_dataclass(registry.ALGORITHMS[name].Params, algo_d, f"{source}: algorithm")
    algo = AlgorithmConfig(name=name, params=params)

    _check_name(f"{source}: data.dataset", data.dataset, registry.DATASETS)
    _check_choice(f"{source}: data.partition", data.partition, registry.PARTITIONS.require())
    _check_name(f"{source}: model.name", model.name, registry.MODELS)
    if model.logit_elu and not registry.MODELS.is_builtin(model.name):
        raise ConfigError(f"{source}: model.logit_elu: applies to the built-in models "
                          f"({', '.join(registry.MODELS)}); a user model puts what it needs on "
                          f"its logits in its own forward")
    _check_choice(f"{source}: model.weight_init", model.weight_init,
                  registry.WEIGHT_INITS.require())
    _check_choice(f"{source}: run.codec", run.codec, registry.MASK_CODECS.require())
    positive = {
        "data.labels_per_node": data.labels_per_node, "data.alpha": data.alpha,
        "run.rounds": run.rounds, "run.eval_every": run.eval_every,
        "run.round_timeout_s": run.round_timeout_s, "run.connect_timeout_s": run.connect_timeout_s,
    }
    for key, val in positive.items():
        if val <= 0:
            raise ConfigError(f"{source}: {key}: must be > 0, got {val}")
    for key, val in {"run.threads_per_node": run.threads_per_node,
                     "run.eval_batch_size": run.eval_batch_size}.items():
        if isinstance(val, str) and val != "auto" or isinstance(val, int) and val <= 0:
            raise ConfigError(f'{source}: {key}: must be a positive int or "auto", got {val!r}')
    if not 0.0 < data.train_fraction <= 1.0:
        raise ConfigError(f"{source}: data.train_fraction: must be in (0, 1], "
                          f"got {data.train_fraction}")
    if not 0 <= run.seed <= INT_MAX:
        raise ConfigError(f"{source}: run.seed: must be in 0..2^63-1, got {run.seed}")
    if isinstance(run.threads_per_node, int) and run.threads_per_node > max_threads():
        raise ConfigError(f"{source}: run.threads_per_node: must be in 1..{max_threads()} "
                          f"({THREADS_PER_CORE} x the {os.cpu_count()} cores), got "
                          f"{run.threads_per_node}")
    if not 0.0 <= data.val_fraction < 1.0:
        raise ConfigError(f"{source}: data.val_fraction: must be in [0, 1), "
                          f"got {data.val_fraction}")
    if not (run.device == "cpu" or run.device == "cuda" or run.device.startswith("cuda:")
            or run.device == "mps"):
        raise ConfigError(f"{source}: run.device: {run.device!r} is not cpu, cuda, cuda:N or mps")
    return Config(data=data, model=model, algorithm=algo, run=run)


def load_config(path: str | Path | None) -> Config:
    """Read and validate a TOML config; None gives the defaults."""
    if path is None:
        return config_from_dict({}, source="<defaults>")
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start}): is this a TOML file?") from None
    cfg = loads_config(text, source=str(p))
    # python_path entries are relative to the config file: the same file works from anywhere,
    # and the copy a launcher writes into a run directory still points at the same places
    base = p.resolve().parent
    cfg.run.python_path = [str((base / Path(e).expanduser()).resolve())
                           for e in cfg.run.python_path]
    return cfg


def loads_config(text: str, source: str = "<config>") -> Config:
    """Parse and validate TOML text; every problem is one ConfigError naming `source`."""
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits
        raise ConfigError(f"{source}: not valid TOML: {' '.join(str(exc).split())[:200]}") \
            from None
    return config_from_dict(d, source=source)


def dump_toml(cfg: Config) -> str:
    """Write a Config back as TOML (run directories keep the exact config used)."""
    lines: list[str] = []
    for section, values in cfg.to_dict().items():
        lines.append(f"[{section}]")
        for key, val in values.items():
            if val is None:
                continue  # TOML has no null; absence means the default (None)
            lines.append(f"{key} = {_toml_value(val)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")
