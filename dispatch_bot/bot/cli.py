"""`dispatch-bot`: serve, console, audit, check."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import TextIO

from aiohttp import web

from ..commands.ports import AuditError
from .audit_store import COLUMNS, AuditStore
from .config import ConfigError, Settings, load_settings
from .console import console
from .log_redaction import configure_logging
from .runtime import Runtime

log = logging.getLogger("dispatch_bot")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dispatch-bot", description="Slack chat-ops for LiveKit agents.")
    parser.add_argument("--config", metavar="PATH", help="YAML config file (or DISPATCH_BOT_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the Slack bot (Socket Mode if SLACK_APP_TOKEN is set, else HTTP)")
    serve.add_argument("--http", action="store_true", help="HTTP mode even when SLACK_APP_TOKEN is set")
    serve.add_argument("--port", type=int, help="HTTP port (default PORT or 3000)")
    serve.add_argument("--host", default="0.0.0.0", help="HTTP address to listen on (default 0.0.0.0)")

    con = sub.add_parser("console", help="run commands from the terminal, audited as cli:<user>")
    con.add_argument("-c", dest="text", metavar="TEXT", help="run one command and exit (0 when ok or noop)")

    audit = sub.add_parser("audit", help="print the newest audit rows")
    audit.add_argument("--limit", type=int, default=20, help="how many rows (default 20)")
    audit.add_argument("--format", choices=("table", "csv", "jsonl"), default="table")

    sub.add_parser("check", help="validate the configuration and reach the LiveKit server")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = os.environ.get("DISPATCH_BOT_LOG_LEVEL", "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        print(f"dispatch-bot: DISPATCH_BOT_LOG_LEVEL is {level!r}; use DEBUG, INFO, WARNING or ERROR.", file=sys.stderr)
        return 2
    try:
        settings = load_settings(args.config)
        configure_logging(
            level,
            [
                settings.slack_bot_token,
                settings.slack_app_token,
                settings.slack_signing_secret,
                settings.livekit_api_secret,
            ],
        )
        if args.command == "serve":
            http = args.http or not settings.slack_app_token
            settings.require_slack(http=http)
            return asyncio.run(_serve(settings, http=http, host=args.host, port=args.port or settings.port))
        if args.command == "console":
            return asyncio.run(_console(settings, args.text))
        if args.command == "audit":
            if not 1 <= args.limit <= 1_000_000:
                raise ConfigError("--limit must be between 1 and 1,000,000.")
            return asyncio.run(_audit(settings, args.limit, args.format, sys.stdout))
        if args.command == "check":
            return asyncio.run(_check(settings))
    except (ConfigError, AuditError) as exc:
        print(f"dispatch-bot: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


async def _console(settings: Settings, text: str | None) -> int:
    runtime = await Runtime.open(settings)
    try:
        return await console(runtime, text)
    finally:
        await runtime.close()


async def _serve(settings: Settings, *, http: bool, host: str, port: int) -> int:
    from .slack_app import SlackTransport

    runtime = await Runtime.open(settings)
    transport = SlackTransport(runtime)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if http:
            runner = web.AppRunner(transport.web_app())
            await runner.setup()
            try:
                await web.TCPSite(runner, host, port).start()
            except OSError as exc:
                raise ConfigError(f"Cannot listen on {host}:{port} ({exc.strerror}): pick another PORT.") from None
            log.info("HTTP mode: POST /slack/events and GET /healthz on %s:%d", host, port)
            await stop.wait()
            await runner.cleanup()
        else:
            handler = transport.socket_mode_handler()
            await handler.connect_async()  # type: ignore[no-untyped-call]
            log.info("Socket Mode: connected")
            await stop.wait()
            await handler.close_async()  # type: ignore[no-untyped-call]
        await transport.drain()
    finally:
        await runtime.close()
    return 0


async def _audit(settings: Settings, limit: int, fmt: str, out: TextIO) -> int:
    store = await AuditStore.open(settings.database)
    try:
        rows = store.rows(limit=limit, newest_first=True)
        if fmt == "jsonl":
            async for row in rows:
                out.write(json.dumps(row.as_dict(), ensure_ascii=False) + "\n")
        elif fmt == "csv":
            writer = csv.writer(out)
            writer.writerow(COLUMNS)
            async for row in rows:
                writer.writerow(row.as_dict()[c] for c in COLUMNS)
        else:
            out.write(f"{'id':>6}  {'time (UTC)':19}  {'user':16}  {'action':9}  {'room':20}  {'outcome':7}  detail\n")
            async for row in rows:
                who = row.user_name or row.user_id
                out.write(
                    f"{row.id:>6}  {row.ts[:19].replace('T', ' '):19}  {who[:16]:16}  {row.action[:9]:9}  "
                    f"{row.room[:20]:20}  {row.outcome:7}  {row.detail}\n"
                )
    finally:
        await store.close()
    return 0


async def _check(settings: Settings) -> int:
    from .livekit_gateway import LiveKitGateway

    problems = 0
    print(f"config: ok (LiveKit {settings.livekit_url}, audit database {settings.database})")
    if settings.livekit_api_key == "devkey" and settings.livekit_api_secret == "secret":
        print(
            "livekit: using LiveKit's development key and secret (devkey/secret); set LIVEKIT_API_KEY and "
            "LIVEKIT_API_SECRET for a real server."
        )
    gateway = LiveKitGateway(
        settings.livekit_url,
        settings.livekit_api_key,
        settings.livekit_api_secret,
        timeout=settings.request_timeout,
    )
    try:
        await gateway.get_room("dispatch-bot-check")
        print(f"livekit: reached {gateway.url} and the credentials were accepted")
    except Exception as exc:
        problems += 1
        print(f"livekit: {exc}")
    finally:
        await gateway.aclose()
    try:
        store = await AuditStore.open(settings.database)
        await store.close()
        print(f"audit: {settings.database} is writable")
    except AuditError as exc:
        problems += 1
        print(f"audit: {exc}")
    print("policy: none configured, so everyone in the workspace may run every command.")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
