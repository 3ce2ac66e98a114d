"""Another process holds the audit database locked (`BEGIN EXCLUSIVE`) while commands arrive.

Within `audit.busy_timeout` and `slack.ack_timeout` the commands wait for the lock and then run, each recorded,
nothing lost. Past either, the person is told in one sentence that nothing was done and to try again: no
traceback, no half-recorded command, and the ack comes before Slack's 3 s are up.
`DISPATCH_BOT_LOCK_SECONDS` sets how long the lock is held in the first case (1 s unless given).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from dispatch_bot.bot.audit_store import AuditStore
from tests.conftest import BotUnderTest, all_text
from tests.fakes.livekit_server import FakeLiveKit
from tests.fakes.slack_server import FakeSlack

LOCK_SECONDS = float(os.environ.get("DISPATCH_BOT_LOCK_SECONDS", "1"))
CONFIG = "watch:\n  enabled: false\nlimits:\n  per_user_per_minute: 1000\n"

# Takes the write lock, says so on stdout, holds it for argv[2] seconds, then prints how many commands the bot
# had recorded by then (received or finished) and lets go.
LOCKER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
seen = db.execute("SELECT (SELECT count(*) FROM received_commands) + (SELECT count(*) FROM audit)").fetchone()[0]
print(seen, flush=True)
db.execute("COMMIT")
"""


@asynccontextmanager
async def locked(database: str, seconds: float) -> AsyncIterator[asyncio.subprocess.Process]:
    """The database held by another process from entry until `seconds` later (the block may outlast it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LOCKER, database, str(seconds), stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), timeout=10) == b"locked\n"
    try:
        yield proc
    finally:
        await asyncio.wait_for(proc.wait(), timeout=seconds + 10)


async def intact(database: str) -> bool:
    store = await AuditStore.open(database)
    try:
        return (await store.verify()).intact
    finally:
        await store.close()


async def test_commands_wait_for_a_lock_shorter_than_the_busy_timeout_and_none_is_lost(
    start_bot: Callable[..., Any], livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    bot: BotUnderTest = await start_bot(
        CONFIG + f"audit:\n  busy_timeout: {LOCK_SECONDS + 3:g}s\nslack:\n  ack_timeout: {LOCK_SECONDS + 3:g}s\n"
    )
    livekit.register_worker("speech-processing")
    livekit.add_room("room-a")
    commands = ["list room-a", "captions room-a", "rooms", "help"]
    async with locked(bot.runtime.settings.database, LOCK_SECONDS) as locker:
        sent = await asyncio.gather(*(bot.command(text) for text in commands))
        assert locker.stdout is not None
        assert await locker.stdout.readline() == b"0\n"  # nothing could be written while the lock was held
    assert [result.status for result in sent] == [200] * len(commands)
    assert all(":hourglass_flowing_sand:" in result.body for result in sent)  # acknowledged, not refused

    posted = await slack.wait_for_web_call("chat.postMessage")
    assert "sent *speech-processing* (captions) into *room-a*" in all_text(posted.params)
    for result, text in zip(sent, commands, strict=True):
        if text.startswith("captions"):
            continue
        answer = all_text((await slack.wait_for_response(url=result.response_url)).body)
        assert "not recorded" not in answer and "Traceback" not in answer
    await slack.wait_for_web_call("chat.update")  # the dispatch's follow-up, with its own row

    rows = bot.audit_rows()
    assert sorted(r["raw_text"] for r in rows if r["action"] != "followup") == sorted(commands)
    assert {r["outcome"] for r in rows} == {"ok"}
    assert await intact(bot.runtime.settings.database)


async def test_past_the_busy_timeout_the_person_is_told_nothing_was_done(
    start_bot: Callable[..., Any], livekit: FakeLiveKit
) -> None:
    bot: BotUnderTest = await start_bot(CONFIG + "audit:\n  busy_timeout: 200ms\n")
    livekit.add_room("room-a")
    async with locked(bot.runtime.settings.database, 5) as locker:
        refused = await bot.command("captions room-a")
        locker.terminate()  # answered while the lock is held: no need to hold it any longer
    assert refused.status == 200
    told = json.loads(refused.body)  # the ack itself, shown only to the person
    assert told["response_type"] == "ephemeral"
    assert told["text"].startswith(":x: Nothing was done: Writing to the audit database ")
    assert told["text"].endswith("failed: database is locked (another program holds it). Try again.")
    assert "Traceback" not in told["text"]
    assert livekit.calls("CreateDispatch") == []  # not run: nobody was told it would be

    after = await bot.reply("list room-a")  # the lock gone, the same bot goes on
    assert "*room-a*: 1 dispatch" in all_text(after)
    assert [r["raw_text"] for r in bot.audit_rows()] == ["list room-a"]
    assert await intact(bot.runtime.settings.database)


async def test_a_lock_longer_than_the_ack_timeout_is_answered_in_time_and_the_command_is_not_run(
    start_bot: Callable[..., Any], livekit: FakeLiveKit
) -> None:
    # The write would wait 30 s for the lock; the ack may not: it says so at 300 ms, well before Slack's 3 s.
    bot: BotUnderTest = await start_bot(CONFIG + "audit:\n  busy_timeout: 30s\nslack:\n  ack_timeout: 300ms\n")
    livekit.add_room("room-a")
    async with locked(bot.runtime.settings.database, 30) as locker:
        refused = await bot.command("captions room-a")
        locker.terminate()  # the lock goes while the bot's write still waits for it
    told = json.loads(refused.body)
    assert told["response_type"] == "ephemeral"
    assert told["text"] == (
        ":x: Nothing was done: The audit log is busy: the command could not be recorded within 0.3 s. Try again."
    )
    after = await bot.reply("list room-a")  # the write that waited goes through, then this one
    assert "*room-a*: 1 dispatch" in all_text(after)  # the automatic one only
    assert livekit.calls("CreateDispatch") == []  # the refused command never ran

    # The refused command left no received record behind: a stop finds nothing interrupted to tell anyone about.
    await bot.transport.aclose()
    assert [(r["raw_text"], r["outcome"]) for r in bot.audit_rows()] == [("list room-a", "ok")]
    assert await intact(bot.runtime.settings.database)


async def test_a_lock_that_comes_mid_command_costs_the_row_a_warning_and_a_stop_records_it(
    start_bot: Callable[..., Any], livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    bot: BotUnderTest = await start_bot(CONFIG + "audit:\n  busy_timeout: 200ms\n")
    livekit.add_room("room-a")
    livekit.delay = 0.5  # the command is received (its record written), then waits on LiveKit
    result = await bot.command("list room-a")
    await livekit.wait_for(lambda: len(livekit.calls("ListRooms")) >= 1)
    async with locked(bot.runtime.settings.database, 5) as locker:
        answer = all_text((await slack.wait_for_response(url=result.response_url)).body)
        locker.terminate()
    assert "*room-a*: 1 dispatch" in answer  # the person has the answer, and is told it went unrecorded
    assert ":warning: This was not recorded in the audit log: Writing to the audit database " in answer
    assert "database is locked (another program holds it)" in answer and "Traceback" not in answer
    assert bot.audit_rows() == []

    # Its received record is still there: the bot's stop (or next start) gives it its row, so it is not lost.
    await bot.transport.aclose()
    assert [(r["raw_text"], r["outcome"]) for r in bot.audit_rows()] == [("list room-a", "interrupted")]
    assert await intact(bot.runtime.settings.database)
