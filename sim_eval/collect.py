"""Expert data collection: `cocdrive data collect` drives the privileged expert through a
scenario suite and cuts a chain-of-causation sample every `stride_steps` x 0.1 s.

Recovery data (DAgger-free, as ChauffeurNet does with synthesised perturbations): during
short random intervals the plan the simulator EXECUTES is the expert's plan with noise added
(a curvature bias that builds a lateral offset and heading error, or an acceleration bias
that builds a speed error). The expert replans every step on the state it actually reached,
so every label (trajectory target, CoC text, decision) is its clean correction computed on
the perturbed state. A sample's future comes from the episode itself (the executed ego
poses of the next 6.4 s); where that window contains injected noise, the noise is not a
demonstration, so the target is the expert's clean plan at t0 instead (`meta.future_source`
says which; the card counts both).

One episode is one executor item (`planner.executor.run_resumable`): a worker simulates the
episode, buffers its Scenes until every sample's future is known, renders the cameras,
labels, fits controls and writes the episode's shard atomically; the JSONL record it returns
feeds the dataset card. Re-running the same command resumes: only missing episodes run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import subprocess
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from planner.base import Planner, call_planner
from planner.coc import CocConfig
from planner.coc import label as coc_label
from planner.config import load_config, save_config, to_dict
from planner.controls import ControlFitConfig, fit_controls
from planner.data import shards
from planner.data.sample import Sample
from planner.errors import UserError
from planner.executor import make_executor, run_resumable
from planner.features import build_planner_input
from planner.geometry import world_to_ego_xy
from planner.io import JsonlResults, atomic_write_json, atomic_write_text, dumps
from planner.paths import config_path
from planner.sensors import SensorRig, SensorRigConfig, load_sensor_config
from planner.types import (
    EGO_T,
    EGO_X,
    EGO_Y,
    EGO_YAW,
    MAX_ABS_ACCEL_MPS2,
    MAX_ABS_CURVATURE_PER_M,
    PLAN_DT_S,
    PLAN_STEPS,
    TRAJ_ACCEL,
    TRAJ_CURV,
    TRAJ_SPEED,
    MapData,
    PlannerOutput,
    Scene,
    Trajectory,
)
from sim_eval.scenarios import ScenarioSpec, list_suites, load_suite
from sim_eval.sim.config import SimConfig, load_sim_config

log = logging.getLogger(__name__)

DEFAULT_COLLECT_CONFIG = config_path("data", "collect.yaml")
MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.yaml"
EPISODES_FILE = "episodes.jsonl"
MANIFEST_VERSION = 1


@dataclass
class PerturbationConfig:
    """Noise injected into the executed plan for short random intervals."""

    enabled: bool = True
    seed: int = 0
    start_rate_per_s: float = 0.06  # chance per second that an interval starts (when allowed)
    start_after_s: float = 1.0  # no perturbation in the first second of an episode
    cooldown_s: float = 4.0  # clean driving at least this long between intervals
    duration_s: tuple[float, float] = (0.5, 1.5)  # interval length range
    lateral_probability: float = 0.6  # else longitudinal
    lateral_accel_mps2: tuple[float, float] = (0.8, 2.0)  # |v^2 * curvature bias|
    longitudinal_accel_mps2: tuple[float, float] = (0.8, 2.0)  # |accel bias|
    min_speed_mps: float = 3.0  # no perturbation while slower (standing at a light)
    speed_floor_mps: float = 5.0  # curvature bias = lateral accel / max(v, floor)^2


@dataclass
class LearnerConfig:
    """DAgger-style collection (Ross et al. 2011): a learned planner (the "learner", e.g. the
    shipped VLA) drives the ego for random intervals while the expert still plans at every
    step. Samples whose 6.4 s future window contains learner-driven steps are labelled with
    the expert's plan from that state (future_source "expert_plan"), so the data covers the
    states the learner itself reaches (its drift, its acceleration runaway) with the expert's
    correction. Between intervals the expert drives and recovers; those samples keep their
    executed future. Disabled while `planner` is empty."""

    planner: str = ""  # e.g. "vla"; "" disables
    planner_options: dict[str, Any] = field(default_factory=dict)  # e.g. {mode: fast}
    seed: int = 0
    start_rate_per_s: float = 0.3  # chance per second that an interval starts (when allowed)
    start_after_s: float = 0.5
    cooldown_s: float = 1.5  # expert driving at least this long between intervals
    duration_s: tuple[float, float] = (3.0, 8.0)  # long enough for the learner's drift to build
    min_speed_mps: float = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.planner)


@dataclass
class CollectConfig:
    """Everything that decides the collected data (configs/data/collect.yaml)."""

    suite: str = "train"
    episodes_per_family: int | None = None  # first N seeds of each family (None: all)
    seeds: list[int] | None = None  # run every family of the suite on these seeds instead
    # Episodes (family, seed) that an evaluation suite (any suite in configs/scenarios/ but
    # train) also runs are refused: training on them leaks the test set. True collects them
    # anyway (e.g. a log set only for open-loop evaluation).
    allow_evaluation_seeds: bool = False
    output_dir: str = "~/.cache/cocdrive/datasets/default"  # default --out
    stride_steps: int = 1  # a sample every stride x 0.1 s
    min_future_s: float = 6.4  # samples need this much known future (the rest is masked)
    map_radius_m: float = 100.0  # lanes with a centreline point this close are "around the ego"
    image_format: str = "png"  # png (lossless) or jpg
    jpeg_quality: int = 90
    invalid_labels: str = "flag"  # labels failing the consistency check: "flag" or "skip"
    skip_before_collision_s: float = 6.4  # drop samples this close before an ego collision
    label_seed: int = 0  # phrasing of the CoC text
    split_fractions: dict[str, float] = field(
        default_factory=lambda: {"train": 0.9, "val": 0.05, "test": 0.05}
    )
    planner: str = "expert"
    planner_options: dict[str, Any] = field(default_factory=dict)
    perturbation: PerturbationConfig = field(default_factory=PerturbationConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    sim: SimConfig = field(default_factory=load_sim_config)
    sensors: SensorRigConfig = field(default_factory=load_sensor_config)
    coc: CocConfig = field(default_factory=CocConfig)
    controls: ControlFitConfig = field(default_factory=ControlFitConfig)

    def __post_init__(self) -> None:
        if self.stride_steps < 1:
            raise ValueError(f"stride_steps must be >= 1, got {self.stride_steps}")
        if not 0 < self.min_future_s <= PLAN_STEPS * PLAN_DT_S + 1e-9:
            raise ValueError(f"min_future_s must be in (0, 6.4], got {self.min_future_s}")
        if self.image_format not in ("png", "jpg"):
            raise ValueError(f"image_format {self.image_format!r}: valid are png, jpg")
        if self.invalid_labels not in ("flag", "skip"):
            raise ValueError(f"invalid_labels {self.invalid_labels!r}: valid are flag, skip")
        if self.episodes_per_family is not None and self.episodes_per_family < 1:
            raise ValueError("episodes_per_family must be >= 1 (or null for all)")
        for name, c in (("perturbation", self.perturbation), ("learner", self.learner)):
            lo, hi = c.duration_s
            if not 0 < lo <= hi:
                raise ValueError(f"{name}.duration_s must be 0 < min <= max, got {[lo, hi]}")
            if c.start_rate_per_s < 0 or c.cooldown_s < 0:
                raise ValueError(f"{name}.start_rate_per_s and cooldown_s must be >= 0")
        if self.learner.enabled and self.learner.planner == "expert":
            raise ValueError(
                "learner.planner='expert': the learner is the planner being corrected by the "
                "expert, e.g. vla (set learner.planner='' to collect expert driving only)"
            )


def load_collect_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> CollectConfig:
    """CollectConfig defaults, configs/data/collect.yaml (or `path`), then overrides."""
    if path is None and DEFAULT_COLLECT_CONFIG.is_file():
        path = DEFAULT_COLLECT_CONFIG
    return load_config(CollectConfig, path, overrides)


def select_episodes(cfg: CollectConfig) -> list[ScenarioSpec]:
    """The suite's episodes (optionally on other seeds), first N per family, interleaved
    family by family (seed 1 of every family, then seed 2, ...) so that a collection stopped
    early still covers every family evenly."""
    specs = load_suite(cfg.suite, seeds=cfg.seeds)
    if not cfg.allow_evaluation_seeds:
        refuse_evaluation_episodes(specs)
    rank: Counter[str] = Counter()
    ranked = []
    for order, s in enumerate(specs):
        if cfg.episodes_per_family is None or rank[s.family] < cfg.episodes_per_family:
            ranked.append((rank[s.family], order, s))
            rank[s.family] += 1
    return [s for _, _, s in sorted(ranked, key=lambda x: (x[0], x[1]))]


def refuse_evaluation_episodes(
    specs: list[ScenarioSpec], suites_dir: Path | None = None, train_suite: str = "train"
) -> None:
    """UserError when an episode (family, seed) of `specs` is also one of an evaluation
    suite's (every suite of `suites_dir` but `train_suite`)."""
    wanted = {(s.family, s.seed) for s in specs}
    clash: set[tuple[str, int]] = set()
    names = []
    for name in list_suites(suites_dir):
        if name == train_suite:
            continue
        common = wanted & {(s.family, s.seed) for s in load_suite(name, suites_dir=suites_dir)}
        if common:
            clash |= common
            names.append(repr(name))
    if clash:
        family, seed = min(clash)
        raise UserError(
            f"{len(clash)} of the {len(wanted)} episodes to collect are also episodes of the "
            f"evaluation suite(s) {', '.join(names)} (e.g. {family} seed {seed}): training on "
            "them leaks the test set. Pass --seeds with seeds of no evaluation suite (the train "
            "suite uses 100000 and up; docs/DATASET.md), or set allow_evaluation_seeds=true to "
            "collect them anyway (e.g. logs only for open-loop evaluation)"
        )


