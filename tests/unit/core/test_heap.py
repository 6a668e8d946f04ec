"""A solver process keeps the memory it freed for its next task (qxedge.core.heap.keep_freed_memory)."""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest

from qxedge.core import heap
from qxedge.testing.solver_doubles import given_back_after_freeing

MiB = 1 << 20


def _keep_then_free(keep_bytes: int, queue: Any) -> None:
    queue.put((heap.keep_freed_memory(keep_bytes), given_back_after_freeing()))


def given_back(keep_bytes: int) -> tuple[bool, int]:
    """In a fresh child: whether keeping ``keep_bytes`` applied, and how much of 64 MiB freed went back.
    Spawned, not forked: a fork inherits this process's malloc thresholds, which glibc raises as large
    blocks are freed (after the pool tests, 64 MiB freed stayed without any limit set)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.SimpleQueue()
    child = ctx.Process(target=_keep_then_free, args=(keep_bytes, queue))
    child.start()
    result: tuple[bool, int] = queue.get()
    child.join()
    return result


def test_freed_memory_stays_with_the_process_when_kept() -> None:
    applied, returned = given_back(512 * MiB)
    if not applied:
        pytest.skip("no glibc mallopt here")
    assert returned < 8 * MiB  # the 64 MiB freed stay for the next allocations
    default_applied, default_returned = given_back(0)
    assert not default_applied and default_returned > 32 * MiB  # glibc's default hands most of it back


def test_nothing_is_kept_for_a_limit_of_zero() -> None:
    assert heap.keep_freed_memory(0) is False
