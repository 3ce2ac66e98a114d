"""`<agent> <room>`: send an agent into a room now, once, and follow up on whether it joined."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from . import messages
from .context import CommandContext, ResolvedAgent, UsageError, check_dispatchable
from .grammar import check_metadata, check_room, parse_args, shorten
from .ports import BackendError, DispatchInfo, RoomInfo
from .reply import Button, Outcome, Reply, Text

NAME = "dispatch"
USAGE = "<agent> <room> [--metadata TEXT] [--force] [--dry-run]"
SUMMARY = "Send an agent into a room now (once: an agent already there is not sent twice)."
DETAILS = (
    "--metadata TEXT is passed to the agent's job. --force sends another agent even if one is there. "
    "--dry-run shows the request and sends nothing.",
    "A room that is not running is created by LiveKit and closes after about 5 minutes unless a person joins.",
)
FLAGS = {"--metadata": True, "--force": False, "--dry-run": False}

# LiveKit's default empty_timeout, used when the new room's own value cannot be read.
DEFAULT_EMPTY_TIMEOUT = 300


def stop_button(agent: str, room: str, dispatch_id: str) -> Button:
    return Button(
        action_id="dispatch_stop",
        label="Stop",
        command=f"stop {dispatch_id} {shlex.quote(room)}",
        style="danger",
        confirm=messages.stop_confirm(agent, room),
    )


def refresh_button(room: str) -> Button:
    return Button(action_id="dispatch_refresh", label="Refresh", command=f"list {shlex.quote(room)}")


async def run(ctx: CommandContext, tokens: list[str]) -> Reply:
    parsed = parse_args(tokens, FLAGS)
    if len(parsed.positionals) < 2:
        raise UsageError("Give an agent and a room.")
    if len(parsed.positionals) > 2:
        raise UsageError("Give one agent and one room; put spaces in --metadata inside quotes.")
    agent_word, room = parsed.positionals
    check_room(room)
    metadata = check_metadata(str(parsed.options.get("--metadata", "")))
    force = bool(parsed.options.get("--force"))
    ctx.note(room=room)
    agent = ctx.resolve_agent(agent_word)
    ctx.note(agent=agent.name)
    ctx.authorize("dispatch", agent=agent.name, room=room)
    if force:
        ctx.authorize("force", agent=agent.name, room=room)
    check_dispatchable(agent)
    label = messages.agent_label(agent.name, agent.alias)
    base = Reply("ok", [], action="dispatch", agent=agent.name, room=room)
    warnings = [agent.warning] if agent.warning else []

    if parsed.options.get("--dry-run"):
        request = {"agentName": agent.name, "room": room, "metadata": metadata}
        base.lines = [*messages.dry_run(ctx.backend.url, json.dumps(request, ensure_ascii=False)), *warnings]
        base.detail = "dry run: nothing sent"
        return base

    # The server never deduplicates: two commands at once must not both pass the check before either creates.
    async with ctx.locks.hold(room, agent.name):
        return await _dispatch(ctx, agent, room, metadata, force, label, base, warnings)


async def _dispatch(
    ctx: CommandContext,
    agent: ResolvedAgent,
    room: str,
    metadata: str,
    force: bool,
    label: Text,
    base: Reply,
    warnings: list[Text],
) -> Reply:
    room_info = await ctx.backend.get_room(room)
    if room_info is not None and not force:
        existing = [d for d in await ctx.backend.list_dispatches(room) if d.agent_name == agent.name]
        if existing:
            joined_as = next((d.joined_identity for d in existing if d.joined_identity), "")
            ids = [d.id for d in existing]
            base.outcome = "noop"
            base.dispatch_id = ids[0]
            base.lines = [*messages.already_there(label, room, ids, joined_as), *warnings]
            base.detail = f"already dispatched: {', '.join(ids)}"
            return base

    created = await ctx.backend.create_dispatch(agent.name, room, metadata)
    lines = [messages.dispatched(ctx.who, label, room, created.id), *warnings]
    detail = f"dispatched {created.id}" + (" (forced)" if force else "")
    if room_info is None:
        lines.append(await _room_created_line(ctx, room, created))
        detail += "; room was not running and was created"
    base.lines = [*lines, messages.waiting_for_join(ctx.settings.followup_timeout)]
    base.visibility = "in_channel"
    base.dispatch_id = created.id
    base.detail = detail
    base.buttons = [stop_button(agent.name, room, created.id), refresh_button(room)]
    base.followup = _followup(ctx, agent, created, base, lines)
    return base


async def _room_created_line(ctx: CommandContext, room: str, created: DispatchInfo) -> Text:
    info: RoomInfo | None = None
    with contextlib.suppress(BackendError):  # the dispatch exists; the closing time falls back to the default
        info = await ctx.backend.get_room(room)
    timeout = info.empty_timeout if info and info.empty_timeout else DEFAULT_EMPTY_TIMEOUT
    start = (info.created_at if info and info.created_at else None) or created.created_at or ctx.now()
    return messages.room_was_created(room, start + timedelta(seconds=timeout), max(1, round(timeout / 60)))


def _followup(
    ctx: CommandContext, agent: ResolvedAgent, created: DispatchInfo, first: Reply, lines: list[Text]
) -> Callable[[], Awaitable[Reply]]:
    """Poll the dispatch's job state for a bounded time; LiveKit launches a job only if a worker is there."""

    async def followup() -> Reply:
        timeout = ctx.settings.followup_timeout
        started = time.monotonic()
        deadline = started + timeout

        def result(outcome: Outcome, extra: list[Text], detail: str) -> Reply:
            return Reply(
                outcome,
                [*lines, *extra],
                visibility="in_channel",
                action="followup",
                agent=agent.name,
                room=created.room,
                dispatch_id=created.id,
                detail=detail,
                buttons=first.buttons,
            )

        while True:
            try:
                current = await ctx.backend.get_dispatch(created.id, created.room)
            except BackendError as exc:
                if exc.kind == "not_running":
                    return result(
                        "error",
                        [messages.dispatch_vanished(created.id, created.room)],
                        "dispatch gone: room closed",
                    )
                return result("error", [messages.followup_unknown(exc.sentence)], f"follow-up failed: {exc}")
            if current is None:
                return result("error", [messages.dispatch_vanished(created.id, created.room)], "dispatch gone")
            elapsed = time.monotonic() - started
            if current.joined_identity:
                return result(
                    "ok",
                    [messages.joined(current.joined_identity, elapsed)],
                    f"agent joined as {current.joined_identity}",
                )
            failed = next((j for j in current.jobs if j.status == "failed"), None)
            if failed is not None:
                return result(
                    "error",
                    [messages.job_failed(failed.error)],
                    f"agent job failed: {shorten(failed.error, 200)}",
                )
            if time.monotonic() >= deadline:
                if current.jobs:  # a worker took the job but no agent is running it
                    causes = [messages.job_not_running(agent.name, timeout, current.jobs[-1].status)]
                else:
                    causes = messages.not_joined(agent.name, timeout, agent.info)
                return result("error", causes, f"no agent joined within {timeout:g} s")
            await asyncio.sleep(max(0.0, min(ctx.settings.followup_interval, deadline - time.monotonic())))

    return followup
