"""`agents`: what the OpenVidu agent catalog says about each agent, and whether a dispatch can reach it."""

from __future__ import annotations

from . import messages
from .context import CommandContext, UsageError
from .reply import Reply

NAME = "agents"
USAGE = "agents"
SUMMARY = "Show the agents in OpenVidu's config files: aliases, enabled, services, whether a dispatch reaches them."
FLAGS: dict[str, bool] = {}


async def run(ctx: CommandContext, tokens: list[str]) -> Reply:
    if tokens:
        raise UsageError("agents takes no arguments.")
    ctx.authorize("agents")
    aliases = ", ".join(f"{a} → {n}" for a, n in sorted(ctx.settings.aliases.items())) or "none"
    snapshot = ctx.catalog_snapshot()
    if snapshot is None:
        return Reply("ok", messages.no_catalog(aliases), action="agents", detail="no catalog configured")
    lines = [messages.agents_header(snapshot.folder, len(snapshot.agents))]
    lines += [messages.agent_entry(info, ctx.aliases_of(name)) for name, info in sorted(snapshot.agents.items())]
    lines += [messages.catalog_problem(problem) for problem in snapshot.problems]
    detail = f"{len(snapshot.agents)} agents" + (f", {len(snapshot.problems)} problems" if snapshot.problems else "")
    return Reply("ok", lines, action="agents", detail=detail)
