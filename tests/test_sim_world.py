"""The MuJoCo demo world: rendering, unicycle kinematics, walls, and ground-truth commands."""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("mujoco")
from rs_guard_ros.sim.world import OBJECTS, ROOM_HALF, ROBOT_RADIUS, World  # noqa: E402

# Objects parked in the corners, away from the robot's path in the tests below.
CORNERS = {
    "red box": (1.6, 1.6),
    "blue ball": (-1.6, 1.6),
    "green cylinder": (-1.6, -1.6),
    "yellow box": (1.6, -1.6),
}


@pytest.fixture()
def world():
    w = World(seed=0)
    yield w
    w.close()


def test_render_is_rgb_uint8_of_the_requested_size_and_not_blank(world: World) -> None:
    img = world.render()
    assert img.shape == (96, 128, 3) and img.dtype == np.uint8
    assert img.std() > 10  # floor, walls and objects, not a constant colour


def test_render_shows_the_object_colour_in_front_of_the_robot(world: World) -> None:
    positions = dict(CORNERS, **{"red box": (0.0, 0.0)})
    world.reset(robot_pose=(-1.0, 0.0, 0.0), object_positions=positions)
    img = world.render().astype(int)
    centre = img[40:70, 54:74]
    red = (centre[..., 0] > 150) & (centre[..., 1] < 80) & (centre[..., 2] < 80)
    assert red.mean() > 0.5


def test_reset_places_objects_without_overlap_and_robot_in_free_space() -> None:
    with World(seed=1) as w:
        for _ in range(20):
            w.reset()
            pos = w.objects
            assert set(pos) == {s.name for s in OBJECTS}
            specs = {s.name: s for s in OBJECTS}
            names = list(pos)
            for i, a in enumerate(names):
                for b in names[i + 1 :]:
                    d = math.dist(pos[a], pos[b])
                    assert d > specs[a].radius + specs[b].radius
            assert w.is_free(*w.robot_pose[:2])


def test_driving_forward_moves_along_the_heading(world: World) -> None:
    yaw = math.radians(30)
    world.reset(robot_pose=(0.0, 0.0, yaw), object_positions=CORNERS)
    world.step(0.5, 0.0, 1.0)
    x, y, new_yaw = world.robot_pose
    assert x == pytest.approx(0.5 * math.cos(yaw), abs=1e-6)
    assert y == pytest.approx(0.5 * math.sin(yaw), abs=1e-6)
    assert new_yaw == pytest.approx(yaw)


def test_turning_changes_yaw_with_the_sign_of_angular_z(world: World) -> None:
    world.reset(robot_pose=(0.0, 0.0, 0.0), object_positions=CORNERS)
    world.step(0.0, 0.5, 1.0)
    assert world.robot_pose[2] == pytest.approx(0.5)
    world.step(0.0, -1.0, 1.0)
    assert world.robot_pose[2] == pytest.approx(-0.5)
    assert world.robot_pose[:2] == pytest.approx((0.0, 0.0))


@pytest.mark.parametrize("yaw", [0.0, math.pi / 2, math.pi, -math.pi / 2, math.pi / 4])
def test_robot_cannot_leave_the_room(world: World, yaw: float) -> None:
    world.reset(robot_pose=(0.0, 0.0, yaw), object_positions=CORNERS)
    world.step(1.0, 0.0, 10.0)  # 10 m of travel straight at a wall
    x, y, _ = world.robot_pose
    assert abs(x) <= ROOM_HALF - ROBOT_RADIUS + 1e-9 and abs(y) <= ROOM_HALF - ROBOT_RADIUS + 1e-9


def test_robot_stops_at_an_object_instead_of_driving_through(world: World) -> None:
    positions = dict(CORNERS, **{"red box": (1.0, 0.0)})
    world.reset(robot_pose=(-1.0, 0.0, 0.0), object_positions=positions)
    world.step(1.0, 0.0, 5.0)
    x, _, _ = world.robot_pose
    assert x < 1.0 - ROBOT_RADIUS
    assert x > 0.0  # it did drive up to the box


