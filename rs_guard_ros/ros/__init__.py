"""The gate's ROS 2 adapter: the lifecycle node (node.py), its publishers and records (io.py),
the decision thread (worker.py), its parameters (params.py) and the ROS-free rules they
share (gate_state.py). Only this subpackage and sim/ import rclpy; importing the package
itself imports nothing, so gate_state stays usable (and tested) without ROS."""
