"""`cocdrive eval ablate`: the expert, the baselines and the VLA variants on the same seeds,
with paired statistics, an HTML index and a generated section of docs/RESULTS.md.

Every variant is an ordinary closed-loop run (`sim_eval.runner.run_suite`) into its own
subfolder of `--out`, so each one resumes on its own and runs its episodes in parallel through
the executor. Variants:

    expert, const-vel, ctra, idm   the built-in planners
    vla-full                       the checkpoint, reasoning then acting
    vla-fast                       the same weights, acting without reasoning
    vla-blind                      full mode with every camera frame blacked out (same shape)
    vla-euler<N>                   full mode with N flow-matching Euler steps (e.g. vla-euler5)
    vla-guard                      full mode with the runtime reasoning guard re-sampling

Each variant is compared episode by episode with the VLA in full mode (and with the expert):
McNemar for rates, Wilcoxon for continuous figures, Holm-corrected (`sim_eval.stats`).
Reasoning figures (consistency, truthfulness, faithfulness, plan stability) come from the
episode records (`sim_eval.reasoning_metrics`) and are pooled over episodes.

Outputs in `--out`: one folder per variant (episodes.jsonl, summary.json, report.html),
ablate.json (all tables and tests), index.html; with `--update-results` the section between
`<!-- BEGIN ablate -->` and `<!-- END ablate -->` of the results page is regenerated (nothing
else in the file changes).
"""

from __future__ import annotations

import datetime as _dt
import html
import logging
import math
import os
import platform
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from planner.errors import UserError
from planner.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

BEGIN_MARKER = "<!-- BEGIN ablate -->"
END_MARKER = "<!-- END ablate -->"
ABLATE_FILE = "ablate.json"
INDEX_FILE = "index.html"
BASELINE_VARIANTS = ("expert", "const-vel", "ctra", "idm")
VLA_VARIANTS = ("vla-full", "vla-fast", "vla-blind", "vla-euler5", "vla-guard")
REFERENCE = "vla-full"
EXPERT = "expert"
_EULER = re.compile(r"^vla-euler(\d+)$")

# Closed-loop rows of the tables (sim_eval.metrics names), in this order.
TABLE_METRICS = (
    "collision_at_fault",
    "offroad",
    "close_encounter",
    "red_light_violation",
    "planner_failed",
    "comfortable",
    "route_completion",
    "driving_score",
)
# Paired-test rows: the table metrics plus the per-episode reasoning figures
# (sim_eval.reasoning_metrics.REASONING_METRIC_SPECS; named here so the CLI imports stay light).
PAIRED_METRICS = TABLE_METRICS + (
    "consistency_joint_rate",
    "consistency_longitudinal_rate",
    "consistency_lateral_rate",
    "truthful_rate",
    "faithfulness_rate",
    "plan_stability_mean_m",
    "plan_stability_p95_m",
)


@dataclass(frozen=True)
class Variant:
    """One ablation arm: which planner, with which options."""

    name: str
    planner: str  # a built-in name, or "checkpoint"
    options: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def needs_checkpoint(self) -> bool:
        return self.planner == "checkpoint"


def variant(name: str) -> Variant:
    """The Variant called `name` (see the module docstring), or a UserError listing them."""
    fixed = {
        "expert": Variant("expert", "expert", {}, "privileged rule-based expert"),
        "const-vel": Variant("const-vel", "const-vel", {}, "constant-velocity baseline"),
        "ctra": Variant("ctra", "ctra", {}, "constant turn rate and acceleration baseline"),
        "idm": Variant("idm", "idm", {}, "IDM lane keeping (privileged)"),
        "vla-full": Variant("vla-full", "checkpoint", {"mode": "full"}, "VLA, reasons then acts"),
        "vla-fast": Variant("vla-fast", "checkpoint", {"mode": "fast"}, "VLA, no reasoning"),
        "vla-blind": Variant(
            "vla-blind",
            "checkpoint",
            {"mode": "full", "blind_cameras": True},
            "VLA full mode, camera frames blacked out",
        ),
        "vla-guard": Variant(
            "vla-guard",
            "checkpoint",
            {"mode": "full", "guard": {"enabled": True, "resample": True}},
            "VLA full mode, runtime reasoning guard re-sampling",
        ),
    }
    if name in fixed:
        return fixed[name]
    m = _EULER.match(name)
    if m and int(m.group(1)) >= 1:
        steps = int(m.group(1))
        return Variant(
            name, "checkpoint", {"mode": "full", "euler_steps": steps}, f"VLA, {steps} Euler steps"
        )
    raise UserError(
        f"unknown ablation variant {name!r}; valid: {', '.join(BASELINE_VARIANTS + VLA_VARIANTS)}"
        " or vla-euler<N> (N >= 1)"
    )


