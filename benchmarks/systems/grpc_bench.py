"""gRPC (grpcio, sync API): a thread-pool server with generic handlers, JSON on the wire.

``python grpc_bench.py server --port P [--workers W]`` / ``client --port P [...]``

Runs in its own virtualenv (``.venvs/grpc``). No protobuf and no generated code: the
service is a ``grpc.method_handlers_generic_handler`` whose methods (de)serialize JSON,
so the payloads are the same as every other system's (``good_func_a`` takes ``[a, b, c]``
and answers ``{"good_func_a": [a, b, c]}``, ``echo`` answers its argument, ``gen`` is a
unary-stream method yielding ``range(n)``). The client makes its calls on one
``grpc.insecure_channel``: 8 threads share it (HTTP/2 streams multiplexed on one TCP
connection), 64 in flight are ``.future()`` calls. Messages up to 64 MiB are allowed on
both sides (the default limit is 4 MiB). The deep echo uses the standard json module,
whose C encoder recurses: a RecursionError there is reported as the workload's error, as
for the other systems without a fallback of their own.

The server prints ``READY <port>`` once listening (``--port 0``: any free port) and stops
on SIGTERM. ``conns.py`` imports this module for its service name, options and codec.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

SERVICE = "bench.Bench"
MAX_MESSAGE = 64 * 1024 * 1024
# Both sides: allow the 10 MB echo (a JSON string of 10,000,000 characters plus quotes).
MESSAGE_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
]
DEFAULT_WORKERS = 16  # threads8 needs 8 at once; inflight64 queues the rest in the executor
SMALL_ARGS = [1, 5, 7]


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def loads(data: bytes) -> Any:
    return json.loads(data)


def raw(data: bytes) -> bytes:
    """The bytes echo's (de)serializer: a raw bytes message, as it is."""
    return data


def method(name: str) -> str:
    return f"/{SERVICE}/{name}"


def build_server(port: int, workers: int, options: list[tuple[str, Any]] | None = None) -> tuple[Any, int]:
    """A started-to-be grpc server on 127.0.0.1:*port* (0: any) and the port it bound."""
    import grpc

    def good_func_a(request: Any, context: Any) -> dict[str, list[Any]]:
        a, b, c = request
        return {"good_func_a": [a, b, c]}

    def echo(request: Any, context: Any) -> Any:
        return request

    def gen(request: Any, context: Any) -> Iterator[int]:
        yield from range(int(request))

    handlers = {
        "good_func_a": grpc.unary_unary_rpc_method_handler(good_func_a, request_deserializer=loads,
                                                           response_serializer=dumps),
        "echo": grpc.unary_unary_rpc_method_handler(echo, request_deserializer=loads, response_serializer=dumps),
        "echo_bytes": grpc.unary_unary_rpc_method_handler(echo, request_deserializer=raw, response_serializer=raw),
        "gen": grpc.unary_stream_rpc_method_handler(gen, request_deserializer=loads, response_serializer=dumps),
    }
    server = grpc.server(ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc-worker"),
                         options=[*MESSAGE_OPTIONS, *(options or [])])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    if not bound:
        raise RuntimeError(f"could not bind 127.0.0.1:{port}")
    return server, bound


def serve(port: int, workers: int) -> None:
    from _common import serve_until_terminated

    server, bound = build_server(port, workers)
    server.start()
    print(f"READY {bound}", flush=True)
    serve_until_terminated(server.wait_for_termination, lambda: server.stop(2.0))


def connect(port: int, options: list[tuple[str, Any]] | None = None, timeout: float = 30.0) -> Any:
    """A channel to 127.0.0.1:*port*, connected (bounded by *timeout*)."""
    import grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[*MESSAGE_OPTIONS, *(options or [])])
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except BaseException:
        channel.close()
        raise
    return channel


def small_call(channel: Any) -> Any:
    """The ``good_func_a`` multi-callable of *channel* (call it with ``SMALL_ARGS``)."""
    return channel.unary_unary(method("good_func_a"), request_serializer=dumps, response_deserializer=loads)


def _client_driver() -> Any:
    # _common is importable from this script's directory (the client role only)
    from _common import SyncDriver

    class GrpcDriver(SyncDriver):
        def __init__(self, port: int) -> None:
            self.channel = connect(port)
            self._good = small_call(self.channel)
            self._codec_error: BaseException | None = None
            self._echo = self.channel.unary_unary(method("echo"), request_serializer=self._dumps,
                                                  response_deserializer=loads)
            self._echo_bytes = self.channel.unary_unary(method("echo_bytes"), request_serializer=raw,
                                                        response_deserializer=raw)
            self._gen = self.channel.unary_stream(method("gen"), request_serializer=dumps, response_deserializer=loads)

        def small(self) -> Any:
            return self._good(SMALL_ARGS)

        def threads_note(self) -> str:
            return "8 threads on one channel (HTTP/2 streams on one connection)"

        def small_batch(self, n: int) -> None:
            future = self._good.future
            futures = [future(SMALL_ARGS) for _ in range(n)]
            for f in futures:
                f.result(timeout=60)

        def _dumps(self, value: Any) -> bytes:
            try:
                return dumps(value)
            except Exception as exc:  # grpc reports only "Exception serializing request!"
                self._codec_error = exc
                raise

        def echo(self, value: Any) -> Any:
            import grpc

            self._codec_error = None
            try:
                return self._echo(value, timeout=120)
            except grpc.RpcError as exc:
                cause = self._codec_error
                detail = f"{exc.code().name}: {exc.details()}"
                raise RuntimeError(detail + (f" ({type(cause).__name__}: {cause})" if cause else "")) from None

        def echo_bytes(self, value: bytes) -> bytes:
            reply: bytes = self._echo_bytes(value, timeout=120)
            return reply

        def gen(self, n: int) -> Iterator[Any]:
            return iter(self._gen(n, timeout=600))

        def gen_note(self) -> str:
            return "server stream: one message per item"

        def close(self) -> None:
            self.channel.close()

    return GrpcDriver


def main() -> None:
    role, argv = sys.argv[1], sys.argv[2:]
    if role == "server":
        workers = int(argv[argv.index("--workers") + 1]) if "--workers" in argv else DEFAULT_WORKERS
        serve(int(argv[argv.index("--port") + 1]), workers)
    elif role == "client":
        from _common import run_sync_client

        run_sync_client(_client_driver(), argv)
    else:
        raise SystemExit(f"unknown role {role}")


if __name__ == "__main__":
    main()
