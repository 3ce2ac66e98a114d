"""A Reply as Slack Block Kit (user text escaped for mrkdwn) and as terminal text."""

from __future__ import annotations

import re
from typing import Any

from ..commands.reply import Mention, Reply

_SLACK_USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")
SECTION_LIMIT = 3000  # characters of mrkdwn in one section block
MAX_BLOCKS = 48


def escape_mrkdwn(value: str) -> str:
    """Slack's three control characters, so user text can never become a mention, a link or <!channel>."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_mention(person: Mention) -> str:
    if _SLACK_USER_ID.fullmatch(person.user_id):
        return f"<@{person.user_id}>"
    return escape_mrkdwn(person.name)


def _chunks(lines: list[str]) -> list[str]:
    chunks: list[str] = []
    current = ""
    for line in lines:
        while len(line) > SECTION_LIMIT:
            line = line[: SECTION_LIMIT - 1] + "…"
        if current and len(current) + 1 + len(line) > SECTION_LIMIT:
            chunks.append(current)
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    if current:
        chunks.append(current)
    return chunks


def to_slack(reply: Reply) -> tuple[str, list[dict[str, Any]]]:
    """The fallback text and the blocks for one reply."""
    lines = [line.render(escape_mrkdwn, slack_mention) for line in reply.lines]
    chunks = _chunks(lines)
    blocks: list[dict[str, Any]] = [
        # verbatim: Slack must not turn a room called #general or @here into a link or a mention
        {"type": "section", "text": {"type": "mrkdwn", "text": chunk, "verbatim": True}}
        for chunk in chunks[:MAX_BLOCKS]
    ]
    if reply.buttons:
        elements = []
        for button in reply.buttons:
            element: dict[str, Any] = {
                "type": "button",
                "action_id": button.action_id,
                "text": {"type": "plain_text", "text": button.label},
                "value": button.command[:2000],
            }
            if button.style:
                element["style"] = button.style
            if button.confirm is not None:
                element["confirm"] = {
                    "title": {"type": "plain_text", "text": f"{button.label}?"},
                    "text": {"type": "plain_text", "text": button.confirm.plain()[:300]},
                    "confirm": {"type": "plain_text", "text": button.label},
                    "deny": {"type": "plain_text", "text": "Cancel"},
                    "style": "danger" if button.style == "danger" else "primary",
                }
            elements.append(element)
        blocks.append({"type": "actions", "elements": elements})
    if reply.link is not None:  # the link command keeps URLs within what a button takes
        link_button: dict[str, Any] = {"type": "button", "action_id": "join_link", "style": "primary",
                  "text": {"type": "plain_text", "text": reply.link.label}, "url": reply.link.url}  # fmt: skip
        blocks.append({"type": "actions", "elements": [link_button]})
    fallback = "\n".join(lines)
    return (fallback[:3000] if len(fallback) > 3000 else fallback), blocks


def to_text(reply: Reply) -> str:
    out = reply.plain()
    if reply.link is not None:
        out += f"\n{reply.link.url}"
    for button in reply.buttons:
        out += f"\n  {button.label.lower()}: {button.command}"
    return out
