"""A MuJoCo room with a kinematic differential-drive robot and coloured objects (no ROS).

The robot carries an egocentric RGB camera at its front and a second, rear-facing one of the
same intrinsics (rendered only when asked for); `World.correct_command(target)` gives the
ground-truth navigation command from the simulator state, which labels the demo VLA's
training data and scores closed-loop runs.

Command convention (all angles are bearings of the target's centre in the robot frame,
positive to the left, measured from the robot's centre):
  * "stop"    -- distance < REACH_DISTANCE and |bearing| < STOP_BEARING (close, roughly ahead);
  * "left"    -- bearing > TURN_BEARING;
  * "right"   -- bearing < -TURN_BEARING;
  * "forward" -- otherwise.
A target outside the camera's field of view follows the same rule, i.e. the robot turns
towards it by the sign of its bearing (a single frame cannot show which side it is on,
so a policy that only sees the camera can at best guess there).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

# Headless rendering: EGL on a machine with an NVIDIA GPU, OSMesa (CPU) elsewhere; an explicit
# MUJOCO_GL wins.
os.environ.setdefault("MUJOCO_GL", "egl" if os.path.exists("/dev/nvidia0") else "osmesa")
import mujoco  # noqa: E402  (MUJOCO_GL must be set before the import)

ROOM_HALF = 2.0  # inner faces of the walls at x, y = +-2 m: a 4 m x 4 m room
ROBOT_RADIUS = 0.2
WHEEL_RADIUS = 0.05  # the differential drive's two wheels (joint states; the robot itself is kinematic)
WHEEL_SEPARATION = 0.3
CAMERA_HEIGHT = 0.3
CAMERA_FORWARD = 0.19  # just inside the robot's front edge
CAMERA_FOVY = 70.0  # degrees; horizontal FOV follows from the aspect ratio
REACH_DISTANCE = 0.6
STOP_BEARING = math.radians(30.0)
TURN_BEARING = math.radians(12.0)
MAX_SUBSTEP = 0.02  # seconds; collision checks happen at this granularity
COMMANDS = ("forward", "left", "right", "stop")
FRONT_CAMERA, REAR_CAMERA = "ego", "rear"  # MuJoCo camera names
# Where each camera looks, relative to the robot's heading (radians).
CAMERA_HEADINGS = {FRONT_CAMERA: 0.0, REAR_CAMERA: math.pi}


@dataclass(frozen=True)
class ObjectSpec:
    """One object kind: its name (as used in instructions), MuJoCo shape, colour and size."""

    name: str
    shape: str  # MuJoCo geom type: "box" | "sphere" | "cylinder"
    rgba: tuple[float, float, float, float]
    size: tuple[float, ...]  # MuJoCo geom size (half extents / radius, half height)

    @property
    def radius(self) -> float:
        """Footprint radius used for placement and collision (circumscribed circle)."""
        if self.shape == "box":
            return math.hypot(self.size[0], self.size[1])
        return self.size[0]

    @property
    def half_height(self) -> float:
        """Half height, so the object rests on the floor."""
        return self.size[0] if self.shape == "sphere" else self.size[-1]


OBJECTS: tuple[ObjectSpec, ...] = (
    ObjectSpec("red box", "box", (0.85, 0.1, 0.1, 1.0), (0.15, 0.15, 0.15)),
    ObjectSpec("blue ball", "sphere", (0.1, 0.25, 0.9, 1.0), (0.16,)),
    ObjectSpec("green cylinder", "cylinder", (0.1, 0.7, 0.15, 1.0), (0.12, 0.22)),
    ObjectSpec("yellow box", "box", (0.95, 0.85, 0.1, 1.0), (0.15, 0.15, 0.15)),
)


def _body_name(spec: ObjectSpec) -> str:
    """MuJoCo body name of an object ("red box" -> "obj_red_box")."""
    return "obj_" + spec.name.replace(" ", "_")


def _scene_xml(width: int, height: int) -> str:
    """The MJCF of the room, robot and objects (objects are mocap bodies, placed at reset)."""
    wall_t = 0.05
    walls = "".join(
        f'<geom name="wall_{i}" type="box" pos="{x} {y} 1.2" size="{sx} {sy} 1.2" material="wall"/>'
        for i, (x, y, sx, sy) in enumerate(
            [
                (ROOM_HALF + wall_t, 0, wall_t, ROOM_HALF + 2 * wall_t),
                (-ROOM_HALF - wall_t, 0, wall_t, ROOM_HALF + 2 * wall_t),
                (0, ROOM_HALF + wall_t, ROOM_HALF + 2 * wall_t, wall_t),
                (0, -ROOM_HALF - wall_t, ROOM_HALF + 2 * wall_t, wall_t),
            ]
        )
    )
    objects = "".join(
        f'<body name="{_body_name(s)}" mocap="true" pos="0 0 {s.half_height}">'
        f'<geom name="{_body_name(s)}" type="{s.shape}" size="{" ".join(map(str, s.size))}" '
        f'rgba="{" ".join(map(str, s.rgba))}"/></body>'
        for s in OBJECTS
    )
    return f"""
