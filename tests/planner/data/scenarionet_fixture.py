"""Generator of ScenarioNet-format scenario pickles for tests (written at test time).

The layout follows MetaDrive's ScenarioDescription as ScenarioNet's Waymo converter writes it:
top-level `id`, `version`, `length`, `metadata` (`ts`, `sdc_id`, `coordinate`, `dataset`,
`metadrive_processed`), `tracks[id]` (`type`, `state` with position (T, 3), heading (T,),
velocity (T, 2), length / width / height (T, 1), valid (T,); invalid rows are zeros, and
`metadata`), `map_features[id]` (lanes with `polyline` (N, 3), `width` (N, 2), entry / exit
lanes and neighbours; a road line) and `dynamic_map_states` (one traffic light).

The true motion, in REP-103 (what the loader must return whatever the pickle's handedness):
- the ego's rear axle starts at (0, 0) heading +x at SPEED_MPS = 8 m/s, drives straight for
  STRAIGHT_S = 4 s, then turns left on a circle of radius RADIUS_M = 20 m (yaw rate
  0.4 rad/s); the pickle stores the box centre, 1.45 m ahead of the rear axle (`dataset`
  "waymo"), or the rear axle itself when `dataset` is "nuscenes";
- "car_1" drives 15 m ahead in the same lane at 8 m/s along +x; "ped_1" stands at (20, -5);
  "cone_1" stands at (25, 1.5); "thing_1" has an unmapped type (OTHER);
- lanes: "lane_1" along y = 0 from x = -20 to 32, "lane_2" its left neighbour at y = 3.5,
  "lane_3" the left-turn arc continuing lane_1; all 3.5 m wide (width column 1.75 / 1.75);
- traffic light "tl_1" on lane_1: red until 3 s, then green.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np

SPEED_MPS = 8.0
STRAIGHT_S = 4.0
RADIUS_M = 20.0
REAR_AXLE_TO_CENTER_M = 1.45
LEAD_GAP_M = 15.0


def ego_rear_axle_at(t: float) -> tuple[float, float, float]:
    """True (x, y, yaw) of the ego's rear axle, REP-103."""
    if t <= STRAIGHT_S:
        return SPEED_MPS * t, 0.0, 0.0
    psi = SPEED_MPS * (t - STRAIGHT_S) / RADIUS_M
    return (
        SPEED_MPS * STRAIGHT_S + RADIUS_M * math.sin(psi),
        RADIUS_M * (1 - math.cos(psi)),
        psi,
    )


def _track(kind: str, xyyaw: np.ndarray, vel: np.ndarray, valid: np.ndarray, size, oid: str):
    n = len(xyyaw)
    pos = np.zeros((n, 3))
    pos[:, :2] = xyyaw[:, :2]
    heading = xyyaw[:, 2].copy()
    vel = vel.copy()
    pos[~valid] = 0.0
    heading[~valid] = 0.0
    vel[~valid] = 0.0
    dims = [np.where(valid, s, 0.0).reshape(n, 1) for s in size]
    return {
        "type": kind,
        "state": {
            "position": pos.astype(np.float32),
            "heading": heading.astype(np.float32),
            "velocity": vel.astype(np.float32),
            "length": dims[0].astype(np.float32),
            "width": dims[1].astype(np.float32),
            "height": dims[2].astype(np.float32),
            "valid": valid.copy(),
        },
        "metadata": {"type": kind, "object_id": oid, "track_length": n},
    }


