"""The LiveKit server's webhook sender, as the stand-in uses it.

What it encodes (reference: livekit-webhooks.md §1):

* Each event is POSTed as protojson (camelCase, enums as names, zero values left out, int64 as strings) with
  ``Authorization: <JWT>`` (no "Bearer "), ``Content-Type: application/webhook+json`` and ``User-Agent: LiveKit``.
  The JWT is an ``AccessToken`` of the server's key with a 5-minute ttl and the claim ``sha256`` =
  base64(SHA-256(body)).
* One FIFO per (URL, room name), one sender each, strictly one request at a time, retries included. Connection
  errors, 429 and 5xx except 501 are retried, up to 5 attempts, after the configured delays (the real server:
  1, 2, 4, 8 s); ``Retry-After`` on 429/503 replaces the delay, capped at the largest configured delay (the real
  cap is 30 s). Any other 4xx is final. There is no overall request timeout: a receiver that hangs blocks its
  room's queue, and only that one.
* Best effort, not at-least-once: ``drop`` events are never sent; ``duplicates`` sends each event again after
  it succeeded (same id and body, as a retry after a timeout does).

Not modelled: the 30 s max age and the 200-event queue depth (events are dropped only when told to).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import aiohttp
from google.protobuf import json_format
from livekit.api.access_token import AccessToken
from livekit.protocol.webhook import WebhookEvent

__all__ = ["CONTENT_TYPE", "WebhookDelivery", "WebhookSender", "sign_webhook"]

CONTENT_TYPE = "application/webhook+json"
USER_AGENT = "LiveKit"
TOKEN_TTL = timedelta(minutes=5)
MAX_ATTEMPTS = 5
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4)


def body_sha256(body: str) -> str:
    """base64 (standard alphabet) of SHA-256 of the body, as the server puts it in the token."""
    return base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()


def sign_webhook(
    body: str,
    api_key: str,
    api_secret: str,
    *,
    valid_for: timedelta = TOKEN_TTL,
    sha256: str | None = None,
) -> str:
    """The ``Authorization`` value the server would send with ``body``.

    ``sha256``: None for the body's real hash, "" for a token without the claim, or any other value (a hash of
    another body). A negative ``valid_for`` gives an expired token.
    """
    token = AccessToken(api_key, api_secret).with_ttl(valid_for)
    claim = body_sha256(body) if sha256 is None else sha256
    if claim:
        token = token.with_sha256(claim)
    return token.to_jwt()


def serialize_event(event: WebhookEvent) -> str:
    # protojson as the server marshals it: camelCase names, enums as names, zero values left out.
    return json_format.MessageToJson(event, indent=None)


@dataclass
class WebhookDelivery:
    """One HTTP attempt: ``status`` is the answer's HTTP status, 0 for a connection error."""

    url: str
    event: str
    id: str
    room: str
    status: int
    attempt: int
    body: str
    headers: dict[str, str]


@dataclass
class _Item:
    url: str
    event: WebhookEvent
    body: str
    duplicate: bool


@dataclass
class _Queue:
    items: deque[_Item] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None


def _retryable(status: int) -> bool:
    # go-retryablehttp baseRetryPolicy: connection errors, 429, 5xx except 501. reference: livekit-webhooks.md §1
    return status == 0 or status == 429 or (status >= 500 and status != 501)


class WebhookSender:
    """Per-(URL, room) FIFO queues that POST signed events. ``changed`` is called after every state change."""

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        *,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        changed: Callable[[], None] = lambda: None,
    ) -> None:
        if len(retry_delays) < MAX_ATTEMPTS - 1:
            raise ValueError(f"retry_delays needs {MAX_ATTEMPTS - 1} delays, one before each retry")
        self.api_key = api_key
        self.api_secret = api_secret
        self.retry_delays = tuple(retry_delays)
        self.urls: list[str] = []
        self.deliveries: list[WebhookDelivery] = []
        self._changed = changed
        self._queues: dict[tuple[str, str], _Queue] = {}
        self._pending = 0  # events queued or in flight
        self._session: aiohttp.ClientSession | None = None
        self._stopped = False

    @property
    def idle(self) -> bool:
        return self._pending == 0

    def send(self, event: WebhookEvent, *, duplicate: bool = False) -> None:
        """Queue ``event`` for every URL (nothing happens without a URL)."""
        if self._stopped or not self.urls:
            return
        body = serialize_event(event)
        for url in self.urls:
            # reference: livekit-webhooks.md §1 (EventKey: the room name for room and participant events)
            queue = self._queues.setdefault((url, event.room.name), _Queue())
            queue.items.append(_Item(url, event, body, duplicate))
            self._pending += 1
            if queue.task is None:
                name = f"webhook-sender {url} {event.room.name}"
                queue.task = asyncio.get_running_loop().create_task(self._drain(queue), name=name)
        self._changed()

    async def stop(self) -> None:
        """Cancel every sender (queued events are lost, as on a server restart) and close the HTTP session."""
        self._stopped = True
        tasks = [q.task for q in self._queues.values() if q.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._queues.clear()
        self._pending = 0
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
        self._changed()

    async def _drain(self, queue: _Queue) -> None:
        try:
            while queue.items:
                item = queue.items.popleft()
                try:
                    await self._deliver(item)
                finally:
                    self._pending -= 1
                    self._changed()
        finally:
            queue.task = None

    async def _deliver(self, item: _Item) -> None:
        # Signed once per event: a retry resends the same request. reference: livekit-webhooks.md §1 (send())
        headers = {
            "Authorization": sign_webhook(item.body, self.api_key, self.api_secret),
            "Content-Type": CONTENT_TYPE,
            "User-Agent": USER_AGENT,
        }
        attempt = 0
        succeeded = False
        while attempt < MAX_ATTEMPTS:
            attempt += 1
            status, retry_after = await self._post(item, headers)
            self.deliveries.append(
                WebhookDelivery(
                    url=item.url,
                    event=item.event.event,
                    id=item.event.id,
                    room=item.event.room.name,
                    status=status,
                    attempt=attempt,
                    body=item.body,
                    headers=dict(headers),
                )
            )
            self._changed()
            if 200 <= status < 300:
                if item.duplicate and not succeeded and attempt < MAX_ATTEMPTS:
                    # The server timed out waiting although the handler ran: the same request goes again.
                    succeeded = True
                    continue
                return
            if not _retryable(status) or attempt == MAX_ATTEMPTS:
                return  # a final 4xx, or giving up after 5 attempts
            delay = self.retry_delays[attempt - 1]
            if retry_after is not None and status in (429, 503):
                delay = min(retry_after, max(self.retry_delays))
            await asyncio.sleep(delay)

    async def _post(self, item: _Item, headers: dict[str, str]) -> tuple[int, float | None]:
        if self._session is None:
            # No overall timeout, as the server's pooled client. reference: livekit-webhooks.md §1 (Timeouts)
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        try:
            async with self._session.post(item.url, data=item.body.encode(), headers=headers) as resp:
                await resp.read()
                retry_after: float | None = None
                with contextlib.suppress(ValueError):
                    retry_after = max(0.0, float(resp.headers.get("Retry-After", "")))
                return resp.status, retry_after
        except (aiohttp.ClientError, OSError):
            return 0, None
