"""ScenarioNet-format scenario pickles (MetaDrive's ScenarioDescription), read directly.

The format (metadrive/scenario/scenario_description.py; ScenarioNet's converters for nuScenes,
Waymo, nuPlan, Argoverse 2 write it): a dict with
- `metadata`: `sdc_id` (a key of `tracks`), `ts` (T,) seconds, `coordinate`, `dataset`;
- `tracks[id]`: `type` (VEHICLE, PEDESTRIAN, CYCLIST, TRAFFIC_CONE, TRAFFIC_BARRIER, ...)
  and `state` arrays with T rows: `position` (T, 2|3), `heading` (T,), `velocity` (T, 2),
  `length` / `width` / `height` (T,) or (T, 1), `valid` (T,);
- `map_features[id]`: lanes (`LANE_*` types) with a `polyline` (N, 2|3) centreline, optional
  `width` (N, 2) distances to the left / right boundary, `entry_lanes`, `exit_lanes`,
  `left_neighbor` / `right_neighbor`, `speed_limit_kmh` / `speed_limit_mph`;
- `dynamic_map_states[id]`: traffic lights with `state.object_state` (T,) LANE_STATE_* and
  the controlled `lane`.

Handedness: every current converter writes a right-handed, x/y metric frame with headings
counter-clockwise in radians (metadata.coordinate "right-handed" for nuScenes / nuPlan,
"waymo" for Waymo / Argoverse 2; MetaDrive dropped its old left-handed frame and now treats
every coordinate value as right-handed). That is REP-103 already; a pickle that declares
"left-handed" is mirrored (y, heading and vy negated). Track positions are box centres, except
that the nuScenes converter writes the ego pose (the rear axle) for the SDC.

Pickles are read with a restricted unpickler: plain containers and numpy arrays only, with
MetaDrive's dict subclass read as a dict, so neither metadrive nor scenarionet is needed.
"""

from __future__ import annotations

import io
import logging
import math
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from planner.data.loaders.common import (
    AgentTrack,
    EgoTrack,
    LightTrack,
    LogData,
    LogFormatError,
    LogSource,
    NoEgoTrackError,
    offset_boundaries,
)
from planner.types import AgentClass, Lane, LightState, MapData

log = logging.getLogger(__name__)

TRACK_CLASSES = {
    "VEHICLE": AgentClass.VEHICLE,
    "PEDESTRIAN": AgentClass.PEDESTRIAN,
    "CYCLIST": AgentClass.CYCLIST,
    "TRAFFIC_CONE": AgentClass.CONE,
    "TRAFFIC_BARRIER": AgentClass.STATIC_OBSTACLE,
    "TRAFFIC_OBJECT": AgentClass.STATIC_OBSTACLE,
}
LANE_TYPES = (
    "LANE_SURFACE_STREET",
    "LANE_SURFACE_UNSTRUCTURE",
    "LANE_UNKNOWN",
    "LANE_FREEWAY",
    "LANE_BIKE_LANE",
)
RIGHT_HANDED = ("right-handed", "waymo", "metadrive")
LEFT_HANDED = ("left-handed",)
LIGHT_STATES = {
    "LANE_STATE_STOP": LightState.RED,
    "LANE_STATE_ARROW_STOP": LightState.RED,
    "LANE_STATE_FLASHING_STOP": LightState.RED,
    "TRAFFIC_LIGHT_RED": LightState.RED,
    "LANE_STATE_CAUTION": LightState.YELLOW,
    "LANE_STATE_ARROW_CAUTION": LightState.YELLOW,
    "LANE_STATE_FLASHING_CAUTION": LightState.YELLOW,
    "TRAFFIC_LIGHT_YELLOW": LightState.YELLOW,
    "LANE_STATE_GO": LightState.GREEN,
    "LANE_STATE_ARROW_GO": LightState.GREEN,
    "TRAFFIC_LIGHT_GREEN": LightState.GREEN,
}
REQUIRED_KEYS = ("tracks", "metadata", "map_features")
SUMMARY_FILE = "dataset_summary.pkl"
MAPPING_FILE = "dataset_mapping.pkl"


