"""Import the user's own code named explicitly in a config: ``package.module:attr``.

``[model] name`` and ``[data] dataset`` accept, besides the built-in names, an *import path*
``package.module:attr`` (``attr`` may be dotted, ``module:Class.factory``). Only such a name,
given in so many words, is ever imported: a plain name is looked up among the built-ins and
nothing else, so a config never runs code it does not name. Importing a module runs it: a
config is as trusted as the code it names (README, "Security").

Where a module is found, first match wins: the config's ``[run] python_path`` entries (in
order), the current directory, then ``PYTHONPATH`` and the installed packages, as for
``python -m``. This module adds the first two to ``sys.path`` of the process that resolves the
name (every node process, the launcher, the in-process driver), so nodes started in another
directory, in a container or on another machine find the same module through the config.

It sits at the bottom of the stack with the registries (`mcepl.registry.Registry.lookup`
calls it) and imports nothing of the project. Every problem is a `UserCodeError` whose message
is one line naming the config key, the name and what is wrong; the commands print it and exit
with code 2.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["UserCodeError", "add_search_path", "describe_exception", "is_import_path", "load",
           "one_line", "parse", "search_path"]

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = re.compile(rf"{_IDENT}(\.{_IDENT})*\Z")


class UserCodeError(ValueError):
    """User code named in the config cannot be imported or does not do what it must (one line)."""


def one_line(text: str, limit: int = 400) -> str:
    """`text` with every run of whitespace (newlines included) as one space, cut at `limit`."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def describe_exception(exc: BaseException) -> str:
    """``TypeError: message (file.py:12)``: the exception and the innermost user frame."""
    where = ""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is not None:
        where = f" ({Path(last.tb_frame.f_code.co_filename).name}:{last.tb_lineno})"
    return one_line(f"{type(exc).__name__}: {exc}{where}")


def is_import_path(name: str) -> bool:
    """True for ``module:attr`` (the user's code), False for a built-in's plain name."""
    return isinstance(name, str) and ":" in name


def parse(spec: str) -> tuple[str, str]:
    """``"pkg.mod:attr"`` -> ``("pkg.mod", "attr")``; UserCodeError if not of that form."""
    module, sep, attr = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not sep or not _DOTTED.match(module) or not _DOTTED.match(attr):
        raise UserCodeError(f"{spec!r} is not an import path of the form "
                            f"'package.module:attribute' (Python identifiers, one ':')")
    return module, attr


def search_path(python_path: Iterable[str] = ()) -> list[str]:
    """The directories this module puts in front of ``sys.path``: the python_path entries
    (relative ones against the current directory), then the current directory."""
    out: list[str] = []
    for entry in [*python_path, "."]:
        p = os.path.abspath(os.path.expanduser(str(entry)))
        if p not in out:
            out.append(p)
    return out


def add_search_path(python_path: Iterable[str] = ()) -> list[str]:
    """Put `search_path(python_path)` at the front of ``sys.path`` (each once, in order);
    returns it. Idempotent: calling it again with the same entries changes nothing."""
    wanted = search_path(python_path)
    rest = [p for p in sys.path if os.path.abspath(p or ".") not in wanted]
    if sys.path[:len(wanted)] != wanted:
        sys.path[:] = wanted + rest
        importlib.invalidate_caches()  # directories created since the last import are seen
    return wanted


def load(spec: str, python_path: Sequence[str] = (), *, what: str = "object") -> Any:
    """Import ``module`` of ``"module:attr"`` and return its ``attr`` (dotted: attributes of
    attributes). `what` names the thing in errors (e.g. "model factory")."""
    module_name, attr = parse(spec)
    looked = add_search_path(python_path)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.split(".")[:len(exc.name.split("."))] \
                == exc.name.split("."):
            raise UserCodeError(
                f"{what} {spec!r}: no module named {exc.name!r} (looked in run.python_path, "
                f"the current directory: {', '.join(looked)}; then PYTHONPATH and the "
                f"installed packages)") from None
        raise UserCodeError(f"{what} {spec!r}: importing {module_name!r} failed: "
                            f"{describe_exception(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - anything the user's module raises at import
        raise UserCodeError(f"{what} {spec!r}: importing {module_name!r} failed: "
                            f"{describe_exception(exc)}") from None
    obj: Any = module
    for i, part in enumerate(attr.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            owner = ".".join([module_name, *attr.split(".")[:i]])
            origin = getattr(module, "__file__", None)
            raise UserCodeError(f"{what} {spec!r}: {owner!r} has no attribute {part!r}"
                                + (f" ({origin})" if origin and i == 0 else "")) from None
    if not callable(obj):
        raise UserCodeError(f"{what} {spec!r} is a {type(obj).__name__}, not a callable")
    return obj
