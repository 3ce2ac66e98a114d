"""Agent supervision: LiveKit webhooks handled per second, webhook-to-alert latency, and what one poll costs.

Reproduce the figures (from the repository root, with the venv active):

    . .venv/bin/activate && python -m bench.supervision all

or one section at a time: `python -m bench.supervision throughput|latency|poll [options]` (`--help` for each).

Where things run: the LiveKit and Slack stand-ins (tests/fakes) run in a process of their own (the "stage"),
driven over a pipe, so their work does not share the bot's CPU time; the bot (the real
`SlackTransport(runtime).web_app()` with `Runtime.open(load_settings(...))`, a temporary YAML config, a temporary
SQLite audit database, and supervision running as `serve` runs it) and each section's baseline share the bench's
process and event loop; the load generator of bench/ack_latency.py runs in a third process. All traffic goes to
127.0.0.1. Every figure is the median over rounds (targets alternate round by round: baseline, bot, baseline, ...),
with the spread (min..max over rounds) next to it, and a ratio against the baseline measured in the same run.

* throughput: signed webhooks (protojson participant_joined / participant_left events in the rooms the bot
  watches: a person 4 times in 5, else an agent the bot does not watch; each with its own id, signed with
  tests/fakes' `sign_webhook` as the server signs them) sent by the load generator at a fixed concurrency to
  the bot's `POST /livekit/webhook` and, as the baseline, to a bare aiohttp handler that only calls
  livekit-api's `WebhookReceiver.receive` and answers 200. Same bodies, same client. Reported: webhooks per
  second, bot/bare (goal >= 0.7). The bot answers 200 at once and handles each event after (dedup by id, a look
  at the room); how long after a round's last answer until everything was handled (`supervisor.settled()`),
  and the LiveKit calls those looks made, are reported separately.
* latency: N rooms, each with a person and an agent the bot dispatched (a slash command) and watches; one room at
  a time, the stage makes the agent leave (CONNECTION_TIMEOUT), which sends the participant_left webhook to the
  bot, and times, on the stage's clock, from that moment until the Slack stand-in has received the alert's
  chat.postMessage. Baseline: a bare relay that verifies the same webhook with `WebhookReceiver`, answers 200 and
  posts one chat.postMessage with slack_sdk (its own LiveKit stand-in, in the same stage process). Reported:
  p50/p99 of each and the ratios; the issue's bound is 3 s.
* poll: the bot watches --rooms rooms (default 100, one agent each). Each round counts the LiveKit calls of one
  `supervisor.poll_once()` on the stand-in's request record: exactly 1 ListRooms + one ListParticipants per room,
  anything more fails the bench. Then the slash-command ack p50/p99 (signed `list <room>` commands into
  /slack/events, as bench/ack_latency.py sends them) with no poll running (idle) and with polls running back to
  back (polling). Reported: polling/idle p99 (goal: within 20%, i.e. <= 1.2).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from livekit import api
from livekit.protocol.models import ParticipantInfo, Room
from livekit.protocol.webhook import WebhookEvent
from slack_sdk.web.async_client import AsyncWebClient

from bench.ack_latency import (
    BOT_ACK_MARK,
    Fired,
    InProcessGenerator,
    Job,
    LoadGenerator,
    SeparateProcessGenerator,
    Shot,
    serve,
)
from dispatch_bot.bot.config import load_settings
from dispatch_bot.bot.runtime import Runtime
from dispatch_bot.bot.slack_app import SlackTransport
from dispatch_bot.bot.supervisor import Supervisor
from tests.fakes.livekit_server import FakeLiveKit
from tests.fakes.livekit_webhooks import CONTENT_TYPE, serialize_event, sign_webhook
from tests.fakes.slack_requests import signed_headers, slash_command_body
from tests.fakes.slack_server import FakeSlack

API_KEY = "devkey"
API_SECRET = "secret"
SIGNING_SECRET = "bench-signing-secret"
BOT_TOKEN = "xoxb-bench-token"
AGENT = "speech-processing"  # what the default alias `captions` resolves to
NOTETAKER = "notetaker"  # an agent the bot does not watch, coming and going in the throughput section
WAIT = 120.0  # seconds any one wait may take before the bench gives up (it must stop by itself)
TARGET_THROUGHPUT_RATIO = 0.7
TARGET_ALERT_S = 3.0
TARGET_ACK_P99_RATIO = 1.2

# Short follow-ups as in tests/conftest.py, a longer LiveKit timeout for backlogs, and polls far apart: the
# poll section runs its polls itself, the others measure what webhooks do.
FOLLOWUP_TIMEOUT = 2.0  # seconds
CONFIG_YAML = (
    f"livekit:\n  followup_timeout: {FOLLOWUP_TIMEOUT:g}s\n  followup_interval: 20ms\n  request_timeout: 10s\n"
    "limits:\n  per_user_per_minute: 10000\n"  # one simulated person sends every command
    "watch:\n  poll_interval: 1h\n"
)


# ---------------------------------------------------------------------------------------- the stage process


class Stage:
    """The stand-ins, in their own process: `bot` is the bot's LiveKit, `relay` the baseline relay's."""

    def __init__(self, bot: FakeLiveKit, relay: FakeLiveKit, slack: FakeSlack) -> None:
        self.livekit = {"bot": bot, "relay": relay}
        self.slack = slack
        self.workers: set[str] = set()

    async def urls(self) -> dict[str, str]:
        return {"bot": self.livekit["bot"].url, "relay": self.livekit["relay"].url, "slack": self.slack.api_url}

    async def setup(self, which: str, rooms: list[str], agents: bool, webhook_url: str) -> None:
        livekit = self.livekit[which]
        if which not in self.workers:
            self.workers.add(which)
            livekit.register_worker(AGENT)
        if webhook_url:
            livekit.add_webhook_url(webhook_url)
        for room in rooms:
            livekit.add_room(room, humans=["alice"], agents=[AGENT] if agents else None)

    async def response_urls(self, count: int) -> list[str]:
        return [self.slack.new_response_url() for _ in range(count)]

    async def slack_counts(self) -> dict[str, int]:
        return {
            "chat.postMessage": len(self.slack.calls("chat.postMessage")),
            "chat.update": len(self.slack.calls("chat.update")),
            "responses": len(self.slack.responses),
        }

    async def wait_slack(self, at_least: dict[str, int]) -> None:
        deadline = time.monotonic() + WAIT
        while any(v > n for v, n in zip(at_least.values(), (await self.slack_counts()).values(), strict=True)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"Slack stand-in: wanted {at_least}, has {await self.slack_counts()}")
            await asyncio.sleep(0.02)

    async def livekit_calls(self, which: str) -> dict[str, int]:
        return dict(Counter(r.method for r in self.livekit[which].requests))

    async def clear(self) -> None:
        """Forget recorded requests, so the stage's heap does not grow round after round."""
        for livekit in self.livekit.values():
            livekit.requests.clear()
        self.slack.web_calls.clear()
        self.slack.responses.clear()

    async def webhooks_idle(self) -> None:
        for livekit in self.livekit.values():
            await livekit.wait_webhooks_idle(WAIT)

    async def wait_agents(self, which: str, rooms: list[str]) -> None:
        livekit = self.livekit[which]
        await livekit.wait_for(lambda: all(livekit.agent_participants(r) for r in rooms), WAIT)

    async def depart(self, which: str, rooms: list[str]) -> list[float]:
        """One room at a time: its agent leaves; seconds until the alert naming the room reached Slack."""
        latencies: list[float] = []
        for room in rooms:
            posted = len(self.slack.calls("chat.postMessage"))
            started = time.perf_counter()
            self.livekit[which].agent_leaves(room, AGENT, reason="CONNECTION_TIMEOUT")
            call = await self.slack.wait_for_web_call("chat.postMessage", count=posted + 1, timeout=WAIT)
            latencies.append(time.perf_counter() - started)
            text = json.dumps(call.params)
            if room not in text:
                raise RuntimeError(f"the message after {room}'s agent left is not about it: {text[:300]}")
        return latencies

    async def close_rooms(self, which: str, rooms: list[str]) -> None:
        for room in rooms:
            with contextlib.suppress(KeyError):
                self.livekit[which].close_room(room)


