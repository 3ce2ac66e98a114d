"""Tests for the fake LiveKit server, driven only by the real ``livekit.api`` client (and raw aiohttp
for the plain-text 401 cases, which the client cannot show)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import aiohttp
import jwt
import pytest
from aiohttp import web
from livekit import api
from livekit.protocol.webhook import WebhookEvent

from tests.fakes.livekit_server import FakeLiveKit, sign_webhook

KEY = "devkey"
SECRET = "secret"


@pytest.fixture
async def fake() -> AsyncIterator[FakeLiveKit]:
    async with FakeLiveKit(KEY, SECRET) as server:
        yield server


@pytest.fixture
async def lk(fake: FakeLiveKit) -> AsyncIterator[api.LiveKitAPI]:
    client = api.LiveKitAPI(fake.url, KEY, SECRET)
    yield client
    await client.aclose()


def _token(grants: api.VideoGrants, *, key: str = KEY, secret: str = SECRET) -> str:
    return api.AccessToken(key, secret).with_grants(grants).to_jwt()


def _create(room: str, agent: str, metadata: str = "") -> api.CreateAgentDispatchRequest:
    return api.CreateAgentDispatchRequest(room=room, agent_name=agent, metadata=metadata)


async def _raw_post(
    fake: FakeLiveKit,
    path: str,
    body: bytes,
    headers: dict[str, str],
) -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(fake.url + path, data=body, headers=headers) as resp,
    ):
        return resp.status, resp.content_type, await resp.text()


LIST_DISPATCH = "/twirp/livekit.AgentDispatchService/ListDispatch"
PROTOBUF = {"Content-Type": "application/protobuf"}


# ---------------------------------------------------------------- CreateDispatch


async def test_create_on_missing_room_auto_creates_it_with_automatic_dispatch(
    fake: FakeLiveKit, lk: api.LiveKitAPI
) -> None:
    before = time.time_ns()
    created = await lk.agent_dispatch.create_dispatch(_create("r1", "bot", '{"k":1}'))

    assert created.id.startswith("AD_") and len(created.id) == 15
    assert (created.agent_name, created.room, created.metadata) == ("bot", "r1", '{"k":1}')
    assert created.state.created_at >= before  # nanoseconds
    assert list(created.state.jobs) == []

    rooms = (await lk.room.list_rooms(api.ListRoomsRequest(names=["r1"]))).rooms
    assert [r.name for r in rooms] == ["r1"]
    assert (rooms[0].empty_timeout, rooms[0].departure_timeout) == (300, 20)
    assert rooms[0].sid.startswith("RM_")

    listed = await lk.agent_dispatch.list_dispatch("r1")
    assert sorted(d.agent_name for d in listed) == ["", "bot"]
    assert fake.room_names() == ["r1"]
    calls = fake.calls("CreateDispatch")
    assert len(calls) == 1 and isinstance(calls[0], api.CreateAgentDispatchRequest)
    assert calls[0].agent_name == "bot"
    assert fake.requests[0].claims is not None and fake.requests[0].status == 200


async def test_no_deduplication(fake: FakeLiveKit, lk: api.LiveKitAPI) -> None:
    fake.add_room("r1", agents=["other"])
    first = await lk.agent_dispatch.create_dispatch(_create("r1", "bot"))
    second = await lk.agent_dispatch.create_dispatch(_create("r1", "bot"))

    assert first.id != second.id
    listed = await lk.agent_dispatch.list_dispatch("r1")
    # add_room with agents: one dispatch each and no automatic one.
    assert [d.agent_name for d in listed] == ["other", "bot", "bot"]


async def test_job_appears_only_with_worker_registered_at_dispatch_time(fake: FakeLiveKit, lk: api.LiveKitAPI) -> None:
    fake.add_room("r1")
    fake.register_worker("bot")
    orphan = await lk.agent_dispatch.create_dispatch(_create("r1", "nobody"))
    created = await lk.agent_dispatch.create_dispatch(_create("r1", "bot", "meta"))
    assert list(created.state.jobs) == []

    def bot_has_job() -> bool:
        return any(d.id == created.id and d.state.jobs for d in fake.dispatches("r1"))

    await fake.wait_for(bot_has_job)
    got = await lk.agent_dispatch.get_dispatch(created.id, "r1")
    assert got is not None and len(got.state.jobs) == 1
    job = got.state.jobs[0]
    assert job.id.startswith("AJ_") and job.dispatch_id == created.id
    assert job.type == api.JT_ROOM and job.agent_name == "bot" and job.room.name == "r1"
    assert job.state.status == api.JS_RUNNING
    assert job.state.participant_identity == f"agent-{job.id}"
    assert job.state.worker_id.startswith("AW_") and job.state.started_at > 0

    parts = (await lk.room.list_participants(api.ListParticipantsRequest(room="r1"))).participants
    kinds = {p.identity: p.kind for p in parts}
    assert kinds == {
        "alice": api.ParticipantInfo.Kind.STANDARD,
        job.state.participant_identity: api.ParticipantInfo.Kind.AGENT,
    }

    # The dispatch made with no worker got nothing (its timer would have fired first) ...
    no_job = await lk.agent_dispatch.get_dispatch(orphan.id, "r1")
    assert no_job is not None and list(no_job.state.jobs) == []
    # ... and a worker registering later does not pick it up.
    fake.register_worker("nobody")
    again = await lk.agent_dispatch.create_dispatch(_create("r1", "bot"))
    await fake.wait_for(lambda: any(d.id == again.id and d.state.jobs for d in fake.dispatches("r1")))
    no_job = await lk.agent_dispatch.get_dispatch(orphan.id, "r1")
    assert no_job is not None and list(no_job.state.jobs) == []


async def test_automatic_dispatch_reaches_unnamed_worker(fake: FakeLiveKit, lk: api.LiveKitAPI) -> None:
    fake.register_worker("")
    await lk.agent_dispatch.create_dispatch(_create("r1", "bot"))

    def automatic_has_job() -> bool:
        return any(d.agent_name == "" and d.state.jobs for d in fake.dispatches("r1"))

    await fake.wait_for(automatic_has_job)
    agents = [p for p in fake.participants("r1") if p.kind == api.ParticipantInfo.Kind.AGENT]
    assert len(agents) == 1


async def test_create_without_auto_create_is_unavailable() -> None:
    async with FakeLiveKit(KEY, SECRET, auto_create=False) as fake:
        client = api.LiveKitAPI(fake.url, KEY, SECRET)
        try:
            with pytest.raises(api.ServerError) as exc:
                await client.agent_dispatch.create_dispatch(_create("r1", "bot"))
        finally:
            await client.aclose()
        assert (exc.value.status, exc.value.code) == (503, "unavailable")
        assert exc.value.message == "twirp error unknown: no response from servers"
        assert fake.room_names() == []


async def test_metadata_too_big_is_invalid_argument() -> None:
    async with FakeLiveKit(KEY, SECRET, max_metadata_size=10) as fake:
        client = api.LiveKitAPI(fake.url, KEY, SECRET)
        try:
            await client.agent_dispatch.create_dispatch(_create("r1", "bot", "x" * 10))
            with pytest.raises(api.ServerError) as exc:
                await client.agent_dispatch.create_dispatch(_create("r1", "bot", "x" * 11))
        finally:
            await client.aclose()
        assert (exc.value.status, exc.value.code) == (400, "invalid_argument")
        assert exc.value.message == "twirp error unknown: metadata size exceeds limits"
        assert [d.metadata for d in fake.dispatches("r1") if d.agent_name] == ["x" * 10]


# ---------------------------------------------------------------- List / Get / Delete


async def test_list_delete_on_missing_room_are_unavailable(lk: api.LiveKitAPI) -> None:
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: lk.agent_dispatch.list_dispatch("nope"),
        lambda: lk.agent_dispatch.get_dispatch("AD_x", "nope"),
        lambda: lk.agent_dispatch.delete_dispatch("AD_x", "nope"),
    ]
    for call in calls:
        with pytest.raises(api.ServerError) as exc:
            await call()
        assert (exc.value.status, exc.value.code) == (503, "unavailable")
        assert exc.value.message == "twirp error unknown: no response from servers"


async def test_list_participants_on_missing_room_is_empty(fake: FakeLiveKit, lk: api.LiveKitAPI) -> None:
    parts = await lk.room.list_participants(api.ListParticipantsRequest(room="nope"))
    assert list(parts.participants) == []
    assert fake.requests[-1].method == "ListParticipants" and fake.requests[-1].status == 200
    assert fake.room_names() == []


async def test_get_unknown_id_is_none_and_delete_unknown_id_is_not_found(fake: FakeLiveKit, lk: api.LiveKitAPI) -> None:
    fake.add_room("r1")
    assert await lk.agent_dispatch.get_dispatch("AD_unknown", "r1") is None
    with pytest.raises(api.ServerError) as exc:
        await lk.agent_dispatch.delete_dispatch("AD_unknown", "r1")
    assert (exc.value.status, exc.value.code) == (404, "not_found")
    assert exc.value.message == "twirp error unknown: dispatch ID not found"


async def test_delete_removes_dispatch_and_agent_then_twice_is_not_found(fake: FakeLiveKit, lk: api.LiveKitAPI) -> None:
    fake.register_worker("bot")
    fake.add_room("r1")
    created = await lk.agent_dispatch.create_dispatch(_create("r1", "bot"))
    await fake.wait_for(lambda: len(fake.participants("r1")) == 2)

    deleted = await lk.agent_dispatch.delete_dispatch(created.id, "r1")
    assert deleted.id == created.id
    assert [d.agent_name for d in await lk.agent_dispatch.list_dispatch("r1")] == [""]
    assert [p.identity for p in fake.participants("r1")] == ["alice"]
    with pytest.raises(api.ServerError) as exc:
        await lk.agent_dispatch.delete_dispatch(created.id, "r1")
    assert exc.value.status == 404
    assert [r.status for r in fake.requests if r.method == "DeleteDispatch"] == [200, 404]


async def test_closed_room_loses_its_dispatches(fake: FakeLiveKit, lk: api.LiveKitAPI) -> None:
    fake.add_room("r1")
    assert len(await lk.agent_dispatch.list_dispatch("r1")) == 1
    fake.close_room("r1")
    assert fake.dispatches("r1") == []
    with pytest.raises(api.ServerError) as exc:
        await lk.agent_dispatch.list_dispatch("r1")
    assert exc.value.status == 503


# ---------------------------------------------------------------- RoomService


async def test_list_rooms(fake: FakeLiveKit, lk: api.LiveKitAPI) -> None:
    fake.register_worker("bot")
    fake.add_room("a", humans=["alice", "bob"], agents=["bot"])
    fake.add_room("b")
    await fake.wait_for(lambda: len(fake.participants("a")) == 3)

    everything = (await lk.room.list_rooms(api.ListRoomsRequest())).rooms
    assert [r.name for r in everything] == ["a", "b"]
    only = (await lk.room.list_rooms(api.ListRoomsRequest(names=["a", "missing"]))).rooms
    assert [r.name for r in only] == ["a"]
    assert only[0].num_participants == 2  # the agent is not counted
    assert only[0].creation_time_ms // 1000 == only[0].creation_time > 0
    last = fake.calls("ListRooms")[-1]
    assert isinstance(last, api.ListRoomsRequest) and list(last.names) == ["a", "missing"]


async def test_create_and_delete_room(fake: FakeLiveKit, lk: api.LiveKitAPI) -> None:
    agents = [api.RoomAgentDispatch(agent_name="bot", metadata="m")]
    room = await lk.room.create_room(api.CreateRoomRequest(name="r1", empty_timeout=60, agents=agents))
    assert (room.name, room.empty_timeout, room.departure_timeout) == ("r1", 60, 20)
    assert [(d.agent_name, d.metadata, d.room) for d in fake.dispatches("r1")] == [("bot", "m", "r1")]

    again = await lk.room.create_room(api.CreateRoomRequest(name="r1", agents=[api.RoomAgentDispatch()]))
    assert again.sid == room.sid and again.empty_timeout == 60
    assert len(fake.dispatches("r1")) == 1

    await lk.room.delete_room(api.DeleteRoomRequest(room="r1"))
    assert fake.room_names() == []
    with pytest.raises(api.ServerError) as exc:
        await lk.room.delete_room(api.DeleteRoomRequest(room="r1"))
    assert (exc.value.status, exc.value.code) == (404, "not_found")
    assert exc.value.message == "twirp error unknown: requested room does not exist"


# ---------------------------------------------------------------- auth


async def test_wrong_secret_is_plain_401(fake: FakeLiveKit) -> None:
    async with api.LiveKitAPI(fake.url, KEY, "wrong-secret") as client:
        with pytest.raises(api.ServerError) as exc:
            await client.agent_dispatch.list_dispatch("r1")
    assert (exc.value.status, exc.value.code, exc.value.message) == (401, "unknown", "")
    assert fake.requests[-1].status == 401 and fake.requests[-1].claims is None


async def test_token_for_another_room_is_permission_denied(fake: FakeLiveKit) -> None:
    fake.add_room("a")
    fake.add_room("b")
    token = _token(api.VideoGrants(room_admin=True, room="a"))
    async with api.LiveKitAPI.with_token(token, fake.url) as client:
        assert len(await client.agent_dispatch.list_dispatch("a")) == 1
        with pytest.raises(api.ServerError) as exc:
            await client.agent_dispatch.list_dispatch("b")
        assert (exc.value.status, exc.value.code, exc.value.message) == (
            401,
            "unauthenticated",
            "permissions denied",
        )
        # room_admin alone does not allow ListRooms (needs roomList)
        with pytest.raises(api.ServerError) as exc:
            await client.room.list_rooms(api.ListRoomsRequest())
        assert (exc.value.status, exc.value.code) == (401, "unauthenticated")
    assert fake.requests[-1].claims is not None


async def test_plain_text_auth_failures(fake: FakeLiveKit) -> None:
    body = api.ListAgentDispatchRequest(room="r1").SerializeToString()
    expired = jwt.encode(
        {"iss": KEY, "exp": int(time.time()) - 3600, "video": {"roomAdmin": True, "room": "r1"}},
        SECRET,
        algorithm="HS256",
    )
    cases = [
        ({"Authorization": "Token abc"}, "invalid authorization header. Must start with Bearer "),
        ({"Authorization": "Bearer not-a-jwt"}, "invalid authorization token"),
        ({"Authorization": "Bearer " + _token(api.VideoGrants(), key="other")}, "invalid API key"),
    ]
    for headers, text in cases:
        assert await _raw_post(fake, LIST_DISPATCH, body, {**PROTOBUF, **headers}) == (
            401,
            "text/plain",
            text,
        )
    for token in (_token(api.VideoGrants(), secret="bad"), expired):
        status, ctype, text = await _raw_post(
            fake, LIST_DISPATCH, body, {**PROTOBUF, "Authorization": "Bearer " + token}
        )
        assert (status, ctype) == (401, "text/plain")
        assert text.startswith("invalid authorization token: ")
    # the body was still parsed and recorded
    assert len(fake.calls("ListDispatch")) == len(cases) + 2


async def test_no_token_reaches_grant_check(fake: FakeLiveKit) -> None:
    body = api.ListAgentDispatchRequest(room="r1").SerializeToString()
    status, ctype, text = await _raw_post(fake, LIST_DISPATCH, body, PROTOBUF)
    assert (status, ctype) == (401, "application/json")
    assert json.loads(text) == {"code": "unauthenticated", "msg": "permissions denied", "meta": {}}


# ---------------------------------------------------------------- transport


async def test_json_body_and_bad_route(fake: FakeLiveKit) -> None:
    fake.add_room("r1")
    auth = {"Authorization": "Bearer " + _token(api.VideoGrants(room_admin=True, room="r1"))}
    status, ctype, text = await _raw_post(
        fake, LIST_DISPATCH, b'{"room": "r1"}', {"Content-Type": "application/json", **auth}
    )
    assert (status, ctype) == (200, "application/json")
    assert [d["agent_name"] for d in json.loads(text)["agent_dispatches"]] == [""]

    status, _, text = await _raw_post(fake, "/twirp/livekit.AgentDispatchService/Nope", b"", {**PROTOBUF, **auth})
    assert status == 404 and json.loads(text)["code"] == "bad_route"
    status, _, text = await _raw_post(fake, LIST_DISPATCH, b"\xff\xff", {**PROTOBUF, **auth})
    assert status == 400 and json.loads(text)["code"] == "malformed"


async def test_delay_keeps_server_responsive(fake: FakeLiveKit, lk: api.LiveKitAPI) -> None:
    fake.delay = 0.15
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.gather(*(lk.room.list_rooms(api.ListRoomsRequest()) for _ in range(5)))
    elapsed = loop.time() - start
    assert 0.15 <= elapsed < 0.6  # concurrent, not serialised


async def test_sdk_timeout_is_not_applied_so_callers_need_their_own(fake: FakeLiveKit) -> None:
    # livekit-api 1.2.2 passes timeout=None to session.post(), which aiohttp reads as "no timeout":
    # the LiveKitAPI(timeout=...) session default (10 s unless given) never applies. If this test
    # starts failing, the SDK began honouring its timeout.
    fake.delay = 0.15
    short = aiohttp.ClientTimeout(total=0.02)
    async with api.LiveKitAPI(fake.url, KEY, SECRET, timeout=short) as client:
        await client.room.list_rooms(api.ListRoomsRequest())

        # A caller-side timeout works, and a slow request still takes effect on the server.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await client.agent_dispatch.create_dispatch(_create("r1", "bot"))
    assert fake.calls("CreateDispatch") and fake.room_names() == []
    await fake.wait_for(lambda: [d.agent_name for d in fake.dispatches("r1")] == ["", "bot"])


async def test_wait_for_times_out(fake: FakeLiveKit) -> None:
    with pytest.raises(TimeoutError):
        await fake.wait_for(lambda: False, timeout=0.05)


# ---------------------------------------------------------------- agents: accepted vs joined


def _agent_parts(parts: Sequence[api.ParticipantInfo]) -> list[api.ParticipantInfo]:
    return [p for p in parts if p.kind == api.ParticipantInfo.Kind.AGENT]


async def test_agent_participant_kind_attributes_and_identity(fake: FakeLiveKit, lk: api.LiveKitAPI) -> None:
    fake.register_worker("captions")
    fake.add_room("r1", humans=["alice", "bob"])
    created = await lk.agent_dispatch.create_dispatch(_create("r1", "captions"))
    await fake.wait_for(lambda: len(fake.participants("r1")) == 3)

    job = (await lk.agent_dispatch.list_dispatch("r1"))[-1].state.jobs[0]
    assert job.dispatch_id == created.id
    [agent] = _agent_parts((await lk.room.list_participants(api.ListParticipantsRequest(room="r1"))).participants)
    assert agent.identity == job.state.participant_identity == f"agent-{job.id}"
    assert dict(agent.attributes) == {"lk.agent_name": "captions", "lk.agent.name": "captions"}
    assert agent.state == api.ParticipantInfo.State.ACTIVE and agent.joined_at > 0 and agent.sid.startswith("PA_")
    rooms = (await lk.room.list_rooms(api.ListRoomsRequest(names=["r1"]))).rooms
    assert rooms[0].num_participants == 2  # alice and bob; the agent is dependent


async def test_identity_format(fake: FakeLiveKit, lk: api.LiveKitAPI) -> None:
    fake.register_worker("captions", identity_format="agent-{agent_name}-{job_id}")
    fake.add_room("r1")
    await lk.agent_dispatch.create_dispatch(_create("r1", "captions"))
    await fake.wait_for(lambda: len(fake.participants("r1")) == 2)
    job = (await lk.agent_dispatch.list_dispatch("r1"))[-1].state.jobs[0]
    [agent] = _agent_parts(fake.participants("r1"))
    assert agent.identity == job.state.participant_identity == f"agent-captions-{job.id}"
    assert agent.attributes["lk.agent_name"] == "captions"


async def test_worker_that_does_not_join_accepts_the_job_but_no_agent_appears(
    fake: FakeLiveKit, lk: api.LiveKitAPI
) -> None:
    fake.register_worker("captions", joins=False)
    fake.register_worker("other")
    fake.add_room("r1")
    stuck = await lk.agent_dispatch.create_dispatch(_create("r1", "captions"))
    # A second dispatch to a worker that joins, created after: once its agent is in, the first job is long assigned.
    await lk.agent_dispatch.create_dispatch(_create("r1", "other"))
    await fake.wait_for(lambda: len(_agent_parts(fake.participants("r1"))) == 1)

    got = await lk.agent_dispatch.get_dispatch(stuck.id, "r1")
    assert got is not None and len(got.state.jobs) == 1
    job = got.state.jobs[0]
    assert job.state.status == api.JS_RUNNING
    assert job.state.participant_identity == f"agent-{job.id}"
    assert job.state.worker_id.startswith("AW_")
    parts = (await lk.room.list_participants(api.ListParticipantsRequest(room="r1"))).participants
    assert job.state.participant_identity not in {p.identity for p in parts}
    assert [p.attributes["lk.agent_name"] for p in _agent_parts(parts)] == ["other"]


# ---------------------------------------------------------------- people and departures


def _events(fake: FakeLiveKit) -> list[tuple[str, str]]:
    """(event, participant identity) of everything the server emitted, in order."""
    return [(e.event, e.participant.identity) for e in fake.webhook_events]


async def test_people_join_and_leave_and_the_room_stays(fake: FakeLiveKit, lk: api.LiveKitAPI) -> None:
    fake.add_room("r1", humans=["alice"])
    fake.person_joins("r1", "bob")
    fake.person_leaves("r1", "alice", "SIGNAL_CLOSE")

    parts = (await lk.room.list_participants(api.ListParticipantsRequest(room="r1"))).participants
    assert [(p.identity, p.kind) for p in parts] == [("bob", api.ParticipantInfo.Kind.STANDARD)]
    assert fake.room_names() == ["r1"]
    assert _events(fake) == [
        ("room_started", ""),
        ("participant_joined", "alice"),
        ("participant_joined", "bob"),
        ("participant_left", "alice"),
    ]
    left = fake.webhook_events[-1]
    assert left.participant.disconnect_reason == api.DisconnectReason.SIGNAL_CLOSE
    assert left.participant.state == api.ParticipantInfo.State.DISCONNECTED
    assert left.room.sid == fake.room_sid("r1") and left.room.num_participants == 1
    with pytest.raises(KeyError):
        fake.person_joins("nope", "carol")
    with pytest.raises(KeyError):
        fake.person_leaves("r1", "alice")


async def test_agent_leaves_job_snapshot_and_dispatch_unchanged(fake: FakeLiveKit, lk: api.LiveKitAPI) -> None:
    fake.register_worker("captions")
    fake.add_room("r1")
    created = await lk.agent_dispatch.create_dispatch(_create("r1", "captions"))
    await fake.wait_for(lambda: len(fake.agent_participants("r1")) == 1)
    before = await lk.agent_dispatch.get_dispatch(created.id, "r1")
    assert before is not None
    job = before.state.jobs[0]
    assert fake.job_status(job.id) == api.JS_RUNNING

    identity = fake.agent_leaves("r1", "captions")  # by agent name

    assert identity == job.state.participant_identity
    assert fake.agent_participants("r1") == []
    parts = (await lk.room.list_participants(api.ListParticipantsRequest(room="r1"))).participants
    assert [p.identity for p in parts] == ["alice"]
    after = await lk.agent_dispatch.get_dispatch(created.id, "r1")
    assert after == before  # the snapshot still says JS_RUNNING with that identity
    assert fake.job_status(job.id) == api.JS_FAILED
    left = fake.webhook_events[-1]
    assert (left.event, left.participant.identity) == ("participant_left", identity)
    assert left.participant.kind == api.ParticipantInfo.Kind.AGENT
    assert left.participant.disconnect_reason == api.DisconnectReason.CONNECTION_TIMEOUT
    assert left.participant.attributes["lk.agent_name"] == "captions"
    with pytest.raises(KeyError):
        fake.agent_leaves("r1", "captions")


async def test_agent_leaves_by_identity_with_reason(fake: FakeLiveKit, lk: api.LiveKitAPI) -> None:
    fake.register_worker("captions")
    fake.add_room("r1")
    for _ in range(2):
        await lk.agent_dispatch.create_dispatch(_create("r1", "captions"))
    await fake.wait_for(lambda: len(fake.agent_participants("r1")) == 2)
    second = fake.agent_participants("r1")[1].identity

    assert fake.agent_leaves("r1", second, "CLIENT_INITIATED") == second
    [remaining] = fake.agent_participants("r1")
    assert remaining.identity != second
    assert fake.webhook_events[-1].participant.disconnect_reason == api.DisconnectReason.CLIENT_INITIATED


async def test_delete_dispatch_removes_its_agent_with_participant_removed(
    fake: FakeLiveKit, lk: api.LiveKitAPI
) -> None:
    fake.register_worker("captions")
    fake.register_worker("other")
    fake.add_room("r1")
    created = await lk.agent_dispatch.create_dispatch(_create("r1", "captions"))
    await lk.agent_dispatch.create_dispatch(_create("r1", "other"))
    await fake.wait_for(lambda: len(fake.agent_participants("r1")) == 2)
    captions = next(p.identity for p in fake.agent_participants("r1") if p.attributes["lk.agent_name"] == "captions")
    seen = len(fake.webhook_events)

    await lk.agent_dispatch.delete_dispatch(created.id, "r1")

    assert [p.attributes["lk.agent_name"] for p in fake.agent_participants("r1")] == ["other"]
    [left] = fake.webhook_events[seen:]
    assert (left.event, left.participant.identity) == ("participant_left", captions)
    assert left.participant.disconnect_reason == api.DisconnectReason.PARTICIPANT_REMOVED


async def test_close_room_everyone_leaves_then_room_finished(fake: FakeLiveKit, lk: api.LiveKitAPI) -> None:
    fake.register_worker("captions")
    fake.add_room("r1", humans=["alice", "bob"], agents=["captions"])
    await fake.wait_for(lambda: len(fake.agent_participants("r1")) == 1)
    agent = fake.agent_participants("r1")[0].identity
    sid = fake.room_sid("r1")
    seen = len(fake.webhook_events)

    fake.close_room("r1", "ROOM_CLOSED")

    tail = fake.webhook_events[seen:]
    assert [(e.event, e.participant.identity) for e in tail] == [
        ("participant_left", "alice"),
        ("participant_left", "bob"),
        ("participant_left", agent),
        ("room_finished", ""),
    ]
    assert {e.participant.disconnect_reason for e in tail[:3]} == {api.DisconnectReason.ROOM_CLOSED}
    assert tail[-1].room.sid == sid and tail[-1].room.num_participants == 0
    assert fake.room_names() == [] and fake.dispatches("r1") == []
    with pytest.raises(KeyError):
        fake.room_sid("r1")
    with pytest.raises(api.ServerError):
        await lk.agent_dispatch.list_dispatch("r1")


async def test_rooms_start_from_create_dispatch_create_room_and_add_room(fake: FakeLiveKit, lk: api.LiveKitAPI) -> None:
    await lk.agent_dispatch.create_dispatch(_create("a", "bot"))
    await lk.room.create_room(api.CreateRoomRequest(name="b"))
    await lk.room.create_room(api.CreateRoomRequest(name="b"))  # exists: no second start
    fake.add_room("c", humans=[])
    fake.add_room("c", humans=["dave"])  # exists: dave joins only
    await lk.room.delete_room(api.DeleteRoomRequest(room="b"))

    started = [(e.event, e.room.name, e.room.sid) for e in fake.webhook_events if e.event.startswith("room_")]
    assert started == [
        ("room_started", "a", fake.room_sid("a")),
        ("room_started", "b", started[1][2]),
        ("room_started", "c", fake.room_sid("c")),
        ("room_finished", "b", started[1][2]),
    ]
    assert len({e.id for e in fake.webhook_events}) == len(fake.webhook_events)
    assert all(e.id.startswith("EV_") and e.created_at > 0 for e in fake.webhook_events)


# ---------------------------------------------------------------- webhooks


@dataclass
class Hit:
    """One request the receiver got: the verified event (None when verification failed) and what came with it."""

    event: WebhookEvent | None
    body: str
    headers: dict[str, str]
    status: int


@dataclass
class Receiver:
    """An aiohttp webhook endpoint that verifies like the bot must, with livekit-api's WebhookReceiver."""

    url: str = ""
    hits: list[Hit] = field(default_factory=list)
    # answers to give, in order, before answering 200: a status, or (status, Retry-After)
    answers: deque[int | tuple[int, str]] = field(default_factory=deque)
    # room name -> released when the handler may answer for that room
    holds: dict[str, asyncio.Event] = field(default_factory=dict)

    def events(self, room: str | None = None) -> list[WebhookEvent]:
        """Verified events answered 2xx, in arrival order."""
        return [
            h.event
            for h in self.hits
            if h.event is not None and 200 <= h.status < 300 and (room is None or h.event.room.name == room)
        ]


