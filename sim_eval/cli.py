"""sim_eval's subcommands (registered through the `cocdrive.commands` entry point)."""

from __future__ import annotations

from planner.cli import CommandRegistry


def register(registry: CommandRegistry) -> None:
    """Add `demo`, `sim run|compare` and `bench sim` once they exist."""
