"""Frames of several cameras paired into decisions by their stamps: the rule the node and the
offline evaluation share, with no ROS.

`stamp_spread` is how far apart one decision's frames were captured; the node abstains when
it exceeds node.max_camera_skew (ros/sync.py `views_reason`). `StampPairing` replays a
recording through the node's way of taking frames: frames come in recording order, each
camera's newest frame waits for the others, and once every camera has one they form a
decision if their stamps spread at most `max_skew`. A frame that never joins a decision is
counted as unpaired, per camera: one replaced by a newer frame of its camera before the others
came (the node, too, decides on the newest frame only), or the oldest of a set that spreads
too far (every later frame of the others is newer still, so it can never pair; the others
wait for their partners), or one still waiting when the recording ends.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Generic, Iterable, Mapping, Sequence, TypeVar

T = TypeVar("T")


def stamp_spread(times: Mapping[str, float]) -> tuple[str, str, float]:
    """(earliest camera, latest camera, latest - earliest stamp) of one decision's frames."""
    first, last = min(times, key=times.__getitem__), max(times, key=times.__getitem__)
    return first, last, times[last] - times[first]


@dataclass(frozen=True)
class Stamped(Generic[T]):
    """One camera's frame and its stamp (header stamp in seconds; its arrival where unstamped)."""

    camera: str
    stamp: float
    item: T


class StampPairing(Generic[T]):
    """Pairs the frames of `cameras`, fed in recording order, into sets whose stamps spread at
    most `max_skew`; `unpaired` counts, per camera, the frames left out."""

    def __init__(self, cameras: Sequence[str], max_skew: float):
        if not cameras or len(set(cameras)) != len(cameras):
            raise ValueError(f"cameras must be distinct names, at least one, got {list(cameras)}")
        if not (math.isfinite(max_skew) and max_skew >= 0.0):
            raise ValueError(f"max_skew must be a finite number >= 0, got {max_skew!r}")
        self.cameras, self.max_skew = tuple(cameras), float(max_skew)
        self.waiting: dict[str, Stamped[T]] = {}
        self.unpaired: Counter = Counter()

    def add(self, frame: Stamped[T]) -> dict[str, Stamped[T]] | None:
        """Take the next frame of the recording; a complete set ({camera: frame}) when it makes one."""
        if frame.camera not in self.cameras:
            raise ValueError(f"camera {frame.camera!r} is not one of {list(self.cameras)}")
        if not math.isfinite(frame.stamp):
            raise ValueError(f"camera {frame.camera!r}: stamp {frame.stamp!r} is not a finite number")
        if frame.camera in self.waiting:
            self.unpaired[frame.camera] += 1  # replaced by a newer frame before its partners came
        self.waiting[frame.camera] = frame
        if len(self.waiting) < len(self.cameras):
            return None
        first, _, spread = stamp_spread({c: f.stamp for c, f in self.waiting.items()})
        if spread > self.max_skew:
            del self.waiting[first]  # every later frame is newer: the oldest can never pair
            self.unpaired[first] += 1
            return None
        pair, self.waiting = {c: self.waiting[c] for c in self.cameras}, {}
        return pair

    def finish(self) -> None:
        """The recording ended: frames still waiting are unpaired."""
        self.unpaired.update(self.waiting.keys())
        self.waiting = {}


def pair_by_stamp(frames: Iterable[Stamped[T]], cameras: Sequence[str],
                  max_skew: float) -> tuple[list[dict[str, Stamped[T]]], Counter]:
    """Every set `StampPairing` makes of `frames` (in recording order), and the unpaired counts."""
    pairing: StampPairing[T] = StampPairing(cameras, max_skew)
    sets = [s for s in map(pairing.add, frames) if s is not None]
    pairing.finish()
    return sets, pairing.unpaired


__all__ = ["stamp_spread", "Stamped", "StampPairing", "pair_by_stamp"]