def make_scenario(
    *,
    n_steps: int = 91,
    dt_s: float = 0.1,
    coordinate: str = "right-handed",
    dataset: str = "waymo",
    sdc_id: str = "ego",
    jump_steps: tuple[int, ...] = (),
    jump_m: float = 30.0,
    ts: np.ndarray | None = None,
    scenario_id: str = "fixture-0001",
) -> dict:
    """A scenario dict. `jump_steps` displaces the SDC's position at those steps by `jump_m`
    (a localisation jump); `ts` overrides the timestamps (irregular rates)."""
    t = dt_s * np.arange(n_steps) if ts is None else np.asarray(ts, dtype=np.float64)
    n_steps = len(t)
    mirror = coordinate == "left-handed"

    ego = np.array([ego_rear_axle_at(float(tt)) for tt in t])
    v = np.stack([SPEED_MPS * np.cos(ego[:, 2]), SPEED_MPS * np.sin(ego[:, 2])], axis=1)
    sdc = ego.copy()
    if dataset != "nuscenes":  # ScenarioNet stores the box centre for other datasets
        sdc[:, 0] += REAR_AXLE_TO_CENTER_M * np.cos(ego[:, 2])
        sdc[:, 1] += REAR_AXLE_TO_CENTER_M * np.sin(ego[:, 2])
    for k in jump_steps:
        sdc[k, 1] += jump_m
    all_valid = np.ones(n_steps, bool)

    car = np.stack([LEAD_GAP_M + SPEED_MPS * t, np.zeros(n_steps), np.zeros(n_steps)], axis=1)
    car_valid = t <= STRAIGHT_S  # leaves the view when the ego turns
    car_v = np.tile([SPEED_MPS, 0.0], (n_steps, 1))
    still = np.zeros((n_steps, 2))
    ped = np.tile([20.0, -5.0, math.pi / 2], (n_steps, 1))
    cone = np.tile([25.0, 1.5, 0.0], (n_steps, 1))

    tracks = {
        sdc_id if sdc_id else "ego": _track("VEHICLE", sdc, v, all_valid, (4.6, 1.9, 1.6), "ego"),
        "car_1": _track("VEHICLE", car, car_v, car_valid, (4.5, 1.8, 1.5), "car_1"),
        "ped_1": _track("PEDESTRIAN", ped, still, all_valid, (0.7, 0.6, 1.8), "ped_1"),
        "cone_1": _track("TRAFFIC_CONE", cone, still, all_valid, (0.4, 0.4, 0.7), "cone_1"),
        "thing_1": _track("OTHER", cone + 3, still, all_valid, (1.0, 1.0, 1.0), "thing_1"),
    }
    if sdc_id == "":
        tracks.pop("ego")

    x = np.linspace(-20.0, 32.0, 27)
    psi = np.linspace(0.0, math.pi / 2, 20)
    arc = np.stack([32.0 + RADIUS_M * np.sin(psi), RADIUS_M * (1 - np.cos(psi))], axis=1)

    def lane(points: np.ndarray, **extra) -> dict:
        poly = np.zeros((len(points), 3))
        poly[:, :2] = points
        return {
            "type": "LANE_SURFACE_STREET",
            "polyline": poly.astype(np.float32),
            "width": np.full((len(points), 2), 1.75, np.float32),
            "speed_limit_kmh": 36.0,
            "entry_lanes": [],
            "exit_lanes": [],
            "left_neighbor": [],
            "right_neighbor": [],
            **extra,
        }

    map_features = {
        "lane_1": lane(
            np.stack([x, np.zeros_like(x)], 1),
            exit_lanes=["lane_3"],
            left_neighbor=[{"feature_id": "lane_2", "self_start_index": "0"}],
        ),
        "lane_2": lane(np.stack([x, np.full_like(x, 3.5)], 1), right_neighbor=["lane_1"]),
        "lane_3": lane(arc, entry_lanes=["lane_1"]),
        "line_1": {
            "type": "ROAD_LINE_BROKEN_SINGLE_WHITE",
            "polyline": np.stack([x, np.full_like(x, 1.75), np.zeros_like(x)], 1),
        },
    }
    light_states = np.where(t < 3.0, "LANE_STATE_STOP", "LANE_STATE_GO").tolist()
    dynamic = {
        "tl_1": {
            "type": "TRAFFIC_LIGHT",
            "state": {"object_state": light_states},
            "lane": "lane_1",
            "stop_point": np.array([30.0, 0.0, 0.0]),
            "metadata": {"type": "TRAFFIC_LIGHT", "track_length": n_steps},
        }
    }
    if mirror:  # what a left-handed writer would have stored
        for track in tracks.values():
            st = track["state"]
            st["position"][:, 1] *= -1
            st["heading"] *= -1
            st["velocity"][:, 1] *= -1
        for feat in map_features.values():
            feat["polyline"][:, 1] *= -1
            if "width" in feat:
                feat["width"] = feat["width"][:, ::-1].copy()
            if "left_neighbor" in feat:
                feat["left_neighbor"], feat["right_neighbor"] = (
                    feat["right_neighbor"],
                    feat["left_neighbor"],
                )
    return {
        "id": scenario_id,
        "version": "MetaDrive v0.4",
        "length": n_steps,
        "metadata": {
            "ts": t.astype(np.float32) if ts is None else np.asarray(ts),
            "sdc_id": sdc_id or "missing",
            "coordinate": coordinate,
            "dataset": dataset,
            "scenario_id": scenario_id,
            "metadrive_processed": False,
        },
        "tracks": tracks,
        "dynamic_map_states": dynamic,
        "map_features": map_features,
    }


def write_scenario(path: str | Path, scenario: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(scenario, f)
    return path


def write_dataset(folder: str | Path, scenarios: list[dict]) -> Path:
    """A ScenarioNet dataset folder: sd_*.pkl in a sub-folder, plus the summary and mapping."""
    folder = Path(folder)
    summary, mapping = {}, {}
    for sc in scenarios:
        name = f"sd_fixture_v0_{sc['id']}.pkl"
        write_scenario(folder / "part_0" / name, sc)
        summary[name] = {"id": sc["id"], "length": sc["length"]}
        mapping[name] = "part_0"
    write_scenario(folder / "dataset_summary.pkl", summary)
    write_scenario(folder / "dataset_mapping.pkl", mapping)
    return folder
