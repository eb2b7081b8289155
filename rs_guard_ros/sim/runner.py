"""The scenario runner: plays scenarios against the simulated robot and the guard node.

Three ROS 2 processes take part: the sim (`rs_guard_sim`, owns /clock), the guard
(`rs_guard_node`, use_sim_time) and this runner. The runner sits on the camera link:
it relays the sim's /camera/image_raw (and, for two-view scenarios, /camera_rear/image_raw)
to the guard's input topics, applying the scenario's camera faults and attacks on the way
(the channel a broken driver or an attacker would control), sends the instructions, and
records every decision the guard publishes on ~/certificate against the sim's ground truth
for the decided frame, and the frames the guard saw at its first certified turn.

The sim may run slower than real time (its `real_time_factor`, see demo.py). Every wait
here for something the simulated world has to do (an episode's sim seconds, the guard
noticing the paused camera, an instruction answered by a decision) is a wall-clock bound
divided by that factor, so a slowed world never trips it.

Episodes are separated cleanly: the relay pauses, the runner waits for the guard to
report the stale camera (so no command of the old episode can still be published),
resets the sim and only then sends the new instruction and resumes the relay.
"""
from __future__ import annotations

import bisect
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String

from ..ros.gate_state import NO_FRAME, STALE_FRAME, LatestSlot
from ..images import decode_raw
from .records import TURN_TOWARDS, Episode, Step, bearing_to
from .ros_bridge import LATCHED, REAL_TIME_FACTOR, check_real_time_factor, image_msg
from .scenarios import Fault, Scenario, camera_noise

_CAMERA_LOST = (NO_FRAME, STALE_FRAME)  # watchdog reasons meaning the guard sees no current frame
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
SIM = "/rs_guard_sim"
GUARD = "/rs_guard"
GUARD_IMAGE_TOPIC = "/rs_guard/camera"  # the guard's `image` input, remapped (see demo.py)
GUARD_REAR_IMAGE_TOPIC = "/rs_guard/camera_rear"  # its rear camera's input in two-view runs
# Camera (as config/sim_two_view.yaml names it) -> (the sim's topic, the guard's input it is relayed to)
RELAYS = {"front": ("/camera/image_raw", GUARD_IMAGE_TOPIC), "rear": ("/camera_rear/image_raw", GUARD_REAR_IMAGE_TOPIC)}
RECENT_FRAMES = 64  # relayed frames kept per camera, to show those of the first certified turn
TURNS = ("left", "right")
POLL_S = 0.02
RESAY_S = 0.5  # wall s at real time: repeat an instruction that no decision has answered for this long

# (frame uint8 RGB, instruction, active attack fault) -> (perturbed frame, the base VLA's command on it)
Perturber = Callable[[np.ndarray, str, Fault], tuple[np.ndarray, str | None]]


@dataclass
class _EpisodeLog:
    """What the callbacks collect during one episode (guarded by the runner's lock)."""

    scenario: Scenario
    episode: int
    start: float | None = None  # sim time of the reset
    layout: dict[str, Any] = field(default_factory=dict)
    poses: dict[float, dict[str, Any]] = field(default_factory=dict)  # frame stamp -> pose record
    frames: dict[float, tuple[str, str | None]] = field(default_factory=dict)  # stamp -> (fault, undefended)
    records: list[dict[str, Any]] = field(default_factory=list)  # ~/certificate: decisions and watchdog events
    reached_at: float | None = None
    turned_at: float | None = None  # sim time the target's bearing had shrunk by TURN_TOWARDS (expect: turn)
    now: float = 0.0  # latest sim time seen (pose stamps)
    recent: dict[str, dict[float, Image]] = field(default_factory=dict)  # camera -> stamp -> relayed frame
    first_turn: tuple[float, str, dict[str, np.ndarray]] | None = None  # see records.Episode


def _key(t: float) -> float:
    """Dictionary key of a stamp: sim times are multiples of the physics step, so round to 1 us."""
    return round(t, 6)


