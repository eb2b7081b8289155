"""The example velocity chains of config/robot_chain fit together and fit the gate
(docs/robot.md): twist_mux and Nav2's collision_monitor are not installable here, so the
checks are structural, against the parameter names and the behaviour of their sources
(twist_mux 4.3 on Humble, 4.5 on Jazzy/Kilted; navigation2's humble, jazzy and kilted
branches), restated below as small models:

- the gate's remapped cmd_vel is exactly the input topic of twist_mux / collision_monitor;
- the message types agree (the gate's node.use_stamped vs what each distro's twist_mux or
  collision_monitor subscribes with those parameters);
- the timing is consistent (twist_mux's input timeout and collision_monitor's
  stop_pub_timeout against the gate's publish period), and twist_mux's priorities and locks
  do what docs/robot.md says (joystick > gate > navigation, the pause lock stops the gate
  but not the joystick, an abstaining gate holds its slot);
- the SROS2 policy lets only the planner publish /instruction and only the gate publish
  the gated cmd_vel.
"""
import ast
import importlib.util
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from launch_stubs import launch_loader, run_launch
from rs_guard_ros import config, param_files
from rs_guard_ros.ros import node

ROOT = Path(__file__).resolve().parent.parent
CHAIN = ROOT / "config" / "robot_chain"
TWIST_MUX = CHAIN / "twist_mux.yaml"
GATE_FOR_MUX = CHAIN / "rs_guard_twist_mux.yaml"
COLLISION_MONITOR = CHAIN / "collision_monitor.yaml"
GATE_FOR_CM = CHAIN / "rs_guard_collision_monitor.yaml"
POLICY = CHAIN / "sros2_policy.xml"
CHAIN_LAUNCH = CHAIN / "twist_mux_chain.launch.py"
GUARD_LAUNCH = ROOT / "launch" / "rs_guard.launch.py"
ROBOTS = ("sim_diffdrive", "turtlebot4", "tiago", "default")

# Which distros each example is written for (its header says so).
TWIST_MUX_DISTROS = ("humble", "jazzy", "kilted")
COLLISION_MONITOR_DISTROS = ("jazzy", "kilted")
TWIST, TWIST_STAMPED = "geometry_msgs/msg/Twist", "geometry_msgs/msg/TwistStamped"


# ----------------------------------------------------------------------------- models
def twist_mux_type(distro: str, params: dict) -> str:
    """The type twist_mux subscribes and publishes: `use_stamped` exists from twist_mux 4.4
    (Jazzy, Kilted) and switches inputs and output together; Humble's 4.3 is Twist only."""
    if distro == "humble":
        return TWIST
    assert "use_stamped" in params, "twist_mux 4.4 (Jazzy) dies without use_stamped; set it explicitly"
    return TWIST_STAMPED if params["use_stamped"] else TWIST


def collision_monitor_type(distro: str, params: dict) -> str:
    """collision_monitor's cmd_vel_in type: Twist only on Humble; nav2_util's TwistSubscriber
    reads enable_stamped_cmd_vel with default false on Jazzy, true on Kilted."""
    if distro == "humble":
        return TWIST
    default = {"jazzy": False, "kilted": True}[distro]
    return TWIST_STAMPED if params.get("enable_stamped_cmd_vel", default) else TWIST


def gate_type(cfg: config.Config) -> str:
    return TWIST_STAMPED if cfg.node.use_stamped else TWIST


def twist_mux_winner(params: dict, now: float, last_message: dict[str, float],
                     locks_on: dict[str, bool]) -> str | None:
    """Which input twist_mux forwards at `now` (its TwistMux::hasPriority): an input is masked
    when its newest message is older than its timeout (timeout 0: never) or its priority is
    below the highest priority of the locks that are on; the highest unmasked priority wins."""
    lock_priority = 0
    for name, lock in params["locks"].items():
        if locks_on.get(name, False):
            lock_priority = max(lock_priority, lock["priority"])
    best, winner = 0, None
    for name, topic in params["topics"].items():
        stamp = last_message.get(name)
        expired = stamp is None or (topic["timeout"] > 0 and now - stamp > topic["timeout"])
        if not expired and topic["priority"] >= lock_priority and topic["priority"] > best:
            best, winner = topic["priority"], name
    return winner


