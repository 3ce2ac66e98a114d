"""Prune without stalling: how long a command waits for its audit row while half of a big log is pruned.

Reproduce the figures (from the repository root, with the venv active):

    . .venv/bin/activate && python -m bench.audit_prune --rows 1000000

Setup (timed, not measured): a log of `--rows` rows over 90 days, filled as `bench.audit_store` fills it (its
`prepare`; with `--keep PATH` a kept fill is copied rather than refilled, since the prune changes it).

One `AuditStore` (the product's, synchronous=FULL), as `dispatch-bot serve` holds it when audit.retention_days
prunes while it serves. Commands arrive open-loop, one every `--interval`, each appending its audit row with
`AuditStore.record`; a command's wait runs from its due time until its row is committed. Two phases in the same
run: "quiet", `--quiet` seconds of commands with no prune (the baseline), then "prune", the same commands while
`AuditStore.prune` removes every row older than 45 days (half of the log) in its batches, until it is done.
A third phase, "after", runs the same commands for as long as the prune took once it is done: the disk's own
stalls, the same length of time without a prune (`--no-after` skips it). Reported per phase: commands, p50, p99
and max wait, and the waits over 100 ms; and the prune's rows, batches and seconds. Afterwards
`AuditStore.verify()` walks the rest of the chain (`--no-verify` skips it).

Target (from the issue): no command waits more than 100 ms for its audit row during a prune of 500k rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.audit_store import FillSpec, prepare
from dispatch_bot.bot.audit_store import PRUNE_BATCH_ROWS, AuditStore
from dispatch_bot.commands.ports import Actor, AuditRecord

TARGET_MAX_MS = 100.0
ACTOR = Actor("slack", "U123", "alice", "T123", "C1", "ops")
RETENTION = Actor("cli", "dispatch-bot", "retention (audit.retention_days)")


def pct(values: list[float], p: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


async def commands(store: AuditStore, interval: float, until: Callable[[], bool]) -> list[float]:
    """Open loop: a command every `interval` s until `until()`; each one's wait in ms from its due time."""
    waits: list[float] = []
    tasks: list[asyncio.Task[None]] = []

    async def one(due: float) -> None:
        await store.record(AuditRecord(ACTOR, "help", "help", "ok"))
        waits.append((time.monotonic() - due) * 1000)

    t0 = time.monotonic()
    i = 0
    while not until():
        due = t0 + i * interval
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
        i += 1
    await asyncio.gather(*tasks)
    return waits


async def measure(path: Path, args: argparse.Namespace, progress: Callable[[str], None]) -> dict[str, Any]:
    store = await AuditStore.open(path)
    try:
        progress(f"quiet: commands every {args.interval * 1000:g} ms for {args.quiet:g} s, no prune")
        end = time.monotonic() + args.quiet
        quiet = await commands(store, args.interval, lambda: time.monotonic() >= end)
        batches = 0

        def batch_done(_: int) -> None:
            nonlocal batches
            batches += 1

        progress("prune: the same commands while half of the log is pruned")
        cutoff = datetime.now(UTC) - timedelta(days=45)
        started = time.monotonic()
        prune = asyncio.create_task(store.prune(cutoff, RETENTION, batch_rows=args.batch, progress=batch_done))
        during = await commands(store, args.interval, prune.done)
        result = await prune
        seconds = time.monotonic() - started
        # The disk itself stalls now and then (a lone fsync of 100 ms was seen with no prune at all): the same
        # commands, for as long as the prune took, once it is done, say how often it does without a prune.
        after: list[float] = []
        if args.after:
            progress(f"after: the same commands for {seconds:.0f} s more, no prune (the disk's own stalls)")
            end = time.monotonic() + seconds
            after = await commands(store, args.interval, lambda: time.monotonic() >= end)
        verified: dict[str, Any] = {}
        if args.verify:
            progress("verify: walking the rest of the chain")
            v_started = time.monotonic()
            check = await store.verify()
            verified = {"rows": check.rows, "intact": check.intact, "problem": check.problem,
                        "seconds": time.monotonic() - v_started}  # fmt: skip
    finally:
        await store.close()

    def phase(waits: list[float]) -> dict[str, float]:
        over = sum(w > TARGET_MAX_MS for w in waits)
        return {"commands": len(waits), "p50_ms": pct(waits, 50), "p99_ms": pct(waits, 99), "max_ms": max(waits),
                "over_target": over}  # fmt: skip

    return {
        "quiet": phase(quiet),
        "prune": phase(during),
        "after": phase(after) if after else {},
        "pruned": {"rows": result.removed, "anchor_id": result.anchor_id, "batches": batches, "seconds": seconds},
        "verify": verified,
    }


