"""The closed-loop attacker: targeted PGD on camera frames, through the guard's own preprocessing.

The scenario runner calls it on every frame of an `attack` fault window. The attack is
white-box on the base VLA: the camera frame (uint8, H x W) goes through the exact linear
map the guard applies (crop + INTER_AREA resize, `Preprocessor.axis_matrices`) and the
differentiable command scorer of rs_guard_ros.adversarial, so the perturbation is crafted in
camera pixels, in the camera's [0, 1] units, and sent quantised to uint8 as a compromised
camera driver would.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..adversarial import CommandScorer, art_classifier, pgd
from ..certify import label_name
from ..config import Config
from ..guard import Guard
from .scenarios import Fault

NORM = {"l2": 2, "linf": np.inf}


class CameraToInput(torch.nn.Module):
    """x (B, 3, H, W) camera frame in [0, 1] -> the model input: crop, then A_rows @ x @ A_cols^T."""

    def __init__(self, guard: Guard, in_size: tuple[int, int], device: torch.device) -> None:
        super().__init__()
        self.box = guard.preprocessor.crop_box(in_size)
        rows, cols = guard.preprocessor.axis_matrices(in_size)
        self.register_buffer("rows", torch.tensor(rows, dtype=torch.float32, device=device))
        self.register_buffer("cols", torch.tensor(cols, dtype=torch.float32, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, left, height, width = self.box
        crop = x[:, :, top:top + height, left:left + width]
        return self.rows @ crop @ self.cols.T


class CameraAttacker:
    """perturb(frame, instruction, fault) -> (attacked uint8 frame, the base VLA's command on it)."""

    def __init__(self, cfg: Config, steps: int = 20) -> None:
        self.guard = Guard.from_config(cfg)  # cfg.model.cpu_threads also bounds the attacker's threads
        self.names = tuple(cfg.commands.names)
        self.steps = steps
        self._classifiers: dict[tuple[str, tuple[int, int]], Any] = {}

    def _classifier(self, instruction: str, in_size: tuple[int, int]) -> Any:
        """ART classifier camera frame -> command logits for one instruction (cached)."""
        key = (instruction, in_size)
        if key not in self._classifiers:
            policy = self.guard.policy
            scorer = CommandScorer(policy, self.guard.cfg.commands.table, self.names, instruction)
            model = torch.nn.Sequential(CameraToInput(self.guard, in_size, policy.device), scorer)
            self._classifiers[key] = art_classifier(model, (3, *in_size), len(self.names))
        return self._classifiers[key]

    def __call__(self, frame: np.ndarray, instruction: str, fault: Fault) -> tuple[np.ndarray, str]:
        if fault.command not in self.names:
            raise ValueError(f"attack command {fault.command!r} is not in the command set {list(self.names)}")
        x = (frame.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        target = np.array([self.names.index(fault.command)])
        x_adv = pgd(self._classifier(instruction, frame.shape[:2]), x, target, norm=NORM[fault.norm],
                    eps=fault.epsilon, steps=self.steps)
        attacked = np.clip(np.rint(x_adv[0].transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)
        return attacked, self.base_command(attacked, instruction)

    def base_command(self, frame: np.ndarray, instruction: str) -> str:
        """What the undefended VLA (one greedy output, the oracle's command) says on `frame`."""
        x, _ = self.guard.prepare(frame)
        with torch.inference_mode():
            outputs = self.guard.policy(x[None], instruction)
        label = self.guard.oracle(outputs)[0]
        return label_name(label)

