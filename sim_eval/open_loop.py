"""Open-loop evaluation on logs: `cocdrive eval open-loop --data SRC --planner P --out DIR`.

Windows (t0, 1.6 s of history, 6.4 s of logged future) are cut from a source, the planner
plans once per window from what its sensors would have given, and the plan is scored against
what the logged ego did (`planner.metrics`). Sources:
- real logs through `planner.data.loaders.open_log_source` (nuScenes, ScenarioNet pickles,
  rosbag2; a path is detected by content, or `nuscenes:PATH` names the format);
- simulator logs: a dataset folder written by `cocdrive data collect` (index.json + tar
  shards, `planner.data.shards`), whose stored planner features are used as they are.

Cameras are labelled per window (`camera_source`: real | rendered | none): real frames where
the log has them, else rendered from the annotations by the SensorRig when the planner uses
cameras (`cameras: auto`), or forced with `cameras: render | none`. Privileged planners
(expert, idm) are handed the logged scene and every result names them as privileged.

Windows whose ego history (the 1.6 s before t0) or future (`min_future_valid_s`) is not fully
in the log are skipped and counted by reason in summary.json. nuScenes is evaluated at its
2 Hz keyframes (stride 0.5 s, the default), as the published tables do.

Results folder:
    manifest.json   data, planner and config digest (another run into it is refused)
    config.yaml     the full OpenLoopConfig
    windows.jsonl   one record per window (resumable: a rerun evaluates only missing ones)
    summary.json    means with intervals, rates with Wilson intervals, per family and per
                    decision type, skipped windows by reason, windows/s
    report.html     worst windows: history, ground truth, k plans, cameras, reasoning
    report.json     the same content as JSON
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from planner.config import ConfigError, load_config, save_config, to_dict
from planner.errors import UserError
from planner.io import JsonlResults, atomic_write_json
from planner.metrics import (
    TrajectoryMetricsConfig,
    check_reasoning,
    displacement_metrics,
    horizon_label,
    plan_collision,
    plan_offroad,
)
from planner.paths import config_path
from planner.types import (
    EGO_X,
    EGO_Y,
    HISTORY_STEPS,
    PLAN_DT_S,
    PLAN_STEPS,
    PlannerInput,
    Scene,
)
from sim_eval.stats import MetricSpec, StatsConfig, aggregate

log = logging.getLogger(__name__)

CONFIG_PATH = config_path("eval", "open_loop.yaml")
WINDOWS_FILE = "windows.jsonl"
SUMMARY_FILE = "summary.json"
MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.yaml"
CAMERA_MODES = ("auto", "render", "none")
UNLABELLED = "unlabelled"

# Skip reasons (counted in summary.json["skipped"]).
SKIP_EGO_INVALID = "ego_invalid_at_t0"
SKIP_HISTORY = "invalid_ego_history"
SKIP_FUTURE = "invalid_ego_future"


@dataclass
class OpenLoopReportConfig:
    worst_windows: int = 8  # windows shown in the report
    rank_by: str = "ade_6.4s"  # the metric that ranks them (highest first)
    plot_stride_steps: int = 2  # stored plan / ground-truth points every 0.2 s
    camera_height_px: int = 96  # each camera image is scaled to this height in the strip


@dataclass
class OpenLoopConfig:
    data: str = ""  # a path (format detected) or FORMAT:PATH; a dataset folder of shards
    planner: str = "const-vel"  # a planner name or a checkpoint path
    # options of a checkpoint planner, e.g. {"mode": "fast", "num_threads": 1}
    planner_options: dict[str, Any] = field(default_factory=dict)
    k: int = 6  # sampled plans per window (minADE_k) where the planner samples
    stride_s: float = 0.5  # windows every this many seconds (nuScenes 2 Hz keyframes)
    limit: int = 0  # evaluate at most this many windows (0 = all)
    cameras: str = (
        "auto"  # auto (real, else rendered when the planner uses cameras) | render | none
    )
    sensors_config: str = ""  # SensorRig YAML for rendered cameras ("" = configs/sensors)
    # nuScenes: anchor windows at its 2 Hz keyframes (the published tables' protocol) instead
    # of every stride_s on the 10 Hz grid
    nuscenes_keyframes: bool = True
    require_full_history: bool = True  # the whole 1.6 s history in the log
    min_future_valid_s: float = 6.4  # logged future needed (every row up to this)
    # Mixed-rate logs are refused unless allowed (they are resampled and flagged then).
    allow_irregular_rate: bool = False
    loaders: list[str] = field(default_factory=list)  # loader overrides (configs/data/loaders.yaml)
    split: str = ""  # dataset folders: only this split ("" = all)
    # fsync windows.jsonl after every window: survives an OS crash, but costs ~10 ms a window
    # on the development machine's disk (more than a baseline's whole evaluation); without it
    # a killed run still resumes (records are in the kernel's buffers)
    fsync_each_window: bool = False
    workers: int = 1
    executor: str = "local"
    metrics: TrajectoryMetricsConfig = field(default_factory=TrajectoryMetricsConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    report: OpenLoopReportConfig = field(default_factory=OpenLoopReportConfig)

    def __post_init__(self) -> None:
        if self.cameras not in CAMERA_MODES:
            raise ValueError(f"cameras must be one of {CAMERA_MODES}, got {self.cameras!r}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.stride_s < PLAN_DT_S - 1e-9:
            raise ValueError(f"stride_s must be >= {PLAN_DT_S} s (the 10 Hz grid)")
        if not 0 < self.min_future_valid_s <= PLAN_STEPS * PLAN_DT_S + 1e-9:
            raise ValueError("min_future_valid_s must be in (0, 6.4]")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")


def load_open_loop_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> OpenLoopConfig:
    if path is None and CONFIG_PATH.is_file():
        path = CONFIG_PATH
    return load_config(OpenLoopConfig, path, overrides)


# ---- windows ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class WindowRef:
    """Where one window is: log `log_index` of the source at grid index `index`, or sample
    `index` of `shard` for dataset folders."""

    key: str
    log_index: int
    index: int
    log_id: str
    t0: float
    shard: str = ""


@dataclass
class Window:
    """One loaded window: the sample, the planner input and where its cameras came from."""

    sample: Any  # planner.data.sample.Sample
    inp: PlannerInput
    family: str
    source: str


def _is_dataset_folder(path: Path) -> bool:
    from planner.data.shards import INDEX_FILE

    return path.is_dir() and (path / INDEX_FILE).is_file()


def _loader_config(cfg: OpenLoopConfig):
    from planner.data.loaders import load_loaders_config

    overrides = list(cfg.loaders)
    if not cfg.allow_irregular_rate:
        overrides.append("common.irregular_rate_policy=error")
    return load_loaders_config(overrides=overrides)


def _irregular_hint(exc: Exception) -> UserError:
    return UserError(
        f"{exc} (open-loop numbers from mixed-rate logs are not comparable; pass "
        "allow_irregular_rate=true to evaluate them anyway, flagged)"
    )


class _LogState:
    """A worker's view of a log source: resampled logs kept as they are first read."""

    def __init__(self, spec: str, cfg: OpenLoopConfig):
        from planner.data.loaders import open_log_source

        self.source = open_log_source(spec, config=_loader_config(cfg))
        self._iter = self.source.resampled_logs()
        self.logs: list[Any] = []

    def _read_next(self) -> bool:
        from planner.data.loaders import IrregularRateError

        try:
            self.logs.append(next(self._iter))
        except IrregularRateError as exc:
            raise _irregular_hint(exc) from None
        except StopIteration:
            return False
        return True

    def log(self, index: int):
        while len(self.logs) <= index:
            if not self._read_next():
                raise UserError(f"the source has no log #{index}: did it change since enumeration?")
        return self.logs[index]

    def all_logs(self) -> list[Any]:
        while self._read_next():
            pass
        return self.logs


