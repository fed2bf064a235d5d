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


def register(registry: CommandRegistry) -> None:
    """Add `bench render` to the shared `bench` group, and `data stats`."""
    from planner.data.cli import register as register_data

    register_data(registry)
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
