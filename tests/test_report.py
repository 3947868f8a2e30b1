"""`escalator report` and `escalator incident export` (SPEC §12) against a history seeded through the
real walk and store (every step as the daemon takes it, at chosen moments), with known answers, on
SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path

import pytest

from escalator import clock, ladder_files
from escalator import walk as w
from escalator.store.catalog import Catalog
from escalator.store.db import make_engine
from escalator.store.incidents import IncidentStore, NewIncident
from escalator.walk import Acknowledge, PageCmd, PageFailed, Resolve, WindowExpired
from tests.conftest import Cli, write

FILES = """\
contacts:
  - {id: alice, name: Alice, phone: "+14155550101", push_tokens: ["tok-a"]}
  - {id: bob, name: Bob, phone: "+14155550102"}
  - {id: carol, name: Carol, phone: "+14155550103", push_tokens: ["tok-c"]}
---
ladder: night
ack_timeout: 120s
legs:
  - {name: primary, contacts: [alice]}
  - {name: secondary, contacts: [bob]}
---
ladder: day
ack_timeout: 120s
legs:
  - {name: primary, contacts: [carol], channels: [voice, sms]}
"""


@pytest.fixture
def history(cli: Cli, tmp_path: Path) -> Cli:
    """Five incidents in the last day (and one nine days ago), with known times to acknowledge:
    night 30 s (alice, sms), 150 s (bob, voice, after the first window), 60 s (alice, voice, then
    resolved); day 10 s (carol, voice); and a day incident nobody could be reached for."""
    engine = make_engine(cli.env["ESCALATOR_DATABASE_URL"])
    Catalog(engine).apply(ladder_files.load([write(tmp_path / "f.yaml", FILES)]), "test", clock.now())
    store = IncidentStore(engine)
    t = clock.now() - timedelta(days=1)

    def opened(incident_id: str, ladder: str, at):
        return store.open(NewIncident(incident_id, ladder, "No heat"), None, at)

    opened("old", "night", t - timedelta(days=8))
    store.step("old", Acknowledge("alice", "sms", "alice"), t - timedelta(days=8) + timedelta(seconds=5))
    opened("n1", "night", t)
    store.step("n1", Acknowledge("alice", "sms", "alice"), t + timedelta(seconds=30))
    opened("n2", "night", t + timedelta(hours=1))
    store.step("n2", WindowExpired(1, 0), t + timedelta(hours=1, seconds=120))
    store.step("n2", Acknowledge("bob", "voice", "bob"), t + timedelta(hours=1, seconds=150))
    opened("n3", "night", t + timedelta(hours=2))
    store.step("n3", Acknowledge("alice", "voice", "alice"), t + timedelta(hours=2, seconds=60))
    store.step("n3", Resolve("alice"), t + timedelta(hours=3))
    opened("d1", "day", t + timedelta(hours=3))
    store.step("d1", Acknowledge("carol", "voice", "carol"), t + timedelta(hours=3, seconds=10))
    d2 = opened("d2", "day", t + timedelta(hours=4))
    for page in [c for c in d2.commands if isinstance(c, PageCmd)]:
        reason = "voice busy" if page.channel == "voice" else "sms undelivered"
        store.step("d2", PageFailed(page, reason), t + timedelta(hours=4, seconds=5))
    engine.dispose()
    return cli


def report(cli: Cli, *args: str) -> dict:
    result = cli("report", "--since", "7d", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_report_of_a_seeded_week_has_the_known_answers(history: Cli) -> None:
    r = report(history)
    assert r["incidents"] == {"opened": 5, "acknowledged": 4, "resolved": 1, "exhausted": 0, "reopened": 0}  # "old" is out
    assert r["acknowledged_by_channel"] == {"sms": 1, "voice": 3}
    tta = r["time_to_acknowledge"]
    # nearest rank: the smallest time with at least p % of them at or below it
    assert tta["overall"] == {"n": 4, "p50_s": 30.0, "p90_s": 150.0, "max_s": 150.0}
    assert tta["by_ladder"] == {
        "day": {"n": 1, "p50_s": 10.0, "p90_s": 10.0, "max_s": 10.0},
        "night": {"n": 3, "p50_s": 60.0, "p90_s": 150.0, "max_s": 150.0},
    }
    assert tta["by_contact"] == {
        "alice": {"n": 2, "p50_s": 30.0, "p90_s": 60.0, "max_s": 60.0},
        "bob": {"n": 1, "p50_s": 150.0, "p90_s": 150.0, "max_s": 150.0},
        "carol": {"n": 1, "p50_s": 10.0, "p90_s": 10.0, "max_s": 10.0},
    }
    assert {"channel": "sms", "outcome": "failed", "count": 1} in r["pages"]
    assert {"channel": "voice", "outcome": "failed", "count": 1} in r["pages"]
    assert r["unreachable_legs"] == [{"ladder": "day", "leg": "primary", "reason": w.UNREACHABLE, "count": 1}]
    # alice was paged for three incidents and took two; carol for two and took one
    assert r["unanswered"] == [{"contact": "alice", "paged": 3, "acknowledged": 2}, {"contact": "carol", "paged": 2, "acknowledged": 1}]
    assert r["failure_reasons"] == [{"reason": "sms undelivered", "count": 1}, {"reason": "voice busy", "count": 1}]


def test_the_report_narrows_to_a_ladder_and_a_period(history: Cli) -> None:
    day = report(history, "--ladder", "day")
    assert day["incidents"]["opened"] == 2 and list(day["time_to_acknowledge"]["by_ladder"]) == ["day"]
    ten_days = json.loads(history("report", "--since", "10d", "--json").stdout)
    assert ten_days["incidents"]["opened"] == 6 and ten_days["time_to_acknowledge"]["overall"]["n"] == 5
    short = json.loads(history("report", "--since", "1m", "--json").stdout)
    assert short["incidents"]["opened"] == 0 and short["time_to_acknowledge"]["overall"] is None


def test_the_report_as_csv_and_as_a_table(history: Cli) -> None:
    rows = list(csv.reader(io.StringIO(history("report", "--csv").stdout)))
    assert rows[0] == ["section", "group", "metric", "value"]
    assert ["incidents", "", "opened", "5"] in rows and ["time_to_acknowledge.by_ladder", "night", "p50_s", "60.0"] in rows
    assert ["unanswered", "alice", "paged", "3"] in rows
    text = history("report").stdout
    assert "5 opened · 4 acknowledged (1 by sms, 3 by voice)" in text and "2m30s" in text and "never answered" in text


@pytest.mark.parametrize(("args", "words"), [
    (("--since", "forever"), "--since: 'forever' is not a length of time"),
    (("--ladder", "Night Shift"), "--ladder"),
    (("--json", "--csv"), "choose one of --json and --csv"),
])
def test_report_refusals(history: Cli, args: tuple[str, ...], words: str) -> None:
    result = history("report", *args)
    assert result.exit_code == 2 and words in result.stderr, result.output


# -- the audit export ---------------------------------------------------------------------------


def test_the_export_has_every_event_of_the_period_in_fixed_columns(history: Cli, tmp_path: Path) -> None:
    from escalator.store.exports import COLUMNS

    lines = [json.loads(line) for line in history("incident", "export", "--since", "7d").stdout.splitlines()]
    assert all(tuple(line) == COLUMNS for line in lines)
    assert {line["incident_id"] for line in lines} == {"n1", "n2", "n3", "d1", "d2"}  # "old" is out of the period
    n2 = [line for line in lines if line["incident_id"] == "n2"]
    assert [line["seq"] for line in n2] == list(range(1, len(n2) + 1))  # each timeline whole and in order
    assert [line["event"] for line in n2] == ["opened", "leg_started", "leg_timed_out", "leg_started", "acknowledged"]
    ack = n2[-1]
    assert (ack["by"], ack["channel"], ack["contact"], ack["leg"], ack["cycle"], ack["ladder"]) == ("bob", "voice", "bob", "secondary", 1, "night")
    assert n2[0]["data"]["summary"] == "No heat" and ack["at"].endswith("Z")
    assert [line["at"] for line in lines] == sorted(line["at"] for line in lines)
    out = tmp_path / "audit.csv"
    assert history("incident", "export", "--since", "7d", "--format", "csv", "-o", out).exit_code == 0
    table = list(csv.reader(out.open()))
    assert tuple(table[0]) == COLUMNS and len(table) == len(lines) + 1
    assert table[1 + [i for i, line in enumerate(lines) if line is ack][0]][COLUMNS.index("by")] == "bob"
    refused = history("incident", "export", "--format", "xml")
    assert refused.exit_code == 2 and "'xml' is not a format" in refused.stderr


def test_the_export_streams_in_constant_memory(engine, tmp_path: Path) -> None:
    """Peak Python memory of an export of 100,000 events is that of 10,000: nothing grows with the count."""
    import tracemalloc

    import sqlalchemy as sa

    from escalator.store import exports
    from escalator.store.tables import IncidentEventRow, IncidentRow, LadderVersionRow

    Catalog(engine).apply(ladder_files.load([write(tmp_path / "f.yaml", FILES)]), "test", clock.now())
    t0 = clock.now() - timedelta(hours=1)
    with engine.begin() as c:
        version = c.execute(sa.select(sa.func.max(LadderVersionRow.version)).where(LadderVersionRow.ladder == "night")).scalar()

    def seed(incidents: int, start: int) -> None:
        with engine.begin() as c:
            c.execute(sa.insert(IncidentRow.__table__), [dict(
                id=f"m{start + i}", ladder="night", version=version, status="resolved", summary="No heat", plan={}, state={},
                opened_at=t0, updated_at=t0, deadline=None, owner=None, acked_by=None, closed_at=t0,
            ) for i in range(incidents)])
            c.execute(sa.insert(IncidentEventRow.__table__), [dict(
                incident_id=f"m{start + i}", seq=s, event="page_sent", at=t0 + timedelta(milliseconds=i * 10 + s),
                data={"contact": "alice", "channel": "sms", "cycle": 1, "leg": "primary", "leg_index": 0},
            ) for i in range(incidents) for s in range(1, 11)])

    def peak() -> tuple[int, int]:
        with (tmp_path / "out.jsonl").open("w") as out:
            tracemalloc.start()
            count = exports.write(engine, t0 - timedelta(minutes=1), clock.now(), "jsonl", out)
            _, top = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        return count, top

    seed(1_000, 0)
    small = peak()
    seed(9_000, 1_000)
    large = peak()
    assert (small[0], large[0]) == (10_000, 100_000)
    assert large[1] < small[1] * 1.5 + 512 * 1024, (small, large)
