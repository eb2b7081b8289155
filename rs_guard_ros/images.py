"""Camera messages <-> numpy, without cv_bridge or ROS imports.

The decoders take the *fields* of sensor_msgs/Image and sensor_msgs/CompressedImage
(the node passes ``msg.height, msg.width, ...``), so they run and are tested without
ROS. They fail closed: any malformed, truncated, oversized or unsupported message
raises :class:`ImageError` (a ``ValueError``) naming the offending field, and the
caller abstains. Memory use is bounded by the message itself plus one output frame of
at most ``max_pixels`` pixels: sizes are checked before anything is allocated.
The decoded frame goes to the model through :mod:`rs_guard_ros.preprocess`.
"""
from __future__ import annotations

import array
import operator
import re
from collections.abc import Callable
from typing import NamedTuple

import cv2
import numpy as np

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageError",
    "RawImage",
    "SUPPORTED_ENCODINGS",
    "decode_compressed",
    "decode_raw",
    "encode_raw",
]

DEFAULT_MAX_PIXELS = 4096 * 4096

# REP 118 depth encodings (and their lower-case spellings): never a camera frame.
_DEPTH_ENCODINGS = frozenset({"16uc1", "32fc1"})


class ImageError(ValueError):
    """A camera message that cannot be turned into an RGB frame (the caller abstains)."""


# ---------------------------------------------------------------------------
# Raw sensor_msgs/Image
# ---------------------------------------------------------------------------

# Each converter gets the pixel bytes as a (height, width * bytes_per_pixel) uint8 view
# (row padding already cut off), the width and the endianness, and returns a new
# C-contiguous (H, W, 3) RGB uint8 array: the only copy of the pixels decode_raw makes.
_Converter = Callable[[np.ndarray, int, bool], np.ndarray]


def _channels(view: np.ndarray, width: int, n: int) -> np.ndarray:
    """Reshape a (H, W*n) byte view into (H, W, n) without copying."""
    return view.reshape(view.shape[0], width, n)


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    """Replicate an (H, W) uint8 view into a new (H, W, 3) array (one copy; np.repeat copies twice)."""
    rgb = np.empty(grey.shape + (3,), dtype=np.uint8)
    rgb[...] = grey[:, :, None]
    return rgb


def _mono16_high_byte(view: np.ndarray, big_endian: bool) -> np.ndarray:
    """The high byte of each 16-bit sample, i.e. ``v >> 8``, as a strided view (no copy).

    Taking the most significant byte maps 0..65535 onto 0..255 exactly as OpenCV's
    16-bit PNG decoder does, so mono16 and 16-bit PNG frames scale alike.
    """
    return view[:, 0::2] if big_endian else view[:, 1::2]


_CONVERTERS: dict[str, tuple[int, _Converter]] = {
    # encoding: (bytes per pixel, converter(view, width, big_endian))
    "rgb8": (3, lambda v, w, be: _channels(v, w, 3).copy()),
    "bgr8": (3, lambda v, w, be: _channels(v, w, 3)[:, :, ::-1].copy()),
    "rgba8": (4, lambda v, w, be: _channels(v, w, 4)[:, :, :3].copy()),
    "bgra8": (4, lambda v, w, be: _channels(v, w, 4)[:, :, 2::-1].copy()),
    "mono8": (1, lambda v, w, be: _grey_to_rgb(v)),
    "mono16": (2, lambda v, w, be: _grey_to_rgb(_mono16_high_byte(v, be))),
    # ROS "yuv422" is UYVY (U0 Y0 V0 Y1); "yuv422_yuy2" is YUYV (Y0 U0 Y1 V0).
    "uyvy": (2, lambda v, w, be: cv2.cvtColor(_channels(v, w, 2), cv2.COLOR_YUV2RGB_UYVY)),
    "yuyv": (2, lambda v, w, be: cv2.cvtColor(_channels(v, w, 2), cv2.COLOR_YUV2RGB_YUYV)),
}
# Names used by sensor_msgs/image_encodings.hpp (uyvy/yuyv since Humble; the yuv422*
# names are the older, deprecated spellings still published by many drivers).
_ALIASES = {"yuv422": "uyvy", "yuv422_yuy2": "yuyv"}
_YUV = frozenset({"uyvy", "yuyv"})
SUPPORTED_ENCODINGS = tuple(sorted([*_CONVERTERS, *_ALIASES]))


def as_int(value: object, name: str) -> int:
    """``value`` as a Python int (numpy integers accepted), else ImageError naming it."""
    if isinstance(value, bool):
        raise ImageError(f"{name} must be an integer, got a bool")
    try:
        return operator.index(value)
    except TypeError:
        raise ImageError(f"{name} must be an integer, got {type(value).__name__}") from None


def _as_bytes_view(data: object, name: str = "data") -> memoryview:
    """A flat byte view of a bytes-like ``data`` (no copy)."""
    try:
        return memoryview(data).cast("B")  # type: ignore[arg-type]
    except (TypeError, ValueError, BufferError) as exc:  # not a buffer, or not a contiguous one
        raise ImageError(f"{name} must be a contiguous bytes-like object ({exc})") from None


