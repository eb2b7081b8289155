"""Denoisers for denoised smoothing: a noise remover in front of an unchanged VLA.

A VLA trained on clean images loses most of its accuracy under the Gaussian noise that
randomized smoothing adds, so the smoothed classifier is rarely confident and the gate
abstains. Denoised smoothing (Salman et al., NeurIPS 2020; Carlini et al., ICLR 2023)
puts a denoiser D in front of the model and smooths the composition VLA ∘ D. D is part
of the base classifier: it is applied to every *noisy* sample, after the noise, and
never to the clean frame, so the certificate holds exactly as before (Cohen et al.'s
theorem covers any base classifier, whatever it computes).

`load_denoiser(path, backend="torch"|"onnx", device, dtype, trained_sigma)` returns a
`Denoiser`: (B, 3, H, W) noisy [0, 1]-unit frames on the model's device -> denoised
frames of the same shape, device and dtype, batched. A denoiser is trained for one noise
level; it records it (`trained_sigma`) and its input size, and refuses other sizes.
`DenoisedPolicy(policy, denoiser)` is a `Policy` that denoises each batch first.

The shipped denoiser (`rs_guard_ros/models/denoiser/`, trained by
`scripts/train_denoiser.py`) is a `ConvDenoiser`: a DnCNN-style stack of 3x3
convolutions (Zhang et al. 2017) run on 4x4 pixel-unshuffled sub-images, as FFDNet does
with 2x2 (Zhang et al. 2018): 16x16 positions instead of 64x64, so a 5-layer, 32-wide
net costs about a tenth of the demo VLA per sample while each layer sees 12 pixels
around. At that width it predicts the clean image directly (residual noise prediction
would need >= 48 channels to carry the noise through). No ROS here.
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .devices import resolve_device

BACKENDS = ("torch", "onnx")
FORMAT = "rs_guard_ros.denoiser/1"  # safetensors metadata "format"; ONNX metadata_props "format"
WEIGHTS_FILE = "denoiser.safetensors"
ONNX_FILE = "denoiser.onnx"
SIGMA_RTOL = 1e-6  # relative tolerance when comparing noise levels
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
# The architecture hyper-parameters, as stored in the weights' metadata (all integers).
ARCH_KEYS = ("channels", "width", "depth", "unshuffle", "residual")


class DenoiserError(ValueError):
    """A denoiser that cannot be loaded or used as asked (missing file, wrong size, wrong sigma)."""


# ----------------------------------------------------------------------------- architecture
class ConvDenoiser(nn.Module):
    """DnCNN-style convolutional denoiser on pixel-unshuffled sub-images (FFDNet's speed-up).

    x (B, C, H, W) -> pixel_unshuffle(s) -> conv3x3(C*s*s -> width) + ReLU ->
    (depth - 2) x [conv3x3(width -> width) + ReLU] -> conv3x3(width -> C*s*s) ->
    pixel_shuffle(s). With `residual` (DnCNN) that is the predicted noise and the output is
    x minus it; without, it is the clean image itself. Residual learning needs
    width >= C*s*s (the net must carry the noise through every layer); direct prediction
    does not (a clean s x s patch of a simple scene is compressible), which is what lets a
    narrow net run on 4x4 sub-images. No normalisation layers, so every sample is denoised
    independently of the others in its batch. H and W must be multiples of s.
    """

    def __init__(self, channels: int = 3, width: int = 32, depth: int = 5, unshuffle: int = 4,
                 residual: int | bool = False) -> None:
        super().__init__()
        if min(channels, width, unshuffle) < 1 or depth < 2:
            raise ValueError(f"need channels, width, unshuffle >= 1 and depth >= 2; got {channels}, {width}, "
                             f"{unshuffle}, {depth}")
        self.channels, self.width, self.depth, self.unshuffle = channels, width, depth, unshuffle
        self.residual = int(bool(residual))
        sub = channels * unshuffle * unshuffle
        layers: list[nn.Module] = [nn.Conv2d(sub, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, sub, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def arch(self) -> dict[str, int]:
        """The hyper-parameters that rebuild this module (stored beside the weights)."""
        return {key: int(getattr(self, key)) for key in ARCH_KEYS}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.unshuffle
        y = self.body(nn.functional.pixel_unshuffle(x, s) if s > 1 else x)
        y = nn.functional.pixel_shuffle(y, s) if s > 1 else y
        return x - y if self.residual else y

    def macs_per_sample(self, height: int, width: int) -> int:
        """Multiply-accumulates of one forward pass on an (H, W) image (convolutions only)."""
        positions = (height // self.unshuffle) * (width // self.unshuffle)
        return sum(m.weight.numel() * positions for m in self.body if isinstance(m, nn.Conv2d))


# ----------------------------------------------------------------------------- files
def save_denoiser(net: ConvDenoiser, folder: str | Path, *, trained_sigma: float,
                  input_size: tuple[int, int], extra: Mapping[str, Any] | None = None) -> Path:
    """Write `denoiser.safetensors` (weights + self-describing metadata) into `folder`."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    metadata = {"format": FORMAT, "trained_sigma": repr(float(trained_sigma)),
                "input_height": str(int(input_size[0])), "input_width": str(int(input_size[1])),
                **{key: str(value) for key, value in net.arch().items()},
                **{key: str(value) for key, value in (extra or {}).items()}}
    tensors = {name: t.detach().to("cpu", torch.float32).contiguous() for name, t in net.state_dict().items()}
    path = folder / WEIGHTS_FILE
    save_file(tensors, str(path), metadata=metadata)
    path.chmod(0o644)  # safetensors writes 0600; the weights are meant to be shared
    return path


