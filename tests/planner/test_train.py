"""SFT trainer (planner/train.py) on a handful of hand-made samples written as real shards:
the loss falls, resume reproduces the uninterrupted loss curve, DDP with 2 CPU processes
(gloo) runs, and bad input (missing data, damaged training state) gives clear errors."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from planner.config import ConfigError, save_config
from planner.data import dataset as D
from planner.data import shards
from planner.errors import UserError
from planner.model.checkpoint import CheckpointError, load_checkpoint
from planner.taxonomy import LateralDecision, LongitudinalDecision, Side
from planner.train import (
    RESUME_DIR,
    STATE_FILE,
    BalancedDistributedSampler,
    balanced_weights,
    decision_accuracy,
    decision_groups,
    load_model_config,
    load_train_config,
    lr_factor,
    prepare_data,
    train_sft,
    validate,
)
from planner.types import Decision
from tests.planner.data.test_shards import make_sample
from tests.planner.model.tiny import LABELS, tiny_config

DECISIONS = (
    Decision(LongitudinalDecision.SET_SPEED_TRACKING),
    Decision(LongitudinalDecision.YIELD),
    Decision(LongitudinalDecision.STOP_FOR_STATIC_CONSTRAINTS),
)
ACCEL = (0.8, -2.0, -1.0)


def _write_episode(root: Path, seed: int, n: int, split: str) -> dict:
    members = []
    scene = None
    for step in range(n):
        kind = (seed + step) % 3
        sample, feats = make_sample(seed, step)
        scene = sample.scene
        rng = np.random.default_rng(100 * seed + step)
        cams = np.full((1, 1, 32, 64, 3), 40 + 80 * kind, dtype=np.uint8)
        cams += rng.integers(0, 20, cams.shape, dtype=np.uint8)
        feats.cameras = cams
        feats.camera_names = ("front_wide",)
        feats.ego_history = np.zeros((16, 7))
        feats.ego_history[:, 4] = 6.0 + 2 * kind
        controls = np.zeros((64, 2))
        controls[:, 0] = ACCEL[kind]
        sample.controls = controls
        sample.label = {"text": LABELS[kind], "decision": DECISIONS[kind].to_dict(), "valid": True}
        key = f"toy-{seed}-{step:04d}"
        members.append(shards.encode_sample(key, sample, feats))
    rel = f"shards/toy/toy-{seed}.tar"
    info = shards.write_shard(
        root / rel,
        shards.encode_episode(scene.map, scene.route),
        members,
        {"episode": f"toy:{seed}", "family": "toy", "seed": seed, "split": split},
    )
    return {"path": rel, "episode": f"toy:{seed}", "seed": seed, "split": split, **info}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sft_data")
    rows = [_write_episode(root, 0, 6, "train"), _write_episode(root, 1, 6, "train")]
    rows.append(_write_episode(root, 2, 3, "val"))
    shards.write_index(root, rows, {})
    return root


@pytest.fixture(scope="module")
def model_yaml(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sft_model") / "tiny.yaml"
    save_config(tiny_config("lm.max_seq_len=128"), path)
    return path


def _cfg(dataset: Path, model_yaml: Path, out: Path, *extra: str):
    return load_train_config(
        None,
        [
            f"data_dir={dataset}",
            f"model_config={model_yaml}",
            f"out_dir={out}",
            "tokenizer_template_sentences=300",
            "batch_size=4",
            "learning_rate=3e-3",
            "warmup_steps=2",
            "weight_decay=0.0",
            "val_max_samples=0",
            "tensorboard=false",
            "progress_bar=false",
            "num_threads=1",
            *extra,
        ],
    )


def test_loss_falls_and_final_checkpoint_loads(dataset, model_yaml, tmp_path, caplog):
    torch.set_num_threads(1)
    cfg = _cfg(dataset, model_yaml, tmp_path / "run", "max_steps=30", "val_max_samples=2")
    result = train_sft(cfg)
    assert result.steps == 30
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    assert last < 0.6 * first, (first, last)
    ckpt = load_checkpoint(result.final_checkpoint)
    assert ckpt.meta["training"]["steps"] == 30
    assert ckpt.config.loss.reasoning_weight == cfg.loss.reasoning_weight
    # validation ran: ADE vs constant velocity and the decision accuracy are reported
    assert result.val["samples"] == 2
    assert np.isfinite(result.val["ade_3s_full"]) and np.isfinite(result.val["ade_3s_fast"])
    # and the deterministic plan (noise_scale 0), differing from the one-draw figure
    assert np.isfinite(result.val["ade_3s_full_noise0"])
    assert result.val["ade_3s_fast_noise0"] != result.val["ade_3s_fast"]
    assert 0.0 <= result.val["decision_acc_macro"] <= 1.0
    assert (tmp_path / "run" / "metrics.jsonl").is_file()
    # a model set to drive on the mean of k draws is also scored on that plan; the plain keys
    # stay one draw (the first sample of a k-sample run equals a 1-sample run)
    from planner.data.dataset import CocDataset

    mean3 = load_checkpoint(result.final_checkpoint, ["inference.samples=3", "inference.plan=mean"])
    val = validate(mean3.model, mean3.tokenizer, CocDataset(dataset, "val"), cfg)
    assert val["ade_3s_full"] == pytest.approx(result.val["ade_3s_full"], abs=1e-6)
    assert np.isfinite(val["ade_3s_full_mean3"]) and np.isfinite(val["ade_3s_fast_mean3"])
    assert val["ade_3s_full_mean3"] != val["ade_3s_full"]
    assert "ade_3s_full_mean3_vs_const_velocity" in val
    # a model set to drive with a jerk limit is also scored on the limited plan; the plain
    # keys stay the model's own plans
    assert "ade_3s_full_noise0_jerk" not in result.val
    limited = load_checkpoint(result.final_checkpoint, ["inference.max_jerk_up_mps3=0.01"])
    val = validate(limited.model, limited.tokenizer, CocDataset(dataset, "val"), cfg)
    assert val["ade_3s_full_noise0"] == pytest.approx(result.val["ade_3s_full_noise0"], abs=1e-6)
    assert np.isfinite(val["ade_3s_fast_noise0_jerk"])
    assert val["ade_3s_full_noise0_jerk"] != pytest.approx(val["ade_3s_full_noise0"], abs=1e-4)
    assert "ade_3s_full_noise0_jerk_vs_const_velocity" in val
    # init_from: a fresh run starts from the trained weights and tokenizer (its first loss is
    # far below a scratch run's); an architecture that does not fit is refused clearly
    tuned = train_sft(
        _cfg(
            dataset,
            model_yaml,
            tmp_path / "tune",
            "max_steps=2",
            f"init_from={result.final_checkpoint}",
        )
    )
    assert tuned.losses[0] < 0.7 * result.losses[0], (tuned.losses[0], result.losses[0])
    assert load_checkpoint(tuned.final_checkpoint).tokenizer.vocab_size == ckpt.tokenizer.vocab_size
    other = _cfg(
        dataset,
        model_yaml,
        tmp_path / "bad",
        "max_steps=2",
        f"init_from={result.final_checkpoint}",
        "model_overrides=[expert.width=48, flow.prior=route_pursuit]",
    )
    with pytest.raises(CheckpointError, match="does not fit"):
        train_sft(other)
    # a changed flow prior is allowed but said out loud (the flow's target changes meaning)
    assert "pass model_overrides=[flow.prior=none]" in caplog.text


@pytest.mark.parametrize("balance", [0.0, 1.0], ids=["uniform", "decision-balanced"])
def test_resume_reproduces_the_uninterrupted_loss_curve(dataset, model_yaml, tmp_path, balance):
    torch.set_num_threads(1)
    # 12 train samples / batch 4 = 3 steps per epoch: step 4 is mid-epoch 1
    base = ("max_steps=8", "ckpt_every_steps=2", "reasoning_dropout=0.5")
    base += (f"balance_decisions={balance}",)
    full = train_sft(_cfg(dataset, model_yaml, tmp_path / "a", *base))
    cfg_b = _cfg(dataset, model_yaml, tmp_path / "b", *base)
    part1 = train_sft(cfg_b, stop_after_steps=4)
    assert part1.steps == 4 and part1.final_checkpoint is None
    assert (tmp_path / "b" / RESUME_DIR / STATE_FILE).is_file()
    part2 = train_sft(cfg_b)  # resumes from b/resume
    assert part2.steps == 8
    np.testing.assert_allclose(part1.losses + part2.losses, full.losses, rtol=0, atol=1e-6)
    a = load_checkpoint(full.final_checkpoint).model.state_dict()
    b = load_checkpoint(part2.final_checkpoint).model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, args: tuple) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    import torch.distributed as dist

    try:
        result = train_sft(_cfg(*args))
        assert result.steps == 3
        assert all(np.isfinite(result.losses))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_ddp_with_two_cpu_processes(dataset, model_yaml, tmp_path):
    out = tmp_path / "ddp"
    args = (dataset, model_yaml, out, "max_steps=3", "batch_size=2", "ckpt_every_steps=2")
    mp.spawn(_ddp_worker, args=(2, _free_port(), args), nprocs=2, join=True)
    ckpt = load_checkpoint(out / "final")
    assert ckpt.meta["training"]["world_size"] == 2
    assert (out / RESUME_DIR / STATE_FILE).is_file()


def test_missing_data_dir_is_a_clear_error(model_yaml, tmp_path):
    cfg = _cfg(tmp_path / "nope", model_yaml, tmp_path / "run", "max_steps=1")
    with pytest.raises(UserError, match="does not exist: collect it first"):
        train_sft(cfg)


def test_extra_train_dirs_join_the_train_split_only(dataset, model_yaml, tmp_path):
    """A DAgger collection in extra_train_dirs adds its train samples; validation stays on
    data_dir's val split; a folder that is not a dataset is a clear error."""
    extra = tmp_path / "dagger"
    rows = [_write_episode(extra, 7, 4, "train"), _write_episode(extra, 8, 3, "val")]
    shards.write_index(extra, rows, {})
    base = _cfg(dataset, model_yaml, tmp_path / "run")
    train0, val0, tok = prepare_data(base, load_model_config(base), None)
    cfg = _cfg(dataset, model_yaml, tmp_path / "run", f"extra_train_dirs=[{extra}]")
    train1, val1, _ = prepare_data(cfg, load_model_config(cfg), tok)
    assert len(train1) == len(train0) + 4 and len(val1) == len(val0) == 3
    keys = {train1[i][D.KEY] for i in range(len(train1))}
    assert {f"toy-7-{j:04d}" for j in range(4)} <= keys
    bad = _cfg(dataset, model_yaml, tmp_path / "run", f"extra_train_dirs=[{tmp_path / 'nope'}]")
    with pytest.raises(UserError, match="extra_train_dirs.*not a collected dataset"):
        prepare_data(bad, load_model_config(bad), tok)


