"""Typed, validated configuration: the one source of every parameter's name, default,
range and description (the rules across parameters are in config_rules.py).

The ROS parameter declarations (ros/params.py), the YAML files in config/
(`param_files.dump_yaml`) and the `rs-guard` CLI flags are all derived from the dataclass
fields below (each declared with `param_spec.param`). Parameter names are dotted, as in a
ROS parameter file: `smoothing.sigma`, `commands.left.angular_z`.
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Iterable, Mapping

from . import certify
from .config_rules import TWIST_FIELDS, check_consistent, loosens
from .param_spec import ConfigError, ParamSpec, coerce, param, spec_of

NODE_NAME = "rs_guard"
MAX_AGE_S = 60.0  # upper bound of every frame age, command TTL and decision deadline (s)
MAX_INSTRUCTION_AGE_S = 86_400.0  # an instruction may stand for a day, not forever (0 = never expires)


@dataclass(frozen=True)
class ModelConfig:
    backend: str = param("demo", "VLA backend; 'demo' is the shipped demo VLA, 'lerobot' a LeRobot policy (SmolVLA, "
                         "pi0) in the user's own lerobot install", choices=("demo", "transformers", "onnx", "plugin",
                                                                            "lerobot"))
    path: str = param("", "model directory (transformers, lerobot), .onnx file, or module:callable (plugin); a local "
                      "path: nothing is downloaded at run time, so a hub id is refused with the download command")
    device: str = param("auto", "torch device: auto (CUDA when present), cpu, cuda, cuda:N")
    dtype: str = param("auto", "transformers weights dtype: auto (bf16 on CUDA, fp32 on CPU); a 7B model needs "
                       "bfloat16 to fit in GPU memory", choices=("auto", "float32", "float16", "bfloat16"))
    mode: str = param("generate", "transformers: generate text, or predict continuous actions with the model's "
                      "predict_action (OpenVLA-style; needs oracle.kind action)", choices=("generate", "action"))
    max_new_tokens: int = param(8, "tokens generated per sample", low=1, high=512)
    trust_remote_code: bool = param(False, "allow the model directory's own Python code (transformers; OpenVLA "
                                    "ships its model class that way)")
    cpu_threads: int = param(1, "torch CPU threads for the model (0 = torch's default, one per core). 1 is fastest "
                             "where other processes share the CPU (benchmarks/bench_cpu_threads.py: 0.1-0.2 s vs "
                             "2-2.4 s per demo decision on 2 shared cores); raise it only on cores reserved for the "
                             "gate", low=0, high=1024)
    prompt_template: str = param("", "transformers: the prompt, with {instruction} where the instruction goes "
                                 "(OpenVLA: 'In: What action should the robot take to {instruction}?\\nOut:'); "
                                 "empty = the processor's chat template, else '<image>\\n{instruction}\\n'. "
                                 "It must be the prompt the model was trained with, or its outputs mean nothing")
    unnorm_key: str = param("", "transformers action mode: the dataset whose action statistics un-normalise the "
                            "model's actions (OpenVLA: a key of its norm_stats, e.g. bridge_orig); empty = the "
                            "model's only dataset. Checked at load time")
    image_size: int = param(0, "transformers: fix the image processor to one square resolution (pixels), for "
                            "processors that tile or resize each image dynamically (SmolVLM/Idefics3 image "
                            "splitting): certification needs one input size. Use the vision encoder's own size "
                            "(SmolVLM: 512); 0 = the model's fixed resolution", low=0, high=8192)
    state: tuple[float, ...] = param((), "lerobot: an observation.state vector held fixed for every decision (raw "
                                     "robot units; the policy normalises it) when no state.topic is read; empty = "
                                     "zeros of the policy's state size. The certificate covers this state only",
                                     item=float)


@dataclass(frozen=True)
class DenoiserConfig:
    """Denoised smoothing: a denoiser in front of a VLA trained on clean images (docs/denoiser.md)."""

    path: str = param("", "denoiser folder or file (denoiser.safetensors / denoiser.onnx) applied to every noisy "
                      "sample before the model; part of the certified base classifier. '' = none; "
                      "package://rs_guard_ros/models/denoiser is the shipped one for the demo world")
    backend: str = param("torch", "how the denoiser runs", choices=("torch", "onnx"))
    device: str = param("", "torch device of the denoiser; '' = the model's device")
    dtype: str = param("auto", "denoiser dtype: auto (bf16 on CUDA, fp32 on CPU); onnx runs float32",
                       choices=("auto", "float32", "float16", "bfloat16"))
    sigma: float = param(0.0, "the noise level the denoiser was trained for; required with a denoiser, must equal "
                         "smoothing.sigma and is checked against the file at start-up", low=0.0, high=4.0)


@dataclass(frozen=True)
class PreprocessConfig:
    mode: str = param("resize", "camera frame -> model input, for every camera: squash-resize, or centre-crop then "
                      "resize", choices=("resize", "center_crop"))


@dataclass(frozen=True)
class OracleConfig:
    kind: str = param("grammar", "output -> command mapping", choices=("grammar", "semantic", "action"))
    error: float = param(0.0, "oracle error bound eps_O from `rs-guard calibrate-oracle` (0 for an exact grammar)",
                         low=0.0, high=0.49, runtime=True, tighten="up")
    error_alpha: float = param(0.0, "alpha_O: the level at which oracle.error was bounded (calibrate-oracle's "
                               "--alpha); required when oracle.error > 0", low=0.0, high=0.5, runtime=True,
                               tighten="down")
    semantic_floor: float = param(0.7, "semantic oracle: least cosine similarity to a command", low=-1.0, high=1.0)
    semantic_margin: float = param(0.08, "semantic oracle: least lead over the runner-up command", low=0.0, high=2.0)
    action_tolerance: float = param(0.5, "action oracle: largest distance to a command prototype (or, with "
                                    "action_*_index set, to a command's Twist)", low=0.0)
    action_linear_x_index: int = param(-1, "action oracle: the action element read as Twist linear.x (OpenVLA: 0, "
                                       "its forward displacement per step); -1 = unmapped. With any action_*_index "
                                       "set, actions are compared with each command's own Twist, not with "
                                       "commands.<c>.prototype", low=-1, high=4095)
    action_linear_x_scale: float = param(1.0, "action oracle: that element times this is linear.x in m/s (the "
                                         "control rate in Hz for a per-step displacement; < 0 flips the axis)",
                                         low=-1e6, high=1e6)
    action_linear_y_index: int = param(-1, "action oracle: the action element read as Twist linear.y (holonomic "
                                       "bases); -1 = unmapped", low=-1, high=4095)
    action_linear_y_scale: float = param(1.0, "action oracle: that element times this is linear.y in m/s",
                                         low=-1e6, high=1e6)
    action_angular_z_index: int = param(-1, "action oracle: the action element read as Twist angular.z (OpenVLA: "
                                        "5, its yaw change per step); -1 = unmapped", low=-1, high=4095)
    action_angular_z_scale: float = param(1.0, "action oracle: that element times this is angular.z in rad/s "
                                          "(the control rate in Hz for a per-step angle, pi/180 for deg/s)",
                                          low=-1e6, high=1e6)

    def action_axes(self) -> dict[str, tuple[int, float]]:
        """The mapped Twist fields of an action vector: {field: (element index, scale)}, in Twist order."""
        return {f: (getattr(self, f"action_{f}_index"), getattr(self, f"action_{f}_scale")) for f in TWIST_FIELDS
                if getattr(self, f"action_{f}_index") >= 0}


@dataclass(frozen=True)
class SmoothingConfig:
    sigma: float = param(0.25, "Gaussian noise std, [0,1] intensity units at the model input", low=1e-4, high=4.0,
                         runtime=True)
    alpha: float = param(0.001, "false-certification probability per decision", low=1e-9, high=0.5, runtime=True,
                         tighten="down")
    mode: str = param("sequential", "fixed: Cohen's CERTIFY with n_max samples; sequential: stop when decided",
                      choices=("fixed", "sequential"), runtime=True)
    selection: str = param("previous", "how a decision picks the command it tests. previous: the command the gate "
                           "is publishing (certified for the same instruction, within its TTL) is tested first, "
                           f"with no selection samples, at {certify.PREVIOUS_SHARE:g} alpha; if it fails, its "
                           "samples select the command for a second test at the rest (docs/guarantee.md). "
                           "samples: n0 selection samples every time (Cohen's CERTIFY)",
                           choices=("previous", "samples"), runtime=True)
    n0: int = param(32, "selection samples (when no previous command is tested)", low=1, high=100_000,
                    runtime=True)
    n_max: int = param(2000, "estimation samples of one test (fixed) or their most (sequential); a "
                       "decision runs at most two tests, or n0 selection samples and one", low=1,
                       high=certify.MAX_SAMPLES, runtime=True)
    batch_size: int = param(256, "noisy samples per model call", low=1, high=65_536, runtime=True)
    max_buffer_mb: float = param(512.0, "MB the noisy copies of one model call may occupy (rows x model-input "
                                 "bytes, rows = min(batch_size, max(n0, n_max))); a larger batch is refused at "
                                 "start-up and at run time, never attempted", low=1.0, high=1_048_576.0,
                                 runtime=True)
    seed: int = param(-1, "noise seed for tests ONLY; -1 = fresh OS entropy per decision", low=-1)


@dataclass(frozen=True)
class InstructionConfig:
    max_length: int = param(512, "longest accepted instruction, in characters", low=1, high=100_000)


@dataclass(frozen=True)
class NodeConfig:
    image_transport: str = param("raw", "raw: sensor_msgs/Image on `image`; compressed: CompressedImage on "
                                 "`image/compressed`", choices=("raw", "compressed"))
    use_stamped: bool = param(False, "publish geometry_msgs/TwistStamped instead of Twist")
    publish_rate: float = param(10.0, "Hz at which the current output is republished", low=0.1, high=1000.0,
                                runtime=True)
    command_ttl: float = param(0.5, "s a certified command stays valid, counted from its frame's capture time, "
                               "before reverting to abstain; at most max_frame_age, so a republished command never "
                               "acts on a frame older than that", low=0.0, high=MAX_AGE_S, runtime=True,
                               tighten="down")
    abstain_publish_timeout: float = param(0.0, "s of continuous abstain after which the node goes quiet "
                                           "(0 = never)", low=0.0, high=3600.0, runtime=True)
    max_frame_age: float = param(0.5, "s a frame may be old when its command is published (age from its header "
                                 "stamp, or its arrival when unstamped); also the camera watchdog", low=0.0,
                                 high=MAX_AGE_S, runtime=True, tighten="down")
    max_stamp_lead: float = param(0.1, "s a frame's header stamp may lie ahead of the node clock (camera/gate "
                                  "clock offset) before the frame is refused", low=0.0, high=10.0, runtime=True,
                                  tighten="down")
    max_camera_skew: float = param(0.05, "s the header stamps of one decision's frames (one per camera) may spread; "
                                   "wider, and the decision abstains naming the skew (one camera: unused)", low=0.0,
                                   high=MAX_AGE_S, runtime=True, tighten="down")
    max_instruction_age: float = param(0.0, "s an instruction stays valid (0 = never expires)", low=0.0,
                                       high=MAX_INSTRUCTION_AGE_S, runtime=True, tighten="down", off=0.0)
    decision_deadline: float = param(2.0, "s a decision may take, on the node clock (simulation time under "
                                     "use_sim_time, else the steady clock), before it is discarded and abstains "
                                     "(0 = no deadline)", low=0.0, high=MAX_AGE_S, runtime=True, tighten="down",
                                     off=0.0)
    watchdog_period: float = param(0.1, "s between watchdog checks", low=0.001, high=10.0)
    diagnostics_period: float = param(1.0, "s between /diagnostics messages", low=0.01, high=60.0)
    managed: bool = param(False, "run as a lifecycle (managed) node")
    startup_report: bool = param(True, "after loading the model, measure its speed once (about 2000 samples: "
                                 "seconds on a CPU, abstaining meanwhile) and log rs-guard doctor's summary, with a "
                                 "warning for every command that cannot keep up with decision_deadline, "
                                 "max_frame_age, command_ttl and publish_rate; then log how the first 5 decisions "
                                 "on camera frames compare")


@dataclass(frozen=True)
class CommandConfig:
    """One discrete command: its Twist, its radius threshold and the words that name it."""

    linear_x: float = param(0.0, "Twist linear.x (m/s)", low=-10.0, high=10.0)
    linear_y: float = param(0.0, "Twist linear.y (m/s)", low=-10.0, high=10.0)
    angular_z: float = param(0.0, "Twist angular.z (rad/s)", low=-20.0, high=20.0)
    radius_threshold: float = param(0.0, "certified l2 radius needed to publish (model-input units)", low=0.0,
                                    high=100.0, runtime=True, tighten="up")
    phrases: tuple[str, ...] = param((), "grammar/semantic oracle: phrases that mean this command", item=str)
    patterns: tuple[str, ...] = param((), "grammar oracle: regular expressions (full match, normalised text)",
                                         item=str)
    prototype: tuple[float, ...] = param((), "action oracle: the action vector of this command", item=float)


DEMO_COMMANDS: dict[str, CommandConfig] = {
    "forward": CommandConfig(linear_x=0.25, radius_threshold=0.25, phrases=(
        "go straight", "move forward", "go forward", "drive ahead", "keep going straight")),
    "left": CommandConfig(angular_z=0.6, radius_threshold=0.1, phrases=(
        "turn left", "rotate left a bit", "go left", "veer left")),
    "right": CommandConfig(angular_z=-0.6, radius_threshold=0.1, phrases=(
        "turn right", "rotate right a bit", "go right", "veer right")),
    "stop": CommandConfig(phrases=("stop", "stop, you are there", "halt, target reached", "you have arrived, stop")),
}


@dataclass(frozen=True)
class CommandSet:
    names: tuple[str, ...] = param(tuple(DEMO_COMMANDS), "the discrete commands the oracle maps outputs to",
                                    item=str)
    abstain: str = param("stop", "the safe command published whenever nothing is certified")
    table: Mapping[str, CommandConfig] = field(default_factory=lambda: dict(DEMO_COMMANDS))


DEFAULT_CAMERA = "camera"  # the one camera of a file that names none (today's single-camera files)


@dataclass(frozen=True)
class CameraConfig:
    """One camera the model reads: its topic, where the backend feeds it, its expected size."""

    topic: str = param("image", "the camera's sensor_msgs/Image topic (CompressedImage on <topic>/compressed with "
                       "node.image_transport compressed); relative names can be remapped. Default: 'image' for the "
                       "one-camera default, '<name>/image' for a camera named in cameras.names")
    model_key: str = param("", "where the backend feeds this view: a LeRobot image feature (front or "
                           "observation.images.front), an ONNX input name, a plugin's key; '' = its position in "
                           "cameras.names (the order of the images in a transformers prompt)")
    expected_width: int = param(0, "frame width this camera must have; 0 = any width at least the model input's "
                                "(a frame smaller than the model input is always refused)", low=0, high=65_535)
    expected_height: int = param(0, "frame height this camera must have; 0 = any height at least the model "
                                 "input's", low=0, high=65_535)


def camera_defaults(name: str) -> CameraConfig:
    """A camera's defaults: the one-camera default reads `image`, any other camera `<name>/image`."""
    return CameraConfig() if name == DEFAULT_CAMERA else CameraConfig(topic=f"{name}/image")


