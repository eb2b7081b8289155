"""Scenario files (rs_guard_ros.sim.scenarios) and the sim's ~/reset parser: outside input,
so every malformed document is refused with a message naming the scenario and field."""
import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from rs_guard_ros.sim.ros_bridge import parse_reset
from rs_guard_ros.sim.scenarios import ScenarioError, load_scenarios, parse_scenarios

ROOT = Path(__file__).resolve().parents[1]
BASE = {"name": "s1", "target": "red box", "robot": [0.0, 0.0, 90], "time_limit": 10,
        "instructions": [{"at": 0, "text": "go to the red box"}]}


def one(**changes):
    """A document with one scenario: BASE with `changes` (None deletes a key)."""
    entry = {**BASE, **changes}
    return {"scenarios": [{k: v for k, v in entry.items() if v is not None}]}


def test_shipped_demo_scenarios_load_and_cover_faults_off_task_and_attack():
    scenarios = load_scenarios(ROOT / "config/scenarios/demo.yaml")
    kinds = {f.kind for s in scenarios for f in s.faults}
    assert {"stall", "drop", "noise", "attack"} <= kinds
    assert any(s.target is None and s.expect == "stay" for s in scenarios)
    assert sum(s.expect == "reach" for s in scenarios) >= 3


def test_a_scenario_converts_yaw_to_radians_sorts_instructions_and_merges_defaults():
    doc = {"defaults": {"time_limit": 20, "seed": 5},
           "scenarios": [{**BASE, "time_limit": None, "instructions": [
               {"at": 4, "text": "go to the blue ball"}, {"at": 0, "text": "go to the red box"}]}]}
    doc["scenarios"][0] = {k: v for k, v in doc["scenarios"][0].items() if v is not None}
    (s,) = parse_scenarios(doc)
    assert s.robot == (0.0, 0.0, pytest.approx(math.pi / 2))
    assert [i.at for i in s.instructions] == [0.0, 4.0] and s.time_limit == 20 and s.seed == 5
    assert s.expect == "reach" and s.faults == ()


def test_faults_are_active_on_their_half_open_window():
    (s,) = parse_scenarios(one(faults=[{"kind": "stall", "start": 2, "duration": 1.5},
                                       {"kind": "noise", "start": 3, "duration": 1, "sigma": 0.3}]))
    assert [f.kind for f in s.active_faults(1.99)] == []
    assert [f.kind for f in s.active_faults(2.0)] == ["stall"]
    assert [f.kind for f in s.active_faults(3.2)] == ["stall", "noise"]
    assert [f.kind for f in s.active_faults(4.0)] == []


@pytest.mark.parametrize("changes, field", [
    ({"name": "has space"}, "name"),
    ({"target": "purple cube"}, "target"),
    ({"target": None, "expect": "reach"}, "expect: reach needs a target"),
    ({"robot": [0, 0]}, "robot"),
    ({"robot": [5.0, 0, 0]}, "robot"),
    ({"robot": [0, 0, float("nan")]}, "yaw"),
    ({"time_limit": 0}, "time_limit"),
    ({"time_limit": True}, "time_limit"),
    ({"instructions": []}, "instructions"),
    ({"instructions": [{"at": 11, "text": "go"}]}, "instructions[0].at"),
    ({"instructions": [{"at": 0, "text": "  "}]}, "instructions[0].text"),
    ({"objects": {"red box": [0, 3]}}, "objects[red box]"),
    ({"objects": {"sofa": [0, 0]}}, "objects has unknown names"),
    ({"seed": -1}, "seed"),
    ({"faults": [{"kind": "fire", "start": 0, "duration": 1}]}, "faults[0]"),
    ({"faults": [{"kind": "stall", "start": 0, "duration": 0}]}, "faults[0].duration"),
    ({"faults": [{"kind": "stall", "start": 0, "duration": 1, "sigma": 1}]}, "a stall fault takes only"),
    ({"faults": [{"kind": "drop", "start": 0, "duration": 1, "probability": 1.5}]}, "probability"),
    ({"faults": [{"kind": "attack", "start": 0, "duration": 1, "epsilon": 1, "norm": "l1"}]}, "norm"),
    ({"faults": [{"kind": "attack", "start": 0, "duration": 1}]}, "epsilon"),
    ({"speed": 3}, "unknown keys"),
])
def test_bad_scenarios_are_refused_naming_the_field(changes, field):
    with pytest.raises(ScenarioError, match="s1|scenario #0") as info:
        parse_scenarios(one(**changes))
    assert field in str(info.value)


