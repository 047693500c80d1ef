"""The user's own model and data set, named by import path in the config (mcepl/userload.py,
node/models, node/data/userdata.py): imported only when named, found through run.python_path
and the current directory, the same fixed weights in every process, user data partitioned and
evaluated like the built-ins, and every way it can go wrong as one line and exit code 2: from
`mcepl launch` before any node process exists, from `mcepl launch --inprocess`, and from
`mcepl node` alone."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from mcepl.config import ConfigError, config_from_dict, dump_toml, load_config
from mcepl.launcher.cli import main
from mcepl.node.data import load_dataset
from mcepl.node.factory import (
    all_shards,
    build_algorithm,
    build_evaluator,
    build_shared_model,
)
from mcepl.node.inprocess import run_inprocess
from mcepl.node.models import MaskedModel, build_model, weights_digest
from mcepl.registry import DATASETS, MODELS, Registry, RegistryError
from mcepl.topology import generate, save_topology
from mcepl.userload import UserCodeError, add_search_path, load, parse

MODULE = "mcepl_user_tiny"  # a name nothing else uses: the module lives in a temporary folder

USER_CODE = textwrap.dedent('''
    """A tiny model and data set for the tests, outside the package."""
    import random

    import numpy as np
    import torch
    from torch import nn

    CLASSES = 4


    class TinyNet(nn.Module):
        def __init__(self, c, classes):
            super().__init__()
            self.conv = nn.Conv2d(c, 3, 3, bias=False)
            self.norm = nn.BatchNorm2d(3, affine=False)
            self.head = nn.Linear(3 * 6 * 6, 8)
            self.out = nn.Linear(8, classes)
            self.temperature = nn.Parameter(torch.ones(()))

        def forward(self, x):
            h = torch.relu(self.norm(self.conv(x))).flatten(1)
            return self.out(torch.relu(self.head(h))) * self.temperature


    def tiny_net(input_shape, num_classes):
        return TinyNet(input_shape[0], num_classes)


    def numpy_init_net(input_shape, num_classes):
        """Draws its weights from numpy's and Python's global RNGs."""
        net = TinyNet(input_shape[0], num_classes)
        with torch.no_grad():
            net.out.weight.copy_(torch.from_numpy(np.random.standard_normal(net.out.weight.shape)))
            net.out.bias.fill_(random.random())
        return net


    def _arrays(seed, dtype):
        rng = np.random.default_rng(seed)
        templates = rng.uniform(-1, 1, size=(CLASSES, 2, 8, 8))
        out = []
        for per_class in (30, 10):
            y = np.arange(CLASSES * per_class) % CLASSES
            x = templates[y] + rng.normal(0, 0.5, size=(len(y), 2, 8, 8))
            if dtype == "uint8":
                x = np.clip((x + 2) * 60, 0, 255).round().astype(np.uint8)
            else:
                x = x.astype(np.float64)
            out += [x, y.astype(np.int32)]
        return out


    def tiny_data(root):
        x_train, y_train, x_test, y_test = _arrays(7, "float")
        return torch.from_numpy(x_train), y_train, x_test, torch.from_numpy(y_test), CLASSES


    def tiny_data_u8(root):
        return (*_arrays(7, "uint8"), CLASSES)


    def from_root(root):
        """Data read from `root` (a file the test changes)."""
        x_train, y_train, x_test, y_test = _arrays(int(open(root + "/seed").read()), "float")
        return x_train, y_train, x_test, y_test, CLASSES


    def counted(root):
        """from_root, counting its calls in root/calls."""
        with open(root + "/calls", "a") as f:
            f.write("call\\n")
        return from_root(root)


    def bn1d_net(input_shape, num_classes):
        """BatchNorm1d cannot train on a single sample: nothing may run it in train mode on
        one (a probe of the model's size, say)."""
        return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), 6),
                             nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, num_classes))


    # --- broken on purpose
    def not_a_module(input_shape, num_classes):
        return {"conv": 3}


    def no_maskable_layer(input_shape, num_classes):
        return nn.Sequential(nn.Flatten(), nn.Softmax(dim=1))


    def too_many_outputs(input_shape, num_classes):
        return TinyNet(input_shape[0], num_classes + 3)


    def crashing_factory(input_shape, num_classes):
        raise RuntimeError("out of ideas")


    def short_labels(root):
        x_train, y_train, x_test, y_test = _arrays(7, "float")
        return x_train, y_train[:-5], x_test, y_test, CLASSES


    def labels_out_of_range(root):
        x_train, y_train, x_test, y_test = _arrays(7, "float")
        return x_train, y_train, x_test, y_test, CLASSES - 1


    def int_images(root):
        x_train, y_train, x_test, y_test = _arrays(7, "float")
        return x_train.astype(np.int64), y_train, x_test.astype(np.int64), y_test, CLASSES


    def three_things(root):
        return 1, 2, 3


    NOT_CALLABLE = 42
