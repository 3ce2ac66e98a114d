"""Agent supervision end to end: the bot's real endpoint, LiveKit's signed webhooks from the stand-in, polling, SQLite.

An agent is in a room when the room's participants say so; a webhook is a hint, a poll is the check.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dispatch_bot.bot.audit_store import AuditStore, WatchStore
from dispatch_bot.bot.config import ConfigError
from dispatch_bot.bot.runtime import Runtime
from dispatch_bot.commands.ports import Actor, AuditError, AuditRecord, WatchRecord
from tests.conftest import BotUnderTest, all_text, read_audit
from tests.fakes.livekit_server import FakeLiveKit
from tests.fakes.livekit_webhooks import sign_webhook
from tests.fakes.slack_server import FakeSlack, WebCall
from tests.test_console import CLI, ServedBot, bot_env, free_port

# Polls far apart unless a test wants them: what happens fast is the webhooks' doing.
SLOW_POLLS = "watch:\n  poll_interval: 60s\n  keep_backoff: 50ms\n  keep_retries: 2\n"
FAST_POLLS = "watch:\n  poll_interval: 50ms\n  keep_backoff: 50ms\n  keep_retries: 2\n"


class Supervised:
    """Bots whose supervision runs as `serve` runs it, with LiveKit's webhooks pointed at them unless told not to."""

    def __init__(self, start_bot: Callable[..., Any], livekit: FakeLiveKit) -> None:
        self._start_bot = start_bot
        self._livekit = livekit
        self.running: dict[int, tuple[asyncio.Event, asyncio.Task[None]]] = {}

    async def __call__(self, yaml_text: str = SLOW_POLLS, *, webhooks: bool = True, **env: str) -> BotUnderTest:
        bot: BotUnderTest = await self._start_bot(yaml_text, **env)
        supervisor = bot.runtime.supervisor
        assert supervisor is not None
        stop = asyncio.Event()
        self.running[id(bot)] = (stop, asyncio.create_task(supervisor.run(stop)))
        await supervisor.wait_polls(1)
        if webhooks:
            self._livekit.add_webhook_url(f"{bot.url}/livekit/webhook")
        return bot

    async def stop(self, bot: BotUnderTest) -> None:
        """The bot goes down: supervision stops, the database closes."""
        stop, task = self.running.pop(id(bot))
        stop.set()
        await task
        await bot.transport.aclose()
        await bot.runtime.close()


@pytest.fixture
async def supervised(start_bot: Callable[..., Any], livekit: FakeLiveKit) -> AsyncIterator[Supervised]:
    bots = Supervised(start_bot, livekit)
    yield bots
    for stop, task in bots.running.values():
        stop.set()
        await task


async def settle(bot: BotUnderTest, livekit: FakeLiveKit) -> None:
    """Every webhook sent, and everything the bot took from them handled."""
    await livekit.wait_webhooks_idle()
    assert bot.runtime.supervisor is not None
    await bot.runtime.supervisor.settled()


async def dispatched_and_joined(bot: BotUnderTest, slack: FakeSlack, text: str = "captions my-room") -> WebCall:
    """Run a dispatch and wait for its follow-up; returns the channel message it was announced in."""
    await bot.command(text)
    post = await slack.wait_for_web_call("chat.postMessage")
    update = await slack.wait_for_web_call("chat.update")
    assert "The agent joined as" in all_text(update.params), all_text(update.params)
    return post


def alerts(slack: FakeSlack) -> list[WebCall]:
    return [c for c in slack.calls("chat.postMessage") if "left *" in all_text(c.params)]


def rows_of(bot: BotUnderTest, action: str) -> list[dict[str, Any]]:
    return [r for r in bot.audit_rows() if r["action"] == action]


