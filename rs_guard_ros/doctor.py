"""`rs-guard doctor`: can this gate keep up on this robot?

Two halves, so that the node can log the same summary at start-up without measuring twice:

* `measure(guard, frame, instruction)` times the configured model on the configured
  device at the configured batch size (rs_guard_ros.benchmark's measurements: the raw
  policy, and the whole certified decision path, `Guard.decide`, as
  t(n) = overhead_s + n / samples_per_s), and reads the memory in use;
* `summary(cfg, samples_per_s, overhead_s)` needs no model: per command, the threshold,
  n_min (`certify.samples_needed`), the sequential test's first look and its exact sample
  counts for a consistent model (p = 1) and for p = 0.99 (`certify.sequential_outlook`),
  the latency and decision rate they imply, whether the command can be certified before
  `node.decision_deadline` and within the other time bounds (`time_bounds`: frame age, command
  TTL, republish rate), and concrete advice where it cannot (never a batch size beyond
  smoothing.max_buffer_mb); then p* and the figures of every selection path
  (`certify.selection_paths`: the standing command confirmed, changed, or n0 selection samples).

`run` does both and adds `ros_distro.ros_environment()` (the ROS 2 distribution and the rclpy the node
would run on); `format_report` renders the result for people; `EXIT_TOO_SLOW` is the exit
code of `rs-guard doctor` when some command cannot be certified within every time bound.

The latency model t(n) = overhead_s + n / samples_per_s is a line through decisions of a
quarter, one and three batches (`benchmark.decision_cost`), and `measure` checks it against
real decisions as configured (`check`: their latency beside the line's prediction). It fits
where a model call costs in proportion to its batch (the CPU); on a GPU a partial batch
costs nearly a full one, so there the figure for a decision smaller than a batch can be
optimistic by up to one batch's time: compare it with the check.
"""
from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

from . import certify
from .config import Config, param_specs
from .ros_distro import format_ros, ros_environment
from .smoothing import buffer_bytes, max_rows

if TYPE_CHECKING:  # summary() needs no torch; measure() loads it through the guard
    import numpy as np

    from .guard import Frames, Guard

EXIT_OK = 0
EXIT_TOO_SLOW = 3  # some command cannot be certified within every time bound (`time_bounds`)
P_TRUE = (1.0, 0.99)  # true probabilities the outlook is given for: a consistent model, and a slightly noisy one
DEADLINE_MARGIN = 1.2  # a suggested deadline leaves this factor over the expected latency
# A frame's age when its decision starts, unless told (--camera-latency): a camera driver's capture
# to delivery (tens of ms) plus the wait for the busy decision thread (newest frame wins: up to one
# frame period, 0.1 s at 10 Hz). The node cannot know it before frames arrive; doctor can be told.
CAMERA_LATENCY_S = 0.1
RECOMMENDED_CPU_THREADS = 1  # benchmarks/bench_cpu_threads.py: fastest on a CPU shared with other processes
DEFAULT_INSTRUCTION = "go to the red box"
_HIGH = {p.name: p.high for p in param_specs(())}  # no advice beyond a parameter's range
SIGMA_MAX = _HIGH["smoothing.sigma"]
BATCH_SIZE_MAX = _HIGH["smoothing.batch_size"]
MODEL_INPUT_ITEMSIZE = 4  # the noisy copies are float32 model inputs (Guard.buffer_bytes)


# ----------------------------------------------------------------------------- measuring
def probe_frames(guard: Guard) -> Frames:
    """Mid-grey RGB frames the guard accepts, for measuring where no camera frame is at hand
    (e.g. at node start-up): one per camera, each of its expected camera size, else the model
    input size; a plain array with one camera, {camera: frame} with several (Guard.decide)."""
    import numpy as np

    frames = {}
    for name, pre in guard.preprocessors.items():
        (oh, ow), expected = pre.out_size, pre.expected_size or (0, 0)
        frames[name] = np.full((expected[0] or oh, expected[1] or ow, 3), 128, np.uint8)
    return frames if len(frames) > 1 else next(iter(frames.values()))


def probe_state(cfg: Config) -> np.ndarray | None:
    """Every joint of state.joint_names at 0 where the model reads a joint state (state.topic
    set), else None: the joint state's stand-in next to the probe frames."""
    import numpy as np

    return np.zeros(len(cfg.state.joint_names), np.float32) if cfg.state.topic else None


