"""The Ray executor keeps the local executor's contract (a result for every item, an exception
becomes an error record, `run_resumable` resumes and appends) on a local Ray instance with 2
CPUs, started once for this module; and `sim run --executor ray` works end to end."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from planner.errors import UserError
from planner.executor import RayExecutor, _check_reachable, make_executor, run_resumable
from planner.io import JsonlResults


# Module level so Ray workers import them by name (the project is installed editable).
def square_task(item: int) -> dict:
    if item == 3:
        raise RuntimeError(f"episode {item} diverged")
    return {"status": "ok", "value": item * item, "pid": os.getpid()}


def crashing_task(item: int) -> dict:
    if item == 1:
        os._exit(3)  # a worker that dies (segfault, OOM kill) rather than raising
    return {"status": "ok", "value": item}


class MarkStartTask:
    """Touches `<dir>/<item>` when an item starts, then works for a while."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def __call__(self, item: int) -> dict:
        Path(self.directory, str(item)).touch()
        time.sleep(0.3)
        return {"status": "ok", "value": item}


def _key(item: int) -> str:
    return f"ep{item:03d}"


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray executor tests need ray (the dev extra)")
    # address="local": never join a cluster another process on this machine started.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_every_item_gets_a_result_and_an_exception_becomes_an_error_record(ray_cluster, tmp_path):
    executor = RayExecutor()
    assert executor.max_in_flight == 2  # the instance's 2 CPUs, 1 CPU per item
    results = JsonlResults(tmp_path / "results.jsonl")
    items = [0, 1, 2, 3, 4, 5]
    records = run_resumable(square_task, items, _key, results, executor)
    assert [r["key"] for r in records] == [_key(i) for i in items]
    assert [r.get("value") for r in records] == [0, 1, 4, None, 16, 25]
    assert records[3]["status"] == "error"
    assert records[3]["error"] == "RuntimeError: episode 3 diverged"
    assert "square_task" in records[3]["traceback"]
    pids = {r["pid"] for r in records if "pid" in r}
    assert os.getpid() not in pids  # ran in Ray workers, not in the driver


def test_run_resumable_resumes_and_appends(ray_cluster, tmp_path):
    path = tmp_path / "results.jsonl"
    old = [{"key": _key(i), "status": "ok", "value": "from the first run"} for i in (0, 1)]
    # The first run finished items 0 and 1, then died while writing item 2.
    path.write_text("".join(json.dumps(r) + "\n" for r in old) + '{"key": "ep002", "sta')
    items = [0, 1, 2, 4]
    progress: list[tuple[int, int]] = []
    records = run_resumable(
        square_task,
        items,
        _key,
        JsonlResults(path),
        make_executor("ray", workers=2),
        progress=lambda done, total: progress.append((done, total)),
    )
    assert [r["value"] for r in records] == ["from the first run"] * 2 + [4, 16]
    assert progress[0] == (2, 4) and progress[-1] == (4, 4)
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines[:2]] == old  # appended after, not rewritten
    assert len(lines) == len(items)
    # Nothing left: a second run submits no work and returns the same records.
    assert run_resumable(square_task, items, _key, JsonlResults(path), RayExecutor()) == records
    assert len(path.read_text().splitlines()) == len(items)


def test_a_dead_worker_becomes_an_error_record(ray_cluster, tmp_path):
    results = JsonlResults(tmp_path / "results.jsonl")
    executor = RayExecutor(max_retries=0)  # the crash is deterministic: no reruns
    records = run_resumable(crashing_task, [0, 1, 2], _key, results, executor)
    assert [r["status"] for r in records] == ["ok", "error", "ok"]
    assert records[1]["error"].startswith("worker failed: ")


def test_in_flight_items_are_bounded_so_an_interrupt_loses_few(ray_cluster, tmp_path):
    started = tmp_path / "started"
    started.mkdir()
    executor = RayExecutor(max_in_flight=2)
    stream = executor.imap_unordered(MarkStartTask(str(started)), list(range(8)))
    next(stream)  # one finished ...
    stream.close()  # ... then the run is interrupted: pending work is cancelled
    time.sleep(1.0)  # anything wrongly queued on the cluster would have started by now
    assert 1 <= len(list(started.iterdir())) <= 2  # at most the 2 in flight, not all 8


@pytest.mark.slow  # ~25 s on 2 busy cores: each Ray worker imports the simulator stack
def test_sim_run_with_the_ray_executor_end_to_end(ray_cluster, tmp_path):
    from typer.testing import CliRunner

    from planner.cli import build_app
    from sim_eval.runner import EPISODES_FILE

    suite = tmp_path / "two.yaml"
    suite.write_text(
        "name: two\nduration_s: 1.5\nepisodes:\n"
        "  - {family: hard_braking_lead, seeds: [4]}\n  - {family: cut_in, seeds: [3]}\n"
    )
    out = tmp_path / "run"
    args = ["sim", "run", "--planner", "idm", "--suite", str(suite), "--out", str(out)]
    result = CliRunner().invoke(build_app(), [*args, "--executor", "ray", "--workers", "2"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / EPISODES_FILE).read_text().splitlines()]
    assert sorted(r["key"] for r in rows) == ["cut_in:3", "hard_braking_lead:4"]
    assert all(r["status"] == "ok" and r["num_frames"] >= 15 for r in rows)


def test_without_ray_the_error_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(UserError, match=r"pip install 'cocdrive\[ray\]'"):
        make_executor("ray", workers=2)


def test_an_unreachable_cluster_address_fails_fast_with_the_fix():
    # Checked before ray.init, which would retry a dead address for minutes.
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match="no Ray cluster answers.*ray start --head"):
        _check_reachable(f"127.0.0.1:{port}")
    with pytest.raises(UserError, match="expected host:port"):
        _check_reachable("headnode")
    _check_reachable(None)  # no address: Ray finds a cluster or starts a local one
