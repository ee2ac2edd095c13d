"""A real nginx in front of easyrpc servers, for the tests (and ``benchmarks/nginx.py``).

:data:`SITE` is the configuration the README's "Deployment" section shows (an upstream
of the backends, WebSocket upgrade headers, TLS, read timeout): the tests fill in
loopback ports and a short read timeout, wrap it in :data:`MAIN` (no daemon, one
process, pid, logs and temp files in the test's directory) and start
``nginx -p DIR -c DIR/nginx.conf -e DIR/error.log``, stopped by its PID (its Popen
handle: terminate, then kill). With ``master_process off`` nginx is that one process.

Where nginx is missing the tests skip, except under CI (``CI`` set), where ``.ci/run``
installs it: there they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

STARTUP_TIMEOUT = 15.0
STOP_GRACE = 10.0

# What the README shows (tests/test_nginx.py checks it is there, with the README's values).
SITE = """\
upstream easyrpc {{
    server {backend_a} max_fails=1 fail_timeout=10s;
    server {backend_b} max_fails=1 fail_timeout=10s;
}}

map $http_upgrade $connection_upgrade {{
    default upgrade;
    ''      close;
}}

server {{
    listen {listen};
    listen {listen_tls} ssl;
    ssl_certificate     {cert};
    ssl_certificate_key {key};

    location /ws/ {{
        proxy_pass http://easyrpc;
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_connect_timeout 5s;
        # an idle WebSocket is closed after this: keep it above easyrpc's ping_interval
        proxy_read_timeout {read_timeout};
        proxy_send_timeout {read_timeout};
    }}

    location / {{
        proxy_pass http://easyrpc;
    }}
}}
"""

MAIN = """\
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{
    worker_connections 4096;
}}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{site}}}
"""


def nginx_binary() -> str:
    """The nginx executable; skip the test where there is none (fail under CI)."""
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                           if os.access(p, os.X_OK)), None)
    if found is None:
        message = "nginx is not installed (apt-get install nginx; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Nginx:
    """nginx on two free loopback ports (plain and TLS) in front of *backends* (ports)."""

    host = "127.0.0.1"

    def __init__(self, directory: Path, backends: list[int], cert: Path, key: Path, read_timeout: str) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.backends, self.cert, self.key, self.read_timeout = backends, cert, key, read_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        for _ in range(3):  # a free port taken by another process meanwhile: try others
            self.port, self.tls_port = _free_port(), _free_port()
            if self._start():
                return
        raise RuntimeError(f"nginx did not start: {self.log()}")

    def site(self) -> str:
        return SITE.format(backend_a=f"127.0.0.1:{self.backends[0]}", backend_b=f"127.0.0.1:{self.backends[1]}",
                           listen=f"127.0.0.1:{self.port}", listen_tls=f"127.0.0.1:{self.tls_port}",
                           cert=self.cert, key=self.key, read_timeout=self.read_timeout)

    def _start(self) -> bool:
        conf = self.dir / "nginx.conf"
        conf.write_text(MAIN.format(dir=self.dir, site=self.site()))
        with (self.dir / "stderr.log").open("ab") as err:
            self.proc = subprocess.Popen([nginx_binary(), "-p", str(self.dir), "-c", str(conf),
                                          "-e", str(self.dir / "error.log")],
                                         stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while self.proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://{self.host}:{self.port}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return True
            time.sleep(0.05)
        self.stop()
        if "Address already in use" in self.log():
            return False
        raise RuntimeError(f"nginx did not answer within {STARTUP_TIMEOUT} s: {self.log()}")

    def log(self) -> str:
        text = ""
        for name in ("stderr.log", "error.log"):
            with contextlib.suppress(OSError):
                text += (self.dir / name).read_text(errors="replace")[-1500:]
        return text

    def stop(self) -> None:
        """Terminate nginx (its own PID), then kill."""
        proc = self.proc
        if proc is None:
            return
        for action in (proc.terminate, proc.kill):
            if proc.poll() is not None:
                break
            action()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_GRACE)
