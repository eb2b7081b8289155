"""What does Ray cost and buy `rs-guard eval`? Frames/s of the same frames decided in this process,
by 1 Ray worker and by 2 Ray workers (rs_guard_ros.scale), and the Ray overhead per frame.

    .venv/bin/python benchmarks/bench_scale.py [--frames 40] [--size 640x480] [--workers 1 2] [--rounds 3]
                                               [--ray ADDRESS] [--json]

The frames are the shipped example frames (with their instructions), scaled to a camera size
(what each frame costs to send to a worker) and repeated to --frames. Every configuration
decides them all with `evaluate.decide_frame`, the demo VLA on the CPU (model.cpu_threads 1,
the default sequential test), through the same `map` the commands use; all run in this one
invocation, on one Ray instance (started here on this machine's CPUs unless --ray names one).
Throughput is steady state: from the result after the first --skip (the workers' pipelines
filled, models loaded) to the last. The Ray overhead per frame is measured twice: as the
extra time per frame of 1 Ray worker over this process on the model, and with a job that does
nothing (`nothing`, on the frames repeated --nothing-repeats times, so the rate is timed over
seconds), where all that is left is sending a frame, a call and a row back; the best no-op
rate on Ray is the most frames/s one driver dispatches here. The configurations take
turns over --rounds rounds and each figure is the median (min-max beside it), so a
colleague's job on a shared machine affects them alike. Ratios are against the in-process
run of the same invocation; the load average printed with the table says how busy the
machine was.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2

from rs_guard_ros import evaluate, param_files, scale
from rs_guard_ros.recordings import Frame

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def example_frames(count: int, size: tuple[int, int]) -> list[Frame]:
    """`count` example frames (RGB, resized to `size` = (w, h)) with their instructions, repeated in turn."""
    with (EXAMPLES / "frames.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    images = [cv2.resize(cv2.cvtColor(cv2.imread(str(EXAMPLES / r["image"])), cv2.COLOR_BGR2RGB), size)
              for r in rows]
    return [Frame(i, None, images[i % len(rows)], rows[i % len(rows)]["instruction"], rows[i % len(rows)]["image"])
            for i in range(count)]


def nothing(guard: Any, frame: Frame) -> dict[str, Any]:
    """A job that decides nothing: what is left of a frame's trip is Ray's and the driver's share."""
    return {"index": frame.index}


def failed(frame: Frame, reason: str) -> dict[str, Any]:
    raise RuntimeError(f"frame {frame.index}: {reason}")


def timed(results: Iterator[tuple[Frame, Any]], skip: int) -> dict[str, float]:
    """Consume `results`; steady-state frames/s from the result after the first `skip` to the last."""
    start = time.perf_counter()
    stamps = [time.perf_counter() for _ in results]
    steady = len(stamps) - skip
    return {"frames_per_s": steady / (stamps[-1] - stamps[skip - 1]), "first_result_s": stamps[0] - start}


def configurations(cfg: Any, here: scale.LocalWorkers, counts: list[int], items: list[Frame],
                   repeats: int) -> Iterator[tuple[str, Any, Callable, list[Frame]]]:
    """(name, workers, job, frames): the model in process and on each number of Ray workers, then
    the no-op job on the frames repeated."""
    for prefix, job, frames in (("", evaluate.decide_frame, items), ("nothing, ", nothing, items * repeats)):
        yield f"{prefix}in process", here, job, frames
        for n in counts:
            yield f"{prefix}Ray, {n} worker{'s' * (n > 1)}", scale.RayWorkers(cfg, n), job, frames