# Log sources opened while enumerating, handed to the in-process worker state (workers=1), so
# a log is read once per process.
_OPENED: dict[str, _LogState] = {}


def _window_skip_reason(rlog: Any, i: int, cfg: OpenLoopConfig) -> str | None:
    """Why the window at grid index i cannot be evaluated (None: it can)."""
    if not rlog.ego_valid[i]:
        return SKIP_EGO_INVALID
    if cfg.require_full_history and (
        i < HISTORY_STEPS - 1 or not rlog.ego_valid[i - HISTORY_STEPS + 1 : i + 1].all()
    ):
        return SKIP_HISTORY
    need = int(round(cfg.min_future_valid_s / PLAN_DT_S))
    if i + need >= len(rlog.t) or not rlog.ego_valid[i + 1 : i + 1 + need].all():
        return SKIP_FUTURE
    return None


def nuscenes_keyframe_times(source: Any, scene_token: str) -> list[float]:
    """Timestamps (s) of a nuScenes scene's keyframes (its `sample` records), via the devkit."""
    nusc = source.nusc
    token = nusc.get("scene", scene_token)["first_sample_token"]
    times = []
    while token:
        record = nusc.get("sample", token)
        times.append(record["timestamp"] * 1e-6)
        token = record["next"]
    return times