@pytest.mark.parametrize(
    ("robot_pose", "command"),
    [
        ((-1.5, 0.0, 0.0), "forward"),  # straight ahead, far
        ((-1.5, 0.0, -math.radians(40)), "left"),  # target 40 deg to the left
        ((-1.5, 0.0, math.radians(40)), "right"),  # target 40 deg to the right
        ((-1.5, 0.0, 0.3 - math.pi), "left"),  # behind, out of view: turn by the bearing's sign
        ((-1.5, 0.0, math.pi - 0.3), "right"),
        ((-0.45, 0.0, 0.0), "stop"),  # close, ahead
        ((-0.45, 0.0, math.radians(60)), "right"),  # close but not ahead
    ],
)
def test_correct_command_agrees_with_geometry(world: World, robot_pose, command: str) -> None:
    positions = dict(CORNERS, **{"red box": (0.0, 0.0)})
    world.reset(robot_pose=robot_pose, object_positions=positions)
    assert world.correct_command("red box") == command


def test_visibility_follows_field_of_view_and_occlusion(world: World) -> None:
    positions = dict(CORNERS, **{"red box": (0.0, 0.0), "blue ball": (1.0, 0.0)})
    world.reset(robot_pose=(-1.5, 0.0, 0.0), object_positions=positions)
    assert world.visible("red box")
    assert world.in_view("blue ball") and not world.visible("blue ball")  # hidden behind the box
    world.reset(robot_pose=(-1.5, 0.0, math.pi), object_positions=positions)
    assert not world.in_view("red box") and not world.visible("red box")


def test_bad_arguments_raise_value_errors(world: World) -> None:
    with pytest.raises(ValueError, match="target"):
        world.correct_command("purple unicorn")
    with pytest.raises(ValueError, match="object_positions"):
        world.reset(object_positions={"purple unicorn": (0.0, 0.0)})
    with pytest.raises(ValueError, match="dt"):
        world.step(0.1, 0.0, -1.0)
    with pytest.raises(ValueError, match="linear_x"):
        world.step(float("nan"), 0.0, 0.1)


def test_rear_camera_renders_the_scene_behind_the_robot_at_the_front_cameras_size(world: World) -> None:
    positions = dict(CORNERS, **{"red box": (-1.0, 0.0)})  # straight behind the robot
    world.reset(robot_pose=(0.0, 0.0, 0.0), object_positions=positions)
    front, rear = world.render(), world.render("rear")
    assert rear.shape == front.shape == (96, 128, 3) and rear.dtype == np.uint8
    assert np.abs(front.astype(int) - rear.astype(int)).mean() > 5  # a different view
    red = lambda img: ((img[..., 0] > 150) & (img[..., 1] < 100) & (img[..., 2] < 100)).mean()  # noqa: E731
    assert red(rear.astype(int)[50:76, 52:76]) > 0.5 and red(front.astype(int)) == 0.0
    assert world.visible("red box", "rear") and not world.in_view("red box")


def test_rear_camera_mirrors_sides_a_target_behind_on_the_left_shows_on_the_right(world: World) -> None:
    positions = dict(CORNERS, **{"red box": (-1.2, 0.45)})
    world.reset(robot_pose=(0.0, 0.0, 0.0), object_positions=positions)
    assert world.correct_command("red box") == "left"
    img = world.render("rear").astype(int)
    cols = np.nonzero((img[..., 0] > 150) & (img[..., 1] < 100) & (img[..., 2] < 100))[1]
    assert cols.size and cols.mean() > 64  # the robot's left is the rear image's right half


def test_render_refuses_an_unknown_camera(world: World) -> None:
    with pytest.raises(ValueError, match="camera must be one of"):
        world.render("top")


def test_wheel_velocities_realise_the_unicycle_command() -> None:
    from rs_guard_ros.sim.world import WHEEL_RADIUS, WHEEL_SEPARATION, wheel_velocities

    left, right = wheel_velocities(0.25, 0.0)
    assert left == right == pytest.approx(0.25 / WHEEL_RADIUS)
    left, right = wheel_velocities(0.0, 0.6)  # turning left in place: the wheels spin opposite
    assert left == pytest.approx(-right) and right > 0
    assert (right - left) * WHEEL_RADIUS / WHEEL_SEPARATION == pytest.approx(0.6)
