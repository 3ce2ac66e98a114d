"""The only module that speaks SQL: the audit log in SQLite (WAL), one hash-chained row per command."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import json
import re
import sqlite3
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime
from pathlib import Path
from queue import SimpleQueue
from typing import Any, TextIO, TypeVar, cast

import aiosqlite

from ..commands.ports import Actor, AuditError, AuditPage, AuditQuery, AuditRecord, AuditRow, Seen, WatchRecord

SCHEMA_VERSION = 4
GENESIS_HASH = "0" * 64
MORE_CAP = 1_000  # "More than 1,000 rows match": counting further is a scan that costs more than the page
PRUNE_BATCH_ROWS = 5_000  # the most rows one prune transaction removes
# How long one prune transaction aims to hold the write lock; the batch size follows what the last one took.
PRUNE_BATCH_SECONDS = 0.01
# What a prune row records: the row the prune removes up to, and its hash (the chain's anchor once it is done).
_PRUNE_MARK = re.compile(r"anchor row (\d+) hash ([0-9a-f]{64})")

_AUDIT_TABLE = """
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
"""
_OUTCOMES_V1 = "CHECK (outcome IN ('ok', 'noop', 'denied', 'invalid', 'error'))"
_EXTRAS = """
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
# `user:` with `outcome:`: a person's failures read from one index range, not from all of their rows (version 4).
_USER_OUTCOME_INDEX = "CREATE INDEX IF NOT EXISTS audit_user_outcome ON audit (user_id, outcome, id)"
# Each index and trigger on audit, one statement each: a rebuilt table needs them again.
_AUDIT_EXTRAS = (
    "CREATE INDEX IF NOT EXISTS audit_room ON audit (room, id)",
    "CREATE INDEX IF NOT EXISTS audit_agent ON audit (agent, id)",
    "CREATE INDEX IF NOT EXISTS audit_user ON audit (user_id, id)",
    "CREATE INDEX IF NOT EXISTS audit_outcome ON audit (outcome, id)",
    "CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts)",
    _USER_OUTCOME_INDEX,
    _EXTRAS[_EXTRAS.index("CREATE TRIGGER IF NOT EXISTS audit_agent_list") : _EXTRAS.index("-- The tip")].strip(),
    _EXTRAS[_EXTRAS.index("CREATE TRIGGER IF NOT EXISTS audit_tip") :].strip(),
)
_OUTCOMES_V3 = "CHECK (outcome IN ('ok', 'noop', 'denied', 'invalid', 'error', 'interrupted'))"
_SCHEMA = _AUDIT_TABLE + _EXTRAS

# The columns a row's hash covers, in this order; with `id` in it, rows cannot be swapped unnoticed.
HASHED_COLUMNS = (
    "id", "ts", "source", "team_id", "channel_id", "channel_name", "user_id", "user_name", "raw_text",
    "action", "agent", "room", "dispatch_id", "outcome", "detail", "duration_ms",
)  # fmt: skip
COLUMNS = (*HASHED_COLUMNS, "prev_hash", "hash")
_WRITE_ATTEMPTS = 20
T = TypeVar("T")
# A write: statements run in SQLite's thread on its connection, inside a group transaction; and who awaits it.
_Write = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]"]
# The most writes one group transaction takes: the intake's transaction, which waits for the group under way,
# never waits behind a long one (a burst of follow-up rows is split into several).
GROUP_MAX_WRITES = 64
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
_SELECT_JSON = "SELECT json_object(" + ", ".join(f"'{c}', {c}" for c in COLUMNS) + ") FROM audit"


# One encoder for every row: json.dumps with options builds a new encoder per call.
_canonical = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_HASHED = len(HASHED_COLUMNS)  # HASHED_COLUMNS are the first columns of COLUMNS, in the same order
STREAM_CHUNK = 2_000  # rows fetched per trip to SQLite's thread when streaming


def _content(entry: AuditRecord) -> dict[str, Any]:
    """A row's columns as the command gave them; its id, time and hashes are added when it is appended."""
    actor = entry.actor
    return {
        "source": actor.source, "team_id": actor.team_id, "channel_id": actor.channel_id,
        "channel_name": actor.channel_name, "user_id": actor.user_id, "user_name": actor.user_name,
        "raw_text": entry.raw_text, "action": entry.action, "agent": entry.agent, "room": entry.room,
        "dispatch_id": entry.dispatch_id, "outcome": entry.outcome, "detail": entry.detail,
        "duration_ms": entry.duration_ms,
    }  # fmt: skip


def row_hash(prev_hash: str, content: dict[str, Any]) -> str:
    return _hash_values(prev_hash, [content[c] for c in HASHED_COLUMNS])


def _hash_values(prev_hash: str, values: Sequence[Any]) -> str:
    return hashlib.sha256(f"{prev_hash}\n{_canonical(values)}".encode()).hexdigest()