# ---- perturbation and learner intervals -------------------------------------------------------
class Intervals:
    """Random intervals: after `start_after_s` and `cooldown_s` of clean driving (and above
    `min_speed_mps`) one starts with probability `start_rate_per_s` per second and lasts a
    uniform draw from `duration_s`. Shared by perturbations and learner driving."""

    def __init__(self, cfg: PerturbationConfig | LearnerConfig, rng: np.random.Generator):
        self.cfg = cfg
        self.rng = rng
        self.remaining = 0  # steps left in the active interval
        self.clean_s = 0.0
        self.just_started = False  # the last step() started an interval (draw its parameters)

    def step(self, t_s: float, speed: float) -> bool:
        """Advance one 0.1 s step; True inside an active interval (its first step included)."""
        c = self.cfg
        self.just_started = False
        if self.remaining > 0:
            self.remaining -= 1
            return True
        self.clean_s += PLAN_DT_S
        if t_s < c.start_after_s or self.clean_s < c.cooldown_s or speed < c.min_speed_mps:
            return False
        if self.rng.random() >= c.start_rate_per_s * PLAN_DT_S:
            return False
        self.remaining = max(1, int(round(self.rng.uniform(*c.duration_s) / PLAN_DT_S))) - 1
        self.clean_s = 0.0
        self.just_started = True
        return True


