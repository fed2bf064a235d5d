"""rosbag2 recordings (MCAP or sqlite3 storage) through `rosbags` (optional extra `ros`).

- ego: a `nav_msgs/msg/Odometry` topic (`rosbag.odometry_topic`, or the only one in the bag):
  `header.stamp` (s + ns), `pose.pose.position` x / y, yaw from the orientation quaternion,
  speed = `twist.twist.linear.x` (the twist is in the child frame, x forward). ROS frames are
  REP-103 already; `base_link` is taken as the rear-axle centre (Autoware's convention) unless
  `rosbag.base_link_ahead_of_rear_axle_m` says otherwise.
- cameras: `sensor_msgs/msg/Image` (rgb8, bgr8, rgba8, bgra8, mono8) and
  `sensor_msgs/msg/CompressedImage` (decoded with OpenCV) topics, named by
  `rosbag.camera_topics` (name -> topic) or all image topics, named after the topic.
  Frames are read lazily by timestamp, so a long bag is never held in memory.
- no agents, no map: scenes carry the ego, its logged path as the route, and the images.

Why images are decoded here by hand: `rosbags` deserialises messages but has no image
conversion (that is the separate rosbags-image package); a raw Image is a reshape of its
`data` by `height` x `step`, and OpenCV decodes the compressed formats.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from planner.data.loaders.common import (
    CameraStream,
    EgoTrack,
    LogData,
    LogFormatError,
    LogSource,
    NoEgoTrackError,
    quaternion_to_yaw,
)
from planner.types import MapData

log = logging.getLogger(__name__)

ODOMETRY_TYPE = "nav_msgs/msg/Odometry"
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
NS_TO_S = 1e-9


def _require_rosbags() -> Any:
    try:
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise LogFormatError(
            f"reading rosbag2 files needs rosbags: pip install 'cocdrive[ros]' ({exc})"
        ) from None
    return AnyReader, get_typestore(Stores.ROS2_HUMBLE)


def is_rosbag2(path: Path) -> bool:
    """A rosbag2 directory: metadata.yaml plus .db3 or .mcap storage files."""
    if not path.is_dir() or not (path / "metadata.yaml").is_file():
        return False
    return any(path.glob("*.db3")) or any(path.glob("*.mcap"))


def _stamp(msg: Any, fallback_ns: int) -> float:
    header = getattr(msg, "header", None)
    if header is not None:
        sec, nsec = header.stamp.sec, header.stamp.nanosec
        if sec or nsec:
            return sec + nsec * NS_TO_S
    return fallback_ns * NS_TO_S


def decode_image(msg: Any, msgtype: str) -> np.ndarray:
    """sensor_msgs Image / CompressedImage -> RGB (H, W, 3) uint8."""
    import cv2

    if msgtype.endswith("CompressedImage"):
        bgr = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise LogFormatError(f"CompressedImage with format {msg.format!r} could not be decoded")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    encoding = msg.encoding.lower()
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}.get(encoding)
    if channels is None:
        raise LogFormatError(
            f"Image encoding {msg.encoding!r} is not supported (rgb8, bgr8, rgba8, bgra8, mono8)"
        )
    data = np.frombuffer(bytes(msg.data), np.uint8)
    rows = data.reshape(msg.height, msg.step)[:, : msg.width * channels]
    img = rows.reshape(msg.height, msg.width, channels)
    if encoding == "rgb8":
        return img.copy()
    if encoding == "bgr8":
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if encoding == "rgba8":
        return cv2.cvtColor(img, cv2.COLOR_RGBA2RGB)
    if encoding == "bgra8":
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)


def _topic_name(topic: str) -> str:
    return topic.strip("/").replace("/", "_") or topic


class RosbagSource(LogSource):
    """One rosbag2 recording (a directory with metadata.yaml)."""

    format_name = "rosbag2"

    def logs(self) -> Iterator[LogData]:
        yield self.load()

    def load(self) -> LogData:
        AnyReader, typestore = _require_rosbags()
        cfg = self.config.rosbag
        with AnyReader([self.path], default_typestore=typestore) as reader:
            by_topic = {c.topic: c for c in reader.connections}
            odom_topic = cfg.odometry_topic
            if not odom_topic:
                candidates = sorted(t for t, c in by_topic.items() if c.msgtype == ODOMETRY_TYPE)
                if not candidates:
                    raise NoEgoTrackError(
                        f"rosbag2 {str(self.path)!r} has no {ODOMETRY_TYPE} topic (topics: "
                        f"{', '.join(f'{t} [{c.msgtype}]' for t, c in sorted(by_topic.items()))}); "
                        "the ego track comes from odometry"
                    )
                if len(candidates) > 1:
                    raise LogFormatError(
                        f"rosbag2 {str(self.path)!r} has several odometry topics {candidates}: "
                        "choose one with rosbag.odometry_topic=..."
                    )
                odom_topic = candidates[0]
            if odom_topic not in by_topic:
                raise NoEgoTrackError(
                    f"rosbag2 {str(self.path)!r} has no topic {odom_topic!r} "
                    f"(rosbag.odometry_topic); topics: {sorted(by_topic)}"
                )
            conn = by_topic[odom_topic]
            if conn.msgtype != ODOMETRY_TYPE:
                raise LogFormatError(f"topic {odom_topic!r} is {conn.msgtype}, not {ODOMETRY_TYPE}")
            rows = []
            for c, bag_ns, raw in reader.messages(connections=[conn]):
                msg = reader.deserialize(raw, c.msgtype)
                p, q = msg.pose.pose.position, msg.pose.pose.orientation
                rows.append(
                    (
                        _stamp(msg, bag_ns),
                        p.x,
                        p.y,
                        quaternion_to_yaw(q.w, q.x, q.y, q.z),
                        msg.twist.twist.linear.x,
                    )
                )
            if not rows:
                raise NoEgoTrackError(f"odometry topic {odom_topic!r} has no messages")
            arr = np.array(rows, dtype=np.float64)
            offset = cfg.base_link_ahead_of_rear_axle_m
            x = arr[:, 1] - offset * np.cos(arr[:, 3])
            y = arr[:, 2] - offset * np.sin(arr[:, 3])
            ego = EgoTrack(t=arr[:, 0], x=x, y=y, yaw=arr[:, 3], speed=arr[:, 4])

            cameras = self._camera_streams(reader, by_topic)
        return LogData(
            log_id=self.path.name,
            source="rosbag2",
            ego=ego,
            map=MapData(),
            cameras=cameras,
            metadata={"odometry_topic": odom_topic, "cameras": [c.name for c in cameras]},
        )

    def _camera_streams(self, reader: Any, by_topic: dict[str, Any]) -> list[CameraStream]:
        wanted = dict(self.config.rosbag.camera_topics)
        if not wanted:
            wanted = {
                _topic_name(t): t for t, c in sorted(by_topic.items()) if c.msgtype in IMAGE_TYPES
            }
        streams = []
        for name, topic in wanted.items():
            conn = by_topic.get(topic)
            if conn is None or conn.msgtype not in IMAGE_TYPES:
                found = conn.msgtype if conn is not None else "absent"
                raise LogFormatError(
                    f"camera {name!r}: topic {topic!r} is {found}, expected one of {IMAGE_TYPES}"
                )
            stamps, bag_times = [], []
            for c, bag_ns, raw in reader.messages(connections=[conn]):
                msg = reader.deserialize(raw, c.msgtype)
                stamps.append(_stamp(msg, bag_ns))
                bag_times.append(bag_ns)
            if not stamps:
                continue
            order = np.argsort(stamps, kind="stable")
            streams.append(
                CameraStream(
                    name=name,
                    t=np.asarray(stamps)[order],
                    load=self._frame_loader(topic, [bag_times[k] for k in order]),
                )
            )
        return streams

    def _open_frame_reader(self) -> Any:
        """One reader kept open for frame look-ups (opening a bag costs ~0.1 s)."""
        if getattr(self, "_frame_reader", None) is None:
            AnyReader, typestore = _require_rosbags()
            reader = AnyReader([self.path], default_typestore=typestore)
            reader.open()
            self._frame_reader = reader
        return self._frame_reader

    def close(self) -> None:
        reader = getattr(self, "_frame_reader", None)
        if reader is not None:
            reader.close()
            self._frame_reader = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to release
            pass

    def _frame_loader(self, topic: str, bag_times: list[int]):
        def load(index: int) -> np.ndarray:
            reader = self._open_frame_reader()
            ns = bag_times[index]
            conns = [c for c in reader.connections if c.topic == topic]
            for c, _, raw in reader.messages(connections=conns, start=ns, stop=ns + 1):
                return decode_image(reader.deserialize(raw, c.msgtype), c.msgtype)
            raise LogFormatError(f"rosbag2 {str(self.path)!r}: no {topic} message at {ns} ns")

        return load
