"""The only module that speaks SQL: the audit log in SQLite (WAL), one hash-chained row per command."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from ..commands.ports import Actor, AuditError, AuditPage, AuditQuery, AuditRecord, AuditRow, WatchRecord

SCHEMA_VERSION = 2
GENESIS_HASH = "0" * 64
MORE_CAP = 10_000  # counting further than this for "N more match" is not worth a scan

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id           INTEGER PRIMARY KEY,
    ts           TEXT    NOT NULL,   -- UTC, ISO 8601 with microseconds; grows with id
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
CREATE INDEX IF NOT EXISTS audit_outcome ON audit (outcome, id);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);
CREATE TABLE IF NOT EXISTS audit_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit_agents (
    agent  TEXT    NOT NULL,
    row_id INTEGER NOT NULL,
    PRIMARY KEY (agent, row_id)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS audit_agent_list AFTER INSERT ON audit
WHEN NEW.agent LIKE '%,%' AND NEW.agent NOT GLOB '*[^A-Za-z0-9_,-]*' BEGIN
    INSERT OR IGNORE INTO audit_agents (agent, row_id)
    SELECT value, NEW.id FROM json_each('["' || replace(NEW.agent, ',', '","') || '"]');
END;
-- The tip, written with each row in its transaction: verify tells a log cut short from an intact one.
CREATE TRIGGER IF NOT EXISTS audit_tip AFTER INSERT ON audit BEGIN
    INSERT OR REPLACE INTO audit_meta (key, value) VALUES ('tip_id', NEW.id), ('tip_hash', NEW.hash);
END;
"""

# The columns a row's hash covers, in this order; with `id` in it, rows cannot be swapped unnoticed.
HASHED_COLUMNS = (
    "id", "ts", "source", "team_id", "channel_id", "channel_name", "user_id", "user_name", "raw_text",
    "action", "agent", "room", "dispatch_id", "outcome", "detail", "duration_ms",
)  # fmt: skip
COLUMNS = (*HASHED_COLUMNS, "prev_hash", "hash")
_WRITE_ATTEMPTS = 20
# The tip is the last row, or after a prune of everything the anchor, or the genesis of an empty log.
# The tip is the last row, or after a prune of everything the anchor, or the genesis of an empty log.
_TIP = """
WITH last AS (SELECT id, ts, hash FROM audit ORDER BY id DESC LIMIT 1)
SELECT COALESCE((SELECT id FROM last), (SELECT CAST(value AS INTEGER) FROM audit_meta WHERE key = 'anchor_id'), 0),
       COALESCE((SELECT ts FROM last), ''),
       COALESCE((SELECT hash FROM last), (SELECT value FROM audit_meta WHERE key = 'anchor_hash'), ?)
"""
_TIP_ID = (
    "COALESCE((SELECT id FROM audit ORDER BY id DESC LIMIT 1),"
    " (SELECT CAST(value AS INTEGER) FROM audit_meta WHERE key = 'anchor_id'), 0)"
)
# The row goes in only if the tip is still the one it was hashed on; one statement, so one atomic transaction.
_APPEND = (
    f"INSERT INTO audit ({', '.join(COLUMNS)}) SELECT {', '.join('?' * len(COLUMNS))} WHERE {_TIP_ID} = ? RETURNING id"
)


_SELECT = f"SELECT {', '.join(COLUMNS)} FROM audit"


