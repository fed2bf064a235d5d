"""The open-loop report: report.html and report.json beside summary.json.

The HTML shows the headline metrics with intervals (both L2 conventions and both miss rates,
labelled), skipped windows by reason, per-family and per-decision tables, the timing, and for
the worst windows (ranked by `report.rank_by`): the ego history, the logged ground truth and
the k sampled plans (an inline SVG in the ego frame), the camera strip (the newest frame of
each camera, as PNG files in `report_files/`) and the reasoning text with its checks.
report.json holds the same content (the strips by file name).

The plots are hand-written SVG polylines: a few lines per window, which keeps the report one
self-contained file with no plotting library in the loop.
"""

from __future__ import annotations

import html
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from planner.io import atomic_write_bytes, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

REPORT_HTML = "report.html"
REPORT_JSON = "report.json"
FILES_DIR = "report_files"
PLOT_W, PLOT_H, PLOT_MARGIN = 360, 360, 12
PLAN_COLOURS = ("#1f5fd6", "#7aa6f0")  # the plan, then the other samples
GT_COLOUR, HISTORY_COLOUR = "#1a9a3a", "#777777"


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return html.escape(str(x))


def fmt_stat(block: dict[str, Any] | None) -> str:
    """'1.23 [1.10, 1.36]' of a mean or rate block."""
    if not block:
        return "-"
    value = block.get("mean", block.get("rate"))
    lo, hi = block.get("ci_low"), block.get("ci_high")
    if value is None:
        return "-"
    if lo is None or hi is None:
        return _fmt(value)
    return f"{_fmt(value)} [{_fmt(lo)}, {_fmt(hi)}]"


def worst_windows(records: list[dict[str, Any]], rank_by: str, n: int) -> list[dict[str, Any]]:
    """The n ok records with the highest `rank_by` (undefined values last)."""
    ok = [r for r in records if r.get("status", "ok") == "ok"]

    def score(r: dict[str, Any]) -> float:
        v = r.get(rank_by)
        if isinstance(v, bool):
            return float(v)
        return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else -math.inf

    return sorted(ok, key=score, reverse=True)[:n]


def _svg(plot: dict[str, Any]) -> str:
    """History, ground truth and plans in the ego frame at t0: x (forward) points up."""
    lines: list[tuple[list[list[float]], str, float, str]] = []
    lines.append((plot.get("history", []), HISTORY_COLOUR, 2.0, "history"))
    for i, plan in enumerate(reversed(plot.get("plans", []))):
        first = i == len(plot.get("plans", [])) - 1
        lines.append((plan, PLAN_COLOURS[0 if first else 1], 2.0 if first else 1.0, "plan"))
    lines.append((plot.get("ground_truth", []), GT_COLOUR, 2.0, "ground truth"))
    pts = np.array(
        [p for pl, *_ in lines for p in pl if p[0] is not None and p[1] is not None], dtype=float
    ).reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(axis=1)]
    if not len(pts):
        return "<svg/>"
    # screen: u = -y (left of the ego is left on screen), v = -x (forward is up)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = max(hi[0] - lo[0], hi[1] - lo[1], 10.0)
    scale = (PLOT_W - 2 * PLOT_MARGIN) / span
    cx, cy = (lo + hi) / 2

    def uv(p: list[float]) -> str:
        u = PLOT_W / 2 - (p[1] - cy) * scale
        v = PLOT_H / 2 - (p[0] - cx) * scale
        return f"{u:.1f},{v:.1f}"

    parts = [
        f'<svg width="{PLOT_W}" height="{PLOT_H}" viewBox="0 0 {PLOT_W} {PLOT_H}" '
        'xmlns="http://www.w3.org/2000/svg" style="background:#fafafa;border:1px solid #ccc">'
    ]
    for pl, colour, width, name in lines:
        good = [p for p in pl if p[0] is not None and p[1] is not None]
        if len(good) < 2:
            continue
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="{width}" '
            f'points="{" ".join(uv(p) for p in good)}"><title>{name}</title></polyline>'
        )
    parts.append(f'<circle cx="{uv([0, 0]).split(",")[0]}" cy="{uv([0, 0]).split(",")[1]}" r="3"/>')
    parts.append(
        f'<text x="6" y="{PLOT_H - 6}" font-size="10">{span:.0f} m across; '
        "grey history, green logged, blue plans</text></svg>"
    )
    return "".join(parts)


