"""Finished work: dispatches end to end at fixed offered rates, against a bare script and a minimal bot.

Reproduce the figures (from the repository root, with the venv active):

    . .venv/bin/activate && python -m bench.end_to_end --rates 50,100,200 --duration 10 --rounds 2

Three kinds of process, as in production: the stand-ins (tests/fakes' LiveKit and Slack, `bench.standins`) in
one; `dispatch-bot serve --http` in another, started exactly as an operator starts it; and this process, the
load generator, open-loop: command i is sent at t0 + i/rate whether or not earlier ones were answered, so a
slow bot gets a backlog instead of a gentler load, and every latency runs from the moment the command was due.

Every command is `/dispatch captions <fresh room>` from its own channel: a room that runs with one person in
it and no agent, so the bot does its full work (ListRooms, the look: ListParticipants and ListDispatch at once,
CreateDispatch, an audit row with its watch, a chat.postMessage in that channel, then a follow-up that polls
LiveKit every `--followup-interval` until the worker's agent joins, a second audit row with the watch marked
present, and a chat.update). Per offered rate the bench reports:

* ack: due time -> the HTTP answer to the signed slash command POST was read;
* reply (completion): due time -> the Slack stand-in recorded the command's chat.postMessage;
* follow-up: due time -> the Slack stand-in recorded its chat.update (the agent has joined);
* completed/s: commands / (last reply - t0);
* CPU per command: user + system CPU of the target's process (/proc), from the first send until every
  follow-up is done, divided by the commands.

Three targets (`--targets`, all by default), each in a process of its own:

* "bare": a plain asyncio script fed at the same offered rate and running at most `--concurrency` commands at
  once (the bot's `slack.max_concurrent_commands`): per command ListRooms, ListDispatch and CreateDispatch with
  livekit-api's `LiveKitAPI`, one INSERT into a plain SQLite table with the bot's PRAGMAs (WAL,
  synchronous=FULL) through aiosqlite, committed, and one chat.postMessage with slack_sdk's `AsyncWebClient`.
  No HTTP, no ack, no follow-up. Its reply time and CPU are measured the same way.
* "minimal" (`bench.minimal_bot`): the bot's external work with the same libraries and no bot logic, driven
  like the bot: an aiohttp.web server checks each signed slash command with slack_sdk's `SignatureVerifier`,
  commits a received record and acks; then, in one of `--concurrency` slots, ListRooms, the look, CreateDispatch,
  one transaction (audit row, watch, received record deleted), chat.postMessage and an UPDATE with its ts; then
  a follow-up polling ListParticipants every `--followup-interval` (the first time one interval after the reply)
  until a new agent appears, one transaction (an UPDATE and an INSERT) and chat.update. Measured exactly as the
  bot: what the bot spends beyond it is the bot's own CPU.
* "bot": `dispatch-bot serve --http`.

Targets run in that order at each rate for `--rounds` rounds after a warm-up of each; ratios are of the medians
over rounds: bot/bare, bot/minimal.

Target (from the issue): bot completed/s >= 0.7x bare at the same load, and under 2 ms of bot CPU per dispatch.
All traffic goes to 127.0.0.1; temporary files are removed at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp

from bench.minimal_bot import MinimalBot
from bench.standins import API_KEY, API_SECRET, BOT_TOKEN, Arrival, StandIns
from dispatch_bot.commands.grammar import GrammarError, parse_duration
from tests.fakes.slack_requests import signed_headers, slash_command_body

SIGNING_SECRET = "bench-signing-secret"
AGENT = "speech-processing"  # what the default alias `captions` resolves to
REQUEST_TIMEOUT = 30.0
SETTLE_TIMEOUT = 120.0
TARGET_RATIO = 0.7
TARGET_CPU_MS = 2.0
REPO = Path(__file__).resolve().parent.parent
TARGETS = ("bare", "minimal", "bot")  # the order they run in
PREFIX = {"bare": "S", "minimal": "M", "bot": "B"}  # of each target's channels


def clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / clock_ticks()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------- the bare script


BARE_TABLE = """CREATE TABLE IF NOT EXISTS work (
    id INTEGER PRIMARY KEY, ts TEXT NOT NULL, channel TEXT NOT NULL, room TEXT NOT NULL, dispatch_id TEXT NOT NULL
)"""


async def bare_run(conn: Connection, livekit_url: str, slack_api_url: str, db_path: str, concurrency: int) -> None:
    import aiosqlite
    from livekit import api
    from slack_sdk.web.async_client import AsyncWebClient

    # The stand-in's dev secret is short; PyJWT would warn on every token (the bot silences it the same way).
    warnings.filterwarnings("ignore", message=".*HMAC key.*", category=UserWarning)
    lk = api.LiveKitAPI(livekit_url, API_KEY, API_SECRET)
    web = AsyncWebClient(token=BOT_TOKEN, base_url=slack_api_url)
    db = await aiosqlite.connect(db_path, isolation_level=None)
    await db.execute("PRAGMA journal_mode = WAL")
    await db.execute("PRAGMA synchronous = FULL")
    await db.execute("PRAGMA busy_timeout = 5000")
    await db.execute(BARE_TABLE)
    slots = asyncio.Semaphore(concurrency)
    failures: list[str] = []

    async def one(channel: str, room: str) -> None:
        async with slots:
            try:
                await lk.room.list_rooms(api.ListRoomsRequest(names=[room]))
                await lk.agent_dispatch.list_dispatch(room)
                created = await lk.agent_dispatch.create_dispatch(
                    api.CreateAgentDispatchRequest(agent_name=AGENT, room=room)
                )
                await db.execute(
                    "INSERT INTO work (ts, channel, room, dispatch_id) VALUES (?, ?, ?, ?)",
                    (time.time(), channel, room, created.id),
                )
                await web.chat_postMessage(channel=channel, text=f"Dispatched {AGENT} to {room}.")
            except Exception as exc:  # reported back, not raised: the bench counts it as an error
                failures.append(f"{type(exc).__name__}: {exc}")

    try:
        while True:
            job = await asyncio.to_thread(conn.recv)
            if job is None:
                return
            rate, commands = job
            cpu = time.process_time()
            tasks: list[asyncio.Task[None]] = []
            due: list[float] = []
            t0 = time.monotonic() + 0.05
            for i, (channel, room) in enumerate(commands):
                at = t0 + i / rate
                delay = at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                due.append(at)
                tasks.append(asyncio.create_task(one(channel, room)))
            await asyncio.gather(*tasks)
            conn.send({"due": due, "cpu": time.process_time() - cpu, "failures": failures[:5], "failed": len(failures)})
            failures.clear()
    finally:
        await db.close()
        await lk.aclose()


def bare_main(conn: Connection, livekit_url: str, slack_api_url: str, db_path: str, concurrency: int) -> None:
    with conn:
        asyncio.run(bare_run(conn, livekit_url, slack_api_url, db_path, concurrency))


class Bare:
    def __init__(self, standins: StandIns, db_path: Path, concurrency: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        args = (child, standins.livekit_url, standins.slack_api_url, str(db_path), concurrency)
        self.process = context.Process(target=bare_main, args=args, daemon=True, name="bench-bare")
        self.process.start()
        child.close()

    async def run(self, rate: float, commands: list[tuple[str, str]]) -> dict[str, Any]:
        await asyncio.to_thread(self._conn.send, (rate, commands))
        answer: dict[str, Any] = await asyncio.to_thread(self._conn.recv)
        return answer

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send(None)
        self.process.join(10)
        if self.process.is_alive():  # only the process this bench started
            self.process.terminate()
            self.process.join(5)
        self._conn.close()


# ---------------------------------------------------------------------------------------- the bot


@contextlib.contextmanager
def bot_process(
    standins: StandIns, tmp: Path, args: argparse.Namespace
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    config = tmp / "dispatch-bot.yaml"
    config.write_text(
        f"slack:\n  max_concurrent_commands: {args.concurrency}\n"
        f"livekit:\n  followup_timeout: 10s\n  followup_interval: {args.followup_interval}\n  request_timeout: 10s\n"
        "limits:\n  per_user_per_minute: 10000\n"  # one simulated person sends every command
    )
    port = free_port()
    env = {
        **os.environ,
        "LIVEKIT_URL": standins.livekit_url,
        "LIVEKIT_API_KEY": API_KEY,
        "LIVEKIT_API_SECRET": API_SECRET,
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": standins.slack_api_url,
        "DISPATCH_BOT_DB": str(tmp / "audit.db"),
        "DISPATCH_BOT_LOG_LEVEL": "WARNING",
    }
    env.pop("SLACK_APP_TOKEN", None)
    command = [sys.executable, "-m", "dispatch_bot.bot.cli", "--config", str(config), "serve", "--http"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    # A session of its own: Ctrl-C in the terminal reaches the bench alone, which then stops the bot itself.
    process = subprocess.Popen(command, cwd=REPO, env=env, start_new_session=True)
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        process.terminate()  # SIGTERM: the bot finishes its commands and stops
        try:
            process.wait(15)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):  # a second Ctrl-C: no more waiting
            process.kill()
            process.wait(5)


async def wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the bot exited with status {process.returncode} before it served /healthz")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url + "/healthz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError("the bot did not serve /healthz within 30 s")


async def drive_bot(url: str, rate: float, commands: list[tuple[str, str]], standins: StandIns) -> dict[str, Any]:
    """Send the commands open-loop at `rate` per second; returns due times, ack latencies and failures."""
    shots = []
    for channel, room in commands:
        body = slash_command_body(f"captions {room}", channel_id=channel, response_url=standins.new_response_url())
        shots.append((body.encode(), signed_headers(body, SIGNING_SECRET)))
    acks = [0.0] * len(shots)
    failures: list[str] = []

    async def send(session: aiohttp.ClientSession, i: int, due: float) -> None:
        data, headers = shots[i]
        try:
            async with session.post(url + "/slack/events", data=data, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    failures.append(f"HTTP {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
        acks[i] = time.monotonic() - due

    connector = aiohttp.TCPConnector(limit=0)  # open loop: never queue a request behind another
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as s:
        tasks: list[asyncio.Task[None]] = []
        due: list[float] = []
        t0 = time.monotonic() + 0.05
        for i in range(len(shots)):
            at = t0 + i / rate
            delay = at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            due.append(at)
            tasks.append(asyncio.create_task(send(s, i, at)))
        await asyncio.gather(*tasks)
    return {"due": due, "acks": acks, "failures": failures[:5], "failed": len(failures)}


async def scrape(url: str) -> dict[tuple[str, str], float]:
    """The bot's step and LiveKit histograms' sums and counts: {(series, label): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as resp:
        text = await resp.text()
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in ("dispatch_bot_command_step_seconds", "dispatch_bot_livekit_call_seconds"):
            continue
        for sample in family.samples:
            if sample.name.endswith(("_sum", "_count")):
                label = sample.labels.get("step") or sample.labels.get("method") or ""
                out[(sample.name, label)] = sample.value
    return out


def breakdown(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float], commands: int
) -> dict[str, dict[str, float]]:
    """Mean ms per occurrence of each step and LiveKit method over a round, and LiveKit calls per command."""
    result: dict[str, dict[str, float]] = {"steps_ms": {}, "livekit_ms": {}, "livekit_calls": {}}
    for (name, label), total in after.items():
        if not name.endswith("_count"):
            continue
        count = total - before.get((name, label), 0.0)
        if count <= 0:
            continue
        base = name.removesuffix("_count")
        seconds = after[(base + "_sum", label)] - before.get((base + "_sum", label), 0.0)
        if base.endswith("command_step_seconds"):
            result["steps_ms"][label] = seconds * 1000 / count
        else:
            result["livekit_ms"][label] = seconds * 1000 / count
            result["livekit_calls"][label] = count / commands
    return result


