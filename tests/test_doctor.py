"""rs-guard doctor (rs_guard_ros.doctor): the summary is the exact statistics of certify.py at a
given speed, its verdict and advice follow from the deadline, the measurement recovers a known
cost, and the command reports JSON and a documented exit status on the demo VLA."""
import json
import subprocess
import sys
import types

import pytest
from hypothesis import given, settings, strategies as st

from rs_guard_ros import certify, config, doctor
from rs_guard_ros import guard as guard_mod
from test_guard import left_bright_frame, make_guard

# Frame age and command TTL far beyond any latency here, so that a test of the deadline sees the deadline alone.
LOOSE_AGES = {"node.max_frame_age": 30.0, "node.command_ttl": 30.0}
SLOW_FORWARD = {"commands.forward.radius_threshold": 0.5, **LOOSE_AGES}  # n0 32 + first look 375 = 407 samples


def rows(result):
    return {c["command"]: c for c in result["commands"]}


def test_summary_is_the_exact_sequential_outlook_of_each_threshold():
    cfg = config.from_flat(SLOW_FORWARD)
    r = doctor.summary(cfg, 200.0, 0.05)
    s = cfg.smoothing
    for name, threshold in cfg.thresholds().items():
        c = rows(r)[name]
        first = certify.sequential_looks(threshold, s.sigma, s.alpha, s.n_max)[0].n
        assert c["n_min"] == certify.samples_needed(threshold, s.sigma, s.alpha)
        assert (c["first_look"], c["samples_first_look"]) == (first, s.n0 + first)
        for p in doctor.P_TRUE:
            exact = certify.sequential_outlook(p, threshold, s.sigma, s.alpha, s.n_max)
            assert c[f"p={p}"]["expected_samples"] == pytest.approx(s.n0 + exact.expected_samples)
            assert c[f"p={p}"]["median_samples"] == s.n0 + exact.median_samples
            assert c[f"p={p}"]["certify_probability"] == pytest.approx(exact.certify_probability)
        # a consistent model stops at the first look, so its latency is that of the first look
        assert c["p=1.0"]["expected_samples"] == pytest.approx(s.n0 + first)
        assert c["latency_s"] == pytest.approx(0.05 + (s.n0 + first) / 200.0)
        assert c["decisions_per_s"] == pytest.approx(1.0 / c["latency_s"])
    assert rows(r)["forward"]["n_min"] == 301 and rows(r)["forward"]["samples_first_look"] == 407


def test_a_threshold_whose_first_look_misses_the_deadline_fails_with_exit_code_3_and_concrete_advice():
    cfg = config.from_flat(SLOW_FORWARD)
    r = doctor.summary(cfg, 200.0, 0.05, device="cpu")  # 2.0 s deadline: room for floor(1.95 * 200) = 390 samples
    assert r["samples_in_deadline"] == 390
    assert not rows(r)["forward"]["in_time"] and rows(r)["forward"]["n_min_in_time"]  # 333 fits, 407 does not
    assert rows(r)["left"]["in_time"] and rows(r)["stop"]["abstain"]
    assert r["feasible"] is False and r["exit_code"] == doctor.EXIT_TOO_SLOW == 3
    line = next(a for a in r["advice"] if a.startswith("forward:"))
    assert "threshold 0.5 needs 407 samples" in line and "2.08 s > decision_deadline 2 s" in line
    lower = doctor.max_threshold_in_time(cfg, 390)
    assert f"lower the threshold to {lower:g}" in line
    assert "raise node.decision_deadline to 2.6" in line  # 1.2 x 2.085 s, rounded up
    assert "use CUDA" in line and "smoothing.sigma" in line
    oversubscribed = doctor.summary(config.from_flat({**SLOW_FORWARD, "model.cpu_threads": 0}), 200.0, 0.05,
                                    device="cpu")
    assert any("model.cpu_threads" in a for a in oversubscribed["advice"])  # torch's one-thread-per-core default
    # The suggested threshold fits and the next one up does not: the suggestion is the largest.
    assert rows(doctor.summary(config.from_flat({"commands.forward.radius_threshold": lower}), 200.0, 0.05))[
        "forward"]["in_time"]
    assert not rows(doctor.summary(config.from_flat({"commands.forward.radius_threshold": lower + 0.01}), 200.0,
                                   0.05))["forward"]["in_time"]
    # So do the suggested deadline and sigma.
    assert doctor.summary(cfg, 200.0, 0.05, deadline_s=2.5)["exit_code"] == 0
    sigma = float(line.split("raise smoothing.sigma to ")[1].split()[0])
    assert doctor.summary(config.from_flat({**SLOW_FORWARD, "smoothing.sigma": sigma}), 200.0, 0.05)["feasible"]


