"""`dispatch-bot check`: one line per check, a mark, and on failure the fix. Safe beside a running bot: it creates
no database and changes nothing, and the only calls it makes are a room lookup in LiveKit and Slack's auth.test."""

from __future__ import annotations

import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from ..commands.ports import AuditError
from .agent_catalog import AgentCatalog
from .audit_store import AuditStore
from .config import ConfigError, Settings
from .db_path import database_path_problem
from .policy import Rule

OK, FAIL, INFO = "[ ok ]", "[FAIL]", "[info]"


class Checks:
    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.failed = 0

    def line(self, mark: str, name: str, text: str) -> None:
        self.failed += mark == FAIL
        print(f"{mark} {name}: {text}", file=self.out, flush=True)

    def more(self, text: str) -> None:
        print(f"{' ' * len(OK)}   {text}", file=self.out, flush=True)


def config_failed(exc: ConfigError, out: TextIO = sys.stdout) -> int:
    """The configuration could not be read, so nothing else can be checked."""
    Checks(out).line(FAIL, "config", str(exc))
    return 1


async def run_checks(settings: Settings, config_path: str | None, out: TextIO = sys.stdout) -> int:
    checks = Checks(out)
    checks.line(OK, "config", f"valid ({config_path or 'no config file: the environment and defaults'})")
    _policy(checks, settings)
    await _livekit(checks, settings)
    await _slack(checks, settings)
    await _audit(checks, settings)
    _agents(checks, settings)
    _webhooks(checks, settings)
    return 1 if checks.failed else 0


def _patterns(label: str, patterns: Sequence[str] | None) -> str:
    return f" {label} {', '.join(patterns)}" if patterns is not None else ""


def _rule_in_words(rule: Rule) -> str:
    verb = "allows" if rule.allow else "denies"
    actions = "every command" if "*" in rule.actions else ", ".join(rule.actions)
    where = _patterns("for agents", rule.agents) + _patterns("in rooms", rule.rooms)
    who = _patterns("to users", rule.users) + _patterns("in channels", rule.channels)
    return f"rule `{rule.name}` {verb} {actions}{where}{who or ' to everyone'}."


def _policy(checks: Checks, settings: Settings) -> None:
    policy = settings.policy
    if policy is None:
        checks.line(INFO, "policy", "none configured, so everyone in the workspace may run every command.")
        return
    checks.line(
        OK,
        "policy",
        f"{len(policy.rules)} rules and {len(policy.admins)} admin patterns; what no rule allows is denied.",
    )
    if policy.admins:
        checks.more(f"admins ({', '.join(policy.admins)}) may run every command.")
    for rule in policy.rules:
        checks.more(_rule_in_words(rule))


async def _livekit(checks: Checks, settings: Settings) -> None:
    from .livekit_gateway import LiveKitGateway

    if settings.livekit_api_key == "devkey" and settings.livekit_api_secret == "secret":
        checks.line(
            INFO,
            "livekit",
            "using LiveKit's development key and secret (devkey/secret); set LIVEKIT_API_KEY and "
            "LIVEKIT_API_SECRET for a real server.",
        )
    gateway = LiveKitGateway(
        settings.livekit_url, settings.livekit_api_key, settings.livekit_api_secret, timeout=settings.request_timeout
    )
    try:
        await gateway.get_room("dispatch-bot-check")
        checks.line(OK, "livekit", f"reached {gateway.url} and the key {settings.livekit_api_key} was accepted.")
    except Exception as exc:  # the gateway's errors are sentences already
        checks.line(FAIL, "livekit", str(exc))
    finally:
        await gateway.aclose()


