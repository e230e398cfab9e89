"""Scale (issue 24): collect with workers / Ray (same dataset seed for seed, kill-safe), a two-node Ray cluster,
and training across processes with accelerate (DDP, gloo on CPU)."""
import os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np, pytest
from robobench.core import read_jsonl
from robobench.collect import EPISODES_FILE, collect

ROOT = Path(__file__).resolve().parent.parent
ROBOBENCH = str(Path(sys.executable).parent / 'robobench')
pytestmark = [pytest.mark.slow]
SHORT = {'max_steps': 4}   # toy/Point episodes that sometimes fail, so skipped seeds and --dump-failed matter


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop('RAY_ADDRESS', None)
    return env


def _robobench(*args, **kw):
    return subprocess.run([ROBOBENCH, *map(str, args)], env=kw.pop('env', _env()),
                          capture_output=True, text=True, **kw)


def _table(root) -> dict:
    "Every frame of a collected dataset, read back with pyarrow, as arrays in the dataset's own order."
    import pyarrow.parquet as pq
    t = pq.read_table(sorted((Path(root)/'data').rglob('*.parquet'))).to_pandas().sort_values('index')
    cols = ['observation.state', 'observation.environment_state', 'action', 'episode_success', 'seed']
    return {**{c: np.stack(t[c].to_numpy()) for c in cols},
            'episode_index': t['episode_index'].to_numpy(), 'frame_index': t['frame_index'].to_numpy()}


def _assert_same(a, b):
    ta, tb = _table(a), _table(b)
    assert set(ta) == set(tb)
    for k in ta: np.testing.assert_array_equal(ta[k], tb[k], err_msg=k)
    la, lb = read_jsonl(Path(a)/EPISODES_FILE), read_jsonl(Path(b)/EPISODES_FILE)
    strip = lambda recs: [{k: r[k] for k in ('seed', 'success', 'saved', 'steps') if k in r} for r in recs]
    assert strip(la) == strip(lb)


def test_collect_workers_2_writes_the_same_dataset_as_workers_1(tmp_path):
    one = collect('toy/Point', 6, tmp_path/'one', progress=False, env_kwargs=SHORT, dump_failed=True)
    two = collect('toy/Point', 6, tmp_path/'two', progress=False, env_kwargs=SHORT, dump_failed=True, workers=2)
    assert two['backend'] == 'process' and one['backend'] == 'local'
    assert one['saved_success'] == two['saved_success'] == 6 and one['next_seed'] == two['next_seed']
    assert one['saved_episodes'] > 6   # some failures were dumped, in seed order
    _assert_same(tmp_path/'one', tmp_path/'two')
    seeds = [r['seed'] for r in read_jsonl(tmp_path/'two'/EPISODES_FILE)]
    assert seeds == list(range(one['next_seed']))   # every seed once, in order
    # the CLI spelling, without failed episodes: the same as workers=1 again (resume appends in order too)
    r = _robobench('collect', '--env', 'toy/Point', '--episodes', 3, '--out', tmp_path/'cli', '--workers', 2,
                   '--env-kwargs', '{"max_steps": 4}', timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    collect('toy/Point', 3, tmp_path/'ref', progress=False, env_kwargs=SHORT)
    _assert_same(tmp_path/'cli', tmp_path/'ref')


def test_collect_workers_survives_kill_9_of_the_parent(tmp_path):
    out, n = tmp_path/'k', 24
    cmd = [ROBOBENCH, 'collect', '--env', 'toy/Point', '--episodes', str(n), '--out',
           str(out), '--workers', '2', '--cameras', 'top', '--env-kwargs', '{"max_steps": 4}', '--dump-failed']
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while len(read_jsonl(out/EPISODES_FILE)) < 4 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, 'collect finished before it could be killed'
        os.kill(proc.pid, signal.SIGKILL)   # the parent (the one writer) dies mid-run; its workers see EOF and exit
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None: proc.kill()
    killed_at = len(read_jsonl(out/EPISODES_FILE))
    assert 0 < killed_at
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    recs = read_jsonl(out/EPISODES_FILE)
    assert [x['seed'] for x in recs] == list(range(len(recs)))   # nothing lost, nothing duplicated
    assert sum(x['success'] for x in recs) == n
    collect('toy/Point', n, tmp_path/'ref', progress=False, env_kwargs=SHORT, dump_failed=True, cameras=['top'])
    _assert_same(out, tmp_path/'ref')
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    ds = LeRobotDataset('local/k', root=out)
    assert ds.num_episodes == len(recs) and ds[len(ds) - 1]['observation.images.top'].shape == (3, 32, 32)