@dataclass(frozen=True)
class CameraSet:
    names: tuple[str, ...] = param((DEFAULT_CAMERA,), "the cameras the model reads, in the order it takes them; a "
                                   "decision takes the newest frame of each, and the certificate covers all of them "
                                   "as one input", item=str)
    table: Mapping[str, CameraConfig] = field(default_factory=lambda: {DEFAULT_CAMERA: CameraConfig()})


@dataclass(frozen=True)
class StateConfig:
    """The robot's joint state, read by the model, held fixed (not certified) for each decision."""

    topic: str = param("", "sensor_msgs/JointState topic the model reads as the robot's state; '' = none (the "
                       "state is trusted input, like the instruction: the certificate is about the images given it)")
    joint_names: tuple[str, ...] = param((), "the joints the model reads, in its order; the message may carry more, "
                                         "and a decision whose state lacks one abstains", item=str)
    max_age: float = param(0.5, "s the joint state may be old (its header stamp, or its arrival when unstamped) when "
                           "a decision starts and when it is published", low=0.0, high=MAX_AGE_S, runtime=True,
                           tighten="down")


GROUPS: dict[str, type] = {"model": ModelConfig, "model.denoiser": DenoiserConfig, "preprocess": PreprocessConfig,
                           "oracle": OracleConfig, "smoothing": SmoothingConfig, "instruction": InstructionConfig,
                           "node": NodeConfig, "state": StateConfig}