class _ScenarioUnpickler(pickle.Unpickler):
    """Only what a scenario pickle holds: builtins containers and numpy arrays."""

    _ALLOWED_NUMPY = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("metadrive") or module.startswith("scenarionet"):
            return dict  # ScenarioDescription is a dict subclass
        if module in ("builtins", "__builtin__") and name in (
            "dict",
            "list",
            "tuple",
            "set",
            "frozenset",
        ):
            return super().find_class(module, name)
        if module == "collections" and name in ("OrderedDict", "defaultdict"):
            return super().find_class(module, name)
        if (module, name) in self._ALLOWED_NUMPY:
            # pickles from numpy 2 name numpy._core, which numpy 1.x calls numpy.core
            try:
                return super().find_class(module, name)
            except ModuleNotFoundError:
                return super().find_class(module.replace("numpy._core", "numpy.core"), name)
        if (module, name) in (
            ("copyreg", "_reconstructor"),
            ("copy_reg", "_reconstructor"),  # its Python 2 name in protocol 0-2 pickles
            ("_codecs", "encode"),
        ):
            # protocol 2 pickles rebuild dict subclasses and bytes through these
            return super().find_class(module, name)
        raise LogFormatError(
            f"scenario pickle refers to {module}.{name}, which a ScenarioNet scenario never "
            "holds; refusing to unpickle it"
        )


def read_scenario(path: str | Path) -> dict:
    """Unpickle one scenario file and check it is a ScenarioNet scenario."""
    path = Path(path)
    try:
        data = _ScenarioUnpickler(io.BytesIO(path.read_bytes())).load()
    except LogFormatError:
        raise
    except Exception as exc:  # truncated / not a pickle
        raise LogFormatError(f"{str(path)!r} is not a readable pickle: {exc}") from None
    if not isinstance(data, dict):
        raise LogFormatError(f"{str(path)!r} holds a {type(data).__name__}, not a scenario dict")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise LogFormatError(
            f"{str(path)!r} is not a ScenarioNet scenario: missing key(s) {missing} "
            f"(has {sorted(map(str, data))[:8]})"
        )
    return data


def is_scenario_pickle(path: Path) -> bool:
    try:
        read_scenario(path)
    except LogFormatError:
        return False
    return True


def scenario_files(path: Path) -> list[Path]:
    """The scenario pickles of a file or a ScenarioNet dataset directory (dataset_summary.pkl
    lists them; dataset_mapping.pkl names their sub-folders)."""
    if path.is_file():
        return [path]
    summary = path / SUMMARY_FILE
    if summary.is_file():
        names = list(read_pickle_dict(summary))
        mapping_path = path / MAPPING_FILE
        mapping = read_pickle_dict(mapping_path) if mapping_path.is_file() else {}
        return [path / mapping.get(n, "") / n for n in names]
    return sorted(p for p in path.glob("*.pkl") if p.name not in (SUMMARY_FILE, MAPPING_FILE))


def read_pickle_dict(path: Path) -> dict:
    try:
        data = _ScenarioUnpickler(io.BytesIO(path.read_bytes())).load()
    except LogFormatError:
        raise
    except Exception as exc:
        raise LogFormatError(f"{str(path)!r} is not a readable pickle: {exc}") from None
    if not isinstance(data, dict):
        raise LogFormatError(f"{str(path)!r} should hold a dict, got {type(data).__name__}")
    return data


def _column(state: dict, key: str, n: int, width: int | None = None) -> np.ndarray | None:
    if key not in state:
        return None
    arr = np.asarray(state[key], dtype=np.float64)
    if arr.shape[0] != n:
        raise LogFormatError(f"state[{key!r}] has {arr.shape[0]} rows for {n} timestamps")
    if width is None:
        return arr.reshape(n, -1)[:, 0]
    return arr.reshape(n, -1)[:, :width]


