"""Trajectory metrics: pure functions over a plan, the logged future and masks.

One module for every consumer that scores a plan against what happened: open-loop evaluation
on logs (`sim_eval.open_loop`), training validation and the runtime guard. Plans and ground
truth are (T, 2) positions at t0 + dt, 2 dt, ..., T dt (the project's 64 x 0.1 s rows), both
in the same frame (the ego frame at t0 unless a function says otherwise); `valid` (T,) marks
the rows the log really has. A metric whose rows are all masked is NaN (undefined), never 0.

Conventions that papers mix, always labelled here (docs/OPEN_LOOP.md):
- ADE@t / FDE@t: mean error over the valid rows up to t / the error at the row at t.
- L2@t, ST-P3 convention: the mean of the errors at the evaluation times up to t;
  L2@t, UniAD convention: the error at t. The published nuScenes tables evaluate the plan
  every 0.5 s (`l2_step_s`), so ST-P3 L2@1s = mean(e(0.5 s), e(1.0 s)).
- Miss: final displacement > 2 m (Argoverse style) and nuScenes' definition, the maximum
  pointwise distance > 2 m; over k samples a window is missed when every sample misses.
- minADE_k / minFDE_k: the minimum over the k samples, each minimised on its own (nuScenes).

Collision and off-road use shapely 2's vectorised predicates over (time, agent) pairs: the
ego footprint is the `length x width` box whose centre is `rear_axle_to_center_m` ahead of
the plan's rear-axle point, oriented by the plan's yaw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from planner.types import PLAN_DT_S, InvalidInputError, Trajectory

# Columns of an agent-box array (N, T, 5), world (or the plan's) frame, box centre; NaN where
# the agent is not observed at that time.
BOX_X, BOX_Y, BOX_YAW, BOX_LENGTH, BOX_WIDTH = range(5)


@dataclass
class TrajectoryMetricsConfig:
    """Horizons and thresholds of the trajectory metrics (units in the names)."""

    ade_horizons_s: tuple[float, ...] = (1.0, 2.0, 3.0, 6.4)  # ADE and FDE at each
    l2_horizons_s: tuple[float, ...] = (1.0, 2.0, 3.0)  # L2 in both conventions at each
    # L2 is read every this many seconds (the published nuScenes tables: 2 Hz keyframes)
    l2_step_s: float = 0.5
    miss_threshold_m: float = 2.0  # both miss-rate definitions
    # Collision: the ego footprint is widened by this per side (0: touching is contact)
    collision_margin_m: float = 0.0
    # Collision and off-road are judged up to this horizon (the whole plan by default)
    collision_horizon_s: float = 6.4
    offroad_horizon_s: float = 6.4
    # Off-road tolerances: the closed-loop rule (sim_eval.metrics.OffroadConfig)
    offroad_area_tolerance_m2: float = 0.5
    offroad_distance_tolerance_m: float = 0.3

    def __post_init__(self) -> None:
        for name in ("ade_horizons_s", "l2_horizons_s"):
            values = getattr(self, name)
            if not values or any(not (h > 0) for h in values):
                raise InvalidInputError(f"{name} must be positive horizons, got {values}")
        if self.l2_step_s <= 0 or self.miss_threshold_m <= 0:
            raise InvalidInputError("l2_step_s and miss_threshold_m must be positive")


def horizon_label(horizon_s: float) -> str:
    """'1s', '6.4s': the suffix of metric names."""
    return f"{horizon_s:g}s"


# ---- masks and basic errors ------------------------------------------------------------------
def _check_pair(
    pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None
) -> tuple[np.ndarray, ...]:
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.ndim != 2 or pred.shape[1] != 2 or gt.shape != pred.shape:
        raise InvalidInputError(
            f"metrics need pred and gt as (T, 2) positions of the same length, got "
            f"{pred.shape} and {gt.shape}"
        )
    if valid is None:
        valid = np.ones(len(gt), bool)
    valid = np.asarray(valid, dtype=bool).reshape(-1)
    if valid.shape != (len(gt),):
        raise InvalidInputError(f"valid mask has {valid.shape} entries for {len(gt)} rows")
    # a NaN row in the ground truth is never valid, whatever the mask says
    valid = valid & np.isfinite(gt).all(axis=1) & np.isfinite(pred).all(axis=1)
    return pred, gt, valid


def step_index(horizon_s: float, dt: float = PLAN_DT_S) -> int:
    """Row of the time t0 + horizon_s (row k is at (k + 1) dt)."""
    return int(round(horizon_s / dt)) - 1


def displacement_errors(
    pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None
) -> np.ndarray:
    """(T,) Euclidean error per row, NaN where the row is not valid."""
    pred, gt, valid = _check_pair(pred, gt, valid)
    err = np.hypot(pred[:, 0] - gt[:, 0], pred[:, 1] - gt[:, 1])
    err[~valid] = np.nan
    return err


def _mean_valid(err: np.ndarray) -> float:
    ok = np.isfinite(err)
    return float(err[ok].mean()) if ok.any() else math.nan


def ade(
    pred: np.ndarray,
    gt: np.ndarray,
    valid: np.ndarray | None = None,
    horizon_s: float | None = None,
    dt: float = PLAN_DT_S,
) -> float:
    """Average displacement error over the valid rows up to `horizon_s` (all rows if None)."""
    err = displacement_errors(pred, gt, valid)
    if horizon_s is not None:
        err = err[: step_index(horizon_s, dt) + 1]
    return _mean_valid(err)


def fde(
    pred: np.ndarray,
    gt: np.ndarray,
    valid: np.ndarray | None = None,
    horizon_s: float | None = None,
    dt: float = PLAN_DT_S,
) -> float:
    """Displacement error at `horizon_s` (the last row if None); NaN if that row is invalid."""
    err = displacement_errors(pred, gt, valid)
    k = len(err) - 1 if horizon_s is None else step_index(horizon_s, dt)
    if not 0 <= k < len(err):
        return math.nan
    return float(err[k])


def l2_stp3(
    pred: np.ndarray,
    gt: np.ndarray,
    valid: np.ndarray | None,
    horizon_s: float,
    step_s: float = 0.5,
    dt: float = PLAN_DT_S,
) -> float:
    """L2@horizon, ST-P3 convention: mean of the errors at step_s, 2 step_s, ..., horizon_s.
    NaN when any of those times is invalid (the published tables use complete windows)."""
    err = displacement_errors(pred, gt, valid)
    times = step_s * np.arange(1, int(round(horizon_s / step_s)) + 1)
    rows = [step_index(t, dt) for t in times]
    if not rows or rows[-1] >= len(err):
        return math.nan
    values = err[rows]
    return float(values.mean()) if np.isfinite(values).all() else math.nan


def l2_uniad(
    pred: np.ndarray,
    gt: np.ndarray,
    valid: np.ndarray | None,
    horizon_s: float,
    dt: float = PLAN_DT_S,
) -> float:
    """L2@horizon, UniAD convention: the error at horizon_s alone."""
    return fde(pred, gt, valid, horizon_s, dt)


def max_displacement(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Largest error over the valid rows (nuScenes' miss criterion)."""
    err = displacement_errors(pred, gt, valid)
    ok = np.isfinite(err)
    return float(err[ok].max()) if ok.any() else math.nan


