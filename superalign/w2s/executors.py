"""Where a sweep's cells run: a local process pool or Ray, and the worker's entry point.

:func:`run_cell_job` runs one cell (plain data in and out, so any executor can carry it);
:func:`run_local` hands jobs to a spawned :class:`~concurrent.futures.ProcessPoolExecutor` and
:func:`run_ray` to one Ray task each. Both call ``done(record)`` as each cell finishes and retry
cells whose worker died (``max_retries``): finished stages are in the store, so a retry recomputes
only what the dead worker had not finished. :mod:`superalign.w2s.sweep` builds the grid and the
results on top of these.

Adding an executor: a function ``(jobs, workers, threads, ..., done) -> None`` that runs
``run_cell_job`` on every job and calls ``done`` with each record, and a branch in ``run_sweep``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable, Iterator

from superalign.errors import ConfigError
from superalign.store.store import Store
from superalign.w2s.config import W2SConfig

log = logging.getLogger("superalign.w2s.sweep")

# Environment of worker processes: no progress bars interleaving on the terminal, no tokenizer threads.
WORKER_ENV = {"TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false"}

Done = Callable[[dict[str, Any]], None]


# -- running one cell (in a worker) --------------------------------------------------------------

_WORKER_POOL = None  # superalign.w2s.stages.ModelPool, one per worker process, reused across cells
_MAX_POOLED_MODELS = 3


def _worker_pool():
    """The process's model pool: backbones loaded by one cell serve the next ones (bounded, least recently used
    dropped first)."""
    global _WORKER_POOL
    from superalign.models.cache import ModelCache
    from superalign.w2s.stages import ModelPool

    if _WORKER_POOL is None:
        _WORKER_POOL = ModelPool(ModelCache(_MAX_POOLED_MODELS, name="sweep-worker"))
    return _WORKER_POOL


def _init_worker(threads: int) -> None:
    for k, v in WORKER_ENV.items():
        os.environ.setdefault(k, v)
    import torch

    torch.set_num_threads(threads)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
    except Exception:  # pragma: no cover - transformers is a dependency
        pass


def run_cell_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run one cell (a worker's entry point; plain data in and out, so any executor can carry it).

    ``job``: ``id``, ``config`` (W2SConfig as JSON data), ``store_root``, ``out_dir``, ``threads``.
    Errors are caught and returned (status ``failed``) so that one bad cell does not stop a sweep;
    only the death of the worker itself reaches the executor (and Ray retries it).
    """
    from superalign.w2s.pipeline import run_w2s

    _init_worker(job["threads"])  # cheap; Ray workers have no initializer
    t0 = time.perf_counter()
    store = Store(job["store_root"])
    record: dict[str, Any] = {"id": job["id"], "pid": os.getpid(), "status": "ok", "error": None, "rows": [],
                              "summary": {}}
    try:
        cfg = W2SConfig.model_validate(job["config"])
        result = run_w2s(cfg, out_dir=job["out_dir"], store=store, pool=_worker_pool())
        record["rows"] = json.loads(json.dumps(result.rows, default=_plain))
        record["summary"] = json.loads(json.dumps(
            {k: v for k, v in result.summary.items() if k in ("weak", "strong", "seeds", "n_test", "task", "notes")},
            default=_plain))
    except Exception as exc:  # noqa: BLE001 - reported per cell
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc(limit=8))
    record["stages"] = stage_counts(store)
    record["seconds"] = round(time.perf_counter() - t0, 2)
    return record


