"""Frame transforms and polyline helpers (numpy; shapely only where areas are evaluated)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from planner.types import (
    EGO_X,
    EGO_Y,
    EGO_YAW,
    EgoState,
    MapData,
    box_corners,
)

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry


def world_to_ego_xy(xy: np.ndarray, ego: EgoState) -> np.ndarray:
    """(N, 2) world points -> ego frame (x forward, y left) at the ego's rear axle."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    c, s = math.cos(ego.yaw), math.sin(ego.yaw)
    d = xy - np.array([ego.x, ego.y])
    return np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]], axis=1)


def ego_to_world_xy(xy: np.ndarray, ego: EgoState) -> np.ndarray:
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    c, s = math.cos(ego.yaw), math.sin(ego.yaw)
    return np.stack(
        [ego.x + c * xy[:, 0] - s * xy[:, 1], ego.y + s * xy[:, 0] + c * xy[:, 1]], axis=1
    )


def history_to_ego_frame(history: np.ndarray, ego: EgoState) -> np.ndarray:
    """Ego-history array (H, 7) world frame -> ego frame at `ego` (yaw relative, wrapped)."""
    out = np.array(history, dtype=np.float64, copy=True)
    out[:, [EGO_X, EGO_Y]] = world_to_ego_xy(history[:, [EGO_X, EGO_Y]], ego)
    out[:, EGO_YAW] = (history[:, EGO_YAW] - ego.yaw + math.pi) % (2 * math.pi) - math.pi
    return out


def ego_footprint(ego: EgoState) -> np.ndarray:
    """(4, 2) world corners of the ego box (reference point is the rear axle)."""
    cx, cy = ego.center_xy
    return box_corners(cx, cy, ego.yaw, ego.length, ego.width)


def polyline_arclength(points: np.ndarray) -> np.ndarray:
    """(N,) cumulative distance along a polyline, starting at 0."""
    d = np.diff(np.asarray(points, dtype=np.float64), axis=0)
    return np.concatenate([[0.0], np.cumsum(np.hypot(d[:, 0], d[:, 1]))])


def project_to_polyline(points: np.ndarray, point: np.ndarray) -> tuple[float, float]:
    """Arc length along the polyline of the closest point, and signed lateral offset
    (positive = left of the direction of travel)."""
    pts = np.asarray(points, dtype=np.float64)
    p = np.asarray(point, dtype=np.float64)
    a, b = pts[:-1], pts[1:]
    ab = b - a
    seg_len2 = np.maximum((ab**2).sum(axis=1), 1e-12)
    u = np.clip(((p - a) * ab).sum(axis=1) / seg_len2, 0.0, 1.0)
    proj = a + u[:, None] * ab
    dist2 = ((proj - p) ** 2).sum(axis=1)
    i = int(np.argmin(dist2))
    s = polyline_arclength(pts)[i] + u[i] * math.sqrt(seg_len2[i])
    cross = ab[i, 0] * (p[1] - a[i, 1]) - ab[i, 1] * (p[0] - a[i, 0])
    lateral = math.copysign(math.sqrt(dist2[i]), cross) if dist2[i] > 0 else 0.0
    return float(s), float(lateral)


def lane_polygon(left: np.ndarray, right: np.ndarray) -> BaseGeometry:
    """Polygon between a lane's left and right boundaries (shapely)."""
    from shapely.geometry import Polygon

    ring = np.concatenate([np.asarray(left), np.asarray(right)[::-1]], axis=0)
    poly = Polygon(ring)
    if not poly.is_valid:
        poly = poly.buffer(0)
    return poly


def drivable_area(map_data: MapData) -> BaseGeometry:
    """The map's drivable area: given, or the union of its lane polygons (cached)."""
    if map_data.drivable_area is None:
        from shapely.ops import unary_union

        polys = [
            lane_polygon(lane.left_boundary, lane.right_boundary)
            for lane in map_data.lanes.values()
        ]
        map_data.drivable_area = unary_union(polys) if polys else None
        if map_data.drivable_area is None:
            from shapely.geometry import Polygon

            map_data.drivable_area = Polygon()
    return map_data.drivable_area
