"""The ``easyrpc`` command line: ``demo``, ``list``, ``call``, ``serve`` and ``stubgen``."""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import logging
import os
import re
import ssl
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from ._core.identity import check_client_id
from ._core.metadata import check_metadata
from ._stubgen.command import EXIT_DRIFT, add_arguments, run_stubgen
from .exceptions import (
    AuthenticationError,
    CallTimeout,
    ConnectionLost,
    EasyRpcError,
    FunctionNotFound,
    RemoteError,
)

__all__ = ["main", "EXIT_CODES"]

EXIT_OK = 0
EXIT_REMOTE = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4
EXIT_NOT_FOUND = 5
EXIT_TIMEOUT = 6
EXIT_OTHER = 7

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_REMOTE: "the remote function raised (type, message and traceback on stderr)",
    EXIT_USAGE: "bad command line",
    EXIT_UNREACHABLE: "server unreachable or connection lost",
    EXIT_AUTH: "authentication failed (wrong secret, encryption or protocol mismatch)",
    EXIT_NOT_FOUND: "no such function in the namespace",
    EXIT_TIMEOUT: "the call timed out",
    EXIT_OTHER: "other error (bad argument JSON, protocol error)",
    EXIT_DRIFT: "stubgen --check: the file no longer matches the server",
}


class CliError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _epilog() -> str:
    lines = ["exit codes:"] + [f"  {code}  {text}" for code, text in EXIT_CODES.items()]
    lines += ["", "The secret comes from --secret or the EASYRPC_SECRET environment variable; with",
              "--client-id (or EASYRPC_CLIENT_ID) it is that client id's own secret."]
    return "\n".join(lines)


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="server URL, e.g. ws://127.0.0.1:8090/ws/server_a (wss:// for TLS); several, "
                                    "comma-separated: the first that answers")
    parser.add_argument("--secret", default=os.environ.get("EASYRPC_SECRET"),
                        help="shared secret (default: $EASYRPC_SECRET)")
    parser.add_argument("--client-id", default=os.environ.get("EASYRPC_CLIENT_ID") or None,
                        help="prove this client id (the secret is then that id's own; default: $EASYRPC_CLIENT_ID)")
    parser.add_argument("--namespace", default="DEFAULT", help="function namespace (default: DEFAULT)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per call (default: 30)")
    parser.add_argument("--encryption", action="store_true", help="encrypt frames (the server must too)")
    parser.add_argument("--cafile", help="CA bundle to verify a wss:// server with")
    parser.add_argument("--insecure", action="store_true", help="wss:// without verifying the certificate")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="easyrpc", description="Poke easyrpc servers, run the demo, serve apps.",
                                     epilog=_epilog(), formatter_class=fmt)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("demo", help="run a server and a client on loopback and show calls", epilog=_epilog(),
                   formatter_class=fmt)
    p_list = sub.add_parser("list", help="list a server's functions with signatures and docs", epilog=_epilog(),
                            formatter_class=fmt)
    _connection_options(p_list)
    p_list.add_argument("--json", action="store_true", help="print the descriptions as JSON")
    call_help = ("call one function and print its JSON result (dates and times in ISO 8601, UUIDs and decimals "
                 "as strings, bytes as {\"$bytes\": BASE64, \"len\": N}: the bytes in standard base64 and their "
                 "length)")
    p_call = sub.add_parser("call", help=call_help, description=call_help, epilog=_epilog(), formatter_class=fmt)
    _connection_options(p_call)
    p_call.add_argument("function", help="function name")
    p_call.add_argument("args", nargs="*", help="positional arguments: JSON where they parse, else strings; "
                                                "@PATH passes the bytes of the file PATH (@@TEXT: the string @TEXT)")
    p_call.add_argument("--kw", action="append", default=[], metavar="NAME=VALUE",
                        help="a keyword argument (VALUE parsed like ARGS, @PATH included); repeatable")
    p_call.add_argument("-o", "--output", metavar="FILE",
                        help="write a bytes result (or a stream's bytes items, one after another) to FILE as "
                             "they are; other values go to FILE as JSON lines")
    p_call.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                        help="call metadata, sent as text (the function reads it through call_context()); "
                             "repeatable")
    stub_help = "write typed Protocol classes of a server's functions (or --check a written file against it)"
    p_stub = sub.add_parser("stubgen", help=stub_help, description=stub_help, epilog=_epilog(), formatter_class=fmt)
    _connection_options(p_stub)
    add_arguments(p_stub)
    p_serve = sub.add_parser("serve", help="serve a Flask app with gunicorn (threaded workers)", epilog=_epilog(),
                             formatter_class=fmt)
    p_serve.add_argument("target", help="module:attribute, a Flask app, an EasyRpcServer, or module:factory()")
    p_serve.add_argument("--host", default="127.0.0.1")
    p_serve.add_argument("--port", type=int, default=8090)
    p_serve.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    p_serve.add_argument("--threads", type=int, default=64,
                         help="threads per worker; each open WebSocket holds one (default: 64)")
    p_serve.add_argument("--certfile", help="serve TLS with this certificate")
    p_serve.add_argument("--keyfile", help="private key for --certfile")
    return parser


