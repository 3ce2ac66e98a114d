"""`list <room>`: the dispatches in a room, with age and job state."""

from __future__ import annotations

from datetime import datetime

from . import messages
from .context import CommandContext, UsageError
from .grammar import check_room, parse_args
from .ports import DispatchInfo
from .reply import Reply

NAME = "list"
USAGE = "list <room>"
SUMMARY = "Show the agents dispatched in a room: id, age, whether they joined, metadata."
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


def job_state(dispatch: DispatchInfo) -> str:
    if dispatch.joined_identity:
        return f"joined as {dispatch.joined_identity}"
    if not dispatch.jobs:
        return "no job: no agent joined"
    return ", ".join(f"job {job.status}" + (f" ({job.error})" if job.error else "") for job in dispatch.jobs)


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
    now = ctx.now()
    lines = [messages.list_header(room, len(dispatches), info.num_participants)]
    lines += [
        messages.list_entry(d.agent_name, d.id, age(d.created_at, now), job_state(d), d.metadata) for d in dispatches
    ]
    return Reply("ok", lines, action="list", room=room, detail=f"{len(dispatches)} dispatches")
