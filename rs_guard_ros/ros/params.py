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
2. takes each `-p NAME:=VALUE` on the command line as rcl types it alone
   (`override_values`): rcl keeps one slot per type for a parameter, and rclpy reads the
   first set slot in the order bool, integer, double, string, arrays, so an override of
   another type than the file's value (`-p smoothing.n_max:=abc` over a file's 500) would
   otherwise be dropped without a word;
3. validates every given parameter with config.from_flat (an unknown name, a wrong type,
   an out-of-range value or an inconsistent set is a ConfigError naming the parameter);
4. re-declares each of ours with its validated value, description, range and read-only
   flag (undeclare, then declare with ignore_override=True).

The node turns a ConfigError into exit code 2 at start-up: a parameter it was given but
could not apply never leaves it running on defaults.
"""
from __future__ import annotations

import array
import re
import sys
from typing import Any, Iterator, Sequence

import rclpy.node
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.parameter import Parameter

from .. import config, param_files
from ..config import Config, ConfigError, ParamSpec
from ..param_files import ROS_OWN_PARAMETERS, node_name_matches, without_ros_own

# rcl command-line options, inside --ros-args, that take one value (so the value is not an option).
_ROS_OPTIONS_WITH_VALUE = {"-r", "--remap", "-p", "--param", "--params-file", "-e", "--enclave", "--log-level",
                           "--log-config-file", "--log-file-name"}


def plain_value(value: Any) -> Any:
    """A ROS parameter value as config.py expects it (arrays as lists)."""
    return list(value) if isinstance(value, (list, tuple, array.array)) else value


# -- parameter files and overrides on the command line -----------------------------------

def _ros_options(argv: Sequence[str]) -> Iterator[tuple[str, str]]:
    """(option, value) of each option with a value in the `--ros-args ... [--]` sections."""
    in_ros_args = False
    tokens = iter(argv)
    for token in tokens:
        if token == "--ros-args":
            in_ros_args = True
        elif token == "--":
            in_ros_args = False
        elif in_ros_args and token in _ROS_OPTIONS_WITH_VALUE:
            value = next(tokens, None)
            if value is not None:
                yield token, value


def params_files(argv: Sequence[str]) -> list[str]:
    """The `--params-file` paths in the `--ros-args ... [--]` sections of a command line."""
    return [value for option, value in _ros_options(argv) if option == "--params-file"]


def param_rules(argv: Sequence[str]) -> list[tuple[str | None, str, str]]:
    """(node name or None, parameter name, value text) of each `-p [NODE:]NAME:=VALUE` in the
    `--ros-args` sections, in order; ConfigError naming the parameter for a rule with no value
    (`-p NAME:=`, what the shell leaves of `NAME:=''`: rcl cannot parse it) or an empty list."""
    rules = []
    for option, rule in _ros_options(argv):
        if option not in ("-p", "--param") or ":=" not in rule:
            continue  # not a rule: rcl itself refuses it
        target, value = rule.split(":=", 1)
        node, _, name = target.rpartition(":")
        if value == "":
            raise ConfigError(f"parameter '{name}': '{option} {rule}' has no value (a shell turns {name}:='' into "
                              f"that); write an empty string as {option} \"{name}:=''\"")
        if re.fullmatch(r"\[\s*\]", value):
            raise ConfigError(param_files.empty_list_error(name))
        rules.append((node or None, name, value))
    return rules


def check_command_line(argv: Sequence[str]) -> None:
    """Before rclpy.init: ConfigError (one line, naming it) for what rcl or rclpy would refuse
    with a traceback or without naming it: a `-p` rule with no value or an empty list, a
    parameter file that is missing, unreadable, not YAML or holds an empty list."""
    param_rules(argv)
    for path in params_files(argv):
        param_files.param_file_entries(path)


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


def override_values(node: rclpy.node.Node, argv: Sequence[str]) -> dict[str, Any]:
    """{name: value} of the command line's `-p` rules that apply to `node`, the last rule for a
    name winning, each typed by rcl alone: a scratch node in the same context is given just
    that rule (public API: `cli_args` without the global arguments), so no parameter file's
    value of another type can shadow it."""
    fqn, values = node.get_fully_qualified_name(), {}
    for target, name, value in param_rules(argv):
        if target is not None and not node_name_matches(target, fqn):
            continue
        scratch = rclpy.node.Node(f"{config.NODE_NAME}_override", context=node.context,
                                  cli_args=["--ros-args", "-p", f"{name}:={value}"], use_global_arguments=False,
                                  automatically_declare_parameters_from_overrides=True,
                                  start_parameter_services=False, enable_rosout=False)
        try:
            values[name] = plain_value(scratch.get_parameter(name).value)
        finally:
            scratch.destroy_node()
    return values


# -- declaring -----------------------------------------------------------------------------

def given_parameters(node: rclpy.node.Node, argv: Sequence[str] = ()) -> dict[str, Any]:
    """Every parameter the node was given, {name: value}, its command line's `-p` rules as
    they were written (`override_values`); ROS's own are checked, then left out.

    Public API: the node was created with automatically_declare_parameters_from_overrides,
    so what it was given is what is declared before `declare_parameters` runs.
    """
    given = {name: plain_value(p.value) for name, p in node.get_parameters_by_prefix("").items()}
    given.update(override_values(node, argv))
    return without_ros_own(given)


def _descriptor(spec: ParamSpec, ptype: Parameter.Type) -> ParameterDescriptor:
    """Description, read_only (non-runtime parameters) and range of one parameter."""
    desc = ParameterDescriptor(name=spec.name, type=ptype.value, description=spec.description,
                               read_only=not spec.runtime)
    if spec.choices:
        desc.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.tighten:  # a parameter of the guarantee: config.update refuses the other direction
        desc.additional_constraints = f"at run time only {'lowered' if spec.tighten == 'down' else 'raised'}"
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
    given = given_parameters(node, argv)
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


__all__ = ["declare_parameters", "given_parameters", "override_values", "params_files", "param_rules",
           "check_command_line", "check_params_files", "plain_value"]
