"""ros/gate_state.py: the node's output state machine, staleness rule, newest-frame mailbox
and diagnostics statistics, without ROS."""
import hashlib
import json
import math
import threading

import numpy as np
import pytest
from hypothesis import given, strategies as st

from rs_guard_ros.ros.gate_state import (INSTRUCTION_PREFIX_CHARS, AbstainWarnings, FrameTime, Level, LatestSlot,
                                         GateStats, Output, OutputGate, bounded, frame_reason, frame_time,
                                         instruction_fields, json_safe, reason_key, reason_kind, stale_reason,
                                         ttl_reason)

FORWARD = Output("forward", True, "certified")


# -- OutputGate --------------------------------------------------------------------------

def test_a_certified_command_is_republished_until_its_ttl_then_abstain():
    gate = OutputGate("stop")
    gate.on_decision(FORWARD, now=10.0)
    assert gate.tick(10.4, command_ttl=0.5) == FORWARD
    expired = gate.tick(10.51, command_ttl=0.5)
    assert (expired.command, expired.certified, expired.reason) == ("stop", False, "ttl_expired")
    assert gate.tick(20.0, command_ttl=0.5).command == "stop"  # stays abstain


def test_a_new_decision_restarts_the_ttl():
    gate = OutputGate("stop")
    gate.on_decision(FORWARD, 0.0)
    gate.on_decision(Output("left", True, "certified"), 0.4)
    assert gate.tick(0.8, command_ttl=0.5).command == "left"


def test_a_clock_jump_back_ends_a_certified_command():
    gate = OutputGate("stop")
    gate.on_decision(FORWARD, 100.0)
    assert gate.tick(0.0, command_ttl=0.5).command == "stop"  # simulation reset


def test_abstain_goes_quiet_after_the_timeout_and_never_with_zero():
    gate = OutputGate("stop")
    gate.on_decision(Output("stop", False, "radius_below_threshold"), 5.0)
    assert not gate.quiet(6.9, quiet_after=2.0)
    assert gate.quiet(7.0, quiet_after=2.0)
    assert not gate.quiet(1e6, quiet_after=0.0)


def test_continuous_abstain_is_counted_from_its_first_abstain_and_reset_by_a_command():
    gate = OutputGate("stop")
    gate.on_decision(Output("stop", False, "unknown_output"), 0.0)
    gate.on_decision(Output("stop", False, "radius_below_threshold"), 1.5)  # still the same abstain spell
    assert gate.quiet(2.0, quiet_after=2.0)
    gate.on_decision(FORWARD, 2.1)
    assert not gate.quiet(2.2, quiet_after=2.0)
    gate.tick(3.0, command_ttl=0.5)  # TTL over at 3.0: a new abstain spell starts
    assert not gate.quiet(4.9, quiet_after=2.0) and gate.quiet(5.0, quiet_after=2.0)


def test_quiet_counts_from_the_first_check_when_the_gate_starts_abstaining():
    gate = OutputGate("stop")  # loading: no decision yet
    assert not gate.quiet(3.0, quiet_after=1.0)
    assert gate.quiet(4.0, quiet_after=1.0)


def test_defect4_a_certified_commands_ttl_counts_from_its_frames_capture_time():
    gate = OutputGate("stop")
    gate.on_decision(FORWARD, now=10.3, valid_from=10.0)  # frame captured 0.3 s before publishing
    assert gate.tick(10.5, command_ttl=0.5) == FORWARD
    assert gate.tick(10.51, command_ttl=0.5).reason == "ttl_expired"  # 10.0 + 0.5, not 10.3 + 0.5


def test_issue15_1_a_different_instruction_supersedes_a_certified_command_the_same_one_does_not():
    gate = OutputGate("stop")
    gate.on_decision(Output("forward", True, "certified", "go to the red box"), 0.0)
    assert not gate.superseded_by("go to the red box")  # re-sent: the command stands
    assert gate.superseded_by("stop") and gate.superseded_by("go to the red box ")
    gate.force_abstain("superseded", 0.1)
    assert not gate.superseded_by("anything")  # nothing certified is standing


def test_issue15_9_repeated_abstains_warn_once_per_reason_per_period_with_their_count():
    warn = AbstainWarnings(period_s=5.0)
    first = warn.note("stale_frame: frame captured 1.2 s before publishing", 0.0)
    assert first and "stale_frame" in first and "x1" in first
    assert [warn.note(f"stale_frame: frame captured {i}.5 s before publishing", 0.1 * i) for i in range(1, 30)] \
        == [None] * 29  # throttled within the period ...
    assert warn.note("radius_below_threshold", 1.0)  # ... per reason: another reason warns at once
    later = warn.note("stale_frame: frame captured 9.0 s before publishing", 5.0)
    assert "x30" in later and "9.0 s" in later  # the count since the last warning, and the latest reason


