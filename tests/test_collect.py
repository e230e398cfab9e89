"""collect() / robobench collect on real simulators, reloaded with LeRobot itself."""
import json, numpy as np, pytest
from pathlib import Path
from robobench.core import read_jsonl
from robobench.collect import collect, cli_collect, EPISODES_FILE

pytestmark = [pytest.mark.sim, pytest.mark.slow]


def _load(repo_id, root):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    return LeRobotDataset(repo_id, root=root)


def test_collect_maniskill_state_and_resume(tmp_path):
    out = tmp_path/'pick'
    s = collect('maniskill/PickCube-v1', 2, out, start_seed=10, progress=False)
    assert s['complete'] and s['saved_success'] == 2 and s['next_seed'] == 12
    ds = _load('local/pick', out)
    assert ds.num_episodes == 2
    for k, n in [('observation.state', 25), ('observation.environment_state', 17), ('action', 4)]:
        assert ds.meta.features[k]['shape'] == (n,), k
    item = ds[0]
    assert item['task'] == 'pick up the red cube and move it to the goal position'
    assert bool(item['episode_success']) and int(item['seed']) == 10
    # resume: same call with a bigger target continues at seed 12 and appends
    assert cli_collect(['--env', 'maniskill/PickCube-v1', '--episodes', '3', '--out', str(out)]) == 0
    ds = _load('local/pick', out)
    assert ds.num_episodes == 3
    seeds = sorted({int(ds[i]['seed']) for i in range(len(ds))})
    assert seeds == [10, 11, 12]
    recs = read_jsonl(out/EPISODES_FILE)
    assert [r['seed'] for r in recs] == [10, 11, 12] and all(r['saved'] and r['success'] for r in recs)
    spec = json.loads((out/'robobench_collect.json').read_text())
    assert spec['env']['env_id'] == 'maniskill/PickCube-v1'


def test_collect_robosuite_video_and_dump_failed(tmp_path):
    out = tmp_path/'lift'
    class Flaky:  # a custom actor: does nothing on its first episode (fails), then acts like the expert
        def __init__(self, env):
            from robobench.experts import make_expert
            self.ex, self.ep = make_expert(env), -1
        def reset(self): self.ep += 1; self.ex.reset()
        def act(self, obs):
            return np.zeros(7, np.float32) if self.ep == 0 else self.ex.act(obs)
    from robobench.envs import make_env
    env = make_env('robosuite/Lift', cameras=['agentview'], image_size=48, max_steps=60)
    s = collect(env, 1, out, expert=Flaky(env), cameras=['agentview'], video=True, dump_failed=True, progress=False)
    env.close()
    assert s['saved_success'] == 1 and s['saved_episodes'] == 2 and s['attempts'] == 2
    ds = _load('local/lift', out)
    assert ds.num_episodes == 2
    f = ds.meta.features['observation.images.agentview']
    assert f['dtype'] == 'video' and tuple(f['shape']) == (48, 48, 3)
    first, last = ds[0], ds[len(ds) - 1]
    assert not bool(first['episode_success']) and bool(last['episode_success'])  # failed attempt flagged
    assert tuple(first['observation.images.agentview'].shape) == (3, 48, 48)
    assert list((out/'videos').rglob('*.mp4'))


def test_rlds_export_reads_back_the_same_episodes(tmp_path):
    """collect(..., rlds_out=) exports the collected LeRobot dataset to RLDS (TensorFlow in a child process);
    open_dataset on the export gives the same episodes, actions, states, images, tasks and seeds."""
    import sys
    from robobench.data import open_dataset
    out, rl = tmp_path / 'pt', tmp_path / 'rlds'
    s = collect('toy/Point', 3, out, start_seed=4, cameras=['top'], progress=False, rlds_out=rl)
    d = Path(s['rlds'])
    assert d.parts[-2:] == ('pt', '1.0.0') and 'tensorflow' not in sys.modules
    names = {p.name for p in d.iterdir()}
    assert {'dataset_info.json', 'features.json'} <= names and any('.tfrecord' in n for n in names)
    feats = json.dumps(json.loads((d / 'features.json').read_text()))
    for k in ('image', 'state', 'environment_state', 'action', 'language_instruction', 'is_first', 'is_last',
              'is_terminal', 'reward', 'discount', 'episode_metadata'):
        assert f'"{k}"' in feats, k
    src, back = open_dataset(out), open_dataset(d)
    try:
        assert back.num_episodes == src.num_episodes == 3
        assert list(back.episode_lengths) == list(src.episode_lengths)
        for i in range(3):
            a, b = src.episode(i), back.episode(i)
            for k in ('action', 'observation.state', 'observation.environment_state'):
                np.testing.assert_array_equal(a[k], b[k])
            np.testing.assert_array_equal(a['observation.images.top'], b['observation.images.image'])
            assert a['task'] == b['task'] and b['success'] is True
            meta = {k.split('/')[-1]: v for k, v in b['episode_metadata'].items()}
            assert int(meta['seed']) == int(np.asarray(a['seed']).ravel()[0]) == 4 + i and bool(meta['success'])
    finally:
        back.close()


def test_collect_shows_one_progress_bar_not_a_map_bar_per_episode(tmp_path, capfd):
    from robobench.collect import collect
    collect('toy/Point', 3, tmp_path / 'ds', cameras=[], progress=True)
    err = capfd.readouterr().err
    assert 'collect toy/Point' in err and 'Map' not in err