# Names of today's single-camera files that moved under cameras.<name>: accepted while one camera is named.
MOVED_TO_CAMERA = {"preprocess.expected_width": "expected_width", "preprocess.expected_height": "expected_height",
                   "model.camera_key": "model_key"}


def _attr(group: str) -> str:
    """The Config attribute holding a group ("model.denoiser" -> denoiser)."""
    return group.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    instruction: InstructionConfig = field(default_factory=InstructionConfig)
    node: NodeConfig = field(default_factory=NodeConfig)
    state: StateConfig = field(default_factory=StateConfig)
    commands: CommandSet = field(default_factory=CommandSet)
    cameras: CameraSet = field(default_factory=CameraSet)

    def thresholds(self) -> dict[str, float]:
        """Every command's radius threshold. The abstain command is listed explicitly with 0:
        publishing it is what abstaining does anyway, so it needs no certificate radius."""
        return {n: 0.0 if n == self.commands.abstain else c.radius_threshold for n, c in self.commands.table.items()}

    def to_flat(self) -> dict[str, Any]:
        """Every parameter as {dotted name: value}."""
        flat = {f"{g}.{f.name}": getattr(getattr(self, _attr(g)), f.name) for g in GROUPS for f in fields(GROUPS[g])}
        flat["commands.names"] = self.commands.names
        flat["commands.abstain"] = self.commands.abstain
        for name, cmd in self.commands.table.items():
            flat.update({f"commands.{name}.{f.name}": getattr(cmd, f.name) for f in fields(CommandConfig)})
        flat["cameras.names"] = self.cameras.names
        for name, cam in self.cameras.table.items():
            flat.update({f"cameras.{name}.{f.name}": getattr(cam, f.name) for f in fields(CameraConfig)})
        return flat

    def specs(self) -> list[ParamSpec]:
        """Every parameter of this configuration (its commands and cameras included)."""
        return param_specs(self.commands.names, self.cameras.names)


