"""Forge what Slack sends to the bot: slash command forms, block_actions payloads and signed HTTP headers.

The shapes follow real Slack requests (and bolt-python's own scenario tests): slash commands are
form-encoded, block actions are `payload=<url-encoded JSON>`, and HTTP-mode requests carry
`X-Slack-Signature`/`X-Slack-Request-Timestamp` made with `slack_sdk.signature.SignatureVerifier`.
For Socket Mode, send `slash_command_form(...)` / `block_action_payload(...)` as the envelope payload.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

from slack_sdk.signature import SignatureVerifier

APP_ID = "A123"
TEAM_DOMAIN = "fake-workspace"


def slash_command_form(
    text: str,
    *,
    command: str = "/dispatch",
    user_id: str = "U123",
    user_name: str = "alice",
    channel_id: str = "C123",
    channel_name: str = "ops",
    team_id: str = "T123",
    response_url: str = "",
    trigger_id: str = "123.456.abc",
) -> dict[str, str]:
    """The fields of a slash command request, as Slack posts them (all strings)."""
    return {
        "token": "verification-token",
        "team_id": team_id,
        "team_domain": TEAM_DOMAIN,
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": APP_ID,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id,
    }


def slash_command_body(
    text: str,
    *,
    command: str = "/dispatch",
    user_id: str = "U123",
    user_name: str = "alice",
    channel_id: str = "C123",
    channel_name: str = "ops",
    team_id: str = "T123",
    response_url: str = "",
    trigger_id: str = "123.456.abc",
) -> str:
    """The urlencoded body of a slash command request (HTTP mode)."""
    return urlencode(
        slash_command_form(
            text,
            command=command,
            user_id=user_id,
            user_name=user_name,
            channel_id=channel_id,
            channel_name=channel_name,
            team_id=team_id,
            response_url=response_url,
            trigger_id=trigger_id,
        )
    )


def block_action_payload(
    action_id: str,
    value: str,
    *,
    user_id: str = "U123",
    user_name: str = "alice",
    channel_id: str = "C123",
    team_id: str = "T123",
    response_url: str = "",
    message: dict[str, Any] | None = None,
    block_id: str = "b1",
    channel_name: str = "ops",
) -> dict[str, Any]:
    """A block_actions payload for a button click.

    With `message` the click comes from that message (its `ts` becomes the container's message_ts).
    Without it the click comes from an ephemeral message, which Slack reports without a `message` field.
    """
    action_ts = f"{time.time():.6f}"
    message_ts = str(message.get("ts", "1700000000.000100")) if message is not None else "1700000000.000100"
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
        "api_app_id": APP_ID,
        "token": "verification-token",
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": message is None,
        },
        "trigger_id": "123.456.abc",
        "team": {"id": team_id, "domain": TEAM_DOMAIN},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": channel_name},
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": block_id,
                "text": {"type": "plain_text", "text": value, "emoji": True},
                "value": value,
                "type": "button",
                "action_ts": action_ts,
            }
        ],
    }
    if message is not None:
        payload["message"] = message
    return payload


def block_action_body(
    action_id: str,
    value: str,
    *,
    user_id: str = "U123",
    user_name: str = "alice",
    channel_id: str = "C123",
    team_id: str = "T123",
    response_url: str = "",
    message: dict[str, Any] | None = None,
    block_id: str = "b1",
    channel_name: str = "ops",
) -> str:
    """The HTTP body of a block_actions request: `payload=<urlencoded JSON>`."""
    payload = block_action_payload(
        action_id,
        value,
        user_id=user_id,
        user_name=user_name,
        channel_id=channel_id,
        team_id=team_id,
        response_url=response_url,
        message=message,
        block_id=block_id,
        channel_name=channel_name,
    )
    return urlencode({"payload": json.dumps(payload)})


def signed_headers(
    body: str,
    signing_secret: str,
    *,
    timestamp: int | None = None,
    content_type: str = "application/x-www-form-urlencoded",
) -> dict[str, str]:
    """Headers that make `body` a validly signed Slack request (timestamp defaults to now)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(signing_secret).generate_signature(timestamp=ts, body=body)
    if signature is None:  # only when timestamp is None, which cannot happen here
        raise ValueError("could not sign the request")
    return {
        "content-type": content_type,
        "x-slack-request-timestamp": ts,
        "x-slack-signature": signature,
    }
