"""Issue 15, items 6, 8 and 10, on a real rs_guard_node in its own process.

(6) ROS's own parameters (use_sim_time, start_type_description_service) are one list, shared
    with the CLI: every shipped parameter file, and a file that sets them, loads in the node.
(8) A `-p` override goes through the same validation as a file, also over a parameter file
    whose value has another type (rcl keeps one slot per type and rclpy reads the first set
    one, so such an override used to be dropped without a word): exit 2 naming it.
(10) Every start-up failure is one line on the log and exit code 2, never a traceback.
"""
import subprocess
from pathlib import Path

import pytest

from ros_peers.gate_probe import NODE_EXE, running_gate, write_params

ROOT = Path(__file__).resolve().parents[1]
SIM = ROOT / "config" / "sim_diffdrive.yaml"
SHIPPED = sorted((ROOT / "config").glob("*.yaml"))
ROS_OWN = {"use_sim_time": False, "start_type_description_service": True}


def _start(ros_env, *ros_args) -> subprocess.CompletedProcess:
    return subprocess.run([str(NODE_EXE), "--ros-args", *ros_args], env=ros_env, capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def _one_line(run: subprocess.CompletedProcess) -> str:
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in lines[0], run.stdout + run.stderr
    return lines[0]


@pytest.mark.ros
@pytest.mark.parametrize("override,name", [
    ("smoothing.n_max:=abc", "smoothing.n_max"),  # a string over the file's integer 500
    ("smoothing.sigma:=high", "smoothing.sigma"),  # a string over the file's double 0.25
    ("smoothing.n_max:=1000.0", "smoothing.n_max"),  # a double over the file's integer
    ("commands.forward.radius_threshold:=0,3", "commands.forward.radius_threshold"),  # a decimal comma: a string
])
def test_item8_a_wrong_typed_override_over_a_parameter_file_exits_2_naming_it(ros_env, override, name):
    run = _start(ros_env, "--params-file", str(SIM), "-p", override)
    assert run.returncode == 2
    assert f"parameter '{name}'" in _one_line(run)


@pytest.mark.ros
def test_item8_a_well_typed_override_over_a_parameter_file_is_the_value_the_node_runs_with(ros_env, tmp_path):
    with running_gate(ros_env, tmp_path, None, param_files=(SIM,),
                      ros_args=("-p", "node.managed:=true", "-p", "smoothing.n_max:=300",
                                "-p", "commands.forward.radius_threshold:=0.3")) as (node, probe):
        n_max, forward = probe.get_parameters("smoothing.n_max", "commands.forward.radius_threshold")
        assert (n_max.integer_value, forward.double_value) == (300, 0.3)
        assert node.alive()


@pytest.mark.ros
@pytest.mark.parametrize("ros_args,names", [
    (("--params-file", "/nonexistent/robot.yaml"), ("parameter file /nonexistent/robot.yaml", "No such file")),
    (("--params-file", "config"), ("parameter file config", "Is a directory")),
    (("--params-file", "{bad_yaml}"), ("bad.yaml line 3, column 1",)),
    (("--params-file",), ("--params-file",)),  # no file after the flag
    (("-p", "model.path:="), ("parameter 'model.path'", "-p \"model.path:=''\"")),  # what a shell makes of :=''
    (("-p", "commands.names:=[]"), ("parameter 'commands.names'", "empty list")),  # rclpy cannot type it
    (("--params-file", "{empty_list}"), ("parameter 'commands.forward.phrases'", "empty list")),
    (("-p", "smoothing.sigma"), ("smoothing.sigma",)),  # not NAME:=VALUE
    (("-p", "smothing.sigma:=0.3"), ("parameter 'smothing.sigma'",)),
    (("--no-such-ros-flag",), ("--no-such-ros-flag",)),
])
def test_item10_every_start_up_failure_is_one_line_and_exit_2(ros_env, tmp_path, ros_args, names):
    bad, empty = tmp_path / "bad.yaml", tmp_path / "empty.yaml"
    bad.write_text("/**:\n  ros__parameters: [\n")
    write_params(empty, {"commands": {"forward": {"phrases": []}}}, node_name="/**")
    run = _start(ros_env, *(a.format(bad_yaml=bad, empty_list=empty) for a in ros_args))
    assert run.returncode == 2
    line = _one_line(run)
    assert "[FATAL]" in line and all(name in line for name in names), line


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_item6_every_shipped_file_and_ros_own_parameters_load_in_the_node(ros_env, tmp_path, path):
    """Managed, so the node applies its parameters and waits to be configured (no model is
    loaded: the real robots' models are not on this machine)."""
    from rs_guard_ros import param_files

    cfg = param_files.load_config(path)
    ros_own = write_params(tmp_path / "ros_own.yaml", ROS_OWN, node_name="/**")
    with running_gate(ros_env, tmp_path, None, param_files=(path, ros_own),
                      ros_args=("-p", "node.managed:=true")) as (node, probe):
        names, alpha, own = probe.get_parameters("commands.names", "smoothing.alpha", "start_type_description_service")
        assert tuple(names.string_array_value) == cfg.commands.names and alpha.double_value == cfg.smoothing.alpha
        assert own.bool_value is True
        assert node.alive()
