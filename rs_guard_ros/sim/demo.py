"""`rs-guard demo`: the closed loop on real ROS 2 -- sim, guard and scenario runner.

Starts `rs_guard_sim` and `rs_guard_node` (config/sim_diffdrive.yaml, use_sim_time) as
separate processes in their own ROS_DOMAIN_ID with localhost-only discovery, plays the
scenario file with a progress bar, prints the summary table, writes the report
(report.md, PNG plots, episodes.csv, steps.jsonl) and shuts everything down with SIGINT.
Scenarios with `views: 2` run after (or before) the others in a session of their own: the
sim renders its rear camera too, and the guard runs config/sim_two_view.yaml (the two-view
model) on both cameras; the report keeps the scenario file's order.

The world runs slower than real time when the computer is slow: after the guard is up,
warm-up episodes set the sim's real_time_factor so that a decision lasts the sim time the
scenarios were designed for (:mod:`rs_guard_ros.sim.calibration`).
`--real-time` (real_time=True) keeps the factor at 1 and skips the warm-up.

With Ray (`--ray`, :mod:`rs_guard_ros.scale`) every episode is one Ray task that does the
same (`play`) for its one scenario, in a fresh worker process, in a folder episode_NNN and a
ROS_DOMAIN_ID of its own (another one for each retry), so episodes run side by side without
seeing each other's DDS traffic; the report over all episodes is written as in process.
"""
from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .calibration import CALIBRATION_FACTOR, CALIBRATION_ROUNDS, WARMUP_SIM_S, Calibration, calibrate

if TYPE_CHECKING:  # importing this module stays light: rclpy, torch and the model load when it runs
    from ..scale import RayTasks
    from .attacker import CameraAttacker
    from .records import Episode
    from .scenarios import Scenario

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "rs_guard_ros"
GUARD_CONFIG = "sim_diffdrive.yaml"

DEMO_SCENARIOS = "scenarios/demo.yaml"
START_TIMEOUT_S = 120.0  # model load and DDS discovery on a busy 2-core machine
STEP_TIMEOUT_S = 30.0
DOMAIN_IDS = 101  # 1..101: ids whose DDS ports are safe on Linux (0 is everyone's default)


@dataclass(frozen=True)
class Setup:
    """How sim and guard run for scenarios of one `views` count."""

    config: str  # the guard's parameter file under config/
    remaps: tuple[str, ...]  # the guard's camera inputs -> the runner's relay topics (runner.RELAYS)
    cameras: tuple[str, ...]  # those the runner relays; "rear": the sim renders its rear camera too


SETUPS = {1: Setup(GUARD_CONFIG, ("-r", "image:=/rs_guard/camera"), ("front",)),
          2: Setup("sim_two_view.yaml", ("-r", "front/image:=/rs_guard/camera",
                                         "-r", "rear/image:=/rs_guard/camera_rear"), ("front", "rear"))}


def config_file(name: str) -> Path:
    """A file under the package's config/: the source tree first, else the installed share dir."""
    source = ROOT / "config" / name
    if source.is_file():
        return source
    try:  # installed with colcon: <prefix>/share/rs_guard_ros/config
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory(PACKAGE)) / "config" / name
    except (ImportError, LookupError, OSError) as exc:
        raise ValueError(f"cannot find config/{name}: not in {source.parent} and no installed package ({exc})")
    if not installed.is_file():
        raise ValueError(f"cannot find config/{name} in {source.parent} or {installed.parent}")
    return installed


def ros_environment(domain_id: int | None) -> dict[str, str]:
    """This process's environment with localhost-only discovery and the demo's own domain id."""
    os.environ.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(check_domain(domain_id)),
                      PYTHONUNBUFFERED="1")
    return dict(os.environ)


def check_domain(domain_id: int | None) -> int:
    """`domain_id`, checked; None: a random one in 1..DOMAIN_IDS."""
    if domain_id is None:
        return random.SystemRandom().randint(1, DOMAIN_IDS)
    if not 0 <= domain_id <= 232:
        raise ValueError(f"--domain-id must be in [0, 232], got {domain_id}")
    return domain_id


def episode_domain(base: int, slot: int) -> int:
    """The domain id of one Ray episode try: consecutive slots (episode + try x episodes) get
    consecutive ids in 1..DOMAIN_IDS, so up to DOMAIN_IDS episodes running at once never share one."""
    return 1 + (base - 1 + slot) % DOMAIN_IDS


