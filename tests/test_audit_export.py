"""Streaming export and verify over more rows than one fetch: the same rows, in the same order, as the database."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatch_bot.bot.audit_store import COLUMNS, STREAM_CHUNK, AuditStore
from dispatch_bot.commands.ports import Actor, AuditQuery, AuditRecord
from tests.conftest import read_audit
from tests.test_console import bot_env, run_cli

ROWS = 2 * STREAM_CHUNK + 321  # three fetches, the last one partial
T0 = datetime(2026, 11, 1, tzinfo=UTC)


async def fill(path: str) -> None:
    clock = {"now": T0}
    store = await AuditStore.open(path, synchronous="OFF", now=lambda: clock["now"])  # setup only: no fsync
    try:
        for i in range(ROWS):
            clock["now"] = T0 + timedelta(seconds=i)
            actor = Actor("slack", f"U{i % 7}", "zoë", "T1", "C1", 'ops, "east"')
            room = f"room-{i % 5}"
            detail = 'line one\nline two,\twith "quotes", \\ \x01 and ünïcode ✓' if i % 3 else ""
            await store.record(
                AuditRecord(actor, f"captions {room}", "dispatch", "ok", "speech-processing", room, detail=detail)
            )
    finally:
        await store.close()


async def test_jsonl_and_csv_exports_stream_every_row_newest_first(make_settings: Any, tmp_path: Path) -> None:
    settings = make_settings()
    await fill(settings.database)
    env = bot_env(settings, tmp_path / "dispatch-bot.yaml")
    expected = list(reversed(read_audit(Path(settings.database))))
    assert len(expected) == ROWS

    code, out, err = await run_cli(["audit", "--all", "--format", "jsonl"], env)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert [json.loads(line) for line in lines] == expected
    assert [list(json.loads(line)) for line in lines[:1]] == [list(COLUMNS)]  # keys in column order
    # One compact JSON object per line, non-ASCII kept as it is: byte for byte what json.dumps would write.
    assert lines == [json.dumps(row, ensure_ascii=False, separators=(",", ":")) for row in expected]

    code, out, err = await run_cli(["audit", "--all", "--format", "csv"], env)
    assert code == 0 and err == ""
    records = list(csv.reader(io.StringIO(out, newline="")))
    assert records[0] == list(COLUMNS)
    assert records[1:] == [[str(row[c]) for c in COLUMNS] for row in expected]
    assert out == csv_module_text([[row[c] for c in COLUMNS] for row in expected])  # byte for byte

    code, out, _ = await run_cli(["audit", "room:room-3", "limit:1500", "--format", "jsonl"], env)
    picked = [row for row in expected if row["room"] == "room-3"][:1500]
    assert code == 0 and [json.loads(line) for line in out.splitlines()] == picked
    code, out, _ = await run_cli(["audit", "room:room-3", "limit:1500", "--format", "csv"], env)
    assert code == 0 and out == csv_module_text([[row[c] for c in COLUMNS] for row in picked])


def csv_module_text(rows: list[list[Any]]) -> str:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    return text.getvalue()


# Every character the csv module quotes for, alone and together, at either end, and text it leaves alone.
AWKWARD = st.text(alphabet=st.sampled_from([",", '"', "\r", "\n", " ", "\t", "'", ";", "a", "é", "✓", "\\"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.tuples(AWKWARD, AWKWARD, AWKWARD), min_size=1, max_size=5))
async def test_csv_lines_are_what_the_csv_module_writes(tmp_path: Path, texts: list[tuple[str, str, str]]) -> None:
    store = await AuditStore.open(tmp_path / f"csv-{uuid.uuid4().hex}.db", synchronous="OFF")
    try:
        for raw, room, detail in texts:
            actor = Actor("slack", "U1", detail[:3], "T1", "C1", room)
            await store.record(AuditRecord(actor, raw, "dispatch", "ok", raw, room, detail=detail))
        rows = [[getattr(r, c) for c in COLUMNS] async for r in store.rows()]
        out = io.StringIO(newline="")
        await store.write_csv(out)
        assert out.getvalue() == csv_module_text(rows)
    finally:
        await store.close()


async def test_verify_walks_every_fetch_and_names_an_altered_row_in_a_later_one(
    make_settings: Any, tmp_path: Path
) -> None:
    settings = make_settings()
    await fill(settings.database)
    env = bot_env(settings, tmp_path / "dispatch-bot.yaml")
    code, out, _ = await run_cli(["audit", "verify"], env)
    assert (code, out.strip()) == (0, f"audit log intact: {ROWS} rows, every hash and link checked.")

    altered = STREAM_CHUNK + 500
    with sqlite3.connect(settings.database) as db:
        db.execute("UPDATE audit SET detail = 'nothing happened' WHERE id = ?", (altered,))
    code, out, _ = await run_cli(["audit", "verify"], env)
    assert code == 1
    assert out.strip() == (
        f"audit log BROKEN at row {altered}: row {altered} was altered: its content does not match its hash. "
        f"({altered - 1} rows before it check out)."
    )


async def test_a_csv_export_cancelled_half_way_stops_and_leaves_the_store_usable(make_settings: Any) -> None:
    settings = make_settings()
    await fill(settings.database)
    loop = asyncio.get_running_loop()
    writing, release = asyncio.Event(), threading.Event()

    class SlowReader(io.StringIO):
        """A reader that takes the header and then holds the export until the test lets it go."""

        def write(self, text: str) -> int:
            if not writing.is_set():
                loop.call_soon_threadsafe(writing.set)
                release.wait(30)
            return super().write(text)

    out = SlowReader(newline="")
    store = await AuditStore.open(settings.database)
    try:
        export = asyncio.create_task(store.write_csv(out))
        await asyncio.wait_for(writing.wait(), 30)
        export.cancel()
        await asyncio.sleep(0)  # one turn of the loop: the export sees its cancellation and interrupts the query
        release.set()
        await asyncio.wait([export], timeout=30)
        assert export.cancelled()
        assert 1 <= len(list(csv.reader(io.StringIO(out.getvalue(), newline="")))) < ROWS  # it stopped early
        assert (await store.query(AuditQuery(limit=1))).rows[0].id == ROWS
    finally:
        await store.close()