def test_issue15_9_warning_keys_are_bounded():
    warn = AbstainWarnings(period_s=5.0, max_keys=3)
    notes = [warn.note(f"reason{chr(97 + i)}", 0.0) for i in range(10)]
    assert sum(n is not None for n in notes) == 4  # three keys, then everything else is "other"
    assert "other" in notes[3]


def test_issue15_3_run_time_parameter_changes_are_counted_for_diagnostics():
    stats = GateStats(0.0)
    stats.parameter_change("smoothing.alpha 0.001 -> 0.0005")
    stats.parameter_change("node.command_ttl 0.5 -> 0.4")
    snap = stats.snapshot(1.0, 0.001, 0)
    assert snap["parameter_changes"] == 2 and snap["last_parameter_change"] == "node.command_ttl 0.5 -> 0.4"


def test_force_abstain_reports_whether_a_command_was_withdrawn():
    gate = OutputGate("stop")
    gate.on_decision(FORWARD, 0.0)
    assert gate.force_abstain("stale_frame", 0.1) is True
    assert gate.force_abstain("no_instruction", 0.2) is False
    assert gate.current == Output("stop", False, "no_instruction")


# -- staleness ---------------------------------------------------------------------------

@pytest.mark.parametrize("now,frame,instr,max_instr,expected", [
    (10.0, None, 9.0, 0.0, "no_frame"),
    (10.0, 9.6, 9.0, 0.0, None),
    (10.0, 9.4, 9.0, 0.0, "stale_frame"),
    (10.0, 10.5, 9.0, 0.0, "stale_frame"),  # clock jumped back
    (10.0, 9.9, None, 0.0, "no_instruction"),
    (10.0, 9.9, 1.0, 0.0, None),  # 0 = never expires
    (10.0, 9.9, 1.0, 5.0, "stale_instruction"),
    (10.0, 9.9, 6.0, 5.0, None),
])
def test_stale_reason_checks_frame_then_instruction(now, frame, instr, max_instr, expected):
    why = stale_reason(now, frame, instr, max_frame_age=0.5, max_instruction_age=max_instr)
    assert (why.split(":")[0] if why else None) == expected


@given(now=st.floats(-1e6, 1e6), frame=st.floats(-1e6, 1e6), age=st.floats(0.0, 100.0))
def test_a_frame_is_fresh_exactly_when_its_age_is_within_max_frame_age(now, frame, age):
    why = stale_reason(now, frame, frame, max_frame_age=age, max_instruction_age=0.0)
    assert (why is None) == (0.0 <= now - frame <= age)


# -- the decided frame's age (defect 4) --------------------------------------------------

def test_defect4_a_frame_time_is_its_header_stamp_unless_unstamped():
    assert frame_time(99.5, arrival=100.0) == FrameTime(99.5, "header")
    assert frame_time(0.0, arrival=100.0) == FrameTime(100.0, "arrival")


@pytest.mark.parametrize("now,frame,expected", [
    (100.0, FrameTime(99.6, "header"), None),
    (100.0, FrameTime(90.0, "header"), "stale_frame"),  # stamped 10 s ago, however recently it arrived
    (100.0, FrameTime(100.05, "header"), None),  # ahead, within max_stamp_lead
    (100.0, FrameTime(100.5, "header"), "future_stamp"),
    (100.0, FrameTime(99.6, "arrival"), None),
    (100.0, FrameTime(99.4, "arrival"), "stale_frame"),
    (100.0, FrameTime(100.05, "arrival"), "stale_frame"),  # arrival after now: the clock jumped back
])
def test_defect4_frame_reason_bounds_the_age_of_the_decided_frame(now, frame, expected):
    why = frame_reason(now, frame, max_frame_age=0.5, max_stamp_lead=0.1, moment="publishing")
    assert (why.split(":")[0] if why else None) == expected
    if why:
        assert "publishing" in why and ("max_frame_age 0.5" in why or "max_stamp_lead 0.1" in why)


def test_defect4_a_huge_clock_offset_points_at_use_sim_time():
    future = frame_reason(100.0, FrameTime(1.7e9, "header"), 0.5, 0.1, "deciding")
    past = frame_reason(1.7e9, FrameTime(100.0, "header"), 0.5, 0.1, "deciding")
    near = frame_reason(100.0, FrameTime(90.0, "header"), 0.5, 0.1, "deciding")
    assert future.startswith("future_stamp") and "use_sim_time" in future
    assert past.startswith("stale_frame") and "use_sim_time" in past
    assert "use_sim_time" not in near


