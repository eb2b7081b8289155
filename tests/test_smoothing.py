"""Soundness and efficiency of smooth_certify against analytic ground truth.

A linear base classifier h(x) = [w.x + b > 0] with |w| = 1 under N(0, sigma^2 I) noise
has smoothed probability Phi(m / sigma) and true certified radius |m|, m = w.x + b
(Cohen et al. 2019, §3.1), so every certificate can be checked against the truth.
"""
import tracemalloc
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy.stats import binom, kstest, norm

from rs_guard_ros import certify
from rs_guard_ros.smoothing import Certificate, smooth_certify

SIGMA = 0.25
RUNS = 2000
FAIL_PROB = 1e-6  # chance that a sound certifier fails these tests


class LinearBase:
    """h(x) = "pos" if w.x + b > 0 else "neg", vectorised over a batch (numpy or torch)."""

    def __init__(self, margin: float, dim: int = 4):
        self.w = np.zeros(dim)
        self.w[0] = 1.0
        self.margin = margin
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        first = batch[:, 0] if not isinstance(batch, torch.Tensor) else batch[:, 0].cpu().numpy()
        return ["pos" if v > 0 else "neg" for v in first]

    def point(self) -> np.ndarray:
        return self.w * self.margin  # w.x = margin, b = 0


def violates(cert: Certificate, margin: float) -> bool:
    """A certificate is false when it claims a radius the smoothed classifier does not have."""
    truth = "pos" if margin > 0 else "neg"
    return cert.certified and (cert.label != truth or cert.radius > abs(margin))


def max_violations(alpha: float, runs: int) -> int:
    return int(binom.ppf(1 - FAIL_PROB, runs, alpha))


def naive_sequential(base, x, *, sigma, alpha, n0, n_max, radius_threshold, batch_size, rng):
    """DELIBERATELY WRONG: peeks after every batch at the full alpha (no alpha spending)."""
    label = Counter(base(x + sigma * rng.standard_normal((n0, *x.shape)))).most_common(1)[0][0]
    k = n = 0
    while n < n_max:
        k += sum(lab == label for lab in base(x + sigma * rng.standard_normal((batch_size, *x.shape))))
        n += batch_size
        p_low = certify.cp_lower(k, n, alpha)
        if certify.clears_threshold(p_low, sigma, radius_threshold, 0.0):
            return Certificate(label, True, certify.certified_radius(p_low, sigma), p_low, n0 + n, {})
    return Certificate(label, False, 0.0, 0.0, n0 + n_max, {})


def test_fixed_mode_false_certification_rate_is_within_binomial_bound_of_alpha():
    alpha, margin = 0.1, 0.32  # p = Phi(1.28) ~ 0.9
    base = LinearBase(margin)
    bad = sum(violates(smooth_certify(base, base.point(), sigma=SIGMA, alpha=alpha, n0=10, n_max=100,
                                      batch_size=110), margin) for _ in range(RUNS))
    assert bad <= max_violations(alpha, RUNS), f"{bad}/{RUNS} false certificates at alpha={alpha}"


def sequential_violations(certifier, runs: int, alpha: float, margin: float) -> int:
    base = LinearBase(margin)
    # Threshold just above the true radius: every certification is a false one.
    return sum(violates(certifier(base, base.point(), sigma=SIGMA, alpha=alpha, n0=10, n_max=4000,
                                  radius_threshold=margin * 1.02), margin) for _ in range(runs))


def test_sequential_mode_false_certification_rate_is_within_binomial_bound_of_alpha():
    alpha, margin = 0.1, 0.3
    bad = sequential_violations(lambda *a, **kw: smooth_certify(*a, mode="sequential", batch_size=500, **kw),
                                RUNS, alpha, margin)
    assert bad <= max_violations(alpha, RUNS), f"{bad}/{RUNS} false certificates at alpha={alpha}"


def test_the_soundness_test_catches_a_sequential_scheme_that_peeks_without_alpha_control():
    alpha, margin, runs = 0.1, 0.3, 600
    rng = np.random.default_rng(0)
    bad = sequential_violations(lambda *a, **kw: naive_sequential(*a, batch_size=50, rng=rng, **kw),
                                runs, alpha, margin)
    assert bad > max_violations(alpha, runs), "the soundness test has no power against peeking"


