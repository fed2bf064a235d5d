"""Core types shared by every source, planner and consumer (no heavy imports).

Conventions (docs/CONVENTIONS.md): ROS REP-103 axes (x forward, y left, z up, yaw
counter-clockwise, radians), SI units, the ego reference point at the rear-axle centre,
timestamps in seconds, 10 Hz planning, a 6.4 s (64 x 0.1 s) trajectory horizon.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from planner.taxonomy import (
    AgentClass,
    CausalFactorKind,
    Command,
    LateralDecision,
    LightState,
    LongitudinalDecision,
    Side,
)

if TYPE_CHECKING:  # shapely is only needed where geometry is evaluated
    from shapely.geometry.base import BaseGeometry

# ---- fixed conventions -------------------------------------------------------------------
PLAN_DT_S = 0.1  # planning period and trajectory step
PLAN_STEPS = 64  # 6.4 s horizon
HISTORY_STEPS = 16  # 1.6 s of past ego poses at 10 Hz (Alpamayo-R1)
MAX_ABS_ACCEL_MPS2 = 9.8  # Alpamayo-R1's control clamp
MAX_ABS_CURVATURE_PER_M = 0.33  # Alpamayo-R1's control clamp
MAX_SPEED_MPS = 70.0  # anything faster is a unit or integration bug

# Columns of an ego-history array (H, 7): one row per 0.1 s, oldest first, last row = now.
EGO_T, EGO_X, EGO_Y, EGO_YAW, EGO_SPEED, EGO_ACCEL, EGO_CURV = range(7)
EGO_HISTORY_COLUMNS = ("t", "x", "y", "yaw", "speed", "accel", "curvature")

# Columns of a trajectory array (64, 6), ego frame at t0.
TRAJ_X, TRAJ_Y, TRAJ_YAW, TRAJ_SPEED, TRAJ_ACCEL, TRAJ_CURV = range(6)
TRAJECTORY_COLUMNS = ("x", "y", "yaw", "speed", "accel", "curvature")


class InvalidInputError(ValueError):
    """Bad data handed to the core (non-finite pose, impossible control, wrong shape)."""


def wrap_angle(angle: float | np.ndarray) -> float | np.ndarray:
    """Wrap radians to [-pi, pi)."""
    return (np.asarray(angle) + math.pi) % (2.0 * math.pi) - math.pi


# ---- world state ---------------------------------------------------------------------------
@dataclass(frozen=True)
class EgoState:
    """Ego pose at the rear-axle centre, world frame."""

    t: float  # s
    x: float  # m
    y: float  # m
    yaw: float  # rad, counter-clockwise from world +x
    speed: float  # m/s along the heading
    accel: float = 0.0  # m/s^2 longitudinal
    curvature: float = 0.0  # 1/m, positive turns left
    length: float = 4.9  # m, bounding box
    width: float = 1.9  # m, bounding box
    rear_axle_to_center_m: float = 1.45  # box centre lies this far ahead of the rear axle

    def __post_init__(self) -> None:
        for name in ("t", "x", "y", "yaw", "speed", "accel", "curvature"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise InvalidInputError(
                    f"EgoState.{name} is {value} at t={self.t}: the pose source produced a "
                    "non-finite value; drop this sample or fix the upstream localisation"
                )

    @property
    def center_xy(self) -> tuple[float, float]:
        """Bounding-box centre (world frame)."""
        return (
            self.x + self.rear_axle_to_center_m * math.cos(self.yaw),
            self.y + self.rear_axle_to_center_m * math.sin(self.yaw),
        )

    def as_row(self) -> np.ndarray:
        """One row of an ego-history array (EGO_* columns)."""
        return np.array(
            [self.t, self.x, self.y, self.yaw, self.speed, self.accel, self.curvature],
            dtype=np.float64,
        )


@dataclass
class Agent:
    """Another road user or a static object. Pose at the box centre, world frame."""

    id: str
    agent_class: AgentClass
    x: float
    y: float
    yaw: float
    vx: float  # m/s, world frame
    vy: float  # m/s, world frame
    length: float
    width: float
    height: float = 1.5
    # (H, 5) past states t, x, y, yaw, speed, oldest first (optional; sources fill what they have)
    history: np.ndarray | None = None

    @property
    def speed(self) -> float:
        return math.hypot(self.vx, self.vy)

    @property
    def is_static(self) -> bool:
        return self.agent_class in (AgentClass.STATIC_OBSTACLE, AgentClass.CONE)

    def corners(self) -> np.ndarray:
        """(4, 2) box corners, counter-clockwise from front-left."""
        return box_corners(self.x, self.y, self.yaw, self.length, self.width)


def box_corners(cx: float, cy: float, yaw: float, length: float, width: float) -> np.ndarray:
    """(4, 2) corners of an oriented box: front-left, rear-left, rear-right, front-right."""
    c, s = math.cos(yaw), math.sin(yaw)
    hl, hw = length / 2.0, width / 2.0
    local = np.array([[hl, hw], [-hl, hw], [-hl, -hw], [hl, -hw]])
    rot = np.array([[c, -s], [s, c]])
    return local @ rot.T + np.array([cx, cy])


@dataclass
class Lane:
    """One lane: polylines (N, 2) in world metres, from start to end of travel."""

    id: str
    centerline: np.ndarray
    left_boundary: np.ndarray
    right_boundary: np.ndarray
    speed_limit_mps: float
    # boundary kinds for rendering and lane-change legality: "dashed", "solid", "road_edge", "none"
    left_boundary_kind: str = "dashed"
    right_boundary_kind: str = "dashed"
    successors: tuple[str, ...] = ()
    predecessors: tuple[str, ...] = ()
    left_neighbor: str | None = None  # same direction, to the left (+y of travel)
    right_neighbor: str | None = None

    @property
    def length(self) -> float:
        d = np.diff(self.centerline, axis=0)
        return float(np.hypot(d[:, 0], d[:, 1]).sum())


@dataclass
class StopLine:
    """A stop line across one or more lanes; `light_id` links it to a traffic light."""

    id: str
    points: np.ndarray  # (2, 2) world endpoints
    lane_ids: tuple[str, ...] = ()
    light_id: str | None = None
    is_stop_sign: bool = False


@dataclass
class TrafficLight:
    id: str
    state: LightState
    stop_line_id: str | None = None
    lane_ids: tuple[str, ...] = ()  # lanes it controls
    time_to_change_s: float | None = None  # known in simulation, unknown on real logs


@dataclass
class MapData:
    """Road geometry around the ego. `drivable_area` is a shapely geometry (or None: the
    union of lane polygons is then computed on demand by `planner.geometry`)."""

    lanes: dict[str, Lane] = field(default_factory=dict)
    stop_lines: dict[str, StopLine] = field(default_factory=dict)
    drivable_area: BaseGeometry | None = None
    name: str = ""


@dataclass
class Route:
    """Where the ego should go: lane ids in order and/or a world-frame polyline."""

    waypoints: np.ndarray  # (K, 2) world metres along the route
    lane_ids: tuple[str, ...] = ()
    command: Command = Command.LANE_FOLLOW
    length_m: float | None = None  # total length of the route to complete (metrics)

    def __post_init__(self) -> None:
        self.waypoints = np.asarray(self.waypoints, dtype=np.float64).reshape(-1, 2)
        if self.length_m is None and len(self.waypoints) > 1:
            d = np.diff(self.waypoints, axis=0)
            self.length_m = float(np.hypot(d[:, 0], d[:, 1]).sum())


@dataclass
class Scene:
    """Everything a source knows at one instant. Every source (simulator, CARLA, nuScenes,
    rosbag2, ScenarioNet) produces this; nothing downstream knows which one it was."""

    timestamp: float
    ego: EgoState
    ego_history: np.ndarray  # (H, 7) EGO_* columns, world frame, oldest first, last row = ego
    agents: list[Agent]
    map: MapData
    route: Route
    traffic_lights: list[TrafficLight] = field(default_factory=list)
    # Real camera frames where the source has them: name -> (T, H, W, 3) uint8, oldest first.
    cameras: dict[str, np.ndarray] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        hist = np.asarray(self.ego_history, dtype=np.float64)
        if hist.ndim != 2 or hist.shape[1] != len(EGO_HISTORY_COLUMNS):
            raise InvalidInputError(
                f"Scene.ego_history must be (H, {len(EGO_HISTORY_COLUMNS)}) with columns "
                f"{EGO_HISTORY_COLUMNS}, got shape {hist.shape}"
            )
        self.ego_history = hist

    def agent(self, agent_id: str) -> Agent:
        for a in self.agents:
            if a.id == agent_id:
                return a
        raise KeyError(f"no agent {agent_id!r} in scene at t={self.timestamp}")


# ---- planner I/O ----------------------------------------------------------------------------
@dataclass
class PlannerInput:
    """What a learned planner may see: cameras, its own past motion, and the route.

    Built from a `Scene` by the feature builder (`planner.features.build_planner_input`); it
    never carries other agents' ground truth (navsim keeps features apart from targets)."""

    timestamp: float
    ego_history: np.ndarray  # (H, 7) EGO_* columns in the ego frame at t0 (last row ~ origin)
    command: Command
    route_xy: np.ndarray  # (K, 2) route waypoints ahead, ego frame at t0
    speed_limit_mps: float
    cameras: np.ndarray | None = None  # (N_cam, T, H, W, 3) uint8
    camera_names: tuple[str, ...] = ()
    nav_text: str | None = None
    # "rendered" (SensorRig from vectors) or "real" (log/simulator images): labelled in results
    camera_source: str = "none"

    def __post_init__(self) -> None:
        hist = np.asarray(self.ego_history, dtype=np.float64)
        if hist.ndim != 2 or hist.shape[1] != len(EGO_HISTORY_COLUMNS) or len(hist) == 0:
            raise InvalidInputError(
                f"PlannerInput.ego_history must be (H>=1, 7), got shape {hist.shape}"
            )
        if not np.isfinite(hist).all():
            row, col = np.argwhere(~np.isfinite(hist))[0]
            raise InvalidInputError(
                f"PlannerInput.ego_history has a non-finite {EGO_HISTORY_COLUMNS[col]} at row "
                f"{row} (t={hist[row, EGO_T]}): check the odometry source or drop the sample"
            )
        self.ego_history = hist
        if self.cameras is not None:
            cams = np.asarray(self.cameras)
            if cams.ndim != 5 or cams.shape[-1] != 3 or cams.dtype != np.uint8:
                raise InvalidInputError(
                    "PlannerInput.cameras must be uint8 (N_cam, T, H, W, 3), got "
                    f"{cams.dtype} {cams.shape}"
                )
            if self.camera_names and len(self.camera_names) != cams.shape[0]:
                raise InvalidInputError(
                    f"{len(self.camera_names)} camera names for {cams.shape[0]} cameras"
                )

    @property
    def ego_speed(self) -> float:
        return float(self.ego_history[-1, EGO_SPEED])


