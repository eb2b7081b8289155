"""Frames of a recording for offline evaluation: an image folder, a video, or a bag.

A folder of PNG/JPEG images (sorted by name), a video file (OpenCV), or a rosbag2
recording (and ROS 1 .bag files) read with the `rosbags` library, no ROS install needed.
In a bag, Image and CompressedImage messages are decoded through
:mod:`rs_guard_ros.images`, exactly as the node decodes them, and the latest
std_msgs/String on the instruction topic applies to the frames after it. A frame that
cannot be decoded carries its reason (`Frame.error`) instead of pixels.

A fleet's recordings come as many sources (`open_sources`): several folders, videos and
bags, and folders holding bags (each bag found below such a folder is one source).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import numpy as np

from . import images

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
BAG_FILE_SUFFIXES = (".mcap", ".db3", ".bag")
IMAGE_MSG = "sensor_msgs/msg/Image"
COMPRESSED_MSG = "sensor_msgs/msg/CompressedImage"
STRING_MSG = "std_msgs/msg/String"
KINDS = ("images", "video", "bag")

# Columns of decisions.csv, in order; "ground_truth" only when labels are given.


class Frame(NamedTuple):
    """One frame of a recording; `rgb` is None (and `error` says why) when it cannot be decoded."""

    index: int  # position in the recording, counting frames that fail to decode
    time_s: float | None  # seconds since the recording started (None for an image folder)
    rgb: np.ndarray | dict[str, np.ndarray] | None  # (H, W, 3) uint8 RGB; {camera: RGB} with several cameras
    instruction: str | None  # the instruction in force for this frame (None: none yet)
    name: str  # file name, "<video>#<n>" or "<topic>@<log time ns>" (several cameras: the first camera's)
    error: str = ""
    source: str = ""  # the path of the recording it comes from
    state: np.ndarray | None = None  # the joint state read with it (state.joint_names' order), if any


@dataclass(frozen=True)
class Views:
    """What a configuration with several cameras, or a joint state, needs of a recording:
    each camera's bag topic (cameras.<name>.topic, or --image-topic CAMERA=TOPIC), the skew
    their stamps may spread (node.max_camera_skew), and the state topic, joints and age limit
    (state.*); `state_fixed`, a state given on the command line, stands for every frame's."""

    topics: dict[str, str]  # camera -> topic, in cameras.names order
    max_skew: float
    state_topic: str = ""
    joint_names: tuple[str, ...] = ()
    state_max_age: float = 0.0
    state_fixed: np.ndarray | None = field(default=None, compare=False)

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.topics)

    def reads(self, kind: str) -> bool:
        """Whether a recording of `kind` is read camera by camera (and state by topic) here."""
        return len(self.topics) > 1 or (kind == "bag" and bool(self.state_topic) and self.state_fixed is None)


@dataclass
class FrameSource:
    """The frames of one recording: iterable (each pass re-reads it) and, where cheap, counted."""

    kind: str
    path: Path
    total: int | None
    read: Callable[[], Iterator[Frame]] = field(repr=False)
    instruction_topic: str | None = None  # bags: the topic the instruction is read from
    unpaired: Counter = field(default_factory=Counter)  # several cameras: frames of each in no decision (last pass)

    def __iter__(self) -> Iterator[Frame]:
        path = str(self.path)
        return (frame._replace(source=path) for frame in self.read())


# ----------------------------------------------------------------------------- sources
def detect_kind(path: Path) -> str:
    """images, video or bag, from what the path is (a bag is a folder with metadata.yaml or a bag file)."""
    if path.is_dir():
        return "bag" if (path / "metadata.yaml").is_file() else "images"
    return "bag" if path.suffix.lower() in BAG_FILE_SUFFIXES else "video"


