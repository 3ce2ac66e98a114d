"""Slack's Web API as the bot calls it apart from Bolt: the retries, a failure in a few words, the start's token check.

Importing this loads slack_sdk's Web API client and not Bolt, so `serve` checks its tokens before Bolt is loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.web.async_client import AsyncWebClient

from .config import Settings

# Each kind of failure is retried this often: a brief outage or a 429 delays a message, a long one gets a sentence.
SLACK_RETRIES = 2
SLACK_TIMEOUT = 30.0  # seconds for one Web API or response_url call


def slack_retry_handlers(backoff: float = 0.5) -> list[AsyncRetryHandler]:
    """slack_sdk's own handlers: a 429 after its Retry-After, a refused or reset connection, a 500 or 503.

    A timeout is not retried: Slack may have taken the message, and a second one would be a duplicate.
    """
    interval = BackoffRetryIntervalCalculator(backoff_factor=backoff)
    return [
        AsyncRateLimitErrorRetryHandler(max_retry_count=SLACK_RETRIES),
        AsyncConnectionErrorRetryHandler(max_retry_count=SLACK_RETRIES, interval_calculator=interval),
        AsyncServerErrorRetryHandler(max_retry_count=SLACK_RETRIES, interval_calculator=interval),
    ]


def sdk_logger(name: str) -> logging.Logger:
    """A logger for slack_sdk clients with its own level set: with none, slack_sdk logs every retry at INFO."""
    logger = logging.getLogger(name)
    if logger.level == logging.NOTSET:
        logger.setLevel(max(logging.getLogger("dispatch_bot").getEffectiveLevel(), logging.DEBUG))
    return logger


class SlackSetupError(Exception):
    """Slack would not accept the configured tokens; one sentence."""


class SlackDeliveryError(Exception):
    """A reply Slack did not take."""


def error_code(exc: BaseException) -> str:
    """Slack's `error` in an `{"ok": false}` answer; "" when the answer was not Slack's JSON (a proxy's page)."""
    if not isinstance(exc, SlackApiError):
        return ""
    data = getattr(exc.response, "data", None)  # a str for text/plain, absent when the JSON did not parse
    return str(data.get("error") or "") if isinstance(data, dict) else ""


def why(exc: BaseException) -> str:
    """A failed Slack call in a few words: Slack's error code, the HTTP status, or what the network did."""
    if isinstance(exc, SlackApiError):
        status = getattr(exc.response, "status_code", None) or getattr(exc.response, "status", None)
        code = error_code(exc)
        if code:
            return code if status in (None, 200) else f"HTTP {status}, {code}"
        return f"HTTP {status}" if status else "an answer that is not Slack's"
    if isinstance(exc, SlackDeliveryError):
        return str(exc)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "could not connect"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return "the connection was closed without an answer"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return type(exc).__name__


def start_client(settings: Settings, token: str | None = None) -> AsyncWebClient:
    """A Web API client for the start's token check, before the Slack app and its shared session exist."""
    return AsyncWebClient(
        token=token,
        base_url=settings.slack_api_url,
        timeout=int(SLACK_TIMEOUT),
        retry_handlers=slack_retry_handlers(),
        logger=sdk_logger("dispatch_bot.slack_api"),
    )


async def check_tokens(
    settings: Settings, client: Callable[[str | None], AsyncWebClient], *, socket_mode: bool
) -> None:
    """Ask Slack once at start whether the tokens work, so a wrong one stops the program with a sentence.

    `client(token)` makes a Web API client with that token (None: none).
    """
    bot_client = client(settings.slack_bot_token)
    checks: list[tuple[str, Callable[[], Awaitable[Any]]]] = [("SLACK_BOT_TOKEN", bot_client.auth_test)]
    if socket_mode:
        app_client = client(None)
        token = settings.slack_app_token
        checks.append(("SLACK_APP_TOKEN", lambda: app_client.apps_connections_open(app_token=token)))
    for name, call in checks:
        try:
            await call()
        except SlackApiError as exc:
            if error_code(exc) and getattr(exc.response, "status_code", 0) == 200:  # Slack's own verdict
                raise SlackSetupError(
                    f"Slack rejected {name} ({why(exc)}): copy it again from the Slack app's settings."
                ) from None
            raise SlackSetupError(
                f"Slack's Web API at {settings.slack_api_url} answered {why(exc)} instead of Slack's answer: "
                "Slack (or a proxy in front of it) is failing, or SLACK_API_URL points elsewhere; try again "
                "later or fix SLACK_API_URL."
            ) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SlackSetupError(
                f"Cannot reach Slack at {settings.slack_api_url} ({why(exc)}): check the network and SLACK_API_URL."
            ) from None
