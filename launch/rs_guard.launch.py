"""Launch the rs_guard certified command gate for one robot.

    ros2 launch rs_guard_ros rs_guard.launch.py robot:=turtlebot4 image_topic:=/oakd/rgb/preview/image_raw
    ros2 launch rs_guard_ros rs_guard.launch.py robot:=sim_diffdrive use_sim_time:=true \
        image_topic:=/camera/image_raw cmd_vel_topic:=/cmd_vel

`robot` picks config/<robot>.yaml (sim_diffdrive, turtlebot4, tiago, or default);
`params_file` adds overrides on top of it. ROS parameters cannot rename topics, so the
topic arguments are remappings of the node's own names: `image` (and `image/compressed`,
used with node.image_transport: compressed, mapped to <image_topic>/compressed) and
`cmd_vel`. The instruction topic is `instruction` in the node's namespace.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "rs_guard_ros"
EXECUTABLE = "rs_guard_node"
NODE_NAME = "rs_guard"

ARGUMENTS = {
    "robot": ("default", "robot name: loads config/<robot>.yaml (sim_diffdrive, turtlebot4, tiago, default)"),
    "params_file": ("", "extra parameter file applied on top of the robot's"),
    "namespace": ("", "namespace of the node"),
    "use_sim_time": ("false", "use /clock (Gazebo, MuJoCo simulation)"),
    "image_topic": ("image", "camera topic (sensor_msgs/Image); <image_topic>/compressed for CompressedImage"),
    "cmd_vel_topic": ("cmd_vel", "velocity command output topic (Twist, or TwistStamped with node.use_stamped)"),
    "model_path": ("", "override model.path (empty: keep the robot file's)"),
    "device": ("", "override model.device: auto, cpu, cuda:N (empty: keep the robot file's)"),
}


def remappings(image_topic: str, cmd_vel_topic: str) -> list[tuple[str, str]]:
    """The node's topic names -> the robot's."""
    return [("image", image_topic), ("image/compressed", f"{image_topic}/compressed"), ("cmd_vel", cmd_vel_topic)]


def _node(context):
    arg = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    share = get_package_share_directory(PACKAGE)
    params = [os.path.join(share, "config", f"{arg['robot']}.yaml")]
    if arg["params_file"]:
        params.append(arg["params_file"])
    overrides = {"use_sim_time": arg["use_sim_time"].lower() in ("true", "1")}
    if arg["model_path"]:
        overrides["model.path"] = arg["model_path"]
    if arg["device"]:
        overrides["model.device"] = arg["device"]
    return [Node(package=PACKAGE, executable=EXECUTABLE, name=NODE_NAME, namespace=arg["namespace"],
                 output="screen", emulate_tty=True, parameters=params + [overrides],
                 remappings=remappings(arg["image_topic"], arg["cmd_vel_topic"]))]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=doc)
         for name, (default, doc) in ARGUMENTS.items()] + [OpaqueFunction(function=_node)])
