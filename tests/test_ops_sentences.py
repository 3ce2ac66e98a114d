"""Sentences name the real cause in the words of the place it came from: the file's key, or the variable."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dispatch_bot.bot.config import ConfigError, Settings, load_settings
from tests.test_console import bot_env, run_cli


def config_error(tmp_path: Path, yaml_text: str, **env: str) -> str:
    config = tmp_path / "dispatch-bot.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError) as caught:
        load_settings(str(config), env=env)
    return str(caught.value)


def test_a_file_value_is_named_by_its_key(tmp_path: Path) -> None:
    config = tmp_path / "dispatch-bot.yaml"
    assert config_error(tmp_path, 'slack:\n  port: "abc"\n') == (
        f"{config}: `slack.port` is 'abc'; it must be a number from 1 to 65535."
    )
    assert config_error(tmp_path, "livekit:\n  url: localhost:7880\n") == (
        f"{config}: `livekit.url` is 'localhost:7880'; it must be a URL like http://localhost:7880 or "
        "wss://openvidu.example.com."
    )
    assert config_error(tmp_path, "slack:\n  api_url: slack.com\n") == (
        f"{config}: `slack.api_url` is 'slack.com'; it must be an http(s) URL like https://slack.com/api/."
    )
    assert config_error(tmp_path, "slack:\n  bot_token: [a, b]\n") == f"{config}: `slack.bot_token` must be a string."


def test_an_environment_value_is_named_by_its_variable(tmp_path: Path) -> None:
    # Set in both places: the environment wins, so the sentence names the variable.
    assert config_error(tmp_path, "slack:\n  port: 3000\n", PORT="abc") == (
        "PORT is 'abc'; it must be a number from 1 to 65535."
    )
    assert config_error(tmp_path, "", LIVEKIT_URL="ftp://x") == (
        "LIVEKIT_URL is 'ftp://x'; it must be a URL like http://localhost:7880 or wss://openvidu.example.com."
    )


@pytest.mark.parametrize(
    "url", ["http://localhost:99999", "http://[::1:7880", "http://a..b:7880", "http://local host:7880", "http://:80"]
)
def test_an_address_no_client_can_use_is_refused_at_start(tmp_path: Path, url: str) -> None:
    assert config_error(tmp_path, "", LIVEKIT_URL=url) == (
        f"LIVEKIT_URL is {url!r}; it must be a URL like http://localhost:7880 or wss://openvidu.example.com."
    )


def test_good_addresses_still_pass(tmp_path: Path) -> None:
    for url in (
        "http://localhost:7880",
        "wss://openvidu.example.com",
        "http://[::1]:7880",
        "https://h\u00e9llo.example",
    ):
        assert load_settings(None, env={"LIVEKIT_URL": url}).livekit_url == url


def test_a_file_that_is_not_a_mapping_lists_every_section(tmp_path: Path) -> None:
    config = tmp_path / "dispatch-bot.yaml"
    assert config_error(tmp_path, "- slack\n") == (
        f"The config file {config} must hold a mapping of sections "
        "(slack:, livekit:, audit:, links:, agents:, watch:, limits:, logging:, policy:, rules:)."
    )


async def test_the_console_takes_the_commands_its_sentences_name(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    env = bot_env(make_settings(), tmp_path / "dispatch-bot.yaml")
    code, out, _ = await run_cli(["console", "-c", "frobnicate"], env)
    assert code == 1 and "`/dispatch help` lists every command." in out
    code, typed, _ = await run_cli(["console", "-c", "/dispatch help"], env)
    assert code == 0
    assert typed == (await run_cli(["console", "-c", "help"], env))[1]
    assert "dispatch-bot sends LiveKit agents into rooms" in typed
    code, out, _ = await run_cli(["console"], env, stdin="/dispatch help\nquit\n")
    assert code == 0 and "dispatch-bot sends LiveKit agents into rooms" in out
