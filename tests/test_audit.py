"""Audit review: filters in Slack and the terminal, export, the hash chain, retention, and a sick database."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import signal
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dispatch_bot.bot.audit_store import AuditStore
from dispatch_bot.bot.console import run_once
from dispatch_bot.bot.runtime import Runtime
from dispatch_bot.commands.ports import Actor, AuditRecord
from tests.conftest import BotUnderTest, all_text, read_audit
from tests.fakes.livekit_server import FakeLiveKit
from tests.fakes.slack_server import FakeSlack
from tests.test_console import CLI, bot_env, run_cli

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def entries(body: dict[str, Any]) -> list[str]:
    """The audit entries as shown, one per line, from the message's blocks."""
    lines = "\n".join(b["text"]["text"] for b in body["blocks"] if b["type"] == "section").splitlines()
    return [line for line in lines if line.startswith("• ")]


async def fill(path: str, rows: list[dict[str, Any]]) -> None:
    """Rows written by the real store, each at its own time (`at`, minutes after T0)."""
    clock = {"now": T0}
    store = await AuditStore.open(path, now=lambda: clock["now"])
    try:
        for row in rows:
            clock["now"] = T0 + timedelta(minutes=row.get("at", 0))
            actor = Actor("slack", row.get("user", "U01ANA"), row.get("name", "ana"), "T123", "C1", "ops")
            await store.record(
                AuditRecord(
                    actor,
                    row.get("text", "x"),
                    row.get("action", "dispatch"),
                    row.get("outcome", "ok"),
                    row.get("agent", ""),
                    row.get("room", ""),
                    detail=row.get("detail", ""),
                )
            )
    finally:
        await store.close()


HISTORY = [
    {"at": 0, "room": "r1", "agent": "speech-processing", "text": "captions r1"},
    {"at": 1, "room": "r2", "agent": "speech-processing", "text": "captions r2", "user": "U02BOB", "name": "bob"},
    {"at": 2, "room": "r1", "agent": "other", "text": "other r1", "outcome": "error", "detail": "unreachable"},
    {"at": 3, "room": "r1", "text": "list r1", "action": "list"},
    {
        "at": 60 * 24 * 2,
        "room": "r1",
        "agent": "speech-processing",
        "text": "stop captions r1",
        "action": "stop",
        "user": "U02BOB",
        "name": "bob",
    },
]


@pytest.fixture
async def abot(start_bot: Callable[..., Any], tmp_path: Path) -> BotUnderTest:
    db = tmp_path / "history.db"
    await fill(str(db), HISTORY)
    return await start_bot(DISPATCH_BOT_DB=str(db))  # type: ignore[no-any-return]


async def test_audit_in_slack_shows_newest_first_in_the_viewers_time_zone(abot: BotUnderTest) -> None:
    body = await abot.reply("audit room:r1")
    text = all_text(body)
    assert body["response_type"] == "ephemeral"
    assert "*Audit*: the 4 newest rows matching room:r1 (times in Europe/Madrid):" in text
    shown = entries(body)
    assert [e.split("`")[1] for e in shown] == ["stop captions r1", "list r1", "other r1", "captions r1"]
    assert shown[-1].startswith("• 2026-11-20 13:00:00 · <@U01ANA> · `captions r1` in *r1* · *ok*")
    assert "<@U02BOB>" in shown[0]
    assert "*error* unreachable" in shown[2]
    row = abot.audit_rows()[-1]
    assert (row["action"], row["outcome"], row["room"], row["detail"]) == ("audit", "ok", "", "4 rows (room:r1)")


@pytest.mark.parametrize(
    ("filters", "texts"),
    [
        ("agent:captions", ["stop captions r1", "captions r2", "captions r1"]),
        ("user:<@U02BOB|bob>", ["stop captions r1", "captions r2"]),
        ("user:U02BOB room:r2", ["captions r2"]),
        ("outcome:error", ["other r1"]),
        ("since:2026-11-21", ["stop captions r1"]),
        ("since:2026-11-20T12:02", ["stop captions r1", "list r1", "other r1"]),
        ("room:r1 agent:captions since:2026-11-20T12:01", ["stop captions r1"]),
        ("room:nowhere", []),
    ],
)
async def test_filters(abot: BotUnderTest, filters: str, texts: list[str]) -> None:
    body = await abot.reply(f"audit {filters}")
    text = all_text(body)
    assert [line.split("`")[1] for line in entries(body)] == texts
    if not texts:
        assert "No audit rows match room:nowhere." in text


async def test_more_rows_than_the_limit_says_how_many_and_how_to_narrow(abot: BotUnderTest) -> None:
    body = await abot.reply("audit limit:2")
    text = all_text(body)
    assert len(entries(body)) == 2
    assert "3 more rows match. Narrow with since:, room:, agent:, user: or outcome:" in text


