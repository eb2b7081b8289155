"""A real kind of VLA drives the ROS node end to end: action -> action oracle -> certified
Twist on cmd_vel, from a parameter file alone, in the node's own process.

No real weights can be downloaded here, so the models are the STAND-INS of
tests/ros_peers (named as such there): an OpenVLA-style directory (remote code, fused
processor, predict_action with unnorm_key) loaded with config/openvla.yaml, and LeRobot's
policy interface as a `lerobot` package on the node's PYTHONPATH. Both map a green frame to
"forward"; the Twist the gate publishes for it must be the forward command's.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

from ros_peers import lerobot_standin, openvla_standin  # noqa: E402
from ros_peers.gate_probe import ROOT, running_gate  # noqa: E402
from rs_guard_ros.param_files import load_config  # noqa: E402

OPENVLA_YAML = ROOT / "config" / "openvla.yaml"
GREEN = np.broadcast_to(np.array((0, 255, 0), np.uint8), (96, 128, 3)).copy()  # "forward" for both stand-ins
# Decisions of these stand-ins take seconds on a shared CPU: give the frame's age and the
# deadline room, and skip the start-up speed report.
NODE = {"startup_report": False, "max_frame_age": 60.0, "command_ttl": 60.0, "decision_deadline": 60.0}
LEROBOT = {"model": {"backend": "lerobot", "device": "cpu"},
           "oracle": {"kind": "action", "action_linear_x_index": 6, "action_angular_z_index": 8,
                      "action_angular_z_scale": math.pi / 180, "action_tolerance": 0.1}}


def _certified_forward(probe) -> tuple:
    """Send the green frame (freshly stamped) until a certified decision arrives; its record and the Twists."""
    probe.say("go to the red box")
    decision = probe.wait_for(lambda: [c for c in probe.certs("decision") if c["certified"]], 240, 0.1,
                              lambda: probe.send_frame(GREEN, probe.now()))
    assert decision, f"no certified decision; last records: {probe.certs()[-3:]}"
    return decision[0], probe.snapshot()[1]


def _expect_forward_twist(record: dict, twists: list, cfg) -> None:
    forward = cfg.commands.table["forward"]
    assert record["command"] == "forward" and record["radius"] >= cfg.thresholds()["forward"]
    assert (forward.linear_x, forward.linear_y, forward.angular_z) in twists


@pytest.mark.ros
@pytest.mark.slow
def test_an_openvla_style_model_drives_the_node_to_a_certified_twist(ros_env, tmp_path):
    model = openvla_standin.build(tmp_path / "openvla_standin")
    overrides = {"model": {"path": str(model), "device": "cpu", "unnorm_key": "standin_nav"}, "node": NODE}
    with running_gate(dict(ros_env, HF_MODULES_CACHE=str(tmp_path / "hf_modules")), tmp_path, overrides,
                      param_files=(OPENVLA_YAML,)) as (node, probe):
        assert probe.wait_connected() and probe.wait_ready(180), "the node did not come up"
        record, twists = _certified_forward(probe)
    _expect_forward_twist(record, twists, load_config(OPENVLA_YAML))


@pytest.mark.ros
@pytest.mark.slow
def test_a_lerobot_policy_drives_the_node_to_a_certified_twist(ros_env, tmp_path):
    policy = lerobot_standin.write_policy(tmp_path / "policy")
    site = lerobot_standin.write_package(tmp_path / "lerobot_standin_site")
    params = {**LEROBOT, "model": {**LEROBOT["model"], "path": str(policy)}, "node": NODE}
    env = dict(ros_env, PYTHONPATH=str(site))  # where the user's LeRobot would be importable
    with running_gate(env, tmp_path, params) as (node, probe):
        assert probe.wait_connected() and probe.wait_ready(180), "the node did not come up"
        record, twists = _certified_forward(probe)
    flat = {f"{group}.{key}": value for group, values in params.items() for key, value in values.items()}
    _expect_forward_twist(record, twists, load_config(overrides=flat))


@pytest.mark.ros
@pytest.mark.slow
def test_issue17_a_two_camera_lerobot_policy_with_joint_state_runs_from_its_config_file(ros_env, tmp_path):
    """config/lerobot_two_cameras.yaml alone (the model path pointed at the stand-in): front and
    wrist frames on their own topics and /joint_states reach the policy; a green scene on both
    cameras is certified `forward` with a radius per camera, and the record names the state."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState

    yaml_file = ROOT / "config" / "lerobot_two_cameras.yaml"
    cfg = load_config(yaml_file)
    policy = lerobot_standin.write_policy(tmp_path / "policy", cameras=("front", "wrist"))
    site = lerobot_standin.write_package(tmp_path / "lerobot_standin_site")
    overrides = {"model": {"path": str(policy), "device": "cpu"}, "node": NODE}
    green = np.broadcast_to(np.array((0, 255, 0), np.uint8), (480, 640, 3)).copy()
    with running_gate(dict(ros_env, PYTHONPATH=str(site)), tmp_path, overrides, param_files=(yaml_file,)) as (_, probe):
        pubs = [probe.node.create_publisher(Image, cfg.cameras.table[name].topic, qos_profile_sensor_data)
                for name in cfg.cameras.names]
        joints = probe.node.create_publisher(JointState, cfg.state.topic, qos_profile_sensor_data)

        def send() -> None:
            now = probe.now()
            for pub in pubs:
                pub.publish(probe.image_msg(green, now))
            state = JointState(name=list(reversed(cfg.state.joint_names)), position=[0.0] * 9)  # any order
            state.header.stamp = probe.node.get_clock().now().to_msg()
            joints.publish(state)

        assert probe.wait_for(lambda: all(p.get_subscription_count() for p in [*pubs, joints]), 60)
        assert probe.wait_ready(180), "the node did not come up"
        probe.say("go to the red box")
        got = probe.wait_for(lambda: [c for c in probe.certs("decision") if c["certified"]], 240, 0.1, send)
        assert got, f"no certified decision; last records: {probe.certs()[-3:]}"
        record = got[0]
        assert set(record["cameras"]) == {"front", "wrist"} and set(record["radius_cameras"]) == {"front", "wrist"}
        assert record["state_joints"] == 9 and record["state_sha256"]
    _expect_forward_twist(record, probe.snapshot()[1], cfg)


