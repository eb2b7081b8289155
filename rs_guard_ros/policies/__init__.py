"""VLA backends behind the small `Policy` protocol (see base.py).

`load_policy(backend, path, device=..., **options)` is the one entry point the guard, the
CLI and the node use; heavy dependencies (transformers, onnxruntime) are imported only by
the backend that needs them.
"""
from __future__ import annotations

from typing import Any

from .base import Policy

BACKENDS = ("demo", "transformers", "onnx", "plugin", "lerobot")

__all__ = ["BACKENDS", "Policy", "load_policy", "quiet_model_loading"]


def quiet_model_loading() -> None:
    """No "Loading weights" progress bar or library warnings from transformers when a model
    loads (its public switches; errors still raise). A no-op where transformers is not installed."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def load_policy(backend: str, path: str | None = None, *, device: str = "auto", **options: Any) -> Policy:
    """Build a policy: "demo" (shipped demo VLA, no path), "transformers" (model directory),
    "onnx" (exported .onnx file), "plugin" ("package.module:factory"), "lerobot" (a LeRobot
    pretrained policy directory)."""
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
    if backend == "lerobot":
        from .lerobot_policy import LeRobotPolicy

        return LeRobotPolicy(path, device=device, **options)
    from .plugin import load_plugin

    return load_plugin(path, device=device, **options)
