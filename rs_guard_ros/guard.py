"""Guard: (camera frame, instruction) -> Decision. Policy + oracle + certifier + thresholds.

No ROS here: node.py adapts messages to `Guard.decide` and publishes the Decision. Every
failure inside a decision (bad frame, bad instruction, a model or oracle that raises or
returns garbage) becomes an abstain Decision with the reason; `decide` never raises.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Mapping, Sequence

import numpy as np
import torch

from . import config as config_mod
from .config import Config
from .param_files import load_config
from .images import ImageError
from .preprocess import Preprocessor
from .oracles import make_oracle
from .oracles.action import twist_prototypes
from .denoisers import DenoisedPolicy, load_denoiser
from .policies import load_policy
from .policies.base import Policy, last_denoise_ms
from .policies.model_path import resolve
from .certify import label_name
from .smoothing import Certificate, buffer_bytes, max_rows, smooth_certify
from .views import ViewLayout, camera_radii, view_sizes

TIMING_KEYS = ("preprocess", "denoise", "model", "oracle", "statistics", "total")
# What a decision is made on: one (H, W, 3) RGB frame, or {camera name: frame} (cameras.names)
Frames = np.ndarray | Mapping[str, np.ndarray]


class DecisionError(ValueError):
    """An input or a model output that cannot be decided on; the Guard abstains with its message."""


class ModelFault(DecisionError):
    """The model or oracle produced something unusable (wrong count, NaN, unknown labels)."""


class DeadlineExceeded(DecisionError):
    """The decision ran past its deadline; a late certificate is never published."""


@dataclass
class Decision:
    """What to publish for one frame, and why."""

    command: str  # the certified command, or the abstain command
    certified: bool
    label: str | None  # the smoothed classifier's top label (None = UNKNOWN or no decision)
    radius: float  # certified l2 radius at the model input
    radius_camera: float  # the same radius in camera-frame units (radius / ||A||_2; the largest norm of all cameras)
    p_lower: float
    n_used: int
    reason: str
    threshold: float = 0.0  # the label's radius threshold (inf: the label has none and never certifies)
    radius_cameras: dict[str, float] = field(default_factory=dict)  # per camera, that camera perturbed alone
    selection: str = ""  # how the tested label was chosen: "previous" (the standing command) or "samples"
    n_selection: int = 0  # samples spent choosing the label
    n_estimation: int = 0  # samples of the test that decided
    counts: dict[str, int] = field(default_factory=dict)
    timing_ms: dict[str, float] = field(default_factory=dict)
    certificate: Certificate | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # exactly what this decision ran under

    def refused(self, reason: str, abstain: str) -> "Decision":
        """This decision made an abstain for `reason` (too late, stale, superseded): the
        certificate and its figures stay in the record, the command is `abstain`."""
        return dataclasses.replace(self, command=abstain, certified=False, reason=reason)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the certificate nested, UNKNOWN written as "UNKNOWN", an infinite threshold as None)."""
        out = {k: v for k, v in self.__dict__.items() if k != "certificate"}
        out["label"] = label_name(self.label)
        out["threshold"] = self.threshold if math.isfinite(self.threshold) else None
        out["certificate"] = self.certificate.to_dict() if self.certificate else None
        return out


