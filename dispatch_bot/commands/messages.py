"""Every sentence the commands show a user, in one place so they can be read, reviewed and escaped together.

Templates are ours; `{name}` values are user or server text and are escaped by the renderer.
"""

from __future__ import annotations

from datetime import datetime

from .grammar import shorten
from .ports import AgentInfo
from .reply import Mention, Text, text


def usage(command: str, usage_line: str) -> Text:
    return text("Usage: `{usage}`", usage=f"{command} {usage_line}")


def invalid(sentence: str) -> Text:
    return text("{sentence}", sentence=sentence)


def more_help(command: str) -> Text:
    return text("`{cmd} help` lists every command.", cmd=command)


def nothing_given() -> str:
    return "Tell me what to do: an agent and a room, or a subcommand."


def unknown_subcommand(word: str, suggestion: str) -> str:
    return (
        f"{shorten(word, 40)} is not a command. Did you mean {suggestion}? (If {shorten(word, 40)} is an agent, "
        "give the bot its agent catalog or an alias, so that it knows the name.)"
    )


def internal_error(ref: str) -> Text:
    return text(
        "Something went wrong inside dispatch-bot (reference {ref}). Nothing more was done; "
        "the details are in the bot's log.",
        ref=ref,
    )


def audit_failed(sentence: str) -> Text:
    return text(":warning: This was not recorded in the audit log: {sentence}", sentence=sentence)


def backend_error(sentence: str) -> Text:
    return text(":x: {sentence}", sentence=sentence)


def agent_label(agent: str, alias: str) -> Text:
    if alias and alias != agent:
        return text("*{agent}* ({alias})", agent=agent, alias=alias)
    return text("*{agent}*", agent=agent)


def dispatched(who: Mention, agent: Text, room: str, dispatch_id: str) -> Text:
    return text(
        "{who} sent " + agent.template + " into *{room}* (dispatch `{id}`).",
        who=who,
        room=room,
        id=dispatch_id,
        **agent.values,
    )


def room_was_created(room: str, closes_at: datetime, minutes: int) -> Text:
    return text(
        "*{room}* was not running: LiveKit created it for this dispatch. It closes in about "
        "{minutes} minutes ({at} UTC) unless a person joins.",
        room=room,
        minutes=str(minutes),
        at=closes_at.strftime("%H:%M"),
    )


def waiting_for_join(seconds: float) -> Text:
    return text(":hourglass_flowing_sand: Waiting up to {s} s for the agent to join…", s=f"{seconds:g}")


def joined(identity: str, seconds: float) -> Text:
    return text(
        ":white_check_mark: The agent joined as `{identity}` after {s} s.",
        identity=identity,
        s=f"{seconds:.1f}",
    )


def job_failed(error: str) -> Text:
    return text(":x: The agent's job failed: {error}", error=shorten(error, 200) or "no reason given")


def not_joined(agent: str, seconds: float, info: AgentInfo | None = None) -> list[Text]:
    lines = [
        text(
            ":warning: No agent joined within {s} s. The dispatch exists, but LiveKit started no job for it. "
            "Likely causes:",
            s=f"{seconds:g}",
        ),
    ]
    if info is not None and info.enabled is None:
        lines.append(
            text(
                "• {file} has no `enabled` key, so OpenVidu's agent manager does not run it; whatever "
                "runs its container decides the name it registers under (a file mounted as "
                "agent-config.yaml registers as `config`): check the agent's log;",
                file=info.file,
            )
        )
    elif info is not None:
        lines.append(
            text(
                "• {file} says *{agent}* is enabled and manual, so its worker should register under "
                "`{agent}`: its container may not be running yet (the image downloads in the background "
                "after OpenVidu starts; `docker logs agent-{agent}` tells), and a worker that starts "
                "later never picks up this dispatch;",
                file=info.file,
                agent=agent,
            )
        )
    else:
        lines += [
            text(
                "• no agent worker is registered under the name `{agent}` (is its container running? "
                "a worker that starts later never picks up this dispatch);",
                agent=agent,
            ),
            text(
                "• the agent runs in `processing: automatic`, so it registers with no name and only joins new "
                "rooms by itself;"
            ),
            text("• the agent is disabled (`enabled: false`);"),
        ]
    lines += [
        text("• every worker under that name is busy: its node is above the agent's CPU `load_threshold`."),
        text("Fix the cause, then stop this dispatch and dispatch again."),
    ]
    return lines


