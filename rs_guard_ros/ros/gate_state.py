"""The node's ROS-free bookkeeping: what to publish between decisions, when a frame or
an instruction is too old (or too new) to act on, the newest-frame mailbox, bounded
summaries of untrusted text for records, and the statistics behind /diagnostics.

The ROS adapter (node.py and the ros_*.py modules) calls into these small, separately
tested pieces; no rclpy here. Times are plain float seconds: `now` arguments are on the
node's clock (ROS time, i.e. simulation time under use_sim_time); latencies and rates use
time.monotonic(), since compute time and decisions per hour are wall-clock matters.
"""
from __future__ import annotations

import hashlib
import math
import re
import threading
from collections import Counter, deque
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")

# Reasons the node itself gives (the Guard's own are "certified", "radius_below_threshold",
# "threshold_unreachable", "unknown_output", "input: ...", "model: ...", "deadline: ...", "error: ...").
NO_FRAME = "no_frame"
STALE_FRAME = "stale_frame"
FUTURE_STAMP = "future_stamp"
NO_INSTRUCTION = "no_instruction"
STALE_INSTRUCTION = "stale_instruction"
MALFORMED_IMAGE = "malformed_image"
TTL_EXPIRED = "ttl_expired"
LOADING = "loading"
INACTIVE = "inactive"
SHUTDOWN = "shutdown"
MODEL_LOAD_FAILED = "model_load_failed"
SUPERSEDED = "superseded"
CAMERA_SKEW = "camera_skew"
NO_STATE = "no_state"
STALE_STATE = "stale_state"
MALFORMED_STATE = "malformed_state"
WITHDRAWN_BY_INSTRUCTION = f"{SUPERSEDED}: a new instruction withdrew the certified command"

# Phases of the node. Only ACTIVE decides; LOADING (unmanaged start-up) republishes abstain.
UNCONFIGURED, LOADING_PHASE, INACTIVE_PHASE, ACTIVE, FINALIZED = (
    "unconfigured", "loading", "inactive", "active", "finalized")

_MAX_REASON_KEYS = 24  # distinct abstain-reason keys kept in diagnostics; the rest count as "other"
CLOCK_MISMATCH_S = 60.0  # a frame/node clock offset this large is a clock set-up error, not a slow camera
INSTRUCTION_PREFIX_CHARS = 80  # how much of an instruction a record repeats
MAX_TEXT_CHARS = 300  # longest reason or frame id a record repeats


class Level(IntEnum):
    """diagnostic_msgs/DiagnosticStatus levels."""

    OK = 0
    WARN = 1
    ERROR = 2


def reason_kind(reason: str) -> str:
    """Classify a decision reason: certified | uncertain | stale | input | lifecycle | fault.

    "fault" (a model or oracle that raised, hung, returned NaN or garbage, or failed to
    load) makes diagnostics ERROR; "stale", "input" and "lifecycle" make them WARN; an
    abstain because the vote was not strong enough ("uncertain") is the gate working.
    """
    head = reason.split(":", 1)[0].strip()
    if head == "certified":
        return "certified"
    if head in ("error", "deadline", "model", MODEL_LOAD_FAILED):
        return "fault"
    if head in (NO_FRAME, STALE_FRAME, FUTURE_STAMP, NO_INSTRUCTION, STALE_INSTRUCTION, TTL_EXPIRED, SUPERSEDED,
                CAMERA_SKEW, NO_STATE, STALE_STATE):
        return "stale"
    if head in ("input", MALFORMED_IMAGE, MALFORMED_STATE):
        return "input"
    if head in (LOADING, INACTIVE, SHUTDOWN):
        return "lifecycle"
    return "uncertain"


def reason_key(reason: str, limit: int = 60) -> str:
    """A short, bounded key for counting reasons: the first two ':' fields, numbers elided,
    remarks in parentheses (settings, hints) left out, at most `limit` characters of whole words."""
    key = ":".join(part.strip() for part in reason.split(":")[:2])
    key = " ".join(re.sub(r"\([^()]*\)", " ", re.sub(r"\d+(\.\d+)?", "#", key)).split())
    if len(key) > limit:  # cut before the word that crosses the limit (a single longer word: hard cut)
        key = key[:limit + 1].rsplit(" ", 1)[0][:limit]
    return key or "unspecified"


def stale_reason(now: float, frame_time: float | None, instruction_time: float | None,
                 max_frame_age: float, max_instruction_age: float) -> str | None:
    """The watchdog's rule: why the camera or the instruction cannot be trusted at `now`
    (node clock), or None when both are fresh.

    `frame_time` is the arrival of the newest camera message (any message counts as
    alive). An age below zero means the clock jumped back (a simulation reset): stale,
    fail closed. `max_instruction_age` 0 means an instruction never expires.
    """
    return (frame_arrival_reason(now, frame_time, max_frame_age)
            or instruction_reason(now, instruction_time, max_instruction_age))


