"""`SimConfig`: every behaviour number of the embedded simulator (YAML: configs/sim.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from planner.config import load_config
from planner.paths import config_path

DEFAULT_SIM_CONFIG = config_path("sim.yaml")


@dataclass
class FollowerConfig:
    """Pure pursuit + speed PID that turns a plan into (acceleration, steering)."""

    lookahead_min_m: float = 4.0  # pure-pursuit look-ahead at standstill
    lookahead_time_s: float = 0.6  # look-ahead grows with speed: min + time * speed
    lookahead_max_m: float = 25.0
    speed_kp: float = 1.2  # 1/s, acceleration per m/s of speed error
    speed_ki: float = 0.1  # 1/s^2
    speed_kd: float = 0.0  # dimensionless (m/s^2 per m/s^2 of error rate)
    speed_integral_limit_mps: float = 2.0  # anti wind-up clamp on the integral (m/s * s)
    feedforward_accel: bool = True  # add the plan's own acceleration to the PID output
    preview_s: float = 0.1  # speed/accel target taken this far ahead on the plan
    stop_speed_mps: float = 0.3  # plan speeds below this count as "hold still"
    stop_horizon_s: float = 1.0  # ... when the plan is still below it this much later
    stop_time_constant_s: float = 0.5  # holding still brakes at speed / this (m/s^2)
    stop_min_decel_mps2: float = 0.8  # ... but at least this
    stop_snap_speed_mps: float = 0.05  # below this the rest is braked in one step


@dataclass
class VehicleLimits:
    """Physical limits of the simulated ego (a kinematic bicycle about the rear axle)."""

    length_m: float = 4.9
    width_m: float = 1.9
    wheelbase_m: float = 2.9
    rear_axle_to_center_m: float = 1.45  # box centre is this far ahead of the rear axle
    max_accel_mps2: float = 4.0
    max_decel_mps2: float = 9.0  # magnitude
    max_steer_rad: float = 0.6
    max_steer_rate_radps: float = 1.2
    max_speed_mps: float = 40.0


@dataclass
class SimConfig:
    sim_hz: int = 10  # simulation substep rate; a whole multiple of 10 Hz
    actuation_delay_s: float = 0.0  # a plan computed at t takes effect at t + delay
    history_s: float = 1.6  # ego history kept in each Scene (10 Hz)
    agent_radius_m: float = 120.0  # agents further than this from the ego are left out
    lane_sample_step_m: float = 1.0  # map polylines are sampled this finely
    roundabout_sliver_buffer_m: float = 0.05  # mitre +-buffer that closes union slivers
    route_waypoint_step_m: float = 2.0
    route_complete_margin_m: float = 2.0  # route counts as complete this close to its end
    stuck_timeout_s: float = 0.0  # end as "stuck" after this long at standstill; 0 = never
    stuck_speed_mps: float = 0.2
    wreck_removal_s: float = 1.0  # background vehicles crashed among themselves vanish after
    ego_collision_ends_episode: bool = True
    follower: FollowerConfig = field(default_factory=FollowerConfig)
    vehicle: VehicleLimits = field(default_factory=VehicleLimits)

    def __post_init__(self) -> None:
        if self.sim_hz <= 0 or self.sim_hz % 10 != 0:
            raise ValueError(
                f"sim_hz = {self.sim_hz} must be a positive whole multiple of 10 (10, 20, 30...)"
                " so that one 0.1 s step is a whole number of substeps"
            )
        if self.actuation_delay_s < 0:
            raise ValueError(f"actuation_delay_s = {self.actuation_delay_s} must be >= 0")

    @property
    def substeps(self) -> int:
        """Simulator substeps per 0.1 s step."""
        return self.sim_hz // 10


def load_sim_config(
    path: str | Path | None = DEFAULT_SIM_CONFIG, overrides: list[str] | tuple[str, ...] = ()
) -> SimConfig:
    """SimConfig defaults, updated by configs/sim.yaml (when present), then by overrides."""
    if path is not None and not Path(path).is_file() and Path(path) == DEFAULT_SIM_CONFIG:
        path = None
    return load_config(SimConfig, path, overrides)
