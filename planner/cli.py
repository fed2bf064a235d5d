"""The `cocdrive` command. Each package registers its own subcommands through the
`cocdrive.commands` entry-point group (see pyproject.toml), so this core module never imports
sim_eval, export or ros_nodes. A group appears only once a package fills it."""

from __future__ import annotations

import logging
import sys
from importlib.metadata import entry_points

import typer

HELP = """cocdrive: a reasoning (chain-of-causation) driving planner with a flow-matching decoder.

Examples:

  cocdrive demo                                  # the shipped planner on the smoke suite

  cocdrive sim run --planner expert --suite smoke --out runs/smoke

  cocdrive sim compare runs/a runs/b
"""

GROUP_HELP = {
    "sim": "Closed-loop simulation: run suites, compare runs.",
    "data": "Chain-of-causation data: collect, inspect.",
    "train": "Training: supervised (sft) and reinforcement (rl).",
    "eval": "Evaluation: open-loop metrics on logs, ablations.",
    "export": "Deployment export: ONNX, TensorRT.",
    "bench": "Benchmarks: medians and p99 measured in one run.",
    "ros": "ROS 2 nodes: run, replay, record.",
    "serve": "Serve the planner to external simulators.",
}


class CommandRegistry:
    """Handed to each package's `register(registry)`: add top-level commands to `root`, or
    subcommands to a shared group (`bench` is filled by several packages)."""

    def __init__(self, root: typer.Typer):
        self.root = root
        self._groups: dict[str, typer.Typer] = {}

    def group(self, name: str) -> typer.Typer:
        if name not in self._groups:
            if name not in GROUP_HELP:
                raise ValueError(f"unknown command group {name!r}; valid: {sorted(GROUP_HELP)}")
            sub = typer.Typer(help=GROUP_HELP[name], no_args_is_help=True)
            self._groups[name] = sub
            self.root.add_typer(sub, name=name)
        return self._groups[name]


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(show_path=False, rich_tracebacks=False)],
        force=True,
    )


def build_app() -> typer.Typer:
    app = typer.Typer(
        help=HELP,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        rich_markup_mode=None,
    )

    @app.callback()
    def _root(
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    ) -> None:
        _setup_logging(verbose)

    registry = CommandRegistry(app)
    for ep in sorted(entry_points(group="cocdrive.commands"), key=lambda e: e.name):
        register = ep.load()
        register(registry)
    # A group a package opened but filled with nothing would list a command that does
    # nothing: drop it, so `--help` shows only working commands.
    app.registered_groups = [
        info
        for info in app.registered_groups
        if info.typer_instance is None
        or info.typer_instance.registered_commands
        or info.typer_instance.registered_groups
    ]
    return app


def main() -> None:
    """Entry point: known user errors print one clear line, not a traceback."""
    from planner.errors import USER_ERRORS

    app = build_app()
    try:
        app(standalone_mode=True)
    except USER_ERRORS as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