def _default(f: Any) -> Any:
    return f.default if f.default is not MISSING else f.default_factory()


def param_specs(command_names: Iterable[str] = tuple(DEMO_COMMANDS),
                camera_names: Iterable[str] = (DEFAULT_CAMERA,)) -> list[ParamSpec]:
    """Every parameter for these commands and cameras, in declaration order."""
    specs = [spec_of(f"{g}.{f.name}", f, _default(f)) for g, cls in GROUPS.items() for f in fields(cls)]
    specs += [spec_of(f"commands.{f.name}", f, _default(f)) for f in fields(CommandSet) if f.name != "table"]
    for name in command_names:
        base = DEMO_COMMANDS.get(name, CommandConfig())
        specs += [spec_of(f"commands.{name}.{f.name}", f, getattr(base, f.name)) for f in fields(CommandConfig)]
    specs += [spec_of("cameras.names", _set_field(CameraSet, "names"), (DEFAULT_CAMERA,))]
    for name in camera_names:
        base = camera_defaults(name)
        specs += [spec_of(f"cameras.{name}.{f.name}", f, getattr(base, f.name)) for f in fields(CameraConfig)]
    return specs


def from_flat(values: Mapping[str, Any], base: Config | None = None) -> Config:
    """Build a validated Config from {dotted name: value} overrides of `base` (defaults).

    Unknown names, wrong types, out-of-range values, commands missing from
    `commands.names` and an abstain command outside the set raise ConfigError naming
    the parameter.
    """
    base = base or Config()
    names = _names("commands", CommandSet, values, base.commands.names)
    cameras = _names("cameras", CameraSet, values, base.cameras.names)
    values = _moved_to_camera(values, cameras)
    specs = {s.name: s for s in param_specs(names, cameras)}
    merged = {name: spec.default for name, spec in specs.items()}
    merged.update({k: v for k, v in base.to_flat().items() if k in specs})
    for key, value in values.items():
        if key not in specs:
            raise ConfigError(_unknown(key, names, cameras))
        merged[key] = coerce(specs[key], value)
    groups = {_attr(g): cls(**{f.name: merged[f"{g}.{f.name}"] for f in fields(cls)}) for g, cls in GROUPS.items()}
    table = {n: CommandConfig(**{f.name: merged[f"commands.{n}.{f.name}"] for f in fields(CommandConfig)})
             for n in names}
    views = {n: CameraConfig(**{f.name: merged[f"cameras.{n}.{f.name}"] for f in fields(CameraConfig)})
             for n in cameras}
    abstain = merged["commands.abstain"]
    if abstain not in names:
        raise ConfigError(f"parameter 'commands.abstain': '{abstain}' is not one of commands.names {list(names)}")
    cfg = Config(**groups, commands=CommandSet(names=names, abstain=abstain, table=table),
                 cameras=CameraSet(names=cameras, table=views))
    check_consistent(cfg)
    return cfg


