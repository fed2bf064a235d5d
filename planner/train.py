"""Supervised fine-tuning (SFT) of the VLA on a collected CoC dataset: `cocdrive train sft`.

Loss (planner.model.vla.VLAModel.forward): LM cross-entropy on the CoC text and the discrete
trajectory tokens + flow matching on the normalised controls; weights and the expert
stop-gradient come from `TrainConfig.loss` (they are written into the saved model config).

Recipe: AdamW (weight decay on matrices only), linear warmup then cosine decay to
`min_lr_ratio`, gradient clipping, bf16 autocast on CUDA, reasoning dropout (a fraction of
samples train in the `fast` layout `<traj> ...`, so `fast` mode works with the same weights).

Determinism and exact resume: every random draw is a pure function of (seed, epoch, index)
or (seed, rank, step), never of a stream that would have to be replayed:
    sample order      DistributedSampler(seed) with set_epoch(epoch); with
                      balance_decisions > 0 a weighted draw seeded by (seed, epoch)
    reasoning dropout numpy Generator seeded by (seed, epoch, dataset index)
    flow time, noise  torch.Generator seeded by (seed, rank, global step)
so resuming from a state saved after step N reproduces the loss curve of an uninterrupted run.
The training state (model, optimizer, scheduler, global RNG states, epoch and batch position)
is written every `ckpt_every_steps` to `<out_dir>/resume/` atomically: a fresh temp folder is
filled, then swapped in by rename, so a crash leaves either the old or the new state.

Under `torchrun` (WORLD_SIZE > 1) it trains with DistributedDataParallel (gloo on CPU, NCCL
on CUDA); only rank 0 validates and writes files.

Validation (each epoch and at the end, rank 0): open-loop ADE/FDE at `val_horizon_s` in `full`
and `fast` mode against the constant-velocity baseline, and the reasoning decision accuracy
(greedy decoding, `planner.coc.parse_reasoning` vs the label, macro-averaged over the label's
decision types).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from planner import metrics
from planner.coc import parse_reasoning
from planner.config import ConfigError, from_dict, load_config, to_dict
from planner.data import dataset as D
from planner.data import shards
from planner.errors import UserError
from planner.io import atomic_write_text
from planner.model import batch as B
from planner.model.checkpoint import (
    CheckpointError,
    check_state_dict,
    load_checkpoint,
    save_checkpoint,
)
from planner.model.config import LossConfig, ModelConfig
from planner.model.tokenizer import CocTokenizer, template_corpus, train_tokenizer
from planner.model.vla import VLAModel, parameter_count
from planner.paths import resolve_config_file
from planner.types import Trajectory

log = logging.getLogger(__name__)

RESUME_DIR = "resume"
FINAL_DIR = "final"
STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"


@dataclass
class TrainConfig:
    """`cocdrive train sft` settings (YAML: configs/train/tiny.yaml)."""

    data_dir: str = "~/.cache/cocdrive/datasets/default"
    # More dataset folders whose train split joins data_dir's (e.g. DAgger collections made
    # with `data collect learner.planner=CKPT`); validation stays on data_dir's val split.
    extra_train_dirs: list[str] = field(default_factory=list)
    train_split: str = "train"
    val_split: str = "val"
    model_config: str = "configs/model/tiny.yaml"
    model_overrides: list[str] = field(default_factory=list)
    out_dir: str = "runs/sft/tiny"
    export_dir: str = ""  # also save the final checkpoint here (e.g. planner/assets/...)
    # Fine-tune: a fresh run starts from this checkpoint's weights and tokenizer instead of
    # random weights and a new tokenizer (the model config must build the same architecture;
    # inference, loss and flow-prior keys may differ). Ignored when resuming a run.
    init_from: str = ""
    # tokenizer: BPE on the train split's label texts + this many template sentences
    tokenizer_template_sentences: int = 2000
    loss: LossConfig = field(default_factory=LossConfig)
    reasoning_dropout: float = 0.25  # fraction of labelled samples trained without reasoning
    # Decision-balanced sampling: a train sample is drawn with weight n^-balance_decisions,
    # n = the train split's count of its label's longitudinal decision (samples without a
    # valid label form one more group). 0: uniform, every sample once per epoch; 1: every
    # decision type equally often (drawn with replacement). Rare decisions (gap_searching is
    # ~1% of the expert set) otherwise get few gradient steps, and a fine-tune on DAgger
    # collections that hold fewer of them unlearns them.
    balance_decisions: float = 0.0
    batch_size: int = 16  # per process
    epochs: int = 2
    max_steps: int = 0  # > 0: stop after this many optimizer steps (the schedule spans them)
    learning_rate: float = 1.0e-3
    min_lr_ratio: float = 0.05  # cosine decays to learning_rate * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.01
    adam_betas: tuple[float, float] = (0.9, 0.95)
    grad_clip_norm: float = 1.0
    bf16_autocast: bool = True  # CUDA only; CPU trains in fp32
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 0
    num_workers: int = 0
    num_threads: int = 0  # torch.set_num_threads per process (0: keep the default)
    log_every_steps: int = 20
    ckpt_every_steps: int = 200
    eval_every_steps: int = 0  # 0: validate at the end of each epoch (and at the end) only
    val_max_samples: int = 200  # evenly spaced subset of the val split (greedy decoding is slow)
    val_horizon_s: float = 3.0
    val_euler_steps: int = 10
    tensorboard: bool = True  # scalars also go to <out_dir>/metrics.jsonl
    progress_bar: bool = True

    def validate(self) -> TrainConfig:
        if self.batch_size < 1:
            raise ConfigError("batch_size must be >= 1")
        if not 0.0 <= self.reasoning_dropout <= 1.0:
            raise ConfigError("reasoning_dropout must be in [0, 1]")
        if not 0.0 <= self.balance_decisions <= 1.0:
            raise ConfigError(
                f"balance_decisions={self.balance_decisions}: use a value in [0, 1] (0: "
                "uniform sampling, 1: every decision type equally often)"
            )
        if self.epochs < 1 and self.max_steps < 1:
            raise ConfigError("set epochs >= 1 or max_steps >= 1")
        if self.learning_rate <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError("learning_rate must be > 0 and min_lr_ratio in [0, 1]")
        if self.ckpt_every_steps < 1 or self.log_every_steps < 1:
            raise ConfigError("ckpt_every_steps and log_every_steps must be >= 1")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device {self.device!r}: use auto, cpu or cuda")
        return self


def load_train_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> TrainConfig:
    path = resolve_config_file(path) if path is not None else None
    return load_config(TrainConfig, path, overrides).validate()


def load_model_config(cfg: TrainConfig) -> ModelConfig:
    """The model config file + `model_overrides`, with the training loss settings applied."""
    path = resolve_config_file(cfg.model_config)
    if not path.is_file():
        raise UserError(
            f"model config {str(path)!r} does not exist: set model_config to a YAML such as "
            "configs/model/tiny.yaml (relative paths: the working directory, then the shipped "
            "configs)"
        )
    mcfg = load_config(ModelConfig, path, cfg.model_overrides)
    data = to_dict(mcfg)
    data["loss"] = to_dict(cfg.loss)
    return from_dict(ModelConfig, data).validate()


# ---- data ---------------------------------------------------------------------------------------
def _labels(ds: D.CocDataset):
    """Each sample's label dict, in dataset index order, reading only its info.json."""
    for scan in ds._scans:
        with open(scan.path, "rb") as fh:
            for entry in scan.samples:
                offset, size = entry.members[shards.INFO]
                fh.seek(offset)
                info = json.loads(fh.read(size).decode("utf-8"))
                yield info.get("label") or {}


