"""Slack as it really fails: every Web API method the bot calls, answered with each kind of failure.

A proxy's 5xx page in text/plain or HTML, a reset connection, no answer at all, `{"ok": false}` and a refused
connection each end in a sentence the person reads (through the response URL when posting failed) and an audit row;
a 429 or a brief 503 only delays a message, which arrives once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from livekit.api import TokenVerifier

from dispatch_bot.bot.config import Settings
from dispatch_bot.bot.runtime import Runtime
from dispatch_bot.bot.slack_app import SlackSetupError, SlackTransport
from tests.conftest import BotUnderTest, all_text, read_audit
from tests.fakes.livekit_server import FakeLiveKit
from tests.fakes.slack_requests import slash_command_form
from tests.fakes.slack_server import RESPONSE_URL, Failure, FakeSlack
from tests.test_link import link_button, token_of
from tests.test_slack_blocks import check_payloads

TIMEOUT = 0.5  # the bot's time limit for one Slack call here: a stalled call fails fast
INTERNAL = "Something went wrong inside"

# Each kind of failure: how it is made, the words the sentence names it by, and how many attempts the bot makes
# (slack_sdk's retry handlers retry a 500/503 and a broken connection twice; a timeout, a 502 or ok:false never).
KINDS: dict[str, tuple[Callable[[], Failure], str, int]] = {
    "502 text/plain": (lambda: Failure.plain(502), "HTTP 502", 1),
    "503 HTML": (lambda: Failure.html(503), "HTTP 503", 3),
    "connection reset": (Failure.reset, "the connection was closed without an answer", 3),
    "timeout": (Failure.stall, "no answer in time", 1),
    "ok false": (lambda: Failure.not_ok("fatal_error"), "fatal_error", 1),
}


@pytest.fixture
async def start_fbot(make_settings: Callable[..., Settings], slack: FakeSlack) -> AsyncIterator[Callable[..., Any]]:
    """The bot's real HTTP endpoint, with a short Slack time limit and short pauses between retries."""
    started: list[tuple[BotUnderTest, web.AppRunner]] = []

    async def start(yaml_text: str = "", **env: str) -> BotUnderTest:
        runtime = await Runtime.open(make_settings(yaml_text, **env))
        transport = SlackTransport(runtime, timeout=TIMEOUT, retry_backoff=0.01)
        runner = web.AppRunner(transport.web_app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        bot = BotUnderTest(runtime, transport, f"http://127.0.0.1:{runner.addresses[0][1]}", slack)
        started.append((bot, runner))
        return bot

    yield start
    slack.heal()
    for bot, runner in started:
        await bot.transport.aclose()
        await bot.close()
        await runner.cleanup()
        await bot.runtime.close()


@pytest.fixture
async def fbot(start_fbot: Callable[..., Any]) -> BotUnderTest:
    return await start_fbot()  # type: ignore[no-any-return]


def actions_and_outcomes(bot: BotUnderTest) -> list[tuple[str, str]]:
    return [(r["action"], r["outcome"]) for r in bot.audit_rows()]


@pytest.mark.parametrize("kind", KINDS)
async def test_channel_message_failing_comes_through_the_response_url(
    fbot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack, kind: str
) -> None:
    make, words, attempts = KINDS[kind]
    livekit.add_room("my-room")
    livekit.register_worker("speech-processing")
    slack.fail("chat.postMessage", make())
    result = await fbot.command("captions my-room")
    assert result.status == 200
    first = await slack.wait_for_response(url=result.response_url)
    text = all_text(first.body)
    assert first.body["response_type"] == "in_channel"
    assert "sent *speech-processing* (captions) into *my-room*" in text
    assert f"Slack would not post this in the channel ({words}), so it came as the command's reply." in text
    assert INTERNAL not in text
    followup = await slack.wait_for_response(url=result.response_url, count=2)
    assert "The agent joined as" in all_text(followup.body)
    await fbot.transport.drain()
    assert len(slack.calls("chat.postMessage")) == attempts
    assert len(livekit.calls("CreateDispatch")) == 1
    rows = fbot.audit_rows()
    assert actions_and_outcomes(fbot) == [("dispatch", "ok"), ("delivery", "ok"), ("followup", "ok")]
    assert f"chat.postMessage: {words}" in rows[1]["detail"]
    assert "delivered through the response URL" in rows[1]["detail"]
    assert rows[1]["room"] == "my-room" and rows[1]["user_id"] == "U123"
    check_payloads(slack)  # the note is Block Kit within Slack's limits like the rest


@pytest.mark.parametrize("kind", KINDS)
async def test_follow_up_update_failing_comes_through_the_response_url(
    fbot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack, kind: str
) -> None:
    make, words, attempts = KINDS[kind]
    livekit.add_room("my-room")
    livekit.register_worker("speech-processing")
    slack.fail("chat.update", make())
    result = await fbot.command("captions my-room")
    await slack.wait_for_web_call("chat.postMessage")
    followup = await slack.wait_for_response(url=result.response_url)
    text = all_text(followup.body)
    assert "The agent joined as" in text
    assert f"Slack would not update the message above ({words}), so the result is here." in text
    assert followup.body["response_type"] == "in_channel" and followup.body["replace_original"] is False
    await fbot.transport.drain()
    assert len(slack.calls("chat.update")) == attempts
    rows = fbot.audit_rows()
    assert actions_and_outcomes(fbot) == [("dispatch", "ok"), ("followup", "ok"), ("delivery", "ok")]
    assert f"chat.update: {words}" in rows[2]["detail"]
    check_payloads(slack)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_join_link_without_a_display_name_is_still_a_join_link(
    fbot: BotUnderTest, slack: FakeSlack, kind: str
) -> None:
    make, _, attempts = KINDS[kind]
    slack.users["U123"]["profile"]["display_name"] = "Alice Display"
    slack.fail("users.info", make())
    body = await fbot.reply("link my-room")
    assert INTERNAL not in all_text(body)
    claims = TokenVerifier("devkey", "secret").verify(token_of(link_button(body)["url"]))
    assert claims.name == "alice"  # the request's user name stands in for the display name
    # users.info is a GET: aiohttp itself tries an idempotent request once more on a connection closed under it.
    assert attempts <= len(slack.calls("users.info")) <= 2 * attempts
    assert actions_and_outcomes(fbot) == [("link", "ok")]


async def test_the_display_name_is_used_when_users_info_answers(fbot: BotUnderTest, slack: FakeSlack) -> None:
    slack.users["U123"]["profile"]["display_name"] = "Alice Display"
    body = await fbot.reply("link my-room")
    assert TokenVerifier("devkey", "secret").verify(token_of(link_button(body)["url"])).name == "Alice Display"


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "ok false"])  # a response_url has no ok:false
async def test_a_reply_nobody_can_receive_is_audited(fbot: BotUnderTest, slack: FakeSlack, kind: str) -> None:
    make, words, attempts = KINDS[kind]
    slack.fail(RESPONSE_URL, make())
    result = await fbot.command("help")
    assert result.status == 200
    await slack.wait_for_response(url=result.response_url, count=attempts)
    await fbot.transport.drain()
    rows = fbot.audit_rows()
    assert actions_and_outcomes(fbot) == [("help", "ok"), ("delivery", "error")]
    assert f"response URL: {words}" in rows[1]["detail"] and "the person was not told" in rows[1]["detail"]


