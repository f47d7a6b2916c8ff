"""Row operations on a left-padded batch KV cache (transformers ``DynamicCache``).

A batch keeps one cache whose rows are left-aligned: row ``b`` holds its real tokens in the last
``mask[b].sum()`` columns and padding before them, and the attention mask hides the padding. These
helpers add rows (newcomers after their prefill), drop rows (finished or cancelled sequences) and
cut leading columns that no row uses any more, so memory follows the live sequences. With
:class:`GrowingLayer` layers a row change copies the cache once, into a buffer with spare columns
the following decode steps append into, not twice (a copy, then a new buffer at the next step);
``benchmarks/cache_row_ops.py`` prints what a cohort leaving and one joining cost.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


def _layers(cache: DynamicCache) -> list:
    return list(cache.layers)


def check_cache(cache: object) -> DynamicCache:
    """``cache`` as a DynamicCache whose layers hold plain key/value tensors, or TypeError."""
    if not isinstance(cache, DynamicCache):
        raise TypeError(f"the model returned a {type(cache).__name__}, not a DynamicCache")
    for layer in _layers(cache):
        if not isinstance(getattr(layer, "keys", None), torch.Tensor):
            raise TypeError(f"cache layer {type(layer).__name__} has no key tensor")
    return cache


def _pad_left(t: torch.Tensor, columns: int) -> torch.Tensor:
    if columns <= 0:
        return t
    pad = t.new_zeros(*t.shape[:-2], columns, t.shape[-1])
    return torch.cat([pad, t], dim=-2)


def pad_mask_left(mask: torch.Tensor, columns: int) -> torch.Tensor:
    """The attention mask with ``columns`` hidden columns in front."""
    if columns <= 0:
        return mask
    return torch.cat([mask.new_zeros(mask.shape[0], columns), mask], dim=1)


def append_rows(
    cache: DynamicCache, mask: torch.Tensor, new: DynamicCache, new_mask: torch.Tensor
) -> torch.Tensor:
    """Append the rows of ``new`` to ``cache`` in place (both left-padded to the longer one);
    returns the joint attention mask."""
    length, new_length = mask.shape[1], new_mask.shape[1]
    width = max(length, new_length)
    for layer, other in zip(_layers(cache), _layers(new), strict=True):
        if isinstance(layer, GrowingLayer):
            # one copy into a buffer with room: the next decode steps append without copying
            layer.keys, layer._key_buffer = _joined(layer.keys, other.keys, width)
            layer.values, layer._value_buffer = _joined(layer.values, other.values, width)
            continue
        layer.keys = torch.cat(
            [_pad_left(layer.keys, width - length), _pad_left(other.keys, width - new_length)]
        )
        layer.values = torch.cat(
            [_pad_left(layer.values, width - length), _pad_left(other.values, width - new_length)]
        )
    return torch.cat(
        [pad_mask_left(mask, width - length), pad_mask_left(new_mask, width - new_length)]
    )


def _joined(
    top: torch.Tensor, bottom: torch.Tensor, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``top`` and ``bottom`` stacked by rows and right-aligned to ``width`` columns, written
    once into a buffer with spare columns; returns (the live view, the buffer)."""
    rows = top.shape[0] + bottom.shape[0]
    buffer = top.new_empty(rows, *top.shape[1:-2], width + _room(width), top.shape[-1])
    for part, at in ((top, slice(0, top.shape[0])), (bottom, slice(top.shape[0], rows))):
        pad = width - part.shape[-2]
        buffer[at, ..., :pad, :].zero_()  # hidden by the mask, but must not be NaN
        buffer[at, ..., pad:width, :] = part
    return buffer[..., :width, :], buffer


def keep_rows(cache: DynamicCache, mask: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """Keep only ``rows`` (in that order) and cut the leading columns none of them uses;
    returns their attention mask."""
    index = torch.tensor(rows, dtype=torch.long, device=mask.device)
    mask = mask.index_select(0, index)
    used = mask.any(dim=0).nonzero()
    start = int(used[0]) if len(used) else mask.shape[1]
    for layer in _layers(cache):
        if isinstance(layer, GrowingLayer):
            layer.keys, layer._key_buffer = _kept(layer.keys, rows, start)
            layer.values, layer._value_buffer = _kept(layer.values, rows, start)
            continue
        layer.keys = layer.keys.index_select(0, index.to(layer.keys.device))[..., start:, :]
        layer.values = layer.values.index_select(0, index.to(layer.values.device))[..., start:, :]
    return mask[:, start:]


def _kept(t: torch.Tensor, rows: list[int], start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``rows`` of ``t`` from column ``start`` on, copied once into a buffer with spare
    columns; returns (the live view, the buffer)."""
    width = t.shape[-2] - start
    buffer = t.new_empty(len(rows), *t.shape[1:-2], width + _room(width), t.shape[-1])
    for to, row in enumerate(rows):
        buffer[to, ..., :width, :] = t[row, ..., start:, :]
    return buffer[..., :width, :], buffer


def positions(mask: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Position ids of the last ``new_tokens`` columns: each row counts its own real tokens."""
    return (mask.cumsum(dim=1) - 1).clamp(min=0)[:, -new_tokens:]


class GrowingLayer(DynamicLayer):
    """A DynamicLayer that appends into a buffer with spare columns instead of concatenating, so
    a decode step writes one column instead of copying the whole cache. ``keys``/``values`` stay
    views of the live columns; assigning other tensors to them (row edits) starts a new buffer."""

    _key_buffer: torch.Tensor | None = None
    _value_buffer: torch.Tensor | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized or self.keys is None or self.keys.numel() == 0:
            self.keys, self.values = key_states, value_states
            self.is_initialized = True
            self.device = key_states.device
            self._key_buffer = self._value_buffer = None
            return self.keys, self.values
        used, new = self.keys.shape[-2], key_states.shape[-2]
        buffer = self._key_buffer
        fresh = buffer is None or self.keys.data_ptr() != buffer.data_ptr()
        if fresh or used + new > buffer.shape[-2] or buffer.shape[0] != self.keys.shape[0]:
            room = _room(used + new)
            self._key_buffer = _with_room(self.keys, room)
            self._value_buffer = _with_room(self.values, room)
        self._key_buffer[..., used : used + new, :] = key_states
        self._value_buffer[..., used : used + new, :] = value_states
        self.keys = self._key_buffer[..., : used + new, :]
        self.values = self._value_buffer[..., : used + new, :]
        return self.keys, self.values


def _room(columns: int) -> int:
    """Spare columns a new buffer gets for a cache of ``columns`` columns."""
    return max(64, columns // 2)


def _with_room(t: torch.Tensor, room: int) -> torch.Tensor:
    buffer = t.new_empty(*t.shape[:-2], t.shape[-2] + room, t.shape[-1])
    buffer[..., : t.shape[-2], :] = t
    return buffer


def use_growing_layers(cache: DynamicCache) -> None:
    """Switch the plain dynamic layers of ``cache`` to :class:`GrowingLayer` (same state)."""
    for layer in cache.layers:
        if type(layer) is DynamicLayer:
            layer.__class__ = GrowingLayer
