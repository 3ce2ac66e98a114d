"""Every sentence the commands show a user, in one place so they can be read, reviewed and escaped together.

Templates are ours; `{name}` values are user or server text and are escaped by the renderer.
"""

from __future__ import annotations

from datetime import datetime

from .grammar import shorten
from .reply import Mention, Text, text


def usage(command: str, usage_line: str) -> Text:
    return text("Usage: `{usage}`", usage=f"{command} {usage_line}")


def invalid(sentence: str) -> Text:
    return text("{sentence}", sentence=sentence)


def more_help(command: str) -> Text:
    return text("`{cmd} help` lists every command.", cmd=command)


def nothing_given() -> str:
    return "Tell me what to do: an agent and a room, or a subcommand."


def not_available(sub: str) -> str:
    return f"`{sub}` is not available in this version of dispatch-bot."


def unknown_subcommand(word: str, suggestion: str) -> str:
    return f"{shorten(word, 40)} is not a command. Did you mean {suggestion}?"


def unknown_agent_near(agent: str, suggestion: str) -> str:
    return f"There is no agent called {shorten(agent, 40)}. Did you mean {suggestion}?"


def reserved_agent(word: str) -> str:
    return f"{word} is a subcommand, so it cannot be an agent name."


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


def not_joined(agent: str, seconds: float) -> list[Text]:
    return [
        text(
            ":warning: No agent joined within {s} s. The dispatch exists, but LiveKit started no job for it. "
            "Likely causes:",
            s=f"{seconds:g}",
        ),
        text(
            "• no agent worker is registered under the name `{agent}` (is its container running? "
            "a worker that starts later never picks up this dispatch);",
            agent=agent,
        ),
        text(
            "• the agent runs in `processing: automatic`, so it registers with no name and only joins new "
            "rooms by itself;"
        ),
        text("• the agent is disabled (`enabled: false`) or its node is above its CPU `load_threshold`."),
        text("Fix the cause, then stop this dispatch and dispatch again."),
    ]


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
