"""Several cameras and the robot's joint state, synchronised by stamp: the ROS-free rules.

A decision takes the newest frame of every camera (cameras.names) and the newest joint
state. Each frame obeys the one-camera rules by its own stamp (gate_state.frame_reason:
max_frame_age, future stamps); together their header stamps may spread at most
node.max_camera_skew; a missing view abstains. The state must be present, no older than
state.max_age, and name every joint of state.joint_names. Each refusal is a reason that
names the camera or what was wrong with the state. With one camera the reasons are the
one-camera gate's, word for word.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..pairing import stamp_spread
from .gate_state import (CAMERA_SKEW, MALFORMED_STATE, NO_FRAME, NO_STATE, STALE_STATE, FrameTime, frame_arrival_reason,
                         frame_reason)


@dataclass(frozen=True)
class CameraFrame:
    """A camera's newest message: the message, its capture time and its arrival (node clock)."""

    camera: str
    msg: Any
    frame: FrameTime
    received: float


@dataclass(frozen=True)
class JointSample:
    """A joint state as received: its time (header stamp, or arrival when unstamped), the
    joint names and positions it carries."""

    time: FrameTime
    names: tuple[str, ...]
    positions: tuple[float, ...]


class ViewRounds:
    """When to ask for a decision: once every camera has a frame newer than those of the last
    decision asked for (a round), so synchronised cameras are decided together rather than
    one stale view at a time. With one camera, every frame is a round."""

    def __init__(self, cameras: Sequence[str]):
        self.cameras = tuple(cameras)
        self.newest: dict[str, CameraFrame] = {}
        self._fresh: set[str] = set()

    def arrive(self, frame: CameraFrame) -> dict[str, CameraFrame] | None:
        """Note a camera's newest frame; the newest frame of every camera when a round is complete."""
        self.newest[frame.camera] = frame
        self._fresh.add(frame.camera)
        if not self._fresh.issuperset(self.cameras):
            return None
        self._fresh.clear()
        return dict(self.newest)

    def arrivals(self) -> dict[str, float]:
        """Each camera's newest arrival (node clock): what the camera watchdog reads."""
        return {name: frame.received for name, frame in self.newest.items()}


def arrivals_reason(now: float, arrivals: Mapping[str, float], cameras: Sequence[str],
                    max_frame_age: float) -> tuple[str, str] | None:
    """The camera watchdog's rule: (reason, cause) for the first camera with no message yet or
    none for `max_frame_age` (or one "after" now: the clock jumped back); None when all are
    alive. The cause names the camera, so a second camera stopping is a new cause."""
    for name in cameras:
        why = frame_arrival_reason(now, arrivals.get(name), max_frame_age)
        if why:
            head, _, rest = why.partition(": ")
            if len(cameras) == 1:
                return why, head
            return (f"{head}: {name}: {rest}" if rest else f"{head}: {name}"), f"{head}: {name}"
    return None


def views_reason(now: float, frames: Mapping[str, CameraFrame | None], cameras: Sequence[str],
                 max_frame_age: float, max_stamp_lead: float, max_skew: float, moment: str) -> str | None:
    """Why the newest frames of `cameras` cannot be decided on (or published) at `now`: one is
    missing, too old or stamped in the future, or their stamps spread more than `max_skew`;
    None when all are fresh and together. `moment` says when ("deciding", "publishing")."""
    several = len(cameras) > 1
    for name in cameras:
        frame = frames.get(name)
        if frame is None:
            return f"{NO_FRAME}: {name}" if several else NO_FRAME
        why = frame_reason(now, frame.frame, max_frame_age, max_stamp_lead, moment)
        if why:
            head, _, rest = why.partition(": ")
            return f"{head}: {name}: {rest}" if several else why
    if several:
        first, last, spread = stamp_spread({name: frames[name].frame.t for name in cameras})
        if spread > max_skew:
            return (f"{CAMERA_SKEW}: {spread:.3f} s between {first} and {last} when {moment} "
                    f"(max_camera_skew {max_skew:g} s)")
    return None


def state_vector(now: float, state: JointSample | None, joint_names: Sequence[str], max_age: float,
                 moment: str) -> tuple[np.ndarray | None, str | None]:
    """The positions of `joint_names`, in that order, from the newest joint state, or the
    reason it cannot be used at `now`: none yet, older than `max_age` (or from the future:
    the clock jumped), a joint missing, a position that is not a finite number."""
    if state is None:
        return None, NO_STATE
    age = now - state.time.t
    if age > max_age or age < 0.0:
        return None, f"{STALE_STATE}: joint state {age:.3f} s old when {moment} (state.max_age {max_age:g} s)"
    if len(state.positions) != len(state.names):
        return None, (f"{MALFORMED_STATE}: {len(state.names)} joint names but {len(state.positions)} positions")
    where = {name: i for i, name in enumerate(state.names)}
    missing = [name for name in joint_names if name not in where]
    if missing:
        return None, f"{MALFORMED_STATE}: joint '{missing[0]}' is not in the joint state ({len(missing)} missing)"
    vector = np.array([state.positions[where[name]] for name in joint_names], dtype=np.float64)
    if not np.all(np.isfinite(vector)):
        return None, f"{MALFORMED_STATE}: a position of state.joint_names is not a finite number"
    return vector, None


def state_fields(state: JointSample | None, vector: np.ndarray | None) -> dict[str, Any]:
    """How a record reports the state a decision ran on (trusted, not certified): its time,
    the number of joints used and a SHA-256 of their positions."""
    if state is None or vector is None:
        return {"state_time": None, "state_joints": None, "state_sha256": None}
    return {"state_time": state.time.t, "state_joints": len(vector),
            "state_sha256": hashlib.sha256(np.ascontiguousarray(vector, dtype="<f8").tobytes()).hexdigest()}


def joint_sample(stamp_s: float, arrival: float, names: Sequence[Any], positions: Sequence[Any]) -> JointSample:
    """A JointState message's fields as a JointSample (its time as for frames: stamp, else arrival)."""
    time = FrameTime(stamp_s, "header") if stamp_s != 0.0 else FrameTime(arrival, "arrival")
    return JointSample(time, tuple(str(n) for n in names), tuple(_float(p) for p in positions))


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


__all__ = ["CameraFrame", "JointSample", "ViewRounds", "arrivals_reason", "views_reason", "state_vector",
           "state_fields", "joint_sample"]
