"""The VLA with a Hugging Face Qwen-VL backbone (backbone.kind=hf) end to end: planner, runner
parity with full recomputation, expert/backbone K/V wiring, training, checkpoints, bad config.

The backbones are tiny random-weight Qwen2.5-VL and Qwen3-VL configs that the test builds and
saves (never a download)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

transformers = pytest.importorskip(
    "transformers", reason="the hf extra is not installed (pip install 'cocdrive[hf]')"
)

from planner.config import ConfigError  # noqa: E402
from planner.errors import UserError  # noqa: E402
from planner.model import batch as B  # noqa: E402
from planner.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402
from planner.model.hf_vla import HFVLAModel, hf_model_config  # noqa: E402
from planner.model.vla import VLAModel  # noqa: E402
from planner.planners.vla import VLAPlanner  # noqa: E402
from planner.runner import Runner, RunOptions, TorchBackend  # noqa: E402
from planner.types import Trajectory  # noqa: E402
from tests.planner.model.tiny import LABELS, planner_input, tiny_config, tiny_tokenizer  # noqa: E402

VOCAB = 400  # > the CoC tokenizer's 360 ids; the vision special tokens sit above them
IMAGE_PAD, VIDEO_PAD, VISION_START, VISION_END = 396, 397, 398, 399
SPECIAL = dict(
    image_token_id=IMAGE_PAD,
    video_token_id=VIDEO_PAD,
    vision_start_token_id=VISION_START,
    vision_end_token_id=VISION_END,
)
TEXT = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    bos_token_id=None,
    eos_token_id=None,
)


def qwen2_5_vl(head_dim: int = 16) -> transformers.PreTrainedModel:
    text = dict(TEXT, hidden_size=4 * head_dim)
    # Qwen2.5-VL: sum(mrope_section) == head_dim / 2
    half = head_dim // 2
    text["rope_parameters"] = {
        "rope_type": "default",
        "mrope_section": [half - 2 * (half // 3), half // 3, half // 3],
        "rope_theta": 1e4,
    }
    cfg = transformers.Qwen2_5_VLConfig(
        text_config=text,
        vision_config=dict(
            depth=1,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            patch_size=8,
            spatial_merge_size=2,
            temporal_patch_size=2,
            out_hidden_size=4 * head_dim,  # == text hidden size
            fullatt_block_indexes=[0],
            window_size=32,
        ),
        **SPECIAL,
    )
    return transformers.Qwen2_5_VLForConditionalGeneration(cfg)


def qwen3_vl() -> transformers.PreTrainedModel:
    text = dict(TEXT, head_dim=16)
    text["rope_parameters"] = {
        "rope_type": "default",
        "mrope_section": [4, 2, 2],
        "mrope_interleaved": True,
        "rope_theta": 1e4,
    }
    cfg = transformers.Qwen3VLConfig(
        text_config=text,
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            patch_size=8,
            spatial_merge_size=2,
            temporal_patch_size=2,
            out_hidden_size=64,
            num_position_embeddings=16,  # a perfect square
            deepstack_visual_indexes=[0],
        ),
        tie_word_embeddings=True,  # exercises the checkpoint's shared-tensor handling
        **SPECIAL,
    )
    return transformers.Qwen3VLForConditionalGeneration(cfg)


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("hf")
    paths = {}
    for name, build in (("qwen2_5_vl", qwen2_5_vl), ("qwen3_vl", qwen3_vl)):
        torch.manual_seed(0)
        paths[name] = root / name
        build().save_pretrained(paths[name])
    return paths


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer(tiny_config())


def hf_config(path, *extra: str):
    return hf_model_config(tiny_config("backbone.kind=hf", *extra), path)


def build(path, tokenizer, seed: int = 0) -> HFVLAModel:
    torch.manual_seed(seed)
    model = VLAModel(hf_config(path), tokenizer.vocab_size)  # dispatches on backbone.kind
    assert isinstance(model, HFVLAModel)
    return model.eval()


def examples(cfg, tokenizer, n: int = 2):
    from planner.model.batch import collate, make_example

    out = []
    for i in range(n):
        controls = np.zeros((64, 2))
        controls[:, 0] = -0.5 * (i + 1)
        out.append(make_example(planner_input(cfg, seed=i), controls, LABELS[i], tokenizer, cfg))
    return collate(out, tokenizer.pad_id)


@pytest.mark.parametrize("kind", ["qwen2_5_vl", "qwen3_vl"])
def test_cached_runner_equals_full_recomputation(backbones, tokenizer, kind) -> None:
    model = build(backbones[kind], tokenizer)
    cfg = model.cfg
    runner = Runner(TorchBackend(model), cfg, tokenizer)
    inp = planner_input(cfg)
    prompt = B.prompt_arrays(inp, cfg)
    options = RunOptions.from_config(cfg, max_reasoning_tokens=6)
    options.fixed_reasoning_length = True  # random weights: decode exactly 6 tokens
    result = runner.run(prompt, options, np.random.default_rng(0))
    ids = result.reasoning_ids[0]
    assert len(ids) == 6 and result.controls.shape == (1, 64, 2)

    # the same sequence in one causal pass, positions from the backbone's own get_rope_index
    text = [tokenizer.cot_id, *ids, tokenizer.end_cot_id, tokenizer.traj_id]
    batch = {key: torch.as_tensor(np.asarray(value))[None] for key, value in prompt.items()}
    batch[B.TEXT_IDS] = torch.tensor([text])
    with torch.no_grad():
        hidden, k_ref, v_ref = model.full_sequence(batch)
        logits = model._logits(hidden)
    p, n = model.prompt_tokens, len(text)
    valid = result.context_mask[0]
    assert valid.sum() == p + n and valid[: p + n].all()
    k_run = result.k_cache[:, 0, :, : p + n]
    v_run = result.v_cache[:, 0, :, : p + n]
    assert np.abs(k_run - k_ref[:, 0].numpy()).max() < 1e-5
    assert np.abs(v_run - v_ref[:, 0].numpy()).max() < 1e-5
    # greedy decoding picked the full pass's argmax after <cot> and each reasoning token
    greedy = logits[0, p : p + 6].argmax(-1).tolist()
    assert greedy == ids
    # a cached decode step of the last two tokens gives the full pass's logits
    last = torch.tensor([[tokenizer.end_cot_id, tokenizer.traj_id]])
    slots = torch.tensor([[p + n - 2, p + n - 1]])
    step_mask = torch.from_numpy(valid)[None, None].repeat(1, 2, 1)
    step_mask[0, 0, p + n - 1] = False  # causal between the two
    with torch.no_grad():
        step_logits, _, _ = model.decode_step(
            last,
            torch.from_numpy(result.k_cache),
            torch.from_numpy(result.v_cache),
            step_mask,
            slots,
        )
    assert (step_logits[0] - logits[0, p + n - 2 :]).abs().max() < 1e-5

    # expert layer i reads backbone layer i's K/V: one expert block per text layer, same
    # kv heads and head size, and the cache it sees is exactly the backbone's
    text_cfg = model.backbone.config.text_config
    assert len(model.expert.blocks) == text_cfg.num_hidden_layers == result.k_cache.shape[0]
    attn = model.expert.blocks[0].attn
    assert (attn.kv_heads, attn.head_dim) == (text_cfg.num_key_value_heads, 16)
    assert result.k_cache.shape[2:] == (2, cfg.lm.max_seq_len, 16)
    # changing only layer 1's K/V changes the expert's output (it is read, layer by layer)
    x = torch.randn(1, cfg.expert.action_tokens, 2 * cfg.expert.steps_per_token)
    args = (torch.tensor([0.3]), torch.from_numpy(valid[None]), torch.tensor([p + n]))
    k0 = torch.from_numpy(result.k_cache)
    v0 = torch.from_numpy(result.v_cache)
    k1 = k0.clone()
    k1[1] += 1.0
    with torch.no_grad():
        base = model.denoise_step(x, args[0], k0, v0, *args[1:])
        moved = model.denoise_step(x, args[0], k1, v0, *args[1:])
    assert not torch.allclose(base, moved)


def test_planner_returns_trajectory_reasoning_and_timings(backbones, tokenizer) -> None:
    model = build(backbones["qwen2_5_vl"], tokenizer)
    planner = VLAPlanner(TorchBackend(model), model.cfg, tokenizer, max_reasoning_tokens=5)
    out = planner.plan(planner_input(model.cfg))
    assert isinstance(out.trajectory, Trajectory) and len(out.trajectory.xy) == 64
    assert np.isfinite(out.trajectory.xy).all()
    assert out.reasoning is not None and isinstance(out.reasoning.text, str)
    assert set(out.timings_ms) >= {"vision", "prefill", "decode", "denoise", "total"}
    fast = VLAPlanner(TorchBackend(model), model.cfg, tokenizer, mode="fast", samples=2)
    out = fast.plan(planner_input(model.cfg))
    assert out.reasoning is None and len(fast.last_trajectories) == 2
    # released checkpoints load in bf16: a bf16 backbone (and a bf16 everything) still plans
    model.backbone.to(torch.bfloat16)
    for _ in range(2):
        out = VLAPlanner(TorchBackend(model), model.cfg, tokenizer, max_reasoning_tokens=3).plan(
            planner_input(model.cfg)
        )
        assert np.isfinite(out.trajectory.xy).all() and out.reasoning is not None
        model.to(torch.bfloat16)


def test_training_step_reduces_loss(backbones, tokenizer) -> None:
    model = build(backbones["qwen3_vl"], tokenizer).train()
    batch = examples(model.cfg, tokenizer)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(8):
        loss, logs = model(batch, torch.Generator().manual_seed(step % 2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(logs["loss"])
    assert set(logs) == {"loss", "reasoning_ce", "trajectory_token_ce", "flow_mse"}
    assert losses[-1] < 0.7 * losses[0], losses
    # gradients reach the backbone's vision tower and LM as well as the expert
    assert model.backbone.model.visual.patch_embed.proj.weight.grad.abs().sum() > 0
    assert model.text_model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["qwen2_5_vl", "qwen3_vl"])
def test_checkpoint_round_trip(backbones, tokenizer, tmp_path, kind) -> None:
    model = build(backbones[kind], tokenizer, seed=3)
    save_checkpoint(tmp_path / "ckpt", model, tokenizer)
    ckpt = load_checkpoint(tmp_path / "ckpt")
    assert isinstance(ckpt.model, HFVLAModel) and ckpt.config == model.cfg
    for (name, a), b in zip(model.state_dict().items(), ckpt.model.state_dict().values()):
        assert torch.equal(a, b), name
    inp = planner_input(model.cfg)
    outs = [
        VLAPlanner(TorchBackend(m), model.cfg, tokenizer, max_reasoning_tokens=3).plan(inp)
        for m in (model, ckpt.model)
    ]
    assert np.array_equal(outs[0].trajectory.xy, outs[1].trajectory.xy)
    # the checkpoint is self-contained: it loads without the backbone directory ...
    moved = load_checkpoint(tmp_path / "ckpt", overrides=["backbone.path=/nonexistent/qwen"])
    assert isinstance(moved.model, HFVLAModel)
    # ... but a backbone.path holding another model is refused
    other = tmp_path / "other"
    qwen2_5_vl(head_dim=8).save_pretrained(other)
    with pytest.raises(CheckpointError, match="different model"):
        load_checkpoint(tmp_path / "ckpt", overrides=[f"backbone.path={other}"])


def test_bad_backbone_config(backbones, tokenizer, tmp_path) -> None:
    cfg = tiny_config("backbone.kind=hf")
    with pytest.raises(ConfigError, match="needs backbone.path"):
        VLAModel(cfg, tokenizer.vocab_size)
    missing = dataclasses.replace(
        cfg, backbone=dataclasses.replace(cfg.backbone, path=str(tmp_path))
    )
    with pytest.raises(UserError, match="has no config.json: point it at a local directory"):
        VLAModel(missing, tokenizer.vocab_size)
    # the tiny LM geometry (2 layers, 1 kv head, head_dim 16) is not the backbone's (2 kv heads)
    wrong = dataclasses.replace(
        cfg, backbone=dataclasses.replace(cfg.backbone, path=str(backbones["qwen2_5_vl"]))
    )
    with pytest.raises(ConfigError, match=r"lm.kv_heads=1 \(backbone: 2\).*set lm.layers=2"):
        VLAModel(wrong, tokenizer.vocab_size)
    other = tmp_path / "hd8"
    qwen2_5_vl(head_dim=8).save_pretrained(other)
    sized_for_16 = hf_config(backbones["qwen2_5_vl"])
    with pytest.raises(ConfigError, match=r"lm.head_dim=16 \(backbone: 8\)"):
        HFVLAModel(
            dataclasses.replace(
                sized_for_16, backbone=dataclasses.replace(cfg.backbone, path=str(other))
            ),
            tokenizer.vocab_size,
        )
    with pytest.raises(ConfigError, match="multiples of the backbone's patch"):
        VLAModel(
            hf_config(
                backbones["qwen2_5_vl"],
                "vision.patch_px=8",
                "vision.image_height_px=40",
                "lm.max_seq_len=200",
            ),
            360,
        )
