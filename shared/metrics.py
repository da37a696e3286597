"""Prometheus metrics of CONTRACT section 8, on a registry per app instance, and what
on-call needs beside them (consumer lag, delivery latency, clocks about to breach).

Labels never carry a customer identifier or free text: only closed vocabularies.
notifications_sent_total's outcome is one of delivered, retrying, failed, deferred (our
own capacity ran out, not an attempt) and stale (the lease was lost meanwhile).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ServiceMetrics:
    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.complaints_received = Counter(
            "complaints_received_total", "Complaints accepted by intake", ["channel"], registry=r
        )
        self.complaints_triaged = Counter(
            "complaints_triaged_total", "Complaints triaged", ["category", "priority"], registry=r
        )
        self.resolutions_recorded = Counter(
            "resolutions_recorded_total", "Resolutions recorded", ["kind"], registry=r
        )
        self.notifications_sent = Counter(
            "notifications_sent_total",
            "Notification delivery attempts",
            ["type", "channel", "outcome"],
            registry=r,
        )
        self.events_consumed = Counter(
            "events_consumed_total",
            "Events consumed",
            ["service", "topic", "outcome"],
            registry=r,
        )
        self.events_dead_lettered = Counter(
            "events_dead_lettered_total",
            "Events sent to a dead-letter topic",
            ["service", "topic"],
            registry=r,
        )
        self._outbox_pending = Gauge(
            "outbox_pending_events", "Outbox rows not yet published", ["service"], registry=r
        )
        self.outbox_pending = self._outbox_pending.labels(service=service)
        self.outbox_oldest_pending_age = Gauge(
            "outbox_oldest_pending_age_seconds",
            "Age of the oldest outbox row not yet published (0 when none)",
            ["service"],
            registry=r,
        ).labels(service=service)
        # Set on every scrape from the same checks as /readyz: a service that answers
        # /metrics but is not ready is visible to alerts, not only to probes.
        self.service_ready = Gauge(
            "service_ready",
            "1 while every readiness check of /readyz passes, else 0",
            ["service"],
            registry=r,
        ).labels(service=service)
        self.outbox_relay_leader = Gauge(
            "outbox_relay_leader",
            "1 while this instance holds the outbox relay's leadership",
            ["service"],
            registry=r,
        ).labels(service=service)
        self.sla_breaches = Counter(
            "sla_breaches_total", "SLA clocks breached", ["priority"], registry=r
        )
        self.event_handling_seconds = Histogram(
            "event_handling_seconds",
            "Time to handle one consumed event",
            ["service", "topic"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.acknowledgement_seconds = Histogram(
            "complaint_acknowledgement_seconds",
            "From complaint received to acknowledgement delivered",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # On-call additions (issue 12). Updated by shared/consumer_lag.py, the notifier's
        # delivery worker and services/resolution/clock_metrics.py respectively.
        self.kafka_consumer_lag = Gauge(
            "kafka_consumer_lag",
            "Records of a partition the consumer group has not committed yet",
            ["group", "topic", "partition"],
            registry=r,
        )
        # The offset after the last record handed to this process's handler. Until the
        # batch's offsets are committed, a process that dies makes the group deliver the
        # records between the committed offset and this one again (make chaos counts them).
        self.kafka_consumer_fetched_offset = Gauge(
            "kafka_consumer_fetched_offset",
            "Next offset after the last record this process has taken from a partition",
            ["group", "topic", "partition"],
            registry=r,
        )
        self.notification_delivery_seconds = Histogram(
            "notification_delivery_seconds",
            "Duration of one delivery attempt at the endpoint (webhook POST, SMTP)",
            ["channel"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.clocks_due_soon = Gauge(
            "clocks_due_soon",
            "Running case clocks due within the next hour",
            ["clock", "priority"],
            registry=r,
        )
