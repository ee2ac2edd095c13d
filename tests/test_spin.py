"""Busy polling (``easyrpc._spin``): its policy on a pipe, then both ends on loopback.

On loopback the polling end and its peer run in different processes: within one
process they would share the GIL, which a polling thread holds most of the time.
"""

from __future__ import annotations

import asyncio
import os
import select
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from easyrpc import _spin
from easyrpc._spin import BusyPoll, busy_policy, check_window, forget_traffic
from easyrpc.aio import EasyRpcProxy as AioProxy
from easyrpc.proxy import EasyRpcProxy, engine_of
from easyrpc.server import EasyRpcServer

from .apps import build_app
from .conftest import SECRET, Served, loop_reader, server_readers
from .faults import ServerProcess


@dataclass
class Pipe:
    poller: select.poll  # watches the read end
    r: int
    w: int


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    r, w = os.pipe()
    poller = select.poll()
    poller.register(r, select.POLLIN)
    yield Pipe(poller, r, w)
    os.close(r)
    os.close(w)


@pytest.fixture(autouse=True)
def quiet_process() -> None:
    """No connection of this process has received data lately (other tests' did)."""
    forget_traffic()


def _polls_once_unshared(policy: BusyPoll, pipe: Pipe) -> bool:
    """Poll *pipe* (data waiting) until a wait polls, as one does once the time in which
    no connection polls (two received data together) has passed: True if within 1 s."""
    deadline = time.perf_counter() + 1.0
    while time.perf_counter() < deadline:
        if policy.poll(pipe.poller):
            return True
    return False


def _quiet_for_a_while() -> None:
    """Let more time pass than two connections' data may be apart to count as together."""
    start = time.perf_counter()
    while time.perf_counter() - start <= _spin._SHARED:
        pass


def _fresh(window: float) -> BusyPoll:
    policy = BusyPoll(window)
    policy.mark()  # as if its connection had just received data
    return policy


def test_a_wait_whose_data_is_there_hits(pipe: Pipe) -> None:
    policy = _fresh(0.01)
    os.write(pipe.w, b"x")
    assert policy.poll(pipe.poller)
    assert (policy.hits, policy.misses) == (1, 0)


def test_data_written_while_polling_ends_the_wait(pipe: Pipe) -> None:
    policy = _fresh(0.005)
    policy.window = 5.0  # far beyond what a user may set: a loaded machine must not make it miss
    writer = threading.Timer(0.001, os.write, (pipe.w, b"x"))
    start = time.perf_counter()
    writer.start()
    try:
        assert policy.poll(pipe.poller)
    finally:
        writer.join()
    assert time.perf_counter() - start < 2.5  # it stopped when the data came, not at the window's end
    assert (policy.hits, policy.misses) == (1, 0)


def _only(policy: BusyPoll) -> None:
    """As if *policy*'s connection were the only one of the process: other tests'
    connections still open may receive data (a keepalive) while a test runs."""
    forget_traffic()
    policy.mark()


def test_misses_back_off_exponentially_and_a_hit_resets_it(pipe: Pipe) -> None:
    policy = _fresh(0.0002)
    polled = []
    for i in range(40):
        before = policy.misses
        _only(policy)
        assert not policy.poll(pipe.poller)
        if policy.misses > before:
            polled.append(i)
    # after each miss the next 1, 2, 4, 8 ... waits go straight to sleep
    assert polled == [0, 2, 5, 10, 19, 36]
    while policy.skip:
        _only(policy)
        assert not policy.poll(pipe.poller)
    os.write(pipe.w, b"x")
    _only(policy)
    assert policy.poll(pipe.poller)
    os.read(pipe.r, 1)
    _only(policy)
    assert not policy.poll(pipe.poller)
    assert policy.skip == 1  # the back-off starts again from one wait


def test_back_off_is_capped(pipe: Pipe) -> None:
    policy = _fresh(0.00005)
    for _ in range(2000):
        _only(policy)
        policy.poll(pipe.poller)
    assert policy.backoff == _spin._MAX_SKIP
    assert policy.misses <= 8 + 2000 // (_spin._MAX_SKIP + 1) + 1


def test_no_polling_while_another_connection_received_data_last(pipe: Pipe) -> None:
    policy, other = _fresh(0.01), BusyPoll(0.01)
    _quiet_for_a_while()  # its data came a while ago
    os.write(pipe.w, b"x")
    other.mark()  # another connection of this process got data since
    assert other.poll(pipe.poller)  # not data together: no pause, the last one polls
    assert not policy.poll(pipe.poller)  # and only the last one
    assert (policy.hits, policy.misses, policy.skip) == (0, 0, 0)
    policy.mark()
    assert _polls_once_unshared(policy, pipe)
    assert (policy.hits, policy.misses) == (1, 0)