async def settle(standins: StandIns, expected: int) -> None:
    """Wait until the Slack stand-in has recorded `expected` messages (polled: it lives in another process)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while (got := await asyncio.to_thread(standins.count_arrivals)) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {got} of {expected} replies arrived within {SETTLE_TIMEOUT:g} s")
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------------------------------- measuring


@dataclass
class RoundResult:
    target: str
    rate: float
    round: int
    commands: int
    ack_p50_ms: float
    ack_p99_ms: float
    reply_p50_ms: float
    reply_p99_ms: float
    followup_p50_ms: float
    followup_p99_ms: float
    completed_per_s: float
    cpu_ms_per_command: float
    standins_cpu_ms_per_command: float
    errors: int
    first_error: str
    # The bot's own account from GET /metrics over the round: mean ms per occurrence of each step of a command
    # (queue, command, audit, deliver, thread; watch only when a watch was written on its own) and of each LiveKit
    # method, and LiveKit calls per command.
    steps_ms: dict[str, float] = field(default_factory=dict)
    livekit_ms: dict[str, float] = field(default_factory=dict)
    livekit_calls: dict[str, float] = field(default_factory=dict)


def pct(values: list[float], p: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def summarize(
    target: str, rate: float, number: int, due: list[float], channels: list[str], arrivals: list[Arrival], **extra: Any
) -> RoundResult:
    posted = {a.key: a.at for a in arrivals if a.kind == "chat.postMessage"}
    updated = {a.key: a.at for a in arrivals if a.kind == "chat.update"}
    replies = [(posted[c] - d) * 1000 for c, d in zip(channels, due, strict=True) if c in posted]
    followups = [(updated[c] - d) * 1000 for c, d in zip(channels, due, strict=True) if c in updated]
    last = max((posted[c] for c in channels if c in posted), default=due[0])
    acks = [a * 1000 for a in extra.get("acks", [])]
    return RoundResult(
        target=target,
        rate=rate,
        round=number,
        commands=len(due),
        ack_p50_ms=pct(acks, 50),
        ack_p99_ms=pct(acks, 99),
        reply_p50_ms=pct(replies, 50),
        reply_p99_ms=pct(replies, 99),
        followup_p50_ms=pct(followups, 50),
        followup_p99_ms=pct(followups, 99),
        completed_per_s=len(replies) / max(last - due[0], 1e-9),
        cpu_ms_per_command=extra["cpu"] * 1000 / len(due),
        standins_cpu_ms_per_command=extra["standins_cpu"] * 1000 / len(due),
        errors=extra["failed"] + len(due) - len(replies),
        first_error=(extra["failures"] or [""])[0],
        steps_ms=extra.get("steps_ms", {}),
        livekit_ms=extra.get("livekit_ms", {}),
        livekit_calls=extra.get("livekit_calls", {}),
    )


class Bench:
    """The targets that run (None: not in `--targets`) and the stand-ins they share."""

    def __init__(
        self,
        standins: StandIns,
        bare: Bare | None,
        minimal: MinimalBot | None,
        bot_url: str = "",
        bot_pid: int = 0,
    ) -> None:
        self.standins = standins
        self.bare = bare
        self.minimal = minimal
        self.bot_url = bot_url
        self.bot_pid = bot_pid
        self.counter = 0

    def commands(self, count: int, prefix: str) -> list[tuple[str, str]]:
        """Fresh channels (one per command, so each reply is told apart) and fresh running rooms."""
        out = []
        for _ in range(count):
            self.counter += 1
            out.append((f"C{prefix}{self.counter:07d}", f"e2e-{self.counter}"))
        self.standins.add_rooms([room for _, room in out])
        return out

    async def run(self, target: str, rate: float, count: int, number: int) -> RoundResult:
        commands = self.commands(count, PREFIX[target])
        channels = [c for c, _ in commands]
        standins_cpu = self.standins.cpu()
        if target == "bare":
            assert self.bare is not None
            sent = await self.bare.run(rate, commands)
            await settle(self.standins, count)
        else:  # the bot and the minimal bot are driven and measured alike
            minimal = self.minimal if target == "minimal" else None
            url, pid = (minimal.url, minimal.pid) if minimal is not None else (self.bot_url, self.bot_pid)
            scraped = await scrape(url) if target == "bot" else {}
            cpu = process_cpu(pid)
            sent = await drive_bot(url, rate, commands, self.standins)
            await settle(self.standins, 2 * count)  # a message and its follow-up's update each
            await asyncio.to_thread(time.sleep, 0.2)  # the follow-up's audit row and logging after its update
            sent["cpu"] = process_cpu(pid) - cpu
            if minimal is not None:  # what failed inside it: the load generator sees only its acks
                own = await asyncio.to_thread(minimal.take_failures)
                sent["failures"] += own["failures"]
                sent["failed"] += own["failed"]
            else:
                sent.update(breakdown(scraped, await scrape(url), count))
        sent["standins_cpu"] = self.standins.cpu() - standins_cpu
        arrivals = self.standins.take_arrivals()
        self.standins.close_rooms([room for _, room in commands])
        due = sent.pop("due")
        return summarize(target, rate, number, due, channels, arrivals, **sent)


async def run_bench(args: argparse.Namespace, progress: Any) -> dict[str, Any]:
    results: list[RoundResult] = []
    targets: list[str] = args.targets
    with (
        tempfile.TemporaryDirectory(prefix="dispatch-bot-e2e-") as tmp_name,
        StandIns.start() as standins,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(tmp_name)
        standins.register_worker(AGENT)
        bench = Bench(standins, None, None)
        if "bare" in targets:
            bench.bare = Bare(standins, tmp / "bare.db", args.concurrency)
            stack.callback(bench.bare.close)
        if "minimal" in targets:
            bench.minimal = MinimalBot(
                standins.livekit_url,
                standins.slack_api_url,
                str(tmp / "minimal.db"),
                signing_secret=SIGNING_SECRET,
                agent=AGENT,
                concurrency=args.concurrency,
                followup_interval=parse_duration(args.followup_interval),
            )
            stack.callback(bench.minimal.close)
        if "bot" in targets:
            process, url = stack.enter_context(bot_process(standins, tmp, args))
            await wait_healthy(url, process)
            if args.webhooks:  # as OpenVidu's livekit.yaml would be configured: webhook.urls
                standins.add_webhook_url(url + "/livekit/webhook")
            bench.bot_url, bench.bot_pid = url, process.pid
        for target in targets:
            progress(f"warm-up: {args.warmup} commands to {target}")
            await bench.run(target, min(args.rates), args.warmup, 0)
        for rate in args.rates:
            count = max(2, round(rate * args.duration))
            for number in range(1, args.rounds + 1):
                for target in targets:
                    progress(f"rate {rate:g}/s round {number}/{args.rounds}: {count} commands to {target}")
                    results.append(await bench.run(target, rate, count, number))

    def median(target: str, rate: float, key: str) -> float:
        return statistics.median(float(getattr(r, key)) for r in results if r.target == target and r.rate == rate)

    keys = [
        k
        for k, f in RoundResult.__dataclass_fields__.items()
        if k.endswith(("_ms", "_per_s", "_command")) and f.type == "float"
    ]
    summary: dict[str, dict[str, Any]] = {
        f"{rate:g}": {t: {k: median(t, rate, k) for k in keys} for t in targets} for rate in args.rates
    }
    for cell in summary.values():
        if "bot" not in cell:
            continue
        bot = cell["bot"]
        cell["ratio_completed"] = {
            f"bot/{t}": bot["completed_per_s"] / cell[t]["completed_per_s"] for t in ("bare", "minimal") if t in cell
        }
        if "minimal" in cell:
            cell["ratio_cpu"] = {"bot/minimal": bot["cpu_ms_per_command"] / cell["minimal"]["cpu_ms_per_command"]}
            # what the bot spends beyond the same external calls made with the same libraries
            cell["bot_own_cpu_ms_per_command"] = bot["cpu_ms_per_command"] - cell["minimal"]["cpu_ms_per_command"]
    return {
        "config": {
            "rates": args.rates,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "followup_interval": args.followup_interval,
            "warmup": args.warmup,
            "webhooks": args.webhooks,
            "targets": targets,
        },
        "environment": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "rounds": [asdict(r) for r in results],
        "median_of_rounds": summary,
        "errors": sum(r.errors for r in results),
        "first_errors": [r.first_error for r in results if r.first_error][:5],
    }


def table(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lines = [
        f"end to end: /dispatch captions <fresh room>, open loop, {cfg['duration_s']:g} s per rate, "
        f"{cfg['rounds']} rounds, at most {cfg['concurrency']} commands at once, follow-up every "
        f"{cfg['followup_interval']}{', webhooks on' if cfg.get('webhooks') else ''}; "
        f"{report['environment']['cpus']} CPUs",
        "",
        f"{'target':<8}{'rate':>6}{'rnd':>4}{'ack p50':>9}{'ack p99':>9}{'reply p50':>11}{'reply p99':>11}"
        f"{'f-up p50':>10}{'f-up p99':>10}{'done/s':>8}{'cpu ms':>8}{'stand-in':>9}{'err':>5}",
    ]

    def fmt(value: float, width: int, digits: int = 1) -> str:
        return f"{'-':>{width}}" if value != value else f"{value:>{width}.{digits}f}"  # NaN: not measured

    for r in report["rounds"]:
        lines.append(
            f"{r['target']:<8}{r['rate']:>6g}{r['round']:>4}{fmt(r['ack_p50_ms'], 9)}{fmt(r['ack_p99_ms'], 9)}"
            f"{fmt(r['reply_p50_ms'], 11)}{fmt(r['reply_p99_ms'], 11)}{fmt(r['followup_p50_ms'], 10)}"
            f"{fmt(r['followup_p99_ms'], 10)}{fmt(r['completed_per_s'], 8)}{fmt(r['cpu_ms_per_command'], 8, 2)}"
            f"{fmt(r['standins_cpu_ms_per_command'], 9, 2)}{r['errors']:>5}"
        )
    lines += [
        "",
        "where the bot's commands spent their time (mean ms per occurrence; LiveKit: ms per call x calls per "
        "command, follow-ups' calls included):",
    ]
    for r in report["rounds"]:
        if r["target"] != "bot" or not r["steps_ms"]:
            continue
        steps = " ".join(f"{k} {v:.1f}" for k, v in r["steps_ms"].items())
        calls = " ".join(f"{k} {r['livekit_ms'][k]:.1f}x{v:.1f}" for k, v in r["livekit_calls"].items())
        lines.append(f"  {r['rate']:g}/s round {r['round']}: {steps}; LiveKit {calls}")
    lines += ["", "medians of rounds, per offered rate:"]
    for rate, cell in report["median_of_rounds"].items():
        bot, bare, minimal = cell.get("bot"), cell.get("bare"), cell.get("minimal")
        if bot is not None and bare is not None:
            ratio = cell["ratio_completed"]["bot/bare"]
            lines.append(
                f"  {rate}/s: bot done {bot['completed_per_s']:.1f}/s vs bare {bare['completed_per_s']:.1f}/s "
                f"= {ratio:.2f}x (target >= {TARGET_RATIO}x); reply p50/p99 {bot['reply_p50_ms']:.0f}/"
                f"{bot['reply_p99_ms']:.0f} ms vs {bare['reply_p50_ms']:.0f}/{bare['reply_p99_ms']:.0f} ms; "
                f"ack p50/p99 {bot['ack_p50_ms']:.1f}/{bot['ack_p99_ms']:.1f} ms; bot CPU "
                f"{bot['cpu_ms_per_command']:.2f} ms/command (target < {TARGET_CPU_MS:g}), bare "
                f"{bare['cpu_ms_per_command']:.2f} ms"
            )
        if bot is not None and minimal is not None:
            lines.append(
                f"  {rate}/s: bot CPU {bot['cpu_ms_per_command']:.2f} ms = minimal's "
                f"{minimal['cpu_ms_per_command']:.2f} ms (the same external calls, no bot) + "
                f"{cell['bot_own_cpu_ms_per_command']:.2f} ms of the bot's own "
                f"({cell['ratio_cpu']['bot/minimal']:.2f}x); "
                f"done {bot['completed_per_s']:.1f}/s vs minimal {minimal['completed_per_s']:.1f}/s "
                f"= {cell['ratio_completed']['bot/minimal']:.2f}x; reply p50/p99 {bot['reply_p50_ms']:.0f}/"
                f"{bot['reply_p99_ms']:.0f} ms vs {minimal['reply_p50_ms']:.0f}/{minimal['reply_p99_ms']:.0f} ms; "
                f"f-up p50 {bot['followup_p50_ms']:.0f} vs {minimal['followup_p50_ms']:.0f} ms; ack p50 "
                f"{bot['ack_p50_ms']:.1f} vs {minimal['ack_p50_ms']:.1f} ms"
            )
        if bot is None or (bare is None and minimal is None):  # nothing to compare: each target's own figures
            for target, m in cell.items():
                if target not in TARGETS:  # the ratios, not a target
                    continue
                lines.append(
                    f"  {rate}/s: {target} done {m['completed_per_s']:.1f}/s; reply p50/p99 {m['reply_p50_ms']:.0f}/"
                    f"{m['reply_p99_ms']:.0f} ms; CPU {m['cpu_ms_per_command']:.2f} ms/command"
                )
    lines.append(
        "ack/reply/f-up: ms from the command's due time to its HTTP answer / chat.postMessage / chat.update; "
        "done/s: commands / (last reply - first due); cpu ms: the target's process CPU per command; "
        "stand-in: the stand-ins' CPU per command"
    )
    if report["errors"]:
        lines.append(f"ERRORS: {report['errors']}; first: {report['first_errors']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.end_to_end", description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="50,100,200", help="offered rates, commands per second, comma-separated")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per rate and target")
    parser.add_argument("--rounds", type=int, default=1, help="rounds per rate; each runs every target once")
    parser.add_argument(
        "--targets", default=",".join(TARGETS), help=f"which to run, comma-separated, of {', '.join(TARGETS)}"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="commands at once (slack.max_concurrent_commands)")
    parser.add_argument("--followup-interval", default="20ms", help="the bot's livekit.followup_interval")
    parser.add_argument("--warmup", type=int, default=50, help="uncounted commands per target before measuring")
    parser.add_argument(
        "--webhooks", action="store_true", help="the LiveKit stand-in sends its signed webhooks to the bot"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    try:
        args.rates = [float(r) for r in args.rates.split(",")]
    except ValueError:
        parser.error("--rates is a comma-separated list of numbers, like 50,100,200")
    chosen = {t.strip() for t in args.targets.split(",") if t.strip()}
    if not chosen or chosen - set(TARGETS):
        parser.error(f"--targets is a comma-separated list of {', '.join(TARGETS)}, like bare,bot")
    args.targets = [t for t in TARGETS if t in chosen]
    try:
        if parse_duration(args.followup_interval) <= 0:
            raise GrammarError("zero")
    except GrammarError:
        parser.error("--followup-interval is a positive duration, like 20ms or 1s")
    if min(args.rates) <= 0 or args.duration <= 0 or args.rounds < 1 or args.concurrency < 1 or args.warmup < 2:
        parser.error("rates and --duration must be positive, --rounds and --concurrency at least 1, --warmup 2")

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    report = asyncio.run(run_bench(args, progress))
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