async def _start_receiver(secret: str = SECRET) -> tuple[Receiver, web.AppRunner]:
    receiver = Receiver()
    verify = api.WebhookReceiver(api.TokenVerifier(KEY, secret))

    async def handle(request: web.Request) -> web.Response:
        body = await request.text()
        try:
            event: WebhookEvent | None = verify.receive(body, request.headers.get("Authorization", ""))
        except Exception:
            event = None
        if event is None:
            status, retry_after = 401, None
        else:
            hold = receiver.holds.get(event.room.name)
            if hold is not None:
                await hold.wait()
            answer = receiver.answers.popleft() if receiver.answers else 200
            status, retry_after = answer if isinstance(answer, tuple) else (answer, None)
        receiver.hits.append(Hit(event, body, dict(request.headers), status))
        headers = {"Retry-After": retry_after} if retry_after is not None else None
        return web.Response(status=status, headers=headers)

    app = web.Application()
    app.router.add_post("/livekit/webhook", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}/livekit/webhook"
    return receiver, runner


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec, runner = await _start_receiver()
    yield rec
    for hold in rec.holds.values():
        hold.set()
    await runner.cleanup()


@pytest.fixture
async def hooked(receiver: Receiver) -> AsyncIterator[FakeLiveKit]:
    """A stand-in whose webhooks go to ``receiver`` (stopped before the receiver)."""
    async with FakeLiveKit(KEY, SECRET) as server:
        server.add_webhook_url(receiver.url)
        yield server


