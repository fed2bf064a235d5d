"""Atomic writes, resumable JSONL results and the episode-parallel executor."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from planner.executor import LocalExecutor, make_executor, run_resumable
from planner.io import JsonlResults, atomic_write_json, atomic_write_text


# Module level so a spawned worker process can import it by name.
def square_task(item: int) -> dict:
    if item == 3:
        raise RuntimeError(f"episode {item} diverged")
    return {"status": "ok", "value": item * item, "pid": os.getpid()}


def _key(item: int) -> str:
    return f"ep{item:03d}"


class CountingTask:
    """Inline-only task (workers=1 does not pickle) that records which items ran."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, item: int) -> dict:
        self.calls.append(item)
        return {"status": "ok", "value": item * item}


# ---- io ----------------------------------------------------------------------------------------
def test_atomic_writes_replace_and_leave_no_temp_files(tmp_path):
    path = tmp_path / "deep" / "summary.json"
    atomic_write_json(path, {"rate": float("nan"), "n": np.int64(3), "xs": np.arange(2)})
    assert json.loads(path.read_text()) == {"rate": None, "n": 3, "xs": [0, 1]}
    atomic_write_text(path, "second")
    assert path.read_text() == "second"
    assert [p.name for p in path.parent.iterdir()] == ["summary.json"]


def test_jsonl_results_append_and_read(tmp_path):
    results = JsonlResults(tmp_path / "results.jsonl")
    results.append({"key": "a", "min_ttc_s": math.inf, "v": np.float32(1.5)})
    results.append({"key": "b"})
    assert results.records() == [{"key": "a", "min_ttc_s": None, "v": 1.5}, {"key": "b"}]
    assert results.done_keys() == {"a", "b"}
    with pytest.raises(KeyError, match="key field 'key'"):
        results.append({"value": 1})


def test_jsonl_results_drop_a_partial_last_line(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"key": "a"}\n{"key": "b", "val')
    results = JsonlResults(path)
    assert results.done_keys() == {"a"}
    assert path.read_text() == '{"key": "a"}\n'


def test_jsonl_results_name_a_corrupt_line(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"key": "a"}\nnot json\n{"key": "c"}\n')
    with pytest.raises(ValueError, match=r"results.jsonl:2 is not valid JSON"):
        JsonlResults(path).records()


# ---- executor ----------------------------------------------------------------------------------
def test_run_resumable_resumes_after_an_interruption(tmp_path):
    path = tmp_path / "results.jsonl"
    items = [0, 1, 2, 4, 5, 6]
    # An earlier run finished items 0 and 1, then died while writing item 2.
    path.write_text(
        json.dumps({"key": _key(0), "status": "ok", "value": 0})
        + "\n"
        + json.dumps({"key": _key(1), "status": "ok", "value": 1})
        + "\n"
        + '{"key": "ep002", "stat'
    )
    task = CountingTask()
    progress: list[tuple[int, int]] = []
    records = run_resumable(
        task,
        items,
        _key,
        JsonlResults(path),
        LocalExecutor(workers=1),
        progress=lambda done, total: progress.append((done, total)),
    )
    assert task.calls == [2, 4, 5, 6]  # the partial item is redone, finished ones are not
    assert [r["key"] for r in records] == [_key(i) for i in items]
    assert [r["value"] for r in records] == [i * i for i in items]
    assert progress[0] == (2, 6) and progress[-1] == (6, 6)
    # a second run has nothing left to do
    again = CountingTask()
    assert run_resumable(again, items, _key, JsonlResults(path), LocalExecutor(1)) == records
    assert again.calls == []
    assert len(path.read_text().splitlines()) == len(items)


def test_an_exception_is_recorded_and_the_batch_goes_on(tmp_path):
    results = JsonlResults(tmp_path / "results.jsonl")
    records = run_resumable(square_task, [2, 3, 4], _key, results, LocalExecutor(workers=1))
    by_key = {r["key"]: r for r in records}
    assert by_key["ep003"]["status"] == "error"
    assert by_key["ep003"]["error"] == "RuntimeError: episode 3 diverged"
    assert "square_task" in by_key["ep003"]["traceback"]
    assert by_key["ep002"]["value"] == 4 and by_key["ep004"]["value"] == 16


def test_two_worker_process_pool(tmp_path):
    results = JsonlResults(tmp_path / "results.jsonl")
    items = [0, 1, 2, 3, 4, 5]
    records = run_resumable(square_task, items, _key, results, make_executor("local", 2))
    assert [r["key"] for r in records] == [_key(i) for i in items]
    assert [r.get("value") for r in records] == [0, 1, 4, None, 16, 25]
    assert records[3]["status"] == "error"
    pids = {r["pid"] for r in records if "pid" in r}
    assert os.getpid() not in pids  # ran in worker processes
    assert 1 <= len(pids) <= 2


def test_duplicate_keys_are_an_error(tmp_path):
    results = JsonlResults(tmp_path / "results.jsonl")
    with pytest.raises(ValueError, match="not unique"):
        run_resumable(square_task, [1, 2, 1], _key, results, LocalExecutor(1))
    assert not results.path.exists() or results.records() == []


def test_unknown_executor_kind():
    with pytest.raises(ValueError, match="valid: local, ray"):
        make_executor("slurm")
