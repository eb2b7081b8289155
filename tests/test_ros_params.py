"""ros/params.py: finding the node's parameter files and -p overrides on its command line,
reading their entries as rcl does, matching node names (wildcards included) exactly as the
installed rcl/rclpy does, and failing closed when a file's parameters would not reach the
node or an override would be dropped."""
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rs_guard_ros.config import ConfigError
from rs_guard_ros.param_files import node_name_matches, param_file_entries, read_param_file
from rs_guard_ros.ros.params import check_params_files, param_rules, params_files


def test_params_files_are_read_from_ros_args_sections_only():
    argv = ["rs_guard_node", "--params-file", "not_ros.yaml", "--ros-args", "-r", "__ns:=/tb1", "--params-file",
            "a.yaml", "-p", "x:=1", "--", "--params-file", "user.yaml", "--ros-args", "--params-file", "b.yaml"]
    assert params_files(argv) == ["a.yaml", "b.yaml"]


def test_an_option_value_is_not_mistaken_for_an_option():
    assert params_files(["x", "--ros-args", "-p", "--params-file", "--params-file", "c.yaml"]) == ["c.yaml"]


def test_node_entries_join_nested_namespaces_and_flatten_parameters(tmp_path):
    path = _file(tmp_path, {"/**": {"ros__parameters": {"use_sim_time": True}},
                            "tb1": {"rs_guard": {"ros__parameters": {"smoothing": {"sigma": 0.3}, "a.b": 1}}}})
    assert param_file_entries(path) == [("/**", {"use_sim_time": True}),
                                        ("/tb1/rs_guard", {"smoothing.sigma": 0.3, "a.b": 1})]
    assert read_param_file(path, "/tb1/rs_guard") == {"smoothing.sigma": 0.3, "a.b": 1}
    with pytest.raises(ConfigError, match="none of its node names"):  # the CLI refuses what the node would not get
        read_param_file(_file(tmp_path, {"other_node": {"ros__parameters": {"smoothing": {"n0": 4}}}}))


@pytest.mark.parametrize("pattern,fqn,applies", [
    ("/**", "/rs_guard", True), ("/**", "/a/b/rs_guard", True), ("**", "/rs_guard", True),
    ("rs_guard", "/rs_guard", True), ("/rs_guard", "/rs_guard", True), ("rs_guard", "/tb1/rs_guard", False),
    ("/tb1/rs_guard", "/tb1/rs_guard", True), ("/tb1/rs_guard", "/rs_guard", False),
    ("/*", "/rs_guard", True), ("/*", "/tb1/rs_guard", False), ("/*/rs_guard", "/tb1/rs_guard", True),
    ("/**/rs_guard", "/rs_guard", True), ("/**/rs_guard", "/a/b/rs_guard", True), ("/tb1/**", "/rs_guard", False),
    ("/tb1/**", "/tb1/x/rs_guard", True), ("other", "/rs_guard", False), ("/**/other", "/tb1/rs_guard", False),
])
def test_node_names_match_like_rcl(pattern, fqn, applies):
    assert node_name_matches(pattern, fqn) == applies


def _file(tmp_path: Path, tree: dict) -> str:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tree))
    return str(path)


def test_defect2_a_file_for_another_node_is_an_error_naming_the_file(tmp_path):
    path = _file(tmp_path, {"rs_gaurd": {"ros__parameters": {"smoothing": {"sigma": 0.3}}}})
    with pytest.raises(ConfigError, match=f"parameter file {path}: none of its node names .*'/rs_gaurd'"):
        check_params_files([path], "/rs_guard", given=set())


def test_defect2_a_parameter_of_an_applying_entry_that_did_not_arrive_is_an_error(tmp_path):
    path = _file(tmp_path, {"/*/rs_guard": {"ros__parameters": {"smoothing": {"sigma": 0.3, "n0": 8}}}})
    with pytest.raises(ConfigError, match=f"parameter file {path}: parameter 'smoothing.sigma' of '/\\*/rs_guard'"):
        check_params_files([path], "/tb1/rs_guard", given={"smoothing.n0"})
    check_params_files([path], "/tb1/rs_guard", given={"smoothing.n0", "smoothing.sigma"})  # all arrived


@pytest.mark.ros
def test_node_name_matching_agrees_with_the_installed_rclpy(ros_env, tmp_path):
    """Each pattern in a file given to a real rclpy node: the parameter arrives exactly when
    node_name_matches says the entry applies (so the fail-closed check flags only real drops)."""
    import rclpy
    from rclpy.node import Node

    patterns = ["/**", "rs_guard", "/tb1/rs_guard", "/*", "/*/rs_guard", "/**/rs_guard", "/tb1/**", "other"]
    for i, pattern in enumerate(patterns):
        path = tmp_path / f"p{i}.yaml"
        path.write_text(yaml.safe_dump({pattern: {"ros__parameters": {"marker": 1}}}))
        for ns in ("", "/tb1"):
            context = rclpy.Context()
            rclpy.init(context=context, args=["probe", "--ros-args", "--params-file", str(path)]
                       + (["-r", f"__ns:={ns}"] if ns else []))
            try:
                node = Node("rs_guard", context=context, automatically_declare_parameters_from_overrides=True)
                fqn, arrived = node.get_fully_qualified_name(), "marker" in node.get_parameters_by_prefix("")
                node.destroy_node()
            finally:
                rclpy.shutdown(context=context)
            assert node_name_matches(pattern, fqn) == arrived, (pattern, fqn)


