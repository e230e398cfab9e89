"""Served policies judged by meaning, not only keys: for each layout a test server applies the conventions of that
layout's example client (written here from openpi's examples/droid, examples/aloha_sim, examples/libero main scripts
and CogACT's scripts/deploy.py, not copied), checks what robobench sends, and answers; the test then checks what the
env did with the reply. Plus: CogACT's HTTP API on a stdlib server, a short chunk, a missing camera."""
import http.server, io, json, subprocess, sys, threading
from email.parser import BytesParser
from email.policy import default as email_policy
from pathlib import Path
import numpy as np
import pytest

from robobench.clients import InferenceClient

pytestmark = [pytest.mark.sim, pytest.mark.net]
ROBOBENCH = str(Path(sys.executable).parent / 'robobench')
DROID_ENV = {'control_mode': 'pd_joint_vel', 'robot_uids': 'panda_wristcam'}


def _evaluate(env, server, layout, tmp_path, **kw):
    from robobench.evaluation import evaluate
    return evaluate(env, server, layout=layout, run_folder=tmp_path, progress=False, video=False, **kw)


def test_droid_gripper_closedness_close_on_one_and_joint_velocity_units(tmp_path):
    """openpi's DROID client sends `gripper_position` as closedness (0 open, 1 closed) and executes the reply's
    gripper 1.0 as "close" (binarised at 0.5), joint velocities in DROID's units (1.0 = 0.2 rad per 15 Hz step =
    3 rad/s), clipped to [-1, 1]; it runs 8 actions per request."""
    from tests._openpi_server import OpenpiLikeServer
    seen = []
    def droid_server(req):
        grip = np.asarray(req['observation/gripper_position'])
        assert grip.shape == (1,) and 0.0 <= grip[0] <= 1.0, grip          # closedness, not a width in metres
        assert req['observation/joint_position'].shape == (7,)
        for key in ('observation/exterior_image_1_left', 'observation/wrist_image_left'):
            assert req[key].shape == (224, 224, 3)
        seen.append((float(grip[0]), np.array(req['observation/joint_position'])))
        chunk = np.zeros((10, 8), np.float32)                               # the example asserts a [10, 8] chunk
        chunk[:, 0] = 0.1                                                    # joint 1 at 0.1 DROID units = 0.3 rad/s
        chunk[:, 7] = 0.8                                                    # > 0.5: close the gripper
        return {'actions': chunk}
    with OpenpiLikeServer(droid_server) as srv:
        res = _evaluate('maniskill/PickCube-v1', f'127.0.0.1:{srv.port}', 'openpi-droid', tmp_path, episodes=1,
                        max_steps=24, env_kwargs=DROID_ENV)
    assert res.summary['errors'] == 0, res.episodes
    assert len(seen) == 3                                                    # 24 steps, 8 per request
    assert seen[0][0] < 0.05                                                 # starts open: closedness ~0
    assert seen[2][0] > 0.9, [s[0] for s in seen]                            # DROID's close closed the gripper
    moved = seen[1][1][0] - seen[0][1][0]                                    # 8 steps at 20 Hz: 0.4 s
    assert 0.08 < moved < 0.15, moved                                        # ~0.3 rad/s * 0.4 s, not 0.1 rad/s
    traj = np.load(tmp_path / 'trajectories' / 'seed0.npz')['action']
    assert np.allclose(traj[:, 0], 0.3) and np.all(traj[:, 7] == -1.0)       # the env's units and its "close"