async def test_time_falls_back_to_utc_when_slack_cannot_say(abot: BotUnderTest, slack: FakeSlack) -> None:
    slack.users.clear()
    text = all_text(await abot.reply("audit room:r2"))
    assert "(times in UTC)" in text and "2026-11-20 12:01:00" in text


@pytest.mark.parametrize(
    ("filters", "sentence"),
    [
        ("roomm:r1", "roomm:r1 is not a filter; the filters are room:, agent:, user:, since:, outcome: and limit:."),
        ("r1", "r1 is not a filter"),
        ("since:yesterday", "since:yesterday is neither a duration nor a date; write since:2h"),
        ("limit:0", "limit:0 is out of range; use a number from 1 to 100."),
        ("limit:101", "use a number from 1 to 100"),
        ("user:alice", "user:alice is not a person; write user:@alice"),
        ("outcome:fine", "outcome:fine is not an outcome; use one of ok, noop, denied, invalid, error, interrupted."),
        ("room:r1 room:r2", "The filter room: is given twice."),
        ("agent:", "agent: needs a value"),
    ],
)
async def test_bad_filters(abot: BotUnderTest, filters: str, sentence: str) -> None:
    text = all_text(await abot.reply(f"audit {filters}"))
    assert sentence in text and "Usage:" in text
    assert abot.audit_rows()[-1]["outcome"] == "invalid"


async def test_cli_filters_as_flags_or_words_and_exports(make_settings: Any, tmp_path: Path) -> None:
    settings = make_settings()
    await fill(settings.database, HISTORY)
    env = bot_env(settings, tmp_path / "dispatch-bot.yaml")
    _, by_words, _ = await run_cli(["audit", "room:r1", "agent:captions", "--format", "jsonl"], env)
    _, by_flags, _ = await run_cli(["audit", "--room", "r1", "--agent", "captions", "--format", "jsonl"], env)
    assert by_words == by_flags
    assert [json.loads(line)["raw_text"] for line in by_words.splitlines()] == ["stop captions r1", "captions r1"]

    stored = read_audit(Path(settings.database))
    code, out, _ = await run_cli(["audit", "--all", "--format", "csv"], env)
    assert code == 0
    exported = list(csv.DictReader(io.StringIO(out)))
    assert [{k: str(v) for k, v in row.items()} for row in reversed(stored)] == exported
    code, out, _ = await run_cli(["audit", "--all", "--format", "jsonl"], env)
    assert [json.loads(line) for line in out.splitlines()] == list(reversed(stored))

    code, _, err = await run_cli(["audit", "when:now"], env)
    assert code == 2 and err.startswith("dispatch-bot: when:now is not a filter") and "Traceback" not in err


async def verify(env: dict[str, str]) -> tuple[int, str]:
    code, out, err = await run_cli(["audit", "verify"], env)
    assert "Traceback" not in err
    return code, out.strip()


async def test_verify_names_the_first_broken_row(make_settings: Any, tmp_path: Path) -> None:
    settings = make_settings()
    await fill(settings.database, [{"at": i, "text": f"list r{i}", "action": "list"} for i in range(6)])
    env = bot_env(settings, tmp_path / "dispatch-bot.yaml")
    assert await verify(env) == (0, "audit log intact: 6 rows, every hash and link checked.")

    with sqlite3.connect(settings.database) as db:
        db.execute("UPDATE audit SET raw_text = 'list nothing-to-see' WHERE id = 4")
    code, out = await verify(env)
    assert code == 1 and "row 4 was altered: its content does not match its hash" in out

    with sqlite3.connect(settings.database) as db:
        db.execute("UPDATE audit SET raw_text = 'list r3' WHERE id = 4")
        db.execute("DELETE FROM audit WHERE id = 2")
    code, out = await verify(env)
    assert code == 1 and "row 3 does not follow on from the row before it (row 2 is missing)" in out


async def test_verify_catches_two_swapped_rows(make_settings: Any, tmp_path: Path) -> None:
    settings = make_settings()
    await fill(settings.database, [{"at": i, "text": f"list r{i}", "action": "list"} for i in range(5)])
    with sqlite3.connect(settings.database) as db:
        rows = {r[0]: r[1:] for r in db.execute("SELECT id, ts, raw_text, prev_hash, hash FROM audit")}
        for a, b in ((2, 3), (3, 2)):
            db.execute("UPDATE audit SET ts = ?, raw_text = ?, prev_hash = ?, hash = ? WHERE id = ?", (*rows[b], a))
    code, out = await verify(bot_env(settings, tmp_path / "dispatch-bot.yaml"))
    assert code == 1 and "row 2" in out


