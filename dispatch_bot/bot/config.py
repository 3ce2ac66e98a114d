"""Configuration: an optional YAML file, then environment variables over it; validated once at start.

Every problem is a ConfigError whose message is one sentence naming the setting and the fix.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from ..commands.context import RESERVED_WORDS
from ..commands.grammar import GrammarError, check_agent, parse_duration
from ..commands.ports import CommandSettings, DispatchRule
from .policy import Policy, PolicyError, parse_policy

DEFAULT_ALIASES = {"captions": "speech-processing"}
DEFAULT_LINK_TEMPLATE = "https://meet.livekit.io/custom?liveKitUrl={ws_url}&token={token}"
LINK_PLACEHOLDERS = ("ws_url", "token", "room", "identity")
_COMMAND = re.compile(r"/[a-z0-9_-]{1,31}")

# The file's shape: section -> key -> (what it holds, for messages).
_FILE_KEYS: dict[str, dict[str, str]] = {
    "slack": {
        "command": "the slash command",
        "bot_token": "xoxb- token",
        "app_token": "xapp- token",
        "signing_secret": "signing secret",
        "api_url": "Web API URL",
        "port": "HTTP port",
        "max_concurrent_commands": "number",
        "shutdown_timeout": "duration",
        "socket_check_interval": "duration",
        "ack_timeout": "duration",
    },
    "livekit": {
        "url": "server URL",
        "public_url": "the URL browsers use",
        "api_key": "API key",
        "api_secret": "API secret",
        "request_timeout": "duration",
        "followup_timeout": "duration",
        "followup_interval": "duration",
    },
    "audit": {
        "database": "file path",
        "retention_days": "days",
        "prune_interval": "duration",
        "busy_timeout": "duration",
    },
    "links": {
        "url_template": "URL template",
        "default_agents": "list of agents",
        "default_ttl": "duration",
        "max_ttl": "duration",
    },
    "agents": {"openvidu_config_dir": "folder", "aliases": "mapping alias -> agent", "reload_interval": "duration"},
    "watch": {
        "enabled": "true or false",
        "poll_interval": "duration",
        "keep_retries": "number",
        "keep_backoff": "duration",
    },
    "limits": {"per_user_per_minute": "number"},
    "logging": {"format": "plain or json"},
}
LOG_FORMATS = ("plain", "json")
_RULE_KEYS = ("name", "rooms", "agents", "channel")
_CHANNEL_ID = re.compile(r"[CG][A-Z0-9]{2,}")


def yaml_error_where(exc: yaml.YAMLError) -> str:
    """` at line N` for a YAML error that knows its place, else nothing: the place, never the content."""
    mark = getattr(exc, "problem_mark", None)
    return f" at line {mark.line + 1}" if mark is not None else ""


def _no_userinfo(url: str) -> str:
    """A URL as it may be shown: any user:password@ in it is dropped."""
    return re.sub(r"//[^/@]*@", "//", url)


def _valid_address(url: str) -> bool:
    """A URL whose host an HTTP client can look up and whose port, if any, is a number from 1 to 65535."""
    try:
        parts = urlsplit(url)
        port, host = parts.port, parts.hostname
        if host and ":" not in host:
            host.encode("idna")  # an empty label (a..b) or one over 63 characters fails here
    except (ValueError, UnicodeError):
        return False
    return bool(host) and port != 0 and not any(c.isspace() for c in host or "")


class ConfigError(Exception):
    """A missing or wrong setting; the message names it and the fix."""


@dataclass(frozen=True)
class Settings:
    slack_command: str = "/dispatch"
    slack_bot_token: str = field(default="", repr=False)
    slack_app_token: str = field(default="", repr=False)
    slack_signing_secret: str = field(default="", repr=False)
    slack_api_url: str = "https://slack.com/api/"
    port: int = 3000
    max_concurrent_commands: int = 8
    shutdown_timeout: float = 10.0
    socket_check_interval: float = 10.0
    ack_timeout: float = 2.0  # how long a command waits to be recorded as received before its ack refuses it
    livekit_url: str = "http://localhost:7880"
    livekit_api_key: str = "devkey"
    livekit_api_secret: str = field(default="secret", repr=False)
    request_timeout: float = 10.0
    followup_timeout: float = 20.0
    followup_interval: float = 1.0
    database: str = "dispatch-audit.db"
    retention_days: float | None = None
    prune_interval: float = 3600.0
    busy_timeout: float = 5.0  # how long a write waits for another process's lock on the audit database
    openvidu_agents_dir: str = ""
    catalog_reload_interval: float = 2.0
    aliases: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ALIASES))
    policy: Policy | None = None  # None: no policy configured, everything open
    public_ws_url: str = "ws://localhost:7880"
    link_url_template: str = DEFAULT_LINK_TEMPLATE
    link_default_agents: tuple[str, ...] = ()
    link_default_ttl: float = 3600.0
    link_max_ttl: float = 12 * 3600.0
    watch_enabled: bool = True
    poll_interval: float = 15.0
    keep_retries: int = 3
    keep_backoff: float = 10.0
    rules: tuple[DispatchRule, ...] = ()
    per_user_per_minute: int = 10
    log_format: str = "plain"  # or "json": one JSON object per log line
    # Where a LiveKit URL or an audit database was given ("" when the default applies): `--demo` needs to know.
    livekit_url_origin: str = ""
    database_given: bool = False

    def command_settings(self) -> CommandSettings:
        return CommandSettings(
            aliases=dict(self.aliases),
            followup_timeout=self.followup_timeout,
            followup_interval=self.followup_interval,
            slash_command=self.slack_command,
            link_url_template=self.link_url_template,
            link_ws_url=self.public_ws_url,
            link_default_agents=self.link_default_agents,
            link_default_ttl=self.link_default_ttl,
            link_max_ttl=self.link_max_ttl,
            rules=self.rules,
        )

    def check_aliases(self, known_agents: set[str], folder: str) -> None:
        """Configured aliases must point at agents the catalog knows (the built-in `captions` is exempt)."""
        for alias, target in sorted(self.aliases.items()):
            if DEFAULT_ALIASES.get(alias) == target or target in known_agents:
                continue
            known = ", ".join(sorted(known_agents)) or "none"
            raise ConfigError(
                f"agents.aliases: {alias} points at {target}, which is not in the agent catalog {folder} "
                f"(its agents: {known}); fix the alias or add agent-{target}.yaml."
            )

    def check_rules(self, known_agents: set[str] | None, folder: str) -> None:
        """Each rule's agents must be aliases or agents the catalog knows (any well-formed name without a catalog)."""
        for rule in self.rules:
            for agent in rule.agents:
                name = self.aliases.get(agent, agent)
                if known_agents is None or name in known_agents or DEFAULT_ALIASES.get(agent) == name:
                    continue
                known = ", ".join(sorted(known_agents)) or "none"
                raise ConfigError(
                    f"rules: {rule.name} names the agent {agent}, which is not in the agent catalog {folder} "
                    f"(its agents: {known}); fix the rule or add agent-{name}.yaml."
                )

    def require_slack(self, http: bool) -> None:
        """The settings `serve` needs; raises ConfigError naming the first one missing."""
        if not self.slack_bot_token:
            raise ConfigError(
                "SLACK_BOT_TOKEN is not set: give the bot token (xoxb-…) from the Slack app's OAuth & Permissions page."
            )
        if not self.slack_bot_token.startswith("xoxb-"):
            raise ConfigError(
                "SLACK_BOT_TOKEN does not start with xoxb-: use the Bot User OAuth Token, not a user or app token."
            )
        if http:
            if not self.slack_signing_secret:
                raise ConfigError(
                    "SLACK_SIGNING_SECRET is not set: HTTP mode needs the signing secret from the "
                    "Slack app's Basic Information page (or set SLACK_APP_TOKEN for Socket Mode)."
                )
        elif not self.slack_app_token.startswith("xapp-"):
            raise ConfigError(
                "SLACK_APP_TOKEN does not start with xapp-: create an app-level token with the connections:write scope."
            )


