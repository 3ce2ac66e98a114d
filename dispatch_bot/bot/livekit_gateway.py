"""The only module that speaks to LiveKit: livekit-api calls in, our small dataclasses and one error type out."""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

import aiohttp
from google.protobuf.json_format import ParseError
from google.protobuf.message import DecodeError
from livekit import api
from livekit.protocol.agent import JobStatus
from livekit.protocol.models import DisconnectReason, ParticipantInfo

from ..commands.ports import BackendError, DispatchInfo, ErrorKind, JobInfo, Participant, RoomEvent, RoomInfo
from ..commands.ports import JobStatus as JobStatusName

if TYPE_CHECKING:
    from aiohttp.connector import Connection

    from .observability import Metrics

T = TypeVar("T")
log = logging.getLogger(__name__)

# LiveKit's dev secret ("secret") is short; PyJWT would warn on every call. `dispatch-bot check` says so instead.
warnings.filterwarnings("ignore", message=".*HMAC key.*", category=UserWarning)

_JOB_STATUS: dict[int, JobStatusName] = {
    JobStatus.JS_PENDING: "pending",
    JobStatus.JS_RUNNING: "running",
    JobStatus.JS_SUCCESS: "success",
    JobStatus.JS_FAILED: "failed",
}
_TWIRP_PREFIX = "twirp error unknown: "


def _ns_to_datetime(ns: int) -> datetime | None:
    return datetime.fromtimestamp(ns / 1e9, UTC) if ns else None


def _dispatch(d: api.AgentDispatch) -> DispatchInfo:
    jobs = tuple(
        JobInfo(
            id=job.id,
            status=_JOB_STATUS.get(job.state.status, "cancelled"),
            participant_identity=job.state.participant_identity,
            error=job.state.error,
        )
        for job in d.state.jobs
    )
    return DispatchInfo(
        id=d.id,
        agent_name=d.agent_name,
        room=d.room,
        metadata=d.metadata,
        created_at=_ns_to_datetime(d.state.created_at),
        jobs=jobs,
    )


def _room(r: api.Room) -> RoomInfo:
    created = (
        datetime.fromtimestamp(r.creation_time_ms / 1000, UTC)
        if r.creation_time_ms
        else datetime.fromtimestamp(r.creation_time, UTC)
        if r.creation_time
        else None
    )
    return RoomInfo(
        name=r.name,
        created_at=created,
        num_participants=r.num_participants,
        empty_timeout=r.empty_timeout,
        sid=r.sid,
    )


# The attribute the server sets on every agent it dispatches, and the one livekit-agents >= 1.4 adds too.
_AGENT_NAME_ATTRIBUTES = ("lk.agent_name", "lk.agent.name")


def _participant(p: ParticipantInfo) -> Participant:
    kind = ParticipantInfo.Kind.Name(p.kind) if p.kind in ParticipantInfo.Kind.values() else "STANDARD"
    agent_name = next((p.attributes[k] for k in _AGENT_NAME_ATTRIBUTES if p.attributes.get(k)), "")
    joined_ms = p.joined_at_ms or p.joined_at * 1000
    reason = p.disconnect_reason
    return Participant(
        identity=p.identity,
        kind=kind,
        agent_name=agent_name if kind == "AGENT" else "",
        name=p.name,
        joined_at=datetime.fromtimestamp(joined_ms / 1000, UTC) if joined_ms else None,
        disconnect_reason=DisconnectReason.Name(reason) if reason and reason in DisconnectReason.values() else "",
    )


class WebhookRejected(Exception):
    """A webhook that did not verify (bad signature, other key, expired, body hash mismatch): answer 401."""


class WebhookIgnored(Exception):
    """A verified webhook the bot has no use for, or one that does not parse: answer 2xx or 4xx and log one line."""


# The Retry-After of the last answer this task received: livekit-api's error does not carry headers.
_RETRY_AFTER: ContextVar[float | None] = ContextVar("retry_after", default=None)


