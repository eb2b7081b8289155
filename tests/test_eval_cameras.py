"""rs-guard eval with several cameras and the joint state (issue 17 §4): a folder per camera or a
bag with one topic per camera, frames paired into one decision by stamp within
node.max_camera_skew, unpaired frames counted apart, the state read from the bag's state.topic."""
import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_typestore

from rs_guard_ros import evaluate as ev
from rs_guard_ros import recordings as rec
from rs_guard_ros.camera_recordings import JOINT_STATE_MSG, views_for
from rs_guard_ros.images import encode_raw
from test_views import two_camera_guard

T0 = 1_700_000_000_000_000_000  # bag start, ns
STATE = {"state.topic": "joint_states", "state.joint_names": ["left_wheel", "right_wheel"], "state.max_age": 0.5}


def view(level: int, size: tuple[int, int]) -> np.ndarray:
    return np.full((*size, 3), level, np.uint8)


def front(level: int) -> np.ndarray:
    return view(level, (96, 128))


def rear(level: int) -> np.ndarray:
    return view(level, (64, 64))


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    ev.add_eval_arguments(parser)
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- a folder per camera
@pytest.fixture
def folders(tmp_path) -> Path:
    """front/ has 3 frames, rear/ 4: the 4th rear frame has no partner. Front brighter -> "left"."""
    root = tmp_path / "run"
    levels = [(200, 40), (40, 200), (200, 40), (None, 40)]
    for i, (f, r) in enumerate(levels):
        for camera, level, make in (("front", f, front), ("rear", r, rear)):
            if level is not None:
                (root / camera).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / camera / f"{i:03d}.png"), make(level))
    return root


def test_a_folder_per_camera_pairs_the_ith_files_and_counts_the_unpaired(folders, tmp_path):
    guard = two_camera_guard()
    labels = tmp_path / "labels.csv"
    labels.write_text("image,command\n000.png,left\n001.png,right\n002.png,left\n")
    summary = ev.run_eval(parse(["--images", str(folders), "--instruction", "go", "--labels", str(labels),
                                 "--out", str(tmp_path / "out"), "--no-progress"]), guard)
    assert summary["frames"] == 3 and summary["certified"] == 3 and summary["wrong_certified"] == 0
    assert summary["unpaired"] == {"rear": 1}
    assert "1 camera frames paired into no decision by stamp" in ev.format_summary(summary)
    assert "rear 1" in (tmp_path / "out" / "report.md").read_text()
    assert summary["clean_accuracy"] == 1.0  # the model alone, on both clean views


def test_a_missing_camera_folder_or_a_wrong_sized_view_is_named(folders, tmp_path):
    guard = two_camera_guard()
    (folders / "rear" / "001.png").write_bytes(cv2.imencode(".png", view(40, (8, 8)))[1].tobytes())
    (frame0, frame1, _) = rec.iter_frames(folders, instruction="go", views=views_for(guard.cfg))
    assert ev.decide_frame(guard, frame0)["certified"]
    row = ev.decide_frame(guard, frame1)
    assert not row["certified"] and row["reason"].startswith("input: camera 'rear': frame 8x8 is smaller")
    for path in (folders / "rear").iterdir():
        path.unlink()
    (folders / "rear").rmdir()
    with pytest.raises(ValueError, match=r"camera 'rear' \(.*rear\): not a folder of images"):
        rec.iter_frames(folders, views=views_for(guard.cfg))


def test_several_cameras_need_a_folder_per_camera_or_a_bag_not_a_video(tmp_path):
    video = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    with pytest.raises(ValueError, match="a video holds one camera; with cameras.names front, rear give --images"):
        ev.run_eval(parse(["--video", str(video), "--instruction", "go", "--out", str(tmp_path / "o")]),
                    two_camera_guard())


def test_a_fixed_state_reaches_the_model_and_a_folder_needs_one_when_the_model_reads_the_state(folders, tmp_path):
    guard = two_camera_guard(**STATE)
    with pytest.raises(ValueError, match="--state is required for .*run: the model reads the joint state"):
        ev.run_eval(parse(["--images", str(folders), "--instruction", "go", "--out", str(tmp_path / "o")]), guard)
    summary = ev.run_eval(parse(["--images", str(folders), "--instruction", "go", "--out", str(tmp_path / "o"),
                                 "--state", "right_wheel=2,left_wheel=-1", "--no-progress"]), guard)
    assert summary["certified"] == 3
    assert all(s.tolist() == [-1.0, 2.0] for s in guard.policy.states)


