"""Chain-of-causation (CoC) auto-labeler, and the parser that reads the labels back.

`label(decision, scene, future, rng)` turns the privileged expert's structured `Decision`
(longitudinal and lateral decision in the Alpamayo-R1 taxonomy plus its `CausalFactor`s) into
a short explanation such as "Nudge left within the lane to keep clearance from the cones
encroaching from the right, 18 m ahead." Every claim is checked against the `Scene` first:
the object exists and has the stated class, the stated distance along the ego path and the
relative speed are within tolerance (10 % by default) of what the scene measures, the side is
right, the light has the stated colour, the lane really ends, and so on. A factor that does
not hold is dropped and flagged (or raises, with `strict=True`). The decision is also checked
against the meta-actions of the expert's own future trajectory (`planner.meta_actions`); an
inconsistent label is flagged (`CoCLabel.valid` is False) so the data collector can count and
skip it.

`parse_reasoning(text)` recovers the structured decision (decisions, side, factor kinds,
object classes, sides, distances, speeds) from any text the labeler writes, and returns None
for text it cannot read; the model and evaluation issues use it to score generated reasoning.
`verify_text(text, scene)` parses and then checks every stated factor against a scene (a
faithfulness check for generated reasoning).

The phrase tables below are the whole vocabulary: the parser is compiled from the same
templates as the generator, so every template round trips (tests/planner/test_coc.py).
Format and examples: docs/COC.md.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from planner.geometry import polyline_arclength, project_to_polyline
from planner.meta_actions import (
    ConsistencyResult,
    MetaActionConfig,
    MetaActions,
    is_consistent,
    meta_actions,
)
from planner.taxonomy import (
    AgentClass,
    CausalFactorKind,
    Command,
    LateralDecision,
    LightState,
    LongitudinalDecision,
    Side,
)
from planner.types import (
    Agent,
    CausalFactor,
    Decision,
    InvalidInputError,
    Lane,
    Scene,
    StopLine,
    TrafficLight,
    Trajectory,
)

log = logging.getLogger(__name__)

LON = LongitudinalDecision
LAT = LateralDecision
KIND = CausalFactorKind


class LabelError(InvalidInputError):
    """A decision or factor that the scene contradicts (raised only with strict=True)."""


@dataclass
class CocConfig:
    """Tolerances of the truthfulness checks and limits of the text."""

    distance_tolerance_fraction: float = 0.10  # stated vs measured distance
    distance_tolerance_min_m: float = 1.0  # ... but never tighter than this
    speed_tolerance_fraction: float = 0.10  # stated vs measured relative speed
    speed_tolerance_min_mps: float = 0.5
    side_min_lateral_m: float = 0.3  # a left/right object is at least this far off the ego
    ahead_max_lateral_m: float = 2.5  # an "ahead" object is within this of the ego's line
    crossing_speed_mps: float = 0.5  # lateral speed toward the path to say "crossing"
    stopped_speed_mps: float = 0.5  # an object slower than this is "stopped"
    braking_decel_mps2: float = 1.5  # an object decelerating harder is "braking"
    moving_relative_speed_mps: float = 0.5  # |relative speed| above this is stated
    curve_min_heading_rad: float = 0.15  # a curve turns at least this much ...
    curve_window_m: float = 60.0  # ... within this distance after its start, or
    curve_min_curvature_per_m: float = 0.005  # ... is this curved (radius <= 200 m) in it
    turn_min_heading_rad: float = 0.5  # the route turns: its heading changes this much ...
    turn_window_m: float = 60.0  # ... within this distance ahead
    path_lookahead_m: float = 300.0  # lane chain length used as the ego path
    conflict_max_gap_m: float = 4.0  # another lane passes this close to a yield point
    lane_match_max_m: float = 6.0  # the ego's lane is within this of the ego
    lane_ambiguity_m: float = 0.5  # lanes this much farther than the nearest are also tried,
    lane_candidate_widths: float = 1.0  # ... and any within this many lane widths (a lane
    # change in progress: the expert may still measure on the lane it is leaving)
    max_candidate_lanes: int = 3  # at most this many lane paths are tried
    off_path_lateral_m: float = 6.0  # objects farther off the path: straight-line distance
    max_words: int = 25  # longest sentence the labeler writes
    max_factors_in_text: int = 2  # the rest stay in the structured label only
    attempts: int = 8  # random phrasings tried before the shortest one is used
    meta: MetaActionConfig = field(default_factory=MetaActionConfig)


# ---- phrase tables (the vocabulary) -------------------------------------------------------
LONGITUDINAL_PHRASES: dict[LongitudinalDecision, tuple[str, ...]] = {
    LON.SET_SPEED_TRACKING: ("keep the set speed", "cruise at the set speed", "hold the speed"),
    LON.LEAD_OBSTACLE_FOLLOWING: (
        "follow at a safe gap",
        "keep a safe gap to the leader",
        "match the speed of the leader",
    ),
    LON.SPEED_ADAPTATION: ("adapt the speed", "adjust the speed", "ease off"),
    LON.GAP_SEARCHING: ("search for a gap", "look for a gap", "wait for a gap"),
    LON.ACCELERATION_FOR_PASSING: ("speed up to pass", "accelerate to overtake"),
    LON.YIELD: ("yield", "give way", "slow down and yield"),
    LON.STOP_FOR_STATIC_CONSTRAINTS: ("come to a stop", "stop and wait", "brake to a stop"),
}
LATERAL_PHRASES: dict[LateralDecision, tuple[str, ...]] = {
    LAT.LANE_KEEPING: ("stay in the lane", "keep the lane"),
    LAT.MERGE_SPLIT: ("merge {side}", "merge to the {side}", "take the {side} branch"),
    LAT.OUT_OF_LANE_NUDGE: ("nudge {side} out of the lane", "edge {side} over the lane line"),
    LAT.IN_LANE_NUDGE: ("nudge {side} within the lane", "shift {side} inside the lane"),
    LAT.LANE_CHANGE: ("change lanes to the {side}", "move to the {side} lane"),
    LAT.PULL_OVER: ("pull over to the {side}", "pull over on the {side}"),
    LAT.TURN: ("turn {side}", "take the {side} turn"),
    LAT.LATERAL_ABORT: (
        "abort the lane change and return {side}",
        "cancel the lane change, move back {side}",
    ),
}
# Sentence frames: {action} is the decision phrase(s), {cause} one or two factor phrases.
FRAMES_WITH_CAUSE = (
    "{action} for {cause}.",
    "{action} because of {cause}.",
    "Due to {cause}, {action}.",
    "{action}, given {cause}.",
)
FRAMES_NUDGE = ("{action} to keep clearance from {cause}.",)
FRAMES_NO_CAUSE = ("{action}: the road ahead is clear.", "{action} on the clear road.")

OBJECT_NOUNS: dict[AgentClass, tuple[str, ...]] = {
    AgentClass.VEHICLE: ("vehicle", "car"),
    AgentClass.PEDESTRIAN: ("pedestrian",),
    AgentClass.CYCLIST: ("cyclist",),
    AgentClass.STATIC_OBSTACLE: ("obstacle",),
    AgentClass.CONE: ("cones",),
}
STOPPED_PREFIX = "stopped "  # "stopped vehicle" for a standing vehicle
YIELD_PLACES = ("roundabout", "intersection", "merge", "crossing", "junction")
ROAD_EVENTS = ("road works", "crash", "blocked lane")

# Factor phrases. Slots: {obj} object noun, {dist} distance (m), {side} left/right, {light}
# colour, {place} yield place, {event} road event, {limit} speed limit (m/s).
FACTOR_PHRASES: dict[str, tuple[str, ...]] = {
    "object_ahead": ("the {obj} {dist} m ahead", "the {obj} ahead at {dist} m"),
    "object_side": (
        "the {obj} {dist} m ahead on the {side}",
        "the {obj} on the {side}, {dist} m ahead",
    ),
    "object_encroaching": ("the {obj} encroaching from the {side}, {dist} m ahead",),
    "object_crossing": ("the {obj} crossing from the {side}, {dist} m ahead",),
    "object_behind": ("the {obj} {dist} m behind",),
    "object_behind_side": ("the {obj} {dist} m behind on the {side}",),
    "object_alongside": ("the {obj} alongside on the {side}",),
    "light": ("the {light} light {dist} m ahead", "the {light} light at the line {dist} m ahead"),
    "stop_sign": ("the stop sign {dist} m ahead", "the stop sign at {dist} m"),
    "yield_control": (
        "traffic with right of way at the {place}, {dist} m ahead",
        "the right of way at the {place}, {dist} m ahead",
    ),
    "yield_control_nodist": (
        "traffic with right of way at the {place}",
        "the right of way at the {place}",
    ),
    "lane_end": ("the lane ending {dist} m ahead", "the lane drop {dist} m ahead"),
    "curve": ("the {side} curve {dist} m ahead", "the road curving {side} in {dist} m"),
    "route_side": ("the route to the {side}", "the route bearing {side}"),
    "route_lane": ("the route leaving this lane in {dist} m",),
    "speed_limit": ("the {limit} m/s speed limit", "the speed limit of {limit} m/s"),
    "speed_limit_ahead": ("the {limit} m/s limit {dist} m ahead",),
    "road_event": ("the {event} {dist} m ahead",),
    "road_event_nodist": ("the {event} ahead",),
}
SUFFIX_PHRASES: dict[str, tuple[str, ...]] = {
    "closing": (", closing at {speed} m/s",),
    "receding": (", pulling away at {speed} m/s",),
    "braking": (", braking",),
}
_FACTOR_KIND_OF: dict[str, CausalFactorKind] = {
    "light": KIND.TRAFFIC_LIGHT,
    "stop_sign": KIND.STOP_CONTROL,
    "yield_control": KIND.YIELD_CONTROL,
    "yield_control_nodist": KIND.YIELD_CONTROL,
    "lane_end": KIND.LANE_GEOMETRY,
    "curve": KIND.LANE_GEOMETRY,
    "route_side": KIND.ROUTING,
    "route_lane": KIND.ROUTING,
    "speed_limit": KIND.SPEED_LIMIT,
    "speed_limit_ahead": KIND.SPEED_LIMIT,
    "road_event": KIND.ROAD_EVENT,
    "road_event_nodist": KIND.ROAD_EVENT,
}
_NUDGES = (LAT.IN_LANE_NUDGE, LAT.OUT_OF_LANE_NUDGE)


# ---- numbers ---------------------------------------------------------------------------------
def round_distance(d: float) -> float:
    """Distances as a driver would say them: 0.5 m steps below 10 m, 1 m below 50 m,
    5 m below 100 m, 10 m beyond (relative error <= 5 % above 5 m)."""
    d = abs(float(d))
    step = 0.5 if d < 10 else 1.0 if d < 50 else 5.0 if d < 100 else 10.0
    return round(d / step) * step


def round_speed(v: float) -> float:
    """Speeds: 0.5 m/s steps below 5 m/s, whole m/s above."""
    v = abs(float(v))
    step = 0.5 if v < 5 else 1.0
    return round(v / step) * step


def _fmt(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))


# ---- the ego path and measurements -----------------------------------------------------------
@dataclass
class EgoPath:
    """The ego's path for measuring "distance along the path": the lane chain from the ego's
    lane (or the route, or straight ahead), world frame, extended straight at both ends."""

    xy: np.ndarray  # (N, 2)
    s: np.ndarray  # (N,) arc length
    s_ego: float  # rear axle projection
    lateral_ego: float
    s_front: float  # front bumper
    s_rear: float  # rear bumper
    lane_chain: tuple[str, ...]
    chain_end_s: float | None  # where the lane chain ends without a successor
    lane_width_m: float

    def project(self, p: np.ndarray) -> tuple[float, float]:
        return project_to_polyline(self.xy, p)

    def heading_at(self, s: float) -> float:
        i = int(np.clip(np.searchsorted(self.s, s), 1, len(self.s) - 1))
        d = self.xy[i] - self.xy[i - 1]
        return math.atan2(d[1], d[0])


def _candidate_lanes(scene: Scene, cfg: CocConfig) -> list[tuple[float, Lane]]:
    """(|lateral offset|, lane) of the lanes aligned with the ego (within 60 deg) whose
    centreline is within lane_match_max_m of the rear axle, nearest first."""
    ego = scene.ego
    p = np.array([ego.x, ego.y])
    out = []
    for lane in scene.map.lanes.values():
        pts = lane.centerline
        if len(pts) < 2:
            continue
        # cheap reject before the exact projection (maps have many lanes)
        if float(((pts - p) ** 2).sum(axis=1).min()) > (cfg.lane_match_max_m + 20.0) ** 2:
            continue
        s, lat = project_to_polyline(pts, p)
        i = int(np.clip(np.searchsorted(polyline_arclength(pts), s), 1, len(pts) - 1))
        heading = math.atan2(*(pts[i] - pts[i - 1])[::-1])
        if math.cos(heading - ego.yaw) > 0.5 and abs(lat) <= cfg.lane_match_max_m:
            out.append((abs(lat), lane))
    out.sort(key=lambda x: x[0])
    return out


def _build_path(scene: Scene, lane: Lane | None, cfg: CocConfig) -> EgoPath:
    ego = scene.ego
    chain: list[str] = []
    chain_end: float | None = None
    width = cfg.meta.lane_width_m
    if lane is not None:
        pieces, total, lid = [], 0.0, lane.id
        route_ids = set(scene.route.lane_ids)
        while lid is not None and lid not in chain and total < cfg.path_lookahead_m + lane.length:
            ln = scene.map.lanes[lid]
            chain.append(lid)
            pieces.append(ln.centerline)
            total += ln.length
            succ = [s for s in ln.successors if s in scene.map.lanes]
            if not succ:
                lid = None
                break
            on_route = [s for s in succ if s in route_ids]
            lid = (on_route or succ)[0]
        xy = np.concatenate(pieces, axis=0)
        keep = np.concatenate([[True], np.hypot(*np.diff(xy, axis=0).T) > 1e-6])
        xy = xy[keep]
        if lid is None:
            chain_end = -1.0  # set after extension below
        if len(lane.left_boundary) == len(lane.right_boundary):
            width = float(np.median(np.hypot(*(lane.left_boundary - lane.right_boundary).T)))
    elif len(scene.route.waypoints) >= 2:
        xy = scene.route.waypoints
    else:
        xy = np.array([[ego.x, ego.y], [ego.x + math.cos(ego.yaw), ego.y + math.sin(ego.yaw)]])
    # extend straight at both ends so objects behind and far ahead still project
    ext = cfg.path_lookahead_m
    d0 = xy[1] - xy[0]
    d0 = d0 / max(np.linalg.norm(d0), 1e-9)
    d1 = xy[-1] - xy[-2]
    d1 = d1 / max(np.linalg.norm(d1), 1e-9)
    full = np.concatenate([[xy[0] - ext * d0], xy, [xy[-1] + ext * d1]], axis=0)
    s = polyline_arclength(full)
    if chain_end is not None:
        chain_end = float(s[-2])
    s_ego, lat_ego = project_to_polyline(full, np.array([ego.x, ego.y]))
    front = ego.rear_axle_to_center_m + ego.length / 2
    rear = ego.length / 2 - ego.rear_axle_to_center_m
    return EgoPath(
        full, s, s_ego, lat_ego, s_ego + front, s_ego - rear, tuple(chain), chain_end, width
    )


class _CandidatePaths:
    """The ego's lane path first, then those of the other lanes the ego is about as close to
    (mid lane change or merge the expert may still measure on its origin lane). Built on
    demand: most factors hold on the first."""

    def __init__(self, scene: Scene, cfg: CocConfig):
        self._scene, self._cfg = scene, cfg
        lanes = _candidate_lanes(scene, cfg)
        self._paths = [_build_path(scene, lanes[0][1] if lanes else None, cfg)]
        self._more: list[Lane] = []
        if lanes:
            reach = max(
                lanes[0][0] + cfg.lane_ambiguity_m,
                cfg.lane_candidate_widths * self._paths[0].lane_width_m,
            )
            self._more = [ln for d, ln in lanes[1 : cfg.max_candidate_lanes] if d <= reach]

    def __getitem__(self, i: int) -> EgoPath:
        return self._paths[i]

    def __iter__(self) -> Iterator[EgoPath]:
        yield from self._paths
        while self._more:
            self._paths.append(_build_path(self._scene, self._more.pop(0), self._cfg))
            yield self._paths[-1]


def ego_paths(scene: Scene, cfg: CocConfig | None = None) -> list[EgoPath]:
    """Every candidate path (see _CandidatePaths), nearest lane first."""
    return list(_CandidatePaths(scene, cfg or CocConfig()))


def ego_path(scene: Scene, cfg: CocConfig | None = None) -> EgoPath:
    """The path distances are measured along (see EgoPath): the nearest lane's."""
    return _CandidatePaths(scene, cfg or CocConfig())[0]


