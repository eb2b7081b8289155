"""Measured speed of the Guard on its own policy: raw model throughput vs the whole
certified decision, latency, samples per decision, and memory over many decisions.

Used by `rs-guard bench` and `rs-guard doctor` (rs_guard_ros.doctor). Every figure comes
with the baseline it is compared to, measured in the same run on the same device.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from collections import Counter
from typing import Any, Callable, Optional

import numpy as np
import psutil
import torch

from . import certify
from .doctor import format_selection
from .guard import Frames, Guard

LEAK_DECISIONS = 1000  # one-sample decisions between the two memory readings of `run`


def _with_smoothing(cfg: Any, **changes: Any):
    """`cfg` with some smoothing fields changed (each measurement starts from the user's config)."""
    return dataclasses.replace(cfg, smoothing=dataclasses.replace(cfg.smoothing, **changes))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


Progress = Optional[Callable[[int], None]]  # called with the samples just evaluated (a progress bar's update)


def raw_throughput(guard: Guard, frame: Frames, instruction: str, batches: int,
                   progress: Progress = None, state: np.ndarray | None = None) -> float:
    """Samples/s of the bare policy on pre-made noisy batches (every camera's view, and the
    joint state where the model reads one): no noise, oracle or statistics."""
    x, _ = guard.prepare(frame)
    extra = guard.state_kwargs(state, guard.cfg)
    size, sigma = guard.cfg.smoothing.batch_size, guard.cfg.smoothing.sigma
    batch = guard.layout.unpack(x + sigma * torch.randn((size, *x.shape), device=x.device, dtype=x.dtype))
    guard.policy(batch, instruction, **extra)  # warm-up (prompt cache, kernels)
    _sync(x.device)
    _tick(progress, size)
    elapsed = 0.0
    for _ in range(batches):
        t0 = time.perf_counter()
        guard.policy(batch, instruction, **extra)
        _sync(x.device)
        elapsed += time.perf_counter() - t0
        _tick(progress, size)
    return batches * size / elapsed


def decisions_for(guard: Guard, frame: Frames, instruction: str, count: int,
                  progress: Progress = None, stream: bool = False, state: np.ndarray | None = None) -> list[Any]:
    """`count` decisions on the same input (each carries its own timing_ms). With `stream`, each
    is offered the command the one before certified, as the node offers its standing command
    (smoothing.selection previous tests it first); otherwise every decision stands alone."""
    out: list[Any] = []
    for _ in range(count):
        previous = out[-1].command if stream and out and out[-1].certified else None
        out.append(guard.decide(frame, instruction, previous=previous, state=state))
        _tick(progress, out[-1].n_used)
    return out


def selection_figures(decisions: list[Any]) -> dict[str, Any]:
    """How a run of decisions chose the commands they tested: how many by each selection
    ("previous", "samples"; none for a decision that never tested) and the median selection
    and estimation samples."""
    return {"selection": dict(Counter(d.selection or "none" for d in decisions)),
            "n_selection": statistics.median(d.n_selection for d in decisions),
            "n_estimation": statistics.median(d.n_estimation for d in decisions)}


def cost_sizes(cfg: Any) -> tuple[tuple[int, int], ...]:
    """(n0, n_max) of the fixed-mode decisions `decision_cost` times: n0 a quarter, one and three
    batches, n_max the configured n0. The sizes differ even where the model's output is UNKNOWN
    and a decision stops after its selection samples, and the smallest is as small as a real
    sequential decision, so the line's intercept is not extrapolated far."""
    b, n0 = cfg.smoothing.batch_size, cfg.smoothing.n0
    return tuple((m, n0) for m in (max(1, b // 4), b, 3 * b))


def decision_cost_samples(cfg: Any, repeats: int) -> int:
    """Samples `decision_cost` evaluates (for a progress bar's total; fewer where the output is UNKNOWN)."""
    sizes = [a + b for a, b in cost_sizes(cfg)]
    return sizes[0] + repeats * sum(sizes)


def decision_cost(guard: Guard, frame: Frames, instruction: str, repeats: int = 3,
                  progress: Progress = None, state: np.ndarray | None = None) -> dict[str, Any]:
    """What one certified decision (`Guard.decide`, the whole path: preprocessing, noise, model,
    oracle, statistics) costs at the configured batch size: t(n) = overhead_s + n / samples_per_s.

    Fixed-mode decisions at the three `cost_sizes`, `repeats` of each after one warm-up
    decision, and a least-squares line through the fastest decision of each size (n_used,
    seconds): its slope is the cost per sample, its intercept the per-decision overhead (clipped
    at 0; it includes the per-call cost of the few model calls a small decision makes). The
    fastest, as timeit takes it: a first call at a new batch shape or another process's burst
    only ever adds time, and one such outlier moved the intercept by 0.4 s between two identical
    starts. `whole_path_samples_per_s` is samples over seconds of the largest decisions,
    overhead included. The guard's configuration is restored afterwards.
    """
    original = guard.cfg
    sizes = cost_sizes(original)
    timed = []
    try:
        for i, (n0, n_max) in enumerate(sizes):
            guard.reconfigure(_with_smoothing(original, mode="fixed", n0=n0, n_max=n_max))
            if i == 0:
                decisions_for(guard, frame, instruction, 1, progress, state=state)  # warm-up
            timed.append(decisions_for(guard, frame, instruction, repeats, progress, state=state))
    finally:
        guard.reconfigure(original)
    every = [d for group in timed for d in group]
    if not any(d.n_used for d in every):
        raise ValueError(f"the model never ran on the probe frame: {every[0].reason}")
    whole = sum(d.n_used for d in timed[-1]) / sum(d.timing_ms["total"] / 1e3 for d in timed[-1])
    fastest = [min(group, key=lambda d: d.timing_ms["total"]) for group in timed]
    n, t = np.array([(d.n_used, d.timing_ms["total"] / 1e3) for d in fastest], dtype=float).T
    slope, intercept = np.polyfit(n, t, 1) if len(set(n.tolist())) > 1 else (0.0, 0.0)
    if slope > 0.0:
        rate, overhead = 1.0 / slope, max(float(intercept), 0.0)
    else:  # no usable line (noise, or one size only): no overhead term
        rate, overhead = float(n.sum() / t.sum()), 0.0
    return {"samples_per_s": float(rate), "overhead_s": overhead, "whole_path_samples_per_s": float(whole),
            "decisions": len(every), "sizes": sorted({int(v) for v in n}),
            "reasons": sorted({d.reason for d in every})}


def rss_mb() -> float:
    """Resident memory of this process now (a leak shows as growth between two readings)."""
    return psutil.Process().memory_info().rss / 2**20


def memory(device: torch.device) -> dict[str, float | None]:
    """Process RSS now and, on CUDA, the most GPU memory torch has allocated on `device` so far."""
    cuda = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"rss_mb": rss_mb(), "cuda_max_allocated_mb": cuda}


def run(guard: Guard, frame: Frames, instruction: str, *, state: np.ndarray | None = None, decisions: int = 10,
        progress: bool = False) -> dict[str, Any]:
    """All figures of `rs-guard bench` in one run, on `frame` (one per camera) and `state`; the
    guard's config is restored afterwards.

    With `progress`, a bar on stderr counts the samples evaluated against the run's estimate.
    """
    from .progress import progress_bar

    original = guard.cfg
    s = original.smoothing
    size, full = s.batch_size, s.n0 + s.n_max
    raw_batches, repeats = max(4, decisions), max(3, decisions // 2)
    estimate = ((raw_batches + 1) * size + decision_cost_samples(original, repeats) + 2 * decisions * full
                + 2 * LEAK_DECISIONS)
    bar = progress_bar(estimate, "rs-guard bench", "sample", enabled=progress, unit_scale=True)
    try:
        bar.set_postfix_str("raw policy")
        raw = raw_throughput(guard, frame, instruction, batches=raw_batches, progress=bar.update, state=state)
        bar.set_postfix_str("decision cost")
        cost = decision_cost(guard, frame, instruction, repeats, progress=bar.update, state=state)
        bar.set_postfix_str("fixed mode")
        guard.reconfigure(_with_smoothing(original, mode="fixed"))
        fixed_full = decisions_for(guard, frame, instruction, decisions, bar.update, state=state)
        bar.set_postfix_str("sequential mode")
        guard.reconfigure(_with_smoothing(original, mode="sequential"))
        sequential = decisions_for(guard, frame, instruction, decisions, bar.update, stream=True, state=state)
        bar.update(max(0, decisions * full - sum(d.n_used for d in sequential)))  # its share of the estimate
        bar.set_postfix_str("memory over 1000 decisions")
        guard.reconfigure(_with_smoothing(original, mode="fixed", n0=1, n_max=1, batch_size=1))
        decisions_for(guard, frame, instruction, 100, bar.update, state=state)
        rss_100 = rss_mb()
        decisions_for(guard, frame, instruction, LEAK_DECISIONS - 100, bar.update, state=state)
        rss_1000 = rss_mb()
    finally:
        guard.reconfigure(original)
        bar.close()
    label = statistics.mode(d.label for d in sequential)
    threshold = original.thresholds().get(label, 0.0) if label is not None else 0.0
    guard_rate = cost["whole_path_samples_per_s"]
    return {
        "device": str(guard.policy.device), "model": guard.policy.name, "batch_size": size,
        "raw_samples_per_s": raw, "guard_samples_per_s": guard_rate, "throughput_ratio": guard_rate / raw,
        "path_samples_per_s": cost["samples_per_s"], "decision_overhead_ms": 1e3 * cost["overhead_s"],
        "guard_n": cost["sizes"][-1],
        "latency_p50_ms": _percentile(sequential, 50), "latency_p99_ms": _percentile(sequential, 99),
        "fixed_latency_p50_ms": _percentile(fixed_full, 50), "fixed_latency_p99_ms": _percentile(fixed_full, 99),
        "fixed_n": full, "decisions": decisions, "command": label, "threshold": threshold,
        "certified_fraction_sequential": sum(d.certified for d in sequential) / len(sequential),
        "median_n_used_sequential": statistics.median(d.n_used for d in sequential),
        "selection_config": s.selection, "sequential_selection": selection_figures(sequential),
        "n_min": certify.samples_needed(threshold, s.sigma, s.alpha, original.oracle.error), "n0": s.n0,
        "rss_mb_after_100": rss_100, "rss_mb_after_1000": rss_1000,
        "cuda_max_allocated_mb": memory(guard.policy.device)["cuda_max_allocated_mb"],
        "timing_ms_sequential_median": {k: statistics.median(d.timing_ms[k] for d in sequential)
                                        for k in sequential[0].timing_ms},
    }


def _tick(progress: Progress, samples: int) -> None:
    if progress is not None:
        progress(samples)


def _percentile(decisions: list[Any], q: float) -> float:
    return float(np.percentile([d.timing_ms["total"] for d in decisions], q))


def format_report(r: dict[str, Any]) -> str:
    """Human-readable `rs-guard bench` output."""
    t, sel = r["timing_ms_sequential_median"], r["sequential_selection"]
    return "\n".join([
        f"device {r['device']}, model {r['model']}, batch {r['batch_size']}",
        f"raw policy throughput    {r['raw_samples_per_s']:9.1f} samples/s (no noise, oracle or statistics)",
        f"guard throughput         {r['guard_samples_per_s']:9.1f} samples/s  ratio {r['throughput_ratio']:.3f} "
        f"(whole decision path, fixed mode, n = {r['guard_n']})",
        f"decision cost            t(n) = {r['decision_overhead_ms']:.1f} ms + n / {r['path_samples_per_s']:.1f} "
        "samples/s (least squares over fixed-mode decisions of three sizes)",
        f"sequential decision      p50 {r['latency_p50_ms']:.0f} ms  p99 {r['latency_p99_ms']:.0f} ms  "
        f"(command {r['command']}, R* {r['threshold']}, certified {100 * r['certified_fraction_sequential']:.0f}%)",
        f"  median samples         {r['median_n_used_sequential']:.0f} (selection {sel['n_selection']:.0f} + "
        f"estimation {sel['n_estimation']:.0f}) vs n_min {r['n_min']}; smoothing.selection {r['selection_config']}, "
        f"{format_selection(sel['selection'])} (each decision offered the command the one before certified)",
        "  median breakdown (ms)  " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()),
        f"fixed n={r['fixed_n']} decision  p50 {r['fixed_latency_p50_ms']:.0f} ms  "
        f"p99 {r['fixed_latency_p99_ms']:.0f} ms",
        f"RSS after 100 decisions {r['rss_mb_after_100']:.0f} MB, after 1000 {r['rss_mb_after_1000']:.0f} MB"
        + (f"; CUDA max allocated {r['cuda_max_allocated_mb']:.0f} MB" if r["cuda_max_allocated_mb"] is not None
           else ""),
    ])
