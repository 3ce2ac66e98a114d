"""Agent supervision's edges: webhooks and polls name a room, `reconcile` reads the room and acts on the decision.

Level-triggered, as Kubernetes controllers are: an event only says which room to look at; the room's participants
(ListRooms + ListParticipants) are the truth; `commands.supervision.decide` says what each watch becomes. What the
bot does (an alert, a --keep attempt, a rule's dispatch) is recorded in the database and the audit log before
anyone is told. Polling every `watch.poll_interval` catches whatever webhooks missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Protocol

from ..commands import messages
from ..commands.context import KeyedLocks
from ..commands.dispatch import refresh_button
from ..commands.ports import (
    Actor,
    AuditError,
    AuditRecord,
    BackendError,
    DispatchRule,
    RoomEvent,
    RoomInfo,
    WatchRecord,
)
from ..commands.presence import reason_words
from ..commands.reply import Button, Outcome, Reply, Text
from ..commands.rules import rule_actor_id
from ..commands.supervision import Decision, Departure, RoomView, WatchPolicy, decide, next_wakeup
from .audit_store import WatchStore

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger(__name__)

WATCH_ACTOR = Actor(source="bot", user_id="dispatch-bot", user_name="dispatch-bot watch")
DEPARTURE_MEMORY = 120.0  # seconds a participant_left hint is kept for the next look at its room
RECENT_EVENT_IDS = 4096  # webhook ids remembered in memory (the database remembers more)
WORKERS = 4  # rooms reconciled at once
LEAVING_EVENTS = ("participant_left", "participant_connection_aborted")
ROOM_EVENTS = ("room_started", "room_finished", "participant_joined", *LEAVING_EVENTS)
PARTICIPANT_EVENTS = ("participant_joined", *LEAVING_EVENTS)
WEBHOOKS_LATELY = 300.0  # seconds since the last verified webhook during which webhooks count as configured


class AlertPoster(Protocol):
    """Where supervision's messages go: a channel, under a thread when there is one (the Slack edge)."""

    async def post(self, channel: str, thread_ts: str, reply: Reply) -> str:
        """Post; returns the message's ts, or "" when it could not be posted (already logged)."""
        ...

    async def update(self, channel: str, ts: str, reply: Reply) -> None: ...


