"""A tiny VLA trained for a few seconds overfits a handful of samples: the loss falls, greedy
decoding reproduces each sample's reasoning, and the sampled controls approach the labels."""

from __future__ import annotations

import numpy as np
import torch

from planner.model import batch as B
from planner.planners.vla import VLAPlanner
from planner.runner import Runner, RunOptions, TorchBackend
from tests.planner.model.tiny import LABELS, planner_input, tiny_config, tiny_model, tiny_tokenizer


def _controls(i: int) -> np.ndarray:
    c = np.zeros((64, 2))
    c[:, 0] = (0.8, -2.0, -1.0)[i]
    c[:, 1] = (0.0, 0.01, -0.02)[i]
    return c


def test_tiny_model_overfits_a_handful_of_samples() -> None:
    torch.set_num_threads(1)
    cfg = tiny_config()
    tok = tiny_tokenizer(cfg)
    model = tiny_model(cfg, tok).train()
    inputs = [planner_input(cfg, seed=i, speed_mps=6.0 + 2 * i) for i in range(3)]
    examples = [
        B.make_example(inp, _controls(i), LABELS[i], tok, cfg) for i, inp in enumerate(inputs)
    ]
    batch = B.collate(examples, tok.pad_id)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(100):
        loss, logs = model(batch, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(logs)
    assert losses[-1]["reasoning_ce"] < 0.05 * losses[0]["reasoning_ce"]
    assert losses[-1]["trajectory_token_ce"] < 0.1 * losses[0]["trajectory_token_ce"]
    assert losses[-1]["flow_mse"] < 0.5 * losses[0]["flow_mse"]
    model.eval()
    runner = Runner(TorchBackend(model), cfg, tok)
    for i, inp in enumerate(inputs):
        result = runner.run(B.prompt_arrays(inp, cfg), RunOptions(), np.random.default_rng(0))
        assert result.reasoning[0] == LABELS[i]
    planner = VLAPlanner(TorchBackend(model), cfg, tok)
    out = planner.plan(inputs[1])
    assert out.reasoning.text == LABELS[1]
    assert out.reasoning.decision is not None  # the parser reads the generated text
    assert out.reasoning.decision.longitudinal.value == "yield"
