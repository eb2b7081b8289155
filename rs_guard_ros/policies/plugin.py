"""Python entry-point backend: any user code that builds a `Policy`.

A spec "package.module:factory" names a callable; `load_plugin` imports it, calls it with
the given keyword arguments and checks that the result honours the Policy protocol, so a
broken plugin fails at start-up rather than mid-decision.
"""
from __future__ import annotations

import importlib
from typing import Any

import torch

from .base import Policy

OUTPUT_KINDS = ("text", "logits", "action")


def _resolve_factory(spec: str) -> Any:
    """Import "module:attr.path" and return the attribute; errors name the spec."""
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ValueError(f"plugin spec {spec!r} must look like 'package.module:callable'")
    module_name, attr_path = spec.split(":")
    if not module_name or not attr_path:
        raise ValueError(f"plugin spec {spec!r} must look like 'package.module:callable'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"plugin spec {spec!r}: cannot import module {module_name!r}: {exc}") from exc
    for attr in attr_path.split("."):
        if not hasattr(target, attr):
            raise ValueError(f"plugin spec {spec!r}: {module_name!r} has no attribute {attr_path!r}")
        target = getattr(target, attr)
    if not callable(target):
        raise ValueError(f"plugin spec {spec!r}: {attr_path!r} is not callable")
    return target


def check_policy(obj: Any, origin: str) -> Policy:
    """Return `obj` if it satisfies the Policy protocol, else raise ValueError naming `origin`."""
    missing = [name for name in ("name", "input_size", "device", "output_kind") if not hasattr(obj, name)]
    if not callable(obj):
        missing.append("__call__")
    if missing:
        raise ValueError(f"{origin} returned {type(obj).__name__}, not a Policy: missing {', '.join(missing)}")
    for name, sizes in (("input_size", (obj.input_size,)), ("input_sizes", getattr(obj, "input_sizes", ()))):
        for size in sizes:
            if not (isinstance(size, tuple) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
                raise ValueError(f"{origin}: {name} must hold (H, W) tuples of positive ints, got {size!r}")
    if not isinstance(obj.device, torch.device):
        raise ValueError(f"{origin}: device must be a torch.device, got {obj.device!r}")
    if obj.output_kind not in OUTPUT_KINDS:
        raise ValueError(f"{origin}: output_kind must be one of {OUTPUT_KINDS}, got {obj.output_kind!r}")
    return obj


def load_plugin(spec: str, **kwargs: Any) -> Policy:
    """Import and call the factory named by `spec` with `kwargs`; validate the result."""
    factory = _resolve_factory(spec)
    try:
        policy = factory(**kwargs)
    except Exception as exc:  # noqa: BLE001 -- any factory failure is reported with the spec
        raise ValueError(f"plugin spec {spec!r}: factory raised {type(exc).__name__}: {exc}") from exc
    return check_policy(policy, f"plugin spec {spec!r}")
