"""Issue 26.2: one memory budget for everything in flight across all connections (`robobench serve`, a child process).

8 connections x 8 pipelined 16 MiB frames (empty maps, duplicate-key maps) against a running server (a scripted policy,
and a LeRobot ACT checkpoint): its RSS grows by at most 150 MiB (VmHWM, the peak since the flood began, against VmRSS
before it), and a good client is answered meanwhile within LATENCY_S per request. Frames bigger than the whole budget
are still served."""
import sys, threading, time
from pathlib import Path

import numpy as np
import pytest
import websockets
from websockets.sync.client import connect

from tests.test_doors import CLI, ServeProc, _status  # noqa: F401 (one `robobench serve` child helper)

pytestmark = [pytest.mark.net, pytest.mark.filterwarnings('ignore::DeprecationWarning')]
MiB = 2**20
GROWTH_MIB, LATENCY_S = 150, 3.0   # issue 26's bound (measured +47..+57 MiB here, loaded 2-core machine)
FRAME = 16 * MiB - 64   # under max_size (16 MiB)
# an array of ~16 M empty maps; a sequence of empty maps (one object, then 16 MiB of trailing data)
EMPTY_ARRAY = b'\xdd' + (FRAME - 5).to_bytes(4, 'big') + b'\x80' * (FRAME - 5)
EMPTY_MAPS = b'\x80' * FRAME
# 80 maps of 99,999 copies of one key (items counted before keys collapse)
DUP_KEYS = b'\x81\xa7actions\xdc\x00\x50' + (b'\xdf' + (99_999).to_bytes(4, 'big') + b'\xa0\xc0' * 99_999) * 80
POINT_OBS = {'observation.state': np.zeros(2, np.float32), 'observation.environment_state': np.ones(2, np.float32)}


def _flood(port, frame, n, errors):
    "One connection: `n` pipelined frames (no reply awaited before the last is sent), then read the replies."
    try:
        with connect(f'ws://127.0.0.1:{port}', compression=None, max_size=None, open_timeout=30,
                     close_timeout=1) as ws:
            ws.recv(timeout=30)   # metadata
            for _ in range(n): ws.send(frame)
            for _ in range(n):
                reply = ws.recv(timeout=120)
                assert isinstance(reply, str) and reply.startswith('RequestError'), reply[:200]
    except websockets.ConnectionClosed: pass   # closed by the server (e.g. unanswered pings): fine, nothing leaked
    except Exception as e: errors.append(e)


def _reset_peak(pid):
    "Start VmHWM afresh (Linux: 5 > /proc/PID/clear_refs): the peak of the flood, not of loading a checkpoint."
    try: Path(f'/proc/{pid}/clear_refs').write_text('5')
    except OSError: pass   # not allowed here: VmHWM since start (loading included) is a stricter bound


@pytest.fixture(params=['scripted', 'act'])
def server_args(request, tmp_path_factory):
    "`robobench serve` arguments and a good request: the scripted toy/Point policy, or a tiny LeRobot ACT checkpoint."
    if request.param == 'scripted': return ['--policy', 'scripted', '--env', 'toy/Point'], POINT_OBS
    sys.path.insert(0, str(Path(__file__).parent))
    from _tiny_act import make_tiny_act, random_obs
    ckpt = make_tiny_act(tmp_path_factory.mktemp('act') / 'ckpt')
    return ['-m', str(ckpt), '--device', 'cpu'], random_obs(np.random.default_rng(0))


def test_pipelined_16mib_frames_from_8_connections_share_one_budget(tmp_path, server_args):
    from openpi_client.websocket_client_policy import WebsocketClientPolicy
    args, obs = server_args
    with ServeProc(tmp_path, *args) as srv:
        good = WebsocketClientPolicy('127.0.0.1', srv.port)
        for _ in range(20): good.infer(obs)   # warm: the server's steady state
        time.sleep(0.5)
        base = _status(srv.pid, 'VmRSS')
        _reset_peak(srv.pid)
        errors, frames = [], [EMPTY_ARRAY, EMPTY_MAPS, DUP_KEYS, DUP_KEYS] * 2
        floods = [threading.Thread(target=_flood, args=(srv.port, frames[i], 8, errors), daemon=True)
                  for i in range(8)]
        lat, peak = [], [base]
        for th in floods: th.start()
        t_end = time.monotonic() + 300
        while any(th.is_alive() for th in floods) and time.monotonic() < t_end:
            t = time.perf_counter()
            assert good.infer(obs)['actions'].ndim >= 1
            lat.append(time.perf_counter() - t)
            peak.append(_status(srv.pid, 'VmRSS'))
            time.sleep(0.02)
        for th in floods: th.join(5)
        assert not errors, errors[:3]
        assert not any(th.is_alive() for th in floods), 'the flood did not finish'
        hwm = _status(srv.pid, 'VmHWM')
        growth = max(hwm, max(peak)) - base
        print(f'server RSS {base:.0f} MiB -> peak {hwm:.0f} MiB (+{growth:.0f} MiB); good client: {len(lat)} requests, '
              f'max {max(lat) * 1000:.0f} ms, p50 {np.median(lat) * 1000:.1f} ms')
        assert growth <= GROWTH_MIB, f'+{growth:.0f} MiB'
        assert len(lat) >= 5 and max(lat) <= LATENCY_S, f'max latency {max(lat):.2f} s'
        assert good.infer(obs)['actions'].ndim >= 1
        assert srv.proc.poll() is None


def _send_big(port, n, replies, errors):
    "One connection: `n` pipelined valid 6 MiB requests, then their replies."
    from openpi_client import msgpack_numpy
    try:
        with connect(f'ws://127.0.0.1:{port}', compression=None, max_size=None, open_timeout=30) as ws:
            ws.recv(timeout=30)
            frame = msgpack_numpy.packb({'observation.image': np.ones((3, 512, 1024), np.float32)})
            for _ in range(n): ws.send(frame)
            for _ in range(n): replies.append(msgpack_numpy.unpackb(ws.recv(timeout=120)))
    except Exception as e: errors.append(e)


def test_frames_bigger_than_the_whole_budget_are_served(tmp_path):
    """--max-inflight-bytes 1 MiB, 4 connections x 2 pipelined 6 MiB requests: each is answered (no deadlock). A client
    whose frame waits (backpressure) cannot answer pings meanwhile (its pong is behind the frame's bytes in the TCP
    stream): the ping timeout is raised so that a loaded machine's slowness does not close it."""
    with ServeProc(tmp_path, '--policy', 'random', '--max-inflight-bytes', str(MiB), '--ping-timeout-s', '120') as srv:
        replies, errors = [], []
        ths = [threading.Thread(target=_send_big, args=(srv.port, 2, replies, errors), daemon=True) for _ in range(4)]
        for th in ths: th.start()
        for th in ths: th.join(180)
        assert not errors, errors[:3]
        assert len(replies) == 8 and all(r['actions'].shape == (10, 7) for r in replies)
        assert srv.proc.poll() is None
