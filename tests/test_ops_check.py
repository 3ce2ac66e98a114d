"""`dispatch-bot check`: one line per check with its mark, the fix on failure, exit 0 only when all pass."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

from dispatch_bot.bot.audit_store import AuditStore
from dispatch_bot.bot.config import Settings
from dispatch_bot.commands.ports import Actor, AuditRecord
from tests.conftest import BOT_TOKEN, read_audit
from tests.fakes.livekit_server import FakeLiveKit
from tests.test_console import bot_env, run_cli

FIXTURES = Path(__file__).parent / "fixtures"
POLICY = """
policy:
  admins: [U0ADMIN]
  rules:
    - name: prod-readonly
      deny: [dispatch, stop]
      rooms: ['prod-*']
    - name: ops-channel
      allow: ['*']
      channels: [C0OPS]
"""


async def a_log(path: str, rows: int = 3) -> None:
    store = await AuditStore.open(path)
    try:
        for i in range(rows):
            await store.record(AuditRecord(Actor("slack", "U1", "ana"), f"list r{i}", "list", "ok", room=f"r{i}"))
    finally:
        await store.close()


def marks(out: str) -> list[tuple[str, str]]:
    """(mark, check name) of each check line."""
    return [(line[:6], line[7:].split(":")[0]) for line in out.splitlines() if line.startswith("[")]


async def test_everything_passes(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    agents = tmp_path / "agents"
    shutil.copytree(FIXTURES / "openvidu" / "default-manual", agents)
    settings = make_settings(POLICY, OPENVIDU_AGENTS_DIR=str(agents))
    await a_log(settings.database)
    env = {**bot_env(settings, tmp_path / "dispatch-bot.yaml"), "OPENVIDU_AGENTS_DIR": str(agents)}
    code, out, err = await run_cli(["check"], env)
    assert (code, err) == (0, ""), out
    assert marks(out) == [
        ("[ ok ]", "config"),
        ("[ ok ]", "policy"),
        ("[info]", "livekit"),  # the development key: said, not a failure
        ("[ ok ]", "livekit"),
        ("[ ok ]", "slack"),
        ("[ ok ]", "slack"),
        ("[ ok ]", "audit"),
        ("[ ok ]", "agents"),
        ("[info]", "webhooks"),
    ]
    assert f":{settings.port}/livekit/webhook (or another name of this host" in out
    assert "with `webhook.api_key` set to devkey" in out
    assert "polling every 15 s" in out
    assert "rule `prod-readonly` denies dispatch, stop in rooms prod-* to everyone." in out
    assert "rule `ops-channel` allows every command in channels C0OPS." in out
    assert "admins (U0ADMIN) may run every command." in out
    assert f"[ ok ] audit: {settings.database} is writable; 3 rows, the hash chain verified." in out
    assert f"[ ok ] agents: 1 agents in {agents}: speech-processing." in out
    assert "HTTP mode: SLACK_SIGNING_SECRET is present" in out
    assert BOT_TOKEN not in out


async def test_check_creates_no_database_and_changes_none(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    env = bot_env(settings, tmp_path / "dispatch-bot.yaml")
    code, out, _ = await run_cli(["check"], env)
    assert code == 0, out
    assert f"[ ok ] audit: {settings.database} does not exist yet; `serve` creates it there" in out
    assert not Path(settings.database).exists()
    await a_log(settings.database)
    before = read_audit(Path(settings.database))
    assert (await run_cli(["check"], env))[0] == 0
    assert read_audit(Path(settings.database)) == before


async def test_each_failure_says_its_fix(
    make_settings: Callable[..., Settings], tmp_path: Path, livekit: FakeLiveKit
) -> None:
    settings = make_settings()
    await a_log(settings.database)
    with sqlite3.connect(settings.database) as db:
        db.execute("UPDATE audit SET room = 'elsewhere' WHERE id = 2")
    env = bot_env(settings, tmp_path / "dispatch-bot.yaml")
    env.update(
        SLACK_BOT_TOKEN="xoxb-not-the-right-one",
        LIVEKIT_API_SECRET="not-the-right-secret",
        OPENVIDU_AGENTS_DIR=str(tmp_path / "no-such-folder"),
    )
    code, out, _ = await run_cli(["check"], env)
    assert code == 1
    failed = [line for line in out.splitlines() if line.startswith("[FAIL]")]
    assert [line.split(":")[0] for line in failed] == [
        "[FAIL] livekit",
        "[FAIL] slack",
        "[FAIL] audit",
        "[FAIL] agents",
    ]
    assert failed[1] == (
        "[FAIL] slack: Slack rejected SLACK_BOT_TOKEN (invalid_auth): copy the Bot User OAuth Token again from the "
        "Slack app's OAuth & Permissions page."
    )
    assert failed[2].startswith(f"[FAIL] audit: {settings.database}: the chain is BROKEN at row 2: row 2 was altered")
    assert failed[3].startswith(f"[FAIL] agents: The agent folder {tmp_path / 'no-such-folder'} cannot be read")
    assert "not-the-right" not in out


async def test_a_slack_api_url_that_is_not_slack_is_blamed_not_the_token(
    make_settings: Callable[..., Settings], tmp_path: Path, livekit: FakeLiveKit
) -> None:
    env = bot_env(make_settings(), tmp_path / "dispatch-bot.yaml")
    env["SLACK_API_URL"] = livekit.url + "/api/"  # a server, but not Slack's Web API
    code, out, _ = await run_cli(["check"], env)
    assert code == 1
    [failed] = [line for line in out.splitlines() if line.startswith("[FAIL]")]
    assert failed.startswith(f"[FAIL] slack: {livekit.url}/api/ answered HTTP ")
    assert failed.endswith(
        "not as Slack's Web API does: check SLACK_API_URL (https://slack.com/api/ unless you use a proxy)."
    )


async def test_a_configuration_that_does_not_load_is_a_failed_check(tmp_path: Path) -> None:
    config = tmp_path / "dispatch-bot.yaml"
    config.write_text("slack:\n  port: nope\n")
    code, out, err = await run_cli(["--config", str(config), "check"], {"PATH": "/usr/bin:/bin"})
    assert (code, err) == (1, "")
    assert out == f"[FAIL] config: {config}: `slack.port` is 'nope'; it must be a number from 1 to 65535.\n"


async def test_check_says_webhooks_are_ignored_when_supervision_is_off(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings("watch:\n  enabled: false\n")
    code, out, _ = await run_cli(["check"], bot_env(settings, tmp_path / "dispatch-bot.yaml"))
    assert code == 0, out
    assert "[info] webhooks: supervision is off (watch.enabled: false)" in out
    assert "/livekit/webhook" not in out
