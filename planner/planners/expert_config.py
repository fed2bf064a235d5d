"""`ExpertConfig`: every threshold of the privileged expert (YAML: configs/planners/expert.yaml).

Units are in the names. Groups: IDM longitudinal control, prediction, speed adaptation,
reference path and lateral control, lane changes (MOBIL), nudges, traffic controls,
yielding, and how decisions are labelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from planner.types import MAX_ABS_ACCEL_MPS2, MAX_ABS_CURVATURE_PER_M


@dataclass
class ExpertConfig:
    # ---- IDM (Treiber, Hennecke & Helbing 2000) ----------------------------------------------
    idm_max_accel_mps2: float = 1.5  # a
    idm_comfort_decel_mps2: float = 2.0  # b
    idm_exponent: float = 4.0  # delta
    idm_time_headway_s: float = 1.5  # T, behind vehicles
    idm_min_gap_m: float = 2.5  # s0 behind vehicles and obstacles (bumper to bumper)
    stop_min_gap_m: float = 0.5  # s0 before virtual walls (stop lines, yield points)
    stop_time_headway_s: float = 0.3  # T before virtual walls (they never move)
    max_decel_mps2: float = 8.0  # clamp on commanded braking
    speed_limit_fraction: float = 1.0  # desired speed = fraction x lane speed limit
    default_speed_limit_mps: float = 13.9  # where no lane is known
    # ---- comfort: smooth commands (the plans are training labels) --------------------------
    # the accel command changes by at most this per second, within a plan and between
    # consecutive plans (0: no limit); waived when the limited plan would close in on a
    # constraint (gap under half its minimum, or no stop at the terminal decel by the end)
    comfort_jerk_up_mps3: float = 2.5
    comfort_jerk_down_mps3: float = 3.0
    jerk_limit_terminal_decel_mps2: float = 4.0
    # ACC model coolness c (Kesting, Treiber & Helbing 2010) for moving leaders: blends IDM
    # towards the constant-acceleration heuristic so a cut-in at similar speed is not met with
    # emergency braking (0: plain IDM)
    acc_coolness: float = 0.99
    # a yield wall whose reason vanishes (a prediction that flickers) is held this long
    yield_hold_s: float = 1.0
    # ---- prediction of other agents -----------------------------------------------------------
    leader_prediction: Literal["constant_velocity", "constant_accel"] = "constant_accel"
    accel_estimate_window_s: float = 0.5  # history span used to estimate an agent's accel
    max_predicted_decel_mps2: float = 9.0
    max_predicted_accel_mps2: float = 3.0
    # ---- speed adaptation (curves, lower limits ahead) ------------------------------------
    max_lateral_accel_mps2: float = 3.0  # curve speed = sqrt(a_lat / |curvature|)
    speed_adaptation_decel_mps2: float = 1.5  # reach a lower speed ahead at this decel
    speed_preview_s: float = 1.0  # the IDM desired speed is read this far ahead
    # ---- reference path and lateral control --------------------------------------------------
    path_step_m: float = 1.0
    path_back_m: float = 60.0
    path_min_ahead_m: float = 80.0
    path_ahead_time_s: float = 9.0  # look-ahead = max(min, speed x this) + lane change room
    lane_match_max_distance_m: float = 4.0
    lane_match_max_heading_rad: float = 1.0
    route_lane_preference_m: float = 1.0  # a route lane wins when at most this much farther
    heading_correction_time_s: float = 1.2  # converge onto the reference over speed x this
    heading_correction_min_m: float = 8.0
    # box filter on the planned path's heading before differentiating (0: none; a filter
    # flattens the first step's curvature, and replanning then drifts)
    curvature_smoothing_m: float = 0.0
    curve_speed_smoothing_m: float = 5.0  # box filter on |curvature| for curve speeds
    max_curvature_per_m: float = MAX_ABS_CURVATURE_PER_M
    # ---- in-path objects ---------------------------------------------------------------------
    corridor_margin_m: float = 0.3  # added to the ego half width when testing overlap
    leader_max_heading_rad: float = 0.8  # an in-path object moving along the path is a leader
    stationary_speed_mps: float = 0.5
    object_search_lateral_m: float = 15.0  # ignore objects farther from the path
    max_leaders: int = 3  # nearest leaders kept in the IDM rollout
    cut_in_horizon_s: float = 3.0  # along-moving objects entering the corridor this soon lead
    cut_in_min_heading_rad: float = 0.03  # heading off its own lane towards the ego path
    # ---- lane changes (MOBIL, Kesting, Treiber & Helbing 2007) -------------------------------
    mobil_politeness: float = 0.3
    mobil_threshold_mps2: float = 0.2
    mobil_safe_decel_mps2: float = 3.0  # a new follower must not brake harder than this
    mobil_min_speed_mps: float = 3.0  # no discretionary lane changes below this speed
    mobil_period_s: float = 0.5  # discretionary changes are weighed this often
    lane_change_duration_s: float = 4.0
    lane_change_min_length_m: float = 15.0
    lane_change_shortest_m: float = 8.0  # when the origin lane ends sooner
    lane_change_cooldown_s: float = 3.0
    lane_change_complete_offset_m: float = 0.4
    lane_change_complete_heading_rad: float = 0.03  # and this aligned (or within 0.15 m)
    lane_change_min_front_gap_m: float = 2.0  # physical gaps in the target lane (bumper)
    lane_change_min_rear_gap_m: float = 3.0
    lane_change_abort_max_progress_m: float = 1.5  # abort only while this close to the origin
    mandatory_lane_change_lookahead_m: float = 250.0
    mandatory_front_time_gap_s: float = 0.5  # accepted gaps when the change is a must
    mandatory_rear_time_gap_s: float = 0.6
    discretionary_route_margin_m: float = 300.0  # never change into a lane ending this soon
    lane_end_stop_margin_m: float = 2.0
    lane_end_activation_margin_m: float = 30.0  # wall within stopping distance + this
    route_end_tolerance_m: float = 10.0  # a lane ending this near the route's end is fine
    gap_search_gain_per_s: float = 0.3  # speed change per metre to the middle of the gap
    gap_search_max_decel_mps2: float = 1.5  # gap searching never brakes harder
    passing_max_accel_mps2: float = 2.0  # IDM a while overtaking
    passing_label_accel_mps2: float = 0.3  # "acceleration for passing" from this accel up
    # ---- nudges around static obstacles ------------------------------------------------------
    nudge_clearance_m: float = 0.6  # ego side to obstacle
    in_lane_margin_m: float = 0.1  # ego side to the lane line for an in-lane nudge
    max_out_of_lane_nudge_m: float = 2.6  # largest centre offset of an out-of-lane nudge
    prefer_lane_change_offset_m: float = 1.8  # above this offset change lanes when possible
    nudge_ramp_time_s: float = 2.5
    nudge_ramp_min_m: float = 8.0
    nudge_hold_margin_m: float = 3.0  # hold the offset this far before and after
    nudge_lookahead_time_s: float = 6.0
    nudge_lookahead_min_m: float = 40.0
    static_stop_gap_m: float = 6.0  # wait this far behind an obstacle it cannot pass yet
    queue_gap_m: float = 12.0  # a stopped car this close behind a stop reason is queued
    nudge_pass_speed_mps: float = 5.0  # speed assumed for a slow ego passing an obstacle
    adjacent_lane_time_gap_s: float = 1.5  # required gap to traffic for an out-of-lane nudge
    # ---- traffic lights and stop signs -------------------------------------------------------
    stop_line_margin_m: float = 1.0  # front bumper stops this far before the line
    yellow_max_decel_mps2: float = 3.0  # stop at yellow when this decel suffices
    stop_sign_stop_speed_mps: float = 0.05  # a full stop: the rule (CARLA, our metric) is 0.1 m/s
    stop_sign_done_distance_m: float = 4.0
    # ---- yielding ---------------------------------------------------------------------------
    vru_lateral_margin_m: float = 1.0  # widen the corridor for pedestrians and cyclists
    vru_time_gap_s: float = 2.0
    vru_stop_margin_m: float = 3.0
    vru_caution_lateral_m: float = 2.0  # pass slowly beside VRUs this close to the corridor
    vru_caution_speed_mps: float = 8.0
    vru_caution_before_m: float = 5.0  # from this far before them
    crossing_time_gap_s: float = 1.5
    merge_time_gap_s: float = 1.2
    conflict_stop_margin_m: float = 1.0  # stop this far before the conflict's clear point
    conflict_clearance_m: float = 3.5  # waiting point: centerlines this far apart
    conflict_lookahead_m: float = 80.0
    conflict_agent_max_distance_m: float = 100.0
    conflict_commit_decel_mps2: float = 6.0  # past the point where this is needed: go
    conflict_commit_past_m: float = 0.5  # front this far past the waiting point: go
    # priority is trusted only while the other can still stop at this decel before the conflict
    priority_trust_decel_mps2: float = 2.5
    # ---- decision labels ---------------------------------------------------------------------
    binding_accel_threshold_mps2: float = 0.25  # a constraint that lowers a by this is a cause
    speed_adaptation_label_mps: float = 0.5  # desired speed this far under the limit
    turn_heading_change_rad: float = 0.6
    turn_lookahead_m: float = 25.0
    side_ahead_lateral_m: float = 1.2  # |lateral| below this: the object is ahead/behind
    factor_path_lateral_m: float = 6.0  # farther off the path: straight-line distance

    def __post_init__(self) -> None:
        positive = (
            "idm_max_accel_mps2",
            "idm_comfort_decel_mps2",
            "idm_exponent",
            "max_decel_mps2",
            "speed_limit_fraction",
            "path_step_m",
            "max_lateral_accel_mps2",
            "speed_adaptation_decel_mps2",
            "lane_change_duration_s",
            "passing_max_accel_mps2",
            "max_curvature_per_m",
            "jerk_limit_terminal_decel_mps2",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("idm_max_accel_mps2", "max_decel_mps2", "passing_max_accel_mps2"):
            if getattr(self, name) > MAX_ABS_ACCEL_MPS2:
                raise ValueError(f"{name} must be <= {MAX_ABS_ACCEL_MPS2} m/s^2")
        if self.max_curvature_per_m > MAX_ABS_CURVATURE_PER_M:
            raise ValueError(f"max_curvature_per_m must be <= {MAX_ABS_CURVATURE_PER_M} 1/m")
        if not 0.0 <= self.acc_coolness <= 1.0:
            raise ValueError(f"acc_coolness must be in [0, 1], got {self.acc_coolness}")
        for name in ("comfort_jerk_up_mps3", "comfort_jerk_down_mps3", "yield_hold_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 disables), got {getattr(self, name)}")
        if self.path_step_m > 5.0:
            raise ValueError(f"path_step_m = {self.path_step_m} is too coarse (use <= 5 m)")
