"""Every payload the bot sends passes slack_sdk's Block Kit models and Slack's limits, and nothing is cut silently:
long lists end with "and N more", long lines continue in the next section, a dry run's request is shown whole."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.models.blocks import Block

from dispatch_bot.bot.render import to_slack
from dispatch_bot.commands.dispatch import refresh_button, stop_button
from dispatch_bot.commands.reply import Button, JoinLink, Reply, text
from tests.conftest import SIGNING_SECRET, BotUnderTest, all_text
from tests.fakes.livekit_server import FakeLiveKit
from tests.fakes.slack_requests import block_action_body, signed_headers
from tests.fakes.slack_server import FakeSlack

LONG_ROOM = "r" * 250  # within LiveKit's 256 bytes, far beyond a 75-character button label
AGENT_FILE = "enabled: true\nlive_captions:\n  processing: manual\n  provider: vosk\n"


def payloads(slack: FakeSlack) -> list[dict[str, Any]]:
    """Every message the stand-in received: channel posts, updates and response_url posts."""
    sent = [c.params for c in slack.web_calls if c.method in ("chat.postMessage", "chat.update")]
    return sent + [r.body for r in slack.responses]


def check_payloads(slack: FakeSlack) -> int:
    """Each payload's blocks through slack_sdk's models (which check every limit) and Slack's message limits."""
    bodies = payloads(slack)
    assert bodies
    for body in bodies:
        blocks = body.get("blocks") or []
        assert 0 < len(blocks) <= 50
        for raw in blocks:
            block = Block.parse(raw)
            assert block is not None, raw
            assert block.to_dict() == raw  # validates, and nothing in the payload is unknown to the model
        assert len(str(body.get("text", ""))) <= 3000
    return len(bodies)


def sections(body: dict[str, Any]) -> list[str]:
    return [b["text"]["text"] for b in body["blocks"] if b["type"] == "section"]


def write_catalog(folder: Path, count: int, name_length: int = 8) -> list[str]:
    folder.mkdir()
    names = [f"bot-{n:04d}-" + "x" * name_length for n in range(count)]
    for name in names:
        (folder / f"agent-{name}.yaml").write_text(AGENT_FILE)
    return names


@pytest.fixture
async def catalog_bot(start_bot: Callable[..., Any], tmp_path: Path) -> Callable[..., Any]:
    async def start(count: int, name_length: int = 8) -> tuple[BotUnderTest, list[str]]:
        names = write_catalog(tmp_path / "agents", count, name_length)
        bot = await start_bot("agents:\n  reload_interval: 10ms\n", OPENVIDU_AGENTS_DIR=str(tmp_path / "agents"))
        return bot, names

    return start


async def test_help_with_121_agents_shows_every_one(catalog_bot: Callable[..., Any], slack: FakeSlack) -> None:
    bot, names = await catalog_bot(121, name_length=20)
    body = await bot.reply("help")
    shown = "\n".join(sections(body))
    assert [n for n in names if n not in shown] == [], shown[-400:]
    assert "…" not in shown and "more line" not in shown
    check_payloads(slack)


async def test_agents_with_1500_files_ends_with_how_many_more(
    catalog_bot: Callable[..., Any], slack: FakeSlack
) -> None:
    bot, names = await catalog_bot(1500, name_length=40)
    body = await bot.reply("agents")
    texts = sections(body)
    assert len(body["blocks"]) == 50
    more = re.fullmatch(
        r"_…and ([\d,]+) more lines, more than a Slack message holds: `dispatch-bot console` shows them all\._",
        texts[-1],
    )
    assert more, texts[-1]
    listed = sum(1 for name in names if f"*{name}*" in "\n".join(texts))
    assert listed + int(more.group(1).replace(",", "")) == len(names)
    check_payloads(slack)


async def test_a_dry_run_shows_the_whole_request(bot: BotUnderTest, slack: FakeSlack) -> None:
    # Near the 4,000 characters a command may have, with characters mrkdwn escapes: beyond one section's 3,000.
    metadata = "x" * 2990 + "<&>" + "y" * 900
    body = await bot.reply(f"captions my-room --dry-run --metadata '{metadata}'")
    pieces = re.findall(r"```(.*?)```", "\n".join(sections(body)), re.S)
    assert len(pieces) > 1  # more than one section holds it, each piece fenced
    shown = "".join(pieces).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    assert json.loads(shown) == {"agentName": "speech-processing", "room": "my-room", "metadata": metadata}
    check_payloads(slack)