class Perturber:
    """Draws perturbation intervals and applies the active one to a plan."""

    def __init__(self, cfg: PerturbationConfig, family: str, seed: int):
        self.cfg = cfg
        self.rng = np.random.default_rng([cfg.seed, zlib.crc32(family.encode()), int(seed)])
        self.intervals = Intervals(cfg, self.rng)
        self.kind = ""
        self.bias = 0.0  # signed lateral accel (m/s^2) or accel (m/s^2)

    def step(self, t_s: float, speed: float) -> bool:
        """Advance one 0.1 s step; True when this step's executed plan is perturbed."""
        c = self.cfg
        if not c.enabled:
            return False
        active = self.intervals.step(t_s, speed)
        if self.intervals.just_started:  # a new interval: draw its kind and bias
            lateral = self.rng.random() < c.lateral_probability
            self.kind = "lateral" if lateral else "longitudinal"
            rng_ = c.lateral_accel_mps2 if lateral else c.longitudinal_accel_mps2
            self.bias = float(self.rng.uniform(*rng_)) * (1.0 if self.rng.random() < 0.5 else -1.0)
        return active

    def apply(self, plan: Trajectory, v0: float) -> Trajectory:
        """The executed plan: the expert's controls plus the bias, re-integrated (so it stays
        dynamically feasible and within the control clamps)."""
        accel = plan.accel.copy()
        curv = plan.curvature.copy()
        if self.kind == "lateral":
            speed = np.maximum(np.concatenate([[v0], plan.speed[:-1]]), self.cfg.speed_floor_mps)
            curv = curv + self.bias / speed**2
        else:
            accel = accel + self.bias
        accel = np.clip(accel, -MAX_ABS_ACCEL_MPS2, MAX_ABS_ACCEL_MPS2)
        curv = np.clip(curv, -MAX_ABS_CURVATURE_PER_M, MAX_ABS_CURVATURE_PER_M)
        return Trajectory.from_controls(accel, curv, v0)


# ---- one episode ------------------------------------------------------------------------------
@dataclass
class CollectTask:
    """One executor item (picklable)."""

    scenario: ScenarioSpec
    config: CollectConfig
    out_dir: str
    simulator_factory: Callable[[SimConfig], Any] | None = None
    planner_factory: Callable[[], Planner] | None = None
    learner_factory: Callable[[], Planner] | None = None


_PLANNERS: dict[str, Planner] = {}
_RIGS: dict[str, SensorRig] = {}