def test_no_polling_for_a_while_after_two_connections_received_data_together(pipe: Pipe) -> None:
    """Two busy connections: a thread polling for one would keep the other waiting."""
    policy, other = BusyPoll(0.01), BusyPoll(0.01)
    os.write(pipe.w, b"x")
    other.mark()
    policy.mark()  # within _SHARED of the other's data
    assert not policy.poll(pipe.poller)  # the last to get data, with data waiting: paused
    assert (policy.hits, policy.misses, policy.skip) == (0, 0, 0)
    assert _polls_once_unshared(policy, pipe)  # the other went quiet: polling again
    assert (policy.hits, policy.misses) == (1, 0)


def test_data_now_and_then_on_another_connection_does_not_stop_polling(pipe: Pipe) -> None:
    policy, other = BusyPoll(0.01), BusyPoll(0.01)
    other.mark()  # a keepalive on an idle connection, say
    _quiet_for_a_while()
    policy.mark()
    os.write(pipe.w, b"x")
    assert policy.poll(pipe.poller)


class HeldPoll:
    """A poll object that has no event until released, and says when it is first polled."""

    def __init__(self) -> None:
        self.polled = threading.Event()
        self.release = threading.Event()

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        self.polled.set()
        return [(0, select.POLLIN)] if self.release.is_set() else []


def test_one_thread_per_process_polls_at_a_time(pipe: Pipe) -> None:
    policy = _fresh(0.01)
    policy.window = 5.0  # the other thread polls until released (a loaded machine must not make it miss)
    held = HeldPoll()
    other = threading.Thread(target=policy.poll, args=(held,), name="test-poller")
    other.start()
    try:
        assert held.polled.wait(5)  # another thread is polling
        os.write(pipe.w, b"x")
        assert not policy.poll(pipe.poller)  # data waiting, yet this one does not poll
        assert (policy.hits, policy.misses) == (0, 0)
    finally:
        held.release.set()
        other.join(5)
    assert (policy.hits, policy.misses) == (1, 0)  # the other thread's wait
    assert policy.poll(pipe.poller)  # the slot is free again


@pytest.mark.parametrize("window", [-0.001, 0.02, float("nan"), float("inf"), True, "0.001", None])
def test_bad_windows_are_refused(window: object) -> None:
    with pytest.raises(ValueError, match="busy_poll"):
        check_window(window)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="busy_poll"):
        EasyRpcServer(None, "/ws/x", server_secret=SECRET, busy_poll=window)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="busy_poll"):
        EasyRpcProxy.create("127.0.0.1", 9, "/ws/x", server_secret=SECRET, busy_poll=window)  # type: ignore[arg-type]


def test_a_zero_window_means_no_policy() -> None:
    assert busy_policy(0) is None
    assert busy_policy(0.0001) is not None


# --- on loopback -------------------------------------------------------------------------
@pytest.fixture
def server_process() -> Iterator[ServerProcess]:
    server = ServerProcess(0, "busy_poll=0")  # the server never polls: the client's figures are its own
    yield server
    server.stop()


def test_sequential_blocking_calls_poll_for_their_replies(server_process: ServerProcess) -> None:
    with EasyRpcProxy.create("127.0.0.1", server_process.port, "/ws/test", server_secret=SECRET,
                             busy_poll=0.01) as proxy:
        for i in range(30):
            assert proxy.echo(i) == i
        policy = engine_of(proxy).busy_policy
        assert policy is not None and policy.hits >= 10, (policy.hits, policy.misses)


def test_sequential_aio_calls_poll_for_their_replies(server_process: ServerProcess) -> None:
    async def main() -> tuple[int, int]:
        proxy = await AioProxy.create("127.0.0.1", server_process.port, "/ws/test", server_secret=SECRET,
                                      busy_poll=0.01)
        try:
            for i in range(30):
                assert await proxy.echo(i) == i
            policy = engine_of(proxy).busy_policy
            assert policy is not None
            return policy.hits, policy.misses
        finally:
            await proxy.close()

    hits, misses = asyncio.run(main())
    assert hits >= 10, (hits, misses)


def test_an_aio_call_answered_while_polling_still_lets_other_tasks_run(server_process: ServerProcess) -> None:
    async def main() -> tuple[list[int], int]:
        proxy = await AioProxy.create("127.0.0.1", server_process.port, "/ws/test", server_secret=SECRET,
                                      busy_poll=0.01)
        turns = 0

        async def other_task() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        other = asyncio.create_task(other_task())
        await asyncio.sleep(0)
        starved = []  # calls during which the other task never ran
        try:
            for i in range(50):
                before = turns
                assert await proxy.echo(i) == i
                if turns == before:
                    starved.append(i)
            policy = engine_of(proxy).busy_policy
            assert policy is not None
            return starved, policy.hits
        finally:
            other.cancel()
            await proxy.close()

    starved, hits = asyncio.run(main())
    assert hits >= 10
    assert starved == []


