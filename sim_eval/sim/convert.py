"""highway-env state -> the project's types, in ROS REP-103 conventions.

highway-env draws in a screen frame: x right, y DOWN (= to the right of travel for a car
driving along +x), headings clockwise. REP-103 is x forward, y left, yaw counter-clockwise, so
every conversion is a mirror about the x axis: (x, y, heading, vy, steering) ->
(x, -y, -heading, -vy, -steering). A lane's lateral coordinate is positive to the right of
travel in highway-env, so a lane's REP-103 *left* boundary is at lateral -width/2.

The static map (lanes, boundaries, drivable area, route geometry) is converted once per
episode (`build_map`, `build_route`); only the dynamic parts (ego, agents) are converted per
step (`agents_from_road`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from planner.geometry import lane_polygon, polyline_arclength, project_to_polyline
from planner.taxonomy import Command
from planner.types import Agent, Lane, MapData, Route, StopLine

LaneIndex = tuple[str, str, int]

# highway-env LineType values (highway_env.road.lane.LineType), named here to avoid importing
# highway-env in modules that only convert numbers.
_LINE_NONE, _LINE_STRIPED, _LINE_CONTINUOUS, _LINE_CONTINUOUS_LINE = 0, 1, 2, 3
_CONNECT_TOL_M = 1.0  # lane ends this close are connected (successor / predecessor)
DEFAULT_SPEED_LIMIT_MPS = 13.9  # lanes with no limit: 50 km/h


# ---- frames -------------------------------------------------------------------------------
def hw_to_rep_xy(points: Any) -> np.ndarray:
    """(N, 2) or (2,) highway-env points -> REP-103 (y mirrored)."""
    arr = np.array(points, dtype=np.float64, copy=True)
    arr[..., 1] = -arr[..., 1]
    return arr


def rep_to_hw_xy(points: Any) -> np.ndarray:
    """Inverse of `hw_to_rep_xy` (the mirror is its own inverse)."""
    return hw_to_rep_xy(points)


def hw_to_rep_yaw(heading: float) -> float:
    """highway-env heading (clockwise, unwrapped) -> REP-103 yaw in [-pi, pi)."""
    return float((-heading + math.pi) % (2.0 * math.pi) - math.pi)


def lane_id(index: LaneIndex) -> str:
    """('a', 'b', 0) -> 'a>b>0' (the id of the lane in MapData and Route)."""
    return f"{index[0]}>{index[1]}>{index[2]}"


def lane_index_from_id(text: str) -> LaneIndex:
    a, b, i = text.split(">")
    return (a, b, int(i))


# ---- lanes --------------------------------------------------------------------------------
def _sample_lane(lane: Any, s: np.ndarray, lateral: np.ndarray | float) -> np.ndarray:
    """(N, 2) highway-env points of `lane` at arc lengths s and lateral offsets."""
    from highway_env.road.lane import StraightLane

    lateral = np.broadcast_to(np.asarray(lateral, dtype=np.float64), s.shape)
    if type(lane) is StraightLane:  # vectorised: the common case on highways
        return (
            lane.start[None, :]
            + s[:, None] * lane.direction[None, :]
            + lateral[:, None] * lane.direction_lateral[None, :]
        )
    return np.array([lane.position(float(si), float(li)) for si, li in zip(s, lateral)])


def _lane_stations(length: float, step_m: float) -> np.ndarray:
    n = max(2, int(math.ceil(length / step_m)) + 1)
    return np.linspace(0.0, length, n)


def _kind(line_type: int, has_neighbor: bool) -> str:
    if has_neighbor:
        return "solid" if line_type in (_LINE_CONTINUOUS, _LINE_CONTINUOUS_LINE) else "dashed"
    if line_type in (_LINE_CONTINUOUS, _LINE_CONTINUOUS_LINE):
        return "road_edge"
    if line_type == _LINE_STRIPED:
        return "dashed"
    return "none"


@dataclass
class MapCache:
    """Static map of one episode with what the per-step conversion needs."""

    map: MapData
    lane_indices: dict[str, LaneIndex]


def build_map(
    network: Any,
    *,
    name: str = "",
    step_m: float = 1.0,
    sliver_buffer_m: float = 0.05,
    stop_lines: Iterable[StopLine] = (),
) -> MapCache:
    """Every lane of a highway-env `RoadNetwork` as `Lane`s (REP-103), with topology,
    boundary kinds, speed limits and a cached shapely drivable area."""
    from shapely import BufferJoinStyle
    from shapely.ops import unary_union

    items = list(network.lanes_dict().items())  # [((from, to, id), lane)]
    starts = {idx: np.asarray(lane.position(0.0, 0.0)) for idx, lane in items}
    ends = {idx: np.asarray(lane.position(lane.length, 0.0)) for idx, lane in items}

    # same-direction neighbours: lanes of the same road one lane width to either side
    left_of: dict[LaneIndex, LaneIndex] = {}
    right_of: dict[LaneIndex, LaneIndex] = {}
    for (a, b, i), lane in items:
        siblings = network.graph[a][b]
        mid_s = lane.length / 2.0
        width = lane.width_at(mid_s)
        for j, other in enumerate(siblings):
            if j == i:
                continue
            s_o, lat_o = lane.local_coordinates(other.position(other.length / 2.0, 0.0))
            if abs(abs(lat_o) - width) > 0.4 * width:
                continue
            # highway-env lateral < 0 is the left of travel (REP-103 +y)
            target = left_of if lat_o < 0 else right_of
            prev = target.get((a, b, i))
            if prev is None or abs(prev[2] - i) > abs(j - i):
                target[(a, b, i)] = (a, b, j)

    successors: dict[LaneIndex, list[LaneIndex]] = {idx: [] for idx, _ in items}
    predecessors: dict[LaneIndex, list[LaneIndex]] = {idx: [] for idx, _ in items}
    for (a, b, i), _lane in items:
        for c, lanes in network.graph.get(b, {}).items():
            for k in range(len(lanes)):
                nxt = (b, c, k)
                if np.linalg.norm(starts[nxt] - ends[(a, b, i)]) < _CONNECT_TOL_M:
                    successors[(a, b, i)].append(nxt)
                    predecessors[nxt].append((a, b, i))

    lanes: dict[str, Lane] = {}
    polygons = []
    for idx, lane in items:
        s = _lane_stations(float(lane.length), step_m)
        widths = np.array([lane.width_at(float(si)) for si in s]) if _varies(lane) else None
        half = (widths if widths is not None else lane.width_at(0.0)) / 2.0
        center = hw_to_rep_xy(_sample_lane(lane, s, 0.0))
        left = hw_to_rep_xy(_sample_lane(lane, s, -half))
        right = hw_to_rep_xy(_sample_lane(lane, s, half))
        line_types = list(getattr(lane, "line_types", None) or [_LINE_STRIPED, _LINE_STRIPED])
        limit = getattr(lane, "speed_limit", None)
        lanes[lane_id(idx)] = Lane(
            id=lane_id(idx),
            centerline=center,
            left_boundary=left,
            right_boundary=right,
            speed_limit_mps=float(limit) if limit is not None else DEFAULT_SPEED_LIMIT_MPS,
            left_boundary_kind=_kind(int(line_types[0]), idx in left_of),
            right_boundary_kind=_kind(int(line_types[1]), idx in right_of),
            successors=tuple(lane_id(n) for n in successors[idx]),
            predecessors=tuple(lane_id(p) for p in predecessors[idx]),
            left_neighbor=lane_id(left_of[idx]) if idx in left_of else None,
            right_neighbor=lane_id(right_of[idx]) if idx in right_of else None,
        )
        polygons.append(lane_polygon(left, right))
    area = unary_union(polygons)
    if sliver_buffer_m > 0:
        # Adjacent lanes sampled on different stations leave hairline gaps (roundabouts):
        # closing by +-buffer with mitred joins removes them without rounding real corners.
        area = area.buffer(sliver_buffer_m, join_style=BufferJoinStyle.mitre).buffer(
            -sliver_buffer_m, join_style=BufferJoinStyle.mitre
        )
    map_data = MapData(
        lanes=lanes,
        stop_lines={sl.id: sl for sl in stop_lines},
        drivable_area=area,
        name=name,
    )
    return MapCache(map=map_data, lane_indices={lane_id(idx): idx for idx, _ in items})


def _varies(lane: Any) -> bool:
    """Whether a lane's width changes along it (PolyLane with boundary polylines)."""
    from highway_env.road.lane import PolyLane

    return isinstance(lane, PolyLane)


