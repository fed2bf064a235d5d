"""Runtime reasoning guard: flags a plan that contradicts its reasoning, re-samples when
switched on, and is wired into the VLA planner by its `guard` option."""

from __future__ import annotations

import numpy as np
import pytest

from planner.config import ConfigError
from planner.guard import (
    FLAG_EXHAUSTED,
    FLAG_INCONSISTENT,
    FLAG_RESAMPLED,
    FLAG_UNPARSED,
    GuardConfig,
    as_guard_config,
    guard_plan,
    load_guard_config,
)
from planner.taxonomy import LongitudinalDecision
from planner.types import Decision, PlannerOutput, Reasoning
from tests.planner.test_faithfulness import drive

LON = LongitudinalDecision
STOP_TEXT = "Come to a stop for the red light 30 m ahead."
V0 = 10.0


def output(text: str, stops: bool) -> PlannerOutput:
    lon = LON.STOP_FOR_STATIC_CONSTRAINTS if stops else LON.SET_SPEED_TRACKING
    return PlannerOutput(trajectory=drive(Decision(lon), V0), reasoning=Reasoning(text, None))


class Sampler:
    """resample() stand-in: returns the queued outputs in order, counting calls."""

    def __init__(self, *outs: PlannerOutput):
        self.outs, self.calls = list(outs), 0

    def __call__(self) -> PlannerOutput:
        self.calls += 1
        return self.outs.pop(0)


def test_consistent_plan_passes_untouched():
    first = output(STOP_TEXT, stops=True)
    sampler = Sampler()
    v = guard_plan(first, V0, GuardConfig(enabled=True, resample=True), sampler)
    assert v.output is first and v.consistent is True and sampler.calls == 0
    assert v.output.flags == ()


def test_contradicting_plan_is_flagged_without_resampling():
    first = output(STOP_TEXT, stops=False)  # says stop, keeps speed
    sampler = Sampler(output(STOP_TEXT, stops=True))
    v = guard_plan(first, V0, GuardConfig(enabled=True, resample=False), sampler)
    assert sampler.calls == 0 and v.resamples == 0
    assert v.consistent is False
    assert FLAG_INCONSISTENT in v.output.flags
    assert v.checks[0].longitudinal is False


def test_contradicting_plan_is_resampled_when_switched_on():
    first = output(STOP_TEXT, stops=False)
    good = output(STOP_TEXT, stops=True)
    sampler = Sampler(output(STOP_TEXT, stops=False), good)
    v = guard_plan(first, V0, GuardConfig(enabled=True, resample=True, resample_max=3), sampler)
    assert sampler.calls == 2 and v.resamples == 2
    assert v.consistent is True
    assert v.output.trajectory is good.trajectory
    assert set(v.output.flags) == {FLAG_INCONSISTENT, FLAG_RESAMPLED}


def test_resampling_stops_at_the_limit_and_keeps_the_first_plan():
    first = output(STOP_TEXT, stops=False)
    sampler = Sampler(*[output(STOP_TEXT, stops=False) for _ in range(5)])
    v = guard_plan(first, V0, GuardConfig(enabled=True, resample=True, resample_max=2), sampler)
    assert sampler.calls == 2
    assert v.output.trajectory is first.trajectory and v.consistent is False
    assert {FLAG_INCONSISTENT, FLAG_EXHAUSTED} <= set(v.output.flags)


def test_disabled_guard_and_unparsable_text():
    first = output(STOP_TEXT, stops=False)
    assert guard_plan(first, V0, GuardConfig(enabled=False), Sampler()).output is first
    mute = output("zzz qqq", stops=False)
    sampler = Sampler(output(STOP_TEXT, stops=True))
    cfg = GuardConfig(enabled=True, resample=True)
    v = guard_plan(mute, V0, cfg, sampler, text_varies=False)
    assert sampler.calls == 0 and FLAG_UNPARSED in v.output.flags and v.consistent is None
    v = guard_plan(mute, V0, cfg, sampler, text_varies=True)  # top-p: new text may parse
    assert sampler.calls == 1 and v.consistent is True


def test_guard_config_values():
    assert load_guard_config().enabled is False  # shipped default: off
    assert as_guard_config(True).enabled is True
    cfg = as_guard_config({"enabled": True, "resample_max": 5})
    assert cfg.enabled and cfg.resample_max == 5
    with pytest.raises(ConfigError, match="resample_max"):
        as_guard_config({"resample_max": -1})
    with pytest.raises(ConfigError):
        as_guard_config({"resampel": True})
    with pytest.raises(ConfigError, match="require"):
        GuardConfig(require="both")


def test_vla_planner_resamples_through_its_runner():
    """The VLA planner's guard option: the runner is replaced by a scripted one whose first
    sample contradicts its reasoning and whose second agrees."""
    import torch

    from planner.planners.vla import VLAPlanner
    from planner.runner import RunResult, TorchBackend
    from tests.planner.model.tiny import planner_input, tiny_config, tiny_model, tiny_tokenizer

    torch.set_num_threads(1)
    cfg = tiny_config()
    tok = tiny_tokenizer(cfg)
    model = tiny_model(cfg, tok)
    inp = planner_input(cfg, speed_mps=V0)

    def controls(stops: bool) -> np.ndarray:
        traj = output(STOP_TEXT, stops).trajectory
        return np.stack([traj.accel, traj.curvature], axis=1)[None]

    class ScriptedRunner:
        def __init__(self, *stops: bool):
            self.stops, self.forced = list(stops), []

        def run(self, prompt, options, rng, forced_reasoning=None):
            self.forced.append(forced_reasoning)
            return RunResult(controls(self.stops.pop(0)), [STOP_TEXT], [[]], {"total": 1.0})

    guard = {"enabled": True, "resample": True, "resample_max": 2}
    planner = VLAPlanner(TorchBackend(model), cfg, tok, mode="full", guard=guard)
    planner.runner = ScriptedRunner(False, True)
    out = planner.plan(inp)
    assert set(out.flags) >= {FLAG_INCONSISTENT, FLAG_RESAMPLED}
    assert planner.last_guard.resamples == 1
    assert out.trajectory.speed[-1] < 0.5  # the agreeing (stopping) sample was kept

    flag_only = VLAPlanner(TorchBackend(model), cfg, tok, mode="full", guard=True)
    flag_only.runner = ScriptedRunner(False, True)
    out = flag_only.plan(inp)
    assert FLAG_INCONSISTENT in out.flags and FLAG_RESAMPLED not in out.flags
    assert len(flag_only.runner.forced) == 1

    off = VLAPlanner(TorchBackend(model), cfg, tok, mode="full")
    off.runner = ScriptedRunner(False)
    assert FLAG_INCONSISTENT not in off.plan(inp).flags
    # a forced reasoning (faithfulness probe) is never re-sampled by the guard
    planner.runner = ScriptedRunner(False, True)
    out = planner.plan(inp, forced_reasoning=STOP_TEXT)
    assert planner.runner.forced == [STOP_TEXT] and FLAG_RESAMPLED not in out.flags
