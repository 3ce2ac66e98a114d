"""LiveKit behind a failing proxy: HTML 503s, 429s and a plain web server each get their own true sentence."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import BotUnderTest, all_text
from tests.fakes.livekit_proxy import LiveKitProxy
from tests.fakes.livekit_server import FakeLiveKit
from tests.fakes.slack_server import FakeSlack


@pytest.fixture
async def proxy(livekit: FakeLiveKit) -> AsyncIterator[LiveKitProxy]:
    front = LiveKitProxy(livekit.url)
    await front.start()
    yield front
    await front.stop()


@pytest.fixture
async def bot_behind_proxy(start_bot: Callable[..., Any], proxy: LiveKitProxy) -> BotUnderTest:
    return await start_bot(LIVEKIT_URL=proxy.url)  # type: ignore[no-any-return]


async def test_a_proxys_html_503_on_a_running_room_is_not_called_not_running(
    bot_behind_proxy: BotUnderTest, livekit: FakeLiveKit, proxy: LiveKitProxy
) -> None:
    livekit.add_room("my-room")
    proxy.fail(503, times=None)
    text = all_text(await bot_behind_proxy.reply("list my-room"))
    assert "or a proxy in front of it, failed with HTTP 503 (Service Unavailable)" in text
    assert "not running" not in text
    assert bot_behind_proxy.audit_rows()[-1]["outcome"] == "error"

    rooms = all_text(await bot_behind_proxy.reply("rooms"))
    assert "failed with HTTP 503" in rooms and "Room  is not running" not in rooms


async def test_a_503_with_retry_after_is_tried_once_more_and_the_command_succeeds(
    bot_behind_proxy: BotUnderTest, livekit: FakeLiveKit, proxy: LiveKitProxy
) -> None:
    livekit.add_room("my-room")
    proxy.fail(503, times=1, retry_after=1)
    text = all_text(await bot_behind_proxy.reply("list my-room"))
    assert "*my-room*: 1 dispatch" in text
    assert [status for _, status in proxy.seen[:2]] == [503, 200]


async def test_a_429_is_retried_once_then_said_plainly(
    bot_behind_proxy: BotUnderTest, livekit: FakeLiveKit, proxy: LiveKitProxy, slack: FakeSlack
) -> None:
    livekit.add_room("my-room")
    proxy.fail(429, times=1, retry_after=1)
    await bot_behind_proxy.command("captions my-room")
    post = await slack.wait_for_web_call("chat.postMessage")
    assert "sent *speech-processing*" in all_text(post.params)
    assert len(livekit.calls("CreateDispatch")) == 1  # the 429'd request never reached LiveKit; the retry did once

    proxy.fail(429, times=None, body="rate limited", content_type="text/plain")
    text = all_text(await bot_behind_proxy.reply("list my-room"))
    assert "is limiting the bot's requests (HTTP 429)" in text
    assert [s for _, s in proxy.seen[-2:]] == [429, 429]  # one retry, no more


async def test_a_web_server_that_is_not_livekit_is_named_as_such(start_bot: Callable[..., Any]) -> None:
    async def not_implemented(_: web.Request) -> web.Response:
        return web.Response(status=501, text="Unsupported method ('POST')", content_type="text/plain")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", not_implemented)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        bot = await start_bot(LIVEKIT_URL=f"http://127.0.0.1:{runner.addresses[0][1]}")
        text = all_text(await bot.reply("list my-room"))
        assert "answered HTTP 501 (Not Implemented), not as LiveKit does: is LIVEKIT_URL your LiveKit" in text
        assert "no message" not in text
    finally:
        await runner.cleanup()
