"""Dataset shards: WebDataset-style tar files, one per episode, and the dataset card.

Why tar (docs/DATASET.md): a tar written with the stdlib `tarfile` needs no extra dependency,
streams sequentially (WebDataset, `tar tf`, any language reads it), and allows random access
once the member offsets are known (`scan_shard` reads only the 512-byte headers). Images
are already compressed (PNG/JPEG), so a columnar format (parquet) or chunked arrays (zarr)
would buy nothing for the bulk of the bytes.

A shard `<family>-<seed>.tar` holds first `__episode__.npz` / `__episode__.json` (the
episode's whole map and route, stored once; a sample names the lanes within the collection
radius), then, per sample `<key>` (`<family>-<seed>-<step:04d>`):
    <key>.cams.png|.cams.jpg   cameras tiled (N_cam * H, T * W, 3), RGB encoded via OpenCV
    <key>.arrays.npz           numeric arrays (world frame unless named `feat_*`)
    <key>.info.json            label, decision, metadata, agent/lane/light descriptions
and, last, `__shard__.json` (episode key, family, seed, split, sample count, format). The
trailer is written last, so a shard cut short at a member boundary is detected; a member
whose data runs past the end of the file is detected from its header. Shards are built in
memory and written with `planner.io.atomic_write_bytes` (temp file + rename).

The dataset folder: `shards/<family>/*.tar`, `index.json` (every shard with its split,
sample count, bytes and sha256), `card.json` + `card.md`, `episodes.jsonl` (per-episode
collection records, resumable), `manifest.json`, `config.yaml`."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from planner.data.sample import Sample
from planner.errors import UserError
from planner.io import atomic_write_bytes, atomic_write_json, atomic_write_text, dumps
from planner.taxonomy import (
    AgentClass,
    Command,
    LateralDecision,
    LightState,
    LongitudinalDecision,
    Side,
)
from planner.types import (
    Agent,
    EgoState,
    Lane,
    MapData,
    Route,
    Scene,
    StopLine,
    TrafficLight,
)

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SHARD_TRAILER = "__shard__.json"
SHARDS_DIR = "shards"
INDEX_FILE = "index.json"
CARD_JSON = "card.json"
CARD_MD = "card.md"
CAMS_PNG, CAMS_JPG, ARRAYS, INFO = "cams.png", "cams.jpg", "arrays.npz", "info.json"
SAMPLE_MEMBERS = (ARRAYS, INFO)  # plus one of the camera members
SPLITS = ("train", "val", "test")

# Integer ids of the categorical fields (the order of the enums; stable, written in the card).
LONGITUDINAL_IDS = {m.value: i for i, m in enumerate(LongitudinalDecision)}
LATERAL_IDS = {m.value: i for i, m in enumerate(LateralDecision)}
SIDE_IDS = {m.value: i for i, m in enumerate(Side)}
COMMAND_IDS = {m.value: i for i, m in enumerate(Command)}


class CorruptShardError(UserError):
    """A shard is truncated or damaged; the message names the shard and what is wrong."""

    def __init__(self, shard: str | Path, problem: str):
        self.shard = str(shard)
        self.problem = problem
        super().__init__(
            f"corrupt shard {self.shard}: {problem}. Re-run the same 'cocdrive data collect' "
            "command after deleting this shard and its line in episodes.jsonl to rebuild it, "
            "or load with skip_corrupt=True to skip it"
        )


# ---- splits ---------------------------------------------------------------------------------
def split_of(family: str, seed: int, fractions: dict[str, float]) -> str:
    """train / val / test of an episode, from a hash of (family, seed): every sample of an
    episode lands in one split, and the assignment does not depend on what else was
    collected (adding episodes never moves old ones)."""
    total = sum(fractions.values())
    if total <= 0 or any(v < 0 for v in fractions.values()):
        raise UserError(f"split fractions must be >= 0 and sum to > 0, got {fractions}")
    digest = hashlib.sha256(f"{family}:{int(seed)}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64  # uniform in [0, 1)
    acc = 0.0
    names = list(fractions)
    for name in names:
        acc += fractions[name] / total
        if u < acc:
            return name
    return names[-1]


# ---- images ---------------------------------------------------------------------------------
def encode_cameras(cameras: np.ndarray, image_format: str = "png", jpeg_quality: int = 90) -> bytes:
    """(N_cam, T, H, W, 3) uint8 RGB -> one PNG/JPEG of the tiled (N_cam * H, T * W) image
    (one codec call per sample instead of N_cam * T)."""
    import cv2

    cams = np.asarray(cameras)
    if cams.ndim != 5 or cams.shape[-1] != 3 or cams.dtype != np.uint8:
        raise ValueError(
            f"cameras must be uint8 (N_cam, T, H, W, 3), got {cams.dtype} {cams.shape}"
        )
    n, t, h, w, _ = cams.shape
    tiled = cams.transpose(0, 2, 1, 3, 4).reshape(n * h, t * w, 3)
    bgr = np.ascontiguousarray(tiled[..., ::-1])  # OpenCV codecs expect BGR
    if image_format == "png":
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    elif image_format == "jpg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    else:
        raise ValueError(f"image_format {image_format!r}: valid formats are png, jpg")
    if not ok:
        raise ValueError(f"OpenCV could not encode a {tiled.shape} image as {image_format}")
    return buf.tobytes()


def decode_cameras(data: bytes, shape: tuple[int, int, int, int]) -> np.ndarray:
    """Inverse of `encode_cameras`: (N_cam, T, H, W, 3) uint8 RGB."""
    import cv2

    n, t, h, w = shape
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.shape != (n * h, t * w, 3):
        got = None if bgr is None else bgr.shape
        raise ValueError(f"camera image does not decode to {(n * h, t * w, 3)} (got {got})")
    return bgr[..., ::-1].reshape(n, h, t, w, 3).transpose(0, 2, 1, 3, 4).copy()


# ---- one sample <-> members -----------------------------------------------------------------
def _ragged(polylines: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated (M, 2) points and (L + 1,) offsets of a list of (n_i, 2) polylines."""
    pts = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polylines]
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in pts])]).astype(np.int64)
    return (np.concatenate(pts, axis=0) if pts else np.zeros((0, 2))), offsets


