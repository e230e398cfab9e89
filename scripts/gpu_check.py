"""CUDA paths end to end on a GPU machine: `robobench train --device cuda` (tiny ACT on toy/Point demos, periodic eval
through the local client) and `robobench serve --device cuda` (openpi's own client: metadata, actions, a 1e39 input
refused after the cast to float32, still serving, an evaluation over the websocket). `python scripts/gpu_check.py cpu`
runs the same here. On a bare CUDA machine with torch only, put the pure-Python packages of .venv (lerobot, datasets,
draccus, gymnasium, websockets, openpi_client, fastcore, dill, multiprocess, mergedeep, termcolor, jsonlines, toml,
typing_inspect, farama_notifications) and an `av` wheel on PYTHONPATH (about 55 MB)."""
import json, subprocess, sys, time
import numpy as np
DEV = sys.argv[1] if len(sys.argv) > 1 else 'cuda'
PY = [sys.executable, '-c', 'import sys; from robobench.cli import main; sys.exit(main(sys.argv[1:]))']
TINY = ['--policy.dim_model=64', '--policy.dim_feedforward=128', '--policy.n_heads=2', '--policy.n_encoder_layers=1',
        '--policy.n_decoder_layers=1', '--policy.use_vae=false']
import torch
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else '')
from robobench.collect import collect
t = time.time(); collect('toy/Point', 20, '/tmp/gc/d/point', cameras=[], progress=False)
print(f'collect {time.time() - t:.1f}s')
t = time.time()
r = subprocess.run(PY + ['train', '--repo-ids', 'point', '--root', '/tmp/gc/d', '--policy', 'act', '--env', 'toy/Point',
                         '--training-steps', '300', '--eval-freq', '150', '--eval-episodes', '10', '--batch-size', '32',
                         '--device', DEV, '--output-dir', '/tmp/gc/ck',
                         '--action-chunk-size', '5', '--n-action-steps', '5', *TINY], capture_output=True, text=True)
print(f'train rc={r.returncode} {time.time() - t:.1f}s')
print('\n'.join(line for line in r.stdout.splitlines()
                if 'Evaluation' in line or 'Done' in line or 'Device' in line or 'device' in line))
print(r.stderr[-1500:] if r.returncode else '')
ready = '/tmp/gc/ready.json'
srv = subprocess.Popen(PY + ['serve', '-m', '/tmp/gc/ck/final_model', '--device', DEV, '--port', '0',
                             '--ready-file', ready],
                       stdout=open('/tmp/gc/serve.log', 'w'), stderr=subprocess.STDOUT)
from robobench.server import http_get
t0 = time.time(); port = None
while time.time() - t0 < 120:
    try:
        port = json.load(open(ready))['port']
        if http_get('127.0.0.1', port)[0] == 200: break
    except Exception: pass
    time.sleep(0.2)
print('serve ready', port, f'{time.time() - t0:.1f}s')
from openpi_client.websocket_client_policy import WebsocketClientPolicy
c = WebsocketClientPolicy(host='127.0.0.1', port=port)
md = c.get_server_metadata()
print('metadata', {k: md.get(k) for k in ('policy_type', 'input_features', 'action_dim', 'n_action_steps', 'limits')})
obs = {'observation.state': np.array([0.3, -0.2], np.float32), 'observation.environment_state': np.zeros(2, np.float32),
       'task': 'x'}
a = c.infer(obs)['actions']; print('actions', a.shape, a.dtype, np.isfinite(a).all())
lat = []
for _ in range(200):
    t = time.perf_counter(); c.infer(obs); lat.append(time.perf_counter() - t)
print(f'round trip median {1e3 * np.median(lat):.2f} ms (p90 {1e3 * np.percentile(lat, 90):.2f})')
try: c.infer({**obs, 'observation.state': np.array([1e39, 0.0])}); print('BAD: 1e39 answered normally')
except RuntimeError as e: print('1e39 ->', str(e).splitlines()[-1][:160])
a = c.infer(obs)['actions']; print('after bad request, still serving:', np.isfinite(a).all())
from robobench.evaluation import evaluate
res = evaluate('toy/Point', f'127.0.0.1:{port}', 20, start_seed=1000, progress=False, video=False)
print('eval over websocket (cuda server):', res.summary['successes'], '/', res.summary['episodes'],
      'errors', res.summary['errors'])
srv.terminate(); srv.wait(20); print('serve exit', srv.returncode)
