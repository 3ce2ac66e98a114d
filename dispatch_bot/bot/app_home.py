"""The App Home tab and its Dispatch modal, as slack_sdk's view models.

The Home tab shows what the person may see: their latest dispatches and the team's (from the audit log), the rooms
running now with the agents actually in them (their participants, never the job snapshot), the rules and open
watches, and the command reference. The modal's submission is turned into the slash command's text, so it runs the
same path (policy, limits, audit, follow-up) as `/dispatch <agent> <room> [--keep]`.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    CheckboxesElement,
    ContextBlock,
    ConversationFilter,
    ConversationSelectElement,
    DividerBlock,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    Option,
    PlainTextInputElement,
    PlainTextObject,
    SectionBlock,
    StaticSelectElement,
)
from slack_sdk.models.views import View

from ..commands.grammar import shorten
from ..commands.list import age
from ..commands.ports import (
    AuditError,
    AuditQuery,
    AuditRow,
    BackendError,
    DispatchRule,
    Participant,
    RoomInfo,
    WatchRecord,
)
from ..commands.registry import COMMANDS
from ..commands.reply import Mention, text
from .render import escape_mrkdwn, pack_sections, slack_mention
from .runtime import Runtime

log = logging.getLogger(__name__)

HOME_DISPATCH = "home_dispatch"  # the Home tab's Dispatch button
MODAL = "home_dispatch_modal"  # the modal's callback_id
LATEST = 5  # dispatches shown for the person, and for the team
ROOMS_SHOWN = 10  # rooms whose participants are looked up for the Home tab
WATCHES_SHOWN = 15
SECTIONS_PER_PART = 8  # each part of the Home tab in at most this many sections: 6 parts stay within 100 blocks
SCANNED_ROWS = 100  # audit rows read to find the latest dispatches and their follow-ups
# The modal's inputs: block ids, and the action ids inside them.
CHANNEL, AGENT, ROOM, KEEP = "channel", "agent", "room", "keep"


def _line(template: str, **values: str | Mention) -> str:
    return text(template, **values).render(escape_mrkdwn, slack_mention)


def _when(ts: str, now: datetime) -> str:
    try:
        return age(datetime.fromisoformat(ts), now)
    except ValueError:
        return ts


# --- the Home tab -------------------------------------------------------------------------------------------------


class HomeFacts:
    """What the Home tab shows, gathered for one person; each part is None when the policy hides it from them."""

    def __init__(self) -> None:
        self.mine: list[str] = []
        self.team: list[str] | None = None
        self.rooms: list[str] | None = None
        self.supervision: list[str] | None = None
        self.may_dispatch = True


def dispatch_lines(rows: Sequence[AuditRow], now: datetime, *, who: bool) -> list[str]:
    """The latest dispatches among `rows` (newest first), each with its outcome and what its follow-up saw."""
    followups = {r.dispatch_id: r for r in reversed(rows) if r.action == "followup" and r.dispatch_id}
    lines: list[str] = []
    for row in rows:
        if row.action != "dispatch":
            continue
        person = _line(" by {who}", who=Mention(row.user_id, row.user_name or row.user_id)) if who else ""
        outcome = _line("{outcome}", outcome=row.outcome)
        later = followups.get(row.dispatch_id)
        detail = later.detail if later is not None else row.detail
        if later is not None:
            outcome = _line("{outcome}, then {later}", outcome=row.outcome, later=later.outcome)
        lines.append(
            _line("• {when}", when=_when(row.ts, now))
            + person
            + _line(": *{agent}* into *{room}*: ", agent=row.agent or "?", room=row.room or "?")
            + f"*{outcome}*"
            + (_line(" ({detail})", detail=shorten(detail, 160)) if detail else "")
        )
        if len(lines) == LATEST:
            break
    return lines


def room_lines(rooms: Sequence[RoomInfo], present: Mapping[str, Sequence[Participant]], now: datetime) -> list[str]:
    lines: list[str] = []
    for room in rooms[:ROOMS_SHOWN]:
        participants = present.get(room.name, [])
        people = sum(1 for p in participants if p.is_person)
        agents = [p for p in participants if p.is_agent]
        since = _line(" · created {age}", age=age(room.created_at, now)) if room.created_at else ""
        head = _line("• *{room}* · {n} ", room=room.name, n=str(people)) + ("person" if people == 1 else "people")
        if agents:
            names = ", ".join(
                _line("*{agent}* (as `{identity}`)", agent=a.agent_name or "?", identity=a.identity) for a in agents
            )
            lines.append(f"{head} · agents in the room: {names}{since}")
        else:
            lines.append(f"{head} · no agent in the room{since}")
    if len(rooms) > ROOMS_SHOWN:
        lines.append(f"_…and {len(rooms) - ROOMS_SHOWN:,} more rooms: `/dispatch rooms` lists them all._")
    return lines


_STATES = {
    "waiting": "sent, not seen in the room yet",
    "present": "in the room",
    "away": "left; --keep sends it again",
}


def supervision_lines(
    rules: Sequence[DispatchRule], watches: Sequence[WatchRecord] | None, slash: str, problem: str = ""
) -> list[str]:
    lines: list[str] = []
    if rules:
        lines.append(f"*Rules* ({len(rules)}):")
        for rule in rules:
            agents = ", ".join(f"*{escape_mrkdwn(a)}*" for a in rule.agents)
            lines.append(
                _line("• *{name}*: rooms matching `{rooms}` get ", name=rule.name, rooms=rule.rooms)
                + agents
                + f", told in <#{rule.channel}>"
            )
    else:
        lines.append(f"No dispatch rules are configured (`{slash} rules` says how to add them).")
    if problem:
        lines.append(_line("_The open watches could not be read: {problem}_", problem=problem))
    elif watches is None:
        lines.append("Supervision is off (`watch.enabled: false`): no agent is watched.")
    elif not watches:
        lines.append("No agent is watched right now.")
    else:
        lines.append(f"*Watched agents* ({len(watches)}):")
        for watch in watches[:WATCHES_SHOWN]:
            state = _STATES.get(watch.state, watch.state)
            keep = ", --keep" if watch.keep else ""
            lines.append(_line("• *{agent}* in *{room}*: ", agent=watch.agent, room=watch.room) + state + keep)
        if len(watches) > WATCHES_SHOWN:
            lines.append(f"_…and {len(watches) - WATCHES_SHOWN:,} more: `{slash} rooms` shows where each agent is._")
    return lines


def command_lines(slash: str) -> list[str]:
    return [
        _line("`{slash} {usage}`: {summary}", slash=slash, usage=command.usage, summary=command.summary)
        for command in COMMANDS.values()
    ]


async def gather_facts(runtime: Runtime, user_id: str, may: Callable[[str], bool]) -> HomeFacts:
    """Everything the Home tab shows this person; a part that cannot be read says why instead."""
    facts = HomeFacts()
    now = datetime.now(UTC)
    facts.may_dispatch = may("dispatch")
    try:
        mine = await runtime.audit.query(AuditQuery(user_id=user_id, limit=SCANNED_ROWS))
        facts.mine = dispatch_lines(mine.rows, now, who=False)
        if may("audit"):
            team = await runtime.audit.query(AuditQuery(limit=SCANNED_ROWS))
            facts.team = dispatch_lines(team.rows, now, who=True)
    except AuditError as exc:
        facts.mine = [_line("_The audit log could not be read: {why}_", why=str(exc))]
    if may("rooms"):
        facts.rooms = await _rooms(runtime, now)
    if may("rules"):
        watches: list[WatchRecord] | None = None
        problem = ""
        if runtime.supervisor is not None:
            try:
                watches = await runtime.supervisor.store.open_watches()
            except AuditError as exc:
                problem = str(exc)
        slash = runtime.settings.slack_command
        facts.supervision = supervision_lines(runtime.settings.rules, watches, slash, problem)
    return facts


async def _rooms(runtime: Runtime, now: datetime) -> list[str]:
    gateway = runtime.gateway
    try:
        rooms = sorted(await gateway.list_rooms(), key=lambda r: r.name)
        shown = rooms[:ROOMS_SHOWN]
        found = await asyncio.gather(*(gateway.list_participants(r.name) for r in shown))
    except BackendError as exc:
        return [_line("_LiveKit could not be asked which rooms run: {why}_", why=exc.sentence)]
    if not rooms:
        return [_line("No rooms are running on {url}.", url=gateway.url)]
    return room_lines(rooms, {r.name: p for r, p in zip(shown, found, strict=True)}, now)


def _part(title: str, lines: list[str], empty: str) -> list[Block]:
    blocks: list[Block] = [HeaderBlock(text=PlainTextObject(text=title))]
    for chunk in pack_sections(lines or [empty], SECTIONS_PER_PART):
        blocks.append(SectionBlock(text=MarkdownTextObject(text=chunk, verbatim=True)))
    return blocks


def home_view(facts: HomeFacts, slash: str) -> View:
    """The Home tab: at most 2 + 5 × (1 + SECTIONS_PER_PART) blocks, well within a view's 100."""
    intro = f"Send agents into rooms, see where they are and who did what. In any channel, `{slash} help` says more."
    blocks: list[Block] = [
        SectionBlock(text=MarkdownTextObject(text=intro)),
    ]
    if facts.may_dispatch:
        button = ButtonElement(
            action_id=HOME_DISPATCH, text=PlainTextObject(text="Dispatch"), value="open", style="primary"
        )
        blocks.append(ActionsBlock(elements=[button]))
    blocks += _part("Your latest dispatches", facts.mine, "You have not dispatched an agent yet.")
    if facts.team is not None:
        blocks += _part("The team's latest dispatches", facts.team, "Nobody has dispatched an agent yet.")
    if facts.rooms is not None:
        blocks += _part("Rooms running now", facts.rooms, "No rooms are running.")
    if facts.supervision is not None:
        blocks += _part("Rules and watches", facts.supervision, "No rules and no watches.")
    blocks.append(DividerBlock())
    blocks += _part("Commands", command_lines(slash), "")
    blocks.append(ContextBlock(elements=[MarkdownTextObject(text=f"Updated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.")]))
    return View(type="home", blocks=blocks[: View.blocks_max_length])


