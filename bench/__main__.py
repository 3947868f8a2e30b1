"""`python -m bench [--quick] [--db sqlite,postgresql] [--json FILE]`: the SPEC §9 figures, measured on
the path users run.

`escalator run` as a process of its own, paging through the real `twilio` and `firebase-admin`
clients over HTTP to local doubles (bench/doubles.py, another process) that answer at once; a
private nats-server; a fresh SQLite file or PostgreSQL schema. "First provider request" is when a
double has the request in hand. This process publishes, seeds, watches, and measures.

Each figure is printed beside its floors, measured in the same run on the same machine:
- raw JetStream publish → receive (a bare pull consumer, no escalator);
- a bare asyncio timer (loop.call_at, as many pending) for window lateness and re-arming;
- the doubles alone: requests/s and service time with 32 at once, as the daemon's queue allows;
- PostgreSQL: round trips per second of a trivial statement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import nats
import sqlalchemy as sa
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from escalator import clock, ladder_files
from escalator import walk as walk_
from escalator.ladders import Ladder
from escalator.store import migrate
from escalator.store.catalog import Catalog
from escalator.store.db import READ_ONLY, make_engine, write_session
from escalator.store.incidents import build_plan
from escalator.store.tables import ContactRow, IncidentEventRow, IncidentRow, LadderRow, LadderVersionRow, PageRow
from tests.harness import DaemonProcess, NatsServer, free_port

REPO = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("ESCALATOR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BENCH_PEOPLE = """\
contacts:
  - {id: tech, name: Tech, phone: "+14155550101", push_tokens: ["tok-tech"]}
  - {id: backup, name: Backup, phone: "+14155550102", push_tokens: ["tok-backup"]}
"""
# Every leg on a schedule (the default, SPEC §10): who each leg pages is resolved when it starts.
BENCH_LADDERS = {
    "scheduled": BENCH_PEOPLE + """\
---
schedule: bench-primary
timezone: America/Chicago
rotations:
  - {name: nights, contacts: [tech], shift: 1w, start: "2026-11-30 08:00"}
---
schedule: bench-secondary
timezone: America/Chicago
rotations:
  - {name: nights, contacts: [backup], shift: 1w, start: "2026-11-30 08:00"}
---
ladder: bench
ack_timeout: 120s
legs:
  - {name: primary, schedule: bench-primary}
  - {name: secondary, schedule: bench-secondary}
""",
    "fixed": BENCH_PEOPLE + """\
---
ladder: bench
ack_timeout: 120s
legs:
  - {name: primary, contacts: [tech]}
  - {name: secondary, contacts: [backup]}
