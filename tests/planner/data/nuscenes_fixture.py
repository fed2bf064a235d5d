"""Generator of a tiny nuScenes-format dataset (tables, map expansion, JPEGs) for tests.

Everything is written into a folder at test time; nothing is downloaded. The layout is the one
nuscenes-devkit 1.2.0 reads: `<root>/v1.0-mini/*.json` (the 13 tables), `<root>/maps/<png>`
(the map table's semantic mask), `<root>/maps/expansion/singapore-onenorth.json` (NuScenesMap
layers, version 1.3) and the camera JPEGs under `samples/` (keyframes) and `sweeps/`.

The log, chosen so open-loop numbers can be computed by hand:
- one scene, "scene-0001", 20 s: 40 keyframes (samples) at t = 0, 0.5, ..., 19.5 s;
- the ego (rear axle) drives at a constant SPEED_MPS = 10 m/s: straight along world +x from
  (X0, Y0) = (300, 600) for STRAIGHT_S = 10 s (yaw 0), then a left arc of radius
  RADIUS_M = 100 m (curvature 0.01 1/m, yaw rate 0.1 rad/s) - see `ego_pose_at`;
- sensors: LIDAR_TOP at 20 Hz (t = k / 20), CAM_FRONT / CAM_FRONT_LEFT / CAM_FRONT_RIGHT at
  12 Hz (t = 0.01 + k / 12), each with its own ego_pose record (nuScenes' layout); camera
  frames are 16 x 24 JPEGs of one colour: red = 20 + frame index (mod 200), green = 80 x camera
  index, blue = 100;
- annotations (2 Hz keyframes): a car 20 m ahead of the ego's rear axle at the same speed
  ("lead", t <= 8 s), a car in the left lane (y = Y0 + 3.5) at 12 m/s from x = X0 - 10
  ("left", t <= 9 s), and a pedestrian standing at (X0 + 60, Y0 - 4) ("ped", all keyframes);
- map: lane "lane_ego" along y = Y0 from x = X0 - 30 to X0 + 100, lane "lane_left" parallel at
  y = Y0 + 3.5, and lane connector "conn_curve" continuing lane_ego as the 100 m-radius left
  arc (120 m); lanes are 3.5 m wide; the drivable area is their union.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VERSION = "v1.0-mini"
LOCATION = "singapore-onenorth"
SCENE_NAME = "scene-0001"
T0_US = 1_532_402_927_000_000
SPEED_MPS = 10.0
STRAIGHT_S = 10.0
RADIUS_M = 100.0
DURATION_S = 20.0
X0, Y0 = 300.0, 600.0
LANE_WIDTH_M = 3.5
CAMERAS = ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT")
CAMERA_HZ = 12.0
CAMERA_OFFSET_S = 0.01
LIDAR_HZ = 20.0
IMAGE_HW = (16, 24)
LEAD_GAP_M = 20.0
LEFT_LANE_Y = Y0 + LANE_WIDTH_M
LEFT_SPEED_MPS = 12.0
PED_XY = (X0 + 60.0, Y0 - 4.0)


def ego_pose_at(t: float) -> tuple[float, float, float]:
    """(x, y, yaw) of the ego's rear axle, t seconds after the first keyframe."""
    if t <= STRAIGHT_S:
        return X0 + SPEED_MPS * t, Y0, 0.0
    psi = SPEED_MPS * (t - STRAIGHT_S) / RADIUS_M
    return (
        X0 + SPEED_MPS * STRAIGHT_S + RADIUS_M * math.sin(psi),
        Y0 + RADIUS_M * (1 - math.cos(psi)),
        psi,
    )


def camera_color(frame_index: int, camera_index: int) -> tuple[int, int, int]:
    """RGB of a camera frame (uniform), so tests can tell which frame was picked."""
    return 20 + frame_index % 200, 80 * camera_index, 100


@dataclass
class NuScenesFixture:
    dataroot: Path
    version: str
    scene_name: str
    n_keyframes: int


def _quat(yaw: float) -> list[float]:
    return [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]


