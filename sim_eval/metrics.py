"""Driving metrics: pure functions over a recorded closed-loop episode.

`evaluate_episode(record, cfg)` turns an `EpisodeRecord` (10 Hz `Scene`s sharing one `MapData`,
plus the planner output of each frame) into one flat, JSON-ready dict. Every definition,
default and its source (NAVSIM / nuPlan, CARLA leaderboard, AlpaSim) is in docs/METRICS.md;
every threshold lives in `MetricsConfig` (YAML defaults: configs/metrics.yaml).

Geometry: the ego footprint is the box of `EgoState` placed from the rear-axle reference point
(`planner.geometry.ego_footprint`), agents are their `Agent.corners()` boxes; shapely does the
areas, coverage and distances, vectorised over all (frame, agent) pairs.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from planner.config import load_config
from planner.geometry import drivable_area, lane_polygon
from planner.metrics import footprint_outside
from planner.paths import config_path
from planner.taxonomy import AgentClass, LightState
from planner.types import MapData, StopLine, wrap_angle
from sim_eval.episode import EpisodeRecord
from sim_eval.stats import MetricSpec, StatsConfig

log = logging.getLogger(__name__)

DEFAULT_METRICS_CONFIG = config_path("metrics.yaml")


class MetricsError(ValueError):
    """An episode cannot be evaluated (empty record, route or map unusable); says why."""


# ---- config ---------------------------------------------------------------------------------
@dataclass
class CollisionConfig:
    # An agent that entered the ego's lane this recently before the contact and hits the ego's
    # side or front caused the collision (a cut-in / sideswipe): not the ego's fault.
    cut_in_window_s: float = 1.0
    # An agent is "in" a lane once its box reaches this far inside the lane's boundaries, so a
    # neighbour riding on the lane marking does not count as having entered.
    lane_entry_margin_m: float = 0.2
    # At or below this ego speed a collision is not the ego's fault (nuPlan's stopped-ego rule).
    ego_stopped_speed_mps: float = 0.05
    # Bisection steps that locate the first contact between two 0.1 s frames (2^-10 of a frame).
    onset_bisection_steps: int = 10
    # Boxes this close count as in contact. Simulators that resolve collisions leave the boxes
    # touching, not overlapping (highway-env pushes them apart by the penetration depth).
    contact_tolerance_m: float = 0.02


@dataclass
class OffroadConfig:
    # Off-road when the ego footprint sticks out of the drivable area by more than either:
    area_tolerance_m2: float = 0.5  # footprint area outside the drivable area
    distance_tolerance_m: float = 0.3  # farthest footprint point from the drivable area


@dataclass
class CloseEncounterConfig:
    gap_m: float = 1.0  # footprint-to-box distance below which an in-path agent is too close
    ttc_threshold_s: float = 0.95  # nuPlan's least_min_ttc
    ttc_horizon_s: float = 3.0  # nuPlan's TTC look-ahead; min TTC is capped here
    # Sampling step of the paths (the boxes move linearly in between; exact swept test).
    ttc_step_s: float = 0.1
    # The ego's path: its box extended forward by gap_m and widened by this much per side.
    path_lateral_margin_m: float = 0.3
    # "Entering the path": the agent reaches that corridor within this time at current velocities.
    path_entry_horizon_s: float = 1.0
    # No close encounter (and no TTC) while the ego is stopped (nuPlan's TTC: 5e-3 m/s): what
    # comes near a standing ego is not the ego's doing; its approach was judged while moving.
    ego_stopped_speed_mps: float = 0.005


@dataclass
class TrafficRuleConfig:
    stop_speed_mps: float = 0.1  # counts as having stopped at a stop sign (CARLA: 0.1 m/s)
    stop_sign_zone_m: float = 5.0  # ...while the ego's front is this close before the line


@dataclass
class RouteConfig:
    # Progress only counts while the ego is this close (laterally) to the route polyline.
    max_lateral_m: float = 6.0
    # Progress can never exceed the distance driven plus this slack (guards against projecting
    # onto a later part of a route that passes near itself).
    progress_slack_m: float = 2.0


@dataclass
class ComfortConfig:
    """nuPlan's comfort bounds, used by NAVSIM's PDMS (see /shared/FACTS.md)."""

    min_lon_accel_mps2: float = -4.05
    max_lon_accel_mps2: float = 2.40
    max_abs_lat_accel_mps2: float = 4.89
    max_abs_lon_jerk_mps3: float = 4.13
    max_jerk_mps3: float = 8.37  # magnitude of the (lon, lat) jerk vector
    max_abs_yaw_rate_radps: float = 0.95
    max_abs_yaw_accel_radps2: float = 1.93
    # Savitzky-Golay differentiation window (frames, odd) and polynomial order, as nuPlan.
    savgol_window_frames: int = 5
    savgol_poly_order: int = 2


@dataclass
class DrivingScoreConfig:
    """CARLA leaderboard 2.0 infraction penalties (multiplied once per at-fault infraction)."""

    penalty_pedestrian: float = 0.5
    penalty_vehicle: float = 0.6
    penalty_cyclist: float = 0.6  # CARLA treats bicycles as vehicles
    penalty_static: float = 0.65  # static obstacles and cones
    penalty_red_light: float = 0.7
    penalty_stop_sign: float = 0.8


@dataclass
class MetricsConfig:
    collision: CollisionConfig = field(default_factory=CollisionConfig)
    offroad: OffroadConfig = field(default_factory=OffroadConfig)
    close_encounter: CloseEncounterConfig = field(default_factory=CloseEncounterConfig)
    traffic_rules: TrafficRuleConfig = field(default_factory=TrafficRuleConfig)
    route: RouteConfig = field(default_factory=RouteConfig)
    comfort: ComfortConfig = field(default_factory=ComfortConfig)
    driving_score: DrivingScoreConfig = field(default_factory=DrivingScoreConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)

    def __post_init__(self) -> None:
        if self.comfort.savgol_window_frames < 3 or self.comfort.savgol_window_frames % 2 == 0:
            raise ValueError(
                f"comfort.savgol_window_frames must be odd and >= 3, got "
                f"{self.comfort.savgol_window_frames}"
            )
        if self.comfort.savgol_poly_order >= self.comfort.savgol_window_frames:
            raise ValueError("comfort.savgol_poly_order must be smaller than the window")
        for name in ("ttc_horizon_s", "ttc_step_s", "path_entry_horizon_s"):
            if getattr(self.close_encounter, name) <= 0:
                raise ValueError(f"close_encounter.{name} must be positive")


def load_metrics_config(
    path: str | Path | None = DEFAULT_METRICS_CONFIG, overrides: list[str] | tuple[str, ...] = ()
) -> MetricsConfig:
    """MetricsConfig defaults, updated by configs/metrics.yaml (when present), then overrides."""
    if path is not None and Path(path) == DEFAULT_METRICS_CONFIG and not Path(path).is_file():
        path = None
    return load_config(MetricsConfig, path, overrides)


# ---- what the episode dict holds (consumed by sim_eval.stats) ----------------------------------
# worse = "higher": a larger value is a regression; "lower": a smaller one; "none": report only.
METRIC_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec("collision", "binary", "higher"),
    MetricSpec("collision_at_fault", "binary", "higher"),
    MetricSpec("offroad", "binary", "higher"),
    MetricSpec("close_encounter", "binary", "higher"),
    MetricSpec("collision_or_close_encounter", "binary", "higher"),
    MetricSpec("red_light_violation", "binary", "higher"),
    MetricSpec("stop_sign_violation", "binary", "higher"),
    MetricSpec("planner_failed", "binary", "higher"),
    MetricSpec("comfortable", "binary", "lower"),
    MetricSpec("num_collisions", "count", "higher"),
    MetricSpec("num_at_fault_collisions", "count", "higher"),
    MetricSpec("num_close_encounters", "count", "higher"),
    MetricSpec("num_offroad_events", "count", "higher"),
    MetricSpec("num_red_light_violations", "count", "higher"),
    MetricSpec("num_stop_sign_violations", "count", "higher"),
    MetricSpec("route_completion", "continuous", "lower"),
    MetricSpec("driving_score", "continuous", "lower"),
    MetricSpec("min_ttc_s", "continuous", "lower"),
    MetricSpec("min_gap_m", "continuous", "lower"),
    MetricSpec("comfort_fraction", "continuous", "lower"),
    MetricSpec("offroad_max_distance_m", "continuous", "higher"),
    MetricSpec("distance_m", "continuous", "none"),
)


# ---- vectorised box geometry --------------------------------------------------------------------
def _box_corners(cx, cy, yaw, length, width) -> np.ndarray:
    """(N, 4, 2) corners front-left, rear-left, rear-right, front-right (as `box_corners`)."""
    c, s = np.cos(yaw), np.sin(yaw)
    hl, hw = np.asarray(length) / 2.0, np.asarray(width) / 2.0
    lx = np.stack([hl, -hl, -hl, hl], axis=-1)  # (N, 4) box frame
    ly = np.stack([hw, hw, -hw, -hw], axis=-1)
    wx = np.asarray(cx)[..., None] + c[..., None] * lx - s[..., None] * ly
    wy = np.asarray(cy)[..., None] + s[..., None] * lx + c[..., None] * ly
    return np.stack([wx, wy], axis=-1)


def _polygons(corners: np.ndarray):
    import shapely

    return shapely.polygons(corners)


def swept_overlap_start(
    center_a: np.ndarray,
    yaw_a: np.ndarray,
    half_len_a: np.ndarray,
    half_wid_a: np.ndarray,
    center_b: np.ndarray,
    yaw_b: np.ndarray,
    half_len_b: np.ndarray,
    half_wid_b: np.ndarray,
    rel_vel_b: np.ndarray,
    horizon_s: float,
) -> np.ndarray:
    """(N,) first time in [0, horizon_s] at which box b, translating with velocity `rel_vel_b`
    relative to box a, overlaps box a; +inf when it never does (0 when they overlap now).

    Written by hand because shapely has no continuous collision test: for two convex boxes
    under pure translation the separating-axis test reduces, on each of the 4 edge normals, to
    an interval of times where the projections overlap; the boxes overlap when all 4 do.
    Shapes: centers (N, 2), yaws / half sizes (N,), rel_vel_b (N, 2)."""
    d0 = np.asarray(center_b, dtype=np.float64) - np.asarray(center_a, dtype=np.float64)
    w = np.asarray(rel_vel_b, dtype=np.float64)
    ua = np.stack([np.cos(yaw_a), np.sin(yaw_a)], axis=-1)  # (N, 2) heading of a
    va = np.stack([-ua[:, 1], ua[:, 0]], axis=-1)  # (N, 2) left of a
    ub = np.stack([np.cos(yaw_b), np.sin(yaw_b)], axis=-1)
    vb = np.stack([-ub[:, 1], ub[:, 0]], axis=-1)
    axes = np.stack([ua, va, ub, vb], axis=1)  # (N, 4, 2)

    def radius(u, v, hl, hw):  # (N, 4) half extent of a box projected on each axis
        return hl[:, None] * np.abs((axes * u[:, None]).sum(-1)) + hw[:, None] * np.abs(
            (axes * v[:, None]).sum(-1)
        )

    r = radius(ua, va, np.asarray(half_len_a), np.asarray(half_wid_a)) + radius(
        ub, vb, np.asarray(half_len_b), np.asarray(half_wid_b)
    )
    p = (axes * d0[:, None]).sum(-1)  # (N, 4) projected centre offset at t=0
    q = (axes * w[:, None]).sum(-1)  # (N, 4) its rate of change
    moving = np.abs(q) > 1e-12
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = np.where(moving, (-r - p) / q, -np.inf)
        t2 = np.where(moving, (r - p) / q, np.inf)
    lo = np.minimum(t1, t2)
    hi = np.maximum(t1, t2)
    # A static axis overlaps for all time or never.
    static_sep = ~moving & (np.abs(p) >= r)
    lo = np.where(static_sep, np.inf, lo)
    hi = np.where(static_sep, -np.inf, hi)
    enter = np.maximum(lo.max(axis=1), 0.0)
    leave = np.minimum(hi.min(axis=1), horizon_s)
    return np.where(enter < leave, enter, np.inf)


# ---- per-episode arrays ---------------------------------------------------------------------------
@dataclass
class _Episode:
    """Arrays extracted once from an EpisodeRecord. T frames, N agent observations."""

    t: np.ndarray  # (T,) s
    ego_xy: np.ndarray  # (T, 2) rear axle, world
    ego_yaw: np.ndarray  # (T,)
    ego_speed: np.ndarray  # (T,)
    ego_center: np.ndarray  # (T, 2) box centre
    ego_front: np.ndarray  # (T, 2) front-bumper midpoint
    ego_len: np.ndarray  # (T,)
    ego_wid: np.ndarray  # (T,)
    ego_rear_to_center: np.ndarray  # (T,)
    ego_polys: np.ndarray  # (T,) shapely polygons
    # agent observations, one row per (frame, agent)
    a_frame: np.ndarray  # (N,) int frame index
    a_idx: np.ndarray  # (N,) int index into agent_ids
    a_xy: np.ndarray  # (N, 2) box centre
    a_yaw: np.ndarray  # (N,)
    a_vel: np.ndarray  # (N, 2) world m/s
    a_len: np.ndarray  # (N,)
    a_wid: np.ndarray  # (N,)
    a_polys: np.ndarray  # (N,) shapely polygons
    a_gap: np.ndarray  # (N,) m, ego footprint to agent box distance (0 when they overlap)
    # (N,) the source itself reported the ego in contact with this agent at this frame
    # (Scene.metadata["collided_with"]): a simulator's collision response can push the boxes
    # further apart than any geometric tolerance before the frame is recorded.
    a_reported: np.ndarray
    agent_ids: list[str]
    agent_classes: list[AgentClass]


def _extract(record: EpisodeRecord) -> _Episode:
    import shapely

    frames = record.frames
    if not frames:
        raise MetricsError(
            f"episode {record.scenario!r} (seed {record.seed}) has no frames: the simulator "
            "returned nothing to evaluate; check its reset()"
        )
    egos = [f.ego for f in frames]
    ego = np.array(
        [
            (f.timestamp, e.x, e.y, e.yaw, e.speed, e.length, e.width, e.rear_axle_to_center_m)
            for f, e in zip(frames, egos)
        ],
        dtype=np.float64,
    )  # (T, 8)
    t, x, y, yaw, speed, length, width, r2c = ego.T
    cos, sin = np.cos(yaw), np.sin(yaw)
    center = np.stack([x + r2c * cos, y + r2c * sin], axis=1)
    front = center + (length / 2.0)[:, None] * np.stack([cos, sin], axis=1)
    ego_polys = _polygons(_box_corners(center[:, 0], center[:, 1], yaw, length, width))

    ids: dict[str, int] = {}
    classes: list[AgentClass] = []
    rows: list[tuple[float, ...]] = []
    for k, frame in enumerate(frames):
        for a in frame.agents:
            i = ids.get(a.id)
            if i is None:
                i = ids[a.id] = len(classes)
                classes.append(a.agent_class)
            rows.append((k, i, a.x, a.y, a.yaw, a.vx, a.vy, a.length, a.width))
    arr = np.array(rows, dtype=np.float64).reshape(-1, 9)
    a_polys = _polygons(_box_corners(arr[:, 2], arr[:, 3], arr[:, 4], arr[:, 7], arr[:, 8]))
    frame_idx = arr[:, 0].astype(np.int64)
    a_gap = shapely.distance(ego_polys[frame_idx], a_polys) if len(arr) else np.zeros(0)
    a_idx = arr[:, 1].astype(np.int64)
    a_reported = np.zeros(len(arr), dtype=bool)
    for k, frame in enumerate(frames):
        hit = frame.metadata.get("collided_with")
        if hit is not None and hit in ids:
            a_reported |= (frame_idx == k) & (a_idx == ids[hit])
    return _Episode(
        t=t,
        ego_xy=np.stack([x, y], axis=1),
        ego_yaw=yaw,
        ego_speed=speed,
        ego_center=center,
        ego_front=front,
        ego_len=length,
        ego_wid=width,
        ego_rear_to_center=r2c,
        ego_polys=ego_polys,
        a_frame=frame_idx,
        a_idx=a_idx,
        a_xy=arr[:, 2:4],
        a_yaw=arr[:, 4],
        a_vel=arr[:, 5:7],
        a_len=arr[:, 7],
        a_wid=arr[:, 8],
        a_polys=a_polys,
        a_gap=a_gap,
        a_reported=a_reported,
        agent_ids=list(ids),
        agent_classes=classes,
    )


def _runs(mask: np.ndarray) -> int:
    """Number of contiguous True runs in a 1-D boolean array (events, not frames)."""
    m = np.asarray(mask, dtype=bool)
    if m.size == 0:
        return 0
    return int(m[0]) + int(np.count_nonzero(m[1:] & ~m[:-1]))


def _onsets(ep: _Episode, mask: np.ndarray) -> np.ndarray:
    """Row indices of agent observations where `mask` turns on for that agent (the agent was
    not flagged, or not present, in the previous frame)."""
    flagged = set(zip(ep.a_idx[mask].tolist(), ep.a_frame[mask].tolist()))
    rows = np.flatnonzero(mask)
    keep = [r for r in rows if (int(ep.a_idx[r]), int(ep.a_frame[r]) - 1) not in flagged]
    return np.asarray(keep, dtype=np.int64)


# ---- collisions -----------------------------------------------------------------------------
@dataclass(frozen=True)
class CollisionEvent:
    time_s: float  # interpolated first contact
    frame: int  # first frame with overlap
    agent_id: str
    agent_class: AgentClass
    collision_type: str  # "front" | "lateral" | "rear" (where the ego was hit)
    side: str  # "front" | "rear" | "left" | "right"
    at_fault: bool
    reason: str  # why (not) at fault
    ego_speed_mps: float
    relative_speed_mps: float  # closing speed at contact (|v_agent - v_ego|)

    def to_dict(self) -> dict[str, Any]:
        return {
            "time_s": self.time_s,
            "frame": self.frame,
            "agent_id": self.agent_id,
            "agent_class": self.agent_class.value,
            "collision_type": self.collision_type,
            "side": self.side,
            "at_fault": self.at_fault,
            "reason": self.reason,
            "ego_speed_mps": self.ego_speed_mps,
            "relative_speed_mps": self.relative_speed_mps,
        }


def _in_contact(ep: _Episode, cfg: CollisionConfig) -> np.ndarray:
    """(N,) the agent box overlaps or touches the ego footprint (within the tolerance), or the
    source reported the contact."""
    return (ep.a_gap <= cfg.contact_tolerance_m) | ep.a_reported


def _ego_velocity(ep: _Episode, k: np.ndarray | int) -> np.ndarray:
    return ep.ego_speed[k, None] * np.stack([np.cos(ep.ego_yaw[k]), np.sin(ep.ego_yaw[k])], -1)


def _contact_geometry(ep: _Episode, row: int, cfg: CollisionConfig) -> tuple[float, str]:
    """Interpolated first-contact time and the side of the ego that was hit.

    Between the last frame without contact and the first with it, both boxes are linearly
    interpolated and the onset found by bisection; the side is the ego-box edge nearest to
    the centroid of the (then tiny) contact region."""
    from shapely.geometry import Polygon

    k = int(ep.a_frame[row])
    ai = int(ep.a_idx[row])
    prev = np.flatnonzero((ep.a_idx == ai) & (ep.a_frame == k - 1))

    def boxes(alpha: float) -> tuple[Polygon, Polygon, np.ndarray, float]:
        kp = k - 1 if len(prev) else k
        rp = int(prev[0]) if len(prev) else row
        lerp = lambda p, q: p + alpha * (q - p)  # noqa: E731
        e_c = lerp(ep.ego_center[kp], ep.ego_center[k])
        e_yaw = ep.ego_yaw[kp] + alpha * float(wrap_angle(ep.ego_yaw[k] - ep.ego_yaw[kp]))
        a_c = lerp(ep.a_xy[rp], ep.a_xy[row])
        a_yaw = ep.a_yaw[rp] + alpha * float(wrap_angle(ep.a_yaw[row] - ep.a_yaw[rp]))
        ego_box = Polygon(
            _box_corners(
                np.array([e_c[0]]), np.array([e_c[1]]), np.array([e_yaw]),
                ep.ego_len[[k]], ep.ego_wid[[k]],
            )[0]
        )  # fmt: skip
        agent_box = Polygon(
            _box_corners(
                np.array([a_c[0]]), np.array([a_c[1]]), np.array([a_yaw]),
                ep.a_len[[row]], ep.a_wid[[row]],
            )[0]
        )  # fmt: skip
        return ego_box, agent_box, e_c, e_yaw

    lo, hi = 0.0, 1.0
    if len(prev) and k > 0:
        for _ in range(cfg.onset_bisection_steps):
            mid = 0.5 * (lo + hi)
            e_box, a_box, _, _ = boxes(mid)
            if e_box.distance(a_box) <= cfg.contact_tolerance_m:
                hi = mid
            else:
                lo = mid
        t_contact = float(ep.t[k - 1] + hi * (ep.t[k] - ep.t[k - 1]))
    else:
        t_contact = float(ep.t[k])
    e_box, a_box, e_c, e_yaw = boxes(hi if (len(prev) and k > 0) else 1.0)
    # The contact region: the agent box within the tolerance of the ego box (a thin strip
    # along the touching edges, or the overlap); its centroid locates the hit on the ego.
    grown = e_box.buffer(cfg.contact_tolerance_m + 1e-6, join_style="mitre")
    region = grown.intersection(a_box)
    point = np.array(region.centroid.coords[0]) if not region.is_empty else ep.a_xy[row]
    c, s = math.cos(e_yaw), math.sin(e_yaw)
    dx, dy = point - e_c
    u, v = c * dx + s * dy, -s * dx + c * dy  # contact point in the ego box frame
    hl, hw = ep.ego_len[k] / 2.0, ep.ego_wid[k] / 2.0
    edges = {"front": hl - u, "rear": u + hl, "left": hw - v, "right": hw + v}
    side = min(edges, key=edges.get)
    return t_contact, side


class _LaneIndex:
    """Lane polygons of a map, built lazily (only collision attribution needs them)."""

    def __init__(self, map_data: MapData):
        self.map = map_data
        self.ids = list(map_data.lanes)
        self._polys: np.ndarray | None = None

    @property
    def polys(self) -> np.ndarray:
        if self._polys is None:
            self._polys = np.array(
                [
                    lane_polygon(lane.left_boundary, lane.right_boundary)
                    for lane in self.map.lanes.values()
                ],
                dtype=object,
            )
        return self._polys

    def lanes_at(self, xy: np.ndarray, yaw: float) -> list[str]:
        """Lanes containing the point whose direction agrees with `yaw` (within 90 deg)."""
        import shapely

        if not self.ids:
            return []
        inside = shapely.contains_xy(self.polys, float(xy[0]), float(xy[1]))
        out = []
        for i in np.flatnonzero(inside):
            lane = self.map.lanes[self.ids[i]]
            cl = lane.centerline
            j = int(np.argmin(((cl - xy) ** 2).sum(axis=1)))
            j2 = min(j + 1, len(cl) - 1)
            j1 = j2 - 1
            d = cl[j2] - cl[j1]
            if d @ np.array([math.cos(yaw), math.sin(yaw)]) > 0:
                out.append(lane.id)
        return out

    def corridor(self, lane_ids: list[str], margin_m: float):
        """Union of the lanes, their successors and predecessors, shrunk by `margin_m`."""
        from shapely.ops import unary_union

        ids = set(lane_ids)
        for lid in lane_ids:
            lane = self.map.lanes[lid]
            ids.update(i for i in (*lane.successors, *lane.predecessors) if i in self.map.lanes)
        polys = [self.polys[self.ids.index(i)].buffer(-margin_m) for i in sorted(ids)]
        return unary_union(polys)


def collision_events(
    record: EpisodeRecord, cfg: MetricsConfig | None = None, *, _ep: _Episode | None = None
) -> list[CollisionEvent]:
    """Every collision of the episode (one per agent per contact), with fault attribution.

    Not the ego's fault: contact on the ego's rear (rear-ended by a follower); contact on its
    side or front by an agent that entered the ego's lane within `cut_in_window_s` before the
    contact (cut-in / sideswipe); any contact while the ego is stopped. Everything else is."""
    import shapely

    cfg = cfg or MetricsConfig()
    ccfg = cfg.collision
    ep = _ep if _ep is not None else _extract(record)
    contact = _in_contact(ep, ccfg)
    if not contact.any():
        return []
    lanes = _LaneIndex(record.map)
    events: list[CollisionEvent] = []
    for row in _onsets(ep, contact):
        k = int(ep.a_frame[row])
        ai = int(ep.a_idx[row])
        t_contact, side = _contact_geometry(ep, int(row), ccfg)
        ctype = {"front": "front", "rear": "rear"}.get(side, "lateral")
        ego_speed = float(ep.ego_speed[k])
        rel = float(np.linalg.norm(ep.a_vel[row] - _ego_velocity(ep, k)))
        if ego_speed <= ccfg.ego_stopped_speed_mps:
            at_fault, reason = False, "ego_stopped"
        elif ctype == "rear":
            at_fault, reason = False, "rear_ended_by_follower"
        else:
            # When did this agent enter the ego's lane? Scan its observations up to contact.
            ego_lanes = lanes.lanes_at(ep.ego_center[k], float(ep.ego_yaw[k]))
            entered_s = None
            if ego_lanes:
                corridor = lanes.corridor(ego_lanes, ccfg.lane_entry_margin_m)
                obs = np.flatnonzero((ep.a_idx == ai) & (ep.a_frame <= k))
                obs = obs[np.argsort(ep.a_frame[obs])]
                inside = shapely.intersects(ep.a_polys[obs], corridor)
                if inside[-1]:
                    outside = np.flatnonzero(~inside)
                    # first observation in the lane after the last one outside it; an agent
                    # seen in the lane from its first observation entered before the record.
                    if len(outside):
                        entered_s = float(ep.t[ep.a_frame[obs[outside[-1] + 1]]])
            if entered_s is not None and t_contact - entered_s <= ccfg.cut_in_window_s + 1e-9:
                at_fault, reason = False, "cut_in_within_window"
            else:
                at_fault, reason = True, f"ego_{ctype}"
        events.append(
            CollisionEvent(
                time_s=t_contact,
                frame=k,
                agent_id=ep.agent_ids[ai],
                agent_class=ep.agent_classes[ai],
                collision_type=ctype,
                side=side,
                at_fault=at_fault,
                reason=reason,
                ego_speed_mps=ego_speed,
                relative_speed_mps=rel,
            )
        )
    events.sort(key=lambda e: e.time_s)
    return events


# ---- off-road -----------------------------------------------------------------------------------
def _offroad(ep: _Episode, record: EpisodeRecord, cfg: OffroadConfig) -> dict[str, Any]:
    area = drivable_area(record.map)
    if area is None or area.is_empty:
        raise MetricsError(
            f"episode {record.scenario!r}: the map has no lanes and no drivable_area, so "
            "off-road is undefined; give MapData a drivable_area or lanes"
        )
    out_area, out_dist = footprint_outside(area, ep.ego_polys)
    off = (out_area > cfg.area_tolerance_m2) | (out_dist > cfg.distance_tolerance_m)
    return {
        "offroad": bool(off.any()),
        "num_offroad_events": _runs(off),
        "offroad_time_s": float(off.sum() * _dt(ep)),
        "offroad_max_distance_m": float(out_dist.max()),
        "offroad_max_area_m2": float(out_area.max()),
    }


def _dt(ep: _Episode) -> float:
    return float(np.median(np.diff(ep.t))) if len(ep.t) > 1 else 0.1


# ---- close encounters -----------------------------------------------------------------------
def _along_path(
    xy: np.ndarray, yaw: np.ndarray, s_query: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Poses at arc lengths `s_query` (any shape, m from the first point) along the polyline of
    recorded poses `xy` (P, 2) / `yaw` (P,): linear interpolation inside, and a straight line
    along the last heading beyond its end. Returns (s_query.shape + (2,), s_query.shape)."""
    seg = np.linalg.norm(np.diff(xy, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])  # (P,) non-decreasing
    # keep one pose per distinct arc length (a standing road user repeats its pose)
    keep = np.concatenate([[True], seg > 1e-6])
    arc, pxy, pyaw = arc[keep], xy[keep], np.unwrap(yaw)[keep]
    q = np.asarray(s_query, dtype=np.float64)
    x = np.interp(q, arc, pxy[:, 0])
    y = np.interp(q, arc, pxy[:, 1])
    h = np.interp(q, arc, pyaw)
    beyond = np.maximum(q - arc[-1], 0.0)
    x = x + beyond * math.cos(pyaw[-1])
    y = y + beyond * math.sin(pyaw[-1])
    return np.stack([x, y], axis=-1), h