@dataclass(frozen=True)
class CausalFactor:
    """One cause of a decision: an object, a light, a control, the lane geometry, the route."""

    kind: CausalFactorKind
    description: str = ""
    object_id: str | None = None
    object_class: AgentClass | None = None
    side: Side = Side.NONE
    distance_m: float | None = None  # along the ego's path, bumper to object
    relative_speed_mps: float | None = None  # object speed minus ego speed along the path

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "description": self.description,
            "object_id": self.object_id,
            "object_class": self.object_class.value if self.object_class else None,
            "side": self.side.value,
            "distance_m": self.distance_m,
            "relative_speed_mps": self.relative_speed_mps,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CausalFactor:
        return cls(
            kind=CausalFactorKind.parse(d["kind"]),
            description=d.get("description", ""),
            object_id=d.get("object_id"),
            object_class=AgentClass.parse(d["object_class"]) if d.get("object_class") else None,
            side=Side.parse(d.get("side", "none")),
            distance_m=d.get("distance_m"),
            relative_speed_mps=d.get("relative_speed_mps"),
        )


@dataclass(frozen=True)
class Decision:
    """A structured driving decision in the Alpamayo-R1 taxonomy, with what caused it."""

    longitudinal: LongitudinalDecision
    lateral: LateralDecision = LateralDecision.LANE_KEEPING
    lateral_side: Side = Side.NONE  # direction of a lane change / nudge / turn
    factors: tuple[CausalFactor, ...] = ()
    target_speed_mps: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "longitudinal": self.longitudinal.value,
            "lateral": self.lateral.value,
            "lateral_side": self.lateral_side.value,
            "factors": [f.to_dict() for f in self.factors],
            "target_speed_mps": self.target_speed_mps,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Decision:
        return cls(
            longitudinal=LongitudinalDecision.parse(d["longitudinal"]),
            lateral=LateralDecision.parse(d.get("lateral", "lane_keeping")),
            lateral_side=Side.parse(d.get("lateral_side", "none")),
            factors=tuple(CausalFactor.from_dict(f) for f in d.get("factors", [])),
            target_speed_mps=d.get("target_speed_mps"),
        )


