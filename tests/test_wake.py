"""A thread's waker (easyrpc._wake): what blocking calls sleep on, a pipe or a lock."""

from __future__ import annotations

import gc
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from easyrpc._wake import ThreadWaker, thread_waker
from easyrpc.proxy import engine_of

from .apps import build_app
from .conftest import wait_for

PIPES = ThreadWaker().kind == "pipe"  # this platform's wakers sleep on pipes
KINDS = ["pipe", "lock"] if PIPES else ["lock"]


@pytest.fixture(params=KINDS)
def make_waker(request: pytest.FixtureRequest) -> Callable[[], ThreadWaker]:
    """Builds a ThreadWaker of the parametrised kind."""
    make = partial(ThreadWaker, pipe=request.param == "pipe")
    assert make().kind == request.param
    return make


class Flag:
    """What a test waits for (easyrpc._wake.Delivered)."""

    def __init__(self) -> None:
        self.delivered = False


def _blocked(native_id: int) -> bool:
    """True once the thread sleeps in the kernel (Linux /proc; elsewhere: assume so)."""
    try:
        with open(f"/proc/self/task/{native_id}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "S"
    except OSError:
        return True


def test_a_stale_wake_only_makes_a_wait_look_again(make_waker: Callable[[], ThreadWaker]) -> None:
    waker = make_waker()
    waker.wake_as_if_asleep()  # as if the thread had just stopped waiting for something
    waker.wake_as_if_asleep()  # wakes do not pile up
    if waker.kind == "pipe":
        assert select.select([waker.descriptors[0]], [], [], 0)[0]  # the stale wakes are in the pipe
    t0 = time.monotonic()
    assert not waker.wait_for(Flag(), 0.05)  # it waits out its time
    assert time.monotonic() - t0 >= 0.04
    done = Flag()
    done.delivered = True
    assert waker.wait_for(done, None)  # delivered already: no sleep


def test_a_sleeping_waiter_is_woken_by_another_thread(make_waker: Callable[[], ThreadWaker]) -> None:
    waker = make_waker()
    done = Flag()
    ident: list[int] = []
    woke: list[bool] = []

    def waiter() -> None:
        ident.append(threading.get_native_id())
        woke.append(waker.wait_for(done, None))  # no limit: the test's timeout bounds it

    t = threading.Thread(target=waiter, name="test-waiter")
    t.start()
    assert wait_for(lambda: bool(ident) and _blocked(ident[0]))
    done.delivered = True
    waker.wake()
    t.join(5)
    assert not t.is_alive() and woke == [True]


def _wait_for_a_timed_delivery(waker: ThreadWaker) -> float:
    """Wait (limit 10 s) for a flag another thread delivers after 0.05 s; the seconds taken."""
    done = Flag()

    def finish() -> None:
        done.delivered = True
        waker.wake()

    timer = threading.Timer(0.05, finish)
    timer.start()
    t0 = time.monotonic()
    try:
        assert waker.wait_for(done, 10.0)
    finally:
        timer.join(5)
    return time.monotonic() - t0


def test_a_wait_with_a_limit_ends_when_woken_before_the_limit(make_waker: Callable[[], ThreadWaker]) -> None:
    assert _wait_for_a_timed_delivery(make_waker()) < 5.0


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="no signals to threads here")
def test_a_signal_handler_running_during_a_wait_does_not_end_it(make_waker: Callable[[], ThreadWaker]) -> None:
    """A handler that returns leaves the wait asleep until its wake (no InterruptedError)."""
    waker = make_waker()
    done = Flag()
    handled: list[int] = []
    old = signal.signal(signal.SIGUSR1, lambda signum, frame: handled.append(signum))
    main = threading.get_ident()
    native = threading.get_native_id()

    def interrupt_then_finish() -> None:
        assert wait_for(lambda: _blocked(native))
        signal.pthread_kill(main, signal.SIGUSR1)
        assert wait_for(lambda: bool(handled))
        done.delivered = True
        waker.wake()

    t = threading.Thread(target=interrupt_then_finish, name="test-signaller")
    t.start()
    try:
        assert waker.wait_for(done, None)
    finally:
        t.join(5)
        signal.signal(signal.SIGUSR1, old)
    assert handled == [signal.SIGUSR1]


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="no signals to threads here")
@pytest.mark.parametrize("limit", [None, 10.0], ids=["no-limit", "with-limit"])
@pytest.mark.timeout(20)
def test_a_wait_inside_a_signal_handler_leaves_the_interrupted_wait_working(
        make_waker: Callable[[], ThreadWaker], limit: float | None) -> None:
    """The handler's wait takes the wake meant for the wait it interrupted; that one must
    still end when its condition holds, not sleep on."""
    waker = make_waker()
    outer = Flag()
    handler_waited: list[bool] = []

    class Counted(Flag):
        """Counts the handler's wait looking at it."""

        def __init__(self) -> None:
            super().__init__()
            self.looks = 0

        def __getattribute__(self, name: str) -> Any:
            if name == "delivered":
                object.__setattr__(self, "looks", object.__getattribute__(self, "looks") + 1)
            return object.__getattribute__(self, name)

    inner = Counted()

    def handler(signum: int, frame: object) -> None:
        handler_waited.append(waker.wait_for(inner, 10.0))

    old = signal.signal(signal.SIGUSR1, handler)
    main = threading.get_ident()
    native = threading.get_native_id()

    def drive() -> None:
        assert wait_for(lambda: _blocked(native))
        signal.pthread_kill(main, signal.SIGUSR1)
        # the handler's wait looks (at least twice) before it first sleeps
        assert wait_for(lambda: inner.looks >= 2 and _blocked(native))
        seen = inner.looks
        outer.delivered = True  # the outer wait's condition holds; its wake goes to the handler's wait
        waker.wake()
        assert wait_for(lambda: inner.looks > seen)  # the handler's wait took it and looked
        inner.delivered = True
        waker.wake()

    t = threading.Thread(target=drive, name="test-signaller")
    t.start()
    t0 = time.monotonic()
    try:
        assert waker.wait_for(outer, limit)
    finally:
        t.join(5)
        signal.signal(signal.SIGUSR1, old)
    assert handler_waited == [True]
    assert time.monotonic() - t0 < 5.0  # not the limit: it ended when the handler returned


