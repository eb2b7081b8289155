"""A FAULT INJECTOR for the node tests -- not a model. It ignores the image and picks its
behaviour from the instruction text, so a test can make the "model" fail on demand:

    "raise"      -> raises RuntimeError (a model or driver crash)
    "hang [S]"   -> sleeps S seconds (default 3) before answering: past any test deadline
    "nan"        -> returns NaN tensors (a numerically broken model)
    "left ..."   -> "turn left" for every sample (certifies `left`)
    anything else-> "go straight" for every sample (certifies `forward`)

Loaded through the plugin backend: model.backend "plugin", model.path
"fault_policy:make_policy", with tests/ros_peers on PYTHONPATH. Setting
FAULT_POLICY_LOAD_S makes loading take that many seconds (a big model's start-up);
setting FAULT_POLICY_CALLS to a file path appends a line to it as each call starts, "<batch
size> <first word of the instruction>" (so a test knows a decision is in flight, and which).
"""
from __future__ import annotations

import os
import time
from typing import Any, Sequence

import torch

DEFAULT_HANG_S = 3.0


class FaultPolicy:
    """Implements the Policy protocol (rs_guard_ros/policies/base.py) with injected faults."""

    name = "fault_injector"
    input_size = (24, 32)
    output_kind = "text"

    def __init__(self) -> None:
        self.device = torch.device("cpu")

    def __call__(self, frames: torch.Tensor, instruction: str) -> Sequence[Any]:
        calls = os.environ.get("FAULT_POLICY_CALLS")
        if calls:
            with open(calls, "a") as f:
                f.write(f"{len(frames)} {instruction.split()[0] if instruction.split() else ''}\n")
        words = instruction.lower().split()
        first = words[0] if words else ""
        if first == "raise":
            raise RuntimeError("injected fault: the model raised")
        if first == "nan":
            return [torch.full((2,), float("nan")) for _ in range(len(frames))]
        if first == "hang":
            time.sleep(float(words[1]) if len(words) > 1 else DEFAULT_HANG_S)
        return ["turn left" if first == "left" else "go straight"] * len(frames)


def make_policy(**_options: Any) -> FaultPolicy:
    """Plugin factory; the device, dtype and generation options do not apply to an injector."""
    time.sleep(float(os.environ.get("FAULT_POLICY_LOAD_S", "0")))
    return FaultPolicy()
