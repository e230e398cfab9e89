"""robobench.server against the real openpi-client over 127.0.0.1 (no mocks)."""
import ast, os, random, signal, sys, threading, time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import websockets.exceptions
from websockets.sync.client import connect
from openpi_client import msgpack_numpy
from openpi_client.websocket_client_policy import WebsocketClientPolicy

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_act import (ACTION_DIM, CHUNK, LeRobotReference, LeRobotStepReference, make_tiny_act,  # noqa: E402
                       make_tiny_diffusion, random_obs)

from robobench.policies import FeatureSpec, RandomPolicy
from robobench.server import http_get, serve
from robobench.checkpoints import norm_stats_hash

pytestmark = pytest.mark.net
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    return make_tiny_act(tmp_path_factory.mktemp('act') / 'ckpt')


@pytest.fixture(scope='module')
def act_server(ckpt):
    with serve(ckpt, device='cpu', max_workers=2) as srv:  # a child process running `robobench serve -m ckpt`
        yield srv


def _random_server(**kw):
    return serve(RandomPolicy(action_dim=7, horizon=4, seed=0, input_features={
        'observation.state': FeatureSpec([3]), 'observation.images.front': FeatureSpec([8, 8, 3], 'uint8')}), **kw)


def _ok_obs():
    return {'observation.state': np.zeros(3, np.float32), 'observation.images.front': np.zeros((8, 8, 3), np.uint8),
            'task': 'x'}


def test_metadata_infer_healthz_random():
    with _random_server() as srv:
        assert http_get(srv.host, srv.port, '/healthz') == (200, 'OK\n')
        c = WebsocketClientPolicy(srv.host, srv.port)
        md = c.get_server_metadata()
        assert md['action_dim'] == 7 and md['horizon'] == 4 and md['policy_type'] == 'random'
        assert md['input_features']['observation.images.front'] == {'shape': [8, 8, 3], 'dtype': 'uint8'}
        assert md['robobench_version'] and 'max_size' in md
        out = c.infer(_ok_obs())
        assert out['actions'].shape == (4, 7) and out['actions'].dtype == np.float32
        assert out['server_timing']['infer_ms'] >= 0
        c._ws.close()


def test_healthz_503_until_warmed_up():
    class Slow(RandomPolicy):
        def infer(self, obs):
            time.sleep(1.5); return super().infer(obs)
    res = {}
    pol = Slow(2, 2, input_features={'observation.state': FeatureSpec([1])})
    from robobench.server import PolicyServer
    srv = PolicyServer(pol, port=0)
    th = threading.Thread(target=lambda: __import__('asyncio').run(
        srv.serve_async(on_bound=lambda s: res.setdefault('port', s.port))))
    th.start()
    try:
        while 'port' not in res: time.sleep(0.01)
        assert http_get('127.0.0.1', res['port'])[0] == 503          # bound, still warming up
        with pytest.raises(websockets.exceptions.InvalidStatus):       # handshakes refused while loading
            connect(f'ws://127.0.0.1:{res["port"]}', open_timeout=2)
        assert srv.ready.wait(10)
        assert http_get('127.0.0.1', res['port'])[0] == 200
    finally:
        srv.stop(); th.join(10)


def test_act_checkpoint_same_answer_as_in_process(ckpt, act_server):
    md = act_server.metadata
    assert md['policy_type'] == 'act' and md['action_dim'] == ACTION_DIM and md['horizon'] == CHUNK
    assert md['norm_stats_hash'] == norm_stats_hash(ckpt) and md['norm_stats_hash']
    assert set(md['input_features']) == {'observation.state', 'observation.environment_state'}
    assert act_server._proc is not None and act_server.pid != os.getpid()
    ref = LeRobotReference(ckpt)
    c = WebsocketClientPolicy(act_server.host, act_server.port)
    assert c.get_server_metadata() == md
    rng = np.random.default_rng(0)
    for _ in range(3):
        obs = random_obs(rng)
        got = c.infer(obs)['actions']
        assert got.shape == (CHUNK, ACTION_DIM)
        np.testing.assert_allclose(got, ref(obs), rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match='missing feature'):
        c.infer({'observation.state': obs['observation.state']})
    np.testing.assert_allclose(c.infer(obs)['actions'], ref(obs), rtol=1e-5, atol=1e-5)
    c._ws.close()


