"""A LiveKit server stand-in for the tests and the demo: Twirp over aiohttp, with real-server semantics.

The product talks to it with the real ``livekit.api.LiveKitAPI`` client. It speaks
``POST /twirp/livekit.<Service>/<Method>`` with protobuf (or JSON) bodies and implements
``AgentDispatchService`` (CreateDispatch, ListDispatch, DeleteDispatch) and ``RoomService``
(ListRooms, CreateRoom, DeleteRoom, ListParticipants).

Real-server rules it encodes, including the awkward ones:

* Auth runs before anything else. A bad ``Authorization`` header, an unknown API key, or a
  malformed, badly signed or expired token gets a **plain-text** HTTP 401, not Twirp JSON. So the
  Python client sees ``ServerError(code="unknown", status=401)``. A request with no token at all
  gets through and then fails the grant check.
* Each dispatch RPC and ListParticipants needs ``roomAdmin`` AND a token ``room`` equal to the
  request's room; there is no wildcard. ListRooms needs ``roomList``; CreateRoom and DeleteRoom
  need ``roomCreate``. A failed grant check is HTTP 401 ``unauthenticated`` "permissions denied",
  never 403.
* CreateDispatch auto-creates a missing room (empty_timeout 300 s, departure_timeout 20 s). The
  new room gets the automatic dispatch (``agent_name ""``), just as any room created without
  explicit agents does. Every CreateDispatch call adds a new dispatch: there is no de-duplication.
  The response always has empty ``state.jobs``.
* A job is launched only if a worker with exactly that agent name is registered at dispatch time.
  It then appears on the dispatch asynchronously, and an agent participant (kind AGENT) joins the
  room. With no worker nothing ever happens, even if a worker registers later.
* A worker that gets a job accepts it: the job snapshot says JS_RUNNING with the agent's identity
  at once, and is never updated afterwards, whether the agent joins, never joins or leaves later.
  Agent participants are kind AGENT with attributes ``lk.agent_name`` and ``lk.agent.name``; they
  are not counted in ``Room.num_participants``.
* ListDispatch and DeleteDispatch on a room that is not running answer 503
  ``unavailable`` "twirp error unknown: no response from servers", after a delay (about 3 s on the
  real server); ListParticipants answers 200 with an empty list. An unknown dispatch id gives an
  empty list from ListDispatch, but 404 ``not_found`` from DeleteDispatch.
* Rooms starting and finishing, participants joining and leaving are sent as signed webhooks, as the
  server sends them (see ``livekit_webhooks``), to every URL given to ``add_webhook_url``.
* Errors coming from the room node carry the ``twirp error unknown: `` message prefix.
  Auth errors do not.
* With ``close_idle_rooms`` (the demo's choice; the tests close rooms themselves), a room no person ever joined
  closes ``empty_timeout`` seconds after it started, and a room its last person left closes ``departure_timeout``
  seconds later; agents do not keep a room open.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar, cast

import jwt
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit.api.access_token import Claims, TokenVerifier
from livekit.protocol.agent import Job, JobState, JobStatus, JobType
from livekit.protocol.agent_dispatch import (
    AgentDispatch,
    AgentDispatchState,
    CreateAgentDispatchRequest,
    DeleteAgentDispatchRequest,
    ListAgentDispatchRequest,
    ListAgentDispatchResponse,
    RoomAgentDispatch,
)
from livekit.protocol.models import DisconnectReason, ParticipantInfo, ParticipantPermission, Room
from livekit.protocol.room import (
    CreateRoomRequest,
    DeleteRoomRequest,
    DeleteRoomResponse,
    ListParticipantsRequest,
    ListParticipantsResponse,
    ListRoomsRequest,
    ListRoomsResponse,
)
from livekit.protocol.webhook import WebhookEvent

from .livekit_webhooks import DEFAULT_RETRY_DELAYS, WebhookDelivery, WebhookSender, sign_webhook

__all__ = ["FakeLiveKit", "RecordedRequest", "WebhookDelivery", "sign_webhook"]

# Alphabet of protocol:utils/guid (base57: no 0, 1, I, O, l).
# reference: livekit-dispatch.md §1 (ID format)
BASE57 = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

# Server defaults for auto-created rooms. reference: livekit-dispatch.md §2.3 step 5
DEFAULT_EMPTY_TIMEOUT = 300
DEFAULT_DEPARTURE_TIMEOUT = 20
# reference: livekit-dispatch.md §2.3 step 4 (attributes), §3.3/§2.3 (room name length)
DEFAULT_MAX_ATTRIBUTES_SIZE = 64 * 1024
MAX_ROOM_NAME_LENGTH = 256
MAX_DEPLOYMENT_LENGTH = 64
# reference: livekit-webhooks.md §2 (attributes)
AGENT_NAME_ATTRIBUTE = "lk.agent_name"
SDK_AGENT_NAME_ATTRIBUTE = "lk.agent.name"

# The prefix the real server's error-detail wrapper puts on psrpc errors.
# reference: livekit-dispatch.md §2.6
_UNKNOWN_PREFIX = "twirp error unknown: "
_NO_RESPONSE = _UNKNOWN_PREFIX + "no response from servers"

_BEARER = "Bearer "

_HTTP_STATUS = {
    "unauthenticated": 401,
    "invalid_argument": 400,
    "malformed": 400,
    "not_found": 404,
    "bad_route": 404,
    "unavailable": 503,
    "internal": 500,
    "unknown": 500,
}


def _guid(prefix: str) -> str:
    return prefix + "".join(secrets.choice(BASE57) for _ in range(12))


_M = TypeVar("_M", bound=Message)


def _copy(msg: _M) -> _M:
    out = type(msg)()
    out.CopyFrom(msg)
    return out


@dataclass
class RecordedRequest:
    """One request as the fake received it.

    ``service`` is the short service name (``"AgentDispatchService"``, ``"RoomService"``), i.e. the
    URL's ``livekit.<Service>`` without the package. ``request`` is the parsed body (``None`` if
    the route is unknown or the body could not be parsed); it is parsed even when auth then
    rejects the call. ``claims`` is ``None`` when there was no valid token. ``status`` is the HTTP
    status of the answer (0 while the request is still in flight).
    """

    service: str
    method: str
    request: Message | None
    claims: Claims | None
    status: int


class _TwirpError(Exception):
    def __init__(self, code: str, msg: str, meta: dict[str, str] | None = None) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.meta = meta or {}


# reference: livekit-dispatch.md §2.1
class _PlainError(Exception):
    """A plain-text HTTP 401 from the auth middleware."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def _permission_denied() -> _TwirpError:
    # reference: livekit-dispatch.md §2.2 (401 unauthenticated, not 403)
    return _TwirpError("unauthenticated", "permissions denied")


