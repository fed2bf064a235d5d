"""SensorRig: RGB pinhole cameras rendered from a Scene's vectors ("rendered from annotations").

The rig turns any vector world (simulator state, a log's object list and map) into the camera
tensor a learned planner reads: `render(scene, history) -> (N_cam, T, H, W, 3) uint8`, RGB,
frames oldest first at 10 Hz. It draws, far to near: sky and terrain, the road surface (the
drivable area and lane polygons), lane markings (dashed / solid / road edge), stop lines,
then traffic lights, stop signs, vehicles, pedestrians, cyclists, cones and static obstacles
as shaded 3D meshes in painter's order. No simulator is imported: numpy for geometry, OpenCV
for rasterisation (anti-aliased, supersampled, then area-downsampled).

Frames (docs/SENSORS.md):
- world / ego: REP-103 (x forward, y left, z up); the ego reference is the rear-axle centre
  on the ground (z = 0).
- camera mount: x, y, z, yaw, pitch, roll relative to the rear axle; positive pitch looks
  down (right-hand rotation about +y, which points left), positive yaw looks left.
- optical frame (for projection only): x right, y down, z along the view direction.

Polygons and segments are clipped against the near plane (z_optical >= near_plane_m) in 3D
before projection; without it a vertex behind the camera projects through the centre and
the polygon explodes across the image.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from planner.config import ConfigError, load_config
from planner.paths import config_path
from planner.taxonomy import AgentClass, LightState
from planner.types import (
    Agent,
    EgoState,
    InvalidInputError,
    Lane,
    MapData,
    Route,
    Scene,
    StopLine,
    TrafficLight,
)

log = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = config_path("sensors", "default.yaml")
BOUNDARY_KINDS = ("dashed", "solid", "road_edge", "none")
_SHIFT = 4  # OpenCV sub-pixel bits: coordinates are passed as round(value * 16)
_SHIFT_SCALE = float(1 << _SHIFT)
# Projected coordinates are clamped to this (in px) before the int32 conversion; only a vertex
# kilometres to the side yet just past the near plane reaches it.
_MAX_ABS_PX = float(2**26)
RGB = tuple[int, int, int]


# ---- configs ----------------------------------------------------------------------------------
@dataclass
class CameraConfig:
    """One pinhole camera. Intrinsics either from `fov_deg` (horizontal field of view, square
    pixels, principal point at the image centre) or from all of fx/fy/cx/cy (pixels, OpenCV
    convention: pixel centres at integer coordinates); set `fov_deg: null` to use the latter.
    Extrinsics relative to the ego rear-axle centre on the ground, REP-103."""

    name: str = "front_wide"
    width_px: int = 128
    height_px: int = 64
    fov_deg: float | None = 100.0
    fx_px: float | None = None
    fy_px: float | None = None
    cx_px: float | None = None
    cy_px: float | None = None
    x_m: float = 1.6
    y_m: float = 0.0
    z_m: float = 1.5
    yaw_deg: float = 0.0  # positive looks left
    pitch_deg: float = 5.0  # positive looks down
    roll_deg: float = 0.0

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("camera name must not be empty")
        if self.width_px < 8 or self.height_px < 8:
            raise ValueError(
                f"camera {self.name!r}: resolution {self.width_px}x{self.height_px} is too "
                "small; use at least 8x8 px"
            )
        explicit = (self.fx_px, self.fy_px, self.cx_px, self.cy_px)
        n_explicit = sum(v is not None for v in explicit)
        if self.fov_deg is not None:
            if n_explicit:
                raise ValueError(
                    f"camera {self.name!r}: give either fov_deg or fx_px/fy_px/cx_px/cy_px, "
                    "not both (set fov_deg: null to use explicit intrinsics)"
                )
            if not 1.0 <= self.fov_deg <= 170.0:
                raise ValueError(
                    f"camera {self.name!r}: fov_deg={self.fov_deg} is outside 1..170 degrees "
                    "(a pinhole model cannot show wider views)"
                )
        elif n_explicit != 4:
            raise ValueError(
                f"camera {self.name!r}: fov_deg is null, so fx_px, fy_px, cx_px and cy_px "
                "must all be set"
            )
        elif self.fx_px <= 0 or self.fy_px <= 0:  # type: ignore[operator]
            raise ValueError(f"camera {self.name!r}: focal lengths must be positive")

    def intrinsics(self) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) in output pixels."""
        if self.fov_deg is not None:
            fx = 0.5 * self.width_px / math.tan(math.radians(self.fov_deg) / 2.0)
            # principal point at the exact image centre in pixel-centre coordinates
            return fx, fx, (self.width_px - 1) / 2.0, (self.height_px - 1) / 2.0
        return float(self.fx_px), float(self.fy_px), float(self.cx_px), float(self.cy_px)  # type: ignore[arg-type]


def default_cameras() -> list[CameraConfig]:
    """Front wide (100 deg) plus front-left / front-right (90 deg, yawed 60 deg): together
    about 210 deg around the front, each 128 x 64 px (see docs/SENSORS.md for the tokens)."""
    return [
        CameraConfig(name="front_wide", fov_deg=100.0, x_m=1.6, z_m=1.5, pitch_deg=5.0),
        CameraConfig(
            name="front_left", fov_deg=90.0, x_m=1.4, y_m=0.8, z_m=1.5, yaw_deg=60.0, pitch_deg=5.0
        ),
        CameraConfig(
            name="front_right",
            fov_deg=90.0,
            x_m=1.4,
            y_m=-0.8,
            z_m=1.5,
            yaw_deg=-60.0,
            pitch_deg=5.0,
        ),
    ]


@dataclass
class RenderStyleConfig:
    """Colours (RGB 0..255), marking geometry and shading of the plain (not randomised) look."""

    sky_top_rgb: RGB = (92, 142, 214)
    sky_horizon_rgb: RGB = (190, 212, 236)
    terrain_rgb: RGB = (104, 124, 80)
    haze_distance_m: float = 250.0  # terrain fades to the horizon colour over this distance
    sky_gradient_deg: float = 35.0  # sky goes from horizon to top colour over this elevation
    road_rgb: RGB = (78, 78, 84)
    marking_rgb: RGB = (236, 236, 236)
    road_edge_rgb: RGB = (214, 206, 170)
    stop_line_rgb: RGB = (245, 245, 245)
    vehicle_rgb: RGB = (48, 96, 220)
    pedestrian_rgb: RGB = (255, 214, 0)
    cyclist_rgb: RGB = (214, 60, 214)
    static_obstacle_rgb: RGB = (150, 96, 52)
    cone_rgb: RGB = (255, 128, 0)
    light_red_rgb: RGB = (255, 24, 24)
    light_yellow_rgb: RGB = (255, 190, 0)
    light_green_rgb: RGB = (30, 230, 60)
    light_unknown_rgb: RGB = (200, 200, 200)
    light_housing_rgb: RGB = (30, 30, 30)
    pole_rgb: RGB = (90, 90, 90)
    stop_sign_rgb: RGB = (220, 20, 30)
    outline_factor: float = 0.55  # box edges drawn at this fraction of the face colour
    vehicle_front_tint: float = 1.3  # vehicle / cyclist front face colour factor
    vehicle_rear_tint: float = 0.75  # vehicle / cyclist rear face colour factor
    marking_width_m: float = 0.15
    road_edge_width_m: float = 0.25
    dash_length_m: float = 3.0
    dash_gap_m: float = 6.0
    stop_line_width_m: float = 0.5
    marking_segment_m: float = 4.0  # solid lines are cut into pieces this long
    marking_quad_min_px: float = 3.0  # pieces wider than this (render px) are drawn as quads
    light_height_m: float = 5.0  # bottom of the signal head above the ground
    # depth, width, height: larger than a real head (~0.35 x 0.35 x 1.0 m) so that its state
    # stays visible at 128 x 64 px
    light_head_size_m: tuple[float, float, float] = (0.4, 0.8, 1.6)
    light_offset_m: float = 1.5  # signal head beyond the stop line, along travel
    pole_width_m: float = 0.2
    stop_sign_height_m: float = 2.0
    stop_sign_size_m: float = 0.8
    ambient: float = 0.6  # shading = ambient + diffuse * max(0, n . sun)
    diffuse: float = 0.4
    sun_azimuth_deg: float = 135.0  # in the ego frame (0 = ahead, 90 = left)
    sun_elevation_deg: float = 50.0

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if name.endswith("_rgb") and not all(0 <= int(c) <= 255 for c in value):
                raise ValueError(f"{name}={value}: colour channels must lie in 0..255")
        if self.dash_length_m <= 0 or self.dash_gap_m < 0 or self.marking_segment_m <= 0:
            raise ValueError("dash_length_m and marking_segment_m must be > 0, dash_gap_m >= 0")


