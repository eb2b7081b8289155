"""Offline evaluation: image folders, videos and rosbag2 recordings become one decision row per
frame, with plots, a report and a certified-accuracy curve that follows from the rows."""
import argparse
import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from rs_guard_ros import evaluate as ev
from rs_guard_ros import labels as lb
from rs_guard_ros import recordings as rec
from rs_guard_ros.images import encode_raw
from test_guard import make_guard

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
COMMANDS = ("forward", "left", "right", "stop")
OUTPUTS = ("decisions.csv", "decisions.jsonl", "summary.json", "report.md", "radius_timeline.png",
           "samples_histogram.png", "abstain_reasons.png")
T0 = 1_700_000_000_000_000_000  # bag start, ns


@pytest.fixture(scope="module")
def guard():
    """A fast, seeded stand-in Guard (left/right by the brighter half; tiny sample budget)."""
    return make_guard(**{"smoothing.n0": 8, "smoothing.n_max": 64, "smoothing.batch_size": 64,
                         "smoothing.mode": "fixed", "smoothing.seed": 0})


def sided(side: str, contrast: int = 60, h: int = 48, w: int = 64) -> np.ndarray:
    """A frame whose `side` half is brighter: the stand-in policy says "turn <side>"."""
    frame = np.full((h, w, 3), 100, np.uint8)
    half = slice(0, w // 2) if side == "left" else slice(w // 2, w)
    frame[:, half] += np.uint8(contrast)
    return frame


def read_rows(out: Path) -> list[dict]:
    with (out / "decisions.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def assert_outputs_consistent(out: Path, summary: dict, n_frames: int) -> list[dict]:
    """Every file exists, CSV/JSONL/summary agree on the frame count, the summary is strict JSON."""
    for name in OUTPUTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = read_rows(out)
    jsonl = [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]
    assert len(rows) == len(jsonl) == summary["frames"] == n_frames
    assert [r["name"] for r in rows] == [r["name"] for r in jsonl]
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary
    assert summary["certified"] == sum(r["certified"] == "True" for r in rows)
    report = (out / "report.md").read_text()
    assert f"| {n_frames} |" in report and "radius_timeline.png" in report
    return rows


def curve_from_csv(rows: list[dict], radii: list[float]) -> list[float]:
    """The certified-accuracy curve recomputed independently from decisions.csv."""
    labelled = [r for r in rows if r["ground_truth"] not in ("", "UNKNOWN")]
    return [sum(1 for r in labelled if r["label"] == r["ground_truth"] and 0 < float(r["radius"]) and
                float(r["radius"]) >= radius) / len(labelled) for radius in radii]


def assert_curve_matches_rows(out: Path, summary: dict) -> None:
    curve = summary["certified_accuracy"]
    assert (out / "certified_accuracy.png").is_file()
    assert all(a >= b for a, b in zip(curve["accuracy"], curve["accuracy"][1:])), "curve must not increase"
    assert curve["accuracy"] == pytest.approx(curve_from_csv(read_rows(out), curve["radius"]))


# ----------------------------------------------------------------------------- image folder
def test_an_image_folder_gives_one_row_per_file_and_an_unreadable_file_is_an_abstain_row(guard, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    sides = ["left", "right", "left", "right", "left"]
    for i, side in enumerate(sides):
        cv2.imwrite(str(folder / f"f{i}.png"), sided(side))  # grey halves: RGB and BGR alike
    (folder / "f5.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "notes.txt").write_text("ignored: not an image")
    # one deliberately wrong label: the gate certifies what it sees, the row counts it wrong
    labels = tmp_path / "labels.csv"
    labels.write_text("image,command\n" + "".join(f"f{i}.png,{s}\n" for i, s in enumerate(sides[:-1]))
                      + "f4.png,right\nf5.jpg,UNKNOWN\n")

    out = tmp_path / "out"
    summary = ev.evaluate(guard, rec.iter_frames(folder, instruction="go"), out,
                          lb.load_labels(labels, COMMANDS), progress=False)

    rows = assert_outputs_consistent(out, summary, 6)
    assert [r["name"] for r in rows] == [f"f{i}.png" for i in range(5)] + ["f5.jpg"]
    assert [r["command"] for r in rows[:5]] == sides and all(r["certified"] == "True" for r in rows[:5])
    broken = rows[5]
    assert (broken["command"], broken["certified"], broken["n_used"]) == ("stop", "False", "0")
    assert broken["reason"].startswith("input: ImageError") and broken["latency_ms"] == ""
    assert summary["wrong_certified"] == 1 and summary["correct_certified"] == 4
    assert (summary["labelled"], summary["labelled_unknown"], summary["certified_accuracy"]["frames"]) == (6, 1, 5)
    assert summary["abstain_reasons"] == {"input": 1}
    assert_curve_matches_rows(out, summary)


# ----------------------------------------------------------------------------- video
def test_a_video_is_decided_frame_by_frame_and_timestamp_labels_are_change_points(guard, tmp_path):
    video = tmp_path / "drive.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    sides = ["left"] * 4 + ["right"] * 4
    for side in sides:
        writer.write(sided(side))
    writer.release()
    labels = tmp_path / "labels.csv"
    labels.write_text("timestamp,command\n0.35,right\n0.0,left\n")  # unsorted on purpose

    source = rec.iter_frames(video, instruction="go")
    assert source.kind == "video" and source.total == len(sides)
    out = tmp_path / "out"
    summary = ev.evaluate(guard, source, out, lb.load_labels(labels, COMMANDS), progress=False)

    rows = assert_outputs_consistent(out, summary, len(sides))
    assert [float(r["time_s"]) for r in rows] == pytest.approx([i / 10 for i in range(len(sides))])
    assert [r["ground_truth"] for r in rows] == ["left"] * 4 + ["right"] * 4
    assert [r["command"] for r in rows] == sides
    assert summary["wrong_certified"] == 0
    assert_curve_matches_rows(out, summary)


# ----------------------------------------------------------------------------- rosbag2
IMAGE, COMPRESSED, STRING = rec.IMAGE_MSG, rec.COMPRESSED_MSG, rec.STRING_MSG


def write_bag(path: Path, messages: list[tuple[str, float, object]],
              storage: StoragePlugin = StoragePlugin.SQLITE3) -> None:
    """A rosbag2 with a raw and a compressed camera topic and an instruction topic.

    `messages`: (topic, seconds after T0, payload) where payload is an RGB frame, a str
    (instruction), or bytes (written as-is: a corrupt serialized message).
    """
    ts = get_typestore(Stores.LATEST)
    Header, Time = ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"]
    kinds = {"/cam/image_raw": IMAGE, "/cam/image_raw/compressed": COMPRESSED, "/instruction": STRING}
    with Writer(path, version=9, storage_plugin=storage) as writer:
        conns = {topic: writer.add_connection(topic, kind, typestore=ts) for topic, kind in kinds.items()}
        for topic, at, payload in messages:
            stamp = T0 + int(at * 1e9)
            header = Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="cam")
            if isinstance(payload, bytes):
                data = payload
            elif isinstance(payload, str):
                data = ts.serialize_cdr(ts.types[STRING](data=payload), STRING)
            elif kinds[topic] == IMAGE:
                raw = encode_raw(payload)
                msg = ts.types[IMAGE](header=header, height=raw.height, width=raw.width, encoding="rgb8",
                                      is_bigendian=0, step=raw.step, data=np.frombuffer(raw.data, np.uint8))
                data = ts.serialize_cdr(msg, IMAGE)
            else:
                _, png = cv2.imencode(".png", payload)
                data = ts.serialize_cdr(ts.types[COMPRESSED](header=header, format="png",
                                                             data=png.reshape(-1)), COMPRESSED)
            writer.write(conns[topic], stamp, data)


def truncated_image_message() -> bytes:
    """A well-formed CDR Image whose pixel data is shorter than step * height."""
    ts = get_typestore(Stores.LATEST)
    Header, Time = ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"]
    msg = ts.types[IMAGE](header=Header(stamp=Time(sec=0, nanosec=0), frame_id="cam"), height=48, width=64,
                          encoding="rgb8", is_bigendian=0, step=192, data=np.zeros(100, np.uint8))
    return bytes(ts.serialize_cdr(msg, IMAGE))


RAW, PNG, INSTR = "/cam/image_raw", "/cam/image_raw/compressed", "/instruction"


@pytest.fixture(params=[StoragePlugin.SQLITE3, StoragePlugin.MCAP], ids=["sqlite3", "mcap"])
def bag(tmp_path, request) -> Path:
    path = tmp_path / "run_bag"
    write_bag(path, [
        (RAW, 0.0, sided("left")),            # before any instruction: abstains
        (INSTR, 0.1, "go to the red box"),
        (RAW, 0.2, sided("left")),
        (PNG, 0.3, sided("right")),
        (INSTR, 0.4, "raise"),                # the stand-in model fails on this instruction
        (RAW, 0.5, sided("left")),
        (INSTR, 0.6, "go"),
        (RAW, 0.7, truncated_image_message()),
        (PNG, 0.8, sided("left")),
        (PNG, 0.9, b"\x00\x01\x00\x00\x07"),  # corrupt CDR
    ], request.param)
    return path


def test_a_rosbag2_decodes_raw_and_compressed_images_and_follows_the_instruction_topic(guard, bag, tmp_path):
    source = rec.iter_frames(bag, image_topics=[RAW, PNG])
    assert source.kind == "bag" and source.total == 7 and source.instruction_topic == INSTR
    labels = tmp_path / "labels.csv"
    labels.write_text("index,command\n1,left\n2,right\n5,left\n")
    out = tmp_path / "out"
    summary = ev.evaluate(guard, source, out, lb.load_labels(labels, COMMANDS), progress=False)

    rows = assert_outputs_consistent(out, summary, 7)
    assert [r["name"].split("@")[0] for r in rows] == [RAW, RAW, PNG, RAW, RAW, PNG, PNG]
    assert [float(r["time_s"]) for r in rows] == pytest.approx([0.0, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9])
    assert [r["instruction"] for r in rows] == ["", "go to the red box", "go to the red box", "raise", "go",
                                                "go", "go"]
    assert [r["command"] for r in rows] == ["stop", "left", "right", "stop", "stop", "left", "stop"]
    assert rows[0]["reason"] == "input: no instruction for this frame"
    assert rows[3]["reason"] == "error: RuntimeError: injected model failure"
    assert rows[4]["reason"].startswith("input: ImageError: data is truncated")
    assert rows[6]["reason"].startswith("input: ") and rows[6]["certified"] == "False"
    assert summary["abstain_reasons"] == {"input": 3, "error": 1}
    assert summary["wrong_certified"] == 0 and summary["correct_certified"] == 3
    assert_curve_matches_rows(out, summary)


def test_a_fixed_instruction_applies_until_the_first_instruction_message(guard, bag):
    frames = list(rec.iter_frames(bag, image_topics=[RAW], instruction="start here"))
    assert [f.instruction for f in frames] == ["start here", "go to the red box", "raise", "go"]
    assert frames[-1].rgb is None and "truncated" in frames[-1].error


def test_a_bag_with_several_image_topics_needs_them_named(bag):
    with pytest.raises(ValueError, match="image_topics: the bag has 2 image topics"):
        rec.iter_frames(bag)
    with pytest.raises(ValueError, match="image_topics: '/instruction' is not an Image"):
        rec.iter_frames(bag, image_topics=["/instruction"])
    with pytest.raises(ValueError, match="instruction_topic: '/cam/image_raw' is not a std_msgs/String"):
        rec.iter_frames(bag, image_topics=[RAW], instruction_topic=RAW)


def unusable_source(tmp_path: Path, case: str) -> Path:
    """A path that is not what its kind needs."""
    if case == "video":
        (tmp_path / "x.avi").write_bytes(b"not a video")
        return tmp_path / "x.avi"
    if case == "bag":
        (tmp_path / "metadata.yaml").write_text("not: a bag")
    return tmp_path / "missing" if case == "missing" else tmp_path


@pytest.mark.parametrize("case,kind,match", [
    ("missing", None, "no such file"),
    ("empty", "images", "no .png"),
    ("video", "video", "cannot open"),
    ("bag", "bag", "not a readable bag"),
    ("empty", "tape", "kind must be one of"),
])
def test_unusable_sources_raise_value_errors_naming_the_source(tmp_path, case, kind, match):
    with pytest.raises(ValueError, match=match):
        rec.iter_frames(unusable_source(tmp_path, case), kind=kind)


# ----------------------------------------------------------------------------- labels
def test_timestamp_labels_give_each_frame_the_latest_change_point_before_it():
    labels = lb.parse_labels("timestamp,command,instruction\n1.0,left,turn\n3.0,stop,\n", COMMANDS)
    at = lambda t: rec.Frame(0, t, None, None, "f")  # noqa: E731
    assert [labels.command_for(at(t)) for t in (0.5, 1.0, 2.9, 3.0, 99.0)] == [None, "left", "left", "stop", "stop"]
    assert labels.instruction_for(at(2.0)) == "turn" and labels.instruction_for(at(3.5)) is None
    assert labels.command_for(at(None)) is None


def test_label_columns_are_found_by_name_and_unknown_means_nothing_may_be_certified():
    labels = lb.parse_labels("image,instruction,command,notes\nsub/a.png,go to the red box,left,x\n"
                             "noise.png,go,UNKNOWN,\n", COMMANDS)
    frame = lambda name: rec.Frame(0, None, None, None, name)  # noqa: E731
    assert labels.command_for(frame("a.png")) == "left"
    assert labels.instruction_for(frame("a.png")) == "go to the red box"
    assert labels.command_for(frame("noise.png")) == lb.UNKNOWN
    rows = [{"label": "left", "ground_truth": "left", "radius": 0.3},
            {"label": None, "ground_truth": lb.UNKNOWN, "radius": 0.0}]
    assert ev.certified_accuracy(rows, [0.0, 0.3, 0.4]) == [1.0, 1.0, 0.0]  # the UNKNOWN frame is left out


@pytest.mark.parametrize("text,match", [
    ("", "header"),
    ("frame,command\nf.png,left\n", "header"),
    ("image,command\nf.png,jump\n", "'jump' is not one of"),
    ("image,command\nf.png,left\nf.png,right\n", "appears twice"),
    ("index,command\n-1,left\n", "out of range"),
    ("index,command\nthree,left\n", "not a number"),
    ("timestamp,command\nnan,left\n", "out of range"),
    ("image,command\nf.png\n", "expected 2 fields"),
    ("image,index,command\nf.png,1,left\n", "header needs one of"),
    ("image,command,command\nf.png,left,left\n", "header needs one of"),
    ("image,command\n", "no label rows"),
])
def test_bad_label_files_raise_value_errors_naming_the_line(text, match):
    with pytest.raises(ValueError, match=match):
        lb.parse_labels(text, COMMANDS, "labels.csv")


label_rows = st.lists(st.tuples(st.sampled_from(["0", "1", "7", "-1", "1.5", "x", "a.png", ""]),
                                st.sampled_from(COMMANDS + ("jump", ""))), max_size=6)
label_like_text = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=st.sampled_from(list("imagetsdxcomn,.-0129 \n\"left\r\x00")), max_size=80)
    .map(lambda t: "index,command\n" + t),
    st.tuples(st.sampled_from(lb.LABEL_KEYS), label_rows)
    .map(lambda kr: f"{kr[0]},command\n" + "".join(f"{k},{c}\n" for k, c in kr[1])))


@settings(max_examples=400, deadline=None)
@given(label_like_text)
def test_any_label_text_parses_or_raises_value_error(text):
    try:
        labels = lb.parse_labels(text, COMMANDS)
    except ValueError:
        return
    assert set(labels.commands.values()) <= set(COMMANDS) | {lb.UNKNOWN} and labels.key in lb.LABEL_KEYS


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.integers(0, 10_000), st.sampled_from(COMMANDS), min_size=1, max_size=20))
def test_index_labels_round_trip(table):
    text = "index,command\n" + "".join(f"{k},{v}\n" for k, v in table.items())
    labels = lb.parse_labels(text, COMMANDS)
    assert all(labels.command_for(rec.Frame(k, None, None, None, "f")) == v for k, v in table.items())


