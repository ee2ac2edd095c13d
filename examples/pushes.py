"""A server pushing events to its subscribers: functions a client offers.

Each client offers ``on_event`` (``@p.offer``) and calls ``subscribe(topic)``; the
server keeps the caller (``easyrpc.server.caller()``) and, whenever something is
published, calls every subscriber's ``on_event`` in its client at once (``submit``: a
Future per client), long after ``subscribe`` returned, until the client disconnects.
One blocking and one asyncio client.

Run: python examples/pushes.py
"""

import asyncio
import logging
import threading
from concurrent.futures import wait

from flask import Flask
from werkzeug.serving import make_server

from easyrpc import CallTimeout, ConnectionLost, RemoteError
from easyrpc.aio import EasyRpcProxy as AsyncProxy
from easyrpc.proxy import EasyRpcProxy
from easyrpc.server import EasyRpcServer, caller

app = Flask(__name__)
rpc = EasyRpcServer(app, '/ws/news', server_secret='abcd1234')
subscribers = {}  # topic -> the callers of the clients subscribed to it
lock = threading.Lock()


@rpc.origin
def subscribe(topic):
    """Receive every event published on *topic* (through the on_event you offer)."""
    with lock:
        subscribers.setdefault(topic, []).append(caller())
    return f'subscribed to {topic}'


def forget(topic, client):
    with lock:
        if client in subscribers.get(topic, ()):
            subscribers[topic].remove(client)


@rpc.origin
def publish(topic, event):
    """Send *event* to every subscriber of *topic*, all at once; how many got it."""
    with lock:
        targets = list(subscribers.get(topic, ()))
    answers = {}  # a Future per client: submit runs every client's on_event at once
    for client in targets:
        try:
            answers[client.with_timeout(10).on_event.submit(topic, event)] = client
        except ConnectionLost:  # that client has gone: forget it
            forget(topic, client)
    wait(answers)  # bounded: each answer fails with CallTimeout after its 10 s
    delivered = 0
    for answer, client in answers.items():
        try:
            answer.result()
            delivered += 1
        except ConnectionLost:
            forget(topic, client)
        except (CallTimeout, RemoteError):  # too slow, or its on_event failed: it misses this one
            pass
    return delivered


def main():
    logging.getLogger('werkzeug').setLevel(logging.WARNING)  # no request lines
    server = make_server('127.0.0.1', 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_port

    seen = {'blocking client': [], 'async client': []}  # what each client received
    with EasyRpcProxy.create('127.0.0.1', port, '/ws/news', server_secret='abcd1234') as p:
        @p.offer
        def on_event(topic, event):
            seen['blocking client'].append(f'{topic}: {event}')

        print(p.subscribe('weather'))

        async def async_client():
            async with await AsyncProxy.create('127.0.0.1', port, '/ws/news', server_secret='abcd1234') as ap:
                @ap.offer(name='on_event')
                async def show(topic, event):
                    seen['async client'].append(f'{topic}: {event}')

                print(await ap.subscribe('weather'))
                print('delivered to', await ap.publish('weather', 'sunny'), 'subscribers')
        asyncio.run(async_client())
        # the async client has gone: only the blocking one is left
        print('delivered to', p.publish('weather', 'rain'), 'subscribers')
    for client, events in seen.items():
        for line in events:
            print(f'{client}: {line}')
    rpc.close()
    server.shutdown()


if __name__ == '__main__':
    main()
