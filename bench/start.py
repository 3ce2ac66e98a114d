"""Fast start: how long `dispatch-bot --help`, `console -c help` and `serve` take to be ready, against bare baselines.

Reproduce the figures (from the repository root, with the venv active):

    . .venv/bin/activate && python -m bench.start --rounds 9

Every target is a fresh process (the interpreter's start included), run in alternating rounds:

* `python -c pass` and `python -c "import argparse"`: the floor any Python command line pays;
* `dispatch-bot --help` (`python -m dispatch_bot.bot.cli --help`): process start to exit;
* `dispatch-bot console -c help`: process start to exit, a fresh audit database each round, LiveKit never
  contacted (`help` needs no server);
* `dispatch-bot serve --http`: process start until `GET /healthz` first answers 200, against a bare Bolt
  `AsyncApp` served with aiohttp (`app.web_app()` plus a `/healthz` route), which also checks its token with
  `auth.test` first as `serve` does; both talk to the Slack stand-in (bench/standins.py, a process of its own).
  /healthz is asked every 5 ms from this process until it answers 200. Then one signed `/dispatch help` is posted
  to /slack/events, and the time from spawning to its acknowledgement is reported too ("to first ack"): `serve`
  opens its port before it has loaded Bolt and the commands, and that figure shows what the rest of its start costs.

Reported per target: median, p25 and p75 seconds over the rounds; ratios of medians against the baselines
(`--help` against `python -c pass`, serve against the bare Bolt app). Targets (from the issue): `--help` under
0.25 s; serve to its first 200 no slower than the bare Bolt app plus 10%.
Temporary files are removed at exit.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.standins import API_KEY, API_SECRET, BOT_TOKEN, StandIns
from tests.fakes.slack_requests import signed_headers, slash_command_body

REPO = Path(__file__).resolve().parent.parent
SIGNING_SECRET = "bench-signing-secret"
TARGET_HELP_S = 0.25
TARGET_SERVE_RATIO = 1.10
READY_TIMEOUT_S = 30.0
POLL_S = 0.005
TARGETS = (
    "python -c pass",
    "import argparse",
    "--help",
    "console -c help",
    "bare Bolt to 200",
    "serve to 200",
    "bare Bolt to ack",
    "serve to ack",
)

# The bare Bolt app: what a person would write with slack-bolt and aiohttp alone. argv[1] is the port.
BARE_BOLT = """
import asyncio, os, sys
from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

async def main() -> None:
    client = AsyncWebClient(token=os.environ["SLACK_BOT_TOKEN"], base_url=os.environ["SLACK_API_URL"])
    app = AsyncApp(client=client, signing_secret=os.environ["SLACK_SIGNING_SECRET"])

    @app.command("/dispatch")
    async def command(ack):
        await ack()

    await client.auth_test()
    web_app = app.web_app(path="/slack/events")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    web_app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(web_app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(sys.argv[1])).start()
    await asyncio.Event().wait()

asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_to_exit(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:5])} exited with {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return seconds


def healthy(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def acknowledged(port: int, response_url: str) -> bool:
    """Whether a signed `/dispatch help` posted to /slack/events is answered 200 (its acknowledgement)."""
    body = slash_command_body("help", response_url=response_url)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=READY_TIMEOUT_S)
    try:
        conn.request("POST", "/slack/events", body=body, headers=signed_headers(body, SIGNING_SECRET))
        return conn.getresponse().status == 200
    finally:
        conn.close()


def run_to_ready(command: list[str], port: int, env: dict[str, str], response_url: str) -> tuple[float, float]:
    """Seconds from spawning `command` to its first 200 on /healthz, and to the acknowledgement of a command sent
    right after; the process is stopped after."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while not healthy(port):
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"{' '.join(command[:5])} exited with {proc.returncode}: {err[-500:]}")
            if time.perf_counter() - started > READY_TIMEOUT_S:
                raise RuntimeError(f"{' '.join(command[:5])} did not answer /healthz within {READY_TIMEOUT_S:g} s")
            time.sleep(POLL_S)
        ready = time.perf_counter() - started
        if not acknowledged(port, response_url):
            raise RuntimeError(f"{' '.join(command[:5])} did not acknowledge a signed command")
        return ready, time.perf_counter() - started
    finally:
        proc.terminate()  # only the process started here
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr:
            proc.stderr.close()


def run_bench(args: argparse.Namespace, progress: Callable[[str], None]) -> dict[str, Any]:
    python = sys.executable
    cli = [python, "-m", "dispatch_bot.bot.cli"]
    times: dict[str, list[float]] = {t: [] for t in TARGETS}
    with tempfile.TemporaryDirectory(prefix="dispatch-bot-start-", dir=args.dir) as tmp, StandIns.start() as standins:
        scratch = Path(tmp)
        config = scratch / "dispatch-bot.yaml"
        config.write_text("")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "LIVEKIT_", "DISPATCH_BOT_"))}
        env.update(
            DISPATCH_BOT_CONFIG=str(config),
            LIVEKIT_URL=standins.livekit_url,
            LIVEKIT_API_KEY=API_KEY,
            LIVEKIT_API_SECRET=API_SECRET,
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=standins.slack_api_url,
            DISPATCH_BOT_LOG_LEVEL="WARNING",
        )
        for number in range(args.warmup + args.rounds):
            warm = number < args.warmup
            progress(f"{'warm-up' if warm else 'round'} {number + 1 - (0 if warm else args.warmup)}")
            db = scratch / f"audit-{number}.db"
            round_env = {**env, "DISPATCH_BOT_DB": str(db)}
            port = free_port()
            measured = {
                "python -c pass": run_to_exit([python, "-c", "pass"], round_env),
                "import argparse": run_to_exit([python, "-c", "import argparse"], round_env),
                "--help": run_to_exit([*cli, "--help"], round_env),
                "console -c help": run_to_exit([*cli, "console", "-c", "help"], round_env),
            }
            bare = run_to_ready([python, "-c", BARE_BOLT, str(port)], port, round_env, standins.new_response_url())
            served = run_to_ready(
                [*cli, "serve", "--http", "--host", "127.0.0.1", "--port", str(port)],
                port,
                round_env,
                standins.new_response_url(),
            )
            measured["bare Bolt to 200"], measured["bare Bolt to ack"] = bare
            measured["serve to 200"], measured["serve to ack"] = served
            if not warm:
                for target, seconds in measured.items():
                    times[target].append(seconds)

    def quartiles(values: list[float]) -> tuple[float, float]:
        if len(values) < 2:
            return values[0], values[0]
        q = statistics.quantiles(values, n=4, method="inclusive")
        return q[0], q[2]

    summary = {
        t: {"median_s": statistics.median(v), "p25_s": quartiles(v)[0], "p75_s": quartiles(v)[1]}
        for t, v in times.items()
    }
    med = {t: s["median_s"] for t, s in summary.items()}
    ratios = {
        "--help / python -c pass": med["--help"] / med["python -c pass"],
        "--help / import argparse": med["--help"] / med["import argparse"],
        "console -c help / python -c pass": med["console -c help"] / med["python -c pass"],
        "serve / bare Bolt": med["serve to 200"] / med["bare Bolt to 200"],
        "serve / bare Bolt, to first ack": med["serve to ack"] / med["bare Bolt to ack"],
    }
    return {
        "config": {"rounds": args.rounds, "warmup": args.warmup, "poll_ms": POLL_S * 1000},
        "environment": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "rounds": times,
        "median_of_rounds": summary,
        "ratios": ratios,
        "targets_met": {
            f"help_under_{TARGET_HELP_S:g}s": med["--help"] < TARGET_HELP_S,
            "serve_within_10pct_of_bare_bolt": ratios["serve / bare Bolt"] <= TARGET_SERVE_RATIO,
        },
    }


def table(report: dict[str, Any]) -> str:
    cfg, env = report["config"], report["environment"]
    lines = [
        f"start-up: {cfg['rounds']} alternating rounds after {cfg['warmup']} warm-up, each target a fresh process; "
        f"{env['cpus']} CPUs, Python {env['python']}",
        "",
        f"{'target':<20}{'median s':>10}{'p25 s':>9}{'p75 s':>9}",
    ]
    for target, s in report["median_of_rounds"].items():
        lines.append(f"{target:<20}{s['median_s']:>10.3f}{s['p25_s']:>9.3f}{s['p75_s']:>9.3f}")
    lines += ["", *(f"{name:<34}{ratio:>6.2f}x" for name, ratio in report["ratios"].items())]
    met = list(report["targets_met"].values())
    lines += [
        "",
        f"targets: --help under {TARGET_HELP_S:g} s: {'met' if met[0] else 'MISSED'}; serve to /healthz 200 within "
        f"{TARGET_SERVE_RATIO:.2f}x of the bare Bolt app: {'met' if met[1] else 'MISSED'}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.start", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9, help="measured rounds; each runs every target once")
    parser.add_argument("--warmup", type=int, default=1, help="rounds run first and not counted")
    parser.add_argument("--dir", default=None, help="where the temporary files go (default: system temp)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds at least 1, --warmup at least 0")

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    report = run_bench(args, progress)
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
