"""Issue 9, defects 2 and 5, on a real node in its own process.

Defect 2 (fail-open configuration): whatever the node is given but cannot apply -- a
parameter file whose node names do not match this node, an unknown parameter, a ROS
parameter of the wrong type -- stops it at start-up with exit code 2 naming the file or
the parameter; a file that does apply shows up over the parameter services, declared with
its descriptions, through public rclpy APIs only.

Defect 5 (one decision, one configuration): run-time changes are validated, applied
between decisions, and each record reports the settings its decision actually ran under.
"""
import subprocess
from pathlib import Path

import pytest

from ros_peers.gate_probe import (FAST, FAULT_MODEL, NODE_EXE, calls_file, camera, merge, model_calls, rgb_frame,
                                  running_gate, write_params)

PARAMS = merge(FAST, FAULT_MODEL, {"node": {"diagnostics_period": 0.2}})
PACKAGE = Path(__file__).resolve().parents[1] / "rs_guard_ros"
TASK = "go to the red box"


def _start(ros_env, *ros_args) -> subprocess.CompletedProcess:
    return subprocess.run([str(NODE_EXE), "--ros-args", *ros_args], env=ros_env, capture_output=True, text=True,
                          timeout=60)


def _decisions(probe, start=0, certified=None):
    return [c for c in probe.certs()[start:] if c.get("source") == "decision"
            and (certified is None or c["certified"] == certified)]


# ---------------------------------------------------------------------------
# Defect 2: nothing given is silently ignored
# ---------------------------------------------------------------------------

@pytest.mark.ros
@pytest.mark.parametrize("top_key,ros_args", [
    ("other_node", ()),  # written for another node
    ("rs_gaurd", ()),  # a typo
    ("rs_guard", ("-r", "__ns:=/tb1")),  # the bare name does not match a namespaced node
    ("rs_guard", ("-r", "__node:=gate")),  # nor a renamed one
])
def test_defect2_a_parameter_file_for_another_node_stops_the_node_naming_the_file(ros_env, tmp_path, top_key,
                                                                                  ros_args):
    path = write_params(tmp_path / "robot.yaml", {"smoothing": {"sigma": 0.3}}, node_name=top_key)
    run = _start(ros_env, "--params-file", str(path), *ros_args)
    assert run.returncode == 2
    assert f"parameter file {path}" in run.stdout + run.stderr


@pytest.mark.ros
@pytest.mark.parametrize("ros_args,name", [
    (("-p", "smothing.sigma:=0.3"), "smothing.sigma"),  # unknown, on the command line
    (("-p", "use_sim_time:=1"), "use_sim_time"),  # rclpy's own, of the wrong type: would run on wall time
    (("-p", "qos_overrides./cmd_vel.publisher.depth:=5"), "qos_overrides./cmd_vel.publisher.depth"),  # not used
])
def test_defect2_a_parameter_given_but_not_applicable_exits_2_naming_it(ros_env, tmp_path, ros_args, name):
    run = _start(ros_env, *ros_args)
    assert run.returncode == 2
    assert f"'{name}'" in run.stdout + run.stderr


@pytest.mark.ros
def test_defect2_parameter_files_are_applied_through_public_rclpy_apis(ros_env, tmp_path):
    from rs_guard_ros import config

    private = subprocess.run(["grep", "-rn", "--include=*.py", "_parameter_overrides", str(PACKAGE)],
                             capture_output=True, text=True)
    assert private.stdout == "", f"the package reads rclpy's private parameter store:\n{private.stdout}"
    spec = {s.name: s for s in config.param_specs()}
    robot = write_params(tmp_path / "robot.yaml", merge(PARAMS, {"smoothing": {"sigma": 0.3, "alpha": 0.002},
                                                                 "commands": {"left": {"radius_threshold": 0.2}}}),
                         node_name="/**/rs_guard")
    shared = write_params(tmp_path / "shared.yaml", {"node": {"publish_rate": 20.0}}, node_name="/**")
    with running_gate(ros_env, tmp_path, None, param_files=(robot, shared), ros_args=("-r", "__ns:=/tb1"),
                      node_ns="/tb1/rs_guard") as (node, probe):
        sigma, alpha, left, rate, n0 = probe.get_parameters(
            "smoothing.sigma", "smoothing.alpha", "commands.left.radius_threshold", "node.publish_rate", "smoothing.n0")
        assert (sigma.double_value, alpha.double_value, left.double_value, rate.double_value, n0.integer_value) == (
            0.3, 0.002, 0.2, 20.0, 16)
        sigma_d, path_d = probe.describe_parameters("smoothing.sigma", "model.path")  # re-declared with descriptors
        assert sigma_d.description == spec["smoothing.sigma"].description and not sigma_d.read_only
        assert path_d.read_only
        assert node.alive()


# ---------------------------------------------------------------------------
# Defect 5: records report the settings of their decision
# ---------------------------------------------------------------------------

