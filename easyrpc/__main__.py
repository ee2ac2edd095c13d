"""The ``easyrpc`` command line (also ``python -m easyrpc``)."""

from __future__ import annotations

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