def gate_publish_times(cfg: config.Config, abstain_from: float, until: float) -> list[float]:
    """When the gate publishes cmd_vel while abstaining from `abstain_from` on: every
    1/publish_rate s, until node.abstain_publish_timeout s of continuous abstain (0 = never)."""
    period, quiet = 1.0 / cfg.node.publish_rate, cfg.node.abstain_publish_timeout
    times, t = [], abstain_from
    while t <= until + 1e-9:
        if quiet == 0 or t - abstain_from < quiet:
            times.append(t)
        t += period
    return times


# ----------------------------------------------------------------------------- files
def params_of(path: Path, node_name: str) -> dict:
    document = yaml.safe_load(path.read_text())
    assert list(document) == [node_name], f"{path.name}: one node, {node_name}"
    return document[node_name]["ros__parameters"]


def header(path: Path) -> str:
    return "".join(line for line in path.read_text().splitlines(True) if line.startswith("#"))


def remapped_output(path: Path) -> str:
    """The gate's cmd_vel remapping its file's header documents, for rs_guard_node and launch."""
    text = header(path)
    (run,) = set(re.findall(r"-r cmd_vel:=(\S+)", text))
    (launch,) = set(re.findall(r"cmd_vel_topic:=(\S+)", text))
    assert run == launch, f"{path.name}: the rs_guard_node and ros2 launch lines disagree"
    return run


@pytest.fixture(scope="module")
def mux() -> dict:
    return params_of(TWIST_MUX, "twist_mux")


@pytest.fixture(scope="module")
def monitor() -> dict:
    return params_of(COLLISION_MONITOR, "collision_monitor")


@pytest.fixture(scope="module")
def gate_for_mux() -> config.Config:
    return param_files.load_config(GATE_FOR_MUX)


@pytest.fixture(scope="module")
def gate_for_cm() -> config.Config:
    return param_files.load_config(GATE_FOR_CM)


# ----------------------------------------------------------------------------- twist_mux
def test_twist_mux_file_uses_twist_muxs_parameter_layout(mux):
    assert isinstance(mux["use_stamped"], bool)
    for group in ("topics", "locks"):
        assert mux[group], group
        for name, entry in mux[group].items():
            assert set(entry) == {"topic", "timeout", "priority"}, (group, name)
            assert isinstance(entry["topic"], str) and entry["topic"], (group, name)
            assert isinstance(entry["timeout"], float) and entry["timeout"] >= 0, (group, name)
            assert isinstance(entry["priority"], int) and 0 <= entry["priority"] <= 255, (group, name)
    topics = [t["topic"] for t in mux["topics"].values()] + [t["topic"] for t in mux["locks"].values()]
    assert len(set(topics)) == len(topics), "every input and lock on its own topic"


def test_the_gates_remapped_output_is_twist_muxs_rs_guard_input(mux):
    output = remapped_output(GATE_FOR_MUX)
    assert mux["topics"]["rs_guard"]["topic"] == output
    assert output.startswith("/") and output != "/cmd_vel", "the gate must not publish to the base directly"


@pytest.mark.parametrize("distro", TWIST_MUX_DISTROS)
def test_gate_and_twist_mux_agree_on_the_message_type(mux, gate_for_mux, distro):
    assert gate_type(gate_for_mux) == twist_mux_type(distro, mux)


def test_twist_muxs_input_timeout_spans_several_gate_publish_periods(mux, gate_for_mux):
    """The gate republishes every 1/publish_rate s; an input timeout of fewer than two periods
    would let lower inputs through between two of its messages."""
    period = 1.0 / gate_for_mux.node.publish_rate
    assert mux["topics"]["rs_guard"]["timeout"] >= 2 * period
    assert gate_for_mux.node.command_ttl >= period, "a certified command outlives one republish"


