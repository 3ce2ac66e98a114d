"""A version 3 database opens as version 4: the `user:` + `outcome:` index is built, rows and chain unchanged."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from dispatch_bot.bot.audit_store import AuditStore
from dispatch_bot.commands.ports import Actor, AuditQuery, AuditRecord


async def test_a_version_3_database_gains_the_user_and_outcome_index_and_answers_the_same(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    store = await AuditStore.open(path, synchronous="OFF")
    try:
        for i in range(60):
            actor = Actor("slack", f"U{i % 3}", f"user{i % 3}", "T1", "C1", "ops")
            outcome = ("ok", "error", "denied")[i % 5 % 3]
            await store.record(AuditRecord(actor, f"list room-{i}", "list", outcome, room=f"room-{i}"))
    finally:
        await store.close()
    with sqlite3.connect(path) as db:  # as version 3 left it: no index on user and outcome together
        db.execute("DROP INDEX audit_user_outcome")
        db.execute("UPDATE audit_meta SET value = '3' WHERE key = 'schema_version'")
        before = db.execute("SELECT * FROM audit ORDER BY id").fetchall()
    expected = [r for r in reversed(before) if r[6] == "U1" and r[13] == "error"]

    store = await AuditStore.open(path)
    try:
        page = await store.query(AuditQuery(user_id="U1", outcome="error", limit=3))
        assert [r.id for r in page.rows] == [r[0] for r in expected[:3]]
        assert (page.more, page.more_capped) == (len(expected) - 3, False)
        assert (await store.verify()).intact
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM audit_meta WHERE key = 'schema_version'").fetchone() == ("4",)
        assert db.execute("SELECT * FROM audit ORDER BY id").fetchall() == before
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM audit WHERE user_id = 'U1' AND outcome = 'error' ORDER BY id DESC"
        ).fetchall()
        assert "audit_user_outcome" in plan[0][3]
