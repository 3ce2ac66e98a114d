"""Writes that arrive together share one commit; each is on disk when it returns, and a failing one fails alone."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from dispatch_bot.bot.audit_store import AuditStore, ReceivedCommand
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


async def test_commands_received_together_each_get_their_own_record_on_disk_when_the_call_returns(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.db"
    store = await AuditStore.open(path)
    try:
        on_disk: dict[int, list[tuple[int, str]]] = {}

        async def one(i: int) -> int:
            command = ReceivedCommand(ACTOR, f"captions room-{i}", f"https://hooks.example/{i}", 0.0, "boot-1")
            received_id = await store.receive(command)
            with sqlite3.connect(path) as db:  # what another process reads: only what is committed
                on_disk[i] = [(int(r), str(t)) for r, t in db.execute("SELECT id, text FROM received_commands")]
            return received_id

        ids = await asyncio.gather(*(one(i) for i in range(40)))
        assert all((ids[i], f"captions room-{i}") in on_disk[i] for i in range(40))
        unfinished = {c.id: (c.text, c.response_url) for c in await store.unfinished("boot-1")}
        assert unfinished == {ids[i]: (f"captions room-{i}", f"https://hooks.example/{i}") for i in range(40)}

        # Finishing a command (its audit row) removes its record, and only its own.
        await store.record(AuditRecord(ACTOR, "captions room-7", "dispatch", "ok", received_id=ids[7]))
        assert ids[7] not in {c.id for c in await store.unfinished()} and len(await store.unfinished()) == 39
    finally:
        await store.close()


async def test_a_row_written_while_a_read_is_under_way_waits_for_it_instead_of_failing(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    store = await AuditStore.open(path)
    try:
        await store.record(AuditRecord(ACTOR, "help", "help", "ok"))
        cursor = await store._db.execute("SELECT id FROM audit UNION ALL SELECT 0")  # a read, one row taken so far
        await cursor.fetchone()
        # The received records' own connection commits meanwhile: the read's snapshot is now an old one.
        await store.receive(ReceivedCommand(ACTOR, "list room-a", "", 0.0, "boot-1"))
        write = asyncio.ensure_future(store.record(AuditRecord(ACTOR, "captions a", "dispatch", "ok")))
        # While the read is under way the write cannot go in; it waits (rather than fail at once, as SQLite does).
        await asyncio.wait([write], timeout=0.3)
        assert not write.done()
        await cursor.close()
        assert await write == 2
        assert [text for _, text in rows_on_disk(path)] == ["help", "captions a"]
    finally:
        await store.close()
