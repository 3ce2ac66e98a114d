"""A reverse proxy in front of the LiveKit stand-in that can answer as proxies and load balancers do when they fail.

`await proxy.start()`, point LIVEKIT_URL at `proxy.url`, then `proxy.fail(503, times=1)` makes the next request
answer an HTML 503 page (with `Retry-After` if given) instead of reaching LiveKit; everything else is forwarded.
`await proxy.go_away()` closes its port and every connection (a client is refused), `await proxy.come_back()`
listens on the same port again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

HTML_PAGE = "<html><head><title>{status} {reason}</title></head><body><h1>{status} {reason}</h1>nginx</body></html>"


@dataclass
class _Failure:
    status: int
    body: str
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


class LiveKitProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.seen: list[tuple[str, int]] = []  # (path, status answered)
        self.authorizations: list[tuple[str, str]] = []  # (path, Authorization header) of every request
        self._failures: list[_Failure] = []
        self._always: _Failure | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    def fail(self, status: int, *, times: int | None = 1, retry_after: int | None = None, body: str | None = None,
             content_type: str = "text/html") -> None:  # fmt: skip
        """The next `times` requests (every one while `times` is None) get this answer instead of LiveKit's."""
        reason = {429: "Too Many Requests", 502: "Bad Gateway", 503: "Service Unavailable"}.get(status, "Error")
        page = body if body is not None else HTML_PAGE.format(status=status, reason=reason)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        failure = _Failure(status, page, content_type, headers)
        if times is None:
            self._always = failure
        else:
            self._failures.extend([failure] * times)

    def heal(self) -> None:
        self._failures.clear()
        self._always = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        await self._listen(0)
        assert self._runner is not None
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def _listen(self, port: int) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()

    async def go_away(self) -> None:
        """Nothing listens on the port any more, and open connections are closed: LiveKit is away."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def come_back(self) -> None:
        """Listen again on the same port, as a restarted server does."""
        await self._listen(int(self.url.rsplit(":", 1)[1]))

    async def stop(self) -> None:
        await self.go_away()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.authorizations.append((request.path, request.headers.get("Authorization", "")))
        failure = self._failures.pop(0) if self._failures else self._always
        if failure is not None:
            self.seen.append((request.path, failure.status))
            return web.Response(status=failure.status, text=failure.body, content_type=failure.content_type,
                                headers=failure.headers)  # fmt: skip
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")}
        async with self._session.request(request.method, self.upstream + request.path_qs, data=body,
                                         headers=headers) as upstream:  # fmt: skip
            payload = await upstream.read()
            self.seen.append((request.path, upstream.status))
            return web.Response(status=upstream.status, body=payload,
                                headers={"Content-Type": upstream.headers.get("Content-Type", "")})  # fmt: skip