@dataclass(frozen=True)
class Reasoning:
    """Chain-of-causation text plus the structured decision it states (None if unparsable)."""

    text: str
    decision: Decision | None = None


class Trajectory:
    """A 6.4 s plan: 64 steps x 0.1 s of (x, y, yaw, speed, accel, curvature) in the ego frame
    at t0. Row k is the state at t0 + (k + 1) * 0.1 s; `accel`/`curvature` of row k are the
    controls applied over the interval that ends at row k.

    Validated on construction: finite, bounded controls, non-negative bounded speed."""

    __slots__ = ("_data", "dt")

    def __init__(self, data: np.ndarray, dt: float = PLAN_DT_S, *, validate: bool = True):
        arr = np.array(data, dtype=np.float64, copy=True)
        if arr.ndim != 2 or arr.shape[1] != len(TRAJECTORY_COLUMNS):
            raise InvalidInputError(
                f"Trajectory data must be (steps, 6) with columns {TRAJECTORY_COLUMNS}, "
                f"got shape {arr.shape}"
            )
        if not dt > 0:
            raise InvalidInputError(f"Trajectory dt must be positive, got {dt}")
        self._data = arr
        self._data.setflags(write=False)
        self.dt = float(dt)
        if validate:
            self.validate()

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_controls(
        cls,
        accel: np.ndarray,
        curvature: np.ndarray,
        v0: float,
        dt: float = PLAN_DT_S,
        *,
        validate: bool = True,
    ) -> Trajectory:
        """Integrate (accel, curvature) controls with the unicycle model from the ego origin.

        Speed is clamped at 0 (a plan never reverses): the stored accel is then the one that
        was actually realised, so `from_controls(t.accel, t.curvature, v0)` round trips."""
        accel = np.asarray(accel, dtype=np.float64).reshape(-1)
        curvature = np.asarray(curvature, dtype=np.float64).reshape(-1)
        if accel.shape != curvature.shape:
            raise InvalidInputError(
                f"accel and curvature must have the same length, got {accel.shape} and "
                f"{curvature.shape}"
            )
        if validate:
            _check_controls(accel, curvature)
        if not math.isfinite(v0) or v0 < 0:
            raise InvalidInputError(f"initial speed v0 must be finite and >= 0, got {v0}")
        n = len(accel)
        out = np.zeros((n, 6))
        x = y = yaw = 0.0
        v = float(v0)
        for k in range(n):
            v_next = max(0.0, v + accel[k] * dt)
            a_real = (v_next - v) / dt
            v_mid = 0.5 * (v + v_next)
            dyaw = curvature[k] * v_mid * dt
            yaw_mid = yaw + 0.5 * dyaw
            ds = v_mid * dt
            x += ds * math.cos(yaw_mid)
            y += ds * math.sin(yaw_mid)
            yaw += dyaw
            v = v_next
            out[k] = (x, y, yaw, v, a_real, curvature[k])
        return cls(out, dt, validate=validate)

    @classmethod
    def stationary(cls, steps: int = PLAN_STEPS, dt: float = PLAN_DT_S) -> Trajectory:
        return cls(np.zeros((steps, 6)), dt)

    # -- accessors --------------------------------------------------------------------------
    @property
    def data(self) -> np.ndarray:
        """(steps, 6) read-only array."""
        return self._data

    @property
    def xy(self) -> np.ndarray:
        return self._data[:, [TRAJ_X, TRAJ_Y]]

    @property
    def yaw(self) -> np.ndarray:
        return self._data[:, TRAJ_YAW]

    @property
    def speed(self) -> np.ndarray:
        return self._data[:, TRAJ_SPEED]

    @property
    def accel(self) -> np.ndarray:
        return self._data[:, TRAJ_ACCEL]

    @property
    def curvature(self) -> np.ndarray:
        return self._data[:, TRAJ_CURV]

    @property
    def times(self) -> np.ndarray:
        """Seconds after t0 of each row: dt, 2 dt, ..., steps * dt."""
        return self.dt * np.arange(1, len(self._data) + 1)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        end = self._data[-1]
        return (
            f"Trajectory({len(self)} x {self.dt:g} s, end x={end[TRAJ_X]:.1f} "
            f"y={end[TRAJ_Y]:.1f} v={end[TRAJ_SPEED]:.1f})"
        )

    def validate(self) -> None:
        """Raise InvalidInputError naming the first bad step and value."""
        d = self._data
        bad = ~np.isfinite(d)
        if bad.any():
            k, c = np.argwhere(bad)[0]
            raise InvalidInputError(
                f"trajectory step {k} (t={(k + 1) * self.dt:.1f} s): "
                f"{TRAJECTORY_COLUMNS[c]} is {d[k, c]} (non-finite); the planner produced NaN/inf"
            )
        _check_controls(d[:, TRAJ_ACCEL], d[:, TRAJ_CURV], dt=self.dt)
        speed = d[:, TRAJ_SPEED]
        low = np.flatnonzero(speed < -1e-6)
        if len(low):
            k = int(low[0])
            raise InvalidInputError(
                f"trajectory step {k} (t={(k + 1) * self.dt:.1f} s): speed = {speed[k]:.3f} m/s "
                "is negative; plans never reverse"
            )
        high = np.flatnonzero(speed > MAX_SPEED_MPS)
        if len(high):
            k = int(high[0])
            raise InvalidInputError(
                f"trajectory step {k} (t={(k + 1) * self.dt:.1f} s): speed = {speed[k]:.1f} m/s "
                f"exceeds {MAX_SPEED_MPS} m/s; check units (km/h vs m/s)"
            )

    # -- frames -----------------------------------------------------------------------------
    def to_world(self, ego: EgoState) -> np.ndarray:
        """(steps, 3) x, y, yaw in the world frame, given the ego pose at t0."""
        c, s = math.cos(ego.yaw), math.sin(ego.yaw)
        x = ego.x + c * self._data[:, TRAJ_X] - s * self._data[:, TRAJ_Y]
        y = ego.y + s * self._data[:, TRAJ_X] + c * self._data[:, TRAJ_Y]
        return np.stack([x, y, self._data[:, TRAJ_YAW] + ego.yaw], axis=1)

    def with_data(self, data: np.ndarray) -> Trajectory:
        return Trajectory(data, self.dt)


