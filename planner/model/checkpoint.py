"""Checkpoint directory: everything needed to rebuild and trust a trained VLA.

    <dir>/model.safetensors   weights (safetensors: no pickle, memory-mappable)
    <dir>/config.yaml         the full ModelConfig (the model rebuilds itself from it)
    <dir>/tokenizer.json      the `tokenizers` BPE with the special and bin tokens
    <dir>/meta.json           format version, git revision, normalisation stats, sha256 of the
                              weights, parameter count, free-form training info

`load_checkpoint` checks each part and raises `CheckpointError` (a UserError: one line in the
CLI) naming the file and the fix: missing file, truncated or corrupt weights (sha256 and the
safetensors header), weights that do not match the config (naming the tensors), a tokenizer
that does not match the config, normalisation stats that disagree with the config.
Every file is written atomically; the directory is complete once meta.json exists.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from planner.config import ConfigError, from_dict, load_yaml, to_dict
from planner.errors import UserError
from planner.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from planner.model.config import ModelConfig, NormalizationConfig
from planner.model.tokenizer import CocTokenizer

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "meta.json"


class CheckpointError(UserError):
    """A checkpoint that cannot be loaded; the message says which part and what to do."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (eval mode, CPU), its config, tokenizer and meta."""

    path: Path
    config: ModelConfig
    tokenizer: CocTokenizer
    model: Any  # planner.model.vla.VLAModel
    meta: dict[str, Any] = field(default_factory=dict)


def _import_safetensors():
    try:
        import safetensors.torch as st
    except ImportError:
        raise CheckpointError(
            "checkpoints need the 'safetensors' package: pip install safetensors"
        ) from None
    return st


def git_revision(repo_dir: str | Path | None = None) -> str:
    """The current commit (with '-dirty' when the tree has changes), or 'unknown'."""
    cwd = Path(repo_dir) if repo_dir else Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def save_checkpoint(
    path: str | Path,
    model: Any,
    tokenizer: CocTokenizer,
    extra_meta: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint directory (atomically, file by file; meta.json last)."""
    st = _import_safetensors()
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    cfg: ModelConfig = model.cfg
    if tokenizer.vocab_size != model.vocab_size:
        raise CheckpointError(
            f"tokenizer has {tokenizer.vocab_size} tokens but the model's vocabulary is "
            f"{model.vocab_size}: save the tokenizer the model was built with"
        )
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    state = _unshare(state)
    weights = st.save(state, metadata={"format": "pt", "cocdrive_format": str(FORMAT_VERSION)})
    atomic_write_bytes(out / WEIGHTS_FILE, weights)
    atomic_write_text(out / CONFIG_FILE, yaml.safe_dump(to_dict(cfg), sort_keys=False))
    tokenizer.save(out / TOKENIZER_FILE)
    if hasattr(model, "save_backbone_config"):  # backbone.kind=hf: the HF config.json too
        model.save_backbone_config(out)
    meta = {
        "format_version": FORMAT_VERSION,
        "git_revision": git_revision(),
        "normalization": to_dict(cfg.normalization),
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "weights_bytes": len(weights),
        "parameters": int(sum(t.numel() for t in state.values())),
        "vocab_size": tokenizer.vocab_size,
        **(extra_meta or {}),
    }
    atomic_write_json(out / META_FILE, meta)
    log.info("saved checkpoint %s (%d parameters)", out, meta["parameters"])
    return out


def _unshare(state: dict[str, Any]) -> dict[str, Any]:
    """safetensors refuses tensors that share memory (tied embedding / LM head of HF
    backbones): later aliases become copies (loading assigns both names again)."""
    seen: set[int] = set()
    out = {}
    for key, value in state.items():
        ptr = value.untyped_storage().data_ptr()
        out[key] = value.clone() if ptr in seen and value.numel() else value
        seen.add(ptr)
    return out


def _read_meta(root: Path) -> dict[str, Any]:
    meta_path = root / META_FILE
    if not meta_path.is_file():
        raise CheckpointError(
            f"checkpoint {str(root)!r} has no {META_FILE}: it is incomplete (interrupted save?) "
            "or not a cocdrive checkpoint; re-save it with save_checkpoint"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{str(meta_path)!r} is not valid JSON ({exc}): re-save it") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(root)!r} has format version {meta.get('format_version')!r}; this "
            f"cocdrive reads version {FORMAT_VERSION}: use the matching cocdrive release"
        )
    return meta


def _read_config(root: Path, overrides: list[str] | tuple[str, ...]) -> ModelConfig:
    path = root / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(root)!r} has no {CONFIG_FILE}: re-save it")
    try:
        data = load_yaml(path.read_text()) or {}
        if overrides:
            from planner.config import apply_overrides

            data = apply_overrides(data, list(overrides))
        return from_dict(ModelConfig, data).validate()
    except (yaml.YAMLError, ConfigError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint config {str(path)!r} is invalid: {exc}") from None


def _read_weights(root: Path, meta: dict[str, Any]) -> dict[str, Any]:
    st = _import_safetensors()
    path = root / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(root)!r} has no {WEIGHTS_FILE}: re-save it")
    data = path.read_bytes()
    want = meta.get("weights_sha256")
    if want and hashlib.sha256(data).hexdigest() != want:
        size_note = ""
        if meta.get("weights_bytes") and len(data) != meta["weights_bytes"]:
            size_note = f" ({len(data)} bytes, expected {meta['weights_bytes']}: truncated?)"
        raise CheckpointError(
            f"{str(path)!r} is corrupt: its sha256 does not match meta.json{size_note}; "
            "copy the checkpoint again or re-save it"
        )
    try:
        return st.load(data)
    except Exception as exc:  # safetensors raises SafetensorError (not an OSError)
        raise CheckpointError(
            f"{str(path)!r} is not a readable safetensors file ({exc}): the file is truncated "
            "or corrupt; copy the checkpoint again"
        ) from None


def check_state_dict(model: Any, state: dict[str, Any]) -> None:
    """Raise CheckpointError naming missing, unexpected and mis-shaped tensors."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = sorted(
        f"{k}: weights {got[k]} vs config {expected[k]}"
        for k in set(expected) & set(got)
        if expected[k] != got[k]
    )
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"shape mismatch {shapes[:5]}")
        if missing:
            parts.append(f"missing tensors {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected[:5]}")
        raise CheckpointError(
            "weights do not match config.yaml: " + "; ".join(parts) + ". The config was edited "
            "or belongs to another checkpoint: restore the config that trained these weights"
        )


