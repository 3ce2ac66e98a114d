"""`stop <agent|dispatch-id> <room>`: remove an agent's dispatches from a room, or one dispatch by id."""

from __future__ import annotations

from . import messages
from .context import CommandContext, UsageError
from .grammar import check_room, is_dispatch_id, parse_args
from .ports import BackendError
from .reply import Reply

NAME = "stop"
USAGE = "stop <agent|dispatch-id> <room>"
SUMMARY = "Take an agent out of a room: every dispatch of that agent there, or the one dispatch named by id."
FLAGS: dict[str, bool] = {}


async def run(ctx: CommandContext, tokens: list[str]) -> Reply:
    parsed = parse_args(tokens, FLAGS)
    if len(parsed.positionals) != 2:
        raise UsageError("Give an agent (or a dispatch id) and a room.")
    target, room = parsed.positionals
    check_room(room)
    by_id = is_dispatch_id(target)
    # An agent missing from the catalog may still have dispatches from before: look before refusing.
    resolved = None if by_id else ctx.resolve_agent(target, require_known=False)
    agent = resolved.name if resolved else ""
    ctx.note(agent=agent, room=room, dispatch_id=target if by_id else "")
    reply = Reply("ok", [], action="stop", agent=agent, room=room, dispatch_id=target if by_id else "")
    if not by_id:
        ctx.authorize("stop", agent=agent, room=room)

    if await ctx.backend.get_room(room) is None:
        if by_id:
            ctx.authorize("stop", room=room)
        reply.outcome = "noop"
        reply.lines = [messages.stop_not_running(room)]
        reply.detail = "room not running"
        return reply

    if by_id:
        # The policy may name agents: learn whose dispatch this is before deciding.
        found = await ctx.backend.get_dispatch(target, room)
        if found is not None:
            ctx.note(agent=found.agent_name)
        ctx.authorize("stop", agent=found.agent_name if found else "", room=room)
        if ctx.watches is not None:  # the bot removes it: its departure is no alert, and any --keep ends
            await ctx.watches.close(room, [target], "stopped")
        try:
            removed = await ctx.backend.delete_dispatch(target, room)
        except BackendError as exc:
            if exc.kind != "not_found":
                raise
            reply.outcome = "invalid"
            reply.lines = [messages.unknown_dispatch(target, room)]
            reply.detail = "unknown dispatch id"
            return reply
        reply.agent = removed.agent_name
        ids = [removed.id]
    else:
        ids = [d.id for d in await ctx.backend.list_dispatches(room) if d.agent_name == agent]
        if not ids:
            snapshot = ctx.catalog_snapshot()
            if snapshot is not None and snapshot.read_ok and agent not in snapshot.agents:
                ctx.resolve_agent(target)  # raises the catalog's refusal, with a suggestion
            reply.outcome = "noop"
            reply.lines = [messages.nothing_to_stop(agent, room)]
            reply.detail = "no dispatch to stop"
            return reply
        if ctx.watches is not None:  # the bot removes them: their departures are no alert, and any --keep ends
            await ctx.watches.close(room, ids, "stopped")
        for dispatch_id in ids:
            try:
                await ctx.backend.delete_dispatch(dispatch_id, room)
            except BackendError as exc:
                if exc.kind != "not_found":  # already gone: what we wanted
                    raise
        reply.dispatch_id = ",".join(ids)
    reply.visibility = "in_channel"
    reply.lines = [messages.stopped(ctx.who, reply.agent, room, ids)]
    reply.detail = f"stopped {', '.join(ids)}"
    return reply
