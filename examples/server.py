"""The seed README's advanced server, on Flask: two easyrpc servers on one app.

Run: python examples/server.py            (serves 127.0.0.1:8090; EASYRPC_PORT overrides)
"""

import asyncio
import os

from flask import Flask

from easyrpc.server import EasyRpcServer

server = Flask(__name__)

ws_server_a = EasyRpcServer(server, '/ws/server_a', server_secret='abcd1234')
ws_server_b = EasyRpcServer(server, '/ws/server_b', server_secret='abcd1234')


@ws_server_a.origin
def good_func_a(a, b, c):
    print(f"good_func_a {a} {b} {c}")
    return {"good_func_a": [a, b, c]}


@ws_server_b.origin
def good_func_b(a, b, c):
    print(f"good_func_b {a} {b} {c}")
    return {"good_func_b": [a, b, c]}


# Register to both EasyRpcServer servers:
# available for both /ws/server_a & /ws/server_b proxies
@ws_server_a.origin
@ws_server_b.origin
def good_func_c(a, **kw):
    print(f"good_func_c {a} {kw}")
    return {"good_func_c": [a, kw]}


@ws_server_a.origin
def count_up(n: int):
    """Yield 0 .. n-1; proxies stream the items."""
    yield from range(n)


@ws_server_a.origin
async def slow_add(a: float, b: float, delay: float = 0.1) -> float:
    """An async function: runs on the server's event loop thread."""
    await asyncio.sleep(delay)
    return a + b


@ws_server_a.origin(namespace='admin')
def reset(force: bool = False) -> str:
    """Only proxies of the 'admin' namespace see this one."""
    return f"reset (force={force})"


if __name__ == '__main__':
    server.run(host='127.0.0.1', port=int(os.environ.get('EASYRPC_PORT', '8090')))
