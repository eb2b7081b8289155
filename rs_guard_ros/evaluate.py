"""Offline evaluation of the gate (`rs-guard eval`): decide every frame of a recording and report.

Sources are read by :mod:`rs_guard_ros.recordings` (image folder, video, rosbag2). A
frame that cannot be decoded becomes an abstain row with the reason, as on the robot.

Ground truth (`load_labels`, optional): a CSV with a header naming, in any order, one key
column, a `command` column (a configured command, or UNKNOWN: nothing may be certified
here) and optionally an `instruction` column (overrides the fixed instruction for that
frame). examples/frames.csv (image,instruction,command) is such a file. Key columns:

    image       folder frames, by file name
    index       any source, by 0-based frame index (frames that fail to decode count)
    timestamp   video/bag, change points: a frame takes the row with the latest timestamp
                <= its time (seconds since the recording started); frames before the first
                row have no ground truth

Other columns are ignored.

`evaluate` writes into the output folder: decisions.csv and decisions.jsonl (one row per
frame), summary.json, PNG plots (see :mod:`rs_guard_ros.plots`) and report.md.
"""
from __future__ import annotations

import argparse
import bisect
import csv
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
from tqdm import tqdm

from .certify import UNKNOWN_NAME
from .recordings import KINDS, Frame, iter_frames

if TYPE_CHECKING:  # type hints only: importing this module (the CLI parser does) must not load torch
    from .guard import Decision, Guard

LABEL_KEYS = ("image", "index", "timestamp")
UNKNOWN = UNKNOWN_NAME  # ground truth "no command is right here" (e.g. pure noise): certifying anything is wrong
CURVE_POINTS = 101  # radius grid of the certified-accuracy curve
ROW_FIELDS = ("index", "name", "time_s", "instruction", "command", "certified", "label", "radius",
              "radius_camera", "threshold", "p_lower", "n_used", "reason", "latency_ms")


@dataclass(frozen=True)
class Labels:
    """Ground truth (and optional per-frame instructions) keyed by image name, index or change time."""

    key: str  # one of LABEL_KEYS
    commands: dict[Any, str]
    instructions: dict[Any, str]
    path: str = ""
    times: tuple[float, ...] = ()  # the sorted change points (key "timestamp")

    def _key_for(self, frame: Frame) -> Any:
        if self.key == "image":
            return frame.name
        if self.key == "index":
            return frame.index
        if frame.time_s is None:
            return None
        at = bisect.bisect_right(self.times, frame.time_s) - 1
        return self.times[at] if at >= 0 else None

    def command_for(self, frame: Frame) -> str | None:
        """The correct command for this frame, or None where the file says nothing."""
        return self.commands.get(self._key_for(frame))

    def instruction_for(self, frame: Frame) -> str | None:
        return self.instructions.get(self._key_for(frame))