async def test_prune_keeps_the_chain_verifiable(make_settings: Any, tmp_path: Path) -> None:
    settings = make_settings()
    now = datetime.now(UTC)
    await fill(settings.database, [])
    store = await AuditStore.open(settings.database, now=lambda: now - timedelta(days=40))
    actor = Actor("cli", "cli:ana", "cli:ana")
    for i in range(5):
        await store.record(AuditRecord(actor, f"list old-{i}", "list", "ok"))
    await store.close()
    env = bot_env(settings, tmp_path / "dispatch-bot.yaml")
    await run_cli(["console", "-c", "help"], env)

    code, out, _ = await run_cli(["audit", "prune", "--older-than", "30d"], env)
    assert code == 0 and out.startswith("removed 5 rows, up to row 5")
    rows = read_audit(Path(settings.database))
    assert [(r["id"], r["action"]) for r in rows] == [(6, "help"), (7, "prune")]
    assert rows[1]["detail"].startswith("removed 5 rows older than ") and "anchor row 5 hash " in rows[1]["detail"]
    assert await verify(env) == (0, "audit log intact: 2 rows from row 6, every hash and link checked.")
    await run_cli(["console", "-c", "help"], env)
    assert (await verify(env))[0] == 0

    code, out, _ = await run_cli(["audit", "prune", "--older-than", "0s"], env)  # everything
    await run_cli(["console", "-c", "help"], env)
    assert [(r["id"], r["action"]) for r in read_audit(Path(settings.database))] == [(9, "prune"), (10, "help")]
    assert (await verify(env))[0] == 0

    code, _, err = await run_cli(["audit", "prune"], env)
    assert code == 2 and "audit prune needs --older-than DURATION" in err


async def test_a_log_cut_short_or_with_a_forged_anchor_does_not_verify(make_settings: Any, tmp_path: Path) -> None:
    settings = make_settings()
    await fill(settings.database, [{"at": i, "text": f"list r{i}", "action": "list"} for i in range(6)])
    env = bot_env(settings, tmp_path / "dispatch-bot.yaml")
    with sqlite3.connect(settings.database) as db:
        db.execute("DELETE FROM audit WHERE id > 3")
    code, out = await verify(env)
    assert code == 1 and "the log ends at row 3, but row 6 was written: the rows after 3 were removed." in out

    await fill(settings.database, [{"at": i, "text": f"list r{i}", "action": "list"} for i in range(6)])
    with sqlite3.connect(settings.database) as db:
        prev = db.execute("SELECT prev_hash FROM audit WHERE id = 4").fetchone()[0]
        db.execute("DELETE FROM audit WHERE id <= 3")
        db.executemany("INSERT OR REPLACE INTO audit_meta VALUES (?, ?)", [("anchor_id", "3"), ("anchor_hash", prev)])
    code, out = await verify(env)
    assert code == 1 and "the log starts after row 3, but no prune recorded removing the rows before it." in out


async def test_rows_from_two_clocks_keep_time_in_order(make_settings: Any, tmp_path: Path) -> None:
    settings = make_settings()
    await fill(settings.database, [{"at": 10}])
    await fill(settings.database, [{"at": 5}])  # another process whose clock is behind
    [first, second] = read_audit(Path(settings.database))
    assert second["ts"] == first["ts"]  # never earlier than the row before it
    assert (await verify(bot_env(settings, tmp_path / "dispatch-bot.yaml")))[0] == 0


async def test_a_hundred_concurrent_commands_make_one_chain(bot: BotUnderTest) -> None:
    await asyncio.gather(*(bot.reply(f"list room-{i}") for i in range(100)))
    result = await bot.runtime.audit.verify()
    assert result.intact and result.rows == 100


async def test_two_processes_writing_at_once_make_one_chain(make_settings: Any, tmp_path: Path) -> None:
    env = bot_env(make_settings(), tmp_path / "dispatch-bot.yaml")
    script = "".join(f"help\nlist room-{i}\n" for i in range(15))
    results = await asyncio.gather(run_cli(["console"], env, stdin=script), run_cli(["console"], env, stdin=script))
    assert [code for code, _, _ in results] == [0, 0], [err[-2000:] for _, _, err in results]
    assert await verify(env) == (0, "audit log intact: 60 rows, every hash and link checked.")


