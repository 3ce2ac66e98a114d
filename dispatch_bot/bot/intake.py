"""Nothing acknowledged is ever lost: a command is recorded as received before its ack, and finished with its row.

Records go first in the audit store's next group transaction (all the commands that arrive while one group
commits share the next one), so an ack waits for one bounded group and one disk sync. A command not recorded
within the intake's timeout (another process holds the database locked) is refused in its ack, before Slack's
3 s are up, and not run. A command whose record is still there at the next start (the process was killed) or at
the end of a stop (it did not finish within `shutdown_timeout`) gets an audit row with the outcome
`interrupted`, and its requester a message: it may or may not have taken effect. It is never run again by itself.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable

from ..commands import messages
from ..commands.ports import Actor, AuditError, AuditRecord
from ..commands.reply import Reply
from .audit_store import AuditBusy, AuditStore, ReceivedCommand

log = logging.getLogger(__name__)


class Intake:
    """Records received commands; one per running bot (its `boot` tells its records apart)."""

    def __init__(self, store: AuditStore, *, timeout: float | None = None) -> None:
        self.store = store
        self.boot = secrets.token_hex(8)
        self.timeout = timeout
        self.observe: Callable[[str, float], None] | None = None  # result and seconds of each receive (metrics)

    async def receive(self, actor: Actor, text: str, response_url: str) -> int:
        """Durably record the command; its id. Raises AuditError (one sentence) when the database will not take
        it, or has not within `timeout` seconds."""
        command = ReceivedCommand(actor, text, response_url, time.time(), self.boot)
        started, result = time.perf_counter(), "failed"
        try:
            received_id = await self.store.receive(command, timeout=self.timeout)
            result = "recorded"
            return received_id
        except AuditBusy:
            result = "busy"
            raise
        finally:
            if self.observe is not None:
                self.observe(result, time.perf_counter() - started)


Respond = Callable[[str, Reply], Awaitable[None]]


async def settle_unfinished(store: AuditStore, respond: Respond, *, boot: str | None = None) -> int:
    """Give every unfinished command its `interrupted` row, then tell its requester; how many there were."""
    try:
        unfinished = await store.unfinished(boot)
    except (AuditError, ValueError) as exc:  # ValueError: the database is already closed
        log.error("could not read the commands left unfinished: %s", exc)
        return 0
    for command in unfinished:
        detail = "interrupted: the bot stopped before this command finished; it may or may not have taken effect"
        record = AuditRecord(command.actor, command.text, "unknown", "interrupted", detail=detail,
                             received_id=command.id)  # fmt: skip
        try:
            await store.record(record)
        except AuditError as exc:
            log.error("audit write failed: %s", exc)
            continue  # its record stays: the next start tries again
        reply = Reply("interrupted", messages.interrupted(command.text), action="unknown", detail=detail)
        if command.response_url:
            try:
                await respond(command.response_url, reply)
            except Exception as exc:  # a response URL lasts 30 minutes; the row is what stays
                log.warning("could not tell the requester of an interrupted command: %s", type(exc).__name__)
    if unfinished:
        log.warning("%d commands were interrupted before they finished; each has an audit row", len(unfinished))
    return len(unfinished)