def _sent(fake: FakeLiveKit, room: str | None = None) -> list[str]:
    """Ids of the events the server emitted and did not drop, in order."""
    dropped = {e.id for e in fake.webhook_dropped}
    return [e.id for e in fake.webhook_events if e.id not in dropped and (room is None or e.room.name == room)]


async def test_webhook_headers_token_and_protojson_body(hooked: FakeLiveKit, receiver: Receiver) -> None:
    hooked.register_worker("captions")
    hooked.add_room("r1", humans=["alice"], agents=["captions"])
    await hooked.wait_for(lambda: len(hooked.agent_participants("r1")) == 1)
    await hooked.wait_webhooks_idle()

    assert [e.id for e in receiver.events()] == _sent(hooked)
    assert [e.event for e in receiver.events()] == ["room_started", "participant_joined", "participant_joined"]
    for hit in receiver.hits:
        assert hit.status == 200
        assert hit.headers["Content-Type"] == "application/webhook+json"
        assert hit.headers["User-Agent"] == "LiveKit"
        token = hit.headers["Authorization"]
        assert not token.startswith("Bearer")
        claims = jwt.decode(token, SECRET, algorithms=["HS256"], issuer=KEY)
        assert claims["exp"] - claims["nbf"] == 300
        assert claims["sha256"] == base64.b64encode(hashlib.sha256(hit.body.encode()).digest()).decode()

    started, alice, agent = (json.loads(h.body) for h in receiver.hits)
    sid = hooked.room_sid("r1")
    assert started["event"] == "room_started" and started["id"].startswith("EV_")
    assert isinstance(started["createdAt"], str) and int(started["createdAt"]) > 0  # int64 as a string
    assert started["room"]["sid"] == sid and started["room"]["name"] == "r1"
    assert "numParticipants" not in started["room"]  # zero values are left out
    assert "participant" not in started
    assert alice["participant"]["identity"] == "alice" and "kind" not in alice["participant"]  # STANDARD is 0
    assert alice["participant"]["state"] == "ACTIVE" and alice["room"]["numParticipants"] == 1
    assert agent["participant"]["kind"] == "AGENT"
    assert agent["participant"]["attributes"] == {"lk.agent_name": "captions", "lk.agent.name": "captions"}
    assert agent["room"]["numParticipants"] == 1  # the agent is not counted
    # The body is exactly what the server emitted.
    assert receiver.events()[2] == hooked.webhook_events[2]

    delivery = hooked.webhook_deliveries[0]
    assert (delivery.url, delivery.event, delivery.room, delivery.status, delivery.attempt) == (
        receiver.url,
        "room_started",
        "r1",
        200,
        1,
    )
    assert delivery.id == started["id"] and delivery.body == receiver.hits[0].body
    assert delivery.headers["Authorization"] == receiver.hits[0].headers["Authorization"]