@dataclass(frozen=True)
class ObjectMeasure:
    """An agent as seen along the ego path."""

    gap_m: float  # > 0 ahead (front bumper to its nearest point), < 0 behind, 0 alongside
    lateral_m: float  # its centre relative to the ego, + left
    relative_speed_mps: float  # its speed along the path minus the ego's
    lateral_speed_mps: float  # its speed across the path, + left
    side: Side
    direct_m: float  # straight line from the front bumper's centre to its box
    off_path: bool  # farther than off_path_lateral_m from the path (e.g. cross traffic)
    in_lane: bool = False  # its box reaches into the ego lane (the path's lane band)

    @property
    def distance_m(self) -> float:
        return abs(self.gap_m)


def measure_object(agent: Agent, path: EgoPath, scene: Scene, cfg: CocConfig) -> ObjectMeasure:
    corners = agent.corners()
    proj = [path.project(c) for c in corners]
    s_min = min(p[0] for p in proj)
    s_max = max(p[0] for p in proj)
    s_c, lat_c = path.project(np.array([agent.x, agent.y]))
    if s_min > path.s_front:
        gap = s_min - path.s_front
    elif s_max < path.s_rear:
        gap = s_max - path.s_rear
    else:
        gap = 0.0
    lat = lat_c - path.lateral_ego
    th = path.heading_at(s_c)
    v_along = agent.vx * math.cos(th) + agent.vy * math.sin(th)
    v_lat = -agent.vx * math.sin(th) + agent.vy * math.cos(th)
    if abs(lat) < 1.2:  # the expert's convention (ahead/behind within 1.2 m)
        side = Side.AHEAD if s_c >= path.s_front or gap > 0 else Side.BEHIND
    else:
        side = Side.LEFT if lat > 0 else Side.RIGHT
    ego = scene.ego
    front = ego.rear_axle_to_center_m + ego.length / 2
    bumper = np.array([ego.x + front * math.cos(ego.yaw), ego.y + front * math.sin(ego.yaw)])
    c, sn = math.cos(agent.yaw), math.sin(agent.yaw)
    dx, dy = bumper[0] - agent.x, bumper[1] - agent.y
    lx = abs(c * dx + sn * dy) - 0.5 * agent.length
    ly = abs(-sn * dx + c * dy) - 0.5 * agent.width
    direct = math.hypot(max(lx, 0.0), max(ly, 0.0))
    off_path = abs(lat) > cfg.off_path_lateral_m
    lats = [p[1] for p in proj]  # box corners relative to the lane centre
    half = 0.5 * path.lane_width_m
    in_lane = min(lats) < half and max(lats) > -half
    return ObjectMeasure(gap, lat, v_along - ego.speed, v_lat, side, direct, off_path, in_lane)