def _backend_file(path: Path, backend: str) -> Path:
    """The file a backend loads: `path` itself, or the backend's file (denoiser.safetensors for
    torch, denoiser.onnx for onnx) inside a folder."""
    name = WEIGHTS_FILE if backend == "torch" else ONNX_FILE
    file = path / name if path.is_dir() else path
    if not file.is_file():
        raise DenoiserError(f"denoiser file {str(file)!r} does not exist")
    if file.suffix != Path(name).suffix:
        raise DenoiserError(f"denoiser file {str(file)!r}: the {backend} backend loads a {Path(name).suffix} file")
    return file


def _sigma_from(metadata: Mapping[str, str], trained_sigma: float | None, where: Path) -> float:
    """The noise level the denoiser was trained for: recorded in the file and/or given; they must agree."""
    recorded = metadata.get("trained_sigma")
    if recorded is not None:
        try:
            recorded_value = float(recorded)
        except ValueError as exc:
            raise DenoiserError(f"denoiser {str(where)!r}: unreadable trained_sigma {recorded!r}") from exc
        if trained_sigma is not None and not sigma_matches(recorded_value, trained_sigma):
            raise DenoiserError(f"denoiser {str(where)!r} was trained for sigma={recorded_value:g}, but "
                                f"trained_sigma={trained_sigma:g} was given")
        value = recorded_value
    elif trained_sigma is None:
        raise DenoiserError(f"denoiser {str(where)!r} does not record the noise level it was trained for; "
                            "give trained_sigma")
    else:
        value = float(trained_sigma)
    if not (math.isfinite(value) and value > 0.0):
        raise DenoiserError(f"denoiser {str(where)!r}: trained_sigma must be a number > 0, got {value!r}")
    return value


def sigma_matches(a: float, b: float) -> bool:
    """True when two noise levels are the same (up to float formatting)."""
    return math.isclose(float(a), float(b), rel_tol=SIGMA_RTOL, abs_tol=0.0)


def resolve_dtype(spec: str | torch.dtype, device: torch.device) -> torch.dtype:
    """"auto" is float32 on the CPU and bfloat16 on CUDA; else a dtype name (float32, float16, bfloat16)."""
    if isinstance(spec, torch.dtype):
        if spec not in _DTYPES.values():
            raise DenoiserError(f"denoiser dtype {spec} is not a floating-point dtype it supports")
        return spec
    if spec == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if spec not in _DTYPES:
        raise DenoiserError(f"denoiser dtype {spec!r} is not one of 'auto', {', '.join(map(repr, _DTYPES))}")
    return _DTYPES[spec]


