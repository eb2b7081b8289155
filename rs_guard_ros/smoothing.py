"""Gaussian noise and the batched sampling loop that turns a base classifier into a Certificate.

Framework agnostic: a numpy input gives numpy batches to the base; a torch tensor input
gives batches on the tensor's device and dtype, with the noise generated there. The
structure follows Cohen et al.'s CERTIFY (code/core.py in locuslab/smoothing): n0
selection samples pick the label, separate samples bound its probability.
"""
from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Hashable, Mapping, Sequence

import numpy as np

from . import certify

Base = Callable[[Any], Sequence[Hashable]]
MODES = ("fixed", "sequential")


@dataclass
class Certificate:
    """The outcome of one smoothed decision (DESIGN.md §3)."""

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
    alpha: float = 0.0
    radius_threshold: float = 0.0
    oracle_error: float = 0.0
    seed: int | None = None  # set only when a fixed seed was requested (tests)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; the UNKNOWN label (None) is written as "UNKNOWN"."""
        out = asdict(self)
        out["label"] = _label_name(self.label)
        out["counts"] = {_label_name(k): v for k, v in self.counts.items()}
        out["selection_counts"] = {_label_name(k): v for k, v in self.selection_counts.items()}
        return out


def _label_name(label: Hashable | None) -> str:
    return "UNKNOWN" if label is None else str(label)


class NoiseSource:
    """Draws x + N(0, sigma^2 I) batches into one reused buffer on x's device.

    Seeded from OS entropy unless a seed is given (DESIGN §1 Randomness: an attacker who
    knows the noise can defeat the statistics, so fixed seeds are for tests only).
    The base must not keep a reference to a batch: the next batch overwrites it.
    """

    def __init__(self, x: Any, sigma: float, batch_size: int, seed: int | None):
        self.x, self.sigma = x, sigma
        seed = secrets.randbits(63) if seed is None else seed
        if _is_torch(x):
            import torch

            self._gen = torch.Generator(device=x.device).manual_seed(seed)
            self._buf = torch.empty((batch_size, *x.shape), dtype=x.dtype, device=x.device)
        else:
            self._gen = np.random.default_rng(seed)
            self._buf = np.empty((batch_size, *x.shape), dtype=x.dtype)

    def batch(self, size: int) -> Any:
        """The next `size` noisy copies of x (a view of the reused buffer)."""
        buf = self._buf[:size]
        if _is_torch(self.x):
            import torch

            torch.randn(buf.shape, generator=self._gen, out=buf)
            return torch.add(self.x, buf, alpha=self.sigma, out=buf)  # x + sigma * eps in one pass
        self._gen.standard_normal(out=buf)
        buf *= self.sigma
        buf += self.x
        return buf


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _check_input(x: Any) -> Any:
    """Reject inputs the noise cannot be added to: non-float arrays, NaN/inf, empty."""
    if _is_torch(x):
        import torch

        if not torch.is_floating_point(x):
            raise ValueError(f"x must be a floating-point tensor, got {x.dtype}")
        finite = bool(torch.isfinite(x).all())
    else:
        x = np.asarray(x)
        if x.dtype.kind != "f":
            x = x.astype(np.float32)
        finite = bool(np.isfinite(x).all())
    if (x.numel() if _is_torch(x) else x.size) == 0:
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


def _threshold_for(radius_threshold: float | Mapping[Hashable, float], label: Hashable | None) -> float:
    """The radius the selected label must clear (per-command thresholds map labels to radii)."""
    if isinstance(radius_threshold, Mapping):
        return float(radius_threshold.get(label, 0.0))
    return float(radius_threshold)


