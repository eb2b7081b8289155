"""The Gazebo world, bridge and launch file fit together and fit the guard (Gazebo itself and
`launch` are not installable here, so these checks are structural).

The launch files are executed against small recording stand-ins for the `launch`,
`launch_ros` and `ament_index_python` APIs, with the source tree as the package share
(its config/ and launch/ layout is the installed one)."""
import ast
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from launch_stubs import launch_loader, run_launch
from rs_guard_ros import param_files
from rs_guard_ros.sim import world as mujoco_world

ROOT = Path(__file__).resolve().parent.parent
SDF = ROOT / "config" / "gazebo" / "rs_guard_room.sdf"
BRIDGE = ROOT / "config" / "gazebo" / "bridge.yaml"
LAUNCH = ROOT / "launch" / "gazebo_sim.launch.py"
GUARD_LAUNCH = ROOT / "launch" / "rs_guard.launch.py"
ROS_GZ_SIM_SHARE = "/opt/ros/share/ros_gz_sim"


# ----------------------------------------------------------------------------- world SDF
@pytest.fixture(scope="module")
def world() -> ET.Element:
    return ET.parse(SDF).getroot().find("world")


@pytest.fixture(scope="module")
def bridge() -> list[dict]:
    return yaml.safe_load(BRIDGE.read_text())


def plugins(element: ET.Element) -> dict[str, ET.Element]:
    return {p.get("filename"): p for p in element.findall("plugin")}


def bridged(bridge: list[dict], ros_type: str) -> dict:
    (entry,) = [e for e in bridge if e["ros_type_name"] == ros_type]
    return entry


def test_world_loads_the_gz_sim_systems_a_camera_needs(world):
    systems = plugins(world)
    expected = {"gz-sim-physics-system": "Physics", "gz-sim-sensors-system": "Sensors",
                "gz-sim-scene-broadcaster-system": "SceneBroadcaster",
                "gz-sim-user-commands-system": "UserCommands"}
    for filename, name in expected.items():
        assert systems[filename].get("name") == f"gz::sim::systems::{name}"
    assert systems["gz-sim-sensors-system"].findtext("render_engine") == "ogre2"


def test_robot_drives_two_revolute_wheel_joints_and_carries_the_mujoco_camera(world, bridge):
    robot = world.find("model[@name='rs_guard_robot']")
    drive = plugins(robot)["gz-sim-diff-drive-system"]
    assert drive.get("name") == "gz::sim::systems::DiffDrive"
    joints = {j.get("name"): j for j in robot.findall("joint")}
    for side in ("left_joint", "right_joint"):
        assert joints[drive.findtext(side)].get("type") == "revolute"
    assert drive.findtext("topic") == bridged(bridge, "geometry_msgs/msg/Twist")["gz_topic_name"]
    assert drive.findtext("odom_topic") == bridged(bridge, "nav_msgs/msg/Odometry")["gz_topic_name"]

    (camera,) = robot.iter("sensor")
    assert camera.get("type") == "camera"
    assert camera.findtext("topic") == bridged(bridge, "sensor_msgs/msg/Image")["gz_topic_name"]
    image = camera.find("camera/image")
    width, height = int(image.findtext("width")), int(image.findtext("height"))
    assert (width, height) == (128, 96) and image.findtext("format") == "R8G8B8"
    # same field of view as the MuJoCo camera: horizontal FOV from its vertical FOV and aspect
    hfov = 2 * math.atan(math.tan(math.radians(mujoco_world.CAMERA_FOVY) / 2) * width / height)
    assert float(camera.findtext("camera/horizontal_fov")) == pytest.approx(hfov, abs=1e-3)
    chassis_z = float(robot.find("link[@name='chassis']/pose").text.split()[2])
    x, _, z = (float(v) for v in camera.findtext("pose").split()[:3])
    assert (x, chassis_z + z) == pytest.approx((mujoco_world.CAMERA_FORWARD, mujoco_world.CAMERA_HEIGHT))


def _geometry(model: ET.Element) -> tuple[str, tuple[float, ...]]:
    geometry = model.find("link/visual/geometry")[0]
    if geometry.tag == "box":
        return "box", tuple(v / 2 for v in map(float, geometry.findtext("size").split()))
    if geometry.tag == "sphere":
        return "sphere", (float(geometry.findtext("radius")),)
    return geometry.tag, (float(geometry.findtext("radius")), float(geometry.findtext("length")) / 2)


@pytest.mark.parametrize("spec", mujoco_world.OBJECTS, ids=lambda s: s.name)
def test_world_has_each_mujoco_object_with_its_shape_size_and_colour(world, spec):
    model = world.find(f"model[@name='{spec.name.replace(' ', '_')}']")
    assert model is not None and model.findtext("static") == "true"
    assert _geometry(model) == (spec.shape, pytest.approx(spec.size))
    diffuse = tuple(map(float, model.findtext("link/visual/material/diffuse").split()))
    assert diffuse == pytest.approx(spec.rgba)
    resting_z = float(model.findtext("pose").split()[2])
    assert resting_z == pytest.approx(spec.half_height)


