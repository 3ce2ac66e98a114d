"""`<agent> <room>`: send an agent into a room now, once, and follow up on whether it joined."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from . import messages
from .context import CommandContext, ResolvedAgent, UsageError, check_dispatchable
from .grammar import check_metadata, check_room, parse_args, shorten
from .ports import BackendError, DispatchInfo, Participant, RoomInfo, Seen, WatchRecord
from .presence import agent_of, agents_named, job_identities, reason_words, statuses
from .reply import Button, Outcome, Reply, Text

NAME = "dispatch"
USAGE = "<agent> <room> [--metadata TEXT] [--force] [--keep] [--dry-run]"
SUMMARY = "Send an agent into a room now (once: an agent already there, or on its way, is not sent twice)."
DETAILS = (
    "--metadata TEXT is passed to the agent's job. --force sends another agent even if one is there. "
    "--keep brings the agent back if it leaves while people remain. --dry-run shows the request and sends nothing.",
    "A dispatch whose agent left (or never joined) is replaced: the stale dispatch is removed and a new one sent.",
    "A room that is not running is created by LiveKit and closes after about 5 minutes unless a person joins.",
)
FLAGS = {"--metadata": True, "--force": False, "--keep": False, "--dry-run": False}

# While LiveKit's webhooks arrive, a follow-up looks this many times less often: an agent's joining wakes it.
EVENT_DRIVEN_SLOWDOWN = 5
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
    keep = bool(parsed.options.get("--keep"))
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
        return await _dispatch(ctx, agent, room, metadata, force, keep, label, base, warnings)


async def _dispatch(
    ctx: CommandContext,
    agent: ResolvedAgent,
    room: str,
    metadata: str,
    force: bool,
    keep: bool,
    label: Text,
    base: Reply,
    warnings: list[Text],
) -> Reply:
    room_info = await ctx.backend.get_room(room)
    before: set[str] = set()  # agents of this name already in the room: the follow-up waits for a new one
    replaced: list[str] = []
    if room_info is not None:
        found = await look_before_dispatch(ctx, agent.name, room, force=force)
        before = {p.identity for p in found.present}
        if found.there and not force:
            return await _already_there(ctx, agent, room, label, base, warnings, found, keep)
        if found.stale:
            replaced = await remove_stale(ctx, agent.name, room, found)
            base.prior.append(
                Reply(
                    "ok",
                    [],
                    action="replace",
                    agent=agent.name,
                    room=room,
                    dispatch_id=",".join(replaced),
                    detail=f"removed stale dispatch {', '.join(replaced)} ({found.why}) before dispatching again",
                )
            )
            warnings = [messages.stale_replaced(agent.name, room, replaced, found.why), *warnings]

    created = await ctx.backend.create_dispatch(agent.name, room, metadata)
    lines = [messages.dispatched(ctx.who, label, room, created.id), *warnings]
    detail = f"dispatched {created.id}" + (" (forced)" if force else "") + (" with --keep" if keep else "")
    if replaced:
        detail += f", replacing stale {', '.join(replaced)}"
    room_sid = room_info.sid if room_info is not None else ""
    if room_info is None:
        line, room_sid = await _room_created_line(ctx, room, created)
        lines.append(line)
        detail += "; room was not running and was created"
    if keep:
        lines.append(messages.keep_on(agent.name))
    watch(ctx, agent.name, room, room_sid, created.id, keep)
    base.lines = [*lines, messages.waiting_for_join(ctx.settings.followup_timeout)]
    base.visibility = "in_channel"
    base.dispatch_id = created.id
    base.detail = detail
    base.buttons = [stop_button(agent.name, room, created.id), refresh_button(room)]
    base.followup = _followup(ctx, agent, created, base, lines, before)
    return base


@dataclass(frozen=True)
class Existing:
    """What a room already holds of one agent, read just before dispatching it."""

    present: list[Participant]  # agents of that name in the room now
    dispatches: list[DispatchInfo]  # that agent's dispatches that count as there (in the room or on their way)
    stale: list[DispatchInfo]  # dispatches whose agent left or never came
    why: str = ""  # why the stale ones are stale, in words

    @property
    def there(self) -> bool:
        return bool(self.present or self.dispatches)


async def look_before_dispatch(ctx: CommandContext, agent: str, room: str, *, force: bool = False) -> Existing:
    """The agents of that name in the (running) room and its dispatches: there, on their way, or stale."""
    if force:
        return Existing(agents_named(await ctx.backend.list_participants(room), agent), [], [])
    # Both questions at once (one round trip, not two); a failure is the participants' first, as when asked in turn.
    dispatches = asyncio.ensure_future(ctx.backend.list_dispatches(room))
    try:
        participants = await ctx.backend.list_participants(room)
        listed = await dispatches
    finally:
        if not dispatches.done():
            dispatches.cancel()
        elif not dispatches.cancelled():
            dispatches.exception()  # retrieved: a second failure is not logged as never retrieved
    present = agents_named(participants, agent)
    existing = [d for d in listed if d.agent_name == agent]
    if not existing:
        return Existing(present, [], [])
    history = await ctx.watches.history(room) if ctx.watches is not None else {}
    found = statuses(existing, participants, history, ctx.now(), ctx.settings.followup_timeout)
    there = [d for d in existing if found[d.id].counts_as_there]
    stale = [] if present or there else existing
    why = "; ".join(sorted({_stale_words(found[d.id].kind, found[d.id].reason) for d in stale}))
    return Existing(present, there, stale, why)


async def remove_stale(ctx: CommandContext, agent: str, room: str, found: Existing) -> list[str]:
    """Delete dispatches whose agent is gone, so that a new one is not called a duplicate; unwatch them first."""
    ids = [d.id for d in found.stale]
    if ctx.watches is not None:
        await ctx.watches.close(room, ids, "replaced")
    for dispatch_id in ids:
        try:
            await ctx.backend.delete_dispatch(dispatch_id, room)
        except BackendError as exc:
            if exc.kind != "not_found":  # already gone: what we wanted
                raise
    return ids


def _stale_words(kind: str, reason: str) -> str:
    if kind == "left":
        return f"its agent left: {reason_words(reason)}"
    if kind == "never_joined":
        return "a worker took its job but its agent never joined"
    return "no worker ever took its job"


def watch(ctx: CommandContext, agent: str, room: str, room_sid: str, dispatch_id: str, keep: bool) -> None:
    """Have the dispatch watched: the runner writes the watch in its audit row's transaction, before any reply."""
    if ctx.watches is None:
        return
    actor = ctx.actor
    ctx.to_watch.append(
        WatchRecord(
            room=room,
            agent=agent,
            dispatch_id=dispatch_id,
            started_at=ctx.now().timestamp(),
            room_sid=room_sid,
            keep=keep,
            channel_id=actor.channel_id,
            source=actor.source,
            team_id=actor.team_id,
            user_id=actor.user_id,
            user_name=actor.user_name,
            rule=ctx.rule,
        )
    )


