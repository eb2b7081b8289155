"""Offline evaluation of the gate (`rs-guard eval`): decide every frame of a recording and report.

Sources are read by :mod:`rs_guard_ros.recordings` (image folder, video, rosbag2). A
frame that cannot be decoded becomes an abstain row with the reason, as on the robot. With
several cameras (cameras.names) a decision takes one frame per camera, from a folder per
camera or a bag with one topic per camera (:mod:`rs_guard_ros.camera_recordings`, paired by
stamp); the frames in no decision are counted apart (`unpaired`, per camera). Where the
model reads the joint state, a bag's state.topic gives it, or `--state` for every frame.

Ground truth is optional: a CSV read by :mod:`rs_guard_ros.labels` (`load_labels`). Where the
file gives the instructions, a frame with no row and no instruction in the recording is not
decided: its row's reason is "unlabelled: ...", and it is counted apart (`unlabelled`), never
as an abstain.

`evaluate` writes into the output folder: decisions.csv and decisions.jsonl (one row per
frame), summary.json, PNG plots (see :mod:`rs_guard_ros.plots`) and report.md. Several
sources make one evaluation: the rows of every source in the order given (a `source`
column first), one summary, plus a summary per source. Rows are written as they are
decided, in order, so an interrupted run leaves a prefix of them; `resume=True` keeps the
rows of decisions.jsonl and decides only the frames not yet there. The frames are decided in
this process, or by Ray workers (:mod:`rs_guard_ros.scale`) with the same `decide_frame`.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections import Counter
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from . import scale
from .camera_inputs import configured_state
from .certify import label_name
from .labels import UNKNOWN, Labels, load_labels
from .progress import progress_bar
from .recordings import Frame, FrameSource, open_sources

if TYPE_CHECKING:  # type hints only: importing this module (the CLI parser does) must not load torch
    from .config import Config
    from .guard import Decision, Guard

CURVE_POINTS = 101  # radius grid of the certified-accuracy curve
ROW_FIELDS = ("index", "name", "time_s", "instruction", "command", "certified", "label", "radius",
              "radius_camera", "threshold", "p_lower", "n_used", "reason", "latency_ms")
SOURCE_SUMMARY = ("frames", "certified", "abstained", "certified_pct", "abstain_pct", "abstain_reasons",
                  "median_n_used", "latency_ms", "labelled", "correct_certified", "wrong_certified", "unlabelled")
UNLABELLED = "unlabelled"  # the reason of a frame with no label row to give its instruction: not decided


# ----------------------------------------------------------------------------- evaluation
def decide_frame(guard: Guard, frame: Frame, labels: Labels | None = None,
                 deadline_s: float | None = None, state: np.ndarray | None = None) -> dict[str, Any]:
    """One row: the Guard's decision for the frame (an abstain row for a frame with no image or
    no instruction; an unlabelled one for a frame whose instruction only a missing label row
    could give), with its ground truth when labels are given. The joint state is the frame's
    own (read from the recording) or else `state` (given for every frame). The one per-frame
    step of every evaluation, in process and on Ray workers alike."""
    state = frame.state if frame.state is not None else state
    instruction = _instruction(frame, labels)
    if instruction is None and labels is not None and labels.instructions and labels.command_for(frame) is None:
        decision, latency = guard.abstain(f"{UNLABELLED}: no row in {labels.path} and no instruction"), None
    elif frame.rgb is None:
        decision, latency = guard.abstain(f"input: {frame.error or 'no image'}"), None
    elif instruction is None:
        decision, latency = guard.abstain("input: no instruction for this frame"), None
    else:
        decision = guard.decide(frame.rgb, instruction, deadline_s=deadline_s, state=state)
        latency = decision.timing_ms["total"]
    row = _row(frame, instruction, decision, latency, labels)
    if labels is not None and latency is not None:
        row["clean_label"] = clean_label(guard, frame.rgb, instruction, state)
    return row


def clean_label(guard: Guard, rgb: Any, instruction: str, state: np.ndarray | None = None) -> str | None:
    """The base classifier on the clean frame(s), no noise: the model's plain answer (through the
    denoiser, if there is one), for the accuracy the gate's certified accuracy is compared with.
    The gate never computes it (sigma 0 is not a setting); None if the model fails on it."""
    try:
        x, _ = guard.prepare(rgb)
        extra = guard.state_kwargs(state, guard.cfg)
        outputs = guard.policy(guard.layout.unpack(x[None]), instruction.strip(), **extra)
        return label_name(guard.oracle(outputs)[0])
    except Exception:  # counted as not correct, like a model fault in a decision
        return None


def failed_row(cfg: Config, labels: Labels | None, frame: Frame, reason: str) -> dict[str, Any]:
    """The row of a frame no worker could decide (every Ray worker it was sent to died): the
    abstain command, as the node publishes when its model fails, with the reason "worker: ..."."""
    from .guard import abstain_decision

    return _row(frame, _instruction(frame, labels), abstain_decision(cfg, f"worker: {reason}"), None, labels)


def _instruction(frame: Frame, labels: Labels | None) -> str | None:
    """The label file's instruction for the frame, else the one in force in the recording."""
    return (labels.instruction_for(frame) if labels else None) or frame.instruction