async def _stage_main(conn: Connection) -> None:
    async with (
        FakeLiveKit(API_KEY, API_SECRET, job_delay=0.02, unavailable_delay=0.05) as bot,
        FakeLiveKit(API_KEY, API_SECRET, job_delay=0.02, unavailable_delay=0.05) as relay,
        FakeSlack(bot_token=BOT_TOKEN) as slack,
    ):
        stage = Stage(bot, relay, slack)
        while True:
            request = await asyncio.to_thread(conn.recv)
            if request is None:
                return
            name, args = request
            try:
                answer: Any = await getattr(stage, name)(*args)
            except Exception as exc:  # handed back to the bench, which raises it
                answer = StageError(f"{name}: {type(exc).__name__}: {exc}")
            conn.send(answer)


def _stage_process(conn: Connection) -> None:
    with conn:
        asyncio.run(_stage_main(conn))


@dataclass
class StageError:
    message: str


class StageClient:
    """Calls the stage's methods by name, one at a time."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_stage_process, args=(child,), daemon=True, name="bench-stage")
        self._process.start()
        child.close()
        self._lock = asyncio.Lock()

    async def __call__(self, name: str, *args: Any) -> Any:
        async with self._lock:
            await asyncio.to_thread(self._conn.send, (name, args))
            answer = await asyncio.to_thread(self._conn.recv)
        if isinstance(answer, StageError):
            raise RuntimeError(f"stage failed: {answer.message}")
        return answer

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send(None)
        self._process.join(10)
        if self._process.is_alive():  # only the process this bench started
            self._process.terminate()
            self._process.join(5)
        self._conn.close()


# ---------------------------------------------------------------------------------------- the bot and baselines


@dataclass
class Bot:
    runtime: Runtime
    supervisor: Supervisor
    url: str
    http: aiohttp.ClientSession


@contextlib.asynccontextmanager
async def open_bot(stage: StageClient) -> AsyncIterator[Bot]:
    """The bot's real HTTP app with supervision running, talking to the stage's stand-ins."""
    urls = await stage("urls")
    with tempfile.TemporaryDirectory(prefix="dispatch-bot-bench-") as tmp:
        config = Path(tmp) / "dispatch-bot.yaml"
        config.write_text(CONFIG_YAML)
        env = {
            "LIVEKIT_URL": urls["bot"],
            "LIVEKIT_API_KEY": API_KEY,
            "LIVEKIT_API_SECRET": API_SECRET,
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": urls["slack"],
            "DISPATCH_BOT_DB": str(Path(tmp) / "audit.db"),
        }
        runtime = await Runtime.open(load_settings(str(config), env=env))
        supervisor = runtime.supervisor
        if supervisor is None:
            raise RuntimeError("supervision is off in the bench's config")
        transport = SlackTransport(runtime)
        runner, url = await serve(transport.web_app())
        stop = asyncio.Event()
        task = asyncio.create_task(supervisor.run(stop))
        await supervisor.wait_polls(1)
        gc.freeze()  # as `dispatch-bot serve` does once it has started
        try:
            async with aiohttp.ClientSession() as http:
                yield Bot(runtime, supervisor, url, http)
        finally:
            stop.set()
            await task
            await transport.aclose()
            await runner.cleanup()
            await runtime.close()


async def dispatch_all(bot: Bot, stage: StageClient, rooms: Sequence[str]) -> None:
    """`captions <room>` for every room, 10 at a time; returns once every follow-up saw its agent join."""
    before = await stage("slack_counts")
    urls = await stage("response_urls", len(rooms))
    gate = asyncio.Semaphore(10)

    async def one(room: str, response_url: str) -> None:
        body = slash_command_body(f"captions {room}", response_url=response_url)
        async with (
            gate,
            bot.http.post(bot.url + "/slack/events", data=body, headers=signed_headers(body, SIGNING_SECRET)) as resp,
        ):
            if resp.status != 200:
                raise RuntimeError(f"captions {room}: HTTP {resp.status}")

    await asyncio.gather(*(one(room, url) for room, url in zip(rooms, urls, strict=True)))
    done = {k: v + len(rooms) for k, v in before.items() if k in ("chat.postMessage", "chat.update")}
    await stage("wait_slack", {**done, "responses": before["responses"]})
    await settle(bot, stage)


async def settle(bot: Bot, stage: StageClient) -> None:
    await stage("webhooks_idle")
    await asyncio.wait_for(bot.supervisor.settled(), WAIT)


def bare_webhook_app(*, relay_to: str = "") -> web.Application:
    """Verifies with livekit-api's WebhookReceiver and answers 200; with relay_to, posts an agent's departure."""
    receiver = api.WebhookReceiver(api.TokenVerifier(API_KEY, API_SECRET))
    slack = AsyncWebClient(token=BOT_TOKEN, base_url=relay_to) if relay_to else None
    tasks: set[asyncio.Task[Any]] = set()

    async def receive(request: web.Request) -> web.Response:
        event = receiver.receive(await request.text(), request.headers.get("Authorization", ""))
        if slack is not None and event.event == "participant_left" and event.participant.kind == ParticipantInfo.AGENT:
            text = f"{event.participant.attributes.get('lk.agent_name', '')} left {event.room.name}"
            task = asyncio.create_task(slack.chat_postMessage(channel="C123", text=text))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        return web.Response(status=200, text="ok")

    application = web.Application()
    application.router.add_post("/livekit/webhook", receive)
    return application


# ---------------------------------------------------------------------------------------- figures


def quantile(values: Sequence[float], q: int) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def environment(generator: LoadGenerator | None) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_generator": generator.description if generator else "none",
        "stand-ins": "LiveKit and Slack stand-ins in their own process; bot and baseline share one event loop",
    }


# ---------------------------------------------------------------------------------------- 1. throughput


def webhook_shots(rooms: Sequence[str], count: int, start: int) -> list[Shot]:
    """Someone joins a room, then leaves it: a person 4 times in 5, else an agent the bot does not watch. As the
    server sends those events: protojson, signed, each with its own id."""
    shots: list[Shot] = []
    now = int(time.time())
    for i in range(start, start + count):
        pair = i // 2  # events 2k and 2k+1: the same participant joins, then leaves, the same room
        room = rooms[pair % len(rooms)]
        agent = pair % 5 == 4
        identity = f"agent-AJ_bench{pair:06d}" if agent else f"guest-{pair}"
        participant = ParticipantInfo(
            sid=f"PA_bench{pair:08d}", identity=identity, name=identity,
            kind=ParticipantInfo.AGENT if agent else ParticipantInfo.STANDARD,
            attributes={"lk.agent_name": NOTETAKER} if agent else {},
            state=ParticipantInfo.ACTIVE if i % 2 == 0 else ParticipantInfo.DISCONNECTED, joined_at=now,
        )  # fmt: skip
        event = WebhookEvent(
            id=f"EV_bench{i:010d}",
            event="participant_joined" if i % 2 == 0 else "participant_left",
            created_at=now,
            room=Room(sid=f"RM_{room}", name=room, num_participants=2, creation_time=now),
            participant=participant,
        )
        body = serialize_event(event)
        headers = {"Authorization": sign_webhook(body, API_KEY, API_SECRET), "Content-Type": CONTENT_TYPE}
        shots.append((body, headers))
    return shots


async def bench_throughput(
    args: argparse.Namespace, stage: StageClient, generator: LoadGenerator, progress: Callable[[str], None]
) -> dict[str, Any]:
    rooms = [f"watched-{i}" for i in range(args.rooms)]
    await stage("setup", "bot", rooms, False, "")
    rounds: list[dict[str, Any]] = []
    problems: list[str] = []
    bare_runner, bare_url = await serve(bare_webhook_app())
    try:
        async with open_bot(stage) as bot:
            await dispatch_all(bot, stage, rooms)
            sent = 0

            async def run(target: str, count: int) -> tuple[Fired, float]:
                nonlocal sent
                shots = webhook_shots(rooms, count, sent)
                sent += count
                url = (bot.url if target == "bot" else bare_url) + "/livekit/webhook"
                fired = await generator.run(Job(url, shots, args.concurrency, ""))
                started = time.perf_counter()
                await bot.supervisor.settled()
                return fired, time.perf_counter() - started

            for target in ("bare", "bot"):
                progress(f"throughput warm-up: {args.warmup} webhooks to {target}")
                await run(target, args.warmup)
            for number in range(1, args.rounds + 1):
                for target in ("bare", "bot"):
                    progress(f"throughput round {number}/{args.rounds}: {args.requests} webhooks to {target}")
                    await stage("clear")
                    gc.collect()
                    fired, settled = await run(target, args.requests)
                    if fired.first_problem:
                        problems.append(f"{target} round {number}: {fired.first_problem}")
                    ms = [s * 1000 for s in fired.latencies]
                    rounds.append({
                        "target": target, "round": number, "per_second": len(ms) / fired.wall,
                        "p50_ms": quantile(ms, 50), "p99_ms": quantile(ms, 99),
                        "errors": fired.bad + fired.failed, "settled_s": settled if target == "bot" else 0.0,
                        "livekit_calls": await stage("livekit_calls", "bot"),
                    })  # fmt: skip
    finally:
        await bare_runner.cleanup()

    def of(target: str, key: str) -> list[float]:
        return [r[key] for r in rounds if r["target"] == target]

    summary = {t: {k: spread(of(t, k)) for k in ("per_second", "p50_ms", "p99_ms")} for t in ("bare", "bot")}
    ratio = summary["bot"]["per_second"]["median"] / summary["bare"]["per_second"]["median"]
    per_round = [b / a for a, b in zip(of("bare", "per_second"), of("bot", "per_second"), strict=True)]
    return {
        "config": {
            "requests": args.requests,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "watched_rooms": args.rooms,
            "warmup_per_target": args.warmup,
        },
        "rounds": rounds,
        "summary": summary,
        "ratio_bot_over_bare": ratio,
        "ratio_per_round": spread(per_round),
        "bot_settled_s": spread(of("bot", "settled_s")),
        "target_ratio_at_least": TARGET_THROUGHPUT_RATIO,
        "target_met": ratio >= TARGET_THROUGHPUT_RATIO,
        "errors": {"count": sum(int(r["errors"]) for r in rounds), "first": problems[:5]},
    }


def throughput_table(report: dict[str, Any]) -> list[str]:
    cfg = report["config"]
    lines = [
        f"1. signed webhooks per second: {cfg['requests']} per round x {cfg['rounds']} rounds, "
        f"{cfg['concurrency']} concurrent, people (4/5) and an unwatched agent (1/5) "
        f"joining/leaving {cfg['watched_rooms']} watched rooms",
        f"{'target':<8}{'round':>6}{'webhooks/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'settled s':>11}"
        "  LiveKit calls after the acks",
    ]
    for r in report["rounds"]:
        calls = ", ".join(f"{k} {v}" for k, v in sorted(r["livekit_calls"].items())) if r["target"] == "bot" else ""
        settled = f"{r['settled_s']:>11.2f}" if r["target"] == "bot" else " " * 11
        lines.append(
            f"{r['target']:<8}{r['round']:>6}{r['per_second']:>12.0f}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}"
            f"{r['errors']:>8}{settled}  {calls}"
        )
    s = report["summary"]
    for t in ("bare", "bot"):
        p = s[t]["per_second"]
        lines.append(f"{t:<8}median {p['median']:>10.0f}/s (rounds {p['min']:.0f}..{p['max']:.0f})")
    q = report["ratio_per_round"]
    settled = report["bot_settled_s"]
    lines += [
        f"bot/bare: {report['ratio_bot_over_bare']:.2f}x (per round {q['min']:.2f}..{q['max']:.2f}); "
        f"goal >= {TARGET_THROUGHPUT_RATIO}: {'met' if report['target_met'] else 'MISSED'}",
        f"bot: every event handled {settled['median']:.2f} s after a round's last answer "
        f"(rounds {settled['min']:.2f}..{settled['max']:.2f})",
    ]
    return lines


# ---------------------------------------------------------------------------------------- 2. latency


async def bench_latency(
    args: argparse.Namespace, stage: StageClient, progress: Callable[[str], None]
) -> dict[str, Any]:
    urls = await stage("urls")
    samples: dict[str, list[float]] = {"relay": [], "bot": []}
    per_round: list[dict[str, Any]] = []
    relay_runner, relay_url = await serve(bare_webhook_app(relay_to=urls["slack"]))
    try:
        async with open_bot(stage) as bot:
            await stage("setup", "bot", [], False, bot.url + "/livekit/webhook")
            await stage("setup", "relay", [], False, relay_url + "/livekit/webhook")
            alerts_before = len([r async for r in bot.runtime.audit.rows() if r.action == "alert"])
            for number in range(1, args.rounds + 1):
                rooms = [f"r{number}-{i}" for i in range(args.rooms)]
                progress(f"latency round {number}/{args.rounds}: {args.rooms} departures to relay, then bot")
                await stage("setup", "relay", rooms, True, "")
                await stage("wait_agents", "relay", rooms)
                await stage("setup", "bot", rooms, False, "")
                await dispatch_all(bot, stage, rooms)
                await stage("clear")
                gc.collect()
                for target in ("relay", "bot"):
                    seconds: list[float] = await stage("depart", target, rooms)
                    samples[target] += seconds
                    ms = [s * 1000 for s in seconds]
                    per_round.append({"target": target, "round": number, "p50_ms": quantile(ms, 50),
                                      "p99_ms": quantile(ms, 99), "max_ms": max(ms)})  # fmt: skip
                await settle(bot, stage)
                await stage("close_rooms", "relay", rooms)
                await stage("close_rooms", "bot", rooms)
                await settle(bot, stage)
            alerts = len([r async for r in bot.runtime.audit.rows() if r.action == "alert"]) - alerts_before
    finally:
        await relay_runner.cleanup()
    figures = {
        t: {"p50_ms": quantile([s * 1000 for s in v], 50), "p99_ms": quantile([s * 1000 for s in v], 99)}
        for t, v in samples.items()
    }
    departures = args.rooms * args.rounds
    return {
        "config": {"rooms": args.rooms, "rounds": args.rounds, "departures_per_target": departures},
        "rounds": per_round,
        "all_departures": figures,
        "ratio_bot_over_relay": {k: figures["bot"][k] / figures["relay"][k] for k in ("p50_ms", "p99_ms")},
        "p99_spread_over_rounds_ms": {
            t: spread([r["p99_ms"] for r in per_round if r["target"] == t]) for t in ("relay", "bot")
        },
        "bot_alert_audit_rows": alerts,
        "target_s": TARGET_ALERT_S,
        "target_met": figures["bot"]["p99_ms"] <= TARGET_ALERT_S * 1000 and alerts == departures,
    }


def latency_table(report: dict[str, Any]) -> list[str]:
    cfg = report["config"]
    lines = [
        f"2. webhook-to-alert latency: {cfg['rooms']} rooms x {cfg['rounds']} rounds, one departure at a time "
        "(participant_left sent by the stand-in -> chat.postMessage received by the Slack stand-in)",
        f"{'target':<8}{'round':>6}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}",
    ]
    for r in report["rounds"]:
        lines.append(f"{r['target']:<8}{r['round']:>6}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['max_ms']:>9.1f}")
    f, q = report["all_departures"], report["ratio_bot_over_relay"]
    for t in ("relay", "bot"):
        s = report["p99_spread_over_rounds_ms"][t]
        lines.append(
            f"{t:<8}all {cfg['departures_per_target']}: p50 {f[t]['p50_ms']:.1f} ms, p99 {f[t]['p99_ms']:.1f} ms "
            f"(round p99 {s['min']:.1f}..{s['max']:.1f})"
        )
    lines += [
        f"bot/relay: p50 {q['p50_ms']:.2f}x, p99 {q['p99_ms']:.2f}x; alert audit rows {report['bot_alert_audit_rows']}"
        f" for {cfg['departures_per_target']} departures; bound {TARGET_ALERT_S:g} s: "
        f"{'met' if report['target_met'] else 'MISSED'}",
    ]
    return lines


# ---------------------------------------------------------------------------------------- 3. poll


async def bench_poll(
    args: argparse.Namespace, stage: StageClient, generator: LoadGenerator, progress: Callable[[str], None]
) -> dict[str, Any]:
    rooms = [f"polled-{i}" for i in range(args.rooms)]
    await stage("setup", "bot", rooms, False, "")
    rounds: list[dict[str, Any]] = []
    counted: list[dict[str, int]] = []
    poll_seconds: list[float] = []
    problems: list[str] = []
    expected = {"ListRooms": 1, "ListParticipants": args.rooms}
    async with open_bot(stage) as bot:
        progress(f"poll: the bot dispatches and watches {args.rooms} rooms")
        await dispatch_all(bot, stage, rooms)
        # Each dispatch's watch has a look due at its follow-up deadline; those looks are not the poll's calls.
        deadlines_passed = time.monotonic() + FOLLOWUP_TIMEOUT + 0.1
        supervisor = bot.supervisor

        async def commands(count: int) -> Fired:
            urls = await stage("response_urls", count)
            shots: list[Shot] = []
            for i, url in enumerate(urls):
                body = slash_command_body(f"list {rooms[i % len(rooms)]}", response_url=url)
                shots.append((body, signed_headers(body, SIGNING_SECRET)))
            before = await stage("slack_counts")
            fired = await generator.run(Job(bot.url + "/slack/events", shots, args.concurrency, BOT_ACK_MARK))
            await stage("wait_slack", {**before, "responses": before["responses"] + count})
            return fired

        async def polling(count: int) -> tuple[Fired, int]:
            done = asyncio.Event()
            polls = 0

            async def loop() -> None:
                nonlocal polls
                while not done.is_set():
                    await supervisor.poll_once()
                    polls += 1

            poller = asyncio.create_task(loop())
            try:
                fired = await commands(count)
            finally:
                done.set()
                await poller
            return fired, polls

        progress(f"poll: warm-up, {args.warmup} commands")
        await commands(args.warmup)
        await asyncio.sleep(max(0.0, deadlines_passed - time.monotonic()))
        for number in range(1, args.rounds + 1):
            await settle(bot, stage)
            await stage("clear")
            started = time.perf_counter()
            await supervisor.poll_once()
            poll_seconds.append(time.perf_counter() - started)
            calls: dict[str, int] = await stage("livekit_calls", "bot")
            counted.append(calls)
            if calls != expected:
                raise RuntimeError(f"one poll of {args.rooms} watched rooms made {calls}, not {expected}")
            for target in ("idle", "polling"):
                progress(f"poll round {number}/{args.rounds}: {args.requests} commands, {target}")
                await stage("clear")
                gc.collect()
                polls = 0
                if target == "idle":
                    fired = await commands(args.requests)
                else:
                    fired, polls = await polling(args.requests)
                if fired.first_problem:
                    problems.append(f"{target} round {number}: {fired.first_problem}")
                ms = [s * 1000 for s in fired.latencies]
                rounds.append({"target": target, "round": number, "p50_ms": quantile(ms, 50),
                               "p99_ms": quantile(ms, 99), "max_ms": max(ms), "polls": polls,
                               "errors": fired.bad + fired.failed})  # fmt: skip

    def of(target: str, key: str) -> list[float]:
        return [r[key] for r in rounds if r["target"] == target]

    summary = {t: {k: spread(of(t, k)) for k in ("p50_ms", "p99_ms")} for t in ("idle", "polling")}
    ratio = summary["polling"]["p99_ms"]["median"] / summary["idle"]["p99_ms"]["median"]
    return {
        "config": {
            "rooms": args.rooms,
            "requests": args.requests,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "command": "list <watched room>",
        },
        "livekit_calls_per_poll": counted,
        "expected_calls_per_poll": expected,
        "poll_seconds": spread(poll_seconds),
        "rounds": rounds,
        "summary": summary,
        "ratio_p99_polling_over_idle": ratio,
        "ratio_p50_polling_over_idle": summary["polling"]["p50_ms"]["median"] / summary["idle"]["p50_ms"]["median"],
        "target_ratio_at_most": TARGET_ACK_P99_RATIO,
        "target_met": ratio <= TARGET_ACK_P99_RATIO,
        "errors": {"count": sum(int(r["errors"]) for r in rounds), "first": problems[:5]},
    }


def poll_table(report: dict[str, Any]) -> list[str]:
    cfg = report["config"]
    calls = report["livekit_calls_per_poll"]
    poll = report["poll_seconds"]
    lines = [
        f"3. one poll with {cfg['rooms']} watched rooms: "
        + "; ".join(", ".join(f"{k} {v}" for k, v in sorted(c.items())) for c in calls)
        + f" (expected ListRooms 1, ListParticipants {cfg['rooms']}: exact in every round); "
        f"a poll took {poll['median'] * 1000:.0f} ms (rounds {poll['min'] * 1000:.0f}..{poll['max'] * 1000:.0f})",
        f"   slash-command acks ({cfg['command']}), {cfg['requests']} per round x {cfg['rounds']} rounds, "
        f"{cfg['concurrency']} concurrent, with no poll (idle) and with polls back to back (polling)",
        f"{'target':<8}{'round':>6}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'polls':>7}{'errors':>8}",
    ]
    for r in report["rounds"]:
        lines.append(
            f"{r['target']:<8}{r['round']:>6}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['max_ms']:>9.1f}"
            f"{r['polls']:>7}{r['errors']:>8}"
        )
    s = report["summary"]
    for t in ("idle", "polling"):
        p = s[t]["p99_ms"]
        lines.append(f"{t:<8}median p50 {s[t]['p50_ms']['median']:.1f} ms, p99 {p['median']:.1f} ms "
                     f"(rounds {p['min']:.1f}..{p['max']:.1f})")  # fmt: skip
    lines.append(
        f"polling/idle: p50 {report['ratio_p50_polling_over_idle']:.2f}x, p99 "
        f"{report['ratio_p99_polling_over_idle']:.2f}x; goal p99 <= {TARGET_ACK_P99_RATIO}x: "
        f"{'met' if report['target_met'] else 'MISSED'}"
    )
    return lines


# ---------------------------------------------------------------------------------------- main

Section = Callable[[argparse.Namespace, StageClient, LoadGenerator, Callable[[str], None]], Awaitable[dict[str, Any]]]


async def run_sections(
    names: Sequence[str], args: argparse.Namespace, generator: LoadGenerator, progress: Callable[[str], None]
) -> dict[str, Any]:
    sections: dict[str, Section] = {
        "throughput": bench_throughput,
        "latency": lambda a, s, _g, p: bench_latency(a, s, p),
        "poll": bench_poll,
    }
    report: dict[str, Any] = {"environment": environment(generator)}
    for name in names:
        section = argparse.Namespace(**{k.split("_", 1)[1]: v for k, v in vars(args).items() if k.startswith(name)})
        section.warmup = args.warmup
        stage = StageClient()  # a fresh stage per section: no rooms or records carried over
        try:
            report[name] = await sections[name](section, stage, generator, progress)
        finally:
            stage.close()
    return report


def table(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"supervision benchmarks: {env['cpus']} CPUs, Python {env['python']}; load generator: "
        f"{env['load_generator']}; {env['stand-ins']}",
    ]
    for name, render in (("throughput", throughput_table), ("latency", latency_table), ("poll", poll_table)):
        if name in report:
            lines += ["", *render(report[name])]
    errors = sum(report[n]["errors"]["count"] for n in ("throughput", "poll") if n in report)
    if errors:
        firsts = [report[n]["errors"]["first"] for n in ("throughput", "poll") if n in report]
        lines += ["", f"ERRORS: {errors} bad or failed requests; first: {firsts}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.supervision", description=__doc__.split("\n")[0])
    parser.add_argument("section", choices=("all", "throughput", "latency", "poll"), help="what to measure")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    parser.add_argument("--same-process", action="store_true", help="run the load generator in the bot's event loop")
    parser.add_argument("--warmup", type=int, default=100, help="uncounted requests per target before the rounds")
    parser.add_argument("--throughput-requests", type=int, default=1000, help="webhooks per round and target")
    parser.add_argument("--throughput-concurrency", type=int, default=20, help="webhooks in flight at once")
    parser.add_argument("--throughput-rounds", type=int, default=4, help="rounds; each runs bare, then bot")
    parser.add_argument("--throughput-rooms", type=int, default=20, help="watched rooms the events are about")
    parser.add_argument("--latency-rooms", type=int, default=20, help="rooms (one watched agent each) per round")
    parser.add_argument("--latency-rounds", type=int, default=5, help="rounds; each runs relay, then bot")
    parser.add_argument("--poll-rooms", type=int, default=100, help="watched rooms the poll reads")
    parser.add_argument("--poll-requests", type=int, default=400, help="slash commands per round and target")
    parser.add_argument("--poll-concurrency", type=int, default=10, help="slash commands in flight at once")
    parser.add_argument("--poll-rounds", type=int, default=3, help="rounds; each runs idle, then polling")
    args = parser.parse_args(argv)
    sizes = [v for k, v in vars(args).items() if k.split("_")[0] in ("throughput", "latency", "poll")]
    if any(v < 1 for v in sizes) or args.throughput_requests < 2 or args.poll_requests < 2:
        parser.error("every size must be at least 1, and the request counts at least 2")

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    names = ("throughput", "latency", "poll") if args.section == "all" else (args.section,)
    generator: LoadGenerator = InProcessGenerator() if args.same_process else SeparateProcessGenerator()
    try:
        report = asyncio.run(run_sections(names, args, generator, progress))
    finally:
        generator.close()
    print(json.dumps(report, indent=2) if args.json else table(report))
    failed = [n for n in names if n in report and report[n].get("errors", {}).get("count")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