async def _already_there(
    ctx: CommandContext,
    agent: ResolvedAgent,
    room: str,
    label: Text,
    base: Reply,
    warnings: list[Text],
    found: Existing,
    keep: bool,
) -> Reply:
    base.outcome = "noop"
    ids = [d.id for d in found.dispatches]
    base.dispatch_id = ids[0] if ids else ""
    identity = found.present[0].identity if found.present else ""
    if identity:
        base.lines = [messages.already_in_room(label, room, identity, ids)]
        base.detail = f"already in the room as {identity}" + (f" ({', '.join(ids)})" if ids else "")
    else:
        base.lines = [messages.already_on_its_way(label, room, ids)]
        base.detail = f"already dispatched, on its way: {', '.join(ids)}"
    if keep and ids:
        for dispatch_id in ids:
            watch(ctx, agent.name, room, "", dispatch_id, keep=True)
        base.lines.append(messages.keep_on(agent.name))
        base.detail += "; --keep on"
    base.lines += warnings
    return base


async def _room_created_line(ctx: CommandContext, room: str, created: DispatchInfo) -> tuple[Text, str]:
    info: RoomInfo | None = None
    with contextlib.suppress(BackendError):  # the dispatch exists; the closing time falls back to the default
        info = await ctx.backend.get_room(room)
    timeout = info.empty_timeout if info and info.empty_timeout else DEFAULT_EMPTY_TIMEOUT
    start = (info.created_at if info and info.created_at else None) or created.created_at or ctx.now()
    line = messages.room_was_created(room, start + timedelta(seconds=timeout), max(1, round(timeout / 60)))
    return line, info.sid if info else ""


