"""ROS 2 parameter files: reading them as rcl does (namespaces, node-name wildcards) into a
validated Config, and writing the whole configuration as one, documented.

The node and the `rs-guard` CLI read parameter files through the same functions, so a file
whose entries would not reach the node is refused by both (`applying_entries`).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

from .config import NODE_NAME, Config, ConfigError, ParamSpec, from_flat

DEFAULT_FQN = f"/{NODE_NAME}"  # the node's fully qualified name without a namespace
PARAMETERS_KEY = "ros__parameters"
# The node name the shipped parameter files use: rclpy applies "/**" to the node in any
# namespace on every distribution (Humble's rclpy before 3.3.5 matches no other wildcard).
FILE_NODE_KEY = "/**"
# Parameters rclpy declares and applies itself (ours never use these names). A file or a -p
# argument may set them; each must be a bool, and neither the node nor the CLI counts them as ours.
ROS_OWN_PARAMETERS = ("use_sim_time", "start_type_description_service")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested YAML mappings -> dotted names, as ROS 2 reads a parameter file."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted names -> nested mappings (the inverse of `flatten`)."""
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = list(value) if isinstance(value, tuple) else value
    return tree


def param_file_entries(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """(node name, flat parameters) for every entry of a ROS 2 parameter file, as rcl reads
    it: keys above `ros__parameters` are namespaces joined with "/", parameters flattened
    with ".". ConfigError (one line, naming the file and, for bad YAML, the line) otherwise."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError(f"parameter file {path}{where}: {problem}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"parameter file {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    if not isinstance(doc, Mapping):
        raise ConfigError(f"parameter file {path}: expected a mapping of node names")
    return list(_node_entries(doc, "", path))


def _node_entries(tree: Mapping[str, Any], prefix: str, path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for key, value in tree.items():
        if key == PARAMETERS_KEY:
            if not isinstance(value, Mapping):
                raise ConfigError(f"parameter file {path}: '{prefix or '/'}' has no {PARAMETERS_KEY} mapping")
            params = flatten(value)
            empty = next((name for name, v in params.items() if v == []), None)
            if empty is not None:
                raise ConfigError(f"parameter file {path}: {empty_list_error(empty)}")
            yield prefix or "/", params
        elif isinstance(value, Mapping):
            yield from _node_entries(value, f"{prefix}/{str(key).strip('/')}", path)
        else:
            raise ConfigError(f"parameter file {path}: '{prefix}/{key}' is neither a namespace nor {PARAMETERS_KEY}")


def empty_list_error(name: str) -> str:
    """Why an empty list cannot be given: rcl reads [] as a parameter with no type, which
    rclpy cannot declare (the node would stop without naming it)."""
    return (f"parameter '{name}': an empty list cannot be given to a ROS node (rcl reads [] as a value with no "
            "type); leave the parameter out for its default")


def node_name_matches(pattern: str, fqn: str) -> bool:
    """Whether a parameter file's node name applies to the node `fqn` ("/ns/rs_guard"), as
    rcl matches it: a leading "/" is implied, "*" stands for exactly one name segment and
    "**" for any number of segments (so "/**" applies to every node)."""
    regex = "".join("(/[^/]+)*" if seg == "**" else "/[^/]+" if seg == "*" else "/" + re.escape(seg)
                    for seg in pattern.strip("/").split("/") if seg)
    return re.fullmatch(regex or "/", fqn) is not None


def applying_entries(path: str | Path, fqn: str = DEFAULT_FQN) -> list[tuple[str, dict[str, Any]]]:
    """The entries of a parameter file that apply to the node `fqn`; ConfigError naming the
    file when none does (rcl would silently run the node without any of them)."""
    entries = param_file_entries(path)
    applying = [(name, params) for name, params in entries if node_name_matches(name, fqn)]
    if not applying:
        names = ", ".join(repr(name) for name, _ in entries) or "none"
        raise ConfigError(f"parameter file {path}: none of its node names ({names}) applies to the node {fqn!r}, "
                          f"so none of its parameters would be used; name it '/**' (any namespace) or {fqn!r}")
    return applying


def read_param_file(path: str | Path, fqn: str = DEFAULT_FQN) -> dict[str, Any]:
    """The flat parameters a parameter file gives the node `fqn`, entries applied in file order."""
    flat: dict[str, Any] = {}
    for _, params in applying_entries(path, fqn):
        flat.update(params)
    return without_ros_own(flat)


def without_ros_own(flat: Mapping[str, Any]) -> dict[str, Any]:
    """`flat` without ROS's own parameters (ROS_OWN_PARAMETERS), each checked to be true or
    false (a wrong type would leave the node on, say, wall time); ConfigError names it."""
    ours = dict(flat)
    for name in ROS_OWN_PARAMETERS:
        if name in ours and not isinstance(ours.pop(name), bool):
            raise ConfigError(f"parameter '{name}': expected true or false")
    return ours


def load_config(*paths: str | Path, overrides: Mapping[str, Any] | None = None) -> Config:
    """Defaults, then each ROS 2 parameter file in order, then `overrides` (all validated)."""
    values: dict[str, Any] = {}
    for path in paths:
        values.update(read_param_file(path))
    values.update(overrides or {})
    return from_flat(values)


def dump_yaml(cfg: Config, node_name: str = FILE_NODE_KEY) -> str:
    """The whole configuration as a ROS 2 parameter file, every parameter preceded by its
    description and range or choices (empty lists are commented out: ROS 2's parameter-file
    parser cannot type an empty array, and they are the defaults)."""
    flat = {k: v for k, v in cfg.to_flat().items() if v != ()}
    specs = {s.name: s for s in cfg.specs()}
    lines = [f"{_yaml_scalar(node_name)}:", f"  {PARAMETERS_KEY}:"]
    opened: list[str] = []
    for name in [s.name for s in specs.values()]:
        *parents, leaf = name.split(".")
        common = next((i for i, (a, b) in enumerate(zip(opened, parents)) if a != b), min(len(opened), len(parents)))
        opened = opened[:common]
        for depth, part in enumerate(parents[common:], start=common):
            lines.append(f"{'  ' * (depth + 2)}{part}:")
            opened.append(part)
        indent = "  " * (len(parents) + 2)
        spec = specs[name]
        lines.append(f"{indent}# {spec.description}{_range_text(spec)}")
        if name in flat:
            lines.append(f"{indent}{leaf}: {_yaml_scalar(list(flat[name]) if spec.type is tuple else flat[name])}")
        else:
            lines.append(f"{indent}# {leaf}: []   (empty list: left out, ROS 2 cannot type an empty array)")
    return "\n".join(lines) + "\n"


def _range_text(spec: ParamSpec) -> str:
    """" (range [low, high])", " (one of: ...)" or "", plus whether it can change at run time."""
    if spec.choices:
        text = f" (one of: {', '.join(spec.choices)})"
    elif spec.low is not None or spec.high is not None:
        low = "-inf" if spec.low is None else f"{spec.low:g}"
        high = "inf" if spec.high is None else f"{spec.high:g}"
        text = f" (range [{low}, {high}])"
    else:
        text = ""
    if not spec.runtime:
        return text
    if spec.tighten is None:
        return text + "; changeable at run time"
    way, other = ("lowered", "raising") if spec.tighten == "down" else ("raised", "lowering")
    off = f", or {spec.off:g}," if spec.off is not None else ""
    return text + f"; at run time only {way} ({other} it{off} needs a restart)"


def _yaml_scalar(value: Any) -> str:
    """One value in YAML flow style, on one line."""
    return yaml.safe_dump(value, default_flow_style=True, width=float("inf")).strip().removesuffix("\n...").strip()


__all__ = ["DEFAULT_FQN", "PARAMETERS_KEY", "FILE_NODE_KEY", "ROS_OWN_PARAMETERS", "flatten", "unflatten",
           "param_file_entries", "node_name_matches", "applying_entries", "read_param_file", "without_ros_own",
           "empty_list_error", "load_config", "dump_yaml"]