def _stack_samples(samples: np.ndarray | list[np.ndarray]) -> np.ndarray:
    arr = np.asarray(samples, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[2] != 2 or len(arr) == 0:
        raise InvalidInputError(f"samples must be (k, T, 2) positions, got {arr.shape}")
    return arr


def min_ade_fde(
    samples: np.ndarray | list[np.ndarray],
    gt: np.ndarray,
    valid: np.ndarray | None = None,
) -> dict[str, Any]:
    """minADE_k and minFDE_k over k sampled plans (k, T, 2), each minimised independently
    (nuScenes), with the index of the sample that reaches each."""
    arr = _stack_samples(samples)
    ades = np.array([ade(s, gt, valid) for s in arr])
    fdes = np.array([fde(s, gt, valid) for s in arr])

    def best(values: np.ndarray) -> tuple[float, int | None]:
        ok = np.isfinite(values)
        if not ok.any():
            return math.nan, None
        i = int(np.nanargmin(values))
        return float(values[i]), i

    min_ade, i_ade = best(ades)
    min_fde, i_fde = best(fdes)
    return {
        "k": len(arr),
        "min_ade": min_ade,
        "min_fde": min_fde,
        "best_ade_index": i_ade,
        "best_fde_index": i_fde,
    }


def miss_final(
    samples: np.ndarray | list[np.ndarray],
    gt: np.ndarray,
    valid: np.ndarray | None = None,
    threshold_m: float = 2.0,
) -> bool | None:
    """Missed by final displacement: every sample's error at the last row > threshold.
    None when the last row is invalid."""
    fdes = [fde(s, gt, valid) for s in _stack_samples(samples)]
    if not all(math.isfinite(f) for f in fdes):
        return None
    return bool(min(fdes) > threshold_m)


def miss_max_distance(
    samples: np.ndarray | list[np.ndarray],
    gt: np.ndarray,
    valid: np.ndarray | None = None,
    threshold_m: float = 2.0,
) -> bool | None:
    """Missed in nuScenes' sense: every sample's maximum pointwise error over the valid rows
    exceeds the threshold. None when no row is valid."""
    maxes = [max_displacement(s, gt, valid) for s in _stack_samples(samples)]
    if not all(math.isfinite(m) for m in maxes):
        return None
    return bool(min(maxes) > threshold_m)


def displacement_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    valid: np.ndarray | None = None,
    samples: np.ndarray | list[np.ndarray] | None = None,
    cfg: TrajectoryMetricsConfig | None = None,
    dt: float = PLAN_DT_S,
) -> dict[str, Any]:
    """Every displacement metric of one plan (and its k samples) as a flat dict:
    ade_{h}, fde_{h} for each ADE horizon, l2_stp3_{h} and l2_uniad_{h} for each L2 horizon,
    min_ade_k / min_fde_k (k = 1 without samples), miss_fde and miss_max (of the plan) and
    miss_fde_k / miss_max_k (of the samples). NaN / None where undefined."""
    cfg = cfg or TrajectoryMetricsConfig()
    out: dict[str, Any] = {}
    for h in cfg.ade_horizons_s:
        label = horizon_label(h)
        out[f"ade_{label}"] = ade(pred, gt, valid, h, dt)
        out[f"fde_{label}"] = fde(pred, gt, valid, h, dt)
    for h in cfg.l2_horizons_s:
        label = horizon_label(h)
        out[f"l2_stp3_{label}"] = l2_stp3(pred, gt, valid, h, cfg.l2_step_s, dt)
        out[f"l2_uniad_{label}"] = l2_uniad(pred, gt, valid, h, dt)
    thr = cfg.miss_threshold_m
    out["miss_fde"] = miss_final(pred, gt, valid, thr)
    out["miss_max"] = miss_max_distance(pred, gt, valid, thr)
    sampled = _stack_samples(pred if samples is None else samples)
    best = min_ade_fde(sampled, gt, valid)
    out["k"] = best["k"]
    out["min_ade_k"] = best["min_ade"]
    out["min_fde_k"] = best["min_fde"]
    out["miss_fde_k"] = miss_final(sampled, gt, valid, thr)
    out["miss_max_k"] = miss_max_distance(sampled, gt, valid, thr)
    return out


