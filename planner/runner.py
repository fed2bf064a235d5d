"""The one inference host loop: prefill, decode reasoning with the KV cache, Euler-integrate the
action expert, and turn controls into trajectories.

A `Backend` runs the four model graphs on numpy arrays (vision, prefill, decode step, denoise
step; see planner/model/vla.py); everything else (cache bookkeeping, attention masks and
positions, greedy / top-p sampling, the Euler loop, denormalisation) lives here so PyTorch,
ONNX Runtime and TensorRT backends share it. Backends register through the `cocdrive.backends`
entry-point group: name -> factory(checkpoint, **options) -> Backend.

Modes (shared weights): `full` reasons then acts, `fast` acts without reasoning (trained with
reasoning dropout), `explain` reasons only (no trajectory).
Cache layout: the prompt fills slots [0, P); text token j of a sample sits at slot P + j.
Samples of one call (k samples) may stop reasoning at different lengths, so every sample has
its own positions and valid-slot mask.
"""

from __future__ import annotations

import abc
import logging
import time
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import numpy as np

from planner.errors import UserError
from planner.model import batch as B
from planner.model import flow
from planner.model.config import ModelConfig
from planner.model.tokenizer import CocTokenizer

if TYPE_CHECKING:
    from planner.model.checkpoint import Checkpoint

log = logging.getLogger(__name__)
MODES = ("full", "fast", "explain")
BACKEND_GROUP = "cocdrive.backends"


