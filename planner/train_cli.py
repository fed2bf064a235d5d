"""`cocdrive train sft` and `cocdrive train eval` (registered from planner.commands)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from planner.cli import CommandRegistry

SFT_HELP = """Supervised training of the VLA on a collected CoC dataset (planner/train.py).

Language-model loss on the reasoning and trajectory tokens + flow matching on the controls;
AdamW, warmup + cosine decay, gradient clipping, reasoning dropout for `fast` mode, validation
each epoch (ADE/FDE@3s vs constant velocity, decision accuracy), TensorBoard logs in
<out_dir>/tb. Checkpoints the whole training state to <out_dir>/resume every
ckpt_every_steps; re-running the same command resumes exactly where it stopped.
The final model is <out_dir>/final (and export_dir when set).

Multi-process: torchrun --nproc_per_node 2 -m planner.cli train sft --config ...

Examples:

  cocdrive train sft --config configs/train/tiny.yaml

  cocdrive train sft --config configs/train/tiny.yaml -o max_steps=500 -o out_dir=runs/sft/try

  cocdrive train sft --config configs/train/tiny.yaml --no-resume

  # fine-tune the shipped checkpoint (same architecture; here without the flow prior)
  cocdrive train sft --config configs/train/tiny.yaml -o init_from=planner/assets/checkpoints/tiny -o out_dir=runs/sft/tune -o 'model_overrides=[flow.prior=none]'
"""

EVAL_HELP = """Open-loop validation of a checkpoint on a dataset split: ADE/FDE at 3 s in `full`
and `fast` mode vs constant velocity, and the reasoning decision accuracy (macro-averaged).

Examples:

  cocdrive train eval --checkpoint planner/assets/checkpoints/tiny

  cocdrive train eval --checkpoint runs/sft/tiny/final -o val_max_samples=500 --out val.json

  # also score the plan that is the mean of 6 flow samples (keys ade_3s_full_mean6, ...)
  cocdrive train eval --checkpoint runs/sft/tiny/final -m inference.samples=6 -m inference.plan=mean
"""


def register(registry: CommandRegistry) -> None:
    train = registry.group("train")

    @train.command("sft", help=SFT_HELP)
    def sft(
        config: Path = typer.Option(
            Path("configs/train/tiny.yaml"), "--config", help="TrainConfig YAML."
        ),
        override: list[str] = typer.Option(
            [], "--override", "-o", help="Config override key.sub=value (repeatable)."
        ),
        resume: bool = typer.Option(
            True, "--resume/--no-resume", help="Continue from <out_dir>/resume when present."
        ),
        resume_from: Path | None = typer.Option(
            None, "--resume-from", help="Resume from this training-state folder instead."
        ),
        stop_after_steps: int | None = typer.Option(
            None,
            "--stop-after-steps",
            min=1,
            help="End this invocation after this global step (state saved; the schedule is "
            "unchanged): train in chunks, resume later with the same command.",
        ),
    ) -> None:
        from planner.train import load_train_config, train_sft

        cfg = load_train_config(config, override)
        if stop_after_steps is not None and stop_after_steps % cfg.ckpt_every_steps:
            from planner.errors import UserError

            raise UserError(
                f"--stop-after-steps {stop_after_steps} is not a multiple of ckpt_every_steps="
                f"{cfg.ckpt_every_steps}: the state is saved only there, so a resume would "
                "repeat steps"
            )
        result = train_sft(
            cfg, resume=resume, resume_from=resume_from, stop_after_steps=stop_after_steps
        )
        if os.environ.get("RANK", "0") != "0":
            return  # under torchrun rank 0 reports
        if result.final_checkpoint is None:
            typer.echo(f"stopped after step {result.steps}; state in {result.out_dir}/resume")
        else:
            typer.echo(
                f"trained {result.steps} steps in {result.seconds / 60:.1f} min; "
                f"checkpoint {result.final_checkpoint}"
            )
            for k, v in result.val.items():
                typer.echo(f"  val {k:<40} {v:.4g}")

    @train.command("eval", help=EVAL_HELP)
    def evaluate(
        checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint directory."),
        config: Path = typer.Option(
            Path("configs/train/tiny.yaml"),
            "--config",
            help="TrainConfig YAML (data_dir, val_split, val_* keys).",
        ),
        override: list[str] = typer.Option(
            [], "--override", "-o", help="Config override key.sub=value (repeatable)."
        ),
        model_override: list[str] = typer.Option(
            [],
            "--model-override",
            "-m",
            help="Inference key of the checkpoint's model config, e.g. inference.samples=6.",
        ),
        threads: int = typer.Option(1, "--threads", min=0, help="torch threads (0: keep)."),
        out: Path | None = typer.Option(None, "--out", help="Write the metrics JSON here."),
    ) -> None:
        import torch

        from planner.data.dataset import CocDataset
        from planner.errors import UserError
        from planner.io import atomic_write_json
        from planner.model.checkpoint import load_checkpoint
        from planner.train import load_train_config, validate

        if threads > 0:
            torch.set_num_threads(threads)
        cfg = load_train_config(config, override)
        ckpt = load_checkpoint(checkpoint, model_override)
        root = Path(cfg.data_dir).expanduser()
        if not root.is_dir():
            raise UserError(f"dataset folder {str(root)!r} does not exist: set -o data_dir=...")
        result = validate(ckpt.model, ckpt.tokenizer, CocDataset(root, cfg.val_split), cfg)
        for k, v in result.items():
            typer.echo(f"{k:<40} {v:.4g}")
        if out is not None:
            typer.echo(f"wrote {atomic_write_json(out, result)}")