# ---- footprints, collision, off-road ---------------------------------------------------------------
def box_corners_batch(
    x: np.ndarray, y: np.ndarray, yaw: np.ndarray, length: np.ndarray, width: np.ndarray
) -> np.ndarray:
    """(..., 4, 2) corners of oriented boxes (centre pose), same order as
    planner.types.box_corners: front-left, rear-left, rear-right, front-right."""
    x, y, yaw, length, width = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (x, y, yaw, length, width))
    )
    c, s = np.cos(yaw), np.sin(yaw)
    hl, hw = length / 2.0, width / 2.0
    lx = np.stack([hl, -hl, -hl, hl], axis=-1)  # (..., 4)
    ly = np.stack([hw, hw, -hw, -hw], axis=-1)
    cx = x[..., None] + c[..., None] * lx - s[..., None] * ly
    cy = y[..., None] + s[..., None] * lx + c[..., None] * ly
    return np.stack([cx, cy], axis=-1)


def ego_footprints(
    plan_xy: np.ndarray,
    plan_yaw: np.ndarray,
    length_m: float,
    width_m: float,
    rear_axle_to_center_m: float,
    margin_m: float = 0.0,
) -> np.ndarray:
    """(T, 4, 2) ego boxes along a plan whose points are the rear-axle centre."""
    plan_xy = np.asarray(plan_xy, dtype=np.float64)
    yaw = np.asarray(plan_yaw, dtype=np.float64)
    cx = plan_xy[:, 0] + rear_axle_to_center_m * np.cos(yaw)
    cy = plan_xy[:, 1] + rear_axle_to_center_m * np.sin(yaw)
    return box_corners_batch(cx, cy, yaw, length_m + 2 * margin_m, width_m + 2 * margin_m)


