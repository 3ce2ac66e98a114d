"""Each benchmark script runs end to end at a tiny size, so none of them rots. No timing is asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent

TINY = {
    "ack_latency": ["--requests", "6", "--concurrency", "2", "--rounds", "1"],
    "audit_store": ["--rows", "300", "--queries", "2", "--commands", "8", "--concurrency", "2", "--rounds", "2"],
    "link_mint": ["--tokens", "20", "--commands", "5", "--rounds", "1"],
    "end_to_end": ["--rates", "20", "--duration", "0.3", "--warmup", "3"],
    "audit_prune": ["--rows", "300", "--quiet", "0.1", "--batch", "40"],
    "audit_export": ["--rows", "300", "--rounds", "1"],
    "start": ["--rounds", "1", "--warmup", "0"],
    "kill_restart": ["--commands", "20", "--rounds", "1", "--kill-after", "0.2"],
    "memory": ["--commands", "12", "--every", "6", "--warmup", "6", "--rooms", "2", "--rate", "50"],
}


def run_bench(name: str, tmp_path: Path) -> dict[str, Any]:
    with_dir = ("audit_store", "link_mint", "audit_prune", "audit_export", "start")
    extra = ["--dir", str(tmp_path)] if name in with_dir else []
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", *TINY[name], *extra, "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


@pytest.mark.parametrize("name", sorted(TINY))
def test_benchmark_runs_at_a_tiny_size(name: str, tmp_path: Path) -> None:
    report = run_bench(name, tmp_path)
    assert report["config"]  # every report says what it ran
    if name == "end_to_end":
        rounds = report["rounds"]
        assert {(r["target"], r["commands"], r["errors"]) for r in rounds} == {
            ("bare", 6, 0),
            ("minimal", 6, 0),
            ("bot", 6, 0),
        }
        assert all(r["completed_per_s"] > 0 and r["cpu_ms_per_command"] > 0 for r in rounds)
        (cell,) = report["median_of_rounds"].values()
        assert set(cell["ratio_completed"]) == {"bot/bare", "bot/minimal"} and set(cell["ratio_cpu"]) == {"bot/minimal"}
    elif name == "audit_prune":
        assert report["pruned"]["rows"] == 150 and report["verify"]["intact"]
        assert report["pruned"]["batches"] == 4  # 150 rows, 40 at a time
        assert report["config"]["after"] and "after" in report  # the same time without a prune, for comparison
    elif name == "memory":
        assert report["errors"] == 0
        assert [s["commands"] for s in report["samples"]] == [6, 12] and report["baseline_rss_mb"] > 0
        assert report["audit_rows"] >= 12  # every command finished with its row before its sample
    elif name == "kill_restart":
        (round_,) = report["rounds"]
        assert report["acknowledged_without_row"] == 0 and round_["verify_exit"] == 0
        # every command sent was acknowledged or failed, and every acknowledged one ended with a row
        assert round_["acknowledged"] + round_["not_acknowledged"] + round_["refused_busy_in_ack"] == 20
        assert sum(round_["rows_by_outcome"].values()) >= round_["acknowledged"]
    elif name == "audit_export":
        assert report["errors"] == []  # each product export was byte for byte the plain loop's
        assert set(report["ratio_product_speed_over_plain"]) == {"verify", "jsonl", "csv"}
    elif name == "start":
        assert set(report["ratios"]) >= {
            "--help / python -c pass",
            "serve / bare Bolt",
            "serve / bare Bolt, to first ack",
        }
    elif name == "audit_store":
        assert set(report["ratio_audited_over_baseline"]) == {
            "seq / plain",
            "seq / schema",
            "conc / plain",
            "conc / schema",
        }


def test_end_to_end_with_webhooks_runs_at_a_tiny_size(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.end_to_end",
            *TINY["end_to_end"],
            "--webhooks",
            "--targets",
            "bot,bare",
            "--json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["config"]["webhooks"] is True and report["config"]["targets"] == ["bare", "bot"]
    assert {(r["target"], r["errors"]) for r in report["rounds"]} == {("bare", 0), ("bot", 0)}
    assert all(r["steps_ms"]["command"] > 0 for r in report["rounds"] if r["target"] == "bot")

    # The table reads such a report, and one of a single target (`--targets bot`: no ratios to show).
    from bench.end_to_end import table

    assert "bot done" in table(report)
    alone = {**report, "median_of_rounds": {}}
    alone["median_of_rounds"] = {
        rate: {"bot": cell["bot"], "ratio_completed": {}} for rate, cell in report["median_of_rounds"].items()
    }
    assert "/s: bot done" in table(alone) and "Traceback" not in table(alone)
