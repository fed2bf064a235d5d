"""`eval ablate` on the fake simulator: variants on the same seeds, paired statistics, the
generated RESULTS section between its markers (the rest of the file untouched), resume."""

from __future__ import annotations

import json

import pytest

from planner.errors import UserError
from planner.io import JsonlResults, atomic_write_text
from sim_eval.ablate import (
    ABLATE_FILE,
    BEGIN_MARKER,
    END_MARKER,
    INDEX_FILE,
    machine_description,
    resolve_variants,
    results_markdown,
    run_ablation,
    update_results_section,
    variant,
)
from sim_eval.runner import EPISODES_FILE
from tests.planner.test_faithfulness import make_following_planner, make_ignoring_planner
from tests.sim_eval import fake_sim

SEEDS = (1, 2)
FACTORIES = {
    "expert": fake_sim.make_careful_planner,
    "const-vel": fake_sim.make_const_planner,
    "vla-full": make_following_planner,
    "vla-blind": make_ignoring_planner,
}
OVERRIDES = [
    "report.animations=0",
    "report.episode_logs=false",
    "reasoning.faithfulness_every_s=1.5",
    "cameras=none",  # the fake planners read no cameras: skip rendering
    "planner_options.num_threads=1",  # for the learned planner only
]


def _run(out, names=("expert", "const-vel", "vla-full", "vla-blind"), progress=None):
    return run_ablation(
        fake_sim.fake_suite(SEEDS, duration_s=2.0),
        out,
        [variant(n) for n in names],
        checkpoint="fake-checkpoint",
        suite_name="fake",
        overrides=OVERRIDES,
        planner_factories=FACTORIES,
        simulator_factory=fake_sim.make_fake_simulator,
        progress=progress,
        write_reports=False,
        command="cocdrive eval ablate --suite fake --out X",
    )


def test_variants_resolve():
    assert [v.name for v in resolve_variants(None, None)] == ["expert", "const-vel", "ctra", "idm"]
    with pytest.raises(UserError, match="--checkpoint"):
        resolve_variants(["expert", "vla-fast"], None)
    with pytest.raises(UserError, match="unknown ablation variant 'vla-fsat'"):
        resolve_variants(["vla-fsat"], None)
    with pytest.raises(UserError, match="does not exist"):
        resolve_variants(None, "/nonexistent/ckpt")
    assert variant("vla-euler3").options == {"mode": "full", "euler_steps": 3}
    assert variant("vla-blind").options["blind_cameras"] is True
    assert variant("vla-guard").options["guard"]["resample"] is True


def test_ablation_writes_tables_and_results_section_and_resumes(tmp_path):
    out = tmp_path / "abl"
    res = _run(out)
    assert set(res["variants"]) == {"expert", "const-vel", "vla-full", "vla-blind"}
    for name in res["variants"]:
        assert len(JsonlResults(out / name / EPISODES_FILE).records()) == 2 * len(SEEDS)
    # the following planner's reasoning is faithful, the ignoring one's is not
    assert res["variants"]["vla-full"]["reasoning"]["faithfulness"]["value"] == 1.0
    assert res["variants"]["vla-blind"]["reasoning"]["faithfulness"]["value"] == 0.0
    assert "faithfulness" not in res["variants"]["const-vel"]["reasoning"]
    # paired against vla-full and the expert; const-vel crashes into the slow lead
    paired = res["paired"]
    assert set(paired) == {"vla-full", "expert"}
    assert set(paired["vla-full"]) == {"expert", "const-vel", "vla-blind"}
    coll = paired["expert"]["const-vel"]["metrics"]["collision_at_fault"]
    assert coll["a_rate"] == 0.0 and coll["b_rate"] > 0.0
    assert json.loads((out / ABLATE_FILE).read_text())["suite"] == "fake"
    manifest = json.loads((out / "vla-blind" / "manifest.json").read_text())
    assert manifest["planner_options"] == {"num_threads": 1, "mode": "full", "blind_cameras": True}
    assert json.loads((out / "expert" / "manifest.json").read_text())["planner_options"] == {}
    index = (out / INDEX_FILE).read_text()
    assert "vla-full" in index and "Paired against vla-full" in index

    md = results_markdown(res)
    assert "Wilson" in md and "| vla-full |" in md and "cocdrive eval ablate --suite fake" in md
    assert machine_description() in md

    # the RESULTS page: others' text survives, the section is replaced, never duplicated
    page = tmp_path / "RESULTS.md"
    before = "# Results\n\nOpen-loop numbers by someone else.\n\n"
    after = "\n\n## Later section\nkept as is\n"
    atomic_write_text(page, f"{before}{BEGIN_MARKER}\nold table\n{END_MARKER}{after}")
    update_results_section(page, md)
    text = page.read_text()
    assert text.startswith(before) and text.endswith(after)
    assert "old table" not in text and "| vla-blind |" in text
    update_results_section(page, md)
    assert page.read_text() == text and text.count(BEGIN_MARKER) == 1
    fresh = tmp_path / "new.md"
    update_results_section(fresh, md)
    assert fresh.read_text().count(END_MARKER) == 1
    plain = tmp_path / "plain.md"
    atomic_write_text(plain, "# Results\nhand-written\n")
    update_results_section(plain, md)
    assert plain.read_text().startswith("# Results\nhand-written\n\n" + BEGIN_MARKER)
    broken = tmp_path / "broken.md"
    atomic_write_text(broken, f"{BEGIN_MARKER}\nno end\n")
    with pytest.raises(UserError, match="markers"):
        update_results_section(broken, md)

    # resume: drop one finished episode of one variant; a rerun runs only that one
    episodes = out / "const-vel" / EPISODES_FILE
    lines = episodes.read_text().splitlines(keepends=True)
    atomic_write_text(episodes, "".join(lines[:-1]))
    seen: dict[str, list[tuple[int, int]]] = {}

    def progress(name):
        seen[name] = []
        return lambda done, total: seen[name].append((done, total))

    again = _run(out, progress=progress)
    assert seen["const-vel"] == [(3, 4), (4, 4)]
    assert seen["vla-full"] == [(4, 4)]
    assert again["variants"]["const-vel"]["episodes"] == 4
