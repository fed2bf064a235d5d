"""Feature builder (Scene -> PlannerInput) and the privileged-planner rule of call_planner."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from planner.base import Planner, PrivilegedPlanner, call_planner
from planner.features import build_planner_input, pad_ego_history, route_ahead_ego_frame
from planner.types import (
    EGO_SPEED,
    EGO_T,
    EGO_X,
    HISTORY_STEPS,
    PlannerInput,
    PlannerOutput,
    Scene,
    Trajectory,
)
from tests.helpers import make_agent, make_scene, straight_road_map


class SpyLearnedPlanner(Planner):
    """Records every argument it is handed; also offers plan_with_scene as a trap."""

    name = "spy-learned"

    def __init__(self) -> None:
        self.seen: list[object] = []

    def plan(self, *args: object, **kwargs: object) -> PlannerOutput:
        self.seen.extend(args)
        self.seen.extend(kwargs.values())
        return PlannerOutput(trajectory=Trajectory.stationary())

    def plan_with_scene(self, inp: PlannerInput, scene: Scene) -> PlannerOutput:
        raise AssertionError("a learned planner was handed the Scene")


class SpyPrivilegedPlanner(PrivilegedPlanner):
    name = "spy-expert"

    def __init__(self) -> None:
        self.scenes: list[Scene] = []

    def plan_with_scene(self, inp: PlannerInput, scene: Scene) -> PlannerOutput:
        self.scenes.append(scene)
        return PlannerOutput(trajectory=Trajectory.stationary())


def _scene() -> Scene:
    return make_scene(agents=[make_agent("lead", 30.0, 0.0, speed_mps=5.0)])


def _contains_scene(obj: object, depth: int = 0) -> bool:
    """Whether a Scene (or its agents) is reachable from obj's attributes."""
    if isinstance(obj, Scene) or depth > 3:
        return isinstance(obj, Scene)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return any(
            _contains_scene(getattr(obj, f.name), depth + 1) for f in dataclasses.fields(obj)
        )
    if isinstance(obj, (list, tuple)):
        return any(_contains_scene(v, depth + 1) for v in obj)
    if isinstance(obj, dict):
        return any(_contains_scene(v, depth + 1) for v in obj.values())
    return False


def test_learned_planner_is_never_handed_the_scene():
    scene = _scene()
    spy = SpyLearnedPlanner()
    call_planner(spy, build_planner_input(scene), scene)
    assert len(spy.seen) == 1
    assert isinstance(spy.seen[0], PlannerInput)
    assert not any(_contains_scene(arg) for arg in spy.seen)


def test_privileged_planner_gets_the_scene():
    scene = _scene()
    spy = SpyPrivilegedPlanner()
    call_planner(spy, build_planner_input(scene), scene)
    assert spy.scenes == [scene]


def test_privileged_planner_without_a_scene_errors_clearly():
    scene = _scene()
    inp = build_planner_input(scene)
    with pytest.raises(ValueError, match="'spy-expert' is privileged and needs ground truth"):
        call_planner(SpyPrivilegedPlanner(), inp, None)
    with pytest.raises(TypeError, match="privileged and needs the Scene"):
        SpyPrivilegedPlanner().plan(inp)


def test_planner_input_carries_no_ground_truth_of_other_agents():
    scene = _scene()
    inp = build_planner_input(scene)
    names = {f.name for f in dataclasses.fields(inp)}
    assert names.isdisjoint({"agents", "map", "traffic_lights", "scene"})
    assert not _contains_scene(inp)


def test_history_is_padded_backwards_at_the_oldest_speed():
    scene = make_scene(ego_speed_mps=10.0, history_steps=3)
    padded = pad_ego_history(scene.ego_history, HISTORY_STEPS)
    assert padded.shape == (HISTORY_STEPS, 7)
    np.testing.assert_allclose(np.diff(padded[:, EGO_T]), 0.1)
    np.testing.assert_allclose(np.diff(padded[:, EGO_X]), 1.0)  # 10 m/s, not standing still
    np.testing.assert_allclose(padded[:, EGO_SPEED], 10.0)
    with pytest.raises(ValueError, match="empty"):
        pad_ego_history(np.zeros((0, 7)))


def test_route_ahead_and_speed_limit():
    road = straight_road_map(n_lanes=2, speed_limit_mps=25.0)
    scene = make_scene(road, ego_xy=(10.0, 3.7), route_lane_ids=["lane_1"])
    inp = build_planner_input(scene)
    assert inp.speed_limit_mps == 25.0
    np.testing.assert_allclose(inp.route_xy[:, 1], 0.0, atol=1e-9)  # ahead in the same lane
    np.testing.assert_allclose(inp.route_xy[:, 0], 4.0 * np.arange(1, 21), atol=1e-6)
    # past the end of the route the last direction is extended: shape stays fixed
    far = make_scene(road, ego_xy=(245.0, 3.7), route_lane_ids=["lane_1"])
    ahead = route_ahead_ego_frame(far)
    assert ahead.shape == (20, 2) and np.all(np.diff(ahead[:, 0]) > 0)


def test_real_cameras_pass_through_labelled_real():
    scene = _scene()
    scene.cameras = {"front": np.zeros((2, 8, 16, 3), dtype=np.uint8)}
    inp = build_planner_input(scene)
    assert inp.cameras.shape == (1, 2, 8, 16, 3)
    assert inp.camera_names == ("front",)
    assert inp.camera_source == "real"
