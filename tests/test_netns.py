"""A chain of servers on three hosts (network namespaces): a real link cut and restored (API §7).

Three easyrpc servers run in three network namespaces joined by veth pairs, each on its
own address::

    test process ──veth── A ──veth── B ──veth── C
    (root ns)   10.231.R.0/30  10.231.1.0/30  10.231.2.0/30

B links to C and A links to B, so A's clients see C's functions. The B<->C link is cut
with ``ip link set ... down`` and restored with ``... up``. Everything needs root and
``ip netns``; without them the tests are skipped. Every namespace, veth and process a
test creates is removed at teardown (processes by their own PID only); names carry a
random suffix so parallel or aborted runs do not collide.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
import secrets
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from easyrpc import FunctionNotFound, RemoteError
from easyrpc.aio import EasyRpcProxy as AioProxy
from easyrpc.proxy import EasyRpcProxy

from .conftest import SECRET, AioAdapter, wait_for

ROOT = Path(__file__).resolve().parent.parent
NODE = Path(__file__).resolve().parent / "netns_node.py"
PATH = "/ws/node"
PORT = 8090
A_B = ("10.231.1.1", "10.231.1.2")  # A's end, B's end
B_C = ("10.231.2.1", "10.231.2.2")  # B's end, C's end
OUTAGE = 3.0  # seconds the B<->C link stays down


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _netns_unavailable() -> str | None:
    """Why namespaces and veths cannot be used here, or None if they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root (creates network namespaces and veth pairs)"
    if shutil.which("ip") is None:
        return "needs the ip command (iproute2)"
    probe = f"erpc{secrets.token_hex(3)}p"
    added = _ip("netns", "add", probe, check=False)
    if added.returncode != 0:
        return f"ip netns add is not permitted here: {added.stderr.strip()}"
    try:
        veth = _ip("-n", probe, "link", "add", f"{probe}0", "type", "veth", "peer", "name", f"{probe}1", check=False)
        if veth.returncode != 0:
            return f"cannot create veth pairs: {veth.stderr.strip()}"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