def _approaching(agent: Agent, m: ObjectMeasure, cfg: CocConfig) -> bool:
    """Moving across the path toward it (crossing) rather than along or away."""
    return -m.lateral_speed_mps * np.sign(m.lateral_m) >= cfg.crossing_speed_mps


def _within(stated: float, measured: float, frac: float, floor: float) -> bool:
    return abs(abs(stated) - abs(measured)) <= max(frac * abs(measured), floor)


def _stop_line_s(line: StopLine, path: EgoPath) -> float | None:
    pts = np.asarray(line.points, dtype=np.float64).reshape(-1, 2)
    proj = [path.project(p) for p in pts]
    lats = [p[1] for p in proj]
    on_chain = bool(set(line.lane_ids) & set(path.lane_chain))
    if not on_chain and not (min(lats) <= 0.5 and max(lats) >= -0.5):
        return None
    if len(proj) >= 2 and abs(lats[1] - lats[0]) > 1e-6:
        w = float(np.clip(-lats[0] / (lats[1] - lats[0]), 0.0, 1.0))
        return proj[0][0] + w * (proj[1][0] - proj[0][0])
    return float(np.mean([p[0] for p in proj]))


def _agent_braking(agent: Agent, cfg: CocConfig) -> bool:
    h = agent.history
    if h is None or len(h) < 3:
        return False
    h = np.asarray(h)
    span = min(len(h), 6)
    dt = h[-1, 0] - h[-span, 0]
    return dt > 0 and (h[-1, 4] - h[-span, 4]) / dt <= -cfg.braking_decel_mps2


# ---- verification ----------------------------------------------------------------------------
@dataclass
class FactorCheck:
    """The result of checking one factor against the scene. `phrase` names the phrase
    family to state it with and `slots` the values that are true of the scene."""

    ok: bool
    reasons: list[str] = field(default_factory=list)
    phrase: str = ""
    slots: dict[str, Any] = field(default_factory=dict)
    suffixes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    factor: CausalFactor | None = None  # the factor with scene-filled fields


def _stated_distance(claimed: float | None, measured: float, cfg: CocConfig) -> tuple[bool, float]:
    """(claim holds, value to state). The rounded claim is stated when it is within tolerance
    of the scene, else the rounded measurement (the raw claim was within tolerance)."""
    frac, floor = cfg.distance_tolerance_fraction, cfg.distance_tolerance_min_m
    if claimed is None:
        return True, round_distance(measured)
    if not _within(claimed, measured, frac, floor):
        return False, 0.0
    r = round_distance(claimed)
    return True, r if _within(r, measured, frac, floor) else round_distance(measured)


