"""Recordings of several cameras, and of the robot's joint state, for `rs-guard eval`.

One decision per set of frames, one frame per camera of cameras.names (`Frame.rgb` is
{camera: RGB}), from either layout:

* **a folder per camera**: `--images DIR` where DIR holds one folder per camera (DIR/front,
  DIR/rear). Image files carry no stamps: the i-th file of every camera, in name order, make
  the i-th decision, and a camera with more files leaves the rest unpaired. A frame is named
  by the first camera's file name (what a labels file's `image` column matches).
* **a bag with one topic per camera**: `cameras.<name>.topic` (a sensor_msgs/Image topic, or
  CompressedImage on `<topic>/compressed`; `--image-topic CAMERA=TOPIC` names another). The
  frames are paired by header stamp within node.max_camera_skew, in recording order, by the
  node's rule (:mod:`rs_guard_ros.pairing`). With state.topic set, each set gets the newest
  JointState recorded before it, held to the node's rule (ros/sync.py `state_vector`:
  state.max_age from the set's newest stamp, every joint of state.joint_names).

Frames in no decision are counted per camera (`FrameSource.unpaired`). A set with a view that
cannot be decoded, or a state that cannot be used, becomes an abstain row whose reason names
the camera or what was wrong with the state, as on the robot.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .camera_inputs import per_camera
from .pairing import Stamped, StampPairing
from .recordings import (COMPRESSED_MSG, IMAGE_MSG, Frame, FrameSource, Views, bag_topics, choose_instruction_topic,
                         decode_message, decoded, image_files, image_topics_of, instruction_text, open_bag,
                         read_image_file)
from .ros.sync import joint_sample, state_vector

JOINT_STATE_MSG = "sensor_msgs/msg/JointState"


def views_for(cfg: Any, image_topics: Sequence[str] = (), state: np.ndarray | None = None) -> Views:
    """What `cfg` (a Config) needs of a recording: each camera's topic (`image_topics`: CAMERA=TOPIC
    values naming other topics, or one plain TOPIC with one camera), the skew, and the state."""
    topics = {name: cfg.cameras.table[name].topic for name in cfg.cameras.names}
    topics.update(per_camera(image_topics, cfg.cameras.names, "--image-topic", "TOPIC", require_all=False))
    s = cfg.state
    return Views(topics, cfg.node.max_camera_skew, s.topic, tuple(s.joint_names), s.max_age, state)


def views_source(path: Path, kind: str, instruction: str | None, instruction_topic: str | None,
                 views: Views) -> FrameSource:
    """The decisions of a folder of camera folders or of a bag (see the module docstring)."""
    if kind == "images":
        return _folders_source(path, instruction, views)
    if kind == "bag":
        return _bag_source(path, instruction, instruction_topic, views)
    raise ValueError(f"source {path}: a {kind} holds one camera; with cameras.names {', '.join(views.cameras)} give "
                     "--images DIR (a folder per camera) or --bag (a topic per camera)")


def _folders_source(path: Path, instruction: str | None, views: Views) -> FrameSource:
    files = {camera: image_files(path / camera, f"source {path}: camera '{camera}' ({path / camera})")
             for camera in views.cameras}
    total = min(len(f) for f in files.values())
    unpaired = Counter({camera: len(f) - total for camera, f in files.items() if len(f) > total})

    def read() -> Iterator[Frame]:
        for index in range(total):
            views_read = {camera: read_image_file(f[index]) for camera, f in files.items()}
            yield _set_frame(index, None, views_read, instruction, files[views.cameras[0]][index].name)

    return FrameSource("images", path, total, read, unpaired=unpaired)


def _bag_source(path: Path, instruction: str | None, instruction_topic: str | None, views: Views) -> FrameSource:
    connections, topics = bag_topics(path)
    by_topic = {topic: camera for camera, topic in camera_topics(topics, views).items()}
    state_topic = _state_topic(topics, views)
    instruction_topic = choose_instruction_topic(topics, instruction_topic)
    unpaired: Counter = Counter()

    def read() -> Iterator[Frame]:
        unpaired.clear()
        pairing: StampPairing[tuple] = StampPairing(views.cameras, views.max_skew)
        with open_bag(path) as reader:
            wanted = [c for c in reader.connections if c.topic in by_topic or c.topic in (instruction_topic,
                                                                                          state_topic)]
            current, state, index = instruction, None, 0
            for conn, log_ns, raw in reader.messages(connections=wanted):
                if conn.topic == instruction_topic:
                    current = instruction_text(reader, raw, conn.msgtype)
                elif conn.topic == state_topic:
                    state = _joint_state(reader, raw, conn.msgtype, log_ns / 1e9)
                else:
                    stamp, rgb, error = _image(reader, raw, conn.msgtype, log_ns / 1e9)
                    found = pairing.add(Stamped(by_topic[conn.topic], stamp, (rgb, error, f"{conn.topic}@{log_ns}")))
                    if found is not None:
                        state_now = state_vector(max(f.stamp for f in found.values()), state, views.joint_names,
                                                 views.state_max_age, "deciding") if state_topic else (None, None)
                        yield _set_frame(index, (log_ns - reader.start_time) / 1e9,
                                         {c: f.item[:2] for c, f in found.items()}, current,
                                         found[views.cameras[0]].item[2], state_now)
                        index += 1
        pairing.finish()
        unpaired.update(pairing.unpaired)

    return FrameSource("bag", path, None, read, instruction_topic, unpaired)


def camera_topics(topics: dict[str, str], views: Views) -> dict[str, str]:
    """Each camera's image topic in the bag: its topic as Image (absolute or relative to /),
    else its `<topic>/compressed`; with one camera whose topic the bag lacks, the bag's only
    image topic (as a one-camera evaluation takes). ValueError naming the camera otherwise."""
    available = image_topics_of(topics)
    out = {}
    for camera, topic in views.topics.items():
        bases = [topic] if topic.startswith("/") else [f"/{topic}", topic]
        found = [t for base in bases for t in (base, f"{base}/compressed") if topics.get(t) in (IMAGE_MSG,
                                                                                               COMPRESSED_MSG)]
        if not found and len(views.topics) == 1 and len(available) == 1:
            found = available
        if not found:
            raise ValueError(f"camera '{camera}': the bag has no image topic {topic} (nor {topic}/compressed); its "
                             f"image topics: {available}; name it with --image-topic {camera}=TOPIC")
        out[camera] = found[0]
    return out


def _state_topic(topics: dict[str, str], views: Views) -> str | None:
    """The bag's JointState topic of state.topic (as for cameras, relative to / or not); None when
    the model reads no state or a fixed one is given; ValueError when the bag lacks it."""
    if not views.state_topic or views.state_fixed is not None:
        return None
    topic = views.state_topic
    for name in ([topic] if topic.startswith("/") else [f"/{topic}", topic]):
        if topics.get(name) == JOINT_STATE_MSG:
            return name
    raise ValueError(f"state.topic {topic}: not a sensor_msgs/JointState topic of the bag (topics: {sorted(topics)}); "
                     "give the state with --state")


def _stamp(msg: Any, arrival: float) -> float:
    """A message's header stamp in seconds; its arrival (log time) when unstamped, as the node takes it."""
    stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
    return stamp if stamp != 0.0 else arrival


