"""rs_guard_node on real rclpy, in its own process: certified commands agree with the
offline Guard, abstain is published whenever the inputs cannot be trusted, parameters
are validated at start-up and at run time, the lifecycle and /clock are honoured, and
SIGINT leaves the abstain action as the last word on cmd_vel.

Timing claims are checked with the node's own clock (the certificate's `time`,
`frame_received`, `frame_age` fields), never with the test's wall clock.
"""
import csv
import signal
import subprocess
import time

import numpy as np
import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState

from ros_peers.gate_probe import (FAST, FAULT_MODEL, NODE_EXE, PEERS, ROOT, Repeater, SimClock, camera, merge,
                                  running_gate, write_params)

MAX_FRAME_AGE, MAX_INSTRUCTION_AGE, PERIOD = 0.5, 1.0, 0.1
FAULT_PARAMS = merge(FAST, FAULT_MODEL, {"node": {"max_frame_age": MAX_FRAME_AGE, "watchdog_period": PERIOD,
                                                  "diagnostics_period": 0.2}})
EXAMPLES = ROOT / "examples"
TASK = "go to the red box"


def _decisions(probe, start=0, certified=None):
    return [c for c in probe.certs()[start:] if c.get("source") == "decision"
            and (certified is None or c["certified"] == certified)]


# ---------------------------------------------------------------------------
# The demo VLA: the node agrees with the offline Guard, and abstains off-task
# ---------------------------------------------------------------------------

def _example_frames(per_command=2):
    """[(rgb, instruction, correct command)] from examples/frames.csv, `per_command` of each command."""
    import cv2

    rows = list(csv.DictReader((EXAMPLES / "frames.csv").open()))
    picked = [r for r in rows if r["command"] != "UNKNOWN"]
    picked = [r for i, r in enumerate(picked) if sum(q["command"] == r["command"] for q in picked[:i]) < per_command]
    return [(cv2.cvtColor(cv2.imread(str(EXAMPLES / r["image"])), cv2.COLOR_BGR2RGB), r["instruction"], r["command"])
            for r in picked]


# Small budget (all 100 samples agreeing certify R = 1.5 sigma > every threshold) and a fixed
# seed, so the node and the offline Guard draw the same noise and must reach the same command.
DEMO_PARAMS = merge(FAST, {"smoothing": {"n0": 8, "n_max": 100, "seed": 7},
                           "node": {"max_frame_age": 30.0, "decision_deadline": 30.0, "command_ttl": 5.0,
                                    "diagnostics_period": 0.2}})


def _decide_each(probe, frames, resend_s=2.0):
    """Say each frame's instruction and publish the frame, freshly stamped (again every `resend_s`:
    the camera QoS is best effort), until a decision on that frame with that instruction arrives;
    those decisions."""
    out = []
    for i, (rgb, instruction, _) in enumerate(frames):
        probe.say(instruction)
        stamps, last = [], [0.0]

        def resend():
            if time.monotonic() - last[0] > resend_s:
                stamps.append(probe.send_frame(rgb, probe.now()))
                last[0] = time.monotonic()

        got = probe.wait_for(lambda: [c for c in _decisions(probe) if c["stamp"] in stamps
                                      and c["instruction"] == instruction], 120, 0.05, resend)
        assert got, f"no decision for frame {i}"
        out.append(got[0])
    return out


@pytest.mark.ros
@pytest.mark.slow
def test_demo_commands_match_the_offline_guard_and_sigint_leaves_abstain(ros_env, tmp_path):
    from rs_guard_ros import param_files
    from rs_guard_ros.guard import Guard

    frames = _example_frames()
    params_file = write_params(tmp_path / "demo.yaml", DEMO_PARAMS)
    guard = Guard.from_config(param_files.load_config(params_file))
    offline = [guard.decide(rgb, instruction) for rgb, instruction, _ in frames]
    with running_gate(ros_env, tmp_path, None, param_files=(params_file,)) as (node, probe):
        assert probe.wait_connected() and probe.wait_ready()
        online = _decide_each(probe, frames)
        assert [c["command"] for c in online] == [d.command for d in offline]
        assert sum(c["certified"] for c in online) >= len(frames) // 2, "too few certified to compare"
        assert any(tw != (0.0, 0.0, 0.0) for tw in probe.snapshot()[1]), "no motion was ever published"
        assert node.stop() == 0
        assert probe.wait_for(lambda: probe.certs()[-1]["reason"] == "shutdown", 10)
        assert probe.snapshot()[1][-1] == (0.0, 0.0, 0.0)  # the last word on cmd_vel is the abstain action


