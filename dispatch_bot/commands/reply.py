"""A Reply is plain data: what to tell the user, how visible, and what to write in the audit log.

The Slack app renders it to Block Kit and the console renders it to text; neither decides what it says.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Visibility = Literal["ephemeral", "in_channel"]
Outcome = Literal["ok", "noop", "denied", "invalid", "error", "interrupted"]

# Our bold and italic markup is a pair, *like this* or _like this_, opening at a word's start and closing at a
# word's end; a lone * (`agent-*.yaml`, `prod-*`) or an _ inside a word (load_threshold) is text, and so is
# anything inside a `code span`.
_MARKUP = re.compile(r"(?<![\w*_])([*_])(?=[^\s*_])(.+?)(?<=[^\s*_])\1(?![\w*_])")
_CODE = re.compile(r"(`[^`]*`)")
_EMOJI = re.compile(r"^:[a-z_]+: ")


@dataclass(frozen=True)
class Mention:
    """A person, shown as a Slack mention in Slack and by name elsewhere."""

    user_id: str
    name: str


@dataclass(frozen=True)
class Text:
    """Our own template (may use *bold* and `code`) with user-supplied values kept apart.

    Values are escaped by the renderer for its medium, so nothing a user typed can become markup.
    """

    template: str
    values: Mapping[str, str | Mention] = field(default_factory=dict)

    def render(self, escape: Callable[[str], str], mention: Callable[[Mention], str]) -> str:
        return self.template.format(
            **{k: mention(v) if isinstance(v, Mention) else escape(v) for k, v in self.values.items()}
        )

    def plain(self) -> str:
        """The text for a terminal or a log: our markup dropped, values as typed."""
        return _without_markup(_EMOJI.sub("", self.template)).format(
            **{k: v.name if isinstance(v, Mention) else v for k, v in self.values.items()}
        )


def _without_markup(template: str) -> str:
    parts = _CODE.split(template)  # odd parts are code spans, kept as they are
    return "".join(part if i % 2 else _MARKUP.sub(r"\2", part) for i, part in enumerate(parts))


def text(template: str, **values: str | Mention) -> Text:
    return Text(template, values)


@dataclass(frozen=True)
class Button:
    """A button that runs a command as the person who presses it."""

    action_id: str
    label: str
    command: str
    style: Literal["primary", "danger"] | None = None
    confirm: Text | None = None


@dataclass(frozen=True)
class JoinLink:
    """A join link. It is a credential: shown only to the person who asked, never logged, never audited."""

    url: str = field(repr=False)
    label: str = "Join"
    expires_at: datetime | None = None


@dataclass
class Reply:
    """What one command produced: the message and the facts its audit row records."""

    outcome: Outcome
    lines: list[Text]
    visibility: Visibility = "ephemeral"
    action: str = ""
    agent: str = ""
    room: str = ""
    dispatch_id: str = ""
    detail: str = ""
    buttons: list[Button] = field(default_factory=list)
    link: JoinLink | None = None
    # Runs after the reply is shown; returns the updated reply (already audited).
    followup: Callable[[], Awaitable[Reply]] | None = None
    # What the command did before its main act (a stale dispatch removed): audited first, each its own row.
    prior: list[Reply] = field(default_factory=list)

    def plain(self) -> str:
        return "\n".join(line.plain() for line in self.lines)

    @property
    def succeeded(self) -> bool:
        return self.outcome in ("ok", "noop")