def default_variants(has_checkpoint: bool) -> list[str]:
    return list(BASELINE_VARIANTS + (VLA_VARIANTS if has_checkpoint else ()))


def resolve_variants(names: list[str] | None, checkpoint: str | None) -> list[Variant]:
    """Variants to run. Without a checkpoint the default leaves the VLA arms out (logged); an
    explicit VLA arm without one is an error."""
    if checkpoint is not None and not Path(checkpoint).exists():
        raise UserError(f"checkpoint {checkpoint!r} does not exist: pass a checkpoint directory")
    if not names:
        if checkpoint is None:
            log.warning(
                "no --checkpoint: running the non-VLA variants only (%s); pass --checkpoint DIR "
                "for %s",
                ", ".join(BASELINE_VARIANTS),
                ", ".join(VLA_VARIANTS),
            )
        names = default_variants(checkpoint is not None)
    seen: list[str] = []
    for n in names:
        if n not in seen:
            seen.append(n)
    out = [variant(n) for n in seen]
    vla = [v.name for v in out if v.needs_checkpoint]
    if vla and checkpoint is None:
        raise UserError(
            f"variants {', '.join(vla)} run the learned planner: pass --checkpoint DIR (or leave "
            "them out)"
        )
    return out


# ---- running ----------------------------------------------------------------------------------
def run_ablation(
    scenarios: list,
    out_dir: str | Path,
    variants: list[Variant],
    *,
    checkpoint: str | None = None,
    suite_name: str = "regression",
    overrides: list[str] | tuple[str, ...] = (),
    workers: int = 1,
    executor: str = "local",
    planner_factories: dict[str, Callable] | None = None,
    simulator_factory: Callable | None = None,
    progress: Callable[[str], Callable[[int, int], None] | None] | None = None,
    write_reports: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) every variant into `out_dir/<variant>`, then compare and write
    ablate.json and index.html. `planner_factories` (tests) replaces a variant's planner;
    `progress(variant)` gives a (done, total) callback per variant."""
    from sim_eval.runner import load_run_config, run_suite, weights_digest

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not variants:
        raise UserError("no ablation variants to run")
    factories = planner_factories or {}
    digest = weights_digest(checkpoint)  # before the runs: the weights the workers load
    runs: dict[str, dict[str, Any]] = {}
    for v in variants:
        cfg = load_run_config(None, list(overrides))
        cfg.planner = checkpoint if v.needs_checkpoint else v.planner  # type: ignore[assignment]
        # `planner_options.*` overrides (e.g. num_threads=1) configure the learned planner;
        # the built-in planners take their own options only.
        user = cfg.planner_options if v.needs_checkpoint else {}
        cfg.planner_options = {**user, **v.options}
        cfg.suite = suite_name
        log.info("ablation variant %s (%s)", v.name, v.description)
        result = run_suite(
            scenarios,
            cfg,
            out / v.name,
            suite_name=suite_name,
            workers=workers,
            executor=executor,
            progress=progress(v.name) if progress else None,
            planner_factory=factories.get(v.name),
            simulator_factory=simulator_factory,
            write_report=write_reports,
        )
        runs[v.name] = {
            "variant": v,
            "records": result.records,
            "summary": result.summary,
            "report": result.report_path,
        }
    results = compare_variants(runs)
    results.update(
        {
            "suite": suite_name,
            "episodes": len(scenarios),
            "seeds": sorted({s.seed for s in scenarios}),
            "checkpoint": checkpoint,
            "checkpoint_weights_sha256": digest,
            "command": command,
            "machine": machine_description(),
            "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "out": str(out),
        }
    )
    atomic_write_json(out / ABLATE_FILE, results)
    write_index(out, results)
    return results


# ---- statistics -------------------------------------------------------------------------------
def _wilson(k: int, n: int) -> dict[str, Any]:
    from sim_eval.stats import wilson_interval

    lo, hi = wilson_interval(k, n)
    return {"kind": "rate", "value": (k / n) if n else None, "low": lo, "high": hi, "n": n, "k": k}


def _mean(values: list[float]) -> dict[str, Any]:
    from sim_eval.stats import StatsConfig, mean_interval

    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if not len(x):
        return {"kind": "mean", "value": None, "low": None, "high": None, "n": 0}
    lo, hi = mean_interval(x, StatsConfig())
    return {"kind": "mean", "value": float(x.mean()), "low": lo, "high": hi, "n": int(len(x))}


def _ok(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("status", "ok") == "ok"]


def reasoning_figures(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Pooled reasoning figures of one run: rates over frames (Wilson), faithfulness over
    discriminative probes, plan stability as the mean of episode means (t)."""
    rows = _ok(records)

    def total(key: str) -> int:
        return int(sum(r.get(key) or 0 for r in rows))

    out: dict[str, dict[str, Any]] = {}
    parsed = total("reasoning_parsed")
    if total("reasoning_frames"):
        out["reasoning_parsed"] = _wilson(parsed, total("reasoning_frames"))
        for axis in ("longitudinal", "lateral", "joint"):
            out[f"consistency_{axis}"] = _wilson(total(f"consistent_{axis}_k"), parsed)
        if any(r.get("truthful_k") is not None for r in rows):
            out["truthful"] = _wilson(total("truthful_k"), parsed)
    for suffix in ("", "_longitudinal", "_lateral"):
        n = total(f"faithfulness{suffix}_n")
        if n:
            out[f"faithfulness{suffix}"] = _wilson(total(f"faithfulness{suffix}_k"), n)
    stab = [r.get("plan_stability_mean_m") for r in rows]
    if any(v is not None for v in stab):
        out["plan_stability_mean_m"] = _mean(stab)
        out["plan_stability_p95_m"] = _mean([r.get("plan_stability_p95_m") for r in rows])
    return out


