"""Per-person limits: `limits.per_user_per_minute` write commands (dispatch, force, stop, link and their buttons)
per Slack person; the next one is refused with when to try again and audited `denied`; others and reads go on."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

import pytest

from dispatch_bot.bot.config import ConfigError
from dispatch_bot.bot.console import run_once
from tests.conftest import SIGNING_SECRET, BotUnderTest, all_text
from tests.fakes.livekit_server import FakeLiveKit
from tests.fakes.slack_requests import block_action_body, signed_headers
from tests.fakes.slack_server import FakeSlack

REFUSED = re.compile(
    r"You have run 10 commands that change something in the last minute, the most one person may\. "
    r"Nothing was done; try again in (\d+) s\."
)


async def press(bot: BotUnderTest, action_id: str, value: str, **who: str) -> str:
    """A button pressed in Slack; returns the response URL its answer goes to."""
    url = bot.slack.new_response_url()
    body = block_action_body(action_id, value, response_url=url, **who)
    status, _ = await bot.post(body, signed_headers(body, SIGNING_SECRET))
    assert status == 200
    return url


async def test_the_eleventh_write_in_a_minute_is_refused_and_others_go_on(
    bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("room-1")
    livekit.register_worker("speech-processing")
    # Ten writes of every kind, commands and buttons: a dispatch, a forced one, seven links, a stop by button.
    await bot.command("captions room-1")
    await slack.wait_for_web_call("chat.update")
    await bot.command("captions room-1 --force")
    await slack.wait_for_web_call("chat.update", count=2)
    for n in range(7):
        assert f"Your join link for *room-{n}*" in all_text(await bot.reply(f"link room-{n}"))
    await press(bot, "dispatch_stop", "stop captions room-1")
    await slack.wait_for_web_call("chat.postMessage", count=3)
    assert [d.agent_name for d in livekit.dispatches("room-1")] == [""]
    rows = bot.audit_rows()
    assert [r["outcome"] for r in rows if r["action"] in ("dispatch", "link", "stop")] == ["ok"] * 10

    # The eleventh, as a command and as a button: a sentence with the wait, nothing done, audited denied.
    refused = all_text(await bot.reply("captions room-1"))
    match = REFUSED.search(refused)
    assert match is not None, refused
    assert 1 <= int(match.group(1)) <= 60
    url = await press(bot, "dispatch_again", "captions room-1")
    assert REFUSED.search(all_text((await slack.wait_for_response(url=url)).body))
    assert len(livekit.calls("CreateDispatch")) == 2
    assert [d.agent_name for d in livekit.dispatches("room-1")] == [""]
    refused_rows = bot.audit_rows()[-2:]
    for row in refused_rows:
        assert (row["user_id"], row["action"], row["outcome"], row["agent"], row["room"]) == (
            "U123",
            "dispatch",
            "denied",
            "speech-processing",
            "room-1",
        )
        assert row["detail"].startswith("limit: 10 write commands a minute per person; try again in ")

    # Reads are not limited, and another person is not affected.
    assert "room-1" in all_text(await bot.reply("rooms"))
    assert "*room-1*" in all_text(await bot.reply("list room-1"))
    await bot.command("captions room-1", user_id="U999", user_name="bob")
    post = await slack.wait_for_web_call("chat.postMessage", count=4)
    assert "<@U999>" in all_text(post.params)
    assert len(livekit.calls("CreateDispatch")) == 3
    assert [(r["user_id"], r["action"], r["outcome"]) for r in bot.audit_rows()[-3:]] == [
        ("U123", "rooms", "ok"),
        ("U123", "list", "ok"),
        ("U999", "dispatch", "ok"),
    ]


async def test_invalid_input_and_reads_do_not_count(bot: BotUnderTest, livekit: FakeLiveKit) -> None:
    """Only a write the bot acts on counts: a typo or a list does not use up a person's minute."""
    for _ in range(12):
        await bot.reply("captions")  # no room: refused by the grammar before anything is counted
        await bot.reply("rooms")
    text = all_text(await bot.reply("link my-room"))
    assert not REFUSED.search(text)
    assert bot.audit_rows()[-1]["outcome"] == "ok"


async def test_the_limit_is_configurable_and_the_console_is_not_limited(
    start_bot: Callable[..., Any], livekit: FakeLiveKit, tmp_path: Any
) -> None:
    bot = await start_bot("limits:\n  per_user_per_minute: 2\n")
    assert "Your join link for *a*" in all_text(await bot.reply("link a"))
    assert "Your join link for *b*" in all_text(await bot.reply("link b"))
    third = all_text(await bot.reply("link c"))
    assert "You have run 2 commands that change something in the last minute" in third
    # The console runs on the host beside the secrets, as the operator: no limit there.
    for room in ("d", "e", "f"):
        reply = await run_once(bot.runtime, f"link {room}", io.StringIO())
        assert reply.outcome == "ok"


@pytest.mark.parametrize("value", ["0", "ten", "true", "-3"])
def test_a_wrong_limit_is_one_sentence(make_settings: Callable[..., Any], value: str) -> None:
    with pytest.raises(ConfigError, match=r"limits.per_user_per_minute is .*; give a whole number from 1 to 10000\."):
        make_settings(f"limits:\n  per_user_per_minute: {value}\n")