@pytest.mark.ros
@pytest.mark.slow
def test_noise_frames_and_an_off_task_instruction_publish_only_abstain(ros_env, tmp_path):
    import cv2

    frames = _example_frames(per_command=1)
    noise_png = cv2.cvtColor(cv2.imread(str(EXAMPLES / "noise.png")), cv2.COLOR_BGR2RGB)
    noise = [(noise_png, TASK, None)] + [
        (np.random.default_rng(i).integers(0, 256, noise_png.shape, dtype=np.uint8), TASK, None) for i in range(2)]
    off_task = [(rgb, "make me a coffee", None) for rgb, _, _ in frames]
    with running_gate(ros_env, tmp_path, DEMO_PARAMS) as (node, probe):
        assert probe.wait_connected() and probe.wait_ready()
        decisions = _decide_each(probe, noise + off_task)
        assert not any(c["certified"] for c in decisions)
        commands, twists, _, _ = probe.snapshot()
        assert set(commands) == {"stop"} and set(twists) == {(0.0, 0.0, 0.0)}


# ---------------------------------------------------------------------------
# Watchdog: stale camera / instruction, measured on the node's clock
# ---------------------------------------------------------------------------

@pytest.mark.ros
def test_stale_camera_or_instruction_abstains_within_the_bound_and_gating_resumes(ros_env, tmp_path):
    params = merge(FAULT_PARAMS, {"node": {"max_instruction_age": MAX_INSTRUCTION_AGE}})
    with running_gate(ros_env, tmp_path, params) as (node, probe):
        assert probe.wait_connected() and probe.wait_ready()
        cam = camera(probe).start()
        speaker = Repeater(lambda i: probe.say(TASK), 0.2).start()
        try:
            assert probe.wait_for(lambda: _decisions(probe, certified=True), 30)

            for stop, restart, cause, limit, last_key in (
                    (cam.stop, cam.start, "stale_frame", MAX_FRAME_AGE, "frame_received"),
                    (speaker.stop, speaker.start, "stale_instruction", MAX_INSTRUCTION_AGE, "instruction_received")):
                n = len(probe.certs())
                stop()
                # The first abstain for this cause: from the watchdog, or from a decision on a
                # frame that arrived meanwhile (the camera keeps going while the instruction is stale).
                event = probe.wait_for(lambda: [c for c in probe.certs()[n:] if c["reason"].startswith(cause)], 30)
                assert event, f"no abstain for {cause}"
                event = event[0]
                assert event["command"] == "stop" and not event["certified"]
                age = event["time"] - event[last_key]  # node clock
                assert limit < age <= limit + PERIOD  # within the max age + one watchdog period
                later = probe.certs()[probe.certs().index(event) + 1:]
                assert not [c for c in later if c.get("certified")], "a command was certified while stale"
                n = len(probe.certs())
                restart()
                assert probe.wait_for(lambda: _decisions(probe, n, certified=True), 30), f"no resume after {cause}"
        finally:
            cam.stop()
            speaker.stop()


@pytest.mark.ros
def test_watchdog_follows_sim_time(ros_env, tmp_path):
    params = merge(FAULT_PARAMS, {"use_sim_time": True})
    with running_gate(ros_env, tmp_path, params) as (node, probe):
        sim = SimClock(probe).start()
        try:
            assert probe.wait_connected() and probe.wait_ready()
            probe.say(TASK)
            cam = camera(probe, stamp=sim).start()  # a simulated camera stamps sim time
            got = probe.wait_for(lambda: _decisions(probe, certified=True), 30)
            cam.stop()
            assert got and 1000.0 <= got[-1]["time"] < 1000.0 + 100  # node time is sim time, not wall time
            sim.running = False  # pause the simulation; wall time goes on
            paused_at, n = sim.t, len(probe.certs())
            probe.wait_for(lambda: False, timeout=4 * MAX_FRAME_AGE)  # let wall time pass
            assert not [c for c in probe.certs()[n:] if c["reason"].startswith("stale_frame")]
            sim.t = paused_at + 1.0  # one simulated second later the camera is stale
            event = probe.wait_for(lambda: [c for c in probe.certs()[n:] if c["reason"].startswith("stale_frame")], 30)
            assert event and event[0]["time"] == pytest.approx(paused_at + 1.0, abs=0.02)
            # the last frame came before the pause (the node reads /clock to the nanosecond) ...
            assert event[0]["frame_received"] <= paused_at + 1e-6
            assert event[0]["frame_age"] > MAX_FRAME_AGE  # ... and is stale in simulated time only
        finally:
            sim.stop()


