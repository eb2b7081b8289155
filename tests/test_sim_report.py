"""Closed-loop simulation report: metrics with known answers, success rules, count invariants over
random decisions, and a report folder whose markdown links existing, non-empty plots."""
import csv
import dataclasses
import json
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from rs_guard_ros.sim import report as rp
from rs_guard_ros.sim.world import COMMANDS

OBJECTS_AT = {"red box": (1.2, 0.5), "blue ball": (-1.0, 1.0), "green cylinder": (0.0, -1.3),
              "yellow box": (-1.2, -1.0)}


def step(t: float = 0.0, truth: str = "forward", command: str = "forward", certified: bool = True,
         **kw) -> rp.Step:
    """A Step with plausible defaults; an abstaining step publishes "stop" with radius 0."""
    base = dict(t=t, truth=truth, command=command if certified else "stop", certified=certified,
                radius=0.6 if certified else 0.0, threshold=0.5, n_used=300, latency_ms=120.0,
                reason="certified" if certified else "radius below threshold", x=0.1 * t, y=0.0, yaw=0.0)
    return rp.Step(**{**base, **kw})


def episode(steps: list[rp.Step], scenario: str = "reach red box", trajectory=None, **kw) -> rp.Episode:
    """An Episode in the standard layout; the trajectory defaults to the steps' poses."""
    if trajectory is None:
        trajectory = [(s.t, s.x, s.y, s.yaw) for s in steps]
    base = dict(scenario=scenario, target="red box", objects=dict(OBJECTS_AT), steps=steps, trajectory=trajectory,
                duration=steps[-1].t + 0.1 if steps else 1.0, time_limit=30.0, reached_at=None)
    return rp.Episode(**{**base, **kw})


def known_steps() -> list[rp.Step]:
    """10 decisions: 5 certified correct, 2 certified wrong (one of them forward while truth is stop), 3 abstains."""
    return ([step(0.1 * i, n_used=100 * (i + 1), latency_ms=10.0 * (i + 1)) for i in range(5)]
            + [step(0.5, truth="left", command="right", n_used=600, latency_ms=60.0),
               step(0.6, truth="stop", command="forward", n_used=700, latency_ms=70.0)]
            + [step(0.7 + 0.1 * i, certified=False, n_used=800 + 100 * i, latency_ms=80.0 + 10 * i,
                    reason="input: frame is stale" if i == 0 else "radius below threshold") for i in range(3)])


def test_metrics_of_known_episode_are_exact():
    m = rp.episode_metrics(episode(known_steps(), reached_at=4.2))
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
    m = rp.episode_metrics(episode(steps))
    assert m["wrong_publications"] == 0 and m["unsafe_publications"] == 0
    assert m["abstain_fraction"] == 1.0 and m["wrong_rate"] is None


def test_samples_statistics_skip_decisions_that_never_ran_the_model():
    steps = [step(0.0, n_used=400), step(0.1, certified=False, n_used=0, reason="input: stale")]
    m = rp.episode_metrics(episode(steps))
    assert m["mean_n_used"] == 400.0 and m["p50_n_used"] == 400.0
    assert m["p50_latency_ms"] == 120.0


def test_attack_metrics_compare_base_vla_and_guard_on_the_same_frames():
    steps = [step(0.0, fault="attack", undefended="right", truth="forward"),
             step(0.1, fault="attack", undefended="forward", truth="forward"),
             step(0.2, fault="attack", undefended="left", truth="forward", command="left"),
             step(0.3, fault="attack", undefended="left", truth="forward", certified=False),
             step(0.4)]
    m = rp.episode_metrics(episode(steps))
    assert (m["attacked_steps"], m["fault_steps"]) == (4, 4)
    assert (m["undefended_steps"], m["undefended_fooled"], m["guard_fooled"]) == (4, 3, 1)


@pytest.mark.parametrize("reached_at, success", [(3.0, True), (None, False)])
def test_expect_reach_succeeds_exactly_when_the_target_was_reached(reached_at, success):
    assert rp.episode_metrics(episode(known_steps(), reached_at=reached_at))["success"] is success


@pytest.mark.parametrize("dx, success", [(0.0, True), (0.04, True), (0.06, False)])
def test_expect_no_motion_succeeds_when_travel_is_below_5_cm(dx, success):
    # Travel split over two segments, back and forth, so the rule sums distance rather than displacement.
    traj = [(0.0, 0.0, 0.0, 0.0), (0.5, dx / 2, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0)]
    ep = episode([step(0.0, truth="stop", command="stop")], trajectory=traj, target=None, expect_reach=False,
                 reached_at=None)
    m = rp.episode_metrics(ep)
    assert m["path_length"] == pytest.approx(dx)
    assert m["success"] is success


