"""Closed-loop scenarios: what one episode of the simulated robot looks like, read from YAML.

A scenario file holds `scenarios:` (a list) and optional `defaults:` merged under every
entry. One scenario:

    - name: red_box_behind_left          # unique, [A-Za-z0-9_-]
      description: turn around, then drive to the red box
      target: red box                    # an object of rs_guard_ros.sim.world, or null
      robot: [-1.0, 0.5, 90]             # start x, y (m) and yaw (degrees, CCW from +x)
      objects: {red box: [1.2, -0.4]}    # fixed object centres; the rest by `seed`
      seed: 3
      instructions:                      # sent to the guard at these sim times (s)
        - {at: 0.0, text: go to the red box}
      time_limit: 40                     # sim seconds
      expect: reach                      # reach: success = target reached; stay: = never moved;
                                         # turn: = turned towards the target by records.TURN_TOWARDS
                                         # (reach and turn end the episode once achieved)
      views: 1                           # 1: front camera, one-view model (config/sim_diffdrive.yaml);
                                         # 2: front + rear camera, two-view model (config/sim_two_view.yaml)
      faults:                            # camera-stream faults between the sim and the guard
        - {kind: stall, start: 6, duration: 2}            # no frames at all
        - {kind: drop, start: 2, duration: 4, probability: 0.5}   # each frame lost with p
        - {kind: noise, start: 9, duration: 1.5, sigma: 0.4}      # additive Gaussian ([0,1] units)
        - {kind: attack, start: 0, duration: 40, norm: l2, epsilon: 2.0, command: forward}

`attack` perturbs each frame with targeted PGD (rs_guard_ros.attack) towards `command`,
with `norm` l2 or linf and budget `epsilon` in camera-frame [0, 1] units (one-view scenarios
only: the attacker attacks the one-view model). The other faults hit every camera. Every
field is checked at load time; errors name the scenario and the field.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .world import OBJECTS, ROOM_HALF

FAULT_KINDS = ("stall", "drop", "noise", "attack")
EXPECTS = ("reach", "stay", "turn")
VIEWS = (1, 2)
NORMS = ("l2", "linf")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_OBJECT_NAMES = tuple(s.name for s in OBJECTS)


class ScenarioError(ValueError):
    """A scenario file that cannot be run; the message names the scenario and field."""


@dataclass(frozen=True)
class Fault:
    """One camera-stream fault active on [start, start + duration) sim seconds."""

    kind: str
    start: float
    duration: float
    probability: float = 1.0  # drop
    sigma: float = 0.0  # noise
    norm: str = "l2"  # attack
    epsilon: float = 0.0  # attack
    command: str = "forward"  # attack: the attacker's target command

    def active(self, t: float) -> bool:
        """True at sim time `t` (seconds from the episode start)."""
        return self.start <= t < self.start + self.duration


def camera_noise(rgb: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """A `noise` fault on one uint8 frame: N(0, sigma^2) added in [0, 1] units, then rounded and
    clipped back to uint8, as a camera link would deliver it."""
    noisy = rgb / 255.0 + rng.normal(0.0, sigma, rgb.shape)
    return np.clip(np.rint(noisy * 255.0), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Instruction:
    """An instruction sent to the guard `at` sim seconds after the episode starts."""

    at: float
    text: str


@dataclass(frozen=True)
class Scenario:
    """One episode: layout, target, instructions, limits, faults and what success means."""

    name: str
    target: str | None
    robot: tuple[float, float, float]  # x, y (m), yaw (radians)
    instructions: tuple[Instruction, ...]
    time_limit: float
    expect: str = "reach"
    objects: dict[str, tuple[float, float]] = field(default_factory=dict)
    seed: int = 0
    faults: tuple[Fault, ...] = ()
    description: str = ""
    views: int = 1  # cameras the robot and the guard use: 1 front, 2 front + rear

    def active_faults(self, t: float) -> tuple[Fault, ...]:
        """Faults active at sim time `t`."""
        return tuple(f for f in self.faults if f.active(t))


def load_scenarios(path: str | Path) -> list[Scenario]:
    """Read and validate a scenario file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"cannot read scenario file {str(path)!r}: {exc}") from exc
    return parse_scenarios(data, where=str(path))


