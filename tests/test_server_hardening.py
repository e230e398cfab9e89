"""Hardening of robobench.server (issue 13, parts 5-7): hostile frames, connection exhaustion, untrusted checkpoints and
one-line CLI errors -- real servers on 127.0.0.1, the real openpi_client, real child processes (no mocks)."""
import json, shutil, socket, subprocess, sys, time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import websockets.exceptions
from websockets.sync.client import connect
from openpi_client import msgpack_numpy
from openpi_client.websocket_client_policy import WebsocketClientPolicy

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_act import make_tiny_act, random_obs  # noqa: E402

from robobench.core import RobobenchError
from robobench.policies import FeatureSpec, LeRobotPolicy, RandomPolicy
from robobench.server import http_get, serve
from robobench.checkpoints import check_checkpoint

pytestmark = pytest.mark.net
ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, '-c', 'import sys; from robobench.cli import main; sys.exit(main(sys.argv[1:]))']


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    return make_tiny_act(tmp_path_factory.mktemp('act') / 'ckpt')


def _vm(pid, key):
    "VmRSS / VmHWM (peak resident) of a process, in MiB."
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith(key + ':'): return int(line.split()[1]) / 1024
    raise KeyError(key)


def _raw(srv):
    ws = connect(f'ws://{srv.host}:{srv.port}', compression=None, max_size=None, open_timeout=5)
    msgpack_numpy.unpackb(ws.recv(timeout=5))  # metadata
    return ws


# -- (a) non-finite values never become a normal reply -----------------------------------------------------------------
@pytest.mark.slow
def test_nonfinite_input_after_cast_and_nonfinite_actions_are_error_replies(ckpt):
    obs = random_obs(np.random.default_rng(0))
    with serve(ckpt, device='cpu') as srv:  # `robobench serve -m ckpt` in a child process
        c = WebsocketClientPolicy(srv.host, srv.port)
        huge = {**obs, 'observation.state': np.array([1e39, 0, 0, 0])}  # finite float64, inf as the policy's float32
        with pytest.raises(RuntimeError,
                           match="'observation.state' holds NaN or inf after conversion to the policy's float32"):
            c.infer(huge)
        # finite float32 inputs that may overflow inside the model: error or finite actions
        for v in (3e38, 1e30, -3.4e38):
            try: a = c.infer({**obs, 'observation.state': np.full(4, v, np.float32)})['actions']
            except RuntimeError as e: assert 'non-finite actions' in str(e) or 'NaN or inf' in str(e), e
            else: assert np.isfinite(a).all(), a
        assert np.isfinite(c.infer(obs)['actions']).all()  # the same connection still serves
        c._ws.close()

    class NaNPolicy(RandomPolicy):
        def infer(self, o):
            out = super().infer(o)
            if o.get('task') == 'nan': out['actions'][0, 0] = np.nan
            return out
    with serve(NaNPolicy(2, 3, input_features={'observation.state': FeatureSpec([1])})) as srv:
        c = WebsocketClientPolicy(srv.host, srv.port)
        ok = {'observation.state': np.zeros(1, np.float32)}
        with pytest.raises(RuntimeError, match=r'PolicyOutputError: the policy returned non-finite actions \(1 of 6'):
            c.infer({**ok, 'task': 'nan'})
        assert c.infer(ok)['actions'].shape == (3, 2)  # the connection stays open
        c._ws.close()


# -- (b) decode bombs: refused before allocating, quickly, with bounded memory -----------------------------------------
def _bombs():
    void = msgpack.packb({'observation.state': {b'__npgeneric__': True, b'data': 2**31 - 1, b'dtype': '|V1'}})
    assert len(void) == 58  # np.void(2**31 - 1) would be 2 GiB of zeros
    n = 16 * 2**20 - 5
    flat = b'\xdd' + n.to_bytes(4, 'big') + b'\x80' * n  # one array32 of ~16.7 M empty maps (16 MiB, max_size)
    k, m = 200, 83_000  # 200 arrays of 83 000 empty maps: each under the per-container cap, together 16.6 M
    nested = b'\xdc' + k.to_bytes(2, 'big') + (b'\xdd' + m.to_bytes(4, 'big') + b'\x80' * m) * k
    big_bin = msgpack.packb({'observation.state': {b'__ndarray__': True, b'data': b'\0' * 12, b'dtype': '<f4',
                                                   b'shape': [2**40]}})  # claims 4 TiB
    sub = msgpack.packb({'observation.state': {b'__ndarray__': True, b'data': b'\0' * 12, b'dtype': '(3,)<f4',
                                               b'shape': [1]}})
    return {'void 2 GiB scalar': void, '16 MiB of empty maps': flat, 'nested empty maps': nested,
            'array claiming 4 TiB': big_bin, 'subarray dtype': sub}


