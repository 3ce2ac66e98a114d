"""Nothing acknowledged is ever lost: killed or stopped mid-command, every acknowledged command ends with a row."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import SIGNING_SECRET, read_audit
from tests.fakes.livekit_server import FakeLiveKit
from tests.fakes.slack_requests import signed_headers, slash_command_body
from tests.fakes.slack_server import FakeSlack
from tests.test_console import CLI, bot_env, free_port, run_cli


class Served:
    """`dispatch-bot serve --http` as a process, to be stopped or killed."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *CLI, "serve", "--http", "--host", "127.0.0.1", "--port", str(self.port), env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with aiohttp.ClientSession() as http:
            for _ in range(400):
                try:
                    async with http.get(f"http://127.0.0.1:{self.port}/healthz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientConnectorError:
                    await asyncio.sleep(0.05)
        raise TimeoutError("serve did not start")

    async def command(self, http: aiohttp.ClientSession, text: str, response_url: str) -> int:
        body = slash_command_body(text, response_url=response_url)
        headers = signed_headers(body, SIGNING_SECRET)
        async with http.post(f"http://127.0.0.1:{self.port}/slack/events", data=body, headers=headers) as resp:
            return resp.status

    async def end(self, sig: int) -> tuple[int, str]:
        assert self.proc is not None
        self.proc.send_signal(sig)
        _, err = await asyncio.wait_for(self.proc.communicate(), timeout=30)
        assert self.proc.returncode is not None
        return self.proc.returncode, err.decode()


async def send_commands(served: Served, slack: FakeSlack, count: int) -> list[str]:
    """`count` commands at once, each acknowledged (HTTP 200); their response URLs."""
    urls = [slack.new_response_url() for _ in range(count)]
    async with aiohttp.ClientSession() as http:
        statuses = await asyncio.gather(*(served.command(http, f"list room-{i}", url) for i, url in enumerate(urls)))
    assert statuses == [200] * count
    return urls


async def test_commands_acknowledged_before_a_kill_are_recorded_and_their_people_told_at_the_next_start(
    make_settings: Callable[..., Any], tmp_path: Path, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    settings = make_settings("watch:\n  enabled: false\n")
    env = bot_env(settings, tmp_path / "dispatch-bot.yaml")
    livekit.delay = 30  # every command hangs on LiveKit: none can finish before the kill
    first = Served(env)
    await first.start()
    urls = await send_commands(first, slack, 25)
    code, _ = await first.end(signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert read_audit(Path(settings.database)) == []  # nothing finished

    livekit.delay = 0
    asked_before = len(livekit.requests)
    second = Served(env)
    await second.start()  # it reports the interrupted commands before it listens
    rows = read_audit(Path(settings.database))
    assert sorted(r["raw_text"] for r in rows) == sorted(f"list room-{i}" for i in range(25))
    assert {(r["outcome"], r["user_id"]) for r in rows} == {("interrupted", "U123")}
    for url in urls:
        told = await slack.wait_for_response(url=url)
        assert "may or may not have taken effect" in told.body["text"]
        assert told.body["response_type"] == "ephemeral"
    assert len(livekit.requests) == asked_before  # never run again by itself
    code, err = await second.end(signal.SIGTERM)
    assert code == 0 and "Traceback" not in err
    code, out, _ = await run_cli(["audit", "verify"], env)
    assert code == 0 and "intact" in out


async def test_a_stop_waits_shutdown_timeout_then_records_what_did_not_finish(
    make_settings: Callable[..., Any], tmp_path: Path, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    settings = make_settings("watch:\n  enabled: false\nslack:\n  shutdown_timeout: 300ms\n")
    env = bot_env(settings, tmp_path / "dispatch-bot.yaml")
    livekit.add_room("room-0")
    served = Served(env)
    await served.start()
    livekit.delay = 30
    urls = await send_commands(served, slack, 3)
    await livekit.wait_for(lambda: len([r for r in livekit.requests if r.method == "ListRooms"]) >= 3)
    code, err = await served.end(signal.SIGTERM)
    assert code == 0 and "Traceback" not in err
    rows = read_audit(Path(settings.database))
    assert [r["outcome"] for r in rows] == ["interrupted"] * 3
    for url in urls:
        assert "may or may not have taken effect" in (await slack.wait_for_response(url=url)).body["text"]
