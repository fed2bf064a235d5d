"""Statistics over episode results: rates with Wilson intervals, per-km rates, means with
intervals, per-family breakdowns, and a paired comparison of two runs on the same seeds.

Input rows are the flat dicts of `sim_eval.metrics.evaluate_episode` (plus rows of failed
episodes with `"status": "error"`, see `metrics.failed_episode_record`). Each metric is
described by a `MetricSpec`; the default list is `sim_eval.metrics.METRIC_SPECS`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

MetricKind = Literal["binary", "count", "continuous"]
Worse = Literal["higher", "lower", "none"]

STATUS_OK = "ok"
STATUS_ERROR = "error"
ERROR_METRIC = "episode_error"  # synthetic binary metric: the episode failed to run


@dataclass(frozen=True)
class MetricSpec:
    """One per-episode metric: its key, kind, and which direction is a regression."""

    name: str
    kind: MetricKind  # binary (rate per episode), count (per km), continuous (mean)
    worse: Worse = "higher"


@dataclass
class StatsConfig:
    z: float = 1.959963984540054  # two-sided 95 % normal quantile (Wilson intervals)
    confidence: float = 0.95  # t / bootstrap / Poisson intervals
    continuous_interval: Literal["t", "bootstrap"] = "t"
    bootstrap_resamples: int = 2000
    bootstrap_seed: int = 0
    alpha: float = 0.05  # significance level of paired_compare
    # Holm-Bonferroni over the metrics tested keeps the run-level false-alarm rate at alpha.
    multiple_comparison: Literal["holm", "none"] = "holm"
    key_field: str = "key"
    family_field: str = "family"
    distance_field: str = "distance_m"


class CompareError(ValueError):
    """Two runs cannot be paired (different seeds/keys, duplicates, missing keys)."""


# ---- intervals ----------------------------------------------------------------------------
def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k/n (no continuity correction), via
    scipy's `BinomTestResult.proportion_ci`; n == 0 gives (0, 1): no information."""
    from scipy.stats import binomtest

    if n < 0 or k < 0 or k > n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n, got k={k}, n={n}")
    if z <= 0:
        raise ValueError(f"wilson_interval needs z > 0, got {z}")
    if n == 0:
        return (0.0, 1.0)
    level = math.erf(z / math.sqrt(2.0))  # two-sided coverage of +-z
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return (float(ci.low), float(ci.high))


def poisson_rate_interval(count: int, exposure: float, confidence: float) -> tuple[float, float]:
    """Exact (Garwood) interval of a Poisson rate count / exposure."""
    from scipy.stats import chi2

    if exposure <= 0:
        return (0.0, math.inf)
    a = 1.0 - confidence
    lo = 0.0 if count == 0 else chi2.ppf(a / 2, 2 * count) / 2
    hi = chi2.ppf(1 - a / 2, 2 * count + 2) / 2
    return (float(lo / exposure), float(hi / exposure))


