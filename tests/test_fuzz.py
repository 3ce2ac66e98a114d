"""Generated command texts through the command runner and through `console -c`, against the LiveKit stand-in.

Whatever is typed (grammar words, agents and rooms from a small catalog, flags, quotes, unicode that NFKC changes,
control characters, very long strings, token-shaped strings), the answer is sentences: no exception, no traceback,
no internal error, and no configured secret printed back. A few hundred examples here (seconds);
`DISPATCH_BOT_FUZZ_EXAMPLES=10000` runs that many. Derandomized, and no example database is written.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatch_bot.bot.config import load_settings
from dispatch_bot.bot.console import ConsolePeople, cli_actor, console
from dispatch_bot.bot.render import to_text
from dispatch_bot.bot.runtime import Runtime
from dispatch_bot.commands.reply import Reply
from tests.fakes.livekit_server import FakeLiveKit

T = TypeVar("T")
EXAMPLES = int(os.environ.get("DISPATCH_BOT_FUZZ_EXAMPLES", "250"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
API_SECRET = "fuzz-api-secret-0123456789abcdefghij"

WORDS = ["dispatch", "list", "stop", "link", "audit", "agents", "rooms", "help", "rules", "demo", "quit", "--force",
         "--keep", "--dry-run", "--metadata", "--name", "--ttl", "--agents", "-f", "--", "—force"]  # fmt: skip
AGENTS = ["captions", "speech-processing", "translation", "ghost-agent", "CAPTIONS", "speech_processing"]
ROOMS = ["demo-room", "room-a", "room-b", "not-there", "a" * 200, "room/../x", "@here", "<!channel>", "#general"]
VALUES = ["room:demo-room", "agent:captions", "user:<@U123>", "user:@alice", "since:7d", "since:2024-01-01",
          "since:99999999999d", "since:-5m", "outcome:error", "outcome:nope", "limit:0", "limit:-1",
          "limit:99999999999999999999", "1h", "0s", "13h", "99999999999d", "500ms", "1e9s", "AD_abcdefghijkl",
          "AD_", "{}", '{"a": 1}', "null", "NaN"]  # fmt: skip
ODD = ["\"", "'", "“", "”", "`", "```", "\\", "*bold*", "_it_", "~s~", "&amp;", "&lt;", "<", ">", "&",
       "ｃａｐｔｉｏｎｓ", "ｌｉｓｔ", "ﬁ", "Ⅻ", "①", "½", "ẞ", "İ", "e\u0301", "\u212b", "\u00a0",
       "\x00", "\x07", "\x1b[31m", "\r", "\r\n", "\t", "\u202e", "\u200b", "\ufeff", "\ud7ff", "😀", "👩‍👩‍👧",
       "xoxb-1234-5678-abcdefghijkl", "xapp-1-A123-456-abcdef", "xoxp-99-abc",
       "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4eHh4eHh4eCJ9.c2lnbmF0dXJlc2ln", API_SECRET]  # fmt: skip

token = st.one_of(
    st.sampled_from(WORDS),
    st.sampled_from(AGENTS),
    st.sampled_from(ROOMS),
    st.sampled_from(VALUES),
    st.sampled_from(ODD),
    st.text(max_size=12),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=30),
)
separator = st.sampled_from([" ", " ", " ", "  ", "\t", "\n", "\u3000", ""])
words = st.lists(st.tuples(separator, token).map("".join), max_size=7).map("".join)
# Mostly a command word or an agent first, so that each subcommand's own parsing is reached, not only the router's.
grammatical = st.builds(lambda head, rest: head + rest, st.sampled_from(WORDS[:9] + AGENTS[:3]), words)
# And often well formed up to a point: a command word or an agent, then a known room or agent, then anything.
well_formed = st.builds(
    lambda head, then, rest: f"{head} {then}{rest}",
    st.sampled_from(["list", "stop", "link", "audit", "help", *AGENTS[:3]]),
    st.sampled_from(["demo-room", "room-a", "not-there", "captions", "translation", "AD_abcdefghijkl"]),
    st.lists(st.tuples(st.just(" "), st.one_of(st.sampled_from(WORDS[9:] + VALUES + ROOMS[:3]), token)).map("".join),
             max_size=4).map("".join),
)  # fmt: skip
commands = st.one_of(
    well_formed,
    well_formed,
    grammatical,
    words,
    st.text(max_size=100),
    st.text(min_size=2000, max_size=6000),  # very long
    st.builds(lambda t, n: t * n, st.sampled_from(["list ", "captions ", '"', "a"]), st.integers(500, 3000)),
)

EXCEPTION_REPR = re.compile(r"\b[A-Z]\w*(Error|Exception)\(|Traceback|^\s+File \"", re.MULTILINE)


def assert_sentences(answer: str, typed: str) -> None:
    """What the person reads is sentences: at least one line with words, no traceback or exception's repr, no
    internal error, and no configured secret (even one they typed)."""
    lines = [line for line in answer.splitlines() if line.strip()]
    assert lines, f"no answer to {typed!r}"
    assert re.search(r"\w", lines[0]), (typed, answer)
    assert not EXCEPTION_REPR.search(answer), (typed, answer)
    assert "Something went wrong inside dispatch-bot" not in answer, (typed, answer)


@contextmanager
def bot_beside_stand_in(tmp_path: Path) -> Iterator[tuple[Callable[..., Any], Runtime]]:
    """An event loop running the LiveKit stand-in and the bot's runtime; `run(coroutine)` runs on it."""
    with asyncio.Runner() as runner:
        livekit = FakeLiveKit(job_delay=0.01, unavailable_delay=0.01, api_secret=API_SECRET)
        runner.run(livekit.start())
        livekit.register_worker("speech-processing")
        livekit.register_worker("translation", joins=False)
        for room in ("demo-room", "room-a"):
            livekit.add_room(room)
        config = tmp_path / "dispatch-bot.yaml"
        config.write_text(
            "livekit:\n  followup_timeout: 150ms\n  followup_interval: 10ms\n  request_timeout: 2s\n"
            "watch:\n  enabled: false\n"
        )
        env = {"LIVEKIT_URL": livekit.url, "LIVEKIT_API_KEY": "devkey", "LIVEKIT_API_SECRET": API_SECRET,
               "DISPATCH_BOT_DB": str(tmp_path / "audit.db")}  # fmt: skip
        runtime = runner.run(Runtime.open(load_settings(str(config), env=env)))
        try:
            yield runner.run, runtime
        finally:
            runner.run(runtime.close())
            runner.run(livekit.stop())


async def run_command(runtime: Runtime, typed: str) -> str:
    """The runner with the console's context, as `dispatch-bot console` calls it; the follow-up too."""
    reply: Reply = await runtime.runner.execute(runtime.context(cli_actor(), ConsolePeople()), typed)
    shown = to_text(reply)
    if reply.followup is not None:
        shown += "\n" + to_text(await reply.followup())
    return shown


def test_generated_commands_through_the_runner_answer_in_sentences(tmp_path: Path) -> None:
    with bot_beside_stand_in(tmp_path) as (run, runtime):

        @FUZZ
        @given(commands)
        def check(typed: str) -> None:
            assert_sentences(run(run_command(runtime, typed)), typed)

        check()


def test_generated_commands_through_console_c_answer_in_sentences(tmp_path: Path) -> None:
    with bot_beside_stand_in(tmp_path) as (run, runtime):

        @FUZZ
        @given(commands)
        def check(typed: str) -> None:
            out = io.StringIO()
            code = run(console(runtime, typed, out))  # what `dispatch-bot console -c TEXT` runs
            assert code in (0, 1)
            assert_sentences(out.getvalue(), typed)
            assert API_SECRET not in out.getvalue()  # a pasted secret is masked before anything else sees it

        check()
