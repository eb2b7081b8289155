"""Model inputs for Hugging Face vision-language models, shared by training and inference.

The demo VLA is trained and served through these two functions, so the prompt and the
pixel path a model sees at inference are exactly the ones it was trained on.
"""
from __future__ import annotations

from typing import Any

import torch


def build_prompt(processor: Any, instruction: str, images: int = 1) -> str:
    """The text prompt for `images` images (one per camera, in camera order) + the instruction:
    the chat template when there is one (one image entry per camera), else one image token each."""
    if getattr(processor, "chat_template", None):
        content = [{"type": "image"}] * images + [{"type": "text", "text": instruction}]
        return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    image_token = getattr(processor, "image_token", "<image>")
    return f"{image_token * images}\n{instruction}\n"


def pixel_normalizer(image_processor: Any, device: torch.device, dtype: torch.dtype):
    """Return f(frames) -> pixel_values: the processor's mean/std normalisation on `device`.

    Frames are already [0, 1]-scaled at the model's resolution, so the processor's
    resize and 1/255 rescale are skipped: noisy frames reach the model unquantised.
    """
    mean = torch.tensor(image_processor.image_mean, device=device, dtype=dtype).view(1, -1, 1, 1)
    std = torch.tensor(image_processor.image_std, device=device, dtype=dtype).view(1, -1, 1, 1)

    def normalize(frames: torch.Tensor) -> torch.Tensor:
        return (frames.to(dtype) - mean) / std

    return normalize
