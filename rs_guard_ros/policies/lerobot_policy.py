"""LeRobot backend: a pretrained LeRobot policy directory (SmolVLA, pi0, ...) as a `Policy`.

LeRobot is imported only here, only when this backend loads, from the user's own install:
its version pins conflict with this package's, so it is never a dependency. The public
interface used is the one LeRobot's own inference loop uses (lerobot >= 0.4):
`PreTrainedConfig.from_pretrained(dir)` (lerobot.configs.policies),
`get_policy_class(cfg.type).from_pretrained(dir, config=cfg)` and
`make_pre_post_processors(cfg, pretrained_path=dir)` (lerobot.policies.factory): the
preprocessor tokenises the task, normalises the state and moves tensors to the device; the
postprocessor un-normalises actions.

Each noisy sample is one row of an observation batch:
  "observation.images.<key>"  one per camera (cameras.<name>.model_key), the noisy views,
                              (B, 3, H, W), [0, 1] plus noise, unclipped, at that image
                              feature's resolution (the policy resizes itself);
  "observation.state"         the robot's joint state of this decision (state.topic), or the
                              configured fixed state (zeros by default), (B, D);
  "task"                      the instruction, once per row.

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


def camera_features(image_features: dict[str, Any], keys: Sequence[str | None]) -> tuple[str, ...]:
    """The image feature each camera feeds, in camera order: its key (full, or without the
    "observation.images." prefix), or -- for one camera without a key -- the policy's only one.
    Every image feature of the policy must be fed by one camera."""
    names = sorted(image_features)
    if len(keys) == 1 and keys[0] is None:
        if len(names) != 1:
            raise ValueError(f"cameras.<name>.model_key: the policy takes {len(names)} cameras {names}; name the "
                             "one this gate's camera feeds")
        return (names[0],)
    found = []
    for key in keys:
        match = next((k for k in (key, IMAGE_PREFIX + str(key)) if key and k in image_features), None)
        if match is None:
            raise ValueError(f"cameras.<name>.model_key {key!r} is not one of the policy's image features {names}")
        found.append(match)
    if len(set(found)) != len(found):
        raise ValueError(f"cameras.<name>.model_key: two cameras feed the same image feature ({found})")
    unfed = sorted(set(names) - set(found))
    if unfed:
        raise ValueError(f"cameras.names: the policy also takes {unfed}; name a camera for each of its image "
                         f"features {names}")
    return tuple(found)


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

    def __init__(self, path: str | Path, *, device: str = "auto", camera_keys: Sequence[str | None] = (None,),
                 state: Sequence[float] | None = None, state_names: Sequence[str] = ()) -> None:
        """`camera_keys`: the image feature each camera feeds (cameras.<name>.model_key, None =
        the policy's only one); `state`: a fixed observation.state; `state_names`: the joints
        (state.joint_names) whose positions come with every call instead (state.topic)."""
        reads_state = bool(state_names)
        root = local_model_dir(path)
        configs = _lerobot("lerobot.configs.policies")
        factory = _lerobot("lerobot.policies.factory")
        self.device = resolve_device(device)
        cfg = configs.PreTrainedConfig.from_pretrained(root)
        cfg.device = str(self.device)
        self.camera_keys = camera_features(cfg.image_features, tuple(camera_keys))
        self.input_sizes = tuple(tuple(int(v) for v in cfg.image_features[k].shape[-2:]) for k in self.camera_keys)
        self.input_size, self.views = self.input_sizes[0], len(self.camera_keys)
        if reads_state:
            size = 0 if cfg.robot_state_feature is None else int(np.prod(cfg.robot_state_feature.shape))
            if size != len(state_names):
                raise ValueError(f"state.joint_names: {len(state_names)} joints, but the policy's observation.state "
                                 f"has {size} values" if size else "state.topic: this policy takes no observation.state")
        self.state = None if reads_state else fixed_state(cfg.robot_state_feature, state)
        self.policy = factory.get_policy_class(cfg.type).from_pretrained(root, config=cfg)
        self.preprocess, self.postprocess = factory.make_pre_post_processors(
            cfg, pretrained_path=str(root), preprocessor_overrides={"device_processor": {"device": str(self.device)}})
        self.name = f"lerobot:{cfg.type}:{root.name}"
        probe = tuple(torch.full((1, 3, *size), 0.5) for size in self.input_sizes)
        self(probe if self.views > 1 else probe[0], _PROBE_INSTRUCTION,  # a broken pipeline fails at load
             **({"state": torch.zeros(len(state_names))} if reads_state else {}))

    def batch(self, views: Sequence[torch.Tensor], instruction: str, state: torch.Tensor | None) -> dict[str, Any]:
        """The raw observation batch for LeRobot's preprocessor: one row per noisy sample."""
        rows = views[0].shape[0]
        observation: dict[str, Any] = dict(zip(self.camera_keys, views))
        observation["task"] = [instruction] * rows
        state = self.state if state is None else state
        if state is not None:
            observation[STATE_KEY] = state.to(views[0].device, torch.float32).reshape(1, -1).expand(rows, -1)
        return observation

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor | Sequence[torch.Tensor], instruction: str,
                 state: torch.Tensor | None = None) -> list[np.ndarray]:
        """One action vector per sample: the first step of a chunk predicted from a reset policy.
        `frames`: (B, 3, H, W), or one such tensor per camera; `state`: this decision's joint state."""
        views = (frames,) if isinstance(frames, torch.Tensor) else tuple(frames)
        if len(views) != self.views:
            raise ValueError(f"expected {self.views} camera view(s), got {len(views)}")
        views = tuple(check_frames(v, size, self.device).float() for v, size in zip(views, self.input_sizes))
        self.policy.reset()  # no action queue or observation history from earlier samples
        chunk = self.policy.predict_action_chunk(self.preprocess(self.batch(views, instruction, state)))
        actions = self.postprocess(chunk[:, 0])
        return list(actions.detach().to("cpu", torch.float64).numpy())
