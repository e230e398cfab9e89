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


def test_collect_workers_parent_builds_no_env_and_resumes_from_the_workers_spec(tmp_path, monkeypatch):
    """With workers the parent never makes the env (the workers do; the writer opens with the first worker's spec):
    the dataset's spec file is the env's; a rerun of a complete dataset starts no worker; a wrong env name comes
    back from the workers as the one-line error, exit 2."""
    from robobench.collect import SPEC_FILE
    from robobench.envs import make_env
    out = tmp_path/'w'
    s = collect('toy/Point', 3, out, progress=False, env_kwargs=SHORT, workers=2)
    assert s['complete'] and s['env_id'] == 'toy/Point'
    import json
    saved = json.loads((out/SPEC_FILE).read_text())
    env = make_env('toy/Point', cameras=[], render_images=False, **SHORT)   # as collect makes it
    try: assert saved['env'] == env.spec.to_dict() and saved['expert'] == 'PointExpert'
    finally: env.close()
    import robobench.pool
    with monkeypatch.context() as m:   # complete already: no worker is started
        m.setattr(robobench.pool, 'run_processes', lambda *a, **k: pytest.fail('a worker pool was started'))
        again = collect('toy/Point', 3, out, progress=False, env_kwargs=SHORT, workers=2)
    assert again['complete'] and again['attempts'] == s['attempts'] and again['next_seed'] == s['next_seed']
    more = collect('toy/Point', 5, out, progress=False, env_kwargs=SHORT, workers=2)   # resume: after the last seed
    seeds = [r['seed'] for r in read_jsonl(out/EPISODES_FILE)]
    assert more['saved_success'] == 5 and seeds == list(range(more['next_seed']))
    r = _robobench('collect', '--env', 'maniskill/PickCub-v1', '--episodes', 1, '--out', tmp_path/'bad', '--workers', 2,
                   timeout=300)
    assert r.returncode == 2 and "Did you mean 'PickCube-v1'" in r.stderr and 'Traceback' not in r.stderr, r.stderr
    assert not (tmp_path/'bad').exists()


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


