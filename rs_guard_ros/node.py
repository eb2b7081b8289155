"""rs_guard: the certified command gate as a ROS 2 node (DESIGN §4), a thin adapter
between ROS messages and `Guard`.

    rs_guard_node --ros-args --params-file config/sim_diffdrive.yaml -r image:=/camera/image_raw
    ros2 run rs_guard_ros rs_guard_node --ros-args --params-file ...   (with a ROS 2 install)

Topics (all remappable; ROS parameters cannot rename topics):
  in   image              sensor_msgs/Image, or CompressedImage on image/compressed when
                          node.image_transport is "compressed"; best effort, keep last 1
  in   instruction        std_msgs/String; reliable, volatile, keep last 1
  out  ~/command          std_msgs/String: the certified command or the abstain command
  out  cmd_vel            geometry_msgs/Twist (TwistStamped with node.use_stamped)
  out  ~/certificate      std_msgs/String: one JSON object per decision or watchdog event
  out  /diagnostics       diagnostic_msgs/DiagnosticArray every node.diagnostics_period

Threads. The executor (main thread) runs subscriptions, timers and the parameter and
lifecycle services; one decision thread takes the newest frame from a one-deep mailbox
(older ones are dropped and counted), decodes it with rs_guard_ros.images and runs
`Guard.decide`, so /clock, parameters and timers never wait for the model.

Outputs. Every decision publishes exactly one output: the certified command and its
Twist, or the abstain action (the abstain command's Twist, zero by default) with the
reason in its certificate. Between decisions the current output is republished at
node.publish_rate until node.command_ttl runs out, then the abstain action; after
node.abstain_publish_timeout s of continuous abstain (0 = never) cmd_vel goes quiet, so
the gate does not fight other sources on a twist mux (decisions still appear on
~/command and ~/certificate).
A camera that stops (any message on `image` counts as alive; a malformed one is decided
as an abstain), a missing or expired instruction, a model past node.decision_deadline
(0 = no deadline), a model or oracle exception and a malformed message all abstain.

Clocks. Frame, instruction and command ages are measured on the node's clock, so they
follow /clock under use_sim_time, and so do the watchdog, republish and diagnostics
timers. The decision deadline is compute time: it is passed to `Guard.decide` and also
checked by a steady-clock timer, which abstains (and discards the late result) when a
model hangs, even while simulation time is paused.

Lifecycle. The node is a lifecycle node: configure loads the model, activate starts
gating, deactivate publishes the abstain action once and stops. With node.managed false
(the default) it configures and activates itself, loading the model in the background
while it publishes the abstain action. SIGINT/SIGTERM publish the abstain action, wait
for it to be acknowledged, then exit.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import rclpy
import rclpy.logging
import rclpy.node
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist, TwistStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from . import config
from .config import ConfigError
from .gate_state import (INACTIVE, LOADING, MALFORMED_IMAGE, MODEL_LOAD_FAILED, SHUTDOWN,
                         SUPERSEDED, TTL_EXPIRED, GateStats, LatestSlot, Level, Output, OutputGate, json_safe,
                         reason_kind, stale_reason)
from .images import ImageError, decode_compressed, decode_raw
from .ros_params import declare_parameters, plain_value

try:  # Humble and later: let the node, not rclpy, decide what SIGINT/SIGTERM do
    from rclpy.signals import SignalHandlerOptions
except ImportError:  # pragma: no cover - older rclpy
    SignalHandlerOptions = None

SENSOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                        durability=DurabilityPolicy.VOLATILE)
INSTRUCTION_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)
# The node's own topic names; everything else is a remapping (launch/rs_guard.launch.py).
IMAGE_TOPIC, COMPRESSED_IMAGE_TOPIC, INSTRUCTION_TOPIC, CMD_VEL_TOPIC = (
    "image", "image/compressed", "instruction", "cmd_vel")
SHUTDOWN_ACK_TIMEOUT_S = 1.0
SHUTDOWN_DECISION_WAIT_S = 5.0  # at most this long (and the decision deadline) for a decision in flight

# Phases of the gate. Only ACTIVE decides; LOADING (unmanaged start-up) republishes abstain.
UNCONFIGURED, LOADING_PHASE, INACTIVE_PHASE, ACTIVE, FINALIZED = (
    "unconfigured", "loading", "inactive", "active", "finalized")


# ---------------------------------------------------------------------------
# The node
# ---------------------------------------------------------------------------

@dataclass
class FrameJob:
    """A camera message waiting for (or in) a decision."""

    msg: Any
    received: float  # node clock, s
    received_mono: float  # time.monotonic(), for latency
    job_id: int = 0


@dataclass(frozen=True)
class Instruction:
    """The latest instruction and when it arrived."""

    text: str
    received: float  # node clock, s


def _stamp_s(msg: Any) -> float:
    """A message's header stamp in seconds."""
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


