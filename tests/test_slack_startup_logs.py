"""Start-up is quiet: a correct configuration prints no warning, an unreachable Slack prints its sentence alone."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

from dispatch_bot.bot.config import Settings
from tests.fakes.slack_server import FakeSlack
from tests.test_console import CLI, ServedBot, bot_env, run_cli


def noisy(log: str) -> list[str]:
    return [line for line in log.splitlines() if " WARNING " in line or " ERROR " in line or "Traceback" in line]


async def test_http_mode_starts_without_a_warning(
    make_settings: Callable[..., Settings], tmp_path: Path, slack: FakeSlack
) -> None:
    env = bot_env(make_settings(), tmp_path / "dispatch-bot.yaml")
    assert env["SLACK_BOT_TOKEN"].startswith("xoxb-")  # in the environment, as the README says
    async with ServedBot(env) as served:
        pass
    assert served.returncode == 0, served.log
    assert noisy(served.log) == []
    assert "will be unused" not in served.log and "will be ignored" not in served.log


async def test_socket_mode_starts_without_a_warning(
    make_settings: Callable[..., Settings], tmp_path: Path, slack: FakeSlack
) -> None:
    env = bot_env(make_settings(), tmp_path / "dispatch-bot.yaml")
    env["SLACK_APP_TOKEN"] = "xapp-test-token"
    proc = await asyncio.create_subprocess_exec(
        *CLI, "serve", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        await slack.wait_socket_connected(timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    log = err.decode()
    assert proc.returncode == 0, log
    assert "Socket Mode: connected" in log
    assert noisy(log) == []
    assert "will be unused" not in log and "will be ignored" not in log


async def test_unreachable_slack_prints_its_sentence_alone(
    make_settings: Callable[..., Settings], tmp_path: Path, slack: FakeSlack
) -> None:
    env = bot_env(make_settings(), tmp_path / "dispatch-bot.yaml")
    env["SLACK_API_URL"] = slack.refused_url
    code, out, err = await run_cli(["serve", "--http"], env)  # Slack is asked before any port is opened
    assert code == 2
    assert out == ""
    assert err.splitlines() == [
        f"dispatch-bot: Cannot reach Slack at {slack.refused_url} (could not connect): check the network and "
        "SLACK_API_URL."
    ]