<mujoco model="rs_guard_room">
  <visual>
    <global offwidth="{max(width, 640)}" offheight="{max(height, 480)}"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.5 0.5 0.5"/>
  </visual>
  <asset>
    <texture name="floor" type="2d" builtin="checker" rgb1="0.55 0.55 0.52" rgb2="0.45 0.45 0.43"
             width="256" height="256"/>
    <material name="floor" texture="floor" texrepeat="8 8"/>
    <material name="wall" rgba="0.82 0.78 0.70 1"/>
  </asset>
  <worldbody>
    <light pos="0 0 3.5" dir="0 0 -1" diffuse="0.5 0.5 0.5" castshadow="false"/>
    <geom name="floor" type="plane" size="{ROOM_HALF + 0.2} {ROOM_HALF + 0.2} 0.1" material="floor"/>
    {walls}
    {objects}
    <body name="robot" pos="0 0 0">
      <joint name="x" type="slide" axis="1 0 0"/>
      <joint name="y" type="slide" axis="0 1 0"/>
      <joint name="yaw" type="hinge" axis="0 0 1"/>
      <geom name="chassis" type="cylinder" size="{ROBOT_RADIUS} 0.12" pos="0 0 0.12" rgba="0.3 0.3 0.3 1"/>
      <camera name="{FRONT_CAMERA}" pos="{CAMERA_FORWARD} 0 {CAMERA_HEIGHT}" xyaxes="0 -1 0 0 0 1" fovy="{CAMERA_FOVY}"/>
      <camera name="{REAR_CAMERA}" pos="{-CAMERA_FORWARD} 0 {CAMERA_HEIGHT}" xyaxes="0 1 0 0 0 1" fovy="{CAMERA_FOVY}"/>
    </body>
  </worldbody>
