"""Every example in examples/ runs as written against its server, started as a subprocess."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _start(script: str, port: int) -> subprocess.Popen[str]:
    if _port_open(port):
        pytest.fail(f"port {port} is taken; the seed examples need it free")
    env = {**os.environ, "EASYRPC_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(EXAMPLES / script)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 20
    while not _port_open(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out = proc.communicate(timeout=5)[0]
            pytest.fail(f"{script} did not start:\n{out}")
        time.sleep(0.05)
    return proc


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    try:
        return proc.communicate(timeout=10)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate(timeout=5)[0]


def _run(script: str, port: int) -> str:
    env = {**os.environ, "EASYRPC_PORT": str(port)}
    done = subprocess.run([sys.executable, str(EXAMPLES / script)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture
def example_server() -> Iterator[None]:
    proc = _start("server.py", 8090)  # the seed's clients hard-code port 8090
    yield
    log = _stop(proc)
    assert "good_func_a 1 5 7" in log


def test_blocking_client_example(example_server: None) -> None:
    out = _run("client.py", 8090)
    assert "{'good_func_a': [1, 5, 7]}" in out
    assert "{'good_func_c': [1, {'keyword': 'value'}]}" in out
    assert "good_func_c(a, **kw)" in out
    assert "[0, 1, 2, 3, 4]" in out and "reset (force=True)" in out


def test_seed_async_examples_run_with_only_the_import_changed(example_server: None) -> None:
    seed = (ROOT.parent / "shared" / "seed" / "easyrpc-README.txt")
    for script in ("aio_client_basic.py", "aio_client_advanced.py"):
        source = (EXAMPLES / script).read_text()
        assert "from easyrpc.aio import EasyRpcProxy" in source
        if seed.exists():  # the code lines are the seed's, but for the import
            seed_text = seed.read_text()
            code = [ln.strip() for ln in source.splitlines() if ln.strip() and not ln.startswith("#")]
            for line in code:
                if line != "from easyrpc.aio import EasyRpcProxy":
                    assert line in seed_text, line
        out = _run(script, 8090)
        assert "{'good_func_a': [1, 5, 7]}" in out
    assert "'good_func_c': <function good_func_c" in out


def test_flask_app_example_serves_routes_and_rpc() -> None:
    import urllib.request

    proc = _start("flask_app.py", 8091)
    try:
        with urllib.request.urlopen("http://127.0.0.1:8091/", timeout=5) as resp:
            assert b"shout" in resp.read()
        out = _run("flask_app_client.py", 8091)
        assert out.split() == ["5.0", "False", "2.0", "HELLO"]  # add(a: float, b: float): ints arrive as floats
    finally:
        _stop(proc)


def test_cluster_example_chain_of_three_processes() -> None:
    for port in (8091, 8092, 8093):
        if _port_open(port):
            pytest.fail(f"port {port} is taken; the cluster example needs it free")
    done = subprocess.run([sys.executable, str(EXAMPLES / "cluster" / "run_chain.py")], cwd=ROOT,
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "['count_a', 'count_b', 'count_c', 'where_a', 'where_b', 'where_c']" in done.stdout
    assert "where_c -> c" in done.stdout and "count_c(3) -> ['c:0', 'c:1', 'c:2']" in done.stdout


def test_typed_values_example() -> None:
    """Typed values, a record rebuilt from its annotation, a refusal naming the parameter, a real default."""
    out = _run("typed_values.py", 0).splitlines()
    assert out[0].startswith("[datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=") and out[0].endswith("'2024-05-06']")
    assert out[1:] == ["7.00 [{'sku': 'tea', 'qty': 2, 'size': 'l'}]", "True",
                       "ArgumentError: place() argument 'order' at .lines[0].qty: Input should be a valid integer, got str 'two'",
                       "2030-01-01"]


def test_identities_example() -> None:
    """Two client credentials see and call different functions; a revoked key is closed and refused."""
    out = _run("identities.py", 0).splitlines()
    assert out == ["['get_registered_functions', 'refund', 'sales']", "order 7 refunded",
                   "['get_registered_functions', 'sales']", "sales of 2030-01-01, for reporting: 42",
                   "not offered: EasyRpcProxy has no remote function 'refund'", "revoked, 1 connection closed",
                   "the server refused the connection: authentication failed"]


def test_authorization_example() -> None:
    """Metadata carries a role; a server interceptor refuses what the role may not call and audits the rest."""
    out = _run("authorization.py", 0).splitlines()
    assert out == ["balance for ann: 100", "refused: role 'reader' may not call reset", "reset done",
                   "ann balance -> ok", "ann reset -> CallRefused", "ann reset -> ok"]


def test_progress_example_draws_a_bar_from_the_servers_callbacks() -> None:
    """A callable argument called back by a long job, and a callback whose answer stops it."""
    out = _run("progress.py", 0).splitlines()
    assert out[-2:] == ["finished 10 steps", "stopped after 3 of 10 steps"]
    try:
        import tqdm  # noqa: F401
    except ImportError:
        assert out[:10] == [f"[{'#' * (2 * i)}{'.' * (20 - 2 * i)}] {i}/10" for i in range(1, 11)]


def test_pushes_example_delivers_events_to_subscribers_until_they_leave() -> None:
    out = _run("pushes.py", 0).splitlines()
    assert out == ["subscribed to weather", "subscribed to weather", "delivered to 2 subscribers",
                   "delivered to 1 subscribers", "blocking client: weather: sunny",
                   "blocking client: weather: rain", "async client: weather: sunny"]
