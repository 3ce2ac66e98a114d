"""What an operator sees: one log line per command (plain or JSON), `GET /metrics`, and never a secret in either."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from dispatch_bot.bot.cli import main
from dispatch_bot.bot.config import Settings
from dispatch_bot.bot.log_redaction import configure_logging
from dispatch_bot.bot.slack_app import SlackTransport
from tests.conftest import BOT_TOKEN, SIGNING_SECRET, BotUnderTest, all_text
from tests.fakes.livekit_server import FakeLiveKit
from tests.fakes.livekit_webhooks import sign_webhook
from tests.fakes.slack_requests import slash_command_form
from tests.fakes.slack_server import Failure, FakeSlack
from tests.test_console import ServedBot, bot_env
from tests.test_link import link_button, token_of

# Long enough for the redaction of configured secrets (the dev secret "secret" is an ordinary word).
LIVEKIT_SECRET = "lk-secret-7f3a9c2e51d84b06a1e9"
APP_TOKEN = "xapp-1-A0TEST-1234-0123456789abcdef"
TYPED_TOKEN = "xoxb-9999-8888-TypedByAPerson"
ENV = {"LIVEKIT_API_SECRET": LIVEKIT_SECRET, "SLACK_APP_TOKEN": APP_TOKEN}
LINE = re.compile(r"^\S+ \S+ INFO dispatch_bot\.commands\.runner: command (?P<fields>.*)$", re.MULTILINE)


@pytest.fixture
async def livekit() -> AsyncIterator[FakeLiveKit]:
    async with FakeLiveKit(api_secret=LIVEKIT_SECRET, job_delay=0.02, unavailable_delay=0.05) as server:
        yield server


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_token=BOT_TOKEN, app_token=APP_TOKEN) as server:
        yield server


@contextlib.contextmanager
def captured_logs(log_format: str, level: str = "DEBUG", secrets: Iterable[str] = ()) -> Iterator[io.StringIO]:
    """Everything every logger says, through the bot's own logging setup; loggers' levels are put back after."""
    loggers = {n: lg for n, lg in logging.root.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    levels = {n: lg.level for n, lg in loggers.items()}
    root_level = logging.getLogger().level
    for logger in loggers.values():
        logger.setLevel(logging.NOTSET)  # every one at the root's level: slack_sdk, bolt, aiohttp included
    stream = io.StringIO()
    handler = configure_logging(level, secrets, log_format, stream)
    try:
        yield stream
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(root_level)
        for name, known in logging.root.manager.loggerDict.items():
            if isinstance(known, logging.Logger):  # those made meanwhile go back to NOTSET too
                known.setLevel(levels.get(name, logging.NOTSET))


def command_lines(text: str) -> list[dict[str, str]]:
    """The key=value fields of each plain command line."""
    found = []
    for match in LINE.finditer(text):
        found.append({k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', match["fields"])})
    return found


async def metrics(bot: BotUnderTest) -> str:
    async with bot.http.get(f"{bot.url}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=")  # Prometheus text format
        return await resp.text()


def sample(body: str, name: str, **labels: str) -> float:
    """The value of one series in a /metrics body; 0 when it is not there."""
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


async def dispatched(bot: BotUnderTest, slack: FakeSlack, text: str = "captions my-room") -> None:
    """A dispatch and its follow-up, both finished."""
    await bot.command(text)
    await slack.wait_for_web_call("chat.update")
    await bot.transport.drain()


async def test_a_command_and_its_follow_up_make_one_line_each_with_the_same_request_id(
    start_bot: Callable[..., Any], livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room")
    livekit.register_worker("speech-processing")
    bot = await start_bot(**ENV)
    with captured_logs("plain", "INFO") as out:
        await dispatched(bot, slack)
    first, followup = command_lines(out.getvalue())
    assert re.fullmatch(r"[0-9a-f]{8}", first["request_id"])
    assert {k: v for k, v in first.items() if k not in ("request_id", "duration_ms")} == {
        "actor": "slack:U123",
        "action": "dispatch",
        "agent": "speech-processing",
        "room": "my-room",
        "outcome": "ok",
    }
    assert first["duration_ms"].isdigit()
    assert (followup["request_id"], followup["action"], followup["outcome"]) == (first["request_id"], "followup", "ok")
    assert "captions" not in out.getvalue()  # the typed text is in the audit log, not in the log


async def test_json_lines_carry_the_command_fields_and_every_line_is_json(
    start_bot: Callable[..., Any], livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room")
    bot = await start_bot(**ENV)
    with captured_logs("json", "INFO") as out:
        await bot.reply("list my-room")
        await bot.transport.drain()
        logging.getLogger("dispatch_bot").warning("a line that is not a command's")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    [command] = [line for line in lines if line.get("action")]
    assert command["level"] == "INFO" and command["logger"] == "dispatch_bot.commands.runner"
    assert command["message"].startswith(f"command request_id={command['request_id']} actor=slack:U123 action=list")
    assert (command["actor"], command["room"], command["agent"], command["outcome"]) == (
        "slack:U123",
        "my-room",
        "",
        "ok",
    )
    assert isinstance(command["duration_ms"], int) and command["ts"].endswith("+00:00")
    [other] = [line for line in lines if line["message"] == "a line that is not a command's"]
    assert (other["level"], other["logger"]) == ("WARNING", "dispatch_bot") and "action" not in other


def test_json_lines_mask_secrets_in_the_message_the_fields_and_the_exception() -> None:
    with captured_logs("json", "INFO", [LIVEKIT_SECRET]) as out:
        log = logging.getLogger("dispatch_bot.test")
        log.info("room %s", LIVEKIT_SECRET, extra={"room": LIVEKIT_SECRET, "actor": f"slack:{TYPED_TOKEN}"})
        try:
            raise RuntimeError(f"failed with {BOT_TOKEN}")
        except RuntimeError:
            log.exception("oops")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert (first["message"], first["room"], first["actor"]) == ("room [redacted]", "[redacted]", "slack:[redacted]")
    assert "RuntimeError: failed with [redacted]" in second["exception"]
    for secret in (LIVEKIT_SECRET, TYPED_TOKEN, BOT_TOKEN):
        assert secret not in out.getvalue()


async def test_metrics_show_commands_livekit_calls_and_audit_appends_of_this_bot_only(
    start_bot: Callable[..., Any], livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room")
    livekit.register_worker("speech-processing")
    bot = await start_bot(**ENV)
    other = await start_bot(**ENV)  # a second bot in the same process keeps its own counts
    await dispatched(bot, slack)
    await bot.reply("stop nobody my-room")
    await bot.transport.drain()
    body = await metrics(bot)
    assert sample(body, "dispatch_bot_commands_total", action="dispatch", outcome="ok") == 1
    assert sample(body, "dispatch_bot_commands_total", action="followup", outcome="ok") == 1
    assert sample(body, "dispatch_bot_commands_total", action="stop", outcome="noop") == 1
    assert sample(body, "dispatch_bot_livekit_call_seconds_count", method="CreateDispatch") == 1
    assert sample(body, "dispatch_bot_livekit_call_seconds_count", method="ListDispatch") >= 1
    assert sample(body, "dispatch_bot_audit_append_seconds_count") == 3
    # Each command's steps: both ran and wrote their row; only the dispatch noted its message. Its watch went in its
    # row's transaction (the watch step counts a watch written on its own, when that transaction failed).
    for step, times in (("queue", 2), ("command", 2), ("audit", 2), ("deliver", 2), ("watch", 0), ("thread", 1)):
        assert sample(body, "dispatch_bot_command_step_seconds_count", step=step) == times, step
    assert sample(body, "dispatch_bot_command_received_seconds_count", result="recorded") == 2  # before each ack
    assert sample(await metrics(other), "dispatch_bot_commands_total", action="dispatch", outcome="ok") == 0
    assert "my-room" not in body and "U123" not in body  # no room, no person as a label


async def test_a_livekit_failure_is_counted_by_method_and_kind(
    start_bot: Callable[..., Any], livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    bot = await start_bot(**ENV)
    await livekit.stop()  # the server is gone
    result = await bot.reply("list my-room")
    assert "Cannot reach the LiveKit server" in all_text(result)
    await bot.transport.drain()
    body = await metrics(bot)
    assert sample(body, "dispatch_bot_commands_total", action="list", outcome="error") == 1
    assert sample(body, "dispatch_bot_livekit_call_errors_total", method="ListRooms", kind="unreachable") == 1


async def test_a_slack_api_error_is_counted(
    start_bot: Callable[..., Any], livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room")
    livekit.register_worker("speech-processing")
    bot = await start_bot(**ENV)
    slack.fail("chat.postMessage", Failure.not_ok("fatal_error", times=1))
    result = await bot.command("captions my-room")
    await slack.wait_for_response(url=result.response_url)  # the reply came the other way
    await bot.transport.drain()
    body = await metrics(bot)
    assert sample(body, "dispatch_bot_slack_api_errors_total", method="chat.postMessage", error="fatal_error") == 1


async def test_webhooks_are_counted_by_event_and_refused_ones_by_reason(
    start_bot: Callable[..., Any], livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    bot = await start_bot(**ENV)
    livekit.add_webhook_url(f"{bot.url}/livekit/webhook")
    livekit.add_room("my-room")  # LiveKit tells: room_started, signed with the key and secret
    await livekit.wait_webhooks_idle()
    body = '{"event": "room_started", "room": {"name": "my-room"}}'
    forged = {"Authorization": sign_webhook(body, "devkey", "not-the-secret"), "Content-Type": "application/json"}
    async with bot.http.post(f"{bot.url}/livekit/webhook", data=body, headers=forged) as resp:
        assert resp.status == 401
    text = await metrics(bot)
    assert sample(text, "dispatch_bot_webhook_events_total", event="room_started") == 1
    assert sample(text, "dispatch_bot_webhooks_refused_total", reason="bad_signature") == 1


async def test_socket_mode_serves_metrics_on_its_port_too(bot: BotUnderTest) -> None:
    runner = web.AppRunner(bot.transport.web_app(slack_events=False))  # what `serve` runs in Socket Mode
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with bot.http.get(f"http://127.0.0.1:{port}/metrics") as resp:
            assert resp.status == 200
            assert "dispatch_bot_watches 0.0" in await resp.text()
    finally:
        await runner.cleanup()


async def test_serve_with_log_format_json_writes_only_json_lines_and_serves_metrics(
    make_settings: Callable[..., Settings], tmp_path: Path, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    env = {**bot_env(make_settings(**ENV), tmp_path / "dispatch-bot.yaml"), "LOG_FORMAT": "json", **ENV}
    async with ServedBot(env) as served:
        response_url = slack.new_response_url()
        assert await served.command("list my-room", response_url) == 200
        await slack.wait_for_response(url=response_url)
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{served.port}/metrics") as resp:
            text = await resp.text()
    assert served.returncode == 0, served.log
    lines = [json.loads(line) for line in served.log.splitlines()]
    [command] = [line for line in lines if line.get("action") == "list"]
    assert (command["room"], command["outcome"], command["actor"]) == ("my-room", "ok", "slack:U123")
    assert any("GET /healthz and /metrics" in line["message"] for line in lines)
    assert sample(text, "dispatch_bot_commands_total", action="list", outcome="ok") == 1
    for secret in (BOT_TOKEN, SIGNING_SECRET, LIVEKIT_SECRET, APP_TOKEN):
        assert secret not in served.log + text


def test_an_unknown_log_format_is_one_sentence_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("LOG_FORMAT", "xml")
    assert main(["console", "-c", "help"]) == 2
    assert capsys.readouterr().err == "dispatch-bot: LOG_FORMAT is 'xml'; use plain or json.\n"
    monkeypatch.delenv("LOG_FORMAT")
    config = tmp_path / "bot.yaml"
    config.write_text("logging:\n  format: yaml\n")
    assert main(["--config", str(config), "console", "-c", "help"]) == 2
    assert capsys.readouterr().err == f"dispatch-bot: {config}: `logging.format` is 'yaml'; use plain or json.\n"


@pytest.mark.parametrize("log_format", ["plain", "json"])
async def test_no_secret_reaches_the_log_or_the_metrics_in_a_full_scenario_at_debug(
    start_bot: Callable[..., Any], livekit: FakeLiveKit, slack: FakeSlack, log_format: str
) -> None:
    livekit.add_room("my-room", humans=["alice"])
    livekit.register_worker("speech-processing")
    secrets = [BOT_TOKEN, APP_TOKEN, SIGNING_SECRET, LIVEKIT_SECRET]
    with captured_logs(log_format, "DEBUG", secrets) as out:
        bot = await start_bot("watch:\n  poll_interval: 60s\n", **ENV)
        supervisor = bot.runtime.supervisor
        assert supervisor is not None
        stop = asyncio.Event()
        watching = asyncio.create_task(supervisor.run(stop))
        livekit.add_webhook_url(f"{bot.url}/livekit/webhook")
        try:
            await dispatched(bot, slack)
            minted = [token_of(link_button(await bot.reply(f"link {room}"))["url"]) for room in ("my-room", "new")]
            await bot.reply("list my-room")
            livekit.agent_leaves("my-room", "speech-processing")  # a webhook, then an alert
            await livekit.wait_webhooks_idle()
            await supervisor.settled()
            await bot.reply(f"audit room:{TYPED_TOKEN}")
            await bot.reply(f"list {LIVEKIT_SECRET}")
            await bot.command("stop captions my-room")  # answered in the channel
            await slack.wait_for_web_call("chat.postMessage", count=3)
            await bot.reply("audit room:my-room")
            await socket_mode_command(bot.transport, slack, f"list {TYPED_TOKEN}")
            await bot.transport.drain()
            exposition = await metrics(bot)
        finally:
            stop.set()
            await watching
    logged = out.getvalue()
    if log_format == "json":
        assert all(json.loads(line) for line in logged.splitlines())
    assert "Sending a request" in logged  # slack_sdk's own debug lines were captured
    assert sample(exposition, "dispatch_bot_alerts_total", kind="agent_left") == 1
    assert sample(exposition, "dispatch_bot_webhook_events_total", event="participant_left") >= 1
    assert len(minted) == 2 and all(minted)
    for secret in [*secrets, TYPED_TOKEN, *minted]:
        assert secret not in logged, secret
        assert secret not in exposition, secret


async def socket_mode_command(transport: SlackTransport, slack: FakeSlack, text: str) -> None:
    """One command over Socket Mode (the app token's path), answered."""
    handler = transport.socket_mode_handler()
    await handler.connect_async()  # type: ignore[no-untyped-call]
    try:
        await slack.wait_socket_connected()
        response_url = slack.new_response_url()
        envelope = await slack.send_envelope("slash_commands", slash_command_form(text, response_url=response_url))
        await slack.wait_for_ack(envelope)
        await slack.wait_for_response(url=response_url)
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]
        transport.socket = None


async def test_metrics_never_fail_the_scrape_when_the_database_is_gone(bot: BotUnderTest) -> None:
    await bot.runtime.audit.close()
    async with aiohttp.ClientSession() as http, http.get(f"{bot.url}/metrics") as resp:
        assert resp.status == 200
