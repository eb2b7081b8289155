"""Gaussian noise and the batched sampling loop that turns a base classifier into a Certificate.

Framework agnostic: a numpy input gives numpy batches to the base; a torch tensor input
gives batches on the tensor's device and in its dtype, with the noise generated there.
The structure follows Cohen et al.'s CERTIFY (code/core.py in locuslab/smoothing): n0
selection samples pick the label, separate samples bound its probability.
"""
from __future__ import annotations

import functools
import math
import secrets
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Hashable, Mapping, Sequence

import numpy as np

from . import certify

Base = Callable[[Any], Sequence[Hashable]]
MODES = ("fixed", "sequential")
NO_THRESHOLD = "no_threshold"  # the selected label has no radius threshold: it can never be published
THRESHOLD_UNREACHABLE = "threshold_unreachable"  # stopped early: no further samples could certify the threshold


@dataclass
class Certificate:
    """The outcome of one smoothed decision, with every setting it was made under."""

    label: Hashable | None
    certified: bool
    radius: float  # sigma * Phi^-1(p_lower - eps_O), 0 when that is not positive
    p_lower: float
    n_used: int  # every base evaluation, selection included
    counts: dict[Hashable, int]  # estimation samples of the test that decided
    selection_counts: dict[Hashable, int] = field(default_factory=dict)
    reason: str = ""
    mode: str = "fixed"
    sigma: float = 0.0
    alpha: float = 0.0  # the whole decision's false-certification probability
    bound_alpha: float = 0.0  # the level of the Clopper–Pearson bound p_lower (a look's share in sequential mode)
    radius_threshold: float = 0.0
    oracle_error: float = 0.0
    n0: int = 0
    n_max: int = 0
    seed: int | None = None  # set only when a fixed seed was requested (tests)
    selection: str = "samples"  # how the tested label was chosen: "previous" (the hint) or "samples"
    previous: Hashable | None = None  # the label the caller proposed (tested first), if any
    n_selection: int = 0  # samples that chose the label (n0, or a failed first test's samples)
    n_estimation: int = 0  # samples of the test that decided
    test_alpha: float = 0.0  # the level of the test that decided (alpha, or its share with `previous`)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; the UNKNOWN label (None) is written as "UNKNOWN", an infinite threshold as None."""
        out = asdict(self)
        out["label"] = certify.label_name(self.label)
        out["counts"] = {certify.label_name(k): v for k, v in self.counts.items()}
        out["selection_counts"] = {certify.label_name(k): v for k, v in self.selection_counts.items()}
        out["previous"] = None if self.previous is None else certify.label_name(self.previous)
        if not math.isfinite(self.radius_threshold):
            out["radius_threshold"] = None
        return out


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _numel(x: Any) -> int:
    return x.numel() if _is_torch(x) else x.size


def buffer_bytes(numel: int, itemsize: int, rows: int) -> int:
    """Bytes `NoiseSource` allocates for `rows` noisy copies of an input of `numel` elements
    of `itemsize` bytes: the float32 (float64) buffer the noise is drawn in, plus a copy in
    the input's own dtype when that is narrower."""
    wide = 8 if itemsize == 8 else 4
    return rows * numel * (wide + (itemsize if itemsize != wide else 0))


def max_rows(numel: int, itemsize: int, max_bytes: int) -> int:
    """The most noisy copies of an input of `numel` elements of `itemsize` bytes that `NoiseSource`
    can hold within `max_bytes` (0: not even one)."""
    return max_bytes // buffer_bytes(numel, itemsize, 1)


