"""Scenario suites: loading, seed specs, disjoint training seeds, errors that list valid names."""

from __future__ import annotations

import pytest

from sim_eval.scenarios import (
    ScenarioError,
    family_defaults,
    list_families,
    list_suites,
    load_suite,
    parse_seeds,
)

URBAN = ("roundabout", "unprotected_intersection", "signalised_intersection", "pedestrian_crossing")
HIGHWAY = (
    "dense_highway",
    "on_ramp_merge",
    "lane_drop",
    "construction_cones",
    "cut_in",
    "hard_braking_lead",
    "slow_vehicle_overtake",
)


def test_suites_and_families_are_listed():
    assert {"smoke", "regression", "train"} <= set(list_suites())
    assert "families" not in list_suites()  # the defaults file is not a suite
    assert set(HIGHWAY) <= set(list_families())


def test_smoke_is_small_and_regression_covers_every_family():
    smoke = load_suite("smoke")
    assert 1 <= len(smoke) <= 8
    assert {"dense_highway", "cut_in", "hard_braking_lead"} <= {s.family for s in smoke}
    regression = load_suite("regression")
    assert len(regression) >= 200
    assert {s.family for s in regression} >= set(HIGHWAY) | set(URBAN)
    assert len({s.key for s in regression}) == len(regression)
    assert all(0 < s.duration_s <= 20.0 for s in regression)


def test_train_seeds_are_disjoint_from_every_evaluation_suite():
    train = {s.seed for s in load_suite("train")}
    for name in list_suites():
        if name == "train":
            continue
        assert not train & {s.seed for s in load_suite(name)}, name


def test_rerun_on_other_seeds():
    specs = load_suite("smoke", seeds="100-107")
    families = {s.family for s in load_suite("smoke")}
    assert {s.seed for s in specs} == set(range(100, 108))
    assert len(specs) == 8 * len(families)
    assert [s.seed for s in load_suite("smoke", seeds=[5])] == [5] * len(families)


def test_parse_seeds():
    assert parse_seeds("1,4,10-12") == [1, 4, 10, 11, 12]
    assert parse_seeds(7) == [7]
    assert parse_seeds([3, "5-6"]) == [3, 5, 6]
    for bad in ("a-b", "5-3", "1,1", "", [1.5]):
        with pytest.raises(ScenarioError):
            parse_seeds(bad)


def test_unknown_suite_and_family_list_the_valid_names(tmp_path):
    with pytest.raises(ScenarioError, match="valid suites: .*regression.*smoke"):
        load_suite("smok")
    (tmp_path / "mine.yaml").write_text("episodes:\n  - {family: cut_inn, seeds: [1]}\n")
    with pytest.raises(
        ScenarioError, match="did you mean 'cut_in'.*valid families: .*dense_highway"
    ):
        load_suite("mine", suites_dir=tmp_path)
    (tmp_path / "params.yaml").write_text(
        "episodes:\n  - {family: cut_in, seeds: [1], params: {cut_gap: 3}}\n"
    )
    with pytest.raises(ScenarioError, match="unknown parameter 'cut_gap'.*cut_gap_m"):
        load_suite("params", suites_dir=tmp_path)
    (tmp_path / "dup.yaml").write_text(
        "episodes:\n  - {family: cut_in, seeds: '1-3'}\n  - {family: cut_in, seeds: [3]}\n"
    )
    with pytest.raises(ScenarioError, match="appears twice"):
        load_suite("dup", suites_dir=tmp_path)


def test_suite_params_override_family_defaults(tmp_path):
    (tmp_path / "one.yaml").write_text(
        "duration_s: 12\nepisodes:\n"
        "  - {family: construction_cones, seeds: [4], params: {kind: cones}, label: cones}\n"
    )
    (spec,) = load_suite("one", suites_dir=tmp_path)
    assert spec.params["kind"] == "cones"
    assert (
        spec.params["encroachment_m"] == family_defaults()["construction_cones"]["encroachment_m"]
    )
    assert spec.duration_s == 12.0 and spec.name == "cones/seed=4"
    path_spec = load_suite(tmp_path / "one.yaml")  # a path works as well as a name
    assert path_spec == [spec]