def test_sequential_mode_certifies_a_consistent_base_near_n_min():
    sigma, threshold, alpha, n0 = 0.25, 0.5, 0.001, 16
    n_min = certify.samples_needed(threshold, sigma, alpha)
    base = LinearBase(margin=50.0)  # p ~= 1
    certs = [smooth_certify(base, base.point(), sigma=sigma, alpha=alpha, n0=n0, n_max=100_000,
                            mode="sequential", radius_threshold=threshold, batch_size=256) for _ in range(11)]
    assert all(c.certified and c.radius >= threshold for c in certs)
    ratio = float(np.median([c.n_used - n0 for c in certs])) / n_min
    assert n_min == 301 and ratio <= 1.25, f"sequential used {ratio:.3f} x n_min"


def test_sequential_mode_abstains_early_when_threshold_is_unreachable():
    base = LinearBase(margin=0.0)  # p = 1/2: nothing is certifiable
    cert = smooth_certify(base, base.point(), sigma=SIGMA, alpha=0.001, n0=10, n_max=100_000,
                          mode="sequential", radius_threshold=0.25, batch_size=256)
    assert not cert.certified and cert.reason == "threshold_unreachable"
    assert cert.n_used < 5_000


@pytest.mark.parametrize("margin,threshold,reason", [(0.2485, 0.25, "radius_below_threshold"),
                                                      (0.005, 0.0, "not_confident")])
def test_issue15_7_a_final_look_that_fails_says_why_and_is_not_called_unreachable(margin, threshold, reason):
    """p = Phi(margin / sigma) close to p* (0.840 against Phi(1) = 0.841; 0.508 against 1/2):
    the test runs to its final look, spending all n_max samples, and a failure there gives the
    final bound's reason (a radius below the threshold, or none at all), as in fixed mode.
    At p = 0.508 > 1/2 a certification at the final look is correct, so only failures are
    checked; seeded, so the outcome is the same on every run."""
    base = LinearBase(margin)
    thresholds = {"pos": threshold, "neg": threshold}
    n0, n_max = 400, 2000
    certs = [smooth_certify(base, base.point(), sigma=SIGMA, alpha=0.001, n0=n0, n_max=n_max, mode="sequential",
                            radius_threshold=thresholds, batch_size=500, seed=seed) for seed in range(20)]
    failed_at_final_look = [c for c in certs if c.n_used == n0 + n_max and not c.certified]
    assert failed_at_final_look, "no decision failed at the final look"
    assert all(c.reason == reason for c in failed_at_final_look)
    assert all(c.reason == "threshold_unreachable" for c in certs if c.n_used < n0 + n_max)


def test_fixed_mode_uses_n0_plus_n_max_samples_and_separate_selection():
    base = LinearBase(margin=1.0)
    cert = smooth_certify(base, base.point(), sigma=SIGMA, alpha=0.001, n0=7, n_max=93, batch_size=10)
    assert cert.n_used == 100 and sum(cert.counts.values()) == 93 and sum(cert.selection_counts.values()) == 7


def test_unknown_top_label_never_certifies():
    cert = smooth_certify(lambda b: [None] * len(b), np.zeros(3), sigma=SIGMA, alpha=0.01, n0=10, n_max=100)
    assert not cert.certified and cert.label is None and cert.to_dict()["label"] == "UNKNOWN"


def test_per_label_thresholds_apply_to_the_selected_label():
    base = LinearBase(margin=0.5)  # true radius 0.5
    kw = dict(sigma=SIGMA, alpha=0.001, n0=10, n_max=2000, batch_size=500)
    assert smooth_certify(base, base.point(), radius_threshold={"pos": 0.1}, **kw).certified
    assert not smooth_certify(base, base.point(), radius_threshold={"pos": 0.9, "neg": 0.0}, **kw).certified


def test_noise_is_gaussian_with_sigma_and_fresh_per_call_without_seed():
    seen = []

    def base(batch):
        seen.append(np.array(batch))
        return ["a"] * len(batch)

    x = np.full(50, 0.3)
    smooth_certify(base, x, sigma=0.7, alpha=0.01, n0=1, n_max=40, batch_size=40)
    first = np.concatenate(seen) - x
    assert kstest(first.ravel() / 0.7, "norm").pvalue > FAIL_PROB
    seen.clear()
    smooth_certify(base, x, sigma=0.7, alpha=0.01, n0=1, n_max=40, batch_size=40)
    assert not np.allclose(np.concatenate(seen) - x, first)