class RsGuardNode(LifecycleNode):
    """Camera + instruction in, certified command (or the abstain action) out."""

    def __init__(self, **kwargs: Any):
        super().__init__(config.NODE_NAME, **kwargs)
        self._cfg = declare_parameters(self)
        self._param_names = {s.name for s in config.param_specs(self._cfg.commands.names)}
        self.managed = self._cfg.node.managed
        self.failed = False
        self._lock = threading.RLock()
        self._phase = UNCONFIGURED
        self._guard: Any = None  # rs_guard_ros.guard.Guard once loaded (torch is imported then)
        self._gate = OutputGate(self._cfg.commands.abstain, LOADING)
        self._stats = GateStats(time.monotonic())
        self._slot: LatestSlot[FrameJob] = LatestSlot()
        self._worker: threading.Thread | None = None
        self._job_ids = itertools.count(1)
        self._in_flight: tuple[int, float] | None = None  # (job id, monotonic start)
        self._cancelled: set[int] = set()
        self._frame_time: float | None = None
        self._instruction: Instruction | None = None
        self._stale: str | None = None  # the watchdog's active reason, if any
        self._create_io()
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # -- set-up -------------------------------------------------------------------------

    def _create_io(self) -> None:
        """Publishers first (so abstain can go out at once), then inputs and timers."""
        node_cfg = self._cfg.node
        self._pub_command = self.create_publisher(String, "~/command", OUTPUT_QOS)
        self._pub_twist = self.create_publisher(TwistStamped if node_cfg.use_stamped else Twist, CMD_VEL_TOPIC,
                                                OUTPUT_QOS)
        self._pub_certificate = self.create_publisher(String, "~/certificate", OUTPUT_QOS)
        self._pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", OUTPUT_QOS)
        self._compressed = node_cfg.image_transport == "compressed"
        self.create_subscription(CompressedImage if self._compressed else Image,
                                 COMPRESSED_IMAGE_TOPIC if self._compressed else IMAGE_TOPIC, self._on_image,
                                 SENSOR_QOS)
        self.create_subscription(String, INSTRUCTION_TOPIC, self._on_instruction, INSTRUCTION_QOS)
        self._republish_timer = self.create_timer(1.0 / node_cfg.publish_rate, self._on_republish)
        self.create_timer(node_cfg.watchdog_period, self._on_watchdog)
        self.create_timer(node_cfg.watchdog_period, self._on_deadline_check,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.create_timer(node_cfg.diagnostics_period, self._on_diagnostics)

    def start_unmanaged(self) -> None:
        """Configure and activate in the background, publishing abstain while the model loads."""
        self._phase = LOADING_PHASE

        def bring_up() -> None:
            ok = self.trigger_configure() == TransitionCallbackReturn.SUCCESS
            with self._lock:
                if self._phase == FINALIZED:  # shut down while loading
                    return
            if not ok or self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                self.failed = True

        threading.Thread(target=bring_up, name="rs_guard_load", daemon=True).start()

    def _load_guard(self) -> None:
        """Load policy and oracle (torch is imported here, after the publishers exist)."""
        from .guard import Guard

        cfg = self._cfg
        guard = Guard.from_config(cfg)
        with self._lock:
            if self._cfg is not cfg:  # parameters changed while loading
                guard.reconfigure(self._cfg)
            self._guard = guard
        self._start_worker()

    def _start_worker(self) -> None:
        """A fresh mailbox and the decision thread that empties it."""
        self._slot = LatestSlot()
        self._worker = threading.Thread(target=self._work, args=(self._slot,), name="rs_guard_decide", daemon=True)
        self._worker.start()

    def _stop_worker(self, wait_s: float = 0.0) -> bool:
        """Release the decision thread, waiting up to `wait_s` for a decision in flight; False if
        it is still running (a hung model is left to finish on its own)."""
        self._slot.close()
        worker, self._worker = self._worker, None
        if worker is None or worker is threading.current_thread():
            return True
        worker.join(timeout=wait_s)
        return not worker.is_alive()

    # -- lifecycle ----------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model; failure leaves the node unconfigured (and publishing nothing but abstain)."""
        try:
            self._load_guard()
        except Exception as exc:  # any load failure (missing files, bad plugin, CUDA) is reported
            self.get_logger().fatal(f"{MODEL_LOAD_FAILED}: {type(exc).__name__}: {exc}")
            self._stats.note(f"{MODEL_LOAD_FAILED}: {exc}")
            return TransitionCallbackReturn.FAILURE
        with self._lock:
            if self._phase == FINALIZED:
                return TransitionCallbackReturn.FAILURE
            self._phase = INACTIVE_PHASE
        policy = self._guard.policy
        self.get_logger().info(f"model loaded: {self._cfg.model.backend} {policy.name} on {policy.device}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start gating: abstain until the first decision."""
        with self._lock:
            self._phase, self._frame_time, self._stale = ACTIVE, None, None
            self._gate.force_abstain(INACTIVE, self._now())
        self.get_logger().info("gate active")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop gating; publish the abstain action once (an inactive node then stays quiet)."""
        self._withdraw(INACTIVE_PHASE, INACTIVE)
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release the model."""
        self._stop_worker()
        with self._lock:
            self._guard, self._phase = None, UNCONFIGURED
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Publish the abstain action and stop deciding for good."""
        self.close()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A failed transition: abstain, release the decision thread, back to unconfigured."""
        self._withdraw(UNCONFIGURED, "error")
        self._stop_worker()
        return TransitionCallbackReturn.SUCCESS

    def _withdraw(self, phase: str, reason: str) -> None:
        """Leave ACTIVE: forget pending frames, discard the decision in flight, publish abstain once."""
        with self._lock:
            was = self._phase
            self._phase = phase
            self._slot.clear()
            if self._in_flight is not None:
                self._cancelled.add(self._in_flight[0])
            if was in (ACTIVE, LOADING_PHASE):
                now = self._now()
                self._gate.force_abstain(reason, now)
                self._emit(self._gate.current, now, cmd_vel=True)
                self._publish_record({"source": "lifecycle", "time": now, "command": self._gate.abstain_command,
                                      "certified": False, "reason": reason})

    def close(self) -> bool:
        """Shutdown: publish the abstain action (even when quiet), wait for it to be acknowledged,
        and let a decision in flight end (within its deadline). False if the model is still busy."""
        with self._lock:
            if self._phase == FINALIZED:
                return self._worker is None
            self._phase = FINALIZED
            now = self._now()
            self._gate.force_abstain(SHUTDOWN, now)
            self._emit(self._gate.current, now, cmd_vel=True)
            self._publish_record({"source": "lifecycle", "time": now, "command": self._gate.abstain_command,
                                  "certified": False, "reason": SHUTDOWN})
        for pub in (self._pub_twist, self._pub_command, self._pub_certificate):
            wait = getattr(pub, "wait_for_all_acked", None)  # rclpy >= Humble
            if wait is not None:
                wait(Duration(seconds=SHUTDOWN_ACK_TIMEOUT_S))
        deadline = self._cfg.node.decision_deadline
        return self._stop_worker(wait_s=min(deadline, SHUTDOWN_DECISION_WAIT_S) if deadline > 0
                                 else SHUTDOWN_DECISION_WAIT_S)

    # -- inputs ---------------------------------------------------------------------------

    def _on_image(self, msg: Any) -> None:
        """Record the arrival and hand the frame to the decision thread (newest only)."""
        now = self._now()
        with self._lock:
            if self._phase != ACTIVE:
                return
            self._frame_time = now
            slot = self._slot
        slot.put(FrameJob(msg, now, time.monotonic()))

    def _on_instruction(self, msg: String) -> None:
        """Keep the latest instruction (recorded in every phase: it is not re-sent)."""
        with self._lock:
            self._instruction = Instruction(msg.data, self._now())

    def _decode(self, msg: Any) -> Any:
        """Message fields -> RGB uint8 (H, W, 3); ImageError for anything malformed."""
        if self._compressed:
            return decode_compressed(msg.format, msg.data)
        return decode_raw(msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step, msg.data)

    # -- the decision thread -------------------------------------------------------------

    def _work(self, slot: LatestSlot[FrameJob]) -> None:
        """Decide on the newest frame, one at a time, until the slot closes; never dies."""
        while (job := slot.take()) is not None:
            try:
                self._decide(job)
            except Exception as exc:  # a bug here must not stop gating: abstain and go on
                reason = f"error: {type(exc).__name__}: {exc}"
                self.get_logger().error(f"decision failed: {reason}")
                with self._lock:
                    self._in_flight = None
                    if self._phase == ACTIVE:
                        self._event(reason, self._now(), decision_id=job.job_id)
                        self._stats.record(time.monotonic(), False, reason)

    def _decide(self, job: FrameJob) -> None:
        """Decode, check the inputs are fresh, run Guard.decide (with the deadline), publish."""
        with self._lock:
            guard = self._guard
            if self._phase != ACTIVE or guard is None:
                return
            job.job_id = next(self._job_ids)
            self._in_flight = (job.job_id, time.monotonic())
        t0 = time.monotonic()
        instruction = None
        try:
            frame = self._decode(job.msg)
        except ImageError as exc:
            decision = guard.abstain(f"{MALFORMED_IMAGE}: {exc}")
        else:
            with self._lock:
                why, instruction = self._stale_reason(self._now()), self._instruction
            deadline = self._cfg.node.decision_deadline
            decision = (guard.abstain(why) if why else
                        guard.decide(frame, instruction.text, deadline_s=deadline if deadline > 0 else None))
        self._finish(job, decision, instruction, (time.monotonic() - t0) * 1e3)

    def _finish(self, job: FrameJob, decision: Any, instruction: Instruction | None, work_ms: float) -> None:
        """Publish a decision unless it was cancelled; a certified one must still be current."""
        with self._lock:
            self._in_flight = None
            if job.job_id in self._cancelled:
                self._cancelled.discard(job.job_id)
                self._stats.late_discarded += 1
                return
            if self._phase != ACTIVE:
                return
            now = self._now()
            if decision.certified:
                why = self._stale_reason(now)
                if why is None and (self._instruction is None or self._instruction.text != instruction.text):
                    why = f"{SUPERSEDED}: the instruction changed during the decision"
                if why:
                    decision = dataclasses.replace(decision, command=self._cfg.commands.abstain, certified=False,
                                                   reason=why)
            output = Output(decision.command, decision.certified, decision.reason)
            self._gate.on_decision(output, now)
            self._emit(output, now, cmd_vel=not self._gate.quiet(now, self._cfg.node.abstain_publish_timeout))
            total_ms = (time.monotonic() - job.received_mono) * 1e3
            record = decision.to_dict()
            # timing_ms (from the Guard) breaks "decide" down; latency_ms is frame arrival -> publish.
            record.update(self._ros_fields(job, instruction, now), source="decision",
                          latency_ms={"queue": max(0.0, total_ms - work_ms), "decode_and_decide": work_ms,
                                      "total": total_ms})
            self._publish_record(record)
            self._stats.record(time.monotonic(), decision.certified, decision.reason, total_ms)
        if reason_kind(decision.reason) == "fault":
            self.get_logger().error(f"abstain: {decision.reason}", throttle_duration_sec=1.0)

    def _ros_fields(self, job: FrameJob, instruction: Instruction | None, now: float) -> dict[str, Any]:
        """The ROS side of a certificate: stamps, instruction, the statistics settings."""
        s = self._cfg.smoothing
        return {"time": now, "stamp": _stamp_s(job.msg), "frame_id": job.msg.header.frame_id,
                "frame_received": job.received, "instruction": instruction.text if instruction else None,
                "instruction_received": instruction.received if instruction else None,
                "alpha": s.alpha, "sigma": s.sigma, "oracle_error": self._cfg.oracle.error, "mode": s.mode,
                "decision_id": job.job_id, "dropped_frames": self._slot.dropped}

    # -- outputs --------------------------------------------------------------------------

    def _emit(self, output: Output, now: float, cmd_vel: bool) -> None:
        """Publish a command name on ~/command and, unless quiet, its Twist on cmd_vel."""
        self._pub_command.publish(String(data=output.command))
        if not cmd_vel:
            return
        cmd = self._cfg.commands.table[output.command]
        twist = Twist()
        twist.linear.x, twist.linear.y, twist.angular.z = cmd.linear_x, cmd.linear_y, cmd.angular_z
        if self._cfg.node.use_stamped:
            stamped = TwistStamped(twist=twist)
            stamped.header.stamp = self.get_clock().now().to_msg()
            self._pub_twist.publish(stamped)
        else:
            self._pub_twist.publish(twist)

    def _publish_record(self, record: dict[str, Any]) -> None:
        """One JSON object on ~/certificate."""
        self._pub_certificate.publish(String(data=json.dumps(json_safe(record), allow_nan=False)))

    def _event(self, reason: str, now: float, **extra: Any) -> None:
        """An abstain not made by Guard.decide (watchdog, deadline): withdraw the command and
        publish abstain and a certificate at once."""
        self._gate.force_abstain(reason, now)
        self._emit(self._gate.current, now, cmd_vel=not self._gate.quiet(now, self._cfg.node.abstain_publish_timeout))
        self._publish_record({"source": "watchdog", "time": now, "command": self._gate.abstain_command,
                              "certified": False, "reason": reason, **extra})

    # -- timers ---------------------------------------------------------------------------

    def _now(self) -> float:
        """The node's clock (simulation time under use_sim_time), in seconds."""
        return self.get_clock().now().nanoseconds * 1e-9

    def _stale_reason(self, now: float) -> str | None:
        """Why the camera or instruction cannot be trusted at `now`, or None."""
        n = self._cfg.node
        return stale_reason(now, self._frame_time, self._instruction.received if self._instruction else None,
                            n.max_frame_age, n.max_instruction_age)

    def _on_watchdog(self) -> None:
        """Stale camera or instruction -> abstain now (once per cause), on the node's clock."""
        with self._lock:
            if self._phase != ACTIVE:
                return
            now = self._now()
            why = self._stale_reason(now)
            cause = why.split(":", 1)[0] if why else None
            if cause is not None and cause != (self._stale or "").split(":", 1)[0]:
                frame, instruction = self._frame_time, self._instruction.received if self._instruction else None
                self._event(why, now, frame_received=frame, instruction_received=instruction,
                            frame_age=None if frame is None else now - frame,
                            instruction_age=None if instruction is None else now - instruction)
                self._stats.event(why)
                self.get_logger().warning(f"abstain: {why}")
            self._stale = why

    def _on_deadline_check(self) -> None:
        """A decision still running past node.decision_deadline (steady time) -> abstain now."""
        with self._lock:
            deadline = self._cfg.node.decision_deadline
            if self._phase != ACTIVE or self._in_flight is None or deadline <= 0:
                return
            job_id, started = self._in_flight
            elapsed = time.monotonic() - started
            if elapsed <= deadline or job_id in self._cancelled:
                return
            self._cancelled.add(job_id)  # its late result will be discarded
            reason = f"deadline: decision {job_id} still running after {elapsed:.3f} s"
            self._event(reason, self._now(), in_flight_s=elapsed, decision_id=job_id)
            self._stats.record(time.monotonic(), False, reason, elapsed * 1e3)  # this frame's one output
        self.get_logger().error(f"abstain: {reason} (decision_deadline {deadline:g} s)")

    def _on_republish(self) -> None:
        """Republish the current output at node.publish_rate; abstain once a command's TTL is over."""
        with self._lock:
            if self._phase not in (ACTIVE, LOADING_PHASE):
                return
            now = self._now()
            was_certified = self._gate.current.certified
            output = self._gate.tick(now, self._cfg.node.command_ttl)
            if was_certified and not output.certified:
                self._publish_record({"source": "ttl", "time": now, "command": output.command, "certified": False,
                                      "reason": TTL_EXPIRED})
            if not self._gate.quiet(now, self._cfg.node.abstain_publish_timeout):
                self._emit(output, now, cmd_vel=True)

    def _on_diagnostics(self) -> None:
        """State, rates, certified fraction, reasons, drops, latency, device, model, error budget."""
        with self._lock:
            level, message = self._level()
            figures = self._stats.snapshot(time.monotonic(), self._cfg.smoothing.alpha, self._slot.dropped)
            policy = self._guard.policy if self._guard is not None else None
            values = {"state": level.name, "phase": self._phase, "command": self._gate.current.command,
                      "device": str(policy.device) if policy else self._cfg.model.device,
                      "model": f"{self._cfg.model.backend}:{policy.name if policy else self._cfg.model.path}",
                      "alpha": self._cfg.smoothing.alpha, **figures}
            if self._cfg.smoothing.seed >= 0:
                values["seed"] = f"{self._cfg.smoothing.seed} (FIXED: tests only, not a real certificate)"
        status = DiagnosticStatus(level=bytes([int(level)]), name=f"{self.get_name()}: certified command gate",
                                  message=message, hardware_id=values["device"],
                                  values=[KeyValue(key=k, value=_kv(v)) for k, v in values.items()])
        array_msg = DiagnosticArray(status=[status])
        array_msg.header.stamp = self.get_clock().now().to_msg()
        self._pub_diagnostics.publish(array_msg)

    def _level(self) -> tuple[Level, str]:
        """Diagnostic level: ERROR for a model fault or load failure, WARN when not gating."""
        if self.failed or (self._phase == UNCONFIGURED and self._stats.fault):
            return Level.ERROR, self._stats.fault or MODEL_LOAD_FAILED
        if self._phase in (UNCONFIGURED, LOADING_PHASE, INACTIVE_PHASE):
            return Level.WARN, {LOADING_PHASE: "loading the model"}.get(self._phase, self._phase)
        return self._stats.level()

    # -- parameters -----------------------------------------------------------------------

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate a run-time change with config.update, then apply it (Guard.reconfigure)."""
        changes = {p.name: plain_value(p.value) for p in params if p.name in self._param_names}
        if not changes:
            return SetParametersResult(successful=True)
        try:
            new = config.update(self._cfg, changes)
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        with self._lock:
            old, self._cfg = self._cfg, new
            if self._guard is not None:
                self._guard.reconfigure(new)
            if new.node.publish_rate != old.node.publish_rate:
                self.destroy_timer(self._republish_timer)
                self._republish_timer = self.create_timer(1.0 / new.node.publish_rate, self._on_republish)
        self.get_logger().info(f"parameters changed: {changes}")
        return SetParametersResult(successful=True)


def _kv(value: Any) -> str:
    """A diagnostic value as text (dicts as JSON)."""
    if isinstance(value, dict):
        return json.dumps(json_safe(value), sort_keys=True)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------

def _install_signal_handlers(stop: threading.Event) -> None:
    """SIGINT/SIGTERM end the spin loop, so the abstain action can still be published."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())


def main(args: list[str] | None = None) -> int:
    """Console script `rs_guard_node`: exit 0 after a signal, 1 if the model fails to load,
    2 for invalid parameters (the log line names the parameter)."""
    if SignalHandlerOptions is not None:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    else:  # pragma: no cover
        rclpy.init(args=args)
    stop = threading.Event()
    _install_signal_handlers(stop)
    try:
        node = RsGuardNode()
    except ConfigError as exc:
        rclpy.logging.get_logger(config.NODE_NAME).fatal(f"invalid parameters: {exc}")
        if rclpy.ok():
            rclpy.shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    if not node.managed:
        node.start_unmanaged()
    try:
        while not stop.is_set() and not node.failed and rclpy.ok():
            try:
                executor.spin_once(timeout_sec=0.05)
            except ExternalShutdownException:
                break
            except Exception as exc:  # e.g. a message rclpy cannot deserialise: log it, keep gating
                node.get_logger().error(f"executor: {type(exc).__name__}: {exc}", throttle_duration_sec=1.0)
    finally:
        finished = node.close()
        if not finished:
            node.get_logger().error("the model is still busy in a decision; exiting without waiting for it")
        executor.remove_node(node)
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    code = 1 if node.failed else 0
    if not finished:  # the abstain action is out; a thread stuck in native model code would abort a normal exit
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
