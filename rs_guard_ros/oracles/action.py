"""Action oracle: numeric model outputs -> command.

Two modes, fixed by the configuration:
- logits (no prototypes): a 1-D vector of K scores, one per command in order -> the
  argmax command. Exact (eps_O = 0): the command IS the argmax.
- continuous action (prototypes given): a 1-D action vector -> the command whose
  prototype vector is nearest (Euclidean), if within `tolerance`.
  With `axes` ({Twist field: (action element, scale)}), the action is first read as a
  Twist -- e.g. OpenVLA's 7-DoF end-effector delta (dx, dy, dz, droll, dpitch, dyaw,
  gripper) as linear.x = rate * dx and angular.z = rate * dyaw -- and the prototypes are
  the commands' own Twists on those fields (`twist_prototypes`).
Anything malformed -- wrong shape or length, non-numeric, NaN, +inf, an exact tie, an
action too short for a mapped element -- is UNKNOWN (fail closed).
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np

from . import UNKNOWN, check_command_names, classify_distinct, vocab_field

_MALFORMED = object()  # one cache key for every output that is not a numeric array


def as_vector(output: Any) -> np.ndarray | None:
    """The output as a 1-D float64 array, or None when it is not a numeric 1-D vector.

    Accepts sequences, numpy arrays and (CPU or GPU) torch tensors, without importing torch.
    """
    if hasattr(output, "detach"):  # torch.Tensor; numpy has no bfloat16, so floats go via float64
        tensor = output.detach().cpu()
        output = (tensor.double() if tensor.is_floating_point() else tensor).numpy()
    try:
        arr = np.asarray(output)
    except (ValueError, TypeError):  # ragged nesting and the like
        return None
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "fiu":
        return None
    return arr.astype(np.float64)


def _key(output: Any) -> Hashable:
    """Cache key of an output: its float64 bytes (equal vectors share a key)."""
    vec = as_vector(output)
    return _MALFORMED if vec is None else vec.tobytes()


def _check_prototypes(commands: tuple[str, ...], prototypes: Mapping[str, Sequence[float]]
                      ) -> tuple[list[str], np.ndarray]:
    """Validate prototype vectors (known commands, one finite 1-D shape); stack them."""
    names, rows = [], []
    for command, vector in prototypes.items():
        if command not in commands:
            raise ValueError(f"prototypes: {command!r} is not one of the commands {list(commands)}")
        row = as_vector(vector)
        if row is None or not np.isfinite(row).all():
            raise ValueError(f"prototypes[{command!r}] must be a finite 1-D numeric vector, got {vector!r}")
        if rows and row.shape != rows[0].shape:
            raise ValueError(f"prototypes[{command!r}] has length {row.size}, others {rows[0].size}")
        names.append(command)
        rows.append(row)
    if not rows:
        raise ValueError("prototypes must give at least one command a vector (or be None for logits)")
    return names, np.stack(rows)


def default_tolerance(vectors: np.ndarray) -> float:
    """Half the smallest distance between two prototypes: the balls never overlap.

    With a single prototype there is no scale to borrow, so a tolerance must be given.
    """
    if len(vectors) < 2:
        raise ValueError("tolerance must be given when only one command has a prototype")
    gap = min(float(np.linalg.norm(a - b)) for a, b in combinations(vectors, 2))
    if gap == 0.0:
        raise ValueError("prototypes: two commands have the same vector")
    return gap / 2.0


def twist_prototypes(commands: Mapping[str, Any], axes: Mapping[str, Any]) -> dict[str, dict[str, list[float]]]:
    """Each command's vocabulary with its own Twist on the mapped fields as its prototype
    (`commands`: name -> vocabulary with linear_x / linear_y / angular_z, as in config.py)."""
    return {name: {"prototype": [float(vocab_field(vocab, f) or 0.0) for f in axes]}
            for name, vocab in commands.items()}


def _check_axes(axes: Mapping[str, Sequence[float]], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate {field: (element index, scale)} against the prototype width; return (indices, scales)."""
    if len(axes) != width:
        raise ValueError(f"axes map {len(axes)} action elements, but the prototypes have {width}")
    indices, scales = [], []
    for field, (index, scale) in axes.items():
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise ValueError(f"axes[{field!r}]: the action element must be an int >= 0, got {index!r}")
        if not (np.isfinite(scale) and scale != 0.0):
            raise ValueError(f"axes[{field!r}]: the scale must be finite and non-zero, got {scale!r}")
        indices.append(int(index))
        scales.append(float(scale))
    return np.asarray(indices), np.asarray(scales)


