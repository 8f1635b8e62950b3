"""Typed configuration: dataclasses checked before any work starts.

Every config in the workbench is a dataclass. `parse_config` builds one from a plain dict (YAML
or Python) and fails with a `ConfigError` that names *where* (the stage and recipe) and *which
key*, suggesting the closest known key for typos. Value checks live in each dataclass's
`validate()` method and raise `ConfigError` through `fail()`.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


class ConfigError(ValueError):
    """A recipe, stage or pipeline setting is wrong. The message names where and which key."""


def fail(where: str, key: str, problem: str) -> typing.NoReturn:
    raise ConfigError(f"{where}: '{key}' {problem}")


def field_default(config: Any, key: str) -> Any:
    """The default of setting `key` of a config dataclass (or instance)."""
    return next(f.default for f in dataclasses.fields(config) if f.name == key)


def fail_if_set(config: Any, where: str, keys: Iterable[str], because: str) -> None:
    """A setting moved off its default that the rest of the config makes unused fails, naming it:
    a value that does nothing (a sweep varying it, a typo'd intent) is worse than an error."""
    for key in keys:
        value = getattr(config, key)
        if value != field_default(config, key):
            fail(where, key, f"is set ({value!r}) but {because}; leave it out")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str, key: str) -> Any:
    """Check `value` against the annotation `tp`; convert only lossless cases (int -> float,
    list -> tuple, str '5e-5' -> float as YAML 1.1 leaves it)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where, key)
            except ConfigError as exc:
                errors.append(str(exc))
        fail(where, key, f"must be {' or '.join(_type_name(o) for o in options)}, got {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            fail(where, key, f"must be one of {list(allowed)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            fail(where, key, f"must be a list, got {type(value).__name__} {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                fail(where, key, f"must have {len(args)} items, got {len(value)}: {value!r}")
            return tuple(_coerce(v, a, where, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_coerce(v, item, where, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            fail(where, key, f"must be a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            fail(where, key, f"must be a mapping of {tp.__name__} settings, got {value!r}")
        return parse_config(tp, value, f"{where}.{key}")
    if tp is bool:
        if not isinstance(value, bool):
            fail(where, key, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail(where, key, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool):
            fail(where, key, f"must be a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        fail(where, key, f"must be a number, got {value!r}")
    if tp is str:
        if not isinstance(value, str):
            fail(where, key, f"must be a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        fail(where, key, f"must be {tp.__name__}, got {value!r}")
    return value


def reject_unknown_keys(data: dict[str, Any], known: Iterable[str], where: str) -> None:
    """Fail on the first key of `data` not in `known`, suggesting the closest known key."""
    known = list(known)
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            fail(where, str(key), f"is not a known setting{hint} (known: {', '.join(sorted(known)) or '(none)'})")


def load_yaml_file(path: str | Path, what: str = "recipe file") -> Any:
    """Parse a YAML file, naming the file in the error when it is missing or malformed."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} '{path}' does not exist")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} '{path}' is not valid YAML: {exc}") from exc


def parse_config(cls: type[T], data: dict[str, Any] | None, where: str) -> T:
    """Build the dataclass `cls` from `data`, rejecting unknown keys and wrong types.

    `where` names the place in the recipe for error messages, e.g. "stage 'prune' recipe
    'magnitude_prune'".
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):   # checked before copying: dict(0.5) would raise a TypeError
        raise ConfigError(f"{where}: settings must be a mapping of setting: value, got {data!r}")
    data = dict(data)
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    reject_unknown_keys(data, fields, where)
    values = {}
    for name, field in fields.items():
        if name in data:
            values[name] = _coerce(data[name], hints[name], where, name)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            fail(where, name, "is required")
    obj = cls(**values)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(where)
    return obj


KEY_OMITS_DEFAULT = {"key_omits_default": True}
"""Field metadata for a setting added after results exist: `config_to_dict(cfg, for_key=True)`
(what stage keys hash) leaves it out while it has its default, so stages that do not use it keep
their keys (finished and cached stages are still reused, checkpoints still resume)."""


def config_to_dict(cfg: Any, for_key: bool = False) -> dict[str, Any]:
    """The inverse of `parse_config`, with tuples as lists so it round-trips through YAML.
    `for_key`: without the KEY_OMITS_DEFAULT fields that have their default (for stage keys)."""

    def omitted(f: dataclasses.Field, v: Any) -> bool:
        return (for_key and f.metadata.get("key_omits_default", False) and f.default is not dataclasses.MISSING
                and getattr(v, f.name) == f.default)

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v) if not omitted(f, v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)
