"""Traffic control for the embedded highway-env simulator: lights, stop lines, right of way.

highway-env 1.12.1 has no traffic lights, and its stock background traffic crashes on its own
at junctions (measured 7 and 21 crashed vehicles over 10 seeds x 20 s in intersection-v0 and
-v2 with the ego removed): `RegulatedRoad` only predicts conflicts at constant speed, so a car
that stopped to yield sees no conflict and restarts into cross traffic. This module replaces
that with what a junction actually does:

* `UrbanIDMVehicle`: an IDM car whose parameters are per instance (the intersection env
  writes IDM parameters onto the class, which leaks into every later episode of the process)
  and which honours *stop requests*: a point on its route (lane key + arc length) where its
  front bumper must stop. IDM treats the point as a standing leader, so a car stops at the
  line exactly instead of 4.5-7.5 m short as it does behind an `Obstacle`, and no invisible
  object has to be hidden from the Scene converter or the collision check.
* `SignalController`: fixed-time phases (green, yellow, all-red) over any number of lights,
  mapped to `planner.types.TrafficLight` / `StopLine` with the lanes they control and the time
  to the next change.
* `IntersectionRightOfWay`: movements through the junction are reserved. Each tick the head of
  every approach asks for its movement; requests are served by lane priority, then arrival
  time; a movement is granted when the light allows it and no movement that geometrically
  crosses it is held (by a car inside, by the ego inside, or by a higher-priority request).
  A car without a grant gets a stop request at its stop line; a granted car that can no
  longer stop comfortably keeps its grant (point of no return), and a car past the line holds
  its movement until its rear has left the junction.
* `RoundaboutYield`: entering cars accept a gap in circulating traffic and otherwise stop at
  the yield line. The gap is judged in time at the merge point: no circulating car (nor one
  already merging from the previous entry) may arrive there between the entering car's own
  arrival (it accelerates from its current speed) and its clearing plus a headway. Circulating
  cars brake for a car that is already past its yield line, since IDM cannot see it before
  it is on their lane.

The simulator adapter restores IDMVehicle's class attributes before every build and removes
background wrecks as a safety net (`sim_eval.sim.highway`); with the control here the urban
families produce no wrecks to remove (tests count them).

Frames: everything here works in highway-env's frame (y to the right of travel); lights and
stop lines are handed out in REP-103 through `sim_eval.sim.convert`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from highway_env.road.road import Road, RoadNetwork
from highway_env.vehicle.behavior import IDMVehicle
from highway_env.vehicle.kinematics import Vehicle

from planner.taxonomy import LightState
from planner.types import StopLine, TrafficLight
from sim_eval.sim.convert import lane_id, stop_line_across

logger = logging.getLogger(__name__)

LaneKey = tuple[str, str]  # (from node, to node): urban maps have one lane per road segment


# ---- configs -----------------------------------------------------------------------------------
@dataclass
class UrbanIdmConfig:
    """Longitudinal behaviour of urban background cars (IDM, Treiber et al. 2000)."""

    comfort_accel_mps2: float = 2.5
    comfort_decel_mps2: float = 3.0  # the "b" of IDM (positive)
    max_brake_mps2: float = 7.0  # hard limit of the command (positive)
    max_accel_mps2: float = 4.0
    jam_gap_m: float = 2.0  # bumper-to-bumper gap at standstill behind a leader
    time_gap_s: float = 1.2
    delta: float = 4.0  # exponent of the free-road term
    stop_margin_m: float = 0.8  # front bumper to the stop line when stopped at it
    leader_search_m: float = 40.0  # leaders are looked for this far (+ speed x time gap)
    leader_lanes_ahead: int = 2  # ... on the current lane and this many next route lanes

    def __post_init__(self) -> None:
        for name in ("comfort_accel_mps2", "comfort_decel_mps2", "max_brake_mps2"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


@dataclass
class RightOfWayConfig:
    """Who may enter a junction, and when."""

    request_horizon_s: float = 4.0  # a head farther than this (time to its line) asks nothing
    request_zone_m: float = 35.0  # ... or farther than this distance
    min_eta_speed_mps: float = 1.0  # speed floor when turning distance into arrival time
    commit_reaction_s: float = 0.3  # point of no return: stop distance + this much travel
    corridor_half_width_m: float = 1.6  # half width of a movement's swept corridor
    junction_clear_m: float = 6.0  # a car holds its movement until this far into its exit
    stop_sign_zone_m: float = 3.0  # at a stop sign a car must stop this close to the line
    stopped_speed_mps: float = 0.3  # ... slower than this
    # roundabout gap acceptance
    critical_gap_s: float = 2.0  # headway kept behind an entering car that has just merged
    merge_pass_margin_s: float = 1.0  # a circulating car must clear the merge this much earlier
    merge_clear_m: float = 9.0  # a circulating car this close upstream always blocks entry
    downstream_clear_m: float = 8.0  # a slow car this close past the merge blocks entry
    downstream_slow_mps: float = 2.0
    merge_watch_m: float = 30.0  # circulating cars this close upstream brake for a merging car


@dataclass
class SignalTiming:
    """A fixed-time two-group cycle: group A green, yellow, all-red, group B the same."""

    green_a_s: float = 7.0
    green_b_s: float = 7.0
    yellow_s: float = 2.5
    all_red_s: float = 1.0

    def __post_init__(self) -> None:
        for name in ("green_a_s", "green_b_s", "yellow_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"signal {name} must be > 0 s, got {getattr(self, name)}")
        if self.all_red_s < 0:
            raise ValueError(f"signal all_red_s must be >= 0 s, got {self.all_red_s}")

    @property
    def cycle_s(self) -> float:
        return self.green_a_s + self.green_b_s + 2 * (self.yellow_s + self.all_red_s)


# ---- background vehicle -------------------------------------------------------------------
class UrbanIDMVehicle(IDMVehicle):
    """IDM car for junction traffic: per-instance parameters, stop requests, no reversing.

    `stop_requests[name] = (lane_key, s)` asks the car to stop its front bumper
    `cfg.stop_margin_m` before arc length `s` of lane `lane_key` on its route; controllers set
    and clear their own entry each tick. `route_keys` is the full planned path (lane keys)."""

    agent_kind = "vehicle"  # read by the Scene converter (planner AgentClass value)

    def __init__(
        self,
        road: Road,
        position: np.ndarray,
        heading: float,
        speed: float,
        route_keys: Sequence[LaneKey],
        target_speed_mps: float,
        cfg: UrbanIdmConfig,
    ) -> None:
        start = (route_keys[0][0], route_keys[0][1], 0)
        super().__init__(
            road,
            position,
            heading=heading,
            speed=speed,
            target_lane_index=start,
            target_speed=target_speed_mps,
            route=[start] + [(a, b, None) for a, b in route_keys[1:]],
            enable_lane_change=False,
        )
        self.route_keys: list[LaneKey] = list(route_keys)
        self.cfg = cfg
        # Per-instance IDM numbers (the class attributes are shared and may be polluted).
        self.COMFORT_ACC_MAX = cfg.comfort_accel_mps2
        self.COMFORT_ACC_MIN = -cfg.comfort_decel_mps2
        self.ACC_MAX = cfg.max_accel_mps2
        self.TIME_WANTED = cfg.time_gap_s
        self.DELTA = cfg.delta
        self.DISTANCE_WANTED = cfg.jam_gap_m + self.LENGTH  # centre to centre, as the library
        self.stop_requests: dict[str, tuple[LaneKey, float]] = {}
        self.lane_index = start
        self.lane = road.network.get_lane(start)

    # -- geometry along the route ---------------------------------------------------------
    @property
    def lane_key(self) -> LaneKey:
        return (self.target_lane_index[0], self.target_lane_index[1])

    def route_distance_to(self, lane_key: LaneKey, s: float) -> float | None:
        """Arc length from the car's centre to (lane_key, s) along its route; None if that
        lane is behind the car or not on its route."""
        cur = self.lane_key
        lane = self.road.network.get_lane(self.target_lane_index)
        s_cur = lane.local_coordinates(self.position)[0]
        if cur == lane_key:
            return s - s_cur
        try:
            i = self.route_keys.index(cur)
        except ValueError:
            return None
        dist = lane.length - s_cur
        for key in self.route_keys[i + 1 :]:
            if key == lane_key:
                return dist + s
            dist += self.road.network.get_lane((key[0], key[1], 0)).length
        return None

    # -- control ----------------------------------------------------------------------------
    def _idm(self, gap_m: float, closing_speed_mps: float) -> float:
        """IDM interaction term for a leader `gap_m` ahead (bumper to bumper)."""
        cfg = self.cfg
        v = max(self.speed, 0.0)
        s_star = (
            cfg.jam_gap_m
            + v * cfg.time_gap_s
            + v
            * closing_speed_mps
            / (2.0 * math.sqrt(cfg.comfort_accel_mps2 * cfg.comfort_decel_mps2))
        )
        return -cfg.comfort_accel_mps2 * (max(s_star, 0.0) / max(gap_m, 0.05)) ** 2

    def _leader(self, lane) -> tuple[object | None, float]:
        """Nearest road user ahead on this car's own path (current lane and the next lanes
        of its route, within `cfg.leader_lanes_ahead`), and the arc distance to it (centre
        to centre). Replaces the library's `neighbour_vehicles`, which projects every object
        onto every branch leaving a junction node (curved lanes: a slow Python loop) and
        measures the gap on the current lane only."""
        cfg = self.cfg
        x, y = float(self.position[0]), float(self.position[1])
        reach = cfg.leader_search_m + self.speed * cfg.time_gap_s
        s_self = lane.local_coordinates(self.position)[0]
        path = [(lane, 0.0)]
        key = self.lane_key
        if key in self.route_keys:
            offset = lane.length
            for nxt in self.route_keys[self.route_keys.index(key) + 1 :][: cfg.leader_lanes_ahead]:
                nxt_lane = self.road.network.get_lane((nxt[0], nxt[1], 0))
                path.append((nxt_lane, offset))
                offset += nxt_lane.length
        hx, hy = math.cos(self.heading), math.sin(self.heading)
        behind = -self.LENGTH  # anything further behind (along the heading) is not a leader
        best, best_s = None, math.inf
        for other in (*self.road.vehicles, *self.road.objects):
            if other is self:
                continue
            dx, dy = float(other.position[0]) - x, float(other.position[1]) - y
            if dx * dx + dy * dy > reach * reach or dx * hx + dy * hy < behind:
                continue
            for path_lane, offset in path:
                s, lat = path_lane.local_coordinates(other.position)
                if not path_lane.on_lane(other.position, s, lat, margin=1.0):
                    continue
                s += offset
                if s_self <= s < best_s:
                    best, best_s = other, s
                break
        return best, best_s - s_self

    def act(self, action: dict | str | None = None) -> None:
        if self.crashed:
            return
        cfg = self.cfg
        self.follow_road()
        steering = float(
            np.clip(
                self.steering_control(self.target_lane_index),
                -self.MAX_STEERING_ANGLE,
                self.MAX_STEERING_ANGLE,
            )
        )
        lane = self.road.network.get_lane(self.target_lane_index)
        v = max(self.speed, 0.0)
        v0 = min(self.target_speed, lane.speed_limit) if lane.speed_limit else self.target_speed
        accel = cfg.comfort_accel_mps2 * (1.0 - (v / max(v0, 0.1)) ** cfg.delta)
        free = accel
        front, d = self._leader(lane)
        if front is not None:
            gap = d - 0.5 * (self.LENGTH + getattr(front, "LENGTH", self.LENGTH))
            closing = float(np.dot(self.velocity - front.velocity, self.direction))
            accel = free + self._idm(gap, closing)
        for lane_key, s_stop in self.stop_requests.values():
            dist = self.route_distance_to(lane_key, s_stop)
            if dist is None:
                continue
            gap = dist - 0.5 * self.LENGTH - cfg.stop_margin_m
            if gap < -cfg.stop_margin_m:  # already past the line: the request is stale
                continue
            accel = min(accel, free + self._idm(gap + cfg.jam_gap_m, v))
        accel = float(np.clip(accel, -cfg.max_brake_mps2, cfg.max_accel_mps2))
        Vehicle.act(self, {"steering": steering, "acceleration": accel})

    def step(self, dt: float) -> None:
        super().step(dt)
        if self.speed < 0.0:  # IDM braking at standstill would otherwise drive backwards
            self.speed = 0.0

    def on_state_update(self) -> None:
        # The followed lane is the car's lane unless it drifted off it: skips the library's
        # search over every lane of the map (the costliest part of a junction step).
        lane = self.road.network.get_lane(self.target_lane_index)
        if lane.on_lane(self.position, margin=0.5):
            self.lane_index = self.target_lane_index
            self.lane = lane
        else:
            super().on_state_update()


# ---- traffic lights ------------------------------------------------------------------------
@dataclass
class LightSpec:
    """One light: which signal group it belongs to and where it stops traffic."""

    id: str
    group: str  # "a" or "b"
    lane_key: LaneKey  # approach lane that ends at the stop line
    stop_s: float  # arc length of the stop line on that lane
    controlled_keys: tuple[LaneKey, ...] = ()  # movements it governs (connectors)


class SignalController:
    """Fixed-time lights. `offset_s` shifts the cycle: state(t) = phase at (t + offset_s)."""

    def __init__(self, lights: Sequence[LightSpec], timing: SignalTiming, offset_s: float = 0.0):
        groups = {spec.group for spec in lights}
        if not groups <= {"a", "b"}:
            raise ValueError(f"signal groups must be 'a' or 'b', got {sorted(groups)}")
        self.lights = {spec.id: spec for spec in lights}
        self.timing = timing
        self.offset_s = float(offset_s)
        g = timing
        # (end time within the cycle, state of group a, state of group b)
        self._phases = []
        t = 0.0
        for dur, a, b in (
            (g.green_a_s, LightState.GREEN, LightState.RED),
            (g.yellow_s, LightState.YELLOW, LightState.RED),
            (g.all_red_s, LightState.RED, LightState.RED),
            (g.green_b_s, LightState.RED, LightState.GREEN),
            (g.yellow_s, LightState.RED, LightState.YELLOW),
            (g.all_red_s, LightState.RED, LightState.RED),
        ):
            if dur > 0:
                t += dur
                self._phases.append((t, a, b))

    def state(self, light_id: str, t: float) -> tuple[LightState, float]:
        """(state, seconds until that light changes state) at simulation time t."""
        group = self.lights[light_id].group
        cycle = self.timing.cycle_s
        tau = (t + self.offset_s) % cycle
        idx = next(i for i, ph in enumerate(self._phases) if tau < ph[0])
        state = self._phases[idx][1 if group == "a" else 2]
        remaining = self._phases[idx][0] - tau
        # Consecutive phases can keep this group's colour (red through all-red and the other
        # group's green): add them up so time_to_change is the time to a real change.
        j = idx
        for _ in range(len(self._phases)):
            j = (j + 1) % len(self._phases)
            if self._phases[j][1 if group == "a" else 2] != state:
                break
            prev_end = self._phases[j - 1][0] if j > 0 else 0.0
            remaining += self._phases[j][0] - prev_end
        return state, remaining

    @staticmethod
    def offset_for_green_in(timing: SignalTiming, group: str, wait_s: float) -> float:
        """Cycle offset at which `group` turns green `wait_s` seconds after t = 0 (wait_s
        must be shorter than the time that group is not green in a cycle)."""
        start_green = 0.0 if group == "a" else timing.green_a_s + timing.yellow_s + timing.all_red_s
        return (start_green - wait_s) % timing.cycle_s

    def _lane_ids(self, spec: LightSpec) -> tuple[str, ...]:
        keys = (spec.lane_key, *spec.controlled_keys)
        return tuple(lane_id((a, b, 0)) for a, b in keys)

    def stop_lines(self, network: RoadNetwork) -> list[StopLine]:
        """One REP-103 `StopLine` per light, across its approach lane at the line."""
        return [
            replace(
                stop_line_across(
                    network,
                    [(spec.lane_key[0], spec.lane_key[1], 0)],
                    spec.stop_s,
                    f"stop_{spec.id}",
                    light_id=spec.id,
                ),
                lane_ids=self._lane_ids(spec),
            )
            for spec in self.lights.values()
        ]

    def traffic_lights(self, t: float) -> list[TrafficLight]:
        """The lights at time t, with the lanes they control (the approach lane and the
        movements leaving it) and the seconds until each changes."""
        out = []
        for spec in self.lights.values():
            state, ttc = self.state(spec.id, t)
            out.append(
                TrafficLight(
                    spec.id,
                    state,
                    stop_line_id=f"stop_{spec.id}",
                    lane_ids=self._lane_ids(spec),
                    time_to_change_s=float(ttc),
                )
            )
        return out


# ---- right of way --------------------------------------------------------------------------
@dataclass
class Approach:
    """A lane that ends at a stop or yield line, with the junction movements leaving it."""

    name: str
    lane_key: LaneKey
    stop_s: float  # arc length of the line on lane_key
    light_id: str | None = None
    movements: tuple[LaneKey, ...] = ()  # connector lanes that start at the line
    stop_sign: bool = False  # cars must come to a stop at the line before they may go


@dataclass
class _Request:
    approach: Approach
    movement: LaneKey | None  # None: unknown (ego off its route); blocks nothing, gets nothing
    dist_m: float  # front bumper to the line
    eta_s: float
    priority: int
    vehicle: Vehicle | None  # None for the ego (not ours to stop)


@dataclass
class RightOfWayStats:
    grants: int = 0
    line_overruns: int = 0  # background cars that crossed a line without a grant


def _front_dist_to_line(road: Road, approach: Approach, vehicle: Vehicle) -> float | None:
    """Front bumper to the approach's line for a vehicle on the approach lane, else None."""
    lane = road.network.get_lane((approach.lane_key[0], approach.lane_key[1], 0))
    s, lat = lane.local_coordinates(vehicle.position)
    if not lane.on_lane(vehicle.position, s, lat, margin=0.5):
        return None
    return approach.stop_s - (s + 0.5 * vehicle.LENGTH)


