"""Join links minted per second: the bot's link path against a loop that calls livekit-api's AccessToken directly.

Reproduce the figures (from the repository root, with the venv active):

    . .venv/bin/activate && python -m bench.link_mint --tokens 5000 --commands 1000 --rounds 7

Three targets, measured in the same process and run, in alternating rounds (baseline, mint, command, baseline,
mint, command, ...), each round after a gc.collect(); the reported rate of each target is the median over its
rounds, and the ratios are target/baseline of those medians:

* baseline: a loop that builds the same token as the bot, directly with livekit-api:
            `AccessToken(key, secret).with_identity(..).with_name(..).with_ttl(..).with_grants(VideoGrants(
            room_join, room, can_publish, can_subscribe, can_publish_data)).with_room_config(RoomConfiguration(
            agents=[RoomAgentDispatch(agent_name="speech-processing")])).to_jwt()`.
* mint:     what the product does to produce one link: `LiveKitGateway.mint_join_token(...)` on the Runtime's
            gateway, then `dispatch_bot.commands.link.build_url(...)` with the configured URL template and
            public ws URL. The issue's target applies to this figure: at least 80% of the baseline's rate.
* command:  the whole `link my-room captions` command through `CommandRunner.execute` with a real Runtime
            (`Runtime.open(load_settings(...))`, a temporary SQLite audit database with synchronous=FULL, the
            LiveKit stand-in from tests/fakes on 127.0.0.1 where my-room is NOT running, so the only LiveKit
            call is ListRooms). It includes parsing, the ListRooms round trip, minting, the URL and one audit
            row committed (fsync) per link, one command at a time. Information only: it is bounded by the
            audit commit and the round trip, not by minting. No Slack is involved, so the display name is the
            actor's (no users.info).

Every target gets the same inputs: room my-room, name alice, TTL 1h, agent speech-processing, and per round a
fresh list of identities shaped like the bot's (`U123-` + 8 hex digits). One token from the baseline and one
from the mint path are checked with livekit-api's TokenVerifier to carry the same grants and room config; the
command rounds are checked to answer `ok` with a link, to call ListRooms once per command and CreateDispatch
never, and to leave one audit row per command.

Importing the gateway installs its filter for PyJWT's short-HMAC-key warning (LiveKit's dev secret is short);
the filter applies to the baseline too, so neither pays for a warning per token.
All traffic goes to 127.0.0.1; temporary files are removed at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from livekit import api

from dispatch_bot.bot.config import load_settings
from dispatch_bot.bot.runtime import Runtime
from dispatch_bot.commands.link import build_url
from dispatch_bot.commands.ports import Actor
from tests.fakes.livekit_server import FakeLiveKit

API_KEY = "devkey"
API_SECRET = "secret"  # LiveKit's dev secret, as in the tests
ROOM = "my-room"
NAME = "alice"
USER_ID = "U123"
AGENT = "speech-processing"  # what the alias `captions` resolves to
AGENTS = (AGENT,)
TTL = timedelta(hours=1)
COMMAND = f"link {ROOM} captions"
TARGET_MINT_RATIO = 0.80
WARMUP_TOKENS = 200
WARMUP_COMMANDS = 50
TARGETS = ("baseline", "mint", "command")

# Short LiveKit timeouts are not needed: my-room is not running, so a link only lists rooms.
# One simulated person sends every command: the per-person limit would refuse most of them.
CONFIG_YAML = "livekit:\n  request_timeout: 10s\nlimits:\n  per_user_per_minute: 10000\n"


def identities(count: int) -> list[str]:
    """Identities shaped like the bot's: the Slack user id, a dash, 8 hex digits."""
    return [f"{USER_ID}-{secrets.token_hex(4)}" for _ in range(count)]


def baseline_token(identity: str) -> str:
    """The same token as the bot's, built with livekit-api directly."""
    return (
        api.AccessToken(API_KEY, API_SECRET)
        .with_identity(identity)
        .with_name(NAME)
        .with_ttl(TTL)
        .with_grants(
            api.VideoGrants(room_join=True, room=ROOM, can_publish=True, can_subscribe=True, can_publish_data=True)
        )
        .with_room_config(api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=AGENT)]))
        .to_jwt()
    )


@dataclass
class RoundResult:
    target: str
    round: int
    operations: int
    seconds: float
    per_second: float
    us_per_op: float
    errors: int


def result(target: str, number: int, operations: int, seconds: float, errors: int = 0) -> RoundResult:
    return RoundResult(target, number, operations, seconds, operations / seconds, seconds / operations * 1e6, errors)


