"""The terminal: `dispatch-bot console`, `console -c`, `audit` and `serve`, run as the real program."""

from __future__ import annotations

import asyncio
import csv
import getpass
import io
import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp

from dispatch_bot.bot.config import Settings
from tests.conftest import SIGNING_SECRET, read_audit
from tests.fakes.livekit_server import FakeLiveKit
from tests.fakes.slack_requests import signed_headers, slash_command_body
from tests.fakes.slack_server import FakeSlack

CLI = [sys.executable, "-m", "dispatch_bot.bot.cli"]


def bot_env(settings: Settings, config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "LIVEKIT_", "DISPATCH_BOT_"))}
    env.update(
        {
            "DISPATCH_BOT_CONFIG": str(config),
            "LIVEKIT_URL": settings.livekit_url,
            "SLACK_API_URL": settings.slack_api_url,
            "DISPATCH_BOT_DB": settings.database,
            "SLACK_BOT_TOKEN": settings.slack_bot_token,
            "SLACK_SIGNING_SECRET": settings.slack_signing_secret,
        }
    )
    return env


async def run_cli(args: list[str], env: dict[str, str], stdin: str = "") -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout=60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_one_shot_dispatch_prints_the_result_and_the_follow_up(
    make_settings: Callable[..., Settings], tmp_path: Path, livekit: FakeLiveKit
) -> None:
    settings = make_settings()
    livekit.add_room("my-room")
    livekit.register_worker("speech-processing")
    code, out, err = await run_cli(
        ["console", "-c", "captions my-room"], bot_env(settings, tmp_path / "dispatch-bot.yaml")
    )
    user = f"cli:{getpass.getuser()}"
    assert code == 0, err
    assert f"{user} sent speech-processing (captions) into my-room (dispatch `AD_" in out
    assert "The agent joined as `agent-" in out
    assert "stop: stop AD_" in out
    assert "Traceback" not in out + err
    rows = read_audit(Path(settings.database))
    assert [(r["source"], r["user_id"], r["action"], r["outcome"]) for r in rows] == [
        ("cli", user, "dispatch", "ok"),
        ("cli", user, "followup", "ok"),
    ]


async def test_one_shot_exit_status_is_non_zero_for_bad_input_and_errors(
    make_settings: Callable[..., Settings], tmp_path: Path, livekit: FakeLiveKit
) -> None:
    env = bot_env(make_settings(), tmp_path / "dispatch-bot.yaml")
    code, out, _ = await run_cli(["console", "-c", "captions"], env)
    assert code == 1
    assert "Give an agent and a room." in out and "Usage:" in out
    env["LIVEKIT_URL"] = "http://127.0.0.1:9"
    code, out, err = await run_cli(["console", "-c", "list my-room"], env)
    assert code == 1
    assert "Cannot reach the LiveKit server at http://127.0.0.1:9" in out
    assert "Traceback" not in out + err
    assert livekit.requests == []