def measure(guard: Guard, frame: Frames | None = None, instruction: str = DEFAULT_INSTRUCTION, *,
            state: np.ndarray | None = None, repeats: int = 3, raw_batches: int = 3, check: bool = True,
            progress: Optional[Callable[[int], None]] = None) -> dict[str, Any]:
    """Measured speed and memory of `guard` on this machine (warm-up first; config restored),
    on `frame` (one per camera) and `state`, by default the probe frames and probe state.

    samples_per_s and overhead_s describe the whole decision path (`benchmark.decision_cost`);
    raw_samples_per_s is the bare policy on pre-made noisy batches (`benchmark.raw_throughput`).
    With `check`, `repeats` decisions as configured follow (the node leaves them out: a probe
    frame may be one the model cannot answer, so it checks its first decisions on camera frames,
    `FirstDecisions`; check is None then).
    Evaluates about `measured_samples(guard.cfg, repeats, raw_batches)` samples; `progress` is
    called with the samples evaluated.
    """
    import torch

    from . import benchmark

    frame = probe_frames(guard) if frame is None else frame
    state = probe_state(guard.cfg) if state is None else state
    raw = benchmark.raw_throughput(guard, frame, instruction, raw_batches, progress, state=state)
    cost = benchmark.decision_cost(guard, frame, instruction, repeats, progress, state=state)
    checked = check_decisions(guard, frame, instruction, repeats, state, progress) if check else None
    return {"device": str(guard.policy.device), "model": guard.policy.name, "torch_threads": torch.get_num_threads(),
            "batch_size": guard.cfg.smoothing.batch_size, "raw_samples_per_s": raw, **cost, "check": checked,
            "memory": benchmark.memory(guard.policy.device)}


def check_decisions(guard: Guard, frame: Frames, instruction: str, repeats: int, state: np.ndarray | None,
                    progress: Optional[Callable[[int], None]] = None) -> dict[str, Any]:
    """`repeats` decisions as configured, each offered the command the one before certified (as
    on the node): what they decided, and their median samples and latency."""
    from . import benchmark

    real = benchmark.decisions_for(guard, frame, instruction, repeats, progress, stream=True, state=state)
    return {"command": real[0].command, "label": real[0].label, "certified": real[0].certified,
            "reason": real[0].reason, "n_used": statistics.median(d.n_used for d in real),
            **benchmark.selection_figures(real),
            "latency_s": statistics.median(d.timing_ms["total"] for d in real) / 1e3, "decisions": len(real),
            "denoise_share": statistics.median(d.timing_ms["denoise"] / max(d.timing_ms["total"], 1e-9)
                                               for d in real)}


def measured_samples(cfg: Config, repeats: int = 3, raw_batches: int = 3) -> int:
    """How many samples `measure` evaluates (fewer where the probe frame's output is UNKNOWN)."""
    from . import benchmark

    s = cfg.smoothing
    # a consistent model stops at its command's first look (fixed mode: n_max); take the largest
    check = max(first_look(cfg, t) for t in cfg.thresholds().values()) if s.mode == "sequential" else s.n_max
    return (raw_batches + 1) * s.batch_size + benchmark.decision_cost_samples(cfg, repeats) + repeats * (s.n0 + check)


def first_look(cfg: Config, threshold: float) -> int:
    """The estimation samples after which the sequential test certifies `threshold` for a
    consistent model (p = 1): its first look (n_max where it has none), whatever cfg's mode."""
    s = cfg.smoothing
    return certify.first_look_samples(threshold, s.sigma, s.alpha, s.n_max, cfg.oracle.error)


def run(guard: Guard, frame: Frames | None = None, instruction: str = DEFAULT_INSTRUCTION, *,
        state: np.ndarray | None = None, repeats: int = 3, raw_batches: int = 3, deadline_s: float | None = None,
        camera_latency_s: float = CAMERA_LATENCY_S, check: bool = True,
        progress: Optional[Callable[[int], None]] = None) -> dict[str, Any]:
    """`measure`, then `summary` from the measured figures: the whole of `rs-guard doctor`
    (and of the node's start-up report, without the check)."""
    measured = measure(guard, frame, instruction, state=state, repeats=repeats, raw_batches=raw_batches,
                       check=check, progress=progress)
    result = summary(guard.cfg, measured["samples_per_s"], measured["overhead_s"], deadline_s=deadline_s,
                     camera_latency_s=camera_latency_s, device=measured["device"], input_numel=guard.layout.numel)
    if check:  # the line's prediction for the real decisions' size
        measured["check"]["predicted_latency_s"] = _latency(measured["check"]["n_used"], measured)
    return {**result, "measured": measured, "ros": ros_environment()}