# ---------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------

@pytest.mark.ros
def test_parameters_are_declared_with_descriptions_ranges_and_read_only_flags(ros_env, tmp_path):
    from rcl_interfaces.msg import ParameterType

    from rs_guard_ros import config

    spec = {s.name: s for s in config.param_specs()}
    with running_gate(ros_env, tmp_path, FAULT_PARAMS) as (node, probe):
        sigma, n0, path, names, patterns = probe.describe_parameters(
            "smoothing.sigma", "smoothing.n0", "model.path", "commands.names", "commands.forward.patterns")
        assert sigma.description == spec["smoothing.sigma"].description
        assert not sigma.read_only and sigma.type == ParameterType.PARAMETER_DOUBLE
        sigma_range, n0_range = sigma.floating_point_range[0], n0.integer_range[0]
        assert (sigma_range.from_value, sigma_range.to_value) == (spec["smoothing.sigma"].low,
                                                                  spec["smoothing.sigma"].high)
        assert (n0_range.from_value, n0_range.to_value) == (spec["smoothing.n0"].low, spec["smoothing.n0"].high)
        assert path.read_only and names.read_only and names.type == ParameterType.PARAMETER_STRING_ARRAY
        assert patterns.type == ParameterType.PARAMETER_STRING_ARRAY  # an empty list, declared by type


@pytest.mark.ros
def test_runtime_parameter_changes_are_validated_and_applied(ros_env, tmp_path):
    with running_gate(ros_env, tmp_path, FAULT_PARAMS) as (node, probe):
        assert probe.wait_connected() and probe.wait_ready()
        probe.say(TASK)
        cam = camera(probe).start()
        try:
            assert probe.wait_for(lambda: _decisions(probe, certified=True), 30)
            (ok,) = probe.set_parameters(commands__forward__radius_threshold=0.4)
            assert ok.successful
            n = len(probe.certs())
            raised = probe.wait_for(lambda: _decisions(probe, n), 30)
            assert raised[0]["threshold"] == 0.4  # visible in the next certificate

            ok_sigma, ok_rate = probe.set_parameters(smoothing__sigma=0.3, node__publish_rate=20.0)
            assert ok_sigma.successful and ok_rate.successful
            n = len(probe.certs())
            back = probe.wait_for(lambda: _decisions(probe, n, certified=True), 30)
            assert back[0]["settings"]["sigma"] == 0.3 and back[0]["threshold"] == 0.4
            (lowered,) = probe.set_parameters(commands__forward__radius_threshold=0.25)
            assert not lowered.successful and "only be raised at run time" in lowered.reason  # issue 15 (3)

            rejected = {name: probe.set_parameters(**{name: value})[0] for name, value in (
                ("smoothing__sigma", -1.0),  # out of range
                ("smoothing__mode", "magic"),  # not a choice
                ("smoothing__n0", 1.5),  # wrong type
                ("model__path", "/elsewhere"),  # read-only
            )}
            for name, result in rejected.items():
                assert not result.successful and result.reason, name
            assert "smoothing.mode" in rejected["smoothing__mode"].reason
            n = len(probe.certs())
            assert probe.wait_for(lambda: _decisions(probe, n), 30)[0]["settings"]["sigma"] == 0.3  # unchanged
        finally:
            cam.stop()


