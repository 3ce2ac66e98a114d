"""Audit store: filtered queries on a large log, and audited commands per second against bare SQLite inserts.

Reproduce the figures (from the repository root, with the venv active):

    . .venv/bin/activate && python -m bench.audit_store --rows 1000000 --queries 200 --commands 2000 --rounds 9

Setup (not measured, but timed and printed): a database of `--rows` audit rows spread over 1,000 rooms,
50 agents and 500 users, over the last 90 days. The schema is the product's (`AuditStore.open` creates it);
the rows are written with plain sqlite3 `executemany` in transactions of 50,000 rows, with the store's
indexes dropped during the fill and re-created afterwards from their own SQL (so the index b-trees come out
densely packed, where a log grown row by row has fuller and emptier pages: a small advantage for the
queries, noted here). Every row is valid for the store: ids 1..N, ts increasing with id (ISO 8601 UTC with
microseconds, as the store writes it), and a hash chain from GENESIS_HASH made with the store's `row_hash`.
The mix: 45% dispatches, 15% stops and 15% links (agent and room), 15% `list` (room only), 10% `help`
(neither); 80% ok, 10% noop, 5% invalid, 5% error; rooms, agents and users drawn uniformly (seed 1).
The database goes to a temporary directory that is removed at exit; with `--keep PATH` it is written to PATH
and kept, and a later run with the same `--keep PATH` and fill options reuses it (a PATH.fill.json sidecar
records the options). The chain is checked at its two ends after every fill or reuse; `--verify` walks all of
it with `AuditStore.verify()` as well.

1. Queries, through the product: `AuditStore.query(AuditQuery(..., limit=20))` on a store opened with
   `AuditStore.open` on that file, for every filter shape: room; user; agent; outcome (error); since (now -
   7 days); agent + since; room + since; user + outcome; no filter. "now" is the newest row's ts, so a kept
   database gives the same windows later. Each shape gets `--queries` queries with random existing values,
   the shapes interleaved query by query, after 20 warm-up
   queries per shape. A query's time includes the "N more match" count (capped at MORE_CAP) that `query()`
   runs when a page is full, since the user waits for it. `EXPLAIN QUERY PLAN` of the exact statements the
   store ran (captured with a trace callback) is printed once per shape. Target (from the issue): median
   under 1 ms for every shape, the count included.

2. Sustained audited commands per second: `--commands` `help` commands (no network) through
   `CommandRunner.execute` with a real Runtime (`Runtime.open(load_settings(...))`, its audit database a fresh
   file next to the filled one, synchronous=FULL: each row committed before the reply), one after the other
   ("seq") and in batches of `--concurrency` with asyncio.gather ("conc"). Two baselines, each a loop of
   bare aiosqlite single-row INSERT + COMMIT on a fresh file of its own, with the store's PRAGMAs (WAL,
   synchronous=FULL, busy_timeout=5000) on one connection: "plain", a plain table with the audit columns and
   no index, trigger or CHECK (the floor), and "schema", the product's table with its triggers and indexes
   (made by `AuditStore.open`) but no chain. Their concurrent forms hold an asyncio.Lock around each INSERT +
   COMMIT, as one connection must (without it, a COMMIT would take the other tasks' rows along). Targets
   alternate (plain, schema, audited; seq, then conc) for `--rounds` rounds after a warm-up of 100 per
   target, each round after a gc.collect(); figures are medians of rounds, ratios audited/baseline of those
   medians, and the per-round ratios' median, quartiles and range (the effect is told apart when 1.0 lies
   outside their p25-p75). Target (from the issue): audited seq at least 70% of plain seq.

No network traffic at all (`help` touches none; the LiveKit URL points at 127.0.0.1 and is never contacted).
Temporary files are removed at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import logging
import os
import platform
import random
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aiosqlite

from dispatch_bot.bot.audit_store import COLUMNS, GENESIS_HASH, HASHED_COLUMNS, MORE_CAP, AuditStore, row_hash
from dispatch_bot.bot.config import load_settings
from dispatch_bot.bot.runtime import Runtime
from dispatch_bot.commands.ports import Actor, AuditQuery

ROOMS, AGENTS, USERS, DAYS, SEED = 1000, 50, 500, 90, 1
FILL_BATCH = 50_000
SINCE = timedelta(days=7)
LIMIT = 20
WARMUP_QUERIES = 20
WARMUP_COMMANDS = 100
TARGET_QUERY_MS = 1.0
TARGETED_SHAPES = ("room", "user", "agent", "outcome", "since", "agent+since", "room+since", "user+outcome", "none")
TARGET_WRITE_RATIO = 0.70
BASELINES = ("plain", "schema")  # a plain table; the product's schema (triggers, indexes) without the chain
WRITE_TARGETS = ("plain seq", "schema seq", "audited seq", "plain conc", "schema conc", "audited conc")
# The plain floor: the audit table's columns, no index, no trigger, no CHECK.
PLAIN_TABLE = f"CREATE TABLE audit ({', '.join(f'{c} INTEGER PRIMARY KEY' if c == 'id' else c for c in COLUMNS)})"
INSERT = f"INSERT INTO audit ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"


def room_name(k: int) -> str:
    return f"room-{k:04d}"


def agent_name(k: int) -> str:
    return f"agent-{k:02d}"


def user_id(k: int) -> str:
    return f"UB{k:07d}"


# ---------------------------------------------------------------------------------------- the fill


@dataclass(frozen=True)
class FillSpec:
    rows: int
    rooms: int = ROOMS
    agents: int = AGENTS
    users: int = USERS
    days: int = DAYS
    seed: int = SEED


def generate(spec: FillSpec, end: datetime) -> Iterator[tuple[Any, ...]]:
    """The rows, in id order, each as a tuple in COLUMNS order with its place in the hash chain."""
    rng = random.Random(spec.seed)
    start = end - timedelta(days=spec.days)
    step = timedelta(days=spec.days) / spec.rows
    prev = GENESIS_HASH
    outcomes = ("ok",) * 16 + ("noop",) * 2 + ("invalid", "error")
    for i in range(1, spec.rows + 1):
        u = rng.randrange(spec.users)
        room, agent = room_name(rng.randrange(spec.rooms)), agent_name(rng.randrange(spec.agents))
        outcome = outcomes[rng.randrange(len(outcomes))]
        kind = rng.random()
        dispatch_id = detail = ""
        if kind < 0.45:
            action, raw = "dispatch", f"{agent} {room}"
            dispatch_id = f"AD_{rng.getrandbits(48):012x}" if outcome == "ok" else ""
        elif kind < 0.60:
            action, raw = "stop", f"stop {agent} {room}"
            dispatch_id = f"AD_{rng.getrandbits(48):012x}" if outcome == "ok" else ""
        elif kind < 0.75:
            action, raw = "link", f"link {room} {agent}"
            detail = f"link for {user_id(u)}-{rng.getrandbits(32):08x}, agents {agent}" if outcome == "ok" else ""
        elif kind < 0.90:
            action, raw, agent = "list", f"list {room}", ""
        else:
            action, raw, agent, room = "help", "help", "", ""
        if outcome == "error":
            detail = "The LiveKit server at http://livekit.internal:7880 did not answer within 10 s."
        elif outcome == "invalid":
            detail = "There is no agent called that."
        content = {
            "id": i,
            "ts": (start + step * i).isoformat(timespec="microseconds"),
            "source": "slack" if u % 10 else "cli",
            "team_id": "T0BENCH",
            "channel_id": f"C{u % 20:08d}",
            "channel_name": f"ops-{u % 20}",
            "user_id": user_id(u),
            "user_name": f"user{u}",
            "raw_text": raw,
            "action": action,
            "agent": agent,
            "room": room,
            "dispatch_id": dispatch_id,
            "outcome": outcome,
            "detail": detail,
            "duration_ms": rng.randrange(2, 400),
        }
        digest = row_hash(prev, content)
        yield (*(content[c] for c in HASHED_COLUMNS), prev, digest)
        prev = digest


def fill(path: Path, spec: FillSpec, progress: Callable[[str], None]) -> None:
    """Write `spec.rows` rows into a new database at `path`, whose schema the product's AuditStore.open made."""

    async def create() -> None:
        await (await AuditStore.open(path)).close()

    asyncio.run(create())
    db = sqlite3.connect(path, isolation_level=None)
    try:
        indexes = db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit' AND sql IS NOT NULL"
        ).fetchall()
        for name, _ in indexes:
            db.execute(f'DROP INDEX "{name}"')
        db.execute("PRAGMA journal_mode = DELETE")  # setup only: no WAL growing to the size of a batch
        db.execute("PRAGMA synchronous = OFF")
        db.execute("PRAGMA cache_size = -262144")
        rows = generate(spec, datetime.now(UTC))
        done = 0
        while done < spec.rows:
            batch = list(itertools.islice(rows, FILL_BATCH))
            db.execute("BEGIN")
            db.executemany(INSERT, batch)
            db.execute("COMMIT")
            done += len(batch)
            if done % 200_000 == 0 or done == spec.rows:
                progress(f"fill: {done:,} of {spec.rows:,} rows")
        for name, sql in indexes:
            progress(f"fill: index {name}")
            db.execute(sql)
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(mode[0]).lower() != "wal":
            raise RuntimeError(f"{path} could not be switched back to WAL")
    finally:
        db.close()


