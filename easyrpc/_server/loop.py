"""The event loop thread a server owns for its ``async def`` functions and generators.

Started on the first ``async def`` call (a server with none runs no loop), stopped with
the server: its tasks are cancelled and awaited, async generators closed, the thread
joined.
"""

from __future__ import annotations

import asyncio
import logging
import threading

__all__ = ["LoopThread"]

_log = logging.getLogger("easyrpc.server")


class LoopThread:
    """The event loop thread a server owns for its ``async def`` functions."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def get(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    while True:  # runs again only after a task raised SystemExit or the like
                        try:
                            loop.run_forever()
                            return  # stopped by close()
                        except (SystemExit, KeyboardInterrupt) as exc:
                            # asyncio lets these out of run_forever; off the main thread they
                            # come from a served function's task (a child it started), and
                            # must not end the loop every async function runs on.
                            _log.warning("a task on %s raised %s; the event loop carries on",
                                         self._name, type(exc).__name__)

                self._thread = threading.Thread(target=run, name=self._name, daemon=True)
                self._thread.start()
                ready.wait(5.0)
                self._loop = loop
            return self._loop

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await loop.shutdown_asyncgens()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5.0)
        except (TimeoutError, RuntimeError, asyncio.CancelledError):
            pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5.0)
        if not thread.is_alive():
            loop.close()
