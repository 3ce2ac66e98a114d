"""What the commands need from the outside world, as small types; `bot/` provides the implementations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

JobStatus = Literal["pending", "running", "success", "failed", "cancelled"]
ErrorKind = Literal[
    "unreachable", "timeout", "auth", "permission", "not_running", "not_found", "invalid", "limit", "server"
]


@dataclass(frozen=True)
class JobInfo:
    id: str
    status: JobStatus
    participant_identity: str = ""
    error: str = ""


@dataclass(frozen=True)
class DispatchInfo:
    id: str
    agent_name: str
    room: str
    metadata: str = ""
    created_at: datetime | None = None
    jobs: tuple[JobInfo, ...] = ()

    @property
    def automatic(self) -> bool:
        """The dispatch LiveKit adds to every room created without agents: it reaches unnamed workers only."""
        return self.agent_name == ""

    @property
    def joined_identity(self) -> str:
        for job in self.jobs:
            if job.status == "running" and job.participant_identity:
                return job.participant_identity
        return ""


@dataclass(frozen=True)
class RoomInfo:
    name: str
    created_at: datetime | None
    num_participants: int  # people only: LiveKit leaves agents and egress out (and the count may lag)
    empty_timeout: int
    sid: str = ""


# Participant kinds that are not people: they do not keep a room open and nobody watches captions for them.
NOT_PEOPLE = ("AGENT", "EGRESS")


@dataclass(frozen=True)
class Participant:
    """One participant as the room reports it; an agent is kind AGENT with its name in `lk.agent_name`."""

    identity: str
    kind: str = "STANDARD"  # ParticipantInfo.Kind name: STANDARD, AGENT, EGRESS, INGRESS, SIP, ...
    agent_name: str = ""  # lk.agent_name (or lk.agent.name) of an agent; "" for anyone else
    name: str = ""
    joined_at: datetime | None = None
    disconnect_reason: str = ""  # DisconnectReason name, in a participant_left event

    @property
    def is_agent(self) -> bool:
        return self.kind == "AGENT"

    @property
    def is_person(self) -> bool:
        return self.kind not in NOT_PEOPLE


@dataclass(frozen=True)
class RoomEvent:
    """A LiveKit webhook, verified, as the few facts supervision needs; a hint to look at a room, never the truth."""

    id: str
    event: str  # room_started, room_finished, participant_joined, participant_left, ...
    room: str
    room_sid: str = ""
    participant: Participant | None = None
    created_at: datetime | None = None


class BackendError(Exception):
    """A LiveKit failure, already turned into one sentence a user can act on."""

    def __init__(self, kind: ErrorKind, sentence: str) -> None:
        super().__init__(sentence)
        self.kind: ErrorKind = kind
        self.sentence = sentence


class DispatchBackend(Protocol):
    url: str

    async def get_room(self, room: str) -> RoomInfo | None: ...
    async def list_rooms(self) -> list[RoomInfo]: ...
    async def list_dispatches(self, room: str) -> list[DispatchInfo]: ...
    async def get_dispatch(self, dispatch_id: str, room: str) -> DispatchInfo | None: ...
    async def create_dispatch(self, agent_name: str, room: str, metadata: str) -> DispatchInfo: ...
    async def delete_dispatch(self, dispatch_id: str, room: str) -> DispatchInfo: ...
    async def list_participants(self, room: str) -> list[Participant]:
        """The room's participants; an empty list for a room that is not running (ask get_room which it is)."""
        ...

    def mint_join_token(self, *, room: str, identity: str, name: str, ttl: timedelta, agents: Sequence[str]) -> str:
        """A token to join `room` only, whose room configuration dispatches `agents` when the join creates it."""
        ...


@dataclass(frozen=True)
class Profile:
    display_name: str = ""
    tz_name: str = ""  # IANA name, e.g. Europe/Madrid
    tz_offset: int = 0  # seconds east of UTC, when the name is unknown here


