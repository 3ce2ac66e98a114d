"""OpenVidu's agent config files (`agent-<NAME>.yaml`) read into AgentInfo, re-read when they change.

The rules are OpenVidu's own: the agent name comes from the file name (`agent-[a-zA-Z0-9-_]+`), an
`agent_name` key must equal it, and a service section is any top-level mapping with a `processing` key.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..commands.ports import AgentInfo, AgentService, CatalogSnapshot
from .config import Settings, yaml_error_where

log = logging.getLogger(__name__)

AGENT_FILE = re.compile(r"agent-([a-zA-Z0-9_-]+)\.ya?ml")
MAX_FILE_BYTES = 1024 * 1024
# Sections OpenVidu documents as AI services; a non-mapping value there is a mistake, not another key.
KNOWN_SERVICES = ("live_captions",)
PROCESSING_MODES = ("manual", "automatic")


class AgentFileError(ValueError):
    """A file that cannot be used; the message names the file and the key."""


def openvidu_agent_name(file_name: str) -> str:
    """The name OpenVidu's agent registers under: `basename.split(".")[0].split("agent-")[1]`, as its own code does."""
    return file_name.split(".")[0].split("agent-")[1]


def parse_agent_file(name: str, file_name: str, text: str) -> AgentInfo:
    """One agent file's content into an AgentInfo; raises AgentFileError with one sentence."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AgentFileError(f"{file_name} is not valid YAML{yaml_error_where(exc)}.") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise AgentFileError(f"{file_name} must hold a mapping of settings (docker_image:, enabled:, …).")
    enabled = data.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise AgentFileError(f"{file_name}: `enabled` is {enabled!r}; it must be true or false.")
    declared = data.get("agent_name")
    if declared is not None and not isinstance(declared, str):
        raise AgentFileError(f"{file_name}: `agent_name` must be a string.")
    services: list[AgentService] = []
    defects: list[str] = []
    for section, value in data.items():
        if section in KNOWN_SERVICES and not isinstance(value, dict):
            raise AgentFileError(f"{file_name}: `{section}` must be a mapping with a `processing` key.")
        if section in KNOWN_SERVICES and "processing" not in value:
            defects.append(
                f"`{section}` has no `processing` key, which OpenVidu's agent reads at start and stops without"
            )
        if not isinstance(value, dict) or "processing" not in value:
            continue
        processing = value["processing"]
        if processing not in PROCESSING_MODES:
            raise AgentFileError(
                f"{file_name}: `{section}.processing` is {processing!r}; OpenVidu accepts manual or automatic."
            )
        provider = value.get("provider")
        services.append(AgentService(str(section), processing, provider if isinstance(provider, str) else ""))
    return AgentInfo(name, file_name, enabled, tuple(services), declared, tuple(defects))


@dataclass
class _FileState:
    stamp: tuple[int, int]  # mtime_ns, size
    info: AgentInfo | None  # the last good reading
    problem: str = ""


class AgentCatalog:
    """The agents in one folder. `snapshot()` re-reads changed files at most every `check_interval` seconds."""

    def __init__(self, folder: str | Path, *, check_interval: float = 2.0) -> None:
        self.folder = Path(folder)
        self.check_interval = check_interval
        self._files: dict[str, _FileState] = {}
        self._folder_problem = ""
        self._read_ok = False
        self._checked_at = float("-inf")
        self._snapshot = CatalogSnapshot(str(self.folder), read_ok=False)

    def snapshot(self) -> CatalogSnapshot:
        now = time.monotonic()
        if now - self._checked_at >= self.check_interval:
            self._checked_at = now
            self._refresh()
        return self._snapshot

    def _refresh(self) -> None:
        try:
            entries = {e.name: e for e in os.scandir(self.folder) if AGENT_FILE.fullmatch(e.name)}
        except OSError as exc:
            problem = f"The agent folder {self.folder} cannot be read ({exc.strerror or exc})."
            if problem != self._folder_problem:
                log.warning("%s Keeping the last good reading.", problem)
            self._folder_problem = problem
            self._build()
            return
        changed = bool(self._folder_problem)  # the folder is readable again: its problem goes
        self._folder_problem = ""
        for file_name in set(self._files) - set(entries):
            del self._files[file_name]
            changed = True
        for file_name, entry in entries.items():
            try:
                stat = entry.stat()
            except OSError:
                continue
            stamp = (stat.st_mtime_ns, stat.st_size)
            known = self._files.get(file_name)
            if known is not None and known.stamp == stamp:
                continue
            changed = True
            self._files[file_name] = self._read(file_name, stamp, known)
        self._read_ok = True
        if changed or not self._snapshot.read_ok:
            self._build()

    def _read(self, file_name: str, stamp: tuple[int, int], known: _FileState | None) -> _FileState:
        previous = known.info if known else None
        name = openvidu_agent_name(file_name)
        try:
            if stamp[1] > MAX_FILE_BYTES:
                raise AgentFileError(f"{file_name} is larger than {MAX_FILE_BYTES // 1024} KiB; it was not read.")
            try:
                text = (self.folder / file_name).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise AgentFileError(f"{file_name} cannot be read ({getattr(exc, 'strerror', None) or exc}).") from None
            if not name:
                raise AgentFileError(
                    f"{file_name}: OpenVidu names an agent after the text between the first two `agent-` of its "
                    "file name, which here is empty, so this agent registers with no name (as if automatic): "
                    "rename the file."
                )
            info = parse_agent_file(name, file_name, text)
            full = AGENT_FILE.fullmatch(file_name)
            if full is not None and full.group(1) != name:
                info = dataclasses.replace(info, defects=(*info.defects, (
                    f"OpenVidu names an agent after the text between the first two `agent-` of its file name, so "
                    f"this one registers as `{name}`, not `{full.group(1)}`: rename the file"
                )))  # fmt: skip
        except AgentFileError as exc:
            kept = " The last good reading is kept." if previous else ""
            log.warning("agent catalog: %s%s", exc, kept)
            return _FileState(stamp, previous, f"{exc}{kept}")
        if info.name_mismatch:
            log.warning(
                "agent catalog: %s sets agent_name %r; OpenVidu's agent exits at start unless it is %r.",
                file_name,
                info.declared_name,
                info.name,
            )
        return _FileState(stamp, info)

    def _build(self) -> None:
        agents = {s.info.name: s.info for _, s in sorted(self._files.items()) if s.info is not None}
        problems = [s.problem for _, s in sorted(self._files.items()) if s.problem]
        if self._folder_problem:
            problems.insert(0, self._folder_problem)
        self._snapshot = CatalogSnapshot(str(self.folder), agents, tuple(problems), self._read_ok)


def open_catalog(settings: Settings) -> AgentCatalog | None:
    """The agent folder's catalog when one is configured, the aliases and rules checked against it."""
    if not settings.openvidu_agents_dir:
        return None
    catalog = AgentCatalog(settings.openvidu_agents_dir, check_interval=settings.catalog_reload_interval)
    snapshot = catalog.snapshot()
    if snapshot.read_ok:
        settings.check_aliases(set(snapshot.agents), snapshot.folder)
        settings.check_rules(set(snapshot.agents), snapshot.folder)
    else:  # the bot still runs; every reply that could not check an agent says so
        log.warning("%s", "; ".join(snapshot.problems))
    return catalog
