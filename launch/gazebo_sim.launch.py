"""Closed loop in Gazebo: gz-sim world + ros_gz_bridge + the rs_guard gate on a diff-drive robot.

    ros2 launch rs_guard_ros gazebo_sim.launch.py                  # Gazebo GUI
    ros2 launch rs_guard_ros gazebo_sim.launch.py headless:=true   # server only, EGL rendering
    ros2 topic pub --once /instruction std_msgs/msg/String "{data: go to the red box}"

Starts Gazebo Sim (ros_gz_sim's gz_sim.launch.py) on config/gazebo/rs_guard_room.sdf, a
parameter_bridge with config/gazebo/bridge.yaml (camera and /clock Gazebo->ROS, cmd_vel
ROS->Gazebo), and launch/rs_guard.launch.py with robot:=sim_diffdrive, use_sim_time:=true
and the node's `image`/`cmd_vel` remapped onto the bridged topics. Needs Gazebo Harmonic or
newer and ros_gz (see docs/gazebo.md).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "rs_guard_ros"
WORLD = os.path.join("config", "gazebo", "rs_guard_room.sdf")
BRIDGE_CONFIG = os.path.join("config", "gazebo", "bridge.yaml")
GUARD_LAUNCH = os.path.join("launch", "rs_guard.launch.py")
# The ROS side of the bridged topics (must match config/gazebo/bridge.yaml).
CAMERA_TOPIC = "/camera/image_raw"
CMD_VEL_TOPIC = "/cmd_vel"

ARGUMENTS = {
    "headless": ("false", "true: Gazebo server only (-s) with headless EGL rendering for the camera"),
    "world": ("", "SDF world to load (empty: the package's config/gazebo/rs_guard_room.sdf)"),
    "robot": ("sim_diffdrive", "guard configuration: config/<robot>.yaml"),
    "params_file": ("", "extra guard parameter file applied on top of the robot's"),
    "model_path": ("", "override the guard's model.path (empty: keep the robot file's)"),
    "device": ("", "override the guard's model.device: auto, cpu, cuda:N (empty: keep the robot file's)"),
}


def _is_true(text: str) -> bool:
    return text.strip().lower() in ("true", "1", "yes")


def gz_args(world: str, headless: bool) -> str:
    """Gazebo Sim's command line: run immediately (-r); headless = server only + EGL rendering."""
    return " ".join(["-r"] + (["-s", "--headless-rendering"] if headless else []) + [world])


def _actions(context):
    arg = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    share = get_package_share_directory(PACKAGE)
    world = arg["world"] or os.path.join(share, WORLD)
    gazebo = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(
            os.path.join(get_package_share_directory("ros_gz_sim"), "launch", "gz_sim.launch.py")),
        launch_arguments={"gz_args": gz_args(world, _is_true(arg["headless"])),
                          "on_exit_shutdown": "true"}.items())
    bridge = Node(package="ros_gz_bridge", executable="parameter_bridge", name="rs_guard_gz_bridge",
                  output="screen", parameters=[{"config_file": os.path.join(share, BRIDGE_CONFIG)}])
    guard = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, GUARD_LAUNCH)),
        launch_arguments={"robot": arg["robot"], "params_file": arg["params_file"], "use_sim_time": "true",
                          "image_topic": CAMERA_TOPIC, "cmd_vel_topic": CMD_VEL_TOPIC,
                          "model_path": arg["model_path"], "device": arg["device"]}.items())
    return [gazebo, bridge, guard]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=doc)
         for name, (default, doc) in ARGUMENTS.items()] + [OpaqueFunction(function=_actions)])
