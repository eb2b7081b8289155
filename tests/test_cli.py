"""The `rs-guard` command line: every subcommand answers --help and --json."""
import json
import subprocess
import sys

import pytest

from rs_guard_ros import certify, cli


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rs_guard_ros.cli", *args], capture_output=True, text=True)


def test_plan_json_gives_n_min_and_p_required_of_the_planning_law():
    out = run("plan", "--sigma", "0.25", "--radius", "0.5", "--alpha", "0.001", "--json")
    result = json.loads(out.stdout)
    assert result["n_min"] == 301 and result["p_required"] == pytest.approx(0.97725, abs=1e-5)
    row = result["table"][0]
    assert row["n"] == 301 and row["max_radius"] >= 0.5


def test_plan_table_matches_exact_outlook():
    result = cli.plan(0.25, 0.5, 0.001, 0.01)
    row = next(r for r in result["table"] if r["n"] == 10_000)
    exact = certify.outlook(0.99, 10_000, 0.25, 0.001, 0.5, 0.01)
    assert row["p=0.99"]["certify_probability"] == pytest.approx(exact.certify_probability)


def test_plan_human_output_names_the_figures():
    out = run("plan", "--sigma", "0.25", "--radius", "0.5")
    assert out.returncode == 0 and "n_min = 301" in out.stdout and "p* = 0.977250" in out.stdout


def test_plan_of_an_uncertifiable_radius_fails_with_a_message_not_a_traceback():
    out = run("plan", "--sigma", "0.25", "--radius", "5", "--oracle-error", "0.1")
    assert out.returncode == 2 and "not certifiable" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("sub", ["plan", "certify", "calibrate-oracle", "bench", "eval", "attack", "examples", "demo"])
def test_every_subcommand_has_help(sub):
    out = run(sub, "--help")
    assert out.returncode == 0 and "--json" in out.stdout
