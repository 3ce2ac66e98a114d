"""The running bot's parts, opened once from the settings and shared by every transport."""

from __future__ import annotations

from ..commands.context import CommandContext
from ..commands.ports import Actor
from ..commands.runner import CommandRunner
from .audit_store import AuditStore
from .config import Settings
from .livekit_gateway import LiveKitGateway


class Runtime:
    def __init__(self, settings: Settings, gateway: LiveKitGateway, audit: AuditStore) -> None:
        self.settings = settings
        self.gateway = gateway
        self.audit = audit
        self.runner = CommandRunner(audit)
        self.command_settings = settings.command_settings()

    @classmethod
    async def open(cls, settings: Settings) -> Runtime:
        audit = await AuditStore.open(settings.database)
        gateway = LiveKitGateway(
            settings.livekit_url,
            settings.livekit_api_key,
            settings.livekit_api_secret,
            timeout=settings.request_timeout,
        )
        return cls(settings, gateway, audit)

    async def close(self) -> None:
        await self.gateway.aclose()
        await self.audit.close()

    def context(self, actor: Actor) -> CommandContext:
        return CommandContext(backend=self.gateway, settings=self.command_settings, actor=actor)
