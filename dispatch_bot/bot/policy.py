"""The access policy from the config file: rules over actions, agents, rooms, users and channels.

The first rule that matches decides; admins may do everything. With no policy configured everything is open
(and `dispatch-bot check` says so); with one, what no rule allows is denied.

Agent and room patterns match whatever the case. `force` (a second agent on purpose) is its own action: a rule
naming `dispatch` covers it too, so it is allowed wherever dispatch is unless an earlier rule names `force`.

Users may be named by Slack user group (`@handle` or `S…` id). `decide` stays synchronous: the Slack edge reads
the groups' members into `Policy.groups` (a cache with a time to live) before each command, and a rule whose
group could not be read refuses with a sentence, never allows.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from ..commands import messages
from ..commands.context import Denied
from ..commands.grammar import GrammarError, parse_duration
from ..commands.ports import ACTIONS, Actor, Decision

SPANNING_ACTIONS = ("audit", "rooms")
_RULE_KEYS = ("name", "allow", "deny", "agents", "rooms", "users", "channels")
_POLICY_KEYS = ("admins", "rules", "group_cache")
DEFAULT_GROUP_CACHE = 300.0  # seconds a user group's members are trusted before Slack is asked again
_GROUP_ID = re.compile(r"S[A-Z0-9]{2,}")


class PolicyError(ValueError):
    """A policy that cannot be used; one sentence naming the rule and key."""


def _fold(value: str) -> str:
    return unicodedata.normalize("NFKC", value).casefold()


def _any(patterns: Sequence[str] | None, value: str) -> bool:
    return patterns is None or any(fnmatchcase(value, p) for p in patterns)


def _any_folded(patterns: Sequence[str] | None, value: str) -> bool:
    """Agent and room patterns: `prod-*` covers PROD-main too (and its fullwidth spelling, though rooms are refused
    before that)."""
    return patterns is None or any(fnmatchcase(_fold(value), _fold(p)) for p in patterns)


def is_group(name: str) -> bool:
    """A Slack user group as a policy names it: its @handle or its S… id."""
    return name.startswith("@") or bool(_GROUP_ID.fullmatch(name))


class GroupCache:
    """Who is in each user group the policy names, as Slack last said; the Slack edge fills it (`stale()` first)."""

    def __init__(self, ttl: float = DEFAULT_GROUP_CACHE) -> None:
        self.ttl = ttl
        self._members: dict[str, tuple[float, frozenset[str]]] = {}
        self._problems: dict[str, str] = {}

    def stale(self, group: str) -> bool:
        read = self._members.get(group)
        return read is None or time.monotonic() - read[0] >= self.ttl

    def members(self, group: str) -> frozenset[str] | None:
        """The members as last read (the edge reads again when stale); None when the last read failed."""
        read = self._members.get(group)
        return read[1] if read is not None else None

    def problem(self, group: str) -> str:
        return self._problems.get(group, "not read yet")

    def store(self, group: str, members: frozenset[str]) -> None:
        self._members[group] = (time.monotonic(), members)
        self._problems.pop(group, None)

    def store_failure(self, group: str, why: str) -> None:
        self._members.pop(group, None)  # an old list is not trusted past its time: a failure denies
        self._problems[group] = why


@dataclass(frozen=True)
class Rule:
    name: str
    allow: bool
    actions: tuple[str, ...]
    agents: tuple[str, ...] | None = None
    rooms: tuple[str, ...] | None = None
    users: tuple[str, ...] | None = None
    channels: tuple[str, ...] | None = None

    def names(self, action: str) -> bool:
        """Whether the rule speaks of this action; one about dispatch speaks of force too."""
        return action in self.actions or "*" in self.actions or (action == "force" and "dispatch" in self.actions)

    def who(self, actor: Actor, groups: GroupCache) -> bool | str:
        """Whether the rule's users include the actor; a str (the unreadable group) when that cannot be known."""
        if self.users is None:
            return True
        unknown = ""
        for name in self.users:
            if not is_group(name):
                if fnmatchcase(actor.user_id, name):
                    return True
            elif actor.source == "slack":  # a terminal user is in no Slack user group
                members = groups.members(name)
                if members is None:
                    unknown = unknown or name
                elif actor.user_id in members:
                    return True
        return unknown or False

    def covers(self, actor: Actor, action: str, groups: GroupCache) -> bool | str:
        if not (self.names(action) and _any(self.channels, actor.channel_id)):
            return False
        return self.who(actor, groups)

    def matches(self, actor: Actor, action: str, agent: str, room: str, groups: GroupCache) -> bool | str:
        # A condition on agents (or rooms) matches a request that names a matching one. A request that spans them
        # all (an audit without room:, the list of rooms) is covered by a deny: it would show the denied ones.
        spans = not self.allow and action in SPANNING_ACTIONS
        if self.agents is not None and not (_any_folded(self.agents, agent) if agent else spans):
            return False
        if self.rooms is not None and not (_any_folded(self.rooms, room) if room else spans):
            return False
        return self.covers(actor, action, groups)


