"""Runtime reasoning guard: does the plan do what the planner's own reasoning says?

After a planning call that produced reasoning, the guard parses the text into the taxonomy and
checks it against the meta-actions of the plan with the same code the evaluation uses
(`planner.metrics.check_reasoning` -> `planner.meta_actions.is_consistent`). A contradicting
plan is flagged (`reasoning_inconsistent` in `PlannerOutput.flags`); with `resample: true` the
planner draws up to `resample_max` further samples (new flow noise, and new text under top-p
decoding) and keeps the first one that agrees with its reasoning (`guard_resampled`). When
none does, the first plan is kept and flagged (`guard_exhausted`): the guard never invents a
plan, it only chooses among the model's own.

Unparsable reasoning is flagged `reasoning_unparsed` and not re-sampled under greedy decoding
(the text would come out the same).

Defaults: configs/planners/guard.yaml; a VLA planner takes `guard=` as a GuardConfig or a dict
(`cocdrive sim run --planner CKPT planner_options.guard.enabled=true`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planner.config import ConfigError, from_dict, load_config
from planner.metrics import ReasoningCheck, check_reasoning
from planner.paths import config_path
from planner.types import PlannerOutput

log = logging.getLogger(__name__)

DEFAULT_GUARD_CONFIG = "guard.yaml"  # under configs/planners/
FLAG_INCONSISTENT = "reasoning_inconsistent"
FLAG_UNPARSED = "reasoning_unparsed"
FLAG_RESAMPLED = "guard_resampled"
FLAG_EXHAUSTED = "guard_exhausted"


@dataclass
class GuardConfig:
    """Runtime guard of a reasoning planner (configs/planners/guard.yaml)."""

    enabled: bool = False  # check every plan against its reasoning and flag contradictions
    resample: bool = False  # ... and re-sample a contradicting plan
    resample_max: int = 3  # at most this many extra samples per planning call
    # which consistency must hold: "joint" (both axes), "longitudinal" or "lateral"
    require: str = "joint"

    def __post_init__(self) -> None:
        if self.resample_max < 0:
            raise ConfigError(f"guard.resample_max={self.resample_max}: must be >= 0")
        if self.require not in ("joint", "longitudinal", "lateral"):
            raise ConfigError(f"guard.require={self.require!r}: use joint, longitudinal or lateral")


def load_guard_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> GuardConfig:
    """GuardConfig from configs/planners/guard.yaml (or `path`), then `key=value` overrides."""
    if path is None:
        default = config_path("planners", DEFAULT_GUARD_CONFIG)
        path = default if default.is_file() else None
    return load_config(GuardConfig, path, overrides)


def as_guard_config(value: GuardConfig | dict[str, Any] | bool | None) -> GuardConfig:
    """Planner option -> GuardConfig: None = shipped defaults, a dict updates them, True / False
    switches the flagging guard on / off."""
    if isinstance(value, GuardConfig):
        return value
    base = load_guard_config()
    if value is None:
        return base
    if isinstance(value, bool):
        base.enabled = value
        return base
    if isinstance(value, dict):
        from planner.config import to_dict

        merged = {**to_dict(base), **value}
        return from_dict(GuardConfig, merged, prefix="guard")
    raise ConfigError(
        f"guard option {value!r}: pass a mapping such as {{'enabled': true, 'resample': true}}"
    )


@dataclass
class GuardVerdict:
    """What the guard decided for one planning call."""

    output: PlannerOutput  # the output to use (flags added)
    checks: list[ReasoningCheck] = field(default_factory=list)  # one per sample tried
    resamples: int = 0  # extra samples drawn
    consistent: bool | None = None  # the chosen output agrees with its reasoning (None: unchecked)


def _passes(check: ReasoningCheck, require: str) -> bool:
    value = {"joint": check.joint, "longitudinal": check.longitudinal, "lateral": check.lateral}
    return bool(value[require])


def check_output(out: PlannerOutput, v0: float) -> ReasoningCheck | None:
    """Consistency of one output with its own reasoning; None when it has no reasoning."""
    if out.reasoning is None:
        return None
    return check_reasoning(out.reasoning.text, out.trajectory, v0=v0)


def _with_flags(out: PlannerOutput, *flags: str) -> PlannerOutput:
    from dataclasses import replace

    new = tuple(f for f in flags if f not in out.flags)
    return replace(out, flags=tuple(out.flags) + new) if new else out


def guard_plan(
    first: PlannerOutput,
    v0: float,
    cfg: GuardConfig,
    resample: Callable[[], PlannerOutput],
    *,
    text_varies: bool = True,
) -> GuardVerdict:
    """Check `first` against its reasoning; flag it, and (cfg.resample) call `resample()` up to
    cfg.resample_max times for a plan that agrees. `text_varies`: whether a re-sample can
    change the reasoning (top-p decoding); an unparsable text is re-sampled only then."""
    if not cfg.enabled:
        return GuardVerdict(first)
    check = check_output(first, v0)
    if check is None:
        return GuardVerdict(first)
    checks = [check]
    if check.parsed and _passes(check, cfg.require):
        return GuardVerdict(first, checks, 0, True)
    flag = FLAG_INCONSISTENT if check.parsed else FLAG_UNPARSED
    retry = cfg.resample and (check.parsed or text_varies)
    n = 0
    while retry and n < cfg.resample_max:
        n += 1
        candidate = resample()
        c = check_output(candidate, v0)
        if c is None:
            break
        checks.append(c)
        if c.parsed and _passes(c, cfg.require):
            log.debug("guard: re-sample %d agrees with its reasoning", n)
            return GuardVerdict(_with_flags(candidate, flag, FLAG_RESAMPLED), checks, n, True)
    flags = (flag, FLAG_EXHAUSTED) if n else (flag,)
    return GuardVerdict(_with_flags(first, *flags), checks, n, False if check.parsed else None)


__all__ = [
    "FLAG_EXHAUSTED",
    "FLAG_INCONSISTENT",
    "FLAG_RESAMPLED",
    "FLAG_UNPARSED",
    "GuardConfig",
    "GuardVerdict",
    "as_guard_config",
    "check_output",
    "guard_plan",
    "load_guard_config",
]