def _anchor_indices(rlog: Any, source: Any, cfg: OpenLoopConfig, step: int) -> list[int]:
    """Grid indices of the window anchors: nuScenes' keyframes (the nearest 10 Hz grid time,
    within half a step) when `nuscenes_keyframes`, else every `step` grid rows."""
    token = rlog.data.metadata.get("scene_token")
    if cfg.nuscenes_keyframes and rlog.data.source == "nuscenes" and token:
        out = set()
        for t in nuscenes_keyframe_times(source, token):
            i = int(round((t - rlog.t[0]) / PLAN_DT_S))
            if 0 <= i < len(rlog) and abs(rlog.t[i] - t) <= 0.5 * PLAN_DT_S + 1e-6:
                out.add(i)
        return sorted(out)
    return list(range(0, len(rlog), step))


def enumerate_windows(
    cfg: OpenLoopConfig,
) -> tuple[list[WindowRef], list[dict[str, Any]], dict[str, Any]]:
    """(windows to evaluate, skipped windows with reasons, source info)."""
    path = Path(str(cfg.data)).expanduser()
    if _is_dataset_folder(path):
        return _enumerate_dataset(path, cfg)
    state = _LogState(cfg.data, cfg)
    refs: list[WindowRef] = []
    skipped: list[dict[str, Any]] = []
    step = max(1, int(round(cfg.stride_s / PLAN_DT_S)))
    logs = state.all_logs()
    n_logs = len(logs)
    for log_index, rlog in enumerate(logs):
        log_id = str(rlog.data.log_id)
        for i in _anchor_indices(rlog, state.source, cfg, step):
            t0 = float(rlog.t[i])
            reason = _window_skip_reason(rlog, i, cfg)
            key = f"{log_id}:{i}"
            if reason is not None:
                skipped.append({"key": key, "log_id": log_id, "t0": t0, "reason": reason})
                continue
            refs.append(WindowRef(key, log_index, i, log_id, t0))
    _OPENED.clear()
    _OPENED[config_digest(cfg)] = state
    if n_logs == 0:
        raise UserError(f"{cfg.data!r} holds no logs")
    info = {"format": state.source.format_name, "logs": n_logs, "kind": "log"}
    return refs, skipped, info


