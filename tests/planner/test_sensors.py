"""SensorRig: shapes, geometry (ahead / left / behind), lights, randomisation, clipping, CLI."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from planner.cli import CommandRegistry
from planner.config import ConfigError, from_dict, load_config
from planner.features import build_planner_input
from planner.sensors import (
    DEFAULT_CONFIG_PATH,
    CameraConfig,
    SensorRig,
    SensorRigConfig,
    clip_polygon_near,
    load_sensor_config,
    save_example_strip,
)
from planner.taxonomy import AgentClass, LightState
from planner.types import InvalidInputError, StopLine, TrafficLight
from tests.helpers import make_agent, make_scene, straight_road_map

FRONT, LEFT, RIGHT = 0, 1, 2  # default camera order


@pytest.fixture(scope="module")
def rig() -> SensorRig:
    return SensorRig(SensorRigConfig())


def road_scene(agents=(), lights=(), stop_lines=None, n_lanes=3, ego_y=3.7):
    """Straight 3-lane road along +x (lanes centred on y = 0, 3.7, 7.4); ego in the middle
    lane at the origin of x."""
    m = straight_road_map(n_lanes=n_lanes, length_m=300.0, start_x_m=-100.0)
    if stop_lines:
        m.stop_lines.update(stop_lines)
    scene = make_scene(m, ego_xy=(0.0, ego_y), ego_speed_mps=8.0, agents=list(agents))
    scene.traffic_lights = list(lights)
    return scene


def vehicle_mask(img: np.ndarray) -> np.ndarray:
    """Pixels of the (shaded) vehicle blue; neither sky, road, terrain nor markings."""
    r, g, b = (img[..., i].astype(int) for i in range(3))
    return (b > 100) & (r < 75) & (b - r > 70) & (b - g > 40)


def red_mask(img: np.ndarray) -> np.ndarray:
    r, g, b = (img[..., i].astype(int) for i in range(3))
    return (r > 150) & (g < 70) & (b < 70)


def green_mask(img: np.ndarray) -> np.ndarray:
    r, g, b = (img[..., i].astype(int) for i in range(3))
    return (g > 150) & (r < 90) & (b < 110)


# ---- shapes and config --------------------------------------------------------------------
def test_default_shape_dtype_and_token_budget(rig):
    images = rig.render(road_scene())
    assert images.shape == (3, 2, 64, 128, 3)
    assert images.dtype == np.uint8
    assert rig.camera_names == ("front_wide", "front_left", "front_right")
    assert rig.config.tokens() == 3 * 2 * (128 // 16) * (64 // 16) == 192 <= 200


def test_custom_config_shape_and_explicit_intrinsics():
    cam = CameraConfig(
        name="narrow",
        width_px=96,
        height_px=48,
        fov_deg=None,
        fx_px=80,
        fy_px=80,
        cx_px=47.5,
        cy_px=23.5,
    )
    rig = SensorRig(SensorRigConfig(cameras=[cam], frames=3, supersample=1))
    out = rig.render(road_scene())
    assert out.shape == (1, 3, 48, 96, 3) and out.dtype == np.uint8
    assert rig.camera_names == ("narrow",)


def test_shipped_yaml_equals_dataclass_defaults():
    assert DEFAULT_CONFIG_PATH.is_file()
    assert load_config(SensorRigConfig, DEFAULT_CONFIG_PATH) == SensorRigConfig()
    cfg = load_sensor_config(overrides=["frames=4", "randomization.enabled=true"])
    assert cfg.frames == 4 and cfg.randomization.enabled


def test_bad_configs_name_the_problem():
    with pytest.raises(ConfigError, match="either fov_deg or fx_px"):
        from_dict(SensorRigConfig, {"cameras": [{"name": "a", "fx_px": 50.0}]})
    with pytest.raises(ConfigError, match="unique"):
        from_dict(SensorRigConfig, {"cameras": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(ConfigError, match="did you mean 'frames'"):
        load_sensor_config(overrides=["frame=3"])


def test_bad_input_gives_clear_errors(rig):
    scene = road_scene()
    with pytest.raises(InvalidInputError, match="history\\[0\\]"):
        rig.render(scene, [object()])
    scene.map.lanes["lane_0"].left_boundary_kind = "dotted"
    with pytest.raises(InvalidInputError, match="dotted"):
        rig.render(scene)


def test_satisfies_camera_renderer_protocol(rig):
    pin = build_planner_input(road_scene(), renderer=rig)
    assert pin.cameras.shape == (3, 2, 64, 128, 3)
    assert pin.camera_names == rig.camera_names
    assert pin.camera_source == "rendered"


# ---- history frames -----------------------------------------------------------------------
def test_history_frames_oldest_first_and_padding():
    rig = SensorRig(SensorRigConfig(frames=3))
    car = make_agent("car", 15.0, 3.7, speed_mps=0.0)
    s0 = road_scene([car])
    s1 = dataclasses.replace(s0, ego=dataclasses.replace(s0.ego, x=3.0))
    s2 = dataclasses.replace(s0, ego=dataclasses.replace(s0.ego, x=6.0))
    out = rig.render(s2, [s0, s1])
    alone = [rig.render(s, None)[:, -1] for s in (s0, s1, s2)]
    for t in range(3):
        np.testing.assert_array_equal(out[:, t], alone[t])
    assert not np.array_equal(out[:, 0], out[:, 2])  # the car grows as the ego approaches
    # one past frame for two slots: the oldest available is repeated
    short = rig.render(s2, [s1])
    np.testing.assert_array_equal(short[:, 0], alone[1])
    np.testing.assert_array_equal(short[:, 1], alone[1])
    none = rig.render(s2)
    for t in range(3):
        np.testing.assert_array_equal(none[:, t], alone[2])


# ---- geometry -----------------------------------------------------------------------------
def test_agent_ahead_is_centred_in_front_camera_on_the_road(rig):
    van = make_agent("lead", 20.0 + 1.45, 3.7)  # rear bumper ~17.2 m ahead of the rear axle
    van.height = 2.2  # taller than the camera (1.5 m), so it crosses the horizon
    scene = road_scene([van])
    img = rig.render(scene)[FRONT, -1]
    mask = vehicle_mask(img)
    assert mask.sum() > 10
    rows, cols = np.nonzero(mask)
    h, w = mask.shape
    assert abs(cols.mean() - (w - 1) / 2) < 0.08 * w  # centred
    assert cols.min() > 0.3 * w and cols.max() < 0.7 * w  # a car, not a wall
    # it stands on the road: its lowest pixel is where its rear bumper meets the ground, its
    # top rises above the horizon
    (_, v_contact), _ = _project(rig, scene, [[21.45 - 2.25, 3.7, 0.0]], FRONT)
    _, horizon_v = _project(rig, scene, [[1e4, 3.7, 0.0]], FRONT)
    assert abs(rows.max() - v_contact) <= 1.5
    assert rows.min() < horizon_v < v_contact
    # and no other camera sees it
    for cam in (LEFT, RIGHT):
        assert vehicle_mask(rig.render(scene)[cam, -1]).sum() == 0


def test_agent_behind_is_not_drawn(rig):
    plain = rig.render(road_scene())
    behind = rig.render(road_scene([make_agent("follower", -15.0, 3.7)]))
    np.testing.assert_array_equal(plain, behind)


def test_agent_on_the_left_appears_left(rig):
    # 45 degrees to the left: the front-left camera sees it, the front-right one does not
    scene = road_scene([make_agent("left", 9.0, 3.7 + 8.0)])
    images = rig.render(scene)[:, -1]
    assert vehicle_mask(images[LEFT]).sum() > 20
    assert vehicle_mask(images[RIGHT]).sum() == 0
    # in the next lane 25 m ahead: left half of the front image
    img = rig.render(road_scene([make_agent("left", 25.0, 7.4)]))[FRONT, -1]
    cols = np.nonzero(vehicle_mask(img))[1]
    assert len(cols) > 5 and cols.max() < img.shape[1] / 2
    img = rig.render(road_scene([make_agent("right", 25.0, 0.0)]))[FRONT, -1]
    cols = np.nonzero(vehicle_mask(img))[1]
    assert len(cols) > 5 and cols.min() > img.shape[1] / 2


def test_lane_lines_converge_towards_the_vanishing_point():
    # one lane with solid boundaries either side, the ego in its centre
    m = straight_road_map(n_lanes=1, length_m=400.0, start_x_m=-100.0)
    lane = m.lanes["lane_0"]
    lane.left_boundary_kind = lane.right_boundary_kind = "solid"
    scene = make_scene(m, ego_xy=(0.0, 0.0))
    cam = CameraConfig(name="front", width_px=256, height_px=128, fov_deg=90.0, pitch_deg=5.0)
    rig = SensorRig(SensorRigConfig(cameras=[cam], frames=1))
    img = rig.render(scene)[0, 0].astype(int)
    white = (img.min(axis=2) > 150) & (np.ptp(img, axis=2) < 40)
    _, horizon_v = _project(rig, scene, [[1e4, 0.0, 0.0]], 0)
    gaps = []
    for v in (int(horizon_v) + 6, int(horizon_v) + 20, img.shape[0] - 4):
        cols = np.nonzero(white[v])[0]
        assert len(cols) >= 2, f"no lane lines found in row {v}"
        left, right = cols.min(), cols.max()
        assert left < (img.shape[1] - 1) / 2 < right  # one line each side of the centre
        gaps.append(right - left)
    assert gaps[0] < gaps[1] < gaps[2]  # closer to the horizon, closer together


def test_geometry_behind_the_camera_does_not_explode(rig):
    # a long truck in the left lane from 8 m behind to 4 m ahead of the rear axle: without
    # near-plane clipping its rear corners would project mirrored across the whole image
    truck = make_agent("truck", -2.0, 7.4, length=12.0, width=2.5)
    truck.height = 3.5
    img = rig.render(road_scene([truck]))[FRONT, -1]
    cols = np.nonzero(vehicle_mask(img))[1]
    assert len(cols) > 0 and cols.max() < img.shape[1] / 2
    # the road polygons start 100 m behind the ego: the sky stays sky
    sky = img[:8].astype(int)
    assert (sky[..., 2] > sky[..., 0]).all()  # bluish everywhere in the top rows
    # a car around the camera itself: fills the view, no garbage, no exception
    around = rig.render(road_scene([make_agent("around", 1.0, 3.7, length=6.0)]))
    assert around.shape == (3, 2, 64, 128, 3)


def test_clip_polygon_near():
    square = np.array([[-1.0, 0.0, -1.0], [1.0, 0.0, -1.0], [1.0, 0.0, 3.0], [-1.0, 0.0, 3.0]])
    clipped = clip_polygon_near(square, 1.0)
    assert clipped[:, 2].min() == pytest.approx(1.0)
    assert len(clipped) == 4
    assert len(clip_polygon_near(square - [0, 0, 10.0], 1.0)) == 0
    np.testing.assert_array_equal(clip_polygon_near(square + [0, 0, 5.0], 1.0), square + [0, 0, 5])


# ---- traffic lights -----------------------------------------------------------------------
def _light_scene(state: LightState):
    stop = StopLine(id="stop", points=np.array([[30.0, -1.85], [30.0, 9.25]]), light_id="light")
    light = TrafficLight(id="light", state=state, stop_line_id="stop", lane_ids=("lane_1",))
    return road_scene(lights=[light], stop_lines={"stop": stop})


def test_red_light_renders_red_near_the_stop_line(rig):
    scene = _light_scene(LightState.RED)
    img = rig.render(scene)[FRONT, -1]
    red = red_mask(img)
    assert red.sum() >= 2
    rows, cols = np.nonzero(red)
    (u, v), _ = _project(rig, scene, [[30.0, 3.7, 0.0]], FRONT)
    assert abs(cols.mean() - u) < 12  # above the stop line's centre
    assert rows.max() < v  # hanging above the line, not on the road
    assert green_mask(img).sum() == 0
    green = rig.render(_light_scene(LightState.GREEN))[FRONT, -1]
    assert red_mask(green).sum() == 0 and green_mask(green).sum() >= 2


# ---- randomisation ------------------------------------------------------------------------
def _random_rig(seed: int, enabled: bool = True) -> SensorRig:
    cfg = SensorRigConfig()
    rnd = dataclasses.replace(cfg.randomization, enabled=enabled, seed=seed)
    return SensorRig(dataclasses.replace(cfg, randomization=rnd))


def test_randomisation_changes_pixels_and_is_reproducible():
    scene = road_scene([make_agent("lead", 20.0, 3.7)])
    history = [advance_scene_back(scene)]
    plain = _random_rig(0, enabled=False).render(scene, history)
    a = _random_rig(7).render(scene, history)
    b = _random_rig(7).render(scene, history)
    c = _random_rig(8).render(scene, history)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, plain)
    assert not np.array_equal(a, c)
    # a per-call seed reproduces one sample whatever came before
    r1, r2 = _random_rig(7), _random_rig(7)
    r2.render(scene)
    np.testing.assert_array_equal(r1.render(scene, seed=42), r2.render(scene, seed=42))
    # off: identical images from fresh rigs and repeated calls
    off = _random_rig(7, enabled=False)
    np.testing.assert_array_equal(off.render(scene, history), plain)
    np.testing.assert_array_equal(off.render(scene, history), plain)


def advance_scene_back(scene):
    """The frame 0.1 s earlier (ego 0.8 m back), as a separate Scene."""
    return dataclasses.replace(scene, ego=dataclasses.replace(scene.ego, x=scene.ego.x - 0.8))


# ---- example strip and CLI ----------------------------------------------------------------
def test_example_strip_is_written_small(tmp_path):
    path = save_example_strip(tmp_path / "strip.png", scale=2)
    assert path.is_file() and 0 < path.stat().st_size < 200_000
    import cv2

    img = cv2.imread(str(path))
    assert img.shape == (2 * 64 * 2 + 2, 3 * 128 * 2 + 4, 3)


def test_bench_render_help_and_tiny_run(tmp_path):
    app = typer.Typer()
    from planner.commands import register

    register(CommandRegistry(app))
    runner = CliRunner()
    res = runner.invoke(app, ["bench", "render", "--help"])
    assert res.exit_code == 0, res.output
    assert "--frames" in res.output and "--out" in res.output
    out = tmp_path / "bench.json"
    res = runner.invoke(app, ["bench", "render", "--frames", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "median" in res.output and "p99" in res.output
    import json

    data = json.loads(out.read_text())
    assert data["per_camera_frame"]["count"] == 2
    assert data["vision_tokens"] == 192


def _project(rig: SensorRig, scene, points, camera: int):
    uv, _ = rig.project(scene, np.asarray(points, dtype=float), camera)
    return uv[0], uv[0, 1]


def test_project_matches_rendered_agent_class_colours(rig):
    # every class gets a distinct colour: pedestrians yellow, cones orange
    ped = make_agent("ped", 12.0, 3.7, agent_class=AgentClass.PEDESTRIAN, length=0.6, width=0.6)
    ped.height = 1.8
    img = rig.render(road_scene([ped]))[FRONT, -1]
    assert yellow_mask(img).sum() > 3
    assert vehicle_mask(img).sum() == 0


def test_curved_road_with_drivable_area_and_stop_sign(rig):
    from planner.geometry import drivable_area
    from tests.helpers import curved_road_map

    m = curved_road_map(radius_m=30.0)
    drivable_area(m)  # a shapely polygon: drawn as the road surface too
    m.stop_lines["sign"] = StopLine(
        id="sign",
        points=np.array([[-5.0, -1.85], [-5.0, 1.85]]),
        lane_ids=("approach",),
        is_stop_sign=True,
    )
    scene = make_scene(m, ego_xy=(-18.0, 0.0), ego_speed_mps=5.0)  # sign ~11 m ahead
    img = rig.render(scene)[FRONT, -1]
    red = red_mask(img)
    assert red.sum() >= 1
    assert np.nonzero(red)[1].mean() > (img.shape[1] - 1) / 2  # the sign stands on the right
    road = np.abs(img.astype(int) - [78, 78, 84]).max(axis=2) < 6
    assert road[-1].sum() > img.shape[1] // 3  # the road fills the bottom row's middle


def yellow_mask(img: np.ndarray) -> np.ndarray:
    r, g, b = (img[..., i].astype(int) for i in range(3))
    return (r > 150) & (g > 120) & (b < 60)


def brown_mask(img: np.ndarray) -> np.ndarray:
    """Static-obstacle brown (150, 96, 52), shaded; not terrain (greener) nor road (grey)."""
    r, g, b = (img[..., i].astype(int) for i in range(3))
    return (r > 90) & (r - g > 30) & (g - b > 15) & (b < 80)


@pytest.mark.parametrize("near_first", [True, False])
def test_painter_order_near_box_hides_far_one(rig, near_first):
    # a tall van 10 m ahead hides a large obstacle 30 m ahead on the same line, whatever the
    # order of the agent list
    van = make_agent("van", 10.0 + 1.45, 3.7)
    van.height = 2.5
    block = make_agent(
        "block", 30.0, 3.7, agent_class=AgentClass.STATIC_OBSTACLE, length=2.5, width=2.5
    )
    block.height = 3.0
    agents = [van, block] if near_first else [block, van]
    img = rig.render(road_scene(agents))[FRONT, -1]
    assert vehicle_mask(img).sum() > 20
    assert brown_mask(img).sum() == 0
    # moved one lane to the right, it shows beside the van
    block.y = 0.0
    img = rig.render(road_scene(agents))[FRONT, -1]
    assert brown_mask(img).sum() > 3


def test_far_lanes_are_skipped_but_long_sparse_lanes_are_not(rig):
    from planner.types import Lane

    def lane(lane_id: str, y: float, x0: float, x1: float) -> Lane:
        xs = np.array([x0, x1])
        return Lane(
            id=lane_id,
            centerline=np.stack([xs, [y, y]], axis=1),
            left_boundary=np.stack([xs, [y + 1.85, y + 1.85]], axis=1),
            right_boundary=np.stack([xs, [y - 1.85, y - 1.85]], axis=1),
            speed_limit_mps=13.9,
            left_boundary_kind="solid",
            right_boundary_kind="solid",
        )

    # two vertices 1 km apart, the ego halfway: the lane is near although its vertices are not
    scene = road_scene()
    scene.map.lanes = {"long": lane("long", 3.7, -500.0, 500.0)}
    img = rig.render(scene)[FRONT, -1]
    road = np.abs(img.astype(int) - [78, 78, 84]).max(axis=2) < 6
    assert road[-1].sum() > img.shape[1] // 3
    # a lane 2 km away changes nothing
    far = road_scene()
    far.map.lanes = {"long": lane("long", 3.7, -500.0, 500.0), "far": lane("far", 2e3, 0, 50)}
    np.testing.assert_array_equal(rig.render(far), rig.render(scene))
