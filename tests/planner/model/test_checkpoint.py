"""Checkpoint round trip and the errors for damaged or mismatched checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from planner.model import batch as B
from planner.model.checkpoint import (
    CONFIG_FILE,
    META_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from planner.planners import make_planner
from planner.runner import Runner, RunOptions, TorchBackend
from tests.planner.model.tiny import planner_input, tiny_config, tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.set_num_threads(1)
    cfg = tiny_config()
    tok = tiny_tokenizer(cfg)
    model = tiny_model(cfg, tok, seed=3)
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", model, tok, {"step": 7})
    return path, cfg, tok, model


def _copy(src, dst):
    dst.mkdir()
    for name in (WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE, META_FILE):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_round_trip_gives_identical_outputs(saved) -> None:
    path, cfg, tok, model = saved
    ckpt = load_checkpoint(path)
    assert ckpt.meta["step"] == 7 and ckpt.meta["git_revision"]
    assert ckpt.meta["normalization"]["accel_std_mps2"] == pytest.approx(0.681)
    assert ckpt.config == cfg and ckpt.tokenizer.vocab_size == tok.vocab_size
    prompt = B.prompt_arrays(planner_input(cfg), cfg)
    opts = RunOptions(max_reasoning_tokens=4)
    a = Runner(TorchBackend(model), cfg, tok).run(prompt, opts, np.random.default_rng(0))
    b = Runner(TorchBackend(ckpt.model), ckpt.config, ckpt.tokenizer).run(
        prompt, opts, np.random.default_rng(0)
    )
    assert a.reasoning_ids == b.reasoning_ids and np.array_equal(a.controls, b.controls)
    # the planner registry loads a checkpoint directory by path
    planner = make_planner(str(path), mode="fast", num_threads=1, seed=3)
    assert len(planner.plan(planner_input(cfg)).trajectory) == 64
    with pytest.raises(CheckpointError, match="unknown VLA planner option 'sampels'.*'samples'"):
        make_planner(str(path), sampels=3)


def test_truncated_weights_are_reported(saved, tmp_path) -> None:
    bad = _copy(saved[0], tmp_path / "bad")
    data = (bad / WEIGHTS_FILE).read_bytes()
    (bad / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt.*truncated"):
        load_checkpoint(bad)


def test_corrupt_weights_without_checksum_are_reported(saved, tmp_path) -> None:
    bad = _copy(saved[0], tmp_path / "bad")
    meta = json.loads((bad / META_FILE).read_text())
    del meta["weights_sha256"]
    (bad / META_FILE).write_text(json.dumps(meta))
    (bad / WEIGHTS_FILE).write_bytes(b"\x07" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(bad)


def test_config_weights_mismatch_names_tensors(saved, tmp_path) -> None:
    bad = _copy(saved[0], tmp_path / "bad")
    cfg = yaml.safe_load((bad / CONFIG_FILE).read_text())
    cfg["lm"]["mlp_hidden"] = 64
    (bad / CONFIG_FILE).write_text(yaml.safe_dump(cfg))
    with pytest.raises(CheckpointError, match=r"shape mismatch.*lm\.blocks\.0\.mlp"):
        load_checkpoint(bad)


def test_missing_tokenizer_and_meta_are_reported(saved, tmp_path) -> None:
    bad = _copy(saved[0], tmp_path / "bad")
    (bad / TOKENIZER_FILE).unlink()
    with pytest.raises(CheckpointError, match="tokenizer file .* is missing"):
        load_checkpoint(bad)
    (bad / META_FILE).unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(bad)


def test_normalisation_mismatch_is_reported(saved, tmp_path) -> None:
    bad = _copy(saved[0], tmp_path / "bad")
    cfg = yaml.safe_load((bad / CONFIG_FILE).read_text())
    cfg["normalization"]["accel_std_mps2"] = 1.0
    (bad / CONFIG_FILE).write_text(yaml.safe_dump(cfg))
    with pytest.raises(CheckpointError, match="normalisation stats"):
        load_checkpoint(bad)


def test_a_key_given_twice_in_the_config_is_refused(saved, tmp_path) -> None:
    """An edit that appends `key: value` beside an existing key (PyYAML keeps the last one
    silently) is refused with both line numbers; `sim run` says so before any worker starts."""
    bad = _copy(saved[0], tmp_path / "bad")
    text = (bad / CONFIG_FILE).read_text()
    assert "  noise_scale: " in text
    (bad / CONFIG_FILE).write_text(
        text.replace("  noise_scale: ", "  noise_scale: 0.0\n  noise_scale: ", 1)
    )
    with pytest.raises(
        CheckpointError, match=r"'noise_scale' is given twice \(lines \d+ and \d+\)"
    ):
        load_checkpoint(bad)
    from planner.planners import check_planner_spec

    with pytest.raises(CheckpointError, match="given twice"):
        check_planner_spec(str(bad))
