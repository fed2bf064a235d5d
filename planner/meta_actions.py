"""Meta-actions of a trajectory and the decision <-> meta-action compatibility table.

A meta-action is what a trajectory visibly does over a stretch of time (Alpamayo-R1,
arXiv 2511.00088): longitudinally gentle/strong acceleration or deceleration, maintain speed,
stop; laterally go straight, steer / sharp steer left or right, lane change left or right.
`meta_actions()` cuts a `Trajectory` into variable-length time segments of each, with the
thresholds of `MetaActionConfig` (documented in docs/META_ACTIONS.md). `is_consistent()`
checks a structured `Decision` against those segments with the compatibility table
`LONGITUDINAL_COMPATIBILITY` / `LATERAL_COMPATIBILITY`: the CoC labeler uses it to reject
labels that the expert's own future contradicts, the evaluation uses it for the
reasoning-action consistency metric.

Pure numpy: no scene, no simulator. Time is seconds after t0; the trajectory's row k covers
the interval (k dt, (k + 1) dt].
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from planner.taxonomy import (
    LateralDecision,
    LateralMetaAction,
    LongitudinalDecision,
    LongitudinalMetaAction,
    Side,
)
from planner.types import Decision, InvalidInputError, Trajectory

LON = LongitudinalMetaAction
LAT = LateralMetaAction


@dataclass
class MetaActionConfig:
    """Thresholds of the meta-action classifier and of the consistency check."""

    # -- longitudinal: acceleration bands (m/s^2) on the smoothed speed derivative
    gentle_accel_mps2: float = 0.3  # a >= this is acceleration (below: maintain speed)
    strong_accel_mps2: float = 2.0  # a >= this is strong acceleration
    gentle_decel_mps2: float = 0.3  # a <= -this is deceleration
    strong_decel_mps2: float = 2.5  # a <= -this is strong deceleration
    stop_speed_mps: float = 0.5  # speed below this is "stop"
    # -- lateral: yaw-rate bands (rad/s) of the ego's own motion (a turn along a curving lane
    # is steering; lane changes are measured against the lane, below)
    steer_yaw_rate_radps: float = 0.04  # |yaw rate| >= this is steering (~2.3 deg/s)
    sharp_yaw_rate_radps: float = 0.25  # |yaw rate| >= this is sharp steering (~14 deg/s)
    sharp_curvature_per_m: float = 0.04  # ... and |curvature| >= this (radius <= 25 m)
    min_steer_speed_mps: float = 1.0  # below this speed the lateral action is "go straight"
    # -- lane change: lateral displacement relative to the lane with a bounded heading change
    lane_width_m: float = 3.5  # used when the caller gives no lane width
    lane_change_min_fraction: float = 0.6  # displacement >= this many lane widths
    lane_change_max_heading_rad: float = 0.35  # |heading relative to the lane| stays below
    lane_change_min_lateral_speed_mps: float = 0.15  # a lateral move is at least this fast
    lane_change_max_pause_s: float = 0.5  # pauses this short inside one move are bridged
    # -- smoothing (a noisy plan must not produce flickering segments)
    smoothing_window_s: float = 0.5  # centred moving average of accel and yaw rate
    hysteresis_fraction: float = 0.25  # a label holds until its thresholds are passed by 25 %
    min_segment_s: float = 0.5  # shorter segments are merged into a neighbour
    # -- consistency check (decision vs meta-actions)
    longitudinal_window_s: float = 3.0  # the longitudinal decision is judged on [0, this]
    min_allowed_fraction: float = 0.6  # of that window covered by allowed meta-actions
    low_speed_mps: float = 5.0  # "maintain speed" counts as yielding/stopping below this
    nudge_min_offset_m: float = 0.15  # a nudge moves at least this far toward its side
    lane_change_min_progress_fraction: float = 0.1  # lane widths moved by a lane change
    turn_min_travel_m: float = 20.0  # a plan shorter than this may still be waiting to turn

    def __post_init__(self) -> None:
        if not 0 < self.gentle_accel_mps2 < self.strong_accel_mps2:
            raise InvalidInputError(
                f"MetaActionConfig: need 0 < gentle_accel_mps2 ({self.gentle_accel_mps2}) < "
                f"strong_accel_mps2 ({self.strong_accel_mps2})"
            )
        if not 0 < self.gentle_decel_mps2 < self.strong_decel_mps2:
            raise InvalidInputError(
                f"MetaActionConfig: need 0 < gentle_decel_mps2 ({self.gentle_decel_mps2}) < "
                f"strong_decel_mps2 ({self.strong_decel_mps2})"
            )
        if not 0 < self.steer_yaw_rate_radps < self.sharp_yaw_rate_radps:
            raise InvalidInputError(
                "MetaActionConfig: need 0 < steer_yaw_rate_radps < sharp_yaw_rate_radps, got "
                f"{self.steer_yaw_rate_radps} and {self.sharp_yaw_rate_radps}"
            )
        if self.lane_width_m <= 0 or self.min_segment_s < 0 or self.smoothing_window_s < 0:
            raise InvalidInputError(
                "MetaActionConfig: lane_width_m must be > 0 and min_segment_s, "
                "smoothing_window_s >= 0"
            )


@dataclass(frozen=True)
class MetaActionSegment:
    """One meta-action over (start_s, end_s], seconds after t0."""

    start_s: float
    end_s: float
    action: LongitudinalMetaAction | LateralMetaAction

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def to_dict(self) -> dict[str, Any]:
        return {"start_s": self.start_s, "end_s": self.end_s, "action": self.action.value}


@dataclass(frozen=True)
class MetaActions:
    """Longitudinal and lateral meta-action segments of one trajectory (each list covers the
    horizon without gaps), plus the per-step signals they were read from."""

    longitudinal: tuple[MetaActionSegment, ...]
    lateral: tuple[MetaActionSegment, ...]
    horizon_s: float
    initial_speed_mps: float
    speed_mps: np.ndarray = field(repr=False)  # (N,) speed at the end of each step
    lateral_offset_m: np.ndarray = field(repr=False)  # (N,) vs the lane (or t0 heading), +left
    start_offset_m: float = 0.0  # lateral offset at t0 (same reference)
    lane_width_m: float = 3.5  # lane width the lane-change test used

    def actions(
        self, which: str, start_s: float = 0.0, end_s: float | None = None
    ) -> list[LongitudinalMetaAction | LateralMetaAction]:
        """Distinct actions of the `which` ("longitudinal" | "lateral") segments that overlap
        (start_s, end_s], in time order."""
        end = self.horizon_s if end_s is None else end_s
        segs = self.longitudinal if which == "longitudinal" else self.lateral
        out: list[Any] = []
        for s in segs:
            if s.end_s > start_s + 1e-9 and s.start_s < end - 1e-9 and s.action not in out:
                out.append(s.action)
        return out

    def duration_of(
        self, which: str, actions: Iterable[Any], start_s: float = 0.0, end_s: float | None = None
    ) -> float:
        """Seconds of (start_s, end_s] covered by any of `actions`."""
        end = self.horizon_s if end_s is None else end_s
        wanted = set(actions)
        segs = self.longitudinal if which == "longitudinal" else self.lateral
        return sum(
            max(0.0, min(s.end_s, end) - max(s.start_s, start_s))
            for s in segs
            if s.action in wanted
        )

    @property
    def max_left_offset_m(self) -> float:
        """Largest move to the left of the start position (m, >= 0)."""
        d = self.lateral_offset_m - self.start_offset_m
        return float(max(0.0, d.max())) if len(d) else 0.0

    @property
    def max_right_offset_m(self) -> float:
        d = self.lateral_offset_m - self.start_offset_m
        return float(max(0.0, -d.min())) if len(d) else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "longitudinal": [s.to_dict() for s in self.longitudinal],
            "lateral": [s.to_dict() for s in self.lateral],
            "horizon_s": self.horizon_s,
        }

    def describe(self) -> str:
        """'maintain_speed 0.0-3.2 s, gentle_deceleration 3.2-6.4 s | go_straight 0.0-6.4 s'."""

        def fmt(segs: tuple[MetaActionSegment, ...]) -> str:
            return ", ".join(f"{s.action.value} {s.start_s:.1f}-{s.end_s:.1f} s" for s in segs)

        return f"{fmt(self.longitudinal)} | {fmt(self.lateral)}"


# ---- classification ---------------------------------------------------------------------------
def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average with edge values repeated (keeps the length)."""
    if window <= 1 or len(values) < 2:
        return values.copy()
    half = window // 2
    padded = np.concatenate([np.full(half, values[0]), values, np.full(half, values[-1])])
    kernel = np.ones(2 * half + 1) / (2 * half + 1)
    return np.convolve(padded, kernel, mode="valid")


