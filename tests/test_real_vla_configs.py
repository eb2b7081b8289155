"""A real VLA from configuration alone: the shipped config/openvla.yaml and config/hf_vlm.yaml
load and validate, and each kind of real model drives a Guard end to end -- action ->
action oracle -> certified command -- through the loaders a real model takes.

No real weights can be downloaded here, so the models are STAND-INS, each named as such and
loaded through the same code path as the real one (tests/ros_peers/):
  openvla_standin.py   an OpenVLA-style directory (remote code via auto_map, fused 6-channel
                       image processor, predict_action with unnorm_key), with a colour rule;
  lerobot_standin.py   LeRobot's policy interface as a `lerobot` package on sys.path;
  idefics3_standin.py  a tiny random SmolVLM (Idefics3) with image splitting.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

from ros_peers import idefics3_standin, lerobot_standin, openvla_standin  # noqa: E402
from rs_guard_ros import certify  # noqa: E402
from rs_guard_ros.param_files import load_config  # noqa: E402
from rs_guard_ros.param_files import unflatten  # noqa: E402
from rs_guard_ros.guard import Guard  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OPENVLA_YAML, HF_VLM_YAML = ROOT / "config" / "openvla.yaml", ROOT / "config" / "hf_vlm.yaml"
# Solid camera frames (96 x 128 RGB) and the command each stand-in's rule gives them.
SCENES = {"forward": (0, 255, 0), "left": (255, 0, 0), "right": (0, 0, 255), "stop": (0, 0, 0)}
LEROBOT_PARAMS = {  # a LeKiwi-like base: action = 6 arm joints, x.vel (m/s), y.vel (m/s), theta.vel (deg/s)
    "model.backend": "lerobot", "model.device": "cpu", "oracle.kind": "action",
    "oracle.action_linear_x_index": 6, "oracle.action_angular_z_index": 8,
    "oracle.action_angular_z_scale": math.pi / 180, "oracle.action_tolerance": 0.1, "smoothing.seed": 3,
}


def frame(rgb: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, np.uint8), (96, 128, 3)).copy()


@pytest.fixture(scope="module")
def openvla_dir(tmp_path_factory) -> Path:
    return openvla_standin.build(tmp_path_factory.mktemp("openvla_standin"))


def openvla_overrides(path: Path) -> dict:
    """What a user changes in config/openvla.yaml for their own fine-tune on this machine."""
    return {"model.path": str(path), "model.device": "cpu", "model.unnorm_key": "standin_nav", "smoothing.seed": 1}


# ---------------------------------------------------------------- the shipped files
def test_the_shipped_real_vla_configs_load_validate_and_can_certify_every_threshold() -> None:
    openvla, hf_vlm = load_config(OPENVLA_YAML), load_config(HF_VLM_YAML)
    assert (openvla.model.backend, openvla.model.mode, openvla.model.dtype) == ("transformers", "action", "bfloat16")
    assert openvla.model.trust_remote_code and openvla.model.path == "/opt/models/openvla-7b"
    assert openvla.model.prompt_template == "In: What action should the robot take to {instruction}?\nOut:"
    assert openvla.oracle.kind == "action" and openvla.oracle.action_axes() == {"linear_x": (0, 5.0),
                                                                               "angular_z": (5, 5.0)}
    assert hf_vlm.oracle.kind == "grammar" and hf_vlm.model.image_size == 512
    assert "<image>" in hf_vlm.model.prompt_template and "{instruction}" in hf_vlm.model.prompt_template
    for cfg in (openvla, hf_vlm):
        s = cfg.smoothing
        assert all(certify.can_certify(r, s.sigma, s.alpha, s.n_max, cfg.oracle.error)
                   for r in cfg.thresholds().values())
    assert "hf download openvla/openvla-7b --local-dir /opt/models/openvla-7b" in OPENVLA_YAML.read_text()


def test_the_shipped_openvla_config_answers_a_hub_id_with_the_download_command(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as err:
        Guard.from_config(load_config(OPENVLA_YAML, overrides={"model.path": "openvla/openvla-7b"}))
    assert str(err.value) == (
        "model.path 'openvla/openvla-7b' looks like a Hugging Face hub id, but nothing is downloaded at run time: "
        "run `hf download openvla/openvla-7b --local-dir /opt/models/openvla-7b` on a machine with "
        "network and set model.path: /opt/models/openvla-7b")
    with pytest.raises(ValueError, match=r"^model\.path '/opt/models/openvla-7b' does not exist on this machine"):
        Guard.from_config(load_config(OPENVLA_YAML))  # the shipped path, absent here


# ---------------------------------------------------------------- end to end, in process
@pytest.mark.parametrize("command", list(SCENES))
def test_an_openvla_style_model_drives_the_guard_to_certified_commands(openvla_dir, command) -> None:
    guard = Guard.from_config(load_config(OPENVLA_YAML, overrides=openvla_overrides(openvla_dir)))
    decision = guard.decide(frame(SCENES[command]), "go to the red box")
    assert (decision.command, decision.certified) == (command, True), decision.reason
    assert decision.radius >= guard.cfg.thresholds()[command]
    assert decision.n_used <= guard.cfg.smoothing.n_max


@pytest.mark.parametrize("command", list(SCENES))
def test_a_lerobot_policy_drives_the_guard_to_certified_commands(tmp_path, command) -> None:
    policy_dir = lerobot_standin.write_policy(tmp_path / "policy", flow_noise_std=0.01)  # flow-matching noise
    with lerobot_standin.installed(tmp_path / "lerobot_standin_site"):
        guard = Guard.from_config(load_config(overrides={**LEROBOT_PARAMS, "model.path": str(policy_dir)}))
        decision = guard.decide(frame(SCENES[command]), "go to the red box")
    assert (decision.command, decision.certified) == (command, True), decision.reason
    assert decision.radius >= guard.cfg.thresholds()[command]


def test_a_lerobot_policy_certifies_stop_when_the_instruction_says_so(tmp_path) -> None:
    policy_dir = lerobot_standin.write_policy(tmp_path / "policy")
    with lerobot_standin.installed(tmp_path / "lerobot_standin_site"):
        guard = Guard.from_config(load_config(overrides={**LEROBOT_PARAMS, "model.path": str(policy_dir)}))
        decision = guard.decide(frame(SCENES["forward"]), "stop right there")
    assert (decision.command, decision.certified, decision.label) == ("stop", True, "stop")


def test_the_hf_vlm_config_runs_a_smolvlm_style_model_at_a_fixed_image_size(tmp_path) -> None:
    model_dir = idefics3_standin.build(tmp_path / "smolvlm_standin")
    overrides = {"model.path": str(model_dir), "model.device": "cpu", "smoothing.seed": 0}
    with pytest.raises(ValueError, match=r"model\.image_size 512: the vision encoder takes 64 x 64"):
        Guard.from_config(load_config(HF_VLM_YAML, overrides=overrides))
    guard = Guard.from_config(load_config(HF_VLM_YAML, overrides={**overrides, "model.image_size": 64}))
    assert guard.policy.input_size == (64, 64)
    decision = guard.decide(frame((90, 120, 200)), "go to the red box")
    # Random weights answer random words: the grammar oracle finds no command, and the gate abstains.
    assert decision.command == "stop" and not decision.reason.startswith(("error", "model", "input"))


# ---------------------------------------------------------------- from a parameter file, in a fresh process
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["openvla", "lerobot"])
def test_a_parameter_file_alone_loads_a_stand_in_in_a_fresh_process(kind, openvla_dir, tmp_path, python) -> None:
    """What the ROS node does: a new interpreter, a parameter file, no test-side registration."""
    import cv2

    env_path = ""
    if kind == "openvla":
        files, params = [OPENVLA_YAML], openvla_overrides(openvla_dir)
    else:
        files, params = [], {**LEROBOT_PARAMS, "model.path": str(lerobot_standin.write_policy(tmp_path / "policy"))}
        env_path = str(lerobot_standin.write_package(tmp_path / "lerobot_standin_site"))
    override = tmp_path / "override.yaml"
    override.write_text(json.dumps({"rs_guard": {"ros__parameters": unflatten(params)}}))
    image = tmp_path / "left.png"
    cv2.imwrite(str(image), frame(SCENES["left"])[..., ::-1])
    args = [python, "-m", "rs_guard_ros.cli", "certify", "--json", "--image", str(image), "--instruction",
            "go to the red box", *[f"--config={f}" for f in [*files, override]]]
    run = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "PYTHONPATH": env_path})
    assert run.returncode == 0, run.stderr[-2000:]
    decision = json.loads(run.stdout)
    assert (decision["command"], decision["certified"]) == ("left", True)

