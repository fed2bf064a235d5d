"""Hugging Face Qwen2.5-VL backbone from a local directory (a tiny random-weight config that
the test builds and saves; never a download) feeding the action expert."""

from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip(
    "transformers", reason="the hf extra is not installed (pip install 'cocdrive[hf]')"
)

from planner.errors import UserError  # noqa: E402
from planner.model.config import ActionExpertConfig  # noqa: E402
from planner.model.hf_backbone import HFBackbone, make_expert  # noqa: E402

IMAGE_PAD, VIDEO_PAD, VISION_START, VISION_END = 120, 121, 122, 123


@pytest.fixture(scope="module")
def backbone_dir(tmp_path_factory):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = transformers.Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=128,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            # Qwen2.5-VL: sum(mrope_section) == head_dim / 2 (head_dim = 64 / 4)
            rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e4},
            bos_token_id=None,
            eos_token_id=None,
        ),
        vision_config=dict(
            depth=1,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            patch_size=8,
            spatial_merge_size=2,
            temporal_patch_size=2,
            out_hidden_size=64,  # == text hidden size
            fullatt_block_indexes=[0],
            window_size=32,
        ),
        image_token_id=IMAGE_PAD,
        video_token_id=VIDEO_PAD,
        vision_start_token_id=VISION_START,
        vision_end_token_id=VISION_END,
    )
    path = tmp_path_factory.mktemp("qwen") / "tiny-qwen2_5_vl"
    transformers.Qwen2_5_VLForConditionalGeneration(cfg).save_pretrained(path)
    return path


def test_backbone_prefill_feeds_the_action_expert(backbone_dir) -> None:
    backbone = HFBackbone.load(backbone_dir)
    g = backbone.geometry
    assert (g.layers, g.kv_heads, g.head_dim) == (2, 2, 16)
    cameras = np.random.default_rng(0).integers(0, 255, (2, 1, 32, 64, 3)).astype(np.uint8)
    images = backbone.image_inputs(cameras)
    assert images["image_grid_thw"].tolist() == [[1, 4, 8], [1, 4, 8]]
    input_ids = backbone.prompt_ids(images["image_grid_thw"], [5, 6, 7])
    assert input_ids.shape == (1, 2 * (1 + 8 + 1) + 3)
    logits, k, v, rope_deltas = backbone.prefill(input_ids, **images)
    seq = input_ids.shape[1]
    assert k.shape == v.shape == (2, 1, 2, seq, 16)
    assert logits.shape == (1, seq, 128) and torch.isfinite(k).all()
    # the cache equals a plain forward's cache (nothing re-ordered or dropped)
    with torch.no_grad():
        ref = backbone.model(
            input_ids=input_ids,
            **images,
            mm_token_type_ids=(input_ids == IMAGE_PAD).long(),
            use_cache=True,
        )
    assert torch.allclose(k[1], ref.cache.layers[1].keys) and torch.allclose(logits, ref.logits)

    expert_cfg = ActionExpertConfig(width=32, heads=4, mlp_hidden=64, fourier_features=8)
    expert = make_expert(backbone, expert_cfg).eval()
    x_t = torch.randn(1, expert_cfg.action_tokens, 2 * expert_cfg.steps_per_token)
    with torch.no_grad():
        velocity = expert(
            x_t,
            torch.tensor([0.5]),
            k,
            v,
            torch.ones(1, seq, dtype=torch.bool),
            (seq + rope_deltas.reshape(-1)).long(),
        )
    assert velocity.shape == x_t.shape and torch.isfinite(velocity).all()


def test_backbone_errors(tmp_path, backbone_dir) -> None:
    with pytest.raises(UserError, match="no config.json"):
        HFBackbone.load(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(UserError, match="'bert' model; supported"):
        HFBackbone.load(tmp_path)
    backbone = HFBackbone.load(backbone_dir)
    with pytest.raises(UserError, match="multiples of the backbone"):
        backbone.image_inputs(np.zeros((1, 1, 30, 64, 3), np.uint8))
    with pytest.raises(UserError, match="multiple of the backbone's 2"):
        make_expert(backbone, ActionExpertConfig(heads=3))