def frame_arrival_reason(now: float, frame_time: float | None, max_frame_age: float) -> str | None:
    """Why a camera whose newest message arrived at `frame_time` counts as stopped at `now`:
    no message yet, none for `max_frame_age`, or one "after" now (the clock jumped back)."""
    if frame_time is None:
        return NO_FRAME
    frame_age = now - frame_time
    if frame_age < 0.0 or frame_age > max_frame_age:
        return f"{STALE_FRAME}: last frame {frame_age:.3f} s ago (max_frame_age {max_frame_age:g} s)"
    return None


def instruction_reason(now: float, instruction_time: float | None, max_instruction_age: float) -> str | None:
    """Why the instruction (received at `instruction_time`) cannot be acted on at `now`, or None.

    No instruction yet, an instruction older than `max_instruction_age` (0 = never expires),
    or one received "after" now (the clock jumped back) all refuse.
    """
    if instruction_time is None:
        return NO_INSTRUCTION
    age = now - instruction_time
    if age < 0.0 or (max_instruction_age > 0.0 and age > max_instruction_age):
        return f"{STALE_INSTRUCTION}: instruction {age:.3f} s old (max_instruction_age {max_instruction_age:g} s)"
    return None


@dataclass(frozen=True)
class FrameTime:
    """When a frame was captured, in node-clock seconds, and where that time comes from:
    "header" (its header stamp) or "arrival" (when the node received it)."""

    t: float
    source: str


def frame_time(stamp_s: float, arrival: float) -> FrameTime:
    """A frame's capture time: its header stamp when set, else its arrival at the node.

    A zero stamp is the ROS convention for "not stamped"; any other stamp is taken as the
    capture time on the camera's clock, which must agree with the node's (both on wall
    time, or both on /clock under use_sim_time)."""
    return FrameTime(stamp_s, "header") if stamp_s != 0.0 else FrameTime(arrival, "arrival")


def frame_reason(now: float, frame: FrameTime, max_frame_age: float, max_stamp_lead: float,
                 moment: str) -> str | None:
    """Why a frame is too old, or too new, to act on at `now` (node clock), or None.

    A header stamp more than `max_stamp_lead` s ahead of `now` is refused (FUTURE_STAMP):
    the camera's clock is ahead of the gate's, so its age means nothing. A frame older
    than `max_frame_age` s is STALE_FRAME; so is an arrival time after `now` (the node
    clock jumped back). `moment` ("deciding", "publishing") says when the check was made.
    An offset beyond CLOCK_MISMATCH_S adds a hint: that is a clock set-up error.
    """
    age = now - frame.t
    if frame.source == "header" and -age > max_stamp_lead:
        return (f"{FUTURE_STAMP}: frame stamped {-age:.3f} s ahead of the node clock when {moment} "
                f"(max_stamp_lead {max_stamp_lead:g} s){_clock_hint(age)}")
    if age > max_frame_age or (frame.source == "arrival" and age < 0.0):
        return (f"{STALE_FRAME}: frame captured {age:.3f} s before {moment} "
                f"(max_frame_age {max_frame_age:g} s){_clock_hint(age)}")
    return None


def _clock_hint(offset: float) -> str:
    """A pointer to the likely cause of a huge camera/node clock offset, else nothing."""
    if abs(offset) <= CLOCK_MISMATCH_S:
        return ""
    return ("; the camera and the gate disagree on the time: set use_sim_time the same on both and "
            "synchronise their clocks")


def ttl_reason(now: float, valid_from: float, command_ttl: float) -> str | None:
    """Why a certified command valid from `valid_from` (its frame's capture time) has
    already expired at `now` under `command_ttl`, or None."""
    age = now - valid_from
    if age > command_ttl:
        return (f"{TTL_EXPIRED}: the command of a frame captured {age:.3f} s ago expired before publishing "
                f"(command_ttl {command_ttl:g} s)")
    return None