def _plain(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON data")


def stage_counts(store: Store) -> dict[str, Any]:
    """What a process computed and found cached, from ``store.events``."""
    computed = [e for e in store.events if not e.cached]
    by_kind: dict[str, dict[str, int]] = {}
    for e in store.events:
        slot = by_kind.setdefault(e.kind, {"computed": 0, "cached": 0})
        slot["cached" if e.cached else "computed"] += 1
    return {"computed": len(computed), "cached": len(store.events) - len(computed), "by_kind": by_kind,
            "computed_keys": [f"{e.kind}/{e.key}" for e in computed],
            "computed_labels": [e.label for e in computed]}


# -- executors -----------------------------------------------------------------------------------

@contextlib.contextmanager
def _env(extra: dict[str, str]) -> Iterator[None]:
    """Set environment variables for processes started inside the block (spawned workers)."""
    old = {k: os.environ.get(k) for k in extra}
    for k, v in extra.items():
        os.environ.setdefault(k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_local(jobs: list[dict], workers: int, threads: int, max_retries: int, done: Done) -> None:
    """ProcessPoolExecutor (spawn). A worker that dies breaks the pool; the cells that had not
    returned go to a fresh pool, at most ``max_retries`` times (finished stages are in the store)."""
    ctx = multiprocessing.get_context("spawn")
    pending = list(jobs)
    for attempt in range(max_retries + 1):
        broken: list[dict] = []
        ex = ProcessPoolExecutor(max_workers=max(1, min(workers, len(pending))), mp_context=ctx,
                                 initializer=_init_worker, initargs=(threads,))
        try:
            with _env(WORKER_ENV):  # the workers start at the first submit and inherit this environment
                futures = {ex.submit(run_cell_job, job): job for job in pending}
            waiting = set(futures)
            while waiting:
                finished, waiting = wait(waiting, return_when=FIRST_COMPLETED)
                for fut in finished:
                    try:
                        done(fut.result())
                    except BrokenProcessPool:
                        broken.append(futures[fut])
            ex.shutdown(wait=True)
        except BaseException:
            ex.shutdown(wait=False, cancel_futures=True)
            raise
        if not broken:
            return
        if attempt < max_retries:
            log.warning("a worker died; retrying %d unfinished cell(s) in a fresh pool (finished stages are "
                        "cached)", len(broken))
        pending = sorted(broken, key=lambda j: j["order"])
    for job in pending:
        done({"id": job["id"], "status": "failed", "rows": [], "summary": {}, "stages": None, "seconds": None,
              "error": f"its worker process died {max_retries + 1} time(s) (killed, or out of memory)"})


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("executor", "Ray is not installed",
                          "pip install 'superalign[sweep]' (or use the local executor)") from None
    return ray


def run_ray(jobs: list[dict], workers: int, threads: int, gpus: float, max_retries: int, address: str | None,
            done: Done) -> None:
    """One Ray task per cell; Ray retries a task whose worker died (``max_retries``)."""
    ray = _import_ray()
    started = False
    refs: dict[Any, dict] = {}
    if not address and os.environ.get("RAY_ADDRESS"):
        address = os.environ["RAY_ADDRESS"]  # Ray's own convention for "the cluster to use"
    if not ray.is_initialized():
        if address in (None, "", "local"):
            ray.init(num_cpus=workers * threads, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
        started = True
    try:
        task = ray.remote(run_cell_job).options(
            num_cpus=threads, num_gpus=gpus, max_retries=max_retries, retry_exceptions=False,
            runtime_env={"env_vars": dict(WORKER_ENV)})
        refs = {task.remote(job): job for job in jobs}
        waiting = list(refs)
        while waiting:
            finished, waiting = ray.wait(waiting, num_returns=1)
            for ref in finished:
                job = refs[ref]
                try:
                    done(ray.get(ref))
                except ray.exceptions.RayError as exc:
                    done({"id": job["id"], "status": "failed", "rows": [], "summary": {}, "stages": None,
                          "seconds": None, "error": f"Ray: {type(exc).__name__}: {str(exc).splitlines()[0]}"})
    except BaseException:
        for ref in refs:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()


def cores() -> int:
    """CPU cores this process may use (the affinity mask, which containers narrow; else the count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# names as they were in superalign.w2s.sweep
_run_local, _run_ray, _cores = run_local, run_ray, cores
