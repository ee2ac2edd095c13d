"""A client of examples/flask_app.py: one proxy per namespace, and one for the group."""

import os

from easyrpc.proxy import EasyRpcProxy

PORT = int(os.environ.get('EASYRPC_PORT', '8091'))

with EasyRpcProxy.create('127.0.0.1', PORT, '/ws/rpc', server_secret='abcd1234', namespace='math') as math:
    print(math.add(2, 3))
    print('shout' in math)          # False: another namespace

with EasyRpcProxy.create('127.0.0.1', PORT, '/ws/rpc', server_secret='abcd1234', namespace='all') as everything:
    print(everything.add(1, 1), everything.shout('hello'))
