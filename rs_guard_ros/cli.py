"""The `rs-guard` command: plan, certify, calibrate-oracle, bench, doctor, eval, attack, examples, demo.

Every subcommand has --help and --json (one JSON object on stdout; progress bars go to
stderr). Model and smoothing flags are generated from config.py (`--smoothing.sigma 0.5`,
`--model.path DIR`), so they carry the same names, defaults, ranges and descriptions as the
ROS parameters. Errors are one line on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable

from . import (__version__, attack, camera_inputs, config, doctor, evaluate, param_files, planning, progress,
               scale)

CLI_GROUPS = ("model", "preprocess", "oracle", "smoothing", "instruction")
EXAMPLES = Path("examples")

# Exit status of every subcommand (the parser's epilog says the same).
EXIT_OK = 0
EXIT_ABSTAIN = 1  # certify: the gate abstained (published the abstain command)
EXIT_ERROR = 2  # usage, configuration or input error (argparse uses 2 for usage errors too)
EXIT_TOO_SLOW = doctor.EXIT_TOO_SLOW  # 3, doctor: some command's threshold cannot be certified within a time bound
EXIT_INTERRUPTED = 130
# the node's time bounds doctor judges (doctor.time_bounds), settable as flags like the smoothing parameters
DOCTOR_BOUNDS = ("node.decision_deadline", "node.max_frame_age", "node.command_ttl", "node.publish_rate")
EXIT_STATUS = (f"exit status: {EXIT_OK} success; {EXIT_ERROR} error (usage, configuration or input: one line on "
               f"stderr); certify: {EXIT_ABSTAIN} when the gate abstained; doctor: {EXIT_TOO_SLOW} when some "
               "threshold cannot be certified within node.decision_deadline and the other time bounds")

def cmd_plan(args: argparse.Namespace) -> dict[str, Any]:
    return planning.plan(args.sigma, args.radius, args.alpha, args.oracle_error, n0=args.n0, n_max=args.n_max,
                         mode=args.mode)


def param_type(name: str) -> Callable[[str], Any]:
    """An argparse type for a flag that stands for parameter `name`: its text read as the
    parameter's type, then held to config.py's range for it (the node's, so both refuse alike)."""
    spec = next(s for s in config.param_specs(()) if s.name == name)
    convert = _flag_type(spec)

    def parse(text: str) -> Any:
        value = convert(text)  # a ValueError here is argparse's "invalid float value"
        try:
            return config.coerce(spec, value)
        except config.ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = spec.type.__name__
    return parse


def add_config_flags(parser: argparse.ArgumentParser, extra: tuple[str, ...] = (),
                     command_names: tuple[str, ...] = tuple(config.DEMO_COMMANDS)) -> None:
    """--config FILE plus one flag per model/smoothing/oracle parameter, per parameter of
    each command (`--commands.forward.radius_threshold 0.5`) and per `extra` parameter
    (e.g. node.decision_deadline), from config.py."""
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="ROS 2 parameter file(s) (config/<robot>.yaml); later files override earlier")
    group = parser.add_argument_group("parameters (as in config/default.yaml)")
    for spec in config.param_specs(command_names):
        per_command = spec.name.startswith("commands.") and spec.name.count(".") == 2
        if spec.name.split(".")[0] in CLI_GROUPS or per_command or spec.name in extra:
            kind = _flag_type(spec)
            group.add_argument(f"--{spec.name}", dest=spec.name, type=kind, default=None, choices=spec.choices,
                               metavar=None if spec.choices else _flag_metavar(spec),
                               help=f"{spec.description} (default: {spec.default})".replace("%", "%%"))


def _flag_type(spec: config.ParamSpec) -> Callable[[str], Any]:
    """How a flag's text becomes the parameter's value: true/false, a number, or a comma-separated list."""
    if spec.type is bool:
        return lambda text: {"true": True, "false": False}[text.lower()]
    if spec.type is tuple:
        return lambda text: tuple(spec.item_type(v.strip()) for v in text.split(",") if v.strip())
    return spec.type


def _flag_metavar(spec: config.ParamSpec) -> str:
    return f"{spec.item_type.__name__.upper()},..." if spec.type is tuple else spec.type.__name__.upper()


def config_from_args(args: argparse.Namespace) -> config.Config:
    """Parameter files, then the flags given on the command line (validated by config.py)."""
    flags = {k: v for k, v in vars(args).items() if "." in k and v is not None}
    return param_files.load_config(*check_files(args.config, "--config"), overrides=flags)