def _row(frame: Frame, instruction: str | None, d: Decision, latency: float | None,
         labels: Labels | None) -> dict[str, Any]:
    row = {"index": frame.index, "name": frame.name, "time_s": frame.time_s, "instruction": instruction,
           "command": d.command, "certified": d.certified, "label": d.label, "radius": d.radius,
           "radius_camera": d.radius_camera, "threshold": d.threshold, "p_lower": d.p_lower,
           "n_used": d.n_used, "reason": d.reason, "latency_ms": latency, "counts": d.counts,
           "timing_ms": d.timing_ms}
    if labels is not None:
        row.update(ground_truth=labels.command_for(frame), clean_label=None)
    return row


def evaluate(gate: Guard | scale.LocalWorkers | scale.RayWorkers, frames: FrameSource | Sequence[FrameSource],
             out_dir: str | Path, labels: Labels | None = None, progress: bool = True,
             deadline_s: float | None = None, resume: bool = False,
             state: np.ndarray | None = None) -> dict[str, Any]:
    """Decide every frame of one or several sources, write decisions.csv/.jsonl, summary.json,
    plots and report.md into `out_dir`, and return the (JSON-serialisable) summary. `state`:
    the joint state of every frame that does not bring its own.

    `gate` is a Guard (decides in this process) or Ray workers. Rows are written as they come
    back, in order, so an interrupted run keeps what it did, and `resume` carries on from it.
    No deadline applies unless `deadline_s` is given (offline, the gate is measured, not raced).
    """
    from . import plots

    workers = scale.as_workers(gate)
    sources = [frames] if isinstance(frames, FrameSource) else list(frames)
    several = len(sources) > 1
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fields = (("source",) if several else ()) + ROW_FIELDS + (("ground_truth", "clean_label") if labels else ())
    rows = resumed_rows(out, sources, labels) if resume else []
    done = {_row_key(row) for row in rows}
    todo = (f for source in sources for f in source if _frame_key(f, several) not in done)
    total = None if any(s.total is None for s in sources) else sum(s.total for s in sources)
    with RowWriter(out, fields, list(rows)) as writer, progress_bar(total, "rs-guard eval", "frame",
                                                                     enabled=progress, initial=len(rows)) as bar:
        certified = sum(r["certified"] for r in rows)
        job = partial(decide_frame, labels=labels, deadline_s=deadline_s, state=state)
        try:
            for frame, row in workers.map(job, todo, partial(failed_row, workers.cfg, labels)):
                row = {"source": frame.source, **row} if several else row
                writer.write(row)
                rows.append(row)
                certified += row["certified"]
                bar.set_postfix(certified=certified, refresh=False)
                bar.update(1)
        except KeyboardInterrupt:
            print(f"rs-guard eval: interrupted after {len(rows)} frames; {out / 'decisions.jsonl'} holds their "
                  "rows: run the same command with --resume to decide the rest", file=sys.stderr)
            raise
    if not counted(rows):
        raise ValueError(f"source {', '.join(str(s.path) for s in sources)}: no frames to evaluate"
                         + (f" ({len(rows)} with no row in {labels.path} and no instruction)" if rows else ""))
    summary = summarize(rows, workers.cfg, workers.device, labels is not None)
    summary["source"] = _source_summary(sources, labels)
    if len(workers.cfg.cameras.names) > 1:  # frames that joined no decision, per camera
        summary["unpaired"] = dict(sum((s.unpaired for s in sources), Counter()))
    if several:
        summary["sources"] = per_source(rows, sources, workers.cfg, workers.device, labels is not None)
    if workers.stats is not None:
        summary["ray"] = workers.stats.to_dict()
    summary["files"] = {name: str(out / name) for name in ("decisions.csv", "decisions.jsonl", "summary.json",
                                                           "report.md")}
    summary["files"].update(plots.write_plots(counted(rows), summary, out))
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(report_markdown(summary))
    return summary


