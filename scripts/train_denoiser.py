#!/usr/bin/env python3
"""Train a denoiser for denoised smoothing (rs_guard_ros.denoisers.ConvDenoiser).

The denoiser learns to remove N(0, sigma^2) noise from model-input frames: (B, 3, H, W)
in [0, 1] units at the VLA's input resolution, produced from camera frames by the gate's
own preprocessing (rs_guard_ros.preprocess.Preprocessor), so it is trained on exactly what
it will see inside the gate: a preprocessed frame plus Gaussian noise, not clipped.

Data: by default frames rendered from the MuJoCo demo world (random layouts, the robot
mostly facing an object at a random distance and bearing, plus a few blank frames);
with --frames, a folder of PNG/JPEG images, a video or a rosbag2 / ROS 1 bag of your own
robot's camera (read by rs_guard_ros.recordings.iter_frames, decoded like the node).
The preprocessed frames are cached under --cache-dir. Seeded; CPU; MSE loss on fresh
noise every step (no clipping), AdamW with cosine decay. Writes
denoiser.safetensors (weights + metadata: sigma, input size, architecture),
denoiser.onnx (checked against torch with onnxruntime) and denoiser.json (the record of
this run) into --out. The defaults reproduce the shipped denoiser
(rs_guard_ros/models/denoiser/, about 10 minutes on 2 CPU cores).

    MUJOCO_GL=osmesa .venv/bin/python scripts/train_denoiser.py                # the shipped denoiser
    .venv/bin/python scripts/train_denoiser.py --frames /data/my_robot_bag --sigma 0.25 \\
        --input-size 224 224 --out /models/my_denoiser                          # your robot
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "osmesa")
# Idle OpenMP threads sleep instead of spinning: on a CPU shared with other processes a
# spinning thread waits for a descheduled peer at every parallel region (several-fold slower).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from rs_guard_ros.denoisers import (  # noqa: E402
    ONNX_FILE, ConvDenoiser, export_onnx, load_denoiser, save_denoiser,
)
from rs_guard_ros.images import ImageError  # noqa: E402
from rs_guard_ros.preprocess import Preprocessor  # noqa: E402

DEFAULT_OUT = REPO / "rs_guard_ros" / "models" / "denoiser"
DATA_VERSION = 1


# ------------------------------------------------------------------ data
def render_demo_frames(n: int, seed: int, size: tuple[int, int], blank_fraction: float) -> np.ndarray:
    """`n` preprocessed demo-world frames (N, 3, H, W) float16: the robot faces a random object
    (75 %, a third of them within 1.2 m) or stands anywhere (25 %); `blank_fraction` are
    blank frames (uniform random pixels or a constant grey) like the VLA's UNKNOWN inputs."""
    from rs_guard_ros.sim.world import OBJECTS, ROBOT_RADIUS, World

    rng = np.random.default_rng(seed)
    preprocess = Preprocessor(size, "resize")
    frames = np.empty((n, 3, *size), np.float16)
    with World(seed=seed) as world:
        shape = (world.height, world.width, 3)
        for i in range(n):
            if rng.random() < blank_fraction:
                frame = (rng.integers(0, 256, shape, dtype=np.uint8) if rng.random() < 0.5
                         else np.full(shape, rng.integers(0, 256), np.uint8))
                frames[i] = preprocess(frame).transpose(2, 0, 1)
                continue
            world.reset(rng=rng)
            if rng.random() < 0.75:
                target = OBJECTS[rng.integers(len(OBJECTS))]
                d_min = ROBOT_RADIUS + target.radius + 0.02
                distance = rng.uniform(d_min, 1.2) if rng.random() < 1 / 3 else rng.uniform(d_min, 4.0)
                yaw = rng.uniform(-math.pi, math.pi)
                heading = yaw + math.radians(rng.uniform(-50.0, 50.0))
                tx, ty = world.objects[target.name]
                x, y = tx - distance * math.cos(heading), ty - distance * math.sin(heading)
                if world.is_free(x, y):  # else keep the random pose of reset()
                    world.reset(robot_pose=(x, y, yaw), object_positions=world.objects)
            frames[i] = preprocess(world.render()).transpose(2, 0, 1)
    return frames


def recorded_frames(source: Path, size: tuple[int, int], mode: str, every: int, max_frames: int,
                    image_topics: list[str]) -> np.ndarray:
    """Preprocessed frames (N, 3, H, W) float16 of an image folder, video or bag (every `every`-th)."""
    from rs_guard_ros.recordings import iter_frames

    preprocess = Preprocessor(size, mode)
    out, skipped = [], 0
    for frame in iter_frames(source, image_topics=image_topics):
        if frame.index % every:
            continue
        if frame.rgb is None:
            skipped += 1
            continue
        try:
            out.append(preprocess(frame.rgb).transpose(2, 0, 1).astype(np.float16))
        except ImageError as exc:  # e.g. a frame smaller than the model input: the gate refuses it too
            skipped += 1
            if skipped == 1:
                print(f"skipping frame {frame.name}: {exc}", flush=True)
        if max_frames and len(out) >= max_frames:
            break
    if not out:
        raise SystemExit(f"train_denoiser: no usable frames in {source} ({skipped} undecodable or refused)")
    print(f"read {len(out)} frames from {source} ({skipped} undecodable or refused, skipped)", flush=True)
    return np.stack(out)