def _check_object(f: CausalFactor, scene: Scene, path: EgoPath, cfg: CocConfig) -> FactorCheck:
    if f.object_id is None:
        return FactorCheck(False, ["critical object factor without an object_id"])
    try:
        agent = scene.agent(f.object_id)
    except KeyError:
        return FactorCheck(False, [f"object {f.object_id!r} is not in the scene"])
    reasons = []
    if f.object_class is not None and f.object_class != agent.agent_class:
        reasons.append(
            f"object {agent.id!r} is a {agent.agent_class.value}, not a {f.object_class.value}"
        )
    m = measure_object(agent, path, scene, cfg)
    # along the path, or (cross traffic, objects off the path) the straight-line distance
    # from the front bumper: both are true of the scene
    ok_d, dist = _stated_distance(f.distance_m, m.distance_m, cfg)
    if not ok_d or (m.off_path and f.distance_m is None):
        ok_d, dist = _stated_distance(f.distance_m, m.direct_m, cfg)
    if not ok_d:
        reasons.append(
            f"object {agent.id!r}: stated distance {f.distance_m:.1f} m but the scene has "
            f"{m.distance_m:.1f} m along the path ({m.direct_m:.1f} m straight)"
        )
    side = f.side
    if side == Side.LEFT and m.lateral_m < cfg.side_min_lateral_m:
        reasons.append(f"object {agent.id!r} is not on the left (lateral {m.lateral_m:+.1f} m)")
    if side == Side.RIGHT and m.lateral_m > -cfg.side_min_lateral_m:
        reasons.append(f"object {agent.id!r} is not on the right (lateral {m.lateral_m:+.1f} m)")
    if side == Side.AHEAD and (m.gap_m < 0 or abs(m.lateral_m) > cfg.ahead_max_lateral_m):
        reasons.append(
            f"object {agent.id!r} is not ahead (gap {m.gap_m:+.1f} m, lateral {m.lateral_m:+.1f} m)"
        )
    if side == Side.BEHIND and m.gap_m >= 0:
        reasons.append(f"object {agent.id!r} is not behind (gap {m.gap_m:+.1f} m)")
    rel = m.relative_speed_mps
    if m.off_path:
        pass  # a speed "along the path" of cross traffic depends on whose path: not checked
    elif f.relative_speed_mps is not None and not _within(
        f.relative_speed_mps, rel, cfg.speed_tolerance_fraction, cfg.speed_tolerance_min_mps
    ):
        reasons.append(
            f"object {agent.id!r}: stated relative speed {f.relative_speed_mps:+.1f} m/s but "
            f"the scene has {rel:+.1f} m/s"
        )
    elif f.relative_speed_mps is not None and (f.relative_speed_mps > 0) != (rel > 0):
        if abs(rel) > cfg.speed_tolerance_min_mps:
            reasons.append(f"object {agent.id!r}: relative speed has the wrong sign")
    if reasons:
        return FactorCheck(False, reasons)
    # what to say: the side is the stated one when given, else the measured one
    if side == Side.NONE:
        side = m.side
    noun = OBJECT_NOUNS[agent.agent_class]
    slots: dict[str, Any] = {"dist": dist, "obj_class": agent.agent_class}
    if agent.agent_class == AgentClass.VEHICLE and agent.speed < cfg.stopped_speed_mps:
        slots["obj_prefix"] = STOPPED_PREFIX
    slots["obj_nouns"] = noun
    lateral_side = Side.LEFT if m.lateral_m > 0 else Side.RIGHT
    if m.off_path and side in (Side.LEFT, Side.RIGHT):
        phrase = "object_crossing" if _approaching(agent, m, cfg) else "object_side"
        slots["side"] = side
        if m.gap_m < 0:
            phrase = "object_behind_side"
    elif m.gap_m < 0:
        phrase = "object_behind" if side == Side.BEHIND else "object_behind_side"
        slots["side"] = lateral_side
    elif m.gap_m == 0 and side in (Side.LEFT, Side.RIGHT):
        phrase = "object_alongside"
        slots["side"] = side
        slots.pop("dist")
    elif side in (Side.LEFT, Side.RIGHT):
        crossing = agent.agent_class in (
            AgentClass.PEDESTRIAN,
            AgentClass.CYCLIST,
        ) and _approaching(agent, m, cfg)
        if crossing:
            phrase = "object_crossing"
        elif (agent.is_static or agent.speed < cfg.stopped_speed_mps) and m.in_lane:
            phrase = "object_encroaching"
        else:
            phrase = "object_side"
        slots["side"] = side
    else:
        phrase = "object_ahead"
    suffixes: list[tuple[str, dict[str, Any]]] = []
    moving = agent.speed >= cfg.stopped_speed_mps
    # closing/pulling-away speeds are stated for road users moving along the road
    along_road = (
        not m.off_path
        and abs(rel + scene.ego.speed) >= cfg.stopped_speed_mps
        and phrase
        in (
            "object_ahead",
            "object_side",
            "object_behind",
            "object_behind_side",
        )
    )
    if along_road and abs(rel) >= cfg.moving_relative_speed_mps:
        stated_rel = f.relative_speed_mps if f.relative_speed_mps is not None else rel
        r = round_speed(stated_rel)
        if not _within(r, rel, cfg.speed_tolerance_fraction, cfg.speed_tolerance_min_mps):
            r = round_speed(rel)
        if r > 0:
            # ahead, a negative relative speed closes the gap; behind, a positive one does
            closing = rel < 0 if m.gap_m >= 0 else rel > 0
            suffixes.append(("closing" if closing else "receding", {"speed": r}))
    if moving and _agent_braking(agent, cfg):
        suffixes.append(("braking", {}))
    measured = m.direct_m if m.off_path else m.distance_m
    filled = replace(
        f,
        object_class=agent.agent_class,
        side=side,
        distance_m=f.distance_m if f.distance_m is not None else round(measured, 2),
        relative_speed_mps=f.relative_speed_mps
        if f.relative_speed_mps is not None or m.off_path
        else round(rel, 2),
    )
    return FactorCheck(True, [], phrase, slots, suffixes, filled)


def _find_light(f: CausalFactor, scene: Scene, path: EgoPath) -> tuple[TrafficLight, float] | None:
    lines = scene.map.stop_lines
    best = None
    for light in scene.traffic_lights:
        if f.object_id is not None and light.id != f.object_id:
            continue
        line_ids = [light.stop_line_id] if light.stop_line_id else []
        line_ids += [sl.id for sl in lines.values() if sl.light_id == light.id]
        for lid in line_ids:
            if lid not in lines:
                continue
            s = _stop_line_s(lines[lid], path)
            if s is None:
                continue
            gap = s - path.s_front
            if best is None or (gap >= -1.0 and (best[1] < -1.0 or gap < best[1])):
                best = (light, gap)
    return best


def _check_light(f: CausalFactor, scene: Scene, path: EgoPath, cfg: CocConfig) -> FactorCheck:
    found = _find_light(f, scene, path)
    if found is None:
        what = f"light {f.object_id!r}" if f.object_id else "a traffic light"
        return FactorCheck(False, [f"{what} with a stop line on the ego path is not in the scene"])
    light, gap = found
    if gap < -cfg.distance_tolerance_min_m:
        return FactorCheck(False, [f"the stop line of light {light.id!r} is behind the ego"])
    if light.state == LightState.UNKNOWN:
        return FactorCheck(False, [f"light {light.id!r} has an unknown state"])
    ok, dist = _stated_distance(f.distance_m, max(gap, 0.0), cfg)
    if not ok:
        return FactorCheck(
            False,
            [f"light {light.id!r}: stated {f.distance_m:.1f} m but the line is {gap:.1f} m ahead"],
        )
    filled = replace(
        f, object_id=light.id, side=Side.AHEAD, description=f"{light.state.value} light"
    )
    if filled.distance_m is None:
        filled = replace(filled, distance_m=round(max(gap, 0.0), 2))
    return FactorCheck(True, [], "light", {"light": light.state.value, "dist": dist}, [], filled)


def _check_stop_sign(f: CausalFactor, scene: Scene, path: EgoPath, cfg: CocConfig) -> FactorCheck:
    best = None
    for line in scene.map.stop_lines.values():
        if not line.is_stop_sign or (f.object_id is not None and line.id != f.object_id):
            continue
        s = _stop_line_s(line, path)
        if s is None:
            continue
        gap = s - path.s_front
        if gap >= -1.0 and (best is None or gap < best[1]):
            best = (line, gap)
    if best is None:
        return FactorCheck(False, ["no stop sign on the ego path ahead"])
    line, gap = best
    ok, dist = _stated_distance(f.distance_m, max(gap, 0.0), cfg)
    if not ok:
        return FactorCheck(
            False, [f"stop sign {line.id!r}: stated {f.distance_m:.1f} m, scene {gap:.1f} m"]
        )
    filled = replace(f, object_id=line.id, side=Side.AHEAD)
    if filled.distance_m is None:
        filled = replace(filled, distance_m=round(max(gap, 0.0), 2))
    return FactorCheck(True, [], "stop_sign", {"dist": dist}, [], filled)


