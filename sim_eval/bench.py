"""`cocdrive bench sim`: closed-loop steps per second per core, planner in the loop.

One process, one torch thread: the figure is what one core of a worker pool delivers. A step
is 0.1 s of simulated time (however many simulator substeps that takes) and costs feature
building (camera rendering too for planners that are not privileged, as in `sim run`) +
planning + simulator stepping; resets between episodes are timed separately."""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from planner.errors import UserError
from planner.io import atomic_write_json

log = logging.getLogger(__name__)

BENCH_SEED = 1_000_000  # far from the suites' seeds; the episode itself does not matter
WARMUP_STEPS = 5  # first steps pay for lazy imports and caches


def _machine() -> dict[str, Any]:
    import os

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores_visible": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def bench_family(
    simulator, planner, family: str, steps: int, duration_s: float = 20.0, renderer=None
) -> dict[str, Any]:
    """Time `steps` closed-loop steps of `family` (new episodes as earlier ones end)."""
    from planner.base import call_planner
    from planner.features import build_planner_input
    from sim_eval.scenarios import ScenarioSpec

    step_ms: list[float] = []  # planner (with feature building) + simulator, per step
    plan_ms: list[float] = []  # the planner's share
    reset_ms: list[float] = []
    seed = BENCH_SEED
    warm = WARMUP_STEPS
    episodes = 0
    while len(step_ms) < steps:
        spec = ScenarioSpec(name=f"{family}/bench", family=family, seed=seed, duration_s=duration_s)
        t0 = time.perf_counter()
        planner.reset()
        scene = simulator.reset(spec, seed)
        reset_ms.append(1e3 * (time.perf_counter() - t0))
        episodes += 1
        history: list = []
        while len(step_ms) < steps:
            t0 = time.perf_counter()
            inp = build_planner_input(scene, renderer, history if renderer is not None else None)
            out = call_planner(planner, inp, scene)
            history.append(scene)
            t1 = time.perf_counter()
            scene = simulator.step(out.trajectory)
            t2 = time.perf_counter()
            if warm > 0:
                warm -= 1
            else:
                step_ms.append(1e3 * (t2 - t0))
                plan_ms.append(1e3 * (t1 - t0))
            if simulator.info.done:
                break
        seed += 1
    ms = np.asarray(step_ms)
    return {
        "family": family,
        "steps": len(ms),
        "episodes": episodes,
        "step_ms_median": float(np.median(ms)),
        "step_ms_p99": float(np.percentile(ms, 99)),
        "step_ms_mean": float(ms.mean()),
        "steps_per_s": float(1e3 / ms.mean()),
        "plan_ms_median": float(np.median(plan_ms)),
        "sim_ms_median": float(np.median(ms - np.asarray(plan_ms))),
        "reset_ms_median": float(np.median(reset_ms)),
    }


def bench_sim(
    families: list[str] | None = None,
    steps: int = 200,
    planner: str = "expert",
    out: str | Path | None = None,
    simulator=None,
) -> dict[str, Any]:
    """Per-family step rates and their mean; writes JSON to `out` when given."""
    import torch

    from planner.planners import make_planner
    from sim_eval.runner import RunConfig, make_renderer
    from sim_eval.scenarios import list_families

    if steps < 1:
        raise UserError(f"--steps {steps}: must be at least 1")
    torch.set_num_threads(1)
    valid = list_families()
    chosen = list(families) if families else valid
    unknown = [f for f in chosen if f not in valid]
    if unknown:
        raise UserError(f"unknown family {unknown[0]!r}; valid families: {', '.join(valid)}")
    if simulator is None:
        from sim_eval.sim.highway import HighwayEnvSimulator

        simulator = HighwayEnvSimulator()
    plan = make_planner(planner)
    renderer = make_renderer(RunConfig(planner=planner), plan)  # cameras as `sim run` gives
    rows = []
    for family in chosen:
        log.info("bench sim: %s (%d steps)", family, steps)
        rows.append(bench_family(simulator, plan, family, steps, renderer=renderer))
    rates = [r["steps_per_s"] for r in rows]
    result = {
        "planner": planner,
        "steps_per_family": steps,
        "torch_threads": torch.get_num_threads(),
        "families": rows,
        "mean_steps_per_s": float(np.mean(rates)),
        "min_steps_per_s": float(np.min(rates)),
        "slowest_family": rows[int(np.argmin(rates))]["family"],
        "machine": _machine(),
    }
    if out is not None:
        atomic_write_json(out, result)
    return result


def print_bench(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bench sim: {result['planner']} in the loop, 1 thread")
    cols = ("family", "median ms", "p99 ms", "steps/s", "plan ms", "sim ms", "reset ms")
    for col in cols:
        if col == "family":
            table.add_column(col, no_wrap=True)
        else:
            table.add_column(col, justify="right")
    for r in result["families"]:
        table.add_row(
            r["family"],
            f"{r['step_ms_median']:.2f}",
            f"{r['step_ms_p99']:.2f}",
            f"{r['steps_per_s']:.0f}",
            f"{r['plan_ms_median']:.2f}",
            f"{r['sim_ms_median']:.2f}",
            f"{r['reset_ms_median']:.0f}",
        )
    # Piped or logged output has no terminal width; rich's 80-column default squeezes the
    # table's headers, so give it room (a terminal keeps its own width).
    console = Console(width=None if Console().is_terminal else 120)
    console.print(table)
    console.print(
        f"mean over families: {result['mean_steps_per_s']:.0f} steps/s; slowest "
        f"{result['slowest_family']} at {result['min_steps_per_s']:.0f} steps/s"
    )
