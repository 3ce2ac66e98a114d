"""Tests for the fake LiveKit server, driven only by the real ``livekit.api`` client (and raw aiohttp
for the plain-text 401 cases, which the client cannot show)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import aiohttp
import jwt
import pytest
from livekit import api

from tests.fakes.livekit_server import FakeLiveKit

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