def test_history_policy_is_served_step_by_step_like_lerobot_eval(tmp_path):
    """Diffusion with LeRobot's default n_obs_steps=2: the server runs LeRobot's `select_action` once per request, keeps
    the observation history and action queue per connection, and restarts them on `episode_start` -- giving exactly
    the actions of LeRobot's own rollout loop (reset per episode, select_action per step)."""
    import torch
    from robobench.policies import LeRobotPolicy
    d = make_tiny_diffusion(tmp_path / 'dp')
    rng = np.random.default_rng(1)
    episodes = [[random_obs(rng) for _ in range(7)], [random_obs(rng) for _ in range(6)]]
    ref = LeRobotStepReference(d)
    torch.manual_seed(7)  # the diffusion noise comes from torch's global generator, in both loops
    expected = []
    for ep in episodes:
        ref.reset(); expected += [ref(o) for o in ep]
    with serve(LeRobotPolicy(d, device='cpu')) as srv:  # in-process, so the seed above also drives the server's noise
        md = srv.metadata
        assert (md['execution'], md['n_obs_steps'], md['n_action_steps'], md['horizon']) == ('step', 2, 1, 8)
        assert 'episode_start' in md['control_keys']
        c = WebsocketClientPolicy(srv.host, srv.port)  # openpi's own client, with the flag added to the observation
        torch.manual_seed(7)
        got = [c.infer({**o, 'episode_start': i == 0})['actions'] for ep in episodes for i, o in enumerate(ep)]
        with pytest.raises(RuntimeError, match='episode_start'):
            c.infer({**episodes[0][0], 'episode_start': 'yes'})
        c._ws.close()
    assert all(g.shape == (1, ACTION_DIM) for g in got)
    np.testing.assert_allclose(np.concatenate(got), np.stack(expected), rtol=1e-5, atol=1e-5)


def test_step_policies_keep_state_per_connection_and_clients_flag_episodes(tmp_path):
    """ACT with temporal ensembling (a step-executed policy): two interleaved connections each get LeRobot's answer for
    their own stream; robobench's websocket and local clients execute one action per request and flag episode starts."""
    from robobench.clients import LocalClient, WebsocketClient
    d = make_tiny_act(tmp_path / 'te', temporal_ensemble_coeff=0.01, n_action_steps=1)
    ref = LeRobotStepReference(d)
    rng = np.random.default_rng(2)
    streams = [[random_obs(rng) for _ in range(6)] for _ in range(2)]
    expected = []
    for st in streams:
        ref.reset(); expected.append(np.stack([ref(o) for o in st]))
    env_obs = lambda o: {'state': o['observation.state'], 'env_state': o['observation.environment_state']}
    with serve(d, device='cpu') as srv:
        assert srv.metadata['execution'] == 'step' and srv.metadata['n_action_steps'] == 1
        conns, got = [WebsocketClientPolicy(srv.host, srv.port) for _ in streams], [[], []]
        for i in range(6):
            for c, st, g in zip(conns, streams, got):
                g.append(c.infer({**st[i], 'episode_start': i == 0})['actions'][0])
        for g, e in zip(got, expected): np.testing.assert_allclose(np.stack(g), e, rtol=1e-5, atol=1e-5)
        for c in conns: c._ws.close()
        with pytest.raises(ValueError, match='one step per request'):
            WebsocketClient(srv.host, srv.port, n_action_steps=3)
        for client in (WebsocketClient(srv.host, srv.port), LocalClient(d, device='cpu')):
            assert client.n_action_steps == 1
            for st, e in zip(streams, expected):  # two episodes on one client: reset() must reach the policy's state
                client.reset()
                acts = []
                for i, o in enumerate(st):
                    acts.append(client.infer(env_obs(o), 'pick the cube')[0])
                    assert client.last_request.get('episode_start') is (True if i == 0 else None)
                np.testing.assert_allclose(np.stack(acts), e, rtol=1e-5, atol=1e-5)
            client.close()