def _value(text: str) -> Any:
    if text.startswith("@@"):
        return text[1:]
    if text.startswith("@"):
        try:
            with open(text[1:], "rb") as f:
                return f.read()
        except OSError as exc:
            raise CliError(EXIT_USAGE, f"cannot read {text[1:]!r}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _ssl_context(args: argparse.Namespace, scheme: str) -> ssl.SSLContext | None:
    if scheme != "wss":
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=args.cafile)
    if args.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _connect(args: argparse.Namespace, metadata: dict[str, str] | None = None) -> Any:
    from .proxy import EasyRpcProxy

    if not args.secret:
        raise CliError(EXIT_USAGE, "no secret: pass --secret or set EASYRPC_SECRET")
    urls = re.split(r",(?=wss?://)", args.url)  # several URLs: the first that answers
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise CliError(EXIT_USAGE, f"not a ws:// or wss:// URL: {url}")
    if len({urlsplit(url).scheme for url in urls}) > 1:
        raise CliError(EXIT_USAGE, f"mixed ws:// and wss:// URLs: {args.url}")
    try:
        if args.client_id is not None:
            check_client_id(args.client_id)
    except ValueError as exc:
        raise CliError(EXIT_USAGE, f"--client-id: {exc}") from None
    return EasyRpcProxy.create_many(
        urls, server_secret=args.secret, namespace=args.namespace,
        encryption_enabled=args.encryption, timeout=args.timeout, ssl_context=_ssl_context(args, parts.scheme),
        connect_timeout=min(args.timeout, 10.0), reconnect=False, metadata=metadata, client_id=args.client_id)