async def test_departures_arrive_with_their_reason_in_order(hooked: FakeLiveKit, receiver: Receiver) -> None:
    hooked.register_worker("captions")
    hooked.add_room("r1", humans=["alice", "bob"], agents=["captions"])
    await hooked.wait_for(lambda: len(hooked.agent_participants("r1")) == 1)
    agent = hooked.agent_leaves("r1", "captions")
    hooked.person_leaves("r1", "bob")
    hooked.close_room("r1")
    await hooked.wait_webhooks_idle()

    got = [
        (e.event, e.participant.identity, api.DisconnectReason.Name(e.participant.disconnect_reason))
        for e in receiver.events()
    ]
    assert got == [
        ("room_started", "", "UNKNOWN_REASON"),
        ("participant_joined", "alice", "UNKNOWN_REASON"),
        ("participant_joined", "bob", "UNKNOWN_REASON"),
        ("participant_joined", agent, "UNKNOWN_REASON"),
        ("participant_left", agent, "CONNECTION_TIMEOUT"),
        ("participant_left", "bob", "CLIENT_INITIATED"),
        ("participant_left", "alice", "ROOM_DELETED"),
        ("room_finished", "", "UNKNOWN_REASON"),
    ]
    assert json.loads(receiver.hits[4].body)["participant"]["disconnectReason"] == "CONNECTION_TIMEOUT"