def test_aloha_top_camera_only_model_prompt_and_replan_every_10(tmp_path):
    """openpi's aloha_sim client: `images: {cam_high: CHW uint8 224}` and `state`, no prompt (the model's default),
    `ActionChunkBroker(action_horizon=10)`: a new request every 10 steps of a 50-step chunk."""
    from tests._openpi_server import OpenpiLikeServer
    seen = []
    def aloha_server(req):
        assert sorted(req) == ['images', 'state'], sorted(req)               # no prompt, no extra keys
        assert sorted(req['images']) == ['cam_high'], sorted(req['images'])  # the top camera only
        img = req['images']['cam_high']
        assert img.shape == (3, 224, 224) and img.dtype == np.uint8 and img.max() > 0
        assert req['state'].shape == (14,)
        seen.append(req['state'])
        return {'actions': np.tile(req['state'], (50, 1)).astype(np.float32)}   # hold: joint positions
    with OpenpiLikeServer(aloha_server) as srv:
        res = _evaluate('aloha/TransferCube', f'127.0.0.1:{srv.port}', 'openpi-aloha', tmp_path, episodes=1,
                        max_steps=30)
        assert res.summary['errors'] == 0, res.episodes
        assert len(seen) == 3                                                # steps 0, 10, 20
        # asked for: both cameras and a prompt
        asked = []
        def both(req): asked.append(req); return {'actions': np.tile(req['state'], (50, 1)).astype(np.float32)}
        srv.infer = both
        res = _evaluate('aloha/TransferCube', f'127.0.0.1:{srv.port}', 'openpi-aloha', tmp_path / 'b', episodes=1,
                        max_steps=5, client_kwargs={'cameras': ['cam_high', 'cam_left_wrist'],
                                                    'prompt': 'transfer the cube'})
    assert res.summary['errors'] == 0 and sorted(asked[0]['images']) == ['cam_high', 'cam_left_wrist']
    assert all(len(r['timing']['server_timing']['infer_ms']) == 1 for r in res.episodes)   # openpi's server_timing
    assert asked[0]['prompt'] == 'transfer the cube'


@pytest.mark.slow
def test_libero_request_replan_5_gripper_sense_and_server_timing(tmp_path):
    """openpi's LIBERO client: 8-dim float state (eef pos, axis-angle, gripper qpos), two 224 images, the prompt;
    actions executed as they come (LIBERO's +1 closes), 5 per request; the server's timing lands in the episode."""
    from tests._openpi_server import OpenpiLikeServer
    seen = []
    def libero_server(req):
        assert sorted(req) == ['observation/image', 'observation/state', 'observation/wrist_image', 'prompt']
        assert req['observation/state'].shape == (8,) and req['prompt']
        assert req['observation/image'].shape == req['observation/wrist_image'].shape == (224, 224, 3)
        seen.append(np.array(req['observation/state']))
        return {'actions': np.tile(np.r_[np.zeros(6), 1.0], (10, 1)).astype(np.float32)}   # close
    with OpenpiLikeServer(libero_server) as srv:
        res = _evaluate('libero/libero_object/2', f'127.0.0.1:{srv.port}', 'openpi-libero', tmp_path, episodes=1,
                        max_steps=10)
    assert res.summary['errors'] == 0, res.episodes
    assert len(seen) == 2                                                    # 10 steps, 5 per request
    assert abs(seen[1][6]) < abs(seen[0][6]) - 0.005                         # fingers closing on LIBERO's +1
    timing = res.episodes[0]['timing']
    assert len(timing['round_trip_ms']) == 2 and len(timing['server_timing']['infer_ms']) == 2


class CogactLikeServer:
    """CogACT's deployment API on the standard library (its scripts/deploy.py is Flask): POST /api/inference with
    multipart files `images` and `json` ({"task_description"}); the image must be wider than high (its resize_image
    asserts it, then centre-crops the square); the reply is a JSON list of 7 floats."""
    def __init__(self, reply):
        from robobench.core import free_port
        self.reply, self.seen, self.port = reply, [], free_port()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a): pass
            def do_POST(self):
                from PIL import Image
                if self.path != '/api/inference': self.send_error(404); return
                body = self.rfile.read(int(self.headers['Content-Length']))
                msg = BytesParser(policy=email_policy).parsebytes(
                    b'Content-Type: ' + self.headers['Content-Type'].encode() + b'\r\n\r\n' + body)
                parts = {p.get_param('name', header='content-disposition'): p.get_payload(decode=True)
                         for p in msg.iter_parts()}
                try:
                    image = Image.open(io.BytesIO(parts['images']))
                    query = json.loads(parts['json'])
                    w, h = image.size
                    assert h < w, 'Height should be less than width'          # as CogACT's resize_image
                    left = (w - h) // 2
                    owner.seen.append((np.asarray(image.convert('RGB')), left, query))
                    out = json.dumps(owner.reply).encode()
                    self.send_response(200)
                except Exception as e:
                    out = f'{type(e).__name__}: {e}'.encode()
                    self.send_response(500)
                self.send_header('Content-Type', 'application/json'); self.send_header('Content-Length', str(len(out)))
                self.end_headers(); self.wfile.write(out)

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', self.port), Handler)

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start(); return self
    def __exit__(self, *a): self.httpd.shutdown(); self.httpd.server_close()


