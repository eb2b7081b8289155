"""The closed-loop attacker (rs_guard_ros.sim.attacker): it attacks the camera frame through the
guard's exact preprocessing and respects its budget in camera units."""
import numpy as np
import pytest
import torch

from rs_guard_ros.config import from_flat
from rs_guard_ros.sim.attacker import CameraAttacker, CameraToInput
from rs_guard_ros.sim.scenarios import Fault
from rs_guard_ros.sim.world import World

INSTRUCTION = "go to the red box"


@pytest.fixture(scope="module")
def attacker():
    return CameraAttacker(from_flat({"model.device": "cpu", "smoothing.n_max": 200}), steps=5)


@pytest.fixture(scope="module")
def frame():
    with World(seed=3) as world:
        world.reset(robot_pose=(0.1, 0.0, 0.0), object_positions={"red box": (0.6, 0.0)})
        return world.render()


@pytest.mark.parametrize("mode", ["resize", "center_crop"])
def test_camera_to_input_is_the_guards_own_preprocessing(frame, mode):
    cfg = from_flat({"model.device": "cpu", "preprocess.mode": mode})
    from rs_guard_ros.guard import Guard

    guard = Guard.from_config(cfg)
    layer = CameraToInput(guard, frame.shape[:2], torch.device("cpu"))
    x = torch.from_numpy(frame.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    expected, _ = guard.prepare(frame)
    assert torch.allclose(layer(x)[0], expected, atol=1e-5)


@pytest.mark.parametrize("norm, eps", [("linf", 8 / 255), ("l2", 2.0)])
def test_attacked_frame_is_uint8_within_budget_and_judged_by_the_real_vla(attacker, frame, norm, eps):
    attacked, undefended = attacker(frame, INSTRUCTION, Fault("attack", 0.0, 1.0, norm=norm, epsilon=eps))
    assert attacked.dtype == np.uint8 and attacked.shape == frame.shape
    delta = (attacked.astype(np.float64) - frame) / 255.0
    quantisation = 0.5 / 255.0  # rounding to uint8 after the attack
    bound = eps + quantisation * (1 if norm == "linf" else np.sqrt(delta.size))
    size = np.abs(delta).max() if norm == "linf" else np.linalg.norm(delta)
    assert 0 < size <= bound
    assert undefended == attacker.base_command(attacked, INSTRUCTION)
    assert undefended in {"forward", "left", "right", "stop", "UNKNOWN"}


def test_attack_towards_a_command_outside_the_set_is_refused(attacker, frame):
    with pytest.raises(ValueError, match="command set"):
        attacker(frame, INSTRUCTION, Fault("attack", 0.0, 1.0, norm="l2", epsilon=1.0, command="jump"))
