"""ScenarioNet loader on generated scenario pickles (tests/planner/data/scenarionet_fixture.py)."""

from __future__ import annotations

import numpy as np
import pytest

from planner.data.loaders import (
    IrregularRateError,
    NoEgoTrackError,
    detect_format,
    load_loaders_config,
    open_log_source,
)
from planner.data.loaders.scenarionet import ScenarioNetSource
from planner.taxonomy import AgentClass, LightState
from planner.types import EGO_CURV, EGO_SPEED, EGO_X, EGO_Y, EGO_YAW, HISTORY_STEPS, PLAN_STEPS
from tests.planner.data.scenarionet_fixture import (
    LEAD_GAP_M,
    RADIUS_M,
    SPEED_MPS,
    STRAIGHT_S,
    ego_rear_axle_at,
    make_scenario,
    write_dataset,
    write_scenario,
)


def _resampled(path, overrides=()):
    source = open_log_source(path, overrides=overrides)
    assert isinstance(source, ScenarioNetSource)
    return next(source.resampled_logs())


def _truth(t):
    return np.array([ego_rear_axle_at(float(x)) for x in t])


def test_ego_trajectory_is_rear_axle_rep103_at_10hz(tmp_path):
    rlog = _resampled(write_scenario(tmp_path / "a.pkl", make_scenario()))
    assert np.allclose(np.diff(rlog.t), 0.1, atol=1e-6)
    truth = _truth(rlog.t)
    # the pickle holds the box centre (Waymo convention); the loader returns the rear axle
    assert np.allclose(rlog.ego[:, [EGO_X, EGO_Y]], truth[:, :2], atol=1e-4)
    assert np.allclose(rlog.ego[:, EGO_YAW], truth[:, 2], atol=1e-5)
    assert np.allclose(rlog.ego[:, EGO_SPEED], SPEED_MPS, atol=1e-4)
    turning = rlog.t > STRAIGHT_S + 0.2
    # left turn: yaw grows counter-clockwise, y grows, curvature = +1/R
    assert np.all(np.diff(rlog.ego[turning, EGO_YAW]) > 0)
    assert np.allclose(rlog.ego[turning, EGO_CURV], 1.0 / RADIUS_M, atol=1e-3)
    assert rlog.ego[-1, EGO_Y] > 5.0


def test_left_handed_pickle_is_mirrored_into_rep103(tmp_path):
    right = _resampled(write_scenario(tmp_path / "r.pkl", make_scenario()))
    left = _resampled(write_scenario(tmp_path / "l.pkl", make_scenario(coordinate="left-handed")))
    assert left.metadata["mirrored"] and not right.metadata["mirrored"]
    assert np.allclose(left.ego, right.ego, equal_nan=True)
    lane = left.data.map.lanes["lane_1"]
    assert lane.left_neighbor == "lane_2"
    assert np.allclose(lane.left_boundary[:, 1], 1.75)


def test_unknown_handedness_is_a_clear_error(tmp_path):
    path = write_scenario(tmp_path / "u.pkl", make_scenario(coordinate="enu-ish"))
    with pytest.raises(Exception, match="scenarionet.handedness"):
        _resampled(path)
    rlog = _resampled(path, overrides=["scenarionet.handedness=right"])
    assert np.allclose(rlog.ego[:, EGO_X], _truth(rlog.t)[:, 0], atol=1e-4)


def test_agents_lanes_and_lights_convert(tmp_path):
    source = open_log_source(write_scenario(tmp_path / "a.pkl", make_scenario()))
    sample = next(iter(source.samples(stride_s=0.5)))
    scene = sample.scene
    assert scene.cameras is None and scene.metadata["cameras"] == "none"
    classes = {a.id: a.agent_class for a in scene.agents}
    assert classes == {
        "car_1": AgentClass.VEHICLE,
        "ped_1": AgentClass.PEDESTRIAN,
        "cone_1": AgentClass.CONE,
    }  # "thing_1" (OTHER) is skipped
    car = scene.agent("car_1")
    assert car.x - scene.ego.x == pytest.approx(LEAD_GAP_M, abs=1e-3)  # centre vs rear axle
    assert car.vx == pytest.approx(SPEED_MPS) and car.length == pytest.approx(4.5)
    lane = scene.map.lanes["lane_1"]
    # travel along +x: the left boundary is at +y, the left neighbour too
    assert np.allclose(lane.left_boundary[:, 1], 1.75)
    assert np.allclose(lane.right_boundary[:, 1], -1.75)
    assert lane.left_neighbor == "lane_2" and lane.successors == ("lane_3",)
    assert lane.speed_limit_mps == pytest.approx(10.0)
    arc = scene.map.lanes["lane_3"]
    centre = np.array([32.0, RADIUS_M])  # the left turn's circle centre is on its left
    d_left = np.hypot(*(arc.left_boundary - centre).T)
    assert np.allclose(d_left, RADIUS_M - 1.75, atol=0.05)
    (light,) = scene.traffic_lights
    assert light.state == LightState.RED and light.lane_ids == ("lane_1",)
    later = [s for s in source.scenes() if s.timestamp > 3.05][0]
    assert later.traffic_lights[0].state == LightState.GREEN
    # the lead car leaves the log after 4 s: its future is NaN from then on
    fut = sample.agent_futures["car_1"]
    assert np.isnan(fut[fut[:, 0] > STRAIGHT_S + 1e-6, 1]).all()