def test_duplicate_names_and_bad_top_level_documents_are_refused():
    with pytest.raises(ScenarioError, match="duplicate"):
        parse_scenarios({"scenarios": [BASE, BASE]})
    for doc in (None, [], {"scenarios": []}, {"scenarios": [BASE], "extra": 1}, {"scenarios": [3]}):
        with pytest.raises(ScenarioError):
            parse_scenarios(doc)


def test_unreadable_scenario_file_names_the_path(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("scenarios: [unclosed")
    with pytest.raises(ScenarioError, match="bad.yaml"):
        load_scenarios(bad)


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(sorted(BASE) + ["objects", "faults", "seed", "expect", "description"]), value=yaml_values)
def test_any_value_in_any_field_either_parses_or_raises_scenario_error(key, value):
    try:
        scenarios = parse_scenarios(one(**{key: value}))
    except ScenarioError:
        return
    (s,) = scenarios
    assert s.time_limit > 0 and all(math.isfinite(v) for v in s.robot)
    assert all(0 <= i.at <= s.time_limit for i in s.instructions)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=40) | st.builds(json.dumps, yaml_values))
def test_sim_reset_parser_accepts_only_well_formed_requests(text):
    try:
        reset = parse_reset(text)
    except ValueError:
        return
    assert isinstance(reset.episode, int) and len(reset.robot) == 3


def test_sim_reset_parser_reads_a_valid_request_and_names_bad_fields():
    good = {"episode": 3, "robot": [0.5, -1, 1.57], "objects": {"red box": [1, 1]}, "seed": 7, "target": None}
    reset = parse_reset(json.dumps(good))
    assert reset.robot == (0.5, -1.0, 1.57) and reset.objects == {"red box": (1.0, 1.0)} and reset.target is None
    for change, word in [({"robot": [0, 0]}, "robot"), ({"target": "sofa"}, "target"), ({"seed": True}, "seed"),
                         ({"objects": {"red box": [0, float("inf")]}}, "objects")]:
        with pytest.raises(ValueError, match=word):
            parse_reset(json.dumps({**good, **change}))
    with pytest.raises(ValueError, match="JSON"):
        parse_reset("{")


def test_shipped_two_view_scenario_starts_with_its_target_where_only_the_rear_camera_sees_it():
    from rs_guard_ros.sim.world import World

    scenarios = load_scenarios(ROOT / "config/scenarios/demo.yaml")
    two_view = [s for s in scenarios if s.views == 2]
    assert [s.name for s in two_view] == ["target_behind_two_view"]
    assert all(s.views == 1 for s in scenarios if s.name != "target_behind_two_view")  # one-camera model
    (s,) = two_view
    assert s.expect == "turn" and s.target is not None
    with World() as world:
        world.reset(robot_pose=s.robot, object_positions=s.objects)
        assert not world.in_view(s.target) and world.visible(s.target, "rear")
        assert world.correct_command(s.target) in ("left", "right")


def test_views_must_be_one_or_two_and_two_views_refuse_an_attack():
    assert parse_scenarios(one(views=2))[0].views == 2
    for bad in (0, 3, True, "2"):
        with pytest.raises(ScenarioError, match="views must be one of"):
            parse_scenarios(one(views=bad))
    attack = {"kind": "attack", "start": 0, "duration": 1, "epsilon": 0.1}
    with pytest.raises(ScenarioError, match="attack fault needs views: 1"):
        parse_scenarios(one(views=2, faults=[attack]))


def test_expect_turn_needs_a_target():
    assert parse_scenarios(one(expect="turn"))[0].expect == "turn"
    with pytest.raises(ScenarioError, match="expect: turn needs a target"):
        parse_scenarios(one(expect="turn", target=None))
