"""PyTorch `Dataset` over collected shards (planner.data.shards), one item per sample.

Random access without unpacking: at construction every shard's tar headers are scanned once
(`scan_shard`, which also detects truncated shards); an item is then one seek + read per
member. File handles are opened lazily per process, so the dataset pickles into
`DataLoader(num_workers > 0)` workers.

Item (a dict; keys are the constants below, shapes per sample):
    cameras          (N_cam, T, H, W, 3) uint8
    ego_history      (16, 7) float32, EGO_* columns, ego frame at t0
    route            (20, 2) float32, ego frame
    command          int64, index in planner.taxonomy.Command
    speed_limit      float32, m/s
    future_xy        (64, 2) float32, ego frame at t0 (rows t0 + 0.1 .. 6.4 s)
    future_yaw       (64,) float32, rad relative to the t0 heading
    future_controls  (64, 2) float32, fitted (accel m/s^2, curvature 1/m)
    future_valid     (64,) bool
    longitudinal     int64, index in LongitudinalDecision
    lateral          int64, index in LateralDecision
    lateral_side     int64, index in Side
    label_valid      bool (the CoC label passed the consistency check)
    label_text       str (the default collate makes a list of them)
    key              str, the sample key (<family>-<seed>-<step>)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from planner.data import shards
from planner.errors import UserError
from planner.types import EGO_X, EGO_Y, EGO_YAW

log = logging.getLogger(__name__)

# Batch keys (one place; the model and training code import these).
CAMERAS = "cameras"
EGO_HISTORY = "ego_history"
ROUTE = "route"
COMMAND = "command"
SPEED_LIMIT = "speed_limit"
FUTURE_XY = "future_xy"
FUTURE_YAW = "future_yaw"
FUTURE_CONTROLS = "future_controls"
FUTURE_VALID = "future_valid"
LONGITUDINAL = "longitudinal"
LATERAL = "lateral"
LATERAL_SIDE = "lateral_side"
LABEL_VALID = "label_valid"
LABEL_TEXT = "label_text"
KEY = "key"


class CocDataset(Dataset):
    """Samples of one split (or all, `split=None`) of a collected dataset folder, or of
    several folders read as one (`root` a list: e.g. the expert set plus DAgger collections).

    skip_corrupt: a shard that fails its checks at construction (truncated, missing members,
    sample count or size differing from index.json, with `verify_checksums` its sha256) is
    skipped and counted in `skipped_shards` instead of raising CorruptShardError. A member
    that fails to decode later, in `__getitem__`, always raises CorruptShardError naming the
    shard and member (run `cocdrive data stats DIR --deep` to find such shards up front)."""

    def __init__(
        self,
        root: str | Path | Sequence[str | Path],
        split: str | None = "train",
        *,
        skip_corrupt: bool = False,
        verify_checksums: bool = False,
    ):
        # several folders (e.g. the expert set and a DAgger collection) read as one dataset
        roots = [root] if isinstance(root, (str, Path)) else list(root)
        if not roots:
            raise UserError("CocDataset needs at least one dataset folder")
        self.roots = [Path(r).expanduser() for r in roots]
        self.root = self.roots[0]
        self.split = split
        self.skipped_shards: list[shards.ShardProblem] = []
        self._scans: list[shards.ShardScan] = []
        self._items: list[tuple[int, int]] = []  # (shard index, sample index)
        for folder in self.roots:
            self._add_folder(folder, split, skip_corrupt, verify_checksums)
        self._files: dict[int, Any] = {}

    def _add_folder(
        self, folder: Path, split: str | None, skip_corrupt: bool, verify_checksums: bool
    ) -> None:
        index = shards.load_index(folder)
        entries = index["shards"]
        if split is not None:
            known = sorted({e["split"] for e in entries} | set(shards.SPLITS))
            if split not in known:
                raise UserError(f"split {split!r} is not one of {known}")
            entries = [e for e in entries if e["split"] == split]
        for e in entries:
            path = folder / e["path"]
            try:
                scan = shards.scan_shard(path)
                if scan.trailer.get("n_samples") != e["n_samples"]:
                    raise shards.CorruptShardError(
                        path,
                        f"holds {scan.trailer.get('n_samples')} samples, index.json says "
                        f"{e['n_samples']}",
                    )
                if path.stat().st_size != e["bytes"]:
                    raise shards.CorruptShardError(
                        path, f"is {path.stat().st_size} bytes, index.json says {e['bytes']}"
                    )
                if verify_checksums and shards.file_sha256(path) != e["sha256"]:
                    raise shards.CorruptShardError(path, "sha256 differs from index.json")
            except shards.CorruptShardError as exc:
                if not skip_corrupt:
                    raise
                log.warning("skipping %s", exc)
                self.skipped_shards.append(shards.ShardProblem(str(e["path"]), exc.problem))
                continue
            k = len(self._scans)
            self._scans.append(scan)
            self._items.extend((k, j) for j in range(len(scan.samples)))

    def __len__(self) -> int:
        return len(self._items)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_files"] = {}  # open handles stay in the process that opened them
        return state

    def _file(self, k: int) -> Any:
        fh = self._files.get(k)
        if fh is None:
            if len(self._files) >= 64:  # bound open handles on big datasets
                self._files.pop(next(iter(self._files))).close()
            fh = self._files[k] = open(self._scans[k].path, "rb")  # noqa: SIM115
        return fh

    def record(self, index: int) -> shards.ShardRecord:
        """The decoded sample (cameras, arrays, info) without tensor conversion."""
        k, j = self._items[index]
        scan = self._scans[k]
        entry = scan.samples[j]
        raw = shards.read_members(scan.path, entry, self._file(k))
        return shards.decode_sample(scan.path, entry.key, raw)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        rec = self.record(index % len(self))
        return to_tensors(rec)

    def __del__(self) -> None:
        for fh in getattr(self, "_files", {}).values():
            fh.close()


def to_tensors(rec: shards.ShardRecord) -> dict[str, Any]:
    """One ShardRecord -> the item dict described in the module docstring."""
    a, info = rec.arrays, rec.info
    ego = a["ego_state"]  # t, x, y, yaw, ...
    x0, y0, yaw0 = float(ego[1]), float(ego[2]), float(ego[3])
    c, s = math.cos(yaw0), math.sin(yaw0)
    d = a["future_ego"][:, [EGO_X, EGO_Y]] - np.array([x0, y0])
    future_xy = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]], axis=1)
    future_yaw = (a["future_ego"][:, EGO_YAW] - yaw0 + math.pi) % (2 * math.pi) - math.pi
    label = info.get("label") or {}
    decision = label.get("decision") or {}
    return {
        CAMERAS: torch.from_numpy(rec.cameras),
        EGO_HISTORY: torch.from_numpy(np.asarray(a["feat_ego_history"], dtype=np.float32)),
        ROUTE: torch.from_numpy(np.asarray(a["feat_route_xy"], dtype=np.float32)),
        COMMAND: torch.tensor(shards.COMMAND_IDS[info["features"]["command"]], dtype=torch.long),
        SPEED_LIMIT: torch.tensor(float(info["features"]["speed_limit_mps"]), dtype=torch.float32),
        FUTURE_XY: torch.from_numpy(future_xy.astype(np.float32)),
        FUTURE_YAW: torch.from_numpy(future_yaw.astype(np.float32)),
        FUTURE_CONTROLS: torch.from_numpy(np.asarray(a["controls"], dtype=np.float32)),
        FUTURE_VALID: torch.from_numpy(np.asarray(a["future_valid"], dtype=bool)),
        LONGITUDINAL: torch.tensor(
            shards.LONGITUDINAL_IDS[decision.get("longitudinal", "set_speed_tracking")],
            dtype=torch.long,
        ),
        LATERAL: torch.tensor(
            shards.LATERAL_IDS[decision.get("lateral", "lane_keeping")], dtype=torch.long
        ),
        LATERAL_SIDE: torch.tensor(
            shards.SIDE_IDS[decision.get("lateral_side", "none")], dtype=torch.long
        ),
        LABEL_VALID: torch.tensor(bool(label.get("valid", False))),
        LABEL_TEXT: str(label.get("text", "")),
        KEY: rec.key,
    }


__all__ = ["CocDataset", "to_tensors"]
