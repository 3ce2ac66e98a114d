"""bench/observability.py runs end to end at a tiny size and counts every instrumented command (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_bench_runs_every_target_and_reports_ratios_to_the_baseline(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.observability", "--commands", "5", "--rounds", "1", "--dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()[1:4]] == ["off", "plain", "json"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.observability", "--commands", "5", "--rounds", "1", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(done.stdout)
    assert report["ratio_to_off"]["off"] == 1.0
    assert set(report["rounds"]) == {"off", "plain", "json"}
