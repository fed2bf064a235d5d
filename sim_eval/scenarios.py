"""Scenario specs and suites (YAML files in configs/scenarios/)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ScenarioSpec:
    """One episode to run: a family (what is built), a seed, and its parameters."""

    name: str  # unique within a suite, e.g. "cut_in/seed=1203"
    family: str  # e.g. "cut_in"
    seed: int
    duration_s: float = 20.0
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Stable id used as the resumable-results key."""
        return f"{self.family}:{self.seed}"