def test_four_concurrent_clients(ckpt, act_server):
    ref = LeRobotReference(ckpt)
    rngs = [np.random.default_rng(100 + i) for i in range(4)]
    jobs = [[random_obs(r) for _ in range(10)] for r in rngs]
    want = [[ref(o) for o in js] for js in jobs]
    got, errors = [None] * 4, []

    def run(i):
        try:
            c = WebsocketClientPolicy(act_server.host, act_server.port)
            got[i] = [c.infer(o)['actions'] for o in jobs[i]]
            c._ws.close()
        except Exception as e:  # surfaced below
            errors.append(e)
    ths = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in ths: t.start()
    for t in ths: t.join(60)
    assert not errors, errors
    for i in range(4):
        for g, w in zip(got[i], want[i]): np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_unnorm_key_selects_the_stats_set(ckpt, act_server, tmp_path):
    """One checkpoint carrying two named stats sets (as `robobench inspect --stats-out F --unnorm-key K` writes
    them): served with each key, the actions are the same normalized model output unnormalized with that set."""
    import json, shutil
    from robobench.data import norm_stats_dict
    d = tmp_path / 'ckpt'
    shutil.copytree(ckpt, d)
    sets = {'bridge': ([1.0, 2.0, 3.0], [1.0, 1.0, 1.0]), 'fractal': ([-1.0, 0.0, 4.0], [0.5, 2.0, 0.1])}
    doc = {}
    for key, (m, sd) in sets.items():
        doc.update(norm_stats_dict({'action': {'mean': np.array(m), 'std': np.array(sd), 'count': np.array([100])}},
                                   key, 100, 2))
    (d / 'norm_stats.json').write_text(json.dumps(doc))
    obs = [random_obs(np.random.default_rng(7 + i)) for i in range(2)]
    base = WebsocketClientPolicy(act_server.host, act_server.port)    # the checkpoint's own saved stats
    normalized = [(base.infer(o)['actions'] - [0.5, -0.5, 0.0]) / [0.1, 0.2, 0.3] for o in obs]
    base._ws.close()
    hashes = set()
    for key, (m, sd) in sets.items():
        with serve(d, subprocess_mode=False, device='cpu', unnorm_key=key) as srv:
            md = srv.metadata
            assert md['unnorm_key'] == key and md['unnorm_keys'] == ['bridge', 'fractal']
            hashes.add(md['norm_stats_hash'])
            c = WebsocketClientPolicy(srv.host, srv.port)
            for o, n in zip(obs, normalized):
                np.testing.assert_allclose(c.infer(o)['actions'], n * sd + m, rtol=1e-4, atol=1e-4)
            c._ws.close()
    assert len(hashes | {act_server.metadata['norm_stats_hash']}) == 3
    from robobench.core import RobobenchError   # an expected mistake: one line with its fix (exit 2 from the CLI)
    with pytest.raises(RobobenchError, match="unknown unnorm_key 'bridg'. Did you mean 'bridge'.*bridge, fractal"):
        serve(d, device='cpu', unnorm_key='bridg')               # `robobench serve -m CKPT --unnorm-key bridg`


