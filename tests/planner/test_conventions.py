"""docs/CONVENTIONS.md, enforced: REP-103 axes (x forward, y left, yaw CCW), SI units, the
ego pose at the rear-axle centre, seconds, 10 Hz, 64 x 0.1 s plans in the ego frame at t0."""

from __future__ import annotations

import math

import numpy as np
import pytest

from planner.features import build_planner_input
from planner.geometry import (
    ego_footprint,
    ego_to_world_xy,
    history_to_ego_frame,
    project_to_polyline,
    world_to_ego_xy,
)
from planner.types import (
    EGO_T,
    EGO_X,
    EGO_Y,
    EGO_YAW,
    HISTORY_STEPS,
    PLAN_DT_S,
    PLAN_STEPS,
    EgoState,
    Trajectory,
)
from tests.helpers import ego_history, make_scene, straight_road_map


def test_fixed_rates_and_horizon():
    assert PLAN_DT_S == 0.1  # 10 Hz planning
    assert PLAN_STEPS == 64  # 6.4 s horizon
    assert PLAN_STEPS * PLAN_DT_S == pytest.approx(6.4)
    assert HISTORY_STEPS == 16  # 1.6 s of past poses


@pytest.mark.parametrize("road_yaw", [0.0, 0.7, math.pi / 2, -2.5, math.pi])
def test_left_lane_change_is_positive_y_in_the_ego_frame(road_yaw):
    # Whatever the road's world heading, the lane to the ego's left is at +y in its frame.
    c, s = math.cos(road_yaw), math.sin(road_yaw)
    ego = EgoState(t=0.0, x=100.0, y=-40.0, yaw=road_yaw, speed=10.0)
    left = np.array([ego.x - 3.7 * s + 30.0 * c, ego.y + 3.7 * c + 30.0 * s])
    local = world_to_ego_xy(left, ego)[0]
    assert local[0] == pytest.approx(30.0)
    assert local[1] == pytest.approx(3.7)


def test_left_lane_change_plan_ends_at_positive_y():
    # Steer left, then right by the same amount: a lane change that ends parallel, to the left.
    curvature = np.zeros(PLAN_STEPS)
    curvature[:15] = 0.01
    curvature[15:30] = -0.01
    traj = Trajectory.from_controls(np.zeros(PLAN_STEPS), curvature, v0=15.0)
    assert traj.xy[-1, 1] > 2.0
    assert abs(traj.yaw[-1]) < 1e-9
    # and a map lane on the left of the ego is at +y as well
    road = straight_road_map(n_lanes=2)
    scene = make_scene(road, ego_xy=(0.0, 0.0))
    left_lane = world_to_ego_xy(road.lanes["lane_1"].centerline, scene.ego)
    assert np.allclose(left_lane[:, 1], 3.7)


def test_yaw_is_counter_clockwise():
    # yaw = +90 deg points along world +y; turning left increases yaw.
    ego = EgoState(t=0.0, x=0.0, y=0.0, yaw=math.pi / 2, speed=5.0)
    cx, cy = ego.center_xy  # box centre ahead of the rear axle, along the heading
    assert cx == pytest.approx(0.0, abs=1e-12) and cy > 0
    hist = ego_history(0.0, 0.0, 0.0, speed_mps=10.0, yaw_rate_radps=0.2)
    assert np.all(np.diff(hist[:, EGO_YAW]) > 0)
    # On a left (CCW) circle the centre is at +y; the poses before now lie on that circle
    # behind the ego, so also at +y, and were heading to the right of the current heading.
    local = history_to_ego_frame(hist, EgoState(t=0.0, x=0.0, y=0.0, yaw=0.0, speed=10.0))
    assert local[0, EGO_X] < 0 and local[0, EGO_Y] > 0
    assert local[0, EGO_YAW] == pytest.approx(-0.2 * 1.5)


