"""What the command line says about the model's inputs: one image (or bag topic) per camera,
and the robot's joint state.

`per_camera(["front=a.png", "rear=b.png"], ("front", "rear"), "--image")` gives
{"front": "a.png", "rear": "b.png"}; with one camera a plain `--image a.png` names its
image. A value is CAMERA=VALUE when the text before its first "=" is a configured camera;
any other value is the whole of the one camera's value.

`joint_state(text, joint_names)` reads `NAME=VALUE,NAME=VALUE,...` or a JSON file holding
{"NAME": VALUE, ...}; the joints of state.joint_names, in that order, are checked and
ordered by the node's own rule (ros/sync.py `state_vector`: every joint present, every
position a finite number; other joints are ignored). Every problem is a one-line
ValueError naming the flag and the camera or joint.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .ros.sync import joint_sample, state_vector


def per_camera(values: Sequence[str], cameras: Sequence[str], flag: str, what: str = "VALUE",
               require_all: bool = True) -> dict[str, str]:
    """{camera: value} from repeated `flag` values, one per camera of `cameras` (cameras.names),
    every camera's unless not `require_all`; `what` names the value in messages (PATH, TOPIC)."""
    cameras = tuple(cameras)
    out: dict[str, str] = {}
    for text in values:
        name, sep, rest = text.partition("=")
        if sep and name in cameras:
            camera, value = name, rest
        elif len(cameras) == 1:
            camera, value = cameras[0], text
        elif sep:
            raise ValueError(f"{flag} {_one_line(text)}: no camera {name!r} (cameras.names: {', '.join(cameras)})")
        else:
            raise ValueError(f"{flag} {_one_line(text)}: {len(cameras)} cameras ({', '.join(cameras)}): give one "
                             f"{flag} CAMERA={what} each")
        if not value:
            raise ValueError(f"{flag} {_one_line(text)}: camera {camera!r} has an empty value")
        if camera in out:
            raise ValueError(f"{flag}: camera {camera!r} given twice")
        out[camera] = value
    missing = [c for c in cameras if c not in out]
    if missing and require_all:
        raise ValueError(f"{flag}: nothing for camera '{missing[0]}' (cameras.names: {', '.join(cameras)}; give "
                         f"{flag} {missing[0]}={what})")
    return out


def joint_state(text: str, joint_names: Sequence[str], flag: str = "--state") -> np.ndarray:
    """The positions of `joint_names`, in that order, from `NAME=VALUE,...` or a JSON file."""
    pairs = _json_pairs(Path(text), flag) if text.endswith(".json") else _text_pairs(text, flag)
    names = [name for name, _ in pairs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{flag}: joint {twice[0]!r} given twice")
    vector, why = state_vector(0.0, joint_sample(0.0, 0.0, names, [v for _, v in pairs]), joint_names, math.inf,
                               "reading it")
    if why:
        raise ValueError(f"{flag}: {why} (state.joint_names: {', '.join(joint_names)})")
    return vector


def configured_state(text: str | None, cfg: Any, required: bool, flag: str = "--state") -> np.ndarray | None:
    """The joint state `flag` gives for `cfg` (a Config), or None: given where its model reads
    none (state.topic empty), or missing where `required`, is a ValueError that says which."""
    if not cfg.state.topic:
        if text is not None:
            raise ValueError(f"{flag}: this configuration's model reads no joint state (state.topic is empty)")
        return None
    if text is None:
        if required:
            raise ValueError(f"{flag} is required: the model reads the joint state (state.topic {cfg.state.topic}; "
                             f"joints {', '.join(cfg.state.joint_names)})")
        return None
    return joint_state(text, cfg.state.joint_names, flag)


def _text_pairs(text: str, flag: str) -> list[tuple[str, float]]:
    pairs = []
    for item in text.split(","):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"{flag} {text!r}: {item.strip()!r} is not NAME=VALUE (or give a .json file)")
        pairs.append((name, _number(value.strip(), f"{flag}: joint {name!r}")))
    return pairs


def _json_pairs(path: Path, flag: str) -> list[tuple[str, float]]:
    where = f"{flag} {_one_line(str(path))}"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{where}: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object {{\"joint\": position, ...}}")
    return [(str(name), _number(value, f"{where}: joint {str(name)!r}")) for name, value in data.items()]


def _one_line(text: str) -> str:
    """`text` as given, or its repr where a line break or another unprintable character would
    break the one-line error message it goes into."""
    return text if text.isprintable() else repr(text)


def _number(value: object, where: str) -> float:
    """A finite float; bools and other types are refused (ValueError naming `where`)."""
    if isinstance(value, bool):
        raise ValueError(f"{where}: {value!r} is not a number")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{where}: {value!r} is not a finite number")
    return number


__all__ = ["per_camera", "joint_state", "configured_state"]
