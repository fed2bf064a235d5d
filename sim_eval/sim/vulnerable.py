"""Pedestrians and cyclists for the embedded highway-env simulator (which has neither).

They are small `Vehicle` subclasses that live in `road.vehicles`, so highway-env's own
machinery treats them as road users: the collision check covers them (an ego that hits one
crashes), and IDM cars take one standing in their lane as a leader and slow down. Their
`act()` does nothing; `step()` moves them with simple, scripted behaviour:

* `Crosser`: waits at the kerb, then walks (or rides) straight across the road at a constant
  speed and stops on the far side. Used for pedestrians and for cyclists crossing.
* `EdgeRider`: a cyclist riding along a sequence of lanes near the right road edge at a
  constant cruising speed, slowing for whatever stands in front of it.

`CrosswalkControl` is the right of way at a crosswalk: a waiting crosser steps out only when
no background car would have to brake hard for it (the ego is deliberately not considered:
yielding is what the ego is tested on), and background cars stop at the crosswalk while a
crosser is on, or about to enter, their lane. Positions are in highway-env's frame
(y to the right of travel); Scenes get them through the simulator's converter, with the
agent class set by `sim_eval.sim.families.tag`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from highway_env.road.road import Road
from highway_env.vehicle.kinematics import Vehicle

from planner.taxonomy import AgentClass
from sim_eval.sim.families import tag
from sim_eval.sim.traffic_control import LaneKey, UrbanIdmConfig, UrbanIDMVehicle

logger = logging.getLogger(__name__)


@dataclass
class VulnerableConfig:
    """Sizes and behaviour of pedestrians and cyclists."""

    pedestrian_length_m: float = 0.6
    pedestrian_width_m: float = 0.6
    cyclist_length_m: float = 1.8
    cyclist_width_m: float = 0.6
    crossing_gap_s: float = 4.0  # a crosser waits while a background car is this close (time)
    crossing_gap_m: float = 8.0  # ... or this close (distance) to the crosswalk
    crosswalk_clearance_m: float = 1.5  # cars yield while a crosser is this close to their lane
    rider_stop_gap_m: float = 3.0  # a riding cyclist stops this far behind what is ahead
    rider_slow_gap_m: float = 12.0  # ... and slows down from this gap
    commit_reaction_s: float = 0.3  # background cars: point of no return, as at junctions


class _VulnerableAgent(Vehicle):
    """A road user that highway-env collides and IDM cars see, moved by its own `step`."""

    def __init__(
        self,
        road: Road,
        position: np.ndarray,
        heading: float,
        length_m: float,
        width_m: float,
        agent_class: AgentClass,
    ) -> None:
        self.LENGTH = float(length_m)  # instance sizes: RoadObject.__init__ reads them
        self.WIDTH = float(width_m)
        super().__init__(road, position, heading, 0.0)
        tag(self, agent_class)
        self.agent_kind = agent_class.value

    def act(self, action: dict | str | None = None) -> None:
        """Scripted: nothing to decide here (movement happens in `step`)."""

    def handle_collisions(self, other: object, dt: float = 0) -> None:
        # Pedestrians and cyclists pass each other on a crosswalk; only contacts with
        # vehicles count (a vehicle's own check covers those from its side too).
        if isinstance(other, _VulnerableAgent):
            return
        super().handle_collisions(other, dt)

    def on_state_update(self) -> None:
        # The lane index of a pedestrian is never used; the library's search over every lane
        # of the map would cost more than the rest of its step.
        return


class Crosser(_VulnerableAgent):
    """Crosses from `start` to `end` (highway-env frame) at `speed_mps` once started."""

    def __init__(
        self,
        road: Road,
        start: np.ndarray,
        end: np.ndarray,
        speed_mps: float,
        length_m: float,
        width_m: float,
        agent_class: AgentClass = AgentClass.PEDESTRIAN,
    ) -> None:
        start = np.asarray(start, dtype=np.float64)
        end = np.asarray(end, dtype=np.float64)
        delta = end - start
        self.total_m = float(np.hypot(*delta))
        if self.total_m <= 0:
            raise ValueError("a crossing needs distinct start and end points")
        super().__init__(
            road, start, math.atan2(delta[1], delta[0]), length_m, width_m, agent_class
        )
        self.start_xy = start
        self.end_xy = end
        self.walk_speed_mps = float(speed_mps)
        self.travelled_m = 0.0
        self.state = "waiting"  # waiting -> crossing -> done
        self.started_at_s: float | None = None

    def begin(self, t: float) -> None:
        if self.state == "waiting":
            self.state = "crossing"
            self.started_at_s = float(t)
            self.speed = self.walk_speed_mps

    def step(self, dt: float) -> None:
        if self.crashed or self.state != "crossing":
            self.speed = 0.0
            return
        self.travelled_m = min(self.total_m, self.travelled_m + self.walk_speed_mps * dt)
        frac = self.travelled_m / self.total_m
        self.position = self.start_xy + frac * (self.end_xy - self.start_xy)
        if self.travelled_m >= self.total_m:
            self.state = "done"
            self.speed = 0.0


class EdgeRider(_VulnerableAgent):
    """A cyclist riding along `lanes` at `lateral_m` (positive: right of travel)."""

    def __init__(
        self,
        road: Road,
        lanes: Sequence[LaneKey],
        longitudinal_m: float,
        lateral_m: float,
        speed_mps: float,
        cfg: VulnerableConfig,
    ) -> None:
        self.lane_keys = list(lanes)
        self._k = 0
        self.s = float(longitudinal_m)
        self.lateral_m = float(lateral_m)
        self.cruise_mps = float(speed_mps)
        self.cfg = cfg
        lane = road.network.get_lane((lanes[0][0], lanes[0][1], 0))
        super().__init__(
            road,
            lane.position(self.s, self.lateral_m),
            lane.heading_at(self.s),
            cfg.cyclist_length_m,
            cfg.cyclist_width_m,
            AgentClass.CYCLIST,
        )
        self.speed = self.cruise_mps
        self.finished = False

    def _lane(self):
        a, b = self.lane_keys[self._k]
        return self.road.network.get_lane((a, b, 0))

    def _gap_ahead(self) -> float:
        """Bumper gap to the nearest road user ahead in the rider's path (inf if none)."""
        lane = self._lane()
        best = math.inf
        for other in self.road.vehicles:
            if other is self:
                continue
            s, lat = lane.local_coordinates(other.position)
            if abs(lat - self.lateral_m) > 0.5 * (other.WIDTH + self.WIDTH) + 0.3:
                continue
            gap = s - self.s - 0.5 * (other.LENGTH + self.LENGTH)
            if -0.5 * self.LENGTH < gap < best:
                best = gap
        return best

    def act(self, action: dict | str | None = None) -> None:
        if self.crashed or self.finished:
            return
        cfg = self.cfg
        gap = self._gap_ahead()
        if gap <= cfg.rider_stop_gap_m:
            self.speed = 0.0
        elif gap < cfg.rider_slow_gap_m:
            frac = (gap - cfg.rider_stop_gap_m) / (cfg.rider_slow_gap_m - cfg.rider_stop_gap_m)
            self.speed = self.cruise_mps * frac
        else:
            self.speed = self.cruise_mps

    def step(self, dt: float) -> None:
        if self.crashed or self.finished:
            self.speed = 0.0
            return
        self.s += self.speed * dt
        lane = self._lane()
        while self.s > lane.length and self._k + 1 < len(self.lane_keys):
            self.s -= lane.length
            self._k += 1
            lane = self._lane()
        if self.s > lane.length:
            self.s = lane.length
            self.finished = True
            self.speed = 0.0
        self.position = np.asarray(lane.position(self.s, self.lateral_m), dtype=np.float64)
        self.heading = float(lane.heading_at(self.s))


