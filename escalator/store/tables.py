"""SQLModel tables. Snapshots are the canonical documents of `escalator.ladders`.

Versions are immutable rows: an incident pins (ladder, version) and can always read what it
started on, whatever happens to the ladder afterwards. Deletions and removals are versions too
(with no snapshot), so history and rollback cover them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel


class UTCDateTime(sa.types.TypeDecorator):
    """Timezone-aware UTC in and out, on SQLite (which keeps no zone) as on PostgreSQL."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None:
            if value.tzinfo is None:
                raise ValueError("naive datetime given to the database")
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def _ts(nullable: bool = False) -> Any:
    return Field(sa_type=UTCDateTime, nullable=nullable)


class ContactRow(SQLModel, table=True):
    __tablename__ = "contacts"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=100)
    phone: str | None = Field(default=None, max_length=16)
    push_tokens: list[str] = Field(default_factory=list, sa_type=sa.JSON, nullable=False)
    version: int
    removed_at: datetime | None = _ts(nullable=True)
    updated_at: datetime = _ts()
    updated_by: str = Field(max_length=200)


class ContactVersionRow(SQLModel, table=True):
    __tablename__ = "contact_versions"

    contact_id: str = Field(primary_key=True, foreign_key="contacts.id", max_length=64)
    version: int = Field(primary_key=True)
    snapshot: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON, nullable=True)
    actor: str = Field(max_length=200)
    created_at: datetime = _ts()
    change: str
    comment: str | None = None


class LadderRow(SQLModel, table=True):
    __tablename__ = "ladders"

    name: str = Field(primary_key=True, max_length=64)
    version: int
    deleted_at: datetime | None = _ts(nullable=True)
    updated_at: datetime = _ts()
    updated_by: str = Field(max_length=200)


class LadderVersionRow(SQLModel, table=True):
    __tablename__ = "ladder_versions"

    ladder: str = Field(primary_key=True, foreign_key="ladders.name", max_length=64)
    version: int = Field(primary_key=True)
    snapshot: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON, nullable=True)
    actor: str = Field(max_length=200)
    created_at: datetime = _ts()
    change: str
    comment: str | None = None


class ScheduleRow(SQLModel, table=True):
    """A schedule's head: its current version (SPEC §10). Versions as for ladders."""

    __tablename__ = "schedules"

    name: str = Field(primary_key=True, max_length=64)
    version: int
    deleted_at: datetime | None = _ts(nullable=True)
    updated_at: datetime = _ts()
    updated_by: str = Field(max_length=200)


class ScheduleVersionRow(SQLModel, table=True):
    __tablename__ = "schedule_versions"

    schedule: str = Field(primary_key=True, foreign_key="schedules.name", max_length=64)
    version: int = Field(primary_key=True)
    snapshot: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON, nullable=True)
    actor: str = Field(max_length=200)
    created_at: datetime = _ts()
    change: str
    comment: str | None = None


class OverrideRow(SQLModel, table=True):
    """`escalator cover`: `by` is on call for `schedule` during [start, until), replacing everyone,
    only `instead_of`, or joining them (`add`). Applied in id order (creation order); a removed one
    keeps its row with who removed it and when."""

    __tablename__ = "overrides"
    __table_args__ = (sa.Index("ix_overrides_schedule_until", "schedule", "until"),)

    id: int | None = Field(default=None, primary_key=True)
    schedule: str = Field(foreign_key="schedules.name", max_length=64)
    by: str = Field(max_length=64)
    instead_of: str | None = Field(default=None, max_length=64)
    add: bool = False
    start: datetime = _ts()
    until: datetime = _ts()
    comment: str | None = Field(default=None, max_length=500)
    created_at: datetime = _ts()
    created_by: str = Field(max_length=200)
    removed_at: datetime | None = _ts(nullable=True)
    removed_by: str | None = Field(default=None, max_length=200)