def test_fixed_seed_reproduces_the_certificate_and_is_reported():
    base = LinearBase(margin=0.1)
    kw = dict(sigma=SIGMA, alpha=0.01, n0=10, n_max=300, seed=1234)
    a, b = smooth_certify(base, base.point(), **kw), smooth_certify(base, base.point(), **kw)
    assert a.to_dict() == b.to_dict() and a.seed == 1234


def test_torch_input_gets_noise_on_its_device_and_dtype():
    seen = []

    def base(batch):
        seen.append((batch.device, batch.dtype, batch.shape))
        return ["a"] * len(batch)

    x = torch.zeros(3, 4, 5, dtype=torch.float64)
    cert = smooth_certify(base, x, sigma=SIGMA, alpha=0.01, n0=5, n_max=20, batch_size=8)
    assert cert.certified
    assert all(d == x.device and t == torch.float64 and s[1:] == x.shape for d, t, s in seen)


@pytest.mark.parametrize("kwargs,name", [
    (dict(sigma=0.0), "sigma"), (dict(sigma=-1.0), "sigma"), (dict(alpha=0.0), "alpha"),
    (dict(alpha=1.5), "alpha"), (dict(n0=0), "n0"), (dict(n_max=0), "n_max"), (dict(mode="magic"), "mode"),
    (dict(x=np.array([0.0, np.nan])), "x"), (dict(x=np.array([np.inf])), "x"),
    (dict(base=lambda b: ["a"]), "base"),
])
def test_bad_input_raises_value_error_naming_the_argument(kwargs, name):
    args = dict(base=lambda b: ["a"] * len(b), x=np.zeros(2), sigma=SIGMA, alpha=0.01, n0=5, n_max=20)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        smooth_certify(args.pop("base"), args.pop("x"), **args)


# ---------------------------------------------------------------------------
# Issue 9 regressions: thresholds, dtypes, budgets and the sequential test's power
# ---------------------------------------------------------------------------

def test_defect3_a_label_without_a_threshold_is_never_certified():
    base = LinearBase(margin=1.0)  # "pos" with p ~ 1: certifiable at any modest threshold
    cert = smooth_certify(base, base.point(), sigma=SIGMA, alpha=0.001, n0=10, n_max=500,
                          radius_threshold={"neg": 0.5})
    assert cert.label == "pos" and not cert.certified and cert.reason == "no_threshold"
    assert cert.to_dict()["radius_threshold"] is None


@pytest.mark.parametrize("x,what", [(np.zeros(4, dtype=np.uint8), "uint8"), (np.zeros(4, dtype=bool), "bool"),
                                    (np.zeros(4, dtype=np.int64), "int64"), (torch.zeros(4, dtype=torch.uint8), "uint8")])
def test_defect6_integer_and_bool_inputs_are_refused_naming_x(x, what):
    with pytest.raises(ValueError, match=f"x must be a floating-point.*{what}"):
        smooth_certify(lambda b: ["a"] * len(b), x, sigma=SIGMA, alpha=0.01, n0=5, n_max=20)


@pytest.mark.parametrize("name,value", [("n0", 8.0), ("n_max", 20.0), ("batch_size", 4.0), ("n0", True),
                                        ("n_max", -3), ("batch_size", 0)])
def test_defect6_counts_must_be_integers_and_the_error_names_them(name, value):
    kwargs = dict(sigma=SIGMA, alpha=0.01, n0=5, n_max=20, batch_size=8)
    kwargs[name] = value
    with pytest.raises(ValueError, match=name):
        smooth_certify(lambda b: ["a"] * len(b), np.zeros(3, dtype=np.float32), **kwargs)


def test_defect6_a_tensor_that_requires_grad_is_certified_without_autograd():
    x = torch.zeros(3, 8, 8, requires_grad=True)
    seen = []
    cert = smooth_certify(lambda b: seen.append(b.requires_grad) or ["a"] * len(b), x, sigma=SIGMA, alpha=0.01,
                          n0=4, n_max=40, batch_size=16)
    assert cert.certified and not any(seen)