def _cached_planner(name: str, options: dict[str, Any]) -> Planner:
    """One planner per (name, options) per worker process (a VLA loads its checkpoint once)."""
    key = name + json.dumps(to_dict(options), sort_keys=True)
    if key not in _PLANNERS:
        from planner.planners import make_planner

        _PLANNERS[key] = make_planner(name, **options)
    return _PLANNERS[key]


def _planner_for(task: CollectTask) -> Planner:
    if task.planner_factory is not None:
        return task.planner_factory()
    return _cached_planner(task.config.planner, task.config.planner_options)


def _learner_for(task: CollectTask) -> Planner | None:
    if not task.config.learner.enabled:
        return None
    if task.learner_factory is not None:
        return task.learner_factory()
    learner = _cached_planner(task.config.learner.planner, task.config.learner.planner_options)
    if learner.privileged:
        raise UserError(
            f"learner.planner={task.config.learner.planner!r} is privileged (it sees ground "
            "truth): the learner must be a sensor-input planner such as vla"
        )
    return learner


def _rig_for(cfg: SensorRigConfig) -> SensorRig:
    key = json.dumps(to_dict(cfg), sort_keys=True)
    if key not in _RIGS:
        _RIGS.clear()
        _RIGS[key] = SensorRig(cfg)
    return _RIGS[key]


def shard_path(spec: ScenarioSpec) -> str:
    """Shard path relative to the dataset folder."""
    return f"{shards.SHARDS_DIR}/{spec.family}/{spec.family}-{spec.seed}.tar"


def crop_map(map_data: MapData, x: float, y: float, radius_m: float) -> MapData:
    """The lanes (whole) and stop lines with a point within `radius_m` of (x, y)."""
    r2 = radius_m * radius_m
    p = np.array([x, y])

    def near(points: np.ndarray) -> bool:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return bool(len(pts)) and float(((pts - p) ** 2).sum(axis=1).min()) <= r2

    return MapData(
        lanes={k: ln for k, ln in map_data.lanes.items() if near(ln.centerline)},
        stop_lines={k: sl for k, sl in map_data.stop_lines.items() if near(sl.points)},
        name=map_data.name,
    )


