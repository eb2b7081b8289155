"""The model's preprocessing: the deterministic map from a decoded RGB camera frame to the
model input, and its operator norm.

:class:`Preprocessor` only downscales: a frame smaller than the model input is refused,
since a certificate for an upscaled frame says almost nothing in camera pixels.
:meth:`Preprocessor.operator_norm` gives the map's spectral norm ||A||_2: a radius R
certified at the model input is a radius R / ||A||_2 in camera-frame units. Bad sizes
raise :class:`rs_guard_ros.images.ImageError`, as a bad frame does, and the caller abstains.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from .images import ImageError, as_int

_MODES = ("resize", "center_crop")
_WHY_NO_UPSCALING = ("upscaling would invent pixels, and the certified radius in camera pixels "
                     "(radius / ||A||_2, with ||A||_2 > 1 when upscaling) would be tiny")


def _as_pair(size: object, name: str) -> tuple[int, int]:
    """A (height, width) pair of ints, else ImageError naming ``name``."""
    try:
        height, width = size  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ImageError(f"{name} must be a (height, width) pair, got {size!r}") from None
    return as_int(height, f"{name}[0]"), as_int(width, f"{name}[1]")


def _as_size(size: object, name: str) -> tuple[int, int]:
    """A (height, width) pair of positive ints, else ImageError naming ``name``."""
    height, width = _as_pair(size, name)
    if height <= 0 or width <= 0:
        raise ImageError(f"{name} must be positive, got {(height, width)}")
    return height, width


def _size_text(height: int, width: int) -> str:
    """``HxW``, with 0 (an expected_size axis that accepts any size) written as "any"."""
    return "x".join(str(n) if n else "any" for n in (height, width))


def _as_expected_size(size: object, out_size: tuple[int, int]) -> tuple[int, int]:
    """expected_size as (height, width) of non-negative ints (0 = any), none below the model input."""
    height, width = _as_pair(size, "expected_size")
    if height < 0 or width < 0:
        raise ImageError(f"expected_size must be non-negative (0 = any), got {(height, width)}")
    if 0 < height < out_size[0] or 0 < width < out_size[1]:
        raise ImageError(
            f"expected_size {_size_text(height, width)} is smaller than the model input "
            f"{_size_text(*out_size)} (height x width), so every frame would be refused: {_WHY_NO_UPSCALING}"
        )
    return height, width


def _resize(x: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """The one resize every path uses (the demo VLA is trained on exactly this call)."""
    return cv2.resize(x, (out_size[1], out_size[0]), interpolation=cv2.INTER_AREA)


def _axis_matrix(n_in: int, n_out: int) -> np.ndarray:
    """The (n_out, n_in) matrix INTER_AREA applies along one axis (n_out <= n_in), probed with one-hot inputs.

    When neither axis grows, each axis's weights depend only on its own sizes, so a
    one-pixel-wide strip resized n_in -> n_out shows them.
    """
    matrix = np.empty((n_out, n_in), dtype=np.float64)
    probe = np.zeros((n_in, 1), dtype=np.float32)
    for p in range(n_in):
        probe[:] = 0.0
        probe[p, 0] = 1.0
        matrix[:, p] = _resize(probe, (n_out, 1)).reshape(n_out)
    return matrix


class Preprocessor:
    """Deterministic camera frame -> model input: optional centre crop, /255, INTER_AREA downscale.

    ``out_size`` is the model input's (height, width). Mode "resize" squashes the whole
    frame; "center_crop" first keeps the largest centred region with the output's aspect
    ratio. ``expected_size`` (height, width), 0 in an axis meaning any, pins the camera's
    frame size. Only downscaling is done: a frame of another size than expected, or whose
    region is smaller than the model input in either axis, is refused with ImageError
    (see :meth:`crop_box`) before any pixel is read. The map is linear in the [0, 1]
    frame, which is what lets a certified radius be carried back to the camera (see
    :meth:`operator_norm`).
    """

    def __init__(self, out_size: tuple[int, int], mode: str = "resize",
                 expected_size: tuple[int, int] | None = None) -> None:
        self.out_size = _as_size(out_size, "out_size")
        if mode not in _MODES:
            raise ImageError(f"mode must be one of {_MODES}, got {mode!r}")
        self.mode = mode
        self.expected_size = None if expected_size is None else _as_expected_size(expected_size, self.out_size)

    def crop_box(self, in_size: tuple[int, int]) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the region of an ``in_size`` frame that is resized.

        Raises ImageError, naming the sizes, if ``in_size`` is not the expected camera size
        or the region is smaller than the model input in either axis.
        """
        height, width = _as_size(in_size, "in_size")
        self._check_expected(height, width)
        out_h, out_w = self.out_size
        if self.mode == "resize":
            crop_h, crop_w = height, width
        elif width * out_h > height * out_w:  # frame wider than the output: trim the sides
            crop_h, crop_w = height, (2 * height * out_w + out_h) // (2 * out_h)
        else:  # frame taller (or equal): trim top and bottom
            crop_h, crop_w = (2 * width * out_h + out_w) // (2 * out_w), width
        if crop_h < out_h or crop_w < out_w:
            region = "" if (crop_h, crop_w) == (height, width) else f" (centre crop {crop_h}x{crop_w})"
            raise ImageError(
                f"frame {height}x{width}{region} is smaller than the model input {out_h}x{out_w} "
                f"(height x width): {_WHY_NO_UPSCALING}"
            )
        return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w

    def _check_expected(self, height: int, width: int) -> None:
        """ImageError unless the frame matches expected_size in every axis that is not 0."""
        if self.expected_size is None:
            return
        exp_h, exp_w = self.expected_size
        if (exp_h and height != exp_h) or (exp_w and width != exp_w):
            raise ImageError(
                f"frame {height}x{width} is not the expected camera size {_size_text(exp_h, exp_w)} "
                "(height x width; cameras.<name>.expected_height/expected_width)"
            )

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Model input, float32 (out_h, out_w, 3) in [0, 1] up to float32 rounding (a few ulp).

        ``frame`` is RGB (H, W, 3): uint8, or float already in [0, 1]; its size is checked
        (:meth:`crop_box`) before its pixels. For uint8 the computation is
        ``cv2.resize(crop.astype(np.float32) / 255.0, (out_w, out_h),
        interpolation=cv2.INTER_AREA)``, bit for bit the demo VLA's training path.
        """
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or 0 in frame.shape:
            raise ImageError(f"frame must be a non-empty (H, W, 3) RGB array, got shape {frame.shape}")
        top, left, crop_h, crop_w = self.crop_box(frame.shape[:2])
        crop = frame[top : top + crop_h, left : left + crop_w]
        if frame.dtype == np.uint8:
            return _resize(crop.astype(np.float32) / 255.0, self.out_size)
        if not np.issubdtype(frame.dtype, np.floating):
            raise ImageError(f"frame must be uint8 or float in [0, 1], got {frame.dtype}")
        if not np.isfinite(frame).all():
            raise ImageError("frame contains NaN or infinite values")
        if frame.min() < 0.0 or frame.max() > 1.0:
            raise ImageError(
                f"float frame must lie in [0, 1], got [{frame.min()}, {frame.max()}]; "
                "pass uint8 for 0..255 data"
            )
        return self.linear_map(crop)

    def linear_map(self, x: np.ndarray) -> np.ndarray:
        """The linear part A of the preprocessing on an already-cropped float frame (no range checks).

        Exposed so that the linearity and the norm of A can be checked on any input,
        including negative perturbations, which ``__call__`` (for frames) rejects. Like
        every path, it refuses to upscale.
        """
        x = np.asarray(x, dtype=np.float32)
        out_h, out_w = self.out_size
        if x.ndim < 2 or x.shape[0] < out_h or x.shape[1] < out_w:
            raise ImageError(f"x of shape {x.shape} is smaller than the model input {out_h}x{out_w}: "
                             f"{_WHY_NO_UPSCALING}")
        return _resize(x, self.out_size)

    def axis_matrices(self, in_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(A_rows, A_cols) with ``linear_map(crop) == A_rows @ crop @ A_cols.T`` per channel.

        Probed with O(H + W) resize calls: for tests and the attacker, never per decision.
        """
        _, _, crop_h, crop_w = self.crop_box(in_size)
        out_h, out_w = self.out_size
        return _axis_matrix(crop_h, out_h), _axis_matrix(crop_w, out_w)

    def operator_norm(self, in_size: tuple[int, int]) -> float:
        """Spectral norm ||A||_2 of the map from an ``in_size`` camera frame to the model input.

        Contract: sigma and the certified radius R live at the model input. A camera-frame
        perturbation delta (in [0, 1] intensity) moves the model input by A delta, and
        ||A delta|| <= ||A||_2 ||delta||, so every camera perturbation with
        ||delta|| < R / ||A||_2 is covered: that is the radius in camera-frame units.

        Closed form, O(1), no state: ||A||_2 = sqrt(out_h * out_w / (crop_h * crop_w)) <= 1.
        Per channel (every channel is mapped alike) the crop is a selection S with
        S S^T = I, which leaves the norm unchanged, and INTER_AREA is separable,
        A = A_rows (x) A_cols, whose spectral norms multiply. Along one axis,
        n_in -> n_out <= n_in, A averages pixel areas: non-negative weights, every row
        summing to 1 (||A||_inf = 1) and every column to n_out / n_in, since each input
        pixel hands out its whole area (||A||_1 = n_out / n_in). Hence
        ||A||_2 <= sqrt(||A||_1 ||A||_inf) = sqrt(n_out / n_in), and A 1 = 1 attains it:
        ||A 1|| / ||1|| = sqrt(n_out / n_in). (OpenCV's float weights match this to
        about 1e-7.) Raises ImageError for every size :meth:`crop_box` refuses.
        """
        _, _, crop_h, crop_w = self.crop_box(in_size)
        out_h, out_w = self.out_size
        return math.sqrt(out_h * out_w / (crop_h * crop_w))