def test_the_stand_ins_are_named_as_such():
    for module in (openvla_standin, lerobot_standin):
        assert "STAND-IN" in (module.__doc__ or "").upper(), module.__name__
    assert Path(openvla_standin.__file__).parent.name == "ros_peers"


@pytest.mark.ros
@pytest.mark.slow
def test_a_clean_trained_vla_behind_the_denoiser_drives_the_node_from_its_config_file(ros_env, tmp_path):
    """config/demo_denoised.yaml alone: the VLA trained on clean frames, the shipped denoiser in
    front of it; example frames get certified commands, the records name the denoiser and its
    time is in the timing breakdown."""
    import csv

    import cv2

    rows = [r for r in csv.DictReader((ROOT / "examples" / "frames.csv").open()) if r["command"] in ("left", "right")]
    params = {"model": {"device": "cpu"}, "node": NODE}
    with running_gate(ros_env, tmp_path, params, param_files=(ROOT / "config" / "demo_denoised.yaml",)) as (_, probe):
        assert probe.wait_connected() and probe.wait_ready(180), "the node did not come up"
        for row in rows[:2]:
            rgb = cv2.cvtColor(cv2.imread(str(ROOT / "examples" / row["image"])), cv2.COLOR_BGR2RGB)
            probe.say(row["instruction"])
            got = probe.wait_for(lambda: [c for c in probe.certs("decision") if c["certified"]
                                          and c["instruction"] == row["instruction"]], 240, 0.2,
                                 lambda: probe.send_frame(rgb, probe.now()))
            assert got, f"no certified decision for {row['image']}: {probe.certs()[-3:]}"
            record = got[-1]
            assert record["command"] == row["command"] and record["timing_ms"]["denoise"] > 0.0
            assert record["settings"]["denoiser"] == "package://rs_guard_ros/models/denoiser"
