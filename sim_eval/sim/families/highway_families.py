"""Highway-type scenario families: dense cruising, on-ramp merge, lane drop, construction
zone, aggressive cut-in, hard-braking lead, slow vehicle to overtake.

Every family draws its parameters from `world.rng` inside the ranges of its `defaults`
(a `[low, high]` list is a range, a number is fixed; a suite may override either through
`params`), builds its road in highway-env's frame (x along the road, y DOWN, lane 0 the
leftmost), and ends its route where the ego, at about the traffic's speed, arrives after
`route_time_s` seconds, so the route fits in the episode with time to spare.

Background traffic is highway-env's IDM/MOBIL (`IDMVehicle`), placed with gaps that IDM
accepts, and every static object is an `Obstacle` (IDM vehicles treat it as a leader because
the simulator's road searches connected lane segments).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from planner.taxonomy import AgentClass, Command
from sim_eval.sim.families import (
    EgoStart,
    FamilySetup,
    LaneIndex,
    RouteSpec,
    World,
    register_family,
    tag,
)

LANE_WIDTH_M = 4.0  # highway-env's default lane width


# ---- road objects with our own sizes and behaviour ----------------------------------------
def _obstacle_classes() -> tuple[type, type]:
    from highway_env.vehicle.objects import Obstacle

    class Cone(Obstacle):
        """A traffic cone (0.4 m square footprint)."""

        LENGTH = 0.4
        WIDTH = 0.4
        HEIGHT = 0.7

    class StoppedCar(Obstacle):
        """A broken-down car standing still (static obstacle in the Scene)."""

        LENGTH = 4.8
        WIDTH = 1.9
        HEIGHT = 1.5

    return Cone, StoppedCar


def _scripted_vehicle_class() -> type:
    from highway_env.vehicle.behavior import IDMVehicle

    class ScriptedVehicle(IDMVehicle):
        """An IDM/MOBIL car whose acceleration a step hook may override
        (`accel_override`, m/s^2; None = IDM). Speed never goes below 0."""

        accel_override: float | None = None

        def act(self, action: Any = None) -> None:
            super().act(action)
            if self.accel_override is not None and not self.crashed:
                self.action["acceleration"] = float(self.accel_override)

        def step(self, dt: float) -> None:
            a = float(self.action.get("acceleration", 0.0))
            if self.speed + a * dt < 0.0:  # stop, do not reverse
                self.action["acceleration"] = -self.speed / dt
            super().step(dt)

    return ScriptedVehicle


_CLASSES: dict[str, type] = {}


def object_class(name: str) -> type:
    """'cone', 'stopped_car' or 'scripted' (built once, after highway-env is imported)."""
    if not _CLASSES:
        cone, stopped = _obstacle_classes()
        _CLASSES.update(cone=cone, stopped_car=stopped, scripted=_scripted_vehicle_class())
    return _CLASSES[name]


# ---- helpers ------------------------------------------------------------------------------
def straight_road(
    world: World, lanes: int, length_m: float, speed_limit_mps: float, nodes=("a", "b"), x0=0.0
) -> None:
    """`lanes` parallel straight lanes along +x (lane 0 leftmost) from x0."""
    from highway_env.road.road import RoadNetwork

    RoadNetwork.straight_road_network(
        lanes=lanes,
        start=x0,
        length=length_m,
        speed_limit=speed_limit_mps,
        nodes_str=nodes,
        net=world.road.network,
    )


def add_idm(
    world: World,
    lane_index: LaneIndex,
    longitudinal_m: float,
    speed_mps: float,
    target_speed_mps: float | None = None,
    *,
    cls: type | None = None,
    enable_lane_change: bool = True,
):
    """An IDM/MOBIL car on a lane (returns it)."""
    from highway_env.vehicle.behavior import IDMVehicle

    cls = cls or IDMVehicle
    lane = world.road.network.get_lane(lane_index)
    car = cls(
        world.road,
        lane.position(longitudinal_m, 0.0),
        heading=lane.heading_at(longitudinal_m),
        speed=float(speed_mps),
        target_lane_index=lane_index,
        target_speed=float(target_speed_mps if target_speed_mps is not None else speed_mps),
        enable_lane_change=enable_lane_change,
    )
    car.randomize_behavior()
    world.road.vehicles.append(car)
    return car


def populate_lane(
    world: World,
    lane_index: LaneIndex,
    s_from: float,
    s_to: float,
    count: int,
    speed_range: tuple[float, float],
    *,
    keep_clear: list[tuple[float, float]] = (),
    min_gap_m: float = 18.0,
    enable_lane_change: bool = True,
    fill: bool = False,
) -> list:
    """Up to `count` IDM cars between s_from and s_to on one lane, at least `min_gap_m`
    (plus 0.6 s of speed) apart, none inside the `keep_clear` (s_lo, s_hi) intervals.
    With `fill`, placing goes on past s_to (up to one more span) until `count` are placed."""
    cars = []
    if count <= 0 or s_to <= s_from:
        return cars
    span = s_to - s_from
    mean_gap = span / count
    s = s_from + float(world.rng.uniform(0.0, mean_gap))
    s_end = s_to + span if fill else s_to
    while s < s_end and len(cars) < count:
        speed = float(world.rng.uniform(*speed_range))
        if not any(lo <= s <= hi for lo, hi in keep_clear):
            target = min(speed * float(world.rng.uniform(1.0, 1.1)), speed_range[1])
            cars.append(
                add_idm(world, lane_index, s, speed, target, enable_lane_change=enable_lane_change)
            )
        gap = max(min_gap_m + 0.6 * speed, float(world.rng.uniform(0.6, 1.4)) * mean_gap)
        s += gap
    return cars


def add_cone(world: World, lane_index: LaneIndex, longitudinal_m: float, lateral_left_m: float):
    lane = world.road.network.get_lane(lane_index)
    cone = object_class("cone")(
        world.road, lane.position(longitudinal_m, -lateral_left_m), lane.heading_at(0.0)
    )
    tag(cone, AgentClass.CONE)
    world.road.objects.append(cone)
    return cone


def route_end(start_s: float, speed_mps: float, route_time_s: float, lane_length_m: float) -> float:
    """Where a route that takes about `route_time_s` at `speed_mps` ends (within the lane)."""
    return float(min(start_s + speed_mps * route_time_s, lane_length_m - 5.0))


def _choose(world: World, name: str) -> Any:
    """A categorical parameter: a value, or a list of options drawn uniformly."""
    value = world.params[name]
    if isinstance(value, (list, tuple)):
        return value[int(world.rng.integers(len(value)))]
    return value


# ---- families -----------------------------------------------------------------------------
@register_family(
    "dense_highway",
    defaults={
        "lanes": [3, 4],
        "vehicles": [30, 50],
        "speed_limit_mps": [25.0, 33.0],
        "traffic_speed_ratio": [0.6, 0.85],  # traffic target speed / limit
        "route_time_s": 13.0,
    },
    description="dense highway cruising: 30-50 IDM/MOBIL cars around the ego",
)
def dense_highway(world: World) -> FamilySetup:
    lanes = world.integer("lanes")
    count = world.integer("vehicles")
    limit = world.uniform("speed_limit_mps")
    ratio = world.uniform("traffic_speed_ratio")
    road_len = 1500.0
    straight_road(world, lanes, road_len, limit)
    ego_lane = int(world.rng.integers(lanes))
    ego_s = 250.0
    traffic_speed = ratio * limit
    speeds = (0.9 * traffic_speed, min(limit, 1.1 * traffic_speed))
    # spread the cars over a window around the ego wide enough for IDM's gaps
    per_lane = int(math.ceil(count / lanes))
    span = max(400.0, per_lane * (20.0 + 0.8 * traffic_speed))
    s_from = ego_s - 0.35 * span
    placed = 0
    for lane in range(lanes):
        n = min(per_lane, count - placed)
        clear = [(ego_s - 25.0, ego_s + 30.0)] if lane == ego_lane else [(ego_s - 8, ego_s + 8)]
        placed += len(
            populate_lane(
                world,
                ("a", "b", lane),
                s_from,
                s_from + span,
                n,
                speeds,
                keep_clear=clear,
                fill=True,
            )
        )
    ego_speed = traffic_speed
    end = route_end(ego_s, traffic_speed, world.uniform("route_time_s"), road_len)
    return FamilySetup(
        ego_start=EgoStart(("a", "b", ego_lane), ego_s, ego_speed),
        route=RouteSpec(lanes=[("a", "b", ego_lane)], end_longitudinal_m=end),
        map_name=f"straight_{lanes}_lanes",
        metadata={
            "lanes": lanes,
            "vehicles": placed,
            "speed_limit_mps": limit,
            "traffic_speed_mps": traffic_speed,
            "ego_lane": ego_lane,
        },
    )


@register_family(
    "on_ramp_merge",
    defaults={
        "main_lanes": [2, 3],
        "speed_limit_mps": [22.0, 30.0],
        "main_vehicles": [8, 16],
        "ramp_length_m": [120.0, 180.0],
        "merge_lane_length_m": [60.0, 110.0],
        "ego_speed_ratio": [0.6, 0.8],
        "route_time_s": 12.0,
    },
    description="on-ramp merge: the ego joins from a ramp into flowing traffic",
)
def on_ramp_merge(world: World) -> FamilySetup:
    from highway_env.road.lane import LineType, SineLane, StraightLane

    n = world.integer("main_lanes")
    limit = world.uniform("speed_limit_mps")
    ramp_len = world.uniform("ramp_length_m")
    merge_len = world.uniform("merge_lane_length_m")
    net = world.road.network
    x_b = 50.0 + ramp_len + 80.0  # start of the merge lane (end of the ramp's S-curve)
    x_c = x_b + merge_len
    road_end = x_c + 700.0
    straight_road(world, n, x_b, limit, nodes=("a", "b"))
    straight_road(world, n, x_c - x_b, limit, nodes=("b", "c"), x0=x_b)
    straight_road(world, n, road_end - x_c, limit, nodes=("c", "d"), x0=x_c)
    # a merge lane on the right of the main road between b and c (highway-env convention:
    # an extra lane of the same road, so vehicles find each other across the boundary)
    y_merge = n * LANE_WIDTH_M
    c, s, nl = LineType.CONTINUOUS_LINE, LineType.STRIPED, LineType.NONE
    for lane in net.graph["b"]["c"]:
        lane.line_types = [lane.line_types[0], nl]
    # forbidden: MOBIL never moves a main-road car into the ending lane
    merge = StraightLane(
        [x_b, y_merge], [x_c, y_merge], line_types=[s, c], speed_limit=limit, forbidden=True
    )
    net.add_lane("b", "c", merge)
    # the ramp: straight, then an S-curve (half a sine period) up to the merge lane
    amplitude = 3.0 * LANE_WIDTH_M / 2.0  # the ramp runs 3 lane widths right of the merge lane
    y_ramp = y_merge + 2 * amplitude
    ramp = StraightLane([50.0, y_ramp], [50.0 + ramp_len, y_ramp], line_types=[c, c])
    ramp.speed_limit = limit
    curve = SineLane(
        ramp.position(ramp_len, -amplitude),
        ramp.position(ramp_len + 80.0, -amplitude),
        amplitude,
        2 * np.pi / (2 * 80.0),
        np.pi / 2,
        line_types=[c, c],
        speed_limit=limit,
    )
    net.add_lane("j", "k", ramp)
    net.add_lane("k", "b", curve)

    # the ego starts 20-40 m before the S-curve; main-road traffic is placed so that it
    # reaches the merge lane about when the ego does
    count = world.integer("main_vehicles")
    ego_s = max(10.0, ramp_len - float(world.rng.uniform(20.0, 40.0)))
    ego_speed = world.uniform("ego_speed_ratio") * limit
    t_arrive = (ramp_len + 80.0 - ego_s) / max(ego_speed, 1.0)
    speeds = (0.7 * limit, 0.9 * limit)
    per_lane = int(math.ceil(count / n))
    mean_speed = 0.8 * limit
    centre = x_b - mean_speed * t_arrive + 0.3 * merge_len  # cars around the ego at merge
    placed = 0
    for lane in range(n):
        k = min(per_lane, count - placed)
        placed += len(
            populate_lane(
                world,
                ("a", "b", lane),
                max(5.0, centre - 220.0),
                min(x_b - 10.0, centre + 200.0),
                k,
                speeds,
            )
        )
    route_lanes = [("j", "k", 0), ("k", "b", 0), ("b", "c", n), ("c", "d", n - 1)]
    before_main = ramp_len + curve.length + merge_len - ego_s
    target_length = 0.8 * limit * world.uniform("route_time_s")
    end = max(40.0, target_length - before_main)
    return FamilySetup(
        ego_start=EgoStart(("j", "k", 0), ego_s, ego_speed),
        route=RouteSpec(lanes=route_lanes, end_longitudinal_m=min(end, road_end - x_c - 5.0)),
        map_name=f"on_ramp_{n}_lanes",
        metadata={
            "main_lanes": n,
            "speed_limit_mps": limit,
            "main_vehicles": placed,
            "ramp_length_m": ramp_len,
            "merge_lane_length_m": merge_len,
        },
    )


@register_family(
    "lane_drop",
    defaults={
        "lanes": [2, 3],
        "speed_limit_mps": [20.0, 30.0],
        "drop_distance_m": [120.0, 220.0],  # from the ego start to the first closure cone
        "taper_length_m": [25.0, 40.0],
        "vehicles_per_lane": [3, 6],  # on each lane that stays open
        "route_time_s": 12.0,
    },
    description="lane drop: the ego's (rightmost) lane closes behind a taper of cones and ends",
)
def lane_drop(world: World) -> FamilySetup:
    from highway_env.road.lane import LineType

    n = world.integer("lanes")
    limit = world.uniform("speed_limit_mps")
    ego_s = 60.0
    drop_at = ego_s + world.uniform("drop_distance_m")
    taper = world.uniform("taper_length_m")
    lane_end = drop_at + taper + 10.0
    road_end = lane_end + 800.0
    net = world.road.network
    straight_road(world, n, lane_end, limit, nodes=("a", "b"))
    straight_road(world, n - 1, road_end - lane_end, limit, nodes=("b", "c"), x0=lane_end)
    net.graph["a"]["b"][n - 1].line_types = [LineType.STRIPED, LineType.CONTINUOUS_LINE]
    drop = ("a", "b", n - 1)
    # taper: from the right edge towards the left, stopping 1.2 m short of the left boundary
    # so IDM cars in the next lane do not take the cones for their leader
    cones = 8
    for k in range(cones):
        frac = k / (cones - 1)
        lateral_left = -LANE_WIDTH_M / 2.0 + 0.2 + frac * (LANE_WIDTH_M - 1.4)
        add_cone(world, drop, drop_at + frac * taper, lateral_left)
    for k in range(1, 4):  # the closed lane stays closed to its end
        add_cone(world, drop, drop_at + taper + 3.0 * k, LANE_WIDTH_M / 2.0 - 1.2)
    ego_speed = 0.8 * limit
    speeds = (0.7 * limit, 0.9 * limit)
    per_lane = world.integer("vehicles_per_lane")
    placed = 0
    for lane in range(n - 1):
        placed += len(
            populate_lane(
                world,
                ("a", "b", lane),
                ego_s - 120.0,
                drop_at - 20.0,
                per_lane,
                speeds,
                keep_clear=[(ego_s - 10.0, ego_s + 10.0)],
            )
        )
    target = ("b", "c", n - 2)
    end = max(60.0, ego_speed * world.uniform("route_time_s") - (lane_end - ego_s))
    return FamilySetup(
        ego_start=EgoStart(drop, ego_s, ego_speed),
        route=RouteSpec(
            lanes=[("a", "b", n - 2), target],
            end_longitudinal_m=min(end, road_end - lane_end - 5.0),
            command=Command.CHANGE_LANE_LEFT,
        ),
        map_name=f"lane_drop_{n}_to_{n - 1}",
        metadata={
            "lanes": n,
            "speed_limit_mps": limit,
            "drop_at_m": drop_at - ego_s,
            "taper_length_m": taper,
            "vehicles": placed,
        },
    )


@register_family(
    "construction_cones",
    defaults={
        "lanes": [2, 3],
        "speed_limit_mps": [15.0, 25.0],
        "kind": ["cones", "stopped_vehicle"],
        "encroachment_m": [0.4, 1.8],  # how far into the ego lane from its right edge
        "distance_m": [60.0, 120.0],  # ego start to the obstruction
        "zone_length_m": [15.0, 40.0],  # length of the cone line
        "vehicles": [3, 8],
        "route_time_s": 14.0,
    },
    description="construction zone: cones or a stopped car encroach into the ego lane "
    "(in-lane nudge when small, out-of-lane nudge when large)",
)
def construction_cones(world: World) -> FamilySetup:
    n = world.integer("lanes")
    limit = world.uniform("speed_limit_mps")
    kind = _choose(world, "kind")
    enc = world.uniform("encroachment_m")
    ego_s = 40.0
    start = ego_s + world.uniform("distance_m")
    road_len = 1000.0
    straight_road(world, n, road_len, limit)
    ego_lane = n - 1  # the obstruction stands on the shoulder side (right), free lane on the left
    lane = ("a", "b", ego_lane)
    half = LANE_WIDTH_M / 2.0
    if kind == "cones":
        zone = world.uniform("zone_length_m")
        spacing = 5.0
        for k in range(int(zone // spacing) + 1):
            # a line of cones whose inner edge is `enc` into the lane (cone half-width 0.2)
            add_cone(world, lane, start + k * spacing, -half + enc - 0.2)
        length = zone
    else:
        car_cls = object_class("stopped_car")
        lat_left = -half + enc - car_cls.WIDTH / 2.0  # its inner side `enc` into the lane
        lane_obj = world.road.network.get_lane(lane)
        car = car_cls(world.road, lane_obj.position(start, -lat_left), lane_obj.heading_at(0.0))
        tag(car, AgentClass.STATIC_OBSTACLE)
        world.road.objects.append(car)
        length = car_cls.LENGTH
    ego_speed = 0.8 * limit
    speeds = (0.7 * limit, 0.95 * limit)
    count = world.integer("vehicles")
    placed = 0
    for other in range(n - 1):
        placed += len(
            populate_lane(
                world,
                ("a", "b", other),
                ego_s - 100.0,
                start + 200.0,
                max(1, count // max(1, n - 1)),
                speeds,
                keep_clear=[(ego_s - 8.0, ego_s + 8.0)],
                min_gap_m=25.0,
            )
        )
    end = route_end(ego_s, ego_speed, world.uniform("route_time_s"), road_len)
    end = max(end, start + length + 40.0)
    return FamilySetup(
        ego_start=EgoStart(lane, ego_s, ego_speed),
        route=RouteSpec(lanes=[lane], end_longitudinal_m=end),
        map_name=f"straight_{n}_lanes",
        metadata={
            "lanes": n,
            "speed_limit_mps": limit,
            "kind": kind,
            "encroachment_m": enc,
            "distance_m": start - ego_s,
            "zone_length_m": length,
            "vehicles": placed,
        },
    )


@register_family(
    "cut_in",
    defaults={
        "lanes": [2, 3],
        "speed_limit_mps": [22.0, 30.0],
        "cut_gap_m": [4.0, 12.0],  # gap from the ego's front to the cutter's rear at the cut
        "cutter_speed_delta_mps": [3.0, 6.0],  # cutter faster than the ego before the cut
        "cutter_brake_mps2": [1.0, 4.0],  # the cutter brakes this hard for 1.5 s after it
        "side": ["left", "right"],
        "vehicles": [4, 10],
        "route_time_s": 14.0,
    },
    description="aggressive cut-in: a faster car from the next lane cuts in close ahead",
)
def cut_in(world: World) -> FamilySetup:
    n = world.integer("lanes")
    limit = world.uniform("speed_limit_mps")
    road_len = 1200.0
    straight_road(world, n, road_len, limit)
    side = _choose(world, "side")
    ego_lane = int(world.rng.integers(1, n)) if side == "left" else int(world.rng.integers(n - 1))
    cut_lane = ego_lane - 1 if side == "left" else ego_lane + 1
    ego_s = 80.0
    ego_speed = 0.75 * limit
    cutter_speed = min(limit + 3.0, ego_speed + world.uniform("cutter_speed_delta_mps"))
    gap = world.uniform("cut_gap_m")
    brake = world.uniform("cutter_brake_mps2")
    cutter = add_idm(
        world,
        ("a", "b", cut_lane),
        ego_s + 1.0,
        cutter_speed,
        cutter_speed,
        cls=object_class("scripted"),
        enable_lane_change=False,
    )
    add_idm(world, ("a", "b", ego_lane), ego_s + 90.0, ego_speed, ego_speed)  # distant lead
    count = world.integer("vehicles")
    placed = 2
    for other in range(n):
        if other in (ego_lane, cut_lane):
            continue
        placed += len(
            populate_lane(
                world,
                ("a", "b", other),
                ego_s - 100.0,
                ego_s + 300.0,
                max(1, count // max(1, n - 2)),
                (0.7 * limit, 0.9 * limit),
                keep_clear=[(ego_s - 8.0, ego_s + 8.0)],
                enable_lane_change=False,  # MOBIL would fill the cutter's empty lane
            )
        )
    state = {"cut_at": None}
    ego_length = world.config.vehicle.length_m

    def cut_hook(w: World) -> None:
        lane = w.road.network.get_lane(("a", "b", ego_lane))
        s_ego = lane.local_coordinates(w.ego.position)[0]
        s_cut = lane.local_coordinates(cutter.position)[0]
        if state["cut_at"] is None:
            # cut when the cutter's rear is `gap` ahead of the ego's front (after 8 s: as soon
            # as it is ahead at all, so that every episode has its cut-in)
            ahead = s_cut - cutter.LENGTH / 2.0 - (s_ego + ego_length / 2.0)
            if ahead >= gap or (w.time_s >= 8.0 and ahead >= 1.0):
                state["cut_at"] = w.time_s
                cutter.target_lane_index = ("a", "b", ego_lane)
                cutter.target_speed = ego_speed
        elif w.time_s - state["cut_at"] < 1.5 + 1.0 and w.time_s - state["cut_at"] >= 1.0:
            cutter.accel_override = -brake if brake > 0.1 else None
        else:
            cutter.accel_override = None

    return FamilySetup(
        ego_start=EgoStart(("a", "b", ego_lane), ego_s, ego_speed),
        route=RouteSpec(
            lanes=[("a", "b", ego_lane)],
            end_longitudinal_m=route_end(ego_s, ego_speed, world.uniform("route_time_s"), road_len),
        ),
        map_name=f"straight_{n}_lanes",
        step_hooks=[cut_hook],
        metadata={
            "lanes": n,
            "speed_limit_mps": limit,
            "side": side,
            "cut_gap_m": gap,
            "cutter_speed_mps": cutter_speed,
            "cutter_brake_mps2": brake,
            "vehicles": placed,
        },
    )


@register_family(
    "hard_braking_lead",
    defaults={
        "lanes": [2, 3],
        "speed_limit_mps": [20.0, 30.0],
        "gap_m": [18.0, 35.0],  # ego front to lead rear at the start
        "brake_at_s": [2.0, 5.0],
        "decel_mps2": [5.0, 8.0],
        "brake_to_mps": [0.0, 8.0],
        "hold_s": [1.5, 4.0],  # at the low speed, then IDM again
        "vehicles": [3, 8],
        "route_time_s": 13.0,
    },
    description="hard-braking lead: the car ahead brakes at 5-8 m/s^2, possibly to a stop",
)
def hard_braking_lead(world: World) -> FamilySetup:
    n = world.integer("lanes")
    limit = world.uniform("speed_limit_mps")
    road_len = 1000.0
    straight_road(world, n, road_len, limit)
    ego_lane = int(world.rng.integers(n))
    ego_s = 60.0
    speed = 0.85 * limit
    gap = world.uniform("gap_m")
    ego_len = world.config.vehicle.length_m
    lead = add_idm(
        world,
        ("a", "b", ego_lane),
        ego_s + ego_len / 2.0 + gap + 2.5,
        speed,
        speed,
        cls=object_class("scripted"),
        enable_lane_change=False,
    )
    brake_at = world.uniform("brake_at_s")
    decel = world.uniform("decel_mps2")
    low = world.uniform("brake_to_mps")
    hold = world.uniform("hold_s")
    count = world.integer("vehicles")
    placed = 1
    for other in range(n):
        if other == ego_lane:
            continue
        placed += len(
            populate_lane(
                world,
                ("a", "b", other),
                ego_s - 150.0,
                ego_s + 300.0,
                max(1, count // max(1, n - 1)),
                (0.7 * limit, 0.9 * limit),
                keep_clear=[(ego_s - 8.0, ego_s + 8.0)],
                min_gap_m=25.0,
            )
        )
    state = {"reached_low_at": None}

    def brake_hook(w: World) -> None:
        if w.time_s < brake_at:
            return
        if state["reached_low_at"] is None:
            if lead.speed > low + 0.05:
                lead.accel_override = -decel
                return
            state["reached_low_at"] = w.time_s
        if w.time_s - state["reached_low_at"] < hold:
            lead.accel_override = 0.0 if low > 0.05 else -decel  # hold the speed / stand
            lead.target_speed = low
        else:
            lead.accel_override = None
            lead.target_speed = speed

    return FamilySetup(
        ego_start=EgoStart(("a", "b", ego_lane), ego_s, speed),
        route=RouteSpec(
            lanes=[("a", "b", ego_lane)],
            end_longitudinal_m=route_end(ego_s, 0.8 * speed, world.uniform("route_time_s"), 950),
        ),
        map_name=f"straight_{n}_lanes",
        step_hooks=[brake_hook],
        metadata={
            "lanes": n,
            "speed_limit_mps": limit,
            "gap_m": gap,
            "brake_at_s": brake_at,
            "decel_mps2": decel,
            "brake_to_mps": low,
            "hold_s": hold,
            "vehicles": placed,
        },
    )


@register_family(
    "slow_vehicle_overtake",
    defaults={
        "lanes": [2, 3],
        "speed_limit_mps": [22.0, 30.0],
        "slow_speed_mps": [7.0, 13.0],
        "gap_m": [30.0, 70.0],
        "vehicles": [2, 6],
        "route_time_s": 14.0,
    },
    description="slow vehicle ahead: following it cannot finish the route; overtake it",
)
def slow_vehicle_overtake(world: World) -> FamilySetup:
    n = world.integer("lanes")
    limit = world.uniform("speed_limit_mps")
    road_len = 1000.0
    straight_road(world, n, road_len, limit)
    ego_lane = n - 1  # slow traffic keeps right; the overtaking lane is on the left
    ego_s = 50.0
    ego_speed = 0.8 * limit
    slow = world.uniform("slow_speed_mps")
    gap = world.uniform("gap_m")
    truck = add_idm(world, ("a", "b", ego_lane), ego_s + gap, slow, slow, enable_lane_change=False)
    truck.LENGTH = 8.0  # a slow lorry (instance attribute: the class stays stock)
    truck.diagonal = math.hypot(truck.LENGTH, truck.WIDTH)
    count = world.integer("vehicles")
    placed = 1
    for other in range(n - 1):
        placed += len(
            populate_lane(
                world,
                ("a", "b", other),
                ego_s - 150.0,
                ego_s + 350.0,
                max(1, count // max(1, n - 1)),
                (0.85 * limit, 1.0 * limit),
                keep_clear=[(ego_s - 30.0, ego_s + gap + 40.0)],
                min_gap_m=40.0,
            )
        )
    end = route_end(ego_s, ego_speed, world.uniform("route_time_s"), road_len)
    return FamilySetup(
        ego_start=EgoStart(("a", "b", ego_lane), ego_s, ego_speed),
        route=RouteSpec(lanes=[("a", "b", ego_lane)], end_longitudinal_m=end),
        map_name=f"straight_{n}_lanes",
        metadata={
            "lanes": n,
            "speed_limit_mps": limit,
            "slow_speed_mps": slow,
            "gap_m": gap,
            "vehicles": placed,
        },
    )
