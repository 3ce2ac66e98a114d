"""HTTP mode's front door: requests to /slack/events are checked here before Bolt sees them.

A timestamp that is not a number, a bad or stale signature, and a signed request seen before (a replay within
Slack's five-minute window) are refused with 401 and one short log line; a body that trickles in is cut off;
and the server closes connections that stay idle or send their headers too slowly.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from aiohttp import web
from slack_sdk.signature import Clock, SignatureVerifier

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
WINDOW = 300  # seconds: Slack's own limit on a request's age, which its verifier applies
MAX_REMEMBERED = 50_000  # accepted signatures kept for the window (a few MB at most)
BODY_TIMEOUT = 10.0  # seconds for a request's body to arrive once its headers have
IDLE_TIMEOUT = 15.0  # seconds a connection may stay idle or take to send a request's headers
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_REFUSED = {"error": "invalid request"}  # what Bolt answers to a bad signature

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SlackRequestGuard:
    """Checks Slack's signature itself (with slack_sdk's verifier) and remembers each accepted signature until it
    is too old for Slack's window anyway, so that the same signed request is refused the second time."""

    def __init__(
        self,
        signing_secret: str,
        *,
        max_remembered: int = MAX_REMEMBERED,
        body_timeout: float = BODY_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = signing_secret
        quiet_bolt_signature_log()
        self._max = max_remembered
        self._body_timeout = body_timeout
        self._clock = clock
        self._verifier = SignatureVerifier(signing_secret or "-", clock=_Clock(clock))
        self._seen: OrderedDict[str, int] = OrderedDict()  # signature -> its timestamp, oldest accepted first
        # When the memory is full, the oldest signature is forgotten and everything no newer than it is refused.
        self._floor = 0

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != EVENTS_PATH or request.method != "POST":
            return await handler(request)
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        try:
            async with asyncio.timeout(self._body_timeout):
                body = await request.read()
        except TimeoutError:
            log.warning("cut off a request to %s from %s: its body took over %gs", EVENTS_PATH, _peer(request),
                        self._body_timeout)  # fmt: skip
            return web.json_response({"error": "request timeout"}, status=408)
        if _is_ssl_check(body):
            return await handler(request)  # Slack's certificate probe: Bolt answers it with an empty 200, nothing runs
        if not self._secret:
            return _refuse(request, "no signing secret is configured")
        if not _TIMESTAMP.fullmatch(timestamp):
            return _refuse(request, "its timestamp is not a number")
        if not self._verifier.is_valid(body, timestamp, signature):
            return _refuse(request, "bad or stale signature")
        if not self._remember(signature, int(timestamp)):
            return _refuse(request, "a replay of a request already accepted")
        return await handler(request)

    def _remember(self, signature: str, timestamp: int) -> bool:
        """False when this signature was accepted before (or may have been, and was forgotten since)."""
        now = self._clock()
        while self._seen:
            oldest, stamp = next(iter(self._seen.items()))
            if stamp + WINDOW >= now:
                break
            del self._seen[oldest]  # too old for Slack's window: the verifier refuses it from now on
        if signature in self._seen or timestamp <= self._floor:
            return False
        if len(self._seen) >= self._max:
            _, stamp = self._seen.popitem(last=False)
            self._floor = max(self._floor, stamp)
        self._seen[signature] = timestamp
        return True


class _Clock(Clock):
    """slack_sdk's verifier asks a clock object for the time; this one asks the guard's clock."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now

    def now(self) -> float:
        return self._now()


def _is_ssl_check(body: bytes) -> bool:
    return b"ssl_check=1" in body and parse_qs(body.decode("utf-8", "replace")).get("ssl_check") == ["1"]


def _peer(request: web.Request) -> str:
    return request.remote or "an unknown address"


def _refuse(request: web.Request, why: str) -> web.Response:
    log.warning("refused a request to %s from %s: %s", EVENTS_PATH, _peer(request), why)
    return web.json_response(_REFUSED, status=401)


class _ShortSignatureLine(logging.Filter):
    """Bolt logs a refused request with its whole body (up to 1 MiB of someone's text); keep the first words."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Invalid request signature detected"):
            record.msg, record.args = "Invalid request signature detected", None
        return True


def quiet_bolt_signature_log() -> None:
    # Bolt names this logger after the middleware's base class, RequestVerification.
    logging.getLogger("slack_bolt.RequestVerification").addFilter(_SHORT_LINE)


_SHORT_LINE = _ShortSignatureLine()


def app_runner(
    application: web.Application, *, idle_timeout: float = IDLE_TIMEOUT, access_log: logging.Logger | None = None
) -> web.AppRunner:
    """The aiohttp runner for the endpoint. aiohttp's keep-alive timer runs from a connection's start and from
    each answer until the next request's headers are complete, so it is both the idle and the header timeout."""
    return web.AppRunner(application, keepalive_timeout=idle_timeout, access_log=access_log)