def _section(data: Mapping[str, Any], name: str, source: str) -> dict[str, Any]:
    value = data.get(name) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: `{name}` must be a mapping of settings.")
    for key in value:
        if key not in _FILE_KEYS[name]:
            known = ", ".join(_FILE_KEYS[name])
            raise ConfigError(f"{source}: `{name}.{key}` is not a setting; the {name} settings are {known}.")
    return value


def _str(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ConfigError(f"{where} must be a string.")
    return str(value)


def _seconds(value: Any, where: str, *, minimum: float = 0.0) -> float:
    try:
        seconds = parse_duration(str(value))
    except GrammarError:
        raise ConfigError(f"{where} is {value!r}; write a duration like 500ms, 10s or 2m.") from None
    if seconds <= minimum:
        raise ConfigError(f"{where} must be longer than {minimum:g} s.")
    return seconds


def _line_of(path: Path, offset: int) -> int:
    """The line number of a byte offset in a file."""
    return path.read_bytes()[:offset].count(b"\n") + 1


def load_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"The config file {path} does not exist: fix --config or DISPATCH_BOT_CONFIG.") from None
    except OSError as exc:
        raise ConfigError(f"The config file {path} cannot be read ({exc.strerror}).") from None
    except UnicodeDecodeError as exc:
        line = _line_of(path, exc.start)
        raise ConfigError(
            f"The config file {path} is not UTF-8 text (line {line} has a byte UTF-8 does not allow): save it as UTF-8."
        ) from None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"The config file {path} is not valid YAML{yaml_error_where(exc)}.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        sections = ", ".join(f"{name}:" for name in [*_FILE_KEYS, "policy", "rules"])
        raise ConfigError(f"The config file {path} must hold a mapping of sections ({sections}).")
    for key in data:
        if key not in _FILE_KEYS and key not in ("policy", "rules"):
            sections = ", ".join([*_FILE_KEYS, "policy", "rules"])
            raise ConfigError(f"{path}: `{key}` is not a section; the sections are {sections}.")
    return data


