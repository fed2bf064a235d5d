"""`cocdrive eval open-loop`: hand-computed const-velocity numbers on the generated nuScenes
fixture through the CLI, reasoning consistency of a planner that writes reasoning, a dataset
folder of shards, resuming, and bad input as one-line errors (exit status 2)."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

from planner.base import Planner
from planner.data import shards
from planner.data.sample import Sample
from planner.errors import UserError
from planner.types import (
    PLAN_DT_S,
    PLAN_STEPS,
    Decision,
    LongitudinalDecision,
    PlannerInput,
    PlannerOutput,
    Reasoning,
    Trajectory,
)
from sim_eval.open_loop import SUMMARY_FILE, WINDOWS_FILE, load_open_loop_config, run_open_loop
from tests import helpers

K = np.arange(1, PLAN_STEPS + 1)


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """The real entry point (planner.cli.main): exit status, stdout, stderr."""
    from planner.cli import main

    monkeypatch.setattr(sys, "argv", ["cocdrive", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def nuscenes_root(tmp_path_factory):
    pytest.importorskip("nuscenes")
    from tests.planner.data.nuscenes_fixture import make_nuscenes_fixture

    return make_nuscenes_fixture(tmp_path_factory.mktemp("nusc")).dataroot


def _hand_const_vel(t0_rel: float) -> np.ndarray:
    """(64,) errors of the constant-velocity plan at t0 (s after the first keyframe), by hand:
    the plan is (V k dt, 0) in the ego frame; the log is the fixture's analytic motion."""
    from tests.planner.data.nuscenes_fixture import SPEED_MPS, ego_pose_at

    x0, y0, yaw0 = ego_pose_at(t0_rel)
    c, s = math.cos(yaw0), math.sin(yaw0)
    errors = []
    for k in K:
        x, y, _ = ego_pose_at(t0_rel + k * PLAN_DT_S)
        gx = c * (x - x0) + s * (y - y0)  # world -> ego frame at t0
        gy = -s * (x - x0) + c * (y - y0)
        errors.append(math.hypot(SPEED_MPS * k * PLAN_DT_S - gx, gy))
    return np.array(errors)


