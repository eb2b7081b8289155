"""Fleet-scale runs on Ray (rs_guard_ros.scale): `rs-guard eval/attack/demo --ray` give what the
in-process run gives, in order, and survive workers that die.

One local Ray instance serves the whole module: 2 CPUs, no dashboard, nothing reported
anywhere, the node on the loopback address and every temp file under the test's tmp.
"""
import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import yaml

from rs_guard_ros import cli, scale
from rs_guard_ros.config import from_flat
from test_evaluate import sided
from test_guard import BrightSidePolicy

TESTS = Path(__file__).resolve().parent
EXAMPLES = TESTS.parent / "examples"
TIMING = ("latency_ms", "timing_ms")  # wall-clock fields: the only ones allowed to differ between runs
OFFLINE_LOCAL = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
DEMO_VLA = ["--smoothing.seed", "0", "--smoothing.n_max", "300", "--no-progress"]
STAND_IN = ["--model.backend", "plugin", "--model.path", "test_scale:dying_policy", "--smoothing.seed", "0",
            "--smoothing.mode", "fixed", "--smoothing.n0", "8", "--smoothing.n_max", "64", "--no-progress"]


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    """One local Ray for this module (2 CPUs), offline and loopback-only, temp dirs under tmp."""
    temp = tmp_path_factory.mktemp("ray")  # short: Ray's socket paths must stay under 107 bytes
    with pytest.MonkeyPatch.context() as mp:
        for key, value in OFFLINE_LOCAL.items():
            mp.setenv(key, value)
        import ray

        # the workers import this module's fault injector as a model plugin (test_scale:dying_policy)
        python_path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=str(temp),
                 object_store_memory=100 * 2**20, runtime_env={"env_vars": {"PYTHONPATH": python_path}})
        try:
            yield temp
        finally:
            ray.shutdown()


# ----------------------------------------------------------------------------- a fault injector
class DyingPolicy(BrightSidePolicy):
    """FAULT INJECTOR, loaded as a model plugin: the stand-in policy of test_guard, except that
    the instruction "die once:<file>" kills the process running it (SIGKILL, as the OOM killer
    does) unless <file> exists, which it creates first; "die always" kills it every time."""

    def __call__(self, frames, instruction):
        if instruction == "die always" or (instruction.startswith("die once:") and _first_time(instruction[9:])):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(frames, instruction)


def _first_time(marker: str) -> bool:
    try:
        Path(marker).touch(exist_ok=False)
    except FileExistsError:
        return False
    return True


def dying_policy(device: str = "cpu") -> DyingPolicy:
    """The plugin factory (model.path test_scale:dying_policy)."""
    return DyingPolicy()


def frames_with_instructions(folder: Path, instructions: dict[int, str], count: int = 8) -> Path:
    """Frames f0.png.. (left, right, left, ... half brighter) and a labels CSV giving frame i its
    side as ground truth and the instruction instructions.get(i, "go")."""
    folder.mkdir()
    rows = []
    for i in range(count):
        side = ("left", "right")[i % 2]
        cv2.imwrite(str(folder / f"f{i}.png"), sided(side))
        rows.append(f"f{i}.png,{side},{instructions.get(i, 'go')}\n")
    labels = folder.parent / "labels.csv"
    labels.write_text("image,command,instruction\n" + "".join(rows))
    return labels


# ----------------------------------------------------------------------------- helpers
def decisions(out: Path) -> list[dict]:
    """decisions.jsonl without the wall-clock fields."""
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (out / "decisions.jsonl").read_text().splitlines()]


def csv_rows(out: Path) -> list[dict]:
    with (out / "decisions.csv").open(newline="") as f:
        return [{k: v for k, v in row.items() if k != "latency_ms"} for row in csv.DictReader(f)]