def _check_controls(accel: np.ndarray, curvature: np.ndarray, dt: float = PLAN_DT_S) -> None:
    for name, values, limit, unit in (
        ("accel", accel, MAX_ABS_ACCEL_MPS2, "m/s^2"),
        ("curvature", curvature, MAX_ABS_CURVATURE_PER_M, "1/m"),
    ):
        nonfinite = np.flatnonzero(~np.isfinite(values))
        if len(nonfinite):
            k = int(nonfinite[0])
            raise InvalidInputError(
                f"trajectory step {k} (t={(k + 1) * dt:.1f} s): {name} is {values[k]} "
                "(non-finite); the planner produced NaN/inf"
            )
        over = np.flatnonzero(np.abs(values) > limit + 1e-9)
        if len(over):
            k = int(over[0])
            raise InvalidInputError(
                f"trajectory step {k} (t={(k + 1) * dt:.1f} s): {name} = {values[k]:.4g} {unit} "
                f"is outside +-{limit} {unit}; clamp controls before integrating"
            )


@dataclass
class PlannerOutput:
    trajectory: Trajectory
    reasoning: Reasoning | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)  # per stage
    status: str = "ok"  # "ok" | "fallback" | "failed"
    flags: tuple[str, ...] = ()
    # A privileged planner reports its structured decision here (the CoC labeler's input).
    decision: Decision | None = None


__all__ = [
    "Agent",
    "AgentClass",
    "CausalFactor",
    "CausalFactorKind",
    "Command",
    "Decision",
    "EgoState",
    "InvalidInputError",
    "Lane",
    "LateralDecision",
    "LightState",
    "LongitudinalDecision",
    "MapData",
    "PlannerInput",
    "PlannerOutput",
    "Reasoning",
    "Route",
    "Scene",
    "Side",
    "StopLine",
    "TrafficLight",
    "Trajectory",
]
