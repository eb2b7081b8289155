"""Certified accuracy of the shipped demo VLA on held-out demo-world scenes.

Renders scenes the training script never saw (other seeds), balanced over the four
commands, with the world's ground truth, then runs them through `rs-guard eval`'s code
path with a fixed-n certificate (Cohen's CERTIFY) and prints certified accuracy at
radii 0, 0.25 and 0.5 (sigma = 0.25).

    MUJOCO_GL=osmesa .venv/bin/python scripts/eval_demo_vla.py --scenes 200 --n 1000 --out /tmp/demo_eval

`--views 2` evaluates the two-view model (config/sim_two_view.yaml's gate, fixed-n) on front
+ rear frames; a scene's target is visible to the front camera, or only to the rear one.
"""
import argparse
import csv
from pathlib import Path

import cv2
import numpy as np

from rs_guard_ros import evaluate
from rs_guard_ros.config import from_flat
from rs_guard_ros.guard import Guard
from rs_guard_ros.labels import load_labels
from rs_guard_ros.param_files import load_config
from rs_guard_ros.recordings import iter_frames
from rs_guard_ros.sim.world import COMMANDS, OBJECTS, REAR_CAMERA, World

HELD_OUT_SEED = 20_251_125  # the training script draws from other seeds
TWO_VIEW_CONFIG = Path(__file__).resolve().parents[1] / "config" / "sim_two_view.yaml"


def seen(world: World, target: str, views: int) -> bool:
    """The target is visible to the front camera, or (two views) to the rear one alone."""
    rear_only = views > 1 and not world.in_view(target) and world.visible(target, REAR_CAMERA)
    return world.visible(target) or rear_only


def render_scenes(folder: Path, count: int, seed: int, views: int = 1) -> Path:
    """`count` scenes, count/4 per command, target seen (`seen`); returns the labels CSV
    (two views: the rear frame of scene_NNNN.png is scene_NNNN_rear.png)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    want = {c: count // len(COMMANDS) for c in COMMANDS}
    rows = []
    with World(seed=seed) as world:
        while any(want.values()):
            world.reset(rng=rng)
            target = OBJECTS[rng.integers(len(OBJECTS))].name
            command = world.correct_command(target)
            if not seen(world, target, views) or want[command] == 0:
                continue
            want[command] -= 1
            name = f"scene_{len(rows):04d}.png"
            cv2.imwrite(str(folder / name), cv2.cvtColor(world.render(), cv2.COLOR_RGB2BGR))
            if views > 1:
                cv2.imwrite(str(folder / _rear(name)), cv2.cvtColor(world.render(REAR_CAMERA), cv2.COLOR_RGB2BGR))
            rows.append({"image": name, "instruction": f"go to the {target}", "command": command})
    labels = folder / "labels.csv"
    with labels.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "instruction", "command"])
        writer.writeheader()
        writer.writerows(rows)
    return labels


def _rear(name: str) -> str:
    return name.replace(".png", "_rear.png")


def decide_two_view(folder: Path, labels_path: Path, n: int, alpha: float) -> list[dict]:
    """Rows (label, radius, certified, command, ground_truth) of config/sim_two_view.yaml's gate,
    fixed-n, on every scene's front + rear frames (the joint state is not read by the model)."""
    cfg = load_config(TWO_VIEW_CONFIG, overrides={"smoothing.mode": "fixed", "smoothing.n0": 32,
                                                  "smoothing.n_max": n, "smoothing.alpha": alpha})
    guard = Guard.from_config(cfg)
    rows = []
    with labels_path.open() as f:
        for row in csv.DictReader(f):
            frames = {camera: cv2.cvtColor(cv2.imread(str(folder / name)), cv2.COLOR_BGR2RGB)
                      for camera, name in (("front", row["image"]), ("rear", _rear(row["image"])))}
            d = guard.decide(frames, row["instruction"], state=[0.0, 0.0])
            rows.append({"label": d.label, "radius": d.radius, "certified": d.certified, "command": d.command,
                         "ground_truth": row["command"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--n", type=int, default=1000, help="estimation samples per scene (fixed mode)")
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--out", type=Path, default=Path("/tmp/demo_vla_eval"))
    parser.add_argument("--views", type=int, choices=(1, 2), default=1, help="2: the two-view model")
    args = parser.parse_args()
    labels_path = render_scenes(args.out / "frames", args.scenes, HELD_OUT_SEED, args.views)
    radii = (0.0, 0.25, 0.5)
    if args.views > 1:
        rows = decide_two_view(args.out / "frames", labels_path, args.n, args.alpha)
        print(f"{len(rows)} held-out two-view scenes, sigma 0.25, n0 32 + n {args.n}, alpha {args.alpha}")
        for r, acc in zip(radii, evaluate.certified_accuracy(rows, radii)):
            print(f"certified accuracy at radius {r}: {100 * acc:.1f}%")
        gated = [r for r in rows if r["certified"]]
        print(f"through the gate: {len(gated)} certified, {sum(r['command'] != r['ground_truth'] for r in gated)} "
              "of them wrong")
        return
    cfg = from_flat({"smoothing.mode": "fixed", "smoothing.n0": 32, "smoothing.n_max": args.n,
                     "smoothing.alpha": args.alpha, "smoothing.sigma": 0.25})
    guard = Guard.from_config(cfg)
    labels = load_labels(labels_path, cfg.commands.names)
    summary = evaluate.evaluate(guard, iter_frames(args.out / "frames"), args.out / "report", labels)
    rows = [r for r in map(__import__("json").loads, (args.out / "report" / "decisions.jsonl").open())]
    print(f"{len(rows)} held-out scenes, sigma 0.25, n0 32 + n {args.n}, alpha {args.alpha}")
    for r, acc in zip(radii, evaluate.certified_accuracy(rows, radii)):
        print(f"certified accuracy at radius {r}: {100 * acc:.1f}%")
    print(f"wrong certified: {summary.get('wrong_certified')}; report: {args.out / 'report' / 'report.md'}")


if __name__ == "__main__":
    main()
