"""The rules across parameters that every valid configuration obeys (`check_consistent`),
and the run-time rule that a parameter of the guarantee only tightens (`loosens`).

Each rule raises ConfigError naming the parameter to change; config.from_flat applies them
to every configuration it builds (files, overrides and run-time changes alike).
"""
from __future__ import annotations

import math
import string
from typing import TYPE_CHECKING

from . import certify
from .param_spec import ConfigError, ParamSpec

if TYPE_CHECKING:  # config.py imports this module; the type is for annotations only
    from .config import Config

TWIST_FIELDS = ("linear_x", "linear_y", "angular_z")  # the Twist fields a command sets


def check_consistent(cfg: Config) -> None:
    """Rules across parameters: an oracle error needs its level, and every threshold must be
    certifiable within smoothing.n_max (a threshold that never certifies is a misconfiguration,
    not a safe setting: it silently turns its command off)."""
    o, s = cfg.oracle, cfg.smoothing
    if o.error > 0.0 and o.error_alpha <= 0.0:
        raise ConfigError(f"parameter 'oracle.error_alpha': must be > 0 when oracle.error = {o.error:g} "
                          "(the alpha_O that calibrate-oracle reported with it)")
    _check_prompt_template(cfg.model.prompt_template)
    _check_abstain_and_ttl(cfg)
    _check_action_outputs(cfg)
    _check_cameras_and_state(cfg)
    d = cfg.denoiser
    if d.path and (d.sigma <= 0.0 or abs(d.sigma - s.sigma) > 1e-9 * s.sigma):
        name = "model.denoiser.sigma" if d.sigma <= 0.0 else "smoothing.sigma"
        raise ConfigError(f"parameter '{name}': with model.denoiser.path set ({d.path!r}), model.denoiser.sigma "
                          f"(the sigma it was trained for, {d.sigma:g}) must be set and equal smoothing.sigma "
                          f"({s.sigma:g}): a denoiser is trained for one noise level")
    for name, threshold in cfg.thresholds().items():
        if name == cfg.commands.abstain or certify.can_certify(threshold, s.sigma, s.alpha, s.n_max, o.error):
            continue
        try:
            n_min = certify.samples_needed(threshold, s.sigma, s.alpha, o.error)
            need = f"needs n_min = {n_min if n_min < 10 ** 9 else f'{n_min:.3g}'} samples"
        except ValueError:
            need = "cannot be certified with any number of samples"
        largest = max(certify.max_certifiable_radius(s.n_max, s.sigma, s.alpha, o.error), 0.0)
        raise ConfigError(
            f"parameter 'commands.{name}.radius_threshold': {threshold:g} {need} at smoothing.sigma={s.sigma:g}, "
            f"smoothing.alpha={s.alpha:g}, oracle.error={o.error:g}, but smoothing.n_max is {s.n_max} (the largest "
            f"radius it can certify is {largest:.4g}); lower the threshold, raise smoothing.n_max or smoothing.sigma")


def _check_abstain_and_ttl(cfg: Config) -> None:
    """The abstain action must be a standstill (every Twist field zero), and a certified command
    may live at most as long as its frame may be old (command_ttl <= max_frame_age): the robot
    never acts on a frame older than node.max_frame_age."""
    abstain = cfg.commands.abstain
    for name in TWIST_FIELDS:
        value = getattr(cfg.commands.table[abstain], name)
        if value != 0.0:
            raise ConfigError(f"parameter 'commands.{abstain}.{name}': the abstain command '{abstain}' must be a "
                              f"standstill (every Twist field 0), got {value:g}")
    n = cfg.node
    if n.command_ttl > n.max_frame_age:
        raise ConfigError(f"parameter 'node.command_ttl': {n.command_ttl:g} s exceeds node.max_frame_age "
                          f"({n.max_frame_age:g} s): a republished command would outlive its frame's freshness")


