"""Incident leases in the database (escalator.store.leases), on SQLite and the real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
from datetime import timedelta

import sqlalchemy as sa

from escalator import clock, ladder_files
from escalator.store import migrate
from escalator.store.catalog import Catalog
from escalator.store.db import make_engine, write_session
from escalator.store.incidents import IncidentStore, NewIncident
from escalator.store.leases import Leases
from escalator.store.tables import IncidentRow
from tests.recording import RecordingChannel
from escalator.engine import Engine
from escalator.lease_keeper import LeaseKeeper
from escalator.metrics import Metrics
from escalator.walk import Acknowledge, PageCmd, Pass, WindowExpired
from tests.conftest import write
from tests.harness import BIN, DaemonProcess, free_port
from tests.test_engine import PEOPLE, ladders  # noqa: F401 - fixture

TTL = 10.0


def replicas(engine: sa.Engine, *names: str) -> list[tuple[IncidentStore, Leases]]:
    return [(IncidentStore(engine, replica=n), Leases(engine, n, TTL)) for n in names]


def owner(engine: sa.Engine, incident_id: str) -> str | None:
    with engine.connect() as connection:
        return connection.execute(sa.select(IncidentRow.owner).where(IncidentRow.id == incident_id)).scalar_one()


def test_the_replica_that_arms_a_window_drives_it_and_a_closed_incident_has_no_owner(ladders) -> None:
    (a, _), (b, _) = replicas(ladders.engine, "a", "b")
    now = clock.now()
    a.open(NewIncident("inc-1", "night", "No heat"), None, now)
    assert owner(ladders.engine, "inc-1") == "a"

    later = now + timedelta(seconds=6)
    b.step("inc-1", WindowExpired(1, 0), later)  # b's timer fired (it took over): b arms the next window
    assert owner(ladders.engine, "inc-1") == "b"

    a.step("inc-1", Acknowledge("ops"), later)  # an ack reaching a: nothing left to drive
    assert owner(ladders.engine, "inc-1") is None


def test_incidents_of_a_replica_whose_lease_ran_out_are_claimed_once(ladders) -> None:
    (a, lease_a), (_, lease_b) = replicas(ladders.engine, "a", "b")
    start = clock.now()
    lease_a.renew(start)
    lease_b.renew(start)
    for i in range(3):
        a.open(NewIncident(f"inc-{i}", "slow", "No heat"), None, start)

    assert lease_b.claim(start + timedelta(seconds=TTL - 1)) == []  # a's lease is alive
    lease_a.renew(start + timedelta(seconds=5))  # one row renews a's hold on all three
    assert lease_b.claim(start + timedelta(seconds=TTL + 1)) == []
    assert lease_a.kept() == {"inc-0", "inc-1", "inc-2"}

    a_dead = start + timedelta(seconds=15.5)
    assert lease_b.claim(a_dead, limit=2) == ["inc-0", "inc-1"]  # in batches
    assert lease_b.claim(a_dead) == ["inc-2"]
    assert lease_b.claim(a_dead) == []  # claimed once only
    assert lease_a.kept() == set()  # a, back from a stall, learns it drives nothing
    assert set(lease_b.owners().values()) == {"b"}

    assert lease_b.release() == 3  # b shuts down: claimable at once, no need to wait for its lease
    assert set(lease_b.owners().values()) == {None}
    assert lease_a.claim(a_dead) == ["inc-0", "inc-1", "inc-2"]


def test_a_closed_incident_is_never_claimed(ladders) -> None:
    (a, lease_a), (_, lease_b) = replicas(ladders.engine, "a", "b")
    now = clock.now()
    a.open(NewIncident("inc-done", "slow", "No heat"), None, now)
    a.step("inc-done", Acknowledge("ops"), now)
    assert lease_b.claim(now + timedelta(hours=1)) == []


def test_a_replica_restarted_under_its_name_finds_its_incidents(ladders) -> None:
    (a, lease_a), (_, same_name_restarted), (_, other) = replicas(ladders.engine, "pod-a", "pod-a", "pod-b")
    now = clock.now()
    lease_a.renew(now)
    a.open(NewIncident("inc-own", "slow", "No heat"), None, now)
    assert other.claim(now) == []  # pod-a's lease is alive: nobody else takes it
    assert same_name_restarted.kept() == {"inc-own"}  # what it drives again at once on start


def test_an_owner_that_never_registered_a_lease_is_found_by_the_thorough_sweep(ladders) -> None:
    (ghost, _), (_, lease_b) = replicas(ladders.engine, "ghost", "b")
    now = clock.now()
    lease_b.renew(now)
    ghost.open(NewIncident("inc-ghost", "slow", "No heat"), None, now)
    assert lease_b.claim(now) == []  # the fast path only looks at replicas whose lease ran out
    assert lease_b.claim(now, thorough=True) == ["inc-ghost"]


def test_a_single_replica_frees_every_lease_at_start(ladders) -> None:
    (a, lease_a), (_, single) = replicas(ladders.engine, "old", "new")
    now = clock.now()
    lease_a.renew(now)
    a.open(NewIncident("inc-old", "slow", "No heat"), None, now)
    assert single.expire_all() == 1
    assert single.claim(now) == ["inc-old"]


def test_claiming_skips_an_incident_in_the_middle_of_a_step(pg_url, tmp_path) -> None:
    """FOR UPDATE SKIP LOCKED: a row locked by a step elsewhere is left for the next round, not waited on."""
    engine = make_engine(pg_url)
    migrate.upgrade(engine)
    Catalog(engine).apply(ladder_files.load([write(tmp_path / "people.yaml", PEOPLE)]), "test", clock.now())
    (a, lease_a), (_, lease_b) = replicas(engine, "a", "b")
    start = clock.now()
    for i in range(2):
        a.open(NewIncident(f"inc-{i}", "slow", "No heat"), None, start)
    lease_a.release()  # nobody drives them now (a SIGTERM'd replica)
    later = start + timedelta(seconds=1)
    stepping, done = threading.Event(), threading.Event()

    def a_step_holding_the_row_lock() -> None:
        with write_session(engine) as session:
            session.get(IncidentRow, "inc-0", with_for_update=True)
            stepping.set()
            done.wait(10)

    holder = threading.Thread(target=a_step_holding_the_row_lock)
    holder.start()
    try:
        assert stepping.wait(5)
        assert lease_b.claim(later) == ["inc-1"]
    finally:
        done.set()
        holder.join()
    assert lease_b.claim(later) == ["inc-0"]
    engine.dispose()


def test_a_second_replica_on_one_sqlite_database_is_refused(tmp_path) -> None:
    db_url = f"sqlite:///{tmp_path / 'escalator.db'}"
    migrate.upgrade(make_engine(db_url))
    env = {
        "ESCALATOR_DATABASE_URL": db_url, "ESCALATOR_NATS_URL": f"nats://127.0.0.1:{free_port()}",
        "ESCALATOR_DATA_DIR": str(tmp_path / "data"), "ESCALATOR_DRY_RUN": "true",
    }
    log = tmp_path / "first.log"
    first = DaemonProcess({**env, "ESCALATOR_HTTP_PORT": str(free_port())}, log)
    first.process = subprocess.Popen([str(BIN / "escalator"), "run"], env=first.env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    try:
        for _ in range(300):  # running: it takes the lock before anything else, then logs the database
            if "database sqlite" in log.read_text():
                break
            threading.Event().wait(0.05)
        second = subprocess.run(
            [str(BIN / "escalator"), "run"], env={**os.environ, **env, "ESCALATOR_HTTP_PORT": str(free_port())},
            capture_output=True, text=True, timeout=30,
        )
        assert first.process.poll() is None  # the first one is unharmed
    finally:
        assert first.terminate() == 0
    assert second.returncode == 1, second.stderr
    assert f"another escalator is already running on the SQLite database {tmp_path / 'escalator.db'}" in second.stderr
    assert "point every replica at one PostgreSQL" in second.stderr
    assert "Traceback" not in second.stderr
    # the lock dies with its process: a new replica starts once the first has stopped
    again = DaemonProcess({**env, "ESCALATOR_HTTP_PORT": str(free_port())}, tmp_path / "again.log")
    again.process = subprocess.Popen([str(BIN / "escalator"), "run"], env=again.env, stdout=again.log.open("ab"), stderr=subprocess.STDOUT)
    try:
        for _ in range(300):
            if "database sqlite" in again.log.read_text():
                break
            threading.Event().wait(0.05)
        assert "database sqlite" in again.log.read_text()
    finally:
        assert again.terminate() == 0


def test_a_pass_at_another_replica_on_the_last_leg_moves_the_incident_there(ladders) -> None:
    """Exhausting sends the final pages with no window: whoever sends them must own them (a crash re-sends)."""
    (a, _), (b, _) = replicas(ladders.engine, "a", "b")
    now = clock.now()
    a.open(NewIncident("inc-x", "night", "No heat"), None, now)  # one cycle of three legs
    a.step("inc-x", WindowExpired(1, 0), now)
    a.step("inc-x", WindowExpired(1, 1), now)  # fallback, the last leg
    result = b.step("inc-x", Pass("carol"), now)
    assert any(isinstance(c, PageCmd) for c in result.commands) and result.walk.status == "exhausted"
    assert owner(ladders.engine, "inc-x") == "b"


def keeper_for(store: IncidentStore) -> tuple[Engine, LeaseKeeper]:
    recorder = RecordingChannel("rec")
    engine = Engine(store, {"voice": recorder, "sms": recorder, "push": recorder}, Metrics())
    return engine, LeaseKeeper(Leases(store.engine, store.replica, TTL), engine, engine.metrics, TTL)


def test_renewal_drives_what_a_half_finished_claim_left_behind(ladders) -> None:
    """A claim committed but its adopt failed (the database went away between): the next renewal adopts it."""
    (a, lease_a), (b_store, lease_b) = replicas(ladders.engine, "a", "b")

    async def scenario() -> tuple[int, int]:
        engine, keeper = keeper_for(b_store)
        await engine.start()
        await keeper.start(single_replica=False)
        now = clock.now()
        lease_a.renew(now - timedelta(seconds=60))  # a died long ago
        a.open(NewIncident("inc-half", "slow", "No heat"), None, now)
        assert lease_b.claim(now) == ["inc-half"]  # committed ... and then nothing was armed
        before = engine.windows.armed()
        await keeper.renew()
        after = engine.windows.armed()
        await engine.stop(grace=0.1)
        return before, after

    assert asyncio.run(scenario()) == (0, 1)


def test_renewal_never_undoes_a_step_that_took_the_incident_back(ladders) -> None:
    """a → b (a pass at b) → a (a pass at a): a's renewal must see a as the owner and keep its window."""
    (a_store, _), (b, _) = replicas(ladders.engine, "a", "b")

    async def scenario() -> tuple[str | None, int, str | None]:
        engine, keeper = keeper_for(a_store)
        await engine.start()
        await keeper.start(single_replica=False)
        await engine.open(NewIncident("inc-pp", "night", "No heat"))
        b.step("inc-pp", Pass("alice"), clock.now())  # bob's leg, driven by b
        assert owner(ladders.engine, "inc-pp") == "b"
        await engine.handle("inc-pp", Pass("bob"))  # carol's leg, driven by a again
        await keeper.renew()
        result = owner(ladders.engine, "inc-pp"), engine.windows.armed(), "inc-pp" in engine.driving()
        b.step("inc-pp", Pass("carol"), clock.now())  # now b really has it (the last leg: exhausted)
        await keeper.renew()
        after = engine.windows.armed(), "inc-pp" in engine.driving()
        await engine.stop(grace=0.1)
        return result, after

    (owner_, armed, driving), after = asyncio.run(scenario())
    assert (owner_, armed, driving) == ("a", 1, True)
    assert after == (0, False)


