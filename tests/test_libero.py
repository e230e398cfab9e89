"""LIBERO in its own interpreter (.venv-libero, made by `make setup`): every suite builds and resets, the seed ->
(task, init state) mapping, openpi's LIBERO request pixel for pixel, and a worker killed mid-episode."""
import json, os, signal, subprocess, sys, textwrap
from pathlib import Path
import numpy as np
import pytest

pytestmark = [pytest.mark.sim, pytest.mark.slow]
ROBOBENCH = str(Path(sys.executable).parent / 'robobench')


def test_every_suite_builds_resets_from_two_init_states_and_steps():
    "One task per suite (a different task index each), state only: reset from two init states, step; settle recorded."
    from robobench.envs import make_env
    from robobench.envs_libero import libero_tasks
    tasks = libero_tasks()
    for k, suite in enumerate(['libero_spatial', 'libero_object', 'libero_goal', 'libero_10', 'libero_90']):
        task = k % len(tasks[suite])
        with make_env(f'libero/{suite}', render_images=False) as env:
            assert env.spec.max_steps == {'libero_spatial': 220, 'libero_object': 280, 'libero_goal': 300,
                                          'libero_10': 520, 'libero_90': 400}[suite]
            obs_a, info_a = env.reset(seed=50 * task + 3)   # seed 50·t + i: task t, init state i
            assert (info_a['task_index'], info_a['init_state'], info_a['settle_steps']) == (task, 3, 10), info_a
            assert obs_a['instruction'] == tasks[suite][task]['language']
            obs_b, info_b = env.reset(seed=50 * task + 4)
            assert info_b['init_state'] == 4 and not np.array_equal(obs_a['env_state'], obs_b['env_state'])
            obs, reward, term, trunc, info = env.step(np.r_[np.zeros(6), -1.0])
            assert obs['state'].shape == (25,) and info['elapsed_steps'] == 1 and not info['success']


def test_settle_steps_happen_inside_reset():
    "The 10 dummy steps move the falling objects: with settle_steps=0 the state after reset differs."
    from robobench.envs_libero import LiberoEnv
    with LiberoEnv('libero_object/1', render_images=False) as env:
        settled, _ = env.reset(seed=0)
    with LiberoEnv('libero_object/1', render_images=False, settle_steps=0) as env:
        raw, info = env.reset(seed=0)
    assert info['settle_steps'] == 0 and not np.allclose(settled['env_state'], raw['env_state'])


REFERENCE = textwrap.dedent('''
    # openpi's examples/libero/main.py up to its first request, in LIBERO's interpreter (no openpi_client there:
    # the raw observation is saved and the example's image processing runs in the test)
    import pathlib, sys
    import numpy as np
    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs import OffScreenRenderEnv
    suite, task_id, episode_idx, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    task_suite = benchmark.get_benchmark_dict()[suite]()
    task = task_suite.get_task(task_id)
    initial_states = task_suite.get_task_init_states(task_id)
    bddl = pathlib.Path(get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file
    env = OffScreenRenderEnv(bddl_file_name=bddl, camera_heights=256, camera_widths=256)
    env.seed(7)
    env.reset()
    obs = env.set_init_state(initial_states[episode_idx])
    for t in range(10):
        obs, reward, done, info = env.step([0.0] * 6 + [-1.0])
    np.savez(out, agentview=obs["agentview_image"], wrist=obs["robot0_eye_in_hand_image"],
             eef_pos=obs["robot0_eef_pos"], eef_quat=obs["robot0_eef_quat"], gripper=obs["robot0_gripper_qpos"],
             prompt=np.array(str(task.language)))
''')


def _quat2axisangle(quat):
    "As in openpi's example (robosuite's transform_utils)."
    import math
    if quat[3] > 1.0: quat[3] = 1.0
    elif quat[3] < -1.0: quat[3] = -1.0
    den = np.sqrt(1.0 - quat[3] * quat[3])
    if math.isclose(den, 0.0): return np.zeros(3)
    return (quat[:3] * 2.0 * math.acos(quat[3])) / den


