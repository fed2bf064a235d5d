"""Scenario families: the plug-in interface of the embedded highway-env simulator.

A *family* is a function that builds one episode of a kind of situation (cut-in, roundabout,
...) from a seed. It is registered under a name with `@register_family`, and scenario suites
(configs/scenarios/*.yaml) refer to it by that name. The simulator
(`sim_eval.sim.highway.HighwayEnvSimulator`) does everything else: it creates the ego,
steps the road, follows the plans, converts the state to `Scene`s and decides termination.

How a build works (all in highway-env's own frame: x right, **y down = right of travel**,
clockwise headings; the simulator converts to REP-103 when it makes Scenes):

1. The simulator makes a `World`: an empty `highway_env.road.road.Road` (network empty,
   `neighbour_vehicles_connected_lanes=True`, `np_random` seeded from the spec seed), a
   `numpy.random.Generator` `rng` seeded from the spec seed, the spec `params` merged over the
   family `defaults`, and the `SimConfig`. Class attributes of highway-env's behaviour
   classes (IDMVehicle & co.) are restored to their stock values before every build: a
   family must NEVER change class attributes (that leaks into every later episode); set
   them on the instance instead (`car.DISTANCE_WANTED = 7.0`) or subclass.
2. The family function adds lanes to `world.road.network` (speed limits on the lanes, in
   m/s), background vehicles to `world.road.vehicles`, static objects to
   `world.road.objects`, and returns a `FamilySetup`: where the ego starts (`EgoStart`),
   the route it must drive (`RouteSpec`, a lane sequence; its length is known), and
   optional hooks.
3. Every 0.1 s step the simulator calls each `FamilySetup.step_hooks` hook with the `World`
   (`world.time_s` is the time at the start of the step, `world.ego` the ego vehicle), then
   runs `sim_hz / 10` substeps of `road.act(); ego control; road.step(dt)`.

Scene agents: every object in `road.vehicles` and `road.objects` (except the ego) becomes an
`Agent`: `Vehicle` -> VEHICLE, `Obstacle` -> STATIC_OBSTACLE, with its LENGTH/WIDTH (set
instance attributes for other sizes). `tag(obj, agent_class=..., hidden=...)` overrides the
class (PEDESTRIAN, CYCLIST, CONE) or hides an object from the Scene (e.g. the invisible
obstacle that holds IDM traffic at a red light). Things that are not road objects at all can
be returned by `FamilySetup.extra_agents(world)` (already in REP-103, world frame).
Traffic lights: `FamilySetup.traffic_lights(world)` returns the current `TrafficLight`s each
step; `FamilySetup.stop_lines` are static `StopLine`s (REP-103 world frame: use
`sim_eval.sim.convert.hw_to_rep_xy` on highway-env points, or `stop_line_across`).

Tiny example::

    from highway_env.road.lane import StraightLane
    from highway_env.vehicle.behavior import IDMVehicle
    from sim_eval.sim.families import EgoStart, FamilySetup, RouteSpec, register_family

    @register_family("empty_road", defaults={"speed_limit_mps": 20.0},
                     description="one straight lane, one slow car ahead")
    def empty_road(world):
        limit = float(world.params["speed_limit_mps"])
        world.road.network.add_lane("a", "b", StraightLane([0, 0], [400, 0], speed_limit=limit))
        car = IDMVehicle.make_on_lane(world.road, ("a", "b", 0), 60.0, speed=8.0)
        car.target_speed = 8.0
        world.road.vehicles.append(car)
        return FamilySetup(
            ego_start=EgoStart(("a", "b", 0), longitudinal_m=10.0, speed_mps=limit),
            route=RouteSpec(lanes=[("a", "b", 0)], end_longitudinal_m=380.0),
            map_name="empty_road",
        )

Randomised parameters: draw them from `world.rng` inside documented ranges (a `defaults`
value may be a `[low, high]` list that the family samples from, or a fixed number that a
suite can override through `params`; `world.uniform(name)` / `world.integer(name)` do
both), and put what was drawn in `FamilySetup.metadata` so it is recorded in every Scene
(`scene.metadata["params"]`). Suites may override defaults per family in
configs/scenarios/families.yaml; a spec's params must be keys of the family's `defaults`.

Performance: the simulator's road (`FastRoad`) caches object projections during each
`road.act()` pass, so vehicles must not be added or removed from inside a vehicle's
`act()`; do it in a step hook.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from planner.taxonomy import AgentClass, Command
from planner.types import Agent, StopLine, TrafficLight

if TYPE_CHECKING:
    from highway_env.road.road import Road
    from highway_env.vehicle.kinematics import Vehicle

    from sim_eval.scenarios import ScenarioSpec
    from sim_eval.sim.config import SimConfig

LaneIndex = tuple[str, str, int]  # highway-env lane index (from node, to node, lane number)


@dataclass
class World:
    """What a family builder and its hooks work with (one per episode)."""

    road: Road  # highway-env road: network, vehicles, objects (highway-env frame)
    rng: np.random.Generator  # seeded from the spec seed: the ONLY randomness to use
    params: dict[str, Any]  # family defaults updated by the spec's params
    config: SimConfig
    spec: ScenarioSpec
    ego: Vehicle | None = None  # set by the simulator after the build
    time_s: float = 0.0  # simulated time at the start of the current step
    state: dict[str, Any] = field(default_factory=dict)  # free per-episode storage for hooks

    def uniform(self, name: str) -> float:
        """Parameter `name`: a number as given, or a draw from a [low, high] range."""
        value = self.params[name]
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                raise ValueError(f"parameter {name!r} = {value!r}: a range must be [low, high]")
            return float(self.rng.uniform(float(value[0]), float(value[1])))
        return float(value)

    def integer(self, name: str) -> int:
        """Parameter `name`: an integer as given, or a draw from an inclusive [low, high]."""
        value = self.params[name]
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                raise ValueError(f"parameter {name!r} = {value!r}: a range must be [low, high]")
            return int(self.rng.integers(int(value[0]), int(value[1]) + 1))
        return int(value)


@dataclass
class EgoStart:
    """Where the ego starts: on a lane, `longitudinal_m` from its start."""

    lane_index: LaneIndex
    longitudinal_m: float
    speed_mps: float
    lateral_left_m: float = 0.0  # offset from the centre line, positive to the LEFT of travel


@dataclass
class RouteSpec:
    """The lanes the ego must drive, in order; the first holds the ego start. The route ends
    `end_longitudinal_m` along the last lane (None: at its end). Its length is known."""

    lanes: list[LaneIndex]
    end_longitudinal_m: float | None = None
    command: Command = Command.LANE_FOLLOW


StepHook = Callable[[World], None]


@dataclass
class FamilySetup:
    """What a family builder returns."""

    ego_start: EgoStart
    route: RouteSpec
    map_name: str
    step_hooks: list[StepHook] = field(default_factory=list)  # called once per 0.1 s step
    traffic_lights: Callable[[World], list[TrafficLight]] | None = None  # REP-103, per step
    stop_lines: list[StopLine] = field(default_factory=list)  # REP-103 world frame, static
    extra_agents: Callable[[World], list[Agent]] | None = None  # REP-103, per step
    remove_background_wrecks: bool = True  # crashed non-ego vehicles vanish (SimConfig delay)
    metadata: dict[str, Any] = field(default_factory=dict)  # drawn parameters, for the record


@dataclass(frozen=True)
class FamilyBuilder:
    """A registered family: `build(world) -> FamilySetup`, its defaults and a description."""

    name: str
    build: Callable[[World], FamilySetup]
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def __call__(self, world: World) -> FamilySetup:
        return self.build(world)


FAMILIES: dict[str, FamilyBuilder] = {}


def register_family(
    name: str, *, defaults: dict[str, Any] | None = None, description: str = ""
) -> Callable[[Callable[[World], FamilySetup]], Callable[[World], FamilySetup]]:
    """Decorator: register `fn(world) -> FamilySetup` under `name`."""

    def wrap(fn: Callable[[World], FamilySetup]) -> Callable[[World], FamilySetup]:
        if name in FAMILIES and FAMILIES[name].build is not fn:
            raise ValueError(f"scenario family {name!r} is registered twice")
        FAMILIES[name] = FamilyBuilder(
            name=name,
            build=fn,
            defaults=dict(defaults or {}),
            description=description or (fn.__doc__ or "").strip().split("\n")[0],
        )
        return fn

    return wrap


_loaded = False


def load_families() -> dict[str, FamilyBuilder]:
    """Import every module of this package once (each registers its families on import) and
    return the registry. New family files need no list to be edited: dropping
    `families/<anything>.py` in is enough."""
    global _loaded
    if not _loaded:
        import importlib
        import pkgutil

        for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
            importlib.import_module(f"{__name__}.{module}")
        _loaded = True
    return FAMILIES


class UnknownFamilyError(KeyError):
    """No family of that name is registered (the message lists the valid names)."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