def row_hash(prev_hash: str, content: dict[str, Any]) -> str:
    canonical = json.dumps([content[c] for c in HASHED_COLUMNS], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(f"{prev_hash}\n{canonical}".encode()).hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    rows: int
    first_id: int | None
    broken_id: int | None = None
    problem: str = ""

    @property
    def intact(self) -> bool:
        return self.broken_id is None and not self.problem


@dataclass(frozen=True)
class PruneResult:
    removed: int
    anchor_id: int | None


_OPEN_ATTEMPTS = 100


class _NotWalYet(sqlite3.OperationalError):
    pass


async def _initialize(db: aiosqlite.Connection, synchronous: str) -> None:
    async with db.execute("PRAGMA journal_mode = WAL") as cursor:
        mode = await cursor.fetchone()
    if not mode or str(mode[0]).lower() != "wal":
        # Switching a new file to WAL needs it to itself; another process opening it now gets the old mode.
        raise _NotWalYet("it cannot be switched to WAL mode")
    await db.execute(f"PRAGMA synchronous = {synchronous}")
    await db.executescript(_SCHEMA)
    await db.execute("INSERT OR IGNORE INTO audit_meta (key, value) VALUES ('schema_version', '1')")
    await _migrate(db)


class SchemaTooNew(Exception):
    """The database was written by a newer dispatch-bot."""


async def _migrate(db: aiosqlite.Connection) -> None:
    """Bring a database written by an older version up to SCHEMA_VERSION, one step at a time, each in a transaction."""
    async with db.execute("SELECT value FROM audit_meta WHERE key = 'schema_version'") as cursor:
        row = await cursor.fetchone()
    version = int(row[0]) if row else 1
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(f"its schema is version {version}, newer than this dispatch-bot's {SCHEMA_VERSION}")
    for step in range(version, SCHEMA_VERSION):
        await db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _MIGRATIONS[step]:
                await db.execute(statement)
            await db.execute(
                "UPDATE audit_meta SET value = ? WHERE key = 'schema_version' AND value = ?", (str(step + 1), str(step))
            )
            await db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            raise


# Version 1 -> 2: agent supervision's desired state (watches), the webhook ids already handled, the rooms rules served.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE IF NOT EXISTS watches (
            id            INTEGER PRIMARY KEY,
            room          TEXT    NOT NULL,
            room_sid      TEXT    NOT NULL DEFAULT '',
            agent         TEXT    NOT NULL,
            dispatch_id   TEXT    NOT NULL,
            state         TEXT    NOT NULL CHECK (state IN ('waiting', 'present', 'away', 'closed')),
            started_at    REAL    NOT NULL,   -- unix s: the dispatch (or --keep attempt) was sent
            identity      TEXT    NOT NULL DEFAULT '',
            closed_reason TEXT    NOT NULL DEFAULT '',
            keep          INTEGER NOT NULL DEFAULT 0,
            keep_attempt  INTEGER NOT NULL DEFAULT 0,
            next_at       REAL    NOT NULL DEFAULT 0,
            seen_at       REAL    NOT NULL DEFAULT 0,
            left_at       REAL    NOT NULL DEFAULT 0,
            left_reason   TEXT    NOT NULL DEFAULT '',
            missing       INTEGER NOT NULL DEFAULT 0,
            channel_id    TEXT    NOT NULL DEFAULT '',
            thread_ts     TEXT    NOT NULL DEFAULT '',
            source        TEXT    NOT NULL DEFAULT '',
            team_id       TEXT    NOT NULL DEFAULT '',
            user_id       TEXT    NOT NULL DEFAULT '',
            user_name     TEXT    NOT NULL DEFAULT '',
            rule          TEXT    NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX IF NOT EXISTS watches_open ON watches (room) WHERE state != 'closed'",
        "CREATE INDEX IF NOT EXISTS watches_room_dispatch ON watches (room, dispatch_id)",
        "CREATE TABLE IF NOT EXISTS webhook_events (id TEXT PRIMARY KEY, received REAL NOT NULL)",
        "CREATE INDEX IF NOT EXISTS webhook_events_received ON webhook_events (received)",
        """CREATE TABLE IF NOT EXISTS rule_rooms (
            room_sid TEXT NOT NULL,
            rule     TEXT NOT NULL,
            room     TEXT NOT NULL,
            served   REAL NOT NULL,
            PRIMARY KEY (room_sid, rule)
        ) WITHOUT ROWID""",
    ),
}


def _describe(exc: BaseException) -> str:
    text = str(exc).split("\n")[0][:200] or type(exc).__name__
    if isinstance(exc, sqlite3.OperationalError) and "locked" in text:
        return f"{text} (another program holds it; try again)"
    return text


