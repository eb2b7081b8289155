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

    def __call__(self, frames: torch.Tensor, instruction: str) -> Sequence[Any]: ...
