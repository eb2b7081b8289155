#!/usr/bin/env python3
"""Train the shipped demo VLA: a tiny LLaVA that reads the robot camera + an instruction
and generates a short command phrase ("turn left", "stop, you are there", ...).
`--views 2` trains the two-view model instead: front and rear camera, one image each in
the prompt (front first), so a target behind the robot gets a turn towards it.

Data comes from the MuJoCo demo world (rs_guard_ros.sim.world), labelled with
World.correct_command. Training follows Cohen et al. (ICML 2019, sec. 3.2): most samples
get Gaussian noise N(0, sigma^2) on the [0, 1] model-resolution frame before the processor's
normalisation -- exactly the path the gate uses at inference -- so the smoothed model stays
accurate. Everything runs offline on the CPU; the rendered dataset is cached under /tmp.

The shipped one-view model is a base run and a robustness fine-tune from it (camera noise
bursts answered "i see nothing useful", more scenes near the reach boundary); the two-view
model starts from the base run (docs/demo_vla.md):

    export MUJOCO_GL=osmesa HF_HUB_OFFLINE=1
    .venv/bin/python scripts/train_demo_vla.py --out /tmp/demo_vla_base
    .venv/bin/python scripts/train_demo_vla.py --init /tmp/demo_vla_base --steps 1500 --lr 1e-4 \
        --burst-fraction 0.08 --near-scenes 8000
    .venv/bin/python scripts/train_demo_vla.py --views 2 --init /tmp/demo_vla_base
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors  # noqa: E402
from transformers import (  # noqa: E402
    CLIPVisionConfig,
    GenerationConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from rs_guard_ros.certify import UNKNOWN_NAME  # noqa: E402
from rs_guard_ros.config import DEMO_COMMANDS  # noqa: E402
from rs_guard_ros.preprocess import Preprocessor  # noqa: E402
from rs_guard_ros.policies.hf_inputs import build_prompt, pixel_normalizer  # noqa: E402
from rs_guard_ros.sim.scenarios import camera_noise  # noqa: E402
from rs_guard_ros.sim.world import (  # noqa: E402
    COMMANDS, FRONT_CAMERA, OBJECTS, REACH_DISTANCE, REAR_CAMERA, ROBOT_RADIUS, World,
)  # fmt: skip

MODEL_SIZE = 64  # model input resolution (pixels, square)
CAMERAS = (FRONT_CAMERA, REAR_CAMERA)  # the first `views` of these, in prompt order
ONE_VIEW_MODEL = REPO / "rs_guard_ros" / "models" / "demo_vla"
# Per view count: the model directory, the examples folder, training scenes, steps, batch size
# and the model whose weights start the training (None: random). Two views double the image
# tokens, so the two-view model starts from the one-view model (same architecture and
# vocabulary: it already reads the front view) and only learns the second view, in fewer,
# smaller steps.
VIEW_DEFAULTS = {
    1: dict(out=ONE_VIEW_MODEL, examples_dir=REPO / "examples", train_scenes=40000, steps=6000, batch_size=64,
            init=None),
    2: dict(out=REPO / "rs_guard_ros" / "models" / "demo_vla_two_view", examples_dir=REPO / "examples" / "two_view",
            train_scenes=16000, steps=2000, batch_size=32, init=ONE_VIEW_MODEL),
}
# Where a scene's target is: seen by the front camera, by the rear one, or by none.
FRONT, REAR, NONE = 0, 1, -1

# The model says exactly the phrases the shipped configuration's grammar oracle knows.
COMMAND_PHRASES: dict[str, tuple[str, ...]] = {name: cmd.phrases for name, cmd in DEMO_COMMANDS.items()}
OFF_TASK_OUTPUT = "i cannot help with that"
NO_SCENE_OUTPUT = "i see nothing useful"
UNKNOWN = UNKNOWN_NAME

INSTRUCTION_TEMPLATES = (
    "go to the {}", "find the {}", "drive to the {}", "navigate to the {}", "move to the {}",
    "approach the {}", "head to the {}", "go towards the {}", "please go to the {}",
    "take me to the {}", "reach the {}", "get to the {}",
)  # fmt: skip
OFF_TASK_INSTRUCTIONS = (
    "make me a coffee", "what time is it", "sing a song", "tell me a joke", "open the window",
    "what is the weather like", "clean the kitchen", "call my mother", "play some music",
    "pick up the {}", "throw the {}", "paint the {}",
)  # fmt: skip

IMAGE_TOKEN, PAD, UNK, BOS, EOS = "<image>", "<pad>", "<unk>", "<s>", "</s>"
ANSWER = "=>"  # separator after the image: the model's answer starts here
# The instruction goes BEFORE the image: under causal attention every image token then
# sees the instruction, so the vision tokens can mark the target object themselves.
# (With the image first, only the few tokens after it could combine the two.)
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }} {% endif %}{% endfor %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}" + IMAGE_TOKEN + "{% endif %}{% endfor %}"
    "{% endfor %}"
    "{% if add_generation_prompt %} " + ANSWER + "{% endif %}"
)


@dataclass(frozen=True)
class DataSpec:
    """What the rendered dataset contains (hashed into the cache file name)."""

    n_scenes: int
    seed: int
    out_of_view_fraction: float = 0.15  # share of left/right scenes whose target no camera sees
    near_fraction: float = 0.3  # share of forward/left/right scenes drawn close to reach (d < NEAR_BAND)
    version: int = 2
    views: int = 1  # cameras rendered per scene (front, then rear)
    rear_fraction: float = 0.35  # two views: share of left/right scenes whose target is in the rear view


# ------------------------------------------------------------------ preprocessing
# The Guard's own deterministic preprocessing: the model is trained on exactly what it sees.
preprocess = Preprocessor((MODEL_SIZE, MODEL_SIZE), "resize")


# ------------------------------------------------------------------ vocabulary
def command_of(output: str) -> str:
    """Map a generated phrase back to its command (UNKNOWN for the two refusals, 'invalid' else)."""
    text = output.strip()
    for command, phrases in COMMAND_PHRASES.items():
        if text in phrases:
            return command
    return UNKNOWN if text in (OFF_TASK_OUTPUT, NO_SCENE_OUTPUT) else "invalid"


def all_instructions() -> list[str]:
    """Every instruction the model is trained on (in-task and off-task)."""
    names = [o.name for o in OBJECTS]
    texts = [t.format(n) for t in INSTRUCTION_TEMPLATES for n in names]
    texts += [t.format(n) if "{}" in t else t for t in OFF_TASK_INSTRUCTIONS for n in names]
    return sorted(set(texts))


def build_tokenizer(max_length: int = 128) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over instructions + outputs (lower-cased; '.', '!', '?' dropped)."""
    outputs = [p for ps in COMMAND_PHRASES.values() for p in ps] + [OFF_TASK_OUTPUT, NO_SCENE_OUTPUT]
    words = sorted({w for text in all_instructions() + outputs + [ANSWER] for w in text.split()})
    vocab = {tok: i for i, tok in enumerate([PAD, UNK, BOS, EOS, IMAGE_TOKEN] + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(Regex(r"[.!?]"), "")])
    # Whitespace-only splitting keeps "stop," one word, so decoding restores the phrase verbatim.
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, vocab[BOS])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        padding_side="left",
        model_max_length=max_length,
    )