def check_files(paths: list[str], flag: str) -> list[str]:
    """`paths`, each an existing file; else ValueError naming the flag and the path."""
    for path in paths:
        if not Path(path).is_file():
            raise ValueError(f"{flag} {path}: {'is a directory' if Path(path).is_dir() else 'no such file'}")
    return paths


def load_guard(args: argparse.Namespace, cfg: config.Config | None = None):
    """The Guard the flags (or `cfg`, read from them already) configure, loaded quietly."""
    from .guard import Guard
    from .policies import quiet_model_loading

    cfg = config_from_args(args) if cfg is None else cfg
    quiet_model_loading()
    return Guard.from_config(cfg)


def read_rgb(path: str | Path, flag: str = "--image"):
    """An image file as an RGB uint8 array (ValueError naming the flag and path if unreadable).

    The file is checked before OpenCV reads it, and OpenCV's own warnings are silenced, so a
    bad path is this one-line error and nothing else on stderr."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{flag} {path}: {'is a directory' if path.is_dir() else 'no such file'}")
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # an OpenCV build without its logging module
        pass
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{flag} {path}: not a readable image file (PNG, JPEG, ...)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def cmd_certify(args: argparse.Namespace) -> dict[str, Any]:
    """One decision on one image per camera (and the joint state where the model reads one); an
    image the gate cannot take (missing, unreadable, the wrong size) is an error naming the camera."""
    cfg = config_from_args(args)
    frames = read_frames(args.image, cfg.cameras.names)
    state = camera_inputs.configured_state(args.state, cfg, required=True)
    guard = load_guard(args, cfg)
    guard.prepare(frames)  # a DecisionError (a ValueError) names the camera whose frame cannot be used
    return guard.decide(frames, args.instruction, state=state).to_dict()


def read_frames(values: list[str], cameras: tuple[str, ...], flag: str = "--image") -> dict[str, Any]:
    """{camera: RGB array} from `flag` values: [CAMERA=]PATH, one per camera (camera_inputs.per_camera)."""
    paths = camera_inputs.per_camera(values, cameras, flag, "PATH")
    return {camera: read_rgb(path, f"{flag} (camera '{camera}')" if len(cameras) > 1 else flag)
            for camera, path in paths.items()}


def certify_status(decision: dict[str, Any]) -> int:
    """certify's exit status: 0 certified, 1 abstained."""
    return EXIT_OK if decision["certified"] else EXIT_ABSTAIN


def format_decision(d: dict[str, Any]) -> str:
    verdict = "CERTIFIED" if d["certified"] else f"ABSTAIN ({d['reason']})"
    return (f"{d['command']}: {verdict}\n  top label {d['label']}, radius {d['radius']:.3f} (model input) / "
            f"{d['radius_camera']:.3f} (camera frame), threshold {d['threshold']}, p_lower {d['p_lower']:.4f}, "
            f"n_used {d['n_used']}\n  counts {d['counts']}\n  timing (ms) "
            + ", ".join(f"{k} {v:.1f}" for k, v in d["timing_ms"].items()))


def cmd_calibrate(args: argparse.Namespace) -> dict[str, Any]:
    from .guard import oracle_options, oracle_vocabulary
    from .oracles.calibrate import run_calibration
    from .policies import quiet_model_loading

    cfg = param_files.load_config(*check_files(args.config, "--config"))
    quiet_model_loading()
    result = run_calibration(args.oracle, args.labels, oracle_vocabulary(cfg, args.oracle), args.alpha,
                             **oracle_options(cfg.oracle, args.oracle))
    return {**result.to_dict(), "table": result.format_table()}


def load_examples(folder: Path) -> list[dict[str, str]]:
    """examples/frames.csv rows (image, instruction, command), image paths made absolute."""
    index = folder / "frames.csv"
    if not index.is_file():
        raise ValueError(f"--examples {folder}: no frames.csv there")
    with index.open(newline="") as f:
        return [{**row, "image": str(folder / row["image"])} for row in csv.DictReader(f)]