def test_every_threshold_in_time_gives_exit_code_0_and_no_deadline_means_always_in_time():
    cfg = config.from_flat(SLOW_FORWARD)
    assert doctor.summary(cfg, 1000.0, 0.01)["exit_code"] == doctor.EXIT_OK
    r = doctor.summary(cfg, 1.0, 0.0, deadline_s=0.0)
    assert all(c["in_time"] for c in r["commands"]) and r["samples_in_deadline"] is None
    assert any("decision_deadline is 0" in a for a in r["advice"])


# The issue's turtlebot4 case: forward took 0.70 s, well inside the 1.5 s deadline, but every
# certificate went stale against max_frame_age 0.5 s. 0.05 s + 407 samples / 610 per s = 0.717 s.
TB4_LIKE = {"commands.forward.radius_threshold": 0.5, "node.decision_deadline": 1.5, "node.max_frame_age": 0.5,
            "node.command_ttl": 0.5}


def test_a_decision_within_its_deadline_but_older_than_max_frame_age_fails_with_exit_3_naming_the_parameter():
    r = doctor.summary(config.from_flat(TB4_LIKE), 610.0, 0.05, camera_latency_s=0.05)
    forward = rows(r)["forward"]
    assert forward["in_time"] and not forward["keeps_up"]
    assert r["exit_code"] == doctor.EXIT_TOO_SLOW and not r["feasible"]
    missed = {b["parameter"]: b for b in forward["bounds"] if not b["ok"]}
    assert missed["node.max_frame_age"]["needed"] == pytest.approx(0.05 + 0.05 + 407 / 610.0)
    line = next(a for a in r["advice"] if a.startswith("forward:") and "node.max_frame_age 0.5 s" in a)
    assert "stale_frame" in line and "raise node.max_frame_age to 1" in line
    assert "NO: node.max_frame_age, node.command_ttl" in doctor.format_report(r)


@settings(max_examples=200, deadline=None)
@given(latency=st.floats(0.001, 20.0), camera=st.floats(0.0, 1.0), ttl=st.floats(0.0, 30.0),
       rate=st.floats(0.1, 1000.0), following=st.none() | st.floats(0.001, 20.0))
def test_each_time_bound_holds_exactly_when_its_rule_does_and_its_advised_value_meets_it(latency, camera, ttl, rate,
                                                                                        following):
    cfg = config.from_flat({"node.max_frame_age": 30.0, "node.command_ttl": ttl, "node.publish_rate": rate})
    bounds = {b["parameter"]: b for b in doctor.time_bounds(cfg, latency, camera, following)}
    age = camera + latency
    assert bounds["node.max_frame_age"]["ok"] == (age <= 30.0)
    assert bounds["node.command_ttl"]["ok"] == (age + (latency if following is None else following) <= ttl)
    assert bounds["node.publish_rate"]["ok"] == (ttl > age and 1.0 / rate <= ttl - age)
    # The advice for every missed bound, taken together (max_frame_age at least the TTL), meets them all.
    taken = {name: b["value"] if b["ok"] else b["advised"] for name, b in bounds.items()}
    if None not in taken.values():
        taken["node.max_frame_age"] = max(taken["node.max_frame_age"], taken["node.command_ttl"])
        assert all(b["ok"] for b in doctor.time_bounds(config.from_flat(taken), latency, camera, following))


