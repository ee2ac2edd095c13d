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
* :mod:`.session` -- an authenticated server connection's message rules and its table
  of calls in flight (:class:`~.session.ServerSession`).
* :mod:`.handshake` -- hello, auth, welcome or refusal, as two state machines
  (:class:`~.handshake.ClientHandshake`, :class:`~.handshake.ServerHandshake`).
* :mod:`.cipher` -- nonces and frame sealing (:class:`~.cipher.FrameCipher`).
* :mod:`.close_codes` -- the close codes, which the server echoes, and every close
  easyrpc makes.

The rule: no module here imports socket, threading, select, selectors, ssl, asyncio,
Flask, simple_websocket or websocket code, directly or through what it imports (a test
checks: ``tests/test_core_frames.py``). The JWTs of the handshake are the exception that
proves it: PyJWT loads socket, ssl and threading, so :mod:`easyrpc._handshake` holds
them, outside, and the handshake machines take them as a
:class:`~.handshake.Credentials` object. Nothing here is thread-safe; a driver serialises
its calls into one core object.
"""