async def test_an_agent_that_crashes_while_people_remain_is_reported_in_the_dispatch_thread(
    supervised: Supervised, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room", humans=["alice", "bob"])
    livekit.register_worker("speech-processing")
    bot = await supervised()
    post = await dispatched_and_joined(bot, slack)

    identity = livekit.agent_leaves("my-room", "speech-processing", reason="CONNECTION_TIMEOUT")
    alert = await slack.wait_for_web_call("chat.postMessage", count=2)
    text = all_text(alert.params)
    assert alert.params["channel"] == "C123"
    assert alert.params["thread_ts"] == "1700000000.000100"  # under the dispatch's own message
    assert alert.params["reply_broadcast"] is True
    assert "*speech-processing* left *my-room* after " in text
    assert "its connection was lost (its process probably crashed or was killed)" in text
    assert "2 people are still in the room" in text
    assert "docker logs agent-speech-processing" in text
    [again] = [b for b in alert.params["blocks"][-1]["elements"] if b["action_id"] == "dispatch_again"]
    assert again["value"] == "speech-processing my-room"
    [row] = rows_of(bot, "alert")
    assert (row["outcome"], row["agent"], row["room"]) == ("error", "speech-processing", "my-room")
    assert identity in row["detail"] and row["dispatch_id"] == post_dispatch_id(livekit)
    assert livekit.calls("CreateDispatch") and len(livekit.calls("CreateDispatch")) == 1  # no --keep: nothing resent

    # list now tells the truth: the dispatch stands in LiveKit, its agent is gone, and why.
    listed = all_text(await bot.reply("list my-room"))
    assert "left" in listed and "its connection was lost" in listed
    assert f"in the room as {identity}" not in listed
    assert post.params["channel"] == "C123"


def post_dispatch_id(livekit: FakeLiveKit) -> str:
    return next(d.id for d in livekit.dispatches("my-room") if d.agent_name == "speech-processing")


async def test_a_webhook_delivered_twice_raises_one_alert(
    supervised: Supervised, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room")
    livekit.register_worker("speech-processing")
    bot = await supervised()
    await dispatched_and_joined(bot, slack)
    livekit.webhook_duplicates = True
    livekit.agent_leaves("my-room", "speech-processing", reason="CLIENT_INITIATED")
    await slack.wait_for_web_call("chat.postMessage", count=2)
    await settle(bot, livekit)
    left = [d for d in livekit.webhook_deliveries if d.event == "participant_left"]
    assert len(left) == 2 and left[0].id == left[1].id and {d.status for d in left} == {200}
    assert len(alerts(slack)) == 1
    assert len(rows_of(bot, "alert")) == 1
    assert "it left by itself" in all_text(alerts(slack)[0].params)


async def test_lost_webhooks_are_caught_by_polling(
    supervised: Supervised, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room")
    livekit.register_worker("speech-processing")
    bot = await supervised(FAST_POLLS)
    await dispatched_and_joined(bot, slack)
    livekit.drop_webhooks()  # the server's queue overflowed, or it restarted: nothing more arrives
    livekit.agent_leaves("my-room", "speech-processing")
    alert = await slack.wait_for_web_call("chat.postMessage", count=2)
    assert "no webhook said why; two checks in a row did not find it" in all_text(alert.params)
    assert len(rows_of(bot, "alert")) == 1


async def test_a_poll_costs_one_list_rooms_and_one_list_participants_per_watched_room(
    supervised: Supervised, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    for name in ("room-a", "room-b", "quiet-room"):
        livekit.add_room(name)
    livekit.register_worker("speech-processing")
    bot = await supervised(webhooks=False)
    for name in ("room-a", "room-b"):
        await bot.command(f"captions {name}")
    await slack.wait_for_web_call("chat.update", count=2)
    supervisor = bot.runtime.supervisor
    assert supervisor is not None
    before = len(livekit.requests)
    await supervisor.poll_once()
    methods = sorted(r.method for r in livekit.requests[before:])
    assert methods == ["ListParticipants", "ListParticipants", "ListRooms"]


@pytest.mark.parametrize("how", ["person leaves", "stop", "room ends", "agent leaves an empty room"])
async def test_no_alert_when_a_person_leaves_on_stop_when_the_room_ends_or_nobody_remains(
    supervised: Supervised, livekit: FakeLiveKit, slack: FakeSlack, how: str
) -> None:
    livekit.add_room("my-room", humans=["alice", "bob"])
    livekit.register_worker("speech-processing")
    bot = await supervised()
    await dispatched_and_joined(bot, slack)
    if how == "person leaves":
        livekit.person_leaves("my-room", "bob")
    elif how == "stop":
        await bot.command("stop captions my-room")
        await slack.wait_for_web_call("chat.postMessage", count=2)  # "stopped", in the channel
    elif how == "room ends":
        livekit.close_room("my-room")
    else:
        livekit.person_leaves("my-room", "alice")
        livekit.person_leaves("my-room", "bob")
        livekit.agent_leaves("my-room", "speech-processing")
    await settle(bot, livekit)
    assert bot.runtime.supervisor is not None
    await bot.runtime.supervisor.poll_once()
    await bot.runtime.supervisor.poll_once()  # and a missed webhook would have been caught by now
    assert alerts(slack) == []
    assert rows_of(bot, "alert") == []
    left = [d for d in livekit.webhook_deliveries if d.event == "participant_left"]
    assert left, "the server did send participant_left"
    open_watches = await bot.runtime.supervisor.store.open_watches("my-room")
    assert open_watches == [] if how != "person leaves" else [w.state for w in open_watches] == ["present"]


async def test_a_dispatch_whose_agent_left_is_replaced_not_called_a_duplicate(
    start_bot: Callable[..., Any], livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room")
    livekit.register_worker("speech-processing")
    bot = await start_bot()  # no supervision running: presence alone decides
    await dispatched_and_joined(bot, slack)
    first = post_dispatch_id(livekit)
    livekit.agent_leaves("my-room", "speech-processing", reason="CONNECTION_TIMEOUT")

    await bot.command("captions my-room")
    post = await slack.wait_for_web_call("chat.postMessage", count=2)
    text = all_text(post.params)
    assert f"Removed the stale dispatch `{first}` of *speech-processing* in *my-room*" in text
    assert len(livekit.calls("CreateDispatch")) == 2
    assert [d.dispatch_id for d in livekit.calls("DeleteDispatch")] == [first]  # type: ignore[attr-defined]
    await slack.wait_for_web_call("chat.update", count=2)
    assert [d.agent_name for d in livekit.dispatches("my-room")] == ["", "speech-processing"]
    assert len(livekit.agent_participants("my-room")) == 1
    replace_row, dispatch_row = [r for r in bot.audit_rows() if r["action"] in ("replace", "dispatch")][1:]
    assert (replace_row["dispatch_id"], replace_row["outcome"]) == (first, "ok")
    assert dispatch_row["dispatch_id"] == post_dispatch_id(livekit) != first


async def test_a_worker_that_took_the_job_but_whose_agent_never_joined_is_said_so_and_replaced(
    start_bot: Callable[..., Any], livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room")
    livekit.register_worker("speech-processing", joins=False)
    bot = await start_bot()
    await bot.command("captions my-room")
    update = await slack.wait_for_web_call("chat.update")
    text = all_text(update.params)
    assert "A worker took the job (as `agent-AJ_" in text and "probably failed on start" in text
    assert ":white_check_mark:" not in text
    listed = all_text(await bot.reply("list my-room"))
    assert "never joined (a worker took the job as agent-AJ_" in listed

    await bot.command("captions my-room")
    post = await slack.wait_for_web_call("chat.postMessage", count=2)
    assert "a worker took its job but its agent never joined" in all_text(post.params)
    assert len(livekit.calls("CreateDispatch")) == 2


async def test_a_fresh_dispatch_on_its_way_counts_as_there(
    start_bot: Callable[..., Any], livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room")
    bot = await start_bot("watch:\n  poll_interval: 60s\nlivekit:\n  followup_timeout: 30s\n")
    livekit.register_worker("speech-processing", joins=False)
    await bot.command("captions my-room")
    await slack.wait_for_web_call("chat.postMessage")
    text = all_text(await bot.reply("captions my-room"))
    assert "on its way" in text
    assert len(livekit.calls("CreateDispatch")) == 1


async def test_keep_brings_the_agent_back_in_the_thread(
    supervised: Supervised, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room")
    livekit.register_worker("speech-processing")
    bot = await supervised()
    await dispatched_and_joined(bot, slack, "captions my-room --keep")
    first = post_dispatch_id(livekit)
    livekit.agent_leaves("my-room", "speech-processing", reason="CONNECTION_TIMEOUT")

    alert = await slack.wait_for_web_call("chat.postMessage", count=2)
    assert "the bot sends it again in 0 s (attempt 1 of 2)" in all_text(alert.params)
    attempt = await slack.wait_for_web_call("chat.postMessage", count=3)
    assert "`--keep` attempt 1 of 2: sent *speech-processing* into *my-room* again" in all_text(attempt.params)
    back = await slack.wait_for_web_call("chat.postMessage", count=4)
    assert "*speech-processing* is back in *my-room* as `agent-AJ_" in all_text(back.params)
    threads = [(c.params.get("thread_ts"), all_text(c.params)[:80]) for c in slack.calls("chat.postMessage")[1:]]
    assert all(t == "1700000000.000100" for t, _ in threads), threads
    assert [d.dispatch_id for d in livekit.calls("DeleteDispatch")] == [first]  # type: ignore[attr-defined]
    assert len(livekit.calls("CreateDispatch")) == 2
    keep_rows = rows_of(bot, "keep")
    assert [r["outcome"] for r in keep_rows] == ["ok", "ok"]
    assert {r["user_id"] for r in keep_rows} == {"U123"} and keep_rows[0]["user_name"] == "dispatch-bot for alice"

    # stop ends the keep: no alert and no attempt when the agent then leaves
    await bot.command("stop captions my-room")
    await settle(bot, livekit)
    assert len(livekit.calls("CreateDispatch")) == 2
    assert len(rows_of(bot, "alert")) == 1


async def test_keep_gives_up_after_its_retries_when_the_agent_never_comes_back(
    supervised: Supervised, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room")
    livekit.register_worker("speech-processing")
    bot = await supervised("watch:\n  poll_interval: 60s\n  keep_backoff: 20ms\n  keep_retries: 2\n")
    await dispatched_and_joined(bot, slack, "captions my-room --keep")
    livekit.unregister_worker("speech-processing")  # its worker is gone: nothing will ever join
    livekit.agent_leaves("my-room", "speech-processing")

    def gave_up() -> bool:
        return any("`--keep` gave up" in all_text(c.params) for c in slack.calls("chat.postMessage"))

    await slack_wait(slack, gave_up, timeout=10)
    texts = [all_text(c.params) for c in slack.calls("chat.postMessage")]
    assert sum("`--keep` attempt" in t and "failed" in t for t in texts) == 2
    assert len(livekit.calls("CreateDispatch")) == 1 + 2  # bounded: the dispatch and two attempts
    assert [r["outcome"] for r in rows_of(bot, "keep")] == ["ok", "error", "ok", "error"]
    assert bot.runtime.supervisor is not None
    assert await bot.runtime.supervisor.store.open_watches("my-room") == []


async def slack_wait(slack: FakeSlack, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await slack.wait_for_web_call("chat.postMessage", count=len(slack.calls("chat.postMessage")) + 1,
                                          timeout=timeout)  # fmt: skip


async def test_a_restart_between_dispatch_and_departure_loses_nothing(
    supervised: Supervised, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    livekit.add_room("my-room")
    livekit.register_worker("speech-processing")
    first = await supervised(FAST_POLLS)
    await dispatched_and_joined(first, slack)
    # The bot goes down; the agent crashes meanwhile; the webhook finds nobody and is lost.
    livekit.drop_webhooks()
    await supervised.stop(first)

    livekit.agent_leaves("my-room", "speech-processing")
    livekit.resume_webhooks()
    second = await supervised(FAST_POLLS, webhooks=False)
    alert = await slack.wait_for_web_call("chat.postMessage", count=2)
    assert "*speech-processing* left *my-room*" in all_text(alert.params)
    assert alert.params["thread_ts"] == "1700000000.000100"
    assert len(rows_of(second, "alert")) == 1


async def test_webhooks_that_do_not_verify_are_refused_and_change_nothing(
    bot: BotUnderTest, livekit: FakeLiveKit, caplog: pytest.LogCaptureFixture
) -> None:
    body = '{"event":"participant_left","id":"EV_forged","room":{"name":"my-room"}}'
    url = f"{bot.url}/livekit/webhook"
    headers = {"Content-Type": "application/webhook+json"}
    cases = {
        "forged": sign_webhook(body, "devkey", "not-the-secret"),
        "other key": sign_webhook(body, "otherkey", "secret"),
        "expired": sign_webhook(body, "devkey", "secret", valid_for=timedelta(seconds=-120)),
        "tampered": sign_webhook(body.replace("my-room", "other"), "devkey", "secret"),
        "no hash": sign_webhook(body, "devkey", "secret", sha256=""),
        "no header": "",
    }
    async with aiohttp.ClientSession() as http:
        for name, token in cases.items():
            sent = {**headers, "Authorization": token} if token else headers
            async with http.post(url, data=body, headers=sent) as resp:
                assert resp.status == 401, name
        signed = sign_webhook("not json", "devkey", "secret")
        async with http.post(url, data="not json", headers={**headers, "Authorization": signed}) as resp:
            assert resp.status == 400
        big = "x" * (1024 * 1024 + 1)
        async with http.post(
            url, data=big, headers={**headers, "Authorization": sign_webhook(big, "devkey", "secret")}
        ) as resp:
            assert resp.status == 413
    assert "Traceback" not in caplog.text
    assert "not-the-secret" not in caplog.text and "secret" not in caplog.text.replace("LIVEKIT_API_SECRET", "")
    assert bot.audit_rows() == []


async def test_rules_dispatch_into_matching_rooms_once_per_room_and_announce_it(
    supervised: Supervised, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    rules = 'rules:\n  - name: support-captions\n    rooms: "support-*"\n    agents: [captions]\n    channel: C0RULES\n'
    livekit.register_worker("speech-processing")
    bot = await supervised(SLOW_POLLS + rules)
    livekit.add_room("support-1")  # room_started reaches the bot as a webhook
    livekit.add_room("sales-1")
    post = await slack.wait_for_web_call("chat.postMessage")
    text = all_text(post.params)
    assert post.params["channel"] == "C0RULES"
    assert "Rule *support-captions*: *support-1* started." in text
    assert "sent *speech-processing* (captions) into *support-1*" in text
    update = await slack.wait_for_web_call("chat.update")
    assert "The agent joined as" in all_text(update.params)
    await settle(bot, livekit)
    assert [(r.room, r.agent_name) for r in livekit.calls("CreateDispatch")] == [("support-1", "speech-processing")]  # type: ignore[attr-defined]
    [row] = [r for r in bot.audit_rows() if r["action"] == "dispatch"]
    assert (row["user_id"], row["user_name"], row["room"]) == (
        "rule:support-captions",
        "rule support-captions",
        "support-1",
    )

    # Polling sees the same room again (and a restart would too): never a second dispatch into that room sid.
    assert bot.runtime.supervisor is not None
    await bot.runtime.supervisor.poll_once()
    await settle(bot, livekit)
    assert len(livekit.calls("CreateDispatch")) == 1

    listed = all_text(await bot.reply("rules"))
    assert "*support-captions*: rooms `support-*` get captions" in listed
    assert "*speech-processing* in *support-1*: ok" in listed


async def test_a_rule_counts_a_dispatch_someone_else_made(
    supervised: Supervised, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    rules = 'rules:\n  - name: meet\n    rooms: "*"\n    agents: [speech-processing]\n    channel: C0RULES\n'
    livekit.register_worker("speech-processing")
    bot = await supervised(SLOW_POLLS + rules)
    livekit.add_room("meet-room", agents=["speech-processing"])  # OpenVidu Meet's token already brings captions
    await settle(bot, livekit)
    assert livekit.calls("CreateDispatch") == []
    assert [r["outcome"] for r in bot.audit_rows() if r["action"] == "dispatch"] == ["noop"]
    assert slack.calls("chat.postMessage") == []


async def test_a_rule_served_before_a_restart_is_not_served_again(
    supervised: Supervised, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    rules = 'rules:\n  - name: all\n    rooms: "*"\n    agents: [captions]\n    channel: C0RULES\n'
    livekit.register_worker("speech-processing")
    livekit.add_room("standup")
    first = await supervised(SLOW_POLLS + rules, webhooks=False)  # its first poll sees the room: served
    await slack.wait_for_web_call("chat.update")
    await supervised.stop(first)
    second = await supervised(SLOW_POLLS + rules, webhooks=False)
    assert second.runtime.supervisor is not None
    await second.runtime.supervisor.settled()
    assert len(livekit.calls("CreateDispatch")) == 1


async def test_serve_watches_agents_as_a_real_process(
    make_settings: Callable[..., Any], tmp_path: Path, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    settings = make_settings(FAST_POLLS)
    livekit.add_room("my-room")
    livekit.register_worker("speech-processing")
    async with ServedBot(bot_env(settings, tmp_path / "dispatch-bot.yaml")) as served:
        livekit.add_webhook_url(f"http://127.0.0.1:{served.port}/livekit/webhook")
        assert await served.command("captions my-room", slack.new_response_url()) == 200
        update = await slack.wait_for_web_call("chat.update")
        assert "The agent joined as" in all_text(update.params)
        livekit.agent_leaves("my-room", "speech-processing", reason="SIGNAL_CLOSE")
        alert = await slack.wait_for_web_call("chat.postMessage", count=2)
        assert "its signalling connection dropped" in all_text(alert.params)
        await served.stop()
    assert served.returncode == 0 and "Traceback" not in served.log
    assert [r["action"] for r in read_audit(Path(settings.database))] == ["dispatch", "followup", "alert"]


async def test_socket_mode_also_listens_for_webhooks_and_health_on_port(
    make_settings: Callable[..., Any], tmp_path: Path, livekit: FakeLiveKit, slack: FakeSlack
) -> None:
    env = bot_env(make_settings(), tmp_path / "dispatch-bot.yaml")
    port = free_port()
    env.update({"SLACK_APP_TOKEN": "xapp-test-token", "SLACK_SIGNING_SECRET": "", "PORT": str(port)})
    proc = await asyncio.create_subprocess_exec(
        *CLI, "serve", "--host", "127.0.0.1", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        await slack.wait_socket_connected(timeout=20)
        body = '{"event":"room_started","id":"EV_1","room":{"name":"r","sid":"RM_1"}}'
        headers = {"Content-Type": "application/webhook+json"}
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
            signed = {**headers, "Authorization": sign_webhook(body, "devkey", "secret")}
            async with http.post(f"http://127.0.0.1:{port}/livekit/webhook", data=body, headers=signed) as resp:
                assert resp.status == 200
            forged = {**headers, "Authorization": sign_webhook(body, "devkey", "wrong")}
            async with http.post(f"http://127.0.0.1:{port}/livekit/webhook", data=body, headers=forged) as resp:
                assert resp.status == 401
            async with http.post(f"http://127.0.0.1:{port}/slack/events", data="x") as resp:
                assert resp.status == 404  # Slack's requests come over the socket in this mode
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0
    assert "Traceback" not in err.decode()


async def test_a_database_of_the_previous_schema_is_migrated_and_its_chain_still_verifies(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = await AuditStore.open(path)
    await store.record(AuditRecord(Actor("cli", "cli:ops"), "list my-room", "list", "ok", room="my-room"))
    await store.close()
    with sqlite3.connect(path) as db:  # as version 1 left it: no supervision tables
        for table in ("watches", "webhook_events", "rule_rooms"):
            db.execute(f"DROP TABLE {table}")
        db.execute("UPDATE audit_meta SET value = '1' WHERE key = 'schema_version'")
    store = await AuditStore.open(path)
    try:
        watches = WatchStore(store)
        await watches.add(WatchRecord("my-room", "speech-processing", "AD_1", started_at=1.0))
        assert [w.dispatch_id for w in await watches.open_watches("my-room")] == ["AD_1"]
        assert (await store.verify()).intact
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM audit_meta WHERE key = 'schema_version'").fetchone() == ("4",)
        db.execute("UPDATE audit_meta SET value = '9' WHERE key = 'schema_version'")
    with pytest.raises(AuditError, match="newer than this dispatch-bot's 4; upgrade dispatch-bot"):
        await AuditStore.open(path)


async def test_a_rule_naming_an_agent_the_catalog_lacks_stops_the_start(
    make_settings: Callable[..., Any], tmp_path: Path
) -> None:
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "agent-speech-processing.yaml").write_text(
        "enabled: true\nlive_captions:\n  processing: manual\n  provider: vosk\n"
    )
    rules = 'rules:\n  - name: translate\n    rooms: "*"\n    agents: [translator]\n    channel: C0RULES\n'
    settings = make_settings(rules, OPENVIDU_AGENTS_DIR=str(folder))
    with pytest.raises(ConfigError) as raised:
        await Runtime.open(settings)
    assert str(raised.value).startswith(
        "rules: translate names the agent translator, which is not in the agent catalog"
    )


@pytest.mark.parametrize(
    ("rules", "sentence"),
    [
        ("rules: {}\n", "rules must be a list"),
        ("rules:\n  - name: a\n    rooms: x\n    agents: [captions]\n", "rules: a has no channel"),
        ("rules:\n  - name: a\n    rooms: x\n    agents: [captions]\n    channel: general\n", "give the channel's id"),
        ("rules:\n  - name: a\n    rooms: x\n    agents: [list]\n    channel: C1X\n", "list is a subcommand word"),
        (
            "rules:\n  - {name: a, rooms: x, agents: [b], channel: C1X}\n"
            "  - {name: a, rooms: y, agents: [b], channel: C1X}\n",
            "two rules are called a",
        ),
        ("watch:\n  keep_retries: 0\n", "watch.keep_retries is 0"),
        ("watch:\n  poll: 5s\n", "`watch.poll` is not a setting"),
    ],
)
def test_bad_rules_and_watch_settings_are_one_sentence(
    make_settings: Callable[..., Any], rules: str, sentence: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(sentence)):
        make_settings(rules)


async def test_rules_command_without_rules_says_how_to_add_them(bot: BotUnderTest) -> None:
    text = all_text(await bot.reply("rules"))
    assert "No dispatch rules are configured." in text and "Agent supervision" in text
