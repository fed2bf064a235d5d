"""Data collection: shards and card of a tiny collection, resume, refusal, perturbations.

The fast tests drive the toy straight-road simulator (tests/sim_eval/fake_sim.py) with a toy
privileged planner; one slow test runs the real highway-env simulator and expert."""

from __future__ import annotations

import json

import numpy as np
import pytest

from planner.data import shards
from planner.data.dataset import KEY, CocDataset
from planner.errors import UserError
from planner.types import MAX_ABS_CURVATURE_PER_M, PlannerOutput, Trajectory
from sim_eval import collect as C

try:  # tests/ may or may not be a package
    from tests.sim_eval import fake_sim
except ImportError:
    import fake_sim

PLAN_CALLS = {"n": 0}


class CountingPlanner(fake_sim.CarefulPlanner):
    def plan_with_scene(self, inp, scene):
        PLAN_CALLS["n"] += 1
        return super().plan_with_scene(inp, scene)


def make_counting_planner():
    return CountingPlanner()


def tiny_config(*overrides: str) -> C.CollectConfig:
    return C.load_collect_config(
        None,
        [
            "stride_steps=5",
            "min_future_s=1.0",
            # one small camera: the rig has its own tests, here only the plumbing counts
            "sensors.cameras=[{name: front, width_px: 32, height_px: 16, fov_deg: 90.0}]",
            "sensors.supersample=1",
            "perturbation.start_rate_per_s=4.0",  # perturb often: the test must see it
            "perturbation.start_after_s=0.3",
            "perturbation.cooldown_s=0.5",
            "perturbation.duration_s=[0.3, 0.5]",
            "perturbation.lateral_probability=1.0",
            *overrides,
        ],
    )


def run(out, cfg=None, seeds=(1,), planner=make_counting_planner):
    return C.collect(
        cfg or tiny_config(),
        out,
        workers=1,
        simulator_factory=fake_sim.make_fake_simulator,
        planner_factory=planner,
        specs=fake_sim.fake_suite(seeds, duration_s=3.0),
    )


def test_tiny_collection_card_matches_shards(tmp_path):
    res = run(tmp_path, cfg=tiny_config("perturbation.enabled=false"), seeds=(1, 2))
    card = res.card
    assert card["episodes"] == 4 and card["episodes_failed"] == 0
    index = shards.load_index(tmp_path)
    assert len(index["shards"]) == 4
    read = {}
    for entry in index["shards"]:
        recs = list(shards.read_shard(tmp_path / entry["path"]))
        assert len(recs) == entry["n_samples"] > 0
        assert {r.meta["split"] for r in recs} == {entry["split"]}
        read[entry["episode"]] = recs
    samples = [r for recs in read.values() for r in recs]
    assert card["samples"] == len(samples)
    lon = {}
    for r in samples:
        d = r.label["decision"]["longitudinal"]
        lon[d] = lon.get(d, 0) + 1
    assert {k: v for k, v in card["decisions"]["longitudinal"].items() if v} == lon
    # 3 s episodes, 1 s of future needed, a sample every 0.5 s: steps 0, 5, ..., 20
    assert {r.meta["step"] for r in read["cruise:1"]} == set(range(0, 21, 5))
    assert card["disk_bytes"] == sum(e["bytes"] for e in index["shards"])
    assert "| samples |" in (tmp_path / shards.CARD_MD).read_text()
    # a 3 s episode knows 1-3 s of every sample's future; the rest is masked
    rec = read["slow_lead:1"][0]
    assert rec.meta["future_source"] == "executed"
    assert 10 <= int(rec.arrays["future_valid"].sum()) < 64
    # the controls reproduce the stored future where it is valid
    valid = rec.arrays["future_valid"]
    sample = rec.to_sample()
    traj = Trajectory.from_controls(
        sample.controls[:, 0], sample.controls[:, 1], sample.scene.ego.speed
    )
    err = np.hypot(*(traj.xy - sample.future_xy_ego())[valid].T)
    assert err.max() < 0.1
    # splits partition the episodes
    keys = {}
    for split in shards.SPLITS:
        ds = CocDataset(tmp_path, split)
        keys[split] = {ds[i][KEY].rsplit("-", 1)[0] for i in range(len(ds))}
    assert not (keys["train"] & keys["val"]) and not (keys["train"] & keys["test"])


def test_perturbed_steps_keep_the_clean_label(tmp_path):
    res = run(tmp_path)
    assert res.card["perturbed_step_fraction"] > 0.1
    perturbed = 0
    for entry in shards.load_index(tmp_path)["shards"]:
        for rec in shards.read_shard(tmp_path / entry["path"]):
            plan = rec.arrays["expert_plan"]
            # the label is the planner's own plan: straight ahead, whatever was executed
            np.testing.assert_allclose(plan[:, 5], 0.0, atol=1e-7)
            if rec.meta["perturbed"]:
                perturbed += 1
                assert rec.meta["future_source"] == "expert_plan"
                assert rec.meta["perturbation_kind"] == "lateral"
    assert perturbed > 0
    # the executed path did leave the lane centre (y = 0): noise reached the simulator
    ego_y = [
        abs(rec.arrays["ego_state"][2])
        for e in shards.load_index(tmp_path)["shards"]
        for rec in shards.read_shard(tmp_path / e["path"])
    ]
    assert max(ego_y) > 0.05


