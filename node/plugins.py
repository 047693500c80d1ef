"""Fill the registries the config validates against: import every built-in provider, then the
user's own modules named in MCEPL_PLUGINS.

Importing this module imports the built-in algorithms, models, data sets, partitions, weight
inits and mask codecs (each module registers its own objects in `mcepl.registry`). Every entry
point that loads a config calls `load_plugins()` first: the `mcepl` command, `mcepl node`, and the
nodes a launcher starts (they inherit the environment, so a plugin named there is loaded by
every node of a local run).

MCEPL_PLUGINS is a comma-separated list of importable module names, e.g.
``MCEPL_PLUGINS=my_algo`` with ``my_algo.py`` on PYTHONPATH holding an `Algorithm` subclass under
``@register_algorithm``.
"""

from __future__ import annotations

import importlib
import os

import mcepl.node.algorithms  # noqa: F401 - registers the algorithms
import mcepl.node.data  # noqa: F401 - data sets and partitions
import mcepl.node.models  # noqa: F401 - models and weight inits
import mcepl.protocol  # noqa: F401 - mask codecs

ENV = "MCEPL_PLUGINS"


class PluginError(RuntimeError):
    """A module named in MCEPL_PLUGINS could not be imported (one line naming it)."""


def plugin_names(value: str | None = None) -> list[str]:
    """The module names in `value` (default: the MCEPL_PLUGINS environment variable)."""
    raw = os.environ.get(ENV, "") if value is None else value
    return [name.strip() for name in raw.split(",") if name.strip()]


def load_plugins(value: str | None = None) -> list[str]:
    """Import each plugin module (registering what it defines); returns their names."""
    names = plugin_names(value)
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - any failure is the same user error
            raise PluginError(f"{ENV}: cannot import plugin module {name!r}: "
                              f"{type(exc).__name__}: {exc}") from None
    return names