@dataclass
class RandomizationConfig:
    """Domain randomisation, drawn from a seeded generator: one appearance per `render` call
    (colours, light, exposure, camera pose, blur), pixel noise per frame."""

    enabled: bool = False
    seed: int = 0
    color_jitter: float = 0.2  # each colour channel scaled by U(1 - j, 1 + j)
    brightness_range: float = 0.3  # image scaled by U(1 - r, 1 + r)
    contrast_range: float = 0.25  # contrast about mid-grey scaled by U(1 - r, 1 + r)
    gamma_range: float = 0.25  # gamma drawn from U(1 - r, 1 + r)
    sun_random: bool = True  # random sun azimuth (0..360 deg), elevation and ambient share
    sun_elevation_range_deg: tuple[float, float] = (15.0, 75.0)
    ambient_range: tuple[float, float] = (0.4, 0.8)  # diffuse share = 1 - ambient
    pose_jitter_deg: float = 1.5  # std of camera yaw / pitch / roll jitter
    pose_jitter_m: float = 0.05  # std of camera x / y / z jitter
    noise_std_max: float = 8.0  # Gaussian pixel noise std drawn from U(0, max), uint8 units
    blur_probability: float = 0.4
    blur_sigma_min_px: float = 0.3  # Gaussian blur sigma drawn from U(min, max)
    blur_sigma_max_px: float = 1.0

    def __post_init__(self) -> None:
        for name in ("color_jitter", "brightness_range", "contrast_range", "gamma_range"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"randomization.{name}={getattr(self, name)} must be in [0, 1)")
        if not 0.0 <= self.blur_probability <= 1.0:
            raise ValueError("randomization.blur_probability must be in [0, 1]")
        if min(self.pose_jitter_deg, self.pose_jitter_m, self.noise_std_max) < 0:
            raise ValueError("randomization jitter and noise magnitudes must be >= 0")
        if not 0.0 < self.blur_sigma_min_px <= self.blur_sigma_max_px:
            raise ValueError("randomization needs 0 < blur_sigma_min_px <= blur_sigma_max_px")
        lo, hi = self.ambient_range
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"randomization.ambient_range={self.ambient_range}: need 0<=lo<=hi<=1")
        lo, hi = self.sun_elevation_range_deg
        if not 0.0 <= lo <= hi <= 90.0:
            raise ValueError(
                f"randomization.sun_elevation_range_deg={self.sun_elevation_range_deg}: "
                "need 0 <= lo <= hi <= 90"
            )


@dataclass
class SensorRigConfig:
    """The camera rig: cameras, past frames, rendering quality, style and randomisation."""

    cameras: list[CameraConfig] = field(default_factory=default_cameras)
    frames: int = 2  # frames per camera at 10 Hz (the current one and T - 1 past ones)
    supersample: int = 2  # render at this multiple of the resolution, then area-downsample
    near_plane_m: float = 0.2  # optical-axis depth below which geometry is clipped
    max_range_m: float = 150.0  # objects farther than this are not drawn (road is)
    cache_frames: int = 8  # rendered frames kept (by Scene identity) when not randomised
    patch_px: int = 16  # vision-encoder patch size, for `tokens()` only
    style: RenderStyleConfig = field(default_factory=RenderStyleConfig)
    randomization: RandomizationConfig = field(default_factory=RandomizationConfig)

    def __post_init__(self) -> None:
        if not self.cameras:
            raise ValueError("the rig needs at least one camera")
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique, got {names}")
        if self.frames < 1:
            raise ValueError(f"frames must be >= 1, got {self.frames}")
        if not 1 <= self.supersample <= 4:
            raise ValueError(f"supersample must be 1..4, got {self.supersample}")
        if self.near_plane_m <= 0 or self.max_range_m <= self.near_plane_m:
            raise ValueError("need 0 < near_plane_m < max_range_m")

    def tokens(self) -> int:
        """Vision tokens per sample: cameras x frames x (W / patch) x (H / patch)."""
        return sum(
            self.frames * (c.width_px // self.patch_px) * (c.height_px // self.patch_px)
            for c in self.cameras
        )


def load_sensor_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> SensorRigConfig:
    """The shipped defaults (configs/sensors/default.yaml when present), a YAML file, then
    `key.sub=value` overrides."""
    if path is None and DEFAULT_CONFIG_PATH.is_file():
        path = DEFAULT_CONFIG_PATH
    return load_config(SensorRigConfig, path, overrides)


# ---- small geometry helpers ----------------------------------------------------------------
def _rotation_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """(3, 3) REP-103 fixed-axis roll-pitch-yaw rotation, R = Rz(yaw) Ry(pitch) Rx(roll)."""
    cr, sr = math.cos(roll), math.sin(roll)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    return rz @ ry @ rx


# Columns are the optical axes (x right, y down, z forward) written in the body frame
# (x forward, y left, z up): p_body = _BODY_FROM_OPTICAL @ p_optical.
_BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def clip_polygon_near(points: np.ndarray, near: float) -> np.ndarray:
    """Clip a polygon (N, 3) in optical coordinates to z >= near (Sutherland-Hodgman against
    one plane, vectorised). Correct for concave polygons too (the clip region is convex);
    returns (M, 3), M = 0 when the polygon lies wholly behind the plane."""
    z = points[:, 2]
    inside = z >= near
    if inside.all():
        return points
    if not inside.any():
        return points[:0]
    # edge i runs from vertex i to vertex i + 1 (cyclic); it crosses when their sides differ
    crosses = np.flatnonzero(inside != np.concatenate([inside[1:], inside[:1]]))
    p0 = points[crosses]
    p1 = points[(crosses + 1) % len(points)]
    t = (near - p0[:, 2]) / (p1[:, 2] - p0[:, 2])
    hits = p0 + t[:, None] * (p1 - p0)
    # output order per edge i: vertex i if inside, then the crossing point if it crosses
    keys = np.concatenate([2 * np.flatnonzero(inside), 2 * crosses + 1])
    vertices = np.concatenate([points[inside], hits])
    return vertices[np.argsort(keys, kind="stable")]


def _clip_segments_near(a: np.ndarray, b: np.ndarray, near: float) -> tuple[np.ndarray, ...]:
    """Segments a[i] -> b[i] (K, 3) clipped to z >= near; drops those wholly behind."""
    za, zb = a[:, 2], b[:, 2]
    keep = (za >= near) | (zb >= near)
    a, b, za, zb = a[keep], b[keep], za[keep], zb[keep]
    a_out, b_out = za < near, zb < near
    if a_out.any() or b_out.any():
        t = np.where(a_out | b_out, (near - za) / np.where(zb != za, zb - za, 1.0), 0.0)
        hit = a + t[:, None] * (b - a)
        a = np.where(a_out[:, None], hit, a)
        b = np.where(b_out[:, None], hit, b)
    return a, b


def _resample_polyline(points: np.ndarray, stations: np.ndarray, arclength: np.ndarray):
    return np.stack(
        [
            np.interp(stations, arclength, points[:, 0]),
            np.interp(stations, arclength, points[:, 1]),
        ],
        axis=1,
    )


def _polyline_arclength(points: np.ndarray) -> np.ndarray:
    d = np.diff(points, axis=0)
    return np.concatenate([[0.0], np.cumsum(np.hypot(d[:, 0], d[:, 1]))])


# ---- solids ----------------------------------------------------------------------------------
# Every solid is a box with 8 corners: bottom ring (front-left, rear-left, rear-right,
# front-right), then the top ring; a cone is a box whose top ring collapses to the apex.
# Faces are quads, counter-clockwise seen from outside.
_BOX_FACES = np.array(
    [
        (4, 5, 6, 7),  # top
        (0, 4, 7, 3),  # front (+x)
        (1, 5, 4, 0),  # left (+y)
        (2, 6, 5, 1),  # rear (-x)
        (3, 7, 6, 2),  # right (-y)
    ]
)
FACE_TOP, FACE_FRONT, FACE_LEFT, FACE_REAR, FACE_RIGHT = range(5)
_CORNER_SIGNS = np.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])


