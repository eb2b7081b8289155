"""`rs-guard plan`: the planning law of randomized smoothing, before any model runs -- for a
radius, sigma and alpha, the smoothed probability p* needed, the fewest samples n_min, and
per sample budget the exact outlook of Cohen's CERTIFY and of the gate's sequential test,
then one decision of the gate along each selection path. Pure statistics (rs_guard_ros.certify).
"""
from __future__ import annotations

from typing import Any

from scipy.stats import norm

from . import certify, config

PLAN_P_TRUE = (0.999, 0.99, 0.95)
DEFAULTS = config.Config().smoothing  # plan's n0, n_max and mode: config/default.yaml's
PLAN_SIZES = (1_000, 10_000, 100_000)


def plan(sigma: float, radius: float, alpha: float, oracle_error: float = 0.0, *, n0: int = DEFAULTS.n0,
         n_max: int = DEFAULTS.n_max, mode: str = DEFAULTS.mode) -> dict[str, Any]:
    """The planning law: p*, n_min, and per sample budget n the exact outlook of Cohen's
    fixed-n CERTIFY and of the gate's sequential test, for bases of true probability p; then
    the gate's decision at n0 and n_max along each selection path (`certify.selection_paths`:
    the standing command confirmed at PREVIOUS_SHARE alpha, changed, or n0 selection samples).

    Budgets above certify.MAX_SAMPLES (the range of smoothing.n_max) are not tabulated, so
    the answer takes bounded work for every sigma and radius.
    """
    n_min = certify.samples_needed(radius, sigma, alpha, oracle_error)
    sizes = sorted({n for n in (n_min, 2 * n_min, *PLAN_SIZES) if n <= certify.MAX_SAMPLES})
    rows = []
    for n in sizes:
        ratio = certify.approx_radius_ratio(alpha, n)
        row: dict[str, Any] = {"n": n, "max_radius": certify.max_certifiable_radius(n, sigma, alpha, oracle_error),
                               "approx_radius_ratio": ratio}
        for p in PLAN_P_TRUE:
            fixed = certify.outlook(p, n, sigma, alpha, radius, oracle_error)
            seq = certify.sequential_outlook(p, radius, sigma, alpha, n, oracle_error)
            asymptotic = max(sigma * float(norm.ppf(p - oracle_error)), 0.0)  # E[R] as n -> inf
            row[f"p={p}"] = {"certify_probability": fixed.certify_probability, "expected_radius": fixed.expected_radius,
                             "approx_expected_radius": asymptotic * ratio,
                             "sequential_certify_probability": seq.certify_probability,
                             "sequential_expected_samples": seq.expected_samples}
        rows.append(row)
    p_required = certify.p_required(radius, sigma)
    paths = certify.paths_table({p: certify.selection_paths(p, radius, sigma, alpha, n0, n_max, oracle_error, mode)
                                 for p in PLAN_P_TRUE})
    selection = {"n0": n0, "n_max": n_max, "mode": mode, "previous_share": certify.PREVIOUS_SHARE, "paths": paths}
    return {"sigma": sigma, "radius": radius, "alpha": alpha, "oracle_error": oracle_error, "n_min": n_min,
            "p_required": p_required, "p_required_with_oracle_error": p_required + oracle_error,
            "within_budget": n_min <= certify.MAX_SAMPLES,
            "max_samples": certify.MAX_SAMPLES,
            "max_radius_at_max_samples": certify.max_certifiable_radius(certify.MAX_SAMPLES, sigma, alpha, oracle_error),
            "table": rows, "selection": selection}


def format_plan(result: dict[str, Any]) -> str:
    """Human-readable plan: the headline numbers, then per true p one row per sample budget."""
    eps = result["oracle_error"]
    lines = [f"To certify R >= {result['radius']} at sigma={result['sigma']}, alpha={result['alpha']}, "
             f"oracle error {eps}:",
             f"  smoothed probability needed p* = {result['p_required']:.6f}"
             + (f"; with the oracle error, p* + eps_O = {result['p_required_with_oracle_error']:.6f}" if eps else ""),
             f"  fewest samples (all agree)   n_min = {_count(result['n_min'])}"]
    if not result["within_budget"]:
        lines.append(f"  n_min exceeds the largest sample budget ({result['max_samples']}): not certifiable at this "
                     f"sigma; {result['max_samples']} samples certify at most R = "
                     f"{max(result['max_radius_at_max_samples'], 0.0):.4f}")
    lines += ["", "exact outlook for a base of true probability p: fixed = Cohen's CERTIFY with n samples, "
              "seq = the gate's sequential test with at most n", "(approx: Seferis et al. ECAI 2024, "
              "r(a,n) ~ 1 - 1.64 z_a/sqrt(n))"]
    for p in PLAN_P_TRUE:
        lines += ["", f"p = {p}", f"{'n':>9} {'max R':>7} {'fixed P[cert]':>14} {'E[R]':>7} {'E[R]~approx':>12} "
                  f"{'seq P[cert]':>12} {'seq E[n]':>9}"]
        for row in result["table"]:
            c = row[f"p={p}"]
            lines.append(f"{row['n']:>9} {row['max_radius']:>7.3f} {c['certify_probability']:>14.4f} "
                         f"{c['expected_radius']:>7.3f} {c['approx_expected_radius']:>12.3f} "
                         f"{c['sequential_certify_probability']:>12.4f} {c['sequential_expected_samples']:>9.0f}")
    return "\n".join(lines + format_paths(result))


def format_paths(result: dict[str, Any]) -> list[str]:
    """plan's selection paths: per path its level, selection samples, n_min, first look and, per
    true p, the expected samples and P[certify] of one decision (selection samples included)."""
    sel = result["selection"]
    lines = ["", f"one decision of the gate ({sel['mode']}, n0 {sel['n0']}, n_max {sel['n_max']}), p* = "
             f"{result['p_required_with_oracle_error']:.6f}, per selection path (smoothing.selection previous: the "
             f"standing command is tested at {sel['previous_share']:g} alpha; samples: always n0 selection samples):",
             "  previous = the standing command confirmed; changed = the standing command (same threshold, p = 0) "
             "fails and its samples select this one, tested at the rest of alpha; samples = n0 selection samples, "
             "tested at alpha",
             f"{'path':<9} {'alpha':>8} {'n_sel':>5} {'n_min':>9} {'1st look':>8}"
             + "".join(f" {'E[n] ' + format(p, 'g'):>10} {'P[c] ' + format(p, 'g'):>10}" for p in PLAN_P_TRUE)]
    for path, f in sel["paths"].items():
        lines.append(f"{path:<9} {f['test_alpha']:>8.2g} {f['n_selection']:>5} {_count(f['n_min']):>9} "
                     f"{f['samples_first_look']:>8}" + "".join(
                         f" {f[f'p={p}']['expected_samples']:>10.1f} {f[f'p={p}']['certify_probability']:>10.4f}"
                         for p in PLAN_P_TRUE))
    return lines


def _count(n: int) -> str:
    """A sample count as people read it: exact up to a billion, else its order of magnitude."""
    return str(n) if n < 10 ** 9 else f"more than 10^{len(str(n)) - 1}"
