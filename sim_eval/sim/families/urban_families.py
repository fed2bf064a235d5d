"""Urban scenario families: roundabout, unprotected and signalised intersections, and
pedestrians or cyclists crossing or riding at the road edge.

The maps are built here rather than taken from highway-env's intersection/roundabout envs:
the geometry is then a parameter (junction size, turn radii, ring radius) and none of the
stock envs' side effects run (their IDM class attributes, per-step spawning, RegulatedRoad's
constant-speed yielding that crashes). All geometry is in highway-env's frame (y DOWN, which
is to the right of travel for +x; the screen shows the REP-103 world, so "left turn" below is
a left turn in REP-103 too) with right-hand traffic and one lane per direction.

Background cars are `UrbanIDMVehicle`s governed by `sim_eval.sim.traffic_control` (right of
way, lights) and `sim_eval.sim.vulnerable` (crosswalks). New cars enter at the far end of an
arm once per simulated second (never per 0.1 s step: the cost and the density stay flat), and
leave near the far end of their exit.

Parameters: a `[low, high]` default is a range drawn from the episode seed, a number is fixed;
a suite may override either through `params`. What was drawn is in `FamilySetup.metadata`.
The ego always enters from the south arm (REP-103 heading north) so that a route command
(`left`, `right`, `straight`) reads the same in every episode; its route ends a few metres
into its exit and is short enough to finish within the 20 s episode after any wait the family
can impose (red phases are bounded by `max_red_wait_s`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from highway_env.road.lane import AbstractLane, CircularLane, LineType, StraightLane
from highway_env.road.road import RoadNetwork

from planner.config import load_config
from planner.paths import config_path
from planner.taxonomy import AgentClass, Command
from planner.types import StopLine
from sim_eval.sim.convert import stop_line_across
from sim_eval.sim.families import (
    EgoStart,
    FamilySetup,
    LaneIndex,
    RouteSpec,
    World,
    register_family,
)
from sim_eval.sim.traffic_control import (
    Approach,
    IntersectionRightOfWay,
    LaneKey,
    LightSpec,
    RightOfWayConfig,
    RoundaboutYield,
    SignalController,
    SignalTiming,
    UrbanIdmConfig,
    UrbanIDMVehicle,
)
from sim_eval.sim.vulnerable import (
    Crosser,
    CrosswalkControl,
    CrosswalkLane,
    EdgeRider,
    VulnerableConfig,
)

DEFAULT_URBAN_TRAFFIC_CONFIG = config_path("urban_traffic.yaml")
LANE_WIDTH_M = AbstractLane.DEFAULT_WIDTH  # 4 m
EGO_ARM = 1  # the arm at highway-env angle 90 deg (+y down): REP-103 south
SPAWN_PERIOD_S = 1.0  # new background cars are considered once per simulated second
N, C, S = LineType.NONE, LineType.CONTINUOUS, LineType.STRIPED


@dataclass
class UrbanTrafficConfig:
    """Behaviour of urban background traffic, pedestrians and cyclists (YAML:
    configs/urban_traffic.yaml). Scenario geometry and densities are family parameters
    instead (they vary per episode)."""

    idm: UrbanIdmConfig = field(default_factory=UrbanIdmConfig)
    right_of_way: RightOfWayConfig = field(default_factory=RightOfWayConfig)
    vulnerable: VulnerableConfig = field(default_factory=VulnerableConfig)


def load_urban_traffic_config(
    path: str | Path | None = DEFAULT_URBAN_TRAFFIC_CONFIG,
    overrides: Sequence[str] = (),
) -> UrbanTrafficConfig:
    """Defaults, updated by the YAML file (when it exists), then by `key.sub=value`."""
    if path is not None and not Path(path).is_file() and Path(path) == DEFAULT_URBAN_TRAFFIC_CONFIG:
        path = None
    return load_config(UrbanTrafficConfig, path, tuple(overrides))


@functools.lru_cache(maxsize=1)
def _traffic_config() -> UrbanTrafficConfig:
    # read once per process: every episode of a run uses the same behaviour
    return load_urban_traffic_config()


def _key(index: LaneIndex | LaneKey) -> LaneKey:
    return (index[0], index[1])


def _idx(key: LaneKey) -> LaneIndex:
    return (key[0], key[1], 0)


def _right_of(direction: np.ndarray) -> np.ndarray:
    """Unit vector to the right of travel in highway-env's frame (= StraightLane lateral +)."""
    return np.array([-direction[1], direction[0]])


def _arc_lane(
    center: np.ndarray,
    radius: float,
    start: np.ndarray,
    end: np.ndarray,
    start_direction: np.ndarray,
    **kw: Any,
) -> CircularLane:
    """A CircularLane from point `start` to `end` on the circle (center, radius), leaving
    `start` along `start_direction` (picks the rotation sense and the phase span)."""
    p0 = math.atan2(start[1] - center[1], start[0] - center[0])
    p1 = math.atan2(end[1] - center[1], end[0] - center[0])
    increasing = float(np.dot(start_direction, [-math.sin(p0), math.cos(p0)])) > 0
    span = (p1 - p0) % (2 * math.pi) if increasing else (p0 - p1) % (2 * math.pi)
    return CircularLane(
        center, radius, p0, p0 + span if increasing else p0 - span, clockwise=increasing, **kw
    )


def _command_for(network: RoadNetwork, first: LaneKey, last: LaneKey) -> Command:
    """Turn command from the heading change between two lanes (REP-103 yaw = -heading)."""
    h0 = network.get_lane(_idx(first)).heading_at(0.0)
    lane = network.get_lane(_idx(last))
    h1 = lane.heading_at(lane.length)
    dyaw = -((h1 - h0 + math.pi) % (2 * math.pi) - math.pi)
    if dyaw > math.radians(45):
        return Command.LEFT
    if dyaw < -math.radians(45):
        return Command.RIGHT
    return Command.STRAIGHT