class RowWriter:
    """decisions.csv and decisions.jsonl, written row by row, starting with `rows` (those of a
    resumed run). The files are first written under temporary names and take the real ones
    once the earlier rows are in, so a run killed meanwhile leaves the earlier files whole."""

    NAMES = ("decisions.csv", "decisions.jsonl")

    def __init__(self, out: Path, fields: tuple[str, ...], rows: Iterable[dict[str, Any]] = ()) -> None:
        self.out, self.fields, self.rows = out, fields, rows
        self._files: list[IO[str]] = []

    def __enter__(self) -> "RowWriter":
        csv_file, self.jsonl = (open(self.out / f"{name}.tmp", "w", newline="") for name in self.NAMES)
        self._files = [csv_file, self.jsonl]
        self.csv = csv.DictWriter(csv_file, fieldnames=self.fields, extrasaction="ignore")
        self.csv.writeheader()
        for row in self.rows:
            self.write(row)
        for f, name in zip(self._files, self.NAMES):
            f.flush()
            os.replace(self.out / f"{name}.tmp", self.out / name)
        return self

    def write(self, row: dict[str, Any]) -> None:
        self.csv.writerow({k: "" if row.get(k) is None else row[k] for k in self.fields})
        self.jsonl.write(json.dumps(row) + "\n")

    def __exit__(self, *exc: Any) -> None:
        for f in self._files:
            f.close()


def resumed_rows(out: Path, sources: Sequence[FrameSource], labels: Labels | None) -> list[dict[str, Any]]:
    """The rows an earlier run of the same evaluation left in out/decisions.jsonl (none if there is
    no such file). A last line cut short by a killed run is dropped: that frame is decided again.
    ValueError if the rows are not from these sources or disagree with `labels`."""
    path = out / "decisions.jsonl"
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise ValueError(f"--resume: {path} line {number} is not a JSON row") from None
    several = len(sources) > 1
    paths = {str(s.path) for s in sources}
    for row in rows:
        if several != ("source" in row) or (several and row["source"] not in paths):
            raise ValueError(f"--resume: {path} holds rows of other sources than these {len(sources)}")
        if (labels is not None) != ("ground_truth" in row):
            raise ValueError(f"--resume: {path} was written {'without' if labels else 'with'} --labels; "
                             "resume with the same flags")
    return rows


def _row_key(row: dict[str, Any]) -> tuple[str, int]:
    return row.get("source", ""), row["index"]


def _frame_key(frame: Frame, several: bool) -> tuple[str, int]:
    """The key of the frame's row (as `_row_key`): its index, within its source when there are several."""
    return frame.source if several else "", frame.index


def _source_summary(sources: Sequence[FrameSource], labels: Labels | None) -> dict[str, Any]:
    """What was evaluated: the one source, or "N sources" and their kinds."""
    if len(sources) == 1:
        s = sources[0]
        return {"kind": s.kind, "path": str(s.path), "instruction_topic": s.instruction_topic,
                "labels": labels.path if labels else None}
    return {"kind": "+".join(sorted({s.kind for s in sources})), "path": f"{len(sources)} sources",
            "instruction_topic": None, "labels": labels.path if labels else None}


def per_source(rows: Sequence[dict[str, Any]], sources: Sequence[FrameSource], cfg: Config, device: str,
               has_labels: bool) -> list[dict[str, Any]]:
    """One summary per source (SOURCE_SUMMARY's figures), in the order the sources were given."""
    groups: dict[str, list[dict[str, Any]]] = {str(s.path): [] for s in sources}
    for row in rows:
        groups[row["source"]].append(row)
    out = []
    for s in sources:
        group = groups[str(s.path)]
        figures = (summarize(group, cfg, device, has_labels) if counted(group)
                   else {"frames": 0, "unlabelled": len(group) if has_labels else None})
        out.append({"kind": s.kind, "path": str(s.path), "instruction_topic": s.instruction_topic,
                    **{k: figures.get(k) for k in SOURCE_SUMMARY}})
    return out


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