def test_joystick_outranks_the_gate_which_outranks_navigation(mux):
    priority = {name: topic["priority"] for name, topic in mux["topics"].items()}
    assert priority["joystick"] > priority["rs_guard"] > priority["navigation"]


def test_an_abstaining_gate_holds_its_slot_so_navigation_cannot_drive(mux, gate_for_mux):
    assert gate_for_mux.node.abstain_publish_timeout == 0.0
    times = gate_publish_times(gate_for_mux, abstain_from=0.0, until=30.0)
    for now in (0.05, 1.0, 10.0, 30.0):
        last = {"rs_guard": max(t for t in times if t <= now), "navigation": now}
        assert twist_mux_winner(mux, now, last, {}) == "rs_guard"


def test_a_gate_that_goes_quiet_hands_over_to_navigation_after_twist_muxs_timeout(mux, gate_for_mux):
    """What docs/robot.md describes for node.abstain_publish_timeout > 0."""
    quiet = config.update(gate_for_mux, {"node.abstain_publish_timeout": 2.0})
    times = gate_publish_times(quiet, abstain_from=0.0, until=10.0)
    handover = times[-1] + mux["topics"]["rs_guard"]["timeout"]
    for now, expected in ((1.0, "rs_guard"), (handover - 0.05, "rs_guard"), (handover + 0.05, "navigation")):
        last = {"rs_guard": max(t for t in times if t <= now), "navigation": now}
        assert twist_mux_winner(mux, now, last, {}) == expected, now


def test_the_pause_lock_stops_the_gate_and_navigation_but_not_the_joystick(mux):
    now, live = 5.0, {"rs_guard": 4.95, "navigation": 4.95}
    assert twist_mux_winner(mux, now, live, {"rs_guard_pause": True}) is None
    assert twist_mux_winner(mux, now, live | {"joystick": 4.95}, {"rs_guard_pause": True}) == "joystick"
    assert twist_mux_winner(mux, now, live, {"rs_guard_pause": False}) == "rs_guard"


def test_stop_all_masks_every_input(mux):
    everyone = {name: 4.95 for name in mux["topics"]}
    assert twist_mux_winner(mux, 5.0, everyone, {"stop_all": True}) is None
    assert twist_mux_winner(mux, 5.0, everyone, {}) == "joystick"


# ----------------------------------------------------------------------------- collision_monitor
def test_collision_monitor_reads_the_gates_output_and_feeds_the_base(monitor):
    output = remapped_output(GATE_FOR_CM)
    assert monitor["cmd_vel_in_topic"] == output
    assert monitor["cmd_vel_out_topic"] == "/cmd_vel" != output


@pytest.mark.parametrize("distro", COLLISION_MONITOR_DISTROS)
def test_gate_and_collision_monitor_agree_on_the_message_type(monitor, gate_for_cm, distro):
    assert gate_type(gate_for_cm) == collision_monitor_type(distro, monitor)


def test_on_humble_collision_monitor_takes_twist_so_the_gate_must_not_stamp(monitor, gate_for_cm):
    """The files are for Jazzy/Kilted; their headers and docs/robot.md give the Humble change."""
    assert collision_monitor_type("humble", monitor) == TWIST != gate_type(gate_for_cm)
    assert gate_type(param_files.load_config(GATE_FOR_CM, overrides={"node.use_stamped": False})) == TWIST
    assert "node.use_stamped: false" in header(COLLISION_MONITOR)
    assert "max_points: 3" in header(COLLISION_MONITOR)
    assert "Humble: false" in GATE_FOR_CM.read_text()


def test_collision_monitor_repeats_a_stop_over_several_gate_periods(monitor, gate_for_cm):
    assert monitor["stop_pub_timeout"] >= 2.0 / gate_for_cm.node.publish_rate


