"""Whether an agent is in a room, from the room's participants (never from the job snapshot), as plain code.

LiveKit's job state says JS_RUNNING with an identity as soon as a worker *accepts* a job, and never changes after;
only a participant of kind AGENT whose `lk.agent_name` is the agent's name proves the agent is in the room.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from .ports import DispatchInfo, Participant, WatchRecord

# A departure for one of these reasons is the room ending, not the agent failing.
NORMAL_ENDS = frozenset({"ROOM_CLOSED", "ROOM_DELETED", "SERVER_SHUTDOWN"})

# DisconnectReason names in words (livekit-webhooks.md §2), with what they usually mean for an agent.
_REASONS = {
    "CLIENT_INITIATED": "it left by itself (its job ended or raised an error)",
    "CONNECTION_TIMEOUT": "its connection was lost (its process probably crashed or was killed)",
    "SIGNAL_CLOSE": "its signalling connection dropped before it was fully connected",
    "JOIN_FAILURE": "it failed to join the room",
    "STATE_MISMATCH": "the server and the agent disagreed on its state",
    "PARTICIPANT_REMOVED": "it was removed from the room (its dispatch was deleted, or someone removed it)",
    "ROOM_CLOSED": "the room closed",
    "ROOM_DELETED": "the room was deleted",
    "SERVER_SHUTDOWN": "the server shut down",
    "DUPLICATE_IDENTITY": "another participant joined with its identity",
    "MIGRATION": "it was moved to another server",
    "USER_UNAVAILABLE": "it became unavailable",
    "USER_REJECTED": "it was rejected",
    "SIP_TRUNK_FAILURE": "its SIP trunk failed",
    "CONNECTION_ABORTED": "its connection was aborted before it became active",
    "MEDIA_FAILURE": "its media connection failed",
    "AGENT_ERROR": "it reported an error",
    "UNKNOWN_REASON": "it disconnected without a reason",
}
UNSEEN = "MISSING"  # no event said why: two polls in a row did not find it


def reason_words(reason: str) -> str:
    if reason == UNSEEN:
        return "it is no longer in the room (no webhook said why; two checks in a row did not find it)"
    return _REASONS.get(reason, f"it disconnected ({reason.lower() or 'reason unknown'})")


def agents_named(participants: Iterable[Participant], agent: str) -> list[Participant]:
    return [p for p in participants if p.is_agent and p.agent_name == agent]


def people(participants: Iterable[Participant]) -> list[Participant]:
    return [p for p in participants if p.is_person]


def job_identities(dispatch: DispatchInfo) -> set[str]:
    """Who the workers that took this dispatch's jobs said their agents would join as: a hint, not presence."""
    return {job.participant_identity for job in dispatch.jobs if job.participant_identity}


def agent_of(dispatch: DispatchInfo, participants: Iterable[Participant]) -> Participant | None:
    """The participant that is this dispatch's agent, if it is in the room now."""
    identities = job_identities(dispatch)
    return next((p for p in agents_named(participants, dispatch.agent_name) if p.identity in identities), None)


StatusKind = Literal["in_room", "waiting", "left", "never_joined", "no_worker"]


@dataclass(frozen=True)
class DispatchStatus:
    kind: StatusKind
    identity: str = ""
    since: datetime | None = None  # joined at (in_room) or left at (left)
    reason: str = ""  # DisconnectReason name, for `left`

    @property
    def counts_as_there(self) -> bool:
        """An agent in the room, or one still on its way, is there: a second dispatch would bring a second one."""
        return self.kind in ("in_room", "waiting")


def status_of(
    dispatch: DispatchInfo,
    participants: Iterable[Participant],
    watch: WatchRecord | None,
    now: datetime,
    followup_timeout: float,
) -> DispatchStatus:
    """What a dispatch amounts to now: its agent in the room, on its way, gone, or never come."""
    present = agent_of(dispatch, participants)
    if present is not None:
        return DispatchStatus("in_room", present.identity, present.joined_at)
    if watch is not None and watch.left_at:
        return DispatchStatus("left", watch.identity, datetime.fromtimestamp(watch.left_at, UTC), watch.left_reason)
    if watch is not None and watch.seen_at:  # seen once, gone now, and no departure recorded yet
        return DispatchStatus("left", watch.identity, None, UNSEEN)
    created = dispatch.created_at
    if created is None or (now - created).total_seconds() < followup_timeout:
        return DispatchStatus("waiting")
    identities = job_identities(dispatch)
    if identities:
        return DispatchStatus("never_joined", sorted(identities)[0])
    return DispatchStatus("no_worker")


def statuses(
    dispatches: Iterable[DispatchInfo],
    participants: list[Participant],
    watches: Mapping[str, WatchRecord],
    now: datetime,
    followup_timeout: float,
) -> dict[str, DispatchStatus]:
    return {d.id: status_of(d, participants, watches.get(d.id), now, followup_timeout) for d in dispatches}