def measure(rounds: int, cfg: Any, here: scale.LocalWorkers, args: argparse.Namespace,
            items: list[Frame]) -> list[dict[str, Any]]:
    """Every configuration once per round, in turn; the median frames/s (and min, max) of each."""
    runs: dict[str, list[dict[str, float]]] = {}
    for _ in range(rounds):
        for name, workers, job, frames in configurations(cfg, here, args.workers, items, args.nothing_repeats):
            runs.setdefault(name, []).append(timed(workers.map(job, frames, failed), args.skip))
            print(f"  {name:<26} {runs[name][-1]['frames_per_s']:10.2f} frames/s", file=sys.stderr)
    return [{"config": name, "frames_per_s": statistics.median(r["frames_per_s"] for r in rs),
             "min": min(r["frames_per_s"] for r in rs), "max": max(r["frames_per_s"] for r in rs),
             "first_result_s": statistics.median(r["first_result_s"] for r in rs)} for name, rs in runs.items()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--size", default="640x480", help="camera frame size WxH")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--skip", type=int, default=4, help="results left out of the steady-state rate")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nothing-repeats", type=int, default=25, help="the frames, repeated, for the no-op job")
    parser.add_argument("--ray", default=scale.LOCAL, help="Ray address (default: start one on this machine)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    cfg = param_files.load_config(overrides={"model.device": "cpu", "model.cpu_threads": 1})
    items = example_frames(args.frames, size)

    from rs_guard_ros.guard import Guard
    from rs_guard_ros.policies import quiet_model_loading

    quiet_model_loading()
    here = scale.LocalWorkers(Guard.from_config(cfg))
    started = time.perf_counter()
    with scale.connected(args.ray):
        ray_start = time.perf_counter() - started
        results = measure(args.rounds, cfg, here, args, items)
    report = summarize(results, args, ray_start)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def summarize(results: list[dict[str, Any]], args: argparse.Namespace, ray_start: float) -> dict[str, Any]:
    """Ratios against the in-process run, the overhead per frame both ways, the driver's ceiling."""
    by = {r["config"]: r for r in results}
    for r in results:
        r["ms_per_frame"] = 1e3 / r["frames_per_s"]
    decided = [r for r in results if not r["config"].startswith("nothing")]
    for r in decided:
        r["ratio"] = r["frames_per_s"] / by["in process"]["frames_per_s"]
    one, nothing_one = by.get("Ray, 1 worker"), by.get("nothing, Ray, 1 worker")
    return {"frames": args.frames, "size": args.size, "rounds": args.rounds, "ray": args.ray, "cpus": os.cpu_count(),
            "load_avg": os.getloadavg(), "ray_start_s": ray_start, "results": decided,
            "nothing": [r for r in results if r["config"].startswith("nothing")],
            "overhead_ms_per_frame_model": one and one["ms_per_frame"] - by["in process"]["ms_per_frame"],
            "overhead_ms_per_frame_nothing": nothing_one and nothing_one["ms_per_frame"]
            - by["nothing, in process"]["ms_per_frame"],
            "driver_frames_per_s": max(r["frames_per_s"] for r in results if r["config"].startswith("nothing, Ray"))}


def format_report(r: dict[str, Any]) -> str:
    lines = [f"{r['frames']} frames of {r['size']} (examples/, repeated); demo VLA on the CPU, cpu_threads 1, "
             f"sequential test; {r['cpus']} CPUs, load average {r['load_avg'][0]:.1f} / {r['load_avg'][1]:.1f}; "
             f"Ray ({r['ray']}) started in {r['ray_start_s']:.1f} s; median of {r['rounds']} rounds", "",
             f"{'configuration':<16} {'frames/s':>9} {'(min-max)':>13} {'ratio':>6} {'ms/frame':>9} "
             f"{'first result (s)':>17}"]
    for row in r["results"]:
        lines.append(f"{row['config']:<16} {row['frames_per_s']:>9.2f} {row['min']:>6.2f}-{row['max']:<6.2f} "
                     f"{row['ratio']:>6.2f} {row['ms_per_frame']:>9.1f} {row['first_result_s']:>17.1f}")
    nothing = ", ".join(f"{row['config'][9:]} {row['ms_per_frame']:.3f} ms" for row in r["nothing"])
    lines += ["", "ratio: against in process, same frames, same run; first result: a Ray worker loads the model first",
              f"Ray overhead per frame: {r['overhead_ms_per_frame_model']:.1f} ms on the model (1 worker vs in "
              f"process); {r['overhead_ms_per_frame_nothing']:.2f} ms with a job that decides nothing "
              f"(per frame: {nothing})",
              f"one driver dispatched at most {r['driver_frames_per_s']:.0f} frames/s of this size here"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
