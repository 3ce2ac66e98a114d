"""The Slack stand-in fails as Slack and the proxies in front of it do, proven with plain aiohttp and slack_sdk."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack_server import RESPONSE_URL, Failure, FakeSlack

BOT_TOKEN = "xoxb-test-token"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_token=BOT_TOKEN) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.parametrize(
    ("failure", "status", "content_type", "piece"),
    [
        (Failure.plain(502), 502, "text/plain", "502 Bad Gateway"),
        (Failure.html(503), 503, "text/html", "<h1>503</h1>"),
        (Failure.not_ok("fatal_error"), 200, "application/json", '"error": "fatal_error"'),
        (Failure.rate_limited(retry_after=1), 429, "application/json", '"error": "ratelimited"'),
    ],
)
async def test_answers_fail_as_proxies_and_slack_do(
    fake: FakeSlack, http: aiohttp.ClientSession, failure: Failure, status: int, content_type: str, piece: str
) -> None:
    fake.fail("chat.postMessage", failure)
    headers = {"Authorization": f"Bearer {BOT_TOKEN}"}
    async with http.post(f"{fake.api_url}chat.postMessage", data={"channel": "C1", "text": "hi"}, headers=headers) as r:
        assert (r.status, r.content_type) == (status, content_type)
        assert piece in await r.text()
        assert r.headers.get("Retry-After") == ("1" if status == 429 else None)
    [call] = fake.calls("chat.postMessage")
    assert call.status == status and call.params["text"] == "hi"
    # Other methods are untouched.
    assert (await AsyncWebClient(token=BOT_TOKEN, base_url=fake.api_url).auth_test())["ok"] is True


async def test_a_failure_for_some_calls_then_slack_answers(fake: FakeSlack) -> None:
    fake.fail("chat.postMessage", Failure.html(503, times=2))
    client = AsyncWebClient(token=BOT_TOKEN, base_url=fake.api_url)
    for _ in range(2):
        with pytest.raises(SlackApiError):
            await client.chat_postMessage(channel="C1", text="hi")
    assert (await client.chat_postMessage(channel="C1", text="hi"))["ok"] is True
    assert [c.status for c in fake.calls("chat.postMessage")] == [503, 503, 200]


async def test_a_reset_closes_the_connection(fake: FakeSlack, http: aiohttp.ClientSession) -> None:
    fake.fail(RESPONSE_URL, Failure.reset())
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with http.post(fake.new_response_url(), json={"text": "hi"}):
            pass
    assert [(r.body, r.status) for r in fake.responses] == [({"text": "hi"}, 0)]


async def test_a_stall_holds_the_answer_until_released(fake: FakeSlack, http: aiohttp.ClientSession) -> None:
    fake.fail("users.info", Failure.stall())
    client = AsyncWebClient(token=BOT_TOKEN, base_url=fake.api_url)
    call = asyncio.create_task(client.users_info(user="U123"))
    await fake.wait_for_web_call("users.info")
    assert not call.done()
    fake.heal("users.info")
    assert (await call)["user"]["id"] == "U123"


async def test_the_refused_address_refuses(fake: FakeSlack, http: aiohttp.ClientSession) -> None:
    with pytest.raises(aiohttp.ClientConnectorError):
        async with http.post(f"{fake.refused_url}auth.test"):
            pass


async def test_user_groups(fake: FakeSlack) -> None:
    fake.add_usergroup("S0ONCALL", "oncall", ["U1", "U2"])
    client = AsyncWebClient(token=BOT_TOKEN, base_url=fake.api_url)
    listed = await client.usergroups_list()
    assert [(g["id"], g["handle"]) for g in listed["usergroups"]] == [("S0ONCALL", "oncall")]
    assert (await client.usergroups_users_list(usergroup="S0ONCALL"))["users"] == ["U1", "U2"]
    with pytest.raises(SlackApiError, match="no_such_subteam"):
        await client.usergroups_users_list(usergroup="S0NOPE")