""",
}
LADDER = {"kind": "scheduled"}  # --ladder
TARGETS = {
    "publish_to_first_page_p99_ms": ("<=", 50.0),
    "window_expiry_to_next_page_p99_ms": ("<=", 100.0),
    "burst_last_first_page_s": ("<=", 20.0),
    "ingest_incidents_per_s": (">=", 500.0),
    "rss_mib_open_escalations": ("<=", 512.0),
    "restart_rearm_s": ("<=", 10.0),
}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def summary(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {"n": len(ms), "p50_ms": pct(ms, 50), "p99_ms": pct(ms, 99), "max_ms": max(ms) if ms else float("nan")}


class Database:
    """A fresh, migrated database with the bench ladder: a SQLite file or a PostgreSQL schema of its own."""

    def __init__(self, kind: str, root: Path):
        self.kind = kind
        self.schema = f"bench_{uuid.uuid4().hex[:12]}"
        if kind == "sqlite":
            self.url = f"sqlite:///{root / 'bench.db'}"
        else:
            with sa.create_engine(POSTGRES_URL).begin() as connection:
                connection.execute(sa.text(f'CREATE SCHEMA "{self.schema}"'))
            self.url = f"{POSTGRES_URL}?options=-csearch_path%3D{self.schema}"
        self.engine = make_engine(self.url)
        # what this process reads while the daemon runs: never a write lock (SQLite's BEGIN IMMEDIATE
        # would queue this process's counting behind the daemon's writer, and fail when it waits too long)
        self.reader = self.engine.execution_options(**{READ_ONLY: True})
        migrate.upgrade(self.engine)
        (root / "bench.yaml").write_text(BENCH_LADDERS[LADDER["kind"]])
        Catalog(self.engine).apply(ladder_files.load([root / "bench.yaml"]), "bench", clock.now())

    def drop(self) -> None:
        self.engine.dispose()
        if self.kind == "postgresql":
            with sa.create_engine(POSTGRES_URL).begin() as connection:
                connection.execute(sa.text(f'DROP SCHEMA "{self.schema}" CASCADE'))

    def pages_sent(self, prefix: str = "") -> int:
        with self.reader.connect() as connection:
            return connection.scalar(sa.select(sa.func.count()).select_from(PageRow).where(
                PageRow.status == "sent", PageRow.incident_id.startswith(prefix))) or 0

    def legs_started(self, prefix: str) -> dict[tuple[str, int, int], tuple[float, float]]:
        """(incident, cycle, leg index) → (wall time the leg started, its window in seconds)."""
        with self.reader.connect() as connection:
            rows = connection.execute(sa.select(IncidentEventRow.incident_id, IncidentEventRow.at, IncidentEventRow.data).where(
                IncidentEventRow.event == "leg_started", IncidentEventRow.incident_id.startswith(prefix)))
            out = {}
            for incident_id, at, data in rows:
                data = json.loads(data) if isinstance(data, str) else data
                at = at if at.tzinfo else at.replace(tzinfo=UTC)
                out[(incident_id, data["cycle"], data["leg_index"])] = (at.timestamp(), float(data["window_s"]))
            return out

    def failure_reasons(self, prefix: str) -> dict[str, int]:
        """Why pages of these incidents failed: reason (up to its first colon) → count."""
        with self.reader.connect() as connection:
            rows = connection.execute(sa.select(IncidentEventRow.data).where(
                IncidentEventRow.event == "page_failed", IncidentEventRow.incident_id.startswith(prefix)))
            out: dict[str, int] = {}
            for (data,) in rows:
                data = json.loads(data) if isinstance(data, str) else data
                reason = str(data.get("reason", "?")).split(":")[0]
                out[reason] = out.get(reason, 0) + 1
            return out

    def events(self, name: str) -> int:
        with self.reader.connect() as connection:
            return connection.scalar(
                sa.select(sa.func.count()).select_from(IncidentEventRow).where(IncidentEventRow.event == name)) or 0

    def seed(self, count: int, deadline_of: Any) -> None:
        """`count` open escalations at their first leg, written in bulk (no pages pending, no owner):
        what a database holds after a crash with that many incidents under way."""
        with write_session(self.engine) as session:
            head = session.get(LadderRow, "bench")
            ladder = Ladder.model_validate(session.get(LadderVersionRow, ("bench", head.version)).snapshot)
            contacts = {r.id: r for r in session.scalars(sa.select(ContactRow))}
        from escalator.ladders import Contact

        people = {i: Contact.model_construct(id=c.id, name=c.name, phone=c.phone, push_tokens=tuple(c.push_tokens or ()))
                  for i, c in contacts.items()}
        plan = build_plan(ladder, head.version, people)
        plan_dict = plan.to_dict()
        on_call = {"bench-primary": (walk_.Reach("tech", True, True),), "bench-secondary": (walk_.Reach("backup", True, True),)}
        window = timedelta(seconds=plan.legs[0].window_s)
        for start in range(0, count, 2000):
            rows = []
            for i in range(start, min(count, start + 2000)):
                deadline = deadline_of(i)
                opened = deadline - window
                walk, _ = walk_.decide(walk_.new(f"seed-{i}", plan), walk_.Open({}), opened, on_call)
                rows.append(dict(
                    id=f"seed-{i}", ladder="bench", version=head.version, status=walk.status, deadline=walk.deadline,
                    summary="seeded", plan=plan_dict, state=walk.to_dict(), opened_at=opened, updated_at=opened,
                ))
            with write_session(self.engine) as session:
                session.execute(sa.insert(IncidentRow), rows)


class Rig:
    """A private nats-server, a database, the doubles (a process) and `escalator run` (a process)."""

    def __init__(self, kind: str, root: Path, twilio_rates: tuple[float, float] | None = None):
        self.root = root
        self.nats = NatsServer(root / "nats")
        self.nats.start()
        self.db = Database(kind, root)
        rates = [str(r) for r in twilio_rates] if twilio_rates else []
        self.doubles = subprocess.Popen([sys.executable, "-m", "bench.doubles", str(root), *rates], cwd=REPO,
                                        stdout=subprocess.DEVNULL, stderr=(root / "doubles.log").open("w"))
        deadline = time.monotonic() + 30
        while not (root / "doubles.json").exists():
            assert self.doubles.poll() is None and time.monotonic() < deadline, (root / "doubles.log").read_text()[-2000:]
            time.sleep(0.05)
        time.sleep(0.1)
        self.config = json.loads((root / "doubles.json").read_text())
        self.daemon: DaemonProcess | None = None

    def start(self, extra_env: dict[str, str] | None = None) -> float:
        """Launch `escalator run`; seconds from launch until it is ready (every window re-armed)."""
        port = free_port()
        env = {
            "ESCALATOR_DATABASE_URL": self.db.url, "ESCALATOR_NATS_URL": self.nats.url, "ESCALATOR_HTTP_PORT": str(port),
            "ESCALATOR_PUBLIC_URL": f"http://127.0.0.1:{port}", "ESCALATOR_DATA_DIR": str(self.root / "data"),
            "ESCALATOR_REPLICA_ID": f"bench-{uuid.uuid4().hex[:6]}", "ESCALATOR_DRY_RUN": "false",
            "ESCALATOR_TWILIO_ACCOUNT_SID": self.config["twilio_sid"], "ESCALATOR_TWILIO_AUTH_TOKEN": self.config["twilio_token"],
            "ESCALATOR_TWILIO_FROM": "+14155550100", "ESCALATOR_TWILIO_API_URL": self.config["twilio_url"],
            "ESCALATOR_FCM_CREDENTIALS": self.config["fcm_credentials"], "ESCALATOR_FCM_API_URL": self.config["fcm_url"],
            "ESCALATOR_PUSH_SIGNING_KEY": "bench-push-signing-key-" + "k" * 32, **(extra_env or {}),
        }
        self.daemon = DaemonProcess(env, self.root / "daemon.log")
        began = time.monotonic()
        self.daemon.start(timeout=600)
        return time.monotonic() - began

    def ready(self) -> dict[str, Any]:
        assert self.daemon is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{self.daemon.port}/readyz", timeout=10) as response:
            return json.loads(response.read())

    def rss_mib(self) -> float:
        assert self.daemon is not None and self.daemon.process is not None
        for line in Path(f"/proc/{self.daemon.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def received(self) -> list[tuple[str, str, str, float]]:
        with urllib.request.urlopen(self.config["received_url"] + "/_bench/received", timeout=60) as response:
            return [tuple(r) for r in json.loads(response.read())]

    def twilio_fates(self) -> dict[str, list[list[Any]]]:
        with urllib.request.urlopen(self.config["received_url"] + "/_bench/twilio", timeout=60) as response:
            return json.loads(response.read())

    def breaker_openings(self) -> int:
        log = (self.root / "daemon.log").read_text(errors="replace")
        return log.count("→ open")

    def stop(self) -> None:
        if self.daemon is not None:
            try:
                self.daemon.terminate()  # SIGTERM: after a storm, finishing what is in flight can take a while
            except subprocess.TimeoutExpired:
                self.daemon.kill9()
            self.daemon = None

    def close(self) -> None:
        self.stop()
        self.doubles.terminate()
        self.doubles.wait(10)
        self.nats.stop()
        self.db.drop()


def first_leg(record: tuple[str, str, str, float]) -> bool:
    channel, _, key, _ = record
    return key == "primary" if channel == "push" else ".l0." in key


def second_leg(record: tuple[str, str, str, float]) -> bool:
    channel, _, key, _ = record
    return key == "secondary" if channel == "push" else ".l1." in key


def incident(incident_id: str) -> bytes:
    return json.dumps({"id": incident_id, "ladder": "bench", "summary": "No heat, 12 Elm St"}).encode()


async def paced_publish(url: str, subject_of: Any, count: int, rate: float) -> dict[str, float]:
    """Publish `count` messages at `rate` per second (absolute schedule); returns id → wall send time."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    sent: dict[str, float] = {}
    begin = time.monotonic()
    try:
        for i in range(count):
            due = begin + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            subject, key, body = subject_of(i)
            sent[key] = time.time()
            await js.publish(subject, body, headers={"Nats-Msg-Id": key}, timeout=10)
    finally:
        await nc.close()
    return sent


