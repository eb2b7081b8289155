"""The LeRobot backend (rs_guard_ros/policies/lerobot_policy.py) against a STAND-IN for LeRobot.

LeRobot cannot be installed beside this package (its pins conflict), so these tests write
tests/ros_peers/lerobot_standin.py -- a stand-in implementing PreTrainedConfig,
get_policy_class / PreTrainedPolicy (select_action, predict_action_chunk, reset,
from_pretrained) and make_pre_post_processors the way lerobot 0.4-0.6 does -- as a package
named `lerobot` into a temporary folder on sys.path, so the backend's real imports run.
In a LeRobot environment, the last test runs the backend on a real policy directory:
RS_GUARD_LEROBOT_POLICY=/opt/models/smolvla_base [RS_GUARD_LEROBOT_CAMERA=<image feature>].
"""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch

from ros_peers import lerobot_standin as standin
from rs_guard_ros.policies import load_policy

H, W = 24, 32


def colour(rgb: tuple[float, float, float], n: int = 1) -> torch.Tensor:
    """n uniform frames of one colour, (n, 3, H, W) in [0, 1]."""
    return torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(n, 3, H, W).clone()


@pytest.fixture
def lerobot(tmp_path):
    """The stand-in `lerobot` package importable for the duration of one test."""
    with standin.installed(tmp_path / "lerobot_standin_site") as site:
        yield site


@pytest.fixture
def policy_dir(tmp_path):
    return standin.write_policy(tmp_path / "standin_policy", image_shape=(3, H, W))


def test_without_lerobot_the_backend_says_how_to_install_it(policy_dir) -> None:
    if importlib.util.find_spec("lerobot") is not None:
        pytest.skip("a real lerobot is installed here")
    with pytest.raises(ValueError) as err:
        load_policy("lerobot", str(policy_dir), device="cpu")
    assert str(err.value).startswith("model.backend 'lerobot' needs LeRobot (>= 0.4) in this Python environment")


def test_a_hub_id_policy_path_answers_with_the_download_command(lerobot, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"`hf download lerobot/smolvla_base --local-dir "
                                         r"/opt/models/smolvla_base`"):
        load_policy("lerobot", "lerobot/smolvla_base", device="cpu")


def test_the_policy_loads_through_lerobots_own_interfaces(lerobot, policy_dir) -> None:
    policy = load_policy("lerobot", str(policy_dir), device="cpu")
    assert type(policy.policy).__module__ == "lerobot._standin"  # imported as `lerobot`, from the stand-in
    assert policy.name == "lerobot:standin_vla:standin_policy" and policy.output_kind == "action"
    assert policy.input_size == (H, W) and policy.camera_keys == ("observation.images.front",)
    assert torch.equal(policy.state, torch.zeros(standin.ACTION_DIM))  # the default fixed state
    actions = policy(colour((0.0, 1.0, 0.0), 2), "go to the red box")
    # Un-normalised by the postprocessor: raw LeKiwi units (x.vel 0.2 m/s), not the policy's normalised ones.
    assert len(actions) == 2 and actions[0].dtype == np.float64 and actions[0].shape == (standin.ACTION_DIM,)
    np.testing.assert_allclose(actions[0][[standin.X_VEL, standin.THETA_VEL]], [0.2, 0.0], atol=1e-6)
    np.testing.assert_allclose(policy(colour((1.0, 0.0, 0.0)), "go")[0][standin.THETA_VEL], 34.4, atol=1e-4)
    assert not policy(colour((0.0, 1.0, 0.0)), "stop here")[0].any()  # the task reaches the policy


def test_every_call_is_a_stateless_evaluation_of_its_own_frames(lerobot, tmp_path) -> None:
    # Two observations of history, as a policy with n_obs_steps = 2 keeps.
    root = standin.write_policy(tmp_path / "history_policy", image_shape=(3, H, W), n_obs_steps=2)
    policy = load_policy("lerobot", str(root), device="cpu")
    red, green = colour((1.0, 0.0, 0.0), 3), colour((0.0, 1.0, 0.0), 5)
    fresh = load_policy("lerobot", str(root), device="cpu")(green, "go")
    policy(red, "go")  # an earlier batch, of another size
    np.testing.assert_array_equal(np.stack(policy(green, "go")), np.stack(fresh))

    # Without the reset, the stand-in (like LeRobot) carries state across calls: what the backend avoids.
    inner, pre = policy.policy, policy.preprocess
    inner.reset()
    first = inner.select_action(pre(policy.batch((green[:1],), "go", None)))
    assert not torch.equal(inner.select_action(pre(policy.batch((green[:1],), "go", None))), first)  # a stale chunk step
    inner.reset()
    inner.predict_action_chunk(pre(policy.batch((red[:1],), "go", None)))
    mixed = inner.predict_action_chunk(pre(policy.batch((green[:1],), "go", None)))
    inner.reset()
    assert not torch.allclose(mixed, inner.predict_action_chunk(pre(policy.batch((green[:1],), "go", None))))


