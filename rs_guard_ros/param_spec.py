"""How one configuration parameter is declared and checked: its description, range or
choices, whether and which way it may change at run time (`param`), its spec as the node,
the CLI and the YAML writer see it (`ParamSpec`), and the type and range check of a value
(`coerce`). config.py declares the parameters themselves with these."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A parameter has a wrong type, an out-of-range value, or an unknown name."""


TIGHTER = ("down", "up")  # the directions in which a run-time change may move a guarantee parameter


def param(default: Any, description: str, *, low: float | None = None, high: float | None = None,
          choices: tuple[str, ...] | None = None, runtime: bool = False, tighten: str | None = None,
          off: float | None = None, item: type | None = None) -> Any:
    """A config field with its description, inclusive range or choices, and whether it may
    change at run time (through the ROS parameter services). `tighten` ("down"/"up") marks a
    parameter of the guarantee: at run time it may only move that way (loosening it needs a
    restart with the new file); `off` is the value that switches the limit off (the loosest);
    `item` is the element type of a list parameter."""
    assert tighten in (None, *TIGHTER) and (tighten is None or runtime), tighten
    meta = {"description": description, "low": low, "high": high, "choices": choices, "runtime": runtime,
            "tighten": tighten, "off": off, "item": item}
    if isinstance(default, tuple):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ParamSpec:
    """A parameter as the node, the CLI and the YAML writer see it."""

    name: str
    default: Any
    type: type
    description: str
    low: float | None
    high: float | None
    choices: tuple[str, ...] | None
    runtime: bool
    item_type: type | None = None  # element type of a list parameter
    tighten: str | None = None  # "down"/"up": the only direction a run-time change may take (see `param`)
    off: float | None = None  # the value that switches the limit off


def spec_of(name: str, f: Any, default: Any) -> ParamSpec:
    """The spec of dataclass field `f` (made by `param`) under the dotted `name`."""
    meta = f.metadata
    kind = tuple if isinstance(default, tuple) else type(default)
    item = meta["item"] if kind is tuple else None
    return ParamSpec(name, default, kind, meta["description"], meta["low"], meta["high"], meta["choices"],
                     meta["runtime"], item, meta["tighten"], meta["off"])


def coerce(spec: ParamSpec, value: Any) -> Any:
    """Check one value against its spec (type, range, choices); ConfigError names the parameter."""
    def fail(why: str) -> ConfigError:
        return ConfigError(f"parameter '{spec.name}': {why} (got {value!r})")

    if spec.type is tuple:
        if not isinstance(value, (list, tuple)):
            raise fail("expected a list")
        return tuple(_coerce_scalar(spec.item_type, v, fail) for v in value)
    value = _coerce_scalar(spec.type, value, fail)
    if spec.choices and value not in spec.choices:
        raise fail(f"must be one of {list(spec.choices)}")
    if spec.low is not None and value < spec.low or spec.high is not None and value > spec.high:
        raise fail(f"must be in [{spec.low}, {spec.high}]")
    return value


def _coerce_scalar(kind: type, value: Any, fail) -> Any:
    """bool, int, float or str, accepting only lossless conversions (an int for a float)."""
    if kind is bool:
        if not isinstance(value, bool):
            raise fail("expected true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("expected an integer")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise fail("expected a finite number")
        return float(value)
    if not isinstance(value, str):
        raise fail("expected a string")
    return value


__all__ = ["ConfigError", "ParamSpec", "param", "spec_of", "coerce", "TIGHTER"]
