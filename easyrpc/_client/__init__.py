"""The threaded client behind both proxies (``easyrpc.proxy`` and ``easyrpc.aio``).

- :mod:`.engine`: one proxy's connection, request table, reading role and writer.
- :mod:`.calls`: what is kept for each call or stream, and how each is settled.
- :mod:`.loops`: settling ``easyrpc.aio`` awaitables, and an event loop that reads.
- :mod:`.sock`: small helpers on a connection's socket.
"""

from .calls import END, BlockingCall, CallFuture, ClientStream, ConvertedFuture, LoopCall
from .engine import Engine
from .loops import LoopReader, bridge_to_loop, loop_inbox

__all__ = ["END", "BlockingCall", "CallFuture", "ClientStream", "ConvertedFuture", "Engine", "LoopCall", "LoopReader",
           "bridge_to_loop", "loop_inbox"]
