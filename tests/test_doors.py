"""Issue 26 (doors): the client decodes the server's frames with the server's budget, duplicate keys are refused,
admission cannot be starved by one peer's idle connections -- real websockets on 127.0.0.1, the real openpi_client,
real `robobench serve` / `robobench eval` child processes (no mocks)."""
import asyncio, json, socket, subprocess, sys, threading, time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import websockets
from websockets.sync.client import connect
from openpi_client import msgpack_numpy

from robobench.server import http_get

pytestmark = [pytest.mark.net, pytest.mark.filterwarnings('ignore::DeprecationWarning')]
CLI = [sys.executable, '-c', 'import sys; from robobench.cli import main; sys.exit(main(sys.argv[1:]))']
GiB = 2**30


def _status(pid, key):
    "A /proc/PID/status field (VmRSS, VmHWM...) in MiB."
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith(key + ':'): return int(line.split()[1]) / 1024
    raise KeyError(key)


# -- a hostile policy server (the websockets library, in this process) -------------------------------------------------
VOID = msgpack.packb({'n_action_steps': {b'__npgeneric__': True, b'data': 2**31 - 1, b'dtype': '|V1'}})
assert len(VOID) < 80   # np.void(2**31 - 1): 2 GiB of zeros for openpi's own unpackb
HUGE_ARRAY = b'\x81\xa5input\xdd\xff\xff\xff\xff'   # a map whose value claims 4 G entries (5 bytes of header)
HUGE_NDARRAY = msgpack.packb({'actions': {b'__ndarray__': True, b'data': b'\0' * 8, b'dtype': '<f4',
                                          b'shape': [2**31, 2**10]}})   # claims 8 TiB
DUP_KEYS = b'\x81\xa7actions\xdc\x00\x50' + (b'\xdf' + (99_999).to_bytes(4, 'big') + b'\xa0\xc0' * 99_999) * 80


class EvilServer:
    "Sends `metadata` as the first frame, then answers every request with `reply` (in a background thread)."
    def __init__(self, metadata: bytes, reply: bytes | None = None):
        self.metadata, self.reply = metadata, reply
        self.port, self._ready = None, threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _handler(self, ws):
        await ws.send(self.metadata)
        async for _ in ws: await ws.send(self.reply)

    async def _main(self):
        self._stop = asyncio.Event()
        async with websockets.serve(self._handler, '127.0.0.1', 0, max_size=None, compression=None) as srv:
            self.port = srv.sockets[0].getsockname()[1]; self._ready.set()
            await self._stop.wait()

    def __enter__(self):
        self._thread.start(); assert self._ready.wait(10); return self

    def __exit__(self, *a):
        pass   # a daemon thread: ends with the test process


# the eval child reports its own peak RSS: VmHWM, which exec resets (ru_maxrss keeps the RSS pytest had when it forked)
CLI_PEAK = [sys.executable, '-c', 'import re, sys\nfrom pathlib import Path\nfrom robobench.cli import main\n'
            'try: code = main(sys.argv[2:])\n'
            'finally: Path(sys.argv[1]).write_text(re.search(r"VmHWM:\\s+(\\d+)", '
            'Path("/proc/self/status").read_text()).group(1))\n'
            'sys.exit(code)']


def _eval(port, tmp_path, name):
    run, peak_file = tmp_path / name, tmp_path / f'{name}.peak'
    r = subprocess.run(CLI_PEAK + [str(peak_file), 'eval', '-e', 'toy/Point', '-m', f'127.0.0.1:{port}',
                                   '--episodes', '1', '--max-steps', '3', '--run-folder', str(run)],
                       capture_output=True, text=True, timeout=120)
    peak = int(peak_file.read_text()) * 1024   # bytes
    return r, run, peak


@pytest.mark.parametrize('frame', [VOID, HUGE_ARRAY, HUGE_NDARRAY],
                         ids=['void-2GiB', 'array-4G-entries', 'ndarray-8TiB'])
def test_eval_against_a_metadata_bomb_exits_2_in_one_line_with_bounded_memory(frame, tmp_path):
    with EvilServer(frame) as evil:
        t = time.monotonic()
        r, run, peak = _eval(evil.port, tmp_path, 'run')
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and 'Traceback' not in r.stderr, r.stderr
    assert lines[0].startswith('robobench eval: error: policy server ws://127.0.0.1:') and 'metadata frame' in lines[0]
    assert 'refuses' in lines[0] and 'Fix: ' in lines[0], lines[0]
    assert peak < 2 * GiB, f'peak RSS {peak / GiB:.2f} GiB'
    assert time.monotonic() - t < 60
    assert not run.exists()   # a failure before the first episode leaves no run folder