# ----------------------------------------------------------------------------- the callable
class Denoiser:
    """Noisy (B, 3, H, W) frames -> denoised frames, same shape, device and dtype.

    `trained_sigma`: the noise level it was trained for (smoothing.sigma must equal it).
    `input_size`: (H, W); other sizes are refused with DenoiserError. `device`, `dtype`:
    where and in which precision it runs (the torch backend keeps tensors on the device;
    the onnx backend on the CPU passes numpy arrays, on CUDA binds device memory).
    """

    def __init__(self, run: Any, *, backend: str, trained_sigma: float, input_size: tuple[int, int],
                 device: torch.device, dtype: torch.dtype, name: str, channels: int = 3,
                 metadata: Mapping[str, str] | None = None) -> None:
        self._run = run
        self.backend = backend
        self.trained_sigma = float(trained_sigma)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.channels = int(channels)
        self.device = device
        self.dtype = dtype
        self.name = name
        self.metadata = dict(metadata or {})

    def check_input(self, frames: Any) -> None:
        """DenoiserError unless `frames` is a floating-point (B, C, H, W) tensor at input_size."""
        if not isinstance(frames, torch.Tensor):
            raise DenoiserError(f"denoiser input must be a torch.Tensor, got {type(frames).__name__}")
        expected = (self.channels, *self.input_size)
        if frames.ndim != 4 or tuple(frames.shape[1:]) != expected:
            raise DenoiserError(f"denoiser {self.name} takes (B, {expected[0]}, {expected[1]}, {expected[2]}) "
                                f"frames (its input size is {expected[1]}x{expected[2]}), got {tuple(frames.shape)}")
        if not frames.is_floating_point():
            raise DenoiserError(f"denoiser input must be floating point ([0, 1] units plus noise), got {frames.dtype}")

    def check_sigma(self, sigma: float) -> None:
        """DenoiserError unless `sigma` (smoothing.sigma) is the noise level this denoiser was trained for."""
        if not sigma_matches(sigma, self.trained_sigma):
            raise DenoiserError(f"denoiser {self.name} was trained for sigma={self.trained_sigma:g}, but "
                                f"smoothing.sigma is {float(sigma):g}: retrain it for that sigma "
                                "(scripts/train_denoiser.py --sigma) or set smoothing.sigma to match")

    @property
    def module(self) -> nn.Module | None:
        """The torch module (torch backend), e.g. to differentiate through VLA o D in an attack; None for onnx."""
        return self._run if isinstance(self._run, nn.Module) else None

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        self.check_input(frames)
        if frames.shape[0] == 0:
            return frames.clone()
        out = self._run(frames.to(self.device, self.dtype))
        if tuple(out.shape) != tuple(frames.shape):
            raise DenoiserError(f"denoiser {self.name} returned shape {tuple(out.shape)} for input {tuple(frames.shape)}")
        return out.to(frames.device, frames.dtype)

    def __repr__(self) -> str:
        return (f"Denoiser({self.name}, backend={self.backend}, trained_sigma={self.trained_sigma:g}, "
                f"input_size={self.input_size}, device={self.device}, dtype={self.dtype})")


def denoiser_from_module(net: nn.Module, *, trained_sigma: float, input_size: tuple[int, int],
                         device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32",
                         name: str = "module", channels: int = 3) -> Denoiser:
    """Wrap an in-memory torch module (tests, training) as a Denoiser."""
    device = device if isinstance(device, torch.device) else resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    net = net.to(device=device, dtype=dtype).eval()
    return Denoiser(net, backend="torch", trained_sigma=trained_sigma, input_size=input_size, device=device,
                    dtype=dtype, name=name, channels=channels)


def load_denoiser(path: str | Path, backend: str = "torch", *, device: str | torch.device = "auto",
                  dtype: str | torch.dtype = "auto", trained_sigma: float | None = None) -> Denoiser:
    """Load a denoiser for the noisy frames the gate samples.

    path: a folder holding denoiser.safetensors (torch) / denoiser.onnx (onnx), or the file
    itself. backend: "torch" (a ConvDenoiser rebuilt from the safetensors metadata) or
    "onnx" (onnxruntime; input (B, 3, H, W) float32 with static H and W, one output of the
    same shape). device: "auto" | "cpu" | "cuda[:N]". dtype: "auto" (float32 on the CPU,
    bfloat16 on CUDA), "float32", "float16", "bfloat16" (torch); onnx runs float32.
    trained_sigma: the noise level the denoiser must have been trained for; a file that
    records another one is refused, and a file that records none needs it.
    Errors raise DenoiserError (a ValueError) naming the path.
    """
    if backend not in BACKENDS:
        raise DenoiserError(f"denoiser backend {backend!r} is not one of {BACKENDS}")
    path = Path(path)
    if not path.exists():
        raise DenoiserError(f"denoiser path {str(path)!r} does not exist")
    device = device if isinstance(device, torch.device) else resolve_device(device)
    if backend == "torch":
        return _load_torch(_backend_file(path, "torch"), device, resolve_dtype(dtype, device), trained_sigma)
    if dtype not in ("auto", "float32", "fp32", torch.float32):
        raise DenoiserError(f"the onnx denoiser backend runs float32; dtype {dtype!r} is not supported")
    return _load_onnx(_backend_file(path, "onnx"), device, trained_sigma)


