"""rs_guard: the certified command gate as a ROS 2 node, a thin adapter between ROS
messages and `Guard`.

    rs_guard_node --ros-args --params-file config/sim_diffdrive.yaml -r image:=/camera/image_raw
    ros2 run rs_guard_ros rs_guard_node --ros-args --params-file ...   (with a ROS 2 install)

Topics (all remappable):
  in   image              sensor_msgs/Image, or CompressedImage on image/compressed when
                          node.image_transport is "compressed"; best effort, keep last 1.
                          With several cameras, one per camera: cameras.<name>.topic
  in   joint_states       sensor_msgs/JointState on state.topic, when set; best effort, keep last 1
  in   instruction        std_msgs/String; reliable, volatile, keep last 1
  out  ~/command          std_msgs/String: the certified command or the abstain command
  out  cmd_vel            geometry_msgs/Twist (TwistStamped with node.use_stamped)
  out  ~/certificate      std_msgs/String: one JSON object per decision or watchdog event
  out  /diagnostics       diagnostic_msgs/DiagnosticArray every node.diagnostics_period

The pieces: params.py applies the parameters (fail-closed), io.py owns the topics and
what is published on them, worker.py owns the decision thread and the freshness rules,
sync.py the rules across cameras and the joint state. This module wires them to the
lifecycle, the timers and the parameter services.

Threads. The executor (main thread) runs subscriptions, timers and the parameter and
lifecycle services; one decision thread takes the newest frames from a one-deep mailbox
(older ones are dropped and counted) and runs `Guard.decide`. With several cameras a
decision is asked for once every camera has sent a new frame, and takes the newest of each.

Outputs. Every decision publishes exactly one output: the certified command and its
Twist, or the abstain action (the abstain command's Twist, zero by default) with the
reason in its record. A frame older than node.max_frame_age (from its header stamp, or its
arrival when unstamped) when deciding or publishing, a stamp ahead of the node clock by
more than node.max_stamp_lead, frames of several cameras whose stamps spread more than
node.max_camera_skew, a camera that stops (any message on its topic counts as alive), a
joint state that is missing, older than state.max_age or lacks a joint of
state.joint_names, a missing or expired instruction, a model past node.decision_deadline (0 = no
deadline), a model or oracle exception and a malformed message all abstain. Between
decisions the current output is republished at node.publish_rate until its frame's time
+ node.command_ttl, then the abstain action; after node.abstain_publish_timeout s of
continuous abstain (0 = never) cmd_vel goes quiet.

Clocks. Frame, instruction and command ages are measured on the node's clock, so they
follow /clock under use_sim_time, and so do the watchdog, republish and diagnostics
timers. The decision deadline counts on simulation time under use_sim_time, else on the
steady clock (`_deadline_now`); it is passed to `Guard.decide`, checked again at publishing,
and watched by a timer that abstains (and discards the late result) when a model hangs.

Parameters. Run-time changes are validated by config.update in the on-set callback (a
parameter of the guarantee may only tighten; the memory budget is checked against the
loaded model) and applied after they are set (Guard.reconfigure swaps the whole
configuration; a decision in progress keeps the one it started with, and its record
reports that one). Each accepted change is logged and counted in /diagnostics.

Lifecycle. The node is a lifecycle node: configure loads the model, activate starts
gating, deactivate publishes the abstain action once and stops. With node.managed false
(the default) it configures and activates itself, loading the model in the background
while it publishes the abstain action. SIGINT/SIGTERM publish the abstain action, wait
for it to be acknowledged, then exit.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Sequence

import rclpy
import rclpy.logging
from rclpy.logging import LoggingSeverity
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from .. import __version__, config
from ..config import Config, ConfigError
from .gate_state import (ACTIVE, FINALIZED, INACTIVE, INACTIVE_PHASE, LOADING_PHASE, MODEL_LOAD_FAILED, SHUTDOWN,
                         UNCONFIGURED, WITHDRAWN_BY_INSTRUCTION, Level, frame_time)
from .io import CMD_VEL_TOPIC, COMPRESSED_IMAGE_TOPIC, IMAGE_TOPIC, INSTRUCTION_TOPIC, GateIO, stamp_s, subscribe
from .params import check_command_line, declare_parameters, plain_value
from .sync import CameraFrame, ViewRounds, joint_sample
from .worker import DecisionWorker, FrameJob, GateContext, Instruction

# Run-time parameter changes are validated in the on-set callback and applied in a post-set
# callback, which rclpy has from Iron on; on Humble they are applied at the end of the on-set one.
POST_SET_CALLBACKS = hasattr(LifecycleNode, "add_post_set_parameters_callback")
SHUTDOWN_ACK_TIMEOUT_S = 1.0
SHUTDOWN_DECISION_WAIT_S = 5.0  # at most this long (and the decision deadline) for a decision in flight


class RsGuardNode(LifecycleNode):
    """Camera + instruction in, certified command (or the abstain action) out."""

    def __init__(self, argv: Sequence[str] = (), **kwargs: Any):
        """Apply the parameters (`argv`: the process's command line, whose --params-file
        entries are checked to apply to this node; ConfigError if anything given cannot be
        applied), then publishers, subscriptions and timers."""
        super().__init__(config.NODE_NAME, automatically_declare_parameters_from_overrides=True, **kwargs)
        cfg = declare_parameters(self, argv)
        self._param_names = {s.name for s in cfg.specs()}
        self._pending: Config | None = None  # validated by the on-set callback, applied after
        self.managed = cfg.node.managed
        self.failed = False
        self._ctx = GateContext(cfg=cfg, io=GateIO(self, cfg), now=self._now, logger=self.get_logger(),
                                deadline_now=self._deadline_now)
        self._worker = DecisionWorker(self._ctx)
        subscribe(self, cfg, self._on_image, self._on_instruction, self._on_state)
        self._republish_timer = self.create_timer(1.0 / cfg.node.publish_rate, self._on_republish)
        self.create_timer(cfg.node.watchdog_period, self._worker.watch_inputs)
        self.create_timer(cfg.node.watchdog_period, self._worker.watch_deadline,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.create_timer(cfg.node.diagnostics_period, self._on_diagnostics)
        self.add_on_set_parameters_callback(self._validate_parameters)
        if POST_SET_CALLBACKS:
            self.add_post_set_parameters_callback(self._apply_parameters)

    def _now(self) -> float:
        """The node's clock (simulation time under use_sim_time), in seconds."""
        return self.get_clock().now().nanoseconds * 1e-9

    def _deadline_now(self) -> float:
        """The clock node.decision_deadline counts on, in seconds: simulation time under
        use_sim_time (a slow computer slows the simulated world instead of failing every
        decision), else the steady clock (a wall-clock jump cannot stretch a deadline)."""
        clock = self.get_clock()
        return clock.now().nanoseconds * 1e-9 if clock.ros_time_is_active else time.monotonic()

    # -- lifecycle ----------------------------------------------------------------------

    def start_unmanaged(self) -> None:
        """Configure and activate in the background, publishing abstain while the model loads."""
        self._ctx.phase = LOADING_PHASE

        def bring_up() -> None:
            ok = self._transition(self.trigger_configure)
            with self._ctx.lock:
                if self._ctx.phase == FINALIZED:  # shut down while loading
                    return
            if not ok or not self._transition(self.trigger_activate):
                self.failed = True

        threading.Thread(target=bring_up, name="rs_guard_load", daemon=True).start()

    def _transition(self, trigger: Callable[[], TransitionCallbackReturn]) -> bool:
        """Whether a lifecycle transition we trigger succeeds. One the state machine refuses (the
        node was driven from outside meanwhile) returns ERROR from Kilted's rclpy on, but raises
        RCLError on Humble's and Jazzy's: both count as a failure, and the reason is logged."""
        try:
            return trigger() == TransitionCallbackReturn.SUCCESS
        except Exception as exc:  # RCLError is not public API: any error here is a failed bring-up
            self.get_logger().error(f"lifecycle transition refused: {type(exc).__name__}: {exc}")
            return False

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model; failure leaves the node unconfigured (and publishing nothing but abstain)."""
        ctx = self._ctx
        try:
            from ..guard import Guard  # torch is imported here, after the publishers exist
            from ..policies import quiet_model_loading

            quiet_model_loading()  # no progress bars in the node's log
            guard = Guard.from_config(ctx.cfg)
        except Exception as exc:  # any load failure (missing files, bad plugin, CUDA) is reported
            self.get_logger().fatal(f"{MODEL_LOAD_FAILED}: {type(exc).__name__}: {exc}")
            ctx.stats.note(f"{MODEL_LOAD_FAILED}: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"model loaded: {ctx.cfg.model.backend} {guard.policy.name} on {guard.policy.device}")
        if ctx.cfg.node.startup_report:
            self._report_speed(guard)
        with ctx.lock:
            if ctx.phase == FINALIZED:
                return TransitionCallbackReturn.FAILURE
            if guard.cfg is not ctx.cfg:  # parameters changed while loading
                guard.reconfigure(ctx.cfg)
            ctx.guard, ctx.phase = guard, INACTIVE_PHASE
            self._worker.start()
        return TransitionCallbackReturn.SUCCESS

    def _report_speed(self, guard: Any) -> None:
        """Measure the loaded model once and log what `rs-guard doctor` would print: whether
        every command keeps up with every time bound on this machine (warnings where not), then
        check the first decisions on camera frames against the measurement (doctor.FirstDecisions).
        Runs before gating starts; a failure is only logged."""
        from .. import doctor

        log = self.get_logger()
        try:
            # two timed decisions per size: the line goes through the faster of each (a stable intercept)
            report = doctor.run(guard, repeats=2, raw_batches=1, check=False)
            lines = doctor.format_report(report).splitlines()
        except Exception as exc:  # a speed report must never keep the gate from starting
            log.warning(f"start-up speed report failed: {type(exc).__name__}: {exc}")
            return
        for line in lines:
            (log.info if report["feasible"] else log.warning)(line)
        with self._ctx.lock:
            self._ctx.first_decisions = doctor.FirstDecisions(self._ctx.cfg, report)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start gating: abstain until the first decision. Refused once shutdown has begun."""
        with self._ctx.lock:
            if self._ctx.phase == FINALIZED:
                return TransitionCallbackReturn.FAILURE
            self._ctx.phase, self._ctx.rounds = ACTIVE, ViewRounds(self._ctx.cfg.cameras.names)
            self._worker.reset_watch()
            self._ctx.io.gate.force_abstain(INACTIVE, self._now())
        self.get_logger().info("gate active")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop gating; publish the abstain action once (an inactive node then stays quiet)."""
        self._withdraw(INACTIVE_PHASE, INACTIVE)
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release the model."""
        self._worker.stop()
        with self._ctx.lock:
            self._ctx.guard, self._ctx.phase = None, UNCONFIGURED
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Publish the abstain action and stop deciding for good."""
        self.close()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A failed transition: abstain, release the decision thread, back to unconfigured."""
        self._withdraw(UNCONFIGURED, "error")
        self._worker.stop()
        return TransitionCallbackReturn.SUCCESS

    def _withdraw(self, phase: str, reason: str) -> None:
        """Leave ACTIVE: forget pending frames, discard the decision in flight, publish abstain once."""
        with self._ctx.lock:
            was, self._ctx.phase = self._ctx.phase, phase
            self._worker.withdraw()
            if was in (ACTIVE, LOADING_PHASE):
                self._ctx.abstain("lifecycle", reason, self._now())

    def close(self) -> bool:
        """Shutdown: publish the abstain action (even when quiet), wait for it to be acknowledged,
        and let a decision in flight end (within its deadline). False if the model is still busy."""
        with self._ctx.lock:
            if self._ctx.phase == FINALIZED:
                return not self._worker.running
            self._ctx.phase = FINALIZED
            self._ctx.abstain("lifecycle", SHUTDOWN, self._now())
        self._ctx.io.wait_acked(SHUTDOWN_ACK_TIMEOUT_S)
        deadline = self._ctx.cfg.node.decision_deadline
        return self._worker.stop(wait_s=min(deadline, SHUTDOWN_DECISION_WAIT_S) if deadline > 0
                                 else SHUTDOWN_DECISION_WAIT_S)

    # -- inputs -------------------------------------------------------------------------

    def _on_image(self, camera: str, msg: Any) -> None:
        """Note a camera's newest frame (the camera is alive); once every camera has a new one,
        hand the newest of each to the decision thread."""
        now = self._now()
        with self._ctx.lock:
            if self._ctx.phase != ACTIVE or self._ctx.rounds is None:
                return
            views = self._ctx.rounds.arrive(CameraFrame(camera, msg, frame_time(stamp_s(msg), now), now))
        if views is not None:
            self._worker.offer(FrameJob(views, time.monotonic()))

    def _on_state(self, msg: JointState) -> None:
        """Keep the newest joint state (a malformed one is kept too: the decision names what is wrong)."""
        sample = joint_sample(stamp_s(msg), self._now(), msg.name, msg.position)
        with self._ctx.lock:
            self._ctx.joint_state = sample

    def _on_instruction(self, msg: String) -> None:
        """Keep the latest instruction (recorded in every phase: it is not re-sent). A command
        certified for a different instruction is withdrawn at once: the abstain action goes out
        now, not when the command's TTL ends."""
        with self._ctx.lock:
            now = self._now()
            self._ctx.instruction = Instruction(msg.data, now)
            if self._ctx.io.gate.superseded_by(msg.data):
                self._ctx.abstain("instruction", WITHDRAWN_BY_INSTRUCTION, now)
                self._ctx.stats.event(WITHDRAWN_BY_INSTRUCTION)

    # -- timers -------------------------------------------------------------------------

    def _on_republish(self) -> None:
        """Republish the current output at node.publish_rate (abstain once a command's TTL is over)."""
        with self._ctx.lock:
            if self._ctx.phase in (ACTIVE, LOADING_PHASE):
                n = self._ctx.cfg.node
                self._ctx.io.republish(self._now(), n.command_ttl, n.abstain_publish_timeout)

    def _on_diagnostics(self) -> None:
        """State, rates, certified fraction, reasons, drops, latency, device, model, error budget."""
        ctx = self._ctx
        with ctx.lock:
            cfg, level, message = ctx.cfg, *self._level()
            policy = ctx.guard.policy if ctx.guard is not None else None
            values = {"state": level.name, "phase": ctx.phase, "command": ctx.io.current.command,
                      "device": str(policy.device) if policy else cfg.model.device,
                      "model": f"{cfg.model.backend}:{policy.name if policy else cfg.model.path}",
                      "alpha": cfg.smoothing.alpha,
                      **ctx.stats.snapshot(time.monotonic(), cfg.smoothing.alpha, self._worker.dropped)}
            if cfg.oracle.error > 0.0:  # the oracle's bound holds at its own level alpha_O
                values.update(oracle_error=cfg.oracle.error, oracle_error_alpha=cfg.oracle.error_alpha)
            if cfg.smoothing.seed >= 0:
                values["seed"] = f"{cfg.smoothing.seed} (FIXED: tests only, not a real certificate)"
        ctx.io.diagnostics(level, message, values["device"], values)

    def _level(self) -> tuple[Level, str]:
        """Diagnostic level: ERROR for a model fault or load failure, WARN when not gating."""
        phase, stats = self._ctx.phase, self._ctx.stats
        if self.failed or (phase == UNCONFIGURED and stats.fault):
            return Level.ERROR, stats.fault or MODEL_LOAD_FAILED
        if phase in (UNCONFIGURED, LOADING_PHASE, INACTIVE_PHASE):
            return Level.WARN, {LOADING_PHASE: "loading the model"}.get(phase, phase)
        return stats.level()

    # -- parameters -----------------------------------------------------------------------

    def _validate_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """On-set callback: validate a run-time change with config.update (ConfigError names
        the parameter); applied by `_apply_parameters` once rclpy has set it."""
        changes = {p.name: plain_value(p.value) for p in params if p.name in self._param_names}
        if not changes:
            return SetParametersResult(successful=True)
        try:
            self._pending = config.update(self._ctx.cfg, changes)
            with self._ctx.lock:
                if self._ctx.guard is not None:
                    self._ctx.guard.check_budget(self._pending)
        except ConfigError as exc:
            self._pending = None
            return SetParametersResult(successful=False, reason=str(exc))
        if not POST_SET_CALLBACKS:  # Humble
            self._apply_parameters(params)
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params: list[Parameter]) -> None:
        """Post-set callback: adopt the validated configuration (Guard.reconfigure swaps it;
        a decision in progress keeps the one it started with)."""
        new, self._pending = self._pending, None
        changes = {p.name: plain_value(p.value) for p in params if p.name in self._param_names}
        if new is None or not changes:
            return
        with self._ctx.lock:
            old, self._ctx.cfg = self._ctx.cfg, new
            if self._ctx.guard is not None:
                self._ctx.guard.reconfigure(new)
            if new.node.publish_rate != old.node.publish_rate:
                self.destroy_timer(self._republish_timer)
                self._republish_timer = self.create_timer(1.0 / new.node.publish_rate, self._on_republish)
            before, after = old.to_flat(), new.to_flat()
            change = ", ".join(f"{name} {before[name]!r} -> {after[name]!r}" for name in changes)
            self._ctx.stats.parameter_change(change)
        self.get_logger().warning(f"run-time parameter change: {change}")


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------