async def test_console_keeps_a_lone_star_and_drops_only_paired_markup(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    env = bot_env(make_settings(), tmp_path / "dispatch-bot.yaml")
    env.pop("OPENVIDU_AGENTS_DIR", None)
    code, out, _ = await run_cli(["console", "-c", "agents"], env)
    assert code == 0, out
    assert "OpenVidu's agent-*.yaml files" in out  # Slack shows the same words; the * is not markup
    code, out, _ = await run_cli(["console", "-c", "help"], env)
    assert "*" not in out.replace("agent-*", ""), out  # bold pairs (*Usage*) are dropped in a terminal


async def test_interactive_console(
    make_settings: Callable[..., Settings], tmp_path: Path, livekit: FakeLiveKit
) -> None:
    env = bot_env(make_settings(), tmp_path / "dispatch-bot.yaml")
    livekit.add_room("my-room", agents=["speech-processing"])
    code, out, _ = await run_cli(["console"], env, stdin="help\nlist my-room\nquit\n")
    assert code == 0
    assert "list <room>" in out
    assert "my-room: 1 dispatch, 1 person in the room." in out
    assert out.count("dispatch> ") == 3


async def test_audit_command_prints_table_csv_and_jsonl(
    make_settings: Callable[..., Settings], tmp_path: Path, livekit: FakeLiveKit
) -> None:
    env = bot_env(make_settings(), tmp_path / "dispatch-bot.yaml")
    for text in ("help", "list my-room", "captions"):
        await run_cli(["console", "-c", text], env)
    code, out, _ = await run_cli(["audit", "--limit", "2"], env)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["id", "time"] and len(lines) == 3
    assert "invalid" in lines[1] and "list" in lines[2]
    code, out, _ = await run_cli(["audit", "--format", "csv"], env)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["action"] for r in rows] == ["dispatch", "list", "help"]
    assert rows[0]["hash"] and rows[0]["prev_hash"] == rows[1]["hash"]
    code, out, _ = await run_cli(["audit", "--format", "jsonl", "--limit", "1"], env)
    [row] = [json.loads(line) for line in out.splitlines()]
    assert (row["raw_text"], row["outcome"]) == ("captions", "invalid")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServedBot:
    """`dispatch-bot serve --http` as a real process: signed commands in, SIGTERM to stop it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self.returncode: int | None = None
        self.log = ""

    async def __aenter__(self) -> ServedBot:
        self.proc = await asyncio.create_subprocess_exec(
            *CLI, "serve", "--http", "--host", "127.0.0.1", "--port", str(self.port), env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with aiohttp.ClientSession() as http:
            for _ in range(400):  # until the port answers, at most ~20 s
                try:
                    async with http.get(f"http://127.0.0.1:{self.port}/healthz") as resp:
                        assert resp.status == 200
                        return self
                except aiohttp.ClientConnectorError:
                    await asyncio.sleep(0.05)
        raise TimeoutError("dispatch-bot serve did not start")

    async def command(self, text: str, response_url: str) -> int:
        body = slash_command_body(text, response_url=response_url)
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"http://127.0.0.1:{self.port}/slack/events", data=body,
                      headers=signed_headers(body, SIGNING_SECRET)) as resp,
        ):  # fmt: skip
            return resp.status

    async def stop(self) -> None:
        assert self.proc is not None
        if self.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(self.proc.communicate(), timeout=30)
            self.returncode, self.log = self.proc.returncode, err.decode()

    async def __aexit__(self, *_: object) -> None:
        await self.stop()


async def test_serve_http_answers_signed_commands_and_stops_on_sigterm(
    make_settings: Callable[..., Settings], tmp_path: Path, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    async with ServedBot(bot_env(make_settings(), tmp_path / "dispatch-bot.yaml")) as served:
        response_url = slack.new_response_url()
        assert await served.command("list my-room", response_url) == 200
        posted = await slack.wait_for_response(url=response_url)
        assert "*my-room* is not running" in posted.body["text"]
    assert served.returncode == 0, served.log
    assert "xoxb-test-token" not in served.log and SIGNING_SECRET not in served.log


async def test_sigterm_during_a_command_keeps_its_audit_row_and_reply(
    make_settings: Callable[..., Settings], tmp_path: Path, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    settings = make_settings()
    livekit.add_room("my-room")
    livekit.delay = 0.5
    async with ServedBot(bot_env(settings, tmp_path / "dispatch-bot.yaml")) as served:
        response_url = slack.new_response_url()
        assert await served.command("list my-room", response_url) == 200
        # The command is waiting on LiveKit (its ListRooms names the room; the watch's poll names none).
        await livekit.wait_for(
            lambda: any(list(getattr(r.request, "names", [])) == ["my-room"] for r in livekit.requests)
        )
        await served.stop()
    assert served.returncode == 0, served.log
    posted = await slack.wait_for_response(url=response_url)
    assert "*my-room*: 1 dispatch" in posted.body["text"]
    assert [(r["action"], r["outcome"]) for r in read_audit(Path(settings.database))] == [("list", "ok")]
    assert "Traceback" not in served.log


async def test_bytes_that_are_not_utf8_get_one_sentence_and_a_row(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    env = bot_env(settings, tmp_path / "dispatch-bot.yaml")
    proc = await asyncio.create_subprocess_exec(
        *CLI, "console", "-c", b"list r\xff", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 1
    assert "The command contains bytes that are not UTF-8 text." in out.decode()
    assert b"Traceback" not in err
    [row] = read_audit(Path(settings.database))
    assert (row["outcome"], row["raw_text"]) == ("invalid", "list r\\udcff")
