"""What a subcommand runs with: the backend, the settings and who asked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .grammar import GrammarError, check_agent, closest
from .ports import Actor, CommandSettings, DispatchBackend
from .reply import Mention

# Subcommand words are reserved: they can never be agent names or aliases (PRODUCT.md §3).
RESERVED_WORDS = ("list", "stop", "link", "audit", "agents", "rooms", "help")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UsageError(GrammarError):
    """Input that does not fit the subcommand's usage line."""


@dataclass(frozen=True)
class ResolvedAgent:
    name: str
    alias: str = ""


@dataclass
class CommandContext:
    backend: DispatchBackend
    settings: CommandSettings
    actor: Actor
    now: Callable[[], datetime] = field(default=utcnow)
    # What the command had resolved when it failed, so an error's audit row still names agent and room.
    facts: dict[str, str] = field(default_factory=dict)

    def note(self, **facts: str) -> None:
        self.facts.update(facts)

    @property
    def who(self) -> Mention:
        return Mention(self.actor.user_id, self.actor.user_name or self.actor.user_id)

    def known_agents(self) -> set[str]:
        return set(self.settings.aliases) | set(self.settings.aliases.values())

    def resolve_agent(self, word: str) -> ResolvedAgent:
        """An alias or a well-formed agent name; a near miss of a known one is refused with a suggestion."""
        if word.lower() in RESERVED_WORDS:
            raise GrammarError(f"{word} is a subcommand, so it cannot be an agent name.")
        if word in self.settings.aliases:
            return ResolvedAgent(self.settings.aliases[word], alias=word)
        check_agent(word)
        known = self.known_agents()
        if word not in known:
            near = closest(word, known, cutoff=0.8)
            if near:
                raise GrammarError(f"There is no agent called {word}. Did you mean {near}?")
        return ResolvedAgent(word)