def _image(reader: Any, raw: bytes, msgtype: str, arrival: float) -> tuple[float, np.ndarray | None, str]:
    """(stamp, rgb, "") or (stamp, None, why) for one camera message (its log time as the stamp
    of a message that cannot be read at all)."""
    msg, error = decoded(lambda: reader.deserialize(raw, msgtype))
    if msg is None:
        return arrival, None, error
    rgb, error = decoded(lambda: decode_message(msg, msgtype))
    return _stamp(msg, arrival), rgb, error


def _joint_state(reader: Any, raw: bytes, msgtype: str, arrival: float) -> Any:
    """A JointState message as the node's JointSample; None (no usable state) if it cannot be read."""
    try:
        msg = reader.deserialize(raw, msgtype)
        return joint_sample(_stamp(msg, arrival), arrival, list(msg.name), list(msg.position))
    except Exception:  # noqa: BLE001 -- a malformed state leaves none: the decision abstains (no_state)
        return None


def _set_frame(index: int, time_s: float | None, views_read: dict[str, tuple[np.ndarray | None, str]],
               instruction: str | None, name: str,
               state: tuple[np.ndarray | None, str | None] = (None, None)) -> Frame:
    """One decision's Frame: every camera's RGB, or the first failure naming its camera (or the state's)."""
    failed = [f"camera '{camera}': {error or 'no image'}" for camera, (rgb, error) in views_read.items()
              if rgb is None]
    vector, why = state
    error = failed[0] if failed else why or ""
    rgb = None if error else {camera: rgb for camera, (rgb, _) in views_read.items()}
    return Frame(index, time_s, rgb, instruction, name, error, state=vector)


__all__ = ["views_for", "views_source", "camera_topics", "JOINT_STATE_MSG"]