# A link that brings several agents records them all in `agent` ("a,b"); this side table lists each of them, so
# that agent: finds the row through an index too. Filled by a trigger in the row's own transaction.
_AGENT_OF_ROW = "id IN (SELECT row_id FROM audit_agents WHERE agent = ?)"


def _where(query: AuditQuery, agent_clause: str = "agent = ?") -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("room", query.room), ("agent", query.agent), ("user_id", query.user_id),
                          ("outcome", query.outcome)):  # fmt: skip
        if value:
            clauses.append(agent_clause if column == "agent" else f"{column} = ?")
            params.extend([value] * agent_clause.count("?") if column == "agent" else [value])
    if query.since is not None:
        # ts grows with id, so the time bound becomes an id bound that every (column, id) index can range over.
        clauses.append("id >= COALESCE((SELECT id FROM audit WHERE ts >= ? ORDER BY ts LIMIT 1), 1 << 62)")
        params.append(query.since.astimezone(UTC).isoformat(timespec="microseconds"))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


class AuditStore:
    """Append-only audit log. Each append is one statement that inserts only if the chain's tip is still the row
    it was hashed on, so rows from concurrent commands, or from two processes sharing the file, form one line."""

    def __init__(self, path: Path, db: aiosqlite.Connection, now: Callable[[], datetime] | None = None) -> None:
        self.path = path
        self._db = db
        self._now = now or (lambda: datetime.now(UTC))
        self._write_lock = asyncio.Lock()
        # The chain's tip as this store last wrote it; the append checks it still holds, and re-reads when not.
        self._tip: tuple[int, str, str] | None = None

    @classmethod
    async def open(
        cls, path: str | Path, *, synchronous: str = "FULL", now: Callable[[], datetime] | None = None
    ) -> AuditStore:
        path = Path(path)
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise AuditError(f"Cannot open the audit database {path}: {_describe(exc)}.") from None
        try:
            await db.execute("PRAGMA busy_timeout = 5000")
            for attempt in range(_OPEN_ATTEMPTS):
                try:
                    await _initialize(db, synchronous)
                    break
                except sqlite3.OperationalError as exc:
                    # A new file is being set up by another process (WAL switch, schema): SQLite answers "locked"
                    # without waiting in some of those steps, so this waits and asks again.
                    busy = isinstance(exc, _NotWalYet) or getattr(exc, "sqlite_errorname", "").startswith("SQLITE_BUSY")
                    if not busy or attempt + 1 == _OPEN_ATTEMPTS:
                        raise
                    await asyncio.sleep(0.05)
        except SchemaTooNew as exc:
            await db.close()
            raise AuditError(
                f"The audit database {path} cannot be used: {exc}; upgrade dispatch-bot, or point DISPATCH_BOT_DB at "
                "another file."
            ) from None
        except (sqlite3.Error, OSError) as exc:
            await db.close()
            raise AuditError(f"The audit database {path} cannot be used: {_describe(exc)}.") from None
        return cls(path, db, now)

    async def close(self) -> None:
        await self._db.close()

    async def record(self, entry: AuditRecord) -> int:
        """Append one row and commit it; returns its id. Raises AuditError with one sentence on failure."""
        actor = entry.actor
        content: dict[str, Any] = {
            "source": actor.source, "team_id": actor.team_id, "channel_id": actor.channel_id,
            "channel_name": actor.channel_name, "user_id": actor.user_id, "user_name": actor.user_name,
            "raw_text": entry.raw_text, "action": entry.action, "agent": entry.agent, "room": entry.room,
            "dispatch_id": entry.dispatch_id, "outcome": entry.outcome, "detail": entry.detail,
            "duration_ms": entry.duration_ms,
        }  # fmt: skip
        async with self._write_lock:
            for _ in range(_WRITE_ATTEMPTS):
                try:
                    if self._tip is None:
                        [(tip_id, tip_ts, tip_hash)] = await self._db.execute_fetchall(_TIP, (GENESIS_HASH,))
                        self._tip = (int(tip_id), str(tip_ts), str(tip_hash))
                    tip_id, tip_ts, tip_hash = self._tip
                    content["id"] = tip_id + 1
                    # A row's time never goes back past the tip's: ts grows with id (since: relies on it).
                    content["ts"] = max(self._now().astimezone(UTC).isoformat(timespec="microseconds"), tip_ts)
                    content["prev_hash"] = tip_hash
                    content["hash"] = row_hash(tip_hash, content)
                    inserted = await self._db.execute_fetchall(_APPEND, [*(content[c] for c in COLUMNS), tip_id])
                except (sqlite3.Error, OSError) as exc:
                    if getattr(exc, "sqlite_errorname", "") != "SQLITE_BUSY_SNAPSHOT":
                        raise self._write_failed(exc) from None
                    inserted = []  # another process wrote between this statement's read and its write
                if not inserted:  # the tip moved (another process appended, or pruned): read it again
                    self._tip = None
                    continue
                self._tip = (int(content["id"]), content["ts"], content["hash"])
                return int(content["id"])
            raise self._write_failed(RuntimeError("other writers kept moving its tip"))

    def _write_failed(self, exc: BaseException) -> AuditError:
        return AuditError(f"Writing to the audit database {self.path} failed: {_describe(exc)}.")

    async def _meta(self, key: str) -> str | None:
        async with self._db.execute("SELECT value FROM audit_meta WHERE key = ?", (key,)) as cursor:
            row = await cursor.fetchone()
        return str(row[0]) if row else None

    # --- reading --------------------------------------------------------------------------------------------

    async def newest(self, limit: int = 20) -> list[AuditRow]:
        return (await self.query(AuditQuery(limit=limit))).rows

    async def query(self, query: AuditQuery) -> AuditPage:
        """The newest `limit` rows matching, and how many more match."""
        # With agent:, rows naming that agent alone and rows of several agents are two index ranges; each is
        # read newest first and the two are merged, rather than sorting their union.
        clauses = ["agent = ?", _AGENT_OF_ROW] if query.agent else ["agent = ?"]
        branches = [_where(query, clause) for clause in clauses]
        page = " UNION ALL ".join(f"SELECT * FROM ({_SELECT}{w} ORDER BY id DESC LIMIT ?)" for w, _ in branches)
        count = " + ".join(f"(SELECT COUNT(*) FROM (SELECT 1 FROM audit{w} LIMIT ?))" for w, _ in branches)
        cap = query.limit + MORE_CAP + 1
        try:
            page_params = [v for w, p in branches for v in [*p, query.limit]]
            async with self._db.execute(f"{page} ORDER BY id DESC LIMIT ?", [*page_params, query.limit]) as cur:
                rows = [AuditRow(*r) async for r in cur]
            more = 0
            if len(rows) == query.limit:
                async with self._db.execute(f"SELECT {count}", [v for w, p in branches for v in [*p, cap]]) as cur:
                    counted = await cur.fetchone()
                more = max(0, int(counted[0]) - query.limit) if counted else 0
        except sqlite3.Error as exc:
            raise AuditError(f"Reading the audit database {self.path} failed: {_describe(exc)}.") from None
        return AuditPage(rows, min(more, MORE_CAP), more > MORE_CAP)

    async def rows(self, query: AuditQuery | None = None, *, limit: int | None = None) -> AsyncIterator[AuditRow]:
        """Matching rows, newest first, streamed from the database rather than built in memory."""
        where, params = _where(query or AuditQuery(), f"(agent = ? OR {_AGENT_OF_ROW})")
        sql = f"{_SELECT}{where} ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        try:
            async with self._db.execute(sql, params) as cursor:
                async for row in cursor:
                    yield AuditRow(*row)
        except sqlite3.Error as exc:
            raise AuditError(f"Reading the audit database {self.path} failed: {_describe(exc)}.") from None

    # --- integrity and retention ----------------------------------------------------------------------------

    async def verify(self) -> VerifyResult:
        """Walk the chain from its anchor; name the first row whose content or link is wrong."""
        try:
            anchor_id_text = await self._meta("anchor_id")
            anchor_hash = await self._meta("anchor_hash")
            expected_prev = anchor_hash or GENESIS_HASH
            last_prune: AuditRow | None = None
            expected_id = (int(anchor_id_text) if anchor_id_text else 0) + 1
            count, first_id = 0, None
            async with self._db.execute(f"{_SELECT} ORDER BY id") as cursor:
                async for raw in cursor:
                    row = AuditRow(*raw)
                    first_id = row.id if first_id is None else first_id
                    content = {c: getattr(row, c) for c in HASHED_COLUMNS}
                    if row.id != expected_id or row.prev_hash != expected_prev:
                        gap = f"row {expected_id} is missing" if row.id != expected_id else "the row before it changed"
                        return VerifyResult(
                            count, first_id, row.id, f"row {row.id} does not follow on from the row before it ({gap})."
                        )
                    if row_hash(row.prev_hash, content) != row.hash:
                        return VerifyResult(
                            count, first_id, row.id, f"row {row.id} was altered: its content does not match its hash."
                        )
                    expected_prev, expected_id = row.hash, row.id + 1
                    if row.action == "prune" and row.outcome == "ok":
                        last_prune = row
                    count += 1
            tip_id, tip_hash = await self._meta("tip_id"), await self._meta("tip_hash")
        except sqlite3.Error as exc:
            raise AuditError(f"Reading the audit database {self.path} failed: {_describe(exc)}.") from None
        last_id = expected_id - 1
        if tip_id is not None and int(tip_id) > last_id:
            return VerifyResult(
                count, first_id, last_id + 1,
                f"the log ends at row {last_id}, but row {tip_id} was written: the rows after {last_id} were removed.",
            )  # fmt: skip
        if tip_id is not None and int(tip_id) == last_id and tip_hash != expected_prev:
            return VerifyResult(count, first_id, last_id, f"row {last_id} is not the row that was written last.")
        if anchor_id_text is not None:
            mark = f"anchor row {anchor_id_text} hash {anchor_hash}"
            if last_prune is None or mark not in last_prune.detail:
                return VerifyResult(
                    count, first_id, first_id,
                    f"the log starts after row {anchor_id_text}, but no prune recorded removing the rows before it.",
                )  # fmt: skip
        return VerifyResult(count, first_id)

    async def prune(self, older_than: datetime, actor: Actor) -> PruneResult:
        """Remove rows older than a moment. The last removed row's hash becomes the chain's anchor, and a row of
        its own (action `prune`) records that anchor in the chain."""
        cutoff = older_than.astimezone(UTC).isoformat(timespec="microseconds")
        async with self._write_lock:
            try:
                await self._db.execute("BEGIN IMMEDIATE")
                try:
                    async with self._db.execute(
                        "SELECT id, hash FROM audit WHERE ts < ? ORDER BY id DESC LIMIT 1", (cutoff,)
                    ) as cursor:
                        last = await cursor.fetchone()
                    removed = 0
                    if last is not None:
                        cursor = await self._db.execute("DELETE FROM audit WHERE id <= ?", (last[0],))
                        removed = cursor.rowcount
                        await self._db.executemany(
                            "INSERT OR REPLACE INTO audit_meta (key, value) VALUES (?, ?)",
                            [("anchor_id", str(last[0])), ("anchor_hash", str(last[1]))],
                        )
                    await self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        await self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise AuditError(f"Pruning the audit database {self.path} failed: {_describe(exc)}.") from None
        if last is not None:
            detail = (
                f"removed {removed} rows older than {cutoff[:19]}Z, up to row {last[0]}; "
                f"anchor row {last[0]} hash {last[1]}"
            )
            await self.record(AuditRecord(actor, "audit prune", "prune", "ok", detail=detail))
        return PruneResult(removed, int(last[0]) if last else None)

    # --- backup ---------------------------------------------------------------------------------------------

    async def backup(self, target: Path) -> None:
        """A consistent copy of the whole database in the new file `target`, by SQLite's online backup in one
        step: it reads one snapshot, and in WAL mode the writers of other processes go on meanwhile."""
        try:
            copy = await asyncio.to_thread(sqlite3.connect, target, check_same_thread=False)
            try:
                await self._db.backup(copy, pages=0)
            finally:
                await asyncio.to_thread(copy.close)
        except (sqlite3.Error, OSError) as exc:
            raise AuditError(f"Copying the audit database {self.path} to {target} failed: {_describe(exc)}.") from None

    # --- health ---------------------------------------------------------------------------------------------

    async def writable(self) -> str | None:
        """None when a write commits now, else why not in a few words (for /healthz); no audit row is added."""
        stamp = self._now().astimezone(UTC).isoformat(timespec="seconds")
        async with self._write_lock:
            try:
                await self._db.execute(
                    "INSERT OR REPLACE INTO audit_meta (key, value) VALUES ('health_written_at', ?)", (stamp,)
                )
            except (sqlite3.Error, OSError, ValueError) as exc:  # ValueError: the connection is closed
                return _describe(exc)
        return None


