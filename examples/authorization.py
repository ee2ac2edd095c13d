"""Call metadata and interceptors: per-function authorization by a role sent with each call.

The client says who it is in its metadata; a server interceptor refuses functions the
role may not call (the function never runs, the caller gets a CallRefused) and logs
every call's outcome and duration; the function reads its caller through call_context().
A server and a client in one process (the server on a free port of 127.0.0.1, in a thread).

Run: python examples/authorization.py
"""

import logging
import threading

from flask import Flask
from werkzeug.serving import make_server

from easyrpc import CallRefused
from easyrpc.interceptors import CallInfo, Interceptor, Outcome
from easyrpc.proxy import EasyRpcProxy
from easyrpc.server import EasyRpcServer, call_context

ALLOWED = {  # role -> the functions it may call
    'reader': {'balance'},
    'admin': {'balance', 'reset'},
}


class RequireRole(Interceptor):
    """Refuse any function the caller's role (metadata 'role') is not allowed."""

    def before(self, call: CallInfo) -> None:
        role = call.metadata.get('role', '')
        if call.function not in ALLOWED.get(role, set()):
            raise CallRefused(f'role {role!r} may not call {call.function}')


class AuditLog(Interceptor):
    """Note each call: who, what, how it ended (refusals by later interceptors included)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def after(self, call: CallInfo, outcome: Outcome) -> None:
        self.lines.append(f"{call.metadata.get('user')} {call.function} -> {outcome.error_type or 'ok'}")


audit = AuditLog()
app = Flask(__name__)
rpc = EasyRpcServer(app, '/ws/bank', server_secret='abcd1234', interceptors=[audit, RequireRole()])


@rpc.origin
def balance() -> str:
    ctx = call_context()  # the call this function runs for
    return f"balance for {ctx.metadata['user']}: 100"


@rpc.origin
def reset() -> str:
    return 'reset done'


def main():
    logging.getLogger('werkzeug').setLevel(logging.WARNING)  # no request lines
    server = make_server('127.0.0.1', 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_port
    with EasyRpcProxy.create('127.0.0.1', port, '/ws/bank', server_secret='abcd1234',
                             metadata={'user': 'ann', 'role': 'reader'}) as p:
        print(p.balance())
        try:
            p.reset()
        except CallRefused as exc:  # a RemoteCallRefused: reset() did not run
            print(f'refused: {exc.remote_message}')
        # per call: metadata merged over the proxy's, composing with with_timeout
        print(p.reset.with_metadata({'role': 'admin'}).with_timeout(5)())
    print('\n'.join(audit.lines))
    server.shutdown()


if __name__ == '__main__':
    main()