@dataclass
class _Solids:
    """N convex solids (vectorised: one matmul per camera projects them all).

    vertices (N, 8, 3) world; normals (N, 5, 3) outward unit face normals; colors (N, 5, 3)
    shaded RGB; faces_on (N, 5) faces that exist (a cone has no top); centers (N, 2) ground
    position for painter's order."""

    vertices: np.ndarray
    normals: np.ndarray
    colors: np.ndarray
    faces_on: np.ndarray
    centers: np.ndarray

    def __len__(self) -> int:
        return len(self.vertices)


def _make_solids(
    params: np.ndarray,
    apex: np.ndarray,
    face_colors: np.ndarray,
    emissive: np.ndarray,
    sun_world: np.ndarray,
    ambient: float,
    diffuse: float,
) -> _Solids:
    """params (N, 7): cx, cy, z0, yaw, length, width, height; apex (N,) bool (cones);
    face_colors (N, 5, 3) base RGB; emissive (N, 5) faces that glow (lit lamps, unshaded)."""
    n = len(params)
    if n == 0:
        return _Solids(
            np.zeros((0, 8, 3)), np.zeros((0, 5, 3)), np.zeros((0, 5, 3)),
            np.zeros((0, 5), bool), np.zeros((0, 2)),
        )  # fmt: skip
    cx, cy, z0, yaw, length, width, height = params.T
    c, s = np.cos(yaw), np.sin(yaw)
    lx = _CORNER_SIGNS[None, :, 0] * (length / 2)[:, None]  # (N, 4)
    ly = _CORNER_SIGNS[None, :, 1] * (width / 2)[:, None]
    ring = np.stack([cx[:, None] + c[:, None] * lx - s[:, None] * ly,
                     cy[:, None] + s[:, None] * lx + c[:, None] * ly], axis=-1)  # fmt: skip
    verts = np.empty((n, 8, 3))
    verts[:, :4, :2] = ring
    verts[:, 4:, :2] = ring
    verts[apex, 4:, 0] = cx[apex, None]
    verts[apex, 4:, 1] = cy[apex, None]
    verts[:, :4, 2] = z0[:, None]
    verts[:, 4:, 2] = (z0 + height)[:, None]
    quads = verts[:, _BOX_FACES]  # (N, 5, 4, 3)
    normals = np.cross(quads[:, :, 2] - quads[:, :, 0], quads[:, :, 3] - quads[:, :, 1])
    norm = np.linalg.norm(normals, axis=-1, keepdims=True)
    normals = normals / np.maximum(norm, 1e-12)
    faces_on = norm[..., 0] > 1e-9
    shade = ambient + diffuse * np.clip(normals @ sun_world, 0.0, None)
    shade[emissive] = 1.0
    colors = np.clip(face_colors * shade[..., None], 0, 255)
    return _Solids(verts, normals, colors, faces_on, np.stack([cx, cy], axis=1))


# ---- appearance (plain or randomised) ------------------------------------------------------
_CLASS_STYLE_KEY = {
    AgentClass.VEHICLE: "vehicle_rgb",
    AgentClass.PEDESTRIAN: "pedestrian_rgb",
    AgentClass.CYCLIST: "cyclist_rgb",
    AgentClass.STATIC_OBSTACLE: "static_obstacle_rgb",
    AgentClass.CONE: "cone_rgb",
}
_LIGHT_STYLE_KEY = {
    LightState.RED: "light_red_rgb",
    LightState.YELLOW: "light_yellow_rgb",
    LightState.GREEN: "light_green_rgb",
    LightState.UNKNOWN: "light_unknown_rgb",
}


class _CameraModel:
    """A camera at render resolution (supersampled): intrinsics, mount, cached background."""

    def __init__(self, cfg: CameraConfig, scale: int, mount_jitter: np.ndarray | None = None):
        self.cfg = cfg
        self.scale = scale
        fx, fy, cx, cy = cfg.intrinsics()
        # output pixel centre u maps to render pixel centre scale * u + (scale - 1) / 2
        self.fx, self.fy = fx * scale, fy * scale
        self.cx, self.cy = cx * scale + (scale - 1) / 2.0, cy * scale + (scale - 1) / 2.0
        self.width, self.height = cfg.width_px * scale, cfg.height_px * scale
        jit = np.zeros(6) if mount_jitter is None else mount_jitter
        self.mount_xyz = np.array([cfg.x_m, cfg.y_m, cfg.z_m]) + jit[3:]
        r_mount = _rotation_rpy(
            math.radians(cfg.roll_deg) + jit[2],
            math.radians(cfg.pitch_deg) + jit[1],
            math.radians(cfg.yaw_deg) + jit[0],
        )
        self.ego_from_optical = r_mount @ _BODY_FROM_OPTICAL  # (3, 3)
        self._background: np.ndarray | None = None

    def world_to_optical(self, ego: EgoState) -> tuple[np.ndarray, np.ndarray]:
        """(M, t): p_optical = M @ p_world + t for this camera on the ego at `ego`."""
        c, s = math.cos(ego.yaw), math.sin(ego.yaw)
        world_from_ego = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        world_from_optical = world_from_ego @ self.ego_from_optical
        cam_world = np.array([ego.x, ego.y, 0.0]) + world_from_ego @ self.mount_xyz
        m = world_from_optical.T
        return m, -m @ cam_world

    def camera_position(self, ego: EgoState) -> np.ndarray:
        c, s = math.cos(ego.yaw), math.sin(ego.yaw)
        return np.array(
            [
                ego.x + c * self.mount_xyz[0] - s * self.mount_xyz[1],
                ego.y + s * self.mount_xyz[0] + c * self.mount_xyz[1],
                self.mount_xyz[2],
            ]
        )

    def background(self, colors: dict[str, np.ndarray], style: RenderStyleConfig) -> np.ndarray:
        """(H, W, 3) uint8 sky gradient above the horizon, hazy terrain below. Depends only
        on the mount and the colours (not the ego pose: the ground is flat), so it is
        computed once; a camera model belongs to one appearance, whose colours are fixed."""
        if self._background is not None:
            return self._background
        # Computed at output resolution (the gradient is smooth) and repeated to the render
        # resolution: area-downsampling then gives back exactly the output-resolution values.
        # The ray through pixel (u, v) is R @ ((u - cx) / fx, (v - cy) / fy, 1): each ego-frame
        # component is affine in u and v, so it is built from a row and a column (H, W).
        k = self.scale
        cols = k * np.arange(self.cfg.width_px) + (k - 1) / 2.0  # output pixel centres
        rows = k * np.arange(self.cfg.height_px) + (k - 1) / 2.0
        u = ((cols - self.cx) / self.fx).astype(np.float32)[None, :]
        v = ((rows - self.cy) / self.fy).astype(np.float32)[:, None]
        r = self.ego_from_optical.astype(np.float32)
        fwd = r[0, 0] * u + r[0, 1] * v + r[0, 2]
        left = r[1, 0] * u + r[1, 1] * v + r[1, 2]
        up = r[2, 0] * u + r[2, 1] * v + r[2, 2]
        horiz = np.sqrt(fwd * fwd + left * left)
        # sky: horizon colour at elevation 0 fading to the top colour at sky_gradient_deg
        tan_top = math.tan(math.radians(style.sky_gradient_deg))
        sky_mix = np.clip(up / np.maximum(horiz, 1e-6) / tan_top, 0, 1)
        # terrain: fades into the horizon colour with the ground distance along the ray
        dist = self.mount_xyz[2] * horiz / np.maximum(-up, 1e-6)
        haze = np.clip(dist / style.haze_distance_m, 0.0, 1.0)
        # one scalar per pixel, key in [-1, 1]: sky mix (>= 0) or minus the ground haze (< 0),
        # looked up in a 512-entry colour table (much cheaper than blending (H, W, 3) arrays)
        key_px = np.where(up >= 0, sky_mix, -haze)
        idx = np.rint((key_px + 1.0) * 255.5).astype(np.intp)
        key_t = np.arange(512, dtype=np.float64) / 255.5 - 1.0
        sky_mix_t, haze_t = np.clip(key_t, 0, 1)[:, None], np.clip(-key_t, 0, 1)[:, None]
        sky_t = (
            colors["sky_horizon_rgb"]
            + (colors["sky_top_rgb"] - colors["sky_horizon_rgb"]) * sky_mix_t
        )
        ground_t = (
            colors["terrain_rgb"] + (colors["sky_horizon_rgb"] - colors["terrain_rgb"]) * haze_t
        )
        table = np.clip(np.where(key_t[:, None] >= 0, sky_t, ground_t) + 0.5, 0, 255).astype(
            np.uint8
        )
        bg = table[idx]
        if k > 1:
            bg = cv2.resize(bg, (self.width, self.height), interpolation=cv2.INTER_NEAREST)
        self._background = bg
        return bg