@dataclass
class Bench:
    """The Runtime and stand-in shared by the rounds."""

    runtime: Runtime
    livekit: FakeLiveKit
    actor: Actor

    def mint_link(self, identity: str) -> str:
        """The product's link: the gateway's token, then the URL built from the configured template."""
        settings = self.runtime.command_settings
        token = self.runtime.gateway.mint_join_token(room=ROOM, identity=identity, name=NAME, ttl=TTL, agents=AGENTS)
        return build_url(
            settings.link_url_template, ws_url=settings.link_ws_url, token=token, room=ROOM, identity=identity
        )

    def run_baseline(self, names: list[str]) -> float:
        started = time.perf_counter()
        for identity in names:
            baseline_token(identity)
        return time.perf_counter() - started

    def run_mint(self, names: list[str]) -> float:
        mint = self.mint_link
        started = time.perf_counter()
        for identity in names:
            mint(identity)
        return time.perf_counter() - started

    async def run_commands(self, count: int) -> tuple[float, int, str]:
        """`count` link commands, one after the other; returns the seconds, the failures and the first problem."""
        runner, runtime, actor = self.runtime.runner, self.runtime, self.actor
        bad = 0
        problem = ""
        started = time.perf_counter()
        for _ in range(count):
            reply = await runner.execute(runtime.context(actor), COMMAND)
            if reply.outcome != "ok" or reply.link is None or len(reply.lines) != 2:
                bad += 1
                problem = problem or f"{reply.outcome}: {[line.plain() for line in reply.lines]}"
        return time.perf_counter() - started, bad, problem


@contextlib.asynccontextmanager
async def open_bench(directory: str | None) -> AsyncIterator[Bench]:
    with tempfile.TemporaryDirectory(prefix="dispatch-bot-bench-", dir=directory) as tmp:
        async with FakeLiveKit(job_delay=0.02, unavailable_delay=0.05) as livekit:
            livekit.register_worker(AGENT)  # registered, but my-room is not running: a link only lists rooms
            config = Path(tmp) / "dispatch-bot.yaml"
            config.write_text(CONFIG_YAML)
            env = {
                "LIVEKIT_URL": livekit.url,
                "LIVEKIT_API_KEY": API_KEY,
                "LIVEKIT_API_SECRET": API_SECRET,
                "DISPATCH_BOT_DB": str(Path(tmp) / "audit.db"),
            }
            runtime = await Runtime.open(load_settings(str(config), env=env))
            gc.freeze()  # as `dispatch-bot serve` does once it has started
            try:
                yield Bench(runtime, livekit, Actor("slack", USER_ID, NAME, "T123", "C1", "ops"))
            finally:
                await runtime.close()


def same_token_check(bench: Bench) -> str:
    """Empty if the baseline's token and the product's carry the same claims (identity and times aside)."""
    identity = identities(1)[0]
    verifier = api.TokenVerifier(API_KEY, API_SECRET)
    mine = verifier.verify(baseline_token(identity))
    url = bench.mint_link(identity)
    theirs = verifier.verify(parse_qs(urlsplit(url).query)["token"][0])
    for what, a, b in (
        ("identity", mine.identity, theirs.identity),
        ("name", mine.name, theirs.name),
        ("video grants", mine.video, theirs.video),
        ("room config", mine.room_config, theirs.room_config),
    ):
        if a != b:
            return f"the bot's token differs from the baseline's in its {what}: {b!r} != {a!r}"
    return ""


