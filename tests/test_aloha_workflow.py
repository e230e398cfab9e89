"""The policy-server guide's ALOHA loop end to end on CPU: transfer-cube demos -> `robobench train` (ACT) ->
`robobench serve -m CKPT` -> `robobench eval -m host:port -e aloha` over openpi's websocket protocol, with a video."""
import json, subprocess, sys
from pathlib import Path
import pytest

pytestmark = [pytest.mark.sim, pytest.mark.slow]
ROBOBENCH = str(Path(sys.executable).parent / 'robobench')


def test_transfer_cube_demos_train_serve_eval(tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from robobench.collect import collect
    from robobench.server import serve
    s = collect('aloha/TransferCube', 2, tmp_path / 'data' / 'demos', start_seed=0, progress=False)
    assert s['complete'] and s['saved_episodes'] == 2
    ds = LeRobotDataset('local/demos', root=tmp_path / 'data' / 'demos')
    feats = ds.meta.features
    assert ds.fps == 50 and feats['observation.state']['shape'] == (14,) and feats['action']['shape'] == (14,)
    assert 2 * 100 < ds.num_frames < 2 * 400   # a demo ends when the task's reward reaches 4 (gym-aloha's success)
    out = tmp_path / 'ckpt'
    from tests._tiny_act import train_tiny_act
    r = train_tiny_act(tmp_path / 'data', out, steps=20, n_action_steps=10)
    assert r.returncode == 0, r.stderr[-3000:]
    with serve(out / 'final_model', device='cpu') as srv:
        assert srv.metadata['action_dim'] == 14
        run = tmp_path / 'eval'
        r = subprocess.run([ROBOBENCH, 'eval', '-m', f'{srv.host}:{srv.port}', '-e', 'aloha', '--episodes', '1',
                            '--max-steps', '30', '--video-episodes', '1', '--run-folder', str(run), '--json'],
                           capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout[:r.stdout.rindex('}') + 1])
    assert (summary['errors'], summary['completed']) == (0, 1)
    rec = json.loads((run / 'episodes.jsonl').read_text().splitlines()[0])
    assert rec['env'] == 'aloha/TransferCube' and rec['length'] == 30 and rec['outcome'] in ('success', 'failure')
    assert rec.get('video') and (run / rec['video']).stat().st_size > 1000   # the top camera's video


def test_pusht_eval_with_the_random_client(tmp_path):
    from robobench.evaluation import evaluate
    res = evaluate('pusht/PushT', 'random', episodes=2, start_seed=5, max_steps=25, run_folder=str(tmp_path / 'run'),
                   progress=False, video_episodes=1)
    s = res.summary
    assert (s['errors'], s['completed'], s['successes']) == (0, 2, 0)
    assert [r['length'] for r in res.episodes] == [25, 25] and all(r['outcome'] == 'failure' for r in res.episodes)
    assert res.episodes[0].get('video') and not res.episodes[1].get('video')
