"""robobench.clients against real servers on 127.0.0.1 (openpi-client inside, LeRobot ACT checkpoint)."""
import os, signal, sys, time
from pathlib import Path

import numpy as np
import pytest
from openpi_client import websocket_client_policy

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_act import ACTION_DIM, ENV_DIM, N_STEPS, STATE_DIM, LeRobotReference, make_tiny_act  # noqa: E402

from robobench.clients import (InferenceClient, LocalClient, PolicyArgs, ServerTimeout, ServerUnavailable,
                               WebsocketClient, make_client)
from robobench.policies import RandomPolicy
from robobench.server import serve

pytestmark = pytest.mark.net


def env_obs(rng):
    "An observation in the env contract (what robobench envs return)."
    return {'images': {'base_camera': rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)},
            'state': rng.normal(size=STATE_DIM).astype(np.float32),
            'env_state': rng.normal(size=ENV_DIM).astype(np.float32), 'instruction': 'pick the cube'}


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    return make_tiny_act(tmp_path_factory.mktemp('act') / 'ckpt')


def test_remote_and_local_clients_agree_with_lerobot(ckpt):
    ref = LeRobotReference(ckpt)
    with serve(ckpt, device='cpu') as srv:
        remote = make_client(f'{srv.host}:{srv.port}', timeout=30)
        local = make_client(str(ckpt), device='cpu')
        assert isinstance(remote, WebsocketClient) and isinstance(local, LocalClient)
        assert remote.n_action_steps == local.n_action_steps == N_STEPS    # from the checkpoint's config
        rng = np.random.default_rng(0)
        for episode in range(2):
            remote.reset(); local.reset()
            for t in range(2 * N_STEPS):
                obs = env_obs(rng)
                assert remote.rerender is False and not remote.needs_images   # the policy takes no images: never render
                a_r, viz = remote.infer(obs, obs['instruction'], return_viz=True)
                a_l, _ = local.infer(obs, obs['instruction'])
                if t % N_STEPS == 0:
                    req = {'observation.state': obs['state'], 'observation.environment_state': obs['env_state'],
                           'task': 'pick the cube'}
                    chunk = ref(req)
                assert a_r.shape == (ACTION_DIM,) and viz.shape == (16, 16, 3)
                np.testing.assert_allclose(a_r, chunk[t % N_STEPS], rtol=1e-5, atol=1e-5)
                np.testing.assert_allclose(a_l, a_r, rtol=1e-5, atol=1e-5)
        assert remote.n_inferences == local.n_inferences == 4
        assert sorted(remote.last_request) == ['observation.environment_state', 'observation.state', 'task']
        remote.close()


def test_action_scaling_hook():
    with serve(RandomPolicy(action_dim=3, horizon=4, seed=0)) as srv:
        plain = make_client(f'{srv.host}:{srv.port}')
        scaled = make_client(f'ws://{srv.host}:{srv.port}', scale=[1, 2, 0], control_mode='pd_ee_delta_pos',
                             mapping_function=lambda a, s: np.clip(a * np.asarray(s), -0.5, 0.5))
        a0, _ = plain.infer({}, 'x'); a1, _ = scaled.infer({}, 'x')
        assert a0.shape == a1.shape == (3,)
        assert scaled.info()['control_mode'] == 'pd_ee_delta_pos' and scaled.info()['scale'] == [1, 2, 0]
        assert a1[2] == 0 and np.all(np.abs(a1) <= 0.5)
        plain.close(); scaled.close()


def test_killed_server_raises_within_timeout_and_reconnects():
    srv = serve('random', subprocess_mode=True, action_dim=2, horizon=2)
    try:
        c = make_client(f'{srv.host}:{srv.port}', timeout=3.0, connect_timeout=3.0)
        assert c.infer({}, 'x')[0].shape == (2,)
        # a hung server (process stopped, socket open): openpi's client would block forever
        os.kill(srv.pid, signal.SIGSTOP)
        try:
            c.reset(); t = time.monotonic()
            with pytest.raises(ServerTimeout, match='within 3.0s'):
                c.infer({}, 'x')
            assert time.monotonic() - t < 5
        finally:
            os.kill(srv.pid, signal.SIGCONT)
        c.reconnect(); assert c.infer({}, 'x')[0].shape == (2,)            # the same server again, new connection
        # a killed server
        srv._proc.kill(); srv._proc.wait(5)
        c.reset(); t = time.monotonic()
        with pytest.raises(ServerUnavailable):
            c.infer({}, 'x')
        assert time.monotonic() - t < 5
        with pytest.raises(ServerUnavailable, match='cannot reach'):     # the next call tries to reconnect
            c.reset(); c.infer({}, 'x')
    finally:
        srv.stop()


