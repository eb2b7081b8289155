"""STAND-IN, not LeRobot: implements the part of LeRobot's policy interface the gate uses,
the way lerobot 0.4-0.6 does, with a fixed, readable rule in place of a learnt policy.
LeRobot itself cannot be installed beside this package (its version pins conflict), so
tests write this stand-in as a package named `lerobot` into a temporary folder and put that
folder on sys.path: the gate's backend then runs its real import path
(`lerobot.configs.policies`, `lerobot.policies.factory`) unchanged.

What it reproduces of LeRobot (the parts that matter to a gate):
- `PreTrainedConfig.from_pretrained(dir)`: config.json with "type", "input_features" /
  "output_features" ({key: {"type": "VISUAL"|"STATE"|"ACTION", "shape": [...]}}) and
  "device"; properties image_features, robot_state_feature, action_feature.
- `get_policy_class(name)` and `PreTrainedPolicy.from_pretrained(dir, config=cfg)`
  (weights from model.safetensors, moved to cfg.device, eval mode).
- `make_pre_post_processors(cfg, pretrained_path=dir, preprocessor_overrides=...)`: the
  preprocessor tokenises "task" (one string per row), normalises observation.state
  (mean/std) and moves tensors to the device ("device_processor" override); the
  postprocessor un-normalises actions and moves them to the CPU. The policy itself only
  sees and emits NORMALISED values, as in LeRobot >= 0.4.
- statefulness: `select_action` pops actions from a queue filled with a whole chunk
  predicted on an earlier observation; observations are kept in a history of
  n_obs_steps (filled with copies on the first call after `reset()`), and the prediction
  uses the mean over that history; stacking a history of another batch size fails, as in
  LeRobot. `predict_action_chunk(batch, noise=None)` returns (B, chunk_size, action_dim)
  and, like SmolVLA's flow matching, draws its own noise (flow_noise_std) when none is given.

The rule (a LeKiwi-like base: action = 6 arm joints, then x.vel m/s, y.vel m/s, theta.vel
deg/s), on the mean colour (r, g, b) of the camera images in [0, 1] (every image feature,
equally weighted):
  x.vel     = 0.2 * clip(2 (g - max(r, b)), 0, 1)    green: drive forward;
  theta.vel = 34.4 * clip(2 (r - b), -1, 1)           red: turn left, blue: turn right;
  all zero when the task contains the word "stop", or when the first state value, normalised,
  is above STATE_STOP (an arm raised: the base must not move); a dark frame gives zero too.
Later steps of a chunk fade out linearly, so a stale queued action differs from a fresh one.

Write a site folder (holding the `lerobot` stand-in package) and a policy directory:
    python tests/ros_peers/lerobot_standin.py SITE_DIR POLICY_DIR
then run the gate with PYTHONPATH=SITE_DIR, model.backend: lerobot, model.path: POLICY_DIR
(see tests/test_lerobot_policy.py).
"""
from __future__ import annotations

import json
import shutil
import sys
import zlib
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Iterator

import torch

POLICY_TYPE = "standin_vla"
CAMERA = "observation.images.front"
STATE = "observation.state"
ACTION = "action"
ACTION_DIM = 9  # LeKiwi: 6 arm joints, x.vel, y.vel, theta.vel
X_VEL, THETA_VEL = 6, 8
STATE_STOP = 10.0  # a normalised first state value above this stops the base
TOKENS = "observation.language.tokens"
PREPROCESSOR_FILE = "policy_preprocessor.json"
POSTPROCESSOR_FILE = "policy_postprocessor.json"
# Raw action statistics (what the postprocessor un-normalises with).
ACTION_MEAN = [0.0] * 6 + [0.1, 0.0, 0.0]
ACTION_STD = [1.0] * 6 + [0.1, 0.05, 20.0]
STATE_MEAN = [0.5] * ACTION_DIM
STATE_STD = [2.0] * ACTION_DIM