@pytest.mark.slow
def test_decode_bombs_get_quick_error_replies_and_bounded_server_memory():
    # `robobench serve --policy random`
    srv = serve('random', subprocess_mode=True, action_dim=2, horizon=2, state_dim=3)
    try:
        ws = _raw(srv)
        ok = msgpack_numpy.packb({'observation.state': np.zeros(3, np.float32)})
        ws.send(ok); ws.recv(timeout=5)
        base = _vm(srv.pid, 'VmHWM')
        for name, frame in _bombs().items():
            t = time.perf_counter()
            ws.send(frame)
            reply = ws.recv(timeout=30)
            dt = time.perf_counter() - t
            assert isinstance(reply, str) and reply.startswith('RequestError'), (name, reply)
            assert dt < 2.0, f'{name}: {dt:.2f} s'
        peak = _vm(srv.pid, 'VmHWM') - base
        assert peak < 200, f'server peak RSS grew by {peak:.0f} MiB'
        ws.send(ok)  # still serving, on the same connection
        assert msgpack_numpy.unpackb(ws.recv(timeout=5))['actions'].shape == (2, 2)
        ws.close()
        print(f'bombs: server peak RSS +{peak:.0f} MiB')
    finally:
        srv.stop()


def test_bad_requests_are_logged_at_most_once_per_second_per_peer():
    with serve(RandomPolicy(2, 2, input_features={'observation.state': FeatureSpec([1])})) as srv:
        ws = _raw(srv)
        t = time.monotonic()
        for _ in range(300):
            ws.send(b'\xc1'); assert ws.recv(timeout=5).startswith('RequestError')
        dt = time.monotonic() - t
        time.sleep(1.1)
        ws.send(b'\xc1'); ws.recv(timeout=5)
        lines = [line for line in srv.logs().splitlines() if 'bad request from' in line]
        assert 1 <= len(lines) <= dt + 3, (len(lines), dt)
        assert 'similar line(s) from this peer not logged' in lines[-1]
        ws.close()


# -- (c) connection exhaustion: idle connections make room, idle timeout (admission policy: tests/test_doors.py) -------
def test_connection_caps_idle_connections_make_room_and_idle_timeout_frees_slots():
    pol = RandomPolicy(2, 2, input_features={'observation.state': FeatureSpec([1])})
    ok = {'observation.state': np.zeros(1, np.float32)}
    with serve(pol, max_connections=6, max_connections_per_peer=None, idle_timeout_s=1.0) as srv:
        assert srv.metadata['limits']['max_connections'] == 6 and srv.metadata['limits']['idle_timeout_s'] == 1.0
        idle = [_raw(srv) for _ in range(6)]                       # every slot held by a client that never asks
        assert http_get(srv.host, srv.port)[0] == 200               # ...yet a newcomer would be admitted:
        c = WebsocketClientPolicy(srv.host, srv.port)               # it takes the longest-idle connection's slot
        with pytest.raises(websockets.exceptions.ConnectionClosedOK):
            idle[0].recv(timeout=5)
        for _ in range(4):                                          # a busy client is never cut off as idle
            assert c.infer(ok)['actions'].shape == (2, 2); time.sleep(0.6)
        for ws in idle[1:]:                                         # meanwhile the server closed the idle ones itself
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                ws.recv(timeout=0.5)
        assert srv._server.n_connections == 1
        c._ws.close()
    with serve(pol, max_connections=3, max_connections_per_peer=2, idle_timeout_s=60) as srv:
        mine = [_raw(srv) for _ in range(3)]                        # a peer's share only counts once the server is full
        assert http_get(srv.host, srv.port)[0] == 200
        late = _raw(srv)                                            # full: the longest-idle one makes room
        with pytest.raises(websockets.exceptions.ConnectionClosedOK):
            mine[0].recv(timeout=5)
        for ws in (late, *mine[1:]): ws.close()