async def test_retry_on_503_then_success_keeps_room_order(hooked: FakeLiveKit, receiver: Receiver) -> None:
    receiver.answers.extend([503, (429, "0"), 502])
    hooked.add_room("r1", humans=["alice", "bob"])
    hooked.add_room("r2", humans=[])
    await hooked.wait_webhooks_idle()

    for room in ("r1", "r2"):
        assert [e.id for e in receiver.events(room)] == _sent(hooked, room)
        # One request at a time per room, retries included: an event's attempts all come before the next event.
        ids = [d.id for d in hooked.webhook_deliveries if d.room == room]
        runs = [i for k, i in enumerate(ids) if k == 0 or ids[k - 1] != i]
        assert runs == _sent(hooked, room)
    failed = [d for d in hooked.webhook_deliveries if d.status != 200]
    assert sorted(d.status for d in failed) == [429, 502, 503]
    for d in failed:
        [again] = [n for n in hooked.webhook_deliveries if n.id == d.id and n.attempt == d.attempt + 1]
        assert again.body == d.body and again.headers == d.headers
    assert len(hooked.webhook_deliveries) == len(_sent(hooked)) + 3


async def test_no_retry_on_401_or_501_and_gives_up_after_five_attempts() -> None:
    wrong, wrong_runner = await _start_receiver(secret="not-the-server-secret")
    picky, picky_runner = await _start_receiver()
    picky.answers.extend([501])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_url = f"http://127.0.0.1:{sock.getsockname()[1]}/livekit/webhook"
    try:
        async with FakeLiveKit(KEY, SECRET) as fake:
            for url in (wrong.url, picky.url, closed_url):
                fake.add_webhook_url(url)
            fake.add_room("r1", humans=["alice"])
            await fake.wait_webhooks_idle()
            by_url = {
                url: [(d.event, d.status, d.attempt) for d in fake.webhook_deliveries if d.url == url]
                for url in (wrong.url, picky.url, closed_url)
            }
    finally:
        await wrong_runner.cleanup()
        await picky_runner.cleanup()

    # The signature does not verify with another secret: a final 401 each, and the queue goes on.
    assert by_url[wrong.url] == [("room_started", 401, 1), ("participant_joined", 401, 1)]
    assert [h.status for h in wrong.hits] == [401, 401]
    assert by_url[picky.url] == [("room_started", 501, 1), ("participant_joined", 200, 1)]
    assert by_url[closed_url] == [("room_started", 0, n) for n in range(1, 6)] + [
        ("participant_joined", 0, n) for n in range(1, 6)
    ]