# ----------------------------------------------------------------------------- curve
rows_strategy = st.lists(st.fixed_dictionaries({
    "label": st.sampled_from(COMMANDS[:3] + (None,)), "ground_truth": st.sampled_from(COMMANDS[:3] + (None,)),
    "radius": st.one_of(st.just(0.0), st.floats(0.0, 2.0))}), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(rows_strategy)
def test_certified_accuracy_is_non_increasing_and_counts_correct_positive_radii(rows):
    radii = ev.radius_grid(rows, [0.1, 0.25])
    curve = ev.certified_accuracy(rows, radii)
    assert all(0.0 <= a <= 1.0 for a in curve) and all(a >= b for a, b in zip(curve, curve[1:]))
    labelled = [r for r in rows if r["ground_truth"] is not None]
    correct = [r for r in labelled if r["label"] == r["ground_truth"] and r["radius"] > 0]
    assert curve[0] == (len(correct) / len(labelled) if labelled else 0.0)
    assert curve[-1] == 0.0  # the grid ends beyond the largest radius


# ----------------------------------------------------------------------------- CLI wiring
def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    ev.add_eval_arguments(parser)
    return parser.parse_args(argv)


def test_run_eval_wires_the_flags_and_prints_progress(guard, bag, tmp_path, capsys):
    out = tmp_path / "cli_out"
    summary = ev.run_eval(parse(["--bag", str(bag), "--image-topic", RAW, "--image-topic", PNG,
                                 "--out", str(out), "--instruction", "go"]), guard)
    assert summary["frames"] == 7 and summary["source"]["instruction_topic"] == INSTR
    assert summary["labelled"] is None and "certified_accuracy.png" not in summary["files"]
    assert not (out / "certified_accuracy.png").exists()
    err = capsys.readouterr().err
    assert "rs-guard eval: 100%" in err and "7/7" in err
    text = ev.format_summary(summary)
    assert "7 frames" in text and str(out / "report.md") in text


def test_run_eval_needs_an_instruction_source(guard, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), sided("left"))
    with pytest.raises(ValueError, match="--instruction is required"):
        ev.run_eval(parse(["--images", str(folder), "--out", str(tmp_path / "o")]), guard)
    labels = tmp_path / "labels.csv"
    labels.write_text("image,command,instruction\na.png,left,go to the red box\n")
    summary = ev.run_eval(parse(["--images", str(folder), "--out", str(tmp_path / "o"), "--labels", str(labels),
                                 "--no-progress"]), guard)
    row = read_rows(tmp_path / "o")[0]
    assert row["instruction"] == "go to the red box" and summary["certified"] == 1


