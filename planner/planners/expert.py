"""The privileged rule-based expert: the teacher whose decisions become the CoC labels.

It reads the full `Scene` (lanes, route, agents, lights, stop lines) and plans like this:

1. Localise the ego on a lane (hysteresis: previous lane, route lanes first) and build a
   reference path along that lane's successors (route lanes at forks); a lane change swaps it
   for the target lane's path. Off the map it follows the route waypoints.
2. Lateral: a Frenet offset profile on that path (quintic convergence from the ego's offset
   and heading error, plus trapezoid ramps for nudges around static obstacles). Curvature is
   differentiated from the offset path in the world frame, sampled where the speed profile
   puts the ego, and clamped: `Trajectory.from_controls` integrates it, so the plan is
   dynamically feasible by construction.
3. Longitudinal: the Intelligent Driver Model rolled out over the 64 steps against every
   constraint on the path (predicted leaders, cut-ins, static obstacles that cannot be
   passed, red/yellow lights and stop signs at their stop lines, yield points for crossing
   pedestrians/cyclists and for conflicting vehicles at intersections, roundabouts and
   merges, lane ends), with a free-road speed that anticipates lower limits and curves.
4. Lane changes: MOBIL (incentive, politeness, safe braking) for discretionary ones;
   mandatory ones where the lane ends or the route leaves it; gap searching while the
   target lane has no gap; aborts when the gap closes mid-manoeuvre.

The decision is not guessed afterwards: the longitudinal label is the constraint that
produced the lowest IDM acceleration at t0 (when it lowers it by a configured margin), and the
lateral label is the manoeuvre that shaped the offset profile; each carries the object or rule
that created it. `Decision.factors` lists the longitudinal cause(s) first, then the lateral
one(s). How the numbers are measured (what a checker should compare against):

- objects (CRITICAL_OBJECT): `distance_m` = arc length along the ego's reference path (the
  target lane's path during a lane change) from the front bumper to the object's nearest box
  corner, 0 when alongside; for an object more than `factor_path_lateral_m` off that path (or
  beyond its ends) the straight-line distance from the front bumper's centre to its box.
  `relative_speed_mps` = the object's velocity along the path tangent minus the ego speed.
  `side`: the object's lateral offset relative to the ego (AHEAD/BEHIND within
  `side_ahead_lateral_m`); for a nudge, the side it is passed on.
- stop lines (TRAFFIC_LIGHT, STOP_CONTROL), lane ends (LANE_GEOMETRY), route changes
  (ROUTING), yield points (YIELD_CONTROL), lower limits and curves ahead (SPEED_LIMIT,
  LANE_GEOMETRY): `distance_m` along the path from the front bumper to the line / end / point;
  `relative_speed_mps` = -ego speed where given (they do not move).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from planner.base import PrivilegedPlanner
from planner.config import ConfigError, apply_overrides, from_dict, load_config, to_dict
from planner.paths import config_path
from planner.planners.expert_config import ExpertConfig
from planner.planners.expert_map import (
    MapIndex,
    ReferencePath,
    build_path,
    path_from_polyline,
)
from planner.types import (
    PLAN_DT_S,
    PLAN_STEPS,
    Agent,
    AgentClass,
    CausalFactor,
    CausalFactorKind,
    Decision,
    LateralDecision,
    LightState,
    LongitudinalDecision,
    PlannerInput,
    PlannerOutput,
    Scene,
    Side,
    StopLine,
    Trajectory,
)

log = logging.getLogger(__name__)

CONFIG_PATH = config_path("planners", "expert.yaml")

__all__ = ["CONFIG_PATH", "ExpertConfig", "ExpertPlanner", "load_expert_config"]


def load_expert_config(
    config: ExpertConfig | None = None,
    config_path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    **options: Any,
) -> ExpertConfig:
    """Config object, else the YAML file (default: configs/planners/expert.yaml when present),
    then `key=value` override strings, then keyword options (unknown keys name the closest)."""
    if config is not None:
        if not isinstance(config, ExpertConfig):
            raise ConfigError(f"config must be an ExpertConfig, got {type(config).__name__}")
        cfg = config
        if overrides:
            cfg = from_dict(ExpertConfig, apply_overrides(to_dict(cfg), list(overrides)))
    else:
        path = Path(config_path) if config_path is not None else CONFIG_PATH
        if config_path is None and not path.is_file():
            path = None
        cfg = load_config(ExpertConfig, path, overrides)
    if options:
        cfg = from_dict(ExpertConfig, {**to_dict(cfg), **options})
    return cfg


# ---- small helpers ----------------------------------------------------------------------------
def _smoothstep(x: np.ndarray) -> np.ndarray:
    """Quintic 0 -> 1 on [0, 1] with zero slope and curvature at both ends."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * x * (10.0 + x * (-15.0 + 6.0 * x))


def _time_to_cover(dist: float, v: float, accel: float, v_max: float) -> float:
    """Seconds to travel `dist` from speed v accelerating at `accel` up to `v_max`."""
    if dist <= 0.0:
        return 0.0
    v_max = max(v_max, v, 0.1)
    if accel <= 0.0 or v >= v_max:
        return dist / max(v, 0.1)
    t_acc = (v_max - v) / accel
    d_acc = v * t_acc + 0.5 * accel * t_acc * t_acc
    if dist <= d_acc:
        return (-v + math.sqrt(v * v + 2.0 * accel * dist)) / accel
    return t_acc + (dist - d_acc) / v_max


def _side_of(lateral: float, s_ahead: float, threshold: float) -> Side:
    if abs(lateral) < threshold:
        return Side.AHEAD if s_ahead >= 0.0 else Side.BEHIND
    return Side.LEFT if lateral > 0 else Side.RIGHT


def _point_to_box(p: np.ndarray, a: Agent) -> float:
    """Distance (m) from world point p to agent a's box (0 inside)."""
    c, s = math.cos(a.yaw), math.sin(a.yaw)
    dx, dy = p[0] - a.x, p[1] - a.y
    lx = abs(c * dx + s * dy) - 0.5 * a.length
    ly = abs(-s * dx + c * dy) - 0.5 * a.width
    return math.hypot(max(lx, 0.0), max(ly, 0.0))


_VRU = (AgentClass.PEDESTRIAN, AgentClass.CYCLIST)
_KIND_NAME = {
    AgentClass.VEHICLE: "vehicle",
    AgentClass.PEDESTRIAN: "pedestrian",
    AgentClass.CYCLIST: "cyclist",
    AgentClass.STATIC_OBSTACLE: "obstacle",
    AgentClass.CONE: "cone",
}


@dataclass
class _Objects:
    """All agents seen from one reference path (arrays of length M)."""

    agents: list[Agent]
    s_c: np.ndarray  # centre arc length
    l_c: np.ndarray  # centre lateral offset (+ left)
    s_min: np.ndarray  # box extent along the path
    s_max: np.ndarray
    l_min: np.ndarray  # box extent across the path
    l_max: np.ndarray
    v_along: np.ndarray  # velocity along the path tangent at the object
    v_lat: np.ndarray  # velocity across (+ toward the left)
    heading_err: np.ndarray  # object heading minus path heading, wrapped
    accel: np.ndarray  # estimated longitudinal accel (0 without history)
    near: np.ndarray  # bool: within object_search_lateral_m and the path's extent


@dataclass
class _Constraint:
    """A longitudinal limit for the IDM rollout: something the ego front must stay behind."""

    s_rear: float  # path arc length of its rear face at t0
    v: float  # its speed along the path (0 for walls)
    a: float  # its predicted accel
    min_gap_m: float
    headway_s: float
    decision: LongitudinalDecision
    factors: tuple[CausalFactor, ...]
    tag: str  # "leader" | "static" | "light" | "stop_sign" | "yield" | "lane_end"


@dataclass
class _Nudge:
    offset_m: float  # signed centre offset from the path (+ left)
    s_from: float  # hold window (path arc length)
    s_to: float
    in_lane: bool
    factor: CausalFactor


@dataclass
class _LaneChange:
    target_lane: str
    origin_lane: str
    side: Side  # LEFT or RIGHT
    lateral: LateralDecision  # LANE_CHANGE or MERGE_SPLIT
    reason: str  # "discretionary" | "lane_end" | "route" | "blocked"
    cause_object: str | None
    t_start: float
    passing: bool = False  # overtaking a slower vehicle
    # longest manoeuvre that ends before the origin lane does (fixed at the start)
    max_length_m: float | None = None


@dataclass
class _Abort:
    origin_lane: str
    side: Side  # direction of the return manoeuvre
    cause_object: str | None
    t: float


@dataclass
class _PendingChange:
    """A lane change the expert needs but cannot make yet (no gap)."""

    side: Side
    reason: str
    factors: tuple[CausalFactor, ...]
    blocker: CausalFactor | None
    slow_to_mps: float | None  # speed cap that lets the blocking vehicle pass
    merge: bool


@dataclass
class _Plan:
    """What one planning call decided, for the decision label."""

    lateral: LateralDecision = LateralDecision.LANE_KEEPING
    lateral_side: Side = Side.NONE
    lateral_factors: tuple[CausalFactor, ...] = ()
    pending: _PendingChange | None = None
    passing: bool = False
    passing_factor: CausalFactor | None = None
    notes: list[str] = field(default_factory=list)