def _enumerate_dataset(
    root: Path, cfg: OpenLoopConfig
) -> tuple[list[WindowRef], list[dict[str, Any]], dict[str, Any]]:
    from planner.data import shards

    index = shards.load_index(root)
    entries = index["shards"]
    if cfg.split:
        entries = [e for e in entries if e["split"] == cfg.split]
        if not entries:
            raise UserError(f"dataset {str(root)!r} has no shards of split {cfg.split!r}")
    refs, skipped = [], []
    step = max(1, int(round(cfg.stride_s / PLAN_DT_S)))
    need = int(round(cfg.min_future_valid_s / PLAN_DT_S))
    for log_index, e in enumerate(entries):
        shard_path = root / e["path"]
        scan = shards.scan_shard(shard_path)
        with open(scan.path, "rb") as fh:
            for j, entry in enumerate(scan.samples):
                rec = shards.decode_sample(
                    scan.path, entry.key, shards.read_members(scan.path, entry, fh)
                )
                step_no = int(rec.meta.get("step", j))
                if step_no % step:
                    continue
                t0 = float(rec.info.get("timestamp", 0.0))
                valid = np.asarray(rec.arrays["future_valid"], bool)
                hist = np.asarray(rec.arrays["ego_history"])
                reason = None
                if cfg.require_full_history and (
                    len(hist) < HISTORY_STEPS or not np.isfinite(hist).all()
                ):
                    reason = SKIP_HISTORY
                elif not valid[:need].all():
                    reason = SKIP_FUTURE
                if reason:
                    skipped.append(
                        {"key": entry.key, "log_id": scan.path.stem, "t0": t0, "reason": reason}
                    )
                    continue
                refs.append(
                    WindowRef(entry.key, log_index, j, scan.path.stem, t0, shard=str(shard_path))
                )
    info = {"format": "dataset", "logs": len(entries), "kind": "dataset"}
    return refs, skipped, info


# ---- per-worker state ----------------------------------------------------------------------------
_STATE: dict[str, Any] = {}


def _worker_state(cfg: OpenLoopConfig) -> dict[str, Any]:
    """The planner, renderer and open sources of this process (built once per config)."""
    digest = config_digest(cfg)
    if _STATE.get("digest") != digest:
        _STATE.clear()
        _STATE["digest"] = digest
        _STATE["planner"] = build_planner(cfg)
        _STATE["renderer"] = None
        _STATE["logs"] = _OPENED.pop(digest, None)
        _STATE["shards"] = {}
    return _STATE


def build_planner(cfg: OpenLoopConfig):
    """A built-in planner by name, or a checkpoint asked for k samples."""
    from planner.planners import BUILTIN_PLANNERS, make_planner

    if cfg.planner in BUILTIN_PLANNERS:
        return make_planner(cfg.planner)
    return make_planner(cfg.planner, **{"samples": cfg.k, **cfg.planner_options})


def _renderer(state: dict[str, Any], cfg: OpenLoopConfig):
    if state["renderer"] is None:
        from planner.sensors import SensorRig

        state["renderer"] = SensorRig.from_config(cfg.sensors_config or None)
    return state["renderer"]


def _wants_rendering(planner: Any, cfg: OpenLoopConfig) -> bool:
    if cfg.cameras == "none":
        return False
    if cfg.cameras == "render":
        return True
    return bool(getattr(planner, "uses_cameras", True))


def load_window(ref: WindowRef, cfg: OpenLoopConfig, state: dict[str, Any]) -> Window:
    """The sample and planner input of one window (cameras real, rendered or none)."""
    from planner.features import build_planner_input

    planner = state["planner"]
    if ref.shard:
        return _load_dataset_window(ref, cfg, state)
    if state["logs"] is None:
        state["logs"] = _LogState(cfg.data, cfg)
    rlog = state["logs"].log(ref.log_index)
    sample = rlog.sample_at(ref.index)
    scene = sample.scene
    renderer = None
    if cfg.cameras == "none":
        scene.cameras = None
    elif _wants_rendering(planner, cfg) and (cfg.cameras == "render" or not scene.cameras):
        renderer = _renderer(state, cfg)
    history = None
    if renderer is not None:
        frames = renderer.config.frames
        history = [
            rlog.scene_at(j)
            for j in range(max(0, ref.index - frames + 1), ref.index)
            if rlog.ego_valid[j]
        ]
    inp = build_planner_input(scene, renderer, history)
    return Window(sample, inp, family=str(rlog.data.source), source=str(rlog.data.source))


