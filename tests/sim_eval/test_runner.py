"""The closed-loop runner on the fake straight-road simulator: results, resume after an
interruption, planner failures, refusing a results folder of another run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner.errors import UserError
from planner.io import JsonlResults
from sim_eval.runner import (
    EPISODES_FILE,
    MANIFEST_FILE,
    SUMMARY_FILE,
    load_run_config,
    read_run,
    run_suite,
)

try:  # tests/ may or may not be a package
    from tests.sim_eval import fake_sim
except ImportError:
    import fake_sim


def _cfg(**overrides):
    cfg = load_run_config(None, [f"{k}={v}" for k, v in overrides.items()])
    return cfg


def _run(out: Path, planner=fake_sim.make_careful_planner, suite="fake", seeds=(1, 2, 3, 4), **kw):
    return run_suite(
        fake_sim.fake_suite(seeds),
        _cfg(**{"report.animations": kw.pop("animations", 0)}),
        out,
        suite_name=suite,
        planner_factory=planner,
        simulator_factory=fake_sim.make_fake_simulator,
        write_report=kw.pop("write_report", False),  # the report has its own tests
        **kw,
    )


def test_run_writes_records_summary_and_config(tmp_path):
    res = _run(tmp_path)
    records = JsonlResults(tmp_path / EPISODES_FILE).records()
    assert sorted(r["key"] for r in records) == sorted(
        f"{fam}:{s}" for fam in ("cruise", "slow_lead") for s in (1, 2, 3, 4)
    )
    for r in records:
        assert r["status"] == "ok" and not r["planner_failed"]
        assert {"collision", "route_completion", "timings", "log"} <= set(r)
        assert (tmp_path / r["log"]).is_file()
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert set(summary["families"]) == {"cruise", "slow_lead"}
    assert summary["headline"]["collision"]["n"] == 8
    lo, hi = summary["headline"]["collision"]["low"], summary["headline"]["collision"]["high"]
    assert lo == 0.0 and 0.2 < hi < 0.5  # Wilson interval of 0/8
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / MANIFEST_FILE).is_file()
    assert res.summary["episodes"] == 8


def test_interrupted_run_resumes_only_the_rest(tmp_path):
    calls: list[tuple[int, int]] = []

    def interrupt_after_three(done: int, total: int) -> None:
        calls.append((done, total))
        if done == 3:
            raise KeyboardInterrupt  # what Ctrl-C raises in the main process

    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, progress=interrupt_after_three)
    assert len(JsonlResults(tmp_path / EPISODES_FILE).records()) == 3
    assert not (tmp_path / SUMMARY_FILE).exists()

    resumed: list[tuple[int, int]] = []
    res = _run(tmp_path, progress=lambda d, t: resumed.append((d, t)))
    # Starts at 3 of 8 and runs the remaining 5 once each.
    assert resumed[0] == (3, 8) and resumed[-1] == (8, 8) and len(resumed) == 6
    keys = [r["key"] for r in JsonlResults(tmp_path / EPISODES_FILE).records()]
    assert len(keys) == len(set(keys)) == 8
    assert len(res.records) == 8


def test_failed_planner_episode_is_recorded_and_the_run_goes_on(tmp_path):
    res = _run(tmp_path, planner=fake_sim.make_flaky_planner)
    by_key = {r["key"]: r for r in res.records}
    assert len(by_key) == 8
    for fam in ("cruise", "slow_lead"):
        raised = by_key[f"{fam}:2"]
        assert raised["planner_failed"] and raised["termination"] == "planner_failed"
        assert "RuntimeError" in raised["planner_failure"] and "boom" in raised["planner_failure"]
        assert "t=0.5" in raised["planner_failure"]
        nan = by_key[f"{fam}:3"]
        assert nan["planner_failed"] and "InvalidInputError" in nan["planner_failure"]
        assert "non-finite" in nan["planner_failure"]
        assert not by_key[f"{fam}:1"]["planner_failed"]
    assert res.summary["status_counts"] == {"ok": 4, "planner_failed": 4}
    assert res.summary["headline"]["planner_failed"]["k"] == 4


def test_refuses_a_results_folder_of_another_suite_or_planner(tmp_path):
    _run(tmp_path, suite="fake")
    with pytest.raises(UserError, match=r"suite 'fake' there vs 'other' now.*new --out"):
        _run(tmp_path, suite="other")
    with pytest.raises(UserError, match="planner"):
        _run(tmp_path, planner=fake_sim.make_const_planner)
    with pytest.raises(UserError, match="scenarios/seeds"):
        _run(tmp_path, seeds=(1, 2))
    # The identical run is a resume: nothing left to do, same records.
    assert len(_run(tmp_path).records) == 8


def test_a_retrained_checkpoint_at_the_same_path_is_another_run(tmp_path):
    """A checkpoint folder re-exported with new weights must not resume the old results."""
    from sim_eval.runner import build_manifest, check_manifest

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "meta.json").write_text(json.dumps({"weights_sha256": "aaaa"}))
    cfg, specs = _cfg(), fake_sim.fake_suite((1,))
    first = build_manifest(cfg, "fake", specs, str(ckpt), "fake")
    assert first["planner_weights"] == "aaaa"
    out = tmp_path / "run"
    out.mkdir()
    (out / MANIFEST_FILE).write_text(json.dumps(first))
    check_manifest(out, build_manifest(cfg, "fake", specs, str(ckpt), "fake"))  # same weights
    (ckpt / "meta.json").write_text(json.dumps({"weights_sha256": "bbbb"}))
    with pytest.raises(UserError, match="planner checkpoint weights differs.*new --out"):
        check_manifest(out, build_manifest(cfg, "fake", specs, str(ckpt), "fake"))
    assert build_manifest(cfg, "fake", specs, "const-vel", "fake")["planner_weights"] is None


def test_errored_episode_is_recorded_and_retried_on_resume(tmp_path):
    specs = fake_sim.fake_suite((1,))
    broken = [s for s in specs if s.family == "cruise"]
    bad = type(broken[0])(
        name="cruise/bad", family="cruise", seed=9, duration_s=1.0, params={"route_length_m": -5}
    )
    cfg = _cfg(**{"report.animations": 0})
    kw = dict(
        suite_name="fake",
        planner_factory=fake_sim.make_careful_planner,
        simulator_factory=fake_sim.make_fake_simulator,
        write_report=False,
    )
    res = run_suite([*specs, bad], cfg, tmp_path, **kw)
    err = {r["key"]: r for r in res.records}["cruise:9"]
    assert err["status"] == "error" and "MetricsError" in err["error"]
    assert res.summary["status_counts"]["error"] == 1
    res = run_suite([*specs, bad], cfg, tmp_path, **kw)  # retried, fails the same way
    assert len(JsonlResults(tmp_path / EPISODES_FILE).records()) == 3


def test_same_seed_same_episode(tmp_path):
    a = _run(tmp_path / "a", seeds=(5,))
    b = _run(tmp_path / "b", seeds=(5,))
    strip = lambda rs: [{k: v for k, v in r.items() if k != "timings"} for r in rs]  # noqa: E731
    assert strip(a.records) == strip(b.records)


def test_read_run_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_run(tmp_path / "missing")
    with pytest.raises(UserError, match="sim run"):
        read_run(tmp_path)


@pytest.mark.slow  # spawning workers imports torch & co. in each (~10 s here)
def test_process_pool_gives_the_same_records_as_inline(tmp_path):
    inline = _run(tmp_path / "inline", seeds=(1, 2))
    pooled = _run(tmp_path / "pool", seeds=(1, 2), workers=2)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "timings"} for r in rs]  # noqa: E731
    assert strip(pooled.records) == strip(inline.records)


def test_learned_planner_gets_rendered_cameras(tmp_path):
    spec = fake_sim.fake_suite((1,), duration_s=0.5)[:1]
    kw = dict(planner_factory=fake_sim.make_camera_planner, write_report=False)
    kw["simulator_factory"] = fake_sim.make_fake_simulator
    res = run_suite(spec, _cfg(), tmp_path / "auto", **kw)
    assert not res.records[0]["planner_failed"]
    res = run_suite(spec, _cfg(cameras="none"), tmp_path / "none", **kw)
    assert "no camera frames" in res.records[0]["planner_failure"]
