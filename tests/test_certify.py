"""Clopper–Pearson bounds, radius and planning law of rs_guard_ros.certify."""
import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.stats import binom, binomtest, norm

from rs_guard_ros import certify

alphas = st.floats(min_value=1e-6, max_value=0.4)


@st.composite
def k_n(draw):
    n = draw(st.integers(min_value=1, max_value=5000))
    return draw(st.integers(min_value=0, max_value=n)), n


@settings(max_examples=300, deadline=None)
@given(k_n(), alphas)
def test_cp_bounds_equal_scipy_exact_binomial_interval(kn, alpha):
    k, n = kn
    # A one-sided bound at level alpha is one side of the two-sided exact interval at 1 - 2 alpha.
    ci = binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact")
    assert certify.cp_lower(k, n, alpha) == pytest.approx(ci.low, abs=1e-9)
    assert certify.cp_upper(k, n, alpha) == pytest.approx(ci.high, abs=1e-9)


@given(st.integers(min_value=1, max_value=10**6), alphas)
def test_cp_lower_of_all_agree_is_alpha_to_one_over_n(n, alpha):
    assert certify.cp_lower(n, n, alpha) == alpha ** (1 / n)


@pytest.mark.parametrize("sigma,radius,alpha,expected", [(0.25, 0.5, 0.001, 301)])
def test_samples_needed_matches_design_example(sigma, radius, alpha, expected):
    assert certify.samples_needed(radius, sigma, alpha) == expected


@pytest.mark.timeout(120)
@settings(max_examples=400, deadline=None)
@given(st.floats(0.0, 100.0), st.floats(1e-4, 4.0), st.floats(1e-9, 0.5, exclude_max=True), st.floats(0.0, 0.49))
def test_defect1_samples_needed_answers_at_once_for_every_legal_setting(radius, sigma, alpha, eps):
    """Every sigma, radius threshold, alpha and oracle error in the parameter ranges gets an
    answer (a count, or ValueError naming the radius) in bounded work; where alpha^(1/n) is
    still resolved in floating point, the count is exactly the fewest all-agree samples the
    gate rule certifies."""
    try:
        n = certify.samples_needed(radius, sigma, alpha, eps)
    except ValueError as exc:
        assert "radius" in str(exc)
        return
    assert n >= 1
    if n < 2 ** 52:
        assert certify.clears_threshold(certify.cp_lower(n, n, alpha), sigma, radius, eps)
        if n > 1:
            assert not certify.clears_threshold(certify.cp_lower(n - 1, n - 1, alpha), sigma, radius, eps)


@pytest.mark.timeout(60)
def test_defect1_the_reported_hanging_thresholds_answer_and_cannot_be_planned_within_budget():
    n = certify.samples_needed(2.0, 0.25, 5e-4)  # looped forever at n ~ 1e12..1e16
    assert n == pytest.approx(math.log(5e-4) / math.log1p(-norm.sf(8.0)), rel=1e-9)
    assert certify.sequential_looks(2.0, 0.25, 5e-4, 2000) == ()
    assert not certify.can_certify(2.0, 0.25, 5e-4, certify.MAX_SAMPLES)


