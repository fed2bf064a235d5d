"""Scenario specs and suites (YAML files in configs/scenarios/)."""

from __future__ import annotations

import difflib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from planner.config import load_yaml
from planner.errors import UserError
from planner.paths import config_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScenarioSpec:
    """One episode to run: a family (what is built), a seed, and its parameters."""

    name: str  # unique within a suite, e.g. "cut_in/seed=1203"
    family: str  # e.g. "cut_in"
    seed: int
    duration_s: float = 20.0
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Stable id used as the resumable-results key."""
        return f"{self.family}:{self.seed}"


# ---- suites -------------------------------------------------------------------------------
SUITES_DIR = config_path("scenarios")
FAMILY_DEFAULTS_FILE = "families.yaml"  # per-family parameter defaults, not a suite
DEFAULT_DURATION_S = 20.0
MAX_DURATION_S = 20.0  # every episode fits in 20 s of simulated time


class ScenarioError(UserError):
    """A suite, family or seed specification is wrong; the message says how to fix it."""


def parse_seeds(seeds: int | str | list[int] | tuple[int, ...]) -> list[int]:
    """Seeds from an int, a list, or a range spec such as "100-107" or "1,4,10-12"
    (ranges are inclusive). Order is kept; duplicates are an error."""
    if isinstance(seeds, bool):
        raise ScenarioError(f"seeds must be integers or a range spec like '100-107', got {seeds!r}")
    if isinstance(seeds, int):
        out = [seeds]
    elif isinstance(seeds, str):
        out = []
        for part in seeds.replace(" ", "").split(","):
            if not part:
                continue
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if m is None:
                raise ScenarioError(
                    f"bad seed spec {seeds!r} (at {part!r}): use integers and inclusive ranges "
                    "like '100-107' or '1,4,10-12'"
                )
            lo = int(m.group(1))
            hi = int(m.group(2)) if m.group(2) is not None else lo
            if hi < lo:
                raise ScenarioError(f"bad seed range {part!r} in {seeds!r}: end before start")
            out.extend(range(lo, hi + 1))
    elif isinstance(seeds, (list, tuple)):
        out = []
        for s in seeds:
            if isinstance(s, bool) or not isinstance(s, int):
                out.extend(parse_seeds(s) if isinstance(s, str) else _bad_seed(s, seeds))
            else:
                out.append(s)
    else:
        _bad_seed(seeds, seeds)
    if not out:
        raise ScenarioError(f"seed spec {seeds!r} holds no seeds")
    dup = sorted({s for s in out if out.count(s) > 1})
    if dup:
        raise ScenarioError(f"seed spec {seeds!r} repeats seeds {dup[:10]}")
    if any(s < 0 for s in out):
        raise ScenarioError(f"seeds must be >= 0, got {min(out)} in {seeds!r}")
    return out


def _bad_seed(value: Any, spec: Any) -> list[int]:
    raise ScenarioError(
        f"bad seed {value!r} in {spec!r}: seeds are integers or range specs like '100-107'"
    )


def list_suites(suites_dir: Path | None = None) -> list[str]:
    """Names of the suites in configs/scenarios/ (file stems)."""
    d = Path(suites_dir) if suites_dir else SUITES_DIR
    if not d.is_dir():
        return []
    return sorted(p.stem for p in d.glob("*.yaml") if p.name != FAMILY_DEFAULTS_FILE)


def list_families() -> list[str]:
    """Names of every registered scenario family (highway and urban)."""
    from sim_eval.sim.families import load_families

    return sorted(load_families())


def family_defaults(suites_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """Per-family parameter defaults from families.yaml in `suites_dir`, else from
    configs/scenarios/ (they override the defaults written in the family's code; suite
    entries override them in turn)."""
    path = Path(suites_dir) / FAMILY_DEFAULTS_FILE if suites_dir else None
    if path is None or not path.is_file():  # a suite folder without its own: the project's
        path = SUITES_DIR / FAMILY_DEFAULTS_FILE
    if not path.is_file():
        return {}
    data = _read_yaml(path)
    families = set(list_families())
    out: dict[str, dict[str, Any]] = {}
    for name, params in data.items():
        if name not in families:
            raise ScenarioError(_unknown("family", name, families, f"in {path}"))
        if not isinstance(params, dict):
            raise ScenarioError(f"{path}: {name!r} must map parameter names to values")
        _check_params(name, params, str(path))
        out[name] = dict(params)
    return out


def load_suite(
    name: str | Path,
    seeds: int | str | list[int] | None = None,
    *,
    suites_dir: Path | None = None,
) -> list[ScenarioSpec]:
    """The episodes of a suite: a name from `list_suites()` or a path to a suite YAML.

    `seeds` re-runs the suite on other seeds: every family entry of the suite then runs on
    exactly these seeds (e.g. `load_suite("smoke", seeds="100-107")`)."""
    path = Path(name)
    d = Path(suites_dir) if suites_dir else SUITES_DIR
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        if str(name) not in list_suites(d):
            raise ScenarioError(_unknown("suite", str(name), list_suites(d), f"in {d}"))
        path = d / f"{name}.yaml"
    data = _read_yaml(path)
    suite_name = str(data.get("name", path.stem))
    unknown_top = sorted(set(data) - {"name", "description", "duration_s", "episodes"})
    if unknown_top:
        raise ScenarioError(
            f"{path}: unknown key(s) {unknown_top}; valid: name, description, duration_s, episodes"
        )
    entries = data.get("episodes")
    if not isinstance(entries, list) or not entries:
        raise ScenarioError(f"{path}: 'episodes' must be a non-empty list of family entries")
    families = set(list_families())
    defaults = family_defaults(d)
    duration = float(data.get("duration_s", DEFAULT_DURATION_S))
    override = parse_seeds(seeds) if seeds is not None else None
    specs: list[ScenarioSpec] = []
    seen: dict[str, str] = {}
    for i, entry in enumerate(entries):
        where = f"{path} episodes[{i}]"
        if not isinstance(entry, dict) or "family" not in entry:
            raise ScenarioError(f"{where}: each entry needs 'family' and 'seeds'")
        bad = sorted(set(entry) - {"family", "seeds", "params", "duration_s", "label"})
        if bad:
            raise ScenarioError(
                f"{where}: unknown key(s) {bad}; valid: family, seeds, params, duration_s, label"
            )
        family = str(entry["family"])
        if family not in families:
            raise ScenarioError(_unknown("family", family, families, where))
        params = dict(entry.get("params") or {})
        _check_params(family, params, where)
        merged = {**defaults.get(family, {}), **params}
        entry_seeds = override if override is not None else parse_seeds(entry.get("seeds", []))
        dur = float(entry.get("duration_s", duration))
        if not 0 < dur <= MAX_DURATION_S:
            raise ScenarioError(f"{where}: duration_s = {dur} must be in (0, {MAX_DURATION_S}]")
        label = str(entry.get("label", family))
        for seed in entry_seeds:
            spec = ScenarioSpec(
                name=f"{label}/seed={seed}",
                family=family,
                seed=int(seed),
                duration_s=dur,
                params=merged,
            )
            if spec.key in seen:
                raise ScenarioError(
                    f"{path}: episode {spec.key!r} appears twice ({seen[spec.key]} and "
                    f"{spec.name}); give entries of the same family disjoint seeds"
                )
            seen[spec.key] = spec.name
            specs.append(spec)
    log.debug("suite %s: %d episodes", suite_name, len(specs))
    return specs


def _check_params(family: str, params: dict[str, Any], where: str) -> None:
    from sim_eval.sim.families import get_family

    valid = get_family(family).defaults
    if not valid:
        return  # a family without declared defaults takes any params
    for key in params:
        if key not in valid:
            raise ScenarioError(
                f"{where}: unknown parameter {key!r} for family {family!r}; "
                f"{_close(key, list(valid))}valid: {', '.join(sorted(valid))}"
            )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{path} must hold a mapping at the top level")
    return data


def _close(name: str, valid: Any) -> str:
    match = difflib.get_close_matches(name, list(valid), n=1)
    return f"did you mean {match[0]!r}? " if match else ""


def _unknown(kind: str, name: str, valid: Any, where: str) -> str:
    plural = "families" if kind == "family" else f"{kind}s"
    return f"unknown scenario {kind} {name!r} ({where}); {_close(name, valid)}valid {plural}: " + (
        ", ".join(sorted(valid)) or "(none)"
    )