def compare_variants(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per-variant tables and paired tests of each variant against vla-full and the expert."""
    from sim_eval.metrics import METRIC_SPECS
    from sim_eval.reasoning_metrics import REASONING_METRIC_SPECS
    from sim_eval.stats import CompareError, paired_compare

    specs = [s for s in (*METRIC_SPECS, *REASONING_METRIC_SPECS) if s.name in PAIRED_METRICS]
    variants: dict[str, Any] = {}
    for name, run in runs.items():
        overall = run["summary"].get("overall", {})
        variants[name] = {
            "description": run["variant"].description,
            "planner_options": run["variant"].options,
            "episodes": len(run["records"]),
            "status_counts": run["summary"].get("status_counts", {}),
            "closed_loop": {m: overall[m] for m in TABLE_METRICS if m in overall},
            "reasoning": reasoning_figures(run["records"]),
            "plan_ms_median": run["summary"].get("plan_ms_median"),
            "report": str(run["report"]) if run["report"] else None,
        }
    paired: dict[str, dict[str, Any]] = {}
    for ref in (REFERENCE, EXPERT):
        if ref not in runs:
            continue
        paired[ref] = {}
        for name, run in runs.items():
            if name == ref:
                continue
            try:
                res = paired_compare(runs[ref]["records"], run["records"], specs=specs)
            except CompareError as exc:
                paired[ref][name] = {"error": str(exc)}
                continue
            paired[ref][name] = res
    return {"variants": variants, "paired": paired, "reference": REFERENCE}


# ---- machine ------------------------------------------------------------------------------------
def machine_description() -> str:
    """'Linux-6.1 x86_64, Intel(R) Xeon(R) ... (2 cores), Python 3.12.3' for the results."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{platform.system()} {platform.release()} {platform.machine()}, {cpu} ({cores} cores "
        f"available), Python {platform.python_version()}"
    )


