"""config.py is the one validated source of parameters; files and overrides go through it."""
import re
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from rs_guard_ros import config as cfgmod, param_files
from rs_guard_ros.config import Config, ConfigError

ROOT = Path(__file__).resolve().parent.parent
SPECS = cfgmod.param_specs()


def test_every_parameter_has_a_description_and_a_valid_default():
    assert all(s.description for s in SPECS)
    assert cfgmod.from_flat({}) == Config()
    assert all(cfgmod.coerce(s, s.default) == s.default for s in SPECS)


def test_shipped_default_yaml_is_generated_from_config_py():
    text = (ROOT / "config" / "default.yaml").read_text()
    assert text.endswith(param_files.dump_yaml(Config())), "run scripts/write_default_config.py"
    assert param_files.load_config(ROOT / "config" / "default.yaml") == Config()


def test_parameter_file_overrides_apply_in_order(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("rs_guard:\n  ros__parameters:\n    smoothing: {sigma: 0.5, n0: 10}\n")
    b.write_text("/**:\n  ros__parameters:\n    smoothing:\n      sigma: 0.75\n    use_sim_time: true\n")
    cfg = param_files.load_config(a, b)
    assert cfg.smoothing.sigma == 0.75 and cfg.smoothing.n0 == 10


def test_a_custom_command_set_gets_its_own_parameters():
    cfg = cfgmod.from_flat({"commands.names": ["go", "halt"], "commands.abstain": "halt",
                            "commands.go.linear_x": 0.3, "commands.go.phrases": ["go"]})
    assert cfg.commands.table["go"].linear_x == 0.3 and cfg.thresholds() == {"go": 0.0, "halt": 0.0}


@pytest.mark.parametrize("values,name", [
    ({"smoothing.sigma": -1.0}, "smoothing.sigma"),
    ({"smoothing.sigma": "big"}, "smoothing.sigma"),
    ({"smoothing.n0": 1.5}, "smoothing.n0"),
    ({"smoothing.mode": "magic"}, "smoothing.mode"),
    ({"node.use_stamped": 1}, "node.use_stamped"),
    ({"commands.fly.linear_x": 1.0}, "commands.fly.linear_x"),
    ({"commands.abstain": "fly"}, "commands.abstain"),
    ({"commands.names": []}, "commands.names"),
    ({"no.such": 1}, "no.such"),
    ({"commands.left.phrases": "turn left"}, "commands.left.phrases"),
])
def test_bad_values_raise_config_error_naming_the_parameter(values, name):
    with pytest.raises(ConfigError, match=name.replace(".", r"\.")):
        cfgmod.from_flat(values)


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8),
                    st.lists(st.integers(), max_size=3))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([s.name for s in SPECS]), scalars)
def test_any_value_for_any_parameter_is_accepted_validly_or_rejected_by_name(name, value):
    try:
        cfg = cfgmod.from_flat({name: value})
    except ConfigError as exc:
        assert name in str(exc) or "commands." in str(exc)
    else:
        assert cfg.to_flat()[name] == cfgmod.coerce({s.name: s for s in SPECS}[name], value)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_parameter_file_text_loads_or_raises_config_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("yaml") / "p.yaml"
    path.write_text(text)
    try:
        param_files.load_config(path)
    except ConfigError:
        pass


def test_runtime_update_accepts_safe_parameters_and_rejects_read_only_ones():
    cfg = cfgmod.update(Config(), {"smoothing.sigma": 0.5, "commands.forward.radius_threshold": 0.4})
    assert cfg.smoothing.sigma == 0.5 and cfg.thresholds()["forward"] == 0.4
    with pytest.raises(ConfigError, match="model.path"):
        cfgmod.update(Config(), {"model.path": "/elsewhere"})
    with pytest.raises(ConfigError, match="smoothing.alpha"):
        cfgmod.update(Config(), {"smoothing.alpha": 2.0})


@pytest.mark.parametrize("changes", [
    {"commands.forward.radius_threshold": 2.0},  # at sigma 0.25 needs ~1e16 samples: the reported hang
    {"commands.left.radius_threshold": 0.7},  # needs 2701 > n_max 2000
    {"smoothing.n_max": 30},  # forward's 0.25 needs 40
    {"smoothing.sigma": 0.05},  # forward's 0.25 is 5 sigma
])
def test_defect1_a_threshold_n_max_cannot_certify_is_refused_naming_it_n_min_and_n_max(changes):
    with pytest.raises(ConfigError, match=r"commands\.\w+\.radius_threshold.*n_min.*smoothing\.n_max is \d+"):
        cfgmod.update(Config(), changes)


