"""ros/params.py: finding the node's parameter files on its command line, reading their
entries as rcl does, matching node names (wildcards included) exactly as the installed
rcl/rclpy does, and failing closed when a file's parameters would not reach the node."""
from pathlib import Path

import pytest
import yaml

from rs_guard_ros.config import ConfigError
from rs_guard_ros.param_files import node_name_matches, param_file_entries, read_param_file
from rs_guard_ros.ros.params import check_params_files, params_files


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
