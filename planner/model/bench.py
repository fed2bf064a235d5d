"""`cocdrive bench model`: per-stage latency of the VLA through the shared runner.

Times `full` (reason, then act: exactly N reasoning tokens, E Euler steps) and `fast` (act
only) on a synthetic PlannerInput of the model's camera rig, reporting p50 / p99 per stage
(vision, prefill, decode, denoise, total) in ms. Without a checkpoint it times a randomly
initialised model of the config (latency does not depend on the weights, and the reasoning
length is fixed so an untrained model's early </cot> cannot shorten the run).
One torch thread by default: on a shared 2-core machine two threads oversubscribe the cores
and ran 10-20x slower (FACTS.md saw the same). Process CPU time per call is reported beside
wall clock, as `bench render` does, because other jobs inflate wall clock.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from planner.io import atomic_write_json

log = logging.getLogger(__name__)
STAGES = ("vision", "prefill", "decode", "denoise", "total")


def _percentiles(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {
        "p50_ms": float(np.percentile(arr, 50)),
        "p99_ms": float(np.percentile(arr, 99)),
        "mean_ms": float(arr.mean()),
    }


def _synthetic_input(cfg: Any, seed: int):
    from planner.taxonomy import Command
    from planner.types import PlannerInput

    rng = np.random.default_rng(seed)
    v = cfg.vision
    hist = np.zeros((cfg.history_steps, 7))
    hist[:, 0] = np.arange(-cfg.history_steps + 1, 1) * cfg.plan_dt_s
    hist[:, 1] = hist[:, 0] * 10.0
    hist[:, 4] = 10.0
    cams = rng.integers(0, 256, (v.cameras, v.frames, v.image_height_px, v.image_width_px, 3))
    return PlannerInput(
        timestamp=0.0,
        ego_history=hist,
        command=Command.LANE_FOLLOW,
        route_xy=np.stack([np.arange(cfg.route_points) * 4.0, np.zeros(cfg.route_points)], 1),
        speed_limit_mps=13.9,
        cameras=cams.astype(np.uint8),
    )


def run_model_benchmark(
    checkpoint: str | Path | None = None,
    config_path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    iterations: int = 30,
    warmup: int = 3,
    reasoning_tokens: int = 40,
    euler_steps: int = 10,
    num_threads: int = 1,
    backend: str = "torch",
    seed: int = 0,
) -> dict[str, Any]:
    """Time `full` and `fast`; returns a JSON-ready dict (see module docstring)."""
    import torch

    from planner.model import batch as B
    from planner.model.checkpoint import Checkpoint, load_checkpoint
    from planner.model.config import load_model_config
    from planner.model.tokenizer import template_corpus, train_tokenizer
    from planner.model.vla import VLAModel, parameter_count
    from planner.runner import Runner, RunOptions, make_backend

    if num_threads > 0:
        torch.set_num_threads(num_threads)
    if checkpoint is not None:
        ckpt = load_checkpoint(checkpoint, overrides)
        source = str(checkpoint)
    else:
        cfg = load_model_config(config_path, overrides)
        tok = train_tokenizer(template_corpus(2000, seed), cfg.tokenizer, cfg.trajectory_tokens)
        torch.manual_seed(seed)
        model = VLAModel(cfg, tok.vocab_size).eval()
        ckpt = Checkpoint(Path("."), cfg, tok, model)
        source = f"random init of {config_path or 'configs/model/tiny.yaml'}"
    cfg = ckpt.config
    reasoning_tokens = min(reasoning_tokens, cfg.lm.max_reasoning_tokens)
    runner = Runner(make_backend(backend, ckpt, num_threads=num_threads), cfg, ckpt.tokenizer)
    prompt = B.prompt_arrays(_synthetic_input(cfg, seed), cfg)
    modes = {
        "full": RunOptions(
            mode="full",
            euler_steps=euler_steps,
            max_reasoning_tokens=reasoning_tokens,
            fixed_reasoning_length=True,
        ),
        "fast": RunOptions(mode="fast", euler_steps=euler_steps),
    }
    result: dict[str, Any] = {
        "source": source,
        "backend": backend,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "machine": platform.processor() or platform.machine(),
        "parameters": parameter_count(ckpt.model),
        "prompt_tokens": cfg.prompt_tokens,
        "reasoning_tokens": reasoning_tokens,
        "euler_steps": euler_steps,
        "iterations": iterations,
        "modes": {},
    }
    rng = np.random.default_rng(seed)
    for name, options in modes.items():
        for _ in range(warmup):
            runner.run(prompt, options, rng)
        per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
        cpu0 = time.process_time()
        for _ in range(iterations):
            timings = runner.run(prompt, options, rng).timings_ms
            for stage in STAGES:
                per_stage[stage].append(timings.get(stage, 0.0))
        cpu_ms = (time.process_time() - cpu0) * 1e3 / iterations
        result["modes"][name] = {
            **{stage: _percentiles(v) for stage, v in per_stage.items()},
            "process_cpu_ms_per_call": cpu_ms,
        }
        log.info(
            "bench model %s: total p50 %.1f ms", name, result["modes"][name]["total"]["p50_ms"]
        )
    return result


def write_result(result: dict[str, Any], path: str | Path) -> Path:
    return atomic_write_json(Path(path), result)
