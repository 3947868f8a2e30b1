"""`escalator incident export` (SPEC §12): the audit timeline of every incident, one event per line,
for an external audit store. Streamed: the rows come from a server-side cursor (PostgreSQL) or the
SQLite cursor in batches, and go out as they come, so memory stays the same for a thousand events
or a million. The columns and their order are fixed (COLUMNS); what an event carries beyond them is
in `data`, as JSON with sorted keys."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any, TextIO

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from escalator.store.db import read_session
from escalator.store.incidents import rfc3339
from escalator.store.tables import IncidentEventRow, IncidentRow

COLUMNS = ("incident_id", "seq", "at", "event", "ladder", "version", "cycle", "leg", "leg_index", "contact", "channel", "by",
           "reason", "data")
_OWN = {"cycle", "leg", "leg_index", "contact", "channel", "by", "reason"}  # event fields with a column of their own
BATCH = 1000
FORMATS = ("jsonl", "csv")

_E, _I = IncidentEventRow.__table__, IncidentRow.__table__


def rows(engine: Engine, since: datetime, until: datetime) -> Iterator[dict[str, Any]]:
    """Every event recorded in [since, until), in time order (then incident and seq): dicts in COLUMNS order."""
    query = (
        sa.select(_E.c.incident_id, _E.c.seq, _E.c.at, _E.c.event, _I.c.ladder, _I.c.version, _E.c.data)
        .select_from(_E.join(_I, _I.c.id == _E.c.incident_id))
        .where(_E.c.at >= since, _E.c.at < until)
        .order_by(_E.c.at, _E.c.incident_id, _E.c.seq)
        .execution_options(yield_per=BATCH)
    )
    with read_session(engine) as session:
        for incident_id, seq, at, event, ladder, version, data in session.execute(query):
            data = data or {}
            yield {
                "incident_id": incident_id, "seq": seq, "at": rfc3339(at), "event": event, "ladder": ladder, "version": version,
                **{name: data.get(name) for name in ("cycle", "leg", "leg_index", "contact", "channel", "by", "reason")},
                "data": {k: v for k, v in sorted(data.items()) if k not in _OWN},
            }


def write(engine: Engine, since: datetime, until: datetime, fmt: str, out: TextIO) -> int:
    """Write the export to `out` as it is read; returns the number of events."""
    count = 0
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in rows(engine, since, until):
            writer.writerow(["" if row[c] is None else json.dumps(row[c], sort_keys=True) if c == "data" else row[c] for c in COLUMNS])
            count += 1
    else:
        for row in rows(engine, since, until):
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count
