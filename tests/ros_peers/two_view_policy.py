"""STAND-IN, not a model: a two-camera policy for the node tests. It takes a front and a rear
view (24x32 each) and the joint state, checks that all three arrived with their shapes, and
says "go straight" for every sample (so the gate certifies `forward`) -- or "turn left" when
the rear view is brighter than the front one, so a test can tell that the rear view counts.

Loaded through the plugin backend: model.backend "plugin", model.path
"two_view_policy:make_policy", with tests/ros_peers on PYTHONPATH.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch


class TwoViewPolicy:
    name = "two_view_standin"
    input_size = (24, 32)
    input_sizes = ((24, 32), (24, 32))
    views = 2
    output_kind = "text"

    def __init__(self, cameras: dict[str, str]) -> None:
        self.device = torch.device("cpu")
        self.cameras = cameras

    def __call__(self, frames: Sequence[torch.Tensor], instruction: str, state: torch.Tensor | None = None) -> list:
        front, rear = frames
        if state is None or state.shape != (2,):
            raise RuntimeError(f"STAND-IN: expected a 2-joint state, got {None if state is None else state.shape}")
        brighter = rear.mean(dim=(1, 2, 3)) > front.mean(dim=(1, 2, 3)) + 0.2
        return ["turn left" if b else "go straight" for b in brighter.tolist()]


def make_policy(cameras: dict[str, str], **_options: Any) -> TwoViewPolicy:
    return TwoViewPolicy(cameras)
