"""openpi's own example clients against `robobench serve --layout NAME`: the aloha_sim example's request (`state`,
nested `images: {cam_high: CHW uint8 224}`) sent by openpi's `WebsocketClientPolicy` through its `ActionChunkBroker(10)`
to a tiny ALOHA ACT checkpoint, chunked and step-mode (temporal ensembling); the actions checked against LeRobot's own
API."""
import numpy as np
import pytest

pytestmark = [pytest.mark.net, pytest.mark.slow]
STATE, IMAGE = 'observation.state', 'observation.images.top'
H, W = 48, 64   # the checkpoint's camera (gym-aloha's `top`, smaller); the client sends 224×224 CHW


ENV_STATE, ENV_MEAN = 'observation.environment_state', np.linspace(-1, 1, 7, dtype=np.float32)


def _aloha_ckpt(path, chunk_size=10, env_state=False, **act_kw):
    "A tiny ALOHA ACT (14-dim state and action, one camera; `env_state`: also robobench's privileged env state)."
    from robobench.policies import FeatureSpec, tiny_act_checkpoint
    feats = {STATE: FeatureSpec([14]), IMAGE: FeatureSpec([H, W, 3], 'uint8')}
    if env_state: feats[ENV_STATE] = FeatureSpec([7])
    stats = {ENV_STATE: {'mean': ENV_MEAN, 'std': np.full(7, 2.0, np.float32)}} if env_state else None
    return tiny_act_checkpoint(path, feats, action_dim=14, chunk_size=chunk_size, stats=stats, **act_kw)


def _aloha_sim_request(rng, prompt=None) -> dict:
    "What openpi's examples/aloha_sim/env.py sends: the top camera resized with padding to 224, CHW; agent_pos."
    from openpi_client import image_tools
    top = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)   # gym-aloha's render size
    img = np.transpose(image_tools.convert_to_uint8(image_tools.resize_with_pad(top, 224, 224)), (2, 0, 1))
    obs = {'state': rng.normal(size=14), 'images': {'cam_high': img}}
    if prompt is not None: obs['prompt'] = prompt
    return obs


def _as_lerobot(obs, env_state=False) -> dict:
    "The same observation as LeRobot's own processors take it (what the server must hand the policy)."
    from robobench.serve_layouts import wire_image
    img = wire_image(obs['images']['cam_high'], (H, W, 3))
    out = {STATE: obs['state'].astype(np.float32), IMAGE: (img.transpose(2, 0, 1) / 255.0).astype(np.float32),
           'task': obs.get('prompt', '')}
    if env_state: out[ENV_STATE] = ENV_MEAN   # the client cannot send it: the training mean stands in
    return out