# --- the Dispatch modal ------------------------------------------------------------------------------------------


def agent_choices(runtime: Runtime) -> list[tuple[str, str]]:
    """(value, label) of each agent a person may pick: aliases first (with what they point at), then the catalog's."""
    aliases = runtime.command_settings.aliases
    choices = [(alias, f"{alias} ({target})") for alias, target in sorted(aliases.items())]
    names = set(aliases.values())
    catalog = runtime.catalog.snapshot() if runtime.catalog is not None else None
    if catalog is not None and catalog.read_ok:  # the catalog's agents, not names it would refuse
        names = set(catalog.agents)
    choices += [(name, name) for name in sorted(names)]
    return choices


def dispatch_modal(runtime: Runtime) -> View:
    choices = agent_choices(runtime)
    agent_element: StaticSelectElement | PlainTextInputElement
    if len(choices) <= StaticSelectElement.options_max_length:
        agent_element = StaticSelectElement(
            action_id=AGENT,
            placeholder=PlainTextObject(text="Pick an agent"),
            options=[
                Option(value=value, text=PlainTextObject(text=shorten(label, Option.label_max_length)))
                for value, label in choices
                if len(value) <= Option.value_max_length
            ],
        )
        agent_hint = None
    else:  # more agents than a menu holds: typed, and checked like a typed command
        agent_element = PlainTextInputElement(action_id=AGENT, placeholder=PlainTextObject(text="captions"))
        agent_hint = PlainTextObject(
            text=f"One of {len(choices):,} agents and aliases: {runtime.settings.slack_command} agents lists them."
        )
    keep = Option(value="keep", text=PlainTextObject(text="--keep: send it again if it leaves while people remain"))
    blocks: list[Block] = [
        InputBlock(
            block_id=CHANNEL,
            label=PlainTextObject(text="Post the result in"),
            element=ConversationSelectElement(
                action_id=CHANNEL,
                response_url_enabled=True,  # the submission then carries a response URL for this channel
                filter=ConversationFilter(include=["public", "private"], exclude_bot_users=True),
            ),
        ),
        InputBlock(block_id=AGENT, label=PlainTextObject(text="Agent"), element=agent_element, hint=agent_hint),
        InputBlock(
            block_id=ROOM,
            label=PlainTextObject(text="Room"),
            element=PlainTextInputElement(action_id=ROOM, placeholder=PlainTextObject(text="my-room")),
        ),
        InputBlock(
            block_id=KEEP,
            label=PlainTextObject(text="Options"),
            element=CheckboxesElement(action_id=KEEP, options=[keep]),
            optional=True,
        ),
    ]
    return View(
        type="modal",
        callback_id=MODAL,
        title=PlainTextObject(text="Dispatch an agent"),
        submit=PlainTextObject(text="Dispatch"),
        close=PlainTextObject(text="Cancel"),
        blocks=blocks,
    )


