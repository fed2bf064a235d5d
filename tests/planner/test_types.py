"""Core types: Trajectory integration and validation, input validation, serialisation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from planner.taxonomy import (
    AgentClass,
    CausalFactorKind,
    LateralDecision,
    LongitudinalDecision,
    Side,
)
from planner.types import (
    EGO_HISTORY_COLUMNS,
    MAX_ABS_ACCEL_MPS2,
    MAX_ABS_CURVATURE_PER_M,
    PLAN_DT_S,
    PLAN_STEPS,
    CausalFactor,
    Command,
    Decision,
    EgoState,
    InvalidInputError,
    MapData,
    PlannerInput,
    Route,
    Scene,
    Trajectory,
)


def _controls(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    accel = rng.uniform(-2.0, 2.0, PLAN_STEPS)
    curvature = rng.uniform(-0.05, 0.05, PLAN_STEPS)
    return accel, curvature


def _input(history: np.ndarray) -> PlannerInput:
    return PlannerInput(
        timestamp=0.0,
        ego_history=history,
        command=Command.LANE_FOLLOW,
        route_xy=np.zeros((20, 2)),
        speed_limit_mps=13.9,
    )


# ---- Trajectory.from_controls -------------------------------------------------------------------
def test_from_controls_round_trips_its_controls():
    accel, curvature = _controls(np.random.default_rng(1))
    traj = Trajectory.from_controls(accel, curvature, v0=12.0)
    assert traj.data.shape == (PLAN_STEPS, 6)
    np.testing.assert_allclose(traj.accel, accel, atol=1e-12)
    np.testing.assert_allclose(traj.curvature, curvature, atol=1e-12)
    again = Trajectory.from_controls(traj.accel, traj.curvature, v0=12.0)
    np.testing.assert_allclose(again.data, traj.data, atol=1e-12)


def test_from_controls_round_trips_through_a_stop():
    # Braking harder than the speed allows: speed stops at 0, the stored accel is the
    # realised one, and integrating the stored controls gives the same plan again.
    accel = np.full(PLAN_STEPS, -3.0)
    traj = Trajectory.from_controls(accel, np.zeros(PLAN_STEPS), v0=5.0)
    assert traj.speed.min() == 0.0
    assert (traj.speed >= 0).all()
    assert traj.accel[-1] == 0.0  # already stopped: nothing realised
    again = Trajectory.from_controls(traj.accel, traj.curvature, v0=5.0)
    np.testing.assert_allclose(again.data, traj.data, atol=1e-12)
    # stopping distance v^2 / (2 a)
    assert traj.xy[-1, 0] == pytest.approx(5.0**2 / (2 * 3.0), abs=0.05)


def test_from_controls_constant_speed_and_curvature_is_an_arc():
    v, kappa = 10.0, 0.02
    traj = Trajectory.from_controls(np.zeros(PLAN_STEPS), np.full(PLAN_STEPS, kappa), v0=v)
    t = traj.times
    radius = 1.0 / kappa
    np.testing.assert_allclose(traj.yaw, v * kappa * t, atol=1e-9)
    np.testing.assert_allclose(traj.xy[:, 0], radius * np.sin(v * kappa * t), atol=0.02)
    np.testing.assert_allclose(traj.xy[:, 1], radius * (1 - np.cos(v * kappa * t)), atol=0.02)
    np.testing.assert_allclose(traj.speed, v)


def test_row_k_is_the_state_at_k_plus_one_steps():
    traj = Trajectory.from_controls(np.zeros(PLAN_STEPS), np.zeros(PLAN_STEPS), v0=10.0)
    np.testing.assert_allclose(traj.times, PLAN_DT_S * np.arange(1, PLAN_STEPS + 1))
    assert traj.xy[0, 0] == pytest.approx(1.0)  # 0.1 s at 10 m/s: not the origin
    assert traj.xy[-1, 0] == pytest.approx(64.0)
    assert traj.times[-1] == pytest.approx(6.4)


@pytest.mark.parametrize(
    ("column", "step", "value", "expected"),
    [
        ("accel", 5, float("nan"), ["step 5", "accel", "nan"]),
        ("curvature", 11, float("inf"), ["step 11", "curvature", "inf"]),
        ("accel", 7, 10.0, ["step 7", "accel = 10", "9.8"]),
        ("accel", 0, -9.9, ["step 0", "accel = -9.9", "9.8"]),
        ("curvature", 3, 0.4, ["step 3", "curvature = 0.4", "0.33"]),
        ("curvature", 63, -0.35, ["step 63", "curvature = -0.35", "0.33"]),
    ],
)
def test_from_controls_rejects_bad_controls_naming_step_and_value(column, step, value, expected):
    accel, curvature = np.zeros(PLAN_STEPS), np.zeros(PLAN_STEPS)
    (accel if column == "accel" else curvature)[step] = value
    with pytest.raises(InvalidInputError) as err:
        Trajectory.from_controls(accel, curvature, v0=10.0)
    message = str(err.value)
    for part in expected:
        assert part in message, message


def test_controls_exactly_at_the_limits_are_accepted():
    accel = np.full(PLAN_STEPS, MAX_ABS_ACCEL_MPS2)
    curvature = np.full(PLAN_STEPS, -MAX_ABS_CURVATURE_PER_M)
    traj = Trajectory.from_controls(accel, curvature, v0=0.0)
    assert traj.speed[-1] == pytest.approx(MAX_ABS_ACCEL_MPS2 * 6.4)


def test_from_controls_rejects_mismatched_lengths_and_bad_v0():
    with pytest.raises(InvalidInputError, match="same length"):
        Trajectory.from_controls(np.zeros(64), np.zeros(63), v0=1.0)
    with pytest.raises(InvalidInputError, match="v0"):
        Trajectory.from_controls(np.zeros(64), np.zeros(64), v0=float("nan"))
    with pytest.raises(InvalidInputError, match="v0"):
        Trajectory.from_controls(np.zeros(64), np.zeros(64), v0=-1.0)


def test_trajectory_validation_names_the_bad_step():
    data = Trajectory.from_controls(np.zeros(64), np.zeros(64), v0=5.0).data.copy()
    data[9, 1] = np.nan
    with pytest.raises(InvalidInputError, match=r"step 9 .*y is nan"):
        Trajectory(data)
    data[9, 1] = 0.0
    data[20, 3] = -1.0
    with pytest.raises(InvalidInputError, match=r"step 20 .*negative"):
        Trajectory(data)
    data[20, 3] = 80.0
    with pytest.raises(InvalidInputError, match=r"step 20 .*km/h vs m/s"):
        Trajectory(data)
    with pytest.raises(InvalidInputError, match="shape"):
        Trajectory(np.zeros((64, 5)))


def test_trajectory_data_is_read_only():
    traj = Trajectory.stationary()
    with pytest.raises(ValueError):
        traj.data[0, 0] = 1.0


# ---- inputs ---------------------------------------------------------------------------------------
def _history(steps: int = 16, speed: float = 10.0) -> np.ndarray:
    t = PLAN_DT_S * np.arange(-steps + 1, 1)
    hist = np.zeros((steps, len(EGO_HISTORY_COLUMNS)))
    hist[:, 0] = t
    hist[:, 1] = speed * t
    hist[:, 4] = speed
    return hist


def test_planner_input_rejects_nan_ego_history_with_a_message():
    hist = _history()
    hist[4, 3] = np.nan
    with pytest.raises(InvalidInputError) as err:
        _input(hist)
    message = str(err.value)
    assert "non-finite yaw at row 4" in message
    assert "odometry" in message  # says what to do


def test_planner_input_rejects_wrong_history_shape_and_cameras():
    with pytest.raises(InvalidInputError, match=r"\(H>=1, 7\)"):
        _input(np.zeros((16, 5)))
    with pytest.raises(InvalidInputError, match=r"\(H>=1, 7\)"):
        _input(np.zeros((0, 7)))
    with pytest.raises(InvalidInputError, match="uint8"):
        PlannerInput(
            timestamp=0.0,
            ego_history=_history(),
            command=Command.LANE_FOLLOW,
            route_xy=np.zeros((20, 2)),
            speed_limit_mps=13.9,
            cameras=np.zeros((1, 2, 8, 8, 3), dtype=np.float32),
        )


def test_planner_input_accepts_a_valid_history():
    inp = _input(_history(speed=7.5))
    assert inp.ego_speed == 7.5


def test_ego_state_rejects_non_finite_values():
    with pytest.raises(InvalidInputError, match=r"EgoState.speed is nan"):
        EgoState(t=0.0, x=0.0, y=0.0, yaw=0.0, speed=float("nan"))


def test_scene_rejects_a_badly_shaped_history():
    ego = EgoState(t=0.0, x=0.0, y=0.0, yaw=0.0, speed=1.0)
    with pytest.raises(InvalidInputError, match=r"\(H, 7\)"):
        Scene(
            timestamp=0.0,
            ego=ego,
            ego_history=np.zeros((16, 3)),
            agents=[],
            map=MapData(),
            route=Route(waypoints=np.zeros((0, 2))),
        )


def test_route_length_is_computed_from_waypoints():
    route = Route(waypoints=[[0.0, 0.0], [3.0, 4.0], [3.0, 10.0]])
    assert route.length_m == pytest.approx(11.0)


# ---- decisions ------------------------------------------------------------------------------------
def test_decision_round_trips_through_a_dict():
    decision = Decision(
        longitudinal=LongitudinalDecision.LEAD_OBSTACLE_FOLLOWING,
        lateral=LateralDecision.LANE_CHANGE,
        lateral_side=Side.LEFT,
        factors=(
            CausalFactor(
                kind=CausalFactorKind.CRITICAL_OBJECT,
                description="slow truck ahead",
                object_id="a7",
                object_class=AgentClass.VEHICLE,
                side=Side.AHEAD,
                distance_m=23.5,
                relative_speed_mps=-4.0,
            ),
        ),
        target_speed_mps=9.0,
    )
    assert Decision.from_dict(decision.to_dict()) == decision


def test_taxonomy_parse_lists_valid_values():
    assert LongitudinalDecision.parse("YIELD") is LongitudinalDecision.YIELD
    with pytest.raises(ValueError, match="valid values: .*lane_keeping"):
        LateralDecision.parse("lane_keep")


def test_wrap_of_heading_keeps_the_arc_consistent():
    # A full-circle plan (tight curvature for 6.4 s) has a yaw past 2 pi: the type keeps it
    # unwrapped so that yaw rate = diff(yaw) / dt stays meaningful.
    traj = Trajectory.from_controls(np.zeros(64), np.full(64, 0.33), v0=20.0)
    assert traj.yaw[-1] > 2 * math.pi
    assert np.all(np.diff(traj.yaw) > 0)