def stop_line_across(
    network: Any,
    lane_indices: list[LaneIndex],
    longitudinal_m: float,
    stop_line_id: str,
    *,
    light_id: str | None = None,
    is_stop_sign: bool = False,
) -> StopLine:
    """A REP-103 `StopLine` across the given lanes of one road at `longitudinal_m` along the
    first lane (endpoints: the outer edges of the outermost lanes)."""
    points = []
    for idx in lane_indices:
        lane = network.get_lane(idx)
        half = lane.width_at(longitudinal_m) / 2.0
        points.append(lane.position(longitudinal_m, -half))
        points.append(lane.position(longitudinal_m, half))
    pts = hw_to_rep_xy(np.array(points))
    # the two points furthest apart span all lanes
    d = np.linalg.norm(pts[:, None, :] - pts[None, :, :], axis=-1)
    i, j = np.unravel_index(int(np.argmax(d)), d.shape)
    return StopLine(
        id=stop_line_id,
        points=np.stack([pts[i], pts[j]]),
        lane_ids=tuple(lane_id(idx) for idx in lane_indices),
        light_id=light_id,
        is_stop_sign=is_stop_sign,
    )


# ---- route --------------------------------------------------------------------------------
def build_route(
    network: Any,
    lanes: list[LaneIndex],
    start_longitudinal_m: float,
    end_longitudinal_m: float | None,
    command: Command,
    step_m: float = 2.0,
) -> Route:
    """Route from the ego start along `lanes` to `end_longitudinal_m` on the last lane:
    REP-103 waypoints every `step_m` and the exact length (sum of lane arc lengths)."""
    if not lanes:
        raise ValueError("a route needs at least one lane")
    pieces = []
    length = 0.0
    for k, idx in enumerate(lanes):
        lane = network.get_lane(idx)
        s0 = start_longitudinal_m if k == 0 else 0.0
        s1 = float(lane.length)
        if k == len(lanes) - 1 and end_longitudinal_m is not None:
            s1 = float(end_longitudinal_m)
        if s1 <= s0:
            raise ValueError(
                f"route lane {lane_id(idx)}: ends at {s1:.1f} m, before it starts at {s0:.1f} m"
            )
        length += s1 - s0
        n = max(2, int(math.ceil((s1 - s0) / step_m)) + 1)
        pts = _sample_lane(lane, np.linspace(s0, s1, n), 0.0)
        pieces.append(pts if k == 0 else pts[1:])
    waypoints = hw_to_rep_xy(np.concatenate(pieces, axis=0))
    return Route(
        waypoints=waypoints,
        lane_ids=tuple(lane_id(i) for i in lanes),
        command=command,
        length_m=float(length),
    )