def read_label_texts(ds: D.CocDataset) -> list[str]:
    """Valid CoC label texts of a dataset split, reading only each sample's info.json."""
    return [lab["text"] for lab in _labels(ds) if lab.get("valid", False) and lab.get("text")]


NO_LABEL_GROUP = "<no valid label>"


def decision_groups(ds: D.CocDataset) -> list[str]:
    """Per sample (dataset index order): its label's longitudinal decision, or NO_LABEL_GROUP."""
    return [
        ((lab.get("decision") or {}).get("longitudinal") or NO_LABEL_GROUP)
        if lab.get("valid", False)
        else NO_LABEL_GROUP
        for lab in _labels(ds)
    ]


def balanced_weights(groups: Sequence[str], power: float) -> np.ndarray:
    """Sampling probability per sample, proportional to count(its group)^-power."""
    _, inverse, counts = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
    w = counts.astype(np.float64)[inverse] ** -power
    return w / w.sum()


class BalancedDistributedSampler(Sampler):
    """Weighted sampling with replacement, the DistributedSampler interface (`set_epoch`,
    per-rank shards of one shared draw) so EpochSampler and exact resume work unchanged.

    Each epoch draws len(dataset) // world * world indices from `weights` with a generator
    seeded by (seed, epoch), identical on every rank; rank r takes every world-th one."""

    def __init__(self, weights: np.ndarray, num_replicas: int, rank: int, seed: int):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.num_replicas, self.rank, self.seed, self.epoch = num_replicas, rank, seed, 0
        self.num_samples = len(weights) // num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + self.epoch)
        total = self.num_samples * self.num_replicas
        draw = torch.multinomial(self.weights, total, replacement=True, generator=g)
        return iter(draw[self.rank : total : self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples


class SftDataset(Dataset):
    """Training examples (planner.model.batch layout) from a CocDataset split.

    Items are requested as (epoch, index) by `EpochSampler`, so reasoning dropout is a pure
    function of (seed, epoch, index): identical across resumes and DataLoader workers."""

    def __init__(
        self,
        base: D.CocDataset,
        tokenizer: CocTokenizer,
        cfg: ModelConfig,
        reasoning_dropout: float,
        seed: int,
    ):
        self.base, self.tokenizer, self.cfg = base, tokenizer, cfg
        self.reasoning_dropout, self.seed = reasoning_dropout, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item: tuple[int, int]) -> dict[str, np.ndarray]:
        epoch, index = item
        rec = self.base.record(index)
        draw = np.random.default_rng([self.seed, epoch, index]).random()
        drop = draw < self.reasoning_dropout
        label = rec.label or {}
        text = label.get("text") if label.get("valid", True) else None
        if text and len(self.tokenizer.encode(text)) > self.cfg.lm.max_reasoning_tokens:
            drop = True  # an over-long label trains the fast layout (counted in prepare_data)
        return B.example_from_record(rec, self.tokenizer, self.cfg, drop_reasoning=drop)


class EpochSampler(Sampler):
    """DistributedSampler order for one epoch, from batch `start_batch` on, as (epoch, index)."""

    def __init__(self, inner: Sampler, epoch: int, start_batch: int, batch_size: int):
        self.inner, self.epoch = inner, epoch
        inner.set_epoch(epoch)
        self.indices = list(iter(inner))[start_batch * batch_size :]

    def __iter__(self):
        return iter((self.epoch, i) for i in self.indices)

    def __len__(self) -> int:
        return len(self.indices)


# ---- schedule -----------------------------------------------------------------------------------
def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Multiplier of the base LR at optimizer step `step` (0-based): linear warmup from
    1/warmup to 1, then cosine from 1 to `min_ratio` at `total_steps`."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay on weight matrices only (not biases, norms, position tables)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and not name.endswith("_pos") else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=tuple(cfg.adam_betas))


# ---- distributed --------------------------------------------------------------------------------
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device_kind: str) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _barrier(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as dist

        dist.barrier()


# ---- checkpoints --------------------------------------------------------------------------------
def _numpy_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "name": name,
        "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def _set_numpy_state(s: dict[str, Any]) -> None:
    keys = s["keys"].numpy().astype(np.uint32)
    np.random.set_state((s["name"], keys, s["pos"], s["has_gauss"], s["cached"]))


def save_training_state(
    out_dir: Path,
    model: VLAModel,
    tokenizer: CocTokenizer,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    position: dict[str, int],
    extra_meta: dict[str, Any],
) -> Path:
    """Write <out_dir>/resume atomically: fill a temp folder, then swap it in by rename."""
    final = out_dir / RESUME_DIR
    tmp = out_dir / f".{RESUME_DIR}.tmp"
    old = out_dir / f".{RESUME_DIR}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(tmp, model, tokenizer, extra_meta)
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng_torch": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "rng_numpy": _numpy_state(),
        "rng_python": list(random.getstate()[1]) + [random.getstate()[2] or -1],
        "rng_python_version": random.getstate()[0],
        "position": dict(position),
    }
    torch.save(state, tmp / STATE_FILE)
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def load_training_state(path: Path) -> tuple[Any, dict[str, Any]]:
    """(checked Checkpoint, state dict) of a resume folder; CheckpointError on any damage."""
    ckpt = load_checkpoint(path)
    state_path = path / STATE_FILE
    if not state_path.is_file():
        raise CheckpointError(
            f"{str(path)!r} has no {STATE_FILE}: it is a model checkpoint, not a training state; "
            "start a fresh run (--no-resume) or point --resume-from at an <out_dir>/resume folder"
        )
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        for key in ("optimizer", "scheduler", "position", "rng_torch"):
            state[key]  # noqa: B018 - presence check
    except Exception as exc:  # torch raises pickle / zip / runtime errors for damaged files
        raise CheckpointError(
            f"{str(state_path)!r} is corrupt or truncated ({type(exc).__name__}): delete "
            f"{str(path)!r} and resume from scratch (--no-resume), or restore it from a copy"
        ) from None
    return ckpt, state