@dataclass(frozen=True)
class ReceivedCommand:
    """A command as received, before its ack: what is needed to tell its requester if it never finishes."""

    actor: Actor
    text: str
    response_url: str
    received: float
    boot: str
    id: int = 0


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
    # Version 2 -> 3: commands recorded as received before their ack, and the outcome `interrupted` for those a
    # stop or a crash cut short (SQLite cannot change a CHECK: the table is rebuilt, rows and hashes unchanged).
    2: (
        _AUDIT_TABLE.replace("CREATE TABLE IF NOT EXISTS audit (", "CREATE TABLE audit_v3 (").replace(
            _OUTCOMES_V1, _OUTCOMES_V3
        ),
        "INSERT INTO audit_v3 SELECT * FROM audit",
        "DROP TABLE audit",
        "ALTER TABLE audit_v3 RENAME TO audit",
        *_AUDIT_EXTRAS,
        """CREATE TABLE IF NOT EXISTS received_commands (
            id           INTEGER PRIMARY KEY,
            received     REAL NOT NULL,
            boot         TEXT NOT NULL,      -- which run of the bot received it
            source       TEXT NOT NULL,
            team_id      TEXT NOT NULL DEFAULT '',
            channel_id   TEXT NOT NULL DEFAULT '',
            channel_name TEXT NOT NULL DEFAULT '',
            user_id      TEXT NOT NULL DEFAULT '',
            user_name    TEXT NOT NULL DEFAULT '',
            text         TEXT NOT NULL DEFAULT '',
            response_url TEXT NOT NULL DEFAULT ''
        )""",
    ),
    # Version 3 -> 4: an index for `user:` with `outcome:`.
    3: (_USER_OUTCOME_INDEX,),
}


def _describe(exc: BaseException) -> str:
    text = str(exc).split("\n")[0][:200] or type(exc).__name__
    if isinstance(exc, sqlite3.OperationalError) and "locked" in text:
        return f"{text} (another program holds it)"
    return text


# A link that brings several agents records them all in `agent` ("a,b"); this side table lists each of them, so
# that agent: finds the row through an index too. Filled by a trigger in the row's own transaction.
_AGENT_OF_ROW = "id IN (SELECT row_id FROM audit_agents WHERE agent = ?)"


def _export_sql(query: AuditQuery | None, limit: int | None, select: str) -> tuple[str, list[Any]]:
    """The statement of an export or a walk over the rows: the filters (an agent also in a link's list), newest
    first, at most `limit`."""
    where, params = _where(query or AuditQuery(), f"(agent = ? OR {_AGENT_OF_ROW})")
    sql = f"{select}{where} ORDER BY id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return sql, params


async def _chunks(cursor: aiosqlite.Cursor) -> AsyncGenerator[list[tuple[Any, ...]], None]:
    """The cursor's rows, STREAM_CHUNK at a time, the next chunk fetched while the caller handles this one."""
    pending = asyncio.ensure_future(cursor.fetchmany(STREAM_CHUNK))
    try:
        while chunk := await pending:
            pending = asyncio.ensure_future(cursor.fetchmany(STREAM_CHUNK))
            yield cast("list[tuple[Any, ...]]", chunk)  # plain tuples: the connection has no row factory
    finally:
        if not pending.done():  # the caller stopped early: let the fetch under way finish before the cursor closes
            await asyncio.wait([pending])
        if not pending.cancelled():
            pending.exception()  # retrieved, so a failed fetch nobody waits for is not reported as lost


def _where(query: AuditQuery, agent_clause: str = "agent = ?") -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("room", query.room), ("agent", query.agent), ("user_id", query.user_id),
                          ("outcome", query.outcome)):  # fmt: skip
        if value:
            # outcome has few values: with room: or agent:, "+" keeps SQLite from walking its index instead (with
            # user: alone, the (user_id, outcome, id) index holds both).
            narrower = column == "outcome" and any((query.room, query.agent))
            clauses.append(agent_clause if column == "agent" else f"{'+' if narrower else ''}{column} = ?")
            params.extend([value] * agent_clause.count("?") if column == "agent" else [value])
    if query.since is not None:
        # ts grows with id, so the time bound becomes an id bound that every (column, id) index can range over.
        clauses.append("id >= COALESCE((SELECT id FROM audit WHERE ts >= ? ORDER BY ts LIMIT 1), 1 << 62)")
        params.append(query.since.astimezone(UTC).isoformat(timespec="microseconds"))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


_RECEIVE = (
    "INSERT INTO received_commands (received, boot, source, team_id, channel_id, channel_name, user_id, user_name, "
    "text, response_url) VALUES "
)
_RECEIVE_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_RECEIVE_CHUNK = 500  # rows per INSERT (SQLite takes at most 32,766 parameters in one statement)


class AuditBusy(AuditError):
    """The database did not take a received record in time (another process holds its lock)."""


@dataclass(eq=False)
class _Receipt:
    """One command waiting for its received record, and what became of it."""

    command: ReceivedCommand
    future: asyncio.Future[int]
    abandoned: bool = False  # its caller gave up waiting (its ack said nothing was done)
    id: int = 0


