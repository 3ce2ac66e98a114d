"""`rules`: the dispatch rules (rooms matching a pattern get agents when they start) and what each did lately."""

from __future__ import annotations

from datetime import datetime

from . import messages
from .context import CommandContext, UsageError
from .list import age
from .ports import AuditQuery
from .reply import Reply

NAME = "rules"
USAGE = "rules"
SUMMARY = "Show the dispatch rules: which rooms get which agents when they start, and each rule's latest dispatches."
FLAGS: dict[str, bool] = {}
LATEST = 3


def rule_actor_id(name: str) -> str:
    """The user id a rule's dispatches are audited under."""
    return f"rule:{name}"


async def run(ctx: CommandContext, tokens: list[str]) -> Reply:
    if tokens:
        raise UsageError("rules takes no arguments.")
    ctx.authorize("rules")
    rules = ctx.settings.rules
    if not rules:
        return Reply("ok", messages.no_rules(), action="rules", detail="no rules")
    lines = [messages.rules_header(len(rules))]
    now = ctx.now()
    for rule in rules:
        lines.append(messages.rule_entry(rule.name, rule.rooms, list(rule.agents), rule.channel))
        if ctx.audit is None:
            continue
        page = await ctx.audit.query(AuditQuery(user_id=rule_actor_id(rule.name), limit=LATEST))
        for row in page.rows:
            if row.action in ("dispatch", "followup"):
                lines.append(messages.rule_latest(row.room, row.agent, row.outcome, row.detail, age_of(row.ts, now)))
        if not page.rows:
            lines.append(messages.rule_idle())
    return Reply("ok", lines, action="rules", detail=f"{len(rules)} rules")


def age_of(ts: str, now: datetime) -> str:
    try:
        return age(datetime.fromisoformat(ts), now)
    except ValueError:
        return ts