class NoiseSource:
    """Draws x + N(0, sigma^2 I) batches into reused buffers on x's device.

    The noise is always drawn, and added, in float32 (float64 for a float64 input): a
    low-precision Gaussian is not Gaussian (bfloat16 has a few hundred distinct values
    in the bulk), so no certificate would hold. For a float16/bfloat16 input the noisy
    sum is then rounded to x's dtype, which is a deterministic function applied after
    the noise and so part of the base classifier. Seeded from OS entropy unless a seed
    is given: an attacker who knows the noise can defeat the statistics, so fixed seeds
    are for tests only. The base must not keep a reference to a batch: the next batch
    overwrites it.
    """

    def __init__(self, x: Any, sigma: float, rows: int, seed: int | None, max_bytes: int | None = None):
        need = buffer_bytes(_numel(x), x.element_size() if _is_torch(x) else x.itemsize, rows)
        if max_bytes is not None and need > max_bytes:
            raise ValueError(f"{rows} noisy copies of x need {need / 2**20:.1f} MB, more than max_buffer_bytes "
                             f"({max_bytes / 2**20:.1f} MB): lower batch_size")
        self.sigma = sigma
        seed = secrets.randbits(63) if seed is None else seed
        if _is_torch(x):
            import torch

            wide = torch.float64 if x.dtype == torch.float64 else torch.float32
            self.x = x.to(wide)
            self._gen = torch.Generator(device=x.device).manual_seed(seed)
            self._buf = torch.empty((rows, *x.shape), dtype=wide, device=x.device)
            self._out = None if x.dtype == wide else torch.empty((rows, *x.shape), dtype=x.dtype, device=x.device)
        else:
            wide = np.float64 if x.dtype == np.float64 else np.float32
            self.x = x.astype(wide, copy=False)
            self._gen = np.random.default_rng(seed)
            self._buf = np.empty((rows, *x.shape), dtype=wide)
            self._out = None if x.dtype == wide else np.empty((rows, *x.shape), dtype=x.dtype)

    def batch(self, size: int) -> Any:
        """The next `size` noisy copies of x (a view of a reused buffer), in x's dtype."""
        buf = self._buf[:size]
        if _is_torch(buf):
            import torch

            torch.randn(buf.shape, generator=self._gen, out=buf)
            torch.add(self.x, buf, alpha=self.sigma, out=buf)  # x + sigma * eps in one pass
            return buf if self._out is None else self._out[:size].copy_(buf)
        self._gen.standard_normal(out=buf, dtype=buf.dtype)
        buf *= self.sigma
        buf += self.x
        if self._out is None:
            return buf
        out = self._out[:size]
        out[...] = buf
        return out


def _check_input(x: Any) -> Any:
    """x as a floating-point array or tensor (detached from autograd), finite and non-empty;
    else ValueError naming x. Integer images are refused, not rescaled: the noise scale
    sigma is in [0, 1] intensity units, and a silent /255 guess would change what is certified."""
    if _is_torch(x):
        import torch

        if not torch.is_floating_point(x):
            raise ValueError(f"x must be a floating-point tensor in [0, 1] units, got {x.dtype} "
                             "(convert integer images with x.float() / 255)")
        x = x.detach()
        empty, finite = x.numel() == 0, bool(torch.isfinite(x).all())
    else:
        x = np.asarray(x)
        if x.dtype.kind != "f":
            raise ValueError(f"x must be a floating-point array in [0, 1] units, got {x.dtype} "
                             "(convert integer images with x.astype(np.float32) / 255)")
        empty, finite = x.size == 0, bool(np.isfinite(x).all())
    if empty:
        raise ValueError("x must not be empty")
    if not finite:
        raise ValueError("x contains NaN or inf")
    return x


def add_counts(counts: Counter, base: Base, noise: NoiseSource, num: int, batch_size: int) -> Counter:
    """Evaluate the base on `num` more noisy samples, in batches, adding to `counts`."""
    done = 0
    while done < num:
        size = min(batch_size, num - done)
        labels = base(noise.batch(size))
        if len(labels) != size:
            raise ValueError(f"base returned {len(labels)} labels for a batch of {size}")
        counts.update(labels)
        done += size
    return counts


def _check_thresholds(radius_threshold: float | Mapping[Hashable, float]) -> float | dict[Hashable, float]:
    """A threshold (or a label -> threshold map) of finite numbers >= 0 or +inf; else ValueError."""
    def one(value: Any, name: str) -> float:
        value = float(value)
        if not (value >= 0.0):  # also catches NaN
            raise ValueError(f"{name} must be a number >= 0 (or inf), got {value!r}")
        return value

    if isinstance(radius_threshold, Mapping):
        return {label: one(v, f"radius_threshold[{label!r}]") for label, v in radius_threshold.items()}
    return one(radius_threshold, "radius_threshold")


def _threshold_for(radius_threshold: float | Mapping[Hashable, float], label: Hashable | None) -> float:
    """The radius the selected label must clear. With per-label thresholds, a label that
    has none can never be certified (infinite threshold): nothing is published by default."""
    if isinstance(radius_threshold, Mapping):
        return radius_threshold.get(label, math.inf)
    return radius_threshold


