"""`escalator run`: wires the adapters together and runs until SIGTERM.

Start-up order matters for a paging system: the database first (it is the source of truth, and
the only thing readiness depends on), then HTTP (health and, later, acknowledgements), then every
open window and interrupted page is recovered, and NATS is connected in the background — a NATS
outage at start delays ingest and events but never the walks already under way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

import sqlalchemy as sa

from escalator import clock, jetstream, resilience
from escalator.ack_tokens import AckTokens, signing_key
from escalator.webhooks import Webhooks
from escalator.channels import Channel, DryRunChannel, NotConfiguredChannel
from escalator.channels import fcm as fcm_channel
from escalator.channels import twilio as twilio_channel
from escalator.embedded_nats import EmbeddedNats, reachable
from escalator.engine import Engine
from escalator.ingest import Ingest
from escalator.metrics import Metrics
from escalator.outbox import OutboxPublisher
from escalator.provider_queue import ProviderQueue
from escalator.settings import Settings
from escalator.lease_keeper import LeaseKeeper
from escalator.store.db import display_url, make_engine, read_session, single_replica_lock
from escalator.store.incidents import IncidentStore
from escalator.store.leases import Leases
from escalator.store.migrate import require_current
from escalator.store.outbox import Outbox
from escalator.store.sms_codes import SmsCodes
from escalator.supervisor import Supervisor
from escalator.handoffs import HandoffNotices
from escalator.heartbeats import Heartbeats
from escalator.store import heartbeats as heartbeat_rows
from escalator.store.catalog import Catalog
from escalator.store.handoffs import Handoffs
from escalator.web import HttpServer, create_app

log = logging.getLogger("escalator")


BREAKER_LEVEL = {resilience.CLOSED: 0, resilience.HALF_OPEN: 1, resilience.OPEN: 2}


def build_channels(settings: Settings, metrics: Metrics, tokens: AckTokens | None = None) -> dict[str, Channel]:
    """Dry-run when asked or when no provider is configured; otherwise a channel without credentials fails visibly."""

    def breaker_changed(name: str, old: str, new: str) -> None:
        metrics.breaker_state.labels(name).set(BREAKER_LEVEL[new])
        (log.warning if new == resilience.OPEN else log.info)("breaker %s: %s → %s", name, old, new)

    def queue(provider: str, limit: int) -> ProviderQueue:
        metrics.page_queue_depth.labels(provider).set(0)
        return ProviderQueue(
            provider, limit, on_wait=lambda name, seconds: metrics.page_queue_seconds.labels(name).observe(seconds),
            on_depth=lambda name, depth: metrics.page_queue_depth.labels(name).set(depth),
        )

    channels: dict[str, Channel] = {}
    client = None
    twilio_queue = queue("twilio", twilio_channel.IN_FLIGHT)  # voice and SMS share the account
    if not settings.dry_run_effective and settings.twilio_configured:
        client = twilio_channel.make_client(
            settings.twilio_account_sid or "", settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else "",
            settings.twilio_api_url,
        )
    for name in ("voice", "sms", "push"):
        metrics.breaker_state.labels(name).set(0)
        if settings.dry_run_effective:
            channels[name] = DryRunChannel(name)
            log.info("channel %s: dry-run (pages are written to this log)", name)
        elif name == "push" and settings.fcm_configured and tokens is not None:
            breaker = resilience.CircuitBreaker(name, on_change=breaker_changed)
            app = fcm_channel.make_app(str(settings.fcm_credentials), settings.fcm_api_url, f"escalator-{id(metrics)}")
            channels[name] = fcm_channel.FcmChannel(
                app, settings.public_url, tokens.issue, breaker, settings.push_critical, queue=queue("fcm", fcm_channel.IN_FLIGHT)
            )
            log.info("channel push: FCM (%s), project %s", settings.fcm_api_url, app.project_id)
        elif name in ("voice", "sms") and client is not None:
            breaker = resilience.CircuitBreaker(name, on_change=breaker_changed)
            channels[name] = twilio_channel.TwilioChannel(
                name, client, settings.twilio_from or "", settings.public_url, breaker, queue=twilio_queue
            )
            log.info("channel %s: Twilio (%s), callbacks under %s", name, settings.twilio_api_url, settings.public_url)
        else:
            channels[name] = NotConfiguredChannel(name)
            log.warning("channel %s: not configured; its pages will fail with reason 'not configured'", name)
    return channels


class Daemon:
    def __init__(self, settings: Settings, embedded_nats: bool = False, channels: Mapping[str, Channel] | None = None):
        self.settings = settings
        self.embedded_nats = embedded_nats
        self.stop_event = asyncio.Event()
        self.ready = asyncio.Event()
        self.db = make_engine(settings.database)
        self.codes = SmsCodes(self.db)
        self.store = IncidentStore(self.db, settings.window_scale, settings.replica, self.codes)
        self.metrics = Metrics()
        self.tokens = AckTokens(signing_key(settings.push_signing_key, settings.data_dir), settings.previous_push_keys)
        self.channels = dict(channels) if channels is not None else build_channels(settings, self.metrics, self.tokens)
        self.outbox = Outbox(self.db)
        self.publisher = OutboxPublisher(self.outbox)
        self.engine = Engine(self.store, self.channels, self.metrics, settings.default_ladder, on_events=self.publisher.kick)
        self.leases = LeaseKeeper(Leases(self.db, settings.replica, settings.lease_seconds), self.engine, self.metrics, settings.lease_seconds)
        self.single_replica = self.db.dialect.name == "sqlite"
        self._file_lock: Any = None
        self._leasing = False
        self._renewing = asyncio.Event()  # set when the lease may stop being renewed (just before release)
        self._publishing = asyncio.Event()  # set when the outbox may stop (after the last steps)
        self.heartbeats = Heartbeats(self.engine, settings.heartbeat_ladder or settings.default_ladder, js=lambda: self.ingest.js)
        self.ingest = Ingest(self.engine, on_lag=self.metrics.ingest_lag.observe, on_heartbeat=self.heartbeats.beat)
        self.heartbeats.caught_up = self.ingest.caught_up
        self.webhooks = Webhooks(self.engine, self.store, self.codes, settings.public_url, tokens=self.tokens,
                                 twilio_from=settings.twilio_from)
        self.handoffs = HandoffNotices(Catalog(self.db), Handoffs(self.db, settings.replica), self.channels)
        self.nats: Any = None
        self.nats_error: str | None = "not connected yet"
        self.embedded: EmbeddedNats | None = None
        token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else None
        app = create_app(
            self.readiness, self.metrics.registry, self.webhooks, token, settings.public_url,
            on_refused=lambda reason: self.metrics.http_refused.labels(reason).inc(),
        )
        self.http = HttpServer(app, settings.http_host, settings.http_port)
        self._tasks: list[asyncio.Task[Any]] = []
        self.supervisor = Supervisor(self.stop_event, on_restart=lambda name: self.metrics.task_restarts.labels(name).inc())

    def stop(self) -> None:
        self.stop_event.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stop)
            except (NotImplementedError, RuntimeError):  # not the main thread (tests)
                pass
        try:
            await self._start()
            await self.stop_event.wait()
            log.info("stopping: no new incidents are taken; in-flight work finishes")
        finally:
            await self._shutdown()

    async def _start(self) -> None:
        if self.single_replica:
            self._file_lock = single_replica_lock(self.settings.database)
        await asyncio.to_thread(require_current, self.db)
        await asyncio.to_thread(self.heartbeats.check_configured)
        log.info("database %s (replica %s)", display_url(self.settings.database), self.settings.replica)
        if self.settings.window_scale != 1.0:
            log.warning("ESCALATOR_WINDOW_SCALE=%s: every window is shortened (tests and drills only)", self.settings.window_scale)
        if self.embedded_nats:
            url = self.settings.nats_servers[0]
            parsed = urlparse(url)
            if not reachable(parsed.hostname or "127.0.0.1", parsed.port or 4222):
                self.embedded = EmbeddedNats(url, self.settings.data_dir / "nats")
                await self.embedded.start()
            else:
                log.info("NATS already reachable at %s:%s; not starting an embedded server", parsed.hostname, parsed.port or 4222)
        await self.leases.start(self.single_replica)  # our lease exists before anything can step here
        self._leasing = True
        await self.http.start()
        log.info("HTTP on http://%s:%d (/healthz, /readyz, /metrics)", self.settings.http_host, self.settings.http_port)
        await self.engine.start()
        await self.leases.adopt_all()
        keep = self.supervisor.start
        self._tasks = [
            keep("leases", lambda: self.leases.run(self.stop_event, self._renewing), until=self._renewing),
            keep("nats", self._connect_nats),
            keep("ingest", lambda: self.ingest.run(self.stop_event)),
            keep("outbox", lambda: self.publisher.run(self._publishing), until=self._publishing),
            keep("housekeeping", self._housekeeping),
            keep("handoffs", lambda: self.handoffs.run(self.stop_event)),
            keep("heartbeats", lambda: self.heartbeats.run(self.stop_event)),
        ]
        self.ready.set()
        log.info("escalator running (default ladder: %s)", self.settings.default_ladder or "none")

    async def _connect_nats(self) -> None:
        delay = 0.5
        while not self.stop_event.is_set():
            nc = None
            try:
                nc = await jetstream.connect(
                    self.settings.nats_servers,
                    trust=jetstream.Trust.of(self.settings),
                    inbox_prefix=jetstream.DAEMON_INBOX,
                    error_cb=self._nats_error,
                    disconnected_cb=self._nats_disconnected,
                    reconnected_cb=self._nats_reconnected,
                )
                js = nc.jetstream()
                await jetstream.ensure_streams(js, self.settings.nats_stream_replicas)
                for event in ("acknowledged", "ack_renewed", "resolved"):  # taken or closed on another replica: stop here at once
                    await nc.subscribe(f"escalations.{event}", cb=self._closed_elsewhere)
                self.nats, self.nats_error = nc, None
                self.ingest.js = self.publisher.js = js
                self.publisher.kick()
                url = nc.connected_url
                log.info("NATS connected: %s:%s", url.hostname if url else "?", url.port if url else "?")
                return
            except Exception as exc:
                self.nats_error = f"{type(exc).__name__}: {exc}"[:200]
                log.warning("NATS not ready (%s); retrying in %.1fs", self.nats_error, delay)
                if nc is not None and not nc.is_closed:  # connected, but the streams are not ready yet
                    await nc.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    @staticmethod
    async def _finish(task: asyncio.Task[Any], timeout: float) -> None:
        try:
            await asyncio.wait_for(task, timeout)
        except Exception:
            task.cancel()

    async def _closed_elsewhere(self, msg: Any) -> None:
        """The fast path; the lease renewal finds the same within a third of the lease if NATS is away."""
        try:
            incident_id = json.loads(msg.data)["incident_id"]
        except Exception:
            return
        if incident_id in self.engine.driving() or incident_id in self.engine.paging():
            await self.engine.reconsider(incident_id)  # the database decides, not the message

    async def _nats_error(self, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"[:200]
        if error != self.nats_error:  # once per kind of trouble, not once per retry
            log.warning("NATS: %s (retrying; paging and windows go on)", error)
        self.nats_error = error

    async def _nats_disconnected(self) -> None:
        if not self.stop_event.is_set():
            log.warning("NATS disconnected; paging and windows go on, events wait in the outbox")

    async def _nats_reconnected(self) -> None:
        self.nats_error = None
        log.info("NATS reconnected")
        self.publisher.kick()

    async def _housekeeping(self) -> None:
        """Every 15 s: the gauges (open incidents, the outbox backlog); once an hour: forget Twilio
        callbacks older than a year."""
        rounds = 0
        while not self.stop_event.is_set():
            try:
                await self.readiness()  # also sets escalator_ready, whether or not anything polls /readyz
                await self.engine.refresh_gauges()
                self.metrics.outbox_backlog.set(await asyncio.to_thread(self.outbox.count))
                self.metrics.heartbeats_silent.set(await asyncio.to_thread(heartbeat_rows.silences_open, self.db))
                if rounds % 240 == 0:
                    await asyncio.to_thread(self.webhooks.callbacks.prune, clock.now())
            except Exception:
                log.warning("housekeeping round failed (database?); trying again later")
            rounds += 1
            try:
                await asyncio.wait_for(self.stop_event.wait(), 15)
            except TimeoutError:
                pass

    async def readiness(self) -> dict[str, Any]:
        def ping() -> None:
            with read_session(self.db) as session:
                session.execute(sa.text("SELECT 1"))

        database: dict[str, Any] = {"ok": True}
        try:
            await asyncio.wait_for(asyncio.to_thread(ping), 3)
        except Exception as exc:
            database = {"ok": False, "error": f"{type(exc).__name__}"}
        self.metrics.ready.set(1 if database["ok"] and self.ready.is_set() else 0)
        connected = bool(self.nats and self.nats.is_connected)
        return {
            "database": database,
            "nats": {"ok": connected, **({} if connected else {"error": self.nats_error or "disconnected"})},
            "windows_armed": self.engine.windows.armed(),
            "replica": self.settings.replica,
            "leases_held": len(self.engine.owned),
            "channels": {name: type(ch).__name__ for name, ch in self.channels.items()},
            "tasks": self.supervisor.report(),
        }

    async def _shutdown(self) -> None:
        """Hand over cleanly: stop taking messages and webhooks (the Service sends them to the other
        replicas), let work in flight finish with windows still firing, keep the lease renewed until
        then, release it, and publish what the last steps recorded."""
        self.stop_event.set()  # ingest and claiming stop
        tasks = {task.get_name(): task for task in self._tasks}
        if "ingest" in tasks:
            await self._finish(tasks["ingest"], 10)
        await self.http.stop()
        await self.engine.stop()  # work in flight finished, or left pending for the next owner...
        self._renewing.set()
        if "leases" in tasks:
            await self._finish(tasks["leases"], 10)
        if self._leasing:
            await self.leases.release()  # ...and the other replicas take over within a second
        self._publishing.set()
        if "outbox" in tasks:
            await self._finish(tasks["outbox"], 10)
        for task in self._tasks:
            if not task.done():
                task.cancel()
        if self.nats is not None:
            try:
                await asyncio.wait_for(self.nats.close(), 5)
            except Exception:
                pass
        for channel in self.channels.values():
            await channel.close()
        if self.embedded is not None:
            self.embedded.stop()
        self.db.dispose()
        if self._file_lock is not None:
            self._file_lock.close()
        log.info("escalator stopped")
