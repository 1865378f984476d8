"""Content-addressed stage store.

Every expensive step of an experiment (feature extraction, a training run, a labelling pass) is a
*stage*. A stage is identified by its ``kind`` and a key derived from everything it depends on: the
config that shapes it, the fingerprint of its data, the model, the seed and the keys of the stages
it reads from. The stage's outputs live in ``<root>/<kind>/<key>/``; ``meta.json`` is written last
and the directory is renamed into place atomically, so a stage either exists completely or not at
all. A killed run leaves at most a ``.tmp-*`` directory behind, which the next run removes.

Two processes asking for the same stage at once serialise on a file lock, so the second one reads
what the first one wrote instead of computing it again (sweeps running side by side share stages).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from superalign.io import write_bytes_atomic, write_json_atomic  # noqa: F401  (re-exported: stages import them from here)

log = logging.getLogger("superalign.store")

META = "meta.json"


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the text a key is hashed from."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot hash a {type(obj).__name__} into a stage key; pass plain data")


def stage_key(kind: str, inputs: Mapping[str, Any], version: int = 1) -> str:
    """The key of a stage: sha256 over its kind, code version and inputs (first 20 hex digits)."""
    text = canonical_json({"kind": kind, "version": version, "inputs": inputs})
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass
class Stage:
    """A finished stage: where its files are and whether this call computed it."""

    kind: str
    key: str
    path: Path
    cached: bool
    meta: dict[str, Any]

    def file(self, name: str) -> Path:
        return self.path / name


@dataclass
class StageEvent:
    kind: str
    key: str
    label: str
    cached: bool
    seconds: float


@dataclass
class Store:
    """A directory of finished stages shared by every run that points at it."""

    root: Path
    events: list[StageEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)

    # -- paths -------------------------------------------------------------------------------
    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def has(self, kind: str, key: str) -> bool:
        return (self.path(kind, key) / META).is_file()

    def load(self, kind: str, key: str) -> Stage:
        path = self.path(kind, key)
        meta = json.loads((path / META).read_text())
        return Stage(kind, key, path, True, meta)

    def scratch(self, kind: str, key: str) -> Path:
        """A directory that survives a crash for in-stage checkpoints (removed when the stage ends)."""
        path = self.root / kind / f".partial-{key}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @contextlib.contextmanager
    def lock(self, kind: str, key: str) -> Iterator[None]:
        lock_dir = self.root / kind
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / f".{key}.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- the one entry point -----------------------------------------------------------------
    def run(
        self,
        kind: str,
        inputs: Mapping[str, Any],
        compute: Callable[[Path], Mapping[str, Any] | None],
        *,
        version: int = 1,
        label: str = "",
    ) -> Stage:
        """Return the stage for ``inputs``, computing it with ``compute(tmp_dir)`` if needed.

        ``compute`` writes its files into the directory it is given and may return a dict that
        is stored in ``meta.json`` (small results: metrics, shapes). Nothing is visible under the
        final path until ``compute`` has returned and the directory has been renamed into place.
        """
        key = stage_key(kind, inputs, version)
        label = label or kind
        final = self.path(kind, key)
        if self.has(kind, key):
            return self._cached(kind, key, label)
        rank, world = _distributed()
        if world > 1:
            return self._run_collective(kind, key, inputs, compute, label, rank)
        with self.lock(kind, key):
            if self.has(kind, key):  # another process finished it while we waited
                return self._cached(kind, key, label)
            self._clean_tmp(kind, key)
            tmp = self.root / kind / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
            tmp.mkdir(parents=True)
            start = time.perf_counter()
            try:
                result = compute(tmp) or {}
                meta = {
                    "kind": kind,
                    "key": key,
                    "label": label,
                    "inputs": json.loads(canonical_json(inputs)),
                    "result": json.loads(canonical_json(result)),
                    "seconds": round(time.perf_counter() - start, 3),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                }
                write_json_atomic(tmp / META, meta)
                if final.exists():  # a half-written dir from a foreign tool; never ours
                    shutil.rmtree(final)
                os.replace(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            partial = self.root / kind / f".partial-{key}"
            shutil.rmtree(partial, ignore_errors=True)
        seconds = time.perf_counter() - start
        self.events.append(StageEvent(kind, key, label, False, seconds))
        log.info("stage %-28s [%s] computed in %.1fs", label, key[:8], seconds)
        return Stage(kind, key, final, False, meta)

    def _run_collective(self, kind: str, key: str, inputs: Mapping[str, Any], compute, label: str, rank: int) -> Stage:
        """Under torch.distributed every rank computes together (collectives inside ``compute``
        need all of them); rank 0 publishes the result, the others wait at a barrier and read it."""
        import torch.distributed as dist

        tmp = self.root / kind / f".tmp-{key}-rank{rank}-{uuid.uuid4().hex[:6]}"
        tmp.mkdir(parents=True)
        start = time.perf_counter()
        try:
            result = compute(tmp) or {}
            if rank == 0:
                meta = {"kind": kind, "key": key, "label": label, "inputs": json.loads(canonical_json(inputs)),
                        "result": json.loads(canonical_json(result)), "seconds": round(time.perf_counter() - start, 3),
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
                write_json_atomic(tmp / META, meta)
                if not self.has(kind, key):
                    os.replace(tmp, self.path(kind, key))
        finally:
            dist.barrier()
            shutil.rmtree(tmp, ignore_errors=True)
        self.events.append(StageEvent(kind, key, label, False, time.perf_counter() - start))
        return Stage(kind, key, self.path(kind, key), False, self.load(kind, key).meta)

    def _cached(self, kind: str, key: str, label: str) -> Stage:
        stage = self.load(kind, key)
        self.events.append(StageEvent(kind, key, label, True, 0.0))
        log.info("stage %-28s [%s] cached", label, key[:8])
        return stage

    def _clean_tmp(self, kind: str, key: str) -> None:
        for stale in (self.root / kind).glob(f".tmp-{key}-*"):
            shutil.rmtree(stale, ignore_errors=True)

    def summary(self, detail: bool = False) -> str:
        """How many stages were cached and computed (with ``detail``, which were computed)."""
        cached = [e for e in self.events if e.cached]
        computed = [e for e in self.events if not e.cached]
        text = f"stages: {len(cached)} cached, {len(computed)} computed"
        if detail and computed:
            text += " (" + ", ".join(e.label for e in computed) + ")"
        return text


def _distributed() -> tuple[int, int]:
    """(rank, world size) when running under an initialised torch.distributed group, else (0, 1)."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return 0, 1
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1




def default_store_root() -> Path:
    """``$SUPERALIGN_STORE``, else ``$SUPERALIGN_HOME/store``, else ``~/.cache/superalign/store``."""
    if os.environ.get("SUPERALIGN_STORE"):
        return Path(os.environ["SUPERALIGN_STORE"]).expanduser()
    return superalign_home() / "store"


def superalign_home() -> Path:
    """Where converted model weights, fetched assets and the default store live."""
    return Path(os.environ.get("SUPERALIGN_HOME", "~/.cache/superalign")).expanduser()
