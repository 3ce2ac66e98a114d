"""The Socket Mode watchdog and /healthz: 200 only while Slack is connected (Socket Mode) and the audit database
takes a write; 503 with the reason otherwise, and 200 again once the connection is back."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from dispatch_bot.bot.runtime import Runtime
from dispatch_bot.bot.slack_app import SlackTransport, SocketWatch
from tests.conftest import BotUnderTest, read_audit
from tests.fakes.livekit_server import FakeLiveKit
from tests.fakes.slack_requests import slash_command_form
from tests.fakes.slack_server import Failure, FakeSlack
from tests.test_console import CLI, bot_env, free_port

FAST_CHECKS = "slack:\n  socket_check_interval: 50ms\n"
OPEN = "apps.connections.open"


async def health(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as resp:
        return resp.status, await resp.json()


async def round_trip(slack: FakeSlack, text: str = "help") -> None:
    """A command over the socket, acknowledged: the bot's end of the connection is live."""
    url = slack.new_response_url()
    envelope = await slack.send_envelope("slash_commands", slash_command_form(text, response_url=url))
    await slack.wait_for_ack(envelope)
    await slack.wait_for_response(url=url)


async def read_until(stream: asyncio.StreamReader, words: str) -> str:
    """The process's log up to and including the first line with `words` (the watch's own line)."""
    seen = ""
    while words not in seen:
        line = await asyncio.wait_for(stream.readline(), timeout=20)
        assert line, f"the log ended without {words!r}: {seen}"
        seen += line.decode()
    return seen


async def drop_and_refuse(slack: FakeSlack) -> None:
    """The connection dropped, and Slack will not hand out a new one until healed; returns once the bot has
    noticed (it asked for a new connection and was refused)."""
    asked = len(slack.calls(OPEN))
    slack.fail(OPEN, Failure.not_ok("internal_error"))
    assert await slack.drop_sockets() == 1
    await slack.wait_for_web_call(OPEN, count=asked + 1)


async def test_serve_in_socket_mode_reports_a_dropped_connection_and_its_return(
    make_settings: Callable[..., Any], tmp_path: Path, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    env = bot_env(make_settings(FAST_CHECKS), tmp_path / "dispatch-bot.yaml")
    port = free_port()
    env.update({"SLACK_APP_TOKEN": "xapp-test-token", "SLACK_SIGNING_SECRET": "", "PORT": str(port)})
    url = f"http://127.0.0.1:{port}"
    proc = await asyncio.create_subprocess_exec(
        *CLI, "serve", "--host", "127.0.0.1", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        await slack.wait_socket_connected(timeout=20)
        await round_trip(slack)
        assert await health(url) == (200, {"ok": True})

        await drop_and_refuse(slack)
        status, body = await health(url)
        assert status == 503
        assert body == {"ok": False, "reason": "Slack's Socket Mode connection is down; reconnecting"}
        assert proc.stderr is not None
        early = await read_until(proc.stderr, "Socket Mode: the connection to Slack dropped; reconnecting")

        slack.heal()
        await slack.wait_socket_connected(count=2, timeout=20)
        await round_trip(slack)
        assert await health(url) == (200, {"ok": True})
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    log = early + err.decode()
    assert proc.returncode == 0, log
    assert "Traceback" not in log
    assert "Socket Mode: the connection to Slack dropped; reconnecting" in log
    assert [r["action"] for r in read_audit(Path(env["DISPATCH_BOT_DB"]))] == ["help", "help"]


@pytest.fixture
async def socket_bot(make_settings: Callable[..., Any], slack: FakeSlack) -> AsyncIterator[tuple[SlackTransport, str]]:
    """A Socket Mode bot in this process, connected, with its port (for /healthz) listening."""
    settings = make_settings(FAST_CHECKS, SLACK_APP_TOKEN="xapp-test-token", SLACK_SIGNING_SECRET="")
    runtime = await Runtime.open(settings)
    transport = SlackTransport(runtime)
    runner = web.AppRunner(transport.web_app(slack_events=False))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    handler = transport.socket_mode_handler()
    try:
        await handler.connect_async()  # type: ignore[no-untyped-call]
        yield transport, f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]
        await runner.cleanup()
        await transport.aclose()
        await runtime.close()


async def test_the_watch_reconnects_when_the_clients_own_monitor_has_died(
    socket_bot: tuple[SlackTransport, str], slack: FakeSlack
) -> None:
    transport, url = socket_bot
    assert transport.socket is not None
    client = transport.socket.client
    await round_trip(slack)
    assert await health(url) == (200, {"ok": True})
    # slack_sdk's monitor task is what reconnects; when it has died (slack_sdk #1446) nothing else would.
    monitor = client.current_session_monitor
    assert monitor is not None
    monitor.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await monitor
    stop = asyncio.Event()
    watch = SocketWatch(transport.socket, interval=0.05)
    watching = asyncio.create_task(watch.run(stop))
    try:
        await drop_and_refuse(slack)  # only the watch asks for a new connection now
        status, body = await health(url)
        assert (status, body["reason"]) == (503, "Slack's Socket Mode connection is down; reconnecting")
        slack.heal()
        await slack.wait_socket_connected(count=2)
        await round_trip(slack)
        assert await health(url) == (200, {"ok": True})
        assert watch.reconnects == 1
    finally:
        stop.set()
        await watching


async def test_the_watch_leaves_a_live_connection_alone(
    socket_bot: tuple[SlackTransport, str], slack: FakeSlack
) -> None:
    transport, url = socket_bot
    assert transport.socket is not None
    await round_trip(slack)
    stop = asyncio.Event()
    watch = SocketWatch(transport.socket, interval=0.01)
    watching = asyncio.create_task(watch.run(stop))
    for _ in range(3):  # each round trip spans several checks of the watch
        await round_trip(slack)
    stop.set()
    await watching
    assert (watch.reconnects, slack.socket_connect_count, len(slack.calls(OPEN))) == (0, 1, 1)
    assert await health(url) == (200, {"ok": True})


async def test_http_mode_health_follows_the_audit_database(bot: BotUnderTest) -> None:
    assert await health(bot.url) == (200, {"ok": True})
    await bot.runtime.audit.close()  # the database can no longer be written
    status, body = await health(bot.url)
    assert status == 503
    assert body["ok"] is False
    assert body["reason"].startswith(f"the audit database {bot.runtime.settings.database} is not writable (")
