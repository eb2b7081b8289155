"""Where ROS 2 distributions differ, each branch of the node is run on the installed rclpy
(`make test`: Kilted; `make test-jazzy`: Jazzy). docs/install.md lists the differences.

- A lifecycle transition the state machine refuses raises RCLError in Humble's and Jazzy's
  rclpy and returns ERROR from Kilted's on (rclpy 8.0): the node's own bring-up counts both
  as a failure; a refused request over ~/change_state leaves the node running in its state.
- Run-time parameters are applied in a post-set callback where rclpy has one (Iron on), else
  at the end of the on-set callback (Humble): here the Humble path is forced by leaving the
  post-set callback out, as rs_guard_ros.ros.node does where rclpy lacks it.
"""
import contextlib
import threading
from typing import Iterator

import pytest
import rclpy
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

from ros_peers.gate_probe import FAST, FAULT_MODEL, PEERS, camera, merge, running_gate, write_params
from rs_guard_ros.ros import node as node_module

PARAMS = merge(FAST, FAULT_MODEL, {"node": {"diagnostics_period": 0.2}})
TASK = "go to the red box"
# What each rclpy logs for a transition its state machine refuses, in the node's log: Kilted's
# LifecycleNode itself; Humble's and Jazzy's raise, and the node's spin loop logs the RCLError.
REFUSED_TRANSITION = ("Unable to start transition", "Failed to trigger lifecycle state machine transition")


@contextlib.contextmanager
def node_in_process(tmp_path, monkeypatch, params: dict) -> Iterator[node_module.RsGuardNode]:
    """An RsGuardNode in this process (own rclpy context), given `params` as a parameter file."""
    monkeypatch.syspath_prepend(str(PEERS))  # the fault injector's module
    argv = ["rs_guard_node", "--ros-args", "--params-file", str(write_params(tmp_path / "params.yaml", params))]
    context = rclpy.Context()
    rclpy.init(context=context, args=argv)
    node = node_module.RsGuardNode(argv, context=context)
    try:
        yield node
    finally:
        node.close()
        node.destroy_node()
        rclpy.shutdown(context=context)


# ---------------------------------------------------------------------------
# Lifecycle: a refused transition raises (Humble, Jazzy) or returns ERROR (Kilted)
# ---------------------------------------------------------------------------

@pytest.mark.ros
def test_an_unmanaged_bring_up_the_state_machine_refuses_fails_the_node(ros_env, tmp_path, monkeypatch):
    """Configured from outside first, the node's own configure is refused: Jazzy's rclpy raises
    in the bring-up thread, Kilted's returns ERROR; either way the node is marked failed (so
    rs_guard_node exits 1 after publishing the abstain action) instead of idling unnoticed."""
    with node_in_process(tmp_path, monkeypatch, PARAMS) as node:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        node.start_unmanaged()  # returns once the bring-up thread has started; it may have ended already
        for bring_up in [t for t in threading.enumerate() if t.name == "rs_guard_load"]:
            bring_up.join()
        assert node.failed


def _change_state(probe, transition_id: int):
    """Send one ~/change_state request; its future (not re-sent: a transition is not idempotent)."""
    client = probe.node.create_client(ChangeState, "/rs_guard/change_state")
    assert client.wait_for_service(timeout_sec=30)
    return client.call_async(ChangeState.Request(transition=Transition(id=transition_id)))


def _state(probe) -> str:
    return probe.call(probe.node.create_client(GetState, "/rs_guard/get_state"), GetState.Request()).current_state.label


@pytest.mark.ros
def test_a_refused_lifecycle_request_leaves_the_managed_node_running_in_its_state(ros_env, tmp_path):
    """ACTIVATE while unconfigured: Kilted answers success=false; Jazzy's rclpy raises inside the
    service (no answer) and the node's spin loop logs it. Either way the node keeps running,
    unconfigured, and the valid transitions that follow bring it to certified commands."""
    with running_gate(ros_env, tmp_path, merge(PARAMS, {"node": {"managed": True}})) as (node, probe):
        assert probe.wait_connected()
        refused = _change_state(probe, Transition.TRANSITION_ACTIVATE)
        assert probe.wait_for(lambda: refused.done() or any(text in node.log() for text in REFUSED_TRANSITION), 60)
        assert not (refused.done() and refused.result().success)
        assert node.alive() and _state(probe) == "unconfigured"
        for transition, state in ((Transition.TRANSITION_CONFIGURE, "inactive"), (Transition.TRANSITION_ACTIVATE,
                                                                                   "active")):
            done = _change_state(probe, transition)
            assert probe.wait_for(done.done, 60) and done.result().success and _state(probe) == state
        probe.say(TASK)
        cam = camera(probe).start()
        try:
            assert probe.wait_for(lambda: [c for c in probe.certs() if c.get("certified")], 30)
        finally:
            cam.stop()


# ---------------------------------------------------------------------------
# Parameters: applied after they are set (post-set callback) or, on Humble, in the on-set one
# ---------------------------------------------------------------------------

@pytest.mark.ros
@pytest.mark.parametrize("post_set", [True, False], ids=["post-set-callback", "on-set-only-as-on-humble"])
def test_run_time_parameters_are_validated_then_applied_with_or_without_post_set_callbacks(
        ros_env, tmp_path, monkeypatch, post_set):
    monkeypatch.setattr(node_module, "POST_SET_CALLBACKS", post_set)
    with node_in_process(tmp_path, monkeypatch, PARAMS) as node:
        cfg = node._ctx.cfg
        ok = node.set_parameters_atomically([Parameter("smoothing.sigma", value=0.3),
                                             Parameter("node.publish_rate", value=25.0)])
        assert ok.successful
        assert node._ctx.cfg.smoothing.sigma == 0.3 and node._ctx.cfg.node.publish_rate == 25.0
        assert node._ctx.cfg.smoothing.n_max == cfg.smoothing.n_max  # the rest as it was
        (refused,) = node.set_parameters([Parameter("commands.forward.radius_threshold", value=2.0)])
        assert not refused.successful and "n_max" in refused.reason  # not certifiable with n_max 200
        assert node._ctx.cfg.thresholds()["forward"] == cfg.thresholds()["forward"]
        assert node.get_parameter("commands.forward.radius_threshold").value == cfg.thresholds()["forward"]
        assert node._pending is None  # nothing validated is left over to be applied later