def measurement_inputs(args: argparse.Namespace, cfg: Any) -> tuple[Any, Any, str, str]:
    """(frames, joint state, instruction, what the frames are) that bench and doctor measure on:
    --image (one per camera) and --state; else, with one camera, the first example frame; else
    None, None: doctor.probe_frames / probe_state (grey frames, zero joint state)."""
    state = camera_inputs.configured_state(args.state, cfg, required=False)
    example = None
    if not args.image and len(cfg.cameras.names) == 1 and (args.examples / "frames.csv").is_file():
        example = load_examples(args.examples)[0]
    instruction = args.instruction or (example or {}).get("instruction") or doctor.DEFAULT_INSTRUCTION
    if args.image:
        frames = read_frames(args.image, cfg.cameras.names)
        return frames, state, instruction, ", ".join(args.image)
    if example is not None:
        return read_rgb(example["image"]), state, instruction, example["image"]
    return None, state, instruction, f"grey probe frame(s) for {', '.join(cfg.cameras.names)}"


def cmd_bench(args: argparse.Namespace) -> dict[str, Any]:
    from . import benchmark

    cfg = config_from_args(args)
    frames, state, instruction, source = measurement_inputs(args, cfg)
    guard = load_guard(args, cfg)
    frames = doctor.probe_frames(guard) if frames is None else frames
    state = doctor.probe_state(cfg) if state is None else state
    return {**benchmark.run(guard, frames, instruction, state=state, decisions=args.decisions,
                            progress=not args.no_progress), "frame": source, "instruction": instruction}


def _measurement_arguments(p: argparse.ArgumentParser) -> None:
    """bench's and doctor's inputs (measurement_inputs)."""
    p.add_argument("--image", action="append", metavar="[CAMERA=]PATH",
                   help="frame to measure on, as certify's --image (one per camera); default: the first example "
                        "frame with one camera, else a grey frame of each camera's size")
    p.add_argument("--state", metavar="NAME=VALUE,...|FILE.json",
                   help="joint state, as certify's --state (default: every joint at 0 where the model reads one)")
    p.add_argument("--instruction", default=None, help="instruction (default: the example frame's)")
    p.add_argument("--examples", type=Path, default=EXAMPLES, help="folder with frames.csv")


def format_bench(result: dict[str, Any]) -> str:
    from .benchmark import format_report

    return format_report(result)


def cmd_doctor(args: argparse.Namespace) -> dict[str, Any]:
    """Can this gate keep up here? Measure the configured model, then judge every threshold
    against node.decision_deadline and the other time bounds (rs_guard_ros.doctor)."""
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    if not (math.isfinite(args.camera_latency) and args.camera_latency >= 0.0):
        raise ValueError(f"--camera-latency must be a finite number of seconds >= 0, got {args.camera_latency}")
    cfg = config_from_args(args)
    frames, state, instruction, source = measurement_inputs(args, cfg)
    guard = load_guard(args, cfg)
    bar = progress.progress_bar(doctor.measured_samples(guard.cfg, args.repeats), "rs-guard doctor", "sample",
                                enabled=not args.no_progress, unit_scale=True)
    try:
        result = doctor.run(guard, frames, instruction, state=state, repeats=args.repeats,
                            camera_latency_s=args.camera_latency, progress=bar.update)
        bar.update(max(0, bar.total - bar.n))  # the estimate assumed the slowest command: end at 100 %
    finally:
        bar.close()
    return {**result, "frame": source, "instruction": instruction, "version": __version__}


def format_doctor(result: dict[str, Any]) -> str:
    return (f"rs-guard doctor {result['version']}: frame {result['frame']}, \"{result['instruction']}\"\n"
            + doctor.format_report(result))


def cmd_eval(args: argparse.Namespace) -> dict[str, Any]:
    """In this process (one Guard here), or with --ray on Ray workers that each load their own."""
    if args.ray is None:
        return evaluate.run_eval(args, load_guard(args))
    with scale.connected(args.ray):
        return evaluate.run_eval(args, scale.RayWorkers(config_from_args(args), args.ray_workers, args.ray_retries))


def cmd_examples(args: argparse.Namespace) -> dict[str, Any]:
    """Certify every example frame with the demo VLA; report what the gate published."""
    examples = load_examples(args.examples)
    guard = load_guard(args)
    rows = []
    with progress.progress_bar(len(examples), "rs-guard examples", "frame", enabled=not args.no_progress) as bar:
        for row in examples:
            d = guard.decide(read_rgb(row["image"], "--examples"), row["instruction"])
            rows.append({"image": Path(row["image"]).name, "instruction": row["instruction"],
                         "correct": row["command"], "published": d.command, "certified": d.certified,
                         "radius": d.radius, "n_used": d.n_used, "reason": d.reason, "ms": d.timing_ms["total"]})
            bar.update(1)
    wrong = [r for r in rows if r["certified"] and r["published"] != r["correct"]]
    return {"frames": rows, "certified": sum(r["certified"] for r in rows), "wrong_certified": len(wrong),
            "abstained": sum(not r["certified"] for r in rows), "device": str(guard.policy.device)}


