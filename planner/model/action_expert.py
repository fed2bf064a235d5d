"""Action expert: a transformer over action tokens that reads the LM's KV cache layer by layer.

Layer i of the expert attends to [LM layer i K/V of prompt + reasoning ; its own tokens' K/V],
so the expert has the LM's layer count, key/value heads and head size (its width and query
heads may differ). Non-causal over the action tokens. Each action token carries
`steps_per_token` control steps of normalised (accel, curvature); the input projection sees
the noisy actions concatenated with Fourier features of the flow time t (Alpamayo-R1), and the
output is the flow velocity for the same steps.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from planner.model.config import ActionExpertConfig, LanguageModelConfig
from planner.model.lm import Attention, SwiGLU, rope_angles, rope_inverse_frequencies


def fourier_time_features(
    t: torch.Tensor, pairs: int, max_period: float, min_period: float = 0.0
) -> torch.Tensor:
    """(B,) times in [0, 1] -> (B, 2 * pairs) sin/cos features.

    min_period > 0: periods log-spaced from min_period to max_period (units of t), as pi0
    does. min_period = 0: the first checkpoint's layout, frequencies log-spaced from 1 to
    max_period cycles per unit t."""
    i = torch.arange(pairs, dtype=torch.float32, device=t.device)
    if min_period > 0:
        ratio = i / max(pairs - 1, 1)
        periods = min_period * (max_period / min_period) ** ratio
        angles = 2.0 * math.pi * t.to(torch.float32)[:, None] / periods[None]
    else:
        freqs = torch.exp(-math.log(max_period) * i / pairs)
        angles = 2.0 * math.pi * max_period * t.to(torch.float32)[:, None] * freqs[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class ExpertBlock(nn.Module):
    def __init__(self, cfg: ActionExpertConfig, lm: LanguageModelConfig):
        super().__init__()
        self.norm1 = nn.RMSNorm(cfg.width, eps=lm.norm_eps)
        self.attn = Attention(cfg.width, cfg.heads, lm.kv_heads, lm.head_dim)
        self.norm2 = nn.RMSNorm(cfg.width, eps=lm.norm_eps)
        self.mlp = SwiGLU(cfg.width, cfg.mlp_hidden)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        context_k: torch.Tensor,
        context_v: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """x (B, A, W); context K/V (B, kv, S, hd); mask (B, A, S + A) -> (B, A, W)."""
        q, k, v = self.attn.project(self.norm1(x), rope)
        k = torch.cat([context_k, k], dim=2)
        v = torch.cat([context_v, v], dim=2)
        x = x + self.attn.attend(q, k, v, mask)
        return x + self.mlp(self.norm2(x))


class ActionExpert(nn.Module):
    def __init__(self, cfg: ActionExpertConfig, lm: LanguageModelConfig):
        super().__init__()
        self.cfg, self.lm_cfg = cfg, lm
        step_dim = 2 * cfg.steps_per_token
        self.in_proj = nn.Linear(step_dim + 2 * cfg.fourier_features, cfg.width)
        self.time_mlp = nn.Sequential(
            nn.Linear(2 * cfg.fourier_features, cfg.width),
            nn.SiLU(),
            nn.Linear(cfg.width, cfg.width),
        )
        self.token_pos = nn.Parameter(torch.zeros(cfg.action_tokens, cfg.width))
        nn.init.normal_(self.token_pos, std=0.02)
        self.blocks = nn.ModuleList(ExpertBlock(cfg, lm) for _ in range(lm.layers))
        self.norm = nn.RMSNorm(cfg.width, eps=lm.norm_eps)
        self.out_proj = nn.Linear(cfg.width, step_dim)
        self.register_buffer(
            "inv_freq", rope_inverse_frequencies(lm.head_dim, lm.rope_base), persistent=False
        )

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        context_k: torch.Tensor,
        context_v: torch.Tensor,
        context_mask: torch.Tensor,
        position_offset: torch.Tensor,
    ) -> torch.Tensor:
        """Velocity of the flow at (x_t, t).

        x_t: (B, A, 2 * steps_per_token) normalised noisy controls; t: (B,) flow time;
        context_k / context_v: (layers, B, kv, S, hd) the LM cache; context_mask: (B, S) bool,
        True where the cache holds prompt or reasoning; position_offset: (B,) rotary position
        of the first action token (the slot after <traj>). Returns (B, A, 2 * steps_per_token).
        """
        b, a, _ = x_t.shape
        c = self.cfg
        feats = fourier_time_features(
            t, c.fourier_features, c.fourier_max_period, c.fourier_min_period
        )
        x = self.in_proj(torch.cat([x_t, feats[:, None].expand(b, a, -1)], dim=-1))
        x = x + self.time_mlp(feats)[:, None] + self.token_pos[None]
        positions = position_offset[:, None] + torch.arange(a, device=x_t.device)[None]
        rope = rope_angles(positions, self.inv_freq)
        own = torch.ones(b, a, a, dtype=torch.bool, device=x_t.device)
        mask = torch.cat([context_mask[:, None, :].expand(b, a, -1), own], dim=2)
        for i, block in enumerate(self.blocks):
            x = block(x, rope, context_k[i], context_v[i], mask)
        return self.out_proj(self.norm(x))