def test_a_group_commit_that_fails_reports_each_step_on_its_own(ladders) -> None:
    """One bad step sinks the shared transaction; every step is then written alone, and each result
    lines up with its own call (a failed commit is that call's failure, never another's)."""
    from escalator.store.tables import IncidentNoteRow

    store, _ = replicas(ladders.engine, "a")[0]
    now = clock.now()
    store.open(NewIncident("inc-g", "slow", "No heat"), None, now)

    def duplicate_event(tx):  # fails only when committed: (incident, seq 1) exists
        from escalator.store.tables import IncidentEventRow
        tx.session.add(IncidentEventRow(incident_id="inc-g", seq=1, event="opened", at=now, data={}))
        return "written?"

    def note(text):
        def call(tx):
            tx.session.add(IncidentNoteRow(incident_id="inc-g", at=now, note=text))
            return text
        return call

    from escalator.store.group_commit import run_batch

    batch = run_batch(ladders.engine, [note("first"), duplicate_event, note("second")])
    results = batch.results
    assert results[0] == "first" and isinstance(results[1], sa.exc.IntegrityError) and results[2] == "second"
    assert len(results) == 3 and batch.uncertain
    assert [n.note for n in store.timeline("inc-g")[1]] == ["first", "second"]


def test_claims_and_reads_of_leases_use_the_partial_index_of_active_incidents(tmp_path) -> None:
    """The planner can use ix_incidents_active_owner only when it sees the status values: with them
    bound as parameters SQLite read every active incident for each claim (quadratic on a restart)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'plan.db'}")
    migrate.upgrade(engine)
    seen: list[tuple[str, object]] = []
    sa.event.listen(engine, "before_cursor_execute", lambda conn, cursor, statement, params, *_: seen.append((statement, params)))
    leases, dead = Leases(engine, "a", TTL), Leases(engine, "dead", TTL)
    now = clock.now()
    leases.claim(now)  # nobody dead: unowned ones only
    dead.renew(now - timedelta(seconds=3 * TTL))
    leases.claim(now)  # and those of a dead replica (a thorough round reads every active incident: rare, by design)
    leases.kept()
    reads = [(s, p) for s, p in seen if s.lstrip().upper().startswith("SELECT") and "incidents.owner" in s]
    assert len(reads) >= 3, seen
    with engine.connect() as connection:
        for statement, params in reads:
            plan = " ".join(str(row) for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params))
            if "'acknowledged'" in statement:  # acknowledgements whose timer runs (SPEC §11)
                assert "ix_incidents_status_deadline" in plan, (statement, plan)
            else:
                assert "ix_incidents_active_owner" in plan, (statement, plan)
    engine.dispose()
