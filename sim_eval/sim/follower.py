"""Trajectory follower: pure pursuit (steering) + speed PID (acceleration) on a kinematic
bicycle about the rear axle, with an actuation delay.

A plan is a `Trajectory` in the ego frame of the Scene it was computed on (time t0, the ego
pose at t0). `submit` converts it to the world frame once (REP-103) and queues it to take
effect at t0 + `actuation_delay_s`; until then the previous plan keeps being followed (the
plan a car is executing while the next one is computed). `control(t, state)` returns the
clamped (acceleration, steering angle) for the current state.

Written by hand because no maintained library offers a plan-tracking controller for
highway-env's vehicles (its own controllers track lanes, not trajectories).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from planner.types import EgoState, Trajectory
from sim_eval.sim.config import FollowerConfig, VehicleLimits

_EPS_T = 1e-9


@dataclass
class ControlState:
    """What the follower needs of the ego (REP-103 world frame, rear-axle reference)."""

    x: float
    y: float
    yaw: float
    speed: float


@dataclass
class _WorldPlan:
    t0: float  # time the plan was computed for (s)
    effective_t: float  # time it starts to be followed (s)
    xy: np.ndarray  # (K+1, 2) world path incl. the t0 pose
    s: np.ndarray  # (K+1,) arc length along xy
    times: np.ndarray  # (K+1,) seconds after t0
    speed: np.ndarray  # (K+1,)
    accel: np.ndarray  # (K+1,) accel over the interval ending at each row (row 0: row 1's)
    end_yaw: float  # heading of the last row, for extrapolating past the end


class TrajectoryFollower:
    def __init__(self, config: FollowerConfig, limits: VehicleLimits, delay_s: float = 0.0):
        self.cfg = config
        self.limits = limits
        self.delay_s = float(delay_s)
        self.reset()

    def reset(self) -> None:
        self._pending: list[_WorldPlan] = []
        self._active: _WorldPlan | None = None
        self._integral = 0.0
        self._prev_error: float | None = None
        self._steer = 0.0

    @property
    def steering(self) -> float:
        """Current (rate-limited) steering angle, rad, positive = left."""
        return self._steer

    def submit(
        self, trajectory: Trajectory, ego_t0: EgoState, t0: float, *, immediate: bool = False
    ) -> None:
        """Queue a plan computed on the Scene at `t0` (ego pose `ego_t0`); it takes effect at
        t0 + delay, or at t0 when `immediate` (the initial hold plan)."""
        world = trajectory.to_world(ego_t0)  # (K, 3) x, y, yaw
        xy = np.concatenate([[[ego_t0.x, ego_t0.y]], world[:, :2]], axis=0)
        seg = np.hypot(*np.diff(xy, axis=0).T)
        plan = _WorldPlan(
            t0=float(t0),
            effective_t=float(t0) + (0.0 if immediate else self.delay_s),
            xy=xy,
            s=np.concatenate([[0.0], np.cumsum(seg)]),
            times=np.concatenate([[0.0], trajectory.times]),
            speed=np.concatenate([[ego_t0.speed], trajectory.speed]),
            accel=np.concatenate([trajectory.accel[:1], trajectory.accel]),
            end_yaw=float(world[-1, 2]),
        )
        self._pending.append(plan)

    def hold_initial(self, ego: EgoState, t0: float, steps: int = 64) -> None:
        """Before the first plan takes effect (delay > 0): keep speed and heading."""
        zeros = np.zeros(steps)
        self.submit(Trajectory.from_controls(zeros, zeros, ego.speed), ego, t0, immediate=True)

    def _activate(self, t: float) -> _WorldPlan | None:
        while self._pending and self._pending[0].effective_t <= t + _EPS_T:
            self._active = self._pending.pop(0)
        return self._active

    def control(self, t: float, state: ControlState, dt: float) -> tuple[float, float]:
        """(acceleration m/s^2, steering rad, positive left) for the state at time t,
        clamped to the vehicle limits; steering is rate limited over `dt`."""
        plan = self._activate(t)
        lim = self.limits
        if plan is None:
            return 0.0, self._steer
        accel = self._speed_control(plan, t, state, dt)
        steer_cmd = self._pure_pursuit(plan, state)
        max_delta = lim.max_steer_rate_radps * dt
        self._steer += float(np.clip(steer_cmd - self._steer, -max_delta, max_delta))
        self._steer = float(np.clip(self._steer, -lim.max_steer_rad, lim.max_steer_rad))
        accel = float(np.clip(accel, -lim.max_decel_mps2, lim.max_accel_mps2))
        return accel, self._steer

    # -- longitudinal ---------------------------------------------------------------------
    def _speed_control(self, plan: _WorldPlan, t: float, state: ControlState, dt: float) -> float:
        cfg = self.cfg
        tau = t - plan.t0 + cfg.preview_s
        v_ref = float(np.interp(tau, plan.times, plan.speed))
        k = int(np.clip(np.searchsorted(plan.times, tau), 0, len(plan.times) - 1))
        a_ff = float(plan.accel[k]) if cfg.feedforward_accel else 0.0
        # hold still only when the plan stays (nearly) stopped for `stop_horizon_s`: a plan
        # that starts from standstill is slow in its first tenths of a second
        v_soon = float(np.interp(tau + cfg.stop_horizon_s, plan.times, plan.speed))
        if max(v_ref, v_soon) < cfg.stop_speed_mps and state.speed < cfg.stop_speed_mps + 0.5:
            # hold still: brake what is left proportionally to the speed (time constant
            # `stop_time_constant_s`, at least `stop_min_decel_mps2`) so the last tenths of a
            # m/s fade out instead of being braked at the vehicle limit in one step (a jerk
            # spike that failed the comfort bounds of every stop); under
            # `stop_snap_speed_mps` the remainder goes in one step. The speed clamp at 0
            # keeps the car from reversing.
            self._integral = 0.0
            self._prev_error = None
            if state.speed <= 0.0:
                return 0.0
            if state.speed < cfg.stop_snap_speed_mps:
                return -state.speed / dt
            decel = max(state.speed / cfg.stop_time_constant_s, cfg.stop_min_decel_mps2)
            return -min(decel, state.speed / dt, self.limits.max_decel_mps2)
        error = v_ref - state.speed
        self._integral = float(
            np.clip(
                self._integral + error * dt,
                -cfg.speed_integral_limit_mps,
                cfg.speed_integral_limit_mps,
            )
        )
        deriv = 0.0 if self._prev_error is None else (error - self._prev_error) / dt
        self._prev_error = error
        return a_ff + cfg.speed_kp * error + cfg.speed_ki * self._integral + cfg.speed_kd * deriv

    # -- lateral --------------------------------------------------------------------------
    def _pure_pursuit(self, plan: _WorldPlan, state: ControlState) -> float:
        cfg = self.cfg
        if plan.s[-1] < 0.5:  # a stationary plan has no path to follow: wheels straight
            return 0.0
        lookahead = float(
            np.clip(
                cfg.lookahead_min_m + cfg.lookahead_time_s * state.speed,
                cfg.lookahead_min_m,
                cfg.lookahead_max_m,
            )
        )
        pos = np.array([state.x, state.y])
        # closest point on the path (by vertex; plans are sampled every 0.1 s), then the
        # point `lookahead` further along the path, extrapolated past the end if needed
        d2 = ((plan.xy - pos) ** 2).sum(axis=1)
        i = int(np.argmin(d2))
        s_target = plan.s[i] + lookahead
        if s_target <= plan.s[-1]:
            tx = float(np.interp(s_target, plan.s, plan.xy[:, 0]))
            ty = float(np.interp(s_target, plan.s, plan.xy[:, 1]))
        else:
            extra = s_target - plan.s[-1]
            tx = float(plan.xy[-1, 0] + extra * math.cos(plan.end_yaw))
            ty = float(plan.xy[-1, 1] + extra * math.sin(plan.end_yaw))
        dx, dy = tx - state.x, ty - state.y
        c, s = math.cos(state.yaw), math.sin(state.yaw)
        lx, ly = c * dx + s * dy, -s * dx + c * dy  # target in the ego frame
        dist2 = lx * lx + ly * ly
        if dist2 < 1e-6:
            return 0.0
        # pure pursuit: curvature of the arc through the target, 2 * y / d^2
        curvature = 2.0 * ly / dist2
        return float(math.atan(curvature * self.limits.wheelbase_m))