def test_train_num_processes_2_on_cpu_checkpoints_resume_and_load(tmp_path):
    "accelerate DDP with gloo on CPU: rank 0 writes checkpoints; --resume continues them; LeRobot loads the result."
    collect('toy/Point', 3, tmp_path/'data'/'demos', progress=False)
    out = tmp_path/'run'
    def train(steps, *extra):
        return _robobench('train', '--repo-ids', 'demos', '--root', tmp_path/'data', '--policy', 'act',
                          '--training-steps', steps, '--batch-size', 4, '--save-freq', 2, '--log-freq', 1,
                          '--action-chunk-size', 5, '--n-action-steps', 5, '--policy.dim_model', 32,
                          '--policy.dim_feedforward', 64, '--policy.use_vae', 'false', '--output-dir', out,
                          '--device', 'cpu', '--num-processes', 2, *extra, timeout=900)
    r = train(2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'global batch 2 x 4 = 8' in r.stdout and 'MULTI_CPU' in r.stdout
    assert (out/'checkpoint_2'/'training_state'/'training_step.json').exists()
    r = train(4, '--resume')
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'Resuming from' in r.stdout and (out/'checkpoint_4').exists()
    recs = read_jsonl(out/'metrics.jsonl')
    assert [x['step'] for x in recs if 'loss' in x] == [1, 2, 3, 4]   # written once, by rank 0
    import json
    summary = json.loads((out/'train_summary.json').read_text())
    assert summary['resumed_from_step'] == 2 and summary['step'] == 4
    info = json.loads((out/'final_model'/'train_info.json').read_text())
    assert info['config']['num_processes'] == 2 and info['step'] == 4
    from lerobot.policies.act.modeling_act import ACTPolicy
    policy = ACTPolicy.from_pretrained(out/'final_model')
    assert policy.config.dim_model == 32 and not policy.config.use_vae
    # a mistake is one line and exit code 2, before any process starts
    r = train(4)
    assert r.returncode == 2 and 'already holds a training run' in r.stderr and 'Traceback' not in r.stderr


@pytest.fixture
def two_node_ray(monkeypatch):
    """A Ray head node plus a second node on this machine, one CPU each (Ray's own multi-node test cluster), in a
    temp dir of its own; afterwards its processes, and only those, are stopped. Two one-CPU actors can only run by
    using both nodes."""
    pytest.importorskip('ray')
    import tempfile, shutil
    from ray.cluster_utils import Cluster
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
    for k in ('RAY_raylet_start_wait_time_s', 'RAY_agent_register_timeout_ms'):   # a loaded 2-core machine is slow
        monkeypatch.setenv(k, '600' if k.endswith('_s') else '600000')
    monkeypatch.delenv('RAY_ADDRESS', raising=False)
    temp = tempfile.mkdtemp(prefix='rbray', dir='/tmp')   # short: Ray's unix socket paths have a length limit
    from ray._private.utils import get_ray_address_file
    # the head node records its address in Ray's default temp dir (/tmp/ray), which a fresh machine lacks
    Path(get_ray_address_file(None)).parent.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(initialize_head=False)
    try:
        cluster.add_node(num_cpus=1, include_dashboard=False, temp_dir=temp)
        cluster.add_node(num_cpus=1, temp_dir=temp)
        cluster.wait_for_nodes()
        yield cluster.address
    finally:
        try: cluster.shutdown()
        finally:
            _kill_processes_naming(temp)   # whatever a node that failed to start left behind
            shutil.rmtree(temp, ignore_errors=True)


def _kill_processes_naming(text: str):
    "SIGKILL the processes whose command line contains `text` (our cluster's temp dir)."
    for d in Path('/proc').iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid(): continue
        try: cmd = (d / 'cmdline').read_bytes().replace(b'\0', b' ').decode(errors='replace')
        except OSError: continue
        if text in cmd:
            try: os.kill(int(d.name), signal.SIGKILL)
            except OSError: pass


def test_collect_and_eval_on_a_two_node_ray_cluster(tmp_path, two_node_ray):
    addr = two_node_ray
    r = _robobench('collect', '--env', 'toy/Point', '--episodes', 4, '--out', tmp_path/'ray', '--workers', 2,
                   '--ray-address', addr, '--env-kwargs', '{"max_steps": 4}', '--dump-failed', timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    collect('toy/Point', 4, tmp_path/'ref', progress=False, env_kwargs=SHORT, dump_failed=True)
    _assert_same(tmp_path/'ray', tmp_path/'ref')
    # RAY_ADDRESS (Ray's own convention) instead of --ray-address: a resume through the cluster appends in order
    r = _robobench('collect', '--env', 'toy/Point', '--episodes', 6, '--out', tmp_path/'ray', '--workers', 2,
                   '--backend', 'ray', '--env-kwargs', '{"max_steps": 4}', '--dump-failed',
                   env={**_env(), 'RAY_ADDRESS': addr}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    collect('toy/Point', 6, tmp_path/'ref', progress=False, env_kwargs=SHORT, dump_failed=True)
    _assert_same(tmp_path/'ray', tmp_path/'ref')
    r = _robobench('eval', '--environment', 'toy/Point', '--policy.client', 'tests.eval_clients:PGain',
                   '--episodes', 4, '--workers', 2, '--backend', 'ray', '--ray-address', addr,
                   '--run-folder', tmp_path/'ev', '--no-video', '--json', timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    import json
    summary = json.loads(r.stdout[r.stdout.index('{'):r.stdout.rindex('}') + 1])
    assert summary['backend'] == 'ray' and summary['episodes'] == 4
    info = json.loads((tmp_path/'ev'/'run_info.json').read_text())
    assert addr in json.dumps(info)
