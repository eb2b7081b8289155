"""VLA backends behind the small `Policy` protocol (see base.py).

`load_policy(backend, path, device=..., **options)` is the one entry point the guard, the
CLI and the node use; heavy dependencies (transformers, onnxruntime) are imported only by
the backend that needs them.
"""
from __future__ import annotations

import re
from typing import Any

import torch

from .base import Policy

BACKENDS = ("demo", "transformers", "onnx", "plugin")
_CUDA_SPEC = re.compile(r"cuda(?::(\d+))?")

__all__ = ["BACKENDS", "Policy", "load_policy", "resolve_device"]


def resolve_device(spec: str) -> torch.device:
    """Map "auto" | "cpu" | "cuda" | "cuda:N" to a torch.device; "auto" prefers CUDA.

    Fails closed: an unknown spec or a CUDA device that is not there raises ValueError.
    """
    if not isinstance(spec, str):
        raise ValueError(f"device must be a str, got {spec!r}")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    match = _CUDA_SPEC.fullmatch(spec)
    if match is None:
        raise ValueError(f"device {spec!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:N'")
    if not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} requested but CUDA is not available")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ValueError(f"device {spec!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return torch.device("cuda", index)


def load_policy(backend: str, path: str | None = None, *, device: str = "auto", **options: Any) -> Policy:
    """Build a policy: "demo" (shipped demo VLA, no path), "transformers" (model directory),
    "onnx" (exported .onnx file), "plugin" ("package.module:factory")."""
    if backend not in BACKENDS:
        raise ValueError(f"policy backend {backend!r} is not one of {BACKENDS}")
    if backend == "demo":
        if path is not None:
            raise ValueError(f"policy backend 'demo' takes no path (got {path!r}); use backend 'transformers'")
        from .demo import load_demo_policy

        return load_demo_policy(device=device, **options)
    if not path:
        raise ValueError(f"policy backend {backend!r} needs a path")
    if backend == "transformers":
        from .transformers_policy import TransformersPolicy

        return TransformersPolicy(path, device=device, **options)
    if backend == "onnx":
        from .onnx_policy import OnnxPolicy

        return OnnxPolicy(path, device=device, **options)
    from .plugin import load_plugin

    return load_plugin(path, device=device, **options)
