"""Shard format: round trip, splits, corrupt and truncated shards, dataset card."""

from __future__ import annotations

import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from planner.data import shards
from planner.data.sample import Sample
from planner.taxonomy import AgentClass
from planner.types import Decision, LateralDecision, LongitudinalDecision, Side
from tests import helpers

CAM_SHAPE = (3, 2, 64, 128, 3)


def make_sample(seed: int = 0, step: int = 0) -> tuple[Sample, shards.SampleFeatures]:
    """A hand-made sample on a straight 2-lane road with two agents and a label."""
    rng = np.random.default_rng(seed)
    agents = [
        helpers.make_agent("veh0", 30.0, 0.0, speed_mps=8.0),
        helpers.make_agent("cone1", 50.0, 3.0, agent_class=AgentClass.CONE, length=0.5),
    ]
    agents[0].history = rng.normal(size=(5, 5))
    scene = helpers.make_scene(ego_xy=(5.0 + step, 0.2), ego_speed_mps=10.0, agents=agents)
    scene.metadata = {"family": "toy", "seed": seed}
    future = np.zeros((64, 7))
    future[:, 0] = np.arange(1, 65) * 0.1
    future[:, 1] = scene.ego.x + 10.0 * future[:, 0]
    future[:, 2] = scene.ego.y
    future[:, 4] = 10.0
    agent_futures = {"veh0": rng.normal(size=(64, 5))}
    agent_futures["veh0"][40:] = np.nan  # left the scene
    decision = Decision(LongitudinalDecision.YIELD, LateralDecision.IN_LANE_NUDGE, Side.LEFT)
    sample = Sample(
        scene=scene,
        future_ego=future,
        future_valid=np.arange(64) < 60,
        agent_futures=agent_futures,
        controls=rng.normal(size=(64, 2)) * 0.1,
        label={"text": "Yield.", "decision": decision.to_dict(), "valid": True},
        meta={"family": "toy", "seed": seed, "step": step, "split": "train"},
    )
    # smooth images compress and survive JPEG well; random noise would not
    yy, xx = np.mgrid[0:64, 0:128]
    base = np.stack([xx * 2, yy * 4, (xx + yy) % 256], axis=-1).astype(np.uint8)
    cams = np.broadcast_to(base, CAM_SHAPE).copy()
    cams[1] //= 2
    cams[:, 1, 10:20, 10:40] = (255, 0, 0)
    feats = shards.SampleFeatures(
        cameras=cams,
        camera_names=("front_wide", "front_left", "front_right"),
        camera_source="rendered",
        ego_history=rng.normal(size=(16, 7)),
        route_xy=rng.normal(size=(20, 2)),
        command="lane_follow",
        speed_limit_mps=13.9,
    )
    return sample, feats


def write_toy_shard(
    path: Path, seed: int = 0, n: int = 3, image_format: str = "png"
) -> tuple[dict, list]:
    made = [make_sample(seed, step) for step in range(n)]
    members = [
        shards.encode_sample(f"toy-{seed}-{k:04d}", s, f, image_format=image_format)
        for k, (s, f) in enumerate(made)
    ]
    scene = made[0][0].scene
    info = shards.write_shard(
        path,
        shards.encode_episode(scene.map, scene.route),
        members,
        {"episode": f"toy:{seed}", "family": "toy", "seed": seed, "split": "train"},
    )
    return info, made


