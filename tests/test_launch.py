"""launch/rs_guard.launch.py, checked without `launch`/`launch_ros` (no PyPI wheels exist):
it compiles, declares the documented arguments, names the real executable and package,
maps every robot to a shipped config file and remaps the node's real topic names. Where
`launch` is importable (a ROS 2 install), the launch description is also built."""
import ast
import importlib.util
import re
from pathlib import Path

import pytest

from rs_guard_ros import config, param_files
from rs_guard_ros.ros import node

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch" / "rs_guard.launch.py"
REQUIRED_ARGUMENTS = {"robot", "params_file", "namespace", "use_sim_time", "image_topic", "cmd_vel_topic",
                      "model_path", "device"}
ROBOTS = ("sim_diffdrive", "turtlebot4", "tiago", "default")


def _module() -> ast.Module:
    return ast.parse(LAUNCH.read_text(), filename=str(LAUNCH))


def _constant(name: str):
    """The literal value assigned to a module-level name."""
    for stmt in _module().body:
        if isinstance(stmt, ast.Assign) and any(getattr(t, "id", None) == name for t in stmt.targets):
            return ast.literal_eval(stmt.value)
    raise AssertionError(f"{name} is not assigned in {LAUNCH.name}")


def _function(name: str) -> ast.FunctionDef:
    return next(f for f in _module().body if isinstance(f, ast.FunctionDef) and f.name == name)


def test_launch_file_compiles():
    compile(LAUNCH.read_text(), str(LAUNCH), "exec")
    assert _function("generate_launch_description")


def test_launch_file_declares_the_documented_arguments():
    arguments = _constant("ARGUMENTS")
    assert REQUIRED_ARGUMENTS <= set(arguments)
    assert all(isinstance(default, str) and doc for default, doc in arguments.values())
    assert arguments["use_sim_time"][0] == "false"


def test_launch_file_runs_the_real_executable_of_the_real_package():
    assert _constant("PACKAGE") == re.search(r"<name>(\w+)</name>", (ROOT / "package.xml").read_text()).group(1)
    executable = _constant("EXECUTABLE")
    assert f'"{executable} = rs_guard_ros.ros.node:main"' in (ROOT / "setup.py").read_text()
    assert callable(node.main)
    assert _constant("NODE_NAME") == config.NODE_NAME  # so the config files' `rs_guard:` key applies


@pytest.mark.parametrize("robot", ROBOTS)
def test_every_robot_choice_has_a_shipped_config_that_setup_installs(robot):
    path = ROOT / "config" / f"{robot}.yaml"
    assert path.exists()
    param_files.load_config(path)
    assert '(f"share/{PACKAGE}/config", glob("config/*.yaml"))' in (ROOT / "setup.py").read_text()


def test_launch_file_default_robot_exists():
    assert (ROOT / "config" / f"{_constant('ARGUMENTS')['robot'][0]}.yaml").exists()


def test_remappings_target_the_nodes_own_topic_names():
    source = ast.get_source_segment(LAUNCH.read_text(), _function("remappings"))
    remapped = set(re.findall(r'\("([\w/]+)", ', source))
    assert remapped == {node.IMAGE_TOPIC, node.COMPRESSED_IMAGE_TOPIC, node.CMD_VEL_TOPIC}


def test_model_overrides_use_real_parameter_names():
    source = LAUNCH.read_text()
    names = {s.name for s in config.param_specs()}
    for override in re.findall(r'overrides\["([\w.]+)"\]', source):
        assert override in names or override == "use_sim_time"


# Executing the launch file against recording stand-ins for launch/launch_ros/ament_index
# (shared with the Gazebo launch test rather than copied).
from launch_stubs import launch_loader, run_launch  # noqa: E402


@pytest.fixture
def load_launch(monkeypatch):
    """Launch files imported against the fake launch APIs; the package share is the source tree."""
    return launch_loader(monkeypatch, {"rs_guard_ros": str(ROOT)})


@pytest.mark.parametrize("robot", ROBOTS)
def test_launching_a_robot_runs_the_node_on_its_config_with_the_remaps(load_launch, robot):
    declared, (action,) = run_launch(load_launch(LAUNCH), robot=robot, namespace="tb1", use_sim_time="true",
                                     image_topic="/cam/rgb", cmd_vel_topic="/mux/vla_vel",
                                     model_path="/opt/models/x", device="cuda:1")
    assert REQUIRED_ARGUMENTS <= set(declared)
    kw = action.kwargs
    assert (kw["package"], kw["executable"], kw["name"], kw["namespace"]) == (
        "rs_guard_ros", "rs_guard_node", config.NODE_NAME, "tb1")
    robot_file, overrides = kw["parameters"]
    assert Path(robot_file) == ROOT / "config" / f"{robot}.yaml"
    assert overrides == {"use_sim_time": True, "model.path": "/opt/models/x", "model.device": "cuda:1"}
    param_files.load_config(robot_file, overrides={k: v for k, v in overrides.items() if k != "use_sim_time"})
    assert dict(kw["remappings"]) == {node.IMAGE_TOPIC: "/cam/rgb", node.COMPRESSED_IMAGE_TOPIC: "/cam/rgb/compressed",
                                      node.CMD_VEL_TOPIC: "/mux/vla_vel"}


def test_launch_defaults_keep_the_robot_files_model_and_add_a_params_file(load_launch, tmp_path):
    extra = tmp_path / "extra.yaml"
    _, (action,) = run_launch(load_launch(LAUNCH), robot="tiago", params_file=str(extra))
    tiago, given, overrides = action.kwargs["parameters"]
    assert Path(tiago).name == "tiago.yaml" and given == str(extra) and overrides == {"use_sim_time": False}


@pytest.mark.skipif(importlib.util.find_spec("launch") is None or importlib.util.find_spec("launch_ros") is None,
                    reason="launch/launch_ros are not installable from PyPI; only a ROS 2 install provides them")
def test_launch_description_builds_where_launch_is_installed():  # pragma: no cover - needs a ROS 2 install
    spec = importlib.util.spec_from_file_location("rs_guard_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    declared = {a.name for a in description.get_launch_arguments()}
    assert REQUIRED_ARGUMENTS <= declared
