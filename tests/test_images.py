"""Tests for rs_guard_ros.images: message decoding (fail-closed) and preprocessing with its norm."""
from __future__ import annotations

import array
import sys
import tracemalloc

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from rs_guard_ros import images, preprocess
from rs_guard_ros.images import (
    SUPPORTED_ENCODINGS,
    ImageError,
    decode_compressed,
    decode_raw,
    encode_raw,
)
from rs_guard_ros.preprocess import Preprocessor

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RNG = np.random.default_rng(1234)
# Bytes per pixel of each encoding as sensor_msgs/image_encodings.hpp defines it.
BPP = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 2,
       "yuv422": 2, "uyvy": 2, "yuv422_yuy2": 2, "yuyv": 2}


def random_rgb(height: int, width: int) -> np.ndarray:
    return RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)


def pad_rows(pixels: np.ndarray, pad: int) -> tuple[int, bytes]:
    """(step, data) for an (H, row_bytes) byte array with ``pad`` garbage bytes after each row."""
    rows = pixels.reshape(pixels.shape[0], -1)
    garbage = np.full((rows.shape[0], pad), 0xA5, dtype=np.uint8)
    padded = np.concatenate([rows, garbage], axis=1)
    return padded.shape[1], padded.tobytes()


def message_pixels(rgb: np.ndarray, encoding: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(pixel bytes in ``encoding``, RGB we expect back, max abs error allowed) for a known frame."""
    if encoding == "rgb8":
        return rgb, rgb, 0
    if encoding == "bgr8":
        return rgb[:, :, ::-1], rgb, 0
    alpha = RNG.integers(0, 256, rgb.shape[:2] + (1,), dtype=np.uint8)
    if encoding == "rgba8":
        return np.concatenate([rgb, alpha], axis=2), rgb, 0
    if encoding == "bgra8":
        return np.concatenate([rgb[:, :, ::-1], alpha], axis=2), rgb, 0
    grey = rgb[:, :, 0]
    if encoding == "mono8":
        return grey, np.repeat(grey[:, :, None], 3, axis=2), 0
    # YUV 4:2:2 shares chroma between horizontal pixel pairs: give both the same colour,
    # then only the 8-bit YUV rounding remains (at most 2 levels measured).
    paired = np.repeat(rgb[:, ::2], 2, axis=1)
    code = cv2.COLOR_RGB2YUV_UYVY if encoding in ("yuv422", "uyvy") else cv2.COLOR_RGB2YUV_YUYV
    return cv2.cvtColor(paired, code), paired, 3


EIGHT_BIT = [e for e in SUPPORTED_ENCODINGS if e != "mono16"]


@pytest.mark.parametrize("encoding", EIGHT_BIT)
@pytest.mark.parametrize("pad", [0, 7])
def test_decode_raw_round_trips_every_encoding_with_row_padding(encoding: str, pad: int) -> None:
    rgb = random_rgb(6, 10)
    pixels, expected, tolerance = message_pixels(rgb, encoding)
    step, data = pad_rows(pixels, pad)
    out = decode_raw(6, 10, encoding, 0, step, data)
    assert out.shape == (6, 10, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= tolerance


@pytest.mark.parametrize("big_endian", [0, 1])
@pytest.mark.parametrize("pad", [0, 3])
def test_mono16_honours_endianness_and_keeps_the_high_byte(big_endian: int, pad: int) -> None:
    values = RNG.integers(0, 65536, (5, 9)).astype(">u2" if big_endian else "<u2")
    step, data = pad_rows(values.view(np.uint8), pad)
    out = decode_raw(5, 9, "mono16", big_endian, step, data)
    expected = (values.astype(np.uint16) >> 8).astype(np.uint8)
    assert np.array_equal(out, np.repeat(expected[:, :, None], 3, axis=2))
    swapped = decode_raw(5, 9, "mono16", 1 - big_endian, step, data)
    assert not np.array_equal(swapped, out)


def test_yuyv_is_uyvy_with_bytes_swapped_in_pairs() -> None:
    uyvy = RNG.integers(0, 256, (4, 8, 2), dtype=np.uint8)
    yuyv = uyvy.reshape(4, -1, 2)[:, :, ::-1]  # U Y V Y -> Y U Y V
    from_uyvy = decode_raw(4, 8, "uyvy", 0, 16, uyvy.tobytes())
    assert np.array_equal(decode_raw(4, 8, "yuyv", 0, 16, yuyv.tobytes()), from_uyvy)
    assert np.array_equal(decode_raw(4, 8, "yuv422", 0, 16, uyvy.tobytes()), from_uyvy)
    assert not np.array_equal(decode_raw(4, 8, "yuyv", 0, 16, uyvy.tobytes()), from_uyvy)


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview, lambda b: array.array("B", b)])
def test_decode_raw_accepts_every_bytes_like_ros_uses(kind) -> None:
    rgb = random_rgb(3, 4)
    assert np.array_equal(decode_raw(3, 4, "rgb8", 0, 12, kind(rgb.tobytes())), rgb)


def test_encode_raw_round_trips_and_gives_rclpy_the_fast_array_type() -> None:
    rgb = random_rgb(7, 5)
    fields = encode_raw(rgb)
    assert (fields.height, fields.width, fields.encoding, fields.step) == (7, 5, "rgb8", 15)
    assert isinstance(fields.data, array.array) and fields.data.typecode == "B"
    height, width, encoding, step, data = fields
    assert np.array_equal(decode_raw(height, width, encoding, 0, step, data), rgb)
    with pytest.raises(ImageError, match="rgb"):
        encode_raw(rgb.astype(np.float32))


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1", "32fc1"])
def test_depth_encodings_are_rejected_as_depth(encoding: str) -> None:
    with pytest.raises(ImageError, match="depth"):
        decode_raw(2, 2, encoding, 0, 8, bytes(16))


@pytest.mark.parametrize("encoding", ["bayer_rggb8", "8UC3", "rgb16", "nv12", ""])
def test_other_encodings_are_rejected_as_unsupported(encoding: str) -> None:
    with pytest.raises(ImageError, match="unsupported"):
        decode_raw(2, 2, encoding, 0, 8, bytes(16))


VALID = dict(height=2, width=4, encoding="yuv422", is_bigendian=0, step=8, data=bytes(16))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (dict(height=0), "height"),
        (dict(width=-4), "width"),
        (dict(height=2.0), "height"),
        (dict(step="8"), "step"),
        (dict(encoding=None), "encoding"),
        (dict(height=100_000, width=100_000), "max_pixels"),
        (dict(width=3, step=6, data=bytes(12)), "width"),
        (dict(step=7, data=bytes(14)), "step"),
        (dict(data=bytes(15)), "truncated"),
        (dict(data=bytes(17)), "too long"),
        (dict(is_bigendian=2), "is_bigendian"),
        (dict(data=[0] * 16), "data"),
        (dict(data=np.zeros(32, np.uint8)[::2]), "data"),
    ],
)
def test_malformed_fields_are_rejected_naming_the_field(change: dict, field: str) -> None:
    with pytest.raises(ImageError, match=field):
        decode_raw(**{**VALID, **change})


def traced_peak(fn) -> int:
    """Peak bytes allocated through Python/numpy allocators while ``fn`` runs."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("max_pixels", [4096 * 4096, 10**30])
def test_huge_dimensions_are_rejected_before_allocating(max_pixels: int) -> None:
    def decode() -> None:
        with pytest.raises(ImageError):
            decode_raw(10**9, 10**9, "rgb8", 0, 3 * 10**9, bytes(64), max_pixels=max_pixels)

    assert traced_peak(decode) < 64 * 1024


@pytest.mark.parametrize("encoding", EIGHT_BIT + ["mono16"])
def test_decoding_makes_a_single_copy_of_the_pixels(encoding: str) -> None:
    height, width = 240, 320
    step = width * BPP[encoding] + 16
    data = RNG.integers(0, 256, step * height, dtype=np.uint8).tobytes()
    output_bytes = height * width * 3
    peak = traced_peak(lambda: decode_raw(height, width, encoding, 0, step, data))
    assert output_bytes <= peak < 1.25 * output_bytes


RAW_ENCODINGS = list(SUPPORTED_ENCODINGS) + ["16UC1", "32FC1", "bayer_rggb8", "8UC3", "RGB8", "rgb8\x00"]
JUNK = st.one_of(st.none(), st.floats(), st.text(max_size=3), st.booleans(), st.integers(-(2**70), 2**70))
SMALL = st.integers(-2, 12)


@st.composite
def raw_messages(draw) -> dict:
    """Image fields from nearly valid to absurd: junk types, huge or negative sizes, bad lengths."""
    encoding = draw(st.one_of(st.sampled_from(RAW_ENCODINGS), st.text(max_size=8), JUNK))
    height = draw(st.one_of(SMALL, JUNK))
    width = draw(st.one_of(SMALL, JUNK))
    consistent = isinstance(height, int) and isinstance(width, int) and 0 < height * width < 200
    if consistent and draw(st.booleans()):
        step = max(0, width * BPP.get(encoding, 3) + draw(st.integers(-2, 5)))
        length = max(0, step * height + draw(st.sampled_from([0, 0, 0, -1, 1])))
        payload: object = draw(st.binary(min_size=length, max_size=length))
    else:
        step = draw(st.one_of(st.integers(-4, 64), JUNK))
        payload = draw(st.one_of(st.binary(max_size=256), st.text(max_size=4), st.none(),
                                 st.lists(st.integers(0, 255), max_size=8)))
    wrap = draw(st.sampled_from([lambda d: d, bytearray, memoryview, lambda d: array.array("B", d)]))
    data = wrap(payload) if isinstance(payload, bytes) else payload
    is_bigendian = draw(st.one_of(st.integers(-1, 2), st.booleans(), st.none(), st.floats()))
    return dict(height=height, width=width, encoding=encoding, is_bigendian=is_bigendian,
                step=step, data=data, max_pixels=draw(st.sampled_from([4096 * 4096, 50, 10**40])))


@FUZZ
@given(raw_messages())
def test_decode_raw_returns_a_frame_or_image_error_for_any_input(fields: dict) -> None:
    try:
        out = decode_raw(**fields)
    except ImageError:
        event("rejected")
        return
    event("decoded")
    assert out.shape == (fields["height"], fields["width"], 3)
    assert out.dtype == np.uint8 and out.flags.c_contiguous


# ---------------------------------------------------------------------------
# CompressedImage
# ---------------------------------------------------------------------------

def encoded(ext: str, image: np.ndarray, *params: int) -> bytes:
    ok, buf = cv2.imencode(ext, image, list(params))
    assert ok
    return buf.tobytes()


FRAME = random_rgb(24, 32)
SMOOTH = cv2.GaussianBlur(FRAME, (0, 0), 3)  # JPEG-friendly content for colour checks
PNG = encoded(".png", FRAME[:, :, ::-1])
JPEG = encoded(".jpg", SMOOTH[:, :, ::-1], cv2.IMWRITE_JPEG_QUALITY, 95)
PROGRESSIVE_JPEG = encoded(".jpg", SMOOTH[:, :, ::-1], cv2.IMWRITE_JPEG_PROGRESSIVE, 1)


@pytest.mark.parametrize("fmt", ["png", "bgr8; png compressed bgr8", "rgb8; png compressed bgr8", "PNG", ""])
def test_png_decodes_exactly_to_rgb(fmt: str) -> None:
    assert np.array_equal(decode_compressed(fmt, PNG), FRAME)


@pytest.mark.parametrize("data", [JPEG, PROGRESSIVE_JPEG])
@pytest.mark.parametrize("fmt", ["jpeg", "rgb8; jpeg compressed bgr8", "jpg", ""])
def test_jpeg_decodes_to_rgb_in_the_right_channel_order(fmt: str, data: bytes) -> None:
    out = decode_compressed(fmt, array.array("B", data))
    assert out.shape == FRAME.shape and out.dtype == np.uint8
    error = np.abs(out.astype(int) - SMOOTH.astype(int)).mean()
    swapped = np.abs(out.astype(int) - SMOOTH[:, :, ::-1].astype(int)).mean()
    assert error < 3 and error < swapped


def test_grey_png_becomes_rgb_and_alpha_is_dropped() -> None:
    grey = FRAME[:, :, 1]
    assert np.array_equal(decode_compressed("mono8; png compressed ", encoded(".png", grey)),
                          np.repeat(grey[:, :, None], 3, axis=2))
    alpha = RNG.integers(0, 256, FRAME.shape[:2] + (1,), dtype=np.uint8)
    bgra = np.concatenate([FRAME[:, :, ::-1], alpha], axis=2)
    assert np.array_equal(decode_compressed("png", encoded(".png", bgra)), FRAME)


def test_sixteen_bit_png_scales_like_mono16() -> None:
    values = RNG.integers(0, 65536, (6, 10)).astype(np.uint16)
    from_png = decode_compressed("mono16; png compressed ", encoded(".png", values))
    from_raw = decode_raw(6, 10, "mono16", 0, 20, values.astype("<u2").tobytes())
    assert np.array_equal(from_png, from_raw)
    colour = RNG.integers(0, 65536, (6, 10, 3)).astype(np.uint16)
    assert np.array_equal(decode_compressed("png", encoded(".png", colour)),
                          (colour[:, :, ::-1] >> 8).astype(np.uint8))


@pytest.mark.parametrize(
    "fmt", ["16UC1; compressedDepth png", "32FC1; compressedDepth", "16UC1; png compressed "]
)
def test_compressed_depth_is_rejected_as_depth(fmt: str) -> None:
    with pytest.raises(ImageError, match="depth"):
        decode_compressed(fmt, PNG)


@pytest.mark.parametrize(
    ("fmt", "data", "reason"),
    [
        ("png", JPEG, "format says png"),
        ("jpeg", PNG, "format says jpeg"),
        ("webp", PNG, "unsupported"),
        ("jpeg png", PNG, "unsupported"),
        ("jpeg", b"", "neither"),
        ("jpeg", b"GIF89a" + bytes(20), "neither"),
        ("png", PNG[: len(PNG) // 2], "truncated"),
        ("jpeg", JPEG[: len(JPEG) // 2], "truncated"),
        ("jpeg", JPEG[:-2], "truncated"),
        ("png", PNG[:60] + PNG[-12:], "corrupt"),
        ("png", PNG[:20], "IHDR"),
        ("jpeg", b"\xff\xd8\xff\xd9", "start-of-frame"),
        (None, PNG, "format"),
        ("png", "not bytes", "data"),
    ],
)
def test_bad_compressed_images_are_rejected_with_a_reason(fmt, data, reason: str) -> None:
    with pytest.raises(ImageError, match=reason):
        decode_compressed(fmt, data)


def test_jpeg_padded_after_its_end_marker_still_decodes() -> None:
    assert np.array_equal(decode_compressed("jpeg", JPEG + bytes(64)), decode_compressed("jpeg", JPEG))


def test_older_opencv_without_imread_rgb_gives_the_same_frames(monkeypatch) -> None:
    expected = [decode_compressed("", data) for data in (PNG, JPEG)]
    monkeypatch.setattr(images, "_IMREAD_RGB", None)
    assert all(np.array_equal(decode_compressed("", data), e) for data, e in zip((PNG, JPEG), expected))


def png_header(height: int, width: int) -> bytes:
    """A PNG signature, an IHDR chunk (8-bit RGB) claiming the given size, junk, and IEND."""
    ihdr = b"IHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    iend = bytes(4) + b"IEND" + bytes(4)
    return b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + ihdr + bytes(4) + bytes(100) + iend


def test_png_claiming_100000_squared_is_rejected_from_its_header() -> None:
    def decode() -> None:
        with pytest.raises(ImageError, match="max_pixels"):
            decode_compressed("png", png_header(100_000, 100_000))

    assert traced_peak(decode) < 64 * 1024


@pytest.mark.parametrize("data", [PNG, JPEG, PROGRESSIVE_JPEG])
def test_size_limit_reads_the_real_header_of_each_codec(data: bytes) -> None:
    with pytest.raises(ImageError, match="24\\*32"):
        decode_compressed("", data, max_pixels=24 * 32 - 1)
    assert decode_compressed("", data, max_pixels=24 * 32).shape == (24, 32, 3)


def test_jpeg_header_parser_skips_segments_by_length() -> None:
    # An APP1 payload holding bytes that look like a start-of-frame for a 60000x60000
    # image: a parser that scans for markers instead of walking segments would trip on it.
    fake_sof = b"\xff\xc0\x00\x11\x08\xea\x60\xea\x60\x03" + bytes(8)
    app1 = b"\xff\xe1" + (2 + len(fake_sof)).to_bytes(2, "big") + fake_sof
    data = JPEG[:2] + app1 + JPEG[2:]
    assert decode_compressed("jpeg", data, max_pixels=24 * 32).shape == (24, 32, 3)


def mutations(original: bytes) -> st.SearchStrategy[bytes]:
    """Truncations and byte flips of a real file."""
    cut = st.integers(0, len(original)).map(lambda n: original[:n])
    flip = st.tuples(st.integers(0, len(original) - 1), st.integers(1, 255)).map(
        lambda f: original[: f[0]] + bytes([original[f[0]] ^ f[1]]) + original[f[0] + 1 :])
    return st.one_of(cut, flip)


COMPRESSED_INPUTS = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda b: b"\x89PNG\r\n\x1a\n" + b),
    st.binary(max_size=300).map(lambda b: b"\xff\xd8" + b),
    st.binary(max_size=40).map(lambda b: b"\xff\xd8\xff\xc0\x00\x11\x08" + b),
    mutations(PNG), mutations(JPEG), mutations(PROGRESSIVE_JPEG),
)


@FUZZ
@given(data=COMPRESSED_INPUTS, fmt=st.sampled_from(["", "jpeg", "png", "rgb8; jpeg compressed bgr8", "x"]))
def test_decode_compressed_returns_a_frame_or_image_error_for_any_input(data: bytes, fmt: str) -> None:
    try:
        out = decode_compressed(fmt, data, max_pixels=256 * 256)
    except ImageError:
        event("rejected")
        return
    event("decoded")
    assert out.ndim == 3 and out.shape[2] == 3 and out.dtype == np.uint8
    assert 0 < out.shape[0] * out.shape[1] <= 256 * 256


# ---------------------------------------------------------------------------
# Preprocessor
# ---------------------------------------------------------------------------

@st.composite
def downscales(draw, max_out: int, max_extra: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(in_size, out_size) with in >= out in both axes: the only sizes the Preprocessor accepts."""
    out = (draw(st.integers(1, max_out)), draw(st.integers(1, max_out)))
    return (out[0] + draw(st.integers(0, max_extra)), out[1] + draw(st.integers(0, max_extra))), out


MODES = st.sampled_from(["resize", "center_crop"])


@pytest.mark.parametrize("mode", ["resize", "center_crop"])
@pytest.mark.parametrize("in_size", [(48, 64), (96, 64), (32, 40), (33, 400)])
def test_preprocessor_output_shape_dtype_and_range(mode: str, in_size: tuple[int, int]) -> None:
    out = Preprocessor((32, 40), mode)(random_rgb(*in_size))
    assert out.shape == (32, 40, 3) and out.dtype == np.float32
    assert out.min() >= -1e-5 and out.max() <= 1 + 1e-5  # INTER_AREA weights sum to 1 up to rounding


def test_resize_mode_is_bit_identical_to_the_demo_training_path() -> None:
    frame = random_rgb(96, 128)
    reference = cv2.resize(frame.astype(np.float32) / 255.0, (40, 30), interpolation=cv2.INTER_AREA)
    assert np.array_equal(Preprocessor((30, 40))(frame), reference)
    assert np.array_equal(Preprocessor((30, 40))(frame.astype(np.float32) / 255.0), reference)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (np.full((8, 8, 3), np.nan, np.float32), "NaN"),
        (np.full((8, 8, 3), np.inf), "NaN or infinite"),
        (np.full((8, 8, 3), 2.0), "\\[0, 1\\]"),
        (np.full((8, 8, 3), -0.5, np.float32), "\\[0, 1\\]"),
        (np.zeros((8, 8), np.uint8), "shape"),
        (np.zeros((8, 8, 4), np.uint8), "shape"),
        (np.zeros((0, 8, 3), np.uint8), "shape"),
        (np.zeros((8, 8, 3), np.int16), "dtype|uint8"),
    ],
)
def test_preprocessor_rejects_bad_frames(frame: np.ndarray, reason: str) -> None:
    with pytest.raises(ImageError, match=reason):
        Preprocessor((4, 4))(frame)


@pytest.mark.parametrize(
    ("out_size", "mode", "expected_size"),
    [
        ((0, 4), "resize", None), ((4,), "resize", None), ((4, 4), "squash", None),
        ((4, 4), "resize", (4,)), ((4, 4), "resize", (-1, 0)), ((4, 4), "resize", (4.0, 4)),
        ((4, 4), "resize", (3, 0)), ((4, 4), "center_crop", (0, 3)),
    ],
)
def test_preprocessor_rejects_bad_configuration(out_size, mode: str, expected_size) -> None:
    with pytest.raises(ImageError):
        Preprocessor(out_size, mode, expected_size=expected_size)


@pytest.mark.parametrize(
    ("in_size", "out_size"), [((100, 200), (50, 50)), ((300, 100), (40, 80)), ((99, 61), (16, 9))]
)
def test_center_crop_keeps_the_largest_centred_region_with_the_output_aspect(in_size, out_size) -> None:
    top, left, height, width = Preprocessor(out_size, "center_crop").crop_box(in_size)
    assert height == in_size[0] or width == in_size[1]  # largest: touches two sides
    assert abs(height * out_size[1] - width * out_size[0]) <= max(out_size)  # aspect up to 1 px rounding
    assert abs(top - (in_size[0] - height - top)) <= 1 and abs(left - (in_size[1] - width - left)) <= 1


def test_center_crop_discards_the_sides_of_a_wide_frame() -> None:
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[:, :50] = frame[:, 150:] = 255
    assert not Preprocessor((50, 50), "center_crop")(frame).any()
    assert Preprocessor((50, 50), "resize")(frame).any()


finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), sizes=downscales(max_out=9, max_extra=3), a=finite, b=finite)
def test_preprocessing_is_linear(data, sizes, a: float, b: float) -> None:
    shape, out = sizes
    arrays = st.lists(finite, min_size=shape[0] * shape[1] * 3, max_size=shape[0] * shape[1] * 3)
    x = np.array(data.draw(arrays), np.float32).reshape(*shape, 3)
    y = np.array(data.draw(arrays), np.float32).reshape(*shape, 3)
    p = Preprocessor(out)
    combined = p.linear_map(np.float32(a) * x + np.float32(b) * y)
    scale = 1e-5 * (abs(a) * np.abs(x).max() + abs(b) * np.abs(y).max() + 1)
    np.testing.assert_allclose(combined, a * p.linear_map(x) + b * p.linear_map(y), atol=scale, rtol=0)


def full_matrix(p: Preprocessor, in_size: tuple[int, int]) -> np.ndarray:
    """The whole per-channel map as a (out_h*out_w, H*W) matrix, one one-hot frame at a time."""
    height, width = in_size
    columns = []
    for k in range(height * width):
        one_hot = np.zeros(height * width, np.float32)
        one_hot[k] = 1.0
        out = p(np.repeat(one_hot.reshape(height, width, 1), 3, axis=2))
        assert np.array_equal(out[:, :, 0], out[:, :, 1]) and np.array_equal(out[:, :, 0], out[:, :, 2])
        columns.append(out[:, :, 0].ravel())
    return np.stack(columns, axis=1).astype(np.float64)


# Integer and non-integer factors, one axis kept, identity, and crops (wide, tall, odd).
NORM_CASES = [
    ((12, 16), (6, 8), "resize"), ((13, 11), (5, 4), "resize"), ((12, 7), (5, 3), "resize"),
    ((9, 14), (9, 5), "resize"), ((7, 9), (7, 9), "resize"),
    ((10, 20), (4, 4), "center_crop"), ((21, 8), (6, 5), "center_crop"), ((9, 13), (5, 7), "center_crop"),
]


@pytest.mark.parametrize(("in_size", "out_size", "mode"), NORM_CASES)
def test_operator_norm_equals_the_norm_of_the_full_map(in_size, out_size, mode) -> None:
    p = Preprocessor(out_size, mode)
    full = full_matrix(p, in_size)
    rows, cols = p.axis_matrices(in_size)
    top, left, height, width = p.crop_box(in_size)
    select = np.zeros((height * width, in_size[0] * in_size[1]))
    for i in range(height):
        for j in range(width):
            select[i * width + j, (top + i) * in_size[1] + left + j] = 1.0
    np.testing.assert_allclose(full, np.kron(rows, cols) @ select, atol=1e-6)
    assert p.operator_norm(in_size) == pytest.approx(np.linalg.norm(full, 2), rel=1e-6)


def test_operator_norm_of_a_box_downscale_is_one_over_sqrt_of_the_box_area() -> None:
    # Downscaling by 2 in each axis averages 2x2 boxes: each 1-D factor has norm 1/sqrt(2).
    assert Preprocessor((60, 80)).operator_norm((120, 160)) == pytest.approx(0.5, rel=1e-6)
    # docs/guarantee.md's worked number: 640 x 480, centre crop 480 x 480, then 224 x 224.
    assert Preprocessor((224, 224), "center_crop").operator_norm((480, 640)) == pytest.approx(224 / 480)


@settings(max_examples=100, deadline=None)
@given(sizes=downscales(max_out=64, max_extra=300), mode=MODES)
@example(sizes=((97, 131), (64, 64)), mode="resize")
@example(sizes=((480, 640), (224, 224)), mode="center_crop")
@example(sizes=((65, 64), (64, 64)), mode="resize")
def test_closed_form_norm_equals_the_norm_of_the_probed_axis_matrices(sizes, mode: str) -> None:
    in_size, out = sizes
    p = Preprocessor(out, mode)
    rows, cols = p.axis_matrices(in_size)
    _, _, crop_h, crop_w = p.crop_box(in_size)
    for matrix, n_in in ((rows, crop_h), (cols, crop_w)):  # the premises of the closed form
        assert matrix.min() >= 0
        np.testing.assert_allclose(matrix.sum(axis=1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(matrix.sum(axis=0), matrix.shape[0] / n_in, rtol=1e-6)
    probed = np.linalg.norm(rows, 2) * np.linalg.norm(cols, 2)
    assert p.operator_norm(in_size) == pytest.approx(probed, rel=1e-6)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), sizes=downscales(max_out=10, max_extra=4), mode=MODES)
def test_operator_norm_bounds_every_perturbation_and_is_attained(data, sizes, mode) -> None:
    in_size, out = sizes
    p = Preprocessor(out, mode)
    norm = p.operator_norm(in_size)
    top, left, height, width = p.crop_box(in_size)
    values = st.lists(finite, min_size=in_size[0] * in_size[1], max_size=in_size[0] * in_size[1])
    delta = np.array(data.draw(values), np.float32).reshape(in_size)
    moved = p.linear_map(np.repeat(delta[top : top + height, left : left + width, None], 3, axis=2))
    assert np.linalg.norm(moved[:, :, 0]) <= norm * np.linalg.norm(delta) * (1 + 1e-5) + 1e-6
    # The bound is tight: the top singular vectors of the two factors reach it.
    rows, cols = p.axis_matrices(in_size)
    worst = np.outer(np.linalg.svd(rows)[2][0], np.linalg.svd(cols)[2][0]).astype(np.float32)
    reached = np.linalg.norm(p.linear_map(np.repeat(worst[:, :, None], 3, axis=2))[:, :, 0])
    assert reached == pytest.approx(norm * np.linalg.norm(worst), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize(("in_size", "reason"), [((0, 10), "in_size"), ((7, 8), "7x8.*8x8"), ((8,), "in_size")])
def test_operator_norm_rejects_bad_sizes(in_size, reason: str) -> None:
    with pytest.raises(ImageError, match=reason):
        Preprocessor((8, 8)).operator_norm(in_size)


def counting(fn, name: str, calls: list[str]):
    """``fn``, appending ``name`` to ``calls`` on every call."""
    def wrapper(*args, **kwargs):
        calls.append(name)
        return fn(*args, **kwargs)
    return wrapper


def instance_state(p: Preprocessor) -> dict[str, int]:
    """Every attribute of ``p`` with its shallow size: a per-size cache would show up here."""
    return {name: sys.getsizeof(value) for name, value in vars(p).items()}


@pytest.mark.parametrize("mode", ["resize", "center_crop"])
def test_defect8_operator_norm_does_no_resize_and_keeps_no_per_size_state(monkeypatch, mode: str) -> None:
    # Issue 9, defect 8: the norm was probed with O(H + W) cv2.resize calls per new frame
    # size and cached per size without bound. It is now a closed form, O(1), stateless.
    p = Preprocessor((64, 64), mode)
    state = instance_state(p)
    calls: list[str] = []
    for owner, name in ((preprocess, "_resize"), (cv2, "resize")):
        monkeypatch.setattr(owner, name, counting(getattr(owner, name), name, calls))
    norms = [p.operator_norm((64 + i, 64 + 3 * i)) for i in range(1000)]
    assert not calls
    assert instance_state(p) == state
    _, _, crop_h, crop_w = p.crop_box((64 + 999, 64 + 3 * 999))
    assert norms[-1] == pytest.approx(64 / np.sqrt(crop_h * crop_w), rel=1e-12)


def assert_refused_naming(p: Preprocessor, shape: tuple[int, int], named: list[str]) -> None:
    """``p`` refuses a frame of ``shape``, and its norm, with a message holding every ``named`` text.

    The frame is NaN-filled float: the size must be refused before any pixel is read.
    """
    for frame in (np.full((*shape, 3), np.nan, np.float32), np.zeros((*shape, 3), np.uint8)):
        with pytest.raises(ImageError) as refused:
            p(frame)
        assert all(text in str(refused.value) for text in named), str(refused.value)
    with pytest.raises(ImageError, match=f"{shape[0]}x{shape[1]}"):
        p.operator_norm(shape)


@pytest.mark.parametrize(
    ("shape", "mode", "named"),
    [
        ((2, 2), "resize", ["2x2", "64x64", "upscal"]),
        ((63, 200), "resize", ["63x200", "64x64", "upscal"]),
        ((200, 63), "resize", ["200x63", "64x64"]),
        ((63, 200), "center_crop", ["63x200", "centre crop 63x63", "64x64"]),
        ((200, 63), "center_crop", ["200x63", "centre crop 63x63", "64x64"]),
    ],
)
def test_defect10_frames_smaller_than_the_model_input_are_refused_naming_the_sizes(shape, mode, named) -> None:
    # Issue 9, defect 10: a 2x2 PNG was upscaled to the 64x64 model input and certified.
    assert_refused_naming(Preprocessor((64, 64), mode), shape, named)


@pytest.mark.parametrize(
    ("shape", "mode", "expected_size", "named"),
    [
        ((96, 129), "resize", (96, 128), ["96x129", "expected", "96x128"]),
        ((100, 128), "center_crop", (96, 128), ["100x128", "expected", "96x128"]),
        ((200, 127), "center_crop", (0, 128), ["200x127", "expected", "anyx128"]),
    ],
)
def test_defect10_frames_of_another_size_than_expected_are_refused(shape, mode, expected_size, named) -> None:
    assert_refused_naming(Preprocessor((64, 64), mode, expected_size=expected_size), shape, named)


@pytest.mark.parametrize(("shape", "mode"), [((64, 64), "resize"), ((64, 64), "center_crop"),
                                             ((64, 65), "resize"), ((96, 128), "center_crop")])
def test_defect10_frames_at_least_the_model_input_pass(shape, mode: str) -> None:
    p = Preprocessor((64, 64), mode)
    frame = random_rgb(*shape)
    assert p(frame).shape == (64, 64, 3) and 0 < p.operator_norm(shape) <= 1
    if shape == (64, 64):  # the model input size itself: identity, norm 1
        assert np.array_equal(p(frame), frame.astype(np.float32) / 255.0) and p.operator_norm(shape) == 1.0


@pytest.mark.parametrize(
    ("shape", "mode", "expected_size"),
    [((1080, 1920), "resize", (1080, 1920)), ((96, 128), "resize", (0, 128)),
     ((300, 128), "center_crop", (0, 128)), ((96, 128), "resize", (0, 0))],
)
def test_expected_size_accepts_its_own_size_and_any_size_in_a_zero_axis(shape, mode, expected_size) -> None:
    p = Preprocessor((64, 64), mode, expected_size=expected_size)
    assert p(random_rgb(*shape)).shape == (64, 64, 3) and 0 < p.operator_norm(shape) <= 1


@settings(max_examples=200, deadline=None)
@given(in_size=st.tuples(st.integers(1, 200), st.integers(1, 200)),
       out=st.tuples(st.integers(1, 100), st.integers(1, 100)), mode=MODES)
def test_a_frame_is_accepted_exactly_when_it_is_at_least_the_model_input(in_size, out, mode: str) -> None:
    # In center_crop mode too: the crop is at least the output in both axes iff the frame is.
    p = Preprocessor(out, mode)
    if in_size[0] >= out[0] and in_size[1] >= out[1]:
        _, _, crop_h, crop_w = p.crop_box(in_size)
        assert out[0] <= crop_h <= in_size[0] and out[1] <= crop_w <= in_size[1]
    else:
        with pytest.raises(ImageError, match="smaller than the model input"):
            p.crop_box(in_size)


def test_linear_map_refuses_to_upscale_too() -> None:
    with pytest.raises(ImageError, match="smaller than the model input"):
        Preprocessor((8, 8)).linear_map(np.zeros((8, 7, 3), np.float32))
