"""pairing.py: frames of several cameras paired by stamp into decisions, the rule the node's
camera-skew check and rs-guard eval share (no ROS)."""
import subprocess
import sys

import pytest
from hypothesis import assume, given, settings, strategies as st

from rs_guard_ros.pairing import Stamped, StampPairing, pair_by_stamp, stamp_spread

CAMERAS = ("front", "rear", "wrist")


def recording(draw_frames):
    """Frames (camera, stamp) in recording order, each with a unique id as its item."""
    return [Stamped(camera, stamp, i) for i, (camera, stamp) in enumerate(draw_frames)]


FRAMES = st.lists(st.tuples(st.sampled_from(CAMERAS), st.floats(0.0, 10.0)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 3), FRAMES, st.floats(0.0, 0.5))
def test_every_frame_is_in_exactly_one_set_or_counted_unpaired_and_every_set_is_within_the_skew(k, raw, skew):
    cameras = CAMERAS[:k]
    frames = recording([(c, t) for c, t in raw if c in cameras])
    sets, unpaired = pair_by_stamp(frames, cameras, skew)
    used = [f.item for s in sets for f in s.values()]
    assert len(used) == len(set(used))  # no frame decided twice
    assert len(used) + sum(unpaired.values()) == len(frames)  # nothing lost, nothing invented
    for camera in cameras:
        assert sum(s[camera].camera == camera for s in sets) + unpaired[camera] == sum(
            f.camera == camera for f in frames)
    for s in sets:
        assert tuple(s) == cameras  # one frame of every camera, in cameras.names order
        assert stamp_spread({c: f.stamp for c, f in s.items()})[2] <= skew
    # sets come out in recording order: each set's last frame comes after the previous set's
    ends = [max(f.item for f in s.values()) for s in sets]
    assert ends == sorted(ends)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 100.0), max_size=30), st.floats(0.0, 0.5))
def test_one_camera_makes_every_frame_its_own_decision(stamps, skew):
    sets, unpaired = pair_by_stamp(recording([("front", t) for t in stamps]), ("front",), skew)
    assert [s["front"].item for s in sets] == list(range(len(stamps))) and not unpaired


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 100.0), unique=True, max_size=20).map(sorted), st.data(),
       st.floats(0.0, 0.009))
def test_synchronised_cameras_pair_every_frame_whatever_order_each_round_arrives_in(stamps, data, jitter):
    """Cameras triggered together (stamps within the skew, rounds apart): every frame pairs, with
    the frames of its own round, whatever order the cameras' messages of a round arrive in."""
    assume(all(b - a > 0.05 for a, b in zip(stamps, stamps[1:])))  # rounds apart by more than the skew
    frames = []
    for t in stamps:
        for camera in data.draw(st.permutations(CAMERAS)):
            frames.append((camera, t + (jitter if camera == "rear" else 0.0)))
    sets, unpaired = pair_by_stamp(recording(frames), CAMERAS, 0.01)
    assert len(sets) == len(stamps) and not unpaired
    assert [s["front"].stamp for s in sets] == stamps


def test_a_faster_camera_pairs_its_newest_frame_and_the_replaced_ones_are_unpaired():
    """front at 30 Hz, rear at 10 Hz: each rear frame takes the newest front frame, as the node's
    newest-frame mailbox does; the two front frames in between are unpaired."""
    frames = []
    for i in range(9):
        frames.append(("front", i / 30))
        if i % 3 == 2:
            frames.append(("rear", i / 30 + 0.001))
    sets, unpaired = pair_by_stamp(recording(frames), ("front", "rear"), 0.005)
    assert [round(s["front"].stamp * 30) for s in sets] == [2, 5, 8]
    assert unpaired == {"front": 6}


def test_a_set_that_spreads_too_far_drops_its_oldest_frame_and_the_others_wait_for_their_partner():
    sets, unpaired = pair_by_stamp(recording([("front", 0.0), ("rear", 0.2), ("front", 0.21)]), ("front", "rear"),
                                   0.05)
    assert [(s["front"].stamp, s["rear"].stamp) for s in sets] == [(0.21, 0.2)] and unpaired == {"front": 1}
    pairing = StampPairing(("front", "rear"), 0.05)
    assert pairing.add(Stamped("front", 1.0, "x")) is None
    pairing.finish()  # the recording ends with the front frame still waiting
    assert pairing.unpaired == {"front": 1}


@pytest.mark.parametrize("frame,message", [(Stamped("side", 0.0, None), "camera 'side' is not one of"),
                                           (Stamped("front", float("nan"), None), "is not a finite number")])
def test_a_frame_of_an_unknown_camera_or_without_a_finite_stamp_is_refused(frame, message):
    with pytest.raises(ValueError, match=message):
        StampPairing(("front", "rear"), 0.05).add(frame)


def test_the_node_abstains_on_the_same_spread_the_pairing_refuses():
    """ros/sync.py's camera-skew check and the pairing both read stamp_spread."""
    from rs_guard_ros.ros.gate_state import FrameTime
    from rs_guard_ros.ros.sync import CameraFrame, views_reason

    frames = {"front": CameraFrame("front", None, FrameTime(10.0, "header"), 10.0),
              "rear": CameraFrame("rear", None, FrameTime(10.08, "header"), 10.08)}
    reason = views_reason(10.1, frames, ("front", "rear"), 1.0, 0.1, 0.05, "deciding")
    assert reason.startswith("camera_skew: 0.080 s between front and rear")
    assert views_reason(10.1, frames, ("front", "rear"), 1.0, 0.1, 0.1, "deciding") is None
    sets, _ = pair_by_stamp([Stamped(c, f.frame.t, c) for c, f in frames.items()], ("front", "rear"), 0.05)
    assert sets == []


def test_the_stamp_rules_import_no_rclpy():
    """pairing and ros/sync are ROS-free: a fresh interpreter imports them without loading rclpy."""
    code = ("import sys, rs_guard_ros.pairing, rs_guard_ros.ros.sync; "
            "raise SystemExit('rclpy' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
