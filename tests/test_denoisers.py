"""Denoised smoothing: the Denoiser API, torch vs ONNX, the DenoisedPolicy wrapper, soundness.

The soundness test is the linear-classifier test of test_smoothing.py with a denoiser in
the loop: h(z) = [w . D(z) > t] for an identity-plus-shrink D(z) = s z + (1 - s) c, whose
smoothed probability and true certified radius are still known in closed form.
"""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors import safe_open

from rs_guard_ros.config import from_flat
from rs_guard_ros.denoisers import (
    DEFAULT_DENOISER_DIR, DenoisedPolicy, DenoiserError, ConvDenoiser, denoiser_from_module, export_onnx,
    load_denoiser, save_denoiser,
)
from rs_guard_ros.guard import Guard
from rs_guard_ros.preprocess import Preprocessor
from rs_guard_ros.oracles import make_oracle
from rs_guard_ros.smoothing import smooth_certify
from test_smoothing import RUNS, SIGMA, max_violations, violates

REPO = Path(__file__).resolve().parents[1]
SIZE = (64, 64)


def noisy_batch(n: int, size=SIZE, seed: int = 0, sigma: float = 0.25) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, *size, generator=gen) + sigma * torch.randn(n, 3, *size, generator=gen)


@pytest.fixture(scope="module")
def small_denoiser_dir(tmp_path_factory) -> Path:
    """An untrained (random-weight) ConvDenoiser saved as safetensors + ONNX, sigma 0.25, 64x64."""
    folder = tmp_path_factory.mktemp("denoiser")
    torch.manual_seed(0)
    net = ConvDenoiser(width=8, depth=3, unshuffle=2)
    save_denoiser(net, folder, trained_sigma=0.25, input_size=SIZE)
    export_onnx(load_denoiser(folder, device="cpu", dtype="float32"), folder / "denoiser.onnx")
    return folder


# ----------------------------------------------------------------------------- API
def test_load_denoiser_exposes_sigma_input_size_device_and_dtype(small_denoiser_dir):
    d = load_denoiser(small_denoiser_dir, "torch", device="cpu", dtype="float32")
    assert d.trained_sigma == 0.25 and d.input_size == SIZE and d.device == torch.device("cpu")
    assert d.dtype == torch.float32 and d.backend == "torch"
    assert load_denoiser(small_denoiser_dir / "denoiser.safetensors", device="cpu").input_size == SIZE  # the file


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_denoiser_returns_the_same_shape_device_and_dtype(small_denoiser_dir, dtype):
    d = load_denoiser(small_denoiser_dir, device="cpu", dtype="float32")
    x = noisy_batch(5).to(dtype)
    out = d(x)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert torch.isfinite(out.float()).all()
    assert d(x[:0]).shape == (0, 3, *SIZE)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_denoiser_runs_in_the_dtype_it_was_loaded_with(small_denoiser_dir, dtype):
    d = load_denoiser(small_denoiser_dir, device="cpu", dtype=dtype)
    assert next(d.module.parameters()).dtype == getattr(torch, dtype)
    assert d(noisy_batch(2)).dtype == torch.float32


def test_denoising_a_batch_equals_denoising_each_sample_alone(small_denoiser_dir):
    for backend in ("torch", "onnx"):
        d = load_denoiser(small_denoiser_dir, backend, device="cpu")
        x = noisy_batch(7, seed=3)
        together = d(x)
        alone = torch.cat([d(x[i:i + 1]) for i in range(len(x))])
        assert torch.allclose(together, alone, atol=1e-5), backend
        # and a sample's output does not depend on its neighbours
        assert torch.allclose(d(torch.cat([x[:1], noisy_batch(3, seed=9)]))[0], together[0], atol=1e-5)


@pytest.mark.parametrize("bad,match", [
    (noisy_batch(2, size=(32, 32)), "input size is 64x64"),
    (noisy_batch(2)[:, :1], r"takes \(B, 3, 64, 64\)"),
    (noisy_batch(2)[0], r"takes \(B, 3, 64, 64\)"),
    (torch.zeros(2, 3, 64, 64, dtype=torch.uint8), "floating point"),
    (np.zeros((2, 3, 64, 64), np.float32), "torch.Tensor"),
])
def test_denoiser_refuses_inputs_of_another_size_or_kind(small_denoiser_dir, bad, match):
    for backend in ("torch", "onnx"):
        with pytest.raises(DenoiserError, match=match):
            load_denoiser(small_denoiser_dir, backend, device="cpu")(bad)