def _camera_strip(images: np.ndarray, height_px: int) -> np.ndarray:
    """(N_cam, T, H, W, 3) -> one row of the newest frame of each camera, scaled."""
    import cv2

    tiles = []
    for cam in images:
        frame = cam[-1]
        h, w = frame.shape[:2]
        width = max(1, int(round(w * height_px / h)))
        tiles.append(cv2.resize(frame, (width, height_px), interpolation=cv2.INTER_NEAREST))
    return np.concatenate(tiles, axis=1)


def _strips(
    out_dir: Path, worst: list[dict[str, Any]], cfg: Any, refs: dict[str, Any]
) -> dict[str, tuple[str, str]]:
    """key -> (file name relative to out_dir, camera source) for the worst windows."""
    import cv2

    from sim_eval.open_loop import WindowRef, _renderer, _worker_state, load_window

    files: dict[str, tuple[str, str]] = {}
    state = _worker_state(cfg)
    for n, rec in enumerate(worst):
        ref: WindowRef | None = refs.get(rec["key"])
        if ref is None:
            continue
        try:
            window = load_window(ref, cfg, state)
            images, source = window.inp.cameras, window.inp.camera_source
            if images is None and not ref.shard:
                images = _renderer(state, cfg).render(window.sample.scene)
                source = "rendered (for the report)"
        except Exception as exc:  # noqa: BLE001
            log.warning("report: no cameras for %s (%s)", rec["key"], exc)
            continue
        if images is None:
            continue
        strip = _camera_strip(np.asarray(images), cfg.report.camera_height_px)
        ok, png = cv2.imencode(".png", cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
        if not ok:
            continue
        name = f"{FILES_DIR}/window_{n:02d}.png"
        atomic_write_bytes(out_dir / name, png.tobytes())
        files[rec["key"]] = (name, source)
    return files


def _table(rows: list[tuple[str, str, str]], head: tuple[str, str, str]) -> str:
    body = "".join(f"<tr><td>{a}</td><td>{b}</td><td>{c}</td></tr>" for a, b, c in rows)
    return f"<table><tr><th>{head[0]}</th><th>{head[1]}</th><th>{head[2]}</th></tr>{body}</table>"


def _metric_rows(block: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for name, stat in block.get("means", {}).items():
        rows.append((name, fmt_stat(stat), str(stat.get("n", "-"))))
    for name, stat in block.get("rates", {}).items():
        if stat.get("n"):
            rows.append((name, fmt_stat(stat), f"{stat.get('k')}/{stat.get('n')}"))
    return rows


def _breakdown(groups: dict[str, Any], names: list[str]) -> str:
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = []
    for group, block in sorted(groups.items()):
        cells = []
        for n in names:
            stat = block.get("means", {}).get(n) or block.get("rates", {}).get(n)
            cells.append(f"<td>{fmt_stat(stat)}</td>")
        body.append(
            f"<tr><td>{html.escape(group)}</td><td>{block.get('n_ok')}</td>{''.join(cells)}</tr>"
        )
    return f"<table><tr><th>group</th><th>n</th>{head}</tr>{''.join(body)}</table>"


def write_report(
    out_dir: str | Path,
    records: list[dict[str, Any]],
    summary: dict[str, Any],
    cfg: Any,
    refs: dict[str, Any] | None = None,
) -> Path:
    """Write report.html and report.json; returns the HTML path. `refs` (key -> WindowRef)
    locate the worst windows again for their camera strips (none without it)."""
    out_dir = Path(out_dir)
    worst = worst_windows(records, cfg.report.rank_by, cfg.report.worst_windows)
    strips = _strips(out_dir, worst, cfg, refs) if worst and refs else {}
    worst_json = []
    for rec in worst:
        item = dict(rec)
        if rec["key"] in strips:
            item["camera_strip"], item["camera_strip_source"] = strips[rec["key"]]
        worst_json.append(item)
    atomic_write_json(
        out_dir / REPORT_JSON,
        {"summary": summary, "rank_by": cfg.report.rank_by, "worst_windows": worst_json},
    )
    title = f"Open loop: {summary.get('planner')} on {summary.get('data')}"
    priv = (
        "<p><b>privileged planner</b>: it was handed the logged scene (agents, map); its "
        "numbers are not those of a deployable planner.</p>"
        if summary.get("privileged")
        else ""
    )
    timing = summary.get("timing", {})
    skipped = summary.get("skipped", {})
    conv = summary.get("conventions", {})
    key_names = [n for n in ("ade_6.4s", "fde_6.4s", "min_ade_k", "l2_stp3_3s", "l2_uniad_3s")]
    key_names += ["miss_fde", "miss_max", "collision", "offroad", "consistent_joint"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:20px}table{border-collapse:collapse;"
        "margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
        ".win{display:flex;gap:16px;margin:14px 0;border-top:1px solid #ddd;padding-top:10px}"
        "</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        priv,
        f"<p>windows evaluated: {summary.get('windows_evaluated')}; errors: "
        f"{summary.get('n_error')}; skipped: {skipped.get('total')} "
        f"{html.escape(str(skipped.get('by_reason', {})))}; cameras: "
        f"{html.escape(str(summary.get('camera_source')))}; k: {summary.get('k_effective')}</p>",
        f"<p>timing: {_fmt(timing.get('windows_per_s'))} windows/s over "
        f"{timing.get('windows_new')} new windows ({timing.get('workers')} worker(s)); planner "
        f"p50 {_fmt(timing.get('planner_ms_p50'))} ms, p99 {_fmt(timing.get('planner_ms_p99'))} "
        "ms</p>",
        "<h2>Metrics (mean or rate [95% interval])</h2>",
        _table(_metric_rows(summary), ("metric", "value", "n")),
        "<h3>Conventions</h3><ul>",
        "".join(
            f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in conv.items()
        ),
        "</ul>",
        "<h2>By family</h2>",
        _breakdown(summary.get("by_family", {}), key_names),
        "<h2>By decision type (CoC label)</h2>",
        _breakdown(summary.get("by_decision", {}), key_names),
        f"<h2>Worst {len(worst)} windows by {html.escape(cfg.report.rank_by)}</h2>",
    ]
    for item in worst_json:
        metrics = [
            (n, _fmt(item.get(n)), "")
            for n in ("ade_6.4s", "fde_6.4s", "min_ade_k", "min_fde_k", "l2_uniad_3s")
            + ("miss_fde", "miss_max", "collision", "offroad", "consistent_joint", "truthful")
            if n in item
        ]
        cam = ""
        if "camera_strip" in item:
            cam = (
                f"<div><img src='{html.escape(item['camera_strip'])}' alt='cameras'><br>"
                f"<small>cameras: {html.escape(item['camera_strip_source'])}</small></div>"
            )
        reasoning = item.get("reasoning_text")
        if reasoning:  # an untrained model can emit control characters HTML cannot hold
            reasoning = "".join(c if c.isprintable() else "\ufffd" for c in reasoning)
        reason_html = (
            f"<p><b>reasoning</b>: {html.escape(reasoning)}</p>"
            + (
                f"<p><small>{html.escape('; '.join(item.get('consistency_reasons') or []))}"
                f"{html.escape('; '.join(item.get('false_claims') or []))}</small></p>"
            )
            if reasoning
            else "<p><i>no reasoning (planner writes none)</i></p>"
        )
        parts.append(
            "<div class='win'>"
            f"<div>{_svg(item.get('plot', {}))}</div>"
            f"<div><h3>{html.escape(item['key'])}</h3>"
            f"<p>family {html.escape(str(item.get('family')))}, decision "
            f"{html.escape(str(item.get('decision')))}, t0 {_fmt(item.get('t0'), 6)} s</p>"
            f"{_table(metrics, ('metric', 'value', ''))}{reason_html}{cam}</div></div>"
        )
    parts.append("</body></html>")
    path = atomic_write_text(out_dir / REPORT_HTML, "".join(parts))
    return path
