"""Meta-actions of constructed trajectories and the decision <-> meta-action compatibility."""

from __future__ import annotations

import math

import numpy as np
import pytest

from planner.geometry import world_to_ego_xy
from planner.meta_actions import (
    LATERAL_COMPATIBILITY,
    LONGITUDINAL_COMPATIBILITY,
    MetaActionConfig,
    is_consistent,
    meta_actions,
)
from planner.planners.expert import ExpertPlanner
from planner.taxonomy import (
    LateralDecision,
    LateralMetaAction,
    LongitudinalDecision,
    LongitudinalMetaAction,
    Side,
)
from planner.types import PLAN_STEPS, Decision, InvalidInputError, Lane, MapData, Trajectory
from tests.helpers import lane_from_centerline, make_scene, run_closed_loop

LON = LongitudinalMetaAction
LAT = LateralMetaAction
N = PLAN_STEPS


def _straight(accel: float | np.ndarray, v0: float) -> Trajectory:
    return Trajectory.from_controls(np.broadcast_to(accel, (N,)), np.zeros(N), v0)


def _from_xy(x: np.ndarray, y: np.ndarray, speed: np.ndarray) -> Trajectory:
    """A trajectory from positions (heading from the path), as a log would give it."""
    pts = np.stack([np.concatenate([[0.0], x]), np.concatenate([[0.0], y])], axis=1)
    d = np.gradient(pts, axis=0)
    yaw = np.arctan2(d[1:, 1], d[1:, 0])
    data = np.zeros((N, 6))
    data[:, 0], data[:, 1], data[:, 2], data[:, 3] = x, y, yaw, speed
    return Trajectory(data)


def _only(segments) -> list:
    return [s.action for s in segments]


@pytest.mark.parametrize(
    ("accel", "v0", "expected"),
    [
        (0.0, 15.0, LON.MAINTAIN_SPEED),
        (1.0, 10.0, LON.GENTLE_ACCELERATION),
        (2.8, 5.0, LON.STRONG_ACCELERATION),
        (-1.0, 15.0, LON.GENTLE_DECELERATION),
        (-3.5, 25.0, LON.STRONG_DECELERATION),
    ],
)
def test_each_longitudinal_class_from_a_constant_accel_plan(accel, v0, expected):
    ma = meta_actions(_straight(accel, v0))
    assert _only(ma.longitudinal) == [expected]
    assert _only(ma.lateral) == [LAT.GO_STRAIGHT]
    assert ma.longitudinal[0].start_s == 0.0
    assert ma.longitudinal[-1].end_s == pytest.approx(6.4)


def test_braking_to_standstill_is_deceleration_then_stop():
    ma = meta_actions(_straight(-4.0, 12.0))  # stops after 3 s
    assert _only(ma.longitudinal) == [LON.STRONG_DECELERATION, LON.STOP]
    assert ma.longitudinal[1].start_s == pytest.approx(3.0, abs=0.3)


def test_standing_still_is_stop():
    ma = meta_actions(Trajectory.stationary())
    assert _only(ma.longitudinal) == [LON.STOP]
    assert _only(ma.lateral) == [LAT.GO_STRAIGHT]


def test_stop_and_go_gives_three_segments():
    accel = np.concatenate([np.full(20, -2.0), np.zeros(20), np.full(24, 1.5)])
    ma = meta_actions(_straight(accel, 4.0))
    assert _only(ma.longitudinal) == [LON.GENTLE_DECELERATION, LON.STOP, LON.GENTLE_ACCELERATION]


def test_left_lane_change_from_a_curvature_doublet():
    """The real integrator: steer left, then back; ~3.5 m to the left, heading back to 0."""
    curvature = np.zeros(N)
    curvature[5:20], curvature[20:35] = 0.004, -0.004
    traj = Trajectory.from_controls(np.zeros(N), curvature, 20.0)
    assert traj.data[-1, 1] == pytest.approx(3.6, abs=0.3) and abs(traj.yaw[-1]) < 1e-9
    ma = meta_actions(traj)
    assert LAT.LANE_CHANGE_LEFT in _only(ma.lateral)
    assert LAT.LANE_CHANGE_RIGHT not in _only(ma.lateral)
    mirrored = Trajectory.from_controls(np.zeros(N), -curvature, 20.0)
    assert LAT.LANE_CHANGE_RIGHT in _only(meta_actions(mirrored).lateral)


