"""The `rs-guard` command line: every subcommand answers --help and --json."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from rs_guard_ros import certify, cli, config, param_files, planning


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rs_guard_ros.cli", *args], capture_output=True, text=True)


def test_plan_json_gives_n_min_and_p_required_of_the_planning_law():
    out = run("plan", "--sigma", "0.25", "--radius", "0.5", "--alpha", "0.001", "--json")
    result = json.loads(out.stdout)
    assert result["n_min"] == 301 and result["p_required"] == pytest.approx(0.97725, abs=1e-5)
    row = result["table"][0]
    assert row["n"] == 301 and row["max_radius"] >= 0.5


def test_plan_table_matches_exact_outlook():
    result = planning.plan(0.25, 0.5, 0.001, 0.01)
    row = next(r for r in result["table"] if r["n"] == 10_000)
    exact = certify.outlook(0.99, 10_000, 0.25, 0.001, 0.5, 0.01)
    assert row["p=0.99"]["certify_probability"] == pytest.approx(exact.certify_probability)


def test_plan_human_output_names_the_figures():
    out = run("plan", "--sigma", "0.25", "--radius", "0.5")
    assert out.returncode == 0 and "n_min = 301" in out.stdout and "p* = 0.977250" in out.stdout


def test_plan_of_an_uncertifiable_radius_fails_with_a_message_not_a_traceback():
    out = run("plan", "--sigma", "0.25", "--radius", "5", "--oracle-error", "0.1")
    assert out.returncode == 2 and "not certifiable" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("sub", ["plan", "certify", "calibrate-oracle", "bench", "doctor", "eval", "attack", "examples",
                                 "demo"])
def test_every_subcommand_has_help(sub):
    out = run(sub, "--help")
    assert out.returncode == 0 and "--json" in out.stdout


@pytest.mark.timeout(300)
@settings(max_examples=40, deadline=None)
@given(st.floats(1e-4, 4.0), st.floats(0.0, 10.0), st.sampled_from([1e-9, 1e-6, 1e-3, 0.1]), st.floats(0.0, 0.3))
def test_defect1_plan_answers_for_every_sigma_and_radius_up_to_ten_sigma(sigma, radius_in_sigmas, alpha, eps):
    """Bounded work (the old planner hung at R = 2, sigma = 0.25 and allocated 52 GiB at R = 1.5);
    no probability above 1 and no radius, exact or approximate, below 0."""
    try:
        result = planning.plan(sigma, radius_in_sigmas * sigma, alpha, eps)
    except ValueError as exc:
        assert "not certifiable" in str(exc)  # p* + eps_O is 1 to double precision
        return
    assert result["n_min"] >= 1 and result["within_budget"] == (result["n_min"] <= certify.MAX_SAMPLES)
    for row in result["table"]:
        assert row["n"] <= certify.MAX_SAMPLES and 0.0 <= row["approx_radius_ratio"] <= 1.0
        for p in planning.PLAN_P_TRUE:
            cell = row[f"p={p}"]
            assert 0.0 <= cell["certify_probability"] <= 1.0 and 0.0 <= cell["sequential_certify_probability"] <= 1.0
            assert cell["expected_radius"] >= 0.0 and cell["approx_expected_radius"] >= 0.0
            assert 0.0 <= cell["sequential_expected_samples"] <= row["n"]


def test_plan_of_a_radius_beyond_every_budget_says_so_and_gives_the_largest_certifiable_radius():
    out = run("plan", "--sigma", "0.25", "--radius", "2.0", "--alpha", "5e-4")
    assert out.returncode == 0 and "exceeds the largest sample budget" in out.stdout


# ----------------------------------------------------------------------------- version, exit status, errors
DEMO = ("--model.cpu_threads", "1", "--model.device", "cpu", "--smoothing.seed", "0")


def test_version_is_the_installed_package_version():
    from importlib.metadata import version

    import rs_guard_ros

    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"rs-guard {version('rs_guard_ros')}"
    assert rs_guard_ros.__version__ == version("rs_guard_ros")


def test_exit_status_is_documented_in_help():
    assert "1 when the gate abstained" in run("--help").stdout and "doctor: 3" in run("--help").stdout
    certify_help = " ".join(run("certify", "--help").stdout.split())
    assert "exit status: 0 the command was certified" in certify_help and "1 the gate abstained" in certify_help
    assert "2 error" in certify_help
    assert "3 some cannot" in " ".join(run("doctor", "--help").stdout.split())


@pytest.mark.timeout(300)
def test_certify_exits_0_when_certified_and_1_when_it_abstains_printing_the_decision_both_times():
    ok = run("certify", "--image", "examples/left_2.png", "--instruction", "go to the red box", "--json", *DEMO)
    assert ok.returncode == cli.EXIT_OK == 0, ok.stderr
    assert json.loads(ok.stdout)["certified"] is True
    assert "Loading weights" not in ok.stderr and ok.stderr == ""  # transformers' loading bar is silenced
    abstain = run("certify", "--image", "examples/noise.png", "--instruction", "go to the red box", *DEMO)
    assert abstain.returncode == cli.EXIT_ABSTAIN == 1 and abstain.stdout.startswith("stop: ABSTAIN")


def one_line_error(out: subprocess.CompletedProcess, sub: str = "certify") -> str:
    """The run failed with exit status 2 and exactly one line on stderr (no traceback, no usage dump)."""
    assert out.returncode == cli.EXIT_ERROR == 2 and out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rs-guard {sub}: error: "), out.stderr
    return lines[0]


def test_invalid_yaml_in_config_is_one_line_naming_the_file_and_line(tmp_path):
    bad = tmp_path / "robot.yaml"
    bad.write_text("rs_guard:\n  ros__parameters:\n    smoothing:\n      sigma: 0.25\n     alpha: 0.1\n")
    line = one_line_error(run("certify", "--image", "examples/left_2.png", "--instruction", "go",
                              "--config", str(bad)))
    assert f"parameter file {bad} line 5, column 6: " in line


def test_a_missing_config_file_is_one_line():
    line = one_line_error(run("certify", "--image", "examples/left_2.png", "--instruction", "go",
                              "--config", "/nonexistent/robot.yaml"))
    assert line.endswith("--config /nonexistent/robot.yaml: no such file")


@pytest.mark.parametrize("image, why", [("/nonexistent/frame.png", "no such file"),
                                        ("examples", "is a directory"),
                                        ("examples/frames.csv", "not a readable image file")])
def test_a_missing_or_unreadable_image_is_one_line_without_opencv_warnings(image, why):
    line = one_line_error(run("certify", "--image", image, "--instruction", "go"))
    assert f"--image {image}: {why}" in line  # and no "[ WARN" line from OpenCV: one_line_error saw one line


def test_a_usage_error_is_one_line_not_the_whole_usage():
    line = one_line_error(run("certify", "--image", "x.png"))
    assert "--instruction" in line and "see rs-guard certify --help" in line
    line = one_line_error(run("doctor", "--smoothing.sigma", "abc"), "doctor")
    assert "invalid float value: 'abc'" in line


def test_error_line_flattens_any_multi_line_message():
    assert cli.error_line(ValueError("first\n  second\tthird")) == "first second third"
    assert "needs the Python package 'art'" in cli.error_line(ModuleNotFoundError("No module named 'art'", name="art"))


@pytest.mark.timeout(300)
def test_examples_json_is_one_object_on_stdout_with_progress_on_stderr():
    out = run("examples", "--json", *DEMO)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert len(result["frames"]) == 13 and result["wrong_certified"] == 0
    assert "rs-guard examples: 100%" in out.stderr and "13/13" in out.stderr
    quiet = run("examples", "--no-progress", *DEMO)
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_each_command_has_flags_for_its_parameters_even_from_a_config_files_command_set(tmp_path):
    args = cli.build_parser().parse_args(["certify", "--image", "x.png", "--instruction", "go",
                                          "--commands.forward.radius_threshold", "0.5"])
    assert cli.config_from_args(args).thresholds()["forward"] == 0.5
    params = tmp_path / "robot.yaml"
    params.write_text("/**:\n  ros__parameters:\n    commands:\n      names: [go, halt]\n      abstain: halt\n"
                      "      go: {linear_x: 0.2, phrases: [go]}\n      halt: {phrases: [halt]}\n")
    argv = ["certify", "--image", "x.png", "--instruction", "go", "--config", str(params),
            "--commands.go.radius_threshold", "0.3", "--model.state", "0.5, 1"]
    args = cli.build_parser(cli.command_names(argv)).parse_args(argv)
    cfg = cli.config_from_args(args)
    assert cfg.thresholds() == {"go": 0.3, "halt": 0.0} and cfg.model.state == (0.5, 1.0)


# ---------------------------------------------------------------------------
# Issue 15, item 6: the CLI reads every file the node runs with
# ---------------------------------------------------------------------------

SHIPPED = sorted((Path(__file__).resolve().parents[1] / "config").glob("*.yaml"))
ROS_OWN = "/**:\n  ros__parameters:\n    use_sim_time: false\n    start_type_description_service: true\n"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_item6_every_shipped_file_and_ros_own_parameters_load_in_the_cli(tmp_path, path):
    ros_own = tmp_path / "ros_own.yaml"
    ros_own.write_text(ROS_OWN)
    argv = ["doctor", "--config", str(path), "--config", str(ros_own)]
    cfg = cli.config_from_args(cli.build_parser(cli.command_names(argv)).parse_args(argv))
    assert cfg == param_files.load_config(path)


def test_item6_ros_own_parameters_must_be_true_or_false_in_the_cli_as_in_the_node(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(ROS_OWN.replace("true", "1"))
    with pytest.raises(config.ConfigError, match="parameter 'start_type_description_service': expected true or false"):
        param_files.load_config(bad)


@pytest.mark.timeout(300)
def test_item6_doctor_runs_with_a_file_that_sets_ros_own_parameters(tmp_path):
    ros_own = tmp_path / "ros_own.yaml"
    ros_own.write_text(ROS_OWN)
    out = run("doctor", "--config", str(ros_own), "--model.device", "cpu", "--smoothing.batch_size", "32",
              "--repeats", "1", "--no-progress")
    assert out.returncode in (0, 3), out.stderr  # 3: this machine is too slow for the deadline, not an error
    assert "model transformers:demo_vla" in out.stdout and "\nstop " in out.stdout


# ---------------------------------------------------------------------------
# Issue 15, item 11: rs-guard plan
# ---------------------------------------------------------------------------

def test_plan_says_more_than_ten_to_the_k_for_an_astronomical_n_min():
    out = run("plan", "--sigma", "0.25", "--radius", "5")
    n_min = certify.samples_needed(5, 0.25, 0.001)
    assert out.returncode == 0 and f"n_min = more than 10^{len(str(n_min)) - 1}\n" in out.stdout
    assert str(n_min) not in out.stdout
    assert json.loads(run("plan", "--sigma", "0.25", "--radius", "5", "--json").stdout)["n_min"] == n_min  # exact


@pytest.mark.parametrize("flag,value,name", [
    ("--alpha", "0.7", "smoothing.alpha"), ("--alpha", "0", "smoothing.alpha"), ("--sigma", "5", "smoothing.sigma"),
    ("--oracle-error", "0.5", "oracle.error")])
def test_plan_refuses_what_the_node_refuses_with_config_pys_range(flag, value, name):
    spec = next(s for s in config.param_specs() if s.name == name)
    with pytest.raises(config.ConfigError):
        config.coerce(spec, float(value))  # the node's rule
    args = {"--sigma": "0.25", "--radius": "0.5", flag: value}
    line = one_line_error(run("plan", *(a for kv in args.items() for a in kv)), "plan")
    assert f"argument {flag}: parameter '{name}': must be in [{spec.low}, {spec.high}]" in line


def test_plan_prints_p_star_with_the_oracle_error_when_there_is_one():
    with_eps = run("plan", "--sigma", "0.25", "--radius", "0.5", "--oracle-error", "0.01")
    assert with_eps.returncode == 0 and "p* + eps_O = 0.987250" in with_eps.stdout
    assert json.loads(run("plan", "--sigma", "0.25", "--radius", "0.5", "--oracle-error", "0.01", "--json").stdout)[
        "p_required_with_oracle_error"] == pytest.approx(0.97725 + 0.01, abs=1e-5)
    assert "eps_O" not in run("plan", "--sigma", "0.25", "--radius", "0.5").stdout


def test_issue16_plan_prints_both_selection_paths_with_their_samples_and_p_star():
    out = run("plan", "--sigma", "0.25", "--radius", "0.25", "--n0", "32", "--n-max", "500", "--json")
    result = json.loads(out.stdout)
    sel = result["selection"]
    assert (sel["n0"], sel["n_max"], sel["mode"], sel["previous_share"]) == (32, 500, "sequential",
                                                                            certify.PREVIOUS_SHARE)
    exact = certify.selection_paths(0.99, 0.25, 0.25, 0.001, 32, 500)
    for path in certify.SELECTION_PATHS:
        assert sel["paths"][path]["p=0.99"]["expected_samples"] == pytest.approx(exact[path].expected_samples)
        assert sel["paths"][path]["n_min"] == exact[path].n_min
    assert sel["paths"]["previous"]["samples_first_look"] == 50 and sel["paths"]["samples"]["samples_first_look"] == 82
    text = run("plan", "--sigma", "0.25", "--radius", "0.25", "--n-max", "500").stdout
    assert "p* = 0.841345, per selection path" in text
    assert any(line.split()[:5] == ["previous", "0.00099", "0", "41", "50"] for line in text.splitlines())
    assert any(line.split()[:5] == ["samples", "0.001", "32", "40", "82"] for line in text.splitlines())


# ---------------------------------------------------------------------------
# Issue 17 §4: one image per camera, and the joint state
# ---------------------------------------------------------------------------
TWO_VIEW = """/**:
  ros__parameters:
    model: {backend: plugin, path: "two_view_policy:make_policy", device: cpu}
    cameras:
      names: [front, rear]
    state: {topic: joint_states, joint_names: [left_wheel, right_wheel]}
    smoothing: {seed: 1}
"""


@pytest.fixture
def two_view(tmp_path):
    """A two-camera config with a joint state (tests/ros_peers/two_view_policy.py, a STAND-IN that
    says "turn left" when the rear view is brighter) and its images; runs rs-guard with it."""
    import os

    import cv2
    import numpy as np

    (tmp_path / "two.yaml").write_text(TWO_VIEW)
    for name, level, size in (("dark", 60, 48), ("bright", 220, 48), ("tiny", 60, 8)):
        cv2.imwrite(str(tmp_path / f"{name}.png"), np.full((size, size + 16, 3), level, np.uint8))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent / "ros_peers")}

    def certify_with(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "rs_guard_ros.cli", "certify", "--config",
                               str(tmp_path / "two.yaml"), "--instruction", "go", *args], capture_output=True,
                              text=True, env=env, cwd=tmp_path)
    return certify_with


def test_issue17_certify_takes_one_image_per_camera_and_the_joint_state(two_view, tmp_path):
    """Each image reaches its own camera (a brighter rear view turns the stand-in left), and the
    state as NAME=VALUE pairs or a JSON file."""
    state = "--state", "right_wheel=-2.5,left_wheel=0.5,caster=9"
    ahead = two_view("--image", "front=dark.png", "--image", "rear=dark.png", *state, "--json")
    assert ahead.returncode == 0, ahead.stderr
    assert json.loads(ahead.stdout)["command"] == "forward"
    (tmp_path / "state.json").write_text('{"left_wheel": 0.5, "right_wheel": -2.5}')
    behind = two_view("--image", "rear=bright.png", "--image", "front=dark.png", "--state", "state.json", "--json")
    assert behind.returncode == 0, behind.stderr
    assert json.loads(behind.stdout)["command"] == "left"


STATE = ("--state", "left_wheel=0,right_wheel=0")


@pytest.mark.parametrize("args,message", [
    (("--image", "front=dark.png", *STATE), "--image: nothing for camera 'rear'"),
    (("--image", "dark.png", "--image", "rear=dark.png", *STATE),
     "--image dark.png: 2 cameras (front, rear): give one --image CAMERA=PATH each"),
    (("--image", "front=dark.png", "--image", "rear=none.png", *STATE),
     "--image (camera 'rear') none.png: no such file"),
    (("--image", "front=dark.png", "--image", "rear=tiny.png", *STATE),
     "camera 'rear': frame 8x24 is smaller than the model input 24x32"),
    (("--image", "front=dark.png", "--image", "rear=dark.png", "--state", "left_wheel=1"),
     "--state: malformed_state: joint 'right_wheel' is not in the joint state"),
    (("--image", "front=dark.png", "--image", "rear=dark.png"), "--state is required: the model reads the joint state"),
])
def test_issue17_a_missing_unreadable_or_wrong_sized_view_or_a_bad_state_is_one_line_naming_it(two_view, args,
                                                                                               message):
    assert message in one_line_error(two_view(*args))


def test_issue17_a_one_camera_config_keeps_its_plain_image_and_refuses_a_state_it_does_not_read():
    ok = run("certify", "--image", "examples/left_2.png", "--instruction", "go to the red box", "--json", *DEMO)
    same = run("certify", "--image", "camera=examples/left_2.png", "--instruction", "go to the red box", "--json",
               *DEMO)
    assert ok.returncode == same.returncode == 0
    assert json.loads(ok.stdout)["command"] == json.loads(same.stdout)["command"] == "left"
    line = one_line_error(run("certify", "--image", "examples/left_2.png", "--instruction", "go", "--state", "a=1"))
    assert "--state: this configuration's model reads no joint state (state.topic is empty)" in line