@dataclass
class _Appearance:
    colors: dict[str, np.ndarray]  # style key -> (3,) float RGB
    sun_ego: np.ndarray  # (3,) unit vector towards the sun, ego frame
    ambient: float
    diffuse: float
    cameras: list[_CameraModel]
    lut: np.ndarray | None = None  # (256,) uint8 brightness / contrast / gamma table
    noise_std: float = 0.0
    blur_sigma_px: float = 0.0


def _sun_vector(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])


# ---- per-scene geometry (shared by all cameras of one frame) -------------------------------
@dataclass
class _SceneGeometry:
    road_polygons: list[np.ndarray]  # (N, 3) world, z = 0
    hole_polygons: list[np.ndarray]  # drivable-area holes, terrain colour
    marking_a: np.ndarray  # (K, 3) segment starts, world
    marking_b: np.ndarray  # (K, 3) segment ends
    marking_width_m: np.ndarray  # (K,)
    marking_side: np.ndarray  # (K, 3) half-width vector across each piece, world
    marking_color_key: list[str]  # per group
    marking_group: np.ndarray  # (K,) index into marking_color_key
    stop_line_polygons: list[np.ndarray]  # (4, 3)
    solids: _Solids
    poles_a: np.ndarray  # (P, 3) thin vertical / arm segments (poles), world
    poles_b: np.ndarray
    poles_center: np.ndarray  # (P, 3) for painter's order


