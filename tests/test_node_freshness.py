"""Issue 9, defect 4: only fresh frames can drive the robot. The age of the frame that was
DECIDED -- from its header stamp, or its arrival when unstamped -- is checked against
node.max_frame_age before the model runs and again at publishing; a stamp ahead of the
node clock by more than node.max_stamp_lead is refused; a certified command lives
node.command_ttl from its frame's capture time. Times compared are the node's own clock
(the records' `time`, `frame_time`, `frame_age`), never the test's wall clock.

The tests run the node on simulation time (use_sim_time) and move the clock by hand: it
stands still while a frame is decided, so a frame's age is what the test made it, on a
machine of any speed, and it jumps exactly where a rule's bound lies.

The "model" is tests/ros_peers/fault_policy.py: it certifies `forward` for any real frame,
so every abstain here is the freshness rule at work.
"""
import contextlib

import pytest

from ros_peers.gate_probe import (FAST, FAULT_MODEL, Repeater, SimClock, calls_file, camera, merge, model_call_words,
                                  rgb_frame, running_gate)

MAX_FRAME_AGE, STAMP_LEAD, PERIOD = 0.5, 0.1, 0.1
PARAMS = merge(FAST, FAULT_MODEL, {"node": {"max_frame_age": MAX_FRAME_AGE, "max_stamp_lead": STAMP_LEAD,
                                            "command_ttl": 0.5, "watchdog_period": PERIOD, "publish_rate": 10.0,
                                            "decision_deadline": 10.0, "diagnostics_period": 0.2}})
SIM_PARAMS = merge(PARAMS, {"use_sim_time": True})
HANG_S = 3.0  # wall s per model call of the slow decision: the test moves the clock while it runs
FORWARD = (0.25, 0.0, 0.0)
ZERO = (0.0, 0.0, 0.0)
TASK = "go to the red box"


@contextlib.contextmanager
def _gate_on_a_stopped_clock(env, tmp_path, params):
    """The node on simulation time, active and told TASK; the clock then stands still (the test
    moves `sim.t` by hand). Yields (node, probe, sim)."""
    with running_gate(env, tmp_path, params) as (node, probe):
        sim = SimClock(probe).start()
        try:
            assert probe.wait_connected() and probe.wait_ready()
            sim.running = False
            probe.say(TASK)
            yield node, probe, sim
        finally:
            sim.stop()


def _decisions(probe, start=0):
    return [c for c in probe.certs()[start:] if c.get("source") == "decision"]


def _stream(probe, clock, offset_s, frame_id="camera"):
    """A camera whose frames are stamped `offset_s` from `clock()` (None: unstamped)."""
    frame = rgb_frame()
    return Repeater(lambda i: probe.send_frame(frame, 0.0 if offset_s is None else clock() + offset_s,
                                               frame_id), 0.05)


def _run(probe, clock, offset_s, predicate, timeout=30):
    """Stream frames stamped `offset_s` from `clock()` until `predicate(new decisions)` holds; the
    new decisions and the Twists published meanwhile."""
    n_certs, n_twists = len(probe.certs()), len(probe.snapshot()[1])
    cam = _stream(probe, clock, offset_s).start()
    try:
        got = probe.wait_for(lambda: predicate(_decisions(probe, n_certs)), timeout)
    finally:
        cam.stop()
    assert got, f"no decisions as expected for frames stamped {offset_s} s from now"
    return _decisions(probe, n_certs), probe.snapshot()[1][n_twists:]


@pytest.mark.ros
def test_defect4_old_stamped_frames_never_drive_the_robot(ros_env, tmp_path):
    env = dict(ros_env, FAULT_POLICY_CALLS=str(calls_file(tmp_path)))
    with _gate_on_a_stopped_clock(env, tmp_path, SIM_PARAMS) as (node, probe, sim):
        # Stamped 10 s in the past, arriving now: never decided, never motion.
        old, twists = _run(probe, sim, -10.0, lambda d: len(d) >= 5)
        assert FORWARD not in twists
        for record in old:
            assert not record["certified"] and record["command"] == "stop"
            assert (record["reason"].startswith("stale_frame: frame captured")
                    and "before deciding" in record["reason"])
            assert record["frame_time_source"] == "header" and record["frame_age"] == pytest.approx(10.0)
            assert record["n_used"] == 0  # the model was not spent on it

        # Stamped in the future beyond max_stamp_lead: refused, with a hint when the offset is huge.
        ahead, twists = _run(probe, sim, 5.0, lambda d: len(d) >= 3)
        far, far_twists = _run(probe, sim, 1e6, lambda d: len(d) >= 3)
        assert FORWARD not in twists + far_twists
        assert all(not r["certified"] and r["reason"].startswith("future_stamp") for r in ahead + far)
        assert "use_sim_time" in far[-1]["reason"] and "use_sim_time" not in ahead[-1]["reason"]

        # Fresh stamps, and unstamped frames (their arrival is their time), are certified.
        fresh, twists = _run(probe, sim, 0.0, lambda d: [r for r in d if r["certified"]])
        assert FORWARD in twists
        certified = [r for r in fresh if r["certified"]][0]
        assert certified["frame_time_source"] == "header" and certified["frame_age"] == pytest.approx(0.0)
        assert certified["frame_time"] == certified["stamp"]
        # (A decision on the last fresh frame may still finish after this stream starts: the
        # unstamped frames' decisions are those whose header stamp is zero.)
        def unstamped_certified(decisions):
            return [r for r in decisions if r["certified"] and r["stamp"] == 0.0]

        unstamped, _ = _run(probe, sim, None, unstamped_certified)
        certified = unstamped_certified(unstamped)[0]
        assert (certified["frame_time_source"] == "arrival"
                and certified["frame_time"] == certified["frame_received"])

        # A frame fresh when decided but older than max_frame_age when the (slow) decision ends is
        # not published, although the camera kept streaming fresh frames meanwhile.
        probe.say(f"hang {HANG_S}")  # two model calls of HANG_S each
        sim.t += 2 * PARAMS["node"]["command_ttl"]  # the last certified command expires ...
        assert probe.wait_for(lambda: probe.snapshot()[1][-1] == ZERO, 10)  # ... and is over
        calls = len(model_call_words(tmp_path))
        n_certs, n_twists = len(probe.certs()), len(probe.snapshot()[1])
        cam = _stream(probe, sim, 0.0).start()
        try:
            assert probe.wait_for(lambda: "hang" in model_call_words(tmp_path)[calls:], 30), "no slow decision"
            sim.t += 2 * MAX_FRAME_AGE  # while the model runs on a frame stamped before this jump
            slow = probe.wait_for(lambda: [r for r in _decisions(probe, n_certs)
                                           if "before publishing" in r["reason"]], 30)
        finally:
            cam.stop()
        assert slow, "the slow decision's stale frame was not refused at publishing"
        twists = probe.snapshot()[1][n_twists:]
        late = slow[0]
        assert late["reason"].startswith("stale_frame") and not late["certified"] and late["label"] == "forward"
        assert late["frame_age"] == pytest.approx(2 * MAX_FRAME_AGE)
        assert FORWARD not in twists


