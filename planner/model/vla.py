"""The VLA: vision encoder + reasoning LM + flow-matching action expert.

Inference is split into the graphs a deployment exports, each with the KV cache, the attention
mask and the positions as EXPLICIT inputs (nothing hidden in module state):
    encode_vision(images)                                   -> vision tokens
    prefill(vision, ego, route, command, speed_limit, K, V, mask, positions)
                                                            -> last logits, K, V
    decode_step(token_ids, K, V, mask, positions)           -> logits, K, V
    denoise_step(x_t, t, K, V, context_mask, position_offset) -> velocity
The host loop that strings them together lives once, in planner/runner.py.

Training: `forward(batch) -> (loss, logs)` with LM cross-entropy on the CoC text and the
discrete trajectory tokens plus the flow-matching loss (weights in `LossConfig`); the flow math
is in planner/model/flow.py. Batch keys and layout: planner/model/batch.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from planner.model import batch as B
from planner.model import flow
from planner.model.action_expert import ActionExpert
from planner.model.config import COMMANDS, EGO_FEATURES, LossConfig, ModelConfig
from planner.model.lm import LanguageModel, causal_mask
from planner.model.vision import VisionEncoder


class VLAModel(nn.Module):
    def __new__(cls, cfg: ModelConfig | None = None, vocab_size: int = 0, *args, **kwargs):
        # backbone.kind=hf: the same interface, built around a local Hugging Face Qwen-VL
        # model (planner/model/hf_vla.py); returned in place of a VLAModel. (Defaults: copy
        # and pickle call __new__ without arguments.)
        if cfg is not None and cfg.backbone.kind == "hf":
            from planner.model.hf_vla import HFVLAModel

            return HFVLAModel(cfg, vocab_size)
        return super().__new__(cls)

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        cfg.validate()
        self.cfg, self.vocab_size = cfg, vocab_size
        width = cfg.lm.width
        self.vision = VisionEncoder(cfg.vision, cfg.lm)
        self.ego_proj = nn.Linear(EGO_FEATURES, width)
        self.ego_pos = nn.Parameter(torch.zeros(cfg.history_steps, width))
        route_tokens = cfg.route_points // cfg.route_points_per_token
        self.route_proj = nn.Linear(2 * cfg.route_points_per_token, width)
        self.route_pos = nn.Parameter(torch.zeros(route_tokens, width))
        self.command_embed = nn.Embedding(COMMANDS, width)
        self.speed_limit_proj = nn.Linear(1, width)
        for p in (self.ego_pos, self.route_pos):
            nn.init.normal_(p, std=0.02)
        self.lm = LanguageModel(cfg.lm, vocab_size)
        self.expert = ActionExpert(cfg.expert, cfg.lm)
        self.apply(_init_weights)

    @property
    def prompt_tokens(self) -> int:
        return self.cfg.prompt_tokens

    # ---- inference graphs -------------------------------------------------------------------
    def encode_vision(self, images: torch.Tensor) -> torch.Tensor:
        """(B, N_cam, T, H, W, 3) uint8 -> (B, vision tokens, width)."""
        return self.vision(images)

    def prompt_embeddings(
        self,
        vision_tokens: torch.Tensor,
        ego_history: torch.Tensor,
        route: torch.Tensor,
        command: torch.Tensor,
        speed_limit: torch.Tensor,
    ) -> torch.Tensor:
        """(B, P, width): vision tokens, one token per history row, route tokens, and one
        command token carrying the speed limit."""
        ego = self.ego_proj(ego_history) + self.ego_pos[None]
        route_tok = self.route_proj(route) + self.route_pos[None]
        cmd = self.command_embed(command) + self.speed_limit_proj(speed_limit[:, None])
        return torch.cat([vision_tokens, ego, route_tok, cmd[:, None]], dim=1)

    def prefill(
        self,
        vision_tokens: torch.Tensor,
        ego_history: torch.Tensor,
        route: torch.Tensor,
        command: torch.Tensor,
        speed_limit: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        attn_mask: torch.Tensor,
        positions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the prompt into the cache. attn_mask (B, P, S) bool, positions (B, P) ->
        logits of the last prompt token (B, V), K, V (layers, B, kv, S, hd)."""
        x = self.prompt_embeddings(vision_tokens, ego_history, route, command, speed_limit)
        hidden, k, v = self.lm.run(x, positions, attn_mask, k_cache, v_cache)
        return self.lm.head(hidden[:, -1]), k, v

    def decode_step(
        self,
        token_ids: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        attn_mask: torch.Tensor,
        positions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """token_ids (B, T) at positions (B, T), attn_mask (B, T, S) -> logits (B, T, V), K, V."""
        hidden, k, v = self.lm.run(self.lm.embed(token_ids), positions, attn_mask, k_cache, v_cache)
        return self.lm.head(hidden), k, v

    def denoise_step(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        context_mask: torch.Tensor,
        position_offset: torch.Tensor,
    ) -> torch.Tensor:
        """Flow velocity (B, A, 2 * steps_per_token) at x_t, time t (B,); see ActionExpert."""
        return self.expert(x_t, t, k_cache, v_cache, context_mask, position_offset)

    # ---- training ---------------------------------------------------------------------------
    def actions_to_tokens(self, controls: torch.Tensor) -> torch.Tensor:
        """(B, 64, 2) -> (B, action tokens, 2 * steps_per_token)."""
        ex = self.cfg.expert
        return controls.reshape(controls.shape[0], ex.action_tokens, 2 * ex.steps_per_token)

    def tokens_to_actions(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, action tokens, 2 * steps_per_token) -> (B, 64, 2)."""
        return tokens.reshape(tokens.shape[0], self.cfg.plan_steps, 2)

    def forward(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss and logs for a collated batch (planner.model.batch keys).

        `generator` seeds the flow time and noise draws (explicit, for exact resume)."""
        loss_cfg = self.cfg.loss
        vision = self.encode_vision(batch[B.CAMERAS])
        prompt = self.prompt_embeddings(
            vision, batch[B.EGO_HISTORY], batch[B.ROUTE], batch[B.COMMAND], batch[B.SPEED_LIMIT]
        )
        text_ids = batch[B.TEXT_IDS]
        x = torch.cat([prompt, self.lm.embed(text_ids)], dim=1)  # (B, P + L, W)
        bsz, seq, _ = x.shape
        p = prompt.shape[1]
        positions = torch.arange(seq, device=x.device)[None].expand(bsz, seq)
        hidden, k, v = self.lm.run(x, positions, causal_mask(positions))
        # hidden at position P + j predicts text token j + 1
        logits = self.lm.head(hidden[:, p : seq - 1])  # (B, L - 1, V)
        ce = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), text_ids[:, 1:].reshape(-1), reduction="none"
        ).view(bsz, -1)
        r_mask = batch[B.REASONING_TARGETS][:, 1:]
        t_mask = batch[B.TRAJECTORY_TARGETS][:, 1:]
        reasoning_loss = (ce * r_mask).sum() / r_mask.sum().clamp(min=1.0)
        trajectory_token_loss = (ce * t_mask).sum() / t_mask.sum().clamp(min=1.0)

        context_len = batch[B.CONTEXT_LEN]
        context_mask = torch.arange(seq, device=x.device)[None] < (p + context_len)[:, None]
        if loss_cfg.expert_stop_gradient:
            k, v = k.detach(), v.detach()
        offset = p + context_len
        n_flow = loss_cfg.flow_samples  # several (t, eps) draws per sample share its LM pass
        k, v, context_mask, offset = flow.repeat_context(n_flow, k, v, context_mask, offset)

        def velocity(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.expert(x_t, t, k, v, context_mask, offset)

        flow_loss = flow.flow_matching_loss(
            velocity,
            self.actions_to_tokens(batch[B.CONTROLS]),
            self.cfg.flow.time_beta_a,
            self.cfg.flow.time_beta_b,
            generator,
            samples=n_flow,
        )
        return weighted_loss(loss_cfg, reasoning_loss, trajectory_token_loss, flow_loss)


def weighted_loss(
    loss_cfg: LossConfig,
    reasoning_loss: torch.Tensor,
    trajectory_token_loss: torch.Tensor,
    flow_loss: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The training objective (weights from the config's loss section) and its logged parts;
    shared by the tiny model and the Hugging Face backbone model."""
    loss = (
        loss_cfg.reasoning_weight * reasoning_loss
        + loss_cfg.trajectory_token_weight * trajectory_token_loss
        + loss_cfg.flow_weight * flow_loss
    )
    logs = {
        "loss": float(loss.detach()),
        "reasoning_ce": float(reasoning_loss.detach()),
        "trajectory_token_ce": float(trajectory_token_loss.detach()),
        "flow_mse": float(flow_loss.detach()),
    }
    return loss, logs


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