# ----------------------------------------------------------------------------- a bag, one topic per camera
def write_bag(path: Path, messages: list[tuple[str, float, float, object]]) -> None:
    """(topic, log time s, header stamp s, payload): payload an RGB frame (/front/image as Image,
    /rear/image/compressed as PNG), a str (/instruction) or joint positions (/joint_states)."""
    ts = get_typestore(Stores.LATEST)
    Header, Time = ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"]
    kinds = {"/front/image": rec.IMAGE_MSG, "/rear/image/compressed": rec.COMPRESSED_MSG,
             "/instruction": rec.STRING_MSG, "/joint_states": JOINT_STATE_MSG}
    with Writer(path, version=9) as writer:
        conns = {topic: writer.add_connection(topic, kind, typestore=ts) for topic, kind in kinds.items()}
        for topic, at, stamp_s, payload in messages:
            stamp = T0 + round(stamp_s * 1e9)
            header = Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id=topic)
            if topic == "/instruction":
                msg = ts.types[rec.STRING_MSG](data=payload)
            elif topic == "/joint_states":
                msg = ts.types[JOINT_STATE_MSG](header=header, name=["left_wheel", "right_wheel"],
                                                position=np.array(payload, float), velocity=np.zeros(0),
                                                effort=np.zeros(0))
            elif topic == "/front/image":
                raw = encode_raw(payload)
                msg = ts.types[rec.IMAGE_MSG](header=header, height=raw.height, width=raw.width, encoding="rgb8",
                                              is_bigendian=0, step=raw.step, data=np.frombuffer(raw.data, np.uint8))
            else:
                msg = ts.types[rec.COMPRESSED_MSG](header=header, format="png",
                                                   data=cv2.imencode(".png", payload)[1].reshape(-1))
            writer.write(conns[topic], T0 + round(at * 1e9), ts.serialize_cdr(msg, kinds[topic]))


@pytest.fixture
def bag(tmp_path) -> Path:
    """Frames at 10 Hz on both cameras (stamps 0.01 s apart, within the 0.05 s skew), except the
    third rear frame, stamped 0.2 s late; one front frame replaced before its partner came."""
    path = tmp_path / "bag"
    write_bag(path, [
        ("/instruction", 0.0, 0.0, "go"),
        ("/joint_states", 0.01, 0.01, [0.5, -0.5]),
        ("/front/image", 0.10, 0.10, front(200)), ("/rear/image/compressed", 0.11, 0.11, rear(40)),   # left
        ("/front/image", 0.20, 0.20, front(40)), ("/rear/image/compressed", 0.21, 0.21, rear(200)),   # right
        ("/front/image", 0.30, 0.30, front(200)), ("/rear/image/compressed", 0.31, 0.50, rear(40)),   # skewed
        ("/joint_states", 0.55, 0.55, [1.5, 2.5]),
        ("/front/image", 0.60, 0.60, front(40)),  # replaced by the next front frame
        ("/front/image", 0.70, 0.70, front(200)), ("/rear/image/compressed", 0.71, 0.71, rear(40)),   # left
        ("/joint_states", 0.75, 0.75, [0.0, 0.0]),  # the newest for the last set, 1.16 s before it
        ("/front/image", 1.90, 1.90, front(40)), ("/rear/image/compressed", 1.91, 1.91, rear(200)),   # state stale
    ])
    return path


def test_a_bag_pairs_one_topic_per_camera_by_stamp_and_counts_the_frames_left_out(bag, tmp_path):
    guard = two_camera_guard()
    summary = ev.run_eval(parse(["--bag", str(bag), "--out", str(tmp_path / "out"), "--no-progress"]), guard)
    rows = [json.loads(line) for line in (tmp_path / "out" / "decisions.jsonl").read_text().splitlines()]
    assert [r["command"] for r in rows] == ["left", "right", "left", "right"] and all(r["certified"] for r in rows)
    assert [r["name"] for r in rows][0] == f"/front/image@{T0 + 10**8}"
    # the skewed front frame, the frame replaced before its partner and the late rear frame: unpaired
    assert summary["unpaired"] == {"front": 2, "rear": 1}


def test_each_decision_gets_the_newest_joint_state_and_a_stale_one_abstains_naming_it(bag):
    guard = two_camera_guard(**STATE)
    source = rec.iter_frames(bag, views=views_for(guard.cfg))
    rows = [ev.decide_frame(guard, frame) for frame in source]
    assert [r["certified"] for r in rows] == [True, True, True, False]
    assert rows[3]["reason"] == "input: stale_state: joint state 1.160 s old when deciding (state.max_age 0.5 s)"
    seen = [s.tolist() for s in guard.policy.states]
    assert [v for i, v in enumerate(seen) if i == 0 or v != seen[i - 1]] == [[0.5, -0.5], [1.5, 2.5]]
    assert source.unpaired == {"front": 2, "rear": 1}


def test_a_camera_whose_topic_the_bag_lacks_is_named_and_image_topic_names_another(bag, tmp_path):
    guard = two_camera_guard(**{"cameras.rear.topic": "back/image"})
    with pytest.raises(ValueError, match=r"camera 'rear': the bag has no image topic back/image .*--image-topic rear="):
        ev.run_eval(parse(["--bag", str(bag), "--out", str(tmp_path / "o")]), guard)
    summary = ev.run_eval(parse(["--bag", str(bag), "--image-topic", "rear=/rear/image/compressed", "--out",
                                 str(tmp_path / "o"), "--no-progress"]), guard)
    assert summary["frames"] == 4
    with pytest.raises(ValueError, match="--image-topic side=/x: no camera 'side'"):
        ev.run_eval(parse(["--bag", str(bag), "--image-topic", "side=/x", "--out", str(tmp_path / "o")]), guard)
