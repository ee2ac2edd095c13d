"""Who is calling: one key per client, what each may call, and revoking a key.

The server accepts two client credentials; the reporting job may call only functions
tagged 'read', the admin tool everything. Neither ever learns of functions it may not
call: they are not listed, and calling one is FunctionNotFound, as for a name that does
not exist. A served function reads its caller's identity through call_context().
Revoking the reporting key closes its connection and refuses it from then on.
A server and its clients in one process (the server on a free port of 127.0.0.1).

Run: python examples/identities.py
"""

import logging
import threading

from flask import Flask
from werkzeug.serving import make_server

from easyrpc import AuthenticationError
from easyrpc.proxy import EasyRpcProxy
from easyrpc.server import Access, EasyRpcServer, call_context

app = Flask(__name__)
rpc = EasyRpcServer(
    app, '/ws/shop',
    credentials={'reporting': 'reporting-secret', 'admin': 'admin-secret'},  # or lookup(client_id) -> secret | None
    access={'reporting': Access(tags={'read'}), 'admin': Access()},
)


@rpc.origin(tags={'read'})
def sales(day: str) -> str:
    return f"sales of {day}, for {call_context().identity}: 42"


@rpc.origin(tags={'admin'})
def refund(order: int) -> str:
    return f'order {order} refunded'


def main():
    logging.getLogger('werkzeug').setLevel(logging.WARNING)  # no request lines
    logging.getLogger('easyrpc').setLevel(logging.ERROR)  # nor the refusals' warnings
    server = make_server('127.0.0.1', 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_port
    with EasyRpcProxy.create('127.0.0.1', port, '/ws/shop', client_id='admin', server_secret='admin-secret') as admin:
        print(sorted(admin.proxy_funcs))
        print(admin.refund(7))
    reporting = EasyRpcProxy.create('127.0.0.1', port, '/ws/shop', client_id='reporting',
                                    server_secret='reporting-secret', reconnect=False)
    print(sorted(reporting.proxy_funcs))
    print(reporting.sales('2030-01-01'))
    try:
        reporting.refund(7)  # not offered: a hand-built call would get FunctionNotFound
    except AttributeError as exc:
        print(f'not offered: {exc}')
    print(f"revoked, {rpc.revoke('reporting')} connection closed")
    reporting.close()
    try:
        EasyRpcProxy.create('127.0.0.1', port, '/ws/shop', client_id='reporting', server_secret='reporting-secret')
    except AuthenticationError as exc:
        print(exc)
    rpc.close()
    server.shutdown()


if __name__ == '__main__':
    main()