def test_damaged_training_state_is_a_clear_error(dataset, model_yaml, tmp_path):
    torch.set_num_threads(1)
    cfg = _cfg(dataset, model_yaml, tmp_path / "run", "max_steps=4", "ckpt_every_steps=1")
    train_sft(cfg, stop_after_steps=1)
    state = tmp_path / "run" / RESUME_DIR
    weights = state / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt"):
        train_sft(cfg)
    train_sft(cfg, resume=False, stop_after_steps=1)  # a fresh start writes a good state
    (state / STATE_FILE).write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="train_state.pt.*corrupt"):
        train_sft(cfg)


def test_schedule_warms_up_then_decays_to_the_floor():
    f = [lr_factor(s, 10, 110, 0.1) for s in range(111)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert f[60] == pytest.approx(0.55) and f[110] == pytest.approx(0.1)


def test_decision_accuracy_is_macro_averaged_over_label_types():
    stop = DECISIONS[2].to_dict()
    keep = DECISIONS[0].to_dict()
    nudge = Decision(LongitudinalDecision.YIELD, LateralDecision.IN_LANE_NUDGE, Side.LEFT)
    pairs = [(keep, DECISIONS[0])] * 9 + [(keep, None)] + [(stop, DECISIONS[0])]
    pairs += [(nudge.to_dict(), nudge)]
    acc = decision_accuracy(pairs)
    # longitudinal: set_speed 9/10, stop 0/1, yield 1/1 -> macro 0.633 (micro would be 0.83)
    assert acc["longitudinal_acc_macro"] == pytest.approx((0.9 + 0.0 + 1.0) / 3)
    assert acc["decision_acc_macro"] == pytest.approx((0.9 + 0.0 + 1.0) / 3)
    assert acc["parsed_fraction"] == pytest.approx(11 / 12)
    # per type: the joint decision by the label's longitudinal type, lateral by type and side
    assert acc["decision_acc_set_speed_tracking"] == pytest.approx(0.9)
    assert acc[f"decision_acc_{stop['longitudinal']}"] == 0.0
    assert acc["decision_acc_yield"] == 1.0
    assert acc["lateral_acc_in_lane_nudge_left"] == 1.0


def test_decision_groups_follow_the_dataset_order(dataset):
    ds = D.CocDataset(dataset, "train")
    groups = decision_groups(ds)
    ids = {v: k for k, v in shards.LONGITUDINAL_IDS.items()}
    assert groups == [ids[int(ds[i][D.LONGITUDINAL])] for i in range(len(ds))]


def test_balanced_sampling_evens_out_decision_types():
    groups = ["lead"] * 900 + ["yield"] * 90 + ["gap"] * 10
    for power, expected in ((0.0, (0.9, 0.09, 0.01)), (1.0, (1 / 3, 1 / 3, 1 / 3))):
        w = balanced_weights(groups, power)
        share = [w[:900].sum(), w[900:990].sum(), w[990:].sum()]
        np.testing.assert_allclose(share, expected, rtol=1e-9)
    w = balanced_weights(groups, 1.0)
    one = BalancedDistributedSampler(w, num_replicas=1, rank=0, seed=3)
    one.set_epoch(2)
    drawn = np.array(list(one))
    assert len(drawn) == len(one) == 1000
    assert abs((drawn >= 990).mean() - 1 / 3) < 0.06  # the 10 rare samples: a third of draws
    # the same (seed, epoch) gives the same order; another epoch another one
    one.set_epoch(2)
    assert np.array_equal(list(one), drawn)
    one.set_epoch(3)
    assert not np.array_equal(list(one), drawn)
    # two ranks split one shared draw (like DistributedSampler with drop_last)
    ranks = [BalancedDistributedSampler(w, num_replicas=2, rank=r, seed=3) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(2)
    a, b = list(ranks[0]), list(ranks[1])
    assert len(a) == len(b) == 500
    interleaved = np.empty(1000, dtype=int)
    interleaved[0::2], interleaved[1::2] = a, b
    assert np.array_equal(interleaved, drawn)


def test_balance_decisions_out_of_range_is_a_config_error(dataset, model_yaml, tmp_path):
    with pytest.raises(ConfigError, match="balance_decisions=1.5: use a value in"):
        _cfg(dataset, model_yaml, tmp_path / "run", "balance_decisions=1.5")