def job_not_running(agent: str, seconds: float, status: str) -> Text:
    return text(
        ":warning: LiveKit gave the dispatch a job, but within {s} s no `{agent}` agent was running it (job "
        "{status}): the worker took the job and has not joined yet, or it stopped. `/dispatch list` shows it later.",
        s=f"{seconds:g}",
        agent=agent,
        status=status,
    )


def followup_unknown(sentence: str) -> Text:
    return text(":grey_question: Could not check whether the agent joined: {sentence}", sentence=sentence)


def dispatch_vanished(dispatch_id: str, room: str) -> Text:
    return text(
        ":grey_question: Dispatch `{id}` is gone from *{room}* (stopped, or the room closed).",
        id=dispatch_id,
        room=room,
    )


def already_there(agent: Text, room: str, ids: list[str], joined_as: str) -> list[Text]:
    lines = [
        text(
            ":information_source: " + agent.template + " is already dispatched in *{room}* "
            "(dispatch `{ids}`). Nothing was created; add `--force` to send another one.",
            room=room,
            ids="`, `".join(ids),
            **agent.values,
        )
    ]
    if joined_as:
        lines.append(text("It joined as `{identity}`.", identity=joined_as))
    else:
        lines.append(
            text(
                "LiveKit records no running job for it, so the agent may never have joined: "
                "stop it and dispatch again, or add `--force`."
            )
        )
    return lines


def dry_run(url: str, request_json: str) -> list[Text]:
    return [
        text("*Dry run*: nothing was sent. This is the request the bot would send to {url}:", url=url),
        text("```{req}```", req=request_json),
        text(
            "Without `--dry-run` the bot first checks the room and its dispatches, and creates nothing "
            "if the agent is already there (unless `--force`)."
        ),
    ]


def room_not_running(room: str) -> Text:
    return text("*{room}* is not running, so it has no dispatches.", room=room)


def list_header(room: str, count: int, participants: int) -> Text:
    return text(
        "*{room}*: {n} dispatch{es}, {p} participant{ps}.",
        room=room,
        n=str(count),
        es="" if count == 1 else "es",
        p=str(participants),
        ps="" if participants == 1 else "s",
    )


def list_entry(agent: str, dispatch_id: str, age: str, state: str, metadata: str) -> Text:
    if agent:
        line = text("• *{agent}* `{id}` · {age} · {state}", agent=agent, id=dispatch_id, age=age, state=state)
    else:
        line = text(
            "• _automatic_ `{id}` · {age} · {state} (the dispatch LiveKit adds to every room created "
            "without agents; it reaches only agents in automatic mode)",
            id=dispatch_id,
            age=age,
            state=state,
        )
    if metadata:
        return Text(line.template + " · metadata `{metadata}`", {**line.values, "metadata": shorten(metadata)})
    return line


def stopped(who: Mention, agent: str, room: str, ids: list[str]) -> Text:
    return text(
        "{who} stopped *{agent}* in *{room}* (dispatch `{ids}`).",
        who=who,
        agent=agent or "the automatic dispatch",
        room=room,
        ids="`, `".join(ids),
    )


def nothing_to_stop(agent: str, room: str) -> Text:
    return text("*{agent}* has no dispatch in *{room}*; nothing was stopped.", agent=agent, room=room)


def unknown_dispatch(dispatch_id: str, room: str) -> Text:
    return text(
        "There is no dispatch `{id}` in *{room}*. `/dispatch list {room}` shows the ones there are.",
        id=dispatch_id,
        room=room,
    )


def stop_not_running(room: str) -> Text:
    return text("*{room}* is not running, so there is nothing to stop.", room=room)


def stop_confirm(agent: str, room: str) -> Text:
    return text("Stop {agent} in {room}? The agent leaves the room.", agent=agent, room=room)


# --- the agent catalog ---------------------------------------------------------------------------------------

_RESTART = "restart OpenVidu (`sudo systemctl restart openvidu`; locally `docker compose restart`)"


def catalog_unreadable(problem: str, agent: str) -> Text:
    return text(
        ":warning: The agent catalog could not be read ({problem}); {agent} was not checked against it.",
        problem=problem,
        agent=agent,
    )


def unknown_agent(name: str, near: str | None, folder: str) -> list[Text]:
    hint = text(" Did you mean *{near}*?", near=near) if near else text("")
    return [
        text(
            ":no_entry: There is no agent called *{name}* in the agent catalog ({folder})." + hint.template,
            name=name,
            folder=folder,
            **hint.values,
        ),
        text("`/dispatch agents` lists the agents there are."),
    ]