def _check_cameras_and_state(cfg: Config) -> None:
    """Every camera on its own topic; a state topic names the joints the model reads (and a
    fixed model.state is not given beside it)."""
    topics: dict[str, str] = {}
    for name in cfg.cameras.names:
        topic = cfg.cameras.table[name].topic
        if not topic.strip():
            raise ConfigError(f"parameter 'cameras.{name}.topic': must not be empty")
        if topic in topics:
            raise ConfigError(f"parameter 'cameras.{name}.topic': '{topic}' is also camera '{topics[topic]}''s topic")
        topics[topic] = name
    st = cfg.state
    if st.topic and (not st.joint_names or len(set(st.joint_names)) != len(st.joint_names)):
        raise ConfigError(f"parameter 'state.joint_names': with state.topic '{st.topic}' name the joints the model "
                          f"reads, each once (got {list(st.joint_names)})")
    if st.joint_names and not st.topic:
        raise ConfigError("parameter 'state.topic': state.joint_names is set but no state.topic to read them from")
    if st.topic and cfg.model.state:
        raise ConfigError("parameter 'model.state': a fixed state and state.topic exclude each other; keep one")


def _check_prompt_template(template: str) -> None:
    """A prompt template must place the instruction, and nothing else, through a plain `{instruction}`."""
    if not template:
        return
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as exc:
        raise ConfigError(f"parameter 'model.prompt_template': {exc} (write {{{{ and }}}} for literal braces)") from exc
    if any(field != ("instruction", "", None) for field in fields):
        raise ConfigError("parameter 'model.prompt_template': braces may only hold {instruction}, with no format "
                          "spec or conversion (write {{ and }} for literal braces)")
    if not fields:
        raise ConfigError("parameter 'model.prompt_template': must contain {instruction}, where the instruction goes")


def _check_action_outputs(cfg: Config) -> None:
    """Action outputs need the action oracle, and its Twist mapping must tell every command apart."""
    m, o = cfg.model, cfg.oracle
    makes_actions = m.backend == "lerobot" or (m.mode == "action" and m.backend in ("demo", "transformers"))
    if makes_actions and o.kind != "action":
        source = "model.backend 'lerobot'" if m.backend == "lerobot" else "model.mode 'action'"
        raise ConfigError(f"parameter 'oracle.kind': '{o.kind}' cannot read the action vectors {source} produces; "
                          "set oracle.kind: action")
    axes = o.action_axes()
    if o.kind != "action" or not axes:
        return
    indices = [index for index, _ in axes.values()]
    if len(set(indices)) < len(indices):
        raise ConfigError(f"parameter 'oracle.action_{list(axes)[-1]}_index': two Twist fields read the same action "
                          f"element ({indices})")
    twists: dict[tuple[float, ...], str] = {}
    for name, cmd in cfg.commands.table.items():
        if cmd.prototype:
            raise ConfigError(f"parameter 'commands.{name}.prototype': unused once oracle.action_*_index maps actions "
                              "to Twists (each command's own Twist is its prototype); remove it")
        twist = tuple(getattr(cmd, f) for f in axes)
        if twist in twists:
            raise ConfigError(f"parameter 'commands.{name}.{next(iter(axes))}': commands '{twists[twist]}' and "
                              f"'{name}' have the same Twist on the mapped fields {list(axes)}, so the action oracle "
                              "cannot tell them apart; map more fields (oracle.action_*_index) or change a Twist")
        twists[twist] = name




def loosens(spec: ParamSpec, old: float, new: float) -> bool:
    """Whether moving a guarantee parameter from `old` to `new` loosens it (its `off` value,
    which switches the limit off, is the loosest of all)."""
    def rank(value: float) -> float:
        return math.inf if spec.off is not None and value == spec.off else value

    return rank(new) > rank(old) if spec.tighten == "down" else rank(new) < rank(old)


__all__ = ["check_consistent", "loosens", "TWIST_FIELDS"]
