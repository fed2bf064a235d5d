"""Run statistics: intervals against known values, aggregation, paired comparison."""

from __future__ import annotations

import json
import math

import pytest

from sim_eval.metrics import failed_episode_record
from sim_eval.stats import (
    ERROR_METRIC,
    CompareError,
    MetricSpec,
    StatsConfig,
    aggregate,
    mean_interval,
    paired_compare,
    poisson_rate_interval,
    wilson_interval,
)

SPECS = (
    MetricSpec("collision", "binary", "higher"),
    MetricSpec("comfortable", "binary", "lower"),
    MetricSpec("num_at_fault_collisions", "count", "higher"),
    MetricSpec("route_completion", "continuous", "lower"),
    MetricSpec("min_gap_m", "continuous", "lower"),
    MetricSpec("distance_m", "continuous", "none"),
)


def row(i: int, family: str = "cut_in", collision: bool = False, completion: float = 1.0, **kw):
    out = {
        "key": f"{family}:{i}",
        "family": family,
        "seed": i,
        "status": "ok",
        "collision": collision,
        "comfortable": True,
        "num_at_fault_collisions": int(collision),
        "route_completion": completion,
        "min_gap_m": 2.0 + 0.01 * i,
        "distance_m": 500.0,
    }
    out.update(kw)
    return out


# ---- intervals ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "k,n,lo,hi",
    [
        (5, 10, 0.236593, 0.763407),  # textbook values (z = 1.96)
        (0, 10, 0.0, 0.277533),
        (10, 10, 0.722467, 1.0),
        (1, 100, 0.001767, 0.054486),
        (81, 263, 0.255289, 0.366210),  # Newcombe (1998), method 3: 0.2553-0.3662
    ],
)
def test_wilson_interval_known_values(k, n, lo, hi):
    got = wilson_interval(k, n, 1.959963984540054)
    assert got == pytest.approx((lo, hi), abs=1e-5)


def test_wilson_interval_edge_cases():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="k <= n"):
        wilson_interval(3, 2)
    narrow, wide = wilson_interval(5, 10, 1.0), wilson_interval(5, 10, 2.576)
    assert wide[0] < narrow[0] and wide[1] > narrow[1]


def test_poisson_and_mean_intervals():
    # zero events in 1 km: the exact 95 % upper bound is 3.689 per km
    assert poisson_rate_interval(0, 1.0, 0.95) == pytest.approx((0.0, 3.688879), abs=1e-5)
    lo, hi = poisson_rate_interval(10, 2.0, 0.95)
    assert lo < 5.0 < hi
    cfg = StatsConfig()
    lo, hi = mean_interval([1.0, 2.0, 3.0, 4.0], cfg)
    # t(0.975, 3) = 3.182, s = 1.291, n = 4 -> half width 2.054
    assert (lo, hi) == pytest.approx((2.5 - 2.0540, 2.5 + 2.0540), abs=1e-3)
    boot = mean_interval([1.0, 2.0, 3.0, 4.0], StatsConfig(continuous_interval="bootstrap"))
    assert boot[0] < 2.5 < boot[1]


# ---- aggregate ----------------------------------------------------------------------------------
def test_aggregate_rates_per_km_means_families_and_errors():
    rows = [row(i, collision=i < 2) for i in range(10)]
    rows += [row(i, family="merge", completion=0.5) for i in range(4)]
    rows.append(failed_episode_record("merge/seed=9", "merge", 9, "simulator crashed"))
    summary = aggregate(rows, SPECS)
    json.dumps(summary, allow_nan=False)
    assert summary["n_episodes"] == 15 and summary["n_ok"] == 14 and summary["n_error"] == 1
    assert summary["error_keys"] == ["merge:9"]
    coll = summary["rates"]["collision"]
    assert (coll["k"], coll["n"]) == (2, 14)
    assert (coll["ci_low"], coll["ci_high"]) == pytest.approx(wilson_interval(2, 14))
    assert summary["rates"][ERROR_METRIC]["k"] == 1
    per_km = summary["per_km"]["num_at_fault_collisions"]
    assert per_km["km"] == pytest.approx(7.0)
    assert per_km["rate_per_km"] == pytest.approx(2 / 7.0)
    assert summary["means"]["route_completion"]["mean"] == pytest.approx((10 + 2) / 14)
    fam = summary["by_family"]
    assert set(fam) == {"cut_in", "merge"}
    assert fam["merge"]["means"]["route_completion"]["mean"] == pytest.approx(0.5)
    assert fam["merge"]["n_error"] == 1 and fam["cut_in"]["rates"]["collision"]["k"] == 2


