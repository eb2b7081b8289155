"""Measured speed of the Guard on its own policy: raw model throughput vs the whole
certified decision, latency, samples per decision, and memory over many decisions.

Used by `rs-guard bench` and benchmarks/bench_guard.py. Every figure comes with the
baseline it is compared to, measured in the same run on the same device.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

import numpy as np
import psutil
import torch

from . import certify
from .guard import Guard


def _with_smoothing(cfg: Any, **changes: Any):
    """`cfg` with some smoothing fields changed (each measurement starts from the user's config)."""
    return dataclasses.replace(cfg, smoothing=dataclasses.replace(cfg.smoothing, **changes))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def raw_throughput(guard: Guard, frame: np.ndarray, instruction: str, batches: int) -> float:
    """Samples/s of the bare policy on pre-made noisy batches: no noise, oracle or statistics."""
    x, _ = guard.prepare(frame)
    size, sigma = guard.cfg.smoothing.batch_size, guard.cfg.smoothing.sigma
    batch = x + sigma * torch.randn((size, *x.shape), device=x.device, dtype=x.dtype)
    guard.policy(batch, instruction)  # warm-up (prompt cache, kernels)
    _sync(x.device)
    t0 = time.perf_counter()
    for _ in range(batches):
        guard.policy(batch, instruction)
    _sync(x.device)
    return batches * size / (time.perf_counter() - t0)


def decisions_for(guard: Guard, frame: np.ndarray, instruction: str, count: int) -> list[Any]:
    """`count` decisions on the same input (each carries its own timing_ms)."""
    return [guard.decide(frame, instruction) for _ in range(count)]


def rss_mb() -> float:
    """Resident memory of this process now (a leak shows as growth between two readings)."""
    return psutil.Process().memory_info().rss / 2**20


def run(guard: Guard, frame: np.ndarray, instruction: str, *, decisions: int = 10) -> dict[str, Any]:
    """All figures of `rs-guard bench` in one run; the guard's config is restored afterwards."""
    original = guard.cfg
    size = original.smoothing.batch_size
    try:
        raw = raw_throughput(guard, frame, instruction, batches=max(4, decisions))
        guard.reconfigure(_with_smoothing(original, mode="fixed", n0=size, n_max=4 * size))
        fixed = decisions_for(guard, frame, instruction, max(3, decisions // 2))
        guard_rate = sum(d.n_used for d in fixed) / (sum(d.timing_ms["total"] for d in fixed) / 1e3)
        guard.reconfigure(_with_smoothing(original, mode="fixed"))
        fixed_full = decisions_for(guard, frame, instruction, decisions)
        guard.reconfigure(_with_smoothing(original, mode="sequential"))
        sequential = decisions_for(guard, frame, instruction, decisions)
        guard.reconfigure(_with_smoothing(original, mode="fixed", n0=1, n_max=1, batch_size=1))
        decisions_for(guard, frame, instruction, 100)
        rss_100 = rss_mb()
        decisions_for(guard, frame, instruction, 900)
        rss_1000 = rss_mb()
    finally:
        guard.reconfigure(original)
    label = statistics.mode(d.label for d in sequential)
    threshold = original.thresholds().get(label, 0.0) if label is not None else 0.0
    s = original.smoothing
    return {
        "device": str(guard.policy.device), "model": guard.policy.name, "batch_size": size,
        "raw_samples_per_s": raw, "guard_samples_per_s": guard_rate, "throughput_ratio": guard_rate / raw,
        "latency_p50_ms": _percentile(sequential, 50), "latency_p99_ms": _percentile(sequential, 99),
        "fixed_latency_p50_ms": _percentile(fixed_full, 50), "fixed_latency_p99_ms": _percentile(fixed_full, 99),
        "fixed_n": s.n0 + s.n_max, "decisions": decisions, "command": label, "threshold": threshold,
        "certified_fraction_sequential": sum(d.certified for d in sequential) / len(sequential),
        "median_n_used_sequential": statistics.median(d.n_used for d in sequential),
        "n_min": certify.samples_needed(threshold, s.sigma, s.alpha, original.oracle.error), "n0": s.n0,
        "rss_mb_after_100": rss_100, "rss_mb_after_1000": rss_1000,
        "timing_ms_sequential_median": {k: statistics.median(d.timing_ms[k] for d in sequential)
                                        for k in sequential[0].timing_ms},
    }


def _percentile(decisions: list[Any], q: float) -> float:
    return float(np.percentile([d.timing_ms["total"] for d in decisions], q))


def format_report(r: dict[str, Any]) -> str:
    """Human-readable `rs-guard bench` output."""
    t = r["timing_ms_sequential_median"]
    return "\n".join([
        f"device {r['device']}, model {r['model']}, batch {r['batch_size']}",
        f"raw policy throughput    {r['raw_samples_per_s']:9.1f} samples/s (no noise, oracle or statistics)",
        f"guard throughput         {r['guard_samples_per_s']:9.1f} samples/s  ratio {r['throughput_ratio']:.3f}",
        f"sequential decision      p50 {r['latency_p50_ms']:.0f} ms  p99 {r['latency_p99_ms']:.0f} ms  "
        f"(command {r['command']}, R* {r['threshold']}, certified {100 * r['certified_fraction_sequential']:.0f}%)",
        f"  median samples         {r['median_n_used_sequential']:.0f} incl. n0={r['n0']} vs n_min {r['n_min']}",
        "  median breakdown (ms)  " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()),
        f"fixed n={r['fixed_n']} decision  p50 {r['fixed_latency_p50_ms']:.0f} ms  "
        f"p99 {r['fixed_latency_p99_ms']:.0f} ms",
        f"RSS after 100 decisions {r['rss_mb_after_100']:.0f} MB, after 1000 {r['rss_mb_after_1000']:.0f} MB",
    ])
