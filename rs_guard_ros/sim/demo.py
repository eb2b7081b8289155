"""`rs-guard demo`: the closed loop on real ROS 2 -- sim, guard and scenario runner.

Starts `rs_guard_sim` and `rs_guard_node` (config/sim_diffdrive.yaml, use_sim_time) as
separate processes in their own ROS_DOMAIN_ID with localhost-only discovery, plays the
scenario file with a progress bar, prints the summary table, writes the report
(report.md, PNG plots, episodes.csv, steps.jsonl) and shuts everything down with SIGINT.
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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:  # importing this module stays light: rclpy, torch and the model load when it runs
    from .attacker import CameraAttacker
    from .records import Episode
    from .scenarios import Scenario

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "rs_guard_ros"
GUARD_CONFIG = "sim_diffdrive.yaml"
DEMO_SCENARIOS = "scenarios/demo.yaml"
START_TIMEOUT_S = 120.0  # model load and DDS discovery on a busy 2-core machine
STEP_TIMEOUT_S = 30.0


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
    if domain_id is None:
        domain_id = random.SystemRandom().randint(1, 101)  # 0..101 are safe on Linux; 0 is everyone's default
    if not 0 <= domain_id <= 232:
        raise ValueError(f"--domain-id must be in [0, 232], got {domain_id}")
    os.environ.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(domain_id),
                      PYTHONUNBUFFERED="1")
    return dict(os.environ)


class Processes:
    """Child processes with logs in `out`; stopped with SIGINT (then SIGKILL) on exit."""

    def __init__(self, out: Path, env: dict[str, str]) -> None:
        self.out, self.env = out, env
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str]) -> None:
        with open(self.out / f"{name}.log", "w") as log:  # the child keeps its own copy of the descriptor
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
             guard_args: tuple[str, ...] = (), only: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run every scenario (or those named in `only`) closed-loop; return the summary."""
    from tqdm import tqdm

    from . import report
    from .scenarios import load_scenarios

    started = time.monotonic()
    scenarios = load_scenarios(scenario_file or config_file(DEMO_SCENARIOS))
    if only:
        unknown = set(only) - {s.name for s in scenarios}
        if unknown:
            raise ValueError(f"--scenario: unknown names {sorted(unknown)}; known: {[s.name for s in scenarios]}")
        scenarios = [s for s in scenarios if s.name in only]
    out.mkdir(parents=True, exist_ok=True)
    env = ros_environment(domain_id)
    procs = Processes(out, env)
    procs.start("sim", ["-m", f"{PACKAGE}.sim.ros_bridge", "--ros-args", "-p", "camera_rate:=10.0"])
    procs.start("guard", ["-m", f"{PACKAGE}.node", "--ros-args", "--params-file", str(config_file(GUARD_CONFIG)),
                          "-r", "image:=/rs_guard/camera", "-r", "cmd_vel:=/cmd_vel", "-p", "use_sim_time:=true",
                          *guard_args])
    episodes, codes = [], {}
    try:
        episodes = _play(scenarios, procs, tqdm)
    finally:
        codes = procs.stop()
    meta = {"scenarios": str(scenario_file or config_file(DEMO_SCENARIOS)), "guard config": str(config_file(GUARD_CONFIG)),
            "gate": _gate_summary(), "guard overrides": " ".join(guard_args) or "none",
            "ROS_DOMAIN_ID": env["ROS_DOMAIN_ID"], "wall time (s)": round(time.monotonic() - started, 1),
            "exit codes": codes}
    path = report.write_report(episodes, out, meta)
    return {"episodes": [report.episode_metrics(e) for e in episodes], "table": report.summary_table(episodes),
            "report": str(path), "exit_codes": codes, "wall_s": meta["wall time (s)"],
            "domain_id": int(env["ROS_DOMAIN_ID"])}


def _gate_summary() -> str:
    """The guard file's smoothing settings and thresholds, one line for the report."""
    from ..config import load_config

    cfg = load_config(config_file(GUARD_CONFIG))
    s = cfg.smoothing
    return (f"sigma {s.sigma}, alpha {s.alpha}, {s.mode} (n0 {s.n0}, n_max {s.n_max}), "
            f"radius thresholds {cfg.thresholds()}")


def _play(scenarios: list[Scenario], procs: Processes, tqdm: Any) -> list[Episode]:
    """Bring up the runner, wait for the guard, play every scenario with a progress bar."""
    import rclpy

    from .runner import ScenarioRunner

    rclpy.init()
    runner = ScenarioRunner(perturber=_perturber(scenarios))
    try:
        with spinning(runner):
            if not _wait_active(runner, procs):
                raise RuntimeError(f"the guard did not become active within {START_TIMEOUT_S:.0f} s; "
                                   f"see {procs.out / 'guard.log'}")
            episodes = []
            for i, scenario in enumerate(scenarios):
                with tqdm(total=scenario.time_limit, desc=f"[{i + 1}/{len(scenarios)}] {scenario.name}",
                          unit="sim s", file=sys.stderr, leave=True, bar_format=_BAR,
                          mininterval=0.5 if sys.stderr.isatty() else 5.0) as bar:
                    episodes.append(runner.run_episode(scenario, i + 1, STEP_TIMEOUT_S, _progress(bar)))
                procs.check_alive()
            return episodes
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
    """Until the guard is active; fails fast if a child process dies meanwhile."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        procs.check_alive()
        if runner.wait_guard_active(1.0):
            return True
    return False


def _perturber(scenarios: list[Scenario]) -> CameraAttacker | None:
    """The camera-link attacker, loaded only when a scenario has an attack fault."""
    if not any(f.kind == "attack" for s in scenarios for f in s.faults):
        return None
    from ..config import load_config
    from .attacker import CameraAttacker

    attacker = CameraAttacker(load_config(config_file(GUARD_CONFIG)))
    for s in scenarios:
        bad = [f.command for f in s.faults if f.kind == "attack" and f.command not in attacker.names]
        if bad:
            raise ValueError(f"scenario {s.name}: attack command(s) {bad} not in the command set "
                             f"{list(attacker.names)}")
    return attacker
