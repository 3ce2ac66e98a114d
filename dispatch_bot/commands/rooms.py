"""`rooms`: the rooms running on the server, with their people, their age and where their agents are."""

from __future__ import annotations

import asyncio

from . import messages
from .context import CommandContext, UsageError
from .list import age, state_words
from .ports import BackendError, RoomInfo
from .presence import statuses
from .reply import Reply, Text

NAME = "rooms"
USAGE = "rooms"
SUMMARY = "Show the rooms running on the server: how many people are in each, since when, and where its agents are."
FLAGS: dict[str, bool] = {}
MAX_SHOWN = 100
MAX_DETAILED = 25  # rooms whose dispatches and participants are read (two calls each)
CONCURRENT_READS = 8


async def run(ctx: CommandContext, tokens: list[str]) -> Reply:
    if tokens:
        raise UsageError("rooms takes no arguments; `list <room>` shows one room's agents.")
    ctx.authorize("rooms")
    rooms = await ctx.backend.list_rooms()
    now = ctx.now()
    gate = asyncio.Semaphore(CONCURRENT_READS)

    async def agents_line(room: RoomInfo) -> Text | None:
        async with gate:
            try:
                dispatches = await ctx.backend.list_dispatches(room.name)
                participants = await ctx.backend.list_participants(room.name)
            except BackendError:  # a room that closed meanwhile, or a slow node: the room's line still stands
                return None
        history = dict(await ctx.watches.history(room.name)) if ctx.watches is not None else {}
        found = statuses(dispatches, participants, history, now, ctx.settings.followup_timeout)
        named = [(d.agent_name, state_words(found[d.id], now)) for d in dispatches if d.agent_name]
        return messages.room_agents(named) if named else None

    details = await asyncio.gather(*(agents_line(r) for r in rooms[:MAX_DETAILED]))
    lines = [messages.rooms_header(len(rooms), ctx.backend.url)]
    for index, room in enumerate(rooms[:MAX_SHOWN]):
        lines.append(messages.room_entry(room.name, room.num_participants, age(room.created_at, now)))
        detail = details[index] if index < len(details) else None
        if detail is not None:
            lines.append(detail)
    if len(rooms) > MAX_SHOWN:
        lines.append(messages.rooms_more(len(rooms) - MAX_SHOWN))
    return Reply("ok", lines, action="rooms", detail=f"{len(rooms)} rooms")
