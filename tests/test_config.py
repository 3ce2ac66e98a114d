"""Configuration: defaults, the YAML file, environment overrides, and one sentence for each mistake."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dispatch_bot.bot.config import ConfigError, load_settings


def test_defaults_with_no_file() -> None:
    settings = load_settings(None, env={})
    assert settings.livekit_url == "http://localhost:7880"
    assert (settings.livekit_api_key, settings.livekit_api_secret) == ("devkey", "secret")
    assert settings.database == "dispatch-audit.db"
    assert settings.slack_api_url == "https://slack.com/api/" and settings.port == 3000
    assert settings.aliases == {"captions": "speech-processing"}
    assert "secret" not in repr(settings).replace("signing_secret", "")


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "livekit:\n  url: http://file:7880\n  api_key: from-file\nagents:\n  aliases:\n    subs: my-agent\n"
    )
    settings = load_settings(str(config), env={"LIVEKIT_URL": "wss://env.example.com", "PORT": "8080"})
    assert settings.livekit_url == "wss://env.example.com"
    assert settings.livekit_api_key == "from-file"
    assert settings.port == 8080
    assert settings.aliases == {"captions": "speech-processing", "subs": "my-agent"}


@pytest.mark.parametrize(
    ("yaml_text", "env", "sentence"),
    [
        ("", {"LIVEKIT_URL": "localhost:7880"}, "LIVEKIT_URL is 'localhost:7880'; it must be a URL"),
        ("", {"PORT": "http"}, "PORT is 'http'; it must be a number from 1 to 65535."),
        ("", {"SLACK_API_URL": "slack.com"}, "SLACK_API_URL is 'slack.com'"),
        ("livekit:\n  urll: x\n", {}, "`livekit.urll` is not a setting"),
        ("slak: {}\n", {}, "`slak` is not a section"),
        ("livekit: [1, 2]\n", {}, "`livekit` must be a mapping"),
        ("livekit:\n  followup_timeout: soon\n", {}, "livekit.followup_timeout is 'soon'"),
        ("livekit: {url: [\n", {}, "is not valid YAML at line"),
        ("agents:\n  aliases:\n    list: speech-processing\n", {}, "'list' is a subcommand word"),
        ("agents:\n  aliases:\n    subs: 'bad name'\n", {}, "'bad name' is not a valid name"),
        ("slack:\n  command: dispatch\n", {}, "slack.command is 'dispatch'"),
    ],
)
def test_each_mistake_is_one_sentence(tmp_path: Path, yaml_text: str, env: dict[str, str], sentence: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError) as caught:
        load_settings(str(config), env=env)
    assert sentence in str(caught.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="does not exist: fix --config or DISPATCH_BOT_CONFIG"):
        load_settings("/nonexistent/dispatch-bot.yaml", env={})


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "LIVEKIT_", "DISPATCH_BOT_"))}
    return subprocess.run(
        [sys.executable, "-m", "dispatch_bot.bot.cli", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "sentence"),
    [
        ({}, "dispatch-bot: SLACK_BOT_TOKEN is not set"),
        ({"SLACK_BOT_TOKEN": "xoxp-user"}, "dispatch-bot: SLACK_BOT_TOKEN does not start with xoxb-"),
        ({"SLACK_BOT_TOKEN": "xoxb-x"}, "dispatch-bot: SLACK_SIGNING_SECRET is not set"),
        (
            {"SLACK_BOT_TOKEN": "xoxb-x", "SLACK_APP_TOKEN": "xoxb-wrong"},
            "dispatch-bot: SLACK_APP_TOKEN does not start with xapp-",
        ),
        ({"LIVEKIT_URL": "nope"}, "dispatch-bot: LIVEKIT_URL is 'nope'"),
    ],
)
def test_serve_stops_at_start_with_one_sentence(tmp_path: Path, env: dict[str, str], sentence: str) -> None:
    result = run(["serve"], {"DISPATCH_BOT_DB": str(tmp_path / "a.db"), **env})
    assert result.returncode == 2
    assert result.stderr.strip().startswith(sentence)
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_unusable_database_stops_the_console_with_one_sentence(tmp_path: Path) -> None:
    not_a_db = tmp_path / "audit.db"
    not_a_db.write_text("this is not a database\n" * 100)
    result = run(["console", "-c", "help"], {"DISPATCH_BOT_DB": str(not_a_db)})
    assert result.returncode == 2
    assert result.stderr.startswith(f"dispatch-bot: The audit database {not_a_db} cannot be used")
    assert "Traceback" not in result.stderr


def test_serve_port_out_of_range(tmp_path: Path) -> None:
    result = run(
        ["serve", "--http", "--port", "70000"],
        {"DISPATCH_BOT_DB": str(tmp_path / "a.db"), "SLACK_BOT_TOKEN": "xoxb-x", "SLACK_SIGNING_SECRET": "s"},
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "dispatch-bot: --port is 70000; it must be a number from 1 to 65535."


def test_url_credentials_are_not_repeated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, env={"LIVEKIT_URL": "ftp://key:hunter2@example.com"})
    assert "hunter2" not in str(caught.value) and "ftp://example.com" in str(caught.value)


def test_audit_of_a_missing_database_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    result = run(["audit"], {"DISPATCH_BOT_DB": str(missing)})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"dispatch-bot: The audit database {missing} does not exist: check DISPATCH_BOT_DB (or audit.database)."
    )
    assert not missing.exists()


def test_every_key_the_readme_documents_is_accepted(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split("The file, with every key and its default:", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    config = tmp_path / "documented.yaml"
    config.write_text(block.replace("subs: my-subtitles-agent", "subs: speech-processing"))
    settings = load_settings(str(config), env={})
    assert settings.public_ws_url == "ws://localhost:7880"
    assert settings.max_concurrent_commands == 8


def test_public_url_is_what_links_carry(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("livekit:\n  url: http://localhost:7880\n  public_url: https://openvidu.example.com\n")
    assert load_settings(str(config), env={}).public_ws_url == "wss://openvidu.example.com"