class FirstDecisions:
    """The node's start-up check, on its first `count` decisions that ran the model on camera
    frames (a grey probe frame may be one the model cannot answer): their median samples,
    latency (frame received -> published) and frame age at publishing (by the frame's stamp),
    beside the measured line's prediction, and the time bounds (`time_bounds`) that latency
    misses. ROS-free; the node feeds it from its decision thread."""

    def __init__(self, cfg: Config, speed: Mapping[str, float], count: int = 5):
        self._cfg, self._speed, self._count = cfg, dict(speed), count
        self._seen: list[tuple[int, float, float]] = []

    def note(self, n_used: int, latency_s: float, frame_age_s: float) -> tuple[bool, str] | None:
        """Count a decision (those that ran no model are skipped); when the `count`-th arrives,
        (whether every bound holds, the log line), else None."""
        if n_used <= 0 or len(self._seen) >= self._count:
            return None
        self._seen.append((n_used, latency_s, frame_age_s))
        if len(self._seen) < self._count:
            return None
        n, latency, age = (statistics.median(column) for column in zip(*self._seen))
        misses = [b["parameter"] for b in time_bounds(self._cfg, latency, max(0.0, age - latency)) if not b["ok"]]
        deadline = self._cfg.node.decision_deadline
        if deadline and latency > deadline:
            misses.insert(0, "node.decision_deadline")
        line = (f"start-up check on camera frames: the first {self._count} decisions that ran the model took a median "
                f"{n:.0f} samples in {latency:.2f} s from frame to command (the measured speed predicts "
                f"{_latency(n, self._speed):.2f} s), their frames {age:.2f} s old when published; "
                + (f"NOT within {', '.join(misses)} (rs-guard doctor says what to change)" if misses
                   else "within every time bound"))
        return not misses, line


# ----------------------------------------------------------------------------- the summary
def summary(cfg: Config, samples_per_s: float, overhead_s: float = 0.0, *, deadline_s: float | None = None,
            camera_latency_s: float = CAMERA_LATENCY_S, device: str | None = None,
            input_numel: int | None = None) -> dict[str, Any]:
    """Per command, can its threshold be certified within every time bound at this speed? No model needed.

    `samples_per_s` and `overhead_s`: the decision path's cost, t(n) = overhead_s + n / samples_per_s
    (from `measure`, or any other source). `deadline_s` defaults to cfg.node.decision_deadline
    (0 = no deadline). `device` ("cpu", "cuda:0"; None = unknown) only shapes the advice;
    `input_numel` (the model input's size, every view; None = unknown) bounds the batch size it
    advises by smoothing.max_buffer_mb.
    A command is `in_time` when a consistent model (p = 1) certifies it in time: n0 + the
    sequential test's first look (fixed mode: n0 + n_max) samples fit in the deadline; it
    `keeps_up` when that decision, `camera_latency_s` after its frame's capture, also meets the
    other bounds of `time_bounds`. The abstain command is listed but never needs to keep up:
    publishing it is what abstaining does.
    """
    samples_per_s = certify.check_positive(samples_per_s, "samples_per_s")
    overhead_s = float(overhead_s)
    if not (math.isfinite(overhead_s) and overhead_s >= 0.0):
        raise ValueError(f"overhead_s must be a finite number >= 0, got {overhead_s!r}")
    deadline = cfg.node.decision_deadline if deadline_s is None else float(deadline_s)
    if not (math.isfinite(deadline) and deadline >= 0.0):
        raise ValueError(f"deadline must be a finite number >= 0 (0 = none), got {deadline!r}")
    s = cfg.smoothing
    budget = None if deadline == 0.0 else max(0, math.floor((deadline - overhead_s) * samples_per_s + 1e-9))
    speed = {"samples_per_s": samples_per_s, "overhead_s": overhead_s}
    camera_latency_s = float(camera_latency_s)
    if not (math.isfinite(camera_latency_s) and camera_latency_s >= 0.0):
        raise ValueError(f"camera latency must be a finite number >= 0, got {camera_latency_s!r}")
    commands = [_command(cfg, name, threshold, speed, deadline, budget, camera_latency_s)
                for name, threshold in cfg.thresholds().items()]
    late = [c for c in commands if not c["abstain"] and not c["keeps_up"]]
    result = {"device": device, "samples_per_s": samples_per_s, "overhead_s": overhead_s,
              "decision_deadline": deadline, "samples_in_deadline": budget, "camera_latency_s": camera_latency_s,
              "max_frame_age": cfg.node.max_frame_age, "command_ttl": cfg.node.command_ttl,
              "publish_rate": cfg.node.publish_rate,
              "mode": s.mode, "selection": s.selection, "sigma": s.sigma, "alpha": s.alpha,
              "oracle_error": cfg.oracle.error, "n0": s.n0,
              "n_max": s.n_max, "batch_size": s.batch_size, "cpu_threads": cfg.model.cpu_threads,
              "dtype": cfg.model.dtype, "max_buffer_mb": s.max_buffer_mb, "input_numel": input_numel,
              "commands": commands, "feasible": not late,
              "exit_code": EXIT_OK if not late else EXIT_TOO_SLOW}
    result["advice"] = advice(cfg, result)
    return result


