"""nuScenes loader through nuscenes-devkit on the generated table set
(tests/planner/data/nuscenes_fixture.py: straight 10 s at 10 m/s, then a 100 m left arc)."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("nuscenes")

from planner.data.loaders import (  # noqa: E402
    NoEgoTrackError,
    detect_format,
    load_loaders_config,
    open_log_source,
)
from planner.data.loaders.nuscenes import NuScenesSource  # noqa: E402
from planner.taxonomy import AgentClass  # noqa: E402
from planner.types import (  # noqa: E402
    EGO_CURV,
    EGO_SPEED,
    EGO_X,
    EGO_Y,
    EGO_YAW,
    HISTORY_STEPS,
    PLAN_DT_S,
    PLAN_STEPS,
)
from tests.planner.data.nuscenes_fixture import (  # noqa: E402
    CAMERA_HZ,
    CAMERA_OFFSET_S,
    CAMERAS,
    IMAGE_HW,
    LEAD_GAP_M,
    LEFT_LANE_Y,
    RADIUS_M,
    SPEED_MPS,
    STRAIGHT_S,
    T0_US,
    X0,
    Y0,
    camera_color,
    ego_pose_at,
    make_nuscenes_fixture,
)

T0_S = T0_US * 1e-6


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory):
    return make_nuscenes_fixture(tmp_path_factory.mktemp("nuscenes")).dataroot


@pytest.fixture(scope="module")
def rlog(fixture_root):
    source = open_log_source(fixture_root)
    assert isinstance(source, NuScenesSource)
    return next(source.resampled_logs())


def test_detects_dataroot_and_version_folder(fixture_root):
    assert detect_format(fixture_root) == "nuscenes"
    assert detect_format(fixture_root / "v1.0-mini") == "nuscenes"
    source = open_log_source(fixture_root / "v1.0-mini")
    assert source.version == "v1.0-mini" and source.dataroot == fixture_root


def test_ego_is_resampled_to_10hz_and_matches_the_analytic_motion(rlog):
    assert np.allclose(np.diff(rlog.t), PLAN_DT_S, atol=1e-6)
    assert rlog.t[0] == pytest.approx(T0_S) and len(rlog) == 200  # LIDAR_TOP poses 0 .. 19.95 s
    truth = np.array([ego_pose_at(t - T0_S) for t in rlog.t])
    assert np.allclose(rlog.ego[:, [EGO_X, EGO_Y]], truth[:, :2], atol=1e-4)
    assert np.allclose(rlog.ego[:, EGO_YAW], truth[:, 2], atol=1e-6)
    inner = slice(1, -1)  # one-sided differences at the log's ends
    assert np.allclose(rlog.ego[inner, EGO_SPEED], SPEED_MPS, atol=1e-3)
    on_arc = rlog.t - T0_S > STRAIGHT_S + 0.15
    assert np.allclose(rlog.ego[on_arc, EGO_CURV][:-1], 1 / RADIUS_M, atol=1e-4)
    straight = rlog.t - T0_S < STRAIGHT_S - 0.15
    assert np.allclose(rlog.ego[straight, EGO_CURV], 0.0, atol=1e-6)


def test_future_on_the_arc_equals_the_hand_computation(rlog):
    """The numbers the open-loop evaluation relies on: at t0 = 12 s the ego is 2 s into the
    left arc; in its frame the logged future is x = R sin(th), y = R (1 - cos th) with
    th = V k dt / R, and the constant-velocity baseline predicts (V k dt, 0)."""
    i = int(round(12.0 / PLAN_DT_S))
    sample = rlog.sample_at(i)
    assert sample.fully_valid
    k = np.arange(1, PLAN_STEPS + 1)
    th = SPEED_MPS * k * PLAN_DT_S / RADIUS_M
    expected = np.stack([RADIUS_M * np.sin(th), RADIUS_M * (1 - np.cos(th))], axis=1)
    assert np.allclose(sample.future_xy_ego(), expected, atol=1e-3)
    assert np.allclose(sample.future_yaw_ego(), th, atol=1e-6)
    const_vel = np.stack([SPEED_MPS * k * PLAN_DT_S, np.zeros(PLAN_STEPS)], axis=1)
    fde = np.hypot(*(const_vel[-1] - expected[-1]))
    hand_fde = math.hypot(64 - RADIUS_M * math.sin(0.64), RADIUS_M * (1 - math.cos(0.64)))
    assert fde == pytest.approx(hand_fde, abs=1e-3)
    assert hand_fde == pytest.approx(20.248, abs=1e-3)
    # and the history is 1.6 s at 10 Hz ending at t0, REP-103 (a left arc: yaw grows)
    hist = sample.scene.ego_history
    assert hist.shape == (HISTORY_STEPS, 7) and np.all(np.diff(hist[:, EGO_YAW]) > 0)


def test_real_camera_frames_are_the_nearest_12hz_jpegs(rlog):
    i = 50  # t0 = 5.0 s
    scene = rlog.scene_at(i)
    assert scene.metadata["cameras"] == "real"
    assert set(scene.cameras) == set(CAMERAS)
    for ci, name in enumerate(CAMERAS):
        frames = scene.cameras[name]
        assert frames.shape == (4, *IMAGE_HW, 3) and frames.dtype == np.uint8
        for f, t in enumerate(rlog.t[i - 3 : i + 1] - T0_S):
            k = int(round((t - CAMERA_OFFSET_S) * CAMERA_HZ))
            assert np.abs(frames[f, 5, 5].astype(int) - camera_color(k, ci)).max() <= 3


def test_annotations_become_agents_interpolated_between_keyframes(rlog):
    scene = rlog.scene_at(33)  # t = 3.3 s: between the keyframes at 3.0 and 3.5 s
    by_class = {a.id: a for a in scene.agents}
    assert set(by_class) == {"inst_lead", "inst_left", "inst_ped"}
    lead, left, ped = by_class["inst_lead"], by_class["inst_left"], by_class["inst_ped"]
    assert lead.agent_class == AgentClass.VEHICLE and ped.agent_class == AgentClass.PEDESTRIAN
    assert lead.x - scene.ego.x == pytest.approx(LEAD_GAP_M, abs=1e-6)
    assert lead.length == pytest.approx(4.5) and lead.width == pytest.approx(1.9)
    assert lead.vx == pytest.approx(SPEED_MPS, abs=1e-6)  # devkit box_velocity
    assert left.y == pytest.approx(LEFT_LANE_Y) and left.x == pytest.approx(X0 - 10 + 12 * 3.3)
    assert set(scene.metadata["interpolated_agent_ids"]) == set(by_class)
    assert rlog.scene_at(30).metadata["interpolated_agent_ids"] == []
    assert rlog.data.agents_interpolated


def test_map_lanes_have_left_boundary_on_the_left_of_travel(rlog):
    lanes = rlog.data.map.lanes
    assert set(lanes) == {"lane_ego", "lane_left", "conn_curve"}
    ego_lane = lanes["lane_ego"]
    assert np.allclose(ego_lane.centerline[:, 1], Y0)
    assert np.allclose(ego_lane.left_boundary[:, 1], Y0 + 1.75, atol=0.01)
    assert np.allclose(ego_lane.right_boundary[:, 1], Y0 - 1.75, atol=0.01)
    assert ego_lane.successors == ("conn_curve",)
    curve = lanes["conn_curve"]
    centre = np.array([X0 + 100.0, Y0 + RADIUS_M])
    assert np.allclose(np.hypot(*(curve.centerline - centre).T), RADIUS_M, atol=0.01)
    assert np.allclose(np.hypot(*(curve.left_boundary - centre).T), RADIUS_M - 1.75, atol=0.05)
    assert curve.predecessors == ("lane_ego",)
    assert rlog.data.map.drivable_area.contains(
        __import__("shapely.geometry", fromlist=["Point"]).Point(X0 + 50, Y0)
    )


def test_all_sensor_poses_mix_rates_and_are_flagged(fixture_root):
    cfg = load_loaders_config(overrides=["nuscenes.ego_pose_channels=[]"])
    rlog = next(open_log_source(fixture_root, config=cfg).resampled_logs())
    assert rlog.metadata["ego_rate"]["irregular"]
    truth = np.array([ego_pose_at(t - T0_S) for t in rlog.t])
    assert np.allclose(rlog.ego[:, [EGO_X, EGO_Y]], truth[:, :2], atol=1e-3)


def test_missing_ego_channel_is_a_clear_error(fixture_root):
    cfg = load_loaders_config(overrides=["nuscenes.ego_pose_channels=[RADAR_FRONT]"])
    with pytest.raises(NoEgoTrackError, match="ego_pose_channels"):
        list(open_log_source(fixture_root, config=cfg).samples())


def test_samples_iterate_with_stride(fixture_root):
    samples = list(open_log_source(fixture_root).samples(stride_s=2.0))
    assert [round(s.meta["t0"] - T0_S, 3) for s in samples][:3] == [2.0, 4.0, 6.0]
    assert all(s.meta["source"] == "nuscenes" for s in samples)
    assert samples[-1].future_valid.sum() < PLAN_STEPS  # the log ends inside its future


def test_log_without_cameras_or_map_expansion_still_loads(tmp_path, caplog):
    root = make_nuscenes_fixture(tmp_path, with_cameras=False, with_map=False).dataroot
    rlog = next(open_log_source(root).resampled_logs())
    scene = rlog.scene_at(50)
    assert scene.cameras is None and scene.metadata["cameras"] == "none"  # render them
    assert scene.map.lanes == {} and "map expansion" in caplog.text
    assert len(scene.agents) == 3


def test_const_vel_baseline_open_loop_on_the_fixture_matches_the_hand_computation(rlog):
    """Scene -> PlannerInput -> const-vel plan vs the logged future at t0 = 12 s: the plan is
    (V k dt, 0) and the log is the arc, so ADE / FDE follow from the formulas alone."""
    from planner.features import build_planner_input
    from planner.planners import make_planner

    sample = rlog.sample_at(120)
    inp = build_planner_input(sample.scene)
    assert inp.camera_source == "real" and inp.cameras.shape == (3, 4, *IMAGE_HW, 3)
    plan = make_planner("const-vel").plan(inp).trajectory
    err = np.hypot(*(plan.xy - sample.future_xy_ego()).T)
    k = np.arange(1, PLAN_STEPS + 1) * PLAN_DT_S
    th = SPEED_MPS * k / RADIUS_M
    hand = np.hypot(SPEED_MPS * k - RADIUS_M * np.sin(th), RADIUS_M * (1 - np.cos(th)))
    assert err[-1] == pytest.approx(20.248, abs=1e-2)
    assert err.mean() == pytest.approx(hand.mean(), abs=1e-2)


def test_fitted_controls_reproduce_the_logged_future(fixture_root):
    from planner.types import Trajectory

    cfg = load_loaders_config(overrides=["common.fit_controls=true"])
    rlog = next(open_log_source(fixture_root, config=cfg).resampled_logs())
    for i in (40, 95, 120):  # straight, entering the arc, on the arc
        sample = rlog.sample_at(i)
        assert sample.controls is not None and sample.controls.shape == (PLAN_STEPS, 2)
        traj = Trajectory.from_controls(
            sample.controls[:, 0], sample.controls[:, 1], sample.scene.ego.speed
        )
        assert np.hypot(*(traj.xy[-1] - sample.future_xy_ego()[-1])) < 0.1
