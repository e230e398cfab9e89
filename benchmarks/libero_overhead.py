"""LIBERO through robobench's worker processes, measured in one run:

1. A rendered step (two 256x256 cameras, LIBERO-Object task 0) through `LiberoEnv.step` (pipe protocol, images
   turned upright) vs the same step called directly in LIBERO's interpreter (`OffScreenRenderEnv.step`, the loop
   openpi's example runs). Prints the median ms of each and the ratio (goal <= 1.05x).
2. Episodes per minute of `evaluate()` with 2 process workers vs 1 (each worker its own LIBERO worker; a random
   policy; env build excluded: each worker warms up on one episode first). Prints the ratio (goal >= 1.7x;
   this machine has 2 cores).

Run: .venv/bin/python benchmarks/libero_overhead.py [--steps 40] [--episodes 4] [--episode-steps 40]
"""
import argparse, json, os, statistics, subprocess, tempfile, textwrap, time
import numpy as np

DIRECT = textwrap.dedent('''
    import json, pathlib, sys, time
    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs import OffScreenRenderEnv
    steps = int(sys.argv[1])
    suite = benchmark.get_benchmark_dict()['libero_object']()
    task = suite.get_task(0)
    bddl = pathlib.Path(get_libero_path('bddl_files')) / task.problem_folder / task.bddl_file
    env = OffScreenRenderEnv(bddl_file_name=str(bddl), camera_heights=256, camera_widths=256)
    env.seed(7); env.reset(); env.set_init_state(suite.get_task_init_states(0)[0])
    times = []
    for t in range(steps + 5):
        t0 = time.perf_counter(); obs, r, done, info = env.step([0.0] * 6 + [-1.0]); dt = time.perf_counter() - t0
        if t >= 5: times.append(dt)
    pathlib.Path(sys.argv[2]).write_text(json.dumps(times))
''')


def direct_step_ms(steps: int) -> list:
    from robobench.envs_libero import libero_python, worker_env
    python = libero_python()
    with tempfile.TemporaryDirectory() as d:
        script, out = os.path.join(d, 'direct.py'), os.path.join(d, 'times.json')
        open(script, 'w').write(DIRECT)
        subprocess.run([str(python), script, str(steps), out], env=worker_env(python), check=True,
                       capture_output=True, timeout=1800)
        return [t * 1000 for t in json.load(open(out))]


def worker_step_ms(steps: int) -> list:
    from robobench.envs_libero import LiberoEnv
    with LiberoEnv('libero_object/0') as env:
        env.reset(seed=0)
        times, action = [], np.r_[np.zeros(6), -1.0]
        for t in range(steps + 5):
            t0 = time.perf_counter(); obs, *_ = env.step(action); dt = time.perf_counter() - t0
            assert obs['images']['agentview'].shape == (256, 256, 3)
            if t >= 5: times.append(dt * 1000)
    return times


def episodes_per_minute(workers: int, episodes: int, episode_steps: int) -> float:
    "Steady-state episodes per minute: the time of `episodes` more episodes after each worker's first."
    from robobench.evaluation import evaluate
    with tempfile.TemporaryDirectory() as d:
        kw = dict(env='libero/libero_object/0', client='random', max_steps=episode_steps, workers=workers,
                  backend='process' if workers > 1 else 'local', video=False, progress=False)
        t0 = time.perf_counter()
        evaluate(episodes=workers + episodes, run_folder=d, **kw)
        total = time.perf_counter() - t0
        recs = [json.loads(x) for x in open(os.path.join(d, 'episodes.jsonl'))]
    # each worker's first episode includes its LIBERO worker's start and env build: leave those out
    ends = sorted(r['end_time'] for r in recs)
    steady = ends[-1] - ends[workers - 1]
    return 60 * episodes / steady, total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--steps', type=int, default=40)
    ap.add_argument('--episodes', type=int, default=4)
    ap.add_argument('--episode-steps', type=int, default=40)
    args = ap.parse_args()
    direct = statistics.median(direct_step_ms(args.steps))
    worker = statistics.median(worker_step_ms(args.steps))
    print(f'rendered step (2 cameras 256x256): LIBERO directly {direct:.1f} ms, through robobench worker '
          f'{worker:.1f} ms -> {worker / direct:.3f}x (goal <= 1.05x)')
    one, t1 = episodes_per_minute(1, args.episodes, args.episode_steps)
    two, t2 = episodes_per_minute(2, args.episodes, args.episode_steps)
    print(f'episodes/min ({args.episode_steps}-step episodes, rendered): 1 worker {one:.2f}, 2 workers {two:.2f} '
          f'-> {two / one:.2f}x (goal >= 1.7x); wall incl. env builds {t1:.0f} s vs {t2:.0f} s')


if __name__ == '__main__':
    main()
