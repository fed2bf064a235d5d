"""`bench model` runs both modes through the runner and reports every stage (no timing
asserts: the numbers depend on the machine)."""

from __future__ import annotations

import json

from planner.model.bench import STAGES, run_model_benchmark, write_result
from tests.planner.model.tiny import TINY_OVERRIDES


def test_bench_model_reports_stages_for_full_and_fast(tmp_path) -> None:
    result = run_model_benchmark(
        overrides=TINY_OVERRIDES, iterations=2, warmup=0, reasoning_tokens=5, euler_steps=2
    )
    assert set(result["modes"]) == {"full", "fast"}
    for mode in ("full", "fast"):
        for stage in STAGES:
            stats = result["modes"][mode][stage]
            assert stats["p99_ms"] >= stats["p50_ms"] >= 0
    assert result["modes"]["fast"]["denoise"]["p50_ms"] > 0
    assert result["reasoning_tokens"] == 5 and result["torch_threads"] == 1
    path = write_result(result, tmp_path / "bench.json")
    assert json.loads(path.read_text())["euler_steps"] == 2