class Processes:
    """Child processes with logs in `out`; stopped with SIGINT (then SIGKILL) on exit."""

    def __init__(self, out: Path, env: dict[str, str]) -> None:
        self.out, self.env = out, env
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str]) -> None:
        # the child keeps its own copy of the log's descriptor, and takes this thread's signal mask:
        # SIGINT is let through for the fork, or a child started by a Ray worker (which blocks it) ignores `stop`
        with open(self.out / f"{name}.log", "w") as log, _sigint_unblocked():
            self.procs[name] = subprocess.Popen([sys.executable, *args], env=self.env, stdout=log,
                                                stderr=subprocess.STDOUT, cwd=self.out)

    def check_alive(self) -> None:
        """RuntimeError naming a child that exited early (its log has the reason)."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}; see {self.out / (name + '.log')}")

    def stop(self) -> dict[str, int]:
        """SIGINT every child, wait, and return the exit codes."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        codes = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait(timeout=10)
        return codes


@contextlib.contextmanager
def _sigint_unblocked() -> Iterator[None]:
    """SIGINT not blocked in this thread for the block (restored afterwards)."""
    previous = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def spinning(node: Any) -> Iterator[None]:
    """Spin `node` in a background executor thread for the duration of the block."""
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor()
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        executor.shutdown(timeout_sec=2)
        thread.join(timeout=5)


def run_demo(scenario_file: Path | None, out: Path, domain_id: int | None = None,
             guard_args: tuple[str, ...] = (), only: tuple[str, ...] = (), episodes: int | None = None,
             workers: RayTasks | None = None, real_time: bool = False) -> dict[str, Any]:
    """Run every scenario of a file or folder (or those named in `only`; `episodes` of them,
    cycling through the list) closed-loop, in this process or one Ray task per episode with
    `workers`, at a calibrated real-time factor (1 with `real_time`); write the report and
    return the summary."""
    from . import report

    started = time.monotonic()
    source = scenario_file or config_file(DEMO_SCENARIOS)
    scenarios = episode_list(source, only, episodes)
    out.mkdir(parents=True, exist_ok=True)
    if workers is not None:
        return _run_on_ray(scenarios, source, out, check_domain(domain_id), guard_args, workers, started, real_time)
    played, codes, domain, calibrations = play(scenarios, out, domain_id, guard_args, progress=True,
                                               real_time=real_time)
    calibration = describe_calibrations(calibrations)
    meta = _meta(source, scenarios, guard_args, str(domain), started) | {"real-time factor": calibration,
                                                                         "exit codes": codes}
    path = report.write_report(played, out, meta)
    return {"episodes": [report.episode_metrics(e) for e in played], "table": report.summary_table(played),
            "report": str(path), "exit_codes": codes, "wall_s": meta["wall time (s)"], "domain_id": domain,
            "real_time_factors": {config: c.factor for config, c in calibrations.items()}, "calibration": calibration}


def episode_list(source: Path, only: tuple[str, ...] = (), count: int | None = None) -> list[Scenario]:
    """The scenarios of a file, or of every *.yaml file of a folder (by name), those named in
    `only` alone, repeated in turn to `count` episodes (default: each once)."""
    from .scenarios import load_scenarios

    files = sorted(source.glob("*.yaml")) if source.is_dir() else [source]
    if not files:
        raise ValueError(f"--scenarios {source}: no *.yaml scenario files in this folder")
    scenarios = [s for f in files for s in load_scenarios(f)]
    if only:
        unknown = set(only) - {s.name for s in scenarios}
        if unknown:
            raise ValueError(f"--scenario: unknown names {sorted(unknown)}; known: {[s.name for s in scenarios]}")
        scenarios = [s for s in scenarios if s.name in only]
    if count is not None and count < 1:
        raise ValueError(f"--episodes must be >= 1, got {count}")
    return [scenarios[i % len(scenarios)] for i in range(count or len(scenarios))]


def play(scenarios: list[Scenario], out: Path, domain_id: int | None, guard_args: tuple[str, ...],
         progress: bool, real_time: bool = False) -> tuple[list[Episode], dict[str, int], int, dict[str, Calibration]]:
    """Start sim and guard in their own domain, calibrate the real-time factor (1 with
    `real_time`), play the scenarios, stop them: (episodes in the scenarios' order, exit codes,
    domain id, calibration per guard config). One session per `views` count (SETUPS), each
    calibrated on its own (two views take longer per decision); the processes and logs of the
    two-view one are suffixed "_two_view". The closed loop itself, in process and in every Ray
    episode task (each calibrates on its own worker, whose computer may differ)."""
    env = ros_environment(domain_id)
    played: dict[int, Episode] = {}
    codes: dict[str, int] = {}
    calibrations: dict[str, Calibration] = {}
    factor = 1.0 if real_time else CALIBRATION_FACTOR
    for views in dict.fromkeys(s.views for s in scenarios):  # in order of first appearance
        setup, suffix = SETUPS[views], "" if views == 1 else "_two_view"
        indices = [i for i, s in enumerate(scenarios) if s.views == views]
        procs = Processes(out, env)
        procs.start(f"sim{suffix}", ["-m", f"{PACKAGE}.sim.ros_bridge", "--ros-args", "-p", "camera_rate:=10.0",
                                     "-p", f"real_time_factor:={factor!r}",
                                     "-p", f"rear_camera:={str('rear' in setup.cameras).lower()}"])
        procs.start(f"guard{suffix}", ["-m", f"{PACKAGE}.ros.node", "--ros-args", "--params-file",
                                       str(config_file(setup.config)), *setup.remaps, "-r", "cmd_vel:=/cmd_vel",
                                       "-p", "use_sim_time:=true", *guard_args])
        try:
            group, calibrations[setup.config] = _play([scenarios[i] for i in indices], procs, progress, setup,
                                                      (indices[0], len(scenarios)), factor, warm_up=not real_time)
        finally:
            codes |= procs.stop()
        played.update(zip(indices, group))
    return [played[i] for i in range(len(scenarios))], codes, int(env["ROS_DOMAIN_ID"]), calibrations


