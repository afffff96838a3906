"""An S3 endpoint that throttles: a reverse proxy in front of the test's SeaweedFS, on loopback.

It forwards every request unchanged (the Host header too, so the client's signatures hold) while
the rate of requests stays within ``rate`` per second (a token bucket holding a second's worth),
and answers the rest as S3 does when a prefix's request rate is exceeded: ``503 SlowDown``. It
counts what it forwarded and what it refused.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from aiohttp import ClientSession, web

SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
#: Hop-by-hop headers a proxy must not pass on.
HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer", "upgrade"}


class ThrottlingProxy:
    """A throttling S3 front for ``upstream`` (``http://127.0.0.1:port``); ``start()`` returns its endpoint."""

    def __init__(self, upstream: str, rate: float) -> None:
        self.upstream = upstream.rstrip("/")
        self.rate = rate
        self.tokens = rate
        self.refilled = time.monotonic()
        self.forwarded = 0
        self.refused = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.port = 0
        self.runner: web.AppRunner | None = None

    def start(self) -> str:
        self.thread.start()
        if not self.ready.wait(30):
            raise RuntimeError("the throttling proxy did not start")
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)

    def _take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.refilled) * self.rate)
        self.refilled = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if not self._take():
            self.refused += 1
            return web.Response(status=503, body=SLOWDOWN, content_type="application/xml")
        self.forwarded += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        assert self.session is not None
        async with self.session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body, allow_redirects=False
        ) as upstream:
            data = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP}
            return web.Response(status=upstream.status, body=data, headers=out)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self.session: ClientSession | None = ClientSession(auto_decompress=False)
            app = web.Application(client_max_size=1 << 30)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self.runner = web.AppRunner(app, access_log=None)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            server: Any = site._server
            self.port = server.sockets[0].getsockname()[1]
            self.ready.set()

        self.loop.run_until_complete(main())
        self.loop.run_forever()