# ---- background traffic -------------------------------------------------------------------
@dataclass
class TrafficSource:
    """Where new cars enter (the far end of an arm) and the routes they may take."""

    entry: LaneKey
    routes: list[list[LaneKey]]  # each starts with `entry`


@dataclass
class BackgroundTraffic:
    """Spawns and retires `UrbanIDMVehicle`s; everything random comes from `rng`."""

    sources: list[TrafficSource]
    rng: np.random.Generator
    idm: UrbanIdmConfig
    spawn_prob_per_s: float  # per source and second
    max_vehicles: int
    speed_factor: tuple[float, float] = (0.8, 1.0)  # of the lane speed limit
    spawn_clear_m: float = 18.0  # no spawn while a road user is this close to the spawn point
    retire_before_end_m: float = 6.0  # cars vanish this close to the end of their last lane
    spawned: int = 0

    def place(
        self,
        road: Any,
        route: Sequence[LaneKey],
        longitudinal_m: float,
        speed_mps: float | None = None,
    ) -> UrbanIDMVehicle:
        lane = road.network.get_lane(_idx(route[0]))
        limit = float(lane.speed_limit)
        target = limit * float(self.rng.uniform(*self.speed_factor))
        v = UrbanIDMVehicle(
            road,
            lane.position(longitudinal_m, 0.0),
            lane.heading_at(longitudinal_m),
            target if speed_mps is None else speed_mps,
            route,
            target,
            self.idm,
        )
        road.vehicles.append(v)
        self.spawned += 1
        return v

    def clear_at(self, road: Any, point: np.ndarray, radius_m: float) -> bool:
        return all(float(np.hypot(*(v.position - point))) >= radius_m for v in road.vehicles)

    def tick(self, world: World) -> None:
        """Once per 0.1 s step: every `SPAWN_PERIOD_S` retire finished cars and spawn."""
        road = world.road
        step = int(round(world.time_s * 10.0))
        if step % int(round(SPAWN_PERIOD_S * 10.0)) != 0:
            return
        keep = []
        for v in road.vehicles:
            if isinstance(v, UrbanIDMVehicle) and v.lane_key == v.route_keys[-1]:
                lane = road.network.get_lane(v.target_lane_index)
                if lane.local_coordinates(v.position)[0] > lane.length - self.retire_before_end_m:
                    continue
            keep.append(v)
        if len(keep) != len(road.vehicles):
            road.vehicles[:] = keep
        if step == 0:
            return  # the initial population was placed by the builder
        n_bg = sum(isinstance(v, UrbanIDMVehicle) for v in road.vehicles)
        for src in self.sources:
            # draw for every source every second, so the random stream does not depend on
            # the state of the road (a deterministic but state-independent schedule)
            draw = float(self.rng.uniform())
            choice = int(self.rng.integers(len(src.routes)))
            if draw >= self.spawn_prob_per_s or n_bg >= self.max_vehicles:
                continue
            lane = road.network.get_lane(_idx(src.entry))
            if not self.clear_at(road, lane.position(0.0, 0.0), self.spawn_clear_m):
                continue
            self.place(road, src.routes[choice], 0.0)
            n_bg += 1


def _populate(
    world: World,
    traffic: BackgroundTraffic,
    count: int,
    keep_clear: Sequence[np.ndarray],
    max_s_fraction: float = 0.6,
) -> None:
    """Place `count` cars on random source routes, spaced and away from `keep_clear` points.
    Cars start on their entry lane no further than `max_s_fraction` of it (so none starts
    inside a junction or too close to a line to stop)."""
    road = world.road
    tries = 0
    placed = 0
    while placed < count and tries < 20 * count:
        tries += 1
        src = traffic.sources[int(traffic.rng.integers(len(traffic.sources)))]
        route = src.routes[int(traffic.rng.integers(len(src.routes)))]
        lane = road.network.get_lane(_idx(route[0]))
        s = float(traffic.rng.uniform(0.0, max_s_fraction * lane.length))
        point = lane.position(s, 0.0)
        if not traffic.clear_at(road, point, traffic.spawn_clear_m):
            continue
        if any(float(np.hypot(*(point - p))) < 25.0 for p in keep_clear):
            continue
        traffic.place(road, route, s)
        placed += 1


# ---- maps -----------------------------------------------------------------------------------
@dataclass
class IntersectionMap:
    """A 4-arm, one-lane-per-direction intersection. Nodes: a{k} far end of arm k's inbound
    lane, i{k} its stop line, x{k} start of arm k's outbound lane, e{k} its far end."""

    approaches: dict[int, Approach]
    inbound: dict[int, LaneKey]
    outbound: dict[int, LaneKey]
    connectors: dict[tuple[int, int], LaneKey]  # (from arm, to arm) -> connector lane


