"""Training step time: robobench's loop vs LeRobot's own `lerobot-train`, same dataset and ACT config, one run.

    .venv/bin/python benchmarks/train_step.py [--demos 50] [--steps 400] [--video]            # step-time ratio
    .venv/bin/python benchmarks/train_step.py --learn-minutes 10 [--demos 100] [--eval-episodes 50]   # learning check

Step time = data time + update time per optimizer step, the median over log windows (the first window, warm-up,
is dropped), each tool measured by its own logs: LeRobot's `data_s`/`updt_s`, robobench's metrics.jsonl
`data_s`/`update_s`. Goals: <= 0.7x on a small state dataset (RAM data path), <= 1.05x on a video dataset.

The learning check trains ACT (dim 128 / ffn 512, chunk 20, 10 action steps, batch 32, lr 1e-4) on `--demos` scripted
PickCube demos (state + environment_state) for `--learn-minutes` of wall time, then evaluates the final model on 50
held-out seeds (1000..1049) and prints the success rate with its 95% Wilson interval.
"""
import argparse, json, os, re, statistics, subprocess, sys, tempfile, time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')
BIN = Path(sys.executable).parent
ACT = {'dim_model': 128, 'dim_feedforward': 512}


def collect_demos(root: Path, n: int, video: bool):
    from robobench.collect import collect
    t0 = time.perf_counter()
    kw = dict(cameras=['base_camera'], video=True) if video else {}
    collect('maniskill/PickCube-v1', n, root / 'demos', progress=False, **kw)
    return time.perf_counter() - t0


def run_lerobot(root: Path, out: Path, steps: int, batch: int, workers: int) -> dict:
    cmd = [str(BIN / 'lerobot-train'), '--dataset.repo_id=local/demos', f'--dataset.root={root / "demos"}',
           '--policy.type=act', '--policy.push_to_hub=false', '--policy.device=cpu', '--policy.chunk_size=20',
           '--policy.n_action_steps=10', *[f'--policy.{k}={v}' for k, v in ACT.items()], '--policy.optimizer_lr=1e-4',
           '--policy.pretrained_backbone_weights=null', f'--batch_size={batch}', f'--steps={steps}', '--log_freq=50',
           f'--save_freq={steps}', '--env_eval_freq=0', f'--num_workers={workers}', '--wandb.enable=false',
           f'--output_dir={out}', '--seed=0']
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0: raise SystemExit(f'lerobot-train failed:\n{p.stderr[-3000:]}')
    text = p.stdout + p.stderr
    rows = [(float(m.group(1)), float(m.group(2))) for m in re.finditer(r'updt_s:([\d.]+) data_s:([\d.]+)', text)]
    if len(rows) < 2: raise SystemExit(f'could not parse lerobot-train logs:\n{text[-2000:]}')
    rows = rows[1:]
    return {'step_s': statistics.median(u + d for u, d in rows), 'update_s': statistics.median(u for u, _ in rows),
            'data_s': statistics.median(d for _, d in rows), 'wall_s': wall, 'windows': len(rows)}


def run_robobench(root: Path, out: Path, steps: int, batch: int, cache: str, workers: int) -> dict:
    cmd = [str(BIN / 'robobench'), 'train', '--repo-ids', 'demos', '--root', str(root), '--policy', 'act',
           '--action-chunk-size', '20', '--n-action-steps', '10', *[f'--policy.{k}={v}' for k, v in ACT.items()],
           '--lr', '1e-4', '--batch-size', str(batch), '--training-steps', str(steps), '--log-freq', '50',
           '--save-freq', str(steps), '--eval-freq', '0', '--device', 'cpu', '--cache', cache,
           '--num-workers', str(workers), '--output-dir', str(out), '--seed', '0']
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0: raise SystemExit(f'robobench train failed:\n{p.stderr[-3000:]}')
    recs = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines() if '"loss"' in line][1:]
    return {'step_s': statistics.median(r['update_s'] + r['data_s'] for r in recs),
            'update_s': statistics.median(r['update_s'] for r in recs),
            'data_s': statistics.median(r['data_s'] for r in recs),
            'wall_s': wall, 'windows': len(recs)}


def step_ratio(a):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        print(f'collecting {a.demos} PickCube demos ({"128x128 video camera + " if a.video else ""}state) ...',
              flush=True)
        print(f'  {collect_demos(d, a.demos, a.video):.1f} s', flush=True)
        lr = run_lerobot(d, d / 'lr_out', a.steps, a.batch, a.workers)
        rb = run_robobench(d, d / 'rb_out', a.steps, a.batch, 'auto', a.workers)
        print(f"\nACT, batch {a.batch}, {a.steps} steps, {'video' if a.video else 'state'} dataset, "
              "medians over log windows of 50 steps")
        print(f"{'':22s}{'step ms':>9s}{'update ms':>11s}{'data ms':>9s}{'wall s':>8s}")
        for name, r in (('lerobot-train', lr), ('robobench train', rb)):
            print(f"{name:22s}{1e3 * r['step_s']:9.1f}{1e3 * r['update_s']:11.1f}{1e3 * r['data_s']:9.2f}"
                  f"{r['wall_s']:8.1f}")
        goal = 1.05 if a.video else 0.7
        print(f"\nstep-time ratio robobench / lerobot-train = {rb['step_s'] / lr['step_s']:.2f}  (goal <= {goal})")
        print(f"wall-time ratio (incl. start-up)         = {rb['wall_s'] / lr['wall_s']:.2f}")


def learning_check(a):
    from robobench.training import TrainConfig, train
    from robobench.evaluation import evaluate
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        print(f'collecting {a.demos} PickCube demos (state) ... {collect_demos(d, a.demos, False):.1f} s', flush=True)
        t0 = time.perf_counter()
        res = train(TrainConfig(repo_ids=['demos'], root=str(d), policy='act', policy_kwargs=ACT, action_chunk_size=20,
                                n_action_steps=10, batch_size=32, lr=1e-4, training_steps=10**7,
                                time_limit=60 * a.learn_minutes, save_freq=10**7, log_freq=100,
                                output_dir=str(d / 'out'), seed=a.seed),
                    progress=False, live_plot=False)
        train_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        ev = evaluate('maniskill/PickCube-v1', str(res.final_dir), a.eval_episodes, start_seed=1000, video=False,
                      progress=False)
        s = ev.summary
        lo, hi = s['wilson_95']
        print(f"\nACT trained {train_s:.0f} s wall ({res.step} steps, "
              f"{train_s / res.step * 1e3:.0f} ms/step incl. start-up), "
              f"{a.demos} demos, seed {a.seed}")
        print(f"success on {s['episodes']} held-out seeds: {s['successes']}/{s['episodes']} = {s['success_rate']:.0%} "
              f"[{lo:.0%}, {hi:.0%}] (eval {time.perf_counter() - t1:.0f} s)")


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--demos', type=int, default=50)
    ap.add_argument('--steps', type=int, default=400)
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--workers', type=int, default=2,
                    help='DataLoader workers for lerobot-train (and robobench on the stock path)')
    ap.add_argument('--video', action='store_true', help='add a 128x128 video camera to the dataset')
    ap.add_argument('--learn-minutes', type=float, default=0, help='run the learning check instead')
    ap.add_argument('--eval-episodes', type=int, default=50)
    ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args()
    learning_check(a) if a.learn_minutes else step_ratio(a)
