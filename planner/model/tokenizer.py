"""Byte-level BPE tokenizer for chain-of-causation text plus the model's special tokens.

Trained with Hugging Face `tokenizers` (a Rust library; training 50k sentences takes ~2 s) on
the CoC corpus: the dataset's label texts, or `template_corpus()` built from the labeler's
phrase tables when no dataset is at hand. The special tokens come first, in a fixed order, so
their ids are stable: <pad> <eos> <cot> </cot> <traj>, then the trajectory bin tokens
<a00>.. (accel bins) and <k00>.. (curvature bins). Special tokens are never split.

Saved as the `tokenizers` JSON (`tokenizer.json`) inside the checkpoint directory.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from planner.errors import UserError
from planner.io import atomic_write_text
from planner.model.config import TokenizerConfig, TrajectoryTokenConfig

PAD, EOS, COT, END_COT, TRAJ = "<pad>", "<eos>", "<cot>", "</cot>", "<traj>"
BASE_SPECIALS = (PAD, EOS, COT, END_COT, TRAJ)


def _import_tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise UserError(
            "the VLA tokenizer needs the 'tokenizers' package: pip install tokenizers"
        ) from None
    return tokenizers


def bin_token_names(bins: int) -> tuple[list[str], list[str]]:
    width = len(str(bins - 1))
    return (
        [f"<a{i:0{width}d}>" for i in range(bins)],
        [f"<k{i:0{width}d}>" for i in range(bins)],
    )


def template_corpus(sentences: int, seed: int = 0) -> list[str]:
    """Sentences composed from the CoC labeler's phrase tables (planner.coc), with random
    slots: a tokenizer corpus when no labelled dataset is available."""
    from planner import coc

    rng = np.random.default_rng(seed)
    nouns = [n for ns in coc.OBJECT_NOUNS.values() for n in ns]
    lights = ("red", "yellow", "green")

    def pick(options):
        return options[int(rng.integers(len(options)))]

    def slots() -> dict[str, str]:
        dist = float(rng.choice([rng.integers(1, 120), rng.integers(2, 60) + 0.5]))
        return {
            "obj": (coc.STOPPED_PREFIX if rng.random() < 0.2 else "") + pick(nouns),
            "dist": f"{dist:g}",
            "speed": f"{rng.integers(1, 20) / (2 if rng.random() < 0.5 else 1):g}",
            "limit": f"{rng.integers(5, 35)}",
            "side": pick(("left", "right")),
            "light": pick(lights),
            "place": pick(coc.YIELD_PLACES),
            "event": pick(coc.ROAD_EVENTS),
        }

    out = []
    for _ in range(sentences):
        lon = pick(pick(list(coc.LONGITUDINAL_PHRASES.values())))
        lat = pick(pick(list(coc.LATERAL_PHRASES.values()))).format(**slots())
        action = lon if rng.random() < 0.4 else f"{lat} and {lon}"
        causes = []
        for _ in range(int(rng.integers(0, 3))):
            text = pick(pick(list(coc.FACTOR_PHRASES.values()))).format(**slots())
            if rng.random() < 0.3:
                text += pick(pick(list(coc.SUFFIX_PHRASES.values()))).format(**slots())
            causes.append(text)
        if causes:
            frame = pick(coc.FRAMES_WITH_CAUSE + coc.FRAMES_NUDGE)
            sentence = frame.format(action=action, cause=" and ".join(causes))
        else:
            sentence = pick(coc.FRAMES_NO_CAUSE).format(action=action)
        out.append(sentence[0].upper() + sentence[1:])
    return out


class CocTokenizer:
    """Wraps a `tokenizers.Tokenizer` and knows the ids of the model's special tokens."""

    def __init__(self, tokenizer, trajectory_bins: int):
        self.tokenizer = tokenizer
        self.trajectory_bins = trajectory_bins
        accel_names, curv_names = bin_token_names(trajectory_bins)
        missing = [
            name
            for name in (*BASE_SPECIALS, *accel_names, *curv_names)
            if tokenizer.token_to_id(name) is None
        ]
        if missing:
            raise UserError(
                f"tokenizer lacks the special tokens {missing[:6]}{'...' if len(missing) > 6 else ''}"
                f" (expected {trajectory_bins} trajectory bins): it was not trained by "
                "planner.model.tokenizer.train_tokenizer with this model config"
            )
        self.pad_id = tokenizer.token_to_id(PAD)
        self.eos_id = tokenizer.token_to_id(EOS)
        self.cot_id = tokenizer.token_to_id(COT)
        self.end_cot_id = tokenizer.token_to_id(END_COT)
        self.traj_id = tokenizer.token_to_id(TRAJ)
        self.accel_bin_ids = np.array([tokenizer.token_to_id(n) for n in accel_names])
        self.curvature_bin_ids = np.array([tokenizer.token_to_id(n) for n in curv_names])
        self.special_ids = frozenset(
            [self.pad_id, self.eos_id, self.cot_id, self.end_cot_id, self.traj_id]
            + self.accel_bin_ids.tolist()
            + self.curvature_bin_ids.tolist()
        )

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Reasoning text -> token ids (no special tokens added)."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids -> text; special tokens are dropped."""
        return self.tokenizer.decode([int(i) for i in ids if int(i) not in self.special_ids])

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(Path(path), self.tokenizer.to_str())

    @classmethod
    def load(cls, path: str | Path, trajectory_bins: int) -> CocTokenizer:
        tokenizers = _import_tokenizers()
        p = Path(path)
        if not p.is_file():
            raise UserError(
                f"tokenizer file {str(p)!r} is missing: the checkpoint is incomplete; re-save it "
                "with planner.model.checkpoint.save_checkpoint"
            )
        try:
            tok = tokenizers.Tokenizer.from_file(str(p))
        except Exception as exc:  # the Rust parser raises its own Exception type
            raise UserError(
                f"tokenizer file {str(p)!r} is not a valid tokenizers JSON ({exc}); the "
                "checkpoint is corrupt: re-save or re-train it"
            ) from None
        return cls(tok, trajectory_bins)


def train_tokenizer(
    texts: Iterable[str],
    cfg: TokenizerConfig | None = None,
    trajectory: TrajectoryTokenConfig | None = None,
) -> CocTokenizer:
    """Train a byte-level BPE on `texts` with the model's special tokens."""
    tokenizers = _import_tokenizers()
    cfg = cfg or TokenizerConfig()
    trajectory = trajectory or TrajectoryTokenConfig()
    accel_names, curv_names = bin_token_names(trajectory.bins)
    specials = [*BASE_SPECIALS, *accel_names, *curv_names]
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=specials,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    return CocTokenizer(tok, trajectory.bins)