def test_defect6_buffers_are_sized_by_the_samples_used_not_by_batch_size():
    """batch_size 65536 on a 3x224x224 input used to allocate 39 GB before the first sample."""
    x = np.zeros((3, 224, 224), dtype=np.float32)
    tracemalloc.start()
    try:
        cert = smooth_certify(lambda b: ["a"] * len(b), x, sigma=SIGMA, alpha=0.01, n0=4, n_max=8,
                              batch_size=65536)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert cert.n_used == 12 and peak < 20 * x.nbytes, f"peak {peak / 1e6:.0f} MB"


def test_defect6_bfloat16_noise_is_drawn_in_float32_then_rounded():
    """The base sees round_bf16(x + sigma * eps) with eps a float32 Gaussian (rounding after the
    noise is part of the base classifier); the old code drew eps itself in bfloat16."""
    x = torch.full((2, 3), 0.3, dtype=torch.bfloat16)
    seen = []
    smooth_certify(lambda b: seen.append(b.clone()) or ["a"] * len(b), x, sigma=0.5, alpha=0.01, n0=1, n_max=63,
                   batch_size=64, seed=11)
    gen = torch.Generator().manual_seed(11)
    eps = torch.cat([torch.randn((n, 2, 3), generator=gen, dtype=torch.float32) for n in (1, 63)])  # n0, then n_max
    expected = (x.float() + 0.5 * eps).to(torch.bfloat16)
    got = torch.cat(seen)
    assert got.dtype == torch.bfloat16 and torch.equal(got, expected)


DTYPES = [np.float16, np.float32, np.float64, torch.float16, torch.bfloat16, torch.float32, torch.float64]


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from(DTYPES), shape=st.lists(st.integers(1, 5), min_size=1, max_size=3),
       batch_size=st.integers(1, 300), n0=st.integers(1, 50), n_max=st.integers(1, 400),
       sigma=st.sampled_from([0.05, 0.25, 1.0]), mode=st.sampled_from(["fixed", "sequential"]))
def test_smooth_certify_returns_a_certificate_and_gaussian_noise_in_every_dtype(dtype, shape, batch_size, n0, n_max,
                                                                               sigma, mode):
    """Any float dtype (numpy or torch), shape, batch size and budget: a Certificate whose
    noise has mean 0 and std sigma within sampling error (6 standard errors, plus the
    rounding of 16-bit formats)."""
    is_torch = isinstance(dtype, torch.dtype)
    x = torch.full(shape, 0.5, dtype=dtype) if is_torch else np.full(shape, 0.5, dtype=dtype)
    noise = []

    def base(batch):
        assert batch.dtype == dtype and tuple(batch.shape[1:]) == tuple(shape)
        values = batch.double().numpy() if is_torch else batch.astype(np.float64)
        noise.append(values - 0.5)
        return ["a"] * len(batch)

    cert = smooth_certify(base, x, sigma=sigma, alpha=0.01, n0=n0, n_max=n_max, batch_size=batch_size, mode=mode)
    assert isinstance(cert, Certificate) and cert.n_used <= n0 + n_max
    eps = np.concatenate(noise).ravel()
    rounding = 0.0 if dtype in (np.float32, np.float64, torch.float32, torch.float64) else 0.01 * sigma
    se = sigma / np.sqrt(eps.size)
    assert abs(eps.mean()) <= 6 * se + rounding
    if eps.size >= 30:
        assert abs(eps.std() - sigma) <= 6 * sigma / np.sqrt(2 * eps.size) + rounding


def test_defect9_sequential_certification_rate_matches_its_exact_prediction():
    """The sampling loop is the test certify.sequential_outlook computes: at a true p near the
    threshold its certification rate agrees within binomial error (and stays near fixed mode)."""
    sigma, thr, alpha, n_max, runs = 0.25, 0.25, 1e-3, 2000, 300
    margin = sigma * norm.ppf(0.87)  # p(pos) = 0.87, p* = Phi(1) = 0.841
    base = LinearBase(margin)
    hits = sum(smooth_certify(base, base.point(), sigma=sigma, alpha=alpha, n0=32, n_max=n_max, mode="sequential",
                              radius_threshold=thr, batch_size=512).certified for _ in range(runs))
    expected = certify.sequential_outlook(0.87, thr, sigma, alpha, n_max).certify_probability
    low, high = binom.ppf(FAIL_PROB, runs, expected), binom.isf(FAIL_PROB, runs, expected)
    assert low <= hits <= high, f"{hits}/{runs} certified, exact prediction {expected:.3f}"