class Backend(abc.ABC):
    """Runs the model graphs. Arrays in, arrays out (float32 unless stated)."""

    name = "backend"

    @abc.abstractmethod
    def encode_vision(self, cameras: np.ndarray) -> np.ndarray:
        """(B, N_cam, T, H, W, 3) uint8 -> (B, vision tokens, width)."""

    @abc.abstractmethod
    def empty_cache(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """Zeroed K, V (layers, B, kv_heads, max_seq_len, head_dim)."""

    @abc.abstractmethod
    def prefill(
        self,
        vision: np.ndarray,
        prompt: dict[str, np.ndarray],
        k_cache: np.ndarray,
        v_cache: np.ndarray,
        attn_mask: np.ndarray,
        positions: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Prompt arrays (batch keys of planner.model.batch) -> last logits (B, V), K, V."""

    @abc.abstractmethod
    def decode_step(
        self,
        token_ids: np.ndarray,
        k_cache: np.ndarray,
        v_cache: np.ndarray,
        attn_mask: np.ndarray,
        positions: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """token_ids (B, T) int64 -> logits (B, T, V), K, V."""

    @abc.abstractmethod
    def denoise_step(
        self,
        x_t: np.ndarray,
        t: np.ndarray,
        k_cache: np.ndarray,
        v_cache: np.ndarray,
        context_mask: np.ndarray,
        position_offset: np.ndarray,
    ) -> np.ndarray:
        """Flow velocity (B, A, 2 * steps_per_token)."""

    def cache_geometry(self, cfg: ModelConfig) -> tuple[int, int]:
        """(prompt tokens P, cache slots S); a model may size its own prompt (hf backbone)."""
        return cfg.prompt_tokens, cfg.lm.max_seq_len


class TorchBackend(Backend):
    """Eager PyTorch on CPU (or the module's device); zero-copy numpy <-> torch on CPU."""

    name = "torch"

    def __init__(self, model: Any, num_threads: int = 0):
        import torch

        self.torch = torch
        self.model = model.eval()
        if num_threads > 0:
            torch.set_num_threads(num_threads)
        self.device = next(model.parameters()).device

    def cache_geometry(self, cfg: ModelConfig) -> tuple[int, int]:
        own = getattr(self.model, "cache_geometry", None)  # HFVLAModel: its prompt length
        return own() if own is not None else super().cache_geometry(cfg)

    def _t(self, a: np.ndarray):
        return self.torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def _n(self, t) -> np.ndarray:
        return t.detach().to("cpu").numpy()

    def encode_vision(self, cameras: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self._n(self.model.encode_vision(self._t(cameras)))

    def empty_cache(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        own = getattr(self.model, "empty_cache", None)  # HFVLAModel sizes its own cache
        k, v = own(batch) if own is not None else self.model.lm.empty_cache(batch)
        return k.numpy(), v.numpy()

    def prefill(self, vision, prompt, k_cache, v_cache, attn_mask, positions):
        with self.torch.inference_mode():
            logits, k, v = self.model.prefill(
                self._t(vision),
                self._t(prompt[B.EGO_HISTORY]),
                self._t(prompt[B.ROUTE]),
                self._t(prompt[B.COMMAND]),
                self._t(prompt[B.SPEED_LIMIT]),
                self._t(k_cache),
                self._t(v_cache),
                self._t(attn_mask),
                self._t(positions),
            )
            return self._n(logits), self._n(k), self._n(v)

    def decode_step(self, token_ids, k_cache, v_cache, attn_mask, positions):
        with self.torch.inference_mode():
            logits, k, v = self.model.decode_step(
                self._t(token_ids),
                self._t(k_cache),
                self._t(v_cache),
                self._t(attn_mask),
                self._t(positions),
            )
            return self._n(logits), self._n(k), self._n(v)

    def denoise_step(self, x_t, t, k_cache, v_cache, context_mask, position_offset):
        with self.torch.inference_mode():
            return self._n(
                self.model.denoise_step(
                    self._t(x_t),
                    self._t(t),
                    self._t(k_cache),
                    self._t(v_cache),
                    self._t(context_mask),
                    self._t(position_offset),
                )
            )


def create_torch_backend(checkpoint: Checkpoint, num_threads: int = 0, **_: Any) -> TorchBackend:
    """`cocdrive.backends` factory for the torch backend."""
    return TorchBackend(checkpoint.model, num_threads=num_threads)


def available_backends() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=BACKEND_GROUP)}


def make_backend(name: str, checkpoint: Checkpoint, **options: Any) -> Backend:
    """Build a registered backend by name (`cocdrive.backends` entry points)."""
    found = available_backends()
    if name == "torch" and name not in found:  # an un-reinstalled editable checkout
        return create_torch_backend(checkpoint, **options)
    if name not in found:
        raise UserError(
            f"unknown runner backend {name!r}; installed: {', '.join(sorted(found)) or 'none'} "
            "(ONNX Runtime / TensorRT backends come with the export package)"
        )
    return found[name].load()(checkpoint, **options)


@dataclass
class RunOptions:
    mode: str = "full"
    samples: int = 1
    euler_steps: int = 10
    max_reasoning_tokens: int = 40
    decoding: str = "greedy"  # greedy | top_p
    top_p: float = 0.9
    temperature: float = 1.0
    # Scale of the flow's initial noise: 1 draws from the learned distribution; 0 integrates
    # from the noise's mode, a deterministic plan (the action counterpart of greedy decoding).
    noise_scale: float = 1.0
    # Decode exactly max_reasoning_tokens, ignoring </cot> (benchmarks of untrained models).
    fixed_reasoning_length: bool = False

    def check(self, cfg: ModelConfig) -> RunOptions:
        if self.mode not in MODES:
            raise UserError(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.decoding not in ("greedy", "top_p"):
            raise UserError(f"decoding {self.decoding!r}: use greedy or top_p")
        if self.samples < 1 or self.euler_steps < 1:
            raise UserError("samples and euler_steps must be >= 1")
        if not 0 < self.top_p <= 1 or self.temperature <= 0:
            raise UserError("top_p must be in (0, 1] and temperature > 0")
        if not 0 <= self.noise_scale <= 1:
            raise UserError(f"noise_scale={self.noise_scale}: use a value in [0, 1]")
        if self.max_reasoning_tokens > cfg.lm.max_reasoning_tokens:
            raise UserError(
                f"max_reasoning_tokens={self.max_reasoning_tokens} exceeds the model's KV cache "
                f"budget lm.max_reasoning_tokens={cfg.lm.max_reasoning_tokens}"
            )
        return self

    @classmethod
    def from_config(cls, cfg: ModelConfig, **overrides: Any) -> RunOptions:
        inf = cfg.inference
        values = {
            "mode": inf.mode,
            "samples": inf.samples,
            "euler_steps": cfg.flow.euler_steps,
            "max_reasoning_tokens": inf.max_reasoning_tokens,
            "decoding": inf.decoding,
            "top_p": inf.top_p,
            "temperature": inf.temperature,
            "noise_scale": inf.noise_scale,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values).check(cfg)


@dataclass
class RunResult:
    controls: np.ndarray | None  # (k, 64, 2) physical (accel m/s^2, curvature 1/m); None: explain
    reasoning: list[str]  # k texts ("" in fast mode)
    reasoning_ids: list[list[int]]
    timings_ms: dict[str, float] = field(default_factory=dict)  # vision, prefill, decode, denoise
    # Final K/V caches (layers, k, kv, S, hd) and the valid-slot mask (k, S) the expert saw:
    # for inspection, parity tests and log-probabilities.
    k_cache: np.ndarray | None = None
    v_cache: np.ndarray | None = None
    context_mask: np.ndarray | None = None


def sample_tokens(logits: np.ndarray, options: RunOptions, rng: np.random.Generator) -> np.ndarray:
    """(B, V) logits -> (B,) token ids: argmax, or nucleus (top-p) sampling with `rng`."""
    if options.decoding == "greedy":
        return logits.argmax(axis=-1)
    z = logits.astype(np.float64) / options.temperature
    z -= z.max(axis=-1, keepdims=True)
    probs = np.exp(z)
    probs /= probs.sum(axis=-1, keepdims=True)
    out = np.empty(len(probs), dtype=np.int64)
    for b, p in enumerate(probs):
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(p[order])
        keep = order[: int(np.searchsorted(cum, options.top_p) + 1)]
        kp = p[keep] / p[keep].sum()
        out[b] = keep[int(rng.choice(len(keep), p=kp))]
    return out


class Runner:
    """Host loop over a Backend. One instance per model; `run` is re-entrant per call."""

    def __init__(self, backend: Backend, cfg: ModelConfig, tokenizer: CocTokenizer):
        self.backend, self.cfg, self.tokenizer = backend, cfg, tokenizer

    def run(
        self,
        prompt: dict[str, np.ndarray],
        options: RunOptions,
        rng: np.random.Generator,
        forced_reasoning: str | None = None,
    ) -> RunResult:
        """One planning call. `prompt` holds one sample's arrays (planner.model.batch
        .prompt_arrays, no batch dimension); k = options.samples share its prefill.

        `forced_reasoning`: teacher-force this text as the reasoning (`<cot>` text `</cot>`
        written into the cache in one decode step instead of decoding); the faithfulness
        probe (planner/faithfulness.py) uses it. Text beyond max_reasoning_tokens is cut
        (logged); the returned reasoning is the text actually forced."""
        options.check(self.cfg)
        if forced_reasoning is not None and options.mode == "fast":
            raise UserError(
                "forced_reasoning needs mode 'full' or 'explain': mode 'fast' has no reasoning "
                "for the trajectory to attend to"
            )
        cfg, tok, be = self.cfg, self.tokenizer, self.backend
        k = options.samples
        p_len, s_len = be.cache_geometry(cfg)
        timings: dict[str, float] = {}

        k_cache, v_cache = self._prefill(prompt, timings)
        slots = np.arange(s_len)
        t0 = time.perf_counter()
        if k > 1:  # the k samples share the prompt's cache
            k_cache = np.repeat(k_cache, k, axis=1)
            v_cache = np.repeat(v_cache, k, axis=1)
        timings["prefill"] += (time.perf_counter() - t0) * 1e3

        length = np.full(k, p_len, dtype=np.int64)  # next free slot per sample
        valid = np.zeros((k, s_len), dtype=bool)
        valid[:, :p_len] = True

        def feed(tokens: np.ndarray, active: np.ndarray):
            """Write tokens (k, T) at each sample's next slots; inactive samples write to a
            scratch slot that stays invalid (and is overwritten later)."""
            nonlocal k_cache, v_cache
            t = tokens.shape[1]
            pos = length[:, None] + np.arange(t)[None]  # (k, T)
            mask = valid[:, None, :].repeat(t, axis=1)
            mask |= (slots[None, None, :] <= pos[:, :, None]) & (
                slots[None, None, :] >= length[:, None, None]
            )
            logits, k_cache, v_cache = be.decode_step(tokens, k_cache, v_cache, mask, pos)
            for b in np.flatnonzero(active):
                valid[b, pos[b]] = True
                length[b] += t
            return logits

        reasoning_ids: list[list[int]] = [[] for _ in range(k)]
        decode_ms = 0.0
        if options.mode in ("full", "explain") and forced_reasoning is not None:
            t0 = time.perf_counter()
            forced_ids = tok.encode(forced_reasoning)
            if len(forced_ids) > options.max_reasoning_tokens:
                log.warning(
                    "forced reasoning has %d tokens, cut to max_reasoning_tokens=%d",
                    len(forced_ids),
                    options.max_reasoning_tokens,
                )
                forced_ids = forced_ids[: options.max_reasoning_tokens]
            reasoning_ids = [list(forced_ids) for _ in range(k)]
            tail = [tok.end_cot_id, tok.traj_id] if options.mode == "full" else [tok.end_cot_id]
            forced = np.array([[tok.cot_id, *forced_ids, *tail]] * k, dtype=np.int64)
            feed(forced, np.ones(k, dtype=bool))
            decode_ms = (time.perf_counter() - t0) * 1e3
        elif options.mode in ("full", "explain"):
            t0 = time.perf_counter()
            active = np.ones(k, dtype=bool)
            logits = feed(np.full((k, 1), tok.cot_id, dtype=np.int64), active)[:, -1]
            for _ in range(options.max_reasoning_tokens):
                nxt = sample_tokens(logits, options, rng)
                stop = (nxt == tok.end_cot_id) | (nxt == tok.eos_id)
                done_now = active & stop & (not options.fixed_reasoning_length)
                active &= ~done_now
                if not active.any():
                    break
                for b in np.flatnonzero(active):
                    reasoning_ids[b].append(int(nxt[b]))
                logits = feed(nxt[:, None].astype(np.int64), active.copy())[:, -1]
            if options.mode == "full":
                closing = np.array([[tok.end_cot_id, tok.traj_id]] * k, dtype=np.int64)
                feed(closing, np.ones(k, dtype=bool))
            decode_ms = (time.perf_counter() - t0) * 1e3
        else:
            t0 = time.perf_counter()
            feed(np.full((k, 1), tok.traj_id, dtype=np.int64), np.ones(k, dtype=bool))
            decode_ms = (time.perf_counter() - t0) * 1e3
        timings["decode"] = decode_ms
        texts = [tok.decode(ids) for ids in reasoning_ids] if options.mode != "fast" else [""] * k

        controls = None
        if options.mode != "explain":
            t0 = time.perf_counter()
            ex = cfg.expert
            noise = rng.standard_normal((k, ex.action_tokens, 2 * ex.steps_per_token))
            x = (options.noise_scale * noise).astype(np.float32)
            context_mask = valid.copy()
            offset = length.copy()
            for t_start in flow.euler_times(options.euler_steps):
                t = np.full(k, t_start, dtype=np.float32)
                velocity = be.denoise_step(x, t, k_cache, v_cache, context_mask, offset)
                x = flow.euler_step(x, velocity, options.euler_steps).astype(np.float32)
            x = x.reshape(k, cfg.plan_steps, 2) + B.action_prior(
                prompt[B.EGO_HISTORY], cfg, prompt[B.ROUTE]
            )
            controls = B.denormalize_controls(x, cfg.normalization)
            timings["denoise"] = (time.perf_counter() - t0) * 1e3
        timings["total"] = sum(timings.values())
        return RunResult(controls, texts, reasoning_ids, timings, k_cache, v_cache, valid.copy())

    def _prefill(
        self, prompt: dict[str, np.ndarray], timings: dict[str, float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Vision + prompt into a fresh one-sample cache; adds the vision/prefill timings."""
        be = self.backend
        p_len, s_len = be.cache_geometry(self.cfg)
        t0 = time.perf_counter()
        vision = be.encode_vision(prompt[B.CAMERAS][None])
        timings["vision"] = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        one = {key: np.asarray(value)[None] for key, value in prompt.items() if key != B.CAMERAS}
        k_cache, v_cache = be.empty_cache(1)
        slots = np.arange(s_len)
        prefill_mask = (slots[None, :] <= np.arange(p_len)[:, None])[None]  # (1, P, S) causal
        positions = np.arange(p_len, dtype=np.int64)[None]
        _, k_cache, v_cache = be.prefill(vision, one, k_cache, v_cache, prefill_mask, positions)
        timings["prefill"] = (time.perf_counter() - t0) * 1e3
        return k_cache, v_cache

    def action_log_prob(
        self,
        prompt: dict[str, np.ndarray],
        controls: np.ndarray,
        reasoning: str | None = None,
    ) -> ActionLogProb:
        """log p(trajectory tokens of `controls` | prompt, reasoning) under the language model.

        The discrete trajectory tokens (accel and curvature bins of 4-step chunks, as trained
        after `<traj>`) of the physical `controls` (64, 2) are teacher-forced after
        `<cot> reasoning </cot> <traj>` (`reasoning=None`: the fast layout `<traj>`), in one
        decode step over the prompt's cache: the action log-probability an RL stage needs
        (the flow expert has no tractable likelihood). Reasoning longer than the cache budget
        is an error, not a silent cut."""
        cfg, tok, be = self.cfg, self.tokenizer, self.backend
        norm = B.normalize_controls(controls, cfg.normalization)
        if norm.shape != (cfg.plan_steps, 2):
            raise UserError(f"controls must be ({cfg.plan_steps}, 2), got {norm.shape}")
        bins = B.trajectory_bins(norm, cfg.trajectory_tokens)
        traj_ids = B.trajectory_token_ids(norm, cfg.trajectory_tokens, tok)
        head = B.text_head(reasoning, tok, cfg)
        tokens = np.array([[*head, *traj_ids[:-1].tolist()]], dtype=np.int64)
        k_cache, v_cache = self._prefill(prompt, {})
        p_len, s_len = be.cache_geometry(cfg)
        t = tokens.shape[1]
        pos = p_len + np.arange(t)[None]  # (1, T)
        slots = np.arange(s_len)
        mask = slots[None, None, :] <= pos[:, :, None]  # prompt + causal over the new tokens
        logits, _, _ = be.decode_step(tokens, k_cache, v_cache, mask, pos)
        z = logits[0, len(head) - 1 :].astype(np.float64)  # (2 * chunks, V): predict traj_ids
        z -= z.max(axis=-1, keepdims=True)
        log_probs = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        token_lp = log_probs[np.arange(len(traj_ids)), traj_ids]
        return ActionLogProb(float(token_lp.sum()), token_lp, bins)


@dataclass
class ActionLogProb:
    """`Runner.action_log_prob`: natural-log probabilities of an action's trajectory tokens."""

    total: float  # sum over the 2 * chunks tokens
    token_logprobs: np.ndarray  # (2 * chunks,): accel bin, curvature bin of chunk 0, 1, ...
    bins: np.ndarray  # (chunks, 2) the bins scored (accel, curvature)