def _future_rows(
    scenes: list[Scene], outputs: list[PlannerOutput], perturbed: list[bool], i: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """(64, 7) world-frame future of step i, its validity mask and where it came from."""
    known = scenes[i + 1 : i + 1 + PLAN_STEPS]
    window_noisy = any(perturbed[i : i + PLAN_STEPS])
    ego = scenes[i].ego
    if window_noisy:
        plan = outputs[i].trajectory
        world = plan.to_world(ego)
        rows = np.zeros((PLAN_STEPS, 7))
        rows[:, EGO_T] = ego.t + plan.times
        rows[:, [EGO_X, EGO_Y, EGO_YAW]] = world
        rows[:, 4] = plan.data[:, TRAJ_SPEED]
        rows[:, 5] = plan.data[:, TRAJ_ACCEL]
        rows[:, 6] = plan.data[:, TRAJ_CURV]
        return rows, np.ones(PLAN_STEPS, bool), "expert_plan"
    rows = np.stack([s.ego.as_row() for s in known]) if known else np.zeros((0, 7))
    valid = np.zeros(PLAN_STEPS, bool)
    valid[: len(rows)] = True
    if len(rows) < PLAN_STEPS:
        # past the episode's end: constant speed and heading from the last known pose
        last = rows[-1] if len(rows) else ego.as_row()
        k = np.arange(1, PLAN_STEPS - len(rows) + 1)
        pad = np.repeat(last[None], len(k), axis=0)
        pad[:, EGO_T] = last[EGO_T] + k * PLAN_DT_S
        d = last[4] * k * PLAN_DT_S
        pad[:, EGO_X] = last[EGO_X] + d * math.cos(last[EGO_YAW])
        pad[:, EGO_Y] = last[EGO_Y] + d * math.sin(last[EGO_YAW])
        pad[:, 5] = pad[:, 6] = 0.0
        rows = np.concatenate([rows, pad], axis=0)
    return rows, valid, "executed"


def _agent_futures(scenes: list[Scene], i: int) -> dict[str, np.ndarray]:
    """id -> (64, 5) t, x, y, yaw, speed (world), NaN where the agent is not in the Scene."""
    ids = [a.id for a in scenes[i].agents]
    out = {aid: np.full((PLAN_STEPS, 5), np.nan) for aid in ids}
    for k, s in enumerate(scenes[i + 1 : i + 1 + PLAN_STEPS]):
        for a in s.agents:
            if a.id in out:
                out[a.id][k] = (s.timestamp, a.x, a.y, a.yaw, a.speed)
    return out


def _cameras(
    rig: SensorRig,
    scenes: list[Scene],
    i: int,
    cache: dict[int, np.ndarray],
    seed: int,
    prune: bool = True,
) -> np.ndarray:
    """(N_cam, T, H, W, 3): frames i-T+1..i (the oldest repeated at an episode's start).
    `cache` keeps rendered frames by step; `prune` drops those before i-T+1 (callers walking
    forward once), False keeps them for a later pass over the same episode."""
    t = rig.config.frames
    if rig.config.randomization.enabled:
        return rig.render(scenes[i], scenes[max(0, i - t + 1) : i], seed=seed)
    idx = [max(0, j) for j in range(i - t + 1, i + 1)]
    for j in idx:
        if j not in cache:
            cache[j] = rig.render_frame(scenes[j])
    for j in [j for j in cache if prune and j < i - t + 1]:
        del cache[j]
    return np.stack([cache[j] for j in idx], axis=1)


def _learner_plan(
    learner: Planner, rig: SensorRig, scenes: list[Scene], i: int, cache: dict[int, np.ndarray]
) -> Trajectory:
    """The learner's plan at step i from sensor input only: the rendered camera frames (as
    the closed-loop runner and the dataset give them), the ego history and the route. The
    frames stay in `cache` for the episode's samples (rendered once)."""
    inp = build_planner_input(scenes[i])
    if learner.uses_cameras:
        cams = _cameras(rig, scenes, i, cache, seed=i, prune=False)
        inp = dataclasses.replace(
            inp, cameras=cams, camera_names=tuple(rig.camera_names), camera_source="rendered"
        )
    plan = learner.plan(inp).trajectory
    plan.validate()
    return plan


def collect_episode(task: CollectTask) -> dict[str, Any]:
    """Simulate one episode with perturbations, cut its samples and write its shard.
    Returns the JSONL record (counts the dataset card is built from)."""
    started, cpu_started = time.perf_counter(), time.process_time()
    spec, cfg = task.scenario, task.config
    if task.simulator_factory is not None:
        simulator = task.simulator_factory(cfg.sim)
    else:
        from sim_eval.runner import default_simulator_factory

        simulator = default_simulator_factory(cfg.sim)
    planner = _planner_for(task)
    planner.reset()
    perturber = Perturber(cfg.perturbation, spec.family, spec.seed)
    learner = _learner_for(task)
    rig = _rig_for(cfg.sensors)
    if learner is not None:
        learner.reset()
        learner_rng = np.random.default_rng(
            [cfg.learner.seed, zlib.crc32(spec.family.encode()), int(spec.seed), 1]
        )
        learner_turns = Intervals(cfg.learner, learner_rng)
    scene = simulator.reset(spec, spec.seed)
    scenes, outputs, perturbed, kinds = [scene], [], [], []
    termination, failure = "time_limit", None
    max_steps = int(math.ceil(spec.duration_s / PLAN_DT_S)) + 1
    learner_cams: dict[int, np.ndarray] = {}
    t_sim = time.perf_counter()
    for step in range(max_steps):
        try:
            out = call_planner(planner, build_planner_input(scene), scene)
            out.trajectory.validate()
        except Exception as exc:  # noqa: BLE001 - a planner failure ends this episode only
            termination, failure = "planner_failed", f"{type(exc).__name__}: {exc}"
            break
        driving = learner is not None and learner_turns.step(scene.timestamp, scene.ego.speed)
        noisy = not driving and perturber.step(scene.timestamp, scene.ego.speed)
        executed = perturber.apply(out.trajectory, scene.ego.speed) if noisy else out.trajectory
        if driving:
            assert learner is not None
            try:
                executed = _learner_plan(learner, rig, scenes, step, learner_cams)
            except Exception as exc:  # noqa: BLE001 - the learner failing ends this episode
                termination, failure = "learner_failed", f"{type(exc).__name__}: {exc}"
                break
        outputs.append(out)
        perturbed.append(bool(noisy or driving))
        kinds.append("learner" if driving else (perturber.kind if noisy else None))
        scene = simulator.step(executed)
        scenes.append(scene)
        if simulator.info.done:
            termination = {"ego_collision": "collision"}.get(
                simulator.info.reason, simulator.info.reason
            )
            break
    t_sim = time.perf_counter() - t_sim

    split = shards.split_of(spec.family, spec.seed, cfg.split_fractions)
    lon: Counter[str] = Counter()
    lat: Counter[str] = Counter()
    pairs: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    members: list[dict[str, bytes]] = []
    cam_cache = learner_cams  # frames the learner already saw are not rendered again
    label_rng = np.random.default_rng([cfg.label_seed, zlib.crc32(spec.family.encode()), spec.seed])
    min_future = int(round(cfg.min_future_s / PLAN_DT_S))
    collision_cut = len(outputs)
    if termination == "collision":
        collision_cut = len(outputs) - int(round(cfg.skip_before_collision_s / PLAN_DT_S))
    for i in range(0, len(outputs), cfg.stride_steps):
        out, scene = outputs[i], scenes[i]
        # With a learner, samples labelled by the expert's plan (their window holds learner or
        # perturbed steps) are kept at the episode's end and before the learner's collision:
        # they are what DAgger is for (the expert's plan there is a valid label; the executed
        # future, which ran into the collision, is not).
        keep = learner is not None and any(perturbed[i : i + PLAN_STEPS])
        if len(scenes) - 1 - i < min_future and not keep:
            skipped["short_future"] += 1
            continue
        if i >= collision_cut and not keep:
            skipped["before_collision"] += 1
            continue
        if out.decision is None:
            skipped["no_decision"] += 1
            continue
        coc = coc_label(out.decision, scene, out.trajectory, label_rng, cfg.coc)
        if coc.dropped_factors:
            labels["dropped_factor"] += len(coc.dropped_factors)
        if "no_verified_factor" in coc.flags:
            labels["no_verified_factor"] += 1
        if not coc.valid and cfg.invalid_labels == "skip":
            skipped["inconsistent_label"] += 1
            continue
        labels["valid" if coc.valid else "inconsistent_flagged"] += 1
        future, valid, source = _future_rows(scenes, outputs, perturbed, i)
        ego = scene.ego
        xy = world_to_ego_xy(future[:, [EGO_X, EGO_Y]], ego)
        yaw = (future[:, EGO_YAW] - ego.yaw + math.pi) % (2 * math.pi) - math.pi
        accel, curv = fit_controls(xy, yaw, future[:, 4], v0=ego.speed, cfg=cfg.controls)
        feats = build_planner_input(scene)
        key = f"{spec.family}-{spec.seed}-{i:04d}"
        steps_since = next((k for k in range(i + 1) if perturbed[i - k]), None)
        sample = Sample(
            scene=Scene(
                timestamp=scene.timestamp,
                ego=ego,
                ego_history=scene.ego_history,
                agents=scene.agents,
                map=crop_map(scene.map, ego.x, ego.y, cfg.map_radius_m),
                route=scene.route,
                traffic_lights=scene.traffic_lights,
                metadata=scene.metadata,
            ),
            future_ego=future,
            future_valid=valid,
            agent_futures=_agent_futures(scenes, i),
            controls=np.stack([accel, curv], axis=1),
            label={**coc.to_dict(), "expert_decision": out.decision.to_dict()},
            meta={
                "source": "highway-env",
                "family": spec.family,
                "seed": spec.seed,
                "episode": spec.key,
                "scenario": spec.name,
                "split": split,
                "step": i,
                "t_s": scene.timestamp,
                "perturbed": bool(perturbed[i]),
                "perturbation_kind": kinds[i],
                "steps_since_perturbation": steps_since,
                "future_source": source,
                "label_valid": bool(coc.valid),
            },
        )
        cams = _cameras(rig, scenes, i, cam_cache, seed=zlib.crc32(key.encode()))
        features = shards.SampleFeatures(
            cameras=cams,
            camera_names=rig.camera_names,
            camera_source="rendered",
            ego_history=feats.ego_history,
            route_xy=feats.route_xy,
            command=feats.command.value,
            speed_limit_mps=float(feats.speed_limit_mps),
        )
        members.append(
            shards.encode_sample(
                key,
                sample,
                features,
                expert_plan=out.trajectory.data,
                image_format=cfg.image_format,
                jpeg_quality=cfg.jpeg_quality,
            )
        )
        d = coc.decision
        lon[d.longitudinal.value] += 1
        lat[d.lateral.value] += 1
        pairs[f"{d.longitudinal.value}+{d.lateral.value}"] += 1
        sources[source] += 1
    rel = shard_path(spec)
    written = shards.write_shard(
        Path(task.out_dir) / rel,
        shards.encode_episode(scenes[0].map, scenes[0].route),
        members,
        {"episode": spec.key, "family": spec.family, "seed": spec.seed, "split": split},
    )
    return {
        "status": "ok",
        "family": spec.family,
        "seed": spec.seed,
        "split": split,
        "shard": rel,
        "n_samples": written["n_samples"],
        "bytes": written["bytes"],
        "sha256": written["sha256"],
        "steps": len(outputs),
        "perturbed_steps": int(sum(perturbed)),
        "learner_steps": sum(k == "learner" for k in kinds),
        "termination": termination,
        "failure": failure,
        "longitudinal": dict(lon),
        "lateral": dict(lat),
        "pairs": dict(pairs),
        "labels": dict(labels),
        "skipped": dict(skipped),
        "future_source": dict(sources),
        "sim_s": t_sim,
        "wall_s": time.perf_counter() - started,
        "cpu_s": time.process_time() - cpu_started,  # this process only (1 BLAS thread)
    }


def run_collect_task(task: CollectTask) -> dict[str, Any]:
    """Executor entry: a crash becomes a record with status "error" (retried on resume).

    BLAS runs single-threaded here: the control fit solves many small (128 x 128) systems,
    which multi-threaded OpenBLAS made 8x slower on the 2-core machine (measured: 4.5 ms
    vs 0.53 ms a solve), and episode workers already use every core."""
    from threadpoolctl import threadpool_limits

    try:
        with threadpool_limits(limits=1):
            return collect_episode(task)
    except Exception as exc:  # noqa: BLE001 - recorded; the collection goes on
        log.warning("episode %s errored: %s: %s", task.scenario.key, type(exc).__name__, exc)
        return {
            "status": "error",
            "family": task.scenario.family,
            "seed": task.scenario.seed,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=8),
        }