def test_interrupted_collection_finishes_only_missing_episodes(tmp_path):
    run(tmp_path)
    results = tmp_path / C.EPISODES_FILE
    lines = results.read_text().splitlines()
    assert len(lines) == 2
    dropped = json.loads(lines[-1])
    # an interruption after two episodes: the last record never appended, its shard gone
    results.write_text("\n".join(lines[:-1]) + "\n")
    (tmp_path / dropped["shard"]).unlink()
    kept = json.loads(lines[0])
    mtime = (tmp_path / kept["shard"]).stat().st_mtime_ns
    PLAN_CALLS["n"] = 0
    res = run(tmp_path)
    assert 0 < PLAN_CALLS["n"] <= 31  # one 3 s episode planned again, not both
    assert (tmp_path / kept["shard"]).stat().st_mtime_ns == mtime
    assert (tmp_path / dropped["shard"]).is_file()
    assert res.card["episodes"] == 2
    # a record whose shard was deleted since is redone as well
    (tmp_path / kept["shard"]).unlink()
    PLAN_CALLS["n"] = 0
    run(tmp_path)
    assert 0 < PLAN_CALLS["n"] <= 31 and (tmp_path / kept["shard"]).is_file()


def test_other_config_into_same_folder_is_refused(tmp_path):
    C.check_manifest(tmp_path, {"config_digest": "a", "family_params": {}})  # empty folder
    (tmp_path / C.MANIFEST_FILE).write_text(json.dumps({"config_digest": "a", "suite": "x"}))
    with pytest.raises(UserError, match="config_digest.*new --out"):
        run(tmp_path, cfg=tiny_config("stride_steps=2"))


def test_perturber_executes_a_biased_feasible_plan():
    cfg = C.PerturbationConfig(start_rate_per_s=3.0, start_after_s=0.0, cooldown_s=0.3)
    p = C.Perturber(cfg, "toy", 3)
    started = [p.step(t * 0.1, 10.0) for t in range(40)]
    assert any(started) and not all(started)
    p.kind, p.bias = "lateral", 1.5
    plan = Trajectory.from_controls(np.zeros(64), np.zeros(64), 10.0)
    executed = p.apply(plan, 10.0)
    np.testing.assert_allclose(executed.curvature[:5], 1.5 / 10.0**2, rtol=1e-6)
    assert np.abs(executed.curvature).max() <= MAX_ABS_CURVATURE_PER_M
    assert executed.xy[-1, 1] * np.sign(p.bias) > 1.0  # it bends toward the bias side
    p.kind, p.bias = "longitudinal", -2.0
    slower = p.apply(plan, 10.0)
    assert slower.speed[9] == pytest.approx(8.0) and slower.speed.min() >= 0.0


class DriftingLearner(fake_sim.ConstantSpeedPlanner):
    """A learner that speeds up and drifts left; records what it was shown."""

    name = "fake-drifting"
    seen: list = []
    times: list = []

    def plan(self, inp):
        DriftingLearner.seen.append(None if inp.cameras is None else inp.cameras.shape)
        DriftingLearner.times.append(round(inp.timestamp / 0.1))
        traj = Trajectory.from_controls(np.full(64, 2.0), np.full(64, 0.01), inp.ego_speed)
        return PlannerOutput(trajectory=traj)


