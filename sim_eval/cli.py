"""sim_eval's subcommands (registered through the `cocdrive.commands` entry point):
`cocdrive demo`, `cocdrive sim run`, `cocdrive sim compare` and `cocdrive bench sim`.

Heavy modules (highway-env, matplotlib, the planners) are imported inside the commands, so
`cocdrive --help` stays fast."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer

from planner.cli import CommandRegistry
from planner.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_DEMO_OUT = Path("runs/demo")


def _progress_runner(description: str):
    """A rich progress bar and the (done, total) callback that drives it."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )
    task = bar.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return bar, update


def resolve_suite(name: str, seeds: list[int] | None):
    """Scenario specs of suite `name` (a name in configs/scenarios/ or a suite YAML path),
    optionally on other seeds. An unknown name raises a UserError listing the valid suites."""
    from sim_eval.scenarios import load_suite

    return load_suite(name, seeds=seeds)


def _print_headline(summary: dict, report_path: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    from sim_eval.report import fmt_stat

    table = Table(title=f"{summary.get('planner')} on {summary.get('suite')}")
    table.add_column("metric")
    table.add_column("value [95% interval]", justify="right")
    table.add_column("n", justify="right")
    for name, stat in summary.get("headline", {}).items():
        table.add_row(name, fmt_stat(stat), str(stat.get("n", "-") if stat else "-"))
    console = Console()
    console.print(table)
    counts = summary.get("status_counts", {})
    console.print(f"episodes: {summary.get('episodes', 0)} {counts}")
    if report_path is not None:
        console.print(f"report: {report_path}")


def run_command(
    planner: str,
    suite: str,
    out: Path,
    seeds: str | None,
    workers: int,
    executor: str,
    actuation_delay_s: float | None,
    animations: int | None,
    config: Path | None,
    overrides: list[str],
):
    """Shared by `sim run` and `demo`: build the config, run, print the headline."""
    from planner.planners import check_planner_spec
    from sim_eval.runner import load_run_config, run_suite
    from sim_eval.scenarios import parse_seeds

    check_planner_spec(planner)  # first: a typo should not wait for configs and suites
    extra = [f"planner={planner}", f"suite={suite}"]
    seed_list = parse_seeds(seeds) if seeds else None
    if actuation_delay_s is not None:
        extra.append(f"sim.actuation_delay_s={actuation_delay_s}")
    if animations is not None:
        extra.append(f"report.animations={animations}")
    cfg = load_run_config(config, [*extra, *overrides])
    if seed_list is not None:
        cfg.seeds = seed_list
    if executor not in ("local", "ray"):
        raise UserError(f"--executor {executor!r}: valid executors are local, ray")
    if executor == "ray":
        try:
            import ray  # noqa: F401 - availability check before any work starts
        except ImportError:
            raise UserError(
                "--executor ray needs Ray: pip install 'cocdrive[ray]' (or use --executor local)"
            ) from None
    if workers < 1:
        raise UserError(f"--workers {workers}: must be at least 1")
    if cfg.planner != planner:
        check_planner_spec(cfg.planner)
    scenarios = resolve_suite(cfg.suite, cfg.seeds)
    bar, update = _progress_runner(f"{cfg.planner} on {cfg.suite}")
    try:
        with bar:
            result = run_suite(
                scenarios,
                cfg,
                out,
                suite_name=cfg.suite,
                workers=workers,
                executor=executor,
                progress=update,
            )
    except KeyboardInterrupt:
        from planner.io import JsonlResults
        from sim_eval.runner import EPISODES_FILE

        done = len(JsonlResults(Path(out) / EPISODES_FILE).done_keys())
        typer.secho(
            f"interrupted: {done} of {len(scenarios)} episodes are saved in {out}; rerun the "
            "same command to finish the rest",
            fg=typer.colors.YELLOW,
            err=True,
        )
        raise typer.Exit(code=130) from None
    _print_headline(result.summary, result.report_path)
    return result


def best_planner() -> str:
    """The best planner this install can run: a shipped learned checkpoint when the package
    carries one and the model code to load it, else the privileged expert."""
    from importlib import resources

    try:
        assets = resources.files("planner") / "assets"
        candidates = sorted(
            p
            for p in (Path(str(assets)).rglob("*") if assets.is_dir() else [])
            if p.suffix in (".safetensors", ".pt", ".ckpt")
        )
    except (ModuleNotFoundError, OSError):
        candidates = []
    if candidates:
        try:
            from planner.model.checkpoint import load_planner  # noqa: F401 - availability check

            return str(candidates[0])
        except ImportError:
            log.info("a checkpoint ships but planner.model is missing: using the expert")
    return "expert"


def register(registry: CommandRegistry) -> None:
    """Add `demo` (root), `sim run`, `sim compare`, `sim report` and `bench sim`."""
    sim = registry.group("sim")
    bench = registry.group("bench")
    root = registry.root
    register_collect(registry)
    from sim_eval.eval_cli import register_eval  # `eval open-loop` (sim_eval/eval_cli.py)

    register_eval(registry)

    @sim.command(
        "run",
        epilog=(
            "\b\nExamples:\n"
            "  cocdrive sim run --planner expert --suite smoke --out runs/smoke\n"
            "  cocdrive sim run --planner const-vel --suite regression --out runs/cv "
            "--workers 2\n"
            "  cocdrive sim run --suite smoke --seeds 100-107 --out runs/s100 "
            "--actuation-delay-s 0.1\n"
            "  cocdrive sim run --suite smoke --out runs/x sim.sim_hz=20 report.animations=5\n"
            "\b\nRerunning the same command into the same --out resumes an interrupted run;\n"
            "a folder from another suite, planner or config is refused."
        ),
    )
    def sim_run(
        planner: str = typer.Option("expert", help="Planner name or checkpoint path."),
        suite: str = typer.Option("smoke", help="Scenario suite (configs/scenarios/)."),
        out: Path = typer.Option(..., "--out", help="Results folder (created; resumable)."),
        seeds: str = typer.Option(
            None, help="Run every family of the suite on these seeds instead, e.g. 100-107,200."
        ),
        workers: int = typer.Option(1, help="Parallel episode workers (processes)."),
        executor: str = typer.Option("local", help="local (process pool) or ray."),
        actuation_delay_s: float = typer.Option(
            None, "--actuation-delay-s", help="A plan computed at t takes effect at t + this."
        ),
        animations: int = typer.Option(None, help="GIFs of the worst episodes in the report."),
        config: Path = typer.Option(None, help="RunConfig YAML (default configs/run.yaml)."),
        overrides: list[str] = typer.Argument(None, help="Config overrides key.sub=value."),
    ) -> None:
        """Run a scenario suite in closed loop: per-episode JSONL, summary.json, report.html."""
        run_command(
            planner,
            suite,
            out,
            seeds,
            workers,
            executor,
            actuation_delay_s,
            animations,
            config,
            list(overrides or []),
        )

    @sim.command(
        "compare",
        epilog=(
            "\b\nExamples:\n"
            "  cocdrive sim compare runs/baseline runs/candidate\n"
            "  cocdrive sim compare runs/a runs/b --alpha 0.01 --out cmp.json\n"
            "\b\nExit status: 0 when B shows no significant regression against A, 1 when it\n"
            "does, 2 on bad input (e.g. the runs used different seeds)."
        ),
    )
    def sim_compare(
        run_a: Path = typer.Argument(..., help="Reference results folder (A)."),
        run_b: Path = typer.Argument(..., help="Candidate results folder (B)."),
        alpha: float = typer.Option(0.05, help="Significance level of the paired tests."),
        out: Path = typer.Option(None, help="Where to write compare.json (default: B/)."),
    ) -> None:
        """Paired comparison of two runs on the same seeds; exits 1 on a regression of B."""
        from sim_eval.compare import compare_runs, print_comparison

        result = compare_runs(run_a, run_b, alpha=alpha, out=out)
        print_comparison(result)
        if result["regression"]:
            raise typer.Exit(code=1)

    @sim.command(
        "report",
        epilog=(
            "\b\nExamples:\n"
            "  cocdrive sim report runs/smoke\n"
            "  cocdrive sim report runs/regression report.animations=10"
        ),
    )
    def sim_report(
        run_dir: Path = typer.Argument(..., help="Results folder of a 'sim run'."),
        overrides: list[str] = typer.Argument(None, help="report.* overrides key=value."),
    ) -> None:
        """Rebuild summary.json and report.html of a run from its episodes and logs."""
        from rich.console import Console

        from sim_eval.runner import rebuild_report

        Console().print(f"report: {rebuild_report(run_dir, list(overrides or []))}")

    @root.command(
        "demo",
        epilog=(
            "\b\nExamples:\n"
            "  cocdrive demo\n"
            "  cocdrive demo --out runs/my-demo --workers 2\n"
            "  make demo"
        ),
    )
    def demo(
        out: Path = typer.Option(DEFAULT_DEMO_OUT, help="Results folder."),
        workers: int = typer.Option(min(2, os.cpu_count() or 1), help="Parallel episode workers."),
    ) -> None:
        """Drive the smoke suite with the best planner available and show where the report is."""
        planner = best_planner()
        log.info("demo planner: %s", planner)
        run_command(planner, "smoke", out, None, workers, "local", None, None, None, [])

    @bench.command(
        "sim",
        epilog=(
            "\b\nExamples:\n"
            "  cocdrive bench sim\n"
            "  cocdrive bench sim --family cut_in --steps 300 --out bench_sim.json"
        ),
    )
    def bench_sim_cmd(
        family: list[str] = typer.Option(
            None, help="Family to measure (repeatable; default: every family)."
        ),
        steps: int = typer.Option(200, help="Timed 0.1 s steps per family."),
        planner: str = typer.Option("expert", help="Planner in the loop."),
        out: Path = typer.Option(None, help="Write the results as JSON here."),
    ) -> None:
        """Simulator steps per second per core (one process, one thread), planner in the loop.

        A step is 0.1 s of simulated time, however many simulator substeps it takes."""
        from sim_eval.bench import bench_sim, print_bench

        result = bench_sim(families=list(family or []), steps=steps, planner=planner, out=out)
        print_bench(result)


def register_collect(registry: CommandRegistry) -> None:
    """Add `data collect` (it drives the simulator, so it lives in sim_eval)."""
    data = registry.group("data")

    @data.command(
        "collect",
        epilog=(
            "\b\nExamples:\n"
            "  cocdrive data collect --suite train --out ~/.cache/cocdrive/datasets/default "
            "--workers 2\n"
            "  cocdrive data collect --out /tmp/tiny --seeds 100000 episodes_per_family=1\n"
            "  cocdrive data collect --out /tmp/ds stride_steps=1 "
            "sensors.randomization.enabled=true\n"
            "\b\nRe-running the same command into the same --out resumes (only missing\n"
            "episodes run); a folder collected with another suite or config is refused.\n"
            "Format and card: docs/DATASET.md."
        ),
    )
    def data_collect(
        suite: str = typer.Option(None, help="Scenario suite (default: the config's, train)."),
        out: Path = typer.Option(
            None, "--out", help="Dataset folder (default: the config's output_dir)."
        ),
        seeds: str = typer.Option(None, help="Run every family on these seeds, e.g. 100-107."),
        workers: int = typer.Option(1, help="Parallel episode workers (processes)."),
        executor: str = typer.Option("local", help="local (process pool) or ray."),
        config: Path = typer.Option(None, help="CollectConfig YAML (configs/data/collect.yaml)."),
        overrides: list[str] = typer.Argument(None, help="Config overrides key.sub=value."),
    ) -> None:
        """Collect expert chain-of-causation samples into dataset shards (resumable): the
        expert drives the suite with recovery perturbations; one tar shard per episode,
        index.json and the dataset card (card.json, card.md)."""
        from sim_eval.collect import collect_command

        collect_command(suite, out, seeds, workers, executor, config, list(overrides or []))