class ActionOracle:
    """Logits -> argmax command, or continuous action -> nearest prototype within tolerance.

    `commands` orders the logits. With `prototypes` (command -> action vector, e.g. the
    command's (v, omega)) the oracle reads action vectors; `tolerance` defaults to half
    the smallest distance between two prototypes, so each output is near at most one;
    it is ignored for logits (one configuration can carry it for either mode). `axes`
    ({field: (element index, scale)}, one per prototype element) reads each action as
    those scaled elements before the comparison.
    """

    def __init__(self, commands: Sequence[str], prototypes: Mapping[str, Sequence[float]] | None = None,
                 tolerance: float | None = None, axes: Mapping[str, Sequence[float]] | None = None) -> None:
        self.commands = check_command_names(commands)
        self.mode = "logits" if prototypes is None else "action"
        self._names: list[str] = []
        self._vectors = np.zeros((0, 0))
        self.tolerance = None
        self._axes: tuple[np.ndarray, np.ndarray] | None = None
        if prototypes is not None:
            self._names, self._vectors = _check_prototypes(self.commands, prototypes)
            tol = default_tolerance(self._vectors) if tolerance is None else float(tolerance)
            if not (np.isfinite(tol) and tol > 0.0):
                raise ValueError(f"tolerance must be a finite number > 0, got {tolerance!r}")
            self.tolerance = tol
        if axes:
            if prototypes is None:
                raise ValueError("axes read actions as Twists: prototypes (the commands' Twists) are needed too")
            self._axes = _check_axes(axes, self._vectors.shape[1])

    def _from_logits(self, vec: np.ndarray) -> str | None:
        """Argmax command; UNKNOWN on wrong length, NaN, +inf, no finite max or a tie.

        -inf is a legitimate logit (a masked choice), so it is allowed.
        """
        if vec.size != len(self.commands) or np.isnan(vec).any() or np.isposinf(vec).any():
            return UNKNOWN
        best = int(np.argmax(vec))
        if not np.isfinite(vec[best]) or np.count_nonzero(vec == vec[best]) > 1:
            return UNKNOWN
        return self.commands[best]

    def _from_action(self, vec: np.ndarray) -> str | None:
        """Nearest prototype if within tolerance; UNKNOWN on wrong length, non-finite or a tie."""
        if self._axes is not None:
            indices, scales = self._axes
            if vec.size <= indices.max():
                return UNKNOWN
            with np.errstate(over="ignore", invalid="ignore"):  # a huge element scales to inf: UNKNOWN below
                vec = vec[indices] * scales
        if vec.size != self._vectors.shape[1] or not np.isfinite(vec).all():
            return UNKNOWN
        with np.errstate(over="ignore"):  # a huge action overflows to an infinite distance: UNKNOWN
            dist = np.linalg.norm(self._vectors - vec, axis=1)
        best = int(np.argmin(dist))
        if dist[best] > self.tolerance or np.count_nonzero(dist == dist[best]) > 1:
            return UNKNOWN
        return self._names[best]

    def classify(self, output: Any) -> str | None:
        """The command of one output, or UNKNOWN."""
        vec = as_vector(output)
        if vec is None:
            return UNKNOWN
        return self._from_logits(vec) if self.mode == "logits" else self._from_action(vec)

    def __call__(self, outputs: Sequence[Any]) -> list[str | None]:
        """Classify a batch, each distinct vector once."""
        return classify_distinct(outputs, _key, lambda ys: [self.classify(y) for y in ys])
