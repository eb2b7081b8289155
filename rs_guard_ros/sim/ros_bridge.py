"""ROS 2 node `rs_guard_sim`: the MuJoCo World (rs_guard_ros.sim.world) as a simulated robot.

It owns simulation time: every physics step (a wall-clock timer at `physics_rate` Hz)
advances sim time by dt = 1 / physics_rate, publishes it on /clock and drives the robot
with the latest `cmd_vel` (geometry_msgs/Twist). Every physics_rate / camera_rate steps it
publishes the camera on `camera/image_raw` (rgb8, stamped with sim time, frame "camera"),
the ground-truth command for `target` on `~/ground_truth` and the robot pose on `~/pose`
(std_msgs/String JSON {"t", "x", "y", "yaw"}), matching config/sim_diffdrive.yaml.
"""
from __future__ import annotations

import json
import math

import numpy as np
import rclpy
from geometry_msgs.msg import Twist
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import String

from ..images import encode_raw
from .world import OBJECTS, World

CMD_TIMEOUT_S = 0.5  # a command older than this (sim time) counts as zero: fail safe
CLOCK_TOPIC, IMAGE_TOPIC, CMD_VEL_TOPIC = "/clock", "camera/image_raw", "cmd_vel"


def stamp_of(t: float) -> tuple[int, int]:
    """(sec, nanosec) of a non-negative time in seconds, for builtin_interfaces/Time."""
    sec = int(t)
    return sec, min(int(round((t - sec) * 1e9)), 999_999_999)


def image_msg(rgb: np.ndarray, t: float) -> Image:
    """A sensor_msgs/Image (rgb8, frame "camera") of `rgb` stamped at sim time `t`."""
    fields = encode_raw(rgb)
    msg = Image(height=fields.height, width=fields.width, encoding=fields.encoding, step=fields.step)
    msg.data = fields.data
    msg.header.frame_id = "camera"
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp_of(t)
    return msg


def effective_command(cmd: tuple[float, float], cmd_time: float | None, now: float) -> tuple[float, float]:
    """The (linear_x, angular_z) to apply at sim time `now`: zero when none arrived or it is stale."""
    if cmd_time is None or now - cmd_time > CMD_TIMEOUT_S:
        return 0.0, 0.0
    return cmd


class SimBridge(Node):
    """Steps a World on a timer, publishing /clock, the camera, the ground truth and the pose."""

    def __init__(self) -> None:
        super().__init__("rs_guard_sim")
        camera_rate = self._param("camera_rate", 10.0, "camera frames per simulated second (Hz)")
        physics_rate = self._param("physics_rate", 50.0, "physics steps per second, in sim and wall time (Hz)")
        self.target = self._param("target", "red box", "object whose ground-truth command is published")
        seed = self._param("seed", 0, "seed of the random room layout")
        if not (math.isfinite(physics_rate) and physics_rate > 0):
            raise ValueError(f"physics_rate must be positive, got {physics_rate}")
        if not (math.isfinite(camera_rate) and 0 < camera_rate <= physics_rate):
            raise ValueError(f"camera_rate must be in (0, physics_rate={physics_rate}], got {camera_rate}")
        if self.target not in {s.name for s in OBJECTS}:
            raise ValueError(f"target must be one of {[s.name for s in OBJECTS]}, got {self.target!r}")
        self.dt = 1.0 / physics_rate
        self.steps_per_frame = max(1, round(physics_rate / camera_rate))
        self.world = World(seed=seed)
        self.sim_time, self.steps = 0.0, 0
        self.cmd: tuple[float, float] = (0.0, 0.0)
        self.cmd_time: float | None = None
        self.pub_clock = self.create_publisher(Clock, CLOCK_TOPIC, 10)
        self.pub_image = self.create_publisher(Image, IMAGE_TOPIC, qos_profile_sensor_data)
        self.pub_truth = self.create_publisher(String, "~/ground_truth", 10)
        self.pub_pose = self.create_publisher(String, "~/pose", 10)
        self.create_subscription(Twist, CMD_VEL_TOPIC, self._on_cmd_vel, 10)
        self.create_timer(self.dt, self._on_step)

    def _param(self, name: str, default: float | int | str, description: str) -> float | int | str:
        """Declare a read-only parameter with a description; its value."""
        descriptor = ParameterDescriptor(description=description, read_only=True)
        return self.declare_parameter(name, default, descriptor).value

    def _on_cmd_vel(self, msg: Twist) -> None:
        """Remember the latest command and the sim time it arrived."""
        self.cmd = (float(msg.linear.x), float(msg.angular.z))
        self.cmd_time = self.sim_time
        if not all(math.isfinite(v) for v in self.cmd):  # fail safe on garbage
            self.cmd_time = None

    def _on_step(self) -> None:
        """One physics step; every `steps_per_frame` steps also the camera, truth and pose."""
        linear_x, angular_z = effective_command(self.cmd, self.cmd_time, self.sim_time)
        self.world.step(linear_x, angular_z, self.dt)
        self.steps += 1
        self.sim_time = self.steps * self.dt  # no float drift from repeated addition
        clock = Clock()
        clock.clock.sec, clock.clock.nanosec = stamp_of(self.sim_time)
        self.pub_clock.publish(clock)
        if self.steps % self.steps_per_frame == 0:
            self._publish_sensors()

    def _publish_sensors(self) -> None:
        """Publish the camera frame, the ground-truth command and the pose at the current sim time."""
        self.pub_image.publish(image_msg(self.world.render(), self.sim_time))
        self.pub_truth.publish(String(data=self.world.correct_command(self.target)))
        x, y, yaw = self.world.robot_pose
        self.pub_pose.publish(String(data=json.dumps({"t": self.sim_time, "x": x, "y": y, "yaw": yaw})))

    def destroy_node(self) -> None:
        """Close the renderer before the node goes."""
        self.world.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Console script `rs_guard_sim`: run the bridge until SIGINT."""
    rclpy.init(args=args)
    node = SimBridge()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    main()
