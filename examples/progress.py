"""A long job reports its progress to the caller: a callable passed as an argument.

The server's function calls ``progress(done, total)`` as it goes; each call runs in the
client, which draws a bar (with tqdm when it is installed, plain text otherwise). A
callback may also answer: here ``should_stop`` lets the client stop the job early.

A server and a client in one process (the server on a free port of 127.0.0.1, in a thread).

Run: python examples/progress.py
"""

import logging
import threading
import time

from flask import Flask
from werkzeug.serving import make_server

from easyrpc.proxy import EasyRpcProxy
from easyrpc.server import EasyRpcServer

app = Flask(__name__)
rpc = EasyRpcServer(app, '/ws/jobs', server_secret='abcd1234')


@rpc.origin
def run_job(steps, progress, should_stop=None):
    """Work through *steps* steps, reporting each; stop early when should_stop() says so."""
    for done in range(1, steps + 1):
        time.sleep(0.01)  # the work
        progress(done, steps)  # runs in the client; returns when the client has drawn it
        if should_stop is not None and should_stop(done):
            return f'stopped after {done} of {steps} steps'
    return f'finished {steps} steps'


def text_bar():
    """A progress callback that draws a bar with tqdm if it is installed, else with text."""
    try:
        from tqdm import tqdm
    except ImportError:
        def draw(done, total):
            filled = 20 * done // total
            print(f'[{"#" * filled}{"." * (20 - filled)}] {done}/{total}', flush=True)
        return draw, lambda: None
    bar = None

    def draw(done, total):
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total)
        bar.update(done - bar.n)
    return draw, lambda: bar is not None and bar.close()


def main():
    logging.getLogger('werkzeug').setLevel(logging.WARNING)  # no request lines
    server = make_server('127.0.0.1', 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with EasyRpcProxy.create('127.0.0.1', server.server_port, '/ws/jobs', server_secret='abcd1234') as p:
        draw, close = text_bar()
        print(p.run_job(10, draw))
        close()
        # a callback's answer steers the job: the client stops it at step 3
        print(p.run_job(10, lambda done, total: None, should_stop=lambda done: done >= 3))
    rpc.close()
    server.shutdown()


if __name__ == '__main__':
    main()
