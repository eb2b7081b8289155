"""`rs-guard doctor` names the ROS 2 distribution and the rclpy it runs on (ros_distro.ros_environment),
checked against sources it does not read: rclpy's package.xml found through the ament index,
and the rclpy release series of each distribution."""
import json
import os
import subprocess
import sys
import sysconfig
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path

import pytest

from rs_guard_ros import ros_distro

ROOT = Path(__file__).resolve().parents[1]
# rclpy's major version per distribution (ros2/rclpy's release branches): the test's own oracle.
RCLPY_MAJOR = {"3": "humble", "4": "iron", "7": "jazzy", "9": "kilted"}


def test_without_ros_distro_the_distribution_comes_from_the_installed_wheels(monkeypatch):
    from ament_index_python.packages import get_package_share_directory

    monkeypatch.delenv("ROS_DISTRO", raising=False)
    # a sourced ROS 2 install sets the ament prefix; the PyPI wheels install into this venv's prefix
    monkeypatch.setenv("AMENT_PREFIX_PATH", os.environ.get("AMENT_PREFIX_PATH") or sys.prefix)
    ros = ros_distro.ros_environment()
    package_xml = Path(get_package_share_directory("rclpy")) / "package.xml"
    assert ros["rclpy"] == ET.parse(package_xml).getroot().findtext("version")
    assert ros["distro"] == RCLPY_MAJOR[ros["rclpy"].split(".")[0]]
    assert ros["distro_from"] == f"ros-{ros['distro']}-rclpy"
    assert ros["rclpy_wheel"] == metadata.version("ros-rclpy")
    line = ros_distro.format_ros(ros)
    assert line.startswith(f"ROS 2: {ros['distro']} (from ros-{ros['distro']}-rclpy), rclpy {ros['rclpy']}")
    assert (f"PyPI wheel ros-rclpy {ros['rclpy_wheel']}" in line) == (ros["rclpy_wheel"] != ros["rclpy"])


def test_ros_distro_names_the_distribution_when_set(monkeypatch):
    monkeypatch.setenv("ROS_DISTRO", "humble")
    ros = ros_distro.ros_environment()
    assert (ros["distro"], ros["distro_from"]) == ("humble", "ROS_DISTRO")
    assert ros["rclpy"] == metadata.version("rclpy")


def test_without_rclpy_the_report_says_not_installed(tmp_path):
    """A site holding everything this venv has except the rclpy package (symlinks), run with -S."""
    site = tmp_path / "site"
    site.mkdir()
    purelib = Path(sysconfig.get_paths()["purelib"])
    for entry in purelib.iterdir():
        if entry.name != "rclpy":
            (site / entry.name).symlink_to(entry)
    code = (f"import sys; sys.path[:0] = [{str(site)!r}, {str(ROOT)!r}]\n"
            "import json; from rs_guard_ros import ros_distro; r = ros_distro.ros_environment()\n"
            "print(json.dumps([r, ros_distro.format_ros(r)]))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("ROS_DISTRO", "PYTHONPATH")}
    done = subprocess.run([sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    ros, line = json.loads(done.stdout)
    assert ros == {"distro": "not installed", "distro_from": None, "rclpy": None, "rclpy_wheel": None}
    assert line == "ROS 2: not installed (rclpy is not importable)"


@pytest.mark.slow
def test_doctor_reports_the_ros_line_in_json_and_text(monkeypatch):
    """The whole command on the shipped demo VLA (one repeat, small batches, no deadline and a
    minute's frame age and TTL: speed is not the point, and every command keeps up, so it exits 0)."""
    from rs_guard_ros.cli import format_doctor

    env = {k: v for k, v in os.environ.items() if k != "ROS_DISTRO"}
    monkeypatch.delenv("ROS_DISTRO", raising=False)
    done = subprocess.run([sys.executable, "-m", "rs_guard_ros.cli", "doctor", "--json", "--repeats", "1",
                           "--model.cpu_threads", "1", "--smoothing.batch_size", "32", "--no-progress",
                           "--node.decision_deadline", "0", "--node.max_frame_age", "60", "--node.command_ttl", "60"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["ros"] == ros_distro.ros_environment()
    assert ros_distro.format_ros(result["ros"]) in format_doctor(result).splitlines()  # what the text output prints