def test_sigma_mismatch_is_refused_at_load_and_by_check_sigma(small_denoiser_dir):
    for backend in ("torch", "onnx"):
        with pytest.raises(DenoiserError, match="trained for sigma=0.25, but trained_sigma=0.5"):
            load_denoiser(small_denoiser_dir, backend, device="cpu", trained_sigma=0.5)
        d = load_denoiser(small_denoiser_dir, backend, device="cpu", trained_sigma=0.25)
        d.check_sigma(0.25)
        with pytest.raises(DenoiserError, match="smoothing.sigma is 0.3"):
            d.check_sigma(0.3)


def test_bad_paths_backends_and_files_are_refused_with_the_path(tmp_path, small_denoiser_dir):
    with pytest.raises(DenoiserError, match="does not exist"):
        load_denoiser(tmp_path / "nope")
    with pytest.raises(DenoiserError, match="not one of"):
        load_denoiser(small_denoiser_dir, "tensorrt")
    with pytest.raises(DenoiserError, match="denoiser.safetensors"):
        load_denoiser(tmp_path)  # an empty folder
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(DenoiserError, match="not an rs_guard_ros denoiser"):
        load_denoiser(tmp_path / "other.safetensors")
    with pytest.raises(DenoiserError, match="float32"):
        load_denoiser(small_denoiser_dir, "onnx", dtype="float16")


def test_a_graph_without_a_recorded_sigma_needs_trained_sigma(tmp_path):
    net = torch.nn.Conv2d(3, 3, 1)
    torch.onnx.export(net, (torch.rand(2, 3, 8, 8),), str(tmp_path / "d.onnx"), dynamo=False,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})
    with pytest.raises(DenoiserError, match="give trained_sigma"):
        load_denoiser(tmp_path / "d.onnx", "onnx", device="cpu")
    d = load_denoiser(tmp_path / "d.onnx", "onnx", device="cpu", trained_sigma=0.5)
    assert d.trained_sigma == 0.5 and d.input_size == (8, 8)


def test_torch_and_onnx_agree_on_random_noisy_inputs(small_denoiser_dir):
    t = load_denoiser(small_denoiser_dir, "torch", device="cpu", dtype="float32")
    o = load_denoiser(small_denoiser_dir, "onnx", device="cpu")
    assert o.backend == "onnx" and o.module is None and isinstance(t.module, ConvDenoiser)
    x = noisy_batch(16, seed=1)
    assert float((t(x) - o(x)).abs().max()) < 1e-4


# ----------------------------------------------------------------------------- the shipped denoiser
def test_shipped_denoiser_records_its_training_and_agrees_with_its_onnx_export():
    card = json.loads((DEFAULT_DENOISER_DIR / "denoiser.json").read_text())
    assert card["trained_sigma"] == 0.25 and card["input_size"] == [64, 64]
    assert card["train_seconds"] <= 20 * 60 and card["seed"] == 0 and "train_denoiser.py" in card["command"]
    with safe_open(str(DEFAULT_DENOISER_DIR / "denoiser.safetensors"), framework="pt") as f:
        assert float(f.metadata()["trained_sigma"]) == 0.25
    assert (DEFAULT_DENOISER_DIR / "denoiser.safetensors").stat().st_size < 4_000_000
    t = load_denoiser(DEFAULT_DENOISER_DIR, "torch", device="cpu", dtype="float32", trained_sigma=0.25)
    o = load_denoiser(DEFAULT_DENOISER_DIR, "onnx", device="cpu", trained_sigma=0.25)
    assert o.input_size == t.input_size == SIZE
    x = noisy_batch(32, seed=2)
    assert float((t(x) - o(x)).abs().max()) < 1e-4