def _segments(labels: list[Any], dt: float, min_steps: int) -> list[list[Any]]:
    """Run-length encode per-step labels into [label, first_step, end_step) and absorb runs
    shorter than `min_steps` into the longer neighbour (repeat until none is left), so a
    noisy signal gives few, stable segments."""
    runs: list[list[Any]] = []
    for k, lab in enumerate(labels):
        if runs and runs[-1][0] == lab:
            runs[-1][2] = k + 1
        else:
            runs.append([lab, k, k + 1])
    changed = True
    while changed and len(runs) > 1:
        changed = False
        lengths = [r[2] - r[1] for r in runs]
        i = int(np.argmin(lengths))
        if lengths[i] >= min_steps:
            break
        left = runs[i - 1] if i > 0 else None
        right = runs[i + 1] if i + 1 < len(runs) else None
        target = left if right is None else right if left is None else None
        if target is None:
            target = left if (left[2] - left[1]) >= (right[2] - right[1]) else right
        target[1] = min(target[1], runs[i][1])
        target[2] = max(target[2], runs[i][2])
        del runs[i]
        # neighbours that now carry the same label are fused
        fused: list[list[Any]] = []
        for r in runs:
            if fused and fused[-1][0] == r[0]:
                fused[-1][2] = r[2]
            else:
                fused.append(r)
        runs = fused
        changed = True
    return runs


