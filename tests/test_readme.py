"""Issue 15, item 10: README.md's commands are copy-paste safe.

Every command line of the README's bash blocks is run here for real, as the words a shell
makes of it, unless it needs what this machine lacks (a robot's own model is the one
exception: those lines are run too, and must fail in one line that says how to get it).
`NOT_HERE` lists the others with the reason; a README command in neither list fails
`test_every_readme_command_is_run_here_or_says_why_not`. Output folders under /tmp become
the test's own; two long runs (attack, bench) are cut short by one flag, named where they are.
"""
from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the environment running the tests holds rs-guard and rs_guard_node
TRY_DOCTOR = ("rs-guard", "doctor", "--config", "config/turtlebot4.yaml", "--model.backend", "demo")
TRY_NODE, TRY_NODE_HAS = ("rs_guard_node",), ("model.backend:=demo",)  # the README's try-first lines


def readme_commands() -> list[list[str]]:
    """The words of every command line in README.md's ```bash blocks (continuation lines joined,
    comments dropped), as a shell splits them."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M)
    lines = (line for block in blocks for line in block.replace("\\\n", " ").splitlines())
    return [words for words in (shlex.split(line, comments=True) for line in lines) if words]


COMMANDS = readme_commands()

# README commands that do not run on this machine, by their leading words: why not.
NOT_HERE = {
    ("make", "demo"): "sets up .venv and runs all six scenarios; one scenario runs below",
    ("make", "test"): "runs this test suite",
    ("ros2",): "needs a ROS 2 install (ros2 CLI, launch); the PyPI wheels have neither",
    ("source",): "a robot's ROS 2 install (/opt/ros)",
    ("python3", "-m", "venv"): "a robot's install (docs/install.md; tests/test_install.py)",
    ("pip", "install", "-r", "requirements-robot.txt"): "a robot's install (tests/test_install.py)",
    ("cd", "~/ws"): "a robot's colcon workspace (tests/test_colcon_build.py builds one)",
    (".venv/bin/rs-guard", "eval", "--bag", "/data/fleet_bags"): "recorded bags on a Ray cluster (docs/scale.md)",
}


def readme_command(program: str, *lead: str, contains: tuple[str, ...] = ()) -> list[str]:
    """The one README command of `program` whose next words are `lead` and whose words include
    all of `contains`."""
    found = [c for c in COMMANDS if Path(c[0]).name == program and c[1:1 + len(lead)] == list(lead)
             and all(w in c for w in contains)]
    assert len(found) == 1, f"{program} {lead} {contains}: {len(found)} README commands match"
    return found[0]


def robot_model_line(program: str) -> list[str]:
    """The README's `program` line for the robot's own VLA (config/turtlebot4.yaml, no model override)."""
    found = [c for c in COMMANDS if Path(c[0]).name == program and "config/turtlebot4.yaml" in c
             and not any(w.startswith("model.") or w.startswith("--model.") for w in c)]
    assert len(found) == 1, f"{program}: {len(found)} README commands match"
    return found[0]


def run_readme(command: list[str], tmp_path: Path, env: dict | None = None, timeout: float = 600,
               extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run a README command from the repository root: its program from this environment, a
    /tmp output folder moved into `tmp_path`, `extra` flags appended."""
    program = BIN / Path(command[0]).name
    args = [str(tmp_path / Path(a).name) if a.startswith("/tmp/") else a for a in command[1:]]
    return subprocess.run([str(program), *args, *extra], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.strip()]


# ---------------------------------------------------------------------------- the robot section
@pytest.mark.timeout(300)
def test_readme_try_first_doctor_line_measures_the_demo_vla_with_the_robot_file(tmp_path):
    out = run_readme(readme_command(*TRY_DOCTOR), tmp_path,
                     extra=("--no-progress",))
    assert out.returncode in (0, 3), out.stderr  # 3: this machine is too slow for a deadline; not an error
    assert "model transformers:demo_vla" in out.stdout
    assert all(re.search(rf"^{name} ", out.stdout, re.M) for name in ("forward", "left", "right", "stop"))


