"""bench/supervision.py runs end to end at tiny sizes and reports what the servers saw (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "--warmup", "5",
    "--throughput-requests", "20", "--throughput-rounds", "1", "--throughput-rooms", "2",
    "--latency-rooms", "2", "--latency-rounds", "2",
    "--poll-rooms", "3", "--poll-requests", "6", "--poll-rounds", "1", "--poll-concurrency", "2",
]  # fmt: skip


def test_every_section_runs_at_tiny_sizes_and_counts_what_the_stand_ins_received() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.supervision", "all", "--json", *TINY],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)

    throughput = report["throughput"]
    assert [r["target"] for r in throughput["rounds"]] == ["bare", "bot"]
    assert throughput["errors"]["count"] == 0
    assert all(r["per_second"] > 0 for r in throughput["rounds"])

    latency = report["latency"]
    assert latency["config"]["departures_per_target"] == 4
    assert latency["bot_alert_audit_rows"] == 4  # one alert per departure, each an audit row

    poll = report["poll"]
    assert poll["livekit_calls_per_poll"] == [{"ListRooms": 1, "ListParticipants": 3}]
    assert [r["target"] for r in poll["rounds"]] == ["idle", "polling"]
    assert poll["rounds"][1]["polls"] >= 1
    assert poll["errors"]["count"] == 0


def test_the_table_names_each_figure_and_its_baseline() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.supervision", "poll", *TINY],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ListParticipants 3, ListRooms 1" in done.stdout
    assert "polling/idle:" in done.stdout
