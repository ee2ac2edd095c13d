"""easyrpc inside an existing Flask app: the app-factory pattern, ordinary routes beside RPC,
namespaces and a namespace group.

Run: python examples/flask_app.py      (127.0.0.1:8091; EASYRPC_PORT overrides)
     curl http://127.0.0.1:8091/       (an ordinary route)
Serve in production: gunicorn -k gthread --threads 32 -b 127.0.0.1:8091 'examples.flask_app:create_app()'
"""

import os

from flask import Flask, jsonify

from easyrpc.server import EasyRpcServer

rpc = EasyRpcServer(None, '/ws/rpc', server_secret=os.environ.get('EASYRPC_SECRET', 'abcd1234'))


@rpc.origin(namespace='math')
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


@rpc.origin(namespace='text')
def shout(s: str) -> str:
    """Upper-case a string."""
    return s.upper()


rpc.create_namespace_group('all', 'math', 'text')


def create_app() -> Flask:
    app = Flask(__name__)

    @app.route('/')
    def index():
        return jsonify(service='flask_app example', rpc_path=rpc.path,
                       functions=[f['name'] for f in rpc.get_registered_functions('all')])

    rpc.init_app(app)
    return app


if __name__ == '__main__':
    create_app().run(host='127.0.0.1', port=int(os.environ.get('EASYRPC_PORT', '8091')))
