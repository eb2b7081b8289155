"""The CUDA path of the gate, against the CPU in the same run: raw policy throughput, decision
latency and memory, for the shipped demo VLA (and the denoiser in front of the clean-trained
one), in float32 and bfloat16, at several batch sizes.

Per configuration it prints the raw policy's samples/s (pre-made noisy batches, no
statistics), the p50/p90 latency of whole certified decisions (`Guard.decide` on a forward
frame, sequential mode, as the node runs them: with the standing command offered
(selection "previous") and without ("samples")), the samples per decision, the peak CUDA
memory, and the ratio of each figure to the CPU baseline measured in the same run.

    PYTHONPATH=. python3 benchmarks/bench_cuda.py [--batches 64 256 1024] [--decisions 30] [--json]

On a machine without CUDA it measures the CPU alone (a dry run of the script).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from rs_guard_ros.guard import Guard  # noqa: E402
from rs_guard_ros.param_files import load_config  # noqa: E402
from rs_guard_ros.policies import quiet_model_loading  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def forward_example() -> tuple[np.ndarray, str]:
    """The first shipped example frame (examples/frames.csv) whose command is `forward`, and its instruction."""
    with (ROOT / "examples" / "frames.csv").open() as f:
        row = next(r for r in csv.DictReader(f) if r["command"] == "forward")
    return cv2.cvtColor(cv2.imread(str(ROOT / "examples" / row["image"])), cv2.COLOR_BGR2RGB), row["instruction"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def raw_samples_per_s(guard: Guard, frame: np.ndarray, instruction: str, batch: int, repeats: int = 5) -> float:
    """The bare policy on pre-made noisy batches on the model's device (warm-up first)."""
    x, _ = guard.prepare(frame)
    noisy = (x.unsqueeze(0) + 0.25 * torch.randn((batch, *x.shape), device=x.device)).contiguous()
    guard.policy(guard.layout.unpack(noisy), instruction)
    sync(x.device)
    start = time.perf_counter()
    for _ in range(repeats):
        guard.policy(guard.layout.unpack(noisy), instruction)
    sync(x.device)
    return repeats * batch / (time.perf_counter() - start)


def decisions(guard: Guard, frame: np.ndarray, instruction: str, count: int, previous: str | None) -> dict:
    """Latency (s) and samples of `count` decisions after two warm-ups."""
    for _ in range(2):
        guard.decide(frame, instruction, previous=previous)
    sync(guard.policy.device)
    latencies, samples, commands = [], [], set()
    for _ in range(count):
        start = time.perf_counter()
        d = guard.decide(frame, instruction, previous=previous)
        sync(guard.policy.device)
        latencies.append(time.perf_counter() - start)
        samples.append(d.n_used)
        commands.add(d.command if d.certified else f"abstain:{d.reason}")
    latencies.sort()
    return {"p50_s": statistics.median(latencies), "p90_s": latencies[int(0.9 * (len(latencies) - 1))],
            "samples": statistics.median(samples), "commands": sorted(commands)}


def measure(device: str, dtype: str, batch: int, count: int, denoised: bool) -> dict:
    files = [ROOT / "config" / ("demo_denoised.yaml" if denoised else "sim_diffdrive.yaml")]
    cfg = load_config(*files, overrides={"model.device": device, "model.dtype": dtype,
                                         "smoothing.batch_size": batch, "smoothing.mode": "sequential",
                                         "smoothing.n_max": 2000, "model.cpu_threads": 0 if device == "cuda" else 1,
                                         **({"model.denoiser.dtype": dtype} if denoised else {})})
    guard = Guard.from_config(cfg)
    frame, instruction = forward_example()
    if guard.policy.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(guard.policy.device)
    row = {"device": str(guard.policy.device), "dtype": dtype, "batch": batch, "denoiser": denoised,
           "raw_samples_per_s": raw_samples_per_s(guard, frame, instruction, batch),
           "previous": decisions(guard, frame, instruction, count, previous="forward"),
           "samples": decisions(guard, frame, instruction, count, previous=None)}
    if guard.policy.device.type == "cuda":
        row["cuda_peak_mb"] = torch.cuda.max_memory_allocated(guard.policy.device) / 2**20
        row["gpu"] = torch.cuda.get_device_name(guard.policy.device)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--decisions", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    quiet_model_loading()
    base = measure("cpu", "float32", 256, max(5, args.decisions // 3), denoised=False)
    rows = [base]
    if torch.cuda.is_available():
        for dtype in ("float32", "bfloat16"):
            rows += [measure("cuda", dtype, batch, args.decisions, denoised=False) for batch in args.batches]
        rows.append(measure("cuda", "bfloat16", max(args.batches), args.decisions, denoised=True))
    for row in rows:
        row["ratio_raw_vs_cpu"] = row["raw_samples_per_s"] / base["raw_samples_per_s"]
        row["ratio_latency_vs_cpu"] = base["previous"]["p50_s"] / row["previous"]["p50_s"]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'device':<8} {'dtype':<9} {'batch':>5} {'denoiser':>8} {'raw smp/s':>10} {'x cpu':>6} "
          f"{'prev p50 ms':>11} {'p90':>6} {'n':>4} {'samp p50 ms':>11} {'n':>4} {'x cpu':>6} {'peak MB':>8}")
    for r in rows:
        print(f"{r['device']:<8} {r['dtype']:<9} {r['batch']:>5} {str(r['denoiser']):>8} "
              f"{r['raw_samples_per_s']:>10.0f} {r['ratio_raw_vs_cpu']:>6.1f} {1e3 * r['previous']['p50_s']:>11.1f} "
              f"{1e3 * r['previous']['p90_s']:>6.1f} {r['previous']['samples']:>4.0f} "
              f"{1e3 * r['samples']['p50_s']:>11.1f} {r['samples']['samples']:>4.0f} {r['ratio_latency_vs_cpu']:>6.1f} "
              f"{r.get('cuda_peak_mb', float('nan')):>8.0f}")
    print("decisions: " + "; ".join(f"{r['device']}/{r['dtype']}/{r['batch']}: {r['previous']['commands']}"
                                    for r in rows))
    if len(rows) > 1:
        print(f"GPU: {rows[-1].get('gpu')}")


if __name__ == "__main__":
    main()