def mean_interval(values: np.ndarray, cfg: StatsConfig) -> tuple[float, float]:
    """Interval of the mean: Student t, or a percentile bootstrap (scipy) with a fixed seed."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n == 0:
        return (math.nan, math.nan)
    m = float(x.mean())
    if n == 1 or np.all(x == x[0]):
        return (m, m)
    if cfg.continuous_interval == "bootstrap":
        res = stats.bootstrap(
            (x,),
            np.mean,
            confidence_level=cfg.confidence,
            n_resamples=cfg.bootstrap_resamples,
            method="percentile",
            random_state=np.random.default_rng(cfg.bootstrap_seed),
        )
        return (float(res.confidence_interval.low), float(res.confidence_interval.high))
    half = stats.t.ppf(0.5 + cfg.confidence / 2, n - 1) * x.std(ddof=1) / math.sqrt(n)
    return (m - float(half), m + float(half))


# ---- aggregation ----------------------------------------------------------------------------------
def _is_ok(row: dict[str, Any]) -> bool:
    return row.get("status", STATUS_OK) == STATUS_OK


def _values(rows: list[dict[str, Any]], name: str) -> list[Any]:
    """Non-missing values of a metric (None = undefined for that episode)."""
    return [r[name] for r in rows if r.get(name) is not None]


def _default_specs() -> tuple[MetricSpec, ...]:
    from sim_eval.metrics import METRIC_SPECS

    return METRIC_SPECS


def _summarise(rows: list[dict[str, Any]], specs: Sequence[MetricSpec], cfg: StatsConfig) -> dict:
    ok = [r for r in rows if _is_ok(r)]
    errors = [r for r in rows if not _is_ok(r)]
    km = sum(float(r.get(cfg.distance_field) or 0.0) for r in ok) / 1000.0
    out: dict[str, Any] = {
        "n_episodes": len(rows),
        "n_ok": len(ok),
        "n_error": len(errors),
        "error_keys": [r.get(cfg.key_field) for r in errors],
        "total_distance_km": km,
        "rates": {},
        "per_km": {},
        "means": {},
    }
    lo, hi = wilson_interval(len(errors), len(rows), cfg.z)
    out["rates"][ERROR_METRIC] = {
        "k": len(errors),
        "n": len(rows),
        "rate": len(errors) / len(rows) if rows else None,
        "ci_low": lo,
        "ci_high": hi,
    }
    for spec in specs:
        vals = _values(ok, spec.name)
        if spec.kind == "binary":
            k, n = sum(bool(v) for v in vals), len(vals)
            lo, hi = wilson_interval(k, n, cfg.z)
            out["rates"][spec.name] = {
                "k": k,
                "n": n,
                "rate": k / n if n else None,
                "ci_low": lo,
                "ci_high": hi,
            }
        elif spec.kind == "count":
            count = int(sum(vals))
            lo, hi = poisson_rate_interval(count, km, cfg.confidence)
            out["per_km"][spec.name] = {
                "count": count,
                "km": km,
                "rate_per_km": count / km if km > 0 else None,
                "ci_low": lo,
                "ci_high": hi if math.isfinite(hi) else None,
            }
        if spec.kind in ("continuous", "count"):
            x = np.asarray(vals, dtype=np.float64)
            lo, hi = mean_interval(x, cfg)
            out["means"][spec.name] = {
                "n": int(len(x)),
                "mean": float(x.mean()) if len(x) else None,
                "std": float(x.std(ddof=1)) if len(x) > 1 else None,
                "min": float(x.min()) if len(x) else None,
                "max": float(x.max()) if len(x) else None,
                "ci_low": lo if len(x) else None,
                "ci_high": hi if len(x) else None,
            }
    return out


def aggregate(
    records: list[dict[str, Any]],
    specs: Sequence[MetricSpec] | None = None,
    cfg: StatsConfig | None = None,
) -> dict[str, Any]:
    """Summary of a run: rates per episode (Wilson), per-km rates of counts (exact Poisson),
    means of continuous metrics (t or bootstrap), overall and per family. Failed episodes
    (status "error") are counted in `n_error` / the `episode_error` rate and excluded from
    every other metric."""
    cfg = cfg or StatsConfig()
    specs = tuple(specs) if specs is not None else _default_specs()
    summary = _summarise(records, specs, cfg)
    families = sorted({str(r.get(cfg.family_field, "")) for r in records})
    summary["by_family"] = {
        fam: _summarise([r for r in records if str(r.get(cfg.family_field, "")) == fam], specs, cfg)
        for fam in families
    }
    return summary


# ---- paired comparison -------------------------------------------------------------------------
def _index(rows: list[dict[str, Any]], key: str, run: str) -> dict[str, dict[str, Any]]:
    missing = [i for i, r in enumerate(rows) if key not in r]
    if missing:
        raise CompareError(
            f"run {run}: {len(missing)} result rows have no {key!r} field (first at row "
            f"{missing[0]}); were they written by `cocdrive sim run`?"
        )
    counts = Counter(str(r[key]) for r in rows)
    dup = sorted(k for k, c in counts.items() if c > 1)
    if dup:
        raise CompareError(
            f"run {run}: {len(dup)} keys occur more than once (e.g. {dup[:3]}); "
            "one result per episode is needed to pair runs"
        )
    return {str(r[key]): r for r in rows}


def _holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone)."""
    order = sorted(pvalues, key=pvalues.get)
    m = len(order)
    adjusted: dict[str, float] = {}
    running = 0.0
    for i, name in enumerate(order):
        running = max(running, min(1.0, (m - i) * pvalues[name]))
        adjusted[name] = running
    return adjusted


def _compare_binary(a: list[bool], b: list[bool], worse: Worse) -> dict[str, Any]:
    """Exact McNemar: binomial test on the discordant pairs."""
    from scipy.stats import binomtest

    a_arr, b_arr = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    only_b = int(np.sum(~a_arr & b_arr))  # 0 in A, 1 in B
    only_a = int(np.sum(a_arr & ~b_arr))
    n_disc = only_a + only_b
    p = float(binomtest(only_b, n_disc, 0.5).pvalue) if n_disc else 1.0
    worse_b = only_b > only_a if worse == "higher" else only_a > only_b
    better_b = only_b < only_a if worse == "higher" else only_a < only_b
    return {
        "test": "mcnemar_exact",
        "n": int(len(a_arr)),
        "a_rate": float(a_arr.mean()) if len(a_arr) else None,
        "b_rate": float(b_arr.mean()) if len(b_arr) else None,
        "only_a": only_a,
        "only_b": only_b,
        "p_value": p,
        "b_worse": bool(worse != "none" and worse_b),
        "b_better": bool(worse != "none" and better_b),
    }


