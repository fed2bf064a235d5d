"""Model configs: one dataclass per part, one `ModelConfig` that holds them all.

Every size, step count and normalisation number of the VLA lives here (YAML defaults in
`configs/model/tiny.yaml`); a checkpoint stores the full `ModelConfig` so the model can rebuild
itself (nanoGPT's habit). `validate()` checks the cross-part constraints (the action expert
must share layer count, key/value heads and head size with the language model; the KV cache
must hold the prompt plus the longest reasoning) and says which key to change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from planner.config import ConfigError, load_config
from planner.paths import config_path
from planner.types import (
    HISTORY_STEPS,
    MAX_ABS_ACCEL_MPS2,
    MAX_ABS_CURVATURE_PER_M,
    PLAN_DT_S,
    PLAN_STEPS,
)

DEFAULT_CONFIG_PATH = config_path("model", "tiny.yaml")
EGO_FEATURES = 6  # x, y, yaw, speed, accel, curvature of each history row (t is implied)
COMMANDS = 6  # len(planner.taxonomy.Command)


@dataclass
class VisionConfig:
    """Tiny ViT over every camera x frame. Tokens = cameras x frames x (H/patch) x (W/patch)."""

    cameras: int = 3
    frames: int = 2
    image_height_px: int = 64
    image_width_px: int = 128
    patch_px: int = 16
    layers: int = 1  # non-causal transformer blocks over all patch tokens together

    @property
    def patches_per_image(self) -> int:
        return (self.image_height_px // self.patch_px) * (self.image_width_px // self.patch_px)

    @property
    def tokens(self) -> int:
        return self.cameras * self.frames * self.patches_per_image


@dataclass
class LanguageModelConfig:
    """Decoder-only transformer (RMSNorm, RoPE, grouped-query attention, SwiGLU)."""

    width: int = 192
    layers: int = 3
    heads: int = 6  # query heads; a multiple of kv_heads
    kv_heads: int = 2
    head_dim: int = 32
    mlp_hidden: int = 512
    rope_base: float = 10000.0
    norm_eps: float = 1e-6
    max_seq_len: int = 272  # preallocated KV cache length (prompt + reasoning + 3 markers)
    max_reasoning_tokens: int = 48  # reasoning tokens between <cot> and </cot>


@dataclass
class ActionExpertConfig:
    """Flow-matching action expert. Layer count, kv heads and head size come from the LM."""

    width: int = 128
    heads: int = 4  # query heads; a multiple of the LM's kv_heads
    mlp_hidden: int = 384
    action_tokens: int = 16  # tokens over the 64 control steps ...
    steps_per_token: int = 4  # ... each carrying this many (accel, curvature) steps
    fourier_features: int = 16  # sin/cos pairs of the flow time t
    # With fourier_min_period > 0 the periods (in units of t in [0, 1]) are log-spaced from
    # fourier_min_period to fourier_max_period (pi0: 4e-3 .. 4, so the slowest feature is
    # monotonic in t). fourier_min_period = 0 is the first checkpoint's layout: frequencies
    # from 1 to fourier_max_period cycles per unit t (no feature is monotonic in t).
    fourier_max_period: float = 1000.0
    fourier_min_period: float = 0.0


FLOW_PRIORS = ("none", "hold_decay", "hold_curvature", "route_pursuit")


@dataclass
class FlowConfig:
    """Flow matching (see planner/model/flow.py for the time direction)."""

    time_beta_a: float = 1.5  # t ~ Beta(a, b): Alpamayo-R1 uses Beta(1.5, 1) (more mass near data)
    time_beta_b: float = 1.0
    euler_steps: int = 10  # integration steps from t=0 (noise) to t=1 (data)
    # What the flow generates: "none" = the normalised controls; "hold_decay" = the controls
    # minus a kinematic prior, the current acceleration and curvature decaying with time
    # constant prior_tau_s (planner.model.batch.action_prior). The prior carries what the ego
    # history already says about the next second; the expert learns the scene's correction.
    # "hold_curvature" holds (and decays) only the curvature: handing the current acceleration
    # to the next plan closed a feedback loop in closed loop (docs/TRAINING.md, "runaway").
    # "route_pursuit": zero acceleration and the curvature of a pure-pursuit rollout along the
    # route at the current speed (look-ahead max(prior_lookahead_min_m, prior_lookahead_s x
    # speed)): a prior that steers back to the route wherever the ego is, so lateral drift
    # is corrected by construction and the flow learns the departures (lane changes, nudges).
    # prior_lane_change_s > 0: a lateral jog in the route (where a lane-level route switches
    # to the neighbouring lane, e.g. the end of an on-ramp's merge lane) is spread over
    # max(prior_lookahead_min_m, prior_lane_change_s x speed) before it, as a lane change
    # would be (batch.spread_route_jogs); 0 keeps the jog, which pure pursuit only turns
    # towards one look-ahead before it (too late for a 3.5-4 m lane change at speed).
    prior: str = "none"
    prior_tau_s: float = 2.0
    prior_lookahead_s: float = 1.2
    prior_lookahead_min_m: float = 8.0
    prior_lane_change_s: float = 0.0


@dataclass
class NormalizationConfig:
    """Control normalisation (Alpamayo-R1's statistics) and clamps, physical units."""

    accel_mean_mps2: float = 0.029
    accel_std_mps2: float = 0.681
    curvature_mean_per_m: float = 0.0
    curvature_std_per_m: float = 0.026
    accel_clamp_mps2: float = MAX_ABS_ACCEL_MPS2
    curvature_clamp_per_m: float = MAX_ABS_CURVATURE_PER_M
    # Input scales of the ego-history and route tokens.
    position_scale_m: float = 20.0
    speed_scale_mps: float = 15.0
    route_scale_m: float = 50.0
    # Lateral (y) scale of the route tokens: a 1 m offset from the route is 0.02 at the 50 m
    # along-route scale, too faint a signal to steer back by. 0 = route_scale_m (checkpoints
    # written before this key).
    route_lateral_scale_m: float = 0.0

    @property
    def route_scales_m(self) -> tuple[float, float]:
        """(x, y) divisors of the ego-frame route points."""
        return self.route_scale_m, self.route_lateral_scale_m or self.route_scale_m


@dataclass
class TrajectoryTokenConfig:
    """Discrete trajectory tokens the LM learns after <traj> (Alpamayo-R1 stage 1).

    Each token pair covers `steps_per_token` control steps: the chunk mean of the normalised
    accel and curvature, each binned uniformly over +-`clip_std` standard deviations."""

    steps_per_token: int = 4
    bins: int = 33  # odd, so 0 has its own bin
    clip_std: float = 3.0

    @property
    def chunks(self) -> int:
        return PLAN_STEPS // self.steps_per_token


@dataclass
class TokenizerConfig:
    vocab_size: int = 512  # BPE vocabulary incl. the 256 bytes, specials and bin tokens
    min_frequency: int = 2


@dataclass
class LossConfig:
    """Weights of `VLAModel.forward`'s loss = text + trajectory tokens + flow matching."""

    reasoning_weight: float = 1.0  # LM cross-entropy on <cot> text </cot> <traj>
    trajectory_token_weight: float = 0.5  # LM cross-entropy on the discrete trajectory tokens
    flow_weight: float = 1.0  # flow-matching velocity MSE
    expert_stop_gradient: bool = False  # detach the LM's K/V before the expert sees them
    # (t, eps) draws per sample: the expert's pass is cheap next to the LM's, so several
    # draws per LM pass cut the flow gradient's variance at little cost (planner/model/flow.py)
    flow_samples: int = 1


@dataclass
class InferenceConfig:
    """Defaults of the runner (planner/runner.py); planners and benches may override."""

    mode: str = "full"  # full | fast | explain
    decoding: str = "greedy"  # greedy | top_p
    top_p: float = 0.9
    temperature: float = 1.0
    # Flow initial-noise scale (planner.runner.RunOptions.noise_scale): 1 = a draw from the
    # learned distribution, 0 = the deterministic plan from the noise's mode.
    noise_scale: float = 1.0
    samples: int = 1  # k trajectories (minADE_k)
    # The plan from the k samples: "first" (one flow sample) or "mean" (the mean of the k
    # samples' controls). All k share the prompt, and with greedy decoding the reasoning, so
    # "mean" estimates the conditional mean of the action given that reasoning: lower L2 error
    # than one draw when the expert's spread is noise around one decision.
    plan: str = "first"
    max_reasoning_tokens: int = 40
    # > 0: the planner limits how fast the planned acceleration may rise (m/s^3), from the
    # ego's current acceleration on (planner.planners.vla.limit_rising_jerk); 0 = off. Only
    # rises are limited (speeding up, releasing a brake): the limited plan is never faster
    # than the model's, and braking is never delayed.
    max_jerk_up_mps3: float = 0.0
    seed: int = 0
    backend: str = "torch"
    num_threads: int = 0  # torch threads; 0 = leave as is


@dataclass
class BackboneConfig:
    """`tiny` (this package's ViT + LM) or `hf` (a local Qwen2.5-VL / Qwen3-VL directory)."""

    kind: str = "tiny"
    path: str = ""  # local directory for kind=hf (never downloaded)


@dataclass
class ModelConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    lm: LanguageModelConfig = field(default_factory=LanguageModelConfig)
    expert: ActionExpertConfig = field(default_factory=ActionExpertConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    trajectory_tokens: TrajectoryTokenConfig = field(default_factory=TrajectoryTokenConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    history_steps: int = HISTORY_STEPS
    route_points: int = 20
    route_points_per_token: int = 4
    plan_steps: int = PLAN_STEPS
    plan_dt_s: float = PLAN_DT_S

    @property
    def prompt_tokens(self) -> int:
        """Vision + ego-history + route + command tokens before the first text token."""
        return (
            self.vision.tokens
            + self.history_steps
            + self.route_points // self.route_points_per_token
            + 1
        )

    def validate(self) -> ModelConfig:
        """Check cross-part constraints; raise ConfigError naming the key to change."""
        v, lm, ex = self.vision, self.lm, self.expert
        if v.image_height_px % v.patch_px or v.image_width_px % v.patch_px:
            raise ConfigError(
                f"vision: image {v.image_width_px}x{v.image_height_px} px is not a multiple of "
                f"patch_px={v.patch_px}; change vision.patch_px or the image size"
            )
        if lm.heads % lm.kv_heads:
            raise ConfigError(
                f"lm.heads={lm.heads} must be a multiple of lm.kv_heads={lm.kv_heads}"
            )
        if ex.heads % lm.kv_heads:
            raise ConfigError(
                f"expert.heads={ex.heads} must be a multiple of lm.kv_heads={lm.kv_heads} (the "
                "expert attends to the LM's K/V heads)"
            )
        if lm.head_dim % 2:
            raise ConfigError(f"lm.head_dim={lm.head_dim} must be even (rotary embedding)")
        if ex.action_tokens * ex.steps_per_token != self.plan_steps:
            raise ConfigError(
                f"expert.action_tokens x expert.steps_per_token = "
                f"{ex.action_tokens} x {ex.steps_per_token} must equal {self.plan_steps} steps"
            )
        tt = self.trajectory_tokens
        if self.plan_steps % tt.steps_per_token or tt.bins < 2:
            raise ConfigError(
                f"trajectory_tokens.steps_per_token={tt.steps_per_token} must divide "
                f"{self.plan_steps} and bins={tt.bins} must be >= 2"
            )
        if self.route_points % self.route_points_per_token:
            raise ConfigError(
                f"route_points={self.route_points} must be a multiple of "
                f"route_points_per_token={self.route_points_per_token}"
            )
        need = self.prompt_tokens + 1 + lm.max_reasoning_tokens + 2
        if lm.max_seq_len < need:
            raise ConfigError(
                f"lm.max_seq_len={lm.max_seq_len} cannot hold the prompt ({self.prompt_tokens} "
                f"tokens) + <cot> + {lm.max_reasoning_tokens} reasoning tokens + </cot> <traj>: "
                f"set lm.max_seq_len >= {need} or lower lm.max_reasoning_tokens"
            )
        inf = self.inference
        if inf.mode not in ("full", "fast", "explain"):
            raise ConfigError(f"inference.mode={inf.mode!r}: use full, fast or explain")
        if inf.decoding not in ("greedy", "top_p"):
            raise ConfigError(f"inference.decoding={inf.decoding!r}: use greedy or top_p")
        if inf.max_reasoning_tokens > lm.max_reasoning_tokens:
            raise ConfigError(
                f"inference.max_reasoning_tokens={inf.max_reasoning_tokens} exceeds "
                f"lm.max_reasoning_tokens={lm.max_reasoning_tokens} (the KV cache size)"
            )
        if self.flow.prior not in FLOW_PRIORS:
            raise ConfigError(
                f"flow.prior={self.flow.prior!r}: use one of {', '.join(FLOW_PRIORS)}"
            )
        if self.flow.prior_lookahead_s <= 0 or self.flow.prior_lookahead_min_m <= 0:
            raise ConfigError("flow.prior_lookahead_s and prior_lookahead_min_m must be > 0")
        if not 0.0 <= self.flow.prior_lane_change_s <= 10.0:
            raise ConfigError(
                f"flow.prior_lane_change_s={self.flow.prior_lane_change_s}: use 0 (off) or a "
                "lane-change duration in seconds up to 10 (3 is typical)"
            )
        if self.flow.prior_tau_s <= 0:
            raise ConfigError(f"flow.prior_tau_s={self.flow.prior_tau_s}: use a time > 0 s")
        ex = self.expert
        if ex.fourier_min_period < 0 or (
            ex.fourier_min_period > 0 and ex.fourier_min_period >= ex.fourier_max_period
        ):
            raise ConfigError(
                f"expert.fourier_min_period={ex.fourier_min_period} must be 0 (legacy layout) "
                f"or in (0, fourier_max_period={ex.fourier_max_period})"
            )
        if not 0 <= inf.noise_scale <= 1:
            raise ConfigError(f"inference.noise_scale={inf.noise_scale}: use a value in [0, 1]")
        if not (math.isfinite(inf.max_jerk_up_mps3) and inf.max_jerk_up_mps3 >= 0):
            raise ConfigError(
                f"inference.max_jerk_up_mps3={inf.max_jerk_up_mps3}: use a value >= 0 (m/s^3; "
                "0 turns the limit off; nuPlan's comfort bound is 4.13)"
            )
        if inf.plan not in ("first", "mean"):
            raise ConfigError(f"inference.plan={inf.plan!r}: use first or mean")
        if self.flow.euler_steps < 1 or inf.samples < 1:
            raise ConfigError("flow.euler_steps and inference.samples must be >= 1")
        if self.backbone.kind not in ("tiny", "hf"):
            raise ConfigError(f"backbone.kind={self.backbone.kind!r}: use tiny or hf")
        if self.loss.flow_samples < 1:
            raise ConfigError(
                f"loss.flow_samples={self.loss.flow_samples}: use 1 or more (t, eps) draws per "
                "sample"
            )
        return self


def load_model_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> ModelConfig:
    """configs/model/tiny.yaml (or `path`), then `key.sub=value` overrides, validated."""
    if path is None and DEFAULT_CONFIG_PATH.is_file():
        path = DEFAULT_CONFIG_PATH
    return load_config(ModelConfig, path, overrides).validate()