def report_without_latency(out: Path) -> str:
    """report.md with the two latency cells of every table row blanked (the last two)."""
    lines = (out / "report.md").read_text().splitlines()
    return "\n".join("|".join(line.split("|")[:-3] + ["", "", ""]) if line.count("|") >= 8 else line
                     for line in lines)


def summary_without_timing(out: Path) -> dict:
    """summary.json without latencies, the Ray run's own figures and the (differing) output paths."""
    summary = json.loads((out / "summary.json").read_text())
    summary.pop("ray", None)
    summary.pop("files")
    for entry in [summary, *summary.get("sources", [])]:
        entry.pop("latency_ms")
    return summary


def eval_cli(out: Path, *argv: str) -> dict:
    assert cli.main(["eval", "--out", str(out), *argv]) == 0
    return json.loads((out / "summary.json").read_text())


# ----------------------------------------------------------------------------- eval
def test_eval_on_ray_over_two_sources_decides_every_frame_as_the_in_process_run(ray_local, tmp_path):
    video = tmp_path / "drive.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (128, 96))
    for name in ("left_1", "forward_2", "right_3", "stop_1", "left_2"):
        writer.write(cv2.imread(str(EXAMPLES / f"{name}.png")))
    writer.release()
    sources = ["--images", str(EXAMPLES), "--video", str(video), "--labels", str(EXAMPLES / "frames.csv"),
               "--instruction", "go to the red box", *DEMO_VLA]

    here = eval_cli(tmp_path / "here", *sources)
    on_ray = eval_cli(tmp_path / "ray", *sources, "--ray", "--ray-workers", "2")

    rows = decisions(tmp_path / "ray")
    assert len(rows) == here["frames"] == 13 + 5
    assert rows == decisions(tmp_path / "here")  # every decision, in order, with its source
    assert [r["source"] for r in rows] == [str(EXAMPLES)] * 13 + [str(video)] * 5
    assert csv_rows(tmp_path / "ray") == csv_rows(tmp_path / "here")
    assert report_without_latency(tmp_path / "ray") == report_without_latency(tmp_path / "here")
    assert summary_without_timing(tmp_path / "ray") == summary_without_timing(tmp_path / "here")
    assert [s["frames"] for s in on_ray["sources"]] == [13, 5]
    assert on_ray["ray"] == {"workers": 2, "resources": {"num_cpus": 1, "num_gpus": 0}, "retried": 0, "failed": 0,
                             "replaced": 0}
    assert "## Per source" in (tmp_path / "ray" / "report.md").read_text()
    for png in ("radius_timeline.png", "samples_histogram.png", "abstain_reasons.png", "certified_accuracy.png"):
        assert (tmp_path / "ray" / png).read_bytes() == (tmp_path / "here" / png).read_bytes(), png


def test_a_killed_worker_has_its_frames_sent_again_and_nothing_is_lost_or_counted_twice(ray_local, tmp_path):
    marker = tmp_path / "killed_once"
    labels = frames_with_instructions(tmp_path / "frames", {3: f"die once:{marker}"})
    argv = ["--images", str(tmp_path / "frames"), "--labels", str(labels), *STAND_IN]
    marker.touch()  # the reference run in this process must not kill the test
    here = eval_cli(tmp_path / "here", *argv)
    marker.unlink()

    on_ray = eval_cli(tmp_path / "ray", *argv, "--ray", "--ray-workers", "2")

    assert marker.exists()  # an actor died on frame 3
    assert on_ray["ray"]["replaced"] == 1 and on_ray["ray"]["failed"] == 0
    assert on_ray["ray"]["retried"] >= 1  # frame 3, and any frame queued behind it on that actor
    rows = decisions(tmp_path / "ray")
    assert [r["name"] for r in rows] == [f"f{i}.png" for i in range(8)]  # each frame once, in order
    assert rows == decisions(tmp_path / "here")
    assert on_ray["certified"] == here["certified"] == 8 and on_ray["correct_certified"] == 8


