"""Name -> object registries at the bottom of the stack, filled by the modules that own the objects.

The config (`mcepl.config`) validates names (``algorithm.name``, ``model.name``, ``run.codec``,
...) against these registries without importing the layers above it: an algorithm module
registers its class when it is imported (``@register_algorithm``, see
``mcepl.node.algorithms.base``), the models, data sets, partitions, weight inits and mask codecs
likewise. Whoever loads a config (the CLI, a node process, the in-process driver, the tests'
conftest) has imported those layers first; a registry that is still empty when asked is a
programming error and says so instead of importing upward.

A `Registry` is a read-only mapping in registration order (the order error messages list the
choices in); registering the same name twice with another object is an error.

The model and data set registries are *importable*: besides their registered names, `lookup`
resolves an explicit import path ``package.module:attr`` to the user's own object
(`mcepl.userload`). Registered names never contain ``:``, so the two never collide, and nothing
is imported unless a config names it that way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

from mcepl import userload

T = TypeVar("T")


class RegistryError(RuntimeError):
    """A registry was used before the module that fills it was imported, or a name clashed."""


class Registry(Mapping[str, T], Generic[T]):
    """Objects by name, in registration order; `filled_by` names the module(s) that fill it."""

    def __init__(self, kind: str, filled_by: str, importable: str | None = None) -> None:
        """`importable`: what a user's import path names here (e.g. "model factory"), or None
        when this registry takes registered names only."""
        self.kind, self.filled_by, self.importable = kind, filled_by, importable
        self._items: dict[str, T] = {}

    # --- filling -------------------------------------------------------------------------------
    def add(self, name: str, obj: T) -> T:
        """Register `obj` as `name`; returns `obj`. The same object again is a no-op (a module
        imported twice), another object under a taken name is a RegistryError."""
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if ":" in name:
            raise RegistryError(f"{self.kind} name {name!r}: ':' is reserved for import paths "
                                f"(package.module:attr)")
        old = self._items.get(name)
        if old is not None and old is not obj and not _same_definition(old, obj):
            raise RegistryError(f"{self.kind} {name!r} is already registered "
                                f"({_describe(old)}); cannot register {_describe(obj)}")
        self._items[name] = obj
        return obj

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: ``@REG.register("name")``; without a name the object's ``name``
        attribute is used (classes that carry their own name, e.g. algorithms)."""

        def deco(obj: T) -> T:
            key = name if name is not None else getattr(obj, "name", None)
            if key is None:
                raise RegistryError(f"{_describe(obj)} has no `name`; give one to register()")
            return self.add(key, obj)

        return deco

    def remove(self, name: str) -> None:
        """Forget `name` (tests that register throw-away objects clean up with this)."""
        self._items.pop(name, None)

    # --- reading -------------------------------------------------------------------------------
    def require(self) -> Registry[T]:
        """This registry, or a RegistryError when nothing has filled it yet."""
        if not self._items:
            raise RegistryError(f"no {self.kind} is registered: import {self.filled_by} before "
                                f"validating a config (mcepl.node.plugins imports all of them)")
        return self

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def check_name(self, name: str) -> None:
        """ValueError unless `name` is registered or, in an importable registry, a well-formed
        import path (which is not imported here: only `lookup` imports)."""
        if self.importable and userload.is_import_path(name):
            userload.parse(name)
            return
        if name not in self.require():
            more = f" (or a {self.importable} 'package.module:attr')" if self.importable else ""
            raise ValueError(f"{name!r} is not one of {', '.join(self)}{more}")

    def lookup(self, name: str, python_path: Sequence[str] = ()) -> T:
        """The registered object, or for an import path in an importable registry the user's
        object, imported (with `python_path` and the current directory on sys.path).
        KeyError for an unknown plain name; `userload.UserCodeError` for a bad import path."""
        if self.importable and userload.is_import_path(name):
            return userload.load(name, python_path, what=self.importable)
        return self._items[name]

    def is_builtin(self, name: str) -> bool:
        """True for a registered name, False for an import path."""
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._items) or 'empty'})"


def _describe(obj: Any) -> str:
    mod, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{mod}.{qual}" if mod and qual else repr(obj)


def _same_definition(a: Any, b: Any) -> bool:
    """The same class or function defined again by a re-imported module (e.g. a module run both
    as a plugin and as a test file): same module path and qualified name."""
    def key(x: Any) -> tuple[Any, Any]:
        return getattr(x, "__module__", None), getattr(x, "__qualname__", None)

    return callable(a) and callable(b) and key(a) == key(b) and None not in key(a)


# The registries the config validates against, and who fills each.
ALGORITHMS: Registry[Any] = Registry("algorithm", "mcepl.node.algorithms")
MODELS: Registry[Any] = Registry("model", "mcepl.node.models", importable="model factory")
WEIGHT_INITS: Registry[Any] = Registry("weight init", "mcepl.node.models")
DATASETS: Registry[Any] = Registry("data set", "mcepl.node.data", importable="data set loader")
PARTITIONS: Registry[Any] = Registry("partition", "mcepl.node.data")
MASK_CODECS: Registry[str] = Registry("mask codec", "mcepl.protocol")

__all__ = ["ALGORITHMS", "DATASETS", "MASK_CODECS", "MODELS", "PARTITIONS", "WEIGHT_INITS",
           "Registry", "RegistryError"]