def path_ttc(ep: _Episode, rows: np.ndarray, horizon_s: float, step_s: float) -> np.ndarray:
    """(N,) time to collision of every agent observation selected by `rows` (+inf elsewhere).

    At frame k the ego keeps its current speed along the path it actually drove from k on
    (its recorded box centres and headings, extended straight beyond the last frame) and each
    agent keeps its current speed |(vx, vy)| along the path it actually drove from k on
    (likewise); TTC is the first time within `horizon_s` at which the two boxes overlap.
    Between samples `step_s` apart the boxes translate linearly and the exact swept
    separating-axis test (`swept_overlap_start`) finds the onset.

    Why not straight lines (nuPlan projects both along their current heading): at junctions
    the straight projection of a turning ego runs through the cars waiting at the next stop
    line or oncoming in the opposite lane, and that of a turning agent through the ego, so a
    TTC under 1 s is reported for traffic whose boxes never come near (docs/METRICS.md). The
    current *speed* is kept, so braking late towards an obstacle on the path still counts."""
    out = np.full(len(ep.a_frame), np.inf)
    sel = np.flatnonzero(rows)
    if len(sel) == 0:
        return out
    J = max(1, int(math.ceil(horizon_s / step_s - 1e-9)))
    tau = np.arange(J + 1) * step_s  # (J+1,) s
    tau[-1] = min(tau[-1], horizon_s)
    # Cheap prefilter: pairs that cannot meet within the horizon whatever their paths.
    k = ep.a_frame[sel]
    v_e = ep.ego_speed[k]
    v_a = np.hypot(ep.a_vel[sel, 0], ep.a_vel[sel, 1])
    reach = (v_e + v_a) * horizon_s + 0.5 * (
        np.hypot(ep.ego_len[k], ep.ego_wid[k]) + np.hypot(ep.a_len[sel], ep.a_wid[sel])
    )
    sel = sel[np.linalg.norm(ep.a_xy[sel] - ep.ego_center[k], axis=1) < reach]
    if len(sel) == 0:
        return out
    k = ep.a_frame[sel]
    # Ego poses (M, J+1): arc length from frame 0, advanced at the current speed.
    e_arc = np.concatenate(
        [[0.0], np.cumsum(np.linalg.norm(np.diff(ep.ego_center, axis=0), axis=1))]
    )
    e_xy, e_yaw = _along_path(
        ep.ego_center, ep.ego_yaw, e_arc[k, None] + ep.ego_speed[k, None] * tau
    )
    a_xy = np.empty_like(e_xy)
    a_yaw = np.empty_like(e_yaw)
    for ai in np.unique(ep.a_idx[sel]):
        obs = np.flatnonzero(ep.a_idx == ai)
        obs = obs[np.argsort(ep.a_frame[obs])]  # this agent's observations in time order
        mine = np.flatnonzero(ep.a_idx[sel] == ai)
        pos = np.searchsorted(ep.a_frame[obs], ep.a_frame[sel[mine]])  # index of each row
        a_arc = np.concatenate(
            [[0.0], np.cumsum(np.linalg.norm(np.diff(ep.a_xy[obs], axis=0), axis=1))]
        )
        speed = np.hypot(ep.a_vel[sel[mine], 0], ep.a_vel[sel[mine], 1])
        q = a_arc[pos, None] + speed[:, None] * tau
        a_xy[mine], a_yaw[mine] = _along_path(ep.a_xy[obs], ep.a_yaw[obs], q)
    M, n = len(sel), J
    rep = lambda x: np.repeat(x, n)  # noqa: E731 - per-row values for each of the J segments
    rel_vel = ((a_xy[:, 1:] - a_xy[:, :-1]) - (e_xy[:, 1:] - e_xy[:, :-1])) / np.diff(tau)[
        None, :, None
    ]
    t_seg = swept_overlap_start(
        e_xy[:, :-1].reshape(-1, 2), e_yaw[:, :-1].ravel(),
        rep(ep.ego_len[k] / 2.0), rep(ep.ego_wid[k] / 2.0),
        a_xy[:, :-1].reshape(-1, 2), a_yaw[:, :-1].ravel(),
        rep(ep.a_len[sel] / 2.0), rep(ep.a_wid[sel] / 2.0),
        rel_vel.reshape(-1, 2), step_s,
    ).reshape(M, n)  # fmt: skip
    t_seg = np.where(t_seg <= np.diff(tau)[None, :] + 1e-12, t_seg + tau[None, :-1], np.inf)
    out[sel] = t_seg.min(axis=1)
    out[out > horizon_s] = np.inf
    return out


