"""The running bot's parts, opened once from the settings and shared by every transport."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from ..commands.context import CommandContext, KeyedLocks, PersonLimiter
from ..commands.ports import Actor, PeopleDirectory
from ..commands.runner import CommandRunner
from ..commands.supervision import WatchPolicy
from .agent_catalog import AgentCatalog, open_catalog
from .audit_store import AuditStore, WatchStore
from .config import Settings
from .intake import Intake
from .observability import Metrics
from .supervisor import Supervisor

if TYPE_CHECKING:
    from .livekit_gateway import LiveKitGateway


class _GatewayOnFirstUse:
    """The LiveKit gateway, made the first time something calls it: livekit-api, protobuf and aiohttp are imported
    then, so a command that never calls LiveKit (`console -c help`) never loads them. Attributes set before that
    (the metrics, the demo's URL) are kept and given to it when it is made."""

    def __init__(self, settings: Settings) -> None:
        object.__setattr__(self, "_settings", settings)
        object.__setattr__(self, "_gateway", None)
        object.__setattr__(self, "_pending", {})

    def _made(self) -> LiveKitGateway:
        gateway: LiveKitGateway | None = object.__getattribute__(self, "_gateway")
        if gateway is None:
            from .livekit_gateway import LiveKitGateway

            settings: Settings = object.__getattribute__(self, "_settings")
            gateway = LiveKitGateway(
                settings.livekit_url,
                settings.livekit_api_key,
                settings.livekit_api_secret,
                timeout=settings.request_timeout,
            )
            for name, value in object.__getattribute__(self, "_pending").items():
                setattr(gateway, name, value)
            object.__setattr__(self, "_gateway", gateway)
        return gateway

    def __getattr__(self, name: str) -> Any:
        pending: dict[str, Any] = object.__getattribute__(self, "_pending")
        if object.__getattribute__(self, "_gateway") is None and name in pending:
            return pending[name]
        return getattr(self._made(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        gateway = object.__getattribute__(self, "_gateway")
        if gateway is None:
            object.__getattribute__(self, "_pending")[name] = value
        else:
            setattr(gateway, name, value)

    async def aclose(self) -> None:
        gateway = object.__getattribute__(self, "_gateway")
        if gateway is not None:
            await gateway.aclose()


class Runtime:
    def __init__(
        self, settings: Settings, gateway: LiveKitGateway, audit: AuditStore, catalog: AgentCatalog | None = None
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.gateway = gateway
        self.audit = audit
        self.metrics = Metrics()  # this bot's own registry: /metrics shows it
        gateway.metrics = self.metrics
        audit.observe_append = self.metrics.audit_append.observe
        audit.observe_group = self.metrics.audit_group.observe
        self.runner = CommandRunner(audit, on_finished=self.metrics.command_finished, on_step=self.metrics.step_done)
        self.command_settings = settings.command_settings()
        self.locks = KeyedLocks()  # shared by every command of this process
        self.intake = Intake(audit, timeout=settings.ack_timeout)
        self.intake.observe = lambda result, seconds: self.metrics.command_received.labels(result).observe(seconds)
        self.limiter = PersonLimiter(settings.per_user_per_minute)  # shared by Slack commands and buttons
        self.supervisor: Supervisor | None = None
        if settings.watch_enabled:
            policy = WatchPolicy(settings.followup_timeout, settings.keep_retries, settings.keep_backoff)
            self.supervisor = Supervisor(
                self, WatchStore(audit), policy, poll_interval=settings.poll_interval, rules=settings.rules
            )
            self.metrics.watch_count = self.supervisor.open_watch_count

    @classmethod
    async def open(cls, settings: Settings) -> Runtime:
        catalog = open_catalog(settings)
        audit = await AuditStore.open(settings.database, busy_timeout=settings.busy_timeout)
        return cls.assemble(settings, audit, catalog)

    @classmethod
    def assemble(cls, settings: Settings, audit: AuditStore, catalog: AgentCatalog | None) -> Runtime:
        """The runtime around an audit store already open; LiveKit's gateway is made on first use."""
        return cls(settings, cast("LiveKitGateway", _GatewayOnFirstUse(settings)), audit, catalog)

    async def close(self) -> None:
        await self.gateway.aclose()
        await self.audit.close()

    def context(self, actor: Actor, people: PeopleDirectory | None = None, received_id: int = 0) -> CommandContext:
        return CommandContext(
            received_id=received_id,
            backend=self.gateway,
            settings=self.command_settings,
            actor=actor,
            catalog=self.catalog,
            people=people,
            audit=self.audit,
            locks=self.locks,
            authorizer=self.settings.policy,
            watches=self.supervisor,
            signals=self.supervisor,
            limiter=self.limiter,
        )
