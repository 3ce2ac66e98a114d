"""`POST /livekit/webhook`: LiveKit's webhooks, verified with livekit-api, answered at once, handled after.

The server sends each event with `Authorization: <JWT>` (signed with the API key and secret, its `sha256` claim the
body's hash) and does not retry a 4xx, so a forged or tampered request gets 401 and a body we cannot use gets 400.
An accepted event only names a room for supervision to look at; the answer never waits for that look.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from .observability import Metrics
from .starting import WEBHOOK_PATH
from .supervisor import Supervisor

if TYPE_CHECKING:  # livekit-api is loaded with the gateway, when LiveKit is first called or a webhook comes
    from .livekit_gateway import LiveKitGateway

log = logging.getLogger(__name__)

__all__ = ["WEBHOOK_PATH", "webhook_handler"]
MAX_BODY = 1024 * 1024  # LiveKit's events are a few kB; anything near this is not one
BODY_TIMEOUT = 10.0


def webhook_handler(
    gateway: LiveKitGateway, supervisor: Supervisor | None, metrics: Metrics | None = None
) -> Callable[[web.Request], Awaitable[web.Response]]:
    def refused(reason: str, status: int, text: str) -> web.Response:
        if metrics is not None:
            metrics.webhook_refused(reason)
        return web.Response(status=status, text=text)

    async def receive(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY:
            log.warning(
                "webhook refused: a body of %d bytes is over the %d-byte limit", request.content_length, MAX_BODY
            )
            return refused("too_large", 413, "body too large")
        try:
            async with asyncio.timeout(BODY_TIMEOUT):  # a body that trickles in holds nothing for long
                raw = await request.content.read(MAX_BODY + 1)
        except TimeoutError:
            log.warning("webhook refused: its body did not arrive within %g s", BODY_TIMEOUT)
            return refused("too_slow", 408, "body too slow")
        if len(raw) > MAX_BODY:
            log.warning("webhook refused: its body is over the %d-byte limit", MAX_BODY)
            return refused("too_large", 413, "body too large")
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            log.warning("webhook refused: its body is not UTF-8 text")
            return refused("not_utf8", 400, "body is not UTF-8")
        authorization = request.headers.get("Authorization", "")
        if not authorization:
            log.warning("webhook refused: no Authorization header (is this LiveKit, with webhook.api_key set?)")
            return refused("no_authorization", 401, "unauthorized")
        from .livekit_gateway import WebhookIgnored, WebhookRejected

        try:
            event = gateway.webhook_event(body, authorization)
        except WebhookRejected as exc:
            log.warning(
                "webhook refused (%s): it was not signed with this bot's LIVEKIT_API_KEY and LIVEKIT_API_SECRET, or "
                "its body was changed; webhook.api_key in livekit.yaml must be the bot's key",
                exc,
            )
            return refused("bad_signature", 401, "unauthorized")
        except WebhookIgnored as exc:
            log.warning("webhook ignored: %s", exc)
            return refused("not_an_event", 400, "not a LiveKit event")
        if metrics is not None:
            metrics.webhook_received(event.event)
        if supervisor is None:
            log.debug("webhook %s for %s ignored: watch.enabled is false", event.event, event.room)
        else:
            supervisor.receive(event)
        return web.Response(status=200, text="ok")

    return receive
