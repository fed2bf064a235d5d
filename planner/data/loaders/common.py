"""What every real-log loader shares: the raw log representation, resampling to 10 Hz,
masking of invalid or jumping ego samples, and cutting the log into `Scene`s and `Sample`s.

A loader (nuScenes, ScenarioNet, rosbag2) only converts its format into a `LogData`: raw
streams at whatever rate the log has, already in the project conventions (REP-103 world
frame, SI units, seconds, ego at the rear-axle centre, agents at their box centres). Everything
after that is here, so the three sources cut identical windows:

    LogData --resample_log--> ResampledLog (10 Hz grid) --scene_at / sample_at--> Scene, Sample

Why resampling is written here and not taken from a library: it is linear interpolation
(`numpy.interp`) plus the bookkeeping of which grid times are really covered by the log
(gaps, invalid samples, interpolated 2 Hz annotations) - the bookkeeping is the point.
"""

from __future__ import annotations

import abc
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from planner.config import load_config
from planner.data.sample import Sample
from planner.errors import UserError
from planner.paths import config_path
from planner.types import (
    EGO_ACCEL,
    EGO_CURV,
    EGO_HISTORY_COLUMNS,
    EGO_SPEED,
    EGO_T,
    EGO_X,
    EGO_Y,
    EGO_YAW,
    HISTORY_STEPS,
    PLAN_DT_S,
    PLAN_STEPS,
    Agent,
    AgentClass,
    Command,
    EgoState,
    MapData,
    Route,
    Scene,
    TrafficLight,
)

log = logging.getLogger(__name__)

# Columns of a resampled agent array (T, 5), as Agent.history and Sample.agent_futures.
AGENT_T, AGENT_X, AGENT_Y, AGENT_YAW, AGENT_SPEED = range(5)


# ---- errors ----------------------------------------------------------------------------------
class LogFormatError(UserError):
    """The log is not in a format a loader understands, or is internally inconsistent."""


class NoEgoTrackError(LogFormatError):
    """The log has no usable ego trajectory (no odometry topic, no SDC track, no poses)."""


class IrregularRateError(LogFormatError):
    """A stream's timestamps are too sparse or too irregular to resample to 10 Hz."""


# ---- configuration ----------------------------------------------------------------------------
@dataclass
class LoaderConfig:
    """Behaviour shared by every loader (units in the names)."""

    # Raw ego samples further apart than this are not interpolated across: the grid times
    # in between are masked invalid.
    max_ego_gap_s: float = 0.55
    # Jump detection on the raw ego track: a sample that implies a faster motion from the last
    # accepted one than this is a localisation jump and is masked.
    max_ego_speed_mps: float = 60.0
    max_ego_yaw_rate_radps: float = 3.0
    # ... or one further than this (plus 0.5 max_ego_accel_mps2 dt^2) from where the last two
    # accepted samples predict it at constant velocity.
    max_ego_jump_m: float = 1.0
    max_ego_accel_mps2: float = 10.0
    # After this long without an accepted sample, the next one starts a new segment (a real
    # relocalisation, not a single outlier).
    jump_reset_s: float = 1.0
    # Ego streams sparser than this cannot be resampled to 10 Hz meaningfully.
    min_ego_rate_hz: float = 1.9
    # Interval spread (p90 - p10) / median above which a stream is "irregular"; what to do then:
    # "flag" (record it in the metadata and resample) or "error".
    irregular_dt_tolerance: float = 0.25
    irregular_rate_policy: str = "flag"
    # Agents: raw samples up to this far apart are interpolated (nuScenes keyframes: 0.5 s).
    max_agent_gap_s: float = 0.55
    # Curvature = yaw rate / speed only above this speed (stopped vehicles have no curvature).
    curvature_speed_floor_mps: float = 0.5
    # Real camera frames per Scene (oldest first), at the 10 Hz grid, and how far a frame may
    # be from its grid time.
    camera_frames: int = 4
    camera_sync_tolerance_s: float = 0.06
    camera_cache_frames: int = 64
    # Map: lanes within this distance of the ego's path are loaded.
    map_radius_m: float = 60.0
    lane_width_m: float = 3.5  # where the source gives no width
    speed_limit_mps: float = 13.9  # where the source gives no limit (50 km/h)
    # Route: the logged path, thinned to this spacing; the command comes from the logged
    # future: lateral offset at command_horizon_s beyond +-command_lateral_threshold_m.
    route_spacing_m: float = 2.0
    command_horizon_s: float = 3.0
    command_lateral_threshold_m: float = 2.0
    # Windows: require the whole 1.6 s history to be valid, and at least this many valid
    # future rows (the rest is marked in Sample.future_valid).
    require_full_history: bool = True
    min_future_valid_steps: int = 1
    default_stride_s: float = 0.5
    # Fill Sample.controls (64 x accel, curvature fitted by planner.controls) where the whole
    # future is valid: what training on logs needs; open-loop evaluation does not.
    fit_controls: bool = False
    # The ego box (the logs rarely state it).
    ego_length_m: float = 4.9
    ego_width_m: float = 1.9
    ego_rear_axle_to_center_m: float = 1.45

    def __post_init__(self) -> None:
        if self.irregular_rate_policy not in ("flag", "error"):
            raise ValueError(
                f"irregular_rate_policy must be 'flag' or 'error', got {self.irregular_rate_policy!r}"
            )
        if self.camera_frames < 1:
            raise ValueError(f"camera_frames must be >= 1, got {self.camera_frames}")


