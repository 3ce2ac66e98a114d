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
        "*{room}*: {n} dispatch{es}, {p} {ps} in the room.",
        room=room,
        n=str(count),
        es="" if count == 1 else "es",
        p=str(participants),
        ps="person" if participants == 1 else "people",
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


def link_agent_already_there(agent: str, ids: list[str], identity: str) -> Text:
    if identity:
        return text(
            "• *{agent}*: already in the room as `{identity}`; nothing was added.", agent=agent, identity=identity
        )
    return text(
        "• *{agent}*: already dispatched (dispatch `{id}`) and on its way; nothing was added.",
        agent=agent,
        id="`, `".join(ids),
    )


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
        "• *{room}* · {p} {s} · created {age}",
        room=room,
        p=str(participants),
        s="person" if participants == 1 else "people",
        age=age,
    )


def rooms_more(more: int) -> Text:
    return text("…and {n} more.", n=f"{more:,}")


# --- presence and supervision ------------------------------------------------------------------------------------


def already_in_room(agent: Text, room: str, identity: str, ids: list[str]) -> Text:
    where = " (dispatch `{ids}`)" if ids else ""
    return text(
        ":information_source: " + agent.template + " is already in *{room}* as `{identity}`" + where + ". "
        "Nothing was sent; add `--force` to send another one.",
        room=room,
        identity=identity,
        ids="`, `".join(ids),
        **agent.values,
    )


def already_on_its_way(agent: Text, room: str, ids: list[str]) -> Text:
    return text(
        ":information_source: " + agent.template + " was dispatched into *{room}* moments ago (dispatch `{ids}`) "
        "and is on its way. Nothing was sent; `/dispatch list {room}` shows when it joins.",
        room=room,
        ids="`, `".join(ids),
        **agent.values,
    )


def stale_replaced(agent: str, room: str, ids: list[str], why: str) -> Text:
    return text(
        ":recycle: Removed the stale dispatch `{ids}` of *{agent}* in *{room}* ({why}) and sent a new one.",
        ids="`, `".join(ids),
        agent=agent,
        room=room,
        why=why,
    )


def keep_on(agent: str) -> Text:
    return text(
        ":repeat: `--keep`: if *{agent}* leaves while people remain, the bot sends it again.",
        agent=agent,
    )


def taken_never_joined(agent: str, seconds: float, identity: str) -> list[Text]:
    return [
        text(
            ":warning: A worker took the job (as `{identity}`), but within {s} s no `{agent}` agent joined the room. "
            "It probably failed on start: its logs on the agent host say why (on OpenVidu, "
            "`docker logs agent-{agent}`).",
            identity=identity,
            s=f"{seconds:g}",
            agent=agent,
        ),
        text("Fix the cause, then dispatch again: the bot replaces this dispatch instead of calling it a duplicate."),
    ]


def presence_state(kind: str, identity: str, since: str, reason: str) -> str:
    """One dispatch's state in `list` and `rooms`, from the room's participants."""
    if kind == "in_room":
        return f"in the room as {identity}" + (f" (joined {since})" if since else "")
    if kind == "waiting":
        return "waiting for its agent to join"
    if kind == "left":
        return "left" + (f" {since}" if since else "") + f": {reason}"
    if kind == "never_joined":
        return f"never joined (a worker took the job as {identity}; its agent is not in the room)"
    return "no agent: no worker took the job"


def other_agents(agents: list[tuple[str, str]]) -> Text:
    shown = ", ".join(f"{name or 'automatic'} ({identity})" for name, identity in agents)
    return text("• agents in the room that no dispatch here brought: {shown}", shown=shown)


def room_agents(states: list[tuple[str, str]]) -> Text:
    shown = "; ".join(f"{name or 'automatic'}: {state}" for name, state in states)
    return text("   ↳ {shown}", shown=shown)


def no_rules() -> list[Text]:
    return [
        text("No dispatch rules are configured."),
        text(
            "Add `rules:` to the config file (a name, a room pattern, agents and a channel) and rooms that match "
            "get their agents as they start. The README's *Agent supervision* section shows how."
        ),
    ]


def rules_header(count: int) -> Text:
    return text("*{n}* dispatch rule{s} (checked as rooms start):", n=str(count), s="" if count == 1 else "s")


