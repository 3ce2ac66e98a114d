"""Killed mid-stream: every command the bot acknowledged has an audit row after a SIGKILL and a restart.

Reproduce the figures (from the repository root, with the venv active):

    . .venv/bin/activate && python -m bench.kill_restart --commands 500 --rounds 5

Each round starts `dispatch-bot serve --http` in a process of its own, against the LiveKit and Slack stand-ins in
another (`bench.standins`), and sends `--commands` signed slash commands at once, alternating a real dispatch
(`captions <room>`, with its follow-up) and `list <room>`, every command naming a room of its own so that its row
can be found by its text. Some time after the first was sent, while some commands have finished, some are
running and some wait for a slot (or for their ack), the bot gets SIGKILL: no shutdown, no chance to
write anything more. The requests still open then fail, as Slack would see them. The rounds spread their kills
evenly up to `--kill-after` seconds (5 rounds, 3 s: at 0.6, 1.2, 1.8, 2.4 and 3 s), from the middle of the
acknowledgements to near the end of the stream.

Then the bot is started again on the same database. It must give every acknowledged command that had no row an
`interrupted` row and tell its requester, before it serves /healthz, and never run the command again. After it
stops, this process reads the database (read-only) and counts:

- acknowledged commands without an audit row (the figure that must be 0);
- rows per outcome, and how many of the acknowledged commands ended `interrupted`;
- acknowledged commands whose requester heard nothing at all (neither the reply nor the interrupted notice:
  killed after the row was written and before the reply reached Slack; the row says what happened);
- `dispatch-bot audit verify` on the file: the chain must verify.

There is no baseline to compare with: the figures are counts, and the verdict is exact.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.end_to_end import REPO, SIGNING_SECRET, bot_process, wait_healthy
from bench.standins import StandIns
from tests.fakes.slack_requests import signed_headers, slash_command_body


def command_text(round_no: int, i: int) -> str:
    room = f"kill-{round_no}-{i}"
    return f"captions {room}" if i % 2 == 0 else f"list {room}"


async def stream_and_kill(
    url: str, process: subprocess.Popen[bytes], standins: StandIns, round_no: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Send every command at once; SIGKILL the bot partway (its share of `kill_after`)."""
    acked: dict[str, tuple[str, str]] = {}  # text -> (response_url path, channel)
    refused_busy: list[str] = []
    failed = 0
    killed_at = 0.0
    started = time.monotonic()

    async def send(session: aiohttp.ClientSession, i: int) -> None:
        nonlocal failed
        text = command_text(round_no, i)
        response_url = standins.new_response_url()
        channel = f"CK{round_no}X{i}"
        body = slash_command_body(text, channel_id=channel, response_url=response_url)
        headers = signed_headers(body, SIGNING_SECRET)
        try:
            async with session.post(url + "/slack/events", data=body, headers=headers) as r:
                answer = await r.text()
                if r.status != 200:
                    failed += 1
                    return
        except (aiohttp.ClientError, TimeoutError):
            failed += 1  # not acknowledged: Slack would tell the person the command failed
            return
        if "busy" in answer:  # refused in its ack (slack.ack_timeout): told, not run, no row owed
            refused_busy.append(text)
            return
        acked[text] = ("/" + response_url.split("/", 3)[3], channel)

    async def kill() -> None:
        nonlocal killed_at
        await asyncio.sleep(args.kill_after * (round_no + 1) / args.rounds)
        killed_at = time.monotonic() - started
        os.kill(process.pid, signal.SIGKILL)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        killer = asyncio.create_task(kill())
        await asyncio.gather(*(send(session, i) for i in range(args.commands)))
        await killer
    process.wait(10)
    return {"acked": acked, "refused_busy": len(refused_busy), "failed": failed, "killed_at_s": round(killed_at, 3)}


def read_rows(db_path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10) as db:
        return [(str(text), str(outcome)) for text, outcome in db.execute("SELECT raw_text, outcome FROM audit")]