def example_input(name: str = "left_2.png") -> torch.Tensor:
    """A shipped demo camera frame as the gate's (3, 64, 64) model input."""
    bgr = cv2.imread(str(REPO / "examples" / name))
    x = Preprocessor(SIZE, "resize")(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return torch.from_numpy(x).permute(2, 0, 1).contiguous()


def test_shipped_denoiser_removes_most_of_the_noise_on_a_demo_frame():
    d = load_denoiser(DEFAULT_DENOISER_DIR, device="cpu", dtype="float32")
    x = torch.stack([example_input(n) for n in ("left_2.png", "forward_1.png", "stop_1.png")])
    noisy = x + 0.25 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    mse_in = float(((noisy - x) ** 2).mean())
    mse_out = float(((d(noisy) - x) ** 2).mean())
    assert mse_out < mse_in / 10, (mse_in, mse_out)


def test_clean_vla_behind_the_shipped_denoiser_certifies_a_demo_frame_through_the_guard():
    """The clean-trained demo VLA (loaded as a user's model) + the shipped denoiser, end to end."""
    from rs_guard_ros.policies import load_policy

    clean_vla = REPO / "rs_guard_ros" / "models" / "demo_vla_clean"
    assert "--sigma 0" in (clean_vla / "README.md").read_text()
    policy = load_policy("transformers", path=str(clean_vla), device="cpu")
    denoiser = load_denoiser(DEFAULT_DENOISER_DIR, device=str(policy.device), trained_sigma=0.25)
    cfg = from_flat({"smoothing.n0": 16, "smoothing.n_max": 200, "smoothing.batch_size": 108,
                     "smoothing.mode": "fixed", "smoothing.seed": 0})
    denoiser.check_sigma(cfg.smoothing.sigma)
    guard = Guard(DenoisedPolicy(policy, denoiser), make_oracle("grammar", cfg.commands.table), cfg)
    bgr = cv2.imread(str(REPO / "examples" / "left_2.png"))
    decision = guard.decide(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), "go to the red box")
    assert decision.certified and decision.command == "left", decision.reason


# ----------------------------------------------------------------------------- the wrapper
class RecordingPolicy:
    """STAND-IN, not a model: records every batch it is given and says "turn left"."""

    name, input_size, device, output_kind = "recorder", (32, 48), torch.device("cpu"), "text"

    def __init__(self):
        self.seen: list[torch.Tensor] = []

    def __call__(self, frames, instruction):
        self.seen.append(frames.clone())
        return ["turn left"] * len(frames)


class RecordingShrink(torch.nn.Module):
    """Identity-plus-shrink towards grey, D(z) = s z + (1 - s) / 2, recording every input."""

    def __init__(self, s: float = 0.5):
        super().__init__()
        self.s = s
        self.inputs: list[torch.Tensor] = []

    def forward(self, z):
        self.inputs.append(z.clone())
        return self.s * z + (1 - self.s) * 0.5


def test_denoised_policy_keeps_the_policy_protocol_attributes():
    policy = RecordingPolicy()
    wrapped = DenoisedPolicy(policy, denoiser_from_module(RecordingShrink(), trained_sigma=0.25, input_size=(32, 48)))
    assert (wrapped.input_size, wrapped.device, wrapped.output_kind) == (policy.input_size, policy.device, "text")
    assert wrapped.name == "recorder+denoiser" and wrapped.trained_sigma == 0.25
    with pytest.raises(DenoiserError, match="takes 64x64 frames, but policy recorder takes 32x48"):
        DenoisedPolicy(policy, denoiser_from_module(RecordingShrink(), trained_sigma=0.25, input_size=SIZE))