def _us(t: float) -> int:
    return T0_US + int(round(t * 1e6))


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def make_nuscenes_fixture(
    root: str | Path, *, with_cameras: bool = True, with_map: bool = True
) -> NuScenesFixture:
    import cv2

    root = Path(root)
    tables = root / VERSION
    n_keys = int(DURATION_S / 0.5)
    key_times = [0.5 * j for j in range(n_keys)]

    log_token, scene_token, map_token = "log0", "scene0", "map0"
    sensors = [{"token": "sensor_lidar", "channel": "LIDAR_TOP", "modality": "lidar"}]
    calibrated = [
        {
            "token": "cs_lidar",
            "sensor_token": "sensor_lidar",
            "translation": [0.94, 0.0, 1.84],
            "rotation": [1.0, 0.0, 0.0, 0.0],
            "camera_intrinsic": [],
        }
    ]
    if with_cameras:
        for k, cam in enumerate(CAMERAS):
            sensors.append({"token": f"sensor_{cam}", "channel": cam, "modality": "camera"})
            calibrated.append(
                {
                    "token": f"cs_{cam}",
                    "sensor_token": f"sensor_{cam}",
                    "translation": [1.7, 0.5 * (k == 1) - 0.5 * (k == 2), 1.5],
                    "rotation": [0.5, -0.5, 0.5, -0.5],
                    "camera_intrinsic": [[20.0, 0.0, 12.0], [0.0, 20.0, 8.0], [0.0, 0.0, 1.0]],
                }
            )

    samples = [
        {
            "token": f"sample{j:03d}",
            "timestamp": _us(t),
            "scene_token": scene_token,
            "prev": f"sample{j - 1:03d}" if j > 0 else "",
            "next": f"sample{j + 1:03d}" if j < n_keys - 1 else "",
        }
        for j, t in enumerate(key_times)
    ]

    ego_poses, sample_data = [], []

    def add_stream(channel: str, times: list[float], keyframe_idx: dict[int, int], ext: str):
        tokens = [f"sd_{channel}_{k:04d}" for k in range(len(times))]
        for k, t in enumerate(times):
            x, y, yaw = ego_pose_at(t)
            pose_token = f"ep_{channel}_{k:04d}"
            ego_poses.append(
                {
                    "token": pose_token,
                    "timestamp": _us(t),
                    "translation": [x, y, 0.0],
                    "rotation": _quat(yaw),
                }
            )
            is_key = k in keyframe_idx
            j = keyframe_idx[k] if is_key else min(n_keys - 1, int(round(t / 0.5)))
            folder = "samples" if is_key else "sweeps"
            filename = f"{folder}/{channel}/n015-fixture__{channel}__{_us(t)}.{ext}"
            sample_data.append(
                {
                    "token": tokens[k],
                    "sample_token": samples[j]["token"],
                    "ego_pose_token": pose_token,
                    "calibrated_sensor_token": f"cs_{channel}"
                    if channel != "LIDAR_TOP"
                    else "cs_lidar",
                    "timestamp": _us(t),
                    "fileformat": ext,
                    "is_key_frame": is_key,
                    "height": IMAGE_HW[0] if ext == "jpg" else 0,
                    "width": IMAGE_HW[1] if ext == "jpg" else 0,
                    "filename": filename,
                    "prev": tokens[k - 1] if k > 0 else "",
                    "next": tokens[k + 1] if k < len(times) - 1 else "",
                }
            )
        return tokens

    lidar_times = [k / LIDAR_HZ for k in range(int(DURATION_S * LIDAR_HZ))]
    add_stream(
        "LIDAR_TOP",
        lidar_times,
        {int(round(t * LIDAR_HZ)): j for j, t in enumerate(key_times)},
        "pcd.bin",
    )
    if with_cameras:
        cam_times = [
            CAMERA_OFFSET_S + k / CAMERA_HZ
            for k in range(int((DURATION_S - CAMERA_OFFSET_S) * CAMERA_HZ))
        ]
        nearest = {
            int(np.argmin([abs(c - t) for c in cam_times])): j for j, t in enumerate(key_times)
        }
        for ci, cam in enumerate(CAMERAS):
            add_stream(cam, cam_times, nearest, "jpg")
            for sd in sample_data:
                if sd["calibrated_sensor_token"] != f"cs_{cam}":
                    continue
                k = int(sd["token"].rsplit("_", 1)[1])
                r, g, b = camera_color(k, ci)
                img = np.empty((*IMAGE_HW, 3), np.uint8)
                img[:] = (b, g, r)  # OpenCV writes BGR
                path = root / sd["filename"]
                path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 100])

    # ---- annotations -------------------------------------------------------------------------
    def lead(t):
        x, y, yaw = ego_pose_at(t)
        return x + LEAD_GAP_M, y, yaw

    actors = {
        "inst_lead": ("vehicle.car", [1.9, 4.5, 1.6], lead, [t for t in key_times if t <= 8.0]),
        "inst_left": (
            "vehicle.car",
            [1.9, 4.6, 1.5],
            lambda t: (X0 - 10.0 + LEFT_SPEED_MPS * t, LEFT_LANE_Y, 0.0),
            [t for t in key_times if t <= 9.0],
        ),
        "inst_ped": (
            "human.pedestrian.adult",
            [0.6, 0.7, 1.75],
            lambda t: (*PED_XY, math.pi / 2),
            key_times,
        ),
    }
    categories = [
        {"token": "cat_car", "name": "vehicle.car", "description": "car"},
        {"token": "cat_ped", "name": "human.pedestrian.adult", "description": "adult"},
    ]
    cat_token = {c["name"]: c["token"] for c in categories}
    instances, annotations = [], []
    for inst, (category, size, motion, times) in actors.items():
        tokens = [f"ann_{inst}_{k:03d}" for k in range(len(times))]
        for k, t in enumerate(times):
            x, y, yaw = motion(t)
            annotations.append(
                {
                    "token": tokens[k],
                    "sample_token": samples[int(round(t / 0.5))]["token"],
                    "instance_token": inst,
                    "visibility_token": "4",
                    "attribute_tokens": [],
                    "translation": [x, y, 0.8],
                    "size": size,
                    "rotation": _quat(yaw),
                    "prev": tokens[k - 1] if k > 0 else "",
                    "next": tokens[k + 1] if k < len(times) - 1 else "",
                    "num_lidar_pts": 10,
                    "num_radar_pts": 0,
                }
            )
        instances.append(
            {
                "token": inst,
                "category_token": cat_token[category],
                "nbr_annotations": len(times),
                "first_annotation_token": tokens[0],
                "last_annotation_token": tokens[-1],
            }
        )

    _write(tables / "category.json", categories)
    _write(tables / "attribute.json", [])
    _write(
        tables / "visibility.json", [{"token": "4", "level": "v80-100", "description": "visible"}]
    )
    _write(tables / "instance.json", instances)
    _write(tables / "sensor.json", sensors)
    _write(tables / "calibrated_sensor.json", calibrated)
    _write(tables / "ego_pose.json", ego_poses)
    _write(
        tables / "log.json",
        [
            {
                "token": log_token,
                "logfile": "n015-fixture",
                "vehicle": "n015",
                "date_captured": "2018-07-24",
                "location": LOCATION,
            }
        ],
    )
    _write(
        tables / "scene.json",
        [
            {
                "token": scene_token,
                "log_token": log_token,
                "nbr_samples": n_keys,
                "first_sample_token": samples[0]["token"],
                "last_sample_token": samples[-1]["token"],
                "name": SCENE_NAME,
                "description": "straight 10 s at 10 m/s, then a 100 m radius left arc",
            }
        ],
    )
    _write(tables / "sample.json", samples)
    _write(tables / "sample_data.json", sample_data)
    _write(tables / "sample_annotation.json", annotations)
    mask_name = "maps/fixture_semantic_prior.png"
    _write(
        tables / "map.json",
        [
            {
                "token": map_token,
                "log_tokens": [log_token],
                "category": "semantic_prior",
                "filename": mask_name,
            }
        ],
    )
    (root / "maps").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / mask_name), np.full((64, 64), 255, np.uint8))
    if with_map:
        _write(root / "maps" / "expansion" / f"{LOCATION}.json", _expansion_map())
    return NuScenesFixture(root, VERSION, SCENE_NAME, n_keys)


