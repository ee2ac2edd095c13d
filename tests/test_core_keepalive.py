"""The core's keepalive policy, on fake timelines (the time is passed in; no sockets, no sleeps).

Only silence counts; a quiet peer is pinged once until it is heard from; we also ping
when we have sent nothing (and not pinged) for an interval; a peer silent for interval +
timeout is dropped. The last test replays random timelines against a transcription of
the rules the server had before the policy moved into the core.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from easyrpc._core.keepalive import Action, Drop, Keepalive, Ping

INTERVAL, TIMEOUT = 10.0, 5.0


@dataclass
class Driver:
    """Drives a policy as a connection does: a ping it asks for is sent (a write)."""

    policy: Keepalive = field(default_factory=lambda: Keepalive(INTERVAL, TIMEOUT, 0.0))
    log: list[tuple[float, Action]] = field(default_factory=list)

    def tick(self, now: float, last_byte: float | None = None) -> Action:
        action = self.policy.due(now, last_byte)
        if action is not None:
            self.log.append((now, action))
        if isinstance(action, Ping):
            self.policy.sent(now)
        return action

    def run(self, until: float, step: float = 0.5, *, peer_every: float | None = None,
            we_send_every: float | None = None) -> list[tuple[float, Action]]:
        """Tick every *step* s up to *until*; the peer talks / we send every so often."""
        t = 0.0
        while t <= until and not any(isinstance(a, Drop) for _, a in self.log):
            if peer_every is not None and t > 0 and t % peer_every == 0:
                self.policy.received(t)
            if we_send_every is not None and t > 0 and t % we_send_every == 0:
                self.policy.sent(t)
            self.tick(t)
            t += step
        return self.log


def test_nothing_is_due_within_the_first_interval() -> None:
    d = Driver()
    assert d.run(9.5) == []


def test_a_silent_peer_is_pinged_once_then_dropped_after_interval_plus_timeout() -> None:
    """Ping at the interval (token 1), no second ping while it is pending, drop at 15 s."""
    assert Driver().run(30) == [(10.0, Ping(1)), (15.0, Drop(15.0))]


def test_a_peer_that_answers_is_pinged_every_interval_and_never_dropped() -> None:
    """Both sides quiet but the peer answers each ping: a ping per interval, tokens counting up."""
    d = Driver()
    t = 0.0
    while t <= 45:
        if d.tick(t) is not None:
            d.policy.received(t + 0.1)  # its pong
        t += 0.5
    assert d.log == [(10.0, Ping(1)), (20.0, Ping(2)), (30.0, Ping(3)), (40.0, Ping(4))]


def test_only_silence_counts_a_peer_streaming_to_us_is_never_dropped() -> None:
    """A peer sending all the time while we send nothing: we ping when quiet ourselves
    (every interval), never for its silence, and never drop it."""
    log = Driver().run(60, peer_every=1.0)
    assert log == [(10.0, Ping(1)), (20.0, Ping(2)), (30.0, Ping(3)), (40.0, Ping(4)), (50.0, Ping(5)), (60.0, Ping(6))]


def test_sending_a_lot_does_not_keep_a_silent_peer_alive() -> None:
    """We write every second (no quiet ping), the peer says nothing: one ping for its
    silence, then the drop."""
    assert Driver().run(30, we_send_every=1.0) == [(10.0, Ping(1)), (15.0, Drop(15.0))]


def test_both_talking_means_no_pings() -> None:
    assert Driver().run(60, peer_every=1.0, we_send_every=1.0) == []


def test_bytes_seen_by_the_transport_count_against_silence_but_do_not_answer_a_ping() -> None:
    """last_byte (a big frame arriving inside a read) keeps the peer from being dropped,
    but the ping stays pending: the next one is a quiet ping, an interval later."""
    d = Driver()
    assert d.tick(10.0) == Ping(1)
    for t in (12.0, 14.0, 16.0, 18.0):
        assert d.tick(t, last_byte=t - 0.5) is None
    assert d.policy.ping_pending
    assert d.tick(20.0, last_byte=19.5) == Ping(2)  # we sent nothing since 10 s
    assert d.tick(25.0, last_byte=19.5) is None  # silent 5.5 s: within the limit
    assert d.tick(34.5, last_byte=19.5) == Drop(15.0)


def test_a_byte_from_before_the_ping_does_not_answer_it() -> None:
    """received(t) answers only pings sent at or before t; it never moves last_recv back."""
    k = Keepalive(INTERVAL, TIMEOUT, 0.0)
    assert k.due(10.0) == Ping(1)
    k.received(9.0)
    assert k.ping_pending and k.last_recv == 9.0
    k.received(10.0)
    assert not k.ping_pending
    k.received(3.0)
    assert k.last_recv == 10.0


def test_silence_is_measured_from_the_latest_sign_of_life() -> None:
    k = Keepalive(INTERVAL, TIMEOUT, 0.0)
    k.received(4.0)
    assert k.silent(10.0) == 6.0
    assert k.silent(10.0, last_byte=7.0) == 3.0
    assert k.silent(10.0, last_byte=1.0) == 6.0


def test_changed_interval_and_timeout_apply_at_once() -> None:
    k = Keepalive(INTERVAL, TIMEOUT, 0.0)
    k.interval, k.timeout = 2.0, 1.0
    assert k.due(2.0) == Ping(1)
    assert k.due(2.5) is None
    assert k.due(3.0) == Drop(3.0)


def test_the_opening_counts_as_a_ping_for_the_quiet_rule() -> None:
    """Heard from at 9 s, nothing sent: the quiet ping waits a full interval from the start."""
    k = Keepalive(INTERVAL, TIMEOUT, 100.0)
    k.received(109.0)
    assert k.due(109.9) is None
    assert k.due(110.0) == Ping(1)


class _OldServerRules:
    """The server's keepalive as it was in ``ServerConnection._keepalive`` / ``alive``."""

    def __init__(self, interval: float, timeout: float, now: float) -> None:
        self.interval, self.timeout = interval, timeout
        self.last_seen = self.last_ping = self.last_sent = now
        self.pending = False
        self.token = 0

    def alive(self, now: float) -> None:
        self.last_seen = now
        self.pending = False

    def keepalive(self, now: float, frames_last_recv: float) -> Action:
        silent = now - max(self.last_seen, frames_last_recv)
        if silent >= self.interval + self.timeout:
            return Drop(silent)
        quiet = now - self.last_sent >= self.interval and now - self.last_ping >= self.interval
        if (silent >= self.interval and not self.pending) or quiet:
            self.pending = True
            self.token += 1
            self.last_ping = now
            return Ping(self.token)
        return None


@pytest.mark.parametrize("seed", range(40))
def test_same_actions_as_the_old_server_rules_on_random_timelines(seed: int) -> None:
    """Random interleavings of bytes heard (by alive() or only by the transport), writes
    and ticks, with random intervals: the policy asks for exactly what the old code did."""
    rng = random.Random(seed)
    interval, timeout = rng.choice([(10.0, 5.0), (1.0, 1.0), (0.5, 3.0), (20.0, 0.5)])
    old, new = _OldServerRules(interval, timeout, 0.0), Keepalive(interval, timeout, 0.0)
    now = frames_last_recv = 0.0
    for _ in range(400):
        now += rng.expovariate(3.0 / interval)
        event = rng.random()
        if event < 0.15:
            old.alive(now)
            new.received(now)
            frames_last_recv = now
        elif event < 0.3:
            frames_last_recv = now  # bytes of a big frame, read inside pop()
        elif event < 0.45:
            old.last_sent = now
            new.sent(now)
        else:
            expected = old.keepalive(now, frames_last_recv)
            assert new.due(now, frames_last_recv) == expected, (seed, now)
            if isinstance(expected, Ping):
                old.last_sent = now
                new.sent(now)
            elif isinstance(expected, Drop):
                return