async def test_duplicates_have_the_same_id_and_body(hooked: FakeLiveKit, receiver: Receiver) -> None:
    hooked.webhook_duplicates = True
    hooked.add_room("r1", humans=["alice"])
    await hooked.wait_webhooks_idle()

    ids = _sent(hooked)
    assert [e.id for e in receiver.events()] == [ids[0], ids[0], ids[1], ids[1]]
    assert receiver.hits[0].body == receiver.hits[1].body
    assert [(d.status, d.attempt) for d in hooked.webhook_deliveries] == [(200, 1), (200, 2)] * 2


async def test_drops_count_and_events_then_resume(hooked: FakeLiveKit, receiver: Receiver) -> None:
    hooked.drop_webhooks(1)
    hooked.add_room("r1", humans=["alice", "bob"])  # room_started is lost
    hooked.drop_webhooks(events=["participant_left"])
    hooked.person_leaves("r1", "alice")
    hooked.person_joins("r1", "carol")
    hooked.person_leaves("r1", "bob")
    hooked.resume_webhooks()
    hooked.person_leaves("r1", "carol")
    await hooked.wait_webhooks_idle()

    assert [e.event for e in hooked.webhook_dropped] == ["room_started", "participant_left", "participant_left"]
    got = [(e.event, e.participant.identity) for e in receiver.events()]
    assert got == [
        ("participant_joined", "alice"),
        ("participant_joined", "bob"),
        ("participant_joined", "carol"),
        ("participant_left", "carol"),
    ]
    assert [e.id for e in receiver.events()] == _sent(hooked)
    assert len(hooked.webhook_deliveries) == 4