def test_aggregate_skips_undefined_values():
    rows = [row(i) for i in range(3)]
    rows[0]["min_gap_m"] = None  # no agent in path in that episode
    out = aggregate(rows, SPECS)
    assert out["means"]["min_gap_m"]["n"] == 2


# ---- paired comparison ----------------------------------------------------------------------------
def test_paired_compare_flags_clear_regression():
    a = [row(i) for i in range(40)]
    b = [row(i, collision=i % 2 == 0, completion=0.6 if i % 2 == 0 else 1.0) for i in range(40)]
    res = paired_compare(a, b, specs=SPECS)
    assert "collision" in res["regressions"]
    assert "route_completion" in res["regressions"]
    assert "num_at_fault_collisions" in res["regressions"]
    c = res["metrics"]["collision"]
    assert (c["only_a"], c["only_b"]) == (0, 20)
    assert c["p_value"] == pytest.approx(2 * 0.5**20)
    assert c["b_worse"] and c["significant"]
    assert res["improvements"] == []
    # the same difference the other way round is an improvement, not a regression
    rev = paired_compare(b, a, specs=SPECS)
    assert rev["regressions"] == [] and "collision" in rev["improvements"]


def test_paired_compare_identical_runs_no_regression():
    a = [row(i, collision=i % 3 == 0, completion=0.5 + 0.01 * i) for i in range(30)]
    b = [dict(r) for r in reversed(a)]  # order does not matter, keys pair them
    res = paired_compare(a, b, specs=SPECS)
    assert res["regressions"] == [] and res["improvements"] == []
    assert all(m["p_value"] == 1.0 for m in res["metrics"].values())
    assert res["n_pairs"] == 30


def test_paired_compare_small_noise_is_not_a_regression():
    a = [row(i, collision=i == 3) for i in range(30)]
    b = [row(i, collision=i == 5) for i in range(30)]
    assert paired_compare(a, b, specs=SPECS)["regressions"] == []


def test_paired_compare_higher_is_better_direction():
    a = [row(i) for i in range(30)]
    b = [row(i, comfortable=i >= 15) for i in range(30)]  # B loses comfort on 15 episodes
    res = paired_compare(a, b, specs=SPECS, cfg=StatsConfig(multiple_comparison="none"))
    assert "comfortable" in res["regressions"]


def test_paired_compare_mismatched_keys_error():
    a = [row(i) for i in range(10)]
    b = [row(i) for i in range(1, 11)]
    with pytest.raises(CompareError, match="not on the same episodes") as err:
        paired_compare(a, b, specs=SPECS)
    assert "cut_in:0" in str(err.value) and "cut_in:10" in str(err.value)
    with pytest.raises(CompareError, match="more than once"):
        paired_compare(a + [row(0)], a + [row(0)], specs=SPECS)
    with pytest.raises(CompareError, match="no 'key'"):
        paired_compare([{"family": "x"}], a, specs=SPECS)


def test_paired_compare_failed_episodes_counted_not_paired():
    a = [row(i) for i in range(30)]
    b = [row(i) for i in range(30)]
    for i in range(14):
        b[i] = failed_episode_record(f"cut_in/seed={i}", "cut_in", i, "planner raised")
    res = paired_compare(a, b, specs=SPECS)
    assert res["n_pairs_ok"] == 16 and len(res["errors_b"]) == 14 and res["errors_a"] == []
    assert ERROR_METRIC in res["regressions"]
    assert res["metrics"]["collision"]["n"] == 16
    assert not math.isnan(res["metrics"]["route_completion"]["p_value"])
