"""CocDataset: item shapes, splits, DataLoader workers, corrupt shards."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from planner.data import dataset as D
from planner.data import shards
from tests.planner.data.test_shards import CAM_SHAPE, write_toy_shard


def make_dataset(root, episodes=((0, "train"), (1, "train"), (2, "val"), (3, "test")), n=3):
    rows = []
    for seed, split in episodes:
        rel = f"shards/toy/toy-{seed}.tar"
        info, _ = write_toy_shard(root / rel, seed=seed, n=n)
        rows.append({"path": rel, "episode": f"toy:{seed}", "seed": seed, "split": split, **info})
    shards.write_index(root, rows, {})
    return rows


def test_item_shapes_and_values(tmp_path):
    torch.set_num_threads(1)
    make_dataset(tmp_path)
    ds = D.CocDataset(tmp_path, split="train")
    assert len(ds) == 6
    item = ds[1]
    assert item[D.CAMERAS].shape == CAM_SHAPE and item[D.CAMERAS].dtype == torch.uint8
    assert item[D.EGO_HISTORY].shape == (16, 7) and item[D.ROUTE].shape == (20, 2)
    assert item[D.FUTURE_XY].shape == (64, 2) and item[D.FUTURE_CONTROLS].shape == (64, 2)
    assert item[D.FUTURE_VALID].dtype == torch.bool and int(item[D.FUTURE_VALID].sum()) == 60
    # the toy future runs straight ahead at 10 m/s from the ego: ego frame x = 10 t, y = 0
    np.testing.assert_allclose(item[D.FUTURE_XY][:, 0], 10.0 * 0.1 * np.arange(1, 65), atol=1e-4)
    np.testing.assert_allclose(item[D.FUTURE_XY][:, 1], 0.0, atol=1e-5)
    assert int(item[D.LONGITUDINAL]) == shards.LONGITUDINAL_IDS["yield"]
    assert int(item[D.LATERAL]) == shards.LATERAL_IDS["in_lane_nudge"]
    assert int(item[D.LATERAL_SIDE]) == shards.SIDE_IDS["left"]
    assert int(item[D.COMMAND]) == shards.COMMAND_IDS["lane_follow"]
    assert item[D.LABEL_TEXT] == "Yield." and bool(item[D.LABEL_VALID])
    assert item[D.KEY] == "toy-0-0001"


def test_no_episode_in_two_splits(tmp_path):
    make_dataset(tmp_path)
    seen = {}
    for split in shards.SPLITS:
        ds = D.CocDataset(tmp_path, split=split)
        episodes = {ds[i][D.KEY].rsplit("-", 1)[0] for i in range(len(ds))}
        for other, eps in seen.items():
            assert not episodes & eps, f"{split} shares episodes with {other}"
        seen[split] = episodes
    assert sum(len(v) for v in seen.values()) == 4
    assert len(D.CocDataset(tmp_path, split=None)) == 12
    with pytest.raises(shards.UserError, match="split 'dev'"):
        D.CocDataset(tmp_path, split="dev")


def test_dataloader_with_two_workers(tmp_path):
    torch.set_num_threads(1)
    make_dataset(tmp_path)
    ds = D.CocDataset(tmp_path, split=None)
    ds[0]  # an open handle in the parent must not break pickling into workers
    loader = DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    keys, cams = [], 0
    for batch in loader:
        assert batch[D.CAMERAS].shape[1:] == CAM_SHAPE
        assert batch[D.FUTURE_CONTROLS].dtype == torch.float32
        keys += batch[D.KEY]
        cams += batch[D.CAMERAS].shape[0]
    assert cams == 12 and len(set(keys)) == 12


def test_corrupt_shard_raises_with_its_name_or_is_skipped(tmp_path):
    rows = make_dataset(tmp_path)
    bad = tmp_path / rows[1]["path"]
    bad.write_bytes(bad.read_bytes()[: rows[1]["bytes"] - 3000])  # truncated copy
    with pytest.raises(shards.CorruptShardError, match="toy-1.tar"):
        D.CocDataset(tmp_path, split="train")
    ds = D.CocDataset(tmp_path, split="train", skip_corrupt=True)
    assert len(ds) == 3
    assert [p.shard for p in ds.skipped_shards] == [rows[1]["path"]]
    assert all(ds[i][D.KEY].startswith("toy-0-") for i in range(len(ds)))


def test_flipped_byte_is_found_by_checksums(tmp_path):
    rows = make_dataset(tmp_path)
    bad = tmp_path / rows[0]["path"]
    raw = bytearray(bad.read_bytes())
    raw[3000] ^= 0xFF
    bad.write_bytes(bytes(raw))
    ds = D.CocDataset(tmp_path, split="train", verify_checksums=True, skip_corrupt=True)
    assert len(ds) == 3 and ds.skipped_shards[0].problem.startswith("sha256")


def test_data_stats_command_verifies_shards(tmp_path):
    from typer.testing import CliRunner

    from planner.cli import build_app

    rows = make_dataset(tmp_path)
    records = [
        {
            "status": "ok",
            "family": "toy",
            "seed": r["seed"],
            "split": r["split"],
            "n_samples": r["n_samples"],
            "steps": 40,
            "perturbed_steps": 4,
            "termination": "route_complete",
            "longitudinal": {"yield": r["n_samples"]},
            "lateral": {"in_lane_nudge": r["n_samples"]},
            "labels": {"valid": r["n_samples"]},
            "skipped": {},
            "future_source": {"executed": r["n_samples"]},
        }
        for r in rows
    ]
    shards.write_card(tmp_path, shards.build_card(records, name="toy", disk_bytes=1))
    runner = CliRunner()
    ok = runner.invoke(build_app(), ["data", "stats", str(tmp_path), "--deep"])
    assert ok.exit_code == 0, ok.output
    assert "all 4 shards verified" in ok.output and "in_lane_nudge" in ok.output
    bad = tmp_path / rows[2]["path"]
    bad.write_bytes(bad.read_bytes()[:-2048])
    res = runner.invoke(build_app(), ["data", "stats", str(tmp_path)])
    assert res.exit_code == 1 and "toy-2.tar" in res.output