def test_collision_monitor_zones_and_sources_are_complete(monitor):
    for name in monitor["polygons"]:
        zone = monitor[name]
        assert zone["action_type"] in {"stop", "slowdown", "limit", "approach", "none"}
        assert zone["type"] in {"polygon", "circle", "velocity_polygon"}
        if zone["type"] == "circle":
            assert zone["radius"] > 0
        assert zone["min_points"] >= 1
        if zone["action_type"] == "slowdown":
            assert 0 < zone["slowdown_ratio"] < 1
    radii = [monitor[name]["radius"] for name in monitor["polygons"]]
    assert radii == sorted(radii), "the stop zone lies inside the slowdown zone"
    for name in monitor["observation_sources"]:
        assert monitor[name]["type"] in {"scan", "pointcloud", "range", "polygon", "costmap"}
        assert monitor[name]["topic"]
    assert monitor["source_timeout"] > 0, "a silent laser stops the robot"


# ----------------------------------------------------------------------------- gate files
@pytest.mark.parametrize("overlay", [GATE_FOR_MUX, GATE_FOR_CM], ids=lambda p: p.stem)
@pytest.mark.parametrize("robot", ROBOTS)
def test_gate_overlays_load_on_top_of_every_robot_file(robot, overlay):
    cfg = param_files.load_config(ROOT / "config" / f"{robot}.yaml", overlay)
    named = params_of(overlay, param_files.FILE_NODE_KEY)["node"]
    assert {k: getattr(cfg.node, k) for k in named} == named, "the overlay, loaded last, decides what it names"
    assert "robot:=" in header(overlay) and "params_file:=" in header(overlay)


def test_setup_installs_the_chain_folder():
    entry = '(f"share/{PACKAGE}/config/robot_chain", glob("config/robot_chain/*.*"))'
    assert entry in (ROOT / "setup.py").read_text()


# ----------------------------------------------------------------------------- launch example
@pytest.fixture
def load_launch(monkeypatch):
    return launch_loader(monkeypatch, {"rs_guard_ros": str(ROOT)})


def test_chain_launch_starts_the_gate_on_twist_muxs_input_and_twist_mux_on_its_file(load_launch, mux):
    declared, (include, mux_node) = run_launch(load_launch(CHAIN_LAUNCH), robot="turtlebot4",
                                               image_topic="/oakd/rgb/preview/image_raw")
    assert {"robot", "image_topic", "cmd_vel_out"} <= set(declared)
    gate_args = dict(include.kwargs["launch_arguments"])
    assert Path(include.args[0].args[0]) == GUARD_LAUNCH
    assert gate_args["cmd_vel_topic"] == mux["topics"]["rs_guard"]["topic"] == remapped_output(GATE_FOR_MUX)
    assert Path(gate_args["params_file"]) == GATE_FOR_MUX
    kw = mux_node.kwargs
    assert (kw["package"], kw["executable"]) == ("twist_mux", "twist_mux")
    assert Path(kw["parameters"][0]) == TWIST_MUX
    assert dict(kw["remappings"]) == {"cmd_vel_out": "/cmd_vel"}
    # ... and the included rs_guard.launch.py then runs the node with exactly that remapping.
    _, (gate,) = run_launch(load_launch(GUARD_LAUNCH), **gate_args)
    remaps = dict(gate.kwargs["remappings"])
    assert remaps[node.CMD_VEL_TOPIC] == mux["topics"]["rs_guard"]["topic"]
    assert remaps[node.IMAGE_TOPIC] == "/oakd/rgb/preview/image_raw"
    robot_file, overlay, _ = gate.kwargs["parameters"]
    assert gate_type(param_files.load_config(robot_file, overlay)) == twist_mux_type("jazzy", mux)


def test_chain_launch_compiles_and_names_real_files():
    source = CHAIN_LAUNCH.read_text()
    tree = ast.parse(source)
    assert any(isinstance(f, ast.FunctionDef) and f.name == "generate_launch_description" for f in tree.body)
    for name in ("rs_guard_twist_mux.yaml", "twist_mux.yaml", "rs_guard.launch.py"):
        assert name in source