def _restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["rng_torch"])
    if state.get("rng_cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    _set_numpy_state(state["rng_numpy"])
    py = state["rng_python"]
    random.setstate((state["rng_python_version"], tuple(py[:-1]), None if py[-1] < 0 else py[-1]))


# ---- validation ---------------------------------------------------------------------------------
def const_velocity_xy(v0: float, steps: int, dt: float) -> np.ndarray:
    """(steps, 2) constant-velocity plan in the ego frame at t0 (straight ahead)."""
    t = np.arange(1, steps + 1) * dt
    return np.stack([v0 * t, np.zeros_like(t)], axis=1)


def decision_accuracy(pairs: list[tuple[dict[str, str], Any]]) -> dict[str, float]:
    """Macro-averaged accuracy of parsed decisions vs labels.

    pairs: (label decision dict, parsed planner.types.Decision or None). For each decision
    type of the label (its longitudinal decision; its lateral decision with side) the
    fraction of samples whose parsed value matches; the macro average is the mean over the
    types present. `decision_acc_macro` needs longitudinal, lateral and side all right.
    Per type too: `decision_acc_<longitudinal label>` (the joint decision right, by the
    label's longitudinal decision) and `lateral_acc_<lateral label>_<side>`, so a change in
    the macro figure can be traced to the decision types that moved."""
    per: dict[str, dict[str, list[bool]]] = {
        "longitudinal": defaultdict(list),
        "lateral": defaultdict(list),
        "decision": defaultdict(list),
    }
    for label, parsed in pairs:
        lon = label.get("longitudinal", "set_speed_tracking")
        lat = f"{label.get('lateral', 'lane_keeping')}/{label.get('lateral_side', 'none')}"
        ok_lon = parsed is not None and parsed.longitudinal.value == lon
        ok_lat = parsed is not None and f"{parsed.lateral.value}/{parsed.lateral_side.value}" == lat
        per["longitudinal"][lon].append(ok_lon)
        per["lateral"][lat].append(ok_lat)
        per["decision"][lon].append(ok_lon and ok_lat)
    out: dict[str, float] = {}
    for kind, groups in per.items():
        accs = {name: float(np.mean(v)) for name, v in sorted(groups.items()) if v}
        out[f"{kind}_acc_macro"] = float(np.mean(list(accs.values()))) if accs else math.nan
        if kind != "longitudinal":  # per type: the joint decision and the lateral one
            out.update({f"{kind}_acc_{n.replace('/', '_')}": a for n, a in accs.items()})
    out["decision_types"] = float(len(per["longitudinal"]))
    out["parsed_fraction"] = (
        float(np.mean([p is not None for _, p in pairs])) if pairs else math.nan
    )
    return out


@torch.no_grad()
def validate(
    model: VLAModel,
    tokenizer: CocTokenizer,
    val: D.CocDataset,
    cfg: TrainConfig,
) -> dict[str, float]:
    """Open-loop metrics on an evenly spaced subset of the val split (module docstring)."""
    from planner.runner import Runner, RunOptions, TorchBackend

    was_training = model.training
    model.eval()
    mcfg = model.cfg
    runner = Runner(TorchBackend(model), mcfg, tokenizer)
    n = len(val)
    picks = np.unique(np.linspace(0, n - 1, min(n, cfg.val_max_samples)).astype(int)) if n else []
    k = metrics.step_index(cfg.val_horizon_s)
    errs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    pairs = []
    max_tokens = min(mcfg.inference.max_reasoning_tokens, mcfg.lm.max_reasoning_tokens)
    # A model configured to drive on the mean of k samples (inference.plan=mean) is also
    # scored on that plan (`<mode>_mean<k>` keys); the plain keys are always one flow draw.
    k_samples = mcfg.inference.samples if mcfg.inference.plan == "mean" else 1
    plan_mean = k_samples > 1
    # A model configured with a jerk limit (inference.max_jerk_up_mps3) is also scored on the
    # limited deterministic plan, the one the planner drives (`<mode>_noise0_jerk` keys);
    # the other keys stay the model's own plans.
    jerk = mcfg.inference.max_jerk_up_mps3
    for i in picks:
        rec = val.record(int(i))
        item = D.to_tensors(rec)
        gt = item[D.FUTURE_XY].numpy()
        valid = item[D.FUTURE_VALID].numpy()
        if not valid[: k + 1].all():
            continue
        inp = B.planner_input_from_features(rec.features())
        prompt = B.prompt_arrays(inp, mcfg)
        v0 = max(0.0, inp.ego_speed)
        cv = const_velocity_xy(v0, mcfg.plan_steps, mcfg.plan_dt_s)
        errs["const_velocity"].append(_ade_fde(cv, gt, valid, cfg.val_horizon_s))

        def score(name: str, c: np.ndarray, v0=v0, gt=gt, valid=valid) -> None:
            traj = Trajectory.from_controls(c[:, 0], c[:, 1], v0, validate=False)
            errs[name].append(_ade_fde(traj.xy, gt, valid, cfg.val_horizon_s))

        for mode in ("full", "fast"):
            opts = RunOptions(
                mode=mode,
                euler_steps=cfg.val_euler_steps,
                max_reasoning_tokens=max_tokens,
                samples=k_samples,
            )
            rng = np.random.default_rng(int(i))
            result = runner.run(prompt, opts, rng)
            score(mode, result.controls[0])  # the first sample = a 1-sample run with this rng
            # the deterministic plan (flow integrated from the noise's mode)
            det = runner.run(
                prompt,
                RunOptions(
                    mode=mode,
                    euler_steps=cfg.val_euler_steps,
                    max_reasoning_tokens=max_tokens,
                    noise_scale=0.0,
                ),
                np.random.default_rng(int(i)),
            )
            score(f"{mode}_noise0", det.controls[0])
            if jerk > 0:
                from planner.planners.vla import jerk_limited_controls

                score(f"{mode}_noise0_jerk", jerk_limited_controls(det.controls[0], inp, jerk))
            if plan_mean:
                score(f"{mode}_mean{k_samples}", result.controls.mean(axis=0))
            label = rec.label or {}
            if mode == "full" and label.get("valid", False) and label.get("decision"):
                pairs.append((label["decision"], parse_reasoning(result.reasoning[0])))
    out: dict[str, float] = {"samples": float(len(errs["const_velocity"]))}
    h = metrics.horizon_label(cfg.val_horizon_s)
    for name, values in errs.items():
        if values:
            arr = np.array(values)
            out[f"ade_{h}_{name}"] = float(np.nanmean(arr[:, 0]))
            out[f"fde_{h}_{name}"] = float(np.nanmean(arr[:, 1]))
    base = out.get(f"ade_{h}_const_velocity")
    for mode in (
        "full",
        "fast",
        "full_noise0",
        "fast_noise0",
        "full_noise0_jerk",
        "fast_noise0_jerk",
        f"full_mean{k_samples}",
        f"fast_mean{k_samples}",
    ):
        if base and f"ade_{h}_{mode}" in out:
            out[f"ade_{h}_{mode}_vs_const_velocity"] = out[f"ade_{h}_{mode}"] / base
    out.update(decision_accuracy(pairs))
    out["labelled_samples"] = float(len(pairs))
    model.train(was_training)
    return out


def _ade_fde(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, h: float) -> tuple[float, float]:
    return (
        metrics.ade(pred[:, :2], gt, valid, horizon_s=h),
        metrics.fde(pred[:, :2], gt, valid, horizon_s=h),
    )


# ---- logging ------------------------------------------------------------------------------------
class ScalarLog:
    """TensorBoard scalars (when installed and enabled) plus <out_dir>/metrics.jsonl."""

    def __init__(self, out_dir: Path, enabled: bool, start_step: int, active: bool):
        self.active = active
        self.writer = None
        self.path = out_dir / METRICS_FILE
        if not active:
            return
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.warning("tensorboard is not installed: scalars go to %s only", self.path)
            else:
                # purge_step drops events past the resume point left by an interrupted run
                self.writer = SummaryWriter(str(out_dir / "tb"), purge_step=start_step or None)
        if self.path.exists():
            # like purge_step: drop rows an interrupted run wrote after the resume point
            rows = [json.loads(line) for line in self.path.read_text().splitlines() if line]
            kept = [r for r in rows if r.get("step", 0) <= start_step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def write(self, step: int, scalars: dict[str, float], prefix: str) -> None:
        if not self.active:
            return
        if self.writer is not None:
            for k, v in scalars.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.writer.add_scalar(f"{prefix}/{k}", v, step)
            self.writer.flush()
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"step": step, "split": prefix, **scalars}) + "\n")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ---- the trainer --------------------------------------------------------------------------------
@dataclass
class TrainResult:
    out_dir: Path
    final_checkpoint: Path | None
    steps: int
    losses: list[float]  # per optimizer step (this process, this invocation)
    val: dict[str, float]
    seconds: float