def format_examples(result: dict[str, Any]) -> str:
    lines = [f"{'frame':<18} {'instruction':<28} {'correct':<8} {'published':<10} {'cert':<5} {'radius':>6} "
             f"{'n':>5} {'ms':>6}  reason"]
    for r in result["frames"]:
        lines.append(f"{r['image']:<18} {r['instruction'][:28]:<28} {r['correct']:<8} {r['published']:<10} "
                     f"{'yes' if r['certified'] else 'no':<5} {r['radius']:>6.3f} {r['n_used']:>5} {r['ms']:>6.0f}"
                     f"  {r['reason']}")
    lines.append(f"{result['certified']} certified, {result['abstained']} abstained, "
                 f"{result['wrong_certified']} wrong commands certified (device {result['device']})")
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace) -> dict[str, Any]:
    """The closed loop: sim, guard and scenario runner as ROS 2 processes (rs_guard_ros.sim.demo);
    with --ray one Ray task per episode, each with its own processes and domain."""
    from .policies import quiet_model_loading
    from .sim.demo import run_demo

    quiet_model_loading()  # the camera-link attacker loads the VLA in this process
    guard_args = tuple(a for p in args.guard_param for a in ("-p", p))
    run = functools.partial(run_demo, args.scenarios, args.out, args.domain_id, guard_args, tuple(args.scenario),
                            args.episodes, real_time=args.real_time)
    if args.ray is None:
        return run()
    with scale.connected(args.ray):
        return run(workers=scale.RayTasks(args.ray_workers, args.ray_retries))


def format_demo(result: dict[str, Any]) -> str:
    ok = sum(e["success"] for e in result["episodes"])
    domains = (f"ROS_DOMAIN_IDs {', '.join(str(r['domain_id']) for r in result['runs'])}" if "runs" in result
               else f"ROS_DOMAIN_ID {result['domain_id']}")
    factor = f"real-time factor {result['calibration']}\n" if "calibration" in result else ""
    return (f"{result['table']}\n{factor}{ok}/{len(result['episodes'])} episodes succeeded; report: "
            f"{result['report']} (wall time {result['wall_s']:.0f} s, {domains})")


def cmd_attack(args: argparse.Namespace) -> dict[str, Any]:
    """In this process, or with --ray on Ray workers that each load their own Guard."""
    from .policies import quiet_model_loading

    check_files(getattr(args, "config", None) or [], "--config")
    if args.ray is None:
        quiet_model_loading()
        return attack.run_attack(args)
    with scale.connected(args.ray):
        return attack.run_attack(args, scale.RayWorkers(attack.attack_config(args), args.ray_workers,
                                                        args.ray_retries))


