"""`--demo`: the bot against the LiveKit stand-in in this process, seeded so that every command has something to show.

The stand-in is the one the tests use, with the real server's awkward parts: the automatic dispatch on every room, a
room created by a dispatch that closes after its empty timeout, and a worker that takes a job whose agent never joins.
Nothing here opens a connection to anything but 127.0.0.1.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

from aiohttp import web

from ..bot.config import ConfigError, Settings
from ..bot.runtime import Runtime
from ..bot.supervisor import AlertPoster
from ..bot.webhooks import WEBHOOK_PATH, webhook_handler
from ..commands import messages
from ..commands.context import CommandContext
from ..commands.grammar import GrammarError, tokenize
from ..commands.reply import Reply
from ..commands.runner import CommandRunner
from .livekit_server import FakeLiveKit

log = logging.getLogger(__name__)

DEMO_ROOM = "demo-room"
DEMO_AGENT = "speech-processing"
NEVER_JOINS = "translation"  # its worker takes every job, and its agent never comes
DISPATCHED_ROOM = "interview"  # created by a dispatch, no person in it: it closes after its empty timeout
JOB_DELAY = 0.3  # seconds from a dispatch to its agent joining, as a worker takes a moment
API_KEY = "demo"


def refuse_real_server(settings: Settings) -> None:
    """`--demo` never talks to a configured LiveKit: one sentence instead of a surprise."""
    if settings.livekit_url_origin:
        raise ConfigError(
            f"--demo runs its own LiveKit stand-in and never talks to a real server, but {settings.livekit_url_origin} "
            "is set: unset it to try the demo, or drop --demo to use that server."
        )


def intro_lines(settings: Settings) -> list[str]:
    """What the demo console prints first: where the answers come from, then what to try."""
    command = settings.slack_command
    where = "a temporary file, removed on exit" if not settings.database_given else settings.database
    return [
        f"Demo: every answer comes from {messages.DEMO_SERVER}, not a real one; the audit log is {where}.",
        f"Try: captions {DEMO_ROOM} (twice: the second is not sent again), list {DEMO_ROOM}, link {DEMO_ROOM}, "
        "audit, rooms.",
        f"Then: demo kill {DEMO_AGENT} {DEMO_ROOM} makes the agent leave, and the watch's alert appears here; "
        f"{NEVER_JOINS} {DEMO_ROOM} shows a worker that takes the job but whose agent never joins.",
        f"The demo server also has the automatic dispatch in every room and {DISPATCHED_ROOM}, a room a dispatch "
        f"created, which closes after its empty timeout. In Slack, type them after {command}.",
    ]


def _noted(reply: Reply) -> Reply:
    """The reply with the demo's line at the end (and its follow-up's too); the original is left as it was."""
    lines = reply.lines if reply.lines[-1:] == [messages.demo_note()] else [*reply.lines, messages.demo_note()]
    followup = reply.followup
    if followup is None:
        return replace(reply, lines=lines)

    async def later() -> Reply:
        return _noted(await followup())

    return replace(reply, lines=lines, followup=later)


class DemoRunner(CommandRunner):
    """Every answer says it comes from the demo server (in Slack and in the console alike)."""

    async def execute(self, ctx: CommandContext, raw_text: str) -> Reply:
        return _noted(await super().execute(ctx, raw_text))


class NotedPoster:
    """Supervision's alerts say it too."""

    def __init__(self, poster: AlertPoster) -> None:
        self.poster = poster

    async def post(self, channel: str, thread_ts: str, reply: Reply) -> str:
        return await self.poster.post(channel, thread_ts, _noted(reply))

    async def update(self, channel: str, ts: str, reply: Reply) -> None:
        await self.poster.update(channel, ts, _noted(reply))