def _point_at(path: EgoPath, s: float) -> np.ndarray:
    return np.array([np.interp(s, path.s, path.xy[:, 0]), np.interp(s, path.s, path.xy[:, 1])])


def _check_yield(f: CausalFactor, scene: Scene, path: EgoPath, cfg: CocConfig) -> FactorCheck:
    text = f.description.lower().replace("merging", "merge").replace("crosswalk", "crossing")
    place = next((p for p in YIELD_PLACES if p in text), "junction")
    if f.distance_m is None:
        filled = replace(f, description=place)
        return FactorCheck(True, [], "yield_control_nodist", {"place": place}, [], filled)
    # the yield point must be where another lane meets or crosses the ego path
    d = float(f.distance_m)
    tol = max(cfg.distance_tolerance_fraction * d, cfg.distance_tolerance_min_m)
    near = False
    for s in np.linspace(path.s_front + d - tol, path.s_front + d + tol, 7):
        p = _point_at(path, s)
        for lane in scene.map.lanes.values():
            if lane.id in path.lane_chain:
                continue
            if np.hypot(*(lane.centerline - p).T).min() <= cfg.conflict_max_gap_m:
                near = True
                break
        if near:
            break
    if not near:
        return FactorCheck(
            False, [f"no lane meets the ego path {d:.1f} m ahead (stated yield point)"]
        )
    filled = replace(f, description=place)
    return FactorCheck(
        True, [], "yield_control", {"place": place, "dist": round_distance(d)}, [], filled
    )


def _check_lane_geometry(
    f: CausalFactor, scene: Scene, path: EgoPath, cfg: CocConfig
) -> FactorCheck:
    text = f.description.lower()
    if "curve" in text or "bend" in text:
        d = float(f.distance_m or 0.0)
        tol = max(cfg.distance_tolerance_fraction * d, cfg.distance_tolerance_min_m)
        # headings every 2 m from just before the stated start to a window after it; a curve
        # is a stretch whose curvature (heading change over 10 m) or total turn is large
        s0 = path.s_front + max(d - tol, 0.0)
        grid = np.arange(s0, path.s_front + d + tol + cfg.curve_window_m, 2.0)
        heads = np.unwrap([path.heading_at(x) for x in grid])
        kappa = (heads[5:] - heads[:-5]) / 10.0 if len(heads) > 5 else np.zeros(1)
        turn = float(heads[-1] - heads[0]) if len(heads) > 1 else 0.0
        k_peak = float(kappa[np.argmax(np.abs(kappa))])
        if abs(k_peak) < cfg.curve_min_curvature_per_m and abs(turn) < cfg.curve_min_heading_rad:
            return FactorCheck(
                False,
                [
                    f"no curve on the ego path {d:.0f} m ahead (peak curvature {k_peak:+.4f} "
                    f"1/m, turn {turn:+.2f} rad)"
                ],
            )
        bend = k_peak if abs(k_peak) >= cfg.curve_min_curvature_per_m else turn
        side = Side.LEFT if bend > 0 else Side.RIGHT
        filled = replace(f, side=side, description="curve")
        return FactorCheck(True, [], "curve", {"side": side, "dist": round_distance(d)}, [], filled)
    # otherwise a lane end / lane drop / merge: the ego lane chain must end
    if path.chain_end_s is None:
        return FactorCheck(False, ["the ego lane does not end within the look-ahead"])
    gap = path.chain_end_s - path.s_front
    ok, dist = _stated_distance(f.distance_m, max(gap, 0.0), cfg)
    if not ok:
        return FactorCheck(
            False, [f"lane end: stated {f.distance_m:.1f} m but the lane ends {gap:.1f} m ahead"]
        )
    filled = replace(f, side=Side.AHEAD, description="lane end")
    if filled.distance_m is None:
        filled = replace(filled, distance_m=round(max(gap, 0.0), 2))
    return FactorCheck(True, [], "lane_end", {"dist": dist}, [], filled)


_COMMAND_SIDE = {
    Command.LEFT: Side.LEFT,
    Command.CHANGE_LANE_LEFT: Side.LEFT,
    Command.RIGHT: Side.RIGHT,
    Command.CHANGE_LANE_RIGHT: Side.RIGHT,
}


def _route_side(scene: Scene, path: EgoPath, cfg: CocConfig) -> Side:
    """Where the route goes relative to the ego's lane: the command, else the geometry of
    the route (heading change or a lateral shift of half a lane within 100 m)."""
    if scene.route.command in _COMMAND_SIDE:
        return _COMMAND_SIDE[scene.route.command]
    wp = scene.route.waypoints
    if len(wp) < 2:
        return Side.NONE
    s_r = polyline_arclength(wp)
    s0, _ = project_to_polyline(wp, np.array([scene.ego.x, scene.ego.y]))

    def heading(s: float) -> float:
        i = int(np.clip(np.searchsorted(s_r, s), 1, len(wp) - 1))
        d = wp[i] - wp[i - 1]
        return math.atan2(d[1], d[0])

    # a turn: the route's heading changes by a large angle within the turn window
    turn = 0.0
    for ds in np.linspace(5.0, cfg.turn_window_m, 12):
        dh = (heading(s0 + ds) - scene.ego.yaw + math.pi) % (2 * math.pi) - math.pi
        if abs(dh) > abs(turn):
            turn = dh
    if abs(turn) >= cfg.turn_min_heading_rad:
        return Side.LEFT if turn > 0 else Side.RIGHT
    best = 0.0
    for ds in (20.0, 40.0, 60.0, 80.0, 100.0):
        p = np.array([np.interp(s0 + ds, s_r, wp[:, 0]), np.interp(s0 + ds, s_r, wp[:, 1])])
        _, lat = path.project(p)
        if abs(lat - path.lateral_ego) > abs(best):
            best = lat - path.lateral_ego
    if abs(best) >= 0.5 * path.lane_width_m:
        return Side.LEFT if best > 0 else Side.RIGHT
    return Side.NONE


def _route_leave_s(scene: Scene, path: EgoPath) -> float | None:
    """Arc length (on `path`) where the ego can no longer follow the route from its lane
    chain: on the route, where the chain leaves the route's lanes; off the route (a lane
    change is due), where the chain stops running beside a route lane (or dead-ends)."""
    route_ids = set(scene.route.lane_ids)
    if not route_ids or not path.lane_chain:
        return None
    on_route = path.lane_chain[0] in route_ids
    s = float(path.s[1])  # the chain starts after the straight extension
    for lid in path.lane_chain:
        lane = scene.map.lanes[lid]
        beside = {lane.left_neighbor, lane.right_neighbor} & route_ids
        if (on_route and lid not in route_ids) or (not on_route and not beside):
            return s
        s += lane.length
    return path.chain_end_s


def _check_routing(f: CausalFactor, scene: Scene, path: EgoPath, cfg: CocConfig) -> FactorCheck:
    side = _route_side(scene, path, cfg)
    if f.side in (Side.LEFT, Side.RIGHT):
        if side != f.side:
            return FactorCheck(
                False, [f"the route does not go {f.side.value} (route side: {side.value})"]
            )
    if f.distance_m is not None and f.side not in (Side.LEFT, Side.RIGHT):
        # "the route leaves this lane in d m": where the ego's lane chain stops being on the
        # route (its first lane off the route, or its dead end)
        leave = _route_leave_s(scene, path)
        if leave is None:
            return FactorCheck(False, ["the route does not leave the ego lane ahead"])
        ok, dist = _stated_distance(f.distance_m, max(leave - path.s_front, 0.0), cfg)
        if not ok:
            return FactorCheck(
                False,
                [
                    f"route: stated {f.distance_m:.1f} m but the ego lane leaves the route "
                    f"{leave - path.s_front:.1f} m ahead"
                ],
            )
        return FactorCheck(
            True, [], "route_lane", {"dist": dist}, [], replace(f, description="route lane")
        )
    if side == Side.NONE:
        return FactorCheck(False, ["the route goes straight on: nothing to state"])
    filled = replace(f, side=side, description="route")
    return FactorCheck(True, [], "route_side", {"side": side}, [], filled)


