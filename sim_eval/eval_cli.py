"""`cocdrive eval open-loop` (registered from sim_eval.cli.register)."""

from __future__ import annotations

from pathlib import Path

import typer

from planner.cli import CommandRegistry
from planner.errors import UserError


def open_loop_command(
    data: str,
    planner: str,
    out: Path,
    k: int | None,
    stride_s: float | None,
    workers: int | None,
    limit: int | None,
    config: Path | None,
    overrides: list[str],
):
    """Build the config, run, print the headline (shared by the CLI and tests)."""
    from rich.console import Console
    from rich.table import Table

    from planner.planners import check_planner_spec
    from sim_eval.cli import _progress_runner
    from sim_eval.open_loop import (
        headline,
        load_open_loop_config,
        run_open_loop,
    )
    from sim_eval.open_loop_report import fmt_stat

    check_planner_spec(planner)  # a typo or a bad checkpoint fails before any log is read
    extra = [f"data={data}", f"planner={planner}"]
    for name, value in (("k", k), ("stride_s", stride_s), ("workers", workers), ("limit", limit)):
        if value is not None:
            extra.append(f"{name}={value}")
    # the data path is taken verbatim (a YAML parse would turn 'nuscenes:/x' into a mapping)
    cfg = load_open_loop_config(config, [*extra[2:], *overrides])
    cfg.data, cfg.planner = data, planner
    if cfg.executor == "ray":
        try:
            import ray  # noqa: F401 - availability check before any work starts
        except ImportError:
            raise UserError("executor=ray needs Ray: pip install 'cocdrive[ray]'") from None
    bar, update = _progress_runner(f"{planner} open loop")
    try:
        with bar:
            result = run_open_loop(cfg, out, progress=update)
    except KeyboardInterrupt:
        typer.secho(
            f"interrupted: finished windows are saved in {out}; rerun the same command to "
            "evaluate the rest",
            fg=typer.colors.YELLOW,
            err=True,
        )
        raise typer.Exit(code=130) from None
    summary = result.summary
    table = Table(title=f"{planner} open loop on {data}")
    table.add_column("metric")
    table.add_column("value [95% interval]", justify="right")
    table.add_column("n", justify="right")
    for name, stat in headline(summary, cfg).items():
        table.add_row(name, fmt_stat(stat), str(stat.get("n", "-") if stat else "-"))
    console = Console()
    console.print(table)
    timing = summary["timing"]
    wps = timing["windows_per_s"]
    console.print(
        f"windows: {summary['windows_evaluated']} evaluated, {summary['skipped']['total']} "
        f"skipped {summary['skipped']['by_reason']}; "
        + (f"{wps:.1f} windows/s" if wps else "nothing new to evaluate")
        + (" (privileged planner: handed the logged scene)" if summary["privileged"] else "")
    )
    errors = [r for r in result.records if r.get("status", "ok") != "ok"]
    if errors:
        console.print(
            f"[red]{len(errors)} window(s) failed[/red], e.g. {errors[0]['key']}: "
            f"{errors[0].get('error')} (in windows.jsonl; rerunning the command retries them)"
        )
    console.print(f"report: {result.report_path}")
    return result


def register_eval(registry: CommandRegistry) -> None:
    """Add `eval open-loop` and `eval ablate`."""
    group = registry.group("eval")

    @group.command(
        "open-loop",
        epilog=(
            "\b\nExamples:\n"
            "  cocdrive eval open-loop --data /data/nuscenes --planner const-vel --out runs/ol\n"
            "  cocdrive eval open-loop --data nuscenes:/data/nuscenes --planner ckpt/ --k 6 "
            "--out runs/ol-vla\n"
            "  cocdrive eval open-loop --data ~/.cache/cocdrive/datasets/default --planner "
            "expert --out runs/ol-sim split=test\n"
            "  cocdrive eval open-loop --data scenarionet:/data/waymo --planner ctra --out "
            "runs/ol-w --stride-s 0.1 metrics.l2_step_s=0.1\n"
            "\b\nRerunning the same command into the same --out resumes; a folder from\n"
            "another data source, planner or config is refused. Metric definitions and\n"
            "conventions: docs/OPEN_LOOP.md."
        ),
    )
    def eval_open_loop(
        data: str = typer.Option(
            ..., "--data", help="Log path (format detected), FORMAT:PATH, or a dataset folder."
        ),
        planner: str = typer.Option(..., "--planner", help="Planner name or checkpoint path."),
        out: Path = typer.Option(..., "--out", help="Results folder (created; resumable)."),
        k: int = typer.Option(None, "--k", help="Sampled plans per window (minADE_k); 6."),
        stride_s: float = typer.Option(
            None, "--stride-s", help="Seconds between windows, 0.5 (nuScenes: its keyframes)."
        ),
        workers: int = typer.Option(None, "--workers", help="Parallel worker processes."),
        limit: int = typer.Option(None, "--limit", help="Evaluate at most this many windows."),
        config: Path = typer.Option(
            None, help="OpenLoopConfig YAML (default configs/eval/open_loop.yaml)."
        ),
        overrides: list[str] = typer.Argument(None, help="Config overrides key.sub=value."),
    ) -> None:
        """Open-loop metrics of a planner on logs: ADE/FDE, minADE_k, L2 (ST-P3 and UniAD),
        both miss rates, collision with logged boxes, off-road, reasoning consistency.
        Writes windows.jsonl, summary.json, report.html, report.json and config.yaml."""
        open_loop_command(
            data, planner, out, k, stride_s, workers, limit, config, list(overrides or [])
        )

    from sim_eval.ablate import register_ablate  # `eval ablate` (sim_eval/ablate.py)

    register_ablate(group)
