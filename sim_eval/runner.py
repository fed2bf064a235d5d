"""Closed-loop episode runner: one function evaluates one episode; `run_suite` maps it over a
suite through `planner.executor.run_resumable`, so an interrupted run resumes where it stopped.

Results folder layout (`--out DIR`):
    manifest.json     what this folder holds (suite, scenarios, planner, config digest); a run
                      with different ones is refused instead of silently mixed in
    config.yaml       the full RunConfig used (planner.config.save_config)
    episodes.jsonl    one JSON record per finished episode (key, family, seed, metrics, ...)
    logs/*.npz        compact per-episode logs for animations (sim_eval.report)
    summary.json      aggregate metrics with Wilson intervals, overall and per family
    report.html       the HTML report, GIF animations beside it

Episode logs versus re-simulation for animations: the worker writes a compact npz log of every
episode (poses, boxes, plans, lights, reasoning text; ~100 KB compressed for 20 s). Re-running
the selected seeds after the run would cost a full episode each, and bit-exact replay cannot be
promised for learned planners (GPU kernels, threads); the logs also let a report be rebuilt
without the simulator."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from planner.base import Planner, call_planner
from planner.config import load_config, save_config, to_dict
from planner.errors import UserError
from planner.executor import make_executor, run_resumable
from planner.features import build_planner_input
from planner.io import JsonlResults, atomic_write_json
from planner.paths import config_path
from planner.types import PLAN_DT_S, InvalidInputError, PlannerOutput
from sim_eval.episode import EpisodeRecord
from sim_eval.metrics import (
    MetricsConfig,
    evaluate_episode,
    failed_episode_record,
    load_metrics_config,
)
from sim_eval.reasoning_metrics import (
    ReasoningMetricsConfig,
    episode_reasoning_metrics,
    load_reasoning_config,
)
from sim_eval.scenarios import ScenarioSpec
from sim_eval.sim.base import Simulator
from sim_eval.sim.config import SimConfig, load_sim_config

log = logging.getLogger(__name__)

DEFAULT_RUN_CONFIG = config_path("run.yaml")
MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.yaml"
EPISODES_FILE = "episodes.jsonl"
SUMMARY_FILE = "summary.json"
LOG_DIR = "logs"
MANIFEST_VERSION = 1

# The simulator's step-termination reasons, renamed to EpisodeRecord's vocabulary.
_TERMINATION = {"ego_collision": "collision"}

SimulatorFactory = Callable[[SimConfig], Simulator]
PlannerFactory = Callable[[], Planner]


@dataclass
class ReportConfig:
    """What the HTML report shows; none of it changes results, so it is not in the manifest."""

    animations: int = 3  # GIFs of the worst episodes (0 = none)
    episode_logs: bool = True  # write logs/*.npz in the worker (needed for animations)
    animation_hz: float = 5.0  # frames per simulated second kept in a GIF (<= 10)
    animation_max_frames: int = 100  # a longer episode is sampled more sparsely
    view_width_m: float = 80.0  # top-down window centred on the ego
    view_height_m: float = 48.0
    pixels_per_m: float = 5.0
    ahead_fraction: float = 0.25  # ego sits this far behind the window centre (of the width)
    plot_dpi: int = 72
    max_plot_episodes: int = 2000  # strip plots sample at most this many points per family


@dataclass
class RunConfig:
    """Everything that decides a closed-loop result (configs/run.yaml)."""

    planner: str = "expert"  # built-in name (planner.planners) or checkpoint path
    # Camera frames in the PlannerInput, rendered by planner.sensors.SensorRig from the Scene:
    # "auto" renders for planners that are not privileged (a learned planner sees only
    # cameras, its history and the route), "render" always, "none" never.
    cameras: Literal["auto", "render", "none"] = "auto"
    sensors_config: str | None = None  # SensorRig YAML; None = configs/sensors/default.yaml
    planner_options: dict[str, Any] = field(default_factory=dict)  # keyword args of the factory
    suite: str = "smoke"
    seeds: list[int] | None = None  # re-run the suite on these seeds instead of its own
    # Defaults come from configs/sim.yaml and configs/metrics.yaml, as the simulator and the
    # metrics load them on their own.
    sim: SimConfig = field(default_factory=load_sim_config)
    metrics: MetricsConfig = field(default_factory=load_metrics_config)
    report: ReportConfig = field(default_factory=ReportConfig)
    # Closed-loop reasoning figures (sim_eval/reasoning_metrics.py; configs/eval/reasoning.yaml)
    reasoning: ReasoningMetricsConfig = field(default_factory=load_reasoning_config)


def load_run_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> RunConfig:
    """RunConfig defaults, updated by a YAML file (configs/run.yaml when it exists), then by
    `key.sub=value` overrides."""
    if path is None and DEFAULT_RUN_CONFIG.is_file():
        path = DEFAULT_RUN_CONFIG
    return load_config(RunConfig, path, overrides)


# ---- building the pieces inside a worker -------------------------------------------------
def default_simulator_factory(config: SimConfig) -> Simulator:
    """The embedded highway-env simulator (imported here: workers pay for it, not the CLI)."""
    from sim_eval.sim.highway import HighwayEnvSimulator

    return HighwayEnvSimulator(config)


@dataclass
class EpisodeTask:
    """One item of work for a worker (picklable: factories are top-level callables)."""

    scenario: ScenarioSpec
    config: RunConfig
    log_dir: str | None = None  # write logs/<key>.npz here when set
    planner_factory: PlannerFactory | None = None  # default: make_planner(config.planner, ...)
    simulator_factory: SimulatorFactory | None = None  # default: HighwayEnvSimulator


# Per-process cache of planners: a pool worker builds its planner once and reuses it for every
# episode it runs (loading a checkpoint costs more than a short episode); `Planner.reset()`
# clears its state between episodes. Simulators are built fresh for every episode instead:
# building one is cheap (the road is built in `reset`), and nothing an episode left behind
# can then make a result depend on which worker ran which episodes before it.
_PLANNER_CACHE: dict[str, Planner] = {}


def _factory_id(fn: Callable | None) -> str:
    return "default" if fn is None else f"{fn.__module__}.{getattr(fn, '__qualname__', fn)}"


_RENDERER_CACHE: dict[str, Any] = {}


def make_renderer(cfg: RunConfig, planner: Planner):
    """The SensorRig that renders this planner's cameras, or None when it gets none. A planner
    may carry its own rig (attribute `sensor_rig`, e.g. the one its checkpoint was trained
    with). Closed-loop evaluation renders the plain appearance (no randomisation)."""
    own = getattr(planner, "sensor_rig", None)
    if own is not None:
        return own
    # A history-only planner (const-vel, CTRA) may declare `uses_cameras = False` to skip the
    # rendering cost (~15 ms a step here) under "auto".
    needs = not planner.privileged and planner.uses_cameras
    if cfg.cameras == "none" or (cfg.cameras == "auto" and not needs):
        return None
    key = str(cfg.sensors_config)
    if key not in _RENDERER_CACHE:
        from planner.sensors import SensorRig, load_sensor_config

        rig_cfg = load_sensor_config(cfg.sensors_config, ["randomization.enabled=false"])
        _RENDERER_CACHE[key] = SensorRig(rig_cfg)
    return _RENDERER_CACHE[key]


def _build(task: EpisodeTask) -> tuple[Simulator, Planner, Any]:
    cfg = task.config
    sim_factory = task.simulator_factory or default_simulator_factory
    simulator = sim_factory(cfg.sim)
    planner_key = (
        _factory_id(task.planner_factory)
        + cfg.planner
        + json.dumps(to_dict(cfg.planner_options), sort_keys=True)
    )
    if planner_key not in _PLANNER_CACHE:
        if task.planner_factory is not None:
            _PLANNER_CACHE[planner_key] = task.planner_factory()
        else:
            from planner.planners import make_planner

            _PLANNER_CACHE[planner_key] = make_planner(cfg.planner, **cfg.planner_options)
    planner = _PLANNER_CACHE[planner_key]
    return simulator, planner, make_renderer(cfg, planner)


def _plan_once(planner: Planner, scene, renderer=None, history=None) -> PlannerOutput:
    """Feature building (cameras included), planning and output validation: anything raised
    here is the planner's failure (the episode is recorded as failed, the run goes on)."""
    inp = build_planner_input(scene, renderer, scene_history=history)
    out = call_planner(planner, inp, scene)
    if not isinstance(out, PlannerOutput):
        raise InvalidInputError(f"planner returned {type(out).__name__}, not a PlannerOutput")
    out.trajectory.validate()  # a planner may have built it with validate=False
    return out