def _limit_at(scene: Scene, path: EgoPath, s: float) -> float | None:
    p = _point_at(path, s)
    best, best_d = None, math.inf
    for lid in path.lane_chain or tuple(scene.map.lanes):
        lane = scene.map.lanes[lid]
        d = float(np.hypot(*(lane.centerline - p).T).min())
        if d < best_d:
            best, best_d = lane, d
    return None if best is None else best.speed_limit_mps


def _check_speed_limit(f: CausalFactor, scene: Scene, path: EgoPath, cfg: CocConfig) -> FactorCheck:
    here = f.distance_m is None or f.distance_m <= cfg.distance_tolerance_min_m
    d = 0.0 if here else float(f.distance_m)
    tol = max(cfg.distance_tolerance_fraction * d, cfg.distance_tolerance_min_m)
    # the limit that applies from d on: sampled over the tolerance window around d (a limit
    # change right at d would otherwise be read on either side of it)
    # "here": at the front bumper or the rear axle (lanes change under the car)
    window = [path.s_ego - path.s_front, 0.0] if here else list(np.linspace(d - tol, d + tol, 5))
    limits = [_limit_at(scene, path, path.s_front + x) for x in window]
    limits = [v for v in limits if v is not None]
    if not limits:
        if "speed_limit_mps" not in scene.metadata:
            return FactorCheck(False, ["the scene has no lane with a speed limit here"])
        limits = [float(scene.metadata["speed_limit_mps"])]
    stated = re.search(r"(\d+(?:\.\d+)?)\s*m/s", f.description)
    if stated:
        value = float(stated.group(1))
        matching = [
            v
            for v in limits
            if _within(value, v, cfg.speed_tolerance_fraction, cfg.speed_tolerance_min_mps)
        ]
        if not matching:
            return FactorCheck(
                False,
                [f"stated speed limit {stated.group(1)} m/s but the lane has {limits[-1]:.1f} m/s"],
            )
        limit = matching[0]
    else:
        limit = limits[-1]
    text_limit = round_speed(limit)
    filled = replace(f, description=f"speed limit {_fmt(text_limit)} m/s")
    if here:
        return FactorCheck(True, [], "speed_limit", {"limit": text_limit}, [], filled)
    return FactorCheck(
        True,
        [],
        "speed_limit_ahead",
        {"limit": text_limit, "dist": round_distance(float(f.distance_m))},
        [],
        filled,
    )


def _check_road_event(f: CausalFactor, scene: Scene, path: EgoPath, cfg: CocConfig) -> FactorCheck:
    text = f.description.lower()
    event = next((e for e in ROAD_EVENTS if e.split()[0] in text), "blocked lane")
    if "construction" in text or "work" in text:
        event = "road works"
    elif "accident" in text or "crash" in text:
        event = "crash"
    if f.object_id is None:
        if f.distance_m is not None:
            return FactorCheck(False, ["road event with a distance but no object to verify it"])
        return FactorCheck(
            True, [], "road_event_nodist", {"event": event}, [], replace(f, description=event)
        )
    obj = _check_object(replace(f, kind=KIND.CRITICAL_OBJECT), scene, path, cfg)
    if not obj.ok:
        return FactorCheck(False, obj.reasons)
    dist = obj.slots.get("dist")
    filled = replace(obj.factor, kind=KIND.ROAD_EVENT, description=event)
    if dist is None:
        return FactorCheck(True, [], "road_event_nodist", {"event": event}, [], filled)
    return FactorCheck(True, [], "road_event", {"event": event, "dist": dist}, [], filled)


_CHECKS = {
    KIND.CRITICAL_OBJECT: _check_object,
    KIND.TRAFFIC_LIGHT: _check_light,
    KIND.STOP_CONTROL: _check_stop_sign,
    KIND.YIELD_CONTROL: _check_yield,
    KIND.LANE_GEOMETRY: _check_lane_geometry,
    KIND.ROUTING: _check_routing,
    KIND.SPEED_LIMIT: _check_speed_limit,
    KIND.ROAD_EVENT: _check_road_event,
}


def _verify(
    factor: CausalFactor, scene: Scene, paths: Iterable[EgoPath], cfg: CocConfig
) -> FactorCheck:
    """The factor's check on the ego's lane path, else on the other candidate lane paths
    (the first that holds; the nearest lane's failure otherwise)."""
    first = None
    for path in paths:
        check = _CHECKS[factor.kind](factor, scene, path, cfg)
        if check.ok:
            return check
        first = first or check
    return first


def verify_factor(
    factor: CausalFactor,
    scene: Scene,
    cfg: CocConfig | None = None,
    paths: Iterable[EgoPath] | None = None,
) -> FactorCheck:
    """Check one factor against the scene (see the module docstring for what is checked)."""
    cfg = cfg or CocConfig()
    return _verify(factor, scene, paths or _CandidatePaths(scene, cfg), cfg)


# ---- generation ------------------------------------------------------------------------------
@dataclass
class CoCLabel:
    """A chain-of-causation label: the verified decision, its text, and the checks."""

    text: str
    decision: Decision  # the expert's decision with only the verified (scene-filled) factors
    dropped_factors: tuple[tuple[CausalFactor, str], ...] = ()
    meta_actions: MetaActions | None = None
    consistency: ConsistencyResult | None = None
    flags: tuple[str, ...] = ()
    templates: tuple[str, ...] = ()  # ids of the phrases used (for corpus statistics)
    # the factors as the text states them (rounded numbers, no ids): what
    # parse_reasoning(text) returns, and the target for scoring generated reasoning
    stated_factors: tuple[CausalFactor, ...] = ()

    @property
    def valid(self) -> bool:
        """Usable as a training label: consistent with the future (when one was given) and
        its text states the whole decision."""
        if "missing_lateral_side" in self.flags:
            return False
        return self.consistency is None or self.consistency.joint

    @property
    def factors(self) -> tuple[CausalFactor, ...]:
        return self.decision.factors

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "decision": self.decision.to_dict(),
            "factors": [f.to_dict() for f in self.decision.factors],
            "dropped_factors": [
                {"factor": f.to_dict(), "reason": r} for f, r in self.dropped_factors
            ],
            "meta_actions": self.meta_actions.to_dict() if self.meta_actions else None,
            "consistency": self.consistency.to_dict() if self.consistency else None,
            "flags": list(self.flags),
            "templates": list(self.templates),
            "stated_factors": [f.to_dict() for f in self.stated_factors],
            "valid": self.valid,
        }


def _fill(template: str, slots: dict[str, Any], rng: np.random.Generator) -> str:
    values: dict[str, str] = {}
    for key, value in slots.items():
        if key == "side":
            values["side"] = value.value if isinstance(value, Side) else str(value)
        elif key in ("dist", "speed", "limit"):
            values[key] = _fmt(float(value))
        elif key in ("light", "place", "event"):
            values[key] = str(value)
    if "obj_nouns" in slots:
        nouns = slots["obj_nouns"]
        values["obj"] = slots.get("obj_prefix", "") + nouns[int(rng.integers(len(nouns)))]
    return template.format(**values)


def _lateral_phrase(
    decision: Decision, rng: np.random.Generator, include_keeping: bool
) -> tuple[str, str]:
    if decision.lateral == LAT.LANE_KEEPING and not include_keeping:
        return "", ""
    options = LATERAL_PHRASES[decision.lateral]
    i = int(rng.integers(len(options)))
    side = decision.lateral_side.value
    return options[i].format(side=side), f"lat:{decision.lateral.value}:{i}"