def load_labels(path: str | Path, commands: Iterable[str]) -> Labels:
    """Read a ground-truth CSV (see the module docstring); ValueError names the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"labels {path}: {exc}") from exc
    return parse_labels(text, commands, str(path))


def parse_labels(text: str, commands: Iterable[str], where: str = "labels") -> Labels:
    """Parse ground-truth CSV text; every problem is a ValueError naming `where` and the line."""
    try:
        rows = list(csv.reader(text.splitlines()))
    except csv.Error as exc:  # e.g. a NUL byte
        raise ValueError(f"{where}: not a CSV file ({exc})") from None
    return _labels_from_rows(rows, set(commands), where)


def _labels_from_rows(rows: list[list[str]], valid: set[str], where: str) -> Labels:
    """Labels from CSV rows (header first), checked line by line; columns are found by name."""
    reader = iter(rows)
    header = [h.strip() for h in next(reader, [])]
    keys = [k for k in LABEL_KEYS if k in header]
    if len(keys) != 1 or "command" not in header or len(set(header)) != len(header):
        raise ValueError(f"{where}: the header needs one of {'/'.join(LABEL_KEYS)}, a command column and "
                         f"optionally an instruction column; got {','.join(header)!r}")
    key_kind = keys[0]
    key_at, command_at = header.index(key_kind), header.index("command")
    instruction_at = header.index("instruction") if "instruction" in header else None
    allowed = valid | {UNKNOWN}
    out_commands, out_instructions = {}, {}
    for line, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise ValueError(f"{where} line {line}: expected {len(header)} fields, got {len(row)}")
        key = _label_key(key_kind, row[key_at].strip(), f"{where} line {line}")
        command = row[command_at].strip()
        if command not in allowed:
            raise ValueError(f"{where} line {line}: command {command!r} is not one of {sorted(allowed)}")
        if key in out_commands:
            raise ValueError(f"{where} line {line}: {key_kind} {row[key_at].strip()!r} appears twice")
        out_commands[key] = command
        if instruction_at is not None and row[instruction_at].strip():
            out_instructions[key] = row[instruction_at].strip()
    if not out_commands:
        raise ValueError(f"{where}: no label rows")
    times = tuple(sorted(out_commands)) if key_kind == "timestamp" else ()
    return Labels(key_kind, out_commands, out_instructions, where, times)


def _label_key(kind: str, cell: str, where: str) -> Any:
    """The matching key of one row: a normalised file name, a frame index or a finite time."""
    if kind == "image":
        if not cell:
            raise ValueError(f"{where}: empty image name")
        return PurePosixPath(cell.replace("\\", "/")).name  # folder frames are named by file name
    try:
        value = int(cell) if kind == "index" else float(cell)
    except ValueError:
        raise ValueError(f"{where}: {kind} {cell!r} is not a number") from None
    if (kind == "index" and value < 0) or (kind == "timestamp" and not math.isfinite(value)):
        raise ValueError(f"{where}: {kind} {cell!r} out of range")
    return value


# ----------------------------------------------------------------------------- progress
def progress_bar(total: float | None, desc: str, unit: str, enabled: bool = True, **options: Any) -> tqdm:
    """The progress bar every long `rs-guard` command draws: on stderr (stdout stays for the result,
    one JSON object with --json), refreshed twice a second on a terminal and every 5 s into a log
    file or pipe, so a captured log is not flooded. `enabled=False` draws nothing."""
    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr,
                mininterval=0.5 if interactive else 5.0, dynamic_ncols=interactive, **options)


# ----------------------------------------------------------------------------- evaluation
def decide_frame(guard: Guard, frame: Frame, labels: Labels | None = None,
                 deadline_s: float | None = None) -> dict[str, Any]:
    """One row: the Guard's decision for the frame (an abstain row for a frame with no image or
    no instruction), with its ground truth when labels are given."""
    instruction = (labels.instruction_for(frame) if labels else None) or frame.instruction
    if frame.rgb is None:
        decision, latency = guard.abstain(f"input: {frame.error or 'no image'}"), None
    elif instruction is None:
        decision, latency = guard.abstain("input: no instruction for this frame"), None
    else:
        decision = guard.decide(frame.rgb, instruction, deadline_s=deadline_s)
        latency = decision.timing_ms["total"]
    row = _row(frame, instruction, decision, latency)
    if labels is not None:
        row["ground_truth"] = labels.command_for(frame)
    return row


def _row(frame: Frame, instruction: str | None, d: Decision, latency: float | None) -> dict[str, Any]:
    return {"index": frame.index, "name": frame.name, "time_s": frame.time_s, "instruction": instruction,
            "command": d.command, "certified": d.certified, "label": d.label, "radius": d.radius,
            "radius_camera": d.radius_camera, "threshold": d.threshold, "p_lower": d.p_lower,
            "n_used": d.n_used, "reason": d.reason, "latency_ms": latency, "counts": d.counts,
            "timing_ms": d.timing_ms}


def evaluate(guard: Guard, frames: Iterable[Frame], out_dir: str | Path, labels: Labels | None = None,
             progress: bool = True, deadline_s: float | None = None) -> dict[str, Any]:
    """Decide every frame, write decisions.csv/.jsonl, summary.json, plots and report.md into
    `out_dir`, and return the (JSON-serialisable) summary.

    Rows are written as they are decided, so an interrupted run keeps what it did. No
    deadline applies unless `deadline_s` is given (offline, the gate is measured, not raced).
    """
    from . import plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fields = ROW_FIELDS + (("ground_truth",) if labels is not None else ())
    bar = progress_bar(getattr(frames, "total", None), "rs-guard eval", "frame", enabled=progress)
    rows: list[dict[str, Any]] = []
    certified = 0
    with (out / "decisions.csv").open("w", newline="") as csv_file, (out / "decisions.jsonl").open("w") as jsonl:
        writer = csv.DictWriter(csv_file, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for frame in frames:
            row = decide_frame(guard, frame, labels, deadline_s)
            writer.writerow({k: "" if row[k] is None else row[k] for k in fields})
            jsonl.write(json.dumps(row) + "\n")
            rows.append(row)
            certified += row["certified"]
            bar.set_postfix(certified=certified, refresh=False)
            bar.update(1)
    bar.close()
    if not rows:
        raise ValueError(f"source {getattr(frames, 'path', frames)}: no frames to evaluate")
    summary = summarize(rows, guard, labels is not None)
    summary["source"] = {"kind": getattr(frames, "kind", ""), "path": str(getattr(frames, "path", "")),
                         "instruction_topic": getattr(frames, "instruction_topic", None),
                         "labels": labels.path if labels else None}
    summary["files"] = {name: str(out / name) for name in ("decisions.csv", "decisions.jsonl", "summary.json",
                                                           "report.md")}
    summary["files"].update(plots.write_plots(rows, summary, out))
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(report_markdown(summary))
    return summary


def certified_accuracy(rows: Sequence[dict[str, Any]], radii: Sequence[float]) -> list[float]:
    """The randomized-smoothing curve (Cohen et al. 2019, Fig. 1): at each r, the fraction of
    frames labelled with a command whose smoothed label equals it with a certified radius
    R > 0 and R >= r. It uses the certificate's label and radius whether or not the gate's
    per-command threshold let it through (that is the `certified` column). UNKNOWN-labelled
    frames have no correct label, so they are left out (certifying one counts as wrong)."""
    labelled = curve_rows(rows)
    if not labelled:
        return [0.0 for _ in radii]
    good = np.array([r["radius"] for r in labelled if r["label"] == r["ground_truth"] and r["radius"] > 0.0])
    return [float((good >= radius).sum()) / len(labelled) for radius in radii]


def curve_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The frames the accuracy curve is over: those whose ground truth is a command (not UNKNOWN)."""
    return [r for r in rows if r.get("ground_truth") not in (None, UNKNOWN)]


