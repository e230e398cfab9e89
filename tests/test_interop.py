"""openpi conventions robobench accepts: `prompt` as the task text, JSON and code options from the CLI."""
import json, subprocess, sys
from pathlib import Path
import numpy as np
import pytest

ROBOBENCH = str(Path(sys.executable).parent / 'robobench')
ROOT = Path(__file__).resolve().parent.parent


class _EchoTask:
    "Answers with the length of the task text it was given (so a test can see what reached the policy)."
    metadata = None
    def infer(self, obs): return {'actions': np.full((1, 2), len(obs.get('task', '')), np.float32)}


@pytest.mark.net
def test_openpi_prompt_reaches_the_policy_as_its_task():
    from openpi_client.websocket_client_policy import WebsocketClientPolicy
    from robobench.server import serve
    with serve(_EchoTask()) as srv:
        c = WebsocketClientPolicy(host=srv.host, port=srv.port)
        assert c.get_server_metadata()['text_keys'] == ['task', 'prompt']
        assert c.infer({'observation.state': np.zeros(2), 'prompt': 'pick up the cube'})['actions'][0, 0] == 16
        assert c.infer({'observation.state': np.zeros(2), 'task': 'lift'})['actions'][0, 0] == 4


@pytest.mark.net
def test_cli_takes_json_maps_and_lists_and_code_by_name(tmp_path):
    "--policy.camera_map / --policy.scale as JSON, --policy.obs_map / --policy.mapping_function as package.module:name."
    from robobench.policies import FeatureSpec, RandomPolicy
    from robobench.server import serve
    with serve(RandomPolicy(action_dim=2, horizon=4, input_features={'observation.state': FeatureSpec([2])})) as srv:
        r = subprocess.run([ROBOBENCH, 'eval', '--environment', 'toy/Point', '-m', f'{srv.host}:{srv.port}',
                            '--episodes', '2', '--max-steps', '4', '--run-folder', str(tmp_path / 'a'), '--no-video',
                            '--policy.camera_map', '{"top": "front"}', '--policy.scale', '[0.5, 0.25]',
                            '--policy.obs_map', 'tests.eval_clients:point_request'],
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-2000:]
        acts = [np.load(p)['action'] for p in sorted((tmp_path / 'a' / 'trajectories').glob('*.npz'))]
        assert acts and all(np.abs(a[:, 0]).max() <= 0.5 and np.abs(a[:, 1]).max() <= 0.25 for a in acts)
        r = subprocess.run([ROBOBENCH, 'eval', '--environment', 'toy/Point', '-m', f'{srv.host}:{srv.port}',
                            '--episodes', '1', '--run-folder', str(tmp_path / 'b'), '--no-video',
                            '--policy.camera_map', "{'top': 'front'}"],
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert r.returncode == 2 and 'is not JSON' in r.stderr and 'Fix:' in r.stderr


# what each layout's server must receive from a robosuite env (keys, shapes, dtypes), after openpi's own example clients
EXPECTED = {
    'openpi-libero': {'observation/image': ((224, 224, 3), np.uint8),
                      'observation/wrist_image': ((224, 224, 3), np.uint8),
                      'observation/state': ((8,), np.float32), 'prompt': str},
    'openpi-droid': {'observation/exterior_image_1_left': ((224, 224, 3), np.uint8),
                     'observation/wrist_image_left': ((224, 224, 3), np.uint8),
                     'observation/joint_position': ((7,), np.float32),
                     'observation/gripper_position': ((1,), np.float32),
                     'prompt': str},
    'openpi-aloha': {'images': {'cam_high': ((3, 224, 224), np.uint8)},   # the top camera, the model's own prompt
                     'state': (None, np.float32)},
    'cogact': {'image': ((224, 256, 3), np.uint8), 'prompt': str},       # wider than high, as CogACT's server asserts
}


def _check(req, want, where=''):
    assert sorted(req) == sorted(want), (where, sorted(req), sorted(want))
    for k, w in want.items():
        if isinstance(w, dict): _check(req[k], w, f'{where}{k}/'); continue
        if w is str: assert isinstance(req[k], str) and req[k], (k, req[k]); continue
        shape, dtype = w
        assert req[k].dtype == dtype and (shape is None or req[k].shape == shape), \
            (where + k, req[k].shape, req[k].dtype)


@pytest.mark.sim
@pytest.mark.net
@pytest.mark.parametrize('layout', list(EXPECTED))
def test_each_layout_against_an_openpi_style_server(layout, tmp_path):
    "openpi's wire protocol, metadata {}, a policy that checks it gets exactly the layout's request: 0 error episodes."
    from tests._openpi_server import OpenpiLikeServer
    from robobench.evaluation import evaluate
    from robobench.viz import report
    seen = []
    # DROID answers joint velocities (7) + gripper: ManiSkill's pd_joint_vel, with the Panda that has a wrist camera
    env_id, env_kwargs, adim = (('maniskill/PickCube-v1',
                                 {'control_mode': 'pd_joint_vel', 'robot_uids': 'panda_wristcam'}, 8)
                                if layout == 'openpi-droid' else ('robosuite/Lift', {}, 7))
    def policy(req):
        _check(req, EXPECTED[layout]); seen.append(req)
        return {'actions': np.zeros((10, adim), np.float32)}
    with OpenpiLikeServer(policy) as srv:
        res = evaluate(env_id, f'127.0.0.1:{srv.port}', episodes=2, max_steps=6, layout=layout, env_kwargs=env_kwargs,
                       run_folder=tmp_path, progress=False, video=False)
    assert res.summary['errors'] == 0 and res.summary['episodes'] == 2, [r.get('failure_reason') for r in res.episodes]
    assert seen and seen[0].get('prompt', res.episodes[0]['task']) == res.episodes[0]['task']   # the env's instruction
    info = json.loads((tmp_path / 'run_info.json').read_text())
    assert info['client_info']['layout'] == layout and f'layout: {layout}' in report(res).read_text()


@pytest.mark.sim
@pytest.mark.net
def test_cli_layout_flag_and_a_layout_file(tmp_path):
    """`--policy.layout` takes a name or a YAML file; the LIBERO client's replan steps (5 of 10) are used, not the
    whole chunk."""
    from tests._openpi_server import OpenpiLikeServer
    n = []
    def policy(req): n.append(1); return {'actions': np.zeros((10, 7), np.float32)}
    lay = tmp_path / 'mine.yaml'
    lay.write_text("doc: just the agentview image and the prompt\n"
                   "images:\n- {key: img, view: external_cam, size: [64, 64]}\nprompt: text\n")
    with OpenpiLikeServer(policy) as srv:
        r = subprocess.run([ROBOBENCH, 'eval', '--environment', 'robosuite/Lift', '-m', f'127.0.0.1:{srv.port}',
                            '--episodes', '1', '--max-steps', '10', '--run-folder', str(tmp_path / 'a'), '--no-video',
                            '--policy.layout', 'openpi-libero'],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        assert len(n) == 2                                                 # 10 steps, 5 actions per request
        r = subprocess.run([ROBOBENCH, 'eval', '--environment', 'robosuite/Lift', '-m', f'127.0.0.1:{srv.port}',
                            '--episodes', '1', '--max-steps', '3', '--run-folder', str(tmp_path / 'b'), '--no-video',
                            '--policy.layout', str(lay)],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / 'b' / 'run_info.json').read_text())['client_info']['layout'] == 'mine'
