"""Prometheus metrics, on a registry per daemon (so tests can run several in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.incidents_opened = Counter("escalator_incidents_opened", "Incidents opened", registry=r)
        self.events = Counter("escalator_events", "Escalation events recorded, by event", ["event"], registry=r)
        self.pages = Counter("escalator_pages", "Pages by channel and outcome", ["channel", "outcome"], registry=r)
        self.acknowledgements = Counter(
            "escalator_acknowledgements", "Acknowledgements, by channel", ["channel"], registry=r
        )
        self.rejected = Counter("escalator_messages_rejected", "Inbound messages rejected", registry=r)
        self.open_incidents = Gauge("escalator_open_incidents", "Incidents waiting for acknowledgement", registry=r)
        self.window_lateness = Histogram(
            "escalator_window_lateness_seconds",
            "How late an acknowledgment window fired after its deadline",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.breaker_state = Gauge(
            "escalator_breaker_state", "Circuit breaker per channel: 0 closed, 1 half-open, 2 open", ["channel"], registry=r
        )
        self.time_to_acknowledge = Histogram(
            "escalator_time_to_acknowledge_seconds", "From an incident's opening to its acknowledgement",
            buckets=(10, 30, 60, 120, 240, 480, 900, 1800, 3600, 7200), registry=r,
        )
        self.ingest_lag = Histogram(
            "escalator_ingest_lag_seconds", "From a message's arrival in JetStream to its processing",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 120), registry=r,
        )
        self.leases_held = Gauge("escalator_leases_held", "Open incidents this replica drives (holds the lease of)", registry=r)
        self.ready = Gauge(
            "escalator_ready", "1 while this replica is ready (its database answers), as /readyz says; 0 otherwise", registry=r
        )
        self.heartbeats_silent = Gauge(
            "escalator_heartbeat_sources_silent", "Heartbeat sources whose silence has an incident open (SPEC §11)", registry=r
        )
        self.outbox_backlog = Gauge("escalator_outbox_backlog", "Events committed but not yet published", registry=r)
        self.task_restarts = Counter(
            "escalator_task_restarts", "Long-running tasks (ingest, outbox, leases…) restarted after a failure", ["task"], registry=r
        )
        self.http_refused = Counter(
            "escalator_http_refused", "HTTP requests refused before any parsing, by reason", ["reason"], registry=r
        )
        self.page_queue_seconds = Histogram(
            "escalator_page_queue_seconds", "How long a provider request waited inside escalator for one of the provider's slots",
            ["provider"], buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120), registry=r,
        )
        self.page_queue_depth = Gauge(
            "escalator_page_queue_depth", "Provider requests waiting inside escalator for a slot", ["provider"], registry=r
        )
