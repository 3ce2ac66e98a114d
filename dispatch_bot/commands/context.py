"""What a subcommand runs with: the backend, the agent catalog, the settings and who asked."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from . import messages
from .grammar import GrammarError, check_agent, closest
from .ports import (
    Actor,
    AgentCatalogView,
    AgentInfo,
    AuditReader,
    Authorizer,
    CatalogSnapshot,
    CommandSettings,
    DispatchBackend,
    PeopleDirectory,
    RoomSignals,
    Seen,
    WatchRecord,
    WatchRegistry,
)
from .reply import Mention, Text

# Subcommand words are reserved: they can never be agent names or aliases (PRODUCT.md §3).
RESERVED_WORDS = ("list", "stop", "link", "audit", "agents", "rooms", "rules", "help")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UsageError(GrammarError):
    """Input that does not fit the subcommand's usage line."""


class Refusal(Exception):
    """Well-formed input the bot will not act on, with the explanation to show (audited as `invalid`)."""

    def __init__(self, lines: list[Text], detail: str) -> None:
        super().__init__(detail)
        self.lines = lines
        self.detail = detail


class Denied(Exception):
    """The policy does not let this person do this; the lines say which rule (audited as `denied`)."""

    def __init__(self, lines: list[Text], detail: str) -> None:
        super().__init__(detail)
        self.lines = lines
        self.detail = detail


@dataclass(frozen=True)
class ResolvedAgent:
    name: str
    alias: str = ""
    info: AgentInfo | None = None  # what the catalog says, when there is a catalog and it knows the agent
    warning: Text | None = None  # shown with the result when the agent could not be checked


class KeyedLocks:
    """One asyncio.Lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, ...], tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, *key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


# Actions that change something in LiveKit or hand out a credential: these are limited per person.
WRITE_ACTIONS = frozenset({"dispatch", "force", "stop", "link"})
LIMIT_WINDOW = 60.0  # seconds: `limits.per_user_per_minute`


class PersonLimiter:
    """At most `per_minute` write commands per Slack person in any sixty seconds (a sliding window of times).

    Only people in Slack are limited: the console runs on the host, next to the secrets, where a limit would stop
    nobody; the bot's own rules and --keep are the operator's configuration.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._times: dict[tuple[str, str], deque[float]] = {}

    def take(self, actor: Actor) -> float:
        """0 when this person may go ahead (and it is counted), else the seconds until they may."""
        if actor.source != "slack":
            return 0.0
        now = self._clock()
        key = (actor.team_id, actor.user_id)
        times = self._times.setdefault(key, deque())
        while times and times[0] <= now - LIMIT_WINDOW:
            times.popleft()
        if len(times) >= self.per_minute:
            return max(times[0] + LIMIT_WINDOW - now, 0.001)
        times.append(now)
        self._forget(now)
        return 0.0

    def _forget(self, now: float) -> None:
        """Drop people whose last write is older than the window, so the table stays as small as the active team."""
        if len(self._times) < 1024:
            return
        for key in [k for k, t in self._times.items() if not t or t[-1] <= now - LIMIT_WINDOW]:
            del self._times[key]


