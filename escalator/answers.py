"""What an acknowledgement, a pass or a resolve did: the typed answer of the engine's one path for
them (Engine.acknowledge / pass_on / resolve), which each door (a key press, an SMS reply, the
app, NATS) turns into words for the person who sent it."""

from __future__ import annotations

from dataclasses import dataclass

# What it did when it took effect (Answer.result), or UNKNOWN for no such incident; otherwise the walk's reasons for changing
# nothing (walk.TAKEN, walk.CLOSED, walk.NOT_PAGED, walk.NOT_THIS_LEG, walk.STALE, walk.NOTHING_TO_PASS).
ACKNOWLEDGED, PASSED, RESOLVED, UNKNOWN = "acknowledged", "passed", "resolved", "unknown"
RENEWED = "renewed"  # the acker confirmed an expiring acknowledgement (SPEC §11)
CONNECTED = "connected"  # the acker asked to be connected to the caller (SPEC §11)


@dataclass(frozen=True)
class Answer:
    """What an acknowledgement or a pass did: `result` is ACKNOWLEDGED or PASSED when it took
    effect, UNKNOWN for no such incident, else the walk's reason (`walk.TAKEN` with `by` …)."""

    result: str
    incident_id: str
    status: str | None = None  # the incident's status afterwards
    summary: str = ""
    by: str | None = None  # who has it (acknowledged, or already taken)
    reason: str = ""  # in words, when it changed nothing
    caller: str | None = None  # the incident's caller, when its ladder offers a call to them (SPEC §11)

    @property
    def took_effect(self) -> bool:
        return self.result in (ACKNOWLEDGED, PASSED, RENEWED, CONNECTED)
