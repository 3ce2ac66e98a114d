"""Ack latency in HTTP mode: the bot's /slack/events endpoint against a bare Bolt AsyncApp.

Reproduce the figures (from the repository root, with the venv active):

    . .venv/bin/activate && python -m bench.ack_latency --requests 2000 --concurrency 50 --rounds 3

What it measures: the time from sending a signed slash command POST to /slack/events until its HTTP response
(the ack) has been read, at a fixed concurrency (a closed loop: `--concurrency` clients, each sending its next
request as soon as the previous one is answered). Two targets get the same load:

* bot:  the real `SlackTransport(runtime).web_app()`, opened with `Runtime.open(load_settings(...))` from a
        temporary YAML config and a temporary SQLite audit database (synchronous=FULL, one row per command),
        talking to the LiveKit and Slack stand-ins from tests/fakes. Its work after the ack (LiveKit calls,
        Slack messages, audit rows, follow-ups) competes for the CPU with the next acks; that is the point.
* bare: a Bolt `AsyncApp` with the same signing secret and an `authorize=` returning an AuthorizeResult
        (no auth.test), served the same way (`to_bolt_request`/`to_aiohttp_response` in an aiohttp
        `web.Application` on port 0), whose /dispatch listener only calls `await ack()`.

The commands cycle through three kinds, each with its own response_url from FakeSlack:
`list my-room` (reply on the response_url), `captions my-room` (a dispatch that finds the agent already in
the room, which starts with it: a "noop" reply on the response_url) and `captions <fresh room>` (a real
CreateDispatch: chat.postMessage, then a follow-up that polls LiveKit until the registered worker's agent
joins, then chat.update). Both targets get the same bodies.

Both servers and both stand-ins run in this process's event loop; the load generator runs in a separate
process with its own event loop (pass `--same-process` to run it in the servers' loop instead). Targets
alternate (bare, bot, bare, bot, ...) for `--rounds` rounds after a warm-up of 100 uncounted requests per
target; after every bot round (and its warm-up) the bench waits until the bot has delivered every reply and
finished every follow-up, so rounds never overlap; it then clears the stand-ins' request records (so the
heap, and with it the full-GC pauses, does not grow from round to round) and runs gc.collect() before the
next round. Reported figures are the median over rounds of each round's p50, p99, max and throughput; the
ratios are bot/bare of those medians.

Targets (from the issue, on a 2-core machine): bot p99 < 100 ms, and bot p50 <= 1.5 x bare p50.
All traffic goes to 127.0.0.1; temporary files are removed at exit.
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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from dispatch_bot.bot.config import load_settings
from dispatch_bot.bot.runtime import Runtime
from dispatch_bot.bot.slack_app import SlackTransport
from tests.fakes.livekit_server import FakeLiveKit
from tests.fakes.slack_requests import signed_headers, slash_command_body
from tests.fakes.slack_server import FakeSlack

SIGNING_SECRET = "bench-signing-secret"
BOT_TOKEN = "xoxb-bench-token"
ROOM = "my-room"
AGENT = "speech-processing"  # what the default alias `captions` resolves to
WARMUP_REQUESTS = 100
REQUEST_TIMEOUT = 30.0  # seconds, per request (the bench must stop by itself)
SETTLE_TIMEOUT = 300.0  # seconds to wait for the bot's work after a round
BOT_ACK_MARK = ":hourglass_flowing_sand:"  # the bot's ack text starts with this
TARGET_P99_MS = 100.0
TARGET_P50_RATIO = 1.5

# The bot's config: short follow-up waits, as in tests/conftest.py, but a longer LiveKit timeout so a backlog
# of after-ack work under load does not turn into timeouts.
# One simulated person sends every command: the per-person limit would refuse most of them.
CONFIG_YAML = (
    "livekit:\n  followup_timeout: 2s\n  followup_interval: 20ms\n  request_timeout: 10s\n"
    "limits:\n  per_user_per_minute: 10000\n"
)

Shot = tuple[str, dict[str, str]]  # (urlencoded body, signed headers)


# ---------------------------------------------------------------------------------------- load generator


@dataclass
class Job:
    """One batch of requests for the load generator."""

    url: str
    shots: list[Shot]
    concurrency: int
    expect: str  # the ack body must contain this ("" accepts any body)


@dataclass
class Fired:
    """What the load generator measured for one batch."""

    latencies: list[float]  # seconds, one per request, in request order
    wall: float  # seconds from the first send to the last answer
    bad: int  # answers that were not 200 with the expected body
    failed: int  # requests with no answer (connection error or timeout)
    first_problem: str = ""
    settle: float = 0.0  # bot only: seconds from the last ack until every reply and follow-up was done


async def fire(job: Job) -> Fired:
    """Send every shot to job.url, `job.concurrency` at a time, and time each one until its answer is read."""
    if urlsplit(job.url).hostname != "127.0.0.1":
        raise ValueError(f"refusing to send traffic to {job.url}: the bench only talks to 127.0.0.1")
    latencies = [0.0] * len(job.shots)
    problems: list[str] = []
    bad = failed = 0
    expect = job.expect.encode()
    pending = iter(range(len(job.shots)))  # shared by the clients: each request is taken once

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal bad, failed
        for i in pending:
            body, headers = job.shots[i]
            data = body.encode()
            started = time.perf_counter()
            try:
                async with session.post(job.url, data=data, headers=headers) as resp:
                    answer = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                latencies[i] = time.perf_counter() - started
                failed += 1
                problems.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies[i] = time.perf_counter() - started
            if status != 200 or expect not in answer:
                bad += 1
                problems.append(f"HTTP {status}: {answer[:200]!r}")

    connector = aiohttp.TCPConnector(limit=job.concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(job.concurrency)))
        wall = time.perf_counter() - started
    return Fired(latencies, wall, bad, failed, problems[0] if problems else "")


def _generator_process(conn: Connection) -> None:
    """The load generator's own process: one event loop per job, until it receives None."""
    with conn:
        while True:
            job = conn.recv()
            if job is None:
                return
            try:
                conn.send(asyncio.run(fire(job)))
            except Exception as exc:  # handed back to the parent, which raises it
                conn.send(f"load generator failed: {type(exc).__name__}: {exc}")