# ---- the dataset folder -----------------------------------------------------------------------
def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def build_manifest(cfg: CollectConfig, specs: list[ScenarioSpec]) -> dict[str, Any]:
    """What makes two collections mixable: the whole config except the output folder and
    the episode selection (`episodes_per_family`, `seeds`), and the scenario parameters of
    each family. So a dataset can grow (a larger `episodes_per_family` into the same folder
    runs only the new episodes), but never mixes samples made with other settings."""
    data = to_dict(cfg)
    for key in ("output_dir", "episodes_per_family", "seeds", "allow_evaluation_seeds"):
        data.pop(key, None)
    if not cfg.learner.enabled:  # expert-only collections keep the digest they had before
        data.pop("learner", None)
    return {
        "version": MANIFEST_VERSION,
        "format_version": shards.FORMAT_VERSION,
        "suite": cfg.suite,
        "config_digest": _digest(data),
        "family_params": {s.family: _digest(to_dict(s.params)) for s in specs},
    }


def check_manifest(out: Path, manifest: dict[str, Any]) -> None:
    """Refuse to mix samples of another suite or config into `out`."""
    path = out / MANIFEST_FILE
    if not path.exists():
        if (out / EPISODES_FILE).exists():
            raise UserError(
                f"{out} holds {EPISODES_FILE} but no {MANIFEST_FILE}: choose a new --out folder"
            )
        return
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}): choose a new --out folder") from None
    diffs = [k for k in manifest if k != "family_params" and old.get(k) != manifest[k]]
    # a family's scenario parameters must agree where both collections have the family
    old_params = old.get("family_params") or {}
    changed = sorted(
        f for f, d in manifest.get("family_params", {}).items() if old_params.get(f, d) != d
    )
    if changed:
        diffs.append(f"scenario parameters of {changed}")
    if diffs:
        raise UserError(
            f"dataset folder {out} was collected with another {', '.join(diffs)}: use a new "
            "--out folder (re-running the identical command into the same folder resumes it)"
        )


