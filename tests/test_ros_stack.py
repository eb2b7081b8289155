"""The real ROS 2 stack (rclpy + Fast DDS) installs and carries images between processes."""
import hashlib
import subprocess
from pathlib import Path

import pytest

PEER = Path(__file__).parent / "ros_peers" / "image_peer.py"


@pytest.mark.ros
def test_image_passes_between_two_rclpy_processes_on_localhost(ros_env, python):
    talker = subprocess.Popen([python, str(PEER), "talker"], env=ros_env)
    try:
        out = subprocess.run([python, str(PEER), "listener"], env=ros_env, capture_output=True, text=True,
                             timeout=60, check=True).stdout.split()
    finally:
        talker.terminate()
        talker.wait(timeout=10)
    expected = hashlib.sha256(bytes((i * 7) % 256 for i in range(32 * 24 * 3))).hexdigest()
    assert out == ["32", "24", "rgb8", expected]
    assert ros_env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
