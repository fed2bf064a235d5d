"""Closed-loop reports: compact episode logs, top-down GIF animations, plots and report.html.

- `save_episode_log` (called in the worker) keeps what an animation needs of an episode:
  ego poses, agent boxes and classes, plans, traffic-light states, the reasoning text and the
  lane geometry, as one compressed npz written atomically.
- `render_animation` draws a log with OpenCV (a few ms a frame; matplotlib would be ~10x
  slower for the same picture) and writes a GIF with imageio.
- `write_report` writes a self-contained report.html (tables and base64 PNG plots embedded,
  GIFs in `animations/` beside it).

HTML is built with the stdlib `html` module: the page is a handful of tables, and a template
engine would be one more dependency for it."""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from planner.io import atomic_write_bytes, atomic_write_text
from planner.taxonomy import AgentClass, LightState
from sim_eval.episode import EpisodeRecord

if TYPE_CHECKING:
    from sim_eval.runner import ReportConfig

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
ANIMATION_DIR = "animations"
# Columns of the per-episode table (the per-family tables carry every metric).
EPISODE_TABLE_METRICS = (
    "collision_at_fault",
    "collision",
    "offroad",
    "close_encounter",
    "red_light_violation",
    "route_completion",
    "driving_score",
    "min_ttc_s",
    "min_gap_m",
)
PLAN_POINT_STRIDE = 2  # keep every 2nd plan point (0.2 s) in logs: 32 points per plan

AGENT_CLASSES = list(AgentClass)
LIGHT_STATES = list(LightState)
# BGR-free: canvases are RGB (imageio writes RGB).
CLASS_COLOURS = {
    AgentClass.VEHICLE: (70, 130, 220),
    AgentClass.PEDESTRIAN: (245, 150, 30),
    AgentClass.CYCLIST: (200, 80, 200),
    AgentClass.STATIC_OBSTACLE: (150, 100, 60),
    AgentClass.CONE: (255, 90, 0),
}
LIGHT_COLOURS = {
    LightState.RED: (230, 30, 30),
    LightState.YELLOW: (240, 200, 0),
    LightState.GREEN: (40, 200, 70),
    LightState.UNKNOWN: (160, 160, 160),
}
BACKGROUND = (34, 48, 34)
ROAD = (92, 92, 92)
LANE_MARK = (190, 190, 190)
ROAD_EDGE = (240, 240, 240)
ROUTE = (60, 90, 160)
EGO = (40, 210, 90)
PLAN = (250, 230, 60)
TEXT = (240, 240, 240)
PANEL = (20, 20, 20)


