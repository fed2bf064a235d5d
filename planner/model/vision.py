"""Tiny ViT: patch tokens from every camera x frame, with camera and time embeddings.

Images (B, N_cam, T, H, W, 3) uint8 -> tokens (B, N_cam * T * (H/p) * (W/p), width), ordered
camera-major, then frame (oldest first), then patch rows. All tokens attend to each other
(non-causal), so a token of one camera can use the others and the previous frame.
"""

from __future__ import annotations

import torch
from torch import nn

from planner.model.config import LanguageModelConfig, VisionConfig
from planner.model.lm import Block


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, N, T, H, W, 3) -> (B, N, T, (H/p)*(W/p), p*p*3) float in [-0.5, 0.5]."""
    b, n, t, h, w, c = images.shape
    x = images.to(torch.float32) / 255.0 - 0.5
    x = x.reshape(b, n, t, h // patch, patch, w // patch, patch, c)
    x = x.permute(0, 1, 2, 3, 5, 4, 6, 7)  # (B, N, T, rows, cols, p, p, C)
    return x.reshape(b, n, t, (h // patch) * (w // patch), patch * patch * c)


class VisionEncoder(nn.Module):
    def __init__(self, cfg: VisionConfig, lm: LanguageModelConfig):
        super().__init__()
        self.cfg = cfg
        width = lm.width
        self.patch_embed = nn.Linear(cfg.patch_px * cfg.patch_px * 3, width)
        self.patch_pos = nn.Parameter(torch.zeros(cfg.patches_per_image, width))
        self.camera_embed = nn.Parameter(torch.zeros(cfg.cameras, width))
        self.time_embed = nn.Parameter(torch.zeros(cfg.frames, width))
        for p in (self.patch_pos, self.camera_embed, self.time_embed):
            nn.init.normal_(p, std=0.02)
        # Plain multi-head attention (kv_heads = heads) without rotary positions: positions
        # come from the three learned embeddings above.
        self.blocks = nn.ModuleList(
            Block(width, lm.heads, lm.heads, lm.head_dim, lm.mlp_hidden, lm.norm_eps)
            for _ in range(cfg.layers)
        )
        self.norm = nn.RMSNorm(width, eps=lm.norm_eps)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, N, T, H, W, 3) uint8 -> (B, N*T*P, width)."""
        x = self.patch_embed(patchify(images, self.cfg.patch_px))  # (B, N, T, P, W)
        x = (
            x
            + self.patch_pos[None, None, None]
            + self.camera_embed[None, :, None, None]
            + self.time_embed[None, None, :, None]
        )
        x = x.flatten(1, 3)
        for block in self.blocks:
            x, _, _ = block(x, None, None)
        return self.norm(x)
