"""The bot's external work per dispatch with the same libraries and no bot: the floor its CPU is measured against.

A plain asyncio program in a process of its own, serving signed slash commands on POST /slack/events with
aiohttp.web. Per command, the calls and writes the bot makes for `/dispatch captions <room>`, in its order:

1. the body read and its signature checked with slack_sdk's `SignatureVerifier` (401 if bad), the form parsed;
2. a received record INSERTed and committed (aiosqlite; WAL, synchronous=FULL, busy_timeout), then the ack:
   200 with an empty body; the rest runs in a task, at most `concurrency` at once (the bot's slots);
3. in the slot: ListRooms(names=[room]); ListParticipants and ListDispatch at the same time (the look);
   CreateDispatch; one transaction: the audit row, the watch, the received record deleted; chat.postMessage;
   an UPDATE of the watch with the message's ts (its own commit);
4. after the slot, a follow-up task: ListParticipants after one `followup_interval`, then every interval until a
   participant of kind AGENT that was not there at the look appears; one transaction: an UPDATE of the watch
   (seen) and an INSERT of the follow-up's audit row; and chat.update of the message.

LiveKit through livekit-api's `LiveKitAPI`, Slack through slack_sdk's `AsyncWebClient`, one HTTP session each.
No policy, catalog, rendering, logging, metrics or retries: what is left of the bot's CPU is the bot's own.
`MinimalBot` starts the process and reports its URL, pid and failures; the bench drives it like the bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import socket
import time
import warnings
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import parse_qs

from bench.standins import API_KEY, API_SECRET, BOT_TOKEN

FOLLOWUP_TIMEOUT = 10.0  # the bench's bot config: livekit.followup_timeout

TABLES = (
    "CREATE TABLE IF NOT EXISTS received (id INTEGER PRIMARY KEY, at REAL NOT NULL, channel TEXT NOT NULL, "
    "text TEXT NOT NULL, response_url TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, at REAL NOT NULL, channel TEXT NOT NULL, "
    "room TEXT NOT NULL, action TEXT NOT NULL, dispatch_id TEXT NOT NULL, detail TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS watches (dispatch_id TEXT PRIMARY KEY, room TEXT NOT NULL, channel TEXT NOT NULL, "
    "started_at REAL NOT NULL, message_ts TEXT NOT NULL DEFAULT '', seen TEXT NOT NULL DEFAULT '')",
)
Statement = tuple[str, tuple[Any, ...]]


async def serve(
    conn: Connection,
    livekit_url: str,
    slack_api_url: str,
    db_path: str,
    signing_secret: str,
    agent: str,
    concurrency: int,
    followup_interval: float,
) -> None:
    import aiohttp
    import aiosqlite
    from aiohttp import web
    from livekit import api
    from slack_sdk.signature import SignatureVerifier
    from slack_sdk.web.async_client import AsyncWebClient

    # The stand-in's dev secret is short; PyJWT would warn on every token (the bot silences it the same way).
    warnings.filterwarnings("ignore", message=".*HMAC key.*", category=UserWarning)
    verifier = SignatureVerifier(signing_secret)
    lk = api.LiveKitAPI(livekit_url, API_KEY, API_SECRET)
    slack_session = aiohttp.ClientSession()
    slack = AsyncWebClient(token=BOT_TOKEN, base_url=slack_api_url, session=slack_session)
    db = await aiosqlite.connect(db_path, isolation_level=None)
    for pragma in ("journal_mode = WAL", "synchronous = FULL", "busy_timeout = 5000"):
        await db.execute(f"PRAGMA {pragma}")
    for table in TABLES:
        await db.execute(table)
    writing = asyncio.Lock()  # one connection: a transaction's statements must not interleave with another's
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    failures: list[str] = []
    agent_kind = api.ParticipantInfo.Kind.AGENT

    async def commit(*statements: Statement) -> int:
        """Run the statements in one transaction (one statement: autocommit); the last one's row id."""
        async with writing:
            if len(statements) == 1:
                return (await db.execute(*statements[0])).lastrowid or 0
            last = 0
            await db.execute("BEGIN")
            try:
                for statement in statements:
                    last = (await db.execute(*statement)).lastrowid or 0
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            return last

    def spawn(work: Any) -> None:
        task = asyncio.create_task(work)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def followup(channel: str, room: str, dispatch_id: str, ts: str, before: set[str]) -> None:
        try:
            started = time.monotonic()
            await asyncio.sleep(followup_interval)  # as the bot: the first look one interval after the reply
            while True:
                listed = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
                joined = next(
                    (p for p in listed.participants if p.kind == agent_kind and p.identity not in before), None
                )
                if joined is not None:
                    break
                if time.monotonic() - started >= FOLLOWUP_TIMEOUT:
                    raise TimeoutError(f"no agent joined {room} within {FOLLOWUP_TIMEOUT:g} s")
                await asyncio.sleep(followup_interval)
            detail = f"agent joined as {joined.identity}"
            await commit(  # as the bot: the watch marked seen and the follow-up's row in one transaction
                ("UPDATE watches SET seen = ? WHERE dispatch_id = ?", (joined.identity, dispatch_id)),
                (
                    "INSERT INTO audit (at, channel, room, action, dispatch_id, detail) VALUES (?, ?, ?, ?, ?, ?)",
                    (time.time(), channel, room, "followup", dispatch_id, detail),
                ),
            )
            await slack.chat_update(channel=channel, ts=ts, text=f"Dispatched {agent} to {room}: {detail}.")
        except Exception as exc:  # reported back, not raised: the bench counts it as an error
            failures.append(f"follow-up: {type(exc).__name__}: {exc}")

    async def command(received_id: int, channel: str, room: str) -> None:
        try:
            async with slots:
                await lk.room.list_rooms(api.ListRoomsRequest(names=[room]))
                listed, _ = await asyncio.gather(
                    lk.room.list_participants(api.ListParticipantsRequest(room=room)),
                    lk.agent_dispatch.list_dispatch(room),
                )
                before = {p.identity for p in listed.participants}
                created = await lk.agent_dispatch.create_dispatch(
                    api.CreateAgentDispatchRequest(agent_name=agent, room=room)
                )
                now = time.time()
                await commit(
                    (
                        "INSERT INTO audit (at, channel, room, action, dispatch_id, detail) VALUES (?, ?, ?, ?, ?, ?)",
                        (now, channel, room, "dispatch", created.id, "dispatched"),
                    ),
                    (
                        "INSERT INTO watches (dispatch_id, room, channel, started_at) VALUES (?, ?, ?, ?)",
                        (created.id, room, channel, now),
                    ),
                    ("DELETE FROM received WHERE id = ?", (received_id,)),
                )
                posted = await slack.chat_postMessage(channel=channel, text=f"Dispatched {agent} to {room}.")
                ts = str(posted["ts"])
                await commit(("UPDATE watches SET message_ts = ? WHERE dispatch_id = ?", (ts, created.id)))
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
            return
        spawn(followup(channel, room, created.id, ts, before))

    async def slack_events(request: web.Request) -> web.Response:
        body = (await request.read()).decode()
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        if not verifier.is_valid(body=body, timestamp=timestamp, signature=signature):
            return web.Response(status=401)
        form = parse_qs(body)
        words = form.get("text", [""])[0].split()
        channel = form.get("channel_id", [""])[0]
        if len(words) != 2 or words[0] != "captions" or not channel:
            failures.append(f"not a dispatch command: {' '.join(words)!r}")
            return web.Response(status=400)
        received_id = await commit(
            (
                "INSERT INTO received (at, channel, text, response_url) VALUES (?, ?, ?, ?)",
                (time.time(), channel, form["text"][0], form.get("response_url", [""])[0]),
            )
        )
        spawn(command(received_id, channel, words[1]))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/slack/events", slack_events)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    conn.send(f"http://127.0.0.1:{sock.getsockname()[1]}")
    try:
        while (request := await asyncio.to_thread(conn.recv)) is not None:
            if request == "failures":  # hand them over and forget them
                conn.send({"failures": failures[:5], "failed": len(failures)})
                failures.clear()
    finally:
        await runner.cleanup()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await db.close()
        await lk.aclose()
        await slack_session.close()


def _main(conn: Connection, *args: Any) -> None:
    with conn:
        asyncio.run(serve(conn, *args))


class MinimalBot:
    """A handle on the minimal bot's process: its URL, its pid (for its CPU) and the failures it saw."""

    def __init__(
        self,
        livekit_url: str,
        slack_api_url: str,
        db_path: str,
        *,
        signing_secret: str,
        agent: str,
        concurrency: int,
        followup_interval: float,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        args = (child, livekit_url, slack_api_url, db_path, signing_secret, agent, concurrency, followup_interval)
        self.process = context.Process(target=_main, args=args, daemon=True, name="bench-minimal")
        self.process.start()
        child.close()
        if not self._conn.poll(30):
            self.close()
            raise RuntimeError("the minimal bot did not start within 30 s")
        self.url: str = self._conn.recv()

    @property
    def pid(self) -> int:
        return int(self.process.pid or 0)

    def take_failures(self) -> dict[str, Any]:
        """{"failures": the first few, "failed": how many} since the last call."""
        self._conn.send("failures")
        answer: dict[str, Any] = self._conn.recv()
        return answer

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send(None)
        self.process.join(10)
        if self.process.is_alive():  # only the process this handle started
            self.process.terminate()
            self.process.join(5)
        self._conn.close()
