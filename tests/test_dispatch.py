"""`/dispatch <agent> <room>` end to end: signed request in, real livekit-api out, SQLite audit, Slack messages."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web
from livekit.protocol.agent_dispatch import CreateAgentDispatchRequest

from tests.conftest import BotUnderTest, all_text
from tests.fakes.livekit_server import FakeLiveKit
from tests.fakes.slack_server import FakeSlack


def created(livekit: FakeLiveKit) -> list[CreateAgentDispatchRequest]:
    return livekit.calls("CreateDispatch")  # type: ignore[return-value]


async def test_dispatch_by_alias_posts_in_channel_and_follows_up_when_the_agent_joins(
    bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room")
    livekit.register_worker("speech-processing")

    result = await bot.command("captions my-room")
    assert result.status == 200
    assert "captions my-room" in result.body  # the ack, at once

    post = await slack.wait_for_web_call("chat.postMessage")
    text = all_text(post.params)
    assert post.params["channel"] == "C123"
    assert "<@U123> sent *speech-processing* (captions) into *my-room*" in text
    [request] = created(livekit)
    assert (request.agent_name, request.room, request.metadata) == ("speech-processing", "my-room", "")
    dispatch_id = livekit.dispatches("my-room")[-1].id
    assert f"`{dispatch_id}`" in text
    assert "Waiting up to 0.4 s" in text
    buttons = post.params["blocks"][-1]["elements"]
    assert [b["action_id"] for b in buttons] == ["dispatch_stop", "dispatch_refresh"]
    assert buttons[0]["value"] == f"stop {dispatch_id} my-room"
    assert buttons[0]["style"] == "danger" and "confirm" in buttons[0]

    update = await slack.wait_for_web_call("chat.update")
    # The follow-up edits the message it posted: the ts the Slack stand-in gave its first chat.postMessage.
    assert (update.params["channel"], update.params["ts"]) == ("C123", "1700000000.000100")
    identity = livekit.dispatches("my-room")[-1].state.jobs[0].state.participant_identity
    assert f"The agent joined as `{identity}`" in all_text(update.params)

    rows = bot.audit_rows()
    assert [(r["action"], r["outcome"]) for r in rows] == [("dispatch", "ok"), ("followup", "ok")]
    assert rows[0]["agent"] == "speech-processing" and rows[0]["room"] == "my-room"
    assert rows[0]["dispatch_id"] == dispatch_id
    assert rows[0]["raw_text"] == "captions my-room"
    assert rows[0]["user_name"] == "alice" and rows[0]["channel_id"] == "C123" and rows[0]["team_id"] == "T123"
    assert identity in rows[1]["detail"]


async def test_dispatch_by_agent_name(bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack) -> None:
    livekit.add_room("my-room")
    await bot.command('speech-processing my-room --metadata \'{"lang": "es"}\'')
    post = await slack.wait_for_web_call("chat.postMessage")
    assert "sent *speech-processing* into *my-room*" in all_text(post.params)
    [request] = created(livekit)
    assert request.metadata == '{"lang": "es"}'


async def test_second_dispatch_is_a_noop_with_the_existing_id(
    bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room")
    livekit.register_worker("speech-processing")
    await bot.command("captions my-room")
    await slack.wait_for_web_call("chat.update")
    first_id = livekit.dispatches("my-room")[-1].id

    body = await bot.reply("captions my-room")
    text = all_text(body)
    assert body["response_type"] == "ephemeral"
    identity = livekit.agent_participants("my-room")[0].identity
    assert f"is already in *my-room* as `{identity}` (dispatch `{first_id}`)" in text
    assert len(created(livekit)) == 1
    assert [d.agent_name for d in livekit.dispatches("my-room")] == ["", "speech-processing"]
    row = bot.audit_rows()[-1]
    assert (row["outcome"], row["dispatch_id"]) == ("noop", first_id)


async def test_noop_warns_when_the_existing_dispatch_has_no_job(bot: BotUnderTest, livekit: FakeLiveKit) -> None:
    livekit.add_room("my-room", agents=["speech-processing"])  # dispatched by a token, but no worker was up
    text = all_text(await bot.reply("captions my-room"))
    assert "was dispatched into *my-room* moments ago" in text and "on its way" in text
    assert created(livekit) == []


async def test_force_sends_another_agent(bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack) -> None:
    livekit.add_room("my-room", agents=["speech-processing"])
    await bot.command("captions my-room --force")
    await slack.wait_for_web_call("chat.postMessage")
    assert len(created(livekit)) == 1
    assert [d.agent_name for d in livekit.dispatches("my-room")] == ["speech-processing", "speech-processing"]
    assert "(forced)" in bot.audit_rows()[0]["detail"]


async def test_dry_run_sends_nothing(bot: BotUnderTest, livekit: FakeLiveKit) -> None:
    body = await bot.reply('captions my-room --metadata "hi there" --dry-run')
    text = all_text(body)
    assert body["response_type"] == "ephemeral"
    assert "nothing was sent" in text
    assert '{"agentName": "speech-processing", "room": "my-room", "metadata": "hi there"}' in text
    assert livekit.requests == []
    [row] = bot.audit_rows()
    assert (row["outcome"], row["detail"]) == ("ok", "dry run: nothing sent")


async def test_room_not_running_is_created_and_the_reply_says_when_it_closes(
    bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    await bot.command("captions new-room")
    post = await slack.wait_for_web_call("chat.postMessage")
    text = all_text(post.params)
    assert "*new-room* was not running: LiveKit created it for this dispatch" in text
    assert "closes in about 5 minutes" in text and "UTC) unless a person joins" in text
    assert "new-room" in livekit.room_names()
    # Nothing to deduplicate against in a room that did not exist: no ListDispatch before the create.
    methods = [r.method for r in livekit.requests]
    assert methods[: methods.index("CreateDispatch") + 1] == ["ListRooms", "CreateDispatch"]
    assert "room was not running" in bot.audit_rows()[0]["detail"]


async def test_no_agent_registered_follow_up_names_the_likely_causes(
    bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room")
    await bot.command("captions my-room")
    update = await slack.wait_for_web_call("chat.update")
    text = all_text(update.params)
    assert "No agent joined within 0.4 s" in text
    assert "no agent worker is registered under the name `speech-processing`" in text
    assert "processing: automatic" in text and "enabled: false" in text
    rows = bot.audit_rows()
    assert [(r["action"], r["outcome"]) for r in rows] == [("dispatch", "ok"), ("followup", "error")]
    assert "no agent joined" in rows[1]["detail"]


async def test_a_job_that_never_starts_running_is_told_apart_from_no_job(
    bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room")
    livekit.register_worker("speech-processing", joins=False)
    await bot.command("captions my-room")
    update = await slack.wait_for_web_call("chat.update")
    text = all_text(update.params)
    identity = livekit.dispatches("my-room")[-1].state.jobs[0].state.participant_identity
    assert f"A worker took the job (as `{identity}`), but within 0.4 s no `speech-processing` agent joined" in text
    assert "The agent joined" not in text
    assert "no agent worker is registered" not in text
    assert bot.audit_rows()[-1]["outcome"] == "error"


async def test_user_text_is_escaped_for_mrkdwn(bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack) -> None:
    await bot.command('captions <!channel> --metadata "<https://evil.example|click me> <@U999>"')
    post = await slack.wait_for_web_call("chat.postMessage")
    text = all_text(post.params)
    assert "<!channel>" not in text
    assert "*&lt;!channel&gt;*" in text
    # and Slack is told not to link or mention-ify anything on its own (#general, @here)
    assert all(b["text"]["verbatim"] is True for b in post.params["blocks"] if b["type"] == "section")
    [request] = created(livekit)
    assert request.room == "<!channel>"  # the room is what the user typed; only its display is escaped
    body = await bot.reply("list <!channel>")
    listed = all_text(body)
    assert "&lt;https://evil.example|click me&gt; &lt;@U999&gt;" in listed
    assert "<https://evil" not in listed and "<@U999>" not in listed


async def test_livekit_taking_10_s_still_gets_an_immediate_ack(
    start_bot,
    livekit: FakeLiveKit,
    slack: FakeSlack,  # type: ignore[no-untyped-def]
) -> None:
    bot = await start_bot("  request_timeout: 1s\n")  # the livekit section of the test config goes on
    assert bot.runtime.settings.request_timeout == 1.0
    livekit.add_room("my-room")
    livekit.delay = 10.0
    result = await bot.command("captions my-room")
    assert result.status == 200 and "captions my-room" in result.body
    # The ack came back before LiveKit answered (it may come before the first request even leaves).
    await livekit.wait_for(lambda: len(livekit.requests) >= 1)
    assert [r.status for r in livekit.requests] == [0]  # still held
    posted = await slack.wait_for_response(url=result.response_url)
    assert f"The LiveKit server at {livekit.url} did not answer within 1 s." in all_text(posted.body)
    [row] = bot.audit_rows()
    assert (row["outcome"], row["agent"], row["room"]) == ("error", "speech-processing", "my-room")
    assert livekit.calls("CreateDispatch") == []


async def test_concurrent_dispatches_of_one_agent_create_one(
    bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room")
    await asyncio.gather(*(bot.command("captions my-room") for _ in range(5)))
    await asyncio.gather(*(bot.command("captions new-room") for _ in range(5)))
    await bot.transport.drain()
    assert sorted(r.room for r in created(livekit)) == ["my-room", "new-room"]
    outcomes = sorted(r["outcome"] for r in bot.audit_rows() if r["action"] == "dispatch")
    assert outcomes == ["noop"] * 8 + ["ok"] * 2


async def test_a_url_that_is_not_livekit(start_bot, slack: FakeSlack) -> None:  # type: ignore[no-untyped-def]
    async def html(_: web.Request) -> web.Response:
        return web.Response(text="<html>OpenVidu</html>", content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", html)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        web_page = f"http://127.0.0.1:{runner.addresses[0][1]}"
        bot = await start_bot(LIVEKIT_URL=web_page)
        assert f"The server at {web_page} did not answer like LiveKit" in all_text(await bot.reply("list my-room"))
        bot = await start_bot(LIVEKIT_URL=slack.base_url)  # answers 404 to every Twirp path
        assert "has no LiveKit API there (HTTP 404)" in all_text(await bot.reply("list my-room"))
    finally:
        await runner.cleanup()


async def test_livekit_unreachable(start_bot, livekit: FakeLiveKit) -> None:  # type: ignore[no-untyped-def]
    bot = await start_bot(LIVEKIT_URL="http://127.0.0.1:9")
    body = await bot.reply("captions my-room")
    text = all_text(body)
    assert body["response_type"] == "ephemeral"
    assert "Cannot reach the LiveKit server at http://127.0.0.1:9" in text
    [row] = bot.audit_rows()
    assert (row["action"], row["outcome"], row["agent"], row["room"]) == (
        "dispatch",
        "error",
        "speech-processing",
        "my-room",
    )


async def test_wrong_secret_is_one_clear_sentence(start_bot, livekit: FakeLiveKit) -> None:  # type: ignore[no-untyped-def]
    bot = await start_bot(LIVEKIT_API_SECRET="not-the-secret")
    body = await bot.reply("captions my-room")
    text = all_text(body)
    assert "LIVEKIT_API_KEY or LIVEKIT_API_SECRET does not match" in text
    assert "not-the-secret" not in text
    assert [r.status for r in livekit.requests] == [401]
    assert "not-the-secret" not in bot.audit_rows()[0]["detail"]


async def test_metadata_over_the_server_limit(bot: BotUnderTest, livekit: FakeLiveKit) -> None:
    livekit.max_metadata_size = 10
    livekit.add_room("my-room")
    text = all_text(await bot.reply("captions my-room --metadata 'longer than ten bytes'"))
    assert "LiveKit refused the request: metadata size exceeds limits." in text
    assert "twirp error" not in text


async def test_concurrent_commands_each_leave_a_row(bot: BotUnderTest, livekit: FakeLiveKit) -> None:
    await asyncio.gather(*(bot.reply(f"list room-{i}") for i in range(10)))
    rows = bot.audit_rows()
    assert sorted(r["room"] for r in rows) == sorted(f"room-{i}" for i in range(10))


async def test_the_follow_up_looks_after_one_interval_not_at_once(
    start_bot: Callable[..., Any], livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    """A worker takes time to accept a job and join: a look right after the reply would find nothing and cost a
    call. The follow-up's first look comes one `followup_interval` later, and here finds the agent."""
    livekit.add_room("my-room")
    livekit.register_worker("speech-processing")
    livekit.job_delay = 0.15  # the agent joins 150 ms after its dispatch, within the first interval
    bot = await start_bot("livekit:\n  followup_interval: 600ms\n  followup_timeout: 10s\n  request_timeout: 2s\n")

    await bot.command("captions my-room")
    update = await slack.wait_for_web_call("chat.update")
    assert "The agent joined as" in all_text(update.params)

    methods = [r.method for r in livekit.requests]
    created_at = methods.index("CreateDispatch")
    # the look before the dispatch asked once; after it, the follow-up's one look found the agent
    assert methods[:created_at].count("ListParticipants") == 1
    assert methods[created_at + 1 :].count("ListParticipants") == 1
    assert [(r["action"], r["outcome"]) for r in bot.audit_rows()] == [("dispatch", "ok"), ("followup", "ok")]