class Supervisor:
    """Watches every agent the bot sends while its room runs; also the commands' WatchRegistry and RoomSignals."""

    def __init__(
        self,
        runtime: Runtime,
        store: WatchStore,
        policy: WatchPolicy,
        *,
        poll_interval: float,
        rules: Sequence[DispatchRule] = (),
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.policy = policy
        self.poll_interval = poll_interval
        self.rules = tuple(rules)
        self.poster: AlertPoster | None = None
        self.polls = 0  # completed polls, for whoever waits on one
        self._polled = asyncio.Condition()
        self._running = False
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._events: asyncio.Queue[RoomEvent] = asyncio.Queue()
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._departures: dict[str, dict[str, Departure]] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._locks = KeyedLocks()
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._served: set[tuple[str, str]] = set()  # (room sid, rule) known served, to skip the database
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._pending = 0  # webhooks, room looks and rule dispatches not finished yet
        self._webhook_at: float | None = None  # time.monotonic() of the last verified webhook

    # --- WatchRegistry and RoomSignals (what the commands use) ---------------------------------------------

    async def watch(self, record: WatchRecord) -> None:
        started = time.monotonic()
        stored = await self.store.add(record)
        self.runtime.metrics.step_done("watch", time.monotonic() - started)
        self._schedule(stored)

    def watched(self, records: Sequence[WatchRecord]) -> None:
        for record in records:
            self._schedule(record)

    async def close(self, room: str, dispatch_ids: Sequence[str], reason: str) -> None:
        await self.store.close(room, list(dispatch_ids), reason)

    async def open_watch_count(self) -> int:
        """How many watches are open now (the metrics' gauge)."""
        return len(await self.store.open_watches())

    async def history(self, room: str) -> Mapping[str, WatchRecord]:
        return await self.store.history(room)

    async def seen(self, room: str, dispatch_id: str, identity: str) -> None:
        self.seen_written(await self.store.mark_seen(room, dispatch_id, identity, time.time()))

    def seen_written(self, watch_ids: Sequence[int]) -> None:
        for watch_id in watch_ids:
            timer = self._timers.pop(watch_id, None)  # its follow-up deadline needs no look now
            if timer is not None:
                timer.cancel()

    async def wait_change(self, room: str, timeout: float) -> None:
        event = self._changed.setdefault(room, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    def events_flowing(self) -> bool:
        return self._webhook_at is not None and time.monotonic() - self._webhook_at < WEBHOOKS_LATELY

    async def set_message(self, room: str, dispatch_id: str, channel_id: str, ts: str) -> None:
        """The message a dispatch was announced in: alerts about its agent go in its thread."""
        try:
            await self.store.set_message(room, dispatch_id, channel_id, ts)
        except AuditError as exc:
            log.warning("watch: %s", exc)

    # --- inputs ------------------------------------------------------------------------------------------

    def receive(self, event: RoomEvent) -> None:
        """A verified webhook: handled after the HTTP answer (the server's queue must not wait on us)."""
        self._webhook_at = time.monotonic()
        self._begin()
        self._events.put_nowait(event)

    def touch(self, room: str) -> None:
        """Look at this room soon (once, however many times it is touched before the look)."""
        if self._running and room not in self._queued:
            self._begin()
            self._queued.add(room)
            self._queue.put_nowait(room)

    def _begin(self) -> None:
        self._pending += 1
        self._idle.clear()

    def _end(self) -> None:
        self._pending -= 1
        if not self._pending:
            self._idle.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Poll now (reconciling whatever happened while the bot was down), then every poll_interval, until stop."""
        self._running = True
        workers = [asyncio.create_task(self._work()) for _ in range(WORKERS)]
        workers.append(asyncio.create_task(self._consume_events()))
        try:
            while not stop.is_set():
                await self.poll_once()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.poll_interval)
        finally:
            self._running = False
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=5.0)

    async def poll_once(self) -> None:
        """One ListRooms, then one ListParticipants per running room that has an open watch."""
        try:
            rooms = await self.runtime.gateway.list_rooms()
            watched = await self.store.watched_rooms()
        except (BackendError, AuditError) as exc:
            log.warning("watch: the poll could not run: %s", exc)
            return
        by_name = {r.name: r for r in rooms}
        if self.rules:
            await self._serve_rules(rooms)
        for room in watched:
            info = by_name.get(room)
            if info is None:
                await self._reconcile(room, RoomView(running=False))
                continue
            try:
                participants = await self.runtime.gateway.list_participants(room)
            except BackendError as exc:
                log.warning("watch: could not read the participants of %s: %s", room, exc)
                continue
            await self._reconcile(room, RoomView(True, info.sid, tuple(participants), polled=True))
        async with self._polled:
            self.polls += 1
            self._polled.notify_all()

    # --- the loop's parts --------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            room = await self._queue.get()
            self._queued.discard(room)
            try:
                await self._reconcile(room)
            finally:
                self._end()

    async def _consume_events(self) -> None:
        while True:
            event = await self._events.get()
            try:
                await self._on_event(event)
            except (AuditError, BackendError) as exc:
                log.warning("watch: webhook %s for %s: %s", event.event, event.room, exc)
            finally:
                self._end()

    async def _on_event(self, event: RoomEvent) -> None:
        if event.event in PARTICIPANT_EVENTS and event.participant is not None and not event.participant.is_agent:
            return  # a person coming or going changes no watch; agents' events, timers and polls do
        if event.id:
            if event.id in self._recent:
                return
            self._recent[event.id] = None
            if len(self._recent) > RECENT_EVENT_IDS:
                self._recent.popitem(last=False)
            if not await self.store.first_delivery(event.id, time.time()):
                return  # handled before a restart
        if event.event not in ROOM_EVENTS or not event.room:
            log.debug("webhook %s ignored: supervision has no use for it", event.event)
            return
        agent = event.participant if event.participant is not None and event.participant.is_agent else None
        if event.event in LEAVING_EVENTS and agent is not None:
            hints = self._departures.setdefault(event.room, {})
            reason = agent.disconnect_reason or "UNKNOWN_REASON"
            hints[agent.identity] = Departure(agent.identity, reason, time.time(), agent.agent_name)
        self._signal(event.room)
        if event.event == "room_started" and self.rules:
            await self._rules_for_started(event)
        self.touch(event.room)

    def _signal(self, room: str) -> None:
        event = self._changed.pop(room, None)
        if event is not None:
            event.set()

    def _schedule(self, watch: WatchRecord) -> None:
        """Look at the watch's room when it needs a look even if nothing happens there."""
        timer = self._timers.pop(watch.id, None)
        if timer is not None:
            timer.cancel()
        when = next_wakeup(watch, self.policy)
        if when is None or not self._running:
            return
        delay = max(0.0, when - time.time()) + 0.01
        self._timers[watch.id] = asyncio.get_running_loop().call_later(delay, self._wake, watch.id, watch.room)

    def _wake(self, watch_id: int, room: str) -> None:
        self._timers.pop(watch_id, None)
        self.touch(room)

    async def _reconcile(self, room: str, view: RoomView | None = None) -> None:
        try:
            async with self._locks.hold("room", room):
                await self._reconcile_locked(room, view)
        except (AuditError, BackendError) as exc:
            log.warning("watch: could not check %s: %s", room, exc)

    async def _reconcile_locked(self, room: str, view: RoomView | None) -> None:
        watches = await self.store.open_watches(room)
        if not watches:
            return
        if view is None:
            info = await self.runtime.gateway.get_room(room)
            participants = await self.runtime.gateway.list_participants(room) if info is not None else []
            view = RoomView(info is not None, info.sid if info else "", tuple(participants))
        now = time.time()
        hints = self._departures.get(room, {})
        for key in [k for k, d in hints.items() if now - d.at > DEPARTURE_MEMORY]:
            del hints[key]
        current = {w.id: w for w in watches}
        for watch in watches:
            watch = current[watch.id]
            claimed = {w.identity for w in current.values() if w.id != watch.id and w.state == "present"}
            decision = decide(watch, view, hints, claimed, now, self.policy)
            if not await self.store.save(watch, decision.watch):  # recorded before anyone is told
                self.touch(room)  # changed meanwhile (a stop, the follow-up): decide again on a fresh reading
                continue
            current[watch.id] = decision.watch
            await self._act(decision, view, now)
            self._schedule(current[watch.id])

    async def _act(self, decision: Decision, view: RoomView, now: float) -> None:
        watch = decision.watch
        effect = decision.effect
        if effect == "alert":
            stayed = messages.duration_words(watch.left_at - watch.seen_at) if watch.seen_at else ""
            why = reason_words(watch.left_reason)
            lines = [
                messages.agent_left_alert(watch.agent, watch.room, stayed, why, view.people),
                messages.agent_left_todo(watch.agent),
            ]
            if watch.keep:
                lines.append(messages.keep_will_retry(watch.next_at - now, 1, self.policy.keep_retries))
            detail = f"agent {watch.identity} left: {why}; {view.people} people remain"
            await self._tell(watch, "alert", "error", lines, detail, button=not watch.keep, kind="agent_left")
        elif effect == "keep_due":
            await self._keep_attempt(watch, now)
        elif effect == "keep_back":
            line = messages.keep_back(watch.agent, watch.room, watch.identity)
            await self._tell(watch, "keep", "ok", [line], f"agent back as {watch.identity}", kind="keep_back")
        elif effect == "keep_retry":
            attempt = watch.keep_attempt
            lines = [
                messages.keep_attempt_failed(
                    watch.agent, attempt, self.policy.keep_retries, self.policy.followup_timeout
                ),
                messages.keep_will_retry(watch.next_at - now, attempt + 1, self.policy.keep_retries),
            ]
            await self._tell(
                watch, "keep", "error", lines, f"attempt {attempt} failed: no agent joined", kind="keep_retry"
            )
        elif effect == "keep_gave_up":
            lines = [
                messages.keep_attempt_failed(
                    watch.agent, watch.keep_attempt, self.policy.keep_retries, self.policy.followup_timeout
                ),
                *messages.keep_gave_up(watch.agent, watch.room, self.policy.keep_retries),
            ]
            detail = f"gave up after {watch.keep_attempt} attempts"
            await self._tell(watch, "keep", "error", lines, detail, button=True, kind="keep_gave_up")
        elif effect in ("joined", "quiet"):
            log.info("watch: %s in %s: %s", watch.agent, watch.room, watch.closed_reason or "in the room")

    async def _keep_attempt(self, watch: WatchRecord, now: float) -> None:
        """Remove the stale dispatch and send the agent again, as the person who asked for --keep."""
        attempt = watch.keep_attempt + 1
        retries = self.policy.keep_retries
        try:
            async with self.runtime.locks.hold(watch.room, watch.agent):
                try:
                    await self.runtime.gateway.delete_dispatch(watch.dispatch_id, watch.room)
                except BackendError as exc:
                    if exc.kind != "not_found":
                        raise
                created = await self.runtime.gateway.create_dispatch(watch.agent, watch.room, "")
        except BackendError as exc:
            if attempt >= retries:
                closed = replace(watch, state="closed", closed_reason="gave_up", keep_attempt=attempt)
                if not await self.store.save(watch, closed):
                    return
                lines = [
                    messages.keep_attempt_failed(watch.agent, attempt, retries, 0, exc.sentence),
                    *messages.keep_gave_up(watch.agent, watch.room, retries),
                ]
                await self._tell(
                    closed, "keep", "error", lines, f"gave up: {exc.sentence}", button=True, kind="keep_gave_up"
                )
                return
            later = replace(watch, keep_attempt=attempt, next_at=now + self.policy.backoff(attempt + 1))
            if not await self.store.save(watch, later):
                return
            lines = [
                messages.keep_attempt_failed(watch.agent, attempt, retries, 0, exc.sentence),
                messages.keep_will_retry(later.next_at - now, attempt + 1, retries),
            ]
            await self._tell(
                later, "keep", "error", lines, f"attempt {attempt} failed: {exc.sentence}", kind="keep_retry"
            )
            self._schedule(later)
            return
        sent = replace(
            watch,
            state="waiting",
            dispatch_id=created.id,
            keep_attempt=attempt,
            started_at=now,
            identity="",
            missing=0,
            next_at=0.0,
        )
        if not await self.store.save(watch, sent):  # stopped meanwhile: take back what this attempt sent
            with contextlib.suppress(BackendError):
                await self.runtime.gateway.delete_dispatch(created.id, watch.room)
            return
        line = messages.keep_attempt(watch.agent, watch.room, created.id, attempt, retries)
        detail = f"attempt {attempt} of {retries}: dispatched {created.id}, replacing {watch.dispatch_id}"
        await self._tell(sent, "keep", "ok", [line], detail, kind="keep_attempt")
        self._schedule(sent)

    async def _tell(
        self,
        watch: WatchRecord,
        action: str,
        outcome: Outcome,
        lines: list[Text],
        detail: str,
        *,
        kind: str,
        button: bool = False,
    ) -> None:
        """Audit, then post in the dispatch's thread (or the channel); a failure to post is logged, never raised.

        `kind` names the message for the metrics: agent_left, keep_attempt, keep_back, keep_retry, keep_gave_up."""
        self.runtime.metrics.alerts.labels(kind=kind).inc()
        actor = WATCH_ACTOR
        if action == "keep":  # done by the bot on behalf of the person who asked for --keep
            name = watch.user_name or watch.user_id
            actor = Actor(
                source="bot",
                user_id=watch.user_id,
                user_name=f"dispatch-bot for {name}",
                team_id=watch.team_id,
                channel_id=watch.channel_id,
            )
        else:
            actor = replace(actor, team_id=watch.team_id, channel_id=watch.channel_id)
        raw = f"{action}: {watch.agent} {watch.room}"
        record = AuditRecord(actor, raw, action, outcome, watch.agent, watch.room, watch.dispatch_id, detail)
        try:
            await self.runtime.audit.record(record)
        except AuditError as exc:
            log.error("audit write failed: %s", exc)
            lines = [*lines, messages.audit_failed(str(exc))]
        log.info("watch: %s %s in %s: %s", action, watch.agent, watch.room, detail)
        buttons: list[Button] = []
        if button:
            again = f"{shlex.quote(watch.agent)} {shlex.quote(watch.room)}"
            buttons = [Button("dispatch_again", "Dispatch again", again, style="primary"), refresh_button(watch.room)]
        reply = Reply(outcome, lines, visibility="in_channel", action=action, agent=watch.agent, room=watch.room,
                      dispatch_id=watch.dispatch_id, detail=detail, buttons=buttons)  # fmt: skip
        if self.poster is not None and watch.channel_id:
            await self.poster.post(watch.channel_id, watch.thread_ts, reply)

    # --- dispatch rules ----------------------------------------------------------------------------------

    async def _rules_for_started(self, event: RoomEvent) -> None:
        info = await self.runtime.gateway.get_room(event.room)
        if info is None or (event.room_sid and info.sid != event.room_sid):
            return  # a late webhook for a room that has closed (a dispatch now would create it again)
        await self._serve_rules([info])

    async def _serve_rules(self, rooms: Sequence[RoomInfo]) -> None:
        now = time.time()
        for info in rooms:
            for rule in self.rules:
                if not info.sid or (info.sid, rule.name) in self._served or not fnmatchcase(info.name, rule.rooms):
                    continue
                self._served.add((info.sid, rule.name))
                # Claimed before dispatching: across restarts too, a rule serves a room (by sid) at most once.
                if await self.store.claim_rule_room(info.sid, rule.name, info.name, now):
                    self._begin()
                    task = asyncio.create_task(self._apply_rule(rule, info))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                    task.add_done_callback(lambda _: self._end())

    async def _apply_rule(self, rule: DispatchRule, info: RoomInfo) -> None:
        for agent in rule.agents:
            actor = Actor(source="bot", user_id=rule_actor_id(rule.name), user_name=f"rule {rule.name}",
                          channel_id=rule.channel)  # fmt: skip
            ctx = self.runtime.context(actor)
            ctx.authorizer = None  # the operator wrote the rule; the policy is for people
            ctx.rule = rule.name
            reply = await self.runtime.runner.execute(ctx, f"{shlex.quote(agent)} {shlex.quote(info.name)}")
            if reply.outcome == "noop":
                continue  # already there (someone else's dispatch counts): nothing to announce
            intro = messages.rule_dispatch_intro(rule.name, info.name)
            reply.lines.insert(0, intro)
            if self.poster is None:
                continue
            ts = await self.poster.post(rule.channel, "", reply)
            if ts and reply.dispatch_id and reply.outcome == "ok":
                await self.set_message(info.name, reply.dispatch_id, rule.channel, ts)
            if reply.followup is not None:
                final = await reply.followup()
                final.lines.insert(0, intro)
                if ts:
                    await self.poster.update(rule.channel, ts, final)

    # --- for tests and benchmarks ------------------------------------------------------------------------

    async def wait_polls(self, count: int) -> None:
        """Wait until `count` polls have completed since start."""
        async with self._polled:
            await self._polled.wait_for(lambda: self.polls >= count)

    async def settled(self) -> None:
        """Wait until every webhook received, room touched and rule dispatch started has been handled."""
        await self._idle.wait()