class _JunctionControl:
    """Shared bookkeeping: queue heads, stop requests, point of no return, commitment."""

    request_name = "junction"

    def __init__(
        self, road: Road, approaches: Sequence[Approach], cfg: RightOfWayConfig, idm: UrbanIdmConfig
    ):
        self.road = road
        self.approaches = {a.name: a for a in approaches}
        self.cfg = cfg
        self.idm = idm
        self.stats = RightOfWayStats()
        # Keyed by the car objects themselves (not id(): ids of removed cars get reused)
        self._granted: set[Vehicle] = set()  # background cars granted last tick
        self._committed: dict[Vehicle, LaneKey] = {}  # car past its line -> held movement
        self._stopped_at_sign: set[Vehicle] = set()  # cars that made their stop at a sign
        self._approach_of_key = {a.lane_key: a for a in approaches}

    def _movement_of(self, vehicle: UrbanIDMVehicle, approach: Approach) -> LaneKey | None:
        keys = vehicle.route_keys
        if approach.lane_key in keys:
            i = keys.index(approach.lane_key)
            if i + 1 < len(keys):
                return keys[i + 1]
        return None

    def _background_requests(
        self, vehicles: Iterable[Vehicle]
    ) -> tuple[list[_Request], list[UrbanIDMVehicle]]:
        """Approaching background cars (all of them, nearest first per approach) and the
        list of cars already past a line (whose movements stay held)."""
        approaching: list[_Request] = []
        inside: list[UrbanIDMVehicle] = []
        cfg = self.cfg
        for v in vehicles:
            if not isinstance(v, UrbanIDMVehicle) or v.crashed:
                continue
            vid = v
            if vid in self._committed:
                inside.append(v)
                continue
            keys = v.route_keys
            approach = next(
                (self._approach_of_key[k] for k in keys if k in self._approach_of_key), None
            )
            if approach is None or v.lane_key not in keys:
                v.stop_requests.pop(self.request_name, None)
                continue
            i_cur, i_app = keys.index(v.lane_key), keys.index(approach.lane_key)
            movement = self._movement_of(v, approach)
            if i_cur > i_app + 1:  # already beyond its movement
                v.stop_requests.pop(self.request_name, None)
                continue
            if i_cur == i_app + 1:
                # on its movement (the followed lane switches half a car before the line,
                # possibly between two ticks): inside the junction
                dist = -1.0
            else:
                dist = v.route_distance_to(approach.lane_key, approach.stop_s)
                if dist is None:
                    continue
                dist -= 0.5 * v.LENGTH
            if dist < 0.0:  # front past the line
                if vid not in self._granted:
                    self.stats.line_overruns += 1
                    logger.debug("background car crossed %s without a grant", approach.name)
                if movement is not None:
                    self._committed[vid] = movement
                    inside.append(v)
                v.stop_requests.pop(self.request_name, None)
                continue
            eta = dist / max(v.speed, cfg.min_eta_speed_mps)
            prio = self._priority(movement)
            approaching.append(_Request(approach, movement, dist, eta, prio, v))
        return approaching, inside

    def _priority(self, movement: LaneKey | None) -> int:
        if movement is None:
            return -1
        return int(self.road.network.get_lane((movement[0], movement[1], 0)).priority)

    def _release_finished(self, vehicles: list[Vehicle]) -> None:
        alive = set(vehicles)
        self._stopped_at_sign &= alive
        for vid in list(self._committed):
            v = vid if vid in alive else None
            if v is None or not isinstance(v, UrbanIDMVehicle):
                del self._committed[vid]
                continue
            held = self._committed[vid]
            if v.lane_key == held:
                continue
            keys = v.route_keys
            if held in keys and v.lane_key in keys and keys.index(v.lane_key) > keys.index(held):
                lane = self.road.network.get_lane(v.target_lane_index)
                s = lane.local_coordinates(v.position)[0]
                # travelled past the junction: rear bumper clear of the movement's end
                if (
                    keys.index(v.lane_key) > keys.index(held) + 1
                    or s - 0.5 * v.LENGTH > self.cfg.junction_clear_m
                ):
                    del self._committed[vid]
            elif v.lane_key not in keys:
                del self._committed[vid]

    def _cannot_stop(self, req: _Request) -> bool:
        v = req.vehicle.speed if req.vehicle is not None else 0.0
        stop_dist = v * v / (2.0 * self.idm.comfort_decel_mps2) + v * self.cfg.commit_reaction_s
        return req.dist_m < stop_dist

    def _apply(self, requests: list[_Request], granted: set[Vehicle]) -> None:
        for req in requests:
            v = req.vehicle
            if v is None:
                continue
            if v in granted:
                v.stop_requests.pop(self.request_name, None)
            else:
                v.stop_requests[self.request_name] = (req.approach.lane_key, req.approach.stop_s)
        self.stats.grants += len(granted - self._granted)
        self._granted = granted


