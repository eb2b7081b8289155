"""Malformed camera messages cannot kill, bloat or fool the node.

Hypothesis generates malformed sensor_msgs/Image and CompressedImage messages (wrong sizes
and steps, unknown and depth encodings, truncated data, huge dimensions, corrupt or cut
JPEG/PNG, mismatched formats) and the test publishes them to a running node. Every one is
checked in this process to be undecodable (so the generator cannot drift into valid
frames). The node must stay alive, keep its memory (RSS) bounded, publish nothing but the
abstain action meanwhile -- although its fault-injector "model" certifies `forward` for
any real frame -- and still certify a valid frame afterwards.
"""
import array

import cv2
import psutil
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from sensor_msgs.msg import CompressedImage, Image

from rs_guard_ros.images import ImageError, SUPPORTED_ENCODINGS, decode_compressed, decode_raw
from ros_peers.gate_probe import FAST, FAULT_MODEL, merge, rgb_frame, running_gate

MIN_SENT = 1100  # per transport: >= 2000 malformed messages in all
EXAMPLES = MIN_SENT  # hypothesis counts only examples that pass `assume`, so exactly this many are sent
RSS_GROWTH_LIMIT = 64 * 2**20  # bytes, after warm-up; one message is at most ~70 kB
BPP = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 2, "yuv422": 2, "uyvy": 2,
       "yuyv": 2, "yuv422_yuy2": 2}
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=16)
U32 = st.integers(0, 2**32 - 1)
PARAMS = merge(FAST, FAULT_MODEL, {"node": {"max_frame_age": 5.0, "diagnostics_period": 0.5}})


# -- raw sensor_msgs/Image ---------------------------------------------------------------

