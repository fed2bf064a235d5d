"""planner's own subcommands (registered through the `cocdrive.commands` entry point)."""

from __future__ import annotations

from pathlib import Path

import typer

from planner.cli import CommandRegistry

RENDER_HELP = """Time the SensorRig: ms per camera frame (median, p99) on one core.

Renders a generated scene (4 lanes, a signalised stop line, 21 agents) with the default
cameras, plain and randomised, and a closed loop of render(scene, history) calls.
Target: <= 5 ms per camera frame.

Examples:

  cocdrive bench render

  cocdrive bench render --frames 500 --out runs/bench_render.json

  cocdrive bench render --config configs/sensors/default.yaml -o supersample=1
"""


MODEL_HELP = """Time the VLA through the runner: p50 / p99 ms per stage (vision, prefill, decode,
denoise, total) for `full` (reason then act; exactly --reasoning-tokens tokens, --euler-steps
steps) and `fast` (act only), on a synthetic input of the model's camera rig.

Without --checkpoint it times a randomly initialised model of --config (latency does not
depend on the weights). CPU budget (FACTS.md): < 100 ms full, < 20 ms fast on ONNX Runtime.

Examples:

  cocdrive bench model

  cocdrive bench model --threads 1 --iterations 50 --out runs/bench_model.json

  cocdrive bench model --checkpoint runs/sft/tiny -o flow.euler_steps=5
"""


def register(registry: CommandRegistry) -> None:
    """Add `bench render` to the shared `bench` group, `data stats` and `train sft`."""
    from planner.data.cli import register as register_data
    from planner.train_cli import register as register_train

    register_data(registry)
    register_train(registry)
    bench = registry.group("bench")

    @bench.command("render", help=RENDER_HELP)
    def bench_render(
        frames: int = typer.Option(200, "--frames", "-n", min=1, help="Timed instants."),
        out: Path | None = typer.Option(None, "--out", help="Write the result JSON here."),
        config: Path | None = typer.Option(
            None, "--config", help="SensorRig YAML (default: configs/sensors/default.yaml)."
        ),
        override: list[str] = typer.Option(
            [], "--override", "-o", help="Config override key.sub=value (repeatable)."
        ),
    ) -> None:
        from planner.bench_render import run_render_benchmark, write_result
        from planner.sensors import load_sensor_config

        cfg = load_sensor_config(config, override)
        result = run_render_benchmark(frames, cfg)
        w, h = result["resolution_wh"]
        typer.echo(
            f"render: {len(result['cameras'])} cameras x {result['frames_per_camera']} frames "
            f"at {w}x{h} (supersample {result['supersample']}), "
            f"{result['vision_tokens']} vision tokens, 1 OpenCV thread"
        )
        for key, label in (
            ("per_camera_frame", "per camera frame (plain), wall clock"),
            ("per_camera_frame_cpu", "per camera frame (plain), process CPU"),
            ("per_camera_frame_randomised", "per camera frame (randomised), wall clock"),
            ("per_camera_frame_randomised_cpu", "per camera frame (randomised), process CPU"),
            ("per_render_call_closed_loop", "per render() call (closed loop), wall clock"),
        ):
            s = result[key]
            typer.echo(f"  {label:<50} median {s['median_ms']:6.2f} ms   p99 {s['p99_ms']:6.2f} ms")
        verdict = "meets" if result["meets_target"] else "MISSES"
        typer.echo(
            f"  {verdict} the target of {result['target_ms_per_camera_frame']} ms per camera "
            "frame (wall-clock median; on a busy machine see the CPU figure)"
        )
        if out is not None:
            path = write_result(result, out)
            typer.echo(f"wrote {path}")

    @bench.command("model", help=MODEL_HELP)
    def bench_model(
        checkpoint: Path | None = typer.Option(
            None, "--checkpoint", help="Checkpoint directory (default: random init of --config)."
        ),
        config: Path | None = typer.Option(
            None, "--config", help="Model YAML (default: configs/model/tiny.yaml)."
        ),
        override: list[str] = typer.Option(
            [], "--override", "-o", help="Config override key.sub=value (repeatable)."
        ),
        iterations: int = typer.Option(
            30, "--iterations", "-n", min=1, help="Timed calls per mode."
        ),
        warmup: int = typer.Option(3, "--warmup", min=0, help="Untimed calls first."),
        reasoning_tokens: int = typer.Option(40, "--reasoning-tokens", min=1),
        euler_steps: int = typer.Option(10, "--euler-steps", min=1),
        threads: int = typer.Option(
            1,
            "--threads",
            min=0,
            help="torch.set_num_threads (0: keep). 1 is steadier on a shared 2-core machine.",
        ),
        backend: str = typer.Option(
            "torch", "--backend", help="Runner backend (cocdrive.backends)."
        ),
        out: Path | None = typer.Option(None, "--out", help="Write the result JSON here."),
    ) -> None:
        from planner.model.bench import STAGES, run_model_benchmark
        from planner.model.bench import write_result as write_model_result

        result = run_model_benchmark(
            checkpoint,
            config,
            override,
            iterations,
            warmup,
            reasoning_tokens,
            euler_steps,
            threads,
            backend,
        )
        typer.echo(
            f"model: {result['parameters'] / 1e6:.2f} M parameters ({result['source']}), "
            f"{result['prompt_tokens']} prompt tokens, backend {result['backend']}, "
            f"{result['torch_threads']} torch threads, load average {result['load_average']}"
        )
        for mode, stats in result["modes"].items():
            extra = f"{result['reasoning_tokens']} reasoning tokens, " if mode == "full" else ""
            typer.echo(f"  {mode} ({extra}{result['euler_steps']} Euler steps):")
            for stage in STAGES:
                s = stats[stage]
                typer.echo(f"    {stage:<8} p50 {s['p50_ms']:8.2f} ms   p99 {s['p99_ms']:8.2f} ms")
            typer.echo(f"    process CPU per call {stats['process_cpu_ms_per_call']:.1f} ms")
        if out is not None:
            typer.echo(f"wrote {write_model_result(result, out)}")
