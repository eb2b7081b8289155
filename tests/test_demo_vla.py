"""The shipped demo VLA: loads offline through the Auto classes and commands the demo world."""
from __future__ import annotations

import csv
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
cv2 = pytest.importorskip("cv2")
pytest.importorskip("mujoco")  # the training script (phrase lists, preprocessing) imports the world

from rs_guard_ros.policies.hf_inputs import build_prompt, pixel_normalizer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "rs_guard_ros" / "models" / "demo_vla"
EXAMPLES = REPO / "examples"


def _load_training_script():
    """The training script as a module: it owns the phrase lists and the frame preprocessing."""
    spec = importlib.util.spec_from_file_location("train_demo_vla", REPO / "scripts" / "train_demo_vla.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tds():
    return _load_training_script()


@pytest.fixture(scope="module")
def vla():
    os.environ["HF_HUB_OFFLINE"] = "1"
    processor = transformers.AutoProcessor.from_pretrained(MODEL_DIR, local_files_only=True)
    model = transformers.AutoModelForImageTextToText.from_pretrained(MODEL_DIR, local_files_only=True).eval()
    return processor, model


def _greedy(vla, tds, frames: list[np.ndarray], instruction: str) -> list[str]:
    """Greedy outputs for camera frames, through the same input path the gate uses."""
    processor, model = vla
    prompt = build_prompt(processor, instruction)
    enc = processor(text=[prompt] * len(frames), images=[np.zeros((64, 64, 3), np.uint8)] * len(frames), return_tensors="pt")
    x = torch.from_numpy(np.stack([tds.preprocess(f).transpose(2, 0, 1) for f in frames]))
    pixels = pixel_normalizer(processor.image_processor, torch.device("cpu"), torch.float32)(x)
    with torch.no_grad():
        out = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=pixels)
    return processor.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)


def test_model_is_small_and_in_safetensors_format() -> None:
    files = list(MODEL_DIR.iterdir())
    assert (MODEL_DIR / "model.safetensors").exists()
    assert sum(f.stat().st_size for f in files) <= 20 * 2**20


def test_model_loads_through_auto_classes_as_llava(vla) -> None:
    processor, model = vla
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert type(processor).__name__ == "LlavaProcessor"
    assert sum(p.numel() for p in model.parameters()) < 5e6


def test_tokenizer_round_trips_every_output_phrase_verbatim(vla, tds) -> None:
    tok = vla[0].tokenizer
    phrases = [p for ps in tds.COMMAND_PHRASES.values() for p in ps] + [tds.OFF_TASK_OUTPUT, tds.NO_SCENE_OUTPUT]
    for phrase in phrases:
        ids = tok(phrase, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == phrase


def test_generates_a_known_phrase_for_a_rendered_frame(vla, tds) -> None:
    from rs_guard_ros.sim.world import World

    with World(seed=3) as world:
        frames = []
        for _ in range(4):
            world.reset()
            frames.append(world.render())
    outputs = _greedy(vla, tds, frames, "go to the blue ball")
    assert all(tds.command_of(o) != "invalid" for o in outputs), outputs


def test_examples_cover_every_command_and_unknown() -> None:
    rows = list(csv.DictReader(open(EXAMPLES / "frames.csv")))
    assert {r["command"] for r in rows} == {"forward", "left", "right", "stop", "UNKNOWN"}
    for r in rows:
        img = cv2.imread(str(EXAMPLES / r["image"]))
        assert img is not None and img.shape == (96, 128, 3)


def test_greedy_output_on_the_examples_matches_the_labelled_command(vla, tds) -> None:
    # The examples were checked against this model when written, so all should match;
    # at most one miss is tolerated for floating-point differences across CPUs/torch builds.
    rows = list(csv.DictReader(open(EXAMPLES / "frames.csv")))
    misses = []
    for r in rows:
        frame = cv2.cvtColor(cv2.imread(str(EXAMPLES / r["image"])), cv2.COLOR_BGR2RGB)
        output = _greedy(vla, tds, [frame], r["instruction"])[0]
        if tds.command_of(output) != r["command"]:
            misses.append((r["image"], output))
    assert len(misses) <= 1, misses


def test_off_task_instruction_is_refused(vla, tds) -> None:
    frame = cv2.cvtColor(cv2.imread(str(EXAMPLES / "forward_1.png")), cv2.COLOR_BGR2RGB)
    outputs = _greedy(vla, tds, [frame], "make me a coffee")
    assert tds.command_of(outputs[0]) == tds.UNKNOWN, outputs


def test_a_camera_noise_burst_is_answered_i_see_nothing_useful(vla, tds) -> None:
    """The demo's camera_faults burst (sigma 1.0, through the runner's own `camera_noise`) on
    every example scene: the model refuses instead of reading a command into the static."""
    from rs_guard_ros.sim.scenarios import camera_noise

    rows = [r for r in csv.DictReader(open(EXAMPLES / "frames.csv")) if r["command"] != tds.UNKNOWN]
    rng = np.random.default_rng(5)
    outputs = []
    for r in rows:
        frame = cv2.cvtColor(cv2.imread(str(EXAMPLES / r["image"])), cv2.COLOR_BGR2RGB)
        outputs += _greedy(vla, tds, [camera_noise(frame, 1.0, rng) for _ in range(3)], r["instruction"])
    read = [o for o in outputs if tds.command_of(o) != tds.UNKNOWN]
    assert len(read) <= 1, f"{len(read)} of {len(outputs)} bursts read as a command: {read}"
