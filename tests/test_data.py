"""robobench.data / robobench.browse on datasets built here with LeRobot's own API and a real TFDS builder."""
import json, os
import numpy as np
import pytest

from robobench.data import ACTION, STATE, open_dataset, LeRobotData, cli_inspect, compare_stats
from robobench.rlds import RLDSData, write_rlds_dataset, convert_rlds_to_lerobot, cli_convert
from robobench.mixing import dagger_filter, mix_datasets

from tests._lerobot_data import make_lerobot as _make_lerobot, gradient_frames as _gradient

QS = (0.01, 0.99)


def _np_stats(x):
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    return {'mean': x.mean(0), 'std': x.std(0), 'min': x.min(0), 'max': x.max(0),
            'q01': np.quantile(x, .01, axis=0), 'q99': np.quantile(x, .99, axis=0)}


# ---------------------------------------------------------------- LeRobot: two cameras, unusual state dims
@pytest.fixture(scope='module')
def two_cam(tmp_path_factory):
    rng = np.random.default_rng(0)
    feats = {STATE: {'dtype': 'float32', 'shape': (11,), 'names': None},
             ACTION: {'dtype': 'float32', 'shape': (3,), 'names': None},
             'observation.images.front': {'dtype': 'image', 'shape': (24, 32, 3),
                                          'names': ['height', 'width', 'channels']},
             'observation.images.wrist': {'dtype': 'video', 'shape': (64, 64, 3),
                                          'names': ['height', 'width', 'channels']}}
    eps = []
    for e, T in enumerate([8, 2, 12]):
        st = rng.normal(size=(T, 11)).astype(np.float32) * np.arange(1, 12, dtype=np.float32)
        st[:, 7] = 0.5  # a constant dim
        eps.append({STATE: st, ACTION: rng.uniform(-1, 1, (T, 3)).astype(np.float32),
                    'observation.images.front': rng.integers(0, 255, (T, 24, 32, 3), dtype=np.uint8),
                    'observation.images.wrist': _gradient(T, 64, 64, e),
                    'task': ['open the drawer', 'close it'][e % 2]})
    root = _make_lerobot(tmp_path_factory.mktemp('lr') / 'two_cam', 'test/two_cam', eps, feats, use_videos=True)
    return root, eps


def test_lerobot_summary_episode_stats(two_cam):
    root, eps = two_cam
    ds = open_dataset(root)
    assert isinstance(ds, LeRobotData)
    s = ds.summary()
    assert (s['episodes'], s['frames'], s['fps']) == (3, 22, 10)
    assert s['cameras'] == ['observation.images.front', 'observation.images.wrist']
    assert s['features'][STATE] == {'dtype': 'float32', 'shape': [11]}
    assert s['tasks'] == ['close it', 'open the drawer'] and s['success'] is None
    assert s['episode_length'] == {'min': 2, 'max': 12, 'mean': 22 / 3}
    ep = ds.episode(2)
    assert np.array_equal(ep[STATE], eps[2][STATE]) and np.array_equal(ep[ACTION], eps[2][ACTION])
    assert np.array_equal(ep['observation.images.front'], eps[2]['observation.images.front'])  # PNG: lossless
    assert ep['observation.images.wrist'].shape == (12, 64, 64, 3)  # video: lossy but close
    assert np.abs(ep['observation.images.wrist'].astype(int) - eps[2]['observation.images.wrist']).mean() < 12
    assert ep['task'] == 'open the drawer'
    with pytest.raises(IndexError, match='3 episodes'): ds.episode(3)
    # stats against numpy on the same arrays
    st = ds.stats()
    for k in (STATE, ACTION):
        ref = _np_stats(np.concatenate([e[k] for e in eps]))
        for name, v in ref.items():
            np.testing.assert_allclose(st[k][name], v, rtol=1e-5, atol=1e-6, err_msg=f'{k}.{name}')
    # same moments as LeRobot's own meta.stats; quantiles estimated differently are reported, not hidden
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata
    meta = LeRobotDatasetMetadata('test/two_cam', root=root)
    assert compare_stats(st, meta.stats, keys=[STATE, ACTION], stats=('mean', 'std', 'min', 'max')) == []
    assert ds.compare_stats(stats=('mean', 'std', 'min', 'max')) == []