async def test_a_long_room_name_keeps_every_payload_valid(
    bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.register_worker("speech-processing")
    result = await bot.command(f"captions {LONG_ROOM}")
    posted = await slack.wait_for_web_call("chat.postMessage")
    await slack.wait_for_web_call("chat.update")
    [stop] = [
        e
        for b in posted.params["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if e["text"]["text"] == "Stop"
    ]
    assert LONG_ROOM in stop["value"] and len(stop["confirm"]["text"]["text"]) <= 300
    assert stop["confirm"]["text"]["text"].endswith("…")  # shortened visibly

    link = await bot.reply(f"link {LONG_ROOM}")
    [join] = [e for b in link["blocks"] if b["type"] == "actions" for e in b["elements"] if "url" in e]
    assert len(join["text"]["text"]) <= 75

    url = slack.new_response_url()
    press = block_action_body("dispatch_stop", stop["value"], response_url=url)
    assert (await bot.post(press, signed_headers(press, SIGNING_SECRET)))[0] == 200
    stopped = await slack.wait_for_web_call("chat.postMessage", count=2)  # a stop is told in the channel
    assert f"stopped *speech-processing* in *{LONG_ROOM}*" in all_text(stopped.params)
    for text_ in ("list " + LONG_ROOM, "rooms", "audit limit:100", "agents", "help", "stop captions " + LONG_ROOM):
        await bot.reply(text_)
    await bot.transport.drain()
    assert result.status == 200
    assert check_payloads(slack) >= 10


async def test_many_rooms_dispatches_and_audit_rows_stay_valid(
    bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    for n in range(120):
        livekit.add_room(f"{LONG_ROOM[:200]}-{n:03d}", agents=[f"agent-{n}-{m}" for m in range(3)])
    livekit.add_room("busy", agents=[f"agent-{m:03d}" for m in range(100)])
    for _ in range(30):
        await bot.reply(f"list {LONG_ROOM[:200]}-001")
    for command in ("rooms", "list busy", "audit limit:100", "audit user:<@U123> limit:100"):
        body = await bot.reply(command)
        assert "Something went wrong" not in all_text(body)
    check_payloads(slack)


def test_a_reply_too_long_for_any_message_is_cut_with_a_word() -> None:
    lines = [text("• line {n} {pad}", n=str(n), pad="p" * 300) for n in range(2000)]
    reply = Reply(
        "ok",
        lines,
        buttons=[Button("dispatch_refresh", "Refresh", "list x")],
        link=JoinLink("https://meet.example.com/?token=t", label="Join x"),
    )
    fallback, blocks = to_slack(reply)
    assert len(blocks) == 50 and [b["type"] for b in blocks[-2:]] == ["actions", "actions"]
    last = blocks[-3]["text"]["text"]
    more = re.match(r"_…and ([\d,]+) more lines", last)
    assert more
    shown = sum(b["text"]["text"].count("• line ") for b in blocks if b["type"] == "section")
    assert shown + int(more.group(1).replace(",", "")) == 2000
    assert len(fallback) == 3000 and fallback.endswith("…")
    for raw in blocks:
        assert Block.parse(raw).to_dict() == raw  # type: ignore[union-attr]


def test_buttons_and_their_confirmations_are_what_slack_sdks_models_make() -> None:
    long_label = Button(
        "dispatch_again", "L" * 200, "captions my-room", style="primary", confirm=text("{x}", x="y" * 900)
    )
    reply = Reply(
        "ok",
        [text("sent *{agent}* into *{room}*", agent="speech-processing", room="my-room")],
        buttons=[stop_button("speech-processing", "my-room", "AD_abc"), refresh_button("my-room"), long_label],
        link=JoinLink("https://meet.example.com/?token=t", label="Join my-room"),
    )
    _, blocks = to_slack(reply)
    assert [b["type"] for b in blocks] == ["section", "actions", "actions"]
    for raw in blocks:
        assert Block.parse(raw).to_dict() == raw  # type: ignore[union-attr]