def test_through_the_guard_the_policy_sees_exactly_the_denoised_noisy_samples_never_the_clean_frame():
    policy, shrink = RecordingPolicy(), RecordingShrink()
    wrapped = DenoisedPolicy(policy, denoiser_from_module(shrink, trained_sigma=0.25, input_size=(32, 48)))
    cfg = from_flat({"smoothing.n0": 16, "smoothing.n_max": 200, "smoothing.batch_size": 50,
                     "smoothing.mode": "fixed", "smoothing.seed": 7})
    guard = Guard(wrapped, make_oracle("grammar", cfg.commands.table), cfg)
    frame = np.full((96, 128, 3), 90, np.uint8)
    decision = guard.decide(frame, "go to the red box")
    assert decision.certified and decision.command == "left" and decision.n_used == 216
    clean, _ = guard.prepare(frame)
    assert len(policy.seen) == len(shrink.inputs) == 5 and wrapped.calls == 5
    assert 0 < wrapped.last_denoise_ms <= wrapped.denoise_ms
    for noisy, given in zip(shrink.inputs, policy.seen):
        assert torch.equal(given, 0.5 * noisy + 0.25)  # exactly D(the noisy batch)
        residual = noisy - clean  # the denoiser's input is the clean frame plus sigma-noise ...
        assert abs(float(residual.std()) - 0.25) < 0.01
        assert not torch.isclose(noisy, clean.expand_as(noisy), atol=1e-3).all(dim=(1, 2, 3)).any()  # ... every row
        clean_denoised = 0.5 * clean + 0.25  # and the policy never sees D(clean frame) or the clean frame
        for row in given:
            assert not torch.allclose(row, clean_denoised, atol=1e-2) and not torch.allclose(row, clean, atol=1e-2)


class SelfDenoisingPolicy(RecordingPolicy):
    """A policy with its own denoiser built in (a plugin, say): it reports last_denoise_ms
    itself, without the DenoisedPolicy wrapper."""

    last_denoise_ms = 40.0


@pytest.mark.parametrize("policy,denoise", [(RecordingPolicy(), 0.0), (SelfDenoisingPolicy(), 40.0)])
def test_the_guard_reads_any_policys_denoise_time_through_the_protocol_with_its_default(policy, denoise):
    """Issue 15: the Guard read last_denoise_ms only from DenoisedPolicy (an isinstance check);
    now from every policy, the Policy protocol's default (0.0) where it defines none."""
    from rs_guard_ros.policies.base import Policy, last_denoise_ms

    assert Policy.last_denoise_ms == 0.0 and last_denoise_ms(policy) == denoise
    cfg = from_flat({"smoothing.n0": 16, "smoothing.n_max": 200, "smoothing.batch_size": 50,
                     "smoothing.mode": "fixed", "smoothing.seed": 7})
    decision = Guard(policy, make_oracle("grammar", cfg.commands.table), cfg).decide(
        np.full((96, 128, 3), 90, np.uint8), "go to the red box")
    assert decision.timing_ms["denoise"] == pytest.approx(denoise * len(policy.seen))  # one report per model call


def test_every_function_of_the_denoisers_module_is_exported_or_used():
    """No dead code (issue 15: read_card was neither exported nor called): each module-level
    function is in __all__ (the module's API) or called in the package, scripts or benchmarks
    outside its own definition."""
    import ast
    import re

    from rs_guard_ros import denoisers

    source = Path(denoisers.__file__).resolve()
    functions = [n.name for n in ast.parse(source.read_text()).body if isinstance(n, ast.FunctionDef)]
    code = "\n".join(p.read_text() for d in ("rs_guard_ros", "scripts", "benchmarks") for p in (REPO / d).rglob("*.py"))
    dead = [f for f in functions if f not in denoisers.__all__ and len(re.findall(rf"\b{f}\(", code)) < 2]
    assert dead == []  # (one match is the def itself)


# ----------------------------------------------------------------------------- soundness
class ShrinkDenoiser(torch.nn.Module):
    """D(z) = s z + (1 - s) c with c = 0.5 (grey): a deterministic map after the noise."""

    def __init__(self, s: float):
        super().__init__()
        self.s = s

    def forward(self, z):
        return self.s * z + (1 - self.s) * 0.5


class DenoisedLinearBase:
    """h(z) = "pos" if D(z)[0, 0, 0] > 0.5 else "neg". With D above, D(z)_0 > 0.5 iff z_0 > 0.5, so at a
    point x with x_0 = 0.5 + m the smoothed probability is Phi(m / sigma) and the true radius |m|."""

    def __init__(self, denoiser):
        self.denoiser = denoiser

    def __call__(self, batch):
        return ["pos" if v > 0.5 else "neg" for v in self.denoiser(batch)[:, 0, 0, 0].tolist()]

    @staticmethod
    def point(margin: float) -> torch.Tensor:
        x = torch.full((3, 4, 4), 0.5)
        x[0, 0, 0] += margin
        return x