def _followup(
    ctx: CommandContext,
    agent: ResolvedAgent,
    created: DispatchInfo,
    first: Reply,
    lines: list[Text],
    before: set[str],
) -> Callable[[], Awaitable[Reply]]:
    """Wait a bounded time for the agent to appear among the room's participants: the only proof it joined."""

    async def followup() -> Reply:
        timeout = ctx.settings.followup_timeout
        started = time.monotonic()
        deadline = started + timeout
        room = created.room

        def result(outcome: Outcome, extra: list[Text], detail: str) -> Reply:
            return Reply(
                outcome,
                [*lines, *extra],
                visibility="in_channel",
                action="followup",
                agent=agent.name,
                room=room,
                dispatch_id=created.id,
                detail=detail,
                buttons=first.buttons,
            )

        async def wait(seconds: float) -> None:
            remaining = max(0.0, min(seconds, deadline - time.monotonic()))
            if ctx.signals is not None:
                await ctx.signals.wait_change(room, remaining)
            else:
                await asyncio.sleep(remaining)

        try:
            # No look at once: the reply went out moments after the dispatch was made, and a worker takes longer
            # than that to accept the job and join (a look now would find nothing, at the cost of a call). The
            # first look comes after one `followup_interval` (never slowed by webhooks, which may have told of an
            # early join before this wait began), or sooner when a webhook names the room.
            await wait(ctx.settings.followup_interval)
            while True:
                participants = await ctx.backend.list_participants(room)
                new = [p for p in agents_named(participants, agent.name) if p.identity not in before]
                if new:
                    joined = new[0]
                    if len(new) > 1:  # several new agents of this name: the job snapshot says which is this one's
                        current = await ctx.backend.get_dispatch(created.id, room)
                        joined = (agent_of(current, new) if current else None) or joined
                    elapsed = time.monotonic() - started
                    if ctx.watches is not None:  # written with the follow-up's row, in its transaction
                        ctx.to_mark_seen.append(Seen(room, created.id, joined.identity, time.time()))
                    return result(
                        "ok", [messages.joined(joined.identity, elapsed)], f"agent joined as {joined.identity}"
                    )
                if time.monotonic() >= deadline:
                    return await _not_joined(ctx, agent, created, timeout, result)
                interval = ctx.settings.followup_interval
                if ctx.signals is not None and ctx.signals.events_flowing():
                    interval *= EVENT_DRIVEN_SLOWDOWN  # the agent's participant_joined wakes it; the look is a backstop
                await wait(interval)
        except BackendError as exc:
            if exc.kind == "not_running":
                return result("error", [messages.dispatch_vanished(created.id, room)], "dispatch gone: room closed")
            return result("error", [messages.followup_unknown(exc.sentence)], f"follow-up failed: {exc}")

    return followup


async def _not_joined(
    ctx: CommandContext,
    agent: ResolvedAgent,
    created: DispatchInfo,
    timeout: float,
    result: Callable[[Outcome, list[Text], str], Reply],
) -> Reply:
    """No agent came: tell a worker that took the job (and whose agent never joined) from no job at all."""
    room = created.room
    current = await ctx.backend.get_dispatch(created.id, room) if await ctx.backend.get_room(room) else None
    if current is None:
        return result("error", [messages.dispatch_vanished(created.id, room)], "dispatch gone")
    failed = next((j for j in current.jobs if j.status == "failed"), None)
    if failed is not None:
        return result("error", [messages.job_failed(failed.error)], f"agent job failed: {shorten(failed.error, 200)}")
    identities = job_identities(current)
    if identities:
        identity = sorted(identities)[0]
        return result(
            "error",
            messages.taken_never_joined(agent.name, timeout, identity),
            f"a worker took the job as {identity} but no agent joined within {timeout:g} s",
        )
    if current.jobs:
        causes = [messages.job_not_running(agent.name, timeout, current.jobs[-1].status)]
    else:
        causes = messages.not_joined(agent.name, timeout, agent.info)
    return result("error", causes, f"no agent joined within {timeout:g} s")
