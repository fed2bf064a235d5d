"""HTML report, episode logs and animations, on runs of the fake straight-road simulator."""

from __future__ import annotations

import re

import imageio.v3 as iio
import numpy as np
import pytest

from sim_eval.report import (
    ANIMATION_DIR,
    REPORT_FILE,
    fmt_stat,
    load_episode_log,
    save_episode_log,
    select_worst,
    severity,
)
from sim_eval.runner import load_run_config, run_suite, simulate_episode

try:  # tests/ may or may not be a package
    from tests.sim_eval import fake_sim
except ImportError:
    import fake_sim


@pytest.fixture(scope="module")
def crash_run(tmp_path_factory):
    """Constant speed into a slow lead: every slow_lead episode ends in a collision."""
    out = tmp_path_factory.mktemp("run")
    cfg = load_run_config(None, ["report.animations=2"])
    res = run_suite(
        fake_sim.fake_suite((1, 2)),
        cfg,
        out,
        suite_name="fake",
        planner_factory=fake_sim.make_const_planner,
        simulator_factory=fake_sim.make_fake_simulator,
    )
    return out, res


def test_report_has_headline_family_tables_plots_and_animations(crash_run):
    out, res = crash_run
    text = (out / REPORT_FILE).read_text()
    assert "<h2>Headline</h2>" in text
    glance = text.split("<h2>Per family</h2>")[1].split("<h3")[0]
    assert "<a href='#family-slow_lead'>slow_lead</a></td><td>2</td><td>100.0%</td>" in glance
    for fam in ("cruise", "slow_lead"):
        assert f"<h3 id='family-{fam}'>" in text
    # every metric appears in the per-family tables with an interval
    section = text.split("<h3 id='family-slow_lead'>")[1].split("<h3")[0]
    assert "<td>collision_at_fault</td><td>100.0% [" in section
    assert "<td>route_completion</td>" in section
    assert text.count("data:image/png;base64,") >= 5
    gifs = re.findall(rf"src='{ANIMATION_DIR}/([^']+\.gif)'", text)
    assert len(gifs) == 2
    for name in gifs:
        assert name.startswith("slow_lead")  # the collisions are animated first
        gif = out / ANIMATION_DIR / name
        assert 1_000 < gif.stat().st_size < 500_000
        frames = iio.imread(gif, index=None)
        assert frames.ndim == 4 and frames.shape[0] >= 2
    assert res.report_path == out / REPORT_FILE


def test_worst_first_ordering():
    ok = {"status": "ok", "route_completion": 1.0, "log": "a"}
    slow = {**ok, "route_completion": 0.4}
    close = {**ok, "close_encounter": True}
    crash = {**ok, "collision": True, "collision_at_fault": True}
    failed = {**ok, "planner_failed": True}
    order = sorted([ok, slow, close, crash, failed], key=severity, reverse=True)
    assert order == [failed, crash, close, slow, ok]
    assert select_worst([ok, {**crash, "log": None}], 2) == [ok]  # no log, no animation


def test_fmt_stat():
    assert fmt_stat({"kind": "rate", "value": 0.125, "low": 0.02, "high": 0.47}) == (
        "12.5% [2.0, 47.0]"
    )
    assert fmt_stat({"kind": "mean", "value": 0.93, "low": 0.9, "high": 0.96}) == "0.93 [0.9, 0.96]"
    assert fmt_stat(None) == "-"


def test_episode_log_round_trip(tmp_path):
    sim = fake_sim.make_fake_simulator()
    spec = fake_sim.fake_suite((1,))[1]  # slow lead: the careful planner explains itself
    record, _ = simulate_episode(sim, fake_sim.make_careful_planner(), spec)
    path = save_episode_log(record, tmp_path / "ep.npz")
    log = load_episode_log(path)
    n = len(record.frames)
    assert log["ego"].shape == (n, 7)
    assert log["meta"]["family"] == "slow_lead" and log["meta"]["seed"] == 1
    assert len(log["agent_frame"]) == sum(len(f.agents) for f in record.frames)
    # plan points are in the world frame: the first lies ahead of the ego at that frame
    first = log["plan_xy"][0][0]
    assert first[0] >= log["ego"][0, 1] and abs(first[1]) < 1e-6
    assert np.isnan(log["plan_xy"][-1]).all()  # the last frame was never planned on
    assert any("lead vehicle" in str(t) for t in log["reasoning"])
    assert any("lead_obstacle_following" in str(t) for t in log["decision"])


def test_rebuild_report_changes_only_report_settings(crash_run):
    from planner.errors import UserError
    from sim_eval.runner import rebuild_report

    out, _ = crash_run
    path = rebuild_report(out, ["report.animations=1"])
    assert len(re.findall(rf"src='{ANIMATION_DIR}/[^']+\.gif'", path.read_text())) == 1
    with pytest.raises(UserError, match="only report"):
        rebuild_report(out, ["sim.actuation_delay_s=0.2"])
