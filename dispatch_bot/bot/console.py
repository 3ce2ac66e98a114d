"""The same grammar from a terminal: `dispatch-bot console` and `dispatch-bot console -c TEXT`."""

from __future__ import annotations

import asyncio
import getpass
import itertools
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TextIO

from ..commands.ports import Actor, Profile
from ..commands.reply import Reply
from .log_redaction import typed_text_masker
from .render import to_text
from .runtime import Runtime

PROMPT = "dispatch> "
# A console's own commands (the demo's `demo kill`): the text to print, or None when the line is not one of them.
LocalCommand = Callable[[str], Awaitable[str | None]]


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


class ConsolePoster:
    """Supervision's alerts in the terminal, printed between prompts as they happen."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._ids = itertools.count(1)

    async def post(self, channel: str, thread_ts: str, reply: Reply) -> str:
        print(f"\n{to_text(reply)}", file=self.out)
        print(PROMPT, end="", file=self.out, flush=True)
        return f"console-{next(self._ids)}"

    async def update(self, channel: str, ts: str, reply: Reply) -> None:
        await self.post(channel, "", reply)


async def run_once(runtime: Runtime, text: str, out: TextIO, actor: Actor | None = None) -> Reply:
    text = typed_text_masker(runtime.settings)(text)  # a pasted secret is neither audited nor printed back
    text = without_slash_command(text, runtime.settings.slack_command)
    reply = await runtime.runner.execute(runtime.context(actor or cli_actor(), ConsolePeople()), text)
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


async def interactive(
    runtime: Runtime,
    out: TextIO,
    *,
    actor: Actor | None = None,
    intro: Sequence[str] = (),
    local: LocalCommand | None = None,
) -> int:
    print(
        f"dispatch-bot console: type a command with or without {runtime.settings.slack_command} (help lists them), "
        "or quit.",
        file=out,
        flush=True,
    )
    for sentence in intro:
        print(sentence, file=out, flush=True)
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
            answer = await local(line) if local is not None else None
            if answer is not None:
                print(answer, file=out, flush=True)
            else:
                await run_once(runtime, line, out, actor)


async def console(
    runtime: Runtime,
    command: str | None,
    out: TextIO = sys.stdout,
    *,
    actor: Actor | None = None,
    intro: Sequence[str] = (),
    local: LocalCommand | None = None,
) -> int:
    if command is None:
        return await interactive(runtime, out, actor=actor, intro=intro, local=local)
    answer = await local(command) if local is not None else None
    if answer is not None:
        print(answer, file=out, flush=True)
        return 0
    reply = await run_once(runtime, command, out, actor)
    return 0 if reply.succeeded else 1