def simulate_episode(
    simulator: Simulator,
    planner: Planner,
    scenario: ScenarioSpec,
    meta: dict | None = None,
    renderer=None,
) -> tuple[EpisodeRecord, dict[str, float]]:
    """Drive one episode in closed loop; returns the record and per-episode timings (ms).
    `renderer` (a SensorRig) gives the planner camera frames of the current and past Scenes."""
    planner.reset()
    scene = simulator.reset(scenario, scenario.seed)
    frames = [scene]
    outputs: list[PlannerOutput | None] = []
    termination, failure = "time_limit", None
    plan_ms: list[float] = []
    step_ms: list[float] = []
    # The simulator ends the episode itself; this bound only guards against one that never does.
    max_steps = int(math.ceil(scenario.duration_s / PLAN_DT_S)) + 1
    for _ in range(max_steps):
        t0 = time.perf_counter()
        try:
            history = frames[:-1] if renderer is not None else None
            out = _plan_once(planner, scene, renderer, history)
        except Exception as exc:  # noqa: BLE001 - any planner error fails this episode only
            termination = "planner_failed"
            failure = f"{type(exc).__name__} at t={scene.timestamp:.1f} s: {exc}"
            log.debug("planner failed in %s: %s", scenario.key, failure)
            outputs.append(None)
            break
        t1 = time.perf_counter()
        outputs.append(out)
        scene = simulator.step(out.trajectory)
        t2 = time.perf_counter()
        plan_ms.append(1e3 * (t1 - t0))
        step_ms.append(1e3 * (t2 - t1))
        frames.append(scene)
        info = simulator.info
        if info.done:
            termination = _TERMINATION.get(info.reason, info.reason or "time_limit")
            break
    if len(outputs) < len(frames):
        outputs.append(None)  # the final frame was never planned on
    record = EpisodeRecord(
        scenario=scenario.name,
        family=scenario.family,
        seed=scenario.seed,
        frames=frames,
        outputs=outputs,
        termination=termination,
        failure=failure,
        meta=dict(meta or {}),
    )
    timings = {
        "steps": float(len(step_ms)),
        "plan_ms_median": float(np.median(plan_ms)) if plan_ms else 0.0,
        "plan_ms_p99": float(np.percentile(plan_ms, 99)) if plan_ms else 0.0,
        "sim_step_ms_median": float(np.median(step_ms)) if step_ms else 0.0,
    }
    return record, timings


