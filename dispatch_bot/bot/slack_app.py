"""The Slack edge: Bolt listeners, delivery of replies, the HTTP endpoint and Socket Mode.

Slack payload -> Actor + text -> CommandRunner -> Reply -> Block Kit. Nothing here decides what a command does.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from ..commands.grammar import shorten
from ..commands.ports import Actor, Profile
from ..commands.reply import Reply
from .http_guard import SlackRequestGuard
from .log_redaction import typed_text_masker
from .render import escape_mrkdwn, to_slack
from .runtime import Runtime
from .webhooks import WEBHOOK_PATH, webhook_handler

log = logging.getLogger(__name__)


# Slack's own markup in command text (should_escape: true): <@U1|name>, <#C1|name>, <!here>, <https://x|label>.
_SLACK_MARKUP = re.compile(r"<([@#!]?)([^<>|]*)(?:\|([^<>]*))?>")


def _plain(match: re.Match[str]) -> str:
    kind, target, label = match.groups()
    if kind == "@":
        return f"<@{target}>"  # a person, kept as an id: the audit's user: filter needs it
    if kind == "#":
        return f"#{label or target}"
    if kind == "!":
        return label or f"@{target.split('^')[0]}"
    return target  # a link: the URL as typed


def slack_unescape(value: str) -> str:
    """Command text as the person typed it: Slack's markup undone, then its HTML entities for &, < and >."""
    value = _SLACK_MARKUP.sub(_plain, value)
    return value.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


class _Delivered:
    """Where a reply went, so a follow-up can replace it."""

    def __init__(self, channel: str = "", ts: str = "") -> None:
        self.channel = channel
        self.ts = ts


class SlackPeople:
    """Display names and time zones from users.info, cached; None when Slack cannot say (callers fall back)."""

    def __init__(self, client: AsyncWebClient, ttl: float = 3600.0) -> None:
        self._client = client
        self._ttl = ttl
        self._cache: dict[str, tuple[float, Profile]] = {}

    async def profile(self, user_id: str) -> Profile | None:
        cached = self._cache.get(user_id)
        if cached is not None and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        try:
            response = await self._client.users_info(user=user_id)
        except Exception as exc:
            log.info("users.info failed for %s (%s); using the request's user name and UTC", user_id, _why(exc))
            return None
        user = response.get("user") or {}
        info = user.get("profile") or {}
        name = info.get("display_name") or info.get("real_name") or user.get("real_name") or user.get("name") or ""
        offset = user.get("tz_offset")
        found = Profile(str(name), str(user.get("tz") or ""), offset if isinstance(offset, int) else 0)
        self._cache[user_id] = (time.monotonic(), found)
        return found


