"""One training / open-loop evaluation sample, whatever its source (simulator, nuScenes,
ScenarioNet, rosbag2): the Scene at t0 plus what happened next."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from planner.geometry import world_to_ego_xy
from planner.types import (
    EGO_HISTORY_COLUMNS,
    EGO_SPEED,
    EGO_X,
    EGO_Y,
    EGO_YAW,
    PLAN_DT_S,
    PLAN_STEPS,
    InvalidInputError,
    Scene,
)

# Columns of an agent-future array (64, 5): world frame, NaN where the agent is not observed.
AGENT_FUTURE_COLUMNS = ("t", "x", "y", "yaw", "speed")


@dataclass
class Sample:
    scene: Scene  # at t0; privileged (agents, map) - features for learned planners come from it
    future_ego: np.ndarray  # (64, 7) EGO_* columns, world frame, rows at t0 + 0.1 .. 6.4 s
    future_valid: np.ndarray  # (64,) bool: the log really has the ego pose at that time
    agent_futures: dict[str, np.ndarray] = field(default_factory=dict)  # id -> (64, 5)
    controls: np.ndarray | None = None  # (64, 2) fitted (accel m/s^2, curvature 1/m)
    label: dict[str, Any] | None = None  # CoC label (structured fields + text)
    meta: dict[str, Any] = field(default_factory=dict)  # source, scenario, seed, episode, split

    def __post_init__(self) -> None:
        fut = np.asarray(self.future_ego, dtype=np.float64)
        if fut.shape != (PLAN_STEPS, len(EGO_HISTORY_COLUMNS)):
            raise InvalidInputError(
                f"Sample.future_ego must be ({PLAN_STEPS}, {len(EGO_HISTORY_COLUMNS)}), "
                f"got {fut.shape}"
            )
        valid = np.asarray(self.future_valid, dtype=bool).reshape(-1)
        if valid.shape != (PLAN_STEPS,):
            raise InvalidInputError(
                f"Sample.future_valid must be ({PLAN_STEPS},), got {valid.shape}"
            )
        self.future_ego, self.future_valid = fut, valid

    @property
    def fully_valid(self) -> bool:
        return bool(self.future_valid.all())

    def future_xy_ego(self) -> np.ndarray:
        """(64, 2) ground-truth future positions in the ego frame at t0."""
        return world_to_ego_xy(self.future_ego[:, [EGO_X, EGO_Y]], self.scene.ego)

    def future_yaw_ego(self) -> np.ndarray:
        return (self.future_ego[:, EGO_YAW] - self.scene.ego.yaw + np.pi) % (2 * np.pi) - np.pi

    def future_speed(self) -> np.ndarray:
        return self.future_ego[:, EGO_SPEED]

    @property
    def horizon_times(self) -> np.ndarray:
        return PLAN_DT_S * np.arange(1, PLAN_STEPS + 1)
