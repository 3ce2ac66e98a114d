"""The Slack edge: Bolt listeners, delivery of replies, the HTTP endpoint and Socket Mode.

Slack payload -> Actor + text -> CommandRunner -> Reply -> Block Kit. Nothing here decides what a command does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse
from slack_sdk.webhook.async_client import AsyncWebhookClient

from ..commands.grammar import shorten
from ..commands.ports import Actor, AuditError, AuditRecord, Profile
from ..commands.reply import Reply, Text
from .app_home import HOME_DISPATCH, MODAL, Submission, dispatch_modal, gather_facts, home_view
from .intake import settle_unfinished
from .log_redaction import typed_text_masker
from .observability import Metrics
from .policy import Policy
from .render import escape_mrkdwn, to_slack
from .runtime import Runtime
from .slack_web import SLACK_TIMEOUT, SlackDeliveryError, check_tokens, slack_retry_handlers
from .slack_web import SlackSetupError as SlackSetupError  # where callers of check_tokens catch it
from .slack_web import error_code as _error_code
from .slack_web import sdk_logger as _sdk_logger
from .slack_web import why as _why
from .starting import database_problem, health_response, serve_web_app
from .webhooks import webhook_handler

if TYPE_CHECKING:  # Socket Mode's client is loaded in Socket Mode only
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

log = logging.getLogger(__name__)


# Connections kept open to Slack, shared by every Web API client and response_url post (more calls wait for one).
SLACK_CONNECTIONS = 64
# chat.postMessage answers that mean "not here" rather than "Slack failed": the response_url is the way, quietly.
_NOT_HERE = frozenset({"not_in_channel", "channel_not_found", "is_archived"})


class _DropMessage(logging.Filter):
    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != self.message


# Bolt reads SLACK_BOT_TOKEN from the environment even when it is given a client, then warns that it will not use
# it; by design it does not (authorize hands it the token per request), so a correct setup starts without it.
_BOLT_TOKEN_WARNING = _DropMessage(warning_client_prioritized_and_token_skipped())


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


class SlackGroups:
    """Reads the members of the user groups a policy names into its cache, before a command is decided.

    The policy decides synchronously from that cache; a group Slack would not list is stored as a failure, which
    refuses (never allows) the rules naming it. `@handle`s are turned into ids with usergroups.list.
    """

    def __init__(self, client: AsyncWebClient, policy: Policy) -> None:
        self._client = client
        self._policy = policy
        self._lock = asyncio.Lock()  # a burst of commands asks Slack once

    async def refresh(self) -> None:
        cache = self._policy.groups
        if not any(cache.stale(g) for g in self._policy.group_names()):
            return
        async with self._lock:
            stale = [g for g in self._policy.group_names() if cache.stale(g)]
            ids = {g: g for g in stale if not g.startswith("@")}
            handles = [g for g in stale if g.startswith("@")]
            if handles:
                try:
                    listed = await self._client.usergroups_list()
                    by_handle = {
                        str(g.get("handle", "")).casefold(): str(g.get("id", ""))
                        for g in listed.get("usergroups") or []
                    }
                except Exception as exc:
                    by_handle = {}
                    for handle in handles:
                        cache.store_failure(handle, f"usergroups.list: {_why(exc)}")
                    handles = []
                for handle in handles:
                    if handle[1:].casefold() in by_handle:
                        ids[handle] = by_handle[handle[1:].casefold()]
                    else:
                        cache.store_failure(handle, "no user group of this workspace has that handle")
            for name, group_id in ids.items():
                try:
                    answer = await self._client.usergroups_users_list(usergroup=group_id)
                    cache.store(name, frozenset(str(u) for u in answer.get("users") or []))
                except Exception as exc:
                    cache.store_failure(name, f"usergroups.users.list: {_why(exc)}")
                    log.warning("could not read the members of user group %s: %s", name, _why(exc))


class SlackTransport:
    def __init__(self, runtime: Runtime, *, timeout: float = SLACK_TIMEOUT, retry_backoff: float = 0.5) -> None:
        """`timeout` bounds each Slack call; `retry_backoff` is the first pause before retrying a failed one."""
        self.runtime = runtime
        settings = runtime.settings
        self.timeout = timeout
        self.retry_backoff = retry_backoff
        self._web_log = _sdk_logger("dispatch_bot.slack_api")
        # One HTTP session for every Slack call: without it slack_sdk opens (and closes) a connection per call.
        self._http = self._new_session()
        self.client = self.web_client(settings.slack_bot_token)
        bolt_log = logging.getLogger("dispatch_bot.slack_bolt")
        if _BOLT_TOKEN_WARNING not in bolt_log.filters:
            bolt_log.addFilter(_BOLT_TOKEN_WARNING)
        self.app = AsyncApp(
            # Named here: without a name Bolt takes its caller's file name from inspect.stack(), which reads the
            # source of every frame and resolves the path of every loaded module (35-70 ms at each start).
            name="dispatch-bot",
            # Bolt gets a client without a token (authorize supplies it per request); ours posts messages.
            client=self.web_client(),
            signing_secret=settings.slack_signing_secret,
            authorize=self._authorizer(),
            logger=bolt_log,
            # Bolt answers as soon as a listener returns, instead of looking every 10 ms whether it has acked:
            # each listener acks, then starts the rest of its work in a task of its own (`_start`).
            process_before_response=True,
        )
        self.app.command(settings.slack_command)(self._on_command)
        self.app.action("dispatch_stop")(self._on_button)
        self.app.action("dispatch_refresh")(self._on_button)
        self.app.action("dispatch_again")(self._on_button)
        self.app.action("join_link")(self._on_link_opened)
        self.app.event("app_home_opened")(self._on_home_opened)
        self.app.action(HOME_DISPATCH)(self._on_home_dispatch)
        self.app.view(MODAL)(self._on_dispatch_submitted)
        self.people = SlackPeople(self.client)
        policy = settings.policy
        self.groups = SlackGroups(self.client, policy) if policy is not None and policy.group_names() else None
        self.followups: set[asyncio.Task[None]] = set()
        self.commands: set[asyncio.Task[Any]] = set()
        self._slots = asyncio.Semaphore(settings.max_concurrent_commands)
        self._closed = False
        self._mask = typed_text_masker(settings)  # ops: secrets a person types are masked before anything sees them
        self.socket: AsyncSocketModeHandler | None = None  # Socket Mode: /healthz asks its connection
        self._webhook = webhook_handler(runtime.gateway, runtime.supervisor, runtime.metrics)
        if runtime.supervisor is not None:
            runtime.supervisor.poster = self

    def _new_session(self) -> aiohttp.ClientSession:
        """The shared session; its timeout is the one slack_sdk would give a session of its own."""
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=SLACK_CONNECTIONS),
            timeout=aiohttp.ClientTimeout(total=self.timeout),
        )

    def web_client(self, token: str | None = None) -> AsyncWebClient:
        """A Web API client on the shared session, with slack_sdk's retry handlers, this transport's timeout, a
        quiet logger and its failures counted."""
        return MeteredWebClient(
            self.runtime.metrics,
            token=token,
            base_url=self.runtime.settings.slack_api_url,
            session=self._http,
            timeout=self.timeout,  # seconds; aiohttp takes a float
            retry_handlers=slack_retry_handlers(self.retry_backoff),
            logger=self._web_log,
        )

    def _authorizer(self) -> Callable[..., Awaitable[AuthorizeResult]]:
        token = self.runtime.settings.slack_bot_token

        # A single-workspace bot: no auth.test round trip stands between a request and its ack.
        async def authorize(**_: Any) -> AuthorizeResult:
            return AuthorizeResult(enterprise_id=None, team_id=None, bot_token=token)

        return authorize

    # --- listeners ---------------------------------------------------------------------------------------

    async def _on_command(self, ack: AsyncAck, command: dict[str, Any]) -> None:
        text = self._mask(slack_unescape(command.get("text") or ""))  # ops: masked before the ack echoes it
        actor = Actor(
            source="slack",
            user_id=command.get("user_id", ""),
            user_name=command.get("user_name", ""),
            team_id=command.get("team_id", ""),
            channel_id=command.get("channel_id", ""),
            channel_name=command.get("channel_name", ""),
        )
        response_url = str(command.get("response_url") or "")
        received_id = await self._receive(ack, actor, text, response_url)
        if received_id is None:
            return
        await ack(
            response_type="ephemeral",
            text=f":hourglass_flowing_sand: `{escape_mrkdwn(shorten(command.get('command', '') + ' ' + text))}`",
        )
        self._start(self._run(actor, text, response_url, received_id))

    async def _receive(self, ack: AsyncAck, actor: Actor, text: str, response_url: str) -> int | None:
        """Record the command before it is acknowledged; None (and the reason as the ack) when it cannot be."""
        try:
            return await self.runtime.intake.receive(actor, text, response_url)
        except AuditError as exc:
            log.error("audit write failed: %s", exc)
            await ack(response_type="ephemeral", text=f":x: Nothing was done: {escape_mrkdwn(str(exc))} Try again.")
            return None

    async def respond_ephemeral(self, url: str, reply: Reply) -> None:
        """A message to one person through a response URL (what an interrupted command's requester is told)."""
        text, blocks = to_slack(reply)
        await self._respond(url, text, blocks, "ephemeral", replace_original=False)

    async def _on_button(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
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
        text, response_url = self._mask(str(action.get("value", ""))), str(body.get("response_url") or "")
        received_id = await self._receive(ack, actor, text, response_url)
        if received_id is None:
            return
        await ack()
        self._start(self._run(actor, text, response_url, received_id))

    async def _on_link_opened(self, ack: AsyncAck) -> None:
        await ack()  # a URL button: Slack opens the link itself and only tells us it was clicked

    # --- App Home ----------------------------------------------------------------------------------------------

    async def _on_home_opened(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        if event.get("tab") != "home":  # the Messages tab: nothing to publish
            return
        user = str(event.get("user") or "")
        self._start(self.publish_home(Actor(source="slack", user_id=user, team_id=str(body.get("team_id") or ""))))

    async def publish_home(self, actor: Actor) -> None:
        """views.publish of this person's Home tab, showing only what the policy lets them see."""
        task = asyncio.current_task()
        if task is not None:  # a shutdown (and a test) waits for it like for a command
            self.commands.add(task)
            task.add_done_callback(self.commands.discard)
        if self.groups is not None:
            await self.groups.refresh()
        ctx = self.runtime.context(actor, self.people)
        facts = await gather_facts(self.runtime, actor.user_id, ctx.may)
        view = home_view(facts, self.runtime.settings.slack_command)
        try:
            await self.client.views_publish(user_id=actor.user_id, view=view)
        except Exception as exc:  # nobody to tell: the tab keeps what it showed before
            log.warning("could not publish the Home tab for %s: %s", actor.user_id, _why(exc))

    async def _on_home_dispatch(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        self._start(self._open_dispatch_form(str(body.get("trigger_id") or "")))

    async def _open_dispatch_form(self, trigger: str) -> None:
        try:  # first, before anything slow: the trigger is valid for three seconds
            await self.client.views_open(trigger_id=trigger, view=dispatch_modal(self.runtime))
        except Exception as exc:
            log.warning("could not open the Dispatch form: %s", _why(exc))

    async def _on_dispatch_submitted(self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        await ack()  # the modal closes; the answer comes in the channel picked, as the slash command's would
        asked = Submission(view, body)
        user = body.get("user") or {}
        actor = Actor(
            source="slack",
            user_id=str(user.get("id") or ""),
            user_name=str(user.get("username") or user.get("name") or ""),
            team_id=str((body.get("team") or {}).get("id") or user.get("team_id") or ""),
            channel_id=asked.channel,
        )
        self._start(self._run(actor, self._mask(asked.command()), asked.response_url))

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        """What a listener does after its ack, in a task of its own, so that Bolt answers Slack meanwhile."""
        task = asyncio.create_task(work)
        self.commands.add(task)  # a shutdown waits for it
        task.add_done_callback(self._started_work_done)

    def _started_work_done(self, task: asyncio.Task[None]) -> None:
        self.commands.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("a Slack request's work failed after its ack: %s", _why(exc))

    async def _run(self, actor: Actor, text: str, response_url: str, received_id: int = 0) -> None:
        task = asyncio.current_task()
        if task is not None:  # so that a shutdown waits for this command's audit row and reply
            self.commands.add(task)
            task.add_done_callback(self.commands.discard)
        # The ack is already out. A bounded number of commands work at once, so that under a burst the acks of
        # the next requests are not starved of the event loop by the work of the previous ones.
        step = self.runtime.metrics.step_done
        queued = time.monotonic()
        async with self._slots:
            started = time.monotonic()
            step("queue", started - queued)
            if self.groups is not None:  # the policy decides synchronously: its user groups are read first
                await self.groups.refresh()
                step("groups", time.monotonic() - started)
            reply = await self.runtime.runner.execute(self.runtime.context(actor, self.people, received_id), text)
            ran = time.monotonic()
            where = await self._deliver(reply, actor, text, response_url)
            delivered = time.monotonic()
            step("deliver", delivered - ran)
        # Outside the slot: the reply is out, and an alert that comes before this is noted posts without a thread
        # (as it would if Slack had not given the message's ts), so the next command need not wait for it.
        supervisor = self.runtime.supervisor
        if supervisor is not None and where is not None and where.ts and reply.dispatch_id and reply.outcome == "ok":
            # Alerts about this dispatch's agent go in the thread of the message that announced it.
            await supervisor.set_message(reply.room, reply.dispatch_id, where.channel, where.ts)
            step("thread", time.monotonic() - delivered)
        if reply.followup is not None:
            task = asyncio.create_task(self._follow_up(reply, actor, text, response_url, where))
            self.followups.add(task)
            task.add_done_callback(self.followups.discard)

    async def _follow_up(
        self, first: Reply, actor: Actor, command: str, response_url: str, where: _Delivered | None
    ) -> None:
        assert first.followup is not None
        reply = await first.followup()
        text, blocks = to_slack(reply)
        failed: list[str] = []
        if where is not None and where.ts:
            try:
                await self.client.chat_update(channel=where.channel, ts=where.ts, text=text, blocks=blocks)
                return
            except Exception as exc:
                failed.append(f"chat.update: {_why(exc)}")
                # A new message under the old one: a response_url cannot replace a message the bot posted.
                text, blocks = to_slack(_with_note(reply, not_updated_note(_why(exc))))
        try:
            await self._respond(response_url, text, blocks, reply.visibility, replace_original=not failed)
        except Exception as exc:
            failed.append(f"response URL: {_why(exc)}")
            await self._record_delivery(actor, command, reply, failed, delivered=False)
            return
        if failed:
            await self._record_delivery(actor, command, reply, failed, delivered=True)

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

    async def _deliver(self, reply: Reply, actor: Actor, command: str, response_url: str) -> _Delivered | None:
        """Post the reply; when Slack fails, the response_url with a note, and an audit row saying what failed."""
        text, blocks = to_slack(reply)
        failed: list[str] = []
        if reply.visibility == "in_channel" and actor.channel_id:
            # A channel message the follow-up can edit; where the bot may not post, the response_url instead.
            try:
                posted = await self.client.chat_postMessage(
                    channel=actor.channel_id, text=text, blocks=blocks, unfurl_links=False, unfurl_media=False
                )
                return _Delivered(str(posted.get("channel", actor.channel_id)), str(posted.get("ts", "")))
            except Exception as exc:
                why = _why(exc)
                if _error_code(exc) in _NOT_HERE:
                    log.info("chat.postMessage: %s; replying through response_url", why)
                else:
                    failed.append(f"chat.postMessage: {why}")
                    text, blocks = to_slack(_with_note(reply, not_posted_note(why)))
        try:
            await self._respond(response_url, text, blocks, reply.visibility, replace_original=False)
        except Exception as exc:
            failed.append(f"response URL: {_why(exc)}")
            await self._record_delivery(actor, command, reply, failed, delivered=False)
            return None
        if failed:
            await self._record_delivery(actor, command, reply, failed, delivered=True)
        return _Delivered()

    async def _record_delivery(
        self, actor: Actor, command: str, reply: Reply, failed: list[str], *, delivered: bool
    ) -> None:
        """An audit row for a reply Slack did not take as sent: the command's own row is already written."""
        how = "delivered through the response URL" if delivered else "the person was not told"
        detail = f"reply to {reply.action or 'the command'} ({reply.outcome}): {'; '.join(failed)}; {how}"
        (log.info if delivered else log.warning)("Slack delivery: %s", detail)
        entry = AuditRecord(
            actor=actor,
            raw_text=command.strip()[:2000],
            action="delivery",
            outcome="ok" if delivered else "error",
            agent=reply.agent,
            room=reply.room,
            dispatch_id=reply.dispatch_id,
            detail=detail,
        )
        try:
            await self.runtime.audit.record(entry)
        except AuditError as exc:
            log.error("audit write failed: %s", exc)

    async def _respond(
        self, url: str, text: str, blocks: list[dict[str, Any]], visibility: str, *, replace_original: bool
    ) -> None:
        """POST to a response_url over the shared HTTP session (no new connection per reply), retried as the Web
        API is."""
        if not url:
            raise SlackDeliveryError("no response URL")
        webhook = AsyncWebhookClient(
            url,
            session=self._http,
            retry_handlers=slack_retry_handlers(self.retry_backoff),
            logger=self._web_log,
        )
        try:
            response = await webhook.send(
                text=text, blocks=blocks, response_type=visibility, replace_original=replace_original
            )
        except Exception as exc:
            self.runtime.metrics.slack_failed("response_url", exc)
            raise
        if response.status_code != 200:
            self.runtime.metrics.slack_failed("response_url", f"http_{response.status_code}")
            raise SlackDeliveryError(f"HTTP {response.status_code}")

    # --- servers -----------------------------------------------------------------------------------------

    def web_app(self, *, slack_events: bool = True) -> web.Application:
        """POST /slack/events (signed requests only; HTTP mode), POST /livekit/webhook, GET /healthz and /metrics."""
        return serve_web_app(self, self.runtime.settings, slack_events=slack_events)

    async def events(self, request: web.Request) -> web.Response:
        """`POST /slack/events`, once the request guard has passed it: Bolt's answer."""
        bolt_response = await self.app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(bolt_response)

    async def webhook(self, request: web.Request) -> web.Response:
        """`POST /livekit/webhook`."""
        return await self._webhook(request)

    async def healthz(self, _: web.Request) -> web.Response:
        """`GET /healthz`: 200 when nothing keeps the bot from serving, else 503 with the reasons."""
        return health_response(await self.health())

    async def metrics(self, request: web.Request) -> web.Response:
        """`GET /metrics`."""
        return await self.runtime.metrics.handle(request)

    def socket_mode_handler(self) -> AsyncSocketModeHandler:
        """The Socket Mode connection, pinged every `slack.socket_check_interval`; /healthz follows it from now."""
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        settings = self.runtime.settings
        self.socket = AsyncSocketModeHandler(
            self.app,
            settings.slack_app_token,
            web_client=self.web_client(),
            ping_interval=settings.socket_check_interval,
        )
        return self.socket

    async def health(self) -> list[str]:
        """What keeps the bot from serving, one phrase each: none when healthy."""
        problems: list[str] = []
        # is_connected() is a coroutine: called without await it is always truthy, and the check always passes.
        if self.socket is not None and not await self.socket.client.is_connected():
            problems.append(SOCKET_DOWN)
        database = await database_problem(self.runtime.settings, self.runtime.audit)
        if database is not None:
            problems.append(database)
        return problems

    async def drain(self, followup_grace: float | None = None, timeout: float | None = None) -> None:
        """Wait for the commands still running (at most `timeout` seconds: the rest are cancelled, and their
        received-command records stay for `settle_unfinished`), then for their follow-ups (at most
        `followup_grace` seconds, after which the rest are cancelled: their dispatches stand and are audited, only
        the "joined?" note is not)."""
        if self.commands and timeout is not None:
            _, late = await asyncio.wait(list(self.commands), timeout=timeout)
            for task in late:
                task.cancel()
        while self.commands:
            await asyncio.gather(*list(self.commands), return_exceptions=True)
        if self.followups and followup_grace is not None:
            _, pending = await asyncio.wait(list(self.followups), timeout=followup_grace)
            for task in pending:
                task.cancel()
        while self.followups:
            await asyncio.gather(*list(self.followups), return_exceptions=True)

    async def aclose(self, followup_grace: float | None = None, timeout: float | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        await self.drain(followup_grace, timeout)
        # What a stop cut short gets its row and its requester a word, while the HTTP session is still open.
        await settle_unfinished(self.runtime.audit, self.respond_ephemeral, boot=self.runtime.intake.boot)
        await self._http.close()  # a call after this (none is expected) gets a session of its own from slack_sdk

    async def check_tokens(self, *, socket_mode: bool) -> None:
        """Ask Slack once whether the tokens work; SlackSetupError with a sentence when one does not."""
        await check_tokens(self.runtime.settings, self.web_client, socket_mode=socket_mode)


SOCKET_DOWN = "Slack's Socket Mode connection is down; reconnecting"


class SocketWatch:
    """Watches the Socket Mode connection and reconnects it when it has dropped and stays down.

    slack_sdk's client reconnects by itself; this steps in when its own monitor has stopped (slack_sdk #1110,
    #1446), at the next check after the one that first saw the connection down.
    """

    def __init__(self, handler: AsyncSocketModeHandler, interval: float) -> None:
        self.handler = handler
        self.interval = interval
        self.reconnects = 0  # how many times this watch reconnected the client itself

    async def run(self, stop: asyncio.Event) -> None:
        down = 0  # checks in a row that found the connection down
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)
            if stop.is_set():
                return
            client = self.handler.client
            if await client.is_connected():
                if down:
                    log.info("Socket Mode: connected again")
                down = 0
                continue
            down += 1
            if down == 1:
                log.warning("Socket Mode: the connection to Slack dropped; reconnecting")
                continue
            try:
                await client.connect_to_new_endpoint()
            except Exception as exc:  # Slack still unreachable: the next check tries again
                log.warning("Socket Mode: reconnecting failed (%s); trying again in %g s", _why(exc), self.interval)
            else:
                self.reconnects += 1


def not_posted_note(why: str) -> Text:
    return Text("_Slack would not post this in the channel ({why}), so it came as the command's reply._", {"why": why})


def not_updated_note(why: str) -> Text:
    return Text("_Slack would not update the message above ({why}), so the result is here._", {"why": why})


def _with_note(reply: Reply, note: Text) -> Reply:
    """The reply with one more line saying how it arrived (rendered within Slack's limits like the rest)."""
    return dataclasses.replace(reply, lines=[*reply.lines, note])


class MeteredWebClient(AsyncWebClient):
    """slack_sdk's Web API client that counts every call which ends in an error (after slack_sdk's retries)."""

    def __init__(self, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metrics = metrics

    async def api_call(self, api_method: str, **kwargs: Any) -> AsyncSlackResponse:
        try:
            return await super().api_call(api_method, **kwargs)
        except Exception as exc:
            self.metrics.slack_failed(api_method, exc)
            raise
