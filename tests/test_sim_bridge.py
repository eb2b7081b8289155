"""The MuJoCo sim bridge (rs_guard_ros.sim.ros_bridge) closed-loop with rs_guard_node, both
real processes: the sim drives /clock and the camera, the guard gates its cmd_vel, and the
robot moves only on certified commands. Assertions are on content, never on wall-clock time.

The closed-loop test runs the sim at real-time factor RTF = 0.1: the guard's deadlines and ages
count on sim time (use_sim_time), so a decision of even 5 wall seconds (a machine far slower
than this one, rendering on the same cores) lasts 0.5 sim s, inside decision_deadline and
max_frame_age. Its outcome does not depend on the machine's speed; only the wall-clock bound on
progress is stretched by 1 / RTF.
"""
import json
import math
import signal
import subprocess
import sys

import pytest

from ros_peers.gate_probe import FAST, ROOT, Probe, Repeater, merge, running_gate, write_params
from rs_guard_ros.sim.ros_bridge import (CMD_TIMEOUT_S, WHEEL_JOINTS, check_real_time_factor, effective_command,
                                         joint_state_msg, odometry_msg, stamp_of, step_period)

TASK = "go to the red box"
SEED = 0  # a layout where the demo VLA certifies a turn towards the red box (checked offline)
RTF = 0.1  # sim seconds per wall second (see the module docstring)
SIM_ARGS = ("-p", f"seed:={SEED}", "-p", "target:=red box", "-p", f"real_time_factor:={RTF}")
GUARD_ARGS = ("-r", "image:=/camera/image_raw", "-r", "cmd_vel:=/cmd_vel", "-p", "use_sim_time:=true")


def test_stale_or_missing_commands_count_as_zero():
    assert effective_command((0.25, 0.6), None, 3.0) == (0.0, 0.0)
    assert effective_command((0.25, 0.6), 1.0, 1.0 + CMD_TIMEOUT_S) == (0.25, 0.6)
    assert effective_command((0.25, 0.6), 1.0, 1.0 + CMD_TIMEOUT_S + 0.02) == (0.0, 0.0)


def test_stamps_split_seconds_and_nanoseconds():
    assert stamp_of(0.0) == (0, 0)
    assert stamp_of(12.34) == (12, 340_000_000)
    assert stamp_of(1.9999999999) == (1, 999_999_999)


def test_odometry_carries_the_planar_pose_as_a_yaw_quaternion_and_the_applied_velocity():
    msg = odometry_msg((1.5, -0.5, 2.0), (0.25, -0.6), 3.25)
    q = msg.pose.pose.orientation
    assert (msg.header.frame_id, msg.child_frame_id) == ("odom", "base_link")
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (3, 250_000_000)
    assert (msg.pose.pose.position.x, msg.pose.pose.position.y) == (1.5, -0.5)
    assert math.isclose(2 * math.atan2(q.z, q.w), 2.0) and q.x == q.y == 0.0
    assert (msg.twist.twist.linear.x, msg.twist.twist.angular.z) == (0.25, -0.6)


def test_a_real_time_factor_outside_zero_to_one_is_refused_and_stretches_the_step_period_by_its_inverse():
    for good in (1.0, 0.25, 0.02, 1e-6, 1):
        assert check_real_time_factor(good) == good
        assert step_period(0.02, good) == pytest.approx(0.02 / good)
    for bad in (0.0, -0.5, 1.0001, 2, math.nan, math.inf, True, "0.5", None):
        with pytest.raises(ValueError, match="real_time_factor must be a number in \\(0, 1\\]"):
            check_real_time_factor(bad)


def _spin_until(executor, done, max_spins=2000):
    """Spin until `done()` (a bound on callbacks, not on wall time); whether it came true."""
    for _ in range(max_spins):
        if done():
            return True
        executor.spin_once(timeout_sec=1.0)
    return done()