class LoadGenerator(Protocol):
    description: str

    async def run(self, job: Job) -> Fired: ...

    def close(self) -> None: ...


class InProcessGenerator:
    description = "same process and event loop as the servers"

    async def run(self, job: Job) -> Fired:
        return await fire(job)

    def close(self) -> None:
        pass


class SeparateProcessGenerator:
    description = "separate process with its own event loop"

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_generator_process, args=(child,), daemon=True, name="ack-latency-load")
        self._process.start()
        child.close()

    async def run(self, job: Job) -> Fired:
        await asyncio.to_thread(self._conn.send, job)
        answer = await asyncio.to_thread(self._conn.recv)
        if isinstance(answer, str):
            raise RuntimeError(answer)
        if not isinstance(answer, Fired):
            raise RuntimeError(f"unexpected answer from the load generator: {answer!r}")
        return answer

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send(None)
        self._process.join(5)
        if self._process.is_alive():  # only the process this bench started
            self._process.terminate()
            self._process.join(5)
        self._conn.close()


# ---------------------------------------------------------------------------------------- targets


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve `app` on 127.0.0.1, port 0, as tests/conftest.py does; returns the runner and its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def bare_web_app(api_url: str) -> web.Application:
    """A bare Bolt app on the same serving path as the bot: signature check, authorize, `await ack()`."""

    async def authorize(**_: Any) -> AuthorizeResult:
        return AuthorizeResult(enterprise_id=None, team_id=None, bot_token=BOT_TOKEN)

    async def on_dispatch(ack: AsyncAck) -> None:
        await ack()

    bolt = AsyncApp(
        client=AsyncWebClient(base_url=api_url),  # never called; points at the stand-in anyway
        signing_secret=SIGNING_SECRET,
        authorize=authorize,
        logger=logging.getLogger("bench.bare_bolt"),
    )
    bolt.command("/dispatch")(on_dispatch)

    async def events(request: web.Request) -> web.Response:
        bolt_response = await bolt.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(bolt_response)

    application = web.Application()
    application.router.add_post("/slack/events", events)
    return application


