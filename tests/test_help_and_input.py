"""Help and bad input through the real Slack endpoint: a usage sentence, nothing sent to LiveKit, one audit row."""

from __future__ import annotations

import pytest

from tests.conftest import BotUnderTest, all_text
from tests.fakes.livekit_server import FakeLiveKit


async def test_help_lists_every_command_ephemerally(bot: BotUnderTest, livekit: FakeLiveKit) -> None:
    body = await bot.reply("help")
    text = all_text(body)
    assert body["response_type"] == "ephemeral"
    for usage in (
        "/dispatch &lt;agent&gt; &lt;room&gt;",
        "/dispatch list &lt;room&gt;",
        "/dispatch stop",
        "/dispatch help",
    ):
        assert usage in text
    assert "captions → speech-processing" in text
    assert livekit.requests == []
    [row] = bot.audit_rows()
    assert (row["action"], row["outcome"], row["source"], row["user_id"]) == ("help", "ok", "slack", "U123")


async def test_help_for_one_subcommand(bot: BotUnderTest) -> None:
    text = all_text(await bot.reply("help stop"))
    assert "/dispatch stop &lt;agent|dispatch-id&gt; &lt;room&gt;" in text
    assert "/dispatch list" not in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "Tell me what to do"),
        ("captions", "Give an agent and a room."),
        ("captions my room extra", "Give one agent and one room"),
        ("captions my-room --loud", "Unknown option --loud."),
        ("captions my-room --forse", "Did you mean --force?"),
        ("captions my-room --metadata", "The option --metadata needs a value."),
        ('captions my-room --metadata "unclosed', "A quotation mark is not closed."),
        ("cap/tions my-room", "An agent name uses only letters, digits"),
        ("captions my\u200broom", "control or invisible character (U+200B)"),
        ("captions " + "r" * 300, "LiveKit allows at most 256"),
        ("captions my-room " + "x" * 10_240, "the limit is 4,000"),
        ("lsit my-room", "lsit is not a command. Did you mean list?"),
        ("caption my-room", "There is no agent called caption. Did you mean captions?"),
        ("list", "Give one room."),
        ("stop my-room", "Give an agent (or a dispatch id) and a room."),
        ("help nothing", "There is no subcommand nothing."),
        ("rooms everything", "rooms takes no arguments"),
    ],
)
async def test_bad_input_gets_one_sentence_and_changes_nothing(
    bot: BotUnderTest, livekit: FakeLiveKit, text: str, expected: str
) -> None:
    body = await bot.reply(text)
    shown = all_text(body)
    assert body["response_type"] == "ephemeral"
    assert expected in shown
    assert "Usage:" in shown
    assert "Traceback" not in shown
    assert livekit.requests == []
    [row] = bot.audit_rows()
    assert row["outcome"] == "invalid"
    assert row["raw_text"] == text.strip()[:2000]


async def test_slack_markup_in_the_text_becomes_what_was_typed(bot: BotUnderTest, livekit: FakeLiveKit) -> None:
    result = await bot.command("list <#C0GEN|general>", as_sent=True)  # typed: /dispatch list #general
    posted = await bot.slack.wait_for_response(url=result.response_url)
    assert "*#general* is not running" in all_text(posted.body)
    [request] = livekit.calls("ListRooms")
    assert list(request.names) == ["#general"]  # type: ignore[attr-defined]
    result = await bot.command("list <https://evil.example|x> &lt;!here&gt;", as_sent=True)
    posted = await bot.slack.wait_for_response(url=result.response_url)
    assert "Give one room." in all_text(posted.body)
    assert bot.audit_rows()[-1]["raw_text"] == "list https://evil.example <!here>"