def test_defect1_outlook_memory_does_not_grow_with_the_sample_count():
    """outlook at the largest budget uses a window of the binomial, not arrays over all k
    (the old code allocated 8 arrays of n + 1 floats: 640 MB at n = 1e7, 52 GiB at n_min of R = 1.5)."""
    tracemalloc.start()
    try:
        out = certify.outlook(0.5, certify.MAX_SAMPLES, 0.25, 0.001, 0.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.certify_probability <= 0.001 and peak < 50e6, f"peak {peak / 1e6:.0f} MB"  # p = 1/2: only alpha


@pytest.mark.parametrize("n,expected", [(100, 1.50), (1000, 2.46), (100_000, 3.81)])
def test_max_certifiable_radius_matches_design_table(n, expected):
    assert certify.max_certifiable_radius(n, 1.0, 0.001) == pytest.approx(expected, abs=0.005)


def test_certified_radius_is_sigma_times_inverse_normal_minus_oracle_error():
    assert certify.certified_radius(0.9, 0.5) == pytest.approx(0.5 * norm.ppf(0.9))
    assert certify.certified_radius(0.9, 0.5, oracle_error=0.1) == pytest.approx(0.5 * norm.ppf(0.8))
    assert certify.certified_radius(0.5, 0.5) == 0.0
    assert certify.certified_radius(0.3, 0.5) < 0


def test_outlook_equals_brute_force_sum_over_binomial_outcomes():
    n, p, sigma, alpha, thr = 60, 0.93, 0.5, 0.01, 0.3
    got = certify.outlook(p, n, sigma, alpha, thr)
    prob = radius_sum = 0.0
    for k in range(n + 1):
        r = certify.certified_radius(certify.cp_lower(k, n, alpha), sigma)
        w = binom.pmf(k, n, p)
        prob += w * (r > 0 and r >= thr)
        radius_sum += w * max(r, 0.0)
    assert got.certify_probability == pytest.approx(prob, abs=1e-12)
    assert got.expected_radius == pytest.approx(radius_sum, abs=1e-12)


def test_seferis_approximation_follows_its_formula_and_stays_in_unit_interval():
    z = norm.ppf(1 - 0.001 / 2)
    assert certify.approx_radius_ratio(0.001, 10_000) == pytest.approx(1 - 1.64 * z / 100)
    assert certify.approx_radius_ratio(0.001, 4) == 0.0  # the formula goes negative for small n


def test_sequential_looks_spend_alpha_and_start_where_all_agree_can_certify():
    looks = certify.sequential_looks(0.5, 0.25, 0.001, 100_000)
    assert sum(look.alpha for look in looks) == pytest.approx(0.001, rel=1e-12)
    assert looks[0].n == certify.samples_needed(0.5, 0.25, certify.FIRST_LOOK_SHARE * 0.001)
    assert [look.n for look in looks] == sorted({look.n for look in looks})
    assert looks[-1].n == 100_000 and looks[-1].alpha >= 0.75 * 0.001


def test_sequential_looks_are_empty_when_threshold_is_out_of_reach():
    assert certify.sequential_looks(1.0, 0.25, 0.001, 100) == ()


def test_sequential_test_is_one_look_with_all_alpha_when_the_budget_leaves_no_room():
    n_min = certify.samples_needed(0.5, 0.25, 0.001)
    assert certify.sequential_looks(0.5, 0.25, 0.001, n_min) == (certify.Look(n_min, 0.001),)


@pytest.mark.parametrize("call,name", [
    (lambda: certify.cp_lower(1, 10, 0.0), "alpha"),
    (lambda: certify.cp_lower(1, 10, 1.0), "alpha"),
    (lambda: certify.cp_lower(11, 10, 0.1), "k"),
    (lambda: certify.cp_upper(1, 0, 0.1), "n"),
    (lambda: certify.certified_radius(0.9, 0.0), "sigma"),
    (lambda: certify.certified_radius(0.9, 1.0, oracle_error=0.6), "oracle_error"),
    (lambda: certify.samples_needed(-1.0, 0.25, 0.01), "radius"),
    (lambda: certify.samples_needed(0.5, 0.25, 0.01, oracle_error=0.49), "radius"),
    (lambda: certify.samples_needed(float("nan"), 0.25, 0.01), "radius"),
    (lambda: certify.outlook(0.9, 8.0, 0.25, 0.01), "n"),
    (lambda: certify.outlook(0.9, certify.MAX_SAMPLES + 1, 0.25, 0.01), "n"),
])
def test_bad_arguments_raise_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


@settings(max_examples=100, deadline=None)
@given(st.floats(0.0, 1.0), st.integers(1, 400), st.floats(0.05, 2.0), st.floats(1e-6, 0.3),
       st.floats(0.0, 1.0), st.floats(0.0, 0.2))
def test_outlook_probability_lies_in_unit_interval_and_radius_is_never_negative(p, n, sigma, alpha, thr, eps):
    out = certify.outlook(p, n, sigma, alpha, thr, eps)
    assert 0.0 <= out.certify_probability <= 1.0 and out.expected_radius >= 0.0


def test_outlook_certify_probability_grows_with_samples():
    probs = [certify.outlook(0.995, n, 0.25, 0.001, 0.5).certify_probability for n in (300, 1000, 3000)]
    assert probs[0] < probs[1] < probs[2]


def _brute_force_sequential(p, thr, sigma, alpha, n_max, eps=0.0):
    """The sequential test's certification probability by plain dynamic programming over every
    count, with the rules applied k by k (no windows, no bisection)."""
    looks = certify.sequential_looks(thr, sigma, alpha, n_max, eps)
    alive, n, certified = np.array([1.0]), 0, 0.0
    for look in looks:
        alive = np.convolve(alive, binom.pmf(np.arange(look.n - n + 1), look.n - n, p))
        n = look.n
        for k in range(n + 1):
            if certify.clears_threshold(certify.cp_lower(k, n, look.alpha), sigma, thr, eps):
                certified += alive[k]
                alive[k] = 0.0
            elif look is not looks[-1] and certify.futile(k, n, looks, sigma, alpha, thr, eps):
                alive[k] = 0.0
    return certified


@pytest.mark.parametrize("p,thr,sigma,alpha,n_max,eps", [
    (0.9, 0.25, 0.25, 0.01, 300, 0.0), (0.97, 0.5, 0.25, 0.001, 900, 0.0), (1.0, 0.1, 0.25, 0.001, 200, 0.0),
    (0.8, 0.1, 0.5, 0.05, 400, 0.02), (0.6, 0.0, 0.25, 0.1, 120, 0.0),
])
def test_sequential_outlook_equals_brute_force_dynamic_programming(p, thr, sigma, alpha, n_max, eps):
    got = certify.sequential_outlook(p, thr, sigma, alpha, n_max, eps)
    assert got.certify_probability == pytest.approx(_brute_force_sequential(p, thr, sigma, alpha, n_max, eps),
                                                    abs=1e-9)


@pytest.mark.parametrize("thr,alpha,n_max", [(0.25, 1e-3, 2000), (0.1, 1e-3, 1000), (0.5, 1e-3, 5000),
                                             (0.25, 1e-6, 5000), (0.25, 1e-2, 2000)])
def test_defect9_sequential_power_is_within_0_05_of_fixed_mode_at_every_p(thr, alpha, n_max):
    """Exact certification probabilities, on a 0.001 grid of true p from p* to 1: the
    sequential test never trails Cohen's fixed-n CERTIFY at the same n_max by more than 0.05
    (the old halving scheme trailed by 0.46 at p = 0.87 for the first row)."""
    sigma = 0.25
    p_star = certify.p_required(thr, sigma)
    worst = max(certify.outlook(p, n_max, sigma, alpha, thr).certify_probability
                - certify.sequential_outlook(p, thr, sigma, alpha, n_max).certify_probability
                for p in np.arange(p_star, 1.0, 0.001))
    assert worst <= 0.05, f"sequential trails fixed mode by {worst:.3f}"


@pytest.mark.parametrize("thr", [0.05, 0.1, 0.25, 0.5])
def test_defect9_a_consistent_base_stops_at_the_first_look_within_1_25_n_min(thr):
    sigma, alpha = 0.25, 1e-3
    n_min = certify.samples_needed(thr, sigma, alpha)
    out = certify.sequential_outlook(1.0, thr, sigma, alpha, 100_000)
    assert out.certify_probability == 1.0 and out.median_samples <= 1.25 * n_min


@settings(max_examples=200, deadline=None)
@given(st.floats(0.0, 1.0), st.floats(0.05, 2.0), st.floats(1e-9, 0.5, exclude_max=True),
       st.integers(1, certify.MAX_SAMPLES))
def test_issue15_7_sequential_looks_spend_exactly_alpha_never_more(thr, sigma, alpha, n_max):
    """The final look gets the remainder of alpha: the levels of all looks add up to alpha
    (to the last bit, never above it)."""
    looks = certify.sequential_looks(thr, sigma, alpha, n_max)
    if looks:
        total = math.fsum(look.alpha for look in looks)
        assert total <= alpha and total == pytest.approx(alpha, rel=1e-14, abs=0.0)
        assert all(look.alpha > 0 for look in looks)


# ----------------------------------------------------------------------------- selection paths (issue 16)
@pytest.mark.parametrize("mode", ["sequential", "fixed"])
@pytest.mark.parametrize("radius,previous_radius", [(0.25, 0.05), (0.05, 0.25), (0.1, 0.1)])
def test_issue16_each_selection_path_plans_the_samples_the_gate_spends(mode, radius, previous_radius):
    """selection_paths is the gate's own arithmetic: for a consistent model (p = 1, so no
    count is random) each path's planned samples, selection samples and level are those of
    smooth_certify confirming the standing command, changing from another one, or selecting
    with n0 samples."""
    from rs_guard_ros.smoothing import smooth_certify

    sigma, alpha, n0, n_max = 0.25, 1e-3, 32, 500
    paths = certify.selection_paths(1.0, radius, sigma, alpha, n0, n_max, mode=mode, previous_threshold=previous_radius)
    thresholds = {"new": radius, "old": previous_radius}

    def decide(previous):
        return smooth_certify(lambda batch: ["new"] * len(batch), np.zeros(8, np.float32), sigma=sigma, alpha=alpha,
                              n0=n0, n_max=n_max, mode=mode, radius_threshold=thresholds, batch_size=64, seed=1,
                              previous=previous)

    for path, previous in (("previous", "new"), ("changed", "old"), ("samples", None)):
        plan, cert = paths[path], decide(previous)
        assert cert.certified and cert.label == "new"
        assert cert.n_used == plan.expected_samples == plan.median_samples, path
        assert (cert.n_selection, cert.n_estimation) == (plan.n_selection, plan.first_look), path
        assert cert.test_alpha == pytest.approx(plan.test_alpha) and plan.certify_probability == pytest.approx(1.0)
        assert plan.n_min == certify.samples_needed(radius, sigma, plan.test_alpha)
    assert paths["previous"].test_alpha + paths["changed"].test_alpha == pytest.approx(alpha)  # union bound


def test_issue16_selection_paths_reproduce_the_split_table_of_guarantee_md():
    """docs/guarantee.md's demo figures (sigma 0.25, alpha 1e-3, n_max 500): forward 50, turn 16
    confirmed; turn -> forward 93, forward -> turn 75; 32 + 50 and 32 + 16 with selection samples."""
    def paths(p, radius, previous):
        return certify.selection_paths(p, radius, 0.25, 1e-3, 32, 500, previous_threshold=previous)

    forward, turn = paths(1.0, 0.25, 0.05), paths(1.0, 0.05, 0.25)
    assert [forward[k].expected_samples for k in certify.SELECTION_PATHS] == [50, 93, 82]
    assert [turn[k].expected_samples for k in certify.SELECTION_PATHS] == [16, 75, 48]
    assert paths(0.99, 0.25, 0.05)["previous"].expected_samples == pytest.approx(76.9, abs=0.05)
    assert paths(0.99, 0.05, 0.25)["previous"].expected_samples == pytest.approx(19.4, abs=0.05)
    table = certify.paths_table({1.0: forward, 0.99: paths(0.99, 0.25, 0.05)})
    assert table["samples"]["samples_first_look"] == 82 and table["changed"]["n_selection"] == 16
    assert table["previous"]["p=0.99"]["expected_samples"] == pytest.approx(76.9, abs=0.05)


def test_issue16_a_change_from_a_command_whose_test_draws_nothing_cannot_certify():
    """A standing command n_max samples cannot certify stops before drawing any: nothing is left to
    select another command, so the changed path certifies nothing (smooth_certify abstains)."""
    paths = certify.selection_paths(1.0, 0.05, 0.25, 1e-3, 32, 100, previous_threshold=5.0)
    assert paths["changed"].certify_probability == 0.0 and paths["changed"].expected_samples == 0.0
    assert paths["previous"].certify_probability == pytest.approx(1.0)
