"""Evaluation overhead, all measured in one run (medians of repeats; ratios, not absolute times).

(a) env steps/s through `evaluate()` (local, scripted expert) vs a bare loop over the same env and expert (goal >= 0.95)
(b) 2 process workers vs 1 worker, episodes/s (goal >= 1.7 on 2 cores)
(c) remote (websocket server, chunked, render skipping) vs the same policy in-process (goal >= 0.9)

usage: .venv/bin/python benchmarks/eval_overhead.py [--env maniskill/PickCube-v1] [--episodes 40] [--repeats 3]
                                                    [--cameras base_camera]
Cameras are off by default (state obs): the simulator's rendering would otherwise dominate every ratio.
"""
import argparse, statistics, time
from robobench.envs import make_env
from robobench.experts import make_expert
from robobench.evaluation import evaluate


def bare_loop(env_id, seeds, max_steps=None, env_kwargs=None):
    "steps/s of a plain loop: (episode loop only, end to end including env construction)"
    t00 = time.perf_counter()
    env = make_env(env_id, **(env_kwargs or {})); ex = make_expert(env); steps = 0
    t0 = time.perf_counter()
    for s in seeds:
        ex.reset(); obs, _ = env.reset(seed=s)
        for _ in range(max_steps or env.spec.max_steps):
            obs, r, term, trunc, info = env.step(ex.act(obs)); steps += 1
            if info['success'] or term or trunc: break
    t1 = time.perf_counter(); env.close()
    return steps / (t1 - t0), steps / (t1 - t00)


def via_evaluate(env_id, seeds, **kw):
    """evaluate() with the in-process scripted expert: (episode-loop steps/s from the records' durations,
    end-to-end steps/s, end-to-end episodes/s, steady-state episodes/s between the first and last finished episode)."""
    t0 = time.perf_counter()
    res = evaluate(env_id, 'scripted', episodes=len(seeds), start_seed=seeds[0], progress=False, video=False, **kw)
    dt = time.perf_counter() - t0
    steps = sum(r['length'] for r in res.episodes)
    ends = sorted(r['end_time'] for r in res.episodes)
    steady = (len(ends) - 1) / (ends[-1] - ends[0]) if len(ends) > 1 and ends[-1] > ends[0] else float('nan')
    return steps / sum(r['duration_s'] for r in res.episodes), steps / dt, len(seeds) / dt, steady


def main():
    ap = argparse.ArgumentParser(); ap.add_argument('--env', default='maniskill/PickCube-v1')
    ap.add_argument("--episodes", type=int, default=40,
                    help="per run; (b) needs enough episodes per worker for a steady state")
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--cameras', default='', help='comma-separated cameras to render (default: none)')
    a = ap.parse_args(); seeds = list(range(1000, 1000 + a.episodes))
    ek = {'cameras': [c for c in a.cameras.split(',') if c]}
    bare_loop(a.env, seeds[:1], env_kwargs=ek)  # warm-up (imports, shader caches)
    bare, ev = [], []
    for _ in range(a.repeats):
        bare.append(bare_loop(a.env, seeds, env_kwargs=ek)); ev.append(via_evaluate(a.env, seeds, env_kwargs=ek))
    med = lambda xs, i: statistics.median(x[i] for x in xs)
    print(f'(a) {a.env} steps/s, episode loop: bare {med(bare, 0):.0f}, evaluate() {med(ev, 0):.0f} '
          f'-> ratio {med(ev, 0) / med(bare, 0):.3f} (goal >= 0.95); '
          f'end to end incl. env construction: bare {med(bare, 1):.0f}, '
          f'evaluate() {med(ev, 1):.0f} -> ratio {med(ev, 1) / med(bare, 1):.3f}')
    one, two = [], []
    for _ in range(a.repeats):
        one.append(via_evaluate(a.env, seeds, workers=1, backend='process', env_kwargs=ek))
        two.append(via_evaluate(a.env, seeds, workers=2, backend='process', env_kwargs=ek))
    print(f'(b) episodes/s, steady state (first to last finished episode): 1 process worker {med(one, 3):.2f}, '
          f'2 workers {med(two, 3):.2f} -> ratio {med(two, 3) / med(one, 3):.2f} (goal >= 1.7); incl. worker start-up: '
          f'{med(one, 2):.2f} vs {med(two, 2):.2f} -> ratio {med(two, 2) / med(one, 2):.2f}')
    from robobench.policies import RandomPolicy
    from robobench.server import serve
    env = make_env(a.env, **ek); dim = env.spec.action_dim; env.close()
    pol = dict(action_dim=dim, horizon=8, seed=0)
    local, remote = [], []
    with serve(RandomPolicy(**pol)) as srv:
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            evaluate(a.env, 'random', episodes=a.episodes, progress=False, video=False, env_kwargs=ek,
                     client_kwargs={**pol, 'n_action_steps': 8})
            local.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            evaluate(a.env, f'{srv.host}:{srv.port}', episodes=a.episodes, progress=False, video=False, env_kwargs=ek,
                     client_kwargs={'n_action_steps': 8})
            remote.append(time.perf_counter() - t0)
    print(f'(c) random policy, horizon 8: in-process {statistics.median(local):.2f}s, '
          f'websocket {statistics.median(remote):.2f}s '
          f'-> remote/local speed ratio {statistics.median(local) / statistics.median(remote):.3f} (goal >= 0.9)')


if __name__ == '__main__':
    main()