class Node:
    """One server process inside a namespace, controlled through its own Popen handle."""

    def __init__(self, name: str, ns: str, host: str, links: list[str], log: Path) -> None:
        self.name = name
        self.ns = ns
        self.host = host
        self.log = log
        self._log_file: IO[str] = open(log, "w")  # noqa: SIM115 - closed in stop()
        # `ip netns exec` execs the command, so this PID is the server's own.
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, str(NODE), name, host, str(PORT), *links],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log_file, text=True)

    def wait_ready(self, timeout: float = 20) -> None:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if line.strip() != "READY":
            raise RuntimeError(f"node {self.name} did not start ({line!r}):\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self._log_file.close()


class Chain:
    """Namespaces A, B, C (and veths root-A, A-B, B-C) with a server in each: A <- B <- C."""

    def __init__(self, logdir: Path) -> None:
        self.prefix = f"erpc{secrets.token_hex(3)}"  # 10 chars: veth names stay within 15
        self.ns = {n: f"{self.prefix}{n}" for n in "abc"}
        self.logdir = logdir
        self.namespaces: list[str] = []
        self.root_veth: str | None = None
        self.nodes: list[Node] = []
        self.b_to_c = f"{self.prefix}bc"  # B's end of the B<->C pair
        self.c_to_b = f"{self.prefix}cb"  # C's end
        self.a_host = ""

    # --- building ----------------------------------------------------------------------
    def build(self) -> None:
        for n in "abc":
            _ip("netns", "add", self.ns[n])
            self.namespaces.append(self.ns[n])
            _ip("-n", self.ns[n], "link", "set", "lo", "up")
        root_net = self._free_root_subnet()
        self.root_veth = f"{self.prefix}ra"
        _ip("link", "add", self.root_veth, "type", "veth", "peer", "name", f"{self.prefix}ar", "netns", self.ns["a"])
        self.a_host = str(root_net[2])
        self._address(None, self.root_veth, str(root_net[1]))
        self._address(self.ns["a"], f"{self.prefix}ar", self.a_host)
        self._pair("a", "b", A_B)
        self._pair("b", "c", B_C)
        c = self._start("c", B_C[1])
        b = self._start("b", A_B[1], f"{B_C[1]}:{PORT}")
        a = self._start("a", self.a_host, f"{A_B[1]}:{PORT}")
        for node in (c, b, a):
            node.wait_ready()

    @staticmethod
    def _free_root_subnet() -> ipaddress.IPv4Network:
        """A /30 in 10.231.128.0/17 that no route of the root namespace overlaps."""
        for _ in range(50):
            net = ipaddress.IPv4Network(f"10.231.{random.randrange(128, 256)}.{random.randrange(0, 256, 4)}/30")
            routes = _ip("-4", "route", "show", "table", "all", "root", str(net)).stdout.strip()
            covering = _ip("-4", "route", "show", "table", "all", "match", str(net)).stdout
            if not routes and "10.231." not in covering:
                return net
        raise RuntimeError("no free 10.231.128.0/17 subnet in the root namespace")

    def _address(self, ns: str | None, dev: str, addr: str) -> None:
        where = ["-n", ns] if ns is not None else []
        _ip(*where, "addr", "add", f"{addr}/30", "dev", dev)
        _ip(*where, "link", "set", dev, "up")

    def _pair(self, x: str, y: str, addrs: tuple[str, str]) -> None:
        dev_x, dev_y = f"{self.prefix}{x}{y}", f"{self.prefix}{y}{x}"
        _ip("-n", self.ns[x], "link", "add", dev_x, "type", "veth", "peer", "name", dev_y, "netns", self.ns[y])
        self._address(self.ns[x], dev_x, addrs[0])
        self._address(self.ns[y], dev_y, addrs[1])

    def _start(self, name: str, host: str, *links: str) -> Node:
        node = Node(name, self.ns[name], host, list(links), self.logdir / f"node-{name}.log")
        self.nodes.append(node)
        return node

    # --- faults ------------------------------------------------------------------------
    def set_link(self, ns: str, dev: str, state: str) -> None:
        _ip("-n", ns, "link", "set", dev, state)

    # --- teardown ----------------------------------------------------------------------
    def logs(self, lines: int = 40) -> str:
        out = []
        for node in self.nodes:
            tail = node.log.read_text(errors="replace").splitlines()[-lines:] if node.log.exists() else []
            out.append(f"--- node {node.name} ({node.log}) ---\n" + "\n".join(tail))
        return "\n".join(out)

    def close(self) -> None:
        errors = []
        for node in reversed(self.nodes):
            try:
                node.stop()
            except Exception as exc:  # noqa: BLE001 - keep tearing down, report at the end
                errors.append(f"stopping node {node.name}: {exc}")
        if self.root_veth is not None:
            _ip("link", "del", self.root_veth, check=False)  # also removes its peer in A
        for ns in reversed(self.namespaces):
            done = _ip("netns", "del", ns, check=False)
            if done.returncode != 0:
                errors.append(f"ip netns del {ns}: {done.stderr.strip()}")
        left = [ns for ns in self.namespaces if ns in _ip("netns", "list", check=False).stdout]
        if self.root_veth is not None and _ip("link", "show", self.root_veth, check=False).returncode == 0:
            left.append(self.root_veth)
        assert not errors and not left, f"teardown problems: {errors}, still present: {left}"


@pytest.fixture
def chain(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Chain]:
    """The A <- B <- C chain in three namespaces, torn down (processes, veths, namespaces) after."""
    reason = _netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    failed_before = request.session.testsfailed
    c = Chain(tmp_path)
    try:
        c.build()
        yield c
    finally:
        if request.session.testsfailed != failed_before:
            print(c.logs())  # shown with the failure report
        c.close()


def _names(proxy: EasyRpcProxy) -> set[str]:
    return {f["name"] for f in proxy.get_registered_functions()}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cut_at", ["b", "c"], ids=["cut-at-b", "cut-at-c"])
def test_cutting_b_c_withdraws_c_from_a_and_restoring_it_brings_c_back(
        chain: Chain, aio_loop: asyncio.AbstractEventLoop, cut_at: str) -> None:
    """A real B<->C cut withdraws C's functions from A's clients in seconds (calls fail fast); link up brings them back."""
    # Down at B's end, B loses its route to C (connects fail with ENETUNREACH); down at
    # C's end, B's veth only loses carrier, so B's packets to C are silently dropped.
    ns, dev = (chain.ns["b"], chain.b_to_c) if cut_at == "b" else (chain.ns["c"], chain.c_to_b)
    p = EasyRpcProxy.create(chain.a_host, PORT, PATH, server_secret=SECRET, timeout=5)
    ap: Any = None
    try:
        ap = AioAdapter(aio_loop, asyncio.run_coroutine_threadsafe(
            AioProxy.create(chain.a_host, PORT, PATH, server_secret=SECRET, timeout=5), aio_loop).result(30))
        assert wait_for(lambda: "c_echo" in p and "c_echo" in ap and "whoami_b" in p, timeout=20), \
            f"C's functions never reached A: {sorted(p.proxy_funcs)}"
        assert p.c_echo(1) == ["c", 1] and ap.c_echo(1) == ["c", 1]
        assert (p.whoami_a(), p.whoami_b(), p.whoami_c()) == ("a", "b", "c")
        held, aheld = p.c_echo, ap.c_echo  # functions held from before the cut
        in_flight = p.c_sleep.with_timeout(30).submit(30)  # running on C when the link goes
        ticks = p.c_ticks.with_timeout(5)(100_000, 0.02)  # a stream running (5 s limit per item)
        assert [next(ticks) for _ in range(3)] == [0, 1, 2]

        chain.set_link(ns, dev, "down")
        cut = time.monotonic()
        assert wait_for(lambda: "c_echo" not in p and "c_echo" not in ap, timeout=5, interval=0.005), \
            "C's functions are still offered 5 s after the B<->C link went down"
        withdrawn = time.monotonic() - cut
        # only C's functions went: B is still there
        assert "whoami_b" in p and p.whoami_b() == "b"
        assert not {n for n in _names(p) if n.startswith("c_") or n == "whoami_c"}
        # the call in flight on C fails (the link reports its loss), it does not hang to its 30 s limit
        exc = in_flight.exception(timeout=5)
        assert isinstance(exc, RemoteError) and "ConnectionLost" in str(exc), repr(exc)
        assert time.monotonic() - cut < 5
        # so does the stream (after the items already received): an error, not a CallTimeout
        with pytest.raises(RemoteError, match="ConnectionLost"):
            for _ in ticks:
                pass
        assert time.monotonic() - cut < 6
        # a held function fails at once with FunctionNotFound
        for fn in (held, aheld):
            start = time.monotonic()
            with pytest.raises(FunctionNotFound):
                fn(2)
            assert time.monotonic() - start < 1.0

        # An outage of OUTAGE seconds, not a blip: B's reconnect backoff reaches its maximum
        # (max_backoff=0.5), so the restore time measured below is that of a real outage.
        while time.monotonic() - cut < OUTAGE:
            assert "c_echo" not in p and "c_echo" not in ap, "C's functions came back while the link was down"
            time.sleep(0.05)
        chain.set_link(ns, dev, "up")
        restored = time.monotonic()
        assert wait_for(lambda: "c_echo" in p and "c_echo" in ap, timeout=15, interval=0.005), \
            "C's functions did not come back within 15 s of the B<->C link coming up"
        back = time.monotonic() - restored
        assert held(3) == ["c", 3] and aheld(3) == ["c", 3]
        assert p.whoami_c() == "c"
        print(f"\n[netns] B<->C cut at {cut_at.upper()}'s end: C's functions withdrawn from A's clients after {withdrawn:.3f} s; "
              f"link up: back after {back:.3f} s")
        assert back < 5, f"C's functions took {back:.1f} s to come back"
    finally:
        if ap is not None:
            ap.close()
        p.close()