def _malformed_frames(n, seed=0):
    rng = random.Random(seed)
    good = msgpack_numpy.packb(_ok_obs())
    arr = lambda kw: {b'__ndarray__': True, b'data': b'\0' * 12, b'dtype': '<f4', b'shape': (3,), **kw}
    makers = [
        lambda: bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64))),          # random bytes
        lambda: good[:rng.randint(0, len(good) - 1)],                                   # truncated
        lambda: bytes(b ^ (1 << rng.randint(0, 7)) if rng.random() < 0.01 else b for b in good),  # bit flips
        lambda: msgpack_numpy.packb(rng.choice([1, 'x', [1, 2], None, 3.5, True])),           # not a map
        lambda: msgpack_numpy.packb({**_ok_obs(), 'observation.stat': np.zeros(3)}),   # unknown key
        lambda: msgpack_numpy.packb({'task': 'only'}),                                  # missing keys
        lambda: msgpack_numpy.packb({**_ok_obs(), 'observation.state': np.zeros(rng.randint(4, 9), np.float32)}),
        lambda: msgpack_numpy.packb({**_ok_obs(), 'observation.images.front': np.zeros((8, 8, 3), np.float32)}),
        lambda: msgpack_numpy.packb({**_ok_obs(), 'observation.state': np.array([np.nan, 0, np.inf], np.float32)}),
        lambda: msgpack_numpy.packb({**{k: v for k, v in _ok_obs().items() if k != 'observation.state'},
                               'observation.state': arr({b'dtype': '|O'})}),          # object dtype
        lambda: msgpack_numpy.packb({'observation.state': arr({b'dtype': '<c8'})}),         # complex dtype
        lambda: msgpack_numpy.packb({'observation.state': arr({b'shape': (10 ** 9,)})}),    # shape larger than data
        lambda: msgpack_numpy.packb({'observation.state': arr({b'shape': (-1,)})}),
        lambda: msgpack_numpy.packb({'observation.state': arr({b'dtype': 'not-a-dtype'})}),
        lambda: msgpack_numpy.packb({'observation.state': {b'__ndarray__': True}}),           # incomplete array
        lambda: msgpack_numpy.packb({1: 2, b'x': 3}),                                          # non-str keys
        lambda: msgpack_numpy.packb({**{k: v for k, v in _ok_obs().items() if k != 'observation.state'},
                               'observation.state': msgpack.ExtType(42, b'evil')}),     # ext type
        lambda: b'\x91' * 3000 + b'\x90',                                              # 3000-deep nesting
        # array32 header claiming 4G items
        lambda: b'\xdd\xff\xff\xff\xff',
        lambda: msgpack_numpy.packb({**_ok_obs(), 'task': 123}),
        lambda: 'a text frame',                                                         # text instead of binary
        # decode bombs and values that only go bad on the way to the policy (issue 13)
        # np.void: 2 GiB
        lambda: msgpack_numpy.packb({**{k: v for k, v in _ok_obs().items() if k != 'observation.state'},
                                     'observation.state': {b'__npgeneric__': True, b'data': 2**31 - 1,
                                                           b'dtype': '|V1'}}),
        lambda: msgpack.packb({'observation.state': {b'__npgeneric__': True, b'data': b'x' * 8, b'dtype': '<f8'}}),
        # subarray dtype
        lambda: msgpack_numpy.packb({'observation.state': arr({b'dtype': '(3,)<f4', b'shape': (1,)})}),
        # finite float64, inf as float32
        lambda: msgpack_numpy.packb({**_ok_obs(), 'observation.state': np.full(3, 1e39)}),
        lambda: b'\xdd' + (300_000).to_bytes(4, 'big') + b'\x80' * 300_000,             # 300 000 empty maps
    ]
    return [rng.choice(makers)() for _ in range(n)]


def test_fuzz_1000_malformed_frames_then_valid_request():
    with _random_server() as srv:
        frames = _malformed_frames(1200)
        with connect(f'ws://{srv.host}:{srv.port}', compression=None, max_size=None) as ws:
            msgpack_numpy.unpackb(ws.recv(timeout=5))  # metadata
            n_err = 0
            for f in frames:
                ws.send(f)
                reply = ws.recv(timeout=5)
                if isinstance(reply, str):
                    assert reply.startswith('RequestError'), (f[:40], reply)
                    n_err += 1
                else:  # a bit flip inside image/state bytes can still be a valid request
                    assert msgpack_numpy.unpackb(reply)['actions'].shape == (4, 7)
            assert n_err >= 1000, n_err
            ws.send(msgpack_numpy.packb(_ok_obs()))  # the same connection still serves
            assert msgpack_numpy.unpackb(ws.recv(timeout=5))['actions'].shape == (4, 7)
        c = WebsocketClientPolicy(srv.host, srv.port)  # and so does a new one
        assert c.infer(_ok_obs())['actions'].shape == (4, 7)
        c._ws.close()
        assert 'bad request' in srv.logs()