def test_lerobot_check_and_norm_json(two_cam, tmp_path):
    root, _ = two_cam
    ds = open_dataset(root)
    codes = {(f['code'], f['key']) for f in ds.check()}
    assert ('constant', STATE) in codes and not any(c == 'nan' for c, _ in codes)
    # 2 frames still hold one transition: no error (only a warning)
    assert not any(c == 'short_episode' for c, _ in codes)
    p = ds.save_norm_stats(tmp_path / 'norm.json', unnorm_key='drawer_panda')
    d = json.loads(p.read_text())['drawer_panda']
    assert d['num_transitions'] == 22 and d['num_trajectories'] == 3 and len(d['proprio']['q99']) == 11
    np.testing.assert_allclose(d['action']['mean'], ds.stats()[ACTION]['mean'])


def test_check_findings_on_a_bad_dataset(tmp_path):
    feats = {STATE: {'dtype': 'float32', 'shape': (4,), 'names': None},
             ACTION: {'dtype': 'float32', 'shape': (2,), 'names': None}}
    rng = np.random.default_rng(1)
    eps = [{STATE: rng.normal(size=(T, 4)).astype(np.float32), ACTION: rng.normal(size=(T, 2)).astype(np.float32),
            'task': 't'}
           for T in (6, 1)]
    eps[0][STATE][3, 2] = np.nan
    root = _make_lerobot(tmp_path / 'bad', 'test/bad', eps, feats)
    # tamper with the stored stats as a stale stats.json would
    sp = root / 'meta' / 'stats.json'
    stats = json.loads(sp.read_text()); stats[ACTION]['max'] = [9.0, 9.0]; sp.write_text(json.dumps(stats))
    f = open_dataset(root).check()
    by = {x['code']: x for x in f}
    assert by['nan']['key'] == STATE and by['nan']['dims'] == [2]
    assert by['short_episode']['episode'] == 1
    assert by['stats_range']['key'] == ACTION and by['stats_range']['dims'] == [0, 1]
    assert cli_inspect([str(root), '--check']) == 1


def test_cli_inspect_json(two_cam, capsys, tmp_path):
    root, _ = two_cam
    assert cli_inspect([str(root), '--json', '--stats', '--stats-out', str(tmp_path / 'n.json'),
                        '--unnorm-key', 'k']) == 0
    out = json.loads(capsys.readouterr().out)
    assert out['summary']['frames'] == 22 and len(out['stats'][STATE]['mean']) == 11
    assert 'k' in json.loads((tmp_path / 'n.json').read_text())
    assert cli_inspect([str(root)]) == 0
    assert 'episodes 3, frames 22' in capsys.readouterr().out


