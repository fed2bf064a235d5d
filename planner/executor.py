"""Episode-parallel execution. One function evaluates one item; an executor maps it over
items. `LocalExecutor` uses a process pool (or runs inline with one worker); `RayExecutor`
runs the same function on a Ray cluster. Every batch command (closed-loop suites, data
collection, open-loop evaluation) goes through `run_resumable`, which skips items already
in the results file and appends each result as it arrives."""

from __future__ import annotations

import abc
import logging
import multiprocessing as mp
import os
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from planner.io import JsonlResults

log = logging.getLogger(__name__)

Task = Callable[[Any], dict[str, Any]]


def _guarded(fn: Task, item: Any) -> dict[str, Any]:
    """Run one item; an exception becomes a failed record instead of killing the batch."""
    try:
        return fn(item)
    except Exception as exc:  # noqa: BLE001 - recorded with its traceback, the batch goes on
        return {
            "status": "error",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=8),
        }


class Executor(abc.ABC):
    @abc.abstractmethod
    def imap_unordered(self, fn: Task, items: list[Any]) -> Iterator[tuple[Any, dict[str, Any]]]:
        """Yield (item, result) as each finishes."""


class LocalExecutor(Executor):
    """A process pool; `workers=1` runs inline (debuggable, no pickling)."""

    def __init__(self, workers: int | None = None):
        self.workers = max(1, workers if workers is not None else (os.cpu_count() or 1))

    def imap_unordered(self, fn: Task, items: list[Any]) -> Iterator[tuple[Any, dict[str, Any]]]:
        if self.workers == 1 or len(items) <= 1:
            for item in items:
                yield item, _guarded(fn, item)
            return
        # spawn: torch and pygame state must not be forked into workers
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx) as pool:
            pending: dict[Future, Any] = {}
            queue = list(items)
            # Bounded in-flight work so an interrupt loses at most `workers` items.
            while queue or pending:
                while queue and len(pending) < self.workers:
                    item = queue.pop(0)
                    pending[pool.submit(_guarded, fn, item)] = item
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    item = pending.pop(fut)
                    try:
                        result = fut.result()
                    except Exception as exc:  # noqa: BLE001 - a worker died (e.g. OOM)
                        result = {"status": "error", "error": f"worker failed: {exc}"}
                    yield item, result


class RayExecutor(Executor):
    """The same contract on a Ray cluster (`pip install cocdrive[ray]`)."""

    def __init__(self, address: str | None = None, num_cpus_per_task: float = 1.0):
        try:
            import ray
        except ImportError as exc:
            raise RuntimeError("the Ray executor needs ray: pip install 'cocdrive[ray]'") from exc
        self._ray = ray
        if not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        self._remote = ray.remote(num_cpus=num_cpus_per_task)(_guarded)

    def imap_unordered(self, fn: Task, items: list[Any]) -> Iterator[tuple[Any, dict[str, Any]]]:
        ray = self._ray
        refs = {self._remote.remote(fn, item): item for item in items}
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            for ref in done:
                item = refs.pop(ref)
                yield item, ray.get(ref)


def make_executor(
    kind: str = "local", workers: int | None = None, address: str | None = None
) -> Executor:
    if kind == "local":
        return LocalExecutor(workers)
    if kind == "ray":
        return RayExecutor(address)
    raise ValueError(f"unknown executor {kind!r}; valid: local, ray")


def run_resumable(
    fn: Task,
    items: Iterable[Any],
    key: Callable[[Any], str],
    results: JsonlResults,
    executor: Executor,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Run `fn` over the items not yet in `results`, appending each result (with its key) as
    it finishes. Returns all records, old and new, in item order."""
    items = list(items)
    keys = [key(i) for i in items]
    if len(set(keys)) != len(keys):
        raise ValueError("item keys are not unique; resumable results need unique keys")
    done = results.done_keys()
    todo = [i for i, k in zip(items, keys) if k not in done]
    if done:
        log.info("resuming: %d of %d items already done", len(items) - len(todo), len(items))
    finished = len(items) - len(todo)
    if progress:
        progress(finished, len(items))
    for item, record in executor.imap_unordered(fn, todo):
        record = {results.key_field: key(item), **record}
        results.append(record)
        finished += 1
        if progress:
            progress(finished, len(items))
    by_key = {str(r[results.key_field]): r for r in results}
    return [by_key[k] for k in keys if k in by_key]
