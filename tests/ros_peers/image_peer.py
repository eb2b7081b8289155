"""A minimal rclpy peer for tests: `talker` publishes one known Image repeatedly,
`listener` prints the checksum of the first Image it receives and exits."""
import hashlib
import sys

import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

WIDTH, HEIGHT = 32, 24


def known_image() -> Image:
    msg = Image(height=HEIGHT, width=WIDTH, encoding="rgb8", step=WIDTH * 3)
    msg.data = bytes((i * 7) % 256 for i in range(WIDTH * HEIGHT * 3))
    return msg


def talker(node) -> None:
    pub = node.create_publisher(Image, "image", qos_profile_sensor_data)
    node.create_timer(0.05, lambda: pub.publish(known_image()))
    rclpy.spin(node)


def listener(node) -> None:
    got = []
    node.create_subscription(Image, "image", got.append, qos_profile_sensor_data)
    while rclpy.ok() and not got:
        rclpy.spin_once(node, timeout_sec=0.1)
    msg = got[0]
    print(msg.width, msg.height, msg.encoding, hashlib.sha256(bytes(msg.data)).hexdigest(), flush=True)


if __name__ == "__main__":
    rclpy.init()
    role = sys.argv[1]
    try:
        {"talker": talker, "listener": listener}[role](rclpy.create_node(f"test_{role}"))
    except KeyboardInterrupt:
        pass
    finally:
        if rclpy.ok():
            rclpy.shutdown()
