"""Shared fixtures. The builders live in `tests/helpers.py` (import them directly where a
fixture is awkward, e.g. at module level or in parametrisation)."""

from __future__ import annotations

import numpy as np
import pytest

from tests import helpers


def pytest_sessionstart(session: pytest.Session) -> None:
    # Two cores shared by many processes: one torch thread is both faster and steadier for
    # the tiny models in tests (FACTS.md measured 2 threads 30x slower).
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_numpy_global_rng() -> None:
    """Tests that (directly or through a library) use numpy's global RNG are reproducible."""
    np.random.seed(0)


@pytest.fixture
def straight_road_map():
    """Builder: `straight_road_map(n_lanes=2, length_m=300, lane_width_m=3.7,
    speed_limit_mps=13.9)` -> MapData along world +x, lane_0 rightmost on y = 0."""
    return helpers.straight_road_map


@pytest.fixture
def curved_road_map():
    """Builder: approach (straight) -> curve (arc, left for positive angle) -> exit lanes."""
    return helpers.curved_road_map


@pytest.fixture
def make_scene():
    """Builder: `make_scene(map_data=None, ego_xy=(0, 0), ego_yaw=0, ego_speed_mps=10,
    agents=(), route_lane_ids=None, ...)` -> Scene with a consistent 1.6 s ego history."""
    return helpers.make_scene


@pytest.fixture
def make_agent():
    """Builder: `make_agent(id, x, y, yaw=0, speed_mps=0, agent_class=VEHICLE)` -> Agent."""
    return helpers.make_agent