@dataclass
class _Room:
    name: str
    sid: str
    created_ns: int
    empty_timeout: int
    departure_timeout: int
    max_participants: int = 0
    metadata: str = ""
    participants: dict[str, ParticipantInfo] = field(default_factory=dict)
    dispatches: dict[str, AgentDispatch] = field(default_factory=dict)
    # dispatch id -> identities of the agent participants its jobs brought in
    agents_by_dispatch: dict[str, list[str]] = field(default_factory=dict)
    # agent identity -> id of the job that brought it in
    job_by_agent: dict[str, str] = field(default_factory=dict)
    # a person (not an agent) has joined at least once: the empty timeout no longer applies
    first_joined: bool = False

    def to_proto(self) -> Room:
        return Room(
            sid=self.sid,
            name=self.name,
            empty_timeout=self.empty_timeout,
            departure_timeout=self.departure_timeout,
            max_participants=self.max_participants,
            creation_time=self.created_ns // 1_000_000_000,
            creation_time_ms=self.created_ns // 1_000_000,
            metadata=self.metadata,
            # Agents and egress are "dependent": not counted. reference: livekit-webhooks.md §2
            num_participants=sum(1 for p in self.participants.values() if not _is_dependent(p)),
        )


def _is_dependent(p: ParticipantInfo) -> bool:
    return p.kind in (ParticipantInfo.Kind.AGENT, ParticipantInfo.Kind.EGRESS)


def _participant(
    identity: str, kind: ParticipantInfo.Kind, attributes: dict[str, str] | None = None
) -> ParticipantInfo:
    now = time.time_ns()
    agent = kind == ParticipantInfo.Kind.AGENT
    return ParticipantInfo(
        sid=_guid("PA_"),
        identity=identity,
        state=ParticipantInfo.State.ACTIVE,
        joined_at=now // 1_000_000_000,
        joined_at_ms=now // 1_000_000,
        kind=kind,
        attributes=attributes or {},
        permission=ParticipantPermission(can_subscribe=True, can_publish=True, can_publish_data=True, agent=agent),
    )


@dataclass(frozen=True)
class _Worker:
    id: str
    agent_name: str
    joins: bool
    identity_format: str


_Handler = Callable[[Any, Claims | None], Awaitable[Message]]