def test_a_command_ttl_shorter_than_two_decisions_and_a_slow_republish_each_fail_with_their_parameter():
    flat = {"node.max_frame_age": 2.0, "node.command_ttl": 0.5, "node.publish_rate": 10.0}
    r = doctor.summary(config.from_flat(flat), 1000.0, 0.2, camera_latency_s=0.1)  # ~0.25 s a decision
    assert r["exit_code"] == doctor.EXIT_TOO_SLOW
    assert any("so the robot stops between decisions: raise node.command_ttl to" in a for a in r["advice"])
    slow_republish = {**flat, "node.command_ttl": 2.0, "node.publish_rate": 0.5}  # stands ~1.6 s, republished every 2 s
    r = doctor.summary(config.from_flat(slow_republish), 1000.0, 0.2, camera_latency_s=0.1)
    assert r["exit_code"] == doctor.EXIT_TOO_SLOW
    assert [a for a in r["advice"] if "raise node.publish_rate to" in a]
    assert doctor.summary(config.from_flat({**slow_republish, "node.publish_rate": 10.0}), 1000.0, 0.2,
                          camera_latency_s=0.1)["exit_code"] == doctor.EXIT_OK


def test_the_abstain_command_never_makes_the_gate_too_slow():
    cfg = config.from_flat({})
    r = doctor.summary(cfg, 1000.0, 0.0, deadline_s=0.050)  # room for 50 samples: stop (n0 + 13) fits, left does not
    assert rows(r)["stop"]["abstain"] and not rows(r)["left"]["in_time"]
    assert r["exit_code"] == doctor.EXIT_TOO_SLOW
    assert not any(a.startswith("stop:") for a in r["advice"])


def test_fixed_mode_spends_n_max_and_is_advised_to_go_sequential():
    cfg = config.from_flat({"smoothing.mode": "fixed", "smoothing.n_max": 1000})
    r = doctor.summary(cfg, 300.0, 0.0, device="cuda:0")
    assert rows(r)["left"]["samples_first_look"] == 1032 and rows(r)["left"]["p=0.99"]["expected_samples"] == 1032
    assert r["exit_code"] == doctor.EXIT_TOO_SLOW
    line = next(a for a in r["advice"] if a.startswith("left:"))
    assert "use smoothing.mode sequential" in line and "use CUDA" not in line


@pytest.mark.parametrize("mode", ["sequential", "fixed"])
def test_the_first_look_has_one_home_that_the_summary_the_advice_and_the_measurement_budget_use(mode):
    """Issue 15: doctor computed the sequential first look in three places; doctor.first_look is
    now the one, and every figure that needs it agrees with certify's looks."""
    from rs_guard_ros import benchmark

    cfg = config.from_flat({**SLOW_FORWARD, "smoothing.mode": mode, "smoothing.n_max": 1000})
    s = cfg.smoothing
    looks = {name: certify.sequential_looks(t, s.sigma, s.alpha, s.n_max)[0].n for name, t in cfg.thresholds().items()}
    assert {name: doctor.first_look(cfg, t) for name, t in cfg.thresholds().items()} == looks
    r = doctor.summary(cfg, 100.0, 0.0, deadline_s=0.5, device="cpu")
    assert {name: c["first_look"] for name, c in rows(r).items()} == (
        looks if mode == "sequential" else dict.fromkeys(looks, s.n_max))
    check = max(looks.values()) if mode == "sequential" else s.n_max
    assert doctor.measured_samples(cfg, 1, 1) == 2 * s.batch_size + benchmark.decision_cost_samples(cfg, 1) + (
        s.n0 + check)
    if mode == "fixed":
        advice = next(a for a in r["advice"] if a.startswith("forward:"))
        assert f"a consistent model stops after {s.n0 + looks['forward']} samples instead of n_max" in advice