class PeopleDirectory(Protocol):
    async def profile(self, user_id: str) -> Profile | None:
        """The person's display name and time zone, or None when they cannot be had."""
        ...


@dataclass(frozen=True)
class AuditRow:
    """One audit row as stored."""

    id: int
    ts: str
    source: str
    team_id: str
    channel_id: str
    channel_name: str
    user_id: str
    user_name: str
    raw_text: str
    action: str
    agent: str
    room: str
    dispatch_id: str
    outcome: str
    detail: str
    duration_ms: int
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class AuditQuery:
    room: str = ""
    agent: str = ""
    user_id: str = ""
    since: datetime | None = None
    outcome: str = ""
    limit: int = 20


@dataclass(frozen=True)
class AuditPage:
    rows: list[AuditRow]
    more: int  # how many more rows match beyond these (capped, see `more_capped`)
    more_capped: bool = False


class AuditReader(Protocol):
    async def query(self, query: AuditQuery) -> AuditPage: ...


@dataclass(frozen=True)
class Actor:
    """Who ran a command and from where: the real Slack user (or OS user), never the bot itself."""

    source: Literal["slack", "cli", "bot"]
    user_id: str
    user_name: str = ""
    team_id: str = ""
    channel_id: str = ""
    channel_name: str = ""


@dataclass(frozen=True)
class AuditRecord:
    actor: Actor
    raw_text: str
    action: str
    outcome: str
    agent: str = ""
    room: str = ""
    dispatch_id: str = ""
    detail: str = ""
    duration_ms: int = 0
    received_id: int = 0  # the received-command record this row completes (deleted with the row's write)


@dataclass(frozen=True)
class Seen:
    """A follow-up saw its dispatch's agent in the room, as `identity`, at `at` (time.time())."""

    room: str
    dispatch_id: str
    identity: str
    at: float


class AuditSink(Protocol):
    async def record(self, entry: AuditRecord) -> int: ...

    async def record_with_watches(
        self, entries: Sequence[AuditRecord], watches: Sequence[WatchRecord]
    ) -> list[WatchRecord]:
        """The watches added and the rows appended in one transaction, or nothing written (AuditError); returns the
        watches as stored."""
        ...

    async def record_with_seen(self, entry: AuditRecord, seen: Sequence[Seen]) -> list[int]:
        """The waiting watches of these dispatches marked present and the row appended, in one transaction, or
        nothing written (AuditError); returns the ids of the watches marked."""
        ...


class AuditError(Exception):
    """The audit log could not be written; the message is one sentence without secrets."""


@dataclass(frozen=True)
class CommandSettings:
    """The parts of the configuration the commands read."""

    aliases: dict[str, str] = field(default_factory=lambda: {"captions": "speech-processing"})
    followup_timeout: float = 20.0
    followup_interval: float = 1.0
    slash_command: str = "/dispatch"
    link_url_template: str = "https://meet.livekit.io/custom?liveKitUrl={ws_url}&token={token}"
    link_ws_url: str = "ws://localhost:7880"
    link_default_agents: tuple[str, ...] = ()
    link_default_ttl: float = 3600.0
    link_max_ttl: float = 12 * 3600.0
    rules: tuple[DispatchRule, ...] = ()


@dataclass(frozen=True)
class AgentService:
    """One AI service section of an OpenVidu agent file (e.g. `live_captions`)."""

    section: str
    processing: Literal["manual", "automatic"]
    provider: str = ""


@dataclass(frozen=True)
class AgentInfo:
    """What an OpenVidu `agent-<name>.yaml` says about one agent."""

    name: str
    file: str
    enabled: bool | None  # None: the file has no `enabled` key
    services: tuple[AgentService, ...] = ()
    declared_name: str | None = None  # the file's own `agent_name` key, when it has one
    defects: tuple[str, ...] = ()  # what makes OpenVidu's agent fail at start, one sentence each

    @property
    def name_mismatch(self) -> bool:
        return self.declared_name is not None and self.declared_name != self.name

    @property
    def automatic_only(self) -> bool:
        """Every service runs automatically: the agent registers with no name and no named dispatch reaches it."""
        return bool(self.services) and all(s.processing == "automatic" for s in self.services)


