"""Numbers you can believe: errors are never failures, a server's error keeps its cause, a metadata-less server's
assumptions are recorded, and a policy that does not fit the env stops the evaluation before the first episode."""
import json, signal, subprocess, sys, time, warnings
from pathlib import Path
import numpy as np
import pytest
from robobench.core import read_jsonl, read_json, free_port, RobobenchError
from robobench.evaluation import evaluate

ROBOBENCH = str(Path(sys.executable).parent / 'robobench')
ROOT = Path(__file__).resolve().parent.parent


def _start_server(port, ready):
    ready.unlink(missing_ok=True)
    proc = subprocess.Popen([ROBOBENCH, 'serve', '--policy', 'scripted', '--env', 'toy/Point', '--port', str(port),
                             '--ready-file', str(ready)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    from robobench.server import http_get
    t0 = time.time()
    while time.time() - t0 < 120:
        assert proc.poll() is None, 'robobench serve exited'
        try:
            if ready.exists() and http_get('127.0.0.1', port)[0] == 200: return proc
        except OSError: pass
        time.sleep(0.1)
    proc.kill(); raise AssertionError('server not ready')


def _eval_cmd(port, run, episodes=150):
    return [ROBOBENCH, 'eval', '--environment', 'toy/Point', '-m', f'127.0.0.1:{port}', '--episodes', str(episodes),
            '--start-seed', '1000', '--run-folder', str(run), '--no-video', '--policy.connect_timeout', '2']


@pytest.mark.net
@pytest.mark.slow
def test_server_killed_mid_eval_errors_are_not_failures_and_resume_completes(tmp_path):
    port, ready, run = free_port(), tmp_path / 'ready.json', tmp_path / 'run'
    server = _start_server(port, ready)
    ev = subprocess.Popen(_eval_cmd(port, run), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.time()
        while len(read_jsonl(run / 'episodes.jsonl')) < 5 and time.time() - t0 < 120: time.sleep(0.002)
        server.send_signal(signal.SIGKILL); server.wait()
        out, err = ev.communicate(timeout=300)
    finally:
        if server.poll() is None: server.kill()
    recs = read_jsonl(run / 'episodes.jsonl')
    done = [r for r in recs if r['outcome'] != 'error']; errs = [r for r in recs if r['outcome'] == 'error']
    assert len(recs) == 150 and 5 <= len(done) < 150 and errs, (len(done), len(errs))
    assert ev.returncode == 3, (ev.returncode, err[-2000:])                     # documented: some episodes errored
    assert all(r['outcome'] == 'success' for r in done)                          # the expert solves every seed it ran
    assert all(r['error']['type'] in ('ServerUnavailable', 'ServerTimeout') and r['error']['traceback'] for r in errs)
    s = read_json(run / 'summary.json'); m = read_json(run / 'metrics.json')
    assert (s['episodes'], s['successes'], s['success_rate'], s['errors']) == (len(done), len(done), 1.0, len(errs))
    assert m['errors'] == len(errs) and m['success_rate'] == 1.0 and m['error_seeds'] == sorted(r['seed'] for r in errs)
    assert f'success {len(done)}/{len(done)} = 100.0%' in out and f'{len(errs)} ERROR episode(s) not counted' in out
    assert 'error, seed' in err and 'rerun the same command' in err
    # the server comes back on the same port: rerunning the same command retries the errored seeds only
    server = _start_server(port, ready)
    try: r = subprocess.run(_eval_cmd(port, run), capture_output=True, text=True, timeout=300)
    finally: server.kill(); server.wait()
    assert r.returncode == 0, r.stderr[-2000:]
    s = read_json(run / 'summary.json')
    assert (s['episodes'], s['successes'], s['errors']) == (150, 150, 0)
    assert len(read_jsonl(run / 'episodes.jsonl')) == 150 + len(errs)


class _Boom:
    "A policy that raises on its 3rd request (served in-process)."
    metadata = None
    def __init__(self): self.n = 0
    def infer(self, obs):
        self.n += 1
        if self.n == 3: raise ZeroDivisionError('the policy divided by zero')
        return {'actions': np.zeros((1, 2), np.float32)}


@pytest.mark.net
def test_a_server_side_error_keeps_its_remote_traceback(tmp_path):
    from robobench.server import serve
    with serve(_Boom()) as srv:
        res = evaluate('toy/Point', f'{srv.host}:{srv.port}', episodes=3, max_steps=2, run_folder=tmp_path / 'a',
                       progress=False, video=False)
    recs = {r['seed']: r for r in read_jsonl(tmp_path / 'a' / 'episodes.jsonl')}
    e = recs[1]                                        # requests 3 = episode 1's first step
    assert e['outcome'] == 'error' and 'ZeroDivisionError: the policy divided by zero' in e['failure_reason']
    assert 'Traceback' in e['error']['remote_traceback'] and 'def infer' not in e['failure_reason']
    assert e['error']['type'] == 'ServerError' and e['error']['phase'] == 'infer'
    assert [recs[s]['outcome'] for s in (0, 2)] == ['failure', 'failure']          # the next episode reconnected
    assert res.summary['errors'] == 1 and res.summary['episodes'] == 2


@pytest.mark.net
def test_metadata_less_server_assumptions_are_recorded_and_overridable(tmp_path):
    from tests._openpi_server import OpenpiLikeServer
    chunk = np.tile(np.array([[0.3, -0.3]], np.float32), (6, 1))
    with OpenpiLikeServer(lambda obs: {'actions': chunk}) as srv:   # openpi's default: metadata {}
        with pytest.warns(RuntimeWarning, match='no metadata.*whole chunk'):
            res = evaluate('toy/Point', f'127.0.0.1:{srv.port}', episodes=2, max_steps=12, run_folder=tmp_path / 'a',
                           progress=False, video=False)
        info = read_json(tmp_path / 'a' / 'run_info.json')
        assert 'whole chunk' in info['assumptions']['n_action_steps'] and info['server_metadata'] is None
        assert info['client_info']['n_action_steps'] == 'whole chunk'
        from robobench.viz import report
        assert 'Assumed' in report(res).read_text()
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            evaluate('toy/Point', f'127.0.0.1:{srv.port}', episodes=2, max_steps=12, run_folder=tmp_path / 'b',
                     progress=False, video=False, client_kwargs={'n_action_steps': 2})
        info = read_json(tmp_path / 'b' / 'run_info.json')
        assert 'n_action_steps' not in info.get('assumptions', {}) and info['client_info']['n_action_steps'] == 2


@pytest.fixture(scope='module')
def tiny_ckpt(tmp_path_factory):
    from tests._tiny_act import make_tiny_act
    return make_tiny_act(tmp_path_factory.mktemp('ckpt') / 'act')


def test_policy_that_does_not_fit_the_env_stops_before_the_first_episode(tiny_ckpt, tmp_path):
    "A 4-dim-state, 3-dim-action ACT on toy/Point (2-dim state and action): one clear error, no episode recorded."
    with pytest.raises(RobobenchError) as ei:
        evaluate('toy/Point', str(tiny_ckpt), episodes=5, run_folder=tmp_path / 'a', progress=False, video=False)
    msg = str(ei.value)
    assert "'observation.state' must have shape [4], the env gives [2]" in msg
    assert "'observation.environment_state' must have shape [6], the env gives [2]" in msg
    assert 'the policy answers 3-dim actions' in msg and 'the env takes 2' in msg and 'Fix:' in msg
    assert read_jsonl(tmp_path / 'a' / 'episodes.jsonl') == []
    r = subprocess.run([ROBOBENCH, 'eval', '--environment', 'toy/Point', '-m', str(tiny_ckpt), '--episodes', '3',
                        '--run-folder', str(tmp_path / 'b'), '--no-video', '--workers', '2'],
                       capture_output=True, text=True, timeout=300)
    lines = [line for line in r.stderr.strip().splitlines()
             if line.strip() and 'it/s' not in line and 'ep/s' not in line]
    assert (r.returncode == 2 and len(lines) == 1 and 'must have shape [4]' in lines[0]
            and 'Traceback' not in r.stderr), r.stderr


@pytest.mark.net
def test_mismatch_against_a_served_policy_is_found_from_its_metadata(tmp_path):
    from robobench.policies import FeatureSpec, RandomPolicy
    from robobench.server import serve
    with serve(RandomPolicy(action_dim=7, horizon=4, input_features={'observation.state': FeatureSpec([9])})) as srv:
        with pytest.raises(RobobenchError,
                           match=r"(?s)'observation.state' must have shape \[9\], the env gives \[2\].*7-dim actions"):
            evaluate('toy/Point', f'{srv.host}:{srv.port}', episodes=3, run_folder=tmp_path, progress=False,
                     video=False)
    assert read_jsonl(tmp_path / 'episodes.jsonl') == []


def _one_line_error(r, *needles):
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and 'Traceback' not in r.stderr, (r.returncode, r.stderr[-3000:])
    assert 'Fix:' in lines[0] or 'Did you mean' in lines[0], lines[0]
    for n in needles: assert n in lines[0], lines[0]


def test_cli_mistakes_are_one_line_with_the_fix(tmp_path):
    "Unknown client, bad JSON, a damaged dataset: exit 2, one line naming the fix; --debug shows the traceback."
    r = subprocess.run([ROBOBENCH, 'eval', '--environment', 'toy/Point', '--policy.client', 'no_such_client',
                        '--episodes', '2', '--run-folder', str(tmp_path / 'e'), '--no-video'],
                       capture_output=True, text=True, timeout=120)
    _one_line_error(r, "'no_such_client' is not a host:port", '--policy.client NAME')
    r = subprocess.run([ROBOBENCH, 'eval', '--environment', 'toy/Point', '--env-kwargs', '{max_steps: 3}',
                        '--episodes', '2', '--run-folder', str(tmp_path / 'j'), '--no-video'],
                       capture_output=True, text=True, timeout=120)
    _one_line_error(r, '--env-kwargs is not JSON')
    from robobench.collect import collect
    collect('toy/Point', 2, tmp_path / 'ds', cameras=[], progress=False)
    f = next((tmp_path / 'ds' / 'data').rglob('*.parquet'))
    f.write_bytes(f.read_bytes()[:len(f.read_bytes()) // 2])                 # a truncated download
    r = subprocess.run([ROBOBENCH, 'inspect', str(tmp_path / 'ds'), '--stats'], capture_output=True, text=True,
                       timeout=120)
    _one_line_error(r, 'is damaged', str(f), 'download or copy the dataset again')
    r = subprocess.run([ROBOBENCH, 'inspect', str(tmp_path / 'ds'), '--stats', '--debug'], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and 'Traceback' in r.stderr


class _FlakyP:
    "Proportional controller for toy/Point whose server 'drops' mid-episode while `broken` is set."
    broken = True
    rerender = True
    def reset(self): self.t = 0
    def infer(self, obs, instruction, return_viz=False):
        self.t += 1
        if type(self).broken and self.t == 3: raise ConnectionError('lost the policy server')
        return np.clip(-5 * obs['state'], -1, 1), None


def test_a_retried_error_episode_replaces_its_video_and_record(tmp_path):
    _FlakyP.broken = True
    a = evaluate('toy/Point', _FlakyP(), episodes=2, run_folder=tmp_path, progress=False, video_max_side=None)
    assert a.summary['errors'] == 2 and a.summary['episodes'] == 0 and a.summary['success_rate'] is None
    assert sorted(p.name for p in (tmp_path / 'videos').iterdir()) == ['error_seed0.mp4', 'error_seed1.mp4']
    _FlakyP.broken = False
    b = evaluate('toy/Point', _FlakyP(), episodes=2, run_folder=tmp_path, progress=False, video_max_side=None)
    assert b.summary['errors'] == 0 and b.summary['successes'] == 2
    assert sorted(p.name for p in (tmp_path / 'videos').iterdir()) == ['success_seed0.mp4', 'success_seed1.mp4']
    assert [r['outcome'] for r in read_jsonl(tmp_path / 'episodes.jsonl')] == ['error', 'error', 'success', 'success']


@pytest.mark.net
def test_client_redials_after_the_server_closes_an_idle_connection():
    from robobench.policies import RandomPolicy
    from robobench.server import serve
    from robobench.clients import make_client
    with serve(RandomPolicy(action_dim=2, horizon=1), idle_timeout_s=0.5) as srv:
        with make_client(f'{srv.host}:{srv.port}', timeout=5) as c:
            obs = {'state': np.zeros(2, np.float32), 'env_state': np.zeros(2, np.float32), 'images': {}}
            a1 = c.infer(obs, '')[0]
            time.sleep(1.5)                                   # the server cuts the idle connection
            c.reset(); a2 = c.infer(obs, '')[0]               # the next request dials again instead of failing
            assert a1.shape == a2.shape == (2,)


def test_local_eval_refuses_untrusted_and_broken_checkpoints_in_one_line(tiny_ckpt, tmp_path):
    "`robobench eval -m DIR` loads checkpoints through the same checks as `serve`: one line, exit 2, no code run."
    import shutil
    evil = tmp_path / 'evil'; shutil.copytree(tiny_ckpt, evil)
    marker = tmp_path / 'pwned'
    pre = json.loads((evil / 'policy_preprocessor.json').read_text())
    pre['steps'].insert(0, {'class': 'subprocess.Popen', 'config': {'args': ['touch', str(marker)]}})
    (evil / 'policy_preprocessor.json').write_text(json.dumps(pre))
    trunc = tmp_path / 'trunc'; shutil.copytree(tiny_ckpt, trunc)
    w = (trunc / 'model.safetensors').read_bytes(); (trunc / 'model.safetensors').write_bytes(w[:len(w) // 2])
    for d, needle in ((evil, 'subprocess.Popen'), (trunc, 'truncated')):
        r = subprocess.run([ROBOBENCH, 'eval', '--environment', 'toy/Point', '-m', str(d), '--episodes', '1',
                            '--no-video', '--run-folder', str(tmp_path / f'run_{d.name}')],
                           capture_output=True, text=True, timeout=300)
        _one_line_error(r, needle)
    assert not marker.exists()
    r = subprocess.run([ROBOBENCH, 'eval', '--environment', 'toy/Point', '-m', str(evil), '--episodes', '1',
                        '--no-video', '--trust-remote-code', '--run-folder', str(tmp_path / 'trusted')],
                       capture_output=True, text=True, timeout=300)
    deadline = time.monotonic() + 10   # the refusal is lifted: LeRobot really instantiates what the file names
    while not marker.exists() and time.monotonic() < deadline: time.sleep(0.1)
    assert marker.exists() and 'robobench eval: error: subprocess.Popen' not in r.stderr, r.stderr[-2000:]