@st.composite
def malformed_raw(draw) -> dict:
    """Image fields with exactly one kind of defect."""
    encoding = draw(st.sampled_from(sorted(BPP)))
    height, width = draw(st.integers(1, 64)), draw(st.integers(1, 64))
    row = width * BPP[encoding]
    step = row + draw(st.integers(0, 8))
    defect = draw(st.sampled_from(["length", "step", "encoding", "huge", "zero"]))
    if defect == "length":  # truncated or too long
        n = draw(st.integers(0, step * height * 2).filter(lambda k: k != step * height))
    elif defect == "step":  # rows shorter than the pixels they hold
        step = draw(st.integers(0, row - 1)) if row > 1 else 0
        n = step * height
    elif defect == "encoding":
        encoding = draw(st.one_of(TEXT, st.sampled_from(["32FC1", "16UC1", "bayer_rggb8", "8UC3", "jpeg"]))
                        .filter(lambda e: e.strip().lower() not in SUPPORTED_ENCODINGS))
        n = step * height
    elif defect == "huge":  # dimensions far beyond the data (and the pixel budget)
        height, width = draw(st.integers(2**16, 2**32 - 1)), draw(st.integers(2**12, 2**32 - 1))
        step, n = draw(U32), draw(st.integers(0, 4096))
    else:  # an empty frame
        height, width = draw(st.sampled_from([(0, width), (height, 0), (0, 0)]))
        n = step * height
    data = draw(st.binary(min_size=min(n, 64), max_size=min(n, 64))) * (n // 64 + 1)
    return {"height": height, "width": width, "encoding": encoding, "is_bigendian": draw(st.integers(0, 1)),
            "step": step, "data": data[:n]}


def raw_message(fields: dict) -> Image:
    msg = Image(height=fields["height"], width=fields["width"], encoding=fields["encoding"],
                is_bigendian=fields["is_bigendian"], step=fields["step"])
    msg.data = array.array("B", fields["data"])
    return msg


# -- sensor_msgs/CompressedImage -----------------------------------------------------------

def _encoded(ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, rgb_frame(3, (48, 64)))
    assert ok
    return buf.tobytes()


JPEG, PNG = _encoded(".jpg"), _encoded(".png")


def _sof_offset(jpeg: bytes) -> int:
    """Offset of the height field in the first start-of-frame segment (baseline SOF0)."""
    return jpeg.index(b"\xff\xc0") + 5


@st.composite
def malformed_compressed(draw) -> dict:
    """CompressedImage fields with one kind of defect."""
    defect = draw(st.sampled_from(["cut_jpeg", "cut_png", "garbage", "header", "bomb", "format", "depth",
                                   "scribble"]))
    fmt = draw(st.sampled_from(["jpeg", "rgb8; jpeg compressed bgr8", "", "png"]))
    if defect == "cut_jpeg":
        data, fmt = JPEG[:draw(st.integers(0, len(JPEG) - 3))], "jpeg"
    elif defect == "cut_png":
        data, fmt = PNG[:draw(st.integers(0, len(PNG) - 13))], "png"
    elif defect == "garbage":
        data = draw(st.binary(max_size=4096))
    elif defect in ("header", "bomb"):  # zero or gigantic dimensions in the JPEG frame header
        at = _sof_offset(JPEG)
        size = (0, draw(st.integers(0, 65535))) if defect == "header" else (65535, 65535)
        size = size if draw(st.booleans()) else size[::-1]
        data = JPEG[:at] + size[0].to_bytes(2, "big") + size[1].to_bytes(2, "big") + JPEG[at + 4:]
        fmt = "jpeg"
    elif defect == "format":  # the format names the other codec
        data, fmt = (JPEG, "png") if draw(st.booleans()) else (PNG, "jpeg")
    elif defect == "depth":
        data, fmt = PNG, draw(st.sampled_from(["16UC1; compressedDepth", "32FC1; compressedDepth png"]))
    else:  # random bytes overwritten anywhere; kept only if the decoder rejects the result
        data = bytearray(JPEG)
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        data = bytes(data)
    return {"format": fmt, "data": data}


def compressed_message(fields: dict) -> CompressedImage:
    msg = CompressedImage(format=fields["format"])
    msg.data = array.array("B", fields["data"])
    return msg


def _is_malformed(decode, fields) -> bool:
    try:
        decode(**fields)
    except ImageError:
        return True
    return False


# -- the test --------------------------------------------------------------------------------

@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.parametrize("transport", ["raw", "compressed"])
def test_malformed_images_only_ever_yield_abstain_and_the_node_survives(ros_env, tmp_path, transport):
    compressed = transport == "compressed"
    params = merge(PARAMS, {"node": {"image_transport": transport, "use_stamped": compressed}})
    strategy, build = (malformed_compressed(), compressed_message) if compressed else (malformed_raw(), raw_message)
    decode = decode_compressed if compressed else decode_raw
    with running_gate(ros_env, tmp_path, params, compressed=compressed, stamped=compressed) as (node, probe):
        assert probe.wait_connected() and probe.wait_ready()
        probe.say("go to the red object")
        assert probe.wait_for(lambda: probe.snapshot()[0], 10)
        process = psutil.Process(node.pid)
        sent, rss = [], []

        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(fields=strategy)
        def publish_malformed(fields):
            assume(_is_malformed(decode, fields))  # only the "scribble" case can decode; never send it
            probe.send(build(fields))
            sent.append(1)
            if len(sent) == 200:
                rss.append(process.memory_info().rss)  # after warm-up

        publish_malformed()
        assert len(sent) >= MIN_SENT
        probe.wait_for(lambda: False, timeout=1.0)  # let the node drain
        assert node.alive()
        growth = process.memory_info().rss - rss[0]
        assert growth < RSS_GROWTH_LIMIT, f"RSS grew by {growth / 2**20:.1f} MiB"
        commands, twists, certificates, _ = probe.snapshot()
        assert set(commands) == {"stop"} and set(twists) == {(0.0, 0.0, 0.0)}
        assert not any(c.get("certified") for c in certificates)
        malformed = [c for c in certificates if c["reason"].startswith("malformed_image")]
        print(f"{transport}: sent {len(sent)} malformed, node answered {len(malformed)} (newest-only drops the rest),"
              f" RSS growth {growth / 2**20:.1f} MiB")
        assert len(malformed) >= 50, "the node decoded too few of the messages to prove anything"

        # Still alive and still gating: a real frame is certified (the injector says "go straight").
        frame = rgb_frame(5)
        valid = (compressed_message({"format": "jpeg", "data": cv2.imencode(".jpg", frame)[1].tobytes()})
                 if compressed else probe.image_msg(frame))
        assert probe.wait_for(lambda: [c for c in probe.certs() if c.get("certified")], 30, 0.05,
                              lambda: probe.send(valid))
        assert probe.wait_for(lambda: (0.25, 0.0, 0.0) in probe.snapshot()[1], 10)
