"""Urban scenario families: routes, randomisation, determinism, traffic that behaves,
pedestrians and cyclists in the Scene."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("highway_env")

from highway_env.road.road import Road, RoadNetwork  # noqa: E402
from highway_env.vehicle.behavior import IDMVehicle  # noqa: E402

from planner.taxonomy import AgentClass, Command  # noqa: E402
from planner.types import Trajectory  # noqa: E402
from sim_eval.scenarios import ScenarioSpec  # noqa: E402
from sim_eval.sim.config import SimConfig  # noqa: E402
from sim_eval.sim.families import World, get_family  # noqa: E402
from sim_eval.sim.traffic_control import UrbanIDMVehicle  # noqa: E402
from sim_eval.sim.vulnerable import Crosser, EdgeRider  # noqa: E402

URBAN = ("roundabout", "unprotected_intersection", "signalised_intersection", "pedestrian_crossing")
JUNCTIONS = ("roundabout", "unprotected_intersection", "signalised_intersection")


def _build(family: str, seed: int, params: dict | None = None):
    """A family's world the way the simulator builds it, but without an ego (traffic only)."""
    fam = get_family(family)
    spec = ScenarioSpec(name=f"{family}/{seed}", family=family, seed=seed, params=params or {})
    fseq, rseq = np.random.SeedSequence(seed).spawn(2)
    road = Road(
        network=RoadNetwork(),
        vehicles=[],
        road_objects=[],
        np_random=np.random.default_rng(rseq),
        record_history=False,
        neighbour_vehicles_connected_lanes=True,
    )
    world = World(
        road=road,
        rng=np.random.default_rng(fseq),
        params={**fam.defaults, **(params or {})},
        config=SimConfig(),
        spec=spec,
    )
    return world, fam(world)


def _run_traffic(world, setup, seconds: float) -> int:
    """Step the road at 10 Hz with the family's hooks; returns how many road users crashed."""
    crashed = set()
    for _ in range(int(round(seconds * 10))):
        for hook in setup.step_hooks:
            hook(world)
        world.road.act()
        world.road.step(0.1)
        world.time_s = round(world.time_s * 10 + 1) / 10
        crashed |= {id(v) for v in world.road.vehicles if v.crashed}
    return len(crashed)


def _state(world) -> np.ndarray:
    return np.array([[*v.position, v.heading, v.speed] for v in world.road.vehicles])


@pytest.mark.parametrize("family", URBAN)
def test_family_builds_a_connected_route_that_fits_the_episode(family):
    world, setup = _build(family, 3)
    net = world.road.network
    lanes = setup.route.lanes
    for a, b in zip(lanes, lanes[1:]):
        assert a[1] == b[0], f"route lanes {a} -> {b} do not connect"
    length = sum(net.get_lane(idx).length for idx in lanes[:-1]) - setup.ego_start.longitudinal_m
    length += setup.route.end_longitudinal_m
    assert 40.0 < length < 140.0
    # at the ego's start speed the route takes well under the 20 s episode
    assert length / setup.ego_start.speed_mps < 16.0
    assert setup.route.command in (
        Command.LEFT,
        Command.RIGHT,
        Command.STRAIGHT,
        Command.LANE_FOLLOW,
    )
    # drawn parameters are recorded and lie in their documented ranges
    defaults = get_family(family).defaults
    for name, value in setup.metadata.items():
        rng = defaults.get(name)
        if isinstance(rng, list) and isinstance(value, (int, float)):
            assert rng[0] <= value <= rng[1], (name, value, rng)


@pytest.mark.parametrize(
    ("family", "key", "value", "command"),
    [
        ("unprotected_intersection", "ego_command", "left", Command.LEFT),
        ("unprotected_intersection", "ego_command", "right", Command.RIGHT),
        ("signalised_intersection", "ego_command", "straight", Command.STRAIGHT),
        ("roundabout", "ego_exit", "first", Command.RIGHT),
        ("roundabout", "ego_exit", "second", Command.STRAIGHT),
        ("roundabout", "ego_exit", "third", Command.LEFT),
    ],
)
def test_route_command_matches_the_turn(family, key, value, command):
    _world, setup = _build(family, 5, {key: value})
    assert setup.route.command == command


def test_bad_choice_names_the_valid_ones():
    with pytest.raises(ValueError, match="left, right, straight"):
        _build("unprotected_intersection", 0, {"ego_command": "u_turn"})


@pytest.mark.parametrize("family", URBAN)
def test_same_seed_same_traffic_bit_for_bit(family):
    w1, s1 = _build(family, 11)
    w2, s2 = _build(family, 11)
    _run_traffic(w1, s1, 4.0)
    _run_traffic(w2, s2, 4.0)
    assert np.array_equal(_state(w1), _state(w2))
    w3, s3 = _build(family, 12)
    _run_traffic(w3, s3, 4.0)
    a, b = _state(w1), _state(w3)
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_class_level_idm_changes_do_not_leak_into_urban_traffic():
    """The stock intersection env writes IDM parameters onto the class; urban cars keep
    their own per-instance values, so such a leak cannot change their episodes."""
    w1, s1 = _build("unprotected_intersection", 4)
    _run_traffic(w1, s1, 4.0)
    saved = {k: IDMVehicle.__dict__[k] for k in ("DISTANCE_WANTED", "COMFORT_ACC_MAX")}
    try:
        IDMVehicle.DISTANCE_WANTED, IDMVehicle.COMFORT_ACC_MAX = 7.0, 6.0
        w2, s2 = _build("unprotected_intersection", 4)
        _run_traffic(w2, s2, 4.0)
    finally:
        for k, v in saved.items():
            setattr(IDMVehicle, k, v)
    assert np.array_equal(_state(w1), _state(w2))


