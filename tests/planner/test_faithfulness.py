"""Faithfulness probe: counterfactual decisions and texts, scores of a planner that follows its
(forced) reasoning and of one that ignores it, and teacher forcing through the real runner."""

from __future__ import annotations

import numpy as np
import pytest

from planner.base import Planner
from planner.coc import parse_reasoning
from planner.errors import UserError
from planner.faithfulness import (
    AXES,
    FaithfulnessConfig,
    counterfactual_decision,
    counterfactual_text,
    probe_input,
    probe_inputs,
)
from planner.taxonomy import LateralDecision, LongitudinalDecision, Side
from planner.types import PLAN_STEPS, Decision, PlannerInput, PlannerOutput, Reasoning, Trajectory

LON, LAT = LongitudinalDecision, LateralDecision
FREE_TEXT = "Keep the lane and hold the speed on the clear road."


def drive(decision: Decision, v0: float) -> Trajectory:
    """A plan that does what `decision` says (stop: brake to standstill, passing: speed up,
    lane change: a 3.5 m sideways move in 4 s, anything else: keep speed and lane)."""
    t = np.arange(PLAN_STEPS) * 0.1
    accel = np.zeros(PLAN_STEPS)
    if decision.longitudinal in (LON.STOP_FOR_STATIC_CONSTRAINTS, LON.YIELD):
        accel[: int(np.ceil(v0 / 3.0 / 0.1))] = -3.0
    elif decision.longitudinal == LON.ACCELERATION_FOR_PASSING:
        accel[:] = 1.5
    curvature = np.zeros(PLAN_STEPS)
    if decision.lateral == LAT.LANE_CHANGE and v0 > 1.0:
        # heading A sin(pi t / T) moves A v 2T / pi sideways: A for 3.5 m in T = 4 s
        sign = 1.0 if decision.lateral_side == Side.LEFT else -1.0
        period = 4.0
        amp = 3.5 * np.pi / (2 * period * v0)
        inside = t < period
        curvature[inside] = sign * amp * np.pi / period * np.cos(np.pi * t[inside] / period) / v0
    return Trajectory.from_controls(accel, curvature, v0)  # speed clamps at 0


class FollowingPlanner(Planner):
    """States FREE_TEXT freely and drives whatever its (forced) reasoning says."""

    name = "fake-following"
    uses_cameras = False
    follows = True

    def __init__(self) -> None:
        self.calls = 0

    def plan(self, inp: PlannerInput, forced_reasoning: str | None = None) -> PlannerOutput:
        self.calls += 1
        text = forced_reasoning if forced_reasoning is not None else FREE_TEXT
        decision = parse_reasoning(text)
        acted = decision if self.follows else parse_reasoning(FREE_TEXT)
        assert acted is not None
        return PlannerOutput(
            trajectory=drive(acted, max(0.0, inp.ego_speed)), reasoning=Reasoning(text, decision)
        )


class IgnoringPlanner(FollowingPlanner):
    """Writes whatever reasoning it is given but always keeps speed and lane."""

    name = "fake-ignoring"
    follows = False


def make_following_planner() -> Planner:
    return FollowingPlanner()


def make_ignoring_planner() -> Planner:
    return IgnoringPlanner()


def straight_input(speed_mps: float = 10.0) -> PlannerInput:
    hist = np.zeros((16, 7))
    hist[:, 0] = np.arange(-15, 1) * 0.1
    hist[:, 1] = hist[:, 0] * speed_mps
    hist[:, 4] = speed_mps
    route = np.stack([np.arange(20) * 5.0, np.zeros(20)], axis=1)
    return PlannerInput(
        timestamp=0.0,
        ego_history=hist,
        command="lane_follow",
        route_xy=route,
        speed_limit_mps=15.0,
    )


@pytest.mark.parametrize(
    "text",
    [
        FREE_TEXT,
        "Slow down and yield for the pedestrian crossing from the right, 12 m ahead.",
        "Come to a stop for the red light 30 m ahead.",
        "Change lanes to the left and keep the set speed because of the car 20 m ahead.",
        "Follow at a safe gap to the car ahead at 25 m.",
        "Hold the speed: the road ahead is clear.",
    ],
)
@pytest.mark.parametrize("axis", AXES)
def test_counterfactual_text_states_the_forced_decision(text, axis):
    stated = parse_reasoning(text)
    assert stated is not None
    forced = counterfactual_decision(stated, axis, Side.RIGHT)
    if axis == "longitudinal":
        assert forced.longitudinal != stated.longitudinal
        assert forced.lateral == stated.lateral
    else:
        assert (forced.lateral, forced.lateral_side) != (stated.lateral, stated.lateral_side)
        assert forced.longitudinal == stated.longitudinal
    new = counterfactual_text(text, stated, forced)
    parsed = parse_reasoning(new)
    assert parsed is not None, new
    assert parsed.longitudinal == forced.longitudinal and parsed.lateral == forced.lateral, new


