"""ROS parameters from config.py, applied fail-closed with public rclpy APIs only.

The node is created with `automatically_declare_parameters_from_overrides=True`, so every
parameter it was given (parameter files, -p arguments) is declared and readable through
`get_parameters_by_prefix("")` on every distribution from Humble to Kilted.
`declare_parameters` then

1. checks each `--params-file` on the node's own command line: rcl silently drops the
   entries of a file whose node names do not match this node (a file written for
   `rs_guard` while the node runs as `/robot1/rs_guard`, a typo in the top key), so a file
   none of whose entries applies, or an applying entry whose parameter did not arrive,
   is a ConfigError naming the file;
2. validates every given parameter with config.from_flat (an unknown name, a wrong type,
   an out-of-range value or an inconsistent set is a ConfigError naming the parameter);
3. re-declares each of ours with its validated value, description, range and read-only
   flag (undeclare, then declare with ignore_override=True).

The node turns a ConfigError into exit code 2 at start-up: a parameter it was given but
could not apply never leaves it running on defaults.
"""
from __future__ import annotations

import array
import sys
from typing import Any, Sequence

import rclpy.node
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.parameter import Parameter

from .. import config, param_files
from ..config import Config, ConfigError, ParamSpec

# Parameters rclpy declares and applies itself (ours never use these names): each must be a bool.
ROS_OWN_PARAMETERS = ("use_sim_time", "start_type_description_service")
# rcl command-line options, inside --ros-args, that take one value (so the value is not an option).
_ROS_OPTIONS_WITH_VALUE = {"-r", "--remap", "-p", "--param", "--params-file", "-e", "--enclave", "--log-level",
                           "--log-config-file", "--log-file-name"}


def plain_value(value: Any) -> Any:
    """A ROS parameter value as config.py expects it (arrays as lists)."""
    return list(value) if isinstance(value, (list, tuple, array.array)) else value


# -- parameter files on the command line ---------------------------------------------------

def params_files(argv: Sequence[str]) -> list[str]:
    """The `--params-file` paths in the `--ros-args ... [--]` sections of a command line."""
    files: list[str] = []
    in_ros_args = False
    tokens = iter(argv)
    for token in tokens:
        if token == "--ros-args":
            in_ros_args = True
        elif token == "--":
            in_ros_args = False
        elif in_ros_args and token in _ROS_OPTIONS_WITH_VALUE:
            value = next(tokens, None)
            if token == "--params-file" and value is not None:
                files.append(value)
    return files


def check_params_files(paths: Sequence[str], fqn: str, given: set[str]) -> None:
    """ConfigError naming the file when none of a parameter file's entries applies to the
    node `fqn` (param_files.applying_entries), or a parameter of an entry that applies is not
    among the `given` ones."""
    for path in paths:
        for name, params in param_files.applying_entries(path, fqn):
            missing = sorted(set(params) - given)
            if missing:
                raise ConfigError(f"parameter file {path}: parameter '{missing[0]}' of {name!r} did not reach "
                                  f"the node {fqn!r}; this ROS distribution does not match that node name "
                                  f"(use {fqn!r} or '/**')")


# -- declaring -----------------------------------------------------------------------------

def given_parameters(node: rclpy.node.Node) -> dict[str, Any]:
    """Every parameter the node was given, {name: value} (ROS's own checked, then left out).

    Public API: the node was created with automatically_declare_parameters_from_overrides,
    so what it was given is what is declared before `declare_parameters` runs.
    """
    given = {name: plain_value(p.value) for name, p in node.get_parameters_by_prefix("").items()}
    for name in ROS_OWN_PARAMETERS:
        if name in given and not isinstance(given.pop(name), bool):
            raise ConfigError(f"parameter '{name}': expected true or false")
    return given


def _descriptor(spec: ParamSpec, ptype: Parameter.Type) -> ParameterDescriptor:
    """Description, read_only (non-runtime parameters) and range of one parameter."""
    desc = ParameterDescriptor(name=spec.name, type=ptype.value, description=spec.description,
                               read_only=not spec.runtime)
    if spec.choices:
        desc.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.type is float and (spec.low is not None or spec.high is not None):
        desc.floating_point_range = [FloatingPointRange(
            from_value=float(spec.low if spec.low is not None else -sys.float_info.max),
            to_value=float(spec.high if spec.high is not None else sys.float_info.max), step=0.0)]
    elif spec.type is int and (spec.low is not None or spec.high is not None):
        desc.integer_range = [IntegerRange(from_value=int(spec.low if spec.low is not None else -2**63),
                                           to_value=int(spec.high if spec.high is not None else 2**63 - 1), step=1)]
    return desc


def _parameter_type(spec: ParamSpec) -> Parameter.Type:
    """The ROS type of a parameter; list element types follow config.coerce."""
    if spec.type is tuple:
        return Parameter.Type.DOUBLE_ARRAY if spec.item_type is float else Parameter.Type.STRING_ARRAY
    return {bool: Parameter.Type.BOOL, int: Parameter.Type.INTEGER, float: Parameter.Type.DOUBLE,
            str: Parameter.Type.STRING}[spec.type]


def declare_parameters(node: rclpy.node.Node, argv: Sequence[str]) -> Config:
    """Check the node's parameter files (`argv`: its command line), validate every given
    parameter, then declare ours with their validated values, descriptions and ranges:
    commands.names first, then the per-command parameters for those names. ConfigError
    names the file or the parameter that could not be applied."""
    given = given_parameters(node)
    check_params_files(params_files(argv), node.get_fully_qualified_name(), set(given) | set(ROS_OWN_PARAMETERS))
    cfg = config.from_flat(given)
    values = cfg.to_flat()
    for spec in cfg.specs():
        ptype, value = _parameter_type(spec), values[spec.name]
        value = list(value) if isinstance(value, tuple) else value
        if node.has_parameter(spec.name):  # given: declared as found, now with its descriptor
            node.undeclare_parameter(spec.name)
        # rclpy infers a byte array from an empty list: declare those by type (value unset).
        node.declare_parameter(spec.name, value if value != [] else ptype, _descriptor(spec, ptype),
                               ignore_override=True)
    return cfg


__all__ = ["declare_parameters", "given_parameters", "params_files", "check_params_files", "plain_value",
           "ROS_OWN_PARAMETERS"]
