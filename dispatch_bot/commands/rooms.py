"""`rooms`: the rooms running on the server, with their people and age."""

from __future__ import annotations

from . import messages
from .context import CommandContext, UsageError
from .list import age
from .reply import Reply

NAME = "rooms"
USAGE = "rooms"
SUMMARY = "Show the rooms running on the server, with how many are in each and since when."
FLAGS: dict[str, bool] = {}
MAX_SHOWN = 100


async def run(ctx: CommandContext, tokens: list[str]) -> Reply:
    if tokens:
        raise UsageError("rooms takes no arguments; `list <room>` shows one room's agents.")
    ctx.authorize("rooms")
    rooms = await ctx.backend.list_rooms()
    now = ctx.now()
    lines = [messages.rooms_header(len(rooms), ctx.backend.url)]
    lines += [messages.room_entry(r.name, r.num_participants, age(r.created_at, now)) for r in rooms[:MAX_SHOWN]]
    if len(rooms) > MAX_SHOWN:
        lines.append(messages.rooms_more(len(rooms) - MAX_SHOWN))
    return Reply("ok", lines, action="rooms", detail=f"{len(rooms)} rooms")