def _fd_target(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "closed"


@pytest.mark.skipif(not PIPES or not os.path.isdir("/proc/self/fd"), reason="no pipe waker, or no /proc")
def test_a_pipe_waker_closes_both_ends_once_unreferenced() -> None:
    waker = ThreadWaker()
    fds = waker.descriptors
    pipes = [_fd_target(fd) for fd in fds]
    assert pipes[0] == pipes[1] and pipes[0].startswith("pipe:")
    del waker
    gc.collect()
    assert all(_fd_target(fd) != pipes[0] for fd in fds)  # closed (or the number reused by something else)


@pytest.mark.skipif(not PIPES, reason="no pipe waker here")
def test_a_process_out_of_descriptors_still_gets_a_working_waker(monkeypatch: pytest.MonkeyPatch) -> None:
    """One pipe per calling thread: with many threads and a low descriptor limit, a
    thread that cannot get one still makes calls."""

    def no_fd(*args: Any) -> tuple[int, int]:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(os, "pipe", no_fd)
    waker = ThreadWaker()
    assert waker.kind == "lock" and waker.descriptors == (-1, -1)
    _wait_for_a_timed_delivery(waker)


@pytest.mark.skipif(not PIPES, reason="no pipe waker here")
def test_wakes_never_block_the_waker_on_a_full_pipe() -> None:
    waker = ThreadWaker()
    for _ in range(80_000):  # more than a pipe holds (64 KiB on Linux): every wake writes a byte
        waker.wake_as_if_asleep()
    assert _wait_for_a_timed_delivery(waker) < 5.0  # the pending wakes only make it look again


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
    """A child sharing its parent's pipe could steal the parent's wakes."""
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
    engine = engine_of(p)
    p.echo(0)  # connected
    for _ in range(3):  # bounded
        # Another thread's call holds the reading role, so this thread's call sleeps on
        # its waker (a call that reads its own reply never sleeps).
        results: list[Any] = []
        leader = threading.Thread(target=lambda out=results: out.append(p.slow(0.5)), name="test-leader")
        leader.start()
        # its call is in flight and a thread other than this one holds the reading role
        assert wait_for(lambda: engine.in_flight == 1 and engine.reading_role != "none"
                        and engine.reading_thread != threading.get_ident())
        thread_waker().wake()  # stale: no call of this thread is waiting for it
        assert p.slow(0.05) == 0.05  # would be None if the stale wake ended the wait
        leader.join(5)
        assert results == [0.5]


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="no signals to threads here")
@pytest.mark.parametrize("nested", [False, True], ids=["handler-returns", "handler-calls"])
def test_a_blocking_call_survives_a_signal_handler_on_its_thread(serve: Any, open_proxy: Any, nested: bool) -> None:
    """A main-thread call with no time limit, asleep while another thread reads its
    reply: a signal handler (log rotation, say) must not fail it, and a handler that
    itself calls the proxy must leave it answered."""
    app, rpc, _ = build_app()
    p = open_proxy(serve(app, rpc))  # no time limit
    engine = engine_of(p)
    p.echo(0)
    handled: list[Any] = []

    def handler(signum: int, frame: object) -> None:
        handled.append(p.echo("inner") if nested else signum)

    old = signal.signal(signal.SIGUSR1, handler)
    results: list[Any] = []
    leader = threading.Thread(target=lambda out=results: out.append(p.slow(0.6)), name="test-leader")
    main = threading.get_ident()
    native = threading.get_native_id()

    def interrupt() -> None:
        assert wait_for(lambda: engine.in_flight == 2 and _blocked(native))
        signal.pthread_kill(main, signal.SIGUSR1)

    signaller = threading.Thread(target=interrupt, name="test-signaller")
    leader.start()
    try:
        # another thread holds the reading role, so this call sleeps on its waker
        assert wait_for(lambda: engine.in_flight == 1 and engine.reading_role != "none"
                        and engine.reading_thread != threading.get_ident())
        signaller.start()
        assert p.slow(0.3) == 0.3
    finally:
        signaller.join(5)
        leader.join(5)
        signal.signal(signal.SIGUSR1, old)
    assert handled == (["inner"] if nested else [signal.SIGUSR1])
    assert results == [0.6]
    # the thread that read the reply settles the call first and drops it from the table
    # right after (so an interruption in between never strands it): 0 once it has
    assert wait_for(lambda: engine.in_flight == 0, timeout=2)


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="no signals to threads here")
@pytest.mark.timeout(20)
def test_a_call_settled_by_a_signal_handler_on_its_own_thread_ends_the_wait() -> None:
    """The handler may read the waiting call's reply on the same thread: it must wake it."""
    from easyrpc._client import BlockingCall

    call = BlockingCall(None)  # type: ignore[arg-type]
    old = signal.signal(signal.SIGUSR1, lambda signum, frame: call.settle(42, None))
    main = threading.get_ident()
    native = threading.get_native_id()

    def interrupt() -> None:
        assert wait_for(lambda: _blocked(native))
        signal.pthread_kill(main, signal.SIGUSR1)

    t = threading.Thread(target=interrupt, name="test-signaller")
    t.start()
    try:
        assert call.wait_settled(None)  # no limit: without the wake it sleeps for ever
    finally:
        t.join(5)
        signal.signal(signal.SIGUSR1, old)
    assert call.outcome() == 42
