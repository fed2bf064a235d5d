"""The VLA with a Hugging Face Qwen2.5-VL / Qwen3-VL / Cosmos-Reason backbone (`backbone.kind=hf`).

Same interface as `planner.model.vla.VLAModel` (encode_vision / prefill / decode_step /
denoise_step with explicit caches, masks and positions; `forward(batch) -> (loss, logs)`), so
the one host loop in planner/runner.py, the planner and the trainer run it unchanged.
`VLAModel(cfg, vocab)` returns an `HFVLAModel` when `cfg.backbone.kind == "hf"`.

Choices (documented in docs/MODEL.md):
- Prompt = for every camera x frame `<|vision_start|>` n x image tokens `<|vision_end|>` (the
  backbone's own ViT + merger features), then the ego-history, route and command tokens as
  EMBEDDINGS (learned projections into the backbone's hidden size, as the tiny model does):
  numbers stay numbers, and the prompt length is fixed by the rig.
- Text = this package's CoC tokenizer (trained on the CoC corpus, saved in the checkpoint).
  Its ids reuse rows [0, V) of the backbone's embedding and LM head (logits are cut to V);
  SFT teaches them. The backbone's image / vision-start / vision-end ids must lie outside
  [0, V) (checked).
- Rotary positions: the prompt's M-RoPE positions come from the backbone's `get_rope_index`
  (constant: the rig fixes the image grid); a text token in cache slot s sits at rotary
  position s + rope_delta on all three M-RoPE axes (FACTS.md). So the cache slots the runner
  passes as `positions` stay slots, and the rope delta is added here.
- Cache: the runner's preallocated (layers, B, kv, S, head_dim) float32 tensors. A duck-typed
  transformers cache (`SlotCache`) writes each layer's new K/V into per-sample slots and lets
  the layer attend to the whole buffer under the runner's mask (passed as a 4-D additive mask,
  which transformers uses as-is). Needs the sdpa or eager attention implementation.
- Action expert: `ActionExpert` with the backbone's layer count, kv heads, head size and
  RMSNorm eps (cfg.lm must name them: a mismatch is a ConfigError giving the values); layer i
  attends to backbone layer i's K/V. Its own tokens use 1-D rotary positions continuing after
  the text (slot + rope_delta).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from planner.config import ConfigError
from planner.errors import UserError
from planner.model import batch as B
from planner.model import flow
from planner.model.action_expert import ActionExpert
from planner.model.config import COMMANDS, EGO_FEATURES, ModelConfig
from planner.model.hf_backbone import (
    SUPPORTED_MODEL_TYPES,
    BackboneGeometry,
    HFBackbone,
    require_transformers,
)
from planner.model.lm import write_cache
from planner.model.vla import weighted_loss

log = logging.getLogger(__name__)

BACKBONE_CONFIG_FILE = "backbone_config.json"  # the HF config.json, inside a cocdrive checkpoint
_SPECIAL_IDS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")


class SlotCache:
    """The part of the transformers cache API the Qwen-VL attention layers call (`update`).

    With `slots` (B, T): writes the new K/V (B, kv, T, hd) of layer i into the preallocated
    buffers at those per-sample slots and returns the whole buffers (B, kv, S, hd) to attend to
    under the caller's mask. Without buffers: records each layer's K/V and returns them as they
    are (the full-sequence training / reference path). Written by hand because transformers'
    StaticCache writes every sample of a batch at the same positions, and the runner's k
    samples sit at different lengths."""

    def __init__(
        self,
        k: torch.Tensor | None = None,
        v: torch.Tensor | None = None,
        slots: torch.Tensor | None = None,
    ):
        self.slots = slots
        self.keys: list[torch.Tensor] = [] if k is None else list(k.unbind(0))
        self.values: list[torch.Tensor] = [] if v is None else list(v.unbind(0))

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *_, **__
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.slots is None:
            self.keys.append(key_states)
            self.values.append(value_states)
            return key_states, value_states
        self.keys[layer_idx] = write_cache(self.keys[layer_idx], key_states, self.slots)
        self.values[layer_idx] = write_cache(self.values[layer_idx], value_states, self.slots)
        return self.keys[layer_idx], self.values[layer_idx]

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """K, V (layers, B, kv, S, hd)."""
        return torch.stack(self.keys), torch.stack(self.values)


def check_geometry(cfg: ModelConfig, g: BackboneGeometry, source: str) -> None:
    """The expert is built from cfg.lm: its layer count, kv heads and head size must be the
    backbone's (expert layer i reads backbone layer i's K/V)."""
    want = {"lm.layers": g.layers, "lm.kv_heads": g.kv_heads, "lm.head_dim": g.head_dim}
    have = {
        "lm.layers": cfg.lm.layers,
        "lm.kv_heads": cfg.lm.kv_heads,
        "lm.head_dim": cfg.lm.head_dim,
    }
    wrong = [f"{k}={have[k]} (backbone: {want[k]})" for k in want if have[k] != want[k]]
    if wrong:
        fix = " ".join(f"{k}={v}" for k, v in want.items())
        raise ConfigError(
            f"the action expert must share layer count, key/value heads and head size with the "
            f"backbone's text model {source}: {', '.join(wrong)}; set {fix} (or build the config "
            "with planner.model.hf_vla.hf_model_config)"
        )
    if cfg.expert.heads % g.kv_heads:
        raise ConfigError(
            f"expert.heads={cfg.expert.heads} must be a multiple of the backbone's {g.kv_heads} "
            "key/value heads"
        )


def hf_model_config(cfg: ModelConfig, path: str | Path | None = None) -> ModelConfig:
    """`cfg` with backbone.kind=hf, backbone.path and lm.{layers,kv_heads,head_dim,...} read
    from the local backbone's config.json (no weights are loaded)."""
    root = Path(path or cfg.backbone.path)
    g = HFBackbone.read_geometry(root)
    lm = replace(
        cfg.lm,
        layers=g.layers,
        kv_heads=g.kv_heads,
        head_dim=g.head_dim,
        heads=g.heads,
        width=g.hidden,
        norm_eps=g.norm_eps,
        rope_base=g.rope_theta,
    )
    return replace(cfg, lm=lm, backbone=replace(cfg.backbone, kind="hf", path=str(root)))


