"""STAND-IN for OpenVLA, not OpenVLA: a tiny model directory laid out and loaded the way
openvla/openvla-7b is, with a fixed, readable rule in place of a learnt policy.

What it shares with OpenVLA (so the gate's real OpenVLA path runs on it):
- remote code: config.json's auto_map names AutoConfig and AutoModelForVision2Seq (an
  auto class transformers 5 no longer has) -> classes in this file, copied into the
  directory; preprocessor_config.json names AutoProcessor / AutoImageProcessor likewise.
  Loading needs model.trust_remote_code: true.
- a Prismatic-style fused image processor: no image tokens in the prompt, `input_sizes`,
  and one mean/std normalisation per backbone (`means`, `stds`), concatenated on the
  channel axis (6 channels);
- `predict_action(input_ids, unnorm_key, pixel_values=..., attention_mask=...)` for ONE
  image, returning a 7-DoF action (dx, dy, dz, droll, dpitch, dyaw, gripper) as an
  np.ndarray: each dimension is one of 256 bins in [-1, 1], un-normalised with the q01/q99
  statistics of the dataset `unnorm_key` names in `norm_stats` (None only when there is
  exactly one);
- the prompt "In: What action should the robot take to {instruction}?\\nOut:".

The rule, on the mean colour (r, g, b) of the frame (values in [0, 1]):
  dx   = forward displacement per step, high when green dominates ("go" light);
  dyaw = yaw change per step, + when red dominates (turn left), - when blue does;
  a dark frame gives neither (stop). With the `standin_nav` statistics and config/openvla.yaml's
  5 Hz control rate: forward 0.1 m/s, left/right +-0.4 rad/s -- that file's command Twists.
The instruction is encoded but does not change the action.

Build the directory (as `hf download` would leave it):
    python tests/ros_peers/openvla_standin.py /tmp/openvla_standin
then run the gate with config/openvla.yaml and model.path: /tmp/openvla_standin.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import BatchFeature, PretrainedConfig, PreTrainedModel
from transformers.image_processing_utils import ImageProcessingMixin
from transformers.processing_utils import ProcessorMixin

SIZE = 32
MEANS = [(0.5, 0.5, 0.5), (0.485, 0.456, 0.406)]  # two backbones, as OpenVLA's DINOv2 + SigLIP
STDS = [(0.5, 0.5, 0.5), (0.229, 0.224, 0.225)]
PROMPT = "In: What action should the robot take to {instruction}?\nOut:"
NORM_STATS = {  # per-step actions: metres and radians; un-normalised with q01/q99 as OpenVLA does
    "standin_nav": {"action": {"q01": [0.0, 0.0, 0.0, 0.0, 0.0, -0.08, 0.0],
                               "q99": [0.02, 0.0, 0.0, 0.0, 0.0, 0.08, 1.0],
                               "mask": [True, True, True, True, True, True, False]}},
    "standin_slow": {"action": {"q01": [0.0, 0.0, 0.0, 0.0, 0.0, -0.04, 0.0],
                                "q99": [0.01, 0.0, 0.0, 0.0, 0.0, 0.04, 1.0],
                                "mask": [True, True, True, True, True, True, False]}},
}
WORDS = ["<pad>", "<s>", "</s>", "<unk>", "In:", "What", "action", "should", "the", "robot", "take", "to", "Out:",
         "go", "red", "box", "drive", "forward", "stop"]


class StandInOpenVLAConfig(PretrainedConfig):
    model_type = "standin_openvla"

    def __init__(self, norm_stats: dict | None = None, n_action_bins: int = 256, means: list | None = None,
                 stds: list | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.norm_stats = norm_stats or {}
        self.n_action_bins = n_action_bins
        self.means = means or [list(m) for m in MEANS]
        self.stds = stds or [list(s) for s in STDS]


class StandInOpenVLA(PreTrainedModel):
    """predict_action as OpenVLA's: one image, 7 binned dimensions, un-normalised by unnorm_key."""

    config_class = StandInOpenVLAConfig
    base_model_prefix = "standin"

    def __init__(self, config: StandInOpenVLAConfig) -> None:
        super().__init__(config)
        self.gain = torch.nn.Parameter(torch.tensor([2.0, 2.0]))  # weights, so the directory has a checkpoint
        self.norm_stats = config.norm_stats
        self.bins = np.linspace(-1.0, 1.0, config.n_action_bins)
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        if module is self:
            with torch.no_grad():
                self.gain.fill_(2.0)

    def _unnorm_key(self, unnorm_key: str | None) -> str:
        if unnorm_key is None:
            assert len(self.norm_stats) == 1, f"pass an unnorm_key, one of {list(self.norm_stats)}"
            return next(iter(self.norm_stats))
        assert unnorm_key in self.norm_stats, f"unnorm_key {unnorm_key!r} is not one of {list(self.norm_stats)}"
        return unnorm_key

    def _rgb(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Mean colour in [0, 1] from the first backbone's normalised channels."""
        mean = torch.tensor(self.config.means[0], device=pixel_values.device).view(3, 1, 1)
        std = torch.tensor(self.config.stds[0], device=pixel_values.device).view(3, 1, 1)
        return (pixel_values[0, :3].float() * std + mean).mean(dim=(1, 2))

    def predict_action(self, input_ids: torch.Tensor | None = None, unnorm_key: str | None = None,
                       **kwargs: Any) -> np.ndarray:
        pixel_values = kwargs["pixel_values"]
        if pixel_values.shape[0] != 1 or input_ids is None or input_ids.shape[0] != 1:
            raise RuntimeError("like OpenVLA, predict_action takes one image and one prompt")
        r, g, b = self._rgb(pixel_values).tolist()
        forward = 2.0 * min(max(self.gain[0].item() * (g - max(r, b)), 0.0), 1.0) - 1.0
        turn = min(max(self.gain[1].item() * (r - b), -1.0), 1.0)
        normalized = np.array([forward, 0.0, 0.0, 0.0, 0.0, turn, 1.0])
        binned = self.bins[np.abs(self.bins[None, :] - normalized[:, None]).argmin(axis=1)]
        stats = self.norm_stats[self._unnorm_key(unnorm_key)]["action"]
        low, high = np.array(stats["q01"]), np.array(stats["q99"])
        return np.where(stats["mask"], 0.5 * (binned + 1.0) * (high - low) + low, binned)


class StandInImageProcessor(ImageProcessingMixin):
    """Prismatic-style: resize to input_sizes, one normalised copy per backbone, concatenated."""

    model_input_names = ["pixel_values"]

    def __init__(self, input_sizes: list | None = None, means: list | None = None, stds: list | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.input_sizes = input_sizes or [[3, SIZE, SIZE]] * len(MEANS)
        self.means = means or [list(m) for m in MEANS]
        self.stds = stds or [list(s) for s in STDS]

    def __call__(self, images: Any, return_tensors: str | None = None, **kwargs: Any) -> BatchFeature:
        images = images if isinstance(images, (list, tuple)) else [images]
        height, width = self.input_sizes[0][1:]
        rows = []
        for image in images:
            x = torch.from_numpy(np.asarray(image.convert("RGB").resize((width, height)), np.float32) / 255.0)
            x = x.permute(2, 0, 1)
            rows.append(torch.cat([(x - torch.tensor(m).view(3, 1, 1)) / torch.tensor(s).view(3, 1, 1)
                                   for m, s in zip(self.means, self.stds)]))
        return BatchFeature({"pixel_values": torch.stack(rows)}, tensor_type=return_tensors)


class StandInProcessor(ProcessorMixin):
    """Prismatic-style processor: the prompt is tokenised as is (no image tokens)."""

    attributes = ["image_processor", "tokenizer"]

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, **kwargs: Any) -> None:
        super().__init__(image_processor, tokenizer, **kwargs)

    def __call__(self, text: Any = None, images: Any = None, return_tensors: str | None = None,
                 **kwargs: Any) -> BatchFeature:
        encoded = dict(self.tokenizer(text, return_tensors=return_tensors))
        if images is not None:
            encoded.update(self.image_processor(images, return_tensors=return_tensors))
        return BatchFeature(encoded)


def _tokenizer() -> transformers.PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                                eos_token="</s>", unk_token="<unk>")


def _add_auto_map(path: Path, auto_map: dict[str, str]) -> None:
    """Name this file's classes in a JSON file's auto_map, as OpenVLA's repository does."""
    doc = json.loads(path.read_text())
    doc["auto_map"] = auto_map
    path.write_text(json.dumps(doc, indent=2))


def build(out: str | Path) -> Path:
    """Write the stand-in model directory to `out` (a fresh or empty folder) and return it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    module = Path(__file__).stem
    StandInOpenVLA(StandInOpenVLAConfig(norm_stats=NORM_STATS)).save_pretrained(out)
    _tokenizer().save_pretrained(out)
    StandInImageProcessor().save_pretrained(out)
    shutil.copyfile(__file__, out / f"{module}.py")
    _add_auto_map(out / "config.json", {"AutoConfig": f"{module}.StandInOpenVLAConfig",
                                        "AutoModelForVision2Seq": f"{module}.StandInOpenVLA"})
    _add_auto_map(out / "preprocessor_config.json", {"AutoImageProcessor": f"{module}.StandInImageProcessor",
                                                     "AutoProcessor": f"{module}.StandInProcessor"})
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: python {Path(__file__).name} OUTPUT_DIR")
    print(build(sys.argv[1]))