def check_ends(path: Path, spec: FillSpec) -> str:
    """Empty if the chain starts at GENESIS_HASH, ends at id `spec.rows` and the last row's hash holds."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        first = db.execute(f"SELECT {', '.join(COLUMNS)} FROM audit ORDER BY id LIMIT 1").fetchone()
        last = db.execute(f"SELECT {', '.join(COLUMNS)} FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    if first is None or last is None:
        return "the database is empty"
    for row in (first, last):
        content = dict(zip(COLUMNS, row, strict=True))
        if row_hash(content["prev_hash"], content) != content["hash"]:
            return f"row {content['id']}'s hash does not match its content"
    if first[0] != 1 or first[-2] != GENESIS_HASH or last[0] != spec.rows:
        return f"the chain runs from id {first[0]} to {last[0]}, expected 1 to {spec.rows} from the genesis hash"
    return ""


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".fill.json")


def prepare(keep: Path | None, scratch: Path, spec: FillSpec, progress: Callable[[str], None]) -> dict[str, Any]:
    """The filled database: reused from `keep` when it was filled with the same spec, else filled now."""
    path = keep or scratch / f"audit-{spec.rows}.db"
    info: dict[str, Any] = {"path": str(path), "kept": keep is not None, "reused": False}
    if keep is not None and keep.exists():
        recorded = json.loads(sidecar(keep).read_text()) if sidecar(keep).exists() else None
        if recorded != asdict(spec):
            raise SystemExit(
                f"{keep} exists but was not filled by this bench with these options ({recorded}); "
                "remove it or pick another --keep path"
            )
        problem = check_ends(keep, spec)
        if problem:
            raise SystemExit(f"{keep}: {problem}; remove it and run again")
        progress(f"fill: reusing {keep}")
        info.update(reused=True, fill_seconds=None)
    else:
        progress(f"fill: {spec.rows:,} rows into {path}")
        started = time.perf_counter()
        fill(path, spec, progress)
        info["fill_seconds"] = time.perf_counter() - started
        problem = check_ends(path, spec)
        if problem:
            raise RuntimeError(f"the fill is wrong: {problem}")
        if keep is not None:
            sidecar(keep).write_text(json.dumps(asdict(spec)) + "\n")
    info["bytes"] = path.stat().st_size
    return info


# ---------------------------------------------------------------------------------------- queries


def percentile(values: list[float], pct: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def shapes(spec: FillSpec, now: datetime) -> dict[str, Callable[[random.Random], AuditQuery]]:
    since = now - SINCE
    return {
        "room": lambda rng: AuditQuery(room=room_name(rng.randrange(spec.rooms)), limit=LIMIT),
        "user": lambda rng: AuditQuery(user_id=user_id(rng.randrange(spec.users)), limit=LIMIT),
        "agent+since": lambda rng: AuditQuery(agent=agent_name(rng.randrange(spec.agents)), since=since, limit=LIMIT),
        "room+since": lambda rng: AuditQuery(room=room_name(rng.randrange(spec.rooms)), since=since, limit=LIMIT),
        "agent": lambda rng: AuditQuery(agent=agent_name(rng.randrange(spec.agents)), limit=LIMIT),
        "outcome": lambda rng: AuditQuery(outcome="error", limit=LIMIT),
        "since": lambda rng: AuditQuery(since=since, limit=LIMIT),
        "user+outcome": lambda rng: AuditQuery(
            user_id=user_id(rng.randrange(spec.users)), outcome=rng.choice(("ok", "error")), limit=LIMIT
        ),
        "none": lambda rng: AuditQuery(limit=LIMIT),
    }


def wrong_rows(query: AuditQuery, rows: list[Any]) -> int:
    since = query.since.isoformat(timespec="microseconds") if query.since else ""
    return sum(
        1
        for r in rows
        if (query.room and r.room != query.room)
        or (query.agent and r.agent != query.agent)
        or (query.user_id and r.user_id != query.user_id)
        or (query.outcome and r.outcome != query.outcome)
        or r.ts < since
    )


async def run_queries(
    path: Path, spec: FillSpec, count: int, progress: Callable[[str], None]
) -> tuple[dict[str, Any], dict[str, list[str]], list[str]]:
    store = await AuditStore.open(path)
    problems: list[str] = []
    try:
        newest = (await store.query(AuditQuery(limit=1))).rows[0]
        now = datetime.fromisoformat(newest.ts)
        makers = shapes(spec, now)
        rng = random.Random(spec.seed + 1)

        # The statements the store runs for each shape, captured once, for EXPLAIN QUERY PLAN.
        statements: dict[str, list[str]] = {}
        for name, make in makers.items():
            captured: list[str] = []
            await store._db.set_trace_callback(captured.append)  # the store's own connection, read-only use
            await store.query(make(rng))
            await store._db.set_trace_callback(None)
            statements[name] = captured
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            plans = {
                name: [line for sql in sqls for line in [shorten(sql), *explain(db, sql)]]
                for name, sqls in statements.items()
            }

        progress(f"queries: {WARMUP_QUERIES} warm-up and {count} measured per shape")
        for _ in range(WARMUP_QUERIES):
            for make in makers.values():
                await store.query(make(rng))
        times: dict[str, list[float]] = {name: [] for name in makers}
        rows: dict[str, list[int]] = {name: [] for name in makers}
        more: dict[str, list[int]] = {name: [] for name in makers}
        gc.collect()
        for _ in range(count):
            for name, make in makers.items():
                query = make(rng)
                started = time.perf_counter()
                page = await store.query(query)
                times[name].append((time.perf_counter() - started) * 1000)
                rows[name].append(len(page.rows))
                more[name].append(page.more + (1 if page.more_capped else 0))
                bad = wrong_rows(query, page.rows)
                if bad:
                    problems.append(f"{name}: {bad} rows of {len(page.rows)} do not match {query}")
    finally:
        await store.close()
    summary = {
        name: {
            "queries": len(ms),
            "median_ms": statistics.median(ms),
            "p95_ms": percentile(ms, 95),
            "max_ms": max(ms),
            "median_rows": statistics.median(rows[name]),
            "median_more": statistics.median(more[name]),
        }
        for name, ms in times.items()
    }
    return summary, plans, problems


def shorten(sql: str) -> str:
    """The statement as printed: the store's full column list abbreviated."""
    return sql.replace(", ".join(COLUMNS), f"<the {len(COLUMNS)} columns>")


