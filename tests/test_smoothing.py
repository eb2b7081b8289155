"""Soundness and efficiency of smooth_certify against analytic ground truth.

A linear base classifier h(x) = [w.x + b > 0] with |w| = 1 under N(0, sigma^2 I) noise
has smoothed probability Phi(m / sigma) and true certified radius |m|, m = w.x + b
(Cohen et al. 2019, §3.1), so every certificate can be checked against the truth.
"""
from collections import Counter

import numpy as np
import pytest
import torch
from scipy.stats import binom, kstest

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
