"""The node fails closed when the model misbehaves: a model that raises, hangs past the
decision deadline or returns NaN makes the gate abstain within the deadline, report
ERROR on /diagnostics, keep running, and recover once the fault clears.

The "model" is tests/ros_peers/fault_policy.py, a fault injector driven by the instruction.
The model-fault test runs the node on simulation time (use_sim_time), where the decision
deadline counts: the test stops the clock before a hung decision starts and moves it past the
deadline by hand, so the time the watchdog reports is exact on a machine of any speed.
"""
import re

import pytest

from ros_peers.gate_probe import (FAST, FAULT_MODEL, SimClock, calls_file, camera, merge, model_call_words,
                                  running_gate)

DEADLINE = 1.0
PERIOD = 0.05  # watchdog period
PARAMS = merge(FAST, FAULT_MODEL, {"node": {"decision_deadline": DEADLINE, "watchdog_period": PERIOD,
                                            "max_frame_age": 1.0, "command_ttl": 0.5,
                                            "diagnostics_period": 0.1}})
SIM_PARAMS = merge(PARAMS, {"use_sim_time": True})
ERROR, OK = 2, 0


def _certified_after(probe, n_before):
    return [c for c in probe.certs()[n_before:] if c.get("source") == "decision" and c["certified"]]


def _level_after(probe, n_before, level):
    return [d for d in probe.snapshot()[3][n_before:] if d["level"] == level and d["phase"] == "active"]


def _recover(probe):
    """Clear the fault: a healthy instruction must be certified again and diagnostics go OK."""
    n_certs, n_diag = len(probe.certs()), len(probe.snapshot()[3])
    probe.say("go to the red ball")
    assert probe.wait_for(lambda: _certified_after(probe, n_certs), 30), "gating did not resume"
    assert probe.wait_for(lambda: _level_after(probe, n_diag, OK), 10), "diagnostics stayed in ERROR"


@pytest.mark.ros
def test_model_faults_abstain_report_error_and_recover(ros_env, tmp_path):
    env = dict(ros_env, FAULT_POLICY_CALLS=str(calls_file(tmp_path)))
    with running_gate(env, tmp_path, SIM_PARAMS) as (node, probe):
        sim = SimClock(probe).start()
        cam = camera(probe, stamp=sim)
        try:
            assert probe.wait_connected() and probe.wait_ready()
            cam.start()
            _recover(probe)  # healthy to begin with

            for fault, reason_start in (("raise", "error: RuntimeError"), ("nan", "model: returned NaN")):
                n_certs, n_diag = len(probe.certs()), len(probe.snapshot()[3])
                probe.say(fault)
                hits = probe.wait_for(lambda: [c for c in probe.certs()[n_certs:]
                                               if c["reason"].startswith(reason_start)], 30)
                assert hits, f"no abstain for {fault}"
                assert all(c["command"] == "stop" and not c["certified"] for c in hits)
                # The decision itself abstained at once, not the deadline watchdog after the deadline.
                assert all(c["source"] == "decision" for c in hits)
                assert not [c for c in probe.certs()[n_certs:] if c["reason"].startswith("deadline")]
                assert probe.wait_for(lambda: _level_after(probe, n_diag, ERROR), 10), f"no ERROR for {fault}"
                assert node.alive()
                _recover(probe)

            # A hung model: the watchdog abstains once the decision is past its deadline (sim time
            # here); its late result is discarded, and gating resumes when the model returns.
            # The clock stops; once a decision shows the node's clock there too, the hung decision
            # starts at exactly that time, and the clock jumps past the deadline while it runs.
            sim.running = False
            frozen, n_certs = sim(), len(probe.certs())
            assert probe.wait_for(lambda: [c for c in probe.certs()[n_certs:]
                                           if c["time"] == pytest.approx(frozen, abs=1e-6)], 30)
            calls, n_certs, n_diag = len(model_call_words(tmp_path)), len(probe.certs()), len(probe.snapshot()[3])
            probe.say("hang 3")
            assert probe.wait_for(lambda: "hang" in model_call_words(tmp_path)[calls:], 30), "no hung decision"
            assert not [c for c in probe.certs()[n_certs:] if c["reason"].startswith("deadline")]
            sim.t = frozen + DEADLINE + PERIOD / 2
            hung = probe.wait_for(lambda: [c for c in probe.certs()[n_certs:]
                                           if c["source"] == "watchdog" and c["reason"].startswith("deadline")], 30)
            sim.running = True
            assert hung, "no deadline abstain for a hung model"
            assert hung[0]["command"] == "stop"
            assert hung[0]["in_flight_s"] == pytest.approx(DEADLINE + PERIOD / 2, abs=1e-6)
            assert probe.wait_for(lambda: _level_after(probe, n_diag, ERROR), 10)
            late = [c for c in probe.certs()[n_certs:] if c.get("decision_id") == hung[0]["decision_id"]
                    and c["source"] == "decision"]
            assert not late  # nothing published for the hung decision but the abstain
            _recover(probe)
            assert probe.wait_for(lambda: [d for d in probe.snapshot()[3]
                                           if int(d["late_results_discarded"]) >= 1], 10)
            assert node.alive()

            # SIGINT while the model hangs: the abstain action still goes out and the node exits.
            n_certs = len(probe.certs())
            probe.say("hang 60")
            assert probe.wait_for(lambda: [c for c in probe.certs()[n_certs:]
                                           if c["reason"].startswith("deadline")], 30)
        finally:
            cam.stop()
            sim.stop()
        assert node.stop(timeout=30) == 0
        assert probe.wait_for(lambda: probe.certs()[-1]["reason"] == "shutdown", 10)
        assert probe.snapshot()[1][-1] == (0.0, 0.0, 0.0)
        assert "still busy" in node.log()


@pytest.mark.ros
def test_issue15_9_a_gate_that_keeps_abstaining_says_so_in_its_log_naming_the_reason(ros_env, tmp_path):
    """Every frame 10 s old: every decision abstains (stale_frame). The console used to show only
    "model loaded" and "gate active"; now a throttled WARN names the reason and its count."""
    with running_gate(ros_env, tmp_path, PARAMS) as (node, probe):
        assert probe.wait_connected() and probe.wait_ready()
        probe.say("go to the red box")
        cam = camera(probe, stamp=lambda: probe.now() - 10.0).start()
        try:
            stale = probe.wait_for(lambda: [c for c in probe.certs() if c["reason"].startswith("stale_frame")], 30)
            assert stale and not any(c.get("certified") for c in probe.certs())
            assert probe.wait_for(lambda: re.search(r"WARN.*abstaining: stale_frame.* x\d+ since its last warning",
                                                    node.log()), 30)
        finally:
            cam.stop()
