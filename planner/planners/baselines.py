"""Simple planners: constant velocity and CTRA (from the ego history alone) and IDM lane
keeping (privileged: it reads the lane and the lead vehicle from the `Scene`).

All three emit controls (accel, curvature) and build the plan with `Trajectory.from_controls`,
so every plan is dynamically feasible by construction. Behaviour numbers live in the config
dataclasses below; their YAML defaults are `configs/planners/baselines.yaml` (const-vel, CTRA)
and `configs/planners/idm.yaml` (IDM). Every factory takes `config=`, `config_path=`,
`overrides=["key.sub=value", ...]` and keyword options that override single keys.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from planner.base import Planner, PrivilegedPlanner
from planner.config import ConfigError, apply_overrides, from_dict, load_config, to_dict
from planner.geometry import polyline_arclength, project_to_polyline
from planner.paths import config_path
from planner.types import (
    EGO_CURV,
    EGO_SPEED,
    EGO_T,
    EGO_YAW,
    MAX_ABS_ACCEL_MPS2,
    MAX_ABS_CURVATURE_PER_M,
    PLAN_DT_S,
    PLAN_STEPS,
    Agent,
    CausalFactor,
    CausalFactorKind,
    Decision,
    EgoState,
    Lane,
    LateralDecision,
    LongitudinalDecision,
    PlannerInput,
    PlannerOutput,
    Scene,
    Side,
    Trajectory,
    wrap_angle,
)

log = logging.getLogger(__name__)

# configs/ at the repository root (absent in a non-editable install: the dataclass defaults,
# which tests keep equal to the YAML files, are used then).
CONFIG_DIR = config_path("planners")
BASELINES_CONFIG_PATH = CONFIG_DIR / "baselines.yaml"
IDM_CONFIG_PATH = CONFIG_DIR / "idm.yaml"

C = TypeVar("C")


# ---- configs ------------------------------------------------------------------------------------
def _check_control_limits(owner: str, accel_mps2: float, curvature_per_m: float) -> None:
    if not 0 < accel_mps2 <= MAX_ABS_ACCEL_MPS2:
        raise ValueError(
            f"{owner}: max_abs_accel_mps2 = {accel_mps2} must be in (0, {MAX_ABS_ACCEL_MPS2}]"
        )
    if not 0 < curvature_per_m <= MAX_ABS_CURVATURE_PER_M:
        raise ValueError(
            f"{owner}: max_abs_curvature_per_m = {curvature_per_m} must be in "
            f"(0, {MAX_ABS_CURVATURE_PER_M}]"
        )


@dataclass
class ConstantVelocityConfig:
    # The speed is the median of the measured speeds over this last window (robust to one
    # glitchy odometry sample).
    speed_window_s: float = 0.3
    max_speed_mps: float = 40.0  # plans never exceed this (a faulty odometry speed is capped)


@dataclass
class CTRAConfig:
    # Acceleration and yaw rate are Theil-Sen slopes of speed and yaw over this last window
    # (a robust line fit: a few bad samples do not move it).
    fit_window_s: float = 1.0
    max_abs_accel_mps2: float = MAX_ABS_ACCEL_MPS2  # clamp of the extrapolated acceleration
    max_abs_curvature_per_m: float = MAX_ABS_CURVATURE_PER_M  # clamp of yaw_rate / speed
    max_speed_mps: float = 40.0  # extrapolated acceleration stops here
    # Below this speed yaw_rate / speed is ill-conditioned: the measured curvature is held.
    min_speed_for_yaw_rate_mps: float = 0.5

    def __post_init__(self) -> None:
        _check_control_limits("ctra", self.max_abs_accel_mps2, self.max_abs_curvature_per_m)


@dataclass
class BaselinesConfig:
    """`configs/planners/baselines.yaml`: one section per history-only baseline."""

    const_vel: ConstantVelocityConfig = field(default_factory=ConstantVelocityConfig)
    ctra: CTRAConfig = field(default_factory=CTRAConfig)


@dataclass
class IDMConfig:
    """Intelligent Driver Model (Treiber, Hennecke & Helbing 2000) parameters."""

    max_accel_mps2: float = 1.5  # a: maximum acceleration
    comfortable_decel_mps2: float = 2.0  # b: comfortable deceleration
    time_headway_s: float = 1.5  # T: desired time gap to the lead
    min_gap_m: float = 2.0  # s0: bumper-to-bumper gap at standstill
    accel_exponent: float = 4.0  # delta: how sharply acceleration fades near the desired speed
    max_decel_mps2: float = 8.0  # hard clamp on commanded braking (emergency stop)

    def __post_init__(self) -> None:
        for name in ("max_accel_mps2", "comfortable_decel_mps2", "accel_exponent"):
            if getattr(self, name) <= 0:
                raise ValueError(f"idm.{name} must be positive, got {getattr(self, name)}")
        if self.time_headway_s < 0 or self.min_gap_m < 0:
            raise ValueError("idm.time_headway_s and idm.min_gap_m must be >= 0")
        if not 0 < self.max_decel_mps2 <= MAX_ABS_ACCEL_MPS2:
            raise ValueError(
                f"idm.max_decel_mps2 = {self.max_decel_mps2} must be in (0, {MAX_ABS_ACCEL_MPS2}]"
            )
        if self.max_accel_mps2 > MAX_ABS_ACCEL_MPS2:
            raise ValueError(f"idm.max_accel_mps2 must be <= {MAX_ABS_ACCEL_MPS2}")


@dataclass
class PurePursuitConfig:
    """Look-ahead distance = clip(min + time * speed, min, max), measured from the rear axle."""

    min_lookahead_m: float = 4.0
    lookahead_time_s: float = 0.8
    max_lookahead_m: float = 30.0
    max_abs_curvature_per_m: float = MAX_ABS_CURVATURE_PER_M

    def __post_init__(self) -> None:
        if not 0 < self.min_lookahead_m <= self.max_lookahead_m:
            raise ValueError("pure_pursuit: need 0 < min_lookahead_m <= max_lookahead_m")
        _check_control_limits("pure_pursuit", MAX_ABS_ACCEL_MPS2, self.max_abs_curvature_per_m)


@dataclass
class IDMLaneKeepingConfig:
    """`configs/planners/idm.yaml`."""

    idm: IDMConfig = field(default_factory=IDMConfig)
    pure_pursuit: PurePursuitConfig = field(default_factory=PurePursuitConfig)
    speed_limit_factor: float = 1.0  # desired speed = factor x the lane's speed limit
    max_speed_mps: float = 40.0  # and never more than this
    # The ego's lane: nearest centerline within this distance of the rear axle whose heading
    # is within max_heading_error_rad of the ego's.
    lane_search_radius_m: float = 5.0
    max_heading_error_rad: float = 1.0
    # A lane on the route wins over a nearer one when it is at most this much farther away
    # (where lanes overlap: forks, merges, lane ends).
    route_preference_m: float = 1.0
    # An agent is in the ego's path when its centre lies within ego half width + its half
    # width + this margin of the path's centerline.
    lateral_margin_m: float = 0.3
    path_extra_m: float = 30.0  # path length beyond the farthest the ego can get in the horizon
    # The lead "causes" the decision (lead-obstacle following) when its IDM interaction term
    # lowers the commanded acceleration at t0 by at least this much.
    lead_influence_mps2: float = 0.2
    # With no lane near the ego the planner stops straight ahead at this deceleration.
    fallback_decel_mps2: float = 2.0

    def __post_init__(self) -> None:
        if self.speed_limit_factor <= 0:
            raise ValueError(f"speed_limit_factor must be positive, got {self.speed_limit_factor}")
        if not 0 < self.fallback_decel_mps2 <= MAX_ABS_ACCEL_MPS2:
            raise ValueError(f"fallback_decel_mps2 must be in (0, {MAX_ABS_ACCEL_MPS2}]")


def _deep_update(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_update(out[key], value)
        else:
            out[key] = value
    return out


def _with_options(cfg: C, options: dict[str, Any]) -> C:
    """Apply keyword options (nested sections as dicts) on top of a config; unknown keys are
    ConfigErrors naming the closest valid key."""
    if not options:
        return cfg
    options = {k: to_dict(v) if dataclasses.is_dataclass(v) else v for k, v in options.items()}
    return from_dict(type(cfg), _deep_update(to_dict(cfg), options))


def _resolve_config(
    cls: type[C],
    default_path: Path,
    config: C | None,
    config_path: str | Path | None,
    overrides: list[str] | tuple[str, ...],
    options: dict[str, Any],
    section: str | None = None,
) -> C:
    """config object, else YAML file (default: the repo's configs/planners file), then
    `key.sub=value` overrides, then keyword options."""
    if config is not None:
        if not isinstance(config, cls):
            raise ConfigError(f"config must be a {cls.__name__}, got {type(config).__name__}")
        if overrides:
            config = from_dict(cls, apply_overrides(to_dict(config), list(overrides)))
        return _with_options(config, options)
    path = Path(config_path) if config_path is not None else default_path
    if config_path is None and not path.is_file():
        log.debug("%s not found: using the built-in defaults of %s", path, cls.__name__)
        path = None
    if section is None:
        cfg = load_config(cls, path, overrides)
    else:
        outer = load_config(BaselinesConfig, path, [f"{section}.{o}" for o in overrides])
        cfg = getattr(outer, section)
    return _with_options(cfg, options)


def _clamp(value: float, low: float, high: float) -> float:
    """Scalar clip (np.clip costs microseconds per call in the per-step loops)."""
    return min(max(float(value), low), high)


def _timed_output(start: float, trajectory: Trajectory, **kwargs: Any) -> PlannerOutput:
    return PlannerOutput(
        trajectory=trajectory,
        timings_ms={"plan": (time.perf_counter() - start) * 1e3},
        **kwargs,
    )


def _window(hist: np.ndarray, window_s: float) -> np.ndarray:
    """Rows of an ego history within `window_s` of its last row (at least the last row)."""
    t = hist[:, EGO_T]
    return hist[t >= t[-1] - window_s - 1e-6]


# ---- history-only baselines -----------------------------------------------------------------------
class ConstantVelocityPlanner(Planner):
    """Straight ahead at the current speed (the ego frame's x axis is the heading at t0)."""

    name: ClassVar[str] = "const-vel"
    uses_cameras: ClassVar[bool] = False

    def __init__(
        self,
        config: ConstantVelocityConfig | None = None,
        *,
        config_path: str | Path | None = None,
        overrides: list[str] | tuple[str, ...] = (),
        **options: Any,
    ):
        self.config = _resolve_config(
            ConstantVelocityConfig,
            BASELINES_CONFIG_PATH,
            config,
            config_path,
            overrides,
            options,
            section="const_vel",
        )

    def plan(self, inp: PlannerInput) -> PlannerOutput:
        start = time.perf_counter()
        recent = _window(inp.ego_history, self.config.speed_window_s)
        speed = float(np.clip(np.median(recent[:, EGO_SPEED]), 0.0, self.config.max_speed_mps))
        zeros = np.zeros(PLAN_STEPS)
        return _timed_output(start, Trajectory.from_controls(zeros, zeros, speed))


@dataclass(frozen=True)
class MotionEstimate:
    """What CTRA extrapolates, estimated from the ego history (ego frame at t0)."""

    speed_mps: float
    accel_mps2: float
    yaw_rate_radps: float
    curvature_per_m: float  # measured at t0; held below min_speed_for_yaw_rate_mps


def estimate_motion(history: np.ndarray, fit_window_s: float) -> MotionEstimate:
    """Robust (Theil-Sen) slopes of speed and unwrapped yaw over the last `fit_window_s` of an
    (H, 7) ego history. scipy's theilslopes is the median of pairwise slopes, so one bad
    sample cannot swing the estimate as it would a least-squares fit."""
    from scipy.stats import theilslopes

    recent = _window(history, fit_window_s)
    speed = float(max(0.0, history[-1, EGO_SPEED]))
    curvature = float(history[-1, EGO_CURV])
    if len(recent) < 2:
        return MotionEstimate(speed, 0.0, speed * curvature, curvature)
    t = recent[:, EGO_T]
    accel = float(theilslopes(recent[:, EGO_SPEED], t).slope)
    yaw = np.unwrap(recent[:, EGO_YAW])
    yaw_rate = float(theilslopes(yaw, t).slope)
    return MotionEstimate(speed, accel, yaw_rate, curvature)


class CTRAPlanner(Planner):
    """Constant turn rate and acceleration: extrapolates the ego's recent acceleration and
    yaw rate over the horizon, clamped to the control limits."""

    name: ClassVar[str] = "ctra"
    uses_cameras: ClassVar[bool] = False

    def __init__(
        self,
        config: CTRAConfig | None = None,
        *,
        config_path: str | Path | None = None,
        overrides: list[str] | tuple[str, ...] = (),
        **options: Any,
    ):
        self.config = _resolve_config(
            CTRAConfig,
            BASELINES_CONFIG_PATH,
            config,
            config_path,
            overrides,
            options,
            section="ctra",
        )

    def plan(self, inp: PlannerInput) -> PlannerOutput:
        start = time.perf_counter()
        cfg = self.config
        est = estimate_motion(inp.ego_history, cfg.fit_window_s)
        accel_cmd = float(np.clip(est.accel_mps2, -cfg.max_abs_accel_mps2, cfg.max_abs_accel_mps2))
        held_curvature = float(
            np.clip(est.curvature_per_m, -cfg.max_abs_curvature_per_m, cfg.max_abs_curvature_per_m)
        )
        accel = np.zeros(PLAN_STEPS)
        curvature = np.zeros(PLAN_STEPS)
        v = min(est.speed_mps, cfg.max_speed_mps)
        for k in range(PLAN_STEPS):
            # Stop accelerating at the speed cap (and brake down to it if above).
            a = min(accel_cmd, (cfg.max_speed_mps - v) / PLAN_DT_S)
            a = _clamp(a, -cfg.max_abs_accel_mps2, cfg.max_abs_accel_mps2)
            v_next = max(0.0, v + a * PLAN_DT_S)
            # from_controls turns by curvature * mean speed * dt per step, so this curvature
            # gives exactly the estimated yaw rate.
            v_mid = 0.5 * (v + v_next)
            if v_mid >= cfg.min_speed_for_yaw_rate_mps:
                kappa = est.yaw_rate_radps / v_mid
            else:
                kappa = held_curvature
            accel[k] = a
            curvature[k] = _clamp(kappa, -cfg.max_abs_curvature_per_m, cfg.max_abs_curvature_per_m)
            v = v_next
        v0 = min(est.speed_mps, cfg.max_speed_mps)
        return _timed_output(start, Trajectory.from_controls(accel, curvature, v0))


# ---- IDM lane keeping (privileged) ---------------------------------------------------------------
@dataclass
class LanePath:
    """The centerline the ego follows: its lane then successors, in world metres."""

    xy: np.ndarray  # (N, 2)
    s: np.ndarray  # (N,) arc length
    speed_limit_mps: np.ndarray  # (N - 1,) speed limit of each segment
    lane_ids: tuple[str, ...]

    @property
    def headings(self) -> np.ndarray:
        """(N - 1,) heading of each segment."""
        d = np.diff(self.xy, axis=0)
        return np.arctan2(d[:, 1], d[:, 0])

    def point_at(self, s: float) -> np.ndarray:
        s = _clamp(s, 0.0, float(self.s[-1]))
        i = int(min(np.searchsorted(self.s, s, side="right") - 1, len(self.s) - 2))
        u = (s - self.s[i]) / max(self.s[i + 1] - self.s[i], 1e-12)
        return self.xy[i] + u * (self.xy[i + 1] - self.xy[i])

    def segment_at(self, s: float | np.ndarray) -> np.ndarray:
        idx = np.searchsorted(self.s, s, side="right") - 1
        return np.clip(idx, 0, len(self.s) - 2)

    def project(
        self, points: np.ndarray, s_window: tuple[float, float] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(M, 2) world points -> arc length, signed lateral offset (left +) and segment index
        of the closest point. Vectorised over points and segments: (M, S) work; `s_window`
        limits the search to segments overlapping that arc-length interval (local tracking,
        which also keeps a looping path from snapping to its other side)."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        first, last = 0, len(self.s) - 1  # segment range [first, last)
        if s_window is not None:
            first = int(max(0, np.searchsorted(self.s, s_window[0], side="right") - 1))
            last = int(max(first + 1, min(last, np.searchsorted(self.s, s_window[1]) + 1)))
        a = self.xy[first:last]  # (S, 2)
        ab = self.xy[first + 1 : last + 1] - a
        len2 = np.maximum((ab**2).sum(axis=1), 1e-12)  # (S,)
        rel = pts[:, None, :] - a[None, :, :]  # (M, S, 2)
        u = np.clip((rel * ab[None]).sum(axis=2) / len2[None], 0.0, 1.0)  # (M, S)
        closest = a[None] + u[..., None] * ab[None]
        dist2 = ((closest - pts[:, None, :]) ** 2).sum(axis=2)
        seg = np.argmin(dist2, axis=1)  # (M,)
        rows = np.arange(len(pts))
        s = self.s[first + seg] + u[rows, seg] * np.sqrt(len2[seg])
        cross = ab[seg, 0] * rel[rows, seg, 1] - ab[seg, 1] * rel[rows, seg, 0]
        lateral = np.sign(cross) * np.sqrt(dist2[rows, seg])
        return s, lateral, first + seg


def _heading_along(lane: Lane, s: float) -> float:
    arc = polyline_arclength(lane.centerline)
    i = int(np.clip(np.searchsorted(arc, s, side="right") - 1, 0, len(arc) - 2))
    d = lane.centerline[i + 1] - lane.centerline[i]
    return math.atan2(d[1], d[0])


def find_ego_lane(scene: Scene, cfg: IDMLaneKeepingConfig) -> tuple[Lane, float] | None:
    """The ego's lane and the rear axle's arc length along it, or None when no lane is near.

    Candidates lie within `lane_search_radius_m` and point within `max_heading_error_rad` of
    the ego heading; the nearest wins, except that a route lane within `route_preference_m`
    of it is preferred, and a lane whose end the ego has already passed loses to one it is on."""
    ego = scene.ego
    p = np.array([ego.x, ego.y])
    route_ids = set(scene.route.lane_ids)
    candidates = []
    for lane in scene.map.lanes.values():
        if len(lane.centerline) < 2:
            continue
        s, lateral = project_to_polyline(lane.centerline, p)
        if abs(lateral) > cfg.lane_search_radius_m:
            continue
        if abs(float(wrap_angle(ego.yaw - _heading_along(lane, s)))) > cfg.max_heading_error_rad:
            continue
        past_end = s >= lane.length - 1e-6 and bool(lane.successors)
        candidates.append((past_end, abs(lateral), lane.id not in route_ids, lane, s))
    if not candidates:
        return None
    on_lane = [c for c in candidates if not c[0]] or candidates
    nearest = min(c[1] for c in on_lane)
    close = [c for c in on_lane if c[1] <= nearest + cfg.route_preference_m]
    best = min(close, key=lambda c: (c[2], c[1], c[3].id))
    return best[3], best[4]


def build_lane_path(
    scene: Scene, lane: Lane, s_ego: float, length_ahead_m: float, behind_m: float = 5.0
) -> LanePath:
    """The ego lane from `behind_m` before the rear axle, then successors (route lanes first),
    until `length_ahead_m` past the ego; a dead end is extended straight on."""
    route_ids = list(scene.route.lane_ids)
    pieces = [lane.centerline]
    limits = [np.full(len(lane.centerline) - 1, lane.speed_limit_mps)]
    ids = [lane.id]
    total = lane.length - s_ego
    current = lane
    # Bounded: a loop of lanes (roundabout) is fine, the length condition ends it.
    for _ in range(1000):
        if total >= length_ahead_m or not current.successors:
            break
        known = [sid for sid in current.successors if sid in scene.map.lanes]
        if not known:
            log.debug("lane %s has successors %s not in the map", current.id, current.successors)
            break
        on_route = [sid for sid in known if sid in route_ids]
        current = scene.map.lanes[on_route[0] if on_route else known[0]]
        pts = current.centerline
        if np.hypot(*(pts[0] - pieces[-1][-1])) < 1e-6:
            pts = pts[1:]  # successors usually start where their predecessor ends
        if len(pts) == 0:
            continue
        pieces.append(pts)
        limits.append(np.full(len(pts), current.speed_limit_mps))
        ids.append(current.id)
        total += current.length
    xy = np.concatenate(pieces, axis=0)
    limit = np.concatenate(limits)
    # Drop repeated points (zero-length segments would have no heading).
    keep = np.concatenate([[True], np.hypot(*np.diff(xy, axis=0).T) > 1e-6])
    limit = np.concatenate([[limit[0]], limit])[keep][1:]
    xy = xy[keep]
    s = polyline_arclength(xy)
    missing = s_ego + length_ahead_m - s[-1]
    if missing > 0:  # dead end or short map: carry on straight
        d = xy[-1] - xy[-2]
        xy = np.concatenate([xy, (xy[-1] + d / np.linalg.norm(d) * missing)[None]], axis=0)
        limit = np.concatenate([limit, limit[-1:]])
        s = polyline_arclength(xy)
    # Crop to [s_ego - behind_m, s_ego + length_ahead_m] so projections stay cheap.
    lo, hi = max(0.0, s_ego - behind_m), s_ego + length_ahead_m
    inner = np.flatnonzero((s > lo) & (s < hi))
    idx = np.concatenate([[max(inner[0] - 1, 0)] if len(inner) else [0], inner])
    idx = np.concatenate([idx, [min(idx[-1] + 1, len(s) - 1)]])
    idx = np.unique(idx)
    if len(idx) < 2:
        idx = np.array([0, len(s) - 1])
    seg_limit = limit[idx[:-1]]
    xy = xy[idx]
    return LanePath(xy=xy, s=polyline_arclength(xy), speed_limit_mps=seg_limit, lane_ids=tuple(ids))


@dataclass
class _LeadState:
    agent: Agent
    gap_m: float  # ego front bumper to the lead's rear, along the path
    speed_mps: float  # lead speed along the path (>= 0)


class IDMLaneKeepingPlanner(PrivilegedPlanner):
    """Keeps the ego's lane with pure pursuit and drives IDM on the nearest agent in its lane
    path (agents predicted at constant velocity), at the lane's speed limit otherwise.

    At plan step k the lead is the nearest agent whose predicted position at step k lies in
    the path ahead. So a car drifting into the lane is braked for once its prediction enters
    it, but an agent that crosses the path (a pedestrian) is seen only when it is in the
    path at the same time as the ego is near: this baseline does not yield, and it never
    changes lanes (it stops behind a blocked lane)."""

    name: ClassVar[str] = "idm"

    def __init__(
        self,
        config: IDMLaneKeepingConfig | None = None,
        *,
        config_path: str | Path | None = None,
        overrides: list[str] | tuple[str, ...] = (),
        **options: Any,
    ):
        self.config = _resolve_config(
            IDMLaneKeepingConfig, IDM_CONFIG_PATH, config, config_path, overrides, options
        )

    # -- IDM ------------------------------------------------------------------------------------
    def idm_accel(
        self, speed: float, desired: float, lead: _LeadState | None
    ) -> tuple[float, float]:
        """(commanded acceleration, interaction term in m/s^2 that the lead contributes)."""
        p = self.config.idm
        desired = max(desired, 0.1)
        if speed <= desired:
            free = p.max_accel_mps2 * (1.0 - (speed / desired) ** p.accel_exponent)
        else:
            # Above the desired speed (a lower limit ahead) plain IDM's (v/v0)^delta term
            # explodes; IIDM (Treiber & Kesting) brakes at most at the comfortable rate instead.
            exponent = p.max_accel_mps2 * p.accel_exponent / p.comfortable_decel_mps2
            free = -p.comfortable_decel_mps2 * (1.0 - (desired / speed) ** exponent)
        interaction = 0.0
        if lead is not None:
            if lead.gap_m <= 0.0:
                return -p.max_decel_mps2, p.max_decel_mps2
            dv = speed - lead.speed_mps
            dynamic = speed * p.time_headway_s + speed * dv / (
                2.0 * math.sqrt(p.max_accel_mps2 * p.comfortable_decel_mps2)
            )
            s_star = p.min_gap_m + max(0.0, dynamic)
            interaction = p.max_accel_mps2 * (s_star / lead.gap_m) ** 2
        accel = _clamp(free - interaction, -p.max_decel_mps2, p.max_accel_mps2)
        return accel, interaction

    # -- planning -------------------------------------------------------------------------------
    def plan_with_scene(self, inp: PlannerInput, scene: Scene) -> PlannerOutput:
        start = time.perf_counter()
        cfg = self.config
        ego = scene.ego
        v0 = float(np.clip(ego.speed, 0.0, cfg.max_speed_mps))
        found = find_ego_lane(scene, cfg)
        if found is None:
            log.warning(
                "idm: no lane within %.1f m of the ego at t=%.1f s: stopping straight ahead",
                cfg.lane_search_radius_m,
                scene.timestamp,
            )
            return self._fallback(start, v0, "no_lane_near_ego")
        lane, s_lane = found
        path = build_lane_path(
            scene, lane, s_lane, cfg.max_speed_mps * PLAN_STEPS * PLAN_DT_S + cfg.path_extra_m
        )
        leads = self._predict_leads(scene, path)

        accel = np.zeros(PLAN_STEPS)
        curvature = np.zeros(PLAN_STEPS)
        x, y, yaw, v = ego.x, ego.y, ego.yaw, v0
        decision: Decision | None = None
        window = None  # first step: the whole path; then near the last projection
        for k in range(PLAN_STEPS):
            s_arr, _, seg_arr = path.project(np.array([[x, y]]), window)
            s_ego, seg = float(s_arr[0]), int(seg_arr[0])
            window = (s_ego - 2.0, s_ego + 2.0 + 2.0 * cfg.max_speed_mps * PLAN_DT_S)
            kappa = self._pure_pursuit(path, s_ego, x, y, yaw, v)
            desired = min(cfg.max_speed_mps, cfg.speed_limit_factor * path.speed_limit_mps[seg])
            lead = self._lead_at(leads, k, s_ego, ego)
            a, interaction = self.idm_accel(v, desired, lead)
            if k == 0:
                decision = self._decision(lead, interaction, desired, v, path)
            accel[k], curvature[k] = a, kappa
            # Same unicycle step as Trajectory.from_controls, in the world frame.
            v_next = max(0.0, v + a * PLAN_DT_S)
            v_mid = 0.5 * (v + v_next)
            dyaw = kappa * v_mid * PLAN_DT_S
            x += v_mid * PLAN_DT_S * math.cos(yaw + 0.5 * dyaw)
            y += v_mid * PLAN_DT_S * math.sin(yaw + 0.5 * dyaw)
            yaw += dyaw
            v = v_next
        trajectory = Trajectory.from_controls(accel, curvature, v0)
        return _timed_output(start, trajectory, decision=decision)

    def _fallback(self, start: float, v0: float, reason: str) -> PlannerOutput:
        decel = self.config.fallback_decel_mps2
        accel = np.full(PLAN_STEPS, -decel)
        trajectory = Trajectory.from_controls(accel, np.zeros(PLAN_STEPS), v0)
        return _timed_output(start, trajectory, status="fallback", flags=(reason,))

    def _pure_pursuit(
        self, path: LanePath, s_ego: float, x: float, y: float, yaw: float, v: float
    ) -> float:
        """Curvature of the arc from the rear axle through the path point one look-ahead
        distance ahead: kappa = 2 * lateral / distance^2 (positive = left)."""
        pp = self.config.pure_pursuit
        lookahead = min(pp.min_lookahead_m + pp.lookahead_time_s * v, pp.max_lookahead_m)
        target = path.point_at(s_ego + lookahead)
        dx, dy = target[0] - x, target[1] - y
        lateral = -math.sin(yaw) * dx + math.cos(yaw) * dy
        dist2 = max(dx * dx + dy * dy, 1e-6)
        return float(
            _clamp(2.0 * lateral / dist2, -pp.max_abs_curvature_per_m, pp.max_abs_curvature_per_m)
        )

    def _predict_leads(self, scene: Scene, path: LanePath) -> list[dict[str, Any]]:
        """Each agent at constant velocity at the start of every plan step, projected on the
        path: arc length of its centre, its half extent along the path, its speed along the
        path, and whether it is laterally in the ego's path."""
        if not scene.agents:
            return []
        import shapely

        times = PLAN_DT_S * np.arange(PLAN_STEPS)  # (K,) start of each step
        half_ego = scene.ego.width / 2.0
        # Cheap prefilter (shapely, vectorised over agents): an agent whose straight
        # constant-velocity sweep never comes near the path cannot be in it.
        end_t = times[-1]
        sweeps = shapely.linestrings(
            [[(a.x, a.y), (a.x + a.vx * end_t + 1e-3, a.y + a.vy * end_t)] for a in scene.agents]
        )
        clearance = shapely.distance(sweeps, shapely.LineString(path.xy))
        reach = np.array([half_ego + 0.5 * math.hypot(a.length, a.width) for a in scene.agents])
        near = clearance <= reach + self.config.lateral_margin_m
        predicted = []
        for agent in (a for a, keep in zip(scene.agents, near) if keep):
            pts = np.stack([agent.x + agent.vx * times, agent.y + agent.vy * times], axis=1)
            s, lateral, seg = path.project(pts)  # (K,)
            heading = path.headings[seg]
            rel = agent.yaw - heading
            half_extent = 0.5 * (
                agent.length * np.abs(np.cos(rel)) + agent.width * np.abs(np.sin(rel))
            )
            half_width_across = 0.5 * (
                agent.length * np.abs(np.sin(rel)) + agent.width * np.abs(np.cos(rel))
            )
            in_path = np.abs(lateral) <= half_ego + half_width_across + self.config.lateral_margin_m
            in_path &= s < path.s[-1] - 1e-6  # beyond the path's end: projection is clamped
            speed_along = agent.vx * np.cos(heading) + agent.vy * np.sin(heading)
            predicted.append(
                {
                    "agent": agent,
                    "s": s,
                    "half_extent": half_extent,
                    "in_path": in_path,
                    "speed": np.maximum(speed_along, 0.0),
                }
            )
        return predicted

    @staticmethod
    def _lead_at(
        predicted: list[dict[str, Any]], k: int, s_ego: float, ego: EgoState
    ) -> _LeadState | None:
        """The nearest in-path agent ahead of the rear axle at step k."""
        front = s_ego + ego.rear_axle_to_center_m + ego.length / 2.0
        best: _LeadState | None = None
        for p in predicted:
            if not p["in_path"][k] or p["s"][k] <= s_ego:
                continue
            gap = float(p["s"][k] - p["half_extent"][k] - front)
            if best is None or gap < best.gap_m:
                best = _LeadState(p["agent"], gap, float(p["speed"][k]))
        return best

    def _decision(
        self,
        lead: _LeadState | None,
        interaction: float,
        desired: float,
        speed: float,
        path: LanePath,
    ) -> Decision:
        if lead is not None and interaction >= self.config.lead_influence_mps2:
            agent = lead.agent
            factor = CausalFactor(
                kind=CausalFactorKind.CRITICAL_OBJECT,
                description=(
                    f"{agent.agent_class.value} {agent.id} {lead.gap_m:.1f} m ahead in the ego "
                    f"lane at {lead.speed_mps:.1f} m/s"
                ),
                object_id=agent.id,
                object_class=agent.agent_class,
                side=Side.AHEAD,
                distance_m=lead.gap_m,
                relative_speed_mps=lead.speed_mps - speed,
            )
            return Decision(
                longitudinal=LongitudinalDecision.LEAD_OBSTACLE_FOLLOWING,
                lateral=LateralDecision.LANE_KEEPING,
                factors=(factor,),
                target_speed_mps=min(lead.speed_mps, desired),
            )
        factor = CausalFactor(
            kind=CausalFactorKind.SPEED_LIMIT,
            description=f"tracking {desired:.1f} m/s in lane {path.lane_ids[0]}",
        )
        return Decision(
            longitudinal=LongitudinalDecision.SET_SPEED_TRACKING,
            lateral=LateralDecision.LANE_KEEPING,
            factors=(factor,),
            target_speed_mps=desired,
        )


__all__ = [
    "BaselinesConfig",
    "CTRAConfig",
    "CTRAPlanner",
    "ConstantVelocityConfig",
    "ConstantVelocityPlanner",
    "IDMConfig",
    "IDMLaneKeepingConfig",
    "IDMLaneKeepingPlanner",
    "LanePath",
    "MotionEstimate",
    "PurePursuitConfig",
    "build_lane_path",
    "estimate_motion",
    "find_ego_lane",
]