def log_name(key: str) -> str:
    """File name of an episode's log ('cut_in:1203' -> 'cut_in__1203.npz')."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key.replace(":", "__"))
    return f"{safe}.npz"


def run_episode_task(task: EpisodeTask) -> dict[str, Any]:
    """The executor's unit of work: simulate, evaluate the metrics here in the worker (the
    episode never leaves this process), write the episode log, and return one flat JSON-ready
    record: `evaluate_episode`'s dict plus timings and the log's path. A simulator or metrics
    crash becomes a record with status "error" (retried when the run is resumed)."""
    spec = task.scenario
    started = time.perf_counter()
    simulator, planner, renderer = _build(task)  # a wrong planner name raises UserError
    try:
        record, timings = simulate_episode(
            simulator, planner, spec, meta={"planner": task.config.planner}, renderer=renderer
        )
        row = evaluate_episode(record, task.config.metrics)
        row.update(episode_reasoning_metrics(record, task.config.reasoning, planner, renderer))
    except Exception as exc:  # noqa: BLE001 - recorded with its reason; the run goes on
        log.warning("episode %s errored: %s: %s", spec.key, type(exc).__name__, exc)
        return failed_episode_record(
            spec.name,
            spec.family,
            spec.seed,
            f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(limit=6),
        )
    finally:
        simulator.close()
    log_file = None
    if task.log_dir is not None:
        from sim_eval.report import save_episode_log

        log_file = log_name(spec.key)
        save_episode_log(record, Path(task.log_dir) / log_file)
    timings["wall_s"] = time.perf_counter() - started
    row["timings"] = timings
    row["log"] = f"{LOG_DIR}/{log_file}" if log_file else None
    return row


# ---- the results folder ---------------------------------------------------------------------
def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def build_manifest(
    cfg: RunConfig,
    suite: str,
    scenarios: list[ScenarioSpec],
    planner_id: str,
    simulator_id: str,
) -> dict[str, Any]:
    """What makes two runs' episodes comparable and mixable. The report section and the
    execution options (workers, executor) are left out: they do not change results."""
    return {
        "version": MANIFEST_VERSION,
        "suite": suite,
        "planner": planner_id,
        # a checkpoint path names a folder whose weights can change (a retrained checkpoint
        # exported to the same path): the weights digest keeps such runs apart
        "planner_weights": weights_digest(planner_id),
        "planner_options": to_dict(cfg.planner_options),
        "simulator": simulator_id,
        "scenarios": [s.key for s in scenarios],
        "seeds": sorted({s.seed for s in scenarios}),
        "sim_config_digest": _digest(to_dict(cfg.sim)),
        # stats settings (interval method, alpha) change no episode value: left out
        "metrics_config_digest": _digest(
            {k: v for k, v in to_dict(cfg.metrics).items() if k != "stats"}
        ),
        "scenario_params_digest": _digest([[s.key, to_dict(s.params)] for s in scenarios]),
    }


def weights_digest(checkpoint: str | None) -> str | None:
    """A checkpoint folder's weights_sha256 (its meta.json); None for built-in planners."""
    if checkpoint is None:
        return None
    meta = Path(checkpoint).expanduser() / "meta.json"
    try:
        return json.loads(meta.read_text()).get("weights_sha256")
    except (OSError, ValueError):
        return None