@pytest.mark.parametrize("turn, success", [(0.05, True), (0.3, False)])
def test_expect_no_motion_fails_when_the_robot_turned_in_place(turn, success):
    # Turning back and forth across the +-pi wrap: the rule sums the wrapped angle steps.
    traj = [(0.0, 0.0, 0.0, math.pi - turn / 4), (0.5, 0.0, 0.0, -math.pi + turn / 4), (1.0, 0.0, 0.0, math.pi - turn / 4)]
    ep = episode([step(0.0, truth="stop", command="stop")], trajectory=traj, target=None, expect_reach=False,
                 reached_at=None)
    m = rp.episode_metrics(ep)
    assert m["rotation"] == pytest.approx(turn) and m["path_length"] == 0.0
    assert m["success"] is success


def test_expect_no_motion_fails_even_when_target_reached_by_moving():
    traj = [(0.0, 0.0, 0.0, 0.0), (1.0, 1.0, 0.0, 0.0)]
    ep = episode([step(0.0)], trajectory=traj, expect_reach=False, reached_at=1.0)
    m = rp.episode_metrics(ep)
    assert m["success"] is False and m["time_to_goal"] == 1.0


def test_empty_episode_has_undefined_rates_not_nan():
    m = rp.episode_metrics(episode([], trajectory=[]))
    assert m["decisions"] == 0 and m["abstain_fraction"] is None and m["p50_latency_ms"] is None
    assert m["mean_n_used"] is None and m["path_length"] == 0.0


@pytest.mark.parametrize("field, value", [("radius", math.nan), ("latency_ms", -1.0), ("t", math.inf),
                                          ("n_used", 2.5), ("n_used", -1), ("certified", 1), ("command", ""),
                                          ("x", math.nan), ("undefended", "")])
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
])
def test_episode_check_names_what_is_wrong(change, name):
    with pytest.raises(ValueError, match=name):
        change = dict(change)
        rp.episode_metrics(episode(change.pop("steps", [step(0.0)]), **change))


def test_step_stores_numpy_scalars_as_python_types():
    s = step(radius=np.float32(0.75), n_used=np.int64(300), certified=np.bool_(True), x=np.float64(0.5))
    assert (type(s.radius), type(s.n_used), type(s.certified), type(s.x)) == (float, int, bool, float)
    assert s == step(radius=0.75, n_used=300, x=0.5)


step_lists = st.lists(st.builds(
    rp.Step,
    t=st.floats(0, 100), truth=st.sampled_from(COMMANDS), command=st.sampled_from(COMMANDS),
    certified=st.booleans(), radius=st.floats(0, 5), threshold=st.floats(0, 5), n_used=st.integers(0, 10_000),
    latency_ms=st.floats(0, 1e4), reason=st.sampled_from(["certified", "radius below threshold", "input: stale",
                                                           ""]),
    x=st.floats(-2, 2), y=st.floats(-2, 2), yaw=st.floats(-math.pi, math.pi),
    fault=st.sampled_from(["", "stall", "attack"]), undefended=st.none() | st.sampled_from(COMMANDS),
), max_size=40).map(lambda steps: sorted(steps, key=lambda s: s.t))


@settings(max_examples=200, deadline=None)
@given(step_lists)
def test_counts_add_up_for_any_decisions(steps):
    m = rp.episode_metrics(episode(steps, duration=100.0))
    assert m["certified"] + m["abstained"] == m["decisions"] == len(steps)
    assert m["unsafe_publications"] <= m["wrong_publications"] <= m["certified"]
    assert sum(m["abstain_reasons"].values()) == m["abstained"]
    if steps:
        assert 0.0 <= m["abstain_fraction"] <= 1.0
        assert min(s.latency_ms for s in steps) <= m["p50_latency_ms"] <= m["p99_latency_ms"]
    if m["undefended_steps"] is not None:
        assert m["guard_fooled"] <= m["undefended_steps"] and m["undefended_fooled"] <= m["undefended_steps"]
    assert m["attacked_steps"] <= m["fault_steps"] <= m["decisions"]


@settings(max_examples=100, deadline=None)
@given(step_lists)
def test_steps_jsonl_round_trips_any_steps(tmp_path_factory, steps):
    path = tmp_path_factory.mktemp("jsonl") / "steps.jsonl"
    rp.write_steps_jsonl([episode([]), episode(steps, scenario="second")], path)
    assert rp.read_steps(path) == ({1: steps} if steps else {})