# --- supervision state (schema version 2) ---------------------------------------------------------------------------

_WATCH_COLUMNS = tuple(f.name for f in dataclass_fields(WatchRecord))
_WATCH_SELECT = f"SELECT {', '.join(_WATCH_COLUMNS)} FROM watches"
WEBHOOK_IDS_KEPT = 10_000  # handled webhook ids remembered (the server retries for well under a minute)


def _watch(row: Any) -> WatchRecord:
    values = dict(zip(_WATCH_COLUMNS, row, strict=True))
    values["keep"] = bool(values["keep"])
    return WatchRecord(**values)


class WatchStore:
    """Agent supervision's desired state, in the audit database so that a restart loses nothing."""

    def __init__(self, store: AuditStore) -> None:
        self._store = store
        self._db = store._db
        self._inserted = 0

    def _failed(self, exc: BaseException) -> AuditError:
        return AuditError(f"The supervision state in {self._store.path} could not be used: {_describe(exc)}.")

    async def add(self, record: WatchRecord) -> WatchRecord:
        """Watch a dispatch; an open watch of the same dispatch is updated instead (keep is only ever turned on)."""
        try:
            updated = await self._db.execute_fetchall(
                "UPDATE watches SET keep = MAX(keep, ?), channel_id = CASE WHEN channel_id = '' THEN ? ELSE channel_id "
                f"END WHERE room = ? AND dispatch_id = ? AND state != 'closed' RETURNING {', '.join(_WATCH_COLUMNS)}",
                (int(record.keep), record.channel_id, record.room, record.dispatch_id),
            )
            if updated:
                return _watch(next(iter(updated)))
            columns = [c for c in _WATCH_COLUMNS if c != "id"]
            values = [int(v) if isinstance(v, bool) else v for v in (getattr(record, c) for c in columns)]
            rows = await self._db.execute_fetchall(
                f"INSERT INTO watches ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) RETURNING id",
                values,
            )
        except sqlite3.Error as exc:
            raise self._failed(exc) from None
        return replace(record, id=int(next(iter(rows))[0]))

    async def save(self, before: WatchRecord, after: WatchRecord) -> bool:
        """Write what changed from `before` to `after`, only if the watch is still in `before`'s state and dispatch.

        False when something else changed it meanwhile (a stop closed it, the follow-up saw its agent): the caller
        looks again rather than act on a stale reading. Columns it did not change (the message's ts) are left alone.
        """
        changed = [c for c in _WATCH_COLUMNS if c != "id" and getattr(before, c) != getattr(after, c)]
        if not changed:
            return True
        values = [int(v) if isinstance(v, bool) else v for v in (getattr(after, c) for c in changed)]
        try:
            cursor = await self._db.execute(
                f"UPDATE watches SET {', '.join(f'{c} = ?' for c in changed)} "
                "WHERE id = ? AND state = ? AND dispatch_id = ?",
                [*values, before.id, before.state, before.dispatch_id],
            )
        except sqlite3.Error as exc:
            raise self._failed(exc) from None
        return cursor.rowcount == 1

    async def close(self, room: str, dispatch_ids: list[str], reason: str) -> None:
        if not dispatch_ids:
            return
        marks = ", ".join("?" * len(dispatch_ids))
        try:
            await self._db.execute(
                f"UPDATE watches SET state = 'closed', closed_reason = ? WHERE room = ? AND dispatch_id IN ({marks}) "
                "AND state != 'closed'",
                [reason, room, *dispatch_ids],
            )
        except sqlite3.Error as exc:
            raise self._failed(exc) from None

    async def open_watches(self, room: str | None = None) -> list[WatchRecord]:
        where, params = ("WHERE state != 'closed' AND room = ?", [room]) if room is not None else (
            "WHERE state != 'closed'", [])  # fmt: skip
        try:
            rows = await self._db.execute_fetchall(f"{_WATCH_SELECT} {where} ORDER BY id", params)
        except sqlite3.Error as exc:
            raise self._failed(exc) from None
        return [_watch(r) for r in rows]

    async def watched_rooms(self) -> list[str]:
        try:
            rows = await self._db.execute_fetchall("SELECT DISTINCT room FROM watches WHERE state != 'closed'")
        except sqlite3.Error as exc:
            raise self._failed(exc) from None
        return sorted(str(r[0]) for r in rows)

    async def history(self, room: str) -> dict[str, WatchRecord]:
        """The latest watch of each dispatch in the room, open or closed."""
        try:
            rows = await self._db.execute_fetchall(f"{_WATCH_SELECT} WHERE room = ? ORDER BY id", (room,))
        except sqlite3.Error as exc:
            raise self._failed(exc) from None
        return {w.dispatch_id: w for w in map(_watch, rows)}

    async def mark_seen(self, room: str, dispatch_id: str, identity: str, now: float) -> list[int]:
        """A waiting watch whose agent was seen in the room: present, as that identity. Returns the watches' ids."""
        try:
            rows = await self._db.execute_fetchall(
                "UPDATE watches SET state = 'present', identity = ?, seen_at = ?, missing = 0, keep_attempt = 0 "
                "WHERE room = ? AND dispatch_id = ? AND state = 'waiting' RETURNING id",
                (identity, now, room, dispatch_id),
            )
        except sqlite3.Error as exc:
            raise self._failed(exc) from None
        return [int(r[0]) for r in rows]

    async def set_message(self, room: str, dispatch_id: str, channel_id: str, ts: str) -> None:
        try:
            await self._db.execute(
                "UPDATE watches SET channel_id = ?, thread_ts = ? WHERE room = ? AND dispatch_id = ?",
                (channel_id, ts, room, dispatch_id),
            )
        except sqlite3.Error as exc:
            raise self._failed(exc) from None

    async def first_delivery(self, event_id: str, now: float) -> bool:
        """Record a webhook id; False when it was handled before (the server sends some events twice)."""
        try:
            rows = await self._db.execute_fetchall(
                "INSERT INTO webhook_events (id, received) VALUES (?, ?) ON CONFLICT DO NOTHING RETURNING id",
                (event_id, now),
            )
            self._inserted += bool(rows)
            if self._inserted % 1000 == 0 and rows:  # every thousandth id, forget the oldest beyond the bound
                await self._db.execute(
                    "DELETE FROM webhook_events WHERE received < (SELECT received FROM webhook_events "
                    "ORDER BY received DESC LIMIT 1 OFFSET ?)",
                    (WEBHOOK_IDS_KEPT,),
                )
        except sqlite3.Error as exc:
            raise self._failed(exc) from None
        return bool(rows)

    async def claim_rule_room(self, room_sid: str, rule: str, room: str, now: float) -> bool:
        """Mark the room (by sid) served by the rule; False when it was already: a rule never serves a room twice."""
        try:
            rows = await self._db.execute_fetchall(
                "INSERT INTO rule_rooms (room_sid, rule, room, served) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING "
                "RETURNING room_sid",
                (room_sid, rule, room, now),
            )
        except sqlite3.Error as exc:
            raise self._failed(exc) from None
        return bool(rows)