def _compose(
    decision: Decision,
    checks: list[FactorCheck],
    rng: np.random.Generator,
    say_lane_keeping: bool = True,
) -> tuple[str, tuple[str, ...]]:
    lon_opts = LONGITUDINAL_PHRASES[decision.longitudinal]
    li = int(rng.integers(len(lon_opts)))
    lon = lon_opts[li]
    templates = [f"lon:{decision.longitudinal.value}:{li}"]
    keeping = say_lane_keeping and bool(rng.integers(2))
    lat, lat_id = _lateral_phrase(decision, rng, include_keeping=keeping)
    if lat:
        templates.append(lat_id)
        action = f"{lat} and {lon}" if rng.integers(2) else f"{lon} and {lat}"
    else:
        action = lon
    causes = []
    for c in checks:
        opts = FACTOR_PHRASES[c.phrase]
        i = int(rng.integers(len(opts)))
        text = _fill(opts[i], c.slots, rng)
        templates.append(f"factor:{c.phrase}:{i}")
        for name, slots in c.suffixes:
            text += _fill(SUFFIX_PHRASES[name][0], slots, rng)
            templates.append(f"suffix:{name}:0")
        causes.append(text)
    if causes:
        frames = FRAMES_WITH_CAUSE + (FRAMES_NUDGE if decision.lateral in _NUDGES else ())
        fi = int(rng.integers(len(frames)))
        sentence = frames[fi].format(action=action, cause=" and ".join(causes))
        templates.append(f"frame:{fi}")
    else:
        fi = int(rng.integers(len(FRAMES_NO_CAUSE)))
        sentence = FRAMES_NO_CAUSE[fi].format(action=action)
        templates.append(f"frame_clear:{fi}")
    return sentence[0].upper() + sentence[1:], tuple(templates)


def _lane_geometry_ego_frame(scene: Scene, path: EgoPath) -> np.ndarray | None:
    """The ego lane chain's centreline in the ego frame at t0 (for meta-actions)."""
    if not path.lane_chain:
        return None
    from planner.geometry import world_to_ego_xy

    pts = np.concatenate([scene.map.lanes[i].centerline for i in path.lane_chain], axis=0)
    keep = np.concatenate([[True], np.hypot(*np.diff(pts, axis=0).T) > 1e-6])
    return world_to_ego_xy(pts[keep], scene.ego)


def label(
    decision: Decision,
    scene: Scene,
    future: Trajectory | None = None,
    rng: np.random.Generator | int | None = None,
    cfg: CocConfig | None = None,
    *,
    strict: bool = False,
) -> CoCLabel:
    """The CoC label of `decision` in `scene`; `future` is the expert's trajectory (ego frame
    at t0) whose meta-actions must agree with the decision. `rng` picks the phrasing.

    A factor the scene contradicts is dropped and reported in `dropped_factors` (strict:
    LabelError). An inconsistent decision gives a label with `valid == False` (strict:
    LabelError)."""
    cfg = cfg or CocConfig()
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    if not isinstance(decision, Decision):
        raise InvalidInputError(
            f"label() needs a planner.types.Decision, got {type(decision).__name__}"
        )
    paths = _CandidatePaths(scene, cfg)
    path = paths[0]
    flags: list[str] = []
    kept: list[FactorCheck] = []
    dropped: list[tuple[CausalFactor, str]] = []
    for f in decision.factors:
        check = _verify(f, scene, paths, cfg)
        if check.ok:
            kept.append(check)
        else:
            reason = "; ".join(check.reasons)
            if strict:
                raise LabelError(f"{f.kind.value} factor contradicted by the scene: {reason}")
            dropped.append((f, reason))
            flags.append(f"dropped_{f.kind.value}")
            log.debug("dropped factor %s: %s", f.kind.value, reason)
    if dropped and not kept and decision.factors:
        flags.append("no_verified_factor")
    verified = replace(decision, factors=tuple(c.factor for c in kept))
    # a lateral manoeuvre without a direction cannot be said: the text states only the
    # longitudinal part and the label is not usable (the expert's bug, flagged)
    as_written = verified
    if decision.lateral != LAT.LANE_KEEPING and decision.lateral_side not in (
        Side.LEFT,
        Side.RIGHT,
    ):
        if strict:
            raise LabelError(
                f"lateral decision {decision.lateral.value} needs lateral_side left or right, "
                f"got {decision.lateral_side.value}"
            )
        flags.append("missing_lateral_side")
        as_written = replace(verified, lateral=LAT.LANE_KEEPING, lateral_side=Side.NONE)

    ma, consistency = None, None
    if future is not None:
        ma = meta_actions(
            future,
            _lane_geometry_ego_frame(scene, path),
            cfg.meta,
            v0=scene.ego.speed,
            lane_width_m=path.lane_width_m,
        )
        consistency = is_consistent(verified, ma, cfg.meta)
        if not consistency.joint:
            flags.append("inconsistent")
            if strict:
                raise LabelError(
                    "decision is inconsistent with the future trajectory: "
                    + "; ".join(consistency.reasons)
                )
    # Text: the first factors, in the expert's order; longer combinations are retried with
    # other phrasings, then with fewer factors, so every sentence fits max_words.
    # the speed limit is the weakest cause: it goes last when there are others
    ranked = sorted(kept, key=lambda c: c.factor.kind == KIND.SPEED_LIMIT)
    in_text = ranked[: cfg.max_factors_in_text]
    text, templates = "", ()
    for n_factors in range(len(in_text), -1, -1):
        best = None
        for _ in range(cfg.attempts):
            cand, tmpl = _compose(
                as_written, in_text[:n_factors], rng, say_lane_keeping=as_written is verified
            )
            if best is None or len(cand.split()) < len(best[0].split()):
                best = (cand, tmpl)
            if len(cand.split()) <= cfg.max_words:
                break
        text, templates = best
        if len(text.split()) <= cfg.max_words:
            break
    if len(in_text) and n_factors < len(in_text):
        flags.append("factor_left_out_of_text")
    stated = parse_reasoning(text)
    if stated is None or (
        stated.longitudinal,
        stated.lateral,
        stated.lateral_side,
        len(stated.factors),
    ) != (as_written.longitudinal, as_written.lateral, as_written.lateral_side, n_factors):
        # the phrase tables are ambiguous: a bug in this module, never in the input
        raise RuntimeError(f"CoC text does not parse back to its decision: {text!r}")
    return CoCLabel(
        text=text,
        decision=verified,
        dropped_factors=tuple(dropped),
        meta_actions=ma,
        consistency=consistency,
        flags=tuple(flags),
        templates=templates,
        stated_factors=stated.factors,
    )


# ---- parsing ---------------------------------------------------------------------------------
_NUM = r"(\d+(?:\.\d+)?)"
_SIDE_RE = r"(left|right)"


def _noun_alternatives() -> tuple[str, dict[str, AgentClass]]:
    table: dict[str, AgentClass] = {}
    for cls, nouns in OBJECT_NOUNS.items():
        for n in nouns:
            table[n] = cls
            table[STOPPED_PREFIX + n] = cls
    alts = sorted(table, key=len, reverse=True)
    return "(" + "|".join(re.escape(a) for a in alts) + ")", table


_OBJ_RE, _NOUN_CLASS = _noun_alternatives()
_SLOT_RE = {
    "obj": _OBJ_RE,
    "dist": _NUM,
    "speed": _NUM,
    "limit": _NUM,
    "side": _SIDE_RE,
    "light": "(" + "|".join(s.value for s in LightState if s != LightState.UNKNOWN) + ")",
    "place": "(" + "|".join(YIELD_PLACES) + ")",
    "event": "(" + "|".join(re.escape(e) for e in ROAD_EVENTS) + ")",
}


