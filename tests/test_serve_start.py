"""`serve`'s start: the port answers /healthz from the database while the rest of the bot loads; Slack's requests
that come meanwhile wait for it and are answered then."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from dispatch_bot.bot.config import Settings
from dispatch_bot.bot.runtime import Runtime
from dispatch_bot.bot.slack_app import SlackTransport
from dispatch_bot.bot.starting import SOCKET_NOT_YET, StartingBot, serve_web_app
from tests.conftest import SIGNING_SECRET, all_text
from tests.fakes.slack_requests import signed_headers, slash_command_body
from tests.fakes.slack_server import FakeSlack
from tests.test_console import CLI


class Port:
    """A StartingBot behind the real aiohttp endpoint, on port 0, with a real audit database."""

    def __init__(self, runtime: Runtime, starting: StartingBot, runner: web.AppRunner) -> None:
        self.runtime = runtime
        self.starting = starting
        self.runner = runner
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"


@pytest.fixture
async def starting_port(make_settings: Callable[..., Settings]) -> AsyncIterator[Callable[..., Any]]:
    opened: list[Port] = []

    async def open_port(*, socket_mode: bool = False) -> Port:
        env = {"SLACK_APP_TOKEN": "xapp-test-token"} if socket_mode else {}
        runtime = await Runtime.open(make_settings(**env))
        starting = StartingBot(runtime.settings, runtime.audit, socket_mode=socket_mode)
        runner = web.AppRunner(serve_web_app(starting, runtime.settings, slack_events=not socket_mode))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = Port(runtime, starting, runner)
        opened.append(port)
        return port

    yield open_port
    for port in opened:
        await port.runner.cleanup()
        bot = port.starting._bot
        if isinstance(bot, SlackTransport):
            await bot.aclose()
        await port.runtime.close()


async def health(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as resp:
        return resp.status, await resp.json()


async def test_healthz_answers_from_the_database_before_the_bot_is_loaded(starting_port: Callable[..., Any]) -> None:
    port = await starting_port()
    assert await health(port.url) == (200, {"ok": True})
    await port.runtime.audit.close()  # a database that no longer takes a write is said so, loaded or not
    status, body = await health(port.url)
    assert status == 503 and "is not writable" in body["reason"]


async def test_socket_mode_is_not_healthy_until_its_connection_opens(starting_port: Callable[..., Any]) -> None:
    port = await starting_port(socket_mode=True)
    assert await health(port.url) == (503, {"ok": False, "reason": SOCKET_NOT_YET})


async def test_a_command_sent_while_the_bot_loads_waits_and_is_answered(
    starting_port: Callable[..., Any], slack: FakeSlack
) -> None:
    port = await starting_port()
    response_url = slack.new_response_url()
    body = slash_command_body("help", response_url=response_url)
    async with aiohttp.ClientSession() as http:
        sending = asyncio.create_task(
            http.post(f"{port.url}/slack/events", data=body, headers=signed_headers(body, SIGNING_SECRET))
        )
        # The port takes the request and answers other requests while it waits for the bot.
        assert await health(port.url) == (200, {"ok": True})
        assert not sending.done()
        port.starting.ready(SlackTransport(port.runtime))
        async with await sending as resp:
            assert resp.status == 200
    posted = await slack.wait_for_response(url=response_url)
    assert posted.body["response_type"] == "ephemeral"
    assert "/dispatch &lt;agent&gt; &lt;room&gt;" in all_text(posted.body)


async def test_what_serve_imports_before_it_listens_loads_no_bolt_livekit_or_prometheus() -> None:
    # The modules serve's start uses until its port listens (cli._serve); Bolt, livekit-api, protobuf and
    # prometheus-client load after, in a thread.
    script = (
        "import sys\n"
        "import dispatch_bot.bot.cli, dispatch_bot.bot.config, dispatch_bot.bot.log_redaction\n"
        "import dispatch_bot.bot.db_path, dispatch_bot.bot.http_guard, dispatch_bot.bot.slack_web\n"
        "import dispatch_bot.bot.starting, dispatch_bot.bot.agent_catalog, dispatch_bot.bot.audit_store\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(loaded & {'livekit', 'slack_bolt', 'google', 'prometheus_client', 'jwt'}))\n"
    )
    proc = await asyncio.create_subprocess_exec(
        *CLI[:1], "-c", script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == "[]"