# ----------------------------------------------------------------------------- bridge
def test_bridge_types_and_directions_match_what_the_guard_subscribes_and_publishes(bridge):
    sim = param_files.load_config(ROOT / "config" / "sim_diffdrive.yaml")
    assert sim.node.image_transport == "raw", "the bridge delivers raw sensor_msgs/Image"
    assert sim.node.use_stamped is False, "the bridge and diff-drive take geometry_msgs/Twist"
    expected = {"sensor_msgs/msg/Image": ("gz.msgs.Image", "GZ_TO_ROS"),
                "rosgraph_msgs/msg/Clock": ("gz.msgs.Clock", "GZ_TO_ROS"),
                "geometry_msgs/msg/Twist": ("gz.msgs.Twist", "ROS_TO_GZ")}
    for ros_type, (gz_type, direction) in expected.items():
        entry = bridged(bridge, ros_type)
        assert (entry["gz_type_name"], entry["direction"]) == (gz_type, direction)
    assert bridged(bridge, "rosgraph_msgs/msg/Clock")["ros_topic_name"] == "/clock"
    allowed = {"ros_topic_name", "gz_topic_name", "ros_type_name", "gz_type_name", "direction"}
    assert all(set(entry) == allowed and entry["direction"] in ("GZ_TO_ROS", "ROS_TO_GZ") for entry in bridge)


# ----------------------------------------------------------------------------- launch
@pytest.fixture
def load_launch(monkeypatch):
    """Launch files imported against the fake launch APIs; the package share is the source tree."""
    return launch_loader(monkeypatch, {"rs_guard_ros": str(ROOT), "ros_gz_sim": ROS_GZ_SIM_SHARE})


def test_launch_file_compiles_and_uses_only_the_standard_launch_apis():
    source = LAUNCH.read_text()
    compile(source, str(LAUNCH), "exec")
    tree = ast.parse(source)
    names = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)}
    for module in ("launch", "launch.actions", "launch_ros.actions", "ament_index_python.packages"):
        assert any(isinstance(n, ast.ImportFrom) and n.module == module for n in ast.walk(tree))
    assert {"gz_sim.launch.py", "parameter_bridge", "ros_gz_bridge", "config_file"} <= names


@pytest.mark.parametrize("headless,server_flags", [("false", False), ("true", True)])
def test_launch_starts_gazebo_on_the_world_with_headless_flags_only_when_asked(load_launch, headless,
                                                                                server_flags):
    declared, (gazebo, _, _) = run_launch(load_launch(LAUNCH), headless=headless)
    assert set(declared) == {"headless", "world", "robot", "params_file", "model_path", "device"}
    assert all(kw["description"] for kw in declared.values())
    (source,) = gazebo.args
    assert source.args == (f"{ROS_GZ_SIM_SHARE}/launch/gz_sim.launch.py",)
    gz_args = dict(gazebo.kwargs["launch_arguments"])["gz_args"].split()
    assert gz_args[0] == "-r" and Path(gz_args[-1]) == SDF and SDF.is_file()
    assert ("-s" in gz_args and "--headless-rendering" in gz_args) is server_flags
    assert ("-s" in gz_args or "--headless-rendering" in gz_args) is server_flags


def test_launch_bridges_with_the_yaml_and_includes_the_guard_on_the_bridged_topics(load_launch, bridge):
    _, (_, bridge_node, guard) = run_launch(load_launch(LAUNCH))
    assert (bridge_node.kwargs["package"], bridge_node.kwargs["executable"]) == ("ros_gz_bridge", "parameter_bridge")
    (params,) = bridge_node.kwargs["parameters"]
    assert Path(params["config_file"]) == BRIDGE and BRIDGE.is_file()

    (source,) = guard.args
    assert Path(source.args[0]) == GUARD_LAUNCH and GUARD_LAUNCH.is_file()
    forwarded = dict(guard.kwargs["launch_arguments"])
    assert forwarded["robot"] == "sim_diffdrive" and forwarded["use_sim_time"] == "true"
    assert forwarded["image_topic"] == bridged(bridge, "sensor_msgs/msg/Image")["ros_topic_name"]
    assert forwarded["cmd_vel_topic"] == bridged(bridge, "geometry_msgs/msg/Twist")["ros_topic_name"]

    # the included guard launch accepts these arguments and turns them into the node's remaps
    guard_declared, (node,) = run_launch(load_launch(GUARD_LAUNCH), **forwarded)
    assert set(forwarded) <= set(guard_declared)
    remaps = dict(node.kwargs["remappings"])
    assert (remaps["image"], remaps["cmd_vel"]) == (forwarded["image_topic"], forwarded["cmd_vel_topic"])
    robot_file, overrides = node.kwargs["parameters"]
    assert Path(robot_file) == ROOT / "config" / "sim_diffdrive.yaml" and Path(robot_file).is_file()
    assert overrides["use_sim_time"] is True
