"""The only module that speaks SQL: the audit log in SQLite (WAL), one hash-chained row per command."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from ..commands.ports import AuditError, AuditRecord

SCHEMA_VERSION = 1
GENESIS_HASH = "0" * 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id           INTEGER PRIMARY KEY,
    ts           TEXT    NOT NULL,   -- UTC, ISO 8601 with microseconds
    source       TEXT    NOT NULL,   -- slack | cli
    team_id      TEXT    NOT NULL DEFAULT '',
    channel_id   TEXT    NOT NULL DEFAULT '',
    channel_name TEXT    NOT NULL DEFAULT '',
    user_id      TEXT    NOT NULL DEFAULT '',
    user_name    TEXT    NOT NULL DEFAULT '',
    raw_text     TEXT    NOT NULL DEFAULT '',
    action       TEXT    NOT NULL DEFAULT '',
    agent        TEXT    NOT NULL DEFAULT '',
    room         TEXT    NOT NULL DEFAULT '',
    dispatch_id  TEXT    NOT NULL DEFAULT '',
    outcome      TEXT    NOT NULL CHECK (outcome IN ('ok', 'noop', 'denied', 'invalid', 'error')),
    detail       TEXT    NOT NULL DEFAULT '',
    duration_ms  INTEGER NOT NULL DEFAULT 0,
    prev_hash    TEXT    NOT NULL,
    hash         TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_room ON audit (room, id);
CREATE INDEX IF NOT EXISTS audit_agent ON audit (agent, id);
CREATE INDEX IF NOT EXISTS audit_user ON audit (user_id, id);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);
CREATE TABLE IF NOT EXISTS audit_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# The columns a row's hash covers, in this order; with `id` in it, rows cannot be swapped unnoticed.
HASHED_COLUMNS = (
    "id",
    "ts",
    "source",
    "team_id",
    "channel_id",
    "channel_name",
    "user_id",
    "user_name",
    "raw_text",
    "action",
    "agent",
    "room",
    "dispatch_id",
    "outcome",
    "detail",
    "duration_ms",
)
COLUMNS = (*HASHED_COLUMNS, "prev_hash", "hash")


def row_hash(prev_hash: str, content: dict[str, Any]) -> str:
    canonical = json.dumps([content[c] for c in HASHED_COLUMNS], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(f"{prev_hash}\n{canonical}".encode()).hexdigest()


@dataclass(frozen=True)
class AuditRow:
    id: int
    ts: str
    source: str
    team_id: str
    channel_id: str
    channel_name: str
    user_id: str
    user_name: str
    raw_text: str
    action: str
    agent: str
    room: str
    dispatch_id: str
    outcome: str
    detail: str
    duration_ms: int
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _describe(exc: BaseException) -> str:
    return str(exc).split("\n")[0][:200] or type(exc).__name__


class AuditStore:
    """Append-only audit log. One connection, one writer: rows form a single linear hash chain."""

    def __init__(self, path: Path, db: aiosqlite.Connection, last_hash: str) -> None:
        self.path = path
        self._db = db
        self._last_hash = last_hash
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | Path, *, synchronous: str = "FULL") -> AuditStore:
        path = Path(path)
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise AuditError(f"Cannot open the audit database {path}: {_describe(exc)}.") from None
        try:
            await db.execute("PRAGMA busy_timeout = 5000")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute(f"PRAGMA synchronous = {synchronous}")
            await db.executescript(_SCHEMA)
            await db.execute(
                "INSERT OR IGNORE INTO audit_meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            async with db.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1") as cursor:
                row = await cursor.fetchone()
            if row is None:
                async with db.execute("SELECT value FROM audit_meta WHERE key = 'anchor_hash'") as cursor:
                    row = await cursor.fetchone()
        except (sqlite3.Error, OSError) as exc:
            await db.close()
            raise AuditError(f"The audit database {path} cannot be used: {_describe(exc)}.") from None
        return cls(path, db, row[0] if row else GENESIS_HASH)

    async def close(self) -> None:
        await self._db.close()

    async def record(self, entry: AuditRecord) -> int:
        """Append one row and commit it; returns its id. Raises AuditError with one sentence on failure."""
        actor = entry.actor
        content: dict[str, Any] = {
            "source": actor.source,
            "team_id": actor.team_id,
            "channel_id": actor.channel_id,
            "channel_name": actor.channel_name,
            "user_id": actor.user_id,
            "user_name": actor.user_name,
            "raw_text": entry.raw_text,
            "action": entry.action,
            "agent": entry.agent,
            "room": entry.room,
            "dispatch_id": entry.dispatch_id,
            "outcome": entry.outcome,
            "detail": entry.detail,
            "duration_ms": entry.duration_ms,
        }
        async with self._write_lock:
            content["ts"] = datetime.now(UTC).isoformat(timespec="microseconds")  # in id order
            try:
                await self._db.execute("BEGIN IMMEDIATE")
                try:
                    async with self._db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM audit") as cursor:
                        row = await cursor.fetchone()
                    content["id"] = int(row[0]) if row else 1
                    content["prev_hash"] = self._last_hash
                    content["hash"] = row_hash(self._last_hash, content)
                    await self._db.execute(
                        f"INSERT INTO audit ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                        [content[c] for c in COLUMNS],
                    )
                    await self._db.execute("COMMIT")
                except BaseException:
                    await self._db.execute("ROLLBACK")
                    raise
            except (sqlite3.Error, OSError) as exc:
                raise AuditError(f"Writing to the audit database {self.path} failed: {_describe(exc)}.") from None
            self._last_hash = content["hash"]
            return int(content["id"])

    async def newest(self, limit: int = 20) -> list[AuditRow]:
        return [row async for row in self.rows(limit=limit, newest_first=True)]

    async def rows(self, *, limit: int | None = None, newest_first: bool = False) -> AsyncIterator[AuditRow]:
        """Rows streamed from the database, not built in memory."""
        order = "DESC" if newest_first else "ASC"
        sql = f"SELECT {', '.join(COLUMNS)} FROM audit ORDER BY id {order}"
        params: list[Any] = []
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        try:
            async with self._db.execute(sql, params) as cursor:
                async for row in cursor:
                    yield AuditRow(*row)
        except sqlite3.Error as exc:
            raise AuditError(f"Reading the audit database {self.path} failed: {_describe(exc)}.") from None
