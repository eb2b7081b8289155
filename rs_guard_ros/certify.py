"""Statistics of randomized-smoothing certificates: bounds, radius, planning, sequential test.

numpy/scipy only (no torch, no ROS). Notation of Cohen, Rosenfeld and Kolter,
"Certified Adversarial Robustness via Randomized Smoothing" (ICML 2019) and of
docs/guarantee.md: k of n noisy samples agree with the selected label; p_lower is the
one-sided Clopper–Pearson lower bound at level alpha; eps_O is the oracle's error bound;
the certified ℓ2 radius is R = sigma * Phi^-1(p_lower - eps_O) (Cohen et al., Theorem 1
with p_B = 1 - p_A). A label is published only when R > 0 and R >= its threshold R*
(`clears_threshold`, the one home of that rule).

Every function runs in time and memory independent of how many samples a radius would
need: closed forms in log space and bisection, never a loop or an array over n.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Hashable, Mapping

import numpy as np
from scipy.stats import beta, binom, norm

UNKNOWN_NAME = "UNKNOWN"  # how the UNKNOWN label (None) is written in JSON, tables and label files
MAX_SAMPLES = 10_000_000  # the largest sample budget anything here plans or evaluates (smoothing.n_max's range)
# Sequential test (see `sequential_looks`): shares of alpha for the first look and for the
# doubling looks between it and the final look at n_max, which gets the rest.
FIRST_LOOK_SHARE = 0.18
MIDDLE_LOOKS_SHARE = 0.02
# Selection by the previous decision (smoothing.smooth_certify's `previous`): the share of alpha
# for testing the previous command first; a second test, if needed, gets the rest. Chosen by
# measurement (benchmarks/bench_selection.py): at 0.99 the first test is today's test to within
# a count, so a confirmed command costs n_min(0.18 * 0.99 alpha) samples -- 50 for the demo's
# forward, 16 for its turns -- and a change of command pays a second test at 0.01 alpha.
PREVIOUS_SHARE = 0.99
_OUTLOOK_TAIL = 1e-13  # binomial mass left out of the expected-radius sum, per tail


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


def check_radius(value: float, name: str = "radius") -> float:
    """Return a radius (threshold) as a finite float >= 0; else ValueError naming it."""
    value = float(value)
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def check_count(value: object, name: str, high: int | None = None) -> int:
    """Return an integer >= 1 (and <= `high`); bools, floats and other types raise ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if value < 1 or (high is not None and value > high):
        raise ValueError(f"{name} must be an integer in [1, {high if high is not None else 'inf'}], got {value!r}")
    return int(value)


def label_name(label: Hashable | None) -> str:
    """A label as text: None (UNKNOWN) is written UNKNOWN_NAME."""
    return UNKNOWN_NAME if label is None else str(label)


def _check_counts(k: int, n: int) -> None:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    if not 0 <= k <= n:
        raise ValueError(f"k must be in [0, n={n}], got {k!r}")