def radius_grid(rows: Sequence[dict[str, Any]], thresholds: Iterable[float]) -> list[float]:
    """CURVE_POINTS radii from 0 to a little beyond the largest radius or threshold seen."""
    top = max([r["radius"] for r in rows] + list(thresholds) + [1e-3]) * 1.05
    return [float(v) for v in np.linspace(0.0, top, CURVE_POINTS)]


def summarize(rows: Sequence[dict[str, Any]], guard: Guard, has_labels: bool) -> dict[str, Any]:
    """Counts, rates, sample use, latency and (with labels) correctness, as plain JSON types."""
    cfg, n = guard.cfg, len(rows)
    certified = sum(r["certified"] for r in rows)
    decided = [r for r in rows if r["latency_ms"] is not None]  # rows where the model actually ran
    latencies = [r["latency_ms"] for r in decided]
    summary: dict[str, Any] = {
        "frames": n, "certified": certified, "abstained": n - certified,
        "certified_pct": 100.0 * certified / n, "abstain_pct": 100.0 * (n - certified) / n,
        "published": dict(Counter(r["command"] for r in rows)),
        "abstain_reasons": dict(Counter(reason_category(r["reason"]) for r in rows if not r["certified"])),
        "median_n_used": float(np.median([r["n_used"] for r in decided])) if decided else 0.0,
        "mean_n_used": float(np.mean([r["n_used"] for r in decided])) if decided else 0.0,
        "latency_ms": {"p50": float(np.percentile(latencies, 50)), "p99": float(np.percentile(latencies, 99)),
                       "mean": float(np.mean(latencies))} if latencies else None,
        "smoothing": {"sigma": cfg.smoothing.sigma, "alpha": cfg.smoothing.alpha, "mode": cfg.smoothing.mode,
                      "n0": cfg.smoothing.n0, "n_max": cfg.smoothing.n_max, "oracle": cfg.oracle.kind,
                      "oracle_error": cfg.oracle.error},
        "model": {"backend": cfg.model.backend, "path": cfg.model.path, "device": str(guard.policy.device)},
        "thresholds": cfg.thresholds(),
        "labelled": None, "labelled_unknown": None, "correct_certified": None, "wrong_certified": None,
        "certified_accuracy": None,
    }
    if has_labels:
        labelled = [r for r in rows if r["ground_truth"] is not None]
        gated = [r for r in labelled if r["certified"]]
        radii = radius_grid(rows, cfg.thresholds().values())
        summary.update(labelled=len(labelled), correct_certified=sum(r["command"] == r["ground_truth"] for r in gated),
                       wrong_certified=sum(r["command"] != r["ground_truth"] for r in gated),
                       labelled_unknown=sum(r["ground_truth"] == UNKNOWN for r in labelled),
                       certified_accuracy={"radius": radii, "accuracy": certified_accuracy(rows, radii),
                                           "frames": len(curve_rows(rows))})
    return summary


