"""Gaussian noise and the batched sampling loop that turns a base classifier into a Certificate.

Framework agnostic: a numpy input gives numpy batches to the base; a torch tensor input
gives batches on the tensor's device and in its dtype, with the noise generated there.
The structure follows Cohen et al.'s CERTIFY (code/core.py in locuslab/smoothing): n0
selection samples pick the label, separate samples bound its probability.
"""
from __future__ import annotations

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
    counts: dict[Hashable, int]  # estimation samples only
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; the UNKNOWN label (None) is written as "UNKNOWN", an infinite threshold as None."""
        out = asdict(self)
        out["label"] = certify.label_name(self.label)
        out["counts"] = {certify.label_name(k): v for k, v in self.counts.items()}
        out["selection_counts"] = {certify.label_name(k): v for k, v in self.selection_counts.items()}
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
                   max_buffer_bytes: int | None = None) -> Certificate:
    """Certify the smoothed decision g(x) = argmax_c P[base(x + eps) = c], eps ~ N(0, sigma^2 I).

    With probability at least 1 - alpha over the noise drawn here, a certified label c
    has smoothed probability p_c >= p_lower - eps_O, so g(x + delta) = c for every
    ||delta||_2 < radius (Cohen et al. 2019, Thm 1), and radius >= the label's threshold.
    This holds for the base as called here, whatever it computes, provided eps_O bounds
    its oracle's error at x (0 for an exact oracle).

    base: callable(batch of noisy x, same type, device and dtype as x) -> one hashable
    label per sample (None = UNKNOWN, never certified). x: float array/tensor in [0, 1]
    units. "fixed": Cohen's CERTIFY, n0 selection + n_max estimation samples.
    "sequential": n0 selection samples, then at most n_max, stopping as soon as
    "radius >= threshold?" is decided (`certify.sequential_looks`). `radius_threshold`
    may map labels to thresholds; a label missing from the map is never certified.
    `max_buffer_bytes` caps the noise buffers (`buffer_bytes`): a batch that would exceed it
    is refused before anything is allocated. Bad arguments raise ValueError naming the argument.
    """
    sigma = certify.check_positive(sigma, "sigma")
    alpha = certify.check_probability(alpha, "alpha")
    oracle_error = certify.check_oracle_error(oracle_error)
    n0 = certify.check_count(n0, "n0", certify.MAX_SAMPLES)
    n_max = certify.check_count(n_max, "n_max", certify.MAX_SAMPLES)
    batch_size = certify.check_count(batch_size, "batch_size")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    thresholds = _check_thresholds(radius_threshold)
    x = _check_input(x)
    noise = NoiseSource(x, sigma, min(batch_size, max(n0, n_max)), seed, max_buffer_bytes)  # no row never used
    selection = add_counts(Counter(), base, noise, n0, batch_size)
    label = certify.top_label(selection)
    cert = Certificate(label=label, certified=False, radius=0.0, p_lower=0.0, n_used=n0, counts={},
                       selection_counts=dict(selection), mode=mode, sigma=sigma, alpha=alpha,
                       radius_threshold=_threshold_for(thresholds, label), oracle_error=oracle_error,
                       n0=n0, n_max=n_max, seed=seed)
    if label is None:
        cert.reason = "unknown_output"  # UNKNOWN never certifies: abstain without spending samples
        return cert
    if not math.isfinite(cert.radius_threshold):
        cert.reason = NO_THRESHOLD
        return cert
    run = _run_fixed if mode == "fixed" else _run_sequential
    return run(cert, base, noise, batch_size)


def _finish(cert: Certificate, counts: Counter, n: int, bound_alpha: float) -> Certificate:
    """Fill in p_lower, radius and the certified flag from k of n, bound at level `bound_alpha`."""
    cert.counts = dict(counts)
    cert.n_used += n
    cert.bound_alpha = bound_alpha
    cert.p_lower = certify.cp_lower(counts.get(cert.label, 0), n, bound_alpha)
    radius = certify.certified_radius(cert.p_lower, cert.sigma, cert.oracle_error)
    cert.radius = radius if radius > 0.0 else 0.0
    cert.certified = certify.clears_threshold(cert.p_lower, cert.sigma, cert.radius_threshold, cert.oracle_error)
    if not cert.reason:
        cert.reason = "certified" if cert.certified else ("radius_below_threshold" if radius > 0.0
                                                          else "not_confident")
    return cert


def _run_fixed(cert: Certificate, base: Base, noise: NoiseSource, batch_size: int) -> Certificate:
    """Cohen et al.'s CERTIFY: n_max fresh samples, one Clopper–Pearson bound at alpha."""
    return _finish(cert, add_counts(Counter(), base, noise, cert.n_max, batch_size), cert.n_max, cert.alpha)


def _run_sequential(cert: Certificate, base: Base, noise: NoiseSource, batch_size: int) -> Certificate:
    """Sample up to each look; certify when its bound clears the threshold. Before the final
    look, stop early (THRESHOLD_UNREACHABLE) when the final look can no longer succeed or the
    upper bound shows p < p*; abstaining is always safe, so only certification spends alpha.
    A final look that fails reports why, as fixed mode does (`_finish`)."""
    looks = certify.sequential_looks(cert.radius_threshold, cert.sigma, cert.alpha, cert.n_max, cert.oracle_error)
    if not looks:
        cert.reason = THRESHOLD_UNREACHABLE
        return cert
    counts: Counter = Counter()
    n = 0
    for look in looks[:-1]:
        add_counts(counts, base, noise, look.n - n, batch_size)
        n = look.n
        k = counts.get(cert.label, 0)
        if certify.clears_threshold(certify.cp_lower(k, n, look.alpha), cert.sigma, cert.radius_threshold,
                                    cert.oracle_error):
            return _finish(cert, counts, n, look.alpha)
        if certify.futile(k, n, looks, cert.sigma, cert.alpha, cert.radius_threshold, cert.oracle_error):
            cert.reason = THRESHOLD_UNREACHABLE
            return _finish(cert, counts, n, look.alpha)
    final = looks[-1]
    add_counts(counts, base, noise, final.n - n, batch_size)
    return _finish(cert, counts, final.n, final.alpha)
