"""Traffic lights, stop lines and right of way for urban background traffic."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("highway_env")

from highway_env.road.road import Road, RoadNetwork  # noqa: E402

from planner.taxonomy import LightState  # noqa: E402
from sim_eval.sim.families.urban_families import (  # noqa: E402
    build_intersection,
    build_roundabout,
    roundabout_route,
)
from sim_eval.sim.traffic_control import (  # noqa: E402
    IntersectionRightOfWay,
    LightSpec,
    RightOfWayConfig,
    RoundaboutYield,
    SignalController,
    SignalTiming,
    UrbanIdmConfig,
    UrbanIDMVehicle,
)

DT = 0.1


def _road() -> Road:
    return Road(
        network=RoadNetwork(),
        vehicles=[],
        road_objects=[],
        np_random=np.random.default_rng(0),
        record_history=False,
        neighbour_vehicles_connected_lanes=True,
    )


def _car(road, route, s, speed, idm=None):
    lane = road.network.get_lane((*route[0], 0))
    car = UrbanIDMVehicle(
        road,
        lane.position(s, 0.0),
        lane.heading_at(s),
        speed,
        route,
        speed,
        idm or UrbanIdmConfig(),
    )
    road.vehicles.append(car)
    return car


def _front_to_line(car, approach) -> float:
    """Front bumper to the line along the (straight) approach lane, negative once past it."""
    lane = car.road.network.get_lane((*approach.lane_key, 0))
    return approach.stop_s - lane.local_coordinates(car.position)[0] - 0.5 * car.LENGTH


def _run(road, control, seconds, t0=0.0, on_step=None):
    t = t0
    for _ in range(int(round(seconds / DT))):
        control.update(t, road.vehicles)
        road.act()
        road.step(DT)
        t = round(t + DT, 6)
        if on_step is not None:
            on_step(t)
    return t


def test_signal_cycle_phases_and_time_to_change():
    timing = SignalTiming(green_a_s=5.0, green_b_s=6.0, yellow_s=2.0, all_red_s=1.0)
    lights = [LightSpec("a", "a", ("x", "y"), 10.0), LightSpec("b", "b", ("u", "v"), 10.0)]
    sig = SignalController(lights, timing, offset_s=0.0)
    seq_a, times = [], np.arange(0.0, 2 * timing.cycle_s, 0.1)
    for t in times:
        sa, ttc_a = sig.state("a", t)
        sb, _ = sig.state("b", t)
        assert not (sa == LightState.GREEN and sb == LightState.GREEN)
        assert not (sa != LightState.RED and sb != LightState.RED)  # one group moves at a time
        # the state holds until time_to_change and differs right after it
        assert sig.state("a", t + ttc_a - 0.05)[0] == sa
        assert sig.state("a", t + ttc_a + 0.05)[0] != sa
        if not seq_a or seq_a[-1] != sa:
            seq_a.append(sa)
    assert seq_a[:4] == [LightState.GREEN, LightState.YELLOW, LightState.RED, LightState.GREEN]
    # an offset that makes group a turn green after a chosen wait
    off = SignalController.offset_for_green_in(timing, "a", 4.0)
    sig2 = SignalController(lights, timing, off)
    assert sig2.state("a", 3.9)[0] == LightState.RED
    assert sig2.state("a", 4.05)[0] == LightState.GREEN
    assert sig2.state("a", 0.0)[1] == pytest.approx(4.0)


def test_background_car_stops_at_red_and_goes_on_green():
    road = _road()
    imap = build_intersection(road.network, 11.0, 60.0, 10.0, 8.0)
    timing = SignalTiming(green_a_s=6.0, green_b_s=8.0, yellow_s=2.0, all_red_s=1.0)
    specs = []
    for k, a in imap.approaches.items():
        a.light_id = f"L{k}"
        specs.append(
            LightSpec(a.light_id, "a" if k % 2 else "b", a.lane_key, a.stop_s, a.movements)
        )
    signals = SignalController(
        specs, timing, SignalController.offset_for_green_in(timing, "a", 9.0)
    )
    control = IntersectionRightOfWay(
        road, list(imap.approaches.values()), RightOfWayConfig(), UrbanIdmConfig(), signals
    )
    route = [imap.inbound[1], imap.connectors[(1, 3)], imap.outbound[3]]
    car = _car(road, route, 20.0, 9.0)  # 40 m before the line at 9 m/s
    approach = imap.approaches[1]
    log = []
    _run(
        road,
        control,
        16.0,
        on_step=lambda t: log.append((t, car.speed, _front_to_line(car, approach))),
    )
    assert not car.crashed
    red = [(t, v, d) for t, v, d in log if 7.5 <= t < 8.9]
    assert all(signals.state("L1", t)[0] == LightState.RED for t, _, _ in red)
    # it waits at the line (IDM creeps the last decimetres) and has come to a standstill
    assert all(v < 0.5 and 0.0 <= d <= 2.5 for _, v, d in red), red[:3]
    assert min(v for _, v, _ in red) < 0.1
    after = [d for t, _, d in log if t > 14.0]
    assert after and all(d < -10.0 for d in after)  # it drove on through the junction
    first_past = next(t for t, _, d in log if d < 0.0)
    assert first_past >= 9.0  # ... only once the light was green


def test_stop_lines_and_lights_as_planner_types():
    road = _road()
    imap = build_intersection(road.network, 11.0, 60.0, 10.0, 8.0)
    a = imap.approaches[1]
    spec = LightSpec("L1", "a", a.lane_key, a.stop_s, a.movements)
    sig = SignalController([spec], SignalTiming(), 0.0)
    (line,) = sig.stop_lines(road.network)
    (light,) = sig.traffic_lights(1.0)
    assert line.light_id == "L1" and light.stop_line_id == line.id
    assert "a1>i1>0" in light.lane_ids and set(light.lane_ids) == set(line.lane_ids)
    assert light.state == LightState.GREEN and light.time_to_change_s == pytest.approx(6.0)
    # arm 1 comes from highway-env +y (screen south): its line lies at REP-103 y = -11
    assert np.allclose(line.points[:, 1], -11.0)
    assert sorted(line.points[:, 0]) == pytest.approx([0.0, 4.0])


def test_conflicting_cars_take_turns_major_road_first():
    road = _road()
    imap = build_intersection(road.network, 11.0, 60.0, 10.0, 8.0, major_arms=(0, 2))
    control = IntersectionRightOfWay(
        road, list(imap.approaches.values()), RightOfWayConfig(), UrbanIdmConfig()
    )
    major = _car(road, [imap.inbound[0], imap.connectors[(0, 2)], imap.outbound[2]], 30.0, 8.0)
    minor = _car(road, [imap.inbound[1], imap.connectors[(1, 3)], imap.outbound[3]], 30.0, 8.0)
    entered = {}

    def watch(t):
        for name, car, arm in (("major", major, 0), ("minor", minor, 1)):
            if name not in entered and _front_to_line(car, imap.approaches[arm]) < 0.0:
                entered[name] = t

    _run(road, control, 14.0, on_step=watch)
    assert not major.crashed and not minor.crashed
    assert set(entered) == {"major", "minor"}
    assert entered["major"] + 1.0 < entered["minor"]


def test_entering_car_gives_way_to_circulating_car():
    road = _road()
    rmap = build_roundabout(road.network, 14.0, 12.0, 60.0, 11.0, 9.0)
    idm = UrbanIdmConfig()
    control = RoundaboutYield(
        road, list(rmap.approaches.values()), rmap.ring_keys, RightOfWayConfig(), idm
    )
    # circulating car a quarter of the ring before arm 1's merge point, continuing past it
    ring = rmap.ring_keys
    i1 = next(i for i, k in enumerate(ring) if k[0] == "rm1")
    before = ring[(i1 - 2) % len(ring)]
    route_ring = next(
        r
        for r in (roundabout_route(rmap, k, j) for k in range(4) for j in range(4) if j != k)
        if before in r and r.index(before) + 2 < len(r) and r[r.index(before) + 2][0] == "rm1"
    )
    route_ring = route_ring[route_ring.index(before) :]
    circ = _car(road, route_ring, 1.0, 8.0, idm)
    # place the entering car so that, unchecked, both would reach the merge point together
    circ_to_merge = (
        sum(
            road.network.get_lane((*k, 0)).length
            for k in route_ring[: route_ring.index(before) + 2]
        )
        - 1.0
    )
    enter_route = roundabout_route(rmap, 1, 3)
    inbound, curve = (road.network.get_lane((*k, 0)) for k in enter_route[:2])
    entering = _car(road, enter_route, inbound.length + curve.length - circ_to_merge, 8.0, idm)
    speeds = []
    approach = rmap.approaches[1]
    order = []

    def watch(t):
        if "enter" not in order and _front_to_line(entering, approach) < 0.0:
            order.append("enter")
        if "circ" not in order and circ.lane_key[0] == "rm1":
            order.append("circ")
        speeds.append(entering.speed)

    _run(road, control, 12.0, on_step=watch)
    assert not circ.crashed and not entering.crashed
    assert order == ["circ", "enter"]
    assert min(speeds) < 3.0  # it slowed down to give way


def test_urban_traffic_yaml_matches_the_typed_defaults_and_rejects_typos():
    from planner.config import ConfigError
    from sim_eval.sim.families.urban_families import (
        UrbanTrafficConfig,
        load_urban_traffic_config,
    )

    assert load_urban_traffic_config() == UrbanTrafficConfig()
    cfg = load_urban_traffic_config(overrides=["idm.time_gap_s=2.0"])
    assert cfg.idm.time_gap_s == 2.0
    with pytest.raises(ConfigError, match="time_gap_s"):
        load_urban_traffic_config(overrides=["idm.time_gap=2.0"])