async def _slack(checks: Checks, settings: Settings) -> None:
    socket_mode = bool(settings.slack_app_token)
    try:
        settings.require_slack(http=not socket_mode)
    except ConfigError as exc:
        checks.line(FAIL, "slack", str(exc))
        return
    client = AsyncWebClient(token=settings.slack_bot_token, base_url=settings.slack_api_url, timeout=10)
    try:
        answer = await client.auth_test()
        team, user = answer.get("team") or answer.get("team_id"), answer.get("user") or answer.get("user_id")
        checks.line(
            OK, "slack", f"SLACK_BOT_TOKEN accepted by {settings.slack_api_url} (workspace {team}, bot {user})."
        )
    except SlackApiError as exc:
        error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
        if error:
            checks.line(
                FAIL,
                "slack",
                f"Slack rejected SLACK_BOT_TOKEN ({error}): copy the Bot User OAuth Token again from the Slack "
                "app's OAuth & Permissions page.",
            )
        else:  # an answer, but not the Web API's JSON: the URL is wrong, not the token
            checks.line(
                FAIL,
                "slack",
                f"{settings.slack_api_url} answered HTTP {exc.response.status_code}, not as Slack's Web API does: "
                "check SLACK_API_URL (https://slack.com/api/ unless you use a proxy).",
            )
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        checks.line(
            FAIL,
            "slack",
            f"cannot reach {settings.slack_api_url} ({type(exc).__name__}): check the network and SLACK_API_URL.",
        )
    if socket_mode:
        checks.line(OK, "slack", "Socket Mode: SLACK_APP_TOKEN is present (xapp-); no public URL is needed.")
    else:
        checks.line(
            OK,
            "slack",
            "HTTP mode: SLACK_SIGNING_SECRET is present; Slack's request URL is https://YOUR-HOST/slack/events "
            f"(this bot listens on port {settings.port}, behind a reverse proxy with TLS).",
        )


async def _audit(checks: Checks, settings: Settings) -> None:
    path = Path(settings.database)
    problem = database_path_problem(path)
    if problem is not None:
        checks.line(FAIL, "audit", problem)
        return
    if not path.exists():
        checks.line(OK, "audit", f"{path} does not exist yet; `serve` creates it there (the folder is writable).")
        return
    try:
        store = await AuditStore.open(path)
        try:
            result = await store.verify()
        finally:
            await store.close()
    except AuditError as exc:
        checks.line(FAIL, "audit", str(exc))
        return
    if result.intact:
        checks.line(OK, "audit", f"{path} is writable; {result.rows} rows, the hash chain verified.")
    else:
        checks.line(
            FAIL,
            "audit",
            f"{path}: the chain is BROKEN at row {result.broken_id}: {result.problem} Keep the file as evidence, "
            "and see `dispatch-bot audit verify`.",
        )


def _agents(checks: Checks, settings: Settings) -> None:
    folder = settings.openvidu_agents_dir
    if not folder:
        checks.line(
            INFO,
            "agents",
            "OPENVIDU_AGENTS_DIR is not set, so agent names are sent to LiveKit unchecked; point it at OpenVidu's "
            "agent folder to check them.",
        )
        return
    snapshot = AgentCatalog(folder).snapshot()
    if not snapshot.read_ok or snapshot.problems:
        checks.line(FAIL, "agents", " ".join(snapshot.problems) or f"the agent folder {folder} cannot be read.")
        return
    try:
        settings.check_aliases(set(snapshot.agents), snapshot.folder)
    except ConfigError as exc:
        checks.line(FAIL, "agents", str(exc))
        return
    names = ", ".join(sorted(snapshot.agents)) or "none"
    checks.line(OK, "agents", f"{len(snapshot.agents)} agents in {folder}: {names}.")


def _webhooks(checks: Checks, settings: Settings) -> None:
    """What OpenVidu must be told: nothing here can see livekit.yaml, so this says, and does not judge."""
    from .webhooks import WEBHOOK_PATH

    if not settings.watch_enabled:
        checks.line(
            INFO,
            "webhooks",
            "supervision is off (watch.enabled: false), so LiveKit's webhooks are ignored; nothing to add to "
            "livekit.yaml.",
        )
        return
    url = f"http://{socket.gethostname()}:{settings.port}{WEBHOOK_PATH}"
    checks.line(
        INFO,
        "webhooks",
        f"add {url} (or another name of this host that the OpenVidu host can reach) to `webhook.urls` in "
        "OpenVidu's livekit.yaml, keeping the URLs already there, with `webhook.api_key` set to "
        f"{settings.livekit_api_key}; then restart OpenVidu.",
    )
    checks.more(
        f"Without it the bot still notices an agent leaving, by polling every {settings.poll_interval:g} s "
        "(watch.poll_interval), only later."
    )