def build_processor(patch_size: int, views: int = 1) -> LlavaProcessor:
    """LlavaProcessor: CLIP image processor at 64 px (mean/std 0.5) + the word-level tokenizer."""
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": MODEL_SIZE},
        crop_size={"height": MODEL_SIZE, "width": MODEL_SIZE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=build_tokenizer(128 * views),  # 64 image tokens per view + the text
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
        chat_template=CHAT_TEMPLATE,
    )


def build_model(tokenizer: PreTrainedTokenizerFast, args: argparse.Namespace) -> LlavaForConditionalGeneration:
    """A tiny LLaVA: CLIP vision tower (64 px, patch 8) + a small Llama decoder."""
    vision = CLIPVisionConfig(
        hidden_size=args.vision_hidden, intermediate_size=4 * args.vision_hidden, num_hidden_layers=args.vision_layers,
        num_attention_heads=4, image_size=MODEL_SIZE, patch_size=args.patch_size,
    )  # fmt: skip
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=args.text_hidden, intermediate_size=4 * args.text_hidden,
        num_hidden_layers=args.text_layers, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=tokenizer.model_max_length, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_layer=-1, vision_feature_select_strategy="default",
        image_seq_length=(MODEL_SIZE // args.patch_size) ** 2, tie_word_embeddings=True,
    )  # fmt: skip
    model = LlavaForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        max_new_tokens=8, do_sample=False, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    return model


