"""The subcommands, in the order help lists them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import ModuleType

from . import agents, audit, dispatch, link, rooms, rules, stop
from . import help as help_command
from . import list as list_command
from .context import CommandContext
from .reply import Reply


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    summary: str
    details: tuple[str, ...]
    flags: dict[str, bool]
    run: Callable[[CommandContext, list[str]], Awaitable[Reply]]


def _command(module: ModuleType) -> Command:
    return Command(
        name=module.NAME,
        usage=module.USAGE,
        summary=module.SUMMARY,
        details=tuple(getattr(module, "DETAILS", ())),
        flags=module.FLAGS,
        run=module.run,
    )


MODULES = (dispatch, list_command, stop, link, rooms, rules, audit, agents, help_command)
COMMANDS: dict[str, Command] = {c.name: c for c in map(_command, MODULES)}
