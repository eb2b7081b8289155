"""Several camera views as ONE model input, and back.

The certificate covers the joint input: every view at model resolution, concatenated into
one vector x = (x_1, ..., x_k). Noise N(0, sigma^2 I) on x is independent noise on every
view, and a certified radius R covers every perturbation (delta_1, ..., delta_k) with
sum ||delta_i||^2 < R^2 (Cohen et al.'s theorem for the base classifier on x). One view
keeps its (3, H, W) shape, so a single-camera gate draws exactly the noise it always did.

An attacker on camera i's own pixels moves the model input by A_i delta_i, with
||A_i delta_i|| <= ||A_i||_2 ||delta_i|| (A_i: that camera's preprocessing), so R / ||A_i||_2
is the radius in camera i's pixels when only it is perturbed, and R / max_i ||A_i||_2 the
radius for perturbations of all cameras at once, in camera pixels.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch

from .policies.base import Policy


def view_sizes(policy: Policy) -> tuple[tuple[int, int], ...]:
    """The (H, W) of every image the policy takes: `input_sizes` for a multi-view policy,
    else its one `input_size`."""
    sizes = getattr(policy, "input_sizes", None)
    return tuple(tuple(s) for s in sizes) if sizes else (tuple(policy.input_size),)


class ViewLayout:
    """Where each camera's view lies in the joint input vector."""

    def __init__(self, names: Sequence[str], sizes: Sequence[tuple[int, int]]):
        if len(names) != len(sizes):
            raise ValueError(f"the model takes {len(sizes)} image(s) but cameras.names lists {len(names)} "
                             f"({list(names)}): name one camera per model image")
        self.names, self.sizes = tuple(names), tuple(tuple(s) for s in sizes)
        self.numels = tuple(3 * h * w for h, w in self.sizes)

    @property
    def numel(self) -> int:
        """Elements of the joint input (all views)."""
        return sum(self.numels)

    def pack(self, views: Sequence[torch.Tensor]) -> torch.Tensor:
        """(3, H_i, W_i) views in camera order -> the model input: the one view itself, or
        all of them flattened and concatenated (one vector)."""
        if len(views) == 1:
            return views[0]
        return torch.cat([view.reshape(-1) for view in views])

    def unpack(self, batch: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """A batch of noisy inputs -> what the policy takes: (B, 3, H, W) for one view, else
        one (B, 3, H_i, W_i) tensor per camera, as views of the batch (no copy)."""
        if len(self.sizes) == 1:
            return batch
        parts = torch.split(batch, self.numels, dim=1)
        return tuple(part.unflatten(1, (3, h, w)) for part, (h, w) in zip(parts, self.sizes))


def camera_radii(radius: float, operator_norms: Mapping[str, float]) -> dict[str, Any]:
    """The certified radius in each camera's own pixels (that camera perturbed alone), and
    for all cameras perturbed together (the largest norm binds)."""
    def over(norm: float) -> float:
        return radius / norm if norm > 0 and math.isfinite(norm) else 0.0

    return {"each": {name: over(norm) for name, norm in operator_norms.items()},
            "joint": over(max(operator_norms.values(), default=0.0))}


__all__ = ["ViewLayout", "view_sizes", "camera_radii"]
