"""Call every node of the chain through node A only: A <- B <- C.

Run (with the three nodes up): python examples/cluster/client.py
"""

import os
import time

from easyrpc.proxy import EasyRpcProxy

PORT = int(os.environ.get('EASYRPC_PORT', '8091'))

with EasyRpcProxy.create('127.0.0.1', PORT, '/ws/node', server_secret='abcd1234', timeout=10) as a:
    deadline = time.monotonic() + 15
    while 'where_c' not in a and time.monotonic() < deadline:  # links connect in the background
        time.sleep(0.1)
    print(sorted(name for name in a.proxy_funcs if name != 'get_registered_functions'))
    for name in ('where_a', 'where_b', 'where_c'):
        print(name, '->', a[name]('hello')['node'])
    print('count_c(3) ->', list(a.count_c(3)))