def _load_dataset_window(ref: WindowRef, cfg: OpenLoopConfig, state: dict[str, Any]) -> Window:
    from planner.data import shards
    from planner.taxonomy import Command

    cache = state["shards"]
    if ref.shard not in cache:
        if len(cache) > 8:  # a few open shards per worker (items arrive shard by shard)
            cache.clear()
        scan = shards.scan_shard(ref.shard)
        cache[ref.shard] = (scan, shards.read_episode(scan))
    scan, episode = cache[ref.shard]
    entry = scan.samples[ref.index]
    rec = shards.decode_sample(scan.path, entry.key, shards.read_members(scan.path, entry))
    sample = rec.to_sample(episode)
    feats = rec.features()
    cameras, names, source = feats.cameras, tuple(feats.camera_names), feats.camera_source
    if cfg.cameras == "none" or not getattr(state["planner"], "uses_cameras", True):
        cameras, names, source = None, (), "none"
    # The stored features are what inference computed at collection time; built here rather
    # than with planner.model.batch.planner_input_from_features so a baseline's evaluation
    # does not import torch.
    inp = PlannerInput(
        timestamp=sample.scene.timestamp,
        ego_history=feats.ego_history,
        command=Command.parse(feats.command),
        route_xy=feats.route_xy,
        speed_limit_mps=feats.speed_limit_mps,
        cameras=cameras,
        camera_names=names,
        camera_source=source,
    )
    family = str(sample.meta.get("family") or rec.info.get("meta", {}).get("family", "dataset"))
    return Window(sample, inp, family=family, source="simulator")


# ---- one window ----------------------------------------------------------------------------------
def _agent_boxes(sample: Any) -> tuple[np.ndarray, list[str]]:
    """(N, 64, 5) x, y, yaw, length, width of the logged agents' future boxes (world)."""
    sizes = {a.id: (a.length, a.width) for a in sample.scene.agents}
    ids = [aid for aid in sample.agent_futures if aid in sizes]
    boxes = np.full((len(ids), PLAN_STEPS, 5), np.nan)
    for n, aid in enumerate(ids):
        fut = np.asarray(sample.agent_futures[aid], dtype=np.float64)  # (64, 5) t, x, y, yaw, v
        boxes[n, :, 0:3] = fut[:, 1:4]
        boxes[n, :, 3:5] = sizes[aid]
        boxes[n, ~np.isfinite(fut[:, 1:4]).all(axis=1)] = np.nan
    return boxes, ids


def _decision_of(sample: Any) -> tuple[str, str]:
    label = sample.label or {}
    decision = label.get("decision") or {}
    return (
        str(decision.get("longitudinal") or UNLABELLED),
        str(decision.get("lateral") or UNLABELLED),
    )


def _round_xy(xy: np.ndarray, stride: int) -> list[list[float]]:
    pts = np.asarray(xy, dtype=np.float64)[stride - 1 :: stride]
    return [[round(float(x), 2), round(float(y), 2)] for x, y in pts]


