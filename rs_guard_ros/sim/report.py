"""Report of a closed-loop simulation run: a terminal table, and a folder with report.md,
episodes.csv, steps.jsonl and PNG plots (matplotlib Agg, no ROS), from the runner's
`Episode` records (rs_guard_ros.sim.records).
"""
from __future__ import annotations

import bisect
import csv
import json
import math
import re
from dataclasses import MISSING, asdict, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.image import imsave
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, FancyArrow, Rectangle

from ..plots import ABSTAINED, CERTIFIED, RADIUS_AXIS, THRESHOLD, figure, save_figure
from .records import (OBJECT_SPECS, STILL_DISTANCE, STILL_ROTATION, TURN_TOWARDS, Episode, Step, check_episode,
                      episode_metrics, step_metrics, turned_towards)
from .world import REACH_DISTANCE, ROOM_HALF

COMMAND_COLOURS = {"forward": "tab:blue", "left": "tab:orange", "right": "tab:purple", "stop": "tab:red"}
NO_COMMAND = "0.6"  # path colour before the first publication (or for a command outside COMMAND_COLOURS)
FAULT_COLOURS = ("tab:gray", "tab:olive", "tab:cyan", "tab:pink", "tab:brown")
WRONG = "magenta"


# ----------------------------------------------------------------------------- tables
TABLE_HEADER = ("scenario", "success", "time to goal (s)", "decisions", "abstain %", "wrong", "samples p50",
                "latency p50 (ms)", "real-time factor")


def _fmt(value: float | None, spec: str) -> str:
    """A number formatted with `spec`, or "-" when undefined."""
    return "-" if value is None else format(value, spec)


def _row(name: str, success: str, time_to_goal: float | None, m: Mapping[str, Any],
         factor: str) -> tuple[str, ...]:
    """One table row from step metrics and the real-time factor(s) it ran at."""
    abstain = None if m["abstain_fraction"] is None else 100.0 * m["abstain_fraction"]
    return (name, success, _fmt(time_to_goal, ".1f"), str(m["decisions"]), _fmt(abstain, ".1f"),
            str(m["wrong_publications"]), _fmt(m["p50_n_used"], ".0f"), _fmt(m["p50_latency_ms"], ".0f"), factor)


def factor_range(episodes: Sequence[Episode]) -> str:
    """The real-time factor the episodes ran at ("0.25"), or its range ("0.21-0.25") when they differ."""
    low, high = (f(e.real_time_factor for e in episodes) for f in (min, max))
    return f"{low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}-{high:.2f}"


def table_rows(episodes: Sequence[Episode]) -> list[tuple[str, ...]]:
    """Rows of the summary table: one per episode, then a total row.

    The total pools every step of every episode; its success is "k/N" and its time to goal is the
    mean over the episodes that had to reach their target and did ("stay" episodes have none).
    """
    if not episodes:
        raise ValueError("episodes must not be empty")
    metrics = [episode_metrics(ep) for ep in episodes]
    rows = [_row(m["scenario"], "yes" if m["success"] else "no", m["time_to_goal"], m, factor_range([ep]))
            for m, ep in zip(metrics, episodes)]
    reached = [m["time_to_goal"] for m in metrics if m["time_to_goal"] is not None]
    pooled = step_metrics([s for ep in episodes for s in ep.steps])
    wins = sum(m["success"] for m in metrics)
    rows.append(_row("total", f"{wins}/{len(metrics)}", float(np.mean(reached)) if reached else None, pooled,
                     factor_range(episodes)))
    return rows


def summary_table(episodes: Sequence[Episode]) -> str:
    """Fixed-width plain-text table for the terminal: one row per episode and a total row."""
    rows = table_rows(episodes)
    widths = [max(len(r[i]) for r in (TABLE_HEADER, *rows)) for i in range(len(TABLE_HEADER))]

    def line(cells: Sequence[str]) -> str:
        # Scenario left-aligned, numbers right-aligned.
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(TABLE_HEADER), rule, *map(line, rows[:-1]), rule, line(rows[-1])])


def markdown_table(episodes: Sequence[Episode]) -> str:
    """The summary table as a markdown table (same rows as `summary_table`, total in bold)."""
    rows = table_rows(episodes)
    out = ["| " + " | ".join(TABLE_HEADER) + " |", "|---|" + "---:|" * (len(TABLE_HEADER) - 1)]
    out += ["| " + " | ".join(r) + " |" for r in rows[:-1]]
    out.append("| " + " | ".join(f"**{c}**" for c in rows[-1]) + " |")
    return "\n".join(out)