class HandoffNoticeRow(SQLModel, table=True):
    """A hand-over notice (`notify_handoff`), claimed once across replicas by inserting its key:
    schedule, contact and the instant their time on call starts."""

    __tablename__ = "handoff_notices"

    key: str = Field(primary_key=True, max_length=200)
    schedule: str = Field(max_length=64)
    contact: str = Field(max_length=64)
    starts_at: datetime = _ts()
    until: datetime = _ts()
    claimed_by: str = Field(max_length=200)
    claimed_at: datetime = _ts()
    channel: str | None = Field(default=None, max_length=8)
    status: str = Field(max_length=16)  # claimed, sent, failed
    reason: str | None = None


metadata = SQLModel.metadata


# -- incidents -----------------------------------------------------------------------------------


class IncidentRow(SQLModel, table=True):
    """Current state of one incident; `plan` and `state` are the walk's (escalator.walk)."""

    __tablename__ = "incidents"
    __table_args__ = (
        sa.ForeignKeyConstraint(["ladder", "version"], ["ladder_versions.ladder", "ladder_versions.version"]),
        sa.Index("ix_incidents_status_deadline", "status", "deadline"),
        sa.Index("ix_incidents_closed_at", "closed_at"),  # the last closed ones (escalator watch)
        sa.Index("ix_incidents_opened_at", "opened_at"),  # reports by time
        # Leases look up active incidents by owner; closed ones (the vast majority) stay out of it.
        sa.Index(
            "ix_incidents_active_owner", "owner",
            postgresql_where=sa.text("status IN ('open', 'exhausted')"), sqlite_where=sa.text("status IN ('open', 'exhausted')"),
        ),
    )

    id: str = Field(primary_key=True, max_length=128)
    ladder: str = Field(max_length=64)
    version: int
    status: str = Field(max_length=16)
    deadline: datetime | None = _ts(nullable=True)
    summary: str = Field(max_length=280)
    caller: str | None = Field(default=None, max_length=16)
    severity: str | None = Field(default=None, max_length=32)
    occurred_at: datetime | None = _ts(nullable=True)
    details: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON, nullable=True)
    plan: dict[str, Any] = Field(sa_type=sa.JSON, nullable=False)
    state: dict[str, Any] = Field(sa_type=sa.JSON, nullable=False)
    acked_by: str | None = Field(default=None, max_length=64)
    opened_at: datetime = _ts()
    updated_at: datetime = _ts()
    closed_at: datetime | None = _ts(nullable=True)
    # The replica driving this active incident's window, while that replica's lease (`replicas`)
    # is alive; NULL when closed or released. See escalator.store.leases.
    owner: str | None = Field(default=None, max_length=200)


class IncidentEventRow(SQLModel, table=True):
    """The audit timeline: exactly the events published on `escalations.<event>`."""

    __tablename__ = "incident_events"
    __table_args__ = (sa.Index("ix_incident_events_at", "at"),)  # reports and exports by time (SPEC §12)

    incident_id: str = Field(primary_key=True, foreign_key="incidents.id", max_length=128)
    seq: int = Field(primary_key=True)
    event: str = Field(max_length=32)
    at: datetime = _ts()
    data: dict[str, Any] = Field(sa_type=sa.JSON, nullable=False)


class IncidentNoteRow(SQLModel, table=True):
    """What happened to an incident but changed nothing: repeats, late acks, stale passes."""

    __tablename__ = "incident_notes"

    id: int | None = Field(default=None, primary_key=True)
    incident_id: str = Field(foreign_key="incidents.id", max_length=128, index=True)
    at: datetime = _ts()
    note: str


class PageRow(SQLModel, table=True):
    """A page, recorded before the provider is called; `resent` allows one re-send after a crash."""

    __tablename__ = "pages"

    incident_id: str = Field(primary_key=True, foreign_key="incidents.id", max_length=128)
    key: str = Field(primary_key=True, max_length=200)
    contact: str = Field(max_length=64)
    channel: str = Field(max_length=8)
    cycle: int
    leg_index: int
    leg: str = Field(max_length=64)
    window_s: float
    status: str = Field(max_length=16, index=True)  # pending, sent, failed
    resent: bool = False
    ref: str | None = Field(default=None, max_length=200)
    reason: str | None = None
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    # What the provider last said of it after taking it (ringing, answered, voicemail, delivered …),
    # from its status callbacks: what `escalator watch` shows (SPEC §12).
    delivery: str | None = Field(default=None, max_length=32)