def test_a_frame_that_kills_every_worker_fails_alone_with_the_reason_and_the_run_completes(ray_local, tmp_path):
    labels = frames_with_instructions(tmp_path / "frames", {2: "die always"}, count=6)

    summary = eval_cli(tmp_path / "ray", "--images", str(tmp_path / "frames"), "--labels", str(labels),
                       *STAND_IN, "--ray", "--ray-workers", "2", "--ray-retries", "1")

    rows = decisions(tmp_path / "ray")
    assert [r["name"] for r in rows] == [f"f{i}.png" for i in range(6)]
    failed = rows[2]
    assert (failed["command"], failed["certified"], failed["n_used"]) == ("stop", False, 0)
    assert failed["reason"].startswith("worker: ActorDiedError: ")  # Ray's own words on why
    assert all(r["certified"] for i, r in enumerate(rows) if i != 2)  # frames queued with it are decided
    assert summary["abstain_reasons"] == {"worker": 1} and summary["ray"]["failed"] == 1
    # it killed a worker alone on each of its 1 + --ray-retries tries, after at most one death shared with a
    # frame queued on the same worker (which then went again alone, and was decided)
    assert 2 <= summary["ray"]["replaced"] <= 3


def test_ray_runs_stay_on_this_machine_with_their_files_under_the_tests_tmp(ray_local):
    import ray

    (node,) = ray.nodes()
    assert node["NodeManagerAddress"] == "127.0.0.1"  # found without a routing lookup; nothing else can join
    assert (ray_local / "session_latest").is_dir()  # sockets, logs and spilled objects under the test's tmp