@dataclass
class CommandContext:
    backend: DispatchBackend
    settings: CommandSettings
    actor: Actor
    catalog: AgentCatalogView | None = None
    people: PeopleDirectory | None = None
    audit: AuditReader | None = None
    locks: KeyedLocks = field(default_factory=KeyedLocks)
    authorizer: Authorizer | None = None  # None: no policy, everything open
    now: Callable[[], datetime] = field(default=utcnow)
    watches: WatchRegistry | None = None  # None: supervision off (watch.enabled: false)
    signals: RoomSignals | None = None  # wakes a follow-up when a webhook names its room
    rule: str = ""  # the dispatch rule this command runs for, if any
    received_id: int = 0  # its received-command record (Slack commands), which its audit row completes
    limiter: PersonLimiter | None = None  # None: no per-person limit
    counted: bool = False  # this command has been counted against its person's limit already
    # What the command had resolved when it failed, so an error's audit row still names agent and room.
    facts: dict[str, str] = field(default_factory=dict)
    # Dispatches to watch: the runner writes them with the command's audit row, in its transaction, before the reply.
    to_watch: list[WatchRecord] = field(default_factory=list)
    # What a follow-up saw: the runner marks those watches present in the transaction of the follow-up's row.
    to_mark_seen: list[Seen] = field(default_factory=list)

    def note(self, **facts: str) -> None:
        self.facts.update(facts)

    def authorize(self, action: str, *, agent: str = "", room: str = "") -> None:
        """Raise Denied unless the policy lets the person who asked do this, and (for a write) their limit does."""
        if self.authorizer is not None:
            decision = self.authorizer.decide(self.actor, action, agent=agent, room=room)
            if not decision.allowed:
                detail = f"denied by rule {decision.rule}" if decision.rule else "no policy rule allows it"
                raise Denied([messages.denied(action, agent, room, decision.rule)], detail)
        if action in WRITE_ACTIONS and self.limiter is not None and not self.counted:
            wait = self.limiter.take(self.actor)
            if wait:
                seconds = math.ceil(wait)
                limit = self.limiter.per_minute
                raise Denied(
                    [messages.rate_limited(limit, seconds)],
                    f"limit: {limit} write commands a minute per person; try again in {seconds} s",
                )
            self.counted = True  # one command is one write, however many agents or checks it has

    def may(self, action: str) -> bool:
        return self.authorizer is None or self.authorizer.may_ever(self.actor, action)

    @property
    def who(self) -> Mention:
        return Mention(self.actor.user_id, self.actor.user_name or self.actor.user_id)

    def catalog_snapshot(self) -> CatalogSnapshot | None:
        return self.catalog.snapshot() if self.catalog is not None else None

    def known_agents(self) -> set[str]:
        snapshot = self.catalog_snapshot()
        names = set(self.settings.aliases) | set(self.settings.aliases.values())
        if snapshot is not None and snapshot.read_ok:
            names |= set(snapshot.agents)
        return names

    def aliases_of(self, name: str) -> list[str]:
        return sorted(alias for alias, target in self.settings.aliases.items() if target == name)

    def resolve_agent(self, word: str, *, require_known: bool = True) -> ResolvedAgent:
        """An alias or a well-formed agent name, checked against the catalog when there is one.

        A near miss of a known name is refused with a suggestion; with a catalog, so is any unknown name
        (unless `require_known` is False, for stopping what may have been dispatched before).
        """
        if word.lower() in RESERVED_WORDS:
            raise GrammarError(f"{word} is a subcommand, so it cannot be an agent name.")
        alias = word if word in self.settings.aliases else ""
        name = self.settings.aliases[word] if alias else check_agent(word)
        snapshot = self.catalog_snapshot()
        if snapshot is None or not snapshot.read_ok:
            if not alias and name not in self.known_agents():
                near = closest(name, self.known_agents(), cutoff=0.8)
                if near:
                    raise GrammarError(f"There is no agent called {name}. Did you mean {near}?")
            warning = None
            if snapshot is not None:
                problem = snapshot.problems[0] if snapshot.problems else "not read yet"
                warning = messages.catalog_unreadable(problem, name)
            return ResolvedAgent(name, alias, warning=warning)
        info = snapshot.agents.get(name)
        if info is None and require_known:
            if alias:
                raise Refusal(
                    messages.alias_target_unknown(alias, name, snapshot.folder),
                    f"alias {alias} points at {name}, which is not in the catalog",
                )
            near = closest(name, self.known_agents(), cutoff=0.6)
            raise Refusal(messages.unknown_agent(name, near, snapshot.folder), f"unknown agent {name}")
        return ResolvedAgent(name, alias, info=info)


def check_dispatchable(agent: ResolvedAgent) -> None:
    """Refuse a named dispatch that the agent's own config file says cannot reach it."""
    info = agent.info
    if info is None:
        return
    if info.enabled is False:
        raise Refusal(messages.agent_disabled(info), "agent disabled (enabled: false)")
    if info.name_mismatch:
        raise Refusal(messages.agent_name_mismatch(info), f"agent_name {info.declared_name} disagrees with file name")
    if info.defects:
        raise Refusal(messages.agent_defects(info), f"agent file defect: {info.defects[0]}")
    if info.automatic_only:
        raise Refusal(messages.agent_automatic(info), "agent in processing: automatic")