@pytest.mark.parametrize("bad", [dict(samples_per_s=0.0), dict(samples_per_s=float("nan")), dict(overhead_s=-1.0),
                                 dict(deadline_s=-0.5)])
def test_summary_refuses_meaningless_speeds(bad):
    args = {"samples_per_s": 100.0, "overhead_s": 0.0, **bad}
    with pytest.raises(ValueError):
        doctor.summary(config.from_flat({}), args.pop("samples_per_s"), args.pop("overhead_s"), **args)


def test_the_start_up_check_reports_its_first_decisions_that_ran_the_model_once_and_names_missed_bounds():
    cfg = config.from_flat({"node.max_frame_age": 0.5, "node.command_ttl": 0.5, "node.decision_deadline": 2.0})
    speed = {"samples_per_s": 500.0, "overhead_s": 0.02}
    check = doctor.FirstDecisions(cfg, speed, count=3)
    assert check.note(0, 5.0, 5.0) is None  # ran no model (a stale frame, an unknown instruction): not counted
    assert check.note(60, 0.14, 0.19) is None and check.note(60, 0.15, 0.20) is None
    within, line = check.note(62, 0.16, 0.21)
    assert within and "median 60 samples in 0.15 s" in line and "predicts 0.14 s" in line
    assert "within every time bound" in line and check.note(60, 0.15, 0.2) is None  # once
    slow = doctor.FirstDecisions(cfg, speed, count=1)
    within, line = slow.note(400, 0.8, 0.9)  # 0.9 s old when published, 1.7 s with the next decision
    assert not within and "NOT within node.max_frame_age, node.command_ttl" in line


def test_a_burst_of_other_work_during_one_timed_decision_does_not_move_the_measured_line(monkeypatch):
    """Another process's burst (or a lazy initialisation) only ever adds time: 0.4 s more in one of
    the two decisions of the middle size; the line through each size's fastest decision keeps
    exactly 500 samples/s + 50 ms (through every decision it would not)."""
    clock = types.SimpleNamespace(now=0.0)
    monkeypatch.setattr(guard_mod, "time", types.SimpleNamespace(perf_counter=lambda: clock.now))
    monkeypatch.setattr(doctor_benchmark(), "time", types.SimpleNamespace(perf_counter=lambda: clock.now))
    guard = make_guard(**{"smoothing.mode": "sequential", "smoothing.n0": 10, "smoothing.n_max": 2000,
                          "smoothing.batch_size": 64})
    policy, preprocess, burst = guard.policy, guard.preprocessor, [0.4]

    def timed_policy(frames, instruction):
        clock.now += 0.002 * len(frames)
        return type(policy).__call__(policy, frames, instruction)

    def timed_preprocess(frame):
        clock.now += 0.05 + (burst.pop() if burst and guard.cfg.smoothing.n0 == 64 else 0.0)
        return preprocess(frame)

    timed_preprocess.operator_norm = preprocess.operator_norm
    guard.policy = _Callable(timed_policy, policy)
    guard.preprocessor = timed_preprocess
    m = doctor.measure(guard, left_bright_frame(), "go", repeats=2, check=False)
    assert not burst, "the burst never came"
    assert m["samples_per_s"] == pytest.approx(500.0) and m["overhead_s"] == pytest.approx(0.05)
    assert m["check"] is None