@dataclass
class NuScenesConfig:
    version: str = ""  # "" = the one table folder under the dataroot (v1.0-mini, ...)
    cameras: tuple[str, ...] = ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT")
    # Whose ego poses make the ego track; () = every sensor's (mixed rates, flagged).
    ego_pose_channels: tuple[str, ...] = ("LIDAR_TOP",)
    lane_resolution_m: float = 1.0
    load_map: bool = True


@dataclass
class ScenarioNetConfig:
    # "auto" reads metadata.coordinate; "right" / "left" force it.
    handedness: str = "auto"
    # Where the SDC track's position is: "auto" (rear axle for nuScenes conversions, box
    # centre otherwise), "center" or "rear_axle".
    sdc_position_reference: str = "auto"


@dataclass
class RosbagConfig:
    odometry_topic: str = ""  # "" = the one nav_msgs/msg/Odometry topic in the bag
    # camera name -> topic; empty = every sensor_msgs Image / CompressedImage topic
    camera_topics: dict[str, str] = field(default_factory=dict)
    # base_link sits this far ahead of the rear axle (0 for Autoware, whose base_link is it)
    base_link_ahead_of_rear_axle_m: float = 0.0


@dataclass
class LogLoadersConfig:
    common: LoaderConfig = field(default_factory=LoaderConfig)
    nuscenes: NuScenesConfig = field(default_factory=NuScenesConfig)
    scenarionet: ScenarioNetConfig = field(default_factory=ScenarioNetConfig)
    rosbag: RosbagConfig = field(default_factory=RosbagConfig)


DEFAULT_CONFIG_PATH = config_path("data", "loaders.yaml")


def load_loaders_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> LogLoadersConfig:
    """The loaders' config: defaults, then `configs/data/loaders.yaml` (or `path`), then
    `key.sub=value` overrides."""
    if path is None and DEFAULT_CONFIG_PATH.is_file():
        path = DEFAULT_CONFIG_PATH
    return load_config(LogLoadersConfig, path, overrides)


# ---- raw log representation ---------------------------------------------------------------
@dataclass
class EgoTrack:
    """The ego as the log has it: (N,) arrays, REP-103 world frame, rear-axle centre."""

    t: np.ndarray  # s
    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray  # rad
    speed: np.ndarray | None = None  # m/s when the log measures it (odometry twist)
    valid: np.ndarray | None = None  # bool; None = all valid

    def __post_init__(self) -> None:
        self.t = np.asarray(self.t, dtype=np.float64).reshape(-1)
        n = len(self.t)
        for name in ("x", "y", "yaw"):
            arr = np.asarray(getattr(self, name), dtype=np.float64).reshape(-1)
            if arr.shape != (n,):
                raise LogFormatError(f"ego {name} has {arr.shape[0]} samples for {n} timestamps")
            setattr(self, name, arr)
        if self.speed is not None:
            self.speed = np.asarray(self.speed, dtype=np.float64).reshape(-1)
        valid = np.ones(n, bool) if self.valid is None else np.asarray(self.valid, bool)
        finite = np.isfinite(self.t) & np.isfinite(self.x) & np.isfinite(self.y)
        finite &= np.isfinite(self.yaw)
        self.valid = valid.reshape(-1) & finite


@dataclass
class AgentTrack:
    """One other road user as the log has it: (N,) arrays at its own timestamps, box centre."""

    id: str
    agent_class: AgentClass
    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray
    vx: np.ndarray
    vy: np.ndarray
    length: float
    width: float
    height: float = 1.5
    valid: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.t = np.asarray(self.t, dtype=np.float64).reshape(-1)
        for name in ("x", "y", "yaw", "vx", "vy"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float64).reshape(-1))
        n = len(self.t)
        valid = np.ones(n, bool) if self.valid is None else np.asarray(self.valid, bool)
        self.valid = valid.reshape(-1) & np.isfinite(self.x) & np.isfinite(self.y)


