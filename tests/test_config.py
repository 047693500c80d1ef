"""The experiment config (mcepl/config.py): strict validation, TOML round trip, overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mcepl.config import Config, ConfigError, config_from_dict, dump_toml, load_config
from mcepl.node.algorithms.mcepl import IndMaskParams, MaskParams


def _write(tmp_path: Path, text: str, name: str = "exp.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# --------------------------------------------------------------------------- defaults


def test_defaults_load() -> None:
    cfg = load_config(None)
    assert isinstance(cfg, Config)
    assert cfg.algorithm.name == "mcepl"
    assert cfg.algorithm.params == MaskParams()
    assert cfg.model.name == "small-cnn" and cfg.data.dataset == "fashion-mnist"
    assert cfg.run.rounds > 0 and cfg.run.seed == 0
    assert cfg == config_from_dict({})
    assert cfg.hash() == config_from_dict({}).hash()


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, "")) == load_config(None)


def test_int_for_float_is_accepted_and_converted() -> None:
    cfg = config_from_dict({"algorithm": {"lr": 2}, "data": {"alpha": 1}})
    assert cfg.algorithm.params.lr == 2.0 and isinstance(cfg.algorithm.params.lr, float)
    assert isinstance(cfg.data.alpha, float)


# --------------------------------------------------------------------------- errors


def test_unknown_section_named() -> None:
    with pytest.raises(ConfigError, match="bogus"):
        config_from_dict({"bogus": {}})


@pytest.mark.parametrize(("d", "key"), [
    ({"run": {"roundz": 3}}, "run.roundz"),
    ({"data": {"colour": "red"}}, "data.colour"),
    ({"model": {"depth": 3}}, "model.depth"),
    ({"algorithm": {"learning_rate": 0.1}}, "algorithm.learning_rate"),
])
def test_unknown_key_named(d: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_dict(d)


@pytest.mark.parametrize(("d", "key"), [
    ({"run": {"rounds": "3"}}, "run.rounds"),
    ({"run": {"rounds": 3.5}}, "run.rounds"),
    ({"run": {"rounds": True}}, "run.rounds"),
    ({"data": {"download": "yes"}}, "data.download"),
    ({"data": {"root": 5}}, "data.root"),
    ({"model": {"logit_elu": 1}}, "model.logit_elu"),
    ({"algorithm": {"lr": "fast"}}, "algorithm.lr"),
    ({"algorithm": {"batch_size": 16.0}}, "algorithm.batch_size"),
    ({"algorithm": {"group_lasso": False}}, "algorithm.group_lasso"),
])
def test_wrong_type_named(d: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_dict(d)


@pytest.mark.parametrize(("params", "key"), [
    ({"init_neighbor_masks": "x"}, "init_neighbor_masks"),
    ({"lr": -1}, "lr"),
    ({"lr": 0.0}, "lr"),
    ({"batch_size": 0}, "batch_size"),
    ({"fil_threshold": -2}, "fil_threshold"),
    ({"linear_retention": 1.5}, "linear_retention"),
    ({"lr_ft": -0.5}, "lr_ft"),
])
def test_algorithm_params_validated(params: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        config_from_dict({"algorithm": {"name": "mcepl", **params}})
    with pytest.raises(ConfigError, match=key):
        config_from_dict({"algorithm": {"name": "ind-mask", **params}})


def test_unknown_algorithm_and_choices() -> None:
    with pytest.raises(ConfigError, match="algorithm.name"):
        config_from_dict({"algorithm": {"name": "sgd-magic"}})
    with pytest.raises(ConfigError, match="model.name"):
        config_from_dict({"model": {"name": "resnet9000"}})
    with pytest.raises(ConfigError, match="data.dataset"):
        config_from_dict({"data": {"dataset": "imagenet"}})
    with pytest.raises(ConfigError, match="run.rounds"):
        config_from_dict({"run": {"rounds": 0}})
    with pytest.raises(ConfigError, match="run.device"):
        config_from_dict({"run": {"device": "tpu"}})


def test_valid_params_accepted() -> None:
    cfg = config_from_dict({"algorithm": {"name": "mcepl", "init_neighbor_masks": "shared-random",
                                          "lr": 10, "lr_ft": 10.0, "linear_retention": 0.9,
                                          "fil_threshold": 20, "group_lasso": 0}})
    p = cfg.algorithm.params
    assert p.init_neighbor_masks == "shared-random" and p.fil_threshold == 20
    assert p.lr == 10.0 and p.linear_retention == 0.9 and p.group_lasso == 0.0


def test_toml_parse_error_names_file(tmp_path: Path) -> None:
    p = _write(tmp_path, "[run]\nrounds = = 3\n", name="broken.toml")
    with pytest.raises(ConfigError, match="broken.toml") as info:
        load_config(p)
    assert str(p) in str(info.value)


def test_errors_in_file_name_file_and_key(tmp_path: Path) -> None:
    p = _write(tmp_path, "[run]\nroundz = 3\n", name="typo.toml")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert str(p) in str(info.value) and "run.roundz" in str(info.value)
    q = _write(tmp_path, '[algorithm]\nname = "mcepl"\ninit_neighbor_masks = "x"\n', "bad.toml")
    with pytest.raises(ConfigError) as info:
        load_config(q)
    assert str(q) in str(info.value) and "init_neighbor_masks" in str(info.value)


def test_missing_file_names_file(tmp_path: Path) -> None:
    p = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError, match="nowhere.toml"):
        load_config(p)


# --------------------------------------------------------------------------- round trip


def _custom() -> Config:
    return config_from_dict({
        "data": {"root": "/tmp/some where/data", "download": False, "labels_per_node": 3,
                 "alpha": 0.1, "train_fraction": 0.25},
        "model": {"name": "alexnet", "weight_init": "uniform", "logit_elu": True},
        "algorithm": {"name": "mcepl", "lr": 10, "lr_ft": 0.3, "weight_decay": 5e-4,
                      "group_lasso": 0.0, "fil_threshold": 20, "linear_retention": 0.9,
                      "init_neighbor_masks": "shared-random", "batch_size": 64},
        "run": {"rounds": 400, "seed": 7, "eval_every": 10, "round_timeout_s": 12.5},
    })


@pytest.mark.parametrize("make", [lambda: load_config(None), _custom])
def test_dump_toml_round_trip(tmp_path: Path, make) -> None:
    cfg = make()
    p = _write(tmp_path, dump_toml(cfg))
    back = load_config(p)
    assert back == cfg
    assert back.to_dict() == cfg.to_dict()
    assert back.hash() == cfg.hash()
    assert dump_toml(back) == dump_toml(cfg)


def test_hash_changes_with_any_value() -> None:
    base = load_config(None)
    assert base.with_overrides(run={"seed": 1}).hash() != base.hash()
    assert base.with_overrides(algorithm={"lr": 0.5}).hash() != base.hash()
    assert base.with_overrides(data={"download": False}).hash() != base.hash()


# --------------------------------------------------------------------------- overrides


def test_with_overrides() -> None:
    cfg = load_config(None)
    new = cfg.with_overrides(run={"rounds": 7, "seed": None}, algorithm={"lr": 0.5},
                             data={"root": "/data"})
    assert new.run.rounds == 7
    assert new.run.seed == cfg.run.seed  # None means "not given"
    assert new.algorithm.params.lr == 0.5
    assert new.data.root == "/data"
    assert new.algorithm.name == "mcepl"
    # the original is untouched
    assert cfg.run.rounds != 7 and cfg.algorithm.params.lr == 1.0 and cfg.data.root is None
    # other algorithm params survive an override of one of them
    tuned = cfg.with_overrides(algorithm={"batch_size": 16}).with_overrides(algorithm={"lr": 3})
    assert tuned.algorithm.params.batch_size == 16 and tuned.algorithm.params.lr == 3.0


def test_with_overrides_validates() -> None:
    cfg = load_config(None)
    with pytest.raises(ConfigError, match="run.rounds"):
        cfg.with_overrides(run={"rounds": -1})
    with pytest.raises(ConfigError, match="algorithm.nonsense"):
        cfg.with_overrides(algorithm={"nonsense": 1})
    with pytest.raises(ConfigError, match="init_neighbor_masks"):
        cfg.with_overrides(algorithm={"init_neighbor_masks": "x"})


def test_switching_algorithm_resets_params() -> None:
    cfg = config_from_dict({"algorithm": {"name": "mcepl", "lr": 10, "batch_size": 8,
                                          "init_neighbor_masks": "shared-random"}})
    switched = cfg.with_overrides(algorithm={"name": "ind-mask"})
    assert switched.algorithm.name == "ind-mask"
    assert switched.algorithm.params == IndMaskParams()
    # keys given together with the new name apply on top of the new defaults
    with_lr = cfg.with_overrides(algorithm={"name": "ind-mask", "lr": 0.25})
    assert with_lr.algorithm.params == dataclasses.replace(IndMaskParams(), lr=0.25)
    # the same name is not a switch: params are kept
    same = cfg.with_overrides(algorithm={"name": "mcepl"})
    assert same.algorithm.params == cfg.algorithm.params


def test_tiny_cfg_fixture(tiny_cfg, tiny_data_dir: Path) -> None:
    cfg = tiny_cfg()
    assert cfg.data.root == str(tiny_data_dir) and cfg.data.download is False
    assert cfg.model.name == "small-cnn" and cfg.run.rounds == 3 and cfg.run.eval_every == 1
    assert cfg.algorithm.name == "mcepl" and cfg.algorithm.params.batch_size == 16
    other = tiny_cfg(algorithm={"name": "ind-mask", "lr": 0.5}, run={"seed": 3})
    assert other.algorithm.name == "ind-mask" and other.algorithm.params.lr == 0.5
    assert other.algorithm.params.batch_size == 16 and other.run.seed == 3
    assert tiny_cfg({"run": {"rounds": 2}}).run.rounds == 2


# --------------------------------------------------------------------------- the bottom layer


def test_config_hash_is_pinned() -> None:
    """Typed params flatten exactly as before: the hash (on the wire, in run ids) is unchanged.

    Issue 13 changed defaults (run.threads_per_node and run.eval_batch_size "auto", mcepl's
    micro_batch "auto"), hence new pins; with the old values given explicitly a config without
    the new key still hashes as before. Issue 14 changed model.weight_init's default to
    "kaiming-normal-scaled": new pins again, and the old default given explicitly hashes as
    before. Adding data.val_fraction (issue 14, a new key is a new config) changed them all.
    dsgd's default lr became 0.1, the rate searched on Fashion-MNIST (issue 14): new dsgd pins."""
    assert config_from_dict({}).hash() == "91ea55e6405aef8a"
    assert config_from_dict({"algorithm": {"name": "dsgd"}}).hash() == "be545c1246418ffb"
    assert config_from_dict({"algorithm": {"name": "dispfl", "lr": 0.5},
                             "run": {"codec": "delta"}}).hash() == "0cb242127b5cb15c"
    old_model = {"weight_init": "default"}
    assert config_from_dict({"model": old_model}).hash() == "780961b5b5de08fc"
    old_run = {"threads_per_node": 1, "eval_batch_size": 1000}
    assert config_from_dict({"algorithm": {"name": "dsgd"}, "model": old_model,
                             "run": old_run}).hash() == "bd15fce01b2a7460"


def test_config_alone_imports_nothing_above_and_says_what_is_missing() -> None:
    """mcepl.config imports no layer above it; validating with empty registries is a clear
    error naming what to import, not an upward import."""
    import subprocess
    import sys

    code = ("import sys\nimport mcepl.config as c\n"
            "assert not [m for m in sys.modules if m.startswith(('mcepl.node', 'mcepl.launcher',"
            " 'mcepl.topology', 'mcepl.protocol'))], sorted(sys.modules)\n"
            "c.config_from_dict({})\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert "RegistryError: no algorithm is registered: import mcepl.node.algorithms" in \
        proc.stderr, proc.stderr