@pytest.mark.ros
def test_defect5_each_record_reports_the_settings_its_decision_ran_under(ros_env, tmp_path):
    params = merge(PARAMS, {"node": {"max_frame_age": 30.0, "command_ttl": 30.0, "decision_deadline": 30.0}})
    env = dict(ros_env, FAULT_POLICY_CALLS=str(calls_file(tmp_path)))
    frame = rgb_frame()

    def decide(stamp, each=None):
        return probe.wait_for(lambda: [c for c in _decisions(probe) if c["stamp"] == stamp], 60, 0.05, each)

    with running_gate(env, tmp_path, params) as (node, probe):
        assert probe.wait_connected() and probe.wait_ready()
        probe.say("hang 1.5")  # each model call takes 1.5 s, then certifies `forward`
        # Frame A is decided under sigma 0.25 / forward threshold 0.25; both change while it is in flight.
        stamp_a = probe.send_frame(frame, probe.now())
        assert probe.wait_for(lambda: model_calls(tmp_path) >= 1, 30, 0.02,
                              lambda: probe.send_frame(frame, stamp_a)), "decision A never started"
        results = probe.set_parameters(smoothing__sigma=0.3, commands__forward__radius_threshold=0.3)
        assert all(r.successful for r in results)
        a = decide(stamp_a)[0]  # the first decision on A (a re-sent copy may follow, under the new settings)
        stamp_b = probe.send_frame(frame, probe.now())
        (b,) = decide(stamp_b, lambda: probe.send_frame(frame, stamp_b))[:1]
        for record, sigma, threshold in ((a, 0.25, 0.25), (b, 0.3, 0.3)):
            settings, certificate = record["settings"], record["certificate"]
            assert record["certified"] and record["label"] == "forward"
            assert (settings["sigma"], settings["thresholds"]["forward"]) == (sigma, threshold)
            assert (certificate["sigma"], certificate["radius_threshold"], record["threshold"]) == (
                sigma, threshold, threshold)
            assert (settings["alpha"], settings["n_max"], settings["oracle_error"]) == (0.001, 200, 0.0)
            assert (certificate["alpha"], certificate["n_max"]) == (settings["alpha"], settings["n_max"])
            for key in ("sigma", "alpha", "oracle_error", "oracle_error_alpha", "n_max", "mode"):  # nothing contradicts
                assert record.get(key, settings[key]) == settings[key], key


@pytest.mark.ros
def test_defect5_an_uncertifiable_threshold_set_at_run_time_is_refused_and_gating_goes_on(ros_env, tmp_path):
    with running_gate(ros_env, tmp_path, PARAMS) as (node, probe):
        assert probe.wait_connected() and probe.wait_ready()
        probe.say(TASK)
        cam = camera(probe).start()
        try:
            assert probe.wait_for(lambda: _decisions(probe, certified=True), 30)
            (result,) = probe.set_parameters(commands__forward__radius_threshold=2.0)  # sigma 0.25, n_max 200
            assert not result.successful
            assert "commands.forward.radius_threshold" in result.reason and "n_max" in result.reason
            (value,) = probe.get_parameters("commands.forward.radius_threshold")
            assert value.double_value == 0.25  # unchanged
            n = len(probe.certs())
            later = probe.wait_for(lambda: _decisions(probe, n, certified=True), 30)
            assert later and later[0]["settings"]["thresholds"]["forward"] == 0.25
            assert node.alive()
        finally:
            cam.stop()


@pytest.mark.ros
def test_an_oracle_error_bound_is_reported_with_its_level_in_records_and_diagnostics(ros_env, tmp_path):
    with running_gate(ros_env, tmp_path, PARAMS) as (node, probe):
        assert probe.wait_connected() and probe.wait_ready()
        probe.say(TASK)
        cam = camera(probe).start()
        try:
            assert probe.wait_for(lambda: _decisions(probe, certified=True), 30)
            assert not any("oracle_error_alpha" in d for d in probe.snapshot()[3])  # exact oracle: no alpha_O
            (early,) = probe.set_parameters(oracle__error=0.01)
            assert not early.successful and "oracle.error_alpha" in early.reason  # a bound needs its level
            results = probe.set_parameters(oracle__error_alpha=0.05, oracle__error=0.01)
            assert all(r.successful for r in results)
            n_certs, n_diag = len(probe.certs()), len(probe.snapshot()[3])
            later = probe.wait_for(lambda: _decisions(probe, n_certs, certified=True), 30)
            assert later and (later[0]["settings"]["oracle_error"], later[0]["settings"]["oracle_error_alpha"]) == (
                0.01, 0.05)
            diagnostics = probe.wait_for(lambda: [d for d in probe.snapshot()[3][n_diag:] if "oracle_error" in d], 10)
            assert diagnostics and (float(diagnostics[0]["oracle_error"]), float(diagnostics[0]["oracle_error_alpha"]),
                                    float(diagnostics[0]["alpha"])) == (0.01, 0.05, 0.001)
        finally:
            cam.stop()


# ---------------------------------------------------------------------------
# Issue 15 (3): at run time the guarantee only tightens, and every change is seen
# ---------------------------------------------------------------------------

@pytest.mark.ros
def test_issue15_3_run_time_changes_may_only_tighten_and_each_is_logged_and_counted(ros_env, tmp_path):
    with running_gate(ros_env, tmp_path, PARAMS) as (node, probe):
        assert probe.wait_connected() and probe.wait_ready()
        looser = {name: probe.set_parameters(**{name: value})[0] for name, value in (
            ("smoothing__alpha", 0.01),  # 10x the false-certification budget
            ("node__max_frame_age", 0.9),
            ("node__decision_deadline", 0.0),  # no deadline at all
            ("commands__forward__radius_threshold", 0.1),
        )}
        for name, result in looser.items():
            assert not result.successful, name
            assert f"'{name.replace('__', '.')}': may only be" in result.reason and "restart" in result.reason
        (tighter,) = probe.set_parameters(smoothing__alpha=0.0005)
        assert tighter.successful
        (alpha, age) = probe.get_parameters("smoothing.alpha", "node.max_frame_age")
        assert (alpha.double_value, age.double_value) == (0.0005, 0.5)
        counted = probe.wait_for(lambda: [d for d in probe.snapshot()[3] if d.get("parameter_changes") == "1"], 30)
        assert counted and "smoothing.alpha 0.001 -> 0.0005" in counted[-1]["last_parameter_change"]
        assert probe.wait_for(lambda: "run-time parameter change: smoothing.alpha 0.001 -> 0.0005" in node.log(), 30)
