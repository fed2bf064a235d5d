"""`cocdrive demo | sim run | sim compare | bench sim`: help texts, bad input, compare's exit
status on paired runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from planner.cli import build_app
from planner.errors import UserError
from planner.io import atomic_write_json
from sim_eval.compare import COMPARE_FILE, compare_runs
from sim_eval.metrics import METRIC_SPECS
from sim_eval.runner import EPISODES_FILE, MANIFEST_FILE

runner = CliRunner()


@pytest.fixture(scope="module")
def app():
    return build_app()


@pytest.mark.parametrize(
    "command",
    [["demo"], ["sim", "run"], ["sim", "compare"], ["sim", "report"], ["bench", "sim"]],
)
def test_every_command_has_help_with_examples(app, command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Examples:" in result.output
    assert f"cocdrive {' '.join(command)}" in result.output


def _episode(key: str, bad: bool = False) -> dict:
    """A flat episode row as `sim run` writes it, clean or with an at-fault collision."""
    family, seed = key.split(":")
    row = {"key": key, "family": family, "seed": int(seed), "status": "ok"}
    for spec in METRIC_SPECS:
        row[spec.name] = {"binary": False, "count": 0, "continuous": 1.0}[spec.kind]
    row.update(distance_m=100.0, min_ttc_s=3.0, min_gap_m=5.0)
    if bad:
        row.update(collision=True, collision_at_fault=True, num_collisions=1)
        row.update(num_at_fault_collisions=1, driving_score=0.6, route_completion=0.5)
    return row


def _write_run(path: Path, rows: list[dict], planner: str = "expert") -> Path:
    path.mkdir(parents=True)
    atomic_write_json(path / MANIFEST_FILE, {"suite": "fake", "planner": planner})
    (path / EPISODES_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _keys(n: int) -> list[str]:
    return [f"{fam}:{s}" for fam in ("cut_in", "hard_braking_lead") for s in range(n)]


def test_compare_exits_1_on_an_injected_regression(app, tmp_path):
    keys = _keys(15)
    a = _write_run(tmp_path / "a", [_episode(k) for k in keys])
    b = _write_run(
        tmp_path / "b", [_episode(k, bad=i % 3 != 0) for i, k in enumerate(keys)], "cand"
    )
    result = runner.invoke(app, ["sim", "compare", str(a), str(b)])
    assert result.exit_code == 1, result.output
    assert "REGRESSION" in result.output
    written = json.loads((b / COMPARE_FILE).read_text())
    assert written["regression"] and "collision_at_fault" in written["regressions"]
    # B against itself (or A against B the other way round) is no regression
    result = runner.invoke(
        app, ["sim", "compare", str(b), str(a), "--out", str(tmp_path / "c.json")]
    )
    assert result.exit_code == 0, result.output
    assert "collision_at_fault" in json.loads((tmp_path / "c.json").read_text())["improvements"]


def test_compare_exits_0_on_identical_runs(app, tmp_path):
    rows = [_episode(k, bad=i % 4 == 0) for i, k in enumerate(_keys(10))]
    a = _write_run(tmp_path / "a", rows)
    b = _write_run(tmp_path / "b", rows)
    result = runner.invoke(app, ["sim", "compare", str(a), str(b)])
    assert result.exit_code == 0, result.output
    assert "no significant regression" in result.output


def test_compare_refuses_runs_on_different_seeds(tmp_path):
    a = _write_run(tmp_path / "a", [_episode(k) for k in _keys(4)])
    b = _write_run(tmp_path / "b", [_episode(k) for k in _keys(5)])
    with pytest.raises(UserError, match="not on the same seeds.*--seeds"):
        compare_runs(a, b)
    with pytest.raises(UserError, match="--alpha"):
        compare_runs(a, a, alpha=1.5)


def _cocdrive(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from planner.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_unknown_suite_prints_one_line_listing_valid_suites(tmp_path):
    proc = _cocdrive("sim", "run", "--suite", "smok", "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert "unknown scenario suite 'smok'" in err and "smoke" in err and "regression" in err


def test_unknown_planner_lists_valid_planners(app, tmp_path):
    result = runner.invoke(app, ["sim", "run", "--planner", "expret", "--out", str(tmp_path / "o")])
    assert isinstance(result.exception, UserError)
    assert "unknown planner 'expret'" in str(result.exception)
    assert "expert" in str(result.exception) and "const-vel" in str(result.exception)


def test_bench_sim_unknown_family_lists_valid_ones(app):
    result = runner.invoke(app, ["bench", "sim", "--family", "nope", "--steps", "1"])
    assert isinstance(result.exception, UserError)
    assert "unknown family 'nope'" in str(result.exception)
    assert "cut_in" in str(result.exception)


def test_sim_run_end_to_end_on_highway_env(app, tmp_path):
    """`sim run` on the real simulator: one short episode, results, report, animation, resume."""
    suite = tmp_path / "tiny.yaml"
    suite.write_text(
        "name: tiny\nduration_s: 2.0\nepisodes:\n  - {family: hard_braking_lead, seeds: [4]}\n"
    )
    out = tmp_path / "run"
    args = ["sim", "run", "--planner", "idm", "--suite", str(suite), "--out", str(out)]
    result = runner.invoke(app, [*args, "--animations", "1", "--actuation-delay-s", "0.1"])
    assert result.exit_code == 0, result.output
    assert "actuation_delay_s: 0.1" in (out / "config.yaml").read_text()
    assert "route_completion" in result.output and "report.html" in result.output
    rows = [json.loads(line) for line in (out / EPISODES_FILE).read_text().splitlines()]
    assert [r["key"] for r in rows] == ["hard_braking_lead:4"] and rows[0]["status"] == "ok"
    assert rows[0]["num_frames"] >= 20  # 2 s at 10 Hz (+ the first frame)
    assert (out / "animations" / "hard_braking_lead__4.gif").is_file()
    # A rerun resumes (nothing left to do); another planner or delay is refused with the fix.
    args.extend(["--actuation-delay-s", "0.1"])
    assert runner.invoke(app, args).exit_code == 0
    assert len((out / EPISODES_FILE).read_text().splitlines()) == 1
    refused = runner.invoke(app, [*args[:2], "--planner", "const-vel", *args[4:]])
    assert isinstance(refused.exception, UserError)
    assert "planner 'idm' there vs 'const-vel' now" in str(refused.exception)
    refused = runner.invoke(app, args[:-2])
    assert "sim config differs" in str(refused.exception)


def test_bench_sim_measures_steps_and_writes_json(tmp_path):
    from sim_eval.bench import bench_family, bench_sim

    try:
        from tests.sim_eval import fake_sim
    except ImportError:
        import fake_sim

    row = bench_family(fake_sim.FakeSimulator(), fake_sim.CarefulPlanner(), "cruise", 50, 4.0)
    assert row["steps"] == 50 and row["episodes"] == 2  # 40 steps per 4 s episode
    assert 0 < row["step_ms_median"] <= row["step_ms_p99"] and row["steps_per_s"] > 0
    out = tmp_path / "bench.json"
    result = bench_sim(["cut_in"], 5, "const-vel", out=out, simulator=fake_sim.FakeSimulator())
    written = json.loads(out.read_text())
    assert written["families"][0]["family"] == "cut_in" and written["torch_threads"] == 1
    assert written["mean_steps_per_s"] == pytest.approx(result["mean_steps_per_s"])
