"""DDP with N CPU processes vs one process at the same global batch: the same loss curve within noise (issue 24).

Trains the same tiny ACT twice on the same collected toy dataset, from the same seed: one process with batch
N x B, then `--num-processes N` with batch B (the N processes take disjoint slices of the very batch one process
draws, so only dropout draws and float summation order differ). Prints both curves, the mean |difference| over the
last half of the steps and, as the noise floor named peer, the same statistic between two one-process runs with
different seeds.

usage: .venv/bin/python benchmarks/ddp_loss.py [--steps 60] [--processes 2] [--batch 8]
"""
import argparse, os, shutil, subprocess, sys, tempfile
from pathlib import Path
import numpy as np
from robobench.collect import collect
from robobench.core import read_jsonl

CLI = str(Path(sys.executable).parent / 'robobench')


def train(root: Path, out: Path, steps: int, batch: int, processes: int, seed: int = 0) -> np.ndarray:
    cmd = [CLI, 'train', '--repo-ids', 'demos', '--root', str(root), '--policy', 'act',
           '--training-steps', str(steps),
           '--batch-size', str(batch), '--save-freq', str(steps), '--log-freq', '1', '--action-chunk-size', '5',
           '--n-action-steps', '5', '--policy.dim_model', '32', '--policy.dim_feedforward', '64',
           '--policy.use_vae', 'false', '--output-dir', str(out), '--device', 'cpu', '--seed', str(seed),
           '--num-processes', str(processes)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE='1'))
    if r.returncode: raise SystemExit(r.stderr[-3000:])
    return np.array([x['loss'] for x in read_jsonl(out / 'metrics.jsonl') if 'loss' in x])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--steps', type=int, default=60)
    ap.add_argument('--processes', type=int, default=2)
    ap.add_argument('--batch', type=int, default=8, help='per-process batch of the DDP run')
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix='ddp_loss_'))
    collect('toy/Point', 20, tmp / 'data' / 'demos', progress=False)
    n, b = a.processes, a.batch
    one = train(tmp / 'data', tmp / 'one', a.steps, n * b, 1)
    ddp = train(tmp / 'data', tmp / 'ddp', a.steps, b, n)
    peer = train(tmp / 'data', tmp / 'peer', a.steps, n * b, 1, seed=1)
    half = slice(a.steps // 2, None)
    d_ddp, d_seed = np.mean(np.abs(one[half] - ddp[half])), np.mean(np.abs(one[half] - peer[half]))
    for i in range(0, a.steps, max(1, a.steps // 10)):
        print(f'step {i + 1:4d}: 1 process x {n * b}: {one[i]:.4f}   {n} processes x {b}: {ddp[i]:.4f}')
    print(f'mean |loss difference| over the last {a.steps - a.steps // 2} steps: DDP vs 1 process {d_ddp:.4f}, '
          f'1 process seed 0 vs seed 1 (noise) {d_seed:.4f}; '
          f'ratio {d_ddp / max(d_seed, 1e-12):.2f} (<= 1: within noise)')
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
