"""HTTP mode: signature checks, health, and Slack outages."""

from __future__ import annotations

import time

from tests.conftest import SIGNING_SECRET, BotUnderTest, all_text
from tests.fakes.livekit_server import FakeLiveKit
from tests.fakes.slack_requests import signed_headers, slash_command_body
from tests.fakes.slack_server import FakeSlack


async def test_forged_signature_is_rejected_with_no_side_effect(
    bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    body = slash_command_body("captions my-room", response_url=slack.new_response_url())
    status, _ = await bot.post(body, signed_headers(body, "someone-elses-secret"))
    assert status == 401
    assert livekit.requests == [] and slack.responses == [] and slack.web_calls == []
    assert bot.audit_rows() == []


async def test_tampered_body_is_rejected(bot: BotUnderTest, livekit: FakeLiveKit) -> None:
    body = slash_command_body("list my-room")
    headers = signed_headers(body, SIGNING_SECRET)
    status, _ = await bot.post(body.replace("list", "stop"), headers)
    assert status == 401
    assert livekit.requests == [] and bot.audit_rows() == []


async def test_stale_signature_is_rejected(bot: BotUnderTest, livekit: FakeLiveKit) -> None:
    body = slash_command_body("captions my-room")
    status, _ = await bot.post(body, signed_headers(body, SIGNING_SECRET, timestamp=int(time.time()) - 6 * 60))
    assert status == 401
    assert livekit.requests == [] and bot.audit_rows() == []


async def test_unsigned_request_is_rejected(bot: BotUnderTest) -> None:
    body = slash_command_body("help")
    status, _ = await bot.post(body, {"content-type": "application/x-www-form-urlencoded"})
    assert status == 401
    assert bot.audit_rows() == []


async def test_healthz(bot: BotUnderTest) -> None:
    async with bot.http.get(f"{bot.url}/healthz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"ok": True}


async def test_slack_down_loses_no_audit_row(bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack) -> None:
    livekit.add_room("my-room")
    livekit.register_worker("speech-processing")
    slack.down = True
    result = await bot.command("captions my-room")
    assert result.status == 200  # the ack is the HTTP answer itself; it needs no Slack API
    await slack.wait_for_web_call("chat.postMessage")  # tried, and failed with a 503
    await slack.wait_for_response(url=result.response_url, count=2)  # the fallback and the follow-up, failed too
    await bot.transport.drain()
    assert {c.status for c in slack.web_calls} | {r.status for r in slack.responses} == {503}
    rows = bot.audit_rows()
    assert [(r["action"], r["outcome"]) for r in rows] == [
        ("dispatch", "ok"),
        ("delivery", "error"),  # neither the channel message nor the response_url reached anyone
        ("followup", "ok"),
        ("delivery", "error"),
    ]
    assert len(livekit.calls("CreateDispatch")) == 1


async def test_private_channel_falls_back_to_the_response_url(
    bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    slack.not_in_channel.add("G555")
    livekit.add_room("my-room")
    result = await bot.command("captions my-room", channel_id="G555")
    posted = await slack.wait_for_response(url=result.response_url)
    assert posted.body["response_type"] == "in_channel"
    assert "sent *speech-processing* (captions) into *my-room*" in all_text(posted.body)
    update = await slack.wait_for_response(url=result.response_url, count=2)
    assert update.body["replace_original"] is True
    assert "No agent joined" in all_text(update.body)
