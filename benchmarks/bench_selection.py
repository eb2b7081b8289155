"""Selection by the previous decision (smoothing.selection "previous") against Cohen's n0
selection samples ("samples"), side by side in one run, and the alpha split it uses.

1. Exact: expected estimation samples of one decision under the demo gate (sigma 0.25,
   alpha 1e-3, n_max 500, forward 0.25, turns 0.05) when the previous command is right
   (p = 1, 0.99, 0.95) and when it is wrong (the new command has p = 1), for each share of
   alpha given to the first test (certify.sequential_outlook; no sampling).
2. Measured: the demo's nominal scenarios (config/scenarios/demo.yaml: straight, left, right)
   played offline -- MuJoCo world + the shipped demo VLA through the Guard -- with the robot
   driven by the ground truth, `--step` sim seconds per decision, so that "samples" and
   "previous" at each share decide on the very same frames (each mode offering its own last
   certified command to its next decision). Samples are counted, not timed: the figures do
   not depend on the machine. Prints median samples per decision (all, forward, turns),
   abstain rate and wrong certified commands, and the ratio to "samples" in the same run.

    MUJOCO_GL=osmesa .venv/bin/python benchmarks/bench_selection.py [--shares 0.5 0.8 0.9 0.95 0.99] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from rs_guard_ros import certify  # noqa: E402
from rs_guard_ros.guard import Guard  # noqa: E402
from rs_guard_ros.param_files import load_config  # noqa: E402
from rs_guard_ros.policies import quiet_model_loading  # noqa: E402
from rs_guard_ros.sim.scenarios import load_scenarios  # noqa: E402
from rs_guard_ros.sim.world import World  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOMINAL = ("straight_to_red_box", "left_to_blue_ball", "right_to_green_cylinder")
TURNS = ("left", "right")


def exact_table(cfg, shares: list[float]) -> list[dict]:
    """Expected estimation samples per decision, exactly, for each share of alpha."""
    s, thresholds = cfg.smoothing, cfg.thresholds()
    rows = []
    for share in shares:
        def expected(label: str, p: float, alpha: float) -> float:
            return certify.sequential_outlook(p, thresholds[label], s.sigma, alpha, s.n_max).expected_samples

        row = {"share": share}
        for label in ("forward", "left"):
            other = "left" if label == "forward" else "forward"
            for p in (1.0, 0.99, 0.95):
                row[f"{label} right p={p}"] = expected(label, p, share * s.alpha)
            # wrong: the previous command has p ~ 0 (its test stops at its first look), the new one p = 1
            row[f"{other}->{label} wrong"] = (expected(other, 0.0, share * s.alpha)
                                              + expected(label, 1.0, (1.0 - share) * s.alpha))
        rows.append(row)
    return rows


def play(guards: dict[str, tuple[Guard, float]], world: World, scenario, step_s: float,
         dt: float = 0.02) -> dict[str, list]:
    """One episode of the scenario, driven by the ground truth (World.correct_command) so that
    every selection mode decides on the very same frames -- those a robot doing the right thing
    sees -- each mode (a Guard and its PREVIOUS_SHARE) offering its own last certified command
    to its next decision."""
    world.reset(robot_pose=scenario.robot, object_positions=scenario.objects,
                rng=np.random.default_rng(scenario.seed))
    instruction, target = scenario.instructions[0].text, scenario.target
    table = next(iter(guards.values()))[0].cfg.commands.table
    steps: dict[str, list] = {mode: [] for mode in guards}
    previous: dict[str, str | None] = dict.fromkeys(guards)
    t = 0.0
    while t < scenario.time_limit and not world.reached(target):
        truth, frame = world.correct_command(target), world.render()
        for mode, (guard, share) in guards.items():
            certify.PREVIOUS_SHARE = share
            d = guard.decide(frame, instruction, previous=previous[mode])
            steps[mode].append({"scenario": scenario.name, "command": d.command, "certified": d.certified,
                                "truth": truth, "n_used": d.n_used, "selection": d.selection})
            previous[mode] = d.command if d.certified else None
        twist = table[truth]
        for _ in range(round(step_s / dt)):
            world.step(twist.linear_x, twist.angular_z, dt)
        t += step_s
    return steps


def summary(steps: list[dict]) -> dict:
    certified = [s for s in steps if s["certified"]]

    def median(rows: list[dict]) -> float:
        return statistics.median(r["n_used"] for r in rows) if rows else float("nan")

    return {"decisions": len(steps), "median_samples": median(steps),
            "median_forward": median([s for s in certified if s["command"] == "forward"]),
            "median_turn": median([s for s in certified if s["command"] in TURNS]),
            "abstain_rate": 1.0 - len(certified) / max(len(steps), 1),
            "wrong": sum(s["command"] != s["truth"] for s in certified)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shares", type=float, nargs="+", default=[0.5, 0.8, 0.9, 0.95, 0.99])
    parser.add_argument("--step", type=float, default=0.15,
                        help="sim seconds a decision takes (the robot goes on meanwhile): the demo's p50 latency")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    quiet_model_loading()
    config_file = ROOT / "config" / "sim_diffdrive.yaml"
    scenarios = [s for s in load_scenarios(ROOT / "config" / "scenarios" / "demo.yaml") if s.name in NOMINAL]
    default_share = certify.PREVIOUS_SHARE
    guards: dict[str, tuple[Guard, float]] = {}
    policy = oracle = None
    for selection, share in [("samples", default_share)] + [("previous", share) for share in args.shares]:
        cfg = load_config(config_file, overrides={"model.device": "cpu", "smoothing.selection": selection})
        if policy is None:  # one model for every mode: a Guard is its configuration around it
            first = Guard.from_config(cfg)
            policy, oracle = first.policy, first.oracle
        guards[selection if selection == "samples" else f"previous {share:g}"] = (Guard(policy, oracle, cfg), share)
    exact = exact_table(next(iter(guards.values()))[0].cfg, args.shares)
    steps: dict[str, list] = {mode: [] for mode in guards}
    with World() as world:
        for scenario in scenarios:
            for mode, rows in play(guards, world, scenario, args.step).items():
                steps[mode] += rows
    certify.PREVIOUS_SHARE = default_share
    measured = [{"selection": mode.split()[0], "share": None if mode == "samples" else guards[mode][1],
                 **summary(rows)} for mode, rows in steps.items()]
    base = measured[0]
    for row in measured:
        row["ratio_median_samples"] = row["median_samples"] / base["median_samples"]
    if args.json:
        print(json.dumps({"exact": exact, "measured": measured}, indent=2))
        return
    print("exact expected estimation samples per decision (demo gate: sigma 0.25, alpha 1e-3, n_max 500)")
    keys = [k for k in exact[0] if k != "share"]
    print("share  " + "  ".join(f"{k:>22}" for k in keys))
    for row in exact:
        print(f"{row['share']:<5}  " + "  ".join(f"{row[k]:22.1f}" for k in keys))
    print(f"\nmeasured on {', '.join(NOMINAL)}: the same frames for every mode (the robot driven by the ground "
          f"truth, {args.step} sim s per decision)")
    print(f"{'selection':<10} {'share':>5} {'decisions':>9} {'median n':>8} {'forward':>7} {'turn':>5} "
          f"{'abstain':>7} {'wrong':>5} {'ratio':>6}")
    for r in measured:
        share = "-" if r["share"] is None else f"{r['share']:g}"
        print(f"{r['selection']:<10} {share:>5} {r['decisions']:>9} {r['median_samples']:>8.0f} "
              f"{r['median_forward']:>7.0f} {r['median_turn']:>5.0f} {r['abstain_rate']:>7.1%} {r['wrong']:>5} "
              f"{r['ratio_median_samples']:>6.2f}")


if __name__ == "__main__":
    main()