class HFVLAModel(nn.Module):
    """Qwen-VL backbone (vision + reasoning LM) + ego/route/command projections + action expert.

    State dict: `backbone.*` (the transformers model's own names), the projections and
    `expert.*`. `self.cfg` is the given config with lm.width/heads/norm_eps/rope_base taken
    from the backbone and lm.max_seq_len sized to this prompt (what a checkpoint stores)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, backbone: HFBackbone | None = None):
        super().__init__()
        if backbone is None:
            if not cfg.backbone.path:
                raise ConfigError(
                    "backbone.kind=hf needs backbone.path: set backbone.path to a local "
                    "directory holding a Qwen2.5-VL / Qwen3-VL / Cosmos-Reason model saved with "
                    "save_pretrained (it is never downloaded)"
                )
            backbone = HFBackbone.load(cfg.backbone.path)
        g, hf = backbone.geometry, backbone.config
        check_geometry(cfg, g, f"at {cfg.backbone.path!r}" if cfg.backbone.path else "")
        text_vocab = hf.text_config.vocab_size
        if vocab_size > text_vocab:
            raise ConfigError(
                f"the CoC tokenizer has {vocab_size} tokens, the backbone's vocabulary only "
                f"{text_vocab}: lower tokenizer.vocab_size"
            )
        clash = [
            f"{n}={getattr(hf, n)}" for n in _SPECIAL_IDS if 0 <= getattr(hf, n, -1) < vocab_size
        ]
        if clash:
            raise ConfigError(
                f"the backbone's {', '.join(clash)} fall inside the CoC tokenizer's ids "
                f"[0, {vocab_size}): use a backbone whose vision special tokens lie above them"
            )
        self.vocab_size = vocab_size
        self.glue = backbone  # not a module: the image processor and prompt layout helpers
        self.backbone = backbone.model  # registered: its weights are part of this model
        v = cfg.vision
        vc = hf.vision_config
        unit = vc.patch_size * vc.spatial_merge_size
        if v.image_height_px % unit or v.image_width_px % unit:
            raise ConfigError(
                f"vision: {v.image_width_px}x{v.image_height_px} px frames are not multiples of "
                f"the backbone's patch x merge size ({unit} px): change the rig's image size"
            )
        images = v.cameras * v.frames
        grid = torch.tensor(
            [[1, v.image_height_px // vc.patch_size, v.image_width_px // vc.patch_size]] * images
        )
        self.image_tokens = images * int(grid[0].prod()) // vc.spatial_merge_size**2
        route_tokens = cfg.route_points // cfg.route_points_per_token
        self.extra_tokens = cfg.history_steps + route_tokens + 1
        # placeholder id 0 marks the embedded ego/route/command slots (plain text for M-RoPE)
        ids = backbone.prompt_ids(grid, [0] * self.extra_tokens)
        mm = (ids == hf.image_token_id).long()
        with torch.no_grad():
            pos, delta = self.backbone.model.get_rope_index(
                ids, mm_token_type_ids=mm, image_grid_thw=grid
            )
        self.register_buffer("grid", grid, persistent=False)
        self.register_buffer("prompt_ids", ids[0], persistent=False)
        self.register_buffer("image_mask", ids[0] == hf.image_token_id, persistent=False)
        self.register_buffer("prompt_positions", pos, persistent=False)  # (3, 1, P)
        self.rope_delta = int(delta.reshape(-1)[0])
        p_len = ids.shape[1]
        seq = max(p_len, cfg.prompt_tokens) + 1 + cfg.lm.max_reasoning_tokens + 2
        lm = replace(
            cfg.lm,
            width=g.hidden,
            heads=g.heads,
            norm_eps=g.norm_eps,
            rope_base=g.rope_theta,
            max_seq_len=seq,
        )
        self.cfg = replace(cfg, lm=lm).validate()

        width = g.hidden
        self.ego_proj = nn.Linear(EGO_FEATURES, width)
        self.ego_pos = nn.Parameter(torch.zeros(cfg.history_steps, width))
        self.route_proj = nn.Linear(2 * cfg.route_points_per_token, width)
        self.route_pos = nn.Parameter(torch.zeros(route_tokens, width))
        self.command_embed = nn.Embedding(COMMANDS, width)
        self.speed_limit_proj = nn.Linear(1, width)
        self.expert = ActionExpert(cfg.expert, lm)
        for module in (self.ego_proj, self.route_proj, self.command_embed, self.speed_limit_proj):
            module.apply(_init_weights)
        self.expert.apply(_init_weights)
        for p in (self.ego_pos, self.route_pos):
            nn.init.normal_(p, std=0.02)
        log.info(
            "hf VLA: %d prompt tokens (%d image), rope delta %d",
            p_len,
            self.image_tokens,
            self.rope_delta,
        )

    # ---- geometry -----------------------------------------------------------------------------
    @property
    def prompt_tokens(self) -> int:
        return int(self.prompt_ids.numel())

    def cache_geometry(self) -> tuple[int, int]:
        """(prompt tokens P, cache slots S) for the runner."""
        return self.prompt_tokens, self.cfg.lm.max_seq_len

    def empty_cache(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Zeroed float32 K, V (layers, B, kv_heads, S, head_dim) (the runner's numpy layout)."""
        c = self.cfg.lm
        shape = (c.layers, batch, c.kv_heads, c.max_seq_len, c.head_dim)
        return torch.zeros(shape), torch.zeros(shape)

    @property
    def text_model(self) -> nn.Module:
        return self.backbone.model.language_model

    @property
    def _dtype(self) -> torch.dtype:
        return self.text_model.embed_tokens.weight.dtype

    def save_backbone_config(self, directory: Path) -> None:
        """Write the backbone's config.json as BACKBONE_CONFIG_FILE (checkpoint save)."""
        from planner.io import atomic_write_text

        atomic_write_text(directory / BACKBONE_CONFIG_FILE, self.backbone.config.to_json_string())

    # ---- pieces ------------------------------------------------------------------------------
    def encode_vision(self, images: torch.Tensor) -> torch.Tensor:
        """(B, N_cam, T, H, W, 3) uint8 -> (B, image tokens, hidden x (1 + deepstack levels))
        float32: the merged ViT features and, for Qwen3-VL, its deepstack features side by
        side (split again in `prompt_embeddings`)."""
        b, n, t = images.shape[:3]
        frames = images.detach().to("cpu").numpy().reshape(b * n, t, *images.shape[3:])
        inputs = self.glue.image_inputs(frames)
        device = self.prompt_ids.device
        out = self.backbone.model.get_image_features(
            inputs["pixel_values"].to(device), image_grid_thw=inputs["image_grid_thw"].to(device)
        )
        parts = [torch.cat(list(out.pooler_output))]
        for level in getattr(out, "deepstack_features", None) or []:
            parts.append(torch.cat(list(level)))
        return torch.cat(parts, dim=-1).reshape(b, self.image_tokens, -1).float()

    def prompt_embeddings(
        self,
        vision_tokens: torch.Tensor,
        ego_history: torch.Tensor,
        route: torch.Tensor,
        command: torch.Tensor,
        speed_limit: torch.Tensor,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """-> prompt embeddings (B, P, hidden) and the deepstack features (one (B * image
        tokens, hidden) tensor per level; empty for Qwen2.5-VL)."""
        b, dt = vision_tokens.shape[0], self._dtype
        hidden = self.cfg.lm.width
        levels = list(vision_tokens.to(dt).split(hidden, dim=-1))
        ids = self.prompt_ids[None].expand(b, -1)
        x = self.text_model.embed_tokens(ids)
        mask = self.image_mask[None, :, None].expand_as(x)
        x = x.masked_scatter(mask, levels[0])
        pd = self.ego_proj.weight.dtype  # the projections may run in another dtype
        ego = self.ego_proj(ego_history.to(pd)) + self.ego_pos[None]
        route_tok = self.route_proj(route.to(pd)) + self.route_pos[None]
        cmd = self.command_embed(command) + self.speed_limit_proj(speed_limit[:, None].to(pd))
        extra = torch.cat([ego, route_tok, cmd[:, None]], dim=1).to(dt)
        x = torch.cat([x[:, : -self.extra_tokens], extra], dim=1)
        return x, [level.reshape(-1, hidden) for level in levels[1:]]

    def _run(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        cache: SlotCache,
        deepstack: list[torch.Tensor] | None = None,
        visual_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Backbone text model over embeddings x (B, T, hidden) at M-RoPE positions (3, B, T)
        with a boolean mask (B, T, S) -> final-normed hidden (B, T, hidden)."""
        additive = torch.zeros(mask.shape, dtype=x.dtype, device=x.device)
        additive = additive.masked_fill(~mask, torch.finfo(x.dtype).min)[:, None]
        extra: dict[str, Any] = {}
        if deepstack:
            extra = {"visual_pos_masks": visual_mask, "deepstack_visual_embeds": deepstack}
        out = self.text_model(
            inputs_embeds=x,
            position_ids=positions,
            attention_mask=additive,
            cache=cache,
            use_cache=True,
            **extra,
        )
        return out.last_hidden_state

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.backbone.lm_head(hidden)[..., : self.vocab_size]

    def text_positions(self, slots: torch.Tensor) -> torch.Tensor:
        """Cache slots (B, T) of text tokens -> M-RoPE positions (3, B, T)."""
        return (slots + self.rope_delta)[None].expand(3, -1, -1)

    # ---- inference graphs (planner/runner.py) --------------------------------------------------
    def prefill(
        self,
        vision_tokens: torch.Tensor,
        ego_history: torch.Tensor,
        route: torch.Tensor,
        command: torch.Tensor,
        speed_limit: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        attn_mask: torch.Tensor,
        positions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As VLAModel.prefill; `positions` (B, P) are the cache slots to fill."""
        x, deepstack = self.prompt_embeddings(
            vision_tokens, ego_history, route, command, speed_limit
        )
        b = x.shape[0]
        cache = SlotCache(k_cache.to(self._dtype), v_cache.to(self._dtype), positions)
        visual_mask = self.image_mask[None].expand(b, -1)
        rope = self.prompt_positions.expand(-1, b, -1)
        hidden = self._run(x, rope, attn_mask, cache, deepstack, visual_mask)
        k, v = cache.stacked()
        return self._logits(hidden[:, -1]).float(), k.float(), v.float()

    def decode_step(
        self,
        token_ids: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        attn_mask: torch.Tensor,
        positions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """token_ids (B, T) in cache slots `positions` (B, T) -> logits (B, T, V), K, V."""
        cache = SlotCache(k_cache.to(self._dtype), v_cache.to(self._dtype), positions)
        x = self.text_model.embed_tokens(token_ids)
        hidden = self._run(x, self.text_positions(positions), attn_mask, cache)
        k, v = cache.stacked()
        return self._logits(hidden).float(), k.float(), v.float()

    def denoise_step(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        context_mask: torch.Tensor,
        position_offset: torch.Tensor,
    ) -> torch.Tensor:
        """Flow velocity (B, A, 2 * steps_per_token); position_offset (B,) is the first action
        token's cache slot (the rope delta is added here)."""
        return self._expert(
            x_t, t, k_cache, v_cache, context_mask, position_offset + self.rope_delta
        )

    def _expert(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        context_mask: torch.Tensor,
        rope_offset: torch.Tensor,
    ) -> torch.Tensor:
        """The expert in its own dtype -> float32 velocity. A bf16 expert runs under autocast:
        its float32 Fourier time features would otherwise meet bf16 weights."""
        dt = self.expert.out_proj.weight.dtype
        args = (x_t.to(dt), t, k.to(dt), v.to(dt), context_mask, rope_offset)
        if dt == torch.float32:
            return self.expert(*args).float()
        with torch.autocast(x_t.device.type, dtype=dt):
            return self.expert(*args).float()

    # ---- full sequence (training, reference) -----------------------------------------------------
    def full_sequence(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prompt + text_ids in one causal pass, M-RoPE positions from the backbone's own
        get_rope_index over the whole sequence -> hidden (B, P + L, hidden), K, V
        (layers, B, kv, P + L, hd). The reference the cached path must equal."""
        vision = self.encode_vision(batch[B.CAMERAS])
        prompt, deepstack = self.prompt_embeddings(
            vision, batch[B.EGO_HISTORY], batch[B.ROUTE], batch[B.COMMAND], batch[B.SPEED_LIMIT]
        )
        text_ids = batch[B.TEXT_IDS]
        x = torch.cat([prompt, self.text_model.embed_tokens(text_ids)], dim=1)
        bsz, seq, _ = x.shape
        ids = torch.cat([self.prompt_ids[None].expand(bsz, -1), text_ids], dim=1)
        mm = (ids == self.backbone.config.image_token_id).long()
        with torch.no_grad():
            rope, _ = self.backbone.model.get_rope_index(
                ids, mm_token_type_ids=mm, image_grid_thw=self.grid.repeat(bsz, 1)
            )
        causal = torch.ones(seq, seq, dtype=torch.bool, device=x.device).tril()
        cache = SlotCache()
        hidden = self._run(x, rope, causal.expand(bsz, seq, seq), cache, deepstack, mm.bool())
        k, v = cache.stacked()
        return hidden, k, v

    def forward(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss and logs (the same terms and weights as VLAModel.forward): LM
        cross-entropy on the CoC text and trajectory tokens through the backbone's LM + flow
        matching of the expert on the backbone's K/V of prompt + reasoning."""
        loss_cfg = self.cfg.loss
        hidden, k, v = self.full_sequence(batch)
        text_ids = batch[B.TEXT_IDS]
        bsz, seq = hidden.shape[:2]
        p = self.prompt_tokens
        logits = self._logits(hidden[:, p : seq - 1]).float()  # position P + j predicts j + 1
        ce = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), text_ids[:, 1:].reshape(-1), reduction="none"
        ).view(bsz, -1)
        r_mask = batch[B.REASONING_TARGETS][:, 1:]
        t_mask = batch[B.TRAJECTORY_TARGETS][:, 1:]
        reasoning_loss = (ce * r_mask).sum() / r_mask.sum().clamp(min=1.0)
        trajectory_token_loss = (ce * t_mask).sum() / t_mask.sum().clamp(min=1.0)

        context_len = batch[B.CONTEXT_LEN]
        context_mask = torch.arange(seq, device=hidden.device)[None] < (p + context_len)[:, None]
        if loss_cfg.expert_stop_gradient:
            k, v = k.detach(), v.detach()
        offset = p + context_len + self.rope_delta
        n_flow = loss_cfg.flow_samples  # several (t, eps) draws per sample share its LM pass
        k, v, context_mask, offset = flow.repeat_context(n_flow, k, v, context_mask, offset)

        def velocity(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self._expert(x_t, t, k, v, context_mask, offset)

        controls = batch[B.CONTROLS]
        ex = self.cfg.expert
        flow_loss = flow.flow_matching_loss(
            velocity,
            controls.reshape(controls.shape[0], ex.action_tokens, 2 * ex.steps_per_token),
            self.cfg.flow.time_beta_a,
            self.cfg.flow.time_beta_b,
            generator,
            samples=n_flow,
        )
        return weighted_loss(loss_cfg, reasoning_loss, trajectory_token_loss, flow_loss)


def build_from_checkpoint(cfg: ModelConfig, vocab_size: int, root: Path) -> HFVLAModel:
    """The model skeleton of an hf checkpoint (weights are loaded by the caller).

    The backbone is rebuilt from the checkpoint's own BACKBONE_CONFIG_FILE (the checkpoint is
    self-contained); when `backbone.path` still exists locally its text geometry and vocabulary
    must match, since they are what the expert and the weights were built for."""
    from planner.model.checkpoint import CheckpointError

    transformers = require_transformers()
    path = root / BACKBONE_CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {str(root)!r} has backbone.kind=hf but no {BACKBONE_CONFIG_FILE}: "
            "re-save it with save_checkpoint"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{str(path)!r} is not valid JSON ({exc}): re-save it") from None
    model_type = data.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(f"{str(path)!r}: unsupported backbone model_type {model_type!r}")
    model_cls = getattr(transformers, SUPPORTED_MODEL_TYPES[model_type])
    hf_config = model_cls.config_class.from_dict(data)
    stored = HFBackbone.geometry_of(hf_config)
    local = Path(cfg.backbone.path) if cfg.backbone.path else None
    if local is not None and (local / "config.json").is_file():
        there = HFBackbone.read_geometry(local)
        vocab_here = HFBackbone.read_vocab_size(local)
        if there != stored or vocab_here != hf_config.text_config.vocab_size:
            raise CheckpointError(
                f"backbone.path {str(local)!r} holds a different model than the one this "
                f"checkpoint was trained on (text geometry {there}, vocab {vocab_here}; "
                f"checkpoint: {stored}, vocab {hf_config.text_config.vocab_size}): point "
                "backbone.path at the training backbone (override backbone.path=...)"
            )
    elif local is not None:
        log.info("backbone.path %s is absent; using the checkpoint's own backbone", local)
    try:
        check_geometry(cfg, stored, f"of checkpoint {str(root)!r}")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    model = model_cls._from_config(hf_config)
    try:
        return HFVLAModel(cfg, vocab_size, HFBackbone(model))
    except UserError as exc:
        raise CheckpointError(f"checkpoint {str(root)!r}: {exc}") from None


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
