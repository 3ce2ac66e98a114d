"""The stand-in's webhook sender, now shipped in the package for the demo: this name stays for the tests."""

from dispatch_bot.demo.livekit_webhooks import (
    CONTENT_TYPE,
    DEFAULT_RETRY_DELAYS,
    MAX_ATTEMPTS,
    TOKEN_TTL,
    USER_AGENT,
    WebhookDelivery,
    WebhookSender,
    body_sha256,
    serialize_event,
    sign_webhook,
)

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_RETRY_DELAYS",
    "MAX_ATTEMPTS",
    "TOKEN_TTL",
    "USER_AGENT",
    "WebhookDelivery",
    "WebhookSender",
    "body_sha256",
    "serialize_event",
    "sign_webhook",
]
