"""ROS 2 node `rs_guard_sim`: the MuJoCo World (rs_guard_ros.sim.world) as a simulated robot.

It owns simulation time: every physics step advances sim time by dt = 1 / physics_rate,
publishes it on /clock and drives the robot
with the latest `cmd_vel` (geometry_msgs/Twist). Every physics_rate / camera_rate steps it
publishes the camera on `camera/image_raw` (rgb8, stamped with sim time, frame "camera"),
with `rear_camera:=true` also the rear camera on `camera_rear/image_raw` (same size, the
same stamp, frame "camera_rear"; off by default, so one-camera runs render nothing more),
the wheels' sensor_msgs/JointState on `joint_states` (`left_wheel`, `right_wheel`: position
integrated from and velocity of the applied command, stamped with sim time),
the ground-truth command for `target` on `~/ground_truth` and the robot pose on `~/pose`
(std_msgs/String JSON {"t", "x", "y", "yaw", "truth", "reached", "episode"}) and odometry
on `odom` (nav_msgs/Odometry, frame "odom" -> "base_link", the applied velocity), matching
config/sim_diffdrive.yaml.

The steps run on a wall-clock timer of period dt / `real_time_factor`, as Gazebo's
real_time_factor: at 0.25 a sim second takes four wall seconds, while every step still
advances sim time by dt. The factor may be changed at run time (`ros2 param set`, or the
demo's calibration from the gate's measured decision time); it must be in (0, 1].

A scenario runner starts each episode by publishing on `~/reset` (String JSON, see
`parse_reset`): the robot pose, fixed object positions, the layout seed and the target
(null: no valid target, the ground truth is "stop"). The sim zeroes the command, applies
the layout and answers on `~/episode` (transient local) with the resulting layout. A
request for the current episode id is a repeat and changes nothing, so a runner may
re-send until it sees the answer.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from ..images import encode_raw
from .world import OBJECTS, REAR_CAMERA, World, wheel_velocities

REAL_TIME_FACTOR = "real_time_factor"
CMD_TIMEOUT_S = 0.5  # a command older than this (sim time) counts as zero: fail safe
CLOCK_TOPIC, IMAGE_TOPIC, CMD_VEL_TOPIC, ODOM_TOPIC = "/clock", "camera/image_raw", "cmd_vel", "odom"
REAR_IMAGE_TOPIC, JOINT_STATES_TOPIC = "camera_rear/image_raw", "joint_states"
WHEEL_JOINTS = ("left_wheel", "right_wheel")
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
_OBJECT_NAMES = {s.name for s in OBJECTS}


@dataclass(frozen=True)
class Reset:
    """A validated `~/reset` request: episode id, robot pose, fixed objects, seed, target."""

    episode: int
    robot: tuple[float, float, float]
    objects: dict[str, tuple[float, float]]
    seed: int
    target: str | None


def parse_reset(text: str) -> Reset:
    """Parse `~/reset` JSON {"episode", "robot": [x, y, yaw_rad], "objects", "seed", "target"}; ValueError if bad."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"reset is not JSON: {exc}") from exc
    if not isinstance(data, dict) or set(data) != {"episode", "robot", "objects", "seed", "target"}:
        raise ValueError("reset must be an object with keys episode, robot, objects, seed, target")
    episode, seed, target = data["episode"], data["seed"], data["target"]
    if not _is_int(episode) or not _is_int(seed) or not 0 <= seed < 2**32:
        raise ValueError("reset episode and seed must be integers (seed in [0, 2^32))")
    if target is not None and target not in _OBJECT_NAMES:
        raise ValueError(f"reset target must be one of {sorted(_OBJECT_NAMES)} or null")
    objects = data["objects"]
    if not isinstance(objects, dict) or not set(objects) <= _OBJECT_NAMES:
        raise ValueError(f"reset objects must map names in {sorted(_OBJECT_NAMES)} to [x, y]")
    return Reset(episode, _finite_tuple(data["robot"], 3, "robot"),
                 {name: _finite_tuple(xy, 2, f"objects[{name}]") for name, xy in objects.items()}, seed, target)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite_tuple(value: object, size: int, what: str) -> tuple[float, ...]:
    """A list of `size` finite numbers as floats, else ValueError naming `what`."""
    if (not isinstance(value, list) or len(value) != size
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
        raise ValueError(f"reset {what} must be a list of {size} finite numbers")
    return tuple(float(v) for v in value)


def stamp_of(t: float) -> tuple[int, int]:
    """(sec, nanosec) of a non-negative time in seconds, for builtin_interfaces/Time."""
    sec = int(t)
    return sec, min(int(round((t - sec) * 1e9)), 999_999_999)


def image_msg(rgb: np.ndarray, t: float, frame_id: str = "camera") -> Image:
    """A sensor_msgs/Image (rgb8, frame `frame_id`) of `rgb` stamped at sim time `t`."""
    fields = encode_raw(rgb)
    msg = Image(height=fields.height, width=fields.width, encoding=fields.encoding, step=fields.step)
    msg.data = fields.data
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp_of(t)
    return msg


def odometry_msg(pose: tuple[float, float, float], velocity: tuple[float, float], t: float) -> Odometry:
    """nav_msgs/Odometry of a planar pose (x, y, yaw) and body velocity (linear_x, angular_z) at `t`."""
    msg = Odometry()
    msg.header.frame_id, msg.child_frame_id = "odom", "base_link"
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp_of(t)
    x, y, yaw = pose
    msg.pose.pose.position.x, msg.pose.pose.position.y = x, y
    msg.pose.pose.orientation.z, msg.pose.pose.orientation.w = math.sin(yaw / 2), math.cos(yaw / 2)
    msg.twist.twist.linear.x, msg.twist.twist.angular.z = velocity
    return msg


def check_real_time_factor(value: object) -> float:
    """`value` as a real-time factor: a finite number in (0, 1] (faster than real time would let a
    fast computer shorten the decision latency in sim seconds below what it is); else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise ValueError(f"{REAL_TIME_FACTOR} must be a number in (0, 1], got {value!r}")
    return float(value)


def step_period(dt: float, real_time_factor: float) -> float:
    """Wall-clock seconds between physics steps of `dt` sim seconds at `real_time_factor`."""
    return dt / check_real_time_factor(real_time_factor)


def joint_state_msg(positions: tuple[float, ...], velocities: tuple[float, ...], t: float) -> JointState:
    """sensor_msgs/JointState of the wheels (WHEEL_JOINTS order) stamped at sim time `t`."""
    msg = JointState(name=list(WHEEL_JOINTS), position=list(positions), velocity=list(velocities))
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp_of(t)
    return msg


def effective_command(cmd: tuple[float, float], cmd_time: float | None, now: float) -> tuple[float, float]:
    """The (linear_x, angular_z) to apply at sim time `now`: zero when none arrived or it is stale."""
    if cmd_time is None or now - cmd_time > CMD_TIMEOUT_S:
        return 0.0, 0.0
    return cmd


class SimBridge(Node):
    """Steps a World on a timer, publishing /clock, the camera, the ground truth and the pose."""

    def __init__(self, **kwargs: Any) -> None:
        """`kwargs` go to rclpy's Node (a test passes its context and parameter overrides)."""
        super().__init__("rs_guard_sim", **kwargs)
        camera_rate = self._param("camera_rate", 10.0, "camera frames per simulated second (Hz)")
        physics_rate = self._param("physics_rate", 50.0, "physics steps per simulated second (Hz)")
        real_time_factor = check_real_time_factor(self._param(
            REAL_TIME_FACTOR, 1.0, "sim seconds per wall second, in (0, 1]: steps run every "
            "1 / (physics_rate * real_time_factor) wall seconds; settable at run time", read_only=False))
        self.target: str | None = self._param("target", "red box", "object whose ground-truth command is published")
        seed = self._param("seed", 0, "seed of the random room layout")
        rear = self._param("rear_camera", False, f"also render the rear camera and publish it on {REAR_IMAGE_TOPIC}")
        if not (math.isfinite(physics_rate) and physics_rate > 0):
            raise ValueError(f"physics_rate must be positive, got {physics_rate}")
        if not (math.isfinite(camera_rate) and 0 < camera_rate <= physics_rate):
            raise ValueError(f"camera_rate must be in (0, physics_rate={physics_rate}], got {camera_rate}")
        if self.target not in {s.name for s in OBJECTS}:
            raise ValueError(f"target must be one of {[s.name for s in OBJECTS]}, got {self.target!r}")
        self.dt = 1.0 / physics_rate
        self.steps_per_frame = max(1, round(physics_rate / camera_rate))
        self.world = World(seed=seed)
        self.sim_time, self.steps, self.episode = 0.0, 0, 0
        self.cmd: tuple[float, float] = (0.0, 0.0)
        self.cmd_time: float | None = None
        self.wheel_angles, self.wheel_speeds = (0.0, 0.0), (0.0, 0.0)  # rad, rad/s (WHEEL_JOINTS order)
        self.pub_clock = self.create_publisher(Clock, CLOCK_TOPIC, 10)
        self.pub_image = self.create_publisher(Image, IMAGE_TOPIC, qos_profile_sensor_data)
        self.pub_rear = self.create_publisher(Image, REAR_IMAGE_TOPIC, qos_profile_sensor_data) if rear else None
        self.pub_joints = self.create_publisher(JointState, JOINT_STATES_TOPIC, 10)
        self.pub_truth = self.create_publisher(String, "~/ground_truth", 10)
        self.pub_pose = self.create_publisher(String, "~/pose", 10)
        self.pub_episode = self.create_publisher(String, "~/episode", LATCHED)
        self.pub_odom = self.create_publisher(Odometry, ODOM_TOPIC, 10)
        self.create_subscription(Twist, CMD_VEL_TOPIC, self._on_cmd_vel, 10)
        self.create_subscription(String, "~/reset", self._on_reset, 10)
        self.timer = self.create_timer(step_period(self.dt, real_time_factor), self._on_step)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def _param(self, name: str, default: float | int | str, description: str,
               read_only: bool = True) -> float | int | str:
        """Declare a parameter (read-only unless told) with a description; its value."""
        descriptor = ParameterDescriptor(description=description, read_only=read_only)
        return self.declare_parameter(name, default, descriptor).value

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """A run-time `real_time_factor`: refused unless in (0, 1], else the physics timer restarts
        at the new wall period (applied here: it is this node's only settable parameter)."""
        for param in params:
            if param.name != REAL_TIME_FACTOR:
                continue
            try:
                period = step_period(self.dt, param.value)
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
            self.timer.timer_period_ns = round(period * 1e9)  # from the step after the next one
            self.get_logger().info(f"{REAL_TIME_FACTOR} {param.value:g}: a physics step every {period:.4f} wall s")
        return SetParametersResult(successful=True)

    def _on_cmd_vel(self, msg: Twist) -> None:
        """Remember the latest command and the sim time it arrived."""
        self.cmd = (float(msg.linear.x), float(msg.angular.z))
        self.cmd_time = self.sim_time
        if not all(math.isfinite(v) for v in self.cmd):  # fail safe on garbage
            self.cmd_time = None

    def _on_reset(self, msg: String) -> None:
        """Start an episode: zero the command, lay out the room, announce the layout."""
        try:
            reset = parse_reset(msg.data)
            if reset.episode == self.episode:
                return  # a repeat of the request that started the current episode
            self.world.reset(robot_pose=reset.robot, object_positions=reset.objects,
                             rng=np.random.default_rng(reset.seed))
        except (ValueError, RuntimeError) as exc:  # a bad request changes nothing
            self.get_logger().error(f"ignored ~/reset: {exc}")
            return
        self.cmd, self.cmd_time = (0.0, 0.0), None
        self.target, self.episode = reset.target, reset.episode
        layout = {"episode": self.episode, "t": self.sim_time, "target": self.target,
                  "robot": list(self.world.robot_pose), "objects": self.world.objects}
        self.pub_episode.publish(String(data=json.dumps(layout)))

    def _on_step(self) -> None:
        """One physics step; every `steps_per_frame` steps also the camera, truth and pose."""
        linear_x, angular_z = effective_command(self.cmd, self.cmd_time, self.sim_time)
        self.world.step(linear_x, angular_z, self.dt)
        self._turn_wheels(linear_x, angular_z)
        self.steps += 1
        self.sim_time = self.steps * self.dt  # no float drift from repeated addition
        clock = Clock()
        clock.clock.sec, clock.clock.nanosec = stamp_of(self.sim_time)
        self.pub_clock.publish(clock)
        self.pub_odom.publish(odometry_msg(self.world.robot_pose, (linear_x, angular_z), self.sim_time))
        if self.steps % self.steps_per_frame == 0:
            self._publish_sensors()

    def _turn_wheels(self, linear_x: float, angular_z: float) -> None:
        """Advance the wheel joints by one physics step of the applied command."""
        self.wheel_speeds = wheel_velocities(linear_x, angular_z)
        self.wheel_angles = tuple(a + w * self.dt for a, w in zip(self.wheel_angles, self.wheel_speeds))

    def _publish_sensors(self) -> None:
        """Publish the camera frame(s), the wheel joint states, the ground-truth command and the
        pose, all at the current sim time (the front and rear frames carry the identical stamp)."""
        self.pub_image.publish(image_msg(self.world.render(), self.sim_time))
        if self.pub_rear is not None:
            self.pub_rear.publish(image_msg(self.world.render(REAR_CAMERA), self.sim_time, "camera_rear"))
        self.pub_joints.publish(joint_state_msg(self.wheel_angles, self.wheel_speeds, self.sim_time))
        truth = self.world.correct_command(self.target) if self.target else "stop"
        self.pub_truth.publish(String(data=truth))
        x, y, yaw = self.world.robot_pose
        pose = {"t": self.sim_time, "x": x, "y": y, "yaw": yaw, "truth": truth, "episode": self.episode,
                "reached": bool(self.target) and self.world.reached(self.target)}
        self.pub_pose.publish(String(data=json.dumps(pose)))

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
    except Exception:
        # rclpy's SIGINT handler shuts the context down at once, even while a step is publishing,
        # and that publish raises RCLError: the ordinary end. With the context still up it is real.
        if rclpy.ok():
            raise
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    main()
