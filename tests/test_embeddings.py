"""The embedding cache: hits, misses on a changed image or model, resume, corrupt entries, bound."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from samdsk_plan.proposals.embeddings import CACHE_ENV, EmbeddingCache, default_root

SHAPE = (4, 8, 8)
MODEL = {"name": "m", "weights": "abc", "preprocessing": 1}
ENTRY_BYTES = 128 + 2 * int(np.prod(SHAPE))  # .npy header + float16 payload


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((16, 12), dtype=np.float32)


def _embedding(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(100 + seed).standard_normal(SHAPE).astype(np.float32)


def test_hit_returns_the_stored_float16_embedding(tmp_path):
    cache = EmbeddingCache(tmp_path, MODEL, 1.0, SHAPE)
    assert cache.get(_image()) is None
    assert cache.put(_image(), _embedding())
    found = cache.get(_image())
    assert found.dtype == np.float16 and np.array_equal(found, _embedding().astype(np.float16))
    assert (cache.hits, cache.misses) == (1, 1)
    # a new cache object (a later round or run) finds it too, and counts the folder's bytes
    again = EmbeddingCache(tmp_path, MODEL, 1.0, SHAPE)
    assert again.get(_image()) is not None and again.used == cache.used == ENTRY_BYTES


def test_a_changed_image_or_model_misses(tmp_path):
    cache = EmbeddingCache(tmp_path, MODEL, 1.0, SHAPE)
    cache.put(_image(), _embedding())
    changed = _image().copy()
    changed[3, 4] += 1e-3
    assert cache.get(changed) is None
    assert cache.get(_image().astype(np.float64)) is None  # same values, other dtype: other bytes
    for other in ({**MODEL, "weights": "abd"}, {**MODEL, "preprocessing": 2}):
        assert EmbeddingCache(tmp_path, other, 1.0, SHAPE).get(_image()) is None


def test_leftover_temporary_files_of_a_killed_run_are_ignored(tmp_path):
    cache = EmbeddingCache(tmp_path, MODEL, 1.0, SHAPE)
    path = cache.path(cache.key(_image()))
    path.parent.mkdir(parents=True)
    (path.parent / f".{path.name}.x1y2.tmp").write_bytes(b"half an embedding")
    resumed = EmbeddingCache(tmp_path, MODEL, 1.0, SHAPE)
    assert resumed.used == 0 and resumed.get(_image()) is None
    assert resumed.put(_image(), _embedding()) and resumed.get(_image()) is not None


@pytest.mark.parametrize("content", [b"", b"not numpy", "wrong shape"])
def test_an_unreadable_entry_is_recomputed_with_a_warning(tmp_path, caplog, content):
    cache = EmbeddingCache(tmp_path, MODEL, 1.0, SHAPE)
    cache.put(_image(), _embedding())
    path = cache.path(cache.key(_image()))
    if content == "wrong shape":
        np.save(path, np.zeros((2, 2), np.float16))
    else:
        path.write_bytes(content)
    reread = EmbeddingCache(tmp_path, MODEL, 1.0, SHAPE)
    with caplog.at_level(logging.WARNING):
        assert reread.get(_image()) is None
    assert f"{path}: unreadable embedding" in caplog.text and not path.exists()
    assert reread.put(_image(), _embedding()) and reread.get(_image()) is not None


def test_the_bound_stops_caching_and_says_so_once(tmp_path, caplog):
    cache = EmbeddingCache(tmp_path, MODEL, 2.5 * ENTRY_BYTES / 1e9, SHAPE)  # room for two entries
    with caplog.at_level(logging.WARNING):
        stored = [cache.put(_image(i), _embedding(i)) for i in range(4)]
    assert stored == [True, True, False, False]
    assert caplog.text.count("its bound (--embedding-cache-gb)") == 1
    assert cache.get(_image(1)) is not None and cache.get(_image(2)) is None
    assert EmbeddingCache(tmp_path, MODEL, 0.0, SHAPE).put(_image(5), _embedding()) is False


def test_default_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert default_root() == tmp_path / "mine"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_root() == tmp_path / "xdg" / "samdsk-plan" / "embeddings"
