"""Issue 24.1: dynamic batching in the policy server. Requests of several connections that arrive within
`batch_timeout_ms` run as one batched forward through LeRobot's pre/post-processors, and each client gets the actions
it would get alone: equal within FLOAT_TOL (a batched matmul may round differently from a single one)."""
import threading, time

import numpy as np
import pytest
from websockets.sync.client import connect
from openpi_client import msgpack_numpy

from robobench.policies import FeatureSpec, LeRobotPolicy, tiny_act_checkpoint, validate_request
from robobench.server import serve
from tests._tiny_act import LeRobotReference, LeRobotStepReference, make_tiny_act, make_tiny_diffusion, random_obs

pytestmark = [pytest.mark.net, pytest.mark.filterwarnings('ignore::DeprecationWarning')]
FLOAT_TOL = dict(rtol=1e-4, atol=1e-5)


def _concurrently(fns):
    "Run `fns` in threads started together; their results (an exception stands for its result)."
    out, barrier = [None] * len(fns), threading.Barrier(len(fns))
    def run(i):
        try: barrier.wait(10); out[i] = fns[i]()
        except Exception as e: out[i] = e
    ths = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for th in ths: th.start()
    for th in ths: th.join(120)
    return out


def _client(port):
    from openpi_client.websocket_client_policy import WebsocketClientPolicy
    return WebsocketClientPolicy('127.0.0.1', port)


def _rounds(port, obs_per_client, rounds=3):
    "Each client (own connection) sends its observations `rounds` times, all clients at once: their answers."
    clients = [_client(port) for _ in obs_per_client]
    answers = [[] for _ in clients]
    for _ in range(rounds):
        res = _concurrently([lambda c=c, o=o: c.infer(o) for c, o in zip(clients, obs_per_client)])
        for i, r in enumerate(res):
            if isinstance(r, Exception): raise r
            answers[i].append(r['actions'])
    for c in clients: c._ws.close()
    return answers


@pytest.fixture(scope='module')
def state_act(tmp_path_factory): return make_tiny_act(tmp_path_factory.mktemp('act') / 'ckpt')


def test_batched_answers_equal_unbatched_ones_for_a_state_act(state_act):
    rng = np.random.default_rng(0)
    obs = [random_obs(rng) for _ in range(8)]
    for o in obs[::2]: o.pop('task')                     # mixed requests: with and without the instruction
    ref = LeRobotReference(state_act)                    # LeRobot's own API, one observation at a time
    with serve(state_act, subprocess_mode=False, max_batch=8, batch_timeout_ms=200) as srv:
        b = srv.metadata['batching']
        assert (b['max_batch'], b['batch_timeout_ms'], b['batched'], b['execution']) == (8, 200.0, True, 'chunk')
        answers = _rounds(srv.port, obs)
        batches = srv._server._batcher.batches
    assert max(batches) > 1, batches                     # requests really ran together
    for o, got in zip(obs, answers):
        want = ref({k: v for k, v in o.items()})
        for a in got: np.testing.assert_allclose(a, want, **FLOAT_TOL)


def test_a_bad_request_in_a_batch_fails_alone_and_max_batch_1_never_batches(state_act):
    rng = np.random.default_rng(1)
    good = [random_obs(rng) for _ in range(5)]
    bad = {**random_obs(rng), 'observation.state': np.full(4, np.nan, np.float32)}   # refused by the NaN check
    ref = LeRobotReference(state_act)
    with serve(state_act, subprocess_mode=False, max_batch=8, batch_timeout_ms=200) as srv:
        clients = [_client(srv.port) for _ in range(6)]
        res = _concurrently([lambda c=c, o=o: c.infer(o) for c, o in zip(clients, good + [bad])])
        assert isinstance(res[-1], Exception) and 'NaN' in str(res[-1])
        for o, r in zip(good, res): np.testing.assert_allclose(r['actions'], ref(o), **FLOAT_TOL)
        for c in clients[:-1]: c._ws.close()
    with serve(state_act, subprocess_mode=False, max_batch=1) as srv:   # the peer of the benchmark: no batching
        assert srv.metadata['batching']['max_batch'] == 1
        _rounds(srv.port, good, rounds=2)
        assert set(srv._server._batcher.batches) == {1}