def evaluate_window(ref: WindowRef, cfg: OpenLoopConfig) -> dict[str, Any]:
    """Plan once at the window's t0 and score it (one JSONL record)."""
    from planner.base import call_planner
    from planner.geometry import drivable_area

    state = _worker_state(cfg)
    planner = state["planner"]
    window = load_window(ref, cfg, state)
    sample, inp = window.sample, window.inp
    scene: Scene = sample.scene
    planner.reset()  # every window on its own: results do not depend on the order
    start = time.perf_counter()
    out = call_planner(planner, inp, scene)
    planner_ms = (time.perf_counter() - start) * 1000.0
    plan = out.trajectory
    sampled = list(getattr(planner, "last_trajectories", None) or []) or [plan]
    gt = sample.future_xy_ego()
    valid = sample.future_valid
    row: dict[str, Any] = displacement_metrics(
        plan.xy, gt, valid, samples=[t.xy for t in sampled], cfg=cfg.metrics
    )
    # collision and off-road in the world frame (where the logged boxes and the map are)
    world = plan.to_world(scene.ego)
    ego = scene.ego
    dims = {
        "length_m": ego.length,
        "width_m": ego.width,
        "rear_axle_to_center_m": ego.rear_axle_to_center_m,
    }
    boxes, ids = _agent_boxes(sample)
    hit = plan_collision(
        world[:, :2],
        world[:, 2],
        boxes,
        margin_m=cfg.metrics.collision_margin_m,
        horizon_s=cfg.metrics.collision_horizon_s,
        **dims,
    )
    has_map = bool(scene.map.lanes) or scene.map.drivable_area is not None
    off = plan_offroad(
        world[:, :2],
        world[:, 2],
        drivable_area(scene.map) if has_map else None,
        horizon_s=cfg.metrics.offroad_horizon_s,
        area_tolerance_m2=cfg.metrics.offroad_area_tolerance_m2,
        distance_tolerance_m=cfg.metrics.offroad_distance_tolerance_m,
        **dims,
    )
    lon, lat = _decision_of(sample)
    row.update(
        status="ok",
        source=window.source,
        family=window.family,
        log_id=ref.log_id,
        t0=ref.t0,
        decision=lon,
        decision_lateral=lat,
        camera_source=inp.camera_source,
        privileged=bool(planner.privileged),
        agents_interpolated=bool(sample.meta.get("agents_interpolated", False)),
        ego_rate_irregular=bool(sample.meta.get("ego_rate_irregular", False)),
        collision=hit.collided,
        collision_time_s=hit.time_s,
        collision_agent=ids[hit.agent_index] if hit.agent_index is not None else None,
        offroad=off["offroad"],
        offroad_time_s=off["time_s"],
        planner_ms=planner_ms,
        planner_status=out.status,
        planner_flags=list(out.flags),
    )
    text = out.reasoning.text if out.reasoning is not None else None
    row["reasoning_text"] = text
    if text is not None:
        check = check_reasoning(text, plan, scene=scene, v0=max(0.0, inp.ego_speed))
        row.update(check.to_dict())
        row["reasoning_parsed"] = check.parsed
    stride = max(1, cfg.report.plot_stride_steps)
    hist = inp.ego_history
    row["plot"] = {
        "stride_steps": stride,
        "history": [[round(float(x), 2), round(float(y), 2)] for x, y in hist[:, [EGO_X, EGO_Y]]],
        "ground_truth": _round_xy(np.where(valid[:, None], gt, np.nan), stride),
        "plans": [_round_xy(t.xy, stride) for t in sampled],
    }
    return row


# ---- summary ---------------------------------------------------------------------------------
def metric_specs(cfg: TrajectoryMetricsConfig) -> tuple[MetricSpec, ...]:
    continuous = []
    for h in cfg.ade_horizons_s:
        continuous += [f"ade_{horizon_label(h)}", f"fde_{horizon_label(h)}"]
    for h in cfg.l2_horizons_s:
        continuous += [f"l2_stp3_{horizon_label(h)}", f"l2_uniad_{horizon_label(h)}"]
    continuous += ["min_ade_k", "min_fde_k"]
    binary = [
        "miss_fde",
        "miss_max",
        "miss_fde_k",
        "miss_max_k",
        "collision",
        "offroad",
        "reasoning_parsed",
        "consistent_longitudinal",
        "consistent_lateral",
        "consistent_joint",
        "truthful",
    ]
    return (
        tuple(MetricSpec(n, "continuous") for n in continuous)
        + tuple(MetricSpec(n, "binary") for n in binary)
        + (MetricSpec("planner_ms", "continuous", "higher"),)
    )