@given(now=st.floats(-1e6, 1e6), back=st.floats(-20.0, 20.0), max_age=st.floats(0.0, 10.0),
       lead=st.floats(0.0, 10.0), header=st.booleans())
def test_defect4_a_frame_passes_exactly_when_its_age_is_within_bounds(now, back, max_age, lead, header):
    frame = FrameTime(now - back, "header" if header else "arrival")
    age = now - frame.t
    fresh = age <= max_age and (-age <= lead if header else age >= 0.0)
    assert (frame_reason(now, frame, max_age, lead, "deciding") is None) == fresh


def test_defect4_ttl_reason_counts_from_the_capture_time():
    assert ttl_reason(10.4, valid_from=10.0, command_ttl=0.5) is None
    assert ttl_reason(10.6, valid_from=10.0, command_ttl=0.5).startswith("ttl_expired")


# -- bounded text in records (defect 11) --------------------------------------------------

@given(text=st.text(max_size=2000))
def test_defect11_instruction_fields_are_bounded_and_identify_the_instruction(text):
    fields = instruction_fields(text)
    assert text.startswith(fields["instruction"])
    assert len(fields["instruction"]) == min(len(text), INSTRUCTION_PREFIX_CHARS)
    assert fields["instruction_length"] == len(text)
    assert fields["instruction_sha256"] == hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    assert len(json.dumps(fields)) <= 12 * INSTRUCTION_PREFIX_CHARS + 200  # two \uXXXX escapes per char at worst


@given(a=st.text(max_size=300), b=st.text(max_size=300))
def test_defect11_instructions_with_the_same_prefix_differ_in_their_hash(a, b):
    long_a, long_b = "x" * INSTRUCTION_PREFIX_CHARS + a, "x" * INSTRUCTION_PREFIX_CHARS + b
    fa, fb = instruction_fields(long_a), instruction_fields(long_b)
    assert fa["instruction"] == fb["instruction"]
    assert (fa["instruction_sha256"] == fb["instruction_sha256"]) == (a == b)


def test_defect11_no_instruction_is_reported_as_none():
    assert instruction_fields(None) == {"instruction": None, "instruction_length": None, "instruction_sha256": None}


@given(text=st.text(max_size=1000), limit=st.integers(3, 400))
def test_defect11_bounded_text_is_short_and_marks_a_cut(text, limit):
    out = bounded(text, limit)
    assert len(out) <= limit
    assert out == text if len(text) <= limit else (out.endswith("...") and text.startswith(out[:-3]))


# -- reasons -----------------------------------------------------------------------------

@pytest.mark.parametrize("reason,kind", [
    ("certified", "certified"),
    ("radius_below_threshold", "uncertain"),
    ("unknown_output", "uncertain"),
    ("error: RuntimeError: injected", "fault"),
    ("deadline: decision deadline exceeded", "fault"),
    ("model: returned NaN or inf", "fault"),
    ("model: oracle returned labels outside the command set", "fault"),
    ("model_load_failed: no such file", "fault"),
    ("input: instruction is empty", "input"),
    ("malformed_image: data is truncated", "input"),
    ("stale_frame: last frame 0.7 s ago", "stale"),
    ("future_stamp: frame stamped 3 s ahead of the node clock", "stale"),
    ("future_stamp: frame stamped 3 s ahead of the node clock", "stale"),
    ("no_instruction", "stale"),
    ("loading", "lifecycle"),
])
def test_reason_kinds(reason, kind):
    assert reason_kind(reason) == kind


def test_reason_keys_are_short_and_do_not_grow_with_numbers():
    a = reason_key("malformed_image: data is truncated: 12 bytes, expected 36")
    b = reason_key("malformed_image: data is truncated: 99 bytes, expected 300")
    assert a == b == "malformed_image:data is truncated"
    assert reason_key("stale_frame: last frame 0.612 s ago") == reason_key("stale_frame: last frame 3.1 s ago")


@pytest.mark.parametrize("reason,key", [  # issue 15: the keys /diagnostics showed were cut mid-word
    (frame_reason(10.0, FrameTime(9.0, "header"), 0.5, 0.1, "publishing"),
     "stale_frame:frame captured # s before publishing"),  # was "...before publishing (max_frame_"
    (frame_reason(10.0, FrameTime(11.0, "header"), 0.5, 0.1, "deciding"),
     "future_stamp:frame stamped # s ahead of the node clock when"),
    (ttl_reason(10.0, 8.0, 0.5), "ttl_expired:the command of a frame captured # s ago expired"),
])
def test_reason_keys_of_the_gates_own_reasons_end_on_a_whole_word(reason, key):
    assert reason_key(reason) == key


_WORDS = st.lists(st.text("abcxyz_", min_size=1, max_size=15), min_size=1, max_size=12).map(" ".join)


