"""Fit (accel, curvature) controls to a logged or simulated trajectory.

The model acts in control space: it outputs 64 x (accel, curvature) that
`Trajectory.from_controls` integrates with the unicycle model. To train it on logs
(nuScenes, rosbag2, the simulator's executed path) the logged positions must be turned back
into controls that reproduce them. That is a regularised nonlinear least-squares problem:

    minimise  sum |p_k(u) - p_k|^2 / sigma_p^2 + (yaw, speed terms) + smoothness terms

over the speeds v_1..v_N and curvatures kappa_1..kappa_N (parametrising by speed rather than
accel keeps v >= 0 a simple bound, which is how `from_controls` clamps). The integrator below
is the same midpoint unicycle as `Trajectory.from_controls`, vectorised, with its analytic
Jacobian, so a few Gauss-Newton steps solve one 64-step fit in a few milliseconds
(scipy.optimize.least_squares with a finite-difference or even an analytic dense Jacobian
spends most of its time in per-iteration SVDs of a 380 x 128 matrix; the damped normal
equations here are 128 x 128).

A speed floor keeps curvature bounded when the vehicle stands still (the heading is then
unobservable and the smoothness term interpolates the curvature instead).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from planner.types import (
    MAX_ABS_ACCEL_MPS2,
    MAX_ABS_CURVATURE_PER_M,
    MAX_SPEED_MPS,
    PLAN_DT_S,
    InvalidInputError,
)

log = logging.getLogger(__name__)


@dataclass
class ControlFitConfig:
    """Weights and limits of the control fit (sigmas are the tolerated residual sizes)."""

    dt_s: float = PLAN_DT_S  # control period of the fitted controls
    position_sigma_m: float = 0.03  # position residual scale
    yaw_sigma_rad: float = 0.02  # yaw residual scale (when yaw is given or derived)
    speed_sigma_mps: float = 0.3  # speed residual scale (when speed is given)
    accel_change_sigma_mps2: float = 1.0  # smoothness: accel change per step
    curvature_change_sigma_per_m: float = 0.008  # smoothness: curvature change per step
    speed_floor_mps: float = 1.0  # curvature is estimated as dyaw / (max(v, floor) dt)
    # below the speed floor the heading barely moves, so curvature is unobservable: it is
    # pulled toward 0 with this scale (weight grows linearly to full at standstill)
    low_speed_curvature_sigma_per_m: float = 0.02
    max_abs_accel_mps2: float = MAX_ABS_ACCEL_MPS2
    max_abs_curvature_per_m: float = MAX_ABS_CURVATURE_PER_M
    iterations: int = 10  # Levenberg-Marquardt steps (2-4 suffice on smooth data)
    damping: float = 1e-6  # Levenberg damping, relative to the normal-matrix diagonal
    relative_tolerance: float = 1e-4  # stop when a step lowers the cost by less than this

    def __post_init__(self) -> None:
        for name in (
            "dt_s",
            "position_sigma_m",
            "yaw_sigma_rad",
            "speed_sigma_mps",
            "accel_change_sigma_mps2",
            "curvature_change_sigma_per_m",
            "speed_floor_mps",
            "low_speed_curvature_sigma_per_m",
        ):
            if not getattr(self, name) > 0:
                raise InvalidInputError(
                    f"ControlFitConfig.{name} must be > 0, got {getattr(self, name)}"
                )


def integrate_speeds(
    v0: float, speed: np.ndarray, curvature: np.ndarray, dt: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (N, 2) and yaw (N,) of the midpoint unicycle given the speed at the end of
    each step (N,) and its curvature (N,); returns (xy, yaw, yaw_mid). Same model as
    `Trajectory.from_controls` (speeds >= 0)."""
    v_prev = np.concatenate([[v0], speed[:-1]])
    ds = 0.5 * (v_prev + speed) * dt
    dyaw = curvature * ds
    yaw = np.cumsum(dyaw)
    yaw_mid = yaw - 0.5 * dyaw
    xy = np.stack([np.cumsum(ds * np.cos(yaw_mid)), np.cumsum(ds * np.sin(yaw_mid))], axis=1)
    return xy, yaw, yaw_mid


