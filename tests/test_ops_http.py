"""HTTP mode's endpoint under attack: odd timestamps, replays, forged bodies, idle and trickling connections."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.request.async_request import AsyncBoltRequest

from dispatch_bot.bot.config import Settings
from dispatch_bot.bot.http_guard import SlackRequestGuard, app_runner
from dispatch_bot.bot.runtime import Runtime
from dispatch_bot.bot.slack_app import SlackTransport
from tests.conftest import SIGNING_SECRET, BotUnderTest
from tests.fakes.livekit_server import FakeLiveKit
from tests.fakes.slack_requests import signed_headers, slash_command_body
from tests.fakes.slack_server import FakeSlack


@pytest.mark.parametrize("timestamp", ["abc", "12a", "", " 1", "1e9", "١٢٣٤٥٦٧٨٩٠", "9" * 40])
async def test_a_timestamp_that_is_not_a_number_is_refused(
    bot: BotUnderTest, livekit: FakeLiveKit, caplog: pytest.LogCaptureFixture, timestamp: str
) -> None:
    body = slash_command_body("list my-room")
    headers = {**signed_headers(body, SIGNING_SECRET), "X-Slack-Request-Timestamp": timestamp}
    with caplog.at_level(logging.DEBUG):
        status, answer = await bot.post(body, headers)
    assert (status, answer) == (401, '{"error": "invalid request"}')
    assert livekit.requests == [] and bot.audit_rows() == []
    assert "Traceback" not in caplog.text and not any(r.exc_info for r in caplog.records)


async def test_slacks_ssl_check_is_answered_and_runs_nothing(bot: BotUnderTest, livekit: FakeLiveKit) -> None:
    status, answer = await bot.post("ssl_check=1&token=x", {"content-type": "application/x-www-form-urlencoded"})
    assert (status, answer) == (200, "")
    assert livekit.requests == [] and bot.audit_rows() == []


async def test_a_replayed_request_is_refused(bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack) -> None:
    livekit.add_room("my-room")
    response_url = slack.new_response_url()
    body = slash_command_body("list my-room", response_url=response_url)
    headers = signed_headers(body, SIGNING_SECRET)
    assert (await bot.post(body, headers))[0] == 200
    await slack.wait_for_response(url=response_url)
    for _ in range(3):
        assert await bot.post(body, headers) == (401, '{"error": "invalid request"}')
    # The same command signed again (as Slack does for a new request) is a new request.
    later = signed_headers(body, SIGNING_SECRET, timestamp=int(time.time()) + 1)
    assert (await bot.post(body, later))[0] == 200
    await slack.wait_for_response(url=response_url, count=2)
    await bot.transport.drain()
    assert [r["raw_text"] for r in bot.audit_rows()] == ["list my-room", "list my-room"]


async def test_a_forged_body_is_not_logged(bot: BotUnderTest, caplog: pytest.LogCaptureFixture) -> None:
    marker = "someone-elses-private-text"
    body = slash_command_body(f"list {marker} " + "x" * 200_000)
    with caplog.at_level(logging.DEBUG):
        status, _ = await bot.post(body, signed_headers(body, "not-the-secret"))
    assert status == 401
    assert marker not in caplog.text
    [line] = [r.getMessage() for r in caplog.records if r.name.startswith(("dispatch_bot", "slack_bolt"))]
    assert line == "refused a request to /slack/events from 127.0.0.1: bad or stale signature"


async def test_bolts_own_signature_line_is_short(bot: BotUnderTest, caplog: pytest.LogCaptureFixture) -> None:
    # Should a request reach Bolt unsigned (Bolt checks again behind the guard), its log line has no body.
    body = slash_command_body("list someone-elses-private-text")
    request = AsyncBoltRequest(body=body, headers=signed_headers(body, "not-the-secret"))
    with caplog.at_level(logging.DEBUG):
        response = await bot.transport.app.async_dispatch(request)
    assert response.status == 401
    assert "someone-elses-private-text" not in caplog.text
    assert "Invalid request signature detected" in caplog.text


@pytest.fixture
async def short_timeouts(make_settings: Callable[..., Settings]) -> AsyncIterator[str]:
    """The bot's endpoint served the way `serve` serves it, with a short idle and header timeout."""
    runtime = await Runtime.open(make_settings())
    transport = SlackTransport(runtime)
    runner = app_runner(transport.web_app(), idle_timeout=0.3)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()
    await transport.aclose()
    await runtime.close()


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent until it closed the connection."""
    return await asyncio.wait_for(reader.read(), timeout=20)


async def test_an_idle_connection_is_closed(short_timeouts: str) -> None:
    host, port = short_timeouts.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    assert await closed_by_server(reader) == b""
    writer.close()


async def test_headers_that_trickle_in_are_cut_off(short_timeouts: str) -> None:
    host, port = short_timeouts.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    request = b"POST /slack/events HTTP/1.1\r\nHost: x\r\n" + b"X-Padding: " + b"a" * 10_000 + b"\r\n\r\n"
    sent, answer = 0, None
    while answer is None and sent < len(request):
        writer.write(request[sent : sent + 1])
        sent += 1
        try:  # nothing comes back while the headers are incomplete, until the server closes the connection
            answer = await asyncio.wait_for(reader.read(1), timeout=0.02)
        except TimeoutError:
            continue
    assert answer == b""
    assert reader.at_eof() and sent < len(request)
    writer.close()


async def test_a_kept_alive_connection_still_serves_requests(short_timeouts: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            async with http.get(f"http://{short_timeouts}/healthz") as resp:
                assert resp.status == 200


async def guarded_server(guard: SlackRequestGuard) -> tuple[web.AppRunner, str]:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"body": len(await request.read())})

    application = web.Application(middlewares=[guard.middleware])
    application.router.add_post("/slack/events", ok)
    runner = web.AppRunner(application)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"


async def post(url: str, body: str, headers: dict[str, str]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_a_full_memory_of_signatures_still_refuses_every_replay() -> None:
    now = time.time()
    guard = SlackRequestGuard(SIGNING_SECRET, max_remembered=3, clock=lambda: now)
    runner, url = await guarded_server(guard)
    try:
        sent = []
        for i in range(6):
            body = slash_command_body(f"list room-{i}")
            headers = signed_headers(body, SIGNING_SECRET, timestamp=int(now) - 60 + i)
            assert (await post(url, body, headers))[0] == 200
            sent.append((body, headers))
        for body, headers in sent:
            assert await post(url, body, headers) == (401, {"error": "invalid request"})
        body = slash_command_body("list room-new")
        assert (await post(url, body, signed_headers(body, SIGNING_SECRET, timestamp=int(now))))[0] == 200
    finally:
        await runner.cleanup()


async def test_a_body_that_trickles_in_is_cut_off() -> None:
    runner, url = await guarded_server(SlackRequestGuard(SIGNING_SECRET, body_timeout=0.2))
    body = slash_command_body("list my-room").encode()
    headers = signed_headers(body.decode(), SIGNING_SECRET)
    stalled = asyncio.Event()

    async def trickle() -> AsyncIterator[bytes]:
        yield body[:10]
        await stalled.wait()  # the rest never comes while the server waits
        yield body[10:]

    try:
        async with aiohttp.ClientSession() as http, http.post(url, data=trickle(), headers=headers) as resp:
            assert resp.status == 408
            assert await resp.json() == {"error": "request timeout"}
    finally:
        stalled.set()
        await runner.cleanup()
