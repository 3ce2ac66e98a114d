"""A Reply as Slack Block Kit (user text escaped for mrkdwn) and as terminal text.

The blocks are plain JSON built within the limits slack_sdk's Block Kit models state (the tests pass every
payload through those models, which check each limit; building the models for each message cost about a tenth of
the bot's CPU per dispatch). Nothing is cut without a word: a long line is continued in the next section (a code
block in fenced pieces), a message that would need more than Slack's 50 blocks ends with how many lines are left
out and where to see them, and a label or a confirmation that must be shorter ends in "…".
"""

from __future__ import annotations

import re
from typing import Any

from slack_sdk.models.blocks import ActionsBlock, ButtonElement, ConfirmObject, SectionBlock

from ..commands.grammar import shorten
from ..commands.reply import Button, Mention, Reply

_SLACK_USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")
SECTION_LIMIT = SectionBlock.text_max_length  # characters of mrkdwn in one section block
MAX_BLOCKS = 50  # blocks in one message
TEXT_LIMIT = 3000  # the notification text that goes with the blocks
_FENCE = "```"
_ENTITY_TAIL = re.compile(r"&[a-z]{0,4}$")  # an escaped &, < or > must not be split across two sections


def escape_mrkdwn(value: str) -> str:
    """Slack's three control characters, so user text can never become a mention, a link or <!channel>."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_mention(person: Mention) -> str:
    if _SLACK_USER_ID.fullmatch(person.user_id):
        return f"<@{person.user_id}>"
    return escape_mrkdwn(person.name)


def more_lines(count: int) -> str:
    """The last block of a message Slack cannot hold whole."""
    return (
        f"_…and {count:,} more line{'' if count == 1 else 's'}, more than a Slack message holds: "
        "`dispatch-bot console` shows them all._"
    )


def _cut(value: str, limit: int, *, at_space: bool) -> int:
    """Where to end the first piece of `value` (at most `limit` characters), never inside an escaped entity."""
    end = limit
    if at_space:
        newline, space = value.rfind("\n", 0, limit), value.rfind(" ", 0, limit)
        best = newline if newline > limit // 2 else space
        end = best + 1 if best > limit // 2 else limit
    tail = _ENTITY_TAIL.search(value[:end])
    return tail.start() if tail and tail.start() > 0 else end


def _pieces(line: str) -> list[str]:
    """A line as pieces that each fit a section; a fenced code block stays fenced in every piece."""
    if len(line) <= SECTION_LIMIT:
        return [line]
    fenced = line.startswith(_FENCE) and line.endswith(_FENCE) and len(line) >= 2 * len(_FENCE)
    body = line[len(_FENCE) : -len(_FENCE)] if fenced else line
    room = SECTION_LIMIT - (2 * len(_FENCE) if fenced else 0)
    pieces = []
    while body:
        end = len(body) if len(body) <= room else _cut(body, room, at_space=not fenced)
        pieces.append(f"{_FENCE}{body[:end]}{_FENCE}" if fenced else body[:end])
        body = body[end:]
    return pieces


def _sections(lines: list[str], room: int) -> list[str]:
    """The lines packed into at most `room` section texts; the last says how many lines did not fit."""
    chunks: list[tuple[str, int]] = []  # (text, index of the last line it ends)
    current, last = "", -1
    for index, line in enumerate(lines):
        for piece in _pieces(line):
            if current and len(current) + 1 + len(piece) > SECTION_LIMIT:
                chunks.append((current, last))
                current = piece
            else:
                current = f"{current}\n{piece}" if current else piece
            last = index
    if current:
        chunks.append((current, last))
    if len(chunks) <= room:
        return [c for c, _ in chunks]
    kept = chunks[: room - 1]
    shown = kept[-1][1] if kept else -1  # a line split across the boundary counts as not shown
    if kept and chunks[room - 1][1] == shown:
        shown -= 1
    return [*(c for c, _ in kept), more_lines(len(lines) - shown - 1)]


def pack_sections(lines: list[str], room: int) -> list[str]:
    """Lines (already rendered mrkdwn) as at most `room` section texts, the last saying how many did not fit."""
    return _sections(lines, room)


def _plain(value: str, *, emoji: bool = False) -> dict[str, Any]:
    # slack_sdk turns a bare string into plain text with emoji on: the same JSON as its models give.
    return {"type": "plain_text", "text": value, "emoji": True} if emoji else {"type": "plain_text", "text": value}


def _button(button: Button) -> dict[str, Any] | None:
    if len(button.command) > ButtonElement.value_max_length:
        return None  # a command cut short would run something else: no button rather than a wrong one
    element: dict[str, Any] = {
        "type": "button",
        "action_id": button.action_id,
        "text": _plain(shorten(button.label, ButtonElement.text_max_length)),
        "value": button.command,
    }
    if button.style is not None:
        element["style"] = button.style
    if button.confirm is not None:
        element["confirm"] = {
            "title": _plain(shorten(f"{button.label}?", ConfirmObject.title_max_length), emoji=True),
            "text": _plain(shorten(button.confirm.plain(), ConfirmObject.text_max_length)),
            "confirm": _plain(shorten(button.label, ConfirmObject.confirm_max_length), emoji=True),
            "deny": _plain("Cancel", emoji=True),
            "style": "danger" if button.style == "danger" else "primary",
        }
    return element


def reply_blocks(reply: Reply) -> list[dict[str, Any]]:
    """The reply as Block Kit JSON, within Slack's 50 blocks."""
    actions: list[dict[str, Any]] = []
    buttons = [b for b in map(_button, reply.buttons) if b is not None]
    if buttons:
        actions.append({"type": "actions", "elements": buttons[: ActionsBlock.elements_max_length]})
    if reply.link is not None:  # the link command keeps URLs within what a button takes
        label = shorten(reply.link.label, ButtonElement.text_max_length)
        link = {"type": "button", "action_id": "join_link", "style": "primary", "text": _plain(label),
                "url": reply.link.url}  # fmt: skip
        actions.append({"type": "actions", "elements": [link]})
    lines = [line.render(escape_mrkdwn, slack_mention) for line in reply.lines]
    # verbatim: Slack must not turn a room called #general or @here into a link or a mention
    sections = [
        {"type": "section", "text": {"type": "mrkdwn", "text": chunk, "verbatim": True}}
        for chunk in _sections(lines, MAX_BLOCKS - len(actions))
    ]
    return [*sections, *actions]


def to_slack(reply: Reply) -> tuple[str, list[dict[str, Any]]]:
    """The notification text and the blocks (as JSON) for one reply."""
    lines = [line.render(escape_mrkdwn, slack_mention) for line in reply.lines]
    return shorten("\n".join(lines), TEXT_LIMIT), reply_blocks(reply)


def to_text(reply: Reply) -> str:
    out = reply.plain()
    if reply.link is not None:
        out += f"\n{reply.link.url}"
    for button in reply.buttons:
        out += f"\n  {button.label.lower()}: {button.command}"
    return out