def get_family(name: str) -> FamilyBuilder:
    """The registered family `name`, or an `UnknownFamilyError` that lists the valid names."""
    families = load_families()
    if name not in families:
        close = difflib.get_close_matches(name, list(families), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UnknownFamilyError(
            f"unknown scenario family {name!r}; {hint}valid families: {', '.join(sorted(families))}"
        )
    return families[name]


# ---- tagging road objects for the Scene ---------------------------------------------------
def tag(
    obj: Any,
    agent_class: AgentClass | None = None,
    *,
    hidden: bool | None = None,
    agent_id: str | None = None,
) -> Any:
    """Mark a highway-env road object: its Scene class, whether it is hidden from the Scene
    (helper objects such as red-light blockers), a fixed agent id. Returns the object."""
    if agent_class is not None:
        obj.cocdrive_class = AgentClass(agent_class)
    if hidden is not None:
        obj.cocdrive_hidden = bool(hidden)
    if agent_id is not None:
        obj.cocdrive_id = str(agent_id)
    return obj


def agent_class_of(obj: Any) -> AgentClass:
    """Scene class of a road object: its tag, else Obstacle -> static obstacle, else vehicle."""
    tagged = getattr(obj, "cocdrive_class", None)
    if tagged is not None:
        return tagged
    from highway_env.vehicle.objects import Obstacle

    return AgentClass.STATIC_OBSTACLE if isinstance(obj, Obstacle) else AgentClass.VEHICLE


def is_hidden(obj: Any) -> bool:
    return bool(getattr(obj, "cocdrive_hidden", False))


__all__ = [
    "FAMILIES",
    "EgoStart",
    "FamilyBuilder",
    "FamilySetup",
    "LaneIndex",
    "RouteSpec",
    "StepHook",
    "UnknownFamilyError",
    "World",
    "agent_class_of",
    "get_family",
    "is_hidden",
    "load_families",
    "register_family",
    "tag",
]