# ---- episode logs ----------------------------------------------------------------------
def _ragged(arrays: Sequence[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate (n_i, width) arrays; offsets (len + 1,) index them back."""
    sizes = [len(a) for a in arrays]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    flat = (
        np.concatenate([np.asarray(a, np.float32).reshape(-1, width) for a in arrays])
        if arrays
        else np.zeros((0, width), np.float32)
    )
    return flat, offsets


def _output_text(out: Any) -> tuple[str, str]:
    """(reasoning text, decision summary) of a PlannerOutput, '' where it has none."""
    if out is None:
        return "", ""
    text = out.reasoning.text if out.reasoning is not None else ""
    decision = out.decision
    if decision is None and out.reasoning is not None:
        decision = out.reasoning.decision
    summary = ""
    if decision is not None:
        summary = f"{decision.longitudinal.value} / {decision.lateral.value}"
        if decision.lateral_side.value != "none":
            summary += f" ({decision.lateral_side.value})"
        causes = [f.object_id or f.kind.value for f in decision.factors]
        if causes:
            summary += " <- " + ", ".join(causes[:3])
    return text, summary


def save_episode_log(record: EpisodeRecord, path: str | Path) -> Path:
    """Write the compact animation log of one episode (npz, atomic)."""
    frames = record.frames
    n = len(frames)
    ego = np.stack([f.ego.as_row() for f in frames]).astype(np.float64)  # (F, 7)
    first = frames[0].ego
    agent_frame, agent_box, agent_class = [], [], []
    light_frame, light_state, light_line = [], [], []
    stop_lines = frames[0].map.stop_lines
    for i, f in enumerate(frames):
        for a in f.agents:
            agent_frame.append(i)
            agent_box.append((a.x, a.y, a.yaw, a.length, a.width))
            agent_class.append(AGENT_CLASSES.index(a.agent_class))
        for tl in f.traffic_lights:
            line = stop_lines.get(tl.stop_line_id) if tl.stop_line_id else None
            if line is None:
                continue
            light_frame.append(i)
            light_state.append(LIGHT_STATES.index(tl.state))
            light_line.append(np.asarray(line.points, np.float32).reshape(2, 2))
    plan_pts = math.ceil(64 / PLAN_POINT_STRIDE)
    plan_xy = np.full((n, plan_pts, 2), np.nan, np.float32)
    reasoning, decision = [], []
    for i, f in enumerate(frames):
        out = record.outputs[i] if i < len(record.outputs) else None
        if out is not None:
            world = out.trajectory.to_world(f.ego)[::PLAN_POINT_STRIDE, :2]
            plan_xy[i, : len(world)] = world
        text, summary = _output_text(out)
        reasoning.append(text)
        decision.append(summary)
    lanes = list(frames[0].map.lanes.values())
    polys, poly_off = _ragged(
        [np.concatenate([ln.left_boundary, ln.right_boundary[::-1]]) for ln in lanes], 2
    )
    marks = []
    for ln in lanes:
        for pts, kind in (
            (ln.left_boundary, ln.left_boundary_kind),
            (ln.right_boundary, ln.right_boundary_kind),
        ):
            if kind != "none":
                marks.append((np.asarray(pts), kind))
    mark_pts, mark_off = _ragged([m[0] for m in marks], 2)
    meta = {
        "scenario": record.scenario,
        "family": record.family,
        "seed": record.seed,
        "termination": record.termination,
        "failure": record.failure,
        "ego_length": first.length,
        "ego_width": first.width,
        "rear_axle_to_center_m": first.rear_axle_to_center_m,
    }
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        ego=ego,
        agent_frame=np.asarray(agent_frame, np.int32),
        agent_box=np.asarray(agent_box, np.float32).reshape(-1, 5),
        agent_class=np.asarray(agent_class, np.int8),
        light_frame=np.asarray(light_frame, np.int32),
        light_state=np.asarray(light_state, np.int8),
        light_line=np.asarray(light_line, np.float32).reshape(-1, 2, 2),
        plan_xy=plan_xy,
        reasoning=np.asarray(reasoning, dtype=str),
        decision=np.asarray(decision, dtype=str),
        lane_poly=polys,
        lane_poly_offsets=poly_off,
        mark_pts=mark_pts,
        mark_offsets=mark_off,
        mark_is_edge=np.asarray([m[1] == "road_edge" for m in marks], bool),
        route_xy=np.asarray(record.route.waypoints, np.float32).reshape(-1, 2),
        meta=np.asarray(json.dumps(meta)),
    )
    return atomic_write_bytes(path, buf.getvalue())


def load_episode_log(path: str | Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    data["meta"] = json.loads(str(data["meta"]))
    return data


# ---- animations ---------------------------------------------------------------------------
class _View:
    """World (REP-103, metres) -> pixel transform of a window centred near the ego."""

    def __init__(self, cfg: ReportConfig, x: float, y: float, yaw: float):
        self.ppm = cfg.pixels_per_m
        self.w = int(round(cfg.view_width_m * cfg.pixels_per_m))
        self.h = int(round(cfg.view_height_m * cfg.pixels_per_m))
        ahead = cfg.ahead_fraction * cfg.view_width_m
        self.cx = x + ahead * math.cos(yaw)
        self.cy = y + ahead * math.sin(yaw)

    def px(self, xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        u = (xy[:, 0] - self.cx) * self.ppm + self.w / 2
        v = self.h / 2 - (xy[:, 1] - self.cy) * self.ppm  # image rows grow downwards
        return np.round(np.stack([u, v], axis=1)).astype(np.int32)


def _box(x: float, y: float, yaw: float, length: float, width: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    local = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]]) * [length / 2, width / 2]
    return local @ np.array([[c, s], [-s, c]]) + [x, y]


def _draw_frame(data: dict[str, Any], i: int, cfg: ReportConfig, title: str) -> np.ndarray:
    import cv2

    ego = data["ego"][i]
    meta = data["meta"]
    view = _View(cfg, ego[1], ego[2], ego[3])
    panel_h = 58
    img = np.empty((view.h + panel_h, view.w, 3), np.uint8)
    img[:] = BACKGROUND
    road = img[: view.h]
    off = data["lane_poly_offsets"]
    polys = [view.px(data["lane_poly"][off[k] : off[k + 1]]) for k in range(len(off) - 1)]
    cv2.fillPoly(road, polys, ROAD)
    moff = data["mark_offsets"]
    for k in range(len(moff) - 1):
        pts = view.px(data["mark_pts"][moff[k] : moff[k + 1]])
        edge = bool(data["mark_is_edge"][k])
        cv2.polylines(road, [pts], False, ROAD_EDGE if edge else LANE_MARK, 2 if edge else 1)
    if len(data["route_xy"]) > 1:
        cv2.polylines(road, [view.px(data["route_xy"])], False, ROUTE, 1)
    for k in np.flatnonzero(data["light_frame"] == i):
        colour = LIGHT_COLOURS[LIGHT_STATES[int(data["light_state"][k])]]
        cv2.polylines(road, [view.px(data["light_line"][k])], False, colour, 3)
    for k in np.flatnonzero(data["agent_frame"] == i):
        x, y, yaw, length, width = data["agent_box"][k].tolist()
        colour = CLASS_COLOURS[AGENT_CLASSES[int(data["agent_class"][k])]]
        cv2.fillPoly(road, [view.px(_box(x, y, yaw, length, width))], colour)
    plan = data["plan_xy"][i]
    plan = plan[np.isfinite(plan).all(axis=1)]
    if len(plan):
        pts = np.concatenate([ego[None, 1:3], plan])
        cv2.polylines(road, [view.px(pts)], False, PLAN, 2)
    r = meta["rear_axle_to_center_m"]
    cx, cy = ego[1] + r * math.cos(ego[3]), ego[2] + r * math.sin(ego[3])
    corners = _box(cx, cy, ego[3], meta["ego_length"], meta["ego_width"])
    cv2.fillPoly(road, [view.px(corners)], EGO)
    nose = view.px([[cx, cy], corners[:2].mean(axis=0)])
    cv2.line(road, tuple(nose[0]), tuple(nose[1]), (0, 0, 0), 1)
    img[view.h :] = PANEL
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.36
    head = f"{title}  t={ego[0]:4.1f}s  v={ego[4]:4.1f}m/s"
    cv2.putText(img, head, (4, 12), font, scale, TEXT, 1, cv2.LINE_AA)
    chars = max(20, int(view.w / 6.2))
    lines = []
    if data["decision"][i]:
        lines.append(str(data["decision"][i]))
    if data["reasoning"][i]:
        lines += textwrap.wrap(str(data["reasoning"][i]), chars)
    if i == len(data["ego"]) - 1:  # the last frame is never planned on: say how it ended
        lines.append(f"episode ended: {meta['termination']}")
        if meta.get("failure"):
            lines += textwrap.wrap(str(meta["failure"]), chars)
    for k, line in enumerate(lines[:4]):
        cv2.putText(img, line[:chars], (4, view.h + 13 + 14 * k), font, scale, TEXT, 1, cv2.LINE_AA)
    return img


def render_animation(
    log_path: str | Path, gif_path: str | Path, cfg: ReportConfig, title: str = ""
) -> Path:
    """Top-down GIF of a logged episode: lanes, agents by class, ego, plan, lights, text."""
    import imageio.v3 as iio

    data = load_episode_log(log_path)
    n = len(data["ego"])
    # Keep animation_hz frames per simulated second (the log is 10 Hz), then thin further
    # so no GIF holds more than animation_max_frames.
    stride = max(1, round(10.0 / max(cfg.animation_hz, 1e-6)))
    stride = max(stride, math.ceil(n / max(cfg.animation_max_frames, 1)))
    idx = list(range(0, n, stride))
    if idx[-1] != n - 1:
        idx.append(n - 1)  # always show the final frame (the crash, the stop)
    frames = np.stack([_draw_frame(data, i, cfg, title) for i in idx])
    duration_ms = 100.0 * stride
    buf = io.BytesIO()
    iio.imwrite(buf, frames, extension=".gif", duration=duration_ms, loop=0)
    return atomic_write_bytes(gif_path, buf.getvalue())


# ---- choosing what to animate -------------------------------------------------------------
def _true(record: dict[str, Any], name: str) -> bool:
    return bool(record.get(name))


def _route_completion(record: dict[str, Any]) -> float:
    value = record.get("route_completion")
    return float(value) if isinstance(value, (int, float)) else 0.0


def severity(record: dict[str, Any]) -> tuple:
    """Sort key, worst first: an episode that errored or whose planner failed, at-fault
    collision, any collision, off-road, red light, close encounter, then the lowest route
    completion (metric names of sim_eval.metrics)."""
    return (
        record.get("status", "ok") != "ok" or _true(record, "planner_failed"),
        _true(record, "collision_at_fault"),
        _true(record, "collision") or record.get("termination") == "collision",
        _true(record, "offroad"),
        _true(record, "red_light_violation"),
        _true(record, "close_encounter"),
        -_route_completion(record),
    )


def _is_bad(record: dict[str, Any]) -> bool:
    return any(severity(record)[:6])


def select_worst(records: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """The k episodes to animate, worst first (only ones that have a log)."""
    with_log = [r for r in records if r.get("log")]
    return sorted(with_log, key=severity, reverse=True)[: max(0, k)]


def _why(record: dict[str, Any]) -> str:
    reasons = []
    if record.get("status", "ok") != "ok":
        reasons.append(f"error: {record.get('error')}")
    if record.get("planner_failed"):
        reasons.append(f"planner failed: {record.get('planner_failure')}")
    for name, label in (
        ("collision_at_fault", "at-fault collision"),
        ("offroad", "off-road"),
        ("red_light_violation", "red-light violation"),
        ("close_encounter", "close encounter"),
    ):
        if _true(record, name):
            reasons.append(label)
    if _true(record, "collision") and not _true(record, "collision_at_fault"):
        reasons.append("collision (not at fault)")
    reasons.append(f"route completion {_route_completion(record):.0%}")
    if record.get("termination"):
        reasons.append(f"ended: {record['termination']}")
    return "; ".join(reasons)


# ---- plots ------------------------------------------------------------------------------
def _metric_values(records: list[dict[str, Any]], metric: str, family: str) -> list[float]:
    out = []
    for r in records:
        if r.get("family") != family or r.get("status") == "error":
            continue
        v = r.get(metric)
        if isinstance(v, (bool, int, float)) and math.isfinite(float(v)):
            out.append(float(v))
    return out


def plot_metric(
    records: list[dict[str, Any]],
    metric: str,
    families: list[str],
    summary_families: dict[str, Any],
    cfg: ReportConfig,
) -> bytes:
    """PNG of one metric per family: rates as bars with their interval, other metrics as box
    plots with every episode drawn as a point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(families) + 1.5), 2.6), dpi=cfg.plot_dpi)
    try:
        stats = [summary_families.get(f, {}).get(metric) or {} for f in families]
        x = np.arange(len(families))
        if stats and all(s.get("kind") == "rate" for s in stats if s):
            val = np.array([s.get("value", np.nan) if s else np.nan for s in stats], float)
            lo = np.array([s.get("low", np.nan) if s else np.nan for s in stats], float)
            hi = np.array([s.get("high", np.nan) if s else np.nan for s in stats], float)
            ax.bar(x, val, color="#4a7bd0")
            ax.plot(x, val, "o", ms=3, color="#1d3f80")  # a 0 rate stays visible
            ax.errorbar(
                x, val, yerr=np.vstack([val - lo, hi - val]), fmt="none", ecolor="k", capsize=3
            )
            ax.set_ylim(0, max(1e-3, float(np.nanmax(hi)) if np.isfinite(hi).any() else 1) * 1.1)
            ax.set_ylabel("rate (95% Wilson)")
        else:
            rng = np.random.default_rng(0)
            data = [_metric_values(records, metric, f)[: cfg.max_plot_episodes] for f in families]
            boxed = [i for i, d in enumerate(data) if len(d) >= 2]  # a box of one is a line
            if boxed:
                ax.boxplot(
                    [data[i] for i in boxed],
                    positions=x[boxed],
                    widths=0.5,
                    showfliers=False,
                    manage_ticks=False,
                )
            for xi, d in zip(x, data):
                ax.plot(xi + rng.uniform(-0.15, 0.15, len(d)), d, ".", ms=3, color="#d0602a")
        ax.set_xticks(x)
        ax.set_xticklabels(families, rotation=30, ha="right", fontsize=7)
        ax.set_title(metric, fontsize=9)
        ax.tick_params(labelsize=7)
        # Fixed margins instead of tight_layout: it costs as much as the drawing itself.
        fig.subplots_adjust(left=0.14, right=0.98, top=0.88, bottom=0.34)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)