def test_round_trip_png_is_exact(tmp_path):
    path = tmp_path / "toy-0.tar"
    info, made = write_toy_shard(path)
    assert info["n_samples"] == 3 and path.stat().st_size == info["bytes"]
    records = list(shards.read_shard(path))
    assert [r.key for r in records] == ["toy-0-0000", "toy-0-0001", "toy-0-0002"]
    for rec, (sample, feats) in zip(records, made):
        np.testing.assert_array_equal(rec.cameras, feats.cameras)
        back = rec.to_sample()
        np.testing.assert_array_equal(back.future_ego, sample.future_ego)
        np.testing.assert_array_equal(back.future_valid, sample.future_valid)
        np.testing.assert_allclose(back.controls, sample.controls, atol=1e-6)  # float32
        np.testing.assert_array_equal(back.scene.ego_history, sample.scene.ego_history)
        assert back.scene.ego == sample.scene.ego
        assert back.label == sample.label and back.meta == sample.meta
        assert [(a.id, a.agent_class, a.x, a.vx, a.length) for a in back.scene.agents] == [
            (a.id, a.agent_class, a.x, a.vx, a.length) for a in sample.scene.agents
        ]
        np.testing.assert_array_equal(back.scene.agents[0].history, sample.scene.agents[0].history)
        # the agent that never appears in agent_futures stays absent; NaN rows survive
        assert set(back.agent_futures) == {"veh0"}
        np.testing.assert_allclose(
            back.agent_futures["veh0"], sample.agent_futures["veh0"], atol=1e-5, equal_nan=True
        )
        assert set(back.scene.map.lanes) == set(sample.scene.map.lanes)
        for lid, lane in sample.scene.map.lanes.items():
            np.testing.assert_array_equal(back.scene.map.lanes[lid].centerline, lane.centerline)
            assert back.scene.map.lanes[lid].successors == lane.successors
        np.testing.assert_array_equal(back.scene.route.waypoints, sample.scene.route.waypoints)
        assert back.scene.route.command == sample.scene.route.command
        f = rec.features()
        np.testing.assert_allclose(f.ego_history, feats.ego_history, atol=1e-5)
        assert f.command == "lane_follow" and f.camera_names == feats.camera_names


def test_round_trip_jpeg_within_codec_tolerance(tmp_path):
    path = tmp_path / "toy-0.tar"
    _, made = write_toy_shard(path, image_format="jpg")
    rec = next(shards.read_shard(path))
    assert rec.cameras.shape == CAM_SHAPE and rec.cameras.dtype == np.uint8
    err = np.abs(rec.cameras.astype(int) - made[0][1].cameras.astype(int))
    assert err.mean() < 3.0  # quality 90 on smooth images
    assert not np.array_equal(rec.cameras, made[0][1].cameras)  # it really was lossy


def test_split_is_a_function_of_the_episode_only():
    fractions = {"train": 0.8, "val": 0.1, "test": 0.1}
    counts = Counter(shards.split_of(fam, s, fractions) for fam in "ab" for s in range(2000))
    assert set(counts) == {"train", "val", "test"}
    assert abs(counts["train"] / 4000 - 0.8) < 0.03
    assert abs(counts["val"] / 4000 - 0.1) < 0.02
    # deterministic, and the same seed in two families is two episodes (hashed separately)
    assert shards.split_of("a", 7, fractions) == shards.split_of("a", 7, fractions)
    per_family = [shards.split_of(f, s, fractions) for f in "ab" for s in range(200)]
    assert per_family[:200] != per_family[200:]