def test_const_vel_on_the_nuscenes_fixture_equals_the_hand_computation(
    nuscenes_root, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "cv"
    code, stdout, stderr = run_cli(
        monkeypatch, capsys, "eval", "open-loop", "--data", str(nuscenes_root),
        "--planner", "const-vel", "--out", str(out),
    )  # fmt: skip
    assert code == 0, stderr
    rows = {r["key"]: r for r in map(json.loads, (out / WINDOWS_FILE).read_text().splitlines())}
    summary = json.loads((out / SUMMARY_FILE).read_text())
    # 2 Hz keyframes of a 20 s log: t0 = 0 .. 19.5 s; 1.6 s of history needs t0 >= 1.5 s and
    # 6.4 s of future t0 <= 13.5 s (the last LIDAR pose is at 19.95 s)
    assert sorted(rows) == sorted(f"scene-0001:{i}" for i in range(15, 136, 5))
    assert summary["skipped"]["by_reason"] == {"invalid_ego_history": 3, "invalid_ego_future": 12}
    # t0 = 12 s, 2 s into the 100 m arc: the closed form of tests/planner/data
    r = rows["scene-0001:120"]
    th = 10.0 * K * PLAN_DT_S / 100.0
    hand = np.hypot(10.0 * K * PLAN_DT_S - 100.0 * np.sin(th), 100.0 * (1 - np.cos(th)))
    assert r["fde_6.4s"] == pytest.approx(20.248, abs=1e-2)
    assert r["ade_6.4s"] == pytest.approx(hand.mean(), abs=1e-2)
    assert r["ade_6.4s"] == pytest.approx(6.94, abs=1e-2)
    assert r["l2_uniad_3s"] == pytest.approx(hand[29], abs=1e-2)
    assert r["l2_stp3_3s"] == pytest.approx(hand[[4, 9, 14, 19, 24, 29]].mean(), abs=1e-2)
    assert r["miss_fde"] and r["miss_max"] and r["camera_source"] == "real"
    assert r["min_ade_k"] == r["ade_6.4s"] and r["k"] == 1  # a deterministic planner
    # every window and the means over them
    hand_ade = {}
    for key, row in rows.items():
        t0_rel = int(key.split(":")[1]) * PLAN_DT_S
        errors = _hand_const_vel(t0_rel)
        hand_ade[key] = errors.mean()
        assert row["ade_6.4s"] == pytest.approx(errors.mean(), abs=1e-2), key
        assert row["fde_1s"] == pytest.approx(errors[9], abs=1e-2), key
    mean = summary["means"]["ade_6.4s"]
    assert mean["mean"] == pytest.approx(np.mean(list(hand_ade.values())), abs=1e-2)
    assert mean["ci_low"] < mean["mean"] < mean["ci_high"] and mean["n"] == 25
    # the straight part is exact: the plan follows the lane until the arc enters the horizon
    assert rows["scene-0001:15"]["fde_6.4s"] == pytest.approx(0.0, abs=1e-3)
    assert summary["rates"]["collision"]["k"] == 0  # the lead car drives at the same speed
    assert summary["timing"]["windows_per_s"] > 0
    for name in ("report.html", "report.json", "config.yaml", "manifest.json"):
        assert (out / name).is_file()
    report = json.loads((out / "report.json").read_text())
    worst = report["worst_windows"][0]
    assert worst["ade_6.4s"] == pytest.approx(max(hand_ade.values()), abs=1e-2)  # on the arc
    assert len(worst["plot"]["plans"]) == 1 and len(worst["plot"]["history"]) == 16
    assert (out / worst["camera_strip"]).is_file()
    assert "ST-P3" in (out / "report.html").read_text()
    # rerunning resumes (nothing new); another planner into the same folder is refused
    again = run_open_loop(load_open_loop_config(overrides=[f"data={nuscenes_root}"]), out)
    assert again.summary["timing"]["windows_new"] == 0 and len(again.records) == 25
    with pytest.raises(UserError, match="planner"):
        run_open_loop(
            load_open_loop_config(overrides=[f"data={nuscenes_root}", "planner=ctra"]), out
        )


class ReasoningPlanner(Planner):
    """Constant speed straight ahead with k = 3 samples; states 'keep the set speed' (true of
    its plan) at odd half-seconds and 'come to a stop' (false) at even ones."""

    name = "fake-reasoner"
    uses_cameras = False

    def plan(self, inp: PlannerInput) -> PlannerOutput:
        v0 = inp.ego_speed
        plan = Trajectory.from_controls(np.zeros(PLAN_STEPS), np.zeros(PLAN_STEPS), v0)
        self.last_trajectories = [plan] + [
            Trajectory.from_controls(np.zeros(PLAN_STEPS), np.full(PLAN_STEPS, c), v0)
            for c in (0.005, 0.01)
        ]
        odd = int(round(inp.timestamp * 2)) % 2 == 1
        text = (
            "Keep the set speed on the clear road."
            if odd
            else "Come to a stop: the road ahead is clear."
        )
        return PlannerOutput(plan, reasoning=Reasoning(text))


def test_reasoning_consistency_rate_and_k_samples_of_a_reasoning_planner(
    nuscenes_root, tmp_path, monkeypatch
):
    from planner import planners

    monkeypatch.setitem(planners.BUILTIN_PLANNERS, "fake-reasoner", f"{__name__}:ReasoningPlanner")
    cfg = load_open_loop_config(overrides=[f"data={nuscenes_root}", "planner=fake-reasoner"])
    result = run_open_loop(cfg, tmp_path / "fake", report=False)
    rows = result.records
    odd = [int(round(r["t0"] * 2)) % 2 == 1 for r in rows]
    assert all(r["consistent_joint"] == o for r, o in zip(rows, odd))
    assert all(r["reasoning_parsed"] and r["truthful"] for r in rows)
    rate = result.summary["rates"]["consistent_joint"]
    assert rate["k"] == sum(odd) and rate["n"] == len(rows) == 25
    assert rate["ci_low"] < rate["rate"] < rate["ci_high"]
    assert result.summary["rates"]["consistent_longitudinal"]["k"] == sum(odd)
    for r in rows:  # the samples bend left, the way the arc goes
        assert r["k"] == 3 and r["min_ade_k"] <= r["ade_6.4s"] + 1e-9
    assert any(r["min_ade_k"] < r["ade_6.4s"] - 0.1 for r in rows)


def _shard_sample(step: int, valid_steps: int = PLAN_STEPS) -> tuple[Sample, shards.SampleFeatures]:
    """The ego at 10 m/s along +x with a YIELD label; the future straight on at 10 m/s."""
    scene = helpers.make_scene(ego_xy=(5.0 + step, 0.0), ego_speed_mps=10.0, agents=[])
    future = np.zeros((PLAN_STEPS, 7))
    future[:, 0] = scene.timestamp + K * PLAN_DT_S
    future[:, 1] = scene.ego.x + 10.0 * K * PLAN_DT_S
    future[:, 4] = 10.0
    hist = np.zeros((16, 7))
    hist[:, 0] = -PLAN_DT_S * np.arange(15, -1, -1)
    hist[:, 1] = 10.0 * hist[:, 0]
    hist[:, 4] = 10.0
    decision = Decision(LongitudinalDecision.YIELD)
    sample = Sample(
        scene=scene,
        future_ego=future,
        future_valid=np.arange(PLAN_STEPS) < valid_steps,
        label={"text": "Yield.", "decision": decision.to_dict(), "valid": True},
        meta={"family": "toy", "seed": 0, "step": step, "split": "test"},
    )
    feats = shards.SampleFeatures(
        cameras=np.zeros((1, 1, 8, 8, 3), np.uint8),
        camera_names=("front",),
        camera_source="rendered",
        ego_history=hist,
        route_xy=np.stack([4.0 * np.arange(1, 21), np.zeros(20)], axis=1),
        command="lane_follow",
        speed_limit_mps=13.9,
    )
    return sample, feats


def test_dataset_folder_of_simulator_shards(tmp_path):
    root = tmp_path / "ds"
    made = [_shard_sample(0), _shard_sample(1), _shard_sample(2, valid_steps=30)]
    members = [shards.encode_sample(f"toy-0-{k:04d}", s, f) for k, (s, f) in enumerate(made)]
    scene = made[0][0].scene
    path = root / "shards" / "toy" / "toy-0.tar"
    info = shards.write_shard(
        path,
        shards.encode_episode(scene.map, scene.route),
        members,
        {"episode": "toy:0", "family": "toy", "seed": 0, "split": "test"},
    )
    row = {"path": "shards/toy/toy-0.tar", "split": "test", "n_samples": 3, **info}
    shards.write_index(root, [row], {})
    cfg = load_open_loop_config(overrides=[f"data={root}", "stride_s=0.1"])
    result = run_open_loop(cfg, tmp_path / "out")
    s = result.summary
    assert s["windows_evaluated"] == 2
    assert s["skipped"]["by_reason"] == {"invalid_ego_future": 1}
    assert s["means"]["ade_6.4s"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert list(s["by_decision"]) == ["yield"] and list(s["by_family"]) == ["toy"]
    assert s["camera_source"] == {"none": 2}  # const-vel uses no cameras


@pytest.fixture
def bad_logs(tmp_path):
    from tests.planner.data.scenarionet_fixture import make_scenario, write_scenario

    ts = np.concatenate([np.arange(0, 4.0, 0.1), 4.0 + np.arange(0, 5.0, 0.2)])
    return {
        "no_ego": write_scenario(tmp_path / "no_ego.pkl", make_scenario(sdc_id="")),
        "mixed": write_scenario(tmp_path / "mixed.pkl", make_scenario(ts=ts)),
        "missing": tmp_path / "does-not-exist",
    }


@pytest.mark.parametrize(
    ("case", "planner", "message"),
    [
        ("missing", "const-vel", "does not exist"),
        ("no_ego", "const-vel", "sdc_id"),
        ("mixed", "const-vel", "allow_irregular_rate"),
        ("no_ego", "const-vell", "unknown planner 'const-vell'; did you mean 'const-vel'"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_status_2(
    bad_logs, tmp_path, monkeypatch, capsys, case, planner, message
):
    code, _, err = run_cli(
        monkeypatch, capsys, "eval", "open-loop", "--data", str(bad_logs[case]),
        "--planner", planner, "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in err
    assert "Traceback" not in err


def test_mixed_rate_log_evaluates_when_allowed_and_is_flagged(bad_logs, tmp_path):
    cfg = load_open_loop_config(
        overrides=[f"data={bad_logs['mixed']}", "allow_irregular_rate=true", "stride_s=0.1"]
    )
    result = run_open_loop(cfg, tmp_path / "m", report=False)
    assert result.records and all(r["ego_rate_irregular"] for r in result.records)


def test_nuscenes_windows_sit_on_its_keyframes_whatever_the_stride(nuscenes_root):
    from sim_eval.open_loop import enumerate_windows

    at_keyframes = load_open_loop_config(overrides=[f"data={nuscenes_root}", "stride_s=0.1"])
    refs, _, _ = enumerate_windows(at_keyframes)
    assert [r.index for r in refs] == list(range(15, 136, 5))
    grid = load_open_loop_config(
        overrides=[f"data={nuscenes_root}", "stride_s=0.1", "nuscenes_keyframes=false"]
    )
    refs, skipped, _ = enumerate_windows(grid)
    assert [r.index for r in refs] == list(range(15, 136)) and len(skipped) == 200 - 121


class FailingPlanner(Planner):
    """Raises on every other window (a planner bug): recorded, counted, retried on resume."""

    name = "fake-failing"
    uses_cameras = False

    def plan(self, inp: PlannerInput) -> PlannerOutput:
        if int(round(inp.timestamp * 10)) % 2:
            raise RuntimeError("planner bug")
        v0 = inp.ego_speed
        return PlannerOutput(
            Trajectory.from_controls(np.zeros(PLAN_STEPS), np.zeros(PLAN_STEPS), v0)
        )


def test_failing_windows_are_recorded_counted_and_retried(tmp_path, monkeypatch):
    from planner import planners
    from tests.planner.data.scenarionet_fixture import make_scenario, write_scenario

    monkeypatch.setitem(planners.BUILTIN_PLANNERS, "fake-failing", f"{__name__}:FailingPlanner")
    log = write_scenario(tmp_path / "log.pkl", make_scenario())
    cfg = load_open_loop_config(overrides=[f"data={log}", "planner=fake-failing", "stride_s=0.1"])
    first = run_open_loop(cfg, tmp_path / "f", report=False)
    failed = [r for r in first.records if r["status"] == "error"]
    assert failed and "planner bug" in failed[0]["error"]
    assert first.summary["n_error"] == len(failed)
    assert first.summary["windows_evaluated"] == len(first.records) - len(failed)
    again = run_open_loop(cfg, tmp_path / "f", report=False)
    assert again.summary["timing"]["windows_new"] == len(failed)


def test_checkpoint_planner_gets_its_options_and_k():
    # `planner_options` reaches a checkpoint planner (e.g. fast mode for the 1,000-window
    # benchmark); k sets its sample count
    from pathlib import Path

    from sim_eval.open_loop import OpenLoopConfig, build_planner

    ckpt = Path(__file__).resolve().parents[2] / "planner" / "assets" / "checkpoints" / "tiny"
    planner = build_planner(
        OpenLoopConfig(planner=str(ckpt), planner_options={"mode": "fast"}, k=2)
    )
    assert planner.options.mode == "fast" and planner.options.samples == 2
