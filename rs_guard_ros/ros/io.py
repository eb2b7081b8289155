"""The node's ROS I/O: topic names and QoS, the subscriptions, decoding camera messages,
and everything that goes out -- the command name, its Twist, the JSON records on
~/certificate and /diagnostics.

`GateIO` owns the publishers and the OutputGate (what is being published between
decisions), so every output goes through one place: a decision's output, an abstain
event (watchdog, deadline, lifecycle) with its record, the periodic republish with its
TTL, and the quiet mode on cmd_vel. Callers hold the node's lock around these calls.
"""
from __future__ import annotations

import functools
import json
from typing import Any, Callable

import rclpy.node
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist, TwistStamped
from rclpy.duration import Duration
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String

from ..config import Config
from .gate_state import LOADING, TTL_EXPIRED, Level, Output, OutputGate, json_safe
from ..images import decode_compressed, decode_raw

SENSOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                        durability=DurabilityPolicy.VOLATILE)
INSTRUCTION_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)
# The node's own topic names; everything else is a remapping (launch/rs_guard.launch.py).
IMAGE_TOPIC, COMPRESSED_IMAGE_TOPIC, INSTRUCTION_TOPIC, CMD_VEL_TOPIC = (
    "image", "image/compressed", "instruction", "cmd_vel")


def subscribe(node: rclpy.node.Node, cfg: Config, on_image: Callable[[str, Any], None],
              on_instruction: Callable[[String], None], on_state: Callable[[JointState], None]) -> None:
    """Every camera (Image on cameras.<name>.topic -- `image` by default -- or CompressedImage on
    `<topic>/compressed`; best effort, newest only), the instruction (reliable, newest only)
    and, when state.topic is set, the joint state (best effort, newest only: it matches
    reliable publishers too)."""
    compressed = cfg.node.image_transport == "compressed"
    for name in cfg.cameras.names:
        topic = cfg.cameras.table[name].topic
        node.create_subscription(CompressedImage if compressed else Image,
                                 f"{topic}/compressed" if compressed else topic,
                                 functools.partial(on_image, name), SENSOR_QOS)
    node.create_subscription(String, INSTRUCTION_TOPIC, on_instruction, INSTRUCTION_QOS)
    if cfg.state.topic:
        node.create_subscription(JointState, cfg.state.topic, on_state, SENSOR_QOS)


def decode(msg: Any) -> Any:
    """Image or CompressedImage fields -> RGB uint8 (H, W, 3); ImageError for anything malformed."""
    if isinstance(msg, CompressedImage):
        return decode_compressed(msg.format, msg.data)
    return decode_raw(msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step, msg.data)


def stamp_s(msg: Any) -> float:
    """A message's header stamp in seconds (0.0 = not stamped)."""
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