@pytest.mark.ros
@pytest.mark.parametrize("params,name", [
    ({"smoothing": {"sigma": "big"}}, "smoothing.sigma"),  # wrong type
    ({"smoothing": {"n0": 0}}, "smoothing.n0"),  # out of range
    ({"node": {"publish_rate": 0.0}}, "node.publish_rate"),  # out of range
    ({"commands": {"fly": {"linear_x": 1.0}}}, "commands.fly.linear_x"),  # unknown command
    ({"commands": {"abstain": "fly"}}, "commands.abstain"),  # abstain outside the set
    ({"smothing": {"sigma": 0.25}}, "smothing.sigma"),  # unknown parameter
])
def test_a_bad_parameter_file_exits_2_naming_the_parameter(ros_env, tmp_path, params, name):
    path = write_params(tmp_path / "bad.yaml", params)
    run = subprocess.run([str(NODE_EXE), "--ros-args", "--params-file", str(path)], env=ros_env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert f"'{name}'" in run.stdout + run.stderr


# ---------------------------------------------------------------------------
# Output policy, lifecycle
# ---------------------------------------------------------------------------

@pytest.mark.ros
def test_abstain_goes_quiet_after_the_timeout_and_commands_resume(ros_env, tmp_path):
    params = merge(FAULT_PARAMS, {"node": {"abstain_publish_timeout": 0.0, "publish_rate": 20.0}})
    with running_gate(ros_env, tmp_path, params) as (node, probe):
        assert probe.wait_connected() and probe.wait_ready()  # no camera: abstaining
        assert probe.wait_for(lambda: probe.snapshot()[1], 10)  # (never quiet yet: the probe may join late)
        (ok,) = probe.set_parameters(node__abstain_publish_timeout=0.5)
        assert ok.successful
        probe.wait_for(lambda: False, timeout=1.0)  # well past the 0.5 s quiet timeout
        quiet_from = len(probe.snapshot()[1])
        probe.wait_for(lambda: False, timeout=1.0)
        assert len(probe.snapshot()[1]) == quiet_from, "cmd_vel kept publishing abstain"
        probe.say(TASK)
        cam = camera(probe).start()
        try:
            assert probe.wait_for(lambda: (0.25, 0.0, 0.0) in probe.snapshot()[1][quiet_from:], 30)
        finally:
            cam.stop()
        assert node.stop(signal.SIGTERM) == 0  # SIGTERM, like SIGINT, ends with the abstain action
        assert probe.wait_for(lambda: probe.certs()[-1]["reason"] == "shutdown", 10)
        assert probe.snapshot()[1][-1] == (0.0, 0.0, 0.0)


@pytest.mark.ros
def test_abstain_is_published_while_the_model_loads(ros_env, tmp_path):
    env = dict(ros_env, FAULT_POLICY_LOAD_S="4")
    with running_gate(env, tmp_path, FAULT_PARAMS) as (node, probe):
        loading = probe.wait_for(lambda: [d for d in probe.snapshot()[3] if d["phase"] == "loading"], 30)
        assert loading and loading[0]["state"] == "WARN"
        assert probe.wait_for(lambda: probe.snapshot()[1], 10)
        commands, twists, _, diagnostics = probe.snapshot()
        assert not any(d["phase"] == "active" for d in diagnostics)  # still loading ...
        assert set(commands) == {"stop"} and set(twists) == {(0.0, 0.0, 0.0)}  # ... and abstaining
        assert probe.wait_ready()


@pytest.mark.ros
def test_a_model_that_fails_to_load_makes_the_node_exit_non_zero_naming_it(ros_env, tmp_path):
    params = merge(FAULT_PARAMS, {"model": {"path": "no_such_module:make_policy"}})
    with running_gate(ros_env, tmp_path, params) as (node, probe):
        assert node.wait(timeout=60) == 1
        assert "model_load_failed" in node.log() and "no_such_module" in node.log()


def _lifecycle(probe, transition_id):
    client = probe.node.create_client(ChangeState, "/rs_guard/change_state")
    assert client.wait_for_service(timeout_sec=30)
    future = client.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
    assert probe.wait_for(future.done, 60)
    return future.result().success


def _state(probe):
    client = probe.node.create_client(GetState, "/rs_guard/get_state")
    return probe.call(client, GetState.Request()).current_state.label


@pytest.mark.ros
def test_managed_node_loads_on_configure_gates_when_active_and_abstains_on_deactivate(ros_env, tmp_path):
    params = merge(FAULT_PARAMS, {"node": {"managed": True}})
    with running_gate(ros_env, tmp_path, params) as (node, probe):
        assert probe.wait_connected()
        probe.say(TASK)
        cam = camera(probe).start()
        try:
            assert _state(probe) == "unconfigured"
            assert probe.wait_for(lambda: [d for d in probe.snapshot()[3] if d["phase"] == "unconfigured"], 10)
            assert not _decisions(probe)  # not configured: no decisions
            assert _lifecycle(probe, Transition.TRANSITION_CONFIGURE) and _state(probe) == "inactive"
            assert _lifecycle(probe, Transition.TRANSITION_ACTIVATE) and _state(probe) == "active"
            assert probe.wait_for(lambda: _decisions(probe, certified=True), 30)
            assert _lifecycle(probe, Transition.TRANSITION_DEACTIVATE) and _state(probe) == "inactive"
            event = probe.wait_for(lambda: [c for c in probe.certs() if c["source"] == "lifecycle"], 10)
            assert event and event[0]["command"] == "stop" and event[0]["reason"] == "inactive"
            assert probe.wait_for(lambda: probe.snapshot()[1] and probe.snapshot()[1][-1] == (0.0, 0.0, 0.0), 10)
            n = len(probe.certs())
            probe.wait_for(lambda: False, timeout=1.0)
            assert not _decisions(probe, n)  # inactive: the camera is ignored
        finally:
            cam.stop()


def test_issue15_4_activation_after_shutdown_began_is_refused(ros_env, tmp_path, monkeypatch):
    """close() (SIGINT/SIGTERM) can land between configure and activate (the unmanaged start-up
    thread runs one after the other): the activation must fail and the node stay finalised,
    never start gating after its last abstain. A real node, in this process."""
    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn

    from rs_guard_ros.ros.node import RsGuardNode

    monkeypatch.syspath_prepend(str(PEERS))  # the fault injector's plugin module
    params = write_params(tmp_path / "gate.yaml", merge(FAULT_PARAMS, {"node": {"managed": True}}))
    argv = ["rs_guard_node", "--ros-args", "--params-file", str(params)]
    context = rclpy.Context()
    rclpy.init(args=argv, context=context)
    try:
        node = RsGuardNode(argv, context=context)
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.close()  # shutdown begins: the abstain action is the last word
        assert node.trigger_activate() != TransitionCallbackReturn.SUCCESS
        assert node._ctx.phase == "finalized"
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


# ---------------------------------------------------------------------------
# Start-up: --help/--version without ROS, and the speed report
# ---------------------------------------------------------------------------

def test_node_help_and_version_answer_without_starting_ros(ros_env):
    from rs_guard_ros import __version__

    version = subprocess.run([NODE_EXE, "--version"], env=ros_env, capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.strip() == f"rs_guard_node {__version__}"
    usage = subprocess.run([NODE_EXE, "--help"], env=ros_env, capture_output=True, text=True, timeout=60)
    assert usage.returncode == 0 and "--params-file" in usage.stdout and "rs-guard doctor" in usage.stdout
    assert "rs_guard" not in usage.stderr  # no node came up, nothing was logged


@pytest.mark.ros
def test_the_node_logs_the_doctor_summary_at_start_up_and_warns_for_a_threshold_it_cannot_meet(ros_env, tmp_path):
    params = merge(FAST, FAULT_MODEL, {"node": {"startup_report": True, "decision_deadline": 0.001}})
    with running_gate(ros_env, tmp_path, params) as (node, probe):
        assert probe.wait_connected() and probe.wait_ready(), "the node did not come up"
        log = node.log()
    assert "samples/s" in log and "n_min" in log
    assert any("WARN" in line and "advice: forward" in line for line in log.splitlines()), log[-3000:]


@pytest.mark.ros
def test_the_start_up_check_runs_on_the_first_camera_frames_not_on_a_probe_frame(ros_env, tmp_path):
    """The start-up report leaves its check to the first 5 decisions that ran the model on frames
    from the camera (a grey probe frame may be one the model cannot answer): one line, logged once."""
    params = merge(FAST, FAULT_MODEL, {"node": {"startup_report": True, "max_frame_age": 30.0, "command_ttl": 30.0,
                                                "decision_deadline": 30.0}})
    with running_gate(ros_env, tmp_path, params) as (node, probe):
        cam = camera(probe)
        try:
            assert probe.wait_connected() and probe.wait_ready(), "the node did not come up"
            assert "check: on the first decisions on the camera's own frames" in node.log()
            probe.say(TASK)
            cam.start()
            assert probe.wait_for(lambda: len([c for c in _decisions(probe) if c["n_used"] > 0]) >= 6, 120)
            assert probe.wait_for(lambda: "start-up check on camera frames" in node.log(), 30), node.log()[-3000:]
        finally:
            cam.stop()
        log = node.log()
    assert log.count("start-up check on camera frames") == 1
    line = next(line for line in log.splitlines() if "start-up check on camera frames" in line)
    assert "the first 5 decisions that ran the model" in line and "within every time bound" in line, line
