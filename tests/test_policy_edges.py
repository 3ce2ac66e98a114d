"""The policy's edges: patterns whatever the case, look-alike room names, `force` as its own action, user groups."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dispatch_bot.bot.config import ConfigError
from tests.conftest import BotUnderTest, all_text
from tests.fakes.livekit_server import FakeLiveKit
from tests.fakes.slack_server import Failure, FakeSlack
from tests.test_console import bot_env, run_cli

PROD = """
policy:
  rules:
    - name: nobody-touches-prod
      deny: [dispatch, stop, link]
      rooms: ["prod-*"]
    - name: no-second-agents-on-stage
      deny: [force]
      rooms: ["stage-*"]
    - name: the-rest
      allow: ["*"]
"""

GROUPS = """
policy:
  group_cache: 5m
  rules:
    - name: oncall-dispatches
      allow: [dispatch, stop]
      users: ["@oncall"]
    - name: sre-links
      allow: [link]
      users: [S0SRE]
    - name: everyone-reads
      allow: [list, agents, audit, rooms]
"""


def created_rooms(livekit: FakeLiveKit) -> list[str]:
    return [r.room for r in livekit.calls("CreateDispatch")]  # type: ignore[attr-defined]


# --- case and look-alike characters ------------------------------------------------------------------------------


@pytest.mark.parametrize("room", ["PROD-main", "Prod-eu", "prod-EU"])
async def test_room_patterns_match_whatever_the_case(
    start_bot: Callable[..., Any], livekit: FakeLiveKit, room: str
) -> None:
    bot = await start_bot(PROD)
    body = await bot.reply(f"captions {room}")
    assert "rule `nobody-touches-prod` of the policy denies it" in all_text(body)
    assert livekit.requests == []
    assert [(r["action"], r["outcome"], r["room"]) for r in bot.audit_rows()] == [("dispatch", "denied", room)]


async def test_agent_patterns_match_whatever_the_case(start_bot: Callable[..., Any], livekit: FakeLiveKit) -> None:
    bot = await start_bot(
        "policy:\n  rules:\n    - name: no-speech\n      deny: [dispatch]\n      agents: [SPEECH-*]\n"
        "    - allow: ['*']\n"
    )
    assert "rule `no-speech`" in all_text(await bot.reply("captions my-room"))
    assert livekit.calls("CreateDispatch") == []


@pytest.mark.parametrize(
    ("command", "room", "normal"),
    [
        ("captions {room}", "ｐｒｏｄ-main", "prod-main"),
        ("list {room}", "ＰＲＯＤ-main", "PROD-main"),
        ("link {room}", "oﬃce", "office"),
        ("stop captions {room}", "prod-main²", "prod-main2"),
    ],
)
async def test_room_names_that_normalization_would_change_are_refused(
    start_bot: Callable[..., Any], livekit: FakeLiveKit, command: str, room: str, normal: str
) -> None:
    bot = await start_bot(PROD)
    body = await bot.reply(command.format(room=room))
    text = all_text(body)
    assert f"The room name {room} uses look-alike characters" in text
    assert f"write it as {normal}." in text
    assert livekit.requests == []
    [row] = bot.audit_rows()
    assert row["outcome"] == "invalid"


async def test_an_ordinary_room_name_still_passes(start_bot: Callable[..., Any], livekit: FakeLiveKit) -> None:
    bot = await start_bot(PROD)
    livekit.add_room("Café-Ünïcode")
    assert "look-alike" not in all_text(await bot.reply("list Café-Ünïcode"))
    assert [(r["room"], r["outcome"]) for r in bot.audit_rows()] == [("Café-Ünïcode", "ok")]


# --- force ---------------------------------------------------------------------------------------------------------


async def test_force_is_allowed_wherever_dispatch_is(
    start_bot: Callable[..., Any], livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    bot = await start_bot(PROD)
    livekit.add_room("my-room", agents=["speech-processing"])
    await bot.command("captions my-room --force")
    await slack.wait_for_web_call("chat.postMessage")
    assert created_rooms(livekit) == ["my-room"]
    assert len(livekit.dispatches("my-room")) == 2


async def test_a_rule_naming_force_denies_it_where_dispatch_is_allowed(
    start_bot: Callable[..., Any], livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    bot = await start_bot(PROD)
    livekit.add_room("stage-1", agents=["speech-processing"])
    body = await bot.reply("captions stage-1 --force")
    assert "You may not force *speech-processing* in *stage-1*: rule `no-second-agents-on-stage`" in all_text(body)
    assert livekit.calls("CreateDispatch") == []
    assert bot.audit_rows()[-1]["outcome"] == "denied"
    await bot.command("captions stage-2")  # a first agent is a plain dispatch: allowed
    await slack.wait_for_web_call("chat.postMessage")
    assert created_rooms(livekit) == ["stage-2"]


async def test_force_is_denied_where_dispatch_is(start_bot: Callable[..., Any], livekit: FakeLiveKit) -> None:
    bot = await start_bot(PROD)
    body = await bot.reply("captions prod-1 --force")
    assert "You may not dispatch *speech-processing* in *prod-1*" in all_text(body)
    assert livekit.requests == []


# --- user groups ---------------------------------------------------------------------------------------------------


@pytest.fixture
async def gbot(start_bot: Callable[..., Any], slack: FakeSlack) -> BotUnderTest:
    slack.add_usergroup("S0ONCALL", "oncall", ["U123"])
    slack.add_usergroup("S0SRE", "sre", ["U777"])
    return await start_bot(GROUPS)  # type: ignore[no-any-return]


async def test_a_group_member_is_allowed_and_others_are_not(
    gbot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    await gbot.command("captions my-room")
    await slack.wait_for_web_call("chat.postMessage")
    assert created_rooms(livekit) == ["my-room"]
    body = await gbot.reply("captions my-room", user_id="U999")
    assert "You may not dispatch *speech-processing* in *my-room*: no rule of the policy allows it." in all_text(body)
    assert created_rooms(livekit) == ["my-room"]
    # Each group the policy names is read once for both commands: the cache holds for 5 minutes.
    assert sorted(c.params["usergroup"] for c in slack.calls("usergroups.users.list")) == ["S0ONCALL", "S0SRE"]
    assert len(slack.calls("usergroups.list")) == 1  # the handle, turned into its id


async def test_a_group_named_by_id(gbot: BotUnderTest, slack: FakeSlack) -> None:
    assert "You may not link" in all_text(await gbot.reply("link my-room"))
    body = await gbot.reply("link my-room", user_id="U777", user_name="sam")
    assert "Join my-room" in str(body["blocks"])
    assert {c.params["usergroup"] for c in slack.calls("usergroups.users.list")} == {"S0ONCALL", "S0SRE"}


@pytest.mark.parametrize(
    ("method", "failure", "why"),
    [
        ("usergroups.users.list", Failure.plain(502), "usergroups.users.list: HTTP 502"),
        ("usergroups.users.list", Failure.not_ok("missing_scope"), "usergroups.users.list: missing_scope"),
        ("usergroups.list", Failure.html(500), "usergroups.list: HTTP 500"),
        ("usergroups.list", Failure.not_ok("fatal_error"), "usergroups.list: fatal_error"),
    ],
)
async def test_a_group_slack_will_not_list_denies_with_a_sentence(
    start_bot: Callable[..., Any], livekit: FakeLiveKit, slack: FakeSlack, method: str, failure: Failure, why: str
) -> None:
    slack.add_usergroup("S0ONCALL", "oncall", ["U123"])
    slack.fail(method, failure)
    bot = await start_bot(GROUPS)
    body = await bot.reply("captions my-room")
    assert body["response_type"] == "ephemeral"
    assert (
        "You may not dispatch *speech-processing* in *my-room* now: the policy decides by the user group @oncall, "
        f"and Slack would not say who is in it ({why}). Nothing was done; try again in a minute."
    ) in all_text(body)
    assert livekit.requests == []
    [row] = bot.audit_rows()
    assert (row["action"], row["outcome"]) == ("dispatch", "denied")
    assert row["detail"] == f"user group @oncall of rule oncall-dispatches could not be read: {why}"
    slack.heal()
    await bot.command("captions my-room")  # Slack answers again: the next command reads the group afresh
    await slack.wait_for_web_call("chat.postMessage")
    assert created_rooms(livekit) == ["my-room"]


async def test_an_unreadable_group_in_a_deny_rule_denies(
    start_bot: Callable[..., Any], livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    slack.add_usergroup("S0GUESTS", "guests", ["U999"])
    slack.fail("usergroups.users.list", Failure.reset())
    bot = await start_bot(
        "policy:\n  rules:\n    - name: no-guests\n      deny: ['*']\n      users: ['@guests']\n"
        "    - name: the-rest\n      allow: ['*']\n"
    )
    body = await bot.reply("captions my-room")
    assert "the policy decides by the user group @guests" in all_text(body)
    assert livekit.requests == []


async def test_an_unknown_handle_denies_with_a_sentence(start_bot: Callable[..., Any], slack: FakeSlack) -> None:
    bot = await start_bot(GROUPS)
    body = await bot.reply("captions my-room")
    assert "(no user group of this workspace has that handle)" in all_text(body)


async def test_admins_by_group(start_bot: Callable[..., Any], livekit: FakeLiveKit, slack: FakeSlack) -> None:
    slack.add_usergroup("S0ADMINS", "admins", ["U123"])
    bot = await start_bot("policy:\n  admins: ['@admins']\n  rules: []\n")
    await bot.command("captions prod-1")
    await slack.wait_for_web_call("chat.postMessage")
    assert created_rooms(livekit) == ["prod-1"]
    assert "You may not" in all_text(await bot.reply("captions prod-1", user_id="U999"))


async def test_a_membership_change_is_seen_once_the_cache_expires(
    start_bot: Callable[..., Any], livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    slack.add_usergroup("S0ONCALL", "oncall", [])
    bot = await start_bot(GROUPS.replace("group_cache: 5m", "group_cache: 0s"))
    assert "You may not dispatch" in all_text(await bot.reply("captions my-room"))
    slack.usergroups["S0ONCALL"]["users"] = ["U123"]
    await bot.command("captions my-room")
    await slack.wait_for_web_call("chat.postMessage")
    assert created_rooms(livekit) == ["my-room"]
    assert [c.params["usergroup"] for c in slack.calls("usergroups.users.list")].count("S0ONCALL") == 2


async def test_help_hides_what_an_unreadable_group_would_allow(start_bot: Callable[..., Any], slack: FakeSlack) -> None:
    slack.add_usergroup("S0ONCALL", "oncall", ["U123"])
    slack.fail("usergroups.users.list", Failure.plain(502))
    bot = await start_bot(GROUPS)
    text = all_text(await bot.reply("help"))
    assert "/dispatch list" in text and "/dispatch stop" not in text


async def test_the_console_is_in_no_slack_group(
    make_settings: Any, tmp_path: Path, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    env = bot_env(make_settings(GROUPS), tmp_path / "dispatch-bot.yaml")
    code, out, _ = await run_cli(["console", "-c", "captions my-room"], env)
    assert code == 1 and "You may not dispatch speech-processing in my-room: no rule of the policy allows it" in out
    assert slack.web_calls == [] and livekit.requests == []


@pytest.mark.parametrize(
    ("yaml_text", "sentence"),
    [
        ("policy:\n  group_cache: soon\n  admins: [U1]\n", "`policy.group_cache` is 'soon'; write a duration"),
        ("policy:\n  admins: ['@on call']\n", "'@on call' is not a Slack user group: write its @handle"),
        ("policy:\n  cache: 5m\n  admins: [U1]\n", "the policy has admins:, rules: and group_cache:"),
    ],
)
def test_group_settings_mistakes_are_one_sentence(make_settings: Any, yaml_text: str, sentence: str) -> None:
    with pytest.raises(ConfigError, match=sentence.replace("(", r"\(")):
        make_settings(yaml_text)