class _NotedResponse(aiohttp.ClientResponse):
    """An answer that notes its Retry-After for the task that asked (a trace config did this, at about a twentieth
    of the bot's CPU per dispatch: aiohttp then sends every request's signals)."""

    async def start(self, connection: Connection) -> aiohttp.ClientResponse:
        response = await super().start(connection)
        value = self.headers.get("Retry-After", "")
        _RETRY_AFTER.set(float(value) if value.strip().isdigit() else None)
        return response


# livekit-api's tokens last 6 hours; one is reused for 10 minutes, then signed again.
TOKEN_REUSE = 600.0
TOKEN_CACHE_SIZE = 1024  # grant sets kept (they name a room: one or two per room the bot speaks of)

SignHeader = Callable[[api.VideoGrants | None, api.SIPGrants | None], dict[str, str]]


class SignedHeaders:
    """livekit-api's `_auth_header`, signing one token per grant set and reusing it for `reuse` seconds.

    livekit-api signs a new JWT for every request; the same grants (the same room) get the same token instead.
    """

    def __init__(self, sign: SignHeader, *, reuse: float = TOKEN_REUSE, size: int = TOKEN_CACHE_SIZE) -> None:
        self._sign = sign
        self._reuse = reuse
        self._size = size
        self._signed: OrderedDict[str, tuple[float, dict[str, str]]] = OrderedDict()

    def __call__(self, grants: api.VideoGrants | None, sip: api.SIPGrants | None = None) -> dict[str, str]:
        key = f"{grants!r}{sip!r}"  # dataclasses: every field is in the repr
        now = time.monotonic()
        found = self._signed.get(key)
        if found is not None and now < found[0]:
            self._signed.move_to_end(key)
            return found[1]  # livekit-api copies the headers before adding its own
        header = self._sign(grants, sip)
        self._signed[key] = (now + self._reuse, header)
        self._signed.move_to_end(key)
        if len(self._signed) > self._size:
            self._signed.popitem(last=False)
        return header


