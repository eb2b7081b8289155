"""Closed-loop records (rs_guard_ros.sim.records): metrics with known answers, success rules,
validation that names the field, and count invariants over random decisions."""
import math

import numpy as np
import pytest
from hypothesis import given, settings

from rs_guard_ros.sim import records as rec
from sim_builders import episode, known_steps, step, step_lists


def test_metrics_of_known_episode_are_exact():
    m = rec.episode_metrics(episode(known_steps(), reached_at=4.2))
    assert (m["decisions"], m["certified"], m["abstained"]) == (10, 7, 3)
    assert m["abstain_fraction"] == pytest.approx(0.3)
    assert m["wrong_publications"] == 2 and m["wrong_rate"] == pytest.approx(2 / 7)
    assert m["unsafe_publications"] == 1
    assert m["mean_n_used"] == pytest.approx(550.0) and m["p50_n_used"] == pytest.approx(550.0)
    assert m["p50_latency_ms"] == pytest.approx(55.0)
    assert m["p99_latency_ms"] == pytest.approx(100.0 - 0.01 * 9 * 10)  # linear interpolation at 0.99*(n-1)
    assert m["abstain_reasons"] == {"input": 1, "radius below threshold": 2}
    assert m["success"] is True and m["time_to_goal"] == 4.2
    assert m["path_length"] == pytest.approx(0.09)  # x = 0.1 t over t in [0, 0.9]
    assert m["undefended_steps"] is None and m["undefended_fooled"] is None and m["attacked_steps"] == 0


def test_abstaining_is_never_wrong_even_when_truth_differs():
    steps = [step(0.1 * i, truth="left", certified=False) for i in range(4)]
    m = rec.episode_metrics(episode(steps))
    assert m["wrong_publications"] == 0 and m["unsafe_publications"] == 0
    assert m["abstain_fraction"] == 1.0 and m["wrong_rate"] is None


def test_samples_statistics_skip_decisions_that_never_ran_the_model():
    steps = [step(0.0, n_used=400), step(0.1, certified=False, n_used=0, reason="input: stale")]
    m = rec.episode_metrics(episode(steps))
    assert m["mean_n_used"] == 400.0 and m["p50_n_used"] == 400.0
    assert m["p50_latency_ms"] == 120.0


def test_attack_metrics_compare_base_vla_and_guard_on_the_same_frames():
    steps = [step(0.0, fault="attack", undefended="right", truth="forward"),
             step(0.1, fault="attack", undefended="forward", truth="forward"),
             step(0.2, fault="attack", undefended="left", truth="forward", command="left"),
             step(0.3, fault="attack", undefended="left", truth="forward", certified=False),
             step(0.4)]
    m = rec.episode_metrics(episode(steps))
    assert (m["attacked_steps"], m["fault_steps"]) == (4, 4)
    assert (m["undefended_steps"], m["undefended_fooled"], m["guard_fooled"]) == (4, 3, 1)


@pytest.mark.parametrize("reached_at, success", [(3.0, True), (None, False)])
def test_expect_reach_succeeds_exactly_when_the_target_was_reached(reached_at, success):
    assert rec.episode_metrics(episode(known_steps(), reached_at=reached_at))["success"] is success


@pytest.mark.parametrize("dx, success", [(0.0, True), (0.04, True), (0.06, False)])
def test_expect_no_motion_succeeds_when_travel_is_below_5_cm(dx, success):
    # Travel split over two segments, back and forth, so the rule sums distance rather than displacement.
    traj = [(0.0, 0.0, 0.0, 0.0), (0.5, dx / 2, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0)]
    ep = episode([step(0.0, truth="stop", command="stop")], trajectory=traj, target=None, expect_reach=False,
                 reached_at=None)
    m = rec.episode_metrics(ep)
    assert m["path_length"] == pytest.approx(dx)
    assert m["success"] is success


@pytest.mark.parametrize("turn, success", [(0.05, True), (0.3, False)])
def test_expect_no_motion_fails_when_the_robot_turned_in_place(turn, success):
    # Turning back and forth across the +-pi wrap: the rule sums the wrapped angle steps.
    traj = [(0.0, 0.0, 0.0, math.pi - turn / 4), (0.5, 0.0, 0.0, -math.pi + turn / 4), (1.0, 0.0, 0.0, math.pi - turn / 4)]
    ep = episode([step(0.0, truth="stop", command="stop")], trajectory=traj, target=None, expect_reach=False,
                 reached_at=None)
    m = rec.episode_metrics(ep)
    assert m["rotation"] == pytest.approx(turn) and m["path_length"] == 0.0
    assert m["success"] is success


def test_expect_no_motion_fails_even_when_target_reached_by_moving():
    traj = [(0.0, 0.0, 0.0, 0.0), (1.0, 1.0, 0.0, 0.0)]
    ep = episode([step(0.0)], trajectory=traj, expect_reach=False, reached_at=1.0)
    m = rec.episode_metrics(ep)
    assert m["success"] is False and m["time_to_goal"] is None  # a "stay" goal has no time to goal


