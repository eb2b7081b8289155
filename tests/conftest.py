"""Shared fixtures: every ROS 2 process a test starts stays on this machine, in its own domain."""
import contextlib
import fcntl
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Discovery never leaves the machine, even for a test that forgets the fixture.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "osmesa")

DOMAIN_LOCKS = Path(tempfile.gettempdir()) / "rs_guard_ros_test_domains"
DOMAINS = 100  # ids 1..100: their DDS ports are valid on Linux, and 0 is everyone's default
CLAIM_TIMEOUT_S = 600.0  # more tests than ids at once on this machine: wait for one to finish


@contextlib.contextmanager
def claimed_domains(count: int = 1) -> Iterator[int]:
    """The first of `count` consecutive ROS_DOMAIN_IDs that no other test on this machine holds.

    An flock per id, held until the block ends: pytest-xdist workers, parallel runs and
    other checkouts never share a domain, so no test sees another's DDS traffic.
    """
    DOMAIN_LOCKS.mkdir(exist_ok=True)
    start, waited = random.randrange(DOMAINS), 0.0
    while waited < CLAIM_TIMEOUT_S:
        for i in range(DOMAINS - count + 1):
            first = 1 + (start + i) % (DOMAINS - count + 1)
            fds = _lock_all(range(first, first + count))
            if fds is None:
                continue
            try:
                yield first
            finally:
                for fd in fds:
                    os.close(fd)  # closing the descriptor releases its flock
            return
        time.sleep(0.2)
        waited += 0.2
    raise RuntimeError(f"no free ROS domain id in 1..{DOMAINS} within {CLAIM_TIMEOUT_S:.0f} s")


def _lock_all(ids: range) -> list[int] | None:
    """Non-blocking exclusive flocks on every id of `ids`; None (and nothing held) if any is taken."""
    fds: list[int] = []
    for domain in ids:
        fd = os.open(DOMAIN_LOCKS / f"{domain}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            for held in fds:
                os.close(held)
            return None
        fds.append(fd)
    return fds


# The longest test files (wall seconds with 3 workers, benchmarks/bench_test_suite.py), started
# first: with `--dist loadfile --no-loadscope-reorder` (the Makefile) xdist hands out files in
# collection order, and a long file handed out last would finish alone long after the rest
# (longest-processing-time-first scheduling). The other files keep pytest's order.
LONGEST_FIRST = ("test_scale.py", "test_readme.py", "test_cli.py", "test_sim_demo.py", "test_doctor.py",
                 "test_node.py", "test_install.py", "test_robot_configs.py", "test_sim_bridge.py")


def pytest_collection_modifyitems(config, items) -> None:
    """Collect the LONGEST_FIRST files first (a stable sort: each file's tests keep their order)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_report_header(config) -> str:
    """The ROS 2 distribution and rclpy the tests run on (`make test`: Kilted, `make test-jazzy`: Jazzy)."""
    from rs_guard_ros.ros_distro import format_ros, ros_environment

    return format_ros(ros_environment())


@pytest.fixture
def ros_env(monkeypatch) -> Iterator[dict]:
    """Environment for ROS 2 processes of one test: localhost discovery and a domain id of its own.

    Also applied to this process, so an in-process rclpy context joins the same domain.
    """
    with claimed_domains() as domain:
        monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        yield env


@pytest.fixture
def python() -> str:
    """The interpreter running the tests (the project's venv), for child processes."""
    return sys.executable