class FakeLiveKit:
    """An in-process LiveKit server stand-in. Use as ``async with FakeLiveKit() as lk: ...``.

    Controls: ``delay`` (extra seconds before every request is handled),
    ``register_worker``/``unregister_worker``, ``add_room``/``close_room``, ``person_joins``/``person_leaves``,
    ``agent_leaves``; webhooks: ``add_webhook_url``, ``webhook_duplicates``, ``drop_webhooks``/``resume_webhooks``.
    Observation: ``requests``, ``calls``, ``room_names``, ``room_sid``, ``dispatches``, ``participants``,
    ``agent_participants``, ``job_status``, ``webhook_events``, ``webhook_dropped``, ``webhook_deliveries``,
    ``wait_for``, ``wait_webhooks_idle``.
    """

    def __init__(
        self,
        api_key: str = "devkey",
        api_secret: str = "secret",
        *,
        job_delay: float = 0.02,
        unavailable_delay: float = 0.05,
        max_metadata_size: int = 512 * 1024,
        auto_create: bool = True,
        webhook_retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        close_idle_rooms: bool = False,
    ) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.job_delay = job_delay
        self.unavailable_delay = unavailable_delay
        self.max_metadata_size = max_metadata_size
        self.max_attributes_size = DEFAULT_MAX_ATTRIBUTES_SIZE
        self.auto_create = auto_create
        self.close_idle_rooms = close_idle_rooms
        self.delay: float = 0.0
        self.requests: list[RecordedRequest] = []

        self._verifier = TokenVerifier(api_key, api_secret)
        self._rooms: dict[str, _Room] = {}
        # agent name -> workers; "" is a worker in automatic mode (registered with no name)
        self._workers: dict[str, list[_Worker]] = {}
        # job id -> its status inside the server once its agent left (the dispatch's snapshot never shows it)
        self._job_status: dict[str, JobStatus] = {}
        # Every event the server emitted, in order, whether or not it was sent (and to how many URLs).
        self.webhook_events: list[WebhookEvent] = []
        # Events lost on purpose (drop_webhooks): never sent to any URL.
        self.webhook_dropped: list[WebhookEvent] = []
        # When True every event is delivered twice (same id and body), as a retry after a timeout does.
        self.webhook_duplicates: bool = False
        self._dropping = False
        self._drop_count: int | None = None
        self._drop_events: frozenset[str] | None = None
        self._webhooks = WebhookSender(api_key, api_secret, retry_delays=webhook_retry_delays, changed=self._notify)
        self._timers: set[asyncio.TimerHandle] = set()
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._routes: dict[tuple[str, str], tuple[type[Message], _Handler]] = {
            ("AgentDispatchService", "CreateDispatch"): (CreateAgentDispatchRequest, self._create_dispatch),
            ("AgentDispatchService", "ListDispatch"): (ListAgentDispatchRequest, self._list_dispatch),
            ("AgentDispatchService", "DeleteDispatch"): (DeleteAgentDispatchRequest, self._delete_dispatch),
            ("RoomService", "ListRooms"): (ListRoomsRequest, self._list_rooms),
            ("RoomService", "CreateRoom"): (CreateRoomRequest, self._create_room_rpc),
            ("RoomService", "DeleteRoom"): (DeleteRoomRequest, self._delete_room),
            ("RoomService", "ListParticipants"): (ListParticipantsRequest, self._list_participants),
        }

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("FakeLiveKit already started")
        app = web.Application()
        app.router.add_route("*", "/twirp/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1, handler_cancellation=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        addresses = runner.addresses
        self._port = int(addresses[0][1])

    async def stop(self) -> None:
        await self._webhooks.stop()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeLiveKit not started")
        return f"http://127.0.0.1:{self._port}"

    # ------------------------------------------------------------------ controls

    def register_worker(self, agent_name: str, *, joins: bool = True, identity_format: str = "agent-{job_id}") -> None:
        """Register one worker under ``agent_name`` ("" = automatic mode, no name).

        The worker accepts every job it gets: the job snapshot says JS_RUNNING with the identity
        ``identity_format.format(job_id=..., agent_name=...)`` and the worker id. With ``joins=False`` its
        agent process then fails on start, so no participant ever appears (reference: livekit-dispatch.md §2.7).
        """
        worker = _Worker(_guid("AW_"), agent_name, joins, identity_format)
        self._workers.setdefault(agent_name, []).append(worker)
        self._notify()

    def unregister_worker(self, agent_name: str) -> None:
        """Remove one worker registered under ``agent_name`` (no-op if there is none)."""
        workers = self._workers.get(agent_name)
        if workers:
            workers.pop()
            if not workers:
                del self._workers[agent_name]
        self._notify()

    def add_room(
        self,
        name: str,
        *,
        humans: Sequence[str] = ("alice",),
        agents: Sequence[str] | None = None,
    ) -> None:
        """A running room, as if the people in ``humans`` joined it.

        A new room gets one dispatch per name in ``agents``, or only the automatic dispatch
        (agent_name "") when ``agents`` is None or empty. Jobs follow the worker rule. If the room
        already runs, only the humans join; ``agents`` is ignored, as the real server ignores a
        token's roomConfig for an existing room.
        """
        # reference: livekit-dispatch.md §2.7, §2.8
        room = self._rooms.get(name)
        if room is None:
            dispatches = [RoomAgentDispatch(agent_name=a) for a in agents] if agents else None
            room = self._new_room(name, agents=dispatches)
        for identity in humans:
            if identity not in room.participants:
                self._join(room, _participant(identity, ParticipantInfo.Kind.STANDARD))
        self._notify()

    def dispatch(self, room: str, agent_name: str) -> str:
        """What a CreateDispatch call does, without a client: the room is created if it is not running (with the
        automatic dispatch and the server's timeouts); returns the new dispatch's id."""
        r = self._rooms.get(room) or self._new_room(room, agents=None)
        dispatch = AgentDispatch(id=_guid("AD_"), agent_name=agent_name, room=room)
        self._add_dispatch(r, dispatch)
        return dispatch.id

    def person_joins(self, room: str, identity: str) -> None:
        """A person (kind STANDARD) joins the running ``room`` (KeyError if it is not running).

        The same identity already in the room is kicked first (DUPLICATE_IDENTITY), as the real server does.
        """
        r = self._rooms[room]
        if identity in r.participants:
            self._leave(r, identity, "DUPLICATE_IDENTITY")
        self._join(r, _participant(identity, ParticipantInfo.Kind.STANDARD))

    def person_leaves(self, room: str, identity: str, reason: str = "CLIENT_INITIATED") -> None:
        """The participant ``identity`` leaves with ``reason`` (a DisconnectReason name); KeyError if absent.

        The room stays: the real server closes it only after departure_timeout; call ``close_room`` for that.
        """
        r = self._rooms[room]
        if identity not in r.participants:
            raise KeyError(identity)
        self._leave(r, identity, reason)

    def agent_leaves(self, room: str, agent: str, reason: str = "CONNECTION_TIMEOUT") -> str:
        """The agent participant whose identity is ``agent``, or else the first whose ``lk.agent_name`` is
        ``agent``, leaves with ``reason``; returns its identity (KeyError if none).

        Its job fails inside the server (AGENT_LEFT_ROOM), but the dispatch stays and its job snapshot is
        unchanged (reference: livekit-dispatch.md §2.7). CONNECTION_TIMEOUT is how a crashed worker looks.
        """
        r = self._rooms[room]
        agents = [p for p in r.participants.values() if p.kind == ParticipantInfo.Kind.AGENT]
        found = next((p for p in agents if p.identity == agent), None) or next(
            (p for p in agents if p.attributes.get(AGENT_NAME_ATTRIBUTE) == agent), None
        )
        if found is None:
            raise KeyError(agent)
        self._leave(r, found.identity, reason)
        return found.identity

    def close_room(self, name: str, reason: str = "ROOM_DELETED") -> None:
        """End the room: every participant leaves with ``reason`` (agents too), then the room finishes and it
        and its dispatches vanish. Raises KeyError if there is no such room."""
        DisconnectReason.Value(reason)  # an unknown name fails before anything changes
        room = self._rooms[name]
        for identity in list(room.participants):
            self._leave(room, identity, reason)
        del self._rooms[name]
        self._emit("room_finished", room)
        self._notify()

    # ------------------------------------------------------------------ webhooks

    def add_webhook_url(self, url: str) -> None:
        """Send every later event to ``url`` too (``webhook.urls`` in livekit.yaml); each URL has its own queues."""
        self._webhooks.urls.append(url)

    def drop_webhooks(self, count: int | None = None, events: Collection[str] | None = None) -> None:
        """Silently lose the next ``count`` events (all while ``count`` is None), only those named in ``events``
        if given, for every URL: a full queue, an event too old, or a server restart."""
        self._dropping = count is None or count > 0
        self._drop_count = count
        self._drop_events = None if events is None else frozenset(events)

    def resume_webhooks(self) -> None:
        """Stop dropping events."""
        self._dropping = False

    @property
    def webhook_deliveries(self) -> list[WebhookDelivery]:
        """Every HTTP attempt so far, in the order they completed."""
        return self._webhooks.deliveries

    async def wait_webhooks_idle(self, timeout: float = 5.0) -> None:
        """Wait until every webhook queue is empty and nothing is in flight (TimeoutError after ``timeout``)."""
        await self.wait_for(lambda: self._webhooks.idle, timeout)

    def _drops(self, event: str) -> bool:
        if not self._dropping or (self._drop_events is not None and event not in self._drop_events):
            return False
        if self._drop_count is not None:
            self._drop_count -= 1
            self._dropping = self._drop_count > 0
        return True

    # ------------------------------------------------------------------ observation

    def room_names(self) -> list[str]:
        return list(self._rooms)

    def dispatches(self, room: str) -> list[AgentDispatch]:
        """Copies of the room's current dispatches ([] if the room is not running)."""
        r = self._rooms.get(room)
        return [] if r is None else [_copy(d) for d in r.dispatches.values()]

    def room_sid(self, room: str) -> str:
        """The sid of the running ``room`` (KeyError if it is not running)."""
        return self._rooms[room].sid

    def agent_participants(self, room: str) -> list[ParticipantInfo]:
        """Copies of the room's AGENT participants ([] if the room is not running)."""
        return [p for p in self.participants(room) if p.kind == ParticipantInfo.Kind.AGENT]

    def job_status(self, job_id: str) -> JobStatus | None:
        """The job's status inside the server: JS_FAILED once its agent left the room, JS_RUNNING while it is
        assigned, None if unknown. ListDispatch never shows this change."""
        return self._job_status.get(job_id)

    def participants(self, room: str) -> list[ParticipantInfo]:
        """Copies of the room's participants ([] if the room is not running)."""
        r = self._rooms.get(room)
        return [] if r is None else [_copy(p) for p in r.participants.values()]

    def calls(self, method: str) -> list[Message]:
        """Parsed request bodies of every request to ``method`` (e.g. "CreateDispatch"), in order.

        This includes requests that were then rejected, for example by auth.
        """
        return [r.request for r in self.requests if r.method == method and r.request is not None]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` is true; raise TimeoutError after ``timeout`` seconds.

        The predicate is checked again after every change to the fake's state: a request is
        received or answered, or a room, dispatch, job, participant or worker changes.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout} s")
            event = self._changed
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                if predicate():
                    return
                raise TimeoutError(f"condition not met within {timeout} s") from None

    # ------------------------------------------------------------------ internals: state

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _emit(self, event: str, room: _Room, participant: ParticipantInfo | None = None) -> None:
        # reference: livekit-webhooks.md §1 (WebhookEvent: id EV_..., created_at in unix seconds)
        ev = WebhookEvent(id=_guid("EV_"), event=event, created_at=int(time.time()), room=room.to_proto())
        if participant is not None:
            ev.participant.CopyFrom(participant)
        self.webhook_events.append(ev)
        if self._drops(event):
            self.webhook_dropped.append(ev)
        else:
            self._webhooks.send(ev, duplicate=self.webhook_duplicates)
        self._notify()

    def _join(self, room: _Room, participant: ParticipantInfo) -> None:
        room.participants[participant.identity] = participant
        room.first_joined = room.first_joined or not _is_dependent(participant)
        self._emit("participant_joined", room, participant)

    def _leave(self, room: _Room, identity: str, reason: str) -> ParticipantInfo:
        code = DisconnectReason.Value(reason)
        participant = room.participants.pop(identity)
        participant.state = ParticipantInfo.State.DISCONNECTED
        participant.disconnect_reason = cast(DisconnectReason, code)
        for identities in room.agents_by_dispatch.values():
            if identity in identities:
                identities.remove(identity)
        job_id = room.job_by_agent.pop(identity, None)
        if job_id is not None:
            # reference: livekit-webhooks.md §2 (TerminateJob AGENT_LEFT_ROOM marks the job failed, inside only)
            self._job_status[job_id] = JobStatus.JS_FAILED
        self._emit("participant_left", room, participant)
        if self.close_idle_rooms and not _is_dependent(participant) and self._nobody_in(room):
            # reference: livekit-dispatch.md §2.7 (Room.CloseIfEmpty ignores dependent participants)
            self._schedule(room.departure_timeout, self._close_if_idle, room.name, room.sid)
        return participant

    @staticmethod
    def _nobody_in(room: _Room) -> bool:
        return not any(not _is_dependent(p) for p in room.participants.values())

    def _close_if_idle(self, name: str, sid: str) -> None:
        room = self._rooms.get(name)
        if room is not None and room.sid == sid and self._nobody_in(room):
            self.close_room(name, "ROOM_CLOSED")

    def _new_room(
        self,
        name: str,
        *,
        agents: Sequence[RoomAgentDispatch] | None,
        empty_timeout: int = DEFAULT_EMPTY_TIMEOUT,
        departure_timeout: int = DEFAULT_DEPARTURE_TIMEOUT,
        max_participants: int = 0,
        metadata: str = "",
    ) -> _Room:
        room = _Room(
            name=name,
            sid=_guid("RM_"),
            created_ns=time.time_ns(),
            empty_timeout=empty_timeout,
            departure_timeout=departure_timeout,
            max_participants=max_participants,
            metadata=metadata,
        )
        self._rooms[name] = room
        if self.close_idle_rooms:
            self._schedule(empty_timeout, self._close_if_never_joined, name, room.sid)
        # reference: livekit-webhooks.md §1 (room_started once the room's dispatch server is up)
        self._emit("room_started", room)
        # No explicit agents: one automatic dispatch with an empty agent name.
        # reference: livekit-dispatch.md §2.7
        for spec in agents or [RoomAgentDispatch(agent_name="")]:
            self._add_dispatch(
                room,
                AgentDispatch(
                    id=_guid("AD_"),
                    agent_name=spec.agent_name,
                    room=name,
                    metadata=spec.metadata,
                    restart_policy=spec.restart_policy,
                    deployment=spec.deployment,
                    attributes=dict(spec.attributes),
                ),
            )
        self._notify()
        return room

    def _close_if_never_joined(self, name: str, sid: str) -> None:
        # reference: livekit-dispatch.md §2.7 (an auto-created room closes after empty_timeout unless a person joins)
        room = self._rooms.get(name)
        if room is not None and room.sid == sid and not room.first_joined:
            self.close_room(name, "ROOM_CLOSED")

    def _add_dispatch(self, room: _Room, dispatch: AgentDispatch) -> None:
        # reference: livekit-dispatch.md §2.3 step 8 (created_at in ns; job launched asynchronously)
        dispatch.state.CopyFrom(AgentDispatchState(created_at=time.time_ns()))
        room.dispatches[dispatch.id] = dispatch
        # Only a worker registered now gets the job; no retry later. reference: livekit-dispatch.md §2.7
        workers = self._workers.get(dispatch.agent_name)
        if workers:
            self._schedule(self.job_delay, self._assign_job, room.name, room.sid, dispatch.id, workers[0])
        self._notify()

    def _schedule(self, delay: float, callback: Callable[..., None], *args: Any) -> None:
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def run() -> None:
            self._timers.discard(handle)
            callback(*args)

        handle = loop.call_later(delay, run)
        self._timers.add(handle)

    def _assign_job(self, room_name: str, room_sid: str, dispatch_id: str, worker: _Worker) -> None:
        room = self._rooms.get(room_name)
        if room is None or room.sid != room_sid:
            return  # the room closed meanwhile
        dispatch = room.dispatches.get(dispatch_id)
        if dispatch is None:
            return  # deleted before the job was assigned
        job_id = _guid("AJ_")
        identity = worker.identity_format.format(job_id=job_id, agent_name=dispatch.agent_name)
        now = time.time_ns()
        job = Job(
            id=job_id,
            dispatch_id=dispatch_id,
            type=JobType.JT_ROOM,
            room=room.to_proto(),
            metadata=dispatch.metadata,
            agent_name=dispatch.agent_name,
            deployment=dispatch.deployment,
            attributes=dict(dispatch.attributes),
            state=JobState(
                # Accepted, not joined: the snapshot is never updated. reference: livekit-dispatch.md §2.7
                status=JobStatus.JS_RUNNING,
                started_at=now,
                updated_at=now,
                participant_identity=identity,
                worker_id=worker.id,
            ),
        )
        dispatch.state.jobs.append(job)
        self._job_status[job_id] = JobStatus.JS_RUNNING
        if worker.joins:
            # reference: livekit-webhooks.md §2 (kind AGENT, lk.agent_name from the server, lk.agent.name from the SDK)
            attributes = {AGENT_NAME_ATTRIBUTE: dispatch.agent_name, SDK_AGENT_NAME_ATTRIBUTE: dispatch.agent_name}
            participant = _participant(identity, ParticipantInfo.Kind.AGENT, attributes)
            room.agents_by_dispatch.setdefault(dispatch_id, []).append(identity)
            room.job_by_agent[identity] = job_id
            self._join(room, participant)
        self._notify()

    async def _unavailable(self) -> _TwirpError:
        # The psrpc call finds no node for the room; the real server retries for ~3 s.
        # reference: livekit-dispatch.md §2.4
        await asyncio.sleep(self.unavailable_delay)
        return _TwirpError("unavailable", _NO_RESPONSE)

    def _check_limits(self, metadata: str, attributes: dict[str, str], deployment: str) -> None:
        # reference: livekit-dispatch.md §2.3 steps 2-4
        if deployment and (
            len(deployment.encode()) > MAX_DEPLOYMENT_LENGTH
            or "_" in deployment
            or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in deployment)
        ):
            raise _TwirpError("invalid_argument", _UNKNOWN_PREFIX + "invalid deployment")
        if len(metadata.encode()) > self.max_metadata_size:
            raise _TwirpError("invalid_argument", _UNKNOWN_PREFIX + "metadata size exceeds limits")
        size = sum(len(k.encode()) + len(v.encode()) for k, v in attributes.items())
        if size > self.max_attributes_size:
            raise _TwirpError("invalid_argument", _UNKNOWN_PREFIX + "attribute size exceeds limits")

    # ------------------------------------------------------------------ internals: grants

    @staticmethod
    def _ensure_admin(claims: Claims | None, room: str) -> None:
        # reference: livekit-dispatch.md §2.2 (roomAdmin AND exact room match, no wildcard)
        video = claims.video if claims is not None else None
        if video is None or not video.room_admin or (video.room or "") != room:
            raise _permission_denied()

    @staticmethod
    def _ensure_list(claims: Claims | None) -> None:
        video = claims.video if claims is not None else None
        if video is None or not video.room_list:
            raise _permission_denied()

    @staticmethod
    def _ensure_create(claims: Claims | None) -> None:
        video = claims.video if claims is not None else None
        if video is None or not video.room_create:
            raise _permission_denied()

    # ------------------------------------------------------------------ internals: RPCs

    async def _create_dispatch(self, req: CreateAgentDispatchRequest, claims: Claims | None) -> AgentDispatch:
        self._ensure_admin(claims, req.room)
        self._check_limits(req.metadata, dict(req.attributes), req.deployment)
        room = self._rooms.get(req.room)
        if room is None:
            if not self.auto_create:
                raise await self._unavailable()
            # reference: livekit-dispatch.md §2.3 step 5 (room auto-created with server defaults)
            room = self._new_room(req.room, agents=None)
        dispatch = AgentDispatch(
            id=_guid("AD_"),
            agent_name=req.agent_name,
            room=req.room,
            metadata=req.metadata,
            restart_policy=req.restart_policy,
            deployment=req.deployment,
            attributes=dict(req.attributes),
        )
        self._add_dispatch(room, dispatch)
        return _copy(dispatch)  # jobs are still empty here

    async def _list_dispatch(self, req: ListAgentDispatchRequest, claims: Claims | None) -> ListAgentDispatchResponse:
        self._ensure_admin(claims, req.room)
        room = self._rooms.get(req.room)
        if room is None:
            raise await self._unavailable()
        # Unknown dispatch_id: empty list, not 404. reference: livekit-dispatch.md §2.4
        found = [_copy(d) for d in room.dispatches.values() if not req.dispatch_id or d.id == req.dispatch_id]
        return ListAgentDispatchResponse(agent_dispatches=found)

    async def _delete_dispatch(self, req: DeleteAgentDispatchRequest, claims: Claims | None) -> AgentDispatch:
        self._ensure_admin(claims, req.room)
        room = self._rooms.get(req.room)
        if room is None:
            raise await self._unavailable()
        # reference: livekit-dispatch.md §2.5
        dispatch = room.dispatches.pop(req.dispatch_id, None)
        if dispatch is None:
            raise _TwirpError("not_found", _UNKNOWN_PREFIX + "dispatch ID not found")
        # The real server removes the agents a moment later; here they go at once. reference: livekit-dispatch.md §2.5
        for identity in room.agents_by_dispatch.pop(req.dispatch_id, []):
            if identity in room.participants:
                self._leave(room, identity, "PARTICIPANT_REMOVED")
        self._notify()
        return dispatch

    async def _list_rooms(self, req: ListRoomsRequest, claims: Claims | None) -> ListRoomsResponse:
        self._ensure_list(claims)
        names = set(req.names)
        rooms = [r.to_proto() for r in self._rooms.values() if not names or r.name in names]
        return ListRoomsResponse(rooms=rooms)

    async def _create_room_rpc(self, req: CreateRoomRequest, claims: Claims | None) -> Room:
        self._ensure_create(claims)
        if len(req.name.encode()) > MAX_ROOM_NAME_LENGTH:
            raise _TwirpError("invalid_argument", _UNKNOWN_PREFIX + "room name length exceeds limits")
        for text in [req.metadata, *(a.metadata for a in req.agents)]:
            if len(text.encode()) > self.max_metadata_size:
                raise _TwirpError("invalid_argument", _UNKNOWN_PREFIX + "metadata size exceeds limits")
        existing = self._rooms.get(req.name)
        if existing is not None:
            # An existing room is returned unchanged; agents are ignored. reference: livekit-dispatch.md §3.3
            return existing.to_proto()
        room = self._new_room(
            req.name,
            agents=list(req.agents),
            empty_timeout=req.empty_timeout or DEFAULT_EMPTY_TIMEOUT,
            departure_timeout=req.departure_timeout or DEFAULT_DEPARTURE_TIMEOUT,
            max_participants=req.max_participants,
            metadata=req.metadata,
        )
        return room.to_proto()

    async def _delete_room(self, req: DeleteRoomRequest, claims: Claims | None) -> DeleteRoomResponse:
        self._ensure_create(claims)
        if req.room not in self._rooms:
            # reference: livekit-dispatch.md §3.3
            raise _TwirpError("not_found", _UNKNOWN_PREFIX + "requested room does not exist")
        self.close_room(req.room)
        return DeleteRoomResponse()

    async def _list_participants(self, req: ListParticipantsRequest, claims: Claims | None) -> ListParticipantsResponse:
        self._ensure_admin(claims, req.room)
        room = self._rooms.get(req.room)
        if room is None:
            # Read from the room store: an unknown room is an empty list. reference: livekit-dispatch.md §2.7
            return ListParticipantsResponse()
        return ListParticipantsResponse(participants=[_copy(p) for p in room.participants.values()])

    # ------------------------------------------------------------------ internals: HTTP

    def _authenticate(self, request: web.Request) -> Claims | None:
        # reference: livekit-dispatch.md §2.1 (APIKeyAuthMiddleware)
        header = request.headers.get("Authorization", "")
        if header:
            if not header.startswith(_BEARER):
                raise _PlainError("invalid authorization header. Must start with Bearer ")
            token = header[len(_BEARER) :]
        else:
            token = request.query.get("access_token", "")
        if not token:
            return None  # no token: the handler's grant check fails
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _PlainError("invalid authorization token") from None
        if unverified.get("iss") != self.api_key:
            raise _PlainError("invalid API key")
        try:
            return self._verifier.verify(token)
        except Exception as exc:
            raise _PlainError(f"invalid authorization token: {exc}") from None

    @staticmethod
    def _content_kind(request: web.Request) -> str | None:
        raw = request.headers.get("Content-Type", "")
        base = raw.split(";", 1)[0].strip().lower()
        if base == "application/protobuf":
            return "protobuf"
        if base == "application/json":
            return "json"
        return None

    @staticmethod
    def _parse(cls: type[Message], body: bytes, kind: str) -> Message:
        msg = cls()
        if kind == "json":
            json_format.Parse(body.decode(), msg, ignore_unknown_fields=True)
        else:
            msg.ParseFromString(body)
        return msg

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        full_service, _, method = path.removeprefix("/twirp/").partition("/")
        service = full_service.removeprefix("livekit.")
        record = RecordedRequest(service=service, method=method, request=None, claims=None, status=0)
        self.requests.append(record)
        self._notify()

        body = await request.read()
        route = self._routes.get((service, method)) if full_service.startswith("livekit.") else None
        kind = self._content_kind(request)
        parse_error = False
        if route is not None and kind is not None:
            try:
                record.request = self._parse(route[0], body, kind)
            except (DecodeError, json_format.ParseError, UnicodeDecodeError, ValueError):
                parse_error = True

        try:
            if self.delay > 0:
                await asyncio.sleep(self.delay)
            claims = self._authenticate(request)
            record.claims = claims
            invalid_route = {"twirp_invalid_route": f"{request.method} {path}"}
            if request.method != "POST":
                raise _TwirpError(
                    "bad_route",
                    f'unsupported method "{request.method}" (only POST is allowed)',
                    invalid_route,
                )
            if route is None:
                raise _TwirpError("bad_route", f'no handler for path "{path}"', invalid_route)
            if kind is None:
                content_type = request.headers.get("Content-Type", "")
                raise _TwirpError("bad_route", f'unexpected Content-Type: "{content_type}"', invalid_route)
            if parse_error or record.request is None:
                raise _TwirpError("malformed", f"the {kind} request could not be decoded")
            result = await route[1](record.request, claims)
            response = self._ok(result, kind)
        except _PlainError as err:
            response = web.Response(status=401, text=err.text, content_type="text/plain")
        except _TwirpError as err:
            response = web.Response(
                status=_HTTP_STATUS.get(err.code, 500),
                text=json.dumps({"code": err.code, "msg": err.msg, "meta": err.meta}),
                content_type="application/json",
            )
        record.status = response.status
        self._notify()
        return response

    @staticmethod
    def _ok(msg: Message, kind: str) -> web.Response:
        if kind == "json":
            text = json_format.MessageToJson(
                msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True, indent=None
            )
            return web.Response(status=200, text=text, content_type="application/json")
        return web.Response(status=200, body=msg.SerializeToString(), content_type="application/protobuf")