@dataclass
class CollisionResult:
    collided: bool
    first_step: int | None = None  # plan row of the first contact
    agent_index: int | None = None  # index into the agent-box array
    time_s: float | None = None  # seconds after t0

    def to_dict(self) -> dict[str, Any]:
        return {
            "collided": self.collided,
            "first_step": self.first_step,
            "agent_index": self.agent_index,
            "time_s": self.time_s,
        }


def plan_collision(
    plan_xy: np.ndarray,
    plan_yaw: np.ndarray,
    agent_boxes: np.ndarray,
    *,
    length_m: float,
    width_m: float,
    rear_axle_to_center_m: float,
    margin_m: float = 0.0,
    horizon_s: float | None = None,
    dt: float = PLAN_DT_S,
) -> CollisionResult:
    """Does the ego footprint along the plan overlap a logged agent box at the same time?

    plan_xy (T, 2) rear-axle points and plan_yaw (T,), in the same frame as agent_boxes
    (N, T, 5): x, y, yaw, length, width per agent and row (box centre), NaN where the agent
    is not observed (those pairs are skipped). Boxes that touch count as contact."""
    import shapely

    boxes = np.asarray(agent_boxes, dtype=np.float64)
    plan_xy = np.asarray(plan_xy, dtype=np.float64)
    steps = len(plan_xy)
    if horizon_s is not None:
        steps = min(steps, step_index(horizon_s, dt) + 1)
    if boxes.size == 0:
        return CollisionResult(False)
    if boxes.ndim != 3 or boxes.shape[2] != 5 or boxes.shape[1] < steps:
        raise InvalidInputError(
            f"agent_boxes must be (N, T>={steps}, 5) x, y, yaw, length, width; got {boxes.shape}"
        )
    boxes = boxes[:, :steps]
    ego = ego_footprints(
        plan_xy[:steps],
        np.asarray(plan_yaw)[:steps],
        length_m,
        width_m,
        rear_axle_to_center_m,
        margin_m,
    )  # (T, 4, 2)
    seen = np.isfinite(boxes).all(axis=2)  # (N, T)
    if not seen.any():
        return CollisionResult(False)
    a_idx, t_idx = np.nonzero(seen)
    b = boxes[a_idx, t_idx]
    agent_corners = box_corners_batch(
        b[:, BOX_X], b[:, BOX_Y], b[:, BOX_YAW], b[:, BOX_LENGTH], b[:, BOX_WIDTH]
    )  # (M, 4, 2)
    hits = shapely.intersects(shapely.polygons(ego[t_idx]), shapely.polygons(agent_corners))
    if not hits.any():
        return CollisionResult(False)
    order = np.lexsort((a_idx[hits], t_idx[hits]))  # earliest time first
    t_first = int(t_idx[hits][order[0]])
    return CollisionResult(
        True,
        first_step=t_first,
        agent_index=int(a_idx[hits][order[0]]),
        time_s=(t_first + 1) * dt,
    )


