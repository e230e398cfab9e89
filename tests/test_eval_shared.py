"""Evaluation workers share one batched policy server (issue 24 part 2): the same records seed for seed as one worker
with its own in-process policy, per-connection state kept on the server, no server left behind."""
import json, os, subprocess, sys
from pathlib import Path
import numpy as np, pytest
from robobench.envs import make_env
from robobench.evaluation import evaluate
from robobench.policies import FeatureSpec, tiny_act_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.net]
ROOT = Path(__file__).resolve().parent.parent
ROBOBENCH = str(Path(sys.executable).parent / 'robobench')
ENV, STEPS = 'toy/Point', 12


@pytest.fixture(scope='module')
def te_act(tmp_path_factory):
    "A tiny ACT with temporal ensembling (step execution: per-connection state on the server) for toy/Point."
    env = make_env(ENV); spec = env.spec; env.close()
    return tiny_act_checkpoint(tmp_path_factory.mktemp('ckpt') / 'te', spec, chunk_size=4, n_action_steps=1,
                               temporal_ensemble_coeff=0.01)


def _serve_children() -> list[int]:
    "Live `robobench serve` children of this process (the shared server runs `cli_serve`)."
    out = []
    for d in Path('/proc').iterdir():
        if not d.name.isdigit(): continue
        try:
            stat = (d / 'stat').read_text(); cmd = (d / 'cmdline').read_bytes().decode(errors='replace')
        except OSError: continue
        ppid, state = int(stat.rsplit(')', 1)[1].split()[1]), stat.rsplit(')', 1)[1].split()[0]
        if ppid == os.getpid() and 'cli_serve' in cmd and state != 'Z': out.append(int(d.name))
    return out


def _actions(res) -> dict:
    return {r['seed']: res.trajectory(r['seed'])['action'] for r in res.episodes}


def test_workers_share_one_batched_server_and_match_one_worker(te_act, tmp_path):
    kw = dict(episodes=4, max_steps=STEPS, video=False, report=False, progress=False)
    one = evaluate(ENV, str(te_act), run_folder=tmp_path / 'one', **kw)
    two = evaluate(ENV, str(te_act), workers=2, run_folder=tmp_path / 'two', **kw)
    info = json.loads((tmp_path / 'two' / 'run_info.json').read_text())
    shared = info['shared_server']
    assert shared['used'] and shared['max_batch'] == 2 and shared['url'].startswith('ws://127.0.0.1:')
    assert shared['batching']['execution'] == 'step' and shared['batching']['batched']   # ACT ensembling batches
    assert two.summary['shared_server']['used'] and two.summary['backend'] == 'process'
    assert info['client_info']['client'] in ('websocket', 'WebsocketClient')   # the workers' client: -m HOST:PORT's
    assert not Path(f"/proc/{shared['pid']}").exists() or not _serve_children()   # stopped with the evaluation
    assert 'shared_server' not in json.loads((tmp_path / 'one' / 'run_info.json').read_text())
    # seed for seed: outcome, length, and every action (batched forward: float rounding only)
    strip = lambda res: [(r['seed'], r['outcome'], r['length']) for r in res.episodes]
    assert strip(one) == strip(two) and len(one.episodes) == 4
    a1, a2 = _actions(one), _actions(two)
    for seed in a1: np.testing.assert_allclose(a2[seed], a1[seed], atol=1e-4, err_msg=f'seed {seed}')
    # the temporal ensemble is reset at every episode: a seed's actions do not depend on the seeds run before it
    alone = evaluate(ENV, str(te_act), episodes=1, start_seed=3, run_folder=tmp_path / 'alone', **{
        k: v for k, v in kw.items() if k != 'episodes'})
    np.testing.assert_allclose(_actions(alone)[3], a1[3], atol=1e-5)


def test_no_shared_server_keeps_a_policy_per_worker_and_errors_stop_the_server(te_act, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE='1',
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
    r = subprocess.run([ROBOBENCH, 'eval', '-e', ENV, '-m', str(te_act), '--episodes', '2', '--workers', '2',
                        '--max-steps', str(STEPS), '--no-video', '--no-report', '--no-shared-server',
                        '--run-folder', str(tmp_path / 'own')], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads((tmp_path / 'own' / 'run_info.json').read_text())
    assert info['shared_server']['used'] is False and 'no-shared-server' in info['shared_server']['why']
    assert info['client_info']['client'] in ('local', 'LocalClient')
    # a policy that does not fit the env: the workers stop the run, and the shared server goes with it
    bad = tiny_act_checkpoint(tmp_path / 'bad', {'observation.state': FeatureSpec([7]),
                                                 'observation.environment_state': FeatureSpec([3])}, action_dim=5)
    with pytest.raises(Exception, match='does not fit|cannot start'):
        evaluate(ENV, str(bad), episodes=2, workers=2, video=False, progress=False, max_steps=STEPS)
    assert _serve_children() == []


def test_workers_start_while_the_server_loads_and_a_server_that_fails_says_why(te_act, tmp_path):
    "Process workers dial the shared server while it loads; one that never comes up ends the run with its own reason."
    import shutil, time
    from robobench.core import RobobenchError
    bad = Path(shutil.copytree(te_act, tmp_path / 'truncated'))
    f = next(bad.glob('*processor*.safetensors')); f.write_bytes(f.read_bytes()[:100])   # the server refuses it
    t0 = time.monotonic()
    with pytest.raises(RobobenchError, match='truncated or corrupt'):
        evaluate(ENV, str(bad), episodes=2, workers=2, video=False, progress=False, max_steps=STEPS)
    assert time.monotonic() - t0 < 120   # at once when the server exits (the workers' wait_s is 180 s)
    assert _serve_children() == []
