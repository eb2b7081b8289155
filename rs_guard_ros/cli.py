"""The `rs-guard` command: plan, certify, calibrate-oracle, bench, demo.

Every subcommand has --help and --json (one JSON object on stdout).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from scipy.stats import norm

from . import certify

PLAN_P_TRUE = (0.999, 0.99, 0.95)


def plan(sigma: float, radius: float, alpha: float, oracle_error: float = 0.0) -> dict[str, Any]:
    """The planning law (DESIGN §1): n_min, p*, and per n the exact and approximate outlook."""
    n_min = certify.samples_needed(radius, sigma, alpha, oracle_error)
    sizes = sorted({n_min, 2 * n_min, 1_000, 10_000, 100_000})
    rows = []
    for n in sizes:
        row: dict[str, Any] = {"n": n, "max_radius": certify.max_certifiable_radius(n, sigma, alpha, oracle_error),
                               "approx_radius_ratio": certify.approx_radius_ratio(alpha, n)}
        for p in PLAN_P_TRUE:
            out = certify.outlook(p, n, sigma, alpha, radius, oracle_error)
            asymptotic = sigma * float(norm.ppf(p - oracle_error))
            row[f"p={p}"] = {"certify_probability": out.certify_probability, "expected_radius": out.expected_radius,
                             "approx_expected_radius": asymptotic * row["approx_radius_ratio"]}
        rows.append(row)
    return {"sigma": sigma, "radius": radius, "alpha": alpha, "oracle_error": oracle_error, "n_min": n_min,
            "p_required": certify.p_required(radius, sigma), "table": rows}


def format_plan(result: dict[str, Any]) -> str:
    """Human-readable plan: the headline numbers, then one table row per sample count."""
    lines = [f"To certify R >= {result['radius']} at sigma={result['sigma']}, alpha={result['alpha']}, "
             f"oracle error {result['oracle_error']}:",
             f"  smoothed probability needed p* = {result['p_required']:.6f}",
             f"  fewest samples (all agree)   n_min = {result['n_min']}", "",
             "exact: P[certify] and E[radius] for a base with true p (approx: Seferis et al. ECAI 2024, "
             "r(a,n) ~ 1 - 1.64 z_a/sqrt(n))"]
    header = f"{'n':>8} {'max R':>7} " + " ".join(f"{'p=' + str(p):>28}" for p in PLAN_P_TRUE)
    lines += [header, f"{'':>8} {'':>7} " + " ".join(f"{'P[cert]  E[R]  E[R]~approx':>28}" for _ in PLAN_P_TRUE)]
    for row in result["table"]:
        cells = " ".join(f"{row[f'p={p}']['certify_probability']:>9.3f} {row[f'p={p}']['expected_radius']:>7.3f} "
                         f"{row[f'p={p}']['approx_expected_radius']:>10.3f}" for p in PLAN_P_TRUE)
        lines.append(f"{row['n']:>8} {row['max_radius']:>7.3f} {cells}")
    return "\n".join(lines)


def cmd_plan(args: argparse.Namespace) -> dict[str, Any]:
    return plan(args.sigma, args.radius, args.alpha, args.oracle_error)


def emit(result: dict[str, Any], as_json: bool, formatter: Callable[[dict[str, Any]], str]) -> None:
    """Print one JSON object (--json) or the human-readable rendering."""
    print(json.dumps(result, default=str) if as_json else formatter(result))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rs-guard", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="samples needed to certify a radius (the planning law)")
    p.add_argument("--sigma", type=float, required=True, help="noise standard deviation ([0,1] intensity units)")
    p.add_argument("--radius", type=float, required=True, help="radius threshold R* to certify")
    p.add_argument("--alpha", type=float, default=0.001, help="false-certification probability per decision")
    p.add_argument("--oracle-error", type=float, default=0.0, help="oracle error bound eps_O")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_plan, formatter=format_plan)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.run(args)
    except ValueError as exc:
        print(f"rs-guard {args.command}: error: {exc}", file=sys.stderr)
        return 2
    emit(result, args.json, args.formatter)
    return 0


if __name__ == "__main__":
    sys.exit(main())