class _IntakeWriter:
    """Received-command records on a connection and a thread of their own: the records that arrive while one
    transaction commits share the next one, committed without waiting for the event loop to come round or for
    the group writer's queue. `lock` keeps it and the group writer out of each other's transactions, so neither
    waits in SQLite's busy handler (which sleeps in steps of milliseconds) for the other."""

    def __init__(
        self, path: Path, synchronous: str, busy_timeout: float, lock: threading.Lock, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._path, self._synchronous, self._busy_timeout = path, synchronous, busy_timeout
        self._lock = lock
        self._loop = loop
        self._queue: SimpleQueue[_Receipt | None] = SimpleQueue()
        self._db: sqlite3.Connection | None = None  # opened, and used, by the thread
        self._thread = threading.Thread(target=self._run, name="dispatch-bot-intake", daemon=True)
        self._thread.start()
        self.late: Callable[[int], None] = lambda _: None  # given the id of a record written after its caller left

    def put(self, receipt: _Receipt) -> None:
        self._queue.put(receipt)

    async def close(self) -> None:
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        db: sqlite3.Connection | None = None
        failure: BaseException | None = None
        try:
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            db.execute(f"PRAGMA synchronous = {self._synchronous}")
            self._db = db
        except (sqlite3.Error, OSError) as exc:
            failure = exc
        try:
            stop = False
            while not stop:
                first = self._queue.get()
                if first is None:
                    break
                batch = [first]  # and every record that arrived while the last transaction committed
                while not self._queue.empty():
                    more = self._queue.get()
                    if more is None:
                        stop = True
                        break
                    batch.append(more)
                self._commit(db, batch, failure)
        finally:
            while not self._queue.empty():  # put after the stop: nobody waits forever
                if (left := self._queue.get()) is not None:
                    self._loop.call_soon_threadsafe(self._fail, left, ValueError("closed"))
            if db is not None:
                db.close()

    def _commit(self, db: sqlite3.Connection | None, batch: list[_Receipt], failure: BaseException | None) -> None:
        for start in range(0, len(batch), _RECEIVE_CHUNK):
            chunk = batch[start : start + _RECEIVE_CHUNK]
            try:
                if db is None:
                    raise failure or ValueError("closed")
                with self._lock:
                    # Checked once the lock is ours: a command refused meanwhile is not written.
                    live = [receipt for receipt in chunk if not receipt.abandoned]
                    if live:
                        self._insert(db, live)
            except Exception as exc:  # sqlite3.Error, OSError
                for receipt in chunk:
                    receipt.id = 0
                    self._loop.call_soon_threadsafe(self._fail, receipt, exc)
                continue
            for receipt in chunk:
                self._loop.call_soon_threadsafe(self._deliver, receipt)

    @staticmethod
    def _insert(db: sqlite3.Connection, receipts: list[_Receipt]) -> None:
        """One statement for many rows, which is its own transaction (the connection is in autocommit mode),
        committed with the synchronous setting when it returns. One statement, not three: after each, this thread
        waits for the event loop's thread to let go of the interpreter, so fewer mean a shorter wait for the ack."""
        values: list[Any] = []
        for receipt in receipts:
            c, a = receipt.command, receipt.command.actor
            values += (c.received, c.boot, a.source, a.team_id, a.channel_id, a.channel_name, a.user_id, a.user_name,
                       c.text, c.response_url)  # fmt: skip
        last = int(db.execute(_RECEIVE + ", ".join([_RECEIVE_ROW] * len(receipts)), values).lastrowid or 0)
        # One INSERT of several rows, inside the write lock, numbers them one after the other (no AUTOINCREMENT:
        # each takes the largest id so far plus one).
        for offset, receipt in enumerate(receipts):
            receipt.id = last - len(receipts) + 1 + offset

    def _deliver(self, receipt: _Receipt) -> None:
        if not receipt.future.done():
            receipt.future.set_result(receipt.id)
        elif receipt.id:  # written after its caller gave up (it was in the transaction under way): removed
            self.late(receipt.id)

    @staticmethod
    def _fail(receipt: _Receipt, exc: BaseException) -> None:
        if not receipt.future.done():
            receipt.future.set_exception(exc)


class AuditStore:
    """Append-only audit log. Each append is one statement that inserts only if the chain's tip is still the row
    it was hashed on, so rows from concurrent commands, or from two processes sharing the file, form one line."""

    def __init__(
        self,
        path: Path,
        db: aiosqlite.Connection,
        now: Callable[[], datetime] | None = None,
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 5.0,
    ) -> None:
        self.path = path
        self._db = db
        self._synchronous, self._busy_timeout = synchronous, busy_timeout
        self._sqlite_lock = threading.Lock()  # held by the group writer's and the intake's transactions
        self._intake: _IntakeWriter | None = None  # started by the first receive
        self._now = now or (lambda: datetime.now(UTC))
        self._write_lock = asyncio.Lock()
        self._queued: list[_Write] = []  # other writes waiting for a group transaction
        self._writer: asyncio.Task[None] | None = None
        # The chain's tip as this store last wrote it; the append checks it still holds, and re-reads when not.
        self._tip: tuple[int, str, str] | None = None
        self.observe_append: Callable[[float], None] | None = None  # seconds each record() took (metrics)
        self.observe_group: Callable[[int], None] | None = None  # writes in each group committed (metrics)

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        synchronous: str = "FULL",
        now: Callable[[], datetime] | None = None,
        busy_timeout: float = 5.0,
    ) -> AuditStore:
        path = Path(path)
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise AuditError(f"Cannot open the audit database {path}: {_describe(exc)}.") from None
        try:
            await db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
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
        return cls(path, db, now, synchronous=synchronous, busy_timeout=busy_timeout)

    async def close(self) -> None:
        if self._intake is not None:
            await self._intake.close()
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        await self._db.close()

    # --- group commit: every write of this connection, durable when it returns ------------------------------

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in SQLite's thread, on its connection, in the next group transaction; returns (or raises)
        once it is committed.

        The writes that arrive while one group commits share the next one, so a burst pays one disk sync for all,
        and each still returns only when its own statements are on disk. A group's statements all run in one trip
        to SQLite's thread, so a busy event loop delays a group once, not once per statement. `work` may run
        twice: when another write fails its group, each of the group's writes is run again alone, so that only the
        failing one fails.
        """
        return cast(T, await self._enqueue(work))

    def _enqueue(self, work: Callable[[sqlite3.Connection], Any]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((work, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_groups())
        return future

    async def _write_groups(self) -> None:
        group: list[_Write] = []
        try:
            await asyncio.sleep(0)  # let the writes that arrived together join this group
            while self._queued:
                # A bounded group: the intake's transaction waits for at most one group's statements.
                group, self._queued = self._queued[:GROUP_MAX_WRITES], self._queued[GROUP_MAX_WRITES:]
                async with self._write_lock:  # a prune or a health check is never inside a group
                    if not await self._commit(group, alone=len(group) == 1):
                        for one in group:
                            await self._commit([one], alone=True)
                group = []
        finally:  # cancelled at shutdown: nobody waits forever
            for _, future in [*group, *self._queued]:
                if not future.done():
                    future.set_exception(AuditError(f"The audit database {self.path} was closed before the write."))
            self._queued = []

    async def _commit(self, group: list[_Write], *, alone: bool) -> bool:
        """One transaction for the group; False when it failed and was rolled back (unless `alone`: its error)."""
        # Private to aiosqlite, but the one way to run several statements in its thread in one trip.
        in_thread = cast(Callable[..., Awaitable[list[Any]]], self._db._execute)
        deadline = time.monotonic() + self._busy_timeout
        try:
            while True:
                try:
                    results = await in_thread(self._transaction, [work for work, _ in group])
                    break
                except sqlite3.OperationalError as exc:
                    # A read of this connection still under way holds a snapshot older than another connection's
                    # commit (the intake's, or another process's), so SQLite refuses the write at once, without
                    # waiting: let the read finish (its next trips are queued behind), then try again.
                    if exc.sqlite_errorname != "SQLITE_BUSY_SNAPSHOT" or time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.001)
        except Exception as exc:  # sqlite3.Error, OSError, AuditError, ValueError (closed connection)
            self._tip = None  # rows this group appended are gone
            if not alone:
                return False
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return True
        if self.observe_group is not None:
            self.observe_group(len(group))
        for (_, future), value in zip(group, results, strict=True):
            if not future.done():
                future.set_result(value)
        return True

    def _transaction(self, works: list[Callable[[sqlite3.Connection], Any]]) -> list[Any]:
        """In SQLite's thread: every write of a group in one transaction, committed; rolled back if one fails."""
        db = self._db._conn
        with self._sqlite_lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                results = [work(db) for work in works]
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return results

    async def record(self, entry: AuditRecord) -> int:
        """Append one row and commit it; returns its id. Raises AuditError with one sentence on failure."""
        content = _content(entry)
        return await self._append_with(lambda db: self._append(db, content, entry.received_id))

    async def record_with_watches(
        self, entries: Sequence[AuditRecord], watches: Sequence[WatchRecord]
    ) -> list[WatchRecord]:
        """Add the watches and append the rows, in this order, in one transaction: one commit for all, or none of
        it written (AuditError, one sentence). Returns the watches as stored (with their ids)."""
        contents = [(_content(entry), entry.received_id) for entry in entries]

        def work(db: sqlite3.Connection) -> list[WatchRecord]:
            stored = [_add_watch(db, watch) for watch in watches]
            for content, received_id in contents:
                self._append(db, content, received_id)
            return stored

        return await self._append_with(work)

    async def record_with_seen(self, entry: AuditRecord, seen: Sequence[Seen]) -> list[int]:
        """Mark the dispatches' waiting watches present and append the row, in one transaction: one commit for
        both, or nothing written (AuditError, one sentence). Returns the ids of the watches marked."""
        content = _content(entry)

        def work(db: sqlite3.Connection) -> list[int]:
            marked = [watch_id for one in seen for watch_id in _mark_seen(db, one)]
            self._append(db, content, entry.received_id)
            return marked

        return await self._append_with(work)

    async def _append_with(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """A write that appends rows (alone or with other changes): timed as an append; a failure is one sentence."""
        started = time.perf_counter()
        try:
            return await self.write(work)
        except (sqlite3.Error, OSError, ValueError) as exc:  # ValueError: the database is already closed
            raise self._write_failed(exc) from None
        finally:
            if self.observe_append is not None:
                self.observe_append(time.perf_counter() - started)

    def _append(self, db: sqlite3.Connection, content: dict[str, Any], received_id: int) -> int:
        """In SQLite's thread, inside a group transaction: the row on the chain's tip, and the end of its
        received-command record (the two commit together: a crash leaves one or the other)."""
        for _ in range(_WRITE_ATTEMPTS):
            if self._tip is None:
                [(tip_id, tip_ts, tip_hash)] = db.execute(_TIP, (GENESIS_HASH,)).fetchall()
                self._tip = (int(tip_id), str(tip_ts), str(tip_hash))
            tip_id, tip_ts, tip_hash = self._tip
            content["id"] = tip_id + 1
            # A row's time never goes back past the tip's: ts grows with id (since: relies on it).
            content["ts"] = max(self._now().astimezone(UTC).isoformat(timespec="microseconds"), tip_ts)
            content["prev_hash"] = tip_hash
            content["hash"] = row_hash(tip_hash, content)
            inserted = db.execute(_APPEND, [*(content[c] for c in COLUMNS), tip_id]).fetchall()
            if not inserted:  # the tip moved before this transaction (another process appended, or pruned)
                self._tip = None
                continue
            if received_id:
                db.execute("DELETE FROM received_commands WHERE id = ?", (received_id,))
            self._tip = (int(content["id"]), content["ts"], content["hash"])
            return int(content["id"])
        raise self._write_failed(RuntimeError("other writers kept moving its tip"))

    # --- commands received, not yet finished (issue: nothing acknowledged is ever lost) ----------------------

    async def receive(self, command: ReceivedCommand, *, timeout: float | None = None) -> int:
        """Record a command as received; its id once committed (with the database's synchronous setting).

        The records go through a connection and a thread of their own, so they never wait behind the group
        writer's queue. Raises AuditError (one sentence) when the database will not take the record, or has not
        within `timeout` seconds (another process holds its lock): then the record is not written, or removed if
        it was meanwhile.
        """
        loop = asyncio.get_running_loop()
        if self._intake is None:
            self._intake = _IntakeWriter(self.path, self._synchronous, self._busy_timeout, self._sqlite_lock, loop)
            self._intake.late = self._forget_received
        receipt = _Receipt(command, loop.create_future())

        def expire() -> None:
            receipt.abandoned = True
            if not receipt.future.done():
                receipt.future.set_exception(
                    AuditBusy(f"The audit log is busy: the command could not be recorded within {timeout:g} s.")
                )

        expiry = loop.call_later(timeout, expire) if timeout is not None else None
        self._intake.put(receipt)
        try:
            return await receipt.future
        except (sqlite3.Error, OSError, ValueError) as exc:  # ValueError: the store is closed
            raise self._write_failed(exc) from None
        finally:
            if expiry is not None:
                expiry.cancel()

    def _forget_received(self, received_id: int) -> None:
        """Remove a record written after its caller gave up (its ack already said that nothing was done)."""
        removal = self._enqueue(lambda db: db.execute("DELETE FROM received_commands WHERE id = ?", (received_id,)))
        removal.add_done_callback(lambda done: done.cancelled() or done.exception())  # a failure leaves it to settle

    async def unfinished(self, boot: str | None = None) -> list[ReceivedCommand]:
        """Commands received and never finished: all of them, or only those of one run of the bot."""
        where, params = ("WHERE boot = ?", (boot,)) if boot is not None else ("", ())
        try:
            rows = await self._db.execute_fetchall(
                "SELECT id, received, boot, source, team_id, channel_id, channel_name, user_id, user_name, text, "
                f"response_url FROM received_commands {where} ORDER BY id",
                params,
            )
        except sqlite3.Error as exc:
            raise AuditError(f"Reading the audit database {self.path} failed: {_describe(exc)}.") from None
        return [
            ReceivedCommand(Actor(r[3], r[7], r[8], r[4], r[5], r[6]), r[9], r[10], r[1], r[2], int(r[0])) for r in rows
        ]

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
        # The page and its count in one statement, so one trip to SQLite's thread: the count is a subquery that
        # does not depend on the row, which SQLite runs once. When fewer rows than the page match, it counts those.
        sql = f"SELECT *, ({count}) FROM ({page} ORDER BY id DESC LIMIT ?) ORDER BY id DESC"
        params = [v for w, p in branches for v in [*p, cap]] + [v for w, p in branches for v in [*p, query.limit]]
        try:
            found = list(await self._db.execute_fetchall(sql, [*params, query.limit]))
        except sqlite3.Error as exc:
            raise AuditError(f"Reading the audit database {self.path} failed: {_describe(exc)}.") from None
        rows = [AuditRow(*r[:-1]) for r in found]
        more = max(0, int(found[0][-1]) - query.limit) if len(rows) == query.limit else 0
        return AuditPage(rows, min(more, MORE_CAP), more > MORE_CAP)

    async def rows(self, query: AuditQuery | None = None, *, limit: int | None = None) -> AsyncIterator[AuditRow]:
        """Matching rows, newest first, streamed from the database rather than built in memory."""
        values = cast(AsyncGenerator[list[tuple[Any, ...]], None], self.row_values(query, limit=limit))
        async with contextlib.aclosing(values) as chunks:  # closed with this stream, not later by the collector
            async for chunk in chunks:
                for row in chunk:
                    yield AuditRow(*row)

    async def row_values(
        self, query: AuditQuery | None = None, *, limit: int | None = None, select: str = _SELECT
    ) -> AsyncIterator[list[tuple[Any, ...]]]:
        """What `rows` yields, as lists of value tuples in COLUMNS order: exports stream a million rows with one
        trip to SQLite's thread per STREAM_CHUNK rows and no object per row."""
        sql, params = _export_sql(query, limit, select)
        try:
            async with self._db.execute(sql, params) as cursor, contextlib.aclosing(_chunks(cursor)) as chunks:
                async for chunk in chunks:
                    yield chunk
        except sqlite3.Error as exc:
            raise AuditError(f"Reading the audit database {self.path} failed: {_describe(exc)}.") from None

    async def json_lines(self, query: AuditQuery | None = None, *, limit: int | None = None) -> AsyncIterator[str]:
        """What `rows` yields, each row as one compact JSON object (keys in COLUMNS order), many rows to a string,
        each ending in a newline. SQLite writes the JSON, at about twice the speed of json.dumps per row."""
        values = cast(
            AsyncGenerator[list[tuple[Any, ...]], None], self.row_values(query, limit=limit, select=_SELECT_JSON)
        )
        async with contextlib.aclosing(values) as chunks:
            async for chunk in chunks:
                yield "\n".join([row[0] for row in chunk]) + "\n"

    async def write_csv(self, out: TextIO, query: AuditQuery | None = None, *, limit: int | None = None) -> None:
        """Write a header and the matching rows, newest first, to `out` as csv.writer writes them. A thread steps
        the query on a connection of its own (one snapshot of the log) and writes each row as it comes, as a plain
        sqlite3 loop does: no trip to the event loop between rows or chunks, and memory stays flat. Cancelled, it
        interrupts the query and waits for the thread."""
        sql, params = _export_sql(query, limit, _SELECT)
        try:
            reader = await asyncio.to_thread(sqlite3.connect, self.path, check_same_thread=False)
        except sqlite3.Error as exc:
            raise AuditError(f"Reading the audit database {self.path} failed: {_describe(exc)}.") from None

        stopped = threading.Event()

        def write() -> None:
            rows = reader.execute(sql, params)  # running from here on, so that an interruption stops it
            if stopped.is_set():  # cancelled before it ran
                return
            writer = csv.writer(out)
            writer.writerow(COLUMNS)
            writer.writerows(rows)

        written = asyncio.ensure_future(asyncio.to_thread(write))
        try:
            await asyncio.shield(written)
        except sqlite3.Error as exc:
            raise AuditError(f"Reading the audit database {self.path} failed: {_describe(exc)}.") from None
        finally:
            if not written.done():  # cancelled: stop the query where it is, and let the thread end
                stopped.set()
                reader.interrupt()
                await asyncio.wait([written])
            if not written.cancelled():
                written.exception()  # retrieved: the interruption is not reported as a lost failure
            await asyncio.to_thread(reader.close)

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
            hash_at, prev_at = COLUMNS.index("hash"), COLUMNS.index("prev_hash")
            action_at, outcome_at = COLUMNS.index("action"), COLUMNS.index("outcome")
            async with (
                self._db.execute(f"{_SELECT} ORDER BY id") as cursor,
                contextlib.aclosing(_chunks(cursor)) as chunks,
            ):
                async for chunk in chunks:
                    for raw in chunk:  # value tuples in COLUMNS order: no object per row on a million-row walk
                        row_id = raw[0]
                        first_id = row_id if first_id is None else first_id
                        if row_id != expected_id or raw[prev_at] != expected_prev:
                            gap = (
                                f"row {expected_id} is missing"
                                if row_id != expected_id
                                else "the row before it changed"
                            )
                            return VerifyResult(
                                count,
                                first_id,
                                row_id,
                                f"row {row_id} does not follow on from the row before it ({gap}).",
                            )
                        if _hash_values(expected_prev, raw[:_HASHED]) != raw[hash_at]:
                            return VerifyResult(
                                count,
                                first_id,
                                row_id,
                                f"row {row_id} was altered: its content does not match its hash.",
                            )
                        expected_prev, expected_id = raw[hash_at], row_id + 1
                        if raw[action_at] == "prune" and raw[outcome_at] == "ok":
                            last_prune = AuditRow(*raw)
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
            # The anchor is the row the last prune recorded, or, while a prune is under way or was interrupted, a
            # row before it: the rows from there up to the recorded one were due to go and are still checked.
            mark = _PRUNE_MARK.search(last_prune.detail) if last_prune is not None else None
            anchor_id = int(anchor_id_text)
            if mark is None or not (int(mark[1]) > anchor_id or (int(mark[1]) == anchor_id and mark[2] == anchor_hash)):
                return VerifyResult(
                    count, first_id, first_id,
                    f"the log starts after row {anchor_id_text}, but no prune recorded removing the rows before it.",
                )  # fmt: skip
        return VerifyResult(count, first_id)

    async def prune(
        self,
        older_than: datetime,
        actor: Actor,
        *,
        batch_rows: int = PRUNE_BATCH_ROWS,
        progress: Callable[[int], None] | None = None,
    ) -> PruneResult:
        """Remove rows older than a moment. A row of its own (action `prune`) first records the last row to go and
        its hash, which becomes the chain's anchor. Rows go in transactions sized to last about
        PRUNE_BATCH_SECONDS (at most `batch_rows` rows), each moving the anchor with it, with a pause as long as
        the batch took, so commands (in this process or another) write their rows in between; a prune
        interrupted half-way leaves a chain that verifies, and running it again finishes it. `progress` is called
        with the rows removed so far after each batch."""
        cutoff = older_than.astimezone(UTC).isoformat(timespec="microseconds")
        try:
            async with self._db.execute(
                "SELECT id, hash FROM audit WHERE ts < ? ORDER BY ts DESC, id DESC LIMIT 1", (cutoff,)
            ) as cursor:
                last = await cursor.fetchone()
            async with self._db.execute("SELECT id FROM audit ORDER BY id LIMIT 1") as cursor:
                first = await cursor.fetchone()
        except sqlite3.Error as exc:
            raise AuditError(f"Pruning the audit database {self.path} failed: {_describe(exc)}.") from None
        if last is None or first is None:
            return PruneResult(0, None)
        last_id, last_hash = int(last[0]), str(last[1])
        detail = (
            f"removed {last_id - int(first[0]) + 1} rows older than {cutoff[:19]}Z, up to row {last_id}; "
            f"anchor row {last_id} hash {last_hash}"
        )
        await self.record(AuditRecord(actor, "audit prune", "prune", "ok", detail=detail))
        try:
            # Each batch's pages are copied into the file right after its commit (below); meanwhile no command's
            # commit copies them (the automatic checkpoint is off).
            async with self._db.execute("PRAGMA wal_autocheckpoint") as cursor:
                autocheckpoint = await cursor.fetchone()
            await self._db.execute("PRAGMA wal_autocheckpoint = 0")
        except sqlite3.Error as exc:
            raise AuditError(f"Pruning the audit database {self.path} failed: {_describe(exc)}.") from None
        try:
            removed = await self._prune_batches(last_id, batch_rows, progress)
        finally:
            with contextlib.suppress(sqlite3.Error, ValueError):  # ValueError: the store was closed meanwhile
                await self._db.execute(
                    f"PRAGMA wal_autocheckpoint = {int(autocheckpoint[0]) if autocheckpoint else 1000}"
                )
        return PruneResult(removed, last_id)

    async def _prune_batches(self, last_id: int, batch_rows: int, progress: Callable[[int], None] | None) -> int:
        removed, done, size = 0, False, min(batch_rows, 100)
        smallest = min(batch_rows, 50)  # below this a batch is mostly its commit
        while not done:
            async with self._write_lock:
                try:
                    await self._db.execute("BEGIN IMMEDIATE")
                    started = time.monotonic()
                    try:
                        # The batch ends at the newest row of the next `size` ids (ids have no gaps in a
                        # chain, but a row may be missing in a broken one); its hash is the anchor it leaves.
                        async with self._db.execute(
                            "SELECT id, hash FROM audit WHERE id <= MIN(?, (SELECT MIN(id) FROM audit) + ?) "
                            "ORDER BY id DESC LIMIT 1",
                            (last_id, size - 1),
                        ) as cursor:
                            end = await cursor.fetchone()
                        if end is not None:
                            cursor = await self._db.execute("DELETE FROM audit WHERE id <= ?", (end[0],))
                            removed += cursor.rowcount
                            await self._db.executemany(
                                "INSERT OR REPLACE INTO audit_meta (key, value) VALUES (?, ?)",
                                [("anchor_id", str(end[0])), ("anchor_hash", str(end[1]))],
                            )
                        await self._db.execute("COMMIT")
                    except BaseException:
                        if self._db.in_transaction:
                            await self._db.execute("ROLLBACK")
                        raise
                    # Copy this batch's pages into the file now, inside the batch's turn (which is sized by the
                    # clock with this copy included): left to the automatic checkpoint, a command's commit would
                    # copy several batches' worth of scattered pages, and wait for that. Measured against a copy
                    # by a connection of its own outside the write lock, this one gave commands a third of the
                    # median wait and two thirds of the p99 (the batches come out smaller).
                    # Its row read, so the statement is done: a group commit fails while one is still open.
                    await self._db.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:
                    raise AuditError(f"Pruning the audit database {self.path} failed: {_describe(exc)}.") from None
            took = time.monotonic() - started
            done = end is None or int(end[0]) >= last_id
            if progress is not None:
                progress(removed)
            if not done:
                # Deleting touches index pages all over the file, so a row's cost varies: size by the clock, and
                # grow slowly, since one batch that overshoots is a command that waits.
                grown = max(size + 1, size * 3 // 2)
                size = max(smallest, min(batch_rows, grown, int(size * PRUNE_BATCH_SECONDS / max(took, 1e-6))))
                await asyncio.sleep(took)
        return removed

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
        try:  # a group write like any other: it takes the same turns with the intake's connection
            await self.write(
                lambda db: db.execute(
                    "INSERT OR REPLACE INTO audit_meta (key, value) VALUES ('health_written_at', ?)", (stamp,)
                )
            )
        except (sqlite3.Error, OSError, ValueError, AuditError) as exc:  # ValueError, AuditError: it is closed
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


def _mark_seen(db: sqlite3.Connection, seen: Seen) -> list[int]:
    """In SQLite's thread, inside a transaction: the dispatch's waiting watch present, as the identity seen."""
    rows = db.execute(
        "UPDATE watches SET state = 'present', identity = ?, seen_at = ?, missing = 0, keep_attempt = 0 "
        "WHERE room = ? AND dispatch_id = ? AND state = 'waiting' RETURNING id",
        (seen.identity, seen.at, seen.room, seen.dispatch_id),
    ).fetchall()
    return [int(r[0]) for r in rows]


def _add_watch(db: sqlite3.Connection, record: WatchRecord) -> WatchRecord:
    """In SQLite's thread, inside a transaction: the watch added, or an open watch of the same dispatch updated."""
    updated = db.execute(
        "UPDATE watches SET keep = MAX(keep, ?), "
        "channel_id = CASE WHEN channel_id = '' THEN ? ELSE channel_id END "
        "WHERE room = ? AND dispatch_id = ? AND state != 'closed' "
        f"RETURNING {', '.join(_WATCH_COLUMNS)}",
        (int(record.keep), record.channel_id, record.room, record.dispatch_id),
    ).fetchall()
    if updated:
        return _watch(updated[0])
    columns = [c for c in _WATCH_COLUMNS if c != "id"]
    values = [int(v) if isinstance(v, bool) else v for v in (getattr(record, c) for c in columns)]
    rows = db.execute(
        f"INSERT INTO watches ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) RETURNING id",
        values,
    ).fetchall()
    return replace(record, id=int(rows[0][0]))


class WatchStore:
    """Agent supervision's desired state, in the audit database so that a restart loses nothing."""

    def __init__(self, store: AuditStore) -> None:
        self._store = store
        self._db = store._db
        self._inserted = 0

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` in the store's next group transaction, in SQLite's thread, committed."""
        try:
            return await self._store.write(work)
        except (sqlite3.Error, OSError, ValueError) as exc:
            raise self._failed(exc) from None

    def _failed(self, exc: BaseException) -> AuditError:
        return AuditError(f"The supervision state in {self._store.path} could not be used: {_describe(exc)}.")

    async def add(self, record: WatchRecord) -> WatchRecord:
        """Watch a dispatch; an open watch of the same dispatch is updated instead (keep is only ever turned on)."""
        return await self._write(lambda db: _add_watch(db, record))

    async def save(self, before: WatchRecord, after: WatchRecord) -> bool:
        """Write what changed from `before` to `after`, only if the watch is still in `before`'s state and dispatch.

        False when something else changed it meanwhile (a stop closed it, the follow-up saw its agent): the caller
        looks again rather than act on a stale reading. Columns it did not change (the message's ts) are left alone.
        """
        changed = [c for c in _WATCH_COLUMNS if c != "id" and getattr(before, c) != getattr(after, c)]
        if not changed:
            return True
        values = [int(v) if isinstance(v, bool) else v for v in (getattr(after, c) for c in changed)]

        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                f"UPDATE watches SET {', '.join(f'{c} = ?' for c in changed)} "
                "WHERE id = ? AND state = ? AND dispatch_id = ?",
                [*values, before.id, before.state, before.dispatch_id],
            )
            return cursor.rowcount == 1

        return await self._write(work)

    async def close(self, room: str, dispatch_ids: list[str], reason: str) -> None:
        if not dispatch_ids:
            return
        marks = ", ".join("?" * len(dispatch_ids))
        await self._write(
            lambda db: db.execute(
                "UPDATE watches SET state = 'closed', closed_reason = ? "
                f"WHERE room = ? AND dispatch_id IN ({marks}) AND state != 'closed'",
                [reason, room, *dispatch_ids],
            )
        )

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
        return await self._write(lambda db: _mark_seen(db, Seen(room, dispatch_id, identity, now)))

    async def set_message(self, room: str, dispatch_id: str, channel_id: str, ts: str) -> None:
        await self._write(
            lambda db: db.execute(
                "UPDATE watches SET channel_id = ?, thread_ts = ? WHERE room = ? AND dispatch_id = ?",
                (channel_id, ts, room, dispatch_id),
            )
        )

    async def first_delivery(self, event_id: str, now: float) -> bool:
        """Record a webhook id; False when it was handled before (the server sends some events twice)."""

        def work(db: sqlite3.Connection) -> bool:
            rows = db.execute(
                "INSERT INTO webhook_events (id, received) VALUES (?, ?) ON CONFLICT DO NOTHING RETURNING id",
                (event_id, now),
            ).fetchall()
            if rows and (self._inserted + 1) % 1000 == 0:  # every thousandth id, forget the oldest beyond the bound
                db.execute(
                    "DELETE FROM webhook_events WHERE received < (SELECT received FROM webhook_events "
                    "ORDER BY received DESC LIMIT 1 OFFSET ?)",
                    (WEBHOOK_IDS_KEPT,),
                )
            return bool(rows)

        first = await self._write(work)
        self._inserted += first
        return first

    async def claim_rule_room(self, room_sid: str, rule: str, room: str, now: float) -> bool:
        """Mark the room (by sid) served by the rule; False when it was already: a rule never serves a room twice."""
        rows = await self._write(
            lambda db: db.execute(
                "INSERT INTO rule_rooms (room_sid, rule, room, served) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING "
                "RETURNING room_sid",
                (room_sid, rule, room, now),
            ).fetchall()
        )
        return bool(rows)