@pytest.mark.ros
def test_every_step_advances_sim_time_by_dt_while_the_timer_fires_every_dt_over_the_real_time_factor(ros_env):
    """In process: the physics timer's period is dt / real_time_factor (read from the timer, not
    measured), /clock moves exactly dt per step at any factor, and a run-time change is applied
    when in (0, 1] and refused otherwise, leaving factor and period as they were."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rosgraph_msgs.msg import Clock

    from rs_guard_ros.sim.ros_bridge import REAL_TIME_FACTOR, SimBridge

    context = rclpy.Context()
    rclpy.init(context=context)
    sim = SimBridge(context=context, parameter_overrides=[Parameter(REAL_TIME_FACTOR, value=0.25)])
    listener = Node("clock_listener", context=context)
    clock = []
    listener.create_subscription(Clock, "/clock", lambda m: clock.append(m.clock.sec + m.clock.nanosec * 1e-9), 100)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(sim)
    executor.add_node(listener)
    try:
        assert sim.timer.timer_period_ns == round(sim.dt / 0.25 * 1e9)
        assert _spin_until(executor, lambda: len(clock) >= 10)
        assert sim.sim_time == pytest.approx(sim.steps * sim.dt)

        assert sim.set_parameters([Parameter(REAL_TIME_FACTOR, value=1.0)])[0].successful
        assert sim.timer.timer_period_ns == round(sim.dt * 1e9)
        for bad in (0.0, -0.25, 1.5, math.nan):
            result = sim.set_parameters([Parameter(REAL_TIME_FACTOR, value=bad)])[0]
            assert not result.successful and "(0, 1]" in result.reason
        assert sim.get_parameter(REAL_TIME_FACTOR).value == 1.0
        assert sim.timer.timer_period_ns == round(sim.dt * 1e9)

        seen = len(clock)
        assert _spin_until(executor, lambda: len(clock) >= seen + 10)
        assert sim.sim_time == pytest.approx(sim.steps * sim.dt)
        # Before and after the change: each /clock tick is one step of dt, none skipped or stretched.
        assert [round(b - a, 9) for a, b in zip(clock, clock[1:])] == [round(sim.dt, 9)] * (len(clock) - 1)
    finally:
        executor.shutdown()
        listener.destroy_node()
        sim.destroy_node()
        rclpy.shutdown(context=context)


def test_joint_state_names_both_wheels_with_their_positions_velocities_and_the_stamp():
    msg = joint_state_msg((1.5, -2.0), (3.2, -6.8), 3.25)
    assert list(msg.name) == list(WHEEL_JOINTS) == ["left_wheel", "right_wheel"]
    assert list(msg.position) == [1.5, -2.0] and list(msg.velocity) == [3.2, -6.8]
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (3, 250_000_000)


def _sim_process(env, tmp_path, extra=()):
    """The sim bridge in its own process (python -m, so no installed console script is needed)."""
    log = open(tmp_path / "sim.log", "w")
    args = [sys.executable, "-m", "rs_guard_ros.sim.ros_bridge", "--ros-args", *SIM_ARGS, *extra]
    return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT), log


def _stop(sim, sim_log, tmp_path):
    """SIGINT the sim (kill if it hangs); its exit code; its log's tail printed for a failure."""
    sim.send_signal(signal.SIGINT)
    try:
        rc = sim.wait(timeout=20)
    except subprocess.TimeoutExpired:
        sim.kill()
        rc = sim.wait(timeout=10)
    sim_log.close()
    print((tmp_path / "sim.log").read_text(errors="replace")[-4000:])
    return rc


def _watch_sim(probe):
    """Record the sim's camera stamps, /clock, pose and ground truth in the probe."""
    from rosgraph_msgs.msg import Clock
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from nav_msgs.msg import Odometry

    seen = {"images": [], "clock": [], "pose": [], "truth": [], "odom": []}

    def add(key, value):
        with probe.lock:
            seen[key].append(value)

    n, depth = probe.node, 1000  # keep every message: a busy probe must not lose the ones it compares
    n.create_subscription(Image, "/camera/image_raw", lambda m: add(
        "images", (m.encoding, m.width, m.height, m.header.stamp.sec + m.header.stamp.nanosec * 1e-9)),
        qos_profile_sensor_data)
    n.create_subscription(Clock, "/clock", lambda m: add("clock", m.clock.sec + m.clock.nanosec * 1e-9), depth)
    n.create_subscription(String, "/rs_guard_sim/pose", lambda m: add("pose", json.loads(m.data)), depth)
    n.create_subscription(String, "/rs_guard_sim/ground_truth", lambda m: add("truth", m.data), depth)
    n.create_subscription(Odometry, "/odom", lambda m: add("odom", (m.pose.pose.position.x, m.pose.pose.position.y)),
                          depth)
    return seen