def smooth_certify(base: Base, x: Any, *, sigma: float, alpha: float, n0: int, n_max: int,
                   mode: str = "fixed", radius_threshold: float | Mapping[Hashable, float] = 0.0,
                   batch_size: int = 64, oracle_error: float = 0.0, seed: int | None = None,
                   max_buffer_bytes: int | None = None, previous: Hashable | None = None,
                   previous_share: float | None = None) -> Certificate:
    """Certify the smoothed decision g(x) = argmax_c P[base(x + eps) = c], eps ~ N(0, sigma^2 I).

    With probability at least 1 - alpha over the noise drawn here, a certified label c
    has smoothed probability p_c >= p_lower - eps_O, so g(x + delta) = c for every
    ||delta||_2 < radius (Cohen et al. 2019, Thm 1), and radius >= the label's threshold.
    This holds for the base as called here, whatever it computes, provided eps_O bounds
    its oracle's error at x (0 for an exact oracle).

    base: callable(batch of noisy x, same type, device and dtype as x) -> one hashable
    label per sample (None = UNKNOWN, never certified). x: float array/tensor in [0, 1]
    units. "fixed": Cohen's CERTIFY, n_max estimation samples; "sequential": at most n_max,
    stopping as soon as "radius >= threshold?" is decided (`certify.sequential_looks`).
    `radius_threshold` may map labels to thresholds; a label missing from it is never certified.

    Selection. Without `previous`, n0 samples select the label to test (Cohen's CERTIFY).
    With `previous` (a label chosen independently of this call's noise, e.g. the command
    the last decision certified), that label is tested first at level previous_share *
    alpha, spending no selection samples; if it fails, its estimation samples -- independent
    of any later sample -- select the label for a second test on fresh samples at the
    remaining level. The two levels add up to alpha (union bound; docs/guarantee.md).
    `max_buffer_bytes` caps the noise buffers (`buffer_bytes`): a batch that would exceed it
    is refused before anything is allocated. Bad arguments raise ValueError naming the argument.
    """
    sigma = certify.check_positive(sigma, "sigma")
    alpha = certify.check_probability(alpha, "alpha")
    oracle_error = certify.check_oracle_error(oracle_error)
    n0 = certify.check_count(n0, "n0", certify.MAX_SAMPLES)
    n_max = certify.check_count(n_max, "n_max", certify.MAX_SAMPLES)
    batch_size = certify.check_count(batch_size, "batch_size")
    previous_share = certify.check_probability(certify.PREVIOUS_SHARE if previous_share is None else previous_share,
                                               "previous_share")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    thresholds = _check_thresholds(radius_threshold)
    x = _check_input(x)
    noise = NoiseSource(x, sigma, min(batch_size, max(n0, n_max)), seed, max_buffer_bytes)  # no row never used
    cert = Certificate(label=None, certified=False, radius=0.0, p_lower=0.0, n_used=0, counts={}, mode=mode,
                       sigma=sigma, alpha=alpha, oracle_error=oracle_error, n0=n0, n_max=n_max, seed=seed,
                       previous=previous)
    run = _run_fixed if mode == "fixed" else _run_sequential
    test = functools.partial(run, _Sampler(base, noise, batch_size, n_max), sigma, oracle_error)
    level = alpha
    if previous is not None and math.isfinite(_threshold_for(thresholds, previous)):
        first = test(previous, _threshold_for(thresholds, previous), previous_share * alpha)
        if first.certified or certify.top_label(first.counts) == previous:  # certified, or nothing else to try
            return _report(cert, previous, first, "previous", Counter())
        cert.n_used += first.n
        selection, level = first.counts, alpha - previous_share * alpha  # union bound: the levels add up to alpha
    else:
        selection = add_counts(Counter(), base, noise, n0, batch_size)
        cert.n_used += n0
    label = certify.top_label(selection)
    threshold = _threshold_for(thresholds, label)
    if label is None or not math.isfinite(threshold):  # UNKNOWN, or a label that can never be published
        return _report(cert, label, _Outcome(threshold, level, reason="unknown_output" if label is None
                                             else NO_THRESHOLD), "samples", selection)
    return _report(cert, label, test(label, threshold, level), "samples", selection)