class Submission:
    """What the modal's submission asks for, read from Slack's view state."""

    def __init__(self, view: Mapping[str, Any], body: Mapping[str, Any]) -> None:
        values: Mapping[str, Any] = (view.get("state") or {}).get("values") or {}
        agent = (values.get(AGENT) or {}).get(AGENT) or {}
        self.agent = str((agent.get("selected_option") or {}).get("value") or agent.get("value") or "").strip()
        self.room = str(((values.get(ROOM) or {}).get(ROOM) or {}).get("value") or "").strip()
        checked = ((values.get(KEEP) or {}).get(KEEP) or {}).get("selected_options") or []
        self.keep = any(o.get("value") == "keep" for o in checked)
        channel = (values.get(CHANNEL) or {}).get(CHANNEL) or {}
        self.channel = str(channel.get("selected_conversation") or "")
        urls = [u for u in body.get("response_urls") or [] if u.get("action_id") == CHANNEL] or list(
            body.get("response_urls") or []
        )
        self.response_url = str(urls[0].get("response_url") or "") if urls else ""

    def command(self) -> str:
        """The slash command's text for this submission, quoted so that the grammar reads exactly these values."""
        words = [shlex.quote(self.agent), shlex.quote(self.room)]
        return " ".join(words) + (" --keep" if self.keep else "")