def test_defect1_the_abstain_command_never_needs_a_certifiable_threshold():
    cfg = cfgmod.from_flat({"commands.stop.radius_threshold": 50.0})
    assert cfg.thresholds()["stop"] == 0.0


def test_an_oracle_error_without_its_confidence_level_is_refused():
    with pytest.raises(ConfigError, match=r"oracle\.error_alpha"):
        cfgmod.from_flat({"oracle.error": 0.02})
    assert cfgmod.from_flat({"oracle.error": 0.02, "oracle.error_alpha": 0.001}).oracle.error_alpha == 0.001


# ---------------------------------------------------------------- issue 15 (3): run-time changes only tighten

LOOSER = [  # (parameter, tighter value, looser value) from a base whose limits are all on
    ("smoothing.alpha", 0.0005, 0.002),
    ("oracle.error", 0.05, 0.01),
    ("oracle.error_alpha", 0.0005, 0.002),
    ("node.max_frame_age", 0.4, 0.6),
    ("node.command_ttl", 0.3, 0.45),
    ("node.max_stamp_lead", 0.05, 0.2),
    ("node.max_instruction_age", 30.0, 0.0),  # 0 = never expires: the loosest of all
    ("node.decision_deadline", 1.0, 0.0),  # 0 = no deadline
    ("commands.forward.radius_threshold", 0.3, 0.2),
    ("node.max_camera_skew", 0.02, 0.1),
    ("state.max_age", 0.3, 0.6),
]
ON = {"oracle.error": 0.02, "oracle.error_alpha": 0.001, "node.max_instruction_age": 60.0, "node.command_ttl": 0.4}


@pytest.mark.parametrize("name,tighter,looser", LOOSER)
def test_issue15_3_a_guarantee_parameter_may_only_tighten_at_run_time(name, tighter, looser):
    base = cfgmod.from_flat(ON)
    assert cfgmod.update(base, {name: tighter}).to_flat()[name] == tighter
    with pytest.raises(ConfigError, match=rf"'{re.escape(name)}': may only be (lowered|raised) at run time.*restart"):
        cfgmod.update(base, {name: looser})
    assert cfgmod.from_flat({**ON, name: looser}).to_flat()[name] == looser  # a restart with the file may


def test_issue15_3_every_guarantee_parameter_has_a_direction_and_only_those_are_listed():
    tightening = {s.name for s in cfgmod.param_specs() if s.tighten}
    assert tightening == {name for name, _, _ in LOOSER} | {f"commands.{c}.radius_threshold" for c in Config().commands.names}


def test_issue15_3_the_oracle_level_may_be_set_when_an_oracle_error_is_first_declared():
    cfg = cfgmod.update(Config(), {"oracle.error": 0.03, "oracle.error_alpha": 0.01})
    assert (cfg.oracle.error, cfg.oracle.error_alpha) == (0.03, 0.01)


@pytest.mark.parametrize("name", ["node.max_frame_age", "node.command_ttl", "node.decision_deadline",
                                  "node.max_instruction_age", "node.max_stamp_lead", "node.abstain_publish_timeout"])
def test_issue15_3_every_age_and_ttl_has_an_upper_bound(name):
    spec = next(s for s in cfgmod.param_specs() if s.name == name)
    assert spec.high is not None and spec.high <= 86_400.0
    with pytest.raises(ConfigError, match=re.escape(name)):
        cfgmod.from_flat({name: spec.high * 2})


def test_issue15_3_a_command_ttl_longer_than_the_frame_age_limit_is_refused():
    with pytest.raises(ConfigError, match=r"'node\.command_ttl'.*max_frame_age"):
        cfgmod.from_flat({"node.command_ttl": 0.8, "node.max_frame_age": 0.5})
    assert cfgmod.from_flat({"node.command_ttl": 0.5, "node.max_frame_age": 0.5}).node.command_ttl == 0.5