def test_issue15_5_noise_buffers_beyond_max_buffer_bytes_are_refused_before_allocating():
    """The reported case: 65 536 rows of a 3x224x224 input would take 39 GB; with a 1 GB budget
    the call is refused before any buffer exists (the base is never called)."""
    x = np.zeros((3, 224, 224), np.float32)
    calls = []
    with pytest.raises(ValueError, match="max_buffer_bytes"):
        smooth_certify(lambda b: calls.append(1) or ["a"] * len(b), x, sigma=0.25, alpha=0.01, n0=1, n_max=65_536,
                       batch_size=65_536, max_buffer_bytes=2**30)
    assert not calls
    cert = smooth_certify(lambda b: ["a"] * len(b), x, sigma=0.25, alpha=0.01, n0=1, n_max=100, batch_size=100,
                          max_buffer_bytes=2**30)
    assert cert.certified


@pytest.mark.parametrize("dtype,per_element", [(torch.float32, 4), (torch.float64, 8), (torch.float16, 4 + 2),
                                               (torch.bfloat16, 4 + 2)])
def test_issue15_5_buffer_bytes_counts_the_float32_noise_and_the_narrow_copy(dtype, per_element):
    from rs_guard_ros.smoothing import NoiseSource, buffer_bytes

    x = torch.zeros((3, 8, 8), dtype=dtype)
    noise = NoiseSource(x, 0.25, rows=5, seed=0)
    held = noise._buf.numel() * noise._buf.element_size() + (
        0 if noise._out is None else noise._out.numel() * noise._out.element_size())
    assert buffer_bytes(x.numel(), x.element_size(), 5) == held == 5 * 192 * per_element


# -- issue 16: selection by the previous decision ---------------------------------------------

def _stream_violations(margins, previous_of, *, mode: str, alpha: float, threshold_of) -> tuple[int, int]:
    """Certify a stream of frames (one linear base per margin), each with `previous` chosen by
    `previous_of(i, last_certified_label)`; the number of false certificates and of decisions."""
    bad, last = 0, None
    for i, margin in enumerate(margins):
        base = LinearBase(margin)
        cert = smooth_certify(base, base.point(), sigma=SIGMA, alpha=alpha, n0=10, n_max=400, mode=mode,
                              radius_threshold=threshold_of(margin), batch_size=500, previous=previous_of(i, last))
        bad += violates(cert, margin)
        last = cert.label if cert.certified else None
    return bad, len(margins)


@pytest.mark.parametrize("mode", ["fixed", "sequential"])
@pytest.mark.parametrize("case", ["runner_up", "just_below_p_star", "label_flips_every_frame"])
def test_issue16_previous_selection_keeps_false_certifications_within_alpha(mode, case):
    """False certifications stay within a binomial bound of alpha when the "previous" label is
    chosen adversarially -- the runner-up, or a label whose p is just below p* -- and in a stream
    whose true label changes at every frame (the previous command is then always wrong)."""
    alpha, margin = 0.1, 0.3  # p = Phi(1.2) = 0.885 for the true label
    if case == "runner_up":  # previous = the wrong side; the truth is certifiable
        bad, runs = _stream_violations([margin] * RUNS, lambda i, last: "neg", mode=mode, alpha=alpha,
                                       threshold_of=lambda m: 0.0)
    elif case == "just_below_p_star":  # previous = the true label, but its radius is just below the threshold
        bad, runs = _stream_violations([margin] * RUNS, lambda i, last: "pos", mode=mode, alpha=alpha,
                                       threshold_of=lambda m: abs(m) * 1.02)
    else:  # the truth alternates; previous = whatever was certified last
        bad, runs = _stream_violations([margin if i % 2 else -margin for i in range(RUNS)],
                                       lambda i, last: last, mode=mode, alpha=alpha,
                                       threshold_of=lambda m: abs(m) * 1.02)
    assert bad <= max_violations(alpha, runs), f"{bad}/{runs} false certificates at alpha={alpha}"


def test_issue16_the_soundness_test_catches_retests_that_each_spend_the_full_alpha():
    """DELIBERATELY WRONG scheme, for power: when the previous label fails, test it again on
    fresh samples at the full alpha, up to four times (no union bound). The check used above
    must reject it, so passing it means something."""
    alpha, margin, runs = 0.1, 0.3, 1500
    base = LinearBase(margin)

    def retest_at_full_alpha() -> bool:
        return any(violates(smooth_certify(base, base.point(), sigma=SIGMA, alpha=alpha, n0=10, n_max=400,
                                           radius_threshold=margin * 1.02, batch_size=500), margin)
                   for _ in range(4))

    wrong = sum(retest_at_full_alpha() for _ in range(runs))
    assert wrong > max_violations(alpha, runs), "the soundness check has no power against spending alpha twice"


