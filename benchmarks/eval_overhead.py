"""Evaluation overhead, all measured in one run (medians of repeats; ratios, not absolute times).

(a) env steps/s through `evaluate()` (local, scripted expert) vs a bare loop over the same env and expert (goal >= 0.95)
(b) 2 process workers vs 1 worker, episodes/s (goal >= 1.7 on 2 cores)
(c) remote (websocket server, chunked, render skipping) vs the same policy in-process (goal >= 0.9)

usage: .venv/bin/python benchmarks/eval_overhead.py [--env maniskill/PickCube-v1] [--episodes 10] [--repeats 3]
"""
import argparse, statistics, time
import numpy as np
from robobench.envs import make_env
from robobench.experts import make_expert
from robobench.evaluation import evaluate


def bare_loop(env_id, seeds, max_steps=None):
    env = make_env(env_id); ex = make_expert(env); steps = 0
    t0 = time.perf_counter()
    for s in seeds:
        ex.reset(); obs, _ = env.reset(seed=s)
        for _ in range(max_steps or env.spec.max_steps):
            obs, r, term, trunc, info = env.step(ex.act(obs)); steps += 1
            if info['success'] or term or trunc: break
    dt = time.perf_counter() - t0; env.close()
    return steps / dt


def via_evaluate(env_id, seeds, **kw):
    t0 = time.perf_counter()
    res = evaluate(env_id, 'scripted', episodes=len(seeds), start_seed=seeds[0], progress=False, video=False, **kw)
    dt = time.perf_counter() - t0
    return sum(r['length'] for r in res.episodes) / dt, len(seeds) / dt, res


def main():
    ap = argparse.ArgumentParser(); ap.add_argument('--env', default='maniskill/PickCube-v1')
    ap.add_argument('--episodes', type=int, default=10); ap.add_argument('--repeats', type=int, default=3)
    a = ap.parse_args(); seeds = list(range(1000, 1000 + a.episodes))
    bare_loop(a.env, seeds[:1])  # warm-up (imports, shader caches)
    bare, ev = [], []
    for _ in range(a.repeats):
        bare.append(bare_loop(a.env, seeds)); ev.append(via_evaluate(a.env, seeds)[0])
    print(f'(a) {a.env} steps/s: bare loop {statistics.median(bare):.0f}, evaluate() {statistics.median(ev):.0f} '
          f'-> ratio {statistics.median(ev) / statistics.median(bare):.3f} (goal >= 0.95)')
    one, two = [], []
    for _ in range(a.repeats):
        one.append(via_evaluate(a.env, seeds * 1, workers=1, backend='process')[1])
        two.append(via_evaluate(a.env, seeds * 1, workers=2, backend='process')[1])
    print(f'(b) episodes/s incl. worker start-up: 1 process worker {statistics.median(one):.2f}, 2 workers '
          f'{statistics.median(two):.2f} -> ratio {statistics.median(two) / statistics.median(one):.2f} (goal >= 1.7)')
    from robobench.server import serve, RandomPolicy
    env = make_env(a.env); dim = env.spec.action_dim; env.close()
    pol = dict(action_dim=dim, horizon=8, seed=0)
    local, remote = [], []
    with serve(RandomPolicy(**pol)) as srv:
        for _ in range(a.repeats):
            t0 = time.perf_counter(); r = evaluate(a.env, 'random', episodes=a.episodes, progress=False, video=False,
                                                   client_kwargs={**pol, 'n_action_steps': 8}); local.append(time.perf_counter() - t0)
            t0 = time.perf_counter(); r2 = evaluate(a.env, f'{srv.host}:{srv.port}', episodes=a.episodes, progress=False,
                                                    video=False, client_kwargs={'n_action_steps': 8}); remote.append(time.perf_counter() - t0)
    print(f'(c) random policy, horizon 8: in-process {statistics.median(local):.2f}s, websocket {statistics.median(remote):.2f}s '
          f'-> remote/local speed ratio {statistics.median(local) / statistics.median(remote):.3f} (goal >= 0.9)')


if __name__ == '__main__':
    main()
