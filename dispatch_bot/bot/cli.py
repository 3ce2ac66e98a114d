"""`dispatch-bot`: serve, console, audit, check."""

from __future__ import annotations

# Only what building the parser needs is imported here: `--help` answers without loading asyncio, aiohttp,
# livekit or Bolt. Each command imports what it uses when it runs.
import argparse
import logging
import os
import sys
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio
    from pathlib import Path

    from aiohttp import web

    from ..commands.ports import Actor, AuditQuery
    from ..demo.session import Demo
    from .agent_catalog import AgentCatalog
    from .audit_store import AuditStore
    from .config import Settings
    from .runtime import Runtime
    from .slack_app import SlackTransport
    from .supervisor import Supervisor

log = logging.getLogger("dispatch_bot")


def _retention_actor() -> Actor:
    from ..commands.ports import Actor

    return Actor(source="cli", user_id="dispatch-bot", user_name="retention (audit.retention_days)")


def _version() -> str:
    """The installed package's version, as pip and the image know it."""
    import importlib.metadata

    try:
        return importlib.metadata.version("dispatch-bot")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed as a package: run `pip install .`)"


class _VersionAction(argparse.Action):
    """`--version`: the installed version, looked up only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        sys.stdout.write(f"dispatch-bot {_version()}\n")  # on stdout, as argparse's own version action
        parser.exit()


DEMO_HELP = "against a seeded LiveKit stand-in in this process (no LIVEKIT_URL; a temporary audit database)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dispatch-bot", description="Slack chat-ops for LiveKit agents.")
    parser.add_argument("--config", metavar="PATH", help="YAML config file (or DISPATCH_BOT_CONFIG)")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the Slack bot (Socket Mode if SLACK_APP_TOKEN is set, else HTTP)")
    serve.add_argument("--http", action="store_true", help="HTTP mode even when SLACK_APP_TOKEN is set")
    serve.add_argument(
        "--port", type=int, help="HTTP port for Slack (HTTP mode) and LiveKit webhooks (default PORT or 3000)"
    )
    serve.add_argument("--host", default="0.0.0.0", help="HTTP address to listen on (default 0.0.0.0)")
    serve.add_argument("--demo", action="store_true", help=DEMO_HELP)

    con = sub.add_parser("console", help="run commands from the terminal, audited as cli:<user>")
    con.add_argument("-c", dest="text", metavar="TEXT", help="run one command and exit (0 when ok or noop)")
    con.add_argument("--demo", action="store_true", help=DEMO_HELP)

    audit = sub.add_parser(
        "audit",
        help="print or export audit rows; `audit verify` checks the hash chain; `audit prune` removes old rows; "
        "`audit backup PATH` copies the database while the bot runs",
        description="Filters as key:value words (room:R agent:A user:U since:7d outcome:error limit:N) or as flags.",
    )
    audit.add_argument(
        "filters", nargs="*", metavar="FILTER", help="key:value filters, or verify, or prune, or backup PATH"
    )
    audit.add_argument(
        "--db", metavar="PATH", help="the audit database to read, such as a backup (default DISPATCH_BOT_DB)"
    )
    audit.add_argument("--room")
    audit.add_argument("--agent")
    audit.add_argument("--user", help="a Slack user id (U…) or cli:<os user>")
    audit.add_argument("--since", help="a duration (2h, 7d) or a date (2026-11-01)")
    audit.add_argument("--outcome", choices=("ok", "noop", "denied", "invalid", "error", "interrupted"))
    audit.add_argument("--limit", type=int, help="how many rows (default 20)")
    audit.add_argument("--all", action="store_true", help="every matching row (for export)")
    audit.add_argument("--format", choices=("table", "csv", "jsonl"), default="table")
    audit.add_argument("--older-than", metavar="DURATION", help="with prune: remove rows older than this")

    sub.add_parser(
        "check",
        help="check the configuration, LiveKit, Slack, the audit database and the agent folder; exit 0 when all pass",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        import gc

        gc.disable()  # until the bot is loaded: what start-up makes lives on, so collecting it is wasted work
    import asyncio

    from ..commands.ports import AuditError
    from .config import ConfigError, load_settings
    from .log_redaction import configure_logging, configured_secrets

    # The demo console prints supervision's alerts itself: its log lines would only repeat them.
    quiet = args.command == "console" and args.demo
    level = os.environ.get("DISPATCH_BOT_LOG_LEVEL", "WARNING" if quiet else "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        print(f"dispatch-bot: DISPATCH_BOT_LOG_LEVEL is {level!r}; use DEBUG, INFO, WARNING or ERROR.", file=sys.stderr)
        return 2
    if args.command == "check":
        return _check(args.config)
    demo: Demo | None = None
    try:
        settings = load_settings(args.config)
        configure_logging(level, configured_secrets(settings), settings.log_format)
        if args.command in ("serve", "console") and args.demo:
            from ..demo.session import Demo

            demo = Demo(settings)
            settings = demo.settings
        if args.command in ("serve", "console"):
            _check_database_path(settings)
        if args.command == "serve":
            http = args.http or not settings.slack_app_token
            settings.require_slack(http=http)
            port = settings.port if args.port is None else args.port
            if not 0 < port < 65536:
                raise ConfigError(f"--port is {port}; it must be a number from 1 to 65535.")
            return asyncio.run(_serve(settings, http=http, host=args.host, port=port, demo=demo))
        if args.command == "console":
            return asyncio.run(_console(settings, args.text, demo))
        if args.command == "audit":
            return asyncio.run(_audit_command(settings, args))
    except (ConfigError, AuditError) as exc:
        print(f"dispatch-bot: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader stopped early (`| head`): what it took is what it wanted, so a quiet exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if demo is not None:
            demo.remove_files()
    return 2


def _check_database_path(settings: Settings, *, write: bool = True) -> None:
    from .config import ConfigError
    from .db_path import database_path_problem

    problem = database_path_problem(settings.database, write=write)
    if problem is not None:
        raise ConfigError(problem)


async def _console(settings: Settings, text: str | None, demo: Demo | None = None) -> int:
    from .console import console
    from .runtime import Runtime

    if demo is None:
        runtime = await Runtime.open(settings)
        try:
            return await console(runtime, text)
        finally:
            await runtime.close()
    try:
        return await _demo_console(await demo.start(), text, demo)
    finally:
        await demo.close()


async def _demo_console(settings: Settings, text: str | None, demo: Demo) -> int:
    """The console against the demo server, with supervision running and its alerts printed between prompts."""
    import asyncio
    from dataclasses import replace

    from ..demo.session import intro_lines
    from .console import ConsolePoster, cli_actor, console
    from .runtime import Runtime

    runtime = await Runtime.open(settings)
    stop = asyncio.Event()
    watching = None
    try:
        await demo.attach(runtime)
        if runtime.supervisor is not None:
            runtime.supervisor.poster = ConsolePoster(sys.stdout)
            demo.note_alerts(runtime)
            watching = asyncio.create_task(runtime.supervisor.run(stop))
        # A channel of its own, so that supervision has somewhere to tell about the agents sent from here.
        actor = replace(cli_actor(), channel_id="console")
        intro = intro_lines(settings) if text is None else []
        local = demo.console_command(dict(settings.aliases), watching=watching is not None)
        return await console(runtime, text, actor=actor, intro=intro, local=local)
    finally:
        stop.set()
        if watching is not None:
            await watching
        await runtime.close()


async def _serve(settings: Settings, *, http: bool, host: str, port: int, demo: Demo | None = None) -> int:
    import asyncio
    import signal

    from aiohttp import web

    from ..commands.ports import AuditError
    from .agent_catalog import open_catalog
    from .audit_store import AuditStore
    from .config import ConfigError
    from .http_guard import app_runner
    from .slack_web import SlackSetupError, check_tokens, start_client
    from .starting import StartingBot, serve_web_app

    if demo is not None:
        settings = await demo.start()
    # The port opens once the database is and the tokens are checked; the rest of the bot loads after (starting.py).
    catalog = open_catalog(settings)
    audit = await AuditStore.open(settings.database, busy_timeout=settings.busy_timeout)
    runtime: Runtime | None = None
    transport: SlackTransport | None = None
    try:
        try:
            await check_tokens(settings, lambda token: start_client(settings, token), socket_mode=not http)
        except SlackSetupError as exc:
            raise ConfigError(str(exc)) from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # Commands a previous run acknowledged and never finished (it was killed) are settled before the port
        # opens when there are any; the usual start has none, and loads the rest of the bot while listening.
        try:
            interrupted = bool(await audit.unfinished())
        except AuditError:
            interrupted = False  # settle_unfinished says why, while the bot loads
        loaded = await _load_bot(settings, audit, catalog, demo, socket_mode=not http) if interrupted else None
        if loaded is not None:
            runtime, transport = loaded
        starting = StartingBot(settings, audit, socket_mode=not http)
        # Both modes listen on the port: HTTP mode for Slack's requests, both for LiveKit's webhooks and /healthz.
        runner = app_runner(serve_web_app(starting, settings, slack_events=http))
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(f"Cannot listen on {host}:{port} ({exc.strerror}): pick another PORT.") from None
        if loaded is None:
            loaded = await _load_bot(settings, audit, catalog, demo, socket_mode=not http)
            runtime, transport = loaded
        starting.ready(loaded[1])  # requests that waited go on now
        return await _serving(*loaded, runner, stop, http=http, host=host, port=port)
    finally:
        if transport is not None:
            await transport.aclose(followup_grace=0.0)
        if runtime is not None:
            await runtime.close()
        else:
            await audit.close()
        if demo is not None:
            await demo.close()


async def _load_bot(
    settings: Settings, audit: AuditStore, catalog: AgentCatalog | None, demo: Demo | None, *, socket_mode: bool
) -> tuple[Runtime, SlackTransport]:
    """The rest of the bot, loaded while the port answers /healthz; the commands left unfinished settled."""
    import gc

    from .starting import load_the_rest

    await load_the_rest(socket_mode=socket_mode)
    from .intake import settle_unfinished
    from .runtime import Runtime
    from .slack_app import SlackTransport

    runtime = Runtime.assemble(settings, audit, catalog)
    transport = SlackTransport(runtime)
    if demo is not None:
        await demo.attach(runtime)
        demo.note_alerts(runtime)
    if socket_mode:
        transport.socket_mode_handler()  # /healthz follows its connection from now
    # Commands a previous run acknowledged and never finished: a row each, and a word, before any new one runs.
    await settle_unfinished(runtime.audit, transport.respond_ephemeral)
    gc.freeze()  # what start-up made lives as long as the process: keep it out of every later collection
    gc.enable()
    return runtime, transport


async def _serving(
    runtime: Runtime,
    transport: SlackTransport,
    runner: web.AppRunner,
    stop: asyncio.Event,
    *,
    http: bool,
    host: str,
    port: int,
) -> int:
    """Serve until SIGINT or SIGTERM, then stop taking requests and finish the commands in progress."""
    import asyncio
    import importlib

    from .slack_app import SocketWatch

    settings = runtime.settings
    retention = asyncio.create_task(_apply_retention(runtime, stop)) if settings.retention_days else None
    # livekit-api and protobuf load in a thread now, so supervision's first poll does not hold up the event loop;
    # a command that calls LiveKit meanwhile waits for them.
    gateway_loaded = asyncio.create_task(asyncio.to_thread(importlib.import_module, "dispatch_bot.bot.livekit_gateway"))
    supervisor = runtime.supervisor
    watching = asyncio.create_task(_supervise(supervisor, gateway_loaded, stop)) if supervisor is not None else None
    if http:
        log.info("HTTP mode: POST /slack/events, POST /livekit/webhook, GET /healthz and /metrics on %s:%d", host, port)
        await stop.wait()
    else:
        log.info("Socket Mode; POST /livekit/webhook, GET /healthz and /metrics on %s:%d", host, port)
        handler = transport.socket
        assert handler is not None
        connecting = asyncio.create_task(handler.connect_async())  # type: ignore[no-untyped-call]
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if connecting.done():
            connecting.result()
            log.info("Socket Mode: connected")
            # Awaits the client's connection check and reconnects when it stays down; /healthz follows it.
            watch = asyncio.create_task(SocketWatch(handler, settings.socket_check_interval).run(stop))
            await stopping
            await watch
        else:
            connecting.cancel()
        stopping.cancel()
        await handler.close_async()  # type: ignore[no-untyped-call]
    await runner.cleanup()  # no new requests; those already acknowledged finish below
    if watching is not None:
        await watching
    log.info("stopping: finishing the commands in progress (at most %g s)", settings.shutdown_timeout)
    await transport.aclose(followup_grace=5.0, timeout=settings.shutdown_timeout)
    if retention is not None:
        retention.cancel()
    await gateway_loaded
    return 0


async def _supervise(supervisor: Supervisor, gateway_loaded: Awaitable[object], stop: asyncio.Event) -> None:
    """Supervision, from its first poll once LiveKit's client is loaded."""
    await gateway_loaded
    await supervisor.run(stop)