def smooth_certify(base: Base, x: Any, *, sigma: float, alpha: float, n0: int, n_max: int,
                   mode: str = "fixed", radius_threshold: float | Mapping[Hashable, float] = 0.0,
                   batch_size: int = 64, oracle_error: float = 0.0, seed: int | None = None) -> Certificate:
    """Certify the smoothed decision g(x) = argmax_c P[base(x + eps) = c] (DESIGN §1).

    base: callable(batch of noisy x, same type/device as x) -> one hashable label per
    sample (None = UNKNOWN). "fixed": Cohen's CERTIFY with exactly n_max estimation
    samples. "sequential": stop as soon as "R >= threshold?" is decided, at most n_max
    samples, false certification probability <= alpha (`certify.sequential_looks`).
    `radius_threshold` may map labels to per-label thresholds.
    """
    sigma = certify.check_positive(sigma, "sigma")
    alpha = certify.check_probability(alpha, "alpha")
    oracle_error = certify.check_oracle_error(oracle_error)
    for name, value in (("n0", n0), ("n_max", n_max), ("batch_size", batch_size)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    x = _check_input(x)
    noise = NoiseSource(x, sigma, batch_size, seed)
    selection = add_counts(Counter(), base, noise, n0, batch_size)
    label = certify.top_label(selection)
    cert = Certificate(label=label, certified=False, radius=0.0, p_lower=0.0, n_used=n0, counts={},
                       selection_counts=dict(selection), mode=mode, sigma=sigma, alpha=alpha,
                       radius_threshold=_threshold_for(radius_threshold, label), oracle_error=oracle_error,
                       seed=seed)
    if label is None:
        cert.reason = "unknown_output"  # UNKNOWN never certifies: abstain without spending samples
        return cert
    run = _run_fixed if mode == "fixed" else _run_sequential
    return run(cert, base, noise, n_max, batch_size)


def _finish(cert: Certificate, counts: Counter, n: int, alpha: float) -> Certificate:
    """Fill in p_lower, radius and the certified flag from k of n at level alpha."""
    cert.counts = dict(counts)
    cert.n_used += n
    cert.p_lower = certify.cp_lower(counts.get(cert.label, 0), n, alpha)
    radius = certify.certified_radius(cert.p_lower, cert.sigma, cert.oracle_error)
    cert.radius = radius if radius > 0.0 else 0.0
    cert.certified = radius > 0.0 and radius >= cert.radius_threshold
    if not cert.reason:
        cert.reason = "certified" if cert.certified else ("radius_below_threshold" if radius > 0.0
                                                          else "not_confident")
    return cert


def _run_fixed(cert: Certificate, base: Base, noise: NoiseSource, n_max: int, batch_size: int) -> Certificate:
    """Cohen et al.'s CERTIFY: n_max fresh samples, one Clopper–Pearson bound at alpha."""
    return _finish(cert, add_counts(Counter(), base, noise, n_max, batch_size), n_max, cert.alpha)


def _run_sequential(cert: Certificate, base: Base, noise: NoiseSource, n_max: int,
                    batch_size: int) -> Certificate:
    """Sample up to each look; certify when its bound clears the threshold, stop early when
    the final look can no longer succeed or the upper bound shows p < p* (abstaining is
    always safe, so only certification spends alpha)."""
    try:
        looks = certify.sequential_looks(cert.radius_threshold, cert.sigma, cert.alpha, n_max, cert.oracle_error)
    except ValueError:
        looks = []
    if not looks:
        cert.reason = "threshold_unreachable"
        return cert
    p_star = certify.p_required(cert.radius_threshold, cert.sigma) + cert.oracle_error
    counts: Counter = Counter()
    n = 0
    for look in looks:
        add_counts(counts, base, noise, look.n - n, batch_size)
        n = look.n
        k = counts.get(cert.label, 0)
        if certify.clears_threshold(certify.cp_lower(k, n, look.alpha), cert.sigma, cert.radius_threshold,
                                    cert.oracle_error):
            return _finish(cert, counts, n, look.alpha)
        if not certify.reachable(k, n, looks[-1], cert.sigma, cert.radius_threshold, cert.oracle_error) \
                or certify.cp_upper(k, n, cert.alpha) < p_star:
            cert.reason = "threshold_unreachable"
            return _finish(cert, counts, n, look.alpha)
    return _finish(cert, counts, n, looks[-1].alpha)