async def publish_at_once(url: str, count: int, prefix: str) -> float:
    """`count` incidents published together (all in flight at once); returns the wall time it began."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    began = time.time()
    try:
        for start in range(0, count, 2000):
            await asyncio.gather(*(js.publish("incidents.urgent", incident(f"{prefix}-{i}"), headers={"Nats-Msg-Id": f"{prefix}-{i}"},
                                              timeout=60) for i in range(start, min(count, start + 2000))))
    finally:
        await nc.close()
    return began


async def raw_jetstream(url: str, count: int, rate: float | None) -> tuple[list[float], float]:
    """The floor: publish → receive through a bare JetStream pull consumer. Returns (latencies, msgs/s)."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    name = f"FLOOR{uuid.uuid4().hex[:6].upper()}"
    await js.add_stream(StreamConfig(name=name, subjects=[f"{name.lower()}.>"]))
    psub = await js.pull_subscribe(f"{name.lower()}.>", durable="floor", stream=name,
                                   config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=100000))
    received: dict[str, float] = {}

    async def consume() -> None:
        while len(received) < count:
            try:
                msgs = await psub.fetch(64, timeout=1)
            except Exception:
                continue
            for msg in msgs:
                received[msg.headers["Nats-Msg-Id"]] = time.time()
                await msg.ack()

    try:
        if rate is None:  # throughput: everything waiting first, then drained
            await paced_publish(url, lambda i: (f"{name.lower()}.x", f"m{i}", incident(f"m{i}")), count, 1e9)
            began = time.monotonic()
            await consume()
            return [], count / (time.monotonic() - began)
        consumer = asyncio.create_task(consume())
        sent = await paced_publish(url, lambda i: (f"{name.lower()}.x", f"m{i}", incident(f"m{i}")), count, rate)
        await asyncio.wait_for(consumer, 60)
        return [received[k] - sent[k] for k in sent], float("nan")
    finally:
        await js.delete_stream(name)
        await nc.close()


