"""LiveKit goes away, answers HTML 503s and 429s, and comes back, while one running bot takes a stream of commands.

Each command gets exactly one reply, the true sentence for LiveKit's state at that moment, and one audit row with
the matching outcome; once LiveKit is back, commands succeed again without restarting the bot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

import pytest

from dispatch_bot.bot.render import escape_mrkdwn, slack_mention
from dispatch_bot.commands import messages
from dispatch_bot.commands.reply import Mention, Text
from tests.conftest import BotUnderTest, all_text
from tests.fakes.livekit_proxy import LiveKitProxy
from tests.fakes.livekit_server import FakeLiveKit
from tests.fakes.slack_server import FakeSlack

# No watch (its polls would take the proxy's failures meant for commands), and no per-person limit in the way.
CONFIG = "watch:\n  enabled: false\nlimits:\n  per_user_per_minute: 1000\n"


def slack_text(line: Text) -> str:
    return line.render(escape_mrkdwn, slack_mention)


@dataclass
class Step:
    command: str
    expected: str  # a line of the reply, as Slack shows it
    outcome: Literal["ok", "error"]
    in_channel: bool = False  # a dispatch that worked is a channel message; everything else answers only the person


@dataclass
class Sent:
    step: Step
    response_url: str
    text: str


@pytest.fixture
async def proxy(livekit: FakeLiveKit) -> AsyncIterator[LiveKitProxy]:
    front = LiveKitProxy(livekit.url)
    await front.start()
    yield front
    await front.stop()


async def run_step(bot: BotUnderTest, slack: FakeSlack, step: Step) -> Sent:
    posted_before = len(slack.calls("chat.postMessage"))  # counted first: the message may come before the ack
    result = await bot.command(step.command)
    assert result.status == 200, result.body
    if step.in_channel:
        posted = await slack.wait_for_web_call("chat.postMessage", count=posted_before + 1)
        # The follow-up (did the agent join?) edits that message; wait for it before LiveKit changes again.
        await slack.wait_for_web_call("chat.update", count=len(slack.calls("chat.postMessage")))
        return Sent(step, result.response_url, all_text(posted.params))
    return Sent(step, result.response_url, all_text((await slack.wait_for_response(url=result.response_url)).body))


async def test_a_stream_of_commands_through_livekit_away_503_429_and_back(
    start_bot: Callable[..., Any], livekit: FakeLiveKit, slack: FakeSlack, proxy: LiveKitProxy
) -> None:
    bot: BotUnderTest = await start_bot(CONFIG, LIVEKIT_URL=proxy.url)
    livekit.register_worker("speech-processing")
    for room in ("room-a", "room-1", "room-2", "room-3"):
        livekit.add_room(room)
    alice = Mention("U123", "alice")
    agent = messages.agent_label("speech-processing", "captions")

    def listed(room: str, dispatches: int) -> Step:
        return Step(f"list {room}", slack_text(messages.list_header(room, dispatches, 1)), "ok")

    def sent(room: str) -> Step:
        # The dispatch id is LiveKit's: the line up to it.
        line = slack_text(messages.dispatched(alice, agent, room, "ID")).split(" (dispatch")[0]
        return Step(f"captions {room}", line, "ok", in_channel=True)

    def failed(command: str, sentence: str) -> Step:
        return Step(command, slack_text(messages.backend_error(sentence)), "error")

    away = f"Cannot reach the LiveKit server at {proxy.url}. Is it running, and is LIVEKIT_URL right?"
    page_503 = (
        f"The LiveKit server at {proxy.url}, or a proxy in front of it, failed with HTTP 503 (Service Unavailable); "
        "try again shortly, and check the server if it goes on."
    )
    limited = (
        f"The LiveKit server at {proxy.url}, or a proxy in front of it, is limiting the bot's requests (HTTP 429) "
        "and the one retry did not fit in the time allowed; try again in a minute."
    )
    sent_list: list[Sent] = []

    async def run(*steps: Step) -> None:
        for step in steps:
            sent_list.append(await run_step(bot, slack, step))

    await run(listed("room-a", 1), sent("room-1"))  # healthy (the stand-in adds the automatic dispatch)

    await proxy.go_away()
    await run(failed("list room-a", away), failed("captions room-2", away))

    await proxy.come_back()
    proxy.fail(503, times=None)  # an HTML page from the proxy: not LiveKit's "room not running"
    await run(failed("list room-a", page_503), failed("captions room-2", page_503))

    proxy.fail(429, times=None, body="rate limited", content_type="text/plain")  # no Retry-After: one retry, 1 s
    await run(failed("list room-1", limited))
    proxy.fail(429, times=None, retry_after=30)  # a Retry-After past the 2 s budget: no wait at all
    await run(failed("captions room-2", limited))

    proxy.heal()
    proxy.fail(429, times=1, retry_after=1)  # within the budget: waited for, tried again, and it works
    before = len(proxy.seen)
    await run(sent("room-2"))
    assert [status for _, status in proxy.seen[before : before + 2]] == [429, 200]

    await run(listed("room-1", 2), sent("room-3"), listed("room-3", 2))  # back: no restart needed

    for one in sent_list:
        assert one.step.expected in one.text, (one.step.command, one.text)
        assert "Traceback" not in one.text and "Error(" not in one.text
    # Exactly one reply each: a response-URL post for those answered to the person, a channel message for the rest.
    for one in sent_list:
        posts = [r for r in slack.responses if r.url == one.response_url]
        assert len(posts) == (0 if one.step.in_channel else 1), one.step.command
    dispatched = [one for one in sent_list if one.step.in_channel]
    assert len(slack.calls("chat.postMessage")) == len(dispatched)
    assert len(slack.calls("chat.update")) == len(dispatched)  # each follow-up edits its own message once

    rows = bot.audit_rows()
    commands = [(r["raw_text"], r["outcome"]) for r in rows if r["action"] != "followup"]
    assert commands == [(one.step.command, one.step.outcome) for one in sent_list]
    followups = [(r["raw_text"], r["outcome"]) for r in rows if r["action"] == "followup"]
    assert followups == [(one.step.command, "ok") for one in dispatched]
    assert sum(len(livekit.dispatches(room)) for room in ("room-1", "room-2", "room-3")) == 3 + 3  # + automatic
