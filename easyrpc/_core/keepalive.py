"""Keepalive without I/O: when to ping a quiet peer and when to drop a silent one.

One policy for both ends. The driver tells :class:`Keepalive` when it heard from the
peer (:meth:`~Keepalive.received`) and when it last sent (:meth:`~Keepalive.sent`), and
asks it now and then what is due (:meth:`~Keepalive.due`): nothing (None), a
:class:`Ping` to send (easyrpc's ``ping`` message, with its token), or a :class:`Drop`.

The rules. Only silence counts: any byte from the peer is a sign of life, a big message
still arriving included (its sender's pong would wait behind it), so a connection busy
with one long transfer is never dropped. We ping when the peer has been silent for
``interval`` and no ping of ours is pending, and also when we have sent nothing for
``interval`` and not pinged for ``interval`` either, so that a peer sending us a big
message hears from us while its own ping waits behind that message. A peer silent for
``interval + timeout`` is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Keepalive", "Ping", "Drop", "Action"]


@dataclass(frozen=True, slots=True)
class Ping:
    """Send a ping message carrying *token*."""

    token: int


@dataclass(frozen=True, slots=True)
class Drop:
    """Drop the connection: the peer has been silent for *silent* seconds."""

    silent: float


Action = Ping | Drop | None  # what Keepalive.due asks for; None: nothing now


class Keepalive:
    """The keepalive state of one connection, driven with the time passed in.

    *interval* and *timeout* are in seconds (attributes; they may be changed); *now* is
    when the connection opened, on the driver's clock (``time.monotonic()``). Not
    thread-safe: each field is one assignment, so a driver that reports from several
    threads sees at worst a late ping, as with plain attributes.
    """

    __slots__ = ("interval", "timeout", "last_recv", "last_sent", "last_ping", "ping_pending", "ping_token")

    def __init__(self, interval: float, timeout: float, now: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self.last_recv = now  # when the peer was last heard
        self.last_sent = now  # when a write of ours last went out
        self.last_ping = now  # when we last pinged (the opening counts as one)
        self.ping_pending = False  # a ping of ours that the peer has not answered by talking
        self.ping_token = 0  # the last ping's token

    def received(self, now: float) -> None:
        """The peer was heard at *now* (bytes or a message): it is alive, and a ping sent
        before *now* is answered."""
        if now > self.last_recv:
            self.last_recv = now
        if now >= self.last_ping:
            self.ping_pending = False

    def sent(self, now: float) -> None:
        """A write of ours went out at *now*."""
        self.last_sent = now

    def silent(self, now: float, last_byte: float | None = None) -> float:
        """How long the peer has been silent at *now*; see :meth:`due` for *last_byte*."""
        heard = self.last_recv if last_byte is None or last_byte < self.last_recv else last_byte
        return now - heard

    def due(self, now: float, last_byte: float | None = None) -> Action:
        """What is due at *now*: a :class:`Ping` (recorded as sent: pending, with the next
        token), a :class:`Drop`, or None.

        *last_byte*: when the transport last received a byte, if it tracks that apart
        from :meth:`received` (a big frame received inside a read, say). It counts as a
        sign of life against silence, but does not answer a pending ping.
        """
        silent = self.silent(now, last_byte)
        interval = self.interval
        if silent >= interval + self.timeout:
            return Drop(silent)
        if (silent >= interval and not self.ping_pending) or (
                now - self.last_sent >= interval and now - self.last_ping >= interval):
            self.ping_pending = True
            self.ping_token += 1
            self.last_ping = now
            return Ping(self.ping_token)
        return None