def test_readme_robot_doctor_line_without_the_robots_model_says_how_to_get_it_in_one_line(tmp_path):
    out = run_readme(robot_model_line("rs-guard"), tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    (line,) = _lines(out.stderr)
    assert "'/opt/models/my_tb4_vla' does not exist" in line and "`hf download " in line


@pytest.mark.ros
@pytest.mark.slow
def test_readme_try_first_node_line_gates_with_the_demo_vla(ros_env, tmp_path):
    command = readme_command(*TRY_NODE, contains=TRY_NODE_HAS)
    assert "model.path:=''" in command  # the quoted form reaches rcl as an empty string
    log = tmp_path / "node.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(BIN / command[0]), *command[1:]], cwd=ROOT, env=ros_env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240  # a bound on the wait only: start-up measures the model first
        while "gate active" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "gate active" in log.read_text(), log.read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    assert code == 0, log.read_text()
    assert "model loaded: demo transformers:demo_vla" in log.read_text()


@pytest.mark.ros
def test_readme_robot_node_line_without_the_robots_model_exits_1_saying_how_to_get_it(ros_env, tmp_path):
    out = run_readme(robot_model_line("rs_guard_node"), tmp_path, env=ros_env, timeout=120)
    assert out.returncode == 1  # as `rs_guard_node --help` says: the model failed to load
    text = out.stdout + out.stderr
    assert "Traceback" not in text
    assert any("[FATAL]" in line and "`hf download " in line for line in _lines(text)), text


def test_the_try_first_overrides_certify_the_examples_as_well_as_the_default_file():
    """The README's try-first overrides on config/turtlebot4.yaml against config/default.yaml's
    demo gate, on the shipped example frames with one fixed noise seed (the same draws for both):
    every frame the default certifies is certified, and no frame's certified command is wrong."""
    import csv

    import yaml

    from rs_guard_ros import param_files
    from rs_guard_ros.cli import read_rgb
    from rs_guard_ros.guard import Guard

    node_line = readme_command(*TRY_NODE, contains=TRY_NODE_HAS)
    overrides = {name: yaml.safe_load(value) for name, value in
                 (w.split(":=", 1) for i, w in enumerate(node_line) if node_line[i - 1] == "-p")}
    fixed = {"model.device": "cpu", "smoothing.seed": 0}
    gates = {name: Guard.from_config(param_files.load_config(*files, overrides=dict(more, **fixed)))
             for name, files, more in (("default", (ROOT / "config" / "default.yaml",), {}),
                                       ("try_first", (ROOT / "config" / "turtlebot4.yaml",), overrides))}
    with open(ROOT / "examples" / "frames.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    certified = {name: set() for name in gates}
    for row in rows:
        frame = read_rgb(ROOT / "examples" / row["image"])
        for name, gate in gates.items():
            d = gate.decide(frame, row["instruction"])
            if d.certified:
                assert d.command == row["command"], (name, row)
                certified[name].add(row["image"])
    assert certified["default"] and certified["default"] <= certified["try_first"], certified


# ---------------------------------------------------------------------------- the rs-guard commands
@pytest.mark.timeout(120)
def test_readme_plan_line_prints_the_figures_the_readme_quotes(tmp_path):
    out = run_readme(readme_command("rs-guard", "plan"), tmp_path)
    assert out.returncode == 0, out.stderr
    assert "p* = 0.977" in out.stdout and "n_min = 301" in out.stdout


@pytest.mark.timeout(300)
@pytest.mark.parametrize("words,ok", [
    (("certify",), (0, 1)),  # 1: the gate abstained (the README's exit statuses)
    (("examples",), (0,)),
    (("eval", "--images"), (0,)),
    (("calibrate-oracle",), (0,)),
    (("doctor", "--config", "config/sim_diffdrive.yaml"), (0, 3)),  # 3: too slow for the deadline on this machine
])
def test_readme_rs_guard_line_runs(tmp_path, words, ok):
    out = run_readme(readme_command("rs-guard", *words), tmp_path)
    assert out.returncode in ok, out.stderr
    assert "Traceback" not in out.stderr and out.stdout.strip()


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("words,shorter", [
    (("attack",), ("--scenes", "2")),  # README: 20 scenes, about 5 minutes here
    (("bench",), ("--decisions", "2")),  # README: 10 decisions per figure, about 2 minutes here
])
def test_readme_long_rs_guard_line_runs_cut_short(tmp_path, words, shorter):
    out = run_readme(readme_command("rs-guard", *words), tmp_path, extra=("--json", *shorter))
    assert out.returncode == 0, out.stderr
    assert isinstance(json.loads(out.stdout), dict)


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_readme_demo_scenario_line_runs_the_closed_loop(ros_env, tmp_path):
    """The README line, in the test's own claimed domain (the demo's default is a random one,
    which another test running at the same time may hold)."""
    out = run_readme(readme_command("rs-guard", "demo"), tmp_path, env=ros_env,
                     extra=("--domain-id", ros_env["ROS_DOMAIN_ID"]))
    assert out.returncode == 0, out.stderr
    assert "1/1 episodes succeeded" in out.stdout


# ---------------------------------------------------------------------------- coverage
RUN_HERE = (TRY_DOCTOR, ("rs-guard", "plan"), ("rs-guard", "certify"), ("rs-guard", "examples"),
            ("rs-guard", "eval", "--images"), ("rs-guard", "calibrate-oracle"),
            ("rs-guard", "doctor", "--config", "config/sim_diffdrive.yaml"), ("rs-guard", "attack"),
            ("rs-guard", "bench"), ("rs-guard", "demo"))


def test_every_readme_command_is_run_here_or_says_why_not():
    """Each README command is one the tests above run (RUN_HERE, and the robot's-own-model
    lines) or is in NOT_HERE with its reason."""
    robot = [robot_model_line(program) for program in ("rs-guard", "rs_guard_node")]
    covered = [readme_command(*words) for words in RUN_HERE] + [readme_command(*TRY_NODE, contains=TRY_NODE_HAS)]
    covered += robot
    for command in COMMANDS:
        why_not = [why for lead, why in NOT_HERE.items() if tuple(command[:len(lead)]) == lead]
        assert command in covered or why_not, f"README command not run by a test and not in NOT_HERE: {command}"