# ----------------------------------------------------------------------------- plots
def _command_colour(command: str | None) -> str:
    """Fixed colour of a published command, so every plot of the report agrees."""
    return COMMAND_COLOURS.get(command, NO_COMMAND) if command else NO_COMMAND


def commands_in_force(steps: Sequence[Step], times: Sequence[float]) -> list[str | None]:
    """The command most recently published at each time (None before the first publication)."""
    published = sorted((s.published_at, i) for i, s in enumerate(steps))
    at = [p for p, _ in published]
    out: list[str | None] = []
    for t in times:
        k = bisect.bisect_right(at, t)
        out.append(steps[published[k - 1][1]].command if k else None)
    return out


def _draw_room(ax: Any, ep: Episode) -> None:
    """Walls, objects in their colours and sizes, and the target's reach circle."""
    half = ROOM_HALF
    ax.add_patch(Rectangle((-half, -half), 2 * half, 2 * half, fill=False, edgecolor="0.3", linewidth=3))
    for name, (ox, oy) in ep.objects.items():
        spec = OBJECT_SPECS[name]
        if spec.shape == "box":  # objects are mocap bodies without rotation: axis-aligned boxes
            sx, sy = spec.size[0], spec.size[1]
            ax.add_patch(Rectangle((ox - sx, oy - sy), 2 * sx, 2 * sy, color=spec.rgba, zorder=2))
        else:
            ax.add_patch(Circle((ox, oy), spec.size[0], color=spec.rgba, zorder=2))
        ax.annotate(name, (ox, oy - spec.radius - 0.05), ha="center", va="top", fontsize=7)
    if ep.target is not None:
        tx, ty = ep.objects[ep.target]
        ax.add_patch(Circle((tx, ty), REACH_DISTANCE, fill=False, linestyle="--", edgecolor="k", zorder=2))
    margin = 0.15
    ax.set(xlim=(-half - margin, half + margin), ylim=(-half - margin, half + margin), aspect="equal",
           xlabel="x (m)", ylabel="y (m)")


def _draw_path(ax: Any, ep: Episode) -> list[Any]:
    """The path coloured by the command in force, abstentions as black x, the start pose as an arrow;
    returns legend handles."""
    handles: list[Any] = []
    traj = ep.trajectory
    if len(traj) > 1:
        segments = [[(a[1], a[2]), (b[1], b[2])] for a, b in zip(traj, traj[1:])]
        commands = commands_in_force(ep.steps, [p[0] for p in traj[:-1]])
        ax.add_collection(LineCollection(segments, colors=[_command_colour(c) for c in commands], linewidths=2.5,
                                         zorder=3))
        handles += [Line2D([], [], color=_command_colour(c), linewidth=2.5, label=c or "no command yet")
                    for c in sorted(set(commands), key=lambda c: (c is None, c or ""))]
    start = traj[0][1:] if traj else ((ep.steps[0].x, ep.steps[0].y, ep.steps[0].yaw) if ep.steps else None)
    if start is not None:
        x, y, yaw = start
        ax.add_patch(FancyArrow(x, y, 0.25 * math.cos(yaw), 0.25 * math.sin(yaw), width=0.025, color="k", zorder=4))
        handles.append(Line2D([], [], color="k", marker=r"$\rightarrow$", linestyle="", label="start"))
    if traj:
        ax.scatter([traj[-1][1]], [traj[-1][2]], s=40, facecolors="none", edgecolors="k", zorder=5)
        handles.append(Line2D([], [], color="k", marker="o", markerfacecolor="none", linestyle="", label="end"))
    abstains = [(s.x, s.y) for s in ep.steps if not s.certified]
    if abstains:
        ax.scatter(*zip(*abstains), marker="x", color="k", s=14, linewidths=0.8, alpha=0.7, zorder=5)
        handles.append(Line2D([], [], color="k", marker="x", linestyle="", label="abstain"))
    return handles


def _draw_trajectory(ax: Any, ep: Episode, legend: bool = True) -> None:
    """Top-down view of one episode on `ax`."""
    _draw_room(ax, ep)
    handles = _draw_path(ax, ep)
    if legend and handles:
        ax.legend(handles=handles, loc="upper right", fontsize=7, framealpha=0.8)
    ax.set_title(ep.scenario, fontsize=9)


def trajectory_plot(ep: Episode, path: Path) -> str:
    """PNG of the top-down trajectory of one episode."""
    fig = Figure(figsize=(5.6, 5.6), layout="tight")
    _draw_trajectory(fig.add_subplot(), ep)
    return save_figure(fig, path)