@given(head=_WORDS, tail=_WORDS, limit=st.integers(8, 80))
def test_a_reason_key_is_the_longest_run_of_whole_words_within_the_limit(head, tail, limit):
    words, key = f"{head}:{tail}".split(), ""
    for word in words:  # the greedy answer: whole words while they fit
        if len(f"{key} {word}".strip()) > limit:
            break
        key = f"{key} {word}".strip()
    assert reason_key(f"{head}: {tail}", limit) == (key or words[0][:limit])


# -- LatestSlot --------------------------------------------------------------------------

def test_slot_keeps_only_the_newest_item_and_counts_drops():
    slot = LatestSlot()
    assert slot.put(1) is False and slot.put(2) is True and slot.put(3) is True
    assert slot.take(0) == 3 and slot.dropped == 2
    assert slot.take(0.01) is None  # nothing new


def test_slot_take_blocks_until_put_and_close_releases_takers():
    slot, got = LatestSlot(), []
    taker = threading.Thread(target=lambda: got.append(slot.take()))
    taker.start()
    slot.put("frame")
    taker.join(5)
    assert got == ["frame"]
    waiter = threading.Thread(target=lambda: got.append(slot.take()))
    waiter.start()
    slot.close()
    waiter.join(5)
    assert got == ["frame", None] and not waiter.is_alive()


def test_slot_clear_forgets_without_counting_a_drop():
    slot = LatestSlot()
    slot.put(1)
    slot.clear()
    slot.put(2)
    assert slot.dropped == 0 and slot.take(0) == 2


# -- GateStats ---------------------------------------------------------------------------

def test_stats_rates_fractions_percentiles_and_error_budget():
    stats = GateStats(start=0.0, window_s=10.0)
    for i in range(20):  # 20 decisions in 10 s, one in four certified
        stats.record(0.5 * i, certified=i % 4 == 0, reason="certified" if i % 4 == 0 else "radius_below_threshold",
                     latency_ms=float(i))
    snap = stats.snapshot(10.0, alpha=0.001, dropped=7)
    assert snap["decision_rate_hz"] == pytest.approx(2.0)
    assert snap["certified_fraction"] == pytest.approx(0.25)
    assert snap["abstain_reasons"] == {"radius_below_threshold": 15}
    assert snap["dropped_frames"] == 7
    assert snap["latency_p50_ms"] == pytest.approx(np.percentile(np.arange(20.0), 50))
    assert snap["latency_p99_ms"] == pytest.approx(np.percentile(np.arange(20.0), 99))
    assert snap["false_certifications_per_hour_bound"] == pytest.approx(0.001 * 2.0 * 3600)


def test_stats_window_forgets_old_decisions():
    stats = GateStats(start=0.0, window_s=10.0)
    stats.record(1.0, True, "certified")
    snap = stats.snapshot(100.0, alpha=0.01, dropped=0)
    assert snap["decision_rate_hz"] == 0.0 and snap["decisions"] == 1


def test_level_is_error_on_a_fault_until_a_healthy_decision():
    stats = GateStats(start=0.0)
    assert stats.level()[0] == Level.OK
    stats.record(1.0, False, "error: RuntimeError: boom")
    assert stats.level()[0] == Level.ERROR
    stats.event("stale_frame: last frame 1 s ago")  # a stale camera does not clear the fault
    assert stats.level()[0] == Level.ERROR
    stats.record(2.0, False, "radius_below_threshold")  # the model answered
    assert stats.level()[0] == Level.OK
    stats.event("stale_frame: last frame 1 s ago")
    assert stats.level()[0] == Level.WARN
    stats.record(3.0, True, "certified")
    assert stats.level() == (Level.OK, "gating")


def test_reason_counts_are_bounded():
    stats = GateStats(start=0.0)
    for i in range(200):
        stats.event(f"error: Error{chr(65 + i % 26)}{chr(65 + i // 26)}: x")
    assert len(stats.reasons) <= 25 and stats.reasons["other"] > 0
    assert sum(stats.reasons.values()) == 200


def test_malformed_messages_are_counted():
    stats = GateStats(start=0.0)
    stats.record(0.0, False, "malformed_image: data is truncated")
    assert stats.snapshot(1.0, 0.001, 0)["malformed_messages"] == 1


def test_json_safe_handles_numpy_and_non_finite_values():
    value = {"a": np.float32(1.5), "b": [np.int64(3), float("nan")], 4: (float("inf"),)}
    out = json_safe(value)
    assert json.loads(json.dumps(out, allow_nan=False)) == {"a": 1.5, "b": [3, None], "4": [None]}
    assert math.isclose(out["a"], 1.5)