class Demo:
    """The stand-in, seeded; the settings that point the bot at it; the webhook receiver that feeds supervision."""

    def __init__(self, settings: Settings) -> None:
        refuse_real_server(settings)
        self._folder: Path | None = None
        database = settings.database
        if not settings.database_given:
            self._folder = Path(tempfile.mkdtemp(prefix="dispatch-bot-demo-"))
            database = str(self._folder / "demo-audit.db")
        secret = secrets.token_urlsafe(32)  # a fresh one per run: nothing outside this process can sign for it
        self.server = FakeLiveKit(API_KEY, secret, job_delay=JOB_DELAY, close_idle_rooms=True)
        self.settings = replace(settings, database=database, livekit_api_key=API_KEY, livekit_api_secret=secret)
        self._receiver: web.AppRunner | None = None

    async def start(self) -> Settings:
        """Start the stand-in on 127.0.0.1 (port 0), seed it; returns the settings that point at it."""
        await self.server.start()
        server = self.server
        server.register_worker(DEMO_AGENT)
        server.register_worker(NEVER_JOINS, joins=False)
        server.add_room(DEMO_ROOM, humans=("alice", "bob"))  # only the automatic dispatch, which no worker takes
        server.add_room("standup", humans=("carol",), agents=[DEMO_AGENT])  # captions from the join token
        server.dispatch(DISPATCHED_ROOM, DEMO_AGENT)
        url = server.url
        log.info(
            "demo: the LiveKit stand-in runs in this process on %s; the audit log is %s", url, self.settings.database
        )
        self.settings = replace(self.settings, livekit_url=url, public_ws_url=url.replace("http://", "ws://", 1))
        return self.settings

    async def attach(self, runtime: Runtime) -> None:
        """The runtime's answers say where they come from; the stand-in's webhooks reach supervision."""
        runtime.gateway.url = messages.DEMO_SERVER
        runtime.runner = DemoRunner(runtime.audit)
        if runtime.supervisor is None:
            return
        app = web.Application()
        app.router.add_post(WEBHOOK_PATH, webhook_handler(runtime.gateway, runtime.supervisor))
        self._receiver = web.AppRunner(app, access_log=None)
        await self._receiver.setup()
        await web.TCPSite(self._receiver, "127.0.0.1", 0).start()
        port = int(self._receiver.addresses[0][1])
        self.server.add_webhook_url(f"http://127.0.0.1:{port}{WEBHOOK_PATH}")

    @staticmethod
    def note_alerts(runtime: Runtime) -> None:
        """Wrap the poster a transport gave supervision, so that its alerts say they come from the demo."""
        supervisor = runtime.supervisor
        if supervisor is not None and supervisor.poster is not None and not isinstance(supervisor.poster, NotedPoster):
            supervisor.poster = NotedPoster(supervisor.poster)

    def console_command(self, aliases: dict[str, str], *, watching: bool) -> Callable[[str], Awaitable[str | None]]:
        """`demo kill <agent> <room>`, the console's own: None for any other line."""

        async def run(line: str) -> str | None:
            try:
                words = tokenize(line)
            except GrammarError:
                return None
            if not words or words[0].lower() != "demo":
                return None
            if len(words) != 4 or words[1].lower() != "kill":
                return f"Usage: demo kill <agent> <room>, as in demo kill {DEMO_AGENT} {DEMO_ROOM}."
            agent, room = aliases.get(words[2], words[2]), words[3]
            if room not in self.server.room_names():
                return f"{room} is not running on the demo server."
            try:
                identity = self.server.agent_leaves(room, agent, "CONNECTION_TIMEOUT")
            except KeyError:
                return f"No {agent} agent is in {room} on the demo server: dispatch it first ({agent} {room})."
            then = "the watch's alert follows." if watching else "no alert follows: watch.enabled is false."
            return f"Demo: the agent {identity} left {room} (CONNECTION_TIMEOUT, as a crashed worker looks); {then}"

        return run

    async def close(self) -> None:
        if self._receiver is not None:
            await self._receiver.cleanup()
        await self.server.stop()
        self.remove_files()

    def remove_files(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
