"""Tokens, flags, names and durations: the shared grammar of every subcommand (PRODUCT.md §3)."""

from __future__ import annotations

import difflib
import re
import shlex
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

MAX_COMMAND_CHARS = 4000
MAX_ROOM_BYTES = 256
MAX_AGENT_CHARS = 128
MAX_METADATA_BYTES = 16 * 1024
MAX_DURATION = 36500 * 86400  # a hundred years: enough for any retention, small enough for datetime arithmetic

_AGENT_NAME = re.compile(r"[A-Za-z0-9_-]+")
_DISPATCH_ID = re.compile(r"AD_[A-Za-z0-9]+")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
# Slack clients turn straight quotes into curly ones.
_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})


class GrammarError(ValueError):
    """Input that does not parse; the message is one sentence for the user."""


@dataclass
class Parsed:
    positionals: list[str]
    options: dict[str, str | bool] = field(default_factory=dict)


def tokenize(text: str) -> list[str]:
    if len(text) > MAX_COMMAND_CHARS:
        raise GrammarError(f"That command is {len(text):,} characters long; the limit is {MAX_COMMAND_CHARS:,}.")
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        raise GrammarError("The command contains bytes that are not UTF-8 text.")
    try:
        return shlex.split(text.translate(_QUOTES), posix=True)
    except ValueError:
        raise GrammarError("A quotation mark is not closed.") from None


def parse_args(tokens: Sequence[str], flags: Mapping[str, bool]) -> Parsed:
    """Split tokens into positionals and options; `flags` maps each known flag to whether it takes a value."""
    parsed = Parsed(positionals=[])
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token.startswith("--") or token == "--":
            parsed.positionals.append(token)
            continue
        name, eq, inline = token.partition("=")
        if name not in flags:
            hint = did_you_mean(name, flags)
            raise GrammarError(f"Unknown option {name}.{hint}")
        if name in parsed.options:
            raise GrammarError(f"The option {name} is given twice.")
        if flags[name]:
            if eq:
                parsed.options[name] = inline
            elif i < len(tokens):
                parsed.options[name] = tokens[i]
                i += 1
            else:
                raise GrammarError(f"The option {name} needs a value.")
        elif eq:
            raise GrammarError(f"The option {name} takes no value.")
        else:
            parsed.options[name] = True
    return parsed


def did_you_mean(word: str, choices: Iterable[str], cutoff: float = 0.7) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return f" Did you mean {close[0]}?" if close else ""


def closest(word: str, choices: Iterable[str], cutoff: float = 0.7) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return close[0] if close else None


def _bad_character(value: str) -> str | None:
    for ch in value:
        if ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn"):
            return f"U+{ord(ch):04X}"
    return None


def check_room(room: str) -> str:
    size = len(room.encode("utf-8", "surrogatepass"))
    if not room:
        raise GrammarError("The room name is empty.")
    if size > MAX_ROOM_BYTES:
        raise GrammarError(f"The room name is {size} bytes long; LiveKit allows at most {MAX_ROOM_BYTES}.")
    bad = _bad_character(room)
    if bad:
        raise GrammarError(f"The room name contains a space, control or invisible character ({bad}).")
    normal = unicodedata.normalize("NFKC", room)
    if normal != room:  # ｐｒｏｄ-main would be a different room that a policy pattern for prod-* did not see
        raise GrammarError(
            f"The room name {room} uses look-alike characters (fullwidth letters, ligatures or the like); "
            f"write it as {normal}."
        )
    return room


def check_agent(agent: str) -> str:
    if not _AGENT_NAME.fullmatch(agent):
        raise GrammarError("An agent name uses only letters, digits, - and _ (OpenVidu's rule for agent-NAME.yaml).")
    if len(agent) > MAX_AGENT_CHARS:
        raise GrammarError(f"The agent name is longer than {MAX_AGENT_CHARS} characters.")
    return agent


def is_dispatch_id(value: str) -> bool:
    return bool(_DISPATCH_ID.fullmatch(value))


def check_metadata(metadata: str) -> str:
    size = len(metadata.encode("utf-8", "surrogatepass"))
    if size > MAX_METADATA_BYTES:
        raise GrammarError(f"The metadata is {size:,} bytes; the limit is {MAX_METADATA_BYTES:,}.")
    return metadata


def parse_duration(value: str) -> float:
    """`90s`, `15m`, `2h`, `7d` (and `250ms`) in seconds; a bare number is seconds."""
    value = value.strip()
    if re.fullmatch(r"-\d+(?:\.\d+)?(?:ms|s|m|h|d)?", value):
        raise GrammarError(f"{value!r} is negative; a duration must be zero or more.")
    match = _DURATION.fullmatch(value) or re.fullmatch(r"(\d+(?:\.\d+)?)()", value)
    if not match:
        raise GrammarError(f"{value!r} is not a duration; write it like 90s, 15m, 2h or 7d.")
    seconds = float(match.group(1)) * _DURATION_UNITS.get(match.group(2), 1)
    if seconds > MAX_DURATION:
        raise GrammarError(f"{value!r} is longer than the {MAX_DURATION // 86400:,} days a duration may be.")
    return seconds


def shorten(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"
