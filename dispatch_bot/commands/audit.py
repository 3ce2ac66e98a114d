"""`audit [room:…] [agent:…] [user:…] [since:…] [outcome:…] [limit:…]`: who did what, newest first."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import messages
from .context import CommandContext, UsageError
from .grammar import GrammarError, check_agent, check_room, parse_duration
from .ports import AuditQuery
from .reply import Mention, Reply, Text

NAME = "audit"
USAGE = "audit [room:<room>] [agent:<agent>] [user:<@user>] [since:<duration|date>] [outcome:<outcome>] [limit:<n>]"
SUMMARY = "Show who did what, newest first (only you see it)."
DETAILS = (
    "since: takes a duration (2h, 7d) or a date (2026-11-01, or 2026-11-01T14:30 in UTC). "
    "outcome: is ok, noop, denied, invalid, error or interrupted. limit: is 1 to 100 here (20 by default).",
)
FLAGS: dict[str, bool] = {}
FILTER_KEYS = ("room", "agent", "user", "since", "outcome", "limit")
OUTCOMES = ("ok", "noop", "denied", "invalid", "error", "interrupted")
DEFAULT_LIMIT = 20
SLACK_MAX_LIMIT = 100
_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,}|cli:\S+")


def parse_since(value: str, now: datetime) -> datetime:
    try:
        return now - timedelta(seconds=parse_duration(value))
    except GrammarError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except (ValueError, OverflowError):
        raise UsageError(
            f"since:{value} is neither a duration nor a date; write since:2h, since:7d or since:2026-11-01."
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_filters(
    words: Sequence[str], *, now: datetime, aliases: Mapping[str, str], max_limit: int | None
) -> AuditQuery:
    """`key:value` words into a query; each mistake is one sentence with the accepted form."""
    found: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition(":")
        if not sep or key not in FILTER_KEYS:
            raise UsageError(
                f"{word} is not a filter; the filters are room:, agent:, user:, since:, outcome: and limit:."
            )
        if not value:
            raise UsageError(f"{key}: needs a value, like {key}:{ {'user': '@alice'}.get(key, '…') }.")
        if key in found:
            raise UsageError(f"The filter {key}: is given twice.")
        found[key] = value
    room = check_room(found["room"]) if "room" in found else ""
    agent = found.get("agent", "")
    if agent:
        agent = aliases.get(agent, agent)
        check_agent(agent)
    user = ""
    if "user" in found:
        mention = _MENTION.fullmatch(found["user"])
        if mention:
            user = mention.group(1)
        elif _USER_ID.fullmatch(found["user"]):
            user = found["user"]
        else:
            raise UsageError(f"user:{found['user']} is not a person; write user:@alice (a Slack mention) or a user id.")
    outcome = found.get("outcome", "")
    if outcome and outcome not in OUTCOMES:
        raise UsageError(f"outcome:{outcome} is not an outcome; use one of {', '.join(OUTCOMES)}.")
    limit = DEFAULT_LIMIT
    if "limit" in found:
        top = max_limit or 1_000_000
        if not re.fullmatch(r"[0-9]{1,9}", found["limit"]) or not 1 <= int(found["limit"]) <= top:
            raise UsageError(f"limit:{found['limit']} is out of range; use a number from 1 to {top:,}.")
        limit = int(found["limit"])
    since = parse_since(found["since"], now) if "since" in found else None
    return AuditQuery(room=room, agent=agent, user_id=user, since=since, outcome=outcome, limit=limit)


def _zone(name: str, offset: int) -> tuple[tzinfo, str]:
    if name:
        try:
            return ZoneInfo(name), name
        except (ZoneInfoNotFoundError, ValueError):
            pass
    if offset:
        return timezone(timedelta(seconds=offset)), f"UTC{offset / 3600:+g}"
    return UTC, "UTC"


async def run(ctx: CommandContext, tokens: list[str]) -> Reply:
    if ctx.audit is None:
        raise UsageError("The audit log cannot be read here.")
    query = parse_filters(tokens, now=ctx.now(), aliases=ctx.settings.aliases, max_limit=SLACK_MAX_LIMIT)
    ctx.authorize("audit", agent=query.agent, room=query.room)
    page = await ctx.audit.query(query)
    profile = await ctx.people.profile(ctx.actor.user_id) if ctx.people else None
    zone, zone_name = _zone(profile.tz_name, profile.tz_offset) if profile else (UTC, "UTC")
    filters = " ".join(tokens) or "no filter"
    lines: list[Text] = [messages.audit_header(len(page.rows), filters, zone_name)]
    for row in page.rows:
        when = datetime.fromisoformat(row.ts).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")
        who: str | Mention = Mention(row.user_id, row.user_name or row.user_id)
        lines.append(messages.audit_entry(when, who, row.raw_text, row.room, row.outcome, row.detail))
    if page.more:
        lines.append(messages.audit_more(page.more, page.more_capped))
    # The row names the filters in its detail, not in room/agent: reading a room's history is not an act on it.
    return Reply("ok", lines, action="audit", detail=f"{len(page.rows)} rows ({filters})")