class IntersectionRightOfWay(_JunctionControl):
    """Movement reservation at a signalised or unsignalised intersection (see module doc)."""

    def __init__(
        self,
        road: Road,
        approaches: Sequence[Approach],
        cfg: RightOfWayConfig,
        idm: UrbanIdmConfig,
        signals: SignalController | None = None,
    ):
        super().__init__(road, approaches, cfg, idm)
        self.signals = signals
        from shapely.geometry import LineString
        from shapely.prepared import prep

        self._corridor = {}
        self._origin = {}
        for a in approaches:
            for m in a.movements:
                lane = road.network.get_lane((m[0], m[1], 0))
                s = np.linspace(0.0, lane.length, max(2, int(lane.length) + 1))
                pts = np.array([lane.position(si, 0.0) for si in s])
                self._corridor[m] = LineString(pts).buffer(cfg.corridor_half_width_m)
                self._origin[m] = a.name
        self._prepared = {m: prep(poly) for m, poly in self._corridor.items()}
        # conflicts[m] = movements from other approaches whose corridors overlap m's
        self.conflicts: dict[LaneKey, frozenset[LaneKey]] = {}
        for m, poly in self._corridor.items():
            self.conflicts[m] = frozenset(
                o
                for o, other in self._corridor.items()
                if self._origin[o] != self._origin[m] and poly.intersects(other)
            )
        self._area = None
        for poly in self._corridor.values():
            self._area = poly if self._area is None else self._area.union(poly)
        self._area_prepared = prep(self._area)

    def _ego_occupied(self, ego: Vehicle) -> set[LaneKey]:
        from shapely.geometry import Polygon

        box = Polygon(ego.polygon()[:4])
        if not self._area_prepared.intersects(box):
            return set()
        return {m for m, poly in self._prepared.items() if poly.intersects(box)}

    def _light_allows(self, req: _Request, t: float) -> bool:
        if self.signals is None or req.approach.light_id is None:
            return True
        state, _ = self.signals.state(req.approach.light_id, t)
        if state == LightState.GREEN:
            return True
        return state == LightState.YELLOW and self._cannot_stop(req)

    def update(
        self,
        t: float,
        vehicles: list[Vehicle],
        ego: Vehicle | None = None,
        ego_movement: tuple[str, LaneKey] | None = None,
    ) -> None:
        """One control tick. `ego_movement = (approach name, connector key)` of the ego's
        route lets background cars give way to an ego that has priority."""
        self._release_finished(vehicles)
        requests, inside = self._background_requests(vehicles)
        held: set[LaneKey] = {self._committed[v] for v in inside}
        if ego is not None:
            held |= self._ego_occupied(ego)
            if ego_movement is not None:
                approach = self.approaches[ego_movement[0]]
                dist = _front_dist_to_line(self.road, approach, ego)
                if dist is not None and dist >= 0.0:
                    eta = dist / max(ego.speed, self.cfg.min_eta_speed_mps)
                    requests.append(
                        _Request(
                            approach,
                            ego_movement[1],
                            dist,
                            eta,
                            self._priority(ego_movement[1]),
                            None,
                        )
                    )
        # Only the first car of each approach competes; those behind wait for it.
        heads: dict[str, _Request] = {}
        for req in requests:
            cur = heads.get(req.approach.name)
            if cur is None or req.dist_m < cur.dist_m:
                heads[req.approach.name] = req
        granted: set[Vehicle] = set()
        claimed = set(held)
        # Cars granted last tick that can no longer stop comfortably keep their grant.
        ordered = []
        for req in heads.values():
            keep = (
                req.vehicle is not None
                and req.vehicle in self._granted
                and self._cannot_stop(req)
                and req.movement is not None
            )
            if keep:
                granted.add(req.vehicle)
                claimed.add(req.movement)
            else:
                ordered.append(req)
        ordered.sort(key=lambda r: (-r.priority, r.eta_s))
        for req in ordered:
            if req.movement is None:
                continue
            if req.approach.stop_sign and req.vehicle is not None:
                vid = req.vehicle
                if (
                    req.dist_m <= self.cfg.stop_sign_zone_m
                    and req.vehicle.speed <= self.cfg.stopped_speed_mps
                ):
                    self._stopped_at_sign.add(vid)
                if vid not in self._stopped_at_sign:
                    continue  # not stopped yet: it neither goes nor claims
            near = req.eta_s <= self.cfg.request_horizon_s or req.dist_m <= 1.0
            if not near or req.dist_m > self.cfg.request_zone_m:
                continue
            if not self._light_allows(req, t):
                continue
            free = not (self.conflicts[req.movement] & claimed)
            # A waiting car with priority still claims its movement: lower-priority cars must
            # not slip in front of it (the ego's claim works the same way).
            claimed.add(req.movement)
            if free and req.vehicle is not None:
                granted.add(req.vehicle)
        self._apply(requests, granted)


