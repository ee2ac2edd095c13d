"""A thread's waker (easyrpc._wake): what blocking calls sleep on, eventfd or lock."""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from easyrpc import _wake
from easyrpc._wake import ThreadWaker, thread_waker

from .apps import build_app
from .conftest import wait_for

KINDS = ["eventfd", "lock"] if _wake._EVENTFD else ["lock"]


@pytest.fixture(params=KINDS)
def make_waker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[type[ThreadWaker]]:
    """The ThreadWaker class, set to build the parametrised kind."""
    monkeypatch.setattr(_wake, "_EVENTFD", request.param == "eventfd")
    yield ThreadWaker


def test_a_wake_before_sleep_makes_the_sleep_return_at_once(make_waker: type[ThreadWaker]) -> None:
    waker = make_waker()
    waker.wake()
    waker.wake()  # wakes do not pile up into more than one early return per sleep
    t0 = time.monotonic()
    waker.sleep(5.0)
    assert time.monotonic() - t0 < 1.0
    t0 = time.monotonic()
    waker.sleep(0.05)  # nothing pending now: it waits out its time
    assert time.monotonic() - t0 >= 0.04


def test_a_sleeper_is_woken_by_another_thread(make_waker: type[ThreadWaker]) -> None:
    waker = make_waker()
    asleep = threading.Event()
    woke: list[float] = []

    def sleeper() -> None:
        asleep.set()
        t0 = time.monotonic()
        waker.sleep(None)  # no limit: only the wake ends it (the test's timeout bounds it)
        woke.append(time.monotonic() - t0)

    t = threading.Thread(target=sleeper, name="test-sleeper")
    t.start()
    assert asleep.wait(5)
    waker.wake()
    t.join(5)
    assert not t.is_alive() and len(woke) == 1


def test_sleep_with_a_limit_returns_when_woken_before_the_limit(make_waker: type[ThreadWaker]) -> None:
    waker = make_waker()
    timer = threading.Timer(0.05, waker.wake)
    timer.start()
    t0 = time.monotonic()
    try:
        waker.sleep(10.0)
    finally:
        timer.join(5)
    assert time.monotonic() - t0 < 5.0


@pytest.mark.skipif(not _wake._EVENTFD, reason="eventfd is Linux-only; the lock kind holds no descriptor")
def test_an_eventfd_waker_closes_its_descriptor_once_unreferenced() -> None:
    waker = ThreadWaker()
    fd = waker._fd
    os.fstat(fd)  # open
    del waker
    gc.collect()
    with pytest.raises(OSError):
        os.fstat(fd)


@pytest.mark.skipif(not _wake._EVENTFD, reason="eventfd is Linux-only")
def test_a_process_out_of_descriptors_still_gets_a_working_waker(monkeypatch: pytest.MonkeyPatch) -> None:
    """One eventfd per calling thread: with many threads and a low descriptor limit, a
    thread that cannot get one still makes calls."""

    def no_fd(*args: Any) -> int:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(os, "eventfd", no_fd)
    waker = ThreadWaker()
    assert waker._fd < 0
    timer = threading.Timer(0.05, waker.wake)
    timer.start()
    try:
        waker.sleep(10.0)
    finally:
        timer.join(5)
    waker.wake()
    waker.sleep(None)  # the pending wake: returns at once


def test_each_thread_has_its_own_waker_reused_by_its_calls() -> None:
    mine = thread_waker()
    assert thread_waker() is mine
    theirs: list[ThreadWaker] = []
    t = threading.Thread(target=lambda: theirs.append(thread_waker()), name="test-waker-owner")
    t.start()
    t.join(5)
    assert len(theirs) == 1 and theirs[0] is not mine


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_gets_wakers_of_its_own() -> None:
    """A child sharing its parent's eventfd could steal the parent's wakes."""
    parent = thread_waker()
    pid = os.fork()
    if pid == 0:  # the child: exit at once, status 0 if it got a new waker
        try:
            os._exit(0 if thread_waker() is not parent else 1)
        finally:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("limit", [10.0, None], ids=["with-limit", "no-limit"])
def test_a_stale_wake_does_not_end_a_blocking_call_early(serve: Any, open_proxy: Any, limit: float | None) -> None:
    """A wake left over on the thread (meant for a call it stopped waiting for) makes the
    next call look again, not return before its reply."""
    app, rpc, _ = build_app()
    p = open_proxy(serve(app, rpc), timeout=limit)
    engine = p._engine
    p.echo(0)  # connected
    for _ in range(3):  # bounded
        # Another thread's call holds the reading role, so this thread's call sleeps on
        # its waker (a call that reads its own reply never sleeps).
        results: list[Any] = []
        leader = threading.Thread(target=lambda out=results: out.append(p.slow(0.5)), name="test-leader")
        leader.start()
        # its call is in flight and a thread other than this one holds the reading role
        assert wait_for(lambda: engine.in_flight == 1 and engine._role not in (None, threading.get_ident()))
        thread_waker().wake()  # stale: no call of this thread is waiting for it
        assert p.slow(0.05) == 0.05  # would be None if the stale wake ended the wait
        leader.join(5)
        assert results == [0.5]