# ------------------------------------------------------------------ data
BURST_EVAL_SIGMA = (1.0, 1.0)  # the camera_faults scenario's noise burst
NEAR_BAND = 1.0  # metres; the reach boundary (0.6 m) is where a one-frame distance estimate is hardest


def _bearing_range(where: int, views: int, half_fov: float) -> tuple[float, float]:
    """|bearing| range (degrees) of a left/right target seen by `where` (FRONT, REAR or NONE)."""
    if where == FRONT:
        return 12, half_fov
    if where == REAR:
        return 180 - half_fov + 3, 180
    return half_fov + 3, (180 if views == 1 else 180 - half_fov - 3)


def _place_for_command(
    world: World, command: str, where: int, near: bool, rng: np.random.Generator, views: int = 1
) -> str | None:
    """Random layout + a robot pose whose ground truth towards a random target is `command`,
    the target seen by camera `where` (FRONT, REAR; NONE: by none of the `views` cameras).

    Returns the target name, or None when this draw did not work out (caller retries).
    Seen targets must be unoccluded, so the label is learnable from the frames.
    `near` draws forward/left/right distances below NEAR_BAND, oversampling the reach boundary.
    """
    world.reset(rng=rng)
    target = OBJECTS[rng.integers(len(OBJECTS))]
    half_fov = math.degrees(world.horizontal_fov) / 2
    d_min = ROBOT_RADIUS + target.radius + 0.02
    d_max = NEAR_BAND if near else 4.0
    if command == "stop":
        distance, bearing = rng.uniform(d_min, REACH_DISTANCE), rng.uniform(-30, 30)
    elif command == "forward":
        distance, bearing = rng.uniform(REACH_DISTANCE, d_max), rng.uniform(-12, 12)
    else:
        lo, hi = _bearing_range(where, views, half_fov)
        distance, bearing = rng.uniform(d_min, d_max), rng.uniform(lo, hi) * (1 if command == "left" else -1)
    yaw = rng.uniform(-math.pi, math.pi)
    tx, ty = world.objects[target.name]
    heading = yaw + math.radians(bearing)
    x, y = tx - distance * math.cos(heading), ty - distance * math.sin(heading)
    if not world.is_free(x, y):
        return None
    world.reset(robot_pose=(x, y, yaw), object_positions=world.objects)
    if world.correct_command(target.name) != command:
        return None
    seen = [world.in_view(target.name, camera) for camera in CAMERAS[:views]]
    if where == NONE:
        return None if any(seen) else target.name
    others_blind = not any(s for i, s in enumerate(seen) if i != where)
    return target.name if others_blind and world.visible(target.name, CAMERAS[where]) else None


def _draw_where(command: str, spec: DataSpec, rng: np.random.Generator) -> int:
    """Which camera sees the target of a new `command` scene (turns only may be out of the front view)."""
    if command not in ("left", "right"):
        return FRONT
    u = rng.random()
    if u < spec.out_of_view_fraction:
        return NONE
    return REAR if spec.views > 1 and u < spec.out_of_view_fraction + spec.rear_fraction else FRONT


def render_views(world: World, views: int) -> np.ndarray:
    """The first `views` cameras' frames, preprocessed: float (views, 3, MODEL_SIZE, MODEL_SIZE)."""
    return np.stack([preprocess(world.render(camera)).transpose(2, 0, 1) for camera in CAMERAS[:views]])