def test_wrong_api_key_is_a_permission_error():
    with serve(RandomPolicy(2, 2), api_key='k1') as srv:
        with pytest.raises(PermissionError, match='401'):
            make_client(f'{srv.host}:{srv.port}', api_key='nope')
        c = make_client(f'{srv.host}:{srv.port}', api_key='k1')
        assert c.infer({}, 'x')[0].shape == (2,)
        c.close()


# PolaRiS's custom-client example (seed 000), verbatim: only the imports above were added.
@InferenceClient.register(client_name="CustomPolicy")
class CustomPolicy(InferenceClient):
    def __init__(self, args: PolicyArgs):
        # inititalize any necessary state (obs history, action chunks, etc.)
        self.client = websocket_client_policy.WebsocketClientPolicy(
            host=args.host, port=args.port
        )

    @property
    def rerender(self) -> bool:
        """
        Policy requests a rerender of the visualization. Optimization for less splat rendering
        for chunked policies. Can default to always True if optimization is not desired.
        """
        return True

    def infer(self, obs, instruction, return_viz: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """
        Does inference on observation and returns action and visualization. If visualization is not needed, return None.
        """
        request_data = {
            "external_image": obs["splat"]["external_cam"],
            "wrist_image": obs["splat"]["wrist_cam"],
            "instruction": instruction,
        }
        server_response= self.client.infer(request_data)
        return server_response["action"], None 

    def reset(self):
        """
        Resets the client to start a new episode. Useful if policy is stateful.
        """
        pass


@pytest.mark.sim
@pytest.mark.net
def test_seed000_polaris_client_verbatim_on_a_real_env(tmp_path):
    "The seed's class, by name, against an openpi-style server answering 'action', on robosuite Lift: 0 error episodes."
    from tests._openpi_server import OpenpiLikeServer
    from robobench.evaluation import evaluate
    seen = []
    # what a PolaRiS policy server gets: its own keys, two upright HxWx3 uint8 images, the instruction
    def policy(req):
        assert sorted(req) == ['external_image', 'instruction', 'wrist_image'], sorted(req)
        for k in ('external_image', 'wrist_image'):
            assert req[k].dtype == np.uint8 and req[k].ndim == 3 and req[k].shape[2] == 3, (k, req[k].shape)
        seen.append((req['external_image'].shape, req['wrist_image'].shape, req['instruction']))
        return {'action': np.zeros(7, np.float32)}
    with OpenpiLikeServer(policy) as srv:
        res = evaluate('robosuite/Lift', 'CustomPolicy', episodes=2, max_steps=3, client_kwargs={'port': srv.port},
                       run_folder=tmp_path, progress=False, video=False)
    assert 'CustomPolicy' in InferenceClient.names()
    assert res.summary['errors'] == 0 and res.summary['episodes'] == 2, res.episodes
    assert len(seen) == 6 and seen[0] == ((84, 84, 3), (256, 256, 3), 'lift the red cube')   # agentview, eye-in-hand


def test_rerender_only_at_chunk_boundaries_when_images_matter():
    "A client whose policy takes images (or may: no metadata) asks for camera images only when a new chunk is due."
    from robobench.clients import RandomClient
    c = RandomClient(action_dim=3, horizon=4, n_action_steps=4)
    rng = np.random.default_rng(0)
    pattern = []
    for t in range(8):
        pattern.append(c.rerender); c.infer(env_obs(rng), 'x')
    assert pattern == [True, False, False, False] * 2
    c.metadata = {'input_features': {'observation.images.top': {'shape': [16, 16, 3], 'dtype': 'uint8'}}}
    assert c.needs_images and c.rerender
    c.metadata = {'input_features': {'observation.state': {'shape': [4], 'dtype': 'float32'}}}
    assert not c.needs_images and not c.rerender