@pytest.mark.parametrize('frame', [VOID, HUGE_NDARRAY, DUP_KEYS], ids=['void-2GiB', 'ndarray-8TiB', 'duplicate-keys'])
def test_eval_against_a_reply_bomb_records_an_error_episode_and_exits_3(frame, tmp_path):
    meta = msgpack_numpy.packb({'n_action_steps': 1, 'action_dim': 2, 'horizon': 1})
    with EvilServer(meta, frame) as evil:
        r, run, peak = _eval(evil.port, tmp_path, 'run')
    assert r.returncode == 3, (r.returncode, r.stderr[-2000:])
    eps = [json.loads(line) for line in (run / 'episodes.jsonl').read_text().splitlines()]
    assert len(eps) == 1 and eps[0]['error']['type'] == 'ServerFrameError', eps
    assert 'reply frame robobench refuses to decode' in eps[0]['error']['message']
    assert peak < 2 * GiB, f'peak RSS {peak / GiB:.2f} GiB'


def test_a_frame_over_the_clients_max_size_is_a_server_frame_error():
    from robobench.clients import OpenpiConnection, ServerFrameError
    with EvilServer(msgpack.packb({'blob': b'\0' * 2**20})) as evil:
        with pytest.raises(ServerFrameError, match="over the client's max_size"):
            OpenpiConnection('127.0.0.1', evil.port, max_size=2**19, connect_timeout=5)
        assert OpenpiConnection('127.0.0.1', evil.port, connect_timeout=5).metadata['blob'] == b'\0' * 2**20