class ScenarioRunner(Node):
    """ROS side of the runner: relay with faults, instructions, recording. See the module docstring."""

    def __init__(self, perturber: Perturber | None = None, seed: int = 0, cameras: tuple[str, ...] = ("front",),
                 real_time_factor: float = 1.0) -> None:
        """`cameras`: those relayed (RELAYS), each through its own thread and fault draws;
        `real_time_factor`: the sim's, as started (see `set_real_time_factor`)."""
        super().__init__("rs_guard_scenarios")
        self.real_time_factor = check_real_time_factor(real_time_factor)
        self._lock = threading.Lock()
        self._perturber = perturber
        self._log: _EpisodeLog | None = None
        self._relaying = False
        self._instruction = ""
        self._said_at = 0.0  # time.monotonic() of the last instruction sent
        self._guard_active = False
        self._camera_lost = False  # the guard's latest record says it has no current frame
        self._relayed = False  # any frame forwarded yet (before that the guard has nothing to forget)
        self.relay_error: str | None = None  # a fault or attack that failed: the episode is invalid
        self._slots: dict[str, LatestSlot[Image]] = {}
        self._relay_threads = []
        self._publishing = threading.Lock()  # held around each relayed publish and by close()
        self._closed = False
        for i, camera in enumerate(cameras):
            source, relayed = RELAYS[camera]
            slot: LatestSlot[Image] = LatestSlot()
            publisher = self.create_publisher(Image, relayed, qos_profile_sensor_data)
            self.create_subscription(Image, source, slot.put, qos_profile_sensor_data)
            rng = np.random.default_rng(seed + i)  # one generator per relay thread
            self._slots[camera] = slot
            self._relay_threads.append(threading.Thread(target=self._relay, args=(camera, slot, publisher, rng),
                                                        name=f"{camera}-relay", daemon=True))
        self.pub_instruction = self.create_publisher(String, "/instruction", RELIABLE)
        self.pub_reset = self.create_publisher(String, f"{SIM}/reset", RELIABLE)
        self.create_subscription(String, f"{SIM}/pose", self._on_pose, RELIABLE)
        self.create_subscription(String, f"{SIM}/episode", self._on_episode, LATCHED)
        self.create_subscription(String, f"{GUARD}/certificate", self._on_certificate, RELIABLE)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, RELIABLE)
        self._sim_parameters = self.create_client(SetParameters, f"{SIM}/set_parameters")
        for thread in self._relay_threads:
            thread.start()

    # -- callbacks (executor thread) ------------------------------------------------------
    def _on_pose(self, msg: String) -> None:
        pose = json.loads(msg.data)
        with self._lock:
            log = self._log
            if log is None or log.start is None or pose.get("episode") != log.episode:
                return
            log.now = pose["t"]
            log.poses[_key(pose["t"])] = pose
            if pose.get("reached") and log.reached_at is None:
                log.reached_at = pose["t"] - log.start
            if log.turned_at is None and _turned(log, pose):
                log.turned_at = pose["t"] - log.start

    def _on_episode(self, msg: String) -> None:
        layout = json.loads(msg.data)
        with self._lock:
            if self._log is not None and layout.get("episode") == self._log.episode:
                self._log.layout, self._log.start, self._log.now = layout, layout["t"], layout["t"]

    def _on_certificate(self, msg: String) -> None:
        record = json.loads(msg.data)
        with self._lock:
            # A decision refused for a stale frame says the same as the watchdog: it may come
            # after the watchdog's report (a decision running when the camera paused), and the
            # watchdog reports the loss only once.
            if str(record.get("reason", "")).startswith(_CAMERA_LOST):
                self._camera_lost = True
            elif record.get("source") == "decision":
                self._camera_lost = False
            if record.get("source") in ("decision", "watchdog") and self._log is not None:
                self._log.records.append(record)
                self._keep_first_turn(record, self._log)

    def _keep_first_turn(self, record: dict[str, Any], log: _EpisodeLog) -> None:
        """At the episode's first certified turn, keep the frames (every camera) it was decided on:
        those with the record's (first camera's) stamp -- the sim stamps the frames of one step
        alike, and a decision on frames of different steps exceeds node.max_camera_skew."""
        if log.first_turn is not None or log.start is None or not record.get("certified") \
                or record.get("source") != "decision" or record.get("command") not in TURNS:
            return
        key = _key(record.get("stamp", -1.0))
        msgs = {camera: frames.get(key) for camera, frames in log.recent.items()}
        if msgs and all(msg is not None for msg in msgs.values()):
            log.first_turn = (max(0.0, key - log.start), record["command"], {
                camera: decode_raw(m.height, m.width, m.encoding, m.is_bigendian, m.step, m.data)
                for camera, m in msgs.items()})

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if values.get("phase") == "active":
                with self._lock:
                    self._guard_active = True

    # -- camera relay (own thread: an attack may take longer than a frame period) ---------
    def _relay(self, camera: str, slot: LatestSlot[Image], publisher: Any, rng: np.random.Generator) -> None:
        """Forward `camera`'s newest sim frame to the guard, through the episode's faults."""
        while (msg := slot.take()) is not None:
            with self._lock:
                log, relaying, instruction = self._log, self._relaying, self._instruction
            if not relaying or log is None or log.start is None:
                continue
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            try:
                out, fault, undefended = self._apply_faults(msg, log.scenario.active_faults(stamp - log.start),
                                                            instruction, stamp, log, rng)
            except Exception as exc:  # noqa: BLE001 -- reported by run_episode; the relay stays up
                self.relay_error = f"camera relay: {type(exc).__name__}: {exc}"
                continue
            if out is not None:
                stamp = out.header.stamp.sec + out.header.stamp.nanosec * 1e-9
            with self._lock:  # the cameras of one step share a stamp: a fault on any of them labels it
                previous = log.frames.get(_key(stamp), ("", None))
                log.frames[_key(stamp)] = (fault or previous[0], undefended or previous[1])
                if out is not None:
                    recent = log.recent.setdefault(camera, {})
                    recent[_key(stamp)] = out
                    if len(recent) > RECENT_FRAMES:
                        del recent[next(iter(recent))]  # the oldest (insertion order)
            if out is not None:
                with self._publishing:
                    if self._closed:  # a fault outlasted close()'s wait: the publisher is going away
                        return
                    publisher.publish(out)
                self._relayed = True

    def _apply_faults(self, msg: Image, faults: tuple[Fault, ...], instruction: str, stamp: float,
                      log: _EpisodeLog, rng: np.random.Generator) -> tuple[Image | None, str, str | None]:
        """(message to forward or None, fault label, base VLA's command under attack).

        An attacked frame is re-stamped with the sim time it is sent at: an attacker on the
        link forges fresh stamps, so the guard's frame-age check cannot be what stops it.
        """
        kinds = {f.kind: f for f in faults}
        if "stall" in kinds:
            return None, "stall", None
        if "drop" in kinds and rng.random() < kinds["drop"].probability:
            return None, "drop", None
        if not {"noise", "attack"} & set(kinds):
            return msg, "", None
        rgb = decode_raw(msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step, msg.data)
        undefended = None
        if "noise" in kinds:
            rgb = camera_noise(rgb, kinds["noise"].sigma, rng)
        if "attack" in kinds and self._perturber is not None:
            rgb, undefended = self._perturber(rgb, instruction, kinds["attack"])
            with self._lock:
                stamp = log.now  # a pose (and ground truth) exists at every frame time
        label = "+".join(k for k in ("noise", "attack") if k in kinds)
        return image_msg(rgb, stamp, msg.header.frame_id), label, undefended

    # -- episode control (caller's thread) -------------------------------------------------
    def wall(self, seconds: float) -> float:
        """A wall-clock bound set for real time, stretched to the sim's real-time factor."""
        return seconds / self.real_time_factor

    def set_real_time_factor(self, factor: float, timeout_s: float) -> None:
        """Set the sim's `real_time_factor` (its parameter service); RuntimeError if it does not accept it."""
        parameter = Parameter(REAL_TIME_FACTOR, value=float(factor)).to_parameter_msg()
        request = SetParameters.Request(parameters=[parameter])
        if not self._sim_parameters.wait_for_service(timeout_sec=timeout_s):
            raise RuntimeError(f"the sim's parameter service did not appear within {timeout_s:.0f} s")
        future = self._sim_parameters.call_async(request)
        if not _wait(future.done, timeout_s) or future.result() is None:
            raise RuntimeError(f"the sim did not answer setting {REAL_TIME_FACTOR} within {timeout_s:.0f} s")
        result = future.result().results[0]
        if not result.successful:
            raise RuntimeError(f"the sim refused {REAL_TIME_FACTOR} {factor}: {result.reason}")
        self.real_time_factor = check_real_time_factor(factor)

    def wait_guard_active(self, timeout_s: float) -> bool:
        """Until the guard's diagnostics say it is active (model loaded)."""
        return _wait(lambda: self._guard_active, timeout_s)

    def run_episode(self, scenario: Scenario, episode: int, timeout_s: float,
                    progress: Callable[[float], None] | None = None) -> Episode:
        """Play one scenario to its end (target reached, turn made, or time limit) and return its
        record; `timeout_s` bounds each wait at real time (stretched by the real-time factor)."""
        timeout_s = self.wall(timeout_s)
        self._quiesce(timeout_s)
        log = _EpisodeLog(scenario, episode)
        with self._lock:
            self._log = log
        reset = {"episode": episode, "robot": list(scenario.robot), "objects": {k: list(v) for k, v in
                 scenario.objects.items()}, "seed": scenario.seed, "target": scenario.target}
        # Re-sent until acknowledged (a reliable publisher still loses what it sends before it
        # has matched the sim's subscription); the sim ignores repeats of its current episode.
        acknowledged = False
        for _ in range(int(timeout_s)):
            self.pub_reset.publish(String(data=json.dumps(reset)))
            if acknowledged := _wait(lambda: log.start is not None, 1.0):
                break
        if not acknowledged:
            raise RuntimeError(f"the sim did not acknowledge the reset of episode {episode} "
                               f"within {timeout_s:.0f} s: is rs_guard_sim running in this ROS_DOMAIN_ID?")
        pending = list(scenario.instructions)
        while pending and pending[0].at <= 0.0:  # the guard hears the task before it sees a frame
            self._say(pending.pop(0).text)
        with self._lock:
            self._relaying = True
        deadline = time.monotonic() + timeout_s + self.wall(scenario.time_limit) * 20
        while time.monotonic() < deadline:
            with self._lock:
                elapsed = log.now - log.start
                done = elapsed >= scenario.time_limit or (scenario.expect == "reach" and log.reached_at is not None) \
                    or (scenario.expect == "turn" and log.turned_at is not None)
            while pending and pending[0].at <= elapsed:
                self._say(pending.pop(0).text)
            self._resay_if_unheard(log)
            if progress:
                progress(min(elapsed, scenario.time_limit))
            if done:
                break
            time.sleep(POLL_S)
        else:
            raise RuntimeError(f"scenario {scenario.name}: sim time stopped at {elapsed:.1f} s of "
                               f"{scenario.time_limit:.0f} s: see the sim log")
        with self._lock:
            self._relaying = False
            duration = log.now - log.start
        if self.relay_error:
            raise RuntimeError(f"scenario {scenario.name}: {self.relay_error}")
        return self._episode(log, duration)

    def _quiesce(self, timeout_s: float) -> None:
        """Stop the relay and wait until the guard's latest record is "camera lost" (then it abstains).

        The guard reports the loss once, on the transition; if a fault had already made it
        lost and no decision followed, that report still stands.
        """
        with self._lock:
            self._relaying, self._log = False, None
        if self._relayed and not _wait(lambda: self._camera_lost, timeout_s):
            raise RuntimeError(f"the guard did not report the paused camera within {timeout_s:.0f} s")

    def _say(self, text: str) -> None:
        with self._lock:
            self._instruction = text
            self._said_at = time.monotonic()
        self.pub_instruction.publish(String(data=text))

    def _resay_if_unheard(self, log: _EpisodeLog) -> None:
        """Repeat the instruction if the guard's decisions show it did not arrive (volatile QoS)."""
        with self._lock:
            text, said_at = self._instruction, self._said_at
            said = [d for d in log.records if d.get("source") == "decision"]
            last = said[-1].get("instruction") if said else None
        if text and last != text and time.monotonic() - said_at > self.wall(RESAY_S):
            self._say(text)

    def _episode(self, log: _EpisodeLog, duration: float) -> Episode:
        """Join decisions with the pose and fault of the frame they decided on."""
        with self._lock:
            records, poses, frames = list(log.records), dict(log.poses), dict(log.frames)
        ordered = sorted(poses)
        steps = sorted((s for s in (_step(d, poses, ordered, frames, log.start) for d in records) if s is not None),
                       key=lambda s: s.t)
        trajectory = sorted((p["t"] - log.start, p["x"], p["y"], p["yaw"]) for p in poses.values())
        objects = {name: tuple(xy) for name, xy in log.layout.get("objects", {}).items()}
        s = log.scenario
        return Episode(scenario=s.name, target=s.target, objects=objects, steps=steps, trajectory=trajectory,
                       duration=duration, time_limit=s.time_limit, reached_at=log.reached_at,
                       real_time_factor=self.real_time_factor,
                       expect_reach=s.expect == "reach", description=s.description,
                       faults=[(f.start, min(f.start + f.duration, duration), f.kind) for f in s.faults
                               if f.start < duration], expect_turn=s.expect == "turn", first_turn=log.first_turn)

    def close(self) -> None:
        """Stop the relay threads; none publishes once this returns (the node may then be destroyed)."""
        with self._publishing:
            self._closed = True
        for slot in self._slots.values():
            slot.close()
        for thread in self._relay_threads:
            thread.join(timeout=5)


