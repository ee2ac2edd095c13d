"""The seed README's client, blocking: run examples/server.py first.

Run: python examples/client.py
"""

import os

from easyrpc.proxy import EasyRpcProxy

PORT = int(os.environ.get('EASYRPC_PORT', '8090'))


def main():
    p = EasyRpcProxy.create('127.0.0.1', PORT, '/ws/server_a', server_secret='abcd1234')

    good_func_a = p.proxy_funcs['good_func_a']
    result = good_func_a(1, 5, 7)
    print(result)

    result = p.proxy_funcs['good_func_c'](1, keyword='value')
    print(result)

    print(p.proxy_funcs)

    # A helpful look at a proxy's signature: good_func_c(a, **kw)
    help(p.proxy_funcs['good_func_c'])

    # Beyond the seed: futures, streaming, async functions, the admin namespace.
    fut = p.good_func_a.submit(2, 4, 6)
    print(fut.result(timeout=5))
    print(list(p.count_up(5)))
    print(p.slow_add(1, 2))
    p.close()

    with EasyRpcProxy.create('127.0.0.1', PORT, '/ws/server_a', server_secret='abcd1234', namespace='admin') as admin:
        print(admin.reset(force=True))


if __name__ == '__main__':
    main()
