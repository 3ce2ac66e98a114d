"""What an operator sees of the running bot: JSON log lines and the Prometheus metrics behind `GET /metrics`.

Every label value is bounded (an action, an outcome, a method, an error code, an event name): never a room, a
person or anything a person typed, so neither the series count nor a secret can grow from outside.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the console and the CLI's quick commands load no HTTP stack for the metrics
    from aiohttp import web

# prometheus-client is imported when the first Metrics is made: the log formatter here is needed long before.

log = logging.getLogger(__name__)

# The fields the command line carries as record attributes (`extra=`), shown in JSON as keys of their own.
COMMAND_FIELDS = ("request_id", "actor", "action", "agent", "room", "outcome", "duration_ms")

# LiveKit's webhook events (reference: livekit-webhooks.md); anything else is counted as "other".
WEBHOOK_EVENTS = frozenset(
    {
        "room_started",
        "room_finished",
        "participant_joined",
        "participant_left",
        "participant_connection_aborted",
        "track_published",
        "track_unpublished",
        "egress_started",
        "egress_updated",
        "egress_ended",
        "ingress_started",
        "ingress_ended",
        "agent_job_started",
        "agent_job_ended",
    }
)
_LABEL = re.compile(r"[A-Za-z0-9_.]{1,64}")  # what a Slack error code or a Twirp method name looks like


def _bounded(value: str) -> str:
    return value if _LABEL.fullmatch(value) else "other"


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, the command fields when present, the exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in COMMAND_FIELDS:
            if name in record.__dict__:
                line[name] = record.__dict__[name]
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


class Metrics:
    """The bot's Prometheus metrics, in a registry of their own (one per Runtime, so bots in one process don't mix)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.commands = Counter(
            "dispatch_bot_commands_total", "Commands finished (and follow-ups), by action and outcome",
            ["action", "outcome"], registry=r,
        )  # fmt: skip
        self.livekit_call = Histogram(
            "dispatch_bot_livekit_call_seconds", "LiveKit API calls, by Twirp method (one retry included)",
            ["method"], registry=r,
        )  # fmt: skip
        self.livekit_errors = Counter(
            "dispatch_bot_livekit_call_errors_total", "LiveKit API calls that failed, by Twirp method and kind",
            ["method", "kind"], registry=r,
        )  # fmt: skip
        self.slack_errors = Counter(
            "dispatch_bot_slack_api_errors_total", "Slack Web API (and response_url) calls that failed",
            ["method", "error"], registry=r,
        )  # fmt: skip
        self.audit_append = Histogram(
            "dispatch_bot_audit_append_seconds", "Audit row appends, durable commit included",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0), registry=r,
        )  # fmt: skip
        self.audit_group = Histogram(
            "dispatch_bot_audit_group_writes",
            "Transactions committed by the audit database's group writer (each one disk sync), by how many writes "
            "each held (a command's rows with its watches are one write)",
            buckets=(1, 2, 4, 8, 16, 32, 64), registry=r,
        )  # fmt: skip
        self.command_step = Histogram(
            "dispatch_bot_command_step_seconds",
            "Where a command's time goes: queue (waiting for a slot), then within its slot groups (user groups read), "
            "command (its own work, LiveKit calls included), audit (its rows, with the watches it asked for), watch "
            "(a watch written on its own, when that combined write failed), "
            "deliver (the reply posted), thread (the message noted for alerts' threads)",
            ["step"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )  # fmt: skip
        self.command_received = Histogram(
            "dispatch_bot_command_received_seconds",
            "Slack commands and buttons: time to record each as received before its ack, by result "
            "(recorded, busy: refused at slack.ack_timeout, failed: the database refused it)",
            ["result"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0), registry=r,
        )  # fmt: skip
        self.watches = Gauge("dispatch_bot_watches", "Agents supervision watches now (open watches)", registry=r)
        self.alerts = Counter("dispatch_bot_alerts_total", "Supervision's messages, by kind", ["kind"], registry=r)
        self.webhook_events = Counter(
            "dispatch_bot_webhook_events_total", "Verified LiveKit webhooks, by event", ["event"], registry=r
        )
        self.webhooks_refused = Counter(
            "dispatch_bot_webhooks_refused_total", "LiveKit webhook requests refused, by reason", ["reason"], registry=r
        )
        # Set by the runtime when supervision runs: how many watches are open, read when /metrics is asked.
        self.watch_count: Callable[[], Awaitable[int]] | None = None
        self._commands_by: dict[tuple[str, str], Counter] = {}
        self._steps_by: dict[str, Histogram] = {}
        self._calls_by: dict[str, Histogram] = {}

    # The series every command touches, each looked up once: prometheus-client's `labels()` checks and joins
    # its label values on every call (about 1% of the bot's CPU in a dispatch). Their label values are few.

    def command_finished(self, action: str, outcome: str) -> None:
        key = (action, outcome)
        child = self._commands_by.get(key)
        if child is None:
            child = self._commands_by[key] = self.commands.labels(action=action, outcome=outcome)
        child.inc()

    def step_done(self, step: str, seconds: float) -> None:
        child = self._steps_by.get(step)
        if child is None:
            child = self._steps_by[step] = self.command_step.labels(step=step)
        child.observe(seconds)

    def livekit_call_done(self, method: str, seconds: float, error_kind: str = "") -> None:
        method = _bounded(method or "unknown")
        child = self._calls_by.get(method)
        if child is None:
            child = self._calls_by[method] = self.livekit_call.labels(method=method)
        child.observe(seconds)
        if error_kind:
            self.livekit_errors.labels(method=method, kind=error_kind).inc()

    def slack_failed(self, method: str, exc: BaseException | str) -> None:
        error = exc if isinstance(exc, str) else slack_error_label(exc)
        self.slack_errors.labels(method=_bounded(method), error=_bounded(error)).inc()

    def webhook_received(self, event: str) -> None:
        self.webhook_events.labels(event=event if event in WEBHOOK_EVENTS else "other").inc()

    def webhook_refused(self, reason: str) -> None:
        self.webhooks_refused.labels(reason=reason).inc()

    async def exposition(self) -> bytes:
        """The registry in Prometheus' text format, the watch gauge read fresh."""
        if self.watch_count is not None:
            try:
                self.watches.set(await self.watch_count())
            except Exception as exc:  # the database closed or failing: the gauge keeps its last value
                log.debug("metrics: could not count the open watches: %s", type(exc).__name__)
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    async def handle(self, _: web.Request) -> web.Response:
        """`GET /metrics`."""
        from aiohttp import web
        from prometheus_client import CONTENT_TYPE_LATEST

        return web.Response(body=await self.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def slack_error_label(exc: BaseException) -> str:
    """A failed Slack call as a label: Slack's error code, `http_<status>`, `timeout`, `connection` or a type."""
    import aiohttp
    from slack_sdk.errors import SlackApiError

    if isinstance(exc, SlackApiError):
        data = getattr(exc.response, "data", None)
        if isinstance(data, dict) and data.get("error"):
            return str(data["error"])
        return f"http_{getattr(exc.response, 'status_code', 0)}"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientError):
        return "connection"
    return type(exc).__name__.lower()