class ScenarioNetSource(LogSource):
    """One scenario pickle, a folder of them, or a ScenarioNet dataset directory."""

    format_name = "scenarionet"

    def logs(self) -> Iterator[LogData]:
        files = scenario_files(self.path)
        if not files:
            raise LogFormatError(f"{str(self.path)!r} holds no scenario pickles (*.pkl)")
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(
                    f"scenario {str(f)!r} listed in the dataset summary does not exist"
                )
            yield self.convert(read_scenario(f), name=f.stem)

    def convert(self, scenario: dict, name: str = "") -> LogData:
        meta = scenario["metadata"]
        scenario_id = str(meta.get("scenario_id") or scenario.get("id") or name)
        tracks = scenario["tracks"]
        sdc_id = meta.get("sdc_id")
        if sdc_id is None or str(sdc_id) not in {str(k) for k in tracks}:
            raise NoEgoTrackError(
                f"ScenarioNet scenario {scenario_id!r}: metadata.sdc_id={sdc_id!r} is not one "
                f"of its {len(tracks)} tracks; the scenario has no ego track"
            )
        n = int(scenario.get("length") or len(next(iter(tracks.values()))["state"]["position"]))
        t = self._timestamps(meta, n, scenario_id)
        mirror = self._mirror(meta, scenario_id)
        dataset = str(meta.get("dataset", ""))

        sdc_key = next(k for k in tracks if str(k) == str(sdc_id))
        ego = self._ego(tracks[sdc_key], t, n, mirror, dataset, scenario_id)
        agents, skipped = [], {}
        for key, track in tracks.items():
            if key == sdc_key:
                continue
            agent = self._agent(str(key), track, t, n, mirror)
            if agent is None:
                skipped[track.get("type")] = skipped.get(track.get("type"), 0) + 1
            elif agent.valid.any():
                agents.append(agent)
        if skipped:
            log.info("ScenarioNet %s: skipped tracks of unmapped types %s", scenario_id, skipped)
        map_data = self._map(
            scenario.get("map_features", {}), mirror, name=str(meta.get("map", ""))
        )
        lights = self._lights(scenario.get("dynamic_map_states", {}), t, n)
        rate = float(np.median(np.diff(t))) if n > 1 else math.inf
        return LogData(
            log_id=scenario_id,
            source="scenarionet",
            ego=ego,
            agents=agents,
            map=map_data,
            lights=lights,
            agents_interpolated=rate > 0.1 + 1e-6,
            metadata={
                "dataset": dataset,
                "coordinate": meta.get("coordinate"),
                "mirrored": mirror,
                "source_rate_hz": 1.0 / rate if rate > 0 else math.inf,
            },
        )

    # -- pieces -----------------------------------------------------------------------------
    def _timestamps(self, meta: dict, n: int, scenario_id: str) -> np.ndarray:
        if "ts" in meta and meta["ts"] is not None:
            t = np.asarray(meta["ts"], dtype=np.float64).reshape(-1)
            if t.shape != (n,):
                raise LogFormatError(
                    f"ScenarioNet scenario {scenario_id!r}: metadata.ts has {t.size} entries for "
                    f"{n} steps"
                )
            if not np.all(np.diff(t) > 0):
                bad = int(np.flatnonzero(np.diff(t) <= 0)[0])
                raise LogFormatError(
                    f"ScenarioNet scenario {scenario_id!r}: metadata.ts is not increasing at step "
                    f"{bad + 1} ({t[bad]:.3f} -> {t[bad + 1]:.3f} s)"
                )
            return t
        dt = float(meta.get("sample_rate", 0.1))
        log.warning("ScenarioNet %s has no metadata.ts: assuming %.3f s steps", scenario_id, dt)
        return dt * np.arange(n)

    def _mirror(self, meta: dict, scenario_id: str) -> bool:
        forced = self.config.scenarionet.handedness
        if forced == "right":
            return False
        if forced == "left":
            return True
        if forced != "auto":
            raise LogFormatError(
                f"scenarionet.handedness must be auto, right or left; got {forced!r}"
            )
        coordinate = str(meta.get("coordinate", "right-handed")).lower()
        if coordinate in RIGHT_HANDED:
            return False
        if coordinate in LEFT_HANDED:
            return True
        raise LogFormatError(
            f"ScenarioNet scenario {scenario_id!r}: unknown metadata.coordinate {coordinate!r} "
            f"(known: {', '.join(RIGHT_HANDED + LEFT_HANDED)}); set scenarionet.handedness="
            "right or left"
        )

    def _state(self, track: dict, n: int, mirror: bool) -> dict[str, np.ndarray | None]:
        state = track["state"]
        pos = _column(state, "position", n, 2)
        heading = _column(state, "heading", n)
        if pos is None or heading is None:
            raise LogFormatError("a ScenarioNet track needs state.position and state.heading")
        vel = _column(state, "velocity", n, 2)
        valid = _column(state, "valid", n)
        out = {
            "x": pos[:, 0].copy(),
            "y": pos[:, 1].copy(),
            "yaw": heading.copy(),
            "vx": None if vel is None else vel[:, 0].copy(),
            "vy": None if vel is None else vel[:, 1].copy(),
            "valid": np.ones(n, bool) if valid is None else valid > 0.5,
        }
        if mirror:
            out["y"] = -out["y"]
            out["yaw"] = -out["yaw"]
            if out["vy"] is not None:
                out["vy"] = -out["vy"]
        for key in ("length", "width", "height"):
            col = _column(state, key, n)
            out[key] = None if col is None else col
        return out

    @staticmethod
    def _size(values: np.ndarray | None, valid: np.ndarray, default: float) -> float:
        if values is None or not valid.any():
            return default
        v = values[valid]
        v = v[np.isfinite(v) & (v > 0)]
        return float(np.median(v)) if len(v) else default

    def _ego(
        self, track: dict, t: np.ndarray, n: int, mirror: bool, dataset: str, scenario_id: str
    ) -> EgoTrack:
        s = self._state(track, n, mirror)
        if not s["valid"].any():
            raise NoEgoTrackError(
                f"ScenarioNet scenario {scenario_id!r}: the SDC track has no valid step"
            )
        reference = self.config.scenarionet.sdc_position_reference
        if reference == "auto":
            reference = "rear_axle" if dataset.lower() == "nuscenes" else "center"
        if reference not in ("center", "rear_axle"):
            raise LogFormatError(
                "scenarionet.sdc_position_reference must be auto, center or rear_axle; got "
                f"{reference!r}"
            )
        x, y = s["x"], s["y"]
        if reference == "center":
            offset = self.config.common.ego_rear_axle_to_center_m
            x = x - offset * np.cos(s["yaw"])
            y = y - offset * np.sin(s["yaw"])
        speed = None
        if (
            s["vx"] is not None
            and np.abs(s["vx"][s["valid"]]).sum() + np.abs(s["vy"][s["valid"]]).sum() > 0
        ):
            # speed along the heading (negative when reversing)
            speed = s["vx"] * np.cos(s["yaw"]) + s["vy"] * np.sin(s["yaw"])
        # invalid rows of ScenarioNet tracks are zeros, not poses
        return EgoTrack(t=t, x=x, y=y, yaw=s["yaw"], speed=speed, valid=s["valid"])

    def _agent(
        self, key: str, track: dict, t: np.ndarray, n: int, mirror: bool
    ) -> AgentTrack | None:
        cls = TRACK_CLASSES.get(str(track.get("type", "")).upper())
        if cls is None:
            return None
        s = self._state(track, n, mirror)
        zeros = np.zeros(n)
        return AgentTrack(
            id=key,
            agent_class=cls,
            t=t,
            x=s["x"],
            y=s["y"],
            yaw=s["yaw"],
            vx=s["vx"] if s["vx"] is not None else zeros,
            vy=s["vy"] if s["vy"] is not None else zeros,
            length=self._size(s["length"], s["valid"], 4.5 if cls == AgentClass.VEHICLE else 0.8),
            width=self._size(s["width"], s["valid"], 1.9 if cls == AgentClass.VEHICLE else 0.8),
            height=self._size(s["height"], s["valid"], 1.5),
            valid=s["valid"],
        )

    def _map(self, features: dict, mirror: bool, name: str) -> MapData:
        c = self.config.common
        lanes: dict[str, Lane] = {}
        for key, feat in features.items():
            if str(feat.get("type", "")) not in LANE_TYPES or "polyline" not in feat:
                continue
            pts = np.asarray(feat["polyline"], dtype=np.float64)
            if pts.ndim != 2 or len(pts) < 2:
                continue
            center = pts[:, :2].copy()
            if mirror:
                center[:, 1] = -center[:, 1]
            keep = np.concatenate([[True], np.hypot(*np.diff(center, axis=0).T) > 1e-6])
            center = center[keep]
            if len(center) < 2:
                continue
            half_left = half_right = np.full(len(center), c.lane_width_m / 2.0)
            width = feat.get("width")
            if width is not None:
                w = np.asarray(width, dtype=np.float64).reshape(len(pts), -1)[keep]
                if w.shape[1] >= 2 and np.all(w[:, :2] > 0):
                    # (N, 2) distances to the left / right boundary; a mirror swaps the sides
                    half_left, half_right = (w[:, 1], w[:, 0]) if mirror else (w[:, 0], w[:, 1])
            left, right = offset_boundaries(center, half_left, half_right)
            limit = c.speed_limit_mps
            if feat.get("speed_limit_kmh"):
                limit = float(feat["speed_limit_kmh"]) / 3.6
            elif feat.get("speed_limit_mph"):
                limit = float(feat["speed_limit_mph"]) * 0.44704
            left_n = _neighbor_id(feat.get("left_neighbor"))
            right_n = _neighbor_id(feat.get("right_neighbor"))
            if mirror:
                left_n, right_n = right_n, left_n
            lanes[str(key)] = Lane(
                id=str(key),
                centerline=center,
                left_boundary=left,
                right_boundary=right,
                speed_limit_mps=limit,
                successors=tuple(str(v) for v in feat.get("exit_lanes", []) or ()),
                predecessors=tuple(str(v) for v in feat.get("entry_lanes", []) or ()),
                left_neighbor=left_n,
                right_neighbor=right_n,
            )
        return MapData(lanes=lanes, name=name)

    def _lights(self, states: dict, t: np.ndarray, n: int) -> list[LightTrack]:
        out = []
        for key, light in states.items():
            if str(light.get("type", "TRAFFIC_LIGHT")) != "TRAFFIC_LIGHT":
                continue
            raw = light.get("state", {}).get("object_state")
            if raw is None or len(raw) != n:
                continue
            lane = light.get("lane", light.get("state", {}).get("lane"))
            lane_ids = (str(lane),) if lane is not None and np.ndim(lane) == 0 else ()
            out.append(
                LightTrack(
                    id=str(key),
                    t=t,
                    states=[LIGHT_STATES.get(str(s), LightState.UNKNOWN) for s in raw],
                    lane_ids=lane_ids,
                )
            )
        return out


def _neighbor_id(value: Any) -> str | None:
    """ScenarioNet neighbours: a list of ids or of dicts with feature_id (Waymo)."""
    if value is None:
        return None
    if isinstance(value, (str, int)):
        return str(value)
    items = list(value)
    if not items:
        return None
    first = items[0]
    if isinstance(first, dict):
        return str(first.get("feature_id", first.get("id", ""))) or None
    return str(first)