def build_intersection(
    network: RoadNetwork,
    half_size_m: float,
    arm_length_m: float,
    speed_limit_mps: float,
    turn_speed_limit_mps: float,
    major_arms: tuple[int, ...] = (),
    stop_line_setback_m: float = 0.0,
) -> IntersectionMap:
    """Arm k points along highway-env angle 90k deg. `half_size_m`: centre to the end of the
    arms (where the junction's movements start); stop lines sit `stop_line_setback_m` before
    that, so turning cars pass clear of the cars waiting at them. Priorities (read by the right-of-way control): straight/right 3 on major arms and 1
    elsewhere, left turns one less (they yield to oncoming traffic)."""
    w = LANE_WIDTH_M
    r = half_size_m
    approaches, inbound, outbound, connectors = {}, {}, {}, {}
    ends: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    starts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for k in range(4):
        u = np.array([math.cos(math.pi / 2 * k), math.sin(math.pi / 2 * k)])
        u = np.round(u, 12)
        d_in = -u
        off_in = 0.5 * w * _right_of(d_in)
        far, near = (r + arm_length_m) * u + off_in, r * u + off_in
        network.add_lane(
            f"a{k}",
            f"i{k}",
            StraightLane(far, near, line_types=(S, C), speed_limit=speed_limit_mps),
        )
        inbound[k] = (f"a{k}", f"i{k}")
        ends[k] = (near, d_in)
        off_out = 0.5 * w * _right_of(u)
        network.add_lane(
            f"x{k}",
            f"e{k}",
            StraightLane(
                r * u + off_out,
                (r + arm_length_m) * u + off_out,
                line_types=(N, C),
                speed_limit=speed_limit_mps,
            ),
        )
        outbound[k] = (f"x{k}", f"e{k}")
        starts[k] = (r * u + off_out, u)
    for k in range(4):
        base = 3 if k in major_arms else 1
        p, d = ends[k]
        movements = []
        for j in range(4):
            if j == k:
                continue  # no u-turns
            q, dq = starts[j]
            if j == (k + 2) % 4:
                lane = StraightLane(
                    p, q, line_types=(N, N), speed_limit=speed_limit_mps, priority=base
                )
            else:
                # quarter turn: the centre is where the normals at both ends meet
                n1 = _right_of(d)
                n2 = _right_of(dq)
                a_mat = np.stack([n1, -n2], axis=1)
                t = np.linalg.solve(a_mat, q - p)
                center = p + t[0] * n1
                radius = float(np.hypot(*(p - center)))
                left = float(np.cross(d, dq)) < 0  # highway-env frame: negative = REP-103 left
                lane = _arc_lane(
                    center,
                    radius,
                    p,
                    q,
                    d,
                    line_types=(N, N),
                    speed_limit=turn_speed_limit_mps,
                    priority=base - 1 if left else base,
                )
            network.add_lane(f"i{k}", f"x{j}", lane)
            connectors[(k, j)] = (f"i{k}", f"x{j}")
            movements.append((f"i{k}", f"x{j}"))
        approaches[k] = Approach(
            name=f"arm{k}",
            lane_key=inbound[k],
            stop_s=float(arm_length_m - stop_line_setback_m),
            movements=tuple(movements),
        )
    return IntersectionMap(approaches, inbound, outbound, connectors)


@dataclass
class RoundaboutMap:
    """A one-lane roundabout with 4 arms. Nodes: ra{k} far end of arm k's inbound lane,
    re{k} start of its entry curve, rm{k} where it merges into the ring, rx{k} where the
    exit curve to arm k leaves the ring, ro{k} start of arm k's outbound lane, rf{k} its far
    end. The yield line is on the entry curve where it reaches the ring's outer edge."""

    approaches: dict[int, Approach]
    ring_keys: list[LaneKey]  # in circulation order, starting after rm0
    entry_route: dict[int, list[LaneKey]]  # arm -> inbound + entry curve
    exit_route: dict[int, list[LaneKey]]  # arm -> exit curve + outbound