def test_left_lane_change_constructed_from_positions():
    t = 0.1 * np.arange(1, N + 1)
    x = 15.0 * t
    y = 3.5 * np.clip((t - 1.0) / 4.0, 0, 1) ** 2 * (3 - 2 * np.clip((t - 1.0) / 4.0, 0, 1))
    ma = meta_actions(_from_xy(x, y, np.full(N, 15.0)), v0=15.0)
    lc = [s for s in ma.lateral if s.action == LAT.LANE_CHANGE_LEFT]
    assert len(lc) == 1
    assert 0.5 <= lc[0].start_s <= 2.0 and 4.0 <= lc[0].end_s <= 5.5
    assert ma.max_left_offset_m == pytest.approx(3.5, abs=0.05)


def test_lane_change_is_measured_against_the_lane_on_a_curve():
    """Following a curving lane is 'steer' (the ego's own yaw rate), never a lane change; a
    lane change along the curving lane is found relative to the lane (given its centreline)."""
    radius, v = 200.0, 15.0
    k = np.full(N, 1.0 / radius)
    follow = Trajectory.from_controls(np.zeros(N), k, v)
    s = np.linspace(-10, 150, 400)
    lane = np.stack([radius * np.sin(s / radius), radius * (1 - np.cos(s / radius))], axis=1)
    ma = meta_actions(follow, lane_geometry=lane)
    assert _only(ma.lateral) == [LAT.STEER_LEFT]  # 0.075 rad/s
    assert np.abs(ma.lateral_offset_m).max() < 0.05  # on the lane centre throughout
    ma_no_lane = meta_actions(follow)
    assert _only(ma_no_lane.lateral) == [LAT.STEER_LEFT]
    assert ma_no_lane.max_left_offset_m > 10.0  # drifts off the t0 heading line...
    assert LAT.LANE_CHANGE_LEFT not in _only(ma_no_lane.lateral)  # ...but with a big heading
    k2 = k.copy()
    k2[5:20] += 0.005
    k2[20:35] -= 0.005
    change = Trajectory.from_controls(np.zeros(N), k2, v)
    assert LAT.LANE_CHANGE_LEFT in _only(meta_actions(change, lane_geometry=lane).lateral)


def test_sharp_turn_and_small_offset():
    turn = Trajectory.from_controls(np.zeros(N), np.full(N, 0.1), 6.0)  # R 10 m, 0.6 rad/s
    assert _only(meta_actions(turn).lateral) == [LAT.SHARP_STEER_LEFT]
    right = Trajectory.from_controls(np.zeros(N), np.full(N, -0.01), 10.0)  # 0.1 rad/s
    assert _only(meta_actions(right).lateral) == [LAT.STEER_RIGHT]


def test_noisy_plan_does_not_flicker():
    rng = np.random.default_rng(0)
    accel = np.clip(rng.normal(0.0, 0.4, N), -9, 9)  # zero-mean noise around a cruise
    curvature = np.clip(rng.normal(0.0, 0.002, N), -0.3, 0.3)
    ma = meta_actions(Trajectory.from_controls(accel, curvature, 15.0))
    cfg = MetaActionConfig()
    for segs in (ma.longitudinal, ma.lateral):
        assert len(segs) <= 4
        assert all(s.duration_s >= cfg.min_segment_s - 1e-9 for s in segs)
        # segments tile the horizon
        assert segs[0].start_s == 0.0 and segs[-1].end_s == pytest.approx(6.4)
        assert all(a.end_s == pytest.approx(b.start_s) for a, b in zip(segs, segs[1:]))


def test_bad_inputs_are_named():
    with pytest.raises(InvalidInputError, match="lane_geometry"):
        meta_actions(_straight(0.0, 10.0), lane_geometry=np.zeros((1, 2)))
    with pytest.raises(InvalidInputError, match="strong_accel"):
        MetaActionConfig(gentle_accel_mps2=3.0, strong_accel_mps2=2.0)