def prepare_data(
    cfg: TrainConfig, mcfg: ModelConfig, tokenizer: CocTokenizer | None
) -> tuple[D.CocDataset, D.CocDataset | None, CocTokenizer]:
    root = Path(cfg.data_dir).expanduser()
    if not root.is_dir():
        raise UserError(
            f"dataset folder {str(root)!r} does not exist: collect it first with "
            "'cocdrive data collect --config configs/data/collect.yaml' or set data_dir"
        )
    folders = [root]
    for extra in cfg.extra_train_dirs:
        folder = Path(extra).expanduser()
        if not (folder / shards.INDEX_FILE).is_file():
            raise UserError(
                f"extra_train_dirs: {str(folder)!r} is not a collected dataset folder (no "
                f"{shards.INDEX_FILE}): collect it with 'cocdrive data collect --out {extra}' "
                "or remove it from extra_train_dirs"
            )
        folders.append(folder)
    train = D.CocDataset(folders, cfg.train_split)
    if len(train) == 0:
        raise UserError(f"{root} has no samples in split {cfg.train_split!r}")
    if len(folders) > 1:
        log.info("train split: %d samples from %d dataset folders", len(train), len(folders))
    try:
        val = D.CocDataset(root, cfg.val_split) if cfg.val_split else None
    except UserError:
        val = None
    if val is not None and len(val) == 0:
        val = None
    if tokenizer is None:
        texts = read_label_texts(train)
        corpus = texts + template_corpus(cfg.tokenizer_template_sentences, seed=cfg.seed)
        tokenizer = train_tokenizer(corpus, mcfg.tokenizer, mcfg.trajectory_tokens)
        long = sum(len(tokenizer.encode(t)) > mcfg.lm.max_reasoning_tokens for t in set(texts))
        log.info(
            "tokenizer: %d tokens from %d label texts (%d distinct over lm.max_reasoning_tokens"
            " train in the fast layout)",
            tokenizer.vocab_size,
            len(texts),
            long,
        )
    return train, val, tokenizer