def _boundary_segments(
    polyline: np.ndarray, kind: str, style: RenderStyleConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(K, 2) starts and ends of the painted pieces of one lane boundary."""
    s = _polyline_arclength(polyline)
    total = s[-1]
    if total <= 1e-6:
        return np.zeros((0, 2)), np.zeros((0, 2))
    if kind == "dashed":
        starts = np.arange(0.0, total, style.dash_length_m + style.dash_gap_m)
        ends = np.minimum(starts + style.dash_length_m, total)
    else:  # solid line or road edge, cut into short pieces (per-piece line width by depth)
        n = max(1, int(math.ceil(total / style.marking_segment_m)))
        cuts = np.linspace(0.0, total, n + 1)
        starts, ends = cuts[:-1], cuts[1:]
    return (
        _resample_polyline(polyline, starts, s),
        _resample_polyline(polyline, ends, s),
    )


def _distance_to_polyline(points: np.ndarray, p: np.ndarray) -> float:
    """Shortest distance (m) from point p (2,) to a polyline (N >= 2, 2)."""
    a, ab = points[:-1], np.diff(points, axis=0)
    u = np.clip(((p - a) * ab).sum(axis=1) / np.maximum((ab * ab).sum(axis=1), 1e-12), 0, 1)
    d = a + u[:, None] * ab - p
    return float(np.sqrt((d * d).sum(axis=1).min()))


def _to3d(xy: np.ndarray, z: float = 0.0) -> np.ndarray:
    out = np.empty((len(xy), 3))
    out[:, :2] = xy
    out[:, 2] = z
    return out


def _check_polyline(lane: Lane, name: str) -> np.ndarray:
    pts = np.asarray(getattr(lane, name), dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 2:
        raise InvalidInputError(
            f"lane {lane.id!r}: {name} must be an (N >= 2, 2) polyline, got shape {pts.shape}"
        )
    if not np.isfinite(pts).all():
        raise InvalidInputError(f"lane {lane.id!r}: {name} has non-finite points")
    return pts


def _light_placement(
    light: TrafficLight, map_data: MapData, ego: EgoState
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(stop-line endpoints (2, 2), travel direction (2,), midpoint (2,)) for a light, or None
    when the map says nowhere it stands."""
    line: StopLine | None = None
    if light.stop_line_id is not None:
        line = map_data.stop_lines.get(light.stop_line_id)
    if line is None:
        line = next((sl for sl in map_data.stop_lines.values() if sl.light_id == light.id), None)
    lane_ids = tuple(light.lane_ids) or (tuple(line.lane_ids) if line is not None else ())
    lanes = [map_data.lanes[i] for i in lane_ids if i in map_data.lanes]
    if line is not None:
        ends = np.asarray(line.points, dtype=np.float64).reshape(2, 2)
    elif lanes:
        # no stop line: across the end of the controlled lanes
        lefts = np.array([ln.left_boundary[-1] for ln in lanes])
        rights = np.array([ln.right_boundary[-1] for ln in lanes])
        pts = np.concatenate([lefts, rights])
        centre = pts.mean(axis=0)
        axis = rights[0] - lefts[0]
        axis = axis / max(np.linalg.norm(axis), 1e-9)
        proj = (pts - centre) @ axis
        ends = np.array([centre + proj.min() * axis, centre + proj.max() * axis])
    else:
        return None
    mid = ends.mean(axis=0)
    if lanes:
        cl = lanes[0].centerline
        i = int(np.argmin(((cl - mid) ** 2).sum(axis=1)))
        j = min(i + 1, len(cl) - 1)
        i = j - 1 if j > 0 else 0
        travel = cl[j] - cl[i]
    else:
        along = ends[1] - ends[0]
        travel = np.array([-along[1], along[0]])
        if travel @ (mid - np.array([ego.x, ego.y])) < 0:  # face the ego
            travel = -travel
    norm = np.linalg.norm(travel)
    if norm < 1e-9:
        return None
    return ends, travel / norm, mid


def _build_scene_geometry(
    scene: Scene,
    style: RenderStyleConfig,
    colors: dict[str, np.ndarray],
    sun_ego: np.ndarray,
    ambient: float,
    diffuse: float,
    max_range_m: float,
) -> _SceneGeometry:
    m = scene.map
    road: list[np.ndarray] = []
    holes: list[np.ndarray] = []
    if m.drivable_area is not None and not m.drivable_area.is_empty:
        geoms = getattr(m.drivable_area, "geoms", [m.drivable_area])
        for g in geoms:
            if g.geom_type != "Polygon" or g.is_empty:
                continue
            road.append(_to3d(np.asarray(g.exterior.coords)[:-1]))
            holes.extend(_to3d(np.asarray(r.coords)[:-1]) for r in g.interiors)

    seg_a, seg_b, seg_w, seg_g = [], [], [], []
    color_keys = ["marking_rgb", "road_edge_rgb"]
    seen: set[tuple] = set()
    ego_xy = np.array([scene.ego.x, scene.ego.y])
    for lane in m.lanes.values():
        left = _check_polyline(lane, "left_boundary")
        right = _check_polyline(lane, "right_boundary")
        kinds = (lane.left_boundary_kind, lane.right_boundary_kind)
        for kind in kinds:
            if kind not in BOUNDARY_KINDS:
                raise InvalidInputError(
                    f"lane {lane.id!r}: boundary kind {kind!r} is not one of {BOUNDARY_KINDS}; "
                    "fix the map adapter that built this lane"
                )
        # a lane wholly beyond the drawing range shows nothing but costs every camera time
        # (log maps hold hundreds of lanes)
        if min(_distance_to_polyline(left, ego_xy), _distance_to_polyline(right, ego_xy)) > (
            max_range_m
        ):
            continue
        road.append(_to3d(np.concatenate([left, right[::-1]])))
        for poly, kind in zip((left, right), kinds):
            if kind == "none":
                continue
            # a boundary shared by two lanes is drawn once (either direction of travel)
            ends = tuple(sorted([tuple(np.round(poly[0], 1)), tuple(np.round(poly[-1], 1))]))
            key = (kind, ends, len(poly))
            if key in seen:
                continue
            seen.add(key)
            a, b = _boundary_segments(poly, kind, style)
            edge = kind == "road_edge"
            seg_a.append(a)
            seg_b.append(b)
            seg_w.append(
                np.full(len(a), style.road_edge_width_m if edge else style.marking_width_m)
            )
            seg_g.append(np.full(len(a), 1 if edge else 0))

    stop_polys = []
    half = style.stop_line_width_m / 2.0
    for sl in m.stop_lines.values():
        p = np.asarray(sl.points, dtype=np.float64).reshape(2, 2)
        along = p[1] - p[0]
        n = np.linalg.norm(along)
        if n < 1e-6:
            continue
        normal = np.array([-along[1], along[0]]) / n * half
        stop_polys.append(
            _to3d(np.array([p[0] + normal, p[1] + normal, p[1] - normal, p[0] - normal]))
        )

    c, s = math.cos(scene.ego.yaw), math.sin(scene.ego.yaw)
    sun_world = np.array(
        [c * sun_ego[0] - s * sun_ego[1], s * sun_ego[0] + c * sun_ego[1], sun_ego[2]]
    )

    # solids: one row of (cx, cy, z0, yaw, length, width, height) each
    params, apex, face_rgb, glow = [], [], [], []
    for agent in scene.agents:
        _check_agent(agent)
        cls = AgentClass.parse(agent.agent_class)
        params.append((agent.x, agent.y, 0.0, agent.yaw, agent.length, agent.width, agent.height))
        apex.append(cls == AgentClass.CONE)
        rgb = np.repeat(colors[_CLASS_STYLE_KEY[cls]][None, :], 5, axis=0)
        if cls in (AgentClass.VEHICLE, AgentClass.CYCLIST):
            # a heading cue: lighter front, darker rear (oncoming vs same-direction traffic)
            rgb[FACE_FRONT] *= style.vehicle_front_tint
            rgb[FACE_REAR] *= style.vehicle_rear_tint
        face_rgb.append(rgb)
        glow.append(np.zeros(5, bool))

    poles_a, poles_b = [], []
    for light in scene.traffic_lights:
        placed = _light_placement(light, m, scene.ego)
        if placed is None:
            log.debug("traffic light %s has no stop line or lanes: not drawn", light.id)
            continue
        ends, travel, mid = placed
        right = np.array([travel[1], -travel[0]])
        depth, width, height = style.light_head_size_m
        head_xy = mid + style.light_offset_m * travel
        heading = math.atan2(travel[1], travel[0])
        params.append((head_xy[0], head_xy[1], style.light_height_m, heading, depth, width, height))
        apex.append(False)
        rgb = np.repeat(colors["light_housing_rgb"][None, :], 5, axis=0)
        # the rear face (local -x) looks back along travel, at the approaching traffic
        rgb[FACE_REAR] = colors[_LIGHT_STYLE_KEY[LightState.parse(light.state)]]
        face_rgb.append(rgb)
        lit = np.zeros(5, bool)
        lit[FACE_REAR] = True
        glow.append(lit)
        # pole at the right end of the stop line and an arm over to the head
        pole_xy = (
            ends[int(np.argmax((ends - mid) @ right))] + 0.5 * right + style.light_offset_m * travel
        )
        top = style.light_height_m + height * 0.8
        poles_a += [(*pole_xy, 0.0), (*pole_xy, top)]
        poles_b += [(*pole_xy, top), (*head_xy, top)]

    for sl in m.stop_lines.values():
        if not sl.is_stop_sign:
            continue
        placed = _light_placement(
            TrafficLight(id=f"sign:{sl.id}", state=LightState.UNKNOWN, stop_line_id=sl.id),
            m,
            scene.ego,
        )
        if placed is None:
            continue
        ends, travel, mid = placed
        right = np.array([travel[1], -travel[0]])
        post = ends[int(np.argmax((ends - mid) @ right))] + 0.8 * right
        size = style.stop_sign_size_m
        heading = math.atan2(travel[1], travel[0])
        params.append((post[0], post[1], style.stop_sign_height_m, heading, 0.05, size, size))
        apex.append(False)
        face_rgb.append(np.repeat(colors["stop_sign_rgb"][None, :], 5, axis=0))
        glow.append(np.zeros(5, bool))
        poles_a.append((*post, 0.0))
        poles_b.append((*post, style.stop_sign_height_m))

    # shading is fixed per frame: the sun does not move with the camera
    solids = _make_solids(
        np.array(params, dtype=np.float64).reshape(-1, 7),
        np.array(apex, dtype=bool),
        np.array(face_rgb, dtype=np.float64).reshape(-1, 5, 3),
        np.array(glow, dtype=bool).reshape(-1, 5),
        sun_world,
        ambient,
        diffuse,
    )

    pa = np.array(poles_a, dtype=np.float64).reshape(-1, 3)
    pb = np.array(poles_b, dtype=np.float64).reshape(-1, 3)

    def cat(parts: list[np.ndarray], width: int) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros((0, width))

    a2, b2 = cat(seg_a, 2), cat(seg_b, 2)
    widths = cat(seg_w, 1).reshape(-1) if seg_w else np.zeros(0)
    along = b2 - a2
    across = np.stack([-along[:, 1], along[:, 0]], axis=1)
    across /= np.maximum(np.linalg.norm(across, axis=1, keepdims=True), 1e-9)
    side = _to3d(across * (widths / 2.0)[:, None])
    return _SceneGeometry(
        road_polygons=road,
        hole_polygons=holes,
        marking_a=_to3d(a2),
        marking_b=_to3d(b2),
        marking_width_m=widths,
        marking_side=side,
        marking_color_key=color_keys,
        marking_group=cat(seg_g, 1).reshape(-1).astype(int) if seg_g else np.zeros(0, int),
        stop_line_polygons=stop_polys,
        solids=solids,
        poles_a=pa,
        poles_b=pb,
        poles_center=0.5 * (pa + pb),
    )


def _check_agent(agent: Agent) -> None:
    vals = (agent.x, agent.y, agent.yaw, agent.length, agent.width, agent.height)
    if not all(math.isfinite(v) for v in vals):
        raise InvalidInputError(
            f"agent {agent.id!r} has a non-finite pose or size {vals}: drop it in the adapter"
        )
    if min(agent.length, agent.width, agent.height) <= 0:
        raise InvalidInputError(
            f"agent {agent.id!r} has a non-positive size (length={agent.length}, "
            f"width={agent.width}, height={agent.height})"
        )


# ---- the rig -------------------------------------------------------------------------------
class SensorRig:
    """Renders the configured cameras from a Scene (satisfies planner.features.CameraRenderer).

    `render(scene, history)` -> (N_cam, T, H, W, 3) uint8 RGB, T = config.frames, oldest frame
    first; `history` holds the previous Scenes (10 Hz, oldest first); when it has fewer than
    T - 1, the oldest available frame is repeated. Randomised renders draw one appearance per
    call from the rig's seeded generator (or from `seed=` when given), so a fixed sequence of
    calls, or a fixed per-call seed, reproduces the same pixels."""

    def __init__(self, config: SensorRigConfig | None = None):
        self.config = config if config is not None else SensorRigConfig()
        cams = self.config.cameras
        self.camera_names: tuple[str, ...] = tuple(c.name for c in cams)
        self._plain = self._make_appearance(None)
        self._rng = np.random.default_rng(self.config.randomization.seed)
        self._cache: OrderedDict[int, tuple[Scene, np.ndarray]] = OrderedDict()
        shapes = {(c.height_px, c.width_px) for c in cams}
        if len(shapes) != 1:
            raise ConfigError(
                f"all cameras must share one resolution to stack into (N_cam, T, H, W, 3); "
                f"got {sorted(shapes)}"
            )
        self.height_px, self.width_px = shapes.pop()

    @classmethod
    def from_config(
        cls, path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
    ) -> SensorRig:
        return cls(load_sensor_config(path, overrides))

    # -- public API ---------------------------------------------------------------------------
    def render(
        self, scene: Scene, history: list[Scene] | None = None, *, seed: int | None = None
    ) -> np.ndarray:
        """(N_cam, T, H, W, 3) uint8: every camera at the current and T - 1 past frames."""
        if not isinstance(scene, Scene):
            raise InvalidInputError(f"SensorRig.render needs a Scene, got {type(scene).__name__}")
        frames = self._frame_scenes(scene, history)
        rnd = self.config.randomization
        out = np.empty(
            (len(self.camera_names), len(frames), self.height_px, self.width_px, 3), np.uint8
        )
        if seed is not None and (not isinstance(seed, (int, np.integer)) or seed < 0):
            raise InvalidInputError(f"SensorRig.render seed must be an int >= 0, got {seed!r}")
        if rnd.enabled:
            rng = np.random.default_rng([rnd.seed, seed]) if seed is not None else self._rng
            look = self._make_appearance(rng)
            for t, frame in enumerate(frames):
                out[:, t] = self._finish(self._render_scene(frame, look), look, rng)
            return out
        for t, frame in enumerate(frames):
            out[:, t] = self._cached_frame(frame)
        return out

    def render_frame(self, scene: Scene) -> np.ndarray:
        """(N_cam, H, W, 3) uint8: every camera at this one instant, plain appearance
        (randomised when enabled, drawing from the rig's generator)."""
        rnd = self.config.randomization
        if rnd.enabled:
            look = self._make_appearance(self._rng)
            return self._finish(self._render_scene(scene, look), look, self._rng)
        return self._finish(self._render_scene(scene, self._plain), self._plain, None)

    def project(
        self, scene: Scene, points_world: np.ndarray, camera: str | int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Project world points (N, 3) into a camera (plain mount) at the scene's ego pose:
        (N, 2) output-pixel coordinates (u right, v down) and an (N,) mask of points in front
        of the camera and inside the image."""
        idx = self.camera_names.index(camera) if isinstance(camera, str) else int(camera)
        cam = self._plain.cameras[idx]
        m, t = cam.world_to_optical(scene.ego)
        p = np.asarray(points_world, dtype=np.float64).reshape(-1, 3) @ m.T + t
        z = p[:, 2]
        safe = np.where(z > 1e-9, z, 1.0)
        u = (cam.fx * p[:, 0] / safe + cam.cx - (cam.scale - 1) / 2.0) / cam.scale
        v = (cam.fy * p[:, 1] / safe + cam.cy - (cam.scale - 1) / 2.0) / cam.scale
        inside = (
            (z > self.config.near_plane_m)
            & (u >= -0.5)
            & (u <= cam.cfg.width_px - 0.5)
            & (v >= -0.5)
            & (v <= cam.cfg.height_px - 0.5)
        )
        return np.stack([u, v], axis=1), inside

    # -- frames and cache ---------------------------------------------------------------------
    def _frame_scenes(self, scene: Scene, history: list[Scene] | None) -> list[Scene]:
        past = list(history or [])
        for i, h in enumerate(past):
            if not isinstance(h, Scene):
                raise InvalidInputError(
                    f"SensorRig.render history[{i}] is a {type(h).__name__}, not a Scene: pass "
                    "the previous Scenes, oldest first"
                )
        need = self.config.frames - 1
        past = past[-need:] if need > 0 else []
        oldest = past[0] if past else scene
        return [oldest] * (need - len(past)) + past + [scene]

    def _cached_frame(self, scene: Scene) -> np.ndarray:
        """Plain frames are a pure function of the Scene: in closed loop each frame is
        rendered once and reused as history T - 1 times. Keyed by identity; the entry holds
        the Scene so its id cannot be reused while cached (Scenes are not mutated in place)."""
        key = id(scene)
        hit = self._cache.get(key)
        if hit is not None and hit[0] is scene:
            self._cache.move_to_end(key)
            return hit[1]
        images = self._finish(self._render_scene(scene, self._plain), self._plain, None)
        if self.config.cache_frames > 0:
            self._cache[key] = (scene, images)
            while len(self._cache) > self.config.cache_frames:
                self._cache.popitem(last=False)
        return images

    # -- appearance -----------------------------------------------------------------------------
    def _make_appearance(self, rng: np.random.Generator | None) -> _Appearance:
        style = self.config.style
        rnd = self.config.randomization
        colors = {
            k: np.asarray(v, dtype=np.float64) for k, v in vars(style).items() if k.endswith("_rgb")
        }
        az, el, ambient = style.sun_azimuth_deg, style.sun_elevation_deg, style.ambient
        diffuse = style.diffuse
        if rng is None:
            cams = [_CameraModel(c, self.config.supersample) for c in self.config.cameras]
            return _Appearance(colors, _sun_vector(az, el), ambient, diffuse, cams)
        j = rnd.color_jitter
        for k in list(colors):
            colors[k] = np.clip(colors[k] * rng.uniform(1 - j, 1 + j, 3), 0, 255)
        if rnd.sun_random:
            az = rng.uniform(0.0, 360.0)
            el = rng.uniform(*rnd.sun_elevation_range_deg)
            ambient = rng.uniform(*rnd.ambient_range)
            diffuse = 1.0 - ambient
        cams = []
        for c in self.config.cameras:
            jit = np.concatenate(
                [
                    rng.normal(0.0, math.radians(rnd.pose_jitter_deg), 3),
                    rng.normal(0.0, rnd.pose_jitter_m, 3),
                ]
            )
            cams.append(_CameraModel(c, self.config.supersample, jit))
        brightness = rng.uniform(1 - rnd.brightness_range, 1 + rnd.brightness_range)
        contrast = rng.uniform(1 - rnd.contrast_range, 1 + rnd.contrast_range)
        gamma = rng.uniform(1 - rnd.gamma_range, 1 + rnd.gamma_range)
        x = np.arange(256, dtype=np.float64) / 255.0
        y = ((x - 0.5) * contrast + 0.5) * brightness
        lut = (np.clip(y, 0.0, 1.0) ** gamma * 255.0 + 0.5).astype(np.uint8)
        noise = rng.uniform(0.0, rnd.noise_std_max)
        blur = (
            rng.uniform(rnd.blur_sigma_min_px, rnd.blur_sigma_max_px)
            if rng.uniform() < rnd.blur_probability
            else 0.0
        )
        return _Appearance(colors, _sun_vector(az, el), ambient, diffuse, cams, lut, noise, blur)

    def _finish(
        self, images: np.ndarray, look: _Appearance, rng: np.random.Generator | None
    ) -> np.ndarray:
        """Camera effects on (N_cam, H, W, 3) uint8: blur, exposure / gamma, pixel noise."""
        if look.blur_sigma_px > 0:
            for i in range(len(images)):
                cv2.GaussianBlur(images[i], (0, 0), look.blur_sigma_px, dst=images[i])
        if look.lut is not None:
            images = cv2.LUT(images, look.lut)
        if rng is not None and look.noise_std > 0:
            noise = rng.standard_normal(images.shape, dtype=np.float32) * look.noise_std
            noisy = images.astype(np.float32) + noise
            images = np.clip(noisy, 0, 255, out=noisy).astype(np.uint8)
        return images

    # -- rasterisation --------------------------------------------------------------------------
    def _render_scene(self, scene: Scene, look: _Appearance) -> np.ndarray:
        """(N_cam, H, W, 3) uint8 of one instant."""
        geo = _build_scene_geometry(
            scene,
            self.config.style,
            look.colors,
            look.sun_ego,
            look.ambient,
            look.diffuse,
            self.config.max_range_m,
        )
        out = np.empty((len(look.cameras), self.height_px, self.width_px, 3), np.uint8)
        for i, cam in enumerate(look.cameras):
            img = self._draw_camera(scene.ego, cam, geo, look)
            if cam.scale > 1:
                out[i] = cv2.resize(
                    img, (self.width_px, self.height_px), interpolation=cv2.INTER_AREA
                )
            else:
                out[i] = img
        return out

    def _draw_camera(
        self, ego: EgoState, cam: _CameraModel, geo: _SceneGeometry, look: _Appearance
    ) -> np.ndarray:
        cfg = self.config
        near, colors = cfg.near_plane_m, look.colors
        img = cam.background(colors, cfg.style).copy()
        m, t = cam.world_to_optical(ego)
        aa = cv2.LINE_AA

        def to_px(p: np.ndarray) -> np.ndarray:
            """(N, 3) optical, z >= near -> (N, 2) int32 fixed-point pixels."""
            uv = np.empty((len(p), 2))
            uv[:, 0] = cam.fx * p[:, 0] / p[:, 2] + cam.cx
            uv[:, 1] = cam.fy * p[:, 1] / p[:, 2] + cam.cy
            if np.abs(uv).max() > _MAX_ABS_PX:
                np.clip(uv, -_MAX_ABS_PX, _MAX_ABS_PX, out=uv)
            return np.rint(uv * _SHIFT_SCALE).astype(np.int32)

        def project_px(p: np.ndarray) -> np.ndarray:
            """(..., 3) optical -> (..., 2) int32 fixed-point pixels; only entries with
            z >= near are meaningful (the others are computed with z = 1 and ignored)."""
            z = p[..., 2]
            z = np.where(z >= near, z, 1.0)
            uv = np.stack([cam.fx * p[..., 0] / z + cam.cx, cam.fy * p[..., 1] / z + cam.cy], -1)
            np.clip(uv, -_MAX_ABS_PX, _MAX_ABS_PX, out=uv)
            return np.rint(uv * _SHIFT_SCALE).astype(np.int32)

        def fill(polys: list[np.ndarray], color: np.ndarray) -> None:
            pts = []
            for poly in polys:
                clipped = clip_polygon_near(poly @ m.T + t, near)
                if len(clipped) >= 3:
                    pts.append(to_px(clipped))
            # one call per polygon: cv2.fillPoly XORs overlapping polygons of one call
            for p in pts:
                cv2.fillPoly(img, [p], color.tolist(), aa, _SHIFT)

        fill(geo.road_polygons, colors["road_rgb"])
        fill(geo.hole_polygons, colors["terrain_rgb"])

        # lane markings and road edges: near pieces as true-width ground quads (exact
        # perspective), far pieces as anti-aliased lines at least 1 output pixel wide
        if len(geo.marking_a):
            a = geo.marking_a @ m.T + t
            b = geo.marking_b @ m.T + t
            za, zb = a[:, 2], b[:, 2]
            keep = ((za >= near) | (zb >= near)) & (np.minimum(za, zb) < cfg.max_range_m)
            nearer = np.maximum(np.minimum(za, zb), near)
            as_quad = keep & (
                cam.fx * geo.marking_width_m / nearer >= cfg.style.marking_quad_min_px
            )
            as_line = keep & ~as_quad
            if as_quad.any():
                wa, wb = geo.marking_a[as_quad], geo.marking_b[as_quad]
                side = geo.marking_side[as_quad]
                quads = np.stack([wa + side, wb + side, wb - side, wa - side], axis=1)
                quads = quads @ m.T + t  # (K, 4, 3) optical
                quad_px = project_px(quads)
                in_front = quads[..., 2].min(axis=1) >= near
                quad_rgb = [colors[geo.marking_color_key[g]].tolist() for g in (0, 1)]
                for k, g in enumerate(geo.marking_group[as_quad]):
                    if in_front[k]:
                        cv2.fillConvexPoly(img, quad_px[k], quad_rgb[g], aa, _SHIFT)
                    else:
                        poly = clip_polygon_near(quads[k], near)
                        if len(poly) >= 3:
                            cv2.fillConvexPoly(img, to_px(poly), quad_rgb[g], aa, _SHIFT)
            if as_line.any():
                la, lb = _clip_segments_near(a[as_line], b[as_line], near)
                self._draw_segments(
                    img,
                    cam,
                    la,
                    lb,
                    geo.marking_width_m[as_line],
                    geo.marking_group[as_line],
                    geo.marking_color_key,
                    colors,
                    to_px,
                )

        fill(geo.stop_line_polygons, colors["stop_line_rgb"])

        # solids and poles far to near (painter's algorithm), by ground distance to the camera
        cam_pos = cam.camera_position(ego)
        items: list[tuple[float, int, int]] = []
        sol = geo.solids
        if len(sol):
            v = (sol.vertices.reshape(-1, 3) @ m.T + t).reshape(-1, 8, 3)  # (N, 8, 3) optical
            z = v[..., 2]
            corner_px = project_px(v)  # (N, 8, 2), meaningful where z >= near
            u_px = corner_px[..., 0] / _SHIFT_SCALE
            v_px = corner_px[..., 1] / _SHIFT_SCALE
            w, h = cam.width, cam.height
            offscreen = (z.min(axis=1) >= near) & (
                (u_px.max(axis=1) < 0)
                | (u_px.min(axis=1) > w)
                | (v_px.max(axis=1) < 0)
                | (v_px.min(axis=1) > h)
            )
            dist = np.hypot(*(sol.centers - cam_pos[:2]).T)
            draw = (z.max(axis=1) >= near) & ~offscreen & (dist <= cfg.max_range_m)
            # back-face culling: a face shows when the camera is on its outer side
            to_cam = cam_pos - sol.vertices[:, _BOX_FACES[:, 0]]  # (N, 5, 3)
            visible = sol.faces_on & ((sol.normals * to_cam).sum(axis=-1) > 0)
            face_in_front = z[:, _BOX_FACES].min(axis=-1) >= near  # (N, 5)
            face_rgb = sol.colors.tolist()
            edge_rgb = (sol.colors * cfg.style.outline_factor).tolist()
            items += [(float(dist[k]), 0, int(k)) for k in np.flatnonzero(draw)]
        if len(geo.poles_a):
            pole_dist = np.hypot(*(geo.poles_center[:, :2] - cam_pos[:2]).T)
            items += [(float(d), 1, k) for k, d in enumerate(pole_dist) if d <= cfg.max_range_m]
        items.sort(reverse=True)
        for _, kind, k in items:
            if kind == 1:
                a, b = _clip_segments_near(
                    (geo.poles_a[k : k + 1] @ m.T) + t, (geo.poles_b[k : k + 1] @ m.T) + t, near
                )
                self._draw_segments(
                    img,
                    cam,
                    a,
                    b,
                    np.array([cfg.style.pole_width_m]),
                    np.zeros(1, int),
                    ["pole_rgb"],
                    colors,
                    to_px,
                )
                continue
            for f in np.flatnonzero(visible[k]):
                face = _BOX_FACES[f]
                if face_in_front[k, f]:
                    px = corner_px[k, face]
                else:
                    poly = clip_polygon_near(v[k, face], near)
                    if len(poly) < 3:
                        continue
                    px = to_px(poly)
                cv2.fillConvexPoly(img, px, face_rgb[k][f], aa, _SHIFT)
                cv2.polylines(img, [px], True, edge_rgb[k][f], 1, aa, _SHIFT)
        return img

    @staticmethod
    def _draw_segments(
        img: np.ndarray,
        cam: _CameraModel,
        a: np.ndarray,
        b: np.ndarray,
        width_m: np.ndarray,
        group: np.ndarray,
        color_keys: list[str],
        colors: dict[str, np.ndarray],
        to_px,
    ) -> None:
        """Draw clipped optical segments a -> b (K, 3) as anti-aliased lines whose thickness is
        the true width at the nearer end (at least 1 output pixel)."""
        if not len(a):
            return
        pa, pb = to_px(a), to_px(b)
        depth = np.minimum(a[:, 2], b[:, 2])
        # at least one output pixel wide, so far markings survive the area-downsampling
        thick = np.clip(np.rint(cam.fx * width_m / depth), cam.scale, 64).astype(int)
        w16, h16 = cam.width * _SHIFT_SCALE, cam.height * _SHIFT_SCALE
        onscreen = ~(
            ((pa[:, 0] < 0) & (pb[:, 0] < 0))
            | ((pa[:, 0] > w16) & (pb[:, 0] > w16))
            | ((pa[:, 1] < 0) & (pb[:, 1] < 0))
            | ((pa[:, 1] > h16) & (pb[:, 1] > h16))
        )
        lines = np.stack([pa, pb], axis=1)  # (K, 2, 2)
        for g in np.unique(group[onscreen]):
            color = colors[color_keys[g]].tolist()
            sel = onscreen & (group == g)
            for th in np.unique(thick[sel]):
                pick = lines[sel & (thick == th)]
                cv2.polylines(img, list(pick), False, color, int(th), cv2.LINE_AA, _SHIFT)


# ---- an example scene and strips (docs/images, the benchmark) --------------------------------
def example_scene(t_s: float = 0.0, light_state: LightState = LightState.RED) -> Scene:
    """A representative generated scene at time `t_s`: a three-lane road (plus one oncoming
    lane) that bends left after 60 m, a signalised stop line 45 m ahead of the start, 21
    agents (queued and moving vehicles, oncoming traffic, pedestrians, a cyclist, cones and a
    static obstacle). Agents move at constant speed along their lanes, so consecutive times
    give consistent history frames."""
    lane_w = 3.6
    radius = 250.0
    straight = 60.0

    def ref(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reference line (ego lane centre): straight to s = 60 m, then a left arc."""
        s = np.asarray(s, dtype=np.float64)
        arc = np.clip(s - straight, 0.0, None) / radius
        x = np.where(s < straight, s, straight + radius * np.sin(arc))
        y = np.where(s < straight, 0.0, radius * (1 - np.cos(arc)))
        return np.stack([x, y], axis=-1), arc

    def pose(s: float, offset: float) -> tuple[float, float, float]:
        xy, heading = ref(np.array([s]))
        h = float(heading[0])
        return (
            float(xy[0, 0] - offset * math.sin(h)),
            float(xy[0, 1] + offset * math.cos(h)),
            h,
        )

    s = np.arange(-60.0, 301.0, 2.0)
    xy, heading = ref(s)
    normal = np.stack([-np.sin(heading), np.cos(heading)], axis=1)

    def line(offset: float) -> np.ndarray:
        return xy + offset * normal

    lanes: dict[str, Lane] = {}
    # lane offsets from the ego lane centre: right (-1), ego (0), left (+1), oncoming (+2)
    kinds = {
        -1: ("dashed", "road_edge"),
        0: ("dashed", "dashed"),
        1: ("solid", "dashed"),
    }
    for k, (lk, rk) in kinds.items():
        c = k * lane_w
        lanes[f"lane_{k + 1}"] = Lane(
            id=f"lane_{k + 1}",
            centerline=line(c),
            left_boundary=line(c + lane_w / 2),
            right_boundary=line(c - lane_w / 2),
            speed_limit_mps=13.9,
            left_boundary_kind=lk,
            right_boundary_kind=rk,
        )
    c = 2 * lane_w
    lanes["oncoming"] = Lane(
        id="oncoming",
        centerline=line(c)[::-1],
        left_boundary=line(c + lane_w / 2)[::-1],
        right_boundary=line(c - lane_w / 2)[::-1],
        speed_limit_mps=13.9,
        left_boundary_kind="road_edge",
        right_boundary_kind="solid",
    )
    stop_s = 45.0
    sl_xy = np.array([pose(stop_s, -1.5 * lane_w)[:2], pose(stop_s, 1.5 * lane_w)[:2]])
    stop_lines = {
        "stop_0": StopLine(
            id="stop_0",
            points=sl_xy,
            lane_ids=("lane_0", "lane_1", "lane_2"),
            light_id="light_0",
        )
    }
    lights = [
        TrafficLight(
            id="light_0",
            state=light_state,
            stop_line_id="stop_0",
            lane_ids=("lane_1",),
        )
    ]

    ego_speed = 6.0
    ego_s = ego_speed * t_s
    ex, ey, eyaw = pose(ego_s, 0.0)
    ego = EgoState(t=t_s, x=ex, y=ey, yaw=eyaw, speed=ego_speed)
    hist = []
    for k in range(15, -1, -1):
        tk = t_s - 0.1 * k
        hx, hy, hyaw = pose(ego_speed * tk, 0.0)
        hist.append((tk, hx, hy, hyaw, ego_speed, 0.0, 0.0))

    # (id, class, s at t = 0, lane offset in lane widths, speed along s, length, width, height)
    spec = [
        ("queue_0", AgentClass.VEHICLE, 40.0, 0.0, 0.0, 4.6, 1.9, 1.5),
        ("queue_1", AgentClass.VEHICLE, 32.0, 0.0, 0.0, 4.4, 1.8, 1.6),
        ("queue_2", AgentClass.VEHICLE, 41.0, 1.0, 0.0, 5.0, 2.0, 1.9),
        ("truck", AgentClass.VEHICLE, 30.0, 1.0, 0.0, 9.0, 2.5, 3.2),
        ("right_0", AgentClass.VEHICLE, 20.0, -1.0, 5.0, 4.5, 1.9, 1.5),
        ("right_1", AgentClass.VEHICLE, 38.0, -1.0, 0.0, 4.5, 1.9, 1.5),
        ("behind_0", AgentClass.VEHICLE, -14.0, 0.0, 6.0, 4.5, 1.9, 1.5),
        ("left_0", AgentClass.VEHICLE, 14.0, 1.0, 6.5, 4.7, 1.9, 1.5),
        ("parked_0", AgentClass.VEHICLE, 17.0, -1.9, 0.0, 4.5, 1.9, 1.5),
        ("far_0", AgentClass.VEHICLE, 110.0, 0.0, 9.0, 4.5, 1.9, 1.5),
        ("far_1", AgentClass.VEHICLE, 95.0, 1.0, 9.0, 4.5, 1.9, 1.5),
        ("oncoming_0", AgentClass.VEHICLE, 60.0, 2.0, -10.0, 4.5, 1.9, 1.5),
        ("oncoming_1", AgentClass.VEHICLE, 20.0, 2.0, -10.0, 4.8, 1.9, 1.6),
        ("oncoming_2", AgentClass.VEHICLE, 140.0, 2.0, -10.0, 4.5, 1.9, 1.5),
        ("ped_0", AgentClass.PEDESTRIAN, 47.0, -1.2, 0.0, 0.6, 0.6, 1.75),
        ("ped_1", AgentClass.PEDESTRIAN, 22.0, -2.6, 1.2, 0.6, 0.6, 1.7),
        ("ped_2", AgentClass.PEDESTRIAN, 22.0, 3.0, -1.0, 0.6, 0.6, 1.8),
        ("cyclist_0", AgentClass.CYCLIST, 16.0, -1.4, 4.0, 1.8, 0.6, 1.7),
        ("cone_0", AgentClass.CONE, 24.0, -0.7, 0.0, 0.4, 0.4, 0.7),
        ("cone_1", AgentClass.CONE, 27.0, -0.85, 0.0, 0.4, 0.4, 0.7),
        ("obstacle_0", AgentClass.STATIC_OBSTACLE, 70.0, -1.6, 0.0, 1.5, 1.2, 1.0),
    ]
    agents = []
    for aid, cls, s0, lane_k, v, length, width, height in spec:
        ax, ay, ah = pose(s0 + v * t_s, lane_k * lane_w)
        if v < 0:
            ah += math.pi
        speed = abs(v)
        agents.append(
            Agent(
                id=aid,
                agent_class=cls,
                x=ax,
                y=ay,
                yaw=ah,
                vx=speed * math.cos(ah),
                vy=speed * math.sin(ah),
                length=length,
                width=width,
                height=height,
            )
        )
    route_xy = line(0.0)
    return Scene(
        timestamp=t_s,
        ego=ego,
        ego_history=np.array(hist),
        agents=agents,
        map=MapData(lanes=lanes, stop_lines=stop_lines, name="example_signalised_road"),
        route=Route(waypoints=route_xy, lane_ids=("lane_1",)),
        traffic_lights=lights,
        metadata={"source": "planner.sensors.example_scene"},
    )


def camera_strip(images: np.ndarray, rig: SensorRig, scale: int = 3) -> np.ndarray:
    """(N_cam, T, H, W, 3) -> one RGB image: cameras left to right ordered by yaw (leftmost
    view first), frames top to bottom (oldest first), upscaled `scale` x, 2 px gaps."""
    order = np.argsort([-c.yaw_deg for c in rig.config.cameras], kind="stable")
    n_cam, n_t, h, w, _ = images.shape
    gap = 2
    hs, ws = h * scale, w * scale
    strip = np.full((n_t * hs + (n_t - 1) * gap, n_cam * ws + (n_cam - 1) * gap, 3), 255, np.uint8)
    for col, ci in enumerate(order):
        for row in range(n_t):
            tile = cv2.resize(images[ci, row], (ws, hs), interpolation=cv2.INTER_NEAREST)
            y0, x0 = row * (hs + gap), col * (ws + gap)
            strip[y0 : y0 + hs, x0 : x0 + ws] = tile
    return strip


def save_example_strip(
    path: str | Path,
    randomized: bool = False,
    seed: int = 0,
    config: SensorRigConfig | None = None,
    scale: int = 3,
) -> Path:
    """Render `example_scene` (2 s in, with its history) and write the strip PNG atomically."""
    from planner.io import atomic_write_bytes

    cfg = config if config is not None else load_sensor_config()
    cfg = replace(cfg, randomization=replace(cfg.randomization, enabled=randomized, seed=seed))
    rig = SensorRig(cfg)
    t_now = 2.0
    history = [example_scene(round(t_now - 0.1 * k, 3)) for k in range(cfg.frames - 1, 0, -1)]
    images = rig.render(example_scene(t_now), history)
    strip = camera_strip(images, rig, scale)
    # maximum zlib effort: the randomised strip (pixel noise) would otherwise pass 200 KB
    bgr = cv2.cvtColor(strip, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode the strip for {path}")
    return atomic_write_bytes(Path(path), buf.tobytes())


def write_example_strips(out_dir: str | Path = "docs/images") -> list[Path]:
    """docs/images/camera_strip.png (plain) and camera_strip_randomised.png."""
    out = Path(out_dir)
    return [
        save_example_strip(out / "camera_strip.png", randomized=False),
        save_example_strip(out / "camera_strip_randomised.png", randomized=True, seed=3),
    ]


def _main(argv: list[str] | None = None) -> Any:
    import argparse

    parser = argparse.ArgumentParser(description="Write the example camera strips (PNG).")
    parser.add_argument("--out", default="docs/images", help="output folder")
    args = parser.parse_args(argv)
    paths = write_example_strips(args.out)
    for p in paths:
        log.info("wrote %s", p)
    return paths


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    _main()
