"""Hugging Face transformers backend: any local vision-language model directory as a `Policy`.

Two modes:
  * "generate": greedy (or sampled) text generation; one decoded string per frame.
  * "action": OpenVLA-style models exposing `predict_action(...)`; one continuous action
    vector (np.ndarray) per frame.

The hot path is built for randomized smoothing, which calls the model on hundreds of noisy
copies of one frame with one instruction: the prompt is tokenised once per instruction and
expanded to the batch without copies, and pixel values are computed from the noisy float
frames on the model's device by the processor's own mean/std normalisation (no PIL, no
uint8 re-quantisation, no CPU round trip). Models whose processor is not a per-channel
mean/std normalisation at a fixed resolution are refused at load time with a clear error;
processors that tile or resize each image dynamically (SmolVLM/Idefics3 image splitting)
run once `image_size` fixes them to one square resolution.

Several cameras (`views` > 1, "generate" mode): one prompt holds one image per camera, in
camera order (one image entry per camera in the chat template, the way multi-image chat
VLMs such as LLaVA and Idefics3/SmolVLM take several images), and the processor is called
with the list of images, so each camera gets its own block of image tokens. A VLM's prompt
has no place for the joint state: the gate checks and records it, the model does not read it.

Everything that decides what the model computes is checked at load time, not at the first
decision: the prompt template encodes, `unnorm_key` names one of the model's datasets, and
in "action" mode the actions depend on the image at all (OpenVLA's own code is reported
to ignore the image silently on transformers >= 4.50, openvla/openvla#346; a gate over an
image-blind model would certify every command it emits).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..devices import resolve_device
from .hf_inputs import build_prompt, pixel_normalizer
from .model_path import local_model_dir

MODES = ("generate", "action")
_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "float16": torch.float16, "fp16": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}
# What a loadable model directory must contain (any one file of each group).
_REQUIRED_FILES = {
    "config (config.json)": ("config.json",),
    "weights (*.safetensors or pytorch_model*.bin)": ("*.safetensors", "pytorch_model*.bin"),
    "tokenizer files (tokenizer.json, tokenizer_config.json, tokenizer.model or vocab.json)":
        ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json"),
    "processor files (processor_config.json or preprocessor_config.json)":
        ("processor_config.json", "preprocessor_config.json"),
}
# Distinct per-channel values k/255: exact in uint8, so the processor sees the same image.
_CHECK_RGB = (51, 102, 153)
# Load-time probes of the action path: an instruction, and uniform frames no image-conditioned
# model maps to one identical action vector (black, white, red, green, blue).
_CHECK_INSTRUCTION = "go forward"
_CHECK_COLOURS = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
# Image-processor settings that make the resolution depend on the image.
_DYNAMIC_RESOLUTION = ("do_image_splitting", "image_grid_pinpoints", "max_pixels")
# Auto classes a vision-language model directory may name, newest first.
_AUTO_CLASS_NAMES = ("AutoModelForImageTextToText", "AutoModelForVision2Seq")


def check_model_dir(path: str | Path, required: dict[str, tuple[str, ...]] = _REQUIRED_FILES) -> Path:
    """Return `path` as a Path, or raise ValueError naming it and every missing file group
    (a hub id or a missing directory: see model_path.local_model_dir)."""
    root = local_model_dir(path)
    missing = [what for what, patterns in required.items() if not any(any(root.glob(p)) for p in patterns)]
    if missing:
        raise ValueError(f"model directory {str(root)!r} is incomplete: missing {'; '.join(missing)}")
    return root


def resolve_dtype(spec: str, device: torch.device) -> torch.dtype:
    """Map a dtype name to torch; "auto" is float32 on the CPU and bfloat16 on CUDA."""
    if spec == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if spec not in _DTYPES:
        raise ValueError(f"dtype {spec!r} is not one of 'auto', {', '.join(map(repr, _DTYPES))}")
    return _DTYPES[spec]


def _height_width(size: Any) -> tuple[int, int] | None:
    """(height, width) from a processor size entry (dict or SizeDict), if it names both."""
    get = size.get if isinstance(size, dict) else lambda key: getattr(size, key, None)
    height, width = get("height"), get("width")
    return (int(height), int(width)) if height and width else None


def model_input_size(image_processor: Any, config: Any = None) -> tuple[int, int]:
    """The (H, W) resolution the model's vision encoder takes.

    The vision config is authoritative (its position embeddings fix the size); otherwise the
    processor's crop / resize size, or Prismatic's (C, H, W) `input_sizes`.
    """
    image_size = getattr(getattr(config, "vision_config", None), "image_size", None)
    if isinstance(image_size, int):
        return image_size, image_size
    if isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        return int(image_size[0]), int(image_size[1])
    candidates = [getattr(image_processor, "crop_size", None), getattr(image_processor, "size", None)]
    for size in filter(None, candidates):
        if hw := _height_width(size):
            return hw
    input_sizes = getattr(image_processor, "input_sizes", None)
    if input_sizes:
        return int(input_sizes[0][1]), int(input_sizes[0][2])
    raise ValueError(f"cannot tell the input resolution of image processor {type(image_processor).__name__}")


def dynamic_resolution(image_processor: Any) -> str | None:
    """The image-processor setting that makes its output resolution depend on the image, if any."""
    return next((name for name in _DYNAMIC_RESOLUTION if getattr(image_processor, name, None)), None)


def _square(entry: Any, size: int) -> Any:
    """A processor size entry (dict or SizeDict) with each of its edges set to `size`."""
    get = entry.get if isinstance(entry, dict) else lambda key: getattr(entry, key, None)
    square = {key: size for key in ("height", "width", "longest_edge", "shortest_edge") if get(key)}
    return square if isinstance(entry, dict) else type(entry)(**square)


def fix_resolution(image_processor: Any, size: int) -> None:
    """Make the processor turn every image into ONE size x size image: image splitting off,
    every resize target `size` (whether that reproduces the processor is checked after)."""
    if getattr(image_processor, "do_image_splitting", None):
        image_processor.do_image_splitting = False
    for name in ("size", "crop_size", "max_image_size"):
        if getattr(image_processor, name, None) is not None:
            setattr(image_processor, name, _square(getattr(image_processor, name), size))


def input_resolution(image_processor: Any, config: Any, image_size: int) -> tuple[int, int]:
    """The (H, W) the gate feeds the model: `image_size` square once the processor is fixed
    to it, else the model's own resolution. A dynamic processor needs `image_size`, and a
    vision encoder with a fixed size must be fed that size."""
    native = getattr(getattr(config, "vision_config", None), "image_size", None)
    if not image_size:
        if setting := dynamic_resolution(image_processor):
            hint = f"e.g. {native}, the vision encoder's size" if isinstance(native, int) else "a square size"
            raise ValueError(f"model.image_size: image processor {type(image_processor).__name__} picks its "
                             f"resolution per image ({setting}), but certification needs one input size: set "
                             f"model.image_size ({hint})")
        return model_input_size(image_processor, config)
    if isinstance(native, int) and native != image_size:
        raise ValueError(f"model.image_size {image_size}: the vision encoder takes {native} x {native}; set "
                         f"model.image_size: {native}")
    fix_resolution(image_processor, image_size)
    return image_size, image_size


def frame_normalizer(image_processor: Any, device: torch.device, dtype: torch.dtype,
                     image_axis: bool = False) -> Callable:
    """Noisy [0, 1] frames -> the model's pixel_values, on `device`, in `dtype`.

    Normalisation runs in float32 and is cast afterwards, so a bf16 model still sees the
    noise at full precision until its first layer. Fused-backbone processors (Prismatic /
    OpenVLA: lists `means`, `stds`) get one normalised copy per backbone, concatenated on
    the channel axis as their processor does. `image_axis` gives each frame its own image
    axis, (B, 1, 3, H, W), as Idefics3/SmolVLM processors lay out one image per prompt.
    """
    if all(getattr(image_processor, name, None) is not None for name in ("image_mean", "image_std")):
        parts = [pixel_normalizer(image_processor, device, torch.float32)]
    elif getattr(image_processor, "means", None) and getattr(image_processor, "stds", None):
        parts = [pixel_normalizer(SimpleNamespace(image_mean=m, image_std=s), device, torch.float32)
                 for m, s in zip(image_processor.means, image_processor.stds)]
    else:
        raise ValueError(f"unsupported pixel format: image processor {type(image_processor).__name__} has no "
                         "per-channel mean/std normalisation (image_mean/image_std or means/stds)")

    def normalize(frames: torch.Tensor) -> torch.Tensor:
        pixels = torch.cat([part(frames) for part in parts], dim=1).to(dtype)
        return pixels.unsqueeze(1) if image_axis else pixels

    return normalize


def _check_image(input_size: tuple[int, int]):
    """A constant-colour PIL image at the model's resolution (resize/crop leave it unchanged)."""
    from PIL import Image

    height, width = input_size
    return Image.new("RGB", (width, height), _CHECK_RGB)


