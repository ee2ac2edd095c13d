"""Typed values and annotations: dates, UUIDs and records travel as themselves.

A server and a client in one process (the server on a free port of 127.0.0.1, in a thread).

Run: python examples/typed_values.py
"""

import dataclasses
import datetime as dt
import enum
import inspect
import logging
import threading
import uuid
from decimal import Decimal

from flask import Flask
from werkzeug.serving import make_server

from easyrpc import ArgumentError
from easyrpc.proxy import EasyRpcProxy
from easyrpc.server import EasyRpcServer

app = Flask(__name__)
rpc = EasyRpcServer(app, '/ws/shop', server_secret='abcd1234')


class Size(enum.Enum):
    SMALL = 's'
    LARGE = 'l'


@dataclasses.dataclass
class Line:
    sku: str
    qty: int
    size: Size = Size.SMALL


@dataclasses.dataclass
class Order:
    id: uuid.UUID
    placed: dt.datetime
    lines: list[Line]
    total: Decimal


@rpc.origin
def place(order: Order, deliver_by: dt.date = dt.date(2030, 1, 1), note: str = '') -> Order:
    """Place an order: its argument arrives as an Order, with Lines, a Size and a UUID."""
    assert isinstance(order, Order) and isinstance(order.lines[0], Line)
    return dataclasses.replace(order, total=order.total * 2)


@rpc.origin
def when(value):
    """Echo a value (unannotated: it arrives as it was sent)."""
    return value


def main():
    logging.getLogger('werkzeug').setLevel(logging.WARNING)  # no request lines
    server = make_server('127.0.0.1', 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with EasyRpcProxy.create('127.0.0.1', server.server_port, '/ws/shop', server_secret='abcd1234') as p:
        # typed values round-trip as themselves; a string that looks like a date stays a string
        print(p.when([dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone(dt.timedelta(hours=2))),
                      uuid.UUID(int=1), Decimal('9.99'), dt.timedelta(minutes=5), '2024-05-06']))

        # a record goes as its data; the server rebuilds it from the annotation
        order = Order(uuid.UUID(int=42), dt.datetime(2024, 5, 6, 12, 0), [Line('tea', 2, Size.LARGE)], Decimal('3.50'))
        result = p.place(order)
        print(result['total'], result['lines'])
        print(Order(**{**result, 'lines': [Line(**ln) for ln in result['lines']]}) == dataclasses.replace(
            order, total=Decimal('7.00'), lines=[Line('tea', 2, 'l')]))

        # a value that does not fit is refused before the function runs, naming the parameter
        try:
            p.place({'id': str(uuid.UUID(int=1)), 'placed': '2024-05-06T12:00:00',
                     'lines': [{'sku': 'tea', 'qty': 'two'}], 'total': '1'})
        except ArgumentError as exc:  # also a TypeError
            print(exc)

        # defaults that travel are real in the proxy's signature
        print(inspect.signature(p.place).parameters['deliver_by'].default)
    server.shutdown()


if __name__ == '__main__':
    main()
