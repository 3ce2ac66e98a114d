"""`/dispatch link`: a personal join link whose token dispatches the agents, shown only to the person who asked."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from livekit.api import TokenVerifier

from dispatch_bot.bot.config import ConfigError
from tests.conftest import SIGNING_SECRET, BotUnderTest, all_text
from tests.fakes.livekit_server import FakeLiveKit
from tests.fakes.slack_server import FakeSlack
from tests.test_console import ServedBot, bot_env, run_cli


def link_button(body: dict[str, Any]) -> dict[str, Any]:
    [button] = [e for b in body["blocks"] if b["type"] == "actions" for e in b["elements"] if "url" in e]
    return button


def token_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["token"][0]


def raw_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))  # type: ignore[no-any-return]


async def test_link_for_a_room_that_is_not_running_carries_the_agents_in_its_token(
    bot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    body = await bot.reply("link my-room captions")
    assert body["response_type"] == "ephemeral"
    button = link_button(body)
    assert button["text"]["text"] == "Join my-room"
    url = urlsplit(button["url"])
    assert (url.scheme, url.netloc, url.path) == ("https", "meet.livekit.io", "/custom")
    query = parse_qs(url.query)
    assert query["liveKitUrl"] == [livekit.url.replace("http://", "ws://")]

    token = token_of(button["url"])
    claims = TokenVerifier("devkey", "secret").verify(token)
    assert claims.identity.startswith("U123-") and len(claims.identity) == len("U123-") + 8
    assert claims.name == "alice"  # the display name from users.info
    assert claims.video.room_join and claims.video.room == "my-room"
    assert claims.video.can_publish and claims.video.can_subscribe and claims.video.can_publish_data
    assert not claims.video.room_admin and not claims.video.room_create
    assert [a.agent_name for a in claims.room_config.agents] == ["speech-processing"]
    raw = raw_claims(token)
    assert raw["roomConfig"] == {"agents": [{"agentName": "speech-processing"}]}  # nothing an old server rejects
    assert raw["exp"] - raw["nbf"] == 3600

    text = all_text(body)
    assert "Your join link for *my-room*, bringing speech-processing" in text
    assert f"identity `{claims.identity}`" in text and "It works for 1h" in text
    assert "*my-room* is not running: your connection will create it, and then speech-processing join" in text
    assert token not in text
    assert livekit.calls("CreateDispatch") == []
    assert slack.calls("chat.postMessage") == []  # never in a channel

    [row] = bot.audit_rows()
    assert (row["action"], row["outcome"], row["room"], row["agent"]) == ("link", "ok", "my-room", "speech-processing")
    assert claims.identity in row["detail"] and "expires" in row["detail"]
    db = Path(bot.runtime.settings.database)
    stored = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    assert token.encode() not in stored and token.split(".")[2].encode() not in stored


async def test_link_for_a_running_room_dispatches_through_the_api_once(bot: BotUnderTest, livekit: FakeLiveKit) -> None:
    livekit.add_room("my-room")
    first = all_text(await bot.reply("link my-room captions"))
    [created] = livekit.calls("CreateDispatch")
    assert created.agent_name == "speech-processing" and created.room == "my-room"  # type: ignore[attr-defined]
    dispatch_id = livekit.dispatches("my-room")[-1].id
    assert "*my-room* is already running, so LiveKit would ignore the agents in the link's token" in first
    assert f"*speech-processing*: dispatched now (dispatch `{dispatch_id}`)" in first

    second = all_text(await bot.reply("link my-room captions"))
    assert (
        f"*speech-processing*: already dispatched (dispatch `{dispatch_id}`) and on its way; nothing was added."
        in second
    )
    assert len(livekit.calls("CreateDispatch")) == 1
    rows = bot.audit_rows()
    assert [r["dispatch_id"] for r in rows] == [dispatch_id, ""]


async def test_name_and_ttl(bot: BotUnderTest) -> None:
    body = await bot.reply('link my-room --name "Dr. Ana Ruiz" --ttl 30m')
    claims = TokenVerifier("devkey", "secret").verify(token_of(link_button(body)["url"]))
    assert claims.name == "Dr. Ana Ruiz"
    raw = raw_claims(token_of(link_button(body)["url"]))
    assert raw["exp"] - raw["nbf"] == 1800
    assert "roomConfig" not in raw  # no agents asked, none configured


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ("link my-room --ttl 0", "must be at least a minute"),
        ("link my-room --ttl 1ms", "must be at least a minute"),
        ("link my-room --ttl -5m", "'-5m' is negative"),
        ("link my-room --ttl nan", "'nan' is not a duration"),
        ("link my-room --ttl inf", "'inf' is not a duration"),
        ("link my-room --ttl 1e12", "'1e12' is not a duration"),
        ("link my-room --ttl soon", "'soon' is not a duration"),
        ("link my-room --ttl 13h", "The longest a link may live is 12h (links.max_ttl)"),
        ("link my-room --name " + "n" * 129, "the limit is 128"),
        ("link my-room --name 'bell\x07'", "control or invisible character"),
        ("link my-room " + " ".join(f"agent-{i}" for i in range(9)), "at most 8 agents; 9 were given"),
        ("link my-room bad/agent", "An agent name uses only letters"),
        ("link", "Give a room"),
        ("link bad\u200broom captions", "control or invisible character"),
    ],
)
async def test_bad_input_mints_nothing(bot: BotUnderTest, livekit: FakeLiveKit, text: str, sentence: str) -> None:
    body = await bot.reply(text)
    assert sentence in all_text(body)
    assert not any(b["type"] == "actions" for b in body["blocks"])
    assert "token=" not in json.dumps(body)
    assert livekit.requests == []
    [row] = bot.audit_rows()
    assert (row["action"], row["outcome"]) == ("link", "invalid")


async def test_link_refuses_an_agent_the_catalog_says_cannot_come(
    start_bot: Callable[..., Any], livekit: FakeLiveKit
) -> None:
    folder = Path(__file__).parent / "fixtures" / "agents"
    bot = await start_bot(OPENVIDU_AGENTS_DIR=str(folder))
    body = await bot.reply("link my-room captions auto-captions")
    assert "*auto-captions* runs in `processing: automatic`" in all_text(body)
    assert "token=" not in json.dumps(body)
    assert bot.audit_rows()[0]["outcome"] == "invalid"


async def test_url_template_placeholders_are_url_encoded(start_bot: Callable[..., Any]) -> None:
    bot = await start_bot(
        "links:\n  url_template: 'https://ov.example.com/join/{room}?id={identity}&t={token}&u={ws_url}'\n"
        "  default_agents: [captions]\n  default_ttl: 2h\n",
    )
    body = await bot.reply("link café/1")
    url = link_button(body)["url"]
    assert url.startswith("https://ov.example.com/join/caf%C3%A9%2F1?id=U123-")
    query = parse_qs(urlsplit(url).query)
    claims = TokenVerifier("devkey", "secret").verify(query["t"][0])
    assert claims.video.room == "café/1" and query["id"] == [claims.identity]
    assert [a.agent_name for a in claims.room_config.agents] == ["speech-processing"]
    assert raw_claims(query["t"][0])["exp"] - raw_claims(query["t"][0])["nbf"] == 7200


@pytest.mark.parametrize(
    ("yaml_text", "sentence"),
    [
        ("links:\n  url_template: 'https://x/?t={token}&who={user}'\n", "unknown placeholder {user}"),
        ("links:\n  url_template: 'https://x/?room={room}'\n", "has no {token}"),
        ("links:\n  default_ttl: 13h\n", "links.default_ttl is longer than links.max_ttl"),
        ("links:\n  default_agents: captions\n", "links.default_agents must be a list"),
    ],
)
def test_link_settings_are_checked_at_start(make_settings: Any, yaml_text: str, sentence: str) -> None:
    with pytest.raises(ConfigError, match=sentence.replace("{", r"\{").replace("}", r"\}").replace("(", r"\(")):
        make_settings(yaml_text)


async def test_console_prints_the_link(make_settings: Any, tmp_path: Path, livekit: FakeLiveKit) -> None:
    env = bot_env(make_settings(), tmp_path / "dispatch-bot.yaml")
    code, out, err = await run_cli(["console", "-c", "link my-room captions --ttl 10m"], env)
    assert code == 0, err
    url = out.strip().splitlines()[-1]
    claims = TokenVerifier("devkey", "secret").verify(token_of(url))
    assert claims.identity.startswith("cli-") and claims.room_config.agents[0].agent_name == "speech-processing"
    assert token_of(url) not in err


async def test_no_token_reaches_the_log_even_at_debug(
    make_settings: Callable[..., Any], tmp_path: Path, slack: FakeSlack, livekit: FakeLiveKit
) -> None:
    env = bot_env(make_settings(), tmp_path / "dispatch-bot.yaml")
    env["DISPATCH_BOT_LOG_LEVEL"] = "DEBUG"
    async with ServedBot(env) as served:
        response_url = slack.new_response_url()
        assert await served.command("link my-room captions", response_url) == 200
        posted = await slack.wait_for_response(url=response_url)
    token = token_of(link_button(posted.body)["url"])
    assert "DEBUG" in served.log  # the debug log really ran, request bodies included
    assert "[redacted]" in served.log  # slack_sdk logs the response_url body at DEBUG: the link was masked there
    assert token not in served.log and token.split(".")[2] not in served.log
    assert "xoxb-test-token" not in served.log and SIGNING_SECRET not in served.log


async def test_a_link_too_long_for_slack_is_refused_before_anything_happens(
    bot: BotUnderTest, livekit: FakeLiveKit
) -> None:
    room = "é" * 128  # 256 bytes, the most LiveKit allows
    livekit.add_room(room)
    agents = " ".join(f"{i}" + "a" * 127 for i in range(8))
    body = await bot.reply(f"link {room} {agents} --name '{'é' * 128}'")
    assert "more than the 3,000 a Slack button takes" in all_text(body)
    assert livekit.calls("CreateDispatch") == []
    assert bot.audit_rows()[-1]["outcome"] == "invalid"