async def bare_timers(pending: int, firing: list[float]) -> list[float]:
    """The floor for windows: lateness of loop.call_at timers with `pending` others waiting."""
    loop = asyncio.get_running_loop()
    late: list[float] = []
    done = asyncio.Event()
    far = [loop.call_at(loop.time() + 3600 + i * 1e-3, lambda: None) for i in range(pending)]
    base_wall, base_loop = time.time(), loop.time()

    def fire(due_wall: float) -> None:
        late.append(time.time() - due_wall)
        if len(late) == len(firing):
            done.set()

    for due in firing:
        loop.call_at(base_loop + (due - base_wall), fire, due)
    await asyncio.wait_for(done.wait(), max(firing) - time.time() + 30)
    for handle in far:
        handle.cancel()
    return late


async def arm_bare_timers(count: int) -> float:
    loop = asyncio.get_running_loop()
    began = time.monotonic()
    handles = [loop.call_at(loop.time() + 3600, lambda: None) for _ in range(count)]
    took = time.monotonic() - began
    for handle in handles:
        handle.cancel()
    return took


async def doubles_alone(config: dict[str, Any], seconds: float = 3.0, concurrency: int = 32) -> dict[str, Any]:
    """The doubles' own capacity, loaded alone: requests/s and service time, Twilio texts and FCM sends."""
    import aiohttp

    auth = {"Authorization": aiohttp.encode_basic_auth(config["twilio_sid"], config["twilio_token"])}
    twilio_url = f"{config['twilio_url']}/2010-04-01/Accounts/{config['twilio_sid']}/Messages.json"
    fcm_url = f"{config['fcm_url']}/v1/projects/escalator-test/messages:send"
    from tests.fcm_double import ACCESS_TOKEN

    out: dict[str, Any] = {}
    async with aiohttp.ClientSession() as session:
        for name, request in (
            ("twilio", lambda: session.post(twilio_url, data={"To": "+14155550199", "From": "+14155550100", "Body": "x"}, headers=auth)),
            ("fcm", lambda: session.post(fcm_url, json={"message": {"token": "t", "data": {"incident_id": "floor"}}},
                                         headers={"Authorization": f"Bearer {ACCESS_TOKEN}"})),
        ):
            times: list[float] = []
            until = time.monotonic() + seconds

            async def worker() -> None:
                while time.monotonic() < until:
                    began = time.monotonic()
                    async with request() as response:
                        await response.read()
                    times.append(time.monotonic() - began)

            began = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            out[name] = {"per_s": len(times) / (time.monotonic() - began), **summary(times)}
    return out


def pg_round_trips(seconds: float = 2.0) -> float:
    engine = sa.create_engine(POSTGRES_URL)
    try:
        with engine.connect() as connection:
            count, until = 0, time.monotonic() + seconds
            began = time.monotonic()
            while time.monotonic() < until:
                connection.execute(sa.text("SELECT 1"))
                count += 1
            return count / (time.monotonic() - began)
    finally:
        engine.dispose()


# -- the figures ---------------------------------------------------------------------------------


