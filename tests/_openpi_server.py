"""A policy server that behaves as openpi's `WebsocketPolicyServer` does (written for the tests, not copied): on connect
msgpack(metadata) (`{}` by default), then one packed reply per request with `server_timing` added; when the policy
raises, a text frame with the traceback, then close code 1011."""
import asyncio, threading, time, traceback


class OpenpiLikeServer:
    "Run `infer(obs) -> dict` behind openpi's wire protocol on 127.0.0.1 in a background thread (a context manager)."
    def __init__(self, infer, metadata: dict | None = None):
        from robobench.core import free_port
        self.infer, self.metadata, self.port = infer, metadata or {}, free_port()
        self.host, self._stop, self._thread = '127.0.0.1', threading.Event(), None

    async def _handler(self, ws):
        from openpi_client import msgpack_numpy
        import websockets
        packer = msgpack_numpy.Packer()
        await ws.send(packer.pack(self.metadata))
        while True:
            try: msg = await ws.recv()
            except websockets.ConnectionClosed: return
            t0 = time.monotonic()
            try:
                out = dict(self.infer(msgpack_numpy.unpackb(msg)))
                out['server_timing'] = {'infer_ms': (time.monotonic() - t0) * 1000}
                await ws.send(packer.pack(out))
            except Exception:
                await ws.send(traceback.format_exc())
                await ws.close(code=1011, reason='Internal server error. Traceback included in previous frame.')
                return

    def _run(self):
        from websockets.asyncio.server import serve
        async def main():
            async with serve(self._handler, self.host, self.port, compression=None, max_size=None):
                while not self._stop.is_set(): await asyncio.sleep(0.02)
        asyncio.run(main())

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True); self._thread.start()
        import socket
        for _ in range(250):
            try: socket.create_connection((self.host, self.port), timeout=0.2).close(); return self
            except OSError: time.sleep(0.02)
        raise RuntimeError('openpi-like server did not start')

    def __exit__(self, *a):
        self._stop.set(); self._thread.join(5)
