"""A tiny deterministic kinematic straight-road simulator and toy planners for runner tests.

Why not highway-env here: these tests check the runner's bookkeeping (resume, failures,
manifests, reports), so they must be fast and independent of another module's speed.

Road: three 3.5 m lanes along world +x (lane "L1" centred on y = 0, "L2" to its left). The ego
follows each plan exactly (its pose becomes the plan's first row); other vehicles move at
constant acceleration. One optional traffic light at `light_x_m` turns green at
`light_green_s`. Scenario params: ego_speed_mps, route_length_m, lead_gap_m, lead_speed_mps,
lead_decel_mps2, light_x_m, light_green_s."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from shapely.geometry import Polygon

from planner.base import Planner, PrivilegedPlanner
from planner.geometry import ego_footprint
from planner.taxonomy import (
    AgentClass,
    CausalFactorKind,
    LateralDecision,
    LightState,
    LongitudinalDecision,
)
from planner.types import (
    PLAN_DT_S,
    PLAN_STEPS,
    Agent,
    CausalFactor,
    Decision,
    EgoState,
    Lane,
    MapData,
    PlannerInput,
    PlannerOutput,
    Reasoning,
    Route,
    Scene,
    StopLine,
    TrafficLight,
    Trajectory,
)
from sim_eval.scenarios import ScenarioSpec
from sim_eval.sim.base import Simulator, StepInfo

LANE_WIDTH_M = 3.5
ROAD_START_M, ROAD_END_M = -60.0, 600.0
HISTORY_ROWS = 16


def straight_road() -> MapData:
    lanes = {}
    xs = np.linspace(ROAD_START_M, ROAD_END_M, 34)
    for i, name in enumerate(("L0", "L1", "L2")):
        yc = (i - 1) * LANE_WIDTH_M
        lanes[name] = Lane(
            id=name,
            centerline=np.stack([xs, np.full_like(xs, yc)], axis=1),
            left_boundary=np.stack([xs, np.full_like(xs, yc + LANE_WIDTH_M / 2)], axis=1),
            right_boundary=np.stack([xs, np.full_like(xs, yc - LANE_WIDTH_M / 2)], axis=1),
            speed_limit_mps=15.0,
            left_boundary_kind="road_edge" if i == 2 else "dashed",
            right_boundary_kind="road_edge" if i == 0 else "dashed",
        )
    return MapData(lanes=lanes, name="straight3")


@dataclass
class _Vehicle:
    x: float
    y: float
    speed: float
    accel: float


class FakeSimulator(Simulator):
    """Deterministic, exact-following kinematic simulator (see the module docstring)."""

    def __init__(self, config=None):
        self.config = config
        self._info = StepInfo()

    def reset(self, scenario: ScenarioSpec, seed: int | None = None) -> Scene:
        seed = scenario.seed if seed is None else seed
        p = scenario.params
        rng = np.random.default_rng(seed)
        self.scenario, self.seed = scenario, seed
        self.t = 0.0
        self.map = straight_road()
        length = float(p.get("route_length_m", 150.0))
        self.route = Route(waypoints=np.array([[0.0, 0.0], [length, 0.0]]), length_m=length)
        v0 = float(p.get("ego_speed_mps", 10.0))
        self.ego = EgoState(t=0.0, x=0.0, y=0.0, yaw=0.0, speed=v0)
        self.history = [self.ego.as_row()]
        self.vehicles: list[_Vehicle] = []
        if "lead_gap_m" in p:
            gap = float(p["lead_gap_m"]) + float(rng.uniform(-2.0, 2.0))
            self.vehicles.append(
                _Vehicle(
                    x=gap,
                    y=0.0,
                    speed=float(p.get("lead_speed_mps", v0)),
                    accel=-float(p.get("lead_decel_mps2", 0.0)),
                )
            )
        self.light_x = p.get("light_x_m")
        if self.light_x is not None:
            self.map.stop_lines["S0"] = StopLine(
                id="S0",
                points=np.array([[self.light_x, -5.25], [self.light_x, 5.25]]),
                lane_ids=("L0", "L1", "L2"),
                light_id="TL0",
            )
        self._info = StepInfo()
        return self._scene()

    def _scene(self) -> Scene:
        agents = [
            Agent(
                id=f"veh{i}",
                agent_class=AgentClass.VEHICLE,
                x=v.x,
                y=v.y,
                yaw=0.0,
                vx=v.speed,
                vy=0.0,
                length=4.8,
                width=1.9,
            )
            for i, v in enumerate(self.vehicles)
        ]
        lights = []
        if self.light_x is not None:
            green = self.t >= float(self.scenario.params.get("light_green_s", 3.0))
            lights.append(
                TrafficLight(
                    id="TL0",
                    state=LightState.GREEN if green else LightState.RED,
                    stop_line_id="S0",
                    lane_ids=("L0", "L1", "L2"),
                )
            )
        return Scene(
            timestamp=self.t,
            ego=self.ego,
            ego_history=np.array(self.history[-HISTORY_ROWS:]),
            agents=agents,
            map=self.map,
            route=self.route,
            traffic_lights=lights,
            metadata={"seed": self.seed, "family": self.scenario.family},
        )

    def step(self, trajectory: Trajectory) -> Scene:
        dt = PLAN_DT_S
        x, y, yaw = trajectory.to_world(self.ego)[0]
        row = trajectory.data[0]
        self.t = round(self.t + dt, 6)
        self.ego = EgoState(
            t=self.t, x=x, y=y, yaw=yaw, speed=row[3], accel=row[4], curvature=row[5]
        )
        self.history.append(self.ego.as_row())
        for v in self.vehicles:
            new_speed = max(0.0, v.speed + v.accel * dt)
            v.x += 0.5 * (v.speed + new_speed) * dt
            v.speed = new_speed
        scene = self._scene()
        ego_poly = Polygon(ego_footprint(self.ego))
        if any(ego_poly.intersects(Polygon(a.corners())) for a in scene.agents):
            self._info = StepInfo(done=True, reason="ego_collision")
        elif self.ego.x >= float(self.route.length_m) - 2.0:
            self._info = StepInfo(done=True, reason="route_complete")
        elif self.t >= self.scenario.duration_s - 1e-9:
            self._info = StepInfo(done=True, reason="time_limit")
        else:
            self._info = StepInfo()
        return scene

    @property
    def info(self) -> StepInfo:
        return self._info


def make_fake_simulator(config=None) -> FakeSimulator:
    return FakeSimulator(config)


# ---- toy planners (top-level factories so spawn workers can pickle them) -------------------
def _keep_speed(v0: float, accel: float = 0.0) -> Trajectory:
    return Trajectory.from_controls(np.full(PLAN_STEPS, accel), np.zeros(PLAN_STEPS), v0)


class ConstantSpeedPlanner(Planner):
    """Drives straight at its current speed: runs into slow leads."""

    name = "fake-const"

    def plan(self, inp: PlannerInput) -> PlannerOutput:
        return PlannerOutput(trajectory=_keep_speed(inp.ego_speed))


class CarefulPlanner(PrivilegedPlanner):
    """Brakes for a lead closer than 25 m and states why (a reasoning text for animations)."""

    name = "fake-careful"

    def plan_with_scene(self, inp: PlannerInput, scene: Scene) -> PlannerOutput:
        ahead = [a.x - scene.ego.x for a in scene.agents if abs(a.y - scene.ego.y) < 2.0]
        ahead = [d for d in ahead if d > 0]
        if ahead and min(ahead) < 25.0:
            decision = Decision(
                LongitudinalDecision.LEAD_OBSTACLE_FOLLOWING,
                LateralDecision.LANE_KEEPING,
                factors=(CausalFactor(CausalFactorKind.CRITICAL_OBJECT, object_id="veh0"),),
            )
            text = f"Slow down: the lead vehicle is {min(ahead):.0f} m ahead."
            traj = _keep_speed(inp.ego_speed, accel=-min(6.0, inp.ego_speed / 0.1))
        else:
            decision = Decision(LongitudinalDecision.SET_SPEED_TRACKING)
            text = "Keep the set speed: the lane ahead is clear."
            traj = _keep_speed(inp.ego_speed)
        return PlannerOutput(
            trajectory=traj, reasoning=Reasoning(text, decision), decision=decision
        )


class FlakyPlanner(PrivilegedPlanner):
    """Raises on seed 2 after 0.5 s and returns NaN on seed 3; drives straight otherwise."""

    name = "fake-flaky"

    def plan_with_scene(self, inp: PlannerInput, scene: Scene) -> PlannerOutput:
        seed = scene.metadata["seed"]
        if seed == 2 and scene.timestamp >= 0.5:
            raise RuntimeError("boom: the network diverged")
        if seed == 3:
            bad = np.full((PLAN_STEPS, 6), math.nan)
            return PlannerOutput(trajectory=Trajectory(bad))  # raises InvalidInputError
        return PlannerOutput(trajectory=_keep_speed(inp.ego_speed))


class CameraPlanner(Planner):
    """A stand-in for a learned planner: refuses to drive without camera frames."""

    name = "fake-camera"

    def plan(self, inp: PlannerInput) -> PlannerOutput:
        if inp.cameras is None:
            raise ValueError("no camera frames in the input")
        assert inp.cameras.ndim == 5 and inp.camera_source == "rendered"
        return PlannerOutput(trajectory=_keep_speed(inp.ego_speed))


def make_camera_planner() -> Planner:
    return CameraPlanner()


def make_const_planner() -> Planner:
    return ConstantSpeedPlanner()


def make_careful_planner() -> Planner:
    return CarefulPlanner()


def make_flaky_planner() -> Planner:
    return FlakyPlanner()


def fake_suite(seeds: tuple[int, ...] = (1, 2, 3, 4), duration_s: float = 4.0) -> list:
    """Two families on the straight road: an empty cruise and a slow lead to follow."""
    specs = []
    for family, params in (
        ("cruise", {"ego_speed_mps": 10.0, "light_x_m": 30.0, "light_green_s": 1.0}),
        ("slow_lead", {"ego_speed_mps": 10.0, "lead_gap_m": 22.0, "lead_speed_mps": 2.0}),
    ):
        for seed in seeds:
            specs.append(
                ScenarioSpec(
                    name=f"{family}/seed={seed}",
                    family=family,
                    seed=seed,
                    duration_s=duration_s,
                    params=params,
                )
            )
    return specs