def test_issue16_a_right_previous_label_spends_no_selection_samples():
    base = LinearBase(margin=50.0)  # p ~= 1
    kw = dict(sigma=SIGMA, alpha=0.001, n0=32, n_max=2000, mode="sequential", radius_threshold=0.25, batch_size=256)
    cold, warm = smooth_certify(base, base.point(), **kw), smooth_certify(base, base.point(), previous="pos", **kw)
    assert cold.certified and (cold.selection, cold.n_selection) == ("samples", 32)
    assert warm.certified and (warm.selection, warm.n_selection, warm.previous) == ("previous", 0, "pos")
    assert warm.n_used == warm.n_estimation < cold.n_used
    assert warm.test_alpha == pytest.approx(certify.PREVIOUS_SHARE * 0.001) and cold.test_alpha == 0.001


def test_issue16_a_wrong_previous_label_hands_its_samples_to_a_second_test_at_the_rest_of_alpha():
    base = LinearBase(margin=50.0)
    cert = smooth_certify(base, base.point(), sigma=SIGMA, alpha=0.001, n0=32, n_max=2000, mode="sequential",
                          radius_threshold=0.25, batch_size=256, previous="neg")
    assert cert.certified and cert.label == "pos" and cert.selection == "samples" and cert.previous == "neg"
    assert cert.n_selection == sum(cert.selection_counts.values()) == cert.selection_counts["pos"]
    assert cert.n_used == cert.n_selection + cert.n_estimation
    assert cert.test_alpha == pytest.approx(0.001 - certify.PREVIOUS_SHARE * 0.001)
    assert cert.to_dict()["previous"] == "neg"


def test_issue16_a_previous_label_that_fails_and_stays_on_top_is_not_tested_twice():
    base = LinearBase(margin=0.1)  # p = 0.655: "pos" is on top but far from a 0.25 radius
    cert = smooth_certify(base, base.point(), sigma=SIGMA, alpha=0.001, n0=32, n_max=500, mode="sequential",
                          radius_threshold=0.25, batch_size=256, previous="pos")
    assert not cert.certified and cert.selection == "previous" and cert.n_used == cert.n_estimation


@settings(max_examples=150, deadline=None)
@given(n0=st.integers(1, 300), n_max=st.integers(1, 300), batch_size=st.integers(1, 64),
       alpha=st.sampled_from([1e-9, 1e-3, 0.5]), mode=st.sampled_from(["fixed", "sequential"]),
       previous=st.sampled_from([None, "a", "b", "c"]), p_a=st.floats(0.0, 1.0),
       threshold=st.sampled_from([0.0, 0.05, 0.5, float("inf")]), seed=st.integers(0, 2**32 - 1))
def test_a_decision_evaluates_the_base_on_at_most_n_max_plus_max_n0_n_max_samples(n0, n_max, batch_size, alpha, mode,
                                                                                 previous, p_a, threshold, seed):
    """Every sampling loop is bounded by the budget, whatever the parameters and the previous
    label: each test draws at most n_max samples, and a decision runs at most two of them (the
    previous label's test, then a second hypothesis) or n0 selection samples and one test. The
    samples counted are those the base was really given, and the certificate reports them all."""
    rng = np.random.default_rng(seed)
    given_samples = []

    def base(batch):
        given_samples.append(len(batch))
        return list(rng.choice(["a", "b", "c"], size=len(batch), p=[p_a, (1 - p_a) / 2, (1 - p_a) / 2]))

    cert = smooth_certify(base, np.full(3, 0.5), sigma=0.25, alpha=alpha, n0=n0, n_max=n_max, batch_size=batch_size,
                          mode=mode, radius_threshold={"a": threshold, "b": 0.05, "c": float("inf")},
                          previous=previous, seed=seed)
    assert sum(given_samples) == cert.n_used <= n_max + max(n0, n_max)
    assert max(given_samples, default=0) <= batch_size
    assert cert.n_estimation <= n_max
