"""model.path for the backends that load a model directory (transformers, lerobot).

Nothing is downloaded at run time: a robot may have no network, and a model that changes
under a running gate would void its certificates. So a path that is not a local directory
is refused at load time with one line that says what to run, and where: a string shaped
like a Hugging Face hub id ("org/name") gets the exact `hf download` command (`hf` is the
CLI huggingface_hub ships; it replaced `huggingface-cli`).
"""
from __future__ import annotations

import re
from pathlib import Path

MODELS_ROOT = Path("/opt/models")  # where the download commands we suggest put models
PACKAGE_URI = "package://rs_guard_ros/"  # files shipped inside this package, wherever it is installed
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


def download_command(hub_id: str, local_dir: str | Path) -> str:
    """The command that fetches `hub_id` into `local_dir` (run where there is network)."""
    return f"hf download {hub_id} --local-dir {local_dir}"


def resolve(path: str | Path) -> Path:
    """A configured path as a Path; `package://rs_guard_ros/...` (as in a URDF) names a file
    shipped inside this package, found wherever pip or colcon installed it."""
    text = str(path)
    if text.startswith(PACKAGE_URI):
        return Path(__file__).resolve().parents[1] / text[len(PACKAGE_URI):]
    return Path(path)


def local_model_dir(path: str | Path) -> Path:
    """`path` as a Path if it is an existing directory; else ValueError, one line, saying how
    to get the model there (a hub id gets the exact download command)."""
    root = resolve(path)
    if root.is_dir():
        return root
    text = str(path)
    if root.exists():
        raise ValueError(f"model.path {text!r} is a file, not a model directory")
    if _HUB_ID.fullmatch(text):
        local = MODELS_ROOT / text.split("/")[1]
        raise ValueError(f"model.path {text!r} looks like a Hugging Face hub id, but nothing is downloaded at run "
                         f"time: run `{download_command(text, local)}` on a machine with network and set "
                         f"model.path: {local}")
    raise ValueError(f"model.path {text!r} does not exist on this machine, and nothing is downloaded at run time: "
                     f"fetch the model where there is network (`{download_command('<org>/<name>', text)}`) and "
                     f"copy that directory to {text}")
