"""Driving metrics on constructed geometry: a straight two-lane road along +x.

Lane "right" is centred on y = 0, lane "left" on y = 3.7 (both 3.7 m wide, travel +x), so the
drivable area spans y in [-1.85, 5.55]. The ego (4.9 x 1.9 m, rear axle 1.45 m behind the box
centre) drives along y = 0; its front bumper is 3.9 m ahead of the rear axle.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from planner.config import ConfigError, to_dict
from planner.geometry import world_to_ego_xy
from planner.taxonomy import AgentClass, LightState
from planner.types import (
    Agent,
    EgoState,
    Lane,
    MapData,
    Route,
    Scene,
    StopLine,
    TrafficLight,
)
from sim_eval.episode import EpisodeRecord
from sim_eval.metrics import (
    DEFAULT_METRICS_CONFIG,
    METRIC_SPECS,
    MetricsConfig,
    MetricsError,
    collision_events,
    driving_score,
    evaluate_episode,
    load_metrics_config,
    swept_overlap_start,
)

DT = 0.1
LANE_W = 3.7
FRONT_M = 1.45 + 4.9 / 2  # rear axle to front bumper
REAR_M = 4.9 / 2 - 1.45  # rear axle to rear bumper (behind)


def _lane(lane_id: str, y: float, **kw) -> Lane:
    x = np.linspace(-50.0, 250.0, 31)
    c = np.stack([x, np.full_like(x, y)], axis=1)
    return Lane(
        id=lane_id,
        centerline=c,
        left_boundary=c + [0.0, LANE_W / 2],
        right_boundary=c - [0.0, LANE_W / 2],
        speed_limit_mps=20.0,
        **kw,
    )


def two_lane_map(stop_lines: dict[str, StopLine] | None = None) -> MapData:
    return MapData(
        lanes={
            "right": _lane("right", 0.0, left_neighbor="left", right_boundary_kind="road_edge"),
            "left": _lane("left", LANE_W, right_neighbor="right", left_boundary_kind="road_edge"),
        },
        stop_lines=stop_lines or {},
        name="straight_two_lane",
    )


def make_record(
    ego_xyv: list[tuple[float, float, float]],
    agents: list[list[Agent]] | None = None,
    lights: list[list[TrafficLight]] | None = None,
    map_data: MapData | None = None,
    route_length_m: float = 100.0,
    yaw: list[float] | None = None,
    termination: str = "time_limit",
) -> EpisodeRecord:
    """One Scene per (x, y, speed) ego state at 10 Hz."""
    map_data = map_data or two_lane_map()
    route = Route(waypoints=np.array([[0.0, 0.0], [route_length_m, 0.0]]))
    frames = []
    for k, (x, y, v) in enumerate(ego_xyv):
        ego = EgoState(t=k * DT, x=x, y=y, yaw=yaw[k] if yaw else 0.0, speed=v)
        frames.append(
            Scene(
                timestamp=k * DT,
                ego=ego,
                ego_history=ego.as_row()[None],
                agents=agents[k] if agents else [],
                map=map_data,
                route=route,
                traffic_lights=lights[k] if lights else [],
            )
        )
    return EpisodeRecord(
        scenario="constructed",
        family="unit",
        seed=7,
        frames=frames,
        outputs=[None] * len(frames),
        termination=termination,
    )


def constant_speed(x0: float, v: float, steps: int, y: float = 0.0):
    return [(x0 + v * k * DT, y, v) for k in range(steps)]


def vehicle(aid, x, y, vx=0.0, vy=0.0, yaw=0.0, cls=AgentClass.VEHICLE, length=4.5, width=1.9):
    return Agent(id=aid, agent_class=cls, x=x, y=y, yaw=yaw, vx=vx, vy=vy, length=length,
                 width=width)  # fmt: skip


# ---- config -------------------------------------------------------------------------------------
def test_yaml_defaults_match_dataclass_and_typos_name_the_key():
    assert DEFAULT_METRICS_CONFIG.is_file()
    assert to_dict(load_metrics_config()) == to_dict(MetricsConfig())
    with pytest.raises(ConfigError, match="gap_m"):
        load_metrics_config(overrides=["close_encounter.gap=0.5"])
    assert load_metrics_config(overrides=["close_encounter.gap_m=0.5"]).close_encounter.gap_m == 0.5


def test_every_spec_names_a_key_of_the_episode_dict():
    out = evaluate_episode(make_record(constant_speed(0.0, 10.0, 20)))
    assert {s.name for s in METRIC_SPECS} <= set(out)


# ---- off-road -----------------------------------------------------------------------------------
def test_footprint_half_over_road_edge_is_offroad_inside_is_not():
    # Road edge of the right lane at y = -1.85: a box centred on it is half outside (0.95 m).
    edge = make_record(constant_speed(0.0, 5.0, 10, y=-LANE_W / 2))
    out = evaluate_episode(edge)
    assert out["offroad"] is True
    assert out["offroad_max_distance_m"] == pytest.approx(0.95, abs=1e-6)
    assert out["offroad_max_area_m2"] == pytest.approx(4.9 * 0.95, rel=1e-6)
    assert out["num_offroad_events"] == 1

    inside = evaluate_episode(make_record(constant_speed(0.0, 5.0, 10, y=0.0)))
    assert inside["offroad"] is False
    assert inside["offroad_max_distance_m"] == 0.0
    # straddling the lane marking between the two lanes is still on the road
    straddle = evaluate_episode(make_record(constant_speed(0.0, 5.0, 10, y=LANE_W / 2)))
    assert straddle["offroad"] is False


def test_offroad_tolerance_small_overhang_is_not_offroad():
    # 0.1 m over the edge: below both tolerances (0.3 m, 0.5 m^2 = 4.9 x 0.1)
    y = -LANE_W / 2 + 0.95 - 0.1
    out = evaluate_episode(make_record(constant_speed(0.0, 5.0, 5, y=y)))
    assert out["offroad"] is False
    assert out["offroad_max_distance_m"] == pytest.approx(0.1, abs=1e-6)


# ---- close encounters ----------------------------------------------------------------------------
def test_closing_agent_0p3m_ahead_in_path_is_close_encounter():
    ego = constant_speed(0.0, 10.0, 5)
    # lead box's rear 0.3 m ahead of the ego's front bumper at every frame, 2 m/s slower
    agents = [[vehicle("lead", x + FRONT_M + 0.3 + 2.25, 0.0, vx=8.0)] for x, _, _ in ego]
    out = evaluate_episode(make_record(ego, agents))
    assert out["close_encounter"] is True
    assert out["collision"] is False
    assert out["min_gap_m"] == pytest.approx(0.3, abs=1e-6)
    assert out["min_ttc_s"] == pytest.approx(0.3 / 2.0, abs=1e-6)
    assert out["collision_or_close_encounter"] is True
    assert out["num_close_encounters"] == 1


def test_agent_passing_3m_away_in_next_lane_is_not_close_encounter():
    ego = constant_speed(0.0, 10.0, 30)
    # 3 m lateral gap between the boxes: centre at 0.95 + 3 + 0.95 = 4.9 (inside the left lane)
    agents = [[vehicle("passer", -10.0 + 15.0 * k * DT, 4.9, vx=15.0)] for k in range(30)]
    out = evaluate_episode(make_record(ego, agents))
    assert out["close_encounter"] is False
    assert out["collision"] is False
    assert out["min_ttc_s"] == pytest.approx(3.0)  # capped at the TTC horizon
    assert out["min_gap_any_m"] == pytest.approx(3.0, abs=1e-6)


def test_tailgater_is_not_close_encounter():
    ego = constant_speed(0.0, 10.0, 5)
    # follower's front 0.3 m behind the ego's rear bumper, 3 m/s faster
    agents = [[vehicle("tail", x - REAR_M - 0.3 - 2.25, 0.0, vx=13.0)] for x, _, _ in ego]
    out = evaluate_episode(make_record(ego, agents))
    assert out["close_encounter"] is False


def test_pedestrian_passing_in_front_of_stopped_ego_is_not_close_encounter():
    ped = AgentClass.PEDESTRIAN
    walker = [
        [vehicle("w", FRONT_M + 0.5 + 0.3, 3.0 - 1.2 * k * DT, vy=-1.2, cls=ped, length=0.6,
                 width=0.6)]
        for k in range(50)
    ]  # fmt: skip
    parked = evaluate_episode(make_record(constant_speed(0.0, 0.0, 50), walker))
    assert parked["close_encounter"] is False and parked["collision"] is False
    assert parked["min_gap_m"] == pytest.approx(0.5, abs=1e-6)  # in the path, but ego stopped
    # the same crossing 0.5 m ahead of a moving ego is one
    rolling = [
        [vehicle("w", x + FRONT_M + 0.5 + 0.3, 3.0 - 1.2 * k * DT, vy=-1.2, cls=ped, length=0.6,
                 width=0.6)]
        for k, (x, _, _) in enumerate(constant_speed(0.0, 1.0, 50))
    ]  # fmt: skip
    moving = evaluate_episode(make_record(constant_speed(0.0, 1.0, 50), rolling))
    assert moving["close_encounter"] is True


def test_swept_overlap_start_head_on():
    # boxes 2 m long, 10 m apart centre to centre, closing at 4 m/s: gap 8 m -> 2 s
    one = np.ones(1)
    t = swept_overlap_start(
        np.array([[0.0, 0.0]]), 0 * one, one, one,
        np.array([[10.0, 0.0]]), 0 * one, one, one, np.array([[-4.0, 0.0]]), 5.0,
    )  # fmt: skip
    assert t[0] == pytest.approx(2.0)
    never = swept_overlap_start(
        np.array([[0.0, 0.0]]), 0 * one, one, one,
        np.array([[10.0, 5.0]]), 0 * one, one, one, np.array([[-4.0, 0.0]]), 5.0,
    )  # fmt: skip
    assert np.isinf(never[0])


# ---- collisions and fault ------------------------------------------------------------------------
def test_rear_end_by_follower_is_collision_not_at_fault():
    ego = constant_speed(0.0, 5.0, 12)
    # follower starts with its front 2 m behind the ego's rear bumper, 10 m/s faster
    x0 = -REAR_M - 2.0 - 2.25
    agents = [[vehicle("follower", x0 + 15.0 * k * DT, 0.0, vx=15.0)] for k in range(12)]
    out = evaluate_episode(make_record(ego, agents))
    assert out["collision"] is True
    assert out["collision_at_fault"] is False
    assert out["collision_type"] == "rear"
    assert out["collision_fault_reason"] == "rear_ended_by_follower"
    assert out["collision_time_s"] == pytest.approx(0.2, abs=5e-3)  # 2 m at 10 m/s closing
    assert out["driving_score"] == pytest.approx(out["route_completion"])  # no penalty
    assert out["close_encounter"] is False  # tailgater excluded


def test_cut_in_hitting_ego_within_1s_of_entering_lane_is_not_at_fault():
    ego = constant_speed(0.0, 10.0, 12)
    # alongside in the left lane, sliding right at 2 m/s: its right edge enters the ego's lane
    # (1.65 m = boundary minus the 0.2 m margin) at ~0.55 s and touches the ego at ~0.9 s.
    agents = [
        [vehicle("cutter", x + 1.45, LANE_W - 2.0 * k * DT, vx=10.0, vy=-2.0)]
        for k, (x, _, _) in enumerate(ego)
    ]
    record = make_record(ego, agents)
    events = collision_events(record)
    assert len(events) == 1
    assert events[0].collision_type == "lateral" and events[0].side == "left"
    assert events[0].time_s == pytest.approx(0.9, abs=2e-2)
    assert events[0].at_fault is False and events[0].reason == "cut_in_within_window"
    out = evaluate_episode(record)
    assert out["collision"] is True and out["collision_at_fault"] is False


def test_slow_drift_into_ego_long_after_entering_lane_is_at_fault():
    # same geometry, but the agent has been inside the ego's lane (overlapping its margin) for
    # more than 1 s before the contact: the ego should have reacted.
    ego = constant_speed(0.0, 10.0, 40)
    agents = [
        [vehicle("drifter", x + 1.45, 3.0 - 0.05 * k * DT * 10, vx=10.0, vy=-0.5)]
        for k, (x, _, _) in enumerate(ego)
    ]
    events = collision_events(make_record(ego, agents))
    assert len(events) == 1
    assert events[0].collision_type == "lateral"
    assert events[0].at_fault is True


def test_ego_hitting_stopped_lead_is_at_fault_front():
    ego = constant_speed(0.0, 10.0, 12)
    # stopped car whose rear is 5 m ahead of the ego's front bumper at t = 0
    lead_x = FRONT_M + 5.0 + 2.25
    agents = [[vehicle("stopped", lead_x, 0.0)] for _ in range(12)]
    out = evaluate_episode(make_record(ego, agents))
    assert out["collision"] is True and out["collision_at_fault"] is True
    assert out["collision_type"] == "front"
    assert out["collision_agent_class"] == "vehicle"
    assert out["collision_time_s"] == pytest.approx(0.5, abs=5e-3)
    assert out["num_collisions"] == 1  # overlap in later frames is the same collision
    assert out["driving_score"] == pytest.approx(out["route_completion"] * 0.6)


def test_boxes_left_touching_by_the_simulator_are_a_collision():
    # highway-env resolves a crash by pushing the boxes apart until they just touch: the last
    # frame shows no overlap, yet it is a collision.
    ego = constant_speed(0.0, 10.0, 6)
    lead_x0 = FRONT_M + 4.5 + 2.25  # rear 4.5 m ahead at t = 0; the ego closes 1 m per frame
    agents = [[vehicle("lead", lead_x0, 0.0)] for _ in range(5)]
    # exactly touching; the lead is wider than the ego, as highway-env cars (2.0 m) are
    agents.append([vehicle("lead", ego[5][0] + FRONT_M + 2.25, 0.0, width=2.0)])
    out = evaluate_episode(make_record(ego, agents, termination="collision"))
    assert out["collision"] and out["collision_at_fault"]
    assert out["collision_type"] == "front"
    assert out["close_encounter"] is True  # 0.5 m gap at 10 m/s closing before the contact


def test_collision_reported_by_the_simulator_counts_even_when_boxes_were_pushed_apart():
    # highway-env's collision response can leave the boxes further apart than the contact
    # tolerance by the time the frame is recorded; the simulator's own report still counts.
    ego = constant_speed(0.0, 10.0, 6)
    lead_x0 = FRONT_M + 4.5 + 2.25
    agents = [[vehicle("lead", lead_x0, 0.0)] for _ in range(5)]
    agents.append([vehicle("lead", ego[5][0] + FRONT_M + 2.25 + 0.3, 0.0)])  # 0.3 m apart
    record = make_record(ego, agents, termination="collision")
    assert evaluate_episode(record)["collision"] is False  # geometry alone misses it
    record.frames[5].metadata["collided_with"] = "lead"
    out = evaluate_episode(record)
    assert out["collision"] and out["collision_at_fault"]
    assert out["collision_type"] == "front"


def test_collision_with_pedestrian_penalty_and_stopped_ego_not_at_fault():
    ped = AgentClass.PEDESTRIAN
    ego = constant_speed(0.0, 10.0, 12)
    agents = [[vehicle("ped", FRONT_M + 2.0, 0.0, cls=ped, length=0.6, width=0.6)]] * 12
    out = evaluate_episode(make_record(ego, agents))
    assert out["collision_at_fault"] and out["collision_agent_class"] == "pedestrian"
    assert out["driving_score"] == pytest.approx(out["route_completion"] * 0.5)
    # a pedestrian walking into the side of a stopped ego: not the ego's fault
    parked = constant_speed(0.0, 0.0, 12)
    walker = [[vehicle("w", 1.45, 2.0 - 1.0 * k * DT, vy=-1.0, cls=ped, length=0.6, width=0.6)]
              for k in range(12)]  # fmt: skip
    out = evaluate_episode(make_record(parked, walker))
    assert out["collision"] and not out["collision_at_fault"]
    assert out["collision_fault_reason"] == "ego_stopped"


# ---- traffic rules -------------------------------------------------------------------------------
def _light_map(is_stop_sign: bool = False) -> MapData:
    line = StopLine(
        id="sl0",
        points=np.array([[30.0, -LANE_W / 2], [30.0, LANE_W / 2]]),
        lane_ids=("right",),
        light_id=None if is_stop_sign else "tl0",
        is_stop_sign=is_stop_sign,
    )
    return two_lane_map({"sl0": line})


@pytest.mark.parametrize("state,violation", [(LightState.RED, True), (LightState.GREEN, False),
                                             (LightState.YELLOW, False)])  # fmt: skip
def test_red_light_crossing_counted_green_not(state, violation):
    ego = constant_speed(0.0, 10.0, 50)  # the front crosses x = 30 at t ~ 2.6 s
    lights = [[TrafficLight(id="tl0", state=state, stop_line_id="sl0")]] * 50
    out = evaluate_episode(make_record(ego, lights=lights, map_data=_light_map()))
    assert out["red_light_violation"] is violation
    assert out["num_red_light_violations"] == int(violation)
    expected_penalty = 0.7 if violation else 1.0
    assert out["driving_score"] == pytest.approx(out["route_completion"] * expected_penalty)


def test_red_light_in_other_lane_or_before_line_not_counted():
    lights = [[TrafficLight(id="tl0", state=LightState.RED)]] * 50
    # driving in the left lane: the right lane's stop line is never crossed
    left = evaluate_episode(
        make_record(constant_speed(0.0, 10.0, 50, y=LANE_W), lights=lights, map_data=_light_map())
    )
    assert left["red_light_violation"] is False
    # stopping before the line
    stop = [(min(20.0, 10.0 * k * DT), 0.0, 10.0 if k * DT < 2.0 else 0.0) for k in range(50)]
    out = evaluate_episode(make_record(stop, lights=lights, map_data=_light_map()))
    assert out["red_light_violation"] is False


def test_stop_sign_needs_a_stop():
    ego = constant_speed(0.0, 10.0, 50)
    rolled = evaluate_episode(make_record(ego, map_data=_light_map(is_stop_sign=True)))
    assert rolled["stop_sign_violation"] is True
    assert rolled["driving_score"] == pytest.approx(rolled["route_completion"] * 0.8)
    # drive to 2 m before the line (front at 28 m), wait 1 s, drive on
    xs, x = [], 0.0
    for k in range(80):
        v = 0.0 if 28.0 - FRONT_M <= x and 20 <= k < 40 else 8.0
        if x < 28.0 - FRONT_M and x + v * DT > 28.0 - FRONT_M:
            x = 28.0 - FRONT_M
        xs.append((x, 0.0, v))
        x += v * DT
    stopped = evaluate_episode(make_record(xs, map_data=_light_map(is_stop_sign=True)))
    assert stopped["stop_sign_violation"] is False


# ---- route, comfort, score, failure --------------------------------------------------------------
def test_route_completion_and_distance():
    out = evaluate_episode(make_record(constant_speed(0.0, 10.0, 51)))  # 50 m of a 100 m route
    assert out["route_completion"] == pytest.approx(0.5)
    assert out["distance_m"] == pytest.approx(50.0)
    full = evaluate_episode(make_record(constant_speed(0.0, 10.0, 121)))  # past the goal
    assert full["route_completion"] == 1.0
    # driving back does not undo progress (monotone maximum)
    there_back = [(x, 0.0, 5.0) for x in [*np.arange(0, 40, 1.0), *np.arange(40, 10, -1.0)]]
    yaw = [0.0] * 40 + [math.pi] * 30
    out = evaluate_episode(make_record(there_back, yaw=yaw))
    assert out["route_completion"] == pytest.approx(0.40)


def test_route_with_goal_behind_start_is_a_clear_error():
    with pytest.raises(MetricsError, match="goal"):
        evaluate_episode(make_record(constant_speed(150.0, 10.0, 5), route_length_m=100.0))


def test_comfort_smooth_vs_hard_braking():
    smooth = evaluate_episode(make_record(constant_speed(0.0, 10.0, 40)))
    assert smooth["comfortable"] is True and smooth["comfort_fraction"] == 1.0
    # brake at -8 m/s^2 from 15 m/s
    v = np.maximum(0.0, 15.0 - 8.0 * DT * np.arange(30))
    x = np.concatenate([[0.0], np.cumsum(v[:-1] * DT)])
    hard = evaluate_episode(make_record([(xi, 0.0, vi) for xi, vi in zip(x, v)]))
    assert hard["comfortable"] is False
    assert hard["comfort_fraction"] < 1.0
    assert hard["comfort_min_lon_accel_mps2"] == pytest.approx(-8.0, abs=0.1)


def test_driving_score_product_of_penalties():
    cfg = MetricsConfig().driving_score
    score, penalty = driving_score(0.8, [AgentClass.PEDESTRIAN, AgentClass.CONE], 1, 1, cfg)
    assert penalty == pytest.approx(0.5 * 0.65 * 0.7 * 0.8)
    assert score == pytest.approx(0.8 * penalty)


def test_planner_failed_flag_and_json_ready():
    import json

    out = evaluate_episode(make_record(constant_speed(0.0, 10.0, 5), termination="planner_failed"))
    assert out["planner_failed"] is True and out["status"] == "ok"
    assert out["key"] == "unit:7"
    json.dumps(out, allow_nan=False)  # plain types, no NaN/inf
    assert all(not isinstance(v, (dict, list, np.generic)) for v in out.values())


def test_lane_change_left_is_positive_y_in_ego_frame():
    # REP-103: a lane change to the left moves the ego towards +y; seen from the start pose the
    # end point has a positive lateral offset.
    start = EgoState(t=0.0, x=0.0, y=0.0, yaw=0.0, speed=10.0)
    end_xy = np.array([[40.0, LANE_W]])
    assert world_to_ego_xy(end_xy, start)[0, 1] == pytest.approx(LANE_W)


def test_empty_record_is_a_clear_error():
    rec = EpisodeRecord(scenario="x", family="f", seed=0, frames=[])
    with pytest.raises(MetricsError, match="no frames"):
        evaluate_episode(rec)


# ---- close encounters at a junction (TTC along the recorded paths) ------------------------------
# The ego turns right on a quarter circle (rear axle radius 10 m, centre (0, -10)) from heading
# +x into an exit road along x = 10 (heading -y); the exit road's opposite lane is centred on
# x = 13.7 (travel +y). Without TTC along the paths, a straight-line projection of the turning
# ego runs into traffic standing or driving in that opposite lane.
TURN_R = 10.0


def right_turn(v: float, steps: int) -> tuple[list[tuple[float, float, float]], list[float]]:
    """(x, y, speed) and yaw per frame of the ego turning right at `v` then going straight."""
    xyv, yaws = [], []
    quarter = TURN_R * math.pi / 2
    for k in range(steps):
        s = v * k * DT
        if s <= quarter:
            th = s / TURN_R
            xyv.append((TURN_R * math.sin(th), -TURN_R * (1 - math.cos(th)), v))
            yaws.append(-th)
        else:
            xyv.append((TURN_R, -TURN_R - (s - quarter), v))
            yaws.append(-math.pi / 2)
    return xyv, yaws


def _straight_line_min_ttc(ego, yaws, agents) -> float:
    """The pre-fix TTC: both boxes translating along their current headings (as nuPlan)."""
    best = math.inf
    for (x, y, v), yaw, frame in zip(ego, yaws, agents):
        for a in frame:
            c = np.array([[x + 1.45 * math.cos(yaw), y + 1.45 * math.sin(yaw)]])
            rel = np.array([[a.vx - v * math.cos(yaw), a.vy - v * math.sin(yaw)]])
            t = swept_overlap_start(
                c, np.array([yaw]), np.array([2.45]), np.array([0.95]),
                np.array([[a.x, a.y]]), np.array([a.yaw]), np.array([a.length / 2]),
                np.array([a.width / 2]), rel, 3.0,
            )  # fmt: skip
            best = min(best, float(t[0]))
    return best


def test_car_waiting_at_stop_line_while_ego_turns_away_is_not_close_encounter():
    ego, yaws = right_turn(6.0, 40)
    # waiting at the stop line of the opposite lane of the exit road, facing the junction
    agents = [[vehicle("waiting", 13.7, -8.0, yaw=math.pi / 2)] for _ in ego]
    out = evaluate_episode(make_record(ego, agents, yaw=yaws))
    assert _straight_line_min_ttc(ego, yaws, agents) < 0.95  # the artefact this test pins down
    assert out["close_encounter"] is False
    assert out["min_ttc_s"] == pytest.approx(3.0)
    assert out["min_gap_any_m"] > 1.0


def test_oncoming_car_passing_4m_away_while_ego_turns_is_not_close_encounter():
    ego, yaws = right_turn(7.0, 40)
    # oncoming in the opposite lane of the exit road (the ego's box spans x in [9.05, 10.95]
    # there, this one [15.05, 16.95]), driving +y at 12 m/s towards the junction: the boxes
    # pass about 4 m apart (3.8 m, at the ego's front-left corner late in its turn)
    agents = [[vehicle("oncoming", 16.0, -40.0 + 12.0 * k * DT, vy=12.0, yaw=math.pi / 2)]
              for k in range(40)]  # fmt: skip
    out = evaluate_episode(make_record(ego, agents, yaw=yaws))
    assert _straight_line_min_ttc(ego, yaws, agents) < 0.95
    assert out["close_encounter"] is False
    assert out["min_ttc_s"] == pytest.approx(3.0)
    assert out["min_gap_any_m"] > 3.5


def test_crossing_car_passing_0p5m_in_front_of_ego_path_is_close_encounter():
    ego = constant_speed(0.0, 3.0, 40)
    # crossing from the left (travel -y at 10 m/s); its box leaves the ego's lateral band
    # (centre y = -3.2) at t = 1.92 s, 0.5 m in front of the ego's front bumper (x = 5.76 + 3.9)
    cx = 3.0 * 1.92 + FRONT_M + 0.5 + 0.95
    agents = [[vehicle("crossing", cx, 16.0 - 10.0 * k * DT, vy=-10.0, yaw=-math.pi / 2)]
              for k in range(40)]  # fmt: skip
    out = evaluate_episode(make_record(ego, agents))
    assert out["collision"] is False
    assert out["close_encounter"] is True
    assert out["min_gap_m"] == pytest.approx(0.5, abs=0.1)  # sampled at 10 Hz


def test_stopped_car_on_the_ego_turn_path_is_close_encounter_at_current_speed():
    # The ego turns right at 6 m/s, brakes hard at the last moment and stops 1.5 m short of a
    # car standing in its exit lane: no collision, but at its speed along the path it was about
    # to hit it (TTC under the bound), although a straight-line projection never sees the car.
    ego, yaws = right_turn(6.0, 24)
    v = 6.0
    x, y, _ = ego[-1]
    for _ in range(8):  # -7.5 m/s^2 down the exit road (heading -y)
        v = max(0.0, v - 7.5 * DT)
        y -= v * DT
        ego.append((x, y, v))
        yaws.append(-math.pi / 2)
    front_y = y - FRONT_M
    agents = [[vehicle("stopped", TURN_R, front_y - 1.5 - 2.25, yaw=-math.pi / 2)] for _ in ego]
    out = evaluate_episode(make_record(ego, agents, yaw=yaws))
    assert out["collision"] is False
    assert out["close_encounter"] is True
    assert out["min_ttc_s"] < 0.95