def test_counterfactual_keeps_the_cause():
    text = "Keep the set speed for the pedestrian crossing from the right, 12 m ahead."
    stated = parse_reasoning(text)
    new = counterfactual_text(text, stated, counterfactual_decision(stated, "longitudinal"))
    assert new == "Come to a stop for the pedestrian crossing from the right, 12 m ahead."
    yielding = "Due to the pedestrian crossing from the left, 3.5 m ahead, slow down and yield."
    stated = parse_reasoning(yielding)
    new = counterfactual_text(yielding, stated, counterfactual_decision(stated, "longitudinal"))
    assert new == "Due to the pedestrian crossing from the left, 3.5 m ahead, speed up to pass."
    forced = parse_reasoning(new)
    assert [f.to_dict() for f in forced.factors] == [f.to_dict() for f in stated.factors]


def test_contrasts_cover_both_directions():
    go = Decision(LON.SET_SPEED_TRACKING)
    stop = counterfactual_decision(go, "longitudinal")
    assert stop.longitudinal == LON.STOP_FOR_STATIC_CONSTRAINTS
    go_again = counterfactual_decision(stop, "longitudinal")
    assert go_again.longitudinal == LON.ACCELERATION_FOR_PASSING
    lc = counterfactual_decision(go, "lateral", Side.LEFT)
    assert (lc.lateral, lc.lateral_side) == (LAT.LANE_CHANGE, Side.LEFT)
    back = counterfactual_decision(lc, "lateral")
    assert (back.lateral, back.lateral_side) == (LAT.LANE_CHANGE, Side.RIGHT)
    nudge = Decision(LON.SPEED_ADAPTATION, LAT.IN_LANE_NUDGE, Side.LEFT)
    assert counterfactual_decision(nudge, "lateral").lateral == LAT.LANE_KEEPING


def test_following_planner_scores_high_and_ignoring_planner_low():
    inputs = [straight_input(10.0), straight_input(12.0), straight_input(8.0), straight_input(11)]
    cfg = FaithfulnessConfig()
    probes, summary = probe_inputs(FollowingPlanner(), inputs, cfg)
    assert len(probes) == 2 * len(inputs) and summary["invalid"] == 0
    assert all(p.discriminative for p in probes)
    assert summary["all"]["faithfulness"]["rate"] == 1.0
    assert summary["longitudinal"]["faithfulness"]["n"] == len(inputs)
    assert summary["lateral"]["faithfulness"]["rate"] == 1.0
    assert summary["all"]["change_rate"]["rate"] == 1.0

    probes, summary = probe_inputs(IgnoringPlanner(), inputs, cfg)
    assert summary["invalid"] == 0
    assert summary["all"]["faithfulness"]["rate"] == 0.0
    assert summary["all"]["change_rate"]["rate"] == 0.0
    # the forced texts alternate the lane-change side
    sides = {p.forced["lateral_side"] for p in probes if p.axis == "lateral"}
    assert sides == {"left", "right"}


def test_unparsable_free_reasoning_gives_invalid_probes():
    class Mute(FollowingPlanner):
        def plan(self, inp, forced_reasoning=None):
            out = super().plan(inp, forced_reasoning)
            if forced_reasoning is None:
                return PlannerOutput(out.trajectory, Reasoning("zzz", None))
            return out

    probes = probe_input(Mute(), straight_input())
    assert [p.valid for p in probes] == [False, False]
    assert "states no decision" in probes[0].reasons[0]


# ---- the real runner: teacher forcing changes what the expert attends to ----------------------
@pytest.fixture(scope="module")
def tiny_runner():
    import torch

    from planner.runner import Runner, TorchBackend
    from tests.planner.model.tiny import tiny_config, tiny_model, tiny_tokenizer

    torch.set_num_threads(1)
    cfg = tiny_config()
    tok = tiny_tokenizer(cfg)
    model = tiny_model(cfg, tok)
    return cfg, tok, model, Runner(TorchBackend(model), cfg, tok)