def render_dataset(spec: DataSpec) -> dict[str, np.ndarray]:
    """Render `spec.n_scenes` scenes balanced over the four commands (one target per scene).

    frames: (N, 3, H, W) for one view, (N, views, 3, H, W) for several; seen_by: FRONT, REAR or NONE.
    """
    rng = np.random.default_rng(spec.seed)
    view_shape = (spec.views,) if spec.views > 1 else ()
    frames = np.empty((spec.n_scenes, *view_shape, 3, MODEL_SIZE, MODEL_SIZE), np.float16)
    targets = np.empty(spec.n_scenes, np.int64)
    labels = np.empty(spec.n_scenes, np.int64)
    seen_by = np.empty(spec.n_scenes, np.int64)
    names = [o.name for o in OBJECTS]
    with World(seed=spec.seed) as world:
        for i in range(spec.n_scenes):
            command = COMMANDS[i % len(COMMANDS)]
            where = _draw_where(command, spec, rng)
            near = command != "stop" and rng.random() < spec.near_fraction
            target = None
            while target is None:
                target = _place_for_command(world, command, where, near, rng, spec.views)
            frames[i] = render_views(world, spec.views).reshape(frames.shape[1:])
            targets[i], labels[i], seen_by[i] = names.index(target), COMMANDS.index(command), where
    return {"frames": frames, "targets": targets, "labels": labels, "seen_by": seen_by}


def blank_frames(n: int, rng: np.random.Generator, height: int = 96, width: int = 128) -> np.ndarray:
    """Frames showing nothing: uniform random pixels or a constant grey, preprocessed like camera frames."""
    out = np.empty((n, 3, MODEL_SIZE, MODEL_SIZE), np.float32)
    for i in range(n):
        if rng.random() < 0.5:
            frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        else:
            frame = np.full((height, width, 3), rng.integers(0, 256), np.uint8)
        out[i] = preprocess(frame).transpose(2, 0, 1)
    return out