class Guard:
    """Certifies the command a VLA gives for a frame, or abstains."""

    def __init__(self, policy: Policy, oracle: Callable[[Sequence[Any]], list[Hashable | None]], cfg: Config):
        self.policy, self.oracle, self.cfg = policy, oracle, cfg
        try:
            self.layout = ViewLayout(cfg.cameras.names, view_sizes(policy))
        except ValueError as exc:
            raise config_mod.ConfigError(f"parameter 'cameras.names': {exc}") from exc
        self.preprocessors = {
            name: Preprocessor(size, cfg.preprocess.mode, expected_size=(cam.expected_height, cam.expected_width))
            for name, size, cam in zip(cfg.cameras.names, self.layout.sizes, cfg.cameras.table.values())}
        self.check_budget(cfg)

    @property
    def preprocessor(self) -> Preprocessor:
        """The first camera's preprocessing (what the one-camera tools -- attack, doctor -- use)."""
        return self.preprocessors[self.layout.names[0]]

    @preprocessor.setter
    def preprocessor(self, value: Preprocessor) -> None:
        self.preprocessors[self.layout.names[0]] = value

    @classmethod
    def from_config(cls, cfg: Config | str | Path | None = None) -> "Guard":
        """Load the policy and oracle a Config (or a ROS parameter file) names."""
        if not isinstance(cfg, Config):
            cfg = load_config(cfg) if cfg else Config()
        m, o = cfg.model, cfg.oracle
        if m.cpu_threads:  # process-wide: the guard's process runs one model
            torch.set_num_threads(m.cpu_threads)
        policy = load_policy(m.backend, m.path or None, device=m.device, **model_options(cfg))
        if cfg.denoiser.path:
            policy = denoised(policy, cfg)
        return cls(policy, make_oracle(o.kind, oracle_vocabulary(cfg, o.kind), **oracle_options(o, o.kind)), cfg)

    def reconfigure(self, cfg: Config) -> None:
        """Apply a validated run-time change (thresholds, sigma, budgets); the model stays loaded."""
        if (cfg.model, cfg.denoiser, cfg.preprocess, cfg.cameras, cfg.oracle.kind) != \
                (self.cfg.model, self.cfg.denoiser, self.cfg.preprocess, self.cfg.cameras, self.cfg.oracle.kind):
            raise config_mod.ConfigError("model, denoiser, preprocess, cameras and oracle.kind cannot change at run "
                                         "time")
        self.check_budget(cfg)
        self.cfg = cfg

    def buffer_bytes(self, cfg: Config) -> int:
        """Bytes of noisy copies one model call under `cfg` holds (float32 model input, every view)."""
        s = cfg.smoothing
        return buffer_bytes(self.layout.numel, 4, min(s.batch_size, max(s.n0, s.n_max)))

    def check_budget(self, cfg: Config) -> None:
        """ConfigError naming smoothing.batch_size when its noisy copies would exceed
        smoothing.max_buffer_mb for this model's input (checked at start-up and on every
        run-time change, so the node is never killed for memory in the middle of a decision)."""
        need, limit = self.buffer_bytes(cfg), int(cfg.smoothing.max_buffer_mb * 2**20)
        if need > limit:
            sizes = " + ".join(f"{h}x{w}" for h, w in self.layout.sizes)
            raise config_mod.ConfigError(
                f"parameter 'smoothing.batch_size': {cfg.smoothing.batch_size} noisy copies of the {sizes} model "
                f"input need {need / 2**20:.0f} MB, more than smoothing.max_buffer_mb "
                f"({cfg.smoothing.max_buffer_mb:g}); use at most {max_rows(self.layout.numel, 4, limit)} or "
                "raise smoothing.max_buffer_mb")

    def decide(self, frame: Any, instruction: Any, deadline_s: float | None = None, *,
               clock: Callable[[], float] = time.perf_counter, previous: str | None = None,
               state: Any = None) -> Decision:
        """Certify the command for the camera frames and instruction; never raises.

        `frame` is one (H, W, 3) RGB array, or {camera name: frame} with one frame per
        camera of cameras.names; the certificate covers all views as one input
        (views.py). `state` is the joint state vector the model reads when state.topic is
        set (held fixed for the decision, not certified).

        The whole decision runs on one snapshot of the configuration (a run-time change
        applies from the next decision), and the Decision's `settings` say exactly which.
        `previous` is the command standing for this instruction (certified by the previous
        decision): with smoothing.selection "previous" it is tested first, spending no
        selection samples (`smooth_certify`); it must not depend on this frame's noise.
        With `deadline_s`, the decision abstains once that many seconds have passed on
        `clock` (the node passes simulation time under use_sim_time): checked before every
        model batch and once more on the finished certificate, so a certificate whose last
        batch ran late is never returned as certified.
        """
        cfg = self.cfg  # one read: reconfigure() swaps the reference, never mutates it
        timing = dict.fromkeys(TIMING_KEYS, 0.0)
        start = time.perf_counter()
        deadline = None if deadline_s is None else clock() + deadline_s
        try:
            text = self._check_instruction(instruction, cfg)
            x, norms = self.prepare(frame)
            extra = self.state_kwargs(state, cfg)
            timing["preprocess"] = _ms_since(start)
            s = cfg.smoothing
            cert = smooth_certify(self._base(text, cfg, timing, deadline, clock, extra), x, sigma=s.sigma,
                                  alpha=s.alpha,
                                  n0=s.n0, n_max=s.n_max, mode=s.mode, radius_threshold=cfg.thresholds(),
                                  batch_size=s.batch_size, oracle_error=cfg.oracle.error,
                                  seed=None if s.seed < 0 else s.seed,
                                  max_buffer_bytes=int(s.max_buffer_mb * 2**20),
                                  previous=previous if s.selection == "previous" else None)
            decision = self._from_certificate(cert, norms, cfg)
            if deadline is not None and decision.certified and clock() > deadline:
                decision = decision.refused(f"deadline: the certificate was done {clock() - deadline:.3f} s after the "
                                            f"deadline ({deadline_s:g} s)", cfg.commands.abstain)
        except Exception as exc:  # fail closed: anything unexpected is an abstain with its reason
            decision = self.abstain(_reason(exc), cfg)
        timing["total"] = _ms_since(start)
        timing["statistics"] = max(0.0, timing["total"] - sum(timing[k] for k in ("preprocess", "denoise", "model",
                                                                                  "oracle")))
        decision.timing_ms = timing
        return decision

    def abstain(self, reason: str, cfg: Config | None = None) -> Decision:
        """The safe decision: the abstain command, nothing certified."""
        return abstain_decision(cfg or self.cfg, reason)

    @staticmethod
    def _check_instruction(instruction: Any, cfg: Config) -> str:
        if isinstance(instruction, (bytes, bytearray)):
            try:
                instruction = bytes(instruction).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DecisionError("instruction is not valid UTF-8") from exc
        if not isinstance(instruction, str):
            raise DecisionError(f"instruction must be text, got {type(instruction).__name__}")
        text = instruction.strip()
        if not text:
            raise DecisionError("instruction is empty")
        if len(text) > cfg.instruction.max_length:
            raise DecisionError(f"instruction longer than instruction.max_length={cfg.instruction.max_length}")
        if any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):
            raise DecisionError("instruction is not valid UTF-8 (lone surrogate)")
        return text

    def prepare(self, frames: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """Deterministic preprocessing of every camera's frame, then ONE host->device copy of the
        joint input; returns (x, {camera: ||A||_2}). One frame, or {camera name: frame}."""
        names = self.layout.names
        if not isinstance(frames, Mapping):
            if len(names) > 1:
                raise DecisionError(f"{len(names)} cameras {list(names)} need one frame each, got one frame")
            frames = {names[0]: frames}
        if set(frames) != set(names):
            raise DecisionError(f"frames for cameras {sorted(frames)}, expected {list(names)}")
        views, norms = [], {}
        for name in names:
            view, norms[name] = self._prepare_view(name, frames[name])
            views.append(view)
        joint = self.layout.pack([torch.from_numpy(v) for v in views])
        return joint.to(self.policy.device), norms

    def _prepare_view(self, name: str, frame: Any) -> tuple[np.ndarray, float]:
        """One camera's frame -> (3, H, W) float32 model input and its ||A||_2; DecisionError
        (naming the camera when there are several) for a frame that cannot be used."""
        where = f"camera '{name}': " if len(self.layout.names) > 1 else ""
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.size == 0:
            shape = getattr(frame, "shape", None)
            raise DecisionError(f"{where}frame must be an (H, W, 3) RGB array, got {type(frame).__name__} {shape}")
        if frame.dtype != np.uint8 and frame.dtype.kind != "f":
            raise DecisionError(f"{where}frame dtype must be uint8 or float, got {frame.dtype}")
        pre = self.preprocessors[name]
        try:  # the size is checked before any pixel is read; then NaN and floats outside [0, 1]
            x = pre(frame)
            norm = pre.operator_norm(frame.shape[:2])
        except ImageError as exc:
            raise DecisionError(f"{where}{exc}") from exc
        return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32), norm

    def state_kwargs(self, state: Any, cfg: Config) -> dict[str, Any]:
        """{"state": the joint state as a float32 tensor on the model's device} when state.topic
        is configured (DecisionError if absent or not finite), else nothing."""
        if not cfg.state.topic:
            return {}
        if state is None:
            raise DecisionError("no joint state (state.topic is set)")
        vector = torch.as_tensor(np.asarray(state, dtype=np.float32).reshape(-1))
        if vector.numel() != len(cfg.state.joint_names) or not bool(torch.isfinite(vector).all()):
            raise DecisionError(f"joint state must be {len(cfg.state.joint_names)} finite numbers "
                                f"(state.joint_names), got {vector.numel()}")
        return {"state": vector.to(self.policy.device)}

    def _base(self, instruction: str, cfg: Config, timing: dict[str, float], deadline: float | None,
              clock: Callable[[], float], extra: dict[str, Any]) -> Callable[[torch.Tensor], list[Hashable | None]]:
        """h(x) = O(f(x, instruction[, state])) on a batch of joint inputs (split into the
        camera views without a copy), timed, with every output checked; past the `deadline`
        (on `clock`) no further batch runs."""
        commands = set(cfg.commands.names)

        def base(batch: torch.Tensor) -> list[Hashable | None]:
            if deadline is not None and clock() > deadline:
                raise DeadlineExceeded("decision deadline exceeded")
            t0 = time.perf_counter()
            outputs = self.policy(self.layout.unpack(batch), instruction, **extra)
            t1 = time.perf_counter()
            denoise_ms = last_denoise_ms(self.policy)
            timing["denoise"] += denoise_ms
            if len(outputs) != len(batch):
                raise ModelFault(f"returned {len(outputs)} outputs for {len(batch)} frames")
            _check_finite(outputs)
            labels = list(self.oracle(outputs))
            timing["model"] += (t1 - t0) * 1e3 - denoise_ms
            timing["oracle"] += _ms_since(t1)
            if len(labels) != len(outputs) or any(lab is not None and lab not in commands for lab in labels):
                raise ModelFault("oracle returned labels outside the command set")
            return labels

        return base

    @staticmethod
    def _from_certificate(cert: Certificate, norms: dict[str, float], cfg: Config) -> Decision:
        certified = cert.certified and cert.label is not None
        radii = camera_radii(cert.radius, norms)
        return Decision(command=cert.label if certified else cfg.commands.abstain, certified=certified,
                        label=cert.label, radius=cert.radius, radius_camera=radii["joint"],
                        radius_cameras=radii["each"],
                        p_lower=cert.p_lower, n_used=cert.n_used, reason=cert.reason,
                        threshold=cert.radius_threshold, selection=cert.selection, n_selection=cert.n_selection,
                        n_estimation=cert.n_estimation,
                        counts={label_name(k): v for k, v in cert.counts.items()},
                        certificate=cert, settings=settings_of(cfg))


