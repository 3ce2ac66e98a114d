"""A dispatch's watch and its audit row: one transaction, one disk sync, both on disk before the reply is shown.
Its follow-up's row and the watch marked present (the agent seen): one transaction too.

When that write fails, the person is told what failed, as when the two were written one after the other: a watch
that cannot be written is the command's error (no reply says the bot watches the agent); an audit row that cannot
be written is a warning under a reply that stands, its watch written.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from tests.conftest import BotUnderTest, all_text
from tests.fakes.livekit_server import FakeLiveKit
from tests.fakes.slack_server import Failure, FakeSlack


async def group_commits(bot: BotUnderTest) -> float:
    """Transactions the audit database's group writer has committed, as GET /metrics tells an operator."""
    async with bot.http.get(f"{bot.url}/metrics") as response:
        text = await response.text()
    found = re.search(r"^dispatch_bot_audit_group_writes_count (\S+)$", text, re.MULTILINE)
    assert found is not None, text
    return float(found.group(1))


def watches(bot: BotUnderTest) -> list[tuple[str, str, str]]:
    with sqlite3.connect(bot.runtime.settings.database) as db:
        return list(db.execute("SELECT room, dispatch_id, state FROM watches ORDER BY id"))


def refuse_inserts(database: str | Path, table: str, why: str, *, change: str = "INSERT") -> None:
    """Another program makes the file refuse new rows (or with `change`, updates) in `table`, as a full disk or a
    broken file would."""
    with sqlite3.connect(database) as db:
        db.execute(
            f"CREATE TRIGGER refuse_{change.lower()}_{table} BEFORE {change} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{why}'); END"
        )


def watch_states(bot: BotUnderTest) -> list[tuple[str, str]]:
    with sqlite3.connect(bot.runtime.settings.database) as db:
        return list(db.execute("SELECT state, identity FROM watches ORDER BY id"))


async def test_a_dispatch_writes_its_watch_and_its_row_in_one_commit_before_the_reply(
    bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room")
    await bot.reply("help")  # the bot's first write is behind it
    before = await group_commits(bot)

    slack.fail("chat.postMessage", Failure.stall(times=1))  # the reply is held at Slack: what is on disk by then?
    await bot.command("captions my-room")
    post = await slack.wait_for_web_call("chat.postMessage")
    assert "sent *speech-processing* (captions) into *my-room*" in all_text(post.params)
    dispatch_id = livekit.dispatches("my-room")[-1].id
    assert watches(bot) == [("my-room", dispatch_id, "waiting")]
    assert [(r["action"], r["outcome"], r["dispatch_id"]) for r in bot.audit_rows()][-1:] == [
        ("dispatch", "ok", dispatch_id)
    ]
    assert await group_commits(bot) == before + 1  # the watch and the row: one transaction
    slack.release()
    await slack.wait_for_web_call("chat.update")  # the follow-up goes on as before


async def test_a_watch_that_cannot_be_written_is_the_commands_error_and_no_reply_says_it_watches(
    bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room")
    refuse_inserts(bot.runtime.settings.database, "watches", "disk I/O error")

    answer = all_text(await bot.reply("captions my-room"))
    database = bot.runtime.settings.database
    assert f":x: The supervision state in {database} could not be used: disk I/O error." in answer
    assert "Waiting" not in answer and "Traceback" not in answer
    assert slack.calls("chat.postMessage") == []  # nothing in the channel says the agent is on its way, watched
    assert len(livekit.dispatches("my-room")) == 2  # the automatic one, and this one, sent but not watched
    assert watches(bot) == []
    [row] = bot.audit_rows()
    assert (row["action"], row["outcome"], row["room"], row["agent"]) == (
        "dispatch",
        "error",
        "my-room",
        "speech-processing",
    )
    assert row["detail"] == f"The supervision state in {database} could not be used: disk I/O error."


async def test_an_audit_row_that_cannot_be_written_warns_under_the_reply_and_the_watch_is_kept(
    bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room")
    refuse_inserts(bot.runtime.settings.database, "audit", "disk I/O error")

    await bot.command("captions my-room")
    text = all_text((await slack.wait_for_web_call("chat.postMessage")).params)
    assert "sent *speech-processing* (captions) into *my-room*" in text and "Waiting up to 0.4 s" in text
    assert ":warning: This was not recorded in the audit log: Writing to the audit database " in text
    assert "disk I/O error" in text and "Traceback" not in text
    dispatch_id = livekit.dispatches("my-room")[-1].id
    assert watches(bot)[0][:2] == ("my-room", dispatch_id)
    assert bot.audit_rows() == []


async def test_a_follow_up_writes_its_row_and_the_agent_seen_in_one_commit(
    bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room")
    livekit.register_worker("speech-processing")
    await bot.reply("help")  # the bot's first write is behind it
    before = await group_commits(bot)

    await bot.command("captions my-room")
    update = await slack.wait_for_web_call("chat.update")
    identity = livekit.dispatches("my-room")[-1].state.jobs[0].state.participant_identity
    assert f"The agent joined as `{identity}`" in all_text(update.params)
    assert watch_states(bot) == [("present", identity)]
    assert [(r["action"], r["outcome"]) for r in bot.audit_rows()][-2:] == [("dispatch", "ok"), ("followup", "ok")]
    # the dispatch's row with its watch; the message noted for alerts' threads; the follow-up's row with the
    # watch marked present
    assert await group_commits(bot) == before + 3


async def test_when_the_agent_seen_cannot_be_written_the_follow_up_row_still_is(
    bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room")
    livekit.register_worker("speech-processing")
    await bot.reply("help")
    await bot.command("captions my-room")
    await slack.wait_for_web_call("chat.postMessage")
    # After the watch and the thread are written, the file refuses to mark the watch present.
    refuse_inserts(bot.runtime.settings.database, "watches", "disk I/O error", change="UPDATE")

    update = await slack.wait_for_web_call("chat.update")
    identity = livekit.dispatches("my-room")[-1].state.jobs[0].state.participant_identity
    text = all_text(update.params)
    assert f"The agent joined as `{identity}`" in text and "Traceback" not in text
    assert [(r["action"], r["outcome"]) for r in bot.audit_rows()][-2:] == [("dispatch", "ok"), ("followup", "ok")]
    assert watch_states(bot) == [("waiting", "")]  # supervision's next look finds the agent, as before
