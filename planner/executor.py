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
import socket
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from planner.errors import UserError
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


RAY_MISSING = (
    "the Ray executor needs Ray, which is not installed: pip install 'cocdrive[ray]' "
    "(or use the local executor)"
)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError(RAY_MISSING) from None
    return ray


def _check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """Ray retries an unreachable GCS for minutes (measured: over 3 min with Ray 2.60), so a
    wrong `host:port` is checked here with one TCP connection first. "auto", "local", an
    empty address and other schemes are left to Ray."""
    if not address or address in ("auto", "local"):
        return
    hostport = address.removeprefix("ray://")
    if "://" in hostport:
        return
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise UserError(f"Ray address {address!r}: expected host:port, e.g. 10.0.0.5:6379")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise UserError(
            f"no Ray cluster answers at {address} ({exc}): start one there with "
            "`ray start --head`, or unset RAY_ADDRESS to run on a local instance"
        ) from None


class RayExecutor(Executor):
    """The same contract on Ray (`pip install 'cocdrive[ray]'`).

    Cluster: `address` (e.g. "ray://head:10001" or "head:6379"), else `RAY_ADDRESS`, else the
    cluster `ray start --head` left on this machine; with none of these a local instance of
    `num_cpus` CPUs is started (and shut down at exit). If Ray is already initialised in
    this process (a notebook, a test fixture) that connection is used as it is.
    Workers import the task function by module name, so every node needs the project
    installed (same version; the editable install is enough on one machine). At most
    `max_in_flight` items are submitted at once (default: the cluster's CPUs divided by
    `num_cpus_per_task`), so an interrupt loses at most that many; still-pending tasks are
    cancelled when the iteration stops. `max_retries`: reruns of an item whose worker died
    (node lost or preempted, OOM kill); an exception raised by the task is never retried, it
    becomes an error record as with the local executor."""

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        num_cpus_per_task: float = 1.0,
        max_in_flight: int | None = None,
        max_retries: int = 3,
    ):
        if num_cpus is not None and num_cpus < 1:
            raise ValueError(f"num_cpus must be >= 1, got {num_cpus}")
        if num_cpus_per_task <= 0:
            raise ValueError(f"num_cpus_per_task must be > 0, got {num_cpus_per_task}")
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        ray = _import_ray()
        self._ray = ray
        if not ray.is_initialized():
            self._init(address, num_cpus)
        self.num_cpus_per_task = num_cpus_per_task
        if max_in_flight is None:
            cluster_cpus = float(ray.cluster_resources().get("CPU", 1.0))
            max_in_flight = max(1, int(cluster_cpus // num_cpus_per_task))
        self.max_in_flight = max_in_flight
        self._remote = ray.remote(num_cpus=num_cpus_per_task, max_retries=max_retries)(_guarded)

    def _init(self, address: str | None, num_cpus: int | None) -> None:
        ray = self._ray
        # The dashboard costs seconds of start-up and a port; worker output stays in Ray's
        # session logs (a failed item carries its traceback in its record anyway).
        common: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        _check_reachable(address or os.environ.get("RAY_ADDRESS"))
        try:
            try:
                ray.init(address=address, num_cpus=num_cpus, **common)
            except ValueError as exc:
                # Ray refuses num_cpus when address/RAY_ADDRESS/`ray start` names an existing
                # cluster (checked before connecting): the cluster's own CPUs count then.
                if num_cpus is None or "existing cluster" not in str(exc):
                    raise
                ray.init(address=address, **common)
        except ConnectionError as exc:
            where = address or os.environ.get("RAY_ADDRESS") or "the `ray start` cluster"
            raise UserError(
                f"cannot reach the Ray cluster at {where} ({exc}): check `ray status` there; "
                "a cluster with token authentication (Ray's default) also needs "
                "RAY_AUTH_MODE=token and its token (~/.ray/auth_token or RAY_AUTH_TOKEN) here; "
                "unset RAY_ADDRESS to run on a local instance"
            ) from None
        log.info("Ray cluster: %g CPUs", ray.cluster_resources().get("CPU", 0.0))

    def imap_unordered(self, fn: Task, items: list[Any]) -> Iterator[tuple[Any, dict[str, Any]]]:
        if not items:
            return
        ray = self._ray
        fn_ref = ray.put(fn)  # serialised once, not once per item
        queue = deque(items)
        pending: dict[Any, Any] = {}  # ObjectRef -> item
        try:
            while queue or pending:
                while queue and len(pending) < self.max_in_flight:
                    item = queue.popleft()
                    pending[self._remote.remote(fn_ref, item)] = item
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    item = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as exc:  # worker died, node lost, OOM kill
                        lines = str(exc).strip().splitlines() or [""]
                        result = {
                            "status": "error",
                            "error": f"worker failed: {type(exc).__name__}: {lines[0]}",
                            "traceback": "\n".join(lines[-8:]),
                        }
                    yield item, result
        finally:
            for ref in pending:  # interrupted: do not leave work running on the cluster
                try:
                    # not force: a running item gets KeyboardInterrupt, its worker lives on
                    ray.cancel(ref)
                except Exception as exc:  # noqa: BLE001 - best effort while unwinding
                    log.debug("could not cancel a Ray task: %s", exc)


def make_executor(
    kind: str = "local", workers: int | None = None, address: str | None = None
) -> Executor:
    """`workers`: pool size (local); for Ray, the number of items in flight and the CPUs of
    a local instance when no cluster is found (None: all of the cluster's CPUs)."""
    if kind == "local":
        return LocalExecutor(workers)
    if kind == "ray":
        return RayExecutor(address, num_cpus=workers, max_in_flight=workers)
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
