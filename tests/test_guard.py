"""Guard: every input ends in a Decision; only certified commands are published."""
import json
from pathlib import Path
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from rs_guard_ros.config import Config, ConfigError, from_flat, update
from rs_guard_ros.guard import Guard
from rs_guard_ros.oracles import make_oracle

FAST = {"smoothing.n0": 16, "smoothing.n_max": 300, "smoothing.batch_size": 100, "smoothing.mode": "fixed"}


class BrightSidePolicy:
    """FAULT INJECTOR / stand-in, not a model: says "turn left" when the left half of the frame
    is brighter, else "turn right"; the instruction can make it misbehave ("raise", "nan",
    "short", "slow"). Lets the Guard's failure paths be tested without a VLA."""

    name, input_size, device, output_kind = "bright-side", (32, 48), torch.device("cpu"), "text"

    def __call__(self, frames, instruction):
        if instruction == "raise":
            raise RuntimeError("injected model failure")
        if instruction == "nan":
            return [np.array([np.nan])] * len(frames)
        if instruction == "short":
            return ["turn left"] * (len(frames) - 1)
        if instruction == "slow":
            time.sleep(0.05)
        half = frames.shape[-1] // 2
        left = frames[..., :half].mean(dim=(1, 2, 3)) > frames[..., half:].mean(dim=(1, 2, 3))
        return ["turn left" if v else "turn right" for v in left.tolist()]


def make_guard(**flat) -> Guard:
    cfg = from_flat({**FAST, **flat})
    return Guard(BrightSidePolicy(), make_oracle("grammar", cfg.commands.table), cfg)


def left_bright_frame(h=96, w=128) -> np.ndarray:
    frame = np.zeros((h, w, 3), np.uint8)
    frame[:, : w // 2] = 200
    return frame


def test_a_consistent_model_gets_its_command_certified_with_radius_in_both_units():
    d = make_guard().decide(left_bright_frame(), "go to the red box")
    assert d.certified and d.command == "left" and d.label == "left"
    assert d.radius > 0.1 and d.n_used == 316
    scale = make_guard().preprocessor.operator_norm((96, 128))
    assert d.radius_camera == pytest.approx(d.radius / scale)
    json.dumps(d.to_dict())


def faint_left_frame() -> np.ndarray:
    """Left half barely brighter: under sigma 0.25 the model says left with p ~ 0.85 (radius ~ 0.25)."""
    frame = np.full((96, 128, 3), 126, np.uint8)
    frame[:, :64] = 128
    return frame


def test_a_command_below_its_threshold_publishes_the_abstain_command():
    d = make_guard(**{"commands.left.radius_threshold": 0.45, "smoothing.seed": 3}).decide(faint_left_frame(), "go")
    assert not d.certified and d.command == "stop" and d.label == "left" and d.reason == "radius_below_threshold"
    assert 0.0 < d.radius < 0.45


@pytest.mark.parametrize("instruction,reason", [
    ("raise", "error: RuntimeError: injected model failure"),
    ("nan", "model: returned NaN or inf"),
    ("short", "model: returned 15 outputs for 16 frames"),
])
def test_model_faults_end_in_abstain_with_the_reason(instruction, reason):
    d = make_guard().decide(left_bright_frame(), instruction)
    assert (d.command, d.certified, d.reason) == ("stop", False, reason)


def test_a_decision_past_its_deadline_abstains():
    d = make_guard().decide(left_bright_frame(), "slow", deadline_s=0.01)
    assert not d.certified and d.command == "stop" and d.reason.startswith("deadline")


class StepClock:
    """A test clock: reads `t`, which the test (or a policy call) moves on; no wall time involved."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


@pytest.mark.parametrize("late_s", [0.001, 5.0])
def test_issue15_2_a_last_batch_that_overruns_the_deadline_is_never_certified(late_s):
    """The deadline is checked before every batch AND on the finished certificate: a decision
    whose final model call ends past the deadline abstains, whatever its vote (on the old code it
    came back certified). The clock moves only inside the model's last call."""
    clock, deadline = StepClock(), 1.0
    guard = make_guard()
    policy, calls = guard.policy, []

    def last_call_runs_late(frames, instruction):
        calls.append(len(frames))
        if len(calls) == 2:  # the estimation batch (n0 16 + n_max 300 at batch 100: calls 16, 100, 100, 100)
            clock.t = deadline + late_s
        return policy(frames, instruction)

    guard.policy = last_call_runs_late
    guard.policy.input_size, guard.policy.device = policy.input_size, policy.device
    d = guard.decide(left_bright_frame(), "go", deadline_s=deadline, clock=clock)
    assert not d.certified and d.command == "stop" and d.reason.startswith("deadline")
    assert calls == [16, 100]  # no batch started after the clock passed the deadline
    on_time = make_guard().decide(left_bright_frame(), "go", deadline_s=deadline, clock=StepClock())
    assert on_time.certified  # the same decision within its deadline


def test_issue15_5_a_batch_beyond_the_memory_budget_is_refused_at_start_and_at_run_time():
    """rows x input bytes: BrightSidePolicy's 3x32x48 float32 input is 18 KB a row; 65536 rows
    would take 1.2 GB."""
    row = 3 * 32 * 48 * 4  # 18 KB: 2 MB hold 113 rows
    with pytest.raises(ConfigError, match=r"'smoothing\.batch_size'.*max_buffer_mb \(2\).*at most 113"):
        make_guard(**{"smoothing.max_buffer_mb": 2.0, "smoothing.batch_size": 200})
    guard = make_guard(**{"smoothing.max_buffer_mb": 2.0})  # batch 100
    assert guard.buffer_bytes(guard.cfg) == 100 * row
    big = update(guard.cfg, {"smoothing.batch_size": 65_536, "smoothing.n_max": 100_000})
    with pytest.raises(ConfigError, match="smoothing.batch_size"):
        guard.reconfigure(big)
    assert guard.cfg.smoothing.batch_size == 100


def test_an_oracle_that_returns_labels_outside_the_command_set_abstains():
    cfg = from_flat(FAST)
    d = Guard(BrightSidePolicy(), lambda outs: ["jump"] * len(outs), cfg).decide(left_bright_frame(), "go")
    assert not d.certified and "outside the command set" in d.reason


@pytest.mark.parametrize("frame,instruction,why", [
    (np.zeros((0, 5, 3), np.uint8), "go", "frame"),
    (np.zeros((10, 10), np.uint8), "go", "frame"),
    (np.zeros((10, 10, 4), np.uint8), "go", "frame"),
    (np.zeros((10, 10, 3), np.int64), "go", "dtype"),
    (np.full((96, 128, 3), np.nan, np.float32), "go", "NaN"),
    (np.full((10, 10, 3), np.nan, np.float32), "go", "smaller than the model input"),
    ("not an image", "go", "frame"),
    (left_bright_frame(), "", "empty"),
    (left_bright_frame(), "   ", "empty"),
    (left_bright_frame(), "x" * 600, "max_length"),
    (left_bright_frame(), b"\xff\xfe go", "UTF-8"),
    (left_bright_frame(), None, "text"),
])
def test_bad_inputs_abstain_with_a_reason(frame, instruction, why):
    d = make_guard().decide(frame, instruction)
    assert d.command == "stop" and not d.certified and why in d.reason


arrays = st.builds(lambda shape, dtype, fill: np.full(shape, fill).astype(dtype),
                   st.tuples(st.integers(0, 100), st.integers(0, 100), st.integers(0, 5)),
                   st.sampled_from([np.uint8, np.float32, np.float64, np.int16, np.bool_]),
                   st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.integers(0, 255)))


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays, st.one_of(st.text(max_size=40), st.binary(max_size=20), st.none(), st.integers()))
def test_any_frame_and_instruction_give_a_decision_in_the_command_set(frame, instruction):
    guard = make_guard(**{"smoothing.n0": 2, "smoothing.n_max": 64})
    d = guard.decide(frame, instruction)
    assert d.command in guard.cfg.commands.names
    assert d.certified is False or d.command == d.label


