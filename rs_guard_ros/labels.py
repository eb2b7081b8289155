"""Ground truth for `rs-guard eval`: a CSV of the correct command (and optionally the
instruction) per frame, parsed as outside input -- every problem is a ValueError naming the
file and the line.

A labels file (`load_labels`) is a CSV with a header naming, in any order, one key
column, a `command` column (a configured command, or UNKNOWN: nothing may be certified
here) and optionally an `instruction` column (overrides the fixed instruction for that
frame). examples/frames.csv (image,instruction,command) is such a file. Key columns:

    image       folder frames, by file name
    index       any source, by 0-based frame index (frames that fail to decode count)
    timestamp   video/bag, change points: a frame takes the row with the latest timestamp
                <= its time (seconds since the recording started); frames before the first
                row have no ground truth

Other columns are ignored. With several sources the keys are each source's own (file name,
index and time within that recording).
"""
from __future__ import annotations

import bisect
import csv
import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Iterable

from .certify import UNKNOWN_NAME

if TYPE_CHECKING:
    from .recordings import Frame

LABEL_KEYS = ("image", "index", "timestamp")
UNKNOWN = UNKNOWN_NAME  # ground truth "no command is right here" (e.g. pure noise): certifying anything is wrong


@dataclass(frozen=True)
class Labels:
    """Ground truth (and optional per-frame instructions) keyed by image name, index or change time."""

    key: str  # one of LABEL_KEYS
    commands: dict[Any, str]
    instructions: dict[Any, str]
    path: str = ""
    times: tuple[float, ...] = ()  # the sorted change points (key "timestamp")

    def _key_for(self, frame: Frame) -> Any:
        if self.key == "image":
            return frame.name
        if self.key == "index":
            return frame.index
        if frame.time_s is None:
            return None
        at = bisect.bisect_right(self.times, frame.time_s) - 1
        return self.times[at] if at >= 0 else None

    def command_for(self, frame: Frame) -> str | None:
        """The correct command for this frame, or None where the file says nothing."""
        return self.commands.get(self._key_for(frame))

    def instruction_for(self, frame: Frame) -> str | None:
        return self.instructions.get(self._key_for(frame))


def load_labels(path: str | Path, commands: Iterable[str]) -> Labels:
    """Read a ground-truth CSV (see the module docstring); ValueError names the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"labels {path}: {exc}") from exc
    return parse_labels(text, commands, str(path))


def parse_labels(text: str, commands: Iterable[str], where: str = "labels") -> Labels:
    """Parse ground-truth CSV text; every problem is a ValueError naming `where` and the line."""
    try:
        rows = list(csv.reader(text.splitlines()))
    except csv.Error as exc:  # e.g. a NUL byte
        raise ValueError(f"{where}: not a CSV file ({exc})") from None
    return _labels_from_rows(rows, set(commands), where)


def _labels_from_rows(rows: list[list[str]], valid: set[str], where: str) -> Labels:
    """Labels from CSV rows (header first), checked line by line; columns are found by name."""
    reader = iter(rows)
    header = [h.strip() for h in next(reader, [])]
    keys = [k for k in LABEL_KEYS if k in header]
    if len(keys) != 1 or "command" not in header or len(set(header)) != len(header):
        raise ValueError(f"{where}: the header needs one of {'/'.join(LABEL_KEYS)}, a command column and "
                         f"optionally an instruction column; got {','.join(header)!r}")
    key_kind = keys[0]
    key_at, command_at = header.index(key_kind), header.index("command")
    instruction_at = header.index("instruction") if "instruction" in header else None
    allowed = valid | {UNKNOWN}
    out_commands, out_instructions = {}, {}
    for line, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise ValueError(f"{where} line {line}: expected {len(header)} fields, got {len(row)}")
        key = _label_key(key_kind, row[key_at].strip(), f"{where} line {line}")
        command = row[command_at].strip()
        if command not in allowed:
            raise ValueError(f"{where} line {line}: command {command!r} is not one of {sorted(allowed)}")
        if key in out_commands:
            raise ValueError(f"{where} line {line}: {key_kind} {row[key_at].strip()!r} appears twice")
        out_commands[key] = command
        if instruction_at is not None and row[instruction_at].strip():
            out_instructions[key] = row[instruction_at].strip()
    if not out_commands:
        raise ValueError(f"{where}: no label rows")
    times = tuple(sorted(out_commands)) if key_kind == "timestamp" else ()
    return Labels(key_kind, out_commands, out_instructions, where, times)


def _label_key(kind: str, cell: str, where: str) -> Any:
    """The matching key of one row: a normalised file name, a frame index or a finite time."""
    if kind == "image":
        if not cell:
            raise ValueError(f"{where}: empty image name")
        return PurePosixPath(cell.replace("\\", "/")).name  # folder frames are named by file name
    try:
        value = int(cell) if kind == "index" else float(cell)
    except ValueError:
        raise ValueError(f"{where}: {kind} {cell!r} is not a number") from None
    if (kind == "index" and value < 0) or (kind == "timestamp" and not math.isfinite(value)):
        raise ValueError(f"{where}: {kind} {cell!r} out of range")
    return value
