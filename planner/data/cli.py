"""`cocdrive data stats DIR`: print a dataset's card and verify its shards.

(`cocdrive data collect` drives the simulator, so it lives in sim_eval; this one only reads
shards and stays in planner/.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from planner.cli import CommandRegistry

STATS_HELP = """Print a dataset's card (counts, decision histograms, families, splits) and
verify every shard (structure, size and sha256 against index.json; --deep also decodes
every sample). Exits 1 when a shard is corrupt, naming it.

Examples:

  cocdrive data stats ~/.cache/cocdrive/datasets/default

  cocdrive data stats /tmp/tiny --deep

  cocdrive data stats /tmp/big --no-checksums
"""


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def print_card(card: dict[str, Any], console: Any) -> None:
    """Rich tables of a dataset card (planner.data.shards.build_card)."""
    from rich.table import Table

    summary = Table(title=f"dataset {card['name']}", show_header=False)
    summary.add_column("field")
    summary.add_column("value", justify="right")
    for label, value in (
        ("episodes", card["episodes"]),
        ("episodes failed", card["episodes_failed"]),
        ("samples", card["samples"]),
        ("simulated steps", card["simulated_steps"]),
        ("perturbed step fraction", f"{card['perturbed_step_fraction']:.3f}"),
        ("disk size", _fmt_bytes(card["disk_bytes"])),
        ("bytes per sample", _fmt_bytes(card["bytes_per_sample"])),
        ("collection wall time", f"{card.get('collection_wall_s', '-')} s"),
        ("labels", ", ".join(f"{k} {v}" for k, v in sorted(card["labels"].items())) or "-"),
        (
            "skipped samples",
            ", ".join(f"{k} {v}" for k, v in card["skipped_samples"].items()) or "-",
        ),
        ("future source", ", ".join(f"{k} {v}" for k, v in card["future_source"].items()) or "-"),
    ):
        summary.add_row(label, str(value))
    console.print(summary)

    splits = Table(title="splits (by hash of family and seed)")
    for col in ("split", "episodes", "samples"):
        splits.add_column(col, justify="left" if col == "split" else "right")
    for name, c in card["splits"].items():
        splits.add_row(name, str(c.get("episodes", 0)), str(c.get("samples", 0)))
    console.print(splits)

    fams = Table(title="families")
    for col in ("family", "episodes", "samples", "steps"):
        fams.add_column(col, justify="left" if col == "family" else "right")
    for name, c in card["families"].items():
        fams.add_row(name, str(c["episodes"]), str(c["samples"]), str(c["steps"]))
    console.print(fams)

    for axis in ("longitudinal", "lateral"):
        hist = card["decisions"][axis]
        total = sum(hist.values()) or 1
        table = Table(title=f"{axis} decisions")
        table.add_column("decision")
        table.add_column("samples", justify="right")
        table.add_column("share", justify="right")
        for k, v in hist.items():
            style = "red" if v == 0 else None
            table.add_row(k, str(v), f"{100 * v / total:.1f} %", style=style)
        console.print(table)
    miss = card["missing_decisions"]
    if miss["longitudinal"] or miss["lateral"]:
        console.print(
            f"missing decision types: longitudinal {miss['longitudinal'] or 'none'}, "
            f"lateral {miss['lateral'] or 'none'}"
        )


def stats_command(root: Path, deep: bool, checksums: bool) -> int:
    """Print the card, verify the shards; returns the number of corrupt shards."""
    from rich.console import Console

    from planner.data.shards import load_card, verify_dataset

    console = Console()
    card = load_card(root)
    print_card(card, console)
    checked, problems = verify_dataset(root, checksums=checksums, deep=deep)
    what = (
        "structure" + (", sha256" if checksums else "") + (", every sample decoded" if deep else "")
    )
    if problems:
        console.print(f"[red]{len(problems)} of {checked} shards are corrupt ({what}):")
        for p in problems:
            console.print(f"  {p.shard}: {p.problem}")
    else:
        console.print(f"all {checked} shards verified ({what})")
    return len(problems)


def register(registry: CommandRegistry) -> None:
    """Add `data stats`."""
    data = registry.group("data")

    @data.command("stats", help=STATS_HELP)
    def data_stats(
        root: Path = typer.Argument(..., help="Dataset folder (the --out of data collect)."),
        deep: bool = typer.Option(False, "--deep", help="Also decode every sample."),
        checksums: bool = typer.Option(
            True, "--checksums/--no-checksums", help="Compare sha256 with index.json."
        ),
    ) -> None:
        if stats_command(root, deep, checksums):
            raise typer.Exit(code=1)