def load_frames(args: argparse.Namespace) -> tuple[np.ndarray, str]:
    """The training frames (cached under --cache-dir) and a description of where they came from."""
    size = tuple(args.input_size)
    if args.frames is None:
        spec = {"kind": "demo_world", "n": args.scenes, "seed": args.seed, "size": size,
                "blank": args.blank_fraction, "version": DATA_VERSION}
        what = (f"{args.scenes} frames rendered from the MuJoCo demo world (seed {args.seed}; robot facing a random "
                f"object 75 %, anywhere 25 %; {100 * args.blank_fraction:g} % blank frames), preprocessed by "
                f"Preprocessor({size}, 'resize')")
    else:
        source = args.frames.resolve()
        stat = source.stat()
        spec = {"kind": "recording", "path": str(source), "mtime": stat.st_mtime, "size": size,
                "mode": args.preprocess_mode, "every": args.every, "max": args.max_frames,
                "topics": args.image_topic, "version": DATA_VERSION}
        what = f"frames of {source} (every {args.every}), preprocessed by Preprocessor({size}, {args.preprocess_mode!r})"
    key = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    path = args.cache_dir / f"denoiser_frames_{key}.npy"
    if path.exists():
        return np.load(path), what
    t0 = time.time()
    if args.frames is None:
        frames = render_demo_frames(args.scenes, args.seed, size, args.blank_fraction)
    else:
        frames = recorded_frames(args.frames, size, args.preprocess_mode, args.every, args.max_frames,
                                 args.image_topic)
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, frames)
    print(f"prepared {len(frames)} frames in {time.time() - t0:.0f} s -> {path}", flush=True)
    return frames, what


# ------------------------------------------------------------------ training
def psnr(net: torch.nn.Module, frames: np.ndarray, sigma: float, seed: int, batch: int = 256) -> tuple[float, float]:
    """(PSNR of the noisy input, PSNR of the denoised output) in dB over `frames`, peak 1, one noise draw."""
    gen = torch.Generator().manual_seed(seed)
    se_in = se_out = 0.0
    count = 0
    with torch.inference_mode():
        for s in range(0, len(frames), batch):
            x = torch.from_numpy(frames[s:s + batch].astype(np.float32))
            noisy = x + sigma * torch.randn(x.shape, generator=gen)
            se_in += float(((noisy - x) ** 2).sum())
            se_out += float(((net(noisy) - x) ** 2).sum())
            count += x.numel()
    return -10 * math.log10(se_in / count), -10 * math.log10(se_out / count)


