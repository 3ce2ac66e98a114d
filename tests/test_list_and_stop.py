"""`list` and `stop` end to end, including rooms that are not running and the automatic dispatch."""

from __future__ import annotations

from tests.conftest import BotUnderTest, all_text
from tests.fakes.livekit_server import FakeLiveKit
from tests.fakes.slack_server import FakeSlack


async def test_list_shows_the_automatic_entry_and_job_state(
    bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room", humans=["alice", "bob"])
    livekit.register_worker("speech-processing")
    await bot.command("captions my-room --metadata lang=es")
    await slack.wait_for_web_call("chat.update")
    automatic, captions = livekit.dispatches("my-room")

    body = await bot.reply("list my-room")
    text = all_text(body)
    assert body["response_type"] == "ephemeral"
    assert "*my-room*: 2 dispatches, 2 people in the room." in text
    assert f"_automatic_ `{automatic.id}`" in text and "reaches only agents in automatic mode" in text
    assert f"*speech-processing* `{captions.id}`" in text
    assert f"in the room as {captions.state.jobs[0].state.participant_identity} (joined " in text
    assert "waiting for its agent to join" in text  # the automatic one, moments old
    assert "metadata `lang=es`" in text
    assert "s ago" in text
    row = bot.audit_rows()[-1]
    assert (row["action"], row["outcome"], row["room"]) == ("list", "ok", "my-room")


async def test_list_on_a_room_that_is_not_running_answers_without_waiting_on_a_503(
    bot: BotUnderTest, livekit: FakeLiveKit
) -> None:
    body = await bot.reply("list ghost-room")
    assert "*ghost-room* is not running, so it has no dispatches." in all_text(body)
    assert [r.method for r in livekit.requests] == ["ListRooms"]
    assert bot.audit_rows()[-1]["detail"] == "room not running"


async def test_stop_by_agent_removes_every_dispatch_of_that_agent(
    bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room", agents=["speech-processing", "speech-processing", "other-agent"])
    ids = [d.id for d in livekit.dispatches("my-room") if d.agent_name == "speech-processing"]

    await bot.command("stop captions my-room")
    post = await slack.wait_for_web_call("chat.postMessage")
    text = all_text(post.params)
    assert f"<@U123> stopped *speech-processing* in *my-room* (dispatch `{ids[0]}`, `{ids[1]}`)." in text
    assert [d.agent_name for d in livekit.dispatches("my-room")] == ["other-agent"]
    assert sorted(r.dispatch_id for r in livekit.calls("DeleteDispatch")) == sorted(ids)  # type: ignore[attr-defined]
    row = bot.audit_rows()[-1]
    assert (row["action"], row["outcome"], row["agent"], row["dispatch_id"]) == (
        "stop",
        "ok",
        "speech-processing",
        ",".join(ids),
    )


async def test_stop_by_id(bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack) -> None:
    livekit.add_room("my-room", agents=["speech-processing", "speech-processing"])
    first, second = livekit.dispatches("my-room")
    await bot.command(f"stop {first.id} my-room")
    post = await slack.wait_for_web_call("chat.postMessage")
    assert f"stopped *speech-processing* in *my-room* (dispatch `{first.id}`)" in all_text(post.params)
    assert [d.id for d in livekit.dispatches("my-room")] == [second.id]


async def test_stop_unknown_id_says_so(bot: BotUnderTest, livekit: FakeLiveKit) -> None:
    livekit.add_room("my-room", agents=["speech-processing"])
    body = await bot.reply("stop AD_doesnotexist my-room")
    text = all_text(body)
    assert body["response_type"] == "ephemeral"
    assert "There is no dispatch `AD_doesnotexist` in *my-room*." in text
    assert len(livekit.dispatches("my-room")) == 1
    assert bot.audit_rows()[-1]["outcome"] == "invalid"


async def test_stop_agent_not_there_is_a_noop(bot: BotUnderTest, livekit: FakeLiveKit) -> None:
    livekit.add_room("my-room")
    body = await bot.reply("stop captions my-room")
    assert "*speech-processing* has no dispatch in *my-room*; nothing was stopped." in all_text(body)
    assert livekit.calls("DeleteDispatch") == []
    assert bot.audit_rows()[-1]["outcome"] == "noop"


async def test_stop_on_a_room_that_is_not_running(bot: BotUnderTest, livekit: FakeLiveKit) -> None:
    body = await bot.reply("stop captions ghost-room")
    assert "*ghost-room* is not running, so there is nothing to stop." in all_text(body)
    assert [r.method for r in livekit.requests] == ["ListRooms"]


async def test_stop_button_runs_as_the_person_who_presses_it(
    bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    from tests.conftest import SIGNING_SECRET
    from tests.fakes.slack_requests import block_action_body, signed_headers

    livekit.add_room("my-room")
    await bot.command("captions my-room")
    post = await slack.wait_for_web_call("chat.postMessage")
    stop = post.params["blocks"][-1]["elements"][0]
    await slack.wait_for_web_call("chat.update")

    body = block_action_body(
        "dispatch_stop", stop["value"], user_id="U777", user_name="bob", response_url=slack.new_response_url()
    )
    status, _ = await bot.post(body, signed_headers(body, SIGNING_SECRET))
    assert status == 200
    second = await slack.wait_for_web_call("chat.postMessage", count=2)
    assert "<@U777> stopped *speech-processing* in *my-room*" in all_text(second.params)
    assert [d.agent_name for d in livekit.dispatches("my-room")] == [""]
    row = bot.audit_rows()[-1]
    assert (row["user_id"], row["action"], row["outcome"]) == ("U777", "stop", "ok")


async def test_buttons_work_for_a_room_name_with_quotes_and_backslashes(
    bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    from tests.conftest import SIGNING_SECRET
    from tests.fakes.slack_requests import block_action_body, signed_headers

    room = "it's\\odd"
    livekit.add_room(room)
    await bot.command(f'captions "{room}"'.replace("'s", "'s"))
    post = await slack.wait_for_web_call("chat.postMessage")
    assert [r.room for r in livekit.calls("CreateDispatch")] == [room]  # type: ignore[attr-defined]
    stop, refresh = post.params["blocks"][-1]["elements"]
    refresh_url = slack.new_response_url()
    body = block_action_body("dispatch_refresh", refresh["value"], response_url=refresh_url)
    assert (await bot.post(body, signed_headers(body, SIGNING_SECRET)))[0] == 200
    listed = await slack.wait_for_response(url=refresh_url)
    assert "1 person in the room" in all_text(listed.body) and "speech-processing" in all_text(listed.body)
    body = block_action_body("dispatch_stop", stop["value"], response_url=slack.new_response_url())
    assert (await bot.post(body, signed_headers(body, SIGNING_SECRET)))[0] == 200
    await livekit.wait_for(lambda: [d.agent_name for d in livekit.dispatches(room)] == [""])


async def test_rooms_lists_what_is_running(bot: BotUnderTest, livekit: FakeLiveKit) -> None:
    livekit.add_room("standup", humans=["alice", "bob"])
    livekit.add_room("demo", humans=["carol"])
    body = await bot.reply("rooms")
    text = all_text(body)
    assert body["response_type"] == "ephemeral"
    assert f"*2* rooms running on {livekit.url}:" in text
    assert "• *demo* · 1 person · created " in text and "• *standup* · 2 people · created " in text
    assert text.index("*demo*") < text.index("*standup*")
    [request] = livekit.calls("ListRooms")
    assert list(request.names) == []  # type: ignore[attr-defined]
    assert bot.audit_rows()[-1]["detail"] == "2 rooms"