def clean_accuracy(rows: Sequence[dict[str, Any]]) -> float | None:
    """The model's accuracy on the clean frames (no noise, no gate) over the frames the
    certified-accuracy curve is over; None where there are none."""
    frames = curve_rows(rows)
    return sum(r.get("clean_label") == r["ground_truth"] for r in frames) / len(frames) if frames else None


def curve_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The frames the accuracy curve is over: those whose ground truth is a command (not UNKNOWN)."""
    return [r for r in rows if r.get("ground_truth") not in (None, UNKNOWN)]


def radius_grid(rows: Sequence[dict[str, Any]], thresholds: Iterable[float]) -> list[float]:
    """CURVE_POINTS radii from 0 to a little beyond the largest radius or threshold seen."""
    top = max([r["radius"] for r in rows] + list(thresholds) + [1e-3]) * 1.05
    return [float(v) for v in np.linspace(0.0, top, CURVE_POINTS)]


def counted(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows the figures are over: all but those of unlabelled frames (never decided)."""
    return [r for r in rows if not r["reason"].startswith(f"{UNLABELLED}:")]


def summarize(rows: Sequence[dict[str, Any]], cfg: Config, device: str, has_labels: bool) -> dict[str, Any]:
    """Counts, rates, sample use, latency and (with labels) correctness, as plain JSON types;
    `device` is where the model ran. Unlabelled frames are counted apart (`unlabelled`) and in
    no other figure."""
    unlabelled, rows = len(rows) - len(counted(rows)), counted(rows)
    n = len(rows)
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
        "model": {"backend": cfg.model.backend, "path": cfg.model.path, "device": device},
        "thresholds": cfg.thresholds(),
        "labelled": None, "labelled_unknown": None, "correct_certified": None, "wrong_certified": None,
        "certified_accuracy": None, "clean_accuracy": None, "unlabelled": unlabelled if has_labels else None,
    }
    if has_labels:
        labelled = [r for r in rows if r["ground_truth"] is not None]
        gated = [r for r in labelled if r["certified"]]
        radii = radius_grid(rows, cfg.thresholds().values())
        summary.update(labelled=len(labelled), correct_certified=sum(r["command"] == r["ground_truth"] for r in gated),
                       wrong_certified=sum(r["command"] != r["ground_truth"] for r in gated),
                       labelled_unknown=sum(r["ground_truth"] == UNKNOWN for r in labelled),
                       certified_accuracy={"radius": radii, "accuracy": certified_accuracy(rows, radii),
                                           "frames": len(curve_rows(rows))},
                       clean_accuracy=clean_accuracy(rows))
    return summary


def reason_category(reason: str) -> str:
    """The kind of an abstain reason ("input: data is truncated..." -> "input")."""
    return reason.split(":", 1)[0].strip() or "unknown"


# ----------------------------------------------------------------------------- output
def _fmt(value: Any, spec: str = ".1f") -> str:
    return "n/a" if value is None else format(value, spec)


