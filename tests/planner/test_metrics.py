"""Trajectory metrics on constructed cases whose values are computed by hand here."""

from __future__ import annotations

import math

import numpy as np
import pytest
from shapely.geometry import box

from planner.metrics import (
    TrajectoryMetricsConfig,
    ade,
    check_reasoning,
    displacement_metrics,
    fde,
    l2_stp3,
    l2_uniad,
    min_ade_fde,
    miss_final,
    miss_max_distance,
    plan_collision,
    plan_offroad,
)
from planner.types import PLAN_DT_S, PLAN_STEPS, InvalidInputError, Trajectory

T = PLAN_DT_S * np.arange(1, PLAN_STEPS + 1)  # 0.1 .. 6.4 s
EGO = {"length_m": 4.0, "width_m": 2.0, "rear_axle_to_center_m": 1.0}


def _lateral_error_plan(error_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A ground truth along +x at 10 m/s and a plan offset sideways by error_m per row."""
    gt = np.stack([10.0 * T, np.zeros_like(T)], axis=1)
    pred = gt + np.stack([np.zeros_like(T), error_m], axis=1)
    return pred, gt


def test_ade_fde_at_horizons_by_hand():
    pred, gt = _lateral_error_plan(T.copy())  # error = t
    assert ade(pred, gt, horizon_s=1.0) == pytest.approx(np.mean(T[:10]))  # 0.55
    assert ade(pred, gt, horizon_s=1.0) == pytest.approx(0.55)
    assert fde(pred, gt, horizon_s=3.0) == pytest.approx(3.0)
    assert fde(pred, gt) == pytest.approx(6.4)
    assert ade(pred, gt) == pytest.approx(3.25)  # mean of 0.1 .. 6.4


def test_the_two_l2_conventions_differ_on_the_same_trajectory():
    """Error e(t) = t. ST-P3 averages the 2 Hz errors up to t: L2@1s = (0.5 + 1)/2 = 0.75,
    L2@3s = (0.5 + 1 + ... + 3)/6 = 1.75. UniAD takes e(t): 1.0 and 3.0."""
    pred, gt = _lateral_error_plan(T.copy())
    assert l2_stp3(pred, gt, None, 1.0, step_s=0.5) == pytest.approx(0.75)
    assert l2_stp3(pred, gt, None, 2.0, step_s=0.5) == pytest.approx(1.25)
    assert l2_stp3(pred, gt, None, 3.0, step_s=0.5) == pytest.approx(1.75)
    assert l2_uniad(pred, gt, None, 1.0) == pytest.approx(1.0)
    assert l2_uniad(pred, gt, None, 3.0) == pytest.approx(3.0)
    row = displacement_metrics(pred, gt, cfg=TrajectoryMetricsConfig())
    assert row["l2_stp3_3s"] == pytest.approx(1.75) and row["l2_uniad_3s"] == pytest.approx(3.0)
    # at 10 Hz steps the ST-P3 mean is over 0.1 .. 1.0 s instead
    assert l2_stp3(pred, gt, None, 1.0, step_s=0.1) == pytest.approx(0.55)


def test_the_two_miss_definitions_differ_where_they_should():
    # a detour of 3 m in the middle that ends back on the ground truth
    detour = 3.0 * np.sin(np.pi * T / T[-1])
    pred, gt = _lateral_error_plan(detour)
    assert miss_final(pred, gt) is False  # final displacement 0
    assert miss_max_distance(pred, gt) is True  # nuScenes: max pointwise 3 m > 2 m
    # a plan that drifts to 2.5 m at the end misses in both senses
    pred, gt = _lateral_error_plan(2.5 * T / T[-1])
    assert miss_final(pred, gt) is True and miss_max_distance(pred, gt) is True
    # 1.5 m at most: neither
    pred, gt = _lateral_error_plan(1.5 * T / T[-1])
    assert miss_final(pred, gt) is False and miss_max_distance(pred, gt) is False


def test_min_ade_k_is_at_most_each_samples_ade_and_min_fde_is_independent():
    rng = np.random.default_rng(3)
    gt = np.stack([10.0 * T, np.zeros_like(T)], axis=1)
    samples = gt[None] + np.cumsum(rng.normal(0, 0.3, (6, PLAN_STEPS, 2)), axis=1)
    best = min_ade_fde(samples, gt)
    ades = [ade(s, gt) for s in samples]
    fdes = [fde(s, gt) for s in samples]
    assert best["k"] == 6
    assert all(best["min_ade"] <= a + 1e-12 for a in ades)
    assert best["min_ade"] == pytest.approx(min(ades))
    assert best["min_fde"] == pytest.approx(min(fdes))
    row = displacement_metrics(samples[0], gt, samples=samples)
    assert row["min_ade_k"] <= row["ade_6.4s"] + 1e-12
    # over k samples a window is missed only when every sample misses
    far = gt[None] + np.array([0.0, 5.0])
    assert miss_final(np.concatenate([far, gt[None]]), gt) is False
    assert miss_final(far, gt) is True


def test_masked_rows_are_ignored_and_all_masked_is_undefined():
    pred, gt = _lateral_error_plan(T.copy())
    valid = T <= 3.0 + 1e-9  # the log ends at 3 s
    assert ade(pred, gt, valid) == pytest.approx(np.mean(T[:30]))
    assert math.isnan(fde(pred, gt, valid))  # 6.4 s is not in the log
    assert fde(pred, gt, valid, 3.0) == pytest.approx(3.0)
    assert miss_final(pred, gt, valid) is None
    assert miss_max_distance(pred, gt, valid) is True  # 3 m within the logged rows
    gt_nan = gt.copy()
    gt_nan[5] = np.nan  # a NaN row is invalid whatever the mask says
    assert ade(pred, gt_nan, None, 1.0) == pytest.approx(np.mean(np.delete(T[:10], 5)))
    assert math.isnan(l2_stp3(pred, gt, valid, 3.0 + 0.5))
    assert math.isnan(ade(pred, gt, np.zeros(PLAN_STEPS, bool)))


def test_shape_errors_name_the_shapes():
    with pytest.raises(InvalidInputError, match=r"\(T, 2\)"):
        ade(np.zeros((64, 3)), np.zeros((64, 3)))
    with pytest.raises(InvalidInputError, match="valid mask"):
        ade(np.zeros((64, 2)), np.zeros((64, 2)), np.ones(10, bool))


def _straight_plan(speed_mps: float) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([speed_mps * T, np.zeros_like(T)], axis=1), np.zeros(PLAN_STEPS)


def _static_box(x: float, y: float, length: float = 4.0, width: float = 2.0) -> np.ndarray:
    return np.tile([x, y, 0.0, length, width], (1, PLAN_STEPS, 1)).astype(float)


def test_collision_with_a_logged_box_is_found_with_its_time():
    plan_xy, yaw = _straight_plan(5.0)
    # a stopped car whose rear is at x = 20 m: the ego front (rear axle + 1 + 2 = 3 m ahead)
    # reaches it when 5 t + 3 >= 20, i.e. at t = 3.4 s
    hit = plan_collision(plan_xy, yaw, _static_box(22.0, 0.0), **EGO)
    assert hit.collided and hit.agent_index == 0
    assert hit.time_s == pytest.approx(3.4)


def test_near_miss_is_not_a_collision_and_unobserved_rows_are_skipped():
    plan_xy, yaw = _straight_plan(5.0)
    # beside the path: ego half width 1 + agent half width 1 + 0.3 m of clearance
    near = plan_collision(plan_xy, yaw, _static_box(15.0, 2.3), **EGO)
    assert not near.collided
    # the margin widens the ego footprint per side: 0.2 m leaves 0.1 m, 0.35 m overlaps
    assert not plan_collision(plan_xy, yaw, _static_box(15.0, 2.3), margin_m=0.2, **EGO).collided
    assert plan_collision(plan_xy, yaw, _static_box(15.0, 2.3), margin_m=0.35, **EGO).collided
    # the box in the path, but the log stops observing it before the ego gets there
    boxes = _static_box(22.0, 0.0)
    boxes[:, 30:] = np.nan
    assert not plan_collision(plan_xy, yaw, boxes, **EGO).collided
    assert not plan_collision(plan_xy, yaw, np.zeros((0, PLAN_STEPS, 5)), **EGO).collided


def test_collision_uses_the_agents_future_pose_not_its_t0_pose():
    plan_xy, yaw = _straight_plan(5.0)
    # an agent crossing the ego's path: at t0 it is 10 m to the left, it crosses y = 0 at
    # x = 15 m at t = 3 s (when the ego's box spans x = 14 .. 18 m)
    boxes = np.zeros((1, PLAN_STEPS, 5))
    boxes[0, :, 0] = 15.0
    boxes[0, :, 1] = 10.0 - 10.0 / 3.0 * T
    boxes[0, :, 2] = -math.pi / 2
    boxes[0, :, 3:] = (4.0, 2.0)
    hit = plan_collision(plan_xy, yaw, boxes, **EGO)
    assert hit.collided and 2.0 < hit.time_s < 3.5


def test_offroad_from_the_footprint():
    area = box(-10.0, -2.0, 100.0, 2.0)  # a 4 m wide road along +x
    plan_xy, yaw = _straight_plan(5.0)
    assert plan_offroad(plan_xy, yaw, area, **EGO)["offroad"] is False
    drift = plan_xy + np.stack([np.zeros_like(T), 0.5 * T], axis=1)  # 0.5 m/s to the left
    strict = {"area_tolerance_m2": 0.0, "distance_tolerance_m": 0.0}
    res = plan_offroad(drift, yaw, area, **EGO, **strict)
    # the footprint's left edge (y + 1) leaves y = 2 when 0.5 t > 1: t = 2.1 s (first row > 2 s)
    assert res["offroad"] is True and res["time_s"] == pytest.approx(2.1)
    # default tolerances (the closed-loop rule): 0.5 m^2 out, i.e. the edge 0.5 / length m out
    res = plan_offroad(drift, yaw, area, **EGO)
    t_area = (1.0 + 0.5 / EGO["length_m"]) / 0.5
    assert res["offroad"] is True
    assert t_area < res["time_s"] <= t_area + 0.1 + 1e-9
    # a sliver (0.1 m out for the whole plan) is not off-road, as in closed loop
    sliver = plan_xy + np.array([0.0, 1.1])
    assert plan_offroad(sliver, yaw, area, **EGO)["offroad"] is False
    assert plan_offroad(sliver, yaw, area, **EGO, **strict)["offroad"] is True
    assert plan_offroad(plan_xy, yaw, None, **EGO)["offroad"] is None


def test_reasoning_consistency_against_the_plans_meta_actions():
    cruise = Trajectory.from_controls(np.zeros(PLAN_STEPS), np.zeros(PLAN_STEPS), 10.0)
    ok = check_reasoning("Keep the set speed on the clear road.", cruise)
    assert ok.parsed and ok.longitudinal and ok.lateral and ok.joint
    assert ok.decision["longitudinal"] == "set_speed_tracking"
    bad = check_reasoning("Come to a stop: the road ahead is clear.", cruise)
    assert bad.parsed and bad.longitudinal is False and bad.joint is False and bad.reasons
    stopping = Trajectory.from_controls(np.full(PLAN_STEPS, -3.0), np.zeros(PLAN_STEPS), 10.0)
    assert check_reasoning("Come to a stop: the road ahead is clear.", stopping).joint
    unread = check_reasoning("lorem ipsum", cruise)
    assert not unread.parsed and unread.joint is None and unread.to_dict()["truthful"] is None