@pytest.mark.parametrize("argv", [[], ["--images", "x"]])
def test_eval_flags_need_an_out_folder(argv):
    with pytest.raises(SystemExit):
        parse(argv)


def test_sources_keep_the_command_line_order_and_at_least_one_is_needed(guard, tmp_path):
    args = parse(["--bag", "b", "--images", "x", "--video", "y", "--images", "z", "--out", "o"])
    assert args.sources == [("bag", Path("b")), ("images", Path("x")), ("video", Path("y")), ("images", Path("z"))]
    with pytest.raises(ValueError, match="at least one source"):
        ev.run_eval(parse(["--out", str(tmp_path / "o"), "--instruction", "go"]), guard)


def test_a_folder_of_bags_is_one_source_per_bag_with_a_summary_each(guard, tmp_path):
    fleet = tmp_path / "fleet"
    (fleet / "robot_b").mkdir(parents=True)
    write_bag(fleet / "robot_a_run", [(INSTR, 0.0, "go"), (RAW, 0.1, sided("left")), (RAW, 0.2, sided("right"))])
    write_bag(fleet / "robot_b" / "run", [(RAW, 0.1, sided("right"))], StoragePlugin.MCAP)
    (fleet / "notes.txt").write_text("not a bag")
    out = tmp_path / "out"

    summary = ev.run_eval(parse(["--bag", str(fleet), "--image-topic", RAW, "--instruction", "go", "--out", str(out),
                                 "--no-progress"]), guard)

    bags = [str(fleet / "robot_a_run"), str(fleet / "robot_b" / "run")]
    rows = assert_outputs_consistent(out, summary, 3)
    assert [(r["source"], r["index"], r["command"]) for r in rows] == [(bags[0], "0", "left"), (bags[0], "1", "right"),
                                                                      (bags[1], "0", "right")]
    assert [(s["path"], s["frames"], s["certified"]) for s in summary["sources"]] == [(bags[0], 2, 2), (bags[1], 1, 1)]
    assert summary["source"] == {"kind": "bag", "path": "2 sources", "instruction_topic": None, "labels": None}
    report = (out / "report.md").read_text()
    assert "## Per source" in report and f"| `{bags[1]}` | bag | 1 |" in report
    with pytest.raises(ValueError, match="neither a bag nor a folder holding bags"):
        rec.bag_paths(tmp_path / "out")


