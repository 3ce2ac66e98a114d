"""App Home: the Home tab published when a person opens it, and its Dispatch form running the slash command's path.

Every view the stand-in receives is checked with slack_sdk's view and block models (and Slack's 100 blocks)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

from dispatch_bot.bot.app_home import MODAL
from tests.conftest import SIGNING_SECRET, BotUnderTest, all_text
from tests.fakes.livekit_server import FakeLiveKit
from tests.fakes.slack_requests import APP_ID, block_action_payload, signed_headers
from tests.fakes.slack_server import FakeSlack
from tests.test_slack_blocks import check_payloads, write_catalog

RULES = 'rules:\n  - name: standups\n    rooms: "standup-*"\n    agents: [captions]\n    channel: C0RULES\n'


def checked_view(raw: dict[str, Any], kind: str) -> View:
    """The view through slack_sdk's models: each block validates and round-trips, within Slack's limits."""
    assert raw["type"] == kind
    assert 0 < len(raw["blocks"]) <= 100
    for block in raw["blocks"]:
        parsed = Block.parse(block)
        assert parsed is not None and parsed.to_dict() == block, block
    view = View(**raw)
    view.validate_json()
    return view


def view_text(raw: dict[str, Any]) -> str:
    parts: list[str] = []
    for block in raw["blocks"]:
        if isinstance(block.get("text"), dict):
            parts.append(block["text"]["text"])
        for element in block.get("elements", []):
            label = element.get("text", "")  # a button's label object, or a context block's text
            parts.append(str(label.get("text", "") if isinstance(label, dict) else label))
    return "\n".join(parts)


async def open_home(bot: BotUnderTest, user: str = "U123", count: int = 1) -> dict[str, Any]:
    """A signed app_home_opened event, as Slack sends it; returns the view the bot published."""
    event = {
        "token": "verification-token",
        "team_id": "T123",
        "api_app_id": APP_ID,
        "type": "event_callback",
        "event_id": f"Ev{time.time_ns()}",
        "event_time": int(time.time()),
        "event": {"type": "app_home_opened", "user": user, "channel": "D123", "tab": "home", "event_ts": "1.2"},
    }
    body = json.dumps(event)
    status, _ = await bot.post(body, signed_headers(body, SIGNING_SECRET, content_type="application/json"))
    assert status == 200
    call = await bot.slack.wait_for_web_call("views.publish", count=count)
    assert call.params["user_id"] == user
    checked_view(call.params["view"], "home")
    return dict(call.params["view"])


async def press_dispatch(bot: BotUnderTest, user: str = "U123") -> dict[str, Any]:
    """The Home tab's Dispatch button, pressed; returns the modal the bot opened."""
    payload = block_action_payload("home_dispatch", "open", user_id=user)
    payload["container"] = {"type": "view", "view_id": "VHOME"}
    payload["view"] = {"id": "VHOME", "type": "home", "blocks": [], "state": {"values": {}}}
    del payload["channel"]
    payload["trigger_id"] = "999.888.trigger"
    body = urlencode({"payload": json.dumps(payload)})
    status, _ = await bot.post(body, signed_headers(body, SIGNING_SECRET))
    assert status == 200
    call = await bot.slack.wait_for_web_call("views.open")
    assert call.params["trigger_id"] == "999.888.trigger"
    checked_view(call.params["view"], "modal")
    return dict(call.params["view"])


