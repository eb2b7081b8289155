"""Shared builders for the closed-loop records and report tests: steps and episodes with
plausible defaults, a known 10-decision episode, and a hypothesis strategy of step lists."""
import math

from hypothesis import strategies as st

from rs_guard_ros.sim import records as rec
from rs_guard_ros.sim.world import COMMANDS

OBJECTS_AT = {"red box": (1.2, 0.5), "blue ball": (-1.0, 1.0), "green cylinder": (0.0, -1.3),
              "yellow box": (-1.2, -1.0)}


def step(t: float = 0.0, truth: str = "forward", command: str = "forward", certified: bool = True,
         **kw) -> rec.Step:
    """A Step with plausible defaults; an abstaining step publishes "stop" with radius 0."""
    base = dict(t=t, truth=truth, command=command if certified else "stop", certified=certified,
                radius=0.6 if certified else 0.0, threshold=0.5, n_used=300, latency_ms=120.0,
                reason="certified" if certified else "radius below threshold", x=0.1 * t, y=0.0, yaw=0.0)
    return rec.Step(**{**base, **kw})


def episode(steps: list[rec.Step], scenario: str = "reach red box", trajectory=None, **kw) -> rec.Episode:
    """An Episode in the standard layout; the trajectory defaults to the steps' poses."""
    if trajectory is None:
        trajectory = [(s.t, s.x, s.y, s.yaw) for s in steps]
    base = dict(scenario=scenario, target="red box", objects=dict(OBJECTS_AT), steps=steps, trajectory=trajectory,
                duration=steps[-1].t + 0.1 if steps else 1.0, time_limit=30.0, reached_at=None)
    return rec.Episode(**{**base, **kw})


def known_steps() -> list[rec.Step]:
    """10 decisions: 5 certified correct, 2 certified wrong (one of them forward while truth is stop), 3 abstains."""
    return ([step(0.1 * i, n_used=100 * (i + 1), latency_ms=10.0 * (i + 1)) for i in range(5)]
            + [step(0.5, truth="left", command="right", n_used=600, latency_ms=60.0),
               step(0.6, truth="stop", command="forward", n_used=700, latency_ms=70.0)]
            + [step(0.7 + 0.1 * i, certified=False, n_used=800 + 100 * i, latency_ms=80.0 + 10 * i,
                    reason="input: frame is stale" if i == 0 else "radius below threshold") for i in range(3)])


step_lists = st.lists(st.builds(
    rec.Step,
    t=st.floats(0, 100), truth=st.sampled_from(COMMANDS), command=st.sampled_from(COMMANDS),
    certified=st.booleans(), radius=st.floats(0, 5), threshold=st.floats(0, 5), n_used=st.integers(0, 10_000),
    latency_ms=st.floats(0, 1e4), reason=st.sampled_from(["certified", "radius below threshold", "input: stale",
                                                           ""]),
    x=st.floats(-2, 2), y=st.floats(-2, 2), yaw=st.floats(-math.pi, math.pi),
    fault=st.sampled_from(["", "stall", "attack"]), undefended=st.none() | st.sampled_from(COMMANDS),
), max_size=40).map(lambda steps: sorted(steps, key=lambda s: s.t))
