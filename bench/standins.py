"""The LiveKit and Slack stand-ins (tests/fakes) in a process of their own, as real servers are.

`StandIns.start()` spawns a process that serves both stand-ins on 127.0.0.1 and answers requests sent over a
pipe: open or close rooms, register workers, and hand over the arrivals the Slack stand-in recorded. An
arrival is one chat.postMessage, chat.update or response_url post, with the time it was answered on
`time.monotonic()`: a system-wide clock on Linux, so the bench process compares it with its own send times.
The stand-ins' CPU then no longer counts as the bot's, and their event loop no longer competes with the bot's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from aiohttp import web

from tests.fakes.livekit_server import FakeLiveKit
from tests.fakes.slack_server import FakeSlack

BOT_TOKEN = "xoxb-bench-token"
API_KEY, API_SECRET = "devkey", "secret"


@dataclass(frozen=True)
class Arrival:
    """One reply the Slack stand-in answered: kind is the Web API method, or "response" for a response_url."""

    kind: str
    key: str  # the channel of a Web API message, or the response_url's path
    at: float  # time.monotonic() when the stand-in had handled it


class TimedSlack(FakeSlack):
    """The Slack stand-in, also noting when each message and response_url post was answered."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arrivals: list[Arrival] = []

    async def _handle_api(self, request: web.Request) -> web.Response:
        response = await super()._handle_api(request)
        method = request.match_info["method"]
        if method in ("chat.postMessage", "chat.update") and isinstance(response.body, bytes):
            channel = str(json.loads(response.body).get("channel", ""))
            self.arrivals.append(Arrival(method, channel, time.monotonic()))
        return response

    async def _handle_response(self, request: web.Request) -> web.Response:
        response = await super()._handle_response(request)
        self.arrivals.append(Arrival("response", request.path, time.monotonic()))
        return response


async def _serve(conn: Connection, job_delay: float) -> None:
    async with (
        FakeLiveKit(API_KEY, API_SECRET, job_delay=job_delay, unavailable_delay=0.05) as livekit,
        TimedSlack(bot_token=BOT_TOKEN) as slack,
    ):
        conn.send({"livekit_url": livekit.url, "slack_api_url": slack.api_url, "slack_base_url": slack.base_url})
        while True:
            request = await asyncio.to_thread(conn.recv)
            if request is None:
                return
            op, args = request
            answer: Any = None
            if op == "register_worker":
                livekit.register_worker(args)
            elif op == "add_webhook_url":  # webhook.urls in OpenVidu's livekit.yaml
                livekit.add_webhook_url(args)
            elif op == "add_rooms":
                for name, agents in args:
                    livekit.add_room(name, agents=agents)
            elif op == "close_rooms":
                for name in args:
                    with contextlib.suppress(KeyError):
                        livekit.close_room(name)
            elif op == "take_arrivals":  # hand them over and forget them, with the records the stand-ins keep
                answer, slack.arrivals = slack.arrivals, []
                slack.web_calls.clear()
                slack.responses.clear()
                livekit.requests.clear()
            elif op == "count_arrivals":
                answer = len(slack.arrivals)
            elif op == "cpu":
                answer = time.process_time()
            else:
                answer = ValueError(f"unknown stand-in request {op!r}")
            conn.send(answer)


def _main(conn: Connection, job_delay: float) -> None:
    with conn:
        asyncio.run(_serve(conn, job_delay))


class StandIns:
    """A handle on the stand-ins' process. Use `with StandIns.start() as s:`; every call is a pipe round trip."""

    def __init__(self, process: multiprocessing.process.BaseProcess, conn: Connection, urls: dict[str, str]) -> None:
        self._process = process
        self._conn = conn
        self.livekit_url = urls["livekit_url"]
        self.slack_api_url = urls["slack_api_url"]
        self.slack_base_url = urls["slack_base_url"]
        self._responses = 0

    @classmethod
    def start(cls, *, job_delay: float = 0.02) -> StandIns:
        context = multiprocessing.get_context("spawn")
        conn, child = context.Pipe()
        process = context.Process(target=_main, args=(child, job_delay), daemon=True, name="bench-standins")
        process.start()
        child.close()
        if not conn.poll(30):
            process.terminate()
            raise RuntimeError("the stand-ins did not start within 30 s")
        return cls(process, conn, conn.recv())

    @property
    def pid(self) -> int:
        return int(self._process.pid or 0)

    def call(self, op: str, args: Any = None) -> Any:
        self._conn.send((op, args))
        answer = self._conn.recv()
        if isinstance(answer, Exception):
            raise answer
        return answer

    def new_response_url(self) -> str:
        self._responses += 1
        return f"{self.slack_base_url}/response/{self._responses}"

    def register_worker(self, agent: str) -> None:
        self.call("register_worker", agent)

    def add_webhook_url(self, url: str) -> None:
        """Send LiveKit's signed webhooks (rooms, participants) to `url` from now on."""
        self.call("add_webhook_url", url)

    def add_rooms(self, names: list[str], agents: list[str] | None = None) -> None:
        self.call("add_rooms", [(name, agents) for name in names])

    def close_rooms(self, names: list[str]) -> None:
        self.call("close_rooms", names)

    def take_arrivals(self) -> list[Arrival]:
        answer: list[Arrival] = self.call("take_arrivals")
        return answer

    def count_arrivals(self) -> int:
        return int(self.call("count_arrivals"))

    def cpu(self) -> float:
        """CPU seconds the stand-ins' process has used so far."""
        return float(self.call("cpu"))

    def close(self) -> None:
        with contextlib.suppress(OSError, EOFError):
            self._conn.send(None)
        self._process.join(5)
        if self._process.is_alive():  # only the process this handle started
            self._process.terminate()
            self._process.join(5)
        self._conn.close()

    def __enter__(self) -> StandIns:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