async def submit(
    bot: BotUnderTest, agent: str, room: str, *, keep: bool = False, user: str = "U123", channel: str = "C123"
) -> str:
    """The form submitted as Slack sends it (a response URL for the channel picked); returns that URL."""
    response_url = bot.slack.new_response_url()
    checked = [{"value": "keep", "text": {"type": "plain_text", "text": "--keep"}}] if keep else []
    payload = {
        "type": "view_submission",
        "team": {"id": "T123", "domain": "fake-workspace"},
        "user": {"id": user, "username": "alice", "name": "alice", "team_id": "T123"},
        "api_app_id": APP_ID,
        "token": "verification-token",
        "trigger_id": "123.456.abc",
        "view": {
            "id": "VMODAL",
            "type": "modal",
            "callback_id": MODAL,
            "private_metadata": "",
            "blocks": [],
            "state": {
                "values": {
                    "channel": {"channel": {"type": "conversations_select", "selected_conversation": channel}},
                    "agent": {"agent": {"type": "static_select", "selected_option": {"value": agent, "text": {}}}},
                    "room": {"room": {"type": "plain_text_input", "value": room}},
                    "keep": {"keep": {"type": "checkboxes", "selected_options": checked}},
                }
            },
        },
        "response_urls": [
            {"block_id": "channel", "action_id": "channel", "channel_id": channel, "response_url": response_url}
        ],
    }
    body = urlencode({"payload": json.dumps(payload)})
    status, answer = await bot.post(body, signed_headers(body, SIGNING_SECRET))
    assert (status, answer) == (200, "")  # the modal closes
    return response_url