# -- `robobench serve` in a child process ------------------------------------------------------------------------------
class ServeProc:
    "`robobench serve --port 0 ARGS` in a child process; `.port`, `.pid`, `.log()`."
    def __init__(self, tmp_path, *args):
        self.ready, self.log_path = tmp_path / 'ready.json', tmp_path / 'serve.log'
        self._log = open(self.log_path, 'w')
        self.proc = subprocess.Popen(CLI + ['serve', '--port', '0', '--ready-file', str(self.ready), *args],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120   # a loaded 2-core machine starts torch slowly
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()
            if self.ready.exists() and self.ready.read_text().strip():
                self.port = json.loads(self.ready.read_text())['port']
                try:
                    if http_get('127.0.0.1', self.port)[0] == 200: break
                except OSError: pass
            time.sleep(0.1)
        else: raise TimeoutError(self.log())
        self.pid = self.proc.pid

    def log(self): return self.log_path.read_text(errors='replace')

    def __enter__(self): return self

    def __exit__(self, *a):
        self.proc.terminate()
        try: self.proc.wait(10)
        except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait()
        self._log.close()


def _raw(port, **kw):
    ws = connect(f'ws://127.0.0.1:{port}', compression=None, max_size=None, open_timeout=5, **kw)
    msgpack_numpy.unpackb(ws.recv(timeout=5))  # metadata
    return ws


def test_duplicate_key_maps_are_refused_fast_by_a_running_server(tmp_path):
    with ServeProc(tmp_path, '--policy', 'scripted', '--env', 'toy/Point') as srv:
        ws = _raw(srv.port)
        assert len(DUP_KEYS) > 15 * 2**20 and len(DUP_KEYS) < 16 * 2**20   # under max_size (16 MiB)
        t = time.perf_counter()
        ws.send(DUP_KEYS)
        reply = ws.recv(timeout=30)
        dt = time.perf_counter() - t
        assert isinstance(reply, str) and reply.startswith('RequestError') and 'duplicate keys are refused' in reply
        assert dt < 1.0, f'{dt:.2f} s'
        few = b'\x82\xb1observation.state\xc0\xb1observation.state\xc0'   # two pairs, one key: refused too
        ws.send(few); assert 'repeats the key' in ws.recv(timeout=5)
        ws.close()


# -- admission that cannot be starved ----------------------------------------------------------------------------------
POINT_OBS = {'observation.state': np.zeros(2, np.float32), 'observation.environment_state': np.ones(2, np.float32)}


def test_64_idle_connections_from_one_process_cannot_lock_out_a_newcomer(tmp_path):
    from openpi_client.websocket_client_policy import WebsocketClientPolicy
    with ServeProc(tmp_path, '--policy', 'scripted', '--env', 'toy/Point') as srv:   # 64 slots, 32 per peer
        idle = []
        for _ in range(64):   # one local process takes every slot and never asks anything
            idle.append(_raw(srv.port)); time.sleep(0.002)
        assert http_get('127.0.0.1', srv.port)[0] == 200   # idle connections make room: a newcomer is admitted
        t = time.monotonic()
        c = WebsocketClientPolicy('127.0.0.1', srv.port)   # openpi's own client
        out = c.infer(POINT_OBS)
        dt = time.monotonic() - t
        assert out['actions'].shape[-1] == 2 and dt < 2.0, dt
        with pytest.raises(websockets.exceptions.ConnectionClosedOK) as e:   # the longest-idle one made room
            idle[0].recv(timeout=5)
        assert 'idle while the server was full' in e.value.rcvd.reason
        assert c.infer(POINT_OBS)['actions'].shape[-1] == 2   # the newcomer keeps its slot
        for _ in range(8):   # more newcomers from the same peer: each takes an idle slot, the busy client keeps its
            _raw(srv.port)
        assert c.infer(POINT_OBS)['actions'].shape[-1] == 2
        c._ws.close()
        for ws in idle: ws.close()
        assert 'closed the connection from 127.0.0.1 idle for' in srv.log()


def test_healthz_says_503_exactly_when_a_newcomer_would_be_refused():
    from robobench.policies import FeatureSpec, RandomPolicy
    from robobench.server import serve

    class Slow(RandomPolicy):
        def infer(self, obs):
            time.sleep(0.4); return super().infer(obs)
    ok = msgpack_numpy.packb({'observation.state': np.zeros(1, np.float32)})
    with serve(Slow(2, 2, input_features={'observation.state': FeatureSpec([1])}), max_connections=4,
               max_connections_per_peer=2, idle_timeout_s=60) as srv:
        conns = [_raw(srv.port) for _ in range(4)]   # over the per-peer share while slots are free: admitted
        assert http_get(srv.host, srv.port)[0] == 200
        for ws in conns: ws.send(ok)                 # a request in flight on every slot (4 x 0.4 s, one worker)
        time.sleep(0.1)
        status, body = http_get(srv.host, srv.port)
        assert status == 503 and 'busy' in body, body
        with pytest.raises(websockets.exceptions.InvalidStatus) as e:   # ...and a newcomer is refused, as it said
            _raw(srv.port)
        assert e.value.response.status_code == 503
        for ws in conns: assert msgpack_numpy.unpackb(ws.recv(timeout=10))['actions'].shape == (2, 2)
        assert http_get(srv.host, srv.port)[0] == 200   # all idle again: a newcomer would displace one
        new = _raw(srv.port)                            # ...and is admitted
        with pytest.raises(websockets.exceptions.ConnectionClosedOK):
            conns[0].recv(timeout=5)                     # the longest idle (answered first) made room
        new.send(ok); assert msgpack_numpy.unpackb(new.recv(timeout=5))['actions'].shape == (2, 2)
        for ws in [new, *conns[1:]]: ws.close()


def test_a_peer_that_never_answers_pings_is_closed_within_seconds():
    from robobench.policies import RandomPolicy
    from robobench.server import serve
    with serve(RandomPolicy(2, 2), ping_interval_s=0.5, ping_timeout_s=0.5) as srv:
        assert srv.metadata['limits']['ping_timeout_s'] == 0.5
        s = socket.create_connection((srv.host, srv.port))   # a websocket handshake, then silence (no pongs)
        s.sendall(b'GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
                  b'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n')
        assert s.recv(4096).startswith(b'HTTP/1.1 101')
        assert srv._server.n_connections == 1
        t = time.monotonic()
        while srv._server.n_connections and time.monotonic() - t < 10: time.sleep(0.1)
        assert srv._server.n_connections == 0 and time.monotonic() - t < 5, time.monotonic() - t
        s.close()
    from robobench.server import ServeConfig
    assert ServeConfig().ping_interval_s + ServeConfig().ping_timeout_s <= 15   # the default: gone within 15 s