def rule_entry(name: str, rooms: str, agents: list[str], channel: str) -> Text:
    return text(
        "• *{name}*: rooms `{rooms}` get {agents}; announced in <#{channel}>",
        name=name,
        rooms=rooms,
        agents=", ".join(agents),
        channel=channel,
    )


def rule_latest(room: str, agent: str, outcome: str, detail: str, when: str) -> Text:
    return text(
        "   ↳ {when}: *{agent}* in *{room}*: {outcome} ({detail})",
        when=when,
        agent=agent,
        room=room,
        outcome=outcome,
        detail=shorten(detail, 120),
    )


def rule_idle() -> Text:
    return text("   ↳ no room has matched it yet.")


def duration_words(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def agent_left_alert(agent: str, room: str, stayed: str, why: str, people: int) -> Text:
    return text(
        ":rotating_light: *{agent}* left *{room}*{stayed}: {why}. {people} still in the room.",
        agent=agent,
        room=room,
        stayed=f" after {stayed}" if stayed else "",
        why=why,
        people=f"{people} person is" if people == 1 else f"{people} people are",
    )


def agent_left_todo(agent: str) -> Text:
    return text(
        "Check the agent's logs on the agent host (on OpenVidu, `docker logs agent-{agent}`), then send it again "
        "with the button below.",
        agent=agent,
    )


def keep_will_retry(seconds: float, attempt: int, retries: int) -> Text:
    return text(
        ":repeat: `--keep`: the bot sends it again in {s} (attempt {n} of {max}).",
        s=duration_words(seconds),
        n=str(attempt),
        max=str(retries),
    )


def keep_attempt(agent: str, room: str, dispatch_id: str, attempt: int, retries: int) -> Text:
    return text(
        ":repeat: `--keep` attempt {n} of {max}: sent *{agent}* into *{room}* again (dispatch `{id}`).",
        n=str(attempt),
        max=str(retries),
        agent=agent,
        room=room,
        id=dispatch_id,
    )


def keep_attempt_failed(agent: str, attempt: int, retries: int, seconds: float, sentence: str = "") -> Text:
    why = sentence or f"no *{agent}* agent joined within {seconds:g} s"
    return text(":warning: `--keep` attempt {n} of {max} failed: {why}.", n=str(attempt), max=str(retries), why=why)


def keep_back(agent: str, room: str, identity: str) -> Text:
    return text(
        ":white_check_mark: *{agent}* is back in *{room}* as `{identity}`.", agent=agent, room=room, identity=identity
    )


def keep_gave_up(agent: str, room: str, retries: int) -> list[Text]:
    return [
        text(
            ":x: `--keep` gave up: *{agent}* did not come back to *{room}* after {n} attempt{s}.",
            agent=agent,
            room=room,
            n=str(retries),
            s="" if retries == 1 else "s",
        ),
        text(
            "Check that its worker is running and registered under `{agent}` (`/dispatch agents`, and its logs on "
            "the agent host), then dispatch it again.",
            agent=agent,
        ),
    ]


def rule_dispatch_intro(rule: str, room: str) -> Text:
    return text("Rule *{rule}*: *{room}* started.", rule=rule, room=room)


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


def interrupted(command_text: str) -> list[Text]:
    return [
        text(
            ":warning: dispatch-bot stopped while your command `{command}` was running, so it may or may not have "
            "taken effect. It was not run again.",
            command=shorten(command_text, 200),
        ),
        text(
            "`/dispatch list <room>` shows what is in the room now, and `/dispatch audit outcome:interrupted` what was "
            "recorded."
        ),
    ]


# --- per-person limits -----------------------------------------------------------------------------------------


def rate_limited(limit: int, seconds: int) -> Text:
    return text(
        ":no_entry_sign: You have run {limit} commands that change something in the last minute, the most one "
        "person may. Nothing was done; try again in {seconds} s.",
        limit=str(limit),
        seconds=str(seconds),
    )


# --- the demo (`--demo`: the LiveKit stand-in in this process) -------------------------------------------------

DEMO_SERVER = "the demo LiveKit server (in this process)"


def demo_note() -> Text:
    return text("_Demo: this answer comes from the demo LiveKit server in this process; no real room was touched._")