def test_batched_answers_equal_unbatched_ones_for_an_image_act(tmp_path):
    feats = {'observation.state': FeatureSpec([3]), 'observation.images.front': FeatureSpec([32, 32, 3], 'uint8')}
    ckpt = tiny_act_checkpoint(tmp_path / 'img', feats, action_dim=2, chunk_size=4)   # random-init ResNet-18
    rng = np.random.default_rng(2)
    obs = [{'observation.state': rng.normal(size=3).astype(np.float32),
            'observation.images.front': rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)} for _ in range(4)]
    # the same checkpoint, one request at a time, through LeRobot's model as loaded (no fast_inference rewrite)
    alone = LeRobotPolicy(ckpt, device='cpu', optimize=False)
    want = [alone.infer(validate_request(o, alone.input_features))['actions'] for o in obs]
    with serve(ckpt, subprocess_mode=False, device='cpu', max_batch=4, batch_timeout_ms=300) as srv:
        answers = _rounds(srv.port, obs, rounds=2)
        assert max(srv._server._batcher.batches) > 1
    for w, got in zip(want, answers):
        for a in got: np.testing.assert_allclose(a, w, **FLOAT_TOL)


def test_step_policies_batch_where_they_can_and_say_so(tmp_path):
    te = make_tiny_act(tmp_path / 'te', temporal_ensemble_coeff=0.01, n_action_steps=1)
    rng = np.random.default_rng(3)
    episodes = [[random_obs(rng) for _ in range(4)] for _ in range(3)]   # one episode per client
    refs = [LeRobotStepReference(te) for _ in episodes]
    for r in refs: r.reset()
    want = [[r(o) for o in ep] for r, ep in zip(refs, episodes)]        # LeRobot's select_action, step by step
    with serve(te, subprocess_mode=False, max_batch=4, batch_timeout_ms=200) as srv:
        b = srv.metadata['batching']
        assert b['batched'] and b['execution'] == 'step' and 'ensembl' in b['why']
        clients = [_client(srv.port) for _ in episodes]
        for t in range(4):
            res = _concurrently([lambda c=c, ep=ep: c.infer({**ep[t], 'episode_start': t == 0})
                                 for c, ep in zip(clients, episodes)])
            for r, w in zip(res, want): np.testing.assert_allclose(r['actions'][0], w[t], **FLOAT_TOL)
        assert max(srv._server._batcher.batches) > 1
        for c in clients: c._ws.close()
    with serve(make_tiny_diffusion(tmp_path / 'dp'), subprocess_mode=False, max_batch=4) as srv:
        b = srv.metadata['batching']   # an observation history per connection: served one request after the other
        assert not b['batched'] and b['execution'] == 'step' and 'one after the other' in b['why']


def test_a_client_that_disconnects_mid_batch_harms_no_other(state_act):
    rng = np.random.default_rng(4)
    obs = [random_obs(rng) for _ in range(4)]
    ref = LeRobotReference(state_act)
    with serve(state_act, subprocess_mode=False, max_batch=8, batch_timeout_ms=400) as srv:
        def quitter():   # sends its request, then drops the connection before the batch runs
            ws = connect(f'ws://127.0.0.1:{srv.port}', compression=None, open_timeout=5)
            ws.recv(timeout=5)
            ws.send(msgpack_numpy.packb(obs[0])); time.sleep(0.02); ws.socket.close()
            return 'gone'
        clients = [_client(srv.port) for _ in obs[1:]]
        for _ in range(3):
            res = _concurrently([quitter] + [lambda c=c, o=o: c.infer(o) for c, o in zip(clients, obs[1:])])
            assert res[0] == 'gone'
            for o, r in zip(obs[1:], res[1:]): np.testing.assert_allclose(r['actions'], ref(o), **FLOAT_TOL)
        assert srv.healthy() and srv._server.n_connections == 3
        for c in clients: c._ws.close()
