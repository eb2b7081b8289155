"""ROS parameters from config.py: declared with descriptions, ranges and read-only flags,
validated by config.from_flat before anything is declared (part of the ROS adapter layer)."""
from __future__ import annotations

import array
import sys
from typing import Any

import rclpy.node
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.parameter import Parameter

from . import config
from .config import Config, ParamSpec

# Parameters rclpy declares itself (not ours, never "unknown").
ROS_OWN_PARAMETERS = ("use_sim_time", "start_type_description_service")


def plain_value(value: Any) -> Any:
    """A ROS parameter value as config.py expects it (arrays as lists)."""
    return list(value) if isinstance(value, (list, tuple, array.array)) else value


def given_parameters(node: rclpy.node.Node) -> dict[str, Any]:
    """Our parameters as given to this node by parameter files and -p arguments.

    rclpy keeps them in Node._parameter_overrides (every distribution from Humble to
    Kilted); there is no public accessor, and reading them before declaring is what lets
    an unknown name or a wrong type fail through config.from_flat with its name.
    """
    overrides = getattr(node, "_parameter_overrides", {})
    return {name: plain_value(p.value) for name, p in overrides.items()
            if name not in ROS_OWN_PARAMETERS and not name.startswith("qos_overrides.")}


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


def declare_parameters(node: rclpy.node.Node) -> Config:
    """Validate the given parameters (ConfigError names the bad one), then declare every
    parameter with its validated value, description and range: commands.names first,
    then the per-command parameters for those names."""
    cfg = config.from_flat(given_parameters(node))
    values = cfg.to_flat()
    for spec in config.param_specs(cfg.commands.names):
        ptype, value = _parameter_type(spec), values[spec.name]
        value = list(value) if isinstance(value, tuple) else value
        # rclpy infers a byte array from an empty list: declare those by type (value unset).
        node.declare_parameter(spec.name, value if value != [] else ptype, _descriptor(spec, ptype),
                               ignore_override=True)
    return cfg
