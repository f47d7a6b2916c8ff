"""Row operations on the batch KV cache: the buffered path (GrowingLayer) holds exactly what the
plain concatenating path holds, and decode steps after a row change append in place."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache

from kubechat.worker.padded_cache import (
    GrowingLayer,
    append_rows,
    keep_rows,
    use_growing_layers,
)


def _cache(rows: int, width: int, seed: int, growing: bool) -> DynamicCache:
    g = torch.Generator().manual_seed(seed)
    cache = DynamicCache()
    for layer in range(2):
        k = torch.randn(rows, 3, width, 4, generator=g)
        v = torch.randn(rows, 3, width, 4, generator=g)
        cache.update(k, v, layer)
    if growing:
        use_growing_layers(cache)
    return cache


def _mask(lengths: list[int], width: int) -> torch.Tensor:
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, width - n :] = 1
    return mask


def _kv(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]


def test_buffered_row_changes_match_the_plain_path_and_decode_appends_in_place() -> None:
    results = {}
    for growing in (False, True):
        running = _cache(4, 10, seed=1, growing=growing)
        mask = _mask([10, 7, 3, 9], 10)
        newcomers = _cache(2, 6, seed=2, growing=growing)
        mask = append_rows(running, mask, newcomers, _mask([6, 4], 6))
        assert mask.shape == (6, 10)
        # rows 0 and 3 finish: rows 1, 2, 4, 5 keep columns 3.. (row 1 needs 7 of 10)
        mask = keep_rows(running, mask, [1, 2, 4, 5])
        assert mask.shape == (4, 7)
        assert mask.sum(dim=1).tolist() == [7, 3, 6, 4]
        # a decode step appends one column to every layer
        step = torch.full((4, 3, 1, 4), 0.5)
        buffers = [getattr(layer, "_key_buffer", None) for layer in running.layers]
        for i in range(len(running.layers)):
            running.layers[i].update(step, step)
        results[growing] = _kv(running)
        if growing:
            for layer, buffer in zip(running.layers, buffers, strict=True):
                assert isinstance(layer, GrowingLayer)
                # the step was written into the buffer keep_rows made: no copy of the cache
                assert layer._key_buffer is buffer
                assert layer.keys.data_ptr() == buffer.data_ptr()
                assert layer._key_buffer.shape[-2] > layer.keys.shape[-2]
    for (k_plain, v_plain), (k_grow, v_grow) in zip(results[False], results[True], strict=True):
        assert k_grow.shape == (4, 3, 8, 4)
        assert torch.equal(k_plain, k_grow)
        assert torch.equal(v_plain, v_grow)