def explain(db: sqlite3.Connection, sql: str) -> list[str]:
    """EXPLAIN QUERY PLAN of `sql`, one line per step, indented under its parent step."""
    depth = {0: 0}
    lines = []
    for step, parent, _, detail in db.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall():
        depth[step] = depth.get(parent, 0) + 1
        lines.append("  " * depth[step] + detail)
    return lines


# ---------------------------------------------------------------------------------------- writes


@dataclass
class RoundResult:
    target: str
    round: int
    commands: int
    seconds: float
    per_second: float
    us_per_command: float
    errors: int


class Writers:
    """The audited path (a real Runtime) and the two bare aiosqlite loops, each on a fresh file in `directory`."""

    def __init__(self, runtime: Runtime, bare: dict[str, aiosqlite.Connection], concurrency: int) -> None:
        self.runtime = runtime
        self.bare = bare
        self.concurrency = concurrency
        self.actor = Actor("slack", "U123", "alice", "T123", "C1", "ops")
        self.bare_lock = asyncio.Lock()
        self.audited_sent = 0
        self.bare_sent = dict.fromkeys(BASELINES, 0)
        self.first_problem = ""

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, directory: Path, concurrency: int) -> AsyncIterator[Writers]:
        env = {
            "LIVEKIT_URL": "http://127.0.0.1:9",  # never contacted: `help` needs no LiveKit
            "LIVEKIT_API_KEY": "devkey",
            "LIVEKIT_API_SECRET": "secret",
            "DISPATCH_BOT_DB": str(directory / "audited.db"),
        }
        runtime = await Runtime.open(load_settings(None, env=env))
        bare: dict[str, aiosqlite.Connection] = {}
        try:
            for name in BASELINES:
                path = directory / f"{name}.db"
                if name == "schema":
                    await (await AuditStore.open(path)).close()  # the same table, triggers, indexes and WAL mode
                bare[name] = db = await aiosqlite.connect(path)
                await db.execute("PRAGMA busy_timeout = 5000")
                async with db.execute("PRAGMA journal_mode = WAL") as cursor:
                    mode = await cursor.fetchone()
                if not mode or str(mode[0]).lower() != "wal":
                    raise RuntimeError(f"the {name} database is not in WAL mode")
                await db.execute("PRAGMA synchronous = FULL")
                if name == "plain":
                    await db.execute(PLAIN_TABLE)
                    await db.commit()
            yield cls(runtime, bare, concurrency)
        finally:
            for db in bare.values():
                await db.close()
            await runtime.close()

    def bare_rows(self, count: int) -> list[tuple[Any, ...]]:
        """Rows like the audited `help` rows, with fresh hashes; the id is left to SQLite."""
        ts = datetime.now(UTC).isoformat(timespec="microseconds")
        return [
            (None, ts, "slack", "T123", "C1", "ops", "U123", "alice", "help", "help", "", "", "", "ok", "", 0,
             secrets.token_hex(32), secrets.token_hex(32))
            for _ in range(count)
        ]  # fmt: skip

    async def bare_one(self, db: aiosqlite.Connection, row: tuple[Any, ...]) -> None:
        await db.execute(INSERT, row)
        await db.commit()

    async def bare_locked(self, db: aiosqlite.Connection, row: tuple[Any, ...]) -> None:
        async with self.bare_lock:
            await db.execute(INSERT, row)
            await db.commit()

    async def audited_one(self) -> bool:
        reply = await self.runtime.runner.execute(self.runtime.context(self.actor), "help")
        ok = reply.outcome == "ok" and reply.action == "help"
        if not ok and not self.first_problem:
            self.first_problem = f"{reply.outcome}: {[line.plain() for line in reply.lines][:2]}"
        return ok

    async def run(self, target: str, count: int) -> tuple[float, int]:
        """Seconds for `count` commands (or bare inserts) of `target`, and how many failed."""
        c = self.concurrency
        failed = 0
        name, kind = target.split()
        if name in BASELINES:
            db = self.bare[name]
            rows = self.bare_rows(count)
            self.bare_sent[name] += count
            gc.collect()
            started = time.perf_counter()
            if kind == "seq":
                for row in rows:
                    await self.bare_one(db, row)
            else:
                for i in range(0, count, c):
                    await asyncio.gather(*(self.bare_locked(db, row) for row in rows[i : i + c]))
            return time.perf_counter() - started, 0
        self.audited_sent += count
        gc.collect()
        started = time.perf_counter()
        if kind == "seq":
            for _ in range(count):
                failed += not await self.audited_one()
        else:
            for i in range(0, count, c):
                oks = await asyncio.gather(*(self.audited_one() for _ in range(min(c, count - i))))
                failed += oks.count(False)
        return time.perf_counter() - started, failed

    async def counts(self) -> tuple[int, dict[str, int], str]:
        """Rows in the audited and the bare databases, and whether the audited chain verifies."""
        verified = await self.runtime.audit.verify()
        bare: dict[str, int] = {}
        for name, db in self.bare.items():
            async with db.execute("SELECT COUNT(*) FROM audit") as cursor:
                found = await cursor.fetchone()
            bare[name] = int(found[0]) if found else 0
        return verified.rows, bare, verified.problem


