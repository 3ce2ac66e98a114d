"""Prove the fake Slack with the real slack_sdk / slack_bolt clients (Web API, response_url, Socket Mode)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

import pytest
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from tests.fakes.slack_requests import (
    block_action_body,
    block_action_payload,
    signed_headers,
    slash_command_body,
    slash_command_form,
)
from tests.fakes.slack_server import FakeSlack

BOT_TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-test-token"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        yield server


def web(fake: FakeSlack, token: str | None = BOT_TOKEN) -> AsyncWebClient:
    return AsyncWebClient(token=token, base_url=fake.api_url)


async def authorize(**_: Any) -> AuthorizeResult:
    return AuthorizeResult(enterprise_id=None, team_id="T123", bot_token=BOT_TOKEN, bot_user_id="UBOT", bot_id="B1")


def build_app(fake: FakeSlack, *, signing_secret: str | None = None) -> AsyncApp:
    app = AsyncApp(client=web(fake), authorize=authorize, signing_secret=signing_secret)

    @app.command("/dispatch")
    async def dispatch(ack: AsyncAck, respond: AsyncRespond, command: dict[str, Any]) -> None:
        await ack(text=f"working on `{command['text']}`…")
        await respond(text=f"done: {command['text']}", response_type="ephemeral")

    @app.action("stop_agent")
    async def stop_agent(ack: AsyncAck, respond: AsyncRespond, action: dict[str, Any]) -> None:
        await ack()
        await respond(text=f"stopping {action['value']}", replace_original=True)

    return app


@pytest.fixture
async def socket_handler(fake: FakeSlack) -> AsyncIterator[AsyncSocketModeHandler]:
    handler = AsyncSocketModeHandler(build_app(fake), APP_TOKEN, web_client=AsyncWebClient(base_url=fake.api_url))
    await handler.connect_async()
    await fake.wait_socket_connected()
    try:
        yield handler
    finally:
        await handler.close_async()


# ---------------------------------------------------------------------------------------------- Web API


async def test_post_message_records_call_and_returns_increasing_ts(fake: FakeSlack) -> None:
    client = web(fake)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]

    first = await client.chat_postMessage(channel="C123", text="hi", blocks=blocks)
    second = await client.chat_postMessage(channel="C123", text="again")

    assert first["ok"] is True
    assert first["channel"] == "C123"
    assert first["message"]["text"] == "hi"
    assert first["message"]["blocks"] == blocks
    assert float(second["ts"]) > float(first["ts"])
    call = await fake.wait_for_web_call("chat.postMessage")
    assert call.token == BOT_TOKEN
    assert call.params["channel"] == "C123"
    assert call.params["blocks"] == blocks
    assert [c.params["text"] for c in fake.calls("chat.postMessage")] == ["hi", "again"]


async def test_form_encoded_blocks_are_decoded(fake: FakeSlack) -> None:
    blocks = [{"type": "divider"}]
    await web(fake).api_call("chat.postMessage", params={"channel": "C9", "text": "x", "blocks": json.dumps(blocks)})
    call = await fake.wait_for_web_call("chat.postMessage")
    assert call.params["blocks"] == blocks


async def test_update_ephemeral_and_unknown_method(fake: FakeSlack) -> None:
    client = web(fake)
    updated = await client.chat_update(channel="C123", ts="1700000000.000100", text="edited")
    ephemeral = await client.chat_postEphemeral(channel="C123", user="U123", text="psst")
    other = await client.reactions_add(channel="C123", timestamp="1700000000.000100", name="eyes")

    assert (updated["channel"], updated["ts"], updated["text"]) == ("C123", "1700000000.000100", "edited")
    assert ephemeral["message_ts"]
    assert other["ok"] is True
    assert [c.method for c in fake.web_calls] == ["chat.update", "chat.postEphemeral", "reactions.add"]


async def test_users_info(fake: FakeSlack) -> None:
    client = web(fake)
    alice = await client.users_info(user="U123")
    assert alice["user"]["name"] == "alice"
    assert alice["user"]["tz"] == "Europe/Madrid"
    assert alice["user"]["tz_offset"] == 3600
    assert alice["user"]["profile"]["real_name"] == "Alice Example"

    with pytest.raises(SlackApiError) as err:
        await client.users_info(user="UNOBODY")
    assert err.value.response["error"] == "user_not_found"


async def test_auth(fake: FakeSlack) -> None:
    me = await web(fake).auth_test()
    assert (me["team_id"], me["user_id"], me["bot_id"]) == ("T123", "UBOT", "B1")

    with pytest.raises(SlackApiError) as missing:
        await web(fake, token=None).chat_postMessage(channel="C123", text="hi")
    assert missing.value.response["error"] == "not_authed"

    with pytest.raises(SlackApiError) as wrong:
        await web(fake, token="xoxb-wrong").chat_postMessage(channel="C123", text="hi")
    assert wrong.value.response["error"] == "invalid_auth"
    assert [c.token for c in fake.web_calls] == [BOT_TOKEN, None, "xoxb-wrong"]

    with pytest.raises(SlackApiError) as bot_token_for_socket:
        await web(fake).apps_connections_open(app_token=BOT_TOKEN)
    assert bot_token_for_socket.value.response["error"] == "not_allowed_token_type"
    opened = await web(fake, token=None).apps_connections_open(app_token=APP_TOKEN)
    assert opened["url"].startswith(fake.api_url.replace("http://", "ws://").removesuffix("/api/"))


async def test_not_in_channel(fake: FakeSlack) -> None:
    fake.not_in_channel.add("CPRIVATE")
    client = web(fake)
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel="CPRIVATE", text="hi")
    assert err.value.response["error"] == "not_in_channel"
    assert (await client.chat_postMessage(channel="C123", text="hi"))["ok"] is True
    assert len(fake.calls("chat.postMessage")) == 2


async def test_down_answers_503_and_still_records(fake: FakeSlack) -> None:
    fake.down = True
    client = web(fake)
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel="C123", text="hi")
    assert err.value.response.status_code == 503
    webhook = await AsyncWebhookClient(fake.new_response_url()).send(text="hi")
    assert webhook.status_code == 503
    assert [(c.method, c.status) for c in fake.web_calls] == [("chat.postMessage", 503)]
    assert fake.responses[0].status == 503

    fake.down = False
    assert (await client.chat_postMessage(channel="C123", text="hi"))["ok"] is True


async def test_overrides(fake: FakeSlack) -> None:
    fake.overrides["chat.postMessage"] = {"ok": False, "error": "channel_not_found"}
    with pytest.raises(SlackApiError) as err:
        await web(fake).chat_postMessage(channel="CGONE", text="hi")
    assert err.value.response["error"] == "channel_not_found"


async def test_wait_times_out_listing_what_arrived(fake: FakeSlack) -> None:
    await web(fake).chat_postMessage(channel="C123", text="hi")
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"chat\.update.*chat\.postMessage"):
        await fake.wait_for_web_call("chat.update", timeout=0.05)
    with pytest.raises(TimeoutError, match="response_url"):
        await fake.wait_for_response(timeout=0.05)
    assert time.monotonic() - started < 1


async def test_wait_wakes_on_later_call(fake: FakeSlack) -> None:
    waiter = asyncio.create_task(fake.wait_for_web_call("chat.postMessage", count=2))
    await web(fake).chat_postMessage(channel="C1", text="one")
    await asyncio.sleep(0)
    assert not waiter.done()
    await web(fake).chat_postMessage(channel="C2", text="two")
    assert (await waiter).params["channel"] == "C2"


# ---------------------------------------------------------------------------------------------- response_url


async def test_response_url_with_webhook_client(fake: FakeSlack) -> None:
    url_a, url_b = fake.new_response_url(), fake.new_response_url()
    assert url_a != url_b

    resp = await AsyncWebhookClient(url_b).send(text="to b", response_type="ephemeral")
    assert (resp.status_code, resp.body) == (200, "ok")
    await AsyncWebhookClient(url_a).send(text="to a", replace_original=True)

    post = await fake.wait_for_response(url=url_a)
    assert post.body == {"text": "to a", "replace_original": True}
    assert (await fake.wait_for_response()).body["text"] == "to b"
    assert [r.url for r in fake.responses] == [url_b, url_a]


# ---------------------------------------------------------------------------------------------- Socket Mode


async def test_socket_mode_slash_command_round_trip(fake: FakeSlack, socket_handler: AsyncSocketModeHandler) -> None:
    assert await socket_handler.client.is_connected()
    opened = await fake.wait_for_web_call("apps.connections.open")
    assert opened.token == APP_TOKEN

    response_url = fake.new_response_url()
    envelope_id = await fake.send_envelope(
        "slash_commands", slash_command_form("stop room-1", response_url=response_url)
    )

    ack = await fake.wait_for_ack(envelope_id)
    assert ack["payload"] == {"text": "working on `stop room-1`…"}
    post = await fake.wait_for_response(url=response_url)
    assert post.body["text"] == "done: stop room-1"
    assert post.body["response_type"] == "ephemeral"
    assert [c.method for c in fake.web_calls] == ["apps.connections.open"]  # authorize= avoids auth.test


async def test_socket_mode_block_action(fake: FakeSlack, socket_handler: AsyncSocketModeHandler) -> None:
    response_url = fake.new_response_url()
    message = {"type": "message", "ts": "1700000000.000200", "text": "agent running"}
    envelope_id = await fake.send_envelope(
        "interactive", block_action_payload("stop_agent", "job-7", response_url=response_url, message=message)
    )

    ack = await fake.wait_for_ack(envelope_id)
    assert ack.get("payload") is None
    post = await fake.wait_for_response(url=response_url)
    assert post.body == {"text": "stopping job-7", "replace_original": True}


async def test_socket_mode_survives_ping_pong() -> None:
    async with FakeSlack() as fake:
        handler = AsyncSocketModeHandler(
            build_app(fake), APP_TOKEN, web_client=AsyncWebClient(base_url=fake.api_url), ping_interval=0.1
        )
        try:
            await handler.connect_async()
            await fake.wait_socket_connected()
            await asyncio.sleep(0.5)  # several ping rounds; heartbeat would close the session without pongs
            assert await handler.client.is_connected()
            assert handler.client.last_ping_pong_time is not None
            assert fake.socket_connect_count == 1
        finally:
            await handler.close_async()


async def test_socket_mode_disconnect_reconnects(fake: FakeSlack, socket_handler: AsyncSocketModeHandler) -> None:
    await fake.send_disconnect()
    await fake.wait_socket_connected(count=2)
    assert len(fake.calls("apps.connections.open")) == 2

    response_url = fake.new_response_url()
    envelope_id = await fake.send_envelope("slash_commands", slash_command_form("list", response_url=response_url))
    assert (await fake.wait_for_ack(envelope_id))["payload"]["text"].startswith("working")
    assert (await fake.wait_for_response(url=response_url)).body["text"] == "done: list"


async def test_send_envelope_without_connection_fails(fake: FakeSlack) -> None:
    with pytest.raises(RuntimeError, match="no open Socket Mode connection"):
        await fake.send_envelope("slash_commands", slash_command_form("list"))
    with pytest.raises(TimeoutError, match="Socket Mode connection"):
        await fake.wait_socket_connected(timeout=0.05)


# ------------------------------------------------------------------------------------------ forged requests


def test_signed_headers_verify() -> None:
    body = slash_command_body("captions my-room", response_url="http://127.0.0.1:1/response/1")
    headers = signed_headers(body, "s3cret")
    verifier = SignatureVerifier("s3cret")

    assert verifier.is_valid_request(body, headers)
    assert not verifier.is_valid_request(body + "x", headers)
    assert not SignatureVerifier("other").is_valid_request(body, headers)
    stale = signed_headers(body, "s3cret", timestamp=int(time.time()) - 301)
    assert not verifier.is_valid_request(body, stale)


def test_forged_bodies_have_slack_shapes() -> None:
    form = {k: v[0] for k, v in parse_qs(slash_command_body("list all")).items()}
    assert form["command"] == "/dispatch"
    assert form["text"] == "list all"
    assert form["trigger_id"] == "123.456.abc"

    payload = json.loads(parse_qs(block_action_body("stop_agent", "job-1"))["payload"][0])
    assert payload["type"] == "block_actions"
    assert payload["actions"][0]["action_id"] == "stop_agent"
    assert payload["actions"][0]["value"] == "job-1"
    assert payload["container"]["is_ephemeral"] is True
    assert "message" not in payload


async def test_signed_http_requests_dispatch_through_bolt(fake: FakeSlack) -> None:
    app = build_app(fake, signing_secret="s3cret")
    response_url = fake.new_response_url()

    body = slash_command_body("captions my-room", response_url=response_url)
    resp = await app.async_dispatch(AsyncBoltRequest(body=body, headers=signed_headers(body, "s3cret")))
    assert (resp.status, resp.body) == (200, "working on `captions my-room`…")
    assert (await fake.wait_for_response(url=response_url)).body["text"] == "done: captions my-room"

    action = block_action_body("stop_agent", "job-2", response_url=response_url)
    resp = await app.async_dispatch(AsyncBoltRequest(body=action, headers=signed_headers(action, "s3cret")))
    assert resp.status == 200
    assert (await fake.wait_for_response(count=2, url=response_url)).body["text"] == "stopping job-2"

    forged = await app.async_dispatch(AsyncBoltRequest(body=body, headers=signed_headers(body, "wrong")))
    assert forged.status == 401
