"""Run a command pinned to CPUs: ``python pin.py CPUS cmd [args...]`` (Linux).

CPUS is a comma-separated list (``0`` or ``0,1``). The affinity is set on this process and
kept across ``exec``, so every thread the command starts inherits it. Used by
``run.py --pin`` to give clients and servers a core each.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit("usage: pin.py CPUS cmd [args...]")
    cpus = {int(c) for c in sys.argv[1].split(",")}
    os.sched_setaffinity(0, cpus)
    os.execv(sys.argv[2], sys.argv[2:])


if __name__ == "__main__":
    main()