@pytest.mark.parametrize("mode", ["fixed", "sequential"])
def test_false_certification_rate_with_a_denoiser_in_the_loop_is_within_binomial_bound_of_alpha(mode):
    alpha = 0.1
    base = DenoisedLinearBase(denoiser_from_module(ShrinkDenoiser(0.6), trained_sigma=SIGMA, input_size=(4, 4)))
    if mode == "fixed":
        margin = 0.32  # p = Phi(1.28) ~ 0.9, as in test_smoothing
        kw = dict(n0=10, n_max=100, batch_size=110)
    else:
        margin = 0.3  # threshold just above the true radius: every certification is a false one
        kw = dict(n0=10, n_max=4000, batch_size=500, radius_threshold=margin * 1.02)
    bad = sum(violates(smooth_certify(base, base.point(margin), sigma=SIGMA, alpha=alpha, mode=mode, **kw), margin)
              for _ in range(RUNS))
    assert bad <= max_violations(alpha, RUNS), f"{bad}/{RUNS} false certificates at alpha={alpha}"


def test_the_denoised_soundness_test_has_power_a_denoiser_that_peeks_at_the_clean_frame_fails_it():
    """A 'denoiser' that returns the clean point (i.e. sees the clean frame, not the noisy sample) makes
    every sample agree, so it certifies radii the smoothed classifier does not have: the test catches it."""
    margin, alpha, runs = 0.05, 0.1, 200
    x = DenoisedLinearBase.point(margin)
    cheat = DenoisedLinearBase(lambda batch: x.expand_as(batch))
    bad = sum(violates(smooth_certify(cheat, x, sigma=SIGMA, alpha=alpha, n0=10, n_max=100, batch_size=110), margin)
              for _ in range(runs))
    assert bad > max_violations(alpha, runs)


# ----------------------------------------------------------------------------- the training script
def test_train_denoiser_on_a_folder_of_images_is_seeded_and_writes_a_loadable_denoiser(tmp_path):
    outs = []
    for run in ("a", "b"):
        out = tmp_path / run
        cmd = [sys.executable, str(REPO / "scripts" / "train_denoiser.py"), "--frames", str(REPO / "examples"),
               "--steps", "3", "--batch-size", "4", "--width", "8", "--depth", "3", "--threads", "1",
               "--val-frames", "2", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--sigma", "0.5"]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
        outs.append(out)
    card = json.loads((outs[0] / "denoiser.json").read_text())
    assert card["trained_sigma"] == 0.5 and card["steps"] == 3 and card["seed"] == 0
    assert "examples" in card["data"] and card["onnx"]["max_abs_diff_vs_torch"] < 1e-4
    a, b = (load_denoiser(o, device="cpu", dtype="float32", trained_sigma=0.5) for o in outs)
    x = noisy_batch(2, sigma=0.5)
    # same seed, same weights (up to float rounding: oneDNN's convolution backward may sum in another order)
    assert torch.allclose(a(x), b(x), atol=1e-5)
    assert load_denoiser(outs[0], "onnx", device="cpu").trained_sigma == 0.5


def test_train_denoiser_reads_a_rosbag2_of_camera_frames(tmp_path):
    from test_evaluate import write_bag

    frames = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted((REPO / "examples").glob("*_1.png"))]
    bag = tmp_path / "robot_bag"
    write_bag(bag, [("/cam/image_raw", 0.1 * i, frame) for i, frame in enumerate(frames)])
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "scripts" / "train_denoiser.py"), "--frames", str(bag),
           "--image-topic", "/cam/image_raw", "--steps", "2", "--batch-size", "2", "--width", "8", "--depth", "3",
           "--threads", "1", "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    run = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    assert f"read {len(frames)} frames" in run.stdout
    card = json.loads((out / "denoiser.json").read_text())
    assert card["training_frames"] + card["validation_frames"] == len(frames) == 4 and "robot_bag" in card["data"]
    assert load_denoiser(out, device="cpu", trained_sigma=0.25).input_size == SIZE