async def _apply_retention(runtime: Runtime, stop: asyncio.Event) -> None:
    """audit.retention_days: prune at start and every audit.prune_interval while serving."""
    import asyncio
    import contextlib
    from datetime import UTC, datetime, timedelta

    from ..commands.ports import AuditError

    settings = runtime.settings
    while not stop.is_set():
        cutoff = datetime.now(UTC) - timedelta(days=settings.retention_days or 0)
        try:
            result = await runtime.audit.prune(cutoff, _retention_actor())
            if result.removed:
                log.info("retention: removed %d audit rows older than %s", result.removed, cutoff.date())
        except AuditError as exc:
            log.warning("retention: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.prune_interval)


async def _audit_command(settings: Settings, args: argparse.Namespace) -> int:
    import contextlib
    from collections.abc import AsyncGenerator
    from dataclasses import replace
    from datetime import UTC, datetime
    from pathlib import Path
    from typing import cast

    from ..commands.audit import parse_filters
    from ..commands.grammar import GrammarError
    from ..commands.ports import AuditRow
    from .audit_store import AuditStore
    from .config import ConfigError

    words: list[str] = list(args.filters)
    if args.db:
        settings = replace(settings, database=args.db)
    if not Path(settings.database).exists():
        where = "--db" if args.db else "DISPATCH_BOT_DB (or audit.database)"
        raise ConfigError(f"The audit database {settings.database} does not exist: check {where}.")
    _check_database_path(settings, write=False)
    if words[:1] == ["backup"]:
        if len(words) != 2:
            raise ConfigError("audit backup takes one PATH: the new file to write the copy to.")
        return await _backup(settings, Path(words[1]))
    if words[:1] == ["verify"]:
        if len(words) > 1:
            raise ConfigError("audit verify takes no filters.")
        return await _verify(settings)
    if words[:1] == ["prune"]:
        if len(words) > 1:
            raise ConfigError("audit prune takes only --older-than DURATION.")
        return await _prune(settings, args.older_than)
    if args.older_than:
        raise ConfigError("--older-than goes with audit prune.")
    for flag in ("room", "agent", "user", "since", "outcome"):
        value = getattr(args, flag)
        if value is not None:
            words.append(f"{flag}:{value}")
    if args.limit is not None:
        if args.all:
            raise ConfigError("Give --limit or --all, not both.")
        words.append(f"limit:{args.limit}")
    try:
        query = parse_filters(words, now=datetime.now(UTC), aliases=settings.aliases, max_limit=None)
    except GrammarError as exc:
        raise ConfigError(str(exc)) from None
    store = await AuditStore.open(settings.database)
    try:
        # The row stream is closed before the store, also when the reader goes away in the middle of it.
        limit = None if args.all else query.limit
        out = sys.stdout
        if args.format == "jsonl":
            async with contextlib.aclosing(
                cast(AsyncGenerator[str, None], store.json_lines(query, limit=limit))
            ) as lines:
                async for text in lines:
                    out.write(text)
        elif args.format == "csv":
            await _write_csv(store, query, limit)
        stream = cast(AsyncGenerator[AuditRow, None], store.rows(query, limit=limit))
        async with contextlib.aclosing(stream) as rows:
            if args.format == "table":
                out.write(
                    f"{'id':>6}  {'time (UTC)':19}  {'user':16}  {'action':9}  {'room':20}  {'outcome':7}  detail\n"
                )
                async for row in rows:
                    who = row.user_name or row.user_id
                    out.write(
                        f"{row.id:>6}  {row.ts[:19].replace('T', ' '):19}  {who[:16]:16}  {row.action[:9]:9}  "
                        f"{row.room[:20]:20}  {row.outcome:7}  {row.detail}\n"
                    )
            out.flush()  # a reader gone away (`| head`) shows here, not in the interpreter's exit
    finally:
        await store.close()
    return 0


async def _write_csv(store: AuditStore, query: AuditQuery, limit: int | None) -> None:
    """The CSV export on a text layer of its own over stdout's bytes, opened with newline="" as the csv module
    asks: it writes a quarter faster than sys.stdout does, with the same encoding and the same bytes."""
    import contextlib
    import io

    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:  # stdout replaced by a text-only stream
        await store.write_csv(sys.stdout, query, limit=limit)
        return
    sys.stdout.flush()
    out = io.TextIOWrapper(buffer, encoding=sys.stdout.encoding, errors=sys.stdout.errors, newline="")
    try:
        await store.write_csv(out, query, limit=limit)
        out.flush()
    finally:
        with contextlib.suppress(OSError, ValueError):  # a reader gone away: main() says nothing of it
            out.detach()  # stdout's bytes stay open for the interpreter's own exit


async def _backup(settings: Settings, target: Path) -> int:
    """SQLite's online backup into a new file beside the target, checked, then renamed into place."""
    from .audit_store import AuditStore
    from .config import ConfigError

    if target.exists():
        raise ConfigError(f"{target} already exists: give a new file name (a backup never overwrites a file).")
    if not target.parent.is_dir():
        raise ConfigError(f"The folder {target.parent} for the backup does not exist: create it first.")
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        store = await AuditStore.open(settings.database)
        try:
            await store.backup(partial)
        finally:
            await store.close()
        copy = await AuditStore.open(partial)
        try:
            result = await copy.verify()
        finally:
            await copy.close()
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    if result.intact:
        print(f"backup written to {target}: {result.rows} rows, chain verified.")
        return 0
    print(f"backup written to {target}, but its chain is BROKEN at row {result.broken_id}: {result.problem}")
    return 1


async def _verify(settings: Settings) -> int:
    from .audit_store import AuditStore

    store = await AuditStore.open(settings.database)
    try:
        result = await store.verify()
    finally:
        await store.close()
    if result.intact:
        start = f" from row {result.first_id}" if result.first_id and result.first_id > 1 else ""
        print(f"audit log intact: {result.rows} rows{start}, every hash and link checked.")
        return 0
    print(f"audit log BROKEN at row {result.broken_id}: {result.problem} ({result.rows} rows before it check out).")
    return 1


async def _prune(settings: Settings, older_than: str | None) -> int:
    from datetime import UTC, datetime, timedelta

    from ..commands.grammar import GrammarError, parse_duration
    from .audit_store import AuditStore
    from .config import ConfigError
    from .console import cli_actor

    if older_than is None and settings.retention_days is None:
        raise ConfigError("audit prune needs --older-than DURATION (like 90d), or audit.retention_days in the config.")
    try:
        seconds = parse_duration(older_than) if older_than else (settings.retention_days or 0) * 86400
    except GrammarError as exc:
        raise ConfigError(f"--older-than: {exc}") from None
    store = await AuditStore.open(settings.database)
    try:
        result = await store.prune(datetime.now(UTC) - timedelta(seconds=seconds), cli_actor())
    finally:
        await store.close()
    if result.removed:
        print(
            f"removed {result.removed} rows, up to row {result.anchor_id}; `dispatch-bot audit verify` still checks "
            "the rest against that row's hash."
        )
    else:
        print("nothing to remove.")
    return 0


def _check(config_path: str | None) -> int:
    import asyncio

    from .check import config_failed, run_checks
    from .config import ConfigError, load_settings
    from .log_redaction import configure_logging, configured_secrets

    try:
        settings = load_settings(config_path)
    except ConfigError as exc:
        return config_failed(exc)
    # the check's own lines say what went wrong
    configure_logging("ERROR", configured_secrets(settings), settings.log_format)
    try:
        return asyncio.run(run_checks(settings, config_path or os.environ.get("DISPATCH_BOT_CONFIG")))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