def _names(group: str, cls: type, values: Mapping[str, Any], current: tuple[str, ...]) -> tuple[str, ...]:
    """`<group>.names` from `values` (else `current`): unique, non-empty names without dots."""
    names = coerce(spec_of(f"{group}.names", _set_field(cls, "names"), ()), values.get(f"{group}.names", current))
    if not names or len(set(names)) != len(names) or not all(n and "." not in n for n in names):
        raise ConfigError(f"parameter '{group}.names': must be unique, non-empty names without dots (got {names})")
    return names


def _moved_to_camera(values: Mapping[str, Any], cameras: tuple[str, ...]) -> dict[str, Any]:
    """Today's single-camera names (MOVED_TO_CAMERA) as the one camera's own parameters; with
    several cameras, or given both ways, a ConfigError that says where they moved."""
    out = dict(values)
    for old, field_name in MOVED_TO_CAMERA.items():
        if old not in out:
            continue
        where = f"cameras.<name>.{field_name}"
        if len(cameras) > 1:
            raise ConfigError(f"parameter '{old}': moved to {where}; with cameras.names {list(cameras)} set it for "
                              "each camera")
        new = f"cameras.{cameras[0]}.{field_name}"
        if new in out:
            raise ConfigError(f"parameter '{old}': given twice, also as '{new}'; keep '{new}'")
        out[new] = out.pop(old)
    return out