def test_runner_teacher_forces_the_reasoning(tiny_runner):
    from planner.model import batch as B
    from planner.runner import RunOptions
    from tests.planner.model.tiny import planner_input

    cfg, tok, _, runner = tiny_runner
    prompt = B.prompt_arrays(planner_input(cfg), cfg)
    opts = RunOptions.from_config(cfg, mode="full")
    stop_text = "Come to a stop for the red light 30 m ahead."
    go_text = "Keep the set speed for the red light 30 m ahead."
    free = runner.run(prompt, opts, np.random.default_rng(0))
    forced = runner.run(prompt, opts, np.random.default_rng(0), forced_reasoning=stop_text)
    other = runner.run(prompt, opts, np.random.default_rng(0), forced_reasoning=go_text)
    ids = tok.encode(stop_text)
    assert forced.reasoning_ids[0] == ids
    assert forced.reasoning[0].strip() == stop_text
    assert parse_reasoning(forced.reasoning[0]).longitudinal == LON.STOP_FOR_STATIC_CONSTRAINTS
    # the cache holds <cot> text </cot> <traj> after the prompt
    assert int(forced.context_mask[0].sum()) == cfg.prompt_tokens + len(ids) + 3
    assert free.reasoning_ids[0] != ids
    # same noise, different forced text -> the expert saw a different context
    assert not np.allclose(forced.controls, other.controls)
    again = runner.run(prompt, opts, np.random.default_rng(0), forced_reasoning=stop_text)
    np.testing.assert_array_equal(again.controls, forced.controls)


def test_forced_reasoning_is_cut_to_the_budget_and_refused_in_fast_mode(tiny_runner):
    from planner.model import batch as B
    from planner.runner import RunOptions
    from tests.planner.model.tiny import planner_input

    cfg, tok, _, runner = tiny_runner
    prompt = B.prompt_arrays(planner_input(cfg), cfg)
    long_text = " ".join(["Come to a stop for the red light 30 m ahead."] * 10)
    opts = RunOptions.from_config(cfg, mode="full", max_reasoning_tokens=12)
    res = runner.run(prompt, opts, np.random.default_rng(0), forced_reasoning=long_text)
    assert len(res.reasoning_ids[0]) == 12
    with pytest.raises(UserError, match="fast"):
        runner.run(
            prompt,
            RunOptions.from_config(cfg, mode="fast"),
            np.random.default_rng(0),
            forced_reasoning="Come to a stop.",
        )


def test_vla_planner_probe_runs_end_to_end(tiny_runner):
    from planner.planners.vla import VLAPlanner
    from planner.runner import TorchBackend
    from tests.planner.model.tiny import planner_input

    cfg, tok, model, _ = tiny_runner
    planner = VLAPlanner(TorchBackend(model), cfg, tok, mode="full", max_reasoning_tokens=20)
    inp = planner_input(cfg)
    out = planner.plan(inp, forced_reasoning="Come to a stop for the red light 30 m ahead.")
    assert out.reasoning.decision.longitudinal == LON.STOP_FOR_STATIC_CONSTRAINTS
    # an untrained model's own text rarely parses: hand the probe a parsable free output
    free = PlannerOutput(planner.plan(inp).trajectory, Reasoning(FREE_TEXT, None))
    probes = probe_input(planner, inp, free=free)
    assert len(probes) == 2
    assert all(p.forced_read_back for p in probes)
    assert all(p.follows is not None for p in probes)
    blind = VLAPlanner(TorchBackend(model), cfg, tok, mode="full", blind_cameras=True)
    dark = inp.__class__(**{**inp.__dict__, "cameras": np.zeros_like(inp.cameras)})
    blind.reset()
    a = blind.plan(inp)
    blind.reset()
    b = blind.plan(dark)
    np.testing.assert_array_equal(a.trajectory.data, b.trajectory.data)


def test_config_errors_name_the_fix():
    from planner.config import ConfigError

    with pytest.raises(ConfigError, match="axes"):
        FaithfulnessConfig(axes=("sideways",))
    with pytest.raises(ConfigError, match="lane_change_side"):
        FaithfulnessConfig(lane_change_side="up")
    probes = probe_input(
        FollowingPlanner(), straight_input(), FaithfulnessConfig(axes=("lateral",))
    )
    assert [p.axis for p in probes] == ["lateral"]
    assert probes[0].forced["lateral_side"] == "left"  # alternate starts on the left
