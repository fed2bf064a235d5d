"""rosbag2 loader on tiny bags written here with rosbags' writer (MCAP and sqlite3).

The bag: odometry at 20 Hz for 10 s, the rear axle driving at 6 m/s along world +x for 4 s,
then a left arc of radius 30 m (yaw rate 0.2 rad/s); a CompressedImage (JPEG) topic at 10 Hz
and a raw rgb8 Image topic at 10 Hz whose frames are one colour each: red = frame index."""

from __future__ import annotations

import math

import numpy as np
import pytest

rosbags = pytest.importorskip("rosbags")

from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

from planner.data.loaders import (  # noqa: E402
    LogFormatError,
    NoEgoTrackError,
    detect_format,
    open_log_source,
)
from planner.data.loaders.rosbag import RosbagSource  # noqa: E402
from planner.types import EGO_CURV, EGO_SPEED, EGO_X, EGO_Y, EGO_YAW  # noqa: E402

SPEED, STRAIGHT_S, RADIUS, DURATION_S = 6.0, 4.0, 30.0, 10.0
T0_S = 1_700_000_000
H, W = 12, 20


def pose_at(t: float) -> tuple[float, float, float]:
    if t <= STRAIGHT_S:
        return SPEED * t, 0.0, 0.0
    psi = SPEED * (t - STRAIGHT_S) / RADIUS
    return SPEED * STRAIGHT_S + RADIUS * math.sin(psi), RADIUS * (1 - math.cos(psi)), psi


def write_bag(
    path,
    storage: StoragePlugin,
    *,
    odometry_topics=("/localization/odometry",),
    with_images: bool = True,
):
    ts = get_typestore(Stores.ROS2_HUMBLE)
    T = ts.types
    Time = T["builtin_interfaces/msg/Time"]
    Header = T["std_msgs/msg/Header"]

    def header(t: float, frame: str):
        sec = int(math.floor(t))
        return Header(
            stamp=Time(sec=T0_S + sec, nanosec=int(round((t - sec) * 1e9))), frame_id=frame
        )

    def odom(t: float):
        x, y, yaw = pose_at(t)
        Vector3 = T["geometry_msgs/msg/Vector3"]
        return T["nav_msgs/msg/Odometry"](
            header=header(t, "map"),
            child_frame_id="base_link",
            pose=T["geometry_msgs/msg/PoseWithCovariance"](
                pose=T["geometry_msgs/msg/Pose"](
                    position=T["geometry_msgs/msg/Point"](x=x, y=y, z=0.0),
                    orientation=T["geometry_msgs/msg/Quaternion"](
                        x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2)
                    ),
                ),
                covariance=np.zeros(36),
            ),
            twist=T["geometry_msgs/msg/TwistWithCovariance"](
                twist=T["geometry_msgs/msg/Twist"](
                    linear=Vector3(x=SPEED, y=0.0, z=0.0),
                    angular=Vector3(x=0.0, y=0.0, z=0.0 if t <= STRAIGHT_S else SPEED / RADIUS),
                ),
                covariance=np.zeros(36),
            ),
        )

    import cv2

    with Writer(path, version=9, storage_plugin=storage) as writer:
        odom_conns = [
            writer.add_connection(topic, "nav_msgs/msg/Odometry", typestore=ts)
            for topic in odometry_topics
        ]
        for k in range(int(DURATION_S * 20)):
            t = k / 20
            for conn in odom_conns:
                data = ts.serialize_cdr(odom(t), "nav_msgs/msg/Odometry")
                writer.write(conn, int((T0_S + t) * 1e9), data)
        if not with_images:
            return path
        jpeg = writer.add_connection(
            "/camera/front/image/compressed", "sensor_msgs/msg/CompressedImage", typestore=ts
        )
        raw = writer.add_connection("/camera/left/image_raw", "sensor_msgs/msg/Image", typestore=ts)
        for k in range(int(DURATION_S * 10)):
            t = 0.005 + k / 10
            rgb = np.zeros((H, W, 3), np.uint8)
            rgb[:] = (k, 50, 200)
            ok, enc = cv2.imencode(
                ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 100]
            )
            assert ok
            msg = T["sensor_msgs/msg/CompressedImage"](
                header=header(t, "cam"), format="jpeg", data=enc.reshape(-1)
            )
            writer.write(
                jpeg,
                int((T0_S + t) * 1e9),
                ts.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage"),
            )
            img = T["sensor_msgs/msg/Image"](
                header=header(t, "cam"),
                height=H,
                width=W,
                encoding="rgb8",
                is_bigendian=0,
                step=W * 3,
                data=rgb.reshape(-1),
            )
            writer.write(raw, int((T0_S + t) * 1e9), ts.serialize_cdr(img, "sensor_msgs/msg/Image"))
    return path


@pytest.mark.parametrize("storage", [StoragePlugin.MCAP, StoragePlugin.SQLITE3])
def test_odometry_and_cameras_from_a_bag(tmp_path, storage):
    bag = write_bag(tmp_path / "bag", storage)
    assert detect_format(bag) == "rosbag2"
    source = open_log_source(bag)
    assert isinstance(source, RosbagSource)
    rlog = next(source.resampled_logs())
    assert np.allclose(np.diff(rlog.t), 0.1, atol=1e-6)
    truth = np.array([pose_at(t - T0_S) for t in rlog.t])
    assert np.allclose(rlog.ego[:, [EGO_X, EGO_Y]], truth[:, :2], atol=1e-6)
    assert np.allclose(rlog.ego[:, EGO_YAW], truth[:, 2], atol=1e-6)
    assert np.allclose(rlog.ego[:, EGO_SPEED], SPEED)
    arc = rlog.t - T0_S > STRAIGHT_S + 0.2
    assert np.allclose(rlog.ego[arc, EGO_CURV], 1 / RADIUS, atol=1e-3)  # left turn: +curvature

    sample = rlog.sample_at(30)  # t0 = 3.0 s
    cams = sample.scene.cameras
    assert set(cams) == {"camera_front_image_compressed", "camera_left_image_raw"}
    for frames in cams.values():
        assert frames.shape == (4, H, W, 3) and frames.dtype == np.uint8
    # frames at 2.7 .. 3.0 s are frames 27 .. 30 (stamped 5 ms later): red = frame index
    assert cams["camera_left_image_raw"][:, 0, 0, 0].tolist() == [27, 28, 29, 30]
    assert (
        np.abs(
            cams["camera_front_image_compressed"][:, 0, 0, 0].astype(int) - [27, 28, 29, 30]
        ).max()
        <= 2
    )
    assert sample.scene.metadata["cameras"] == "real"
    assert sample.fully_valid


def test_bag_without_odometry_is_a_clear_error(tmp_path):
    bag = write_bag(tmp_path / "no_odom", StoragePlugin.MCAP, odometry_topics=())
    with pytest.raises(NoEgoTrackError, match="Odometry"):
        list(open_log_source(bag).samples())


def test_several_odometry_topics_need_the_config_key(tmp_path):
    bag = write_bag(
        tmp_path / "two",
        StoragePlugin.SQLITE3,
        odometry_topics=("/a/odom", "/b/odom"),
        with_images=False,
    )
    with pytest.raises(LogFormatError, match="rosbag.odometry_topic"):
        list(open_log_source(bag).samples())
    source = open_log_source(bag, overrides=["rosbag.odometry_topic=/b/odom"])
    rlog = next(source.resampled_logs())
    assert rlog.data.metadata["odometry_topic"] == "/b/odom"
    assert rlog.data.cameras == []
