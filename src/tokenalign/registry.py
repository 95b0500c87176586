"""Components by name: objectives, scorers, editors, tasks and reward sources.

A config field that names a component takes either a registered name (``ppo``, ``pep8``)
or ``package.module:attribute``, so a user adds a component in their own module without
touching tokenalign. Built-ins register themselves with a decorator where they are
defined, in the spirit of verl's ``register_adv_est``::

    from tokenalign.objectives import register_objective

    @register_objective("my-objective")
    class MyObjective(Objective): ...

A registry imports its package of built-ins the first time it is asked for a name, so
that reading a name never depends on what happened to be imported before.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from tokenalign.errors import ConfigError

T = TypeVar("T")

__all__ = ["Registry", "resolve_attribute"]


def _import_module(name: str):
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # after the installed packages: never shadows them
    return importlib.import_module(name)


def _import_file(path: str):
    """The module of a Python file, imported once under a name made from its resolved path."""
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise ImportError(f"no such file: {path}")
    name = "tokenalign_user_" + hashlib.sha1(str(file).encode()).hexdigest()[:12]
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def resolve_attribute(spec: str, kind: str = "component") -> object:
    """The object named by ``package.module:attribute`` or ``path/to/file.py:attribute``
    (the attribute may be dotted). A module is looked for in the current folder too, as
    ``python -m`` does, so a user's ``my_rewards.py`` beside their config resolves."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"{kind} {spec!r}: expected package.module:attribute or path/to/file.py:attribute")
    try:
        module = _import_file(module_name) if module_name.endswith(".py") else _import_module(module_name)
    except (ImportError, OSError) as err:
        raise ConfigError(f"{kind} {spec!r}: cannot import module {module_name!r} ({err})") from None
    obj: object = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{kind} {spec!r}: module {module_name!r} has no attribute {attribute!r}")
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Name -> component for one kind of component.

    ``builtins``: the module whose import registers the built-in components (imported
    lazily, on the first lookup).
    """

    def __init__(self, kind: str, builtins: str | None = None) -> None:
        self.kind = kind
        self._builtins = builtins
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated class or function under ``name``."""

        def add(component: T) -> T:
            if name in self._entries and self._entries[name] is not component:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = component
            return component

        return add

    def _load_builtins(self) -> None:
        if self._builtins is not None:
            module, self._builtins = self._builtins, None
            importlib.import_module(module)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        self._load_builtins()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        """The component called ``name``, or the one at ``package.module:attribute``."""
        if ":" in name:
            return resolve_attribute(name, self.kind)  # type: ignore[return-value]
        self._load_builtins()
        if name not in self._entries:
            close = difflib.get_close_matches(name, list(self._entries), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"unknown {self.kind} {name!r}{hint}; registered: {', '.join(sorted(self._entries))}; "
                              "or give package.module:attribute")
        return self._entries[name]

    def __contains__(self, name: str) -> bool:
        self._load_builtins()
        return name in self._entries