class OutboxRow(SQLModel, table=True):
    """Events committed with the step that caused them, published to NATS afterwards, then deleted."""

    __tablename__ = "outbox"
    __table_args__ = (sa.Index("ix_outbox_incident_id", "incident_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    incident_id: str | None = Field(default=None, max_length=128)  # None: a rejected message with no incident
    subject: str = Field(max_length=64)
    msg_id: str = Field(max_length=200)
    payload: dict[str, Any] = Field(sa_type=sa.JSON, nullable=False)
    created_at: datetime = _ts()


class SmsCodeRow(SQLModel, table=True):
    """The code in an SMS page: what a reply from that phone number refers to."""

    __tablename__ = "sms_codes"
    __table_args__ = (
        sa.Index("ix_sms_codes_phone_created", "phone", "created_at"),
        sa.Index("ix_sms_codes_phone_code", "phone", "code"),
        sa.UniqueConstraint("incident_id", "page_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    phone: str = Field(max_length=16)
    code: str = Field(max_length=8)
    incident_id: str = Field(foreign_key="incidents.id", max_length=128)
    page_key: str = Field(max_length=200)
    contact: str = Field(max_length=64)
    cycle: int
    leg_index: int
    created_at: datetime = _ts()
    # Replaced after too many wrong codes from the number: no longer accepted, but still "in use"
    # (not given out again) for 72 hours; its page_key then carries a suffix, the new row the key.
    replaced_at: datetime | None = _ts(nullable=True)


class SmsStrikeRow(SQLModel, table=True):
    """A reply with a wrong code: too many in a while and the number's codes are replaced."""

    __tablename__ = "sms_strikes"
    __table_args__ = (sa.Index("ix_sms_strikes_phone_at", "phone", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    phone: str = Field(max_length=16)
    at: datetime = _ts()


class SmsOptOutRow(SQLModel, table=True):
    """A phone number that texted STOP (or that Twilio refused with error 21610): its SMS pages fail
    at once until it texts START (SPEC §11). Kept by number, as Twilio keeps it."""

    __tablename__ = "sms_opt_outs"

    phone: str = Field(primary_key=True, max_length=16)
    at: datetime = _ts()
    source: str = Field(max_length=64)  # how we learned it: "STOP reply", "Twilio error 21610"


class HeartbeatRow(SQLModel, table=True):
    """A publisher known from its heartbeats (SPEC §11): silent for 3 intervals, it opens an incident."""

    __tablename__ = "heartbeats"

    source: str = Field(primary_key=True, max_length=128)
    interval_s: int
    first_at: datetime = _ts()
    last_at: datetime = _ts()  # its last heartbeat
    incident_id: str | None = Field(default=None, max_length=128)  # the incident its current silence opened


class DeadPushTokenRow(SQLModel, table=True):
    """A push token FCM reported UNREGISTERED: kept on the contact for the operator, skipped for paging."""

    __tablename__ = "dead_push_tokens"

    contact_id: str = Field(primary_key=True, foreign_key="contacts.id", max_length=64)
    token: str = Field(primary_key=True, max_length=4096)
    at: datetime = _ts()


class ReplicaRow(SQLModel, table=True):
    """A running `escalator run`: its lease covers every incident it owns, renewed as one row."""

    __tablename__ = "replicas"

    id: str = Field(primary_key=True, max_length=200)
    started_at: datetime = _ts()
    lease_until: datetime = _ts()


class HandledCallbackRow(SQLModel, table=True):
    """A Twilio callback already acted on (`sms:<MessageSid>`, `gather:<CallSid>:<prompt>`): a replay
    of it changes nothing. Kept for a year (escalator.store.callbacks)."""

    __tablename__ = "handled_callbacks"
    __table_args__ = (sa.Index("ix_handled_callbacks_at", "at"),)

    key: str = Field(primary_key=True, max_length=200)
    at: datetime = _ts()
