"""The learned planner: a VLA checkpoint behind the one `Planner` interface.

Non-privileged: it sees only the PlannerInput (cameras, ego history, route). Each `plan` call
runs the shared host loop (planner/runner.py), integrates the first sample's controls (or,
with `plan="mean"`, the mean of the k samples' controls) with `Trajectory.from_controls`,
parses the reasoning into a `Decision` and reports per-stage timings (ms): vision, prefill,
decode, denoise, total.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from planner.base import Planner
from planner.coc import parse_reasoning
from planner.errors import UserError
from planner.guard import GuardVerdict, as_guard_config, guard_plan
from planner.model import batch as B
from planner.model.config import ModelConfig
from planner.model.tokenizer import CocTokenizer
from planner.runner import Backend, Runner, RunOptions, RunResult, make_backend
from planner.types import (
    EGO_ACCEL,
    PLAN_DT_S,
    PlannerInput,
    PlannerOutput,
    Reasoning,
    Trajectory,
)

log = logging.getLogger(__name__)


def limit_rising_jerk(
    accel: np.ndarray, a0: float, max_jerk_mps3: float, dt: float = PLAN_DT_S
) -> np.ndarray:
    """accel (..., T) with every rise limited to max_jerk_mps3 * dt per step, starting from
    the current acceleration a0: a'[0] = min(a[0], a0 + j dt), a'[k] = min(a[k], a'[k-1] + j dt).

    Only rises are limited, so a' <= a everywhere: the plan's speed never exceeds the
    model's (it only speeds up, or releases a brake, more gently) and braking is never
    delayed. A one-line recursion; no library offers it on plan arrays."""
    a = np.array(accel, dtype=np.float64, copy=True)
    step = float(max_jerk_mps3) * dt
    prev = np.full(a.shape[:-1], float(a0))
    for k in range(a.shape[-1]):
        prev = np.minimum(a[..., k], prev + step)
        a[..., k] = prev
    return a


def jerk_limited_controls(controls: np.ndarray, inp: PlannerInput, max_jerk_mps3: float):
    """A copy of controls (..., T, 2) whose acceleration column went through
    `limit_rising_jerk` from the ego's current acceleration (the history's last row)."""
    out = np.array(controls, copy=True)
    a0 = float(inp.ego_history[-1, EGO_ACCEL])
    out[..., 0] = limit_rising_jerk(out[..., 0], a0, max_jerk_mps3)
    return out


class VLAPlanner(Planner):
    name: ClassVar[str] = "vla"
    privileged: ClassVar[bool] = False

    def __init__(
        self,
        backend: Backend,
        config: ModelConfig,
        tokenizer: CocTokenizer,
        *,
        mode: str | None = None,
        samples: int | None = None,
        plan: str | None = None,
        euler_steps: int | None = None,
        max_reasoning_tokens: int | None = None,
        decoding: str | None = None,
        top_p: float | None = None,
        noise_scale: float | None = None,
        max_jerk_up_mps3: float | None = None,
        seed: int | None = None,
        blind_cameras: bool = False,
        guard: Any = None,
    ):
        self.config = config
        self.options = RunOptions.from_config(
            config,
            mode=mode,
            samples=samples,
            euler_steps=euler_steps,
            max_reasoning_tokens=max_reasoning_tokens,
            decoding=decoding,
            top_p=top_p,
            noise_scale=noise_scale,
        )
        self.plan_from = config.inference.plan if plan is None else str(plan)
        self.max_jerk_up = float(
            config.inference.max_jerk_up_mps3 if max_jerk_up_mps3 is None else max_jerk_up_mps3
        )
        if not (np.isfinite(self.max_jerk_up) and self.max_jerk_up >= 0):
            raise UserError(
                f"max_jerk_up_mps3={max_jerk_up_mps3}: use a value >= 0 (m/s^3; 0 turns it off)"
            )
        if self.plan_from not in ("first", "mean"):
            raise UserError(f"plan={self.plan_from!r}: use first or mean")
        if self.options.mode == "explain":
            raise UserError(
                "mode 'explain' produces reasoning without a trajectory, so it cannot drive: use "
                "planner.runner.Runner directly for explanations, or mode 'full' / 'fast'"
            )
        self.runner = Runner(backend, config, tokenizer)
        # Ablation "camera-blind": the same model sees black frames of the same shape.
        self.blind_cameras = bool(blind_cameras)
        # Runtime reasoning guard (planner/guard.py): a GuardConfig, a dict or None (defaults).
        self.guard = as_guard_config(guard)
        self.last_guard: GuardVerdict | None = None
        self.seed = config.inference.seed if seed is None else int(seed)
        self.last_result: RunResult | None = None
        # All k sampled trajectories of the last call (minADE_k); the plan is the first, or
        # with plan="mean" the trajectory of the mean controls.
        self.last_trajectories: list[Trajectory] = []
        self.reset()

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        backend: str | None = None,
        num_threads: int | None = None,
        **options: Any,
    ) -> VLAPlanner:
        from planner.model.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path)
        threads = ckpt.config.inference.num_threads if num_threads is None else num_threads
        be = make_backend(backend or ckpt.config.inference.backend, ckpt, num_threads=threads)
        return cls(be, ckpt.config, ckpt.tokenizer, **options)

    def reset(self) -> None:
        """A new episode restarts the sampling stream (reproducible episodes)."""
        self.rng = np.random.default_rng(self.seed)

    def plan(self, inp: PlannerInput, forced_reasoning: str | None = None) -> PlannerOutput:
        """Plan; `forced_reasoning` teacher-forces that text as the reasoning (faithfulness
        probe, planner/faithfulness.py; mode 'full' only)."""
        if self.blind_cameras and inp.cameras is not None:
            inp = dataclasses.replace(inp, cameras=np.zeros_like(inp.cameras))
        prompt = B.prompt_arrays(inp, self.config)  # raises InvalidInputError on bad input
        out = self._plan_prompt(prompt, inp, forced_reasoning)
        self.last_guard = None
        if self.guard.enabled and forced_reasoning is None and self.options.mode == "full":
            verdict = guard_plan(
                out,
                max(0.0, inp.ego_speed),
                self.guard,
                lambda: self._plan_prompt(prompt, inp, None),
                text_varies=self.options.decoding != "greedy",
            )
            self.last_guard = verdict
            out = verdict.output
        return out

    def _plan_prompt(
        self, prompt: dict[str, np.ndarray], inp: PlannerInput, forced_reasoning: str | None
    ) -> PlannerOutput:
        result = self.runner.run(prompt, self.options, self.rng, forced_reasoning=forced_reasoning)
        self.last_result = result
        assert result.controls is not None  # explain mode is refused in __init__
        v0 = max(0.0, inp.ego_speed)
        controls = result.controls
        if self.max_jerk_up > 0:
            controls = jerk_limited_controls(controls, inp, self.max_jerk_up)
        self.last_trajectories = [Trajectory.from_controls(c[:, 0], c[:, 1], v0) for c in controls]
        trajectory = self.last_trajectories[0]
        if self.plan_from == "mean" and len(controls) > 1:
            c = controls.mean(axis=0)
            trajectory = Trajectory.from_controls(c[:, 0], c[:, 1], v0)
        reasoning = None
        if self.options.mode == "full":
            text = result.reasoning[0]
            reasoning = Reasoning(text=text, decision=parse_reasoning(text))
        flags = ()
        if reasoning is not None and reasoning.decision is None:
            flags = ("reasoning_unparsed",)
        return PlannerOutput(
            trajectory=trajectory,
            reasoning=reasoning,
            timings_ms=dict(result.timings_ms),
            flags=flags,
        )