def check_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    """Refuse to mix episodes from another suite, planner or config into `out_dir`."""
    path = out_dir / MANIFEST_FILE
    if not path.exists():
        if (out_dir / EPISODES_FILE).exists():
            raise UserError(
                f"{out_dir} holds {EPISODES_FILE} but no {MANIFEST_FILE}, so cocdrive cannot "
                "tell what it is: choose a new --out folder"
            )
        return
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}): choose a new --out folder") from None
    labels = {
        "suite": "suite",
        "planner": "planner",
        "planner_weights": "planner checkpoint weights",
        "planner_options": "planner options",
        "simulator": "simulator",
        "scenarios": "scenarios/seeds",
        "sim_config_digest": "sim config",
        "metrics_config_digest": "metrics config",
        "scenario_params_digest": "scenario parameters",
        "version": "results format",
    }
    diffs = []
    for k, label in labels.items():
        if old.get(k) != manifest.get(k):
            if k in ("suite", "planner", "simulator"):
                diffs.append(f"{label} {old.get(k)!r} there vs {manifest.get(k)!r} now")
            elif k == "scenarios":
                a, b = old.get(k) or [], manifest.get(k) or []
                diffs.append(
                    f"{label} differ ({len(a)} there, {len(b)} now; e.g. "
                    f"{sorted(set(a) ^ set(b))[:3]})"
                )
            else:
                diffs.append(f"{label} differs")
    if diffs:
        raise UserError(
            f"results folder {out_dir} belongs to another run: {'; '.join(diffs)}. "
            "Use a new --out folder (rerunning the identical command into the same folder "
            "resumes it)"
        )