class RoundaboutYield(_JunctionControl):
    """Gap acceptance at roundabout entries; circulating traffic has priority."""

    def __init__(
        self,
        road: Road,
        approaches: Sequence[Approach],
        ring_keys: Sequence[LaneKey],
        cfg: RightOfWayConfig,
        idm: UrbanIdmConfig,
    ):
        super().__init__(road, approaches, cfg, idm)
        self.ring_keys = list(ring_keys)
        self._ring_start: dict[LaneKey, float] = {}
        pos = 0.0
        for key in self.ring_keys:
            self._ring_start[key] = pos
            pos += road.network.get_lane((key[0], key[1], 0)).length
        self.circumference_m = pos
        self._merge_pos: dict[str, float] = {}
        self._merge_key: dict[str, LaneKey] = {}
        for a in approaches:
            merge_key = next(k for k in self.ring_keys if k[0] == a.lane_key[1])
            self._merge_pos[a.name] = self._ring_start[merge_key]
            self._merge_key[a.name] = merge_key

    def ring_position(self, vehicle: Vehicle) -> float | None:
        """Arc position of the vehicle's centre on the ring, or None when not on it."""
        if isinstance(vehicle, UrbanIDMVehicle):
            key = vehicle.lane_key
            if key not in self._ring_start:
                return None
            lane = self.road.network.get_lane(vehicle.target_lane_index)
            return self._ring_start[key] + lane.local_coordinates(vehicle.position)[0]
        for key, start in self._ring_start.items():
            lane = self.road.network.get_lane((key[0], key[1], 0))
            s, lat = lane.local_coordinates(vehicle.position)
            if lane.on_lane(vehicle.position, s, lat, margin=0.5):
                return start + s
        return None

    def _merging_position(self, vehicle: Vehicle) -> float | None:
        """Virtual ring position (before its merge point) of a car on an entry curve that is
        past its yield line or holds a grant: it will be on the ring before others notice."""
        for a in self.approaches.values():
            lane = self.road.network.get_lane((a.lane_key[0], a.lane_key[1], 0))
            if isinstance(vehicle, UrbanIDMVehicle):
                if vehicle.lane_key != a.lane_key:
                    continue
                s = lane.local_coordinates(vehicle.position)[0]
            else:
                s, lat = lane.local_coordinates(vehicle.position)
                if not lane.on_lane(vehicle.position, s, lat, margin=0.5):
                    continue
            past_line = s + 0.5 * vehicle.LENGTH >= a.stop_s
            if past_line or vehicle in self._granted:
                return (self._merge_pos[a.name] - max(lane.length - s, 0.0)) % self.circumference_m
            return None
        return None

    def _exits_before(self, vehicle: Vehicle, merge_pos: float, pos: float) -> bool:
        """True when a circulating background car leaves the ring before the merge point."""
        if not isinstance(vehicle, UrbanIDMVehicle):
            return False
        keys = vehicle.route_keys
        ring_on_route = [k for k in keys if k in self._ring_start]
        if not ring_on_route:
            return False
        last = ring_on_route[-1]
        end = self._ring_start[last] + self.road.network.get_lane((last[0], last[1], 0)).length
        ahead_end = (end - pos) % self.circumference_m
        ahead_merge = (merge_pos - pos) % self.circumference_m
        return ahead_end < ahead_merge

    def _entry_times(self, req: _Request) -> tuple[float, float]:
        """(front reaches the merge point, rear clears it) in seconds for an entering car
        that accelerates at the comfortable rate up to the ring's speed limit."""
        v = req.vehicle
        a = self.approaches[req.approach.name]
        entry = self.road.network.get_lane((a.lane_key[0], a.lane_key[1], 0))
        to_merge = max(req.dist_m, 0.0) + max(entry.length - a.stop_s, 0.0)
        ring = self.road.network.get_lane(
            (self._merge_key[a.name][0], self._merge_key[a.name][1], 0)
        )
        v_max = max(float(ring.speed_limit), 1.0)
        acc = self.idm.comfort_accel_mps2

        def time_to(dist: float) -> float:
            v0 = min(max(v.speed, 0.0), v_max)
            d_acc = (v_max**2 - v0**2) / (2.0 * acc)  # distance to reach v_max
            if dist <= d_acc:
                return (-v0 + math.sqrt(v0 * v0 + 2.0 * acc * dist)) / acc
            return (v_max - v0) / acc + (dist - d_acc) / v_max

        return time_to(to_merge), time_to(to_merge + v.LENGTH)

    def _gap_ok(self, req: _Request, circulating: list[tuple[Vehicle, float]]) -> bool:
        """Accept the gap when no circulating car reaches the merge point between the
        entering car's arrival (minus a margin) and its clearing (plus the critical
        headway), given how long the entering car itself needs to get there."""
        approach = req.approach
        merge = self._merge_pos[approach.name]
        c = self.circumference_m
        cfg = self.cfg
        t_front, t_clear = self._entry_times(req)
        for v, pos in circulating:
            upstream = (merge - pos) % c  # distance along the ring to the merge point
            downstream = (pos - merge) % c
            if downstream < cfg.downstream_clear_m + 0.5 * v.LENGTH:
                if v.speed < cfg.downstream_slow_mps:
                    return False
                continue
            if self._exits_before(v, merge, pos):
                continue
            if upstream < cfg.merge_clear_m + 0.5 * v.LENGTH:
                return False
            speed = max(v.speed, cfg.min_eta_speed_mps)
            ring_front = (upstream - 0.5 * v.LENGTH) / speed
            ring_rear = (upstream + 0.5 * v.LENGTH) / speed
            if (
                ring_rear > t_front - cfg.merge_pass_margin_s
                and ring_front < t_clear + cfg.critical_gap_s
            ):
                return False
        return True

    def update(self, t: float, vehicles: list[Vehicle], ego: Vehicle | None = None) -> None:
        self._release_finished(vehicles)
        requests, _inside = self._background_requests(vehicles)
        users = list(vehicles)
        if ego is not None and ego not in users:
            users.append(ego)
        users = [
            v for v in users if getattr(v, "agent_kind", "vehicle") == "vehicle" and not v.crashed
        ]
        circulating = []
        for v in users:
            pos = self.ring_position(v)
            if pos is None:
                pos = self._merging_position(v)
            if pos is not None:
                circulating.append((v, pos))
        heads: dict[str, _Request] = {}
        for req in requests:
            cur = heads.get(req.approach.name)
            if cur is None or req.dist_m < cur.dist_m:
                heads[req.approach.name] = req
        granted: set[Vehicle] = set()
        for req in heads.values():
            if req.vehicle in self._granted and self._cannot_stop(req):
                granted.add(req.vehicle)
            elif req.dist_m <= self.cfg.request_zone_m and self._gap_ok(req, circulating):
                granted.add(req.vehicle)
        self._apply(requests, granted)
        self._protect_merges(users, circulating)

    def _protect_merges(self, users: list[Vehicle], circulating: list[tuple[Vehicle, float]]):
        """Circulating background cars brake for a car (background or ego) that is already
        past its yield line and merging: it is not on their lane yet, so IDM cannot see it."""
        merging: list[tuple[LaneKey, float, float]] = []  # (ring key at merge, pos, rear gap)
        for a in self.approaches.values():
            lane = self.road.network.get_lane((a.lane_key[0], a.lane_key[1], 0))
            for v in users:
                if isinstance(v, UrbanIDMVehicle):
                    if v.lane_key != a.lane_key:
                        continue
                    s = lane.local_coordinates(v.position)[0]
                else:
                    s, lat = lane.local_coordinates(v.position)
                    if not lane.on_lane(v.position, s, lat, margin=0.5):
                        continue
                if s + 0.5 * v.LENGTH < a.stop_s:
                    continue  # still behind its yield line
                behind_merge = max(lane.length - s, 0.0) + 0.5 * v.LENGTH  # its rear, to merge
                merging.append((self._merge_key[a.name], self._merge_pos[a.name], behind_merge))
        c = self.circumference_m
        for v, pos in circulating:
            if not isinstance(v, UrbanIDMVehicle):
                continue
            best: tuple[float, tuple[LaneKey, float]] | None = None
            for key, merge, behind in merging:
                upstream = (merge - pos) % c  # this car's centre to the merge point
                room = upstream - behind - 0.5 * v.LENGTH  # its front to the merging car's rear
                if room <= 0.0 or upstream > self.cfg.merge_watch_m:
                    continue  # alongside or past it already, or far away
                if self._exits_before(v, merge, pos):
                    continue
                if best is None or room < best[0]:
                    best = (room, (key, -behind))
            if best is None:
                v.stop_requests.pop("merge", None)
            else:
                v.stop_requests["merge"] = best[1]
