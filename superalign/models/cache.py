"""One model cache: load each model once, keep a bounded number alive, release them when a run ends.

Loading a backbone or causal LM takes seconds to minutes, so experiments keep the ones they use.
Keeping them in ``functools.lru_cache`` on methods or module functions keeps every run's models
alive for the life of the process; this module replaces those with one bounded cache and scopes::

    from superalign.models.cache import model_scope, causal_lm

    with model_scope():                    # a run: models loaded inside are released at the end
        model, tok, info = causal_lm("tiny-llama")
        ...                                # the same call again returns the same objects

    cache = active_cache()                 # the innermost scope's cache (or the process default)
    model = cache.get(("my-kind", name), lambda: load_it(name))

Outside any scope, :func:`active_cache` is a small process-wide cache (``DEFAULT_MAX_ITEMS``
entries, least recently used evicted first). A scope opened inside another scope shares the outer
one's cache, so a caller that runs several experiments can keep their models by opening one scope
around all of them; models are released when the outermost scope exits.

Cached models are shared: callers that train must train a copy (``copy.deepcopy``), as the W2S
regimes and the RLAIF policies do. The helpers :func:`causal_lm` and :func:`backbone` put the
loading options into the key, so a frozen and a trainable copy of one model never collide.
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import logging
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any, TypeVar

log = logging.getLogger("superalign.models")

T = TypeVar("T")

DEFAULT_MAX_ITEMS = 2  # the process-wide cache outside any scope (what the old lru_cache(maxsize=2)s held)
SCOPE_MAX_ITEMS = 4  # a run's scope: the RLAIF chain holds a policy, a feedback model and a PM backbone


class ModelCache:
    """A bounded, least-recently-used map from hashable keys to loaded models.

    ``get(key, loader)`` returns the cached value or calls ``loader()`` once and keeps its result;
    past ``max_items`` entries the least recently used one is dropped. ``max_items=None`` means
    unbounded. Thread-safe: two threads asking for one key load it once.
    """

    def __init__(self, max_items: int | None = DEFAULT_MAX_ITEMS, name: str = "models"):
        if max_items is not None and max_items < 1:
            raise ValueError(f"max_items must be at least 1 or None, got {max_items}")
        self.max_items = max_items
        self.name = name
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.RLock()
        self.loads = 0  # how many times a loader ran (a miss)
        self.hits = 0

    def get(self, key: Hashable, loader: Callable[[], T]) -> T:
        """The value cached under ``key``; on a miss, ``loader()``'s result, cached."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            log.debug("model cache %s: loading %r", self.name, key)
            value = loader()
            self.loads += 1
            self._items[key] = value
            self._items.move_to_end(key)
            while self.max_items is not None and len(self._items) > self.max_items:
                old, _ = self._items.popitem(last=False)
                log.debug("model cache %s: evicted %r", self.name, old)
            return value

    def put(self, key: Hashable, value: Any) -> None:
        """Cache ``value`` under ``key`` (e.g. planted weights standing in for a loaded model)."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while self.max_items is not None and len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def pop(self, key: Hashable, default: Any = None) -> Any:
        """Drop ``key`` and return its value (``default`` if absent)."""
        with self._lock:
            return self._items.pop(key, default)

    def clear(self) -> None:
        """Drop every entry, then free what is no longer referenced (and the CUDA cache, when in use)."""
        with self._lock:
            had = bool(self._items)
            self._items.clear()
        if had:
            release_memory()

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._items)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __repr__(self) -> str:
        return f"ModelCache({self.name!r}, {len(self)}/{self.max_items} items, {self.loads} loads, {self.hits} hits)"


def release_memory() -> None:
    """Collect garbage and, if torch is imported and CUDA is in use, return cached GPU memory."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


_PROCESS_CACHE = ModelCache(DEFAULT_MAX_ITEMS, name="process")
_ACTIVE: contextvars.ContextVar[ModelCache | None] = contextvars.ContextVar("superalign_model_cache", default=None)


def active_cache() -> ModelCache:
    """The cache of the innermost open :func:`model_scope`, else the process-wide default cache."""
    cache = _ACTIVE.get()
    return _PROCESS_CACHE if cache is None else cache  # (an empty cache is falsy: no `or` here)


def process_cache() -> ModelCache:
    """The process-wide cache used outside any scope."""
    return _PROCESS_CACHE


@contextlib.contextmanager
def model_scope(max_items: int | None = SCOPE_MAX_ITEMS, name: str = "run") -> Iterator[ModelCache]:
    """Open a run's model cache; on exit (normal or by an exception) its models are released.

    Inside an already open scope this reuses the outer cache and releases nothing, so the outermost
    scope decides how long models live.
    """
    outer = _ACTIVE.get()
    if outer is not None:
        yield outer
        return
    cache = ModelCache(max_items, name=name)
    token = _ACTIVE.set(cache)
    try:
        yield cache
    finally:
        _ACTIVE.reset(token)
        cache.clear()


def cached(key: Hashable, loader: Callable[[], T]) -> T:
    """``active_cache().get(key, loader)``."""
    return active_cache().get(key, loader)


def causal_lm(name: str, *, frozen: bool = False, trust_remote_code: bool = False):
    """``load_causal_lm(name)`` through the active cache: (model, tokenizer, ModelInfo).

    ``frozen=True`` turns off gradients (for models that only score or generate); a caller that
    trains must train a copy either way.
    """

    def load():
        from superalign.models.loading import load_causal_lm

        model, tok, info = load_causal_lm(name, trust_remote_code=trust_remote_code)
        if frozen:
            model.requires_grad_(False)
        return model, tok, info

    return cached(("causal_lm", name, frozen, trust_remote_code), load)


def backbone(name: str, *, frozen: bool = True, trust_remote_code: bool = False):
    """``load_backbone(name)`` (hidden states, no LM head) through the active cache: (model, tokenizer, ModelInfo)."""

    def load():
        from superalign.models.loading import load_backbone

        log.info("loading model %s", name)
        model, tok, info = load_backbone(name, trust_remote_code=trust_remote_code)
        if frozen:
            model.requires_grad_(False)
        return model, tok, info

    return cached(("backbone", name, frozen, trust_remote_code), load)