async def test_unreachable_web_api_still_answers_through_the_response_url(
    start_fbot: Callable[..., Any], livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    bot = await start_fbot(SLACK_API_URL=slack.refused_url)
    livekit.add_room("my-room")
    result = await bot.command("captions my-room")
    first = await slack.wait_for_response(url=result.response_url)
    assert "Slack would not post this in the channel (could not connect)" in all_text(first.body)
    link = await bot.reply("link my-room")
    assert link_button(link)["url"] and INTERNAL not in all_text(link)
    await bot.transport.drain()
    assert len(livekit.calls("CreateDispatch")) == 1
    assert ("delivery", "ok") in actions_and_outcomes(bot)


async def test_a_429_delays_the_message_and_never_duplicates_it(
    fbot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room")
    livekit.register_worker("speech-processing")
    slack.fail("chat.postMessage", Failure.rate_limited(retry_after=1))
    result = await fbot.command("captions my-room")
    await slack.wait_for_web_call("chat.postMessage", count=2, timeout=10)
    update = await slack.wait_for_web_call("chat.update")
    await fbot.transport.drain()
    first, second = slack.calls("chat.postMessage")
    assert (first.status, second.status) == (429, 200)
    assert second.received_at - first.received_at >= 1.0  # Retry-After: 1 was honoured
    assert "The agent joined as" in all_text(update.params)
    assert [r for r in slack.responses if r.url == result.response_url] == []  # no second copy
    assert len(livekit.calls("CreateDispatch")) == 1
    assert actions_and_outcomes(fbot) == [("dispatch", "ok"), ("followup", "ok")]


async def test_a_429_on_the_response_url_is_retried_once(fbot: BotUnderTest, slack: FakeSlack) -> None:
    slack.fail(RESPONSE_URL, Failure.rate_limited(retry_after=1))
    result = await fbot.command("help")
    delivered = await slack.wait_for_response(url=result.response_url, count=2, timeout=10)
    first = slack.responses[0]
    assert (first.status, delivered.status) == (429, 200)
    assert delivered.received_at - first.received_at >= 1.0
    assert "/dispatch" in all_text(delivered.body)
    await fbot.transport.drain()
    assert len(slack.responses) == 2
    assert actions_and_outcomes(fbot) == [("help", "ok")]


async def test_a_brief_503_delays_the_message_and_leaves_no_trace(
    fbot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room")
    slack.fail("chat.postMessage", Failure.html(503, times=1))
    await fbot.command("captions my-room")
    posted = await slack.wait_for_web_call("chat.postMessage", count=2)
    assert "Slack would not post" not in all_text(posted.params)
    await fbot.transport.drain()
    assert [c.status for c in slack.calls("chat.postMessage")] == [503, 200]
    assert actions_and_outcomes(fbot) == [("dispatch", "ok"), ("followup", "error")]  # no agent in this room


@pytest.mark.parametrize("method", ["auth.test", "apps.connections.open"])
@pytest.mark.parametrize("kind", [k for k in KINDS if k != "ok false"])
async def test_start_up_checks_name_a_failing_slack_not_the_token(
    make_settings: Callable[..., Settings], slack: FakeSlack, method: str, kind: str
) -> None:
    make, words, attempts = KINDS[kind]
    runtime = await Runtime.open(make_settings(SLACK_APP_TOKEN="xapp-test-token"))
    transport = SlackTransport(runtime, timeout=TIMEOUT, retry_backoff=0.01)
    slack.fail(method, make())
    try:
        with pytest.raises(SlackSetupError) as caught:
            await transport.check_tokens(socket_mode=True)
    finally:
        slack.heal()
        await transport.aclose()
        await runtime.close()
    sentence = str(caught.value)
    assert "rejected" not in sentence
    if kind in ("connection reset", "timeout"):
        assert sentence == f"Cannot reach Slack at {slack.api_url} ({words}): check the network and SLACK_API_URL."
    else:
        assert sentence.startswith(f"Slack's Web API at {slack.api_url} answered {words} instead of Slack's answer")
    assert len(slack.calls(method)) == attempts


async def test_start_up_check_names_a_rejected_token(make_settings: Callable[..., Settings], slack: FakeSlack) -> None:
    runtime = await Runtime.open(make_settings())
    transport = SlackTransport(runtime, timeout=TIMEOUT, retry_backoff=0.01)
    slack.fail("auth.test", Failure.not_ok("token_revoked"))
    try:
        with pytest.raises(SlackSetupError, match=r"^Slack rejected SLACK_BOT_TOKEN \(token_revoked\): copy it"):
            await transport.check_tokens(socket_mode=False)
    finally:
        await transport.aclose()
        await runtime.close()


async def test_socket_mode_reply_comes_through_the_response_url_when_posting_fails(
    make_settings: Callable[..., Settings], livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    settings = make_settings(SLACK_APP_TOKEN="xapp-test-token", SLACK_SIGNING_SECRET="")
    livekit.add_room("my-room")
    runtime = await Runtime.open(settings)
    transport = SlackTransport(runtime, timeout=TIMEOUT, retry_backoff=0.01)
    handler = transport.socket_mode_handler()
    slack.fail("chat.postMessage", Failure.plain(502))
    try:
        await handler.connect_async()  # type: ignore[no-untyped-call]
        await slack.wait_socket_connected()
        response_url = slack.new_response_url()
        envelope = await slack.send_envelope(
            "slash_commands", slash_command_form("captions my-room", response_url=response_url)
        )
        await slack.wait_for_ack(envelope)
        posted = await slack.wait_for_response(url=response_url)
        assert "Slack would not post this in the channel (HTTP 502)" in all_text(posted.body)
        await transport.drain()
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]
        await transport.aclose()
        await runtime.close()
    assert len(livekit.calls("CreateDispatch")) == 1
    assert ("delivery", "ok") in [(r["action"], r["outcome"]) for r in read_audit(Path(settings.database))]