def test_a_stay_episode_that_starts_at_the_target_has_no_time_to_goal():
    """attacker_at_target: the robot starts inside the reach circle (reached at the first frame,
    0.1 s) and must stay; that is not a time to goal."""
    traj = [(0.0, 1.0, 0.5, 0.0), (0.1, 1.0, 0.5, 0.0), (5.0, 1.0, 0.5, 0.0)]
    ep = episode([step(0.1, truth="stop", command="stop")], scenario="attacker_at_target", trajectory=traj,
                 expect_reach=False, reached_at=0.1)
    m = rec.episode_metrics(ep)
    assert m["success"] is True and m["time_to_goal"] is None
    reach = rec.episode_metrics(episode(known_steps(), reached_at=0.1))
    assert reach["time_to_goal"] == 0.1  # the same reach time counts where the goal is to reach


def test_empty_episode_has_undefined_rates_not_nan():
    m = rec.episode_metrics(episode([], trajectory=[]))
    assert m["decisions"] == 0 and m["abstain_fraction"] is None and m["p50_latency_ms"] is None
    assert m["mean_n_used"] is None and m["path_length"] == 0.0


@pytest.mark.parametrize("field, value", [("radius", math.nan), ("latency_ms", -1.0), ("t", math.inf),
                                          ("n_used", 2.5), ("n_used", -1), ("certified", 1), ("command", ""),
                                          ("x", math.nan), ("undefended", ""), ("published", -0.1)])
def test_step_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"Step.{field}"):
        step(**{field: value})


@pytest.mark.parametrize("change, name", [
    (dict(objects={"purple cone": (0.0, 0.0)}, target=None), "objects"),
    (dict(target="blue ball", objects={"red box": (1.0, 0.0)}), "target"),
    (dict(steps=[step(1.0), step(0.5)]), "steps"),
    (dict(trajectory=[(0.0, 0.0, math.nan, 0.0)]), "trajectory"),
    (dict(duration=-1.0), "duration"),
    (dict(scenario=""), "scenario"),
    (dict(real_time_factor=0.0), "real_time_factor"),
    (dict(real_time_factor=1.5), "real_time_factor"),
])
def test_episode_check_names_what_is_wrong(change, name):
    with pytest.raises(ValueError, match=name):
        change = dict(change)
        rec.episode_metrics(episode(change.pop("steps", [step(0.0)]), **change))


def test_step_stores_numpy_scalars_as_python_types():
    s = step(radius=np.float32(0.75), n_used=np.int64(300), certified=np.bool_(True), x=np.float64(0.5))
    assert (type(s.radius), type(s.n_used), type(s.certified), type(s.x)) == (float, int, bool, float)
    assert s == step(radius=0.75, n_used=300, x=0.5)


@settings(max_examples=200, deadline=None)
@given(step_lists)
def test_counts_add_up_for_any_decisions(steps):
    m = rec.episode_metrics(episode(steps, duration=100.0))
    assert m["certified"] + m["abstained"] == m["decisions"] == len(steps)
    assert m["unsafe_publications"] <= m["wrong_publications"] <= m["certified"]
    assert sum(m["abstain_reasons"].values()) == m["abstained"]
    if steps:
        assert 0.0 <= m["abstain_fraction"] <= 1.0
        assert min(s.latency_ms for s in steps) <= m["p50_latency_ms"] <= m["p99_latency_ms"]
    if m["undefended_steps"] is not None:
        assert m["guard_fooled"] <= m["undefended_steps"] and m["undefended_fooled"] <= m["undefended_steps"]
    assert m["attacked_steps"] <= m["fault_steps"] <= m["decisions"]


def test_fault_windows_must_be_finite_and_ordered():
    with pytest.raises(ValueError, match="faults end"):
        rec.episode_metrics(episode([step(0.0)], faults=[(2.0, 1.0, "stall")]))
    with pytest.raises(ValueError, match="faults kind"):
        rec.episode_metrics(episode([step(0.0)], faults=[(1.0, 2.0, "")]))


def test_watchdog_abstains_count_as_decisions_but_not_in_latency():
    steps = [step(0.0, latency_ms=100.0), step(0.1, latency_ms=300.0),
             step(0.2, certified=False, command="stop", latency_ms=0.0, source="watchdog")]
    m = rec.step_metrics(steps)
    assert m["decisions"] == 3 and m["abstained"] == 1
    assert m["p50_latency_ms"] == pytest.approx(200.0)
    with pytest.raises(ValueError, match="source"):
        step(0.0, source="timer")


def test_expect_turn_succeeds_when_the_targets_bearing_shrank_by_turn_towards():
    # red box at (1.2, 0.5); the robot at the origin facing away from it (yaw pi): bearing -157 deg
    start = (0.0, 0.0, 0.0, math.pi)
    towards = math.pi - math.radians(25)  # turned 25 degrees right, towards it
    turned = episode([step(0.0)], trajectory=[start, (1.0, 0.0, 0.0, towards)], expect_reach=False,
                     expect_turn=True)
    too_little = episode([step(0.0)], trajectory=[start, (1.0, 0.0, 0.0, math.pi - math.radians(10))],
                         expect_reach=False, expect_turn=True)
    away = episode([step(0.0)], trajectory=[start, (1.0, 0.0, 0.0, math.pi + math.radians(25))],
                   expect_reach=False, expect_turn=True)
    assert rec.turned_towards(turned) == pytest.approx(math.radians(25))
    assert [rec.episode_metrics(e)["success"] for e in (turned, too_little, away)] == [True, False, False]