async def test_the_home_tab_shows_dispatches_rooms_with_their_agents_rules_watches_and_commands(
    start_bot: Callable[..., Any], livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    bot = await start_bot(RULES)
    livekit.register_worker("speech-processing")
    livekit.add_room("standup", humans=["carol", "dave"])
    livekit.add_room("quiet", humans=["erin"])
    await bot.command("captions standup")
    await slack.wait_for_web_call("chat.update")
    await bot.command("captions quiet", user_id="U999", user_name="bob")
    await slack.wait_for_web_call("chat.update", count=2)
    audited = bot.audit_rows()

    view = await open_home(bot)
    text = view_text(view)
    [mine, team, rooms, supervision, commands] = [
        text.index(title)
        for title in (
            "Your latest dispatches",
            "The team's latest dispatches",
            "Rooms running now",
            "Rules and watches",
            "Commands",
        )
    ]
    assert mine < team < rooms < supervision < commands
    assert "*speech-processing* into *standup*: *ok, then ok*" in text[mine:team]
    assert "quiet" not in text[mine:team]  # bob's, not mine
    assert "by <@U999>: *speech-processing* into *quiet*" in text[team:rooms]
    assert "by <@U123>: *speech-processing* into *standup*" in text[team:rooms]
    [agent] = livekit.agent_participants("standup")
    assert agent.attributes["lk.agent_name"] == "speech-processing"
    expected = f"*standup* · 2 people · agents in the room: *speech-processing* (as `{agent.identity}`)"
    assert expected in text[rooms:supervision]
    assert "*quiet* · 1 person · agents in the room: *speech-processing*" in text[rooms:supervision]
    assert "• *standups*: rooms matching `standup-*` get *captions*, told in <#C0RULES>" in text
    assert "• *speech-processing* in *standup*: in the room" in text[supervision:commands]
    # Our own markup stays; the usage's angle brackets are escaped, as Slack shows them.
    assert "`/dispatch link &lt;room&gt; [&lt;agent&gt; ...] [--name NAME] [--ttl DURATION]`" in text[commands:]
    assert [b["elements"][0]["action_id"] for b in view["blocks"] if b["type"] == "actions"] == ["home_dispatch"]
    # Opening the Home tab is not a command: nothing is audited, nothing is sent to LiveKit.
    await bot.transport.drain()
    assert bot.audit_rows() == audited
    assert len(livekit.calls("CreateDispatch")) == 2


async def test_the_dispatch_form_runs_the_slash_commands_path(
    bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.register_worker("speech-processing")
    livekit.add_room("my-room")
    modal = await press_dispatch(bot)
    assert modal["callback_id"] == MODAL
    [agent_block] = [b for b in modal["blocks"] if b.get("block_id") == "agent"]
    options = [o["value"] for o in agent_block["element"]["options"]]
    assert options[:2] == ["captions", "speech-processing"]
    [channel_block] = [b for b in modal["blocks"] if b.get("block_id") == "channel"]
    assert channel_block["element"]["response_url_enabled"] is True

    await submit(bot, "captions", "my-room", keep=True)
    post = await slack.wait_for_web_call("chat.postMessage")
    assert post.params["channel"] == "C123"
    assert "<@U123> sent *speech-processing* (captions) into *my-room*" in all_text(post.params)
    update = await slack.wait_for_web_call("chat.update")
    assert "The agent joined as" in all_text(update.params)
    assert len(livekit.calls("CreateDispatch")) == 1
    rows = bot.audit_rows()
    assert [(r["action"], r["outcome"], r["user_id"], r["raw_text"], r["channel_id"]) for r in rows] == [
        ("dispatch", "ok", "U123", "captions my-room --keep", "C123"),
        ("followup", "ok", "U123", "captions my-room --keep", "C123"),
    ]
    assert bot.runtime.supervisor is not None
    [watch] = await bot.runtime.supervisor.store.open_watches("my-room")
    assert watch.keep is True

    # The Home tab, opened again, lists it.
    text = view_text(await open_home(bot))
    assert "*speech-processing* into *my-room*: *ok, then ok*" in text


async def test_a_form_the_grammar_refuses_is_answered_in_the_channel_and_changes_nothing(
    bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    url = await submit(bot, "captions", "my room; rm -rf /")
    answer = await slack.wait_for_response(url=url)
    assert answer.body["response_type"] == "ephemeral"
    assert "The room name contains a space, control or invisible character" in all_text(answer.body)
    assert livekit.calls("CreateDispatch") == []
    row = bot.audit_rows()[-1]
    assert (row["action"], row["outcome"], row["raw_text"]) == ("dispatch", "invalid", "captions 'my room; rm -rf /'")


async def test_the_policy_decides_what_the_home_tab_shows_and_the_form_is_refused_like_the_command(
    start_bot: Callable[..., Any], livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    policy = "policy:\n  admins: [UADMIN1]\n  rules:\n    - name: guests-list\n      allow: [list]\n"
    bot = await start_bot(policy)
    view = await open_home(bot, user="U777")
    text = view_text(view)
    assert "Your latest dispatches" in text and "Commands" in text
    for hidden in ("The team's latest dispatches", "Rooms running now", "Rules and watches"):
        assert hidden not in text
    assert not [b for b in view["blocks"] if b["type"] == "actions"]  # no Dispatch button for them
    url = await submit(bot, "captions", "my-room", user="U777")
    answer = await slack.wait_for_response(url=url)
    assert "You may not dispatch *speech-processing* in *my-room*" in all_text(answer.body)
    assert livekit.calls("CreateDispatch") == []
    row = bot.audit_rows()[-1]
    assert (row["user_id"], row["action"], row["outcome"]) == ("U777", "dispatch", "denied")
    admin = view_text(await open_home(bot, user="UADMIN1", count=2))
    assert "The team's latest dispatches" in admin and "Rooms running now" in admin


async def test_a_home_tab_slack_will_not_take_is_one_log_line(bot: BotUnderTest, slack: FakeSlack, caplog: Any) -> None:
    from tests.fakes.slack_server import Failure

    slack.fail("views.publish", Failure.plain(502))
    await open_home_expecting_failure(bot)
    await bot.transport.drain()
    assert "could not publish the Home tab for U123: HTTP 502" in caplog.text
    assert "Traceback" not in caplog.text


async def open_home_expecting_failure(bot: BotUnderTest) -> None:
    event = {
        "team_id": "T123",
        "api_app_id": APP_ID,
        "type": "event_callback",
        "event_id": "Ev1",
        "event_time": int(time.time()),
        "event": {"type": "app_home_opened", "user": "U123", "channel": "D123", "tab": "home", "event_ts": "1.2"},
    }
    body = json.dumps(event)
    status, _ = await bot.post(body, signed_headers(body, SIGNING_SECRET, content_type="application/json"))
    assert status == 200
    await bot.slack.wait_for_web_call("views.publish")


async def test_the_home_tab_and_the_form_over_socket_mode(
    make_settings: Callable[..., Any], livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    from dispatch_bot.bot.runtime import Runtime
    from dispatch_bot.bot.slack_app import SlackTransport

    livekit.register_worker("speech-processing")
    livekit.add_room("my-room")
    runtime = await Runtime.open(make_settings(SLACK_APP_TOKEN="xapp-test-token", SLACK_SIGNING_SECRET=""))
    transport = SlackTransport(runtime)
    handler = transport.socket_mode_handler()
    try:
        await handler.connect_async()  # type: ignore[no-untyped-call]
        await slack.wait_socket_connected()
        event = {"type": "app_home_opened", "user": "U123", "channel": "D123", "tab": "home", "event_ts": "1.2"}
        callback = {
            "team_id": "T123",
            "api_app_id": APP_ID,
            "type": "event_callback",
            "event_id": "Ev1",
            "event": event,
        }
        await slack.wait_for_ack(await slack.send_envelope("events_api", callback))
        published = await slack.wait_for_web_call("views.publish")
        assert "Your latest dispatches" in view_text(checked_view(published.params["view"], "home").to_dict())

        response_url = slack.new_response_url()
        form = {
            "type": "view_submission",
            "team": {"id": "T123"},
            "user": {"id": "U123", "username": "alice", "team_id": "T123"},
            "api_app_id": APP_ID,
            "view": {
                "id": "VMODAL",
                "type": "modal",
                "callback_id": MODAL,
                "state": {
                    "values": {
                        "channel": {"channel": {"type": "conversations_select", "selected_conversation": "C123"}},
                        "agent": {"agent": {"type": "static_select", "selected_option": {"value": "captions"}}},
                        "room": {"room": {"type": "plain_text_input", "value": "my-room"}},
                        "keep": {"keep": {"type": "checkboxes", "selected_options": []}},
                    }
                },
            },
            "response_urls": [
                {"block_id": "channel", "action_id": "channel", "channel_id": "C123", "response_url": response_url}
            ],
        }
        await slack.wait_for_ack(await slack.send_envelope("interactive", form))
        post = await slack.wait_for_web_call("chat.postMessage")
        assert "<@U123> sent *speech-processing* (captions) into *my-room*" in all_text(post.params)
        await slack.wait_for_web_call("chat.update")
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]
        await transport.aclose()
        await runtime.close()
    assert len(livekit.calls("CreateDispatch")) == 1


async def test_many_rooms_and_agents_stay_within_slacks_limits_and_say_what_is_left_out(
    start_bot: Callable[..., Any], livekit: FakeLiveKit, slack: FakeSlack, tmp_path: Path
) -> None:
    names = write_catalog(tmp_path / "agents", 150, name_length=40)
    bot = await start_bot(OPENVIDU_AGENTS_DIR=str(tmp_path / "agents"))
    long_room = "r" * 250
    for n in range(30):
        livekit.add_room(f"room-{n:02d}", humans=[f"p{i}" for i in range(3)])
    livekit.add_room(long_room)
    text = view_text(await open_home(bot))
    assert "…and 21 more rooms: `/dispatch rooms` lists them all." in text  # 31 running, 10 shown
    assert "*room-00* · 3 people · no agent in the room" in text
    modal = await press_dispatch(bot)
    [agent_block] = [b for b in modal["blocks"] if b.get("block_id") == "agent"]
    # 151 choices do not fit a menu's 100 options: the agent is typed, and the hint says where the list is.
    assert agent_block["element"]["type"] == "plain_text_input"
    assert agent_block["hint"]["text"] == "One of 151 agents and aliases: /dispatch agents lists them."
    await submit(bot, names[149], long_room)
    post = await slack.wait_for_web_call("chat.postMessage")
    assert f"sent *{names[149]}* into *{long_room}*" in all_text(post.params)
    check_payloads(slack)


async def test_http_mode_answers_slacks_url_verification_for_the_event_subscription(bot: BotUnderTest) -> None:
    """Enabling the events' request URL (manifest-http.yml) makes Slack send a signed challenge first."""
    body = json.dumps(
        {
            "token": "verification-token",
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
            "type": "url_verification",
        }
    )
    status, answer = await bot.post(body, signed_headers(body, SIGNING_SECRET, content_type="application/json"))
    assert status == 200
    assert "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" in answer