</mujoco>
"""


def wheel_velocities(linear_x: float, angular_z: float) -> tuple[float, float]:
    """(left, right) wheel angular velocities (rad/s) that realise a unicycle command."""
    half_track = 0.5 * WHEEL_SEPARATION * angular_z
    return (linear_x - half_track) / WHEEL_RADIUS, (linear_x + half_track) / WHEEL_RADIUS


def wrap_angle(angle: float) -> float:
    """Wrap an angle to (-pi, pi]."""
    return math.atan2(math.sin(angle), math.cos(angle))


class World:
    """The room: reset a layout, drive the robot, render its camera, query ground truth."""

    def __init__(self, width: int = 128, height: int = 96, seed: int | None = None) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"width and height must be positive, got width={width}, height={height}")
        self.width = width
        self.height = height
        self.model = mujoco.MjModel.from_xml_string(_scene_xml(width, height))
        self.data = mujoco.MjData(self.model)
        self._renderer: mujoco.Renderer | None = mujoco.Renderer(self.model, height=height, width=width)
        self._rng = np.random.default_rng(seed)
        self._mocap = {s.name: self.model.body(_body_name(s)).mocapid[0] for s in OBJECTS}
        self._specs = {s.name: s for s in OBJECTS}
        self._robot_body = self.model.body("robot").id
        self.reset()

    # ----------------------------------------------------------------- state
    @property
    def horizontal_fov(self) -> float:
        """Horizontal field of view of the camera in radians (from fovy and the aspect ratio)."""
        half = math.tan(math.radians(CAMERA_FOVY) / 2) * self.width / self.height
        return 2 * math.atan(half)

    @property
    def robot_pose(self) -> tuple[float, float, float]:
        """(x, y, yaw) of the robot in the room frame (metres, radians)."""
        x, y, yaw = self.data.qpos[:3]
        return float(x), float(y), wrap_angle(float(yaw))

    @property
    def objects(self) -> dict[str, tuple[float, float]]:
        """Object name -> (x, y) position of its centre on the floor."""
        return {name: tuple(float(v) for v in self.data.mocap_pos[i, :2]) for name, i in self._mocap.items()}

    # ----------------------------------------------------------------- layout
    def reset(
        self,
        robot_pose: tuple[float, float, float] | None = None,
        object_positions: dict[str, tuple[float, float]] | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        """Place objects and robot; anything not given is drawn at random without overlap."""
        rng = self._rng if rng is None else rng
        placed: dict[str, tuple[float, float]] = {}
        given = dict(object_positions or {})
        unknown = set(given) - set(self._specs)
        if unknown:
            raise ValueError(f"object_positions has unknown objects {sorted(unknown)}; known: {list(self._specs)}")
        for name, pos in given.items():
            placed[name] = (float(pos[0]), float(pos[1]))
        robot_xy = None if robot_pose is None else (float(robot_pose[0]), float(robot_pose[1]))
        for spec in OBJECTS:
            if spec.name not in placed:
                placed[spec.name] = self._free_spot(spec.radius, placed, robot_xy, rng)
        for name, (x, y) in placed.items():
            self.data.mocap_pos[self._mocap[name]] = (x, y, self._specs[name].half_height)
        if robot_pose is None:
            x, y = self._free_spot(ROBOT_RADIUS, placed, None, rng)
            robot_pose = (x, y, float(rng.uniform(-math.pi, math.pi)))
        self.data.qpos[:3] = robot_pose
        mujoco.mj_forward(self.model, self.data)

    def _free_spot(
        self,
        radius: float,
        placed: dict[str, tuple[float, float]],
        robot_xy: tuple[float, float] | None,
        rng: np.random.Generator,
    ) -> tuple[float, float]:
        """A random floor point where a disc of `radius` touches neither walls, objects nor robot."""
        margin = 0.1
        for _ in range(1000):
            x, y = rng.uniform(-ROOM_HALF + radius + margin, ROOM_HALF - radius - margin, size=2)
            clear = all(
                math.hypot(x - px, y - py) > radius + self._specs[n].radius + margin for n, (px, py) in placed.items()
            )
            if clear and (robot_xy is None or math.hypot(x - robot_xy[0], y - robot_xy[1]) > radius + ROBOT_RADIUS + margin):
                return float(x), float(y)
        raise RuntimeError("could not place an object without overlap; the room is too crowded")

    def is_free(self, x: float, y: float) -> bool:
        """True when the robot centred at (x, y) is inside the walls and clear of every object."""
        if abs(x) > ROOM_HALF - ROBOT_RADIUS or abs(y) > ROOM_HALF - ROBOT_RADIUS:
            return False
        return all(
            math.hypot(x - ox, y - oy) >= ROBOT_RADIUS + self._specs[name].radius
            for name, (ox, oy) in self.objects.items()
        )

    # ----------------------------------------------------------------- motion
    def step(self, linear_x: float, angular_z: float, dt: float) -> None:
        """Integrate unicycle kinematics for `dt` seconds; a move into a wall or object is refused."""
        if not (math.isfinite(linear_x) and math.isfinite(angular_z)):
            raise ValueError(f"linear_x and angular_z must be finite, got {linear_x}, {angular_z}")
        if not (math.isfinite(dt) and dt >= 0):
            raise ValueError(f"dt must be finite and >= 0, got {dt}")
        n = max(1, math.ceil(dt / MAX_SUBSTEP))
        h = dt / n
        x, y, yaw = self.robot_pose
        for _ in range(n):
            # Midpoint heading: exact for constant (v, w) to second order.
            mid = yaw + 0.5 * angular_z * h
            nx, ny = x + linear_x * h * math.cos(mid), y + linear_x * h * math.sin(mid)
            if self.is_free(nx, ny):
                x, y = nx, ny
            yaw = wrap_angle(yaw + angular_z * h)
        self.data.qpos[:3] = (x, y, yaw)
        mujoco.mj_forward(self.model, self.data)

    # ----------------------------------------------------------------- sensing
    def render(self, camera: str = FRONT_CAMERA) -> np.ndarray:
        """One camera's image (the front one by default): uint8 RGB, shape (height, width, 3)."""
        if self._renderer is None:
            raise RuntimeError("World is closed")
        if camera not in CAMERA_HEADINGS:
            raise ValueError(f"camera must be one of {list(CAMERA_HEADINGS)}, got {camera!r}")
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render().copy()

    def _spec(self, target: str) -> ObjectSpec:
        """The object called `target`, or a ValueError naming the known objects."""
        if target not in self._specs:
            raise ValueError(f"target must be one of {list(self._specs)}, got {target!r}")
        return self._specs[target]

    def target_geometry(self, target: str) -> tuple[float, float]:
        """(distance, bearing) of the target centre from the robot centre; bearing > 0 is left."""
        self._spec(target)
        x, y, yaw = self.robot_pose
        tx, ty = self.objects[target]
        return math.hypot(tx - x, ty - y), wrap_angle(math.atan2(ty - y, tx - x) - yaw)

    def in_view(self, target: str, camera: str = FRONT_CAMERA) -> bool:
        """True when the target's centre lies inside `camera`'s horizontal field of view."""
        x, y, yaw = self.robot_pose
        heading = yaw + CAMERA_HEADINGS[camera]
        cx, cy = x + CAMERA_FORWARD * math.cos(heading), y + CAMERA_FORWARD * math.sin(heading)
        tx, ty = self.objects[target]
        return abs(wrap_angle(math.atan2(ty - cy, tx - cx) - heading)) < self.horizontal_fov / 2

    def visible(self, target: str, camera: str = FRONT_CAMERA) -> bool:
        """True when the target is in `camera`'s view and the ray from it to the target's centre hits it first."""
        if not self.in_view(target, camera):
            return False
        cam = self.data.cam(camera).xpos.copy()
        goal = self.data.mocap_pos[self._mocap[target]]
        geomid = np.array([-1], dtype=np.int32)
        mujoco.mj_ray(self.model, self.data, cam, goal - cam, None, 1, self._robot_body, geomid)
        return int(geomid[0]) == self.model.geom(_body_name(self._spec(target))).id

    def reached(self, target: str) -> bool:
        """True when the robot is at `target`: close and facing it (the "stop" region)."""
        distance, bearing = self.target_geometry(target)
        return distance < REACH_DISTANCE and abs(bearing) < STOP_BEARING

    def correct_command(self, target: str) -> str:
        """Ground-truth command towards `target` (convention in the module docstring)."""
        _, bearing = self.target_geometry(target)
        if self.reached(target):
            return "stop"
        if bearing > TURN_BEARING:
            return "left"
        if bearing < -TURN_BEARING:
            return "right"
        return "forward"

    def close(self) -> None:
        """Free the renderer's GL context (explicitly, to avoid teardown noise)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> "World":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
