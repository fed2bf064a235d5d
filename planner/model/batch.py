"""Model inputs and training targets: pre/post-processing as explicit steps (LeRobot style).

`prompt_arrays(inp, cfg)` turns a `PlannerInput` into the model's prompt arrays (checked, with
errors that say what to fix); `make_example(...)` adds the training targets (text ids, loss
masks, normalised controls); `collate(...)` stacks examples into a batch of tensors whose keys
are the constants below (the only place batch keys are spelled).

Text layout after the prompt (positions P, P+1, ...):
    full:  <cot> reasoning... </cot> <traj> a1 k1 ... a16 k16 <eos>
    fast:  <traj> a1 k1 ... a16 k16 <eos>            (reasoning dropout / `fast` mode)
The first token is the mode's choice and is never a target. The expert sees the prompt and
the text up to and including <traj> (`context_len` text tokens).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from planner.model.config import ModelConfig, NormalizationConfig, TrajectoryTokenConfig
from planner.model.tokenizer import CocTokenizer
from planner.taxonomy import Command
from planner.types import (
    EGO_ACCEL,
    EGO_CURV,
    EGO_SPEED,
    EGO_X,
    EGO_Y,
    EGO_YAW,
    MAX_ABS_CURVATURE_PER_M,
    InvalidInputError,
    PlannerInput,
)

CAMERAS = "cameras"  # (B, N_cam, T, H, W, 3) uint8
EGO_HISTORY = "ego_history"  # (B, H, 6) float32, normalised
ROUTE = "route"  # (B, route tokens, 2 * points per token) float32, normalised
COMMAND = "command"  # (B,) int64 index into planner.taxonomy.Command
SPEED_LIMIT = "speed_limit"  # (B,) float32, normalised
TEXT_IDS = "text_ids"  # (B, L) int64, right-padded
REASONING_TARGETS = "reasoning_targets"  # (B, L) float32: 1 where text_ids[j] is a CoC target
TRAJECTORY_TARGETS = "trajectory_targets"  # (B, L) float32: 1 for trajectory-token targets
CONTEXT_LEN = "context_len"  # (B,) int64: text tokens the expert sees (through <traj>)
CONTROLS = "controls"  # (B, 64, 2) float32: what the flow generates, normalised (accel,
# curvature) minus `action_prior` (zero unless flow.prior is set)

COMMAND_INDEX = {c: i for i, c in enumerate(Command)}
# columns of `ego_features` (x, y, yaw, speed, a, k)
FEATURE_SPEED, FEATURE_ACCEL, FEATURE_CURV = 3, 4, 5


def normalize_controls(controls: np.ndarray, norm: NormalizationConfig) -> np.ndarray:
    """(..., 64, 2) physical (accel m/s^2, curvature 1/m) -> normalised, after clamping."""
    c = np.asarray(controls, dtype=np.float32)
    accel = np.clip(c[..., 0], -norm.accel_clamp_mps2, norm.accel_clamp_mps2)
    curv = np.clip(c[..., 1], -norm.curvature_clamp_per_m, norm.curvature_clamp_per_m)
    return np.stack(
        [
            (accel - norm.accel_mean_mps2) / norm.accel_std_mps2,
            (curv - norm.curvature_mean_per_m) / norm.curvature_std_per_m,
        ],
        axis=-1,
    ).astype(np.float32)


def denormalize_controls(x: np.ndarray, norm: NormalizationConfig) -> np.ndarray:
    """Inverse of `normalize_controls`, clamped to the physical limits (float64)."""
    x = np.asarray(x, dtype=np.float64)
    accel = x[..., 0] * norm.accel_std_mps2 + norm.accel_mean_mps2
    curv = x[..., 1] * norm.curvature_std_per_m + norm.curvature_mean_per_m
    return np.stack(
        [
            np.clip(accel, -norm.accel_clamp_mps2, norm.accel_clamp_mps2),
            np.clip(curv, -norm.curvature_clamp_per_m, norm.curvature_clamp_per_m),
        ],
        axis=-1,
    )


def action_prior(
    ego_history: np.ndarray, cfg: ModelConfig, route: np.ndarray | None = None
) -> np.ndarray:
    """(H, 6) normalised ego features (`ego_features`) and the (tokens, 2 * points) route
    features (`route_features`; needed by "route_pursuit") -> (64, 2) the flow's prior
    (`flow.prior`) in normalised units: zeros for "none"; for "hold_decay" the current
    acceleration and curvature, decaying as exp(-t / prior_tau_s) over the plan; for
    "hold_curvature" the decaying curvature only; for "route_pursuit" zero acceleration and
    the curvature that follows the route (`route_pursuit_curvature`). Training subtracts it
    from the target controls and the runner adds it back, both through this function."""
    steps = cfg.plan_steps
    if cfg.flow.prior == "none":
        return np.zeros((steps, 2), dtype=np.float32)
    norm = cfg.normalization
    last = np.asarray(ego_history, dtype=np.float64)[-1]
    # a shift in normalised units (scaled, no mean): "none" (zeros) and this agree on what a
    # zero flow output means, the dataset-mean control plus the prior
    scale = np.array([norm.accel_std_mps2, norm.curvature_std_per_m])
    if cfg.flow.prior == "route_pursuit":
        if route is None:
            raise ValueError("flow.prior=route_pursuit needs the route features")
        route_xy = np.asarray(route, dtype=np.float64).reshape(-1, 2) * np.array(
            norm.route_scales_m
        )
        v0 = max(0.0, float(last[FEATURE_SPEED]) * norm.speed_scale_mps)
        if cfg.flow.prior_lane_change_s > 0:
            lane_change_m = max(cfg.flow.prior_lookahead_min_m, cfg.flow.prior_lane_change_s * v0)
            route_xy = spread_route_jogs(route_xy, lane_change_m)
        curv = route_pursuit_curvature(
            route_xy,
            v0,
            steps,
            cfg.plan_dt_s,
            cfg.flow.prior_lookahead_s,
            cfg.flow.prior_lookahead_min_m,
        )
        return (np.stack([np.zeros(steps), curv], axis=1) / scale).astype(np.float32)
    accel = last[FEATURE_ACCEL] * norm.accel_std_mps2 + norm.accel_mean_mps2
    curv = last[FEATURE_CURV] * norm.curvature_std_per_m + norm.curvature_mean_per_m
    if cfg.flow.prior == "hold_curvature":
        accel = 0.0
    decay = np.exp(-np.arange(steps) * cfg.plan_dt_s / cfg.flow.prior_tau_s)
    return (np.stack([accel * decay, curv * decay], axis=1) / scale).astype(np.float32)


# A jog: one or two consecutive segments (JOG_MAX_LENGTH_M in all) that turn by more than
# JOG_ENTER_DEG from the segment before them, after which the next two segments run within
# JOG_EXIT_DEG of that heading again, displacing the route sideways by JOG_MIN_OFFSET_M to
# JOG_MAX_OFFSET_M (one lane), steeply (sideways / along >= JOG_MIN_SLOPE, i.e. at 24 degrees
# or more on average: joined lane centrelines give 30-50). Bends never turn back; the S
# through or out of a roundabout turns back, but gently or further sideways (8-10 m).
JOG_ENTER_DEG = 15.0
JOG_EXIT_DEG = 10.0
JOG_MAX_SEGMENTS = 2
JOG_MAX_LENGTH_M = 9.0
JOG_MIN_OFFSET_M = 1.0
JOG_MAX_OFFSET_M = 5.0
JOG_MIN_SLOPE = 0.4


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def spread_route_jogs(route_xy: np.ndarray, distance_m: float) -> np.ndarray:
    """(K, 2) route polyline -> the same polyline with every lateral jog (constants above)
    spread over the `distance_m` of route before it: the points before the jog move sideways
    by the jog's offset times a smoothstep that rises from 0 at `distance_m` before the jog to
    1 at its start, and the jog's own points line up with the route after it. A lane-level
    route that switches lanes steps sideways in a few metres (the lane centrelines joined);
    a driver changes lanes over seconds, ending where the route says. Bends are unchanged."""
    r = np.asarray(route_xy, dtype=np.float64).reshape(-1, 2).copy()
    if len(r) < 3 or distance_m <= 0 or not np.isfinite(r).all():
        return r
    seg = np.diff(r, axis=0)
    seg_len = np.linalg.norm(seg, axis=1)
    heading = np.arctan2(seg[:, 1], seg[:, 0])
    s_nodes = np.concatenate([[0.0], np.cumsum(seg_len)])

    def turn(a: float, b: float) -> float:
        return abs(math.degrees(math.remainder(b - a, 2 * math.pi)))

    k = 1
    while k < len(seg):
        ref = heading[k - 1]
        if seg_len[k - 1] < 1e-6 or turn(ref, heading[k]) <= JOG_ENTER_DEG:
            k += 1
            continue
        end = k  # the jog is segments k .. end - 1; segment `end` runs along ref again
        while (
            end < len(seg) and end - k < JOG_MAX_SEGMENTS and turn(ref, heading[end]) > JOG_EXIT_DEG
        ):
            end += 1
        jog_length = s_nodes[end] - s_nodes[k]
        if (
            end >= len(seg)
            or turn(ref, heading[end]) > JOG_EXIT_DEG
            or (end + 1 < len(seg) and turn(ref, heading[end + 1]) > JOG_EXIT_DEG)
            or jog_length > JOG_MAX_LENGTH_M
        ):
            k += 1
            continue
        normal = np.array([-math.sin(ref), math.cos(ref)])
        partial = np.concatenate([[0.0], np.cumsum(seg[k:end] @ normal)])  # at nodes k..end
        offset = partial[-1]
        if not (
            JOG_MIN_OFFSET_M <= abs(offset) <= JOG_MAX_OFFSET_M
            and abs(offset) >= JOG_MIN_SLOPE * jog_length
        ):
            k = end + 1
            continue
        # the jog's inner nodes line up with node `end` (sideways), the nodes before it ramp
        r[k + 1 : end + 1] += np.outer(offset - partial[1:], normal)
        w = _smoothstep((s_nodes[: k + 1] - (s_nodes[k] - distance_m)) / distance_m)
        r[: k + 1] += np.outer(w * offset, normal)
        k = end + 1
    return r


def route_pursuit_curvature(
    route_xy: np.ndarray,
    v0: float,
    steps: int,
    dt: float,
    lookahead_s: float,
    lookahead_min_m: float,
) -> np.ndarray:
    """(steps,) curvature of a pure-pursuit follower (Coulter 1992) of the route polyline
    (ego frame at t0, points ahead of the ego's projection) driven at constant speed v0 from
    the ego pose: at each 0.1 s step the look-ahead point is max(lookahead_min_m,
    lookahead_s * v0) along the route beyond the follower's projection, and the curvature is
    2 y / d^2 of that point in the follower's frame, clamped to the control limit. Written by
    hand: a 64-step rollout on a 20-point polyline, run per sample in the data loader, where
    a path-tracking library would cost more than it saves."""
    r = np.asarray(route_xy, dtype=np.float64).reshape(-1, 2)
    if len(r) < 2 or not np.isfinite(r).all():
        return np.zeros(steps)
    # the route starts one spacing ahead of the ego's projection: extend it backwards by four
    # spacings (16 m) along its first segment, so the follower projects inside the polyline
    # even when it starts a little behind the route's start
    r = np.concatenate([r[:1] - 4.0 * (r[1:2] - r[:1]), r], axis=0)
    seg = np.diff(r, axis=0)
    seg_len = np.maximum(np.linalg.norm(seg, axis=1), 1e-9)
    s_nodes = np.concatenate([[0.0], np.cumsum(seg_len)])
    look = max(lookahead_min_m, lookahead_s * v0)
    x = y = yaw = 0.0
    out = np.zeros(steps)
    for k in range(steps):
        # projection of the follower on every segment, keep the nearest
        rel = np.array([x, y]) - r[:-1]
        u = np.clip((rel * seg).sum(axis=1) / seg_len**2, 0.0, 1.0)
        d2 = ((r[:-1] + u[:, None] * seg - np.array([x, y])) ** 2).sum(axis=1)
        j = int(np.argmin(d2))
        s_target = s_nodes[j] + u[j] * seg_len[j] + look
        if s_target <= s_nodes[-1]:
            tx = np.interp(s_target, s_nodes, r[:, 0])
            ty = np.interp(s_target, s_nodes, r[:, 1])
        else:  # past the route's end: continue its last direction
            extra = s_target - s_nodes[-1]
            tx, ty = r[-1] + extra * seg[-1] / seg_len[-1]
        dx, dy = tx - x, ty - y
        c, s_ = np.cos(yaw), np.sin(yaw)
        lx, ly = c * dx + s_ * dy, -s_ * dx + c * dy
        limit = MAX_ABS_CURVATURE_PER_M
        kappa = float(np.clip(2.0 * ly / max(lx * lx + ly * ly, 1e-6), -limit, limit))
        out[k] = kappa
        # advance along the arc (midpoint heading); at standstill the pose stays, the
        # geometry (and so the curvature) too
        ds = v0 * dt
        mid = yaw + 0.5 * kappa * ds
        x += ds * np.cos(mid)
        y += ds * np.sin(mid)
        yaw += kappa * ds
    return out


def trajectory_bins(normalized: np.ndarray, cfg: TrajectoryTokenConfig) -> np.ndarray:
    """(64, 2) normalised controls -> (chunks, 2) bin indices of the chunk means."""
    chunks = normalized.reshape(cfg.chunks, cfg.steps_per_token, 2).mean(axis=1)
    scaled = (np.clip(chunks, -cfg.clip_std, cfg.clip_std) + cfg.clip_std) / (2 * cfg.clip_std)
    return np.rint(scaled * (cfg.bins - 1)).astype(np.int64)


def bins_to_controls(bins: np.ndarray, cfg: TrajectoryTokenConfig) -> np.ndarray:
    """(chunks, 2) bin indices -> (64, 2) normalised controls (piecewise constant)."""
    values = bins.astype(np.float32) / (cfg.bins - 1) * (2 * cfg.clip_std) - cfg.clip_std
    return np.repeat(values, cfg.steps_per_token, axis=0)


def trajectory_token_ids(
    normalized: np.ndarray, cfg: TrajectoryTokenConfig, tokenizer: CocTokenizer
) -> np.ndarray:
    """(64, 2) normalised controls -> (2 * chunks,) ids: accel bin, curvature bin per chunk."""
    bins = trajectory_bins(normalized, cfg)
    ids = np.stack(
        [tokenizer.accel_bin_ids[bins[:, 0]], tokenizer.curvature_bin_ids[bins[:, 1]]], axis=1
    )
    return ids.reshape(-1)


def ego_features(ego_history: np.ndarray, norm: NormalizationConfig) -> np.ndarray:
    """(H, 7) ego-frame history -> (H, 6) scaled x, y, yaw, speed, accel, curvature."""
    h = np.asarray(ego_history, dtype=np.float64)
    return np.stack(
        [
            h[:, EGO_X] / norm.position_scale_m,
            h[:, EGO_Y] / norm.position_scale_m,
            h[:, EGO_YAW],
            h[:, EGO_SPEED] / norm.speed_scale_mps,
            (h[:, EGO_ACCEL] - norm.accel_mean_mps2) / norm.accel_std_mps2,
            (h[:, EGO_CURV] - norm.curvature_mean_per_m) / norm.curvature_std_per_m,
        ],
        axis=1,
    ).astype(np.float32)


def route_features(route_xy: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """(K, 2) route ahead (ego frame) -> (route tokens, 2 * points per token), scaled. A
    shorter route repeats its last point (the route ends there); a longer one is cut."""
    r = np.asarray(route_xy, dtype=np.float64).reshape(-1, 2)
    if len(r) == 0:
        r = np.zeros((1, 2))
    if len(r) < cfg.route_points:
        r = np.concatenate([r, np.repeat(r[-1:], cfg.route_points - len(r), axis=0)])
    r = r[: cfg.route_points] / np.array(cfg.normalization.route_scales_m)
    tokens = cfg.route_points // cfg.route_points_per_token
    return r.reshape(tokens, 2 * cfg.route_points_per_token).astype(np.float32)


def check_cameras(cameras: np.ndarray | None, cfg: ModelConfig) -> np.ndarray:
    v = cfg.vision
    want = (v.cameras, v.frames, v.image_height_px, v.image_width_px, 3)
    if cameras is None:
        raise InvalidInputError(
            f"the VLA planner needs camera frames {want} (N_cam, T, H, W, 3) but the input has "
            "none: build PlannerInput with a SensorRig renderer or a source with real cameras"
        )
    cams = np.asarray(cameras)
    if cams.shape[0] != v.cameras:
        raise InvalidInputError(
            f"the model was trained on {v.cameras} cameras, the input has {cams.shape[0]}: use "
            "the same rig (configs/sensors) as the checkpoint's vision config"
        )
    if cams.shape != want or cams.dtype != np.uint8:
        raise InvalidInputError(
            f"camera frames are {cams.dtype} {tuple(cams.shape)}, the model expects uint8 {want} "
            "(N_cam, T, H, W, 3): render with the checkpoint's camera size and frame count"
        )
    return cams


def prompt_arrays(inp: PlannerInput, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """The prompt of one PlannerInput (no batch dimension), after checking it."""
    cams = check_cameras(inp.cameras, cfg)
    hist = np.asarray(inp.ego_history, dtype=np.float64)
    if hist.shape != (cfg.history_steps, 7):
        raise InvalidInputError(
            f"ego_history has shape {hist.shape}, the model expects ({cfg.history_steps}, 7): "
            "pad it with planner.features.pad_ego_history"
        )
    if not np.isfinite(hist).all():
        row, col = np.argwhere(~np.isfinite(hist))[0]
        raise InvalidInputError(
            f"ego_history has a non-finite value at row {row}, column {col}: check the "
            "odometry source or drop the sample"
        )
    if not np.isfinite(np.asarray(inp.route_xy, dtype=np.float64)).all():
        raise InvalidInputError("route_xy has non-finite points: check the route source")
    if not np.isfinite(inp.speed_limit_mps) or inp.speed_limit_mps < 0:
        raise InvalidInputError(
            f"speed_limit_mps is {inp.speed_limit_mps}: pass the lane's limit in m/s"
        )
    return {
        CAMERAS: cams,
        EGO_HISTORY: ego_features(hist, cfg.normalization),
        ROUTE: route_features(inp.route_xy, cfg),
        COMMAND: np.int64(COMMAND_INDEX[Command.parse(inp.command)]),
        SPEED_LIMIT: np.float32(inp.speed_limit_mps / cfg.normalization.speed_scale_mps),
    }


def text_head(reasoning: str | None, tokenizer: CocTokenizer, cfg: ModelConfig) -> list[int]:
    """The text ids before the trajectory tokens: `<cot> reasoning </cot> <traj>`, or `<traj>`
    (fast layout) for None. Reasoning longer than lm.max_reasoning_tokens is an error (raise
    the limit or shorten the labels; a cut sentence would teach the model to stop mid-way)."""
    if reasoning is None:
        return [tokenizer.traj_id]
    r_ids = tokenizer.encode(reasoning)
    if len(r_ids) > cfg.lm.max_reasoning_tokens:
        raise InvalidInputError(
            f"reasoning {reasoning!r} is {len(r_ids)} tokens, over lm.max_reasoning_tokens="
            f"{cfg.lm.max_reasoning_tokens}: raise the limit or shorten the labels"
        )
    return [tokenizer.cot_id, *r_ids, tokenizer.end_cot_id, tokenizer.traj_id]


def make_example(
    inp: PlannerInput,
    controls: np.ndarray,
    reasoning: str | None,
    tokenizer: CocTokenizer,
    cfg: ModelConfig,
    drop_reasoning: bool = False,
) -> dict[str, np.ndarray]:
    """One training example: prompt arrays + text ids, loss masks and normalised controls.

    `controls` (64, 2) physical; `reasoning` the CoC text (None or `drop_reasoning` gives the
    fast-mode layout). Reasoning longer than lm.max_reasoning_tokens is an error (raise the
    limit or shorten the labels; a cut sentence would teach the model to stop mid-sentence)."""
    example: dict[str, Any] = prompt_arrays(inp, cfg)
    norm_controls = normalize_controls(controls, cfg.normalization)
    if norm_controls.shape != (cfg.plan_steps, 2):
        raise InvalidInputError(
            f"controls must be ({cfg.plan_steps}, 2) (accel, curvature), got {norm_controls.shape}"
        )
    traj_ids = trajectory_token_ids(norm_controls, cfg.trajectory_tokens, tokenizer)
    head = text_head(None if drop_reasoning else reasoning, tokenizer, cfg)
    ids = np.array([*head, *traj_ids.tolist(), tokenizer.eos_id], dtype=np.int64)
    reasoning_targets = np.zeros(len(ids), dtype=np.float32)
    reasoning_targets[1 : len(head)] = 1.0  # the text after the mode token, through <traj>
    trajectory_targets = np.zeros(len(ids), dtype=np.float32)
    trajectory_targets[len(head) :] = 1.0  # the bins and <eos>
    example.update(
        {
            TEXT_IDS: ids,
            REASONING_TARGETS: reasoning_targets,
            TRAJECTORY_TARGETS: trajectory_targets,
            CONTEXT_LEN: np.int64(len(head)),
            CONTROLS: norm_controls - action_prior(example[EGO_HISTORY], cfg, example[ROUTE]),
        }
    )
    return example


def planner_input_from_features(features: Any, timestamp: float = 0.0) -> PlannerInput:
    """A stored sample's features (planner.data.shards.SampleFeatures) -> the PlannerInput
    that inference would have built (the collector computed them with the same builder)."""
    return PlannerInput(
        timestamp=timestamp,
        ego_history=features.ego_history,
        command=Command.parse(features.command),
        route_xy=features.route_xy,
        speed_limit_mps=float(features.speed_limit_mps),
        cameras=features.cameras,
        camera_names=tuple(features.camera_names),
        camera_source=features.camera_source,
    )


def example_from_record(
    record: Any,
    tokenizer: CocTokenizer,
    cfg: ModelConfig,
    drop_reasoning: bool = False,
) -> dict[str, np.ndarray]:
    """A dataset record (planner.data.shards.ShardRecord) -> a training example. Samples
    whose label is missing or flagged invalid train in the fast layout (no reasoning)."""
    controls = record.arrays.get("controls")
    if controls is None:
        raise InvalidInputError(
            f"sample {record.key!r} has no fitted controls: re-collect it (the collector fits "
            "controls with planner.controls.fit_controls)"
        )
    label = record.label or {}
    text = label.get("text") if label.get("valid", True) else None
    return make_example(
        planner_input_from_features(record.features()),
        controls,
        text or None,
        tokenizer,
        cfg,
        drop_reasoning=drop_reasoning,
    )


def collate(examples: list[dict[str, np.ndarray]], pad_id: int) -> dict[str, torch.Tensor]:
    """Stack examples; text is right-padded with `pad_id` (masks with 0)."""
    if not examples:
        raise ValueError("collate needs at least one example")
    batch: dict[str, torch.Tensor] = {}
    length = max(len(e[TEXT_IDS]) for e in examples) if TEXT_IDS in examples[0] else 0
    for key in examples[0]:
        values = [np.asarray(e[key]) for e in examples]
        if key in (TEXT_IDS, REASONING_TARGETS, TRAJECTORY_TARGETS):
            fill = pad_id if key == TEXT_IDS else 0
            values = [np.pad(v, (0, length - len(v)), constant_values=fill) for v in values]
        batch[key] = torch.from_numpy(np.stack(values))
    return batch