def build_roundabout(
    network: RoadNetwork,
    ring_radius_m: float,
    curve_radius_m: float,
    arm_length_m: float,
    speed_limit_mps: float,
    ring_speed_limit_mps: float,
    ring_width_m: float = LANE_WIDTH_M,
) -> RoundaboutMap:
    """`ring_width_m`: the circulatory roadway and the entry/exit curves are wider than an
    arm lane (single-lane roundabouts have 4.9-6 m and flared entries and exits), which leaves
    room for the S-bends between curve and ring that a path follower rounds off."""
    w = LANE_WIDTH_M
    R, rc = ring_radius_m, curve_radius_m
    tc = math.sqrt((R + rc) ** 2 - (0.5 * w + rc) ** 2)  # arm coordinate of the tangent points
    ring_nodes: list[tuple[float, str]] = []  # (phase on the ring, node)
    approaches: dict[int, Approach] = {}
    entry_route, exit_route = {}, {}
    increasing = True  # circulation sense (phase increasing), set from the first entry curve
    for k in range(4):
        u = np.round(np.array([math.cos(math.pi / 2 * k), math.sin(math.pi / 2 * k)]), 12)
        n_in = _right_of(-u)
        # inbound straight, then the entry curve turning right into the ring
        far = (tc + arm_length_m) * u + 0.5 * w * n_in
        p_s = tc * u + 0.5 * w * n_in
        network.add_lane(
            f"ra{k}",
            f"re{k}",
            StraightLane(far, p_s, line_types=(S, C), speed_limit=speed_limit_mps),
        )
        c_e = tc * u + (0.5 * w + rc) * n_in
        p_m = c_e / np.hypot(*c_e) * R
        entry = _arc_lane(
            c_e,
            rc,
            p_s,
            p_m,
            -u,
            width=ring_width_m,
            line_types=(N, C),
            speed_limit=ring_speed_limit_mps,
        )
        network.add_lane(f"re{k}", f"rm{k}", entry)
        # exit curve leaving the ring and the outbound straight
        c_x = tc * u - (0.5 * w + rc) * n_in
        p_x = c_x / np.hypot(*c_x) * R
        p_o = tc * u - 0.5 * w * n_in
        radial_x = p_x / R
        # tangent of the ring at p_x in the circulation sense, found from the entry curve
        ring_nodes.append((math.atan2(p_m[1], p_m[0]), f"rm{k}"))
        ring_nodes.append((math.atan2(p_x[1], p_x[0]), f"rx{k}"))
        if k == 0:
            h = entry.heading_at(entry.length)
            increasing = float(np.dot([math.cos(h), math.sin(h)], [-p_m[1], p_m[0]])) > 0
        tangent_x = np.array([-radial_x[1], radial_x[0]]) * (1.0 if increasing else -1.0)
        exit_lane = _arc_lane(
            c_x,
            rc,
            p_x,
            p_o,
            tangent_x,
            width=ring_width_m,
            line_types=(N, C),
            speed_limit=ring_speed_limit_mps,
        )
        network.add_lane(f"rx{k}", f"ro{k}", exit_lane)
        network.add_lane(
            f"ro{k}",
            f"rf{k}",
            StraightLane(
                p_o, p_o + arm_length_m * u, line_types=(N, C), speed_limit=speed_limit_mps
            ),
        )
        # yield line: where the entry lane's inner edge meets the ring's outer edge (a stopped
        # car's front then stays clear of circulating traffic)
        s_grid = np.linspace(0.0, entry.length, 200)
        dist = np.array([np.hypot(*entry.position(s, 0.0)) for s in s_grid])
        outside = s_grid[dist >= R + 0.5 * ring_width_m + 0.5 * w]
        stop_s = float(outside.max()) if len(outside) else 0.0
        approaches[k] = Approach(
            name=f"arm{k}",
            lane_key=(f"re{k}", f"rm{k}"),
            stop_s=stop_s,
            movements=(),
        )
        entry_route[k] = [(f"ra{k}", f"re{k}"), (f"re{k}", f"rm{k}")]
        exit_route[k] = [(f"rx{k}", f"ro{k}"), (f"ro{k}", f"rf{k}")]
    # ring segments between consecutive nodes in the circulation sense
    order = sorted(ring_nodes, key=lambda pn: pn[0] if increasing else -pn[0])
    ring_keys: list[LaneKey] = []
    for i, (phase, node) in enumerate(order):
        nxt_phase, nxt = order[(i + 1) % len(order)]
        start = R * np.array([math.cos(phase), math.sin(phase)])
        end = R * np.array([math.cos(nxt_phase), math.sin(nxt_phase)])
        tangent = np.array([-math.sin(phase), math.cos(phase)]) * (1.0 if increasing else -1.0)
        lane = _arc_lane(
            np.zeros(2),
            R,
            start,
            end,
            tangent,
            width=ring_width_m,
            line_types=(C, C),
            speed_limit=ring_speed_limit_mps,
            priority=2,
        )
        network.add_lane(node, nxt, lane)
        ring_keys.append((node, nxt))
    start_i = next(i for i, key in enumerate(ring_keys) if key[0] == "rm0")
    ring_keys = ring_keys[start_i:] + ring_keys[:start_i]
    return RoundaboutMap(approaches, ring_keys, entry_route, exit_route)


def roundabout_route(rmap: RoundaboutMap, arm_in: int, arm_out: int) -> list[LaneKey]:
    """Lane keys from arm `arm_in`'s far end round the ring to arm `arm_out`'s far end."""
    ring = rmap.ring_keys
    i = next(j for j, key in enumerate(ring) if key[0] == f"rm{arm_in}")
    path = []
    for step in range(len(ring)):
        key = ring[(i + step) % len(ring)]
        path.append(key)
        if key[1] == f"rx{arm_out}":
            break
    return rmap.entry_route[arm_in] + path + rmap.exit_route[arm_out]


# ---- shared pieces --------------------------------------------------------------------------
def _route_spec(keys: Sequence[LaneKey], end_on_last_m: float, command: Command) -> RouteSpec:
    return RouteSpec(
        lanes=[_idx(k) for k in keys], end_longitudinal_m=end_on_last_m, command=command
    )


def _ego_start_on(
    world: World, lane_key: LaneKey, dist_to_line_m: float, line_s: float, speed: float
) -> EgoStart:
    """Ego on `lane_key` with its front bumper `dist_to_line_m` before arc length `line_s`."""
    half = 0.5 * world.config.vehicle.length_m
    return EgoStart(_idx(lane_key), longitudinal_m=line_s - dist_to_line_m - half, speed_mps=speed)


_INTERSECTION_DEFAULTS: dict[str, Any] = {
    "half_size_m": [10.0, 13.0],  # junction centre to the end of the arms
    "stop_line_setback_m": [1.5, 3.0],  # stop lines sit this far back from the junction
    "arm_length_m": 75.0,
    "speed_limit_mps": [10.0, 12.5],
    "turn_speed_limit_mps": 8.0,
    "ego_command": "random",  # left | right | straight | random
    "ego_dist_to_line_m": [22.0, 35.0],
    "ego_speed_mps": [6.0, 9.0],
    "initial_vehicles": [4, 7],
    "spawn_prob_per_s": [0.12, 0.25],  # per arm
    "max_vehicles": 12,
    "exit_length_m": 12.0,  # route ends this far into the ego's exit lane
}


