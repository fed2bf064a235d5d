"""Closed-loop reasoning figures: plan stability on constructed plan sequences, consistency and
truthfulness per frame, faithfulness probes inside the runner's worker."""

from __future__ import annotations

import numpy as np

from planner.base import Planner
from planner.types import PLAN_STEPS, PlannerInput, PlannerOutput, Reasoning, Trajectory
from sim_eval.reasoning_metrics import (
    ReasoningMetricsConfig,
    accepts_forced_reasoning,
    episode_reasoning_metrics,
    load_reasoning_config,
    plan_stability,
)
from sim_eval.runner import load_run_config, run_suite, simulate_episode
from tests.planner.test_faithfulness import make_following_planner, make_ignoring_planner
from tests.sim_eval import fake_sim

DT = 0.1


def _straight_plans(n: int, speed: float, yaw: float, lateral_jump_m: float = 0.0):
    """n plans 0.1 s apart of an ego driving at `speed` along heading `yaw`; every other plan
    is shifted sideways by lateral_jump_m in its ego frame."""
    t = np.arange(n) * DT
    poses = np.stack([t * speed * np.cos(yaw), t * speed * np.sin(yaw), np.full(n, yaw)], 1)
    ahead = (np.arange(PLAN_STEPS) + 1) * DT * speed
    plans = []
    for i in range(n):
        xy = np.stack([ahead, np.full(PLAN_STEPS, lateral_jump_m if i % 2 else 0.0)], 1)
        plans.append(xy)
    return poses, plans, t


def test_consistent_plan_sequence_is_stable_in_any_heading():
    for yaw in (0.0, 0.7, -2.5):
        poses, plans, t = _straight_plans(10, 12.0, yaw)
        res = plan_stability(poses, plans, t)
        assert res["plan_stability_pairs"] == 9
        assert res["plan_stability_mean_m"] < 1e-9 and res["plan_stability_max_m"] < 1e-9


def test_jumping_plan_sequence_gives_the_jump():
    poses, plans, t = _straight_plans(10, 12.0, 0.4, lateral_jump_m=1.5)
    res = plan_stability(poses, plans, t)
    assert abs(res["plan_stability_mean_m"] - 1.5) < 1e-9
    assert abs(res["plan_stability_p95_m"] - 1.5) < 1e-9


def test_plans_farther_apart_than_one_step_are_not_compared():
    poses, plans, t = _straight_plans(4, 10.0, 0.0, lateral_jump_m=2.0)
    res = plan_stability(poses, plans, t * 5)  # 0.5 s apart
    assert res["plan_stability_pairs"] == 0 and res["plan_stability_mean_m"] is None


class _Stating(Planner):
    """Keeps speed and lane while stating `text` (no forced_reasoning hook)."""

    uses_cameras = False
    text = "Keep the lane and hold the speed on the clear road."

    def plan(self, inp: PlannerInput) -> PlannerOutput:
        v = max(0.0, inp.ego_speed)
        traj = Trajectory.from_controls(np.zeros(PLAN_STEPS), np.zeros(PLAN_STEPS), v)
        return PlannerOutput(trajectory=traj, reasoning=Reasoning(self.text))


class _Lying(_Stating):
    text = "Come to a stop for the car 15 m ahead."  # no car, and it does not stop


def _episode(planner: Planner, family: str = "cruise"):
    spec = next(s for s in fake_sim.fake_suite((1,), duration_s=2.0) if s.family == family)
    record, _ = simulate_episode(fake_sim.make_fake_simulator(), planner, spec)
    return record


def test_consistency_and_truthfulness_per_frame():
    cfg = ReasoningMetricsConfig(faithfulness_every_s=0.0)
    good = episode_reasoning_metrics(_episode(_Stating()), cfg)
    assert good["reasoning_frames"] == good["reasoning_parsed"] > 10
    assert good["consistency_joint_rate"] == 1.0 and good["truthful_rate"] == 1.0
    assert good["plan_stability_mean_m"] < 1e-6  # the fake sim follows each plan exactly
    bad = episode_reasoning_metrics(_episode(_Lying()), cfg)
    assert bad["consistency_longitudinal_rate"] == 0.0
    assert bad["truthful_rate"] == 0.0 and bad["num_false_claims"] >= bad["reasoning_parsed"]
    assert "no vehicle ahead at 15.0 m" in bad["false_claim_examples"][0]
    every3 = episode_reasoning_metrics(
        _episode(_Stating()), ReasoningMetricsConfig(check_every_n_frames=3)
    )
    assert every3["reasoning_frames"] == -(-good["reasoning_frames"] // 3)


def test_planner_without_reasoning_gets_stability_only():
    row = episode_reasoning_metrics(_episode(fake_sim.make_const_planner()))
    assert "plan_stability_mean_m" in row and "consistency_joint_rate" not in row
    assert (
        episode_reasoning_metrics(
            _episode(_Stating()), load_reasoning_config(None, ["enabled=false"])
        )
        == {}
    )


def test_faithfulness_probes_in_closed_loop():
    assert accepts_forced_reasoning(make_following_planner())
    assert not accepts_forced_reasoning(_Stating())
    cfg = ReasoningMetricsConfig(faithfulness_every_s=1.0)
    following = make_following_planner()
    row = episode_reasoning_metrics(_episode(following), cfg, planner=following)
    assert row["faithfulness_probes"] == 2 * 2  # t = 0 and 1 s, two axes each
    assert row["faithfulness_rate"] == 1.0 and row["faithfulness_n"] == 4
    ignoring = make_ignoring_planner()
    row = episode_reasoning_metrics(_episode(ignoring), cfg, planner=ignoring)
    assert row["faithfulness_rate"] == 0.0 and row["faithfulness_lateral_rate"] == 0.0


def test_runner_records_carry_the_reasoning_figures(tmp_path):
    cfg = load_run_config(None, ["report.animations=0", "reasoning.faithfulness_every_s=1.5"])
    res = run_suite(
        fake_sim.fake_suite((1, 2), duration_s=2.0),
        cfg,
        tmp_path,
        suite_name="fake",
        planner_factory=make_following_planner,
        simulator_factory=fake_sim.make_fake_simulator,
        write_report=False,
    )
    for r in res.records:
        assert r["status"] == "ok"
        assert r["consistency_joint_rate"] is not None
        assert r["faithfulness_probes"] == 4 and r["faithfulness_rate"] == 1.0
        assert r["plan_stability_pairs"] > 0


def test_a_failing_probe_is_recorded_not_raised():
    class Broken(_Stating):
        def plan(self, inp, forced_reasoning=None):
            if forced_reasoning is not None:
                raise RuntimeError("probe exploded")
            return super().plan(inp)

    planner = Broken()
    row = episode_reasoning_metrics(_episode(planner), ReasoningMetricsConfig(), planner=planner)
    assert row["consistency_joint_rate"] == 1.0  # the other figures stand
    assert "faithfulness_rate" not in row
    assert "probe exploded" in row["reasoning_metrics_errors"][0]