def test_learner_drives_and_the_expert_labels_its_states(tmp_path, monkeypatch):
    """DAgger collection: the learner's plans are executed for intervals (the ego really
    speeds up and drifts), every sample whose future holds learner steps is labelled with the
    expert's plan from that state, and the learner sees the rig's cameras."""
    DriftingLearner.seen, DriftingLearner.times = [], []
    cfg = tiny_config(
        "perturbation.enabled=false",
        "learner.planner=fake-drifting",
        "learner.start_rate_per_s=5.0",
        "learner.start_after_s=0.2",
        "learner.cooldown_s=0.3",
        "learner.duration_s=[0.5, 1.0]",
    )
    rendered = []
    render_frame = C.SensorRig.render_frame

    def counting_render_frame(rig, scene):
        rendered.append((scene.metadata["family"], round(scene.timestamp / 0.1)))
        return render_frame(rig, scene)

    monkeypatch.setattr(C.SensorRig, "render_frame", counting_render_frame)
    res = C.collect(
        cfg,
        tmp_path,
        simulator_factory=fake_sim.make_fake_simulator,
        planner_factory=make_counting_planner,
        learner_factory=DriftingLearner,
        specs=fake_sim.fake_suite((1,), duration_s=3.0),
    )
    # each step's frame is rendered once, for the learner and the samples alike
    assert len(rendered) == len(set(rendered)), rendered
    assert 0.2 < res.card["learner_step_fraction"] < 0.9
    assert sum(r["learner_steps"] for r in res.records) == len(DriftingLearner.seen)
    assert set(DriftingLearner.seen) == {(1, 2, 16, 32, 3)}  # 1 camera x 2 frames, 16 x 32
    # every interval drives its whole drawn length, 0.5-1.0 s = 5-10 steps, from its first
    # step on (the last one may be cut by the episode's end)
    runs, steps = [], DriftingLearner.times
    for k, t in enumerate(steps):
        if k == 0 or t != steps[k - 1] + 1:
            runs.append(0)
        runs[-1] += 1
    assert len(runs) >= 2 and all(5 <= n <= 10 for n in runs[:-1]), runs
    recs = [
        r
        for e in shards.load_index(tmp_path)["shards"]
        for r in shards.read_shard(tmp_path / e["path"])
    ]
    by_learner = [r for r in recs if r.meta["perturbation_kind"] == "learner"]
    assert by_learner and all(r.meta["future_source"] == "expert_plan" for r in by_learner)
    for r in recs:  # the labels stay the expert's straight lane keeping
        np.testing.assert_allclose(r.arrays["expert_plan"][:, 5], 0.0, atol=1e-7)
    # the learner's plans reached the simulator: the ego left the lane centre
    assert max(abs(r.arrays["ego_state"][2]) for r in recs) > 0.05
    # enabling a learner is part of what makes two collections mixable
    plain = C.build_manifest(tiny_config("perturbation.enabled=false"), [])
    assert plain["config_digest"] != C.build_manifest(cfg, [])["config_digest"]
    with pytest.raises(ValueError, match="learner.planner='expert'"):
        tiny_config("learner.planner=expert")


@pytest.mark.slow
def test_highway_expert_episode(tmp_path):
    """The real simulator and expert: one short cut-in episode, labels from planner.coc."""
    from sim_eval.scenarios import load_suite

    spec = [s for s in load_suite("train") if s.family == "cut_in"][0]
    spec = type(spec)(spec.name, spec.family, spec.seed, 6.0, spec.params)
    cfg = C.load_collect_config(None, ["stride_steps=5", "min_future_s=2.0"])
    res = C.collect(cfg, tmp_path, specs=[spec])
    assert res.card["episodes"] == 1 and res.card["samples"] > 0
    rec = next(shards.read_shard(tmp_path / res.records[0]["shard"]))
    assert rec.cameras.shape[:2] == (3, 2) and rec.label["text"]
    assert rec.meta["family"] == "cut_in" and rec.info["cameras"]["source"] == "rendered"


def test_a_dataset_grows_without_redoing_episodes(tmp_path):
    run(tmp_path, seeds=(1,))
    first = json.loads((tmp_path / C.EPISODES_FILE).read_text().splitlines()[0])
    mtime = (tmp_path / first["shard"]).stat().st_mtime_ns
    PLAN_CALLS["n"] = 0
    res = run(tmp_path, seeds=(1, 2))  # more seeds, same settings: only the new ones run
    assert 0 < PLAN_CALLS["n"] <= 62 and res.card["episodes"] == 4
    assert (tmp_path / first["shard"]).stat().st_mtime_ns == mtime
    assert len(shards.load_index(tmp_path)["shards"]) == 4


def test_collecting_episodes_of_an_evaluation_suite_is_refused():
    """Training data on a (family, seed) that an evaluation suite scores leaks its test set."""
    assert C.select_episodes(C.load_collect_config(None, ["episodes_per_family=1"]))
    with pytest.raises(UserError, match=r"evaluation suite\(s\) 'smoke' .*Pass --seeds"):
        C.select_episodes(C.load_collect_config(None, ["suite=smoke"]))
    # the DAgger focus suite runs on regression seeds unless collected on train seeds
    with pytest.raises(UserError, match="'dagger_focus', 'regression'"):
        C.select_episodes(C.load_collect_config(None, ["suite=dagger_focus"]))
    focus = C.load_collect_config(None, ["suite=dagger_focus", "seeds=[100072]"])
    assert {s.seed for s in C.select_episodes(focus)} == {100072}
    # on purpose (e.g. logs for open-loop evaluation only); the flag does not change the
    # manifest, so such a folder's settings stay comparable with a train collection's
    smoke = C.load_collect_config(None, ["suite=smoke", "allow_evaluation_seeds=true"])
    specs = C.select_episodes(smoke)
    assert len(specs) == 8
    plain = C.load_collect_config(None, ["suite=smoke"])
    digest = C.build_manifest(plain, specs)["config_digest"]
    assert C.build_manifest(smoke, specs)["config_digest"] == digest