def _load_torch(file: Path, device: torch.device, dtype: torch.dtype, trained_sigma: float | None) -> Denoiser:
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            state = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as exc:  # noqa: BLE001 -- re-raised with the path
        raise DenoiserError(f"cannot read denoiser weights {str(file)!r}: {exc}") from exc
    if metadata.get("format") != FORMAT:
        raise DenoiserError(f"denoiser weights {str(file)!r} are not an rs_guard_ros denoiser "
                            f"(metadata format {metadata.get('format')!r}, expected {FORMAT!r})")
    try:
        arch = {key: int(metadata[key]) for key in ARCH_KEYS}
        input_size = (int(metadata["input_height"]), int(metadata["input_width"]))
    except (KeyError, ValueError) as exc:
        raise DenoiserError(f"denoiser weights {str(file)!r}: incomplete metadata ({exc})") from exc
    sigma = _sigma_from(metadata, trained_sigma, file)
    net = ConvDenoiser(**arch)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DenoiserError(f"denoiser weights {str(file)!r} do not fit their recorded architecture: {exc}") from exc
    if any(size % arch["unshuffle"] for size in input_size):
        raise DenoiserError(f"denoiser weights {str(file)!r}: input size {input_size} is not a multiple of "
                            f"unshuffle={arch['unshuffle']}")
    net = net.to(device=device, dtype=dtype).eval()
    return Denoiser(net, backend="torch", trained_sigma=sigma, input_size=input_size, device=device, dtype=dtype,
                    name=file.parent.name or file.stem, channels=arch["channels"], metadata=metadata)


class _OnnxRunner:
    """onnxruntime session behind the Denoiser's tensor -> tensor call."""

    def __init__(self, session: Any, input_name: str, output_name: str, device: torch.device) -> None:
        self.session, self.input_name, self.output_name, self.device = session, input_name, output_name, device
        self.bound = device.type == "cuda" and session.get_providers()[0] == "CUDAExecutionProvider"

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        frames = frames.float().contiguous()
        if self.bound:
            return self._run_bound(frames)
        out = self.session.run([self.output_name], {self.input_name: frames.detach().cpu().numpy()})[0]
        return torch.from_numpy(out).to(self.device)

    def _run_bound(self, frames: torch.Tensor) -> torch.Tensor:
        """CUDA: input and output bound in place on the device (no host round trip)."""
        out = torch.empty_like(frames)
        binding = self.session.io_binding()
        index = frames.device.index or 0
        binding.bind_input(self.input_name, device_type="cuda", device_id=index, element_type=np.float32,
                           shape=tuple(frames.shape), buffer_ptr=frames.data_ptr())
        binding.bind_output(self.output_name, device_type="cuda", device_id=index, element_type=np.float32,
                            shape=tuple(out.shape), buffer_ptr=out.data_ptr())
        torch.cuda.current_stream(frames.device).synchronize()  # inputs written before ORT reads them
        self.session.run_with_iobinding(binding)
        return out


