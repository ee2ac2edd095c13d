"""One node of the example chain: serves its own functions and, with --link, another node's.

Run: python examples/cluster/node.py c 8093
     python examples/cluster/node.py b 8092 --link 127.0.0.1:8093
     python examples/cluster/node.py a 8091 --link 127.0.0.1:8092
"""

import argparse
import logging
import os
import socket

from flask import Flask

from easyrpc.server import EasyRpcServer

SECRET = os.environ.get('EASYRPC_SECRET', 'abcd1234')


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('name')
    parser.add_argument('port', type=int)
    parser.add_argument('--link', help='HOST:PORT of the node whose functions to offer too')
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format=f'{args.name}: %(name)s %(message)s')
    logging.getLogger('werkzeug').setLevel(logging.WARNING)

    app = Flask(f'node-{args.name}')
    rpc = EasyRpcServer(app, '/ws/node', server_secret=SECRET)

    def where(value: object = None) -> dict:
        """Say which node and process ran this call."""
        return {'node': args.name, 'pid': os.getpid(), 'host': socket.gethostname(), 'value': value}

    rpc.origin(where, name=f'where_{args.name}')

    def count(n: int):
        """Stream n items from this node."""
        for i in range(n):
            yield f'{args.name}:{i}'

    rpc.origin(count, name=f'count_{args.name}')

    if args.link:
        host, port = args.link.rsplit(':', 1)
        rpc.create_server_proxy(host, int(port), '/ws/node', SECRET)
    app.run(host='127.0.0.1', port=args.port)


if __name__ == '__main__':
    main()