def describe_calibrations(calibrations: dict[str, Calibration]) -> str:
    """One line for the report and the summary: the factor, per guard config when several ran."""
    if len(calibrations) == 1:
        return next(iter(calibrations.values())).describe()
    return "; ".join(f"{config}: {c.describe()}" for config, c in calibrations.items())


def _meta(source: Path, scenarios: list[Scenario], guard_args: tuple[str, ...], domains: str,
          started: float) -> dict[str, Any]:
    """The report's header: what ran, with which gate(s), where, for how long."""
    configs = [SETUPS[views].config for views in dict.fromkeys(s.views for s in scenarios)]
    return {"scenarios": str(source), "guard config": ", ".join(str(config_file(c)) for c in configs),
            "gate": "; ".join(_gate_summary(c) for c in configs),
            "guard overrides": " ".join(guard_args) or "none", "ROS_DOMAIN_ID": domains,
            "wall time (s)": round(time.monotonic() - started, 1)}


# ----------------------------------------------------------------------------- on Ray
@dataclass(frozen=True)
class EpisodeTask:
    """One episode for a Ray task: its scenario, its folder and what its domain id derives from."""

    index: int
    scenario: Scenario
    out: Path
    base_domain: int
    episodes: int  # in the run: a retry's domain id is an episode count further on
    guard_args: tuple[str, ...]
    source: Path
    real_time: bool = False


@dataclass
class EpisodeRun:
    """What one episode task returns (episode None: every try of it died)."""

    index: int
    scenario: str
    episode: Episode | None
    domain_id: int | None = None
    exit_codes: dict[str, int] = field(default_factory=dict)
    report: str = ""
    reason: str = ""
    calibration: str = ""


def play_episode(task: EpisodeTask, attempt: int) -> EpisodeRun:
    """One Ray episode: sim and guard of its own in domain `episode_domain(...)`, the scenario,
    the episode's own report in its folder."""
    from . import report

    started = time.monotonic()
    domain = episode_domain(task.base_domain, task.index + attempt * task.episodes)
    task.out.mkdir(parents=True, exist_ok=True)
    (episode,), codes, domain, calibrations = play([task.scenario], task.out, domain, task.guard_args,
                                                   progress=False, real_time=task.real_time)
    calibration = describe_calibrations(calibrations)
    meta = _meta(task.source, [task.scenario], task.guard_args, str(domain), started) | {
        "real-time factor": calibration, "exit codes": codes,
        "episode": f"{task.index + 1}, try {attempt + 1}"}
    path = report.write_report([episode], task.out, meta)
    return EpisodeRun(task.index, task.scenario.name, episode, domain, codes, str(path), calibration=calibration)


def failed_episode(task: EpisodeTask, reason: str) -> EpisodeRun:
    return EpisodeRun(task.index, task.scenario.name, None, reason=reason)


def _run_on_ray(scenarios: list[Scenario], source: Path, out: Path, base_domain: int, guard_args: tuple[str, ...],
                workers: RayTasks, started: float, real_time: bool = False) -> dict[str, Any]:
    """Every episode as a Ray task (`play_episode`, each calibrating its own real-time factor),
    side by side; the report over all of them."""
    from tqdm import tqdm

    from . import report

    tasks = [EpisodeTask(i, s, out / f"episode_{i + 1:03d}", base_domain, len(scenarios), guard_args, source,
                         real_time) for i, s in enumerate(scenarios)]
    runs = []
    with tqdm(total=len(tasks), desc="rs-guard demo", unit="episode", file=sys.stderr,
              mininterval=0.5 if sys.stderr.isatty() else 5.0) as bar:
        for _, run in workers.map(play_episode, tasks, failed_episode):
            runs.append(run)
            bar.update(1)
    played = [r.episode for r in runs if r.episode is not None]
    if not played:
        raise RuntimeError(f"every episode failed on its Ray workers; first reason: {runs[0].reason}")
    domains = ", ".join(str(r.domain_id) for r in runs if r.episode is not None)
    meta = _meta(source, scenarios, guard_args, domains, started) | {
        "real-time factor": "; ".join(f"episode {r.index + 1}: {r.calibration}" for r in runs if r.episode is not None),
        "Ray": f"{workers.stats.workers} episodes at a time, {workers.stats.retried} tries again after a worker "
               f"died, {workers.stats.failed} failed" + "".join(f"; episode {r.index + 1} ({r.scenario}): {r.reason}"
                                                               for r in runs if r.episode is None)}
    path = report.write_report(played, out, meta)
    return {"episodes": [report.episode_metrics(e) for e in played], "table": report.summary_table(played),
            "report": str(path), "exit_codes": {}, "wall_s": meta["wall time (s)"], "domain_id": base_domain,
            "runs": [{k: v for k, v in vars(r).items() if k != "episode"} for r in runs],
            "ray": workers.stats.to_dict()}