class RouteProgress:
    """Arc length along the route of the ego's projection, searched in a window around the
    last value so that a route that crosses itself (roundabout) is never skipped ahead."""

    def __init__(self, route: Route, window_m: float = 30.0):
        self.waypoints = route.waypoints
        self.arclength = polyline_arclength(self.waypoints)
        # waypoint arc length differs from lane arc length on curves: scale to the route's
        # declared length so completion compares like with like
        total = float(self.arclength[-1]) if len(self.arclength) else 0.0
        self.scale = (route.length_m / total) if total > 0 and route.length_m else 1.0
        self.window_m = window_m
        self.s = 0.0

    def update(self, xy: np.ndarray) -> float:
        lo = int(np.searchsorted(self.arclength, self.s - self.window_m))
        hi = int(np.searchsorted(self.arclength, self.s + self.window_m)) + 2
        lo = max(0, min(lo, len(self.waypoints) - 2))
        hi = min(len(self.waypoints), max(hi, lo + 2))
        s_local, _ = project_to_polyline(self.waypoints[lo:hi], xy)
        self.s = max(self.s, float(self.arclength[lo] + s_local))
        return self.s * self.scale


# ---- agents -------------------------------------------------------------------------------
def agent_from_object(obj: Any, agent_id: str, agent_class: Any) -> Agent:
    """A highway-env Vehicle/RoadObject (box centre, highway-env frame) as a REP-103 Agent."""
    heading = float(obj.heading)
    speed = float(getattr(obj, "speed", 0.0) or 0.0)
    vx = speed * math.cos(heading)
    vy_hw = speed * math.sin(heading)
    return Agent(
        id=agent_id,
        agent_class=agent_class,
        x=float(obj.position[0]),
        y=-float(obj.position[1]),
        yaw=hw_to_rep_yaw(heading),
        vx=vx,
        vy=-vy_hw,
        length=float(obj.LENGTH),
        width=float(obj.WIDTH),
        height=float(getattr(obj, "HEIGHT", 1.5)),
    )