def parse_scenarios(data: Any, where: str = "scenarios") -> list[Scenario]:
    """Validate a parsed scenario document (see the module docstring) into Scenarios."""
    if not isinstance(data, dict) or not isinstance(data.get("scenarios"), list) or not data["scenarios"]:
        raise ScenarioError(f"{where}: expected a mapping with a non-empty 'scenarios' list")
    unknown = set(data) - {"scenarios", "defaults"}
    if unknown:
        raise ScenarioError(f"{where}: unknown top-level keys {sorted(map(str, unknown))}")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ScenarioError(f"{where}: 'defaults' must be a mapping")
    scenarios = []
    for i, entry in enumerate(data["scenarios"]):
        if not isinstance(entry, dict):
            raise ScenarioError(f"{where}: scenario #{i} must be a mapping")
        scenarios.append(parse_scenario({**defaults, **entry}, f"{where}: scenario #{i}"))
    names = [s.name for s in scenarios]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ScenarioError(f"{where}: duplicate scenario names {duplicates}")
    return scenarios


_SCENARIO_KEYS = {"name", "description", "target", "robot", "objects", "seed", "instructions", "time_limit",
                  "expect", "faults", "views"}


def parse_scenario(entry: dict[str, Any], where: str) -> Scenario:
    """One scenario mapping (defaults already merged) -> Scenario."""
    unknown = set(entry) - _SCENARIO_KEYS
    if unknown:
        raise ScenarioError(f"{where}: unknown keys {sorted(map(str, unknown))}; allowed: {sorted(_SCENARIO_KEYS)}")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ScenarioError(f"{where}: name must be 1-64 characters of [A-Za-z0-9_-], got {name!r}")
    where = f"{where} ({name})"
    target = entry.get("target")
    if target is not None and target not in _OBJECT_NAMES:
        raise ScenarioError(f"{where}: target must be one of {list(_OBJECT_NAMES)} or null, got {target!r}")
    time_limit = _number(entry.get("time_limit"), f"{where}: time_limit", low=0.0, high=3600.0, open_low=True)
    expect = entry.get("expect", "reach" if target else "stay")
    if expect not in EXPECTS:
        raise ScenarioError(f"{where}: expect must be one of {EXPECTS}, got {expect!r}")
    if expect in ("reach", "turn") and target is None:
        raise ScenarioError(f"{where}: expect: {expect} needs a target")
    views = entry.get("views", 1)
    if isinstance(views, bool) or views not in VIEWS:
        raise ScenarioError(f"{where}: views must be one of {VIEWS}, got {views!r}")
    faults = _faults(entry.get("faults") or [], where)
    if views > 1 and any(f.kind == "attack" for f in faults):
        raise ScenarioError(f"{where}: an attack fault needs views: 1 (the attacker targets the one-view model)")
    seed = entry.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ScenarioError(f"{where}: seed must be an integer in [0, 2^32), got {seed!r}")
    description = entry.get("description", "")
    if not isinstance(description, str):
        raise ScenarioError(f"{where}: description must be text")
    return Scenario(name=name, target=target, robot=_robot(entry.get("robot"), where),
                    instructions=_instructions(entry.get("instructions"), time_limit, where), time_limit=time_limit,
                    expect=expect, objects=_objects(entry.get("objects") or {}, where), seed=seed,
                    faults=faults, description=description, views=views)


def _number(value: Any, what: str, low: float, high: float, open_low: bool = False) -> float:
    """A finite real in [low, high] ((low, high] with open_low), or ScenarioError naming `what`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ScenarioError(f"{what} must be a finite number, got {value!r}")
    if value < low or value > high or (open_low and value == low):
        bracket = "(" if open_low else "["
        raise ScenarioError(f"{what} must be in {bracket}{low}, {high}], got {value!r}")
    return float(value)


def _xy(value: Any, what: str) -> tuple[float, float]:
    """A point inside the room, from a 2-list."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ScenarioError(f"{what} must be a list [x, y], got {value!r}")
    return tuple(_number(v, f"{what}[{i}]", -ROOM_HALF, ROOM_HALF) for i, v in enumerate(value))  # type: ignore[return-value]