def check_pixel_path(image_processor: Any, input_size: tuple[int, int]) -> bool:
    """Raise ValueError unless `frame_normalizer` reproduces the processor on a test image;
    return whether it does so with an image axis (B, 1, 3, H, W).

    Catches processors whose pixel format is not what `frame_normalizer` assumes
    (image tiling, extra resizing, other scalings) before they silently corrupt inputs.
    Checked in float32 on the CPU, so a bf16 model's rounding is not mistaken for a mismatch.
    """
    expected = image_processor(images=[_check_image(input_size)], return_tensors="pt")["pixel_values"]
    image_axis = expected.ndim == 5
    normalize = frame_normalizer(image_processor, torch.device("cpu"), torch.float32, image_axis)
    frame = torch.tensor(_CHECK_RGB, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, *input_size) / 255.0
    got = normalize(frame)
    if tuple(expected.shape) != tuple(got.shape) or not torch.allclose(expected.float(), got, atol=1e-3):
        raise ValueError(f"unsupported pixel format: {type(image_processor).__name__} produces pixel_values of shape "
                         f"{tuple(expected.shape)} that mean/std normalisation at {input_size} does not reproduce")
    return image_axis


class PromptCache:
    """Tokenised prompt per instruction, on the model's device, expanded to any batch size.

    The processor is called once per new instruction with one test image, so image
    placeholder tokens are expanded exactly as the model expects; later batches reuse the
    cached tensors through `expand` (no copy, no re-tokenising).
    """

    def __init__(self, processor: Any, input_size: tuple[int, int], device: torch.device,
                 prompt_template: str | None = None, maxsize: int = 64, images: int = 1) -> None:
        self.processor = processor
        self.input_size = input_size
        self.device = device
        self.prompt_template = prompt_template
        self.images = images  # images per prompt: one per camera
        self._encode = functools.lru_cache(maxsize=maxsize)(self._encode_uncached)

    def prompt(self, instruction: str) -> str:
        """The prompt text: the configured template (which holds every image token itself),
        else the shared `build_prompt` with one image per camera."""
        if self.prompt_template is not None:
            return self.prompt_template.format(instruction=instruction)
        return build_prompt(self.processor, instruction, self.images)

    def _encode_uncached(self, instruction: str) -> dict[str, torch.Tensor]:
        """Run the processor once (one test image per camera); keep the text-side tensors
        (batch 1) on the device."""
        encoded = self.processor(text=self.prompt(instruction), images=[_check_image(self.input_size)] * self.images,
                                 return_tensors="pt")
        pixel_keys = set(getattr(self.processor.image_processor, "model_input_names", ["pixel_values"]))
        return {key: value.to(self.device) for key, value in encoded.items()
                if key not in pixel_keys and isinstance(value, torch.Tensor)}

    def __call__(self, instruction: str, batch: int) -> dict[str, torch.Tensor]:
        """The cached text inputs for `instruction`, expanded to `batch` rows."""
        if not isinstance(instruction, str):
            raise ValueError(f"instruction must be a str, got {type(instruction).__name__}")
        return {key: value.expand(batch, *value.shape[1:]) for key, value in self._encode(instruction).items()}