def load_settings(config_path: str | None = None, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    config_path = config_path or env.get("DISPATCH_BOT_CONFIG") or None
    data = load_file(config_path) if config_path else {}
    source = str(config_path)
    slack = _section(data, "slack", source)
    livekit = _section(data, "livekit", source)
    audit = _section(data, "audit", source)
    links = _section(data, "links", source)
    agents = _section(data, "agents", source)
    watch = _section(data, "watch", source)
    limits = _section(data, "limits", source)
    logging_ = _section(data, "logging", source)

    sections = {"slack": slack, "livekit": livekit, "audit": audit, "links": links, "agents": agents}
    sections["logging"] = logging_

    def pick(env_name: str | None, section: str, key: str, default: str) -> str:
        if env_name and env.get(env_name):
            return env[env_name]
        value = _str(sections[section].get(key), f"{source}: `{section}.{key}`")
        return value or default

    def named(env_name: str, section: str, key: str) -> str:
        """The setting as the person wrote it: the environment variable when set, else the file's key."""
        if env.get(env_name) or key not in sections[section]:
            return env_name
        return f"{source}: `{section}.{key}`"

    log_format = pick("LOG_FORMAT", "logging", "format", "plain").strip().lower()
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"{named('LOG_FORMAT', 'logging', 'format')} is {log_format!r}; use plain or json.")
    command = pick(None, "slack", "command", "/dispatch")
    if not _COMMAND.fullmatch(command):
        raise ConfigError(
            f"slack.command is {command!r}; a Slack command is / followed by up to 31 lowercase "
            "letters, digits, - or _."
        )
    api_url = pick("SLACK_API_URL", "slack", "api_url", "https://slack.com/api/")
    if not _valid_address(api_url) or urlsplit(api_url).scheme not in ("http", "https"):
        raise ConfigError(
            f"{named('SLACK_API_URL', 'slack', 'api_url')} is {_no_userinfo(api_url)!r}; it must be an http(s) URL "
            "like https://slack.com/api/."
        )
    port_text = pick("PORT", "slack", "port", "3000")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{named('PORT', 'slack', 'port')} is {port_text!r}; it must be a number from 1 to 65535.")
    livekit_url = pick("LIVEKIT_URL", "livekit", "url", "http://localhost:7880")
    if not _valid_address(livekit_url) or urlsplit(livekit_url).scheme not in ("http", "https", "ws", "wss"):
        raise ConfigError(
            f"{named('LIVEKIT_URL', 'livekit', 'url')} is {_no_userinfo(livekit_url)!r}; it must be a URL like "
            "http://localhost:7880 or wss://openvidu.example.com."
        )
    url_origin = named("LIVEKIT_URL", "livekit", "url") if env.get("LIVEKIT_URL") or livekit.get("url") else ""
    api_key = pick("LIVEKIT_API_KEY", "livekit", "api_key", "devkey")
    api_secret = pick("LIVEKIT_API_SECRET", "livekit", "api_secret", "secret")

    aliases = dict(DEFAULT_ALIASES)
    raw_aliases = agents.get("aliases") or {}
    if not isinstance(raw_aliases, dict):
        raise ConfigError(f"{source}: `agents.aliases` must map an alias to an agent name.")
    for alias, target in raw_aliases.items():
        alias, target = str(alias), _str(target, f"agents.aliases.{alias}")
        for name in (alias, target):
            try:
                check_agent(name)
            except GrammarError as exc:
                raise ConfigError(f"agents.aliases: {name!r} is not a valid name. {exc}") from None
        if alias.lower() in RESERVED_WORDS:
            raise ConfigError(f"agents.aliases: {alias!r} is a subcommand word; pick another alias.")
        aliases[alias] = target

    public_url = _str(livekit.get("public_url"), "livekit.public_url") or livekit_url
    if not _valid_address(public_url) or urlsplit(public_url).scheme not in ("http", "https", "ws", "wss"):
        raise ConfigError(
            f"livekit.public_url is {_no_userinfo(public_url)!r}; it must be a URL like wss://openvidu.example.com."
        )
    public = urlsplit(public_url)
    ws_url = public_url.replace("https://", "wss://", 1) if public.scheme == "https" else public_url
    ws_url = ws_url.replace("http://", "ws://", 1) if public.scheme == "http" else ws_url

    template = _str(links.get("url_template"), "links.url_template") or DEFAULT_LINK_TEMPLATE
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError:
        raise ConfigError("links.url_template has an unmatched { or }; write {{ and }} for literal braces.") from None
    unknown = sorted(f for f in fields if f not in LINK_PLACEHOLDERS)
    if unknown:
        raise ConfigError(
            f"links.url_template has the unknown placeholder {{{unknown[0]}}}; the placeholders are "
            + ", ".join(f"{{{p}}}" for p in LINK_PLACEHOLDERS)
            + "."
        )
    if "token" not in fields:
        raise ConfigError("links.url_template has no {token}: a join link without its token cannot join.")
    default_agents = links.get("default_agents") or []
    if not isinstance(default_agents, list):
        raise ConfigError("links.default_agents must be a list of agent names, like [captions].")
    for agent in default_agents:
        try:
            check_agent(str(agent))
        except GrammarError as exc:
            raise ConfigError(f"links.default_agents: {agent!r} is not a valid name. {exc}") from None
    default_ttl = _seconds(links.get("default_ttl", "1h"), "links.default_ttl")
    max_ttl = _seconds(links.get("max_ttl", "12h"), "links.max_ttl")
    if default_ttl > max_ttl:
        raise ConfigError("links.default_ttl is longer than links.max_ttl; make it shorter or raise the maximum.")

    retention = audit.get("retention_days")
    if retention is not None and (
        isinstance(retention, bool) or not isinstance(retention, int | float) or retention <= 0
    ):
        raise ConfigError(
            f"audit.retention_days is {retention!r}; give a number of days above 0, or leave it "
            "unset to keep every row."
        )

    concurrency = slack.get("max_concurrent_commands", 8)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= 1000:
        raise ConfigError(f"slack.max_concurrent_commands is {concurrency!r}; give a whole number from 1 to 1000.")

    watch_enabled = watch.get("enabled", True)
    if not isinstance(watch_enabled, bool):
        raise ConfigError(f"watch.enabled is {watch_enabled!r}; write true or false.")
    keep_retries = watch.get("keep_retries", 3)
    if isinstance(keep_retries, bool) or not isinstance(keep_retries, int) or not 1 <= keep_retries <= 100:
        raise ConfigError(f"watch.keep_retries is {keep_retries!r}; give a whole number from 1 to 100.")
    rules = _rules(data.get("rules"), aliases)
    per_minute = limits.get("per_user_per_minute", 10)
    if isinstance(per_minute, bool) or not isinstance(per_minute, int) or not 1 <= per_minute <= 10000:
        raise ConfigError(f"limits.per_user_per_minute is {per_minute!r}; give a whole number from 1 to 10000.")

    policy = None
    if "policy" in data:
        try:
            policy = parse_policy(data["policy"], aliases)
        except PolicyError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    return Settings(
        policy=policy,
        max_concurrent_commands=concurrency,
        socket_check_interval=_seconds(slack.get("socket_check_interval", "10s"), "slack.socket_check_interval"),
        ack_timeout=_seconds(slack.get("ack_timeout", "2s"), "slack.ack_timeout"),
        retention_days=float(retention) if retention is not None else None,
        prune_interval=_seconds(audit.get("prune_interval", "1h"), "audit.prune_interval"),
        busy_timeout=_seconds(audit.get("busy_timeout", "5s"), "audit.busy_timeout"),
        public_ws_url=ws_url,
        link_url_template=template,
        link_default_agents=tuple(str(a) for a in default_agents),
        link_default_ttl=default_ttl,
        link_max_ttl=max_ttl,
        slack_command=command,
        slack_bot_token=pick("SLACK_BOT_TOKEN", "slack", "bot_token", ""),
        slack_app_token=pick("SLACK_APP_TOKEN", "slack", "app_token", ""),
        slack_signing_secret=pick("SLACK_SIGNING_SECRET", "slack", "signing_secret", ""),
        slack_api_url=api_url if api_url.endswith("/") else api_url + "/",
        port=int(port_text),
        livekit_url=livekit_url,
        livekit_api_key=api_key,
        livekit_api_secret=api_secret,
        request_timeout=_seconds(livekit.get("request_timeout", "10s"), "livekit.request_timeout"),
        followup_timeout=_seconds(livekit.get("followup_timeout", "20s"), "livekit.followup_timeout"),
        followup_interval=_seconds(livekit.get("followup_interval", "1s"), "livekit.followup_interval"),
        database=pick("DISPATCH_BOT_DB", "audit", "database", "dispatch-audit.db"),
        openvidu_agents_dir=pick("OPENVIDU_AGENTS_DIR", "agents", "openvidu_config_dir", ""),
        catalog_reload_interval=_seconds(agents.get("reload_interval", "2s"), "agents.reload_interval"),
        aliases=aliases,
        shutdown_timeout=_seconds(slack.get("shutdown_timeout", "10s"), "slack.shutdown_timeout"),
        watch_enabled=watch_enabled,
        poll_interval=_seconds(watch.get("poll_interval", "15s"), "watch.poll_interval"),
        keep_retries=keep_retries,
        keep_backoff=_seconds(watch.get("keep_backoff", "10s"), "watch.keep_backoff"),
        rules=rules,
        per_user_per_minute=per_minute,
        log_format=log_format,
        livekit_url_origin=url_origin,
        database_given=bool(env.get("DISPATCH_BOT_DB") or audit.get("database")),
    )