@dataclass(frozen=True)
class CatalogSnapshot:
    """The agent catalog as last read: the agents, and a sentence for each file (or the folder) that failed."""

    folder: str
    agents: Mapping[str, AgentInfo] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    read_ok: bool = True  # False until the folder has been read successfully once


class AgentCatalogView(Protocol):
    def snapshot(self) -> CatalogSnapshot: ...


ACTIONS = ("dispatch", "force", "stop", "link", "list", "rooms", "agents", "audit", "rules")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str = ""  # the rule that decided, "" when none matched (or there is no policy)
    admin: bool = False


class Authorizer(Protocol):
    """Who may do what: keyed on the real person (and channel) who asked, never on the bot."""

    def decide(self, actor: Actor, action: str, *, agent: str = "", room: str = "") -> Decision: ...

    def may_ever(self, actor: Actor, action: str) -> bool:
        """Whether some agent and room would be allowed for this action (what `help` shows)."""
        ...


# --- supervision -------------------------------------------------------------------------------------------------

WatchState = Literal["waiting", "present", "away", "closed"]


@dataclass(frozen=True)
class WatchRecord:
    """One agent the bot sent into a room and watches while the room runs (desired state; times in unix seconds).

    waiting: dispatched, not yet seen in the room; present: seen (identity known); away: a kept agent left and its
    next attempt is due at `next_at`; closed: no longer watched (`closed_reason` says why).
    """

    room: str
    agent: str
    dispatch_id: str
    started_at: float
    state: WatchState = "waiting"
    id: int = 0
    room_sid: str = ""
    identity: str = ""
    closed_reason: str = ""
    keep: bool = False
    keep_attempt: int = 0  # 0: no attempt running; n: the n-th re-dispatch since the agent left
    next_at: float = 0.0
    seen_at: float = 0.0
    left_at: float = 0.0
    left_reason: str = ""
    missing: int = 0  # polls in a row that did not find the agent
    channel_id: str = ""
    thread_ts: str = ""
    source: str = ""
    team_id: str = ""
    user_id: str = ""
    user_name: str = ""
    rule: str = ""


class WatchRegistry(Protocol):
    """Where commands put the agents they send (so they are watched) and take those they remove."""

    async def watch(self, record: WatchRecord) -> None: ...

    def watched(self, records: Sequence[WatchRecord]) -> None:
        """These watches were written (with their command's audit row, as stored): supervise them from now."""
        ...

    async def close(self, room: str, dispatch_ids: Sequence[str], reason: str) -> None:
        """Stop watching these dispatches (the bot removes them itself: no alert when their agents leave)."""
        ...

    async def history(self, room: str) -> Mapping[str, WatchRecord]:
        """The latest watch of each dispatch in the room, open or closed, by dispatch id."""
        ...

    async def seen(self, room: str, dispatch_id: str, identity: str) -> None:
        """The follow-up saw the dispatch's agent in the room, as `identity`."""
        ...

    def seen_written(self, watch_ids: Sequence[int]) -> None:
        """These watches were marked present (with the follow-up's audit row): their follow-up deadlines are moot."""
        ...


class RoomSignals(Protocol):
    async def wait_change(self, room: str, timeout: float) -> None:
        """Return when something may have changed in the room (a webhook named it), or after `timeout` seconds."""
        ...

    def events_flowing(self) -> bool:
        """True while LiveKit's webhooks arrive (one came lately): a change will wake `wait_change` by itself."""
        ...


@dataclass(frozen=True)
class DispatchRule:
    """`rules:` in the config: rooms whose names match `rooms` get `agents` when they start."""

    name: str
    rooms: str  # shell-style pattern
    agents: tuple[str, ...]
    channel: str
