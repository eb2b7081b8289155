"""Shared fixtures: every ROS 2 process a test starts stays on this machine, in its own domain."""
import itertools
import os
import sys

import pytest

# Discovery never leaves the machine, even for a test that forgets the fixture.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "osmesa")

_domains = itertools.count()


def next_domain_id() -> int:
    """A ROS_DOMAIN_ID in 1..100 that differs between tests (and, likely, between runs)."""
    return 1 + (os.getpid() * 7 + next(_domains)) % 100


def pytest_report_header(config) -> str:
    """The ROS 2 distribution and rclpy the tests run on (`make test`: Kilted, `make test-jazzy`: Jazzy)."""
    from rs_guard_ros.doctor import format_ros, ros_environment

    return format_ros(ros_environment())


@pytest.fixture
def ros_env(monkeypatch) -> dict:
    """Environment for ROS 2 processes of one test: localhost discovery and a fresh domain id.

    Also applied to this process, so an in-process rclpy context joins the same domain.
    """
    domain = str(next_domain_id())
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("ROS_DOMAIN_ID", domain)
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def python() -> str:
    """The interpreter running the tests (the project's venv), for child processes."""
    return sys.executable
