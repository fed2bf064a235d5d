"""The CoC auto-labeler on hand-built scenes: one label per decision type whose stated
distances and speeds are within 10 % of the scene, false factors caught, every template
parsed back, inconsistent decisions flagged, and the real expert's decisions labelled."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import pytest

from planner.base import call_planner
from planner.coc import (
    FACTOR_PHRASES,
    FRAMES_NO_CAUSE,
    FRAMES_NUDGE,
    FRAMES_WITH_CAUSE,
    LATERAL_PHRASES,
    LONGITUDINAL_PHRASES,
    SUFFIX_PHRASES,
    CocConfig,
    LabelError,
    label,
    parse_reasoning,
    round_distance,
    verify_text,
)
from planner.planners.expert import ExpertPlanner
from planner.types import (
    PLAN_STEPS,
    AgentClass,
    CausalFactor,
    CausalFactorKind,
    Command,
    Decision,
    LateralDecision,
    LightState,
    LongitudinalDecision,
    MapData,
    Scene,
    Side,
    StopLine,
    TrafficLight,
    Trajectory,
)
from tests.helpers import (
    curved_road_map,
    lane_from_centerline,
    make_agent,
    make_scene,
    scene_input,
    straight_road_map,
)

LON = LongitudinalDecision
LAT = LateralDecision
K = CausalFactorKind
N = PLAN_STEPS
EGO_FRONT_M = 1.45 + 4.9 / 2  # rear axle -> front bumper of the helpers' default ego
EGO_REAR_M = 4.9 / 2 - 1.45  # rear axle -> rear bumper


# ---- futures ------------------------------------------------------------------------------------
def _future(v0: float, accel: float = 0.0, lane_change: float = 0.0, curvature=0.0) -> Trajectory:
    """Constant accel; `lane_change` > 0: a left lane-change doublet, < 0 right; or a
    constant `curvature` (turn)."""
    k = np.full(N, float(curvature))
    if lane_change:
        amp = 0.08 / max(v0, 5.0) * np.sign(lane_change)
        k[5:20] += amp
        k[20:35] -= amp
    return Trajectory.from_controls(np.full(N, float(accel)), k, v0)


def _nudge_future(v0: float, offset_m: float) -> Trajectory:
    """A nudge of `offset_m` (+left) and back, as a smooth curvature profile."""
    k = np.zeros(N)
    a = offset_m / (v0 * 1.0) ** 2  # +a for 1 s, -a for 2 s, +a for 1 s: peak = a (v t)^2
    k[0:10], k[10:30], k[30:40] = a, -a, a
    return Trajectory.from_controls(np.zeros(N), np.clip(k, -0.3, 0.3), v0)


# ---- maps -----------------------------------------------------------------------------------------
def _lane_drop() -> MapData:
    """Two lanes; the right one (lane_0) ends at x = 100, lane_1 continues to x = 300."""
    x0 = np.linspace(-50.0, 100.0, 151)
    x1 = np.linspace(-50.0, 300.0, 351)
    lane0 = lane_from_centerline("lane_0", np.stack([x0, 0 * x0], axis=1), left_neighbor="lane_1")
    lane1 = lane_from_centerline(
        "lane_1", np.stack([x1, 0 * x1 + 3.7], axis=1), right_neighbor="lane_0"
    )
    return MapData(lanes={"lane_0": lane0, "lane_1": lane1}, name="lane_drop")


def _intersection() -> MapData:
    xs = np.linspace(-50.0, 150.0, 201)
    ys = np.linspace(-100.0, 100.0, 201)
    ego_lane = lane_from_centerline("ego_road", np.stack([xs, 0 * xs], axis=1))
    cross = lane_from_centerline("cross_road", np.stack([0 * ys + 50.0, ys], axis=1))
    return MapData(lanes={"ego_road": ego_lane, "cross_road": cross}, name="x")


def _signalised(state: LightState, line_x: float = 40.0, ego_speed: float = 10.0) -> Scene:
    m = straight_road_map(1)
    m.stop_lines["sl"] = StopLine(
        "sl", np.array([[line_x, -1.85], [line_x, 1.85]]), lane_ids=("lane_0",), light_id="tl"
    )
    scene = make_scene(m, ego_speed_mps=ego_speed)
    scene.traffic_lights.append(TrafficLight("tl", state, stop_line_id="sl", lane_ids=("lane_0",)))
    return scene


def _braking_lead() -> make_agent:
    lead = make_agent("lead", 30.0, 0.0, speed_mps=8.0)
    t = np.arange(-0.5, 0.01, 0.1)
    lead.history = np.stack(
        [t, 30.0 + 8.0 * t, 0 * t, 0 * t, 8.0 - 3.0 * t], axis=1
    )  # decelerating at 3 m/s^2
    return lead


# ---- one case per decision type --------------------------------------------------------------------
@dataclass
class Case:
    """A decision in a scene with the expert-like future, and the scene's truth for each
    factor: (kind, object class or None) -> (distance m or None, relative speed or None)."""

    name: str
    decision: Decision
    scene: Scene
    future: Trajectory
    truth: dict[tuple[CausalFactorKind, AgentClass | None], tuple[float | None, float | None]]
    extra: dict = field(default_factory=dict)


def _obj(oid, side, dist, rel=None, cls=None, kind=K.CRITICAL_OBJECT, desc=""):
    return CausalFactor(kind, desc, oid, cls, side, dist, rel)


def _cases() -> list[Case]:
    cases = []
    three = straight_road_map(3)
    # set-speed tracking on a free road: the speed limit
    sc = make_scene(straight_road_map(1), ego_speed_mps=13.0)
    d = Decision(LON.SET_SPEED_TRACKING, factors=(CausalFactor(K.SPEED_LIMIT, "speed limit"),))
    cases.append(
        Case("set_speed", d, sc, _future(13.0, 0.3), {(K.SPEED_LIMIT, None): (None, None)})
    )
    # lead-obstacle following, the lead braking
    lead = _braking_lead()
    sc = make_scene(straight_road_map(1), ego_speed_mps=12.0, agents=[lead])
    gap = 30.0 - 2.25 - EGO_FRONT_M
    d = Decision(LON.LEAD_OBSTACLE_FOLLOWING, factors=(_obj("lead", Side.AHEAD, gap, -4.0),))
    cases.append(
        Case(
            "follow",
            d,
            sc,
            _future(12.0, -1.5),
            {(K.CRITICAL_OBJECT, AgentClass.VEHICLE): (gap, -4.0)},
        )
    )
    # speed adaptation for a curve 46 m ahead, and a road event (works) off to the side
    m = curved_road_map(radius_m=20.0, approach_m=60.0, speed_limit_mps=15.0)
    works = make_agent(
        "works", -20.0, -2.6, agent_class=AgentClass.STATIC_OBSTACLE, length=2.0, width=1.0
    )
    sc = make_scene(m, ego_xy=(-50.0, 0.0), ego_speed_mps=15.0, agents=[works])
    curve_d = 50.0 - EGO_FRONT_M
    works_d = 30.0 - 1.0 - EGO_FRONT_M
    d = Decision(
        LON.SPEED_ADAPTATION,
        factors=(
            CausalFactor(K.LANE_GEOMETRY, "curve ahead", side=Side.AHEAD, distance_m=curve_d),
            _obj("works", Side.RIGHT, works_d, kind=K.ROAD_EVENT, desc="construction site"),
        ),
    )
    cases.append(
        Case(
            "speed_adaptation",
            d,
            sc,
            _future(15.0, -1.5),
            {
                (K.LANE_GEOMETRY, None): (curve_d, None),
                (K.ROAD_EVENT, None): (works_d, None),
            },
        )
    )
    # gap searching: the ego lane ends 96 m ahead, the gap to the left is taken
    beside = make_agent("beside", 2.0, 3.7, 0.0, 12.0)
    sc = make_scene(_lane_drop(), ego_speed_mps=12.0, agents=[beside], route_lane_ids=("lane_1",))
    end_d = 100.0 - EGO_FRONT_M
    d = Decision(
        LON.GAP_SEARCHING,
        factors=(
            CausalFactor(
                K.LANE_GEOMETRY, "the ego lane ends ahead", side=Side.AHEAD, distance_m=end_d
            ),
            _obj("beside", Side.LEFT, 0.0, 0.0),
        ),
    )
    cases.append(
        Case(
            "gap_searching",
            d,
            sc,
            _future(12.0, -0.8),
            {
                (K.LANE_GEOMETRY, None): (end_d, None),
                (K.CRITICAL_OBJECT, AgentClass.VEHICLE): (None, None),
            },
        )
    )
    # acceleration for passing with a lane change to the left around a slow vehicle
    slow = make_agent("slow", 25.0, 0.0, speed_mps=6.0)
    sc = make_scene(three, ego_speed_mps=12.0, agents=[slow])
    gap = 25.0 - 2.25 - EGO_FRONT_M
    d = Decision(
        LON.ACCELERATION_FOR_PASSING,
        LAT.LANE_CHANGE,
        Side.LEFT,
        factors=(_obj("slow", Side.AHEAD, gap, -6.0),),
    )
    cases.append(
        Case(
            "passing",
            d,
            sc,
            _future(12.0, 1.0, lane_change=1),
            {(K.CRITICAL_OBJECT, AgentClass.VEHICLE): (gap, -6.0)},
        )
    )
    # yield to a pedestrian crossing from the right
    ped = make_agent("ped", 25.0, -3.0, math.pi / 2, 1.4, AgentClass.PEDESTRIAN, 0.6, 0.6)
    sc = make_scene(straight_road_map(1), ego_speed_mps=10.0, agents=[ped])
    gap = 25.0 - 0.3 - EGO_FRONT_M
    d = Decision(LON.YIELD, factors=(_obj("ped", Side.RIGHT, gap, -10.0),))
    cases.append(
        Case(
            "yield",
            d,
            sc,
            _future(10.0, -2.2),
            {(K.CRITICAL_OBJECT, AgentClass.PEDESTRIAN): (gap, None)},
        )
    )
    # yield at an unprotected intersection (a yield control with its conflict point)
    other = make_agent("other", 50.0, -20.0, math.pi / 2, 10.0)
    sc = make_scene(_intersection(), ego_speed_mps=10.0, agents=[other])
    conflict = 50.0 - EGO_FRONT_M
    d = Decision(
        LON.YIELD,
        factors=(
            CausalFactor(
                K.YIELD_CONTROL, "yield at the intersection", side=Side.AHEAD, distance_m=conflict
            ),
        ),
    )
    cases.append(
        Case(
            "yield_control", d, sc, _future(10.0, -1.5), {(K.YIELD_CONTROL, None): (conflict, None)}
        )
    )
    # stop for a red light
    sc = _signalised(LightState.RED)
    line = 40.0 - EGO_FRONT_M
    d = Decision(
        LON.STOP_FOR_STATIC_CONSTRAINTS,
        factors=(CausalFactor(K.TRAFFIC_LIGHT, "red light", "tl", None, Side.AHEAD, line, -10.0),),
    )
    cases.append(
        Case(
            "red_light",
            d,
            sc,
            _future(10.0, -1.6),
            {(K.TRAFFIC_LIGHT, None): (line, None)},
            {"light": "red"},
        )
    )
    # stop sign
    m = straight_road_map(1)
    m.stop_lines["stop"] = StopLine(
        "stop", np.array([[20.0, -1.85], [20.0, 1.85]]), lane_ids=("lane_0",), is_stop_sign=True
    )
    sc = make_scene(m, ego_speed_mps=6.0)
    line = 20.0 - EGO_FRONT_M
    d = Decision(
        LON.STOP_FOR_STATIC_CONSTRAINTS,
        factors=(CausalFactor(K.STOP_CONTROL, "stop sign", "stop", None, Side.AHEAD, line),),
    )
    cases.append(
        Case("stop_sign", d, sc, _future(6.0, -1.2), {(K.STOP_CONTROL, None): (line, None)})
    )
    # merge left where the ego lane ends (lane geometry + yield control at the merge)
    sc = make_scene(_lane_drop(), ego_speed_mps=12.0, route_lane_ids=("lane_1",))
    d = Decision(
        LON.SET_SPEED_TRACKING,
        LAT.MERGE_SPLIT,
        Side.LEFT,
        factors=(
            CausalFactor(
                K.LANE_GEOMETRY, "the ego lane ends ahead", side=Side.AHEAD, distance_m=end_d
            ),
            CausalFactor(K.YIELD_CONTROL, "yield to main-road traffic at the merge"),
        ),
    )
    cases.append(
        Case(
            "merge",
            d,
            sc,
            _future(12.0, 0.0, lane_change=1),
            {(K.LANE_GEOMETRY, None): (end_d, None), (K.YIELD_CONTROL, None): (None, None)},
        )
    )
    # out-of-lane nudge left around a stopped vehicle sticking into the lane from the right
    parked = make_agent("parked", 30.0, -1.5, speed_mps=0.0)
    sc = make_scene(three, ego_speed_mps=8.0, agents=[parked])
    gap = 30.0 - 2.25 - EGO_FRONT_M
    d = Decision(
        LON.SPEED_ADAPTATION,
        LAT.OUT_OF_LANE_NUDGE,
        Side.LEFT,
        factors=(_obj("parked", Side.RIGHT, gap),),
    )
    cases.append(
        Case(
            "out_of_lane_nudge",
            d,
            sc,
            _nudge_future(8.0, 1.2),
            {(K.CRITICAL_OBJECT, AgentClass.VEHICLE): (gap, None)},
        )
    )
    # in-lane nudge left away from cones encroaching from the right
    cone = make_agent("cone", 30.0, -1.6, 0.0, 0.0, AgentClass.CONE, 0.5, 0.5)
    sc = make_scene(straight_road_map(1), ego_speed_mps=8.0, agents=[cone])
    gap = 30.0 - 0.25 - EGO_FRONT_M
    d = Decision(
        LON.SET_SPEED_TRACKING,
        LAT.IN_LANE_NUDGE,
        Side.LEFT,
        factors=(_obj("cone", Side.RIGHT, gap),),
    )
    cases.append(
        Case(
            "in_lane_nudge",
            d,
            sc,
            _nudge_future(8.0, 0.4),
            {(K.CRITICAL_OBJECT, AgentClass.CONE): (gap, None)},
        )
    )
    # lane change right for the route (ego in the middle lane), a car behind on the right
    behind = make_agent("behind", -15.0, 0.0, speed_mps=14.0)
    sc = make_scene(
        three,
        ego_xy=(0.0, 3.7),
        ego_speed_mps=12.0,
        agents=[behind],
        command=Command.CHANGE_LANE_RIGHT,
    )
    gap_b = 15.0 - 2.25 - EGO_REAR_M
    d = Decision(
        LON.SET_SPEED_TRACKING,
        LAT.LANE_CHANGE,
        Side.RIGHT,
        factors=(
            CausalFactor(K.ROUTING, "route exits right", side=Side.RIGHT),
            _obj("behind", Side.RIGHT, gap_b, 2.0),
        ),
    )
    cases.append(
        Case(
            "lane_change",
            d,
            sc,
            _future(12.0, 0.0, lane_change=-1),
            {
                (K.ROUTING, None): (None, None),
                (K.CRITICAL_OBJECT, AgentClass.VEHICLE): (gap_b, 2.0),
            },
        )
    )
    # pull over to the right: the route ends on the right
    sc = make_scene(three, ego_xy=(0.0, 0.0), ego_speed_mps=8.0, command=Command.RIGHT)
    d = Decision(
        LON.STOP_FOR_STATIC_CONSTRAINTS,
        LAT.PULL_OVER,
        Side.RIGHT,
        factors=(CausalFactor(K.ROUTING, "destination on the right", side=Side.RIGHT),),
    )
    cases.append(
        Case(
            "pull_over",
            d,
            sc,
            _future(8.0, -1.3, lane_change=-0.5),
            {(K.ROUTING, None): (None, None)},
        )
    )
    # turn left along a curving lane (the route turns)
    m = curved_road_map(radius_m=20.0, angle_rad=math.pi / 2, approach_m=40.0)
    sc = make_scene(m, ego_xy=(-5.0, 0.0), ego_speed_mps=6.0)
    d = Decision(
        LON.SET_SPEED_TRACKING,
        LAT.TURN,
        Side.LEFT,
        factors=(CausalFactor(K.ROUTING, "route turns left", side=Side.LEFT),),
    )
    fut = Trajectory.from_controls(np.zeros(N), np.r_[np.zeros(8), np.full(N - 8, 0.05)], 6.0)
    cases.append(Case("turn", d, sc, fut, {(K.ROUTING, None): (None, None)}))
    # lateral abort: back to the right, a fast car closing from behind on the left
    fast = make_agent("fast", -20.0, 3.7, speed_mps=20.0)
    sc = make_scene(three, ego_xy=(0.0, 0.8), ego_speed_mps=12.0, agents=[fast])
    gap_f = 20.0 - 2.25 - EGO_REAR_M
    d = Decision(
        LON.SET_SPEED_TRACKING,
        LAT.LATERAL_ABORT,
        Side.RIGHT,
        factors=(_obj("fast", Side.LEFT, gap_f, 8.0),),
    )
    cases.append(
        Case(
            "lateral_abort",
            d,
            sc,
            _nudge_future(12.0, -0.8),
            {(K.CRITICAL_OBJECT, AgentClass.VEHICLE): (gap_f, 8.0)},
        )
    )
    # a speed limit ahead, and a vehicle overtaking on the left (pulling away)
    m = straight_road_map(1)
    x = np.linspace(60.0, 300.0, 241)
    m.lanes["lane_0"].successors = ("slow_zone",)
    m.lanes["lane_0"].centerline = m.lanes["lane_0"].centerline[:111]  # ends at x = 60
    m.lanes["lane_0"].left_boundary = m.lanes["lane_0"].left_boundary[:111]
    m.lanes["lane_0"].right_boundary = m.lanes["lane_0"].right_boundary[:111]
    m.lanes["slow_zone"] = lane_from_centerline(
        "slow_zone", np.stack([x, 0 * x], axis=1), speed_limit_mps=8.3
    )
    car = make_agent("car", 10.0, 3.5, speed_mps=16.0)
    sc = make_scene(m, ego_speed_mps=13.0, agents=[car])
    zone = 60.0 - EGO_FRONT_M
    d = Decision(
        LON.SPEED_ADAPTATION,
        factors=(
            CausalFactor(
                K.SPEED_LIMIT, "lower speed limit 8.3 m/s ahead", side=Side.AHEAD, distance_m=zone
            ),
            _obj("car", Side.LEFT, 10.0 - 2.25 - EGO_FRONT_M, 3.0),
        ),
    )
    cases.append(
        Case(
            "limit_ahead",
            d,
            sc,
            _future(13.0, -0.8),
            {
                (K.SPEED_LIMIT, None): (zone, None),
                (K.CRITICAL_OBJECT, AgentClass.VEHICLE): (10.0 - 2.25 - EGO_FRONT_M, 3.0),
            },
            {"limit": 8.3},
        )
    )
    return cases


CASES = _cases()


def test_cases_cover_every_decision_and_factor_kind():
    assert {c.decision.longitudinal for c in CASES} == set(LON)
    assert {c.decision.lateral for c in CASES} == set(LAT)
    assert {f.kind for c in CASES for f in c.decision.factors} == set(K)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_label_is_true_of_the_scene_and_consistent(case: Case):
    rng = np.random.default_rng(0)
    for _ in range(6):  # several phrasings
        lab = label(case.decision, case.scene, case.future, rng)
        assert lab.valid, (lab.text, lab.consistency.reasons, lab.meta_actions.describe())
        assert not lab.dropped_factors, lab.dropped_factors
        assert len(lab.text.split()) <= CocConfig().max_words, lab.text
        parsed = parse_reasoning(lab.text)
        assert parsed is not None, lab.text
        assert (parsed.longitudinal, parsed.lateral, parsed.lateral_side) == (
            case.decision.longitudinal,
            case.decision.lateral,
            case.decision.lateral_side,
        ), lab.text
        assert parsed.factors, f"no cause stated: {lab.text}"
        for f in parsed.factors:
            key = (f.kind, f.object_class)
            assert key in case.truth, (key, lab.text)
            dist, rel = case.truth[key]
            if f.distance_m is not None:
                assert dist is not None, lab.text
                assert f.distance_m == pytest.approx(dist, rel=0.10, abs=0.5), lab.text
            if f.relative_speed_mps is not None:
                assert rel is not None, lab.text
                assert f.relative_speed_mps == pytest.approx(rel, rel=0.10, abs=0.5), lab.text
            if f.kind == K.TRAFFIC_LIGHT:
                assert f.description == f"{case.extra['light']} light"
            if f.kind == K.SPEED_LIMIT:
                limit = float(re.search(r"[\d.]+", f.description).group())
                expected = case.extra.get("limit", 13.9)
                assert limit == pytest.approx(expected, rel=0.10)


def test_example_phrasings_read_naturally():
    case = next(c for c in CASES if c.name == "in_lane_nudge")
    texts = {label(case.decision, case.scene, case.future, s).text for s in range(40)}
    assert len(texts) >= 5  # several phrasings
    assert any("cones encroaching from the right, 26 m ahead" in t for t in texts)
    follow = next(c for c in CASES if c.name == "follow")
    text = label(follow.decision, follow.scene, follow.future, 1).text
    assert "24 m" in text and "braking" in text and "closing at 4 m/s" in text


# ---- false factors are caught -------------------------------------------------------------------
def _case(name: str) -> Case:
    return next(c for c in CASES if c.name == name)


def _with_factor(case: Case, factor: CausalFactor) -> Decision:
    return Decision(
        case.decision.longitudinal, case.decision.lateral, case.decision.lateral_side, (factor,)
    )


@pytest.mark.parametrize(
    ("case_name", "factor", "reason"),
    [
        ("follow", _obj("lead", Side.AHEAD, 35.0, -4.0), "stated distance"),
        ("follow", _obj("lead", Side.LEFT, 23.85, -4.0), "not on the left"),
        ("follow", _obj("ghost", Side.AHEAD, 20.0), "not in the scene"),
        ("follow", _obj("lead", Side.AHEAD, 23.85, -4.0, AgentClass.PEDESTRIAN), "is a vehicle"),
        ("follow", _obj("lead", Side.AHEAD, 23.85, -9.0), "relative speed"),
        ("yield", _obj("ped", Side.LEFT, 20.8), "not on the left"),
        ("lane_change", _obj("behind", Side.AHEAD, 11.75), "not ahead"),
        (
            "red_light",
            CausalFactor(K.TRAFFIC_LIGHT, "red light", "tl", None, Side.AHEAD, 60.0),
            "stated 60.0 m",
        ),
        ("follow", CausalFactor(K.TRAFFIC_LIGHT, "red light", distance_m=20.0), "not in the scene"),
        ("follow", CausalFactor(K.STOP_CONTROL, "stop sign", distance_m=20.0), "no stop sign"),
        ("follow", CausalFactor(K.LANE_GEOMETRY, "lane ends", distance_m=50.0), "lane end"),
        ("follow", CausalFactor(K.LANE_GEOMETRY, "curve ahead", distance_m=20.0), "no curve"),
        (
            "turn",
            CausalFactor(K.ROUTING, "route turns right", side=Side.RIGHT),
            "does not go right",
        ),
        ("follow", CausalFactor(K.YIELD_CONTROL, "yield", distance_m=30.0), "no lane meets"),
        (
            "set_speed",
            CausalFactor(K.SPEED_LIMIT, "speed limit 25 m/s here", side=Side.NONE),
            "lane has 13.9",
        ),
    ],
)
def test_false_factor_is_dropped_and_flagged(case_name, factor, reason):
    case = _case(case_name)
    decision = _with_factor(case, factor)
    lab = label(decision, case.scene, case.future, 0)
    assert len(lab.dropped_factors) == 1
    assert reason in lab.dropped_factors[0][1]
    assert f"dropped_{factor.kind.value}" in lab.flags and "no_verified_factor" in lab.flags
    assert not lab.decision.factors and not lab.stated_factors
    if factor.distance_m is not None:  # the false number is not in the text
        assert f" {round_distance(factor.distance_m):g} m" not in lab.text
    with pytest.raises(LabelError, match=re.escape(reason)):
        label(decision, case.scene, case.future, 0, strict=True)


def test_cross_traffic_distance_is_the_straight_line_from_the_bumper():
    """A car on the crossing road, 20 m before the crossing: 45 m along the ego path to its
    nearest point, 48.5 m in a straight line from the front bumper; both hold, its speed
    along the ego path is not stated (it depends on whose path)."""
    case = _case("yield_control")
    for claimed in (48.5, 45.2):
        d = Decision(LON.YIELD, factors=(_obj("other", Side.RIGHT, claimed, -10.0),))
        lab = label(d, case.scene, case.future, 0)
        assert not lab.dropped_factors, lab.dropped_factors
        assert lab.stated_factors[0].relative_speed_mps is None
        assert "closing" not in lab.text and "pulling away" not in lab.text
    d = Decision(LON.YIELD, factors=(_obj("other", Side.RIGHT, 30.0),))
    assert label(d, case.scene, case.future, 0).dropped_factors


def test_lane_end_of_the_lane_being_left_holds_mid_lane_change():
    """Half-way into the continuing lane the ego is nearer lane_1, but the expert still
    measures where its origin lane (lane_0) ends."""
    scene = make_scene(
        _lane_drop(), ego_xy=(0.0, 2.0), ego_speed_mps=12.0, route_lane_ids=("lane_1",)
    )
    end = CausalFactor(
        K.LANE_GEOMETRY, "the ego lane ends ahead", side=Side.AHEAD, distance_m=100.0 - EGO_FRONT_M
    )
    d = Decision(LON.SET_SPEED_TRACKING, LAT.MERGE_SPLIT, Side.LEFT, factors=(end,))
    lab = label(d, scene, None, 0)
    assert not lab.dropped_factors, lab.dropped_factors
    assert "95 m" in lab.text  # 96.1 m rounded to 5 m steps


def test_encroaching_is_said_only_of_objects_reaching_into_the_lane():
    """The cone 0.25 m into the lane encroaches; a car parked in the next lane does not."""
    case = _case("in_lane_nudge")
    texts = [label(case.decision, case.scene, case.future, s).text for s in range(6)]
    assert all("encroaching from the right" in t for t in texts)
    parked = make_agent("parked", 30.0, -3.7, speed_mps=0.0)
    scene = make_scene(straight_road_map(2), ego_xy=(0.0, 0.0), ego_speed_mps=8.0, agents=[parked])
    d = Decision(LON.SPEED_ADAPTATION, factors=(_obj("parked", Side.RIGHT, None),))
    for s in range(6):
        text = label(d, scene, None, s).text
        assert "encroaching" not in text and "stopped" in text and "on the right" in text


def test_true_and_false_factor_together_keep_the_true_one():
    case = _case("follow")
    decision = Decision(
        LON.LEAD_OBSTACLE_FOLLOWING,
        factors=(_obj("ghost", Side.AHEAD, 10.0), _obj("lead", Side.AHEAD, 23.85, -4.0)),
    )
    lab = label(decision, case.scene, case.future, 0)
    assert [f.object_id for f in lab.decision.factors] == ["lead"]
    assert "no_verified_factor" not in lab.flags
    assert "24 m" in lab.text


def test_missing_distance_is_filled_from_the_scene():
    case = _case("follow")
    lab = label(_with_factor(case, _obj("lead", Side.NONE, None)), case.scene, case.future, 0)
    f = lab.decision.factors[0]
    assert f.distance_m == pytest.approx(30.0 - 2.25 - EGO_FRONT_M, abs=0.05)
    assert f.side == Side.AHEAD and f.object_class == AgentClass.VEHICLE
    assert f.relative_speed_mps == pytest.approx(-4.0)


# ---- consistency with the future ----------------------------------------------------------------
def test_decision_inconsistent_with_the_future_is_flagged():
    case = _case("yield")
    accelerating = _future(10.0, 3.0)
    lab = label(case.decision, case.scene, accelerating, 0)
    assert not lab.valid and "inconsistent" in lab.flags
    assert not lab.consistency.longitudinal
    with pytest.raises(LabelError, match="inconsistent"):
        label(case.decision, case.scene, accelerating, 0, strict=True)
    lc = _case("passing")
    lab = label(lc.decision, lc.scene, _future(12.0, 1.0), 0)  # no lane change in the plan
    assert not lab.valid and not lab.consistency.lateral
    # without a future there is nothing to contradict
    assert label(case.decision, case.scene, None, 0).valid


def test_lateral_decision_without_a_side_is_flagged_not_invented():
    case = _case("passing")
    no_side = Decision(
        LON.ACCELERATION_FOR_PASSING, LAT.LANE_CHANGE, Side.NONE, case.decision.factors
    )
    for seed in range(8):
        lab = label(no_side, case.scene, None, seed)
        assert not lab.valid and "missing_lateral_side" in lab.flags
        assert lab.templates[1].startswith("factor:"), lab.text  # no lateral phrase at all
        assert parse_reasoning(lab.text).lateral == LAT.LANE_KEEPING  # (the parser's default)
        assert "none" not in lab.text
    with pytest.raises(LabelError, match="needs lateral_side"):
        label(no_side, case.scene, None, 0, strict=True)


# ---- parsing --------------------------------------------------------------------------------------
def test_every_decision_phrase_combination_parses():
    for lon, lon_opts in LONGITUDINAL_PHRASES.items():
        for lon_text in lon_opts:
            for lat, lat_opts in LATERAL_PHRASES.items():
                sides = [Side.NONE] if lat == LAT.LANE_KEEPING else [Side.LEFT, Side.RIGHT]
                for lat_text in lat_opts:
                    for side in sides:
                        lat_filled = lat_text.format(side=side.value)
                        for text in (
                            f"{lat_filled} and {lon_text}: the road ahead is clear.",
                            f"Due to the car 12 m ahead, {lon_text} and {lat_filled}.",
                        ):
                            d = parse_reasoning(text)
                            assert d is not None, text
                            assert (d.longitudinal, d.lateral, d.lateral_side) == (
                                lon,
                                lat,
                                side,
                            ), text


def test_labels_use_and_parse_every_template():
    """Across cases and seeds the labeler writes every phrase of every table, and each text
    parses back to its decision and stated factors."""
    used: set[str] = set()
    extra_cases = _coverage_cases()
    for case in CASES + extra_cases:
        for seed in range(30):
            lab = label(case.decision, case.scene, case.future, seed)
            used.update(lab.templates)
            parsed = parse_reasoning(lab.text)
            assert parsed is not None
            assert parsed.longitudinal == case.decision.longitudinal
            assert len(parsed.factors) == len(lab.stated_factors)
            for f, s in zip(parsed.factors, lab.stated_factors):
                assert (f.kind, f.object_class, f.side, f.distance_m, f.relative_speed_mps) == (
                    s.kind,
                    s.object_class,
                    s.side,
                    s.distance_m,
                    s.relative_speed_mps,
                )
    expected = set()
    for d, opts in LONGITUDINAL_PHRASES.items():
        expected |= {f"lon:{d.value}:{i}" for i in range(len(opts))}
    for d, opts in LATERAL_PHRASES.items():
        expected |= {f"lat:{d.value}:{i}" for i in range(len(opts))}
    for name, opts in FACTOR_PHRASES.items():
        expected |= {f"factor:{name}:{i}" for i in range(len(opts))}
    expected |= {f"suffix:{name}:0" for name in SUFFIX_PHRASES}
    expected |= {f"frame:{i}" for i in range(len(FRAMES_WITH_CAUSE) + len(FRAMES_NUDGE))}
    expected |= {f"frame_clear:{i}" for i in range(len(FRAMES_NO_CAUSE))}
    assert expected - used == set()


def _coverage_cases() -> list[Case]:
    """Scenes for the phrase families the decision cases do not reach."""
    out = []
    three = straight_road_map(3)
    # no factor at all
    sc = make_scene(three, ego_speed_mps=12.0)
    out.append(Case("clear", Decision(LON.SET_SPEED_TRACKING), sc, _future(12.0), {}))
    # an object behind in the ego lane; a road event without an object; a yield without
    # a distance
    behind = make_agent("behind", -15.0, 0.0, speed_mps=10.0)
    sc = make_scene(three, ego_speed_mps=12.0, agents=[behind])
    d = Decision(
        LON.SET_SPEED_TRACKING,
        factors=(
            _obj("behind", Side.BEHIND, None),
            CausalFactor(K.ROAD_EVENT, "accident reported"),
        ),
    )
    out.append(Case("behind", d, sc, _future(12.0), {}))
    d = Decision(LON.YIELD, factors=(CausalFactor(K.YIELD_CONTROL, "roundabout entry"),))
    out.append(
        Case("yield_nodist", d, make_scene(three, ego_speed_mps=3.0), _future(3.0, -0.5), {})
    )
    # routing: the ego lane leaves the route (route continues from another lane)
    sc = make_scene(_lane_drop(), ego_speed_mps=12.0, route_lane_ids=("lane_1",))
    d = Decision(
        LON.SET_SPEED_TRACKING,
        LAT.LANE_CHANGE,
        Side.LEFT,
        factors=(
            CausalFactor(
                K.ROUTING,
                "route continues from another lane",
                side=Side.AHEAD,
                distance_m=100.0 - EGO_FRONT_M,
            ),
        ),
    )
    out.append(Case("route_lane", d, sc, _future(12.0, 0.0, lane_change=1), {}))
    return out


def test_unparsable_text_gives_none():
    for text in ("", "   ", "hello world", "the car 12 m ahead.", "Stop the car!", None, 42):
        assert parse_reasoning(text) is None


def test_parser_reads_relative_speeds_with_their_sign():
    d = parse_reasoning("Keep the set speed, given the car 20 m behind, closing at 3 m/s.")
    assert d.factors[0].side == Side.BEHIND and d.factors[0].relative_speed_mps == 3.0
    d = parse_reasoning("Follow at a safe gap for the car 20 m ahead, closing at 3 m/s.")
    assert d.factors[0].side == Side.AHEAD and d.factors[0].relative_speed_mps == -3.0


def test_vocabulary_is_small():
    words = set()
    for case in CASES + _coverage_cases():
        for seed in range(10):
            text = label(case.decision, case.scene, case.future, seed).text
            words |= {w for w in re.findall(r"[a-z/]+", text.lower())}
    assert len(words) < 200, sorted(words)


def test_verify_text_checks_generated_reasoning_against_the_scene():
    case = _case("follow")
    good = label(case.decision, case.scene, case.future, 0).text
    decision, problems = verify_text(good, case.scene)
    assert decision is not None and problems == []
    _, problems = verify_text("Follow at a safe gap for the car 40 m ahead.", case.scene)
    assert problems  # no car 40 m ahead
    _, problems = verify_text("Come to a stop for the red light 30 m ahead.", case.scene)
    assert problems
    assert verify_text("nonsense", case.scene)[0] is None


# ---- the real expert ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["follow", "yield", "red_light", "in_lane_nudge", "merge"])
def test_expert_decisions_give_valid_labels(name):
    scene = _case(name).scene
    out = call_planner(ExpertPlanner(), scene_input(scene), scene)
    lab = label(out.decision, scene, out.trajectory, 0)
    assert lab.valid, (out.decision, lab.consistency.reasons, lab.meta_actions.describe())
    assert not lab.dropped_factors, lab.dropped_factors
    parsed = parse_reasoning(lab.text)
    assert (parsed.longitudinal, parsed.lateral, parsed.lateral_side) == (
        out.decision.longitudinal,
        out.decision.lateral,
        out.decision.lateral_side,
    )
