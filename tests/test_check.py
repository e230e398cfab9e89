"""`robobench check -m HOST:PORT --dataset DIR`: the scripted expert's server replaying its own demos agrees (exit 0);
a random policy, a sign-flipped and a gripper-inverted wrapper of the same expert each disagree (exit 1) and the
verdict names the cause. Real ManiSkill demos (`collect`), real websocket servers on 127.0.0.1, the real CLI."""
import json, subprocess, sys
from pathlib import Path
import numpy as np
import pytest

pytestmark = [pytest.mark.net, pytest.mark.sim, pytest.mark.slow]
ROBOBENCH = str(Path(sys.executable).parent / 'robobench')
ENV = 'maniskill/PickCube-v1'


@pytest.fixture(scope='module')
def demos(tmp_path_factory):
    from robobench.collect import collect
    out = tmp_path_factory.mktemp('check') / 'demos'
    s = collect(ENV, 2, out, start_seed=0, progress=False)
    assert s['complete']
    return out


class _Session:
    def __init__(self, inner, fn): self.inner, self.fn = inner, fn
    def infer(self, obs): return {'actions': self.fn(np.asarray(self.inner.infer(obs)['actions']))}
    def reset(self): self.inner.reset()


def _wrapped(fn):
    "The scripted expert with its actions passed through `fn` (a server that got a convention wrong)."
    from robobench.policies import Policy, make_expert_policy
    expert = make_expert_policy(ENV)
    class Wrapped(Policy):
        def __init__(self): self.metadata = expert.metadata
        def infer(self, obs): return {'actions': fn(np.asarray(expert.infer(obs)['actions']))}
        def reset(self): expert.reset()
        def new_session(self): return _Session(expert.new_session(), fn)
    return Wrapped()


def _flip_sign(a): return -a


def _invert_gripper(a):
    a = a.copy(); a[..., -1] *= -1   # ManiSkill's gripper command: +1 open, -1 closed
    return a


def _check(srv, demos, *extra):
    return subprocess.run([ROBOBENCH, 'check', '-m', f'{srv.host}:{srv.port}', '--dataset', str(demos),
                           '--frames', '40', *extra], capture_output=True, text=True, timeout=300)


def test_the_expert_agrees_with_its_own_demos(demos):
    from robobench.policies import make_expert_policy
    from robobench.server import serve
    with serve(make_expert_policy(ENV)) as srv:
        r = _check(srv, demos, '--json')
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res['agree'] and res['suspect'] is None and res['frames'] == 40
    assert max(d['error'] for d in res['dims']) < 0.05
    assert {row['check'] for row in res['rows']} >= {'actions', 'scale ratio', 'gripper sense', 'sign flip',
                                                      'normalization', 'image rotation 180°'}


@pytest.mark.parametrize('name, make, cause', [
    ('random', None, 'unrelated actions'),
    ('sign-flipped', _flip_sign, 'sign flip'),
    ('gripper-inverted', _invert_gripper, 'gripper sense inverted'),
])
def test_a_wrong_policy_fails_naming_the_cause(demos, name, make, cause):
    from robobench.policies import RandomPolicy
    from robobench.server import serve
    policy = RandomPolicy(action_dim=4, horizon=1) if make is None else _wrapped(make)
    with serve(policy) as srv:
        r = _check(srv, demos)
    assert r.returncode == 1, (name, r.stdout[-2000:], r.stderr[-2000:])
    verdict = r.stdout.strip().splitlines()[-1]
    assert verdict.startswith('verdict: DISAGREE') and f'Suspect: {cause}' in verdict, (name, r.stdout)
    if make is _invert_gripper: assert 'INVERTED' in r.stdout


def test_bad_input_exits_2(tmp_path):
    r = subprocess.run([ROBOBENCH, 'check', '-m', '127.0.0.1:9', '--dataset', str(tmp_path / 'nope')],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and 'no LeRobot dataset' in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_evaluate_preflight_stops_before_the_first_episode(demos, tmp_path):
    from robobench.core import RobobenchError
    from robobench.evaluation import evaluate
    from robobench.policies import make_expert_policy
    from robobench.server import serve
    run = tmp_path / 'run'
    with serve(_wrapped(_flip_sign)) as srv:
        with pytest.raises(RobobenchError, match='sign flip'):
            evaluate(ENV, f'{srv.host}:{srv.port}', episodes=1, preflight=str(demos), run_folder=str(run),
                     progress=False)
    assert not (run / 'episodes.jsonl').exists()
    with serve(make_expert_policy(ENV)) as srv:
        res = evaluate(ENV, f'{srv.host}:{srv.port}', episodes=1, max_steps=10, preflight=str(demos), progress=False,
                       video=False)
    assert (res.summary['errors'], res.summary['completed']) == (0, 1)


def test_check_through_a_layout(tmp_path):
    """Any layout: the toy expert served with `--layout openpi-aloha` (its requests: `images: {cam_high: CHW}`,
    `state`) and checked with that layout on demos with a camera agrees; sign-flipped, it fails naming the flip."""
    from robobench.check import check
    from robobench.collect import collect
    from robobench.policies import make_expert_policy
    from robobench.server import serve
    toy = 'toy/Point'
    assert collect(toy, 2, tmp_path / 'toy', cameras=['top'], progress=False)['complete']
    with serve(make_expert_policy(toy), layout='openpi-aloha') as srv:
        assert srv.metadata['layout'] == 'openpi-aloha'
        res = check(f'{srv.host}:{srv.port}', tmp_path / 'toy', frames=20, layout='openpi-aloha')
    assert res['agree'] and res['layout'] == 'openpi-aloha', res
    assert next(r for r in res['rows'] if r['check'] == 'image rotation 180°')['verdict'] == 'ok'   # tried, not needed
    expert = make_expert_policy(toy)
    class Flipped(type(expert)):
        def new_session(self): return _Session(super().new_session(), _flip_sign)
    flipped = Flipped(toy)
    with serve(flipped, layout='openpi-aloha') as srv:
        res = check(f'{srv.host}:{srv.port}', tmp_path / 'toy', frames=20, layout='openpi-aloha')
    assert not res['agree'] and res['suspect'].startswith('sign flip'), res['suspect']