def word_id(word: str) -> int:
    """The stand-in tokenizer: a stable id per lower-cased word."""
    return zlib.crc32(word.lower().encode()) % 50_000 + 1


# ---------------------------------------------------------------- lerobot.configs
class FeatureType(str, Enum):
    STATE = "STATE"
    VISUAL = "VISUAL"
    ACTION = "ACTION"


@dataclass
class PolicyFeature:
    type: FeatureType
    shape: tuple[int, ...]


@dataclass
class PreTrainedConfig:
    """config.json of a pretrained policy directory."""

    type: str
    input_features: dict[str, PolicyFeature] = field(default_factory=dict)
    output_features: dict[str, PolicyFeature] = field(default_factory=dict)
    device: str = "cpu"
    n_obs_steps: int = 1
    chunk_size: int = 4
    n_action_steps: int = 4
    flow_noise_std: float = 0.0

    @classmethod
    def from_pretrained(cls, pretrained_name_or_path: str | Path, **_kwargs: Any) -> "PreTrainedConfig":
        root = Path(pretrained_name_or_path)
        if not root.is_dir():
            raise FileNotFoundError(f"STAND-IN lerobot: no hub here, {root} is not a directory")
        doc = json.loads((root / "config.json").read_text())

        def features(group: dict) -> dict[str, PolicyFeature]:
            return {k: PolicyFeature(FeatureType(v["type"]), tuple(v["shape"])) for k, v in group.items()}

        doc["input_features"] = features(doc.get("input_features", {}))
        doc["output_features"] = features(doc.get("output_features", {}))
        return cls(**doc)

    @property
    def image_features(self) -> dict[str, PolicyFeature]:
        return {k: f for k, f in self.input_features.items() if f.type is FeatureType.VISUAL}

    @property
    def robot_state_feature(self) -> PolicyFeature | None:
        return self.input_features.get(STATE)

    @property
    def action_feature(self) -> PolicyFeature | None:
        return self.output_features.get(ACTION)


