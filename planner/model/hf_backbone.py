"""Optional Hugging Face vision-language backbone (Qwen2.5-VL / Qwen3-VL / Cosmos-Reason, which
is a Qwen2.5-VL fine-tune), loaded from a LOCAL directory (`backbone.path`), never downloaded.

What it gives the rest of the model: a prefill over camera frames + text that returns the
backbone's KV cache in this package's layout (layers, B, kv_heads, S, head_dim; keys after
the rotary embedding, as the tiny LM stores them), and an `ActionExpert` built with the
backbone's layer count, kv heads and head size so that expert layer i attends to backbone
layer i (FACTS.md: this works when those three match and the RMSNorm eps is the backbone's).

Caveat: the backbone's keys carry multimodal rotary positions (M-RoPE); the expert's own
tokens use 1-D rotary positions continuing after the text (`position_offset` = sequence
length + the backbone's rope delta), so the expert learns the mapping rather than reusing the
backbone's position code exactly.

Requires the `hf` extra: pip install 'cocdrive[hf]' (transformers >= 5). Images go through
`Qwen2VLImageProcessorPil` (the torchvision-based processors do not install beside the CPU
torch build); image placeholders are expanded here, without the model's chat processor.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from planner.errors import UserError
from planner.model.action_expert import ActionExpert
from planner.model.config import ActionExpertConfig, LanguageModelConfig

log = logging.getLogger(__name__)

# config.json model_type -> transformers class name
SUPPORTED_MODEL_TYPES = {
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
}


def require_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise UserError(
            "backbone.kind=hf needs Hugging Face transformers: pip install 'cocdrive[hf]'"
        ) from None
    return transformers


@dataclass(frozen=True)
class BackboneGeometry:
    """What the action expert must share with the backbone's text model."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    norm_eps: float
    rope_theta: float


class HFBackbone:
    """A loaded Qwen-VL model plus the glue to prefill it and read its KV cache."""

    def __init__(self, model: Any):
        self.model = model.eval()
        self.config = model.config
        self.geometry = self.geometry_of(self.config)

    @staticmethod
    def geometry_of(config: Any) -> BackboneGeometry:
        """The text model's geometry from a Qwen-VL config object."""
        text = config.text_config
        heads = text.num_attention_heads
        rope = getattr(text, "rope_parameters", None) or {}
        return BackboneGeometry(
            layers=text.num_hidden_layers,
            heads=heads,
            kv_heads=text.num_key_value_heads or heads,
            head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads,
            hidden=text.hidden_size,
            norm_eps=text.rms_norm_eps,
            rope_theta=float(rope.get("rope_theta", 10000.0)),
        )

    @classmethod
    def read_config(cls, path: str | Path) -> Any:
        """The config of a local backbone directory (no weights read)."""
        transformers = require_transformers()
        model_type = cls._model_type(Path(path))
        model_cls = getattr(transformers, SUPPORTED_MODEL_TYPES[model_type])
        return model_cls.config_class.from_pretrained(str(path), local_files_only=True)

    @classmethod
    def read_geometry(cls, path: str | Path) -> BackboneGeometry:
        return cls.geometry_of(cls.read_config(path))

    @classmethod
    def read_vocab_size(cls, path: str | Path) -> int:
        return int(cls.read_config(path).text_config.vocab_size)

    @staticmethod
    def _model_type(root: Path) -> str:
        config_file = root / "config.json"
        if not config_file.is_file():
            raise UserError(
                f"backbone.path {str(root)!r} has no config.json: point it at a local directory "
                "holding a Qwen2.5-VL / Qwen3-VL model saved with save_pretrained"
            )
        model_type = json.loads(config_file.read_text()).get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise UserError(
                f"backbone {str(root)!r} is a {model_type!r} model; supported: "
                f"{', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        return model_type

    @classmethod
    def load(cls, path: str | Path) -> HFBackbone:
        """Load from a local directory written by `save_pretrained` (no network access)."""
        transformers = require_transformers()
        root = Path(path)
        model_type = cls._model_type(root)
        model_cls = getattr(transformers, SUPPORTED_MODEL_TYPES[model_type])
        model = model_cls.from_pretrained(str(root), local_files_only=True)
        log.info("loaded %s backbone from %s", model_type, root)
        return cls(model)

    # ---- inputs -------------------------------------------------------------------------------
    def image_inputs(self, cameras: np.ndarray) -> dict[str, torch.Tensor]:
        """(N_cam, T, H, W, 3) uint8 -> pixel_values, image_grid_thw (one image per frame).

        H and W must be multiples of patch_size * spatial_merge_size so no resizing happens."""
        transformers = require_transformers()
        vision = self.config.vision_config
        n, t, h, w, _ = cameras.shape
        unit = vision.patch_size * vision.spatial_merge_size
        if h % unit or w % unit:
            raise UserError(
                f"camera frames {w}x{h} px are not multiples of the backbone's patch x merge size "
                f"({unit} px): change the rig's image size"
            )
        processor = transformers.Qwen2VLImageProcessorPil(
            patch_size=vision.patch_size,
            merge_size=vision.spatial_merge_size,
            temporal_patch_size=vision.temporal_patch_size,
            min_pixels=h * w,
            max_pixels=h * w,
        )
        images = [cameras[i, j] for i in range(n) for j in range(t)]
        out = processor(images=images, return_tensors="pt")
        return {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}

    def prompt_ids(self, image_grid_thw: torch.Tensor, text_ids: list[int]) -> torch.Tensor:
        """(1, S) ids: <vision_start> n x <image_pad> <vision_end> per image, then the text."""
        merge = self.config.vision_config.spatial_merge_size
        ids: list[int] = []
        for t, h, w in image_grid_thw.tolist():
            ids += [self.config.vision_start_token_id]
            ids += [self.config.image_token_id] * (t * h * w // (merge * merge))
            ids += [self.config.vision_end_token_id]
        return torch.tensor([ids + list(text_ids)], dtype=torch.long)

    # ---- prefill ------------------------------------------------------------------------------
    @torch.no_grad()
    def prefill(
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> logits (B, S, V), K and V (layers, B, kv, S, hd), rope_deltas (B, 1)."""
        mm_token_type_ids = (input_ids == self.config.image_token_id).long()
        out = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            image_grid_thw=image_grid_thw,
            mm_token_type_ids=mm_token_type_ids,
            use_cache=True,
        )
        cache = out.cache
        k = torch.stack([layer.keys for layer in cache.layers])
        v = torch.stack([layer.values for layer in cache.layers])
        _, rope_deltas = self.model.model.get_rope_index(
            input_ids, image_grid_thw=image_grid_thw, mm_token_type_ids=mm_token_type_ids
        )
        return out.logits, k, v, rope_deltas

    def lm_config(self) -> LanguageModelConfig:
        """The backbone's text geometry as a LanguageModelConfig (for the expert)."""
        g = self.geometry
        return replace(
            LanguageModelConfig(),
            width=g.hidden,
            layers=g.layers,
            heads=g.heads,
            kv_heads=g.kv_heads,
            head_dim=g.head_dim,
            norm_eps=g.norm_eps,
            rope_base=g.rope_theta,
        )


def make_expert(backbone: HFBackbone, cfg: ActionExpertConfig) -> ActionExpert:
    """An action expert whose layer i attends to backbone layer i's K/V."""
    lm = backbone.lm_config()
    if cfg.heads % lm.kv_heads:
        raise UserError(
            f"expert.heads={cfg.heads} must be a multiple of the backbone's "
            f"{lm.kv_heads} key/value heads"
        )
    return ActionExpert(cfg, lm)
