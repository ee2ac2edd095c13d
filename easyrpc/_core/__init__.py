"""easyrpc's sans-I/O core: the protocol's rules, written once, with no I/O of their own.

Like python-websockets' ``Protocol`` and h11's ``Connection``, the core takes bytes and
the current time and gives back messages, actions and bytes to send. It never opens,
reads or writes a socket, starts or waits on a thread, sleeps, or reads the clock; the
drivers do that (the server's connection and hub, the threaded proxy, ``easyrpc.aio``)
and pass it the time. So every rule is tested by feeding bytes and fake times in.

* :mod:`.frames` -- WebSocket frames (RFC 6455 §5): :class:`~.frames.FrameParser` (bytes
  in, validated messages out, close codes on :class:`~.frames.FrameError`) and frame
  building for both directions.
* :mod:`.keepalive` -- when to ping a quiet peer and when to drop a silent one
  (:class:`~.keepalive.Keepalive`), the same for both ends.

The rule: no module here imports socket, threading, select, selectors, ssl, asyncio,
Flask, simple_websocket or websocket code, directly or through what it imports (a test
checks: ``tests/test_core_frames.py``). Nothing here is thread-safe; a driver serialises
its calls into one core object.
"""