def test_an_interrupted_run_says_how_to_resume_and_resume_decides_only_the_rest(guard, tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(6):
        cv2.imwrite(str(folder / f"f{i}.png"), sided(("left", "right")[i % 2]))
    full = ev.evaluate(guard, rec.iter_frames(folder, instruction="go"), tmp_path / "full", progress=False)
    decided: list[str] = []
    decide = guard.decide

    def interrupt_at_fourth(frame, instruction, **kwargs):
        decided.append(instruction)
        if len(decided) == 4:
            raise KeyboardInterrupt  # Ctrl-C while the 4th frame is being decided
        return decide(frame, instruction, **kwargs)

    out = tmp_path / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(guard, "decide", interrupt_at_fourth)
        with pytest.raises(KeyboardInterrupt):
            ev.evaluate(guard, rec.iter_frames(folder, instruction="go"), out, progress=False)
    err = capsys.readouterr().err
    assert "interrupted after 3 frames" in err and "run the same command with --resume" in err
    assert len(read_rows(out)) == 3
    with (out / "decisions.jsonl").open("a") as f:
        f.write('{"index": 3, "name": "f3.p')  # a row cut short by a killed run: decided again

    decided.clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(guard, "decide", interrupt_at_fourth)
        summary = ev.evaluate(guard, rec.iter_frames(folder, instruction="go"), out, progress=False, resume=True)

    assert len(decided) == 3  # f3, f4, f5 only
    rows = assert_outputs_consistent(out, summary, 6)
    timing = ("latency_ms",)
    assert [{k: v for k, v in r.items() if k not in timing} for r in rows] == \
        [{k: v for k, v in r.items() if k not in timing} for r in read_rows(tmp_path / "full")]
    assert summary["certified"] == full["certified"] == 6
    with pytest.raises(ValueError, match="written without --labels"):
        ev.evaluate(guard, rec.iter_frames(folder, instruction="go"), out,
                    lb.parse_labels("index,command\n0,left\n", COMMANDS), progress=False, resume=True)


def test_a_deadline_makes_slow_decisions_abstain(guard, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), sided("left"))
    summary = ev.run_eval(parse(["--images", str(folder), "--out", str(tmp_path / "o"), "--instruction", "slow",
                                 "--deadline", "0.01", "--no-progress"]), guard)
    assert summary["abstain_reasons"] == {"deadline": 1}
    with pytest.raises(ValueError, match="--deadline must be positive"):
        ev.run_eval(parse(["--images", str(folder), "--out", str(tmp_path / "o"), "--instruction", "go",
                           "--deadline", "0"]), guard)