def test_world_ego_round_trip():
    rng = np.random.default_rng(3)
    for _ in range(20):
        x, y = rng.uniform(-1e3, 1e3, 2)
        ego = EgoState(t=0.0, x=x, y=y, yaw=rng.uniform(-math.pi, math.pi), speed=3.0)
        pts = rng.uniform(-200, 200, (50, 2))
        np.testing.assert_allclose(ego_to_world_xy(world_to_ego_xy(pts, ego), ego), pts, atol=1e-9)
        np.testing.assert_allclose(world_to_ego_xy(ego_to_world_xy(pts, ego), ego), pts, atol=1e-9)
        # the ego's own position is the ego-frame origin
        np.testing.assert_allclose(world_to_ego_xy([ego.x, ego.y], ego), [[0.0, 0.0]], atol=1e-9)


def test_trajectory_to_world_matches_the_frame_transform():
    ego = EgoState(t=0.0, x=12.0, y=-3.0, yaw=2.2, speed=8.0)
    traj = Trajectory.from_controls(np.full(64, 0.5), np.full(64, -0.02), v0=ego.speed)
    world = traj.to_world(ego)
    np.testing.assert_allclose(world[:, :2], ego_to_world_xy(traj.xy, ego), atol=1e-9)
    np.testing.assert_allclose(world[:, 2], traj.yaw + ego.yaw)


def test_left_curving_trajectory_has_positive_curvature_and_y():
    traj = Trajectory.from_controls(np.zeros(PLAN_STEPS), np.full(PLAN_STEPS, 0.05), v0=8.0)
    assert (traj.curvature > 0).all()
    assert (traj.xy[:, 1] > 0).all()
    assert (np.diff(traj.yaw) > 0).all()
    # ...and the signed offset from a straight reference is positive (left of travel)
    _, lateral = project_to_polyline(np.array([[0.0, 0.0], [100.0, 0.0]]), traj.xy[-1])
    assert lateral > 0


def test_footprint_is_placed_from_the_rear_axle():
    ego = EgoState(t=0.0, x=0.0, y=0.0, yaw=0.0, speed=0.0, length=4.9, width=1.9)
    corners = ego_footprint(ego)
    front = ego.rear_axle_to_center_m + ego.length / 2
    rear = ego.rear_axle_to_center_m - ego.length / 2
    assert corners[:, 0].max() == pytest.approx(front)  # 3.9 m ahead of the rear axle
    assert corners[:, 0].min() == pytest.approx(rear)  # 1.0 m overhang behind it
    assert corners[:, 1].max() == pytest.approx(ego.width / 2)
    # rotated by 90 deg, the box extends along +y from the rear axle
    turned = ego_footprint(EgoState(t=0.0, x=5.0, y=5.0, yaw=math.pi / 2, speed=0.0))
    assert turned[:, 1].max() == pytest.approx(5.0 + front)
    assert turned[:, 1].min() == pytest.approx(5.0 + rear)


def test_planner_input_history_is_ego_frame_in_seconds_at_10hz():
    scene = make_scene(ego_xy=(30.0, 3.7), ego_yaw=0.3, ego_speed_mps=12.0, timestamp=42.0)
    inp = build_planner_input(scene)
    hist = inp.ego_history
    assert hist.shape == (HISTORY_STEPS, 7)
    np.testing.assert_allclose(hist[-1, [EGO_X, EGO_Y, EGO_YAW]], 0.0, atol=1e-9)
    np.testing.assert_allclose(np.diff(hist[:, EGO_T]), PLAN_DT_S)
    assert hist[-1, EGO_T] == pytest.approx(42.0)
    # driving straight at 12 m/s: the past lies behind on the x axis, 1.2 m per step
    np.testing.assert_allclose(hist[:, EGO_X], 12.0 * PLAN_DT_S * np.arange(-15, 1), atol=1e-6)
    np.testing.assert_allclose(hist[:, EGO_Y], 0.0, atol=1e-6)