def test_measure_recovers_a_known_per_sample_cost_and_per_decision_overhead(monkeypatch):
    """On a simulated clock: each decision costs 50 ms of preprocessing plus 2 ms per sample, so the
    line through the timed decisions must give exactly 500 samples/s + 50 ms (no wall-clock)."""
    clock = types.SimpleNamespace(now=0.0)
    monkeypatch.setattr(guard_mod, "time", types.SimpleNamespace(perf_counter=lambda: clock.now))
    monkeypatch.setattr(doctor_benchmark(), "time", types.SimpleNamespace(perf_counter=lambda: clock.now))
    guard = make_guard(**{"smoothing.mode": "sequential", "smoothing.n0": 10, "smoothing.n_max": 2000,
                          "smoothing.batch_size": 64})
    policy, preprocess = guard.policy, guard.preprocessor

    def timed_policy(frames, instruction):
        clock.now += 0.002 * len(frames)
        return type(policy).__call__(policy, frames, instruction)

    def timed_preprocess(frame):
        clock.now += 0.05
        return preprocess(frame)

    timed_preprocess.operator_norm = preprocess.operator_norm
    guard.policy = _Callable(timed_policy, policy)
    guard.preprocessor = timed_preprocess
    before = guard.cfg
    m = doctor.measure(guard, left_bright_frame(), "go", repeats=2)
    assert guard.cfg == before
    assert m["samples_per_s"] == pytest.approx(500.0) and m["overhead_s"] == pytest.approx(0.05)
    assert m["raw_samples_per_s"] == pytest.approx(500.0)
    assert m["sizes"] == [26, 74, 202] and m["decisions"] == 6
    check = m["check"]  # the configured sequential decision: left certified at n0 + first look
    assert check["command"] == "left" and check["certified"]
    assert check["latency_s"] == pytest.approx(0.05 + check["n_used"] * 0.002)
    r = doctor.run(guard, left_bright_frame(), "go", repeats=1)
    assert r["measured"]["check"]["predicted_latency_s"] == pytest.approx(r["measured"]["check"]["latency_s"])
    assert r["measured"]["memory"]["rss_mb"] > 0 and r["measured"]["memory"]["cuda_max_allocated_mb"] is None


class _Callable:
    """A policy wrapper that keeps the policy's attributes."""

    def __init__(self, fn, policy):
        self._fn, self.name, self.input_size, self.device = fn, policy.name, policy.input_size, policy.device
        self.output_kind = policy.output_kind

    def __call__(self, frames, instruction):
        return self._fn(frames, instruction)


def doctor_benchmark():
    from rs_guard_ros import benchmark

    return benchmark


def test_the_formatter_prints_every_command_and_the_verdict_without_a_measurement():
    r = doctor.summary(config.from_flat(SLOW_FORWARD), 200.0, 0.05, device="cpu")
    text = doctor.format_report(r)
    assert "200 samples/s + 50.0 ms per decision" in text and "room for 390 samples" in text
    for name in ("forward", "left", "right", "stop"):
        assert any(line.startswith(name) for line in text.splitlines())
    assert "(abstain)" in text and " NO" in text and "advice: forward: threshold 0.5" in text


def test_probe_frame_is_accepted_by_the_guard():
    guard = make_guard(**{"preprocess.expected_width": 64, "preprocess.expected_height": 40})
    frame = doctor.probe_frames(guard)
    assert frame.shape == (40, 64, 3)
    guard.prepare(frame)
    assert doctor.probe_state(guard.cfg) is None  # this model reads no joint state


def test_doctor_measures_a_two_camera_gate_with_a_joint_state_on_a_probe_frame_per_camera_and_a_zero_state():
    """Several cameras and a joint state: one grey frame per camera at its own expected size,
    every joint at 0, and every measured decision (and the raw policy) gets both views."""
    from test_views import two_camera_guard

    guard = two_camera_guard(**{"cameras.rear.expected_width": 40, "cameras.rear.expected_height": 30,
                                "state.topic": "joint_states", "state.joint_names": ["left_wheel", "right_wheel"],
                                "smoothing.batch_size": 16, "smoothing.n_max": 64, "smoothing.mode": "sequential"})
    frames = doctor.probe_frames(guard)
    assert {k: v.shape for k, v in frames.items()} == {"front": (32, 48, 3), "rear": (30, 40, 3)}  # front: model size
    assert doctor.probe_state(guard.cfg).tolist() == [0.0, 0.0]
    measured = doctor.measure(guard, repeats=1, raw_batches=1)
    assert measured["samples_per_s"] > 0 and measured["check"]["decisions"] == 1
    assert not any("frame" in r or "state" in r for r in measured["reasons"] + [measured["check"]["reason"]])
    seen = guard.policy.seen
    assert seen and all(f.shape[1:] == (3, 32, 48) and r.shape[1:] == (3, 16, 16) for f, r in seen)
    assert all(s is not None and s.tolist() == [0.0, 0.0] for s in guard.policy.states)


