"""The layer rule (ARCHITECTURE.md): every import points down the stack, never up.

    launcher (+ the `mcepl` CLI)   4
    node                           3
    topology                       2
    protocol                       1
    mcepl core (config, registry)  0

Each module's imports (module level and inside functions, absolute and relative) are parsed with
`ast`; file paths map to module names through pyproject.toml's package-dir mapping (`node/x.py`
is `mcepl.node.x`), and an import of a higher layer than the importing file's fails the test,
naming the file, the line and the import. The checker is shown to fail on a synthetic tree.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent

# package -> layer (higher imports lower); a module belongs to the longest matching package
LAYERS = {"mcepl": 0, "mcepl.protocol": 1, "mcepl.topology": 2, "mcepl.node": 3,
          "mcepl.launcher": 4}


@dataclass(frozen=True)
class Violation:
    file: Path
    line: int
    importer: str
    imported: str

    def __str__(self) -> str:
        return (f"{self.file}:{self.line}: {self.importer} (layer {layer_of(self.importer)}) "
                f"imports {self.imported} (layer {layer_of(self.imported)})")


def package_dirs(pyproject: Path) -> dict[str, Path]:
    """Package name -> folder, from [tool.setuptools.package-dir]."""
    data = tomllib.loads(pyproject.read_text())
    mapping = data["tool"]["setuptools"]["package-dir"]
    return {pkg: (pyproject.parent / folder).resolve() for pkg, folder in mapping.items()}


def layer_of(module: str, layers: dict[str, int] = LAYERS) -> int | None:
    best = max((p for p in layers if module == p or module.startswith(p + ".")), key=len,
               default=None)
    return None if best is None else layers[best]


def module_files(dirs: dict[str, Path]) -> dict[Path, str]:
    """Every .py file of every mapped package -> its module name (a folder mapped to a
    subpackage belongs to that subpackage, not to the folder holding it)."""
    claimed = set(dirs.values())
    out: dict[Path, str] = {}
    for pkg, folder in dirs.items():
        for f in sorted(folder.rglob("*.py")):
            rel = f.relative_to(folder)
            # skip files under a nested folder that another mapping claims
            if any(parent in claimed and parent != folder for parent in f.parents):
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[f] = ".".join([pkg, *parts])
    return out


def imports_of(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in the file, nested ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_pkg else base[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from pkg import sub` may import a submodule: check pkg.sub too (after pkg)
            out.append((node.lineno, target))
            out += [(node.lineno, f"{target}.{a.name}") for a in node.names if a.name != "*"]
    return out


def violations(pyproject: Path, layers: dict[str, int] = LAYERS) -> list[Violation]:
    dirs = package_dirs(pyproject)
    found: list[Violation] = []
    for f, module in module_files(dirs).items():
        mine = layer_of(module, layers)
        for line, target in imports_of(f, module):
            theirs = layer_of(target, layers)
            if mine is not None and theirs is not None and theirs > mine:
                v = Violation(f.relative_to(pyproject.parent), line, module, target)
                if all((w.file, w.line) != (v.file, v.line) for w in found):  # one per statement
                    found.append(v)
    return found


def test_no_upward_imports() -> None:
    found = violations(ROOT / "pyproject.toml")
    assert not found, "upward imports:\n" + "\n".join(map(str, found))


def test_every_package_folder_has_a_layer() -> None:
    dirs = package_dirs(ROOT / "pyproject.toml")
    assert set(dirs) == set(LAYERS), "a package without a layer: add it to LAYERS and " \
                                     "ARCHITECTURE.md"
    mods = module_files(dirs)
    assert "mcepl.config" in mods.values() and "mcepl.node.rounds" in mods.values()
    assert mods[ROOT / "node" / "runtime.py"] == "mcepl.node.runtime"


def test_checker_catches_an_upward_import(tmp_path: Path) -> None:
    """A synthetic tree: the bottom imports the top inside a function, a middle module imports
    the top relatively, and the top imports the bottom (allowed)."""
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools.package-dir]\n"mcepl" = "core"\n"mcepl.node" = "nodes"\n'
        '"mcepl.launcher" = "top"\n')
    for d in ("core", "nodes", "top"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "__init__.py").write_text("")
    (tmp_path / "core" / "config.py").write_text(
        "import json\n\n\ndef load():\n    from mcepl.node.algos import REGISTRY\n"
        "    return REGISTRY\n")
    (tmp_path / "nodes" / "algos.py").write_text("from ..launcher import cli\nREGISTRY = {}\n")
    (tmp_path / "nodes" / "ok.py").write_text("from mcepl.config import load\n"
                                              "from . import algos\n")
    (tmp_path / "top" / "cli.py").write_text("from mcepl.node.algos import REGISTRY\n"
                                             "import mcepl.config\n")
    found = violations(tmp_path / "pyproject.toml")
    got = {(str(v.file), v.line, v.imported) for v in found}
    assert got == {("core/config.py", 5, "mcepl.node.algos"),
                   ("nodes/algos.py", 1, "mcepl.launcher")}, got
    assert "core/config.py:5: mcepl.config (layer 0) imports mcepl.node.algos (layer 3)" in \
        str(found[0])


@pytest.mark.parametrize("argv", [["--help"], ["node", "--help"], ["collect", "--help"]])
def test_commands_that_draw_nothing_import_no_plotting(argv: list[str]) -> None:
    """A node process (and `mcepl --help`) never imports matplotlib: it costs start-up time and
    memory per node, and in a container image built as root it once left a cache directory the
    user could not write, so every node printed matplotlib's warning."""
    code = ("import sys\nfrom mcepl.launcher import cli\ntry:\n"
            f"    cli.main({argv!r})\nexcept SystemExit:\n    pass\n"
            "print('PLOT' if 'matplotlib' in sys.modules else 'NOPLOT')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd="/")
    assert out.stdout.strip().splitlines()[-1] == "NOPLOT", out.stdout[-500:] + out.stderr[-500:]