def _compare_continuous(a: list[float], b: list[float], worse: Worse) -> dict[str, Any]:
    """Wilcoxon signed-rank on the paired differences B - A (zero differences dropped)."""
    from scipy.stats import rankdata, wilcoxon

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    d = y - x
    nz = d[d != 0]
    if len(nz) == 0:
        p = 1.0
        r_plus = r_minus = 0.0
    else:
        p = float(wilcoxon(nz).pvalue)
        ranks = rankdata(np.abs(nz))
        r_plus, r_minus = float(ranks[nz > 0].sum()), float(ranks[nz < 0].sum())
    up, down = r_plus > r_minus, r_minus > r_plus  # B tends higher / lower than A
    worse_b = up if worse == "higher" else down
    better_b = down if worse == "higher" else up
    return {
        "test": "wilcoxon_signed_rank",
        "n": int(len(d)),
        "a_mean": float(x.mean()) if len(x) else None,
        "b_mean": float(y.mean()) if len(y) else None,
        "mean_diff": float(d.mean()) if len(d) else None,
        "median_diff": float(np.median(d)) if len(d) else None,
        "n_nonzero": int(len(nz)),
        "p_value": p,
        "b_worse": bool(worse != "none" and worse_b),
        "b_better": bool(worse != "none" and better_b),
    }


def paired_compare(
    a: list[dict[str, Any]],
    b: list[dict[str, Any]],
    key: str | None = None,
    specs: Sequence[MetricSpec] | None = None,
    cfg: StatsConfig | None = None,
) -> dict[str, Any]:
    """Compare run B against baseline A episode by episode (same keys = same seeds).

    Binary metrics: exact McNemar; counts and continuous metrics: Wilcoxon signed-rank.
    A pair where either episode failed (status "error") is left out of every metric and
    counted in the synthetic binary metric `episode_error` (B failing where A ran is worse).
    `regressions` lists the metrics significantly worse in B at `cfg.alpha` (after the Holm
    correction unless `multiple_comparison: none`); `improvements` the significantly better."""
    cfg = cfg or StatsConfig()
    key = key or cfg.key_field
    specs = tuple(specs) if specs is not None else _default_specs()
    ia, ib = _index(a, key, "A"), _index(b, key, "B")
    only_a, only_b = sorted(set(ia) - set(ib)), sorted(set(ib) - set(ia))
    if only_a or only_b:
        raise CompareError(
            f"runs are not on the same episodes: {len(only_a)} keys only in A "
            f"(e.g. {only_a[:3]}), {len(only_b)} only in B (e.g. {only_b[:3]}); "
            "rerun both on the same suite and seeds"
        )
    if not ia:
        raise CompareError("both runs are empty: nothing to compare")
    keys = sorted(ia)
    ok_pairs = [k for k in keys if _is_ok(ia[k]) and _is_ok(ib[k])]
    metrics: dict[str, dict[str, Any]] = {}
    metrics[ERROR_METRIC] = _compare_binary(
        [not _is_ok(ia[k]) for k in keys], [not _is_ok(ib[k]) for k in keys], "higher"
    )
    for spec in specs:
        pairs = [
            (ia[k][spec.name], ib[k][spec.name])
            for k in ok_pairs
            if ia[k].get(spec.name) is not None and ib[k].get(spec.name) is not None
        ]
        if not pairs:
            continue
        va, vb = [p[0] for p in pairs], [p[1] for p in pairs]
        if spec.kind == "binary":
            metrics[spec.name] = _compare_binary(va, vb, spec.worse)
        else:
            metrics[spec.name] = _compare_continuous(va, vb, spec.worse)
        metrics[spec.name]["worse_direction"] = spec.worse
    tested = {n: m["p_value"] for n, m in metrics.items() if m.get("worse_direction") != "none"}
    adjusted = _holm(tested) if cfg.multiple_comparison == "holm" else dict(tested)
    for name, m in metrics.items():
        m["p_adjusted"] = adjusted.get(name, m["p_value"])
        m["significant"] = bool(name in tested and m["p_adjusted"] < cfg.alpha)
    regressions = [n for n, m in metrics.items() if m["significant"] and m["b_worse"]]
    improvements = [n for n, m in metrics.items() if m["significant"] and m["b_better"]]
    return {
        "key": key,
        "n_pairs": len(keys),
        "n_pairs_ok": len(ok_pairs),
        "errors_a": [k for k in keys if not _is_ok(ia[k])],
        "errors_b": [k for k in keys if not _is_ok(ib[k])],
        "alpha": cfg.alpha,
        "multiple_comparison": cfg.multiple_comparison,
        "metrics": metrics,
        "regressions": regressions,
        "improvements": improvements,
    }


__all__ = [
    "ERROR_METRIC",
    "CompareError",
    "MetricSpec",
    "StatsConfig",
    "aggregate",
    "mean_interval",
    "paired_compare",
    "poisson_rate_interval",
    "wilson_interval",
]
