"""The decode and denoise graphs trace with torch.export (the route to ONNX): cache, mask and
positions are explicit inputs, with no data-dependent Python control flow."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.planner.model.tiny import tiny_config, tiny_model, tiny_tokenizer


class _Decode(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, token_ids, k_cache, v_cache, attn_mask, positions):
        return self.model.decode_step(token_ids, k_cache, v_cache, attn_mask, positions)


class _Denoise(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x_t, t, k_cache, v_cache, context_mask, position_offset):
        return self.model.denoise_step(x_t, t, k_cache, v_cache, context_mask, position_offset)


@pytest.mark.slow
@torch.no_grad()
def test_decode_and_denoise_export_with_explicit_cache() -> None:
    torch.set_num_threads(1)
    cfg = tiny_config()
    model = tiny_model(cfg, tiny_tokenizer(cfg))
    k, v = model.lm.empty_cache(2)
    k.normal_()
    v.normal_()
    s = cfg.lm.max_seq_len
    decode_args = (
        torch.tensor([[3], [4]]),
        k,
        v,
        torch.arange(s)[None, None].expand(2, 1, s) <= torch.tensor([20, 25])[:, None, None],
        torch.tensor([[20], [25]]),
    )
    exported = torch.export.export(_Decode(model), decode_args).module()
    for got, want in zip(exported(*decode_args), model.decode_step(*decode_args)):
        assert torch.allclose(got, want, atol=1e-6)
    denoise_args = (
        torch.randn(2, 16, 8),
        torch.tensor([0.1, 0.7]),
        k,
        v,
        torch.arange(s)[None].expand(2, s) < torch.tensor([[22], [27]]),
        torch.tensor([22, 27]),
    )
    exported = torch.export.export(_Denoise(model), denoise_args).module()
    assert torch.allclose(exported(*denoise_args), model.denoise_step(*denoise_args), atol=1e-6)