def cp_lower(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper–Pearson lower bound of k/n at level alpha: B(alpha; k, n-k+1).

    P[cp_lower(K, n, alpha) > p] <= alpha for K ~ Binomial(n, p), every p.
    """
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
    return float(norm.cdf(check_radius(radius) / check_positive(sigma, "sigma")))


def clears_threshold(p_lower: float, sigma: float, radius_threshold: float, oracle_error: float) -> bool:
    """The gate rule: p_lower certifies a radius R > 0 with R >= radius_threshold."""
    radius = certified_radius(p_lower, sigma, oracle_error)
    return radius > 0.0 and radius >= radius_threshold


def _first_true(pred: Callable[[int], bool], lo: int, hi: int) -> int | None:
    """The smallest n in [lo, hi] with pred(n), for a pred monotone in n; None if pred(hi) is false.

    Bisection: at most log2(hi - lo) + 1 calls of pred.
    """
    if not pred(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


def samples_needed(radius: float, sigma: float, alpha: float, oracle_error: float = 0.0) -> int:
    """n_min: the fewest samples that can ever certify `radius` (all n agreeing).

    With all n samples agreeing p_lower = alpha^(1/n), so n_min = ceil(ln alpha / ln(p* + eps_O)).
    ln(p* + eps_O) is computed as log1p(-(Phi(-R/sigma) - eps_O)), which keeps its precision
    when p* is within 1e-300 of 1; where n_min < 2^53 the result is then moved, by
    bisection over a bracket found by doubling, to the exact boundary of the
    floating-point rule `clears_threshold` the gate applies. Raises ValueError when no
    number of samples representable in floating point can certify the radius.
    """
    alpha = check_probability(alpha, "alpha")
    eps = check_oracle_error(oracle_error)
    sigma = check_positive(sigma, "sigma")
    radius = check_radius(radius)
    shortfall = float(norm.sf(radius / sigma)) - eps  # 1 - (p* + eps_O), without cancellation
    estimate = math.log(alpha) / math.log1p(-shortfall) if shortfall > 0.0 else math.inf
    if not math.isfinite(estimate):
        raise ValueError(f"radius {radius} is not certifiable at sigma={sigma} with oracle_error={eps}: "
                         f"p* + eps_O = Phi(R/sigma) + eps_O is 1 to double precision")
    n = max(1, math.ceil(estimate))
    if n >= 2 ** 53:  # beyond float resolution of alpha^(1/n): the closed form is the answer
        return n

    def certifies(m: int) -> bool:
        return clears_threshold(alpha ** (1.0 / m), sigma, radius, eps)

    # Bracket the float boundary by doubling steps (at most ~53), then bisect: lo fails, hi certifies.
    step = 1
    if certifies(n):
        lo, hi = n - 1, n
        while lo >= 1 and certifies(lo):
            hi, lo, step = lo, lo - step, 2 * step
        lo = max(lo, 0)
    else:
        lo, hi = n, n + 1
        while not certifies(hi):
            step *= 2
            lo, hi = hi, n + step
            if hi >= 2 ** 53:
                return n
    return _first_true(certifies, lo + 1, hi)


def can_certify(radius: float, sigma: float, alpha: float, n_max: int, oracle_error: float = 0.0) -> bool:
    """Whether n_max samples can certify `radius` at all (all of them agreeing)."""
    return clears_threshold(cp_lower(n_max, n_max, alpha), sigma, radius, oracle_error)


def max_certifiable_radius(n: int, sigma: float, alpha: float, oracle_error: float = 0.0) -> float:
    """sigma * Phi^-1(alpha^(1/n) - eps_O): the largest radius n samples can ever certify."""
    return certified_radius(cp_lower(n, n, alpha), sigma, oracle_error)


def min_certifying_count(n: int, sigma: float, alpha: float, radius_threshold: float = 0.0,
                         oracle_error: float = 0.0) -> int | None:
    """The fewest agreeing samples k of n whose bound clears the threshold (None: no k can).

    The bound, and so the rule, is monotone in k: bisection, about log2(n) bounds.
    """
    return _first_true(lambda k: clears_threshold(cp_lower(k, n, alpha), sigma, radius_threshold, oracle_error),
                       0, n)


@dataclass(frozen=True)
class Outlook:
    """Exact prediction of a fixed-n certificate for a base whose true probability is p."""

    n: int
    p_true: float
    certify_probability: float  # P[R > 0 and R >= threshold]
    expected_radius: float  # E[R], counting abstentions as radius 0


def outlook(p_true: float, n: int, sigma: float, alpha: float, radius_threshold: float = 0.0,
            oracle_error: float = 0.0) -> Outlook:
    """Certification probability and expected radius of a fixed-n certificate, exactly.

    K ~ Binomial(n, p_true) and the certificate is a monotone function of K, so
    P[certify] = P[K >= k_cert] (a binomial tail). E[R] sums the radius over the k that
    carry all but 2e-13 of the binomial mass (at most ~16 standard deviations wide), so
    memory and time do not grow with n beyond that window.
    """
    if not 0.0 <= p_true <= 1.0:
        raise ValueError(f"p_true must be in [0, 1], got {p_true!r}")
    n = check_count(n, "n", MAX_SAMPLES)
    alpha = check_probability(alpha, "alpha")
    eps, sigma = check_oracle_error(oracle_error), check_positive(sigma, "sigma")
    k_cert = min_certifying_count(n, sigma, alpha, check_radius(radius_threshold, "radius_threshold"), eps)
    prob = 0.0 if k_cert is None else float(binom.sf(k_cert - 1, n, p_true))
    k_pos = min_certifying_count(n, sigma, alpha, 0.0, eps)  # first k with R > 0
    expected = 0.0
    if k_pos is not None:
        low = max(k_pos, int(binom.ppf(_OUTLOOK_TAIL, n, p_true)))
        high = min(n, int(binom.isf(_OUTLOOK_TAIL, n, p_true)))
        if low <= high:
            k = np.arange(low, high + 1)
            bound = np.where(k == n, alpha ** (1.0 / n), beta.ppf(alpha, k, n - k + 1))
            radius = sigma * norm.ppf(np.clip(bound - eps, 0.0, 1.0))
            expected = float(np.sum(binom.pmf(k, n, p_true) * np.maximum(radius, 0.0)))
    return Outlook(n, float(p_true), min(max(prob, 0.0), 1.0), max(expected, 0.0))


def approx_radius_ratio(alpha: float, n: int) -> float:
    """Approximation (Seferis et al., ECAI 2024): mean radius at n samples over n -> inf.

    r(a, n) ~= 1 - 1.64 * z_a / sqrt(n) with z_a = Phi^-1(1 - a/2), clipped to [0, 1]. An
    analytic scaling law, shown next to the exact numbers of `outlook`, never used for a
    certificate.
    """
    z = float(norm.ppf(1.0 - check_probability(alpha, "alpha") / 2.0))
    return min(max(1.0 - 1.64 * z / math.sqrt(check_count(n, "n")), 0.0), 1.0)


def top_label(counts: Mapping[Hashable, int]) -> Hashable | None:
    """The most frequent label (ties broken by first occurrence); None for no counts."""
    return max(counts, key=counts.get) if counts else None


@dataclass(frozen=True)
class Look:
    """One interim analysis of the sequential test: after `n` samples, a bound at level `alpha`."""

    n: int
    alpha: float


@functools.lru_cache(maxsize=256)
def sequential_looks(radius_threshold: float, sigma: float, alpha: float, n_max: int,
                     oracle_error: float = 0.0) -> tuple[Look, ...]:
    """The looks of the sequential test "is p >= p* = Phi(R*/sigma) + eps_O?", at most n_max samples.

    With probability at least 1 - alpha, no look certifies a label whose smoothed
    probability is below p* and no reported bound exceeds the true probability: look j
    uses a Clopper–Pearson bound at level alpha_j and sum(alpha_j) = alpha (union bound,
    valid whatever the dependence between looks).

    Where alpha goes (chosen so that the test loses little power against Cohen's fixed
    n_max, measured in benchmarks/bench_certify.py):
      - first look, FIRST_LOOK_SHARE of alpha, at n_1 = the fewest samples that can
        certify at that level: a consistent base stops here, at
        n_min * (1 + ln(1/0.18) / ln(1/alpha)) samples (at most 1.25 n_min at alpha = 1e-3);
      - looks at n_1 * 2^j < n_max share MIDDLE_LOOKS_SHARE of alpha: a base well above
        p* stops early at little cost;
      - the final look at n_max gets the rest (80 %): near p*, where power is decided, the
        test is almost fixed-mode CERTIFY.
    When n_1 >= n_max there is one look, at n_max with all of alpha. Returns () when
    n_max samples cannot certify the threshold at all.
    """
    n_max = check_count(n_max, "n_max", MAX_SAMPLES)
    if not can_certify(radius_threshold, sigma, alpha, n_max, oracle_error):
        return ()
    n_first = samples_needed(radius_threshold, sigma, FIRST_LOOK_SHARE * alpha, oracle_error)
    if n_first >= n_max:
        return (Look(n_max, alpha),)
    middle = [n_first * 2 ** j for j in range(1, 64) if n_first * 2 ** j < n_max]
    first = FIRST_LOOK_SHARE * alpha
    share = MIDDLE_LOOKS_SHARE * alpha / len(middle) if middle else 0.0
    final = alpha - first - share * len(middle)  # the remainder, so the levels sum to alpha
    if math.fsum([first, *[share] * len(middle), final]) > alpha:  # never over alpha by a rounding
        final = math.nextafter(final, 0.0)
    return (Look(n_first, first), *(Look(n, share) for n in middle), Look(n_max, final))


def reachable(k: int, n: int, final: Look, sigma: float, radius_threshold: float, oracle_error: float) -> bool:
    """Could the final look still certify if every remaining sample agreed? (futility check)"""
    k_best = k + (final.n - n)
    return clears_threshold(cp_lower(k_best, final.n, final.alpha), sigma, radius_threshold, oracle_error)


def futile(k: int, n: int, looks: tuple[Look, ...], sigma: float, alpha: float, radius_threshold: float,
           oracle_error: float) -> bool:
    """Stop sampling and abstain after k of n agreeing samples: the final look cannot certify
    any more, or the upper bound at level alpha shows p < p* + eps_O. Costs no alpha:
    abstaining is always safe."""
    p_star = p_required(radius_threshold, sigma) + oracle_error
    return (not reachable(k, n, looks[-1], sigma, radius_threshold, oracle_error)
            or cp_upper(k, n, alpha) < p_star)


@dataclass(frozen=True)
class SequentialOutlook:
    """Exact prediction of the sequential test for a base whose true probability is p."""

    p_true: float
    certify_probability: float
    expected_samples: float  # estimation samples, selection (n0) not included
    median_samples: int


def _binomial_window(n: int, p: float) -> tuple[int, np.ndarray]:
    """(first k, pmf) of Binomial(n, p) over the k carrying all but 2e-13 of the mass."""
    low, high = int(binom.ppf(_OUTLOOK_TAIL, n, p)), int(binom.isf(_OUTLOOK_TAIL, n, p))
    low, high = max(0, min(low, n)), max(0, min(max(high, low), n))
    return low, binom.pmf(np.arange(low, high + 1), n, p)


def sequential_outlook(p_true: float, radius_threshold: float, sigma: float, alpha: float, n_max: int,
                       oracle_error: float = 0.0) -> SequentialOutlook:
    """Certification probability and sample count of `sequential_looks` for a base of true p, exactly.

    Dynamic programming over the looks: the distribution of agreeing samples among the
    paths still running is convolved with the binomial increment to the next look, then
    split into certified / stopped (`futile`) / continuing, all by thresholds on k found
    by bisection. Each distribution is kept on the window carrying all but 2e-13 of its
    mass, so work and memory grow with the binomial spread, not with n.
    """
    from scipy.signal import fftconvolve

    if not 0.0 <= p_true <= 1.0:
        raise ValueError(f"p_true must be in [0, 1], got {p_true!r}")
    looks = sequential_looks(radius_threshold, sigma, alpha, n_max, oracle_error)
    if not looks:
        return SequentialOutlook(float(p_true), 0.0, 0.0, 0)
    start, alive = 0, np.ones(1)  # P[K_n = start + i, still sampling]
    n, certified, expected, stopped_at = 0, 0.0, 0.0, []
    for look in looks:
        inc_start, inc = _binomial_window(look.n - n, p_true)
        alive = np.clip(fftconvolve(alive, inc), 0.0, None)
        start, n = start + inc_start, look.n
        k = np.arange(start, start + len(alive))
        c = min_certifying_count(n, sigma, look.alpha, radius_threshold, oracle_error)
        win = k >= c if c is not None else np.zeros(len(k), bool)
        last = look is looks[-1]
        stop = np.ones(len(k), bool) if last else win | _futile_mask(k, n, looks, sigma, alpha, radius_threshold,
                                                                       oracle_error)
        certified += float(alive[win].sum())
        mass = float(alive[stop].sum())
        expected += mass * n
        stopped_at.append((n, mass))
        alive = np.where(stop, 0.0, alive)
    total, median = 0.0, looks[-1].n
    for n_stop, mass in stopped_at:
        total += mass
        if total >= 0.5:
            median = n_stop
            break
    return SequentialOutlook(float(p_true), min(max(certified, 0.0), 1.0), min(expected, looks[-1].n), median)


def _futile_mask(k: np.ndarray, n: int, looks: tuple[Look, ...], sigma: float, alpha: float,
                 radius_threshold: float, oracle_error: float) -> np.ndarray:
    """`futile` over an array of counts k: both of its rules are monotone in k, so each is a
    single cut found by bisection."""
    final = looks[-1]
    c_final = min_certifying_count(final.n, sigma, final.alpha, radius_threshold, oracle_error)
    p_star = p_required(radius_threshold, sigma) + oracle_error
    k_up = _first_true(lambda j: cp_upper(j, n, alpha) >= p_star, 0, n)
    cut = max(c_final - (final.n - n), k_up if k_up is not None else n + 1)
    return k < cut


# ----------------------------------------------------------------------------- planning the selection paths
SELECTION_PATHS = ("previous", "changed", "samples")  # how a decision can go (smoothing.smooth_certify)


@dataclass(frozen=True)
class PathOutlook:
    """Exact prediction of one path a decision can take (docs/guarantee.md, "Selection by the
    previous decision"), for a base whose true probability of the tested command is p:

    previous: the standing command is tested first, at previous_share * alpha, with no
              selection samples, and confirmed;
    changed:  the standing command (another one, p = 0) fails its test, whose samples select
              this command, tested on fresh samples at the remaining alpha;
    samples:  no standing command: n0 selection samples, then the test at alpha (Cohen's CERTIFY).
    Sample counts include the selection samples (n_selection)."""

    path: str
    p_true: float
    test_alpha: float  # the level of the test that decides
    n_selection: int  # samples that chose the label (0, test 1's on a change, n0)
    n_min: int  # the fewest estimation samples that can certify at test_alpha (all agreeing)
    first_look: int  # estimation samples after which a consistent model certifies (fixed mode: n_max)
    expected_samples: float
    median_samples: int
    certify_probability: float


def mode_outlook(p_true: float, radius_threshold: float, sigma: float, alpha: float, n_max: int,
                 oracle_error: float = 0.0, mode: str = "sequential") -> SequentialOutlook:
    """One test of the gate ("sequential": `sequential_outlook`; "fixed": Cohen's n_max samples,
    `outlook`), as a SequentialOutlook (estimation samples only)."""
    if mode == "sequential":
        return sequential_outlook(p_true, radius_threshold, sigma, alpha, n_max, oracle_error)
    if mode != "fixed":
        raise ValueError(f"mode must be 'fixed' or 'sequential', got {mode!r}")
    prob = outlook(p_true, n_max, sigma, alpha, radius_threshold, oracle_error).certify_probability
    return SequentialOutlook(float(p_true), prob, float(n_max), n_max)


def first_look_samples(radius_threshold: float, sigma: float, alpha: float, n_max: int, oracle_error: float = 0.0,
                       mode: str = "sequential") -> int:
    """The estimation samples after which a test at `alpha` certifies `radius_threshold` for a
    consistent model (p = 1): the sequential test's first look, n_max in fixed mode or where the
    test has no look."""
    looks = sequential_looks(radius_threshold, sigma, alpha, n_max, oracle_error) if mode == "sequential" else ()
    return looks[0].n if looks else n_max


def selection_paths(p_true: float, radius_threshold: float, sigma: float, alpha: float, n0: int, n_max: int,
                    oracle_error: float = 0.0, mode: str = "sequential", previous_share: float | None = None,
                    previous_threshold: float | None = None) -> dict[str, PathOutlook]:
    """Every SELECTION_PATHS path of a decision that tests a command of threshold
    `radius_threshold` and true probability p, exactly (`mode_outlook` per test). On "changed"
    the standing command, of threshold `previous_threshold` (default: the same), has p = 0: its
    test stops after a number of samples that is not random, so the counts simply add up."""
    share = check_probability(PREVIOUS_SHARE if previous_share is None else previous_share, "previous_share")
    alpha, n0 = check_probability(alpha, "alpha"), check_count(n0, "n0", MAX_SAMPLES)
    first_alpha = share * alpha
    levels = {"previous": first_alpha, "changed": alpha - first_alpha, "samples": alpha}
    prior = radius_threshold if previous_threshold is None else previous_threshold
    failed = mode_outlook(0.0, prior, sigma, first_alpha, n_max, oracle_error, mode)
    selection = {"previous": 0, "changed": failed.median_samples, "samples": n0}
    out = {}
    for path in SELECTION_PATHS:
        level, spent = levels[path], selection[path]
        test = mode_outlook(p_true, radius_threshold, sigma, level, n_max, oracle_error, mode)
        if path == "changed" and not spent:  # the standing command's test draws nothing: nothing selects
            test = SequentialOutlook(float(p_true), 0.0, 0.0, 0)
        out[path] = PathOutlook(path, float(p_true), level, spent, samples_needed(radius_threshold, sigma, level,
                                                                                  oracle_error),
                                first_look_samples(radius_threshold, sigma, level, n_max, oracle_error, mode),
                                spent + test.expected_samples, spent + test.median_samples,
                                test.certify_probability)
    return out


def paths_table(by_p: Mapping[float, Mapping[str, PathOutlook]]) -> dict[str, dict]:
    """`selection_paths` at several true p ({p: paths}) as one JSON-ready dict per path: its
    level and counts, then per p ("p=0.99") the expected and median samples and P[certify]."""
    table: dict[str, dict] = {}
    for path in SELECTION_PATHS:
        one = next(iter(by_p.values()))[path]
        table[path] = {"test_alpha": one.test_alpha, "n_selection": one.n_selection, "n_min": one.n_min,
                       "first_look": one.first_look, "samples_first_look": one.n_selection + one.first_look,
                       **{f"p={p}": {"expected_samples": paths[path].expected_samples,
                                     "median_samples": paths[path].median_samples,
                                     "certify_probability": paths[path].certify_probability}
                          for p, paths in by_p.items()}}
    return table