class ExpertPlanner(PrivilegedPlanner):
    """Rule-based privileged expert (IDM + MOBIL + nudges + yielding + traffic controls)."""

    name = "expert"

    def __init__(
        self,
        config: ExpertConfig | None = None,
        config_path: str | Path | None = None,
        overrides: list[str] | tuple[str, ...] = (),
        **options: Any,
    ):
        self.cfg = load_expert_config(config, config_path, overrides, **options)
        self._index: MapIndex | None = None
        self._index_map_ref: Any = None
        self.reset()

    # ---- episode state ------------------------------------------------------------------------
    def reset(self) -> None:
        self._lane: str | None = None
        self._lc: _LaneChange | None = None
        self._abort: _Abort | None = None
        self._last_lc_end_t = -math.inf
        self._last_mobil_t = -math.inf
        self._last_t = -math.inf
        self._matches: dict = {}  # lane id -> LaneMatch of the ego, this call
        self._stop_cache: tuple | None = None  # (path, stop-line arc lengths), this call
        self._stop_signs_done: set[str] = set()
        self._a_prev: float | None = None  # first accel command of the last plan (m/s^2)
        self._a_prev_t = -math.inf
        self._yield_hold: dict[str, tuple[float, np.ndarray, _Constraint]] = {}

    def _map_index(self, scene: Scene) -> MapIndex:
        # A simulator episode shares one MapData across frames; keep a strong reference so the
        # identity test cannot be fooled by a recycled id().
        if self._index is None or self._index_map_ref is not scene.map:
            try:
                self._index = MapIndex(scene.map, self.cfg.conflict_clearance_m)
            except ValueError as exc:
                from planner.types import InvalidInputError

                raise InvalidInputError(f"expert: bad map {scene.map.name!r}: {exc}") from None
            self._index_map_ref = scene.map
            self._stop_signs_done = set()
        return self._index

    # ---- entry point --------------------------------------------------------------------------
    def plan_with_scene(self, inp: PlannerInput, scene: Scene) -> PlannerOutput:
        t_start = time.perf_counter()
        cfg = self.cfg
        if scene.timestamp < self._last_t:
            self.reset()  # time went backwards: a new episode without reset()
        self._last_t = scene.timestamp
        index = self._map_index(scene)
        t_map = time.perf_counter()
        ego = scene.ego
        v0 = max(0.0, float(ego.speed))
        front = ego.rear_axle_to_center_m + 0.5 * ego.length  # rear axle -> front bumper
        rear = 0.5 * ego.length - ego.rear_axle_to_center_m  # rear axle -> rear bumper
        ahead = max(cfg.path_min_ahead_m, v0 * cfg.path_ahead_time_s) + 40.0
        self._route_lanes = set(scene.route.lane_ids)
        self._route_order = {lid: i for i, lid in enumerate(scene.route.lane_ids)}
        self._scene = scene
        self._front, self._rear = front, rear
        self._ahead = ahead
        plan = _Plan()
        self._lc_room: float | None = None  # metres left before a lane-change origin ends

        cur_lane = self._localise(index, scene)
        if cur_lane is None:
            path = self._fallback_path(scene, inp, ahead)
            self._lc = None
        else:
            path = self._lane_path(index, cur_lane, ego, ahead)
        objs = self._objects(path, scene.agents)
        t_geo = time.perf_counter()

        # -- lateral manoeuvre: lane change / abort / nudge ------------------------------------
        ref = path
        if cur_lane is not None:
            ref = self._lateral_manoeuvre(index, cur_lane, path, objs, ego, ahead, plan)
            if ref is not path:
                objs = self._objects(ref, scene.agents)
        nudges, blocked = self._nudges(ref, objs, scene, plan)
        offset = self._offset_profile(ref, nudges, ego, v0)

        # -- longitudinal constraints and rollout ------------------------------------------------
        constraints = self._constraints(ref, objs, offset, blocked, scene, v0, plan)
        env, env_cause = self._speed_envelope(ref, v0, self._vru_caution(ref, objs, offset, v0))
        accel, v_prof, dist, binding = self._rollout(ref, constraints, env, v0, plan)
        t_long = time.perf_counter()

        curvature = self._curvature_controls(ref, offset, dist)
        traj = Trajectory.from_controls(accel, curvature, v0)
        decision = self._decision(ref, constraints, binding, env, env_cause, v0, accel, plan)
        t_end = time.perf_counter()
        return PlannerOutput(
            trajectory=traj,
            reasoning=None,
            decision=decision,
            timings_ms={
                "map": (t_map - t_start) * 1e3,
                "geometry": (t_geo - t_map) * 1e3,
                "behaviour": (t_long - t_geo) * 1e3,
                "controls": (t_end - t_long) * 1e3,
                "plan": (t_end - t_start) * 1e3,
            },
            flags=("privileged",) + (("off_map",) if cur_lane is None else ()),
        )

    # ---- localisation and paths -------------------------------------------------------------
    def _localise(self, index: MapIndex, scene: Scene) -> str | None:
        cfg = self.cfg
        ego = scene.ego
        matches = index.match(
            ego.x, ego.y, ego.yaw, cfg.lane_match_max_distance_m, cfg.lane_match_max_heading_rad
        )
        if not matches:
            self._lane = None
            self._matches = {}
            return None
        related: set[str] = set()
        if self._lane is not None and self._lane in index.lanes:
            lane = index.lanes[self._lane].lane
            related = {self._lane, *lane.successors}
        best = matches[0]
        best_score = math.inf
        for m in matches:
            score = abs(m.lateral)
            if m.lane_id in related:
                score -= cfg.route_lane_preference_m
            if m.lane_id in self._route_lanes:
                score -= cfg.route_lane_preference_m
            if score < best_score:
                best, best_score = m, score
        # During a lane change the ego belongs to its origin lane until it is nearer the target.
        self._lane = best.lane_id
        self._matches = {m.lane_id: m for m in matches}
        return best.lane_id

    def _choose_successor(self, lane_id: str, options: list[str]) -> str:
        if len(options) == 1:
            return options[0]
        on_route = [o for o in options if o in self._route_lanes]
        if on_route:
            return on_route[0]
        wp = self._scene.route.waypoints
        index = self._index
        if len(wp) >= 2 and index is not None:
            # the successor whose end lies closest to the route polyline
            def miss(o: str) -> float:
                end = index.lanes[o].xy[-1]
                return float(((wp - end) ** 2).sum(axis=1).min())

            return min(options, key=miss)
        # no route: the straightest continuation
        here = index.lanes[lane_id].heading[-1] if index is not None else 0.0

        def turn(o: str) -> float:
            h = index.lanes[o].heading
            return abs((h[min(len(h) - 1, 5)] - here + math.pi) % (2 * math.pi) - math.pi)

        return min(options, key=turn)

    def _choose_predecessor(self, lane_id: str, options: list[str]) -> str:
        on_route = [o for o in options if o in self._route_lanes]
        return on_route[0] if on_route else options[0]

    def _lane_path(self, index: MapIndex, lane_id: str, ego, ahead: float) -> ReferencePath:
        g = index.lanes[lane_id]
        s, lat = g.project(np.array([ego.x, ego.y]))
        path = build_path(
            index,
            lane_id,
            float(np.clip(s, 0.0, g.length)),
            self.cfg.path_back_m,
            ahead + max(0.0, -s),
            self.cfg.path_step_m,
            self._choose_successor,
            self._choose_predecessor,
            topology_ahead_m=self.cfg.mandatory_lane_change_lookahead_m + max(0.0, -s),
        )
        self._locate_on(path, ego)
        return path

    def _locate_on(self, path: ReferencePath, ego) -> None:
        s, lat = path.project(np.array([[ego.x, ego.y]]))
        path.s_ego = float(s[0])
        path.lateral_ego = float(lat[0])
        k = int(path.index(path.s_ego))
        path.heading_error_ego = float(
            (ego.yaw - path.heading[k] + math.pi) % (2 * math.pi) - math.pi
        )

    def _fallback_path(self, scene: Scene, inp: PlannerInput, ahead: float) -> ReferencePath:
        """Off every lane: follow the route waypoints (or straight ahead)."""
        ego = scene.ego
        wp = scene.route.waypoints
        limit = inp.speed_limit_mps if inp.speed_limit_mps > 0 else self.cfg.default_speed_limit_mps
        if len(wp) >= 2:
            d2 = ((wp - np.array([ego.x, ego.y])) ** 2).sum(axis=1)
            i = max(0, int(np.argmin(d2)) - 1)
            pts = wp[i:]
            if len(pts) < 2:
                pts = wp[-2:]
            direction = pts[-1] - pts[-2]
            direction = direction / max(float(np.linalg.norm(direction)), 1e-9)
            pts = np.vstack([pts, pts[-1] + direction * ahead])
        else:
            c, s = math.cos(ego.yaw), math.sin(ego.yaw)
            pts = np.array([[ego.x - 5 * c, ego.y - 5 * s], [ego.x + ahead * c, ego.y + ahead * s]])
        path = path_from_polyline(
            pts, limit * self.cfg.speed_limit_fraction, 1.75, self.cfg.path_step_m
        )
        self._locate_on(path, ego)
        return path

    # ---- objects ----------------------------------------------------------------------------
    def _objects(self, path: ReferencePath, agents: list[Agent]) -> _Objects:
        m = len(agents)
        if m == 0:
            z = np.zeros(0)
            return _Objects([], z, z, z, z, z, z, z, z, z, z, np.zeros(0, bool))
        a_xy = np.array([[a.x, a.y] for a in agents], dtype=np.float64)
        a_yaw = np.array([a.yaw for a in agents])
        a_v = np.array([[a.vx, a.vy] for a in agents])
        half = np.array([[0.5 * a.length, 0.5 * a.width] for a in agents])
        s_c, l_c = path.project(a_xy)
        near = (np.abs(l_c) < self.cfg.object_search_lateral_m) & (s_c > -20.0)
        near &= s_c < path.length + 20.0
        # box corners (M, 4, 2) -> extents in path coordinates (only where near)
        c, sn = np.cos(a_yaw), np.sin(a_yaw)
        signs = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=np.float64)
        lx = signs[None, :, 0] * half[:, 0:1]
        ly = signs[None, :, 1] * half[:, 1:2]
        cx = a_xy[:, 0:1] + lx * c[:, None] - ly * sn[:, None]
        cy = a_xy[:, 1:2] + lx * sn[:, None] + ly * c[:, None]
        s_min, s_max, l_min, l_max = s_c.copy(), s_c.copy(), l_c.copy(), l_c.copy()
        if near.any():
            sel = np.flatnonzero(near)
            corners = np.stack([cx[sel], cy[sel]], axis=2).reshape(-1, 2)
            cs, cl = path.project(corners)
            cs, cl = cs.reshape(-1, 4), cl.reshape(-1, 4)
            s_min[sel], s_max[sel] = cs.min(axis=1), cs.max(axis=1)
            l_min[sel], l_max[sel] = cl.min(axis=1), cl.max(axis=1)
        k = path.index(s_c)
        h = path.heading[k]
        v_along = a_v[:, 0] * np.cos(h) + a_v[:, 1] * np.sin(h)
        v_lat = -a_v[:, 0] * np.sin(h) + a_v[:, 1] * np.cos(h)
        err = (a_yaw - h + math.pi) % (2 * math.pi) - math.pi
        accel = np.zeros(m)
        if self.cfg.leader_prediction == "constant_accel":
            for i, a in enumerate(agents):
                if near[i] and a.history is not None and len(a.history) >= 2:
                    hist = np.asarray(a.history)
                    t_now = hist[-1, 0]
                    j = int(np.searchsorted(hist[:, 0], t_now - self.cfg.accel_estimate_window_s))
                    j = min(j, len(hist) - 2)
                    dt = hist[-1, 0] - hist[j, 0]
                    if dt > 1e-3:
                        accel[i] = (hist[-1, 4] - hist[j, 4]) / dt
            accel = np.clip(
                accel, -self.cfg.max_predicted_decel_mps2, self.cfg.max_predicted_accel_mps2
            )
        return _Objects(
            agents, s_c, l_c, s_min, s_max, l_min, l_max, v_along, v_lat, err, accel, near
        )

    def _factor(
        self,
        path: ReferencePath,
        objs: _Objects,
        i: int,
        v_ego: float,
        description: str,
    ) -> CausalFactor:
        """A CRITICAL_OBJECT factor measured on `path`: distance from the front bumper to the
        object's nearest box point along the path (for an object far off the path, e.g. one
        approaching a crossing, the straight-line distance from the front bumper's centre to
        its box), speed along the path minus the ego's."""
        a = objs.agents[i]
        s_front = path.s_ego + self._front
        off_path = abs(float(objs.l_c[i]) - path.lateral_ego) > self.cfg.factor_path_lateral_m
        off_path |= not (0.0 <= float(objs.s_c[i]) <= path.length - 1.0)
        if off_path:
            ego = self._scene.ego
            bumper = np.array(
                [ego.x + self._front * math.cos(ego.yaw), ego.y + self._front * math.sin(ego.yaw)]
            )
            dist = _point_to_box(bumper, a)
            along = float(objs.s_c[i] - s_front)
        elif objs.s_max[i] < path.s_ego - self._rear:
            dist = path.s_ego - self._rear - objs.s_max[i]  # behind: rear bumper to its front
            along = -1.0
        else:
            dist = max(0.0, float(objs.s_min[i] - s_front))
            along = float(objs.s_c[i] - s_front)
        return CausalFactor(
            kind=CausalFactorKind.CRITICAL_OBJECT,
            description=description,
            object_id=a.id,
            object_class=a.agent_class,
            # side relative to the ego itself (not to the path's centre line)
            side=_side_of(
                float(objs.l_c[i] - path.lateral_ego), along, self.cfg.side_ahead_lateral_m
            ),
            distance_m=round(float(dist), 2),
            relative_speed_mps=round(float(objs.v_along[i] - v_ego), 2),
        )

    def _factor_by_id(
        self, path: ReferencePath, objs: _Objects, agent_id: str | None, v_ego: float, desc: str
    ) -> CausalFactor | None:
        if agent_id is None:
            return None
        for i, a in enumerate(objs.agents):
            if a.id == agent_id:
                return self._factor(path, objs, i, v_ego, desc)
        return None

    # ---- lane changes -----------------------------------------------------------------------
    def _neighbour(self, lane_id: str, side: Side) -> str | None:
        index = self._index
        if lane_id not in index.lanes:
            return None
        lane = index.lanes[lane_id].lane
        nb = lane.left_neighbor if side == Side.LEFT else lane.right_neighbor
        kind = lane.left_boundary_kind if side == Side.LEFT else lane.right_boundary_kind
        if nb is None or nb not in index.lanes or kind in ("road_edge", "solid"):
            return None
        return nb

    def _parallel_to_route(self, lane_id: str) -> str | None:
        """A route lane reachable sideways from `lane_id` (itself first), or None."""
        if lane_id in self._route_lanes:
            return lane_id
        index = self._index
        if lane_id not in index.lanes:
            return None
        for attr in ("left_neighbor", "right_neighbor"):
            seen = {lane_id}
            cur = lane_id
            while True:
                nb = getattr(index.lanes[cur].lane, attr)
                if nb is None or nb not in index.lanes or nb in seen:
                    break
                if nb in self._route_lanes:
                    return nb
                seen.add(nb)
                cur = nb
        return None

    def _route_problem(self, path: ReferencePath) -> tuple[float, str] | None:
        """Where the path stops serving the route: (path arc length, "lane_end" | "route")."""
        route = self._scene.route
        if self._route_lanes:
            last = route.lane_ids[-1]
            for seg in path.segments:
                if seg.path_s0 + (seg.lane_s1 - seg.lane_s0) < path.s_ego:
                    continue
                if seg.lane_id not in self._index.lanes:
                    break  # off the map (route waypoints): no lane topology to check
                par = self._parallel_to_route(seg.lane_id)
                if par is None:
                    return (seg.path_s0, "route")
                if par == last:
                    break  # the route ends beside this chain: only a dead end matters now
        if path.dead_end_s is not None:
            wp = route.waypoints
            if len(wp) >= 1:
                # the route ends before (or near) the dead end: nothing to do (all lanes of
                # a road may end where the route does)
                s_end, _ = path.project(wp[-1:])
                if float(s_end[0]) < path.dead_end_s + self.cfg.route_end_tolerance_m:
                    return None
            return (path.dead_end_s, "lane_end")
        return None

    def _is_merge_lane(self, lane_id: str, side: Side) -> bool:
        """An on-ramp acceleration lane: none of its predecessors had a neighbour on `side`
        (the ego arrived from a separate road, not along a multi-lane road that drops a lane)."""
        index = self._index
        preds = [p for p in index.lanes[lane_id].lane.predecessors if p in index.lanes]
        if not preds:
            return False
        attr = "left_neighbor" if side == Side.LEFT else "right_neighbor"
        return all(getattr(index.lanes[p].lane, attr) is None for p in preds)

    def _gap_check(
        self, target: ReferencePath, objs: _Objects, v_ego: float, mandatory: bool = False
    ) -> tuple[bool, int | None, int | None, int | None]:
        """Is the target lane's gap acceptable? (ok, new leader idx, new follower idx,
        blocking object idx). Discretionary changes use MOBIL's safe-braking test on IDM
        accelerations; mandatory ones (lane end, route, blocked lane) accept the tighter
        gaps that drivers take when they must: time gaps to the new leader and follower,
        and closing speeds that a constant braking of `mobil_safe_decel_mps2` absorbs."""
        cfg = self.cfg
        s_front = target.s_ego + self._front
        s_rear = target.s_ego - self._rear
        k = target.index(objs.s_c)
        hwl = target.half_width_left_m[k]
        hwr = target.half_width_right_m[k]
        in_lane = objs.near & (objs.l_max > -hwr + 0.2) & (objs.l_min < hwl - 0.2)
        in_lane &= np.abs(objs.heading_err) < 1.2
        leader = follower = None
        best_lead, best_follow = math.inf, -math.inf
        for i in np.flatnonzero(in_lane):
            if objs.s_min[i] < s_front + cfg.lane_change_min_front_gap_m and (
                objs.s_max[i] > s_rear - cfg.lane_change_min_rear_gap_m
            ):
                return False, None, None, int(i)
            if objs.s_min[i] >= s_front and objs.s_min[i] < best_lead:
                leader, best_lead = int(i), float(objs.s_min[i])
            if objs.s_max[i] <= s_rear and objs.s_max[i] > best_follow:
                follower, best_follow = int(i), float(objs.s_max[i])
        if mandatory:
            b_safe = cfg.mobil_safe_decel_mps2
            if follower is not None:
                vf = max(0.0, float(objs.v_along[follower]))
                gap = s_rear - best_follow - cfg.lane_change_min_rear_gap_m
                need = vf * cfg.mandatory_rear_time_gap_s
                closing = max(0.0, vf - v_ego)
                if gap < need or closing * closing > 2.0 * b_safe * max(gap, 0.01):
                    return False, leader, follower, follower
            if leader is not None:
                vl = max(0.0, float(objs.v_along[leader]))
                gap = best_lead - s_front - cfg.lane_change_min_front_gap_m
                need = v_ego * cfg.mandatory_front_time_gap_s
                closing = max(0.0, v_ego - vl)
                if gap < need or closing * closing > 2.0 * b_safe * max(gap, 0.01):
                    return False, leader, follower, leader
            return True, leader, follower, None
        if follower is not None:
            vf = max(0.0, float(objs.v_along[follower]))
            gap = s_rear - best_follow
            a_f = self._idm(
                vf,
                max(vf, target.speed_limit_mps[0]),
                gap,
                v_ego,
                cfg.idm_min_gap_m,
                cfg.idm_time_headway_s,
            )
            if a_f < -cfg.mobil_safe_decel_mps2:
                return False, leader, follower, follower
        if leader is not None:
            gap = best_lead - s_front
            vl = max(0.0, float(objs.v_along[leader]))
            a_e = self._idm(
                v_ego, max(v_ego, 1.0), gap, vl, cfg.idm_min_gap_m, cfg.idm_time_headway_s
            )
            if a_e < -cfg.mobil_safe_decel_mps2:
                return False, leader, follower, leader
        return True, leader, follower, None

    def _idm(
        self,
        v: float,
        v0: float,
        gap: float,
        v_lead: float,
        s0: float,
        headway: float,
        a_max: float | None = None,
    ) -> float:
        cfg = self.cfg
        a = cfg.idm_max_accel_mps2 if a_max is None else a_max
        free = 1.0 - (v / max(v0, 0.1)) ** cfg.idm_exponent
        if gap == math.inf:
            return a * free
        s_star = s0 + max(
            0.0, v * headway + v * (v - v_lead) / (2.0 * math.sqrt(a * cfg.idm_comfort_decel_mps2))
        )
        return a * (free - (s_star / max(gap, 0.01)) ** 2)

    def _leader_in(self, path: ReferencePath, objs: _Objects) -> int | None:
        """Nearest object ahead in the lane band of `path` (centred), leaving out stationary
        objects that a nudge of at most `prefer_lane_change_offset_m` passes (a nudge, not a
        lane change, is the answer to those)."""
        s_front = path.s_ego + self._front
        half = 0.5 * self._scene.ego.width + self.cfg.corridor_margin_m
        ok = objs.near & (objs.s_min > s_front - 0.5) & (objs.l_max > -half) & (objs.l_min < half)
        idx = np.flatnonzero(ok)
        idx = idx[np.argsort(objs.s_min[idx])]
        for i in idx:
            if math.hypot(objs.v_along[i], objs.v_lat[i]) < self.cfg.stationary_speed_mps:
                nl, nr, _, _ = self._nudge_options(path, objs, int(i), self._scene.ego.width)
                if min(abs(nl), abs(nr)) <= self.cfg.prefer_lane_change_offset_m:
                    continue
            return int(i)
        return None

    def _lateral_manoeuvre(
        self,
        index: MapIndex,
        cur_lane: str,
        path: ReferencePath,
        objs: _Objects,
        ego,
        ahead: float,
        plan: _Plan,
    ) -> ReferencePath:
        """Update the lane-change state machine; return the reference path to track."""
        cfg = self.cfg
        t = self._scene.timestamp
        v = max(0.0, float(ego.speed))

        # -- a lane change in progress -----------------------------------------------------------
        if self._lc is not None:
            lc = self._lc
            target_lane = self._follow_lane(index, lc.target_lane)
            origin_lane = self._follow_lane(index, lc.origin_lane)
            if target_lane is None:
                self._lc = None
            else:
                lc.target_lane, lc.origin_lane = target_lane, origin_lane or lc.origin_lane
                target = self._lane_path(index, target_lane, ego, ahead)
                lat, head = abs(target.lateral_ego), abs(target.heading_error_ego)
                if lat < cfg.lane_change_complete_offset_m and (
                    head < cfg.lane_change_complete_heading_rad or lat < 0.15
                ):
                    self._lc = None
                    self._last_lc_end_t = t
                    self._lane = target_lane
                    return target  # done: lane keeping in the new lane
                tobjs = self._objects(target, self._scene.agents)
                ok, _, _, blocker = self._gap_check(target, tobjs, v)
                progress = abs(path.lateral_ego) if origin_lane == cur_lane else math.inf
                if (
                    not ok
                    and progress < cfg.lane_change_abort_max_progress_m
                    and lc.reason == "discretionary"
                ):
                    cause = tobjs.agents[blocker].id if blocker is not None else None
                    back = Side.RIGHT if lc.side == Side.LEFT else Side.LEFT
                    self._abort = _Abort(lc.origin_lane, back, cause, t)
                    self._lc = None
                    self._last_lc_end_t = t
                    self._lane = lc.origin_lane
                    origin = self._lane_path(index, lc.origin_lane, ego, ahead)
                    f = self._factor_by_id(
                        origin,
                        self._objects(origin, self._scene.agents),
                        cause,
                        v,
                        "vehicle closing the gap in the target lane",
                    )
                    plan.lateral = LateralDecision.LATERAL_ABORT
                    plan.lateral_side = back
                    plan.lateral_factors = (f,) if f else ()
                    return origin
                plan.lateral = lc.lateral
                plan.lateral_side = lc.side
                plan.lateral_factors = self._lc_factors(lc, path, target, objs, tobjs, v)
                plan.passing = lc.passing
                return target

        # -- returning after an abort ------------------------------------------------------------
        if self._abort is not None:
            ab = self._abort
            origin_lane = self._follow_lane(index, ab.origin_lane)
            if origin_lane is None or (
                origin_lane == cur_lane
                and abs(path.lateral_ego) < cfg.lane_change_complete_offset_m
            ):
                self._abort = None
            else:
                ab.origin_lane = origin_lane
                origin = (
                    self._lane_path(index, origin_lane, ego, ahead)
                    if origin_lane != cur_lane
                    else path
                )
                oobjs = self._objects(origin, self._scene.agents) if origin is not path else objs
                f = self._factor_by_id(
                    origin, oobjs, ab.cause_object, v, "vehicle closing the gap in the target lane"
                )
                plan.lateral = LateralDecision.LATERAL_ABORT
                plan.lateral_side = ab.side
                plan.lateral_factors = (f,) if f else ()
                return origin

        # -- should a lane change start? ---------------------------------------------------------
        if t - self._last_lc_end_t < cfg.lane_change_cooldown_s:
            return path
        problem = self._route_problem(path)
        s_front = path.s_ego + self._front
        mandatory: tuple[str, float] | None = None
        if problem is not None and problem[0] - s_front < cfg.mandatory_lane_change_lookahead_m:
            mandatory = (problem[1], problem[0])
        blocking = (
            None if mandatory is not None else self._blocking_obstacle(path, objs, self._scene)
        )
        if mandatory is None and blocking is None:
            # discretionary changes are weighed a few times a second, not every frame
            if t - self._last_mobil_t < cfg.mobil_period_s or v < cfg.mobil_min_speed_mps:
                return path
            self._last_mobil_t = t
        candidates: list[tuple[Side, str, ReferencePath]] = []
        for side in (Side.LEFT, Side.RIGHT):
            nb = self._neighbour(cur_lane, side)
            if nb is not None:
                candidates.append((side, nb, self._lane_path(index, nb, ego, ahead)))
        if not candidates:
            return path  # nothing to change into (yet): a lane end still binds as a wall

        if mandatory is not None:
            reason, s_at = mandatory
            # the side whose chain keeps serving the route (or goes farther)
            best = None
            for side, nb, tp in candidates:
                prob = self._route_problem(tp)
                reach = math.inf if prob is None else prob[0] - (tp.s_ego + self._front)
                if reach > s_at - s_front + 1.0 and (best is None or reach > best[0]):
                    best = (reach, side, nb, tp)
            if best is not None:
                _, side, nb, tp = best
                tobjs = self._objects(tp, self._scene.agents)
                ok, _, _, blocker = self._gap_check(tp, tobjs, v, mandatory=True)
                merge = reason == "lane_end" and self._is_merge_lane(cur_lane, side)
                if ok and v > 0.5:
                    self._start_lc(nb, cur_lane, side, reason, None, merge, False)
                    plan.lateral = self._lc.lateral
                    plan.lateral_side = side
                    plan.lateral_factors = self._lc_factors(self._lc, path, tp, objs, tobjs, v)
                    return tp
                bf = slow_to = None
                if blocker is not None:
                    bf = self._factor(
                        tp, tobjs, blocker, v, "vehicle occupying the gap in the target lane"
                    )
                    slow_to = self._slow_to(tp, tobjs, blocker)
                self._note_pending(plan, path, mandatory, bf, slow_to, v, side, merge)
            return path

        # blocked by a static obstacle that a nudge cannot pass: change lanes around it
        if blocking is not None:
            i_obs, need = blocking
            side_pref = Side.LEFT if need > 0 else Side.RIGHT
            for side, nb, tp in sorted(candidates, key=lambda c: c[0] != side_pref):
                prob = self._route_problem(tp)
                if prob is not None and prob[0] - tp.s_ego < cfg.discretionary_route_margin_m:
                    continue
                tobjs = self._objects(tp, self._scene.agents)
                ok, _, _, blocker = self._gap_check(tp, tobjs, v, mandatory=True)
                if ok:
                    self._start_lc(
                        nb, cur_lane, side, "blocked", objs.agents[i_obs].id, False, False
                    )
                    plan.lateral = LateralDecision.LANE_CHANGE
                    plan.lateral_side = side
                    plan.lateral_factors = self._lc_factors(self._lc, path, tp, objs, tobjs, v)
                    return tp
                bf = slow_to = None
                if blocker is not None:
                    bf = self._factor(
                        tp, tobjs, blocker, v, "vehicle occupying the gap in the target lane"
                    )
                    slow_to = self._slow_to(tp, tobjs, blocker)
                of = self._factor(path, objs, i_obs, v, "obstacle blocking the ego lane")
                plan.pending = _PendingChange(side, "blocked", (of,), bf, slow_to, False)
                return path
            return path

        # discretionary: MOBIL
        if v < cfg.mobil_min_speed_mps:
            return path
        lead = self._leader_in(path, objs)
        a_cur = self._idm_behind(
            path, objs, lead, v, path.speed_limit_mps[int(path.index(path.s_ego))]
        )
        best_gain, best = cfg.mobil_threshold_mps2, None
        for side, nb, tp in candidates:
            prob = self._route_problem(tp)
            if prob is not None and prob[0] - tp.s_ego < cfg.discretionary_route_margin_m:
                continue
            tobjs = self._objects(tp, self._scene.agents)
            ok, new_lead, new_follow, _ = self._gap_check(tp, tobjs, v)
            if not ok:
                continue
            limit_t = float(tp.speed_limit_mps[int(tp.index(tp.s_ego))])
            a_new = self._idm_behind(tp, tobjs, new_lead, v, limit_t)
            # politeness: the new follower's loss (old follower gains are left out: conservative)
            loss = 0.0
            if new_follow is not None:
                vf = max(0.0, float(tobjs.v_along[new_follow]))
                v0f = max(vf, limit_t)
                s_rear = tp.s_ego - self._rear
                gap_now = (
                    float(tobjs.s_min[new_lead]) - float(tobjs.s_max[new_follow])
                    if new_lead is not None
                    else math.inf
                )
                v_lead_now = float(tobjs.v_along[new_lead]) if new_lead is not None else vf
                before = self._idm(
                    vf, v0f, gap_now, v_lead_now, cfg.idm_min_gap_m, cfg.idm_time_headway_s
                )
                after = self._idm(
                    vf,
                    v0f,
                    s_rear - float(tobjs.s_max[new_follow]),
                    v,
                    cfg.idm_min_gap_m,
                    cfg.idm_time_headway_s,
                )
                loss = before - after
            gain = a_new - a_cur - cfg.mobil_politeness * loss
            if gain > best_gain:
                best_gain, best = gain, (side, nb, tp, tobjs)
        if best is not None and lead is not None:
            side, nb, tp, tobjs = best
            slow = (
                float(objs.v_along[lead]) < v + 0.5
                and float(objs.v_along[lead])
                < float(path.speed_limit_mps[int(path.index(path.s_ego))]) - 1.0
            )
            self._start_lc(nb, cur_lane, side, "discretionary", objs.agents[lead].id, False, slow)
            plan.lateral = LateralDecision.LANE_CHANGE
            plan.lateral_side = side
            plan.lateral_factors = self._lc_factors(self._lc, path, tp, objs, tobjs, v)
            plan.passing = slow
            return tp
        return path

    def _idm_behind(
        self, path: ReferencePath, objs: _Objects, lead: int | None, v: float, limit: float
    ) -> float:
        cfg = self.cfg
        v0 = max(0.1, limit * cfg.speed_limit_fraction)
        if lead is None:
            return self._idm(v, v0, math.inf, 0.0, cfg.idm_min_gap_m, cfg.idm_time_headway_s)
        gap = float(objs.s_min[lead]) - (path.s_ego + self._front)
        return self._idm(
            v,
            v0,
            gap,
            max(0.0, float(objs.v_along[lead])),
            cfg.idm_min_gap_m,
            cfg.idm_time_headway_s,
        )

    def _follow_lane(self, index: MapIndex, lane_id: str) -> str | None:
        """The lane the ego is on that continues `lane_id` (itself or a successor), by the
        current lane matches."""
        matches = self._matches
        if lane_id in matches:
            return lane_id
        if lane_id not in index.lanes:
            return None
        frontier = list(index.lanes[lane_id].lane.successors)
        for _ in range(2):
            nxt = []
            for lid in frontier:
                if lid in matches:
                    return lid
                if lid in index.lanes:
                    nxt.extend(index.lanes[lid].lane.successors)
            frontier = nxt
        return lane_id if lane_id in index.lanes else None

    def _start_lc(
        self,
        target: str,
        origin: str,
        side: Side,
        reason: str,
        cause: str | None,
        merge: bool,
        passing: bool,
    ) -> None:
        lateral = LateralDecision.MERGE_SPLIT if merge else LateralDecision.LANE_CHANGE
        self._lc = _LaneChange(
            target, origin, side, lateral, reason, cause, self._scene.timestamp, passing
        )
        self._abort = None

    def _rule_factor(
        self, path: ReferencePath, reason: str, s_at: float | None, v: float
    ) -> CausalFactor:
        s_front = path.s_ego + self._front
        dist = None if s_at is None else round(max(0.0, s_at - s_front), 2)
        if reason == "lane_end":
            return CausalFactor(
                CausalFactorKind.LANE_GEOMETRY,
                "the ego lane ends ahead",
                side=Side.AHEAD,
                distance_m=dist,
                relative_speed_mps=round(-v, 2) if dist is not None else None,
            )
        return CausalFactor(
            CausalFactorKind.ROUTING,
            "the route continues from another lane",
            side=Side.AHEAD,
            distance_m=dist,
        )

    def _lc_factors(
        self,
        lc: _LaneChange,
        origin: ReferencePath,
        target: ReferencePath,
        objs: _Objects,
        tobjs: _Objects,
        v: float,
    ) -> tuple[CausalFactor, ...]:
        """The reason the lane change was started, re-measured on the current scene."""
        if lc.reason in ("lane_end", "route"):
            # measure on the origin lane's path: where it ends / leaves the route
            if self._lane != lc.origin_lane and lc.origin_lane in self._index.lanes:
                origin = self._lane_path(self._index, lc.origin_lane, self._scene.ego, self._ahead)
            problem = self._route_problem(origin)
            s_at = problem[0] if problem is not None else None
            if s_at is not None and lc.reason == "lane_end":
                self._lc_room = s_at - (origin.s_ego + self._front)
            f = self._rule_factor(origin, lc.reason, s_at, v)
            if lc.lateral == LateralDecision.MERGE_SPLIT:
                return (
                    f,
                    CausalFactor(CausalFactorKind.YIELD_CONTROL, "merging onto the main road"),
                )
            return (f,)
        desc = (
            "slower vehicle ahead"
            if lc.reason == "discretionary"
            else "obstacle blocking the ego lane"
        )
        f = self._factor_by_id(target, tobjs, lc.cause_object, v, desc)
        return (f,) if f is not None else ()

    def _note_pending(
        self,
        plan: _Plan,
        path: ReferencePath,
        mandatory: tuple[str, float],
        blocker: CausalFactor | None,
        slow_to: float | None,
        v: float,
        side: Side,
        merge: bool = False,
    ) -> None:
        reason, s_at = mandatory
        f = self._rule_factor(path, reason, s_at, v)
        plan.pending = _PendingChange(side, reason, (f,), blocker, slow_to, merge)

    def _slow_to(self, target: ReferencePath, tobjs: _Objects, blocker: int) -> float | None:
        """Gap searching: the speed that brings the ego beside the nearest acceptable gap in
        the target lane (the gap's leader speed, corrected by the distance to the gap's
        middle), so the gap check can pass; None when the lane has no such gap."""
        cfg = self.cfg
        k = target.index(tobjs.s_c)
        in_lane = tobjs.near & (tobjs.l_max > -target.half_width_right_m[k] + 0.2)
        in_lane &= tobjs.l_min < target.half_width_left_m[k] - 0.2
        in_lane &= np.abs(tobjs.heading_err) < 1.2
        idx = np.flatnonzero(in_lane)
        idx = idx[np.argsort(tobjs.s_c[idx])]
        need = self._front + self._rear + cfg.lane_change_min_front_gap_m
        need += cfg.lane_change_min_rear_gap_m + 2.0 * cfg.idm_min_gap_m
        s_ego_c = target.s_ego + 0.5 * (self._front - self._rear)
        best = None
        bounds = [None, *idx.tolist(), None]
        for f, lead in zip(bounds[:-1], bounds[1:]):
            lo = -math.inf if f is None else float(tobjs.s_max[f])
            hi = math.inf if lead is None else float(tobjs.s_min[lead])
            if hi - lo < need:
                continue
            mid = (
                0.5 * (lo + hi)
                if math.isfinite(lo + hi)
                else (hi - 0.5 * need if math.isfinite(hi) else lo + 0.5 * need)
            )
            if best is None or abs(mid - s_ego_c) < abs(best[0] - s_ego_c):
                ref = lead if lead is not None else f
                v_ref = float(tobjs.v_along[ref]) if ref is not None else self._scene.ego.speed
                best = (mid, v_ref)
        if best is None:
            return None
        mid, v_ref = best
        return max(0.0, v_ref + cfg.gap_search_gain_per_s * (mid - s_ego_c))

    # ---- nudges -------------------------------------------------------------------------------
    def _static_candidates(self, path: ReferencePath, objs: _Objects, scene: Scene) -> list[int]:
        """Stationary objects in (or reaching into) the lane that are not queued traffic."""
        cfg = self.cfg
        v = max(0.0, scene.ego.speed)
        s_front = path.s_ego + self._front
        s_rear = path.s_ego - self._rear
        look = max(cfg.nudge_lookahead_min_m, v * cfg.nudge_lookahead_time_s)
        half = 0.5 * scene.ego.width + cfg.nudge_clearance_m
        speed = np.hypot(objs.v_along, objs.v_lat)
        cand = (
            objs.near
            & (objs.s_max > s_rear - cfg.nudge_hold_margin_m)
            & (objs.s_min < s_front + look)
        )
        cand &= (objs.l_max > -half) & (objs.l_min < half)
        cand &= speed < cfg.stationary_speed_mps
        out = []
        stops = self._stop_positions(path, scene)
        for i in np.flatnonzero(cand):
            a = objs.agents[i]
            if not a.is_static:
                # a stopped vehicle with a reason to stand (another object or a stop line just
                # ahead) is queued traffic, not an obstacle to pass
                ahead_obj = (
                    objs.near
                    & (objs.s_min > objs.s_max[i])
                    & (objs.s_min < objs.s_max[i] + cfg.queue_gap_m)
                    & (objs.l_max > -half)
                    & (objs.l_min < half)
                )
                if ahead_obj.any():
                    continue
                if any(0.0 <= s - objs.s_max[i] <= cfg.queue_gap_m for s in stops):
                    continue
            out.append(int(i))
        return out

    def _nudge_options(self, path: ReferencePath, objs: _Objects, i: int, ego_width: float):
        """(left offset, right offset, half widths) needed to pass object i with clearance."""
        cfg = self.cfg
        k = int(path.index(0.5 * (objs.s_min[i] + objs.s_max[i])))
        need_left = float(objs.l_max[i]) + cfg.nudge_clearance_m + 0.5 * ego_width
        need_right = float(objs.l_min[i]) - cfg.nudge_clearance_m - 0.5 * ego_width
        return (
            need_left,
            need_right,
            float(path.half_width_left_m[k]),
            float(path.half_width_right_m[k]),
        )

    def _blocking_obstacle(
        self, path: ReferencePath, objs: _Objects, scene: Scene
    ) -> tuple[int, float] | None:
        """The nearest static obstacle that needs more than `prefer_lane_change_offset_m` of
        offset (a lane change is the better manoeuvre): (index, signed offset needed)."""
        w = scene.ego.width
        best = None
        for i in self._static_candidates(path, objs, scene):
            if objs.s_min[i] < path.s_ego + self._front:
                continue
            nl, nr, _, _ = self._nudge_options(path, objs, i, w)
            need = nl if abs(nl) <= abs(nr) else nr
            if abs(need) > self.cfg.prefer_lane_change_offset_m and (
                best is None or objs.s_min[i] < objs.s_min[best[0]]
            ):
                best = (i, need)
        return best

    def _adjacent_free(
        self, path: ReferencePath, objs: _Objects, side: Side, s_from: float, s_to: float, v: float
    ) -> bool:
        """No moving traffic in the adjacent lane while the ego is beside the window."""
        cfg = self.cfg
        k = path.index(objs.s_c)
        if side == Side.LEFT:
            inside = (objs.l_min < path.half_width_left_m[k] + 4.0) & (
                objs.l_max > path.half_width_left_m[k] - 0.2
            )
        else:
            inside = (objs.l_max > -path.half_width_right_m[k] - 4.0) & (
                objs.l_min < -path.half_width_right_m[k] + 0.2
            )
        idx = np.flatnonzero(
            objs.near & inside & (np.hypot(objs.v_along, objs.v_lat) >= cfg.stationary_speed_mps)
        )
        if len(idx) == 0:
            return True
        # a slow or standing ego speeds up to pass: judge the window at a passing speed
        v_e = max(v, cfg.nudge_pass_speed_mps)
        t1 = max(0.0, (s_from - path.s_ego - self._front) / v_e)
        t2 = max(t1, (s_to - path.s_ego + self._rear) / v_e)
        t2 = min(t2, PLAN_STEPS * PLAN_DT_S)
        ts = np.linspace(0.0, t2 + cfg.adjacent_lane_time_gap_s, 10)
        s_e = path.s_ego + v_e * ts
        for i in idx:
            s_a = objs.s_c[i] + objs.v_along[i] * ts
            clear = 0.5 * (
                self._scene.ego.length + objs.agents[i].length
            ) + cfg.adjacent_lane_time_gap_s * max(v_e, abs(objs.v_along[i]))
            window = (s_e > s_from - 10.0) & (s_e < s_to + 10.0)
            if (window & (np.abs(s_a - s_e) < clear)).any():
                return False
        return True

    def _nudges(
        self, path: ReferencePath, objs: _Objects, scene: Scene, plan: _Plan
    ) -> tuple[list[_Nudge], list[int]]:
        """Offsets that pass static obstacles, and the obstacles that cannot be passed."""
        cfg = self.cfg
        v = max(0.0, scene.ego.speed)
        w = scene.ego.width
        nudges: list[_Nudge] = []
        blocked: list[int] = []
        for i in sorted(self._static_candidates(path, objs, scene), key=lambda j: objs.s_min[j]):
            nl, nr, hwl, hwr = self._nudge_options(path, objs, i, w)
            s_from = float(objs.s_min[i]) - cfg.nudge_hold_margin_m - self._front
            s_to = float(objs.s_max[i]) + cfg.nudge_hold_margin_m + self._rear
            options = []
            for side, need, hw in ((Side.LEFT, nl, hwl), (Side.RIGHT, nr, hwr)):
                mag = need if side == Side.LEFT else -need
                if mag <= 0:  # already clear on this side
                    options.append((0.0, side, True, need))
                    continue
                if mag + 0.5 * w <= hw - cfg.in_lane_margin_m:
                    options.append((mag, side, True, need))
                elif (
                    mag <= cfg.max_out_of_lane_nudge_m
                    and self._neighbour(self._lane or "", side) is not None
                    and self._adjacent_free(path, objs, side, s_from, s_to, v)
                ):
                    options.append((mag + 10.0, side, False, need))  # in-lane preferred
            # compatibility with nudges already planned around earlier obstacles
            ok_opts = []
            for cost, side, in_lane, need in options:
                clash = any(
                    n.s_from < s_to
                    and n.s_to > s_from
                    and (
                        (side == Side.LEFT and n.offset_m < need - 1e-6 and n.offset_m < 0)
                        or (side == Side.RIGHT and n.offset_m > need + 1e-6 and n.offset_m > 0)
                    )
                    for n in nudges
                )
                if not clash:
                    ok_opts.append((cost, side, in_lane, need))
            if not ok_opts:
                blocked.append(i)
                continue
            cost, side, in_lane, need = min(ok_opts, key=lambda o: o[0])
            if cost == 0.0:
                continue  # passes without any offset
            desc = f"{_KIND_NAME[objs.agents[i].agent_class]} encroaching into the ego lane"
            # the side it will be on while the ego passes it: opposite to the nudge
            f = dataclasses.replace(
                self._factor(path, objs, i, v, desc),
                side=Side.RIGHT if need > 0 else Side.LEFT,
            )
            nudges.append(_Nudge(need, s_from, s_to, in_lane, f))
        if nudges and plan.lateral == LateralDecision.LANE_KEEPING:
            n0 = nudges[0]
            plan.lateral = (
                LateralDecision.IN_LANE_NUDGE if n0.in_lane else LateralDecision.OUT_OF_LANE_NUDGE
            )
            plan.lateral_side = Side.LEFT if n0.offset_m > 0 else Side.RIGHT
            plan.lateral_factors = (n0.factor,)
        return nudges, blocked

    def _offset_profile(
        self, path: ReferencePath, nudges: list[_Nudge], ego, v: float
    ) -> np.ndarray:
        """(N,) lateral offset of the planned path from the reference, m (+ left)."""
        cfg = self.cfg
        s = path.s
        prof = np.zeros_like(s)
        ramp = max(cfg.nudge_ramp_min_m, v * cfg.nudge_ramp_time_s)
        for n in nudges:
            up = _smoothstep((s - (n.s_from - ramp)) / ramp)
            down = 1.0 - _smoothstep((s - n.s_to) / ramp)
            shape = n.offset_m * np.minimum(up, down)
            prof = np.maximum(prof, shape) if n.offset_m > 0 else np.minimum(prof, shape)
        # converge from the ego's offset and heading error (quintic, zero curvature at ends)
        k0 = int(path.index(path.s_ego))
        e0 = path.lateral_ego - prof[k0]
        slope = math.tan(max(-1.0, min(1.0, path.heading_error_ego)))
        slope -= (prof[min(k0 + 1, len(s) - 1)] - prof[k0]) / path.ds
        length = max(cfg.heading_correction_min_m, v * cfg.heading_correction_time_s)
        if self._lc is not None:
            # a lane change keeps its lateral speed: the remaining length scales with the
            # remaining offset, so replanning does not stretch the manoeuvre; its full length
            # is fixed when it starts (shorter when the origin lane ends sooner)
            lc = self._lc
            if lc.max_length_m is None:
                lc.max_length_m = math.inf
                if self._lc_room is not None:
                    lc.max_length_m = max(cfg.lane_change_shortest_m, self._lc_room - 5.0)
            full = max(cfg.lane_change_min_length_m, v * cfg.lane_change_duration_s)
            full = min(full, lc.max_length_m)
            width = path.half_width_left_m[k0] + path.half_width_right_m[k0]
            length = max(length, full * min(1.0, abs(e0) / max(width, 1.0)))
        x = (s - path.s_ego) / length
        tau = np.clip(x, 0.0, 1.0)
        t3 = tau**3
        g = 1.0 - t3 * (10.0 - 15.0 * tau + 6.0 * tau * tau)
        f = tau - t3 * (6.0 - 8.0 * tau + 3.0 * tau * tau)
        # start with the ego's own curvature (relative to the path's), so the executed first
        # step keeps turning where needed: with a straight start every replan would drift
        bend = (
            float(ego.curvature)
            - float(path.curvature[k0])
            - (prof[min(k0 + 1, len(s) - 1)] - 2.0 * prof[k0] + prof[max(k0 - 1, 0)]) / path.ds**2
        )
        bend = max(-cfg.max_curvature_per_m, min(cfg.max_curvature_per_m, bend))
        q = tau * tau * (1.0 - tau) ** 3  # = tau^2 - 3 tau^3 + 3 tau^4 - tau^5
        h = e0 * g + slope * length * f + 0.5 * bend * length * length * q
        h[x < 0] = e0 + slope * (s[x < 0] - path.s_ego)
        return prof + h

    # ---- longitudinal ---------------------------------------------------------------------------
    def _stop_positions(self, path: ReferencePath, scene: Scene) -> list[float]:
        """Path arc lengths of stop lines that currently demand a stop (cached per call)."""
        cache = self._stop_cache
        if cache is not None and cache[0] is path:
            return cache[1]
        out = [s for s, *_ in self._stop_lines(path, scene)]
        self._stop_cache = (path, out)
        return out

    def _stop_line_s(self, path: ReferencePath, line: StopLine) -> float | None:
        pts = np.asarray(line.points, dtype=np.float64).reshape(-1, 2)
        s, lat = path.project(pts)
        on_lanes = bool(set(line.lane_ids) & set(path.lane_ids))
        crosses = len(lat) >= 2 and (lat.min() <= 0.5 and lat.max() >= -0.5)
        if not on_lanes and not crosses:
            return None
        if len(lat) >= 2 and lat.max() - lat.min() > 1e-6:
            # where the segment crosses the path centre
            w = float(np.clip(-lat[0] / (lat[1] - lat[0]), 0.0, 1.0))
            value = float(s[0] + w * (s[1] - s[0]))
        else:
            value = float(s.mean())
        if value < 0.0 or value > path.length:
            return None
        return value

    def _stop_lines(
        self, path: ReferencePath, scene: Scene
    ) -> list[tuple[float, CausalFactor, str, str]]:
        """(arc length of the line, factor, tag, id) for lights and stop signs that demand a
        stop now."""
        cfg = self.cfg
        v = max(0.0, scene.ego.speed)
        s_front = path.s_ego + self._front
        out = []
        lines = scene.map.stop_lines
        handled: set[str] = set()
        for light in scene.traffic_lights:
            line = None
            if light.stop_line_id and light.stop_line_id in lines:
                line = lines[light.stop_line_id]
            else:
                line = next((sl for sl in lines.values() if sl.light_id == light.id), None)
            if line is not None:
                handled.add(line.id)
                s_line = self._stop_line_s(path, line)
            else:
                s_line = None
                for lid in light.lane_ids:
                    for seg in path.segments:
                        if seg.lane_id == lid:
                            start = seg.path_s0
                            end = seg.path_s0 + seg.lane_s1 - seg.lane_s0
                            s_line = start if start > s_front else end
                            break
                    if s_line is not None:
                        break
            if s_line is None or s_line < s_front - 0.5:
                continue
            if light.state == LightState.GREEN or light.state == LightState.UNKNOWN:
                continue
            dist = s_line - s_front
            if light.state == LightState.YELLOW:
                need = v * v / (2.0 * max(dist - cfg.stop_line_margin_m, 0.1))
                if need > cfg.yellow_max_decel_mps2:
                    continue
            f = CausalFactor(
                CausalFactorKind.TRAFFIC_LIGHT,
                f"{light.state.value} traffic light at the stop line",
                object_id=light.id,
                side=Side.AHEAD,
                distance_m=round(max(0.0, dist), 2),
                relative_speed_mps=round(-v, 2),
            )
            out.append((s_line, f, "light", light.id))
        for line in lines.values():
            if not line.is_stop_sign or line.id in handled or line.id in self._stop_signs_done:
                continue
            s_line = self._stop_line_s(path, line)
            if s_line is None or s_line < s_front - 0.5:
                continue
            dist = s_line - s_front
            if v < cfg.stop_sign_stop_speed_mps and dist < cfg.stop_sign_done_distance_m:
                self._stop_signs_done.add(line.id)
                continue
            f = CausalFactor(
                CausalFactorKind.STOP_CONTROL,
                "stop sign: full stop at the line",
                object_id=line.id,
                side=Side.AHEAD,
                distance_m=round(max(0.0, dist), 2),
                relative_speed_mps=round(-v, 2),
            )
            out.append((s_line, f, "stop_sign", line.id))
        return out

    def _constraints(
        self,
        path: ReferencePath,
        objs: _Objects,
        offset: np.ndarray,
        blocked: list[int],
        scene: Scene,
        v: float,
        plan: _Plan,
    ) -> list[_Constraint]:
        cfg = self.cfg
        ego = scene.ego
        s_front = path.s_ego + self._front
        out: list[_Constraint] = []

        def leader(i: int, f: CausalFactor) -> _Constraint:
            """Object i followed as the lead (in the ego lane, or cutting into it)."""
            return _Constraint(
                float(objs.s_min[i]),
                float(max(0.0, objs.v_along[i])),
                float(objs.accel[i]),
                cfg.idm_min_gap_m,
                cfg.idm_time_headway_s,
                LongitudinalDecision.LEAD_OBSTACLE_FOLLOWING,
                (f,),
                "leader",
            )

        half = 0.5 * ego.width + cfg.corridor_margin_m
        SF, YL = LongitudinalDecision.STOP_FOR_STATIC_CONSTRAINTS, LongitudinalDecision.YIELD

        # stop lines (lights, stop signs)
        for s_line, f, tag, _ in self._stop_lines(path, scene):
            out.append(
                _Constraint(
                    s_line - cfg.stop_line_margin_m,
                    0.0,
                    0.0,
                    cfg.stop_min_gap_m,
                    cfg.stop_time_headway_s,
                    SF,
                    (f,),
                    tag,
                )
            )
        # a lane that ends (not at the route's end)
        problem = self._route_problem(path)
        # The end of a lane is a wall only within comfortable stopping distance (plus a
        # margin): farther away a driver still expects to change lanes before it.
        reach = v * v / (2.0 * cfg.idm_comfort_decel_mps2) + cfg.lane_end_activation_margin_m
        if problem is not None and problem[1] == "lane_end" and problem[0] - s_front < reach:
            f = self._rule_factor(path, "lane_end", problem[0], v)
            out.append(
                _Constraint(
                    problem[0] - cfg.lane_end_stop_margin_m,
                    0.0,
                    0.0,
                    cfg.stop_min_gap_m,
                    cfg.stop_time_headway_s,
                    SF,
                    (f,),
                    "lane_end",
                )
            )

        # objects
        k = path.index(np.clip(objs.s_c, path.s_ego, path.length))
        d_at = offset[k] if len(objs.s_c) else np.zeros(0)
        v_max = float(path.speed_limit_mps[int(path.index(s_front))])
        for i in np.flatnonzero(objs.near & (objs.s_max > s_front - 0.5)):
            a = objs.agents[i]
            lo, hi = objs.l_min[i] - d_at[i], objs.l_max[i] - d_at[i]
            is_vru = a.agent_class in _VRU
            band = half + (cfg.vru_lateral_margin_m if is_vru else 0.0)
            overlapping = hi > -band and lo < band
            along = abs(objs.heading_err[i]) < cfg.leader_max_heading_rad
            speed = math.hypot(objs.v_along[i], objs.v_lat[i])
            static_like = a.is_static or speed < cfg.stationary_speed_mps
            if static_like:
                if not overlapping or (
                    i not in blocked and self._passable(i, objs, offset, path, half)
                ):
                    continue
                desc = f"{_KIND_NAME[a.agent_class]} blocking the ego lane"
                if a.agent_class == AgentClass.VEHICLE and i not in blocked:
                    desc = "stopped vehicle ahead"
                    dec = LongitudinalDecision.LEAD_OBSTACLE_FOLLOWING
                else:
                    dec = SF
                if is_vru:
                    desc, dec = f"{_KIND_NAME[a.agent_class]} standing in the path", YL
                f = self._factor(path, objs, i, v, desc)
                # wait far enough back to steer around it once the way is free
                gap_m = (
                    cfg.idm_min_gap_m
                    if dec != SF
                    else max(cfg.idm_min_gap_m, cfg.static_stop_gap_m)
                )
                out.append(
                    _Constraint(
                        float(objs.s_min[i]),
                        0.0,
                        0.0,
                        gap_m,
                        cfg.idm_time_headway_s,
                        dec,
                        (f,),
                        "static",
                    )
                )
                continue
            # moving: relative lateral motion toward the corridor centre line
            centre = 0.5 * (lo + hi)
            half_obj = 0.5 * (hi - lo)
            if overlapping and along:
                f = self._factor(
                    path,
                    objs,
                    i,
                    v,
                    f"{'slower ' if objs.v_along[i] < v - 0.5 else ''}"
                    f"{_KIND_NAME[a.agent_class]} ahead in the ego lane",
                )
                out.append(leader(i, f))
                continue
            v_lat = float(objs.v_lat[i])
            approach = -v_lat if centre > 0 else v_lat
            if overlapping:
                t_in = 0.0
            elif approach > 0.05:
                t_in = (abs(centre) - half_obj - band) / approach
            else:
                continue
            if along:
                # cut-in: an along-moving object sliding into the corridor soon leads now;
                # one that follows its own lane only looks as if it slides where the ego's
                # path bends (ramps, curves), so it must be heading off its lane towards us
                if t_in <= cfg.cut_in_horizon_s and self._leaving_lane_towards(a, centre):
                    f = self._factor(path, objs, i, v, f"{_KIND_NAME[a.agent_class]} cutting in")
                    out.append(leader(i, f))
                continue
            if not is_vru and self._on_other_lane(a, path):
                # a vehicle on a lane of the map: the conflict check follows its lanes; a
                # straight line through a turn (its or the ego's) flickers in and out of the
                # corridor frame to frame (hard braking, then go, then again)
                continue
            # crossing: is it in the corridor while the ego gets there?
            t_out = (
                (abs(centre) + half_obj + band) / max(approach, 0.05)
                if approach > 0.05
                else math.inf
            )
            s_meet_min = float(objs.s_min[i] + objs.v_along[i] * t_in)
            s_meet_max = float(objs.s_max[i] + objs.v_along[i] * t_in)
            if s_meet_max < s_front or t_in > PLAN_STEPS * PLAN_DT_S:
                continue
            stop_decel = math.hypot(a.vx, a.vy) / (2.0 * max(t_in, 0.05))
            if (
                not is_vru
                and stop_decel <= cfg.priority_trust_decel_mps2
                and self._has_ring_priority(path, s_meet_min, a)
            ):
                continue  # circulating: a vehicle entering the ring yields to the ego
            gap = cfg.vru_time_gap_s if is_vru else cfg.crossing_time_gap_s
            t_arrive = _time_to_cover(s_meet_min - s_front, v, cfg.idm_max_accel_mps2, v_max)
            t_clear = _time_to_cover(
                s_meet_max - path.s_ego + self._rear, v, cfg.idm_max_accel_mps2, v_max
            )
            if t_out + gap < t_arrive or t_in - gap > t_clear:
                continue
            # a vehicle too close to stop for is passed (committed); for a pedestrian or a
            # cyclist the ego brakes in any case (every m/s less matters)
            d_stop = s_meet_min - s_front - cfg.conflict_stop_margin_m
            if (
                not is_vru
                and d_stop < 0
                and v * v / (2 * max(d_stop + 3.0, 0.1)) > cfg.conflict_commit_decel_mps2
            ):
                continue
            desc = f"{_KIND_NAME[a.agent_class]} crossing the ego path"
            f = self._factor(path, objs, i, v, desc)
            margin = cfg.vru_stop_margin_m if is_vru else cfg.conflict_stop_margin_m
            out.append(
                _Constraint(
                    s_meet_min - margin,
                    0.0,
                    0.0,
                    cfg.stop_min_gap_m,
                    cfg.stop_time_headway_s,
                    YL,
                    (f,),
                    "yield",
                )
            )
        out.extend(self._conflict_constraints(path, objs, scene, v, v_max))
        out.extend(self._held_yields(path, out, scene, v))
        # only the nearest leaders matter to the ego (the rollout cost grows with each)
        leaders = sorted((c for c in out if c.tag == "leader"), key=lambda c: c.s_rear)
        drop = {id(c) for c in leaders[cfg.max_leaders :]}
        return [c for c in out if id(c) not in drop]

    def _on_other_lane(self, a: Agent, path: ReferencePath) -> bool:
        """Does vehicle `a` follow a map lane other than the ego's, on a map with crossings or
        merges? Then the lane graph tells whether and where it meets the ego path (the
        conflict constraints); a vehicle that leaves its lane is matched to none."""
        index = self._index
        if index is None or not any(index.conflicts.values()):
            return False
        matches = index.match(a.x, a.y, a.yaw, 3.0, self.cfg.lane_match_max_heading_rad)
        return bool(matches) and matches[0].lane_id not in path.lane_ids

    def _held_yields(
        self, path: ReferencePath, out: list[_Constraint], scene: Scene, v: float
    ) -> list[_Constraint]:
        """Hysteresis on yielding: a yield wall whose reason vanished since the last plan (a
        prediction flickering between 'conflict' and 'clear' frame to frame) is held for
        `yield_hold_s`, where it can still be kept at the commit decel. Without it the ego
        alternates hard braking and accelerating on consecutive frames."""
        cfg = self.cfg
        t = scene.timestamp
        s_front = path.s_ego + self._front
        fresh: set[str] = set()
        for c in out:
            oid = c.factors[0].object_id if c.tag == "yield" and c.factors else None
            if oid is None:
                continue
            fresh.add(oid)
            x, y, _ = path.sample(float(np.clip(c.s_rear, 0.0, path.length)))
            self._yield_hold[oid] = (t, np.array([x, y]), c)
        if cfg.yield_hold_s <= 0.0:
            return []
        present = {a.id for a in scene.agents}
        held: list[_Constraint] = []
        for oid, (t_seen, xy, c) in list(self._yield_hold.items()):
            if oid in fresh:
                continue
            if t - t_seen > cfg.yield_hold_s or oid not in present:
                del self._yield_hold[oid]
                continue
            s_wall = float(path.project(xy[None, :])[0][0])
            d = s_wall - s_front
            if d < 0.0 or v * v / (2.0 * max(d, 0.01)) > cfg.conflict_commit_decel_mps2:
                del self._yield_hold[oid]  # committed: the ego cannot stop there any more
                continue
            held.append(dataclasses.replace(c, s_rear=s_wall))
        return held

    def _has_ring_priority(self, path: ReferencePath, s_at: float, a: Agent) -> bool:
        """Is the ego circulating on a ring lane at `s_at` while agent `a` is not?"""
        index = self._index
        if index is None or not index.ring_lanes:
            return False
        if path.lane_at(max(s_at, 0.0)) not in index.ring_lanes:
            return False
        matches = index.match(a.x, a.y, a.yaw, 3.0, self.cfg.lane_match_max_heading_rad)
        return bool(matches) and matches[0].lane_id not in index.ring_lanes

    def _will_stop_at_light(self, a: Agent, lane_id: str, scene: Scene) -> bool:
        """Does agent `a` on `lane_id` face a red light (or a yellow it can stop for) whose
        stop line is still ahead of it?"""
        for light in scene.traffic_lights:
            if light.state not in (LightState.RED, LightState.YELLOW):
                continue
            line = scene.map.stop_lines.get(light.stop_line_id or "")
            lanes = set(light.lane_ids) | set(line.lane_ids if line is not None else ())
            if lane_id not in lanes or line is None:
                continue
            mid = np.asarray(line.points, dtype=np.float64).reshape(-1, 2).mean(axis=0)
            ahead = (mid[0] - a.x) * math.cos(a.yaw) + (mid[1] - a.y) * math.sin(a.yaw)
            front = ahead - 0.5 * a.length
            if front < 0.0:
                continue  # already past its line
            if light.state == LightState.RED:
                return True
            if a.speed**2 <= 2.0 * self.cfg.yellow_max_decel_mps2 * max(front, 0.1):
                return True
        return False

    def _leaving_lane_towards(self, a: Agent, centre: float) -> bool:
        """Is agent `a` (lateral `centre` from the ego corridor) heading off its own lane
        towards the ego path?"""
        index = self._index
        if index is None:
            return True
        matches = index.match(a.x, a.y, a.yaw, 3.0, self.cfg.lane_match_max_heading_rad)
        if not matches:
            return True  # off every lane: trust the geometry
        err = matches[0].heading_error
        toward = -err if centre > 0 else err  # heading right when it is on our left
        return toward > self.cfg.cut_in_min_heading_rad

    def _passable(
        self, i: int, objs: _Objects, offset: np.ndarray, path: ReferencePath, half: float
    ) -> bool:
        """Does the planned offset profile keep the ego body clear of object i?"""
        k0 = int(path.index(max(objs.s_min[i] - self._front, 0.0)))
        k1 = int(path.index(objs.s_max[i] + self._rear)) + 1
        d = offset[k0:k1]
        if len(d) == 0:
            return False
        clear_left = (d - half) >= objs.l_max[i] - 1e-3  # ego entirely left of it
        clear_right = (d + half) <= objs.l_min[i] + 1e-3
        return bool(np.all(clear_left) or np.all(clear_right))

    def _conflict_constraints(
        self, path: ReferencePath, objs: _Objects, scene: Scene, v: float, v_max: float
    ) -> list[_Constraint]:
        """Yield at crossings and merges of lanes (intersections, roundabouts, on-ramps) to
        vehicles that reach the conflict point first or within a time gap."""
        cfg = self.cfg
        index = self._index
        if index is None or not any(index.conflicts.values()):
            return []
        s_front = path.s_ego + self._front
        # conflict points on the ego path ahead: lane id of the other party -> [(path s, kind)]
        ego_cps: dict[str, list[tuple[float, str]]] = {}
        for seg in path.segments:
            for c in index.conflicts.get(seg.lane_id, ()):
                if not seg.lane_s0 - 1e-6 <= c.s_a <= seg.lane_s1 + 1e-6:
                    continue
                s_cp = seg.path_s0 + c.s_a - seg.lane_s0
                if (
                    s_front - 1.0 < s_cp < s_front + cfg.conflict_lookahead_m
                    and c.lane_b not in path.lane_ids
                ):
                    ego_cps.setdefault(c.lane_b, []).append((s_cp, c.kind))
        if not ego_cps:
            return []
        vehicles = [
            i
            for i, a in enumerate(objs.agents)
            if a.agent_class in (AgentClass.VEHICLE, AgentClass.CYCLIST)
            and math.hypot(a.vx, a.vy) >= cfg.stationary_speed_mps
            and math.hypot(a.x - scene.ego.x, a.y - scene.ego.y) < cfg.conflict_agent_max_distance_m
        ]
        if not vehicles:
            return []
        xy = np.array([[objs.agents[i].x, objs.agents[i].y] for i in vehicles])
        yaw = np.array([objs.agents[i].yaw for i in vehicles])
        lane_idx, lane_s, dist = index.match_many(xy, yaw, cfg.lane_match_max_heading_rad)
        out: list[_Constraint] = []
        for j, i in enumerate(vehicles):
            if lane_idx[j] < 0 or dist[j] > cfg.lane_match_max_distance_m:
                continue
            a = objs.agents[i]
            lane0 = index.lane_ids[lane_idx[j]]
            if lane0 in path.lane_ids:
                continue  # in the ego's own lanes: a leader or follower, not a conflict
            if self._will_stop_at_light(a, lane0, scene):
                continue  # it has a red light before the conflict: it stops, we go
            speed = math.hypot(a.vx, a.vy)
            reach = speed * PLAN_STEPS * PLAN_DT_S + 20.0
            # walk the agent's lanes (all branches: its route is unknown)
            frontier = [(lane0, -float(lane_s[j]))]  # (lane, offset of the lane start)
            seen = set()
            best: tuple | None = None  # (t_agent, s_cp, kind, agent distance, agent lane)
            while frontier:
                lid, off = frontier.pop()
                if lid in seen or off > reach or lid not in index.lanes:
                    continue
                seen.add(lid)
                if lid in ego_cps:
                    for c in index.conflicts[lid]:
                        if c.lane_b not in path.lane_ids:
                            continue
                        s_cp = path.path_s_of(c.lane_b, c.s_b)
                        if s_cp is None or s_cp < s_front - 1.0:
                            continue
                        d_agent = off + c.s_a - 0.5 * a.length
                        if d_agent < -a.length - 1.0:
                            continue  # already through
                        t_a = max(0.0, d_agent) / speed
                        if best is None or t_a < best[0]:
                            best = (t_a, s_cp, c.kind, d_agent, lid, c.clear_back_b, c.clear_back_a)
                g = index.lanes[lid]
                for succ in g.lane.successors:
                    frontier.append((succ, off + g.length))
            if best is None:
                continue
            t_a, s_cp, kind, d_agent, lane_b, clear_back, agent_back = best
            gap = cfg.merge_time_gap_s if kind == "merge" else cfg.crossing_time_gap_s
            d_ego = s_cp - s_front
            t_e = _time_to_cover(d_ego, v, cfg.idm_max_accel_mps2, v_max)
            t_e_clear = _time_to_cover(
                d_ego + self._front + self._rear + 0.5 * a.width + 1.0,
                v,
                cfg.idm_max_accel_mps2,
                v_max,
            )
            t_a_clear = (max(0.0, d_agent) + a.length + 2.0) / speed
            if kind == "merge":
                conflict = t_e - gap < t_a < t_e_clear + gap
            else:
                conflict = t_a - gap < t_e_clear and t_a_clear + gap > t_e
            ego_lane = path.lane_at(max(s_cp - 0.5, 0.0))
            agent_room = max(d_agent - agent_back, 0.1)
            trusts = speed * speed / (2.0 * agent_room) <= cfg.priority_trust_decel_mps2
            if ego_lane in index.ring_lanes and lane_b not in index.ring_lanes and trusts:
                conflict = False  # circulating: entering traffic yields to the ego
            if not conflict:
                continue
            # wait where the ego's lane is still clear of the other lane
            s_wait = s_cp - clear_back - cfg.conflict_stop_margin_m
            d_stop = s_wait - s_front
            if d_stop < 0.5 and v * v / (2 * max(d_ego, 0.1)) > cfg.conflict_commit_decel_mps2:
                continue  # committed: cannot stop before the conflict any more
            if d_stop < -cfg.conflict_commit_past_m:
                # the nose is past the waiting point: stopping now would stand in the other
                # lane, so go on (a vehicle that does enter the ego's path is still a leader)
                continue
            where = (
                "merging into the ego's lane"
                if kind == "merge"
                else "whose path crosses the ego path"
            )
            when = "before the ego" if t_a <= t_e else f"within {gap:.1f} s of the ego"
            desc = f"{_KIND_NAME[a.agent_class]} {where}, arriving {when}"
            f = self._factor(path, objs, i, v, desc)
            fy = CausalFactor(
                CausalFactorKind.YIELD_CONTROL,
                "wait before the merge" if kind == "merge" else "wait before the crossing",
                side=Side.AHEAD,
                distance_m=round(max(0.0, d_stop), 2),
                relative_speed_mps=round(-v, 2),
            )
            out.append(
                _Constraint(
                    s_wait,
                    0.0,
                    0.0,
                    cfg.stop_min_gap_m,
                    cfg.stop_time_headway_s,
                    LongitudinalDecision.YIELD,
                    (f, fy),
                    "yield",
                )
            )
        return out

    def _vru_caution(
        self, path: ReferencePath, objs: _Objects, offset: np.ndarray, v: float
    ) -> list[tuple[float, float, CausalFactor]]:
        """Stretches of the path to pass slowly: beside pedestrians and cyclists that stand
        or move close to the ego's corridor (they may step or swerve into it)."""
        cfg = self.cfg
        s_front = path.s_ego + self._front
        half = 0.5 * self._scene.ego.width
        out = []
        for i, a in enumerate(objs.agents):
            if a.agent_class not in _VRU or not objs.near[i] or objs.s_max[i] < s_front:
                continue
            d = float(offset[int(path.index(float(objs.s_c[i])))])
            gap = max(float(objs.l_min[i]) - d - half, d - half - float(objs.l_max[i]), 0.0)
            if gap > cfg.vru_caution_lateral_m:
                continue
            desc = f"{_KIND_NAME[a.agent_class]} close to the ego path"
            f = self._factor(path, objs, i, v, desc)
            out.append((float(objs.s_min[i]) - cfg.vru_caution_before_m, float(objs.s_max[i]), f))
        return out

    def _speed_envelope(
        self,
        path: ReferencePath,
        v: float,
        caution: list[tuple[float, float, CausalFactor]] = (),
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N,) highest speed at each path sample from which every lower speed ahead (limits,
        curves, caution stretches) is reachable at the adaptation decel; and (N,) the index
        that binds it."""
        cfg = self.cfg
        n = len(path.s)
        kappa = np.abs(path.curvature)
        if cfg.curve_speed_smoothing_m > path.ds:
            w = int(round(cfg.curve_speed_smoothing_m / path.ds))
            kappa = np.convolve(kappa, np.ones(w) / w, mode="same")
        v_curve = np.sqrt(cfg.max_lateral_accel_mps2 / np.maximum(kappa, 1e-4))
        v_lim = np.minimum(path.speed_limit_mps * cfg.speed_limit_fraction, v_curve)
        # which caution stretch (index into `caution`) caps each sample, -1: none
        self._caution_of = np.full(n, -1)
        self._caution = list(caution)
        for c, (s_a, s_b, _) in enumerate(caution):
            k0, k1 = int(path.index(max(s_a, 0.0))), int(path.index(s_b)) + 1
            capped = v_lim[k0:k1] > cfg.vru_caution_speed_mps
            v_lim[k0:k1][capped] = cfg.vru_caution_speed_mps
            self._caution_of[k0:k1][capped] = c
        # env(s_q)^2 = min_{j>=q} v_j^2 + 2 b (s_j - s_q): a suffix minimum (O(N), no loop)
        b = cfg.speed_adaptation_decel_mps2
        key = v_lim**2 + 2.0 * b * path.s
        rev = key[::-1]
        suffix = np.minimum.accumulate(rev)[::-1]
        # index of the binding sample: where the suffix minimum is attained
        arg = (
            n
            - 1
            - np.maximum.accumulate(np.where(rev == np.minimum.accumulate(rev), np.arange(n), 0))[
                ::-1
            ]
        )
        env = np.sqrt(np.maximum(suffix - 2.0 * b * path.s, 0.0))
        self._v_curve, self._v_lim_raw = v_curve, path.speed_limit_mps * cfg.speed_limit_fraction
        return env, arg

    def _rollout(
        self,
        path: ReferencePath,
        constraints: list[_Constraint],
        env: np.ndarray,
        v0: float,
        plan: _Plan,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int | None]:
        """IDM over 64 steps: accel (64,), speed (64,), distance travelled (65,), and the
        constraint that bound step 0 (index into constraints, None = free road)."""
        cfg = self.cfg
        dt = PLAN_DT_S
        a_max = cfg.passing_max_accel_mps2 if plan.passing else cfg.idm_max_accel_mps2
        b = cfg.idm_comfort_decel_mps2
        sqrt_ab = 2.0 * math.sqrt(a_max * b)
        pending = plan.pending
        v_cap = math.inf
        if pending is not None and pending.slow_to_mps is not None:
            v_cap = pending.slow_to_mps  # gap searching: slot in behind the blocking vehicle
        # Predicted rear position and speed of every constraint at every step, (C, 64):
        # constant velocity or constant acceleration until standstill.
        t_k = dt * np.arange(PLAN_STEPS)
        n_c = len(constraints)
        if n_c:
            s_r = np.array([c.s_rear for c in constraints])[:, None]
            v_c = np.array([c.v for c in constraints])[:, None]
            a_c = np.array([c.a for c in constraints])[:, None]
            braking = (a_c < 0.0) & (v_c > 0.0)
            t_stop = np.where(braking, v_c / np.where(braking, -a_c, 1.0), np.inf)
            t_eff = np.minimum(t_k[None, :], t_stop)
            pos_all = (s_r + v_c * t_eff + 0.5 * a_c * t_eff * t_eff).tolist()
            vel_all = np.maximum(0.0, v_c + a_c * t_eff).tolist()
        params = [(c.min_gap_m, c.headway_s) for c in constraints]
        # ACC blending (constant-acceleration heuristic) only for moving leaders: walls and
        # stopped objects keep plain IDM
        cah = [c.tag == "leader" and cfg.acc_coolness > 0.0 for c in constraints]
        acc_all = (
            np.where(t_k[None, :] < t_stop, a_c, 0.0).tolist() if n_c else []
        )  # (C, 64) predicted accel of each constraint
        self._a_free0 = 0.0
        self._a_cons0: list[float] = []
        ctx = (path, env, v0, v_cap, a_max, sqrt_ab, n_c, params, cah, acc_all)
        a_last = None
        if self._a_prev is not None and 0.0 < self._scene.timestamp - self._a_prev_t < 0.15:
            a_last = self._a_prev
        limited = cfg.comfort_jerk_up_mps3 > 0.0 and cfg.comfort_jerk_down_mps3 > 0.0
        if limited:
            out = self._idm_rollout(ctx, pos_all if n_c else [], vel_all if n_c else [], a_last)
            if not out[4]:
                # safety first: the jerk-limited plan would close in on a constraint (gap
                # below half its minimum, or unable to stop comfortably at the horizon's end)
                plan.notes.append("jerk limit waived")
                limited = False
        if not limited:
            out = self._idm_rollout(
                ctx, pos_all if n_c else [], vel_all if n_c else [], None, unlimited=True
            )
        accel, speed, dist, binding, _ = out
        self._a_prev, self._a_prev_t = float(accel[0]), self._scene.timestamp
        self._speed_profile = speed
        return accel, speed, dist, binding

    def _idm_rollout(
        self, ctx: tuple, pos_all: list, vel_all: list, a_last: float | None, unlimited=False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int | None, bool]:
        """One IDM/ACC rollout over the plan horizon: accel (64,), speed (64,), distance (65,),
        the constraint binding step 0, and whether every constraint keeps a safe gap. Unless
        `unlimited`, the command changes by at most the comfort jerk per step, starting from
        `a_last` (the previous plan's first command; None: free at step 0)."""
        cfg = self.cfg
        path, env, v0, v_cap, a_max, sqrt_ab, n_c, params, cah, acc_all = ctx
        dt = PLAN_DT_S
        b = cfg.idm_comfort_decel_mps2
        delta = cfg.idm_exponent
        coolness = cfg.acc_coolness
        s_front0 = path.s_ego + self._front
        up = cfg.comfort_jerk_up_mps3 * dt
        down = cfg.comfort_jerk_down_mps3 * dt
        accel = [0.0] * PLAN_STEPS
        speed = [0.0] * PLAN_STEPS
        dist = [0.0] * (PLAN_STEPS + 1)
        v, x = v0, 0.0
        binding = None
        safe = True
        a_cons0: list[float] = []
        ds = path.ds
        env_list = env.tolist()
        n_env = len(env_list) - 1
        max_decel = cfg.max_decel_mps2
        preview = cfg.speed_preview_s
        gap_decel = cfg.gap_search_max_decel_mps2
        gap0 = [pos_all[j][0] - s_front0 for j in range(n_c)]
        for k in range(PLAN_STEPS):
            # desired speed: the lower of here and a preview ahead (IDM's free term lags a
            # falling target; a rising one must wait until the ego is there)
            kk = int((s_front0 + x) / ds + 0.5)
            kk = n_env if kk > n_env else (0 if kk < 0 else kk)
            kp = int((s_front0 + x + v * preview) / ds + 0.5)
            kp = n_env if kp > n_env else (0 if kp < 0 else kp)
            vd = env_list[kk] if env_list[kk] < env_list[kp] else env_list[kp]
            if vd < 0.1:
                vd = 0.1
            free = a_max * (1.0 - (v / vd) ** delta)
            if v_cap < vd:
                # gap searching adjusts speed gently: it is a preference, not an obstacle
                a_gap = a_max * (1.0 - (v / max(v_cap, 0.1)) ** delta)
                if a_gap < -gap_decel:
                    a_gap = -gap_decel
                if a_gap < free:
                    free = a_gap
            a_cmd = free
            front = s_front0 + x
            for j in range(n_c):
                s0, hw = params[j]
                gap = pos_all[j][k] - front
                if not unlimited and gap < min(0.5 * s0, gap0[j]) - 1e-6:
                    safe = False
                v_l = vel_all[j][k]
                dv_term = v * hw + v * (v - v_l) / sqrt_ab
                s_star = s0 + (dv_term if dv_term > 0.0 else 0.0)
                g = gap if gap > 0.01 else 0.01
                a_j = free - a_max * (s_star / g) ** 2
                if cah[j] and gap > 0.01:
                    # Kesting, Treiber & Helbing (2010) ACC model: where plain IDM brakes
                    # harder than the constant-acceleration heuristic needs (a cut-in at a
                    # similar speed), blend towards CAH instead of over-reacting
                    a_l = min(acc_all[j][k], a_max)
                    if a_l < 0.0 and v_l * (v - v_l) <= -2.0 * g * a_l:
                        # it stops before the ego would reach it: match its stopping point
                        a_cah = v * v * a_l / (v_l * v_l - 2.0 * g * a_l)
                    else:
                        dv = v - v_l if v > v_l else 0.0
                        a_cah = a_l - dv * dv / (2.0 * g)
                    if a_j < a_cah:
                        a_j = (1.0 - coolness) * a_j + coolness * (
                            a_cah + b * math.tanh((a_j - a_cah) / b)
                        )
                if k == 0:
                    a_cons0.append(a_j)
                if a_j < a_cmd:
                    a_cmd = a_j
                    if k == 0:
                        binding = j
            if k == 0:
                self._a_free0, self._a_cons0 = free, a_cons0
            a_cmd = -max_decel if a_cmd < -max_decel else (a_max if a_cmd > a_max else a_cmd)
            if not unlimited and a_last is not None:
                lo, hi = a_last - down, a_last + up
                a_cmd = lo if a_cmd < lo else (hi if a_cmd > hi else a_cmd)
            v_next = v + a_cmd * dt
            if v_next < 0.0:
                v_next = 0.0
            accel[k] = (v_next - v) / dt
            a_last = a_cmd if v_next > 0.0 or a_cmd >= 0.0 else 0.0
            x += 0.5 * (v + v_next) * dt
            v = v_next
            speed[k], dist[k + 1] = v, x
        if not unlimited:
            # at the horizon's end the ego must still be able to stop comfortably behind each
            front = s_front0 + x
            b_end = cfg.jerk_limit_terminal_decel_mps2
            for j in range(n_c):
                v_l = vel_all[j][PLAN_STEPS - 1]
                room = pos_all[j][PLAN_STEPS - 1] - front - 0.5 * params[j][0]
                if v > v_l and (v * v - v_l * v_l) / (2.0 * b_end) > room:
                    safe = False
        return np.array(accel), np.array(speed), np.array(dist), binding, safe

    # ---- lateral controls -----------------------------------------------------------------------
    def _curvature_controls(
        self, path: ReferencePath, offset: np.ndarray, dist: np.ndarray
    ) -> np.ndarray:
        """Curvature of the offset path at the mid-point of each step's travel, (64,) 1/m."""
        cfg = self.cfg
        k0 = max(0, int(math.floor(path.s_ego / path.ds)))
        h = path.heading[k0:]
        nx, ny = -np.sin(h), np.cos(h)
        px = path.xy[k0:, 0] + offset[k0:] * nx
        py = path.xy[k0:, 1] + offset[k0:] * ny
        if len(px) < 3:
            return np.zeros(PLAN_STEPS)
        seg = np.hypot(np.diff(px), np.diff(py))
        arc = np.concatenate([[0.0], np.cumsum(seg)])
        theta = np.unwrap(np.arctan2(np.diff(py), np.diff(px)))
        w = int(round(cfg.curvature_smoothing_m / path.ds))
        if w > 1 and len(theta) > w:
            pad = np.concatenate([np.full(w, theta[0]), theta, np.full(w, theta[-1])])
            theta = np.convolve(pad, np.ones(w) / w, mode="same")[w:-w]
        mid_arc = 0.5 * (arc[:-1] + arc[1:])
        kappa = np.gradient(theta, mid_arc) if len(theta) > 1 else np.zeros(1)
        # the ego starts at the path's arc length s_ego, k0 is the sample at or before it
        start = path.s_ego - k0 * path.ds
        query = start + 0.5 * (dist[:-1] + dist[1:])
        curv = np.interp(query, mid_arc, kappa)
        return np.clip(curv, -cfg.max_curvature_per_m, cfg.max_curvature_per_m)

    # ---- the decision label ------------------------------------------------------------------
    def _decision(
        self,
        path: ReferencePath,
        constraints: list[_Constraint],
        binding: int | None,
        env: np.ndarray,
        env_cause: np.ndarray,
        v0: float,
        accel: np.ndarray,
        plan: _Plan,
    ) -> Decision:
        cfg = self.cfg
        s_front = path.s_ego + self._front
        k_front = int(path.index(s_front))
        limit_here = float(self._v_lim_raw[k_front])
        # the desired speed the rollout started from (the lower of here and the preview)
        k_prev = int(path.index(s_front + v0 * cfg.speed_preview_s))
        k_env = k_prev if env[k_prev] < env[k_front] else k_front
        factors: list[CausalFactor] = []
        long_dec = LongitudinalDecision.SET_SPEED_TRACKING
        target = float(env[k_env])
        bound = None
        if (
            binding is not None
            and self._a_cons0[binding] < self._a_free0 - cfg.binding_accel_threshold_mps2
        ):
            bound = constraints[binding]
        if (
            bound is not None
            and plan.pending is not None
            and bound.tag in ("lane_end", "static")
            and float(np.min(self._speed_profile)) > cfg.stationary_speed_mps
        ):
            # the wall ahead is why a gap is needed, and the ego is still looking for one
            bound = None
        if bound is not None:
            long_dec = bound.decision
            factors.extend(bound.factors)
            target = bound.v
            if bound.tag in ("light", "stop_sign", "yield", "lane_end") or (
                bound.tag == "static"
                and bound.decision != LongitudinalDecision.LEAD_OBSTACLE_FOLLOWING
            ):
                target = 0.0
            if (
                bound.tag == "static"
                and plan.pending is not None
                and plan.pending.blocker is not None
            ):
                factors.append(plan.pending.blocker)
        elif plan.pending is not None:
            p = plan.pending
            if p.merge:
                long_dec = LongitudinalDecision.YIELD
                if p.blocker is not None:
                    factors.append(p.blocker)
                factors.append(
                    CausalFactor(
                        CausalFactorKind.YIELD_CONTROL,
                        "yield to main-road traffic at the merge",
                        side=Side.AHEAD,
                        distance_m=p.factors[0].distance_m if p.factors else None,
                    )
                )
                factors.extend(p.factors)
            else:
                long_dec = LongitudinalDecision.GAP_SEARCHING
                factors.extend(p.factors)
                if p.blocker is not None:
                    factors.append(p.blocker)
        elif plan.passing and accel[0] >= cfg.passing_label_accel_mps2:
            long_dec = LongitudinalDecision.ACCELERATION_FOR_PASSING
            factors.extend(plan.lateral_factors[:1])
        else:
            j = int(env_cause[k_env])
            # the desired speed is below the limit here because of something ahead (or the
            # ego is above a limit it just entered): that is what the free-road IDM tracks
            margin = cfg.speed_adaptation_label_mps
            if env[k_env] < limit_here - margin or v0 > limit_here + margin:
                long_dec = LongitudinalDecision.SPEED_ADAPTATION
                if v0 > limit_here + margin and env[k_env] >= limit_here - margin:
                    factors.append(
                        CausalFactor(
                            CausalFactorKind.SPEED_LIMIT,
                            f"speed limit {limit_here:.1f} m/s here",
                            side=Side.NONE,
                            distance_m=0.0,
                        )
                    )
                elif self._caution_of[j] >= 0:
                    factors.append(self._caution[int(self._caution_of[j])][2])
                elif self._v_curve[j] < self._v_lim_raw[j] - 1e-6:
                    factors.append(
                        CausalFactor(
                            CausalFactorKind.LANE_GEOMETRY,
                            f"curve ahead (safe speed {self._v_curve[j]:.1f} m/s)",
                            side=Side.AHEAD,
                            distance_m=round(max(0.0, float(path.s[j]) - s_front), 2),
                        )
                    )
                else:
                    factors.append(
                        CausalFactor(
                            CausalFactorKind.SPEED_LIMIT,
                            f"lower speed limit {self._v_lim_raw[j]:.1f} m/s ahead",
                            side=Side.AHEAD,
                            distance_m=round(max(0.0, float(path.s[j]) - s_front), 2),
                        )
                    )
            else:
                factors.append(
                    CausalFactor(
                        CausalFactorKind.SPEED_LIMIT,
                        f"tracking the lane speed limit {limit_here:.1f} m/s",
                        side=Side.NONE,
                    )
                )
                target = min(limit_here, float(env[k_env]))
        lateral, side = plan.lateral, plan.lateral_side
        lat_factors = list(plan.lateral_factors)
        if lateral == LateralDecision.LANE_KEEPING:
            turn = self._turn(path, s_front)
            if turn is not None:
                lateral, side = LateralDecision.TURN, turn
                lat_factors.append(
                    CausalFactor(CausalFactorKind.ROUTING, f"route turns {turn.value}", side=turn)
                )
        for f in lat_factors:
            if not any(f.kind == g.kind and f.object_id == g.object_id for g in factors):
                factors.append(f)
        return Decision(
            longitudinal=long_dec,
            lateral=lateral,
            lateral_side=side,
            factors=tuple(factors),
            target_speed_mps=round(max(0.0, target), 2),
        )

    def _turn(self, path: ReferencePath, s_front: float) -> Side | None:
        k0 = int(path.index(path.s_ego))
        k1 = int(path.index(s_front + self.cfg.turn_lookahead_m))
        if k1 <= k0:
            return None
        change = float(path.heading[k1] - path.heading[k0])
        if abs(change) < self.cfg.turn_heading_change_rad:
            return None
        return Side.LEFT if change > 0 else Side.RIGHT