def _intersection_common(
    world: World, signalised: bool
) -> tuple[IntersectionMap, BackgroundTraffic, list[LaneKey], int, dict[str, Any]]:
    p = world.params
    drawn: dict[str, Any] = {}
    for name in (
        "half_size_m",
        "speed_limit_mps",
        "ego_dist_to_line_m",
        "ego_speed_mps",
        "spawn_prob_per_s",
        "arm_length_m",
        "turn_speed_limit_mps",
        "exit_length_m",
        "stop_line_setback_m",
    ):
        drawn[name] = world.uniform(name)
    for name in ("initial_vehicles", "max_vehicles"):
        drawn[name] = world.integer(name)
    if signalised:
        major: tuple[int, ...] = ()
    else:
        ego_major = bool(world.rng.uniform() < float(p["ego_on_major_probability"]))
        major = (1, 3) if ego_major else (0, 2)
        drawn["ego_on_major_road"] = ego_major
    imap = build_intersection(
        world.road.network,
        drawn["half_size_m"],
        drawn["arm_length_m"],
        drawn["speed_limit_mps"],
        drawn["turn_speed_limit_mps"],
        major_arms=major,
        stop_line_setback_m=drawn["stop_line_setback_m"],
    )
    # arms count counter-clockwise on screen (highway-env angle 90k deg, y down): seen from
    # the south arm, the next arm (east) is to the right
    exits = {"right": (EGO_ARM + 3) % 4, "straight": (EGO_ARM + 2) % 4, "left": (EGO_ARM + 1) % 4}
    choice = str(p["ego_command"])
    if choice == "random":
        choice = ["left", "right", "straight"][int(world.rng.integers(3))]
    if choice not in exits:
        raise ValueError(f"ego_command {choice!r} is not one of left, right, straight, random")
    out_arm = exits[choice]
    ego_keys = [imap.inbound[EGO_ARM], imap.connectors[(EGO_ARM, out_arm)], imap.outbound[out_arm]]
    drawn["ego_command"] = choice
    sources = [
        TrafficSource(
            imap.inbound[k],
            [
                [imap.inbound[k], imap.connectors[(k, j)], imap.outbound[j]]
                for j in range(4)
                if j != k
            ],
        )
        for k in range(4)
    ]
    traffic = BackgroundTraffic(
        sources,
        world.rng,
        _traffic_config().idm,
        spawn_prob_per_s=drawn["spawn_prob_per_s"],
        max_vehicles=drawn["max_vehicles"],
    )
    return imap, traffic, ego_keys, out_arm, drawn


def _finish_intersection(
    world: World,
    imap: IntersectionMap,
    traffic: BackgroundTraffic,
    ego_keys: list[LaneKey],
    drawn: dict[str, Any],
    control: IntersectionRightOfWay,
    name: str,
    stop_lines: list[StopLine],
    traffic_lights: Callable[[World], list] | None,
) -> FamilySetup:
    net = world.road.network
    approach = imap.approaches[EGO_ARM]
    start = _ego_start_on(
        world,
        approach.lane_key,
        drawn["ego_dist_to_line_m"],
        approach.stop_s,
        drawn["ego_speed_mps"],
    )
    ego_xy = net.get_lane(start.lane_index).position(start.longitudinal_m, 0.0)
    _populate(world, traffic, drawn["initial_vehicles"], [ego_xy])
    ego_movement = (approach.name, ego_keys[1])

    def control_hook(w: World) -> None:
        traffic.tick(w)
        control.update(w.time_s, w.road.vehicles, w.ego, ego_movement)

    command = _command_for(net, ego_keys[0], ego_keys[1])
    world.state["traffic"] = traffic
    world.state["right_of_way"] = control
    return FamilySetup(
        ego_start=start,
        route=_route_spec(ego_keys, drawn["exit_length_m"], command),
        map_name=name,
        step_hooks=[control_hook],
        traffic_lights=traffic_lights,
        stop_lines=stop_lines,
        metadata={**drawn, "route_command": command.value},
    )


@register_family(
    "unprotected_intersection",
    defaults={**_INTERSECTION_DEFAULTS, "ego_on_major_probability": 0.3},
    description="4-way junction without lights: the minor road has stop signs and gives way",
)
def unprotected_intersection(world: World) -> FamilySetup:
    """4-way junction without lights. The major road (randomly the ego's, with
    `ego_on_major_probability`) has priority; minor approaches have stop signs and cars there
    stop, then go when no movement crossing theirs is held or claimed by a car with priority.
    Left turns yield to oncoming traffic. The ego turns left, right or goes straight."""
    imap, traffic, ego_keys, _out, drawn = _intersection_common(world, signalised=False)
    net = world.road.network
    minor = [k for k in range(4) if k not in ((1, 3) if drawn["ego_on_major_road"] else (0, 2))]
    for k in minor:
        imap.approaches[k].stop_sign = True
    stop_lines = [
        stop_line_across(
            net,
            [_idx(imap.inbound[k])],
            imap.approaches[k].stop_s,
            f"stop_arm{k}",
            is_stop_sign=True,
        )
        for k in minor
    ]
    control = IntersectionRightOfWay(
        world.road, list(imap.approaches.values()), _traffic_config().right_of_way, traffic.idm
    )
    return _finish_intersection(
        world, imap, traffic, ego_keys, drawn, control, "unprotected_intersection", stop_lines, None
    )