def _latency(samples: float, speed: dict[str, float]) -> float:
    return speed["overhead_s"] + samples / speed["samples_per_s"]


def _command(cfg: Config, name: str, threshold: float, speed: dict[str, float], deadline: float,
             budget: int | None, camera_latency_s: float) -> dict[str, Any]:
    """One command's row of the summary (sample counts include the n0 selection samples)."""
    s, eps = cfg.smoothing, cfg.oracle.error
    n_min = certify.samples_needed(threshold, s.sigma, s.alpha, eps)
    first = first_look(cfg, threshold) if s.mode == "sequential" else s.n_max
    row: dict[str, Any] = {"command": name, "threshold": threshold, "abstain": name == cfg.commands.abstain,
                           "n_min": n_min, "first_look": first, "samples_first_look": s.n0 + first}
    for p in P_TRUE:
        test = certify.mode_outlook(p, threshold, s.sigma, s.alpha, s.n_max, eps, s.mode)
        row[f"p={p}"] = {"expected_samples": s.n0 + test.expected_samples, "median_samples": s.n0 + test.median_samples,
                         "certify_probability": test.certify_probability,
                         "latency_s": _latency(s.n0 + test.expected_samples, speed)}
    consistent = row[f"p={P_TRUE[0]}"]
    row["latency_s"] = consistent["latency_s"]
    row["decisions_per_s"] = 1.0 / row["latency_s"]
    row["latency_first_look_s"] = _latency(s.n0 + first, speed)
    row["latency_n_min_s"] = _latency(s.n0 + n_min, speed)
    row["in_time"] = budget is None or s.n0 + first <= budget
    row["n_min_in_time"] = budget is None or s.n0 + n_min <= budget
    row["p_required"] = certify.p_required(threshold, s.sigma) + eps
    row["paths"] = selection_paths(cfg, name, threshold, speed)
    # the decision after a certified one confirms it (smoothing.selection previous), else selects again
    following = row["paths"]["previous" if s.selection == "previous" else "samples"][f"p={P_TRUE[0]}"]["latency_s"]
    row["bounds"] = time_bounds(cfg, row["latency_first_look_s"], camera_latency_s, following)
    row["keeps_up"] = row["in_time"] and all(b["ok"] for b in row["bounds"])
    return row