def _unragged(points: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [points[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


_EGO_FIELDS = (
    "t",
    "x",
    "y",
    "yaw",
    "speed",
    "accel",
    "curvature",
    "length",
    "width",
    "rear_axle_to_center_m",
)
_AGENT_FIELDS = ("x", "y", "yaw", "vx", "vy", "length", "width", "height")


@dataclass
class SampleFeatures:
    """Model inputs computed at collection time by `planner.features.build_planner_input`
    (so training sees exactly what inference computes)."""

    cameras: np.ndarray  # (N_cam, T, H, W, 3) uint8
    camera_names: tuple[str, ...]
    camera_source: str  # "rendered" (SensorRig from vectors) or "real"
    ego_history: np.ndarray  # (16, 7) ego frame at t0
    route_xy: np.ndarray  # (20, 2) ego frame
    command: str
    speed_limit_mps: float


def encode_sample(
    key: str,
    sample: Sample,
    features: SampleFeatures,
    *,
    expert_plan: np.ndarray | None = None,
    image_format: str = "png",
    jpeg_quality: int = 90,
) -> dict[str, bytes]:
    """Members (name -> bytes) of one sample. Everything a `Sample` holds round trips
    (`ShardRecord.to_sample`), except the map's drivable area (recomputed on demand)."""
    scene = sample.scene
    ego = scene.ego
    agents = scene.agents
    ids = [a.id for a in agents]
    fut = np.full((len(agents), 64, 5), np.nan, dtype=np.float32)
    for i, aid in enumerate(ids):
        if aid in sample.agent_futures:
            fut[i] = sample.agent_futures[aid]
    arrays: dict[str, np.ndarray] = {
        "ego_state": np.array([float(getattr(ego, f)) for f in _EGO_FIELDS]),
        "ego_history": scene.ego_history,
        "future_ego": sample.future_ego,
        "future_valid": sample.future_valid,
        "agent_state": np.array(
            [[float(getattr(a, f)) for f in _AGENT_FIELDS] for a in agents], dtype=np.float64
        ).reshape(-1, len(_AGENT_FIELDS)),
        "agent_futures": fut,
        "feat_ego_history": np.asarray(features.ego_history, dtype=np.float32),
        "feat_route_xy": np.asarray(features.route_xy, dtype=np.float32),
    }
    if sample.controls is not None:
        arrays["controls"] = np.asarray(sample.controls, dtype=np.float32)
    if expert_plan is not None:
        arrays["expert_plan"] = np.asarray(expert_plan, dtype=np.float32)
    histories = {a.id: np.asarray(a.history) for a in agents if a.history is not None}
    for i, a in enumerate(agents):
        if a.id in histories:
            arrays[f"agent_history_{i}"] = histories[a.id]
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    n, t, h, w = features.cameras.shape[:4]
    info = {
        "key": key,
        "format_version": FORMAT_VERSION,
        "timestamp": scene.timestamp,
        "meta": sample.meta,
        "label": sample.label,
        "agents": [{"id": a.id, "class": a.agent_class.value} for a in agents],
        "map_lane_ids": list(scene.map.lanes),
        "map_stop_line_ids": list(scene.map.stop_lines),
        "traffic_lights": [
            {
                "id": tl.id,
                "state": tl.state.value,
                "stop_line_id": tl.stop_line_id,
                "lane_ids": list(tl.lane_ids),
                "time_to_change_s": tl.time_to_change_s,
            }
            for tl in scene.traffic_lights
        ],
        "scene_metadata": scene.metadata,
        "cameras": {
            "names": list(features.camera_names),
            "source": features.camera_source,
            "shape": [n, t, h, w],
        },
        "features": {"command": features.command, "speed_limit_mps": features.speed_limit_mps},
    }
    cam_member = CAMS_PNG if image_format == "png" else CAMS_JPG
    return {
        f"{key}.{cam_member}": encode_cameras(features.cameras, image_format, jpeg_quality),
        f"{key}.{ARRAYS}": buf.getvalue(),
        f"{key}.{INFO}": dumps(info).encode("utf-8"),
    }


EPISODE_ARRAYS = "__episode__.npz"
EPISODE_INFO = "__episode__.json"


@dataclass
class EpisodeContext:
    """What every sample of an episode shares, stored once per shard: the map and route."""

    map: MapData
    route: Route


def encode_episode(map_data: MapData, route: Route) -> dict[str, bytes]:
    """Members holding the episode's map (every lane, stop line) and route."""
    lanes = list(map_data.lanes.values())
    center, center_off = _ragged([ln.centerline for ln in lanes])
    left, left_off = _ragged([ln.left_boundary for ln in lanes])
    right, right_off = _ragged([ln.right_boundary for ln in lanes])
    stop_lines = list(map_data.stop_lines.values())
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        lane_center=center,
        lane_center_off=center_off,
        lane_left=left,
        lane_left_off=left_off,
        lane_right=right,
        lane_right_off=right_off,
        stop_line_points=np.array(
            [np.asarray(sl.points, dtype=np.float64).reshape(2, 2) for sl in stop_lines]
        ).reshape(-1, 2, 2),
        route_waypoints=route.waypoints,
    )
    info = {
        "map_name": map_data.name,
        "lanes": [
            {
                "id": ln.id,
                "speed_limit_mps": ln.speed_limit_mps,
                "left_boundary_kind": ln.left_boundary_kind,
                "right_boundary_kind": ln.right_boundary_kind,
                "successors": list(ln.successors),
                "predecessors": list(ln.predecessors),
                "left_neighbor": ln.left_neighbor,
                "right_neighbor": ln.right_neighbor,
            }
            for ln in lanes
        ],
        "stop_lines": [
            {
                "id": sl.id,
                "lane_ids": list(sl.lane_ids),
                "light_id": sl.light_id,
                "stop": sl.is_stop_sign,
            }
            for sl in stop_lines
        ],
        "route": {
            "lane_ids": list(route.lane_ids),
            "command": route.command.value,
            "length_m": route.length_m,
        },
    }
    return {EPISODE_ARRAYS: buf.getvalue(), EPISODE_INFO: dumps(info).encode("utf-8")}


def decode_episode(shard: str | Path, arrays_bytes: bytes, info_bytes: bytes) -> EpisodeContext:
    try:
        info = json.loads(info_bytes.decode("utf-8"))
        with np.load(io.BytesIO(arrays_bytes), allow_pickle=False) as npz:
            a = {k: npz[k] for k in npz.files}
    except Exception as exc:  # noqa: BLE001 - any decode failure means a damaged member
        raise CorruptShardError(shard, f"the episode map/route is unreadable ({exc})") from None
    lanes = {}
    centers = _unragged(a["lane_center"], a["lane_center_off"])
    lefts = _unragged(a["lane_left"], a["lane_left_off"])
    rights = _unragged(a["lane_right"], a["lane_right_off"])
    for desc, c, lb, rb in zip(info["lanes"], centers, lefts, rights):
        lanes[desc["id"]] = Lane(
            id=desc["id"],
            centerline=c,
            left_boundary=lb,
            right_boundary=rb,
            speed_limit_mps=float(desc["speed_limit_mps"]),
            left_boundary_kind=desc["left_boundary_kind"],
            right_boundary_kind=desc["right_boundary_kind"],
            successors=tuple(desc["successors"]),
            predecessors=tuple(desc["predecessors"]),
            left_neighbor=desc["left_neighbor"],
            right_neighbor=desc["right_neighbor"],
        )
    stop_lines = {
        d["id"]: StopLine(
            id=d["id"],
            points=pts,
            lane_ids=tuple(d["lane_ids"]),
            light_id=d["light_id"],
            is_stop_sign=bool(d["stop"]),
        )
        for d, pts in zip(info["stop_lines"], a["stop_line_points"])
    }
    route = Route(
        waypoints=a["route_waypoints"],
        lane_ids=tuple(info["route"]["lane_ids"]),
        command=Command.parse(info["route"]["command"]),
        length_m=info["route"]["length_m"],
    )
    return EpisodeContext(MapData(lanes=lanes, stop_lines=stop_lines, name=info["map_name"]), route)


@dataclass
class ShardRecord:
    """One decoded sample: cameras, arrays and the info JSON."""

    key: str
    cameras: np.ndarray  # (N_cam, T, H, W, 3) uint8
    arrays: dict[str, np.ndarray]
    info: dict[str, Any]
    episode: EpisodeContext | None = None  # the shard's map and route

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(self.info["cameras"]["names"])

    @property
    def label(self) -> dict[str, Any] | None:
        return self.info.get("label")

    @property
    def meta(self) -> dict[str, Any]:
        return self.info.get("meta", {})

    def features(self) -> SampleFeatures:
        return SampleFeatures(
            cameras=self.cameras,
            camera_names=self.camera_names,
            camera_source=self.info["cameras"]["source"],
            ego_history=self.arrays["feat_ego_history"],
            route_xy=self.arrays["feat_route_xy"],
            command=self.info["features"]["command"],
            speed_limit_mps=float(self.info["features"]["speed_limit_mps"]),
        )

    def to_sample(self, episode: EpisodeContext | None = None) -> Sample:
        """Rebuild the `Sample`: the privileged Scene at t0 (the lanes within the collection
        radius, from the episode's map), the future, the fitted controls and the label."""
        episode = episode or self.episode
        a, info = self.arrays, self.info
        ego = EgoState(**dict(zip(_EGO_FIELDS, (float(v) for v in a["ego_state"]))))
        agents = []
        for i, (desc, row) in enumerate(zip(info["agents"], a["agent_state"])):
            vals = dict(zip(_AGENT_FIELDS, (float(v) for v in row)))
            agents.append(
                Agent(
                    id=desc["id"],
                    agent_class=AgentClass.parse(desc["class"]),
                    history=a.get(f"agent_history_{i}"),
                    **vals,
                )
            )
        if episode is None:
            raise ValueError(
                f"{self.key}: to_sample needs the shard's episode map and route "
                "(read_shard attaches them; pass read_episode(shard))"
            )
        lane_ids = [i for i in info["map_lane_ids"] if i in episode.map.lanes]
        stop_ids = [i for i in info["map_stop_line_ids"] if i in episode.map.stop_lines]
        lights = [
            TrafficLight(
                id=d["id"],
                state=LightState.parse(d["state"]),
                stop_line_id=d["stop_line_id"],
                lane_ids=tuple(d["lane_ids"]),
                time_to_change_s=d["time_to_change_s"],
            )
            for d in info["traffic_lights"]
        ]
        map_around = MapData(
            lanes={i: episode.map.lanes[i] for i in lane_ids},
            stop_lines={i: episode.map.stop_lines[i] for i in stop_ids},
            name=episode.map.name,
        )
        scene = Scene(
            timestamp=float(info["timestamp"]),
            ego=ego,
            ego_history=a["ego_history"],
            agents=agents,
            map=map_around,
            route=episode.route,
            traffic_lights=lights,
            metadata=info.get("scene_metadata", {}),
        )
        futures = {
            aid["id"]: a["agent_futures"][i]
            for i, aid in enumerate(info["agents"])
            if np.isfinite(a["agent_futures"][i]).any()
        }
        return Sample(
            scene=scene,
            future_ego=a["future_ego"],
            future_valid=a["future_valid"],
            agent_futures=futures,
            controls=a.get("controls"),
            label=info.get("label"),
            meta=info.get("meta", {}),
        )


def decode_sample(shard: str | Path, key: str, members: dict[str, bytes]) -> ShardRecord:
    """Members of one sample (suffix -> bytes) -> ShardRecord; a damaged member raises
    CorruptShardError naming the shard and the member."""
    try:
        info = json.loads(members[INFO].decode("utf-8"))
    except (KeyError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptShardError(shard, f"{key}.{INFO} is unreadable ({exc})") from None
    try:
        with np.load(io.BytesIO(members[ARRAYS]), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # noqa: BLE001 - zip/CRC/format errors all mean a damaged member
        raise CorruptShardError(shard, f"{key}.{ARRAYS} is unreadable ({exc})") from None
    cam = CAMS_PNG if CAMS_PNG in members else CAMS_JPG
    try:
        cameras = decode_cameras(members[cam], tuple(info["cameras"]["shape"]))
    except (KeyError, ValueError) as exc:
        raise CorruptShardError(shard, f"{key}.{cam} is unreadable ({exc})") from None
    return ShardRecord(key, cameras, arrays, info)


# ---- shard files ----------------------------------------------------------------------------
def build_shard(
    episode: dict[str, bytes], samples: list[dict[str, bytes]], trailer: dict[str, Any]
) -> bytes:
    """Tar bytes: the episode members (map, route), the samples' members in order, then the
    trailer."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in episode.items():
            _add(tar, name, data)
        for members in samples:
            for name, data in members.items():
                _add(tar, name, data)
        meta = {**trailer, "format_version": FORMAT_VERSION, "n_samples": len(samples)}
        _add(tar, SHARD_TRAILER, dumps(meta, sort_keys=True).encode("utf-8"))
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = 0o644
    tar.addfile(ti, io.BytesIO(data))


def write_shard(
    path: str | Path,
    episode: dict[str, bytes],
    samples: list[dict[str, bytes]],
    trailer: dict[str, Any],
) -> dict[str, Any]:
    """Write a shard atomically (temp file + rename); returns {bytes, sha256, n_samples}."""
    data = build_shard(episode, samples, trailer)
    atomic_write_bytes(path, data)
    return {
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "n_samples": len(samples),
    }


@dataclass
class SampleEntry:
    """Where one sample's members lie in its shard: suffix -> (data offset, size)."""

    key: str
    members: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass
class ShardScan:
    path: Path
    trailer: dict[str, Any]
    samples: list[SampleEntry]
    episode: SampleEntry  # the __episode__ members (map, route)


def scan_shard(path: str | Path) -> ShardScan:
    """Read a shard's headers (not its data) and check its structure: every member lies
    inside the file, every sample has all its members, the trailer is present and its
    sample count matches. Raises CorruptShardError naming the shard."""
    path = Path(path)
    if not path.is_file():
        raise CorruptShardError(path, "the file does not exist")
    size = path.stat().st_size
    entries: dict[str, SampleEntry] = {}
    episode = SampleEntry("__episode__")
    trailer: dict[str, Any] | None = None
    try:
        with tarfile.open(path, mode="r:") as tar:
            for ti in tar:
                if ti.offset_data + ti.size > size:
                    raise CorruptShardError(
                        path,
                        f"truncated: member {ti.name} needs {ti.offset_data + ti.size} bytes, "
                        f"the file has {size}",
                    )
                if ti.name == SHARD_TRAILER:
                    fh = tar.extractfile(ti)
                    trailer = json.loads(fh.read().decode("utf-8")) if fh else None
                    continue
                if ti.name in (EPISODE_ARRAYS, EPISODE_INFO):
                    episode.members[ti.name] = (ti.offset_data, ti.size)
                    continue
                key, _, suffix = ti.name.partition(".")
                entries.setdefault(key, SampleEntry(key)).members[suffix] = (
                    ti.offset_data,
                    ti.size,
                )
    except CorruptShardError:
        raise
    except (tarfile.TarError, OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptShardError(path, f"not a readable tar ({type(exc).__name__}: {exc})") from None
    if trailer is None:
        raise CorruptShardError(
            path, f"truncated: the trailer {SHARD_TRAILER} (written last) is missing"
        )
    for e in entries.values():
        missing = [m for m in SAMPLE_MEMBERS if m not in e.members]
        if not (CAMS_PNG in e.members or CAMS_JPG in e.members):
            missing.append("cams.png|cams.jpg")
        if missing:
            raise CorruptShardError(path, f"sample {e.key} lacks {missing}")
    if trailer.get("n_samples") != len(entries):
        raise CorruptShardError(
            path,
            f"the trailer says {trailer.get('n_samples')} samples, the shard holds {len(entries)}",
        )
    if len(episode.members) != 2:
        raise CorruptShardError(
            path, f"the episode members {EPISODE_ARRAYS}/{EPISODE_INFO} are missing"
        )
    return ShardScan(path, trailer, list(entries.values()), episode)


def read_members(path: Path, entry: SampleEntry, fh: Any | None = None) -> dict[str, bytes]:
    """The raw bytes of one sample's members (seek + read; `fh` an open binary file)."""
    own = fh is None
    fh = fh or open(path, "rb")  # noqa: SIM115 - closed below when owned
    try:
        out = {}
        for suffix, (offset, n) in entry.members.items():
            fh.seek(offset)
            data = fh.read(n)
            if len(data) != n:
                raise CorruptShardError(path, f"truncated: {entry.key}.{suffix} is cut short")
            out[suffix] = data
        return out
    finally:
        if own:
            fh.close()


def read_shard(path: str | Path) -> Iterator[ShardRecord]:
    """Every sample of a shard, in order (decoded)."""
    scan = scan_shard(path)
    with open(scan.path, "rb") as fh:
        episode = read_episode(scan, fh)
        for entry in scan.samples:
            record = decode_sample(scan.path, entry.key, read_members(scan.path, entry, fh))
            record.episode = episode
            yield record


def read_episode(scan: ShardScan, fh: Any | None = None) -> EpisodeContext:
    """The map and route stored once in a shard."""
    raw = read_members(scan.path, scan.episode, fh)
    return decode_episode(scan.path, raw[EPISODE_ARRAYS], raw[EPISODE_INFO])


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---- the dataset folder: index and card -------------------------------------------------------
def load_index(root: str | Path) -> dict[str, Any]:
    """index.json of a dataset folder, with an actionable error when it is not one."""
    root = Path(root)
    path = root / INDEX_FILE
    if not root.is_dir():
        raise UserError(f"dataset folder {str(root)!r} does not exist")
    if not path.is_file():
        raise UserError(
            f"{root} has no {INDEX_FILE}: is it the --out folder of a finished "
            "'cocdrive data collect'? (re-running that command writes it)"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{path} is not valid JSON ({exc}); re-run 'cocdrive data collect'"
        ) from None


def write_index(root: str | Path, shards: list[dict[str, Any]], extra: dict[str, Any]) -> Path:
    return atomic_write_json(
        Path(root) / INDEX_FILE,
        {"format_version": FORMAT_VERSION, **extra, "shards": shards},
    )


def folder_bytes(path: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def build_card(
    records: list[dict[str, Any]],
    *,
    name: str,
    disk_bytes: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The dataset card from the per-episode collection records (see sim_eval.collect):
    counts, decision histograms, per-family and per-split counts, label checks, disk size."""
    ok = [r for r in records if r.get("status") == "ok"]
    lon: Counter[str] = Counter()
    lat: Counter[str] = Counter()
    pairs: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    terminations: Counter[str] = Counter()
    families: dict[str, Counter[str]] = {}
    splits: dict[str, Counter[str]] = {s: Counter() for s in SPLITS}
    episode_s: list[float] = []
    episode_cpu_s: list[float] = []  # NaN for records written before cpu_s existed
    steps = perturbed = learner = 0
    for r in ok:
        lon.update(r["longitudinal"])
        lat.update(r["lateral"])
        pairs.update(r.get("pairs", {}))
        labels.update(r["labels"])
        skipped.update(r["skipped"])
        sources.update(r["future_source"])
        terminations[r["termination"]] += 1
        fam = families.setdefault(r["family"], Counter())
        fam["episodes"] += 1
        fam["samples"] += r["n_samples"]
        fam["steps"] += r["steps"]
        sp = splits.setdefault(r["split"], Counter())
        sp["episodes"] += 1
        sp["samples"] += r["n_samples"]
        steps += r["steps"]
        perturbed += r["perturbed_steps"]
        learner += r.get("learner_steps", 0)
        episode_s.append(float(r.get("wall_s", 0.0)))
        episode_cpu_s.append(float(r.get("cpu_s", math.nan)))
    n_samples = sum(r["n_samples"] for r in ok)
    card = {
        "name": name,
        "format_version": FORMAT_VERSION,
        "episodes": len(ok),
        "episodes_failed": len(records) - len(ok),
        "samples": n_samples,
        "simulated_steps": steps,
        "perturbed_step_fraction": perturbed / steps if steps else 0.0,
        "learner_step_fraction": learner / steps if steps else 0.0,  # DAgger collections
        "disk_bytes": disk_bytes,
        "bytes_per_sample": disk_bytes / n_samples if n_samples else None,
        "splits": {k: dict(v) for k, v in splits.items()},
        "families": {k: dict(v) for k, v in sorted(families.items())},
        "decisions": {
            "longitudinal": {m.value: lon.get(m.value, 0) for m in LongitudinalDecision},
            "lateral": {m.value: lat.get(m.value, 0) for m in LateralDecision},
            "pairs": dict(pairs.most_common()),
        },
        "missing_decisions": {
            "longitudinal": [m.value for m in LongitudinalDecision if not lon.get(m.value)],
            "lateral": [m.value for m in LateralDecision if not lat.get(m.value)],
        },
        "labels": dict(labels),
        "skipped_samples": dict(skipped),
        "future_source": dict(sources),
        "terminations": dict(terminations),
        "episode_worker_s": {
            "sum": float(np.sum(episode_s)) if episode_s else 0.0,
            "median": float(np.median(episode_s)) if episode_s else 0.0,
        },
        "episode_cpu_s": {
            "sum": float(np.nansum(episode_cpu_s)) if episode_cpu_s else 0.0,
            "median": float(np.nanmedian(episode_cpu_s))
            if episode_cpu_s and not np.isnan(episode_cpu_s).all()
            else None,
        },
        "failed_episodes": [
            {"key": r.get("key"), "error": r.get("error")}
            for r in records
            if r.get("status") != "ok"
        ][:20],
        "ids": {"longitudinal": LONGITUDINAL_IDS, "lateral": LATERAL_IDS, "command": COMMAND_IDS},
    }
    card.update(extra or {})
    return card


def _human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"


def card_markdown(card: dict[str, Any]) -> str:
    """A readable card.md of card.json."""
    lines = [
        f"# Dataset card: {card['name']}",
        "",
        "Chain-of-causation driving samples collected by the privileged expert in the",
        "highway-env simulator (`cocdrive data collect`); cameras rendered from the scene",
        "vectors by the SensorRig. Format: docs/DATASET.md.",
        "",
        "| | |",
        "|---|---|",
    ]
    rows = [
        ("episodes", card["episodes"]),
        ("episodes failed", card["episodes_failed"]),
        ("samples", card["samples"]),
        ("simulated steps (0.1 s)", card["simulated_steps"]),
        ("perturbed step fraction", f"{card['perturbed_step_fraction']:.3f}"),
        ("disk size", _human_bytes(card["disk_bytes"])),
        ("bytes per sample", _human_bytes(card["bytes_per_sample"])),
    ]
    for k in ("suite", "created_utc", "collection_wall_s", "workers", "git_revision", "config"):
        if k in card:
            v = card[k]
            if k == "config":
                v = ", ".join(f"{a}={b}" for a, b in v.items())
            rows.append((k.replace("_", " "), v))
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "## Splits (by a hash of family and seed: no episode is in two splits)", ""]
    lines += ["| split | episodes | samples |", "|---|---:|---:|"]
    for s, c in card["splits"].items():
        lines.append(f"| {s} | {c.get('episodes', 0)} | {c.get('samples', 0)} |")
    lines += [
        "",
        "## Families",
        "",
        "| family | episodes | samples | steps |",
        "|---|---:|---:|---:|",
    ]
    for f, c in card["families"].items():
        lines.append(f"| {f} | {c['episodes']} | {c['samples']} | {c['steps']} |")
    for axis in ("longitudinal", "lateral"):
        hist = card["decisions"][axis]
        total = sum(hist.values()) or 1
        lines += ["", f"## {axis.capitalize()} decisions", "", "| decision | samples | share |"]
        lines.append("|---|---:|---:|")
        lines += [f"| {k} | {v} | {100 * v / total:.1f} % |" for k, v in hist.items()]
    miss = card["missing_decisions"]
    lines += [
        "",
        "Missing decision types: longitudinal "
        + (", ".join(miss["longitudinal"]) or "none")
        + "; lateral "
        + (", ".join(miss["lateral"]) or "none")
        + ".",
    ]
    for title, key in (
        ("Labels", "labels"),
        ("Skipped samples", "skipped_samples"),
        ("Future source", "future_source"),
        ("Episode ends", "terminations"),
    ):
        lines += ["", f"## {title}", ""]
        items = card.get(key, {})
        lines += [f"- {k}: {v}" for k, v in sorted(items.items())] or ["- none"]
    if card.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in card["notes"]]
    return "\n".join(lines) + "\n"


def write_card(root: str | Path, card: dict[str, Any]) -> tuple[Path, Path]:
    root = Path(root)
    return (
        atomic_write_json(root / CARD_JSON, card),
        atomic_write_text(root / CARD_MD, card_markdown(card)),
    )


def load_card(root: str | Path) -> dict[str, Any]:
    path = Path(root) / CARD_JSON
    if not path.is_file():
        raise UserError(
            f"{root} has no {CARD_JSON}: is it the --out folder of a finished "
            "'cocdrive data collect'?"
        )
    return json.loads(path.read_text())


@dataclass
class ShardProblem:
    shard: str
    problem: str


def verify_dataset(
    root: str | Path, *, checksums: bool = True, deep: bool = False
) -> tuple[int, list[ShardProblem]]:
    """Check every shard in index.json: structure (scan_shard), size and sha256 against the
    index, and with `deep` decode every sample. Returns (shards checked, problems)."""
    root = Path(root)
    index = load_index(root)
    problems: list[ShardProblem] = []
    for entry in index["shards"]:
        path = root / entry["path"]
        try:
            scan = scan_shard(path)
            if scan.trailer.get("n_samples") != entry["n_samples"]:
                raise CorruptShardError(
                    path,
                    f"holds {scan.trailer.get('n_samples')} samples, "
                    f"index says {entry['n_samples']}",
                )
            if path.stat().st_size != entry["bytes"]:
                raise CorruptShardError(
                    path, f"is {path.stat().st_size} bytes, index says {entry['bytes']}"
                )
            if checksums and file_sha256(path) != entry["sha256"]:
                raise CorruptShardError(path, "sha256 differs from index.json (damaged bytes)")
            if deep:
                for _ in read_shard(path):
                    pass
        except CorruptShardError as exc:
            problems.append(ShardProblem(str(entry["path"]), exc.problem))
    return len(index["shards"]), problems
