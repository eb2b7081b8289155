"""LeRobot backend: a pretrained LeRobot policy directory (SmolVLA, pi0, ...) as a `Policy`.

LeRobot is imported only here, only when this backend loads, from the user's own install:
its version pins conflict with this package's, so it is never a dependency. The public
interface used is the one LeRobot's own inference loop uses (lerobot >= 0.4):
`PreTrainedConfig.from_pretrained(dir)` (lerobot.configs.policies),
`get_policy_class(cfg.type).from_pretrained(dir, config=cfg)` and
`make_pre_post_processors(cfg, pretrained_path=dir)` (lerobot.policies.factory): the
preprocessor tokenises the task, normalises the state and moves tensors to the device; the
postprocessor un-normalises actions.

Each noisy frame is one row of an observation batch:
  "observation.images.<camera>"  the noisy frames, (B, 3, H, W), [0, 1] plus noise, unclipped,
                                 at the camera feature's resolution (the policy resizes itself);
  "observation.state"            the configured fixed state (zeros by default), (B, D);
  "task"                         the instruction, once per row.

Certification needs every noisy sample to be an independent, stateless evaluation of the
current (noisy) frame. LeRobot policies are stateful for closed-loop control: `select_action`
pops the next action of a chunk predicted on an EARLIER observation, and policies with an
observation history (n_obs_steps > 1) stack earlier observations into the input. So this
backend never calls `select_action`: before every batch it calls `policy.reset()` (empty
action queue and history; the history then holds only this batch) and reads the first step
of `predict_action_chunk(batch)` -- the action `select_action` would execute now. Rows of a
batch never mix. Flow-matching policies (SmolVLA, pi0) draw their own sampling noise per
row, so the base classifier is randomised; its randomness is independent of the Gaussian
input noise and across samples, which randomized smoothing allows (the certified probability
is then over both).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..devices import resolve_device
from .model_path import local_model_dir
from .transformers_policy import check_frames

IMAGE_PREFIX = "observation.images."
STATE_KEY = "observation.state"
_PROBE_INSTRUCTION = "go forward"


def _lerobot(module: str) -> Any:
    """Import a LeRobot module from the user's install; a one-line ValueError if it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(f"model.backend 'lerobot' needs LeRobot (>= 0.4) in this Python environment, e.g. "
                         f"`pip install 'lerobot[smolvla]'` or 'lerobot[pi]': {exc}") from exc


def camera_feature(image_features: dict[str, Any], camera_key: str | None) -> str:
    """The image feature the camera feeds: `camera_key` (full or without the
    "observation.images." prefix), or the policy's only one."""
    names = sorted(image_features)
    if camera_key is None:
        if len(names) != 1:
            raise ValueError(f"model.camera_key: the policy takes {len(names)} cameras {names}; name the one this "
                             "gate's camera feeds")
        return names[0]
    for key in (camera_key, IMAGE_PREFIX + camera_key):
        if key in image_features:
            return key
    raise ValueError(f"model.camera_key {camera_key!r} is not one of the policy's image features {names}")


def fixed_state(state_feature: Any, state: Sequence[float] | None) -> torch.Tensor | None:
    """The observation.state every decision uses: `state`, or zeros of the policy's state size;
    None for a policy without a state input."""
    if state_feature is None:
        if state:
            raise ValueError("model.state: this policy takes no observation.state")
        return None
    size = int(np.prod(state_feature.shape))
    if state is None:
        return torch.zeros(size)
    if len(state) != size:
        raise ValueError(f"model.state has {len(state)} values; the policy's observation.state has {size}")
    return torch.tensor([float(v) for v in state])


class LeRobotPolicy:
    """A local LeRobot policy directory behind the `Policy` protocol (see module docstring)."""

    output_kind = "action"

    def __init__(self, path: str | Path, *, device: str = "auto", camera_key: str | None = None,
                 state: Sequence[float] | None = None) -> None:
        root = local_model_dir(path)
        configs = _lerobot("lerobot.configs.policies")
        factory = _lerobot("lerobot.policies.factory")
        self.device = resolve_device(device)
        cfg = configs.PreTrainedConfig.from_pretrained(root)
        cfg.device = str(self.device)
        self.camera_key = camera_feature(cfg.image_features, camera_key)
        self.input_size = tuple(int(v) for v in cfg.image_features[self.camera_key].shape[-2:])
        self.state = fixed_state(cfg.robot_state_feature, state)
        self.policy = factory.get_policy_class(cfg.type).from_pretrained(root, config=cfg)
        self.preprocess, self.postprocess = factory.make_pre_post_processors(
            cfg, pretrained_path=str(root), preprocessor_overrides={"device_processor": {"device": str(self.device)}})
        self.name = f"lerobot:{cfg.type}:{root.name}"
        self(torch.full((1, 3, *self.input_size), 0.5), _PROBE_INSTRUCTION)  # a broken pipeline fails at load

    def batch(self, frames: torch.Tensor, instruction: str) -> dict[str, Any]:
        """The raw observation batch for LeRobot's preprocessor: one row per noisy frame."""
        rows = frames.shape[0]
        observation: dict[str, Any] = {self.camera_key: frames, "task": [instruction] * rows}
        if self.state is not None:
            observation[STATE_KEY] = self.state.to(frames.device).expand(rows, -1)
        return observation

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor, instruction: str) -> list[np.ndarray]:
        """One action vector per frame: the first step of a chunk predicted from a reset policy."""
        frames = check_frames(frames, self.input_size, self.device).float()
        self.policy.reset()  # no action queue or observation history from earlier samples
        chunk = self.policy.predict_action_chunk(self.preprocess(self.batch(frames, instruction)))
        actions = self.postprocess(chunk[:, 0])
        return list(actions.detach().to("cpu", torch.float64).numpy())
