"""`dispatch-bot audit backup PATH` copies the audit database while a bot writes; `audit verify --db` checks a copy."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

from dispatch_bot.bot.audit_store import AuditStore
from dispatch_bot.bot.config import Settings
from dispatch_bot.commands.ports import Actor, AuditRecord
from tests.conftest import read_audit
from tests.test_console import bot_env, run_cli

ACTOR = Actor("slack", "U01ANA", "ana", "T123", "C1", "ops")


async def test_a_backup_taken_while_the_bot_writes_is_a_verified_prefix_of_the_log(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    env = bot_env(settings, tmp_path / "dispatch-bot.yaml")
    store = await AuditStore.open(settings.database)
    written = 0
    wanted = asyncio.Event()
    more: dict[str, int] = {}

    async def bot_writing() -> None:
        nonlocal written
        while not wanted.is_set() or written < more["until"]:
            await store.record(AuditRecord(ACTOR, f"list room-{written}", "list", "ok", room=f"room-{written}"))
            written += 1

    for _ in range(20):  # a log that exists before the backup starts
        await store.record(AuditRecord(ACTOR, "help", "help", "ok"))
    writer = asyncio.create_task(bot_writing())
    try:
        code, out, err = await run_cli(["audit", "backup", str(tmp_path / "copy.db")], env)
        more["until"] = written + 5  # and the bot goes on writing after the backup
        wanted.set()
        await writer
    finally:
        writer.cancel()
        await store.close()
    assert (code, err) == (0, "")
    copied = read_audit(tmp_path / "copy.db")
    assert out == f"backup written to {tmp_path / 'copy.db'}: {len(copied)} rows, chain verified.\n"
    original = read_audit(Path(settings.database))
    assert len(copied) >= 20 and original[: len(copied)] == copied and len(original) > len(copied)
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []

    code, out, err = await run_cli(["audit", "verify", "--db", str(tmp_path / "copy.db")], env)
    assert (code, out, err) == (0, f"audit log intact: {len(copied)} rows, every hash and link checked.\n", "")
    code, out, _ = await run_cli(["audit", "verify"], env)
    assert (code, out) == (0, f"audit log intact: {len(original)} rows, every hash and link checked.\n")


async def test_verify_of_a_copy_names_its_broken_row(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings()
    env = bot_env(settings, tmp_path / "dispatch-bot.yaml")
    store = await AuditStore.open(settings.database)
    for i in range(3):
        await store.record(AuditRecord(ACTOR, f"list r{i}", "list", "ok", room=f"r{i}"))
    await store.close()
    copy = tmp_path / "copy.db"
    assert (await run_cli(["audit", "backup", str(copy)], env))[0] == 0
    with sqlite3.connect(copy) as db:
        db.execute("UPDATE audit SET room = 'elsewhere' WHERE id = 2")
    code, out, _ = await run_cli(["audit", "verify", "--db", str(copy)], env)
    assert code == 1
    assert out.startswith("audit log BROKEN at row 2: row 2 was altered")
    assert (await run_cli(["audit", "verify"], env))[0] == 0  # the original is untouched


async def test_backup_mistakes_are_one_sentence(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings()
    env = bot_env(settings, tmp_path / "dispatch-bot.yaml")
    store = await AuditStore.open(settings.database)
    await store.record(AuditRecord(ACTOR, "help", "help", "ok"))
    await store.close()
    existing = tmp_path / "existing.db"
    existing.write_text("keep me")
    cases = {
        ("audit", "backup", str(existing)): (
            f"{existing} already exists: give a new file name (a backup never overwrites a file)."
        ),
        ("audit", "backup", str(tmp_path / "nowhere" / "copy.db")): (
            f"The folder {tmp_path / 'nowhere'} for the backup does not exist: create it first."
        ),
        ("audit", "backup"): "audit backup takes one PATH: the new file to write the copy to.",
        ("audit", "verify", "--db", str(tmp_path / "missing.db")): (
            f"The audit database {tmp_path / 'missing.db'} does not exist: check --db."
        ),
    }
    for args, sentence in cases.items():
        assert await run_cli(list(args), env) == (2, "", f"dispatch-bot: {sentence}\n"), args
    assert existing.read_text() == "keep me"