def test_importing_the_package_and_cli_never_imports_ray():
    code = ("import sys, rs_guard_ros.cli, rs_guard_ros.evaluate, rs_guard_ros.attack, rs_guard_ros.scale, "
            "rs_guard_ros.sim.demo; print('ray' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


@pytest.mark.parametrize("device,resources,expected,count", [
    ("auto", {"CPU": 16.0, "GPU": 4.0}, ({"num_cpus": 1, "num_gpus": 1}, "cuda"), 4),
    ("cuda:1", {"CPU": 16.0, "GPU": 2.0}, ({"num_cpus": 1, "num_gpus": 1}, "cuda"), 2),
    ("cpu", {"CPU": 16.0, "GPU": 4.0}, ({"num_cpus": 2, "num_gpus": 0}, "cpu"), 8),
    ("auto", {"CPU": 5.0}, ({"num_cpus": 2, "num_gpus": 0}, "cpu"), 2),
])
def test_one_gpu_per_actor_where_the_cluster_has_gpus_else_cpu_threads_cpus(device, resources, expected, count):
    cfg = from_flat({"model.device": device, "model.cpu_threads": 2})
    options, actor_cfg = scale.actor_options(cfg, resources)
    assert (options, actor_cfg.model.device) == expected
    assert scale.default_count(options, resources) == count


@pytest.mark.parametrize("model,denoiser,resources,expected", [
    ("cuda:1", "cuda:1", {"GPU": 1.0}, "cuda"),  # issue 15: cuda:1 does not exist in a one-GPU actor
    ("auto", "cuda", {"GPU": 2.0}, "cuda"),
    ("auto", "", {"GPU": 2.0}, ""),  # '' = the model's device, which is rewritten already
    ("cuda", "cpu", {"GPU": 1.0}, "cpu"),  # a CPU denoiser stays on the CPU
    ("auto", "cuda:1", {"CPU": 4.0}, "cuda:1"),  # no GPU actor: nothing to rewrite
])
def test_a_gpu_actor_runs_a_cuda_denoiser_on_its_one_visible_gpu(model, denoiser, resources, expected):
    cfg = from_flat({"model.device": model, "model.denoiser.device": denoiser})
    _, actor_cfg = scale.actor_options(cfg, resources)
    assert actor_cfg.denoiser.device == expected


# ----------------------------------------------------------------------------- attack
def test_attack_on_ray_writes_the_in_process_layout_one_scene_per_worker_call(ray_local, tmp_path):
    argv = ["--scenes", "2", "--steps", "1", "--eot-samples", "1", "--attacks", "linf", "--smoothing.n_max", "300",
            "--no-progress", "--json"]
    assert cli.main(["attack", "--out", str(tmp_path / "here"), *argv]) == 0
    assert cli.main(["attack", "--out", str(tmp_path / "ray"), *argv, "--ray", "--ray-workers", "2"]) == 0

    def layout(out: Path) -> list[tuple]:
        with (out / "attack.csv").open(newline="") as f:
            return [(r["scene"], r["instruction"], r["truth"], r["attack"], r["budget"], r["mode"])
                    for r in csv.DictReader(f)]

    assert layout(tmp_path / "ray") == layout(tmp_path / "here") and len(layout(tmp_path / "here")) == 2 * 5
    saved = json.loads((tmp_path / "ray" / "attack.json").read_text())
    assert saved["ray"]["failed_scenes"] == [] and saved["ray"]["workers"] == 2
    assert [r["scenes"] for r in saved["table"]] == [2] * 5 and saved["guarantee"]["pairs"] <= 2


# ----------------------------------------------------------------------------- demo
SCENARIOS = {"scenarios": [
    {"name": "short_drive", "target": "red box", "robot": [-0.6, 0.0, 0], "time_limit": 5,
     "objects": {"red box": [0.6, 0.0], "blue ball": [1.3, 1.3], "green cylinder": [-1.3, 1.4],
                 "yellow box": [1.2, -1.4]},
     "instructions": [{"at": 0, "text": "go to the red box"}]},
    {"name": "off_task", "target": None, "robot": [-0.5, 0.0, 0], "time_limit": 4,
     "objects": {"red box": [1.0, 0.0], "blue ball": [1.3, 1.3], "green cylinder": [-1.3, 1.4],
                 "yellow box": [1.2, -1.4]},
     "instructions": [{"at": 0, "text": "make me a coffee"}]},
]}


@pytest.mark.ros
def test_demo_on_ray_plays_two_episodes_side_by_side_each_in_its_own_ros_domain(ray_local, tmp_path, capsys):
    from conftest import claimed_domains

    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "short.yaml").write_text(yaml.safe_dump(SCENARIOS))
    out = tmp_path / "demo"
    with claimed_domains(2) as base:  # episode i runs in base + i
        assert cli.main(["demo", "--scenarios", str(scenarios), "--episodes", "2", "--out", str(out),
                         "--domain-id", str(base), "--ray", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)

    runs = result["runs"]
    assert [r["scenario"] for r in runs] == ["short_drive", "off_task"]
    assert len({r["domain_id"] for r in runs}) == 2  # distinct ROS domains, localhost discovery only
    assert all(r["exit_codes"] == {"sim": 0, "guard": 0} for r in runs)
    for i, run in enumerate(runs, start=1):
        report = Path(run["report"])
        assert report == out / f"episode_{i:03d}" / "report.md"
        text = report.read_text()
        assert run["scenario"] in text and f"**ROS_DOMAIN_ID**: {run['domain_id']}" in text
        assert (report.parent / "guard.log").is_file() and (report.parent / "steps.jsonl").stat().st_size > 0
    merged = (out / "report.md").read_text()
    assert "short_drive" in merged and "off_task" in merged
    # Each episode calibrated its real-time factor on its own worker, as in process.
    assert all("warm-up decisions" in r["calibration"] for r in runs)
    assert all(f"episode {i}: {r['calibration']}" in merged for i, r in enumerate(runs, start=1))
    off_task = next(e for e in result["episodes"] if e["scenario"] == "off_task")
    assert off_task["success"] and off_task["certified"] == 0  # the off-task instruction is never certified
    assert result["ray"]["failed"] == 0