def check_frames(frames: Any, input_size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """Validate a (B, 3, H, W) float batch at `input_size` and put it on `device`."""
    if not isinstance(frames, torch.Tensor):
        raise ValueError(f"frames must be a torch.Tensor, got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[1] != 3 or tuple(frames.shape[2:]) != tuple(input_size):
        raise ValueError(f"frames must have shape (B, 3, {input_size[0]}, {input_size[1]}), got {tuple(frames.shape)}")
    if not frames.is_floating_point():
        raise ValueError(f"frames must be floating point in [0, 1] plus noise, got {frames.dtype}")
    return frames.to(device, non_blocking=True)


def _remote_model_class(root: Path) -> Any | None:
    """The model class that the directory's own code provides (config.json's auto_map) under a
    vision-language auto class name, loaded directly: OpenVLA names only
    AutoModelForVision2Seq, which transformers 5 no longer has."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    auto_map = json.loads((root / "config.json").read_text()).get("auto_map", {})
    reference = next((auto_map[name] for name in _AUTO_CLASS_NAMES if name in auto_map), None)
    if reference is None:
        return None
    try:
        return get_class_from_dynamic_module(reference, str(root), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 -- re-raised naming the path and the class
        raise ValueError(f"cannot import {reference!r}, the model class {str(root / 'config.json')!r} names: "
                         f"{_first_line(exc)}") from exc


def _model_classes(root: Path, trust_remote_code: bool) -> list[Any]:
    """Classes to try, in order: the directory's own (remote code, when trusted), then the
    auto classes this transformers has, newest first."""
    import transformers

    auto_classes = [getattr(transformers, name) for name in _AUTO_CLASS_NAMES if hasattr(transformers, name)]
    own = _remote_model_class(root) if trust_remote_code else None
    return auto_classes if own is None else [own, *auto_classes]


def _load_model(root: Path, dtype: torch.dtype, trust_remote_code: bool) -> Any:
    """Load the model with the first class that knows its config; errors name the path."""
    errors = []
    for model_class in _model_classes(root, trust_remote_code):
        try:
            return model_class.from_pretrained(root, dtype=dtype, local_files_only=True,
                                               trust_remote_code=trust_remote_code)
        except Exception as exc:  # noqa: BLE001 -- collected and re-raised with the path below
            errors.append(f"{model_class.__name__}: {_first_line(exc)}")
    raise ValueError(f"cannot load a vision-language model from {str(root)!r}: " + " | ".join(errors)
                     + _remote_code_hint(root, trust_remote_code))


def _first_line(exc: BaseException) -> str:
    """An exception's message as one line (library messages often run over several)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _remote_code_hint(root: Path, trust_remote_code: bool) -> str:
    """What to set when a directory that ships its own Python code failed to load untrusted."""
    if trust_remote_code or not any(root.glob("*.py")):
        return ""
    return "; the directory ships its own code (*.py): if you trust it, set model.trust_remote_code: true"


def check_unnorm_key(model: Any, unnorm_key: str | None) -> None:
    """An OpenVLA-style model un-normalises actions with one dataset's statistics
    (`norm_stats`); `unnorm_key` must name one of them, or be None when there is only one."""
    stats = getattr(model, "norm_stats", None) or getattr(model.config, "norm_stats", None)
    if not isinstance(stats, dict) or not stats:
        return
    if (unnorm_key is None and len(stats) > 1) or (unnorm_key is not None and unnorm_key not in stats):
        raise ValueError(f"model.unnorm_key {unnorm_key or ''!r}: set it to the dataset whose action statistics "
                         f"fit your robot, one of {sorted(stats)}")


def load_processor(root: Path, trust_remote_code: bool) -> Any:
    """Load the processor (tokenizer + image processor); errors name the path."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(root, local_files_only=True, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 -- re-raised with the path
        raise ValueError(f"cannot load the processor from {str(root)!r}: {_first_line(exc)}"
                         + _remote_code_hint(root, trust_remote_code)) from exc
    if getattr(processor, "image_processor", None) is None or getattr(processor, "tokenizer", None) is None:
        raise ValueError(f"the processor in {str(root)!r} ({type(processor).__name__}) lacks an image processor "
                         "or a tokenizer: not a vision-language model processor")
    return processor


class TransformersPolicy:
    """A local Hugging Face VLM directory behind the `Policy` protocol (see module docstring)."""

    def __init__(self, path: str | Path, *, device: str = "auto", dtype: str = "auto", max_new_tokens: int = 8,
                 do_sample: bool = False, temperature: float = 1.0, trust_remote_code: bool = False,
                 mode: str = "generate", unnorm_key: str | None = None, prompt_template: str | None = None,
                 image_size: int = 0, views: int = 1) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {MODES}")
        if not isinstance(views, int) or views < 1 or (views > 1 and mode != "generate"):
            raise ValueError(f"views {views!r}: the transformers backend takes one or more cameras in 'generate' "
                             f"mode and one in 'action' mode (mode {mode!r})")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        root = check_model_dir(path)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.processor = load_processor(root, trust_remote_code)
        self.model = _load_model(root, self.dtype, trust_remote_code).to(self.device).eval()
        needed = "predict_action" if mode == "action" else "generate"
        if not callable(getattr(self.model, needed, None)):
            raise ValueError(f"mode {mode!r} needs a model with {needed}(); {type(self.model).__name__} "
                             f"from {str(root)!r} has none")
        self.name = f"transformers:{root.name}"
        self.mode = mode
        self.output_kind = "action" if mode == "action" else "text"
        image_processor = self.processor.image_processor
        self.input_size = input_resolution(image_processor, self.model.config, image_size)
        self.views = views
        self.input_sizes = (self.input_size,) * views  # every camera at the model's resolution
        self.image_axis = check_pixel_path(image_processor, self.input_size)
        self.normalize = frame_normalizer(image_processor, self.device, self.model.dtype, self.image_axis)
        self.prompts = PromptCache(self.processor, self.input_size, self.device, prompt_template, images=views)
        self._check_prompt(root)
        self.unnorm_key = unnorm_key
        self.generate_kwargs = self._generate_kwargs(max_new_tokens, do_sample, temperature)
        if mode == "action":
            check_unnorm_key(self.model, unnorm_key)
            self._check_image_dependence(root)

    def _check_prompt(self, root: Path) -> None:
        """Encode one instruction now, so a template the processor cannot use fails at load time."""
        try:
            self.prompts(_CHECK_INSTRUCTION, 1)
        except Exception as exc:  # noqa: BLE001 -- re-raised naming the parameter and the prompt
            prompt = self.prompts.prompt(_CHECK_INSTRUCTION)
            raise ValueError(f"model.prompt_template: the processor in {str(root)!r} cannot encode the prompt "
                             f"{prompt!r}: {_first_line(exc)}") from exc

    def _check_image_dependence(self, root: Path) -> None:
        """Refuse an action model that gives one identical action for very different frames
        (uniform black, white, red, green, blue): it ignores the image, and smoothing would
        certify whatever it emits."""
        colours = torch.tensor(_CHECK_COLOURS, dtype=torch.float32).view(-1, 3, 1, 1)
        actions = self(colours.expand(-1, -1, *self.input_size).to(self.device), _CHECK_INSTRUCTION)
        if all(np.array_equal(actions[0], action) for action in actions[1:]):
            raise ValueError(f"model {str(root)!r} returns the same action {actions[0].tolist()} for black, white, "
                             "red, green and blue frames: it ignores the image (as OpenVLA's own code is reported "
                             "to on transformers >= 4.50, openvla/openvla#346); refusing to certify an image-blind "
                             "model")

    def _generate_kwargs(self, max_new_tokens: int, do_sample: bool, temperature: float) -> dict[str, Any]:
        """generate() options; temperature only when sampling (greedy ignores it and warns)."""
        kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": bool(do_sample)}
        if do_sample:
            kwargs["temperature"] = float(temperature)
        generation_config = getattr(self.model, "generation_config", None)
        if generation_config is not None and generation_config.pad_token_id is None:
            pad, eos = self.processor.tokenizer.pad_token_id, self.processor.tokenizer.eos_token_id
            kwargs["pad_token_id"] = eos if pad is None else pad
        return kwargs

    def pixel_values(self, frames: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """The model's pixel_values for (B, 3, H, W) frames, or one such batch per camera: each
        sample's images consecutive, in camera order ((B * views, 3, H, W), or (B, views, 3, H, W)
        for processors with an image axis), as the processor lays out a multi-image prompt."""
        views = (frames,) if isinstance(frames, torch.Tensor) else tuple(frames)
        if len(views) != self.views:
            raise ValueError(f"expected {self.views} camera view(s), got {len(views)}")
        checked = [check_frames(view, self.input_size, self.device) for view in views]
        if len({view.shape[0] for view in checked}) != 1:
            raise ValueError(f"camera views must have the same batch size, got {[v.shape[0] for v in checked]}")
        rows = checked[0].shape[0]
        joint = checked[0] if self.views == 1 else torch.stack(checked, dim=1).flatten(0, 1)  # one view: no copy
        pixels = self.normalize(joint)
        return pixels.reshape(rows, self.views, *pixels.shape[-3:]) if self.image_axis else pixels

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor | Sequence[torch.Tensor], instruction: str,
                 state: torch.Tensor | None = None) -> Sequence[Any]:
        """One output per sample: decoded text ("generate") or an action vector ("action").
        `frames`: (B, 3, H, W), or one such batch per camera; `state` is not read (module docstring)."""
        pixel_values = self.pixel_values(frames)
        rows = pixel_values.shape[0] if self.image_axis else pixel_values.shape[0] // self.views
        if self.mode == "action":
            return self._actions(pixel_values, instruction)
        text_inputs = self.prompts(instruction, rows)
        generated = self.model.generate(**text_inputs, pixel_values=pixel_values, **self.generate_kwargs)
        if not self.model.config.is_encoder_decoder:  # decoder-only models echo the prompt first
            generated = generated[:, text_inputs["input_ids"].shape[1]:]
        texts = self.processor.tokenizer.batch_decode(generated, skip_special_tokens=True)
        return [text.strip() for text in texts]

    def _actions(self, pixel_values: torch.Tensor, instruction: str) -> list[np.ndarray]:
        """predict_action per frame: OpenVLA's implementation only handles a batch of one image."""
        text_inputs = self.prompts(instruction, 1)
        # OpenVLA sets the number of new tokens itself (one per action dimension).
        options = {key: value for key, value in self.generate_kwargs.items() if key != "max_new_tokens"}
        actions = []
        for row in pixel_values:
            action = self.model.predict_action(**text_inputs, pixel_values=row.unsqueeze(0),
                                               unnorm_key=self.unnorm_key, **options)
            actions.append(np.asarray(action, dtype=np.float64).reshape(-1))
        return actions