def _rules(raw: Any, aliases: Mapping[str, str]) -> tuple[DispatchRule, ...]:
    """`rules:`: a list of {name, rooms, agents, channel}; every problem is one sentence naming the rule."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError("rules must be a list, each rule with name, rooms, agents and channel.")
    rules: list[DispatchRule] = []
    for index, entry in enumerate(raw, start=1):
        if not isinstance(entry, dict):
            raise ConfigError(f"rules: entry {index} must be a mapping with name, rooms, agents and channel.")
        name = _str(entry.get("name"), f"rules: entry {index}'s name")
        where = f"rules: {name}" if name else f"rules: entry {index}"
        unknown = sorted(str(k) for k in entry if k not in _RULE_KEYS)
        if unknown:
            raise ConfigError(f"{where}: `{unknown[0]}` is not a rule setting; a rule has {', '.join(_RULE_KEYS)}.")
        missing = [k for k in _RULE_KEYS if not entry.get(k)]
        if missing:
            raise ConfigError(f"{where} has no {missing[0]}; a rule has {', '.join(_RULE_KEYS)}.")
        if any(r.name == name for r in rules):
            raise ConfigError(f"{where}: two rules are called {name}; give each rule its own name.")
        rooms = _str(entry["rooms"], f"{where}: rooms")
        agents_value = entry["agents"]
        agent_words = [agents_value] if isinstance(agents_value, str) else agents_value
        if not isinstance(agent_words, list) or not agent_words:
            raise ConfigError(f"{where}: agents must be a list of agent names or aliases, like [captions].")
        for agent in agent_words:
            word = str(agent)
            if word.lower() in RESERVED_WORDS:
                raise ConfigError(f"{where}: {word} is a subcommand word, not an agent.")
            try:
                check_agent(aliases.get(word, word))
            except GrammarError as exc:
                raise ConfigError(f"{where}: {word!r} is not a valid agent name. {exc}") from None
        channel = _str(entry["channel"], f"{where}: channel")
        if not _CHANNEL_ID.fullmatch(channel):
            raise ConfigError(
                f"{where}: channel is {channel!r}; give the channel's id (C0123456789, from the channel's details), "
                "not its name."
            )
        rules.append(DispatchRule(name, rooms, tuple(str(a) for a in agent_words), channel))
    return tuple(rules)