def _with_hysteresis(classify: Any, n: int, fraction: float) -> list[Any]:
    """Per-step labels where the current label is kept while the signal stays inside its
    band widened by `fraction` of each threshold (classify(k, scale) scales the thresholds):
    a signal hovering at a threshold does not toggle between two labels."""
    labels: list[Any] = []
    current = None
    for k in range(n):
        raw = classify(k, 1.0)
        if current is not None and raw != current:
            if current in (classify(k, 1.0 - fraction), classify(k, 1.0 + fraction)):
                labels.append(current)
                continue
        current = raw
        labels.append(raw)
    return labels


def _lane_frame(xy: np.ndarray, lane_geometry: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Signed lateral offset (+left) of each point and the lane direction (rad) at it.

    Without lane geometry the reference is the straight line along the heading at t0."""
    if lane_geometry is None:
        return xy[:, 1].copy(), np.zeros(len(xy))
    lane = np.asarray(lane_geometry, dtype=np.float64)
    if lane.ndim != 2 or lane.shape[1] != 2 or len(lane) < 2 or not np.isfinite(lane).all():
        raise InvalidInputError(
            f"lane_geometry must be a finite (N>=2, 2) centerline polyline in the ego frame at "
            f"t0, got shape {lane.shape}"
        )
    # only the part of the lane near the trajectory matters: keep the vertices within a
    # margin of the trajectory's box (lanes from logs and simulators run for kilometres)
    margin = 20.0
    lo, hi = xy.min(axis=0) - margin, xy.max(axis=0) + margin
    near = np.flatnonzero(((lane >= lo) & (lane <= hi)).all(axis=1))
    if len(near) >= 1:
        lane = lane[max(near[0] - 1, 0) : min(near[-1] + 2, len(lane))]
    keep = np.concatenate([[True], np.hypot(*np.diff(lane, axis=0).T) > 1e-9])
    lane = lane[keep]
    if len(lane) < 2:
        raise InvalidInputError("lane_geometry has fewer than 2 distinct points near the plan")
    import shapely  # projection of many points on a polyline, in C

    line = shapely.LineString(lane)
    s = shapely.line_locate_point(line, shapely.points(xy))
    proj = shapely.get_coordinates(shapely.line_interpolate_point(line, s))
    cum = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(lane, axis=0).T))])
    idx = np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(lane) - 2)
    ab = lane[idx + 1] - lane[idx]
    d = xy - proj
    cross = ab[:, 0] * d[:, 1] - ab[:, 1] * d[:, 0]
    offset = np.sign(cross) * np.hypot(d[:, 0], d[:, 1])
    heading = np.arctan2(ab[:, 1], ab[:, 0])
    return offset, heading


def meta_actions(
    traj: Trajectory,
    lane_geometry: np.ndarray | None = None,
    cfg: MetaActionConfig | None = None,
    *,
    v0: float | None = None,
    lane_width_m: float | None = None,
) -> MetaActions:
    """Meta-action segments of `traj` (ego frame at t0).

    lane_geometry: (N, 2) centerline of the ego's lane in the same ego frame; lane changes and
    lateral offsets are then measured relative to the lane (a lane change along a curving lane
    is found; following the curve is steering, never a lane change). Without it, relative to
    the heading at t0. Steering classes always come from the ego's own yaw rate.
    v0: speed at t0 (m/s); by default recovered from the first row (speed - accel * dt)."""
    cfg = cfg or MetaActionConfig()
    data = traj.data
    n = len(data)
    if n == 0:
        raise InvalidInputError("meta_actions: the trajectory is empty")
    dt = traj.dt
    width = float(lane_width_m) if lane_width_m is not None else cfg.lane_width_m
    if v0 is None:
        v0 = max(0.0, float(traj.speed[0] - traj.accel[0] * dt))
    speed = traj.speed.copy()
    horizon = n * dt
    smooth = max(1, int(round(cfg.smoothing_window_s / dt)))
    min_steps = max(1, int(round(cfg.min_segment_s / dt)))

    # -- longitudinal: accel from speed differences (a logged trajectory's accel column may be
    # missing or noisy), smoothed; stop wins wherever the speed is below the stop speed.
    accel = np.diff(np.concatenate([[v0], speed])) / dt
    accel = _moving_average(accel, smooth)

    def lon_class(k: int, scale: float) -> LongitudinalMetaAction:
        a = accel[k]
        if speed[k] < cfg.stop_speed_mps and (k == 0 or speed[k - 1] < cfg.stop_speed_mps * 2):
            return LON.STOP
        if a >= cfg.strong_accel_mps2 * scale:
            return LON.STRONG_ACCELERATION
        if a >= cfg.gentle_accel_mps2 * scale:
            return LON.GENTLE_ACCELERATION
        if a <= -cfg.strong_decel_mps2 * scale:
            return LON.STRONG_DECELERATION
        if a <= -cfg.gentle_decel_mps2 * scale:
            return LON.GENTLE_DECELERATION
        return LON.MAINTAIN_SPEED

    lon = _with_hysteresis(lon_class, n, cfg.hysteresis_fraction)

    # -- lateral: the ego's yaw rate; offsets and headings relative to the lane
    xy = np.concatenate([[[0.0, 0.0]], traj.xy], axis=0)  # (N+1, 2) with the t0 origin
    yaw = np.concatenate([[0.0], traj.yaw])
    offset, lane_heading = _lane_frame(xy, lane_geometry)
    lane_heading = np.unwrap(lane_heading)
    rel_heading = (yaw - lane_heading + math.pi) % (2 * math.pi) - math.pi
    yaw_rate = _moving_average(np.diff(np.unwrap(yaw)) / dt, smooth)
    mean_speed = 0.5 * (np.concatenate([[v0], speed[:-1]]) + speed)
    curvature = yaw_rate / np.maximum(mean_speed, cfg.min_steer_speed_mps)

    def lat_class(k: int, scale: float) -> LateralMetaAction:
        w = yaw_rate[k]
        if mean_speed[k] < cfg.min_steer_speed_mps or abs(w) < cfg.steer_yaw_rate_radps * scale:
            return LAT.GO_STRAIGHT
        if (
            abs(w) >= cfg.sharp_yaw_rate_radps * scale
            and abs(curvature[k]) >= cfg.sharp_curvature_per_m * scale
        ):
            return LAT.SHARP_STEER_LEFT if w > 0 else LAT.SHARP_STEER_RIGHT
        return LAT.STEER_LEFT if w > 0 else LAT.STEER_RIGHT

    lat = _with_hysteresis(lat_class, n, cfg.hysteresis_fraction)

    # -- lane changes: runs of steady lateral motion (bridging short pauses) that move at
    # least lane_change_min_fraction lane widths with a bounded heading relative to the lane;
    # they override the steering labels over their span.
    lat_speed = _moving_average(np.diff(offset) / dt, smooth)  # (N,) step k ends at row k
    direction = np.where(
        lat_speed >= cfg.lane_change_min_lateral_speed_mps,
        1,
        np.where(lat_speed <= -cfg.lane_change_min_lateral_speed_mps, -1, 0),
    )
    max_pause = int(round(cfg.lane_change_max_pause_s / dt))
    k = 0
    while k < n:
        if direction[k] == 0:
            k += 1
            continue
        sign = direction[k]
        start, end, pause = k, k + 1, 0
        j = k + 1
        while j < n:
            if direction[j] == sign:
                end, pause = j + 1, 0
            elif direction[j] == 0 and pause < max_pause:
                pause += 1
            else:
                break
            j += 1
        moved = offset[end] - offset[start]
        heading_ok = np.abs(rel_heading[start : end + 1]).max() <= cfg.lane_change_max_heading_rad
        if sign * moved >= cfg.lane_change_min_fraction * width and heading_ok:
            action = LAT.LANE_CHANGE_LEFT if sign > 0 else LAT.LANE_CHANGE_RIGHT
            for i in range(start, end):
                lat[i] = action
        k = end

    lon_runs = _segments(lon, dt, min_steps)
    lat_runs = _segments(lat, dt, min_steps)
    return MetaActions(
        longitudinal=tuple(MetaActionSegment(r[1] * dt, r[2] * dt, r[0]) for r in lon_runs),
        lateral=tuple(MetaActionSegment(r[1] * dt, r[2] * dt, r[0]) for r in lat_runs),
        horizon_s=horizon,
        initial_speed_mps=float(v0),
        speed_mps=speed,
        lateral_offset_m=offset[1:].copy(),
        start_offset_m=float(offset[0]),
        lane_width_m=width,
    )


# ---- compatibility table ----------------------------------------------------------------------
@dataclass(frozen=True)
class LongitudinalRule:
    """Which longitudinal meta-actions a longitudinal decision allows within the decision
    window. `allowed` must cover at least `min_allowed_fraction` of the window; none of
    `forbidden` may appear in it; if `required` is non-empty one of them must appear in the
    horizon; `maintain_only_slow`: maintain speed counts as allowed only below low_speed_mps."""

    allowed: frozenset[LongitudinalMetaAction]
    forbidden: frozenset[LongitudinalMetaAction] = frozenset()
    required: frozenset[LongitudinalMetaAction] = frozenset()
    maintain_only_slow: bool = False


_ACCEL = frozenset({LON.GENTLE_ACCELERATION, LON.STRONG_ACCELERATION})
_DECEL = frozenset({LON.GENTLE_DECELERATION, LON.STRONG_DECELERATION})

LONGITUDINAL_COMPATIBILITY: dict[LongitudinalDecision, LongitudinalRule] = {
    LongitudinalDecision.SET_SPEED_TRACKING: LongitudinalRule(
        allowed=frozenset({LON.MAINTAIN_SPEED, LON.GENTLE_DECELERATION}) | _ACCEL,
        forbidden=frozenset({LON.STRONG_DECELERATION, LON.STOP}),
    ),
    LongitudinalDecision.LEAD_OBSTACLE_FOLLOWING: LongitudinalRule(
        allowed=frozenset({LON.MAINTAIN_SPEED, LON.GENTLE_ACCELERATION, LON.STOP}) | _DECEL,
        forbidden=frozenset({LON.STRONG_ACCELERATION}),
    ),
    LongitudinalDecision.SPEED_ADAPTATION: LongitudinalRule(
        allowed=frozenset({LON.MAINTAIN_SPEED, LON.GENTLE_ACCELERATION}) | _DECEL,
        forbidden=frozenset({LON.STRONG_ACCELERATION, LON.STOP}),
    ),
    LongitudinalDecision.GAP_SEARCHING: LongitudinalRule(
        allowed=frozenset({LON.MAINTAIN_SPEED}) | _ACCEL | _DECEL,
        forbidden=frozenset({LON.STOP}),
    ),
    LongitudinalDecision.ACCELERATION_FOR_PASSING: LongitudinalRule(
        allowed=frozenset({LON.MAINTAIN_SPEED}) | _ACCEL,
        forbidden=frozenset({LON.STOP}) | _DECEL,
        required=_ACCEL,
    ),
    LongitudinalDecision.YIELD: LongitudinalRule(
        allowed=frozenset({LON.MAINTAIN_SPEED, LON.STOP}) | _DECEL,
        forbidden=frozenset({LON.STRONG_ACCELERATION}),
        maintain_only_slow=True,
    ),
    # rolling up to a stop line from low speed may first gain a little speed
    LongitudinalDecision.STOP_FOR_STATIC_CONSTRAINTS: LongitudinalRule(
        allowed=frozenset({LON.MAINTAIN_SPEED, LON.STOP, LON.GENTLE_ACCELERATION}) | _DECEL,
        forbidden=frozenset({LON.STRONG_ACCELERATION}),
        required=frozenset({LON.STOP}) | _DECEL,
        maintain_only_slow=True,
    ),
}


@dataclass(frozen=True)
class LateralRule:
    """Lateral meta-actions for a lateral decision, written for side LEFT; RIGHT mirrors.
    `required`: one of them must appear in the horizon (or, where `offset_ok`, the plan must
    move at least nudge_min_offset_m toward the side); `forbidden`: none may appear."""

    required: frozenset[LateralMetaAction] = frozenset()
    forbidden: frozenset[LateralMetaAction] = frozenset()
    offset_ok: bool = False
    needs_side: bool = True
    waiting_ok: bool = False  # a plan that stops or covers < turn_min_travel_m need not steer


_MIRROR = {
    LAT.GO_STRAIGHT: LAT.GO_STRAIGHT,
    LAT.STEER_LEFT: LAT.STEER_RIGHT,
    LAT.STEER_RIGHT: LAT.STEER_LEFT,
    LAT.SHARP_STEER_LEFT: LAT.SHARP_STEER_RIGHT,
    LAT.SHARP_STEER_RIGHT: LAT.SHARP_STEER_LEFT,
    LAT.LANE_CHANGE_LEFT: LAT.LANE_CHANGE_RIGHT,
    LAT.LANE_CHANGE_RIGHT: LAT.LANE_CHANGE_LEFT,
}
_TOWARD_LEFT = frozenset({LAT.STEER_LEFT, LAT.SHARP_STEER_LEFT, LAT.LANE_CHANGE_LEFT})

LATERAL_COMPATIBILITY: dict[LateralDecision, LateralRule] = {
    LateralDecision.LANE_KEEPING: LateralRule(
        forbidden=frozenset({LAT.LANE_CHANGE_LEFT, LAT.LANE_CHANGE_RIGHT}), needs_side=False
    ),
    LateralDecision.MERGE_SPLIT: LateralRule(
        required=_TOWARD_LEFT, forbidden=frozenset({LAT.LANE_CHANGE_RIGHT}), offset_ok=True
    ),
    # a nudge goes out and comes back: the way back may look like a move to the other side
    LateralDecision.OUT_OF_LANE_NUDGE: LateralRule(required=_TOWARD_LEFT, offset_ok=True),
    LateralDecision.IN_LANE_NUDGE: LateralRule(
        required=frozenset({LAT.STEER_LEFT}),
        forbidden=frozenset({LAT.LANE_CHANGE_LEFT, LAT.LANE_CHANGE_RIGHT}),
        offset_ok=True,
    ),
    LateralDecision.LANE_CHANGE: LateralRule(
        required=frozenset({LAT.LANE_CHANGE_LEFT, LAT.STEER_LEFT}),
        forbidden=frozenset({LAT.LANE_CHANGE_RIGHT}),
        offset_ok=True,
    ),
    LateralDecision.PULL_OVER: LateralRule(
        required=frozenset({LAT.STEER_LEFT, LAT.LANE_CHANGE_LEFT}),
        forbidden=frozenset({LAT.LANE_CHANGE_RIGHT, LAT.SHARP_STEER_RIGHT}),
        offset_ok=True,
    ),
    # a turn may first swing the other way (entering a roundabout) and may wait at the line
    LateralDecision.TURN: LateralRule(
        required=frozenset({LAT.STEER_LEFT, LAT.SHARP_STEER_LEFT}), waiting_ok=True
    ),
    # the side of a lateral abort is the direction of the move back into the original lane
    LateralDecision.LATERAL_ABORT: LateralRule(
        required=frozenset({LAT.STEER_LEFT, LAT.LANE_CHANGE_LEFT}),
        forbidden=frozenset({LAT.LANE_CHANGE_RIGHT}),
        offset_ok=True,
    ),
}


def lateral_rule_for(decision: LateralDecision, side: Side) -> LateralRule:
    """The table row for `decision` with its actions mirrored for side RIGHT."""
    rule = LATERAL_COMPATIBILITY[decision]
    if side != Side.RIGHT:
        return rule
    return LateralRule(
        required=frozenset(_MIRROR[a] for a in rule.required),
        forbidden=frozenset(_MIRROR[a] for a in rule.forbidden),
        offset_ok=rule.offset_ok,
        needs_side=rule.needs_side,
        waiting_ok=rule.waiting_ok,
    )


@dataclass(frozen=True)
class ConsistencyResult:
    longitudinal: bool
    lateral: bool
    joint: bool
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "longitudinal": self.longitudinal,
            "lateral": self.lateral,
            "joint": self.joint,
            "reasons": list(self.reasons),
        }


def _longitudinal_consistent(
    decision: LongitudinalDecision, ma: MetaActions, cfg: MetaActionConfig
) -> list[str]:
    rule = LONGITUDINAL_COMPATIBILITY[decision]
    window = min(cfg.longitudinal_window_s, ma.horizon_s)
    reasons: list[str] = []
    present = ma.actions("longitudinal", 0.0, window)
    bad = [a.value for a in present if a in rule.forbidden]
    if bad:
        reasons.append(
            f"longitudinal {decision.value} forbids {', '.join(bad)} within {window:g} s"
        )
    allowed_time = ma.duration_of("longitudinal", rule.allowed - {LON.MAINTAIN_SPEED}, 0, window)
    if LON.MAINTAIN_SPEED in rule.allowed:
        dt = ma.horizon_s / len(ma.speed_mps)
        for seg in ma.longitudinal:
            if seg.action != LON.MAINTAIN_SPEED or seg.start_s >= window:
                continue
            k0, k1 = int(round(seg.start_s / dt)), int(round(seg.end_s / dt))
            slow = (
                not rule.maintain_only_slow
                or float(ma.speed_mps[k0:k1].mean()) <= cfg.low_speed_mps
            )
            if slow:
                allowed_time += max(0.0, min(seg.end_s, window) - seg.start_s)
    if allowed_time < cfg.min_allowed_fraction * window - 1e-9:
        reasons.append(
            f"longitudinal {decision.value}: allowed meta-actions cover {allowed_time:.1f} of "
            f"the first {window:g} s (need {cfg.min_allowed_fraction:.0%}); got "
            f"{', '.join(a.value for a in present)}"
        )
    if rule.required and not set(ma.actions("longitudinal")) & rule.required:
        reasons.append(
            f"longitudinal {decision.value} needs one of "
            f"{', '.join(sorted(a.value for a in rule.required))} in the horizon"
        )
    return reasons


def _lateral_consistent(
    decision: LateralDecision, side: Side, ma: MetaActions, cfg: MetaActionConfig
) -> list[str]:
    rule = LATERAL_COMPATIBILITY[decision]
    reasons: list[str] = []
    if rule.needs_side and side not in (Side.LEFT, Side.RIGHT):
        return [f"lateral {decision.value} needs a side (left/right), got {side.value}"]
    mirrored = lateral_rule_for(decision, side)
    present = ma.actions("lateral")
    bad = [a.value for a in present if a in mirrored.forbidden]
    if bad:
        reasons.append(f"lateral {decision.value} {side.value} forbids {', '.join(bad)}")
    waiting = False
    if mirrored.waiting_ok:
        dt = ma.horizon_s / max(len(ma.speed_mps), 1)
        travel = float(np.sum(ma.speed_mps) * dt)
        waiting = LON.STOP in ma.actions("longitudinal") or travel < cfg.turn_min_travel_m
    if mirrored.required and not set(present) & mirrored.required and not waiting:
        moved = ma.max_left_offset_m if side == Side.LEFT else ma.max_right_offset_m
        need = cfg.nudge_min_offset_m
        if decision in (LateralDecision.LANE_CHANGE, LateralDecision.MERGE_SPLIT):
            need = cfg.lane_change_min_progress_fraction * ma.lane_width_m
        if not (mirrored.offset_ok and moved >= need):
            reasons.append(
                f"lateral {decision.value} {side.value} needs one of "
                f"{', '.join(sorted(a.value for a in mirrored.required))}"
                + (f" or a {need:.2f} m move {side.value}" if mirrored.offset_ok else "")
                + f"; got {', '.join(a.value for a in present)} (moved {moved:.2f} m)"
            )
    return reasons


def is_consistent(
    decision: Decision, meta: MetaActions, cfg: MetaActionConfig | None = None
) -> ConsistencyResult:
    """Is the structured decision compatible with the meta-actions of a trajectory?
    (the table in docs/META_ACTIONS.md)."""
    cfg = cfg or MetaActionConfig()
    lon_reasons = _longitudinal_consistent(decision.longitudinal, meta, cfg)
    lat_reasons = _lateral_consistent(decision.lateral, decision.lateral_side, meta, cfg)
    return ConsistencyResult(
        longitudinal=not lon_reasons,
        lateral=not lat_reasons,
        joint=not lon_reasons and not lat_reasons,
        reasons=tuple(lon_reasons + lat_reasons),
    )


__all__ = [
    "LATERAL_COMPATIBILITY",
    "LONGITUDINAL_COMPATIBILITY",
    "ConsistencyResult",
    "LateralRule",
    "LongitudinalRule",
    "MetaActionConfig",
    "MetaActionSegment",
    "MetaActions",
    "is_consistent",
    "lateral_rule_for",
    "meta_actions",
]