def test_offline_repo_id_fails_fast(monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(FileNotFoundError, match='HF_HUB_OFFLINE=1'):
        open_dataset('someone/not_downloaded')


def test_browse_widget_and_static_render(two_cam, tmp_path):
    import matplotlib; matplotlib.use('Agg')
    root, eps = two_cam
    ds = open_dataset(root)
    b = ds.browse()
    assert sorted(b.images) == ds.cameras and b.fr_slider.max == 7
    b.ep_slider.value = 2
    assert b.fr_slider.max == 11 and 'open the drawer' in b.info.value
    b.fr_slider.value = 4
    assert list(b._cursors[0].get_xdata()) == [4, 4]
    fig = ds.render(2, n_frames=4, path=tmp_path / 'ep.png')
    assert len(fig.axes) == 2 * 4 + 2 and (tmp_path / 'ep.png').stat().st_size > 1000


# ---------------------------------------------------------------- RLDS in the seed-001 layout
def _rlds_episodes(n=3, seed=0):
    rng = np.random.default_rng(seed)
    eps = []
    for e in range(n):
        T = 5 + 2 * e
        eps.append({'steps': {'observation/image': rng.integers(0, 255, (T, 32, 32, 3), dtype=np.uint8),
                              'observation/wrist_image': rng.integers(0, 255, (T, 32, 32, 3), dtype=np.uint8),
                              'observation/state': rng.normal(size=(T, 8)).astype(np.float32),
                              'action': rng.normal(size=(T, 7)).astype(np.float32),
                              'language_instruction': np.array([f'pick the {["apple", "cube"][e % 2]}'] * T,
                                                               dtype=object),
                              'reward': (np.arange(T) == T - 1).astype(np.float32), 'discount': np.ones(T, np.float32),
                              'is_first': np.arange(T) == 0, 'is_last': np.arange(T) == T - 1,
                              'is_terminal': np.arange(T) == T - 1},
                    'episode_metadata': {'file_path': f'/data/ep{e}.npy', 'success': e != 1}})
    return eps


@pytest.fixture(scope='module')
def rlds(tmp_path_factory):
    eps = _rlds_episodes()
    d = write_rlds_dataset(tmp_path_factory.mktemp('rlds'), eps, name='custom_dataset', version='1.0.0')
    return d, eps


def test_rlds_layout_and_view(rlds):
    d, eps = rlds
    assert d.parts[-2:] == ('custom_dataset', '1.0.0')
    names = os.listdir(d)
    assert {'dataset_info.json', 'features.json'} <= set(names) and any('.tfrecord' in n for n in names)
    import sys
    assert 'tensorflow' not in sys.modules
    ds = open_dataset(d.parent)  # the dataset dir: newest version is picked
    try:
        assert isinstance(ds, RLDSData)
        s = ds.summary()
        assert (s['episodes'], s['frames']) == (3, 5 + 7 + 9)
        assert (s['cameras'] == sorted(s['cameras'])
                or set(s['cameras']) == {'observation.images.image', 'observation.images.wrist_image'})
        assert set(s['cameras']) == {'observation.images.image', 'observation.images.wrist_image'}
        assert s['tasks'] == ['pick the apple', 'pick the cube']
        assert s['success'] == {'successful': 2, 'episodes': 3, 'rate': 2 / 3}
        ep = ds.episode(1)
        assert np.array_equal(ep[ACTION], eps[1]['steps']['action'])
        assert np.array_equal(ep['observation.images.wrist_image'], eps[1]['steps']['observation/wrist_image'])
        assert ep['task'] == 'pick the cube' and ep['success'] is False
        st = ds.stats()
        ref = _np_stats(np.concatenate([e['steps']['action'] for e in eps]))
        for k, v in ref.items(): np.testing.assert_allclose(st[ACTION][k], v, rtol=1e-5, atol=1e-6)
        assert {f['code'] for f in ds.check()} <= {'constant'}
    finally:
        ds.close()
    assert 'tensorflow' not in sys.modules  # TF only ever ran in the child


def test_rlds_to_lerobot_roundtrip_resumable(rlds, tmp_path):
    d, eps = rlds
    out = tmp_path / 'converted'
    convert_rlds_to_lerobot(d, out, repo_id='test/converted', use_videos=False, max_episodes=2, progress=False)
    assert open_dataset(out).num_episodes == 2
    # resume through the CLI: only the missing episode is converted
    assert cli_convert([str(d), '--to', 'lerobot', '--out', str(out), '--repo-id', 'test/converted',
                        '--no-videos']) == 0
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    lr = LeRobotDataset('test/converted', root=out)  # loads in LeRobot unmodified
    assert lr.num_episodes == 3 and lr.num_frames == 21
    item = lr[5]  # first frame of episode 1
    np.testing.assert_array_equal(item[ACTION].numpy(), eps[1]['steps']['action'][0])
    assert item['task'] == 'pick the cube'
    v = open_dataset(out)
    for i, e in enumerate(eps):
        ep = v.episode(i)
        np.testing.assert_array_equal(ep[ACTION], e['steps']['action'])
        np.testing.assert_array_equal(ep[STATE], e['steps']['observation/state'])
        np.testing.assert_array_equal(ep['observation.images.image'], e['steps']['observation/image'])
        assert ep['success'] == e['episode_metadata']['success']
    assert v.summary()['success']['successful'] == 2
    meta_lines = (out / 'meta' / 'rlds_episode_metadata.jsonl').read_text().splitlines()
    assert ([json.loads(line)['metadata']['episode_metadata/file_path'] for line in meta_lines]
            == [f'/data/ep{i}.npy' for i in range(3)])


# ---------------------------------------------------------------- DAgger filtering and mixing
STATE_ONLY = {STATE: {'dtype': 'float32', 'shape': (6,), 'names': None},
              'observation.environment_state': {'dtype': 'float32', 'shape': (3,), 'names': None},
              ACTION: {'dtype': 'float32', 'shape': (4,), 'names': None}}


@pytest.fixture(scope='module')
def bc_and_dagger(tmp_path_factory):
    rng = np.random.default_rng(2)
    base = tmp_path_factory.mktemp('mix')
    bc_eps = [{STATE: rng.normal(size=(10, 6)).astype(np.float32),
               'observation.environment_state': rng.normal(size=(10, 3)).astype(np.float32),
               ACTION: rng.normal(size=(10, 4)).astype(np.float32), 'task': 'lift'} for _ in range(3)]
    dg_feats = {**STATE_ONLY, 'source': {'dtype': 'int64', 'shape': (1,), 'names': None},
                'success': {'dtype': 'bool', 'shape': (1,), 'names': None}}
    dg_eps = []
    for e, ok in enumerate([True, False, True, True]):
        src = np.zeros((10, 1), np.int64); src[3:7] = 1  # frames 3..6 are human corrections
        dg_eps.append({STATE: (rng.normal(size=(10, 6)) + 3).astype(np.float32),
                       'observation.environment_state': rng.normal(size=(10, 3)).astype(np.float32),
                       ACTION: (rng.normal(size=(10, 4)) + 1).astype(np.float32), 'source': src,
                       'success': np.full((10, 1), ok), 'task': 'lift'})
    bc = _make_lerobot(base / 'lift_demos', 'test/lift_demos', bc_eps, STATE_ONLY)
    dg = _make_lerobot(base / 'lift_dagger', 'test/lift_dagger', dg_eps, dg_feats)
    return bc, dg, bc_eps, dg_eps


def test_dagger_filter(bc_and_dagger, caplog):
    bc, dg, _, dg_eps = bc_and_dagger
    import logging
    with caplog.at_level(logging.INFO, logger='robobench.data'):
        assert dagger_filter(bc) is None
        idx = dagger_filter(dg)
    assert "not a DAgger dataset" in caplog.text and 'kept 12/40 frames' in caplog.text
    assert len(idx) == 12 and set((idx // 10).tolist()) == {0, 2, 3} and set((idx % 10).tolist()) == {3, 4, 5, 6}
    assert open_dataset(dg).summary()['success'] == {'successful': 3, 'episodes': 4, 'rate': 0.75}


def test_mixing_weights_stats_and_refusal(bc_and_dagger, two_cam):
    bc, dg, bc_eps, dg_eps = bc_and_dagger
    keys = [STATE, 'observation.environment_state', ACTION]
    with pytest.raises(ValueError, match=r"source: lift_demos=missing, lift_dagger=\[1\] int64"):
        mix_datasets([bc, dg])
    with pytest.raises(ValueError, match=r"observation.state: lift_demos=\[6\] float32, two_cam=\[11\] float32"):
        mix_datasets([bc, two_cam[0]], keys=[STATE, ACTION])
    mix = mix_datasets([bc, dg], weights=[0.25, 0.75], keys=keys, num_samples=4000, seed=0)
    assert len(mix) == 30 + 12 and [p['frames'] for p in mix.parts] == [30, 12]
    assert [p['dagger_filtered'] for p in mix.parts] == [False, True]
    drawn = np.array(list(iter(mix.sampler)))
    assert abs((drawn >= 30).mean() - 0.75) < 0.04  # weights realized
    # combined stats (LeRobot's aggregate_stats) == numpy on the concatenated kept frames
    kept = np.concatenate([e[ACTION][3:7] for e, ok in zip(dg_eps, [True, False, True, True]) if ok])
    allx = np.concatenate([e[ACTION] for e in bc_eps] + [kept])
    np.testing.assert_allclose(mix.stats[ACTION]['mean'], allx.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mix.stats[ACTION]['std'], allx.std(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(mix.stats[ACTION]['max'], allx.max(0), rtol=1e-6)
    batch = next(iter(mix.dataloader(batch_size=16)))
    assert tuple(batch[ACTION].shape) == (16, 4) and 'source' not in batch
