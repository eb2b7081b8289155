"""The shipped demo VLA: a tiny LLaVA-style model trained on the "where is the red object"
command task (docs/demo_vla.md). It makes the gate, tests and demo runnable offline."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .transformers_policy import TransformersPolicy

DEMO_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "demo_vla"


def load_demo_policy(device: str = "auto", **options: Any) -> TransformersPolicy:
    """The demo VLA as a TransformersPolicy (greedy text generation) on `device`."""
    return TransformersPolicy(DEMO_MODEL_DIR, device=device, **options)
