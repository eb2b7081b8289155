"""Test-side helpers for the rs_guard node tests: start the node in its own process and
drive it from an in-process rclpy "probe" node that publishes camera frames, instructions
and /clock and records everything the gate publishes.

The caller's environment must come from the `ros_env` fixture (localhost discovery, a
fresh ROS_DOMAIN_ID); the probe joins the same domain because the fixture also sets it in
this process.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist, TwistStamped
from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterType, ParameterValue
from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from rs_guard_ros.images import encode_raw

ROOT = Path(__file__).resolve().parents[2]
PEERS = Path(__file__).resolve().parent
NODE_EXE = Path(sys.executable).parent / "rs_guard_node"
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)

# Small, fast settings for tests: fixed mode, n0 16 + 200 samples per decision (two model calls);
# 200 agreeing samples certify a radius of up to 0.456 at sigma 0.25, alpha 0.001.
FAST = {"smoothing": {"mode": "fixed", "n0": 16, "n_max": 200, "batch_size": 256},
        "model": {"device": "cpu"}, "node": {"startup_report": False}}
FAULT_MODEL = {"model": {"backend": "plugin", "path": "fault_policy:make_policy", "device": "cpu"}}


def merge(*trees: dict) -> dict:
    """Deep-merge nested parameter dicts, later ones winning."""
    out: dict = {}
    for tree in trees:
        for key, value in tree.items():
            out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def write_params(path: Path, params: dict, node_name: str = "rs_guard") -> Path:
    """A ROS 2 parameter file for `node_name`."""
    path.write_text(yaml.safe_dump({node_name: {"ros__parameters": params}}, sort_keys=False))
    return path


class NodeProcess:
    """`rs_guard_node` in its own process, its output captured to a log file."""

    def __init__(self, env: dict, tmp: Path, params: dict | None = None, param_files: tuple[Path, ...] = (),
                 ros_args: tuple[str, ...] = (), name: str = "node"):
        self.log_path = tmp / f"{name}.log"
        files = list(param_files)
        if params is not None:
            files.append(write_params(tmp / f"{name}.yaml", params))
        args = [str(NODE_EXE), "--ros-args"]
        for f in files:
            args += ["--params-file", str(f)]
        args += list(ros_args)
        env = dict(env, PYTHONPATH=os.pathsep.join(filter(None, [str(PEERS), env.get("PYTHONPATH", "")])))
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self, sig: int | None = None, timeout: float = 20.0) -> int:
        """Send `sig` (SIGINT by default) and wait; kill if it does not exit."""
        import signal

        if self.alive():
            self.proc.send_signal(sig or signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode


class Probe:
    """An rclpy node in the test process, spinning in a background thread."""

    def __init__(self, *, compressed: bool = False, stamped: bool = False, node_ns: str = "/rs_guard"):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("rs_guard_probe", context=self.context)
        self.lock = threading.Lock()
        self.commands: list[str] = []
        self.twists: list[tuple[float, float, float]] = []
        self.certificates: list[dict] = []
        self.certificate_bytes: list[int] = []  # the size of each record as published
        self.diagnostics: list[dict] = []
        n = self.node
        self.image_pub = n.create_publisher(CompressedImage if compressed else Image,
                                            "image/compressed" if compressed else "image", qos_profile_sensor_data)
        self.instruction_pub = n.create_publisher(String, "instruction", QoSProfile(depth=1))
        self.clock_pub = n.create_publisher(Clock, "/clock", 10)
        n.create_subscription(String, f"{node_ns}/command", self._on_command, RELIABLE)
        n.create_subscription(TwistStamped if stamped else Twist, "cmd_vel", self._on_twist, RELIABLE)
        n.create_subscription(String, f"{node_ns}/certificate", self._on_certificate, RELIABLE)
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, RELIABLE)
        self._set_params = n.create_client(SetParameters, f"{node_ns}/set_parameters")
        self._get_params = n.create_client(GetParameters, f"{node_ns}/get_parameters")
        self._describe_params = n.create_client(DescribeParameters, f"{node_ns}/describe_parameters")
        self._node_ns = node_ns
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(n)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # context shut down under us at close()
                return

    # -- recording --------------------------------------------------------------------------
    def _on_command(self, msg: String) -> None:
        with self.lock:
            self.commands.append(msg.data)

    def _on_twist(self, msg: Any) -> None:
        t = msg.twist if isinstance(msg, TwistStamped) else msg
        with self.lock:
            self.twists.append((t.linear.x, t.linear.y, t.angular.z))

    def _on_certificate(self, msg: String) -> None:
        with self.lock:
            self.certificates.append(json.loads(msg.data))
            self.certificate_bytes.append(len(msg.data.encode()))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if "certified command gate" in status.name:
                entry = {kv.key: kv.value for kv in status.values}
                entry["level"] = status.level[0] if isinstance(status.level, bytes) else int(status.level)
                entry["message"] = status.message
                with self.lock:
                    self.diagnostics.append(entry)

    def snapshot(self) -> tuple[list[str], list[tuple], list[dict], list[dict]]:
        with self.lock:
            return list(self.commands), list(self.twists), list(self.certificates), list(self.diagnostics)

    def certs(self, source: str | None = None) -> list[dict]:
        with self.lock:
            return [c for c in self.certificates if source is None or c.get("source") == source]

    def clear(self) -> None:
        with self.lock:
            for log in (self.commands, self.twists, self.certificates, self.certificate_bytes, self.diagnostics):
                log.clear()

    # -- driving ----------------------------------------------------------------------------
    def wait_for(self, predicate: Callable[[], Any], timeout: float = 30.0, period: float = 0.02,
                 each: Callable[[], None] | None = None) -> Any:
        """Poll `predicate` (calling `each` between polls, e.g. to keep a camera going) until it
        returns something truthy; that value, or None on timeout. Progress only, never a timing claim."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = predicate()
            if value:
                return value
            if each is not None:
                each()
            time.sleep(period)
        return None

    def wait_connected(self, timeout: float = 30.0) -> bool:
        """Until the node's instruction and image subscriptions and its outputs are matched."""
        return bool(self.wait_for(lambda: self.instruction_pub.get_subscription_count() > 0
                                  and self.image_pub.get_subscription_count() > 0
                                  and self.node.count_publishers(f"{self._node_ns}/certificate") > 0, timeout))

    def wait_ready(self, timeout: float = 90.0) -> bool:
        """Until diagnostics report the gate active (model loaded)."""
        return bool(self.wait_for(lambda: any(d.get("phase") == "active" for d in self.snapshot()[3]), timeout))

    def say(self, text: str) -> None:
        self.instruction_pub.publish(String(data=text))

    def now(self) -> float:
        """The probe's clock in seconds: ROS time on this machine, the same clock as a node's
        without use_sim_time (so a frame stamped with it is fresh)."""
        return self.node.get_clock().now().nanoseconds * 1e-9

    def image_msg(self, rgb: np.ndarray, stamp_s: float = 0.0, frame_id: str = "camera") -> Image:
        fields = encode_raw(rgb)
        msg = Image(height=fields.height, width=fields.width, encoding=fields.encoding, step=fields.step)
        msg.data = fields.data
        msg.header.frame_id = frame_id
        msg.header.stamp.sec, msg.header.stamp.nanosec = _stamp(stamp_s)
        return msg

    def send_frame(self, rgb: np.ndarray, stamp_s: float = 0.0, frame_id: str = "camera") -> float:
        """Publish a frame stamped `stamp_s` (0 = unstamped); the stamp as the node reads it."""
        msg = self.image_msg(rgb, stamp_s, frame_id)
        self.image_pub.publish(msg)
        return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9

    def send(self, msg: Any) -> None:
        self.image_pub.publish(msg)

    def set_clock(self, t: float) -> None:
        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = _stamp(t)
        self.clock_pub.publish(msg)

    def set_parameters(self, **values: Any) -> list:
        """Call ~/set_parameters with {dotted name (use __ for .): value}; the SetParametersResults."""
        request = SetParameters.Request(parameters=[_param_msg(k.replace("__", "."), v) for k, v in values.items()])
        return list(self.call(self._set_params, request).results)

    def call(self, client: Any, request: Any, attempts: int = 5) -> Any:
        """Call a (idempotent) parameter service, re-sending the request if no answer comes.

        Fast DDS can drop a response sent before the server has matched the client's
        response reader ("failed to send response (timeout)"), although wait_for_service
        succeeded; a re-sent request goes through once discovery has completed.
        """
        if not client.wait_for_service(timeout_sec=30.0):
            raise TimeoutError(f"{client.srv_name} not available")
        for _ in range(attempts):
            future = client.call_async(request)
            if self.wait_for(future.done, timeout=6.0):
                return future.result()
            client.remove_pending_request(future)
        raise TimeoutError(f"{client.srv_name} did not answer {attempts} requests")

    def get_parameters(self, *names: str) -> list:
        """Call ~/get_parameters; the rcl_interfaces/ParameterValue of each name."""
        return list(self.call(self._get_params, GetParameters.Request(names=list(names))).values)

    def describe_parameters(self, *names: str) -> list:
        """Call ~/describe_parameters; the rcl_interfaces/ParameterDescriptor of each name."""
        return list(self.call(self._describe_params, DescribeParameters.Request(names=list(names))).descriptors)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0) if hasattr(self.executor, "shutdown") else None
        self.node.destroy_node()
        if self.context.ok():
            rclpy.shutdown(context=self.context)
        self._thread.join(timeout=5)


