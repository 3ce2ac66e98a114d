"""The catalog end to end: refusals that send nothing, `agents`, help and the follow-up, in Slack and the console."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dispatch_bot.bot.config import ConfigError
from dispatch_bot.bot.runtime import Runtime
from tests.conftest import BotUnderTest, all_text
from tests.fakes.livekit_server import FakeLiveKit
from tests.fakes.slack_server import FakeSlack
from tests.test_console import bot_env, run_cli

FIXTURES = Path(__file__).parent / "fixtures" / "agents"


@pytest.fixture
def agents_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "openvidu-config"
    shutil.copytree(FIXTURES, folder)
    return folder


@pytest.fixture
async def cbot(start_bot: Callable[..., Any], agents_dir: Path) -> BotUnderTest:
    """A bot with the fixture catalog."""
    return await start_bot("agents:\n  reload_interval: 10ms\n", OPENVIDU_AGENTS_DIR=str(agents_dir))  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("text", "expected", "detail"),
    [
        (
            "auto-captions my-room",
            [
                "*auto-captions* runs in `processing: automatic` (agent-auto-captions.yaml, live_captions)",
                "registers with no name, so a named dispatch would reach nobody",
                "set `live_captions.processing: manual` in agent-auto-captions.yaml and restart OpenVidu",
            ],
            "agent in processing: automatic",
        ),
        (
            "disabled-bot my-room",
            [
                "*disabled-bot* is disabled (`enabled: false` in agent-disabled-bot.yml)",
                "OpenVidu never starts its container",
                "Set `enabled: true` in agent-disabled-bot.yml",
            ],
            "agent disabled (enabled: false)",
        ),
        (
            "mismatch my-room",
            ["agent-mismatch.yaml sets `agent_name: 'some-other-name'`, but its file name makes the agent *mismatch*"],
            "agent_name some-other-name disagrees with file name",
        ),
        (
            "speech-procesing my-room",
            [
                "There is no agent called *speech-procesing* in the agent catalog",
                "Did you mean *speech-processing*?",
                "`/dispatch agents` lists",
            ],
            "unknown agent speech-procesing",
        ),
        ("nonexistent my-room --force", ["There is no agent called *nonexistent*"], "unknown agent nonexistent"),
    ],
)
async def test_refusals_explain_and_send_nothing(
    cbot: BotUnderTest, livekit: FakeLiveKit, text: str, expected: list[str], detail: str
) -> None:
    livekit.add_room("my-room")
    body = await cbot.reply(text)
    shown = all_text(body)
    assert body["response_type"] == "ephemeral"
    for sentence in expected:
        assert sentence in shown
    assert livekit.requests == []
    [row] = cbot.audit_rows()
    assert (row["action"], row["outcome"], row["room"], row["detail"]) == ("dispatch", "invalid", "my-room", detail)


async def test_a_manual_agent_and_a_mixed_one_are_dispatched(
    cbot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room")
    await cbot.command("captions my-room")
    await cbot.command("custom-two my-room")
    await cbot.command("minimal my-room")
    await slack.wait_for_web_call("chat.postMessage", count=3)
    assert sorted(r.agent_name for r in livekit.calls("CreateDispatch")) == [  # type: ignore[attr-defined]
        "custom-two",
        "minimal",
        "speech-processing",
    ]


async def test_agents_lists_what_the_files_say(cbot: BotUnderTest, agents_dir: Path) -> None:
    body = await cbot.reply("agents")
    shown = all_text(body)
    assert body["response_type"] == "ephemeral"
    assert f"*Agents* in {agents_dir} (6):" in shown
    assert (
        "• *speech-processing* (alias captions) · enabled · live_captions: manual (vosk) · explicit dispatch: yes"
    ) in shown
    assert (
        "• *auto-captions* · enabled · live_captions: automatic (deepgram) · explicit dispatch: no: automatic" in shown
    )
    assert "• *disabled-bot* · disabled · live_captions: manual (aws) · explicit dispatch: no: disabled" in shown
    assert "live_captions: manual (azure); summary: automatic (openai) · explicit dispatch: yes" in shown
    assert "• *minimal* · enabled · no AI service section · explicit dispatch: yes" in shown
    assert "no: agent_name 'some-other-name' differs from the file name" in shown
    assert ":warning: agent-broken.yaml is not valid YAML at line 5." in shown
    assert cbot.audit_rows()[-1]["action"] == "agents"


async def test_agents_without_a_catalog(bot: BotUnderTest) -> None:
    shown = all_text(await bot.reply("agents"))
    assert "No agent catalog is configured" in shown and "captions → speech-processing" in shown


async def test_help_names_what_each_agent_can_do(cbot: BotUnderTest) -> None:
    shown = all_text(await cbot.reply("help"))
    assert "auto-captions (no: automatic, it joins every new room by itself)" in shown
    assert "speech-processing (yes)" in shown
    assert "/dispatch agents" in shown


async def test_an_edited_file_is_picked_up_without_a_restart(
    cbot: BotUnderTest, livekit: FakeLiveKit, agents_dir: Path
) -> None:
    livekit.add_room("my-room")
    assert "*auto-captions* runs in `processing: automatic`" in all_text(await cbot.reply("auto-captions my-room"))
    path = agents_dir / "agent-auto-captions.yaml"
    path.write_text(path.read_text().replace("processing: automatic", "processing: manual"))
    later = path.stat().st_mtime_ns + 10**9
    os.utime(path, ns=(later, later))
    cbot.runtime.catalog._checked_at = float("-inf")  # type: ignore[union-attr]  # as if reload_interval passed
    await cbot.command("auto-captions my-room")
    await livekit.wait_for(lambda: len(livekit.calls("CreateDispatch")) == 1)


async def test_follow_up_names_the_cause_the_catalog_points_at(
    cbot: BotUnderTest, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room")
    await cbot.command("captions my-room")
    update = await slack.wait_for_web_call("chat.update")
    shown = all_text(update.params)
    assert "agent-speech-processing.yaml says *speech-processing* is enabled and manual" in shown
    assert "`docker logs agent-speech-processing`" in shown
    assert "the agent is disabled" not in shown


async def test_stop_by_an_agent_name_the_catalog_does_not_know(cbot: BotUnderTest, livekit: FakeLiveKit) -> None:
    livekit.add_room("my-room", agents=["retired-agent"])  # dispatched before its file was removed
    await cbot.command("stop retired-agent my-room")  # still stoppable
    await livekit.wait_for(lambda: livekit.dispatches("my-room") == [])
    shown = all_text(await cbot.reply("stop speech-procesing my-room"))
    assert "There is no agent called *speech-procesing*" in shown and "Did you mean *speech-processing*?" in shown


async def test_unreadable_catalog_warns_and_still_dispatches(
    start_bot: Callable[..., Any], tmp_path: Path, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    missing = tmp_path / "no-such-folder"
    bot = await start_bot(OPENVIDU_AGENTS_DIR=str(missing))
    livekit.add_room("my-room")
    await bot.command("captions my-room")
    post = await slack.wait_for_web_call("chat.postMessage")
    shown = all_text(post.params)
    assert f"The agent catalog could not be read (The agent folder {missing} cannot be read" in shown
    assert "speech-processing was not checked against it" in shown


async def test_an_alias_to_an_unknown_agent_stops_the_bot_at_start(make_settings: Any, agents_dir: Path) -> None:
    settings = make_settings("agents:\n  aliases:\n    subs: subtitles\n", OPENVIDU_AGENTS_DIR=str(agents_dir))
    with pytest.raises(ConfigError, match=r"agents.aliases: subs points at subtitles, which is not in the agent"):
        await Runtime.open(settings)


async def test_console_refuses_like_slack(
    make_settings: Any, tmp_path: Path, agents_dir: Path, livekit: FakeLiveKit
) -> None:
    env = bot_env(make_settings(), tmp_path / "dispatch-bot.yaml")
    env["OPENVIDU_AGENTS_DIR"] = str(agents_dir)
    code, out, _ = await run_cli(["console", "-c", "disabled-bot my-room"], env)
    assert code == 1
    assert "disabled-bot is disabled (`enabled: false` in agent-disabled-bot.yml)" in out
    code, out, _ = await run_cli(["console", "-c", "agents"], env)
    assert code == 0 and "auto-captions · enabled · live_captions: automatic (deepgram)" in out
    assert livekit.requests == []


async def test_a_file_openvidu_would_fail_on_is_refused(
    start_bot: Callable[..., Any], tmp_path: Path, livekit: FakeLiveKit
) -> None:
    folder = tmp_path / "defects"
    folder.mkdir()
    (folder / "agent-noproc.yaml").write_text("enabled: true\nlive_captions:\n  provider: vosk\n")
    bot = await start_bot(OPENVIDU_AGENTS_DIR=str(folder))
    shown = all_text(await bot.reply("noproc my-room"))
    assert "*noproc* cannot start as agent-noproc.yaml stands: `live_captions` has no `processing` key" in shown
    assert livekit.requests == []
