"""A client's calls as its interceptors see them, and the metadata each call sends.

A proxy function is built with its static metadata (the proxy's default merged with
``with_metadata``'s) once; only a proxy with interceptors builds a :class:`CallInfo` per
call, runs their ``before`` hooks (which may refuse the call or add metadata) and ends
the call for their ``after`` hooks.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from .._core.metadata import check_metadata
from ..interceptors import CallInfo, Observed, current_call, info_of, observe

if TYPE_CHECKING:
    from .calls import ClientStream
    from .engine import Engine

__all__ = ["merged_metadata", "start_observed", "end_with_future", "open_stream"]


def merged_metadata(base: Mapping[str, str] | None, extra: Mapping[str, str] | None) -> dict[str, str] | None:
    """*extra* over *base* (both valid metadata), checked; None when empty."""
    if not extra:
        return dict(base) if base else None
    merged = {**base, **extra} if base else dict(extra)
    return check_metadata(merged) or None


def start_observed(engine: Engine, name: str, metadata: dict[str, str] | None, stream: bool,
                   timeout: float | None) -> tuple[Observed, dict[str, str] | None]:
    """Run the proxy's interceptors' ``before`` hooks for a call; its Observed and the
    metadata to send. Raises what a hook raised (a refusal: nothing is sent)."""
    limit = timeout if timeout is not None else engine.timeout
    scope = current_call.get()  # a served function calling out: its call is the parent
    info = CallInfo("client", name, engine.namespace, dict(metadata) if metadata else {}, stream=stream,
                    connection_id=engine.cid if engine.connected else "", peer=engine.url,
                    deadline=None if limit is None else time.monotonic() + limit,
                    parent=None if scope is None else info_of(scope), identity=engine.options.client_id)
    obs = observe(engine.options.interceptors, info)
    try:
        sent = check_metadata(info.metadata) or None
    except ValueError as exc:
        obs.end(exc)
        raise
    return obs, sent


def end_with_future(obs: Observed, fut: Future[Any]) -> None:
    """End *obs* when *fut* is done (cancelled, failed or settled)."""
    def done(f: Future[Any]) -> None:
        if f.cancelled():
            obs.end(None, True)
        else:
            obs.end(f.exception())

    fut.add_done_callback(done)


def open_stream(engine: Engine, name: str, args: list[Any], kwargs: dict[str, Any], timeout: float | None,
                metadata: dict[str, str] | None) -> ClientStream:
    """Start a generator call, seen by the proxy's interceptors (if any) until it ends."""
    if not engine.options.interceptors:
        return engine.calls.open_stream(name, args, kwargs, timeout, metadata)
    obs, sent = start_observed(engine, name, metadata, True, timeout)
    try:
        return engine.calls.open_stream(name, args, kwargs, timeout, sent, obs)
    except BaseException as exc:
        obs.end(exc)
        raise
