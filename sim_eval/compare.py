"""`cocdrive sim compare A B`: paired statistics of two closed-loop runs on the same seeds.

Episodes are paired by key (family:seed); binary metrics get an exact McNemar test and the
others a Wilcoxon signed-rank test, Holm-corrected over metrics (`sim_eval.stats`). A run
pair on different episodes is refused: an unpaired comparison of a few hundred episodes
cannot see the regressions that matter."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from planner.errors import UserError
from planner.io import atomic_write_json
from sim_eval.runner import read_run

log = logging.getLogger(__name__)

COMPARE_FILE = "compare.json"
# Manifest entries that should match for a like-for-like comparison (a mismatch is warned
# about and recorded, not refused: comparing planners or configs is the point of compare).
_CONTEXT_FIELDS = ("suite", "simulator", "sim_config_digest", "metrics_config_digest")


def compare_runs(
    run_a: str | Path,
    run_b: str | Path,
    alpha: float = 0.05,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Compare run B against reference A; writes compare.json (default: inside B)."""
    from sim_eval.metrics import METRIC_SPECS
    from sim_eval.stats import CompareError, StatsConfig, paired_compare

    if not 0.0 < alpha < 1.0:
        raise UserError(f"--alpha {alpha}: must lie strictly between 0 and 1 (e.g. 0.05)")
    man_a, rec_a = read_run(run_a)
    man_b, rec_b = read_run(run_b)
    if not rec_a or not rec_b:
        empty = run_a if not rec_a else run_b
        raise UserError(f"{empty} holds no finished episodes: run or resume it first")
    keys_a = {str(r.get("key")) for r in rec_a}
    keys_b = {str(r.get("key")) for r in rec_b}
    if keys_a != keys_b:
        only_a, only_b = sorted(keys_a - keys_b), sorted(keys_b - keys_a)
        raise UserError(
            f"the runs are not on the same seeds: {len(only_a)} episodes only in A "
            f"(e.g. {only_a[:3]}), {len(only_b)} only in B (e.g. {only_b[:3]}); rerun one of "
            "them with the other's --suite and --seeds (or finish an interrupted run)"
        )
    mismatched = [f for f in _CONTEXT_FIELDS if man_a.get(f) != man_b.get(f)]
    for f in mismatched:
        log.warning("runs differ in %s: %r vs %r", f, man_a.get(f), man_b.get(f))
    cfg = dataclasses.replace(StatsConfig(), alpha=alpha)
    try:
        stats = paired_compare(rec_a, rec_b, specs=METRIC_SPECS, cfg=cfg)
    except CompareError as exc:
        raise UserError(str(exc)) from None
    result = {
        "run_a": str(run_a),
        "run_b": str(run_b),
        "planner_a": man_a.get("planner"),
        "planner_b": man_b.get("planner"),
        "suite": man_a.get("suite"),
        "context_mismatch": mismatched,
        "regression": bool(stats["regressions"]),
        **stats,
    }
    path = Path(out) if out is not None else Path(run_b) / COMPARE_FILE
    atomic_write_json(path, result)
    result["path"] = str(path)
    return result


def _num(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.3g}"


def print_comparison(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=(
            f"B={result['planner_b']} vs A={result['planner_a']} on {result['n_pairs']} paired "
            f"episodes (alpha {result['alpha']}, {result['multiple_comparison']} correction)"
        )
    )
    for col in ("metric", "test", "A", "B", "p", "p adj", "verdict"):
        table.add_column(
            col,
            justify="left" if col in ("metric", "test", "verdict") else "right",
            overflow="fold",
        )
    for name, m in result["metrics"].items():
        binary = m["test"] == "mcnemar_exact"
        a = m.get("a_rate") if binary else m.get("a_mean")
        b = m.get("b_rate") if binary else m.get("b_mean")
        if m.get("significant") and m.get("b_worse"):
            verdict = "[red]REGRESSION[/red]"
        elif m.get("significant") and m.get("b_better"):
            verdict = "[green]better[/green]"
        else:
            verdict = ""
        table.add_row(
            name,
            "McNemar" if binary else "Wilcoxon",
            _num(a, binary),
            _num(b, binary),
            f"{m['p_value']:.3g}",
            f"{m['p_adjusted']:.3g}",
            verdict,
        )
    # Piped or logged output has no terminal width; rich's 80-column default squeezes the
    # table's headers, so give it room (a terminal keeps its own width).
    console = Console(width=None if Console().is_terminal else 120)
    console.print(table)
    if result["context_mismatch"]:
        console.print(f"[yellow]note: runs differ in {', '.join(result['context_mismatch'])}")
    if result["regression"]:
        console.print(f"[red]significant regression of B in: {', '.join(result['regressions'])}")
    else:
        console.print("no significant regression of B")
    console.print(f"written: {result['path']}")