async def wait_for(check: Any, timeout: float, interval: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(check):
            return True
        await asyncio.sleep(interval)
    return False


async def publish_to_first_page(rig: Rig, rate: float, seconds: float) -> dict[str, Any]:
    count = int(rate * seconds)
    sent = await paced_publish(rig.nats.url, lambda i: ("incidents.urgent", f"lat-{i}", incident(f"lat-{i}")), count, rate)

    def first_requests() -> dict[str, float]:
        first: dict[str, float] = {}
        for record in rig.received():
            if first_leg(record):
                first[record[1]] = min(first.get(record[1], record[3]), record[3])
        return first

    await wait_for(lambda: len(first_requests()) >= count, 120)
    first = await asyncio.to_thread(first_requests)
    latencies = [first[k] - sent[k] for k in sent if k in first]
    floor, _ = await raw_jetstream(rig.nats.url, min(count, int(rate * 5)), rate)
    return {"figure": summary(latencies), "floor": summary(floor), "missing": count - len(latencies)}


async def window_expiry(kind: str, root: Path, open_count: int, expiring: int) -> dict[str, Any]:
    """`open_count` open escalations in the database; the daemon starts, then `expiring` of them reach
    their deadline at 100 per second: from each deadline to the next leg's first provider request."""
    rig = Rig(kind, root)
    try:
        now = clock.now()
        first_due = now + timedelta(seconds=8 + open_count / 1000)  # after seeding, starting and re-arming

        def deadline_of(i: int):
            if i < expiring:
                return first_due + timedelta(seconds=i / 100)
            return now + timedelta(hours=1)

        rig.db.seed(open_count, deadline_of)
        took = await asyncio.to_thread(rig.start)
        armed = rig.ready()["windows_armed"]
        # a start slower than first_due (a loaded machine) finds some windows already due: they fire
        # instead of staying armed, and a fired one may not have written its leg_timed_out yet
        ready_at = clock.now()
        fired = sum(1 for i in range(expiring) if deadline_of(i) <= ready_at)
        restart = {"restart_s": took, "windows_armed": armed, "windows_fired_by_ready": fired, "rss_mib": rig.rss_mib(),
                   "open": open_count, "arm_floor_s": await arm_bare_timers(open_count)}

        def lateness() -> list[float]:
            first: dict[str, float] = {}
            for record in rig.received():
                if second_leg(record) and record[1].startswith("seed-"):
                    first[record[1]] = min(first.get(record[1], record[3]), record[3])
            return [first[f"seed-{i}"] - deadline_of(i).timestamp() for i in range(expiring) if f"seed-{i}" in first]

        wait = (first_due - clock.now()).total_seconds() + expiring / 100 + 60
        await wait_for(lambda: len(lateness()) >= expiring, wait)
        late = await asyncio.to_thread(lateness)
        rig.stop()
        firing = [time.time() + 2 + i / 100 for i in range(min(expiring, 500))]
        timer_floor = await bare_timers(open_count, firing)
        return {"figure": summary(late), "floor": summary(timer_floor), "missing": expiring - len(late), "open": open_count,
                "restart": restart}
    finally:
        rig.close()


async def burst(rig: Rig, count: int) -> dict[str, Any]:
    """`count` incidents published at once to a running daemon: when the last first leg was paged on
    every channel, what was lost or failed, whether any breaker opened; and the rate at which the
    whole backlog was paged and every provider answer recorded (sustained ingest)."""
    failed_before = await asyncio.to_thread(rig.db.events, "page_failed")
    began = await publish_at_once(rig.nats.url, count, "burst")

    def first_pages() -> dict[str, dict[str, float]]:
        seen: dict[str, dict[str, float]] = {}
        for record in rig.received():
            if first_leg(record) and record[1].startswith("burst-"):
                channels = seen.setdefault(record[1], {})
                channels[record[0]] = min(channels.get(record[0], record[3]), record[3])
        return seen

    await wait_for(lambda: sum(len(c) for c in first_pages().values()) >= 3 * count, 900)
    seen = await asyncio.to_thread(first_pages)
    whole = [max(c.values()) for c in seen.values() if len(c) == 3]
    paged_by = max(whole) - began if whole else float("nan")
    await wait_for(lambda: rig.db.pages_sent("burst-") + rig.db.events("page_failed") - failed_before >= 3 * count, 300)
    recorded_by = time.time() - began
    failed = await asyncio.to_thread(rig.db.events, "page_failed") - failed_before
    _, floor = await raw_jetstream(rig.nats.url, count, None)
    return {
        "count": count, "last_first_page_s": paged_by, "all_channels": len(whole), "no_channel": count - len(seen),
        "pages_failed": failed, "failure_reasons": await asyncio.to_thread(rig.db.failure_reasons, "burst-"),
        "breakers_opened": rig.breaker_openings(), "floor_per_s": floor,
        "ingest_per_s": count / recorded_by, "recorded_s": recorded_by,
    }


async def storm(kind: str, root: Path, count: int, scale: float) -> dict[str, Any]:
    """Provider physics: `count` incidents at once while Twilio places 1 call/s for the account and
    sends 1 text/s from the number (its defaults), with the call flow and signed status callbacks;
    windows shortened by ESCALATOR_WINDOW_SCALE so that both legs of the first cycle end within the
    run. What Twilio placed within its leg, what escalator cancelled in Twilio's queue when a leg
    ended, what it placed after a leg had ended (nothing should), texts that expired (30036) rather
    than arrive late, push at once; whether every leg still ended on time."""
    rig = Rig(kind, root, twilio_rates=(1.0, 1.0))
    try:
        await asyncio.to_thread(rig.start, {"ESCALATOR_WINDOW_SCALE": str(scale)})
        began = await publish_at_once(rig.nats.url, count, "storm")
        window = 120 * scale
        await asyncio.sleep(2 * window + 3)  # the first cycle: both legs, and the answers to what they sent
        fates = await asyncio.to_thread(rig.twilio_fates)
        received = await asyncio.to_thread(rig.received)
        legs = await asyncio.to_thread(rig.db.legs_started, "storm-")
        breakers = rig.breaker_openings()
    finally:
        rig.close()

    def leg_end(incident_id: str, key: str) -> float | None:
        """When the leg of a page key (`c<cycle>.l<leg>.<contact>.<channel>`) ended, if it is known."""
        parts = key.split(".")
        if len(parts) < 2 or not (parts[0][1:].isdigit() and parts[1][1:].isdigit()):
            return None
        started = legs.get((incident_id, int(parts[0][1:]), int(parts[1][1:])))
        return None if started is None else started[0] + started[1]

    first_calls = [c for c in fates["calls"] if ".l0." in c[1] and c[1].startswith("c1.")]
    placed = [(c, leg_end(c[0], c[1])) for c in fates["calls"] if c[3] is not None]
    in_leg = [c for c, end in placed if c in first_calls and end is not None and c[3] <= end]
    after = [c[3] - end for c, end in placed if end is not None and c[3] > end]  # placed after their leg ended
    first_texts = [t for t in fates["texts"] if ".l0." in t[1] and t[1].startswith("c1.")]
    first_push: dict[str, float] = {}  # the first leg's push per incident (a later cycle pages the same leg again)
    for channel, incident_id, leg, at in received:
        if channel == "push" and leg == "primary" and incident_id.startswith("storm-"):
            first_push[incident_id] = min(first_push.get(incident_id, at), at)
    pushes = list(first_push.values())
    lateness = []  # how long after its window each first leg gave way to the second
    for (incident_id, cycle, leg), (at, _) in legs.items():
        if cycle == 1 and leg == 1 and (incident_id, 1, 0) in legs:
            start, window_s = legs[(incident_id, 1, 0)]
            lateness.append(at - (start + window_s))
    return {
        "count": count, "window_s": window, "first_calls": len(first_calls), "calls_placed_in_leg": len(in_leg),
        "calls_cancelled_queued": sum(1 for c in first_calls if c[2] == "canceled" and c[3] is None),
        "calls_placed_after_leg": len(after), "calls_after_leg_max_ms": max(after) * 1000 if after else 0.0,
        "calls_leg_unknown": sum(1 for _, end in placed if end is None), "first_texts": len(first_texts),
        "texts_delivered": sum(1 for t in first_texts if t[2] == "delivered"),
        "texts_expired_30036": sum(1 for t in first_texts if t[3] == "30036"),
        "first_pushes": len(pushes), "last_first_push_s": (max(pushes) - began) if pushes else float("nan"),
        "legs_ended": len(lateness), "leg_end_late": summary(lateness) if lateness else {}, "breakers_opened": breakers,
    }


async def memory_and_restart(kind: str, root: Path, open_count: int) -> dict[str, Any]:
    """`open_count` open escalations: from launching `escalator run` to ready with every window
    re-armed, and its memory then."""
    rig = Rig(kind, root)
    try:
        now = clock.now()
        rig.db.seed(open_count, lambda i: now + timedelta(hours=1))
        took = await asyncio.to_thread(rig.start)
        armed = rig.ready()["windows_armed"]
        rss = rig.rss_mib()
        arm_floor = await arm_bare_timers(open_count)
        return {"restart_s": took, "windows_armed": armed, "rss_mib": rss, "open": open_count, "arm_floor_s": arm_floor}
    finally:
        rig.close()


async def run_all(kinds: list[str], quick: bool) -> dict[str, Any]:
    sizes = {
        "rate": 100.0, "seconds": 2.0 if quick else 60.0, "open": 500 if quick else 10_000, "expiring": 100 if quick else 1000,
        "burst": 300 if quick else 10_000, "memory": 500 if quick else 100_000,
        "storm": 20 if quick else 60, "storm_scale": 0.05 if quick else 0.1,
    }
    results: dict[str, Any] = {"sizes": sizes, "quick": quick, "machine": machine(), "databases": {}, "ladder": LADDER["kind"]}
    with tempfile.TemporaryDirectory(prefix="escalator-bench-") as tmp:
        root = Path(tmp) / "floors"
        root.mkdir()
        probe = Rig("sqlite", root)
        try:
            results["doubles"] = await doubles_alone(probe.config, seconds=1.0 if quick else 3.0)
        finally:
            probe.close()
    if "postgresql" in kinds:
        results["postgresql_round_trips_per_s"] = await asyncio.to_thread(pg_round_trips)
    for kind in kinds:
        out: dict[str, Any] = {}
        with tempfile.TemporaryDirectory(prefix="escalator-bench-") as tmp:
            print(f"[{kind}] latency and burst …", file=sys.stderr, flush=True)
            (Path(tmp) / "paging").mkdir()
            rig = Rig(kind, Path(tmp) / "paging")
            try:
                await asyncio.to_thread(rig.start)
                out["latency"] = await publish_to_first_page(rig, sizes["rate"], sizes["seconds"])
                out["burst"] = await burst(rig, sizes["burst"])
            finally:
                rig.close()
            print(f"[{kind}] windows …", file=sys.stderr, flush=True)
            (Path(tmp) / "windows").mkdir()
            out["windows"] = await window_expiry(kind, Path(tmp) / "windows", sizes["open"], sizes["expiring"])
            if sizes["memory"] == sizes["open"]:  # quick: the same start measured once
                out["memory"] = out["windows"]["restart"]
            else:
                print(f"[{kind}] memory and restart …", file=sys.stderr, flush=True)
                (Path(tmp) / "memory").mkdir()
                out["memory"] = await memory_and_restart(kind, Path(tmp) / "memory", sizes["memory"])
        results["databases"][kind] = out
    with tempfile.TemporaryDirectory(prefix="escalator-bench-") as tmp:  # provider physics: one database is enough
        print(f"[{kinds[0]}] storm at 1 call/s …", file=sys.stderr, flush=True)
        results["storm"] = {"db": kinds[0], **await storm(kinds[0], Path(tmp), sizes["storm"], sizes["storm_scale"])}
    return results


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "system": platform.platform(terse=True),
            "processor": platform.machine()}


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    out = []
    sizes = results["sizes"]
    doubles = results["doubles"]
    doubles_floor = (f"doubles alone: Twilio {doubles['twilio']['per_s']:.0f}/s (p99 {doubles['twilio']['p99_ms']:.1f} ms), "
                     f"FCM {doubles['fcm']['per_s']:.0f}/s (p99 {doubles['fcm']['p99_ms']:.1f} ms)")
    pg = results.get("postgresql_round_trips_per_s")
    for kind, r in results["databases"].items():
        lat, win, b, mem = r["latency"], r["windows"], r["burst"], r["memory"]
        db_floor = f"; PostgreSQL {pg:.0f} round trips/s" if kind == "postgresql" and pg else ""
        missing = lambda f: f" ({f['missing']} missing)" if f.get("missing") else ""  # noqa: E731
        out += [
            (kind, f"publish → first provider request ({sizes['rate']:.0f}/s for {sizes['seconds']:.0f} s)",
             f"p50 {lat['figure']['p50_ms']:.1f} / p99 {lat['figure']['p99_ms']:.1f} / max {lat['figure']['max_ms']:.1f} ms",
             f"raw JetStream p50 {lat['floor']['p50_ms']:.1f} / p99 {lat['floor']['p99_ms']:.1f} ms; {doubles_floor}{db_floor}",
             "p99 ≤ 50 ms", verdict(lat["figure"]["p99_ms"], "publish_to_first_page_p99_ms") + missing(lat)),
            (kind, f"window expiry → next leg's first provider request ({win['open']:,} open)",
             f"p50 {win['figure']['p50_ms']:.1f} / p99 {win['figure']['p99_ms']:.1f} / max {win['figure']['max_ms']:.1f} ms",
             f"bare asyncio timer p99 {win['floor']['p99_ms']:.1f} ms", "p99 ≤ 100 ms",
             verdict(win["figure"]["p99_ms"], "window_expiry_to_next_page_p99_ms") + missing(win)),
            (kind, f"burst: {b['count']:,} incidents published at once",
             f"last first page {b['last_first_page_s']:.1f} s; {b['all_channels']:,} on all 3 channels, {b['no_channel']} on none; "
             f"{b['pages_failed']} pages failed"
             + (" (" + ", ".join(f"{n} {why}" for why, n in sorted(b.get("failure_reasons", {}).items())) + ")" if b["pages_failed"] else "")
             + f", {b['breakers_opened']} breakers opened",
             f"raw JetStream {b['floor_per_s']:.0f} msgs/s; {doubles_floor}", "all paged, 0 failed, 0 opened, ≤ 20 s",
             "met" if b["all_channels"] == b["count"] and not b["pages_failed"] and not b["breakers_opened"]
             and b["last_first_page_s"] <= TARGETS["burst_last_first_page_s"][1] else "MISSED"),
            (kind, f"sustained ingest, 3 channels, answers recorded ({b['count']:,} incidents)", f"{b['ingest_per_s']:.0f} incidents/s",
             f"raw JetStream {b['floor_per_s']:.0f} msgs/s{db_floor}", "≥ 500/s", verdict(b["ingest_per_s"], "ingest_incidents_per_s")),
            (kind, f"memory, {mem['open']:,} open escalations", f"{mem['rss_mib']:.0f} MiB RSS", "", "≤ 512 MiB",
             verdict(mem["rss_mib"], "rss_mib_open_escalations")),
            (kind, f"restart, {mem['open']:,} open: launched → ready, every window re-armed",
             f"{mem['restart_s']:.2f} s ({mem['windows_armed']:,} armed"
             + (f", {mem['windows_fired_by_ready']:,} already due and fired" if mem.get("windows_fired_by_ready") else "") + ")", f"bare asyncio timers {mem['arm_floor_s'] * 1000:.0f} ms",
             "≤ 10 s", verdict(mem["restart_s"], "restart_rearm_s")),
        ]
    st = results.get("storm")
    if st:
        late = st["leg_end_late"]
        out.append((
            st["db"], f"storm at Twilio's 1 call/s and 1 text/s: {st['count']} incidents at once, {st['window_s']:.0f} s legs",
            f"first-leg calls: {st['calls_placed_in_leg']} placed within their leg, {st['calls_cancelled_queued']} cancelled in "
            f"Twilio's queue when the leg ended, {st['calls_placed_after_leg']} placed after their leg ended (at most "
            f"{st['calls_after_leg_max_ms']:.0f} ms after); texts: {st['texts_delivered']} "
            f"delivered, {st['texts_expired_30036']} expired (30036); push: {st['first_pushes']} in {st['last_first_push_s']:.1f} s; "
            f"{st['legs_ended']} first legs ended p99 {late.get('p99_ms', float('nan')):.0f} ms after their window; "
            f"{st['breakers_opened']} breakers opened",
            "Twilio's queues: 1 call/s, 1 text/s", "no call placed > 100 ms after its leg; legs end p99 ≤ 100 ms late; 0 opened",
            "met" if st["calls_after_leg_max_ms"] <= 100 and not st["calls_leg_unknown"] and not st["breakers_opened"]
            and st["legs_ended"] == st["count"]
            and late.get("p99_ms", float("inf")) <= TARGETS["window_expiry_to_next_page_p99_ms"][1] else "MISSED",
        ))
    return out


