"""What the commands need from the outside world, as small types; `bot/` provides the implementations."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
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
    num_participants: int
    empty_timeout: int


class BackendError(Exception):
    """A LiveKit failure, already turned into one sentence a user can act on."""

    def __init__(self, kind: ErrorKind, sentence: str) -> None:
        super().__init__(sentence)
        self.kind: ErrorKind = kind
        self.sentence = sentence


class DispatchBackend(Protocol):
    url: str

    async def get_room(self, room: str) -> RoomInfo | None: ...
    async def list_dispatches(self, room: str) -> list[DispatchInfo]: ...
    async def get_dispatch(self, dispatch_id: str, room: str) -> DispatchInfo | None: ...
    async def create_dispatch(self, agent_name: str, room: str, metadata: str) -> DispatchInfo: ...
    async def delete_dispatch(self, dispatch_id: str, room: str) -> DispatchInfo: ...


@dataclass(frozen=True)
class Actor:
    """Who ran a command and from where: the real Slack user (or OS user), never the bot itself."""

    source: Literal["slack", "cli"]
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


class AuditSink(Protocol):
    async def record(self, entry: AuditRecord) -> int: ...


class AuditError(Exception):
    """The audit log could not be written; the message is one sentence without secrets."""


@dataclass(frozen=True)
class CommandSettings:
    """The parts of the configuration the commands read."""

    aliases: dict[str, str] = field(default_factory=lambda: {"captions": "speech-processing"})
    followup_timeout: float = 20.0
    followup_interval: float = 1.0
    slash_command: str = "/dispatch"