# ---- compatibility ----------------------------------------------------------------------------
def _decision(lon, lat=LateralDecision.LANE_KEEPING, side=Side.NONE) -> Decision:
    return Decision(longitudinal=lon, lateral=lat, lateral_side=side)


def test_table_covers_every_decision():
    assert set(LONGITUDINAL_COMPATIBILITY) == set(LongitudinalDecision)
    assert set(LATERAL_COMPATIBILITY) == set(LateralDecision)


def test_yield_is_compatible_with_slowing_not_with_strong_acceleration():
    yield_ = _decision(LongitudinalDecision.YIELD)
    assert is_consistent(yield_, meta_actions(_straight(-2.0, 10.0))).longitudinal
    assert is_consistent(yield_, meta_actions(Trajectory.stationary())).longitudinal
    assert is_consistent(yield_, meta_actions(_straight(0.0, 3.0))).longitudinal  # creeping
    res = is_consistent(yield_, meta_actions(_straight(3.0, 5.0)))
    assert not res.longitudinal and not res.joint
    assert any("strong_acceleration" in r for r in res.reasons)
    # maintaining a high speed is not yielding
    assert not is_consistent(yield_, meta_actions(_straight(0.0, 20.0))).longitudinal


def test_stop_needs_slowing_and_passing_needs_acceleration():
    stop = _decision(LongitudinalDecision.STOP_FOR_STATIC_CONSTRAINTS)
    assert is_consistent(stop, meta_actions(_straight(-3.0, 12.0))).longitudinal
    assert not is_consistent(stop, meta_actions(_straight(0.0, 12.0))).longitudinal
    assert not is_consistent(stop, meta_actions(_straight(2.5, 3.0))).longitudinal
    roll_up = np.concatenate([np.full(10, 0.8), np.full(54, -1.0)])  # creep, then brake
    assert is_consistent(stop, meta_actions(_straight(roll_up, 2.0))).longitudinal
    passing = _decision(LongitudinalDecision.ACCELERATION_FOR_PASSING)
    assert is_consistent(passing, meta_actions(_straight(1.2, 15.0))).longitudinal
    assert not is_consistent(passing, meta_actions(_straight(-1.0, 15.0))).longitudinal
    cruise = _decision(LongitudinalDecision.SET_SPEED_TRACKING)
    assert is_consistent(cruise, meta_actions(_straight(0.0, 15.0))).longitudinal
    assert not is_consistent(cruise, meta_actions(_straight(-4.0, 15.0))).longitudinal


def test_lane_change_left_requires_lane_change_or_steer_left():
    curvature = np.zeros(N)
    curvature[5:20], curvature[20:35] = 0.004, -0.004
    left = meta_actions(Trajectory.from_controls(np.zeros(N), curvature, 20.0))
    straight = meta_actions(_straight(0.0, 20.0))
    lc_left = _decision(
        LongitudinalDecision.SET_SPEED_TRACKING, LateralDecision.LANE_CHANGE, Side.LEFT
    )
    lc_right = _decision(
        LongitudinalDecision.SET_SPEED_TRACKING, LateralDecision.LANE_CHANGE, Side.RIGHT
    )
    keep = _decision(LongitudinalDecision.SET_SPEED_TRACKING)
    assert is_consistent(lc_left, left).joint
    assert not is_consistent(lc_right, left).lateral
    assert not is_consistent(lc_left, straight).lateral
    assert not is_consistent(keep, left).lateral  # lane keeping forbids a lane change
    assert is_consistent(keep, straight).joint
    no_side = _decision(LongitudinalDecision.SET_SPEED_TRACKING, LateralDecision.LANE_CHANGE)
    assert any("needs a side" in r for r in is_consistent(no_side, left).reasons)


