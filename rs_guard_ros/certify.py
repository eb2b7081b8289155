"""Statistics of randomized-smoothing certificates: bounds, radius, planning, tests.

numpy/scipy only (no torch, no ROS). Notation of DESIGN.md §1 and of Cohen, Rosenfeld
and Kolter, "Certified Adversarial Robustness via Randomized Smoothing" (ICML 2019):
k of n noisy samples agree with the selected label; p_lower is the one-sided
Clopper–Pearson bound at level alpha; eps_O is the oracle's error bound; the certified
ℓ2 radius is R = sigma * Phi^-1(p_lower - eps_O) (Cohen et al., Theorem 1 with
p_B = 1 - p_A).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Mapping

import numpy as np
from scipy.stats import beta, binom, binomtest, norm


def check_probability(value: float, name: str) -> float:
    """Return `value` as a float strictly inside (0, 1); else ValueError naming it."""
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return value


def check_positive(value: float, name: str) -> float:
    """Return `value` as a finite float > 0; else ValueError naming it."""
    value = float(value)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def check_oracle_error(value: float) -> float:
    """Return the oracle error bound eps_O as a float in [0, 0.5)."""
    value = float(value)
    if not 0.0 <= value < 0.5:
        raise ValueError(f"oracle_error must be in [0, 0.5), got {value!r}")
    return value


def _check_counts(k: int, n: int) -> None:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    if not 0 <= k <= n:
        raise ValueError(f"k must be in [0, n={n}], got {k!r}")


def cp_lower(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper–Pearson lower bound of k/n at level alpha: B(alpha; k, n-k+1)."""
    _check_counts(k, n)
    alpha = check_probability(alpha, "alpha")
    if k == 0:
        return 0.0
    if k == n:
        return alpha ** (1.0 / n)  # closed form of B(alpha; n, 1), exact in floating point
    return float(beta.ppf(alpha, k, n - k + 1))


