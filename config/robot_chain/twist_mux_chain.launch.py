"""The rs_guard gate as twist_mux's highest automatic input (docs/robot.md).

    ros2 launch $(ros2 pkg prefix rs_guard_ros)/share/rs_guard_ros/config/robot_chain/twist_mux_chain.launch.py \
        robot:=turtlebot4 image_topic:=/oakd/rgb/preview/image_raw

Starts launch/rs_guard.launch.py for `robot` with rs_guard_twist_mux.yaml on top and the
gate's `cmd_vel` remapped to GATE_OUTPUT, and twist_mux (package twist_mux, apt
ros-<distro>-twist-mux) with twist_mux.yaml, whose `rs_guard` input is GATE_OUTPUT and whose
output goes to `cmd_vel_out` (the base's velocity topic). Joystick teleop publishes on
/joy_vel, Nav2 (if any) on /nav_vel; `ros2 topic pub /rs_guard/pause std_msgs/msg/Bool
"{data: true}"` pauses the gate without touching the joystick.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "rs_guard_ros"
CHAIN = os.path.join("config", "robot_chain")
GATE_PARAMS = os.path.join(CHAIN, "rs_guard_twist_mux.yaml")
MUX_PARAMS = os.path.join(CHAIN, "twist_mux.yaml")
GUARD_LAUNCH = os.path.join("launch", "rs_guard.launch.py")
# The gate's velocity output: twist_mux.yaml's topics.rs_guard.topic.
GATE_OUTPUT = "/rs_guard/cmd_vel"

ARGUMENTS = {
    "robot": ("default", "guard configuration: config/<robot>.yaml"),
    "image_topic": ("image", "camera topic (sensor_msgs/Image) the gate certifies"),
    "cmd_vel_out": ("/cmd_vel", "twist_mux's output: the base's velocity topic"),
    "model_path": ("", "override the guard's model.path (empty: keep the robot file's)"),
    "device": ("", "override the guard's model.device (empty: keep the robot file's)"),
    "use_sim_time": ("false", "use /clock"),
}


def _actions(context):
    arg = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    share = get_package_share_directory(PACKAGE)
    gate = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, GUARD_LAUNCH)),
        launch_arguments={"robot": arg["robot"], "params_file": os.path.join(share, GATE_PARAMS),
                          "image_topic": arg["image_topic"], "cmd_vel_topic": GATE_OUTPUT,
                          "model_path": arg["model_path"], "device": arg["device"],
                          "use_sim_time": arg["use_sim_time"]}.items())
    mux = Node(package="twist_mux", executable="twist_mux", name="twist_mux", output="screen",
               parameters=[os.path.join(share, MUX_PARAMS),
                           {"use_sim_time": arg["use_sim_time"].lower() in ("true", "1")}],
               remappings=[("cmd_vel_out", arg["cmd_vel_out"])])
    return [gate, mux]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=doc)
         for name, (default, doc) in ARGUMENTS.items()] + [OpaqueFunction(function=_actions)])
