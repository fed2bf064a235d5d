"""Feature builder: Scene -> PlannerInput. The only path from ground truth to a learned
planner's input, so nothing privileged (other agents' states, light timers) can leak in:
cameras (rendered or real), the ego's own past motion, and the route."""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from planner.geometry import history_to_ego_frame, polyline_arclength, world_to_ego_xy
from planner.types import (
    EGO_SPEED,
    EGO_T,
    EGO_X,
    EGO_Y,
    EGO_YAW,
    HISTORY_STEPS,
    PLAN_DT_S,
    InvalidInputError,
    PlannerInput,
    Scene,
)

ROUTE_POINTS = 20  # waypoints handed to the planner
ROUTE_SPACING_M = 4.0  # spacing of those waypoints (80 m look-ahead)
DEFAULT_SPEED_LIMIT_MPS = 13.9  # 50 km/h where a source knows no limit


class CameraRenderer(Protocol):
    """What the feature builder needs of a SensorRig (planner.sensors)."""

    camera_names: tuple[str, ...]

    def render(self, scene: Scene, history: list[Scene] | None = None) -> np.ndarray:
        """(N_cam, T, H, W, 3) uint8."""


def pad_ego_history(history: np.ndarray, steps: int = HISTORY_STEPS) -> np.ndarray:
    """Last `steps` rows; a short history (start of an episode or log) is extended backwards
    at the oldest known speed and heading rather than repeated (a repeated pose reads as
    a vehicle that was standing still)."""
    hist = np.asarray(history, dtype=np.float64)
    if len(hist) >= steps:
        return hist[-steps:].copy()
    if len(hist) == 0:
        raise InvalidInputError("ego history is empty: a Scene needs at least the current pose")
    missing = steps - len(hist)
    first = hist[0]
    k = np.arange(missing, 0, -1, dtype=np.float64)  # missing..1 steps before the oldest row
    pad = np.repeat(first[None, :], missing, axis=0)
    pad[:, EGO_T] = first[EGO_T] - k * PLAN_DT_S
    dist = first[EGO_SPEED] * k * PLAN_DT_S
    pad[:, EGO_X] = first[EGO_X] - dist * math.cos(first[EGO_YAW])
    pad[:, EGO_Y] = first[EGO_Y] - dist * math.sin(first[EGO_YAW])
    return np.concatenate([pad, hist], axis=0)


def route_ahead_ego_frame(
    scene: Scene, points: int = ROUTE_POINTS, spacing_m: float = ROUTE_SPACING_M
) -> np.ndarray:
    """(points, 2) route waypoints from the ego's projection onwards, ego frame. Past the
    route's end the last direction is extended, so the shape is fixed."""
    wp = scene.route.waypoints
    if len(wp) < 2:
        # No route known: straight ahead.
        return np.stack([np.arange(1, points + 1) * spacing_m, np.zeros(points)], axis=1)
    s = polyline_arclength(wp)
    d2 = ((wp - np.array([scene.ego.x, scene.ego.y])) ** 2).sum(axis=1)
    s0 = s[int(np.argmin(d2))]
    query = s0 + spacing_m * np.arange(1, points + 1)
    x = np.interp(query, s, wp[:, 0])
    y = np.interp(query, s, wp[:, 1])
    beyond = query > s[-1]
    if beyond.any():
        direction = wp[-1] - wp[-2]
        direction = direction / max(np.linalg.norm(direction), 1e-9)
        extra = query[beyond] - s[-1]
        x[beyond] = wp[-1, 0] + extra * direction[0]
        y[beyond] = wp[-1, 1] + extra * direction[1]
    return world_to_ego_xy(np.stack([x, y], axis=1), scene.ego)


def speed_limit_at_ego(scene: Scene) -> float:
    """Speed limit of the lane nearest the ego (the source may state it in metadata)."""
    if "speed_limit_mps" in scene.metadata:
        return float(scene.metadata["speed_limit_mps"])
    best, best_d = None, math.inf
    p = np.array([scene.ego.x, scene.ego.y])
    for lane in scene.map.lanes.values():
        d = float(((lane.centerline - p) ** 2).sum(axis=1).min())
        if d < best_d:
            best, best_d = lane, d
    return best.speed_limit_mps if best is not None else DEFAULT_SPEED_LIMIT_MPS


def build_planner_input(
    scene: Scene,
    renderer: CameraRenderer | None = None,
    scene_history: list[Scene] | None = None,
    history_steps: int = HISTORY_STEPS,
) -> PlannerInput:
    """Scene -> PlannerInput. Cameras come from the scene when it has real frames, else from
    `renderer` (rendered from annotations), else none (history-only planners)."""
    hist_world = pad_ego_history(scene.ego_history, history_steps)
    hist_ego = history_to_ego_frame(hist_world, scene.ego)
    cameras, names, source = None, (), "none"
    if renderer is not None:
        cameras = renderer.render(scene, scene_history)
        names = tuple(renderer.camera_names)
        source = "rendered"
    elif scene.cameras:
        names = tuple(sorted(scene.cameras))
        cameras = np.stack([scene.cameras[n] for n in names], axis=0)
        source = "real"
    return PlannerInput(
        timestamp=scene.timestamp,
        ego_history=hist_ego,
        command=scene.route.command,
        route_xy=route_ahead_ego_frame(scene),
        speed_limit_mps=speed_limit_at_ego(scene),
        cameras=cameras,
        camera_names=names,
        camera_source=source,
    )
