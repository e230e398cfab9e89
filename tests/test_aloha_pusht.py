"""ALOHA (gym-aloha) and PushT (gym-pusht) behind robobench's env interface, the scripted ALOHA experts, collect."""
import numpy as np, pytest
from robobench.core import UnknownNameError
from robobench.envs import make_env, list_envs
from robobench.collect import collect
from robobench.experts import make_expert, measure_expert

pytestmark = [pytest.mark.sim]
DIMS = {'aloha/TransferCube': (14, 14, 7), 'aloha/Insertion': (14, 14, 14), 'pusht/PushT': (2, 2, 19)}


def test_listed_and_defaults():
    assert set(DIMS) <= set(list_envs())
    defaults = {'aloha/TransferCube': (50, 400, [480, 640]), 'aloha/Insertion': (50, 400, [480, 640]),
                'pusht/PushT': (10, 300, [96, 96])}
    for eid, (fps, steps, size) in defaults.items():
        env = make_env(eid, render_images=False)
        s = env.spec
        assert (s.env_id, s.fps, s.max_steps, s.cameras) == (eid, fps, steps, {'top': size}) and s.instruction
        env.close()


@pytest.mark.parametrize('eid', list(DIMS))
def test_spec_obs_and_small_images(eid):
    env = make_env(eid, image_size=(48, 64))
    s = env.spec
    assert (s.action_dim, s.state_dim, s.env_state_dim) == DIMS[eid] and s.cameras == {'top': [48, 64]}
    obs, info = env.reset(seed=0)
    assert info['success'] is False and obs['instruction'] == s.instruction
    assert obs['state'].dtype == np.float32 and obs['state'].shape == (s.state_dim,)
    assert obs['env_state'].dtype == np.float32 and obs['env_state'].shape == (s.env_state_dim,)
    img = obs['images']['top']
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8 and img.std() > 0
    action = obs['state'] if s.backend == 'aloha' else np.array([256, 256], np.float32)
    nobs, reward, term, trunc, info = env.step(action, render_images=False)
    assert nobs['images'] == {} and isinstance(reward, float) and not trunc and isinstance(info['success'], bool)
    frame = env.render()
    assert frame.ndim == 3 and frame.dtype == np.uint8 and frame.std() > 0
    env.close()


def test_unknown_tasks_list_the_valid_ones():
    with pytest.raises(UnknownNameError, match="Did you mean 'TransferCube'") as e:
        make_env('aloha/TransferCub')
    assert 'Insertion' in str(e.value) and 'TransferCube' in str(e.value)
    with pytest.raises(UnknownNameError, match="Valid PushT tasks: PushT"):
        make_env('pusht/PushX')
    with pytest.raises(UnknownNameError, match="Did you mean 'top'"):
        make_env('aloha/Insertion', cameras=['tpo'])
    assert make_env('aloha/AlohaInsertion-v0', render_images=False).spec.env_id == 'aloha/Insertion'


def test_seed_is_gym_aloha_seed():
    "Seed N here is seed N of gym-aloha: same object pose, same joint positions after the same actions."
    import gymnasium as gym, gym_aloha  # noqa: F401
    up = gym.make('gym_aloha/AlohaTransferCube-v0', obs_type='pixels_agent_pos')
    env = make_env('aloha/TransferCube')
    uo, _ = up.reset(seed=11)
    obs, _ = env.reset(seed=11)
    np.testing.assert_array_equal(obs['images']['top'], uo['pixels']['top'])
    actions = obs['state'] + np.random.default_rng(0).uniform(-0.2, 0.2, (3, 14)).astype(np.float32)
    for a in actions:
        uo, ur, *_ = up.step(a)
        obs, r, *_ = env.step(a, render_images=False)
    np.testing.assert_array_equal(obs['state'], uo['agent_pos'].astype(np.float32))
    assert r == ur
    env.close()


@pytest.mark.parametrize('eid', ['aloha/TransferCube', 'aloha/Insertion'])
def test_expert_episode_succeeds(eid):
    r = measure_expert(eid, episodes=1, start_seed=13)
    assert r['successes'] == 1 and r['mean_steps'] < 400   # terminated on success, as gym-aloha


def _episode(env, seed, act):
    "state, env_state and action of every step of one episode of `act` from `seed`."
    obs, _ = env.reset(seed=seed, render_images=False)
    rows = []
    for _ in range(env.spec.max_steps):
        a = np.asarray(act(obs), np.float32)
        rows.append(np.r_[obs['state'], obs['env_state'], a])
        obs, _, term, trunc, _ = env.step(a, render_images=False)
        if term or trunc: break
    return np.stack(rows)


def test_same_seed_same_episode_after_others():
    "Seed 3 alone and seed 3 after other episodes (grasps, contacts, random flailing) are bit-identical."
    env = make_env('aloha/TransferCube', cameras=[], render_images=False)
    expert = make_expert(env)
    alone = _episode(env, 3, expert.act)
    env.close()
    env = make_env('aloha/TransferCube', cameras=[], render_images=False)
    expert = make_expert(env)
    _episode(env, 5, expert.act)
    rng = np.random.default_rng(1)
    _episode(env, 4, lambda obs: obs['state'] + rng.uniform(-0.5, 0.5, 14))
    expert.reset()
    after = _episode(env, 3, expert.act)
    assert len(alone) < 400   # the expert solved it (terminated)
    np.testing.assert_array_equal(after, alone)
    env.close()


def test_collect_transfer_cube_loads_in_lerobot(tmp_path):
    """collect() writes ALOHA demos that LeRobot's own LeRobotDataset reads with the expected features. Small images
    with `fast_render` keep it quick: a default frame costs ~50 ms on a CPU renderer at any size (~420 frames here)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    out = tmp_path/'aloha_tc'
    s = collect('aloha/TransferCube', 2, out, cameras=['top'], image_size=(48, 64), progress=False,
                env_kwargs={'fast_render': True})
    assert s['complete'] and s['saved_success'] == 2 and s['attempts'] == 2
    ds = LeRobotDataset('local/aloha_tc', root=out)
    f = ds.meta.features
    assert ds.num_episodes == 2 and ds.fps == 50 and ds.meta.robot_type == 'aloha'
    assert tuple(f['observation.state']['shape']) == (14,) and tuple(f['action']['shape']) == (14,)
    assert f['observation.state']['names'][:2] == ['left_waist', 'left_shoulder']   # LeRobot's ALOHA names
    assert tuple(f['observation.environment_state']['shape']) == (7,)
    assert tuple(f['observation.images.top']['shape']) == (48, 64, 3)
    item = ds[0]
    assert tuple(item['observation.images.top'].shape) == (3, 48, 64)
    assert item['task'] == 'transfer the cube from the right arm to the left arm' and int(item['seed']) == 0


def test_pusht_random_episode_reports_coverage():
    env = make_env('pusht/PushT', render_images=False)
    obs, _ = env.reset(seed=0)
    rng, steps = np.random.default_rng(0), 0
    for steps in range(1, env.spec.max_steps + 1):
        obs, reward, term, trunc, info = env.step(rng.uniform(0, 512, 2))
        assert 0 <= info['coverage'] <= 1 and info['success'] == (info['coverage'] > 0.95) == term
        assert reward == pytest.approx(min(info['coverage'] / 0.95, 1.0))
        if term or trunc: break
    assert steps == env.spec.max_steps and trunc   # random pushes do not solve PushT
    env.close()
