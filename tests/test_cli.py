"""The `rs-guard` command line: every subcommand answers --help and --json."""
import json
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

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


@pytest.mark.timeout(300)
@settings(max_examples=40, deadline=None)
@given(st.floats(1e-4, 4.0), st.floats(0.0, 10.0), st.sampled_from([1e-9, 1e-6, 1e-3, 0.1]), st.floats(0.0, 0.3))
def test_defect1_plan_answers_for_every_sigma_and_radius_up_to_ten_sigma(sigma, radius_in_sigmas, alpha, eps):
    """Bounded work (the old planner hung at R = 2, sigma = 0.25 and allocated 52 GiB at R = 1.5);
    no probability above 1 and no radius, exact or approximate, below 0."""
    try:
        result = cli.plan(sigma, radius_in_sigmas * sigma, alpha, eps)
    except ValueError as exc:
        assert "not certifiable" in str(exc)  # p* + eps_O is 1 to double precision
        return
    assert result["n_min"] >= 1 and result["within_budget"] == (result["n_min"] <= certify.MAX_SAMPLES)
    for row in result["table"]:
        assert row["n"] <= certify.MAX_SAMPLES and 0.0 <= row["approx_radius_ratio"] <= 1.0
        for p in cli.PLAN_P_TRUE:
            cell = row[f"p={p}"]
            assert 0.0 <= cell["certify_probability"] <= 1.0 and 0.0 <= cell["sequential_certify_probability"] <= 1.0
            assert cell["expected_radius"] >= 0.0 and cell["approx_expected_radius"] >= 0.0
            assert 0.0 <= cell["sequential_expected_samples"] <= row["n"]


def test_plan_of_a_radius_beyond_every_budget_says_so_and_gives_the_largest_certifiable_radius():
    out = run("plan", "--sigma", "0.25", "--radius", "2.0", "--alpha", "5e-4")
    assert out.returncode == 0 and "exceeds the largest sample budget" in out.stdout
