"""nuScenes through nuscenes-devkit (optional extra `nuscenes`).

What is read, and how it is converted:
- ego: the `ego_pose` records of the chosen sensors' sample_data (LIDAR_TOP, 20 Hz, by
  default; every sensor's with `nuscenes.ego_pose_channels=[]`, which mixes 12/13/20 Hz and
  is flagged irregular), resampled to 10 Hz. nuScenes' global frame is metric, x/y/z up,
  yaw = rotation about +z (counter-clockwise), so it is REP-103 already; the ego pose is the
  rear-axle centre (nuScenes' ego frame), as in the project. Timestamps are microseconds.
- agents: `sample_annotation` boxes at the 2 Hz keyframes (box centres; size is w, l, h),
  velocity from the devkit's `box_velocity`, interpolated to 10 Hz between keyframes and
  flagged (`Scene.metadata["interpolated_agent_ids"]`, `LogData.agents_interpolated`).
- cameras: the CAM_* JPEGs of every sample_data (keyframes and sweeps, 12 Hz), nearest frame
  to each 10 Hz grid time.
- map: NuScenesMap lanes and lane connectors near the ego's path (arcline paths discretised
  by the devkit), boundaries at the lane polygon's half width, successors from the
  connectivity layer, and the drivable_area polygons.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from planner.data.loaders.common import (
    AgentTrack,
    CameraStream,
    EgoTrack,
    LogData,
    LogFormatError,
    LogLoadersConfig,
    LogSource,
    NoEgoTrackError,
    offset_boundaries,
    quaternion_to_yaw,
)
from planner.types import AgentClass, Lane, MapData

log = logging.getLogger(__name__)

US_TO_S = 1e-6  # nuScenes timestamps are microseconds

# nuScenes category prefixes -> project classes (first match wins; unlisted ones are skipped).
CATEGORY_CLASSES: tuple[tuple[str, AgentClass], ...] = (
    ("vehicle.bicycle", AgentClass.CYCLIST),
    ("vehicle.motorcycle", AgentClass.CYCLIST),
    ("vehicle.", AgentClass.VEHICLE),
    ("human.pedestrian", AgentClass.PEDESTRIAN),
    ("animal", AgentClass.PEDESTRIAN),
    ("movable_object.trafficcone", AgentClass.CONE),
    ("movable_object.", AgentClass.STATIC_OBSTACLE),
    ("static_object.", AgentClass.STATIC_OBSTACLE),
)

TABLE_FILES = ("scene.json", "sample.json", "sample_data.json", "ego_pose.json")


def agent_class_of(category: str) -> AgentClass | None:
    for prefix, cls in CATEGORY_CLASSES:
        if category.startswith(prefix):
            return cls
    return None


def find_version(dataroot: Path) -> list[str]:
    """Table folders (v1.0-mini, v1.0-trainval, ...) under a nuScenes dataroot."""
    if not dataroot.is_dir():
        return []
    return sorted(
        p.name
        for p in dataroot.iterdir()
        if p.is_dir() and all((p / f).is_file() for f in TABLE_FILES)
    )


def _require_devkit() -> Any:
    try:
        from nuscenes.nuscenes import NuScenes
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise LogFormatError(
            f"reading nuScenes needs nuscenes-devkit: pip install 'cocdrive[nuscenes]' ({exc})"
        ) from None
    return NuScenes


class NuScenesSource(LogSource):
    """Every scene of a nuScenes dataroot (or one scene: `scene_names`)."""

    format_name = "nuscenes"

    def __init__(
        self,
        path: str | Path,
        config: LogLoadersConfig | None = None,
        scene_names: tuple[str, ...] = (),
    ):
        super().__init__(path, config)
        root = self.path
        # Accept the table folder itself as well as the dataroot.
        if all((root / f).is_file() for f in TABLE_FILES):
            self.dataroot, version = root.parent, root.name
        else:
            versions = find_version(root)
            wanted = self.config.nuscenes.version
            if wanted:
                if wanted not in versions:
                    raise LogFormatError(
                        f"nuScenes dataroot {str(root)!r} has no table folder {wanted!r} "
                        f"(found: {', '.join(versions) or 'none'})"
                    )
                version = wanted
            elif len(versions) == 1:
                version = versions[0]
            elif not versions:
                raise LogFormatError(
                    f"{str(root)!r} is not a nuScenes dataroot: no folder with "
                    f"{', '.join(TABLE_FILES)}"
                )
            else:
                raise LogFormatError(
                    f"nuScenes dataroot {str(root)!r} holds several versions "
                    f"({', '.join(versions)}): choose one with nuscenes.version=..."
                )
            self.dataroot = root
        self.version = version
        self.scene_names = tuple(scene_names)
        self._nusc = None
        self._maps: dict[str, Any] = {}
        self._sd_by_sample: dict[str, list[dict]] | None = None

    @property
    def nusc(self) -> Any:
        if self._nusc is None:
            NuScenes = _require_devkit()
            self._nusc = NuScenes(version=self.version, dataroot=str(self.dataroot), verbose=False)
        return self._nusc

    def logs(self) -> Iterator[LogData]:
        nusc = self.nusc
        scenes = nusc.scene
        if self.scene_names:
            known = {s["name"] for s in scenes}
            missing = [n for n in self.scene_names if n not in known]
            if missing:
                raise LogFormatError(
                    f"nuScenes {self.version} has no scene(s) {missing}; known: {sorted(known)[:10]}"
                )
            scenes = [s for s in scenes if s["name"] in self.scene_names]
        for scene in scenes:
            yield self.load_scene(scene)

    # -- one scene ------------------------------------------------------------------------
    def _scene_samples(self, scene: dict) -> list[dict]:
        nusc = self.nusc
        out, token = [], scene["first_sample_token"]
        while token:
            sample = nusc.get("sample", token)
            out.append(sample)
            token = sample["next"]
        return out

    def load_scene(self, scene: dict) -> LogData:
        nusc = self.nusc
        cfg = self.config.nuscenes
        samples = self._scene_samples(scene)
        if self._sd_by_sample is None:  # one pass over sample_data for all scenes
            self._sd_by_sample = defaultdict(list)
            for sd in nusc.sample_data:
                self._sd_by_sample[sd["sample_token"]].append(sd)
        records = [sd for s in samples for sd in self._sd_by_sample.get(s["token"], [])]

        # Ego poses of the chosen channels (nuScenes has one ego_pose per sample_data).
        channels = set(cfg.ego_pose_channels)
        pose_sd = [sd for sd in records if not channels or sd["channel"] in channels]
        if not pose_sd:
            present = sorted({sd["channel"] for sd in records})
            raise NoEgoTrackError(
                f"nuScenes scene {scene['name']!r}: no ego poses from channels "
                f"{sorted(channels)} (channels present: {present}); set "
                "nuscenes.ego_pose_channels"
            )
        poses = [nusc.get("ego_pose", sd["ego_pose_token"]) for sd in pose_sd]
        t = np.array([p["timestamp"] for p in poses], dtype=np.float64) * US_TO_S
        xyz = np.array([p["translation"] for p in poses], dtype=np.float64)
        yaw = np.array([quaternion_to_yaw(*p["rotation"]) for p in poses])
        ego = EgoTrack(t=t, x=xyz[:, 0], y=xyz[:, 1], yaw=yaw)

        agents = self._agents(samples)
        cameras = self._cameras(records, scene["name"])
        log_rec = nusc.get("log", scene["log_token"])
        map_data = self._map(log_rec["location"], ego) if cfg.load_map else MapData()
        return LogData(
            log_id=scene["name"],
            source="nuscenes",
            ego=ego,
            agents=agents,
            map=map_data,
            cameras=cameras,
            agents_interpolated=True,
            metadata={
                "scene_token": scene["token"],
                "location": log_rec["location"],
                "version": self.version,
                "ego_pose_channels": sorted(channels) or "all",
                "annotation_rate_hz": 2.0,
            },
        )

    def _agents(self, samples: list[dict]) -> list[AgentTrack]:
        nusc = self.nusc
        by_instance: dict[str, list[tuple[float, dict]]] = defaultdict(list)
        for sample in samples:
            for ann_token in sample["anns"]:
                ann = nusc.get("sample_annotation", ann_token)
                by_instance[ann["instance_token"]].append((sample["timestamp"] * US_TO_S, ann))
        agents, skipped = [], defaultdict(int)
        for instance, anns in by_instance.items():
            anns.sort(key=lambda item: item[0])
            category = anns[0][1]["category_name"]
            cls = agent_class_of(category)
            if cls is None:
                skipped[category] += 1
                continue
            t = np.array([a[0] for a in anns])
            xyz = np.array([a[1]["translation"] for a in anns], dtype=np.float64)
            yaw = np.array([quaternion_to_yaw(*a[1]["rotation"]) for a in anns])
            vel = np.array([nusc.box_velocity(a[1]["token"])[:2] for a in anns], dtype=np.float64)
            vel = np.where(np.isfinite(vel), vel, 0.0)  # single annotation: no velocity known
            w, length, h = np.median(np.array([a[1]["size"] for a in anns]), axis=0)
            agents.append(
                AgentTrack(
                    id=instance,
                    agent_class=cls,
                    t=t,
                    x=xyz[:, 0],
                    y=xyz[:, 1],
                    yaw=yaw,
                    vx=vel[:, 0],
                    vy=vel[:, 1],
                    length=float(length),
                    width=float(w),
                    height=float(h),
                )
            )
        if skipped:
            log.info("nuScenes: skipped annotations of unmapped categories %s", dict(skipped))
        return agents

    def _cameras(self, records: list[dict], scene_name: str) -> list[CameraStream]:
        wanted = self.config.nuscenes.cameras
        present = {sd["channel"] for sd in records}
        missing = [c for c in wanted if c not in present]
        if missing and any(c.startswith("CAM_") for c in present):
            log.warning("nuScenes scene %r has no %s frames", scene_name, missing)
        streams = []
        for name in wanted:
            frames = sorted(
                (sd for sd in records if sd["channel"] == name), key=lambda sd: sd["timestamp"]
            )
            if not frames:
                continue
            paths = [self.dataroot / sd["filename"] for sd in frames]
            streams.append(
                CameraStream(
                    name=name,
                    t=np.array([sd["timestamp"] for sd in frames], dtype=np.float64) * US_TO_S,
                    load=_jpeg_loader(paths),
                )
            )
        return streams

    # -- map --------------------------------------------------------------------------------
    def _map(self, location: str, ego: EgoTrack) -> MapData:
        expansion = self.dataroot / "maps" / "expansion" / f"{location}.json"
        if not expansion.is_file():
            log.warning(
                "nuScenes map expansion %s is missing: scenes have no lanes (install the "
                "nuScenes map expansion pack under <dataroot>/maps/expansion)",
                expansion,
            )
            return MapData(name=location)
        if location not in self._maps:
            from nuscenes.map_expansion.map_api import NuScenesMap

            self._maps[location] = NuScenesMap(dataroot=str(self.dataroot), map_name=location)
        nmap = self._maps[location]
        return nuscenes_map_data(
            nmap,
            ego.x[ego.valid],
            ego.y[ego.valid],
            radius_m=self.config.common.map_radius_m,
            resolution_m=self.config.nuscenes.lane_resolution_m,
            default_width_m=self.config.common.lane_width_m,
            speed_limit_mps=self.config.common.speed_limit_mps,
            name=location,
        )


def _jpeg_loader(paths: list[Path]):
    def load(index: int) -> np.ndarray:
        import cv2

        path = paths[index]
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise LogFormatError(f"nuScenes camera frame {str(path)!r} is missing or not an image")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    return load


def nuscenes_map_data(
    nmap: Any,
    xs: np.ndarray,
    ys: np.ndarray,
    *,
    radius_m: float,
    resolution_m: float,
    default_width_m: float,
    speed_limit_mps: float,
    name: str,
) -> MapData:
    """Lanes, lane connectors and drivable area of a NuScenesMap around the ego's path."""
    from shapely.geometry import Point, box
    from shapely.ops import unary_union

    patch = (
        float(xs.min() - radius_m),
        float(ys.min() - radius_m),
        float(xs.max() + radius_m),
        float(ys.max() + radius_m),
    )
    records = nmap.get_records_in_patch(patch, ["lane", "lane_connector", "drivable_area"])
    tokens = records["lane"] + records["lane_connector"]
    poses = nmap.discretize_lanes(tokens, resolution_m)
    lanes: dict[str, Lane] = {}
    for token in tokens:
        pts = np.asarray(poses.get(token, []), dtype=np.float64)
        if len(pts) < 2:
            continue
        center = pts[:, :2]
        keep = np.concatenate([[True], np.hypot(*np.diff(center, axis=0).T) > 1e-6])
        center = center[keep]
        if len(center) < 2:
            continue
        layer = "lane" if token in records["lane"] else "lane_connector"
        record = nmap.get(layer, token)
        half = default_width_m / 2.0
        if record.get("polygon_token"):
            polygon = nmap.extract_polygon(record["polygon_token"])
            if polygon.is_valid and not polygon.is_empty:
                ring = polygon.exterior
                dists = [ring.distance(Point(p)) for p in center[1:-1]] or [half]
                half = float(np.clip(np.median(dists), 0.5 * default_width_m / 2, 2 * half))
        left, right = offset_boundaries(center, half, half)
        try:
            successors = tuple(nmap.get_outgoing_lane_ids(token))
            predecessors = tuple(nmap.get_incoming_lane_ids(token))
        except ValueError:  # a lane without connectivity record
            successors = predecessors = ()
        lanes[token] = Lane(
            id=token,
            centerline=center,
            left_boundary=left,
            right_boundary=right,
            speed_limit_mps=speed_limit_mps,
            left_boundary_kind="dashed" if layer == "lane" else "none",
            right_boundary_kind="dashed" if layer == "lane" else "none",
            successors=successors,
            predecessors=predecessors,
        )
    polygons = []
    for token in records["drivable_area"]:
        for polygon_token in nmap.get("drivable_area", token)["polygon_tokens"]:
            poly = nmap.extract_polygon(polygon_token)
            polygons.append(poly if poly.is_valid else poly.buffer(0))
    drivable = None
    if polygons:
        drivable = unary_union(polygons).intersection(box(*patch))
    return MapData(lanes=lanes, drivable_area=drivable, name=name)