def report_markdown(s: dict[str, Any]) -> str:
    """report.md: what was evaluated, the summary table, the plots and how to read them."""
    sm, src = s["smoothing"], s["source"]
    what = (f"Sources: {src['path']} ({src['kind']}; see *Per source*)" if "sources" in s else
            f"Source: `{src['path']}` ({src['kind']}"
            + (f", instructions from `{src['instruction_topic']}`" if src.get("instruction_topic") else "") + ")")
    lines = [
        "# rs-guard offline evaluation", "",
        what + (f"; ground truth: `{src['labels']}`" if src.get("labels") else "") + ".",
        f"Model: {s['model']['backend']}" + (f" `{s['model']['path']}`" if s["model"]["path"] else "")
        + f" on {s['model']['device']}. "
        f"Smoothing: sigma {sm['sigma']}, alpha {sm['alpha']}, {sm['mode']} mode, n0 {sm['n0']}, "
        f"n_max {sm['n_max']}; oracle {sm['oracle']} (error bound {sm['oracle_error']}).", "",
        "| frames | certified | abstained | wrong certified | median samples | latency p50 (ms) | latency p99 (ms) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        _table_row(s), "",
        "*Wrong certified* counts frames where the gate published a certified command that differs from "
        "the ground truth, including any command certified on a frame labelled UNKNOWN (n/a without "
        "labels). Latency is per decision, frames that never reached the "
        "model (undecodable, no instruction) excluded.", "",
    ]
    if s.get("unlabelled"):
        lines += [f"{s['unlabelled']} more frames have no row in the labels file and no instruction: not decided, "
                  "and left out of every figure.", ""]
    if s.get("unpaired"):
        lines += [f"{_unpaired(s['unpaired'])}: not decided, and left out of every figure.", ""]
    if "sources" in s:
        lines += ["## Per source", "", "| source | kind | frames | certified | abstained | wrong certified | "
                  "median samples | latency p50 (ms) | latency p99 (ms) |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| `{entry['path']}` | {entry['kind']} " + (_table_row(entry) if entry["frames"] else
                                                                 "| 0 |" + " |" * 6) for entry in s["sources"]]
        lines.append("")
    files = s["files"]
    if "certified_accuracy.png" in files:
        lines += ["## Certified accuracy vs radius", "", "![certified accuracy](certified_accuracy.png)", "",
                  f"Fraction of the {s['certified_accuracy']['frames']} frames labelled with a command whose "
                  "smoothed label is correct with a certified l2 radius R > 0 and R >= r (model-input units, "
                  "[0,1] intensity; Cohen et al. 2019); frames labelled UNKNOWN are left out. Dashed lines: the "
                  "per-command thresholds the gate requires before it publishes. The same frames without noise: "
                  f"the model alone (no gate) is right on {_fmt(_pct(s['clean_accuracy']))} % of them "
                  "(`clean_label`).", ""]
    lines += ["## Radius over time", "", "![radius timeline](radius_timeline.png)", "",
              "Each frame's certified radius (green: published, red: abstained) and the threshold of its "
              "top label (grey).", "",
              "## Samples per decision", "", "![samples per decision](samples_histogram.png)", "",
              "## Abstain reasons", "", "![abstain reasons](abstain_reasons.png)", "",
              "| reason | frames |", "|---|---:|"]
    lines += [f"| {reason} | {count} |" for reason, count in sorted(s["abstain_reasons"].items())]
    return "\n".join(lines) + "\n"


def _unpaired(counts: dict[str, int]) -> str:
    """{"front": 3, "rear": 1} -> "4 camera frames paired with no other camera's (front 3, rear 1)"."""
    return (f"{sum(counts.values())} camera frames paired into no decision by stamp (node.max_camera_skew) ("
            + ", ".join(f"{camera} {n}" for camera, n in counts.items()) + ")")


def _pct(fraction: float | None) -> float | None:
    return None if fraction is None else 100.0 * fraction


