"""Decoder-only reasoning language model with an explicit, preallocated KV cache.

Llama-style blocks (RMSNorm, rotary positions, grouped-query attention, SwiGLU). The cache is
a pair of tensors (layers, B, kv_heads, max_seq_len, head_dim) that the caller allocates once
and passes in with an attention mask (B, T, S) and the positions (B, T) of the new tokens:
every call returns the updated cache instead of mutating hidden state, so prefill / decode
step export as graphs with the cache as explicit inputs and outputs (openpilot's and every
fast VLA deployment's split). Keys are stored after the rotary embedding, as HF does.

Without a cache (`k_cache=None`) the same code attends over the new tokens themselves: that is
the training path (full recomputation with a causal mask).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from planner.model.config import LanguageModelConfig


def rope_inverse_frequencies(head_dim: int, base: float) -> torch.Tensor:
    """(head_dim / 2,) rotary frequencies base^(-2i / head_dim)."""
    return 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def rope_angles(
    positions: torch.Tensor, inv_freq: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (B, 1, T, head_dim / 2) for integer positions (B, T)."""
    angles = positions.to(torch.float32)[..., None] * inv_freq  # (B, T, hd/2)
    return torch.cos(angles)[:, None], torch.sin(angles)[:, None]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, hd) by the angles (rotate-half convention)."""
    x1, x2 = x.chunk(2, dim=-1)
    # back to x's dtype: under bf16 autocast the float32 angles would otherwise upcast q and k
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


def write_cache(cache: torch.Tensor, new: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Functional cache update: cache (B, kv, S, hd) with `new` (B, kv, T, hd) written at the
    per-sample slots `positions` (B, T) (samples of a batch may sit at different lengths)."""
    index = positions[:, None, :, None].expand(-1, new.shape[1], -1, new.shape[3])
    return cache.scatter(2, index, new.to(cache.dtype))


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)); gate and up are one fused Linear (small decode steps are
    bound by per-op overhead, ~36 us a Linear on these CPUs, not by FLOPs)."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.gate_up = nn.Linear(width, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Attention(nn.Module):
    """Grouped-query attention whose K/V come from its own tokens, a cache, or both."""

    def __init__(self, width: int, heads: int, kv_heads: int, head_dim: int):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        # q, k and v in one fused Linear (fewer ops per decode step, see SwiGLU)
        self.qkv = nn.Linear(width, (heads + 2 * kv_heads) * head_dim, bias=False)
        self.o = nn.Linear(heads * head_dim, width, bias=False)

    def project(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (B, H, T, hd), k and v (B, kv, T, hd); rotary applied to q and k when given."""
        b, t, _ = x.shape
        qkv = self.qkv(x).view(b, t, self.heads + 2 * self.kv_heads, self.head_dim)
        qkv = qkv.transpose(1, 2)  # (B, H + 2 kv, T, hd)
        q, k, v = qkv.split([self.heads, self.kv_heads, self.kv_heads], dim=1)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return q, k, v

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """q (B, H, T, hd) over k, v (B, kv, S, hd) with a boolean mask (B, T, S) -> (B, T, W)."""
        attn_mask = None if mask is None else mask[:, None]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, enable_gqa=self.heads != self.kv_heads
        )
        b, _, t, _ = out.shape
        return self.o(out.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))


class Block(nn.Module):
    """Pre-norm transformer block; with a cache it writes its new K/V there and attends to it."""

    def __init__(
        self, width: int, heads: int, kv_heads: int, head_dim: int, mlp_hidden: int, eps: float
    ):
        super().__init__()
        self.norm1 = nn.RMSNorm(width, eps=eps)
        self.attn = Attention(width, heads, kv_heads, head_dim)
        self.norm2 = nn.RMSNorm(width, eps=eps)
        self.mlp = SwiGLU(width, mlp_hidden)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor | None,
        k_cache: torch.Tensor | None = None,
        v_cache: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, W) -> (x, k, v); k, v are the updated cache (B, kv, S, hd) or, without a
        cache, the new tokens' own (B, kv, T, hd)."""
        q, k, v = self.attn.project(self.norm1(x), rope)
        if k_cache is not None:
            k = write_cache(k_cache, k, positions)
            v = write_cache(v_cache, v, positions)
        x = x + self.attn.attend(q, k, v, mask)
        x = x + self.mlp(self.norm2(x))
        return x, k, v


def causal_mask(valid: torch.Tensor) -> torch.Tensor:
    """(B, T, T) boolean mask: query i sees keys j <= i. `valid` (B, T) is unused for the
    causal part (right padding never precedes a real token) but keeps the batch size."""
    t = valid.shape[1]
    tri = torch.ones(t, t, dtype=torch.bool, device=valid.device).tril()
    return tri.expand(valid.shape[0], t, t)


class LanguageModel(nn.Module):
    """Token embedding, blocks, final norm and the vocabulary head."""

    def __init__(self, cfg: LanguageModelConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(vocab_size, cfg.width)
        self.blocks = nn.ModuleList(
            Block(cfg.width, cfg.heads, cfg.kv_heads, cfg.head_dim, cfg.mlp_hidden, cfg.norm_eps)
            for _ in range(cfg.layers)
        )
        self.norm = nn.RMSNorm(cfg.width, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.width, vocab_size, bias=False)
        # not a weight: rebuilt from the config, kept out of checkpoints
        self.register_buffer(
            "inv_freq", rope_inverse_frequencies(cfg.head_dim, cfg.rope_base), persistent=False
        )

    def empty_cache(
        self, batch: int, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Zeroed K and V caches (layers, B, kv_heads, max_seq_len, head_dim)."""
        c = self.cfg
        shape = (c.layers, batch, c.kv_heads, c.max_seq_len, c.head_dim)
        return torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype)

    def run(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        k_cache: torch.Tensor | None = None,
        v_cache: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embedded tokens x (B, T, W) at `positions` (B, T), mask (B, T, S) ->
        (normed hidden (B, T, W), K (L, B, kv, S, hd), V). S = cache length, or T without one."""
        rope = rope_angles(positions, self.inv_freq)
        ks, vs = [], []
        for i, block in enumerate(self.blocks):
            kc = None if k_cache is None else k_cache[i]
            vc = None if v_cache is None else v_cache[i]
            x, k, v = block(x, rope, mask, kc, vc, positions)
            ks.append(k)
            vs.append(v)
        return self.norm(x), torch.stack(ks), torch.stack(vs)
