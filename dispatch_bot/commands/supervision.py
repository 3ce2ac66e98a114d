"""Agent supervision's deciding part, as Kubernetes controllers do it: plain code over plain data, no I/O.

The desired state is a watch (an agent the bot sent, and what it promised: alert, or bring it back with --keep); the
observed state is the room as LiveKit reports it now. `decide` compares the two and says what the watch becomes and
what, if anything, to tell people. It is idempotent: the same watch and the same view give the same answer, so a
webhook that arrives twice, late or never changes nothing that the next look at the room would not.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from .ports import Participant, WatchRecord
from .presence import NORMAL_ENDS, UNSEEN, agents_named

MISSES_TO_LEAVE = 2  # polls in a row without the agent before it counts as gone (no webhook said so)


@dataclass(frozen=True)
class RoomView:
    """A room as observed now: running (with which sid) and who is in it."""

    running: bool
    sid: str = ""
    participants: tuple[Participant, ...] = ()
    polled: bool = False  # a poll tick's look, which counts toward MISSES_TO_LEAVE; a webhook's look does not

    @property
    def people(self) -> int:
        return sum(1 for p in self.participants if p.is_person)


@dataclass(frozen=True)
class Departure:
    """A participant_left webhook for an agent: a hint with the reason, confirmed against the room before use."""

    identity: str
    reason: str
    at: float
    agent_name: str = ""


@dataclass(frozen=True)
class WatchPolicy:
    followup_timeout: float
    keep_retries: int
    keep_backoff: float

    def backoff(self, attempt: int) -> float:
        """Seconds before attempt `attempt` (1-based): keep_backoff, doubling each time."""
        return float(self.keep_backoff * 2 ** max(0, attempt - 1))


Effect = Literal[
    "none",  # nothing to tell anyone (the record may still change, e.g. a missed poll counted)
    "joined",  # first seen in the room
    "alert",  # left while people remain, not by a normal end nor by the bot: tell the channel
    "quiet",  # closed without a word: room ended, nobody left in it, or it never joined (the follow-up said so)
    "keep_due",  # a kept agent's next attempt is due: dispatch it again
    "keep_back",  # a kept agent is in the room again
    "keep_retry",  # an attempt failed; another is scheduled
    "keep_gave_up",  # the last attempt failed
]


@dataclass(frozen=True)
class Decision:
    watch: WatchRecord  # the watch as it should now be stored
    effect: Effect = "none"

    def changed(self, before: WatchRecord) -> bool:
        return self.watch != before


def decide(
    watch: WatchRecord,
    view: RoomView,
    departures: Mapping[str, Departure],
    claimed: Collection[str],
    now: float,
    policy: WatchPolicy,
) -> Decision:
    """What one watch becomes, given the room as it is now.

    `departures` are participant_left hints by identity; `claimed` the identities other open watches hold, so that
    two dispatches of the same agent do not both take one participant as theirs.
    """
    if watch.state == "closed":
        return Decision(watch)
    if not view.running or (watch.room_sid and view.sid and view.sid != watch.room_sid):
        # The room ended (or ended and started again as another room with the same name): quietly done.
        return Decision(replace(watch, state="closed", closed_reason="room_ended"), "quiet")
    if not watch.room_sid and view.sid:
        watch = replace(watch, room_sid=view.sid)
    here = agents_named(view.participants, watch.agent)

    if watch.state == "present":
        if any(p.identity == watch.identity for p in here):
            return Decision(replace(watch, missing=0))
        departure = departures.get(watch.identity)
        if departure is not None:
            return _left(watch, view, departure.reason, departure.at, policy)
        if not view.polled:
            return Decision(watch)
        if watch.missing + 1 >= MISSES_TO_LEAVE:
            return _left(watch, view, UNSEEN, now, policy)
        return Decision(replace(watch, missing=watch.missing + 1))

    newcomer = next((p for p in here if p.identity not in claimed), None)
    if watch.state == "away":
        if view.people == 0:
            return Decision(replace(watch, state="closed", closed_reason="left_empty"), "quiet")
        if newcomer is not None:  # someone sent it again before the bot did
            return Decision(_seen(watch, newcomer, now), "keep_back")
        if now >= watch.next_at:
            return Decision(watch, "keep_due")
        return Decision(watch)

    # waiting: dispatched (or re-dispatched by --keep), not yet seen
    if newcomer is not None:
        return Decision(_seen(watch, newcomer, now), "keep_back" if watch.keep_attempt else "joined")
    came_and_went = next(
        (
            d
            for d in departures.values()
            if d.agent_name == watch.agent and d.identity not in claimed and d.at >= watch.started_at
        ),
        None,
    )
    if came_and_went is not None:  # it joined and left between two looks at the room: the webhook saw both
        seen = Participant(came_and_went.identity, kind="AGENT", agent_name=watch.agent)
        return _left(_seen(watch, seen, came_and_went.at), view, came_and_went.reason, came_and_went.at, policy)
    if now < watch.started_at + policy.followup_timeout:
        return Decision(watch)
    if not watch.keep_attempt:
        # The follow-up has told the person it never joined; there is nothing to watch.
        return Decision(replace(watch, state="closed", closed_reason="never_joined"), "quiet")
    if watch.keep_attempt >= policy.keep_retries:
        return Decision(replace(watch, state="closed", closed_reason="gave_up"), "keep_gave_up")
    next_at = now + policy.backoff(watch.keep_attempt + 1)
    return Decision(replace(watch, state="away", next_at=next_at), "keep_retry")


def _seen(watch: WatchRecord, agent: Participant, now: float) -> WatchRecord:
    return replace(watch, state="present", identity=agent.identity, seen_at=now, missing=0, keep_attempt=0, left_at=0.0)


def _left(watch: WatchRecord, view: RoomView, reason: str, at: float, policy: WatchPolicy) -> Decision:
    gone = replace(watch, left_at=at, left_reason=reason, missing=0)
    if reason in NORMAL_ENDS:
        return Decision(replace(gone, state="closed", closed_reason="room_ended"), "quiet")
    if view.people == 0:  # nobody is left to miss it, and the room closes by itself
        return Decision(replace(gone, state="closed", closed_reason="left_empty"), "quiet")
    if watch.keep:
        return Decision(replace(gone, state="away", keep_attempt=0, next_at=at + policy.backoff(1)), "alert")
    return Decision(replace(gone, state="closed", closed_reason="left"), "alert")


def next_wakeup(watch: WatchRecord, policy: WatchPolicy) -> float | None:
    """When this watch needs a look even if nothing happens: a follow-up deadline, or a kept agent's next attempt."""
    if watch.state == "waiting":
        return watch.started_at + policy.followup_timeout
    if watch.state == "away":
        return watch.next_at
    return None
