"""The ``easyrpc`` command line."""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="easyrpc", description="easyrpc command line")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run a server and a client on loopback and show calls")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command == "demo":
        from ._demo import run_demo

        return run_demo(sys.stdout)
    return 2