# ---------------------------------------------------------------------------
# Issue 15, item 8: -p overrides reach the node as written
# ---------------------------------------------------------------------------

def test_param_rules_are_read_from_ros_args_sections_with_their_node_prefix():
    argv = ["rs_guard_node", "-p", "user:=1", "--ros-args", "-p", "smoothing.n0:=8", "--param", "rs_guard:a.b:=x:=y",
            "-r", "-p", "--", "-p", "user:=2", "--ros-args", "-p", "c:=''"]
    assert param_rules(argv) == [(None, "smoothing.n0", "8"), ("rs_guard", "a.b", "x:=y"), (None, "c", "''")]


@pytest.mark.parametrize("rule,why", [("model.path:=", "-p \"model.path:=''\""), ("commands.names:=[ ]", "empty list")])
def test_an_override_rcl_cannot_type_is_refused_naming_the_parameter(rule, why):
    name = rule.split(":=")[0]
    with pytest.raises(ConfigError, match=f"parameter '{name}'") as err:
        param_rules(["rs_guard_node", "--ros-args", "-p", rule])
    assert why in str(err.value)


_NAME = st.from_regex(r"[a-z][a-z0-9_]{0,8}(\.[a-z][a-z0-9_]{0,8}){0,2}", fullmatch=True)


@given(node=st.one_of(st.none(), st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)), name=_NAME,
       value=st.text(min_size=1, max_size=20).filter(lambda v: not v.strip().startswith("[") or "]" not in v))
def test_param_rules_parse_any_rule_back_into_its_parts(node, name, value):
    rule = f"{node}:{name}:={value}" if node else f"{name}:={value}"
    assert param_rules(["x", "--ros-args", "-p", rule]) == [(node, name, value)]


@given(argv=st.lists(st.sampled_from(["--ros-args", "--", "-p", "--param", "-r", "a:=1", "b:c:=", "x", ":=", "[]"]),
                     max_size=12))
def test_param_rules_take_any_command_line_or_refuse_it_naming_a_parameter(argv):
    try:
        rules = param_rules(["rs_guard_node", *argv])
    except ConfigError as exc:
        assert str(exc).startswith("parameter '")
    else:
        assert all(":" not in name for _, name, _ in rules)


def _given(argv: list[str]) -> dict:
    """What declare_parameters starts from: given_parameters of a real rclpy node on `argv`."""
    import rclpy
    from rclpy.node import Node

    from rs_guard_ros.ros.params import given_parameters

    context = rclpy.Context()
    rclpy.init(context=context, args=argv)
    try:
        node = Node("rs_guard", context=context, automatically_declare_parameters_from_overrides=True)
        try:
            return given_parameters(node, argv)
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


_FILE_VALUES = st.one_of(st.integers(-10**6, 10**6), st.floats(-1e6, 1e6, allow_nan=False), st.booleans(),
                         st.text("abc xyz", min_size=1, max_size=8).filter(str.strip),
                         st.lists(st.sampled_from(["go", "turn"]), min_size=1, max_size=3))
_OVERRIDES = st.sampled_from(["abc", "high", "1000.0", "0,3", "7", "-2", "true", "off", "1e3", "0x1F", "~", "''",
                              "'12'", "[a, b]", "[1, 2]", "[0.5, 1.0]", "[true]"])


@pytest.mark.ros
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(file_value=_FILE_VALUES, override=_OVERRIDES)
def test_an_override_is_given_as_rcl_types_it_alone_whatever_type_the_files_value_has(ros_env, tmp_path, file_value,
                                                                                        override):
    """rcl keeps one slot per type, and rclpy reads the first set one (bool, integer, double,
    string, arrays): without override_values an override of another type than the file's
    value was dropped. The node must be given exactly what the override alone gives."""
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"a": {"b": file_value}}}}))
    alone = _given(["rs_guard_node", "--ros-args", "-p", f"a.b:={override}"])["a.b"]
    with_file = _given(["rs_guard_node", "--ros-args", "--params-file", str(path), "-p", f"a.b:={override}"])
    assert with_file["a.b"] == alone and type(with_file["a.b"]) is type(alone)


@pytest.mark.ros
def test_an_override_for_another_node_is_not_applied_and_one_for_this_node_is(ros_env):
    given = _given(["rs_guard_node", "--ros-args", "-p", "other:smoothing.n0:=abc", "-p", "rs_guard:smoothing.n0:=8"])
    assert given["smoothing.n0"] == 8
