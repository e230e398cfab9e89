"""Round-trip latency of a robobench policy server vs the floor: a bare websockets + msgpack-numpy server.

Loopback, 2 x 224x224x3 uint8 images + state per request, a dummy policy (seeded random [10, 7] chunk).
Both servers run as child processes; the client is openpi's unmodified WebsocketClientPolicy. Rounds are
interleaved so machine load hits both alike. Prints p50/p99 per server and the p50 ratio (goal <= 1.1x).

    .venv/bin/python benchmarks/serve_latency.py [--n 300] [--rounds 5]
"""
import argparse, subprocess, sys, textwrap, time

import numpy as np

ECHO = textwrap.dedent('''
    import asyncio, sys, numpy as np
    from websockets.asyncio.server import serve
    from openpi_client import msgpack_numpy
    async def handler(ws):
        packer = msgpack_numpy.Packer()
        await ws.send(packer.pack({"policy_type": "bare"}))
        rng = np.random.default_rng(0)
        async for msg in ws:
            obs = msgpack_numpy.unpackb(msg)
            await ws.send(packer.pack({"actions": rng.uniform(-1, 1, (10, 7)).astype(np.float32)}))
    async def main():
        async with serve(handler, "127.0.0.1", int(sys.argv[1]), compression=None, max_size=None):
            print("ready", flush=True); await asyncio.Future()
    asyncio.run(main())
''')


def bench(client, obs, n):
    ts = []
    for _ in range(n):
        t = time.perf_counter(); client.infer(obs); ts.append(time.perf_counter() - t)
    return ts


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('--n', type=int, default=300); ap.add_argument('--rounds', type=int, default=5)
    a = ap.parse_args(argv)
    from openpi_client.websocket_client_policy import WebsocketClientPolicy
    from robobench.core import free_port
    from robobench.server import serve
    rng = np.random.default_rng(0)
    obs = {'observation.images.front': rng.integers(0, 255, (224, 224, 3), dtype=np.uint8),
           'observation.images.wrist': rng.integers(0, 255, (224, 224, 3), dtype=np.uint8),
           'observation.state': rng.normal(size=8).astype(np.float32), 'task': 'pick the cube'}
    port = free_port()
    echo = subprocess.Popen([sys.executable, '-c', ECHO, str(port)], stdout=subprocess.PIPE, text=True)
    assert echo.stdout.readline().strip() == 'ready'
    srv = serve('random', subprocess_mode=True, action_dim=7, horizon=10)  # `robobench serve --policy random`
    try:
        clients = {'robobench': WebsocketClientPolicy('127.0.0.1', srv.port),
                   'bare websockets+msgpack': WebsocketClientPolicy('127.0.0.1', port)}
        for c in clients.values(): bench(c, obs, 30)  # warm-up
        res = {k: [] for k in clients}
        for _ in range(a.rounds):
            for k, c in clients.items(): res[k] += bench(c, obs, a.n // a.rounds)
        print(f'loopback round trip, 2x224x224x3 uint8 + state, dummy policy, n={len(res["robobench"])} per server')
        p50 = {}
        for k, ts in res.items():
            ms = np.array(ts) * 1000; p50[k] = np.median(ms)
            print(f'  {k:26s} p50 {p50[k]:6.3f} ms   p99 {np.percentile(ms, 99):6.3f} ms')
        r = p50['robobench'] / p50['bare websockets+msgpack']
        print(f'  ratio robobench / bare (p50): {r:.2f}x  (goal <= 1.10x: {"met" if r <= 1.10 else "NOT met"})')
        print('  LeRobot async-inference server: not measured. Its gRPC protocol pickles observations and '
              'action chunks (policy_server.py: pickle.loads on received bytes), so a client must unpickle the '
              "server's replies; robobench does not run pickle on a network path, and the comparison also needs "
              'a trained checkpoint loadable by that server plus its RemotePolicyConfig handshake - left for a '
              'follow-up.')
    finally:
        srv.stop(); echo.terminate(); echo.wait(5)


if __name__ == '__main__':
    main()
