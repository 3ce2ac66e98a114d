"""Writes that arrive together share one commit; each is on disk when it returns, and a failing one fails alone."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from dispatch_bot.bot.audit_store import AuditStore
from dispatch_bot.commands.ports import Actor, AuditError, AuditRecord

ACTOR = Actor(source="slack", user_id="U1", user_name="ana", channel_id="C1")


def rows_on_disk(path: Path) -> list[tuple[int, str]]:
    """What another process reads from the file: only committed rows."""
    with sqlite3.connect(path) as db:
        return [(int(i), str(t)) for i, t in db.execute("SELECT id, raw_text FROM audit ORDER BY id")]


async def test_a_burst_of_rows_is_committed_together_in_one_chain_each_on_disk_when_its_call_returns(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.db"
    store = await AuditStore.open(path)
    try:
        seen_on_return: dict[int, bool] = {}

        async def one(i: int) -> None:
            row_id = await store.record(AuditRecord(ACTOR, f"captions room-{i}", "dispatch", "ok", room=f"room-{i}"))
            seen_on_return[i] = (row_id, f"captions room-{i}") in rows_on_disk(path)

        await asyncio.gather(*(one(i) for i in range(30)))
        assert all(seen_on_return.values()) and len(seen_on_return) == 30
        assert [i for i, _ in rows_on_disk(path)] == list(range(1, 31))
        assert (await store.verify()).intact
    finally:
        await store.close()


async def test_a_write_that_fails_fails_alone_and_the_others_of_its_group_are_written(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    store = await AuditStore.open(path)
    try:

        def broken(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO no_such_table VALUES (1)")

        results = await asyncio.gather(
            store.record(AuditRecord(ACTOR, "captions a", "dispatch", "ok")),
            store.write(broken),
            store.record(AuditRecord(ACTOR, "captions b", "dispatch", "ok")),
            return_exceptions=True,
        )
        assert isinstance(results[1], sqlite3.OperationalError)
        assert [text for _, text in rows_on_disk(path)] == ["captions a", "captions b"]
        assert (await store.verify()).intact
    finally:
        await store.close()


async def test_a_closed_database_is_one_sentence(tmp_path: Path) -> None:
    store = await AuditStore.open(tmp_path / "audit.db")
    await store.close()
    with pytest.raises(AuditError, match=r"Writing to the audit database .* failed"):
        await store.record(AuditRecord(ACTOR, "captions a", "dispatch", "ok"))