def verdict(value: float, target: str) -> str:
    op, limit = TARGETS[target]
    ok = value <= limit if op == "<=" else value >= limit
    return "met" if ok else "MISSED"


def table(results: dict[str, Any]) -> str:
    header = ("db", "figure", "measured", "floor (same run)", "target", "")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(results)]
    m = results["machine"]
    lines.append("")
    lines.append(f"{m['cpus']} CPUs, {m['system']}, Python {m['python']}; {'quick' if results['quick'] else 'full'} run; "
                 + ("every leg on a schedule (resolved when it starts)." if results.get("ladder") == "scheduled" else "fixed contacts on every leg."))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds per figure (what CI runs)")
    parser.add_argument("--db", default="sqlite,postgresql", help="sqlite, postgresql or both (comma-separated)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--ladder", choices=sorted(BENCH_LADDERS), default="scheduled",
                        help="the bench ladder's legs: on schedules (default) or fixed contacts, to compare")
    args = parser.parse_args(argv)
    LADDER["kind"] = args.ladder
    kinds = [k.strip() for k in args.db.split(",") if k.strip()]
    if not kinds or any(k not in ("sqlite", "postgresql") for k in kinds):
        parser.error("--db takes sqlite, postgresql or both")
    import logging

    logging.basicConfig(level=logging.WARNING)
    results = asyncio.run(run_all(kinds, args.quick))
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
