"""Prune in bounded batches: commands write between batches, and a prune cut short leaves a chain that verifies."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dispatch_bot.bot.audit_store import AuditStore
from dispatch_bot.commands.ports import Actor, AuditRecord
from tests.conftest import read_audit
from tests.test_console import bot_env, run_cli

ACTOR = Actor("cli", "cli:ana", "cli:ana")


async def old_and_new(path: str, old: int) -> None:
    """`old` rows written 40 days ago, then one written now."""
    now = datetime.now(UTC)
    store = await AuditStore.open(path, now=lambda: now - timedelta(days=40))
    for i in range(old):
        await store.record(AuditRecord(ACTOR, f"list old-{i}", "list", "ok"))
    await store.close()
    store = await AuditStore.open(path)
    await store.record(AuditRecord(ACTOR, "help", "help", "ok"))
    await store.close()


async def verify(env: dict[str, str]) -> tuple[int, str]:
    code, out, err = await run_cli(["audit", "verify"], env)
    assert "Traceback" not in err
    return code, out.strip()


async def test_a_prune_cut_short_verifies_and_running_it_again_finishes_it(make_settings: Any, tmp_path: Path) -> None:
    settings = make_settings()
    env = bot_env(settings, tmp_path / "dispatch-bot.yaml")
    await old_and_new(settings.database, 100)  # rows 1-100 old, 101 new
    store = await AuditStore.open(settings.database)
    halfway = asyncio.Event()
    seen: list[int] = []

    def progress(removed: int) -> None:
        seen.append(removed)
        if removed >= 40:
            halfway.set()

    cutoff = datetime.now(UTC) - timedelta(days=30)
    prune = asyncio.create_task(store.prune(cutoff, ACTOR, batch_rows=10, progress=progress))
    await halfway.wait()
    prune.cancel()  # as if the process stopped between two batches
    with pytest.raises(asyncio.CancelledError):
        await prune
    await store.close()

    cut = seen[-1]  # batches of at most 10 rows: the prune stopped with 40 to 49 rows removed
    assert 40 <= cut < 50 and seen == sorted(set(seen))
    rows = read_audit(Path(settings.database))
    assert [r["id"] for r in rows] == list(range(cut + 1, 103))  # the prune row (102) came before any removal
    assert rows[-1]["action"] == "prune" and "removed 100 rows older than " in rows[-1]["detail"]
    assert "up to row 100; anchor row 100 hash " in rows[-1]["detail"]
    intact = f"audit log intact: {102 - cut} rows from row {cut + 1}, every hash and link checked."
    assert await verify(env) == (0, intact)

    code, out, _ = await run_cli(["audit", "prune", "--older-than", "30d"], env)
    assert code == 0 and out.startswith(f"removed {100 - cut} rows, up to row 100")
    assert [(r["id"], r["action"]) for r in read_audit(Path(settings.database))] == [
        (101, "help"),
        (102, "prune"),
        (103, "prune"),
    ]
    assert await verify(env) == (0, "audit log intact: 3 rows from row 101, every hash and link checked.")


async def test_an_anchor_past_the_recorded_prune_does_not_verify(make_settings: Any, tmp_path: Path) -> None:
    settings = make_settings()
    env = bot_env(settings, tmp_path / "dispatch-bot.yaml")
    await old_and_new(settings.database, 10)
    store = await AuditStore.open(settings.database)
    await store.prune(datetime.now(UTC) - timedelta(days=30), ACTOR, batch_rows=3)
    await store.record(AuditRecord(ACTOR, "help", "help", "ok"))  # row 13, after the prune row (12)
    await store.close()
    assert (await verify(env))[0] == 0
    with sqlite3.connect(settings.database) as db:  # remove the new row 11 too, past what the prune recorded
        prev = db.execute("SELECT prev_hash FROM audit WHERE id = 12").fetchone()[0]
        db.execute("DELETE FROM audit WHERE id = 11")
        db.executemany("INSERT OR REPLACE INTO audit_meta VALUES (?, ?)", [("anchor_id", "11"), ("anchor_hash", prev)])
    code, out = await verify(env)
    assert code == 1 and "the log starts after row 11, but no prune recorded removing the rows before it." in out


async def test_commands_write_their_rows_between_the_batches_of_a_prune(make_settings: Any) -> None:
    settings = make_settings()
    await old_and_new(settings.database, 50)
    store = await AuditStore.open(settings.database)
    command: asyncio.Task[int] | None = None
    seen: list[tuple[int, bool]] = []  # (rows removed, whether the command's row was written yet)

    def progress(removed: int) -> None:
        nonlocal command
        if command is None:  # a command arrives while the prune is under way
            command = asyncio.create_task(store.record(AuditRecord(ACTOR, "help", "help", "ok")))
        seen.append((removed, command.done()))

    result = await store.prune(datetime.now(UTC) - timedelta(days=30), ACTOR, batch_rows=10, progress=progress)
    assert command is not None
    row_id = await command
    await store.close()
    assert result.removed == 50 and result.anchor_id == 50
    assert seen[0] == (10, False) and seen[-1] == (50, True)  # batches of at most 10 rows
    assert all(written for _, written in seen[1:])  # the command's row went in right after the first batch
    assert row_id == 53  # after the new row (51) and the prune row (52)
    rows = read_audit(Path(settings.database))
    assert [(r["id"], r["action"]) for r in rows] == [(51, "help"), (52, "prune"), (53, "help")]
