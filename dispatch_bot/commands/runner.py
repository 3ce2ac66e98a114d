"""One command from text to Reply: parse, route, run, audit. The same path for Slack and the console."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from . import messages
from .context import RESERVED_WORDS, CommandContext, Denied, Refusal, UsageError
from .grammar import GrammarError, closest, tokenize
from .ports import AuditError, AuditRecord, AuditSink, BackendError, Seen, WatchRecord
from .registry import COMMANDS, Command
from .reply import Reply

log = logging.getLogger(__name__)

MAX_RAW_TEXT = 2000


def route(tokens: list[str], ctx: CommandContext) -> tuple[Command, list[str]]:
    """The subcommand the tokens name, and its arguments; anything else is a dispatch."""
    word = tokens[0].lower()
    if word in COMMANDS and word != "dispatch":  # `dispatch` names the <agent> <room> form, not a word to type
        return COMMANDS[word], tokens[1:]
    if tokens[0] not in ctx.known_agents():
        near = closest(word, [*COMMANDS, *RESERVED_WORDS], cutoff=0.75)
        if near and near != "dispatch":
            raise GrammarError(messages.unknown_subcommand(tokens[0], near))
    return COMMANDS["dispatch"], tokens


def _closest_command(tokens: list[str], ctx: CommandContext) -> Command:
    if not tokens:
        return COMMANDS["dispatch"]
    word = tokens[0].lower()
    if word in COMMANDS:
        return COMMANDS[word]
    near = closest(word, COMMANDS, cutoff=0.75)
    return COMMANDS[near] if near else COMMANDS["dispatch"]


def _invalid(ctx: CommandContext, sentence: str, command: Command | None) -> Reply:
    lines = [messages.invalid(sentence)]
    if command is not None:
        lines.append(messages.usage(ctx.settings.slash_command, command.usage))
    lines.append(messages.more_help(ctx.settings.slash_command))
    return Reply("invalid", lines, action=command.name if command else "", detail=sentence)


def _log_value(value: object) -> str:
    """A value for a key=value log line: as is when it is one plain word, else quoted; "-" when empty."""
    text = str(value)
    if not text:
        return "-"
    return text if _PLAIN_WORD.fullmatch(text) else json.dumps(text, ensure_ascii=False)


_PLAIN_WORD = re.compile(r"[^\s\"=\\]+")


def _failed(ctx: CommandContext, tokens: list[str], exc: BackendError | AuditError) -> Reply:
    """The reply to a command that LiveKit or the database failed: its sentence, and what the command had noted."""
    sentence = exc.sentence if isinstance(exc, BackendError) else str(exc)
    return Reply(
        "error",
        [messages.backend_error(sentence)],
        detail=sentence,
        action=_closest_command(tokens, ctx).name,
        agent=ctx.facts.get("agent", ""),
        room=ctx.facts.get("room", ""),
        dispatch_id=ctx.facts.get("dispatch_id", ""),
    )


def _entry(ctx: CommandContext, raw: str, reply: Reply, started: float, received_id: int = 0) -> AuditRecord:
    return AuditRecord(
        actor=ctx.actor,
        raw_text=raw[:MAX_RAW_TEXT].encode("utf-8", "backslashreplace").decode("utf-8"),
        action=reply.action or "unknown",
        outcome=reply.outcome,
        agent=reply.agent,
        room=reply.room,
        dispatch_id=reply.dispatch_id,
        detail=reply.detail,
        duration_ms=int((time.monotonic() - started) * 1000),
        received_id=received_id,
    )


FinishedHook = Callable[[str, str], None]  # (action, outcome) of each command and follow-up that finished
StepHook = Callable[[str, float], None]  # (step, seconds): "command" (its own work) and "audit" (its rows)


class CommandRunner:
    """Runs commands for one deployment; every command, whatever its outcome, leaves one audit row.

    Each row also makes one INFO line on this module's logger (request id, actor, action, agent, room, outcome,
    duration; never the typed text, which the audit has), and a call to `on_finished` (the metrics)."""

    def __init__(
        self, audit: AuditSink, on_finished: FinishedHook | None = None, on_step: StepHook | None = None
    ) -> None:
        self.audit = audit
        self.on_finished = on_finished
        self.on_step = on_step

    async def execute(self, ctx: CommandContext, raw_text: str) -> Reply:
        started = time.monotonic()
        request_id = secrets.token_hex(4)  # also on the follow-up's line, to find the two together
        raw = raw_text.strip()
        tokens: list[str] = []
        try:
            tokens = tokenize(raw)
            if not tokens:
                raise GrammarError(messages.nothing_given())
            command, args = route(tokens, ctx)
            try:
                reply = await command.run(ctx, args)
            except UsageError as exc:
                reply = _invalid(ctx, str(exc), command)
            except (Refusal, Denied) as exc:
                reply = Reply(
                    "denied" if isinstance(exc, Denied) else "invalid",
                    exc.lines,
                    action=command.name,
                    agent=ctx.facts.get("agent", ""),
                    room=ctx.facts.get("room", ""),
                    detail=exc.detail,
                )
        except GrammarError as exc:
            reply = _invalid(ctx, str(exc), _closest_command(tokens, ctx))
        except (BackendError, AuditError) as exc:
            reply = _failed(ctx, tokens, exc)
        except Exception:
            ref = secrets.token_hex(4)
            log.exception("command failed (reference %s)", ref)
            reply = Reply("error", [messages.internal_error(ref)], detail=f"internal error, reference {ref}")
        worked = time.monotonic()
        reply = await self._record_command(ctx, raw, tokens, reply, started, request_id)
        if self.on_step is not None:
            self.on_step("command", worked - started)
            self.on_step("audit", time.monotonic() - worked)
        if reply.followup is not None:
            reply.followup = self._audited_followup(ctx, raw, reply, request_id)
        return reply

    async def _record_command(
        self, ctx: CommandContext, raw: str, tokens: list[str], reply: Reply, started: float, request_id: str
    ) -> Reply:
        """The command's rows (its earlier steps' and its own) and the watches it asked for, all durable before the
        reply is shown: in one transaction (one disk sync) when it can; when that fails, nothing of it is written
        and they go one by one, the watches first, as if written during the command: one that fails makes the
        reply its error (no reply says the bot watches an agent it does not)."""
        watches, ctx.to_watch = ctx.to_watch, []
        if watches:
            assert ctx.watches is not None  # a command asks for watches only when supervision runs
            if await self._record_with_watches(ctx, raw, reply, started, request_id, watches):
                return reply
            try:
                for record in watches:
                    await ctx.watches.watch(record)
            except AuditError as exc:
                reply = _failed(ctx, tokens, exc)
        for done in reply.prior:
            await self._record(ctx, raw, done, started, request_id)
        await self._record(ctx, raw, reply, started, request_id, received_id=ctx.received_id)
        return reply

    def _audited_followup(
        self, ctx: CommandContext, raw: str, first: Reply, request_id: str
    ) -> Callable[[], Awaitable[Reply]]:
        followup = first.followup
        assert followup is not None

        async def run() -> Reply:
            started = time.monotonic()
            try:
                reply = await followup()
            except Exception:
                ref = secrets.token_hex(4)
                log.exception("follow-up failed (reference %s)", ref)
                reply = replace(
                    first,
                    outcome="error",
                    lines=[*first.lines, messages.internal_error(ref)],
                    followup=None,
                    detail=f"internal error, reference {ref}",
                )
            seen, ctx.to_mark_seen = ctx.to_mark_seen, []
            if not seen or not await self._record_with_seen(ctx, raw, reply, started, request_id, seen):
                await self._record(ctx, raw, reply, started, request_id)
            return reply

        return run

    async def _record_with_seen(
        self, ctx: CommandContext, raw: str, reply: Reply, started: float, request_id: str, seen: list[Seen]
    ) -> bool:
        """The follow-up's row, and the watches of the agents it saw marked present, in one transaction (one disk
        sync). When that fails, nothing of it is written: the watches are marked on their own (a watch that cannot
        be, learns it at its next look) and False tells the caller to write the row as before."""
        assert ctx.watches is not None  # a follow-up notes what it saw only when supervision runs
        entry = _entry(ctx, raw, reply, started)
        try:
            marked = await self.audit.record_with_seen(entry, seen)
        except AuditError as exc:
            log.warning("audit write with the agent seen failed, writing them one by one: %s", exc)
            for one in seen:
                with contextlib.suppress(AuditError):
                    await ctx.watches.seen(one.room, one.dispatch_id, one.identity)
            return False
        ctx.watches.seen_written(marked)
        self._finished(ctx, entry, request_id)
        return True

    async def _record_with_watches(
        self, ctx: CommandContext, raw: str, reply: Reply, started: float, request_id: str, watches: list[WatchRecord]
    ) -> bool:
        """The command's rows (its earlier steps' and its own) and its watches in one transaction, one disk sync;
        False when it failed (nothing of it is written)."""
        assert ctx.watches is not None
        entries = [_entry(ctx, raw, done, started) for done in reply.prior]
        entries.append(_entry(ctx, raw, reply, started, ctx.received_id))
        try:
            stored = await self.audit.record_with_watches(entries, watches)
        except AuditError as exc:
            log.warning("audit write with watches failed, writing them one by one: %s", exc)
            return False
        ctx.watches.watched(stored)
        for entry in entries:
            self._finished(ctx, entry, request_id)
        return True

    async def _record(
        self, ctx: CommandContext, raw: str, reply: Reply, started: float, request_id: str, *, received_id: int = 0
    ) -> None:
        entry = _entry(ctx, raw, reply, started, received_id)
        try:
            await self.audit.record(entry)
        except AuditError as exc:
            log.error("audit write failed: %s", exc)
            reply.lines.append(messages.audit_failed(str(exc)))
            if reply.link is not None:  # a credential nobody could later trace is not handed out
                reply.link = None
                reply.lines.append(messages.link_withheld())
        self._finished(ctx, entry, request_id)

    def _finished(self, ctx: CommandContext, entry: AuditRecord, request_id: str) -> None:
        fields = {
            "request_id": request_id,
            "actor": f"{ctx.actor.source}:{ctx.actor.user_id}",
            "action": entry.action,
            "agent": entry.agent,
            "room": entry.room,
            "outcome": entry.outcome,
            "duration_ms": entry.duration_ms,
        }
        if log.isEnabledFor(logging.INFO):
            log.info("command %s", " ".join(f"{k}={_log_value(v)}" for k, v in fields.items()), extra=fields)
        if self.on_finished is not None:
            self.on_finished(entry.action, entry.outcome)
