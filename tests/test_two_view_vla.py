"""The shipped two-view demo VLA (rs_guard_ros/models/demo_vla_two_view) through the
transformers backend: one prompt with one image block per camera (front, then rear), the
processor called with the list of images; and the gate on config/sim_two_view.yaml deciding
on both cameras and the wheels' joint state. Real model from disk, real example frames."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
cv2 = pytest.importorskip("cv2")

from rs_guard_ros.config import DEMO_COMMANDS  # noqa: E402
from rs_guard_ros.preprocess import Preprocessor  # noqa: E402
from rs_guard_ros.policies.transformers_policy import TransformersPolicy  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "rs_guard_ros" / "models" / "demo_vla_two_view"
EXAMPLES = REPO / "examples" / "two_view"
CONFIG = REPO / "config" / "sim_two_view.yaml"
COMMAND_OF = {phrase: name for name, command in DEMO_COMMANDS.items() for phrase in command.phrases}
TURNS = ("left", "right")


def _rgb(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(EXAMPLES / name)), cv2.COLOR_BGR2RGB)


def _examples() -> list[tuple[np.ndarray, np.ndarray, str, str]]:
    """(front, rear, instruction, command) of every shipped two-view example."""
    with (EXAMPLES / "frames.csv").open() as f:
        return [(_rgb(r["image_ego"]), _rgb(r["image_rear"]), r["instruction"], r["command"])
                for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def policy() -> TransformersPolicy:
    return TransformersPolicy(MODEL, device="cpu", views=2)


def _batch(policy: TransformersPolicy, rgb: np.ndarray) -> torch.Tensor:
    """One camera frame as the gate feeds it: resized to the model input, (1, 3, H, W) in [0, 1]."""
    x = Preprocessor(policy.input_size, "resize")(rgb)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def test_examples_cover_every_command_and_unknown() -> None:
    commands = [command for *_, command in _examples()]
    assert set(commands) == {"forward", "left", "right", "stop", "UNKNOWN"}
    assert commands.count("left") >= 2 and commands.count("right") >= 2


def test_prompt_holds_one_image_block_per_camera(policy: TransformersPolicy) -> None:
    ids = policy.prompts("go to the red box", 1)["input_ids"][0]
    image_token = policy.processor.tokenizer.convert_tokens_to_ids("<image>")
    assert int((ids == image_token).sum()) == 2 * policy.model.config.image_seq_length
    assert policy.input_sizes == (policy.input_size, policy.input_size)


def test_policy_generates_the_labelled_command_on_every_example(policy: TransformersPolicy) -> None:
    for front, rear, instruction, command in _examples():
        (text,) = policy((_batch(policy, front), _batch(policy, rear)), instruction)
        assert COMMAND_OF.get(text, "UNKNOWN") == command, (instruction, text)


def test_policy_refuses_the_wrong_number_of_views_and_several_views_in_action_mode(
        policy: TransformersPolicy) -> None:
    frame = torch.rand(2, 3, *policy.input_size)
    with pytest.raises(ValueError, match="expected 2 camera view"):
        policy(frame, "go to the red box")
    with pytest.raises(ValueError, match="same batch size"):
        policy((frame, frame[:1]), "go to the red box")
    with pytest.raises(ValueError, match="one in 'action' mode"):
        TransformersPolicy(MODEL, device="cpu", views=2, mode="action")


@pytest.fixture(scope="module")
def guard():
    from rs_guard_ros.guard import Guard
    from rs_guard_ros.param_files import load_config

    return Guard.from_config(load_config(CONFIG, overrides={"smoothing.seed": 0}))


def test_gate_on_sim_two_view_yaml_certifies_only_the_right_turns_from_the_rear_view(guard) -> None:
    state = np.zeros(2)  # left_wheel, right_wheel
    decided = {}
    for front, rear, instruction, command in _examples():
        if command in TURNS:
            d = guard.decide({"front": front, "rear": rear}, instruction, state=state)
            assert d.command == command if d.certified else d.command == "stop"
            decided.setdefault(command, []).append(d.certified)
            assert set(d.radius_cameras) == {"front", "rear"}
    assert all(any(certified) for certified in decided.values()), decided


def test_gate_abstains_without_the_joint_state(guard) -> None:
    front, rear, instruction, _ = next(e for e in _examples() if e[3] in TURNS)
    d = guard.decide({"front": front, "rear": rear}, instruction)
    assert not d.certified and d.command == "stop" and "joint state" in d.reason


@pytest.mark.timeout(300)
def test_doctor_measures_sim_two_view_yaml_on_an_image_per_camera_and_the_joint_state() -> None:
    """rs-guard doctor on the two-camera config: --image CAMERA=PATH per camera and --state reach
    every measured decision (the check decides the example's turn, not an input refusal)."""
    import json
    import subprocess
    import sys

    with (EXAMPLES / "frames.csv").open() as f:
        row = next(r for r in csv.DictReader(f) if r["command"] in TURNS)
    out = subprocess.run([sys.executable, "-m", "rs_guard_ros.cli", "doctor", "--config", str(CONFIG), "--json",
                          "--model.cpu_threads", "1", "--model.device", "cpu", "--smoothing.batch_size", "32",
                          "--repeats", "1", "--no-progress", "--image", f"front={EXAMPLES / row['image_ego']}",
                          "--image", f"rear={EXAMPLES / row['image_rear']}", "--state", "left_wheel=0.5,right_wheel=-1",
                          "--instruction", row["instruction"]], capture_output=True, text=True, timeout=300)
    assert out.returncode in (0, 3), out.stderr
    r = json.loads(out.stdout)
    assert r["measured"]["samples_per_s"] > 0 and "front=" in r["frame"] and "rear=" in r["frame"]
    check = r["measured"]["check"]
    assert check["label"] == row["command"] and check["n_used"] > 0
    assert not any(word in check["reason"] for word in ("frame", "camera", "state"))