def test_truncated_shard_names_the_shard(tmp_path):
    path = tmp_path / "toy-0.tar"
    info, _ = write_toy_shard(path)
    data = path.read_bytes()
    path.write_bytes(data[: info["bytes"] // 2])  # cut inside a member
    with pytest.raises(shards.CorruptShardError, match="toy-0.tar.*truncated"):
        shards.scan_shard(path)


def test_shard_cut_at_a_member_boundary_lacks_its_trailer(tmp_path):
    path = tmp_path / "toy-0.tar"
    write_toy_shard(path)
    with tarfile.open(path) as tar:
        trailer = tar.getmember(shards.SHARD_TRAILER)
    path.write_bytes(path.read_bytes()[: trailer.offset])  # a clean cut: tar reads fine
    with pytest.raises(shards.CorruptShardError, match="toy-0.tar.*trailer"):
        shards.scan_shard(path)


def test_damaged_member_names_shard_and_member(tmp_path):
    path = tmp_path / "toy-0.tar"
    write_toy_shard(path)
    with tarfile.open(path) as tar:
        m = tar.getmember("toy-0-0001.arrays.npz")
    raw = bytearray(path.read_bytes())
    raw[m.offset_data + 40 : m.offset_data + 140] = b"\x00" * 100
    path.write_bytes(bytes(raw))
    records = shards.read_shard(path)
    next(records)  # the first sample is intact
    with pytest.raises(shards.CorruptShardError, match=r"toy-0.tar.*toy-0-0001\.arrays\.npz"):
        next(records)


def _records(n_eps: int = 4) -> list[dict]:
    out = []
    for i in range(n_eps):
        out.append(
            {
                "key": f"toy:{i}",
                "status": "ok",
                "family": "toy" if i % 2 else "other",
                "seed": i,
                "split": "train" if i < 3 else "test",
                "shard": f"shards/toy-{i}.tar",
                "n_samples": 10 + i,
                "bytes": 1000,
                "sha256": "0",
                "steps": 50,
                "perturbed_steps": 5,
                "termination": "route_complete",
                "longitudinal": {"yield": 4 + i, "set_speed_tracking": 6},
                "lateral": {"lane_keeping": 10 + i},
                "pairs": {},
                "labels": {"valid": 9 + i, "inconsistent_flagged": 1},
                "skipped": {"short_future": 3},
                "future_source": {"executed": 10 + i},
                "wall_s": 2.0,
                "cpu_s": 1.5,
            }
        )
    out.append({"key": "toy:9", "status": "error", "error": "RuntimeError: boom"})
    return out


def test_card_counts_match_records(tmp_path):
    recs = _records()
    card = shards.build_card(recs, name="toy", disk_bytes=4000)
    assert card["episodes"] == 4 and card["episodes_failed"] == 1
    assert card["samples"] == 10 + 11 + 12 + 13
    assert card["splits"]["train"] == {"episodes": 3, "samples": 33}
    assert card["splits"]["test"] == {"episodes": 1, "samples": 13}
    assert card["families"]["toy"]["episodes"] == 2 and card["families"]["other"]["samples"] == 22
    assert card["decisions"]["longitudinal"]["yield"] == 4 + 5 + 6 + 7
    assert sum(card["decisions"]["lateral"].values()) == card["samples"]
    assert "gap_searching" in card["missing_decisions"]["longitudinal"]
    assert "lane_keeping" not in card["missing_decisions"]["lateral"]
    assert card["perturbed_step_fraction"] == pytest.approx(0.1)
    assert card["failed_episodes"][0]["error"] == "RuntimeError: boom"
    json_path, md_path = shards.write_card(tmp_path, card)
    assert shards.load_card(tmp_path) == card
    md = md_path.read_text()
    assert "| train | 3 | 33 |" in md and "| yield | 22 |" in md


def test_verify_dataset_reports_bad_shards(tmp_path):
    rows = []
    for seed in range(3):
        rel = f"shards/toy/toy-{seed}.tar"
        info, _ = write_toy_shard(tmp_path / rel, seed=seed, n=2)
        rows.append({"path": rel, "split": "train", **info})
    shards.write_index(tmp_path, rows, {})
    assert shards.verify_dataset(tmp_path, deep=True) == (3, [])
    bad = tmp_path / rows[1]["path"]
    raw = bytearray(bad.read_bytes())
    raw[2000] ^= 0xFF  # one flipped byte: only the checksum sees it without decoding
    bad.write_bytes(bytes(raw))
    checked, problems = shards.verify_dataset(tmp_path)
    assert checked == 3 and [p.shard for p in problems] == [rows[1]["path"]]
    assert "sha256" in problems[0].problem
    with pytest.raises(shards.UserError, match="does not exist"):
        shards.load_index(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(shards.UserError, match="no index.json.*data collect"):
        shards.load_index(tmp_path / "empty")