def alias_target_unknown(alias: str, name: str, folder: str) -> list[Text]:
    return [
        text(
            ":no_entry: *{alias}* is an alias of *{name}*, which is not in the agent catalog ({folder}).",
            alias=alias,
            name=name,
            folder=folder,
        ),
        text("`/dispatch agents` lists the agents there are."),
    ]


def _sections(info: AgentInfo) -> str:
    return ", ".join(s.section for s in info.services)


def agent_disabled(info: AgentInfo) -> list[Text]:
    return [
        text(
            ":no_entry: *{name}* is disabled (`enabled: false` in {file}): OpenVidu never starts its container, "
            "so no agent would join.",
            name=info.name,
            file=info.file,
        ),
        text("Set `enabled: true` in {file} and " + _RESTART + ".", file=info.file),
    ]


def agent_automatic(info: AgentInfo) -> list[Text]:
    section = info.services[0].section
    return [
        text(
            ":no_entry: *{name}* runs in `processing: automatic` ({file}, {sections}): it already joins every new "
            "room by itself and registers with no name, so a named dispatch would reach nobody.",
            name=info.name,
            file=info.file,
            sections=_sections(info),
        ),
        text(
            "To send it from here, set `{section}.processing: manual` in {file} and " + _RESTART + ".",
            section=section,
            file=info.file,
        ),
    ]


def agent_name_mismatch(info: AgentInfo) -> list[Text]:
    return [
        text(
            ":no_entry: {file} sets `agent_name: {declared}`, but its file name makes the agent *{name}*: "
            "OpenVidu's agent stops at start when the two differ, so no agent would join.",
            file=info.file,
            declared=repr(info.declared_name),
            name=info.name,
        ),
        text(
            "Remove `agent_name` from {file} or set it to `{name}`, then " + _RESTART + ".",
            file=info.file,
            name=info.name,
        ),
    ]


def agent_defects(info: AgentInfo) -> list[Text]:
    return [
        text(
            ":no_entry: *{name}* cannot start as {file} stands: {defect}. No agent would join.",
            name=info.name,
            file=info.file,
            defect=info.defects[0],
        ),
        text("Fix {file} and " + _RESTART + ".", file=info.file),
    ]


def dispatch_reach(info: AgentInfo) -> str:
    """Whether an explicit dispatch can reach the agent, in a few words."""
    if info.enabled is False:
        return "no: disabled (enabled: false)"
    if info.name_mismatch:
        return f"no: agent_name {info.declared_name!r} differs from the file name"
    if info.defects:
        return f"no: {info.defects[0]}"
    if info.automatic_only:
        return "no: automatic, it joins every new room by itself"
    if info.enabled is None:
        return "yes, if its container runs (no `enabled` key: started outside OpenVidu's agent manager)"
    return "yes"


def agents_header(folder: str, count: int) -> Text:
    return text("*Agents* in {folder} ({n}):", folder=folder, n=str(count))


def agent_entry(info: AgentInfo, aliases: list[str]) -> Text:
    services = (
        "; ".join(f"{s.section}: {s.processing}" + (f" ({s.provider})" if s.provider else "") for s in info.services)
        or "no AI service section"
    )
    enabled = {True: "enabled", False: "disabled", None: "no enabled key"}[info.enabled]
    alias_text = f" (alias {', '.join(aliases)})" if aliases else ""
    return text(
        "• *{name}*{aliases} · {enabled} · {services} · explicit dispatch: {reach}",
        name=info.name,
        aliases=alias_text,
        enabled=enabled,
        services=services,
        reach=dispatch_reach(info),
    )


def catalog_problem(problem: str) -> Text:
    return text(":warning: {problem}", problem=problem)


def no_catalog(aliases: str) -> list[Text]:
    return [
        text(
            "No agent catalog is configured, so any well-formed agent name is accepted and nothing is checked "
            "before a dispatch."
        ),
        text(
            "Point OPENVIDU_AGENTS_DIR (or `agents.openvidu_config_dir`) at the folder with OpenVidu's "
            "agent-*.yaml files to have every dispatch checked against them."
        ),
        text("Aliases: {aliases}.", aliases=aliases),
    ]


# --- join links ------------------------------------------------------------------------------------------------