def time_bounds(cfg: Config, latency_s: float, camera_latency_s: float,
                following_s: float | None = None) -> list[dict[str, Any]]:
    """The bounds besides node.decision_deadline that a decision of `latency_s`, starting
    `camera_latency_s` after its frame's capture, must meet on the node: each with the parameter
    that sets it, the value it would need, whether the configured one does, and the value to
    advise (DEADLINE_MARGIN to spare; None where no value of this parameter helps):

    * node.max_frame_age >= the frame's age at publishing (camera + decision), else the
      certificate is discarded as stale_frame;
    * node.command_ttl >= that age + the following decision (`following_s`, default `latency_s`),
      so that a command stands until the next decision (back to back, newest frame wins) can
      replace it; else the robot stops between them;
    * node.publish_rate high enough that a standing command is republished at least once before
      it expires: 1 / rate <= command_ttl - age.

    Under use_sim_time these limits count sim seconds: the figures hold at real-time factor 1."""
    n = cfg.node
    age = camera_latency_s + latency_s
    replaced = age + (latency_s if following_s is None else following_s)  # after capture, when the next one comes
    standing = n.command_ttl - age  # how long a command stands after it is published
    rate = 1.0 / standing if standing > 0.0 else math.inf
    ttl_ok, ttl_advised = replaced <= n.command_ttl, _round_up(DEADLINE_MARGIN * replaced)
    # the rate to advise is the one the TTL needs once its own advice (if any) is taken
    left = (n.command_ttl if ttl_ok else ttl_advised) - age
    rate_advised = math.ceil(DEADLINE_MARGIN / left) if left > 0.0 else math.inf

    def bound(parameter: str, value: float, needed: float, ok: bool, advised: float, what: str) -> dict[str, Any]:
        fits = math.isfinite(advised) and advised <= _HIGH[parameter]
        return {"parameter": parameter, "value": value, "needed": needed, "ok": ok,
                "advised": advised if fits else None, "what": what}

    return [
        bound("node.max_frame_age", n.max_frame_age, age, age <= n.max_frame_age, _round_up(DEADLINE_MARGIN * age),
              "the frame's age when its command is published"),
        bound("node.command_ttl", n.command_ttl, replaced, ttl_ok, ttl_advised,
              "its command must stand until the next decision"),
        bound("node.publish_rate", n.publish_rate, rate, standing > 0.0 and 1.0 / n.publish_rate <= standing,
              rate_advised, "a standing command is republished before it expires"),
    ]


def selection_paths(cfg: Config, name: str, threshold: float, speed: dict[str, float]) -> dict[str, Any]:
    """Per selection path (`certify.selection_paths`: the standing command confirmed, changed to
    this one, or chosen by n0 samples) the figures of this command at P_TRUE; a change is priced
    from the dearest other command (its failed test selects this one). `configured`: whether
    smoothing.selection lets a decision take the path."""
    s, eps = cfg.smoothing, cfg.oracle.error
    others = [t for n, t in cfg.thresholds().items() if n not in (name, cfg.commands.abstain) and math.isfinite(t)]
    outlooks = {p: certify.selection_paths(p, threshold, s.sigma, s.alpha, s.n0, s.n_max, eps, s.mode,
                                           previous_threshold=max(others, default=threshold)) for p in P_TRUE}
    paths = certify.paths_table(outlooks)
    for path, figures in paths.items():
        figures["configured"] = s.selection == "previous" or path == "samples"
        for p in P_TRUE:
            figures[f"p={p}"]["latency_s"] = _latency(figures[f"p={p}"]["expected_samples"], speed)
    return paths


def max_threshold_in_time(cfg: Config, budget: int) -> float | None:
    """The largest radius threshold (2 decimals, rounded down) a consistent model certifies within
    `budget` samples (n0 included) in sequential mode; None when none can."""
    s, eps = cfg.smoothing, cfg.oracle.error
    available = budget - s.n0
    if available < 1:
        return None
    if available >= s.n_max:  # the whole test fits: any threshold n_max can certify
        return math.floor(100 * certify.max_certifiable_radius(s.n_max, s.sigma, s.alpha, eps)) / 100
    radius = math.floor(100 * certify.max_certifiable_radius(
        available, s.sigma, certify.FIRST_LOOK_SHARE * s.alpha, eps)) / 100
    while radius > 0.0:  # guard against rounding at the boundary: check it with the test's own looks
        if first_look(cfg, radius) <= available:  # (n_max, when there is no look, exceeds `available`)
            return radius
        radius = round(radius - 0.01, 2)
    return None


