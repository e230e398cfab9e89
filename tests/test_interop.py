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
    from robobench.server import serve, RandomPolicy, FeatureSpec
    with serve(RandomPolicy(action_dim=2, horizon=4, input_features={'observation.state': FeatureSpec([2])})) as srv:
        r = subprocess.run([ROBOBENCH, 'eval', '--environment', 'toy/Point', '-m', f'{srv.host}:{srv.port}', '--episodes', '2',
                            '--max-steps', '4', '--run-folder', str(tmp_path / 'a'), '--no-video',
                            '--policy.camera_map', '{"top": "front"}', '--policy.scale', '[0.5, 0.25]',
                            '--policy.obs_map', 'tests.eval_clients:point_request'],
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-2000:]
        acts = [np.load(p)['action'] for p in sorted((tmp_path / 'a' / 'trajectories').glob('*.npz'))]
        assert acts and all(np.abs(a[:, 0]).max() <= 0.5 and np.abs(a[:, 1]).max() <= 0.25 for a in acts)
        r = subprocess.run([ROBOBENCH, 'eval', '--environment', 'toy/Point', '-m', f'{srv.host}:{srv.port}', '--episodes', '1',
                            '--run-folder', str(tmp_path / 'b'), '--no-video', '--policy.camera_map', "{'top': 'front'}"],
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert r.returncode == 2 and 'is not JSON' in r.stderr and 'Fix:' in r.stderr