def _example_request(ref) -> dict:
    "The request openpi's example builds from that observation (resize_size 224, rotate 180°)."
    from openpi_client import image_tools
    img = np.ascontiguousarray(ref['agentview'][::-1, ::-1])
    wrist_img = np.ascontiguousarray(ref['wrist'][::-1, ::-1])
    img = image_tools.convert_to_uint8(image_tools.resize_with_pad(img, 224, 224))
    wrist_img = image_tools.convert_to_uint8(image_tools.resize_with_pad(wrist_img, 224, 224))
    return {'observation/image': img, 'observation/wrist_image': wrist_img,
            'observation/state': np.concatenate((ref['eef_pos'], _quat2axisangle(ref['eef_quat'].copy()),
                                                 ref['gripper'])),
            'prompt': str(ref['prompt'])}


@pytest.mark.net
def test_openpi_libero_request_is_pixel_identical_to_openpis_example(tmp_path):
    """`robobench eval --policy.layout openpi-libero` on a LIBERO task against an openpi-style server: the first
    request equals, array for array and dtype for dtype, what openpi's example sends for the same init state; replanning
    every 5 steps; 0 error episodes."""
    from tests._openpi_server import OpenpiLikeServer
    from robobench.envs_libero import libero_python, worker_env
    python = libero_python()
    script = tmp_path / 'reference.py'; script.write_text(REFERENCE)
    subprocess.run([str(python), str(script), 'libero_object', '2', '3', str(tmp_path / 'ref.npz')], check=True,
                   env=worker_env(python), capture_output=True, timeout=600)
    want = _example_request(np.load(tmp_path / 'ref.npz'))
    got = []
    def policy(req):
        got.append(req)
        return {'actions': np.tile(np.r_[np.zeros(6), -1.0], (10, 1))}   # a 10-step chunk, of which 5 run
    with OpenpiLikeServer(policy) as srv:
        r = subprocess.run([ROBOBENCH, 'eval', '-e', 'libero/libero_object/2', '-m', f'127.0.0.1:{srv.port}',
                            '--policy.layout', 'openpi-libero', '--start-seed', '3', '--episodes', '1',
                            '--max-steps', '10', '--no-video', '--run-folder', str(tmp_path / 'run')],
                           capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(got) == 2                                   # 10 steps, a new chunk every 5
    first = got[0]
    assert sorted(first) == sorted(want)
    for key, value in want.items():
        if isinstance(value, str): assert first[key] == value; continue
        assert first[key].dtype == value.dtype and first[key].shape == value.shape, key
        assert np.array_equal(first[key], value), (key, np.abs(first[key].astype(float) - value).max())
    rec = json.loads((tmp_path / 'run' / 'episodes.jsonl').read_text().splitlines()[0])
    assert rec['outcome'] == 'failure' and rec['reset_info']['init_state'] == 3 and rec['length'] == 10


def _kill_worker_client(at: int):
    "An InferenceClient that kills this process's LIBERO worker at step `at` (once: while ./kill-once exists)."
    from robobench.clients import InferenceClient

    class KillWorkerAt(InferenceClient):
        def __init__(self): self.t = 0
        def reset(self): self.t = 0
        def infer(self, obs, instruction, return_viz=False): return self.act(obs), None
        def act(self, obs):
            self.t += 1
            if self.t == at and Path('kill-once').exists():
                Path('kill-once').unlink()
                for pid in os.listdir('/proc'):
                    try:
                        cmd = Path(f'/proc/{pid}/cmdline').read_bytes()
                        ppid = int(Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[1])
                    except (OSError, ValueError, IndexError): continue
                    if b'envs_libero_worker.py' in cmd and ppid == os.getpid(): os.kill(int(pid), signal.SIGKILL)
            return np.r_[np.zeros(6), -1.0]
    return KillWorkerAt()


def test_a_killed_worker_is_an_error_episode_then_replaced_and_the_rerun_completes_it(tmp_path, monkeypatch):
    from robobench.evaluation import evaluate
    monkeypatch.chdir(tmp_path)
    Path('kill-once').touch()
    kw = dict(env='libero/libero_object/0', episodes=2, max_steps=4, video=False, run_folder=str(tmp_path / 'run'),
              env_kwargs={'render_images': False}, progress=False)
    res = evaluate(client=_kill_worker_client(2), **kw)
    s = res.summary
    assert s['errors'] == 1 and s['error_seeds'] == [0] and s['episodes'] == 1, s   # seed 1 ran on a new worker
    err = res.errors[0]['error']
    assert err['type'] == 'WorkerDied' and 'exit code -9' in err['message'] and err['phase'] == 'env_step', err
    res = evaluate(client=_kill_worker_client(2), **kw)                                        # the rerun: seed 0 only
    assert res.summary['errors'] == 0 and res.summary['episodes'] == 2, res.summary
    lines = (tmp_path / 'run' / 'episodes.jsonl').read_text().splitlines()
    assert [json.loads(x)['seed'] for x in lines] == [0, 1, 0]


def test_a_missing_libero_environment_is_one_line_naming_the_command(tmp_path):
    env = {**os.environ, 'ROBOBENCH_LIBERO_PYTHON': str(tmp_path / 'nope' / 'python')}
    r = subprocess.run([ROBOBENCH, 'eval', '-e', 'libero/libero_object', '--policy.client', 'random',
                        '--episodes', '1', '--run-folder', str(tmp_path / 'run')], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and 'make libero' in err[0] and 'nope' in err[0], r.stderr


@pytest.fixture(scope='module')
def object_demos(tmp_path_factory):
    """`robobench collect` of 2 LIBERO-Object task-1 demos (seeds 0 and 1: init states 0 and 1), written in openpi's
    LIBERO conversion layout (both cameras rendered)."""
    data = tmp_path_factory.mktemp('libero') / 'data'
    r = subprocess.run([ROBOBENCH, 'collect', '--env', 'libero/object/1', '--episodes', '2', '--out',
                        str(data / 'demos'), '--max-attempts', '2'], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return data


OPENPI_FEATURES = {   # openpi's examples/libero/convert_libero_data_to_lerobot.py
    'image': {'dtype': 'image', 'shape': (256, 256, 3), 'names': ['height', 'width', 'channel']},
    'wrist_image': {'dtype': 'image', 'shape': (256, 256, 3), 'names': ['height', 'width', 'channel']},
    'state': {'dtype': 'float32', 'shape': (8,), 'names': ['state']},
    'actions': {'dtype': 'float32', 'shape': (7,), 'names': ['actions']}}


def test_collect_writes_openpis_libero_conversion_layout(object_demos):
    """The dataset has exactly the features, shapes, dtypes, fps and robot type openpi's LIBERO conversion writes, the
    task's language as each episode's task, and loads with LeRobot's own `LeRobotDataset`."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from robobench.envs_libero import libero_tasks
    ds = LeRobotDataset('local/demos', root=object_demos / 'demos')
    own = {k: v for k, v in ds.meta.features.items()
           if k not in ('timestamp', 'frame_index', 'episode_index', 'index', 'task_index')}
    assert {k: {**v, 'shape': tuple(v['shape'])} for k, v in own.items()} == OPENPI_FEATURES
    assert ds.fps == 10 and ds.meta.robot_type == 'panda' and ds.num_episodes == 2
    assert 2 * 60 < ds.num_frames < 2 * 280
    item = ds[0]
    assert tuple(item['image'].shape) == (3, 256, 256) and tuple(item['state'].shape) == (8,)
    assert item['actions'].dtype.is_floating_point and tuple(item['actions'].shape) == (7,)
    assert item['task'] == libero_tasks()['libero_object'][1]['language']
    ledger = [json.loads(x) for x in (object_demos / 'demos' / 'robobench_episodes.jsonl').read_text().splitlines()]
    assert [(r['seed'], r['success'], r['saved']) for r in ledger] == [(0, True, True), (1, True, True)]


def test_dataset_frame_is_the_raw_render_rotated_180_as_openpi_sends_it(object_demos, tmp_path):
    """Orientation and state, pinned against LIBERO itself: the dataset's first frame of seed 0 (task 1, init state 0)
    is LIBERO's raw render after the settle steps rotated 180° (`[::-1, ::-1]`, as openpi's main.py and the converted
    data); robobench's upright camera image is the raw render flipped vertically; and openpi's example (which
    `openpi-libero` matches pixel for pixel, see above) sends the dataset frame resized with padding to 224."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from openpi_client import image_tools
    from robobench.envs_libero import libero_python, worker_env
    python = libero_python()
    script = tmp_path / 'reference.py'; script.write_text(REFERENCE)
    subprocess.run([str(python), str(script), 'libero_object', '1', '0', str(tmp_path / 'ref.npz')], check=True,
                   env=worker_env(python), capture_output=True, timeout=600)
    ref = np.load(tmp_path / 'ref.npz')
    ds = LeRobotDataset('local/demos', root=object_demos / 'demos')
    frame = ds[0]
    as_uint8 = lambda t: (t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    image, wrist = as_uint8(frame['image']), as_uint8(frame['wrist_image'])
    assert np.array_equal(image, ref['agentview'][::-1, ::-1]) and np.array_equal(wrist, ref['wrist'][::-1, ::-1])
    want_state = np.concatenate((ref['eef_pos'], _quat2axisangle(ref['eef_quat'].copy()), ref['gripper']))
    assert np.array_equal(frame['state'].numpy(), want_state.astype(np.float32))
    # the frame is LiberoEnv's upright image mirrored left-right (openpi_frame): so that image is the raw one flipped
    assert np.array_equal(image[:, ::-1], ref['agentview'][::-1])
    req = _example_request(ref)                  # what openpi's main.py (and --policy.layout openpi-libero) sends
    padded = lambda img: image_tools.convert_to_uint8(image_tools.resize_with_pad(img, 224, 224))
    assert np.array_equal(req['observation/image'], padded(image))
    assert np.array_equal(req['observation/wrist_image'], padded(wrist))
    assert np.array_equal(req['observation/state'].astype(np.float32), frame['state'].numpy())


def test_libero_object_expert_demos_train_serve_eval(object_demos, tmp_path):
    """The loop on LIBERO through openpi's dataset layout: the expert's demos -> `robobench train` of a tiny ACT (its
    inputs LeRobot's names for image / wrist_image / state) -> `robobench serve` -> `robobench eval -m` over openpi's
    protocol, the client building each request as the dataset's frame because the policy's inputs are that layout's:
    0 errors."""
    from robobench.server import serve
    from tests._tiny_act import train_tiny_act
    out = tmp_path / 'ckpt'
    r = train_tiny_act(object_demos, out, steps=2, n_action_steps=5)
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = json.loads((out / 'final_model' / 'config.json').read_text())
    assert {k: v['shape'] for k, v in cfg['input_features'].items()} == {
        'observation.images.image': [3, 256, 256], 'observation.images.wrist_image': [3, 256, 256],
        'observation.state': [8]}
    assert {k: v['shape'] for k, v in cfg['output_features'].items()} == {'action': [7]}
    with serve(out / 'final_model', device='cpu') as srv:
        r = subprocess.run([ROBOBENCH, 'eval', '-m', f'{srv.host}:{srv.port}', '-e', 'libero/libero_object/1',
                            '--episodes', '1', '--start-seed', '7', '--max-steps', '10', '--no-video',
                            '--run-folder', str(tmp_path / 'eval'), '--json'],
                           capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout[:r.stdout.rindex('}') + 1])
    assert (summary['errors'], summary['completed']) == (0, 1), summary


def test_collect_layout_mistakes_are_one_line():
    "`--cameras` that openpi's layout does not record, or an unknown `--layout`: one line naming the fix, exit 2."
    for extra, want in ((['--cameras', 'agentview'], '--layout robobench'), (['--layout', 'openpi'], '--layout auto')):
        r = subprocess.run([ROBOBENCH, 'collect', '--env', 'libero/object/1', '--episodes', '1', '--out',
                            '/tmp/robobench-never-written', *extra], capture_output=True, text=True, timeout=300)
        err = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.returncode == 2 and len(err) == 1 and want in err[0], (r.returncode, r.stderr[-2000:])
        assert not Path('/tmp/robobench-never-written').exists()


def test_episodes_per_task_seeds():
    "`--episodes-per-task K` on a suite: K init states of every task, once each; refused where there are no tasks."
    from robobench.core import RobobenchError
    from robobench.envs_libero import libero_episode
    from robobench.evaluation import EvalConfig
    seeds = EvalConfig(env='libero/libero_goal', episodes_per_task=3, start_seed=10).seeds()
    assert len(seeds) == 30 and len(set(seeds)) == 30
    assert sorted(libero_episode(s, 10) for s in seeds) == [(t, i) for t in range(10) for i in (10, 11, 12)]
    assert EvalConfig(env='libero/libero_goal/4', episodes_per_task=2).seeds() == [0, 1]
    with pytest.raises(RobobenchError, match='libero/'):
        EvalConfig(env='toy/Point', episodes_per_task=2).seeds()
    with pytest.raises(RobobenchError, match='episodes per task'):
        EvalConfig(env='libero/libero_goal', episodes_per_task=51).seeds()