def reason_category(reason: str) -> str:
    """The kind of an abstain reason ("input: data is truncated..." -> "input")."""
    return reason.split(":", 1)[0].strip() or "unknown"


# ----------------------------------------------------------------------------- output
def _fmt(value: Any, spec: str = ".1f") -> str:
    return "n/a" if value is None else format(value, spec)


def report_markdown(s: dict[str, Any]) -> str:
    """report.md: what was evaluated, the summary table, the plots and how to read them."""
    sm, lat, src = s["smoothing"], s["latency_ms"] or {}, s["source"]
    lines = [
        "# rs-guard offline evaluation", "",
        f"Source: `{src['path']}` ({src['kind']}"
        + (f", instructions from `{src['instruction_topic']}`" if src.get("instruction_topic") else "") + ")"
        + (f"; ground truth: `{src['labels']}`" if src.get("labels") else "") + ".",
        f"Model: {s['model']['backend']}" + (f" `{s['model']['path']}`" if s["model"]["path"] else "")
        + f" on {s['model']['device']}. "
        f"Smoothing: sigma {sm['sigma']}, alpha {sm['alpha']}, {sm['mode']} mode, n0 {sm['n0']}, "
        f"n_max {sm['n_max']}; oracle {sm['oracle']} (error bound {sm['oracle_error']}).", "",
        "| frames | certified | abstained | wrong certified | median samples | latency p50 (ms) | latency p99 (ms) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {s['frames']} | {s['certified']} ({s['certified_pct']:.1f} %) | {s['abstained']} "
        f"({s['abstain_pct']:.1f} %) | {_fmt(s['wrong_certified'], 'd')} | {s['median_n_used']:.0f} | "
        f"{_fmt(lat.get('p50'))} | {_fmt(lat.get('p99'))} |", "",
        "*Wrong certified* counts frames where the gate published a certified command that differs from "
        "the ground truth, including any command certified on a frame labelled UNKNOWN (n/a without "
        "labels). Latency is per decision, frames that never reached the "
        "model (undecodable, no instruction) excluded.", "",
    ]
    files = s["files"]
    if "certified_accuracy.png" in files:
        lines += ["## Certified accuracy vs radius", "", "![certified accuracy](certified_accuracy.png)", "",
                  f"Fraction of the {s['certified_accuracy']['frames']} frames labelled with a command whose "
                  "smoothed label is correct with a certified l2 radius R > 0 and R >= r (model-input units, "
                  "[0,1] intensity; Cohen et al. 2019); frames labelled UNKNOWN are left out. Dashed lines: the "
                  "per-command thresholds the gate requires before it publishes.", ""]
    lines += ["## Radius over time", "", "![radius timeline](radius_timeline.png)", "",
              "Each frame's certified radius (green: published, red: abstained) and the threshold of its "
              "top label (grey).", "",
              "## Samples per decision", "", "![samples per decision](samples_histogram.png)", "",
              "## Abstain reasons", "", "![abstain reasons](abstain_reasons.png)", "",
              "| reason | frames |", "|---|---:|"]
    lines += [f"| {reason} | {count} |" for reason, count in sorted(s["abstain_reasons"].items())]
    return "\n".join(lines) + "\n"


