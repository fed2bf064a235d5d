"""Builders for a very small VLA (1 camera x 1 frame x 32x64 px = 8 vision tokens) so model
tests run in seconds on one core."""

from __future__ import annotations

import numpy as np
import torch

from planner.config import apply_overrides, from_dict, to_dict
from planner.model.config import ModelConfig
from planner.model.tokenizer import CocTokenizer, template_corpus, train_tokenizer
from planner.model.vla import VLAModel
from planner.taxonomy import Command
from planner.types import PlannerInput

TINY_OVERRIDES = [
    "vision.cameras=1",
    "vision.frames=1",
    "vision.image_height_px=32",
    "vision.image_width_px=64",
    "vision.patch_px=16",
    "lm.width=48",
    "lm.layers=2",
    "lm.heads=2",
    "lm.kv_heads=1",
    "lm.head_dim=16",
    "lm.mlp_hidden=96",
    "lm.max_reasoning_tokens=40",
    "lm.max_seq_len=80",
    "expert.width=32",
    "expert.heads=2",
    "expert.mlp_hidden=64",
    "expert.fourier_features=8",
    "trajectory_tokens.bins=9",
    "tokenizer.vocab_size=360",
]

LABELS = (
    "Keep the lane and hold the speed on the clear road.",
    "Slow down and yield for the pedestrian crossing from the right, 12 m ahead.",
    "Come to a stop for the red light 30 m ahead.",
)


def tiny_config(*extra: str) -> ModelConfig:
    data = apply_overrides(to_dict(ModelConfig()), [*TINY_OVERRIDES, *extra])
    return from_dict(ModelConfig, data).validate()


def tiny_tokenizer(cfg: ModelConfig) -> CocTokenizer:
    return train_tokenizer(
        list(LABELS) * 5 + template_corpus(300, seed=1), cfg.tokenizer, cfg.trajectory_tokens
    )


def tiny_model(cfg: ModelConfig, tokenizer: CocTokenizer, seed: int = 0) -> VLAModel:
    torch.manual_seed(seed)
    return VLAModel(cfg, tokenizer.vocab_size).eval()


def planner_input(cfg: ModelConfig, seed: int = 0, speed_mps: float = 8.0) -> PlannerInput:
    rng = np.random.default_rng(seed)
    v = cfg.vision
    hist = np.zeros((cfg.history_steps, 7))
    hist[:, 0] = np.arange(-cfg.history_steps + 1, 1) * 0.1
    hist[:, 1] = hist[:, 0] * speed_mps
    hist[:, 4] = speed_mps
    route = np.stack([np.arange(20) * 4.0, np.zeros(20)], axis=1)
    cams = rng.integers(0, 255, (v.cameras, v.frames, v.image_height_px, v.image_width_px, 3))
    return PlannerInput(
        timestamp=0.0,
        ego_history=hist,
        command=Command.LANE_FOLLOW,
        route_xy=route,
        speed_limit_mps=13.9,
        cameras=cams.astype(np.uint8),
    )