@dataclass
class Stack:
    """The stand-ins, the bot and the bare app, all listening on 127.0.0.1."""

    livekit: FakeLiveKit
    slack: FakeSlack
    runtime: Runtime
    transport: SlackTransport
    bot_url: str
    bare_url: str
    fresh_rooms: list[str] = field(default_factory=list)
    sent_to_bot: int = 0  # commands sent to the bot in all
    owed: int = 0  # commands sent to the bot since the last settle (each owes one reply)
    fresh_counter: int = 0

    def commands(self, count: int) -> tuple[list[str], list[str]]:
        """The command mix (list; dispatch that is a noop; dispatch into a fresh room) and the fresh rooms."""
        texts: list[str] = []
        rooms: list[str] = []
        for i in range(count):
            kind = i % 3
            if kind == 0:
                texts.append(f"list {ROOM}")
            elif kind == 1:
                texts.append(f"captions {ROOM}")
            else:
                self.fresh_counter += 1
                rooms.append(f"bench-{self.fresh_counter}")
                texts.append(f"captions {rooms[-1]}")
        return texts, rooms

    def shots(self, count: int, *, open_rooms: bool) -> list[Shot]:
        """Signed slash command requests, each with its own response_url.

        With open_rooms, the fresh rooms are opened in LiveKit (as running rooms) first.
        """
        texts, rooms = self.commands(count)
        if open_rooms:
            for room in rooms:
                self.livekit.add_room(room)
            self.fresh_rooms += rooms
        shots: list[Shot] = []
        for text in texts:
            body = slash_command_body(text, response_url=self.slack.new_response_url())
            shots.append((body, signed_headers(body, SIGNING_SECRET)))
        return shots

    def delivered(self) -> int:
        """Replies the bot delivered: response_url posts plus in-channel messages."""
        return len(self.slack.responses) + len(self.slack.calls("chat.postMessage"))

    async def settle(self) -> None:
        """Wait until the bot delivered a reply to every command and finished every follow-up."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            posted, updated = len(self.slack.calls("chat.postMessage")), len(self.slack.calls("chat.update"))
            if self.delivered() >= self.owed and updated >= posted:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the bot did not finish its work within {SETTLE_TIMEOUT:g} s: "
                    f"{self.delivered()} of {self.owed} replies, {updated} of {posted} follow-ups"
                )
            await asyncio.sleep(0.05)
        await self.transport.drain()
        for room in self.fresh_rooms:  # keep LiveKit's room list (scanned by ListRooms) small
            with contextlib.suppress(KeyError):
                self.livekit.close_room(room)
        self.fresh_rooms.clear()
        # The stand-ins record every request (some 27 objects per command). Left to grow, that heap makes the
        # server process's full GC pauses longer round after round, which would show up in later rounds' p99.
        self.slack.web_calls.clear()
        self.slack.responses.clear()
        self.livekit.requests.clear()
        self.owed = 0


@contextlib.asynccontextmanager
async def open_stack() -> AsyncIterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="dispatch-bot-bench-") as tmp:
        async with (
            FakeLiveKit(job_delay=0.02, unavailable_delay=0.05) as livekit,
            FakeSlack(bot_token=BOT_TOKEN) as slack,
        ):
            # The agent is already in my-room, so `captions my-room` is a deterministic noop.
            livekit.register_worker(AGENT)
            livekit.add_room(ROOM, agents=[AGENT])
            await livekit.wait_for(lambda: any(d.state.jobs for d in livekit.dispatches(ROOM)))
            config = Path(tmp) / "dispatch-bot.yaml"
            config.write_text(CONFIG_YAML)
            env = {
                "LIVEKIT_URL": livekit.url,
                "LIVEKIT_API_KEY": "devkey",
                "LIVEKIT_API_SECRET": "secret",
                "SLACK_BOT_TOKEN": BOT_TOKEN,
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SLACK_API_URL": slack.api_url,
                "DISPATCH_BOT_DB": str(Path(tmp) / "audit.db"),
            }
            runtime = await Runtime.open(load_settings(str(config), env=env))
            transport = SlackTransport(runtime)
            bot_runner, bot_url = await serve(transport.web_app())
            bare_runner, bare_url = await serve(bare_web_app(slack.api_url))
            gc.freeze()  # as `dispatch-bot serve` does once it has started (both targets share this process)
            try:
                yield Stack(livekit, slack, runtime, transport, bot_url, bare_url)
            finally:
                await transport.aclose()
                await bare_runner.cleanup()
                await bot_runner.cleanup()
                await runtime.close()


# ---------------------------------------------------------------------------------------- measuring


@dataclass
class RoundResult:
    target: str
    round: int
    requests: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    throughput_rps: float
    bad: int
    failed: int
    settle_s: float


def summarize(target: str, number: int, fired: Fired) -> RoundResult:
    ms = [s * 1000 for s in fired.latencies]
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    return RoundResult(
        target=target,
        round=number,
        requests=len(ms),
        p50_ms=cuts[49],
        p99_ms=cuts[98],
        max_ms=max(ms),
        throughput_rps=len(ms) / fired.wall,
        bad=fired.bad,
        failed=fired.failed,
        settle_s=fired.settle,
    )


async def run_bench(
    requests: int, concurrency: int, rounds: int, generator: LoadGenerator, progress: Callable[[str], None]
) -> dict[str, Any]:
    results: list[RoundResult] = []
    problems: list[str] = []
    async with open_stack() as stack:

        async def bare(count: int) -> Fired:
            shots = stack.shots(count, open_rooms=False)  # the bare app never looks at LiveKit
            return await generator.run(Job(stack.bare_url + "/slack/events", shots, concurrency, ""))

        async def bot(count: int) -> Fired:
            shots = stack.shots(count, open_rooms=True)
            job = Job(stack.bot_url + "/slack/events", shots, concurrency, BOT_ACK_MARK)
            stack.sent_to_bot += count
            stack.owed += count
            fired = await generator.run(job)
            started = time.perf_counter()
            await stack.settle()
            fired.settle = time.perf_counter() - started
            return fired

        targets: list[tuple[str, Callable[[int], Awaitable[Fired]]]] = [("bare", bare), ("bot", bot)]
        for name, send in targets:
            progress(f"warm-up: {WARMUP_REQUESTS} requests to {name}")
            await send(WARMUP_REQUESTS)
        for number in range(1, rounds + 1):
            for name, send in targets:
                progress(f"round {number}/{rounds}: {requests} requests to {name}")
                gc.collect()  # every round starts from the same, collected heap
                fired = await send(requests)
                results.append(summarize(name, number, fired))
                if fired.first_problem:
                    problems.append(f"{name} round {number}: {fired.first_problem}")
        outcomes = Counter([f"{row.action} {row.outcome}" async for row in stack.runtime.audit.rows()])
        commands_to_bot = stack.sent_to_bot

    def median(target: str, key: str) -> float:
        return statistics.median(float(getattr(r, key)) for r in results if r.target == target)

    keys = ("p50_ms", "p99_ms", "max_ms", "throughput_rps")
    summary = {t: {k: median(t, k) for k in keys} for t in ("bare", "bot")}
    ratios = {k: summary["bot"][k] / summary["bare"][k] for k in keys}
    targets_met = {
        "bot_p99_under_100ms": summary["bot"]["p99_ms"] < TARGET_P99_MS,
        "bot_p50_at_most_1.5x_bare": ratios["p50_ms"] <= TARGET_P50_RATIO,
    }
    return {
        "config": {
            "requests": requests,
            "concurrency": concurrency,
            "rounds": rounds,
            "warmup_per_target": WARMUP_REQUESTS,
            "command_mix": [f"list {ROOM}", f"captions {ROOM}", "captions <fresh room>"],
        },
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "slack_bolt": version("slack_bolt"),
            "aiohttp": version("aiohttp"),
            "load_generator": generator.description,
            "servers": "bot, bare app and both stand-ins share one process and event loop",
        },
        "rounds": [asdict(r) for r in results],
        "median_of_rounds": summary,
        "ratio_bot_over_bare": ratios,
        "targets": {"bot_p99_ms_below": TARGET_P99_MS, "bot_p50_ratio_at_most": TARGET_P50_RATIO},
        "targets_met": targets_met,
        "errors": {
            "bad_acks": sum(r.bad for r in results),
            "failed_requests": sum(r.failed for r in results),
            "first": problems[:5],
        },
        "bot_audit_rows": sum(outcomes.values()),
        "bot_audit_outcomes": dict(sorted(outcomes.items())),
        "bot_commands_sent": commands_to_bot,
    }


def table(report: dict[str, Any]) -> str:
    cfg, env = report["config"], report["environment"]
    lines = [
        f"ack latency, HTTP mode: {cfg['requests']} signed slash commands x {cfg['rounds']} rounds, "
        f"{cfg['concurrency']} concurrent, warm-up {cfg['warmup_per_target']} per target",
        f"load generator: {env['load_generator']}; {env['servers']}; {env['cpus']} CPUs, "
        f"Python {env['python']}, slack_bolt {env['slack_bolt']}",
        "",
        f"{'target':<8}{'round':>6}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'req/s':>10}{'errors':>8}"
        f"{'settle s':>10}",
    ]
    for r in report["rounds"]:
        settle = f"{r['settle_s']:>10.2f}" if r["target"] == "bot" else ""
        lines.append(
            f"{r['target']:<8}{r['round']:>6}{r['p50_ms']:>10.1f}{r['p99_ms']:>10.1f}"
            f"{r['max_ms']:>10.1f}{r['throughput_rps']:>10.0f}{r['bad'] + r['failed']:>8}{settle}"
        )
    lines.append("")
    for name in ("bare", "bot"):
        s = report["median_of_rounds"][name]
        lines.append(
            f"{name:<8}{'median':>6}{s['p50_ms']:>10.1f}{s['p99_ms']:>10.1f}{s['max_ms']:>10.1f}"
            f"{s['throughput_rps']:>10.0f}"
        )
    q = report["ratio_bot_over_bare"]
    lines.append(
        f"{'bot/bare':<14}{q['p50_ms']:>9.2f}x{q['p99_ms']:>9.2f}x{q['max_ms']:>9.2f}x{q['throughput_rps']:>9.2f}x"
    )
    met = report["targets_met"]
    bot = report["median_of_rounds"]["bot"]
    lines += [
        "",
        f"target bot p99 < {TARGET_P99_MS:g} ms: {'met' if met['bot_p99_under_100ms'] else 'MISSED'} "
        f"({bot['p99_ms']:.1f} ms)",
        f"target bot p50 <= {TARGET_P50_RATIO:g} x bare p50: "
        f"{'met' if met['bot_p50_at_most_1.5x_bare'] else 'MISSED'} ({q['p50_ms']:.2f}x)",
        f"bot audit rows: {report['bot_audit_rows']} for {report['bot_commands_sent']} commands "
        "(one per command, one more per finished follow-up): "
        + ", ".join(f"{k} {v}" for k, v in report["bot_audit_outcomes"].items()),
        "settle s: time from a bot round's last ack until all its replies and follow-ups were done",
    ]
    errors = report["errors"]
    if errors["bad_acks"] or errors["failed_requests"]:
        lines.append(
            f"ERRORS: {errors['bad_acks']} bad acks, {errors['failed_requests']} failed requests; "
            f"first: {errors['first']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ack_latency", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per round and target")
    parser.add_argument("--concurrency", type=int, default=50, help="requests in flight at once")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each runs bare, then bot")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument(
        "--same-process",
        action="store_true",
        help="run the load generator in the servers' event loop instead of its own process",
    )
    args = parser.parse_args(argv)
    if args.requests < 2 or args.concurrency < 1 or args.rounds < 1:
        parser.error("--requests must be at least 2, --concurrency and --rounds at least 1")

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    generator: LoadGenerator = InProcessGenerator() if args.same_process else SeparateProcessGenerator()
    try:
        report = asyncio.run(run_bench(args.requests, args.concurrency, args.rounds, generator, progress))
    finally:
        generator.close()
    print(json.dumps(report, indent=2) if args.json else table(report))
    errors = report["errors"]
    return 1 if errors["bad_acks"] or errors["failed_requests"] else 0


if __name__ == "__main__":
    sys.exit(main())
