"""The small protocol every VLA backend implements."""
from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import torch


@runtime_checkable
class Policy(Protocol):
    """A VLA backend: a batch of noisy frames + one instruction -> one output per frame.

    `frames` is float32, shape (B, 3, H, W) with (H, W) == `input_size`, on `device`:
    [0, 1]-scaled RGB plus Gaussian noise, *not* clipped or quantised (everything after
    the noise -- clipping, normalisation, decoding -- is part of the base classifier).
    Outputs are whatever the model produces (text, token ids, logits, action vectors);
    an oracle maps them to commands.
    """

    name: str
    input_size: tuple[int, int]
    device: torch.device
    output_kind: str  # "text" | "logits" | "action"
    # ms of the latest call spent in a denoiser in front of the model (denoised smoothing),
    # reported apart from the model's time. A policy without a denoiser need not define it:
    # `last_denoise_ms(policy)` reads this default then.
    last_denoise_ms: float = 0.0

    def __call__(self, frames: torch.Tensor, instruction: str) -> Sequence[Any]: ...


def last_denoise_ms(policy: Any) -> float:
    """The policy's `last_denoise_ms`, or the protocol's default where it defines none."""
    return float(getattr(policy, "last_denoise_ms", Policy.last_denoise_ms))
