"""Issue 17 on a real node: two cameras and the joint state from a peer process, synchronised by
stamp, every view and the state under the rules of one camera -- each failure an abstain whose
reason names the camera or what was wrong with the state. Simulated time throughout (the probe
drives /clock), so no outcome depends on the machine's speed. (The watchdog's bound, max_frame_age
plus one watchdog period, is the one-camera watchdog's, shown exactly in tests/test_node.py.)

The model is tests/ros_peers/two_view_policy.py, a two-view stand-in that certifies `forward`.
"""
import numpy as np
import pytest
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState

from ros_peers.gate_probe import FAST, Repeater, SimClock, _stamp, merge, rgb_frame, running_gate

# The peer publishes every view and the state stamped alike, then moves simulated time on by one
# TICK, so stamps differ by exact ticks however slow the machine. A decision can still see the
# newest front frame before the rear frame of the same tick arrives: SKEW allows two ticks of that.
FRAME_AGE, TICK, SKEW, PERIOD = 0.5, 0.05, 0.12, 0.1
PARAMS = merge(FAST, {
    "use_sim_time": True,
    "model": {"backend": "plugin", "path": "two_view_policy:make_policy", "device": "cpu"},
    "cameras": {"names": ["front", "rear"]},  # topics front/image and rear/image, the defaults
    "state": {"topic": "joint_states", "joint_names": ["wheel_left", "wheel_right"], "max_age": 0.3},
    "node": {"max_frame_age": FRAME_AGE, "command_ttl": FRAME_AGE, "max_camera_skew": SKEW,
             "watchdog_period": PERIOD, "decision_deadline": 10.0, "diagnostics_period": 0.2}})
FORWARD = (0.25, 0.0, 0.0)
JOINTS = ("wheel_left", "wheel_right")


class Rig:
    """The peer's cameras and joint-state publisher, on the probe's node, stamping sim time and
    advancing it one TICK per tick while the clock runs."""

    def __init__(self, probe, sim):
        self.probe, self.sim = probe, sim
        self.pubs = {name: probe.node.create_publisher(Image, f"{name}/image", qos_profile_sensor_data)
                     for name in ("front", "rear")}
        self.state_pub = probe.node.create_publisher(JointState, "joint_states", qos_profile_sensor_data)
        self.offsets = {"front": 0.0, "rear": 0.0}  # stamp offset per camera (s); None: camera stopped
        self.broken: set[str] = set()
        self.joints, self.state_offset = JOINTS, None  # what the joint state names; its stamp offset (None: off)
        self.frame = rgb_frame(shape=(48, 64))

    def tick(self, _=None) -> None:
        t = self.sim()
        for name, offset in self.offsets.items():
            if offset is None:
                continue
            msg = self.probe.image_msg(self.frame, t + offset, name)
            if name in self.broken:
                msg.encoding = "no-such-encoding"
            self.pubs[name].publish(msg)
        if self.state_offset is not None:
            state = JointState(name=list(self.joints), position=[0.1] * len(self.joints))
            state.header.stamp.sec, state.header.stamp.nanosec = _stamp(t + self.state_offset)
            self.state_pub.publish(state)
        if self.sim.running:
            self.sim.t += TICK


def _decisions(probe, start=0):
    return [c for c in probe.certs()[start:] if c.get("source") == "decision"]


def _expect(probe, start, predicate, what):
    got = probe.wait_for(lambda: [c for c in probe.certs()[start:] if predicate(c)], 60)
    assert got, f"no record: {what}"
    return got[0]


@pytest.mark.ros
def test_issue17_two_cameras_and_the_joint_state_are_gated_together_and_each_fault_abstains_naming_it(
        ros_env, tmp_path):
    with running_gate(ros_env, tmp_path, PARAMS) as (node, probe):
        sim = SimClock(probe, step=0.0).start()  # the rig moves time on
        rig = Rig(probe, sim)
        peer = Repeater(rig.tick, TICK).start()
        try:
            assert probe.wait_for(lambda: all(p.get_subscription_count() for p in [*rig.pubs.values(), rig.state_pub]))
            assert probe.wait_for(lambda: probe.instruction_pub.get_subscription_count()) and probe.wait_ready()
            probe.say("go to the red box")

            # No joint state yet: every decision abstains with no_state.
            absent = _expect(probe, 0, lambda c: c.get("source") == "decision" and c["reason"] != "no_instruction",
                             "a decision without state")
            assert absent["reason"] == "no_state" and not absent["certified"]
            rig.state_offset = 0.0

            # All fresh, stamped alike, the state complete: certified, both views in the record.
            ok = _expect(probe, 0, lambda c: c.get("source") == "decision" and c["certified"], "certified")
            assert ok["command"] == "forward" and set(ok["cameras"]) == {"front", "rear"}
            assert set(ok["radius_cameras"]) == {"front", "rear"} and ok["state_joints"] == 2
            assert ok["cameras"]["front"]["stamp"] == ok["cameras"]["rear"]["stamp"]
            assert FORWARD in probe.snapshot()[1]

            for change, prefix, reason_part in (
                    (lambda: rig.offsets.update(rear=-2 * SKEW), "camera_skew", "between rear and front"),
                    (lambda: rig.broken.add("rear"), "malformed_image", "rear:"),
                    (lambda: setattr(rig, "joints", ("wheel_left",)), "malformed_state", "'wheel_right'"),
                    (lambda: setattr(rig, "state_offset", -1.0), "stale_state", "state.max_age 0.3 s"),
                    (lambda: setattr(rig, "state_offset", None), "stale_state", "")):  # the state stops
                n = len(probe.certs())
                change()
                bad = _expect(probe, n, lambda c: c.get("reason", "").startswith(prefix), prefix)
                assert not bad["certified"] and bad["command"] == "stop" and reason_part in bad["reason"], bad
                later = [c for c in _decisions(probe, probe.certs().index(bad)) if c["certified"]]
                assert not later, f"certified while {prefix}"
                rig.offsets, rig.broken, rig.joints, rig.state_offset = {"front": 0.0, "rear": 0.0}, set(), JOINTS, 0.0
                n = len(probe.certs())
                assert _expect(probe, n, lambda c: c.get("source") == "decision" and c["certified"], "resumed")

            # The rear camera stops: no abstain while its newest frame is younger than max_frame_age
            # (checked with simulated time standing still), the watchdog's abstain naming it once older.
            n = len(probe.certs())
            rig.offsets["rear"] = None
            stopped = sim.t
            assert probe.wait_for(lambda: sim.t > stopped + FRAME_AGE / 2)
            sim.running = False
            probe.wait_for(lambda: False, 1.0)  # wall time passes, simulated time does not
            assert not [c for c in probe.certs()[n:] if c.get("source") == "watchdog"]
            sim.running = True
            stale = _expect(probe, n, lambda c: c.get("source") == "watchdog"
                            and c["reason"].startswith("stale_frame: rear:"), "rear camera stopped")
            assert stale["command"] == "stop" and FRAME_AGE < stale["frame_age"]
        finally:
            peer.stop()
            sim.stop()