async def run_writes(
    directory: Path, count: int, concurrency: int, rounds: int, progress: Callable[[str], None]
) -> tuple[list[RoundResult], list[str]]:
    results: list[RoundResult] = []
    problems: list[str] = []
    async with Writers.open(directory, concurrency) as writers:
        progress(f"writes: warm-up, {WARMUP_COMMANDS} per target")
        for target in WRITE_TARGETS:
            await writers.run(target, WARMUP_COMMANDS)
        for number in range(1, rounds + 1):
            for target in WRITE_TARGETS:
                progress(f"writes: round {number}/{rounds}: {count} for {target}")
                seconds, failed = await writers.run(target, count)
                results.append(
                    RoundResult(target, number, count, seconds, count / seconds, seconds / count * 1e6, failed)
                )
        audited_rows, bare_rows, chain = await writers.counts()
        if writers.first_problem:
            problems.append(f"audited: {writers.first_problem}")
        if audited_rows != writers.audited_sent or bare_rows != writers.bare_sent:
            problems.append(
                f"rows: {audited_rows} audited for {writers.audited_sent} commands, "
                f"{bare_rows} bare for {writers.bare_sent} inserts"
            )
        if chain:
            problems.append(f"the audited chain does not verify: {chain}")
    return results, problems


# ---------------------------------------------------------------------------------------- report


