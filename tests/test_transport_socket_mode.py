"""Socket Mode: a real round trip through slack_sdk's client against the local websocket stand-in."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dispatch_bot.bot.config import Settings
from dispatch_bot.bot.runtime import Runtime
from dispatch_bot.bot.slack_app import SlackTransport
from tests.conftest import all_text, read_audit
from tests.fakes.livekit_server import FakeLiveKit
from tests.fakes.slack_requests import slash_command_form
from tests.fakes.slack_server import FakeSlack
from tests.test_console import bot_env, run_cli


async def test_slash_command_over_socket_mode(
    make_settings: Callable[..., Settings], livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    settings = make_settings(SLACK_APP_TOKEN="xapp-test-token", SLACK_SIGNING_SECRET="")
    settings.require_slack(http=False)
    livekit.add_room("my-room")
    livekit.register_worker("speech-processing")
    runtime = await Runtime.open(settings)
    transport = SlackTransport(runtime)
    handler = transport.socket_mode_handler()
    try:
        await handler.connect_async()
        await slack.wait_socket_connected()
        response_url = slack.new_response_url()
        envelope = await slack.send_envelope(
            "slash_commands", slash_command_form("captions my-room", response_url=response_url)
        )
        ack = await slack.wait_for_ack(envelope)
        assert "captions my-room" in ack["payload"]["text"]
        post = await slack.wait_for_web_call("chat.postMessage")
        assert "sent *speech-processing* (captions) into *my-room*" in all_text(post.params)
        update = await slack.wait_for_web_call("chat.update")
        assert "The agent joined as" in all_text(update.params)
        assert slack.web_calls[0].method == "apps.connections.open"
        assert len(livekit.calls("CreateDispatch")) == 1

        envelope = await slack.send_envelope("slash_commands", slash_command_form("help", response_url=response_url))
        await slack.wait_for_ack(envelope)
        help_reply = await slack.wait_for_response(url=response_url)
        assert help_reply.body["response_type"] == "ephemeral"
    finally:
        await handler.close_async()
        await transport.aclose()
        await runtime.close()
    rows = read_audit(Path(settings.database))
    assert [(r["action"], r["outcome"]) for r in rows] == [
        ("dispatch", "ok"),
        ("followup", "ok"),
        ("help", "ok"),
    ]


@pytest.mark.parametrize(
    ("env", "sentence"),
    [
        ({"SLACK_BOT_TOKEN": "xoxb-revoked"}, "dispatch-bot: Slack rejected SLACK_BOT_TOKEN (invalid_auth)"),
        ({"SLACK_APP_TOKEN": "xapp-revoked"}, "dispatch-bot: Slack rejected SLACK_APP_TOKEN (invalid_auth)"),
    ],
)
async def test_serve_stops_at_start_when_slack_rejects_a_token(
    make_settings: Callable[..., Settings], tmp_path: Path, slack: FakeSlack, env: dict[str, str], sentence: str
) -> None:
    settings = make_settings()
    full_env = bot_env(settings, tmp_path / "dispatch-bot.yaml")
    full_env["SLACK_APP_TOKEN"] = "xapp-test-token"
    full_env.update(env)
    code, _, err = await run_cli(["serve"], full_env)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith(sentence)
    assert "Traceback" not in err and "revoked" not in err