# ----------------------------------------------------------------------------- SROS2 policy
def _fqn(name: str, ns: str, node_name: str) -> str:
    """sros2's name resolution in a profile: absolute, `~` = node's private, else ns-relative."""
    if name.startswith("/"):
        return name
    base = ns if ns.endswith("/") else ns + "/"
    return base + node_name + name[1:] if name.startswith("~") else base + name


def _grants() -> dict[str, dict[tuple[str, str, str], set[str]]]:
    """enclave path -> (kind, action, ALLOW|DENY) -> fully qualified names."""
    root = ET.parse(POLICY).getroot()
    assert root.tag == "policy" and root.get("version") == "0.2.0"
    out = {}
    for enclave in root.find("enclaves"):
        rules: dict[tuple[str, str, str], set[str]] = {}
        (profiles,) = enclave.findall("profiles")
        for profile in profiles.findall("profile"):
            ns, name = profile.get("ns"), profile.get("node")
            assert ns and name, "sros2 needs ns and node on every profile"
            for group in profile:
                assert group.tag in {"topics", "services", "actions"}, group.tag
                child = group.tag[:-1]
                assert group.attrib and set(group.attrib) <= {"publish", "subscribe", "reply", "request",
                                                              "call", "execute"}
                for action, verdict in group.attrib.items():
                    assert verdict in {"ALLOW", "DENY"}
                    names = {_fqn(e.text.strip(), ns, name) for e in group.findall(child)}
                    rules.setdefault((group.tag, action, verdict), set()).update(names)
        out[enclave.get("path")] = rules
    return out


def _allowed(grants, action: str, topic: str) -> set[str]:
    return {path for path, rules in grants.items()
            if topic in rules.get(("topics", action, "ALLOW"), set())
            and topic not in rules.get(("topics", action, "DENY"), set())}


def test_only_the_planner_may_publish_the_instruction_and_the_gate_reads_it():
    grants = _grants()
    instruction = "/" + node.INSTRUCTION_TOPIC
    assert _allowed(grants, "publish", instruction) == {"/rs_guard/planner"}
    assert "/rs_guard/gate" in _allowed(grants, "subscribe", instruction)


def test_only_the_gate_may_publish_the_gated_cmd_vel_and_only_twist_mux_forwards_it(mux):
    grants = _grants()
    gated = mux["topics"]["rs_guard"]["topic"]
    assert gated == remapped_output(GATE_FOR_MUX) == remapped_output(GATE_FOR_CM)
    assert _allowed(grants, "publish", gated) == {"/rs_guard/gate"}
    assert _allowed(grants, "subscribe", gated) == {"/rs_guard/twist_mux"}
    assert _allowed(grants, "publish", "/cmd_vel") == {"/rs_guard/twist_mux"}
    for path in grants:
        if path != "/rs_guard/gate":
            assert gated in grants[path].get(("topics", "publish", "DENY"), set()) or \
                gated not in grants[path].get(("topics", "publish", "ALLOW"), set())


def test_the_gates_enclave_covers_everything_the_node_uses():
    grants = _grants()
    gate = grants["/rs_guard/gate"]
    private = f"/{config.NODE_NAME}/"
    published = gate[("topics", "publish", "ALLOW")]
    assert {private + "command", private + "certificate", "/diagnostics", "/rosout", "/parameter_events",
            private + "transition_event"} <= published
    subscribed = gate[("topics", "subscribe", "ALLOW")]
    assert {"/camera/image_raw", "/camera/image_raw/compressed", "/clock", "/parameter_events"} <= subscribed
    assert _allowed(grants, "publish", "/camera/image_raw") == {"/rs_guard/camera"}
    services = gate[("services", "reply", "ALLOW")]
    for name in ("get_parameters", "set_parameters", "list_parameters", "describe_parameters",
                 "change_state", "get_state"):
        assert private + name in services


@pytest.mark.skipif(importlib.util.find_spec("sros2") is None,
                    reason="sros2 comes with a ROS 2 install (apt ros-<distro>-sros2), not from PyPI")
def test_sros2_accepts_the_policy():  # pragma: no cover - needs a ROS 2 install
    from sros2.policy import load_policy

    load_policy(POLICY)