def bounded(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """`text` cut to at most `limit` characters ("..." marks a cut): untrusted input quoted
    in a reason or a record must not make it grow without bound."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def instruction_fields(text: str | None, prefix_chars: int = INSTRUCTION_PREFIX_CHARS) -> dict[str, Any]:
    """How a record reports an instruction of any length in bounded space: its first
    `prefix_chars` characters, its length in characters and the SHA-256 of its UTF-8
    bytes (lone surrogates kept), so a long instruction is identified without repeating it."""
    if text is None:
        return {"instruction": None, "instruction_length": None, "instruction_sha256": None}
    return {"instruction": text[:prefix_chars], "instruction_length": len(text),
            "instruction_sha256": hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()}


@dataclass(frozen=True)
class Output:
    """What the gate publishes: a command name, whether it was certified, and why; a certified
    command also names the instruction it was certified for (a different one withdraws it)."""

    command: str
    certified: bool
    reason: str
    instruction: str | None = None


class OutputGate:
    """The current output between decisions: a certified command lives `command_ttl`
    seconds, then reverts to abstain; abstain goes quiet after `quiet_after` seconds
    (0 = never) so it does not fight other sources on a twist mux."""

    def __init__(self, abstain: str, reason: str = LOADING):
        self.abstain_command = abstain
        self.current = Output(abstain, False, reason)
        self._since: float | None = None  # node time the current certified command's TTL counts from
        self._abstain_since: float | None = None  # node time continuous abstain began

    def on_decision(self, output: Output, now: float, valid_from: float | None = None) -> None:
        """Adopt a decision's output (published by the caller right away). A certified
        command's TTL counts from `valid_from` (its frame's capture time; `now` if None)."""
        if output.certified:
            self._since, self._abstain_since = (now if valid_from is None else valid_from), None
        elif self.current.certified or self._abstain_since is None:
            self._abstain_since = now
        self.current = output

    def force_abstain(self, reason: str, now: float) -> bool:
        """Switch to abstain (watchdog, lifecycle); True if a certified command was withdrawn."""
        withdrawn = self.current.certified
        self.on_decision(Output(self.abstain_command, False, reason), now)
        return withdrawn

    def standing(self, instruction: str, now: float, command_ttl: float) -> str | None:
        """The certified command still standing at `now` for `instruction` (within its TTL), or
        None: what the next decision may test first (smoothing.selection "previous")."""
        c = self.current
        if not c.certified or c.instruction != instruction or self._since is None:
            return None
        return c.command if 0.0 <= now - self._since <= command_ttl else None

    def superseded_by(self, instruction: str) -> bool:
        """Whether `instruction`, just received, withdraws the current output: a certified
        command certified for a different instruction (the same text again keeps it)."""
        return self.current.certified and self.current.instruction != instruction

    def tick(self, now: float, command_ttl: float) -> Output:
        """The output to republish at `now`: the current one, or abstain once its TTL is over."""
        if self.current.certified and self._since is not None:
            age = now - self._since
            if age < 0.0 or age > command_ttl:  # a clock jump back also ends the command
                self.force_abstain(TTL_EXPIRED, now)
        return self.current

    def quiet(self, now: float, quiet_after: float) -> bool:
        """True when abstain has lasted `quiet_after` seconds (> 0): stop publishing cmd_vel."""
        if self.current.certified or quiet_after <= 0.0:
            return False
        if self._abstain_since is None or now < self._abstain_since:  # first look, or the clock jumped back
            self._abstain_since = now
        return now - self._abstain_since >= quiet_after


class AbstainWarnings:
    """Throttled warnings for repeated abstains, so a gate that abstains on everything says so
    in its log: at most one per reason key every `period_s` (monotonic seconds), naming the
    reason and how often it came since that key's previous warning."""

    def __init__(self, period_s: float = 5.0, max_keys: int = _MAX_REASON_KEYS):
        self._period, self._max_keys = period_s, max_keys
        self._pending: Counter[str] = Counter()
        self._last: dict[str, float] = {}

    def note(self, reason: str, t: float) -> str | None:
        """Count an abstain; the warning to log now, or None while its key is throttled."""
        key = reason_key(reason)
        if key not in self._last and len(self._last) >= self._max_keys:
            key = "other"
        self._pending[key] += 1
        if t - self._last.get(key, -math.inf) < self._period:
            return None
        count, self._last[key] = self._pending.pop(key), t
        return f"abstaining: {key} x{count} since its last warning (latest: {bounded(reason, 160)})"


