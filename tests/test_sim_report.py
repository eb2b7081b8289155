"""Closed-loop report (rs_guard_ros.sim.report): tables, steps.jsonl round trips, and a report
folder whose markdown links existing, non-empty plots."""
import csv
import dataclasses
import json
import re

import pytest
from hypothesis import given, settings

from rs_guard_ros.sim import report as rp
from sim_builders import episode, known_steps, step, step_lists


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


def test_commands_take_force_at_their_recorded_sim_publication_time_in_a_slowed_world():
    """At real-time factor 0.25 a decision of 2000 wall ms lasts 0.5 sim s: the recorded
    publication time, not frame time + wall latency, says when the command took over."""
    steps = [step(0.0, command="left", latency_ms=2000.0, published=0.5),
             step(0.1, command="right", latency_ms=2000.0, published=0.6)]
    assert rp.commands_in_force(steps, [0.4, 0.5, 0.6, 2.0]) == [None, "left", "right", "right"]


def test_the_table_prints_each_episodes_real_time_factor_and_their_range_in_the_total():
    eps = [episode(known_steps(), real_time_factor=0.25), episode(known_steps(), scenario="b", real_time_factor=0.5)]
    header, rows = rp.TABLE_HEADER, rp.table_rows(eps)
    assert header[-1] == "real-time factor"
    assert [r[-1] for r in rows] == ["0.25", "0.50", "0.25-0.50"]
    assert rp.table_rows(eps[:1])[-1][-1] == "0.25"
    assert "0.25-0.50" in rp.summary_table(eps) and "| **0.25-0.50** |" in rp.markdown_table(eps)


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


def test_a_stay_episode_shows_no_time_to_goal_and_is_left_out_of_the_mean(tmp_path):
    """The demo's attacker_at_target (goal: stay, robot starts at the target, "reached" at 0.1 s)
    used to show 0.1 s and pull the total's mean down; now "-" and excluded."""
    stay = episode([step(0.1, truth="stop", command="stop")], scenario="attacker_at_target", expect_reach=False,
                   reached_at=0.1, trajectory=[(0.0, 1.2, 0.5, 0.0), (0.1, 1.2, 0.5, 0.0)])
    eps = [episode(known_steps(), reached_at=4.0), episode(known_steps(), scenario="reach 2", reached_at=6.0), stay]
    rows = rp.table_rows(eps)
    assert [r[2] for r in rows] == ["4.0", "6.0", "-", "5.0"]  # total: mean of 4 and 6, not of 4, 6 and 0.1
    assert "| **5.0** |" in rp.markdown_table(eps)
    text = rp.write_report(eps, tmp_path / "run", {}).read_text()
    section = text[text.index("## 2. attacker_at_target"):]
    assert "no time to goal (the goal is to stay)" in section and "target reached at" not in section


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


def test_report_shows_every_cameras_frame_at_the_first_certified_turn(tmp_path):
    import numpy as np
    from matplotlib.image import imread

    front = np.zeros((96, 128, 3), np.uint8)
    rear = np.full((96, 128, 3), 200, np.uint8)
    turn = episode(known_steps(), scenario="target behind", expect_reach=False, expect_turn=True,
                   first_turn=(1.5, "left", {"front": front, "rear": rear}))
    out = rp.write_report([turn, episode(known_steps(), scenario="no turn")], tmp_path / "run", {"config": "x"})
    text = out.read_text()
    links = re.findall(r"!\[(front|rear) camera at the first certified turn\]\(([^)]+)\)", text)
    assert [camera for camera, _ in links] == ["front", "rear"]
    assert "First certified turn: **left** on the frames of 1.5 s" in text and "turn towards the red box" in text
    for (camera, name), rgb in zip(links, (front, rear)):
        shown = imread(out.parent / name)
        assert shown.shape[:2] == (192, 256)  # twice the camera's size
        assert np.allclose(shown[..., :3] * 255, np.repeat(np.repeat(rgb, 2, 0), 2, 1), atol=1)
    assert text.count("first certified turn]") == 2  # the episode without a turn shows no frames