# ----------------------------------------------------------------------------- the command, on the demo VLA
def doctor_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rs_guard_ros.cli", "doctor", "--model.cpu_threads", "1",
                           "--model.device", "cpu", "--smoothing.batch_size", "32", "--repeats", "1", *args],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.timeout(300)
def test_doctor_json_on_the_demo_vla_reports_its_speed_and_every_command_in_time():
    out = doctor_cli("--json", "--node.decision_deadline", "60", "--node.max_frame_age", "60",
                     "--node.command_ttl", "60")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)  # stdout is one JSON object; the progress bar went to stderr
    assert r["measured"]["raw_samples_per_s"] > 0 and r["samples_per_s"] > 0 and r["overhead_s"] >= 0
    assert r["measured"]["device"] == "cpu" and r["measured"]["torch_threads"] == 1
    assert r["decision_deadline"] == 60 and r["feasible"] and r["exit_code"] == 0
    assert {c["command"] for c in r["commands"]} == {"forward", "left", "right", "stop"}
    assert all(c["in_time"] and c["latency_s"] > 0 for c in r["commands"])
    assert r["measured"]["memory"]["rss_mb"] > 0 and r["measured"]["memory"]["cuda_max_allocated_mb"] is None
    assert "rs-guard doctor" in out.stderr and "Loading weights" not in out.stderr


@pytest.mark.timeout(300)
def test_doctor_exits_3_when_the_deadline_leaves_too_few_samples():
    out = doctor_cli("--node.decision_deadline", "0.000001", "--no-progress")
    assert out.returncode == 3, out.stderr
    assert "NO" in out.stdout and "advice: forward: threshold 0.25 needs" in out.stdout
    assert out.stderr == ""  # no progress bar (--no-progress), no library noise


@pytest.mark.parametrize("selection", ["previous", "samples"])
def test_issue16_doctor_gives_every_selection_path_from_certify_and_marks_the_ones_the_config_takes(selection):
    """doctor prints, per command, the standing command confirmed (no n0), a change priced from the
    dearest other command, and n0 selection samples: certify.selection_paths' figures, with p*."""
    cfg = config.from_flat({**SLOW_FORWARD, "smoothing.selection": selection})
    s = cfg.smoothing
    r = doctor.summary(cfg, 200.0, 0.05)
    assert r["selection"] == selection
    forward = rows(r)["forward"]
    assert forward["p_required"] == pytest.approx(certify.p_required(0.5, s.sigma))
    for p in doctor.P_TRUE:
        exact = certify.selection_paths(p, 0.5, s.sigma, s.alpha, s.n0, s.n_max, previous_threshold=0.1)
        for path, plan in exact.items():
            figures = forward["paths"][path]
            assert figures[f"p={p}"]["expected_samples"] == pytest.approx(plan.expected_samples)
            assert (figures["n_min"], figures["n_selection"]) == (plan.n_min, plan.n_selection)
            assert figures[f"p={p}"]["latency_s"] == pytest.approx(0.05 + plan.expected_samples / 200.0)
    assert forward["paths"]["samples"]["samples_first_look"] == forward["samples_first_look"]  # today's figure
    assert forward["paths"]["previous"]["n_selection"] == 0
    assert [forward["paths"][k]["configured"] for k in certify.SELECTION_PATHS] == (
        [True, True, True] if selection == "previous" else [False, False, True])
    text = doctor.format_report(r)
    assert f"selection paths (smoothing.selection {selection}" in text
    line = next(x for x in text.splitlines() if x.startswith("forward") and " previous" in x)
    assert f"{certify.p_required(0.5, s.sigma):.5f}" in line and f" {forward['paths']['previous']['n_min']} " in line
    assert ("never take this path" in text) == (selection == "samples")