def test_read_steps_rejects_malformed_lines(tmp_path):
    good = {"episode": 0, **dataclasses.asdict(step())}
    for bad, match in ((["{not json"], "not JSON"), ([json.dumps({k: v for k, v in good.items() if k != "truth"})],
                                                     "truth"),
                       ([json.dumps({**good, "radius": "big"})], "radius"), (["[1, 2]"], "episode")):
        path = tmp_path / "steps.jsonl"
        path.write_text("\n".join(bad) + "\n")
        with pytest.raises(ValueError, match=match):
            rp.read_steps(path)


def test_commands_in_force_follow_publication_time():
    steps = [step(0.0, command="left", latency_ms=200.0), step(0.1, command="right", latency_ms=250.0)]
    # published at 0.2 s and 0.35 s
    assert rp.commands_in_force(steps, [0.1, 0.2, 0.3, 0.35, 1.0]) == [None, "left", "left", "right", "right"]


def test_fault_windows_must_be_finite_and_ordered():
    with pytest.raises(ValueError, match="faults end"):
        rp.episode_metrics(episode([step(0.0)], faults=[(2.0, 1.0, "stall")]))
    with pytest.raises(ValueError, match="faults kind"):
        rp.episode_metrics(episode([step(0.0)], faults=[(1.0, 2.0, "")]))


def test_summary_table_has_a_row_per_episode_and_a_total():
    eps = [episode(known_steps(), reached_at=4.0),
           episode([step(0.0, truth="stop", command="stop")], scenario="off-task", target=None,
                   expect_reach=False, trajectory=[(0.0, 0.0, 0.0, 0.0)])]
    lines = rp.summary_table(eps).splitlines()
    assert lines[0].split()[0] == "scenario"
    body = [line for line in lines if not set(line) <= {"-", " "}]
    assert [line.split()[0] for line in body[1:]] == ["reach", "off-task", "total"]
    total = body[-1].split()
    assert total[1:5] == ["2/2", "4.0", "11", "27.3"]  # 3 abstains of 11 pooled decisions
    assert len({len(line) for line in lines}) == 1  # fixed width


def test_summary_table_rejects_no_episodes():
    with pytest.raises(ValueError, match="episodes"):
        rp.summary_table([])


def test_write_report_links_existing_plots_and_mentions_every_scenario(tmp_path):
    eps = [episode(known_steps(), reached_at=0.8),
           episode([step(0.1 * i, certified=False, fault="stall" if i > 2 else "") for i in range(6)],
                   scenario="camera stall", description="The camera freezes; the guard must stop.",
                   faults=[(0.3, 0.6, "stall")]),
           episode([step(0.1 * i, fault="attack", undefended="left") for i in range(4)], scenario="attack",
                   expect_reach=False),
           episode([], scenario="no decisions", trajectory=[], target=None)]
    out = rp.write_report(eps, tmp_path / "run", {"config": "config/sim_diffdrive.yaml", "sigma": 0.25})
    text = out.read_text()
    assert out.name == "report.md"
    for ep in eps:
        assert ep.scenario in text
    assert "- **sigma**: 0.25" in text and "The camera freezes" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == 1 + 3 * len(eps)
    for link in links:
        png = out.parent / link
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(tmp_path.joinpath("run").glob("*.png")) == {out.parent / link for link in links}
    with (out.parent / "episodes.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["scenario"] for r in rows] == [ep.scenario for ep in eps]
    assert rows[0]["wrong_publications"] == "2" and json.loads(rows[1]["abstain_reasons"]) == {
        "radius below threshold": 6}
    assert rp.read_steps(out.parent / "steps.jsonl") == {i: ep.steps for i, ep in enumerate(eps) if ep.steps}


def test_write_report_rejects_bad_input_before_writing(tmp_path):
    with pytest.raises(ValueError, match="episodes"):
        rp.write_report([], tmp_path / "a", {})
    with pytest.raises(ValueError, match="meta"):
        rp.write_report([episode([step()])], tmp_path / "b", ["not", "a", "mapping"])
    assert not (tmp_path / "b").exists()


def test_watchdog_abstains_count_as_decisions_but_not_in_latency():
    steps = [step(0.0, latency_ms=100.0), step(0.1, latency_ms=300.0),
             step(0.2, certified=False, command="stop", latency_ms=0.0, source="watchdog")]
    m = rp.step_metrics(steps)
    assert m["decisions"] == 3 and m["abstained"] == 1
    assert m["p50_latency_ms"] == pytest.approx(200.0)
    with pytest.raises(ValueError, match="source"):
        step(0.0, source="timer")
