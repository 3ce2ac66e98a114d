"""What the command log line and the metrics cost a command: the same commands with them off, plain and JSON.

Reproduce the figures (from the repository root, with the venv active):

    . .venv/bin/activate && python -m bench.observability --commands 400 --rounds 7

Three targets in one process, in alternating rounds (off, plain, json, off, ...), each round after a
gc.collect(); a target's rate is the median over its rounds, its ratio that median over the baseline's:

* off (the baseline): a real Runtime whose metric hooks are detached (no command counter, no LiveKit histogram or
  trace callback, no audit histogram) and the root logger at WARNING, so the command line is never formatted.
* plain: every hook attached, the root logger at INFO through the bot's own `configure_logging` (the redacting
  filter included), plain text lines written to os.devnull.
* json: the same with LOG_FORMAT=json.

Each command is `list my-room` through `CommandRunner.execute`, one at a time: ListRooms, ListDispatch and
ListParticipants against the LiveKit stand-in on 127.0.0.1, and one audit row. The audit database is opened with
synchronous=OFF, so a disk sync does not hide what the instrumentation costs (with FULL, as served, it is smaller
still in proportion). The rounds are checked to answer `ok` and to count every command in /metrics' text.
After the rounds, one /metrics exposition is timed (information only).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from dispatch_bot.bot.audit_store import AuditStore
from dispatch_bot.bot.config import load_settings
from dispatch_bot.bot.livekit_gateway import LiveKitGateway
from dispatch_bot.bot.log_redaction import configure_logging, configured_secrets
from dispatch_bot.bot.runtime import Runtime
from dispatch_bot.commands.ports import Actor
from tests.fakes.livekit_server import FakeLiveKit

TARGETS = ("off", "plain", "json")
ACTOR = Actor(source="slack", user_id="U123", user_name="alice", channel_id="C123")


def _attach(runtime: Runtime, on: bool) -> None:
    metrics = runtime.metrics if on else None
    runtime.gateway.metrics = metrics
    runtime.audit.observe_append = runtime.metrics.audit_append.observe if on else None
    runtime.runner.on_finished = runtime.metrics.command_finished if on else None


async def _round(runtime: Runtime, commands: int) -> float:
    started = time.perf_counter()
    for _ in range(commands):
        reply = await runtime.runner.execute(runtime.context(ACTOR), "list my-room")
        if reply.outcome != "ok":
            raise SystemExit(f"a command answered {reply.outcome}: {reply.detail}")
    return commands / (time.perf_counter() - started)


def _commands_counted(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "dispatch_bot_commands_total" and sample.labels.get("action") == "list":
                return float(sample.value)
    return 0.0


async def run(commands: int, rounds: int, folder: Path) -> dict[str, Any]:
    root = logging.getLogger()
    sink = open(os.devnull, "w")  # noqa: SIM115  # closed at the end of the run
    async with FakeLiveKit(job_delay=0.0) as livekit:
        livekit.add_room("my-room", humans=["alice"])
        settings = load_settings(
            None,
            env={"LIVEKIT_URL": livekit.url, "DISPATCH_BOT_DB": str(folder / "audit.db"), "SLACK_BOT_TOKEN": "x"},
        )
        gateway = LiveKitGateway(settings.livekit_url, settings.livekit_api_key, settings.livekit_api_secret)
        runtime = Runtime(settings, gateway, await AuditStore.open(settings.database, synchronous="OFF"))
        handlers = {
            fmt: configure_logging("INFO", configured_secrets(settings), fmt, sink) for fmt in ("plain", "json")
        }
        for handler in handlers.values():
            root.removeHandler(handler)
        rates: dict[str, list[float]] = {t: [] for t in TARGETS}
        instrumented = 0
        try:
            _attach(runtime, False)
            await _round(runtime, max(10, commands // 10))  # warm-up: connections, caches
            for _ in range(rounds):
                for target in TARGETS:
                    _attach(runtime, target != "off")
                    if target != "off":
                        root.addHandler(handlers[target])
                    root.setLevel(logging.INFO if target != "off" else logging.WARNING)
                    gc.collect()
                    rates[target].append(await _round(runtime, commands))
                    if target != "off":
                        root.removeHandler(handlers[target])
                        instrumented += commands
            started = time.perf_counter()
            exposition = (await runtime.metrics.exposition()).decode()
            scrape_ms = (time.perf_counter() - started) * 1000
        finally:
            root.setLevel(logging.WARNING)
            await runtime.close()
            sink.close()
    counted = _commands_counted(exposition)
    if counted != instrumented:
        raise SystemExit(f"/metrics counted {counted} list commands, expected {instrumented}")
    medians = {t: statistics.median(r) for t, r in rates.items()}
    return {
        "config": {"commands_per_round": commands, "rounds": rounds, "audit_synchronous": "OFF"},
        "commands_per_second": medians,
        "ratio_to_off": {t: medians[t] / medians["off"] for t in TARGETS},
        "rounds": rates,
        "metrics_exposition_ms": scrape_ms,
        "metrics_exposition_bytes": len(exposition),
    }


def table(report: dict[str, Any]) -> str:
    lines = [f"{'target':8} {'commands/s':>11} {'ratio':>7}"]
    for target in TARGETS:
        rate = report["commands_per_second"][target]
        lines.append(f"{target:8} {rate:11.1f} {report['ratio_to_off'][target]:7.3f}")
    lines.append(
        f"one /metrics exposition: {report['metrics_exposition_ms']:.2f} ms, {report['metrics_exposition_bytes']} bytes"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.observability", description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=400, help="commands per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per target")
    parser.add_argument("--dir", type=Path, help="folder for the audit database (default: a temporary one)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().handlers[0].setLevel(logging.WARNING)  # the measured INFO lines go to os.devnull only
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        report = asyncio.run(run(args.commands, args.rounds, Path(folder)))
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