def train(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_start, cpu_start = time.time(), time.process_time()
    frames, data_what = load_frames(args)
    t_data = time.time() - t_start
    n_val = max(1, min(args.val_frames, len(frames) // 10))
    train_frames, val_frames = frames[:-n_val], frames[-n_val:]
    print(f"data: {len(train_frames)} training frames, {n_val} validation frames, shape {frames.shape[1:]}", flush=True)

    net = ConvDenoiser(channels=frames.shape[1], width=args.width, depth=args.depth, unshuffle=args.unshuffle,
                           residual=args.residual)
    params = sum(p.numel() for p in net.parameters())
    macs = net.macs_per_sample(*args.input_size)
    print(f"model: ConvDenoiser {net.arch()}, {params / 1e3:.1f} k parameters, {macs / 1e6:.1f} M MACs/sample",
          flush=True)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    warmup = max(1, min(100, args.steps // 20))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s / args.steps, 1.0))))
    gen = torch.Generator().manual_seed(args.seed)
    data = torch.from_numpy(train_frames)  # float16; each batch is converted on the fly
    t_train, cpu_train = time.time(), time.process_time()
    net.train()
    running = 0.0
    for step in range(1, args.steps + 1):
        idx = torch.randint(len(data), (args.batch_size,), generator=gen)
        x = data[idx].float()
        if args.flip:
            flip = torch.rand(len(x), generator=gen) < 0.5
            x[flip] = x[flip].flip(-1)
        noisy = x + args.sigma * torch.randn(x.shape, generator=gen)  # the gate's noise: added, never clipped
        loss = torch.nn.functional.mse_loss(net(noisy), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running += loss.item()
        if step % args.log_every == 0 or step == args.steps:
            print(f"step {step}/{args.steps} mse {running / args.log_every:.5f} ({time.time() - t_train:.0f} s)",
                  flush=True)
            running = 0.0
    train_s, train_cpu_s = time.time() - t_train, time.process_time() - cpu_train
    net.eval()
    psnr_in, psnr_out = psnr(net, val_frames, args.sigma, args.seed + 1)
    print(f"validation PSNR: noisy {psnr_in:.2f} dB -> denoised {psnr_out:.2f} dB", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    size = tuple(args.input_size)
    save_denoiser(net, args.out, trained_sigma=args.sigma, input_size=size,
                  extra={"steps": args.steps, "seed": args.seed, "loss": "mse"})
    torch_denoiser = load_denoiser(args.out, "torch", device="cpu", dtype="float32", trained_sigma=args.sigma)
    export_onnx(torch_denoiser, args.out / ONNX_FILE, opset=args.opset)
    onnx_denoiser = load_denoiser(args.out, "onnx", device="cpu", trained_sigma=args.sigma)
    check = torch.from_numpy(val_frames[:64].astype(np.float32))
    check = check + args.sigma * torch.randn(check.shape, generator=torch.Generator().manual_seed(args.seed + 2))
    max_diff = float((torch_denoiser(check) - onnx_denoiser(check)).abs().max())
    print(f"onnx vs torch on {len(check)} noisy validation frames: max abs difference {max_diff:.2e}", flush=True)
    weights_bytes = (args.out / "denoiser.safetensors").stat().st_size
    card = {
        "architecture": {"class": "rs_guard_ros.denoisers.ConvDenoiser", **net.arch(), "parameters": params,
                         "macs_per_sample": macs},
        "trained_sigma": args.sigma,
        "input_size": list(size),
        "data": data_what,
        "training_frames": len(train_frames),
        "validation_frames": n_val,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "samples_seen": args.steps * args.batch_size,
        "loss": "mse",
        "optimizer": f"AdamW lr {args.lr:g}, weight decay {args.weight_decay:g}, {warmup} warm-up steps, cosine decay",
        "augmentation": "horizontal flip" if args.flip else "none",
        "seed": args.seed,
        "threads": args.threads,
        "data_seconds": round(t_data, 1),
        "train_seconds": round(train_s, 1),
        "train_cpu_seconds": round(train_cpu_s, 1),
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        "total_seconds": round(time.time() - t_start, 1),
        "total_cpu_seconds": round(time.process_time() - cpu_start, 1),
        "validation_psnr_db": {"noisy": round(psnr_in, 2), "denoised": round(psnr_out, 2)},
        "onnx": {"file": ONNX_FILE, "opset": args.opset, "max_abs_diff_vs_torch": max_diff},
        "weights_bytes": weights_bytes,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
        "command": " ".join(["MUJOCO_GL=osmesa", ".venv/bin/python", "scripts/train_denoiser.py",
                             *map(shlex.quote, sys.argv[1:])]),
    }
    (args.out / "denoiser.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"training {train_s:.0f} s, total {time.time() - t_start:.0f} s; weights {weights_bytes / 1e3:.0f} kB; "
          f"saved to {args.out}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the weights, ONNX graph and record")
    p.add_argument("--frames", type=Path, default=None,
                   help="a folder of images, a video or a rosbag2/ROS 1 bag of your camera (default: demo world)")
    p.add_argument("--image-topic", action="append", default=[], help="bag image topic (repeatable)")
    p.add_argument("--every", type=int, default=1, help="use every N-th recorded frame")
    p.add_argument("--max-frames", type=int, default=0, help="at most this many recorded frames (0 = all)")
    p.add_argument("--preprocess-mode", choices=("resize", "center_crop"), default="resize",
                   help="the gate's preprocess.mode for recorded frames")
    p.add_argument("--input-size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"),
                   help="the VLA's input resolution (the demo VLA: 64 64)")
    p.add_argument("--scenes", type=int, default=20000, help="demo-world frames to render")
    p.add_argument("--blank-fraction", type=float, default=0.03)
    p.add_argument("--val-frames", type=int, default=1000)
    p.add_argument("--sigma", type=float, default=0.25, help="the noise level; must equal smoothing.sigma")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--depth", type=int, default=5)
    p.add_argument("--unshuffle", type=int, default=4)
    p.add_argument("--residual", action=argparse.BooleanOptionalAction, default=False,
                   help="predict the noise and subtract it (DnCNN; needs --width >= 3*unshuffle^2) instead of "
                        "predicting the clean image")
    p.add_argument("--steps", type=int, default=12000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--no-flip", dest="flip", action="store_false", help="no horizontal-flip augmentation")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--cache-dir", type=Path, default=Path("/tmp/rs_guard_denoiser"))
    args = p.parse_args(argv)
    if args.sigma <= 0:
        p.error("--sigma must be > 0")
    if any(v % args.unshuffle for v in args.input_size):
        p.error(f"--input-size must be a multiple of --unshuffle {args.unshuffle}")
    return args


if __name__ == "__main__":
    train(parse_args())