''')


@pytest.fixture(scope="module")
def code_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("usercode")
    (d / f"{MODULE}.py").write_text(USER_CODE)
    (d / "mcepl_user_broken.py").write_text("import json\nVALUE = 1 / 0\n")
    return d


def user_cfg(code_dir: Path, model: str = "tiny_net", data: str = "tiny_data",
             **sections: dict) -> object:
    d = {"data": {"dataset": f"{MODULE}:{data}", "labels_per_node": 2},
         "model": {"name": f"{MODULE}:{model}"},
         "algorithm": {"name": "mcepl", "batch_size": 8},
         "run": {"rounds": 3, "eval_every": 1, "python_path": [str(code_dir)]}}
    for section, values in sections.items():
        d.setdefault(section, {}).update(values)
    return config_from_dict(d, source="<user_cfg>")


# --------------------------------------------------------------------------- config and names


def test_config_checks_the_form_but_imports_nothing() -> None:
    cfg = config_from_dict({"model": {"name": "no_such_package.models:resnet"},
                            "data": {"dataset": "no_such_package.data:load"}})
    assert cfg.model.name == "no_such_package.models:resnet"
    assert "no_such_package" not in sys.modules
    for bad in ("resnet:", ":resnet", "my-models:resnet", "a:b:c", "a b:c", "1mod:f"):
        with pytest.raises(ConfigError, match=r"model\.name.*import path"):
            config_from_dict({"model": {"name": bad}})
    with pytest.raises(ConfigError,
                       match=r"model\.name: 'resnet' is not one of alexnet, small-cnn"):
        config_from_dict({"model": {"name": "resnet"}})  # a plain name is never imported
    with pytest.raises(ConfigError, match="package.module:attr"):
        config_from_dict({"data": {"dataset": "imagenet"}})


@pytest.mark.filterwarnings("ignore:No artists with labels")  # the report of a run without data
def test_the_collector_never_imports_user_code(tmp_path: Path) -> None:
    """`mcepl collect` reads a config naming user code without importing it (it never builds
    a model or loads data): here the module would raise if imported."""
    (tmp_path / "mcepl_user_never.py").write_text("raise SystemExit('imported!')\n")
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('[model]\nname = "mcepl_user_never:net"\n[data]\n'
                   'dataset = "mcepl_user_never:data"\n[run]\npython_path = ["."]\n')
    save_topology(generate("ring", 3), tmp_path / "topo.json")
    code = main(["collect", "--topology", str(tmp_path / "topo.json"), "--config", str(cfg),
                 "--bind", f"ipc://{tmp_path}/collector.sock", "--out", str(tmp_path / "run"),
                 "--timeout", "0.5", "--insecure"])
    assert code == 1  # gave up waiting for nodes; no import, no error about the config
    assert "mcepl_user_never" not in sys.modules


def test_hash_covers_the_names_and_the_masked_layers_but_not_where_the_code_lies() -> None:
    base = config_from_dict({"model": {"name": "pkg.a:net"}})
    assert base.hash() != config_from_dict({"model": {"name": "pkg.b:net"}}).hash()
    assert base.hash() != config_from_dict({}).hash()
    assert base.hash() != config_from_dict({"model": {"name": "pkg.a:net"},
                                            "data": {"dataset": "pkg.a:data"}}).hash()
    masked = config_from_dict({"model": {"name": "pkg.a:net", "masked": ["conv*"]}})
    assert masked.hash() != base.hash()
    moved = config_from_dict({"model": {"name": "pkg.a:net"},
                              "run": {"python_path": ["/somewhere/else"]}})
    assert moved.hash() == base.hash()
    # configs written before the two keys existed keep their hash: the defaults are left out
    default = config_from_dict({})
    d = default.to_dict()
    assert d["run"].pop("python_path") == [] and d["model"].pop("masked") is None
    blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
    assert default.hash() == hashlib.sha256(blob).hexdigest()[:16]


def test_python_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    p = tmp_path / "sub" / "cfg.toml"
    p.write_text('[model]\nname = "m:f"\nmasked = ["a.*"]\n[run]\n'
                 'python_path = [".", "../lib", "/abs/dir"]\n')
    cfg = load_config(p)
    assert cfg.run.python_path == [str(tmp_path / "sub"), str(tmp_path / "lib"), "/abs/dir"]
    assert cfg.model.masked == ["a.*"]
    again = tmp_path / "again.toml"  # what a launcher writes into a run directory
    again.write_text(dump_toml(cfg))
    assert load_config(again) == cfg


def test_registries_keep_import_paths_apart() -> None:
    reg: Registry = Registry("thing", "nowhere", importable="thing maker")
    with pytest.raises(RegistryError, match="reserved for import paths"):
        reg.add("pkg:thing", object)
    with pytest.raises(KeyError):
        MODELS.lookup("resnet")  # plain unknown names are never imported
    assert MODELS.is_builtin("small-cnn") and not MODELS.is_builtin("small_cnn:x")
    assert DATASETS.importable and MODELS.importable


# --------------------------------------------------------------------------- userload


def test_load_finds_python_path_then_the_current_directory(
        code_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert load(f"{MODULE}:tiny_net", [str(code_dir)]).__name__ == "tiny_net"
    # a module in the current directory, found without any python_path
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "mcepl_user_cwd_mod.py").write_text("def f(input_shape, num_classes):\n    return 1\n")
    monkeypatch.chdir(cwd)
    assert load("mcepl_user_cwd_mod:f")(0, 0) == 1
    assert sys.path[0] == str(cwd)
    # python_path entries come first, in order, each once
    add_search_path([str(tmp_path), str(code_dir)])
    assert sys.path[:3] == [str(tmp_path), str(code_dir), str(cwd)]
    add_search_path([str(tmp_path), str(code_dir)])
    assert sys.path.count(str(code_dir)) == 1


def test_load_errors_are_one_line(code_dir: Path) -> None:
    cases = {
        "mcepl_no_such_module:f": r"model factory 'mcepl_no_such_module:f': no module named "
                                  r"'mcepl_no_such_module' \(looked in run.python_path, the "
                                  r"current directory",
        f"{MODULE}:no_such_factory": rf"'{MODULE}' has no attribute 'no_such_factory' \(/",
        f"{MODULE}:TinyNet.nope": rf"'{MODULE}.TinyNet' has no attribute 'nope'",
        f"{MODULE}:NOT_CALLABLE": "is a int, not a callable",
        "mcepl_user_broken:VALUE": r"importing 'mcepl_user_broken' failed: ZeroDivisionError: "
                                   r"division by zero \(mcepl_user_broken.py:2\)",
    }
    for spec, message in cases.items():
        with pytest.raises(UserCodeError, match=message) as info:
            load(spec, [str(code_dir)], what="model factory")
        assert "\n" not in str(info.value)
    with pytest.raises(UserCodeError, match="not an import path"):
        parse("nope")


# --------------------------------------------------------------------------- models


def test_user_model_same_weights_in_two_processes(code_dir: Path) -> None:
    """Every node process imports the factory and builds bit-identical fixed weights: two
    fresh processes and this one agree on the digest of every parameter and buffer."""
    code = textwrap.dedent(f"""
        import mcepl.node.plugins
        from mcepl.node.models import build_model, weights_digest
        for seed in (5, 6):
            for name in ("{MODULE}:tiny_net", "{MODULE}:numpy_init_net"):
                m = build_model(name, (2, 8, 8), 4, seed=seed, python_path=[{str(code_dir)!r}])
                print(weights_digest(m))
    """)

    def digests() -> list[str]:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=300, check=True, cwd="/")
        return out.stdout.split()

    first, second = digests(), digests()
    assert len(first) == 4 and first == second
    here = [weights_digest(build_model(f"{MODULE}:{f}", (2, 8, 8), 4, seed=5,
                                       python_path=[str(code_dir)]))
            for f in ("tiny_net", "numpy_init_net")]
    assert here == first[:2]
    assert len(set(first)) == 4  # another seed, other weights
    # building drew from torch's, numpy's and Python's RNGs without moving them
    import random
    state = (torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    build_model(f"{MODULE}:numpy_init_net", (2, 8, 8), 4, seed=1, python_path=[str(code_dir)])
    assert torch.equal(state[0], torch.random.get_rng_state())
    assert np.array_equal(state[1], np.random.get_state()[1]) and state[2] == random.getstate()


def test_masked_layers_default_and_patterns(code_dir: Path) -> None:
    net = build_model(f"{MODULE}:tiny_net", (2, 8, 8), 4, seed=0, weight_init="default",
                      python_path=[str(code_dir)])  # the factory's own weights everywhere
    assert MaskedModel(net).names == ["conv.weight", "head.weight", "out.weight"]
    # patterns: fnmatch over parameter names, in parameter order; a bias or the scalar's
    # neighbour can be chosen, '*' crosses dots
    mm = MaskedModel(net, ["out.*", "conv.weight"])
    assert mm.names == ["conv.weight", "out.weight", "out.bias"]
    assert MaskedModel(net, ["*weight"]).names == ["conv.weight", "head.weight", "out.weight"]
    with pytest.raises(UserCodeError, match=r"model.masked: pattern 'convv\*' matches no "
                                            r"parameter of TinyNet \(parameters: temperature, "
                                            r"conv.weight"):
        MaskedModel(net, ["conv*", "convv*"])
    with pytest.raises(UserCodeError, match="temperature of TinyNet is a scalar"):
        MaskedModel(net, ["temp*"])
    # the weight init applies to the chosen parameters only
    a = build_model(f"{MODULE}:tiny_net", (2, 8, 8), 4, seed=0, weight_init="uniform",
                    masked=["out.weight"], python_path=[str(code_dir)])
    assert torch.equal(a.conv.weight, net.conv.weight)
    assert not torch.equal(a.out.weight, net.out.weight) and a.out.weight.abs().max() > 0.6
    with pytest.raises(UserCodeError, match=r"kaiming-normal' cannot initialise out.bias \(4,\)"):
        build_model(f"{MODULE}:tiny_net", (2, 8, 8), 4, seed=0, weight_init="kaiming-normal",
                    masked=["out.*"], python_path=[str(code_dir)])


def test_builtin_models_unchanged_by_the_patterns() -> None:
    """The default selection is exactly the conv and linear weights, in module order."""
    mm = MaskedModel(build_model("small-cnn", (1, 28, 28), 10, seed=0))
    assert mm.names == ["features.0.weight", "features.3.weight", "classifier.0.weight",
                        "classifier.2.weight"]


def test_building_a_node_leaves_the_models_statistics_alone(code_dir: Path) -> None:
    """Building a node's algorithm and evaluator (which size their batches by probing the
    model) neither trains BatchNorm on one sample nor moves its running statistics."""
    topo = generate("ring", 3, retention=0.5)
    for algorithm in ("mcepl", "dsgd"):
        cfg = user_cfg(code_dir, model="bn1d_net", algorithm={"name": algorithm})
        shard = all_shards(cfg, topo)[0]
        fresh = build_shared_model(cfg, shard).module
        algo = build_algorithm(cfg, topo, 0, shard)
        build_evaluator(cfg, shard)(algo)
        assert weights_digest(algo.ctx.model.module) == weights_digest(fresh)


# --------------------------------------------------------------------------- data sets


def test_user_data_partitioned_like_the_builtins(code_dir: Path) -> None:
    """Float inputs reach the shards as given (float32); uint8 ones are normalised as the
    built-ins; labels int64; partition by labels; digest set."""
    topo = generate("ring", 3, retention=0.5)
    cfg = user_cfg(code_dir)
    ds = load_dataset(cfg.data.dataset, python_path=cfg.run.python_path)
    assert ds.input_shape == (2, 8, 8) and ds.num_classes == 4
    assert ds.train_x.dtype == np.float32 and ds.train_y.dtype == np.int64
    shards = all_shards(cfg, topo)
    for s in shards:
        assert s.train_x.dtype == torch.float32 and s.train_y.dtype == torch.int64
        assert len(s.labels) == 2 and set(s.train_y.tolist()) <= set(s.labels)
        assert set(s.test_y.tolist()) == set(s.labels) and s.digest == ds.digest
        # each training input is one of the loader's, unchanged
        rows = {ds.train_x[i].tobytes() for i in range(len(ds.train_x))}
        assert all(x.numpy().tobytes() in rows for x in s.train_x[:])
    u8 = user_cfg(code_dir, data="tiny_data_u8")
    s8 = all_shards(u8, topo)[0]
    x8 = s8.train_x[:]  # what training sees
    assert x8.dtype == torch.float32 and float(x8.min()) >= -1.0 and float(x8.max()) <= 1.0
    ds8 = load_dataset(u8.data.dataset, python_path=u8.run.python_path)
    assert ds8.train_x.dtype == np.uint8 and ds8.digest != ds.digest


def test_digest_follows_the_data(code_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "seed").write_text("1")
    kw = dict(root=str(tmp_path), python_path=[str(code_dir)])
    a = load_dataset(f"{MODULE}:from_root", **kw)
    assert load_dataset(f"{MODULE}:from_root", **kw).digest == a.digest  # deterministic
    (tmp_path / "seed").write_text("2")
    b = load_dataset(f"{MODULE}:from_root", **kw)
    assert b.digest != a.digest
    with pytest.raises(UserCodeError, match=r"other data here \(digest "
                                            rf"{b.digest[:16]}\) than the launcher saw "
                                            rf"\({a.digest[:16]}\)"):
        load_dataset(f"{MODULE}:from_root", expected_digest=a.digest, **kw)
    assert load_dataset(f"{MODULE}:from_root", expected_digest=b.digest[:16], **kw) is not None


def test_user_data_set_through_the_cache(code_dir: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache key of a user data set is the digest of its arrays: the process that calls the
    loader writes the entry; given the full digest (as the launcher gives its nodes) a process
    maps the entry without calling the loader; changed data make another entry; a digest whose
    entry is gone and whose data changed is refused."""
    from mcepl.node.data import open_dataset

    cache = tmp_path / "cache"
    monkeypatch.setenv("MCEPL_CACHE_DIR", str(cache))
    root = tmp_path / "data"
    root.mkdir()
    (root / "seed").write_text("1")
    kw = dict(root=str(root), python_path=[str(code_dir)])
    spec = f"{MODULE}:counted"

    def calls() -> int:
        return (root / "calls").read_text().count("\n")

    a = open_dataset(spec, **kw)
    assert calls() == 1 and a.digest is not None
    entry = cache / f"user-{MODULE}_counted-{a.digest[:16]}"
    assert (entry / "manifest.json").is_file()
    b = open_dataset(spec, expected_digest=a.digest, **kw)
    assert calls() == 1 and b.digest == a.digest  # mapped, the loader not called
    assert isinstance(b.train_x, np.memmap) and b.train_x.dtype == np.float32
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    (root / "seed").write_text("2")
    c = open_dataset(spec, **kw)
    assert calls() == 2 and c.digest != a.digest
    assert (cache / f"user-{MODULE}_counted-{c.digest[:16]}" / "manifest.json").is_file()
    import shutil

    shutil.rmtree(entry)
    with pytest.raises(UserCodeError, match="other data here"):
        open_dataset(spec, expected_digest=a.digest, **kw)
    assert calls() == 3


def test_loader_root_is_data_root_else_mcepl_data(code_dir: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "seed").write_text("3")
    monkeypatch.setenv("MCEPL_DATA", str(tmp_path))
    ds = load_dataset(f"{MODULE}:from_root", python_path=[str(code_dir)])
    assert ds.num_classes == 4
    monkeypatch.delenv("MCEPL_DATA")
    with pytest.raises(UserCodeError, match=r"raised TypeError.*loader\(None\)"):
        load_dataset(f"{MODULE}:from_root", python_path=[str(code_dir)])


@pytest.mark.parametrize("loader, message", [
    ("short_labels", "x_train has 120 samples but y_train has 115 labels"),
    ("labels_out_of_range", r"y_train holds labels 0..3, outside 0..2 \(num_classes = 3\)"),
    ("int_images", "x_train has dtype int64; inputs must be uint8"),
    ("three_things", "returned a tuple of 3; expected a tuple"),
])
def test_bad_loader_results(code_dir: Path, loader: str, message: str) -> None:
    with pytest.raises(UserCodeError, match=message):
        load_dataset(f"{MODULE}:{loader}", python_path=[str(code_dir)])


# --------------------------------------------------------------------------- errors, exit 2

ERRORS = {
    "missing module": ({"model": {"name": "mcepl_no_such_module:net"}},
                       "no module named 'mcepl_no_such_module'"),
    "missing attribute": ({"model": {"name": f"{MODULE}:no_such_net"}},
                          f"'{MODULE}' has no attribute 'no_such_net'"),
    "missing loader": ({"data": {"dataset": f"{MODULE}:no_such_loader"}},
                       f"'{MODULE}' has no attribute 'no_such_loader'"),
    "not a module": ({"model": {"name": f"{MODULE}:not_a_module"}},
                     "returned a dict, not a torch.nn.Module"),
    "no maskable layer": ({"model": {"name": f"{MODULE}:no_maskable_layer"}},
                          f"model '{MODULE}:no_maskable_layer' (Sequential) has no conv or "
                          f"linear layer to mask"),
    "output size": ({"model": {"name": f"{MODULE}:too_many_outputs"}},
                    r"output shape (2, 7) for a batch of 2 inputs of shape (2, 8, 8); "
                    r"expected (2, 4)"),
    "factory raises": ({"model": {"name": f"{MODULE}:crashing_factory"}},
                       "raised RuntimeError: out of ideas"),
    "shapes vs labels": ({"data": {"dataset": f"{MODULE}:short_labels"}},
                         "x_train has 120 samples but y_train has 115 labels"),
}


def _write_cfg(path: Path, code_dir: Path, override: dict) -> Path:
    d = {"data": {"dataset": f"{MODULE}:tiny_data", "labels_per_node": 2},
         "model": {"name": f"{MODULE}:tiny_net"},
         "algorithm": {"name": "mcepl", "batch_size": 8},
         "run": {"rounds": 2, "python_path": [str(code_dir)], "connect_timeout_s": 5.0}}
    for section, values in override.items():
        d[section].update(values)
    path.write_text(dump_toml(config_from_dict(d)))
    return path


def _one_line(err: str, message: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("error: ") and message in lines[0], err


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_exit_2_before_any_node_starts(case: str, code_dir: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    override, message = ERRORS[case]
    cfg = _write_cfg(tmp_path / "cfg.toml", code_dir, override)
    for extra in (["--inprocess"], ["--transport", "ipc"]):
        out = tmp_path / f"run{len(extra)}"
        code = main(["launch", "--config", str(cfg), "--nodes", "3", "--quiet",
                     "--out", str(out), *extra])
        assert code == 2
        _one_line(capsys.readouterr().err, message)
        assert not out.exists()  # nothing written, no node process started


@pytest.mark.parametrize("case", ["missing module", "no maskable layer", "output size",
                                  "shapes vs labels"])
def test_mcepl_node_alone_exits_2(case: str, code_dir: Path, tmp_path: Path) -> None:
    override, message = ERRORS[case]
    cfg = _write_cfg(tmp_path / "cfg.toml", code_dir, override)
    topo = tmp_path / "topo.json"
    save_topology(generate("ring", 3, retention=0.5, transport="ipc", ipc_dir=tmp_path), topo)
    proc = subprocess.run([sys.executable, "-m", "mcepl.launcher.cli", "node", "--topology",
                           str(topo), "--config", str(cfg), "--id", "1", "--checkpoint-dir",
                           str(tmp_path / "ck"), "--insecure"], capture_output=True, text=True,
                          timeout=300,
                          cwd="/")
    assert proc.returncode == 2, proc.stderr
    _one_line(proc.stderr, message)


# --------------------------------------------------------------------------- real processes

COMPARED = ("test_acc", "train_loss", "density", "bytes_sent", "bytes_received",
            "msgs_sent", "msgs_received", "mask_entries")


def test_launch_three_nodes_equals_the_inprocess_driver(code_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`mcepl launch` (a real process, started in another directory: the module is found
    through run.python_path) runs the user model on the user data set with 3 node processes
    for 3 rounds; every number equals the in-process driver's. The loader runs once, in the
    launcher: the nodes map the cache entry of the digest it hands them."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "seed").write_text("7")
    monkeypatch.setenv("MCEPL_CACHE_DIR", str(tmp_path / "cache"))
    cfg_path = _write_cfg(tmp_path / "cfg.toml", code_dir, {
        "run": {"rounds": 3, "eval_every": 1},
        "data": {"dataset": f"{MODULE}:counted", "root": str(data)}})
    topo = generate("ring", 3, retention=[0.5, 0.3, 0.7], transport="ipc", ipc_dir=tmp_path)
    save_topology(topo, tmp_path / "topo.json")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-m", "mcepl.launcher.cli", "launch", "--config",
                           str(cfg_path), "--topology", str(tmp_path / "topo.json"), "--quiet",
                           "--out", str(tmp_path / "run")], capture_output=True, text=True,
                          timeout=600, cwd=elsewhere, env=env)
    assert proc.returncode == 0, proc.stderr
    assert (data / "calls").read_text() == "call\n"  # the launcher's preflight only
    got = {(r["round"], r["node"]): r for r in map(
        json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())}
    cfg = load_config(cfg_path)
    want = {(r["round"], r["node"]): r for r in run_inprocess(cfg, topo).records}
    assert set(got) == set(want) == {(k, i) for k in range(4) for i in range(3)}
    for key, ref in want.items():
        for field in COMPARED:
            assert got[key].get(field) == ref.get(field), (key, field)
    assert all(r["test_acc"] is not None for r in got.values())
    # every node built the same fixed weights and saw the same data (their logs say so)
    logs = [(tmp_path / "run" / "logs" / f"node-{i}.log").read_text() for i in range(3)]
    digests = {ln.split("fixed weights digest ")[1][:16] for log in logs
               for ln in log.splitlines() if "fixed weights digest" in ln}
    model = build_shared_model(cfg, all_shards(cfg, topo)[0])
    assert digests == {weights_digest(model.module)[:16]}
    data = {ln.split("digest ")[-1][:16] for log in logs for ln in log.splitlines()
            if "data set" in ln and "digest" in ln}
    assert data == {load_dataset(cfg.data.dataset, root=cfg.data.root,
                                 python_path=cfg.run.python_path).digest[:16]}
