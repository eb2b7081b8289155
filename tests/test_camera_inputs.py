"""camera_inputs: the command line's one image (or topic) per camera and joint state, parsed
from outside text into exactly what was meant, or refused with a one-line ValueError."""
import json

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from rs_guard_ros.camera_inputs import joint_state, per_camera

NAMES = st.text(st.characters(whitelist_categories=("Ll", "Lu", "Nd"), whitelist_characters="_"), min_size=1,
                max_size=8)
VALUES = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(st.lists(NAMES, min_size=1, max_size=4, unique=True), st.data())
def test_camera_equals_value_round_trips_for_any_cameras_and_values(cameras, data):
    """Every camera's value comes back exactly, whatever the value holds ('=' included), in any order."""
    wanted = {c: data.draw(VALUES) for c in cameras}
    order = data.draw(st.permutations(cameras))
    assert per_camera([f"{c}={wanted[c]}" for c in order], cameras, "--image") == wanted


@settings(max_examples=100, deadline=None)
@given(NAMES, VALUES)
def test_one_camera_takes_a_plain_value_unless_it_starts_with_its_own_name(camera, value):
    assume(not value.startswith(f"{camera}="))
    assert per_camera([value], [camera], "--image") == {camera: value}
    assert per_camera([f"{camera}={value}"], [camera], "--image") == {camera: value}


@settings(max_examples=200, deadline=None)
@given(st.lists(NAMES, min_size=1, max_size=3, unique=True), st.lists(VALUES | st.text(max_size=30), max_size=4))
def test_any_other_text_is_a_value_error_naming_the_flag_never_another_exception(cameras, values):
    try:
        out = per_camera(values, cameras, "--image")
    except ValueError as exc:
        assert str(exc).startswith("--image") and "\n" not in str(exc)
    else:
        assert set(out) == set(cameras) and all(out.values())


@pytest.mark.parametrize("values,message", [
    (["front=a.png"], "--image: nothing for camera 'rear' (cameras.names: front, rear; give --image rear=PATH)"),
    (["a.png", "rear=b.png"], "--image a.png: 2 cameras (front, rear): give one --image CAMERA=PATH each"),
    (["side=a.png", "rear=b.png"], "--image side=a.png: no camera 'side' (cameras.names: front, rear)"),
    (["front=a.png", "front=b.png", "rear=c.png"], "--image: camera 'front' given twice"),
    (["front=", "rear=c.png"], "--image front=: camera 'front' has an empty value"),
])
def test_a_missing_unknown_repeated_or_empty_camera_is_one_line_naming_it(values, message):
    with pytest.raises(ValueError) as exc:
        per_camera(values, ("front", "rear"), "--image", "PATH")
    assert str(exc.value) == message


JOINTS = ("left_wheel", "right_wheel")
FINITE = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(NAMES, FINITE, max_size=4), FINITE, FINITE, st.data())
def test_state_text_and_json_give_the_positions_of_state_joint_names_in_order(tmp_path_factory, extra, left, right,
                                                                           data):
    """NAME=VALUE pairs (in any order, other joints ignored, as the node ignores them) and the same
    as a JSON file give the same vector, exactly, in state.joint_names' order."""
    joints = {**{k: v for k, v in extra.items() if k not in JOINTS}, "left_wheel": left, "right_wheel": right}
    order = data.draw(st.permutations(list(joints)))
    text = ",".join(f"{name}={joints[name]!r}" for name in order)
    assert joint_state(text, JOINTS).tolist() == [left, right]
    path = tmp_path_factory.mktemp("state") / "state.json"
    path.write_text(json.dumps({name: joints[name] for name in order}))
    assert joint_state(str(path), JOINTS).tolist() == [left, right]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_state_text_is_a_vector_of_finite_numbers_or_a_value_error_naming_the_flag(text):
    try:
        vector = joint_state(text, JOINTS)
    except ValueError as exc:
        assert str(exc).startswith("--state") and "\n" not in str(exc)
    else:
        assert vector.shape == (2,) and np.all(np.isfinite(vector))


@pytest.mark.parametrize("text,message", [
    ("left_wheel=1", "--state: malformed_state: joint 'right_wheel' is not in the joint state (1 missing)"),
    ("left_wheel=1,right_wheel=nan", "--state: joint 'right_wheel': 'nan' is not a finite number"),
    ("left_wheel=1,right_wheel=fast", "--state: joint 'right_wheel': 'fast' is not a number"),
    ("left_wheel=1,left_wheel=2,right_wheel=0", "--state: joint 'left_wheel' given twice"),
    ("left_wheel 1", "is not NAME=VALUE (or give a .json file)"),
])
def test_a_missing_joint_or_a_bad_number_is_one_line_naming_the_joint(text, message):
    with pytest.raises(ValueError, match=None) as exc:
        joint_state(text, JOINTS)
    assert message in str(exc.value)


def test_a_state_json_file_that_is_missing_not_an_object_or_not_numbers_is_one_line(tmp_path):
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "bool.json").write_text('{"left_wheel": true, "right_wheel": 0}')
    for name, message in (("none.json", "No such file"), ("list.json", "expected a JSON object"),
                          ("bool.json", "joint 'left_wheel': True is not a number")):
        with pytest.raises(ValueError, match=message):
            joint_state(str(tmp_path / name), JOINTS)