@dataclass
class LightTrack:
    """A traffic light's state over time (ScenarioNet dynamic map states)."""

    id: str
    t: np.ndarray
    states: list[Any]  # LightState per timestamp
    lane_ids: tuple[str, ...] = ()
    stop_line_id: str | None = None


@dataclass
class CameraStream:
    """One camera: frame timestamps (s) and a loader returning an RGB (H, W, 3) uint8 frame."""

    name: str
    t: np.ndarray
    load: Callable[[int], np.ndarray]

    def __post_init__(self) -> None:
        self.t = np.asarray(self.t, dtype=np.float64).reshape(-1)
        order = np.argsort(self.t, kind="stable")
        if not np.array_equal(order, np.arange(len(order))):
            raise LogFormatError(f"camera {self.name!r}: frame timestamps are not sorted")


@dataclass
class LogData:
    """One log (a nuScenes scene, a ScenarioNet scenario, a bag), converted but not resampled."""

    log_id: str
    source: str  # "nuscenes" | "scenarionet" | "rosbag2"
    ego: EgoTrack
    agents: list[AgentTrack] = field(default_factory=list)
    map: MapData = field(default_factory=MapData)
    cameras: list[CameraStream] = field(default_factory=list)
    lights: list[LightTrack] = field(default_factory=list)
    # Agents whose raw rate is below 10 Hz (nuScenes 2 Hz keyframes): interpolated, flagged.
    agents_interpolated: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)


# ---- rates ---------------------------------------------------------------------------------
def analyse_rate(t: np.ndarray, name: str, cfg: LoaderConfig) -> dict[str, Any]:
    """Rate of a stream and whether it is irregular (mixed sensors, dropped frames).

    Returns {"rate_hz", "median_dt_s", "max_dt_s", "irregular"}; raises IrregularRateError
    under the "error" policy when irregular."""
    t = np.asarray(t, dtype=np.float64)
    if len(t) < 2:
        return {"rate_hz": 0.0, "median_dt_s": math.inf, "max_dt_s": math.inf, "irregular": False}
    dt = np.diff(t)
    median = float(np.median(dt))
    spread = float(np.percentile(dt, 90) - np.percentile(dt, 10))
    irregular = median <= 0 or spread > cfg.irregular_dt_tolerance * median
    report = {
        "rate_hz": 1.0 / median if median > 0 else math.inf,
        "median_dt_s": median,
        "max_dt_s": float(dt.max()),
        "irregular": bool(irregular),
    }
    if irregular and cfg.irregular_rate_policy == "error":
        raise IrregularRateError(
            f"{name}: timestamps are irregular (intervals {np.percentile(dt, 10):.3f} .. "
            f"{np.percentile(dt, 90):.3f} s around a median of {median:.3f} s): mixed sensor "
            "rates or dropped frames. Set common.irregular_rate_policy=flag to resample anyway"
        )
    return report


