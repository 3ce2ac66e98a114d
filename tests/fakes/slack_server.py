"""An in-process fake Slack for tests: Web API, response_url and Socket Mode on one aiohttp server.

`FakeSlack` listens on 127.0.0.1 with an ephemeral port. Point `AsyncWebClient(base_url=fake.api_url)` at it,
hand out `fake.new_response_url()` as a slash command's response_url, and let slack_sdk's aiohttp
`SocketModeClient` (what bolt's `AsyncSocketModeHandler` uses) connect through `apps.connections.open`.
Everything the bot sends is recorded (`web_calls`, `responses`, `socket_acks`); the `wait_for_*` helpers are
event-driven (an `asyncio.Condition`), never polling.

`fail(method, Failure...)` makes one Web API method (or `RESPONSE_URL`, every response_url post) answer as a
failing Slack or a proxy in front of it does: a 5xx in text/plain or HTML, `{"ok": false}`, a 429 with
`Retry-After`, a connection reset, or no answer at all (until `release()` or stop). A refused connection is an
address where nothing listens: `refused_url`. `drop_sockets()` cuts the Socket Mode connections without a word.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import logging
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

from aiohttp import WSCloseCode, WSMsgType, web

log = logging.getLogger(__name__)

T = TypeVar("T")

TEAM_ID = "T123"
BOT_USER_ID = "UBOT"
BOT_ID = "B1"
APP_ID = "A123"

# Fields that Slack accepts as JSON strings inside form-encoded (or query) parameters.
_JSON_STRING_FIELDS = ("blocks", "attachments", "user_auth_blocks", "metadata")
# Methods an app-level token (xapp-...) may call.
_APP_TOKEN_METHODS = frozenset({"apps.connections.open", "auth.test"})


# `fail()` on this name makes every POST to a response_url fail.
RESPONSE_URL = "response_url"

FailureKind = Literal["http", "not_ok", "rate_limit", "reset", "stall"]


@dataclass
class Failure:
    """How one method fails: build it with the class methods below."""

    kind: FailureKind
    status: int = 200
    content_type: str = "application/json"
    body: str = ""
    retry_after: int = 0
    times: int | None = None  # how many calls fail before the method works again; None: until cleared

    @classmethod
    def plain(cls, status: int = 502, *, times: int | None = None) -> Failure:
        """A proxy's or load balancer's error page in text/plain."""
        return cls("http", status, "text/plain", f"{status} Bad Gateway\n", times=times)

    @classmethod
    def html(cls, status: int = 503, *, times: int | None = None) -> Failure:
        page = f"<html><head><title>{status} Service Unavailable</title></head><body><h1>{status}</h1></body></html>"
        return cls("http", status, "text/html", page, times=times)

    @classmethod
    def not_ok(cls, error: str = "fatal_error", *, times: int | None = None) -> Failure:
        return cls("not_ok", 200, body=json.dumps({"ok": False, "error": error}), times=times)

    @classmethod
    def rate_limited(cls, retry_after: int = 1, *, times: int | None = 1) -> Failure:
        body = json.dumps({"ok": False, "error": "ratelimited"})
        return cls("rate_limit", 429, body=body, retry_after=retry_after, times=times)

    @classmethod
    def reset(cls, *, times: int | None = None) -> Failure:
        """The connection is closed before any answer (what a restarting proxy does)."""
        return cls("reset", times=times)

    @classmethod
    def stall(cls, *, times: int | None = None) -> Failure:
        """No answer until `release()` (or stop): the client's timeout decides."""
        return cls("stall", times=times)


@dataclass
class WebCall:
    """One Web API call as the fake received it."""

    method: str
    params: dict[str, Any]
    token: str | None
    status: int = 200  # HTTP status the fake answered with (503 while `down`; 0: reset or stalled)
    received_at: float = 0.0  # time.monotonic() when it arrived


@dataclass
class ResponsePost:
    """One POST to a response_url."""

    url: str
    body: dict[str, Any]
    status: int = 200  # HTTP status the fake answered with (503 while `down`; 0: reset or stalled)
    received_at: float = 0.0


def _default_users() -> dict[str, dict[str, Any]]:
    return {
        "U123": {
            "id": "U123",
            "team_id": TEAM_ID,
            "name": "alice",
            "real_name": "Alice Example",
            "deleted": False,
            "is_bot": False,
            "tz": "Europe/Madrid",
            "tz_label": "Central European Time",
            "tz_offset": 3600,
            "profile": {"display_name": "alice", "real_name": "Alice Example"},
        }
    }