@dataclass
class _Sampler:
    """Where a test draws its samples: the base, the noise, the batch size and the budget n_max."""

    base: Base
    noise: NoiseSource
    batch_size: int
    n_max: int

    def more(self, counts: Counter, num: int) -> Counter:
        return add_counts(counts, self.base, self.noise, num, self.batch_size)


@dataclass
class _Outcome:
    """One test of "p_label >= p* = Phi(threshold / sigma) + eps_O?" on fresh samples."""

    threshold: float
    test_alpha: float  # the level of the whole test
    counts: Counter = field(default_factory=Counter)
    n: int = 0
    bound_alpha: float = 0.0  # the level of the bound where the test stopped (a look's share)
    p_lower: float = 0.0
    radius: float = 0.0
    certified: bool = False
    reason: str = ""


def _judge(label: Hashable, out: _Outcome, bound_alpha: float, sigma: float, eps: float,
           stopped_early: bool = False) -> _Outcome:
    """Fill in p_lower, radius, the certified flag and the reason from k of n, bound at
    level `bound_alpha`; a failure before the final look is THRESHOLD_UNREACHABLE."""
    out.bound_alpha = bound_alpha
    out.p_lower = certify.cp_lower(out.counts.get(label, 0), out.n, bound_alpha)
    radius = certify.certified_radius(out.p_lower, sigma, eps)
    out.radius = max(radius, 0.0)
    out.certified = certify.clears_threshold(out.p_lower, sigma, out.threshold, eps)
    out.reason = ("certified" if out.certified else THRESHOLD_UNREACHABLE if stopped_early
                  else "radius_below_threshold" if radius > 0.0 else "not_confident")
    return out


def _run_fixed(sampler: _Sampler, sigma: float, eps: float, label: Hashable, threshold: float,
               alpha: float) -> _Outcome:
    """Cohen et al.'s CERTIFY: n_max fresh samples, one Clopper–Pearson bound at alpha."""
    out = _Outcome(threshold, alpha, sampler.more(Counter(), sampler.n_max), sampler.n_max)
    return _judge(label, out, alpha, sigma, eps)


def _run_sequential(sampler: _Sampler, sigma: float, eps: float, label: Hashable, threshold: float,
                    alpha: float) -> _Outcome:
    """Sample up to each look; certify when its bound clears the threshold. Before the final
    look, stop early (THRESHOLD_UNREACHABLE) when the final look can no longer succeed or the
    upper bound shows p < p*; abstaining is always safe, so only certification spends alpha.
    A final look that fails reports why, as fixed mode does."""
    out = _Outcome(threshold, alpha)
    looks = certify.sequential_looks(threshold, sigma, alpha, sampler.n_max, eps)
    if not looks:
        out.reason = THRESHOLD_UNREACHABLE
        return out
    for look in looks[:-1]:
        sampler.more(out.counts, look.n - out.n)
        out.n = look.n
        k = out.counts.get(label, 0)
        if certify.clears_threshold(certify.cp_lower(k, out.n, look.alpha), sigma, threshold, eps):
            return _judge(label, out, look.alpha, sigma, eps)
        if certify.futile(k, out.n, looks, sigma, alpha, threshold, eps):
            return _judge(label, out, look.alpha, sigma, eps, stopped_early=True)
    final = looks[-1]
    sampler.more(out.counts, final.n - out.n)
    out.n = final.n
    return _judge(label, out, final.alpha, sigma, eps)


def _report(cert: Certificate, label: Hashable | None, out: _Outcome, selection: str,
            selection_counts: Counter) -> Certificate:
    """The certificate of the test that decided: `label` tested by `out`, selected as `selection`
    says ("previous": no selection samples; "samples": `selection_counts` chose it)."""
    cert.n_used += out.n
    cert.label, cert.radius_threshold, cert.certified, cert.reason = label, out.threshold, out.certified, out.reason
    cert.p_lower, cert.radius, cert.bound_alpha, cert.test_alpha = out.p_lower, out.radius, out.bound_alpha, \
        out.test_alpha
    cert.counts, cert.n_estimation = dict(out.counts), out.n
    cert.selection, cert.selection_counts = selection, dict(selection_counts)
    cert.n_selection = sum(selection_counts.values())
    return cert
