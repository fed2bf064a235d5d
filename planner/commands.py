"""planner's own subcommands (registered through the `cocdrive.commands` entry point)."""

from __future__ import annotations

from planner.cli import CommandRegistry


def register(registry: CommandRegistry) -> None:
    """Add `bench render` (and later `bench model`, `train`) once they exist."""