def public_url(url: str) -> str:
    """The server URL without any credentials that may sit in its userinfo."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


class LiveKitGateway:
    """Typed calls to one LiveKit server; every failure becomes a BackendError with one clear sentence."""

    def __init__(self, url: str, api_key: str, api_secret: str, *, timeout: float = 10.0) -> None:
        self.url = public_url(url)
        self._server_url = url
        self._api_key = api_key
        self._api_secret = api_secret
        self._timeout = timeout
        self._api: api.LiveKitAPI | None = None
        self._session: aiohttp.ClientSession | None = None
        self.metrics: Metrics | None = None  # set by the runtime: each call's method, latency and error kind

    def _client(self) -> api.LiveKitAPI:
        # LiveKitAPI opens an aiohttp session, so it is made on first use inside the running loop.
        if self._api is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout), response_class=_NotedResponse
            )
            self._api = api.LiveKitAPI(self._server_url, self._api_key, self._api_secret, session=self._session)
            signed = SignedHeaders(self._api.room._auth_header)
            for service in (self._api.room, self._api.agent_dispatch):  # the services the bot calls
                setattr(service, "_auth_header", signed)  # noqa: B010  # an instance's method, replaced
        return self._api

    async def aclose(self) -> None:
        if self._api is not None:
            await self._api.aclose()
            self._api = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _room_listed(self, room: str) -> bool:
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._client().room.list_rooms(api.ListRoomsRequest(names=[room]))
        except (api.ServerError, aiohttp.ClientError, TimeoutError, DecodeError):
            return False
        return any(r.name == room for r in response.rooms)

    async def get_room(self, room: str) -> RoomInfo | None:
        response = await self._call(
            "ListRooms", lambda: self._client().room.list_rooms(api.ListRoomsRequest(names=[room])), room
        )
        return next((_room(r) for r in response.rooms if r.name == room), None)

    async def list_rooms(self) -> list[RoomInfo]:
        response = await self._call("ListRooms", lambda: self._client().room.list_rooms(api.ListRoomsRequest()), "")
        return sorted((_room(r) for r in response.rooms), key=lambda r: r.name)

    async def list_dispatches(self, room: str) -> list[DispatchInfo]:
        found = await self._call("ListDispatch", lambda: self._client().agent_dispatch.list_dispatch(room), room)
        return [_dispatch(d) for d in found]

    async def get_dispatch(self, dispatch_id: str, room: str) -> DispatchInfo | None:
        found = await self._call(  # livekit-api asks ListDispatch with the id
            "ListDispatch", lambda: self._client().agent_dispatch.get_dispatch(dispatch_id, room), room
        )
        return _dispatch(found) if found is not None else None

    async def create_dispatch(self, agent_name: str, room: str, metadata: str) -> DispatchInfo:
        request = api.CreateAgentDispatchRequest(agent_name=agent_name, room=room, metadata=metadata)
        return _dispatch(
            await self._call("CreateDispatch", lambda: self._client().agent_dispatch.create_dispatch(request), room)
        )

    async def delete_dispatch(self, dispatch_id: str, room: str) -> DispatchInfo:
        return _dispatch(
            await self._call(
                "DeleteDispatch", lambda: self._client().agent_dispatch.delete_dispatch(dispatch_id, room), room
            )
        )

    async def list_participants(self, room: str) -> list[Participant]:
        response = await self._call(
            "ListParticipants",
            lambda: self._client().room.list_participants(api.ListParticipantsRequest(room=room)),
            room,
        )
        return [_participant(p) for p in response.participants]

    def webhook_event(self, body: str, authorization: str) -> RoomEvent:
        """A webhook verified with livekit-api's WebhookReceiver against this server's key and secret."""
        receiver = api.WebhookReceiver(api.TokenVerifier(self._api_key, self._api_secret))
        try:
            event = receiver.receive(body, authorization)
        except (ParseError, DecodeError):  # signed by our key, yet not an event: nothing to act on
            raise WebhookIgnored("its body is not a LiveKit event") from None
        except Exception as exc:  # PyJWT's errors, and a bare Exception for a body whose hash does not match
            raise WebhookRejected(str(exc) if type(exc) is Exception else type(exc).__name__) from None
        if not event.event:
            raise WebhookIgnored("it names no event")
        participant = _participant(event.participant) if event.HasField("participant") else None
        return RoomEvent(
            id=event.id,
            event=event.event,
            room=event.room.name,
            room_sid=event.room.sid,
            participant=participant,
            created_at=datetime.fromtimestamp(event.created_at, UTC) if event.created_at else None,
        )

    def mint_join_token(self, *, room: str, identity: str, name: str, ttl: timedelta, agents: Sequence[str]) -> str:
        token = (
            api.AccessToken(self._api_key, self._api_secret)
            .with_identity(identity)
            .with_name(name)
            .with_ttl(ttl)
            .with_grants(
                api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True, can_publish_data=True)
            )
        )
        if agents:
            # Only agentName (and metadata) is set: an older server rejects the whole token over a field it lacks.
            token.with_room_config(api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=a) for a in agents]))
        return token.to_jwt()

    async def _call(self, method: str, call: Callable[[], Awaitable[T]], room: str) -> T:
        """`call` (livekit-api's for the Twirp `method`) with the gateway's time bound, retry and error sentences."""
        if self.metrics is None:
            return await self._request(call, room)
        started = time.perf_counter()
        kind = ""
        try:
            return await self._request(call, room)
        except BackendError as exc:
            kind = exc.kind
            raise
        finally:
            self.metrics.livekit_call_done(method, time.perf_counter() - started, kind)

    async def _request(self, call: Callable[[], Awaitable[T]], room: str) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        try:
            # livekit-api 1.2.2 passes timeout=None per request, which disables the session's timeout: bound it here.
            async with asyncio.timeout_at(deadline):
                try:
                    return await call()
                except api.ServerError as exc:
                    wait = self._retry_wait(exc)
                    if wait is None or loop.time() + wait >= deadline:
                        raise
                    # A 429, or a proxy's 503 that says when to come back: once, within this call's time budget.
                    log.info("LiveKit answered HTTP %d; trying again in %.1f s", exc.status, wait)
                    await asyncio.sleep(wait)
                    return await call()
        except api.ServerError as exc:
            raise await self._server_error(exc, room) from None
        except TimeoutError:
            raise BackendError(
                "timeout", f"The LiveKit server at {self.url} did not answer within {self._timeout:g} s."
            ) from None
        except aiohttp.ClientConnectorError:
            raise BackendError(
                "unreachable",
                f"Cannot reach the LiveKit server at {self.url}. Is it running, and is LIVEKIT_URL right?",
            ) from None
        except aiohttp.ClientError as exc:
            raise BackendError(
                "unreachable",
                f"The connection to the LiveKit server at {self.url} failed ({type(exc).__name__}).",
            ) from None
        except DecodeError:
            raise BackendError(
                "server",
                f"The server at {self.url} did not answer like LiveKit: is LIVEKIT_URL your LiveKit or "
                "OpenVidu server (its API port, not a web page in front of it)?",
            ) from None

    @staticmethod
    def _retry_wait(exc: api.ServerError) -> float | None:
        """Seconds to wait before the one retry a 429 (or a 503 with Retry-After) gets; None: no retry."""
        retry_after = _RETRY_AFTER.get()
        if exc.status == 429:
            return retry_after if retry_after is not None else 1.0
        if exc.status == 503 and exc.code != "unavailable" and retry_after is not None:
            return retry_after
        return None

    async def _server_error(self, exc: api.ServerError, room: str) -> BackendError:
        message = (exc.message or "").removeprefix(_TWIRP_PREFIX)[:200]
        status, code = exc.status, exc.code
        twirp = code != "unknown" or bool(message)  # LiveKit's own JSON error, not a proxy's page
        kind: ErrorKind
        if code == "unavailable" and room:
            # Only the server's own "no response from servers" for a room ListRooms does not show means not running.
            if await self._room_listed(room):
                return BackendError(
                    "server",
                    f"The LiveKit node holding room {room} did not answer (LiveKit: {message or 'unavailable'}); "
                    "try again in a moment.",
                )
            return BackendError("not_running", f"Room {room} is not running (LiveKit: no server holds it).")
        if not twirp and status >= 500:
            reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "error"
            if status == 501:
                return BackendError(
                    "server",
                    f"The server at {self.url} answered HTTP 501 ({reason}), not as LiveKit does: is LIVEKIT_URL your "
                    "LiveKit or OpenVidu server (its API port)?",
                )
            return BackendError(
                "server",
                f"The LiveKit server at {self.url}, or a proxy in front of it, failed with HTTP {status} ({reason}); "
                "try again shortly, and check the server if it goes on.",
            )
        if status == 429:
            return BackendError(
                "limit",
                f"The LiveKit server at {self.url}, or a proxy in front of it, is limiting the bot's requests "
                "(HTTP 429) and the one retry did not fit in the time allowed; try again in a minute.",
            )
        if status == 401 and code == "unknown":
            # The plain-text 401: the signature or key did not verify.
            kind, sentence = (
                "auth",
                (
                    "LiveKit rejected the bot's credentials: LIVEKIT_API_KEY or LIVEKIT_API_SECRET does not match "
                    "the server's."
                ),
            )
        elif code in ("unauthenticated", "permission_denied"):
            kind, sentence = (
                "permission",
                f"LiveKit denied permission{f' for room {room}' if room else ''}: the API key needs admin rights "
                "on that server.",
            )
        elif code == "unavailable" or status == 503:
            kind, sentence = "server", f"The LiveKit server at {self.url} is unavailable: {message or code}."
        elif code == "not_found":
            kind, sentence = (
                "not_found",
                f"LiveKit found no such thing in room {room}: {message or 'not found'}.",
            )
        elif status == 404 or code == "bad_route":
            kind, sentence = (
                "server",
                (
                    f"The server at {self.url} has no LiveKit API there (HTTP 404): is LIVEKIT_URL your LiveKit or "
                    "OpenVidu server?"
                ),
            )
        elif code in ("invalid_argument", "malformed", "out_of_range") or status == 400:
            kind, sentence = "invalid", f"LiveKit refused the request: {message or code}."
        elif code == "resource_exhausted" or status == 429:
            kind, sentence = "limit", f"LiveKit is over a limit and refused the request: {message or code}."
        else:
            kind, sentence = (
                "server",
                (f"The LiveKit server failed with HTTP {status} ({code}): {message or 'no message'}."),
            )
        return BackendError(kind, sentence)