# -- untrusted checkpoints ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_checkpoint_naming_an_arbitrary_class_is_refused_unless_trusted(ckpt, tmp_path):
    d = tmp_path / 'evil'
    shutil.copytree(ckpt, d)
    marker = tmp_path / 'pwned'
    pre = json.loads((d / 'policy_preprocessor.json').read_text())
    pre['steps'].insert(0, {'class': 'subprocess.Popen', 'config': {'args': ['touch', str(marker)]}})
    (d / 'policy_preprocessor.json').write_text(json.dumps(pre))

    with pytest.raises(RobobenchError,
                       match="class 'subprocess.Popen' is not a registered LeRobot processor step") as e:
        LeRobotPolicy(d, device='cpu')
    assert '\n' not in str(e.value) and '--trust-remote-code' in str(e.value)
    with pytest.raises(RobobenchError, match='subprocess.Popen'):      # serve() -> a child `robobench serve -m d`
        serve(d, device='cpu', port=0)
    r = subprocess.run(CLI + ['serve', '-m', str(d), '--port', '0', '--device', 'cpu'], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and 'subprocess.Popen' in r.stderr, r.stderr
    time.sleep(0.5)
    assert not marker.exists()

    assert any('subprocess.Popen' in u for u in check_checkpoint(d, trust_remote_code=True))  # the refusal is lifted...
    try: LeRobotPolicy(d, device='cpu', trust_remote_code=True)  # ...and LeRobot really runs what the file names
    except Exception: pass
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline: time.sleep(0.1)
    assert marker.exists()


# -- one-line CLI errors -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_serve_cli_mistakes_exit_nonzero_with_one_line(ckpt, tmp_path):
    busy = socket.socket(); busy.bind(('127.0.0.1', 0)); busy.listen()
    port = busy.getsockname()[1]
    empty = tmp_path / 'empty'; empty.mkdir()
    trunc = tmp_path / 'trunc'; shutil.copytree(ckpt, trunc)
    w = (trunc / 'model.safetensors').read_bytes(); (trunc / 'model.safetensors').write_bytes(w[:len(w) // 2])
    corrupt = tmp_path / 'corrupt'; shutil.copytree(ckpt, corrupt)
    (corrupt / 'model.safetensors').write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00not json at all!' + w[24:])
    unknown = tmp_path / 'unknown'; shutil.copytree(ckpt, unknown)
    cfg = json.loads((unknown / 'config.json').read_text()); cfg['type'] = 'actt'
    (unknown / 'config.json').write_text(json.dumps(cfg))
    cases = {  # argv -> what the one line must say
        ('--policy', 'random', '--port', str(port)): f'port {port} on 127.0.0.1 is already in use',
        ('-m', str(ckpt), '--port', str(port)): 'already in use',  # refused before the model is loaded
        ('-m', str(tmp_path / 'nope'), '--port', '0'): 'does not exist',
        ('-m', str(empty), '--port', '0'): 'it is empty',
        ('-m', str(trunc), '--port', '0'): 'model.safetensors is truncated',
        ('-m', str(corrupt), '--port', '0'): 'model.safetensors is corrupt',
        ('-m', str(unknown), '--port', '0'): "unknown policy type 'actt'. Did you mean 'act'?",
    }
    procs = {}
    try:
        procs = {argv: subprocess.Popen(CLI + ['serve', *argv, '--device', 'cpu'], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True) for argv in cases}
        for argv, p in procs.items():
            out, err = p.communicate(timeout=180)
            lines = err.strip().splitlines()
            assert p.returncode == 2, (argv, p.returncode, err)
            assert len(lines) == 1 and 'Traceback' not in err, (argv, err)
            assert (lines[0].startswith('robobench serve: error: ') and cases[argv] in lines[0]
                    and 'Fix: ' in lines[0]), (argv, lines)
    finally:
        busy.close()
        for p in procs.values():
            if p.poll() is None: p.kill()