def test_runtime_reconfigure_applies_thresholds_but_refuses_a_model_change():
    guard = make_guard()
    assert guard.decide(faint_left_frame(), "go").certified  # left's threshold is 0.1
    guard.reconfigure(from_flat({**FAST, "commands.left.radius_threshold": 0.45}))
    assert not guard.decide(faint_left_frame(), "go").certified
    with pytest.raises(ValueError, match="run time"):
        guard.reconfigure(from_flat({**FAST, "model.backend": "onnx"}))


def test_the_fixed_test_seed_reproduces_decisions():
    guard = make_guard(**{"smoothing.seed": 7})
    a, b = guard.decide(left_bright_frame(), "go"), guard.decide(left_bright_frame(), "go")
    assert a.counts == b.counts and a.p_lower == b.p_lower and a.certificate.seed == 7


def test_default_config_uses_the_demo_vla():
    assert Config().model.backend == "demo"


def test_cpu_threads_parameter_sets_the_torch_thread_count():
    saved = torch.get_num_threads()
    try:
        Guard.from_config(from_flat({"model.cpu_threads": 1, "model.device": "cpu"}))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(saved)


# ---------------------------------------------------------------------------
# Issue 9 regressions
# ---------------------------------------------------------------------------

class ReconfiguringPolicy(BrightSidePolicy):
    """STAND-IN: a model during whose first batch an operator changes sigma and thresholds
    (what the node's parameter service does from another thread)."""

    def __init__(self):
        self.guard, self.calls = None, 0

    def __call__(self, frames, instruction):
        self.calls += 1
        if self.calls == 1:
            self.guard.reconfigure(from_flat({**FAST, "smoothing.sigma": 0.5, "commands.left.radius_threshold": 0.3}))
        return super().__call__(frames, instruction)