def overview_plot(episodes: Sequence[Episode], path: Path) -> str:
    """PNG with every episode's trajectory side by side (no legends; colours as in the episode plots)."""
    cols = min(3, len(episodes))
    rows = math.ceil(len(episodes) / cols)
    fig = Figure(figsize=(3.6 * cols, 3.6 * rows), layout="tight")
    for i, ep in enumerate(episodes):
        _draw_trajectory(fig.add_subplot(rows, cols, i + 1), ep, legend=False)
    return save_figure(fig, path)


def _decorate_time_axis(ax: Any, ep: Episode) -> None:
    """Shade fault windows (one colour per fault kind), mark when the target was reached, fix the x range."""
    colours: dict[str, str] = {}
    for start, end, fault in ep.faults:
        first = fault not in colours  # label each fault kind once in the legend
        colour = colours.setdefault(fault, FAULT_COLOURS[len(colours) % len(FAULT_COLOURS)])
        ax.axvspan(start, end, color=colour, alpha=0.2, linewidth=0, label=f"fault: {fault}" if first else None)
    if ep.reached_at is not None:
        ax.axvline(ep.reached_at, color="k", linestyle=":", linewidth=1, label="target reached")
    end = max([ep.duration, *(s.t for s in ep.steps)])
    ax.set_xlim(0.0, 1.02 * end if end > 0 else 1.0)  # a margin keeps a line at the very end visible
    ax.set_xlabel("sim time since episode start (s)")
    ax.grid(alpha=0.3)


def _legend(ax: Any) -> None:
    """A small legend outside the data, above the axes, when anything is labelled."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=4, fontsize=7, frameon=False)


def _no_decisions(ax: Any) -> None:
    """Mark an axis of an episode without decisions."""
    ax.text(0.5, 0.5, "no decisions", ha="center", va="center", transform=ax.transAxes)


def radius_plot(ep: Episode, path: Path) -> str:
    """PNG of each decision's certified radius over time, with its threshold as a step line, abstentions
    and wrong publications marked, fault windows shaded."""
    fig, ax = figure()
    steps = ep.steps
    if steps:
        ts = [s.t for s in steps]
        ax.step(ts, [s.threshold for s in steps], where="post", color=THRESHOLD, linewidth=1, label="threshold")
        groups = ((lambda s: s.certified and s.command == s.truth, CERTIFIED, "o", "published, correct"),
                  (lambda s: s.certified and s.command != s.truth, WRONG, "D", "published, WRONG"),
                  (lambda s: not s.certified, ABSTAINED, "x", "abstained"))
        for keep, colour, marker, label in groups:
            pts = [(s.t, s.radius) for s in steps if keep(s)]
            if pts:
                ax.scatter(*zip(*pts), s=14, color=colour, marker=marker, label=label, zorder=3)
    else:
        _no_decisions(ax)
    _decorate_time_axis(ax, ep)
    ax.set_ylim(bottom=0.0)
    ax.set_ylabel(RADIUS_AXIS.replace(" (", "\n("))
    _legend(ax)
    return save_figure(fig, path)


def samples_plot(ep: Episode, path: Path) -> str:
    """PNG of the Monte-Carlo samples each decision used over time (certified vs abstained), faults shaded."""
    fig, ax = figure()
    for certified, colour, marker, label in ((True, CERTIFIED, "o", "published"), (False, ABSTAINED, "x", "abstained")):
        pts = [(s.t, s.n_used) for s in ep.steps if s.certified is certified]
        if pts:
            ax.scatter(*zip(*pts), s=14, color=colour, marker=marker, label=label, zorder=3)
    if not ep.steps:
        _no_decisions(ax)
    _decorate_time_axis(ax, ep)
    ax.set_ylim(bottom=0.0)
    ax.set_ylabel("samples per decision\n(selection + estimation)")
    _legend(ax)
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- files
def _slug(text: str) -> str:
    """A file-name-safe version of a scenario name ("off task / 2" -> "off_task_2")."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "episode"


def _stem(index: int, ep: Episode) -> str:
    """File name stem of one episode, unique by index even when scenario names repeat."""
    return f"{index:02d}_{_slug(ep.scenario)}"


def episode_files(index: int, ep: Episode) -> dict[str, str]:
    """File names of one episode's plots."""
    return {kind: f"{_stem(index, ep)}_{kind}.png" for kind in ("trajectory", "radius", "samples")}