def test_2hz_scenario_is_resampled_and_agents_flagged(tmp_path):
    scenario = make_scenario(n_steps=19, dt_s=0.5)
    rlog = _resampled(write_scenario(tmp_path / "slow.pkl", scenario))
    assert len(rlog) == 91 and rlog.ego_valid.all()
    truth = _truth(rlog.t)
    straight = rlog.t <= STRAIGHT_S
    assert np.allclose(rlog.ego[straight][:, [EGO_X, EGO_Y]], truth[straight, :2], atol=1e-4)
    # on the 20 m arc, chords of 4 m sag by at most 4^2 / (8 * 20) = 0.1 m
    assert np.abs(rlog.ego[:, [EGO_X, EGO_Y]] - truth[:, :2]).max() < 0.15
    assert rlog.data.agents_interpolated
    scene = rlog.scene_at(23)
    assert "car_1" in scene.metadata["interpolated_agent_ids"]


def test_jumping_sdc_sample_is_masked(tmp_path):
    scenario = make_scenario(jump_steps=(40,))
    rlog = _resampled(
        write_scenario(tmp_path / "jump.pkl", scenario), ["common.max_ego_gap_s=0.15"]
    )
    assert rlog.metadata["masked_jumps"] == 1
    assert not rlog.ego_valid[40] and rlog.ego_valid[39] and rlog.ego_valid[41]
    assert (
        np.abs(rlog.ego[rlog.ego_valid, EGO_Y] - _truth(rlog.t[rlog.ego_valid])[:, 1]).max() < 1e-3
    )
    sample = rlog.sample_at(20)  # t0 = 2 s: the future row at 4.0 s is the masked one
    assert not sample.future_valid[19] and sample.future_valid.sum() == PLAN_STEPS - 1
    assert np.isnan(sample.future_ego[19, EGO_X])
    anchors = rlog.anchor_indices(0.1)
    assert 40 not in anchors and all(not (i - HISTORY_STEPS < 40 <= i) for i in anchors)


def test_scenario_without_sdc_track_is_a_clear_error(tmp_path):
    path = write_scenario(tmp_path / "no_ego.pkl", make_scenario(sdc_id=""))
    with pytest.raises(NoEgoTrackError, match="sdc_id"):
        list(open_log_source(path).samples())


def test_mixed_rate_timestamps_are_flagged_or_rejected(tmp_path):
    ts = np.concatenate([np.arange(0, 4.0, 0.1), 4.0 + np.arange(0, 5.0, 0.2)])
    path = write_scenario(tmp_path / "mixed.pkl", make_scenario(ts=ts))
    rlog = _resampled(path)
    assert rlog.metadata["ego_rate"]["irregular"]
    assert np.allclose(np.diff(rlog.t), 0.1, atol=1e-9)
    with pytest.raises(IrregularRateError):
        _resampled(path, ["common.irregular_rate_policy=error"])
    decreasing = ts.copy()
    decreasing[10] = decreasing[9]
    bad = write_scenario(tmp_path / "bad.pkl", make_scenario(ts=decreasing))
    with pytest.raises(Exception, match="not increasing"):
        _resampled(bad)


def test_dataset_folder_is_detected_and_every_scenario_read(tmp_path):
    folder = write_dataset(
        tmp_path / "ds",
        [make_scenario(scenario_id="s1"), make_scenario(scenario_id="s2", dataset="nuscenes")],
    )
    assert detect_format(folder) == "scenarionet"
    logs = list(open_log_source(folder, config=load_loaders_config()).resampled_logs())
    assert [r.data.log_id for r in logs] == ["s1", "s2"]
    # nuScenes conversions store the SDC's rear axle: no centre offset is applied
    for rlog in logs:
        assert np.allclose(rlog.ego[:, EGO_X], _truth(rlog.t)[:, 0], atol=1e-4)


def test_non_scenario_pickle_is_rejected(tmp_path):
    path = write_scenario(tmp_path / "other.pkl", {"hello": 1})
    with pytest.raises(Exception, match="unknown log format"):
        open_log_source(path)
    with pytest.raises(Exception, match="missing key"):
        list(open_log_source(f"scenarionet:{path}").samples())


class ScenarioDescription(dict):
    """Stands in for metadrive.scenario.ScenarioDescription (a dict subclass)."""


def test_metadrive_dict_subclass_and_numpy2_names_load_without_metadrive(tmp_path):
    import pickle

    raw = pickle.dumps(ScenarioDescription(make_scenario()), protocol=0)
    raw = raw.replace(
        f"{__name__}\nScenarioDescription".encode(),
        b"metadrive.scenario.scenario_description\nScenarioDescription",
    ).replace(b"numpy.core.multiarray", b"numpy._core.multiarray")
    assert b"metadrive.scenario" in raw and b"numpy._core" in raw
    path = tmp_path / "sd.pkl"
    path.write_bytes(raw)
    rlog = _resampled(path)
    assert np.allclose(rlog.ego[:, EGO_X], _truth(rlog.t)[:, 0], atol=1e-4)


def test_pickle_with_foreign_callables_is_refused(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("never",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"tracks": Evil(), "metadata": {}, "map_features": {}}))
    with pytest.raises(Exception, match="refusing to unpickle"):
        list(open_log_source(f"scenarionet:{path}").samples())
