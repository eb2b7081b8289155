"""Which `model.cpu_threads` should the gate default to? Decisions/s of the demo VLA on the CPU
with torch's default thread count (cpu_threads 0 = one thread per core) and with fewer
threads, on an idle CPU and with a competing CPU-bound process pinned to one core.

    .venv/bin/python benchmarks/bench_cpu_threads.py [--threads 0 1 2] [--rounds 2] [--seconds 8] [--json]

Every figure comes from a fresh worker process (the thread count is process-wide), which
loads the demo VLA on the CPU, makes one warm-up decision, then decides on
examples/left_2.png ("go to the red box", the default sequential configuration) for
--seconds (at least --min-decisions decisions). Configurations are interleaved over --rounds
rounds and the median is reported, so a colleague's job on a shared machine affects them
alike. "idle" means no competitor of ours (the load average printed with the table says how
idle the machine really was); "busy" adds a Python busy loop pinned to the last core with
sched_setaffinity: another node holding one core, as on a robot computer. Ratios are against cpu_threads 0 on
the idle CPU, measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FRAME = ROOT / "examples" / "left_2.png"
INSTRUCTION = "go to the red box"
BUSY_LOOP = "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True:\n    pass\n"


def worker(threads: int, seconds: float, min_decisions: int) -> dict:
    """Load the demo VLA with cpu_threads `threads` and time decisions (runs in a child process)."""
    import cv2
    import torch
    from transformers.utils import logging as hf_logging

    from rs_guard_ros import param_files
    from rs_guard_ros.guard import Guard

    hf_logging.disable_progress_bar()
    guard = Guard.from_config(param_files.load_config(overrides={"model.cpu_threads": threads, "model.device": "cpu"}))
    frame = cv2.cvtColor(cv2.imread(str(FRAME)), cv2.COLOR_BGR2RGB)
    guard.decide(frame, INSTRUCTION)  # warm-up
    latencies, samples = [], 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(latencies) < min_decisions:
        d = guard.decide(frame, INSTRUCTION)
        latencies.append(d.timing_ms["total"] / 1e3)
        samples += d.n_used
    wall = time.perf_counter() - start
    return {"threads": threads, "torch_threads": torch.get_num_threads(), "decisions": len(latencies),
            "decisions_per_s": len(latencies) / wall, "samples_per_s": samples / wall,
            "median_latency_s": statistics.median(latencies), "command": d.command}


def measure(threads: int, busy: bool, seconds: float, min_decisions: int) -> dict:
    """One worker run, with the busy loop on the last core when `busy`."""
    competitor = None
    if busy:
        competitor = subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(os.cpu_count() - 1)])
        time.sleep(0.5)
    try:
        out = subprocess.run([sys.executable, __file__, "--worker", str(threads), "--seconds", str(seconds),
                              "--min-decisions", str(min_decisions)], capture_output=True, text=True, check=True,
                             cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[0, 1, 2],
                        help="cpu_threads values (0 = torch default)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring time per worker")
    parser.add_argument("--min-decisions", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.seconds, args.min_decisions)))
        return 0

    cores, load_start = os.cpu_count(), os.getloadavg()[0]
    runs: dict[tuple[str, int], list[dict]] = {}
    print(f"{cores} cores, load average {load_start:.2f} at start; {args.rounds} rounds x "
          f"{len(args.threads) * 2} configurations, {args.seconds:g} s each", file=sys.stderr)
    for r in range(args.rounds):
        for load in ("idle", "busy"):
            for threads in args.threads:
                result = measure(threads, load == "busy", args.seconds, args.min_decisions)
                runs.setdefault((load, threads), []).append(result)
                print(f"round {r + 1} {load:<4} cpu_threads {threads}: {result['decisions_per_s']:.2f} decisions/s "
                      f"(torch threads {result['torch_threads']}, load average {os.getloadavg()[0]:.2f})",
                      file=sys.stderr)
    table = []
    base = statistics.median(x["decisions_per_s"] for x in runs[("idle", args.threads[0])])
    for load in ("idle", "busy"):
        for threads in args.threads:
            rows = runs[(load, threads)]
            rate = statistics.median(x["decisions_per_s"] for x in rows)
            idle = statistics.median(x["decisions_per_s"] for x in runs[("idle", threads)])
            table.append({"load": load, "cpu_threads": threads, "torch_threads": rows[0]["torch_threads"],
                          "decisions_per_s": rate, "ms_per_decision": 1e3 / rate,
                          "samples_per_s": statistics.median(x["samples_per_s"] for x in rows),
                          "ratio_vs_default_idle": rate / base, "ratio_vs_same_threads_idle": rate / idle,
                          "rounds": [x["decisions_per_s"] for x in rows]})
    result = {"cores": cores, "frame": str(FRAME.relative_to(ROOT)), "load_average": [load_start,
                                                                                      os.getloadavg()[0]],
              "table": table}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"demo VLA on the CPU ({cores} cores), decisions on {result['frame']}, median of {args.rounds} rounds; "
          f"busy = a busy loop pinned to core {cores - 1}; load average {load_start:.2f} at start, "
          f"{result['load_average'][1]:.2f} at the end")
    print(f"{'load':<5} {'cpu_threads':>11} {'torch thr':>9} {'dec/s':>7} {'ms/dec':>8} {'samples/s':>9} "
          f"{'vs default idle':>15} {'vs same idle':>12}")
    for row in table:
        print(f"{row['load']:<5} {row['cpu_threads']:>11} {row['torch_threads']:>9} {row['decisions_per_s']:>7.2f} "
              f"{row['ms_per_decision']:>8.0f} {row['samples_per_s']:>9.0f} {row['ratio_vs_default_idle']:>15.2f} "
              f"{row['ratio_vs_same_threads_idle']:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