def write_first_turn(index: int, ep: Episode, out: Path) -> dict[str, str]:
    """The camera frames of the episode's first certified turn as PNGs (twice their size, pixels
    kept sharp): camera -> file name; nothing when no turn was certified."""
    if ep.first_turn is None:
        return {}
    files = {camera: f"{_stem(index, ep)}_first_turn_{_slug(camera)}.png" for camera in ep.first_turn[2]}
    for camera, rgb in ep.first_turn[2].items():
        imsave(out / files[camera], np.repeat(np.repeat(rgb, 2, axis=0), 2, axis=1))
    return files


def write_episodes_csv(episodes: Sequence[Episode], path: Path) -> None:
    """episodes.csv: one row of `episode_metrics` per episode (abstain reasons as a JSON object)."""
    metrics = [episode_metrics(ep) for ep in episodes]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["episode", *metrics[0], "description"])
        writer.writeheader()
        for i, (ep, m) in enumerate(zip(episodes, metrics)):
            writer.writerow({"episode": i, **m, "abstain_reasons": json.dumps(m["abstain_reasons"]),
                             "description": ep.description})


def write_steps_jsonl(episodes: Sequence[Episode], path: Path) -> None:
    """steps.jsonl: one JSON object per step, every Step field plus its episode index and scenario."""
    with path.open("w") as f:
        for i, ep in enumerate(episodes):
            for step in ep.steps:
                f.write(json.dumps({"episode": i, "scenario": ep.scenario, **asdict(step)}, allow_nan=False) + "\n")


def step_from_json(obj: Mapping[str, Any]) -> Step:
    """A Step from one steps.jsonl object (extra keys ignored; missing or bad fields raise ValueError)."""
    names = [f.name for f in fields(Step)]
    missing = [f.name for f in fields(Step) if f.default is MISSING and f.name not in obj]
    if missing:
        raise ValueError(f"step object lacks fields {missing}")
    return Step(**{n: obj[n] for n in names if n in obj})


def read_steps(path: str | Path) -> dict[int, list[Step]]:
    """Steps of a steps.jsonl file grouped by episode index (episodes without steps are absent)."""
    out: dict[int, list[Step]] = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: not JSON ({exc})") from exc
        if not isinstance(obj, dict) or not isinstance(obj.get("episode"), int):
            raise ValueError(f"{path}:{lineno}: expected an object with an integer 'episode'")
        out.setdefault(obj["episode"], []).append(step_from_json(obj))
    return out


HOW_TO_READ = (
    "Each episode drives the simulated robot with the guard's published commands only. A decision is "
    "*certified* when randomized smoothing certifies its command with an l2 radius at least that command's "
    "threshold (Cohen et al. 2019); otherwise the guard *abstains* and publishes `stop`. *Wrong* counts "
    "certified commands that differ from the simulator's ground truth (abstaining is never wrong); "
    "*unsafe* counts certified `forward` where the truth was `stop`. An episode that expects to reach its "
    "target succeeds when the robot came within the dashed reach circle; one that expects no motion "
    "(off-task instruction, attack that should be stopped) succeeds when the robot travelled less than "
    f"{STILL_DISTANCE} m and turned less than {STILL_ROTATION} rad; one that expects a turn (a target only "
    f"the rear camera sees) when the target's bearing shrank by {math.degrees(TURN_TOWARDS):.0f} degrees. "
    "Under each episode, the frames (every camera) of its first certified turn. Samples are model evaluations per decision (selection + estimation), decisions that "
    "never ran the model excluded; latency is frame received to command published, in wall-clock ms. The "
    "real-time factor is the simulated seconds per wall second the episode ran at: the demo slows the world "
    "until a decision takes the sim seconds the scenarios were designed for (rs-guard demo --real-time: 1), so "
    "a decision lasts latency x factor in sim time. In the trajectory plots "
    "the path is coloured by the command in force (from the sim time it was published), black x marks "
    "the robot's pose at each abstention, the arrow its start pose and the open circle its end pose. In the radius "
    "plots the grey step line is the threshold the top command had to clear, magenta diamonds are wrong "
    "publications and shaded bands are camera faults or attacks. The total row "
    "pools every decision of every run; its time to goal is the mean over the runs that had to reach the target and "
    "did (a run whose goal is to stay has no time to goal: \"-\")."
)


def _meta_lines(meta: Mapping[str, Any]) -> list[str]:
    """The run's meta data as a markdown key/value list."""
    if not isinstance(meta, Mapping):
        raise ValueError(f"meta must be a mapping, got {type(meta).__name__}")
    return [f"- **{key}**: {value}" for key, value in meta.items()]