class SlackTransport:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        settings = runtime.settings
        self.client = AsyncWebClient(token=settings.slack_bot_token, base_url=settings.slack_api_url)
        self.app = AsyncApp(
            # Bolt gets a client without a token (authorize supplies it per request); ours posts messages.
            client=AsyncWebClient(base_url=settings.slack_api_url),
            signing_secret=settings.slack_signing_secret,
            authorize=self._authorizer(),
            logger=logging.getLogger("dispatch_bot.slack_bolt"),
        )
        self.app.command(settings.slack_command)(self._on_command)
        self.app.action("dispatch_stop")(self._on_button)
        self.app.action("dispatch_refresh")(self._on_button)
        self.app.action("dispatch_again")(self._on_button)
        self.app.action("join_link")(self._on_link_opened)
        self.people = SlackPeople(self.client)
        self.followups: set[asyncio.Task[None]] = set()
        self.commands: set[asyncio.Task[Any]] = set()
        self._slots = asyncio.Semaphore(settings.max_concurrent_commands)
        self._http: aiohttp.ClientSession | None = None
        self._mask = typed_text_masker(settings)  # ops: secrets a person types are masked before anything sees them
        if runtime.supervisor is not None:
            runtime.supervisor.poster = self

    def _authorizer(self) -> Callable[..., Awaitable[AuthorizeResult]]:
        token = self.runtime.settings.slack_bot_token

        # A single-workspace bot: no auth.test round trip stands between a request and its ack.
        async def authorize(**_: Any) -> AuthorizeResult:
            return AuthorizeResult(enterprise_id=None, team_id=None, bot_token=token)

        return authorize

    # --- listeners ---------------------------------------------------------------------------------------

    async def _on_command(self, ack: AsyncAck, command: dict[str, Any]) -> None:
        text = self._mask(slack_unescape(command.get("text") or ""))  # ops: masked before the ack echoes it
        await ack(
            response_type="ephemeral",
            text=f":hourglass_flowing_sand: `{escape_mrkdwn(shorten(command.get('command', '') + ' ' + text))}`",
        )
        actor = Actor(
            source="slack",
            user_id=command.get("user_id", ""),
            user_name=command.get("user_name", ""),
            team_id=command.get("team_id", ""),
            channel_id=command.get("channel_id", ""),
            channel_name=command.get("channel_name", ""),
        )
        await self._run(actor, text, str(command.get("response_url") or ""))

    async def _on_button(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        user = body.get("user") or {}
        actor = Actor(
            source="slack",
            user_id=user.get("id", ""),
            user_name=user.get("username") or user.get("name", ""),
            team_id=(body.get("team") or {}).get("id", ""),
            channel_id=(body.get("channel") or {}).get("id", ""),
            channel_name=(body.get("channel") or {}).get("name", ""),
        )
        # The button carries a command; running it as the presser re-checks everything for that person.
        await self._run(actor, self._mask(str(action.get("value", ""))), str(body.get("response_url") or ""))

    async def _on_link_opened(self, ack: AsyncAck) -> None:
        await ack()  # a URL button: Slack opens the link itself and only tells us it was clicked

    async def _run(self, actor: Actor, text: str, response_url: str) -> None:
        task = asyncio.current_task()
        if task is not None:  # so that a shutdown waits for this command's audit row and reply
            self.commands.add(task)
            task.add_done_callback(self.commands.discard)
        # The ack is already out. A bounded number of commands work at once, so that under a burst the acks of
        # the next requests are not starved of the event loop by the work of the previous ones.
        async with self._slots:
            reply = await self.runtime.runner.execute(self.runtime.context(actor, self.people), text)
            where = await self._deliver(reply, actor, response_url)
            supervisor = self.runtime.supervisor
            if (
                supervisor is not None
                and where is not None
                and where.ts
                and reply.dispatch_id
                and reply.outcome == "ok"
            ):
                # Alerts about this dispatch's agent go in the thread of the message that announced it.
                await supervisor.set_message(reply.room, reply.dispatch_id, where.channel, where.ts)
        if reply.followup is not None:
            task = asyncio.create_task(self._follow_up(reply, response_url, where))
            self.followups.add(task)
            task.add_done_callback(self.followups.discard)

    async def _follow_up(self, first: Reply, response_url: str, where: _Delivered | None) -> None:
        assert first.followup is not None
        reply = await first.followup()
        text, blocks = to_slack(reply)
        try:
            if where is not None and where.ts:
                await self.client.chat_update(channel=where.channel, ts=where.ts, text=text, blocks=blocks)
            else:
                await self._respond(response_url, text, blocks, reply.visibility, replace_original=True)
        except Exception as exc:  # Slack down: the audit row is already written
            log.warning("could not update the reply in Slack: %s", _why(exc))

    # --- supervision's messages (AlertPoster) ----------------------------------------------------------------

    async def post(self, channel: str, thread_ts: str, reply: Reply) -> str:
        """A new message in the channel: a thread reply broadcast to the channel when there is a thread."""
        text, blocks = to_slack(reply)
        extra: dict[str, Any] = {"thread_ts": thread_ts, "reply_broadcast": True} if thread_ts else {}
        try:
            posted = await self.client.chat_postMessage(
                channel=channel, text=text, blocks=blocks, unfurl_links=False, unfurl_media=False, **extra
            )
        except Exception as exc:  # Slack down or the bot not in the channel: the audit row is already written
            log.warning("could not post to %s: %s", channel, _why(exc))
            return ""
        return str(posted.get("ts", ""))

    async def update(self, channel: str, ts: str, reply: Reply) -> None:
        text, blocks = to_slack(reply)
        try:
            await self.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
        except Exception as exc:
            log.warning("could not update the message in %s: %s", channel, _why(exc))

    # --- delivery ----------------------------------------------------------------------------------------

    async def _deliver(self, reply: Reply, actor: Actor, response_url: str) -> _Delivered | None:
        text, blocks = to_slack(reply)
        if reply.visibility == "in_channel" and actor.channel_id:
            # A channel message the follow-up can edit; where the bot may not post, the response_url instead.
            try:
                posted = await self.client.chat_postMessage(
                    channel=actor.channel_id, text=text, blocks=blocks, unfurl_links=False, unfurl_media=False
                )
                return _Delivered(str(posted.get("channel", actor.channel_id)), str(posted.get("ts", "")))
            except Exception as exc:
                log.info("chat.postMessage failed (%s); replying through response_url", _why(exc))
        try:
            await self._respond(response_url, text, blocks, reply.visibility, replace_original=False)
        except Exception as exc:  # Slack down: the audit row is already written
            log.warning("could not deliver the reply to Slack: %s", _why(exc))
            return None
        return _Delivered()

    async def _respond(
        self, url: str, text: str, blocks: list[dict[str, Any]], visibility: str, *, replace_original: bool
    ) -> None:
        """POST to a response_url over one shared HTTP session (no new connection per reply)."""
        if not url:
            raise SlackDeliveryError("no response_url")
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        response = await AsyncWebhookClient(url, session=self._http).send(
            text=text, blocks=blocks, response_type=visibility, replace_original=replace_original
        )
        if response.status_code != 200:
            raise SlackDeliveryError(f"HTTP {response.status_code}")

    # --- servers -----------------------------------------------------------------------------------------

    def web_app(self, *, slack_events: bool = True) -> web.Application:
        """POST /slack/events (signed requests only; HTTP mode), POST /livekit/webhook and GET /healthz."""

        async def events(request: web.Request) -> web.Response:
            bolt_response = await self.app.async_dispatch(await to_bolt_request(request))
            return await to_aiohttp_response(bolt_response)

        async def healthz(_: web.Request) -> web.Response:
            return web.json_response({"ok": True})

        # ops: signature, timestamp, replay and body checks before Bolt (bot/http_guard.py)
        application = web.Application()
        if slack_events:
            guard = SlackRequestGuard(self.runtime.settings.slack_signing_secret)
            application.middlewares.append(guard.middleware)
            application.router.add_post("/slack/events", events)
        application.router.add_post(WEBHOOK_PATH, webhook_handler(self.runtime.gateway, self.runtime.supervisor))
        application.router.add_get("/healthz", healthz)
        return application

    def socket_mode_handler(self) -> AsyncSocketModeHandler:
        settings = self.runtime.settings
        return AsyncSocketModeHandler(
            self.app, settings.slack_app_token, web_client=AsyncWebClient(base_url=settings.slack_api_url)
        )

    async def drain(self, followup_grace: float | None = None) -> None:
        """Wait for the commands still running, then for their follow-ups (at most `followup_grace` seconds,
        after which the rest are cancelled: their dispatches stand and are audited, only the "joined?" note is
        not)."""
        while self.commands:
            await asyncio.gather(*list(self.commands), return_exceptions=True)
        if self.followups and followup_grace is not None:
            _, pending = await asyncio.wait(list(self.followups), timeout=followup_grace)
            for task in pending:
                task.cancel()
        while self.followups:
            await asyncio.gather(*list(self.followups), return_exceptions=True)

    async def aclose(self, followup_grace: float | None = None) -> None:
        await self.drain(followup_grace)
        if self._http is not None:
            await self._http.close()

    async def check_tokens(self, *, socket_mode: bool) -> None:
        """Ask Slack once at start whether the tokens work, so a wrong one stops the program with a sentence."""
        settings = self.runtime.settings
        checks: list[tuple[str, Callable[[], Awaitable[Any]]]] = [("SLACK_BOT_TOKEN", self.client.auth_test)]
        if socket_mode:
            app_client = AsyncWebClient(base_url=settings.slack_api_url)
            token = settings.slack_app_token
            checks.append(("SLACK_APP_TOKEN", lambda: app_client.apps_connections_open(app_token=token)))
        for name, call in checks:
            try:
                await call()
            except SlackApiError as exc:
                raise SlackSetupError(
                    f"Slack rejected {name} ({_why(exc)}): copy it again from the Slack app's settings."
                ) from None
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise SlackSetupError(
                    f"Cannot reach Slack at {settings.slack_api_url} ({type(exc).__name__}): check the network "
                    "and SLACK_API_URL."
                ) from None


class SlackSetupError(Exception):
    """Slack would not accept the configured tokens; one sentence."""


class SlackDeliveryError(Exception):
    """A reply Slack did not take."""


def _why(exc: BaseException) -> str:
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error", "error"))
    if isinstance(exc, SlackDeliveryError):
        return str(exc)
    return type(exc).__name__
