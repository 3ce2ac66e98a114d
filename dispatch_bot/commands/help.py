"""`help [<subcommand>]`: the usage of every command, or of one."""

from __future__ import annotations

from . import messages
from .context import CommandContext, UsageError
from .grammar import closest
from .reply import Reply, text

NAME = "help"
USAGE = "help [<subcommand>]"
SUMMARY = "Show what each command does, or the details of one."
FLAGS: dict[str, bool] = {}


async def run(ctx: CommandContext, tokens: list[str]) -> Reply:
    from .registry import COMMANDS

    cmd = ctx.settings.slash_command
    if len(tokens) > 1:
        raise UsageError("help takes at most one subcommand.")
    if tokens:
        word = tokens[0].lower()
        if word not in COMMANDS:
            near = closest(word, COMMANDS)
            hint = f" Did you mean {near}?" if near else ""
            raise UsageError(f"There is no subcommand {word}.{hint}")
        command = COMMANDS[word]
        lines = [
            text("`{usage}`", usage=f"{cmd} {command.usage}"),
            text("{summary}", summary=command.summary),
        ]
        lines += [text("{line}", line=line) for line in command.details]
        return Reply("ok", lines, action="help")
    lines = [text("*dispatch-bot* sends LiveKit agents into rooms and keeps an audit log of every command.")]
    for command in COMMANDS.values():
        if command.name != "help" and not ctx.may(command.name):
            continue  # help shows only what this person may run
        lines.append(text("`{usage}`: {summary}", usage=f"{cmd} {command.usage}", summary=command.summary))
    snapshot = ctx.catalog_snapshot()
    if snapshot is not None and snapshot.read_ok:
        reach = ", ".join(f"{name} ({messages.dispatch_reach(info)})" for name, info in sorted(snapshot.agents.items()))
        lines.append(text("Agents: {reach}.", reach=reach or "none in the catalog"))
    lines.append(
        text(
            "Aliases: {aliases}.",
            aliases=", ".join(f"{alias} → {name}" for alias, name in sorted(ctx.settings.aliases.items())) or "none",
        )
    )
    return Reply("ok", lines, action="help")