# ---- formatting ---------------------------------------------------------------------------------
def fmt(stat: dict[str, Any] | None) -> str:
    """'12.5% [3.1, 40.0]' for a rate, '0.93 [0.90, 0.96]' for a mean, '-' when empty."""
    if not stat or stat.get("value") is None:
        return "-"
    v, lo, hi = stat["value"], stat.get("low"), stat.get("high")
    if stat.get("kind") == "rate":
        text = f"{100 * v:.1f}%"
        if lo is not None and hi is not None:
            text += f" [{100 * lo:.1f}, {100 * hi:.1f}]"
        return text
    text = _num(v)
    if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
        text += f" [{_num(lo)}, {_num(hi)}]"
    return text


def _num(x: float) -> str:
    """3 significant digits; round-off below 1e-9 (a plan jump of 5e-15 m) prints as 0."""
    return "0" if abs(x) < 1e-9 else f"{x:.3g}"


_REASONING_COLUMNS = (
    ("reasoning_parsed", "reasoning parsed"),
    ("consistency_joint", "consistency (joint)"),
    ("consistency_longitudinal", "consistency (lon)"),
    ("consistency_lateral", "consistency (lat)"),
    ("truthful", "truthful"),
    ("faithfulness", "faithfulness"),
    ("plan_stability_mean_m", "plan jump mean (m)"),
    ("plan_stability_p95_m", "plan jump p95 (m)"),
)


def _verdict(m: dict[str, Any]) -> str:
    if m.get("significant") and m.get("b_worse"):
        return "worse"
    if m.get("significant") and m.get("b_better"):
        return "better"
    return "n.s."


def _paired_value(m: dict[str, Any], side: str) -> str:
    if m["test"] == "mcnemar_exact":
        v = m.get(f"{side}_rate")
        return "-" if v is None else f"{100 * v:.1f}%"
    v = m.get(f"{side}_mean")
    return "-" if v is None else _num(v)


