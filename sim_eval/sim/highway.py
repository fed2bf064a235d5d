"""The embedded simulator: highway-env's road, vehicles and traffic models, stepped directly.

Why not `gym.make(...)` + `env.step`: the observation (pandas, ~10 ms) and reward code cost
more than the physics, continuous actions crash the merge and roundabout envs, and the stock
envs change IDM class attributes globally. So the adapter builds the road itself through a
scenario family (`sim_eval.sim.families`), steps it (`road.act()`, ego control,
`road.step(1 / sim_hz)`), advances time itself, and converts the raw state to `Scene`s
(`sim_eval.sim.convert`). The static map is converted once per episode.

The ego is an `EgoVehicle`: a kinematic bicycle about the rear axle (the project's reference
point) with physical limits from `SimConfig.vehicle`, driven by the trajectory follower.
Same spec + seed -> bit-identical episode (all randomness comes from the seed; highway-env's
behaviour class attributes are restored before every build).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import deque
from typing import Any

import numpy as np

from planner.types import (
    EgoState,
    InvalidInputError,
    Scene,
    Trajectory,
)
from sim_eval.scenarios import ScenarioSpec
from sim_eval.sim.base import Simulator, StepInfo
from sim_eval.sim.config import SimConfig, load_sim_config
from sim_eval.sim.convert import (
    MapCache,
    RouteProgress,
    agent_from_object,
    build_map,
    build_route,
    lane_id,
)
from sim_eval.sim.families import (
    FamilySetup,
    UnknownFamilyError,
    World,
    agent_class_of,
    get_family,
    is_hidden,
)
from sim_eval.sim.follower import ControlState, TrajectoryFollower

log = logging.getLogger(__name__)

STEP_S = 0.1  # one Simulator.step, whatever the substep rate


# ---- highway-env class-attribute guard --------------------------------------------------
def _behaviour_classes() -> list[type]:
    from highway_env.vehicle import behavior, controller, kinematics

    return [
        kinematics.Vehicle,
        controller.ControlledVehicle,
        controller.MDPVehicle,
        behavior.IDMVehicle,
        behavior.LinearVehicle,
        behavior.AggressiveVehicle,
        behavior.DefensiveVehicle,
    ]


# Stock IDM values (highway-env 1.12.1) that the intersection env overwrites globally.
_STOCK_IDM = {"DISTANCE_WANTED": 10.0, "COMFORT_ACC_MAX": 3.0, "COMFORT_ACC_MIN": -5.0}


def _snapshot_class_attributes() -> dict[type, dict[str, Any]]:
    snap: dict[type, dict[str, Any]] = {}
    for cls in _behaviour_classes():
        snap[cls] = {
            k: v
            for k, v in vars(cls).items()
            if k.isupper() and isinstance(v, (int, float, list, tuple))
        }
    from highway_env.vehicle.behavior import IDMVehicle

    snap[IDMVehicle].update(_STOCK_IDM)  # in case a stock env ran before this import
    return snap


_CLASS_SNAPSHOT: dict[type, dict[str, Any]] | None = None


def restore_behaviour_defaults() -> None:
    """Put highway-env's behaviour class attributes back to their stock values, so that an
    env that changed them (intersection) cannot leak into the next episode."""
    global _CLASS_SNAPSHOT
    if _CLASS_SNAPSHOT is None:
        _CLASS_SNAPSHOT = _snapshot_class_attributes()
    for cls, attrs in _CLASS_SNAPSHOT.items():
        for k, v in attrs.items():
            if vars(cls).get(k) != v:
                setattr(cls, k, list(v) if isinstance(v, list) else v)


# ---- a faster Road -------------------------------------------------------------------------
def _make_fast_road_classes():
    from highway_env.road.lane import StraightLane
    from highway_env.road.road import Road, RoadNetwork
    from highway_env.vehicle.objects import Landmark

    class FastRoadNetwork(RoadNetwork):
        """`RoadNetwork` whose `get_closest_lane_index` (every vehicle, every substep) scores
        all straight lanes with one numpy expression; other lanes use the stock distance.
        Same formula as the stock loop (position distance + |heading difference|, first
        minimum wins)."""

        _lane_cache: tuple | None = None
        _lane_key: tuple | None = None
        _lane_tuples: list | None = None
        SMALL_MAP_LANES = 12  # up to this many lanes the closest-lane search is a Python loop

        def add_lane(self, _from, _to, lane) -> None:
            super().add_lane(_from, _to, lane)
            self._lane_cache = None

        def lane_arrays(self):
            """Every lane (graph order) with the straight ones' geometry as arrays:
            (items, straight, starts, dirs, lats, lengths, headings, position_of_lane)."""
            key = (
                len(self.graph),
                sum(len(ids) for tos in self.graph.values() for ids in tos.values()),
            )
            if self._lane_cache is None or self._lane_key != key:
                items = [
                    ((f, t, i), ln)
                    for f, tos in self.graph.items()
                    for t, ids in tos.items()
                    for i, ln in enumerate(ids)
                ]
                straight = np.array([type(ln) is StraightLane for _, ln in items], dtype=bool)
                zero = np.zeros(2)

                def attr(ln, name, default):  # only straight lanes' attributes are used
                    return getattr(ln, name) if type(ln) is StraightLane else default

                starts = np.array([attr(ln, "start", zero) for _, ln in items], dtype=float)
                dirs = np.array([attr(ln, "direction", zero) for _, ln in items], dtype=float)
                lats = np.array(
                    [attr(ln, "direction_lateral", zero) for _, ln in items], dtype=float
                )
                lengths = np.array([float(ln.length) for _, ln in items])
                headings = np.array([float(attr(ln, "heading", 0.0)) for _, ln in items])
                position_of = {id(ln): k for k, (_, ln) in enumerate(items)}
                self._lane_cache = (
                    items,
                    straight,
                    starts,
                    dirs,
                    lats,
                    lengths,
                    headings,
                    position_of,
                )
                # plain floats for small maps: a Python loop beats numpy's call overhead
                self._lane_tuples = [
                    (
                        bool(straight[k]),
                        *(float(v) for v in starts[k]),
                        *(float(v) for v in dirs[k]),
                        *(float(v) for v in lats[k]),
                        float(lengths[k]),
                        float(headings[k]),
                    )
                    for k in range(len(items))
                ]
                self._lane_key = key
            return self._lane_cache

        def get_closest_lane_index(self, position, heading=None):
            items, straight, starts, dirs, lats, lengths, headings, _ = self.lane_arrays()
            if not items:
                return super().get_closest_lane_index(position, heading)
            if len(items) <= self.SMALL_MAP_LANES:
                px, py = float(position[0]), float(position[1])
                best, best_k = math.inf, 0
                for k, (is_straight, sx, sy, dx, dy, lx, ly, length, hdg) in enumerate(
                    self._lane_tuples
                ):
                    if is_straight:
                        ex, ey = px - sx, py - sy
                        s_ = ex * dx + ey * dy
                        r_ = ex * lx + ey * ly
                        d = abs(r_) + max(s_ - length, 0) + max(0 - s_, 0)
                        if heading is not None:
                            d += abs(((heading - hdg + math.pi) % (2 * math.pi)) - math.pi)
                    else:
                        d = items[k][1].distance_with_heading(position, heading)
                    if d < best:  # strict: the first minimum wins, as np.argmin
                        best, best_k = d, k
                return items[best_k][0]
            delta = np.asarray(position, dtype=float) - starts  # (L, 2)
            s = (delta * dirs).sum(axis=1)
            r = (delta * lats).sum(axis=1)
            dist = np.abs(r) + np.maximum(s - lengths, 0) + np.maximum(0 - s, 0)
            if heading is not None:
                angle = ((heading - headings + np.pi) % (2 * np.pi)) - np.pi
                dist = dist + np.abs(angle)
            for k in np.flatnonzero(~straight):
                dist[k] = items[k][1].distance_with_heading(position, heading)
            return items[int(np.argmin(dist))][0]

    class FastRoad(Road):
        """highway-env's `Road` with the two O(N^2) loops vectorised, same results:

        - `neighbour_vehicles` (called 1-3 times per IDM car per substep): during an `act()`
          pass nothing moves, so every object is projected once per pass on each lane that
          a search needs (numpy for straight lanes, the lane's own `local_coordinates` for
          curved ones) and each search only selects from those rows. Outside a pass the
          stock method runs.
        - `step` runs the stock collision handler only for pairs that pass the stock
          bounding-circle pre-check, computed for all pairs at once.
        Written by hand because highway-env offers no spatial index; the stock code is the
        reference semantics (ties resolve as in the stock loops) and a test checks that
        episodes are bit-identical to the stock classes."""

        _positions: np.ndarray | None = None
        _candidates: list | None = None
        _index: dict | None = None
        _search: dict | None = None
        _rows: dict | None = None
        _proj_s: np.ndarray | None = None
        _proj_lat: np.ndarray | None = None

        def act(self) -> None:
            self._candidates = [
                o for o in (*self.vehicles, *self.objects) if not isinstance(o, Landmark)
            ]
            self._positions = np.array(
                [o.position for o in self._candidates], dtype=np.float64
            ).reshape(-1, 2)
            self._index = {id(o): k for k, o in enumerate(self._candidates)}
            self._search = {}
            self._rows = {}
            if isinstance(self.network, FastRoadNetwork):
                # every object projected on every straight lane at once: (L, M) arrays
                _, _, starts, dirs, lats, _, _, _ = self.network.lane_arrays()
                delta = self._positions[None, :, :] - starts[:, None, :]  # (L, M, 2)
                self._proj_s = (delta * dirs[:, None, :]).sum(-1)
                self._proj_lat = (delta * lats[:, None, :]).sum(-1)
            try:
                super().act()
            finally:
                self._candidates = self._positions = self._index = None
                self._search = self._rows = self._proj_s = self._proj_lat = None

        def _lane_rows(self, lane) -> tuple[np.ndarray, np.ndarray]:
            """(s (M,), on (M,)) of every object on `lane` for this pass: the stock
            `local_coordinates` and `on_lane(margin=1)`."""
            hit = self._rows.get(id(lane))
            if hit is not None:
                return hit
            k = None
            if self._proj_s is not None and type(lane) is StraightLane:
                k = self.network.lane_arrays()[7].get(id(lane))
            if k is not None:
                s_row, lat_row = self._proj_s[k], self._proj_lat[k]
                half = lane.width / 2.0 + 1.0
            else:
                coords = [lane.local_coordinates(p) for p in self._positions]
                s_row = np.array([c[0] for c in coords], dtype=float).reshape(-1)
                lat_row = np.array([c[1] for c in coords], dtype=float).reshape(-1)
                half = np.array([lane.width_at(sv) / 2.0 + 1.0 for sv in s_row]).reshape(-1)
            on = (
                (np.abs(lat_row) <= half)
                & (s_row >= -lane.VEHICLE_LENGTH)
                & (s_row < lane.length + lane.VEHICLE_LENGTH)
            )
            self._rows[id(lane)] = (s_row, on)
            return s_row, on

        def _search_lanes(self, lane_index):
            """The stock search list of `lane_index`: (lane, offset) for the lane, the next
            lanes and the previous lanes (cached for the pass)."""
            hit = self._search.get(lane_index)
            if hit is not None:
                return hit
            lane = self.network.get_lane(lane_index)
            lanes_offsets = [(lane, 0.0)]
            if self.neighbour_vehicles_connected_lanes:
                _from, _to, _id = lane_index
                for next_lanes in self.network.graph.get(_to, {}).values():
                    if _id < len(next_lanes):
                        lanes_offsets.append((next_lanes[_id], lane.length))
                    elif next_lanes:
                        lanes_offsets.append((next_lanes[0], lane.length))
                for to_dict in self.network.graph.values():
                    if _from in to_dict:
                        prev_lanes = to_dict[_from]
                        if _id < len(prev_lanes):
                            prev_lane = prev_lanes[_id]
                        elif prev_lanes:
                            prev_lane = prev_lanes[0]
                        else:
                            continue
                        lanes_offsets.append((prev_lane, -prev_lane.length))
            offsets = np.array([off for _, off in lanes_offsets], dtype=float)
            self._search[lane_index] = (lane, lanes_offsets, offsets)
            return self._search[lane_index]

        def neighbour_vehicles(self, vehicle, lane_index=None):
            if self._candidates is None:  # outside an act() pass: the stock search
                return super().neighbour_vehicles(vehicle, lane_index)
            lane_index = lane_index or vehicle.lane_index
            if not lane_index:
                return None, None
            if not self._candidates:
                return None, None
            lane, lanes_offsets, offsets = self._search_lanes(lane_index)
            rows = [self._lane_rows(ln) for ln, _ in lanes_offsets]
            s_v = np.stack([r[0] for r in rows])  # (L, M)
            on = np.stack([r[1] for r in rows])
            s = lane.local_coordinates(vehicle.position)[0]
            matched = on.any(axis=0)  # (M,)
            self_k = self._index.get(id(vehicle), -1)
            if self_k >= 0:
                matched[self_k] = False
            idx = np.flatnonzero(matched)
            if len(idx) == 0:
                return None, None
            first = on[:, idx].argmax(axis=0)  # the first search lane that holds each object
            sv = s_v[first, idx] + offsets[first]
            cands = self._candidates
            v_front = v_rear = None
            is_front = sv >= s
            if is_front.any():
                vals = sv[is_front]
                v_front = cands[idx[is_front][vals == vals.min()][-1]]  # stock: last tie wins
            if (~is_front).any():
                vals = sv[~is_front]
                v_rear = cands[idx[~is_front][vals == vals.max()][0]]  # stock: first tie kept
            return v_front, v_rear

        def step(self, dt: float) -> None:
            for vehicle in self.vehicles:
                vehicle.step(dt)
            n = len(self.vehicles)
            if n == 0:
                return
            vpos = np.array([v.position for v in self.vehicles], dtype=np.float64)
            vdiag = np.array([v.diagonal for v in self.vehicles])
            vspeed = np.array([float(v.speed) for v in self.vehicles])
            # stock pre-check: skip when |p_j - p_i| > (d_i + d_j) / 2 + speed_i * dt
            dist = np.sqrt(((vpos[:, None, :] - vpos[None, :, :]) ** 2).sum(-1))
            reach = (vdiag[:, None] + vdiag[None, :]) / 2.0 + vspeed[:, None] * dt
            close_vv = np.triu(dist <= reach, k=1)
            if self.objects:
                opos = np.array([o.position for o in self.objects], dtype=np.float64)
                odiag = np.array([o.diagonal for o in self.objects])
                dist_o = np.sqrt(((vpos[:, None, :] - opos[None, :, :]) ** 2).sum(-1))
                reach_o = (vdiag[:, None] + odiag[None, :]) / 2.0 + vspeed[:, None] * dt
                close_vo = dist_o <= reach_o
            else:
                close_vo = np.zeros((n, 0), dtype=bool)
            for i in np.flatnonzero(close_vv.any(axis=1) | close_vo.any(axis=1)):
                vehicle = self.vehicles[i]
                for j in np.flatnonzero(close_vv[i]):
                    vehicle.handle_collisions(self.vehicles[j], dt)
                for j in np.flatnonzero(close_vo[i]):
                    vehicle.handle_collisions(self.objects[j], dt)

    return FastRoad, FastRoadNetwork


_FAST_ROAD = None
_FAST_NETWORK = None


def fast_road_class():
    """`FastRoad` (see `_make_fast_road_classes`)."""
    global _FAST_ROAD, _FAST_NETWORK
    if _FAST_ROAD is None:
        _FAST_ROAD, _FAST_NETWORK = _make_fast_road_classes()
    return _FAST_ROAD


def fast_network_class():
    """`FastRoadNetwork` (see `_make_fast_road_classes`)."""
    fast_road_class()
    return _FAST_NETWORK


# ---- the ego ------------------------------------------------------------------------------
def _make_ego_class():
    from highway_env.vehicle.kinematics import Vehicle

    class EgoVehicle(Vehicle):
        """Kinematic bicycle about the rear axle (REP-103 internal state, highway-env
        `position`/`heading` kept in sync for collisions and the other vehicles).

        Commands are (acceleration, steering angle positive LEFT); speed is clamped to
        [0, max_speed] (highway-env's own model would drive backwards when braking)."""

        def __init__(self, road, position, heading, speed, limits):
            self.LENGTH = float(limits.length_m)
            self.WIDTH = float(limits.width_m)
            super().__init__(road, position, heading, speed)
            self.limits = limits
            self.accel_cmd = 0.0
            self.steer_cmd = 0.0
            self.realised_accel = 0.0
            self.steer = 0.0
            r = limits.rear_axle_to_center_m
            yaw = -float(heading)
            self.rear = np.array(
                [float(position[0]) - r * math.cos(yaw), -float(position[1]) - r * math.sin(yaw)]
            )
            self.yaw = yaw

        def act(self, action=None) -> None:  # commands come from the follower
            return

        def step(self, dt: float) -> None:
            lim = self.limits
            accel, steer = self.accel_cmd, self.steer_cmd
            if self.crashed:  # a wreck brakes to a stop, wheels straight
                accel, steer = -lim.max_decel_mps2, 0.0
            v0 = float(self.speed)
            v1 = float(np.clip(v0 + accel * dt, 0.0, lim.max_speed_mps))
            self.realised_accel = (v1 - v0) / dt
            v_mid = 0.5 * (v0 + v1)
            dyaw = v_mid * math.tan(steer) / lim.wheelbase_m * dt
            yaw_mid = self.yaw + 0.5 * dyaw
            self.rear = self.rear + v_mid * dt * np.array([math.cos(yaw_mid), math.sin(yaw_mid)])
            self.yaw = self.yaw + dyaw
            self.steer = steer
            self.speed = v1
            self._sync()
            if self.impact is not None:  # highway-env's collision response
                self.position = self.position + self.impact
                self.rear = self.rear + np.array([self.impact[0], -self.impact[1]])
                self.crashed = True
                self.impact = None
            self.on_state_update()

        def _sync(self) -> None:
            r = self.limits.rear_axle_to_center_m
            self.position = np.array(
                [
                    self.rear[0] + r * math.cos(self.yaw),
                    -(self.rear[1] + r * math.sin(self.yaw)),
                ]
            )
            self.heading = -self.yaw

        @property
        def curvature(self) -> float:
            return math.tan(self.steer) / self.limits.wheelbase_m

    return EgoVehicle


_EGO_CLASS = None


def ego_vehicle_class():
    """The EgoVehicle class (built lazily so importing this module stays cheap)."""
    global _EGO_CLASS
    if _EGO_CLASS is None:
        _EGO_CLASS = _make_ego_class()
    return _EGO_CLASS


# ---- the simulator ------------------------------------------------------------------------
class HighwayEnvSimulator(Simulator):
    """`Simulator` on highway-env (see module docstring)."""

    def __init__(self, config: SimConfig | None = None):
        self.config = config if config is not None else load_sim_config()
        self.world: World | None = None
        self.setup: FamilySetup | None = None
        self.map_cache: MapCache | None = None
        self._info = StepInfo()
        self._scene: Scene | None = None

    # -- Simulator API ----------------------------------------------------------------------
    @property
    def info(self) -> StepInfo:
        return self._info

    @property
    def time_s(self) -> float:
        return self.world.time_s if self.world is not None else 0.0

    def reset(self, scenario: ScenarioSpec, seed: int | None = None) -> Scene:
        cfg = self.config
        if seed is not None and int(seed) != scenario.seed:
            scenario = dataclasses.replace(scenario, seed=int(seed))
        seed = int(scenario.seed)
        try:
            family = get_family(scenario.family)
        except UnknownFamilyError as exc:
            raise InvalidInputError(f"scenario {scenario.name!r}: {exc}") from None
        restore_behaviour_defaults()
        params = {**family.defaults, **dict(scenario.params)}
        unknown = sorted(set(scenario.params) - set(family.defaults))
        if unknown and family.defaults:
            raise InvalidInputError(
                f"scenario {scenario.name!r}: unknown parameter(s) {unknown} for family "
                f"{family.name!r}; valid: {sorted(family.defaults)}"
            )
        family_seq, road_seq = np.random.SeedSequence(seed).spawn(2)
        road = fast_road_class()(
            network=fast_network_class()(),
            vehicles=[],
            road_objects=[],
            np_random=np.random.default_rng(road_seq),
            record_history=False,
            neighbour_vehicles_connected_lanes=True,
        )
        world = World(
            road=road,
            rng=np.random.default_rng(family_seq),
            params=params,
            config=cfg,
            spec=scenario,
        )
        setup = family(world)
        self.world, self.setup = world, setup
        self.duration_s = float(scenario.duration_s)

        # ego
        start = setup.ego_start
        lane = road.network.get_lane(start.lane_index)
        position = lane.position(start.longitudinal_m, -start.lateral_left_m)
        heading = float(lane.heading_at(start.longitudinal_m))
        ego = ego_vehicle_class()(road, position, heading, float(start.speed_mps), cfg.vehicle)
        ego.cocdrive_id = "ego"
        road.vehicles.insert(0, ego)
        world.ego = ego

        # static map and route, once per episode
        self.map_cache = build_map(
            road.network,
            name=setup.map_name,
            step_m=cfg.lane_sample_step_m,
            sliver_buffer_m=cfg.roundabout_sliver_buffer_m,
            stop_lines=setup.stop_lines,
        )
        route_start = max(0.0, start.longitudinal_m - cfg.vehicle.rear_axle_to_center_m)
        self.route = build_route(
            road.network,
            list(setup.route.lanes),
            route_start,
            setup.route.end_longitudinal_m,
            setup.route.command,
            step_m=cfg.route_waypoint_step_m,
        )
        self._progress = RouteProgress(self.route)
        self._progress_m = self._progress.update(ego.rear)

        self.follower = TrajectoryFollower(cfg.follower, cfg.vehicle, cfg.actuation_delay_s)
        self._next_agent_id = 0
        self._stuck_s = 0.0
        self._background_crashes = 0  # vehicles involved in crashes without the ego
        self._info = StepInfo()
        self._collided_with: str | None = None

        rows = max(1, int(round(cfg.history_s / STEP_S)))
        self._history: deque[np.ndarray] = deque(maxlen=rows)
        ego_state = self._ego_state()
        # warm start: the ego drove here at its initial speed and heading (a repeated pose
        # would read as a car that was standing still)
        for k in range(rows - 1, 0, -1):
            back = ego_state.speed * k * STEP_S
            self._history.append(
                np.array(
                    [
                        ego_state.t - k * STEP_S,
                        ego_state.x - back * math.cos(ego_state.yaw),
                        ego_state.y - back * math.sin(ego_state.yaw),
                        ego_state.yaw,
                        ego_state.speed,
                        0.0,
                        0.0,
                    ]
                )
            )
        self._history.append(ego_state.as_row())
        if cfg.actuation_delay_s > 0:
            self.follower.hold_initial(ego_state, world.time_s)
        self._scene = self._make_scene(ego_state)
        return self._scene

    def step(self, trajectory: Trajectory) -> Scene:
        if self.world is None or self._scene is None:
            raise RuntimeError("HighwayEnvSimulator.step called before reset()")
        if self._info.done:
            raise RuntimeError(
                f"episode already ended ({self._info.reason}); call reset() for a new one"
            )
        if not isinstance(trajectory, Trajectory):
            raise InvalidInputError(
                f"step() needs a planner.types.Trajectory, got {type(trajectory).__name__}"
            )
        trajectory.validate()
        cfg = self.config
        world = self.world
        road = world.road
        ego = world.ego
        self.follower.submit(trajectory, self._scene.ego, self._scene.timestamp)
        for hook in self.setup.step_hooks:
            hook(world)
        dt = 1.0 / cfg.sim_hz
        for _ in range(cfg.substeps):
            road.act()
            rear = ego.rear
            accel, steer = self.follower.control(
                world.time_s, ControlState(rear[0], rear[1], ego.yaw, float(ego.speed)), dt
            )
            ego.accel_cmd, ego.steer_cmd = accel, steer
            road.step(dt)
            # integer substep count keeps time exact (no float drift over an episode)
            world.time_s = round((world.time_s + dt) * cfg.sim_hz) / cfg.sim_hz
            if ego.crashed and self._collided_with is None:
                self._collided_with = self._find_collider()
        self._remove_wrecks()
        ego_state = self._ego_state()
        self._history.append(ego_state.as_row())
        self._progress_m = self._progress.update(ego.rear)
        self._update_termination(ego_state)
        self._scene = self._make_scene(ego_state)
        return self._scene

    # -- state -> Scene -----------------------------------------------------------------------
    def _ego_state(self) -> EgoState:
        ego = self.world.ego
        lim = self.config.vehicle
        return EgoState(
            t=float(self.world.time_s),
            x=float(ego.rear[0]),
            y=float(ego.rear[1]),
            yaw=float((ego.yaw + math.pi) % (2 * math.pi) - math.pi),
            speed=float(ego.speed),
            accel=float(ego.realised_accel),
            curvature=float(ego.curvature),
            length=lim.length_m,
            width=lim.width_m,
            rear_axle_to_center_m=lim.rear_axle_to_center_m,
        )

    def _agent_id(self, obj: Any) -> str:
        aid = getattr(obj, "cocdrive_id", None)
        if aid is None:
            from highway_env.vehicle.kinematics import Vehicle

            prefix = "veh" if isinstance(obj, Vehicle) else "obj"
            aid = f"{prefix}{self._next_agent_id}"
            self._next_agent_id += 1
            obj.cocdrive_id = aid
        return aid

    def _make_scene(self, ego_state: EgoState) -> Scene:
        world, setup = self.world, self.setup
        road, ego = world.road, world.ego
        radius2 = self.config.agent_radius_m**2
        ex, ey = float(ego.position[0]), float(ego.position[1])
        agents = []
        for obj in (*road.vehicles, *road.objects):
            if obj is ego or is_hidden(obj):
                continue
            aid = self._agent_id(obj)  # ids are assigned on first sight, in road order
            dx, dy = float(obj.position[0]) - ex, float(obj.position[1]) - ey
            if dx * dx + dy * dy > radius2:
                continue
            agents.append(agent_from_object(obj, aid, agent_class_of(obj)))
        if setup.extra_agents is not None:
            agents.extend(setup.extra_agents(world))
        lights = setup.traffic_lights(world) if setup.traffic_lights is not None else []
        return Scene(
            timestamp=float(world.time_s),
            ego=ego_state,
            ego_history=np.stack(self._history),
            agents=agents,
            map=self.map_cache.map,
            route=self.route,
            traffic_lights=list(lights),
            metadata={
                "source": "highway-env",
                "family": world.spec.family,
                "scenario": world.spec.name,
                "seed": int(world.spec.seed),
                "params": setup.metadata,
                "route_progress_m": float(self._progress_m),
                "ego_lane_id": lane_id(ego.lane_index) if ego.lane_index else None,
                "ego_heading_hw": float(ego.heading),
                "collision": bool(ego.crashed),
                "collided_with": self._collided_with,
                "background_crashed_vehicles": self._background_crashes,
                "sim_hz": self.config.sim_hz,
                "actuation_delay_s": self.config.actuation_delay_s,
            },
        )

    # -- events -----------------------------------------------------------------------------
    def _find_collider(self) -> str | None:
        """Id of the object the ego hit: the nearest box within 0.5 m of the ego's box
        (highway-env's collision response may already have pushed the boxes apart)."""
        from shapely.geometry import Polygon

        ego = self.world.ego
        poly = Polygon(ego.polygon())
        best, best_d = None, 0.5
        for obj in (*self.world.road.vehicles, *self.world.road.objects):
            if obj is ego or not getattr(obj, "collidable", True):
                continue
            if float(np.linalg.norm(obj.position - ego.position)) > 15.0:
                continue
            d = poly.distance(Polygon(obj.polygon()))
            if d <= best_d:
                best, best_d = obj, d
        return self._agent_id(best) if best is not None else None

    def _remove_wrecks(self) -> None:
        """Count background crashes (vehicles crashed among themselves, not with the ego) and,
        unless the family keeps them, remove the wrecks after `wreck_removal_s`: the ego is
        evaluated in traffic that behaves."""
        world = self.world
        ego = world.ego
        keep = []
        for v in world.road.vehicles:
            if v is ego or not getattr(v, "crashed", False):
                keep.append(v)
                continue
            since = getattr(v, "cocdrive_crashed_at", None)
            if since is None:  # first seen crashed (an attribute: ids of removed objects recur)
                since = v.cocdrive_crashed_at = world.time_s
                hit_ego = ego.crashed and float(np.linalg.norm(v.position - ego.position)) < 10.0
                if not hit_ego:
                    self._background_crashes += 1
            near_ego = ego.crashed and float(np.linalg.norm(v.position - ego.position)) < 10.0
            if (
                not self.setup.remove_background_wrecks
                or near_ego
                or world.time_s - since < self.config.wreck_removal_s
            ):
                keep.append(v)
            else:
                log.debug("removing background wreck %s at t=%.1f", self._agent_id(v), world.time_s)
        if len(keep) != len(world.road.vehicles):
            world.road.vehicles[:] = keep

    def _update_termination(self, ego_state: EgoState) -> None:
        cfg = self.config
        info = StepInfo(done=False, reason="", events={})
        if self.world.ego.crashed:
            info.events["collision"] = True
            info.events["collided_with"] = self._collided_with
        if ego_state.speed < cfg.stuck_speed_mps:
            self._stuck_s += STEP_S
        else:
            self._stuck_s = 0.0
        info.events["route_progress_m"] = float(self._progress_m)
        info.events["background_crashed_vehicles"] = self._background_crashes
        if self.world.ego.crashed and cfg.ego_collision_ends_episode:
            info.done, info.reason = True, "ego_collision"
        elif self._progress_m >= float(self.route.length_m) - cfg.route_complete_margin_m:
            info.done, info.reason = True, "route_complete"
        elif cfg.stuck_timeout_s > 0 and self._stuck_s >= cfg.stuck_timeout_s:
            info.done, info.reason = True, "stuck"
        elif self.world.time_s >= self.duration_s - 1e-9:
            info.done, info.reason = True, "time_limit"
        self._info = info
