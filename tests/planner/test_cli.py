"""The `cocdrive` command lists only groups and commands that work."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

import planner.cli as cli
from planner.cli import GROUP_HELP, CommandRegistry, build_app

runner = CliRunner()


def _listed_commands(help_text: str) -> list[str]:
    """Names in the 'Commands:' section of a click/typer help page."""
    match = re.search(r"^Commands:\n((?:  .*\n?)+)", help_text, flags=re.MULTILINE)
    if not match:
        return []
    names = []
    for line in match.group(1).splitlines():
        m = re.match(r"^  (\S+)", line)
        if m:
            names.append(m.group(1))
    return names


def _assert_only_working_commands(app: typer.Typer) -> list[str]:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    listed = _listed_commands(result.output)
    for name in listed:
        sub = runner.invoke(app, [name, "--help"])
        assert sub.exit_code == 0, f"`cocdrive {name} --help` failed:\n{sub.output}"
        if name in GROUP_HELP:  # a group must offer at least one command
            assert _listed_commands(sub.output), f"group {name!r} is listed but empty"
    return listed


def test_cocdrive_help_lists_only_working_commands():
    listed = _assert_only_working_commands(build_app())
    assert len(listed) == len(set(listed))


class _FakeEntryPoint:
    def __init__(self, name, register):
        self.name = name
        self._register = register

    def load(self):
        return self._register


def test_groups_without_commands_are_not_listed(monkeypatch):
    def register_bench(registry: CommandRegistry) -> None:
        bench = registry.group("bench")

        @bench.command("sim")
        def bench_sim() -> None:
            """Simulator steps per second."""

    def register_nothing_yet(registry: CommandRegistry) -> None:
        registry.group("ros")  # opened, never filled
        registry.group("bench")  # shared group: the same sub-app as above

    eps = [_FakeEntryPoint("a", register_bench), _FakeEntryPoint("b", register_nothing_yet)]
    monkeypatch.setattr(cli, "entry_points", lambda group: eps)
    app = build_app()
    listed = _assert_only_working_commands(app)
    assert listed == ["bench"]
    sub = runner.invoke(app, ["bench", "--help"])
    assert _listed_commands(sub.output) == ["sim"]


def test_unknown_group_is_a_clear_error():
    registry = CommandRegistry(typer.Typer())
    with pytest.raises(ValueError, match=r"unknown command group 'benchmark'; valid: \["):
        registry.group("benchmark")
