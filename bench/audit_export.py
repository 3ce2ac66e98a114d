"""Export and verify at streaming speed: `dispatch-bot audit` against a plain synchronous sqlite3 loop.

Reproduce the figures (from the repository root, with the venv active):

    . .venv/bin/activate && python -m bench.audit_export --rows 1000000 --rounds 3

Setup (timed, not measured): a log of `--rows` rows, filled as `bench.audit_store` fills it (`--keep PATH` keeps
and reuses the fill).

Three jobs, each run as a process of its own, both ways, alternating for `--rounds` rounds:

* verify:  `dispatch-bot audit verify` against a plain loop over `SELECT ... ORDER BY id` that checks each row's
           link and recomputes its hash (the canonical JSON with one prepared encoder, then sha256);
* jsonl:   `dispatch-bot audit --all --format jsonl` against a plain loop writing one compact JSON object per
           row (a dict of the columns, one prepared encoder), newest first;
* csv:     `dispatch-bot audit --all --format csv` against `csv.writer(...).writerows(cursor)`, newest first.

Exports go to files in the temporary directory, and each product export must be byte for byte the plain loop's
(same rows, same order, same text). Per job the report gives the median seconds, rows per second, the ratio
plain/product of the medians (the product's share of the plain loop's speed) and the peak resident memory of
each process (ru_maxrss from wait4), which stays flat as rows grow when a job streams.

Targets (from the issue): every ratio >= 0.8, JSONL at least as fast as CSV, 1M rows exported in under 30 s.
Temporary files are removed at exit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.audit_store import FillSpec, prepare

REPO = Path(__file__).resolve().parent.parent
JOBS = ("verify", "jsonl", "csv")
TARGET_RATIO = 0.8
TARGET_EXPORT_S = 30.0

# The plain loops: what a person would write with sqlite3 alone. argv[1] is the database, argv[2] the output.
_SELECT = (
    "SELECT id, ts, source, team_id, channel_id, channel_name, user_id, user_name, raw_text, action, agent, room, "
    "dispatch_id, outcome, detail, duration_ms, prev_hash, hash FROM audit"
)
PLAIN = {
    "verify": f"""
import hashlib, json, sqlite3, sys
encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
db = sqlite3.connect(sys.argv[1])
prev, expected, rows = "0" * 64, 1, 0
for row in db.execute("{_SELECT} ORDER BY id"):
    if row[0] != expected or row[16] != prev:
        sys.exit(f"row {{row[0]}} does not follow")
    if hashlib.sha256(f"{{prev}}\\n{{encode(row[:16])}}".encode()).hexdigest() != row[17]:
        sys.exit(f"row {{row[0]}} altered")
    prev, expected, rows = row[17], row[0] + 1, rows + 1
print(rows)
""",
    "jsonl": f"""
import json, sqlite3, sys
encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
db = sqlite3.connect(sys.argv[1])
cursor = db.execute("{_SELECT} ORDER BY id DESC")
names = [d[0] for d in cursor.description]
with open(sys.argv[2], "w") as out:
    for row in cursor:
        out.write(encode(dict(zip(names, row))) + "\\n")
""",
    "csv": f"""
import csv, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
cursor = db.execute("{_SELECT} ORDER BY id DESC")
with open(sys.argv[2], "w", newline="") as out:
    writer = csv.writer(out)
    writer.writerow([d[0] for d in cursor.description])
    writer.writerows(cursor)