@pytest.mark.parametrize("field", ["linear_x", "linear_y", "angular_z"])
def test_issue15_3_an_abstain_command_that_moves_is_refused_naming_the_field(field):
    with pytest.raises(ConfigError, match=rf"'commands\.stop\.{field}'.*standstill"):
        cfgmod.from_flat({f"commands.stop.{field}": 0.1})
    with pytest.raises(ConfigError, match=r"'commands\.forward\.linear_x'.*standstill"):
        cfgmod.from_flat({"commands.abstain": "forward"})  # forward drives on


# ---------------------------------------------------------------- real-VLA model and action-mapping parameters
def test_every_backend_option_a_real_vla_needs_is_a_parameter_with_a_description():
    names = {s.name: s for s in SPECS}
    for name in ("model.prompt_template", "model.unnorm_key", "model.image_size", "model.dtype",
                 "model.trust_remote_code", "cameras.camera.model_key", "model.state", "oracle.action_linear_x_index",
                 "oracle.action_linear_x_scale", "oracle.action_angular_z_index", "oracle.action_angular_z_scale"):
        assert len(names[name].description) > 40, name
    assert "lerobot" in names["model.backend"].choices
    assert (names["model.image_size"].low, names["model.image_size"].high) == (0, 8192)
    assert names["oracle.action_angular_z_index"].low == -1
    cfg = cfgmod.from_flat({"model.state": [0, 1.5], "model.image_size": 512})
    assert cfg.model.state == (0.0, 1.5) and cfg.model.image_size == 512


@pytest.mark.parametrize("template,why", [
    ("In: What action should the robot take?", "must contain {instruction}"),
    ("{instruction} {robot}", "braces may only hold {instruction}"),
    ("{instruction} {", "literal braces"),
    ("{0} {instruction}", "braces may only hold {instruction}"),
    ("{instruction.upper}", "braces may only hold {instruction}"),
    ("{instruction!r}", "braces may only hold {instruction}"),
])
def test_a_prompt_template_must_place_the_instruction_and_nothing_else(template, why):
    with pytest.raises(ConfigError, match=r"model\.prompt_template.*" + why.replace("{", r"\{").replace("}", r"\}")):
        cfgmod.from_flat({"model.prompt_template": template})
    ok = cfgmod.from_flat({"model.prompt_template": "In: What action should the robot take to {instruction}?\nOut:"})
    assert ok.model.prompt_template.format(instruction="x") == "In: What action should the robot take to x?\nOut:"


@pytest.mark.parametrize("flat,source", [({"model.mode": "action"}, "model.mode"),
                                         ({"model.backend": "lerobot"}, "model.backend")])
def test_action_outputs_need_the_action_oracle(flat, source):
    with pytest.raises(ConfigError, match=rf"oracle\.kind.*{source.replace('.', '[.]')}.*oracle\.kind: action"):
        cfgmod.from_flat(flat)
    assert cfgmod.from_flat({**flat, "oracle.kind": "action"}).oracle.kind == "action"


def test_the_action_to_twist_mapping_lists_the_mapped_fields_in_twist_order():
    cfg = cfgmod.from_flat({"oracle.kind": "action", "oracle.action_angular_z_index": 5,
                            "oracle.action_angular_z_scale": 5.0, "oracle.action_linear_x_index": 0})
    assert cfg.oracle.action_axes() == {"linear_x": (0, 1.0), "angular_z": (5, 5.0)}
    assert Config().oracle.action_axes() == {}


@pytest.mark.parametrize("flat,name", [
    ({"oracle.action_linear_x_index": 5, "oracle.action_angular_z_index": 5}, "oracle.action_angular_z_index"),
    ({"oracle.action_angular_z_index": 5}, "commands.stop.angular_z"),  # forward and stop both turn at 0
    ({"oracle.action_linear_x_index": 0, "oracle.action_angular_z_index": 5, "commands.left.prototype": [0.0, 0.6]},
     "commands.left.prototype"),
])
def test_an_action_mapping_that_cannot_tell_commands_apart_is_refused_by_name(flat, name):
    with pytest.raises(ConfigError, match=name.replace(".", r"\.")):
        cfgmod.from_flat({"oracle.kind": "action", **flat})


def test_default_yaml_documents_every_parameter_with_its_description_and_range():
    text = (ROOT / "config" / "default.yaml").read_text()
    for spec in SPECS:
        assert f"# {spec.description}" in text, spec.name
        if spec.choices:
            assert f"(one of: {', '.join(spec.choices)})" in text, spec.name
    assert "(range [0.0001, 4]); changeable at run time" in text  # smoothing.sigma
