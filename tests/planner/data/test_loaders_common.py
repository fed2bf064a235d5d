"""Shared loader machinery on synthetic logs: resampling, jump masking, rates, windows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from planner.data.loaders import open_log_source
from planner.data.loaders.common import (
    AgentTrack,
    EgoTrack,
    IrregularRateError,
    LoaderConfig,
    LogData,
    LogFormatError,
    NoEgoTrackError,
    ResampledLog,
    analyse_rate,
    mask_ego_jumps,
)
from planner.types import (
    EGO_SPEED,
    EGO_T,
    EGO_X,
    EGO_Y,
    HISTORY_STEPS,
    PLAN_STEPS,
    AgentClass,
)


def straight_log(times: np.ndarray, speed: float = 5.0, **kw) -> LogData:
    ego = EgoTrack(t=times, x=speed * times, y=np.zeros_like(times), yaw=np.zeros_like(times))
    return LogData(log_id="synthetic", source="test", ego=ego, **kw)


def test_resamples_a_25hz_track_onto_the_10hz_grid():
    t = 100.0 + np.arange(0, 10.0, 0.04)  # 25 Hz
    rlog = ResampledLog(straight_log(t), LoaderConfig())
    assert np.allclose(np.diff(rlog.t), 0.1)
    assert rlog.ego_valid.all()
    assert np.allclose(rlog.ego[:, EGO_X], 5.0 * rlog.t, atol=1e-9)
    assert np.allclose(rlog.ego[:, EGO_SPEED], 5.0)


def test_window_has_16_history_rows_and_64_future_rows_with_valid_mask():
    t = np.arange(0, 8.0, 0.05)  # 8 s at 20 Hz: the future of late anchors runs off the end
    rlog = ResampledLog(straight_log(t), LoaderConfig())
    anchors = rlog.anchor_indices(stride_s=0.1)
    assert anchors[0] == HISTORY_STEPS - 1  # the first index with a full 1.6 s history
    sample = rlog.sample_at(anchors[0])
    assert sample.scene.ego_history.shape == (HISTORY_STEPS, 7)
    assert sample.scene.ego_history[-1, EGO_T] == pytest.approx(sample.scene.timestamp)
    assert np.allclose(np.diff(sample.scene.ego_history[:, EGO_T]), 0.1)
    assert sample.future_ego.shape == (PLAN_STEPS, 7)
    assert sample.fully_valid
    assert np.allclose(sample.future_xy_ego()[:, 0], 5.0 * 0.1 * np.arange(1, 65))

    late = rlog.sample_at(anchors[-1])
    n_left = len(rlog) - 1 - anchors[-1]
    assert late.future_valid.sum() == n_left
    assert late.future_valid[:n_left].all() and not late.future_valid[n_left:].any()
    assert np.isnan(late.future_ego[n_left:, EGO_X]).all()
    assert np.allclose(np.diff(late.future_ego[:, EGO_T]), 0.1)  # times are always filled


def test_single_jump_is_masked_and_the_track_continues():
    t = np.arange(0, 10.0, 0.1)
    log = straight_log(t)
    log.ego.y[50] += 25.0  # a 25 m localisation jump at t = 5.0 s
    cfg = LoaderConfig()
    assert not mask_ego_jumps(log.ego, cfg)[50]
    assert mask_ego_jumps(log.ego, cfg).sum() == len(t) - 1
    rlog = ResampledLog(log, cfg)
    assert rlog.metadata["masked_jumps"] == 1
    # the masked sample is interpolated across (0.2 s gap < max_ego_gap_s), never used raw
    assert abs(rlog.ego[50, EGO_Y]) < 1e-9
    cfg_strict = LoaderConfig(max_ego_gap_s=0.15)
    rlog = ResampledLog(log, cfg_strict)
    assert not rlog.ego_valid[50] and rlog.ego_valid[49] and rlog.ego_valid[51]
    # no sample window uses the invalid row as its present or history
    for i in rlog.anchor_indices(0.1):
        assert not (i - HISTORY_STEPS < 50 <= i)
    sample = rlog.sample_at(40)
    assert not sample.future_valid[9] and sample.future_valid[8] and sample.future_valid[10]


def test_relocalisation_restarts_the_track_after_jump_reset():
    t = np.arange(0, 10.0, 0.1)
    log = straight_log(t)
    log.ego.y[50:] += 25.0  # a permanent shift: the track restarts after jump_reset_s
    ok = mask_ego_jumps(log.ego, LoaderConfig(jump_reset_s=1.0))
    assert not ok[50:60].any()
    assert ok[61:].all()


def test_irregular_rate_is_flagged_or_an_error_by_policy():
    t = np.sort(np.concatenate([np.arange(0, 10, 0.05), 0.013 + np.arange(0, 10, 1 / 12)]))
    report = analyse_rate(t, "merged", LoaderConfig())
    assert report["irregular"]
    rlog = ResampledLog(straight_log(t), LoaderConfig())
    assert rlog.metadata["ego_rate"]["irregular"]
    assert np.allclose(rlog.ego[:, EGO_X], 5.0 * rlog.t, atol=1e-9)  # resampled all the same
    with pytest.raises(IrregularRateError, match="irregular_rate_policy"):
        ResampledLog(straight_log(t), LoaderConfig(irregular_rate_policy="error"))


def test_too_sparse_ego_is_a_clear_error():
    with pytest.raises(IrregularRateError, match="min_ego_rate_hz"):
        ResampledLog(straight_log(np.arange(0, 10.0, 1.0)), LoaderConfig())


def test_log_without_valid_ego_poses_is_a_clear_error():
    log = straight_log(np.arange(0, 2.0, 0.1))
    log.ego.valid[:] = False
    with pytest.raises(NoEgoTrackError, match="valid ego pose"):
        ResampledLog(log, LoaderConfig())


def test_agents_at_2hz_are_interpolated_and_flagged():
    t = np.arange(0, 10.0, 0.05)
    ta = np.arange(0, 10.0, 0.5)
    agent = AgentTrack(
        id="a1",
        agent_class=AgentClass.VEHICLE,
        t=ta,
        x=10 + 4.0 * ta,
        y=np.full_like(ta, 3.5),
        yaw=np.zeros_like(ta),
        vx=np.full_like(ta, 4.0),
        vy=np.zeros_like(ta),
        length=4.5,
        width=1.9,
    )
    rlog = ResampledLog(straight_log(t, agents=[agent], agents_interpolated=True), LoaderConfig())
    scene = rlog.scene_at(23)  # t = 2.3 s, between keyframes
    (a,) = scene.agents
    assert a.x == pytest.approx(10 + 4.0 * 2.3)
    assert scene.metadata["interpolated_agent_ids"] == ["a1"]
    assert rlog.scene_at(20).metadata["interpolated_agent_ids"] == []
    assert a.history.shape == (HISTORY_STEPS, 5)
    sample = rlog.sample_at(20)
    fut = sample.agent_futures["a1"]
    assert fut.shape == (PLAN_STEPS, 5)
    assert fut[9, 1] == pytest.approx(10 + 4.0 * 3.0)
    # beyond the last keyframe (9.5 s) the agent is unobserved: NaN
    fut = rlog.sample_at(40).agent_futures["a1"]
    late = fut[:, 0] > 9.5 + 1e-9
    assert late.any() and np.isnan(fut[late, 1]).all() and np.isfinite(fut[~late, 1]).all()


def test_route_command_follows_the_logged_future():
    t = np.arange(0, 10.0, 0.1)
    yaw = np.where(t < 3, 0.0, 0.3 * (t - 3))
    x = np.zeros_like(t)
    y = np.zeros_like(t)
    for k in range(1, len(t)):  # integrate a unicycle at 5 m/s
        x[k] = x[k - 1] + 0.5 * math.cos(yaw[k - 1])
        y[k] = y[k - 1] + 0.5 * math.sin(yaw[k - 1])
    log = LogData("turn", "test", EgoTrack(t=t, x=x, y=y, yaw=yaw))
    rlog = ResampledLog(log, LoaderConfig())
    assert rlog.scene_at(20).route.command.value == "left"
    assert rlog.scene_at(90).route.command.value == "lane_follow"  # no future known


def test_missing_path_and_unknown_format_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_log_source(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(LogFormatError, match="unknown log format"):
        open_log_source(tmp_path / "notes.txt")
    with pytest.raises(LogFormatError, match="unknown log format"):
        open_log_source(tmp_path)
    (tmp_path / "x.mcap").write_bytes(b"")
    with pytest.raises(LogFormatError, match="bag directory"):
        open_log_source(tmp_path / "x.mcap")
