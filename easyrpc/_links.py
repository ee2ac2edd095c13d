"""Server-to-server links: a server re-offers another server's functions (API §7).

A link is a client engine inside the server. The functions it learns (and every later
change, pushed by the origin) are registered in the local server as forwarded entries;
calls to them are relayed over the link's one WebSocket and the replies routed back to
the right caller. Each description carries the ``route`` of server ids it came through,
so a function is never offered back to a server it passed through: cycles neither loop
nor flood. When the link drops its functions disappear at once; when it comes back, so
do they.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from . import _protocol as proto
from ._client import CallFuture, Engine
from ._client.endpoints import EndpointSpec
from ._client.observed import open_stream, start_observed
from ._client.options import ClientOptions
from ._core.identity import caller_identity, on_behalf_of
from ._futures import CancelHook
from ._server.registry import BUILTIN_LIST
from .exceptions import EasyRpcError
from .interceptors import Observed, call_context, current_call, refusal
from .proxy import RemoteIterator

if TYPE_CHECKING:
    from ._server.connection import ServerConnection
    from ._server.tasks import CallTask
    from .server import EasyRpcServer

__all__ = ["ServerLink"]

log = logging.getLogger("easyrpc.link")


class ServerLink:
    """This server's connection to an origin server whose functions it re-offers."""

    def __init__(
        self,
        server: EasyRpcServer,
        endpoints: Sequence[EndpointSpec],
        server_secret: str | bytes,
        local_namespace: str | None,
        options: ClientOptions,
    ) -> None:
        self.server = server
        self.namespace = options.namespace
        self.local_namespace = local_namespace or options.namespace
        # a link always reconnects (to the next endpoint, if it has several): its
        # functions come back with the origin
        self.engine = Engine(endpoints, server_secret, dataclasses.replace(options, reconnect=True))
        self.engine.add_listener(self._sync)
        self.engine.add_lost_listener(self._withdraw)

    def start(self) -> None:
        """Connect in the background, retrying with backoff until the origin answers."""
        self.engine.start_in_background()

    def close(self) -> None:
        self.engine.close()
        self._withdraw()

    @property
    def connected(self) -> bool:
        return self.engine.connected

    @property
    def url(self) -> str:
        """The endpoint it is connected to (or tries next, while it reconnects)."""
        return self.engine.url

    def _sync(self) -> None:
        own = self.server.server_id
        offered: dict[str, dict[str, Any]] = {}
        for spec in self.engine.functions.values():
            route = spec.description.get("route")
            route = [r for r in route if isinstance(r, str)] if isinstance(route, list) else []
            if spec.name == BUILTIN_LIST or own in route:
                continue  # the origin's builtin, or one of ours coming back round a cycle
            desc = dict(spec.description)
            desc["namespace"] = self.local_namespace
            desc["route"] = route + [own]
            offered[spec.name] = desc
        log.info("link %s offers %d functions in namespace %s", self.url, len(offered), self.local_namespace)
        self.server.set_forwarded(self, offered)

    def _withdraw(self) -> None:
        self.server.set_forwarded(self, {})

    # --- relaying calls ----------------------------------------------------------------
    def forward(self, conn: ServerConnection, msg: proto.Call, task: CallTask) -> None:
        """Relay a plain call; its reply (or error) is sent back when the origin answers.

        The call's metadata goes with it (with what the link's interceptors add), naming
        the caller (``easyrpc-on-behalf-of``: the origin believes it if it trusts this
        server's identity for it)."""
        fut = _RelayFuture(self.engine)
        task.future = fut  # cancelling the downstream call cancels the upstream one
        obs: Observed | None = None
        caller, _ = caller_identity(conn.identity, msg.metadata, self.server.trusted_relays)
        metadata = on_behalf_of(msg.metadata, caller)
        if self.engine.options.interceptors:
            token = current_call.set(task.scope)  # the relayed call is the parent
            try:
                obs, metadata = start_observed(self.engine, msg.fn, metadata, False, msg.timeout)
            except Exception as exc:  # noqa: BLE001 - a refusal, or an interceptor's bug: the caller is told
                conn.finish(msg.id, task, proto.encode_failure(msg.id, proto.error_wire(*refusal(exc))))
                return
            finally:
                current_call.reset(token)
            fut.on_cancel = functools.partial(obs.end, None, True)

        def done(f: Future[Any]) -> None:
            # Runs on the engine thread that settles the call (no hand-off to the
            # dispatcher: this relays a reply, it runs no user code).
            exc = f.exception()
            if obs is not None:
                obs.end(exc)
            if exc is None:
                payload = proto.encode_result(msg.id, f.result())
            else:  # the origin's error passes through; a lost link or timeout by its own name
                payload = proto.encode_failure(msg.id, proto.error_to_wire(exc, include_traceback=False))
            conn.finish(msg.id, task, payload)

        fut.on_settle = done  # type: ignore[attr-defined]
        try:
            self.engine.calls.submit(fut, msg.fn, msg.args, msg.kwargs, msg.timeout, metadata=metadata)
        except EasyRpcError as exc:
            if obs is not None:
                obs.end(exc)
            conn.finish(msg.id, task, proto.encode_failure(msg.id, proto.error_to_wire(exc, include_traceback=False)))

    def stream(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Iterator[Any]:
        """Relay a generator: iterated by the local stream pump, closed when it is.

        Runs in the relayed stream's call context: its metadata goes with it."""
        ctx = call_context()
        metadata = None if ctx is None else on_behalf_of(ctx.metadata, ctx.identity)
        it = RemoteIterator(open_stream(self.engine, name, args, kwargs, None, metadata))
        try:
            yield from it
        finally:
            it.close()


class _RelayFuture(CancelHook, CallFuture):
    """A relayed call's upstream future; *on_cancel* runs when the downstream caller cancels."""