@dataclass
class CrosswalkLane:
    """A lane that the crosswalk cuts, and where (arc length of the near edge)."""

    lane_key: LaneKey
    near_edge_s: float  # cars stop their front bumper before this arc length
    width_m: float = 4.0  # crosswalk extent along the lane (far edge = near edge + width)


class CrosswalkControl:
    """Right of way at one crosswalk (see module doc).

    `trigger(t, ego) -> bool` says when the scripted crossers want to go (e.g. when the ego is
    a chosen distance away); each crosser then still waits for a safe gap in background
    traffic. Crossers start one after another, `stagger_s` apart."""

    request_name = "crosswalk"

    def __init__(
        self,
        road: Road,
        lanes: Sequence[CrosswalkLane],
        crossers: Sequence[Crosser],
        trigger: Callable[[float, Vehicle | None], bool],
        cfg: VulnerableConfig,
        idm: UrbanIdmConfig,
        stagger_s: Sequence[float] = (),
    ) -> None:
        self.road = road
        self.lanes = list(lanes)
        self.crossers = list(crossers)
        self.trigger = trigger
        self.cfg = cfg
        self.idm = idm
        self.stagger_s = list(stagger_s) or [0.0] * len(self.crossers)
        self.triggered_at_s: float | None = None
        self._lane_by_key = {cl.lane_key: cl for cl in self.lanes}

    def _lane(self, key: LaneKey):
        return self.road.network.get_lane((key[0], key[1], 0))

    def _crosser_blocks(self, crosser: Crosser, cl: CrosswalkLane) -> bool:
        """True while `crosser` is on `cl`'s lane or walking towards it (within clearance)."""
        if crosser.crashed:
            return self._on_lane(crosser, cl, margin=0.0)
        if crosser.state != "crossing":
            return False  # waiting at, or arrived on, the kerb
        lane = self._lane(cl.lane_key)
        _, lat = lane.local_coordinates(crosser.position)
        half = 0.5 * lane.width_at(cl.near_edge_s) + self.cfg.crosswalk_clearance_m
        if abs(lat) <= half:
            return True
        # still approaching this lane from the side it is on?
        _, lat_end = lane.local_coordinates(crosser.end_xy)
        return np.sign(lat) != np.sign(lat_end)

    def _on_lane(self, crosser: Crosser, cl: CrosswalkLane, margin: float) -> bool:
        lane = self._lane(cl.lane_key)
        _, lat = lane.local_coordinates(crosser.position)
        return abs(lat) <= 0.5 * lane.width_at(cl.near_edge_s) + margin

    def _stop_distance(self, v: float) -> float:
        return v * v / (2.0 * self.idm.comfort_decel_mps2) + v * self.cfg.commit_reaction_s

    def _approaching(self, vehicles: Sequence[Vehicle]):
        """(vehicle, crosswalk lane, front bumper distance to the near edge) of background
        cars that have not yet cleared the crosswalk (rear past its far edge)."""
        out = []
        for v in vehicles:
            if not isinstance(v, UrbanIDMVehicle) or v.crashed:
                continue
            for cl in self.lanes:
                dist = v.route_distance_to(cl.lane_key, cl.near_edge_s)
                if dist is None:
                    continue
                dist -= 0.5 * v.LENGTH
                if dist >= -(v.LENGTH + cl.width_m + self.cfg.crosswalk_clearance_m):
                    out.append((v, cl, dist))
        return out

    def _gap_clear(self, approaching) -> bool:
        cfg = self.cfg
        for v, _cl, dist in approaching:
            if (
                dist < cfg.crossing_gap_m
                or dist < self._stop_distance(v.speed) + cfg.crossing_gap_m
            ):
                return False
            if dist / max(v.speed, 0.1) < cfg.crossing_gap_s:
                return False
        return True

    def update(self, t: float, vehicles: Sequence[Vehicle], ego: Vehicle | None = None) -> None:
        approaching = self._approaching(vehicles)
        if self.triggered_at_s is None and self.trigger(t, ego):
            self.triggered_at_s = float(t)
        if self.triggered_at_s is not None:
            for crosser, delay in zip(self.crossers, self.stagger_s):
                if crosser.state != "waiting" or t < self.triggered_at_s + delay:
                    continue
                # only cars on lanes the crosser still has to cross matter
                relevant = [
                    a for a in approaching if self._crosser_blocks_after_start(crosser, a[1])
                ]
                if self._gap_clear(relevant):
                    crosser.begin(t)
                    logger.debug("crosser starts at t=%.1f", t)
        for v, cl, dist in approaching:
            blocked = any(self._crosser_blocks(c, cl) for c in self.crossers)
            committed = dist < 0.0 or (
                dist < self._stop_distance(v.speed) and self.request_name not in v.stop_requests
            )
            if blocked and not committed:
                v.stop_requests[self.request_name] = (cl.lane_key, cl.near_edge_s)
            elif not blocked:
                v.stop_requests.pop(self.request_name, None)

    def _crosser_blocks_after_start(self, crosser: Crosser, cl: CrosswalkLane) -> bool:
        """Whether a waiting crosser's path cuts `cl`'s lane (start and end on either side)."""
        lane = self._lane(cl.lane_key)
        _, lat0 = lane.local_coordinates(crosser.start_xy)
        _, lat1 = lane.local_coordinates(crosser.end_xy)
        return np.sign(lat0) != np.sign(lat1)