def link_ready(room: str, name: str, identity: str, expires_at: datetime, ttl: str, agents: list[str]) -> Text:
    bring = f", bringing {', '.join(agents)}" if agents else ""
    return text(
        ":link: Your join link for *{room}*{bring}: you join as *{name}* (identity `{identity}`). It works for {ttl}, "
        "until {at} UTC. It is a credential: only you can see it here; do not share it.",
        room=room,
        bring=bring,
        name=name,
        identity=identity,
        ttl=ttl,
        at=expires_at.strftime("%Y-%m-%d %H:%M"),
    )


def link_withheld() -> Text:
    return text("The join link was withheld: a link the audit log does not record is not handed out. Try again.")


def link_room_running(room: str) -> Text:
    return text(
        "*{room}* is already running, so LiveKit would ignore the agents in the link's token (it applies them only "
        "when a join creates the room). The bot dispatched them through the API instead:",
        room=room,
    )


def link_agent_dispatched(agent: str, dispatch_id: str) -> Text:
    return text("• *{agent}*: dispatched now (dispatch `{id}`).", agent=agent, id=dispatch_id)


def link_agent_already_there(agent: str, dispatch_id: str) -> Text:
    return text("• *{agent}*: already dispatched (dispatch `{id}`); nothing was added.", agent=agent, id=dispatch_id)


def link_room_not_running(room: str, agents: list[str]) -> Text:
    return text(
        "*{room}* is not running: your connection will create it, and then {agents} join with you.",
        room=room,
        agents=", ".join(agents),
    )


# --- audit -----------------------------------------------------------------------------------------------------


def audit_header(count: int, filters: str, zone: str) -> Text:
    if not count:
        return text("No audit rows match {filters}.", filters=filters)
    return text(
        "*Audit*: the {n} newest row{s} matching {filters} (times in {zone}):",
        n=str(count),
        s="" if count == 1 else "s",
        filters=filters,
        zone=zone,
    )


def audit_entry(when: str, who: str | Mention, raw: str, room: str, outcome: str, detail: str) -> Text:
    where = text(" in *{room}*", room=room) if room else text("")
    return text(
        "• {when} · {who} · `{raw}`" + where.template + " · *{outcome}* {detail}",
        when=when,
        who=who,
        raw=shorten(raw, 120),
        outcome=outcome,
        detail=shorten(detail, 200),
        **where.values,
    )


def audit_more(more: int, capped: bool) -> Text:
    count = f"More than {more:,}" if capped else f"{more:,} more"
    return text(
        "{count} row{s} match. Narrow with since:, room:, agent:, user: or outcome:, raise limit: (up to "
        "100 here), or export everything with `dispatch-bot audit --all --format csv`.",
        count=count,
        s="" if more == 1 and not capped else "s",
    )


# --- access policy ---------------------------------------------------------------------------------------------


def denied(action: str, agent: str, room: str, rule: str) -> Text:
    what = text("{action}", action=action)
    if agent:
        what = text("{action} *{agent}*", action=action, agent=agent)
    if room:
        what = Text(what.template + " in *{room}*", {**what.values, "room": room})
    why = text("rule `{rule}` of the policy denies it", rule=rule) if rule else text("no rule of the policy allows it")
    return Text(
        ":no_entry_sign: You may not " + what.template + ": " + why.template + ". Nothing was done.",
        {**what.values, **why.values},
    )


# --- rooms -----------------------------------------------------------------------------------------------------


def rooms_header(count: int, url: str) -> Text:
    if not count:
        return text("No rooms are running on {url}.", url=url)
    return text("*{n}* room{s} running on {url}:", n=str(count), s="" if count == 1 else "s", url=url)


def room_entry(room: str, participants: int, age: str) -> Text:
    return text(
        "• *{room}* · {p} participant{s} · created {age}",
        room=room,
        p=str(participants),
        s="" if participants == 1 else "s",
        age=age,
    )


def rooms_more(more: int) -> Text:
    return text("…and {n} more.", n=f"{more:,}")


# --- Slack user groups in the policy ---------------------------------------------------------------------------


def group_unreadable(action: str, agent: str, room: str, group: str, why: str) -> Text:
    what = text("{action}", action=action)
    if agent:
        what = text("{action} *{agent}*", action=action, agent=agent)
    if room:
        what = Text(what.template + " in *{room}*", {**what.values, "room": room})
    return Text(
        ":no_entry_sign: You may not "
        + what.template
        + " now: the policy decides by the user group {group}, and Slack would not say who is in it ({why}). "
        "Nothing was done; try again in a minute.",
        {**what.values, "group": group, "why": why},
    )
