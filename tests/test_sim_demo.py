"""The closed loop end to end (rs_guard_ros.sim.demo): sim, guard node and scenario runner as
real ROS 2 processes in the test's own domain. Assertions are on what was published and
recorded, never on wall-clock time."""
import json
import math

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from rs_guard_ros.sim.calibration import (CALIBRATION_FACTOR, CALIBRATION_ROUNDS, DESIGN_LATENCY_S, FACTOR_RANGE,
                                          MAX_WARMUPS, calibrate, calibrated_factor)
from rs_guard_ros.sim.demo import STEP_TIMEOUT_S, run_demo
from rs_guard_ros.sim.records import Step
from rs_guard_ros.sim.report import read_steps
from rs_guard_ros.sim.scenarios import parse_scenarios

SCENARIOS = {"scenarios": [
    {"name": "short_drive", "target": "red box", "robot": [-0.6, 0.0, 0], "time_limit": 15,
     "objects": {"red box": [0.6, 0.0], "blue ball": [1.3, 1.3], "green cylinder": [-1.3, 1.4],
                 "yellow box": [1.2, -1.4]},
     "instructions": [{"at": 0, "text": "go to the red box"}]},
    {"name": "off_task_with_stall", "target": None, "robot": [-0.5, 0.0, 0], "time_limit": 6,
     "objects": {"red box": [1.0, 0.0], "blue ball": [1.3, 1.3], "green cylinder": [-1.3, 1.4],
                 "yellow box": [1.2, -1.4]},
     "instructions": [{"at": 0, "text": "make me a coffee"}],
     "faults": [{"kind": "stall", "start": 2, "duration": 2}]},
]}
# Played between the two above: it runs in a session of its own, and the report keeps the file's order.
TWO_VIEW = {"name": "behind_two_view", "target": "red box", "robot": [0.3, 0.0, 0], "time_limit": 6, "views": 2,
            "expect": "turn", "objects": {"red box": [-1.2, 0.4], "blue ball": [1.3, 1.3], "green cylinder": [1.3, -1.3],
                                          "yellow box": [-1.3, -1.4]},
            "instructions": [{"at": 0, "text": "go to the red box"}]}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One closed-loop run of the three scenarios (module-scoped: it takes two minutes)."""
    import os

    from conftest import claimed_domains

    tmp = tmp_path_factory.mktemp("demo")
    scenario_file = tmp / "scenarios.yaml"
    first, second = SCENARIOS["scenarios"]
    scenario_file.write_text(yaml.safe_dump({"scenarios": [first, TWO_VIEW, second]}))
    saved = {k: os.environ.get(k) for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")}
    try:
        with claimed_domains() as domain:
            result = run_demo(scenario_file, tmp / "out", domain_id=domain)
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    return result, tmp / "out"


@pytest.mark.ros
def test_demo_shuts_sim_and_guard_down_cleanly_and_writes_the_report(demo):
    result, out = demo
    assert result["exit_codes"] == {"sim": 0, "guard": 0, "sim_two_view": 0, "guard_two_view": 0}
    text = (out / "report.md").read_text()
    assert text.index("short_drive") < text.index("behind_two_view") < text.index("off_task_with_stall")
    assert all((out / p).stat().st_size > 0 for p in ("overview.png", "episodes.csv", "steps.jsonl"))


@pytest.mark.ros
def test_the_run_slows_the_world_to_the_factor_calibrated_from_the_guards_own_latency(demo):
    """Each session (one view, two views) calibrates its own factor; its episodes ran at it."""
    result, out = demo
    factors = result["real_time_factors"]
    assert set(factors) == {"sim_diffdrive.yaml", "sim_two_view.yaml"}
    assert all(FACTOR_RANGE[0] <= f <= FACTOR_RANGE[1] for f in factors.values())
    by_config = {"short_drive": "sim_diffdrive.yaml", "behind_two_view": "sim_two_view.yaml",
                 "off_task_with_stall": "sim_diffdrive.yaml"}
    assert [e["real_time_factor"] for e in result["episodes"]] == [factors[by_config[e["scenario"]]]
                                                                   for e in result["episodes"]]
    assert result["calibration"].count("warm-up decisions") == 2
    assert f"real-time factor**: {result['calibration']}" in (out / "report.md").read_text()
    for log, config in (("sim.log", "sim_diffdrive.yaml"), ("sim_two_view.log", "sim_two_view.yaml")):
        assert f"real_time_factor {factors[config]:g}" in (out / log).read_text()  # the sim applied it


@pytest.mark.ros
def test_every_recorded_command_is_certified_above_its_threshold_or_the_abstain_command(demo):
    _, out = demo
    steps = [s for episode in read_steps(out / "steps.jsonl").values() for s in episode]
    assert steps
    for s in steps:
        assert (s.certified and s.radius >= s.threshold) or (not s.certified and s.command == "stop")


@pytest.mark.ros
def test_robot_drives_towards_its_target_on_certified_commands(demo):
    result, out = demo
    drive = next(e for e in result["episodes"] if e["scenario"] == "short_drive")
    steps = read_steps(out / "steps.jsonl")[0]
    assert any(s.certified and s.command == "forward" for s in steps)
    first, last = steps[0], steps[-1]
    start_gap, end_gap = math.hypot(0.6 - first.x, first.y), math.hypot(0.6 - last.x, last.y)
    assert drive["success"] or end_gap < start_gap - 0.3


@pytest.mark.ros
def test_off_task_instruction_and_camera_stall_publish_only_abstain(demo):
    result, out = demo
    episode = next(e for e in result["episodes"] if e["scenario"] == "off_task_with_stall")
    steps = read_steps(out / "steps.jsonl")[2]
    assert episode["success"] and episode["certified"] == 0
    # The stall shows up as the guard's own watchdog abstain (camera lost), not only as missing decisions.
    assert any(s.source == "watchdog" and s.reason.startswith(("stale_frame", "no_frame")) for s in steps)
    rows = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert {r["episode"] for r in rows} == {0, 1, 2}


@pytest.mark.ros
def test_two_view_scenario_runs_the_sim_with_its_rear_camera_and_the_guard_on_sim_two_view_yaml(demo):
    result, out = demo
    assert "sim_two_view.yaml" in (out / "report.md").read_text()
    steps = read_steps(out / "steps.jsonl")[1]
    # The guard ran the model on the relayed front and rear frames and the sim's joint state:
    # every decision is certified or abstains, and some ran the model (both views and the state present).
    decisions = [s for s in steps if s.source == "decision"]
    assert any(s.n_used > 0 for s in decisions)
    assert all(s.certified or s.command == "stop" for s in decisions)
    assert not any(s.reason.startswith(("no_frame: rear", "no_state")) for s in decisions)


@settings(max_examples=200, deadline=None)
@given(st.floats(1e-6, 1e6), st.floats(1e-6, 1e6))
def test_the_calibrated_factor_stays_in_its_range_and_never_rises_with_the_latency(a, b):
    low, high = sorted((a, b))
    assert FACTOR_RANGE[0] <= calibrated_factor(high) <= calibrated_factor(low) <= FACTOR_RANGE[1]


def test_the_calibrated_factor_makes_a_decision_last_the_design_latency_in_sim_time():
    assert calibrated_factor(4 * DESIGN_LATENCY_S) == pytest.approx(0.25)
    assert calibrated_factor(0.5 * DESIGN_LATENCY_S) == 1.0  # a faster computer: real time, never faster
    assert calibrated_factor(1e3) == FACTOR_RANGE[0]
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="positive and finite"):
            calibrated_factor(bad)


class SlowingComputerRunner:
    """A stand-in for the scenario runner (named as such: a real computer cannot be slowed on cue):
    its guard takes `latency_s(episode)` wall s per decision, and a warm-up of `time_limit` sim s at
    factor f holds time_limit / f / latency of them, as on a machine whose load rises and falls."""

    def __init__(self, latency_s):
        self.real_time_factor, self.latency_s, self.factors = CALIBRATION_FACTOR, latency_s, []

    def run_episode(self, scenario, episode_id, timeout, progress):
        latency = self.latency_s(episode_id)
        decisions = int(scenario.time_limit / self.real_time_factor / latency)
        steps = [Step(t=0.1 * i, truth="forward", command="stop", certified=False, radius=0.0, threshold=0.0,
                      n_used=32, latency_ms=latency * 1e3, reason="not confident", x=0.0, y=0.0, yaw=0.0)
                 for i in range(decisions)]
        return type("Episode", (), {"steps": steps})

    def set_real_time_factor(self, factor, timeout):
        self.real_time_factor = factor
        self.factors.append(factor)


def test_a_warm_up_too_slow_to_measure_slows_the_world_and_plays_again_instead_of_failing():
    """The second warm-up comes when the computer got 20x slower (other load): it holds too few
    decisions, so the world slows and the warm-ups go on until two of them measured the guard."""
    runner = SlowingComputerRunner(lambda episode: 0.3 if episode == 1 else 6.0)
    calibration = calibrate(runner, parse_scenarios(SCENARIOS)[0], STEP_TIMEOUT_S)
    assert calibration.warmups > CALIBRATION_ROUNDS
    assert runner.factors[1] < runner.factors[0]  # slowed after the short warm-up
    assert calibration.latency_s == pytest.approx(6.0) and calibration.factor == calibrated_factor(6.0)
    assert runner.real_time_factor == calibration.factor


def test_a_guard_that_never_decides_fails_the_calibration_at_the_slowest_factor():
    runner = SlowingComputerRunner(lambda episode: 1e9)
    with pytest.raises(RuntimeError, match="slowest factor"):
        calibrate(runner, parse_scenarios(SCENARIOS)[0], STEP_TIMEOUT_S)
    assert len(runner.factors) < MAX_WARMUPS and runner.factors[-1] == FACTOR_RANGE[0]


@pytest.mark.parametrize("argv, real_time", [([], False), (["--real-time"], True)])
def test_real_time_flag_is_parsed_and_handed_to_the_demo(monkeypatch, argv, real_time):
    from rs_guard_ros import cli
    from rs_guard_ros.sim import demo

    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda *args, **kwargs: calls.append(kwargs) or {})
    args = cli.build_parser().parse_args(["demo", *argv])
    assert args.real_time is real_time
    args.run(args)
    assert calls == [{"real_time": real_time}]


def test_records_map_to_the_decided_frame_or_the_latest_pose_before_a_watchdog_event():
    from rs_guard_ros.sim.runner import _step

    poses = {t: {"t": t, "x": t, "y": 0.0, "yaw": 0.0, "truth": "forward"} for t in (10.0, 10.1, 10.2)}
    frames = {10.0: ("", None), 10.1: ("attack", "forward"), 10.2: ("stall", None)}
    ordered = sorted(poses)
    decision = {"source": "decision", "stamp": 10.1, "command": "stop", "certified": False, "radius": 0.0,
                "threshold": 0.25, "n_used": 1000, "latency_ms": {"total": 80.0}, "reason": "radius_below_threshold",
                "time": 10.12}  # published 20 sim ms after its frame: the world ran slower than the wall clock
    s = _step(decision, poses, ordered, frames, start=10.0)
    assert (s.t, s.x, s.fault, s.undefended, s.latency_ms, s.source) == (pytest.approx(0.1), 10.1, "attack",
                                                                          "forward", 80.0, "decision")
    assert s.published == pytest.approx(0.12) and s.published_at == pytest.approx(0.12)
    event = {"source": "watchdog", "time": 10.25, "command": "stop", "certified": False, "reason": "stale_frame"}
    s = _step(event, poses, ordered, frames, start=10.0)
    assert (s.x, s.fault, s.source, s.n_used) == (10.2, "stall", "watchdog", 0)
    assert _step({**decision, "stamp": 9.9}, poses, ordered, frames, start=10.0) is None  # before the reset
    assert _step({**event, "time": 9.9}, poses, ordered, frames, start=10.0) is None


def test_an_attack_towards_a_command_outside_the_set_is_refused_before_anything_starts():
    from rs_guard_ros.sim.demo import _perturber
    from rs_guard_ros.sim.scenarios import parse_scenarios

    bad = {**SCENARIOS["scenarios"][1], "faults": [{"kind": "attack", "start": 0, "duration": 1, "epsilon": 0.1,
                                                    "norm": "linf", "command": "jump"}]}
    with pytest.raises(ValueError, match="off_task_with_stall.*jump"):
        _perturber(parse_scenarios({"scenarios": [bad]}))


def test_a_scenario_folder_is_every_file_in_it_and_episodes_go_through_them_in_turn(tmp_path):
    from rs_guard_ros.sim.demo import episode_list

    (tmp_path / "b.yaml").write_text(yaml.safe_dump({"scenarios": SCENARIOS["scenarios"][1:]}))
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"scenarios": SCENARIOS["scenarios"][:1]}))
    (tmp_path / "notes.txt").write_text("ignored")
    assert [s.name for s in episode_list(tmp_path)] == ["short_drive", "off_task_with_stall"]
    assert [s.name for s in episode_list(tmp_path, count=5)] == ["short_drive", "off_task_with_stall"] * 2 + \
        ["short_drive"]
    assert [s.name for s in episode_list(tmp_path, ("off_task_with_stall",), 2)] == ["off_task_with_stall"] * 2
    with pytest.raises(ValueError, match="--episodes must be >= 1"):
        episode_list(tmp_path, count=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no \\*.yaml scenario files"):
        episode_list(tmp_path / "empty")


def test_ray_episodes_running_together_get_distinct_domains_and_a_retry_gets_a_new_one():
    from rs_guard_ros.sim.demo import DOMAIN_IDS, episode_domain

    for base in (1, 57, 101):
        ids = [episode_domain(base, slot) for slot in range(DOMAIN_IDS)]
        assert sorted(ids) == list(range(1, DOMAIN_IDS + 1))  # any DOMAIN_IDS consecutive tries: all different
    episodes = 3
    first, retry = episode_domain(40, 1), episode_domain(40, 1 + 1 * episodes)  # episode 1, tries 1 and 2
    assert first == 41 and retry == 44 and retry not in {episode_domain(40, i) for i in range(episodes)}
