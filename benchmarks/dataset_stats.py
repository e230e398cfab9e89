"""Dataset benchmarks (robobench.data), measured in one run on the same data:

1. frames/s of robobench's stats (`open_dataset(root).stats()`: parquet read + vectorized numpy, exact quantiles)
   vs LeRobot's own stats computation (`lerobot.datasets.compute_stats.compute_episode_stats` per episode +
   `aggregate_stats`, as LeRobot does when recording; given the arrays already in memory) on a >=50k-frame
   LeRobot dataset built with LeRobot's API. Prints the ratio (goal >= 1x).
2. RLDS -> LeRobot conversion frames/s (TF in a child process, one 64x64 camera, PNG frames and MP4 video).

Run: .venv/bin/python benchmarks/dataset_stats.py [--frames 50000] [--repeats 3]
"""
import argparse, os, shutil, statistics, tempfile, time
from pathlib import Path
import numpy as np

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')


def build_lerobot(root, frames, ep_len=250, sd=14, ad=7):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    feats = {'observation.state': {'dtype': 'float32', 'shape': (sd,), 'names': None},
             'observation.environment_state': {'dtype': 'float32', 'shape': (10,), 'names': None},
             'action': {'dtype': 'float32', 'shape': (ad,), 'names': None}}
    ds = LeRobotDataset.create('bench/stats', fps=20, features=feats, root=root, use_videos=False)
    rng = np.random.default_rng(0)
    for e in range(frames // ep_len):
        st = rng.normal(size=(ep_len, sd)).astype(np.float32); es = rng.normal(size=(ep_len, 10)).astype(np.float32)
        ac = rng.normal(size=(ep_len, ad)).astype(np.float32)
        for t in range(ep_len):
            ds.add_frame({'observation.state': st[t], 'observation.environment_state': es[t], 'action': ac[t],
                          'task': 'bench'})
        ds.save_episode()
    ds.finalize()


def lerobot_stats(root):
    from lerobot.datasets.compute_stats import compute_episode_stats, aggregate_stats
    from robobench.data import LeRobotData
    v = LeRobotData(root)
    cols = v._columns()
    keys = ['observation.state', 'observation.environment_state', 'action']
    feats = {k: v.features[k] for k in keys}
    bounds = np.concatenate([[0], np.cumsum(v.episode_lengths)])
    t = time.perf_counter()
    per_ep = [compute_episode_stats({k: cols[k][a:b] for k in keys}, feats) for a, b in zip(bounds[:-1], bounds[1:])]
    out = aggregate_stats(per_ep)
    return time.perf_counter() - t, out


def robobench_stats(root):
    from robobench.data import LeRobotData
    t = time.perf_counter()
    out = LeRobotData(root).stats()  # includes opening the dataset and reading the parquet files
    return time.perf_counter() - t, out


def bench_convert(tmp, episodes=40, T=50):
    from robobench.rlds import write_rlds_dataset, convert_rlds_to_lerobot
    rng = np.random.default_rng(1)
    eps = [{'steps': {'observation/image': rng.integers(0, 255, (T, 64, 64, 3), dtype=np.uint8),
                      'observation/state': rng.normal(size=(T, 8)).astype(np.float32),
                      'action': rng.normal(size=(T, 7)).astype(np.float32),
                      'language_instruction': np.array(['pick the cube'] * T, dtype=object),
                      'is_first': np.arange(T) == 0, 'is_last': np.arange(T) == T - 1},
            'episode_metadata': {'success': True}} for _ in range(episodes)]
    d = write_rlds_dataset(Path(tmp) / 'rlds', eps)
    res = {}
    for vid in (False, True):
        out = Path(tmp) / f'conv_{vid}'
        t = time.perf_counter()
        convert_rlds_to_lerobot(d, out, repo_id='bench/conv', use_videos=vid, progress=False)
        res['video' if vid else 'png'] = episodes * T / (time.perf_counter() - t)
    return res, episodes * T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--frames', type=int, default=50_000)
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--skip-convert', action='store_true')
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix='rb_bench_')
    try:
        root = Path(tmp) / 'stats'
        t = time.perf_counter(); build_lerobot(root, a.frames)
        from robobench.data import LeRobotData, compare_stats
        n = LeRobotData(root).num_frames
        print(f'built {n}-frame LeRobot dataset in {time.perf_counter() - t:.1f}s')
        ours, theirs = [], []
        for _ in range(a.repeats):
            dt, so = robobench_stats(root); ours.append(dt)
            dt, sl = lerobot_stats(root); theirs.append(dt)
        mo, ml = statistics.median(ours), statistics.median(theirs)
        mism = compare_stats(so, sl, stats=('mean', 'std', 'min', 'max'))
        print(f'stats on {n} frames (median of {a.repeats}): robobench {n / mo:,.0f} frames/s ({mo * 1000:.1f} ms), '
              f'LeRobot compute_episode_stats+aggregate_stats {n / ml:,.0f} frames/s ({ml * 1000:.1f} ms) '
              f'-> ratio {ml / mo:.1f}x (goal >= 1x); mean/std/min/max mismatches: {len(mism)}')
        if not a.skip_convert:
            res, nf = bench_convert(tmp)
            print(f'RLDS->LeRobot conversion ({nf} frames, one 64x64 camera + state + action): '
                  f'{res["png"]:,.0f} frames/s with PNG frames, {res["video"]:,.0f} frames/s with MP4 video')
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
