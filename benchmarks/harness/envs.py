"""One virtualenv per foreign system under ``benchmarks/.venvs/``, so their dependencies
never meet ours or each other's.

A venv is (re)built only when its requirement list changes: the list is stored in the
venv as ``bench-requirements.txt`` after a successful install.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

VENVS_DIR = Path(__file__).resolve().parent.parent / ".venvs"
INSTALL_TIMEOUT = 900.0
STAMP = "bench-requirements.txt"

# Pinned so that every run measures the same code; bump deliberately.
REQUIREMENTS: dict[str, tuple[str, ...]] = {
    # The original easyrpc pins PyJWT itself; the rest of its stack is pinned here to the
    # versions this harness was written against (its server needs the lifespan hook).
    "original": ("easyrpc==0.251", "fastapi==0.165.0", "uvicorn==0.54.0", "websockets==17.4", "aiohttp==3.14.5"),
    "rpyc": ("rpyc==6.0.2",),
    "pyro5": ("Pyro5==5.17",),
    # the newest grpcio on PyPI when this was added; generic handlers, so no protobuf/codegen
    "grpc": ("grpcio==1.85.3",),
    # matplotlib for the chart, py-spy for profile_seq.py: kept out of the runner's env.
    "tools": ("matplotlib==3.11.2", "py-spy==0.4.3"),
}

# The distribution whose version a venv reports for the results.
MAIN_DIST = {"original": "easyrpc", "rpyc": "rpyc", "pyro5": "Pyro5", "grpc": "grpcio", "tools": "matplotlib"}


class EnvError(RuntimeError):
    pass


def python_of(key: str) -> Path:
    return VENVS_DIR / key / "bin" / "python"


def ensure(key: str, log: Path) -> Path:
    """The python of venv *key*, creating or updating it first if needed."""
    wanted = "\n".join(REQUIREMENTS[key]) + "\n"
    root = VENVS_DIR / key
    stamp = root / STAMP
    python = python_of(key)
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    if root.exists():
        shutil.rmtree(root)
    VENVS_DIR.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"  setting up {root.relative_to(VENVS_DIR.parent)} ({', '.join(REQUIREMENTS[key])}) ...", flush=True)
    with log.open("w") as out:
        steps = [
            [sys.executable, "-m", "venv", str(root)],
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", *REQUIREMENTS[key]],
        ]
        for cmd in steps:
            try:
                proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT, check=False)
            except subprocess.TimeoutExpired:
                raise EnvError(f"{' '.join(cmd[:4])} timed out after {INSTALL_TIMEOUT:.0f} s (see {log})") from None
            if proc.returncode != 0:
                raise EnvError(f"{' '.join(cmd[:4])} failed with exit code {proc.returncode} (see {log})")
    stamp.write_text(wanted)
    return python


def version_in(python: Path | str, dist: str) -> str:
    """The installed version of *dist* as seen by *python* ("?" if unknown)."""
    code = f"import importlib.metadata as m; print(m.version({dist!r}))"
    try:
        # -I: not the current directory (this checkout's easyrpc.egg-info) nor PYTHONPATH
        proc = subprocess.run([str(python), "-I", "-c", code], capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        return "?"
    return proc.stdout.strip() if proc.returncode == 0 else "?"