def _gate_summary(config: str) -> str:
    """A guard file's cameras, smoothing settings and thresholds, one line for the report."""
    from ..param_files import load_config

    cfg = load_config(config_file(config))
    s = cfg.smoothing
    return (f"{config}: cameras {list(cfg.cameras.names)}, sigma {s.sigma}, alpha {s.alpha}, {s.mode} "
            f"(n0 {s.n0}, n_max {s.n_max}), "
            f"radius thresholds {cfg.thresholds()}")


def _play(scenarios: list[Scenario], procs: Processes, progress: bool, setup: Setup, numbering: tuple[int, int],
          factor: float, warm_up: bool) -> tuple[list[Episode], Calibration]:
    """Bring up the runner (relaying the setup's cameras; the sim runs at `factor`), wait for the
    guard, calibrate the factor when told, play every scenario (with a progress bar numbered from
    numbering[0] of numbering[1])."""
    import rclpy
    from tqdm import tqdm

    from .runner import ScenarioRunner

    rclpy.init()
    runner = ScenarioRunner(perturber=_perturber(scenarios), cameras=setup.cameras, real_time_factor=factor)
    try:
        with spinning(runner):
            if not _wait_active(runner, procs):
                raise RuntimeError(f"the guard did not become active within {runner.wall(START_TIMEOUT_S):.0f} s; "
                                   f"see the guard's log in {procs.out}")
            def bar(total: float, desc: str) -> Any:
                return tqdm(total=total, desc=desc, unit="sim s", file=sys.stderr, leave=True, bar_format=_BAR,
                            disable=not progress, mininterval=0.5 if sys.stderr.isatty() else 5.0)

            calibration = Calibration(factor)
            if warm_up:
                with bar(WARMUP_SIM_S * CALIBRATION_ROUNDS, "[warm-up] decision time") as warmup:
                    calibration = calibrate(runner, scenarios[0], STEP_TIMEOUT_S, _progress(warmup))
                procs.check_alive()
            episodes = []
            first = 1 + calibration.warmups  # the sim's episode ids only go up
            number, total = numbering
            for i, scenario in enumerate(scenarios):
                with bar(scenario.time_limit, f"[{number + i + 1}/{total}] {scenario.name}") as played:
                    episodes.append(runner.run_episode(scenario, first + i, STEP_TIMEOUT_S, _progress(played)))
                procs.check_alive()
            return episodes, calibration
    finally:
        runner.close()
        runner.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


_BAR = "{desc:<34} {bar} {n:5.1f}/{total:.0f} sim s [{elapsed}]"


def _progress(bar: Any) -> Callable[[float], None]:
    """A callback moving `bar` to an absolute value."""
    def update(value: float) -> None:
        bar.update(value - bar.n)
    return update


def _wait_active(runner: Any, procs: Processes) -> bool:
    """Until the guard is active (its diagnostics come on sim time, so the bound is stretched by the
    real-time factor); fails fast if a child process dies meanwhile."""
    deadline = time.monotonic() + runner.wall(START_TIMEOUT_S)
    while time.monotonic() < deadline:
        procs.check_alive()
        if runner.wait_guard_active(1.0):
            return True
    return False


def _perturber(scenarios: list[Scenario]) -> CameraAttacker | None:
    """The camera-link attacker, loaded only when a scenario has an attack fault."""
    if not any(f.kind == "attack" for s in scenarios for f in s.faults):
        return None
    from ..param_files import load_config
    from .attacker import CameraAttacker

    attacker = CameraAttacker(load_config(config_file(GUARD_CONFIG)))
    for s in scenarios:
        bad = [f.command for f in s.faults if f.kind == "attack" and f.command not in attacker.names]
        if bad:
            raise ValueError(f"scenario {s.name}: attack command(s) {bad} not in the command set "
                             f"{list(attacker.names)}")
    return attacker
