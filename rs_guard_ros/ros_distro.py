"""Which ROS 2 distribution and rclpy this interpreter would run the node on, found without
importing rclpy (`rs-guard doctor` prints it; the test suite's header and `make test-jazzy`
check it).
"""
from __future__ import annotations

import importlib.util
import os
import re
from importlib import metadata
from typing import Mapping, Optional

NOT_INSTALLED = "not installed"
# PyPI's ROS 2 wheels: ros-rclpy is rclpy itself, ros-<distro>-rclpy the meta-package that pins it per distribution.
_DISTRO_META_PACKAGE = re.compile(r"ros-([a-z]+)-rclpy")


def ros_environment(environ: Mapping[str, str] = os.environ) -> dict[str, Optional[str]]:
    """The ROS 2 distribution and the rclpy this interpreter would run the node on, found without
    importing rclpy. distro: ROS_DISTRO (set by sourcing a ROS 2 install), else the name of an
    installed PyPI meta-package ros-<distro>-rclpy, else "unknown"; "not installed" when rclpy is
    not importable. rclpy: its own package version (apt and the PyPI wheels both install that
    metadata); rclpy_wheel: the PyPI wheel's version, which can differ (ros-rclpy 7.1.6 is rclpy 7.1.5)."""
    if importlib.util.find_spec("rclpy") is None:
        return {"distro": NOT_INSTALLED, "distro_from": None, "rclpy": None, "rclpy_wheel": None}
    distro, source = environ.get("ROS_DISTRO") or None, "ROS_DISTRO"
    if distro is None:
        names = {re.sub(r"[-_.]+", "-", d.metadata["Name"] or "").lower() for d in metadata.distributions()}
        found = sorted(m.group(1) for name in names if (m := _DISTRO_META_PACKAGE.fullmatch(name)))
        distro, source = (found[0], f"ros-{found[0]}-rclpy") if len(found) == 1 else ("unknown", None)
    return {"distro": distro, "distro_from": source, "rclpy": _installed_version("rclpy"),
            "rclpy_wheel": _installed_version("ros-rclpy")}


def _installed_version(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def format_ros(ros: Mapping[str, Optional[str]]) -> str:
    """One line: "ROS 2: jazzy (from ros-jazzy-rclpy), rclpy 7.1.5 (PyPI wheel ros-rclpy 7.1.6)"."""
    if ros["distro"] == NOT_INSTALLED:
        return f"ROS 2: {NOT_INSTALLED} (rclpy is not importable)"
    line = f"ROS 2: {ros['distro']}" + (f" (from {ros['distro_from']})" if ros["distro_from"] else "")
    line += f", rclpy {ros['rclpy'] or 'of unknown version'}"
    if ros["rclpy_wheel"] and ros["rclpy_wheel"] != ros["rclpy"]:
        line += f" (PyPI wheel ros-rclpy {ros['rclpy_wheel']})"
    return line