def _load_onnx(file: Path, device: torch.device, trained_sigma: float | None) -> Denoiser:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise DenoiserError(f"denoiser {str(file)!r}: device {device} asked, but this onnxruntime has no "
                                f"CUDAExecutionProvider (it offers {available})")
        providers: Sequence[Any] = [("CUDAExecutionProvider", {"device_id": device.index or 0}),
                                    "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = max(1, torch.get_num_threads())  # honours model.cpu_threads
    try:
        session = ort.InferenceSession(str(file), options, providers=providers)
    except Exception as exc:  # noqa: BLE001 -- re-raised with the path
        raise DenoiserError(f"cannot load denoiser graph {str(file)!r}: {exc}") from exc
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise DenoiserError(f"denoiser graph {str(file)!r} must have one input and one output, has "
                            f"{[i.name for i in inputs]} -> {[o.name for o in outputs]}")
    shape = inputs[0].shape
    if len(shape) != 4 or not all(isinstance(v, int) for v in shape[1:]):
        raise DenoiserError(f"denoiser graph {str(file)!r}: input must be (B, C, H, W) with static C, H, W; "
                            f"got {shape}")
    metadata = dict(session.get_modelmeta().custom_metadata_map or {})
    sigma = _sigma_from(metadata, trained_sigma, file)
    runner = _OnnxRunner(session, inputs[0].name, outputs[0].name, device)
    return Denoiser(runner, backend="onnx", trained_sigma=sigma, input_size=(int(shape[2]), int(shape[3])),
                    device=device, dtype=torch.float32, name=file.parent.name or file.stem,
                    channels=int(shape[1]), metadata=metadata)


def export_onnx(denoiser: Denoiser, out: str | Path, *, opset: int = 17) -> Path:
    """Export a torch-backend Denoiser to ONNX (dynamic batch, static H and W), recording its
    trained_sigma and input size in the graph's metadata."""
    import onnx

    if denoiser.module is None:
        raise DenoiserError("only a torch-backend denoiser can be exported")
    net = copy.deepcopy(denoiser.module).to("cpu", torch.float32).eval()  # the denoiser itself stays as it is
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(2, denoiser.channels, *denoiser.input_size)  # batch 2: no size-1 specialisation
    with torch.no_grad():
        torch.onnx.export(net, (example,), str(out), dynamo=False, input_names=["noisy"], output_names=["denoised"],
                          dynamic_axes={"noisy": {0: "batch"}, "denoised": {0: "batch"}}, opset_version=opset)
    model = onnx.load(str(out))
    meta = {k: v for k, v in denoiser.metadata.items()}
    meta.update({"format": FORMAT, "trained_sigma": repr(denoiser.trained_sigma),
                 "input_height": str(denoiser.input_size[0]), "input_width": str(denoiser.input_size[1])})
    del model.metadata_props[:]
    for key, value in sorted(meta.items()):
        model.metadata_props.add(key=key, value=str(value))
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out


# ----------------------------------------------------------------------------- the policy wrapper
class DenoisedPolicy:
    """A `Policy` that denoises every noisy batch before the wrapped policy sees it.

    __call__(frames, instruction) = policy(denoiser(frames), instruction). Used inside the
    base classifier, the denoiser only ever sees the noisy samples the smoothing loop
    draws, so VLA ∘ D is what is certified. The wrapper keeps the wrapped policy's
    `name` (suffixed "+denoiser"), `input_size`, `device` and `output_kind`; the denoiser's
    input size must equal the policy's, else DenoiserError at construction. For timing
    breakdowns, `last_denoise_ms` is the denoiser's time in the latest call, `denoise_ms`
    the sum over all calls and `calls` their number.
    """

    def __init__(self, policy: Any, denoiser: Denoiser) -> None:
        if tuple(denoiser.input_size) != tuple(policy.input_size):
            raise DenoiserError(f"denoiser {denoiser.name} takes {denoiser.input_size[0]}x{denoiser.input_size[1]} "
                                f"frames, but policy {policy.name} takes {policy.input_size[0]}x"
                                f"{policy.input_size[1]}: train the denoiser at the model's input size")
        self.policy = policy
        self.denoiser = denoiser
        self.name = f"{policy.name}+denoiser"
        self.input_size = tuple(policy.input_size)
        self.device = policy.device
        self.output_kind = policy.output_kind
        self.denoise_ms = 0.0
        self.last_denoise_ms = 0.0
        self.calls = 0

    @property
    def trained_sigma(self) -> float:
        return self.denoiser.trained_sigma

    def __call__(self, frames: torch.Tensor, instruction: str) -> Sequence[Any]:
        t0 = time.perf_counter()
        clean = self.denoiser(frames)
        if clean.device.type == "cuda":
            torch.cuda.synchronize(clean.device)  # so denoise_ms is the denoiser's, not the policy's
        self.last_denoise_ms = (time.perf_counter() - t0) * 1e3
        self.denoise_ms += self.last_denoise_ms
        self.calls += 1
        return self.policy(clean, instruction)


DEFAULT_DENOISER_DIR = Path(__file__).resolve().parent / "models" / "denoiser"

__all__ = ["BACKENDS", "DEFAULT_DENOISER_DIR", "DenoisedPolicy", "Denoiser", "DenoiserError", "ConvDenoiser",
           "denoiser_from_module", "export_onnx", "load_denoiser", "save_denoiser", "sigma_matches"]