def format_summary(s: dict[str, Any]) -> str:
    """The human-readable CLI output of `rs-guard eval`."""
    lat = s["latency_ms"] or {}
    lines = [f"{s['frames']} frames: {s['certified']} certified ({s['certified_pct']:.1f} %), "
             f"{s['abstained']} abstained ({s['abstain_pct']:.1f} %)",
             f"  abstain reasons {s['abstain_reasons']}",
             f"  median samples per decision {s['median_n_used']:.0f}, latency p50 {_fmt(lat.get('p50'))} ms, "
             f"p99 {_fmt(lat.get('p99'))} ms"]
    if s["labelled"] is not None:
        lines.append(f"  {s['labelled']} labelled: {s['correct_certified']} certified correct, "
                     f"{s['wrong_certified']} certified WRONG")
    lines.append(f"  report: {s['files']['report.md']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI
def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """The `rs-guard eval` flags (the caller adds --config/model flags and --json)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, metavar="DIR", help="folder of PNG/JPEG frames (sorted by name)")
    source.add_argument("--video", type=Path, metavar="FILE", help="video file (anything OpenCV reads)")
    source.add_argument("--bag", type=Path, metavar="PATH", help="rosbag2 folder (or .mcap/.db3/ROS 1 .bag file)")
    parser.add_argument("--instruction", help="instruction for every frame (in a bag: until the first "
                        "instruction message); optional with an instruction topic or an instruction column")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument("--labels", type=Path, metavar="CSV", help="ground truth CSV: an image, index or "
                        "timestamp column, a command column (or UNKNOWN) and optionally an instruction column "
                        "(examples/frames.csv works with --images examples)")
    parser.add_argument("--image-topic", action="append", default=[], metavar="TOPIC",
                        help="bag camera topic (Image or CompressedImage); repeat for several; "
                             "default: the bag's only image topic")
    parser.add_argument("--instruction-topic", metavar="TOPIC",
                        help="bag std_msgs/String topic; default: a topic named .../instruction")
    parser.add_argument("--deadline", type=float, default=None, metavar="S",
                        help="abstain on decisions slower than S seconds, as the node does (default: none)")
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")


def run_eval(args: argparse.Namespace, guard: Guard) -> dict[str, Any]:
    """`rs-guard eval`: open the source named by the flags, evaluate, return the summary."""
    kind = next(k for k in KINDS if getattr(args, k) is not None)
    frames = iter_frames(getattr(args, kind), kind=kind, instruction=args.instruction,
                         image_topics=args.image_topic, instruction_topic=args.instruction_topic)
    labels = load_labels(args.labels, guard.cfg.commands.names) if args.labels else None
    if args.instruction is None and frames.instruction_topic is None and not (labels and labels.instructions):
        raise ValueError("--instruction is required unless the bag has an instruction topic or --labels has an "
                         "instruction column")
    if args.deadline is not None and not args.deadline > 0:
        raise ValueError(f"--deadline must be positive, got {args.deadline}")
    return evaluate(guard, frames, args.out, labels, progress=not args.no_progress, deadline_s=args.deadline)


__all__ = ["Labels", "load_labels", "progress_bar", "parse_labels", "evaluate",
           "decide_frame", "certified_accuracy", "summarize", "add_eval_arguments", "run_eval", "format_summary"]