def abstain_decision(cfg: Config, reason: str) -> Decision:
    """The safe decision under `cfg`: the abstain command, nothing certified, with the reason
    (needs no model: also what an evaluation records for a frame no worker could decide)."""
    return Decision(command=cfg.commands.abstain, certified=False, label=None, radius=0.0,
                    radius_camera=0.0, p_lower=0.0, n_used=0, reason=reason, settings=settings_of(cfg))


def settings_of(cfg: Config) -> dict[str, Any]:
    """The statistical settings a decision runs under, as its record reports them."""
    s, o = cfg.smoothing, cfg.oracle
    return {"sigma": s.sigma, "alpha": s.alpha, "oracle_error": o.error, "denoiser": cfg.denoiser.path or None,
            "oracle_error_alpha": o.error_alpha if o.error > 0.0 else None, "thresholds": cfg.thresholds(),
            "n0": s.n0, "n_max": s.n_max, "mode": s.mode, "selection": s.selection, "batch_size": s.batch_size,
            "seed": None if s.seed < 0 else s.seed}


def denoised(policy: Policy, cfg: Config) -> DenoisedPolicy:
    """`policy` behind the configured denoiser (denoised smoothing: it sees every noisy sample,
    never the clean frame); its training sigma must be the configured one and smoothing.sigma."""
    d = cfg.denoiser
    denoiser = load_denoiser(resolve(d.path), d.backend, device=d.device or policy.device, dtype=d.dtype,
                             trained_sigma=d.sigma)
    denoiser.check_sigma(cfg.smoothing.sigma)
    return DenoisedPolicy(policy, denoiser)