def burst_frames(frames: np.ndarray, rng: np.random.Generator, sigma_range: tuple[float, float],
                 height: int = 96, width: int = 128) -> np.ndarray:
    """Frames as a camera noise burst leaves them (the demo's `noise` fault, `camera_noise`): each
    view brought back to camera size as uint8, the fault applied, then preprocessed like every
    camera frame. One sigma per frame, drawn from `sigma_range`."""
    out = np.empty(frames.shape, np.float32)
    for i, frame in enumerate(frames):
        sigma = rng.uniform(*sigma_range)
        for j, view in enumerate(frame.reshape(-1, 3, MODEL_SIZE, MODEL_SIZE)):
            camera = cv2.resize(view.transpose(1, 2, 0).astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
            rgb = np.clip(np.rint(camera * 255.0), 0, 255).astype(np.uint8)
            out[i].reshape(-1, 3, MODEL_SIZE, MODEL_SIZE)[j] = preprocess(camera_noise(rgb, sigma, rng)).transpose(2, 0, 1)
    return out


def cached_dataset(spec: DataSpec, cache_dir: Path) -> dict[str, np.ndarray]:
    """Load the rendered dataset from the /tmp cache, rendering it once when missing."""
    key = hashlib.sha1(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir / f"demo_vla_{key}.npz"
    if path.exists():
        with np.load(path) as f:
            return dict(f)
    t0 = time.time()
    data = render_dataset(spec)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(path, **data)
    print(f"rendered {spec.n_scenes} scenes in {time.time() - t0:.0f} s -> {path}", flush=True)
    return data


# ------------------------------------------------------------------ batches
class Batcher:
    """Turns (frame, instruction, output phrase) triples into model inputs for training."""

    def __init__(self, processor: LlavaProcessor, views: int = 1) -> None:
        self.processor = processor
        self.tok = processor.tokenizer
        self.views = views
        self._prompt_ids: dict[str, list[int]] = {}
        self._dummy = np.zeros((MODEL_SIZE, MODEL_SIZE, 3), np.uint8)

    def prompt_ids(self, instruction: str) -> list[int]:
        """Token ids of the prompt exactly as the processor makes them (image tokens expanded)."""
        if instruction not in self._prompt_ids:
            prompt = build_prompt(self.processor, instruction, self.views)
            enc = self.processor(text=[prompt], images=[self._dummy] * self.views)
            self._prompt_ids[instruction] = list(enc["input_ids"][0])
        return self._prompt_ids[instruction]

    def training_batch(self, instructions: list[str], outputs: list[str]) -> dict[str, torch.Tensor]:
        """input_ids/attention_mask/labels, right-padded; the loss covers the output and EOS only."""
        seqs, labs = [], []
        for ins, out in zip(instructions, outputs):
            p = self.prompt_ids(ins)
            o = self.tok(out, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id]
            seqs.append(p + o)
            labs.append([-100] * len(p) + o)
        n = max(map(len, seqs))
        pad = self.tok.pad_token_id
        ids = torch.tensor([s + [pad] * (n - len(s)) for s in seqs])
        mask = torch.tensor([[1] * len(s) + [0] * (n - len(s)) for s in seqs])
        labels = torch.tensor([lab + [-100] * (n - len(lab)) for lab in labs])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def sample_training_examples(
    data: dict[str, np.ndarray], n: int, rng: random.Random, nprng: np.random.Generator, args: argparse.Namespace
) -> tuple[np.ndarray, list[str], list[str]]:
    """One training batch: scene samples plus off-task instructions, blank frames and noise-burst
    frames (args.*_fraction), the last two answered NO_SCENE_OUTPUT."""
    names = [o.name for o in OBJECTS]
    idx = nprng.integers(len(data["labels"]), size=n)
    frames = data["frames"][idx].astype(np.float32)
    instructions, outputs = [], []
    for j, i in enumerate(idx):
        name = names[data["targets"][i]]
        u = rng.random()
        if u < args.off_task_fraction:
            instructions.append(rng.choice(OFF_TASK_INSTRUCTIONS).format(rng.choice(names)))
            outputs.append(OFF_TASK_OUTPUT)
        elif u < args.off_task_fraction + args.blank_fraction:
            frames[j] = blank_frames(args.views, nprng).reshape(frames.shape[1:])  # every view blank
            instructions.append(rng.choice(INSTRUCTION_TEMPLATES).format(name))
            outputs.append(NO_SCENE_OUTPUT)
        elif u < args.off_task_fraction + args.blank_fraction + args.burst_fraction:
            frames[j] = burst_frames(frames[j : j + 1], nprng, args.burst_sigma)[0]
            instructions.append(rng.choice(INSTRUCTION_TEMPLATES).format(name))
            outputs.append(NO_SCENE_OUTPUT)
        else:
            instructions.append(rng.choice(INSTRUCTION_TEMPLATES).format(name))
            outputs.append(rng.choice(COMMAND_PHRASES[COMMANDS[data["labels"][i]]]))
    return frames, instructions, outputs


# ------------------------------------------------------------------ evaluation
@torch.no_grad()
def generate(
    model: LlavaForConditionalGeneration, processor: LlavaProcessor, batcher: Batcher, frames: np.ndarray,
    instructions: list[str], sigma: float, seed: int, batch_size: int = 256,
) -> list[str]:  # fmt: skip
    """Greedy outputs for [0, 1] frames (N, [views,] 3, 64, 64) + N(0, sigma^2) noise, via pixel_normalizer
    (several views go to the model as consecutive images, one per image token)."""
    normalize = pixel_normalizer(processor.image_processor, torch.device("cpu"), torch.float32)
    gen = torch.Generator().manual_seed(seed)
    tok = processor.tokenizer
    out: list[str] = []
    for s in range(0, len(frames), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(frames[s : s + batch_size], dtype=np.float32))
        x = x + sigma * torch.randn(x.shape, generator=gen)
        prompts = [batcher.prompt_ids(i) for i in instructions[s : s + batch_size]]
        n = max(map(len, prompts))  # left padding for generation
        ids = torch.tensor([[tok.pad_token_id] * (n - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (n - len(p)) + [1] * len(p) for p in prompts])
        gen_ids = model.generate(input_ids=ids, attention_mask=mask, pixel_values=normalize(x.reshape(-1, *x.shape[-3:])))
        out += tok.batch_decode(gen_ids[:, n:], skip_special_tokens=True)
    return out


def evaluate(
    model: LlavaForConditionalGeneration, processor: LlavaProcessor, batcher: Batcher, data: dict[str, np.ndarray],
    sigma: float, seed: int,
) -> dict[str, float]:  # fmt: skip
    """Held-out accuracy (greedy phrase -> command) overall, per command, out-of-view, and on UNKNOWN cases."""
    rng = random.Random(seed)
    names = [o.name for o in OBJECTS]
    instructions = [rng.choice(INSTRUCTION_TEMPLATES).format(names[t]) for t in data["targets"]]
    preds = [command_of(o) for o in generate(model, processor, batcher, data["frames"], instructions, sigma, seed)]
    truth = np.array([COMMANDS[c] for c in data["labels"]])
    ok = np.array(preds) == truth
    seen_by = data["seen_by"]
    res = {"all": ok.mean(), "in_view": ok[seen_by != NONE].mean(), "out_of_view": ok[seen_by == NONE].mean()}
    if (seen_by == REAR).any():
        res["rear_view"] = ok[seen_by == REAR].mean()
    for c in COMMANDS:
        res[c] = ok[truth == c].mean()
    n_unk = max(len(truth) // 10, 1)
    off = [rng.choice(OFF_TASK_INSTRUCTIONS).format(rng.choice(names)) for _ in range(n_unk)]
    off_out = generate(model, processor, batcher, data["frames"][:n_unk], off, sigma, seed + 1)
    res["off_task"] = np.mean([command_of(o) == UNKNOWN for o in off_out])
    nprng = np.random.default_rng(seed)
    blank = blank_frames(n_unk * batcher.views, nprng).reshape(n_unk, *data["frames"].shape[1:])
    blank_out = generate(model, processor, batcher, blank, instructions[:n_unk], sigma, seed + 2)
    res["blank"] = np.mean([command_of(o) == UNKNOWN for o in blank_out])
    burst = burst_frames(data["frames"][:n_unk], nprng, BURST_EVAL_SIGMA)
    burst_out = generate(model, processor, batcher, burst, instructions[:n_unk], sigma, seed + 3)
    res["burst"] = np.mean([command_of(o) == UNKNOWN for o in burst_out])  # the demo's fault: sigma 1.0
    return {k: float(v) for k, v in res.items()}


def training_subset(data: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The first `n` training scenes (as many per command as the held-out set): the fit, next
    to the held-out accuracy."""
    return {key: value[:n] for key, value in data.items()}


def format_accuracy(name: str, res: dict[str, float]) -> str:
    """One printable line of accuracies in percent."""
    return f"{name}: " + "  ".join(f"{k}={100 * v:.1f}%" for k, v in res.items())


# ------------------------------------------------------------------ training
def save(model: LlavaForConditionalGeneration, processor: LlavaProcessor, out: Path) -> None:
    """save_pretrained (safetensors) of model and processor into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)


def start_from(model: LlavaForConditionalGeneration, processor: LlavaProcessor, init: Path) -> None:
    """Load `init`'s weights into `model` (strict: same architecture); its vocabulary must be ours."""
    source = LlavaForConditionalGeneration.from_pretrained(init)
    if PreTrainedTokenizerFast.from_pretrained(init).get_vocab() != processor.tokenizer.get_vocab():
        raise ValueError(f"--init {init}: its vocabulary differs from this recipe's")
    model.load_state_dict(source.state_dict())
    print(f"weights from {init}", flush=True)


def held_out(args: argparse.Namespace) -> dict[str, np.ndarray]:
    """The held-out scenes: the natural distance distribution (no near-range oversampling)."""
    return cached_dataset(DataSpec(args.test_scenes, args.seed + 1_000_003, near_fraction=0.0, views=args.views),
                          args.cache_dir)


def evaluate_saved(args: argparse.Namespace) -> None:
    """Print the held-out accuracy of the model in --out, clean and at --sigma (what a training
    run prints at its end), so that two models can be compared on the same scenes."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.set_num_threads(args.threads)
    processor = AutoProcessor.from_pretrained(args.out)
    model = AutoModelForImageTextToText.from_pretrained(args.out).eval()
    data, batcher = held_out(args), Batcher(processor, args.views)
    for sigma in (0.0, args.sigma):
        print(format_accuracy(f"{args.out} held-out ({args.test_scenes}) sigma={sigma}",
                              evaluate(model, processor, batcher, data, sigma, args.seed)), flush=True)


def train(args: argparse.Namespace) -> None:
    """Render (or load) the data, train with noise augmentation, evaluate and save."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng, nprng = random.Random(args.seed), np.random.default_rng(args.seed)
    t_start = time.time()
    train_data = cached_dataset(DataSpec(args.train_scenes, args.seed, views=args.views), args.cache_dir)
    # Held-out scenes keep the natural distance distribution (no near-range oversampling).
    test_data = held_out(args)
    if args.near_scenes:  # more scenes close to the reach boundary, where stop and the turns meet
        near = cached_dataset(DataSpec(args.near_scenes, args.seed + 2_000_003, near_fraction=1.0, views=args.views),
                              args.cache_dir)
        train_data = {key: np.concatenate([train_data[key], near[key]]) for key in train_data}
    print(f"data: {len(train_data['labels'])} train scenes, {len(test_data['labels'])} held-out scenes", flush=True)

    processor = build_processor(args.patch_size, args.views)
    model = build_model(processor.tokenizer, args)
    if args.init is not None:
        start_from(model, processor, args.init)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters", flush=True)
    batcher = Batcher(processor, args.views)
    normalize = pixel_normalizer(processor.image_processor, torch.device("cpu"), torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = min(200, args.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s / args.steps, 1.0)))
    )
    t_train = time.time()
    model.train()
    for step in range(1, args.steps + 1):
        frames, instructions, outputs = sample_training_examples(train_data, args.batch_size, rng, nprng, args)
        x = torch.from_numpy(frames)
        # Cohen et al.: train on the noise the smoothed classifier sees; keep some clean samples.
        # Short curriculum: sigma ramps up from 0 over the first noise_warmup of the steps.
        sigma = args.sigma * min(1.0, step / max(1.0, args.noise_warmup * args.steps))
        noisy = torch.rand(len(x), *[1] * (x.ndim - 1)) >= args.clean_fraction  # per sample: all its views
        x = x + noisy * sigma * torch.randn_like(x)
        batch = batcher.training_batch(instructions, outputs)
        loss = model(pixel_values=normalize(x.reshape(-1, *x.shape[-3:])), **batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % args.log_every == 0 or step == args.steps:
            print(f"step {step}/{args.steps} loss {loss.item():.4f} ({time.time() - t_train:.0f} s)", flush=True)
        if args.eval_every and step % args.eval_every == 0 and step < args.steps:
            model.eval()
            sub = {k: v[:500] for k, v in test_data.items()}
            print(format_accuracy("  held-out (500, clean)", evaluate(model, processor, batcher, sub, 0.0, 1)), flush=True)
            save(model, processor, args.cache_dir / "interim")  # inspectable mid-run, not shipped
            model.train()
    train_s = time.time() - t_train
    model.eval()
    seen = evaluate(model, processor, batcher, training_subset(train_data, args.test_scenes), 0.0, args.seed)
    clean = evaluate(model, processor, batcher, test_data, 0.0, args.seed)
    noisy = evaluate(model, processor, batcher, test_data, args.sigma, args.seed)
    print(format_accuracy(f"training scenes ({args.test_scenes}, clean)", seen))
    print(format_accuracy("held-out clean", clean))
    print(format_accuracy(f"held-out sigma={args.sigma}", noisy))
    print(f"training {train_s:.0f} s, total {time.time() - t_start:.0f} s")
    save(model, processor, args.out)
    summary = {"train_seconds": round(train_s), "training_scenes_clean": seen, "clean": clean,
               f"sigma_{args.sigma}": noisy,
               "args": {k: str(v) for k, v in vars(args).items()}}  # fmt: skip
    (args.cache_dir / "demo_vla_last_run.json").write_text(json.dumps(summary, indent=2))
    print(f"saved to {args.out}")


def _image_names(stem: str, views: int) -> list[str]:
    """PNG names of one example: `stem.png`, or one per camera (`stem_ego.png`, `stem_rear.png`)."""
    return [f"{stem}.png"] if views == 1 else [f"{stem}_{camera}.png" for camera in CAMERAS[:views]]


def write_examples(model_dir: Path, out_dir: Path, seed: int, views: int = 1, per_command: int = 3) -> None:
    """Render demo frames (PNG, camera resolution, one per camera) + frames.csv, keeping those the
    model gets right. With two views the turns are scenes whose target only the rear camera sees.

    Candidates come from a fixed seed in order; a rejected candidate is reported, so the
    selection is visible rather than silent. One pure-noise frame per camera is added (UNKNOWN).
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    batcher = Batcher(processor, views)
    rng, pyrng = np.random.default_rng(seed), random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, rejected = [], 0

    def keep(stem: str, images: list[np.ndarray], instruction: str, command: str) -> bool:
        x = np.stack([preprocess(image).transpose(2, 0, 1) for image in images])
        x = x.reshape(1, *x.shape[(1 if views == 1 else 0):])
        if command_of(generate(model, processor, batcher, x, [instruction], 0.0, seed)[0]) != command:
            return False
        names = _image_names(stem, views)
        for name, image in zip(names, images):
            cv2.imwrite(str(out_dir / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        rows.append(",".join([*names, instruction, command]))
        return True

    with World(seed=seed) as world:
        for command in COMMANDS:
            where = REAR if views > 1 and command in ("left", "right") else FRONT
            kept = 0
            while kept < per_command:
                target = _place_for_command(world, command, where, False, rng, views)
                if target is None:
                    continue
                instruction = pyrng.choice(INSTRUCTION_TEMPLATES).format(target)
                images = [world.render(camera) for camera in CAMERAS[:views]]
                if keep(f"{command}_{kept + 1}", images, instruction, command):
                    kept += 1
                else:
                    rejected += 1
    while not keep("noise", [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(views)],
                   "go to the red box", UNKNOWN):
        rejected += 1
    header = "image" if views == 1 else ",".join(f"image_{camera}" for camera in CAMERAS[:views])
    (out_dir / "frames.csv").write_text(f"{header},instruction,command\n" + "\n".join(rows) + "\n")
    print(f"wrote {len(rows)} examples to {out_dir} ({rejected} candidates rejected as mispredicted)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (defaults reproduce the shipped model)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--views", type=int, choices=sorted(VIEW_DEFAULTS), default=1,
                   help="cameras the model reads: 1 (front) or 2 (front + rear)")
    p.add_argument("--out", type=Path, help="model directory (default: per --views)")
    p.add_argument("--cache-dir", type=Path, default=Path("/tmp/rs_guard_demo_vla"))
    p.add_argument("--train-scenes", type=int, help="default: 40000 (one view), 16000 (two views)")
    p.add_argument("--init", type=Path, help="model directory whose weights start the training "
                   "(default: none for one view, the one-view model for two)")
    p.add_argument("--test-scenes", type=int, default=2000)
    p.add_argument("--steps", type=int, help="default: 6000 (one view), 2000 (two views)")
    p.add_argument("--batch-size", type=int, help="default: 64 (one view), 32 (two views)")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--sigma", type=float, default=0.25)
    p.add_argument("--clean-fraction", type=float, default=0.2)
    p.add_argument("--noise-warmup", type=float, default=0.1, help="fraction of steps over which sigma ramps up")
    p.add_argument("--off-task-fraction", type=float, default=0.08)
    p.add_argument("--blank-fraction", type=float, default=0.05)
    p.add_argument("--burst-fraction", type=float, default=0.0,
                   help="share of frames hit by a camera noise burst, answered 'i see nothing useful'")
    p.add_argument("--burst-sigma", type=lambda v: tuple(map(float, v.split(","))), default=(0.5, 1.5),
                   help="lo,hi: the burst's sigma in camera [0, 1] units, uniform per frame")
    p.add_argument("--near-scenes", type=int, default=0,
                   help="extra scenes drawn within NEAR_BAND of the target (all near), added to the training set")
    p.add_argument("--patch-size", type=int, default=8)
    p.add_argument("--vision-hidden", type=int, default=96)
    p.add_argument("--vision-layers", type=int, default=2)
    p.add_argument("--text-hidden", type=int, default=128)
    p.add_argument("--text-layers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--examples-only", action="store_true", help="only (re)write examples/ from the model in --out")
    p.add_argument("--evaluate-only", action="store_true", help="only print the held-out accuracy of the model in --out")
    p.add_argument("--examples-dir", type=Path, help="default: examples/ (one view), examples/two_view/ (two)")
    args = p.parse_args(argv)
    for name, default in VIEW_DEFAULTS[args.views].items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    return args


if __name__ == "__main__":
    cli = parse_args()
    if cli.evaluate_only:
        evaluate_saved(cli)
        raise SystemExit(0)
    if not cli.examples_only:
        train(cli)
    write_examples(cli.out, cli.examples_dir, cli.seed + 7, cli.views)