# ----------------------------------------------------------------------------- issue 15 item 5: the memory cap
def advised_batch(result, command="forward"):
    """The batch size the advice line of `command` suggests (None where it suggests none)."""
    line = next(a for a in result["advice"] if a.startswith(f"{command}:"))
    if "raise smoothing.batch_size to " not in line:
        return None, line
    return int(line.split("raise smoothing.batch_size to ")[1].split()[0].rstrip(",")), line


def test_issue15_5_doctor_never_advises_a_batch_size_the_guard_would_refuse_and_names_the_cap():
    """On a GPU doctor advises a batch as large as a decision (n0 32 + first look 375 -> 512). With
    smoothing.max_buffer_mb binding, it advises the largest batch Guard.check_budget accepts for this
    model's input and names the cap; where not even the current batch can grow, it says so."""
    from test_guard import make_guard

    flat = {**SLOW_FORWARD, "smoothing.batch_size": 32, "smoothing.n0": 32, "smoothing.n_max": 2000,
            "smoothing.mode": "sequential"}  # config/default.yaml's, over test_guard's FAST
    numel = make_guard(**flat).layout.numel  # 3 x 32 x 48: 56 noisy copies fill 1 MB
    free = doctor.summary(config.from_flat(flat), 200.0, 0.05, device="cuda:0", input_numel=numel)
    assert advised_batch(free)[0] == 512  # the default 512 MB cap does not bind
    capped_flat = {**flat, "smoothing.max_buffer_mb": 1.0}
    capped = doctor.summary(config.from_flat(capped_flat), 200.0, 0.05, device="cuda:0", input_numel=numel)
    batch, line = advised_batch(capped)
    assert batch == 2**20 // (4 * numel) == 56 and "the most smoothing.max_buffer_mb (1 MB) allows" in line
    make_guard(**{**capped_flat, "smoothing.batch_size": batch})  # the Guard accepts the advice ...
    with pytest.raises(config.ConfigError, match="max_buffer_mb"):
        make_guard(**{**capped_flat, "smoothing.batch_size": batch + 1})  # ... and nothing above it
    full = {**capped_flat, "smoothing.batch_size": 56}  # the cap is already reached
    stuck = doctor.summary(config.from_flat(full), 200.0, 0.05, device="cuda:0", input_numel=numel)
    batch, line = advised_batch(stuck)
    assert batch is None and "smoothing.batch_size cannot grow: smoothing.max_buffer_mb (1 MB) holds at most 56" in line
    unknown = doctor.summary(config.from_flat(capped_flat), 200.0, 0.05, device="cuda:0")  # no model: no size known
    assert "if 512 noisy copies of the model input fit smoothing.max_buffer_mb (1 MB)" in \
        advised_batch(unknown)[1]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3 * 1024 * 1024), st.floats(1.0, 4096.0), st.sampled_from([1, 8, 32, 60]),
       st.integers(400, 100_000))
def test_issue15_5_every_advised_batch_size_fits_the_memory_cap(numel, cap_mb, batch, n_max):
    from rs_guard_ros.smoothing import buffer_bytes

    flat = {**SLOW_FORWARD, "smoothing.batch_size": batch, "smoothing.max_buffer_mb": cap_mb, "smoothing.n_max": n_max}
    cfg = config.from_flat(flat)
    s = cfg.smoothing
    if buffer_bytes(numel, 4, min(batch, max(s.n0, n_max))) > cap_mb * 2**20:
        return  # the Guard refuses this configuration at start-up: doctor never gets to run on it
    r = doctor.summary(cfg, 20.0, 0.0, device="cuda:0", input_numel=numel)
    for line in r["advice"]:
        if "raise smoothing.batch_size to " in line:
            advised = int(line.split("raise smoothing.batch_size to ")[1].split()[0].rstrip(","))
            assert advised > batch
            assert buffer_bytes(numel, 4, min(advised, max(s.n0, n_max))) <= int(cap_mb * 2**20)
