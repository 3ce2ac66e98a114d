"""What a new user meets in a terminal: each mistake is one sentence, never a traceback, run as the real program."""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable
from pathlib import Path

from dispatch_bot.bot.audit_store import AuditStore
from dispatch_bot.bot.config import Settings
from dispatch_bot.commands.ports import Actor, AuditRecord
from tests.test_console import CLI, bot_env, run_cli


async def test_an_audit_database_path_that_cannot_be_opened_is_one_sentence(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    env = bot_env(make_settings(), tmp_path / "dispatch-bot.yaml")
    folder = tmp_path / "data"
    folder.mkdir()
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    cases = {
        str(tmp_path / "missing" / "x.db"): (
            f"The folder {tmp_path / 'missing'} of the audit database {tmp_path / 'missing' / 'x.db'} does not "
            "exist: create it, or check DISPATCH_BOT_DB (or audit.database)."
        ),
        str(folder): (
            f"The audit database {folder} is a folder: point DISPATCH_BOT_DB (or audit.database) at a file in it, "
            f"like {folder / 'dispatch-audit.db'}."
        ),
        str(a_file / "x.db"): (
            f"The audit database {a_file / 'x.db'} is inside {a_file}, which is a file, not a folder: check "
            "DISPATCH_BOT_DB (or audit.database)."
        ),
    }
    for database, sentence in cases.items():
        env["DISPATCH_BOT_DB"] = database
        for args in (["console", "-c", "help"], ["serve", "--http", "--port", "1"], ["check"]):
            code, out, err = await run_cli(args, env)
            if args == ["check"]:
                assert code == 1 and f"[FAIL] audit: {sentence}" in out.splitlines(), out
                assert err == ""
            else:
                assert (code, err) == (2, f"dispatch-bot: {sentence}\n"), args
    assert sorted(p.name for p in folder.iterdir()) == []  # nothing was created in the folder given as the file


async def test_a_config_file_that_is_not_utf8_is_one_sentence(tmp_path: Path) -> None:
    config = tmp_path / "dispatch-bot.yaml"
    config.write_bytes(b"slack:\n  command: /dispatch\nlivekit:\n  url: http://caf\xe9:7880\n")
    sentence = f"The config file {config} is not UTF-8 text (line 4 has a byte UTF-8 does not allow): save it as UTF-8."
    code, out, err = await run_cli(["--config", str(config), "console", "-c", "help"], {"PATH": "/usr/bin:/bin"})
    assert (code, out, err) == (2, "", f"dispatch-bot: {sentence}\n")
    code, out, err = await run_cli(["--config", str(config), "check"], {"PATH": "/usr/bin:/bin"})
    assert (code, out, err) == (1, f"[FAIL] config: {sentence}\n", "")


async def test_an_export_piped_into_head_ends_quietly(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings()
    # More rows than a pipe holds, so the export is still writing when head goes away.
    store = await AuditStore.open(settings.database, synchronous="OFF")
    try:
        actor = Actor("slack", "U01ANA", "ana", "T123", "C1", "ops")
        for i in range(1500):
            await store.record(AuditRecord(actor, f"list room-{i}", "list", "ok", room=f"room-{i}"))
    finally:
        await store.close()
    env = bot_env(settings, tmp_path / "dispatch-bot.yaml")
    errors = tmp_path / "stderr.txt"
    for fmt in ("csv", "jsonl", "table"):
        command = f"{shlex.join(CLI)} audit --all --format {fmt} 2>{shlex.quote(str(errors))} | head -1"
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", command + "; exit ${PIPESTATUS[0]}", env=env, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert len(out.decode().splitlines()) == 1
        assert errors.read_text() == "", fmt
        assert proc.returncode == 0, fmt


async def test_help_answers_without_loading_livekit_bolt_or_aiohttp() -> None:
    # What --help imports is what every `dispatch-bot` invocation pays before it can say anything.
    script = (
        "import sys\n"
        "from dispatch_bot.bot.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(loaded & {'livekit', 'slack_bolt', 'slack_sdk', 'aiohttp', 'aiosqlite', 'asyncio', 'yaml'}),"
        " file=sys.stderr)\n"
    )
    proc = await asyncio.create_subprocess_exec(
        *CLI[:1], "-c", script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    assert "usage: dispatch-bot" in out.decode()
    assert err.decode().strip() == "[]"


async def test_a_console_command_that_needs_no_livekit_loads_no_livekit_api_protobuf_or_aiohttp(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    env = bot_env(make_settings(), tmp_path / "dispatch-bot.yaml")
    script = (
        "import sys\n"
        "from dispatch_bot.bot.cli import main\n"
        "code = main(['console', '-c', 'help'])\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "print(code, sorted(loaded & {'livekit', 'slack_bolt', 'google', 'aiohttp'}), file=sys.stderr)\n"
    )
    proc = await asyncio.create_subprocess_exec(
        *CLI[:1], "-c", script, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert "dispatch" in out.decode()  # the help text was printed
    assert err.decode().strip().splitlines()[-1] == "0 []"