def model_options(cfg: Config) -> dict[str, Any]:
    """The configured options of backend `model.backend` (each backend takes only its own; an
    empty string means "the model's own" and is passed as None). Several cameras reach the
    backend as their model keys; a state topic as `reads_state`."""
    m, cams = cfg.model, cfg.cameras
    keys = tuple(cams.table[name].model_key or None for name in cams.names)
    several = len(keys) > 1
    hf = dict(dtype=m.dtype, mode=m.mode, max_new_tokens=m.max_new_tokens, trust_remote_code=m.trust_remote_code,
              prompt_template=m.prompt_template or None, unnorm_key=m.unnorm_key or None, image_size=m.image_size,
              **({"views": len(keys)} if several else {}))
    lerobot = dict(camera_keys=keys, state=m.state or None, state_names=cfg.state.joint_names)
    onnx = dict(reads_state=bool(cfg.state.topic),
                **({"input_names": tuple(key or name for key, name in zip(keys, cams.names))} if several else {}))
    plugin = {"cameras": {name: key or name for key, name in zip(keys, cams.names)}} if several else {}
    return {"demo": hf, "transformers": hf, "lerobot": lerobot, "onnx": onnx, "plugin": plugin}[m.backend]


def oracle_options(o: config_mod.OracleConfig, kind: str) -> dict[str, Any]:
    """The configured options of oracle `kind` (each kind takes only its own)."""
    return {"grammar": {}, "semantic": dict(floor=o.semantic_floor, margin=o.semantic_margin),
            "action": dict(tolerance=o.action_tolerance, axes=o.action_axes() or None)}[kind]


