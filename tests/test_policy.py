"""The access policy: who may do what, keyed on the real person and channel; denials audited, help filtered."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dispatch_bot.bot.config import ConfigError
from tests.conftest import SIGNING_SECRET, BotUnderTest, all_text
from tests.fakes.livekit_server import FakeLiveKit
from tests.fakes.slack_requests import block_action_body, signed_headers
from tests.fakes.slack_server import FakeSlack
from tests.test_console import bot_env, run_cli

POLICY = """
policy:
  admins: [UADMIN1]
  rules:
    - name: nobody-touches-prod
      deny: [dispatch, stop, link]
      rooms: ["prod-*"]
    - name: ops-captions
      allow: [dispatch, stop, link]
      agents: [captions]
      channels: [COPS]
    - name: everyone-reads
      allow: [list, agents, audit]
"""


@pytest.fixture
async def pbot(start_bot: Callable[..., Any]) -> BotUnderTest:
    return await start_bot(POLICY)  # type: ignore[no-any-return]


async def test_a_rule_allows_in_its_channel(pbot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack) -> None:
    await pbot.command("captions my-room", channel_id="COPS")
    await slack.wait_for_web_call("chat.postMessage")
    assert len(livekit.calls("CreateDispatch")) == 1


@pytest.mark.parametrize(
    ("text", "form", "sentence", "detail"),
    [
        (
            "captions my-room",
            {"channel_id": "CRANDOM"},
            "You may not dispatch *speech-processing* in *my-room*: no rule of the policy allows it.",
            "no policy rule allows it",
        ),
        (
            "captions prod-eu",
            {"channel_id": "COPS"},
            "You may not dispatch *speech-processing* in *prod-eu*: rule `nobody-touches-prod` of the policy",
            "denied by rule nobody-touches-prod",
        ),
        (
            "other-agent my-room",
            {"channel_id": "COPS"},
            "You may not dispatch *other-agent* in *my-room*",
            "no policy rule allows it",
        ),
        ("captions my-room --dry-run", {"channel_id": "CRANDOM"}, "You may not dispatch", "no policy rule allows it"),
        (
            "link my-room captions",
            {"channel_id": "CRANDOM"},
            "You may not link *speech-processing*",
            "no policy rule allows it",
        ),
        (
            "stop captions prod-eu",
            {"channel_id": "COPS"},
            "rule `nobody-touches-prod`",
            "denied by rule nobody-touches-prod",
        ),
    ],
)
async def test_denials_are_ephemeral_audited_and_send_nothing(
    pbot: BotUnderTest, livekit: FakeLiveKit, text: str, form: dict[str, str], sentence: str, detail: str
) -> None:
    body = await pbot.reply(text, **form)
    assert body["response_type"] == "ephemeral"
    assert sentence in all_text(body) and "Nothing was done." in all_text(body)
    assert livekit.requests == []
    [row] = pbot.audit_rows()
    assert (row["outcome"], row["detail"]) == ("denied", detail)
    assert row["room"] and row["user_id"] == "U123"


async def test_admins_may_do_everything(pbot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack) -> None:
    await pbot.command("other-agent prod-eu", user_id="UADMIN1")
    await slack.wait_for_web_call("chat.postMessage")
    assert [r.room for r in livekit.calls("CreateDispatch")] == ["prod-eu"]  # type: ignore[attr-defined]


async def test_reading_is_allowed_by_its_rule(pbot: BotUnderTest) -> None:
    assert "is not running" in all_text(await pbot.reply("list my-room", channel_id="CRANDOM"))
    assert pbot.audit_rows()[-1]["outcome"] == "ok"


async def test_stop_button_is_rechecked_for_the_person_who_presses_it(
    pbot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room", agents=["speech-processing"])
    dispatch_id = livekit.dispatches("my-room")[0].id
    url = slack.new_response_url()
    body = block_action_body(
        "dispatch_stop", f"stop {dispatch_id} my-room", user_id="UGUEST", channel_id="CRANDOM", response_url=url
    )
    assert (await pbot.post(body, signed_headers(body, SIGNING_SECRET)))[0] == 200
    denied = await slack.wait_for_response(url=url)
    assert "You may not stop *speech-processing* in *my-room*" in all_text(denied.body)
    assert len(livekit.dispatches("my-room")) == 1
    assert livekit.calls("DeleteDispatch") == []
    row = pbot.audit_rows()[-1]
    assert (row["user_id"], row["action"], row["outcome"]) == ("UGUEST", "stop", "denied")


async def test_help_shows_only_what_the_person_may_run(pbot: BotUnderTest) -> None:
    guest = all_text(await pbot.reply("help", channel_id="CRANDOM"))
    assert "/dispatch list" in guest and "/dispatch audit" in guest
    assert "/dispatch &lt;agent&gt;" not in guest and "/dispatch stop" not in guest and "/dispatch link" not in guest
    ops = all_text(await pbot.reply("help", channel_id="COPS"))
    assert "/dispatch &lt;agent&gt;" in ops and "/dispatch stop" in ops


@pytest.mark.parametrize(
    ("yaml_text", "sentence"),
    [
        ("policy:\n  rules:\n    - allow: [dispatch]\n      deny: [stop]\n", "needs exactly one of allow: or deny:"),
        ("policy:\n  rules:\n    - name: r\n      allow: [launch]\n", "policy rule r: 'launch' is not an action"),
        ("policy:\n  rules:\n    - allow: [list]\n      room: [x]\n", "policy rule 1: `room` is not a rule key"),
        ("policy:\n  rules: {}\n", "`policy.rules` must be a list"),
        ("policy:\n  owners: [U1]\n", "`policy.owners` is not a setting"),
        ("policy: {}\n", "`policy` has neither admins nor rules"),
        ("policy:\n  rules:\n    - allow: [list]\n      users: []\n", "`users` must be a list of names"),
    ],
)
def test_policy_mistakes_are_one_sentence(make_settings: Any, yaml_text: str, sentence: str) -> None:
    with pytest.raises(ConfigError, match=sentence.replace("(", r"\(").replace(")", r"\)")):
        make_settings(yaml_text)


async def test_console_runs_under_the_same_policy(make_settings: Any, tmp_path: Path, livekit: FakeLiveKit) -> None:
    config = tmp_path / "dispatch-bot.yaml"
    env = bot_env(make_settings(POLICY), config)
    code, out, _ = await run_cli(["console", "-c", "captions my-room"], env)
    assert code == 1 and "You may not dispatch *speech-processing*".replace("*", "") in out
    assert livekit.requests == []
    code, out, _ = await run_cli(["check"], env)
    assert "policy: 3 rules and 1 admin patterns; what no rule allows is denied." in out


async def test_check_says_when_there_is_no_policy(make_settings: Any, tmp_path: Path) -> None:
    env = bot_env(make_settings(), tmp_path / "dispatch-bot.yaml")
    code, out, _ = await run_cli(["check"], env)
    assert code == 0, out
    assert "policy: none configured, so everyone in the workspace may run every command." in out
    assert "livekit: reached" in out and "audit: " in out


async def test_stop_by_an_unknown_id_is_still_checked(pbot: BotUnderTest, livekit: FakeLiveKit) -> None:
    livekit.add_room("my-room")
    body = await pbot.reply("stop AD_nosuchdispatch my-room", channel_id="CRANDOM")
    assert "You may not stop in *my-room*" in all_text(body)
    assert livekit.calls("DeleteDispatch") == []
    assert pbot.audit_rows()[-1]["outcome"] == "denied"


async def test_a_room_deny_covers_an_audit_that_would_show_that_room(start_bot: Callable[..., Any]) -> None:
    bot = await start_bot(
        "policy:\n  rules:\n    - name: secret-history\n      deny: [audit, rooms]\n      rooms: ['secret-*']\n"
        "    - name: the-rest\n      allow: ['*']\n"
    )
    assert "rule `secret-history`" in all_text(await bot.reply("audit room:secret-1"))
    assert "rule `secret-history`" in all_text(await bot.reply("audit"))  # unfiltered: it would show secret-1
    assert "rule `secret-history`" in all_text(await bot.reply("audit agent:captions"))
    assert "rule `secret-history`" in all_text(await bot.reply("rooms"))
    assert "You may not" not in all_text(await bot.reply("audit room:public-1"))