def test_cogact_http_api_zero_error_episodes_gripper_and_image_shape(tmp_path):
    "`-m http://HOST:PORT` speaks CogACT's API; its open_gripper 0 (close) closes the env's gripper; 0 error episodes."
    from robobench.envs import get_backend
    with CogactLikeServer([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]) as srv:
        res = _evaluate('robosuite/Lift', f'http://127.0.0.1:{srv.port}', None, tmp_path, episodes=2, max_steps=3)
    assert res.summary['errors'] == 0 and res.summary['episodes'] == 2, res.episodes
    assert len(srv.seen) == 6                                               # one action per request
    img, left, query = srv.seen[0]
    assert img.shape == (224, 256, 3) and left == 16
    assert img[:, :left].max() == 0 and img[:, left + 224:].max() == 0      # only padding outside the centre square
    assert img[:, left:left + 224].max() > 0
    assert query == {'task_description': res.episodes[0]['task']}
    traj = np.load(tmp_path / 'trajectories' / 'seed0.npz')['action']
    assert np.all(traj[:, 6] == get_backend('robosuite').gripper['action_closed'])
    info = json.loads((tmp_path / 'run_info.json').read_text())
    assert info['client_info']['layout'] == 'cogact' and info['client_info']['client'] == 'http'
    assert [len(r['timing']['round_trip_ms']) for r in res.episodes] == [3, 3]   # every request timed
    from robobench.viz import report
    html = report(res).read_text()
    assert 'Policy latency (ms)' in html and 'round trip' in html and 'p90' in html


def test_cogact_http_dead_server_and_refusals():
    "A dead server is ServerUnavailable (as over websocket) before any episode; a 500 is a ServerError with its text."
    from robobench.clients import ServerError, ServerUnavailable, make_client
    from robobench.core import free_port
    from robobench.envs import make_env
    with pytest.raises(ServerUnavailable, match='cannot reach policy server http://127.0.0.1'):
        make_client(f'http://127.0.0.1:{free_port()}', connect_timeout=2)
    with CogactLikeServer([1.0, 2.0]) as srv, make_env('toy/Point') as env:
        client = make_client(f'http://127.0.0.1:{srv.port}/wrong/path')
        client.env_spec = env.spec
        obs, _ = env.reset(seed=0)
        obs['splat'] = {'external_cam': np.zeros((8, 8, 3), np.uint8)}
        with pytest.raises(ServerError, match='404'):
            client.infer(obs, 'go')
        # the cogact layout over websocket meets an HTTP server: the message says to use -m http://
        with pytest.raises(ServerUnavailable, match=f'-m http://127.0.0.1:{srv.port}'):
            make_client(f'127.0.0.1:{srv.port}', layout='cogact', connect_timeout=3)


def test_a_short_chunk_is_an_error_not_executed_short(tmp_path):
    "openpi's LIBERO example asserts the chunk holds at least replan_steps actions: 4 where 5 run is an error episode."
    from tests._openpi_server import OpenpiLikeServer
    with OpenpiLikeServer(lambda req: {'actions': np.zeros((4, 7), np.float32)}) as srv:
        res = _evaluate('robosuite/Lift', f'127.0.0.1:{srv.port}', 'openpi-libero', tmp_path, episodes=2, max_steps=8)
    assert res.summary['errors'] == 2, res.episodes
    err = res.episodes[0]['error']
    assert err['type'] == 'ShortChunkError' and 'answered 4 action(s) where 5 are executed' in err['message']