def _close_encounters(ep: _Episode, cfg: CloseEncounterConfig, contact: np.ndarray) -> dict:

    result = {
        "close_encounter": False,
        "num_close_encounters": 0,
        "min_ttc_s": float(cfg.ttc_horizon_s),
        "min_gap_m": None,
        "min_gap_any_m": None,
        "first_close_encounter_s": None,
    }
    if len(ep.a_frame) == 0:
        return result
    f = ep.a_frame
    gap = ep.a_gap  # (N,) m, 0 when overlapping
    yaw = ep.ego_yaw[f]
    c, s = np.cos(yaw), np.sin(yaw)
    rel = ep.a_xy - ep.ego_xy[f]
    lon = c * rel[:, 0] + s * rel[:, 1]  # agent centre ahead of the rear axle, m
    rear_bumper = ep.ego_rear_to_center[f] - ep.ego_len[f] / 2.0
    # Tailgating exclusion: agents whose centre is behind the ego's rear bumper.
    ahead = lon > rear_bumper
    ego_vel = _ego_velocity(ep, f)  # (N, 2)
    rel_vel = ep.a_vel - ego_vel
    hl_a, hw_a = ep.a_len / 2.0, ep.a_wid / 2.0
    # Time to collision at current speeds, each road user moving along the path it actually
    # drove (not along a straight line): only for agents not behind and while the ego moves.
    ego_moving = ep.ego_speed[f] > cfg.ego_stopped_speed_mps
    ttc_valid = ahead & ego_moving & ~contact
    ttc = path_ttc(ep, ttc_valid, cfg.ttc_horizon_s, cfg.ttc_step_s)
    # In or entering the ego's path: the agent overlaps, now or within path_entry_horizon_s,
    # the ego box extended forward by gap_m and widened by path_lateral_margin_m per side.
    look = cfg.gap_m
    corridor_center = ep.ego_center[f] + (look / 2.0) * np.stack([c, s], axis=1)
    in_path_t = swept_overlap_start(
        corridor_center, yaw, ep.ego_len[f] / 2.0 + look / 2.0,
        ep.ego_wid[f] / 2.0 + cfg.path_lateral_margin_m,
        ep.a_xy, ep.a_yaw, hl_a, hw_a, rel_vel, cfg.path_entry_horizon_s,
    )  # fmt: skip
    in_path = ahead & np.isfinite(in_path_t)
    close = ego_moving & ((in_path & (gap < cfg.gap_m) & ~contact) | (ttc < cfg.ttc_threshold_s))
    result["close_encounter"] = bool(close.any())
    if close.any():
        onsets = _onsets(ep, close)
        result["num_close_encounters"] = int(len(onsets))
        result["first_close_encounter_s"] = float(ep.t[f[close]].min())
    if np.isfinite(ttc).any():
        result["min_ttc_s"] = float(min(ttc.min(), cfg.ttc_horizon_s))
    if in_path.any():
        result["min_gap_m"] = float(gap[in_path].min())
    result["min_gap_any_m"] = float(gap.min())
    return result


