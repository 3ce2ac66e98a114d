"""`list <room>`: the dispatches in a room, with age and job state."""

from __future__ import annotations

from datetime import datetime

from . import messages
from .context import CommandContext, UsageError
from .grammar import check_room, parse_args
from .ports import DispatchInfo, Participant, WatchRecord
from .presence import DispatchStatus, agent_of, people, reason_words, statuses
from .reply import Reply, Text

NAME = "list"
USAGE = "list <room>"
SUMMARY = "Show the agents dispatched in a room: id, age, whether each is in the room (or waiting, or left), metadata."
FLAGS: dict[str, bool] = {}


def age(created: datetime | None, now: datetime) -> str:
    if created is None:
        return "age unknown"
    seconds = max(0, int((now - created).total_seconds()))
    if seconds < 60:
        return f"{seconds}s ago"
    if seconds < 3600:
        return f"{seconds // 60}m ago"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m ago"
    return f"{seconds // 86400}d ago"


def state_words(status: DispatchStatus, now: datetime) -> str:
    since = age(status.since, now) if status.since else ""
    reason = reason_words(status.reason) if status.kind == "left" else ""
    return messages.presence_state(status.kind, status.identity, since, reason)


async def dispatch_lines(
    ctx: CommandContext, room: str, dispatches: list[DispatchInfo], participants: list[Participant]
) -> list[Text]:
    """One line per dispatch with where its agent is, and a line for agents in the room that no dispatch explains."""
    history: dict[str, WatchRecord] = dict(await ctx.watches.history(room)) if ctx.watches is not None else {}
    now = ctx.now()
    found = statuses(dispatches, participants, history, now, ctx.settings.followup_timeout)
    lines = [
        messages.list_entry(d.agent_name, d.id, age(d.created_at, now), state_words(found[d.id], now), d.metadata)
        for d in dispatches
    ]
    explained = {p.identity for d in dispatches if (p := agent_of(d, participants)) is not None}
    others = [p for p in participants if p.is_agent and p.identity not in explained]
    if others:
        lines.append(messages.other_agents([(p.agent_name, p.identity) for p in others]))
    return lines


async def run(ctx: CommandContext, tokens: list[str]) -> Reply:
    parsed = parse_args(tokens, FLAGS)
    if len(parsed.positionals) != 1:
        raise UsageError("Give one room.")
    room = check_room(parsed.positionals[0])
    ctx.note(room=room)
    ctx.authorize("list", room=room)
    info = await ctx.backend.get_room(room)
    if info is None:
        return Reply("ok", [messages.room_not_running(room)], action="list", room=room, detail="room not running")
    dispatches = await ctx.backend.list_dispatches(room)
    participants = await ctx.backend.list_participants(room)
    lines = [messages.list_header(room, len(dispatches), len(people(participants)))]
    lines += await dispatch_lines(ctx, room, dispatches, participants)
    return Reply("ok", lines, action="list", room=room, detail=f"{len(dispatches)} dispatches")
