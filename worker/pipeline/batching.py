"""GPU memory guard: run a batch in chunks, halving the chunk size when CUDA runs out of memory.

A long call's segments, or a big model on a shared card, can exceed memory for one batch size and
fit at half of it; crashing the worker would only redeliver the same batch to the same fate. The
size that worked is remembered so later batches do not pay for the failure again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Out = TypeVar("Out")


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError)


def _free_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class OomGuard:
    """Remembers the largest chunk size that fits; `run` maps `fn` over chunks of `items`."""

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max(1, int(max_batch))

    def run(self, fn: Callable[[Sequence[Item]], list[Out]], items: Sequence[Item]) -> list[Out]:
        out: list[Out] = []
        start = 0
        while start < len(items):
            size = min(self.max_batch, len(items) - start)
            chunk = items[start: start + size]
            try:
                results = fn(chunk)
            except Exception as exc:
                if not _is_oom(exc) or size == 1:
                    raise
                _free_cache()
                self.max_batch = max(1, size // 2)
                log.warning("CUDA out of memory at batch %d; retrying with %d", size, self.max_batch)
                continue
            if len(results) != len(chunk):
                raise RuntimeError(f"backend returned {len(results)} results for {len(chunk)} inputs")
            out.extend(results)
            start += size
        return out