def test_calls_of_a_slow_function_stop_polling(server_process: ServerProcess) -> None:
    with EasyRpcProxy.create("127.0.0.1", server_process.port, "/ws/test", server_secret=SECRET,
                             busy_poll=0.001) as proxy:
        policy = engine_of(proxy).busy_policy
        assert policy is not None
        for _ in range(50):  # bounded: a wait does not poll while another connection gets data
            proxy.slow(0.01)  # 10 ms: every poll of 1 ms misses
            if policy.misses:
                break
        assert policy.misses == 1 and policy.hits == 0, (policy.hits, policy.misses)
        for _ in range(12):
            proxy.slow(0.01)
        # the next 1, 2, 4 and 8 waits skip polling: it polls at 3 of these 12 calls at most
        assert policy.hits == 0 and policy.misses <= 4, (policy.hits, policy.misses)


def test_a_proxy_with_no_window_never_polls(server_process: ServerProcess) -> None:
    with EasyRpcProxy.create("127.0.0.1", server_process.port, "/ws/test", server_secret=SECRET,
                             busy_poll=0) as proxy:
        assert proxy.echo(1) == 1
        assert engine_of(proxy).busy_policy is None


_CLIENT = textwrap.dedent("""
    import sys
    from easyrpc.proxy import EasyRpcProxy
    with EasyRpcProxy.create("127.0.0.1", int(sys.argv[1]), "/ws/test", server_secret=sys.argv[2],
                             busy_poll=0) as p:
        for i in range(int(sys.argv[3])):
            assert p.echo(i) == i
        print("DONE", flush=True)
        sys.stdin.readline()  # stay connected until the test has looked
""")


def test_a_server_connection_polls_for_a_sequential_callers_next_call(
        serve: object, monkeypatch: pytest.MonkeyPatch) -> None:
    readers = server_readers(monkeypatch)
    app, rpc, _ = build_app(busy_poll=0.01)
    served: Served = serve(app, rpc)  # type: ignore[operator]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    client = subprocess.Popen([sys.executable, "-c", _CLIENT, str(served.port), SECRET, "30"], cwd=root,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout is not None and client.stdin is not None
        assert client.stdout.readline().strip() == "DONE"
        assert rpc.connection_count == 1
        [reader] = readers  # its connection's
        policy = reader.busy
        assert policy is not None and policy.hits >= 10, (policy.hits, policy.misses)
        client.stdin.close()
        assert client.wait(20) == 0
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(10)


def test_a_stale_readiness_never_blocks_the_event_loop(server_process: ServerProcess) -> None:
    """The loop may report the socket readable after poll_in_loop, earlier in the same
    turn, read what was there: the reader's callback must then return, not block in recv."""
    async def main() -> None:
        proxy = await AioProxy.create("127.0.0.1", server_process.port, "/ws/test", server_secret=SECRET,
                                      busy_poll=0.01)
        try:
            assert await proxy.echo(1) == 1
            reader = await loop_reader(proxy)  # the loop holds the reading role now
            reader.on_readable()  # nothing to read: returns at once
            for i in range(200):  # and calls go on, polled or not
                assert await proxy.echo(i) == i
        finally:
            await proxy.close()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_the_loop_does_not_poll_while_its_reading_role_is_being_taken_away(server_process: ServerProcess) -> None:
    """poll_in_loop polls under the role's lock: a revoke (which takes it) and the reader
    thread that then reads never share the connection's poll object with the loop."""
    async def main() -> None:
        proxy = await AioProxy.create("127.0.0.1", server_process.port, "/ws/test", server_secret=SECRET,
                                      busy_poll=0.01)
        try:
            engine = engine_of(proxy)
            loop = asyncio.get_running_loop()
            reader = await loop_reader(proxy)
            task = asyncio.ensure_future(proxy.slow(0.5))  # the one call in flight
            for _ in range(1000):  # bounded: until it is sent
                if engine.in_flight == 1:
                    break
                await asyncio.sleep(0)
            assert engine.in_flight == 1
            policy = engine.busy_policy
            assert policy is not None

            def state() -> tuple[int, int, int]:
                while policy.skip:  # the back-off of earlier waits: each wait skipped uses one up
                    _only(policy)
                    assert not policy.poll(select.poll())
                _only(policy)
                return policy.hits, policy.misses, policy.skip

            before = state()
            with reader.lock:  # held by a thread revoking the role
                engine.role.poll_in_loop(loop)
            assert (policy.hits, policy.misses, policy.skip) == before
            engine.role.poll_in_loop(loop)  # free: it polls (the reply is 0.5 s away: a miss)
            assert policy.misses == before[1] + 1
            assert await task == 0.5
        finally:
            await proxy.close()

    asyncio.run(asyncio.wait_for(main(), 20))
