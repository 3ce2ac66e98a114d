"""The deciding part of supervision, as plain data: a watch and a view of the room in, what the watch becomes out."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dispatch_bot.commands.ports import Participant, WatchRecord
from dispatch_bot.commands.supervision import Departure, RoomView, WatchPolicy, decide

POLICY = WatchPolicy(followup_timeout=20.0, keep_retries=3, keep_backoff=10.0)
AGENT = Participant("agent-AJ_1", kind="AGENT", agent_name="speech-processing")
ALICE = Participant("alice")
T0 = 1_000_000.0


def watch(**changes: object) -> WatchRecord:
    base = WatchRecord(room="r", agent="speech-processing", dispatch_id="AD_1", started_at=T0, room_sid="RM_1")
    return replace(base, **changes)  # type: ignore[arg-type]


PRESENT = watch(state="present", identity="agent-AJ_1", seen_at=T0 + 2)


def view(*participants: Participant, polled: bool = False, sid: str = "RM_1") -> RoomView:
    return RoomView(True, sid, participants, polled=polled)


def test_a_waiting_watch_becomes_present_when_its_agent_is_in_the_room() -> None:
    decision = decide(watch(), view(ALICE, AGENT), {}, set(), T0 + 3, POLICY)
    assert decision.effect == "joined"
    assert (decision.watch.state, decision.watch.identity, decision.watch.seen_at) == ("present", "agent-AJ_1", T0 + 3)


def test_an_agent_another_watch_holds_is_not_taken_for_this_one() -> None:
    decision = decide(watch(), view(ALICE, AGENT), {}, {"agent-AJ_1"}, T0 + 3, POLICY)
    assert (decision.effect, decision.watch.state) == ("none", "waiting")


def test_a_job_snapshot_is_not_presence_an_agent_that_never_comes_closes_quietly_after_the_followup() -> None:
    assert decide(watch(), view(ALICE), {}, set(), T0 + 19, POLICY).watch.state == "waiting"
    decision = decide(watch(), view(ALICE), {}, set(), T0 + 20, POLICY)
    assert (decision.effect, decision.watch.state, decision.watch.closed_reason) == ("quiet", "closed", "never_joined")


def test_a_departure_with_people_left_is_an_alert_and_is_decided_once() -> None:
    departures = {"agent-AJ_1": Departure("agent-AJ_1", "CONNECTION_TIMEOUT", T0 + 60, "speech-processing")}
    decision = decide(PRESENT, view(ALICE), departures, set(), T0 + 61, POLICY)
    assert decision.effect == "alert"
    assert (decision.watch.state, decision.watch.left_reason, decision.watch.left_at) == (
        "closed",
        "CONNECTION_TIMEOUT",
        T0 + 60,
    )
    # the same event again, or the next poll: the watch is closed, nothing more to say
    again = decide(decision.watch, view(ALICE), departures, set(), T0 + 62, POLICY)
    assert (again.effect, again.changed(decision.watch)) == ("none", False)


@pytest.mark.parametrize("reason", ["ROOM_CLOSED", "ROOM_DELETED", "SERVER_SHUTDOWN"])
def test_a_normal_end_is_quiet(reason: str) -> None:
    departures = {"agent-AJ_1": Departure("agent-AJ_1", reason, T0 + 60)}
    decision = decide(PRESENT, view(ALICE), departures, set(), T0 + 61, POLICY)
    assert (decision.effect, decision.watch.closed_reason) == ("quiet", "room_ended")


def test_leaving_an_empty_room_is_quiet() -> None:
    departures = {"agent-AJ_1": Departure("agent-AJ_1", "CONNECTION_TIMEOUT", T0 + 60)}
    decision = decide(PRESENT, view(), departures, set(), T0 + 61, POLICY)
    assert (decision.effect, decision.watch.closed_reason) == ("quiet", "left_empty")


def test_the_room_ending_or_starting_again_under_another_sid_closes_quietly() -> None:
    assert decide(PRESENT, RoomView(False), {}, set(), T0, POLICY).effect == "quiet"
    assert decide(PRESENT, view(ALICE, AGENT, sid="RM_2"), {}, set(), T0, POLICY).watch.closed_reason == "room_ended"


def test_without_webhooks_two_polls_in_a_row_without_the_agent_mean_it_left() -> None:
    first = decide(PRESENT, view(ALICE, polled=True), {}, set(), T0 + 30, POLICY)
    assert (first.effect, first.watch.missing, first.watch.state) == ("none", 1, "present")
    # a look prompted by a webhook does not count as a miss
    assert decide(first.watch, view(ALICE), {}, set(), T0 + 31, POLICY).watch.missing == 1
    # seen again: the count starts over
    assert decide(first.watch, view(ALICE, AGENT, polled=True), {}, set(), T0 + 40, POLICY).watch.missing == 0
    second = decide(first.watch, view(ALICE, polled=True), {}, set(), T0 + 45, POLICY)
    assert (second.effect, second.watch.left_reason) == ("alert", "MISSING")


def test_keep_backs_off_doubling_and_gives_up_after_its_retries() -> None:
    kept = replace(PRESENT, keep=True)
    departures = {"agent-AJ_1": Departure("agent-AJ_1", "CONNECTION_TIMEOUT", T0 + 60)}
    left = decide(kept, view(ALICE), departures, set(), T0 + 60, POLICY)
    assert (left.effect, left.watch.state, left.watch.next_at) == ("alert", "away", T0 + 70)
    assert decide(left.watch, view(ALICE), {}, set(), T0 + 69, POLICY).effect == "none"
    assert decide(left.watch, view(ALICE), {}, set(), T0 + 70, POLICY).effect == "keep_due"

    # the supervisor sends attempt 1 (a new dispatch) and the watch waits again; nothing joins
    attempt = replace(left.watch, state="waiting", keep_attempt=1, started_at=T0 + 70, dispatch_id="AD_2")
    failed = decide(attempt, view(ALICE), {}, set(), T0 + 90, POLICY)
    assert (failed.effect, failed.watch.state, failed.watch.next_at) == ("keep_retry", "away", T0 + 90 + 20)
    third = replace(attempt, keep_attempt=3, started_at=T0 + 200)
    gave_up = decide(third, view(ALICE), {}, set(), T0 + 220, POLICY)
    assert (gave_up.effect, gave_up.watch.closed_reason) == ("keep_gave_up", "gave_up")

    back = decide(attempt, view(ALICE, replace(AGENT, identity="agent-AJ_2")), {}, set(), T0 + 75, POLICY)
    assert (back.effect, back.watch.identity, back.watch.keep_attempt) == ("keep_back", "agent-AJ_2", 0)


def test_a_kept_agent_away_from_a_room_that_emptied_is_not_sent_again() -> None:
    away = replace(PRESENT, keep=True, state="away", next_at=T0)
    assert decide(away, view(), {}, set(), T0 + 1, POLICY).effect == "quiet"


def test_an_agent_that_came_and_went_between_two_looks_is_still_a_departure() -> None:
    departures = {"agent-AJ_9": Departure("agent-AJ_9", "JOIN_FAILURE", T0 + 5, "speech-processing")}
    decision = decide(watch(), view(ALICE), departures, set(), T0 + 6, POLICY)
    assert (decision.effect, decision.watch.identity, decision.watch.left_reason) == (
        "alert",
        "agent-AJ_9",
        "JOIN_FAILURE",
    )