def test_camera_and_state_are_configurable_and_checked(lerobot, policy_dir) -> None:
    short = load_policy("lerobot", str(policy_dir), device="cpu", camera_keys=("front",), state=[0.1] * 9)
    assert short.camera_keys == ("observation.images.front",) and short.state[0].item() == pytest.approx(0.1)
    with pytest.raises(ValueError, match=r"model_key 'wrist' is not one of .*observation\.images\.front"):
        load_policy("lerobot", str(policy_dir), device="cpu", camera_keys=("wrist",))
    with pytest.raises(ValueError, match=r"model\.state has 2 values; the policy's observation\.state has 9"):
        load_policy("lerobot", str(policy_dir), device="cpu", state=[0.0, 0.0])


def _two_camera_policy(policy_dir):
    import json

    config = json.loads((policy_dir / "config.json").read_text())
    config["input_features"]["observation.images.wrist"] = {"type": "VISUAL", "shape": [3, 8, 8]}
    (policy_dir / "config.json").write_text(json.dumps(config))
    return policy_dir


def test_a_policy_with_several_cameras_needs_a_model_key_per_camera(lerobot, policy_dir) -> None:
    _two_camera_policy(policy_dir)
    with pytest.raises(ValueError, match=r"cameras\.<name>\.model_key: the policy takes 2 cameras"):
        load_policy("lerobot", str(policy_dir), device="cpu")
    with pytest.raises(ValueError, match=r"cameras\.names: the policy also takes \['observation\.images\.wrist'\]"):
        load_policy("lerobot", str(policy_dir), device="cpu", camera_keys=("front",))
    with pytest.raises(ValueError, match="two cameras feed the same image feature"):
        load_policy("lerobot", str(policy_dir), device="cpu", camera_keys=("front", "observation.images.front"))


def test_issue17_every_camera_reaches_its_own_feature_and_the_state_comes_with_each_call(lerobot, policy_dir) -> None:
    """Two cameras (front 24x32, wrist 8x8) as two image features of one observation, and the
    joint state from the topic with every call: each reaches the policy."""
    joints = tuple(f"joint_{i}" for i in range(standin.ACTION_DIM))
    policy = load_policy("lerobot", str(_two_camera_policy(policy_dir)), device="cpu",
                         camera_keys=("front", "wrist"), state_names=joints)
    assert policy.views == 2 and policy.input_sizes == ((H, W), (8, 8)) and policy.state is None
    green_front = colour((0.0, 1.0, 0.0), 2)
    green_wrist, red_wrist = torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8)
    green_wrist[:, 1], red_wrist[:, 0] = 1.0, 1.0
    calm, raised = torch.zeros(standin.ACTION_DIM), torch.full((standin.ACTION_DIM,), 1e3)
    both_green = policy((green_front, green_wrist), "go", state=calm)
    half_red = policy((green_front, red_wrist), "go", state=calm)
    assert both_green[0][standin.X_VEL] > 0.0 and half_red[0][standin.THETA_VEL] > 0.0  # the wrist view counts
    assert not policy((green_front, green_wrist), "go", state=raised)[0].any()  # ... and so does the state
    with pytest.raises(ValueError, match="expected 2 camera view"):
        policy(green_front, "go", state=calm)
    with pytest.raises(ValueError, match=r"state\.joint_names: 2 joints, but the policy's observation\.state has 9"):
        load_policy("lerobot", str(policy_dir), device="cpu", camera_keys=("front", "wrist"), state_names=("a", "b"))


REAL_POLICY = os.environ.get("RS_GUARD_LEROBOT_POLICY")


@pytest.mark.skipif(not REAL_POLICY or importlib.util.find_spec("lerobot") is None,
                    reason="needs LeRobot installed and RS_GUARD_LEROBOT_POLICY=<a local pretrained policy directory>")
def test_a_real_lerobot_policy_gives_one_finite_action_per_noisy_frame_call_after_call() -> None:
    policy = load_policy("lerobot", REAL_POLICY, camera_keys=(os.environ.get("RS_GUARD_LEROBOT_CAMERA") or None,))
    gen = torch.Generator().manual_seed(0)
    frames = torch.rand(1, 3, *policy.input_size, generator=gen) + 0.25 * torch.randn(3, 3, *policy.input_size,
                                                                                        generator=gen)
    first, second = policy(frames, "go to the red box"), policy(frames[:2], "go to the red box")
    assert len(first) == 3 and len(second) == 2  # another batch size next: no history carried over
    assert all(a.ndim == 1 and a.shape == first[0].shape and np.isfinite(a).all() for a in first + second)