@register_family(
    "signalised_intersection",
    defaults={
        **_INTERSECTION_DEFAULTS,
        "green_s": [6.0, 9.0],
        "yellow_s": 2.5,
        "all_red_s": 1.0,
        "ego_red_probability": 0.6,  # the ego's light is red at the start (else green)
        "max_red_wait_s": 7.0,  # ... and turns green within this many seconds
    },
    description="4-way junction with fixed-time lights and stop lines; permissive left turns",
)
def signalised_intersection(world: World) -> FamilySetup:
    """4-way junction with two signal groups (the ego's north-south axis and east-west),
    green / yellow / all-red phases, stop lines on every approach. Left turns on green are
    permissive (they yield to oncoming traffic). The ego's light is red at the start with
    probability `ego_red_probability` and turns green within `max_red_wait_s`; otherwise it
    is green and stays green long enough for the ego to clear the junction at its speed."""
    imap, traffic, ego_keys, _out, drawn = _intersection_common(world, signalised=True)
    net = world.road.network
    green_a = world.uniform("green_s")
    green_b = world.uniform("green_s")
    yellow = world.uniform("yellow_s")
    all_red = world.uniform("all_red_s")
    red_at_start = bool(world.rng.uniform() < float(world.params["ego_red_probability"]))
    draw = float(world.rng.uniform())  # always drawn: the stream does not depend on the branch
    # ego's group is "a" (arms 1 and 3)
    clear_s = (drawn["ego_dist_to_line_m"] + 2 * drawn["half_size_m"] + 8.0) / max(
        drawn["ego_speed_mps"], 1.0
    )
    if red_at_start:
        wait = 1.0 + draw * max(0.0, float(world.params["max_red_wait_s"]) - 1.0)
        timing = SignalTiming(green_a, green_b, yellow, all_red)
        wait = min(wait, timing.cycle_s - green_a - 0.5)
        offset = SignalController.offset_for_green_in(timing, "a", wait)
        drawn["ego_wait_for_green_s"] = wait
    else:
        green_a = max(green_a, clear_s + 2.0)
        timing = SignalTiming(green_a, green_b, yellow, all_red)
        elapsed = draw * max(0.0, green_a - clear_s - 2.0)  # green for this long already
        offset = elapsed % timing.cycle_s
        drawn["ego_green_elapsed_s"] = elapsed
    drawn.update(green_a_s=green_a, green_b_s=green_b, yellow_s=yellow, all_red_s=all_red)
    lights = []
    for k in range(4):
        a = imap.approaches[k]
        a.light_id = f"light_arm{k}"
        lights.append(
            LightSpec(a.light_id, "a" if k % 2 == 1 else "b", a.lane_key, a.stop_s, a.movements)
        )
    signals = SignalController(lights, timing, offset)
    control = IntersectionRightOfWay(
        world.road,
        list(imap.approaches.values()),
        _traffic_config().right_of_way,
        traffic.idm,
        signals,
    )
    world.state["signals"] = signals
    return _finish_intersection(
        world,
        imap,
        traffic,
        ego_keys,
        drawn,
        control,
        "signalised_intersection",
        signals.stop_lines(net),
        lambda w: signals.traffic_lights(w.time_s),
    )


@register_family(
    "roundabout",
    defaults={
        "ring_radius_m": [11.0, 14.0],
        "ring_width_m": [5.0, 6.0],  # circulatory roadway (arm lanes are 4 m)
        "curve_radius_m": [14.0, 18.0],  # entry and exit curves
        "arm_length_m": 70.0,
        "speed_limit_mps": 11.0,
        "ring_speed_limit_mps": [7.0, 8.0],  # ring and curves: about 4 m/s^2 at most
        "ego_exit": "random",  # first (right) | second (straight) | third (left) | random
        "ego_dist_to_line_m": [8.0, 15.0],
        "ego_speed_mps": [6.0, 8.0],
        "initial_ring_vehicles": [1, 2],
        "initial_vehicles": [2, 4],
        "spawn_prob_per_s": [0.07, 0.14],
        "max_vehicles": 12,
        "exit_length_m": 6.0,
    },
    description="one-lane roundabout, 4 arms: give way to circulating traffic, take an exit",
)
def roundabout(world: World) -> FamilySetup:
    """One-lane roundabout with four arms. Entering cars give way to circulating traffic
    (gap acceptance); the ego enters from the south and takes the first (right), second
    (straight) or third (left) exit."""
    drawn: dict[str, Any] = {}
    for name in (
        "ring_radius_m",
        "ring_width_m",
        "curve_radius_m",
        "arm_length_m",
        "speed_limit_mps",
        "ring_speed_limit_mps",
        "ego_dist_to_line_m",
        "ego_speed_mps",
        "spawn_prob_per_s",
        "exit_length_m",
    ):
        drawn[name] = world.uniform(name)
    for name in ("initial_ring_vehicles", "initial_vehicles", "max_vehicles"):
        drawn[name] = world.integer(name)
    net = world.road.network
    rmap = build_roundabout(
        net,
        drawn["ring_radius_m"],
        drawn["curve_radius_m"],
        drawn["arm_length_m"],
        drawn["speed_limit_mps"],
        drawn["ring_speed_limit_mps"],
        drawn["ring_width_m"],
    )
    exits = {"first": 1, "second": 2, "third": 3}
    choice = str(world.params["ego_exit"])
    if choice == "random":
        choice = ["first", "second", "third"][int(world.rng.integers(3))]
    if choice not in exits:
        raise ValueError(f"ego_exit {choice!r} is not one of first, second, third, random")
    drawn["ego_exit"] = choice
    ego_keys = roundabout_route(rmap, EGO_ARM, (EGO_ARM - exits[choice]) % 4)
    if not _command_is(net, ego_keys, choice):
        # circulation may run either way in highway-env's frame: count exits the other way
        ego_keys = roundabout_route(rmap, EGO_ARM, (EGO_ARM + exits[choice]) % 4)
    idm = _traffic_config().idm
    sources = [
        TrafficSource(
            rmap.entry_route[k][0],
            [roundabout_route(rmap, k, j) for j in range(4) if j != k],
        )
        for k in range(4)
    ]
    traffic = BackgroundTraffic(
        sources,
        world.rng,
        idm,
        spawn_prob_per_s=drawn["spawn_prob_per_s"],
        max_vehicles=drawn["max_vehicles"],
    )
    approach = rmap.approaches[EGO_ARM]
    # ego distance to the yield line counts the inbound straight and the entry curve
    inbound = net.get_lane(_idx(rmap.entry_route[EGO_ARM][0]))
    before_curve = drawn["ego_dist_to_line_m"] - approach.stop_s
    half = 0.5 * world.config.vehicle.length_m
    if before_curve > 0:
        start = EgoStart(
            _idx(rmap.entry_route[EGO_ARM][0]),
            longitudinal_m=inbound.length - before_curve - half,
            speed_mps=drawn["ego_speed_mps"],
        )
        route_keys = ego_keys
    else:
        start = _ego_start_on(
            world,
            approach.lane_key,
            drawn["ego_dist_to_line_m"],
            approach.stop_s,
            drawn["ego_speed_mps"],
        )
        route_keys = ego_keys[1:]
    ego_xy = net.get_lane(start.lane_index).position(start.longitudinal_m, 0.0)
    # circulating cars first (spread round the ring), then cars on the arms
    ring_len = sum(net.get_lane(_idx(k)).length for k in rmap.ring_keys)
    for _ in range(drawn["initial_ring_vehicles"]):
        pos = float(world.rng.uniform(0.0, ring_len))
        acc = 0.0
        for i, key in enumerate(rmap.ring_keys):  # noqa: B007 - i is used after the loop
            length = net.get_lane(_idx(key)).length
            if pos < acc + length:
                break
            acc += length
        node_after = rmap.ring_keys[i:] + rmap.ring_keys[:i]
        out_arm = int(world.rng.integers(4))
        tail = []
        for key in node_after:
            tail.append(key)
            if key[1] == f"rx{out_arm}":
                break
        route = tail + rmap.exit_route[out_arm]
        point = net.get_lane(_idx(route[0])).position(pos - acc, 0.0)
        if (
            traffic.clear_at(world.road, point, traffic.spawn_clear_m)
            and float(np.hypot(*(point - ego_xy))) > 15.0
        ):
            traffic.place(world.road, route, pos - acc)
    _populate(world, traffic, drawn["initial_vehicles"], [ego_xy], max_s_fraction=0.6)
    control = RoundaboutYield(
        world.road,
        list(rmap.approaches.values()),
        rmap.ring_keys,
        _traffic_config().right_of_way,
        idm,
    )

    def control_hook(w: World) -> None:
        traffic.tick(w)
        control.update(w.time_s, w.road.vehicles, w.ego)

    command = _command_for(net, route_keys[0], route_keys[-1])
    # yield lines: no light, not a stop sign (the metrics only judge those two kinds)
    yield_lines = [
        stop_line_across(net, [_idx(a.lane_key)], a.stop_s, f"yield_arm{k}")
        for k, a in rmap.approaches.items()
    ]
    world.state["traffic"] = traffic
    world.state["right_of_way"] = control
    return FamilySetup(
        ego_start=start,
        route=_route_spec(route_keys, drawn["exit_length_m"], command),
        map_name="roundabout",
        step_hooks=[control_hook],
        stop_lines=yield_lines,
        metadata={**drawn, "route_command": command.value},
    )