def emit(result: dict[str, Any], as_json: bool, formatter: Callable[[dict[str, Any]], str]) -> None:
    """Print one JSON object (--json) or the human-readable rendering."""
    print(json.dumps(result, default=str) if as_json else formatter(result))


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: the message and where to look, not the whole usage
    (a subcommand's usage lists every generated parameter flag)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def command_names(argv: list[str]) -> tuple[str, ...]:
    """commands.names as the --config files on a command line set it (the demo set without
    one), so that every command gets its --commands.<name>.* flags. A file that cannot be
    read leaves the names as they are: the real parse reports it."""
    files = [b for a, b in zip(argv, argv[1:]) if a == "--config"] + \
        [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    names = tuple(config.DEMO_COMMANDS)
    for path in files:
        try:
            names = tuple(param_files.read_param_file(path).get("commands.names", names))
        except (config.ConfigError, TypeError):
            pass
    return names


def build_parser(names: tuple[str, ...] = tuple(config.DEMO_COMMANDS)) -> argparse.ArgumentParser:
    """The rs-guard parser; `names` are the commands that get --commands.<name>.* flags."""
    parser = Parser(prog="rs-guard", description=__doc__, epilog=EXIT_STATUS)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="samples needed to certify a radius (the planning law)")
    p.add_argument("--sigma", type=param_type("smoothing.sigma"), required=True,
                   help="noise standard deviation ([0,1] intensity units), as smoothing.sigma")
    p.add_argument("--radius", type=float, required=True, help="radius threshold R* to certify")
    p.add_argument("--alpha", type=param_type("smoothing.alpha"), default=0.001,
                   help="false-certification probability per decision, as smoothing.alpha")
    p.add_argument("--oracle-error", type=param_type("oracle.error"), default=0.0,
                   help="oracle error bound eps_O, as oracle.error")
    p.add_argument("--n0", type=param_type("smoothing.n0"), default=planning.DEFAULTS.n0,
                   help=f"selection samples of a decision with no standing command, as smoothing.n0 "
                        f"(default {planning.DEFAULTS.n0})")
    p.add_argument("--n-max", type=param_type("smoothing.n_max"), default=planning.DEFAULTS.n_max,
                   help=f"a test's sample budget, as smoothing.n_max (default {planning.DEFAULTS.n_max})")
    p.add_argument("--mode", type=param_type("smoothing.mode"), default=planning.DEFAULTS.mode,
                   choices=("sequential", "fixed"),
                   help=f"the gate's test, as smoothing.mode (default {planning.DEFAULTS.mode})")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_plan, formatter=planning.format_plan)

    p = sub.add_parser("certify", help="certify the command for one image and instruction",
                       epilog=f"exit status: {EXIT_OK} the command was certified (the gate publishes it), "
                              f"{EXIT_ABSTAIN} the gate abstained (it publishes the abstain command), {EXIT_ERROR} "
                              "error (usage, configuration, unreadable image: one line on stderr)")
    p.add_argument("--image", action="append", required=True, metavar="[CAMERA=]PATH",
                   help="image file (PNG/JPEG) of a camera, preprocessed as that camera's: with several cameras "
                        "(cameras.names) one --image CAMERA=PATH each; with one camera a plain PATH")
    p.add_argument("--state", metavar="NAME=VALUE,...|FILE.json",
                   help="the robot's joint state, where the model reads one (state.topic set): joint positions as "
                        "NAME=VALUE pairs separated by commas, or a JSON file {\"NAME\": VALUE, ...}; every joint of "
                        "state.joint_names, others ignored. Held fixed, not certified, as on the robot")
    p.add_argument("--instruction", required=True, help="the instruction given to the VLA")
    _finish(p, cmd_certify, format_decision, names=names)
    p.set_defaults(status=certify_status)

    p = sub.add_parser("calibrate-oracle", help="measure an oracle's error bound eps_O on labelled outputs")
    p.add_argument("--oracle", required=True, choices=("grammar", "semantic", "action"))
    p.add_argument("--labels", required=True, help="CSV with columns output,command (command may be UNKNOWN)")
    p.add_argument("--config", action="append", default=[], metavar="FILE", help="parameter file (command set)")
    p.add_argument("--alpha", type=float, default=0.001, help="level of the Clopper-Pearson upper bound")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_calibrate, formatter=lambda r: r["table"])

    p = sub.add_parser("bench", help="throughput, latency, samples per decision and memory on this device")
    _measurement_arguments(p)
    p.add_argument("--decisions", type=int, default=10, help="decisions per latency figure")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _finish(p, cmd_bench, format_bench, names=names)

    p = sub.add_parser("doctor", help="can this gate keep up here? measured speed vs every threshold and time bound",
                       description="Measures the configured model on the configured device at the configured batch "
                                   "size (raw policy, and the whole certified decision path), then prints per "
                                   "command the threshold, n_min, the sequential test's first look and expected "
                                   "samples (p = 1 and 0.99), the latency and decision rate they imply, whether "
                                   "the threshold can be certified before node.decision_deadline and with its "
                                   "frame younger than node.max_frame_age, its command standing (node.command_ttl) "
                                   "until the next decision and republished (node.publish_rate) meanwhile, the "
                                   "memory in use, and advice where it cannot; then per command p* and each "
                                   "selection path (the standing command confirmed, changed, or n0 selection "
                                   "samples), and how "
                                   "the check's decisions chose their command (selection, n_selection, "
                                   "n_estimation).",
                       epilog=f"exit status: {EXIT_OK} every command's threshold can be certified within every "
                              f"time bound by a consistent model, {EXIT_TOO_SLOW} some cannot (see the advice lines), "
                              f"{EXIT_ERROR} error (usage, configuration, model loading: one line on stderr)")
    _measurement_arguments(p)
    p.add_argument("--repeats", type=int, default=3, help="timed decisions per decision size (three sizes, then "
                   "the configured decision as a check)")
    p.add_argument("--camera-latency", type=float, default=doctor.CAMERA_LATENCY_S, metavar="S",
                   help="how old a frame is when its decision starts: the camera driver's latency plus up to one "
                        f"frame period of waiting (default {doctor.CAMERA_LATENCY_S:g} s); counted against "
                        "node.max_frame_age, node.command_ttl and node.publish_rate")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _finish(p, cmd_doctor, format_doctor, extra=DOCTOR_BOUNDS, names=names)
    p.set_defaults(status=lambda r: r["exit_code"])

    p = sub.add_parser("eval", help="decide every frame of an image folder, video or bag; write rows, plots, report")
    evaluate.add_eval_arguments(p)
    _finish(p, cmd_eval, evaluate.format_summary, names=names)

    p = sub.add_parser("attack", help="attack the demo VLA (ART PGD, patch, EOT) and report what the gate published")
    attack.add_attack_arguments(p)
    _finish(p, cmd_attack, attack.format_summary, names=names)
    p = sub.add_parser("examples", help="certify the shipped example frames with the demo VLA")
    p.add_argument("--examples", type=Path, default=EXAMPLES, help="folder with frames.csv")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _finish(p, cmd_examples, format_examples, names=names)
    p = sub.add_parser("demo", help="closed loop: the MuJoCo robot driven only by certified commands (ROS 2)")
    p.add_argument("--scenarios", type=Path, default=None,
                   help="scenario file, or a folder: every *.yaml in it (default: config/scenarios/demo.yaml)")
    p.add_argument("--scenario", action="append", default=[], metavar="NAME", help="run only this scenario")
    p.add_argument("--episodes", type=int, default=None, metavar="N",
                   help="episodes to run, going through the scenarios in turn (default: each scenario once)")
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="report folder")
    p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: a random one in 1..101)")
    p.add_argument("--guard-param", action="append", default=[], metavar="NAME:=VALUE",
                   help="extra ROS parameter for the guard node, e.g. smoothing.n_max:=500")
    p.add_argument("--real-time", action="store_true",
                   help="run the world at real-time factor 1 instead of slowing it until a decision takes the sim "
                        "time the scenarios were designed for: shows what this computer's latency does to the robot")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    scale.add_ray_arguments(p, "episodes", workers="one episode per CPU of the cluster")
    p.set_defaults(run=cmd_demo, formatter=format_demo)
    return parser


