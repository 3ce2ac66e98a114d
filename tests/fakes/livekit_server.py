"""The LiveKit stand-in, now shipped in the package for the demo: this name stays for the tests and benchmarks."""

from dispatch_bot.demo.livekit_server import (
    AGENT_NAME_ATTRIBUTE,
    BASE57,
    DEFAULT_DEPARTURE_TIMEOUT,
    DEFAULT_EMPTY_TIMEOUT,
    DEFAULT_MAX_ATTRIBUTES_SIZE,
    DEFAULT_RETRY_DELAYS,
    MAX_DEPLOYMENT_LENGTH,
    MAX_ROOM_NAME_LENGTH,
    SDK_AGENT_NAME_ATTRIBUTE,
    FakeLiveKit,
    RecordedRequest,
    WebhookDelivery,
    sign_webhook,
)

__all__ = [
    "AGENT_NAME_ATTRIBUTE",
    "BASE57",
    "DEFAULT_DEPARTURE_TIMEOUT",
    "DEFAULT_EMPTY_TIMEOUT",
    "DEFAULT_MAX_ATTRIBUTES_SIZE",
    "DEFAULT_RETRY_DELAYS",
    "MAX_DEPLOYMENT_LENGTH",
    "MAX_ROOM_NAME_LENGTH",
    "SDK_AGENT_NAME_ATTRIBUTE",
    "FakeLiveKit",
    "RecordedRequest",
    "WebhookDelivery",
    "sign_webhook",
]
