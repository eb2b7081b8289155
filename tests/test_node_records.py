"""Issue 9, defect 11: records never echo unbounded input. An instruction of any length is
reported by a short prefix, its length and its SHA-256; a huge frame id or image encoding
is cut short. The node publishes a record per decision (several per second), so each must
stay small whatever a publisher sends."""
import hashlib
import json

import pytest
from sensor_msgs.msg import Image

from ros_peers.gate_probe import FAST, FAULT_MODEL, camera, merge, rgb_frame, running_gate

PARAMS = merge(FAST, FAULT_MODEL, {"node": {"diagnostics_period": 0.2}})
RECORD_LIMIT = 8192  # bytes of JSON; a record is about 2 kB


@pytest.mark.ros
def test_defect11_a_1mb_instruction_gives_small_records_that_carry_its_hash(ros_env, tmp_path):
    text = "go to the red box " + "x" * (2**20 - 18)
    digest = hashlib.sha256(text.encode()).hexdigest()
    with running_gate(ros_env, tmp_path, PARAMS) as (node, probe):
        assert probe.wait_connected() and probe.wait_ready()
        probe.say(text)
        cam = camera(probe).start()
        try:
            got = probe.wait_for(lambda: [c for c in probe.certs() if c.get("source") == "decision"
                                          and c["reason"].startswith("input: instruction longer")][2:], 60)
        finally:
            cam.stop()
        assert got, "no decisions on the long instruction"
        assert max(probe.certificate_bytes) < RECORD_LIMIT
        for record in got:
            assert not record["certified"]
            assert record["instruction"] == text[:80] and record["instruction_length"] == len(text)
            assert record["instruction_sha256"] == digest

        # A frame id and an encoding eight times a record's limit are cut short too. (Not 1 MB like
        # the instruction: a camera topic is best effort, and a 2 MB message goes out in so many
        # fragments that under a loaded suite nearly every send lost one; the wait ends as soon
        # as one arrives.)
        huge = "f" * 8 * RECORD_LIMIT
        bad = Image(height=2, width=2, encoding=huge, step=6)
        bad.data = bytes(12)
        bad.header.frame_id = huge
        n = len(probe.certs())
        malformed = probe.wait_for(lambda: [c for c in probe.certs()[n:] if c["reason"].startswith("malformed_image")],
                                   120, 0.2, lambda: probe.send(bad))
        assert malformed and len(json.dumps(malformed[0])) < RECORD_LIMIT
        n = len(probe.certs())
        long_id = probe.wait_for(lambda: [c for c in probe.certs()[n:] if c.get("frame_id", "").startswith("fff")],
                                 120, 0.2, lambda: probe.send_frame(rgb_frame(), probe.now(), frame_id=huge))
        assert long_id and len(json.dumps(long_id[0])) < RECORD_LIMIT
        assert max(probe.certificate_bytes) < RECORD_LIMIT
