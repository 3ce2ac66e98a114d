"""Shared fixtures: the LiveKit and Slack stand-ins, real settings, and the bot's real HTTP endpoint on port 0."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from dispatch_bot.bot.config import Settings, load_settings
from dispatch_bot.bot.runtime import Runtime
from dispatch_bot.bot.slack_app import SlackTransport
from tests.fakes.livekit_server import FakeLiveKit
from tests.fakes.slack_requests import signed_headers, slash_command_body
from tests.fakes.slack_server import FakeSlack

SIGNING_SECRET = "test-signing-secret"
BOT_TOKEN = "xoxb-test-token"


def slack_escape(text: str) -> str:
    """What Slack does to &, < and > in a slash command's text before sending it."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@pytest.fixture
async def livekit() -> AsyncIterator[FakeLiveKit]:
    async with FakeLiveKit(job_delay=0.02, unavailable_delay=0.05) as server:
        yield server


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_token=BOT_TOKEN) as server:
        yield server


@pytest.fixture
def make_settings(tmp_path: Path, livekit: FakeLiveKit, slack: FakeSlack) -> Callable[..., Settings]:
    """Settings through the real loader: a YAML file with short waits, plus the environment of PRODUCT.md §7."""

    def make(yaml_text: str = "", **env_overrides: str) -> Settings:
        config = tmp_path / "dispatch-bot.yaml"
        config.write_text(
            "livekit:\n  followup_timeout: 400ms\n  followup_interval: 20ms\n  request_timeout: 2s\n" + yaml_text
        )
        env = {
            "LIVEKIT_URL": livekit.url,
            "LIVEKIT_API_KEY": "devkey",
            "LIVEKIT_API_SECRET": "secret",
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack.api_url,
            "DISPATCH_BOT_DB": str(tmp_path / "audit.db"),
            **env_overrides,
        }
        return load_settings(str(config), env=env)

    return make


@dataclass
class CommandResult:
    status: int
    body: str
    response_url: str


class BotUnderTest:
    """The bot's real aiohttp endpoint, driven with signed requests like Slack's."""

    def __init__(self, runtime: Runtime, transport: SlackTransport, url: str, slack: FakeSlack) -> None:
        self.runtime = runtime
        self.transport = transport
        self.url = url
        self.slack = slack
        self.http = aiohttp.ClientSession()

    async def post(self, body: str, headers: dict[str, str]) -> tuple[int, str]:
        async with self.http.post(f"{self.url}/slack/events", data=body, headers=headers) as resp:
            return resp.status, await resp.text()

    async def command(self, text: str, *, as_sent: bool = False, **form: Any) -> CommandResult:
        """Send `text` as a person typed it (Slack escapes &, < and >), or `as_sent` by Slack, markup and all."""
        response_url = self.slack.new_response_url()
        body = slash_command_body(text if as_sent else slack_escape(text), response_url=response_url, **form)
        status, answer = await self.post(body, signed_headers(body, SIGNING_SECRET))
        return CommandResult(status, answer, response_url)

    async def reply(self, text: str, **form: Any) -> dict[str, Any]:
        """Run a command whose answer comes back on its response_url; returns that body."""
        result = await self.command(text, **form)
        assert result.status == 200, result.body
        posted = await self.slack.wait_for_response(url=result.response_url)
        return posted.body

    def audit_rows(self) -> list[dict[str, Any]]:
        return read_audit(Path(self.runtime.settings.database))

    async def close(self) -> None:
        await self.http.close()


def read_audit(path: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM audit ORDER BY id")]


def all_text(body: dict[str, Any]) -> str:
    """Everything a person would read in a message: the fallback text and every block's text."""
    parts = [str(body.get("text", ""))]
    for block in body.get("blocks") or []:
        if "text" in block:
            parts.append(block["text"]["text"])
        for element in block.get("elements", []):
            parts.append(element.get("text", {}).get("text", ""))
    return "\n".join(parts)


@pytest.fixture
async def start_bot(make_settings: Callable[..., Settings], slack: FakeSlack) -> AsyncIterator[Callable[..., Any]]:
    started: list[tuple[BotUnderTest, web.AppRunner]] = []

    async def start(yaml_text: str = "", **env: str) -> BotUnderTest:
        runtime = await Runtime.open(make_settings(yaml_text, **env))
        transport = SlackTransport(runtime)
        runner = web.AppRunner(transport.web_app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        bot = BotUnderTest(runtime, transport, f"http://127.0.0.1:{port}", slack)
        started.append((bot, runner))
        return bot

    yield start
    for bot, runner in started:
        await bot.transport.aclose()
        await bot.close()
        await runner.cleanup()
        await bot.runtime.close()


@pytest.fixture
async def bot(start_bot: Callable[..., Any]) -> BotUnderTest:
    return await start_bot()  # type: ignore[no-any-return]
