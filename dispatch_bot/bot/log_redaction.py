"""Logging that cannot leak a credential: join-link tokens, Slack tokens and configured secrets are masked.

The same masking applies to what a person types (`mask_typed`), at the edges where text comes in, so that no
command, audit row or reply ever holds a secret someone pasted.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TextIO

from .observability import COMMAND_FIELDS, JsonLogFormatter

if TYPE_CHECKING:
    from .config import Settings

# A JWT (join links, LiveKit API tokens), also URL-encoded inside a link; Slack bot, user and app tokens.
_PATTERNS = (
    re.compile(r"eyJ[A-Za-z0-9_-]{8,}(?:\.|%2E)[A-Za-z0-9_-]{8,}(?:\.|%2E)[A-Za-z0-9_-]+"),
    re.compile(r"xox[abposr]-[A-Za-z0-9-]+"),
    re.compile(r"xapp-[A-Za-z0-9-]+"),
)
REDACTED = "[redacted]"


class SecretRedactor(logging.Filter):
    """Masks secrets in every record that passes through the handler it is attached to."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Very short values (the dev secret "secret") would mask ordinary words; tokens are covered above.
        self._secrets = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        for pattern in _PATTERNS:
            text = pattern.sub(REDACTED, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        for name in COMMAND_FIELDS:  # the fields JSON lines show apart from the message
            value = record.__dict__.get(name)
            if isinstance(value, str):
                record.__dict__[name] = self.redact(value)
        return True


def configured_secrets(settings: Settings) -> list[str]:
    """The settings whose values must never be shown: Slack's tokens and signing secret, the LiveKit secret."""
    return [
        settings.slack_bot_token,
        settings.slack_app_token,
        settings.slack_signing_secret,
        settings.livekit_api_secret,
    ]


def typed_text_masker(settings: Settings) -> Callable[[str], str]:
    """Masks, in a text a person typed, the configured secrets and anything shaped like a Slack token or a JWT."""
    return SecretRedactor(configured_secrets(settings)).redact


PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(
    level: str, secrets: Iterable[str], log_format: str = "plain", stream: TextIO | None = None
) -> logging.Handler:
    """Every record to `stream` (standard error) as a line of text or, with `log_format="json"`, a JSON object;
    secrets masked in both. Returns the handler, which is the root logger's."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonLogFormatter() if log_format == "json" else logging.Formatter(PLAIN_FORMAT))
    handler.addFilter(SecretRedactor(secrets))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    return handler