class LatestSlot(Generic[T]):
    """A one-deep mailbox between the executor and the decision thread: `put` replaces an
    unconsumed item (counted as dropped), `take` blocks for the newest one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._closed = False
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Offer the newest item; True if it replaced one that was never taken."""
        with self._cond:
            replaced = self._item is not None
            self.dropped += replaced
            self._item = item
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None) -> T | None:
        """The newest item, waiting up to `timeout` s; None on timeout or once closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout)
            if self._closed:
                return None
            item, self._item = self._item, None
            return item

    def clear(self) -> None:
        """Forget a pending item (not counted as dropped): deactivation, not overload."""
        with self._cond:
            self._item = None

    def close(self) -> None:
        """Wake and release every taker for good."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class GateStats:
    """Rolling figures for /diagnostics: decision rate, certified fraction, abstain reasons,
    dropped frames, latency percentiles and the false-certification budget."""

    def __init__(self, start: float, window_s: float = 60.0, latency_samples: int = 1000):
        self._start, self._window = start, window_s
        self._recent: deque[tuple[float, bool]] = deque()
        self._latency_ms: deque[float] = deque(maxlen=latency_samples)
        self.decisions = 0
        self.certified = 0
        self.reasons: Counter[str] = Counter()
        self.malformed = 0
        self.late_discarded = 0
        self.parameter_changes = 0  # run-time parameter changes accepted
        self.last_parameter_change: str | None = None
        self.fault: str | None = None  # the latest model/oracle fault, until a healthy decision
        self.warning: str | None = None  # the latest stale/input/lifecycle reason, likewise

    def record(self, t: float, certified: bool, reason: str, latency_ms: float | None = None) -> None:
        """Count one published decision (t: monotonic seconds)."""
        self.decisions += 1
        self.certified += certified
        self._recent.append((t, certified))
        if latency_ms is not None and math.isfinite(latency_ms):
            self._latency_ms.append(latency_ms)
        if not certified:
            self._count(reason)
        self.note(reason)

    def event(self, reason: str) -> None:
        """Count an abstain that is not a decision (a watchdog event) and update the health state."""
        self._count(reason)
        self.note(reason)

    def parameter_change(self, change: str) -> None:
        """Count an accepted run-time parameter change (`change` says which, bounded)."""
        self.parameter_changes += 1
        self.last_parameter_change = bounded(change)

    def _count(self, reason: str) -> None:
        key = reason_key(reason)
        self.reasons[key if key in self.reasons or len(self.reasons) < _MAX_REASON_KEYS else "other"] += 1
        if reason.startswith(MALFORMED_IMAGE):
            self.malformed += 1

    def note(self, reason: str) -> None:
        """Update the health state from a reason, without counting a decision."""
        kind = reason_kind(reason)
        if kind == "fault":
            self.fault = reason
        elif kind in ("stale", "input", "lifecycle"):
            self.warning = reason  # a fault stays: the model has not answered since
        else:  # the model answered and the vote was counted: healthy again
            self.fault = self.warning = None

    def level(self) -> tuple[Level, str]:
        """Diagnostic level and message from the latest reasons."""
        if self.fault:
            return Level.ERROR, f"model fault: {self.fault}"
        if self.warning:
            return Level.WARN, f"abstaining: {self.warning}"
        return Level.OK, "gating"

    def snapshot(self, t: float, alpha: float, dropped: int) -> dict[str, Any]:
        """Figures over the last window (t: monotonic seconds)."""
        while self._recent and self._recent[0][0] < t - self._window:
            self._recent.popleft()
        span = max(min(self._window, t - self._start), 1e-9)
        rate = len(self._recent) / span
        certified = sum(c for _, c in self._recent)
        lat = np.asarray(self._latency_ms, dtype=float)
        return {
            "decisions": self.decisions,
            "decision_rate_hz": rate,
            "certified_fraction": certified / len(self._recent) if self._recent else 0.0,
            "abstain_reasons": dict(self.reasons),
            "dropped_frames": dropped,
            "malformed_messages": self.malformed,
            "late_results_discarded": self.late_discarded,
            "parameter_changes": self.parameter_changes,
            "last_parameter_change": self.last_parameter_change or "",
            "latency_p50_ms": float(np.percentile(lat, 50)) if lat.size else float("nan"),
            "latency_p99_ms": float(np.percentile(lat, 99)) if lat.size else float("nan"),
            # each decision certifies falsely with probability <= alpha, so the expected number of
            # false certifications per hour is at most alpha * decisions per hour
            "false_certifications_per_hour_bound": alpha * rate * 3600.0,
        }


def json_safe(value: Any) -> Any:
    """Recursively make a value JSON-serialisable: numpy scalars to Python, NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


__all__ = ["Level", "Output", "OutputGate", "AbstainWarnings", "LatestSlot", "GateStats", "FrameTime", "reason_kind", "reason_key",
           "stale_reason", "frame_arrival_reason", "instruction_reason", "frame_time", "frame_reason", "ttl_reason", "bounded",
           "instruction_fields", "json_safe", "UNCONFIGURED", "LOADING_PHASE", "INACTIVE_PHASE", "ACTIVE", "FINALIZED"]