async def test_stuck_receiver_blocks_only_its_room(hooked: FakeLiveKit, receiver: Receiver) -> None:
    receiver.holds["a"] = asyncio.Event()
    hooked.add_room("a", humans=["alice"])
    hooked.add_room("b", humans=["bob"])
    await hooked.wait_for(lambda: len([d for d in hooked.webhook_deliveries if d.room == "b"]) == 2)

    # a's first event is still in flight and its second has not been sent.
    assert [d.room for d in hooked.webhook_deliveries] == ["b", "b"]
    assert [e.room.name for e in receiver.events()] == ["b", "b"]
    with pytest.raises(TimeoutError):
        await hooked.wait_webhooks_idle(timeout=0.05)

    receiver.holds["a"].set()
    await hooked.wait_webhooks_idle()
    assert [e.id for e in receiver.events("a")] == _sent(hooked, "a")


async def test_each_url_gets_every_event_on_its_own_queue(receiver: Receiver) -> None:
    other, other_runner = await _start_receiver()
    other.holds["r1"] = asyncio.Event()
    try:
        async with FakeLiveKit(KEY, SECRET) as fake:
            fake.add_webhook_url(other.url)
            fake.add_webhook_url(receiver.url)
            fake.add_room("r1", humans=["alice"])
            await fake.wait_for(lambda: len(receiver.events()) == 2)
            assert other.events() == []  # stuck, and it does not hold the first URL back
            other.holds["r1"].set()
            await fake.wait_webhooks_idle()
            assert [e.id for e in other.events()] == [e.id for e in receiver.events()] == _sent(fake)
    finally:
        other.holds["r1"].set()
        await other_runner.cleanup()


