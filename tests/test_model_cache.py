"""The shared model cache: loads once, bounded LRU, scoped release."""

from __future__ import annotations

import gc
import weakref

import pytest

from superalign.models.cache import ModelCache, active_cache, backbone, causal_lm, model_scope, process_cache


class Thing:
    """A stand-in for a loaded model (weak-referenceable)."""


def test_get_loads_once_and_evicts_least_recently_used():
    cache = ModelCache(max_items=2)
    calls = []

    def loader(name):
        def load():
            calls.append(name)
            return Thing()
        return load

    a = cache.get("a", loader("a"))
    assert cache.get("a", loader("a")) is a and calls == ["a"]
    cache.get("b", loader("b"))
    cache.get("a", loader("a"))  # a is now the most recently used
    cache.get("c", loader("c"))  # evicts b
    assert "b" not in cache and "a" in cache and "c" in cache and len(cache) == 2
    cache.get("b", loader("b"))
    assert calls == ["a", "b", "c", "b"]
    assert cache.loads == 4 and cache.hits == 2
    cache.clear()
    assert len(cache) == 0


def test_bad_bound_is_refused():
    with pytest.raises(ValueError, match="max_items"):
        ModelCache(max_items=0)


def test_scope_releases_its_models_and_nests():
    with model_scope() as cache:
        assert active_cache() is cache and cache is not process_cache()
        obj = cache.get("m", Thing)
        ref = weakref.ref(obj)
        with model_scope() as inner:  # an inner scope shares the outer cache and releases nothing
            assert inner is cache
            assert inner.get("m", Thing) is obj
        assert "m" in cache
        del obj
    gc.collect()
    assert ref() is None, "the scope's model outlived the scope"
    assert active_cache() is process_cache()


def test_scope_releases_on_error():
    with pytest.raises(RuntimeError):
        with model_scope() as cache:
            cache.get("m", Thing)
            raise RuntimeError("boom")
    assert len(cache) == 0 and active_cache() is process_cache()


def test_loading_helpers_share_by_name_and_options():
    with model_scope() as cache:
        m1, tok, info = causal_lm("tiny-llama")
        assert causal_lm("tiny-llama")[0] is m1
        frozen = causal_lm("tiny-llama", frozen=True)[0]
        assert frozen is not m1 and not any(p.requires_grad for p in frozen.parameters())
        assert any(p.requires_grad for p in m1.parameters())
        b = backbone("tiny-bert")[0]
        assert not any(p.requires_grad for p in b.parameters())
        assert len(cache) == 3
    assert len(cache) == 0


def test_w2s_model_pool_uses_the_cache():
    from superalign.w2s.config import ModelConfig
    from superalign.w2s.stages import ModelPool

    pool = ModelPool(ModelCache(max_items=1))
    cfg = ModelConfig(model="tiny-bert", regime="probe")
    first = pool.get(cfg)[0]
    assert pool.get(cfg)[0] is first and pool.cache.loads == 1
    with model_scope() as cache:  # a pool over the run's cache shares what the helpers load
        shared = ModelPool(cache).get(cfg)[0]
        assert backbone("tiny-bert")[0] is shared
