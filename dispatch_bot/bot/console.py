"""The same grammar from a terminal: `dispatch-bot console` and `dispatch-bot console -c TEXT`."""

from __future__ import annotations

import asyncio
import getpass
import sys
import threading
from datetime import datetime
from typing import TextIO

from ..commands.ports import Actor, Profile
from ..commands.reply import Reply
from .log_redaction import typed_text_masker
from .render import to_text
from .runtime import Runtime

PROMPT = "dispatch> "


def os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def cli_actor() -> Actor:
    user = os_user()
    return Actor(source="cli", user_id=f"cli:{user}", user_name=f"cli:{user}")


class ConsolePeople:
    """In a terminal, a person's display name is their OS user name."""

    async def profile(self, user_id: str) -> Profile | None:
        offset = datetime.now().astimezone().utcoffset()
        return Profile(display_name=os_user(), tz_offset=int(offset.total_seconds()) if offset else 0)


def without_slash_command(text: str, slash_command: str) -> str:
    """`/dispatch help` typed in the terminal is `help`: the replies name commands as Slack spells them."""
    first, _, rest = text.strip().partition(" ")
    return rest.strip() if first == slash_command else text


async def run_once(runtime: Runtime, text: str, out: TextIO) -> Reply:
    text = typed_text_masker(runtime.settings)(text)  # a pasted secret is neither audited nor printed back
    text = without_slash_command(text, runtime.settings.slack_command)
    reply = await runtime.runner.execute(runtime.context(cli_actor(), ConsolePeople()), text)
    print(to_text(reply), file=out, flush=True)
    if reply.followup is not None:
        first, reply = reply, await reply.followup()
        # The follow-up repeats the first lines (in Slack it replaces the message); a terminal shows the news.
        print("\n".join(line.plain() for line in reply.lines if line not in first.lines), file=out, flush=True)
    return reply


def _read_lines(loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None]) -> None:
    try:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line.rstrip("\n"))
    finally:
        loop.call_soon_threadsafe(lines.put_nowait, None)


async def interactive(runtime: Runtime, out: TextIO) -> int:
    print(
        f"dispatch-bot console: type a command with or without {runtime.settings.slack_command} (help lists them), "
        "or quit.",
        file=out,
        flush=True,
    )
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    # A daemon thread: Ctrl-C ends the program at once instead of waiting for a line that never comes.
    threading.Thread(target=_read_lines, args=(asyncio.get_running_loop(), lines), daemon=True).start()
    while True:
        print(PROMPT, end="", file=out, flush=True)
        line = await lines.get()
        if line is None:
            print(file=out)
            return 0
        if line.strip() in ("quit", "exit"):
            return 0
        if line.strip():
            await run_once(runtime, line, out)


async def console(runtime: Runtime, command: str | None, out: TextIO = sys.stdout) -> int:
    if command is None:
        return await interactive(runtime, out)
    reply = await run_once(runtime, command, out)
    return 0 if reply.succeeded else 1