def _normalise_encoding(encoding: object) -> str:
    """The canonical encoding name, or ImageError (with a depth-specific reason)."""
    if not isinstance(encoding, str):
        raise ImageError(f"encoding must be a string, got {type(encoding).__name__}")
    key = encoding.strip().lower()
    if key in _DEPTH_ENCODINGS:
        raise ImageError(
            f"encoding {encoding!r} is a depth image, not a camera frame; "
            "subscribe the guard to a colour or mono camera topic"
        )
    key = _ALIASES.get(key, key)
    if key not in _CONVERTERS:
        raise ImageError(
            f"encoding {encoding!r} is unsupported; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    return key


def _check_max_pixels(height: int, width: int, max_pixels: object) -> None:
    """Reject frames above the pixel budget before anything is allocated."""
    limit = as_int(max_pixels, "max_pixels")
    if limit <= 0:
        raise ImageError(f"max_pixels must be positive, got {limit}")
    if height * width > limit:
        raise ImageError(
            f"height*width = {height}*{width} = {height * width} exceeds max_pixels = {limit}"
        )


def decode_raw(
    height: int,
    width: int,
    encoding: str,
    is_bigendian: int | bool,
    step: int,
    data: bytes | bytearray | memoryview | array.array,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode the fields of a sensor_msgs/Image into a new RGB uint8 (H, W, 3) array.

    Supports rgb8, bgr8, rgba8, bgra8 (alpha dropped), mono8, mono16 (high byte kept,
    ``is_bigendian`` honoured), yuv422/uyvy and yuv422_yuy2/yuyv (BT.601 via OpenCV).
    Row padding (``step`` > width * bytes per pixel) is skipped. ``data`` must hold exactly
    ``step * height`` bytes, as the message definition requires. Everything else raises
    ImageError naming the field.
    """
    height = as_int(height, "height")
    width = as_int(width, "width")
    step = as_int(step, "step")
    key = _normalise_encoding(encoding)
    if height <= 0 or width <= 0:
        raise ImageError(f"height and width must be positive, got height={height}, width={width}")
    _check_max_pixels(height, width, max_pixels)
    if key in _YUV and width % 2:
        raise ImageError(f"width must be even for {encoding!r} (2 pixels share chroma), got {width}")
    if not isinstance(is_bigendian, (bool, int, np.integer)) or int(is_bigendian) not in (0, 1):
        raise ImageError(f"is_bigendian must be 0 or 1, got {is_bigendian!r}")
    bytes_per_pixel, convert = _CONVERTERS[key]
    row_bytes = width * bytes_per_pixel
    if step < row_bytes:
        raise ImageError(f"step = {step} is below width*{bytes_per_pixel} = {row_bytes} for {encoding!r}")
    buffer = _as_bytes_view(data)
    if buffer.nbytes != step * height:
        what = "truncated" if buffer.nbytes < step * height else "too long"
        raise ImageError(f"data is {what}: {buffer.nbytes} bytes, expected step*height = {step * height}")
    rows = np.frombuffer(buffer, dtype=np.uint8).reshape(height, step)[:, :row_bytes]
    return convert(rows, width, bool(is_bigendian))


class RawImage(NamedTuple):
    """The fields of an rgb8 sensor_msgs/Image (is_bigendian is 0)."""

    height: int
    width: int
    encoding: str
    step: int
    data: array.array


def encode_raw(rgb: np.ndarray) -> RawImage:
    """Pack an RGB uint8 (H, W, 3) frame as rgb8 Image fields (unpadded rows).

    ``data`` is an ``array.array('B')``, the type rclpy stores for ``uint8[]``, so
    assigning it to ``msg.data`` skips rclpy's per-byte validation of plain sequences.
    """
    frame = np.asarray(rgb)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or 0 in frame.shape:
        raise ImageError(f"rgb must be a non-empty uint8 (H, W, 3) array, got {frame.dtype} {frame.shape}")
    height, width, _ = frame.shape
    return RawImage(height, width, "rgb8", 3 * width, array.array("B", frame.tobytes()))


# ---------------------------------------------------------------------------
# sensor_msgs/CompressedImage
# ---------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
# JPEG start-of-frame markers (ITU T.81 table B.1): C0-CF minus DHT (C4), JPG (C8), DAC (CC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone (no length field): TEM, RST0-7, SOI.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})
_JPEG_SOS, _JPEG_EOI_MARKER = 0xDA, 0xD9
_CODEC_NAMES = {"jpeg": "jpeg", "jpg": "jpeg", "png": "png"}
# IMREAD_COLOR_RGB (recent OpenCV) decodes straight to RGB; older releases, such as a
# robot's system OpenCV, decode to BGR and need one channel swap.
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)


def _png_size(data: bytes) -> tuple[int, int]:
    """(height, width) from a PNG's IHDR chunk (first by PNG spec §5.6), checking an IEND chunk follows."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ImageError("data is not a valid PNG: missing IHDR chunk")
    if data.rfind(b"IEND", 24) < 0:
        raise ImageError("data is a truncated PNG: no IEND chunk")
    return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """(height, width) from a JPEG's start-of-frame segment; a scan and an end-of-image marker must follow.

    Segments are walked by their length fields up to the first scan, so marker-like
    bytes inside APPn payloads (EXIF thumbnails) are never mistaken for the frame
    header. Inside entropy-coded data 0xFF is always stuffed or followed by RSTn, so an
    end-of-image marker after the scan start means the file was not cut short (bytes
    after it, as some MJPEG cameras pad, are tolerated).
    """
    pos, size = 2, None
    while pos + 2 <= len(data):
        if data[pos] != 0xFF:
            raise ImageError(f"data is not a valid JPEG: expected a marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker (T.81 B.1.1.2)
            pos += 1
            continue
        pos += 2
        if marker in _JPEG_STANDALONE:
            continue
        if marker == _JPEG_EOI_MARKER or (marker == _JPEG_SOS and size is None):
            raise ImageError("data is not a valid JPEG: no start-of-frame header before the first scan")
        if pos + 2 > len(data):
            break
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2:
            raise ImageError("data is not a valid JPEG: segment length below 2")
        if marker in _JPEG_SOF and size is None and length >= 7 and pos + 7 <= len(data):
            size = (int.from_bytes(data[pos + 3 : pos + 5], "big"),  # precision(1) height(2) width(2)
                    int.from_bytes(data[pos + 5 : pos + 7], "big"))
        if marker == _JPEG_SOS:
            if data.find(_JPEG_EOI, pos + length) < 0:
                raise ImageError("data is a truncated JPEG: no end-of-image marker after the scan")
            return size
        pos += length
    raise ImageError("data is a truncated JPEG: it ends before the first scan")


def _codec_from_format(fmt: object) -> str | None:
    """The codec named in an image_transport format ("rgb8; jpeg compressed bgr8"); None if empty."""
    if not isinstance(fmt, str):
        raise ImageError(f"format must be a string, got {type(fmt).__name__}")
    tokens = re.findall(r"[a-z0-9]+", fmt.lower())
    if "compresseddepth" in tokens or _DEPTH_ENCODINGS.intersection(tokens):
        raise ImageError(f"format {fmt!r} is a depth image, not a camera frame")
    if not tokens:
        return None
    codecs = {_CODEC_NAMES[t] for t in tokens if t in _CODEC_NAMES}
    if len(codecs) != 1:
        raise ImageError(f"format {fmt!r} is unsupported; expected one of jpeg, png")
    return codecs.pop()


def _imdecode_rgb(encoded: np.ndarray) -> np.ndarray | None:
    """cv2.imdecode to 3-channel 8-bit RGB, EXIF orientation ignored; None if OpenCV cannot decode."""
    if _IMREAD_RGB is not None:
        return cv2.imdecode(encoded, _IMREAD_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
    bgr = cv2.imdecode(encoded, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def decode_compressed(  # noqa: A002 (``format`` is the ROS field name)
    format: str, data: bytes | bytearray | memoryview | array.array, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode the fields of a sensor_msgs/CompressedImage (JPEG or PNG) into RGB uint8 (H, W, 3).

    Decompression bombs are stopped before decoding: the frame size is read from the PNG
    IHDR chunk or the JPEG start-of-frame segment (a few header bytes; no pixel data is
    touched) and checked against ``max_pixels``; only then does OpenCV decode, so its
    allocation is bounded by one frame of at most ``max_pixels``. Only PNG and JPEG
    signatures ever reach the decoder, so no other OpenCV codec (whose headers this
    module does not parse) can be fed. Truncation is detected structurally (IEND chunk,
    end-of-image marker) as well as by the decoder, since some OpenCV versions return a
    partly grey frame for a cut JPEG. Grey becomes RGB, alpha is dropped, 16-bit keeps
    its high byte (as mono16 does), EXIF orientation is ignored (raw and compressed copies
    of a frame decode alike). Anything else raises ImageError.
    """
    declared = _codec_from_format(format)
    raw = _as_bytes_view(data).tobytes()  # one copy of the compressed bytes, for header parsing
    if raw.startswith(_PNG_SIGNATURE):
        codec, (height, width) = "png", _png_size(raw)
    elif raw.startswith(_JPEG_SOI):
        codec, (height, width) = "jpeg", _jpeg_size(raw)
    else:
        raise ImageError(f"data is neither PNG nor JPEG ({len(raw)} bytes)")
    if declared is not None and declared != codec:
        raise ImageError(f"format says {declared} but data is {codec}")
    if height <= 0 or width <= 0:
        raise ImageError(f"{codec} header declares an empty frame ({height}x{width})")
    _check_max_pixels(height, width, max_pixels)
    try:
        rgb = _imdecode_rgb(np.frombuffer(raw, dtype=np.uint8))
    except cv2.error as exc:
        raise ImageError(f"data could not be decoded as {codec}: {exc}") from None
    if rgb is None or rgb.dtype != np.uint8 or rgb.shape != (height, width, 3):
        raise ImageError(f"data could not be decoded as {codec} (corrupt or truncated)")
    return rgb
