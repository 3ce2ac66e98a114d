"""A secret a person types (a Slack token, a JWT, a configured secret) is masked before it is stored or shown."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from dispatch_bot.bot.config import Settings
from tests.conftest import SIGNING_SECRET, BotUnderTest, read_audit
from tests.fakes.livekit_server import FakeLiveKit
from tests.fakes.slack_requests import block_action_body, signed_headers
from tests.fakes.slack_server import FakeSlack
from tests.test_console import bot_env, run_cli

SLACK_TOKEN = "xoxb-1111-2222-AbCdEfGhIjKl"
APP_TOKEN = "xapp-1-A111-222-abcdef0123"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzb21lb25lIn0.c2lnbmF0dXJlLW9mLWEtdG9rZW4"
SECRETS = (SLACK_TOKEN, APP_TOKEN, JWT, SIGNING_SECRET)


def everything_slack_got(slack: FakeSlack) -> str:
    posted = [json.dumps(r.body) for r in slack.responses] + [json.dumps(c.params) for c in slack.web_calls]
    return "\n".join(posted)


async def test_secrets_typed_in_slack_are_masked_in_the_ack_the_reply_and_the_audit(
    bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room")
    livekit.register_worker("speech-processing")
    for text, shown in (
        (f"list {SLACK_TOKEN}", "list [redacted]"),
        (f"list {JWT}", "list [redacted]"),
        (f"audit room:{APP_TOKEN}", "audit room:[redacted]"),
        (f"captions my-room --metadata {SIGNING_SECRET}", "captions my-room --metadata [redacted]"),
    ):
        result = await bot.command(text)
        assert result.status == 200
        assert shown in json.loads(result.body)["text"]  # the ack echoes the command, masked
        await bot.transport.drain()
    rows = bot.audit_rows()
    assert [r["raw_text"] for r in rows if r["action"] != "followup"] == [
        "list [redacted]",
        "list [redacted]",
        "audit room:[redacted]",
        "captions my-room --metadata [redacted]",
    ]
    [dispatch] = livekit.calls("CreateDispatch")
    assert dispatch.metadata == "[redacted]"
    seen = everything_slack_got(slack) + json.dumps(rows) + "".join(str(r.request) for r in livekit.requests)
    for secret in SECRETS:
        assert secret not in seen


async def test_a_secret_in_a_button_value_is_masked(bot: BotUnderTest, slack: FakeSlack) -> None:
    response_url = slack.new_response_url()
    body = block_action_body("dispatch_refresh", f"list {SLACK_TOKEN}", response_url=response_url)
    status, _ = await bot.post(body, signed_headers(body, SIGNING_SECRET))
    assert status == 200
    await slack.wait_for_response(url=response_url)
    await bot.transport.drain()
    assert [r["raw_text"] for r in bot.audit_rows()] == ["list [redacted]"]
    assert SLACK_TOKEN not in everything_slack_got(slack)


async def test_secrets_typed_in_the_console_are_masked(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings()
    env = bot_env(settings, tmp_path / "dispatch-bot.yaml")
    code, out, err = await run_cli(["console", "-c", f"list {SLACK_TOKEN}"], env)
    assert "[redacted]" in out
    code, out2, err2 = await run_cli(["console"], env, stdin=f"list {JWT}\naudit room:{SIGNING_SECRET}\nquit\n")
    assert code == 0
    rows = read_audit(Path(settings.database))
    assert [r["raw_text"] for r in rows] == ["list [redacted]", "list [redacted]", "audit room:[redacted]"]
    for secret in SECRETS:
        assert secret not in out + err + out2 + err2 + json.dumps(rows)
