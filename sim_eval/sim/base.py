"""The simulator interface: reset(scenario, seed) -> Scene, step(trajectory) -> Scene.

One `step` advances 0.1 s of simulated time (however many simulator substeps that takes).
The plan handed to `step` was computed on the last returned Scene; the adapter's trajectory
follower executes it, honouring the configured actuation delay."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from planner.types import Scene, Trajectory
from sim_eval.scenarios import ScenarioSpec


@dataclass
class StepInfo:
    """Termination and events after the last step."""

    done: bool = False
    reason: str = ""  # "time_limit" | "route_complete" | "ego_collision" | "stuck" | ""
    events: dict[str, Any] = field(default_factory=dict)


class Simulator(abc.ABC):
    @abc.abstractmethod
    def reset(self, scenario: ScenarioSpec, seed: int | None = None) -> Scene:
        """Build the scenario (seed defaults to scenario.seed) and return the first Scene."""

    @abc.abstractmethod
    def step(self, trajectory: Trajectory) -> Scene:
        """Execute the plan (ego frame of the last Scene) for 0.1 s; return the new Scene."""

    @property
    @abc.abstractmethod
    def info(self) -> StepInfo:
        """Termination state after the last reset/step."""

    def close(self) -> None:  # noqa: B027 - adapters without resources need nothing
        """Release resources (windows, server connections)."""