def _expansion_map() -> dict:
    """NuScenesMap layers (version 1.3): nodes, lines, polygons, lanes, a lane connector,
    arcline paths, connectivity and a drivable area."""
    from shapely.geometry import Polygon
    from shapely.ops import unary_union

    nodes, lines, polygons = [], [], []

    def node(x: float, y: float) -> str:
        token = f"node{len(nodes)}"
        nodes.append({"token": token, "x": float(x), "y": float(y)})
        return token

    def polygon(ring: np.ndarray) -> str:
        token = f"poly{len(polygons)}"
        polygons.append(
            {"token": token, "exterior_node_tokens": [node(*p) for p in ring], "holes": []}
        )
        return token

    def line(points: np.ndarray) -> str:
        token = f"line{len(lines)}"
        lines.append({"token": token, "node_tokens": [node(*p) for p in points]})
        return token

    half = LANE_WIDTH_M / 2

    def straight(y: float) -> tuple[np.ndarray, dict]:
        x0, x1 = X0 - 30.0, X0 + 100.0
        ring = np.array([[x0, y - half], [x1, y - half], [x1, y + half], [x0, y + half]])
        arc = {
            "start_pose": [x0, y, 0.0],
            "end_pose": [x1, y, 0.0],
            "shape": "LSL",
            "radius": 999.0,
            "segment_length": [0.0, x1 - x0, 0.0],
        }
        return ring, arc

    # conn_curve: left arc of RADIUS_M from (X0 + 100, Y0), heading 0, 120 m long
    arc_len = 120.0
    psi = np.linspace(0.0, arc_len / RADIUS_M, 49)
    cx, cy = X0 + 100.0, Y0 + RADIUS_M  # centre of the arc
    outer = np.stack(
        [cx + (RADIUS_M + half) * np.sin(psi), cy - (RADIUS_M + half) * np.cos(psi)], 1
    )
    inner = np.stack(
        [cx + (RADIUS_M - half) * np.sin(psi), cy - (RADIUS_M - half) * np.cos(psi)], 1
    )
    curve_ring = np.concatenate([outer, inner[::-1]])
    end = (cx + RADIUS_M * math.sin(psi[-1]), cy - RADIUS_M * math.cos(psi[-1]), float(psi[-1]))
    curve_arc = {
        "start_pose": [X0 + 100.0, Y0, 0.0],
        "end_pose": list(end),
        "shape": "LSL",
        "radius": RADIUS_M,
        "segment_length": [arc_len, 0.0, 0.0],
    }

    ego_ring, ego_arc = straight(Y0)
    left_ring, left_arc = straight(LEFT_LANE_Y)
    lanes = []
    for token, ring in (("lane_ego", ego_ring), ("lane_left", left_ring)):
        lanes.append(
            {
                "token": token,
                "polygon_token": polygon(ring),
                "lane_type": "CAR",
                "from_edge_line_token": line(ring[[0, 3]]),
                "to_edge_line_token": line(ring[[1, 2]]),
                "left_lane_divider_segments": [],
                "right_lane_divider_segments": [],
            }
        )
    connector = {"token": "conn_curve", "polygon_token": polygon(curve_ring)}
    union = unary_union([Polygon(r).buffer(0.05) for r in (ego_ring, left_ring, curve_ring)])
    drivable = {
        "token": "drivable0",
        "polygon_tokens": [polygon(np.asarray(union.exterior.coords)[:-1])],
    }
    empty = (
        "road_segment",
        "road_block",
        "ped_crossing",
        "walkway",
        "stop_line",
        "carpark_area",
        "road_divider",
        "lane_divider",
        "traffic_light",
    )
    return {
        "version": "1.3",
        "canvas_edge": [1000.0, 1000.0],
        "node": nodes,
        "line": lines,
        "polygon": polygons,
        "drivable_area": [drivable],
        "lane": lanes,
        "lane_connector": [connector],
        "arcline_path_3": {
            "lane_ego": [ego_arc],
            "lane_left": [left_arc],
            "conn_curve": [curve_arc],
        },
        "connectivity": {
            "lane_ego": {"incoming": [], "outgoing": ["conn_curve"]},
            "lane_left": {"incoming": [], "outgoing": []},
            "conn_curve": {"incoming": ["lane_ego"], "outgoing": []},
        },
        **{name: [] for name in empty},
    }