def _sorted_unique(t: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Sort by time and drop repeated timestamps (merged sensor streams repeat them)."""
    order = np.argsort(t, kind="stable")
    t = t[order]
    keep = np.concatenate([[True], np.diff(t) > 1e-9]) if len(t) else np.zeros(0, bool)
    return (t[keep],) + tuple(a[order][keep] if a is not None else None for a in arrays)


# ---- ego: jump masking and resampling ----------------------------------------------------------
def mask_ego_jumps(ego: EgoTrack, cfg: LoaderConfig) -> np.ndarray:
    """(N,) bool: valid samples that are not localisation jumps.

    Walks forward keeping the last accepted sample and the velocity between the last two: a
    sample further than `max_ego_jump_m` + 0.5 `max_ego_accel_mps2` dt^2 from the constant-
    velocity prediction, faster than `max_ego_speed_mps` or turning faster than
    `max_ego_yaw_rate_radps` is rejected. After `jump_reset_s` without an accepted sample the
    next valid one starts a new segment (so a genuine relocalisation costs at most that long,
    a single outlier only itself)."""
    ok = ego.valid.copy()
    last, prev = -1, -1
    for k in np.flatnonzero(ego.valid):
        if last < 0:
            last = k
            continue
        dt = ego.t[k] - ego.t[last]
        if dt <= 0:
            ok[k] = False
            continue
        if dt > cfg.jump_reset_s:
            last, prev = k, -1
            continue
        dx, dy = ego.x[k] - ego.x[last], ego.y[k] - ego.y[last]
        dyaw = abs((ego.yaw[k] - ego.yaw[last] + math.pi) % (2 * math.pi) - math.pi)
        jump = math.hypot(dx, dy) / dt > cfg.max_ego_speed_mps
        jump |= dyaw / dt > cfg.max_ego_yaw_rate_radps
        if prev >= 0:
            dt_prev = ego.t[last] - ego.t[prev]
            vx = (ego.x[last] - ego.x[prev]) / dt_prev
            vy = (ego.y[last] - ego.y[prev]) / dt_prev
            error = math.hypot(dx - vx * dt, dy - vy * dt)
            jump |= error > cfg.max_ego_jump_m + 0.5 * cfg.max_ego_accel_mps2 * dt * dt
        if jump:
            ok[k] = False
        else:
            last, prev = k, last
    return ok


def _interp_valid(
    t_out: np.ndarray, t_in: np.ndarray, valid_in: np.ndarray, max_gap_s: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output time: index of the bracketing valid input samples (lo, hi), the
    interpolation weight of hi, and whether the output is covered (both valid, gap small).

    Returns (lo, hi, w) with lo = -1 where not covered."""
    tv = t_in[valid_in]
    idx = np.flatnonzero(valid_in)
    lo = np.full(len(t_out), -1)
    hi = np.full(len(t_out), -1)
    w = np.zeros(len(t_out))
    if len(tv) == 0:
        return lo, hi, w
    pos = np.searchsorted(tv, t_out, side="right")  # tv[pos-1] <= t < tv[pos]
    eps = 1e-6
    for j, (t, p) in enumerate(zip(t_out, pos)):
        if p >= 1 and abs(tv[p - 1] - t) <= eps:
            lo[j] = hi[j] = idx[p - 1]
            continue
        if p < len(tv) and abs(tv[p] - t) <= eps:
            lo[j] = hi[j] = idx[p]
            continue
        if p == 0 or p >= len(tv):
            continue
        gap = tv[p] - tv[p - 1]
        if gap > max_gap_s:
            continue
        lo[j], hi[j] = idx[p - 1], idx[p]
        w[j] = (t - tv[p - 1]) / gap
    return lo, hi, w


def _lerp(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, w: np.ndarray) -> np.ndarray:
    out = np.full(len(lo), np.nan)
    ok = lo >= 0
    out[ok] = (1 - w[ok]) * values[lo[ok]] + w[ok] * values[hi[ok]]
    return out


def _segments(valid: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index ranges of consecutive True values."""
    edges = np.diff(np.concatenate([[0], valid.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def resample_ego(
    ego: EgoTrack, t_grid: np.ndarray, cfg: LoaderConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Ego on the 10 Hz grid: ((T, 7) EGO_* rows, NaN where invalid; (T,) valid).

    Positions and the unwrapped yaw are interpolated linearly; speed comes from the log when
    it measures it, else from the positions (central differences within valid segments);
    accel and curvature are differences of speed and yaw along valid segments."""
    lo, hi, w = _interp_valid(t_grid, ego.t, ego.valid, cfg.max_ego_gap_s)
    valid = lo >= 0
    yaw_unwrapped = np.full(len(ego.t), np.nan)
    if ego.valid.any():
        yaw_unwrapped[ego.valid] = np.unwrap(ego.yaw[ego.valid])
    rows = np.full((len(t_grid), len(EGO_HISTORY_COLUMNS)), np.nan)
    rows[:, EGO_T] = t_grid
    rows[:, EGO_X] = _lerp(ego.x, lo, hi, w)
    rows[:, EGO_Y] = _lerp(ego.y, lo, hi, w)
    yaw = _lerp(yaw_unwrapped, lo, hi, w)
    if ego.speed is not None:
        rows[:, EGO_SPEED] = _lerp(ego.speed, lo, hi, w)
    dt = PLAN_DT_S
    for a, b in _segments(valid):
        seg = slice(a, b)
        if b - a < 2:
            rows[seg, EGO_SPEED] = np.where(
                np.isnan(rows[seg, EGO_SPEED]), 0.0, rows[seg, EGO_SPEED]
            )
            rows[seg, EGO_ACCEL] = 0.0
            rows[seg, EGO_CURV] = 0.0
            continue
        # the unwrap above spans gaps; re-unwrap within the segment so yaw rates are local
        yaw[seg] = np.unwrap(yaw[seg])
        if ego.speed is None:
            vx = np.gradient(rows[seg, EGO_X], dt)
            vy = np.gradient(rows[seg, EGO_Y], dt)
            rows[seg, EGO_SPEED] = np.hypot(vx, vy)
        rows[seg, EGO_ACCEL] = np.gradient(rows[seg, EGO_SPEED], dt)
        yaw_rate = np.gradient(yaw[seg], dt)
        speed = rows[seg, EGO_SPEED]
        rows[seg, EGO_CURV] = np.where(
            np.abs(speed) > cfg.curvature_speed_floor_mps,
            yaw_rate / np.maximum(np.abs(speed), cfg.curvature_speed_floor_mps),
            0.0,
        )
    rows[:, EGO_YAW] = (yaw + math.pi) % (2 * math.pi) - math.pi
    rows[~valid, 1:] = np.nan
    return rows, valid


def resample_agent(
    agent: AgentTrack, t_grid: np.ndarray, cfg: LoaderConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Agent on the grid: ((T, 5) t, x, y, yaw, speed with NaN where unobserved; (T, 2) vx, vy;
    (T,) bool interpolated = not at a raw timestamp)."""
    t, x, y, yaw, vx, vy, valid = _sorted_unique(
        agent.t, agent.x, agent.y, agent.yaw, agent.vx, agent.vy, agent.valid
    )
    lo, hi, w = _interp_valid(t_grid, t, valid, cfg.max_agent_gap_s)
    out = np.full((len(t_grid), 5), np.nan)
    out[:, AGENT_T] = t_grid
    out[:, AGENT_X] = _lerp(x, lo, hi, w)
    out[:, AGENT_Y] = _lerp(y, lo, hi, w)
    yaw_u = np.full(len(t), np.nan)
    if valid.any():
        yaw_u[valid] = np.unwrap(yaw[valid])
    out[:, AGENT_YAW] = (_lerp(yaw_u, lo, hi, w) + math.pi) % (2 * math.pi) - math.pi
    vel = np.stack([_lerp(vx, lo, hi, w), _lerp(vy, lo, hi, w)], axis=1)
    out[:, AGENT_SPEED] = np.hypot(vel[:, 0], vel[:, 1])
    interpolated = (lo >= 0) & (lo != hi)
    return out, vel, interpolated


# ---- the resampled log and its windows ---------------------------------------------------------
@dataclass
class _AgentGrid:
    track: AgentTrack
    states: np.ndarray  # (T, 5)
    velocity: np.ndarray  # (T, 2)
    interpolated: np.ndarray  # (T,)


class _FrameCache:
    """A small LRU of decoded camera frames (the same frame serves 4 consecutive scenes)."""

    def __init__(self, size: int):
        self.size = size
        self._frames: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()

    def get(self, stream: CameraStream, index: int) -> np.ndarray:
        key = (stream.name, index)
        if key in self._frames:
            self._frames.move_to_end(key)
            return self._frames[key]
        frame = np.ascontiguousarray(stream.load(index))
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise LogFormatError(
                f"camera {stream.name!r} frame {index} decoded to {frame.dtype} {frame.shape}; "
                "expected uint8 (H, W, 3) RGB"
            )
        self._frames[key] = frame
        if len(self._frames) > self.size:
            self._frames.popitem(last=False)
        return frame


class ResampledLog:
    """A log on the 10 Hz grid: the ego (T, 7) with its valid mask, agents, cameras; cuts
    Scenes and Samples at grid indices."""

    def __init__(self, data: LogData, cfg: LoaderConfig):
        self.data = data
        self.cfg = cfg
        ego = data.ego
        t, x, y, yaw, speed, valid = _sorted_unique(
            ego.t, ego.x, ego.y, ego.yaw, ego.speed, ego.valid
        )
        ego = EgoTrack(t=t, x=x, y=y, yaw=yaw, speed=speed, valid=valid)
        if ego.valid.sum() < 2:
            raise NoEgoTrackError(
                f"{data.source} log {data.log_id!r} has {int(ego.valid.sum())} valid ego "
                "pose(s); at least 2 are needed to build a trajectory"
            )
        rate = analyse_rate(ego.t[ego.valid], f"{data.source} log {data.log_id!r} ego", cfg)
        if rate["rate_hz"] < cfg.min_ego_rate_hz:
            raise IrregularRateError(
                f"{data.source} log {data.log_id!r}: ego poses come at {rate['rate_hz']:.2f} Hz, "
                f"below common.min_ego_rate_hz={cfg.min_ego_rate_hz}; a 10 Hz trajectory cannot "
                "be recovered from them"
            )
        not_jump = mask_ego_jumps(ego, cfg)
        n_jumps = int((ego.valid & ~not_jump).sum())
        if n_jumps:
            log.warning(
                "%s log %r: masked %d jumping ego sample(s)", data.source, data.log_id, n_jumps
            )
        ego.valid = not_jump
        t_first = ego.t[ego.valid][0]
        t_last = ego.t[ego.valid][-1]
        n = int(math.floor((t_last - t_first) / PLAN_DT_S + 1e-6)) + 1
        self.t = t_first + PLAN_DT_S * np.arange(n)  # (T,) s
        self.ego, self.ego_valid = resample_ego(ego, self.t, cfg)
        self.agents = [
            _AgentGrid(a, *resample_agent(a, self.t, cfg)) for a in data.agents if a.valid.any()
        ]
        self._camera_index = {
            cam.name: self._nearest_frames(cam.t) for cam in data.cameras if len(cam.t)
        }
        self._cameras = {cam.name: cam for cam in data.cameras if len(cam.t)}
        self._cache = _FrameCache(cfg.camera_cache_frames)
        self._route_xy = self._route_waypoints()
        self.metadata = {
            **data.metadata,
            "source": data.source,
            "log_id": data.log_id,
            "ego_rate": rate,
            "masked_jumps": n_jumps,
            "resampled_to_hz": 1.0 / PLAN_DT_S,
            "agents_interpolated": data.agents_interpolated,
        }

    # -- construction helpers -------------------------------------------------------------
    def _nearest_frames(self, t_frames: np.ndarray) -> np.ndarray:
        """(T,) index of the camera frame nearest each grid time, -1 if none is close enough."""
        pos = np.clip(np.searchsorted(t_frames, self.t), 1, max(len(t_frames) - 1, 1))
        before = np.clip(pos - 1, 0, len(t_frames) - 1)
        after = np.clip(pos, 0, len(t_frames) - 1)
        pick = np.where(
            np.abs(t_frames[after] - self.t) < np.abs(t_frames[before] - self.t), after, before
        )
        close = np.abs(t_frames[pick] - self.t) <= self.cfg.camera_sync_tolerance_s
        return np.where(close, pick, -1)

    def _route_waypoints(self) -> np.ndarray:
        """(K, 2) the logged path (valid grid positions) thinned to route_spacing_m."""
        xy = self.ego[self.ego_valid][:, [EGO_X, EGO_Y]]
        keep = [0]
        for k in range(1, len(xy)):
            if np.hypot(*(xy[k] - xy[keep[-1]])) >= self.cfg.route_spacing_m:
                keep.append(k)
        if keep[-1] != len(xy) - 1:
            keep.append(len(xy) - 1)
        return xy[keep]

    # -- windows ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.t)

    def anchor_indices(self, stride_s: float) -> list[int]:
        """Grid indices where a Sample can be cut: the ego is valid now, over the history
        (when required) and for at least min_future_valid_steps future rows."""
        step = max(1, int(round(stride_s / PLAN_DT_S)))
        out = []
        for i in range(0, len(self.t), step):
            if not self.ego_valid[i]:
                continue
            if self.cfg.require_full_history and (
                i < HISTORY_STEPS - 1 or not self.ego_valid[i - HISTORY_STEPS + 1 : i + 1].all()
            ):
                continue
            if (
                int(self.ego_valid[i + 1 : i + 1 + PLAN_STEPS].sum())
                < self.cfg.min_future_valid_steps
            ):
                continue
            out.append(i)
        return out

    def _history_rows(self, i: int) -> np.ndarray:
        """(H <= 16, 7) the valid rows ending at i, oldest first (no gaps)."""
        start = i
        while start > 0 and i - start < HISTORY_STEPS - 1 and self.ego_valid[start - 1]:
            start -= 1
        return self.ego[start : i + 1].copy()

    def _command(self, i: int) -> Command:
        k = i + int(round(self.cfg.command_horizon_s / PLAN_DT_S))
        if k >= len(self.t) or not self.ego_valid[k]:
            return Command.LANE_FOLLOW
        row = self.ego[i]
        dx, dy = self.ego[k, EGO_X] - row[EGO_X], self.ego[k, EGO_Y] - row[EGO_Y]
        lateral = -math.sin(row[EGO_YAW]) * dx + math.cos(row[EGO_YAW]) * dy
        if lateral > self.cfg.command_lateral_threshold_m:
            return Command.LEFT
        if lateral < -self.cfg.command_lateral_threshold_m:
            return Command.RIGHT
        return Command.LANE_FOLLOW

    def _cameras_at(self, i: int) -> tuple[dict[str, np.ndarray] | None, str]:
        if not self._cameras:
            return None, "none"
        frames = self.cfg.camera_frames
        grid = range(i - frames + 1, i + 1)
        if grid.start < 0:
            return None, "missing"
        out = {}
        for name, cam in self._cameras.items():
            idx = self._camera_index[name][list(grid)]
            if (idx < 0).any():
                return None, "missing"
            out[name] = np.stack([self._cache.get(cam, int(j)) for j in idx], axis=0)
        shapes = {v.shape[1:] for v in out.values()}
        if len(shapes) > 1:
            log.debug("cameras of %s have different resolutions: %s", self.data.log_id, shapes)
        return out, "real"

    def _agents_at(self, i: int) -> tuple[list[Agent], list[str]]:
        agents, interpolated = [], []
        lo = max(0, i - HISTORY_STEPS + 1)
        for grid in self.agents:
            s = grid.states[i]
            if not np.isfinite(s[AGENT_X]):
                continue
            hist = grid.states[lo : i + 1]
            hist = hist[np.isfinite(hist[:, AGENT_X])]
            tr = grid.track
            agents.append(
                Agent(
                    id=tr.id,
                    agent_class=tr.agent_class,
                    x=float(s[AGENT_X]),
                    y=float(s[AGENT_Y]),
                    yaw=float(s[AGENT_YAW]),
                    vx=float(grid.velocity[i, 0]),
                    vy=float(grid.velocity[i, 1]),
                    length=tr.length,
                    width=tr.width,
                    height=tr.height,
                    history=hist.copy(),
                )
            )
            if grid.interpolated[i]:
                interpolated.append(tr.id)
        return agents, interpolated

    def _lights_at(self, i: int) -> list[TrafficLight]:
        out = []
        for light in self.data.lights:
            if not len(light.t):
                continue
            k = int(np.clip(np.searchsorted(light.t, self.t[i] + 1e-6) - 1, 0, len(light.t) - 1))
            out.append(
                TrafficLight(
                    id=light.id,
                    state=light.states[k],
                    stop_line_id=light.stop_line_id,
                    lane_ids=light.lane_ids,
                )
            )
        return out

    def scene_at(self, i: int) -> Scene:
        """The Scene at grid index i (the ego must be valid there)."""
        if not self.ego_valid[i]:
            raise LogFormatError(
                f"{self.data.source} log {self.data.log_id!r}: no valid ego pose at "
                f"t={self.t[i]:.2f} s (grid index {i})"
            )
        row = self.ego[i]
        c = self.cfg
        ego = EgoState(
            t=float(row[EGO_T]),
            x=float(row[EGO_X]),
            y=float(row[EGO_Y]),
            yaw=float(row[EGO_YAW]),
            speed=float(row[EGO_SPEED]),
            accel=float(row[EGO_ACCEL]),
            curvature=float(row[EGO_CURV]),
            length=c.ego_length_m,
            width=c.ego_width_m,
            rear_axle_to_center_m=c.ego_rear_axle_to_center_m,
        )
        agents, interpolated = self._agents_at(i)
        cameras, camera_status = self._cameras_at(i)
        return Scene(
            timestamp=float(row[EGO_T]),
            ego=ego,
            ego_history=self._history_rows(i),
            agents=agents,
            map=self.data.map,
            route=Route(waypoints=self._route_xy, command=self._command(i)),
            traffic_lights=self._lights_at(i),
            cameras=cameras,
            metadata={
                "source": self.data.source,
                "log_id": self.data.log_id,
                "grid_index": i,
                "cameras": camera_status,  # "real" | "none" (render them) | "missing"
                "interpolated_agent_ids": interpolated,
                "agents_interpolated": bool(interpolated),
                "ego_rate_irregular": self.metadata["ego_rate"]["irregular"],
            },
        )

    def sample_at(self, i: int) -> Sample:
        """The Sample at grid index i: Scene plus the 6.4 s future. Future rows the log does
        not cover are NaN (except their time) and False in future_valid."""
        scene = self.scene_at(i)
        rows = np.arange(i + 1, i + 1 + PLAN_STEPS)
        inside = rows < len(self.t)
        future = np.full((PLAN_STEPS, len(EGO_HISTORY_COLUMNS)), np.nan)
        future[:, EGO_T] = self.t[i] + PLAN_DT_S * np.arange(1, PLAN_STEPS + 1)
        future[inside] = self.ego[rows[inside]]
        valid = np.zeros(PLAN_STEPS, bool)
        valid[inside] = self.ego_valid[rows[inside]]
        future[~valid, 1:] = np.nan
        agent_futures = {}
        present = {a.id for a in scene.agents}
        for grid in self.agents:
            if grid.track.id not in present:
                continue
            fut = np.full((PLAN_STEPS, 5), np.nan)
            fut[:, AGENT_T] = future[:, EGO_T]
            fut[inside] = grid.states[rows[inside]]
            agent_futures[grid.track.id] = fut
        controls = None
        if self.cfg.fit_controls and valid.all():
            controls = _fit_controls_for(scene, future)
        return Sample(
            scene=scene,
            future_ego=future,
            future_valid=valid,
            agent_futures=agent_futures,
            controls=controls,
            meta={
                "source": self.data.source,
                "log_id": self.data.log_id,
                "t0": float(self.t[i]),
                "grid_index": i,
                "cameras": scene.metadata["cameras"],
                "agents_interpolated": self.data.agents_interpolated,
                "ego_rate_irregular": self.metadata["ego_rate"]["irregular"],
            },
        )


def _fit_controls_for(scene: Scene, future: np.ndarray) -> np.ndarray | None:
    """(64, 2) accel, curvature reproducing the logged future (None if the fit refuses it)."""
    from planner.controls import fit_controls
    from planner.geometry import world_to_ego_xy
    from planner.types import InvalidInputError

    xy = world_to_ego_xy(future[:, [EGO_X, EGO_Y]], scene.ego)
    yaw = np.unwrap(future[:, EGO_YAW] - scene.ego.yaw)
    try:
        accel, curvature = fit_controls(
            xy, yaw=yaw, speed=future[:, EGO_SPEED], v0=max(scene.ego.speed, 0.0)
        )
    except InvalidInputError as exc:
        log.debug(
            "no controls for %s at t=%.2f: %s", scene.metadata.get("log_id"), scene.timestamp, exc
        )
        return None
    return np.stack([accel, curvature], axis=1)


def resample_log(data: LogData, cfg: LoaderConfig) -> ResampledLog:
    return ResampledLog(data, cfg)


# ---- the loader interface ---------------------------------------------------------------
class LogSource(abc.ABC):
    """A set of logs in one format. Subclasses implement `logs()`; everything else is shared."""

    format_name: str = ""

    def __init__(self, path: str | Path, config: LogLoadersConfig | None = None):
        self.path = Path(path)
        self.config = config if config is not None else load_loaders_config()

    @abc.abstractmethod
    def logs(self) -> Iterator[LogData]:
        """Each log of the source, converted into the project conventions."""

    def resampled_logs(self) -> Iterator[ResampledLog]:
        for data in self.logs():
            yield ResampledLog(data, self.config.common)

    def scenes(self, stride_s: float | None = None) -> Iterator[Scene]:
        """Scenes at every valid grid time (every `stride_s` seconds, default 0.1 s)."""
        step = max(1, int(round((stride_s or PLAN_DT_S) / PLAN_DT_S)))
        for rlog in self.resampled_logs():
            for i in range(0, len(rlog), step):
                if rlog.ego_valid[i]:
                    yield rlog.scene_at(i)

    def samples(self, stride_s: float | None = None) -> Iterator[Sample]:
        """Samples (1.6 s history, 6.4 s future) every `stride_s` seconds."""
        stride = stride_s if stride_s is not None else self.config.common.default_stride_s
        for rlog in self.resampled_logs():
            for i in rlog.anchor_indices(stride):
                yield rlog.sample_at(i)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"


# ---- small conversions used by several loaders -----------------------------------------------
def quaternion_to_yaw(w: float, x: float, y: float, z: float) -> float:
    """Yaw (rotation about +z, CCW) of a unit quaternion (w, x, y, z)."""
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def polyline_normals(points: np.ndarray) -> np.ndarray:
    """(N, 2) unit normals pointing to the LEFT of travel (+90 degrees from the tangent)."""
    p = np.asarray(points, dtype=np.float64)
    tangent = np.gradient(p, axis=0) if len(p) > 1 else np.array([[1.0, 0.0]])
    norm = np.maximum(np.hypot(tangent[:, 0], tangent[:, 1]), 1e-9)
    tangent = tangent / norm[:, None]
    return np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)


def offset_boundaries(
    centerline: np.ndarray,
    left_half_width: np.ndarray | float,
    right_half_width: np.ndarray | float,
) -> tuple[np.ndarray, np.ndarray]:
    """Left (+y of travel) and right boundary polylines at the given half widths (m)."""
    normals = polyline_normals(centerline)
    left = centerline + normals * np.asarray(left_half_width, dtype=np.float64).reshape(-1, 1)
    right = centerline - normals * np.asarray(right_half_width, dtype=np.float64).reshape(-1, 1)
    return left, right
