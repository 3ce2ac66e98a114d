"""The "N more match" count is bounded: exact up to MORE_CAP, then "More than MORE_CAP"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dispatch_bot.bot.audit_store import MORE_CAP, AuditStore
from dispatch_bot.commands.ports import Actor, AuditQuery, AuditRecord
from tests.test_console import bot_env, run_cli

LIMIT = 20


async def fill(path: str, room_rows: int) -> None:
    """`room_rows` rows in room r1, and as many in r2, interleaved, over the last hours."""
    now = datetime.now(UTC)
    clock = {"now": now}
    store = await AuditStore.open(path, synchronous="OFF", now=lambda: clock["now"])  # setup only: no fsync
    try:
        actor = Actor("slack", "U01ANA", "ana", "T123", "C1", "ops")
        for i in range(2 * room_rows):
            clock["now"] = now - timedelta(seconds=2 * room_rows - i)
            room = "r1" if i % 2 else "r2"
            await store.record(AuditRecord(actor, f"list {room}", "list", "ok", room=room))
    finally:
        await store.close()


async def test_the_count_is_exact_up_to_the_cap_and_says_more_than_past_it(make_settings: Any, tmp_path: Path) -> None:
    settings = make_settings()
    await fill(settings.database, LIMIT + MORE_CAP)
    env = bot_env(settings, tmp_path / "dispatch-bot.yaml")
    code, out, _ = await run_cli(["console", "-c", f"audit room:r1 limit:{LIMIT}"], env)
    assert code == 0 and f"{MORE_CAP:,} more rows match. Narrow with since:" in out

    store = await AuditStore.open(settings.database)
    try:
        page = await store.query(AuditQuery(room="r1", limit=LIMIT))
        assert (len(page.rows), page.more, page.more_capped) == (LIMIT, MORE_CAP, False)
        assert {r.room for r in page.rows} == {"r1"}
        everything = await store.query(AuditQuery(limit=LIMIT))  # twice as many rows: past the cap
        assert (everything.more, everything.more_capped) == (MORE_CAP, True)
        since = await store.query(AuditQuery(room="r1", since=datetime.now(UTC) - timedelta(hours=1), limit=LIMIT))
        assert (since.more, since.more_capped) == (MORE_CAP, False)
    finally:
        await store.close()
    code, out, _ = await run_cli(["console", "-c", f"audit limit:{LIMIT}"], env)
    assert code == 0 and f"More than {MORE_CAP:,} rows match." in out