def _jacobian(
    v0: float, speed: np.ndarray, curvature: np.ndarray, dt: float, yaw_mid: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """d(x, y, yaw, yaw_mid)/d(speed, curvature): four (N, 2N) matrices."""
    n = len(speed)
    v_prev = np.concatenate([[v0], speed[:-1]])
    ds = 0.5 * (v_prev + speed) * dt
    # d ds_j / d v_i = dt/2 for i == j and i == j - 1
    d_ds = np.zeros((n, 2 * n))
    idx = np.arange(n)
    d_ds[idx, idx] = 0.5 * dt
    d_ds[idx[1:], idx[:-1]] = 0.5 * dt
    # d dyaw_j = kappa_j d ds_j (speed part) + ds_j (curvature part)
    d_dyaw = curvature[:, None] * d_ds
    d_dyaw[idx, n + idx] = ds
    d_yaw = np.cumsum(d_dyaw, axis=0)
    d_yaw_mid = d_yaw - 0.5 * d_dyaw
    c, s = np.cos(yaw_mid), np.sin(yaw_mid)
    d_x = np.cumsum(d_ds * c[:, None] - (ds * s)[:, None] * d_yaw_mid, axis=0)
    d_y = np.cumsum(d_ds * s[:, None] + (ds * c)[:, None] * d_yaw_mid, axis=0)
    return d_x, d_y, d_yaw, d_yaw_mid


def _resample(
    xy: np.ndarray,
    yaw: np.ndarray | None,
    speed: np.ndarray | None,
    times: np.ndarray,
    v0: float,
    dt: float,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Cubic-spline the samples at `times` (s after t0, t0 pose at the origin with yaw 0 and
    speed v0) onto the grid dt, 2 dt, ... up to the last sample time."""
    from scipy.interpolate import CubicSpline

    n_out = int(math.floor(times[-1] / dt + 1e-6))
    grid = dt * np.arange(1, n_out + 1)
    t_all = np.concatenate([[0.0], times])
    pts = np.concatenate([[[0.0, 0.0]], xy], axis=0)
    # velocity at t0 is (v0, 0) in the ego frame: the clamped end condition uses it
    xy_spline = CubicSpline(t_all, pts, axis=0, bc_type=((1, np.array([v0, 0.0])), "not-a-knot"))
    xy_out = xy_spline(grid)
    yaw_out = None
    if yaw is not None:
        yaw_out = CubicSpline(t_all, np.unwrap(np.concatenate([[0.0], yaw])))(grid)
    speed_out = None
    if speed is not None:
        speed_out = np.maximum(CubicSpline(t_all, np.concatenate([[v0], speed]))(grid), 0.0)
    return xy_out, yaw_out, speed_out


def _check_inputs(
    xy: np.ndarray, yaw: np.ndarray | None, speed: np.ndarray | None, v0: float
) -> None:
    if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) < 2:
        raise InvalidInputError(
            f"fit_controls: xy must be (N>=2, 2) positions in the ego frame at t0, got "
            f"shape {xy.shape}"
        )
    for name, arr in (("xy", xy), ("yaw", yaw), ("speed", speed)):
        if arr is None:
            continue
        if name != "xy" and arr.shape != (len(xy),):
            raise InvalidInputError(
                f"fit_controls: {name} must have shape ({len(xy)},) like xy, got {arr.shape}"
            )
        bad = np.flatnonzero(~np.isfinite(arr).reshape(len(xy), -1).all(axis=1))
        if len(bad):
            raise InvalidInputError(
                f"fit_controls: {name} is non-finite at sample {int(bad[0])}; mask or "
                "interpolate invalid log samples before fitting"
            )
    if not math.isfinite(v0) or v0 < 0 or v0 > MAX_SPEED_MPS:
        raise InvalidInputError(f"fit_controls: v0 must be in [0, {MAX_SPEED_MPS}], got {v0}")


def fit_controls(
    xy: np.ndarray,
    yaw: np.ndarray | None = None,
    speed: np.ndarray | None = None,
    times: np.ndarray | None = None,
    dt: float | None = None,
    v0: float = 0.0,
    cfg: ControlFitConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(accel, curvature), each (N,), that `Trajectory.from_controls(accel, curvature, v0,
    cfg.dt_s)` integrates into the given trajectory.

    xy: (M, 2) positions (rear axle) in the ego frame at t0 (t0 pose = origin, yaw 0), one per
    sample after t0. yaw (M,) and speed (M,) are optional (a log may have only positions;
    heading is then taken from the positions). Sample times: `times` (M,) seconds after t0,
    any spacing (e.g. nuScenes' 2 Hz keyframes: resampled to cfg.dt_s with a cubic spline), or
    a uniform `dt` (default cfg.dt_s). N = number of cfg.dt_s steps up to the last sample."""
    cfg = cfg or ControlFitConfig()
    xy = np.asarray(xy, dtype=np.float64)
    yaw = None if yaw is None else np.asarray(yaw, dtype=np.float64).reshape(-1)
    speed = None if speed is None else np.asarray(speed, dtype=np.float64).reshape(-1)
    _check_inputs(xy, yaw, speed, float(v0))
    step = cfg.dt_s
    if times is None:
        sample_dt = step if dt is None else float(dt)
        if not sample_dt > 0:
            raise InvalidInputError(f"fit_controls: dt must be > 0, got {dt}")
        times = sample_dt * np.arange(1, len(xy) + 1)
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    if times.shape != (len(xy),) or times[0] <= 0 or np.any(np.diff(times) <= 0):
        raise InvalidInputError(
            f"fit_controls: times must be ({len(xy)},) strictly increasing seconds after t0 "
            f"(> 0), got {times[:5]}..."
        )
    if np.allclose(times, step * np.arange(1, len(xy) + 1), atol=1e-6):
        xy_t, yaw_t, speed_t = xy, yaw, speed
    else:
        xy_t, yaw_t, speed_t = _resample(xy, yaw, speed, times, float(v0), step)
    reach = float(np.hypot(*xy_t[0]))
    if reach > (v0 + MAX_ABS_ACCEL_MPS2 * step) * step + 1.0:
        raise InvalidInputError(
            f"fit_controls: the first sample is {reach:.1f} m from the origin, farther than "
            f"the vehicle can move in {step} s from {v0:.1f} m/s; give positions in the ego "
            "frame at t0 (subtract the t0 pose)"
        )
    with _one_blas_thread():
        return _fit_uniform(xy_t, yaw_t, speed_t, float(v0), cfg)


_BLAS_CONTROLLER = None


def _one_blas_thread() -> Any:
    """A context that runs numpy's BLAS on one thread. The fit's matrices are small
    (~380 x 128): threaded BLAS spins and contends on a shared machine (measured here: 4.5 ms
    CPU single-threaded vs 28 ms CPU and 100 ms wall with 2 threads under load). The
    controller is built once (threadpool_limits() rescans the libraries on every call)."""
    global _BLAS_CONTROLLER
    if _BLAS_CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _BLAS_CONTROLLER = ThreadpoolController()
    return _BLAS_CONTROLLER.limit(limits=1, user_api="blas")


def _fit_uniform(
    xy: np.ndarray,
    yaw: np.ndarray | None,
    speed: np.ndarray | None,
    v0: float,
    cfg: ControlFitConfig,
) -> tuple[np.ndarray, np.ndarray]:
    n, dt = len(xy), cfg.dt_s
    pts = np.concatenate([[[0.0, 0.0]], xy], axis=0)
    step_len = np.hypot(*np.diff(pts, axis=0).T)  # (N,) chord per step
    mean_speed = step_len / dt
    # -- initial guess: speeds from chords (or the given speeds), yaw from chord directions
    if speed is not None:
        v_init = speed.copy()
    else:
        v_init = np.empty(n)
        v_init[:-1] = 0.5 * (mean_speed[:-1] + mean_speed[1:])
        v_init[-1] = mean_speed[-1]
    v_init = np.clip(v_init, 0.0, MAX_SPEED_MPS)
    # a chord shorter than this is position noise rather than motion
    min_chord_m = max(0.5 * cfg.speed_floor_mps * dt, 3.0 * math.sqrt(2) * cfg.position_sigma_m)
    moving = step_len >= min_chord_m
    if yaw is not None:
        # logged heading at the end of each step
        yaw_target = np.unwrap(np.concatenate([[0.0], yaw]))[1:]
        yaw_weight = np.full(n, 1.0 / cfg.yaw_sigma_rad)
        yaw_is_mid = False
    else:
        # the chord of step k points along the heading at mid-step; standing still it says
        # nothing, so those samples get no weight (the smoothness term fills in)
        chord_yaw = np.arctan2(np.diff(pts[:, 1]), np.diff(pts[:, 0]))
        # a chord that points more than 90 deg away from the last trusted heading is noise
        # (a plan never reverses, nor turns that far in one step)
        trusted, last = moving.copy(), 0.0
        for k in range(n):
            if trusted[k]:
                if abs(_wrap(chord_yaw[k] - last)) > 0.5 * math.pi:
                    trusted[k] = False
                else:
                    last = chord_yaw[k] = last + _wrap(chord_yaw[k] - last)
        moving = trusted
        yaw_target = _fill_nan_forward(np.where(moving, chord_yaw, np.nan))
        # position noise sigma over a chord of length L gives a heading noise ~ sigma / L
        yaw_weight = np.where(moving, step_len / (math.sqrt(2) * cfg.position_sigma_m), 0.0)
        yaw_is_mid = True
    v_prev = np.concatenate([[v0], v_init[:-1]])
    floor_ds = np.maximum(0.5 * (v_prev + v_init), cfg.speed_floor_mps) * dt
    if yaw_is_mid:  # mid-step headings: the turn of step k spans half of k-1 and half of k
        yaw_end = np.concatenate([0.5 * (yaw_target[:-1] + yaw_target[1:]), yaw_target[-1:]])
    else:
        yaw_end = yaw_target
    kappa = np.clip(
        np.diff(np.concatenate([[0.0], yaw_end])) / floor_ds,
        -cfg.max_abs_curvature_per_m,
        cfg.max_abs_curvature_per_m,
    )
    v = v_init.copy()

    # -- constant parts: smoothness rows (linear in the parameters). Accel change between
    # steps k-1 and k is (v_k - 2 v_{k-1} + v_{k-2}) / dt^2 with v_0 the known initial speed.
    w_a = 1.0 / (cfg.accel_change_sigma_mps2 * dt)
    w_k = 1.0 / cfg.curvature_change_sigma_per_m
    rows = np.arange(n - 1)
    smooth_v = np.zeros((n - 1, 2 * n))
    smooth_v[rows, rows + 1] = w_a
    smooth_v[rows, rows] = -2.0 * w_a
    smooth_v[rows[1:], rows[1:] - 1] = w_a
    smooth_v_const = np.zeros(n - 1)
    smooth_v_const[0] = w_a * v0
    smooth_k = np.zeros((n - 1, 2 * n))
    smooth_k[rows, n + rows] = -w_k
    smooth_k[rows, n + rows + 1] = w_k
    w_p = 1.0 / cfg.position_sigma_m
    w_v = 1.0 / cfg.speed_sigma_mps
    w_low_full = 1.0 / cfg.low_speed_curvature_sigma_per_m
    fixed_jacs = [smooth_v, smooth_k]
    if speed is not None:
        speed_jac = np.zeros((n, 2 * n))
        speed_jac[np.arange(n), np.arange(n)] = w_v
        fixed_jacs.append(speed_jac)

    def residuals_and_jac(
        params: np.ndarray, with_jac: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        vv, kk = params[:n], params[n:]
        pos, yw, yaw_mid = integrate_speeds(v0, vv, kk, dt)
        yaw_fit = yaw_mid if yaw_is_mid else yw
        res = [
            w_p * (pos[:, 0] - xy[:, 0]),
            w_p * (pos[:, 1] - xy[:, 1]),
            yaw_weight * _wrap(yaw_fit - yaw_target),
            smooth_v @ params + smooth_v_const,
            smooth_k @ params,
        ]
        if speed is not None:
            res.append(w_v * (vv - speed))
        # curvature prior below the speed floor (weights held fixed within one step)
        mid = 0.5 * (np.concatenate([[v0], vv[:-1]]) + vv)
        w_low = np.clip(1.0 - mid / cfg.speed_floor_mps, 0.0, 1.0) * w_low_full
        res.append(w_low * kk)
        if not with_jac:
            return np.concatenate(res), None
        d_x, d_y, d_yaw_end, d_yaw_mid = _jacobian(v0, vv, kk, dt, yaw_mid)
        d_yaw = d_yaw_mid if yaw_is_mid else d_yaw_end
        low_jac = np.zeros((n, 2 * n))
        low_jac[np.arange(n), n + np.arange(n)] = w_low
        jac = np.vstack([w_p * d_x, w_p * d_y, yaw_weight[:, None] * d_yaw, *fixed_jacs, low_jac])
        return np.concatenate(res), jac

    lo = np.concatenate([np.zeros(n), np.full(n, -cfg.max_abs_curvature_per_m)])
    hi = np.concatenate([np.full(n, MAX_SPEED_MPS), np.full(n, cfg.max_abs_curvature_per_m)])
    params = np.concatenate([v, kappa])
    # Levenberg-Marquardt: a Gauss-Newton step, accepted only if the cost drops (otherwise
    # more damping); bounds are kept by projection.
    res, jac = residuals_and_jac(params)
    cost = float(res @ res)
    damping = cfg.damping
    for _ in range(cfg.iterations):
        jtj = jac.T @ jac
        grad = jac.T @ res
        diag = np.diag(jtj).copy() + 1e-12
        # active set: a parameter at a bound whose gradient pushes it outward stays there
        # (projecting a full step instead stalls the descent at standstill, v = 0)
        free = ~(((params <= lo + 1e-9) & (grad > 0)) | ((params >= hi - 1e-9) & (grad < 0)))
        sub = np.ix_(free, free)
        for _retry in range(8):
            step = np.zeros_like(params)
            step[free] = np.linalg.solve(jtj[sub] + np.diag(damping * diag[free]), -grad[free])
            trial = np.clip(params + step, lo, hi)
            trial_res, _unused = residuals_and_jac(trial, with_jac=False)
            trial_cost = float(trial_res @ trial_res)
            if trial_cost <= cost:
                break
            damping *= 10.0
        else:
            log.debug("fit_controls: no step lowers the cost %.4g at iteration %d", cost, _)
            break  # no step lowers the cost: converged
        log.debug("fit_controls: iteration %d cost %.4g -> %.4g", _, cost, trial_cost)
        converged = cost - trial_cost <= cfg.relative_tolerance * cost
        params, cost = trial, trial_cost
        if converged:
            break
        res, jac = residuals_and_jac(params)
        damping = max(damping / 10.0, cfg.damping)
    v_fit, kappa_fit = params[:n], params[n:]
    accel = np.diff(np.concatenate([[v0], v_fit])) / dt
    if np.abs(accel).max() > cfg.max_abs_accel_mps2:
        log.debug("fit_controls: clamping accel peaks of %.1f m/s^2", np.abs(accel).max())
    accel = np.clip(accel, -cfg.max_abs_accel_mps2, cfg.max_abs_accel_mps2)
    kappa_fit = np.clip(kappa_fit, -cfg.max_abs_curvature_per_m, cfg.max_abs_curvature_per_m)
    return accel, kappa_fit


def _wrap(angle: np.ndarray | float) -> np.ndarray:
    """Radians to [-pi, pi)."""
    return (np.asarray(angle) + math.pi) % (2.0 * math.pi) - math.pi


def _fill_nan_forward(values: np.ndarray) -> np.ndarray:
    """Replace NaNs by the previous finite value (the first finite one at the start; 0 when
    there is none)."""
    out = values.copy()
    finite = np.flatnonzero(np.isfinite(out))
    if len(finite) == 0:
        return np.zeros_like(out)
    out[: finite[0]] = out[finite[0]]
    for k in range(finite[0] + 1, len(out)):
        if not np.isfinite(out[k]):
            out[k] = out[k - 1]
    return out


__all__ = ["ControlFitConfig", "fit_controls", "integrate_speeds"]