@pytest.mark.parametrize('mode', ['chunked', 'step'])
def test_openpi_aloha_sim_client_with_action_chunk_broker(tmp_path, mode):
    from openpi_client.action_chunk_broker import ActionChunkBroker
    from openpi_client.websocket_client_policy import WebsocketClientPolicy
    from robobench.server import serve
    from tests._tiny_act import LeRobotReference, LeRobotStepReference
    step = mode == 'step'
    # the chunked checkpoint also reads robobench's privileged env state (as one trained on `robobench collect` demos)
    ckpt = _aloha_ckpt(tmp_path / 'ckpt', env_state=not step,
                       **({'temporal_ensemble_coeff': 0.01, 'n_action_steps': 1} if step else {}))
    rng = np.random.default_rng(0)
    requests = [_aloha_sim_request(rng, prompt='transfer the cube' if step else None) for _ in range(3)]
    # chunked: `robobench serve -m CKPT --layout openpi-aloha` in a child process; step: the same server in this one
    from robobench.policies import LeRobotPolicy
    with serve(LeRobotPolicy(ckpt, device='cpu') if step else ckpt, device='cpu', layout='openpi-aloha') as srv:
        md = srv.metadata
        assert md['layout'] == 'openpi-aloha' and md['n_action_steps'] == 10 and md['execution'] == 'chunk'
        assert md['policy_execution'] == ('step' if step else 'chunk')
        assert md['input_features']['images/cam_high'] == {'shape': [3, 224, 224], 'dtype': 'uint8'}
        broker = ActionChunkBroker(WebsocketClientPolicy(srv.host, srv.port), action_horizon=10)
        got = []
        for obs in requests:   # 30 steps: 3 requests of 10 actions each (the broker asks again every 10 steps)
            for _ in range(10):
                out = broker.infer(obs)
                assert out['actions'].shape == (14,)
                got.append(out['actions'])
    got = np.stack(got)
    if step:   # LeRobot's rollout API: select_action once per executed step, the request's observation each time
        ref = LeRobotStepReference(ckpt); ref.reset()
        want = np.stack([ref(_as_lerobot(obs)) for obs in requests for _ in range(10)])
    else:      # the first 10 actions of each request's chunk
        ref = LeRobotReference(ckpt)
        want = np.concatenate([ref(_as_lerobot(obs, env_state=True))[:10] for obs in requests])
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_layout_refusals(tmp_path):
    from openpi_client.websocket_client_policy import WebsocketClientPolicy
    from robobench.core import RobobenchError
    from robobench.policies import LeRobotPolicy
    from robobench.server import serve
    ckpt = _aloha_ckpt(tmp_path / 'ckpt')
    with serve(LeRobotPolicy(ckpt, device='cpu'), layout='openpi-aloha') as srv:
        client = WebsocketClientPolicy(srv.host, srv.port)
        with pytest.raises(RuntimeError, match="missing 'images/cam_high'"):   # the server's one-line reply
            client.infer({'state': np.zeros(14)})
        client = WebsocketClientPolicy(srv.host, srv.port)   # the server keeps serving
        assert client.infer(_aloha_sim_request(np.random.default_rng(1)))['actions'].shape == (10, 14)
    # a chunk shorter than the client's replan count is refused before serving (openpi's broker would run out)
    short = LeRobotPolicy(_aloha_ckpt(tmp_path / 'short', chunk_size=5), device='cpu')
    with pytest.raises(RobobenchError, match='predicts 5 per chunk'):
        serve(short, layout='openpi-aloha')


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
@pytest.mark.parametrize('mode', ['chunked', 'step'])
def test_a_layout_server_batches_and_answers_what_each_client_gets_alone(tmp_path, mode):
    "Concurrent openpi aloha_sim clients on `serve --layout openpi-aloha --max-batch 4`: one batched forward, and each"
    " client's actions are LeRobot's own for its requests (chunked: its chunk; step: its own temporal ensemble)."
    import threading
    from openpi_client.websocket_client_policy import WebsocketClientPolicy
    from robobench.policies import LeRobotPolicy
    from robobench.server import serve
    from tests._tiny_act import LeRobotReference, LeRobotStepReference
    step = mode == 'step'
    ckpt = _aloha_ckpt(tmp_path / 'ckpt', **({'temporal_ensemble_coeff': 0.01, 'n_action_steps': 1} if step else {}))
    rng = np.random.default_rng(2)
    n, rounds = 3, 1   # small: CI's 2 cores (3 connections in one batch is what it shows)
    reqs = [[_aloha_sim_request(rng) for _ in range(rounds)] for _ in range(n)]   # per client, its requests in order
    with serve(LeRobotPolicy(ckpt, device='cpu'), layout='openpi-aloha', max_batch=n, batch_timeout_ms=300) as srv:
        b = srv.metadata['batching']
        assert b['batched'] and 'openpi-aloha' in b['why'] and b['max_batch'] == n
        clients = [WebsocketClientPolicy(srv.host, srv.port) for _ in range(n)]
        got = [[None] * rounds for _ in range(n)]
        for r in range(rounds):
            barrier = threading.Barrier(n)
            def ask(i, r=r):
                barrier.wait(10); got[i][r] = clients[i].infer(reqs[i][r])['actions']
            ths = [threading.Thread(target=ask, args=(i,)) for i in range(n)]
            for th in ths: th.start()
            for th in ths: th.join(120)
        batches = srv._server._batcher.batches
        for c in clients: c._ws.close()
    assert max(batches) > 1, batches   # requests of several connections really ran as one batch
    for i in range(n):
        if step:   # the client's own ensemble: 10 select_action steps per request, on that request's observation
            ref = LeRobotStepReference(ckpt); ref.reset()
            want = [np.stack([ref(_as_lerobot(o)) for _ in range(10)]) for o in reqs[i]]
        else: want = [LeRobotReference(ckpt)(_as_lerobot(o)) for o in reqs[i]]
        for r in range(rounds): np.testing.assert_allclose(got[i][r], want[r], atol=1e-4, err_msg=f'client {i}, {r}')
