"""The access policy from the config file: rules over actions, agents, rooms, users and channels.

The first rule that matches decides; admins may do everything. With no policy configured everything is open
(and `dispatch-bot check` says so); with one, what no rule allows is denied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from ..commands.ports import ACTIONS, Actor, Decision

SPANNING_ACTIONS = ("audit", "rooms")
_RULE_KEYS = ("name", "allow", "deny", "agents", "rooms", "users", "channels")


class PolicyError(ValueError):
    """A policy that cannot be used; one sentence naming the rule and key."""


def _any(patterns: Sequence[str] | None, value: str) -> bool:
    return patterns is None or any(fnmatchcase(value, p) for p in patterns)


@dataclass(frozen=True)
class Rule:
    name: str
    allow: bool
    actions: tuple[str, ...]
    agents: tuple[str, ...] | None = None
    rooms: tuple[str, ...] | None = None
    users: tuple[str, ...] | None = None
    channels: tuple[str, ...] | None = None

    def covers(self, actor: Actor, action: str) -> bool:
        return (
            (action in self.actions or "*" in self.actions)
            and _any(self.users, actor.user_id)
            and _any(self.channels, actor.channel_id)
        )

    def matches(self, actor: Actor, action: str, agent: str, room: str) -> bool:
        if not self.covers(actor, action):
            return False
        # A condition on agents (or rooms) matches a request that names a matching one. A request that spans them
        # all (an audit without room:, the list of rooms) is covered by a deny: it would show the denied ones.
        spans = not self.allow and action in SPANNING_ACTIONS
        if self.agents is not None and not (_any(self.agents, agent) if agent else spans):
            return False
        return self.rooms is None or (_any(self.rooms, room) if room else spans)


@dataclass(frozen=True)
class Policy:
    admins: tuple[str, ...]
    rules: tuple[Rule, ...]

    def is_admin(self, actor: Actor) -> bool:
        return any(fnmatchcase(actor.user_id, a) for a in self.admins)

    def decide(self, actor: Actor, action: str, *, agent: str = "", room: str = "") -> Decision:
        if self.is_admin(actor):
            return Decision(True, "admins", admin=True)
        for rule in self.rules:
            if rule.matches(actor, action, agent, room):
                return Decision(rule.allow, rule.name)
        return Decision(False)

    def may_ever(self, actor: Actor, action: str) -> bool:
        if self.is_admin(actor):
            return True
        for rule in self.rules:
            if not rule.covers(actor, action):
                continue
            if rule.allow:
                return True
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
        if key not in ("admins", "rules"):
            raise PolicyError(f"`policy.{key}` is not a setting; the policy has admins: and rules:.")
    admins = _patterns(data, "admins", "policy") or ()
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
    return Policy(admins, tuple(rules))