def _install_signal_handlers(stop: threading.Event) -> None:
    """SIGINT/SIGTERM end the spin loop, so the abstain action can still be published."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())


USAGE = """usage: rs_guard_node [--help] [--version] --ros-args --params-file FILE [-r image:=TOPIC] [-p NAME:=VALUE]

The rs_guard certified command gate: publishes a command on cmd_vel only when randomized
smoothing certifies the VLA's output for the camera frame, else the abstain action.

  --params-file FILE   config/<robot>.yaml (every parameter, range and description:
                       config/default.yaml); -r remaps the topics image, image/compressed,
                       instruction and cmd_vel
  -p NAME:=VALUE       validated as in a file, over the files' values; an empty string is
                       -p "NAME:=''" (quoted: a shell turns NAME:='' into NAME:=, which rcl refuses)
  can it keep up?      rs-guard doctor --config FILE   (measures the model against the deadline)

exit status: 0 after SIGINT/SIGTERM (the abstain action is the last word), 1 the model failed
to load, 2 the node could not start: a parameter, parameter file or ROS argument could not be
applied (one log line names it)
"""
EXIT_CANNOT_START = 2


def _own_flags(argv: Sequence[str]) -> list[str]:
    """The arguments before --ros-args (the node's own, not ROS's)."""
    args = list(argv[1:])
    return args[:args.index("--ros-args")] if "--ros-args" in args else args


def _cannot_start(exc: Exception) -> int:
    """A start-up failure as one fatal log line (stderr) naming what failed; exit code 2."""
    what = "invalid parameters" if isinstance(exc, ConfigError) else f"cannot start: {type(exc).__name__}"
    rclpy.logging.get_logger(config.NODE_NAME).fatal(f"{what}: {' '.join(str(exc).split())}")
    if rclpy.ok():
        rclpy.shutdown()
    return EXIT_CANNOT_START


def _start(argv: Sequence[str], stop: threading.Event) -> RsGuardNode:
    """rclpy and the node, from the command line checked first (rcl answers its own errors with a
    traceback); ConfigError or whatever rclpy raises when something given cannot be applied."""
    check_command_line(argv)
    # rcl logs a generic "Failed to parse global arguments" before raising what failed: hold
    # it back, so the one line main() logs is the whole story.
    rclpy.logging.set_logger_level("rcl", LoggingSeverity.FATAL)
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)  # the node handles SIGINT/SIGTERM
    if rclpy.logging.get_logger_effective_level("rcl") == LoggingSeverity.FATAL:  # not set by --log-level
        rclpy.logging.set_logger_level("rcl", LoggingSeverity.UNSET)
    _install_signal_handlers(stop)
    return RsGuardNode(argv)


def main(args: list[str] | None = None) -> int:
    """Console script `rs_guard_node`: exit 0 after a signal, 1 if the model fails to load,
    2 if it cannot start (one log line names the parameter, file or argument); --help and
    --version answer without starting ROS."""
    argv = sys.argv if args is None else args
    own = _own_flags(argv)
    if "--version" in own:
        print(f"rs_guard_node {__version__}")
        return 0
    if "-h" in own or "--help" in own:
        print(USAGE, end="")
        return 0
    stop = threading.Event()
    try:
        node = _start(argv, stop)
    except Exception as exc:  # every start-up failure is one line and exit 2, never a traceback
        return _cannot_start(exc)
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


__all__ = ["RsGuardNode", "main", "IMAGE_TOPIC", "COMPRESSED_IMAGE_TOPIC", "INSTRUCTION_TOPIC", "CMD_VEL_TOPIC"]


if __name__ == "__main__":
    sys.exit(main())
