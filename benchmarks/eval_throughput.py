"""Evaluation throughput: episodes per minute of `robobench eval` with 1, 2, 4 workers and, in the same run, of
LeRobot's own `lerobot-eval` (vectorized envs, `--eval.batch_size` 1, 2, 4) on the same checkpoint, env, episode count
and episode length. Goal: robobench / lerobot-eval >= 1 at equal parallelism.

The checkpoint is built offline here: a random-init ACT (ResNet-18 backbone, no pretrained weights) reading what
LeRobot's PushT env gives, one 96x96 image and the agent position (2), answering 2-dim target positions. robobench
sends PushT's `top` camera as `observation.images.top` and the agent position as `observation.state`; lerobot-eval
gets the same through its `--rename_map` (`observation.image` -> `observation.images.top`). It never succeeds, so
every episode runs to the same limit (`--steps`, robobench `--max-steps`, lerobot `--env.episode_length`).
Both record videos of the first 10 episodes at 384x384 (lerobot-eval's default rendering; robobench `--video-episodes
10 --video-outcomes all`, render size 384); robobench writes no report.html (`--no-report`: lerobot writes none).
lerobot-eval runs its vectorized envs in one process (`--eval.use_async_envs=false`, gymnasium's SyncVectorEnv: one
batched forward for all envs each step): its async envs cannot run PushT in LeRobot 0.6.1 (the forkserver interpreters
never import `gym_pusht`, NamespaceNotFound; with that imported, fetching `task_description` kills the env workers).
Times are end to end (each command from start to exit: imports, policy load, env start, rollouts, files), and the
rollout part alone (lerobot's `eval_s`; robobench from its first to its last episode's end).

usage: .venv/bin/python benchmarks/eval_throughput.py [--episodes 8] [--steps 50] [--parallel 1,2,4] [--ckpt DIR]
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

BIN = Path(sys.executable).parent
PUSHT = 'pusht/PushT'


def make_checkpoint(path) -> Path:
    "A random-init ACT for LeRobot's PushT features (image 96x96 + agent_pos), in pixels like gym-pusht's actions."
    from robobench.policies import FeatureSpec, tiny_act_checkpoint
    feats = {'observation.images.top': FeatureSpec([96, 96, 3], 'uint8'), 'observation.state': FeatureSpec([2])}
    stats = {'observation.state': {'mean': [256.0, 256.0], 'std': [100.0, 100.0]},
             'action': {'mean': [256.0, 256.0], 'std': [100.0, 100.0]}}
    return tiny_act_checkpoint(path, feats, action_dim=2, chunk_size=10, stats=stats)


def _run(argv, env) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f'{Path(argv[0]).name} failed (exit {r.returncode}):\n{r.stderr[-3000:]}')
    return dt


def robobench_eval(ckpt, n, steps, workers, out, env) -> tuple[float, float]:
    "(end-to-end seconds, rollout seconds) of `robobench eval` with `workers` workers."
    argv = [str(BIN / 'robobench'), 'eval', '-e', PUSHT, '-m', str(ckpt), '--policy.device', 'cpu',
            '--episodes', str(n), '--max-steps', str(steps), '--workers', str(workers), '--run-folder', str(out),
            '--video-episodes', '10', '--video-outcomes', 'all', '--video-max-side', '384',
            '--env-kwargs', json.dumps({'render_size': 384}), '--no-report']
    wall = _run(argv, env)
    recs = [json.loads(line) for line in (Path(out) / 'episodes.jsonl').read_text().splitlines()]
    if len(recs) != n or any(r['length'] != steps for r in recs):
        print(f"  note: robobench ran {len(recs)} episodes of lengths {sorted({r['length'] for r in recs})}")
    ends = sorted(r['end_time'] for r in recs)
    first_start = min(r['end_time'] - r['duration_s'] for r in recs)
    return wall, ends[-1] - first_start


def lerobot_eval(ckpt, n, steps, batch, out, env) -> tuple[float, float]:
    "(end-to-end seconds, rollout seconds) of `lerobot-eval` with `batch` vectorized envs."
    argv = [str(BIN / 'lerobot-eval'), f'--policy.path={ckpt}', '--policy.device=cpu', '--env.type=pusht',
            f'--env.episode_length={steps}', '--env.observation_height=96', '--env.observation_width=96',
            f'--eval.n_episodes={n}', f'--eval.batch_size={batch}', '--eval.use_async_envs=false', '--seed=0',
            '--rename_map={"observation.image": "observation.images.top"}', f'--output_dir={out}']
    wall = _run(argv, env)
    info = json.loads((Path(out) / 'eval_info.json').read_text())
    overall = info.get('overall', info)
    return wall, float(overall.get('eval_s', float('nan')))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--episodes', type=int, default=8, help='episodes per run (the same for both)')
    ap.add_argument('--steps', type=int, default=50, help='steps per episode (the policy never succeeds)')
    ap.add_argument('--parallel', default='1,2,4', help='robobench --workers = lerobot-eval --eval.batch_size')
    ap.add_argument('--ckpt', default=None, help='a LeRobot checkpoint dir for PushT (default: built here)')
    a = ap.parse_args()
    env = {**os.environ, 'HF_HUB_OFFLINE': '1'}
    tmp = Path(tempfile.mkdtemp(prefix='eval-throughput-'))
    ckpt = Path(a.ckpt) if a.ckpt else make_checkpoint(tmp / 'ckpt')
    print(f'checkpoint {ckpt}; {PUSHT}, {a.episodes} episodes of {a.steps} steps per run')
    print(f"{'parallel':>8} | {'robobench eps/min':>17} {'(rollouts)':>10} | {'lerobot-eval eps/min':>20} "
          f"{'(rollouts)':>10} | {'ratio':>5} {'(rollouts)':>10}")
    for p in [int(x) for x in a.parallel.split(',')]:
        le, le_roll = lerobot_eval(ckpt, a.episodes, a.steps, p, tmp / f'le{p}', env)
        rb, rb_roll = robobench_eval(ckpt, a.episodes, a.steps, p, tmp / f'rb{p}', env)
        per_min = lambda s: 60 * a.episodes / s
        print(f'{p:>8} | {per_min(rb):>17.1f} {per_min(rb_roll):>10.1f} | '
              f'{per_min(le):>20.1f} {per_min(le_roll):>10.1f}'
              f' | {le / rb:>5.2f} {le_roll / rb_roll:>10.2f}', flush=True)
    print('ratio = robobench eps/min / lerobot-eval eps/min at equal parallelism (goal >= 1); '
          '(rollouts): without start-up')


if __name__ == '__main__':
    main()
