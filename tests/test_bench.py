"""The benchmark command runs and reports every SPEC §9 figure with its floor (its timings are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_quick_bench_reports_every_figure_beside_its_floor_and_target(tmp_path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--db", "sqlite,postgresql", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(results["databases"]) == {"sqlite", "postgresql"} and results["quick"] is True
    for kind, figures in results["databases"].items():
        assert figures["latency"]["figure"]["n"] > 0 and figures["latency"]["floor"]["n"] > 0, kind
        assert figures["windows"]["expiry"]["figure"]["n"] > 0 and figures["windows"]["expiry"]["floor"]["n"] > 0
        assert figures["windows"]["restart"]["windows_armed"] >= figures["windows"]["restart"]["open"]
        assert figures["ingest"]["figure_per_s"] > 0 and figures["ingest"]["floor_per_s"] > 0
        assert figures["ingest"]["pages"] == 3 * figures["ingest"]["incidents"]  # voice, SMS and push for each
        assert figures["memory"]["windows_armed"] == figures["memory"]["open"] and figures["memory"]["figure_mib"] > 0
    table = result.stdout.split("\n{")[0]
    assert table.count("| sqlite |") == 5 and table.count("| postgresql |") == 5
    for target in ("p99 ≤ 50 ms", "p99 ≤ 100 ms", "≥ 500/s", "≤ 1 GiB", "≤ 10 s"):
        assert table.count(target) == 2, target
    assert "raw JetStream" in table and "bare asyncio timer" in table
