"""The easyrpc command line against real loopback servers, each error with its exit code (API §8)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

import pytest

from easyrpc._cli import EXIT_AUTH, EXIT_NOT_FOUND, EXIT_REMOTE, EXIT_TIMEOUT, EXIT_UNREACHABLE, EXIT_USAGE

from .apps import build_app
from .conftest import SECRET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def easyrpc(*args: str, secret: str | None = SECRET, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EASYRPC_SECRET"}
    if secret is not None:
        env["EASYRPC_SECRET"] = secret
    return subprocess.run([sys.executable, "-m", "easyrpc", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


@pytest.fixture
def url(serve: Any) -> str:
    app, rpc, _ = build_app()
    served = serve(app, rpc)
    return f"ws://127.0.0.1:{served.port}/ws/test"


def test_demo_runs_and_exits_zero() -> None:
    done = easyrpc("demo", secret=None)
    assert done.returncode == 0, done.stderr
    for expected in ("{'good_func_a': [1, 5, 7]}", "submit(12).result() -> 144", "[0, 1, 2, 3, 4]",
                     "ZeroDivisionError", "good_func_a(a: int, b: int, c: int)", "[0.0, 1.0, 4.0, 9.0, 16.0]", "demo: done"):
        assert expected in done.stdout


def test_list_shows_signatures_namespaces_and_docs(url: str) -> None:
    done = easyrpc("list", url)
    assert done.returncode == 0, done.stderr
    assert ("DEFAULT  annotated(x: int, y: Optional[str] = None, *args: float, flag: bool = False, **kw: Any)"
            " -> dict[str, Any]") in done.stdout
    assert "    Echo the arguments it was given." in done.stdout
    assert "A second line" not in done.stdout
    assert "async aslow(seconds: float) -> float" in done.stdout
    assert "count_up(n: int) -> Iterator[int] [generator]" in done.stdout
    assert "reset" not in done.stdout
    admin = easyrpc("list", url, "--namespace", "admin")
    assert "admin  reset(force: bool = False) -> str" in admin.stdout


def test_list_json(url: str) -> None:
    done = easyrpc("list", url, "--json")
    funcs = {f["name"]: f for f in json.loads(done.stdout)}
    assert funcs["good_func_a"]["signature"] == "(a, b, c)"


def test_call_parses_json_arguments_and_keywords(url: str) -> None:
    done = easyrpc("call", url, "good_func_a", "1", "[2, 3]", "hello")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"good_func_a": [1, [2, 3], "hello"]}
    done = easyrpc("call", url, "good_func_c", "1", "--kw", "keyword=value", "--kw", 'n={"a": null}')
    assert json.loads(done.stdout) == {"good_func_c": [1, {"keyword": "value", "n": {"a": None}}]}


def test_call_streams_one_json_line_per_item(url: str) -> None:
    done = easyrpc("call", url, "count_up", "3")
    assert done.stdout.splitlines() == ["0", "1", "2"]


def test_remote_error_prints_type_message_traceback_and_exits_1(url: str) -> None:
    done = easyrpc("call", url, "fail", "KeyError", "missing")
    assert done.returncode == EXIT_REMOTE
    assert "remote KeyError: 'missing'" in done.stderr
    assert "Traceback (most recent call last)" in done.stderr
    assert done.stdout == ""


def test_unknown_function_exit_code(url: str) -> None:
    done = easyrpc("call", url, "reset")
    assert done.returncode == EXIT_NOT_FOUND
    assert done.stderr.count("\n") == 1 and "reset" in done.stderr


def test_wrong_secret_is_one_line_and_exit_code(url: str) -> None:
    done = easyrpc("list", url, secret="nope")
    assert done.returncode == EXIT_AUTH
    assert done.stderr.startswith("easyrpc: authentication failed") and done.stderr.count("\n") == 1
    assert "nope" not in done.stderr


def test_unreachable_server_exit_code() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    done = easyrpc("call", f"ws://127.0.0.1:{port}/ws/test", "echo", "1")
    assert done.returncode == EXIT_UNREACHABLE
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_timeout_exit_code(url: str) -> None:
    done = easyrpc("call", url, "aslow", "5", "--timeout", "0.3")
    assert done.returncode == EXIT_TIMEOUT


def test_usage_errors(url: str) -> None:
    assert easyrpc("call", url, "good_func_a", "1").returncode == EXIT_USAGE  # does not bind
    assert easyrpc("list", url, secret=None).returncode == EXIT_USAGE  # no secret
    assert easyrpc("list", "http://x/").returncode == EXIT_USAGE
    assert easyrpc("bogus").returncode == EXIT_USAGE
    helptext = easyrpc("--help").stdout
    for code in (EXIT_REMOTE, EXIT_UNREACHABLE, EXIT_AUTH, EXIT_NOT_FOUND, EXIT_TIMEOUT):
        assert f"  {code}  " in helptext


@pytest.mark.timeout(60)
def test_serve_runs_an_app_under_gunicorn_with_several_workers() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "EASYRPC_SECRET": SECRET}
    proc = subprocess.Popen([sys.executable, "-m", "easyrpc", "serve", "examples.flask_app:create_app()",
                             "--port", str(port), "--workers", "2", "--threads", "8"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.1)
        for _ in range(6):  # connections land on either worker; each must work
            done = easyrpc("call", f"ws://127.0.0.1:{port}/ws/rpc", "add", "2", "3", "--namespace", "math")
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout) == 5
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0]
    assert "gthread" in out or "Booting worker" in out


# --- bytes (issue #21) -------------------------------------------------------------------------
@pytest.fixture
def binary_url(serve: Any) -> str:
    from .test_binary import build_binary_app

    served = serve(*build_binary_app())
    return f"ws://127.0.0.1:{served.port}/ws/test"


def test_call_passes_a_files_bytes_with_at_path(binary_url: str, tmp_path: Any) -> None:
    data = bytes(range(256)) * 1000
    (tmp_path / "blob.bin").write_bytes(data)
    done = easyrpc("call", binary_url, "length", f"@{tmp_path / 'blob.bin'}")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == len(data)
    done = easyrpc("call", binary_url, "types_of", "@@literal", "--kw", f"k=@{tmp_path / 'blob.bin'}")
    assert json.loads(done.stdout) == [["str"], {"k": "bytes"}]
    missing = easyrpc("call", binary_url, "length", f"@{tmp_path / 'nope.bin'}")
    assert missing.returncode == EXIT_USAGE and "cannot read" in missing.stderr


def test_call_prints_bytes_as_base64_with_their_length(binary_url: str) -> None:
    import base64

    done = easyrpc("call", binary_url, "make", "2", "3")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"$bytes": base64.b64encode(b"\x00" * 3).decode(), "len": 3},
                                       {"$bytes": base64.b64encode(b"\x01" * 3).decode(), "len": 3}]
    help_text = easyrpc("call", "--help").stdout
    assert "$bytes" in help_text and "@PATH" in help_text and "--output" in help_text


def test_call_writes_a_bytes_result_or_stream_to_a_file_with_o(binary_url: str, tmp_path: Any) -> None:
    data = os.urandom(3 << 20)
    (tmp_path / "in.bin").write_bytes(data)
    done = easyrpc("call", binary_url, "echo", f"@{tmp_path / 'in.bin'}", "-o", str(tmp_path / "out.bin"))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and (tmp_path / "out.bin").read_bytes() == data
    done = easyrpc("call", binary_url, "chunks", "3", "4", "--output", str(tmp_path / "stream.bin"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "stream.bin").read_bytes() == b"\x00" * 4 + b"\x01" * 4 + b"\x02" * 4
    done = easyrpc("call", binary_url, "echo", '{"a": 1}', "-o", str(tmp_path / "json.txt"))
    assert (tmp_path / "json.txt").read_text() == '{"a": 1}\n'


def test_call_sends_meta_key_values_as_call_metadata(serve: Any) -> None:
    from flask import Flask

    from easyrpc.server import EasyRpcServer, call_context

    app = Flask("cli-meta")
    rpc = EasyRpcServer(app, "/ws/meta", server_secret=SECRET)

    @rpc.origin
    def metadata() -> dict[str, str]:
        ctx = call_context()
        return dict(ctx.metadata) if ctx is not None else {}

    served = serve(app, rpc)
    url = f"ws://127.0.0.1:{served.port}/ws/meta"
    done = easyrpc("call", url, "metadata", "--meta", "role=admin", "--meta", "note=a=b c")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"role": "admin", "note": "a=b c"}
    bad = easyrpc("call", url, "metadata", "--meta", "novalue")
    assert bad.returncode == EXIT_USAGE and "--meta expects KEY=VALUE" in bad.stderr
    big = easyrpc("call", url, "metadata", "--meta", "k=" + "x" * 5000)
    assert big.returncode == EXIT_USAGE and "at most 4096 characters" in big.stderr


def test_list_and_call_with_a_client_id(serve: Any) -> None:
    """--client-id proves that id with its own secret: list shows (and call reaches) only
    what its Access allows; an unknown id is an authentication failure."""
    from flask import Flask

    from easyrpc.server import Access, EasyRpcServer, call_context

    from .conftest import watch_secret

    watch_secret("cli-reporting-key-7a1c")
    app = Flask("cli-identity")
    rpc = EasyRpcServer(app, "/ws/id", credentials={"reporting": "cli-reporting-key-7a1c"},
                        access={"reporting": Access(tags={"read"})})

    @rpc.origin(tags={"read"})
    def whoami() -> str | None:
        ctx = call_context()
        return ctx.identity if ctx is not None else None

    @rpc.origin(tags={"admin"})
    def wipe() -> str:
        return "wiped"

    served = serve(app, rpc)
    url = f"ws://127.0.0.1:{served.port}/ws/id"
    listed = easyrpc("list", url, "--client-id", "reporting", "--json", secret="cli-reporting-key-7a1c")
    assert listed.returncode == 0, listed.stderr
    assert {d["name"] for d in json.loads(listed.stdout)} == {"whoami", "get_registered_functions"}
    done = easyrpc("call", url, "whoami", "--client-id", "reporting", secret="cli-reporting-key-7a1c")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == "reporting"
    refused = easyrpc("call", url, "wipe", "--client-id", "reporting", secret="cli-reporting-key-7a1c")
    assert refused.returncode == EXIT_NOT_FOUND
    unknown = easyrpc("list", url, "--client-id", "nobody", secret="cli-reporting-key-7a1c")
    assert unknown.returncode == EXIT_AUTH and "cli-reporting-key-7a1c" not in unknown.stderr
    bad = easyrpc("list", url, "--client-id", "*", secret="cli-reporting-key-7a1c")
    assert bad.returncode == EXIT_USAGE