def advice(cfg: Config, result: dict[str, Any]) -> list[str]:
    """Concrete lines: per command that cannot be certified in time, what would make it fit; then
    settings worth knowing about even when everything fits."""
    lines: list[str] = []
    s, m = cfg.smoothing, cfg.model
    device = result["device"] or ""
    on_cpu, on_cuda = device == "cpu", device.startswith("cuda")
    deadline, budget, rate = result["decision_deadline"], result["samples_in_deadline"], result["samples_per_s"]
    for c in result["commands"]:
        if c["abstain"]:
            continue
        if c["in_time"]:
            lines += bound_advice(c, result["camera_latency_s"])
            continue
        fixes = []
        if s.mode == "sequential":
            lower = max_threshold_in_time(cfg, budget)
            if lower is not None and lower < c["threshold"]:
                fixes.append(f"lower the threshold to {lower:g} (commands.{c['command']}.radius_threshold)")
        else:
            fixes.append(f"use smoothing.mode sequential (a consistent model stops after "
                         f"{s.n0 + first_look(cfg, c['threshold'])} samples instead of n_max {s.n_max})")
        fixes.append(f"raise node.decision_deadline to {_round_up(DEADLINE_MARGIN * c['latency_first_look_s'])}")
        if on_cpu:
            fixes.append("use CUDA (model.device cuda)")
        if on_cuda and m.dtype == "float32":
            fixes.append("set model.dtype bfloat16")
        # A partial batch costs nearly a full one on a GPU; on a CPU only tiny batches waste much.
        if s.batch_size < c["samples_first_look"] and (on_cuda or s.batch_size < 64):
            fixes.append(batch_size_advice(cfg, c["samples_first_look"], result["input_numel"]))
        if on_cpu and m.cpu_threads == 0:
            fixes.append(f"set model.cpu_threads {RECOMMENDED_CPU_THREADS} if other processes share the CPU")
        wider = _sigma_for(cfg, c["threshold"], budget)
        if wider is not None:
            fixes.append(f"or raise smoothing.sigma to {wider:g} (only if the model stays accurate under that noise)")
        lines.append(f"{c['command']}: threshold {c['threshold']:g} needs {c['samples_first_look']} samples "
                     f"(n0 {s.n0} + {'first look' if s.mode == 'sequential' else 'n_max'} {c['first_look']}) = "
                     f"{c['latency_first_look_s']:.2f} s > decision_deadline {deadline:g} s at {rate:.0f} samples/s: "
                     + ", ".join(fixes))
        lines += bound_advice(c, result["camera_latency_s"])
    if deadline == 0.0:
        lines.append("node.decision_deadline is 0: no decision is ever cut short, however late its command")
    if on_cpu and m.cpu_threads == 0:
        lines.append(f"model.cpu_threads is 0 (torch's default, one thread per core): where other processes share "
                     f"the CPU, set it to {RECOMMENDED_CPU_THREADS}; oversubscribed threads slow inference many-fold")
    return lines


def bound_advice(c: dict[str, Any], camera_latency_s: float) -> list[str]:
    """A line per `time_bounds` bound that command row `c` misses: what happens, and the value of
    the parameter that would fit (else: make decisions faster)."""
    lines = []
    latency, age = c["latency_first_look_s"], camera_latency_s + c["latency_first_look_s"]
    for b in c["bounds"]:
        if b["ok"] or (b["advised"] is not None and b["advised"] <= b["value"]):  # the TTL's advice mends it
            continue
        name, value = b["parameter"], b["value"]
        if name == "node.max_frame_age":
            why = (f"{age:.2f} s ({camera_latency_s:g} s camera + {latency:.2f} s decision) > {name} {value:g} s, "
                   f"so every such certificate is discarded (stale_frame)")
        elif name == "node.command_ttl":
            why = f"{b['needed']:.2f} s after capture > {name} {value:g} s, so the robot stops between decisions"
        elif math.isfinite(b["needed"]):
            why = (f"it stands {1.0 / b['needed']:.2f} s after publishing, less than the republish period "
                   f"{1.0 / value:.2f} s")
        else:
            why = "it has expired by the time it is published (see node.command_ttl)"
        fix = (f"raise {name} to {b['advised']:g}" + (" (node.max_frame_age at least as much)"
                                                      if name == "node.command_ttl" else "")
               if b["advised"] is not None else f"no {name} in its range fits: make decisions faster")
        lines.append(f"{c['command']}: {b['what']}: {why}: {fix}")
    return lines