# ---- HTML -----------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:.5em 0 1.2em}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}
th{background:#f0f0f0} td:first-child,th:first-child{text-align:left}
.bad{color:#b00020;font-weight:600} .small{font-size:12px;color:#555}
figure{display:inline-block;margin:4px} img{max-width:100%}
"""


def _fmt_value(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        if not math.isfinite(float(v)):
            return "-"
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.0f}"
    return html.escape(str(v))


def fmt_stat(stat: dict[str, Any] | None) -> str:
    """'12.5% [3.1, 40.0]' for a rate, '0.93 [0.90, 0.96]' for a mean."""
    if not stat or stat.get("value") is None:
        return "-"
    v, lo, hi = stat.get("value"), stat.get("low"), stat.get("high")
    if stat.get("kind") == "rate":
        text = f"{100 * v:.1f}%"
        if lo is not None and hi is not None:
            text += f" [{100 * lo:.1f}, {100 * hi:.1f}]"
        return text
    text = _fmt_value(v)
    if lo is not None and hi is not None:
        text += f" [{_fmt_value(lo)}, {_fmt_value(hi)}]"
    return text


def _stat_table(rows: dict[str, Any], title_col: str = "metric") -> str:
    body = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{fmt_stat(stat)}</td>"
        f"<td>{html.escape(str(stat.get('n', '-'))) if stat else '-'}</td></tr>"
        for name, stat in rows.items()
    )
    return (
        f"<table><tr><th>{title_col}</th><th>value [95% interval]</th><th>n</th></tr>{body}</table>"
    )


# Columns of the families-at-a-glance table.
GLANCE_METRICS = (
    "collision_at_fault",
    "offroad",
    "close_encounter",
    "red_light_violation",
    "planner_failed",
    "route_completion",
    "driving_score",
)


def _glance_table(families: dict[str, dict[str, Any]]) -> str:
    """One row per family, the key metrics as columns (value only; intervals below)."""
    cols = [m for m in GLANCE_METRICS if any(m in rows for rows in families.values())]
    head = "".join(f"<th>{html.escape(m)}</th>" for m in cols)
    body = []
    for fam in sorted(families):
        rows = families[fam]
        n = (rows.get("episode_error") or {}).get("n", "-")
        cells = "".join(
            f"<td>{fmt_stat({**rows[m], 'low': None, 'high': None}) if m in rows else '-'}</td>"
            for m in cols
        )
        body.append(
            f"<tr><td><a href='#family-{html.escape(fam)}'>{html.escape(fam)}</a></td>"
            f"<td>{n}</td>{cells}</tr>"
        )
    return f"<table><tr><th>family</th><th>episodes</th>{head}</tr>{''.join(body)}</table>"


def _episode_table(records: list[dict[str, Any]], metrics: list[str]) -> str:
    head = "".join(f"<th>{html.escape(m)}</th>" for m in metrics)
    rows = []
    for r in sorted(records, key=severity, reverse=True):
        cls = ' class="bad"' if _is_bad(r) else ""
        cells = "".join(f"<td>{_fmt_value(r.get(k))}</td>" for k in metrics)
        reason = r.get("planner_failure") or r.get("error") or ""
        rows.append(
            f"<tr{cls}><td>{html.escape(str(r.get('key')))}</td>"
            f"<td>{html.escape(str(r.get('termination', r.get('status'))))}</td>{cells}"
            f"<td>{html.escape(str(reason))[:200]}</td></tr>"
        )
    return (
        f"<table><tr><th>episode</th><th>termination</th>{head}<th>failure</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def write_report(
    out_dir: str | Path,
    records: list[dict[str, Any]],
    summary: dict[str, Any],
    cfg: ReportConfig,
) -> Path:
    """Write report.html (and animations/*.gif) into `out_dir`; returns the HTML path."""
    out = Path(out_dir)
    families = sorted(summary.get("families", {}))
    metric_names = list(summary.get("metric_names", []))
    counts = ", ".join(f"{k}: {v}" for k, v in summary.get("status_counts", {}).items())
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>cocdrive closed-loop report: {html.escape(str(summary.get('planner')))}</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Closed-loop report</h1>",
        f"<p>planner <b>{html.escape(str(summary.get('planner')))}</b>, suite "
        f"<b>{html.escape(str(summary.get('suite')))}</b>, {summary.get('episodes', 0)} episodes "
        f"({html.escape(counts)}). Intervals are 95%: Wilson for per-episode rates, exact "
        "Poisson for per-km rates, Student t (or bootstrap, per config) for means.</p>",
        "<h2>Headline</h2>",
        _stat_table(summary.get("headline", {})),
    ]
    parts.append("<h2>Per family</h2>")
    parts.append(_glance_table(summary.get("families", {})))
    for fam in families:
        parts.append(f"<h3 id='family-{html.escape(fam)}'>{html.escape(fam)}</h3>")
        parts.append(_stat_table(summary["families"][fam]))
    plotted = [m for m in metric_names if not m.startswith("num_")]  # counts: see the rates
    if plotted and families:
        parts.append("<h2>Plots</h2>")
        for metric in plotted:
            try:
                png = plot_metric(records, metric, families, summary["families"], cfg)
            except Exception as exc:  # noqa: BLE001 - one bad plot must not lose the report
                log.warning("plot of %s failed: %s", metric, exc)
                continue
            b64 = base64.b64encode(png).decode("ascii")
            parts.append(
                f"<figure><img alt='{html.escape(metric)}' src='data:image/png;base64,{b64}'>"
                "</figure>"
            )
    worst = select_worst(records, cfg.animations)
    if worst:
        parts.append("<h2>Animations (worst first)</h2>")
        parts.append(
            "<p class='small'>Top-down, world-aligned window following the ego (green). "
            "Agents: vehicles blue, pedestrians orange, cyclists purple, static obstacles brown, "
            "cones red-orange. Yellow: the plan. Stop lines take the light's colour. "
            "The bottom panel shows the planner's decision and reasoning.</p>"
        )
    for r in worst:
        log_path = out / str(r["log"])
        if not log_path.exists():
            log.warning("no log for %s at %s; skipping its animation", r.get("key"), log_path)
            continue
        gif_name = Path(str(r["log"])).with_suffix(".gif").name
        gif = out / ANIMATION_DIR / gif_name
        try:
            render_animation(log_path, gif, cfg, title=str(r.get("key")))
        except Exception as exc:  # noqa: BLE001 - the tables are still worth writing
            log.warning("animation of %s failed: %s", r.get("key"), exc)
            continue
        parts.append(
            f"<figure><img src='{ANIMATION_DIR}/{html.escape(gif_name)}' "
            f"alt='{html.escape(str(r.get('key')))}'><figcaption class='small'>"
            f"{html.escape(str(r.get('key')))}: {html.escape(_why(r))}</figcaption></figure>"
        )
    parts.append("<h2>Episodes</h2>")
    table_metrics = [m for m in EPISODE_TABLE_METRICS if m in metric_names]
    parts.append(_episode_table(records, table_metrics))
    parts.append("</body></html>")
    return atomic_write_text(out / REPORT_FILE, "\n".join(parts))
