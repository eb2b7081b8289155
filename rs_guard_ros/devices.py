"""The one place a device name from the configuration becomes a torch.device."""
from __future__ import annotations

import re

import torch

_CUDA_SPEC = re.compile(r"cuda(?::(\d+))?")

__all__ = ["resolve_device"]


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