def _resolve_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("device=cuda but CUDA is not available: use device=cpu or auto")
        return torch.device("cuda")
    return torch.device("cpu")


def train_sft(
    cfg: TrainConfig,
    *,
    resume: bool = True,
    resume_from: str | Path | None = None,
    stop_after_steps: int | None = None,
) -> TrainResult:
    """Train (or resume) per `cfg`; returns what rank 0 saw. `stop_after_steps` ends this
    invocation early after that global step (the schedule is unchanged: used to test resume)."""
    t_start = time.perf_counter()
    cfg.validate()
    device = _resolve_device(cfg)
    d = init_distributed(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    out_dir = Path(cfg.out_dir).expanduser()
    mcfg = load_model_config(cfg)

    state = None
    tokenizer = None
    resume_path = Path(resume_from) if resume_from else out_dir / RESUME_DIR
    if resume_from is not None and not resume_path.is_dir():
        raise UserError(f"--resume-from {str(resume_path)!r} does not exist")
    if (resume or resume_from) and resume_path.is_dir():
        ckpt, state = load_training_state(resume_path)
        if to_dict(ckpt.config) != to_dict(mcfg):
            raise CheckpointError(
                f"the training state in {str(resume_path)!r} was made with another model config "
                f"than {cfg.model_config!r} + overrides: resume with the same config, or start "
                "fresh with --no-resume (or another out_dir)"
            )
        tokenizer = ckpt.tokenizer
    init = None
    if state is None and cfg.init_from:
        init = load_checkpoint(Path(cfg.init_from).expanduser())
        tokenizer = init.tokenizer
        log.info("fine-tuning from %s (weights and tokenizer)", cfg.init_from)
        if to_dict(init.config.flow) != to_dict(mcfg.flow):
            # allowed (a fine-tune may change the prior on purpose), but the flow's target
            # changes meaning, so a default model config must not change it silently
            log.warning(
                "init_from=%s was trained with flow %s; this run trains with flow %s (from "
                "%s + model_overrides): pass model_overrides=[flow.prior=%s] to keep the "
                "checkpoint's",
                cfg.init_from,
                to_dict(init.config.flow),
                to_dict(mcfg.flow),
                cfg.model_config,
                init.config.flow.prior,
            )
    train_ds, val_ds, tokenizer = prepare_data(cfg, mcfg, tokenizer)

    torch.manual_seed(cfg.seed)
    model = VLAModel(mcfg, tokenizer.vocab_size)
    if state is not None:
        model.load_state_dict(ckpt.model.state_dict())
    elif init is not None:
        try:
            check_state_dict(model, init.model.state_dict())
        except CheckpointError as exc:
            raise CheckpointError(
                f"init_from={cfg.init_from!r} does not fit {cfg.model_config!r} + overrides: "
                f"{exc}; fine-tune with the architecture the checkpoint was trained with"
            ) from None
        model.load_state_dict(init.model.state_dict())
    model.to(device).train()
    optimizer = make_optimizer(model, cfg)

    per_epoch = len(train_ds) // (cfg.batch_size * d.world)
    if per_epoch == 0:
        raise UserError(
            f"split {cfg.train_split!r} has {len(train_ds)} samples, fewer than one batch of "
            f"{cfg.batch_size} x {d.world} processes: lower batch_size or collect more data"
        )
    total_steps = cfg.max_steps if cfg.max_steps > 0 else per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_factor(s, cfg.warmup_steps, total_steps, cfg.min_lr_ratio),
    )
    position = {"global_step": 0, "epoch": 0, "batch_in_epoch": 0}
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        position = dict(state["position"])
        _restore_rng(state)
        log.info("resumed from %s at step %d", resume_path, position["global_step"])

    ddp_model: torch.nn.Module = model
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    sft = SftDataset(train_ds, tokenizer, mcfg, cfg.reasoning_dropout, cfg.seed)
    dist_sampler: Sampler
    if cfg.balance_decisions > 0:
        groups = decision_groups(train_ds)
        weights = balanced_weights(groups, cfg.balance_decisions)
        dist_sampler = BalancedDistributedSampler(weights, d.world, d.rank, cfg.seed)
        if d.main:
            share = defaultdict(lambda: [0, 0.0])
            for g, w in zip(groups, weights, strict=True):
                share[g][0] += 1
                share[g][1] += w
            log.info(
                "balance_decisions=%.2f: sampled share per decision (share in the data): %s",
                cfg.balance_decisions,
                ", ".join(
                    f"{g} {100 * p:.1f}% ({100 * n / len(groups):.1f}%)"
                    for g, (n, p) in sorted(share.items(), key=lambda kv: -kv[1][0])
                ),
            )
    else:
        dist_sampler = DistributedSampler(
            sft, num_replicas=d.world, rank=d.rank, shuffle=True, seed=cfg.seed, drop_last=True
        )
    scalars = ScalarLog(out_dir, cfg.tensorboard, position["global_step"], d.main)
    if d.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "train_config.yaml", _yaml(to_dict(cfg)))
        log.info(
            "training %.2f M parameters on %d samples (%d val), %d steps of %d x %d, device %s",
            parameter_count(model) / 1e6,
            len(train_ds),
            len(val_ds) if val_ds is not None else 0,
            total_steps,
            cfg.batch_size,
            d.world,
            device,
        )
    meta_common = {
        "training": {
            "data_dir": str(cfg.data_dir),
            "dataset_samples": len(train_ds),
            "train_config": to_dict(cfg),
            "world_size": d.world,
        }
    }

    autocast = device.type == "cuda" and cfg.bf16_autocast
    bar = _progress(total_steps, position["global_step"], d.main and cfg.progress_bar)
    losses: list[float] = []
    val_metrics: dict[str, float] = {}
    gen = torch.Generator()  # CPU: planner.model.flow draws on the CPU, then moves
    step = position["global_step"]
    window: list[dict[str, float]] = []
    t_window = time.perf_counter()
    stop = False
    final_ckpt = None
    try:
        while not stop and step < total_steps:
            epoch = position["epoch"]
            sampler = EpochSampler(dist_sampler, epoch, position["batch_in_epoch"], cfg.batch_size)
            loader = DataLoader(
                sft,
                batch_size=cfg.batch_size,
                sampler=sampler,
                drop_last=True,
                num_workers=cfg.num_workers,
                collate_fn=_Collate(tokenizer.pad_id),
                persistent_workers=False,
            )
            for batch in loader:
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                gen.manual_seed(_step_seed(cfg.seed, d.rank, step))
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    loss, logs = ddp_model(batch, gen)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip_norm)
                if not torch.isfinite(loss):
                    raise UserError(
                        f"the loss became {float(loss)} at step {step}: lower learning_rate or "
                        "check the dataset (cocdrive data stats DIR --deep)"
                    )
                optimizer.step()
                scheduler.step()
                step += 1
                position.update(global_step=step, batch_in_epoch=position["batch_in_epoch"] + 1)
                losses.append(logs["loss"])
                window.append({**logs, "grad_norm": float(grad_norm)})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{logs['loss']:.3f}", epoch=epoch, refresh=False)
                if step % cfg.log_every_steps == 0 and d.main:
                    dt = time.perf_counter() - t_window
                    avg = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                    avg["lr"] = scheduler.get_last_lr()[0]
                    avg["samples_per_s"] = len(window) * cfg.batch_size * d.world / max(dt, 1e-9)
                    avg["epoch"] = epoch + position["batch_in_epoch"] / per_epoch
                    scalars.write(step, avg, "train")
                    if bar is None:
                        log.info(
                            "step %d/%d loss %.4f (%.1f samples/s)",
                            step,
                            total_steps,
                            avg["loss"],
                            avg["samples_per_s"],
                        )
                    window, t_window = [], time.perf_counter()
                end_of_epoch = position["batch_in_epoch"] >= per_epoch
                if end_of_epoch:
                    position.update(epoch=epoch + 1, batch_in_epoch=0)
                done = step >= total_steps
                if (
                    (end_of_epoch and cfg.eval_every_steps == 0)
                    or (cfg.eval_every_steps > 0 and step % cfg.eval_every_steps == 0)
                    or done
                ):
                    val_metrics = _run_validation(model, tokenizer, val_ds, cfg, d)
                    scalars.write(step, val_metrics, "val")
                if step % cfg.ckpt_every_steps == 0 or done or end_of_epoch:
                    if d.main:
                        save_training_state(
                            out_dir, model, tokenizer, optimizer, scheduler, position, meta_common
                        )
                    _barrier(d)
                if done or (stop_after_steps is not None and step >= stop_after_steps):
                    stop = True
                    break
                if end_of_epoch:
                    break
        if step >= total_steps and d.main:
            meta = {
                **meta_common,
                "training": {**meta_common["training"], "steps": step, "val": val_metrics},
            }
            final_ckpt = save_checkpoint(out_dir / FINAL_DIR, model, tokenizer, meta)
            if cfg.export_dir:
                save_checkpoint(Path(cfg.export_dir), model, tokenizer, meta)
                log.info("exported the final checkpoint to %s", cfg.export_dir)
        _barrier(d)
    finally:
        if bar is not None:
            bar.close()
        scalars.close()
    return TrainResult(
        out_dir, final_ckpt, step, losses, val_metrics, time.perf_counter() - t_start
    )


def _run_validation(
    model: VLAModel, tokenizer: CocTokenizer, val_ds: D.CocDataset | None, cfg: TrainConfig, d: Dist
) -> dict[str, float]:
    out: dict[str, float] = {}
    if d.main and val_ds is not None and cfg.val_max_samples > 0:
        t0 = time.perf_counter()
        out = validate(model, tokenizer, val_ds, cfg)
        out["seconds"] = time.perf_counter() - t0
        log.info("validation: %s", ", ".join(f"{k} {v:.4g}" for k, v in out.items()))
    _barrier(d)
    return out


class _Collate:
    """Picklable collate for DataLoader workers."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, examples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        return B.collate(examples, self.pad_id)


def _step_seed(seed: int, rank: int, step: int) -> int:
    # a fixed mix of the three (SeedSequence spreads nearby integers apart)
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, np.uint64)[0]) >> 1


def _progress(total: int, start: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    # on a terminal refresh often; in a log file (nohup) every 30 s
    interactive = sys.stderr.isatty()
    return tqdm(
        total=total,
        initial=start,
        desc="sft",
        unit="step",
        mininterval=0.5 if interactive else 30.0,
        dynamic_ncols=interactive,
    )


def _yaml(data: Any) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)
