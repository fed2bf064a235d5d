"""Decision taxonomy of Alpamayo-R1 (arXiv 2511.00088) as enums.

The chain-of-causation (CoC) label, the privileged expert's decision, the meta-actions of a
trajectory and the reasoning-action consistency check all speak this vocabulary. Values are
stable snake_case strings: they are written to JSONL results, dataset shards and checkpoints.
"""

from __future__ import annotations

from enum import Enum


class StrEnum(str, Enum):
    """A str-valued enum that serialises as its value (Python 3.10 has no enum.StrEnum)."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: str | StrEnum) -> StrEnum:
        """Look a member up by value or name, with an error that lists the valid values."""
        if isinstance(value, cls):
            return value
        text = str(value).strip().lower()
        for member in cls:
            if text in (member.value, member.name.lower()):
                return member
        valid = ", ".join(m.value for m in cls)
        raise ValueError(f"unknown {cls.__name__} {value!r}; valid values: {valid}")


class LongitudinalDecision(StrEnum):
    SET_SPEED_TRACKING = "set_speed_tracking"
    LEAD_OBSTACLE_FOLLOWING = "lead_obstacle_following"
    SPEED_ADAPTATION = "speed_adaptation"
    GAP_SEARCHING = "gap_searching"
    ACCELERATION_FOR_PASSING = "acceleration_for_passing"
    YIELD = "yield"
    STOP_FOR_STATIC_CONSTRAINTS = "stop_for_static_constraints"


class LateralDecision(StrEnum):
    LANE_KEEPING = "lane_keeping"
    MERGE_SPLIT = "merge_split"
    OUT_OF_LANE_NUDGE = "out_of_lane_nudge"
    IN_LANE_NUDGE = "in_lane_nudge"
    LANE_CHANGE = "lane_change"
    PULL_OVER = "pull_over"
    TURN = "turn"
    LATERAL_ABORT = "lateral_abort"


class Side(StrEnum):
    """Direction of a lateral decision or side of a causal object, in REP-103 (left = +y)."""

    NONE = "none"
    LEFT = "left"
    RIGHT = "right"
    AHEAD = "ahead"
    BEHIND = "behind"


class LongitudinalMetaAction(StrEnum):
    GENTLE_ACCELERATION = "gentle_acceleration"
    STRONG_ACCELERATION = "strong_acceleration"
    GENTLE_DECELERATION = "gentle_deceleration"
    STRONG_DECELERATION = "strong_deceleration"
    MAINTAIN_SPEED = "maintain_speed"
    STOP = "stop"


class LateralMetaAction(StrEnum):
    GO_STRAIGHT = "go_straight"
    STEER_LEFT = "steer_left"
    STEER_RIGHT = "steer_right"
    SHARP_STEER_LEFT = "sharp_steer_left"
    SHARP_STEER_RIGHT = "sharp_steer_right"
    LANE_CHANGE_LEFT = "lane_change_left"
    LANE_CHANGE_RIGHT = "lane_change_right"


class CausalFactorKind(StrEnum):
    """What forced a decision (Alpamayo-R1's causal factor categories)."""

    CRITICAL_OBJECT = "critical_object"
    TRAFFIC_LIGHT = "traffic_light"
    YIELD_CONTROL = "yield_control"
    STOP_CONTROL = "stop_control"
    ROAD_EVENT = "road_event"
    LANE_GEOMETRY = "lane_geometry"
    ROUTING = "routing"
    SPEED_LIMIT = "speed_limit"


class AgentClass(StrEnum):
    VEHICLE = "vehicle"
    PEDESTRIAN = "pedestrian"
    CYCLIST = "cyclist"
    STATIC_OBSTACLE = "static_obstacle"
    CONE = "cone"


class LightState(StrEnum):
    RED = "red"
    YELLOW = "yellow"
    GREEN = "green"
    UNKNOWN = "unknown"


class Command(StrEnum):
    """High-level route command (CARLA's RoadOption vocabulary, which nuPlan/NAVSIM mirror)."""

    LANE_FOLLOW = "lane_follow"
    LEFT = "left"
    RIGHT = "right"
    STRAIGHT = "straight"
    CHANGE_LANE_LEFT = "change_lane_left"
    CHANGE_LANE_RIGHT = "change_lane_right"