async def test_killed_mid_write_the_log_still_verifies(make_settings: Any, tmp_path: Path) -> None:
    settings = make_settings()
    env = bot_env(settings, tmp_path / "dispatch-bot.yaml")
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "console",
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdin is not None
    proc.stdin.write(b"help\n" * 5000)
    path = Path(settings.database)
    for _ in range(400):  # until a good number of rows are in, then kill it without warning
        await asyncio.sleep(0.025)
        try:
            if len(read_audit(path)) >= 30:
                break
        except sqlite3.Error:  # not created yet
            continue
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    code, out = await verify(env)
    assert code == 0, out
    assert int(out.split(": ")[1].split(" ")[0]) >= 30


async def test_a_file_that_is_not_a_database(tmp_path: Path, make_settings: Any) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"\x00garbage" * 1000)
    env = bot_env(make_settings(), tmp_path / "dispatch-bot.yaml")
    env["DISPATCH_BOT_DB"] = str(bad)
    for args in (["audit"], ["audit", "verify"], ["serve", "--http"]):
        code, _, err = await run_cli(args, env)
        assert code == 2
        assert err.strip() == f"dispatch-bot: The audit database {bad} cannot be used: file is not a database."


async def test_a_mention_as_slack_sends_it(abot: BotUnderTest) -> None:
    result = await abot.command("audit user:<@U02BOB|bob> room:r2", as_sent=True)
    posted = await abot.slack.wait_for_response(url=result.response_url)
    assert [line.split("`")[1] for line in entries(posted.body)] == ["captions r2"]


@pytest.mark.parametrize(
    ("filters", "sentence"),
    [
        ("since:nan", "since:nan is neither a duration nor a date"),
        ("since:inf", "since:inf is neither a duration nor a date"),
        ("since:1e12", "since:1e12 is neither a duration nor a date"),
        ("since:99999999999", "since:99999999999 is neither a duration nor a date"),
        ("limit:²", "limit:² is out of range"),
        ("limit:99999999999999", "is out of range"),
    ],
)
async def test_numbers_that_do_not_fit_are_one_sentence(abot: BotUnderTest, filters: str, sentence: str) -> None:
    text = all_text(await abot.reply(f"audit {filters}"))
    assert sentence in text
    row = abot.audit_rows()[-1]
    assert (row["action"], row["outcome"]) == ("audit", "invalid")


async def test_cli_numbers_that_do_not_fit(make_settings: Any, tmp_path: Path) -> None:
    settings = make_settings()
    await fill(settings.database, HISTORY)
    env = bot_env(settings, tmp_path / "dispatch-bot.yaml")
    for args in (["audit", "since:nan"], ["audit", "limit:²"], ["audit", "prune", "--older-than", "nan"]):
        code, _, err = await run_cli(args, env)
        assert code == 2 and err.startswith("dispatch-bot: ") and "Traceback" not in err, err


async def test_a_read_only_database_is_said_and_nothing_is_done(bot: BotUnderTest, livekit: FakeLiveKit) -> None:
    await bot.reply("help")
    audit = bot.runtime.audit
    await audit._db.execute("PRAGMA query_only = ON")  # the file turns read-only under the bot: both its connections
    assert audit._intake is not None and audit._intake._db is not None  # the received records' own
    audit._intake._db.execute("PRAGMA query_only = ON")
    # A command that cannot be recorded as received is not acknowledged as taken: the ack says why.
    result = await bot.command("link my-room captions")
    assert result.status == 200
    assert "Nothing was done: Writing to the audit database" in result.body
    assert "attempt to write a readonly database" in result.body and "token=" not in result.body
    assert livekit.requests == []
    assert [r.url for r in bot.slack.responses] == [bot.slack.responses[0].url]  # only help's answer


async def test_a_link_whose_row_cannot_be_written_is_withheld(
    make_settings: Callable[..., Any], livekit: FakeLiveKit
) -> None:
    runtime = await Runtime.open(make_settings())
    try:
        await runtime.audit._db.execute("PRAGMA query_only = ON")
        out = io.StringIO()
        reply = await run_once(runtime, "link my-room captions", out)
        text = out.getvalue()
        assert "This was not recorded in the audit log: Writing to the audit database" in text
        assert "The join link was withheld" in text and reply.link is None and "token=" not in text
    finally:
        await runtime.close()


async def test_agent_filter_finds_a_link_that_brings_several_agents(bot: BotUnderTest) -> None:
    await bot.reply("link room-a captions other-agent")
    await bot.reply("captions room-b --dry-run")
    for agent, expected in (
        ("other-agent", ["link room-a captions other-agent"]),
        ("captions", ["captions room-b --dry-run", "link room-a captions other-agent"]),
    ):
        body = await bot.reply(f"audit agent:{agent}")
        assert [line.split("`")[1] for line in entries(body)] == expected
    code_rows = [r for r in bot.audit_rows() if r["action"] == "link"]
    assert code_rows[0]["agent"] == "speech-processing,other-agent"
