"""The statistics of the gate, measured on a linear base whose smoothed probability is exactly p:

  - power: certification probability and median samples, fixed mode vs sequential mode at
    the same n_max (Monte Carlo through smooth_certify, the exact figure beside);
  - samples per decision: sequential mode vs n_min vs Cohen's fixed n = 100 000;
  - the sampling loop's own cost per sample over a raw call of a trivial base.

    .venv/bin/python benchmarks/bench_certify.py [--runs 21] [--power-runs 1000] [--json]
"""
import argparse
import json
import statistics
import time

import numpy as np
import torch
from scipy.stats import norm

from rs_guard_ros import certify
from rs_guard_ros.smoothing import smooth_certify

SIGMA, ALPHA, N0, COHEN_N = 0.25, 0.001, 32, 100_000
POWER_P = (0.86, 0.87, 0.88, 0.9, 0.95, 0.99, 1.0)
POWER_THRESHOLD, POWER_N_MAX = 0.25, 2000


def bernoulli_base(p: float):
    """A linear classifier whose smoothed probability of "a" is exactly p (margin sigma*Phi^-1(p))."""
    margin = 50.0 if p >= 1.0 else SIGMA * float(norm.ppf(p))
    return (lambda batch: ["a" if v > -margin else "b" for v in batch[:, 0]]), np.zeros(4)


def sample_table(runs: int) -> list[dict]:
    rows = []
    for threshold in (0.25, 0.5):
        n_min = certify.samples_needed(threshold, SIGMA, ALPHA)
        for p in (1.0, 0.99, 0.95, 0.9):
            base, x = bernoulli_base(p)
            certs = [smooth_certify(base, x, sigma=SIGMA, alpha=ALPHA, n0=N0, n_max=COHEN_N, mode="sequential",
                                    radius_threshold=threshold, batch_size=256) for _ in range(runs)]
            used = statistics.median(c.n_used - N0 for c in certs)
            rows.append({"threshold": threshold, "p": p, "n_min": n_min, "sequential_median_n": used,
                         "certified_fraction": sum(c.certified for c in certs) / runs,
                         "ratio_to_n_min": used / n_min, "speedup_vs_cohen_100k": COHEN_N / used})
    return rows


def power_table(runs: int) -> list[dict]:
    """Per true p: P[certify] and median samples of fixed and sequential mode, same base, same n_max."""
    rows = []
    for p in POWER_P:
        base, x = bernoulli_base(p)
        row = {"p": p}
        for mode in ("fixed", "sequential"):
            certs = [smooth_certify(base, x, sigma=SIGMA, alpha=ALPHA, n0=N0, n_max=POWER_N_MAX, mode=mode,
                                    radius_threshold=POWER_THRESHOLD, batch_size=512) for _ in range(runs)]
            row[mode] = {"certified": sum(c.certified for c in certs) / runs,
                         "median_samples": statistics.median(c.n_used for c in certs)}
        row["exact_fixed"] = certify.outlook(p, POWER_N_MAX, SIGMA, ALPHA, POWER_THRESHOLD).certify_probability
        row["exact_sequential"] = certify.sequential_outlook(p, POWER_THRESHOLD, SIGMA, ALPHA,
                                                             POWER_N_MAX).certify_probability
        rows.append(row)
    return rows


def loop_overhead(n: int = 65_536, batch: int = 256) -> dict:
    """smooth_certify (fixed mode) vs the same number of raw base calls, on a 3x64x64 tensor."""
    x = torch.rand(3, 64, 64)
    base = lambda b: ["a"] * len(b)  # noqa: E731 -- the trivial base whose cost we subtract
    frames = torch.rand(batch, 3, 64, 64)
    t0 = time.perf_counter()
    for _ in range(n // batch):
        base(frames)
    raw = time.perf_counter() - t0
    t0 = time.perf_counter()
    smooth_certify(base, x, sigma=SIGMA, alpha=ALPHA, n0=batch, n_max=n - batch, batch_size=batch)
    smooth = time.perf_counter() - t0
    return {"samples": n, "raw_us_per_sample": raw / n * 1e6, "smooth_us_per_sample": smooth / n * 1e6,
            "overhead_us_per_sample": (smooth - raw) / n * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=21, help="decisions per samples-table cell")
    parser.add_argument("--power-runs", type=int, default=1000, help="decisions per power-table cell")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    result = {"power": power_table(args.power_runs), "samples": sample_table(args.runs), "loop": loop_overhead()}
    if args.json:
        print(json.dumps(result))
        return
    n_min = certify.samples_needed(POWER_THRESHOLD, SIGMA, ALPHA)
    print(f"power: sigma={SIGMA} alpha={ALPHA} threshold={POWER_THRESHOLD} (p* = "
          f"{certify.p_required(POWER_THRESHOLD, SIGMA):.4f}, n_min = {n_min}) n0={N0} n_max={POWER_N_MAX}; "
          f"{args.power_runs} decisions per cell; samples include n0")
    print(f"{'p':>5} {'fixed P[cert]':>14} {'seq P[cert]':>12} {'seq - fixed':>12} {'exact fixed/seq':>16} "
          f"{'fixed med n':>12} {'seq med n':>10} {'seq/fixed n':>12}")
    for r in result["power"]:
        f, q = r["fixed"], r["sequential"]
        print(f"{r['p']:>5} {f['certified']:>14.3f} {q['certified']:>12.3f} {q['certified'] - f['certified']:>+12.3f} "
              f"{r['exact_fixed']:>7.3f}/{r['exact_sequential']:<8.3f} {f['median_samples']:>12.0f} "
              f"{q['median_samples']:>10.0f} {q['median_samples'] / f['median_samples']:>12.2f}")
    print()
    print(f"sigma={SIGMA} alpha={ALPHA} n0={N0}; Cohen's fixed n = {COHEN_N}; median of {args.runs} runs")
    print(f"{'R*':>5} {'p':>5} {'n_min':>6} {'seq n':>8} {'cert%':>6} {'seq/n_min':>9} {'100k/seq':>9}")
    for r in result["samples"]:
        print(f"{r['threshold']:>5} {r['p']:>5} {r['n_min']:>6} {r['sequential_median_n']:>8.0f} "
              f"{100 * r['certified_fraction']:>5.0f}% {r['ratio_to_n_min']:>9.2f} {r['speedup_vs_cohen_100k']:>9.1f}")
    loop = result["loop"]
    print(f"loop cost on a 3x64x64 tensor, batch 256: raw base {loop['raw_us_per_sample']:.2f} us/sample, "
          f"smooth_certify {loop['smooth_us_per_sample']:.2f} us/sample "
          f"(overhead {loop['overhead_us_per_sample']:.2f} us/sample: noise + counting)")


if __name__ == "__main__":
    main()
