"""Config dataclasses: load from YAML, override from the command line, save to a run folder.

Configs are plain (nested) dataclasses. :func:`from_dict` builds one from a mapping and
rejects unknown keys and values of the wrong type with a :class:`ConfigError` that names
the dotted key. ``--set a.b=c`` overrides are parsed as YAML scalars (``3``, ``1e-5``,
``true``, ``[1, 2]``, ``null``), so the same types work in files and on the command line.
No ``eval``: values are data, never code.
"""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from tokenalign.errors import ConfigError
from tokenalign.utils.io import atomic_write_text

T = TypeVar("T")

log = logging.getLogger(__name__)

__all__ = [
    "from_dict",
    "to_dict",
    "parse_overrides",
    "apply_overrides",
    "load_config",
    "save_config",
    "config_to_yaml",
]


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert where it is lossless."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{key}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is Literal:
        if isinstance(value, bool) and value not in get_args(tp):
            # YAML 1.1 reads no/off/yes/on as booleans: map them back to a matching choice.
            words = ("yes", "on", "true") if value else ("no", "off", "false")
            value = next((w for w in words if w in get_args(tp)), value)
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError(f"{key}: must be one of {choices}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = get_args(tp)
        inner = args[0] if args else Any
        items = [_convert(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        args = get_args(tp)
        inner = args[1] if len(args) == 2 else Any
        return {str(k): _convert(v, inner, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e-5" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"{key}: expected a path, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: cannot use {value!r} as {_type_name(tp)}")


def _field_default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def from_dict(cls: type[T], data: dict[str, Any] | None, prefix: str = "", base: T | None = None) -> T:
    """Build the dataclass ``cls`` from ``data``; missing keys keep their defaults.

    A missing key keeps the *field's* default, also inside a nested section given in part:
    ``{"policy": {"iterations": 10}}`` changes only ``iterations`` of the ``policy`` field's
    own default (its ``default_factory``, which may differ from the nested class's
    defaults), not of a fresh ``TrainConfig()``. ``base``: the instance whose values the
    missing keys keep (default: the class's defaults).

    Raises :class:`ConfigError` on unknown keys (with the close matches) and wrong types.
    Each dataclass may define ``validate(self)`` to check values; it is called here.
    """
    data = dict(data or {})
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for f in [f for f in fields.values() if "section_for" in f.metadata]:
        del fields[f.name]
        kwargs.update(_dynamic_section(cls, f, data, base, prefix))
    unknown = sorted(set(data) - set(fields))
    if unknown:
        import difflib

        name = unknown[0]
        key = f"{prefix}.{name}" if prefix else name
        moved = getattr(cls, "MOVED_KEYS", {}).get(name)
        if moved:
            raise ConfigError(f"config key '{key}' is now '{moved}'")
        close = difflib.get_close_matches(name, list(fields), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        allowed = ", ".join(sorted(fields))
        raise ConfigError(f"unknown config key '{key}'{hint}; {cls.__name__} has: {allowed}")
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            # a section given in part: the other keys keep this field's own default
            nested_base = getattr(base, name) if base is not None else _field_default(fields[name])
            if isinstance(nested_base, tp):
                kwargs[name] = from_dict(tp, value, prefix=key, base=nested_base)
                continue
        kwargs[name] = _convert(value, tp, key)
    obj = dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as err:
            raise ConfigError(f"{prefix + ': ' if prefix else ''}{err}") from None
    return obj


def _dynamic_section(cls: type, field: dataclasses.Field, data: dict[str, Any], base: Any, prefix: str) -> dict[str, Any]:
    """The value of a field whose type depends on another field (``TrainConfig``'s
    objective settings: their class and config key are the objective's own).

    ``field.metadata``: ``selector`` (the name of the field that picks the component) and
    ``section_for(name) -> (key, settings class | None, other keys)``; the section is read
    from ``data[key]`` (popped); a section of another component is dropped with a warning.
    """
    selector = field.metadata["selector"]
    if selector in data:
        name = data[selector]
    elif base is not None:
        name = getattr(base, selector)
    else:
        name = _field_default(next(f for f in dataclasses.fields(cls) if f.name == selector))
    key, settings_cls, others = field.metadata["section_for"](str(name))
    section = data.pop(key, None) if key else None
    for stray in sorted(k for k in data if k in others):
        # A config shared between components (``--set objective=...`` on a file with a ppo
        # section): the other component's section is not used, and said so.
        data.pop(stray)
        where = f"{prefix}." if prefix else ""
        log.warning("config section '%s%s' is not used: this run's %s is %r%s", where, stray, selector, name,
                    f" (its section is '{where}{key}')" if key else " (it has no settings section)")
    if settings_cls is None:
        return {field.name: None}
    if section is None and base is not None and isinstance(getattr(base, field.name), settings_cls):
        return {field.name: getattr(base, field.name)}
    if section is not None and not isinstance(section, dict):
        raise ConfigError(f"{prefix + '.' if prefix else ''}{key}: expected a mapping of {settings_cls.__name__} fields")
    nested_base = getattr(base, field.name) if base is not None else None
    if not isinstance(nested_base, settings_cls):
        nested_base = None
    return {field.name: from_dict(settings_cls, section or {}, prefix=f"{prefix}.{key}" if prefix else key, base=nested_base)}


def to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass as plain YAML-safe data (paths become strings, tuples lists); a dynamic
    section (see :func:`_dynamic_section`) is written under its own key."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            out = {}
            for f in dataclasses.fields(v):
                if "section_for" in f.metadata:
                    key = f.metadata["section_for"](str(getattr(v, f.metadata["selector"])))[0]
                    if key and getattr(v, f.name) is not None:
                        out[key] = plain(getattr(v, f.name))
                    continue
                out[f.name] = plain(getattr(v, f.name))
            return out
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def parse_overrides(overrides: typing.Iterable[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x"]`` into a nested mapping ``{"a": {"b": 1}, "c": "x"}``."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.path=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override '{item}' has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override '{item}': value is not valid YAML ({err.problem})") from None
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}' conflicts with an earlier override of '{part}'")
        node[parts[-1]] = value
    return nested


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def apply_overrides(data: dict[str, Any], overrides: typing.Iterable[str]) -> dict[str, Any]:
    """Merge ``--set`` overrides into a config mapping (overrides win)."""
    return _merge(data, parse_overrides(overrides))


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into ``base`` key by key (nested mappings merged, not replaced)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: typing.Iterable[str] = (),
    defaults: typing.Iterable[str] = (),
) -> T:
    """Load ``cls`` from an optional YAML file, then apply ``key=value`` overrides.
    ``defaults`` (``key=value``) replace the class's defaults: the file and the overrides
    win over them (a preset, e.g. the demo's for a task)."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            raise ConfigError(f"{where}: invalid YAML ({getattr(err, 'problem', err)})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config file must be a mapping of keys to values")
        data = loaded
    data = _merged(apply_overrides({}, defaults), data) if defaults else data
    data = apply_overrides(data, overrides)
    try:
        return from_dict(cls, data)
    except ConfigError as err:
        source = f"{path}: " if path is not None else ""
        raise ConfigError(f"{source}{err}") from None


def config_to_yaml(cfg: Any) -> str:
    """The config as YAML text, keys in field order."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the config as YAML, atomically (a run folder always holds a whole config)."""
    path = Path(path)
    atomic_write_text(path, config_to_yaml(cfg))
    return path