def footprint_outside(drivable_area: Any, polys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For shapely footprints `polys` (T,): (area outside the drivable area m^2, farthest
    footprint point from it m), both (T,). The distance is sampled at the 4 corners and 4 edge
    midpoints (exact for a convex area; close enough for lane unions). One definition for
    the closed-loop (sim_eval.metrics) and open-loop (plan_offroad) off-road checks."""
    import shapely

    shapely.prepare(drivable_area)
    covered = shapely.covers(drivable_area, polys)
    out_area = np.zeros(len(polys))
    out_dist = np.zeros(len(polys))
    nc = np.flatnonzero(~covered)
    if len(nc):
        out_area[nc] = shapely.area(shapely.difference(polys[nc], drivable_area))
        corners = shapely.get_coordinates(polys[nc]).reshape(len(nc), 5, 2)[:, :4]
        mids = 0.5 * (corners + np.roll(corners, -1, axis=1))
        pts = np.concatenate([corners, mids], axis=1).reshape(-1, 2)
        d = shapely.distance(shapely.points(pts), drivable_area).reshape(len(nc), 8)
        out_dist[nc] = d.max(axis=1)
    return out_area, out_dist


def plan_offroad(
    plan_xy: np.ndarray,
    plan_yaw: np.ndarray,
    drivable_area: Any,
    *,
    length_m: float,
    width_m: float,
    rear_axle_to_center_m: float,
    horizon_s: float | None = None,
    dt: float = PLAN_DT_S,
    area_tolerance_m2: float = 0.5,
    distance_tolerance_m: float = 0.3,
) -> dict[str, Any]:
    """Does the ego footprint along the plan leave the drivable area (a shapely geometry in
    the plan's frame)? A row is off-road when the footprint sticks out by more than
    `area_tolerance_m2` or `distance_tolerance_m`: the closed-loop rule and defaults
    (sim_eval.metrics.OffroadConfig), so the slivers between lane polygons of a junction or a
    lane-drop taper do not count. Returns {"offroad": bool | None (None without a map),
    "first_step", "time_s"}."""
    import shapely

    if drivable_area is None or drivable_area.is_empty:
        return {"offroad": None, "first_step": None, "time_s": None}
    plan_xy = np.asarray(plan_xy, dtype=np.float64)
    steps = len(plan_xy)
    if horizon_s is not None:
        steps = min(steps, step_index(horizon_s, dt) + 1)
    ego = ego_footprints(
        plan_xy[:steps], np.asarray(plan_yaw)[:steps], length_m, width_m, rear_axle_to_center_m
    )
    out_area, out_dist = footprint_outside(drivable_area, shapely.polygons(ego))
    out = np.flatnonzero((out_area > area_tolerance_m2) | (out_dist > distance_tolerance_m))
    if not len(out):
        return {"offroad": False, "first_step": None, "time_s": None}
    k = int(out[0])
    return {"offroad": True, "first_step": k, "time_s": (k + 1) * dt}


# ---- reasoning against the plan ---------------------------------------------------------------
@dataclass
class ReasoningCheck:
    """Reasoning-action consistency (and, given a scene, truthfulness) of one output."""

    parsed: bool  # the text states a decision the parser reads
    longitudinal: bool | None = None
    lateral: bool | None = None
    joint: bool | None = None
    reasons: list[str] = field(default_factory=list)
    decision: dict[str, Any] | None = None
    stated_claims: int | None = None  # factors the text states
    false_claims: list[str] | None = None  # those the scene contradicts

    @property
    def truthful(self) -> bool | None:
        return None if self.false_claims is None else not self.false_claims

    def to_dict(self) -> dict[str, Any]:
        return {
            "parsed": self.parsed,
            "consistent_longitudinal": self.longitudinal,
            "consistent_lateral": self.lateral,
            "consistent_joint": self.joint,
            "consistency_reasons": list(self.reasons),
            "stated_decision": self.decision,
            "stated_claims": self.stated_claims,
            "false_claims": self.false_claims,
            "truthful": self.truthful,
        }


def check_reasoning(
    text: str,
    trajectory: Trajectory,
    *,
    scene: Any | None = None,
    lane_geometry: np.ndarray | None = None,
    v0: float | None = None,
    meta_action_config: Any | None = None,
) -> ReasoningCheck:
    """Does the plan do what its reasoning says? The text is parsed into the taxonomy
    (`planner.coc.parse_reasoning`) and checked against the meta-actions of the plan through
    the compatibility table (`planner.meta_actions.is_consistent`): longitudinal, lateral
    and joint. With a `scene`, the stated distances, speeds and objects are also checked
    against it (`planner.coc.verify_text`): truthfulness."""
    from planner.coc import parse_reasoning, verify_text
    from planner.meta_actions import is_consistent, meta_actions

    if scene is not None:
        decision, problems = verify_text(text, scene)
    else:
        decision, problems = parse_reasoning(text), None
    if decision is None:
        return ReasoningCheck(parsed=False)
    ma = meta_actions(trajectory, lane_geometry, meta_action_config, v0=v0)
    result = is_consistent(decision, ma, meta_action_config)
    return ReasoningCheck(
        parsed=True,
        longitudinal=result.longitudinal,
        lateral=result.lateral,
        joint=result.joint,
        reasons=list(result.reasons),
        decision=decision.to_dict(),
        stated_claims=len(decision.factors),
        false_claims=None if problems is None else list(problems),
    )


__all__ = [
    "CollisionResult",
    "ReasoningCheck",
    "TrajectoryMetricsConfig",
    "ade",
    "box_corners_batch",
    "check_reasoning",
    "displacement_errors",
    "displacement_metrics",
    "ego_footprints",
    "fde",
    "horizon_label",
    "l2_stp3",
    "l2_uniad",
    "max_displacement",
    "min_ade_fde",
    "miss_final",
    "miss_max_distance",
    "plan_collision",
    "plan_offroad",
    "footprint_outside",
    "step_index",
]
