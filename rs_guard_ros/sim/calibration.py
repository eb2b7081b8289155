"""The demo's real-time factor: how much slower than wall-clock time the simulated world runs
so that a decision of the gate lasts DESIGN_LATENCY_S sim seconds, whatever the computer.

Warm-up episodes measure the guard's own decision latency (its ~/certificate records), and
the sim's real_time_factor is set from it (`calibrated_factor`): first at CALIBRATION_FACTOR,
then again at the factor found, and slower again when a warm-up is too slow to measure (see
`calibrate`). As Gazebo's `real_time_factor` is used in software-in-the-loop testing.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    from .scenarios import Scenario

# The decision latency (frame received -> command published) the scenarios were designed for: the
# latency p50 of the demo on the 2-core machine of the README's figures (149 ms in the README's run,
# 165 ms pooled in docs/simulation.md's). Their timings (time limits, fault windows, the 1 s
# max_frame_age) assume a decision lasts about this long in sim seconds.
DESIGN_LATENCY_S = 0.15
FACTOR_RANGE = (0.02, 1.0)  # below 0.02 a 30 sim-s scenario would take 25 wall minutes
# The warm-up's factor: a decision 6x slower than the design latency (0.9 s, a machine a quarter as
# fast) still lasts only 0.09 sim s, so no warm-up frame goes stale and every decision is measured.
CALIBRATION_FACTOR = 0.1
WARMUP_SIM_S = 3.0  # 30 camera frames: at 0.1, 30 wall s, a dozen decisions even at 2 s each
MIN_WARMUP_DECISIONS = 3
# Warm-ups: the sim renders and publishes in proportion to the factor, on the same cores as the
# guard, so a decision measured at 0.1 is faster than at the factor the scenarios then run at
# (303 ms against 360 ms in one run on 2 shared cores); the second warm-up measures it there.
CALIBRATION_ROUNDS = 2
# A warm-up with fewer than MIN_WARMUP_DECISIONS decisions means the computer got slower than the
# factor assumed (load from other processes rises and falls): the next warm-up runs this many times
# slower, down to FACTOR_RANGE[0], within MAX_WARMUPS in all, instead of failing the run on speed.
WARMUP_SLOWDOWN = 4.0
MAX_WARMUPS = 6


@dataclass(frozen=True)
class Calibration:
    """The real-time factor a run played at, and the measurement it came from (None: --real-time)."""

    factor: float
    latency_s: float | None = None  # the guard's decision latency p50 in the last warm-up (wall s)
    decisions: int = 0  # decisions of the last warm-up that ran the model
    measured_at: float = CALIBRATION_FACTOR  # the factor the last warm-up ran at
    warmups: int = 0  # warm-up episodes played (the scenarios' episode ids follow them)

    def describe(self) -> str:
        """One line for the report and the summary."""
        if self.latency_s is None:
            return f"{self.factor:g} (--real-time: the world runs at wall-clock rate)"
        return (f"{self.factor:.3f}: the guard's decision latency p50 {self.latency_s * 1e3:.0f} ms over "
                f"{self.decisions} warm-up decisions at factor {self.measured_at:.3f}, so a decision lasts "
                f"{self.latency_s * self.factor * 1e3:.0f} sim ms (designed for {DESIGN_LATENCY_S * 1e3:.0f})")


def calibrated_factor(latency_s: float, target_s: float = DESIGN_LATENCY_S) -> float:
    """The real-time factor at which a decision of `latency_s` wall seconds lasts `target_s` sim
    seconds, clamped to FACTOR_RANGE: a faster computer than designed for runs at real time."""
    if not (math.isfinite(latency_s) and latency_s > 0.0 and math.isfinite(target_s) and target_s > 0.0):
        raise ValueError(f"latency and target must be positive and finite, got {latency_s!r}, {target_s!r}")
    low, high = FACTOR_RANGE
    return min(high, max(low, target_s / latency_s))


def calibrate(runner: Any, scenario: Scenario, step_timeout_s: float,
              progress: Callable[[float], None] | None = None) -> Calibration:
    """Warm-up episodes (the first scenario's layout and first instruction, no faults, WARMUP_SIM_S
    each) until CALIBRATION_ROUNDS of them measured the guard: each takes the p50 of the guard's
    decision latency from its records and sets the sim's factor from it (`calibrated_factor`).
    A warm-up with too few decisions slows the world WARMUP_SLOWDOWN times and is played again
    (`next_factor`), so a computer slower than expected gets a slower world, not an error.

    A warm-up rather than the first decisions of the first scenario: the model's first calls are
    slower (lazy initialisation), and a factor changed in the middle of a scenario would play its
    beginning at another latency than the rest; no warm-up decision enters the report.
    """
    warmup = dataclasses.replace(scenario, name=f"warm-up ({scenario.name})", time_limit=WARMUP_SIM_S, faults=(),
                                 instructions=(dataclasses.replace(scenario.instructions[0], at=0.0),))
    calibration, measured = Calibration(runner.real_time_factor), 0
    for episode_id in range(1, MAX_WARMUPS + 1):
        measured_at = runner.real_time_factor
        done = (episode_id - 1) * WARMUP_SIM_S  # one progress bar over every round
        episode = runner.run_episode(warmup, episode_id, step_timeout_s,
                                     progress and (lambda t, done=done: progress(done + t)))
        latencies = [s.latency_ms / 1e3 for s in episode.steps if s.source == "decision" and s.n_used > 0]
        if len(latencies) >= MIN_WARMUP_DECISIONS:
            latency = float(np.median(latencies))
            calibration = Calibration(calibrated_factor(latency), latency, len(latencies), measured_at, episode_id)
            measured += 1
        else:
            calibration = dataclasses.replace(calibration, factor=next_factor(measured_at, len(latencies)),
                                              warmups=episode_id)
        runner.set_real_time_factor(calibration.factor, step_timeout_s)
        if measured == CALIBRATION_ROUNDS:
            return calibration
    raise RuntimeError(f"calibration: {measured} of {MAX_WARMUPS} warm-ups of {WARMUP_SIM_S:g} sim s had "
                       f"{MIN_WARMUP_DECISIONS} decisions that ran the model (need {CALIBRATION_ROUNDS}); "
                       f"see the guard's log")


def next_factor(factor: float, decisions: int) -> float:
    """The factor after a warm-up at `factor` with too few `decisions`: WARMUP_SLOWDOWN times slower;
    at FACTOR_RANGE[0] already, the guard is not deciding at all, which no factor fixes."""
    if factor <= FACTOR_RANGE[0]:
        raise RuntimeError(f"calibration: {decisions} decisions ran the model in a {WARMUP_SIM_S:g} sim-s "
                           f"warm-up at the slowest factor {FACTOR_RANGE[0]:g} (need {MIN_WARMUP_DECISIONS}); "
                           f"see the guard's log")
    return max(FACTOR_RANGE[0], factor / WARMUP_SLOWDOWN)