def iter_frames(source: str | Path, *, kind: str | None = None, instruction: str | None = None,
                image_topics: Sequence[str] = (), instruction_topic: str | None = None,
                views: Views | None = None) -> FrameSource:
    """The frames of an image folder, a video or a bag, each with the instruction in force.

    `instruction` applies to every frame (in a bag, until the first instruction message).
    `image_topics` picks the bag's camera topics (default: its only image topic);
    `instruction_topic` the bag's std_msgs/String topic (default: a topic named
    `.../instruction` if the bag has exactly one). Opening validates the source, so a
    missing file or topic raises ValueError naming the argument before any decision is made.
    With `views` naming several cameras (or a joint-state topic for a bag), the recording holds
    every camera and is read by :mod:`rs_guard_ros.camera_recordings`.
    """
    path = Path(source)
    if not path.exists():
        raise ValueError(f"source {path}: no such file or folder")
    kind = kind or detect_kind(path)
    if views is not None and views.reads(kind):
        from .camera_recordings import views_source  # it builds on this module's readers

        return views_source(path, kind, instruction, instruction_topic, views)
    if kind == "images":
        return _folder_source(path, instruction)
    if kind == "video":
        return _video_source(path, instruction)
    if kind == "bag":
        return _bag_source(path, instruction, tuple(image_topics), instruction_topic)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def _folder_source(folder: Path, instruction: str | None) -> FrameSource:
    """PNG/JPEG files of a folder, sorted by name, decoded with the node's CompressedImage decoder."""
    files = image_files(folder, f"source {folder}")

    def read() -> Iterator[Frame]:
        for index, file in enumerate(files):
            rgb, error = read_image_file(file)
            yield Frame(index, None, rgb, instruction, file.name, error)

    return FrameSource("images", folder, len(files), read)


def image_files(folder: Path, where: str) -> list[Path]:
    """The PNG/JPEG files of a folder, sorted by name; ValueError naming `where` if there are none."""
    if not folder.is_dir():
        raise ValueError(f"{where}: not a folder of images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{where}: no {'/'.join(IMAGE_SUFFIXES)} files")
    return files


def read_image_file(file: Path) -> tuple[np.ndarray | None, str]:
    """(rgb, "") or (None, why) for an image file, decoded as the node decodes a CompressedImage
    (decode_compressed checks the header size before decoding: no decompression bombs)."""
    return decoded(lambda: images.decode_compressed("", file.read_bytes()))


def _video_source(path: Path, instruction: str | None) -> FrameSource:
    """Every frame of a video file, timed by its frame rate."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    opened, fps, count = capture.isOpened(), capture.get(cv2.CAP_PROP_FPS), capture.get(cv2.CAP_PROP_FRAME_COUNT)
    capture.release()
    if not opened:
        raise ValueError(f"source {path}: OpenCV cannot open it as a video")

    def read() -> Iterator[Frame]:
        capture = cv2.VideoCapture(str(path))
        try:
            index = 0
            while True:
                ok, bgr = capture.read()
                if not ok:
                    return
                time_s = index / fps if fps > 0 else None
                yield Frame(index, time_s, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), instruction, f"{path.name}#{index}")
                index += 1
        finally:
            capture.release()

    return FrameSource("video", path, int(count) if count > 0 else None, read)


def open_bag(path: Path):
    """An AnyReader for a rosbag2 folder/file or a ROS 1 bag, falling back to the latest ROS 2
    message definitions when the bag carries none (Image, CompressedImage and String have not
    changed since Foxy)."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    return AnyReader([path], default_typestore=get_typestore(Stores.LATEST))


def bag_topics(path: Path) -> tuple[list[Any], dict[str, str]]:
    """A bag's connections and {topic: message type}; ValueError naming the path if unreadable."""
    try:
        with open_bag(path) as reader:
            connections = list(reader.connections)
    except Exception as exc:  # rosbags raises its own error types for unreadable bags
        raise ValueError(f"source {path}: not a readable bag ({type(exc).__name__}: {exc})") from exc
    return connections, {c.topic: c.msgtype for c in connections}


def _bag_source(path: Path, instruction: str | None, image_topics: tuple[str, ...],
                instruction_topic: str | None) -> FrameSource:
    """Image/CompressedImage messages of a bag in recording order, with the instruction in force."""
    connections, topics = bag_topics(path)
    image_topics = _choose_image_topics(topics, image_topics)
    instruction_topic = choose_instruction_topic(topics, instruction_topic)
    total = sum(c.msgcount for c in connections if c.topic in image_topics)

    def read() -> Iterator[Frame]:
        with open_bag(path) as reader:
            wanted = [c for c in reader.connections if c.topic in image_topics or c.topic == instruction_topic]
            current, index = instruction, 0
            for conn, stamp_ns, raw in reader.messages(connections=wanted):
                if conn.topic == instruction_topic:
                    # a String that cannot be read leaves no valid instruction: later frames abstain
                    current = instruction_text(reader, raw, conn.msgtype)
                    continue
                rgb, error = decoded(lambda: decode_message(reader.deserialize(raw, conn.msgtype), conn.msgtype))
                yield Frame(index, (stamp_ns - reader.start_time) / 1e9, rgb, current,
                            f"{conn.topic}@{stamp_ns}", error)
                index += 1

    return FrameSource("bag", path, total, read, instruction_topic)


