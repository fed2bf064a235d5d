"""Builders of small constructed worlds for tests (importable: `from tests.helpers import ...`).

Everything follows docs/CONVENTIONS.md: world frame REP-103 (x east/forward, y left, yaw CCW),
SI units, the ego pose at the rear-axle centre, 10 Hz histories with the last row = now.
`tests/conftest.py` exposes the main builders as fixtures too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from planner.base import Planner, call_planner
from planner.features import build_planner_input
from planner.geometry import polyline_arclength
from planner.types import (
    HISTORY_STEPS,
    PLAN_DT_S,
    TRAJ_ACCEL,
    TRAJ_CURV,
    TRAJ_SPEED,
    Agent,
    AgentClass,
    Command,
    EgoState,
    Lane,
    MapData,
    PlannerInput,
    PlannerOutput,
    Route,
    Scene,
    Trajectory,
)

DEFAULT_SPEED_LIMIT_MPS = 13.9  # 50 km/h


# ---- maps -----------------------------------------------------------------------------------
def _offset_polyline(centerline: np.ndarray, offset_m: float) -> np.ndarray:
    """Shift a polyline sideways by `offset_m` (positive = left of the direction of travel)."""
    d = np.gradient(centerline, axis=0)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    left_normal = np.stack([-d[:, 1], d[:, 0]], axis=1)
    return centerline + offset_m * left_normal


def lane_from_centerline(
    lane_id: str,
    centerline: np.ndarray,
    lane_width_m: float = 3.7,
    speed_limit_mps: float = DEFAULT_SPEED_LIMIT_MPS,
    **kwargs,
) -> Lane:
    """A lane whose boundaries lie half a lane width either side of `centerline` (N, 2)."""
    centerline = np.asarray(centerline, dtype=np.float64)
    half = lane_width_m / 2.0
    return Lane(
        id=lane_id,
        centerline=centerline,
        left_boundary=_offset_polyline(centerline, half),
        right_boundary=_offset_polyline(centerline, -half),
        speed_limit_mps=speed_limit_mps,
        **kwargs,
    )


def straight_road_map(
    n_lanes: int = 2,
    length_m: float = 300.0,
    lane_width_m: float = 3.7,
    speed_limit_mps: float = DEFAULT_SPEED_LIMIT_MPS,
    start_x_m: float = -50.0,
    spacing_m: float = 1.0,
) -> MapData:
    """A straight road along world +x with `n_lanes` lanes in the same direction.

    Lane "lane_0" is the rightmost, centred on y = 0; lane i is centred on y = i * width
    (to the left, +y). Lanes run from x = start_x_m to start_x_m + length_m."""
    if n_lanes < 1:
        raise ValueError(f"n_lanes must be >= 1, got {n_lanes}")
    n_pts = int(round(length_m / spacing_m)) + 1
    xs = np.linspace(start_x_m, start_x_m + length_m, n_pts)
    lanes: dict[str, Lane] = {}
    for i in range(n_lanes):
        center = np.stack([xs, np.full_like(xs, i * lane_width_m)], axis=1)
        lanes[f"lane_{i}"] = lane_from_centerline(
            f"lane_{i}",
            center,
            lane_width_m,
            speed_limit_mps,
            left_boundary_kind="road_edge" if i == n_lanes - 1 else "dashed",
            right_boundary_kind="road_edge" if i == 0 else "dashed",
            left_neighbor=f"lane_{i + 1}" if i < n_lanes - 1 else None,
            right_neighbor=f"lane_{i - 1}" if i > 0 else None,
        )
    return MapData(lanes=lanes, name=f"straight_{n_lanes}_lanes")


def arc_points(
    start_xy: Sequence[float],
    start_yaw: float,
    radius_m: float,
    angle_rad: float,
    spacing_m: float = 1.0,
) -> np.ndarray:
    """(N, 2) points of a circular arc starting at `start_xy` with heading `start_yaw`;
    positive `angle_rad` turns left (CCW), negative turns right."""
    n = max(2, int(math.ceil(abs(angle_rad) * radius_m / spacing_m)) + 1)
    turn = np.linspace(0.0, angle_rad, n)
    sign = 1.0 if angle_rad >= 0 else -1.0
    # centre of the circle lies to the left (left turn) or right (right turn) of the start
    cx = start_xy[0] - sign * radius_m * math.sin(start_yaw)
    cy = start_xy[1] + sign * radius_m * math.cos(start_yaw)
    headings = start_yaw + turn
    return np.stack(
        [
            cx + sign * radius_m * np.sin(headings),
            cy - sign * radius_m * np.cos(headings),
        ],
        axis=1,
    )


def curved_road_map(
    radius_m: float = 50.0,
    angle_rad: float = math.pi / 2,
    approach_m: float = 40.0,
    exit_m: float = 60.0,
    lane_width_m: float = 3.7,
    speed_limit_mps: float = DEFAULT_SPEED_LIMIT_MPS,
) -> MapData:
    """One lane in three pieces linked as successors: "approach" (straight along +x, ending
    at the origin), "curve" (an arc of `radius_m`, left for positive `angle_rad`), "exit"
    (straight on from the arc's end)."""
    approach = np.stack(
        [np.linspace(-approach_m, 0.0, int(approach_m) + 1), np.zeros(int(approach_m) + 1)], axis=1
    )
    curve = arc_points((0.0, 0.0), 0.0, radius_m, angle_rad)
    end_yaw = angle_rad
    n_exit = int(exit_m) + 1
    s = np.linspace(0.0, exit_m, n_exit)
    exit_pts = curve[-1] + np.stack([s * math.cos(end_yaw), s * math.sin(end_yaw)], axis=1)
    lanes = {
        "approach": lane_from_centerline(
            "approach", approach, lane_width_m, speed_limit_mps, successors=("curve",)
        ),
        "curve": lane_from_centerline(
            "curve",
            curve,
            lane_width_m,
            speed_limit_mps,
            successors=("exit",),
            predecessors=("approach",),
        ),
        "exit": lane_from_centerline(
            "exit", exit_pts, lane_width_m, speed_limit_mps, predecessors=("curve",)
        ),
    }
    return MapData(lanes=lanes, name="curved_road")


def route_through(
    map_data: MapData, lane_ids: Iterable[str], command: Command = Command.LANE_FOLLOW
) -> Route:
    """A route along the centerlines of `lane_ids` in order."""
    ids = tuple(lane_ids)
    pieces = [map_data.lanes[i].centerline for i in ids]
    waypoints = np.concatenate(pieces, axis=0)
    keep = np.concatenate([[True], np.hypot(*np.diff(waypoints, axis=0).T) > 1e-6])
    return Route(waypoints=waypoints[keep], lane_ids=ids, command=command)


# ---- ego and agents -------------------------------------------------------------------------
def ego_history(
    x: float,
    y: float,
    yaw: float,
    speed_mps: float,
    accel_mps2: float = 0.0,
    yaw_rate_radps: float = 0.0,
    steps: int = HISTORY_STEPS,
    t0: float = 0.0,
    dt: float = PLAN_DT_S,
) -> np.ndarray:
    """(steps, 7) world-frame ego history (EGO_* columns) that ends at the given state and
    had constant acceleration and yaw rate before it (integrated backwards in fine substeps)."""
    substeps = 50
    h = dt / substeps
    rows = []
    px, py, pyaw, v = float(x), float(y), float(yaw), float(speed_mps)
    for k in range(steps):
        curvature = yaw_rate_radps / v if v > 1e-6 else 0.0
        rows.append((t0 - k * dt, px, py, pyaw, v, accel_mps2, curvature))
        for _ in range(substeps):  # step backwards in time with the midpoint rule
            v_prev = v - accel_mps2 * h
            if v_prev < 0:
                raise ValueError("this history would need a negative speed in the past")
            v_mid = 0.5 * (v + v_prev)
            yaw_mid = pyaw - 0.5 * yaw_rate_radps * h
            px -= v_mid * h * math.cos(yaw_mid)
            py -= v_mid * h * math.sin(yaw_mid)
            pyaw -= yaw_rate_radps * h
            v = v_prev
    return np.array(rows[::-1], dtype=np.float64)


def make_agent(
    agent_id: str,
    x: float,
    y: float,
    yaw: float = 0.0,
    speed_mps: float = 0.0,
    agent_class: AgentClass = AgentClass.VEHICLE,
    length: float = 4.5,
    width: float = 1.9,
) -> Agent:
    """An agent whose box centre is at (x, y), moving along its heading."""
    return Agent(
        id=agent_id,
        agent_class=agent_class,
        x=x,
        y=y,
        yaw=yaw,
        vx=speed_mps * math.cos(yaw),
        vy=speed_mps * math.sin(yaw),
        length=length,
        width=width,
    )


def make_scene(
    map_data: MapData | None = None,
    ego_xy: Sequence[float] = (0.0, 0.0),
    ego_yaw: float = 0.0,
    ego_speed_mps: float = 10.0,
    ego_accel_mps2: float = 0.0,
    ego_yaw_rate_radps: float = 0.0,
    agents: Sequence[Agent] = (),
    route_lane_ids: Sequence[str] | None = None,
    command: Command = Command.LANE_FOLLOW,
    timestamp: float = 0.0,
    history_steps: int = HISTORY_STEPS,
) -> Scene:
    """A Scene with the ego (rear axle) at `ego_xy`; its history has constant acceleration
    and yaw rate. `map_data` defaults to `straight_road_map()`; the route defaults to the
    ego's lane (nearest centerline) and its successor chain."""
    map_data = map_data if map_data is not None else straight_road_map()
    curvature = ego_yaw_rate_radps / ego_speed_mps if ego_speed_mps > 1e-6 else 0.0
    ego = EgoState(
        t=timestamp,
        x=float(ego_xy[0]),
        y=float(ego_xy[1]),
        yaw=ego_yaw,
        speed=ego_speed_mps,
        accel=ego_accel_mps2,
        curvature=curvature,
    )
    hist = ego_history(
        ego.x,
        ego.y,
        ego_yaw,
        ego_speed_mps,
        ego_accel_mps2,
        ego_yaw_rate_radps,
        steps=history_steps,
        t0=timestamp,
    )
    if route_lane_ids is None:
        route_lane_ids = _lane_chain(map_data, _nearest_lane_id(map_data, (ego.x, ego.y)))
    route = (
        route_through(map_data, route_lane_ids, command)
        if route_lane_ids
        else Route(waypoints=np.zeros((0, 2)), command=command)
    )
    return Scene(
        timestamp=timestamp,
        ego=ego,
        ego_history=hist,
        agents=list(agents),
        map=map_data,
        route=route,
    )


def _nearest_lane_id(map_data: MapData, xy: Sequence[float]) -> str | None:
    best, best_d = None, math.inf
    p = np.asarray(xy, dtype=np.float64)
    for lane in map_data.lanes.values():
        d = float(((lane.centerline - p) ** 2).sum(axis=1).min())
        if d < best_d:
            best, best_d = lane.id, d
    return best


def _lane_chain(map_data: MapData, lane_id: str | None) -> list[str]:
    chain: list[str] = []
    while lane_id is not None and lane_id not in chain:
        chain.append(lane_id)
        successors = map_data.lanes[lane_id].successors
        lane_id = successors[0] if successors else None
    return chain


def scene_input(scene: Scene) -> PlannerInput:
    """The learned planners' view of a scene (history-only features, no cameras)."""
    return build_planner_input(scene)


# ---- a tiny closed loop -----------------------------------------------------------------------
def advance_scene(scene: Scene, trajectory: Trajectory, dt: float = PLAN_DT_S) -> Scene:
    """Exact state following for one 0.1 s step: the ego moves to the plan's first row and
    agents move at constant velocity. Used to run planners in closed loop in tests."""
    x, y, yaw = trajectory.to_world(scene.ego)[0]
    row = trajectory.data[0]
    t = scene.timestamp + dt
    ego = EgoState(
        t=t,
        x=float(x),
        y=float(y),
        yaw=float(yaw),
        speed=float(row[TRAJ_SPEED]),
        accel=float(row[TRAJ_ACCEL]),
        curvature=float(row[TRAJ_CURV]),
        length=scene.ego.length,
        width=scene.ego.width,
        rear_axle_to_center_m=scene.ego.rear_axle_to_center_m,
    )
    agents = [
        Agent(
            id=a.id,
            agent_class=a.agent_class,
            x=a.x + a.vx * dt,
            y=a.y + a.vy * dt,
            yaw=a.yaw,
            vx=a.vx,
            vy=a.vy,
            length=a.length,
            width=a.width,
            height=a.height,
        )
        for a in scene.agents
    ]
    history = np.concatenate([scene.ego_history, ego.as_row()[None, :]], axis=0)[-HISTORY_STEPS:]
    return Scene(
        timestamp=t,
        ego=ego,
        ego_history=history,
        agents=agents,
        map=scene.map,
        route=scene.route,
        traffic_lights=scene.traffic_lights,
        metadata=dict(scene.metadata),
    )


def run_closed_loop(
    planner: Planner, scene: Scene, steps: int
) -> tuple[list[Scene], list[PlannerOutput]]:
    """Plan, execute the first 0.1 s exactly, repeat. Returns the frames (steps + 1) and the
    outputs (steps)."""
    planner.reset()
    frames, outputs = [scene], []
    for _ in range(steps):
        out = call_planner(planner, scene_input(scene), scene)
        outputs.append(out)
        scene = advance_scene(scene, out.trajectory)
        frames.append(scene)
    return frames, outputs


def lane_arclength(lane: Lane) -> np.ndarray:
    """(N,) cumulative arc length of a lane centerline."""
    return polyline_arclength(lane.centerline)
