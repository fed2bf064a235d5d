"""Simple planners: constant velocity, CTRA (history only) and IDM lane keeping (privileged)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml
from shapely.geometry import Polygon

from planner.base import call_planner
from planner.config import ConfigError, to_dict
from planner.geometry import ego_footprint, project_to_polyline
from planner.planners import make_planner
from planner.planners.baselines import (
    BASELINES_CONFIG_PATH,
    IDM_CONFIG_PATH,
    BaselinesConfig,
    ConstantVelocityPlanner,
    CTRAPlanner,
    IDMLaneKeepingConfig,
    IDMLaneKeepingPlanner,
    build_lane_path,
    find_ego_lane,
)
from planner.taxonomy import AgentClass, CausalFactorKind, LongitudinalDecision, Side
from planner.types import (
    EGO_SPEED,
    EGO_YAW,
    MAX_ABS_CURVATURE_PER_M,
    PLAN_STEPS,
    MapData,
    Trajectory,
)
from tests.helpers import (
    arc_points,
    curved_road_map,
    lane_from_centerline,
    make_agent,
    make_scene,
    run_closed_loop,
    scene_input,
    straight_road_map,
)


def _assert_feasible(traj: Trajectory, v0: float) -> None:
    """Valid, and exactly what its own controls integrate to (from_controls built it)."""
    traj.validate()
    again = Trajectory.from_controls(traj.accel, traj.curvature, v0)
    np.testing.assert_allclose(again.data, traj.data, atol=1e-9)


# ---- configs ----------------------------------------------------------------------------------------
def test_yaml_defaults_equal_the_dataclass_defaults():
    # The planners fall back to the dataclass defaults where configs/ is absent (a wheel
    # install): the two must not drift apart.
    assert yaml.safe_load(IDM_CONFIG_PATH.read_text()) == to_dict(IDMLaneKeepingConfig())
    assert yaml.safe_load(BASELINES_CONFIG_PATH.read_text()) == to_dict(BaselinesConfig())


def test_factories_take_config_overrides_and_options():
    idm = make_planner("idm", overrides=["idm.min_gap_m=3"], idm={"time_headway_s": 1.0})
    assert idm.config.idm.min_gap_m == 3.0
    assert idm.config.idm.time_headway_s == 1.0
    assert idm.config.idm.max_accel_mps2 == 1.5  # the rest keeps the YAML defaults
    ctra = make_planner("ctra", fit_window_s=0.5)
    assert ctra.config.fit_window_s == 0.5
    cv = make_planner("const-vel", overrides=["speed_window_s=0.2"])
    assert cv.config.speed_window_s == 0.2
    with pytest.raises(ConfigError, match="did you mean 'time_headway_s'"):
        make_planner("idm", idm={"time_headway": 1.0})
    with pytest.raises(ConfigError, match="did you mean 'fit_window_s'"):
        make_planner("ctra", overrides=["fit_windw_s=1"])
    with pytest.raises(ConfigError, match="max_abs_accel_mps2"):
        make_planner("ctra", max_abs_accel_mps2=12.0)


def test_planners_are_privileged_only_where_they_read_the_scene():
    assert not ConstantVelocityPlanner.privileged
    assert not CTRAPlanner.privileged
    assert IDMLaneKeepingPlanner.privileged


# ---- constant velocity ----------------------------------------------------------------------------
def test_const_vel_continues_straight_at_the_current_speed():
    scene = make_scene(ego_xy=(0.0, 0.0), ego_yaw=0.8, ego_speed_mps=12.0)
    out = make_planner("const-vel").plan(scene_input(scene))
    traj = out.trajectory
    assert len(traj) == PLAN_STEPS
    np.testing.assert_allclose(traj.speed, 12.0)
    np.testing.assert_allclose(traj.xy[:, 0], 12.0 * traj.times, atol=1e-9)
    np.testing.assert_allclose(traj.xy[:, 1], 0.0, atol=1e-12)
    np.testing.assert_allclose(traj.yaw, 0.0, atol=1e-12)
    _assert_feasible(traj, 12.0)


def test_const_vel_ignores_a_single_speed_glitch():
    inp = scene_input(make_scene(ego_speed_mps=10.0))
    inp.ego_history[-2, EGO_SPEED] = 40.0  # one bad odometry sample in the window
    assert make_planner("const-vel").plan(inp).trajectory.speed[0] == pytest.approx(10.0)


# ---- CTRA -----------------------------------------------------------------------------------------
def test_ctra_reproduces_a_constant_turn():
    speed, yaw_rate = 10.0, 0.2  # radius 50 m, turning left
    scene = make_scene(
        ego_xy=(5.0, -2.0), ego_yaw=1.0, ego_speed_mps=speed, ego_yaw_rate_radps=yaw_rate
    )
    traj = make_planner("ctra").plan(scene_input(scene)).trajectory
    t = traj.times
    radius = speed / yaw_rate
    np.testing.assert_allclose(traj.yaw, yaw_rate * t, atol=1e-6)
    np.testing.assert_allclose(traj.xy[:, 0], radius * np.sin(yaw_rate * t), atol=0.05)
    np.testing.assert_allclose(traj.xy[:, 1], radius * (1 - np.cos(yaw_rate * t)), atol=0.05)
    np.testing.assert_allclose(traj.speed, speed, atol=1e-6)
    np.testing.assert_allclose(traj.curvature, yaw_rate / speed, atol=1e-6)
    _assert_feasible(traj, speed)


def test_ctra_extrapolates_acceleration_and_a_right_turn():
    scene = make_scene(ego_speed_mps=8.0, ego_accel_mps2=1.0, ego_yaw_rate_radps=-0.1)
    traj = make_planner("ctra").plan(scene_input(scene)).trajectory
    np.testing.assert_allclose(traj.speed, 8.0 + 1.0 * traj.times, atol=1e-6)
    np.testing.assert_allclose(traj.yaw, -0.1 * traj.times, atol=1e-6)
    assert traj.xy[-1, 1] < 0  # right turn: -y


def test_ctra_is_robust_to_an_outlier_and_clamps_to_the_limits():
    inp = scene_input(make_scene(ego_speed_mps=10.0, ego_yaw_rate_radps=0.1))
    inp.ego_history[-4, EGO_YAW] += 0.5  # one wild heading sample
    traj = make_planner("ctra").plan(inp).trajectory
    np.testing.assert_allclose(traj.yaw[-1], 0.1 * 6.4, atol=0.02)
    # A history that would extrapolate to impossible controls is clamped, not rejected.
    wild = scene_input(make_scene(ego_speed_mps=1.0))
    wild.ego_history[:, EGO_SPEED] = np.linspace(0.0, 30.0, len(wild.ego_history))  # 20 m/s^2
    wild.ego_history[:, EGO_YAW] = np.linspace(-3.0, 0.0, len(wild.ego_history))  # 2 rad/s
    traj = make_planner("ctra").plan(wild).trajectory
    assert np.abs(traj.accel).max() <= 9.8 + 1e-9
    assert np.abs(traj.curvature).max() <= MAX_ABS_CURVATURE_PER_M + 1e-9
    assert traj.speed.max() <= 40.0 + 1e-9
    _assert_feasible(traj, float(wild.ego_history[-1, EGO_SPEED]))


def test_ctra_decelerating_history_stops_and_stays_stopped():
    scene = make_scene(ego_speed_mps=3.0, ego_accel_mps2=-2.0)
    traj = make_planner("ctra").plan(scene_input(scene)).trajectory
    assert traj.speed[-1] == 0.0
    assert (traj.speed >= 0).all()
    assert traj.xy[-1, 0] == pytest.approx(3.0**2 / (2 * 2.0), abs=0.05)


# ---- IDM lane keeping -------------------------------------------------------------------------------
def test_idm_stops_behind_a_stopped_lead_without_colliding():
    lead = make_agent("stalled", 45.0, 0.0, speed_mps=0.0)
    scene = make_scene(straight_road_map(), ego_speed_mps=12.0, agents=[lead])
    planner = make_planner("idm")
    out = call_planner(planner, scene_input(scene), scene)
    decision = out.decision
    assert decision.longitudinal is LongitudinalDecision.LEAD_OBSTACLE_FOLLOWING
    (factor,) = decision.factors
    assert factor.kind is CausalFactorKind.CRITICAL_OBJECT
    assert factor.object_id == "stalled" and factor.object_class is AgentClass.VEHICLE
    assert factor.side is Side.AHEAD
    front = scene.ego.rear_axle_to_center_m + scene.ego.length / 2
    assert factor.distance_m == pytest.approx(45.0 - 2.25 - front)
    assert factor.relative_speed_mps == pytest.approx(-12.0)
    assert out.trajectory.speed[-1] < out.trajectory.speed[0]
    _assert_feasible(out.trajectory, 12.0)

    frames, outputs = run_closed_loop(planner, scene, steps=120)
    lead_box = Polygon(lead.corners())
    gaps = [Polygon(ego_footprint(f.ego)).distance(lead_box) for f in frames]
    assert min(gaps) > 0.5  # never touches it
    assert frames[-1].ego.speed < 0.05  # stopped...
    assert gaps[-1] == pytest.approx(planner.config.idm.min_gap_m, abs=1.0)  # ...at about s0
    assert abs(frames[-1].ego.y) < 1e-6  # in its lane
    for f, o in zip(frames, outputs):
        assert not Polygon(ego_footprint(f.ego)).intersects(lead_box)
        # every plan keeps clear of the lead over its whole horizon
        world = o.trajectory.to_world(f.ego)
        assert (world[:, 0] + front < lead.x - lead.length / 2).all()


def test_idm_tracks_the_speed_limit_on_a_free_road():
    scene = make_scene(straight_road_map(speed_limit_mps=15.0), ego_speed_mps=10.0)
    out = call_planner(make_planner("idm"), scene_input(scene), scene)
    assert out.decision.longitudinal is LongitudinalDecision.SET_SPEED_TRACKING
    assert out.decision.target_speed_mps == 15.0
    assert out.decision.factors[0].kind is CausalFactorKind.SPEED_LIMIT
    speed = out.trajectory.speed
    assert (np.diff(speed) >= -1e-9).all() and speed[-1] <= 15.0 + 1e-6 and speed[-1] > 13.0
    np.testing.assert_allclose(out.trajectory.xy[:, 1], 0.0, atol=1e-6)


def test_idm_ignores_agents_in_the_next_lane_and_behind():
    road = straight_road_map(n_lanes=2)
    agents = [
        make_agent("beside", 25.0, 3.7, speed_mps=0.0),
        make_agent("behind", -15.0, 0.0, speed_mps=10.0),
    ]
    scene = make_scene(road, ego_speed_mps=10.0, agents=agents)
    out = call_planner(make_planner("idm"), scene_input(scene), scene)
    assert out.decision.longitudinal is LongitudinalDecision.SET_SPEED_TRACKING
    assert out.trajectory.speed[-1] >= 10.0


def test_idm_follows_a_moving_lead_at_its_speed():
    lead = make_agent("car", 40.0, 0.0, speed_mps=8.0)
    scene = make_scene(straight_road_map(speed_limit_mps=20.0), ego_speed_mps=8.0, agents=[lead])
    frames, outputs = run_closed_loop(make_planner("idm"), scene, steps=150)
    assert outputs[-1].decision.longitudinal is LongitudinalDecision.LEAD_OBSTACLE_FOLLOWING
    assert outputs[-1].decision.target_speed_mps == pytest.approx(8.0)
    assert frames[-1].ego.speed == pytest.approx(8.0, abs=0.3)
    # settles near the IDM equilibrium gap s0 + v T = 2 + 8 x 1.5 = 14 m
    gap = Polygon(ego_footprint(frames[-1].ego)).distance(Polygon(frames[-1].agents[0].corners()))
    assert 12.0 < gap < 20.0


def test_idm_follows_a_curved_lane():
    road = curved_road_map(radius_m=50.0, angle_rad=math.pi / 2)
    scene = make_scene(road, ego_xy=(-20.0, 0.0), ego_speed_mps=10.0)
    planner = make_planner("idm")
    out = call_planner(planner, scene_input(scene), scene)
    # the plan itself bends left onto the curve
    assert out.trajectory.xy[-1, 1] > 5.0 and out.trajectory.curvature.max() > 0.015
    frames, _ = run_closed_loop(planner, scene, steps=100)  # 10 s: through the curve
    centre = np.concatenate([road.lanes[k].centerline for k in ("approach", "curve", "exit")])
    offsets = [abs(project_to_polyline(centre, [f.ego.x, f.ego.y])[1]) for f in frames]
    assert max(offsets) < 0.5
    assert frames[-1].ego.yaw == pytest.approx(math.pi / 2, abs=0.05)  # now heading north
    mid = [f for f in frames if f.ego.x > 15.0 and f.ego.y < 30.0]  # well inside the arc
    assert mid and all(abs(f.ego.curvature - 1 / 50.0) < 0.004 for f in mid)


def test_idm_takes_the_route_branch_at_a_fork():
    approach = np.stack([np.linspace(-30.0, 0.0, 31), np.zeros(31)], axis=1)
    straight = np.stack([np.linspace(0.0, 150.0, 151), np.zeros(151)], axis=1)
    left = arc_points((0.0, 0.0), 0.0, 40.0, 1.2)
    road = MapData(
        lanes={
            "approach": lane_from_centerline("approach", approach, successors=("straight", "left")),
            "straight": lane_from_centerline("straight", straight, predecessors=("approach",)),
            "left": lane_from_centerline("left", left, predecessors=("approach",)),
        }
    )
    planner = make_planner("idm")
    ends = {}
    for branch in ("straight", "left"):
        scene = make_scene(road, ego_xy=(-10.0, 0.0), route_lane_ids=["approach", branch])
        out = call_planner(planner, scene_input(scene), scene)
        ends[branch] = out.trajectory.xy[-1]
    assert abs(ends["straight"][1]) < 0.1
    assert ends["left"][1] > 5.0


def test_idm_prefers_the_route_lane_where_lanes_overlap():
    road = straight_road_map(n_lanes=1)
    # a second lane on top of lane_0 (e.g. a turn pocket that begins here)
    pocket = road.lanes["lane_0"].centerline + np.array([0.0, 0.5])
    road.lanes["pocket"] = lane_from_centerline("pocket", pocket)
    cfg = IDMLaneKeepingConfig()
    on_route = make_scene(road, ego_xy=(0.0, 0.0), route_lane_ids=["pocket"])
    assert find_ego_lane(on_route, cfg)[0].id == "pocket"
    default = make_scene(road, ego_xy=(0.0, 0.0), route_lane_ids=["lane_0"])
    assert find_ego_lane(default, cfg)[0].id == "lane_0"


def test_lane_path_follows_successors_and_extends_a_dead_end():
    road = curved_road_map(radius_m=30.0, approach_m=20.0, exit_m=10.0)
    scene = make_scene(road, ego_xy=(-10.0, 0.0))
    lane, s = find_ego_lane(scene, IDMLaneKeepingConfig())
    assert lane.id == "approach" and s == pytest.approx(10.0)
    path = build_lane_path(scene, lane, s, length_ahead_m=200.0)
    assert path.lane_ids == ("approach", "curve", "exit")
    assert path.s[-1] >= 200.0
    assert len(path.speed_limit_mps) == len(path.xy) - 1


def test_idm_without_a_lane_stops_and_says_so():
    scene = make_scene(straight_road_map(), ego_xy=(0.0, 30.0), ego_speed_mps=5.0)
    out = call_planner(make_planner("idm"), scene_input(scene), scene)
    assert out.status == "fallback" and out.flags == ("no_lane_near_ego",)
    assert out.decision is None
    assert out.trajectory.speed[-1] == 0.0


def test_idm_without_a_scene_errors_clearly():
    scene = make_scene()
    with pytest.raises(ValueError, match="'idm' is privileged"):
        call_planner(make_planner("idm"), scene_input(scene), None)


def test_idm_brakes_for_a_predicted_cut_in():
    # A slower car in the next lane drifting into the ego lane: not in the path now, in it
    # after ~1 s at constant velocity, so the plan slows for it; if it stays in its lane the
    # plan does not.
    road = straight_road_map(n_lanes=2, speed_limit_mps=15.0)
    planner = make_planner("idm")
    speeds = {}
    for name, vy in (("cut_in", -1.5), ("stays", 0.0)):
        car = make_agent("car", 30.0, 3.7, speed_mps=10.0)
        car.vy = vy
        scene = make_scene(road, ego_speed_mps=15.0, agents=[car])
        out = call_planner(planner, scene_input(scene), scene)
        assert out.decision.longitudinal is LongitudinalDecision.SET_SPEED_TRACKING
        speeds[name] = out.trajectory.speed
    assert speeds["stays"].min() >= 15.0 - 1e-6
    assert speeds["cut_in"][30] < 13.0


@pytest.mark.parametrize("name", ["const-vel", "ctra", "idm"])
def test_planners_handle_a_standing_start(name):
    scene = make_scene(ego_speed_mps=0.0)
    out = call_planner(make_planner(name), scene_input(scene), scene)
    _assert_feasible(out.trajectory, 0.0)
    if name == "idm":  # free lane ahead: it drives off
        assert out.trajectory.speed[-1] > 5.0
    else:  # history-only baselines extrapolate standing still
        np.testing.assert_allclose(out.trajectory.xy, 0.0, atol=1e-12)
