"""Control fitting: integrating the fitted (accel, curvature) with Trajectory.from_controls
reproduces the trajectory within 0.1 m over 6.4 s, for simulator plans, noisy logs,
stop-and-go and 2 Hz keyframes."""

from __future__ import annotations

import numpy as np
import pytest

from planner.controls import ControlFitConfig, fit_controls, integrate_speeds
from planner.types import (
    MAX_ABS_ACCEL_MPS2,
    MAX_ABS_CURVATURE_PER_M,
    PLAN_STEPS,
    InvalidInputError,
    Trajectory,
)

N = PLAN_STEPS
TOL_M = 0.1


def _smooth_controls(rng: np.random.Generator, n: int = N) -> tuple[np.ndarray, np.ndarray]:
    """Random smooth controls: a filtered random walk (accel within +-3, curvature +-0.05)."""
    kernel = np.ones(9) / 9
    accel = np.convolve(np.cumsum(rng.normal(0, 0.3, n)), kernel, mode="same")
    curvature = np.convolve(np.cumsum(rng.normal(0, 0.004, n)), kernel, mode="same")
    return np.clip(accel, -3, 3), np.clip(curvature, -0.05, 0.05)


def _error(accel: np.ndarray, curvature: np.ndarray, v0: float, truth_xy: np.ndarray) -> np.ndarray:
    fit = Trajectory.from_controls(accel, curvature, v0)
    return np.hypot(*(fit.xy - truth_xy[: len(fit)]).T)


def test_integrator_matches_trajectory_from_controls():
    rng = np.random.default_rng(0)
    accel, curvature = _smooth_controls(rng)
    traj = Trajectory.from_controls(accel, curvature, 8.0)
    xy, yaw, _ = integrate_speeds(8.0, traj.speed, traj.curvature, 0.1)
    np.testing.assert_allclose(xy, traj.xy, atol=1e-9)
    np.testing.assert_allclose(yaw, traj.yaw, atol=1e-12)


def test_round_trip_on_simulated_plans():
    rng = np.random.default_rng(1)
    worst = 0.0
    for _ in range(10):
        accel, curvature = _smooth_controls(rng)
        v0 = float(rng.uniform(3, 25))
        traj = Trajectory.from_controls(accel, curvature, v0)
        a_fit, k_fit = fit_controls(traj.xy, traj.yaw, traj.speed, v0=v0)
        assert a_fit.shape == k_fit.shape == (N,)
        worst = max(worst, float(_error(a_fit, k_fit, v0, traj.xy).max()))
        # the controls themselves are recovered, not just some controls that fit (curvature
        # only where the vehicle moves: standing still it has no effect)
        assert np.abs(a_fit - traj.accel).mean() < 0.3
        moving = traj.speed > 1.0
        assert np.abs(k_fit - curvature)[moving].mean() < 0.003
    assert worst < TOL_M


def test_noisy_log_positions_only():
    """2 cm position noise, heading and speed derived from positions."""
    rng = np.random.default_rng(2)
    worst = 0.0
    for _ in range(10):
        accel, curvature = _smooth_controls(rng)
        v0 = float(rng.uniform(3, 25))
        traj = Trajectory.from_controls(accel, curvature, v0)
        noisy = traj.xy + rng.normal(0, 0.02, traj.xy.shape)
        a_fit, k_fit = fit_controls(noisy, v0=v0)
        err = _error(a_fit, k_fit, v0, traj.xy)
        worst = max(worst, float(err[-1]), float(err.max()))
        assert np.abs(k_fit).max() <= 0.2  # noise does not turn into wild steering
    assert worst < TOL_M


def test_stop_and_go_keeps_curvature_bounded_while_stopped():
    accel = np.concatenate([np.full(20, -2.5), np.zeros(15), np.full(29, 1.5)])
    curvature = np.zeros(N)
    curvature[40:] = 0.02
    traj = Trajectory.from_controls(accel, curvature, 5.0)
    assert traj.speed.min() == 0.0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        noisy = traj.xy + rng.normal(0, 0.02, traj.xy.shape)
        a_fit, k_fit = fit_controls(noisy, v0=5.0)
        assert _error(a_fit, k_fit, 5.0, traj.xy).max() < TOL_M
        stopped = traj.speed < 0.2
        assert np.abs(k_fit[stopped]).max() < 0.05
    # clean, with the logged yaw and speed
    a_fit, k_fit = fit_controls(traj.xy, traj.yaw, traj.speed, v0=5.0)
    assert _error(a_fit, k_fit, 5.0, traj.xy).max() < TOL_M


def test_two_hertz_keyframes_are_upsampled():
    """nuScenes-like: poses at 0.5 s keyframes; the fit is on the 10 Hz grid."""
    rng = np.random.default_rng(3)
    for _ in range(5):
        accel, curvature = _smooth_controls(rng, n=70)
        v0 = float(rng.uniform(5, 20))
        truth = Trajectory.from_controls(accel, curvature, v0)
        idx = np.arange(4, 65, 5)  # rows at 0.5, 1.0, ..., 6.5 s
        times = 0.1 * (idx + 1)
        a_fit, k_fit = fit_controls(truth.xy[idx], yaw=truth.yaw[idx], times=times, v0=v0)
        assert len(a_fit) == 65
        err = _error(a_fit, k_fit, v0, truth.xy)
        assert err[63] < TOL_M  # at 6.4 s
        assert err.max() < TOL_M
        # positions only, too
        a2, k2 = fit_controls(truth.xy[idx], times=times, v0=v0)
        assert _error(a2, k2, v0, truth.xy)[63] < TOL_M


def test_uniform_dt_other_than_the_control_period():
    rng = np.random.default_rng(4)
    accel, curvature = _smooth_controls(rng)
    truth = Trajectory.from_controls(accel, curvature, 12.0)
    idx = np.arange(1, N, 2)  # every 0.2 s
    a_fit, k_fit = fit_controls(truth.xy[idx], dt=0.2, v0=12.0)
    assert len(a_fit) == N
    assert _error(a_fit, k_fit, 12.0, truth.xy).max() < TOL_M


def test_outputs_are_clamped_to_the_model_limits():
    # a log glitch: a 0.5 m jump sideways within one step
    xy = np.stack([np.arange(1, N + 1) * 1.0, np.zeros(N)], axis=1)
    xy[30:, 1] += 0.5
    accel, curvature = fit_controls(xy, v0=10.0)
    assert np.abs(accel).max() <= MAX_ABS_ACCEL_MPS2
    assert np.abs(curvature).max() <= MAX_ABS_CURVATURE_PER_M
    Trajectory.from_controls(accel, curvature, 10.0)  # valid


def test_bad_inputs_are_named():
    xy = np.stack([np.arange(1, N + 1) * 1.0, np.zeros(N)], axis=1)
    with pytest.raises(InvalidInputError, match="non-finite at sample 3"):
        bad = xy.copy()
        bad[3, 0] = np.nan
        fit_controls(bad, v0=10.0)
    with pytest.raises(InvalidInputError, match="ego frame"):
        fit_controls(xy + 100.0, v0=10.0)
    with pytest.raises(InvalidInputError, match="strictly increasing"):
        fit_controls(xy, times=np.ones(N), v0=10.0)
    with pytest.raises(InvalidInputError, match="yaw must have shape"):
        fit_controls(xy, yaw=np.zeros(3), v0=10.0)
    with pytest.raises(InvalidInputError, match="position_sigma_m"):
        ControlFitConfig(position_sigma_m=0.0)
