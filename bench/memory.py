"""Memory: 20,000 commands through `dispatch-bot serve`, the bot's resident memory sampled every 1,000.

Reproduce the figures (from the repository root, with the venv active):

    . .venv/bin/activate && python -m bench.memory --commands 20000 --rate 100

The bot is `dispatch-bot serve --http` in a process of its own, started as an operator starts it, against the
LiveKit and Slack stand-ins in another (`bench.standins`). This process sends signed slash commands at a steady
rate, a mix that cycles over `--rooms` running rooms: `captions <room>` (a real dispatch, with its follow-up),
`list <room>`, `link <room>`, `audit room:<room>`, `stop speech-processing <room>`, and an invalid command.
After every `--every` commands it waits until the bot has finished each command it received (the audit
database's table of received commands is empty: read from here, read-only), then reads the bot's VmRSS from
/proc/<pid>/status (Linux).

The baseline is the same process's RSS once it serves /healthz, before the first command. The verdict: the
largest sample under `--limit-mb` (100 MB), and flat after warm-up: the last sample exceeds the sample at
`--warmup` commands by less than `--flat-margin` (10%) of it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.end_to_end import SIGNING_SECRET, bot_process, wait_healthy
from bench.standins import StandIns
from tests.fakes.slack_requests import signed_headers, slash_command_body

SETTLE_TIMEOUT = 120.0


def rss_mb(pid: int) -> float:
    """The process's resident set size in MB, from /proc/<pid>/status (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def command_text(i: int, rooms: int) -> str:
    """The i-th command of the mix: six kinds in turn, each room visited in the order dispatch ... stop."""
    room = f"mem-{(i // 6) % rooms}"
    kinds = [
        f"captions {room}",
        f"list {room}",
        f"link {room}",
        f"audit room:{room}",
        f"stop speech-processing {room}",
        "list --bogus",
    ]
    return kinds[i % 6]


def unfinished(db_path: Path) -> int:
    """Commands the bot has received and not yet finished (it deletes each record with the command's row)."""
    if not db_path.exists():
        return 0
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10) as db:
        return int(db.execute("SELECT count(*) FROM received_commands").fetchone()[0])


async def settle(db_path: Path, process_alive: Any) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while (left := await asyncio.to_thread(unfinished, db_path)) > 0:
        if not process_alive():
            raise RuntimeError("the bot exited while commands were running")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{left} commands still unfinished after {SETTLE_TIMEOUT:g} s")
        await asyncio.sleep(0.05)