def _set_field(cls: type, name: str) -> Any:
    return next(f for f in fields(cls) if f.name == name)


def _unknown(key: str, commands: tuple[str, ...], cameras: tuple[str, ...]) -> str:
    parts = key.split(".")
    if len(parts) == 3 and parts[0] == "commands" and parts[1] not in commands:
        return f"parameter '{key}': unknown command '{parts[1]}' (commands.names is {list(commands)})"
    if len(parts) == 3 and parts[0] == "cameras" and parts[1] not in cameras:
        return f"parameter '{key}': unknown camera '{parts[1]}' (cameras.names is {list(cameras)})"
    return f"parameter '{key}': unknown parameter"


def update(cfg: Config, changes: Mapping[str, Any]) -> Config:
    """Apply run-time changes: only `runtime` parameters, validated like a file, and a
    parameter of the guarantee only in the direction that tightens it (`param`'s `tighten`):
    whoever can reach the parameter services must not be able to loosen the gate unseen."""
    specs = {s.name: s for s in cfg.specs()}
    for key in changes:
        if key in specs and not specs[key].runtime:
            raise ConfigError(f"parameter '{key}': read-only at run time")
    new = from_flat(changes, base=cfg)
    before, after = cfg.to_flat(), new.to_flat()
    for key in changes:
        spec = specs[key]
        unused = key == "oracle.error_alpha" and cfg.oracle.error == 0.0  # alpha_O meant nothing until now
        if spec.tighten and not unused and loosens(spec, before[key], after[key]):
            way = "lowered" if spec.tighten == "down" else "raised"
            raise ConfigError(f"parameter '{key}': may only be {way} at run time ({before[key]:g} -> {after[key]:g} "
                              "would weaken the guarantee); restart the node with the new value in its parameter file")
    return new


__all__ = ["Config", "ConfigError", "CommandConfig", "CameraConfig", "ParamSpec", "param_specs", "from_flat",
           "update", "coerce", "TWIST_FIELDS", "DEFAULT_CAMERA"]