class GateIO:
    """The publishers, and the rules for what goes out on them.

    Every decision publishes exactly one output (the certified command and its Twist, or
    the abstain action); between decisions the current output is republished until a
    certified command's TTL is over, then the abstain action; after `quiet_after` s of
    continuous abstain (0 = never) cmd_vel goes quiet so the gate does not fight other
    sources on a twist mux, while ~/command and ~/certificate carry on.
    """

    def __init__(self, node: rclpy.node.Node, cfg: Config):
        """Publishers first, so the abstain action can go out at once. The Twists, the
        abstain command and the Twist type are read-only parameters, fixed here."""
        self._node = node
        self._stamped = cfg.node.use_stamped
        self._twists = {name: (c.linear_x, c.linear_y, c.angular_z) for name, c in cfg.commands.table.items()}
        self.gate = OutputGate(cfg.commands.abstain, LOADING)
        self._pub_command = node.create_publisher(String, "~/command", OUTPUT_QOS)
        self._pub_twist = node.create_publisher(TwistStamped if self._stamped else Twist, CMD_VEL_TOPIC, OUTPUT_QOS)
        self._pub_certificate = node.create_publisher(String, "~/certificate", OUTPUT_QOS)
        self._pub_diagnostics = node.create_publisher(DiagnosticArray, "/diagnostics", OUTPUT_QOS)

    @property
    def current(self) -> Output:
        """What is being published now."""
        return self.gate.current

    def decision(self, output: Output, now: float, valid_from: float, quiet_after: float,
                 record: dict[str, Any]) -> None:
        """Publish a decision's output and its record; a certified command is valid from
        `valid_from` (its frame's capture time)."""
        self.gate.on_decision(output, now, valid_from)
        self._emit(output, cmd_vel=not self.gate.quiet(now, quiet_after))
        self.record(record)

    def abstain(self, source: str, reason: str, now: float, quiet_after: float, **extra: Any) -> None:
        """An abstain not made by a decision (watchdog, deadline, lifecycle): withdraw the
        command and publish the abstain action and a record at once. Lifecycle abstains
        always reach cmd_vel, even when quiet: they are the last word before stopping."""
        self.gate.force_abstain(reason, now)
        quiet = source != "lifecycle" and self.gate.quiet(now, quiet_after)
        self._emit(self.gate.current, cmd_vel=not quiet)
        self.record({"source": source, "time": now, "command": self.gate.abstain_command, "certified": False,
                     "reason": reason, **extra})

    def republish(self, now: float, command_ttl: float, quiet_after: float) -> None:
        """Republish the current output; once a certified command's TTL is over, abstain
        (with a "ttl" record)."""
        was_certified = self.gate.current.certified
        output = self.gate.tick(now, command_ttl)
        if was_certified and not output.certified:
            self.record({"source": "ttl", "time": now, "command": output.command, "certified": False,
                         "reason": TTL_EXPIRED})
        if not self.gate.quiet(now, quiet_after):
            self._emit(output, cmd_vel=True)

    def _emit(self, output: Output, cmd_vel: bool) -> None:
        """A command name on ~/command and, unless quiet, its Twist on cmd_vel."""
        self._pub_command.publish(String(data=output.command))
        if not cmd_vel:
            return
        twist = Twist()
        twist.linear.x, twist.linear.y, twist.angular.z = self._twists[output.command]
        if self._stamped:
            stamped = TwistStamped(twist=twist)
            stamped.header.stamp = self._node.get_clock().now().to_msg()
            self._pub_twist.publish(stamped)
        else:
            self._pub_twist.publish(twist)

    def record(self, record: dict[str, Any]) -> None:
        """One JSON object on ~/certificate."""
        self._pub_certificate.publish(String(data=json.dumps(json_safe(record), allow_nan=False)))

    def diagnostics(self, level: Level, message: str, hardware_id: str, values: dict[str, Any]) -> None:
        """One DiagnosticStatus for the gate on /diagnostics."""
        status = DiagnosticStatus(level=bytes([int(level)]), name=f"{self._node.get_name()}: certified command gate",
                                  message=message, hardware_id=hardware_id,
                                  values=[KeyValue(key=k, value=_kv(v)) for k, v in values.items()])
        array_msg = DiagnosticArray(status=[status])
        array_msg.header.stamp = self._node.get_clock().now().to_msg()
        self._pub_diagnostics.publish(array_msg)

    def wait_acked(self, timeout_s: float) -> None:
        """Wait (up to `timeout_s` per publisher) until subscribers acknowledged the outputs."""
        for pub in (self._pub_twist, self._pub_command, self._pub_certificate):
            pub.wait_for_all_acked(Duration(seconds=timeout_s))


def _kv(value: Any) -> str:
    """A diagnostic value as text (dicts as JSON)."""
    if isinstance(value, dict):
        return json.dumps(json_safe(value), sort_keys=True)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


__all__ = ["GateIO", "subscribe", "decode", "stamp_s", "IMAGE_TOPIC", "COMPRESSED_IMAGE_TOPIC", "INSTRUCTION_TOPIC",
           "CMD_VEL_TOPIC", "SENSOR_QOS", "INSTRUCTION_QOS", "OUTPUT_QOS"]