def image_topics_of(topics: dict[str, str]) -> list[str]:
    """The bag's Image and CompressedImage topics, sorted."""
    return sorted(t for t, kind in topics.items() if kind in (IMAGE_MSG, COMPRESSED_MSG))


def _choose_image_topics(topics: dict[str, str], wanted: tuple[str, ...]) -> tuple[str, ...]:
    """The requested image topics (checked), or the bag's only image topic."""
    available = image_topics_of(topics)
    for topic in wanted:
        if topics.get(topic) not in (IMAGE_MSG, COMPRESSED_MSG):
            raise ValueError(f"image_topics: {topic!r} is not an Image or CompressedImage topic of the bag "
                             f"(image topics: {available})")
    if wanted:
        return wanted
    if not available:
        raise ValueError(f"image_topics: the bag has no Image or CompressedImage topic (topics: {sorted(topics)})")
    if len(available) > 1:
        raise ValueError(f"image_topics: the bag has {len(available)} image topics {available}; name the ones "
                         "to evaluate (--image-topic)")
    return tuple(available)


def choose_instruction_topic(topics: dict[str, str], wanted: str | None) -> str | None:
    """The requested String topic (checked), else the bag's only `.../instruction` String topic, else None."""
    if wanted is not None:
        if topics.get(wanted) != STRING_MSG:
            raise ValueError(f"instruction_topic: {wanted!r} is not a std_msgs/String topic of the bag "
                             f"(topics: {sorted(topics)})")
        return wanted
    named = [t for t, kind in topics.items() if kind == STRING_MSG and t.rstrip("/").split("/")[-1] == "instruction"]
    return named[0] if len(named) == 1 else None


def instruction_text(reader: Any, raw: bytes, msgtype: str) -> str | None:
    try:
        return str(reader.deserialize(raw, msgtype).data)
    except Exception:  # noqa: BLE001 -- any malformed message: no valid instruction
        return None


def decode_message(msg: Any, msgtype: str) -> np.ndarray:
    """A deserialised Image or CompressedImage as RGB, through the node's decoders."""
    if msgtype == IMAGE_MSG:
        return images.decode_raw(msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step, msg.data)
    return images.decode_compressed(msg.format, msg.data)


def decoded(decode: Callable[[], np.ndarray]) -> tuple[np.ndarray | None, str]:
    """(rgb, "") or (None, why): a frame that fails to decode is reported, never raised."""
    try:
        return decode(), ""
    except Exception as exc:  # noqa: BLE001 -- ImageError, OSError, rosbags' CDR errors alike
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0][:250]


# ----------------------------------------------------------------------------- several sources
def open_sources(specs: Sequence[tuple[str, Path]], *, instruction: str | None = None,
                 image_topics: Sequence[str] = (), instruction_topic: str | None = None,
                 views: Views | None = None) -> list[FrameSource]:
    """Every (kind, path) source opened in the order given; a `bag` path that is a folder but
    not a bag stands for every bag below it. Each is validated as `iter_frames` does, so a
    broken recording anywhere in a fleet is named before any frame is decided."""
    if not specs:
        raise ValueError("give at least one source: --images DIR, --video FILE or --bag PATH (each repeatable)")
    paths = [(kind, bag) for kind, path in specs for bag in (bag_paths(path) if kind == "bag" else [Path(path)])]
    return [iter_frames(path, kind=kind, instruction=instruction, image_topics=image_topics,
                        instruction_topic=instruction_topic, views=views) for kind, path in paths]


def bag_paths(path: str | Path) -> list[Path]:
    """[path] for a bag (file, or folder with metadata.yaml); for any other folder every bag below
    it, sorted (a bag folder's own files are not searched again)."""
    path = Path(path)
    if not path.is_dir() or (path / "metadata.yaml").is_file():
        return [path]
    bags = sorted(p for p in path.rglob("*") if _is_bag(p) and not _inside_bag(p, path))
    if not bags:
        raise ValueError(f"source {path}: neither a bag nor a folder holding bags (rosbag2 folders with "
                         f"metadata.yaml, {'/'.join(BAG_FILE_SUFFIXES)} files)")
    return bags


def _is_bag(path: Path) -> bool:
    if path.is_dir():
        return (path / "metadata.yaml").is_file()
    return path.suffix.lower() in BAG_FILE_SUFFIXES


def _inside_bag(path: Path, root: Path) -> bool:
    """True for a file or folder within a rosbag2 folder below `root` (its .db3/.mcap storage files)."""
    return any((parent / "metadata.yaml").is_file() for parent in path.parents if parent != root and
               parent.is_relative_to(root))