def _drop_errored(results: JsonlResults) -> None:
    """Records of episodes that crashed (not planner failures) are retried on resume."""
    records = results.records()
    keep = [r for r in records if r.get("status") != "error"]
    if len(keep) != len(records):
        from planner.io import atomic_write_text, dumps

        log.warning(
            "retrying %d episode(s) that errored in an earlier run", len(records) - len(keep)
        )
        atomic_write_text(results.path, "".join(dumps(r) + "\n" for r in keep))


# Headline rows of the report and the CLI, in this order (names from sim_eval.metrics).
HEADLINE_METRICS = (
    "collision_at_fault",
    "collision",
    "offroad",
    "close_encounter",
    "red_light_violation",
    "stop_sign_violation",
    "planner_failed",
    "episode_error",
    "comfortable",
    "route_completion",
    "driving_score",
)


def _stat_rows(block: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One `aggregate` block -> {metric: {kind, value, low, high, n}} for tables and plots:
    binary metrics as rates (Wilson), counts per km (exact Poisson), others as means (t)."""
    rows: dict[str, dict[str, Any]] = {}
    for name, r in block.get("rates", {}).items():
        rows[name] = {
            "kind": "rate",
            "value": r["rate"],
            "low": r["ci_low"],
            "high": r["ci_high"],
            "n": r["n"],
            "k": r["k"],
        }
    for name, r in block.get("means", {}).items():
        if name in block.get("per_km", {}):
            continue
        rows[name] = {
            "kind": "mean",
            "value": r["mean"],
            "low": r["ci_low"],
            "high": r["ci_high"],
            "n": r["n"],
        }
    for name, r in block.get("per_km", {}).items():
        rows[f"{name}_per_km"] = {
            "kind": "per_km",
            "value": r["rate_per_km"],
            "low": r["ci_low"],
            "high": r["ci_high"],
            "n": f"{r['count']} in {r['km']:.2f} km",
        }
    return rows


def summarize(
    records: list[dict[str, Any]], manifest: dict[str, Any], cfg: MetricsConfig
) -> dict[str, Any]:
    """summary.json: `sim_eval.stats.aggregate` (overall and per family) plus the flat
    headline / per-family rows the report and the CLI print."""
    from collections import Counter

    from sim_eval.metrics import METRIC_SPECS
    from sim_eval.stats import aggregate

    agg = aggregate(records, METRIC_SPECS, cfg.stats)
    overall = _stat_rows(agg)
    families = {fam: _stat_rows(block) for fam, block in agg["by_family"].items()}
    headline = {m: overall[m] for m in HEADLINE_METRICS if m in overall}
    status = Counter(
        "planner_failed" if r.get("planner_failed") else str(r.get("status", "ok")) for r in records
    )
    plan_ms = [
        r["timings"]["plan_ms_median"] for r in records if isinstance(r.get("timings"), dict)
    ]
    return {
        "suite": manifest.get("suite"),
        "planner": manifest.get("planner"),
        "episodes": len(records),
        "status_counts": dict(sorted(status.items())),
        "metric_names": [s.name for s in METRIC_SPECS],
        "headline": headline,
        "overall": overall,
        "families": families,
        "plan_ms_median": float(np.median(plan_ms)) if plan_ms else None,
        "aggregate": agg,
    }


@dataclass
class RunResult:
    out_dir: Path
    records: list[dict[str, Any]]
    summary: dict[str, Any]
    report_path: Path | None


def run_suite(
    scenarios: list[ScenarioSpec],
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    suite_name: str | None = None,
    workers: int = 1,
    executor: str = "local",
    progress: Callable[[int, int], None] | None = None,
    planner_factory: PlannerFactory | None = None,
    simulator_factory: SimulatorFactory | None = None,
    write_report: bool = True,
) -> RunResult:
    """Run every scenario not yet in `out_dir`, then write summary.json and report.html."""
    if not scenarios:
        raise UserError("the suite has no scenarios to run")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    planner_id = cfg.planner if planner_factory is None else _factory_id(planner_factory)
    manifest = build_manifest(
        cfg,
        suite_name or cfg.suite,
        scenarios,
        planner_id,
        _factory_id(simulator_factory if simulator_factory else default_simulator_factory),
    )
    check_manifest(out, manifest)
    atomic_write_json(out / MANIFEST_FILE, manifest)
    save_config(cfg, out / CONFIG_FILE)
    results = JsonlResults(out / EPISODES_FILE)
    _drop_errored(results)
    log_dir = str(out / LOG_DIR) if cfg.report.episode_logs else None
    tasks = [EpisodeTask(s, cfg, log_dir, planner_factory, simulator_factory) for s in scenarios]
    records = run_resumable(
        run_episode_task,
        tasks,
        key=lambda t: t.scenario.key,
        results=results,
        executor=make_executor(executor, workers),
        progress=progress,
    )
    by_key = {s.key: s for s in scenarios}
    for r in records:  # executor-level errors carry only the key: add where it belongs
        spec = by_key.get(str(r.get("key")))
        if spec is not None:
            r.setdefault("family", spec.family)
            r.setdefault("seed", spec.seed)
    summary = summarize(records, manifest, cfg.metrics)
    atomic_write_json(out / SUMMARY_FILE, summary)
    report_path = None
    if write_report:
        from sim_eval.report import write_report

        report_path = write_report(out, records, summary, cfg.report)
    return RunResult(out, records, summary, report_path)


def rebuild_report(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Path:
    """Recompute summary.json and rewrite report.html (and its GIFs) of a results folder from
    its episodes and logs, with `report.*` overrides; nothing is simulated again."""
    from sim_eval.report import write_report

    d = Path(run_dir)
    manifest, records = read_run(d)
    bad = [o for o in overrides if not o.strip().startswith("report.")]
    if bad:
        raise UserError(
            f"override {bad[0]!r}: only report.* settings can change without rerunning the "
            "episodes; run 'cocdrive sim run' into a new --out folder for anything else"
        )
    cfg_path = d / CONFIG_FILE
    cfg = load_run_config(cfg_path if cfg_path.is_file() else None, list(overrides))
    summary = summarize(records, manifest, cfg.metrics)
    atomic_write_json(d / SUMMARY_FILE, summary)
    return write_report(d, records, summary, cfg.report)


def read_run(run_dir: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(manifest, episode records) of a finished results folder, with clear errors."""
    d = Path(run_dir)
    if not d.is_dir():
        raise UserError(f"results folder {str(d)!r} does not exist")
    if not (d / EPISODES_FILE).is_file():
        raise UserError(
            f"{d} has no {EPISODES_FILE}: is it the --out folder of a 'cocdrive sim run'?"
        )
    manifest = {}
    if (d / MANIFEST_FILE).is_file():
        manifest = json.loads((d / MANIFEST_FILE).read_text())
    return manifest, JsonlResults(d / EPISODES_FILE).records()


__all__ = [
    "EpisodeTask",
    "ReportConfig",
    "RunConfig",
    "RunResult",
    "load_run_config",
    "read_run",
    "rebuild_report",
    "run_episode_task",
    "run_suite",
    "simulate_episode",
]
