"""Throughput of `robobench serve` with 8 concurrent clients vs 1, with dynamic batching, on CPU.

Two tiny random-init ACT checkpoints (offline): a state-only one and one with a 96x96 camera through ResNet-18.
Each is served twice, as child processes: with batching (`--max-batch 8`) and its peer, the same server with
`--max-batch 1` (one request at a time, as before batching), measured in the same run with the same clients
(openpi's unmodified WebsocketClientPolicy, one connection per client thread). Prints requests/s and p50 latency per
setting and the ratios (goals: throughput 8 vs 1 client >= 3x for the state ACT, >= 2x for the image ACT; p50 latency
at 8 clients <= 2x one client's). Both servers stay up for the whole run and the four settings take turns, `--rounds`
times, each for `--seconds / --rounds`: a machine whose load drifts (other work) slows all settings alike.

    .venv/bin/python benchmarks/serve_batching.py [--seconds 6] [--clients 8] [--rounds 3] [--only image]
"""
import argparse, os, tempfile, threading, time
from pathlib import Path

import numpy as np


def measure(port, obs, n_clients, seconds):
    "`n_clients` threads, each its own connection, sending back-to-back for `seconds`: (requests, seconds, latencies)."
    from openpi_client.websocket_client_policy import WebsocketClientPolicy
    clients = [WebsocketClientPolicy('127.0.0.1', port) for _ in range(n_clients)]
    for c in clients: c.infer(obs)   # warm
    lats, stop, start = [[] for _ in clients], threading.Event(), threading.Barrier(n_clients + 1)
    def run(i):
        start.wait()
        while not stop.is_set():
            t = time.perf_counter(); clients[i].infer(obs); lats[i].append(time.perf_counter() - t)
    ths = [threading.Thread(target=run, args=(i,)) for i in range(n_clients)]
    for th in ths: th.start()
    start.wait(); t0 = time.perf_counter(); time.sleep(seconds); stop.set()
    for th in ths: th.join()
    dt = time.perf_counter() - t0
    for c in clients: c._ws.close()
    flat = [x for lat in lats for x in lat]
    return len(flat), dt, flat


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('--seconds', type=float, default=6.0); ap.add_argument('--clients', type=int, default=8)
    ap.add_argument('--rounds', type=int, default=3, help='the settings take turns this many times')
    ap.add_argument('--only', choices=['state', 'image'], help='measure one of the two policies only')
    a = ap.parse_args(argv)
    from robobench.policies import FeatureSpec, tiny_act_checkpoint
    from robobench.server import serve
    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp(prefix='serve-batching-'))
    cases = {
        'state ACT': (tiny_act_checkpoint(tmp / 'state', {'observation.state': FeatureSpec([8]),
                                                          'observation.environment_state': FeatureSpec([10])},
                                          action_dim=7, chunk_size=20),
                      {'observation.state': rng.normal(size=8).astype(np.float32),
                       'observation.environment_state': rng.normal(size=10).astype(np.float32)}),
        'image ACT (ResNet-18, 96x96)': (
            tiny_act_checkpoint(tmp / 'image', {'observation.state': FeatureSpec([8]),
                                                'observation.images.front': FeatureSpec([96, 96, 3], 'uint8')},
                                action_dim=7, chunk_size=20),
            {'observation.state': rng.normal(size=8).astype(np.float32),
             'observation.images.front': rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)}),
    }
    if a.only: cases = {k: v for k, v in cases.items() if k.startswith(a.only)}
    goals = {'state ACT': 3.0, 'image ACT (ResNet-18, 96x96)': 2.0}
    n = a.clients
    print(f'robobench serve, CPU, {n} concurrent clients vs 1, {a.seconds:g} s per setting in {a.rounds} turns '
          f'(openpi WebsocketClientPolicy clients; the peer is the same server with --max-batch 1); '
          f'load average {os.getloadavg()[0]:.2f}')
    for name, (ckpt, obs) in cases.items():
        srvs, acc = {}, {(mb, k): [0, 0.0, []] for mb in (8, 1) for k in (1, n)}
        try:
            for mb in (8, 1): srvs[mb] = serve(str(ckpt), subprocess_mode=True, device='cpu', max_batch=mb,
                                               batch_timeout_ms=5)
            for _ in range(max(1, a.rounds)):
                for mb, k in acc:
                    reqs, dt, lat = measure(srvs[mb].port, obs, k, a.seconds / max(1, a.rounds))
                    acc[mb, k][0] += reqs; acc[mb, k][1] += dt; acc[mb, k][2] += lat
        finally:
            for srv in srvs.values(): srv.stop()
        res = {key: (reqs / dt, lat) for key, (reqs, dt, lat) in acc.items()}
        print(f'\n{name}:')
        for (mb, k), (thr, lat) in res.items():
            print(f'  --max-batch {mb}  {k} client(s): {thr:7.1f} req/s   p50 {np.median(lat) * 1000:7.2f} ms   '
                  f'p99 {np.percentile(lat, 99) * 1000:7.2f} ms')
        thr_ratio = res[8, n][0] / res[8, 1][0]
        lat_ratio = np.median(res[8, n][1]) / np.median(res[8, 1][1])
        peer_ratio = res[1, n][0] / res[1, 1][0]
        print(f'  throughput {n} vs 1 client, batching: {thr_ratio:.2f}x (goal >= {goals[name]:.0f}x: '
              f'{"met" if thr_ratio >= goals[name] else "NOT met"});  peer --max-batch 1: {peer_ratio:.2f}x')
        print(f'  batching vs peer at {n} clients: {res[8, n][0] / res[1, n][0]:.2f}x throughput')
        print(f'  p50 latency {n} vs 1 client, batching: {lat_ratio:.2f}x (goal <= 2x: '
              f'{"met" if lat_ratio <= 2 else "NOT met"})')
        print(f'  (clients send back to back: by Little\'s law mean latency {n} vs 1 = {n} / throughput ratio = '
              f'{n / thr_ratio:.2f}x, so <= 2x needs >= {n / 2:g}x throughput)')


if __name__ == '__main__':
    main()