@pytest.mark.ros
def test_guard_drives_the_sim_robot_only_with_certified_commands(ros_env, tmp_path):
    params = write_params(tmp_path / "fast.yaml", merge(FAST, {"node": {"diagnostics_period": 0.2}}))
    sim, sim_log = _sim_process(ros_env, tmp_path)
    try:
        with running_gate(ros_env, tmp_path, None, param_files=(ROOT / "config/sim_diffdrive.yaml", params),
                          ros_args=GUARD_ARGS) as (node, probe):
            seen = _watch_sim(probe)
            assert probe.wait_ready(90), "guard never became active"
            probe.say(TASK)

            def moved_after_certified_motion():
                certs = [c for c in probe.certs() if c.get("source") == "decision"]
                motion = [c for c in certs if c["certified"] and c["command"] != "stop"]
                with probe.lock:
                    poses = list(seen["pose"])
                return motion and poses and any(_differs(p, poses[0]) for p in poses)

            def resay():
                probe.say(TASK)  # the instruction QoS is volatile: repeat until the guard hears it

            assert probe.wait_for(moved_after_certified_motion, 45 / RTF, 0.1, resay), "robot never moved"
            commands, twists, certs, _ = probe.snapshot()
    finally:
        sim_rc = _stop(sim, sim_log, tmp_path)

    assert sim_rc == 0, "the sim did not exit cleanly on SIGINT"
    with probe.lock:
        images, clock, poses, truth = (list(seen[k]) for k in ("images", "clock", "pose", "truth"))
    # The sim publishes its 128x96 rgb8 camera stamped in sim time, and /clock moving forward.
    assert images and all(i[:3] == ("rgb8", 128, 96) for i in images)
    assert clock == sorted(clock) and clock[-1] > clock[0]
    assert all(clock[0] <= i[3] <= clock[-1] + 1.0 for i in images)
    assert truth and set(truth) <= {"forward", "left", "right", "stop"}
    # Odometry follows the same robot: every pose record's position appears in /odom.
    with probe.lock:
        odom = set(seen["odom"])
    assert odom and all((p["x"], p["y"]) in odom for p in poses[:-1])
    # Every decision is a certified command or the abstain command (stop).
    decisions = [c for c in certs if c.get("source") == "decision"]
    assert decisions and all(c["certified"] or c["command"] == "stop" for c in decisions)
    assert set(commands) <= {"forward", "left", "right", "stop"}
    # A non-zero cmd_vel is always the Twist of a command that was certified.
    twist_of = {"forward": (0.25, 0.0, 0.0), "left": (0.0, 0.0, 0.6), "right": (0.0, 0.0, -0.6)}
    certified = {twist_of[c["command"]] for c in decisions if c["certified"] and c["command"] != "stop"}
    assert all(tw in certified for tw in twists if tw != (0.0, 0.0, 0.0))
    # The robot stays put until the first certified motion command (both clocks are sim time).
    first_motion = min(c["time"] for c in decisions if c["certified"] and c["command"] != "stop")
    assert all(not _differs(p, poses[0]) for p in poses if p["t"] < first_motion)
    assert any(_differs(p, poses[0]) for p in poses)


def _differs(pose, ref, tol=1e-6):
    """True when two pose records differ in position or heading."""
    return any(abs(pose[k] - ref[k]) > tol for k in ("x", "y", "yaw"))


@pytest.mark.ros
def test_sim_publishes_the_rear_camera_with_the_front_frames_stamp_and_the_wheels_joint_states(ros_env, tmp_path):
    from geometry_msgs.msg import Twist
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState

    from rs_guard_ros.sim.world import wheel_velocities

    sim, sim_log = _sim_process(ros_env, tmp_path, ("-p", "rear_camera:=true"))
    probe = Probe()
    seen = {"front": {}, "rear": {}, "joints": []}

    def stamp(msg):
        return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9

    def on_image(camera):
        def store(msg):
            with probe.lock:
                seen[camera][stamp(msg)] = (msg.encoding, msg.width, msg.height, msg.header.frame_id, bytes(msg.data))
        return store

    def on_joints(msg):
        with probe.lock:
            seen["joints"].append((stamp(msg), list(msg.name), list(msg.position), list(msg.velocity)))

    n = probe.node
    n.create_subscription(Image, "/camera/image_raw", on_image("front"), qos_profile_sensor_data)
    n.create_subscription(Image, "/camera_rear/image_raw", on_image("rear"), qos_profile_sensor_data)
    n.create_subscription(JointState, "/joint_states", on_joints, 10)
    cmd_vel = n.create_publisher(Twist, "/cmd_vel", 10)
    twist = Twist()
    twist.linear.x, twist.angular.z = 0.25, 0.6
    drive = Repeater(lambda _: cmd_vel.publish(twist), 0.05).start()
    moving = wheel_velocities(0.25, 0.6)

    def enough():
        with probe.lock:
            pairs = set(seen["front"]) & set(seen["rear"])
            driven = [j for j in seen["joints"] if j[3] == pytest.approx(list(moving))]
        return len(pairs) >= 5 and len(driven) >= 3

    try:
        assert probe.wait_for(enough, 60, 0.05), "no rear frames or driven joint states from the sim"
    finally:
        drive.stop()
        probe.close()
        sim_rc = _stop(sim, sim_log, tmp_path)
    assert sim_rc == 0
    front, rear, joints = seen["front"], seen["rear"], seen["joints"]
    # Every rear frame has a front frame with the identical stamp; same size and encoding, its
    # own frame id, another picture.
    paired = [t for t in rear if t in front]
    assert len(paired) >= len(rear) - 1  # the last rear frame may be the newest, its front lost in shutdown
    assert all(rear[t][:4] == ("rgb8", 128, 96, "camera_rear") and front[t][:4] == ("rgb8", 128, 96, "camera")
               for t in paired)
    assert all(rear[t][4] != front[t][4] for t in paired)
    # Joint states name both wheels, carry sim-time stamps (those of the camera frames) and the
    # applied command's wheel speeds; positions integrate them.
    assert all(names == list(WHEEL_JOINTS) for _, names, _, _ in joints)
    assert {t for t, *_ in joints} & set(front)
    assert all(v in ([0.0, 0.0], pytest.approx(list(moving))) for _, _, _, v in joints)
    steady = [(a, b) for a, b in zip(joints, joints[1:]) if a[3] == b[3] == pytest.approx(list(moving))]
    assert any(b[2] == pytest.approx([p + w * (b[0] - a[0]) for p, w in zip(a[2], moving)], abs=1e-6)
               for a, b in steady)