def _stamp(t: float) -> tuple[int, int]:
    """builtin_interfaces/Time (sec, nanosec) of `t` seconds."""
    ns = int(round(t * 1e9))
    return ns // 10**9, ns % 10**9


def _param_msg(name: str, value: Any) -> ParameterMsg:
    """An rcl_interfaces/Parameter message for a bool, int, float or str value."""
    v = ParameterValue()
    if isinstance(value, bool):
        v.type, v.bool_value = ParameterType.PARAMETER_BOOL, value
    elif isinstance(value, int):
        v.type, v.integer_value = ParameterType.PARAMETER_INTEGER, value
    elif isinstance(value, float):
        v.type, v.double_value = ParameterType.PARAMETER_DOUBLE, value
    else:
        v.type, v.string_value = ParameterType.PARAMETER_STRING, str(value)
    return ParameterMsg(name=name, value=v)


def rgb_frame(seed: int = 0, shape: tuple[int, int] = (96, 128)) -> np.ndarray:
    """A deterministic RGB uint8 test frame (content irrelevant to the fault injector)."""
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


class Repeater:
    """Calls `send(i)` every `period` s in a thread (a camera, an instruction source, /clock)."""

    def __init__(self, send: Callable[[int], None], period: float = 0.05):
        self._send, self._period = send, period
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.count = 0

    def start(self) -> "Repeater":
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._send(self.count)
            self.count += 1
            self._stop.wait(self._period)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class SimClock(Repeater):
    """A simulation clock for a node under use_sim_time: publishes /clock every `period` s of
    wall time, advancing `step` s each time while `running` (set it False to pause time,
    or move `t` by hand). Calling it reads the current simulated time."""

    def __init__(self, probe: Probe, t0: float = 1000.0, step: float = 0.01, period: float = 0.01):
        self.t, self.running = t0, True

        def tick(_: int) -> None:
            if self.running:
                self.t += step
            probe.set_clock(self.t)

        super().__init__(tick, period)

    def __call__(self) -> float:
        return self.t


