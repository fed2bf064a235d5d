"""The one planner interface. The VLA, the privileged expert and the baselines implement it,
so every consumer (closed loop, open loop, ROS node, benchmarks) works with each.

Only a planner that declares itself privileged (the expert, the IDM baseline) is handed the
full `Scene`; learned planners get the `PlannerInput` alone. `call_planner` is the single
place where that rule is applied, and every consumer goes through it.
"""

from __future__ import annotations

import abc
from typing import ClassVar

from planner.types import PlannerInput, PlannerOutput, Scene


class Planner(abc.ABC):
    """A planner sees cameras, its own ego history and the route (`PlannerInput`)."""

    name: ClassVar[str] = "planner"
    privileged: ClassVar[bool] = False
    # False for planners that read only the ego history and route (const-vel, CTRA): consumers
    # then skip rendering cameras for them.
    uses_cameras: ClassVar[bool] = True

    def reset(self) -> None:  # noqa: B027 - stateless planners need no reset
        """Forget any state carried between calls (start of a new episode)."""

    @abc.abstractmethod
    def plan(self, inp: PlannerInput) -> PlannerOutput:
        """Plan 6.4 s ahead from what the sensors give."""


class PrivilegedPlanner(Planner):
    """A planner that reads ground truth (other agents, lights, map): the expert, IDM.

    It must never be mistaken for a deployable planner; results name it as privileged."""

    privileged: ClassVar[bool] = True

    def plan(self, inp: PlannerInput) -> PlannerOutput:
        raise TypeError(
            f"{type(self).__name__} is privileged and needs the Scene: call "
            "planner.base.call_planner(planner, inp, scene) or plan_with_scene()"
        )

    @abc.abstractmethod
    def plan_with_scene(self, inp: PlannerInput, scene: Scene) -> PlannerOutput:
        """Plan with full knowledge of the scene."""


def call_planner(planner: Planner, inp: PlannerInput, scene: Scene | None) -> PlannerOutput:
    """Run one planning step, handing the Scene only to planners declared privileged."""
    if planner.privileged:
        if scene is None:
            raise ValueError(
                f"planner {planner.name!r} is privileged and needs ground truth; this source "
                "provides only sensor input (e.g. a real log): use a learned or baseline planner"
            )
        assert isinstance(planner, PrivilegedPlanner)
        return planner.plan_with_scene(inp, scene)
    return planner.plan(inp)