def test_defect5_a_decision_runs_on_one_snapshot_of_the_configuration_and_reports_it():
    policy = ReconfiguringPolicy()
    cfg = from_flat(FAST)
    guard = policy.guard = Guard(policy, make_oracle("grammar", cfg.commands.table), cfg)
    d = guard.decide(left_bright_frame(), "go")
    assert d.certificate.sigma == 0.25 and d.threshold == 0.1
    assert d.settings == {"sigma": 0.25, "alpha": 0.001, "oracle_error": 0.0, "denoiser": None,
                          "oracle_error_alpha": None,
                          "thresholds": {"forward": 0.25, "left": 0.1, "right": 0.1, "stop": 0.0},
                          "n0": 16, "n_max": 300, "mode": "fixed", "selection": "previous", "batch_size": 100,
                          "seed": None}
    later = guard.decide(left_bright_frame(), "go")  # the change applies from the next decision
    assert later.settings["sigma"] == 0.5 and later.threshold == 0.3 and json.dumps(later.to_dict())


class UnprintableError(Exception):
    def __str__(self):
        raise RuntimeError("__str__ is broken too")


class UnprintablePolicy(BrightSidePolicy):
    def __call__(self, frames, instruction):
        raise UnprintableError()


def test_defect7_an_exception_whose_str_raises_still_ends_in_abstain():
    cfg = from_flat(FAST)
    d = Guard(UnprintablePolicy(), make_oracle("grammar", cfg.commands.table), cfg).decide(left_bright_frame(), "go")
    assert d.command == "stop" and not d.certified and d.reason.startswith("error: UnprintableError")


def test_defect7_a_float_frame_above_one_is_an_input_error_not_a_model_fault():
    d = make_guard().decide(np.full((96, 128, 3), 2.0, np.float32), "go")
    assert not d.certified and d.reason.startswith("input:") and "[0, 1]" in d.reason


@pytest.mark.parametrize("frame,flat,why", [
    (np.zeros((2, 2, 3), np.uint8), {}, "smaller than the model input"),
    (np.zeros((31, 200, 3), np.uint8), {}, "smaller than the model input"),
    (left_bright_frame(96, 129), {"preprocess.expected_width": 128, "preprocess.expected_height": 96},
     "expected camera size"),
])
def test_defect10_a_frame_too_small_or_not_the_cameras_size_is_an_input_error(frame, flat, why):
    d = make_guard(**flat).decide(frame, "go")
    assert not d.certified and d.reason.startswith("input:") and why in d.reason


def test_defect10_the_expected_camera_size_certifies_its_own_frames_with_the_camera_radius():
    d = make_guard(**{"preprocess.expected_width": 128, "preprocess.expected_height": 96}).decide(
        left_bright_frame(), "go")
    assert d.certified and d.radius_camera == pytest.approx(d.radius / np.sqrt(32 * 48 / (96 * 128)))


# What commit 5cb1694 (the last one-camera gate) decides on the shipped example frames with the
# shipped demo VLA (its weights copied into a checkout of 5cb1694 whenever they change), sim_diffdrive.yaml, its camera size given the old way (preprocess.expected_*), a
# fixed noise seed and fixed mode: (frame, command, estimation counts, p_lower, radius_camera).
ONE_CAMERA_DECISIONS = [
    ("forward_1", "left", {'left': 198, 'right': 2}, 0.9451342462997847, 0.6925609929746562),
    ("left_2", "left", {'left': 200}, 0.9660508789898133, 0.7905433061218408),
    ("stop_1", "right", {'right': 200}, 0.9660508789898133, 0.7905433061218408),
]


def test_issue17_a_one_camera_file_from_today_decides_exactly_as_before():
    """A single-camera parameter file from before multi-camera support gives the very same
    decisions: same noise, same views, same counts and bounds, to the last bit."""
    import cv2

    from rs_guard_ros.param_files import load_config

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "config" / "sim_diffdrive.yaml", overrides={
        "model.device": "cpu", "smoothing.seed": 12345, "smoothing.mode": "fixed", "smoothing.n_max": 200,
        "smoothing.selection": "samples", "preprocess.expected_width": 128, "preprocess.expected_height": 96})
    assert cfg.cameras.names == ("camera",) and cfg.cameras.table["camera"].expected_width == 128
    guard = Guard.from_config(cfg)
    for frame, command, counts, p_lower, radius_camera in ONE_CAMERA_DECISIONS:
        rgb = cv2.cvtColor(cv2.imread(str(root / "examples" / f"{frame}.png")), cv2.COLOR_BGR2RGB)
        d = guard.decide(rgb, "go to the red box")
        assert (d.command, d.counts, d.p_lower, d.radius_camera) == (command, counts, p_lower, radius_camera), frame
