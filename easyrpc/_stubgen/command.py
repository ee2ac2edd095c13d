"""The ``easyrpc stubgen`` command: write the typed module, or ``--check`` one."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from .check import differences
from .render import class_name_for, render_module

__all__ = ["EXIT_DRIFT", "add_arguments", "run_stubgen"]

EXIT_DRIFT = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``stubgen``'s own arguments (the connection's are the command line's common ones)."""
    parser.add_argument("file", nargs="?", help="with --check: the module to check")
    parser.add_argument("-o", "--output", metavar="FILE", help="write the module to FILE (default: standard output)")
    parser.add_argument("--check", action="store_true",
                        help=f"compare FILE with the server: exit {EXIT_DRIFT} listing the differences if they differ")
    parser.add_argument("--class-name", metavar="NAME",
                        help="the blocking Protocol's name (the async one's is AsyncNAME; default: from the "
                             "URL's last path segment, /ws/server_a -> ServerA)")


def _proxy_attributes() -> set[str]:
    from ..aio import EasyRpcProxy as AioProxy
    from ..proxy import EasyRpcProxy

    return set(dir(EasyRpcProxy)) | set(dir(AioProxy))


def run_stubgen(args: argparse.Namespace, connect: Callable[[argparse.Namespace], Any],
                usage_error: Callable[[str], Exception]) -> int:
    """Run the command; *connect* opens the blocking proxy the command line describes."""
    if isinstance(args.url, list):  # a command line that takes several URLs: FILE is the last word
        if args.check and args.file is None and len(args.url) > 1:
            args.file = args.url.pop()
        url = args.url[0]
    else:
        url = args.url
    class_name = args.class_name or class_name_for(urlsplit(url).path)
    if not class_name.isidentifier() or not class_name.isascii():
        raise usage_error(f"--class-name: not an identifier: {class_name!r}")
    if args.check and args.file is None:
        raise usage_error("stubgen --check needs the FILE to check")
    if args.file is not None and not args.check:
        raise usage_error("FILE is only for --check (write with -o FILE)")
    if args.check:
        try:
            with open(args.file, encoding="utf-8") as f:
                file_text = f.read()
        except OSError as exc:
            raise usage_error(f"cannot read {args.file!r}: {exc.strerror or exc}") from None
    with connect(args) as proxy:
        descriptions = [proxy._engine.functions[name].description for name in proxy.proxy_funcs]
    text = render_module(descriptions, class_name, namespace=args.namespace, skip=_proxy_attributes())
    if args.check:
        diff = differences(file_text, text)
        if not diff:
            print(f"{args.file} matches {url} (namespace {args.namespace})")
            return 0
        print(f"{args.file} does not match {url} (namespace {args.namespace}):", file=sys.stderr)
        print("\n".join(diff), file=sys.stderr)
        return EXIT_DRIFT
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise usage_error(f"cannot write {args.output!r}: {exc.strerror or exc}") from None
    return 0