def _episode_section(index: int, ep: Episode, files: Mapping[str, str],
                     turn_files: Mapping[str, str]) -> list[str]:
    """Markdown section of one episode: what it tested, its outcome, its plots and the frames
    of its first certified turn."""
    m = episode_metrics(ep)
    goal = (f"reach the {ep.target}" if ep.expect_reach else f"turn towards the {ep.target}" if ep.expect_turn
            else "stay still (do not move)")
    outcome = "SUCCESS" if m["success"] else "FAILURE"
    if ep.expect_turn:
        reached = f"the target's bearing shrank by {math.degrees(turned_towards(ep)):.0f} degrees"
    elif not ep.expect_reach:
        reached = "no time to goal (the goal is to stay)"
    elif m["time_to_goal"] is not None:
        reached = f"target reached at {m['time_to_goal']:.1f} s"
    else:
        reached = "target not reached"
    lines = [f"## {index}. {ep.scenario}", ""]
    if ep.description:
        lines += [ep.description, ""]
    lines += [
        f"Goal: {goal}. **{outcome}**: {reached}, ran {ep.duration:.1f} of {ep.time_limit:.1f} s, "
        f"path {m['path_length']:.2f} m.", "",
        f"- decisions {m['decisions']}, certified {m['certified']}, abstained {m['abstained']} "
        f"({_fmt(None if m['abstain_fraction'] is None else 100 * m['abstain_fraction'], '.1f')} %)",
        f"- wrong publications {m['wrong_publications']} (rate per publication "
        f"{_fmt(m['wrong_rate'], '.3f')}), unsafe {m['unsafe_publications']}",
        f"- samples per decision: mean {_fmt(m['mean_n_used'], '.0f')}, p50 {_fmt(m['p50_n_used'], '.0f')}; "
        f"latency p50 {_fmt(m['p50_latency_ms'], '.0f')} ms, p99 {_fmt(m['p99_latency_ms'], '.0f')} ms",
    ]
    if m["fault_steps"]:
        lines.append(f"- decisions under a fault or attack: {m['fault_steps']} (attack: {m['attacked_steps']})")
    if m["undefended_steps"] is not None:
        lines.append(f"- base VLA alone fooled on {m['undefended_fooled']} of {m['undefended_steps']} judged frames; "
                     f"guard published a wrong command on {m['guard_fooled']} of them")
    if m["abstain_reasons"]:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(m["abstain_reasons"].items()))
        lines.append(f"- abstain reasons: {reasons}")
    lines += ["", f"![trajectory]({files['trajectory']})", "", f"![radius over time]({files['radius']})", "",
              f"![samples per decision]({files['samples']})", ""]
    if ep.first_turn is not None:
        t, command, _ = ep.first_turn
        lines += [f"First certified turn: **{command}** on the frames of {t:.1f} s "
                  f"({', '.join(turn_files)} camera):", "",
                  " ".join(f"![{camera} camera at the first certified turn]({name})"
                           for camera, name in turn_files.items()), ""]
    return lines


def write_report(episodes: Sequence[Episode], out_dir: str | Path, meta: Mapping[str, Any]) -> Path:
    """Write report.md, episodes.csv, steps.jsonl and every plot into `out_dir`; returns report.md's path."""
    episodes = list(episodes)
    if not episodes:
        raise ValueError("episodes must not be empty")
    for i, ep in enumerate(episodes):
        check_episode(ep, f"episodes[{i}]")
    meta_lines = _meta_lines(meta)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    overview_plot(episodes, out / "overview.png")
    lines = ["# rs-guard closed-loop simulation", "", *meta_lines, "", markdown_table(episodes), "",
             "## How to read this", "", HOW_TO_READ, "", "![all trajectories](overview.png)", ""]
    for i, ep in enumerate(episodes):
        files = episode_files(i, ep)
        trajectory_plot(ep, out / files["trajectory"])
        radius_plot(ep, out / files["radius"])
        samples_plot(ep, out / files["samples"])
        lines += _episode_section(i, ep, files, write_first_turn(i, ep, out))
    lines += ["Data: [episodes.csv](episodes.csv) (one row per episode), [steps.jsonl](steps.jsonl) "
              "(one object per decision).", ""]
    write_episodes_csv(episodes, out / "episodes.csv")
    write_steps_jsonl(episodes, out / "steps.jsonl")
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report