def _command_is(network: RoadNetwork, keys: Sequence[LaneKey], exit_name: str) -> bool:
    want = {"first": Command.RIGHT, "second": Command.STRAIGHT, "third": Command.LEFT}[exit_name]
    return _command_for(network, keys[0], keys[-1]) == want


# ---- vulnerable road users ----------------------------------------------------------------
@register_family(
    "pedestrian_crossing",
    defaults={
        "actor": "random",  # pedestrian | cyclist_crossing | cyclist_edge | random
        "road_length_m": 200.0,
        "speed_limit_mps": [10.0, 13.0],
        "ego_start_m": 20.0,
        "ego_speed_mps": [7.0, 10.0],
        "route_length_m": [85.0, 95.0],
        "crosswalk_at_m": [60.0, 80.0],  # along the road (the ego starts at ego_start_m)
        "pedestrians": [1, 2],
        "pedestrian_speed_mps": [1.1, 1.6],
        "crossing_cyclist_speed_mps": [3.5, 5.0],
        # The first crosser steps out so that it reaches the middle of the ego's lane when the
        # ego (at its current speed) would reach the crosswalk, shifted by conflict_offset_s
        # (> 0: the ego would arrive later); never with less than trigger_min_time_s to go.
        "conflict_offset_s": [-0.5, 0.5],
        "trigger_min_time_s": 2.0,
        "trigger_latest_s": [6.0, 9.0],  # ... and at the latest at this time (ego stopped/slow)
        "cyclist_speed_mps": [4.5, 6.5],  # riding at the road edge
        "cyclist_ahead_m": [25.0, 40.0],
        "cyclist_lateral_m": [
            0.8,
            1.2,
        ],  # right of the lane centre (its box reaches the ego's path)
        "oncoming_spawn_prob_per_s": [0.1, 0.3],
        "lead_vehicle_probability": 0.3,
        "max_vehicles": 8,
    },
    description="two-way street: pedestrians or a cyclist cross, or a cyclist rides at the edge",
)
def pedestrian_crossing(world: World) -> FamilySetup:
    """A straight two-way street (one lane each way). Variants (`actor`): pedestrians cross
    at a crosswalk in front of the ego (from either kerb, one after the other), a cyclist
    crosses there, or a cyclist rides at the right edge of the ego's lane ahead of it.
    The first crosser steps out timed to meet the ego in its lane (`conflict_offset_s`) once
    background traffic leaves it a gap; the others follow `stagger`; background cars yield to
    them. A planner that ignores them hits them or passes within a whisker."""
    p = world.params
    net = world.road.network
    length = world.uniform("road_length_m")
    limit = world.uniform("speed_limit_mps")
    w = LANE_WIDTH_M
    # ego lane along +x (lane centre at y = +w/2: right-hand traffic), oncoming along -x.
    # The two directions get their own nodes: sharing "w"/"e" would join each lane's end to
    # the other's start, and IDM's connected-lane search would then see oncoming cars ahead.
    net.add_lane(
        "sw",
        "se",
        StraightLane([0, 0.5 * w], [length, 0.5 * w], line_types=(S, C), speed_limit=limit),
    )
    net.add_lane(
        "ne",
        "nw",
        StraightLane([length, -0.5 * w], [0, -0.5 * w], line_types=(N, C), speed_limit=limit),
    )
    ego_key, onc_key = ("sw", "se"), ("ne", "nw")
    drawn: dict[str, Any] = {"road_length_m": length, "speed_limit_mps": limit}
    for name in (
        "ego_start_m",
        "ego_speed_mps",
        "route_length_m",
        "crosswalk_at_m",
        "oncoming_spawn_prob_per_s",
    ):
        drawn[name] = world.uniform(name)
    drawn["max_vehicles"] = world.integer("max_vehicles")
    actor = str(p["actor"])
    variants = ["pedestrian", "cyclist_crossing", "cyclist_edge"]
    pick = variants[int(world.rng.integers(3))]
    if actor == "random":
        actor = pick
    if actor not in variants:
        raise ValueError(f"actor {actor!r} is not one of {', '.join(variants)}, random")
    drawn["actor"] = actor
    idm = _traffic_config().idm
    vcfg = _traffic_config().vulnerable
    traffic = BackgroundTraffic(
        [TrafficSource(onc_key, [[onc_key]])],
        world.rng,
        idm,
        spawn_prob_per_s=drawn["oncoming_spawn_prob_per_s"],
        max_vehicles=drawn["max_vehicles"],
    )
    ego_s = drawn["ego_start_m"]
    ego_xy = np.array([ego_s, 0.5 * w])
    # oncoming traffic spread along the street
    _populate(world, traffic, int(world.rng.integers(1, 4)), [ego_xy], max_s_fraction=0.9)
    lead = bool(world.rng.uniform() < float(p["lead_vehicle_probability"]))
    lead_gap = float(world.rng.uniform(20.0, 30.0))
    if lead and actor != "cyclist_edge":
        traffic.place(world.road, [ego_key], ego_s + lead_gap, drawn["ego_speed_mps"])
    drawn["lead_vehicle"] = lead and actor != "cyclist_edge"
    hooks: list[Callable[[World], None]] = [traffic.tick]
    cw = drawn["crosswalk_at_m"]
    if actor in ("pedestrian", "cyclist_crossing"):
        n = world.integer("pedestrians") if actor == "pedestrian" else 1
        speed_name = (
            "pedestrian_speed_mps" if actor == "pedestrian" else "crossing_cyclist_speed_mps"
        )
        offset_s = world.uniform("conflict_offset_s")
        min_s = world.uniform("trigger_min_time_s")
        latest_s = world.uniform("trigger_latest_s")
        crossers = []
        stagger = []
        for i in range(n):
            from_right = bool(world.rng.uniform() < 0.5)  # right kerb of the ego's lane
            along = cw + float(world.rng.uniform(-1.0, 1.0))
            y0, y1 = (w + 1.5, -w - 1.5) if from_right else (-w - 1.5, w + 1.5)
            speed = world.uniform(speed_name)
            if actor == "pedestrian":
                size = (vcfg.pedestrian_length_m, vcfg.pedestrian_width_m)
                cls = AgentClass.PEDESTRIAN
            else:
                size = (vcfg.cyclist_length_m, vcfg.cyclist_width_m)
                cls = AgentClass.CYCLIST
            crosser = Crosser(world.road, [along, y0], [along, y1], speed, size[0], size[1], cls)
            world.road.vehicles.append(crosser)
            crossers.append(crosser)
            stagger.append(float(i) * float(world.rng.uniform(0.5, 1.5)))
        # time the first crosser needs from its kerb to the middle of the ego's lane
        lead_crosser = crossers[0]
        to_lane_s = abs(float(lead_crosser.start_xy[1]) - 0.5 * w) / lead_crosser.walk_speed_mps
        trigger_eta_s = max(to_lane_s + offset_s, min_s)
        drawn.update(
            crossers=n,
            conflict_offset_s=offset_s,
            trigger_min_time_s=min_s,
            trigger_latest_s=latest_s,
            trigger_ego_eta_s=trigger_eta_s,
        )
        cw_lanes = [
            CrosswalkLane(ego_key, cw - 2.0),
            CrosswalkLane(onc_key, length - cw - 2.0),
        ]

        def trigger(t: float, ego: Any) -> bool:
            if ego is None or t >= latest_s:  # no ego (traffic-only runs), or time is up
                return t >= min(trigger_eta_s, latest_s) if ego is None else True
            front = float(ego.position[0]) + 0.5 * float(ego.LENGTH)
            dist = cw - front  # to the middle of the crosswalk
            return dist <= max(float(ego.speed), 1.0) * trigger_eta_s

        control = CrosswalkControl(world.road, cw_lanes, crossers, trigger, vcfg, idm, stagger)
        hooks.append(lambda w_: control.update(w_.time_s, w_.road.vehicles, w_.ego))
        world.state["crosswalk"] = control
    else:
        ahead = world.uniform("cyclist_ahead_m")
        speed = world.uniform("cyclist_speed_mps")
        lateral = world.uniform("cyclist_lateral_m")
        rider = EdgeRider(world.road, [ego_key], ego_s + ahead, lateral, speed, vcfg)
        world.road.vehicles.append(rider)
        drawn.update(cyclist_ahead_m=ahead, cyclist_speed_mps=speed, cyclist_lateral_m=lateral)
        world.state["rider"] = rider
    world.state["traffic"] = traffic
    start = EgoStart(_idx(ego_key), longitudinal_m=ego_s, speed_mps=drawn["ego_speed_mps"])
    return FamilySetup(
        ego_start=start,
        route=RouteSpec(
            lanes=[_idx(ego_key)],
            end_longitudinal_m=ego_s + drawn["route_length_m"],
            command=Command.LANE_FOLLOW,
        ),
        map_name="urban_street",
        step_hooks=hooks,
        metadata=drawn,
    )