def run_bench(args: argparse.Namespace, progress: Callable[[str], None]) -> dict[str, Any]:
    spec = FillSpec(rows=args.rows)
    with tempfile.TemporaryDirectory(prefix="dispatch-bot-prune-", dir=args.dir) as tmp:
        scratch = Path(tmp)
        keep = Path(args.keep).resolve() if args.keep else None
        info = prepare(keep, scratch, spec, progress)
        path = Path(info["path"])
        if keep is not None:  # the prune changes the file: work on a copy of the kept fill
            copy = scratch / "audit.db"
            with sqlite3.connect(path) as db:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            shutil.copyfile(path, copy)
            path = copy
        with open(path, "rb+") as f:  # the fill's or copy's dirty pages go to disk now, not in a command's checkpoint
            os.fsync(f.fileno())
        report = asyncio.run(measure(path, args, progress))
    prune, quiet = report["prune"], report["quiet"]
    return {
        "config": {
            "rows": args.rows,
            "interval_ms": args.interval * 1000,
            "quiet_s": args.quiet,
            "batch_rows": args.batch,
            "after": args.after,
            "synchronous": "FULL",
        },
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "sqlite": sqlite3.sqlite_version,
        },
        "fill": {k: v for k, v in info.items() if k != "path"},
        **report,
        "ratio_prune_over_quiet": {k: prune[k] / quiet[k] for k in ("p50_ms", "p99_ms", "max_ms")},
        "target_max_ms": TARGET_MAX_MS,
        "target_met": prune["max_ms"] <= TARGET_MAX_MS,
    }


def table(report: dict[str, Any]) -> str:
    cfg, pruned = report["config"], report["pruned"]
    lines = [
        f"prune while serving: {cfg['rows']:,} rows, half pruned in batches of {cfg['batch_rows']:,}; a command "
        f"every {cfg['interval_ms']:g} ms, each appending its audit row (synchronous=FULL); "
        f"{report['environment']['cpus']} CPUs, SQLite {report['environment']['sqlite']}",
        "",
        f"{'phase':<8}{'commands':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'> target':>10}",
    ]
    for name in ("quiet", "prune", "after"):
        p = report[name]
        if not p:
            continue
        lines.append(
            f"{name:<8}{p['commands']:>9}{p['p50_ms']:>9.1f}{p['p99_ms']:>9.1f}{p['max_ms']:>9.1f}{p['over_target']:>10}"
        )
    r = report["ratio_prune_over_quiet"]
    lines += [
        f"{'ratio':<17}{r['p50_ms']:>8.2f}x{r['p99_ms']:>8.2f}x{r['max_ms']:>8.2f}x",
        "",
        f"pruned {pruned['rows']:,} rows up to row {pruned['anchor_id']} in {pruned['batches']} batches, "
        f"{pruned['seconds']:.1f} s",
        f"target: no command waits more than {TARGET_MAX_MS:g} ms during the prune: "
        f"{'met' if report['target_met'] else 'MISSED'} ({report['prune']['max_ms']:.1f} ms)",
    ]
    if report["after"]:
        after = report["after"]
        lines.append(
            f"the same time without a prune (after): max {after['max_ms']:.1f} ms, {after['over_target']} waits over "
            f"{TARGET_MAX_MS:g} ms (during the prune: {report['prune']['over_target']})"
        )
    if report["verify"]:
        v = report["verify"]
        lines.append(f"verify: {v['rows']:,} rows {'intact' if v['intact'] else 'BROKEN: ' + v['problem']} "
                     f"in {v['seconds']:.1f} s")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_prune", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the log; the prune removes half")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between commands")
    parser.add_argument("--quiet", type=float, default=5.0, help="seconds of commands before the prune (baseline)")
    parser.add_argument("--batch", type=int, default=PRUNE_BATCH_ROWS, help="rows per prune transaction")
    parser.add_argument(
        "--no-after",
        dest="after",
        action="store_false",
        help="skip the phase after the prune (as long as the prune took, without one)",
    )
    parser.add_argument("--keep", metavar="PATH", help="fill PATH once and prune a copy of it on every run")
    parser.add_argument("--dir", default=None, help="where the temporary files go (default: system temp)")
    parser.add_argument("--no-verify", dest="verify", action="store_false", help="skip verifying the chain after")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if args.rows < 10 or args.interval <= 0 or args.quiet <= 0 or args.batch < 1:
        parser.error("--rows at least 10; --interval, --quiet and --batch positive")

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    report = run_bench(args, progress)
    print(json.dumps(report, indent=2) if args.json else table(report))
    verify = report["verify"]
    return 1 if verify and not verify["intact"] else 0


if __name__ == "__main__":
    sys.exit(main())
