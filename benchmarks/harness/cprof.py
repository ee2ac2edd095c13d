"""Run a script under cProfile in *every* thread, timing CPU per thread; dump merged stats.

    python cprof.py OUT.prof SCRIPT [ARGS...]

cProfile alone sees only the thread that enabled it, while easyrpc does most of its work
on reader, dispatcher and worker threads. Here each new thread enables its own profiler
(timed with ``time.thread_time``, so a thread blocked in recv or a lock wait costs
nothing), and when the script ends (a server ends on SIGTERM) all are merged into OUT.
"""

from __future__ import annotations

import cProfile
import pstats
import runpy
import sys
import threading
import time
from pathlib import Path
from typing import Any

_profilers: list[cProfile.Profile] = []
_lock = threading.Lock()


def _new_profiler() -> cProfile.Profile:
    prof = cProfile.Profile(time.thread_time)
    with _lock:
        _profilers.append(prof)
    return prof


def _thread_hook(frame: Any, event: str, arg: Any) -> None:
    # The first event of a new thread: replace this hook with the thread's own profiler.
    sys.setprofile(None)
    _new_profiler().enable()


def main() -> None:
    out, script, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    sys.argv = [script, *args]
    sys.path.insert(0, str(Path(script).resolve().parent))
    threading.setprofile(_thread_hook)
    main_prof = _new_profiler()
    main_prof.enable()
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit:
        pass
    finally:
        main_prof.disable()
        threading.setprofile(None)
        with _lock:
            profilers = list(_profilers)
        stats = pstats.Stats(profilers[0])
        for prof in profilers[1:]:
            try:
                stats.add(prof)
            except TypeError:  # a profiler that never saw a call
                pass
        stats.dump_stats(out)


if __name__ == "__main__":
    main()