@pytest.mark.parametrize("family", URBAN)
def test_background_traffic_has_no_self_crashes(family):
    world, setup = _build(family, 0)
    traffic = world.state["traffic"]
    initial = traffic.spawned
    assert _run_traffic(world, setup, 20.0) == 0
    # and it is not a standstill: new cars entered and cars are moving
    assert traffic.spawned > initial
    moving = [v.speed for v in world.road.vehicles if isinstance(v, UrbanIDMVehicle)]
    assert max(moving) > 3.0


@pytest.mark.slow
@pytest.mark.parametrize("family", URBAN)
def test_background_traffic_has_no_self_crashes_many_seeds(family):
    crashes = {}
    for seed in range(1, 16):
        world, setup = _build(family, seed)
        crashes[seed] = _run_traffic(world, setup, 20.0)
    assert sum(crashes.values()) == 0, crashes


def test_signalised_background_cars_obey_their_lights():
    world, setup = _build("signalised_intersection", 2)
    control = world.state["right_of_way"]
    signals = world.state["signals"]
    for _ in range(200):
        for hook in setup.step_hooks:
            hook(world)
        for v in world.road.vehicles:
            if not isinstance(v, UrbanIDMVehicle):
                continue
            for a in control.approaches.values():
                dist = v.route_distance_to(a.lane_key, a.stop_s)
                if dist is None or v.lane_key != a.lane_key:
                    continue
                front = dist - 0.5 * v.LENGTH
                state, _ = signals.state(a.light_id, world.time_s)
                # nobody is allowed to cross while red (a car inside its stopping distance
                # at the yellow onset may still clear; yellow lasts long enough for that)
                if state.value == "red" and -0.5 < front < 0.0 and v.speed > 1.0:
                    pytest.fail(f"car crossed {a.light_id} on red at t={world.time_s}")
        world.road.act()
        world.road.step(0.1)
        world.time_s = round(world.time_s * 10 + 1) / 10
    assert control.stats.line_overruns == 0
    assert control.stats.grants > 3


# ---- through the simulator: what the planner sees -----------------------------------------
def _simulate(family: str, seed: int, params: dict, steps: int):
    from sim_eval.sim.highway import HighwayEnvSimulator

    sim = HighwayEnvSimulator(SimConfig())
    scenes = [sim.reset(ScenarioSpec(f"{family}/{seed}", family, seed, params=params))]
    for _ in range(steps):
        if sim.info.done:
            break
        scenes.append(sim.step(Trajectory.stationary()))  # the ego waits where it started
    return scenes


def test_crossing_pedestrian_is_a_pedestrian_agent_moving_across_the_lane():
    scenes = _simulate("pedestrian_crossing", 3, {"actor": "pedestrian", "pedestrians": 1}, 150)
    lane_y = scenes[0].ego.y  # REP-103: the ego's lane centre (the street runs along x)
    tracks: dict[str, list[tuple[float, float, float]]] = {}
    for scene in scenes:
        for a in scene.agents:
            if a.agent_class == AgentClass.PEDESTRIAN:
                assert a.length == pytest.approx(0.6) and a.width == pytest.approx(0.6)
                tracks.setdefault(a.id, []).append((a.y - lane_y, a.speed, abs(a.vx)))
    assert len(tracks) == 1
    (track,) = tracks.values()
    offsets = np.array([t[0] for t in track])
    assert offsets[0] * offsets[-1] < 0  # from one side of the ego's lane to the other
    assert np.abs(offsets).min() < 0.5  # through the middle of it
    assert max(t[1] for t in track) > 1.0 and max(t[2] for t in track) < 1e-6  # walks across


def test_lights_and_stop_lines_reach_the_scene():
    scenes = _simulate("signalised_intersection", 1, {}, 30)
    first = scenes[0]
    assert len(first.map.stop_lines) == 4 and len(first.traffic_lights) == 4
    ego_lane = first.route.lane_ids[0]
    mine = [lt for lt in first.traffic_lights if ego_lane in lt.lane_ids]
    assert len(mine) == 1 and mine[0].stop_line_id in first.map.stop_lines
    ttc = [s.traffic_lights[0].time_to_change_s for s in scenes]
    assert all(t > 0 for t in ttc)


def test_edge_cyclist_rides_ahead_at_the_right_edge():
    world, setup = _build("pedestrian_crossing", 2, {"actor": "cyclist_edge"})
    rider = next(v for v in world.road.vehicles if isinstance(v, EdgeRider))
    assert rider.cocdrive_class == AgentClass.CYCLIST
    x0 = float(rider.position[0])
    _run_traffic(world, setup, 3.0)
    assert float(rider.position[0]) - x0 == pytest.approx(3.0 * rider.cruise_mps, rel=0.05)
    # highway-env y points right of travel: the rider keeps right of the lane centre
    lane = world.road.network.get_lane(setup.route.lanes[0])
    assert lane.local_coordinates(rider.position)[1] > 1.0
    assert not any(isinstance(v, Crosser) for v in world.road.vehicles)


def test_simulated_urban_episode_is_bit_for_bit_repeatable():
    def signature(scenes):
        return [
            (
                s.ego.x,
                s.ego.y,
                tuple((a.id, a.x, a.y, a.yaw, a.speed) for a in s.agents),
                tuple((lt.id, lt.state.value, lt.time_to_change_s) for lt in s.traffic_lights),
            )
            for s in scenes
        ]

    first = _simulate("signalised_intersection", 7, {}, 40)
    again = _simulate("signalised_intersection", 7, {}, 40)
    assert signature(first) == signature(again)
