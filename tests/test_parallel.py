"""Tests for bddseg.parallel: one function over chunks of items, inline or in processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from bddseg import parallel
from bddseg.parallel import chunks, parallel_map


def _sum_chunk(chunk: list[int], offset: int = 0) -> tuple[int, int]:
    return os.getpid(), sum(chunk) + offset


def _fail_on_first(chunk: list[int], folder: str) -> int:
    """Fails on the chunk holding item 0; any other chunk leaves a file in ``folder``."""
    if 0 in chunk:
        raise ValueError("bad item 0")
    time.sleep(0.2)
    open(os.path.join(folder, str(chunk[0])), "w").close()
    return len(chunk)


def test_chunks_keep_order_and_bound_their_size():
    items = list(range(1000))
    parts = chunks(items, 2)
    assert [x for part in parts for x in part] == items
    assert max(map(len, parts)) == parallel.MAX_CHUNK
    assert chunks(list(range(10)), 2) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert chunks([], 4) == []
    assert chunks([1], 0) == [[1]]


def test_few_items_or_one_worker_run_inline():
    calls = []
    out = parallel_map(_sum_chunk, list(range(10)), 4, 100, meanwhile=lambda: calls.append(1))
    assert {pid for pid, _ in out} == {os.getpid()} and calls == [1]
    assert sum(s for _, s in out) == 45 + 100 * len(out)
    many = parallel_map(_sum_chunk, list(range(200)), 1)
    assert {pid for pid, _ in many} == {os.getpid()}


def test_the_pool_runs_every_chunk_in_order(monkeypatch):
    monkeypatch.setattr(parallel, "MIN_PARALLEL", 1)
    order = []
    items = list(range(200))
    pooled = parallel_map(_sum_chunk, items, 2, 7, meanwhile=lambda: order.append("meanwhile"))
    assert order == ["meanwhile"]
    assert os.getpid() not in {pid for pid, _ in pooled}
    assert [s for _, s in pooled] == [sum(c) + 7 for c in chunks(items, 2)]  # in chunk order


def test_a_shared_executor_is_reused_and_left_open(monkeypatch):
    monkeypatch.setattr(parallel, "MIN_PARALLEL", 1)
    with parallel.pool(2) as executor:
        first = parallel_map(_sum_chunk, list(range(100)), 2, executor=executor)
        second = parallel_map(_sum_chunk, list(range(100)), 2, executor=executor)
    assert [s for _, s in first] == [s for _, s in second]
    pids = {pid for pid, _ in first} | {pid for pid, _ in second}
    assert len(pids) <= 2 and os.getpid() not in pids


def test_an_error_stops_the_rest(monkeypatch, tmp_path):
    """The first of 16 chunks fails at once: the chunks not started yet are cancelled, not
    finished (those already handed to a worker still run)."""
    monkeypatch.setattr(parallel, "MIN_PARALLEL", 1)
    items = list(range(1000))
    assert len(chunks(items, 2)) == 16
    with pytest.raises(ValueError, match="bad item 0"):
        parallel_map(_fail_on_first, items, 2, str(tmp_path))
    assert len(list(tmp_path.iterdir())) < 10


def test_parallel_is_torch_free():
    code = "import sys, bddseg.parallel; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


# ---------------------------------------------------------------- Preloaded
needs_fork = pytest.mark.skipif(not parallel.can_preload(), reason="needs the fork start method")


@needs_fork
def test_preloaded_imports_there_and_answers_one_call():
    code = (
        "import sys\n"
        "from bddseg.parallel import Preloaded\n"
        "with Preloaded('colorsys') as helper:\n"
        "    assert helper.call('rgb_to_hsv', 1.0, 0.0, 0.0) == (0.0, 1.0, 1.0)\n"
        "sys.exit('colorsys' in sys.modules)\n"  # imported by the helper only
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


@needs_fork
def test_preloaded_hands_back_errors():
    with (
        parallel.Preloaded("json") as helper,
        pytest.raises(ValueError, match="Expecting property name"),
    ):
        helper.call("loads", "{bad")
    with parallel.Preloaded("no_such_module_here") as helper, pytest.raises(ModuleNotFoundError):
        helper.call("anything")


@needs_fork
def test_preloaded_closed_without_a_call_exits():
    helper = parallel.Preloaded("json")
    helper.close()
    assert not helper._proc.is_alive() and helper._proc.exitcode == 0