@dataclass(frozen=True)
class Policy:
    admins: tuple[str, ...]
    rules: tuple[Rule, ...]
    groups: GroupCache = field(default_factory=GroupCache, compare=False)

    def group_names(self) -> tuple[str, ...]:
        """Every user group the policy names, for the edge to read before a command."""
        names = [a for a in self.admins if is_group(a)]
        for rule in self.rules:
            names += [u for u in rule.users or () if is_group(u)]
        return tuple(dict.fromkeys(names))

    def is_admin(self, actor: Actor) -> bool:
        # An admins group that cannot be read makes nobody an admin through it; the rules still apply.
        return Rule("admins", True, ("*",), users=self.admins).who(actor, self.groups) is True

    def decide(self, actor: Actor, action: str, *, agent: str = "", room: str = "") -> Decision:
        """The first matching rule's verdict. Raises Denied (with its sentence) when the rule that would decide
        names a user group Slack would not list: not knowing never allows."""
        if self.is_admin(actor):
            return Decision(True, "admins", admin=True)
        for rule in self.rules:
            matched = rule.matches(actor, action, agent, room, self.groups)
            if isinstance(matched, str):
                why = self.groups.problem(matched)
                raise Denied(
                    [messages.group_unreadable(action, agent, room, matched, why)],
                    f"user group {matched} of rule {rule.name} could not be read: {why}",
                )
            if matched:
                return Decision(rule.allow, rule.name)
        return Decision(False)

    def may_ever(self, actor: Actor, action: str) -> bool:
        if self.is_admin(actor):
            return True
        for rule in self.rules:
            covered = rule.covers(actor, action, self.groups)
            if covered is False:
                continue
            if rule.allow:
                return covered is True
            if rule.agents is None and rule.rooms is None:
                return False  # an unconditional deny for this person: nothing below can allow it
        return False


class OpenPolicy:
    """No policy configured: everyone may run every command."""

    def decide(self, actor: Actor, action: str, *, agent: str = "", room: str = "") -> Decision:
        return Decision(True)

    def may_ever(self, actor: Actor, action: str) -> bool:
        return True


def _patterns(rule: Mapping[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    value = rule.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str | int) for v in value):
        raise PolicyError(f"{where}: `{key}` must be a list of names or glob patterns.")
    return tuple(str(v) for v in value)


def parse_policy(data: Any, aliases: Mapping[str, str]) -> Policy:
    """The `policy:` section of the config file; raises PolicyError with one sentence."""
    if not isinstance(data, dict):
        raise PolicyError("`policy` must be a mapping with `admins:` and `rules:`.")
    for key in data:
        if key not in _POLICY_KEYS:
            raise PolicyError(f"`policy.{key}` is not a setting; the policy has admins:, rules: and group_cache:.")
    admins = _patterns(data, "admins", "policy") or ()
    ttl = DEFAULT_GROUP_CACHE
    if data.get("group_cache") is not None:
        try:
            ttl = parse_duration(str(data["group_cache"]))
        except GrammarError:
            raise PolicyError(
                f"`policy.group_cache` is {data['group_cache']!r}; write a duration like 30s, 5m or 1h."
            ) from None
    raw_rules = data.get("rules")
    raw_rules = [] if raw_rules is None else raw_rules
    if not isinstance(raw_rules, list):
        raise PolicyError("`policy.rules` must be a list of rules.")
    rules: list[Rule] = []
    for number, raw in enumerate(raw_rules, start=1):
        where = f"policy rule {number}"
        if not isinstance(raw, dict):
            raise PolicyError(f"{where} must be a mapping (allow: or deny:, and conditions).")
        name = str(raw.get("name") or f"#{number}")
        where = f"policy rule {name}" if raw.get("name") else where
        for key in raw:
            if key not in _RULE_KEYS:
                raise PolicyError(f"{where}: `{key}` is not a rule key; the keys are {', '.join(_RULE_KEYS)}.")
        if ("allow" in raw) == ("deny" in raw):
            raise PolicyError(f"{where} needs exactly one of allow: or deny: (a list of actions).")
        effect = "allow" if "allow" in raw else "deny"
        actions = _patterns(raw, effect, where) or ()
        for action in actions:
            if action != "*" and action not in ACTIONS:
                raise PolicyError(f"{where}: {action!r} is not an action; the actions are {', '.join(ACTIONS)} or *.")
        agents = _patterns(raw, "agents", where)
        if agents is not None:  # a rule may name an agent by its alias
            agents = tuple(aliases.get(a, a) for a in agents)
        rules.append(
            Rule(
                name,
                effect == "allow",
                actions,
                agents,
                _patterns(raw, "rooms", where),
                _patterns(raw, "users", where),
                _patterns(raw, "channels", where),
            )
        )
    if not admins and not rules:
        raise PolicyError("`policy` has neither admins nor rules: remove it to leave everything open, or add rules.")
    for name in [*admins, *(u for rule in rules for u in rule.users or ())]:
        if is_group(name) and not re.fullmatch(r"@[A-Za-z0-9._-]+|S[A-Z0-9]{2,}", name):
            raise PolicyError(f"{name!r} is not a Slack user group: write its @handle (like @oncall) or its S… id.")
    return Policy(admins, tuple(rules), GroupCache(ttl))
