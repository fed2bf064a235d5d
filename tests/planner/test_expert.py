"""The privileged expert on hand-built scenes: each test states the driving situation, the
decision the expert must take, the object or rule that must be named as its cause (with the
distance measured on the scene), and that the plan is valid and collision-free against the
constant-velocity predicted boxes."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from shapely.geometry import Polygon

from planner.base import call_planner
from planner.config import ConfigError
from planner.planners import make_planner
from planner.planners.expert import ExpertConfig, ExpertPlanner, load_expert_config
from planner.types import (
    AgentClass,
    CausalFactorKind,
    Lane,
    LateralDecision,
    LightState,
    LongitudinalDecision,
    MapData,
    PlannerOutput,
    Scene,
    Side,
    StopLine,
    TrafficLight,
    box_corners,
)
from tests.helpers import (
    lane_from_centerline,
    make_agent,
    make_scene,
    run_closed_loop,
    scene_input,
    straight_road_map,
)

EGO_FRONT_M = 1.45 + 4.9 / 2  # rear axle -> front bumper of the helpers' default ego


def _plan(scene: Scene, planner: ExpertPlanner | None = None) -> PlannerOutput:
    planner = planner or ExpertPlanner()
    out = call_planner(planner, scene_input(scene), scene)
    out.trajectory.validate()
    assert out.decision is not None
    return out


def _overlaps(scene: Scene, out: PlannerOutput) -> list[tuple[str, float]]:
    """(agent id, time) of every overlap between the planned ego box and an agent's box
    predicted at constant velocity."""
    ego = scene.ego
    poses = out.trajectory.to_world(ego)
    hits = []
    for k, (x, y, yaw) in enumerate(poses):
        t = (k + 1) * out.trajectory.dt
        cx = x + ego.rear_axle_to_center_m * math.cos(yaw)
        cy = y + ego.rear_axle_to_center_m * math.sin(yaw)
        ego_box = Polygon(box_corners(cx, cy, yaw, ego.length, ego.width))
        for a in scene.agents:
            box = Polygon(box_corners(a.x + a.vx * t, a.y + a.vy * t, a.yaw, a.length, a.width))
            if ego_box.intersects(box):
                hits.append((a.id, t))
    return hits


def _factor(out: PlannerOutput, kind: CausalFactorKind, object_id: str | None = None):
    for f in out.decision.factors:
        if f.kind == kind and (object_id is None or f.object_id == object_id):
            return f
    raise AssertionError(f"no {kind} factor {object_id or ''} in {out.decision.factors}")


def _one_lane(speed_limit_mps: float = 13.9) -> MapData:
    return straight_road_map(n_lanes=1, speed_limit_mps=speed_limit_mps)


# ---- free road and following -------------------------------------------------------------------
def test_free_road_tracks_the_speed_limit():
    out = _plan(make_scene(_one_lane(), ego_speed_mps=10.0))
    d = out.decision
    assert d.longitudinal == LongitudinalDecision.SET_SPEED_TRACKING
    assert d.lateral == LateralDecision.LANE_KEEPING
    assert d.target_speed_mps == pytest.approx(13.9, abs=0.05)
    assert _factor(out, CausalFactorKind.SPEED_LIMIT).distance_m is None
    speed = out.trajectory.speed
    assert speed[-1] > 13.0 and speed.max() <= 13.9 + 1e-6  # accelerates to, not past, the limit
    assert np.abs(out.trajectory.xy[:, 1]).max() < 0.05  # stays on the centerline


def test_slower_lead_is_followed_at_a_safe_gap():
    lead = make_agent("lead", 30.0, 0.0, 0.0, 6.0)
    scene = make_scene(_one_lane(), ego_speed_mps=10.0, agents=[lead])
    out = _plan(scene)
    d = out.decision
    assert d.longitudinal == LongitudinalDecision.LEAD_OBSTACLE_FOLLOWING
    f = _factor(out, CausalFactorKind.CRITICAL_OBJECT, "lead")
    true_gap = (lead.x - lead.length / 2) - EGO_FRONT_M
    assert f.distance_m == pytest.approx(true_gap, rel=0.1)
    assert f.relative_speed_mps == pytest.approx(-4.0, abs=0.1)
    assert f.side == Side.AHEAD
    # bumper gap to the (constant-velocity) lead never below the IDM minimum gap
    lead_rear = lead.x - lead.length / 2 + 6.0 * out.trajectory.times
    gap = lead_rear - (out.trajectory.xy[:, 0] + EGO_FRONT_M)
    assert gap.min() > 2.0
    assert out.trajectory.speed[-1] < 8.0  # settles towards the lead's speed
    assert not _overlaps(scene, out)


def test_hard_braking_lead_with_history_brakes_early():
    """Constant-accel prediction from the lead's history: the ego brakes harder than with a
    constant-velocity lead at the same distance."""
    lead = make_agent("lead", 35.0, 0.0, 0.0, 10.0)
    t = np.arange(-0.5, 0.01, 0.1)
    lead.history = np.stack(
        [t, 35.0 + 10.0 * t, 0 * t, 0 * t, 10.0 - 6.0 * t], axis=1
    )  # was braking at 6 m/s^2
    braking = _plan(make_scene(_one_lane(), ego_speed_mps=10.0, agents=[lead]))
    lead.history = None
    steady = _plan(make_scene(_one_lane(), ego_speed_mps=10.0, agents=[lead]))
    assert braking.trajectory.accel[:10].mean() < steady.trajectory.accel[:10].mean() - 0.5


# ---- passing obstacles -------------------------------------------------------------------------
def test_stopped_vehicle_with_free_left_lane_is_passed_on_the_left():
    stopped = make_agent("stopped", 40.0, 0.0, 0.0, 0.0)
    scene = make_scene(straight_road_map(n_lanes=2), ego_speed_mps=10.0, agents=[stopped])
    out = _plan(scene)
    d = out.decision
    assert d.lateral in (LateralDecision.LANE_CHANGE, LateralDecision.OUT_OF_LANE_NUDGE)
    assert d.lateral_side == Side.LEFT
    f = _factor(out, CausalFactorKind.CRITICAL_OBJECT, "stopped")
    true_gap = (stopped.x - stopped.length / 2) - EGO_FRONT_M
    assert f.distance_m == pytest.approx(true_gap, rel=0.1)
    assert f.relative_speed_mps == pytest.approx(-10.0, abs=0.1)
    assert out.trajectory.xy[:, 1].max() > 2.0  # moves left (+y) past it
    assert not _overlaps(scene, out)


def test_stopped_vehicle_with_no_way_around_stops():
    stopped = make_agent("stopped", 40.0, 0.0, 0.0, 0.0)
    scene = make_scene(_one_lane(), ego_speed_mps=10.0, agents=[stopped])
    out = _plan(scene)
    assert out.decision.longitudinal in (
        LongitudinalDecision.STOP_FOR_STATIC_CONSTRAINTS,
        LongitudinalDecision.LEAD_OBSTACLE_FOLLOWING,
    )
    _factor(out, CausalFactorKind.CRITICAL_OBJECT, "stopped")
    assert out.trajectory.speed[-1] < 1.0  # IDM creeps up to its standstill gap
    assert not _overlaps(scene, out)


def test_cone_encroaching_half_a_metre_gives_an_in_lane_nudge_away_from_it():
    # lane_0 is centred on y = 0 with half width 1.85 m: a 0.5 m cone centred at y = -1.6
    # reaches 0.5 m into the lane from the right
    cone = make_agent("cone", 30.0, -1.6, 0.0, 0.0, AgentClass.CONE, 0.5, 0.5)
    scene = make_scene(_one_lane(), ego_speed_mps=8.0, agents=[cone])
    out = _plan(scene)
    d = out.decision
    assert d.lateral == LateralDecision.IN_LANE_NUDGE
    assert d.lateral_side == Side.LEFT
    f = _factor(out, CausalFactorKind.CRITICAL_OBJECT, "cone")
    assert f.side == Side.RIGHT
    assert f.distance_m == pytest.approx(30.0 - 0.25 - EGO_FRONT_M, rel=0.1)
    y = out.trajectory.xy[:, 1]
    assert y.max() > 0.1  # shifted left...
    assert y.max() + 1.9 / 2 <= 1.85 + 1e-6  # ...but stays inside the lane
    assert out.trajectory.speed.min() > 7.0  # no need to slow down
    assert not _overlaps(scene, out)


def test_cones_reaching_far_into_a_single_lane_stop_the_ego():
    cones = [
        make_agent(f"cone{i}", 30.0 + 2 * i, -0.6, 0.0, 0.0, AgentClass.CONE, 0.5, 0.5)
        for i in range(3)
    ]
    scene = make_scene(_one_lane(), ego_speed_mps=8.0, agents=cones)
    out = _plan(scene)
    assert out.decision.longitudinal == LongitudinalDecision.STOP_FOR_STATIC_CONSTRAINTS
    assert _factor(out, CausalFactorKind.CRITICAL_OBJECT).object_id == "cone0"
    assert not _overlaps(scene, out)


# ---- traffic controls ----------------------------------------------------------------------
def _signalised(state: LightState, ego_speed: float = 10.0) -> Scene:
    m = _one_lane()
    m.stop_lines["sl"] = StopLine(
        "sl", np.array([[40.0, -1.85], [40.0, 1.85]]), lane_ids=("lane_0",), light_id="tl"
    )
    scene = make_scene(m, ego_speed_mps=ego_speed)
    scene.traffic_lights.append(TrafficLight("tl", state, stop_line_id="sl", lane_ids=("lane_0",)))
    return scene


def test_red_light_stops_before_the_stop_line():
    scene = _signalised(LightState.RED)
    out = _plan(scene)
    d = out.decision
    assert d.longitudinal == LongitudinalDecision.STOP_FOR_STATIC_CONSTRAINTS
    f = _factor(out, CausalFactorKind.TRAFFIC_LIGHT, "tl")
    assert f.distance_m == pytest.approx(40.0 - EGO_FRONT_M, rel=0.1)
    front = out.trajectory.xy[:, 0] + EGO_FRONT_M
    assert front.max() < 40.0  # never past the line
    assert out.trajectory.speed[-1] < 0.3


def test_green_light_is_ignored_and_late_yellow_is_run():
    assert _plan(_signalised(LightState.GREEN)).decision.longitudinal == (
        LongitudinalDecision.SET_SPEED_TRACKING
    )
    # 14 m/s with 6 m to the line: stopping needs > 3 m/s^2, so the expert goes on
    m = _one_lane()
    m.stop_lines["sl"] = StopLine("sl", np.array([[12.0, -1.85], [12.0, 1.85]]), light_id="tl")
    scene = make_scene(m, ego_speed_mps=13.9)
    scene.traffic_lights.append(TrafficLight("tl", LightState.YELLOW, stop_line_id="sl"))
    assert _plan(scene).decision.longitudinal == LongitudinalDecision.SET_SPEED_TRACKING


def test_stop_sign_needs_a_full_stop_then_releases():
    m = _one_lane()
    m.stop_lines["stop"] = StopLine(
        "stop", np.array([[20.0, -1.85], [20.0, 1.85]]), lane_ids=("lane_0",), is_stop_sign=True
    )
    planner = ExpertPlanner()
    scene = make_scene(m, ego_speed_mps=6.0)
    out = _plan(scene, planner)
    assert out.decision.longitudinal == LongitudinalDecision.STOP_FOR_STATIC_CONSTRAINTS
    assert _factor(out, CausalFactorKind.STOP_CONTROL, "stop").distance_m == pytest.approx(
        20.0 - EGO_FRONT_M, rel=0.1
    )
    frames, outs = run_closed_loop(planner, scene, 80)
    speeds = [f.ego.speed for f in frames]
    assert min(speeds) < 0.3  # came to a stop
    front = [f.ego.x + EGO_FRONT_M for f in frames]
    stop_k = int(np.argmin(speeds))
    assert front[stop_k] < 20.0
    assert front[-1] > 20.0  # and then went on


# ---- yielding ----------------------------------------------------------------------------------
def test_pedestrian_crossing_ahead_is_yielded_to():
    # walking across the lane from the right at 1.4 m/s, 25 m ahead
    ped = make_agent("ped", 25.0, -3.0, math.pi / 2, 1.4, AgentClass.PEDESTRIAN, 0.6, 0.6)
    scene = make_scene(_one_lane(), ego_speed_mps=10.0, agents=[ped])
    out = _plan(scene)
    assert out.decision.longitudinal == LongitudinalDecision.YIELD
    f = _factor(out, CausalFactorKind.CRITICAL_OBJECT, "ped")
    assert f.object_class == AgentClass.PEDESTRIAN
    assert f.side == Side.RIGHT
    assert f.distance_m == pytest.approx(25.0 - 0.3 - EGO_FRONT_M, rel=0.1)
    front = out.trajectory.xy[:, 0] + EGO_FRONT_M
    assert front.max() < 25.0 - 0.3  # stops before the crossing point
    assert not _overlaps(scene, out)


def test_pedestrian_walking_along_the_kerb_is_not_yielded_to():
    ped = make_agent("ped", 25.0, -3.5, 0.0, 1.4, AgentClass.PEDESTRIAN, 0.6, 0.6)
    out = _plan(make_scene(_one_lane(), ego_speed_mps=10.0, agents=[ped]))
    assert out.decision.longitudinal == LongitudinalDecision.SET_SPEED_TRACKING


def _intersection() -> MapData:
    """Ego road along +x through the origin region; a crossing road along +y at x = 50."""
    xs = np.linspace(-50.0, 150.0, 201)
    ys = np.linspace(-100.0, 100.0, 201)
    ego_lane = lane_from_centerline("ego_road", np.stack([xs, 0 * xs], axis=1))
    cross = lane_from_centerline("cross_road", np.stack([0 * ys + 50.0, ys], axis=1))
    return MapData(lanes={"ego_road": ego_lane, "cross_road": cross}, name="x")


def test_vehicle_reaching_an_unprotected_conflict_point_first_is_yielded_to():
    # the other car is 20 m from the crossing at 10 m/s (2 s); the ego is 45 m away at 10 m/s
    other = make_agent("other", 50.0, -20.0, math.pi / 2, 10.0)
    scene = make_scene(_intersection(), ego_speed_mps=10.0, agents=[other])
    out = _plan(scene)
    assert out.decision.longitudinal == LongitudinalDecision.YIELD
    f = _factor(out, CausalFactorKind.CRITICAL_OBJECT, "other")
    assert f.side == Side.RIGHT
    assert not _overlaps(scene, out)
    # far from the crossing (it arrives long after the ego has cleared it): no yield
    late = make_agent("late", 50.0, -95.0, math.pi / 2, 5.0)
    out = _plan(make_scene(_intersection(), ego_speed_mps=10.0, agents=[late]))
    assert out.decision.longitudinal == LongitudinalDecision.SET_SPEED_TRACKING


# ---- lane geometry and routing ------------------------------------------------------------------
def _lane_drop() -> MapData:
    """Two lanes; the right one (lane_0) ends at x = 100, lane_1 continues to x = 300."""
    x0 = np.linspace(-50.0, 100.0, 151)
    x1 = np.linspace(-50.0, 300.0, 351)
    lane0 = lane_from_centerline(
        "lane_0",
        np.stack([x0, 0 * x0], axis=1),
        left_neighbor="lane_1",
        right_boundary_kind="road_edge",
    )
    lane1 = lane_from_centerline(
        "lane_1",
        np.stack([x1, 0 * x1 + 3.7], axis=1),
        right_neighbor="lane_0",
        left_boundary_kind="road_edge",
    )
    return MapData(lanes={"lane_0": lane0, "lane_1": lane1}, name="lane_drop")


def test_lane_ending_changes_toward_the_continuing_lane():
    scene = make_scene(_lane_drop(), ego_speed_mps=12.0, route_lane_ids=("lane_1",))
    out = _plan(scene)
    d = out.decision
    assert d.lateral in (LateralDecision.LANE_CHANGE, LateralDecision.MERGE_SPLIT)
    assert d.lateral_side == Side.LEFT
    f = _factor(out, CausalFactorKind.LANE_GEOMETRY)
    assert f.distance_m == pytest.approx(100.0 - EGO_FRONT_M, rel=0.1)
    assert out.trajectory.xy[-1, 1] > 3.0


def test_lane_ending_with_the_gap_taken_searches_for_a_gap_and_never_runs_off_the_end():
    # a car right beside the ego in the continuing lane, same speed: no gap
    beside = make_agent("beside", 2.0, 3.7, 0.0, 12.0)
    scene = make_scene(
        _lane_drop(), ego_speed_mps=12.0, agents=[beside], route_lane_ids=("lane_1",)
    )
    out = _plan(scene)
    d = out.decision
    assert d.longitudinal == LongitudinalDecision.GAP_SEARCHING
    assert d.lateral == LateralDecision.LANE_KEEPING
    _factor(out, CausalFactorKind.LANE_GEOMETRY)
    assert _factor(out, CausalFactorKind.CRITICAL_OBJECT, "beside").side == Side.LEFT
    assert out.trajectory.speed[-1] < 12.0  # drops back to slot in behind it
    assert not _overlaps(scene, out)


def test_closed_loop_lane_drop_completes_the_change_and_ends_in_lane_keeping():
    scene = make_scene(_lane_drop(), ego_speed_mps=12.0, route_lane_ids=("lane_1",))
    frames, outs = run_closed_loop(ExpertPlanner(), scene, 60)
    assert frames[-1].ego.y == pytest.approx(3.7, abs=0.3)
    assert abs(frames[-1].ego.yaw) < 0.05
    assert outs[-1].decision.lateral == LateralDecision.LANE_KEEPING
    for out in outs:
        out.trajectory.validate()


def test_curve_ahead_gives_speed_adaptation():
    from tests.helpers import curved_road_map

    m = curved_road_map(radius_m=20.0, approach_m=60.0, speed_limit_mps=15.0)
    scene = make_scene(m, ego_xy=(-50.0, 0.0), ego_speed_mps=15.0)
    out = _plan(scene)
    assert out.decision.longitudinal == LongitudinalDecision.SPEED_ADAPTATION
    f = _factor(out, CausalFactorKind.LANE_GEOMETRY)
    assert 25.0 < f.distance_m < 50.0
    assert out.trajectory.speed[-1] < 10.0


# ---- configuration and interface -------------------------------------------------------------
def test_registry_and_config_overrides():
    planner = make_planner("expert", idm_time_headway_s=2.0)
    assert isinstance(planner, ExpertPlanner)
    assert planner.cfg.idm_time_headway_s == 2.0
    with pytest.raises(ConfigError, match="idm_time_headway_s"):
        ExpertPlanner(idm_time_headway=2.0)
    with pytest.raises(TypeError, match="privileged"):
        planner.plan(scene_input(make_scene(_one_lane())))


def test_yaml_defaults_equal_the_dataclass_defaults():
    from planner.planners.expert import CONFIG_PATH

    assert CONFIG_PATH.is_file()
    assert load_expert_config(config_path=CONFIG_PATH) == ExpertConfig()


def test_off_map_follows_the_route_waypoints():
    m = MapData(lanes={}, name="empty")
    scene = make_scene(m, ego_speed_mps=5.0, route_lane_ids=())
    scene.route.waypoints = np.stack([np.linspace(0, 100, 51), np.zeros(51)], axis=1)
    out = _plan(scene)
    assert "off_map" in out.flags
    assert out.trajectory.xy[-1, 0] > 30.0


def test_bad_lane_is_reported_with_its_id():
    bad = Lane("broken", np.array([[0.0, 0.0]]), np.zeros((1, 2)), np.zeros((1, 2)), 10.0)
    scene = make_scene(_one_lane(), ego_speed_mps=5.0)
    scene.map.lanes["broken"] = bad
    with pytest.raises(ValueError, match="broken"):
        _plan(scene)


# ---- priority, lane changes and aborts in closed loop --------------------------------------
def _square_ring_with_entry() -> MapData:
    """A counter-clockwise square 'roundabout' of four 40 m lanes (a successor cycle) and an
    entry lane from the south joining the ring where 'ring_e' starts (x = 20, y = -20)."""
    corners = [(-20.0, -20.0), (20.0, -20.0), (20.0, 20.0), (-20.0, 20.0)]
    names = ["ring_s", "ring_e", "ring_n", "ring_w"]
    lanes = {}
    for k, name in enumerate(names):
        a, b = np.array(corners[k]), np.array(corners[(k + 1) % 4])
        pts = a + np.linspace(0.0, 1.0, 41)[:, None] * (b - a)
        lanes[name] = lane_from_centerline(
            name,
            pts,
            successors=(names[(k + 1) % 4],),
            predecessors=(names[k - 1],) + (("entry",) if name == "ring_e" else ()),
        )
    # the entry comes up from the south-east and ends at the ring_e start
    entry = np.stack([np.full(41, 20.0) + np.linspace(30.0, 0.0, 41), np.linspace(-60, -20, 41)], 1)
    lanes["entry"] = lane_from_centerline("entry", entry, successors=("ring_e",))
    return MapData(lanes=lanes, name="square_ring")


def test_entering_a_ring_yields_to_circulating_traffic_but_circulating_does_not_yield():
    m = _square_ring_with_entry()
    # ego on the entry 25 m before the ring; a circulating car 20 m before the same point
    d = np.array([-30.0, 40.0]) / 50.0
    ego_xy = np.array([20.0, -20.0]) + 25.0 * np.array([0.6, -0.8])
    ego_yaw = math.atan2(d[1], d[0])
    circulating = make_agent("ring_car", 0.0, -20.0, 0.0, 8.0)
    scene = make_scene(
        m,
        ego_xy=ego_xy,
        ego_yaw=ego_yaw,
        ego_speed_mps=8.0,
        agents=[circulating],
        route_lane_ids=("entry", "ring_e", "ring_n"),
    )
    out = _plan(scene)
    assert out.decision.longitudinal == LongitudinalDecision.YIELD
    _factor(out, CausalFactorKind.CRITICAL_OBJECT, "ring_car")
    _factor(out, CausalFactorKind.YIELD_CONTROL)
    assert not _overlaps(scene, out)
    # roles swapped: the ego circulates, the other car enters: the ego keeps its speed
    entering = make_agent("entering", *ego_xy, yaw=ego_yaw, speed_mps=8.0)
    scene = make_scene(
        m,
        ego_xy=(0.0, -20.0),
        ego_speed_mps=8.0,
        agents=[entering],
        route_lane_ids=("ring_s", "ring_e", "ring_n"),
    )
    out = _plan(scene)
    assert out.decision.longitudinal != LongitudinalDecision.YIELD
    # ...unless the entering car is too close and fast to stop for the ego any more
    late_xy = np.array([20.0, -20.0]) + 7.0 * np.array([0.6, -0.8])
    late = make_agent("late", *late_xy, yaw=ego_yaw, speed_mps=11.0)
    scene = make_scene(
        m,
        ego_xy=(2.0, -20.0),
        ego_speed_mps=8.0,
        agents=[late],
        route_lane_ids=("ring_s", "ring_e", "ring_n"),
    )
    out = _plan(scene)
    assert out.decision.longitudinal == LongitudinalDecision.YIELD
    assert not _overlaps(scene, out)


def test_cross_traffic_facing_a_red_light_is_not_yielded_to():
    m = _intersection()
    m.stop_lines["cross_line"] = StopLine(
        "cross_line", np.array([[48.0, -5.0], [52.0, -5.0]]), lane_ids=("cross_road",)
    )
    other = make_agent("other", 50.0, -20.0, math.pi / 2, 10.0)
    scene = make_scene(m, ego_speed_mps=10.0, agents=[other])
    scene.traffic_lights.append(
        TrafficLight(
            "cross_light", LightState.RED, stop_line_id="cross_line", lane_ids=("cross_road",)
        )
    )
    out = _plan(scene)
    assert out.decision.longitudinal == LongitudinalDecision.SET_SPEED_TRACKING


def test_cut_in_from_the_left_lane_becomes_the_lead():
    # 12 m ahead in the left lane, steering into the ego lane at 0.15 rad
    cutter = make_agent("cutter", 15.0, 2.6, -0.15, 9.0)
    scene = make_scene(straight_road_map(n_lanes=2), ego_speed_mps=12.0, agents=[cutter])
    out = _plan(scene)
    assert out.decision.longitudinal == LongitudinalDecision.LEAD_OBSTACLE_FOLLOWING
    f = _factor(out, CausalFactorKind.CRITICAL_OBJECT, "cutter")
    assert f.side == Side.LEFT
    assert out.trajectory.accel[0] < 0.0
    # the same car keeping its lane is not a cut-in
    keeper = make_agent("keeper", 15.0, 3.7, 0.0, 9.0)
    out = _plan(make_scene(straight_road_map(n_lanes=2), ego_speed_mps=12.0, agents=[keeper]))
    assert out.decision.longitudinal != LongitudinalDecision.LEAD_OBSTACLE_FOLLOWING


def test_overtaking_a_slow_vehicle_in_closed_loop():
    slow = make_agent("slow", 35.0, 0.0, 0.0, 5.0)
    scene = make_scene(
        straight_road_map(n_lanes=2, length_m=600.0), ego_speed_mps=8.0, agents=[slow]
    )
    frames, outs = run_closed_loop(ExpertPlanner(), scene, 80)
    first = outs[0].decision
    assert first.lateral == LateralDecision.LANE_CHANGE and first.lateral_side == Side.LEFT
    assert _factor(outs[0], CausalFactorKind.CRITICAL_OBJECT, "slow").side == Side.AHEAD
    assert any(
        o.decision.longitudinal == LongitudinalDecision.ACCELERATION_FOR_PASSING for o in outs
    )
    assert frames[-1].ego.x > frames[-1].agents[0].x + 5.0  # passed it
    for frame, out in zip(frames, outs):
        assert not _overlaps(frame, out)


def test_lane_change_is_aborted_when_a_fast_car_closes_the_gap():
    slow = make_agent("slow", 40.0, 0.0, 0.0, 5.0)
    road = straight_road_map(n_lanes=2, length_m=600.0)
    planner = ExpertPlanner()
    frames, outs = run_closed_loop(planner, make_scene(road, ego_speed_mps=8.0, agents=[slow]), 6)
    assert outs[-1].decision.lateral == LateralDecision.LANE_CHANGE
    scene = frames[-1]
    assert scene.ego.y < 1.2  # still mostly in the origin lane
    scene.agents.append(make_agent("fast", scene.ego.x - 9.0, 3.7, 0.0, 20.0))
    out = call_planner(planner, scene_input(scene), scene)
    assert out.decision.lateral == LateralDecision.LATERAL_ABORT
    assert out.decision.lateral_side == Side.RIGHT
    assert _factor(out, CausalFactorKind.CRITICAL_OBJECT, "fast").side == Side.LEFT
    assert out.trajectory.xy[-1, 1] < 0.3  # back to the origin lane centre


def test_route_leaving_by_the_right_lane_changes_lanes_for_routing():
    x = np.linspace(-50.0, 100.0, 151)
    xe = np.linspace(100.0, 200.0, 101)
    lanes = {
        "main_0": lane_from_centerline(
            "main_0", np.stack([x, 0 * x], 1), left_neighbor="main_1", successors=("exit",)
        ),
        "main_1": lane_from_centerline(
            "main_1", np.stack([x, 0 * x + 3.7], 1), right_neighbor="main_0", successors=("cont",)
        ),
        "exit": lane_from_centerline(
            "exit", np.stack([xe, -0.3 * (xe - 100.0)], 1), predecessors=("main_0",)
        ),
        "cont": lane_from_centerline(
            "cont", np.stack([xe, 0 * xe + 3.7], 1), predecessors=("main_1",)
        ),
    }
    m = MapData(lanes=lanes, name="exit")
    scene = make_scene(m, ego_xy=(0.0, 3.7), ego_speed_mps=10.0, route_lane_ids=("main_0", "exit"))
    out = _plan(scene)
    assert out.decision.lateral == LateralDecision.LANE_CHANGE
    assert out.decision.lateral_side == Side.RIGHT
    f = _factor(out, CausalFactorKind.ROUTING)
    assert f.distance_m == pytest.approx(100.0 - EGO_FRONT_M, rel=0.1)


def test_on_ramp_acceleration_lane_merges_with_merge_split():
    xr = np.linspace(-60.0, 0.0, 61)
    xa = np.linspace(0.0, 80.0, 81)
    xm = np.linspace(-60.0, 300.0, 361)
    lanes = {
        "ramp": lane_from_centerline(
            "ramp", np.stack([xr, -3.7 + 0.0 * xr], 1), successors=("accel",)
        ),
        "accel": lane_from_centerline(
            "accel", np.stack([xa, -3.7 + 0 * xa], 1), predecessors=("ramp",), left_neighbor="main"
        ),
        "main": lane_from_centerline("main", np.stack([xm, 0 * xm], 1), right_neighbor="accel"),
    }
    m = MapData(lanes=lanes, name="ramp")
    scene = make_scene(m, ego_xy=(5.0, -3.7), ego_speed_mps=12.0, route_lane_ids=("main",))
    out = _plan(scene)
    assert out.decision.lateral == LateralDecision.MERGE_SPLIT
    assert out.decision.lateral_side == Side.LEFT
    _factor(out, CausalFactorKind.LANE_GEOMETRY)


def test_random_scenes_always_give_valid_plans_and_decisions():
    """Robustness: random agents of every class around random roads, lights in any state."""
    from tests.helpers import curved_road_map

    rng = np.random.default_rng(7)
    maps = [straight_road_map(n_lanes=3), _lane_drop(), _intersection(), curved_road_map()]
    planners = [ExpertPlanner() for _ in maps]  # one per map: the map index is cached
    classes = list(AgentClass)
    for k in range(40):
        m = maps[k % len(maps)]
        agents = []
        for j in range(int(rng.integers(0, 12))):
            cls = classes[int(rng.integers(len(classes)))]
            speed = (
                0.0 if cls in (AgentClass.CONE, AgentClass.STATIC_OBSTACLE) else rng.uniform(0, 15)
            )
            agents.append(
                make_agent(
                    f"a{j}",
                    rng.uniform(-20, 80),
                    rng.uniform(-8, 8),
                    rng.uniform(-math.pi, math.pi),
                    speed,
                    cls,
                    rng.uniform(0.4, 5.0),
                    rng.uniform(0.4, 2.2),
                )
            )
        scene = make_scene(m, ego_speed_mps=float(rng.uniform(0, 15)), agents=agents)
        if k % 3 == 0:
            m.stop_lines["sl"] = StopLine("sl", np.array([[30.0, -2.0], [30.0, 2.0]]))
            state = [LightState.RED, LightState.YELLOW, LightState.GREEN][k % 9 // 3]
            scene.traffic_lights.append(TrafficLight("tl", state, stop_line_id="sl"))
        planners[k % len(maps)].reset()
        out = _plan(scene, planners[k % len(maps)])
        for f in out.decision.factors:
            assert f.distance_m is None or (math.isfinite(f.distance_m) and f.distance_m >= 0)
        m.stop_lines.pop("sl", None)


def test_obstacle_reaching_far_into_the_lane_gives_an_out_of_lane_nudge_when_the_left_lane_is_free():
    # a 1.0 m wide parked van whose left side reaches 1.4 m into lane_0 (half width 1.85 m)
    van = make_agent("van", 35.0, -1.85 + 1.4 - 0.5, 0.0, 0.0, AgentClass.STATIC_OBSTACLE, 5.0, 1.0)
    road = straight_road_map(n_lanes=2)
    scene = make_scene(road, ego_speed_mps=8.0, agents=[van])
    out = _plan(scene)
    d = out.decision
    assert d.lateral == LateralDecision.OUT_OF_LANE_NUDGE
    assert d.lateral_side == Side.LEFT
    assert _factor(out, CausalFactorKind.CRITICAL_OBJECT, "van").side == Side.RIGHT
    y = out.trajectory.xy[:, 1]
    assert y.max() + 1.9 / 2 > 1.85  # the body crosses the lane line
    assert not _overlaps(scene, out)
    # with a car alongside in the left lane the nudge waits: the van is a wall for now
    car = make_agent("car", 3.0, 3.7, 0.0, 8.0)
    scene = make_scene(road, ego_speed_mps=8.0, agents=[van, car])
    out = _plan(scene)
    assert out.decision.lateral != LateralDecision.OUT_OF_LANE_NUDGE
    assert not _overlaps(scene, out)


def test_all_lanes_ending_with_the_route_need_no_lane_change():
    # both lanes end at x = 250 where the route (on the other lane) ends too
    scene = make_scene(
        straight_road_map(n_lanes=2),
        ego_xy=(200.0, 0.0),
        ego_speed_mps=10.0,
        route_lane_ids=("lane_1",),
    )
    out = _plan(scene)
    assert out.decision.lateral == LateralDecision.LANE_KEEPING
    assert out.decision.longitudinal == LongitudinalDecision.SET_SPEED_TRACKING


def test_cyclist_waiting_at_the_kerb_is_passed_slowly():
    # standing 0.8 m outside the lane edge, 40 m ahead: it may dart out
    cyclist = make_agent(
        "bike", 40.0, -1.85 - 0.8 - 0.3, math.pi / 2, 0.0, AgentClass.CYCLIST, 1.8, 0.6
    )
    scene = make_scene(_one_lane(), ego_speed_mps=13.0, agents=[cyclist])
    out = _plan(scene)
    assert out.decision.longitudinal == LongitudinalDecision.SPEED_ADAPTATION
    f = _factor(out, CausalFactorKind.CRITICAL_OBJECT, "bike")
    assert f.side == Side.RIGHT
    front = out.trajectory.xy[:, 0] + EGO_FRONT_M
    beside = np.flatnonzero(front > 40.0)  # (IDM tracks the lower speed with some lag)
    assert len(beside) and out.trajectory.speed[beside[0]] < 9.0


# ---- smooth commands (the expert's plans are training labels) ---------------------------------
def _t0_accels(outs: list[PlannerOutput]) -> np.ndarray:
    return np.array([o.trajectory.accel[0] for o in outs])


def test_cut_in_in_closed_loop_brakes_smoothly_without_alternating():
    """A car cutting in 6 m ahead at nearly the ego's speed: plain IDM answered with full
    braking at once and then released (+0.3 -> -8 m/s^2 in 0.1 s); the ACC heuristic and the
    command rate limit brake gently and monotonically instead, and never touch the car."""
    cutter = make_agent("cutter", 12.5, 3.0, -0.12, 13.0)
    scene = make_scene(straight_road_map(n_lanes=2), ego_speed_mps=14.0, agents=[cutter])
    frames, outs = run_closed_loop(ExpertPlanner(), scene, 40)
    a0 = _t0_accels(outs)
    step = np.diff(a0)
    cfg = ExpertConfig()
    assert step.min() >= -cfg.comfort_jerk_down_mps3 * 0.1 - 1e-6
    assert step.max() <= cfg.comfort_jerk_up_mps3 * 0.1 + 1e-6
    assert a0.min() > -4.0
    # no frame-to-frame alternation: the change of command reverses sign only a few times
    big = step[np.abs(step) > 0.05]
    assert np.sum(np.diff(np.sign(big)) != 0) <= 3
    for f in frames:
        c = next(a for a in f.agents if a.id == "cutter")
        if abs(c.y - f.ego.y) < 1.9:  # in the ego lane: bumper gap stays positive
            assert c.x - c.length / 2 - (f.ego.x + EGO_FRONT_M) > 1.0


def test_rate_limit_is_waived_when_an_obstacle_needs_hard_braking():
    """Safety first: accelerating on a free road, then a stopped car 22 m ahead (needs about
    4.5 m/s^2): the next command brakes hard at once instead of ramping down at the comfort
    jerk."""
    planner = ExpertPlanner()
    free = make_scene(_one_lane(), ego_speed_mps=12.0)
    first = _plan(free, planner)
    assert first.trajectory.accel[0] > 0.0
    stopped = make_agent("stopped", 22.0 + EGO_FRONT_M + 2.25, 0.0, 0.0, 0.0)
    nxt = make_scene(_one_lane(), ego_speed_mps=12.0, agents=[stopped])
    out = _plan(_at(nxt, free.timestamp + 0.1), planner)
    assert out.trajectory.accel[0] < -3.0
    gap = 22.0 - out.trajectory.xy[:, 0]
    assert gap.min() > 0.0


def _at(scene: Scene, t: float) -> Scene:
    scene = dataclasses.replace(scene, timestamp=t)
    return dataclasses.replace(scene, ego=dataclasses.replace(scene.ego, t=t))


def test_yield_wall_that_flickers_is_held_then_released():
    """Hysteresis: a pedestrian about to cross, then (next frame) standing still at the kerb:
    the ego keeps yielding for `yield_hold_s` instead of braking, accelerating, braking; the
    hold ends after that time, and at once when the pedestrian is gone."""
    planner = ExpertPlanner()
    hold = planner.cfg.yield_hold_s
    walking = make_agent("ped", 25.0, -4.0, math.pi / 2, 1.4, AgentClass.PEDESTRIAN, 0.5, 0.5)
    standing = make_agent("ped", 25.0, -4.0, math.pi / 2, 0.0, AgentClass.PEDESTRIAN, 0.5, 0.5)
    base = make_scene(_one_lane(), ego_speed_mps=8.0, agents=[walking])
    assert _plan(base, planner).decision.longitudinal == LongitudinalDecision.YIELD
    still = dataclasses.replace(base, agents=[standing])
    held = _plan(_at(still, base.timestamp + 0.1), planner)
    assert held.decision.longitudinal == LongitudinalDecision.YIELD
    assert held.trajectory.accel[0] < 0.0
    later = _plan(_at(still, base.timestamp + hold + 0.2), planner)
    assert later.decision.longitudinal != LongitudinalDecision.YIELD
    # without the hold the standing pedestrian is not yielded to (the flicker it prevents)
    fresh = ExpertPlanner(yield_hold_s=0.0)
    _plan(base, fresh)
    assert _plan(_at(still, base.timestamp + 0.1), fresh).decision.longitudinal != (
        LongitudinalDecision.YIELD
    )
    # a pedestrian that left the scene releases the hold at once
    planner.reset()
    _plan(base, planner)
    gone = _plan(_at(dataclasses.replace(base, agents=[]), base.timestamp + 0.1), planner)
    assert gone.decision.longitudinal != LongitudinalDecision.YIELD


def test_acc_heuristic_still_stops_behind_a_lead_braking_to_a_standstill():
    """The ACC blend must not cap braking once the lead is predicted to stand still: the plan
    stops behind where a lead braking at 6 m/s^2 comes to rest."""
    lead = make_agent("lead", 34.0, 0.0, 0.0, 2.0)
    t = np.arange(-0.5, 0.01, 0.1)
    lead.history = np.stack([t, 34.0 + 2.0 * t, 0 * t, 0 * t, 2.0 - 6.0 * t], axis=1)
    out = _plan(make_scene(_one_lane(), ego_speed_mps=15.0, agents=[lead]))
    rest = lead.x - lead.length / 2 + 2.0**2 / (2 * 6.0)  # rear bumper at standstill
    assert out.trajectory.xy[:, 0].max() + EGO_FRONT_M < rest
    assert out.trajectory.speed[-1] < 0.5