CONVENTIONS = {
    "ade_{h}": "mean displacement over the valid 10 Hz rows up to h",
    "fde_{h}": "displacement at h",
    "l2_stp3_{h}": "L2 at h, ST-P3 convention: mean of the errors every l2_step_s up to h",
    "l2_uniad_{h}": "L2 at h, UniAD convention: the error at h",
    "min_ade_k / min_fde_k": "minimum over the k sampled plans, each minimised on its own",
    "miss_fde": "final (6.4 s) displacement > miss_threshold_m",
    "miss_max": "nuScenes: maximum pointwise displacement > miss_threshold_m",
    "miss_*_k": "every one of the k samples misses",
    "collision": "ego footprint along the plan overlaps a logged agent box at the same time",
    "offroad": "ego footprint along the plan out of the drivable area by > 0.5 m^2 or > 0.3 m "
    "(the closed-loop rule; maps only)",
    "consistent_*": "decision parsed from the reasoning vs the plan's meta-actions",
    "truthful": "every distance/speed/object the reasoning states holds in the logged scene",
}


def summarize(
    records: list[dict[str, Any]],
    skipped: list[dict[str, Any]],
    cfg: OpenLoopConfig,
    extra: dict[str, Any],
) -> dict[str, Any]:
    specs = metric_specs(cfg.metrics)
    stats = StatsConfig(**{**to_dict(cfg.stats), "family_field": "family"})
    summary = aggregate(records, specs, stats)
    by_decision = aggregate(
        records, specs, StatsConfig(**{**to_dict(stats), "family_field": "decision"})
    )
    summary["by_decision"] = by_decision["by_family"]
    summary.pop("per_km", None)
    for block in list(summary["by_family"].values()) + list(summary["by_decision"].values()):
        block.pop("per_km", None)
        block.pop("total_distance_km", None)
    summary.pop("total_distance_km", None)
    ok = [r for r in records if r.get("status", "ok") == "ok"]
    summary.update(
        windows_evaluated=len(ok),
        skipped={"total": len(skipped), "by_reason": dict(Counter(s["reason"] for s in skipped))},
        camera_source=dict(Counter(str(r.get("camera_source")) for r in ok)),
        privileged=any(bool(r.get("privileged")) for r in ok),
        k_effective=sorted({int(r["k"]) for r in ok if r.get("k") is not None}),
        conventions={
            **CONVENTIONS,
            "l2_step_s": cfg.metrics.l2_step_s,
            "miss_threshold_m": cfg.metrics.miss_threshold_m,
        },
        **extra,
    )
    return summary