def filesystem_of(path: Path) -> str:
    """The mount point and type holding `path` (Linux), since fsync costs depend on it."""
    best = ("", "unknown")
    with contextlib.suppress(OSError), open("/proc/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 2 and str(path.resolve()).startswith(fields[1]) and len(fields[1]) >= len(best[0]):
                best = (fields[1], fields[2])
    return f"{best[1]} at {best[0] or '?'}"


def spread_of(values: list[float]) -> dict[str, float]:
    """Median, quartiles and range of per-round ratios; the effect is told apart when 1.0 is outside p25..p75."""
    if len(values) < 2:
        return {"median": values[0], "p25": values[0], "p75": values[0], "min": values[0], "max": values[0]}
    q = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": statistics.median(values), "p25": q[0], "p75": q[2], "min": min(values), "max": max(values)}


def run_bench(args: argparse.Namespace, progress: Callable[[str], None]) -> dict[str, Any]:
    spec = FillSpec(rows=args.rows)
    keep = Path(args.keep).resolve() if args.keep else None
    parent = str(keep.parent) if keep else args.dir
    with tempfile.TemporaryDirectory(prefix="dispatch-bot-bench-", dir=parent) as tmp:
        scratch = Path(tmp)
        fill_info = prepare(keep, scratch, spec, progress)
        path = Path(fill_info["path"])
        if args.verify:
            progress("verify: walking the whole chain with AuditStore.verify()")

            async def verify() -> tuple[float, str, int]:
                store = await AuditStore.open(path)
                try:
                    started = time.perf_counter()
                    result = await store.verify()
                    return time.perf_counter() - started, result.problem, result.rows
                finally:
                    await store.close()

            seconds, problem, rows = asyncio.run(verify())
            fill_info["verify"] = {"seconds": seconds, "rows": rows, "intact": not problem, "problem": problem}
            if problem:
                raise RuntimeError(f"the filled chain does not verify: {problem}")
        queries, plans, query_problems = asyncio.run(run_queries(path, spec, args.queries, progress))
        writes, write_problems = asyncio.run(
            run_writes(scratch, args.commands, args.concurrency, args.rounds, progress)
        )
        filesystem = filesystem_of(scratch)

    def median(target: str) -> float:
        return statistics.median(r.per_second for r in writes if r.target == target)

    write_summary = {t: {"per_second": median(t), "us_per_command": 1e6 / median(t)} for t in WRITE_TARGETS}
    # Per round, audited over each baseline of the same round: their spread says whether the effect is real.
    per_round = {
        f"{kind} / {base}": [
            a.per_second / b.per_second
            for a, b in zip(
                (r for r in writes if r.target == f"audited {kind}"),
                (r for r in writes if r.target == f"{base} {kind}"),
                strict=True,
            )
        ]
        for kind in ("seq", "conc")
        for base in BASELINES
    }
    ratios = {
        key: write_summary[f"audited {key.split()[0]}"]["per_second"]
        / write_summary[f"{key.split()[-1]} {key.split()[0]}"]["per_second"]
        for key in per_round
    }
    spread = {key: spread_of(values) for key, values in per_round.items()}
    targets_met = {f"{shape}_median_under_{TARGET_QUERY_MS:g}ms": queries[shape]["median_ms"] < TARGET_QUERY_MS
                   for shape in TARGETED_SHAPES}  # fmt: skip
    targets_met["audited_seq_at_least_70pct_of_plain"] = ratios["seq / plain"] >= TARGET_WRITE_RATIO
    problems = query_problems + write_problems
    return {
        "config": {
            "fill": asdict(spec),
            "queries_per_shape": args.queries,
            "limit": LIMIT,
            "since": "newest row's ts - 7 days",
            "commands_per_round": args.commands,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "warmup": {"queries_per_shape": WARMUP_QUERIES, "writes_per_target": WARMUP_COMMANDS},
            "synchronous": "FULL",
        },
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "sqlite": sqlite3.sqlite_version,
            "aiosqlite": version("aiosqlite"),
            "filesystem": filesystem,
        },
        "fill": fill_info,
        "queries": queries,
        "query_plans": plans,
        "write_rounds": [asdict(r) for r in writes],
        "writes_median_of_rounds": write_summary,
        "ratio_audited_over_baseline": ratios,
        "per_round_ratios": spread,
        "targets": {"query_median_ms_below": TARGET_QUERY_MS, "audited_seq_ratio_at_least": TARGET_WRITE_RATIO},
        "targets_met": targets_met,
        "errors": {"count": len(problems) + sum(r.errors for r in writes), "first": problems[:5]},
    }