def _table_row(s: dict[str, Any]) -> str:
    """The report's figures of one evaluation (or source) as a Markdown table row."""
    lat = s["latency_ms"] or {}
    return (f"| {s['frames']} | {s['certified']} ({s['certified_pct']:.1f} %) | {s['abstained']} "
            f"({s['abstain_pct']:.1f} %) | {_fmt(s['wrong_certified'], 'd')} | {s['median_n_used']:.0f} | "
            f"{_fmt(lat.get('p50'))} | {_fmt(lat.get('p99'))} |")


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
                     f"{s['wrong_certified']} certified WRONG"
                     + (f"; {s['unlabelled']} unlabelled, not decided (no row, no instruction)"
                        if s["unlabelled"] else ""))
        if s["clean_accuracy"] is not None:
            acc = s["certified_accuracy"]
            lines.append(f"  accuracy on the {acc['frames']} frames labelled with a command: the model alone on the "
                         f"clean frame {_pct(s['clean_accuracy']):.1f} %, certified (R > 0) "
                         f"{_pct(acc['accuracy'][0]):.1f} %")
    if s.get("unpaired"):
        lines.append(f"  {_unpaired(s['unpaired'])}")
    if "sources" in s:
        lines.append(f"  {len(s['sources'])} sources: per-source figures in summary.json and report.md")
    if "ray" in s:
        ray = s["ray"]
        lines.append(f"  Ray: {ray['workers']} workers on {s['model']['device']}, {ray['retried']} frames sent "
                     f"again after a worker died, {ray['failed']} failed ({ray['replaced']} workers replaced)")
    lines.append(f"  report: {s['files']['report.md']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI
def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """The `rs-guard eval` flags (the caller adds --config/model flags and --json)."""
    source = parser.add_argument_group("sources (at least one; each repeatable, evaluated in the order given)")
    source.add_argument("--images", action=SourceAction, metavar="DIR", help="folder of PNG/JPEG frames "
                        "(sorted by name)")
    source.add_argument("--video", action=SourceAction, metavar="FILE", help="video file (anything OpenCV reads)")
    source.add_argument("--bag", action=SourceAction, metavar="PATH", help="rosbag2 folder (or .mcap/.db3/ROS 1 "
                        ".bag file), or a folder holding bags: each bag below it")
    parser.add_argument("--instruction", help="instruction for every frame (in a bag: until the first "
                        "instruction message); optional with an instruction topic or an instruction column")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument("--labels", type=Path, metavar="CSV", help="ground truth CSV: an image, index or "
                        "timestamp column, a command column (or UNKNOWN) and optionally an instruction column "
                        "(examples/frames.csv works with --images examples)")
    parser.add_argument("--image-topic", action="append", default=[], metavar="[CAMERA=]TOPIC",
                        help="bag camera topic (Image or CompressedImage). One camera: repeat for several topics, "
                             "each frame its own decision; default: the bag's only image topic. Several cameras "
                             "(cameras.names): CAMERA=TOPIC for a camera whose topic differs from "
                             "cameras.<name>.topic; the cameras' frames are paired by stamp within "
                             "node.max_camera_skew, and --images DIR holds one folder per camera (DIR/<name>)")
    parser.add_argument("--state", metavar="NAME=VALUE,...|FILE.json",
                        help="where the model reads the joint state (state.topic): the state of every frame, as "
                             "rs-guard certify takes it; needed for --images/--video, optional for a bag (default: "
                             "its state.topic, the newest message before each decision, within state.max_age)")
    parser.add_argument("--instruction-topic", metavar="TOPIC",
                        help="bag std_msgs/String topic; default: a topic named .../instruction")
    parser.add_argument("--deadline", type=float, default=None, metavar="S",
                        help="abstain on decisions slower than S seconds, as the node does (default: none)")
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    parser.add_argument("--resume", action="store_true", help="keep the rows of OUT/decisions.jsonl (an "
                        "interrupted run of the same command) and decide only the frames not there yet")
    scale.add_ray_arguments(parser, "frames")


class SourceAction(argparse.Action):
    """--images/--video/--bag: append (kind, path) to `sources`, keeping the order of the command line."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, "sources", **kwargs)
        self.kind = dest

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, value: Any,
                 option_string: str | None = None) -> None:
        namespace.sources = [*(getattr(namespace, "sources", None) or []), (self.kind, Path(value))]


def run_eval(args: argparse.Namespace, gate: Guard | scale.LocalWorkers | scale.RayWorkers) -> dict[str, Any]:
    """`rs-guard eval`: open the sources named by the flags, evaluate, return the summary."""
    from .camera_recordings import views_for

    workers = scale.as_workers(gate)
    cfg = workers.cfg
    state = configured_state(args.state, cfg, required=False)
    views = views_for(cfg, args.image_topic, state) if len(cfg.cameras.names) > 1 or cfg.state.topic else None
    sources = open_sources(getattr(args, "sources", None) or [], instruction=args.instruction,
                           image_topics=() if views else args.image_topic, instruction_topic=args.instruction_topic,
                           views=views)
    stateless = [s for s in sources if cfg.state.topic and state is None and s.kind != "bag"]
    if stateless:
        raise ValueError(f"--state is required for {stateless[0].path}: the model reads the joint state (state.topic "
                         f"{cfg.state.topic}) and a {stateless[0].kind} source carries none")
    labels = load_labels(args.labels, workers.cfg.commands.names) if args.labels else None
    untold = [s for s in sources if s.instruction_topic is None]
    if args.instruction is None and untold and not (labels and labels.instructions):
        raise ValueError("--instruction is required unless every bag has an instruction topic or --labels has an "
                         f"instruction column ({untold[0].path} has neither)")
    if args.deadline is not None and not args.deadline > 0:
        raise ValueError(f"--deadline must be positive, got {args.deadline}")
    return evaluate(workers, sources, args.out, labels, progress=not args.no_progress, deadline_s=args.deadline,
                    resume=args.resume, state=state)


__all__ = ["evaluate", "decide_frame", "failed_row",
           "resumed_rows", "per_source", "certified_accuracy", "clean_accuracy", "clean_label", "counted",
           "summarize", "add_eval_arguments", "run_eval", "format_summary"]