# ---- the command ----------------------------------------------------------------------------------
def config_digest(cfg: OpenLoopConfig) -> str:
    """What makes two runs' windows comparable (not the worker count or the limit)."""
    d = to_dict(cfg)
    for key in ("workers", "executor", "limit", "report", "fsync_each_window"):
        d.pop(key, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _check_manifest(out: Path, manifest: dict[str, Any]) -> None:
    path = out / MANIFEST_FILE
    if not path.is_file():
        if (out / WINDOWS_FILE).exists():
            raise UserError(
                f"{out} holds {WINDOWS_FILE} but no {MANIFEST_FILE}: use a new --out folder"
            )
        return
    old = json.loads(path.read_text())
    for key in ("data", "planner", "config_digest"):
        if old.get(key) != manifest[key]:
            raise UserError(
                f"{out} holds an open-loop run with {key} = {old.get(key)!r}, not "
                f"{manifest[key]!r}: use another --out folder (results are never mixed)"
            )


@dataclass
class OpenLoopResult:
    out_dir: Path
    summary: dict[str, Any]
    records: list[dict[str, Any]]
    report_path: Path | None


def run_open_loop(
    cfg: OpenLoopConfig,
    out: str | Path,
    progress: Callable[[int, int], None] | None = None,
    report: bool = True,
) -> OpenLoopResult:
    """Evaluate every window of cfg.data (resumable) and write summary and report."""
    from planner.executor import make_executor, run_resumable
    from planner.planners import check_planner_spec

    if not cfg.data:
        raise ConfigError("no data source: pass --data PATH (or data=PATH)")
    check_planner_spec(cfg.planner)
    out = Path(out)
    manifest = {
        "kind": "open_loop",
        "data": str(cfg.data),
        "planner": cfg.planner,
        "config_digest": config_digest(cfg),
    }
    _check_manifest(out, manifest)
    t_enum = time.perf_counter()
    refs, skipped, info = enumerate_windows(cfg)
    enumerate_s = time.perf_counter() - t_enum
    if cfg.limit > 0:
        refs = refs[: cfg.limit]
    by_key = {r.key: r for r in refs}
    if not refs:
        reasons = dict(Counter(s["reason"] for s in skipped))
        raise UserError(
            f"{cfg.data!r} has no window with a full 1.6 s history and {cfg.min_future_valid_s:g} s "
            f"of logged future (skipped: {reasons or 'none'}): check the log, or lower "
            "min_future_valid_s"
        )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / MANIFEST_FILE, manifest)
    save_config(cfg, out / CONFIG_FILE)
    results = JsonlResults(out / WINDOWS_FILE, fsync=cfg.fsync_each_window)
    _drop_errored(results)
    done_before = len(results.done_keys() & {r.key for r in refs})
    executor = make_executor(cfg.executor, cfg.workers)
    start = time.perf_counter()
    records = run_resumable(
        _EvaluateTask(cfg),
        refs,
        key=lambda r: r.key,
        results=results,
        executor=executor,
        progress=progress,
    )
    wall_s = time.perf_counter() - start
    new = len(refs) - done_before
    ok = [r for r in records if r.get("status", "ok") == "ok"]
    ms = np.array([r["planner_ms"] for r in ok if r.get("planner_ms") is not None])
    timing = {
        "windows_new": new,
        "wall_s": wall_s,
        "windows_per_s": new / wall_s if new and wall_s > 0 else None,
        "enumerate_s": enumerate_s,
        "workers": cfg.workers,
        "planner_ms_p50": float(np.percentile(ms, 50)) if len(ms) else None,
        "planner_ms_p99": float(np.percentile(ms, 99)) if len(ms) else None,
    }
    summary = summarize(
        records,
        skipped,
        cfg,
        {"planner": cfg.planner, "data": str(cfg.data), "source": info, "timing": timing},
    )
    atomic_write_json(out / SUMMARY_FILE, summary)
    report_path = None
    if report:
        from sim_eval.open_loop_report import write_report

        report_path = write_report(out, records, summary, cfg, by_key)
    return OpenLoopResult(out, summary, records, report_path)


def _drop_errored(results: JsonlResults) -> None:
    """Windows that raised in an earlier run are evaluated again on resume."""
    from planner.io import atomic_write_text, dumps

    records = results.records()
    keep = [r for r in records if r.get("status", "ok") == "ok"]
    if len(keep) != len(records):
        log.warning("retrying %d window(s) that failed in an earlier run", len(records) - len(keep))
        atomic_write_text(results.path, "".join(dumps(r) + "\n" for r in keep))


class _EvaluateTask:
    """Picklable per-window task for the process pool."""

    def __init__(self, cfg: OpenLoopConfig):
        self.cfg = cfg

    def __call__(self, ref: WindowRef) -> dict[str, Any]:
        return evaluate_window(ref, self.cfg)


def headline(summary: dict[str, Any], cfg: OpenLoopConfig) -> dict[str, dict[str, Any] | None]:
    """The metrics printed after a run: name -> {"mean"/"rate", "ci_low", "ci_high", "n"}."""
    names = [f"ade_{horizon_label(6.4)}", f"fde_{horizon_label(6.4)}", "min_ade_k", "min_fde_k"]
    names += [f"l2_stp3_{horizon_label(h)}" for h in cfg.metrics.l2_horizons_s]
    names += [f"l2_uniad_{horizon_label(h)}" for h in cfg.metrics.l2_horizons_s]
    out: dict[str, dict[str, Any] | None] = {}
    for n in names:
        if n in summary["means"]:
            out[n] = summary["means"][n]
    for n in ("miss_fde", "miss_max", "collision", "offroad", "consistent_joint"):
        block = summary["rates"].get(n)
        if block and block.get("n"):
            out[n] = {**block, "mean": block["rate"]}
    return out