def _finish(p: argparse.ArgumentParser, run: Callable, formatter: Callable, extra: tuple[str, ...] = (),
            names: tuple[str, ...] = tuple(config.DEMO_COMMANDS)) -> None:
    add_config_flags(p, extra, names)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run, formatter=formatter)


def error_line(exc: BaseException) -> str:
    """An exception as one line: a YAML syntax error as "parameter file F line L, column C: problem",
    anything else with its whitespace (newlines included) collapsed."""
    text = str(exc)
    cause = exc.__cause__
    mark = getattr(cause, "problem_mark", None)
    if mark is not None and text.endswith(str(cause)):
        prefix = text[: len(text) - len(str(cause))].rstrip(": ")
        problem = " ".join(str(getattr(cause, "problem", None) or getattr(cause, "context", None) or "").split())
        text = f"{prefix} line {mark.line + 1}, column {mark.column + 1}: {problem or 'invalid YAML'}"
    if isinstance(exc, ImportError) and getattr(exc, "name", None):
        text = f"needs the Python package '{exc.name}' ({text}); see setup.py's extras_require"
    return " ".join(text.split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(command_names(argv)).parse_args(argv)
    try:
        result = args.run(args)
    except KeyboardInterrupt:
        print(f"rs-guard {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, OSError, RuntimeError, ImportError) as exc:
        print(f"rs-guard {args.command}: error: {error_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    try:
        emit(result, args.json, args.formatter)
        sys.stdout.flush()
    except BrokenPipeError:  # `rs-guard ... | head`: the reader left; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return getattr(args, "status", lambda _: EXIT_OK)(result)


if __name__ == "__main__":
    sys.exit(main())
