"""Tiny LeRobot v3 datasets written with LeRobot's own API, shared by the data and training tests."""
from pathlib import Path
import numpy as np


def make_lerobot(root, repo_id, episodes, features, use_videos=False, fps=10):
    "Write `episodes` (dicts of per-frame arrays + a 'task' string) as a LeRobot dataset at `root`."
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    ds = LeRobotDataset.create(repo_id, fps=fps, features=features, root=root, robot_type='panda',
                               use_videos=use_videos)
    for ep in episodes:
        for t in range(len(ep['action'])):
            ds.add_frame({k: (v if k == 'task' else v[t]) for k, v in ep.items()})
        ds.save_episode()
    ds.finalize()
    return Path(root)


def gradient_frames(T, h, w, seed):
    "Smooth frames (video-codec friendly) that change over time."
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([np.stack([(x * 4 + t * 9 + seed) % 256, (y * 4 + t * 5) % 256,
                               np.full_like(x, 40 * seed % 256)], -1)
                     for t in range(T)]).astype(np.uint8)