@pytest.mark.ros
def test_defect4_a_command_expires_command_ttl_after_its_frame_was_captured(ros_env, tmp_path):
    """On simulation time the test moves by hand: the clock stands still while the frame is
    decided (however long that takes on this machine, the frame stays `age` old), then jumps to
    just before and just after the frame's stamp + ttl. Expiry is seen exactly there, never at
    publish time + ttl."""
    ttl, age, eps = 1.0, 0.6, 0.05
    params = merge(PARAMS, {"use_sim_time": True, "node": {"command_ttl": ttl, "max_frame_age": 2.0}})
    with _gate_on_a_stopped_clock(ros_env, tmp_path, params) as (node, probe, sim):
        n = len(probe.certs())
        frame = rgb_frame()
        # One frame captured `age` s before now, re-sent (best effort) until it is decided.
        stamp = probe.send_frame(frame, sim() - age)
        got = probe.wait_for(lambda: [c for c in _decisions(probe, n) if c["certified"]], 30, 0.2,
                             lambda: probe.send_frame(frame, stamp))
        assert got
        decision = got[0]
        assert decision["stamp"] == pytest.approx(stamp, abs=1e-6)
        assert decision["frame_time"] == decision["stamp"] and decision["frame_time_source"] == "header"

        n_twists = len(probe.snapshot()[1])
        sim.t = stamp + ttl - eps  # still valid: the next republish is `forward`, and nothing expired
        assert probe.wait_for(lambda: len(probe.snapshot()[1]) > n_twists, 30)
        assert probe.snapshot()[1][n_twists] == FORWARD
        assert not [c for c in probe.certs()[n:] if c["source"] == "ttl"]

        sim.t = stamp + ttl + eps  # past the frame's stamp + ttl, long before publish time + ttl
        expired = probe.wait_for(lambda: [c for c in probe.certs()[n:] if c["source"] == "ttl"], 30)
        assert expired, "the certified command never expired"
        assert expired[0]["time"] == pytest.approx(stamp + ttl + eps, abs=1e-6)
        assert expired[0]["time"] - decision["time"] < ttl


@pytest.mark.ros
def test_issue15_1_a_new_instruction_withdraws_the_standing_command_at_once(ros_env, tmp_path):
    """While a certified `forward` is being republished (TTL 5 sim s), an operator sends a new
    instruction: the abstain Twist goes out at once -- while simulation time stands still, so
    not on a republish tick -- and nothing but abstain follows. On the old code `forward` went on
    being republished until its TTL."""
    params = merge(PARAMS, {"use_sim_time": True, "node": {"max_frame_age": 5.0, "command_ttl": 5.0}})
    with running_gate(ros_env, tmp_path, params) as (node, probe):
        sim = SimClock(probe).start()
        try:
            assert probe.wait_connected() and probe.wait_ready()
            probe.say(TASK)
            cam = camera(probe, stamp=sim).start()
            assert probe.wait_for(lambda: FORWARD in probe.snapshot()[1], 30)
            cam.stop()
            n_republished = len(probe.snapshot()[1])
            assert probe.wait_for(lambda: len(probe.snapshot()[1]) >= n_republished + 3, 30)  # republished ...
            assert set(probe.snapshot()[1][n_republished:]) == {FORWARD}  # ... on its TTL
            sim.running = False  # simulation time stands still: no republish tick from here on
            n = len(probe.snapshot()[1])
            probe.say("stop")
            assert probe.wait_for(lambda: ZERO in probe.snapshot()[1][n:], 30), "the command was not withdrawn"
            withdrawn = probe.wait_for(lambda: [c for c in probe.certs() if c["source"] == "instruction"], 30)
            assert withdrawn[0]["reason"].startswith("superseded") and withdrawn[0]["command"] == "stop"
            sim.running = True  # time moves on, well within the old command's TTL
            first_zero = n + probe.snapshot()[1][n:].index(ZERO)
            assert probe.wait_for(lambda: len(probe.snapshot()[1]) >= first_zero + 5, 30)
            assert set(probe.snapshot()[1][first_zero:]) == {ZERO}
        finally:
            sim.stop()
