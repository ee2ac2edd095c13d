"""Call metadata, the call context and interceptors: seeing inside calls (issue #24).

Every call may carry *metadata*, a small mapping of strings to strings (at most 32 keys
of 1 to 64 characters, values of at most 4096), sent in the call message: a proxy's
default (``EasyRpcProxy.create(..., metadata={...})``) merged with the call's own
(``p.f.with_metadata({...})(...)``). A served function reads it, with the function's
name, the caller's connection id and address and the time left, through
:func:`easyrpc.server.call_context`; a server relaying a call to another server passes
it on.

An :class:`Interceptor` sees each call on the side it is installed on (a server:
``EasyRpcServer(..., interceptors=[...])``; a proxy or a server's link:
``create(..., interceptors=[...])``): :meth:`Interceptor.before` when the call starts
(it may add metadata, or refuse the call by raising :class:`~easyrpc.CallRefused`), and
:meth:`Interceptor.after` once with its :class:`Outcome`. A stream is seen when it starts
and when it ends. Example: authorization by a role carried in metadata::

    class RequireRole(Interceptor):
        def before(self, call: CallInfo) -> None:
            if call.function.startswith('admin_') and call.metadata.get('role') != 'admin':
                raise CallRefused(f'{call.function} needs the admin role')

    rpc = EasyRpcServer(app, '/ws/a', 'secret', interceptors=[RequireRole()])
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

from ._core.identity import ON_BEHALF_OF, caller_identity
from .exceptions import CallRefused, RemoteError

__all__ = ["CallInfo", "Interceptor", "Outcome", "call_context"]

_log = logging.getLogger("easyrpc.interceptors")


class CallInfo:
    """One call, as interceptors (and, on a server, the called function) see it.

    Attributes:
        side: ``'server'`` for a call a server runs, ``'client'`` for one a proxy (or a
            server's link) sends.
        function: the function's name.
        namespace: the namespace (or group) the connection uses.
        metadata: the call's metadata. An interceptor's ``before`` may change it: on a
            client, what is sent; on a server, what the function (and the next server,
            for a relayed call) sees.
        stream: True for a generator's stream.
        connection_id: the id the server gave the connection (on a client: the
            proxy's current connection, ``''`` while disconnected).
        peer: on a server, the caller's address (``'host:port'``); on a client, the
            server's URL.
        deadline: ``time.monotonic()`` by which the caller gives up (None: no limit).
        parent: on a client, the server call this call is made for (the call a served
            function runs, or that a link relays), else None.
        identity: who the call is for. On a server: the identity the connection proved
            (a client id, or its TLS certificate's subject), or the caller a trusted relay
            names for it (see *relay*); None for a client with the shared secret only.
            On a client: its own ``client_id``.
        relay: on a server, the identity of the trusted relay that named *identity*
            (the connection's own), else None.
        state: a dict for interceptors to keep per-call values in (a span, say), from
            ``before`` to ``after``.
    """

    __slots__ = ("side", "function", "namespace", "metadata", "stream", "connection_id", "peer", "deadline",
                 "parent", "identity", "relay", "_state")

    def __init__(self, side: Literal["client", "server"], function: str, namespace: str, metadata: dict[str, str],
                 *, stream: bool = False, connection_id: str = "", peer: str = "", deadline: float | None = None,
                 parent: CallInfo | None = None, identity: str | None = None, relay: str | None = None) -> None:
        self.side = side
        self.function = function
        self.namespace = namespace
        self.metadata = metadata
        self.stream = stream
        self.connection_id = connection_id
        self.peer = peer
        self.deadline = deadline
        self.parent = parent
        self.identity = identity
        self.relay = relay
        self._state: dict[str, Any] | None = None

    @property
    def state(self) -> dict[str, Any]:
        """Per-call values kept by interceptors (created on first use)."""
        if self._state is None:
            self._state = {}
        return self._state

    def time_left(self) -> float | None:
        """Seconds until the caller gives up (may be negative), or None without a limit."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def __repr__(self) -> str:
        return (f"<CallInfo {self.side} {self.namespace}/{self.function} metadata={self.metadata!r} "
                f"connection={self.connection_id!r} peer={self.peer!r} identity={self.identity!r}>")


@dataclass(slots=True)
class Outcome:
    """How a call ended, as :meth:`Interceptor.after` is told.

    Attributes:
        error: None if the call succeeded, else what the caller got (on a server, a
            :class:`~easyrpc.RemoteError` describing the reply; on a client, the
            exception raised to the caller).
        cancelled: the caller cancelled the call (or stopped consuming its stream), or
            the connection ended before the reply.
        duration: seconds from ``before`` to the end.
    """

    error: BaseException | None
    cancelled: bool
    duration: float

    @property
    def ok(self) -> bool:
        """The call succeeded."""
        return self.error is None and not self.cancelled

    @property
    def error_type(self) -> str | None:
        """``'cancelled'``, the error's type name (a remote one's remote type), or None."""
        if self.cancelled:
            return "cancelled"
        if self.error is None:
            return None
        if isinstance(self.error, RemoteError):
            return self.error.remote_type
        return type(self.error).__name__


class Interceptor:
    """Sees each call; subclass it and override either hook (both do nothing here).

    Hooks run on whichever thread handles the call (on a server, the one reading the
    connection, for ``before``): keep them short and never block. An exception other
    than :class:`~easyrpc.CallRefused` raised by ``before`` fails the call with that
    error; one raised by ``after`` is logged and ignored.
    """

    def before(self, call: CallInfo) -> None:
        """The call starts. Change ``call.metadata`` to add metadata; raise
        :class:`~easyrpc.CallRefused` to refuse it (the function does not run)."""

    def after(self, call: CallInfo, outcome: Outcome) -> None:
        """The call ended (exactly once per call whose ``before`` returned)."""

    def running(self, call: CallInfo) -> AbstractContextManager[object] | None:
        """(Servers.) A context the function runs in, entered on the thread or task that
        runs it, around each run of its code: the whole call of a plain or ``async def``
        function, each step of a generator. The OpenTelemetry interceptor makes the
        call's span the current one there, so spans the function starts are its
        children. None (the default): nothing to enter. An exception from this hook or
        from entering or leaving the context is logged; the call goes on."""
        return None


def checked(interceptors: Sequence[Interceptor]) -> tuple[Interceptor, ...]:
    """*interceptors* as a tuple; TypeError if one is not an :class:`Interceptor`."""
    icps = tuple(interceptors)
    if not all(isinstance(i, Interceptor) for i in icps):
        raise TypeError("interceptors must be easyrpc.interceptors.Interceptor instances")
    return icps


def _gives_context(icp: Interceptor) -> bool:
    # (an object with before and after only, not a subclass, works too: it gives none)
    return getattr(type(icp), "running", Interceptor.running) is not Interceptor.running


# --- running interceptors ----------------------------------------------------------------
class Observed:
    """One call's interceptors at work: ``before`` has run; :meth:`end` runs ``after`` once."""

    __slots__ = ("info", "interceptors", "started", "_claim", "around")

    def __init__(self, info: CallInfo, interceptors: Sequence[Interceptor]) -> None:
        self.info = info
        self.interceptors = interceptors
        self.started = time.perf_counter()
        self._claim = [True]  # popped once, by whichever thread ends the call first
        # those with a context for the function (servers only; most have none: no cost)
        self.around = tuple(i for i in interceptors if _gives_context(i)) if info.side == "server" else ()

    def running(self) -> AbstractContextManager[object]:
        """The contexts of :meth:`Interceptor.running`, entered in order (left in reverse)."""
        return _Around(self) if self.around else nullcontext()

    def end(self, error: BaseException | None = None, cancelled: bool = False) -> None:
        """The call ended (idempotent: the first end counts)."""
        try:
            self._claim.pop()
        except IndexError:
            return
        _after(self.interceptors, self.info, Outcome(error, cancelled, time.perf_counter() - self.started))


class _Around:
    """Enters the interceptors' contexts around one run of a served function's code;
    a failing hook or context is logged and skipped, never the call's failure."""

    __slots__ = ("_obs", "_entered")

    def __init__(self, obs: Observed) -> None:
        self._obs = obs
        self._entered: list[AbstractContextManager[object]] = []

    def __enter__(self) -> None:
        for icp in self._obs.around:
            try:
                cm = icp.running(self._obs.info)
                if cm is not None:
                    cm.__enter__()
                    self._entered.append(cm)
            except Exception:  # noqa: BLE001 - an interceptor's bug must not fail the call
                _log.exception("interceptor %r: running() failed", icp)

    def __exit__(self, *exc: object) -> None:
        while self._entered:
            cm = self._entered.pop()
            try:
                cm.__exit__(None, None, None)  # the function's own error is the call's, not theirs
            except Exception:  # noqa: BLE001 - as above
                _log.exception("interceptor context %r failed to exit", cm)


def _after(interceptors: Sequence[Interceptor], info: CallInfo, outcome: Outcome) -> None:
    for icp in reversed(interceptors):
        try:
            icp.after(info, outcome)
        except Exception:  # noqa: BLE001 - an interceptor's bug must not lose the reply
            _log.exception("interceptor %r failed after %s", icp, info.function)


def observe(interceptors: Sequence[Interceptor], info: CallInfo) -> Observed:
    """Run the ``before`` hooks of *interceptors* for *info*, in order.

    If one raises (a refusal or a bug), those that had run see the end with that error
    and it propagates; else the :class:`Observed` call is returned.
    """
    started = time.perf_counter()
    for n, icp in enumerate(interceptors):
        try:
            icp.before(info)
        except Exception as exc:
            _after(interceptors[:n], info, Outcome(exc, False, time.perf_counter() - started))
            raise
    obs = Observed(info, interceptors)
    obs.started = started
    return obs


def refusal(exc: BaseException) -> tuple[str, str]:
    """The wire error type and message for an exception raised by a ``before`` hook."""
    if isinstance(exc, CallRefused):
        return "CallRefused", str(exc)
    return "InterceptorError", f"an interceptor failed: {type(exc).__name__}"


# --- the call context of a served function ------------------------------------------------
# What a served function runs in: a CallInfo, or (for a server without interceptors) a
# list [conn, msg, deadline, stream, CallInfo | None] from which call_context() builds
# one only when asked: a call nobody asks about pays one ContextVar.set and reset.
current_call: ContextVar[Any] = ContextVar("easyrpc_call", default=None)


def info_of(scope: Any) -> CallInfo:
    """The :class:`CallInfo` of a served call's scope (built on first use)."""
    if type(scope) is CallInfo:
        return scope
    built: CallInfo | None = scope[4]
    if built is None:
        conn, msg = scope[0], scope[1]
        metadata = dict(msg.metadata) if msg.metadata else {}
        identity, relay = caller_identity(conn.identity, metadata, conn.server.trusted_relays)
        if relay is None:
            metadata.pop(ON_BEHALF_OF, None)  # named by an untrusted peer: nobody may believe it
        built = scope[4] = CallInfo("server", msg.fn, conn.namespace, metadata, stream=scope[3], connection_id=conn.cid,
                                    peer=conn.peer, deadline=scope[2], identity=identity, relay=relay)
    return built


def call_context() -> CallInfo | None:
    """The call the current served function runs for, or None outside one.

    Works in plain functions (wherever the server runs them), ``async def`` functions
    (and tasks they create) and generators, on the thread or task that runs them::

        @rpc.origin
        def whoami() -> str:
            ctx = call_context()
            return f"{ctx.function} for {ctx.peer} ({ctx.metadata.get('user')}), {ctx.time_left()} s left"
    """
    scope = current_call.get()
    return None if scope is None else info_of(scope)
