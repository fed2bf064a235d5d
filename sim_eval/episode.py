"""A recorded closed-loop episode: what metrics, reports and animations consume.

Frames are the simulator's `Scene`s at 10 Hz (they share one `MapData`), with the planner
output that was computed at each frame. Metrics are pure functions of this record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from planner.types import MapData, PlannerOutput, Route, Scene


@dataclass
class EpisodeRecord:
    scenario: str  # scenario name, e.g. "hard_braking_lead"
    family: str  # scenario family
    seed: int
    frames: list[Scene]  # one per 0.1 s, frames[0] at reset
    outputs: list[PlannerOutput | None] = field(default_factory=list)  # per frame, None if none
    termination: str = "time_limit"  # time_limit | route_complete | collision | planner_failed
    failure: str | None = None  # why the planner failed, when it did
    meta: dict[str, Any] = field(default_factory=dict)  # planner name, delays, config hash...

    @property
    def map(self) -> MapData:
        return self.frames[0].map

    @property
    def route(self) -> Route:
        return self.frames[0].route

    @property
    def dt(self) -> float:
        if len(self.frames) < 2:
            return 0.1
        return float(self.frames[1].timestamp - self.frames[0].timestamp)

    @property
    def duration_s(self) -> float:
        return float(self.frames[-1].timestamp - self.frames[0].timestamp)