def _shown(value: Any) -> Any:
    """JSON output of a value JSON has no type for: dates and times in ISO form, bytes as
    ``{"$bytes": BASE64, "len": N}``, others as str()."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(value).decode("ascii"), "len": len(bytes(value))}
    iso = getattr(value, "isoformat", None)
    return iso() if callable(iso) else str(value)


def _json(value: Any, **options: Any) -> str:
    return json.dumps(value, default=_shown, **options)


def _first_line(doc: str) -> str:
    return doc.strip().splitlines()[0] if doc.strip() else ""


def cmd_list(args: argparse.Namespace) -> int:
    with _connect(args) as proxy:
        descriptions = [proxy._engine.functions[name].description for name in proxy.proxy_funcs]
    if args.json:
        print(_json(descriptions, indent=2))
        return EXIT_OK
    for desc in descriptions:
        kind = " [generator]" if desc.get("kind") == "generator" else ""
        asyn = "async " if desc.get("is_async") else ""
        print(f"{desc.get('namespace', '')}  {asyn}{desc['name']}{desc.get('signature', '()')}{kind}")
        line = _first_line(desc.get("doc", ""))
        if line:
            print(f"    {line}")
    return EXIT_OK


def cmd_call(args: argparse.Namespace) -> int:
    positional = [_value(a) for a in args.args]
    keywords: dict[str, Any] = {}
    for item in args.kw:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CliError(EXIT_USAGE, f"--kw expects NAME=VALUE, got {item!r}")
        keywords[name] = _value(value)
    metadata: dict[str, str] = {}
    for item in args.meta:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(EXIT_USAGE, f"--meta expects KEY=VALUE, got {item!r}")
        metadata[key] = value
    try:
        check_metadata(metadata, what="--meta")
    except ValueError as exc:
        raise CliError(EXIT_USAGE, str(exc)) from None
    with _connect(args, metadata or None) as proxy:
        if args.function not in proxy:
            raise CliError(EXIT_NOT_FOUND, f"no function {args.function!r} in namespace {args.namespace!r}")
        try:
            result = proxy[args.function](*positional, **keywords)
        except RemoteError:
            raise
        except TypeError as exc:  # the arguments do not bind: nothing was sent
            raise CliError(EXIT_USAGE, f"{args.function}: {exc}") from None
        if args.output is not None:
            _write(args.output, _iterate(result) if hasattr(result, "__next__") else iter((result,)))
        elif hasattr(result, "__next__"):
            for item in _iterate(result):
                print(_json(item), flush=True)
        else:
            print(_json(result))
    return EXIT_OK


def _write(path: str, values: Iterator[Any]) -> None:
    """Bytes to *path* as they are, other values as JSON lines."""
    try:
        with open(path, "wb") as f:
            for value in values:
                f.write(value if isinstance(value, bytes) else (_json(value) + "\n").encode("utf-8"))
    except OSError as exc:
        raise CliError(EXIT_OTHER, f"cannot write {path!r}: {exc.strerror or exc}") from None


def _iterate(it: Iterator[Any]) -> Iterator[Any]:
    try:
        yield from it
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


def _load_target(target: str) -> Any:
    from flask import Flask

    from .server import EasyRpcServer

    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise CliError(EXIT_USAGE, f"expected module:attribute, got {target!r}")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(EXIT_USAGE, f"cannot import {module_name}: {exc}") from None
    call = attr.endswith("()")
    obj = getattr(module, attr[:-2] if call else attr, None)
    if obj is None:
        raise CliError(EXIT_USAGE, f"{module_name} has no attribute {attr}")
    if call:
        obj = obj()
    if isinstance(obj, EasyRpcServer):
        obj = obj.app
    if not isinstance(obj, Flask):
        raise CliError(EXIT_USAGE, f"{target} is neither a Flask app nor an attached EasyRpcServer")
    return obj


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from gunicorn.app.base import BaseApplication
    except ImportError:
        raise CliError(EXIT_USAGE, "easyrpc serve needs gunicorn: pip install 'easyrpc[serve]'") from None
    app = _load_target(args.target)
    options = {
        "bind": f"[{args.host}]:{args.port}" if ":" in args.host else f"{args.host}:{args.port}",
        "workers": args.workers,
        "worker_class": "gthread",
        "threads": args.threads,
        # WebSockets are long-lived: a worker's request timeout must not kill them.
        "timeout": 0,
        "graceful_timeout": 10,
        "keepalive": 5,
        "loglevel": "info",
        "accesslog": "-",
        "errorlog": "-",
    }
    if args.certfile:
        options.update(certfile=args.certfile, keyfile=args.keyfile)

    class Application(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return app

    Application().run()
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``easyrpc`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    level = logging.ERROR if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if args.command == "demo":
            from ._demo import run_demo

            return run_demo(sys.stdout)
        if args.command == "list":
            return cmd_list(args)
        if args.command == "call":
            return cmd_call(args)
        if args.command == "stubgen":
            return run_stubgen(args, _connect, lambda message: CliError(EXIT_USAGE, message))
        return cmd_serve(args)
    except CliError as exc:
        print(f"easyrpc: {exc}", file=sys.stderr)
        return exc.code
    except FunctionNotFound as exc:
        print(f"easyrpc: {exc.remote_message}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except RemoteError as exc:
        print(f"easyrpc: remote {exc.remote_type}: {exc.remote_message}", file=sys.stderr)
        if exc.remote_traceback:
            print(exc.remote_traceback.rstrip(), file=sys.stderr)
        return EXIT_REMOTE
    except AuthenticationError as exc:
        print(f"easyrpc: authentication failed: {exc}", file=sys.stderr)
        return EXIT_AUTH
    except CallTimeout as exc:
        print(f"easyrpc: timed out: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT
    except (ConnectionLost, ConnectionError) as exc:
        print(f"easyrpc: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except EasyRpcError as exc:
        print(f"easyrpc: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_OTHER
    except KeyboardInterrupt:
        return 130
