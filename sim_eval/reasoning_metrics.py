"""Closed-loop reasoning figures of one episode, computed in the runner's worker.

- **Consistency** (per frame with reasoning): the decision the text states against the
  meta-actions of that frame's plan (`planner.metrics.check_reasoning`, the code open-loop
  evaluation and the runtime guard use); longitudinal, lateral and joint.
- **Truthfulness**: the distances, speeds and objects the text states, checked against that
  frame's Scene (`planner.coc.verify_text` through `check_reasoning(scene=...)`).
- **Faithfulness** (planners that accept `forced_reasoning`): every `faithfulness_every_s` the
  frame's input is re-planned with a counterfactual reasoning teacher-forced
  (`planner.faithfulness`); after the episode, so the driving is not disturbed.
- **Plan stability** (every planner): consecutive plans 0.1 s apart compared at matched
  times in the world frame: row k + 1 of plan t against row k of plan t + 0.1 s.

Per-episode values are flat keys of the episode record: counts (`*_k`, `*_n`) so runs can be
pooled across episodes with exact intervals, and per-episode rates for paired tests.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from planner.coc import parse_reasoning
from planner.config import load_config
from planner.faithfulness import FaithfulnessConfig, probe_input, summarize_probes
from planner.metrics import check_reasoning
from planner.paths import config_path
from planner.types import PLAN_DT_S, PlannerOutput, Scene
from sim_eval.stats import MetricSpec

log = logging.getLogger(__name__)

DEFAULT_REASONING_CONFIG = config_path("eval", "reasoning.yaml")

# Per-episode metrics for paired tests (sim_eval.stats.paired_compare).
REASONING_METRIC_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec("consistency_joint_rate", "continuous", "lower"),
    MetricSpec("consistency_longitudinal_rate", "continuous", "lower"),
    MetricSpec("consistency_lateral_rate", "continuous", "lower"),
    MetricSpec("truthful_rate", "continuous", "lower"),
    MetricSpec("faithfulness_rate", "continuous", "lower"),
    MetricSpec("plan_stability_mean_m", "continuous", "higher"),
    MetricSpec("plan_stability_p95_m", "continuous", "higher"),
)


@dataclass
class ReasoningMetricsConfig:
    """configs/eval/reasoning.yaml"""

    enabled: bool = True
    check_every_n_frames: int = 1  # consistency / truthfulness on every n-th planned frame
    truthfulness: bool = True  # check stated facts against the Scene (verify_text)
    faithfulness_every_s: float = 2.0  # probe interval (s of simulated time); 0 = off
    faithfulness_max_probes: int = 10  # probed frames per episode at most
    faithfulness: FaithfulnessConfig = field(default_factory=FaithfulnessConfig)
    stability: bool = True
    stability_max_gap_s: float = 0.15  # consecutive frames farther apart are not compared

    def __post_init__(self) -> None:
        from planner.config import ConfigError

        if self.check_every_n_frames < 1:
            raise ConfigError("reasoning.check_every_n_frames must be >= 1")
        if self.faithfulness_every_s < 0 or self.faithfulness_max_probes < 0:
            raise ConfigError(
                "reasoning.faithfulness_every_s and faithfulness_max_probes must be >= 0"
            )


def load_reasoning_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> ReasoningMetricsConfig:
    if path is None and DEFAULT_REASONING_CONFIG.is_file():
        path = DEFAULT_REASONING_CONFIG
    return load_config(ReasoningMetricsConfig, path, overrides)


# ---- plan stability ---------------------------------------------------------------------------
def plan_stability(
    poses: np.ndarray,
    plans_xy: list[np.ndarray],
    timestamps: np.ndarray,
    dt: float = PLAN_DT_S,
    max_gap_s: float = 0.15,
) -> dict[str, Any]:
    """How far consecutive plans jump at matched times.

    poses (N, 3) world x, y, yaw of the ego at each plan's t0; plans_xy: N arrays (S, 2) in the
    ego frame at that t0, row k at t0 + (k + 1) dt; timestamps (N,) s. For each pair of plans
    one step apart, row k + 1 of the earlier plan and row k of the later one describe the same
    time: their world-frame distance is the jump. Returns mean / p95 / max over all matched
    points (m) and the number of compared pairs."""
    poses = np.asarray(poses, dtype=np.float64)
    ts = np.asarray(timestamps, dtype=np.float64)
    world = []
    for (x, y, yaw), xy in zip(poses, plans_xy):
        c, s = np.cos(yaw), np.sin(yaw)
        p = np.asarray(xy, dtype=np.float64)
        world.append(np.stack([x + c * p[:, 0] - s * p[:, 1], y + s * p[:, 0] + c * p[:, 1]], 1))
    jumps = []
    pairs = 0
    for i in range(len(world) - 1):
        gap = ts[i + 1] - ts[i]
        shift = int(round(gap / dt))
        if gap > max_gap_s or shift < 1:
            continue
        a, b = world[i][shift:], world[i + 1]
        n = min(len(a), len(b))
        if n == 0:
            continue
        jumps.append(np.hypot(*(a[:n] - b[:n]).T))
        pairs += 1
    if not jumps:
        return {
            "plan_stability_pairs": 0,
            "plan_stability_mean_m": None,
            "plan_stability_p95_m": None,
            "plan_stability_max_m": None,
        }
    d = np.concatenate(jumps)
    return {
        "plan_stability_pairs": pairs,
        "plan_stability_mean_m": float(d.mean()),
        "plan_stability_p95_m": float(np.percentile(d, 95)),
        "plan_stability_max_m": float(d.max()),
    }


def episode_plan_stability(
    frames: list[Scene], outputs: list[PlannerOutput | None], cfg: ReasoningMetricsConfig
) -> dict[str, Any]:
    """`plan_stability` over the planned frames of an episode."""
    idx = [i for i, o in enumerate(outputs) if o is not None and i < len(frames)]
    poses = np.array([[frames[i].ego.x, frames[i].ego.y, frames[i].ego.yaw] for i in idx])
    plans = [outputs[i].trajectory.xy for i in idx]  # type: ignore[union-attr]
    ts = np.array([frames[i].timestamp for i in idx])
    return plan_stability(poses.reshape(-1, 3), plans, ts, max_gap_s=cfg.stability_max_gap_s)


# ---- consistency and truthfulness -------------------------------------------------------------
def _ratio(k: int, n: int) -> float | None:
    return k / n if n else None


def episode_consistency(
    frames: list[Scene], outputs: list[PlannerOutput | None], cfg: ReasoningMetricsConfig
) -> dict[str, Any]:
    """Consistency and truthfulness counts and rates over the frames with reasoning."""
    checked = parsed = lon = lat = joint = truthful = false_claims = 0
    planned = [i for i, o in enumerate(outputs) if o is not None and o.reasoning is not None]
    examples: list[str] = []
    for n, i in enumerate(planned):
        if n % cfg.check_every_n_frames:
            continue
        out, scene = outputs[i], frames[i]
        assert out is not None and out.reasoning is not None
        checked += 1
        check = check_reasoning(
            out.reasoning.text,
            out.trajectory,
            scene=scene if cfg.truthfulness else None,
            v0=max(0.0, scene.ego.speed),
            meta_action_config=cfg.faithfulness.meta,
        )
        if not check.parsed:
            continue
        parsed += 1
        lon += bool(check.longitudinal)
        lat += bool(check.lateral)
        joint += bool(check.joint)
        if check.false_claims is not None:
            truthful += not check.false_claims
            false_claims += len(check.false_claims)
            if check.false_claims and len(examples) < 3:
                examples.append(f"t={scene.timestamp:.1f} s: {check.false_claims[0]}")
    return {
        "reasoning_frames": checked,
        "reasoning_parsed": parsed,
        "reasoning_parsed_rate": _ratio(parsed, checked),
        "consistent_longitudinal_k": lon,
        "consistent_lateral_k": lat,
        "consistent_joint_k": joint,
        "consistency_longitudinal_rate": _ratio(lon, parsed),
        "consistency_lateral_rate": _ratio(lat, parsed),
        "consistency_joint_rate": _ratio(joint, parsed),
        "truthful_k": truthful if cfg.truthfulness else None,
        "truthful_rate": _ratio(truthful, parsed) if cfg.truthfulness else None,
        "num_false_claims": false_claims if cfg.truthfulness else None,
        "false_claim_examples": examples,
    }


# ---- faithfulness -----------------------------------------------------------------------------
def accepts_forced_reasoning(planner: Any) -> bool:
    """Whether `planner.plan` takes `forced_reasoning` (the faithfulness probe's hook)."""
    try:
        return "forced_reasoning" in inspect.signature(planner.plan).parameters
    except (TypeError, ValueError):
        return False


def episode_faithfulness(
    frames: list[Scene],
    outputs: list[PlannerOutput | None],
    planner: Any,
    renderer: Any,
    cfg: ReasoningMetricsConfig,
) -> dict[str, Any]:
    """Counterfactual probes on frames every `faithfulness_every_s` (after the episode; the
    planner is reset afterwards, as before the next episode)."""
    from planner.features import build_planner_input

    chosen: list[int] = []
    next_t = -1.0
    for i, out in enumerate(outputs):
        if out is None or out.reasoning is None or parse_reasoning(out.reasoning.text) is None:
            continue  # nothing stated, nothing to contradict
        if frames[i].timestamp + 1e-9 >= next_t:
            chosen.append(i)
            next_t = frames[i].timestamp + cfg.faithfulness_every_s
        if len(chosen) >= cfg.faithfulness_max_probes:
            break
    probes = []
    for n, i in enumerate(chosen):
        history = frames[:i] if renderer is not None else None
        inp = build_planner_input(frames[i], renderer, scene_history=history)
        probes.extend(probe_input(planner, inp, cfg.faithfulness, index=n))
    planner.reset()
    summary = summarize_probes(probes)
    row: dict[str, Any] = {"faithfulness_probes": len(probes), "faithfulness_invalid": 0}
    row["faithfulness_invalid"] = summary["invalid"]
    for axis in ("all", "longitudinal", "lateral"):
        block = summary[axis]
        suffix = "" if axis == "all" else f"_{axis}"
        row[f"faithfulness{suffix}_k"] = block["faithfulness"]["k"]
        row[f"faithfulness{suffix}_n"] = block["faithfulness"]["n"]
        row[f"faithfulness{suffix}_rate"] = block["faithfulness"]["rate"]
    row["faithfulness_change_rate"] = summary["all"]["change_rate"]["rate"]
    row["faithfulness_examples"] = [p.to_dict() for p in probes[:2]]
    return row


def episode_reasoning_metrics(
    record: Any,
    cfg: ReasoningMetricsConfig | None = None,
    planner: Any = None,
    renderer: Any = None,
) -> dict[str, Any]:
    """Every figure of this module for one EpisodeRecord (frames + outputs): plan stability
    always, consistency / truthfulness when the planner gave reasoning, faithfulness when it
    also accepts forced reasoning."""
    cfg = cfg or load_reasoning_config()
    if not cfg.enabled:
        return {}
    frames, outputs = record.frames, record.outputs
    row: dict[str, Any] = {}
    errors: list[str] = []

    def add(name: str, fn: Any, *args: Any) -> None:
        # A failing figure is recorded, not raised: the episode's driving metrics stand.
        try:
            row.update(fn(*args))
        except Exception as exc:  # noqa: BLE001 - named in the record and logged
            log.warning(
                "%s of episode %s failed: %s: %s", name, record.scenario, type(exc).__name__, exc
            )
            errors.append(f"{name}: {type(exc).__name__}: {exc}")

    if cfg.stability:
        add("plan stability", episode_plan_stability, frames, outputs, cfg)
    if any(o is not None and o.reasoning is not None for o in outputs):
        add("consistency", episode_consistency, frames, outputs, cfg)
        if (
            cfg.faithfulness_every_s > 0
            and cfg.faithfulness_max_probes > 0
            and planner is not None
            and accepts_forced_reasoning(planner)
        ):
            add("faithfulness", episode_faithfulness, frames, outputs, planner, renderer, cfg)
    if errors:
        row["reasoning_metrics_errors"] = errors
    return row


__all__ = [
    "REASONING_METRIC_SPECS",
    "ReasoningMetricsConfig",
    "accepts_forced_reasoning",
    "episode_consistency",
    "episode_faithfulness",
    "episode_plan_stability",
    "episode_reasoning_metrics",
    "load_reasoning_config",
    "plan_stability",
]