async def run_bench(args: argparse.Namespace, progress: Any) -> dict[str, Any]:
    samples: list[dict[str, Any]] = []
    failures: list[str] = []
    with StandIns.start() as standins, tempfile.TemporaryDirectory(prefix="dispatch-bench-") as tmp:
        standins.register_worker("speech-processing")
        standins.add_rooms([f"mem-{k}" for k in range(args.rooms)])
        db_path = Path(tmp) / "audit.db"
        bot_args = argparse.Namespace(concurrency=args.concurrency, followup_interval="20ms")
        with bot_process(standins, Path(tmp), bot_args) as (process, url):
            await wait_healthy(url, process)
            baseline = rss_mb(process.pid)
            progress(f"bot serving; RSS {baseline:.1f} MB before the first command")
            connector = aiohttp.TCPConnector(limit=0)
            timeout = aiohttp.ClientTimeout(total=30)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

                async def send(i: int) -> None:
                    body = slash_command_body(command_text(i, args.rooms), response_url=standins.new_response_url())
                    headers = signed_headers(body, SIGNING_SECRET)
                    try:
                        async with session.post(url + "/slack/events", data=body, headers=headers) as resp:
                            await resp.read()
                            if resp.status != 200:
                                failures.append(f"command {i}: HTTP {resp.status}")
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        failures.append(f"command {i}: {type(exc).__name__}")

                started = time.monotonic()
                for block in range(0, args.commands, args.every):
                    t0 = time.monotonic()
                    tasks = []
                    for i in range(block, min(block + args.every, args.commands)):
                        delay = t0 + (i - block) / args.rate - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        tasks.append(asyncio.create_task(send(i)))
                    await asyncio.gather(*tasks)
                    await settle(db_path, lambda: process.poll() is None)
                    done = min(block + args.every, args.commands)
                    samples.append({"commands": done, "rss_mb": round(rss_mb(process.pid), 2)})
                    progress(f"{done:>6} commands  RSS {samples[-1]['rss_mb']:.1f} MB")
                    standins.take_arrivals()  # the stand-ins forget what they recorded, so their memory stays flat
                elapsed = time.monotonic() - started
            rows = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True).execute("SELECT count(*) FROM audit").fetchone()

    peak = max(s["rss_mb"] for s in samples)
    at_warmup = next((s for s in samples if s["commands"] >= args.warmup), samples[0])
    last = samples[-1]
    growth = (last["rss_mb"] - at_warmup["rss_mb"]) / at_warmup["rss_mb"]
    return {
        "config": {**vars(args), "python": platform.python_version(), "machine": platform.machine()},
        "baseline_rss_mb": round(baseline, 2),
        "samples": samples,
        "peak_rss_mb": peak,
        "ratio_last_over_baseline": round(last["rss_mb"] / baseline, 3),
        "warmup_sample": at_warmup,
        "growth_after_warmup": round(growth, 4),
        "under_limit": peak < args.limit_mb,
        "flat": growth < args.flat_margin,
        "audit_rows": int(rows[0]),
        "commands_per_s": round(args.commands / elapsed, 1),
        "errors": len(failures),
        "first_errors": failures[:5],
    }


def table(report: dict[str, Any]) -> str:
    config = report["config"]
    base = report["baseline_rss_mb"]
    lines = [
        f"{config['commands']} commands at {config['rate']:g}/s offered ({report['commands_per_s']:g}/s done), "
        f"{config['rooms']} rooms; RSS before the first command: {base:.1f} MB",
        "",
        "| commands | RSS (MB) | vs. before the first command |",
        "|---|---|---|",
    ]
    for sample in report["samples"]:
        lines.append(f"| {sample['commands']:,} | {sample['rss_mb']:.1f} | {sample['rss_mb'] / base:.2f}x |")
    warm = report["warmup_sample"]
    lines += [
        "",
        f"peak {report['peak_rss_mb']:.1f} MB: {'under' if report['under_limit'] else 'OVER'} "
        f"{config['limit_mb']:g} MB",
        f"after warm-up ({warm['commands']:,} commands, {warm['rss_mb']:.1f} MB) to the end: "
        f"{report['growth_after_warmup']:+.1%}, {'flat' if report['flat'] else 'GROWING'} "
        f"(margin {config['flat_margin']:.0%})",
        f"audit rows: {report['audit_rows']:,}",
    ]
    if report["errors"]:
        lines.append(f"ERRORS: {report['errors']}; first: {report['first_errors']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=20000, help="commands to send")
    parser.add_argument("--every", type=int, default=1000, help="sample the bot's RSS after this many commands")
    parser.add_argument("--warmup", type=int, default=5000, help="the sample that flatness is measured from")
    parser.add_argument("--rate", type=float, default=30.0, help="commands per second, steady")
    parser.add_argument("--rooms", type=int, default=100, help="running rooms the commands cycle over")
    parser.add_argument("--concurrency", type=int, default=8, help="slack.max_concurrent_commands")
    parser.add_argument("--limit-mb", type=float, default=100.0, help="the target for the largest sample")
    parser.add_argument("--flat-margin", type=float, default=0.10, help="allowed growth after warm-up, a fraction")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if min(args.commands, args.every, args.rooms, args.concurrency) < 1 or args.rate <= 0:
        parser.error("--commands, --every, --rooms and --concurrency must be at least 1, --rate positive")

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        report = asyncio.run(run_bench(args, progress))
    except KeyboardInterrupt:
        print("interrupted: the bot and the stand-ins were stopped; no figures.", file=sys.stderr)
        return 130
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
