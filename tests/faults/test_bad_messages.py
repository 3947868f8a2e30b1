"""Fault injection: a corpus of bad incident messages against the real daemon, real nats-server and both
databases. Every message is rejected on `escalations.rejected` with a reason that names what is wrong,
or (an unknown ladder) walked on ESCALATOR_DEFAULT_LADDER; the daemon never crashes, nothing is left
unacknowledged on the consumer, and a good incident afterwards is paged as usual."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest
import sqlalchemy as sa

from tests.recording import RecordingChannel
from tests.harness import eventually, running_daemon, stream_events
from tests.test_engine import ladders, nats_server, settings  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow


def urgent(**fields) -> bytes:
    return json.dumps(fields).encode()


def good(incident_id: str, **extra) -> dict:
    return {"id": incident_id, "ladder": "night", "summary": "No heat", **extra}


U = "incidents.urgent"
# (subject, body, what the reason must mention); None as the reason: walked on the default ladder
CORPUS: list[tuple[str, bytes, str | None]] = [
    # broken JSON and bodies that are not objects
    (U, b"{", "invalid JSON"), (U, b'{"id":', "invalid JSON"), (U, b"not json at all", "invalid JSON"), (U, b"", "invalid JSON"),
    (U, b'{"id": "x",}', "invalid JSON"), (U, b"{'id': 'x'}", "invalid JSON"), (U, b"[1, 2", "invalid JSON"),
    (U, b"nul", "invalid JSON"), (U, b'{"a": 1}{"b": 2}', "invalid JSON"), (U, b"\xff\xfe\x00bad", "not UTF-8"),
    (U, b"[]", "body must be a JSON object"), (U, b'"a string"', "body must be a JSON object"), (U, b"42", "body must be a JSON object"), (U, b"null", "body must be a JSON object"),
    (U, b"true", "body must be a JSON object"),
    # wrong types
    (U, urgent(id=12345, ladder="night", summary="x"), "id:"), (U, urgent(id=None, ladder="night", summary="x"), "id:"),
    (U, urgent(id="t-ladder", ladder=7, summary="x"), "ladder:"), (U, urgent(id="t-sum-list", ladder="night", summary=["x"]), "summary:"),
    (U, urgent(id="t-sum-obj", ladder="night", summary={"a": 1}), "summary:"),
    (U, urgent(**good("t-caller-num"), caller=14155550101), "caller:"),
    (U, urgent(**good("t-sev-num"), severity=3), "severity:"), (U, urgent(**good("t-occ-num"), occurred_at=1700000000), "occurred_at:"),
    (U, urgent(**good("t-det-list"), details=[1, 2]), "details:"), (U, urgent(**good("t-det-str"), details="x"), "details:"),
    # missing or empty fields
    (U, urgent(ladder="night", summary="x"), "id:"), (U, urgent(id="t-no-ladder", summary="x"), "ladder:"),
    (U, urgent(id="t-no-summary", ladder="night"), "summary:"), (U, urgent(id="t-empty-summary", ladder="night", summary=""), "summary:"),
    (U, urgent(id="t-empty-ladder", ladder="", summary="x"), "ladder:"),
    # huge fields
    (U, urgent(id="t-long-summary", ladder="night", summary="x" * 281), "summary:"),
    (U, urgent(id="i" * 129, ladder="night", summary="x"), "id:"),
    (U, urgent(**good("t-huge"), details={"blob": "x" * 70_000}), "limit is 65536"),
    (U, urgent(**good("t-big-details"), details={"blob": "x" * 17_000}), "details: must be at most 16 KiB"),
    (U, urgent(**good("t-long-sev"), severity="s" * 33), "severity:"),
    # control characters
    (U, urgent(id="t-nul", ladder="night", summary="no heat\x00"), "summary: contains control characters"),
    (U, urgent(id="t-bell", ladder="night", summary="\x07ring"), "summary: contains control characters"),
    (U, urgent(id="t-ansi", ladder="night", summary="\x1b[31mred"), "summary: contains control characters"),
    (U, urgent(id="t-ls", ladder="night", summary="line\u2028sep"), "summary: contains control characters"),
    (U, urgent(id="t\x01ctl", ladder="night", summary="x"), "id:"),
    # injection attempts in the id (refused) and in the ladder (walked on the default, stored verbatim)
    (U, urgent(id="x'; DROP TABLE incidents;--", ladder="night", summary="x"), "id:"),
    (U, urgent(id="../../etc/passwd", ladder="night", summary="x"), "id:"),
    (U, urgent(id="t-inj-ladder", ladder="night'; DROP TABLE ladders;--", summary="Robert'); DROP TABLE incidents;--"), None),
    (U, urgent(id="t-inj-path", ladder="../night", summary="<script>alert(1)</script>"), None),
    (U, urgent(id="t-inj-tmpl", ladder="{{7*7}}", summary="${jndi:ldap://x/a}"), None),
    # bad caller numbers
    (U, urgent(**good("t-ph-local"), caller="555-1234"), "caller:"), (U, urgent(**good("t-ph-short"), caller="+1"), "caller:"),
    (U, urgent(**good("t-ph-noplus"), caller="14155550101"), "caller:"),
    (U, urgent(**good("t-ph-long"), caller="+1415555010123456789"), "caller:"), (U, urgent(**good("t-ph-empty"), caller=""), "caller:"),
    # unknown ladders: walked on the default
    (U, urgent(id="t-unknown", ladder="no-such-ladder", summary="x"), None), (U, urgent(id="t-case", ladder="NIGHT", summary="x"), None),
    (U, urgent(id="t-spaces", ladder="night shift", summary="x"), None), (U, urgent(id="t-long-ladder", ladder="n" * 200, summary="x"), None),
    # acknowledgements, passes and resolves that cannot apply
    ("incidents.ack", urgent(id="t-ack-noby"), "by:"), ("incidents.ack", urgent(id="t-ack-num", by=7), "by:"),
    ("incidents.pass", urgent(by="ops"), "id:"), ("incidents.resolve", b"[]", "body must be a JSON object"),
    ("incidents.ack", urgent(id="nobody-opened-this", by="ops"), "no incident"),
    ("incidents.ack", urgent(id="t-ack-ctl", by="o\x00ps"), "by: contains control characters"),
    # what a parser chokes on: each once ended ingest for good (RecursionError, ValueError) or
    # retried forever (NaN refused by PostgreSQL's json type)
    (U, b'{"id": "t-deep", "ladder": "night", "summary": "x", "details": ' + b'{"a": ' * 990 + b"1" + b"}" * 990 + b"}",
     "JSON is nested deeper than 32 levels"),
    (U, b"[" * 40 + b"]" * 40, "nested deeper than 32"),
    (U, b'{"id": "t-bigint", "ladder": "night", "summary": "x", "details": {"n": ' + b"1" * 4400 + b"}}", "4400 characters long"),
    (U, b'{"id": "t-65", "ladder": "night", "summary": "x", "details": {"n": -' + b"1" * 64 + b"}}", "65 characters long"),
    (U, b'{"id": "t-nan", "ladder": "night", "summary": "x", "details": {"n": NaN}}', "NaN is not a JSON number"),
    (U, b'{"id": "t-inf", "ladder": "night", "summary": "x", "details": {"n": Infinity}}', "Infinity is not a JSON number"),
    (U, b'{"id": "t-ovf", "ladder": "night", "summary": "x", "details": {"n": 1e309}}', "out of range"),
    ("incidents.ack", b'{"id": "t-ack-nan", "by": NaN}', "NaN is not a JSON number"),
]


def test_every_bad_message_is_refused_with_its_reason_or_walked_on_the_default_ladder(ladders, db_url, nats_server, tmp_path) -> None:
    assert len(CORPUS) >= 50
    recorder = RecordingChannel("all")
    expected_rejections = [reason for _, _, reason in CORPUS if reason is not None]
    routed = [json.loads(body)["id"] for _, body, reason in CORPUS if reason is None]

    async def scenario():
        async with running_daemon(settings(db_url, nats_server, tmp_path, default_ladder="slow"), recorder) as daemon:
            nc = await nats.connect(nats_server.url)
            js = nc.jetstream()
            for i, (subject, body, _) in enumerate(CORPUS):
                await js.publish(subject, body, headers={"Nats-Msg-Id": f"bad-{i}"}, timeout=10)
            await js.publish(U, json.dumps(good("after-the-storm")).encode(), headers={"Nats-Msg-Id": "good"}, timeout=10)
            await eventually(lambda: daemon.store.get("after-the-storm") is not None, timeout=30)

            async def settled() -> bool:  # every message answered, every event published
                info = await js.consumer_info("INCIDENTS", "escalator")
                return info.num_ack_pending == 0 and info.num_pending == 0 and not daemon.outbox.waiting(1)

            await eventually(settled, timeout=30, interval=0.2)
            await asyncio.sleep(0.5)  # a redelivery, had there been one, would show now
            consumer = await js.consumer_info("INCIDENTS", "escalator")
            await nc.close()
            rows = {i: daemon.store.get(i) for i in routed}
            alive = not daemon.stop_event.is_set()
            with daemon.db.connect() as connection:  # the injection strings reached the database as data
                tables = set(sa.inspect(connection).get_table_names())
            return await stream_events(nats_server.url, "escalations.rejected"), consumer, rows, alive, tables

    rejected, consumer, rows, alive, tables = asyncio.run(scenario())
    reasons = [event["reason"] for event in rejected]
    unmatched = list(reasons)
    for fragment in sorted(expected_rejections, key=len, reverse=True):  # specific fragments first
        match = next((r for r in unmatched if fragment in r), None)
        assert match is not None, f"no rejection mentions {fragment!r}; left: {unmatched}"
        unmatched.remove(match)
    assert unmatched == [] and len(rejected) == len(expected_rejections)
    assert all(row is not None and row.ladder == "slow" for row in rows.values()), rows  # walked on the default
    assert rows["t-inj-ladder"].summary == "Robert'); DROP TABLE incidents;--"
    assert {"incidents", "ladders", "contacts"} <= tables
    assert alive and consumer.num_ack_pending == 0 and consumer.num_pending == 0  # nothing stuck or redelivering
    assert any(r.page.incident_id == "after-the-storm" for r in recorder.pages)  # and paging goes on
    print(f"\nbad-message corpus: {len(CORPUS)} messages, {len(rejected)} rejected with a reason, "
          f"{len(rows)} walked on the default ladder, 0 crashes")
