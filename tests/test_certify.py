"""Clopper–Pearson bounds, radius and planning law of rs_guard_ros.certify."""
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


@settings(max_examples=200, deadline=None)
@given(st.floats(0.0, 1.0), st.floats(0.05, 1.0), alphas, st.floats(0.0, 0.05))
def test_samples_needed_is_the_fewest_all_agree_samples_that_certify(radius, sigma, alpha, eps):
    if certify.p_required(radius, sigma) + eps >= 1 - 1e-6:
        return  # beyond ~1e7 samples the n-1 vs n boundary is below float resolution of Phi^-1
    n = certify.samples_needed(radius, sigma, alpha, eps)
    assert certify.clears_threshold(certify.cp_lower(n, n, alpha), sigma, radius, eps)
    if n > 1:
        assert not certify.clears_threshold(certify.cp_lower(n - 1, n - 1, alpha), sigma, radius, eps)


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


def test_seferis_approximations_follow_their_formulas():
    z = norm.ppf(1 - 0.001 / 2)
    assert certify.approx_radius_ratio(0.001, 10_000) == pytest.approx(1 - 1.64 * z / 100)
    assert certify.approx_accuracy_drop(0.001, 10_000) == pytest.approx(z / 100)


def test_certify_counts_uses_selection_for_label_and_estimation_for_bound():
    label, p_low, radius = certify.certify_counts({"a": 9, "b": 1}, {"a": 50, "b": 950}, sigma=1.0, alpha=0.01)
    assert label == "a" and p_low < 0.1 and radius < 0


def test_predict_abstains_when_top_two_are_not_significantly_different():
    assert certify.predict_counts({"a": 52, "b": 48}, 0.01) is None
    assert certify.predict_counts({"a": 95, "b": 5}, 0.01) == "a"
    assert certify.predict_counts({}, 0.01) is None


def test_sequential_looks_spend_at_most_alpha_and_start_where_all_agree_can_certify():
    looks = certify.sequential_looks(0.5, 0.25, 0.001, 100_000)
    assert sum(look.alpha for look in looks) <= 0.001 + 1e-15
    assert looks[0].n == certify.samples_needed(0.5, 0.25, 0.0005)
    assert [look.n for look in looks] == sorted({look.n for look in looks})
    assert looks[-1].n == 100_000


def test_sequential_looks_are_empty_when_threshold_is_out_of_reach():
    assert certify.sequential_looks(1.0, 0.25, 0.001, 100) == []


@pytest.mark.parametrize("call,name", [
    (lambda: certify.cp_lower(1, 10, 0.0), "alpha"),
    (lambda: certify.cp_lower(1, 10, 1.0), "alpha"),
    (lambda: certify.cp_lower(11, 10, 0.1), "k"),
    (lambda: certify.cp_upper(1, 0, 0.1), "n"),
    (lambda: certify.certified_radius(0.9, 0.0), "sigma"),
    (lambda: certify.certified_radius(0.9, 1.0, oracle_error=0.6), "oracle_error"),
    (lambda: certify.samples_needed(-1.0, 0.25, 0.01), "radius"),
    (lambda: certify.samples_needed(0.5, 0.25, 0.01, oracle_error=0.49), "radius"),
])
def test_bad_arguments_raise_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_outlook_certify_probability_grows_with_samples():
    probs = [certify.outlook(0.995, n, 0.25, 0.001, 0.5).certify_probability for n in (300, 1000, 3000)]
    assert probs[0] < probs[1] < probs[2]