def verify(tmp: Path) -> tuple[int, str]:
    env = {**os.environ, "DISPATCH_BOT_DB": str(tmp / "audit.db"), "DISPATCH_BOT_LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "dispatch_bot.bot.cli", "--config", str(tmp / "dispatch-bot.yaml")]
    proc = subprocess.run([*command, "audit", "verify"], cwd=REPO, env=env, capture_output=True, text=True)
    return proc.returncode, (proc.stdout + proc.stderr).strip().splitlines()[-1] if proc.stdout or proc.stderr else ""


async def one_round(round_no: int, args: argparse.Namespace, progress: Any) -> dict[str, Any]:
    bot_args = argparse.Namespace(concurrency=args.concurrency, followup_interval="20ms")
    with StandIns.start() as standins, tempfile.TemporaryDirectory(prefix="dispatch-bench-") as tmp_name:
        tmp = Path(tmp_name)
        standins.register_worker("speech-processing")
        with bot_process(standins, tmp, bot_args) as (process, url):
            await wait_healthy(url, process)
            sent = await stream_and_kill(url, process, standins, round_no, args)
        progress(
            f"round {round_no + 1}: {len(sent['acked'])} acknowledged, killed after {sent['killed_at_s']:.2f} s; "
            "starting again"
        )
        with bot_process(standins, tmp, bot_args) as (process, url):
            await wait_healthy(url, process)  # the interrupted commands are recorded before it serves
        arrivals = standins.take_arrivals()
        rows = read_rows(tmp / "audit.db")
        code, verdict = verify(tmp)

    acked: dict[str, tuple[str, str]] = sent["acked"]
    outcomes: dict[str, list[str]] = {}
    for text, outcome in rows:
        outcomes.setdefault(text, []).append(outcome)
    heard = {a.key for a in arrivals}
    missing = [text for text in acked if text not in outcomes]
    never_told = [text for text, (path, channel) in acked.items() if path not in heard and channel not in heard]
    by_outcome: dict[str, int] = {}
    for _, outcome in rows:
        by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
    return {
        "round": round_no + 1,
        "killed_at_s": sent["killed_at_s"],
        "acknowledged": len(acked),
        "not_acknowledged": sent["failed"],
        "refused_busy_in_ack": sent["refused_busy"],
        "acknowledged_without_row": len(missing),
        "first_without_row": missing[:5],
        "acknowledged_interrupted": sum(1 for text in acked if "interrupted" in outcomes.get(text, [])),
        "acknowledged_never_told": len(never_told),
        "rows_by_outcome": by_outcome,
        "verify_exit": code,
        "verify": verdict,
    }


async def run_bench(args: argparse.Namespace, progress: Any) -> dict[str, Any]:
    rounds = []
    for round_no in range(args.rounds):
        rounds.append(await one_round(round_no, args, progress))
    return {
        "config": {**vars(args), "python": platform.python_version(), "machine": platform.machine()},
        "rounds": rounds,
        "acknowledged_without_row": sum(r["acknowledged_without_row"] for r in rounds),
        "chains_verified": sum(1 for r in rounds if r["verify_exit"] == 0),
    }


def table(report: dict[str, Any]) -> str:
    config = report["config"]
    lines = [
        f"{config['commands']} commands at once per round, SIGKILL up to {config['kill_after']:g} s after the first, "
        f"{config['rounds']} rounds",
        "",
        "| round | killed after | acknowledged | without a row | interrupted | never told | rows by outcome | verify |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rounds"]:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(r["rows_by_outcome"].items()))
        lines.append(
            f"| {r['round']} | {r['killed_at_s']:.2f} s | {r['acknowledged']} | {r['acknowledged_without_row']} | "
            f"{r['acknowledged_interrupted']} | {r['acknowledged_never_told']} | {outcomes} | "
            f"{'intact' if r['verify_exit'] == 0 else 'FAILED'} |"
        )
    lines += [
        "",
        f"acknowledged commands without a row: {report['acknowledged_without_row']} (must be 0); "
        f"chains verified: {report['chains_verified']} of {len(report['rounds'])}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kill_restart", description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=500, help="commands sent at once in each round")
    parser.add_argument("--rounds", type=int, default=5, help="kill-and-restart rounds")
    parser.add_argument("--kill-after", type=float, default=3.0, help="the last round's SIGKILL, s after its start")
    parser.add_argument("--concurrency", type=int, default=8, help="slack.max_concurrent_commands")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if min(args.commands, args.rounds, args.concurrency) < 1 or args.kill_after < 0:
        parser.error("--commands, --rounds and --concurrency must be at least 1, --kill-after not negative")

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        report = asyncio.run(run_bench(args, progress))
    except KeyboardInterrupt:
        print("interrupted: the bot and the stand-ins were stopped; no figures.", file=sys.stderr)
        return 130
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0 if report["acknowledged_without_row"] == 0 and report["chains_verified"] == args.rounds else 1


if __name__ == "__main__":
    sys.exit(main())