def _git_revision() -> str | None:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return rev.stdout.strip() or None


@dataclass
class CollectResult:
    out_dir: Path
    records: list[dict[str, Any]]
    card: dict[str, Any]


def collect(
    cfg: CollectConfig,
    out_dir: str | Path,
    *,
    workers: int = 1,
    executor: str = "local",
    progress: Callable[[int, int], None] | None = None,
    simulator_factory: Callable[[SimConfig], Any] | None = None,
    planner_factory: Callable[[], Planner] | None = None,
    specs: list[ScenarioSpec] | None = None,
    learner_factory: Callable[[], Planner] | None = None,
) -> CollectResult:
    """Collect every episode not yet in `out_dir`, then write index.json and the card.
    `specs` replaces the config's suite selection (tests, custom episode lists)."""
    specs = select_episodes(cfg) if specs is None else list(specs)
    if not specs:
        raise UserError(f"suite {cfg.suite!r} selects no episodes")
    if cfg.learner.enabled and learner_factory is None:
        # a wrong learner (unknown name, missing or corrupt checkpoint) fails here, once, and
        # not as an error record per episode
        _learner_for(CollectTask(specs[0], cfg, str(out_dir)))
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    manifest = build_manifest(cfg, specs)
    check_manifest(out, manifest)
    if (out / MANIFEST_FILE).is_file():  # keep the families of earlier collections
        old = json.loads((out / MANIFEST_FILE).read_text()).get("family_params") or {}
        manifest["family_params"] = {**old, **manifest["family_params"]}
    atomic_write_json(out / MANIFEST_FILE, manifest)
    save_config(cfg, out / CONFIG_FILE)
    results = JsonlResults(out / EPISODES_FILE)
    old = results.records()
    keep = [r for r in old if r.get("status") == "ok" and (out / r.get("shard", "")).is_file()]
    if len(keep) != len(old):  # errored episodes, or shards deleted since: redo them
        log.info("redoing %d episode(s) that errored or lost their shard", len(old) - len(keep))
        atomic_write_text(results.path, "".join(dumps(r) + "\n" for r in keep))
    tasks = [
        CollectTask(s, cfg, str(out), simulator_factory, planner_factory, learner_factory)
        for s in specs
    ]
    started = time.perf_counter()
    records = run_resumable(
        run_collect_task,
        tasks,
        key=lambda t: t.scenario.key,
        results=results,
        executor=make_executor(executor, workers),
        progress=progress,
    )
    wall = time.perf_counter() - started
    ok = [r for r in records if r.get("status") == "ok"]
    shard_rows = [
        {
            "path": r["shard"],
            "episode": r["key"],
            "family": r["family"],
            "seed": r["seed"],
            "split": r["split"],
            "n_samples": r["n_samples"],
            "bytes": r["bytes"],
            "sha256": r["sha256"],
        }
        for r in ok
    ]
    shards.write_index(
        out, shard_rows, {"suite": cfg.suite, "config_digest": manifest["config_digest"]}
    )
    rig = cfg.sensors
    card = shards.build_card(
        records,
        name=out.name,
        disk_bytes=sum(r["bytes"] for r in ok),
        extra={
            "suite": cfg.suite,
            "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "collection_wall_s": round(wall, 1),
            "workers": workers,
            "git_revision": _git_revision(),
            "config": {
                "episodes_per_family": cfg.episodes_per_family,
                "stride_steps": cfg.stride_steps,
                "min_future_s": cfg.min_future_s,
                "image_format": cfg.image_format,
                "cameras": len(rig.cameras),
                "frames": rig.frames,
                "resolution": f"{rig.cameras[0].width_px}x{rig.cameras[0].height_px}",
                "perturbation": cfg.perturbation.enabled,
                "learner": cfg.learner.planner or None,
                "invalid_labels": cfg.invalid_labels,
            },
            "config_digest": manifest["config_digest"],
        },
    )
    shards.write_card(out, card)
    return CollectResult(out, records, card)


