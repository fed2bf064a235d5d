"""The highway-env adapter: determinism, REP-103 conventions, map, follower, delay, routes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from planner.geometry import world_to_ego_xy
from planner.taxonomy import AgentClass, Command
from planner.types import (
    TRAJ_SPEED,
    TRAJ_X,
    TRAJ_Y,
    TRAJ_YAW,
    EgoState,
    InvalidInputError,
    Scene,
    Trajectory,
)
from sim_eval.scenarios import ScenarioSpec
from sim_eval.sim.config import FollowerConfig, SimConfig, VehicleLimits
from sim_eval.sim.convert import agent_from_object, hw_to_rep_xy, lane_id
from sim_eval.sim.families import FAMILIES, EgoStart, FamilySetup, RouteSpec, register_family
from sim_eval.sim.families.highway_families import straight_road
from sim_eval.sim.follower import ControlState, TrajectoryFollower
from sim_eval.sim.highway import HighwayEnvSimulator

HIGHWAY_FAMILIES = (
    "dense_highway",
    "on_ramp_merge",
    "lane_drop",
    "construction_cones",
    "cut_in",
    "hard_braking_lead",
    "slow_vehicle_overtake",
)
TEST_FAMILY = "_test_empty_3_lanes"


@pytest.fixture(scope="module", autouse=True)
def empty_road_family():
    """A 3-lane empty road, ego in the middle lane at 15 m/s (registered for this module)."""

    @register_family(TEST_FAMILY, defaults={"speed_mps": 15.0})
    def build(world):
        straight_road(world, 3, 800.0, 30.0)
        return FamilySetup(
            ego_start=EgoStart(("a", "b", 1), 50.0, float(world.params["speed_mps"])),
            route=RouteSpec(lanes=[("a", "b", 1)], end_longitudinal_m=500.0),
            map_name="test",
        )

    yield
    FAMILIES.pop(TEST_FAMILY, None)


def spec(family: str = TEST_FAMILY, seed: int = 0, **params) -> ScenarioSpec:
    return ScenarioSpec(name=f"{family}/{seed}", family=family, seed=seed, params=params)


def plan_to_lane(scene: Scene, lane: str, speed: float, horizon_s: float = 1.5) -> Trajectory:
    """A plan at constant speed that runs parallel to `lane` from the ego and blends into its
    centre line over `horizon_s` (a lane change when `lane` is a neighbour)."""
    pts = world_to_ego_xy(scene.map.lanes[lane].centerline, scene.ego)
    t = 0.1 * np.arange(1, 65)
    x = speed * t
    y_lane = np.interp(x, pts[:, 0], pts[:, 1])
    offset = float(np.interp(0.0, pts[:, 0], pts[:, 1]))
    u = np.clip(t / horizon_s, 0.0, 1.0)
    blend = 10 * u**3 - 15 * u**4 + 6 * u**5
    y = y_lane - offset * (1.0 - blend)
    yaw = np.arctan2(np.gradient(y), np.gradient(x))
    data = np.zeros((64, 6))
    data[:, TRAJ_X], data[:, TRAJ_Y], data[:, TRAJ_YAW], data[:, TRAJ_SPEED] = x, y, yaw, speed
    return Trajectory(data)


def keep_lane_plan(scene: Scene) -> Trajectory:
    return plan_to_lane(scene, scene.metadata["ego_lane_id"], max(scene.ego.speed, 5.0))


def run(sim: HighwayEnvSimulator, s: ScenarioSpec, steps: int, planner=keep_lane_plan):
    scenes = [sim.reset(s)]
    for _ in range(steps):
        if sim.info.done:
            break
        scenes.append(sim.step(planner(scenes[-1])))
    return scenes


def fingerprint(scenes: list[Scene]) -> np.ndarray:
    rows = []
    for sc in scenes:
        rows.append(sc.ego.as_row())
        for a in sorted(sc.agents, key=lambda a: a.id):
            rows.append(np.array([a.x, a.y, a.yaw, a.vx, a.vy, a.length, a.width]))
    return np.concatenate(rows)


def test_same_seed_same_episode_bit_for_bit_even_after_class_attributes_change():
    from highway_env.vehicle.behavior import IDMVehicle

    sim = HighwayEnvSimulator(SimConfig())
    first = fingerprint(run(sim, spec("dense_highway", 7), 12))
    run(sim, spec("cut_in", 3), 10)  # another episode in between
    stock = IDMVehicle.DISTANCE_WANTED
    IDMVehicle.DISTANCE_WANTED = 7.0  # what highway-env's intersection env does globally
    try:
        second = fingerprint(run(HighwayEnvSimulator(SimConfig()), spec("dense_highway", 7), 12))
        assert IDMVehicle.DISTANCE_WANTED == stock  # restored by the reset
    finally:
        IDMVehicle.DISTANCE_WANTED = stock
    assert first.shape == second.shape
    assert np.array_equal(first, second)
    other = fingerprint(run(sim, spec("dense_highway", 8), 12))
    assert other.shape != first.shape or not np.array_equal(other, first)


def test_left_lane_change_plan_moves_ego_to_left_lane_and_plus_y():
    sim = HighwayEnvSimulator(SimConfig())
    scene = sim.reset(spec())
    start_lane = scene.metadata["ego_lane_id"]
    left = scene.map.lanes[start_lane].left_neighbor
    assert start_lane == "a>b>1" and left == "a>b>0"  # highway-env lane 0 is the leftmost
    y0 = scene.ego.y
    for _ in range(50):
        scene = sim.step(plan_to_lane(scene, left, 15.0))
    assert scene.metadata["ego_lane_id"] == left
    assert scene.ego.y == pytest.approx(y0 + 4.0, abs=0.3)  # one lane width to the LEFT = +y
    assert abs(scene.ego.yaw) < 0.05
    # highway-env's own frame has the left lane at lower y
    assert sim.world.ego.position[1] == pytest.approx(-scene.ego.y - 0.0, abs=0.2)


def test_vehicle_conversion_to_rep103():
    from highway_env.road.road import Road, RoadNetwork
    from highway_env.vehicle.kinematics import Vehicle

    road = Road(network=RoadNetwork.straight_road_network(2, length=200.0))
    # heading +0.3 in highway-env turns clockwise on screen, i.e. to the right of travel
    car = Vehicle(road, [10.0, 4.0], heading=0.3, speed=5.0)
    agent = agent_from_object(car, "v", AgentClass.VEHICLE)
    assert (agent.x, agent.y) == pytest.approx((10.0, -4.0))
    assert agent.yaw == pytest.approx(-0.3)
    assert agent.vx == pytest.approx(5.0 * math.cos(0.3))
    assert agent.vy == pytest.approx(-5.0 * math.sin(0.3))  # moving towards -y: rightwards
    assert np.allclose(hw_to_rep_xy([[1.0, 2.0]]), [[1.0, -2.0]])


@pytest.mark.parametrize("family", ["on_ramp_merge", "lane_drop"])
def test_map_left_boundary_is_on_plus_y_side_of_travel(family):
    sim = HighwayEnvSimulator(SimConfig())
    scene = sim.reset(spec(family, 1))
    assert scene.map.drivable_area is not None and scene.map.drivable_area.is_valid
    for lane in scene.map.lanes.values():
        c = lane.centerline
        assert len(c) >= 2 and np.all(np.hypot(*np.diff(c, axis=0).T) <= 1.1)  # ~1 m sampling
        k = len(c) // 2
        direction = c[min(k + 1, len(c) - 1)] - c[k - 1]
        to_left = lane.left_boundary[k] - c[k]
        to_right = lane.right_boundary[k] - c[k]
        assert direction[0] * to_left[1] - direction[1] * to_left[0] > 0
        assert direction[0] * to_right[1] - direction[1] * to_right[0] < 0
        for nb in (lane.left_neighbor, lane.right_neighbor, *lane.successors):
            assert nb is None or nb in scene.map.lanes
    # the lane left of another lane lies at larger y on a road along +x
    lanes = scene.map.lanes
    for lane in lanes.values():
        if lane.left_neighbor and abs(lane.centerline[-1, 0] - lane.centerline[0, 0]) > 10:
            assert lanes[lane.left_neighbor].centerline[0, 1] > lane.centerline[0, 1]
    assert scene.map.drivable_area.contains(
        __import__("shapely").geometry.Point(scene.ego.center_xy)
    )


def _track(plan: Trajectory, delay_s: float = 0.0, seconds: float = 4.0, v0: float = 10.0):
    """Run the follower on a rear-axle bicycle (the simulator's ego model) from the origin."""
    limits = VehicleLimits()
    follower = TrajectoryFollower(FollowerConfig(), limits, delay_s)
    ego = EgoState(t=0.0, x=0.0, y=0.0, yaw=0.0, speed=v0)
    if delay_s > 0:
        follower.hold_initial(ego, 0.0)
    follower.submit(plan, ego, 0.0)
    x = y = yaw = 0.0
    v = v0
    dt = 0.1
    states = []
    for k in range(int(round(seconds / dt))):
        a, steer = follower.control(k * dt, ControlState(x, y, yaw, v), dt)
        v1 = max(0.0, v + a * dt)
        vm = 0.5 * (v + v1)
        dyaw = vm * math.tan(steer) / limits.wheelbase_m * dt
        x += vm * dt * math.cos(yaw + 0.5 * dyaw)
        y += vm * dt * math.sin(yaw + 0.5 * dyaw)
        yaw += dyaw
        v = v1
        states.append((x, y, yaw, v))
    return np.array(states)


def test_follower_tracks_straight_and_curved_plans():
    n = 64
    straight = Trajectory.from_controls(np.full(n, 0.5), np.zeros(n), 10.0)
    states = _track(straight)
    k = 39  # t = 4.0 s
    assert states[k, 0] == pytest.approx(straight.data[k, TRAJ_X], abs=1.0)
    assert abs(states[k, 1]) < 0.05
    assert states[k, 3] == pytest.approx(straight.data[k, TRAJ_SPEED], abs=0.5)
    curved = Trajectory.from_controls(np.zeros(n), np.full(n, 0.03), 10.0)
    states = _track(curved)
    err = np.hypot(states[k, 0] - curved.data[k, TRAJ_X], states[k, 1] - curved.data[k, TRAJ_Y])
    assert err < 1.0
    assert states[k, 2] == pytest.approx(curved.data[k, TRAJ_YAW], abs=0.1)
    assert states[k, 1] > 5.0  # a left (positive curvature) turn goes to +y


def test_plan_that_starts_from_standstill_moves_the_ego():
    n = 64
    go = Trajectory.from_controls(np.full(n, 1.0), np.zeros(n), 0.0)
    states = _track(go, v0=0.0, seconds=2.0)
    assert states[-1, 3] == pytest.approx(2.0, abs=0.4)
    assert states[-1, 0] > 1.5


def test_actuation_delay_delays_the_response():
    n = 64
    brake = Trajectory.from_controls(np.full(n, -4.0), np.zeros(n), 10.0)
    now = _track(brake, delay_s=0.0, seconds=0.5)
    late = _track(brake, delay_s=0.5, seconds=0.5)
    assert now[3, 3] < 9.0  # braking within 0.4 s
    assert late[3, 3] == pytest.approx(10.0, abs=0.05)  # still the previous (hold) plan
    late_more = _track(brake, delay_s=0.5, seconds=1.2)
    assert late_more[-1, 3] < 8.5  # the plan arrives at 0.5 s


def test_simulator_applies_delay_from_config():
    n = 64
    speeds = {}
    for delay in (0.0, 0.5):
        sim = HighwayEnvSimulator(SimConfig(actuation_delay_s=delay))
        scene = sim.reset(spec())
        for _ in range(4):
            scene = sim.step(Trajectory.from_controls(np.full(n, -4.0), np.zeros(n), 15.0))
        speeds[delay] = scene.ego.speed
    assert speeds[0.0] < 14.0
    assert speeds[0.5] == pytest.approx(15.0, abs=0.1)


def test_stationary_plan_stops_without_reversing_and_nan_plan_is_refused():
    sim = HighwayEnvSimulator(SimConfig())
    scene = sim.reset(spec(speed_mps=3.0))
    for _ in range(20):
        scene = sim.step(Trajectory.stationary())
    assert scene.ego.speed == 0.0
    assert np.all(np.diff(scene.ego_history[:, 1]) >= -1e-9)  # never moved backwards
    bad = np.zeros((64, 6))
    bad[5, TRAJ_X] = np.nan
    with pytest.raises(InvalidInputError, match="non-finite"):
        Trajectory(bad)
    with pytest.raises(InvalidInputError, match="non-finite"):
        sim.step(Trajectory(bad, validate=False))


def test_sim_rate_must_be_a_multiple_of_10_hz_and_substeps_keep_time():
    with pytest.raises(ValueError, match="multiple of 10"):
        SimConfig(sim_hz=15)
    sim = HighwayEnvSimulator(SimConfig(sim_hz=30))
    scene = run(sim, spec(), 10)[-1]
    assert scene.timestamp == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("family", HIGHWAY_FAMILIES)
def test_every_family_builds_a_scene_with_a_known_route(family):
    sim = HighwayEnvSimulator(SimConfig())
    scene = sim.reset(spec(family, 5))
    route = scene.route
    assert route.length_m is not None and 60.0 < route.length_m < 20.0 * 33.0
    assert set(route.lane_ids) <= set(scene.map.lanes)
    assert scene.metadata["route_progress_m"] < 5.0
    assert scene.ego_history.shape == (16, 7)
    assert np.allclose(np.diff(scene.ego_history[:, 0]), 0.1)
    assert scene.agents and all(a.id != "ego" for a in scene.agents)
    assert len({a.id for a in scene.agents}) == len(scene.agents)
    for _ in range(5):
        scene = sim.step(keep_lane_plan(scene))
    assert scene.timestamp == pytest.approx(0.5)
    assert scene.metadata["route_progress_m"] > 0.0
    assert not sim.info.events.get("collision")


def test_family_specific_content():
    sim = HighwayEnvSimulator(SimConfig())
    dense = sim.reset(spec("dense_highway", 2))
    assert 30 <= dense.metadata["params"]["vehicles"] <= 50
    cones = sim.reset(spec("construction_cones", 2, kind="cones"))
    assert any(a.agent_class is AgentClass.CONE for a in cones.agents)
    stopped = sim.reset(spec("construction_cones", 2, kind="stopped_vehicle"))
    assert any(a.agent_class is AgentClass.STATIC_OBSTACLE for a in stopped.agents)
    drop = sim.reset(spec("lane_drop", 2))
    ego_lane = drop.map.lanes[drop.metadata["ego_lane_id"]]
    assert ego_lane.successors == ()  # the ego's lane ends
    assert drop.route.lane_ids[0] == ego_lane.left_neighbor


def test_unknown_family_or_parameter_is_a_clear_error():
    sim = HighwayEnvSimulator(SimConfig())
    with pytest.raises(
        InvalidInputError, match="did you mean 'cut_in'.*valid families: .*lane_drop"
    ):
        sim.reset(spec("cut_inn"))
    with pytest.raises(InvalidInputError, match="unknown parameter.*valid: .*cut_gap_m"):
        sim.reset(spec("cut_in", 1, cut_gap=3.0))


def test_ego_lane_id_uses_the_project_id_format():
    sim = HighwayEnvSimulator(SimConfig())
    scene = sim.reset(spec())
    assert scene.metadata["ego_lane_id"] == lane_id(("a", "b", 1))
    assert scene.ego.rear_axle_to_center_m == pytest.approx(1.45)
    cx, _ = scene.ego.center_xy
    assert cx == pytest.approx(sim.world.ego.position[0])


@pytest.mark.parametrize("family", ["dense_highway", "on_ramp_merge"])  # straight, curved
def test_fast_road_matches_stock_highway_env_bit_for_bit(monkeypatch, family):
    import highway_env.road.road as hw_road

    import sim_eval.sim.highway as highway

    fast = fingerprint(run(HighwayEnvSimulator(SimConfig()), spec(family, 3), 15))
    monkeypatch.setattr(highway, "_FAST_ROAD", hw_road.Road)
    monkeypatch.setattr(highway, "_FAST_NETWORK", hw_road.RoadNetwork)
    stock = fingerprint(run(HighwayEnvSimulator(SimConfig()), spec(family, 3), 15))
    assert np.array_equal(fast, stock)


def test_background_wrecks_are_counted_and_removed():
    from highway_env.vehicle.behavior import IDMVehicle

    name = "_test_wreck"

    @register_family(name)
    def build(world):
        straight_road(world, 3, 800.0, 30.0)
        for s in (120.0, 122.0):  # two overlapping cars: they crash at once
            world.road.vehicles.append(IDMVehicle.make_on_lane(world.road, ("a", "b", 0), s, 10.0))
        return FamilySetup(
            ego_start=EgoStart(("a", "b", 2), 50.0, 10.0),
            route=RouteSpec(lanes=[("a", "b", 2)], end_longitudinal_m=500.0),
            map_name="test",
        )

    try:
        sim = HighwayEnvSimulator(SimConfig(wreck_removal_s=1.0))
        scenes = run(sim, spec(name), 15)
        assert len(scenes[1].agents) == 2  # the wrecks stay for a while ...
        assert scenes[-1].agents == []  # ... then vanish
        assert sim.info.events["background_crashed_vehicles"] == 2
        assert not sim.info.events.get("collision")
    finally:
        FAMILIES.pop(name, None)


def test_sim_yaml_matches_the_dataclass_defaults():
    from sim_eval.sim.config import DEFAULT_SIM_CONFIG, load_sim_config

    assert DEFAULT_SIM_CONFIG.is_file()
    assert load_sim_config() == SimConfig()
    assert load_sim_config(overrides=["actuation_delay_s=0.2"]).actuation_delay_s == 0.2


def test_route_length_is_the_lane_arc_length_and_stop_lines_span_the_lanes():
    from highway_env.road.road import RoadNetwork

    from sim_eval.sim.convert import build_route, stop_line_across

    net = RoadNetwork.straight_road_network(2, length=100.0, nodes_str=("a", "b"))
    RoadNetwork.straight_road_network(2, start=100.0, length=50.0, nodes_str=("b", "c"), net=net)
    route = build_route(net, [("a", "b", 1), ("b", "c", 1)], 20.0, 30.0, Command.LANE_FOLLOW)
    assert route.length_m == pytest.approx(80.0 + 30.0)
    assert route.lane_ids == ("a>b>1", "b>c>1")
    assert np.allclose(route.waypoints[0], [20.0, -4.0])  # highway-env y = 4 is REP-103 y = -4
    assert np.allclose(route.waypoints[-1], [130.0, -4.0])
    line = stop_line_across(net, [("a", "b", 0), ("a", "b", 1)], 90.0, "s1", light_id="L1")
    ys = sorted(line.points[:, 1])
    assert np.allclose(line.points[:, 0], 90.0) and ys == pytest.approx([-6.0, 2.0])
    assert line.lane_ids == ("a>b>0", "a>b>1") and line.light_id == "L1"


def test_holding_still_fades_the_last_speed_out_instead_of_braking_at_the_limit():
    # A plan that stops, taken over at 0.6 m/s: the follower brakes what is left at a
    # speed-proportional rate (never the 9 m/s^2 vehicle limit, which broke the comfort jerk
    # bound at every stop) and still comes to a full stop within a second, without reversing.
    limits = VehicleLimits()
    follower = TrajectoryFollower(FollowerConfig(), limits)
    follower.submit(Trajectory.stationary(), EgoState(t=0.0, x=0.0, y=0.0, yaw=0.0, speed=0.6), 0.0)
    v, dt, commands = 0.6, 0.1, []
    for k in range(10):
        a, _ = follower.control(k * dt, ControlState(0.0, 0.0, 0.0, v), dt)
        commands.append(a)
        v = max(0.0, v + a * dt)
    assert v == 0.0
    assert max(abs(a) for a in commands) <= 1.5
    assert commands[-1] == 0.0  # stopped: nothing more to brake
