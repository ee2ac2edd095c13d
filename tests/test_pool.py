"""The server's worker pool: bounded, named, ordered, joined on shutdown."""

from __future__ import annotations

import threading
import time

import pytest

from easyrpc._pool import WorkerPool


def test_pool_is_bounded_and_threads_are_named() -> None:
    pool = WorkerPool(3)
    release = threading.Event()
    started = threading.Semaphore(0)
    names: list[str] = []

    def task() -> None:
        names.append(threading.current_thread().name)
        started.release()
        release.wait(5)

    for _ in range(6):
        pool.submit(task)
    for _ in range(3):
        assert started.acquire(timeout=5)
    assert not started.acquire(timeout=0.2)  # only three run at once
    release.set()
    for _ in range(3):
        assert started.acquire(timeout=5)
    assert pool.shutdown(time.monotonic() + 5) == 0
    assert set(names) <= {"easyrpc-worker-1", "easyrpc-worker-2", "easyrpc-worker-3"}
    assert not [t for t in threading.enumerate() if t.name.startswith("easyrpc-worker")]


def test_run_returns_a_future_and_errors_do_not_kill_workers() -> None:
    pool = WorkerPool(1, name="test-pool-worker")
    assert pool.run(lambda: 41 + 1).result(5) == 42
    with pytest.raises(ZeroDivisionError):
        pool.run(lambda: 1 / 0).result(5)
    pool.submit(lambda: 1 / 0)  # logged, the worker carries on
    assert pool.run(lambda: "alive").result(5) == "alive"

    def ends_a_generator() -> None:
        raise GeneratorExit  # a BaseException, as a task's CancelledError is

    pool.submit(ends_a_generator)  # logged; the only worker must carry on too
    assert pool.run(lambda: "still alive").result(5) == "still alive"
    # the same worker, still alive: none died and was replaced
    assert [t.name for t in threading.enumerate() if t.name.startswith("test-pool-worker")] == ["test-pool-worker-1"]
    pool.shutdown(time.monotonic() + 5)
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)


def test_shutdown_waits_only_until_the_deadline() -> None:
    pool = WorkerPool(1)
    stop, running = threading.Event(), threading.Event()
    pool.submit(lambda: (running.set(), stop.wait(5)))
    assert running.wait(5)
    start = time.monotonic()
    assert pool.shutdown(time.monotonic() + 0.2) == 1  # still busy
    assert time.monotonic() - start < 1
    stop.set()
    for t in threading.enumerate():
        if t.name.startswith("easyrpc-worker"):
            t.join(5)
