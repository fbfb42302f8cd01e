"""Frozen dataclasses read from plain tables (TOML or JSON) and written back.

Every key is checked against the dataclass's fields and type annotations: an unknown key is an
error naming it and the nearest valid key, a wrong type an error naming the value and the type
wanted. Recipes (`diffuse.config`) are built from these tables; `--set section.key=value`
overrides are parsed here.

    cfg = from_dict(TrainConfig, {"optim": {"lr": 2e-4}})
    to_dict(cfg)["optim"]["lr"]   # 0.0002
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal

__all__ = [
    "ConfigError",
    "from_dict",
    "nearest_hint",
    "parse_override",
    "read_toml",
    "to_dict",
    "to_toml",
]


class ConfigError(ValueError):
    """An invalid recipe: unknown key, wrong type or out-of-range value."""


# --------------------------------------------------------------------------------------------
# dict <-> dataclass
# --------------------------------------------------------------------------------------------


def nearest_hint(name: str, valid: Sequence[str]) -> str:
    """' (did you mean X?)' for the closest valid name, or ''."""
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} values"
    if origin is dict:
        return "a table"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp` and convert it (lists to tuples, int to float)."""

    def bad() -> ConfigError:
        return ConfigError(f"{key} = {value!r} has the wrong type: expected {_type_name(tp)}")

    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"[{key}] must be a table, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, bool) or value not in choices:
            hint = nearest_hint(value, [str(c) for c in choices]) if isinstance(value, str) else ""
            valid = ", ".join(repr(c) for c in choices)
            raise ConfigError(f"{key} = {value!r} is not one of {valid}{hint}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError:
                continue
        raise bad()
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad()
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key} = {list(value)!r} must have {len(args)} values")
        return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise bad()
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
                return int(value)  # 1e6 written as a float
            raise bad()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        if not math.isfinite(value):
            raise ConfigError(f"{key} = {value!r} must be a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad()
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")  # a bug in this module


def from_dict(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from nested dicts, checking every key, type and range.

    Args:
        cls: a dataclass type (e.g. `TrainConfig`).
        data: its fields; missing ones keep their defaults.
        prefix: dotted path of `data` inside the recipe, for messages.
    Raises:
        ConfigError: unknown key (with the nearest valid one), wrong type or bad value.
    """
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    # A field whose class another field selects (ProcessConfig.options by kind) is read last.
    variants: Mapping[str, tuple[str, Mapping[str, type]]] = getattr(cls, "variants", {})
    kwargs = {}
    for key, value in sorted(data.items(), key=lambda item: item[0] in variants):
        full = f"{prefix}.{key}" if prefix else key
        if key not in names:
            where = f"section [{prefix}]" if prefix else "the recipe"
            raise ConfigError(f"unknown key {full!r} in {where}{nearest_hint(key, names)}")
        tp = hints[key]
        if key in variants:
            selector, table = variants[key]
            chosen = kwargs.get(selector, _field_default(cls, selector))
            tp = table[chosen]
        kwargs[key] = _convert(value, tp, full)
    for key, (selector, table) in variants.items():
        if key not in kwargs and selector in kwargs:  # the defaults of the class chosen
            kwargs[key] = table[kwargs[selector]]()
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[{prefix}]: {err}") from None


def _field_default(cls: type, name: str) -> Any:
    """The default value of dataclass field `name` of `cls`."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready nested dict of a config dataclass (tuples become lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, Mapping):
            return {str(k): plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are valid TOML basic strings
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):  # None values are left out: TOML has no null
        items = [f"{k} = {_toml_value(x)}" for k, x in v.items() if x is not None]
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"cannot write {v!r} as TOML")


def to_toml(cfg: Any) -> str:
    """A config of sections (one table each) as TOML text; `read_toml` reads it back."""
    lines: list[str] = []
    for section, table in to_dict(cfg).items():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None)
        lines.append("")
    return "\n".join(lines)


def read_toml(text: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise ConfigError("reading TOML on Python 3.10 needs `pip install tomli`") from None
    return tomllib.loads(text)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split 'section.key=value' into (['section', 'key'], value).

    The value is read as a TOML value (numbers, true/false, [lists], "strings"); anything that
    does not parse is taken as a bare string, so `--set data.path=/x/y.npz` works unquoted.
    """
    if "=" not in text:
        raise ConfigError(f"--set {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    parts = [p.strip() for p in key.strip().split(".")]
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"--set {text!r}: the key must be section.key, e.g. optim.lr=1e-4")
    try:
        value = read_toml(f"v = {raw.strip()}")["v"]
    except Exception:  # noqa: BLE001 - any TOML syntax error means "a bare string"
        value = raw.strip()
    return parts, value
