"""The benchmark command runs and reports every SPEC §9 figure with its floors (its timings are not asserted; the
burst's guarantees — nothing lost, nothing failed, no breaker opened — are)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_quick_bench_reports_every_figure_beside_its_floor_and_target(tmp_path) -> None:
    """`python -m bench --quick` on the path users run: `escalator run` and the doubles as processes."""
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--db", "sqlite,postgresql", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(results["databases"]) == {"sqlite", "postgresql"} and results["quick"] is True
    assert results["doubles"]["twilio"]["per_s"] > 0 and results["doubles"]["fcm"]["per_s"] > 0
    assert results["postgresql_round_trips_per_s"] > 0
    for kind, figures in results["databases"].items():
        assert figures["latency"]["figure"]["n"] > 0 and figures["latency"]["floor"]["n"] > 0, kind
        assert figures["windows"]["figure"]["n"] > 0 and figures["windows"]["floor"]["n"] > 0
        burst = figures["burst"]
        assert burst["all_channels"] == burst["count"] and burst["pages_failed"] == 0 and burst["breakers_opened"] == 0, kind
        assert burst["ingest_per_s"] > 0 and burst["floor_per_s"] > 0
        memory = figures["memory"]
        # every window re-armed, or already due and fired (a start slower than the quick run's first deadlines)
        armed = memory["windows_armed"] + memory.get("windows_fired_by_ready", 0)
        assert armed >= memory["open"] and memory["rss_mib"] > 0 and memory["restart_s"] > 0, (kind, memory)
    storm = results["storm"]  # provider physics, on the first database: Twilio's 1 call/s and 1 text/s
    assert storm["db"] == "sqlite" and storm["first_calls"] == storm["first_texts"] == storm["first_pushes"] == storm["count"]
    assert storm["calls_placed_in_leg"] + storm["calls_cancelled_queued"] <= storm["first_calls"]
    assert storm["texts_delivered"] + storm["texts_expired_30036"] <= storm["first_texts"]
    assert storm["breakers_opened"] == 0 and storm["calls_leg_unknown"] == 0
    table = result.stdout.split("\n{")[0]
    assert table.count("| sqlite |") == 7 and table.count("| postgresql |") == 6
    assert "storm at Twilio's 1 call/s" in table
    for target in ("p99 ≤ 50 ms", "p99 ≤ 100 ms", "≥ 500/s", "≤ 512 MiB", "≤ 10 s", "all paged, 0 failed, 0 opened, ≤ 20 s"):
        assert table.count(f"| {target} |") == 2, target
    assert "raw JetStream" in table and "bare asyncio timer" in table and "doubles alone" in table and "round trips/s" in table