def _decode_json_fields(params: dict[str, Any]) -> None:
    """Turn JSON strings in blocks/attachments/... into objects, as Slack does with form parameters."""
    for name in _JSON_STRING_FIELDS:
        value = params.get(name)
        if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
            with contextlib.suppress(ValueError):
                params[name] = json.loads(value)


def _as_json_object(value: Any) -> Any:
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class FakeSlack:
    """A fake Slack server. Use as `async with FakeSlack() as fake:` or call start()/stop()."""

    def __init__(self, *, bot_token: str = "xoxb-test-token", app_token: str = "xapp-test-token") -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.web_calls: list[WebCall] = []
        self.responses: list[ResponsePost] = []
        self.socket_acks: list[dict[str, Any]] = []
        self.users: dict[str, dict[str, Any]] = _default_users()
        # User groups by id: {"id": "S…", "handle": "oncall", "name": …, "users": ["U…", …]}; see `add_usergroup`.
        self.usergroups: dict[str, dict[str, Any]] = {}
        self.down: bool = False
        self.not_in_channel: set[str] = set()
        # method -> JSON answered instead of the built-in behaviour (still recorded and token-checked).
        self.overrides: dict[str, dict[str, Any]] = {}
        # Total Socket Mode connections accepted so far (reconnects included).
        self.socket_connect_count: int = 0
        # method (or RESPONSE_URL) -> how it fails now; see `fail()`.
        self.failures: dict[str, Failure] = {}
        self._release = asyncio.Event()
        self._refused_port: int | None = None

        self._changed = asyncio.Condition()
        self._ts_counter = itertools.count(1)
        self._response_counter = itertools.count(1)
        self._sockets: list[web.WebSocketResponse] = []
        self._transports: dict[web.WebSocketResponse, asyncio.Transport] = {}  # to drop a connection
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("FakeSlack already started")
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/response/{n}", self._handle_response)
        app.router.add_get("/socket-mode", self._handle_socket)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        self._release = asyncio.Event()

    async def stop(self) -> None:
        self._release.set()
        for ws in list(self._sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"fake slack shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner = None
        self._port = None

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

    # ------------------------------------------------------------------ addresses

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeSlack is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    def new_response_url(self) -> str:
        return f"{self.base_url}/response/{next(self._response_counter)}"

    @property
    def refused_url(self) -> str:
        """An address on this host where nothing listens: connecting to it is refused."""
        if self._refused_port is None:
            with socket.socket() as probe:  # bound and closed at once, so the port is free and nobody accepts
                probe.bind(("127.0.0.1", 0))
                self._refused_port = int(probe.getsockname()[1])
        return f"http://127.0.0.1:{self._refused_port}/api/"

    def add_usergroup(self, group_id: str, handle: str, users: list[str]) -> None:
        self.usergroups[group_id] = {
            "id": group_id,
            "team_id": TEAM_ID,
            "is_usergroup": True,
            "name": handle.title(),
            "handle": handle,
            "date_delete": 0,
            "users": list(users),
            "user_count": len(users),
        }

    # ------------------------------------------------------------------ failures

    def fail(self, method: str, failure: Failure) -> None:
        """Make `method` (a Web API method, or RESPONSE_URL) fail as `failure` says."""
        self.failures[method] = failure

    def heal(self, method: str | None = None) -> None:
        """Stop failing `method` (every method when None), and let stalled calls finish."""
        if method is None:
            self.failures.clear()
        else:
            self.failures.pop(method, None)
        self.release()

    def release(self) -> None:
        self._release.set()
        self._release = asyncio.Event()

    def _take_failure(self, method: str) -> Failure | None:
        failure = self.failures.get(method)
        if failure is None:
            return None
        if failure.times is not None:
            failure.times -= 1
            if failure.times <= 0:
                del self.failures[method]
        return failure

    async def _failed_answer(self, request: web.Request, failure: Failure) -> web.Response | None:
        """The answer for a failing call, or None when the call is stalled and then released."""
        if failure.kind == "reset":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)  # never sent: the connection is gone
        if failure.kind == "stall":
            await self._release.wait()
            return None
        headers = {"Retry-After": str(failure.retry_after)} if failure.kind == "rate_limit" else None
        return web.Response(
            status=failure.status, body=failure.body.encode(), content_type=failure.content_type, headers=headers
        )

    # ------------------------------------------------------------------ queries and waits

    def calls(self, method: str) -> list[WebCall]:
        return [c for c in self.web_calls if c.method == method]

    async def wait_for_web_call(self, method: str, count: int = 1, timeout: float = 5.0) -> WebCall:
        def found() -> WebCall | None:
            matching = self.calls(method)
            return matching[count - 1] if len(matching) >= count else None

        def describe() -> str:
            got = [c.method for c in self.web_calls]
            return (
                f"timed out after {timeout}s waiting for call #{count} of {method}; "
                f"got {len(self.calls(method))}. Web API calls received: {got}"
            )

        return await self._wait_until(found, timeout, describe)

    async def wait_for_response(self, count: int = 1, timeout: float = 5.0, url: str | None = None) -> ResponsePost:
        def matching() -> list[ResponsePost]:
            return [r for r in self.responses if url is None or r.url == url]

        def found() -> ResponsePost | None:
            posts = matching()
            return posts[count - 1] if len(posts) >= count else None

        def describe() -> str:
            where = f" to {url}" if url else ""
            got = [(r.url, r.body) for r in self.responses]
            return (
                f"timed out after {timeout}s waiting for response_url post #{count}{where}; "
                f"got {len(matching())}. Posts received: {got}"
            )

        return await self._wait_until(found, timeout, describe)

    async def wait_socket_connected(self, timeout: float = 5.0, *, count: int = 1) -> None:
        """Wait until `count` Socket Mode connections were accepted in total and one is open (hello sent)."""

        def found() -> bool | None:
            return True if self.socket_connect_count >= count and self._open_sockets() else None

        def describe() -> str:
            return (
                f"timed out after {timeout}s waiting for Socket Mode connection #{count}; "
                f"connections so far: {self.socket_connect_count}, open: {len(self._open_sockets())}; "
                f"apps.connections.open calls: {len(self.calls('apps.connections.open'))}"
            )

        await self._wait_until(found, timeout, describe)

    async def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((a for a in self.socket_acks if a.get("envelope_id") == envelope_id), None)

        def describe() -> str:
            return (
                f"timed out after {timeout}s waiting for the ack of envelope {envelope_id}; "
                f"acks received: {self.socket_acks}"
            )

        return await self._wait_until(found, timeout, describe)

    async def _wait_until(self, predicate: Callable[[], T | None], timeout: float, describe: Callable[[], str]) -> T:
        result = predicate()
        if result is not None:
            return result
        try:
            async with asyncio.timeout(timeout), self._changed:
                while (result := predicate()) is None:
                    await self._changed.wait()
                return result
        except TimeoutError:
            raise TimeoutError(describe()) from None

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------------ Socket Mode

    def _open_sockets(self) -> list[web.WebSocketResponse]:
        return [ws for ws in self._sockets if not ws.closed]

    def _newest_socket(self) -> web.WebSocketResponse:
        open_sockets = self._open_sockets()
        if not open_sockets:
            raise RuntimeError("no open Socket Mode connection; await wait_socket_connected() first")
        return open_sockets[-1]

    async def send_envelope(self, type_: str, payload: dict[str, Any], *, accepts_response_payload: bool = True) -> str:
        """Send an envelope (slash_commands, interactive, events_api, ...) on the newest connection."""
        envelope_id = str(uuid.uuid4())
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id,
            "type": type_,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
        }
        if type_ == "events_api":
            envelope.update({"retry_attempt": 0, "retry_reason": ""})
        await self._newest_socket().send_json(envelope)
        return envelope_id

    async def send_disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask the client to reconnect, as Slack does now and then: it opens a new URL and connection."""
        await self._newest_socket().send_json({"type": "disconnect", "reason": reason, "debug_info": {"host": "fake"}})

    async def drop_sockets(self) -> int:
        """Drop every open Socket Mode connection without a close frame, as a network blip or a dead proxy does;
        returns how many were dropped."""
        dropped = 0
        for ws in self._open_sockets():
            transport = self._transports.get(ws)
            if transport is not None:
                transport.abort()
                dropped += 1
        return dropped

    async def _handle_socket(self, request: web.Request) -> web.WebSocketResponse:
        # autoping=True answers the client's PINGs ("sdk-ping-pong:<t>" and aiohttp heartbeats) with a PONG
        # echoing the payload; the client needs it to keep the session alive. It only happens while we read.
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        hello = {
            "type": "hello",
            "num_connections": len(self._open_sockets()) + 1,
            "debug_info": {
                "host": "fake",
                "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
                "build_number": 1,
                "approximate_connection_time": 18060,
            },
            "connection_info": {"app_id": APP_ID},
        }
        await ws.send_json(hello)
        if request.transport is not None:
            self._transports[ws] = request.transport
        self._sockets.append(ws)
        self.socket_connect_count += 1
        await self._notify()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_socket_text(msg.data)
                elif msg.type == WSMsgType.ERROR:
                    log.warning("fake slack: socket error %s", ws.exception())
        finally:
            self._sockets.remove(ws)
            self._transports.pop(ws, None)
            await self._notify()
        return ws

    async def _on_socket_text(self, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            log.warning("fake slack: non-JSON socket message %r", data)
            return
        if isinstance(message, dict) and "envelope_id" in message:
            self.socket_acks.append(message)
            await self._notify()
        else:
            log.info("fake slack: ignoring socket message %r", message)

    # ------------------------------------------------------------------ response_url

    async def _handle_response(self, request: web.Request) -> web.Response:
        url = f"{self.base_url}{request.path}"
        raw = await request.text()
        failure = None if self.down else self._take_failure(RESPONSE_URL)
        if failure is not None:
            post = ResponsePost(url=url, body={"raw": raw}, status=0, received_at=time.monotonic())
            with contextlib.suppress(ValueError):
                post.body = json.loads(raw)
            post.status = 0 if failure.kind in ("reset", "stall") else failure.status
            self.responses.append(post)
            await self._notify()
            answer = await self._failed_answer(request, failure)
            if answer is not None:
                return answer
            post.status = 200  # released from a stall: taken as it would have been
            return web.Response(text="ok")
        body: dict[str, Any]
        status = 503 if self.down else 200
        try:
            parsed = json.loads(raw)
        except ValueError:
            form = await request.post() if request.content_type == "application/x-www-form-urlencoded" else {}
            payload = form.get("payload") if form else None
            try:
                parsed = json.loads(payload) if isinstance(payload, str) else None
            except ValueError:
                parsed = None
        if isinstance(parsed, dict):
            body = parsed
        else:
            body = {"raw": raw}
            status = 503 if self.down else 400
        self.responses.append(ResponsePost(url=url, body=body, status=status, received_at=time.monotonic()))
        await self._notify()
        if status == 503:
            return web.Response(status=503, text="service_unavailable")
        if status == 400:
            return web.Response(status=400, text="invalid_payload")
        return web.Response(text="ok")

    # ------------------------------------------------------------------ Web API

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params, bad_body = await self._read_params(request)
        token: str | None = None
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            token = auth[7:].strip() or None
        body_token = params.pop("token", None)
        if token is None and isinstance(body_token, str) and body_token:
            token = body_token

        call = WebCall(method=method, params=params, token=token, received_at=time.monotonic())
        self.web_calls.append(call)
        failure = None if self.down else self._take_failure(method)
        if failure is not None:
            call.status = 0 if failure.kind in ("reset", "stall") else failure.status
            await self._notify()
            answer = await self._failed_answer(request, failure)
            if answer is not None:
                return answer
            call.status = 200  # released from a stall: it answers as it would have
        if self.down:
            call.status = 503
            result: dict[str, Any] = {"ok": False, "error": "service_unavailable"}
        elif bad_body:
            result = {"ok": False, "error": "invalid_json"}
        else:
            result = self._answer(method, params, token)
        await self._notify()
        return web.json_response(result, status=call.status)

    async def _read_params(self, request: web.Request) -> tuple[dict[str, Any], bool]:
        """Merge query, form and JSON body parameters. Returns (params, body_was_invalid_json)."""
        form_like: dict[str, Any] = dict(request.query)
        json_body: dict[str, Any] = {}
        bad_body = False
        if request.can_read_body:
            if request.content_type == "application/json":
                raw = await request.text()
                try:
                    data = json.loads(raw) if raw.strip() else {}
                except ValueError:
                    data, bad_body = {}, True
                if isinstance(data, dict):
                    json_body = data
                else:
                    bad_body = True
            else:
                form = await request.post()
                for key, value in form.items():
                    if isinstance(value, web.FileField):
                        form_like[key] = {
                            "filename": value.filename,
                            "content_type": value.content_type,
                            "size": len(value.file.read()),
                        }
                    else:
                        form_like[key] = value if isinstance(value, str) else bytes(value).decode()
        _decode_json_fields(form_like)
        return {**form_like, **json_body}, bad_body

    def _answer(self, method: str, params: dict[str, Any], token: str | None) -> dict[str, Any]:
        if not token:
            return {"ok": False, "error": "not_authed"}
        if token == self.app_token:
            if method not in _APP_TOKEN_METHODS:
                return {"ok": False, "error": "not_allowed_token_type"}
        elif token == self.bot_token:
            if method == "apps.connections.open":
                return {"ok": False, "error": "not_allowed_token_type"}
        else:
            return {"ok": False, "error": "invalid_auth"}

        if method in self.overrides:
            return copy.deepcopy(self.overrides[method])
        handler = self._methods().get(method)
        return handler(params) if handler is not None else {"ok": True}

    def _methods(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "users.info": self._users_info,
            "usergroups.list": self._usergroups_list,
            "usergroups.users.list": self._usergroups_users_list,
            "apps.connections.open": self._apps_connections_open,
            "views.publish": self._view,
            "views.open": self._view,
        }

    def _next_ts(self) -> str:
        micros = 1_700_000_000_000_000 + 100 * next(self._ts_counter)
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://fake-workspace.slack.com/",
            "team": "Fake Workspace",
            "user": "dispatch-bot",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _message(self, params: dict[str, Any], ts: str) -> dict[str, Any]:
        message: dict[str, Any] = {
            "type": "message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "app_id": APP_ID,
            "team": TEAM_ID,
            "ts": ts,
            "text": params.get("text") or "",
            "blocks": _as_json_object(params.get("blocks")) or [],
        }
        if params.get("attachments"):
            message["attachments"] = _as_json_object(params["attachments"])
        if params.get("thread_ts"):
            message["thread_ts"] = params["thread_ts"]
        return message

    def _chat_post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = params.get("channel")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if channel in self.not_in_channel:
            return {"ok": False, "error": "not_in_channel"}
        if not (params.get("text") or params.get("blocks") or params.get("attachments")):
            return {"ok": False, "error": "no_text"}
        ts = self._next_ts()
        return {"ok": True, "channel": channel, "ts": ts, "message": self._message(params, ts)}

    def _chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, ts = params.get("channel"), params.get("ts")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not ts:
            return {"ok": False, "error": "message_not_found"}
        return {
            "ok": True,
            "channel": channel,
            "ts": ts,
            "text": params.get("text") or "",
            "message": self._message(params, str(ts)),
        }

    def _chat_post_ephemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("channel"):
            return {"ok": False, "error": "channel_not_found"}
        if not params.get("user"):
            return {"ok": False, "error": "user_not_in_channel"}
        return {"ok": True, "message_ts": self._next_ts()}

    def _users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(params.get("user", "")))
        if user is None:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": copy.deepcopy(user)}

    def _usergroups_list(self, params: dict[str, Any]) -> dict[str, Any]:
        groups = [{k: v for k, v in g.items() if k != "users"} for g in self.usergroups.values()]
        return {"ok": True, "usergroups": copy.deepcopy(groups)}

    def _usergroups_users_list(self, params: dict[str, Any]) -> dict[str, Any]:
        group = self.usergroups.get(str(params.get("usergroup", "")))
        if group is None:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": list(group["users"])}

    def _view(self, params: dict[str, Any]) -> dict[str, Any]:
        """views.publish and views.open: the view back with the ids Slack gives it."""
        view = _as_json_object(params.get("view"))
        if not isinstance(view, dict) or "type" not in view:
            return {"ok": False, "error": "invalid_arguments"}
        return {"ok": True, "view": {**view, "id": f"V{uuid.uuid4().hex[:10].upper()}", "team_id": TEAM_ID}}

    def _apps_connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        ticket = uuid.uuid4()
        return {"ok": True, "url": f"ws://127.0.0.1:{self._port}/socket-mode?ticket={ticket}&app_id={APP_ID}"}