# ---------------------------------------------------------------- lerobot.policies.pretrained
class PreTrainedPolicy(torch.nn.Module):
    """Base class: from_pretrained, and the abstract closed-loop interface."""

    name: str = ""

    def __init__(self, config: PreTrainedConfig) -> None:
        super().__init__()
        self.config = config

    @classmethod
    def from_pretrained(cls, pretrained_name_or_path: str | Path, *, config: PreTrainedConfig | None = None,
                        **_kwargs: Any) -> "PreTrainedPolicy":
        from safetensors.torch import load_file

        config = config or PreTrainedConfig.from_pretrained(pretrained_name_or_path)
        policy = cls(config)
        policy.load_state_dict(load_file(str(Path(pretrained_name_or_path) / "model.safetensors")))
        return policy.to(config.device).eval()

    def reset(self) -> None:
        raise NotImplementedError

    def predict_action_chunk(self, batch: dict[str, Any], noise: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def select_action(self, batch: dict[str, Any], noise: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


class StandInVLAPolicy(PreTrainedPolicy):
    """The colour rule above, with LeRobot's queues and observation history."""

    name = POLICY_TYPE

    def __init__(self, config: PreTrainedConfig) -> None:
        super().__init__(config)
        self.gain = torch.nn.Parameter(torch.tensor([2.0, 2.0]))
        self.reset()

    def reset(self) -> None:
        self._queues: dict[str, deque] = {ACTION: deque(maxlen=self.config.n_action_steps)}
        for key in [*self.config.image_features, STATE]:
            self._queues[key] = deque(maxlen=self.config.n_obs_steps)

    def _remember(self, batch: dict[str, Any]) -> None:
        """Append the observation to the history (filled with copies when empty)."""
        for key, queue in self._queues.items():
            if key == ACTION or key not in batch:
                continue
            if not queue:
                queue.extend([batch[key]] * queue.maxlen)
            else:
                queue.append(batch[key])

    def _history(self, key: str) -> torch.Tensor:
        return torch.stack(list(self._queues[key]), dim=1)  # (B, n_obs_steps, ...): fails on mixed batch sizes

    def predict_action_chunk(self, batch: dict[str, Any], noise: torch.Tensor | None = None) -> torch.Tensor:
        if STATE not in batch:
            raise KeyError(f"STAND-IN lerobot: '{STATE}' missing from the batch")
        self._remember(batch)
        rgb = torch.stack([self._history(key).float().mean(dim=(1, 3, 4))  # over history and pixels: (B, 3)
                           for key in self.config.image_features]).mean(dim=0)
        r, g, b = rgb.unbind(dim=1)
        x_vel = 0.2 * torch.clamp(self.gain[0] * (g - torch.maximum(r, b)), 0.0, 1.0)
        theta_vel = 34.4 * torch.clamp(self.gain[1] * (r - b), -1.0, 1.0)
        stop = (batch[TOKENS] == word_id("stop")).any(dim=1) | (self._history(STATE)[:, -1, 0] > STATE_STOP)
        raw = torch.zeros(len(rgb), ACTION_DIM, device=rgb.device)
        raw[:, X_VEL] = torch.where(stop, 0.0, x_vel)
        raw[:, THETA_VEL] = torch.where(stop, 0.0, theta_vel)
        mean = torch.tensor(ACTION_MEAN, device=raw.device)
        std = torch.tensor(ACTION_STD, device=raw.device)
        fade = 1.0 - torch.arange(self.config.chunk_size, device=raw.device) / self.config.chunk_size
        chunk = ((raw - mean) / std)[:, None, :] * fade[None, :, None] - (mean / std) * (1 - fade)[None, :, None]
        if noise is None:
            noise = torch.randn_like(chunk) * self.config.flow_noise_std
        return chunk + noise

    def select_action(self, batch: dict[str, Any], noise: torch.Tensor | None = None) -> torch.Tensor:
        if not self._queues[ACTION]:
            chunk = self.predict_action_chunk(batch, noise)
            self._queues[ACTION].extend(chunk.transpose(0, 1)[: self.config.n_action_steps])
        else:
            self._remember(batch)
        return self._queues[ACTION].popleft()


# ---------------------------------------------------------------- lerobot.policies.factory
_POLICIES = {POLICY_TYPE: StandInVLAPolicy}


def get_policy_class(name: str) -> type[PreTrainedPolicy]:
    if name not in _POLICIES:
        raise ValueError(f"STAND-IN lerobot: policy type {name!r} is not available (only {list(_POLICIES)})")
    return _POLICIES[name]


class _Preprocessor:
    """Tokenise the task, normalise the state, move tensors to the device."""

    def __init__(self, stats: dict[str, list[float]], device: str) -> None:
        self.mean, self.std, self.device = torch.tensor(stats["state_mean"]), torch.tensor(stats["state_std"]), device

    def __call__(self, observation: dict[str, Any]) -> dict[str, Any]:
        out = {k: v.to(self.device) for k, v in observation.items() if isinstance(v, torch.Tensor)}
        task = observation["task"]
        task = [task] if isinstance(task, str) else list(task)
        width = max(len(t.split()) for t in task)
        out[TOKENS] = torch.tensor([[word_id(w) for w in t.split()] + [0] * (width - len(t.split())) for t in task],
                                   device=self.device)
        if STATE in out:
            out[STATE] = (out[STATE].float() - self.mean.to(self.device)) / self.std.to(self.device)
        return out


class _Postprocessor:
    """Un-normalise actions and move them to the CPU."""

    def __init__(self, stats: dict[str, list[float]]) -> None:
        self.mean, self.std = torch.tensor(stats["action_mean"]), torch.tensor(stats["action_std"])

    def __call__(self, action: torch.Tensor) -> torch.Tensor:
        return action.cpu() * self.std + self.mean


def make_pre_post_processors(policy_cfg: PreTrainedConfig, pretrained_path: str | None = None,
                             **kwargs: Any) -> tuple[_Preprocessor, _Postprocessor]:
    root = Path(pretrained_path)
    device = kwargs.get("preprocessor_overrides", {}).get("device_processor", {}).get("device", policy_cfg.device)
    pre = json.loads((root / PREPROCESSOR_FILE).read_text())
    post = json.loads((root / POSTPROCESSOR_FILE).read_text())
    return _Preprocessor(pre, device), _Postprocessor(post)


# ---------------------------------------------------------------- writing the package and a policy
_PACKAGE = {  # module -> names it re-exports from lerobot._standin
    "__init__": [],
    "configs/__init__": [],
    "configs/types": ["FeatureType", "PolicyFeature"],
    "configs/policies": ["PreTrainedConfig"],
    "policies/__init__": [],
    "policies/pretrained": ["PreTrainedPolicy"],
    "policies/factory": ["get_policy_class", "make_pre_post_processors"],
}


def write_package(site: str | Path) -> Path:
    """Write the stand-in as a package named `lerobot` into `site` (put `site` on sys.path)."""
    package = Path(site) / "lerobot"
    package.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(__file__, package / "_standin.py")
    for module, names in _PACKAGE.items():
        path = package / f"{module}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        body = f"from lerobot._standin import {', '.join(names)}  # noqa: F401\n" if names else ""
        path.write_text('"""STAND-IN for LeRobot (tests/ros_peers/lerobot_standin.py), not LeRobot."""\n' + body)
    (package / "__init__.py").write_text('"""STAND-IN for LeRobot (tests/ros_peers/lerobot_standin.py), not '
                                         'LeRobot."""\n__version__ = "0.0.0+standin"\nSTANDIN = True\n')
    return Path(site)


@contextmanager
def installed(site: str | Path) -> Iterator[Path]:
    """Within the block, `import lerobot` finds the stand-in written to `site` (and only then:
    every lerobot module imported meanwhile is forgotten afterwards)."""
    site = write_package(site)
    real = _forget_lerobot()  # a real lerobot imported earlier must not shadow the stand-in
    sys.path.insert(0, str(site))
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        _forget_lerobot()
        sys.modules.update(real)


def _forget_lerobot() -> dict[str, Any]:
    """Remove every imported lerobot module from sys.modules; return them."""
    return {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] == "lerobot"}


def write_policy(out: str | Path, *, image_shape: tuple[int, int, int] = (3, 24, 32), n_obs_steps: int = 1,
                 flow_noise_std: float = 0.0, cameras: tuple[str, ...] = ("front",)) -> Path:
    """Write a pretrained stand-in policy directory, laid out as LeRobot saves one: one image
    feature observation.images.<camera> of `image_shape` per camera."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = {"type": POLICY_TYPE, "device": "cpu", "n_obs_steps": n_obs_steps, "chunk_size": 4, "n_action_steps": 4,
              "flow_noise_std": flow_noise_std,
              "input_features": {**{f"observation.images.{name}": {"type": "VISUAL", "shape": list(image_shape)}
                                    for name in cameras},
                                 STATE: {"type": "STATE", "shape": [ACTION_DIM]}},
              "output_features": {ACTION: {"type": "ACTION", "shape": [ACTION_DIM]}}}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    save_file({"gain": torch.tensor([2.0, 2.0])}, str(out / "model.safetensors"))
    (out / PREPROCESSOR_FILE).write_text(json.dumps({"state_mean": STATE_MEAN, "state_std": STATE_STD}))
    (out / POSTPROCESSOR_FILE).write_text(json.dumps({"action_mean": ACTION_MEAN, "action_std": ACTION_STD}))
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: python {Path(__file__).name} SITE_DIR POLICY_DIR")
    print(write_package(sys.argv[1]), write_policy(sys.argv[2]))
