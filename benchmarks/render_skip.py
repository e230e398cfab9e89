#!/usr/bin/env python3
"""What render skipping saves for a chunked image policy on ALOHA transfer-cube.

A chunked client (ACT, chunk 10, executing all 10) needs a camera image only when it asks for a new chunk; robobench's
rollout renders the top camera only on those steps (`rerender`). The peer, measured in the same run on the same
seeds, renders it every step (what a loop without render skipping does). Prints both eval wall times and the ratio.

usage: python benchmarks/render_skip.py [--episodes 3] [--max-steps 100] [--image-size 240x320]"""
import argparse, statistics, sys, tempfile, time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument('--episodes', type=int, default=3)
    ap.add_argument('--max-steps', type=int, default=100)
    ap.add_argument('--image-size', default='240x320', help='HxW of the policy camera')
    ap.add_argument('--chunk', type=int, default=10)
    ap.add_argument('--rounds', type=int, default=2)
    a = ap.parse_args(argv)
    h, w = (int(x) for x in a.image_size.split('x'))
    from robobench.clients import LocalClient
    from robobench.envs import make_env
    from robobench.policies import FeatureSpec, tiny_act_checkpoint
    from robobench.rollout import rollout
    env = make_env('aloha/TransferCube', cameras=['top'], image_size=(h, w))
    feats = {'observation.state': FeatureSpec([14]), 'observation.images.top': FeatureSpec([h, w, 3], 'uint8')}
    with tempfile.TemporaryDirectory() as d:
        ckpt = tiny_act_checkpoint(Path(d) / 'act', feats, action_dim=14, chunk_size=a.chunk)
        client = LocalClient(ckpt, device='cpu')

        def run(render_images):
            t0, infer_s = time.perf_counter(), 0.0
            for seed in range(a.episodes):
                ep = rollout(env, client, seed, max_steps=a.max_steps, until='done', render_images=render_images)
                assert ep.record['outcome'] != 'error', ep.record['failure_reason']
                infer_s += ep.record['infer_s']
            return time.perf_counter() - t0, infer_s
        run(None)   # warm-up
        skip, every = [], []
        for _ in range(a.rounds):
            skip.append(run(None)); every.append(run(True))
    steps = a.episodes * a.max_steps
    ms, me = statistics.median(t for t, _ in skip), statistics.median(t for t, _ in every)
    infer = statistics.median(i for _, i in skip + every)   # the same policy calls either way
    print(f'ALOHA TransferCube, tiny image ACT (chunk {a.chunk}), top camera {h}x{w}, {a.episodes} episodes x '
          f'{a.max_steps} steps, median of {a.rounds} rounds')
    print(f'  render skipping (robobench):  {ms:7.2f} s  ({ms / steps * 1000:6.1f} ms/step)')
    print(f'  render every step (peer):     {me:7.2f} s  ({me / steps * 1000:6.1f} ms/step)')
    print(f'  ratio robobench / peer: {ms / me:.2f}x  (saves {1 - ms / me:.0%} of eval wall time)')
    print(f'  of which policy inference (same in both): {infer:.2f} s; outside inference: '
          f'{(ms - infer) / steps * 1000:.1f} vs {(me - infer) / steps * 1000:.1f} ms/step '
          f'({(ms - infer) / max(me - infer, 1e-9):.2f}x)')
    env.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