""",
}


def run(command: list[str], out: Path | None, env: dict[str, str]) -> tuple[float, int, str]:
    """Seconds, peak RSS in MB and stdout+stderr of one process; its stdout goes to `out` when given."""
    sink = open(out, "w") if out is not None else subprocess.DEVNULL  # noqa: SIM115 - closed below
    try:
        started = time.perf_counter()
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.PIPE)
        stderr = proc.stderr.read() if proc.stderr else b""
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if out is not None:
            sink.close()  # type: ignore[union-attr]
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])}... exited with {proc.returncode}: {stderr.decode()[-500:]}")
    return seconds, usage.ru_maxrss // 1024, stderr.decode()


def run_bench(args: argparse.Namespace, progress: Any) -> dict[str, Any]:
    spec = FillSpec(rows=args.rows)
    results: list[dict[str, Any]] = []
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="dispatch-bot-export-", dir=args.dir) as tmp:
        scratch = Path(tmp)
        keep = Path(args.keep).resolve() if args.keep else None
        info = prepare(keep, scratch, spec, progress)
        db = Path(info["path"])
        with sqlite3.connect(db) as conn:  # every reader starts from the same file, no WAL to replay
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        config = scratch / "dispatch-bot.yaml"
        config.write_text("")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "LIVEKIT_", "DISPATCH_BOT_"))}
        env.update(
            DISPATCH_BOT_CONFIG=str(config),
            DISPATCH_BOT_DB=str(db),
            LIVEKIT_URL="http://127.0.0.1:9",  # never contacted by audit
            LIVEKIT_API_KEY="devkey",
            LIVEKIT_API_SECRET="secret",
        )
        product = {
            "verify": ["audit", "verify"],
            "jsonl": ["audit", "--all", "--format", "jsonl"],
            "csv": ["audit", "--all", "--format", "csv"],
        }
        for number in range(1, args.rounds + 1):
            for job in args.jobs:
                outputs: dict[str, Path | None] = {}
                for way in ("plain", "product"):
                    progress(f"round {number}/{args.rounds}: {job}, {way}")
                    out = None if job == "verify" else scratch / f"{job}.{way}"
                    outputs[way] = out
                    if way == "plain":
                        command = [sys.executable, "-c", PLAIN[job], str(db), str(out)]
                        seconds, rss, _ = run(command, None if out else scratch / "verify.plain", env)
                    else:
                        command = [sys.executable, "-m", "dispatch_bot.bot.cli", *product[job]]
                        seconds, rss, _ = run(command, out or scratch / "verify.product", env)
                    results.append({"job": job, "way": way, "round": number, "seconds": seconds, "rss_mb": rss})
                if job != "verify":
                    plain_out, product_out = outputs["plain"], outputs["product"]
                    assert plain_out is not None and product_out is not None
                    if digest(plain_out) != digest(product_out):
                        problems.append(f"{job} round {number}: the export differs from the plain loop's")
                    plain_out.unlink()
                    product_out.unlink()
                else:
                    said = (scratch / "verify.product").read_text()
                    if "intact" not in said or f"{args.rows} rows" not in said:
                        problems.append(f"verify round {number}: {said.strip()}")

    def median(job: str, way: str, key: str) -> float:
        return statistics.median(r[key] for r in results if r["job"] == job and r["way"] == way)

    summary = {
        job: {
            way: {
                "seconds": median(job, way, "seconds"),
                "rows_per_s": args.rows / median(job, way, "seconds"),
                "rss_mb": median(job, way, "rss_mb"),
            }
            for way in ("plain", "product")
        }
        for job in args.jobs
    }
    ratios = {job: summary[job]["plain"]["seconds"] / summary[job]["product"]["seconds"] for job in args.jobs}
    return {
        "config": {"rows": args.rows, "rounds": args.rounds, "jobs": args.jobs},
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "sqlite": sqlite3.sqlite_version,
        },
        "fill": {k: v for k, v in info.items() if k != "path"},
        "rounds": results,
        "median_of_rounds": summary,
        "ratio_product_speed_over_plain": ratios,
        "targets_met": {
            "every_ratio_at_least_0.8": all(r >= TARGET_RATIO for r in ratios.values()),
            "jsonl_at_least_as_fast_as_csv": {"jsonl", "csv"} <= set(args.jobs)
            and summary["jsonl"]["product"]["seconds"] <= summary["csv"]["product"]["seconds"],
            "export_under_30s": all(
                summary[j]["product"]["seconds"] < TARGET_EXPORT_S for j in ("jsonl", "csv") if j in args.jobs
            ),
        },
        "errors": problems,
    }


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def table(report: dict[str, Any]) -> str:
    cfg, env = report["config"], report["environment"]
    lines = [
        f"audit export and verify: {cfg['rows']:,} rows, {cfg['rounds']} alternating rounds, each run a process "
        f"of its own; {env['cpus']} CPUs, SQLite {env['sqlite']}",
        "",
        f"{'job':<8}{'way':<9}{'seconds':>9}{'rows/s':>11}{'peak MB':>9}{'product speed':>15}",
    ]
    for job in report["median_of_rounds"]:
        for way in ("plain", "product"):
            s = report["median_of_rounds"][job][way]
            ratio = f"{report['ratio_product_speed_over_plain'][job]:>14.2f}x" if way == "product" else ""
            lines.append(f"{job:<8}{way:<9}{s['seconds']:>9.2f}{s['rows_per_s']:>11,.0f}{s['rss_mb']:>9.0f}{ratio}")
    met = report["targets_met"]
    lines += [
        "",
        "seconds: median of rounds, process start to exit; product speed: plain seconds / product seconds",
        f"targets: every ratio >= {TARGET_RATIO}: {'met' if met['every_ratio_at_least_0.8'] else 'MISSED'}; "
        f"JSONL at least as fast as CSV: {'met' if met['jsonl_at_least_as_fast_as_csv'] else 'MISSED'}; "
        f"exports under {TARGET_EXPORT_S:g} s: {'met' if met['export_under_30s'] else 'MISSED'}",
    ]
    if report["errors"]:
        lines.append(f"ERRORS: {report['errors'][:5]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_export", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the log")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each runs every job both ways")
    parser.add_argument("--jobs", default=",".join(JOBS), help="which jobs, comma-separated (default: all three)")
    parser.add_argument("--keep", metavar="PATH", help="write the filled database to PATH and keep it (reused)")
    parser.add_argument("--dir", default=None, help="where the temporary files go (default: system temp)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    args.jobs = [job for job in JOBS if job in args.jobs.split(",")]
    if args.rows < 21 or args.rounds < 1:
        parser.error("--rows more than 20, --rounds at least 1")

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    report = run_bench(args, progress)
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
