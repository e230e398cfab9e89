"""Episode independence: `reset(seed)` of every built-in env gives the same episode (first observation and whole
trajectory, bit for bit) whether the seed runs alone in a fresh env, after other episodes in the same env object, or
in another (spawned) process — with the scripted expert and with a tiny random-init LeRobot ACT driven in-process."""
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
import numpy as np, pytest

pytestmark = [pytest.mark.sim, pytest.mark.slow]
ENVS = ['maniskill/PickCube-v1', 'maniskill/PushCube-v1', 'maniskill/StackCube-v1',
        'robosuite/Lift', 'robosuite/Stack', 'robosuite/Door', 'toy/Point']
# history: the seed itself, then two others (PickCube: ends grasped)
SEED, HISTORY, STEPS = 3002, (3002, 3000, 3001), 25
ACTORS = ('expert', 'act')


def _tiny_act(d, spec) -> Path:
    "A random-init ACT checkpoint with `spec`'s real state / env_state / action dims (actions ~ N(0, 0.5))."
    import torch
    from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.act.modeling_act import ACTPolicy
    from tests._tiny_act import _save
    s, e, a = spec.state_dim, spec.env_state_dim, spec.action_dim
    cfg = ACTConfig(input_features={'observation.state': PolicyFeature(FeatureType.STATE, (s,)),
                                    'observation.environment_state': PolicyFeature(FeatureType.ENV, (e,))},
                    output_features={'action': PolicyFeature(FeatureType.ACTION, (a,))},
                    chunk_size=5, n_action_steps=3, dim_model=32, dim_feedforward=64, n_heads=2, n_encoder_layers=1,
                    n_decoder_layers=1, latent_dim=8, n_vae_encoder_layers=1, pretrained_backbone_weights=None,
                    device='cpu')
    cfg.normalization_mapping = {**cfg.normalization_mapping, 'ENV': NormalizationMode.MEAN_STD}
    torch.manual_seed(0)
    stats = {'observation.state': {'mean': torch.zeros(s), 'std': torch.ones(s)},
             'observation.environment_state': {'mean': torch.zeros(e), 'std': torch.ones(e)},
             'action': {'mean': torch.zeros(a), 'std': torch.full((a,), 0.5)}}
    return _save(cfg, ACTPolicy(cfg), stats, d)


def _client(kind, env, ckpt):
    from robobench.clients import make_client
    return make_client('scripted', env=env) if kind == 'expert' else make_client('local', path=str(ckpt), device='cpu')


def _episode(env, client, seed, steps=STEPS) -> dict:
    "One episode of `client` from `seed`: every observation, action, reward and success flag."
    client.reset()
    obs, info = env.reset(seed=seed)
    tr = {k: [] for k in ('state', 'env_state', 'action', 'reward', 'success')}
    tr['state'].append(obs['state']); tr['env_state'].append(obs['env_state']); tr['success'].append(info['success'])
    for _ in range(steps):
        a, _ = client.infer(obs, env.spec.instruction)
        obs, r, term, trunc, info = env.step(a)
        for k, v in (('state', obs['state']), ('env_state', obs['env_state']), ('action', np.asarray(a, np.float32)),
                     ('reward', r), ('success', info['success'])): tr[k].append(v)
    return {k: np.array(v) for k, v in tr.items()}


def _make(env_id):
    from robobench.envs import make_env
    return make_env(env_id, cameras=[], render_images=False, max_steps=STEPS + 5)


def _torch_threads(n=1):
    import torch
    old = torch.get_num_threads(); torch.set_num_threads(n); return old


def worker_episodes(env_id, ckpt) -> dict:
    "In a spawned process (reused across envs): SEED in a fresh env, for each actor."
    _torch_threads(1)
    env = _make(env_id)
    try: return {k: _episode(env, _client(k, env, ckpt), SEED) for k in ACTORS}
    finally: env.close()


@pytest.fixture(scope='module')
def pool():
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context('spawn')) as ex:
        yield ex


def _first_difference(a: dict, b: dict, spec) -> str | None:
    for k in a:
        if np.array_equal(a[k], b[k]): continue
        if a[k].shape != b[k].shape: return f'{k}: shape {a[k].shape} vs {b[k].shape}'
        t = int(np.nonzero((a[k] != b[k]).reshape(len(a[k]), -1).any(1))[0][0])
        where = ''
        if k in ('state', 'env_state'):
            layout = spec.state_layout if k == 'state' else spec.env_state_layout
            where = ' ' + str([n for n, _ in layout
                               if not np.array_equal(a[k][t][spec.slice(n, k)], b[k][t][spec.slice(n, k)])])
        return f"{k} differs first at {'reset' if k in ('state', 'env_state') and t == 0 else f'step {t}'}{where}"
    return None


@pytest.mark.parametrize('env_id', ENVS)
def test_seed_alone_after_others_and_in_another_process(env_id, pool, tmp_path):
    old = _torch_threads(1)
    env = _make(env_id)
    try:
        ckpt = _tiny_act(tmp_path/'act', env.spec)
        other = pool.submit(worker_episodes, env_id, str(ckpt))   # runs while this process does the same seeds
        clients = {k: _client(k, env, ckpt) for k in ACTORS}
        alone = {k: _episode(env, c, SEED) for k, c in clients.items()}   # first episode of a fresh env
        for s in HISTORY: _episode(env, clients['expert'], s)   # expert episodes: contacts, grasps
        after = {k: _episode(env, c, SEED) for k, c in clients.items()}  # 'act' follows the expert's SEED episode
        spawned = other.result(timeout=600)
    finally:
        env.close(); _torch_threads(old)
    for k in ACTORS:
        for name, tr in (('after other episodes in the same env', after[k]), ('in a spawned process', spawned[k])):
            diff = _first_difference(alone[k], tr, env.spec)
            assert diff is None, f'{env_id}, {k}: seed {SEED} alone vs {name}: {diff}'
    assert not np.array_equal(alone['expert']['action'], alone['act']['action'])