def load_checkpoint(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), device: str = "cpu"
) -> Checkpoint:
    """Load and check a checkpoint directory (see the module docstring).

    `overrides` change inference-only keys (e.g. `inference.samples=6`, `flow.euler_steps=5`);
    an override that changes the architecture fails the weights check."""
    from planner.model.vla import VLAModel

    root = Path(path)
    if root.is_file():
        root = root.parent
    if not root.is_dir():
        raise CheckpointError(f"checkpoint directory {str(root)!r} does not exist")
    meta = _read_meta(root)
    cfg = _read_config(root, overrides)
    # Keys added to NormalizationConfig after a checkpoint was written read as their defaults.
    saved_norm = meta.get("normalization")
    if saved_norm is not None:
        saved_norm = {**to_dict(NormalizationConfig()), **saved_norm}
    if saved_norm is not None and saved_norm != to_dict(cfg.normalization):
        raise CheckpointError(
            f"checkpoint {str(root)!r}: normalisation stats in meta.json {meta['normalization']} "
            f"differ from config.yaml {to_dict(cfg.normalization)}; the model only works with "
            "the stats it was trained with: restore config.yaml"
        )
    try:
        tokenizer = CocTokenizer.load(root / TOKENIZER_FILE, cfg.trajectory_tokens.bins)
    except UserError as exc:
        raise CheckpointError(str(exc)) from None
    state = _read_weights(root, meta)
    if cfg.backbone.kind == "hf":  # rebuilt from the checkpoint's own backbone config
        from planner.model.hf_vla import build_from_checkpoint

        model = build_from_checkpoint(cfg, tokenizer.vocab_size, root)
    else:
        model = VLAModel(cfg, tokenizer.vocab_size)
    check_state_dict(model, state)
    model.load_state_dict(state)
    model.to(device).eval()
    return Checkpoint(root, cfg, tokenizer, model, meta)


def load_planner(path: str | Path, **options: Any):
    """`--planner <checkpoint dir>` factory (planner.planners.make_planner)."""
    import difflib
    import inspect

    from planner.planners.vla import VLAPlanner

    init = inspect.signature(VLAPlanner.__init__).parameters.values()
    loader = inspect.signature(VLAPlanner.from_checkpoint).parameters
    valid = [p.name for p in init if p.kind == p.KEYWORD_ONLY]
    valid += [name for name in loader if name not in ("path", "options")]
    for key in options:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise CheckpointError(
                f"unknown VLA planner option {key!r}; {hint}valid options: {', '.join(sorted(valid))}"
            )
    return VLAPlanner.from_checkpoint(path, **options)