def _step(record: dict[str, Any], poses: dict[float, dict[str, Any]], ordered: list[float],
          frames: dict[float, tuple[str, str | None]], start: float) -> Step | None:
    """A Step for one ~/certificate record of this episode, None for anything before the reset.

    A decision is placed at its frame's stamp (pose, ground truth and fault of that frame); a
    watchdog abstain (camera lost, deadline) at the event's time, with the latest pose then.
    """
    if record.get("source") == "decision":
        key = _key(record.get("stamp", -1.0))
        if key not in poses or key not in frames:
            return None
        pose, (fault, undefended) = poses[key], frames[key]
    else:
        i = bisect.bisect_right(ordered, _key(record.get("time", -1.0))) - 1
        if i < 0:
            return None
        key = ordered[i]
        pose, fault, undefended = poses[key], frames.get(key, ("", None))[0], None
    latency = (record.get("latency_ms") or {}).get("total") or 0.0
    t, sent = max(0.0, key - start), record.get("time")  # "time": the node clock (sim time) at publishing
    return Step(t=t, published=None if sent is None else max(t, sent - start), truth=pose["truth"],
                command=record["command"], certified=bool(record["certified"]), radius=record.get("radius") or 0.0,
                threshold=record.get("threshold") or 0.0, n_used=record.get("n_used") or 0, latency_ms=latency,
                reason=record.get("reason", ""), x=pose["x"], y=pose["y"], yaw=pose["yaw"], fault=fault,
                undefended=undefended, source="decision" if record.get("source") == "decision" else "watchdog")


def _turned(log: _EpisodeLog, pose: dict[str, Any]) -> bool:
    """Whether the target's |bearing| at `pose` is TURN_TOWARDS below the episode's first pose's
    (the success of an `expect: turn` scenario, records.episode_metrics)."""
    target = log.layout.get("objects", {}).get(log.scenario.target)
    if log.scenario.expect != "turn" or target is None or not log.poses:
        return False
    first = log.poses[min(log.poses)]
    start, now = ((0.0, p["x"], p["y"], p["yaw"]) for p in (first, pose))
    return abs(bearing_to(start, target)) - abs(bearing_to(now, target)) >= TURN_TOWARDS


def _wait(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll `condition` until true or `timeout_s` (wall) passes."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True