def tables(results: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table of the results (markdown and HTML share them)."""
    out = []
    variants = results["variants"]
    header = ["variant", "episodes", *TABLE_METRICS]
    rows = [
        [name, str(v["episodes"]), *(fmt(v["closed_loop"].get(m)) for m in TABLE_METRICS)]
        for name, v in variants.items()
    ]
    out.append(("Closed loop (95% intervals: Wilson for rates, t for means)", header, rows))
    header = ["variant", *(label for _, label in _REASONING_COLUMNS)]
    rows = [
        [name, *(fmt(v["reasoning"].get(key)) for key, _ in _REASONING_COLUMNS)]
        for name, v in variants.items()
        if v["reasoning"]
    ]
    if rows:
        out.append(
            (
                "Reasoning (consistency and truthfulness over planned frames, faithfulness over "
                "discriminative counterfactual probes; Wilson 95%; plan jump: mean of episode "
                "values, t 95%)",
                header,
                rows,
            )
        )
    for ref, comparisons in results["paired"].items():
        header = ["variant", "metric", ref, "variant value", "p (Holm)", "verdict"]
        rows = []
        for name, res in comparisons.items():
            if "error" in res:
                rows.append([name, "-", "-", "-", "-", f"not paired: {res['error']}"])
                continue
            for metric in PAIRED_METRICS:
                m = res["metrics"].get(metric)
                if m is None:
                    continue
                rows.append(
                    [
                        name,
                        metric,
                        _paired_value(m, "a"),
                        _paired_value(m, "b"),
                        f"{m['p_adjusted']:.3g}",
                        _verdict(m),
                    ]
                )
        if rows:
            out.append(
                (
                    f"Paired against {ref} (same seeds; McNemar exact for rates, Wilcoxon for "
                    "means; Holm over metrics, alpha 0.05)",
                    header,
                    rows,
                )
            )
    return out


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(s: str) -> str:
        return str(s).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def results_markdown(results: dict[str, Any]) -> str:
    """The body of the generated section of docs/RESULTS.md."""
    parts = [
        "## Ablations (generated by `cocdrive eval ablate`; do not edit by hand)",
        "",
        f"- Suite: `{results['suite']}`, {results['episodes']} episodes per variant, seeds "
        f"{_seed_text(results['seeds'])}",
        f"- Checkpoint: `{results['checkpoint']}` (weights sha256 "
        f"{(results.get('checkpoint_weights_sha256') or 'unknown')[:16]})"
        if results.get("checkpoint")
        else "- Checkpoint: none (the VLA variants were not run)",
        f"- Machine: {results['machine']}",
        f"- Date: {results['date_utc']}",
        f"- Command: `{results.get('command') or 'sim_eval.ablate.run_ablation (API)'}`",
        f"- Results folder: `{results['out']}` (ablate.json, index.html, one folder per variant)",
        "",
    ]
    for title, header, rows in tables(results):
        parts += [f"### {title}", "", _md_table(header, rows), ""]
    parts.append(
        "Definitions: docs/METRICS.md (closed loop), sim_eval/reasoning_metrics.py and "
        "planner/faithfulness.py (reasoning figures)."
    )
    return "\n".join(parts)


def _seed_text(seeds: list[int]) -> str:
    if not seeds:
        return "-"
    if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(str(s) for s in seeds)


def update_results_section(path: str | Path, body: str) -> Path:
    """Replace the text between the ablate markers of `path` (created when absent; the section
    is appended when the file has no markers); nothing outside them changes."""
    p = Path(path)
    section = f"{BEGIN_MARKER}\n{body.rstrip()}\n{END_MARKER}"
    if not p.exists():
        return atomic_write_text(p, f"# Results\n\n{section}\n")
    text = p.read_text()
    begins, ends = text.count(BEGIN_MARKER), text.count(END_MARKER)
    if begins == 0 and ends == 0:
        sep = "" if text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
        return atomic_write_text(p, f"{text}{sep}{section}\n")
    start, end = text.find(BEGIN_MARKER), text.find(END_MARKER)
    if begins != 1 or ends != 1 or end < start:
        raise UserError(
            f"{p} has {begins} '{BEGIN_MARKER}' and {ends} '{END_MARKER}' markers (in that "
            "order?): keep exactly one pair around the generated section and rerun"
        )
    return atomic_write_text(p, text[:start] + section + text[end + len(END_MARKER) :])


def write_index(out: Path, results: dict[str, Any]) -> Path:
    """index.html: the tables and a link to each variant's report."""
    links = []
    for name, v in results["variants"].items():
        rel = f"{name}/report.html"
        link = f'<a href="{html.escape(rel)}">report</a>' if v.get("report") else "no report"
        links.append(
            f"<li><b>{html.escape(name)}</b>: {html.escape(v['description'])} ({link})</li>"
        )
    body = [
        "<!doctype html><html><head><meta charset='utf-8'><title>cocdrive ablation</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}</style></head><body>",
        f"<h1>Ablation on {html.escape(str(results['suite']))}</h1>",
        f"<p>{results['episodes']} episodes per variant; {html.escape(results['machine'])}; "
        f"{html.escape(results['date_utc'])}</p>",
        f"<p><code>{html.escape(results.get('command') or '')}</code></p>",
        "<ul>" + "".join(links) + "</ul>",
    ]
    for title, header, rows in tables(results):
        body.append(f"<h2>{html.escape(title)}</h2><table><tr>")
        body.append("".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
        for r in rows:
            body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>")
        body.append("</table>")
    body.append("</body></html>")
    return atomic_write_text(out / INDEX_FILE, "\n".join(body))


# ---- command line ---------------------------------------------------------------------------------
def ablate_command(
    suite: str,
    checkpoint: str | None,
    out: Path,
    seeds: str | None,
    workers: int,
    executor: str,
    variants: str | None,
    update_results: Path | None,
    overrides: list[str],
    command: str,
) -> dict[str, Any]:
    """`cocdrive eval ablate` (shared by the CLI and tests): run, print, write the results."""
    from rich.console import Console

    from sim_eval.cli import _progress_runner
    from sim_eval.scenarios import load_suite, parse_seeds

    if workers < 1:
        raise UserError(f"--workers {workers}: must be at least 1")
    if executor not in ("local", "ray"):
        raise UserError(f"--executor {executor!r}: valid executors are local, ray")
    names = [n.strip() for n in variants.split(",") if n.strip()] if variants else None
    chosen = resolve_variants(names, checkpoint)
    console = Console()  # resolve_variants logged it when the VLA variants are left out
    scenarios = load_suite(suite, seeds=parse_seeds(seeds) if seeds else None)
    bars = []

    def progress(name: str):
        for old in bars:  # one live display at a time
            old.stop()
        bar, update = _progress_runner(f"{name} on {suite}")
        bar.start()
        bars.append(bar)
        return update

    try:
        results = run_ablation(
            scenarios,
            out,
            chosen,
            checkpoint=checkpoint,
            suite_name=suite,
            overrides=overrides,
            workers=workers,
            executor=executor,
            progress=progress,
            command=command,
        )
    except KeyboardInterrupt:
        console.print(
            f"[yellow]interrupted: finished episodes are saved under {out}; rerun the same "
            "command to resume"
        )
        raise
    finally:
        for bar in bars:
            bar.stop()
    console.print(results_markdown(results), markup=False, highlight=False, soft_wrap=True)
    if update_results is not None:
        path = update_results_section(update_results, results_markdown(results))
        console.print(f"updated the ablate section of {path}")
    console.print(f"index: {Path(out) / INDEX_FILE}")
    return results


def register_ablate(group: Any) -> None:
    """Add `ablate` to the `eval` command group."""
    import shlex
    import sys

    import typer

    @group.command(
        "ablate",
        epilog=(
            "\b\nExamples:\n"
            "  cocdrive eval ablate --suite regression --out runs/ablate --workers 2\n"
            "  cocdrive eval ablate --checkpoint planner/assets/checkpoints/tiny --out "
            "runs/ablate --update-results docs/RESULTS.md\n"
            "  cocdrive eval ablate --checkpoint ckpt/ --variants vla-full,vla-fast,vla-euler5 "
            "--seeds 1000-1004 --out runs/abl-small report.animations=0 "
            "planner_options.num_threads=1\n"
            "\b\nVariants: expert, const-vel, ctra, idm, vla-full, vla-fast, vla-blind,\n"
            "vla-guard, vla-euler<N>. Without --checkpoint the VLA variants are left out.\n"
            "planner_options.* overrides apply to the VLA variants only.\n"
            "Rerunning the same command into the same --out resumes every variant."
        ),
    )
    def eval_ablate(
        suite: str = typer.Option("regression", help="Scenario suite (configs/scenarios/)."),
        checkpoint: str = typer.Option(None, help="VLA checkpoint directory."),
        out: Path = typer.Option(..., "--out", help="Results folder (one subfolder per variant)."),
        seeds: str = typer.Option(None, help="Run every family on these seeds, e.g. 1000-1004."),
        workers: int = typer.Option(1, help="Parallel episode workers (processes)."),
        executor: str = typer.Option("local", help="local (process pool) or ray."),
        variants: str = typer.Option(None, help="Comma-separated variants (default: all)."),
        update_results: Path = typer.Option(
            None, "--update-results", help="Regenerate the ablate section of this Markdown file."
        ),
        overrides: list[str] = typer.Argument(None, help="RunConfig overrides key.sub=value."),
    ) -> None:
        """Closed-loop ablation: expert, baselines and VLA variants on the same seeds with
        paired statistics, reasoning figures, an HTML index and a generated RESULTS section."""
        args = sys.argv[sys.argv.index("ablate") + 1 :] if "ablate" in sys.argv else []
        command = "cocdrive eval ablate " + shlex.join(args)
        ablate_command(
            suite,
            checkpoint,
            out,
            seeds,
            workers,
            executor,
            variants,
            update_results,
            list(overrides or []),
            command,
        )


__all__ = [
    "BEGIN_MARKER",
    "END_MARKER",
    "Variant",
    "compare_variants",
    "default_variants",
    "machine_description",
    "reasoning_figures",
    "resolve_variants",
    "results_markdown",
    "run_ablation",
    "update_results_section",
    "ablate_command",
    "register_ablate",
    "variant",
    "write_index",
]