def batch_size_advice(cfg: Config, samples: int, input_numel: int | None) -> str:
    """Advice to batch a decision of `samples` samples in fewer model calls, never past the batch
    size whose noisy copies of the model input (`input_numel` values; None = unknown) fit
    smoothing.max_buffer_mb (Guard.check_budget's rule); it names the cap where the cap binds."""
    s = cfg.smoothing
    wanted = min(_next_power_of_two(samples), BATCH_SIZE_MAX)
    if input_numel is None:
        return (f"raise smoothing.batch_size to {wanted} if {wanted} noisy copies of the model input fit "
                f"smoothing.max_buffer_mb ({s.max_buffer_mb:g} MB)")
    cap = max_rows(input_numel, MODEL_INPUT_ITEMSIZE, int(s.max_buffer_mb * 2**20))
    if min(wanted, max(s.n0, s.n_max)) <= cap:  # the buffer holds min(batch, max(n0, n_max)) rows
        return f"raise smoothing.batch_size to {wanted} (fewer model calls per decision)"
    need = buffer_bytes(input_numel, MODEL_INPUT_ITEMSIZE, min(wanted, max(s.n0, s.n_max))) / 2**20
    if cap <= s.batch_size:
        return (f"smoothing.batch_size cannot grow: smoothing.max_buffer_mb ({s.max_buffer_mb:g} MB) holds at most "
                f"{cap} noisy copies of this {input_numel}-value model input ({wanted} would need {need:.0f} MB)")
    return (f"raise smoothing.batch_size to {cap}, the most smoothing.max_buffer_mb ({s.max_buffer_mb:g} MB) allows "
            f"for this {input_numel}-value model input ({wanted} would need {need:.0f} MB)")


def _sigma_for(cfg: Config, threshold: float, budget: int | None) -> float | None:
    """The sigma (2 decimals, rounded up) at which `threshold` fits the budget as the largest
    in-time threshold does at the current sigma (n_min depends on R / sigma only)."""
    if budget is None or cfg.smoothing.mode != "sequential":
        return None
    lower = max_threshold_in_time(cfg, budget)
    if lower is None or lower <= 0.0:
        return None
    sigma = math.ceil(100 * cfg.smoothing.sigma * threshold / lower) / 100
    return sigma if sigma <= SIGMA_MAX else None


def _and(items: list[Any]) -> str:
    words = [str(i) for i in items]
    return ", ".join(words[:-1]) + " and " + words[-1] if len(words) > 1 else "".join(words)


def format_selection(counts: Mapping[str, int]) -> str:
    """{"previous": 2, "samples": 1} -> "selection: 1 by samples, 2 by previous"."""
    return "selection: " + ", ".join(f"{n} by {how}" for how, n in sorted(counts.items()))


def _round_up(seconds: float) -> float:
    return math.ceil(10 * seconds - 1e-9) / 10


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