async def test_no_url_sends_nothing(fake: FakeLiveKit) -> None:
    fake.add_room("r1")
    await fake.wait_webhooks_idle()
    assert [e.event for e in fake.webhook_events] == ["room_started", "participant_joined"]
    assert fake.webhook_deliveries == []


async def test_stop_cancels_a_sender_stuck_in_flight(receiver: Receiver) -> None:
    receiver.holds["r1"] = asyncio.Event()
    fake = FakeLiveKit(KEY, SECRET)
    await fake.start()
    fake.add_webhook_url(receiver.url)
    fake.add_room("r1")
    await fake.wait_for(lambda: any(t.get_name().startswith("webhook-sender") for t in _pending_tasks()))

    await fake.stop()

    assert not any(t.get_name().startswith("webhook-sender") for t in _pending_tasks())
    assert fake.webhook_deliveries == []


def _pending_tasks() -> list[asyncio.Task[object]]:
    current = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not current and not t.done()]


async def test_sign_webhook_for_negative_tests() -> None:
    verify = api.WebhookReceiver(api.TokenVerifier(KEY, SECRET))
    body = json.dumps({"event": "room_started", "id": "EV_x", "room": {"name": "r1"}})

    assert verify.receive(body, sign_webhook(body, KEY, SECRET)).room.name == "r1"
    with pytest.raises(jwt.ExpiredSignatureError):
        verify.receive(body, sign_webhook(body, KEY, SECRET, valid_for=timedelta(minutes=-5)))
    with pytest.raises(jwt.InvalidSignatureError):
        verify.receive(body, sign_webhook(body, KEY, "forged"))
    with pytest.raises(Exception, match="sha256 was not found"):
        verify.receive(body, sign_webhook(body, KEY, SECRET, sha256=""))
    with pytest.raises(Exception, match="hash mismatch"):
        verify.receive(body + " ", sign_webhook(body, KEY, SECRET))
    other = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    with pytest.raises(Exception, match="hash mismatch"):
        verify.receive(body, sign_webhook(body, KEY, SECRET, sha256=other))
