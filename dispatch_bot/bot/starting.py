"""`serve`'s port, open as soon as the audit database is: /healthz answers while the rest of the bot loads.

`serve` opens its database, checks its Slack tokens and listens; only then does it import Bolt, prometheus-client
and the commands, in a thread so that /healthz is answered meanwhile (livekit-api and protobuf follow once the bot
is ready, before supervision's first poll). Until the bot is ready, Slack's requests, LiveKit's webhooks and
/metrics wait for it (a fraction of a second). Commands a previous run left unfinished are settled before it is
ready, so before any new command runs; when there are any, they are settled before the port opens. /healthz means
what it always means: the audit database takes a write and, in Socket Mode, the connection to Slack is up (it is
not yet while the bot loads).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from aiohttp import web

from .audit_store import AuditStore
from .config import Settings
from .http_guard import EVENTS_PATH, SlackRequestGuard

WEBHOOK_PATH = "/livekit/webhook"
SOCKET_NOT_YET = "Slack's Socket Mode connection is not open yet; the bot is starting"


class Endpoints(Protocol):
    """What the port serves; the Slack transport once the bot is loaded."""

    async def events(self, request: web.Request) -> web.Response: ...

    async def webhook(self, request: web.Request) -> web.Response: ...

    async def healthz(self, request: web.Request) -> web.Response: ...

    async def metrics(self, request: web.Request) -> web.Response: ...


def serve_web_app(endpoints: Endpoints, settings: Settings, *, slack_events: bool) -> web.Application:
    """POST /slack/events (signed requests only; HTTP mode), POST /livekit/webhook, GET /healthz and /metrics."""
    application = web.Application()
    if slack_events:  # ops: signature, timestamp, replay and body checks before Bolt (bot/http_guard.py)
        guard = SlackRequestGuard(settings.slack_signing_secret)
        application.middlewares.append(guard.middleware)
        application.router.add_post(EVENTS_PATH, endpoints.events)
    application.router.add_post(WEBHOOK_PATH, endpoints.webhook)
    application.router.add_get("/healthz", endpoints.healthz)
    application.router.add_get("/metrics", endpoints.metrics)
    return application


def health_response(problems: list[str]) -> web.Response:
    if problems:
        return web.json_response({"ok": False, "reason": "; ".join(problems)}, status=503)
    return web.json_response({"ok": True})


async def database_problem(settings: Settings, audit: AuditStore) -> str | None:
    """Why the audit database does not take a write now, as /healthz says it; None when it does."""
    why = await audit.writable()
    return None if why is None else f"the audit database {settings.database} is not writable ({why})"


def _import_the_rest(socket_mode: bool) -> None:
    import prometheus_client  # noqa: F401

    from . import slack_app  # noqa: F401  Bolt, the commands, the runtime

    if socket_mode:
        import slack_bolt.adapter.socket_mode.async_handler  # noqa: F401


async def load_the_rest(*, socket_mode: bool) -> None:
    """Import what the bot needs beyond the port, in a thread: the event loop answers /healthz meanwhile."""
    await asyncio.to_thread(_import_the_rest, socket_mode)


class StartingBot:
    """The port's endpoints while the bot loads: /healthz from the database, everything else once it is ready."""

    def __init__(self, settings: Settings, audit: AuditStore, *, socket_mode: bool) -> None:
        self.settings = settings
        self.audit = audit
        self.socket_mode = socket_mode
        self._bot: Endpoints | None = None
        self._ready = asyncio.Event()

    def ready(self, bot: Endpoints) -> None:
        """The bot is loaded and the commands left unfinished are settled: requests go to it from now."""
        self._bot = bot
        self._ready.set()

    async def _loaded(self) -> Endpoints:
        await self._ready.wait()
        assert self._bot is not None
        return self._bot

    async def events(self, request: web.Request) -> web.Response:
        return await (await self._loaded()).events(request)

    async def webhook(self, request: web.Request) -> web.Response:
        return await (await self._loaded()).webhook(request)

    async def metrics(self, request: web.Request) -> web.Response:
        return await (await self._loaded()).metrics(request)

    async def healthz(self, request: web.Request) -> web.Response:
        if self._bot is not None:
            return await self._bot.healthz(request)
        problems = [SOCKET_NOT_YET] if self.socket_mode else []
        database = await database_problem(self.settings, self.audit)
        if database is not None:
            problems.append(database)
        return health_response(problems)