# ---- traffic rules --------------------------------------------------------------------------------
def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """z of (a - o) x (b - o), broadcast over leading dims."""
    return (a[..., 0] - o[..., 0]) * (b[..., 1] - o[..., 1]) - (a[..., 1] - o[..., 1]) * (
        b[..., 0] - o[..., 0]
    )


def _point_segment_distance(pts: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    d = q - p
    u = np.clip(((pts - p) @ d) / max(float(d @ d), 1e-12), 0.0, 1.0)
    return np.linalg.norm(pts - (p + u[:, None] * d), axis=1)


def _lane_direction(map_data: MapData, lane_ids: tuple[str, ...], xy: np.ndarray) -> list:
    out = []
    for lid in lane_ids:
        lane = map_data.lanes.get(lid)
        if lane is None or len(lane.centerline) < 2:
            continue
        cl = lane.centerline
        j = int(np.argmin(((cl - xy) ** 2).sum(axis=1)))
        j2 = min(j + 1, len(cl) - 1)
        out.append(cl[j2] - cl[j2 - 1])
    return out


def _light_state(frame, line: StopLine) -> LightState:
    for light in frame.traffic_lights:
        if (line.light_id is not None and light.id == line.light_id) or (
            light.stop_line_id == line.id
        ):
            return LightState.parse(light.state)
    return LightState.UNKNOWN


def _traffic_rules(ep: _Episode, record: EpisodeRecord, cfg: TrafficRuleConfig) -> dict:
    """Red-light and stop-sign violations: the ego's front crosses a stop line, in its lane's
    direction of travel, while the light is red (state of the frame before the crossing) or,
    for a stop sign, without having stopped within `stop_sign_zone_m` before the line."""
    n_red = n_stop = 0
    first: float | None = None
    F = ep.ego_front  # (T, 2)
    if len(F) < 2:
        return {
            "red_light_violation": False,
            "num_red_light_violations": 0,
            "stop_sign_violation": False,
            "num_stop_sign_violations": 0,
            "first_traffic_violation_s": None,
        }
    a, b = F[:-1], F[1:]  # (T-1, 2) front motion over each step
    for line in record.map.stop_lines.values():
        pts = np.asarray(line.points, dtype=np.float64).reshape(-1, 2)
        if len(pts) < 2:
            continue
        p, q = pts[0], pts[-1]
        side = np.sign(_cross(p[None], np.broadcast_to(q, F.shape), F))  # (T,)
        s_a, s_b = side[:-1], side[1:]
        o3 = _cross(a, b, np.broadcast_to(p, a.shape))
        o4 = _cross(a, b, np.broadcast_to(q, a.shape))
        crosses = (s_a != 0) & (s_a != s_b) & (np.sign(o3) != np.sign(o4))
        crossings = np.flatnonzero(crosses)  # step j: between frame j and j+1
        last = -1
        for j in crossings:
            move = b[j] - a[j]
            dirs = _lane_direction(record.map, line.lane_ids, 0.5 * (a[j] + b[j]))
            if dirs and not any(float(move @ d) > 0 for d in dirs):
                continue  # crossing against the lane's direction: not this lane's stop line
            if line.light_id is not None or any(
                lt.stop_line_id == line.id for lt in record.frames[j].traffic_lights
            ):
                if _light_state(record.frames[j], line) == LightState.RED:
                    n_red += 1
                    first = float(ep.t[j + 1]) if first is None else min(first, ep.t[j + 1])
            if line.is_stop_sign:
                window = np.arange(last + 1, j + 1)
                dist = _point_segment_distance(F[window], p, q)
                stopped = (
                    (ep.ego_speed[window] <= cfg.stop_speed_mps)
                    & (dist <= cfg.stop_sign_zone_m)
                    & (side[window] == s_a[j])
                )
                if not stopped.any():
                    n_stop += 1
                    first = float(ep.t[j + 1]) if first is None else min(first, ep.t[j + 1])
            last = j
    return {
        "red_light_violation": n_red > 0,
        "num_red_light_violations": n_red,
        "stop_sign_violation": n_stop > 0,
        "num_stop_sign_violations": n_stop,
        "first_traffic_violation_s": first,
    }


# ---- route ----------------------------------------------------------------------------------------
def _route(ep: _Episode, record: EpisodeRecord, cfg: RouteConfig) -> dict[str, Any]:
    route = record.route
    wp = np.asarray(route.waypoints, dtype=np.float64)
    if len(wp) < 2 or not route.length_m or route.length_m <= 0:
        raise MetricsError(
            f"episode {record.scenario!r}: the route needs >= 2 waypoints and a positive "
            f"length_m (got {len(wp)} waypoints, length_m={route.length_m}); every scenario "
            "must give its ego a route"
        )
    step = np.linalg.norm(np.diff(ep.ego_xy, axis=0), axis=1)
    driven = np.concatenate([[0.0], np.cumsum(step)])  # (T,) m
    seg_a, ab = wp[:-1], np.diff(wp, axis=0)  # (S, 2)
    seg_len = np.maximum(np.linalg.norm(ab, axis=1), 1e-9)
    seg_s0 = np.concatenate([[0.0], np.cumsum(seg_len)[:-1]])  # (S,) arc length at start
    P = ep.ego_xy[:, None, :]  # (T, 1, 2) rear axle
    u = np.clip(((P - seg_a) * ab).sum(-1) / seg_len**2, 0.0, 1.0)  # (T, S)
    dist2 = ((seg_a + u[..., None] * ab - P) ** 2).sum(-1)
    s_all = seg_s0 + u * seg_len  # (T, S)
    s0 = float(s_all[0, int(np.argmin(dist2[0]))])
    # Progress can't exceed distance driven (+ slack): hide segments the ego cannot have reached.
    reachable = seg_s0[None, :] <= s0 + driven[:, None] + cfg.progress_slack_m
    dist2 = np.where(reachable, dist2, np.inf)
    best = np.argmin(dist2, axis=1)
    s = s_all[np.arange(len(best)), best]
    near = np.sqrt(dist2[np.arange(len(best)), best]) <= cfg.max_lateral_m
    progress = max(0.0, float(np.max(np.where(near, s, s0))) - s0)
    goal = float(route.length_m)
    if goal - s0 <= 1e-6:
        raise MetricsError(
            f"episode {record.scenario!r}: the route's goal (length_m={goal:.1f} m along the "
            f"waypoints) lies at or behind the ego's start (s={s0:.1f} m); start the route's "
            "waypoints at or behind the ego"
        )
    return {
        "route_completion": float(np.clip(progress / (goal - s0), 0.0, 1.0)),
        "route_progress_m": progress,
        "route_length_m": goal - s0,
        "distance_m": float(driven[-1]),
    }


# ---- comfort --------------------------------------------------------------------------------------
def _comfort(ep: _Episode, cfg: ComfortConfig) -> dict[str, Any]:
    from scipy.signal import savgol_filter

    T = len(ep.t)
    dt = _dt(ep)
    if T < 3:
        return {"comfortable": True, "comfort_fraction": 1.0, **_comfort_maxima(None)}
    window = min(cfg.savgol_window_frames, T if T % 2 else T - 1)
    order = min(cfg.savgol_poly_order, window - 1)

    def deriv(y: np.ndarray) -> np.ndarray:
        return savgol_filter(y, window, order, deriv=1, delta=dt, mode="interp")

    v = ep.ego_speed
    yaw = np.unwrap(ep.ego_yaw)
    lon_acc = deriv(v)
    yaw_rate = deriv(yaw)
    yaw_acc = deriv(yaw_rate)
    lat_acc = v * yaw_rate
    lon_jerk = deriv(lon_acc)
    # Jerk magnitude from the body-frame (lon, lat) acceleration; the frame's rotation term
    # (yaw_rate x a) is left out, as in nuPlan's jerk_metric on the acceleration magnitude.
    jerk = np.hypot(lon_jerk, deriv(lat_acc))
    ok = (
        (lon_acc >= cfg.min_lon_accel_mps2)
        & (lon_acc <= cfg.max_lon_accel_mps2)
        & (np.abs(lat_acc) <= cfg.max_abs_lat_accel_mps2)
        & (np.abs(lon_jerk) <= cfg.max_abs_lon_jerk_mps3)
        & (jerk <= cfg.max_jerk_mps3)
        & (np.abs(yaw_rate) <= cfg.max_abs_yaw_rate_radps)
        & (np.abs(yaw_acc) <= cfg.max_abs_yaw_accel_radps2)
    )
    maxima = {
        "min_lon_accel_mps2": float(lon_acc.min()),
        "max_lon_accel_mps2": float(lon_acc.max()),
        "max_abs_lat_accel_mps2": float(np.abs(lat_acc).max()),
        "max_abs_lon_jerk_mps3": float(np.abs(lon_jerk).max()),
        "max_jerk_mps3": float(jerk.max()),
        "max_abs_yaw_rate_radps": float(np.abs(yaw_rate).max()),
        "max_abs_yaw_accel_radps2": float(np.abs(yaw_acc).max()),
    }
    return {
        "comfortable": bool(ok.all()),
        "comfort_fraction": float(ok.mean()),
        **_comfort_maxima(maxima),
    }


def _comfort_maxima(values: dict[str, float] | None) -> dict[str, float | None]:
    names = (
        "min_lon_accel_mps2",
        "max_lon_accel_mps2",
        "max_abs_lat_accel_mps2",
        "max_abs_lon_jerk_mps3",
        "max_jerk_mps3",
        "max_abs_yaw_rate_radps",
        "max_abs_yaw_accel_radps2",
    )
    return {f"comfort_{n}": (values or {}).get(n) for n in names}


# ---- driving score ------------------------------------------------------------------------------
def _collision_penalty(agent_class: AgentClass, cfg: DrivingScoreConfig) -> float:
    return {
        AgentClass.PEDESTRIAN: cfg.penalty_pedestrian,
        AgentClass.VEHICLE: cfg.penalty_vehicle,
        AgentClass.CYCLIST: cfg.penalty_cyclist,
        AgentClass.STATIC_OBSTACLE: cfg.penalty_static,
        AgentClass.CONE: cfg.penalty_static,
    }[AgentClass.parse(agent_class)]


def driving_score(
    route_completion: float,
    at_fault_collision_classes: list[AgentClass],
    n_red_light: int,
    n_stop_sign: int,
    cfg: DrivingScoreConfig,
) -> tuple[float, float]:
    """(driving score, infraction penalty): CARLA leaderboard style, route completion times
    the product of one penalty factor per at-fault infraction."""
    penalty = 1.0
    for cls in at_fault_collision_classes:
        penalty *= _collision_penalty(cls, cfg)
    penalty *= cfg.penalty_red_light**n_red_light * cfg.penalty_stop_sign**n_stop_sign
    return float(route_completion * penalty), float(penalty)


# ---- the whole episode ------------------------------------------------------------------------
def episode_key(family: str, seed: int) -> str:
    """The pairing key of an episode; equals `ScenarioSpec.key`."""
    return f"{family}:{seed}"


def evaluate_episode(record: EpisodeRecord, cfg: MetricsConfig | None = None) -> dict[str, Any]:
    """All metrics of one episode as a flat JSON-ready dict (keys listed in docs/METRICS.md)."""
    cfg = cfg or MetricsConfig()
    ep = _extract(record)
    contact = _in_contact(ep, cfg.collision)
    events = collision_events(record, cfg, _ep=ep)
    if record.termination == "collision" and not events:
        log.warning(
            "episode %s (seed %s) ended with a simulator collision but no footprints came within "
            "%.3f m: check the simulator's box sizes against the Scene's",
            record.scenario,
            record.seed,
            cfg.collision.contact_tolerance_m,
        )
    at_fault = [e for e in events if e.at_fault]
    shown = at_fault[0] if at_fault else (events[0] if events else None)

    out: dict[str, Any] = {
        "key": episode_key(record.family, record.seed),
        "scenario": record.scenario,
        "family": record.family,
        "seed": int(record.seed),
        "status": "ok",
        "termination": record.termination,
        "planner_failed": record.termination == "planner_failed",
        "planner_failure": record.failure,
        "duration_s": float(record.duration_s) if len(record.frames) > 1 else 0.0,
        "num_frames": len(record.frames),
        "collision": bool(events),
        "collision_at_fault": bool(at_fault),
        "num_collisions": len(events),
        "num_at_fault_collisions": len(at_fault),
        "collision_time_s": shown.time_s if shown else None,
        "collision_type": shown.collision_type if shown else None,
        "collision_side": shown.side if shown else None,
        "collision_agent_class": shown.agent_class.value if shown else None,
        "collision_agent_id": shown.agent_id if shown else None,
        "collision_fault_reason": shown.reason if shown else None,
        "collision_relative_speed_mps": shown.relative_speed_mps if shown else None,
    }
    out.update(_offroad(ep, record, cfg.offroad))
    out.update(_close_encounters(ep, cfg.close_encounter, contact))
    out["collision_or_close_encounter"] = out["collision_at_fault"] or out["close_encounter"]
    out.update(_traffic_rules(ep, record, cfg.traffic_rules))
    out.update(_route(ep, record, cfg.route))
    out.update(_comfort(ep, cfg.comfort))
    score, penalty = driving_score(
        out["route_completion"],
        [e.agent_class for e in at_fault],
        out["num_red_light_violations"],
        out["num_stop_sign_violations"],
        cfg.driving_score,
    )
    out["infraction_penalty"] = penalty
    out["driving_score"] = score
    statuses = [o.status for o in record.outputs if o is not None]
    out["planner_fallback_frames"] = sum(s == "fallback" for s in statuses)
    return out


def failed_episode_record(
    scenario: str, family: str, seed: int, error: str, **extra: Any
) -> dict[str, Any]:
    """The result row of an episode that could not run or be evaluated (status "error"):
    statistics count it apart instead of silently dropping it."""
    return {
        "key": episode_key(family, seed),
        "scenario": scenario,
        "family": family,
        "seed": int(seed),
        "status": "error",
        "error": error,
        **extra,
    }


__all__ = [
    "DEFAULT_METRICS_CONFIG",
    "METRIC_SPECS",
    "CloseEncounterConfig",
    "CollisionConfig",
    "CollisionEvent",
    "ComfortConfig",
    "DrivingScoreConfig",
    "MetricsConfig",
    "MetricsError",
    "OffroadConfig",
    "RouteConfig",
    "TrafficRuleConfig",
    "collision_events",
    "driving_score",
    "episode_key",
    "evaluate_episode",
    "failed_episode_record",
    "load_metrics_config",
    "path_ttc",
    "swept_overlap_start",
]
