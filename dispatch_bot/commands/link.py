"""`link <room> [<agent> ...]`: a personal join link whose token brings the agents along.

LiveKit applies a token's `roomConfig.agents` only when that join creates the room (livekit/livekit#4390), so
for a room that is already running the agents are dispatched through the API now, deduplicated.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from datetime import timedelta
from urllib.parse import quote

from . import messages
from .context import CommandContext, ResolvedAgent, UsageError, check_dispatchable
from .dispatch import look_before_dispatch, remove_stale, watch
from .grammar import GrammarError, check_room, parse_args, parse_duration
from .reply import JoinLink, Reply, Text

NAME = "link"
USAGE = "link <room> [<agent> ...] [--name NAME] [--ttl DURATION]"
SUMMARY = "Get a personal join link (only you see it) whose token brings the agents along when you connect."
DETAILS = (
    "--name sets the name others see (default: your Slack name). --ttl sets how long the link works "
    "(default 1h, at most 12h).",
    "If the room is already running, LiveKit would ignore the token's agents, so the bot dispatches them now.",
)
FLAGS = {"--name": True, "--ttl": True}
MAX_AGENTS = 8
MAX_NAME_CHARS = 128
MIN_TTL = 60
MAX_URL_CHARS = 3000  # what Slack takes for a button's URL
_IDENTITY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def _format_duration(seconds: float) -> str:
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _check_name(name: str) -> str:
    if len(name) > MAX_NAME_CHARS:
        raise UsageError(f"The name is {len(name)} characters long; the limit is {MAX_NAME_CHARS}.")
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in name):
        raise UsageError("The name contains a control or invisible character.")
    if not name.strip():
        raise UsageError("The name is empty.")
    return name.strip()


def _ttl(ctx: CommandContext, value: str | None) -> float:
    if value is None:
        return ctx.settings.link_default_ttl
    try:
        seconds = parse_duration(value)
    except GrammarError as exc:
        raise UsageError(str(exc)) from None
    if seconds < MIN_TTL:
        raise UsageError("The link's lifetime (--ttl) must be at least a minute, like 30m or 2h.")
    if seconds > ctx.settings.link_max_ttl:
        limit = _format_duration(ctx.settings.link_max_ttl)
        raise UsageError(f"The longest a link may live is {limit} (links.max_ttl); ask for {limit} or less.")
    return seconds


def build_url(template: str, *, ws_url: str, token: str, room: str, identity: str) -> str:
    values = {"ws_url": ws_url, "token": token, "room": room, "identity": identity}
    return template.format(**{k: quote(v, safe="") for k, v in values.items()})


async def run(ctx: CommandContext, tokens: list[str]) -> Reply:
    parsed = parse_args(tokens, FLAGS)
    if not parsed.positionals:
        raise UsageError("Give a room, then the agents to bring (if any).")
    room, *agent_words = parsed.positionals
    check_room(room)
    ctx.note(room=room)
    if not agent_words:
        agent_words = list(ctx.settings.link_default_agents)
    if len(agent_words) > MAX_AGENTS:
        raise UsageError(f"A link can bring at most {MAX_AGENTS} agents; {len(agent_words)} were given.")
    ttl_option = parsed.options.get("--ttl")
    ttl = _ttl(ctx, None if ttl_option is None else str(ttl_option))
    name_option = parsed.options.get("--name")
    name = _check_name(str(name_option)) if name_option is not None else ""

    agents: list[ResolvedAgent] = []
    for word in agent_words:
        agent = ctx.resolve_agent(word)
        ctx.note(agent=",".join([*(a.name for a in agents), agent.name]))
        check_dispatchable(agent)
        if agent.name not in (a.name for a in agents):
            agents.append(agent)
    names = [a.name for a in agents]
    for agent_name in names or [""]:
        ctx.authorize("link", agent=agent_name, room=room)

    if not name:
        profile = await ctx.people.profile(ctx.actor.user_id) if ctx.people else None
        name = (profile.display_name if profile else "") or ctx.actor.user_name
        name = (name or ctx.actor.user_id)[:MAX_NAME_CHARS]
    identity = f"{_IDENTITY_UNSAFE.sub('-', ctx.actor.user_id).strip('-') or 'user'}-{secrets.token_hex(4)}"

    token = ctx.backend.mint_join_token(
        room=room, identity=identity, name=name, ttl=timedelta(seconds=ttl), agents=names
    )
    expires_at = ctx.now() + timedelta(seconds=ttl)
    url = build_url(
        ctx.settings.link_url_template, ws_url=ctx.settings.link_ws_url, token=token, room=room, identity=identity
    )
    if len(url) > MAX_URL_CHARS:
        raise UsageError(
            f"That link would be {len(url):,} characters long, more than the {MAX_URL_CHARS:,} a Slack button takes; "
            "bring fewer agents or use a shorter --name."
        )
    lines: list[Text] = [a.warning for a in agents if a.warning]
    dispatched: list[str] = []
    room_info = await ctx.backend.get_room(room) if names else None
    if names and room_info is not None:
        for agent_name in names:
            async with ctx.locks.hold(room, agent_name):  # the same check-then-create as a dispatch
                found = await look_before_dispatch(ctx, agent_name, room)
                if found.there:
                    identity = found.present[0].identity if found.present else ""
                    lines.append(
                        messages.link_agent_already_there(agent_name, [d.id for d in found.dispatches], identity)
                    )
                    continue
                if found.stale:
                    replaced = await remove_stale(ctx, agent_name, room, found)
                    lines.append(messages.stale_replaced(agent_name, room, replaced, found.why))
                created = await ctx.backend.create_dispatch(agent_name, room, "")
                watch(ctx, agent_name, room, room_info.sid, created.id, keep=False)
            dispatched.append(created.id)
            lines.append(messages.link_agent_dispatched(agent_name, created.id))
        lines.insert(0, messages.link_room_running(room))
    elif names:
        lines.insert(0, messages.link_room_not_running(room, names))

    lines.insert(0, messages.link_ready(room, name, identity, expires_at, _format_duration(ttl), names))
    detail = (
        f"link for {identity} ({name}), agents {', '.join(names) or 'none'}, "
        f"expires {expires_at.isoformat(timespec='seconds')}"
    )
    if dispatched:
        detail += f"; dispatched {', '.join(dispatched)}"
    return Reply(
        "ok",
        lines,
        visibility="ephemeral",
        action="link",
        agent=",".join(names),
        room=room,
        dispatch_id=",".join(dispatched),
        detail=detail,
        link=JoinLink(url=url, label=f"Join {room}"[:75], expires_at=expires_at),
    )