def cp_upper(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper–Pearson upper bound of k/n at level alpha: B(1-alpha; k+1, n-k)."""
    _check_counts(k, n)
    alpha = check_probability(alpha, "alpha")
    if k == n:
        return 1.0
    if k == 0:
        return 1.0 - alpha ** (1.0 / n)
    return float(beta.ppf(1.0 - alpha, k + 1, n - k))


def certified_radius(p_lower: float, sigma: float, oracle_error: float = 0.0) -> float:
    """R = sigma * Phi^-1(p_lower - eps_O); a value <= 0 means "abstain"."""
    sigma = check_positive(sigma, "sigma")
    p = float(p_lower) - check_oracle_error(oracle_error)
    if math.isnan(p):
        raise ValueError(f"p_lower must be a number, got {p_lower!r}")
    return sigma * float(norm.ppf(min(max(p, 0.0), 1.0)))


def p_required(radius: float, sigma: float) -> float:
    """p* = Phi(R*/sigma): the smoothed probability needed to certify radius R*."""
    if not (math.isfinite(radius) and radius >= 0.0):
        raise ValueError(f"radius must be a finite number >= 0, got {radius!r}")
    return float(norm.cdf(radius / check_positive(sigma, "sigma")))


def clears_threshold(p_lower: float, sigma: float, radius_threshold: float, oracle_error: float) -> bool:
    """True when p_lower certifies a radius > 0 and >= radius_threshold (DESIGN §1, the gate)."""
    radius = certified_radius(p_lower, sigma, oracle_error)
    return radius > 0.0 and radius >= radius_threshold


def samples_needed(radius: float, sigma: float, alpha: float, oracle_error: float = 0.0) -> int:
    """n_min = ceil(ln alpha / ln(p* + eps_O)): the fewest samples that can certify `radius`.

    With all n samples agreeing, p_lower = alpha^(1/n) (DESIGN §1); no smaller n can
    reach p* + eps_O. Raises ValueError when no sample count can.
    """
    alpha = check_probability(alpha, "alpha")
    eps = check_oracle_error(oracle_error)
    shortfall = float(norm.sf(radius / check_positive(sigma, "sigma"))) - eps  # 1 - (p* + eps), exactly
    if shortfall <= 0.0 or p_required(radius, sigma) + eps >= 1.0:
        raise ValueError(f"radius {radius} is not certifiable at sigma={sigma} with oracle_error={eps}")
    n = max(1, math.ceil(math.log(alpha) / math.log1p(-shortfall)))
    while not clears_threshold(alpha ** (1.0 / n), sigma, radius, eps):  # float ties at the boundary
        n += 1
    return n


def max_certifiable_radius(n: int, sigma: float, alpha: float, oracle_error: float = 0.0) -> float:
    """sigma * Phi^-1(alpha^(1/n) - eps_O): the largest radius n samples can ever certify."""
    return certified_radius(cp_lower(n, n, alpha), sigma, oracle_error)


@dataclass(frozen=True)
class Outlook:
    """Exact prediction of a fixed-n certificate for a base whose true probability is p."""

    n: int
    p_true: float
    certify_probability: float  # P[R >= threshold]
    expected_radius: float  # E[R], counting abstentions as radius 0


def outlook(p_true: float, n: int, sigma: float, alpha: float, radius_threshold: float = 0.0,
            oracle_error: float = 0.0) -> Outlook:
    """Exact binomial computation of certification probability and expected radius.

    K ~ Binomial(n, p_true); the certificate is a deterministic function of K, so both
    figures are finite sums over k (no approximation, no simulation).
    """
    if not 0.0 <= p_true <= 1.0:
        raise ValueError(f"p_true must be in [0, 1], got {p_true!r}")
    check_probability(alpha, "alpha")
    k = np.arange(n + 1)
    lower = np.where(k == n, alpha ** (1.0 / n), beta.ppf(alpha, np.maximum(k, 1), n - k + 1))
    lower = np.where(k == 0, 0.0, lower)
    p = np.clip(lower - check_oracle_error(oracle_error), 0.0, 1.0)
    radius = check_positive(sigma, "sigma") * norm.ppf(p)
    certifies = (radius > 0.0) & (radius >= radius_threshold)
    pmf = binom.pmf(k, n, p_true)
    return Outlook(n, float(p_true), float(pmf[certifies].sum()),
                   float((pmf * np.where(radius > 0.0, radius, 0.0)).sum()))


def approx_radius_ratio(alpha: float, n: int) -> float:
    """Approximation (Seferis et al., ECAI 2024): mean radius at n samples over n -> inf.

    r(a, n) ~= 1 - 1.64 * z_a / sqrt(n) with z_a = Phi^-1(1 - a/2). An analytic scaling
    law, shown next to the exact numbers of `outlook`, never used for a certificate.
    """
    return 1.0 - 1.64 * float(norm.ppf(1.0 - check_probability(alpha, "alpha") / 2.0)) / math.sqrt(n)


def approx_accuracy_drop(alpha: float, n: int) -> float:
    """Approximation (Seferis et al., ECAI 2024): certified-accuracy drop <= z_a / sqrt(n)."""
    return float(norm.ppf(1.0 - check_probability(alpha, "alpha") / 2.0)) / math.sqrt(n)


def top_label(counts: Mapping[Hashable, int]) -> Hashable | None:
    """The most frequent label (ties broken by first occurrence); None for no counts."""
    return max(counts, key=counts.get) if counts else None


def certify_counts(selection: Mapping[Hashable, int], estimation: Mapping[Hashable, int], *,
                   sigma: float, alpha: float, oracle_error: float = 0.0) -> tuple[Hashable | None, float, float]:
    """Cohen et al.'s CERTIFY on counts: (label, p_lower, radius) for the top selection label.

    The label is picked on the selection counts and bounded on the separate estimation
    counts; a radius <= 0 (or label None = UNKNOWN) means abstain.
    """
    label = top_label(selection)
    n = sum(estimation.values())
    if label is None or n == 0:
        return None, 0.0, 0.0
    p_low = cp_lower(estimation.get(label, 0), n, alpha)
    return label, p_low, certified_radius(p_low, sigma, oracle_error)


def predict_counts(counts: Mapping[Hashable, int], alpha: float) -> Hashable | None:
    """Cohen et al.'s PREDICT on counts: the top label, or None (abstain) when the top two
    counts are not significantly different under a two-sided binomial test at level alpha."""
    alpha = check_probability(alpha, "alpha")
    ranked = sorted(counts.values(), reverse=True) + [0, 0]
    n_a, n_b = ranked[0], ranked[1]
    if n_a == 0 or binomtest(n_a, n_a + n_b, 0.5).pvalue > alpha:
        return None
    return top_label(counts)


@dataclass(frozen=True)
class Look:
    """One interim analysis of the sequential test: after `n` samples, spend `alpha`."""

    n: int
    alpha: float


def sequential_looks(radius_threshold: float, sigma: float, alpha: float, n_max: int,
                     oracle_error: float = 0.0) -> list[Look]:
    """Looks at n_1 * 2^j (capped at n_max) with alpha split by a union bound.

    Look j spends alpha / 2^j and the last look what is left, so the looks' levels sum
    to alpha and P[any false certification] <= alpha whatever the dependence between
    looks (Bonferroni). n_1 is the fewest samples that can certify the threshold at
    alpha / 2 when all agree, so a consistent model stops at ~n_min * (1 + ln 2 / ln(1/alpha)).
    Returns [] when the threshold cannot be reached within n_max.
    """
    n_first = samples_needed(radius_threshold, sigma, alpha / 2.0, oracle_error)
    looks: list[Look] = []
    n, spent = n_first, 0.0
    while n < n_max:
        looks.append(Look(n, alpha / 2.0 ** (len(looks) + 1)))
        spent += looks[-1].alpha
        n *= 2
    last = Look(n_max, alpha - spent)
    if clears_threshold(cp_lower(n_max, n_max, last.alpha), sigma, radius_threshold, oracle_error):
        looks.append(last)
    return looks


def reachable(k: int, n: int, final: Look, sigma: float, radius_threshold: float, oracle_error: float) -> bool:
    """Could the final look still certify if every remaining sample agreed? (futility check)"""
    k_best = k + (final.n - n)
    return clears_threshold(cp_lower(k_best, final.n, final.alpha), sigma, radius_threshold, oracle_error)