@InferenceClient.register(client_name="WristCamClient")
class WristCamClient(InferenceClient):
    "A PolaRiS-style client that looks at the wrist camera (`obs['splat']['wrist_cam']`)."
    def __init__(self, action_dim: int = 7): self.action_dim = action_dim
    def infer(self, obs, instruction, return_viz=False):
        return np.zeros(self.action_dim, np.float32) + 0 * obs['splat']['wrist_cam'].mean(), None
    def reset(self): pass


@pytest.mark.parametrize('how', ['layout', 'polaris'])
def test_a_missing_camera_stops_before_the_first_episode(tmp_path, how):
    """The DROID layout, or a PolaRiS client, on ManiSkill's default robot (no wrist camera): exit 2 before the first
    episode, one line naming --splat-cameras and the robot that has one."""
    from tests._openpi_server import OpenpiLikeServer
    requests = []
    with OpenpiLikeServer(lambda req: requests.append(1) or {'actions': np.zeros((8, 8), np.float32)}) as srv:
        policy = (['-m', f'127.0.0.1:{srv.port}', '--policy.layout', 'openpi-droid'] if how == 'layout' else
                  ['--policy.client', 'tests.test_conventions:WristCamClient', '--policy.action_dim', '8'])
        r = subprocess.run([ROBOBENCH, 'eval', '-e', 'maniskill/PickCube-v1', *policy, '--episodes', '2',
                            '--max-steps', '5', '--no-video', '--run-folder', str(tmp_path / 'run'),
                            '--env-kwargs', '{"control_mode": "pd_joint_vel"}'],
                           capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = [line for line in r.stderr.splitlines() if 'wrist_cam' in line]
    assert lines and '--splat-cameras' in lines[0] and 'panda_wristcam' in lines[0], r.stderr[-2000:]
    assert not requests                                                      # nothing was asked of the policy
    episodes = tmp_path / 'run' / 'episodes.jsonl'
    assert not episodes.exists() or not episodes.read_text().strip()


def test_the_readme_aloha_line_runs_on_transfer_cube(tmp_path):
    "The README's openpi-aloha line, pointed at an aloha_sim-style server: exit 0, a request every 10 steps."
    import re, shlex
    from tests._openpi_server import OpenpiLikeServer
    readme = (Path(__file__).resolve().parent.parent / 'README.md').read_text()
    line = next(ln for ln in readme.splitlines() if ln.startswith('robobench eval') and 'openpi-aloha' in ln)
    n = []
    def aloha_server(req):
        assert sorted(req) == ['images', 'state'] and sorted(req['images']) == ['cam_high']
        n.append(1); return {'actions': np.tile(req['state'], (50, 1)).astype(np.float32)}
    with OpenpiLikeServer(aloha_server) as srv:
        args = shlex.split(re.sub(r'\s+#.*$', '', line).replace('HOST:8000', f'127.0.0.1:{srv.port}'))
        r = subprocess.run([ROBOBENCH, *args[1:], '--episodes', '1', '--max-steps', '20', '--no-video',
                            '--run-folder', str(tmp_path / 'run')], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(n) == 2 and 'aloha/TransferCube' in line


def test_a_missing_camera_stops_process_workers_too(tmp_path):
    "With worker processes the first episode's missing camera stops the run (RobobenchError), no episode recorded."
    from robobench.core import RobobenchError
    from robobench.evaluation import evaluate
    with pytest.raises(RobobenchError, match='--splat-cameras'):
        evaluate('toy/Point', 'tests.test_conventions:WristCamClient', episodes=3, workers=2, max_steps=3,
                 client_kwargs={'action_dim': 2}, run_folder=tmp_path, progress=False, video=False)
    episodes = tmp_path / 'episodes.jsonl'
    assert not episodes.exists() or not episodes.read_text().strip()