def test_in_lane_nudge_is_seen_from_the_lateral_offset():
    t = 0.1 * np.arange(1, N + 1)
    y = 0.5 * np.sin(np.clip(t / 4.0, 0, 1) * math.pi)  # 0.5 m to the left and back
    nudge = meta_actions(_from_xy(12.0 * t, y, np.full(N, 12.0)), v0=12.0)
    assert LAT.LANE_CHANGE_LEFT not in _only(nudge.lateral)
    left = _decision(
        LongitudinalDecision.SET_SPEED_TRACKING, LateralDecision.IN_LANE_NUDGE, Side.LEFT
    )
    right = _decision(
        LongitudinalDecision.SET_SPEED_TRACKING, LateralDecision.IN_LANE_NUDGE, Side.RIGHT
    )
    assert is_consistent(left, nudge).lateral
    assert not is_consistent(right, nudge).lateral


def test_turn_right_needs_steering_right():
    right_turn = meta_actions(Trajectory.from_controls(np.zeros(N), np.full(N, -0.08), 5.0))
    turn_right = _decision(LongitudinalDecision.SPEED_ADAPTATION, LateralDecision.TURN, Side.RIGHT)
    turn_left = _decision(LongitudinalDecision.SPEED_ADAPTATION, LateralDecision.TURN, Side.LEFT)
    assert is_consistent(turn_right, right_turn).lateral
    assert not is_consistent(turn_left, right_turn).lateral


def test_turn_may_wait_at_the_line_and_a_lane_change_may_be_finishing():
    turn_left = _decision(LongitudinalDecision.YIELD, LateralDecision.TURN, Side.LEFT)
    waiting = meta_actions(_straight(-3.0, 6.0))  # stops at the line: no steering yet
    assert is_consistent(turn_left, waiting).lateral
    driving_straight = meta_actions(_straight(0.0, 8.0))  # 51 m without turning
    assert not is_consistent(turn_left, driving_straight).lateral
    # the tail of a left lane change: heading left at t0, straightening (steer right) while
    # still drifting 0.5 m left
    t = 0.1 * np.arange(1, N + 1)
    y = 0.5 * (1 - (1 - np.clip(t / 2.0, 0, 1)) ** 2)
    tail = meta_actions(_from_xy(15.0 * t, y, np.full(N, 15.0)), v0=15.0)
    lc_left = _decision(
        LongitudinalDecision.SET_SPEED_TRACKING, LateralDecision.LANE_CHANGE, Side.LEFT
    )
    assert is_consistent(lc_left, tail).lateral


def test_expert_lane_change_in_closed_loop_is_lane_change_left():
    """The privileged expert leaves a lane that ends (tiny closed loop, exact state
    following); the executed 6.4 s, read against the lane it left, is a left lane change."""
    x0, x1 = np.linspace(-50.0, 100.0, 151), np.linspace(-50.0, 300.0, 351)
    lanes: dict[str, Lane] = {
        "lane_0": lane_from_centerline(
            "lane_0", np.stack([x0, 0 * x0], axis=1), left_neighbor="lane_1"
        ),
        "lane_1": lane_from_centerline(
            "lane_1", np.stack([x1, 0 * x1 + 3.7], axis=1), right_neighbor="lane_0"
        ),
    }
    scene = make_scene(MapData(lanes=lanes), ego_speed_mps=12.0, route_lane_ids=("lane_1",))
    frames, outs = run_closed_loop(ExpertPlanner(), scene, N)
    assert outs[0].decision.lateral in (LateralDecision.LANE_CHANGE, LateralDecision.MERGE_SPLIT)
    assert outs[0].decision.lateral_side == Side.LEFT
    ego0 = frames[0].ego
    xy = world_to_ego_xy(np.array([[f.ego.x, f.ego.y] for f in frames[1:]]), ego0)
    yaw = np.array([f.ego.yaw for f in frames[1:]]) - ego0.yaw
    speed = np.array([f.ego.speed for f in frames[1:]])
    data = np.zeros((N, 6))
    data[:, 0:2], data[:, 2], data[:, 3] = xy, yaw, speed
    executed = Trajectory(data)
    lane = world_to_ego_xy(lanes["lane_0"].centerline, ego0)
    ma = meta_actions(executed, lane_geometry=lane, v0=ego0.speed, lane_width_m=3.7)
    assert LAT.LANE_CHANGE_LEFT in _only(ma.lateral), ma.describe()
    assert is_consistent(outs[0].decision, ma).lateral