def test_median_samples_and_latency_ignore_frames_that_never_reached_the_model(guard, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), sided("left"))
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    summary = ev.evaluate(guard, rec.iter_frames(folder, instruction="go"), tmp_path / "o", progress=False)
    rows = read_rows(tmp_path / "o")
    assert summary["median_n_used"] == float(rows[0]["n_used"]) > 0
    assert summary["latency_ms"]["p50"] == pytest.approx(float(rows[0]["latency_ms"]))
    assert math.isclose(summary["abstain_pct"], 50.0)


def test_a_frame_with_no_label_row_and_no_instruction_is_counted_apart_never_as_an_abstain(guard, tmp_path):
    """Issue 15: such a frame was an abstain row ("no instruction"), inflating the abstain rate."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for name, side in (("a.png", "left"), ("b.png", "right"), ("c.png", "left")):
        cv2.imwrite(str(folder / name), sided(side))
    labels = tmp_path / "labels.csv"
    labels.write_text("image,instruction,command\na.png,go,left\nb.png,go,right\n")  # c.png has no row
    out = tmp_path / "out"
    summary = ev.run_eval(parse(["--images", str(folder), "--labels", str(labels), "--out", str(out),
                                 "--no-progress"]), guard)
    assert (summary["frames"], summary["certified"], summary["abstained"], summary["unlabelled"]) == (2, 2, 0, 1)
    assert summary["abstain_pct"] == 0.0 and summary["abstain_reasons"] == {}
    rows = read_rows(out)  # every frame keeps its row, the unlabelled one saying why it was not decided
    assert [r["name"] for r in rows] == ["a.png", "b.png", "c.png"]
    assert rows[2]["reason"] == f"unlabelled: no row in {labels} and no instruction" and rows[2]["latency_ms"] == ""
    assert "1 more frames have no row in the labels file" in (out / "report.md").read_text()
    assert "1 unlabelled, not decided" in ev.format_summary(summary)
    # With an instruction for every frame, the unlabelled frame is decided and counted (no ground truth).
    summary = ev.run_eval(parse(["--images", str(folder), "--labels", str(labels), "--out", str(tmp_path / "o2"),
                                 "--instruction", "go", "--no-progress"]), guard)
    assert (summary["frames"], summary["labelled"], summary["unlabelled"]) == (3, 2, 0)
    only_unlabelled = tmp_path / "none.csv"
    only_unlabelled.write_text("image,instruction,command\nzzz.png,go,left\n")
    with pytest.raises(ValueError, match="no frames to evaluate .3 with no row in"):
        ev.run_eval(parse(["--images", str(folder), "--labels", str(only_unlabelled), "--out",
                           str(tmp_path / "o3"), "--no-progress"]), guard)


def test_with_labels_the_report_gives_the_models_accuracy_on_the_clean_frames_beside_the_certified_one(tmp_path):
    """Issue 15: docs/denoiser.md compares the gate with the model's plain accuracy; sigma 0 is not
    a setting, so eval measures it itself: the base classifier once on each clean frame. Near-even
    frames (contrast 1) are right on the clean frame and a coin toss under noise: the clean
    accuracy counts them, the certified accuracy cannot."""
    guard = make_guard(**{"smoothing.n0": 8, "smoothing.n_max": 64, "smoothing.batch_size": 64,
                          "smoothing.mode": "fixed", "smoothing.seed": 0, "smoothing.sigma": 0.25})
    folder = tmp_path / "frames"
    folder.mkdir()
    frames = {"a.png": sided("left"), "b.png": sided("right"), "c.png": sided("left", contrast=1),
              "d.png": sided("right", contrast=1), "e.png": sided("left")}
    for name, frame in frames.items():
        cv2.imwrite(str(folder / name), frame)
    labels = tmp_path / "labels.csv"  # e.png deliberately mislabelled: wrong on the clean frame too
    labels.write_text("image,command\na.png,left\nb.png,right\nc.png,left\nd.png,right\ne.png,right\n")
    out = tmp_path / "out"
    summary = ev.run_eval(parse(["--images", str(folder), "--labels", str(labels), "--out", str(out),
                                 "--instruction", "go", "--no-progress"]), guard)
    rows = read_rows(out)
    assert [r["clean_label"] for r in rows] == ["left", "right", "left", "right", "left"]  # the stand-in's rule
    assert summary["clean_accuracy"] == 4 / 5
    assert summary["certified_accuracy"]["accuracy"][0] < summary["clean_accuracy"]  # the near-even frames
    assert "the model alone (no gate) is right on 80.0 % of them" in (out / "report.md").read_text()
    assert "the model alone on the clean frame 80.0 %" in ev.format_summary(summary)


# ----------------------------------------------------------------------------- the shipped demo

@pytest.mark.slow
def test_the_demo_vla_on_the_shipped_examples_certifies_no_wrong_command_and_abstains_on_noise(tmp_path):
    from rs_guard_ros.config import from_flat
    from rs_guard_ros.guard import Guard

    guard = Guard.from_config(from_flat({"smoothing.seed": 1}))  # the default configuration: demo VLA
    out = tmp_path / "demo_eval"
    summary = ev.run_eval(parse(["--images", str(EXAMPLES), "--labels", str(EXAMPLES / "frames.csv"),
                                 "--out", str(out), "--no-progress"]), guard)

    with (EXAMPLES / "frames.csv").open(newline="") as f:
        expected = {row["image"]: row for row in csv.DictReader(f)}
    rows = assert_outputs_consistent(out, summary, len(expected))
    assert {r["name"]: (r["instruction"], r["ground_truth"]) for r in rows} == \
        {name: (row["instruction"], row["command"]) for name, row in expected.items()}
    assert summary["wrong_certified"] == 0 and summary["correct_certified"] > 0
    noise = [r for r in rows if r["ground_truth"] == lb.UNKNOWN]
    assert noise and all(r["certified"] == "False" and r["command"] == "stop" for r in noise)
    assert_curve_matches_rows(out, summary)


def test_a_ros1_bag_is_read_too(guard, tmp_path):
    from rosbags.rosbag1 import Writer as Ros1Writer

    ts = get_typestore(Stores.ROS1_NOETIC)
    Header, Time = ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"]
    raw = encode_raw(sided("right"))
    image = ts.types[IMAGE](header=Header(seq=0, stamp=Time(sec=1, nanosec=0), frame_id="cam"), height=raw.height,
                            width=raw.width, encoding="rgb8", is_bigendian=0, step=raw.step,
                            data=np.frombuffer(raw.data, np.uint8))
    path = tmp_path / "run.bag"
    with Ros1Writer(path) as writer:
        text = writer.add_connection("/instruction", STRING, typestore=ts)
        cam = writer.add_connection("/camera/image_raw", IMAGE, typestore=ts)
        writer.write(text, T0, ts.serialize_ros1(ts.types[STRING](data="go"), STRING))
        writer.write(cam, T0 + 10**8, ts.serialize_ros1(image, IMAGE))
    (frame,) = rec.iter_frames(path)
    assert (frame.instruction, frame.time_s, frame.error) == ("go", pytest.approx(0.1), "")
    assert ev.decide_frame(guard, frame)["command"] == "right"
