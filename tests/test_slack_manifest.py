"""The app manifests: scopes exactly those the code's Web API calls need, events and interactivity as the handlers
are, the command within Slack's limits, a usage hint with every flag, and the HTTP-mode variant in step."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from slack_sdk.web.async_base_client import AsyncBaseClient
from slack_sdk.web.async_client import AsyncWebClient

from dispatch_bot.bot.config import Settings
from dispatch_bot.bot.runtime import Runtime
from dispatch_bot.bot.slack_app import SlackTransport
from dispatch_bot.commands.registry import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "dispatch_bot"

# The bot-token scopes each Web API method needs (Slack's method reference). A method the code starts calling
# must be added here, and its scope to both manifests: the test below fails until it is.
SCOPES_BY_METHOD: dict[str, tuple[str, ...]] = {
    "auth.test": (),
    "apps.connections.open": (),  # the app-level token's connections:write, which no manifest holds
    # chat:write.public: post in a public channel the bot was not invited to (else the response_url is used)
    "chat.postMessage": ("chat:write", "chat:write.public"),
    "chat.update": ("chat:write",),
    "users.info": ("users:read",),
    "usergroups.list": ("usergroups:read",),
    "usergroups.users.list": ("usergroups:read",),
    "views.publish": (),  # the Home tab: no scope (Slack's method reference lists none)
    "views.open": (),  # the Dispatch form: no scope
}
# Flags the usage hint must show even before every command has them.
REQUIRED_FLAGS = {"--metadata", "--keep", "--name", "--ttl"}
# Limits of Slack's manifest schema.
LIMITS = {
    "name": 35,
    "description": 140,
    "display_name": 80,
    "command": 32,
    "command_description": 2000,
    "usage_hint": 1000,
}
_WEB_METHODS = {name for name in dir(AsyncWebClient) if not name.startswith("_") and not hasattr(AsyncBaseClient, name)}


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _calls() -> Iterator[tuple[ast.Call, str]]:
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                yield node, node.func.attr


def web_api_calls() -> set[str]:
    """Every Web API method the code calls (or hands on to be called) through slack_sdk's client, as Slack names
    it."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in _WEB_METHODS:
                found.add(node.attr.replace("_", "."))
    return found


def registrations(kind: str) -> set[str]:
    """The first argument of every Bolt registration `app.<kind>(...)` (an event, action or command name)."""
    found = set()
    for call, attr in _calls():
        if attr == kind and isinstance(call.func, ast.Attribute) and ast.unparse(call.func.value).endswith("app"):
            found.add(ast.unparse(call.args[0]) if call.args else "")
    return found


def test_the_scan_sees_the_calls_the_bot_makes() -> None:
    # Not vacuous: the calls the delivery and start-up paths make are found, and nothing unknown.
    calls = web_api_calls()
    assert {"chat.postMessage", "chat.update", "users.info", "auth.test", "apps.connections.open"} <= calls
    assert calls - set(SCOPES_BY_METHOD) == set(), "add the new method's scopes to SCOPES_BY_METHOD and the manifests"


def test_scopes_are_exactly_those_the_calls_need() -> None:
    needed = {"commands"} | {scope for method in web_api_calls() for scope in SCOPES_BY_METHOD[method]}
    for name in ("manifest.yml", "manifest-http.yml"):
        scopes = load(name)["oauth_config"]["scopes"]["bot"]
        assert len(scopes) == len(set(scopes)), name
        assert set(scopes) == needed, name


def test_events_and_interactivity_match_the_handlers() -> None:
    events = {e.strip("'\"") for e in registrations("event")}
    for name in ("manifest.yml", "manifest-http.yml"):
        settings = load(name)["settings"]
        subscribed = set((settings.get("event_subscriptions") or {}).get("bot_events") or [])
        assert subscribed == events, name
        interactive = bool(registrations("action") | registrations("view") | registrations("shortcut"))
        assert settings["interactivity"]["is_enabled"] is interactive, name
    assert registrations("command") == {"settings.slack_command"}


def test_the_command_fits_slacks_limits() -> None:
    manifest = load("manifest.yml")
    info = manifest["display_information"]
    assert len(info["name"]) <= LIMITS["name"] and len(info["description"]) <= LIMITS["description"]
    bot_name = manifest["features"]["bot_user"]["display_name"]
    assert len(bot_name) <= LIMITS["display_name"] and re.fullmatch(r"[a-z0-9._-]+", bot_name)
    [command] = manifest["features"]["slash_commands"]
    assert command["command"] == Settings().slack_command  # the command the bot answers by default
    assert len(command["command"]) <= LIMITS["command"] and re.fullmatch(r"/[a-z0-9_-]+", command["command"])
    assert 0 < len(command["description"]) <= LIMITS["command_description"]
    assert 0 < len(command["usage_hint"]) <= LIMITS["usage_hint"]


def test_the_usage_hint_shows_every_flag_and_subcommand() -> None:
    [command] = load("manifest.yml")["features"]["slash_commands"]
    hint = command["usage_hint"]
    flags = set(re.findall(r"--[a-z][a-z-]*", hint))
    every = REQUIRED_FLAGS | {flag for c in COMMANDS.values() for flag in c.flags}
    assert every - flags == set()
    for name in COMMANDS:
        if name != "dispatch":  # the <agent> <room> form has no word of its own
            assert re.search(rf"(^|\| ){name}\b", hint), name


def http_variant(manifest: dict[str, Any], base: str) -> dict[str, Any]:
    """What HTTP mode changes: Socket Mode off, and Slack's requests sent to the bot's endpoint."""
    url = f"{base}/slack/events"
    features = {**manifest["features"]}
    features["slash_commands"] = [{**c, "url": url} for c in features["slash_commands"]]
    settings = {**manifest["settings"], "socket_mode_enabled": False}
    settings["interactivity"] = {**settings["interactivity"], "request_url": url}
    if "event_subscriptions" in settings:
        settings["event_subscriptions"] = {**settings["event_subscriptions"], "request_url": url}
    return {**manifest, "features": features, "settings": settings}


def test_the_http_manifest_is_the_socket_mode_one_in_http_mode() -> None:
    assert load("manifest-http.yml") == http_variant(load("manifest.yml"), "https://YOUR-HOST")


def test_the_documented_command_puts_the_host_in() -> None:
    header = (ROOT / "manifest-http.yml").read_text(encoding="utf-8")
    match = re.search(r"sed 's#(https://YOUR-HOST)#(https://[^#]+)#' manifest-http\.yml", header)
    assert match, "the header shows the command"
    assert match.group(0) in (ROOT / "README.md").read_text(encoding="utf-8")
    filled = yaml.safe_load(header.replace(match.group(1), match.group(2)))
    assert filled == http_variant(load("manifest.yml"), match.group(2))


async def test_the_bot_serves_the_path_the_manifest_names(make_settings: Callable[..., Settings]) -> None:
    runtime = await Runtime.open(make_settings())
    try:
        transport = SlackTransport(runtime)
        paths = {resource.canonical for resource in transport.web_app().router.resources()}
        [command] = load("manifest-http.yml")["features"]["slash_commands"]
        assert command["url"].removeprefix("https://YOUR-HOST") in paths
        await transport.aclose()
    finally:
        await runtime.close()