# ----------------------------------------------------------------------------- output
def format_report(r: dict[str, Any]) -> str:
    """Human-readable `rs-guard doctor` output (also for a node's start-up log)."""
    deadline = r["decision_deadline"]
    lines = [format_ros(r["ros"])] if "ros" in r else []
    m = r.get("measured")
    if m:
        lines.append(f"model {m['model']} on {m['device']} (torch threads {m['torch_threads']}), "
                     f"batch {m['batch_size']}")
        lines.append(f"measured: raw policy {m['raw_samples_per_s']:.0f} samples/s; whole decision path "
                     f"{r['samples_per_s']:.0f} samples/s + {1e3 * r['overhead_s']:.1f} ms per decision "
                     f"({m['decisions']} decisions of {_and(m['sizes'])} samples)")
        c = m["check"]
        if c is None:
            lines.append("check: on the first decisions on the camera's own frames, logged when they are done")
        else:
            lines.append(f"check: {c['decisions']} decisions as configured on this frame: {c['command']} "
                         f"({c['reason']}), median {c['n_used']:.0f} samples (selection {c['n_selection']:.0f} + "
                         f"estimation {c['n_estimation']:.0f}; {format_selection(c['selection'])}) in "
                         f"{c['latency_s']:.2f} s; the line predicts {c['predicted_latency_s']:.2f} s for that many"
                         + (f"; the denoiser takes {c['denoise_share']:.0%} of it" if c["denoise_share"] > 0 else "")
                         + ("; the model cannot answer this frame (give one of the robot's own with --image)"
                            if c["reason"].startswith("unknown_output") else ""))
        mem = m["memory"]
        cuda = mem["cuda_max_allocated_mb"]
        lines.append(f"memory: RSS {mem['rss_mb']:.0f} MB"
                     + (f", CUDA max allocated {cuda:.0f} MB" if cuda is not None else ", CUDA n/a"))
    else:
        lines.append(f"speed: {r['samples_per_s']:.0f} samples/s + {1e3 * r['overhead_s']:.1f} ms per decision")
    lines.append(f"smoothing: {r['mode']}, sigma {r['sigma']:g}, alpha {r['alpha']:g}, oracle error "
                 f"{r['oracle_error']:g}, n0 {r['n0']}, n_max {r['n_max']}")
    lines.append(f"decision_deadline {deadline:g} s: " + (
        "none" if r["samples_in_deadline"] is None else f"room for {r['samples_in_deadline']} samples per decision"))
    lines.append(f"max_frame_age {r['max_frame_age']:g} s, command_ttl {r['command_ttl']:g} s, publish_rate "
                 f"{r['publish_rate']:g} Hz; a frame is assumed {r['camera_latency_s']:g} s old when its decision "
                 f"starts (camera latency, --camera-latency)")
    lines += ["", "n_min: the fewest estimation samples that can ever certify R*; the other sample counts include the "
              f"n0 = {r['n0']} selection samples", "p = 1: a consistent model; p = 0.99: one output in 100 differs; "
              "P[c]: probability to certify; latency and dec/s at p = 1",
              f"{'command':<10} {'R*':>5} {'n_min':>6} {'1st look':>8} {'E[n] p=1':>8} {'med p=1':>7} "
              f"{'E[n] .99':>8} {'P[c] .99':>8} {'latency':>8} {'dec/s':>6}  keeps up"]
    for c in r["commands"]:
        p1, p99 = c["p=1.0"], c["p=0.99"]
        missed = ([] if c["in_time"] else ["node.decision_deadline"]) + [b["parameter"] for b in c["bounds"]
                                                                           if not b["ok"]]
        verdict = "(abstain)" if c["abstain"] else "NO: " + ", ".join(missed) if missed else "yes"
        lines.append(f"{c['command']:<10} {c['threshold']:>5g} {c['n_min']:>6} {c['samples_first_look']:>8} "
                     f"{p1['expected_samples']:>8.0f} {p1['median_samples']:>7} {p99['expected_samples']:>8.0f} "
                     f"{p99['certify_probability']:>8.3f} {c['latency_s']:>7.2f}s {c['decisions_per_s']:>6.1f}  "
                     f"{verdict}")
    lines += ["", f"selection paths (smoothing.selection {r['selection']}; the standing command is tested at "
              f"{certify.PREVIOUS_SHARE:g} alpha): previous = the standing command confirmed, changed = it fails "
              "and its samples select this command (priced from the dearest other command), samples = n0 selection "
              "samples; counts include the selection samples (n_sel), n_min is estimation samples only",
              f"{'command':<10} {'p*':>8} {'path':<9} {'alpha':>8} {'n_sel':>5} {'n_min':>6} {'1st look':>8} "
              f"{'E[n] .99':>8} {'P[c] .99':>8} {'latency':>8}"]
    for c in r["commands"]:
        for path, f in c["paths"].items():
            p99 = f["p=0.99"]
            lines.append(f"{c['command']:<10} {c['p_required']:>8.5f} {path + ('' if f['configured'] else '*'):<9} "
                         f"{f['test_alpha']:>8.2g} {f['n_selection']:>5} {f['n_min']:>6} {f['samples_first_look']:>8} "
                         f"{p99['expected_samples']:>8.1f} {p99['certify_probability']:>8.3f} "
                         f"{f['p=1.0']['latency_s']:>7.2f}s")
    if r["selection"] != "previous":
        lines.append("* smoothing.selection samples: decisions never take this path")
    lines.append("")
    lines.append("every threshold can be certified by a consistent model within the deadline, the frame age, the "
                 "command TTL and the republish rate" if r["feasible"] else
                 "some commands cannot be certified within every time bound: see the advice (those decisions will "
                 "abstain, or their commands lapse between decisions)")
    lines += [f"advice: {a}" for a in r["advice"]]
    return "\n".join(lines)


__all__ = ["EXIT_OK", "EXIT_TOO_SLOW", "CAMERA_LATENCY_S", "FirstDecisions", "measure", "first_look",
           "run", "summary", "time_bounds", "advice", "max_threshold_in_time", "probe_frames", "probe_state",
           "format_report"]
