"""Start the three nodes (C, then B linked to C, then A linked to B), run the client, stop them.

Run: python examples/cluster/run_chain.py
"""

import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PORTS = {'a': 8091, 'b': 8092, 'c': 8093}


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f'a node exited early with code {proc.returncode}')
        with socket.socket() as s:
            if s.connect_ex(('127.0.0.1', port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f'nothing listens on port {port}')


def main() -> int:
    nodes = []
    try:
        for name, link in (('c', None), ('b', 'c'), ('a', 'b')):
            cmd = [sys.executable, os.path.join(HERE, 'node.py'), name, str(PORTS[name])]
            if link:
                cmd += ['--link', f'127.0.0.1:{PORTS[link]}']
            proc = subprocess.Popen(cmd)
            nodes.append(proc)
            wait_port(PORTS[name], proc)
        env = {**os.environ, 'EASYRPC_PORT': str(PORTS['a'])}
        return subprocess.run([sys.executable, os.path.join(HERE, 'client.py')], env=env, timeout=60).returncode
    finally:
        for proc in reversed(nodes):
            proc.terminate()
        for proc in nodes:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


if __name__ == '__main__':
    raise SystemExit(main())