def _compile(template: str, bounded: bool = True) -> tuple[re.Pattern[str], list[str]]:
    """A template with {slots} -> a regex with one group per slot (in order); `bounded`:
    it must start and end at word boundaries."""
    parts = re.split(r"\{(\w+)\}", template)
    regex, names = "", []
    for i, part in enumerate(parts):
        if i % 2:
            regex += _SLOT_RE[part]
            names.append(part)
        else:
            regex += re.escape(part)
    if bounded:
        regex = r"(?<![\w])" + regex + r"(?![\w])"
    return re.compile(regex), names


_FACTOR_PATTERNS = [
    (name, i, *_compile(t)) for name, opts in FACTOR_PHRASES.items() for i, t in enumerate(opts)
]
_SUFFIX_PATTERNS = [
    (name, *_compile(opts[0], bounded=False)) for name, opts in SUFFIX_PHRASES.items()
]
_LON_PATTERNS = sorted(
    ((d, p, _compile(p)[0]) for d, opts in LONGITUDINAL_PHRASES.items() for p in opts),
    key=lambda x: -len(x[1]),
)
_LAT_PATTERNS = sorted(
    ((d, p, *_compile(p)) for d, opts in LATERAL_PHRASES.items() for p in opts),
    key=lambda x: -len(x[1]),
)
_CLEAR_RE = re.compile(r"the road ahead is clear|on the clear road")


def _factor_from_match(name: str, values: dict[str, str]) -> CausalFactor:
    dist = float(values["dist"]) if "dist" in values else None
    side = Side.parse(values["side"]) if "side" in values else Side.NONE
    if name.startswith("object_"):
        obj = values["obj"]
        if name == "object_ahead":
            side = Side.AHEAD
        elif name == "object_behind":
            side = Side.BEHIND
        return CausalFactor(
            KIND.CRITICAL_OBJECT,
            description=name.removeprefix("object_"),
            object_class=_NOUN_CLASS[obj],
            side=side,
            distance_m=dist,
        )
    kind = _FACTOR_KIND_OF[name]
    description = {
        "light": f"{values.get('light')} light",
        "lane_end": "lane end",
        "curve": "curve",
        "route_lane": "route lane",
        "route_side": "route",
        "stop_sign": "stop sign",
    }.get(name, "")
    if kind == KIND.YIELD_CONTROL:
        description = values["place"]
    elif kind == KIND.SPEED_LIMIT:
        description = f"speed limit {values['limit']} m/s"
    elif kind == KIND.ROAD_EVENT:
        description = values["event"]
    if kind in (KIND.TRAFFIC_LIGHT, KIND.STOP_CONTROL, KIND.LANE_GEOMETRY) and side == Side.NONE:
        side = Side.AHEAD
    return CausalFactor(kind, description=description, side=side, distance_m=dist)


def parse_reasoning(text: str) -> Decision | None:
    """The structured decision stated by a CoC text, or None when it states no longitudinal
    decision (unreadable or not a CoC text)."""
    if not isinstance(text, str) or not text.strip():
        return None
    low = " ".join(text.lower().split())
    taken: list[tuple[int, int]] = []

    def free(a: int, b: int) -> bool:
        return all(b <= s or a >= e for s, e in taken)

    # factors first: their phrases contain words ("yield", "stop", "turn") that must not be
    # read as decisions
    matches = []
    for name, _i, pattern, names in _FACTOR_PATTERNS:
        for m in pattern.finditer(low):
            matches.append((m.start(), -(m.end() - m.start()), name, m, names))
    factors: list[tuple[int, CausalFactor]] = []
    for start, neg_len, name, m, names in sorted(matches, key=lambda x: (x[1], x[0])):
        end = start - neg_len
        if not free(start, end):
            continue
        taken.append((start, end))
        values = dict(zip(names, m.groups()))
        factor = _factor_from_match(name, values)
        # suffixes directly after the phrase
        pos = end
        rel = None
        progressed = True
        while progressed:
            progressed = False
            for sname, spattern, snames in _SUFFIX_PATTERNS:
                sm = spattern.match(low, pos)
                if sm:
                    svalues = dict(zip(snames, sm.groups()))
                    if sname == "closing":
                        rel = -float(svalues["speed"])
                    elif sname == "receding":
                        rel = float(svalues["speed"])
                    taken.append((pos, sm.end()))
                    pos = sm.end()
                    progressed = True
        if rel is not None:
            if name.startswith("object_behind"):
                rel = -rel  # behind the ego, closing in means faster than the ego
            factor = replace(factor, relative_speed_mps=rel)
        factors.append((start, factor))
    factors.sort(key=lambda x: x[0])

    lateral, side = LAT.LANE_KEEPING, Side.NONE
    for decision, _p, pattern, names in _LAT_PATTERNS:
        m = pattern.search(low)
        if m and free(m.start(), m.end()):
            lateral = decision
            if names:
                side = Side.parse(m.group(1))
            taken.append((m.start(), m.end()))
            break
    longitudinal = None
    for decision, _p, pattern in _LON_PATTERNS:
        for m in pattern.finditer(low):
            if free(m.start(), m.end()):
                longitudinal = decision
                break
        if longitudinal is not None:
            break
    if longitudinal is None:
        return None
    return Decision(
        longitudinal=longitudinal,
        lateral=lateral,
        lateral_side=side,
        factors=tuple(f for _, f in factors),
    )


def verify_text(
    text: str, scene: Scene, cfg: CocConfig | None = None
) -> tuple[Decision | None, list[str]]:
    """Parse a CoC text and check each stated factor against the scene by matching it to
    the scene's objects/controls (no ids in text). Returns (decision, problems)."""
    cfg = cfg or CocConfig()
    decision = parse_reasoning(text)
    if decision is None:
        return None, ["the text states no decision"]
    paths = _CandidatePaths(scene, cfg)
    problems = []
    for f in decision.factors:
        if f.kind == KIND.CRITICAL_OBJECT:
            candidates = [a for a in scene.agents if a.agent_class == f.object_class]
            ok = any(_verify(replace(f, object_id=a.id), scene, paths, cfg).ok for a in candidates)
            if not ok:
                problems.append(
                    f"no {f.object_class.value if f.object_class else 'object'} "
                    f"{f.side.value} at {f.distance_m} m in the scene"
                )
            continue
        if f.kind == KIND.TRAFFIC_LIGHT:
            colour = f.description.split()[0]
            found = [_find_light(f, scene, p) for p in paths]
            if not any(x is not None and x[0].state.value == colour for x in found):
                problems.append(f"no {colour} light on the ego path")
                continue
        if f.kind == KIND.ROAD_EVENT and f.distance_m is not None:
            continue  # an event's distance refers to an unnamed object: not checkable
        check = _verify(f, scene, paths, cfg)
        if not check.ok:
            problems.extend(check.reasons)
    return decision, problems


def all_templates() -> dict[str, tuple[str, ...]]:
    """Every phrase the labeler can write, by family (for tokenizer corpora and tests)."""
    out: dict[str, tuple[str, ...]] = {}
    for d, opts in LONGITUDINAL_PHRASES.items():
        out[f"lon:{d.value}"] = opts
    for d, opts in LATERAL_PHRASES.items():
        out[f"lat:{d.value}"] = opts
    for name, opts in FACTOR_PHRASES.items():
        out[f"factor:{name}"] = opts
    for name, opts in SUFFIX_PHRASES.items():
        out[f"suffix:{name}"] = opts
    out["frames"] = FRAMES_WITH_CAUSE + FRAMES_NUDGE + FRAMES_NO_CAUSE
    return out


__all__ = [
    "CoCLabel",
    "CocConfig",
    "EgoPath",
    "FactorCheck",
    "LabelError",
    "ObjectMeasure",
    "all_templates",
    "ego_path",
    "label",
    "measure_object",
    "parse_reasoning",
    "round_distance",
    "round_speed",
    "verify_factor",
    "verify_text",
]
