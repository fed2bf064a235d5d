"""The torch backend on a CUDA device gives the CPU's plan (runs where a GPU is present)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from planner.planners.vla import VLAPlanner
from planner.runner import TorchBackend
from tests.planner.model.tiny import planner_input, tiny_config, tiny_model, tiny_tokenizer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_cuda_plan_matches_cpu_plan():
    torch.set_num_threads(1)
    cfg = tiny_config()
    tok = tiny_tokenizer(cfg)
    inp = planner_input(cfg, seed=3)
    outputs = {}
    for device in ("cpu", "cuda"):
        model = tiny_model(cfg, tok, seed=0).to(device)
        planner = VLAPlanner(TorchBackend(model), cfg, tok, mode="full", seed=11)
        outputs[device] = planner.plan(inp)
    cpu, gpu = outputs["cpu"], outputs["cuda"]
    assert gpu.reasoning is not None and cpu.reasoning is not None
    assert gpu.reasoning.text == cpu.reasoning.text  # greedy decoding agrees
    # fp32 on both: TF32 matmuls on the GPU are the only source of difference
    np.testing.assert_allclose(gpu.trajectory.xy, cpu.trajectory.xy, atol=5e-2)