def table(report: dict[str, Any]) -> str:
    cfg, env, fill_info = report["config"], report["environment"], report["fill"]
    spec = cfg["fill"]
    how = "reused" if fill_info["reused"] else f"filled in {fill_info['fill_seconds']:.1f} s"
    lines = [
        f"audit store: {spec['rows']:,} rows over {spec['rooms']} rooms, {spec['agents']} agents, {spec['users']} "
        f"users, {spec['days']} days ({how}; {fill_info['bytes'] / 1e6:.0f} MB{', kept' if fill_info['kept'] else ''})",
        f"{env['cpus']} CPUs, Python {env['python']}, SQLite {env['sqlite']}, aiosqlite {env['aiosqlite']}, "
        f"files on {env['filesystem']}",
    ]
    if "verify" in fill_info:
        v = fill_info["verify"]
        lines.append(f"AuditStore.verify(): {v['rows']:,} rows intact in {v['seconds']:.1f} s")
    lines += ["", "query plans (EXPLAIN QUERY PLAN of the statements AuditStore.query ran):"]
    for name, plan in report["query_plans"].items():
        lines.append(f"[{name}]")
        lines += [f"  {line}" for line in plan]
    lines += [
        "",
        f"queries: AuditStore.query(limit={cfg['limit']}), {cfg['queries_per_shape']} per shape, "
        "page + 'N more' count, since = newest - 7 d",
        f"{'shape':<14}{'median ms':>10}{'p95 ms':>9}{'max ms':>9}{'rows':>6}{'more':>7}  target",
    ]
    for name, q in report["queries"].items():
        target = ""
        if name in TARGETED_SHAPES:
            met = q["median_ms"] < TARGET_QUERY_MS
            target = f"median < {TARGET_QUERY_MS:g} ms: {'met' if met else 'MISSED'}"
        lines.append(
            f"{name:<14}{q['median_ms']:>10.2f}{q['p95_ms']:>9.2f}{q['max_ms']:>9.2f}{q['median_rows']:>6.0f}"
            f"{q['median_more']:>7.0f}  {target}"
        )
    lines += [
        f"(rows, more: medians of the page size and of the 'N more match' count; {MORE_CAP + 1} means capped)",
        "",
        f"writes: {cfg['commands_per_round']} per round and target, {cfg['rounds']} alternating rounds, "
        f"conc = batches of {cfg['concurrency']}, synchronous=FULL, WAL",
        f"{'target':<14}{'round':>6}{'seconds':>9}{'per s':>9}{'us each':>9}{'errors':>8}",
    ]
    for r in report["write_rounds"]:
        lines.append(
            f"{r['target']:<14}{r['round']:>6}{r['seconds']:>9.3f}{r['per_second']:>9.0f}{r['us_per_command']:>9.0f}"
            f"{r['errors']:>8}"
        )
    lines += ["", f"{'target':<14}{'per s':>9}{'us each':>9}"]
    for target in WRITE_TARGETS:
        s = report["writes_median_of_rounds"][target]
        lines.append(f"{target:<14}{s['per_second']:>9.0f}{s['us_per_command']:>9.0f}")
    lines += [
        "",
        f"{'audited over':<16}{'of medians':>11}{'per-round median':>18}{'p25-p75':>14}{'min-max':>14}  effect",
    ]
    for key, ratio in report["ratio_audited_over_baseline"].items():
        r = report["per_round_ratios"][key]
        told = "told apart" if not r["p25"] <= 1.0 <= r["p75"] else "within the spread"
        lines.append(
            f"{key:<16}{ratio:>10.2f}x{r['median']:>17.2f}x{r['p25']:>7.2f}-{r['p75']:.2f}x"
            f"{r['min']:>7.2f}-{r['max']:.2f}x  {told}"
        )
    seq = report["ratio_audited_over_baseline"]["seq / plain"]
    met = report["targets_met"]["audited_seq_at_least_70pct_of_plain"]
    lines += [
        "plain: a plain table (no index, trigger or CHECK); schema: the product's table, triggers and indexes, no "
        "chain; both with the store's PRAGMAs (WAL, synchronous=FULL). 'told apart': 1.0 lies outside the "
        "per-round ratios' p25-p75.",
        f"target audited seq >= {TARGET_WRITE_RATIO:.0%} of plain seq: {'met' if met else 'MISSED'} ({seq:.0%}); "
        "conc is information",
    ]
    errors = report["errors"]
    if errors["count"]:
        lines.append(f"ERRORS: {errors['count']}; first: {errors['first']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_store", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the filled database")
    parser.add_argument("--queries", type=int, default=200, help="measured queries per shape")
    parser.add_argument("--commands", type=int, default=2000, help="commands (or bare inserts) per round and target")
    parser.add_argument("--concurrency", type=int, default=8, help="commands in flight at once in the conc targets")
    parser.add_argument("--rounds", type=int, default=9, help="rounds; each runs the four write targets")
    parser.add_argument(
        "--keep", metavar="PATH", help="write the filled database to PATH and keep it (reused if filled)"
    )
    parser.add_argument("--dir", default=None, help="where the temporary files go (default: system temp)")
    parser.add_argument("--verify", action="store_true", help="also walk the filled chain with AuditStore.verify()")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if args.rows < LIMIT + 1 or args.queries < 1 or args.commands < 1 or args.concurrency < 1 or args.rounds < 1:
        parser.error(f"--rows must be more than {LIMIT}; --queries, --commands, --concurrency, --rounds at least 1")

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    report = run_bench(args, progress)
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 1 if report["errors"]["count"] else 0


if __name__ == "__main__":
    sys.exit(main())