def camera(probe: Probe, frame: np.ndarray | None = None, period: float = 0.05,
           stamp: Callable[[], float] | None = None) -> Repeater:
    """A camera publishing `frame` (not started), each stamped `stamp()`: by default the
    probe's clock, i.e. fresh for a node on the same machine without use_sim_time."""
    image = rgb_frame() if frame is None else frame
    clock = probe.now if stamp is None else stamp
    return Repeater(lambda i: probe.send_frame(image, clock()), period)


def calls_file(tmp: Path) -> Path:
    """Where the fault injector (FAULT_POLICY_CALLS in the node's environment) notes each
    model call as it starts, so a test can tell that a decision is in flight."""
    return tmp / "model_calls.txt"


def model_calls(tmp: Path) -> int:
    """How many model calls the fault injector has started."""
    path = calls_file(tmp)
    return len(path.read_text().splitlines()) if path.exists() else 0


def model_call_words(tmp: Path) -> list[str]:
    """The first word of the instruction of each model call the fault injector has started, in order."""
    path = calls_file(tmp)
    lines = path.read_text().splitlines() if path.exists() else []
    return [line.partition(" ")[2] for line in lines]


@contextlib.contextmanager
def running_gate(env: dict, tmp: Path, params: dict | None, *, param_files: tuple[Path, ...] = (),
                 ros_args: tuple[str, ...] = (), **probe_options: Any) -> Iterator[tuple[NodeProcess, Probe]]:
    """The node in its own process plus a probe; both torn down (node by SIGINT) afterwards.
    The node's log is printed, so pytest shows it when a test fails."""
    node = NodeProcess(env, tmp, params, param_files, ros_args)
    probe = Probe(**probe_options)
    try:
        yield node, probe
    finally:
        probe.close()
        node.stop()
        print(node.log()[-6000:])