__all__ = [
    "CollectConfig",
    "CollectResult",
    "LearnerConfig",
    "PerturbationConfig",
    "collect",
    "collect_episode",
    "load_collect_config",
    "select_episodes",
]


# ---- command line -------------------------------------------------------------------------------


def collect_command(
    suite: str | None,
    out: Path | None,
    seeds: str | None,
    workers: int,
    executor: str,
    config: Path | None,
    overrides: list[str],
) -> CollectResult:
    """`cocdrive data collect`: build the config, collect with a progress bar, print the card."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from sim_eval.scenarios import parse_seeds

    extra = [f"suite={suite}"] if suite else []
    cfg = load_collect_config(config, [*extra, *overrides])
    if seeds:
        cfg.seeds = parse_seeds(seeds)
    if workers < 1:
        raise UserError(f"--workers {workers}: must be at least 1")
    if executor not in ("local", "ray"):
        raise UserError(f"--executor {executor!r}: valid executors are local, ray")
    out_dir = Path(out if out is not None else cfg.output_dir).expanduser()
    bar = Progress(
        TextColumn("[bold]collect {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    task = bar.add_task(f"{cfg.suite} -> {out_dir}", total=None)
    t0 = time.perf_counter()

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)
        # one log line per ~5 % (progress in a log file when stderr is not a terminal)
        if total and (done == total or done % max(1, total // 20) == 0):
            log.info("collected %d / %d episodes (%.0f s)", done, total, time.perf_counter() - t0)

    with bar:
        result = collect(cfg, out_dir, workers=workers, executor=executor, progress=update)
    from planner.data.cli import print_card

    print_card(result.card, Console())
    Console().print(f"dataset: {out_dir} (card: {out_dir / shards.CARD_MD})")
    return result