def oracle_vocabulary(cfg: Config, kind: str) -> Mapping[str, Any]:
    """What oracle `kind` reads per command: the command table, or -- when the action oracle
    maps actions to Twists -- each command's own Twist on the mapped fields as its prototype."""
    axes = cfg.oracle.action_axes()
    if kind == "action" and axes:
        return twist_prototypes(cfg.commands.table, axes)
    return cfg.commands.table


def _check_finite(outputs: Sequence[Any]) -> None:
    """Numeric outputs (logits, actions) must be finite: NaN means a broken model, not a vote."""
    for out in outputs:
        if isinstance(out, torch.Tensor):
            if out.is_floating_point() and not bool(torch.isfinite(out).all()):
                raise ModelFault("returned NaN or inf")
        elif isinstance(out, (np.ndarray, float)) and not np.all(np.isfinite(out)):
            raise ModelFault("returned NaN or inf")


def _ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3


def _reason(exc: BaseException) -> str:
    """A short, single-line reason for an abstain caused by an exception (even one whose
    __str__ raises or returns something other than text)."""
    kind = ("deadline" if isinstance(exc, DeadlineExceeded) else "model" if isinstance(exc, ModelFault)
            else "input" if isinstance(exc, DecisionError) else f"error: {type(exc).__name__}")
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not escape decide()
        text = "(exception message unavailable)"
    text = text.splitlines()[0] if text else ""
    return f"{kind}: {text}"[:300] if text else kind


__all__ = ["Guard", "Decision", "DecisionError", "ModelFault", "DeadlineExceeded"]