def test_oversized_frame_and_policy_crash_do_not_stop_the_server():
    class Boom(RandomPolicy):
        def infer(self, obs):
            if obs.get('task') == 'boom': raise ZeroDivisionError('policy bug')
            return super().infer(obs)
    with serve(Boom(2, 2, input_features={'observation.state': FeatureSpec([1])}), max_size=1000) as srv:
        ok = {'observation.state': np.zeros(1, np.float32)}
        with connect(srv.url, compression=None, max_size=None) as ws:
            ws.recv(timeout=5)
            ws.send(msgpack_numpy.packb({**ok, 'task': 'x' * 5000}))
            with pytest.raises(websockets.exceptions.ConnectionClosedError) as e:
                ws.recv(timeout=5)
            assert e.value.rcvd.code == 1009  # message too big
        c = WebsocketClientPolicy(srv.host, srv.port)
        with pytest.raises(RuntimeError, match='ZeroDivisionError'):
            c.infer({**ok, 'task': 'boom'})          # traceback text, then 1011 close (openpi's behaviour)
        c2 = WebsocketClientPolicy(srv.host, srv.port)
        assert c2.infer(ok)['actions'].shape == (2, 2)
        c2._ws.close()


def test_api_key_refused_at_handshake():
    with _random_server(api_key='s3cret') as srv:
        for key in (None, 'wrong'):
            with pytest.raises(websockets.exceptions.InvalidStatus) as e:
                WebsocketClientPolicy(srv.host, srv.port, api_key=key)
            assert e.value.response.status_code == 401
        assert http_get(srv.host, srv.port)[0] == 200  # health checks need no key
        c = WebsocketClientPolicy(srv.host, srv.port, api_key='s3cret')
        assert c.infer(_ok_obs())['actions'].shape == (4, 7)
        c._ws.close()


def test_cli_subprocess_random_sigterm_graceful():
    # `robobench serve --policy random`
    srv = serve('random', subprocess_mode=True, action_dim=5, horizon=2, state_dim=2)
    try:
        assert srv.metadata['action_dim'] == 5 and srv.metadata['input_features']['observation.state']['shape'] == [2]
        c = WebsocketClientPolicy(srv.host, srv.port)
        assert c.infer({'observation.state': np.ones(2, np.float32)})['actions'].shape == (2, 5)
        srv._proc.send_signal(signal.SIGTERM)
        with pytest.raises(websockets.exceptions.ConnectionClosedOK) as e:
            c._ws.recv(timeout=10)
        assert e.value.rcvd.code == 1001  # going away: a graceful close, not a dropped socket
        assert srv._proc.wait(10) == 0
        assert 'stopped' in srv.logs()
    finally:
        srv.stop()


NETWORK_MODULES = ['robobench/server.py', 'robobench/clients.py', 'robobench/core.py']
FORBIDDEN = {'pickle', 'cPickle', '_pickle', 'dill', 'cloudpickle', 'joblib', 'marshal', 'shelve'}


def test_no_pickle_on_network_paths():
    for rel in NETWORK_MODULES:
        tree = ast.parse((ROOT / rel).read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import): names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom): names = [node.module or '']
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == '__import__' \
                    and node.args and isinstance(node.args[0], ast.Constant): names = [node.args[0].value]
            for n in names:
                assert n.split('.')[0] not in FORBIDDEN, f'{rel}:{node.lineno} imports {n}'
            if isinstance(node, ast.Attribute):
                assert (node.attr not in ('loads', 'load')
                        or not (isinstance(node.value, ast.Name) and node.value.id in FORBIDDEN | {'torch'})), \
                    f'{rel}:{node.lineno} deserializes with {node.value.id}.{node.attr}'
    # the wire codec is openpi's msgpack_numpy, which refuses object arrays instead of falling back to pickle
    with pytest.raises(ValueError):
        msgpack_numpy.packb({'x': np.array([object()], dtype=object)})
