"""`make test`'s wall time with its test files in `--workers` xdist processes (the Makefile's
TEST_WORKERS) against the same suite run serially (the baseline), one after the other in one
run, and the 15 slowest test files of each (seconds summed over the file's tests, setup and
teardown included, from pytest's JUnit XML).

Both runs test exactly the same thing: the script fails when their pass/skip counts differ.

    .venv/bin/python benchmarks/bench_test_suite.py [--workers 3] [--top 15] [--json] [-- PYTEST_ARGS...]
"""
from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_suite(workers: int, junit: Path, extra: list[str]) -> float:
    """Wall seconds of one `make test` (its environment and set-up check) with `workers` xdist
    processes (0: serial); the JUnit XML goes to `junit`."""
    pytest_args = " ".join(["-n", str(workers), "--dist", "loadfile", "--no-loadscope-reorder", f"--junitxml={junit}",
                            *extra])
    start = time.monotonic()
    subprocess.run(["make", "test", f"PYTEST_ARGS={pytest_args}"], cwd=ROOT, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start


def outcomes(junit: Path) -> tuple[collections.Counter, dict[str, float], list[str]]:
    """Counts of passed/failed/error/skipped tests, seconds per test file, and the tests that failed."""
    counts: collections.Counter = collections.Counter()
    per_file: dict[str, float] = collections.defaultdict(float)
    failed = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        kinds = {child.tag for child in case} & {"failure", "error", "skipped"}
        counts[next(iter(kinds)) if kinds else "passed"] += 1
        test_file = case.get("classname", "").split(".")[-1] + ".py"
        per_file[test_file] += float(case.get("time", 0.0))
        if kinds & {"failure", "error"}:
            failed.append(f"{test_file}::{case.get('name')}")
    return counts, dict(per_file), failed


def slowest(per_file: dict[str, float], top: int) -> list[tuple[str, float]]:
    return sorted(per_file.items(), key=lambda kv: -kv[1])[:top]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3, help="xdist processes of the parallel run (default 3)")
    parser.add_argument("--top", type=int, default=15, help="slowest test files to list (default 15)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("pytest_args", nargs="*", help="passed to both runs (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for name, workers in (("serial", 0), (f"{args.workers} workers", args.workers)):
            junit = Path(tmp) / f"{workers}.xml"
            wall = run_suite(workers, junit, args.pytest_args)
            counts, per_file, failed = outcomes(junit)
            runs[name] = {"wall_s": round(wall, 1), "counts": dict(counts), "failed": failed,
                          "slowest": [[f, round(s, 1)] for f, s in slowest(per_file, args.top)]}
            print(f"{name}: {wall:.0f} s, {dict(counts)} {' '.join(failed)}", file=sys.stderr, flush=True)
    serial, parallel = runs.values()
    result = {"runs": runs, "ratio": round(parallel["wall_s"] / serial["wall_s"], 3),
              "same_tests": serial["counts"] == parallel["counts"]}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for name, run in runs.items():
            print(f"{name:>10}: {run['wall_s']:7.1f} s  {run['counts']}  failed: {', '.join(run['failed']) or 'none'}")
            for f, s in run["slowest"]:
                print(f"{'':12}{s:7.1f} s  {f}")
        print(f"ratio parallel/serial: {result['ratio']:.2f}  (same pass/skip counts: {result['same_tests']})")
    failed = {"failure", "error"} & (set(serial["counts"]) | set(parallel["counts"]))
    return 0 if result["same_tests"] and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