def _robot(value: Any, where: str) -> tuple[float, float, float]:
    """[x, y, yaw_degrees] -> (x, y, yaw_radians)."""
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ScenarioError(f"{where}: robot must be a list [x, y, yaw_degrees], got {value!r}")
    x, y = _xy(value[:2], f"{where}: robot")
    yaw = _number(value[2], f"{where}: robot yaw (degrees)", -360.0, 360.0)
    return x, y, math.radians(yaw)


def _objects(value: Any, where: str) -> dict[str, tuple[float, float]]:
    """{object name: [x, y]} with known names."""
    if not isinstance(value, dict):
        raise ScenarioError(f"{where}: objects must be a mapping of object name to [x, y]")
    unknown = [k for k in value if k not in _OBJECT_NAMES]
    if unknown:
        raise ScenarioError(f"{where}: objects has unknown names {unknown}; known: {list(_OBJECT_NAMES)}")
    return {name: _xy(xy, f"{where}: objects[{name}]") for name, xy in value.items()}


def _instructions(value: Any, time_limit: float, where: str) -> tuple[Instruction, ...]:
    """A non-empty list of {at, text}, sorted by time, every time inside the episode."""
    if not isinstance(value, list) or not value:
        raise ScenarioError(f"{where}: instructions must be a non-empty list of {{at, text}}")
    out = []
    for i, item in enumerate(value):
        what = f"{where}: instructions[{i}]"
        if not isinstance(item, dict) or set(item) - {"at", "text"}:
            raise ScenarioError(f"{what} must be a mapping with keys at, text")
        text = item.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ScenarioError(f"{what}.text must be non-empty text")
        out.append(Instruction(_number(item.get("at", 0.0), f"{what}.at", 0.0, time_limit), text.strip()))
    return tuple(sorted(out, key=lambda ins: ins.at))


def _faults(value: Any, where: str) -> tuple[Fault, ...]:
    """The list of faults, each validated for its kind."""
    if not isinstance(value, list):
        raise ScenarioError(f"{where}: faults must be a list")
    return tuple(_fault(item, f"{where}: faults[{i}]") for i, item in enumerate(value))


_FAULT_FIELDS = {"stall": set(), "drop": {"probability"}, "noise": {"sigma"}, "attack": {"norm", "epsilon", "command"}}


def _fault(item: Any, what: str) -> Fault:
    """One fault mapping -> Fault; only the fields of its kind are allowed."""
    if not isinstance(item, dict) or item.get("kind") not in FAULT_KINDS:
        raise ScenarioError(f"{what} must be a mapping whose kind is one of {FAULT_KINDS}")
    kind = item["kind"]
    allowed = {"kind", "start", "duration"} | _FAULT_FIELDS[kind]
    if set(item) - allowed:
        raise ScenarioError(f"{what}: a {kind} fault takes only {sorted(allowed)}, got {sorted(map(str, item))}")
    fields: dict[str, Any] = {"kind": kind, "start": _number(item.get("start"), f"{what}.start", 0.0, 3600.0),
                              "duration": _number(item.get("duration"), f"{what}.duration", 0.0, 3600.0,
                                                  open_low=True)}
    if kind == "drop":
        fields["probability"] = _number(item.get("probability", 1.0), f"{what}.probability", 0.0, 1.0)
    elif kind == "noise":
        fields["sigma"] = _number(item.get("sigma"), f"{what}.sigma", 0.0, 10.0, open_low=True)
    elif kind == "attack":
        if item.get("norm", "l2") not in NORMS:
            raise ScenarioError(f"{what}.norm must be one of {NORMS}, got {item.get('norm')!r}")
        command = item.get("command", "forward")
        if not isinstance(command, str) or not command:
            raise ScenarioError(f"{what}.command must be a command name")
        fields.update(norm=item.get("norm", "l2"), command=command,
                      epsilon=_number(item.get("epsilon"), f"{what}.epsilon", 0.0, 1000.0, open_low=True))
    return Fault(**fields)