async def run_bench(
    tokens: int, commands: int, rounds: int, directory: str | None, progress: Callable[[str], None]
) -> dict[str, Any]:
    results: list[RoundResult] = []
    problems: list[str] = []
    async with open_bench(directory) as bench:
        mismatch = same_token_check(bench)
        if mismatch:
            problems.append(mismatch)
        progress(f"warm-up: {WARMUP_TOKENS} tokens per mint target, {WARMUP_COMMANDS} commands")
        bench.run_baseline(identities(WARMUP_TOKENS))
        bench.run_mint(identities(WARMUP_TOKENS))
        _, bad, problem = await bench.run_commands(WARMUP_COMMANDS)
        if bad:
            problems.append(f"warm-up: {bad} commands failed; first: {problem}")
        commands_sent = WARMUP_COMMANDS
        bench.livekit.requests.clear()
        for number in range(1, rounds + 1):
            for target in TARGETS:
                count = commands if target == "command" else tokens
                progress(f"round {number}/{rounds}: {count} {'commands' if target == 'command' else 'tokens'} "
                         f"for {target}")  # fmt: skip
                names = identities(count)
                gc.collect()
                if target == "baseline":
                    results.append(result(target, number, count, bench.run_baseline(names)))
                elif target == "mint":
                    results.append(result(target, number, count, bench.run_mint(names)))
                else:
                    seconds, bad, problem = await bench.run_commands(count)
                    commands_sent += count
                    results.append(result(target, number, count, seconds, bad))
                    if bad:
                        problems.append(f"command round {number}: {bad} failed; first: {problem}")
                    list_rooms = len(bench.livekit.calls("ListRooms"))
                    others = len(bench.livekit.requests) - list_rooms
                    if list_rooms != count or others:
                        problems.append(
                            f"command round {number}: {list_rooms} ListRooms and {others} other LiveKit calls "
                            f"for {count} commands (expected one ListRooms each)"
                        )
                    bench.livekit.requests.clear()  # keep the stand-in's records from growing round to round
        audit_rows = [row async for row in bench.runtime.audit.rows()]
    link_rows = sum(1 for row in audit_rows if (row.action, row.outcome, row.room) == ("link", "ok", ROOM))
    if link_rows != commands_sent or len(audit_rows) != commands_sent:
        problems.append(f"{len(audit_rows)} audit rows ({link_rows} ok links) for {commands_sent} commands")

    def median(target: str) -> float:
        return statistics.median(r.per_second for r in results if r.target == target)

    summary = {t: {"per_second": median(t), "us_per_op": 1e6 / median(t)} for t in TARGETS}
    ratios = {t: summary[t]["per_second"] / summary["baseline"]["per_second"] for t in ("mint", "command")}
    per_round = {
        t: [
            m.per_second / b.per_second
            for m, b in zip(
                (r for r in results if r.target == t), (r for r in results if r.target == "baseline"), strict=True
            )
        ]
        for t in ("mint", "command")
    }
    return {
        "config": {
            "tokens_per_round": tokens,
            "commands_per_round": commands,
            "rounds": rounds,
            "warmup": {"tokens_per_mint_target": WARMUP_TOKENS, "commands": WARMUP_COMMANDS},
            "command": COMMAND,
            "audit_synchronous": "FULL",
        },
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "livekit_api": version("livekit-api"),
            "pyjwt": version("PyJWT"),
            "protobuf": version("protobuf"),
        },
        "rounds": [asdict(r) for r in results],
        "median_of_rounds": summary,
        "ratio_over_baseline": ratios,
        "per_round_ratio_range": {t: [min(v), max(v)] for t, v in per_round.items()},
        "targets": {"mint_ratio_at_least": TARGET_MINT_RATIO},
        "targets_met": {"mint_at_least_80pct_of_baseline": ratios["mint"] >= TARGET_MINT_RATIO},
        "errors": {"count": sum(r.errors for r in results) + len(problems), "first": problems[:5]},
        "audit_rows": len(audit_rows),
    }


def table(report: dict[str, Any]) -> str:
    cfg, env = report["config"], report["environment"]
    lines = [
        f"join links: {cfg['tokens_per_round']} tokens (baseline, mint) and {cfg['commands_per_round']} "
        f"`{cfg['command']}` commands per round, {cfg['rounds']} alternating rounds",
        f"{env['cpus']} CPUs, Python {env['python']}, livekit-api {env['livekit_api']}, PyJWT {env['pyjwt']}",
        "",
        f"{'target':<10}{'round':>6}{'ops':>8}{'seconds':>10}{'ops/s':>10}{'us/op':>10}{'errors':>8}",
    ]
    for r in report["rounds"]:
        lines.append(
            f"{r['target']:<10}{r['round']:>6}{r['operations']:>8}{r['seconds']:>10.3f}{r['per_second']:>10.0f}"
            f"{r['us_per_op']:>10.1f}{r['errors']:>8}"
        )
    lines += ["", f"{'target':<10}{'ops/s':>10}{'us/op':>10}{'x baseline':>12}{'per-round range':>20}"]
    for target in TARGETS:
        s = report["median_of_rounds"][target]
        ratio = f"{report['ratio_over_baseline'][target]:>11.2f}x" if target != "baseline" else f"{'':>12}"
        spread = ""
        if target != "baseline":
            low, high = report["per_round_ratio_range"][target]
            spread = f"{low:>13.2f}-{high:.2f}x"
        lines.append(f"{target:<10}{s['per_second']:>10.0f}{s['us_per_op']:>10.1f}{ratio}{spread}")
    ratio = report["ratio_over_baseline"]["mint"]
    met = report["targets_met"]["mint_at_least_80pct_of_baseline"]
    lines += [
        "",
        f"target mint >= {TARGET_MINT_RATIO:.0%} of baseline: {'met' if met else 'MISSED'} ({ratio:.0%})",
        "command: information only, no target; it is bounded by the audit row's commit (fsync, synchronous=FULL)",
        "         and the ListRooms round trip to the stand-in, not by minting",
        f"audit rows: {report['audit_rows']} (one per command, warm-up included)",
    ]
    errors = report["errors"]
    if errors["count"]:
        lines.append(f"ERRORS: {errors['count']}; first: {errors['first']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.link_mint", description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=5000, help="tokens per round for baseline and mint")
    parser.add_argument("--commands", type=int, default=1000, help="link commands per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds; each runs baseline, mint, then command")
    parser.add_argument("--dir", default=None, help="where the temporary audit database goes (default: system temp)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if args.tokens < 1 or args.commands < 1 or args.rounds < 1:
        parser.error("--tokens, --commands and --rounds must be at least 1")

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    report = asyncio.run(run_bench(args.tokens, args.commands, args.rounds, args.dir, progress))
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 1 if report["errors"]["count"] else 0


if __name__ == "__main__":
    sys.exit(main())
